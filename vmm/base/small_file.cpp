#include "vmm/base/small_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace vvmm {

Result<UniqueFd> open_no_symlink(const std::string& path, int flags, const std::string& what, mode_t mode)
{
    UniqueFd fd(::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
    if (fd.valid()) return fd;
    // ELOOP is what O_NOFOLLOW answers for a link in the last component.
    if (errno == ELOOP) return Error(what + " " + path + " is a symbolic link, which a checkpoint may not hold; refused");
    return errno_error("cannot open " + what + " " + path);
}

Result<std::string> read_small_file(const std::string& path, uint64_t max, const std::string& what, Symlinks symlinks,
                                    struct stat* info)
{
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    const int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY;
    UniqueFd fd;
    if (symlinks == Symlinks::refuse) {
        TRY_ASSIGN(fd, open_no_symlink(path, flags, what));
    } else {
        fd = UniqueFd(::open(path.c_str(), flags | O_CLOEXEC));
        if (!fd.valid()) return errno_error("cannot open " + what + " " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error("cannot stat " + what + " " + path);
    if (!S_ISREG(st.st_mode)) return Error(what + " " + path + " is not a regular file");
    if (info) *info = st;
    if (static_cast<uint64_t>(st.st_size) > max)
        return Error(what + " " + path + " is " + std::to_string(st.st_size) + " bytes, more than a " + what +
                     " can be (" + std::to_string(max) + ")");
    // Sized by the file, plus one byte to see it end. It may change under
    // us: the buffer grows if it must, never past max + 1 bytes.
    std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
    size_t got = 0;
    for (;;) {
        if (got == text.size()) {
            if (got > max) break;
            text.resize(static_cast<size_t>(std::min<uint64_t>(max + 1, 2 * static_cast<uint64_t>(text.size()))));
        }
        const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("cannot read " + what + " " + path);
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    if (got > max) return Error(what + " " + path + " grew while being read past " + std::to_string(max) + " bytes");
    text.resize(got);
    return text;
}

}  // namespace vvmm
