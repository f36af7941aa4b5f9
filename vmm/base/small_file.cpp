#include "vmm/base/small_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "vmm/base/unique_fd.hpp"

namespace vvmm {

Result<std::string> read_small_file(const std::string& path, uint64_t max, const std::string& what)
{
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (!fd.valid()) return errno_error("cannot open " + what + " " + path);
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error("cannot stat " + what + " " + path);
    if (!S_ISREG(st.st_mode)) return Error(what + " " + path + " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) > max)
        return Error(what + " " + path + " is " + std::to_string(st.st_size) + " bytes, more than a " + what +
                     " can be (" + std::to_string(max) + ")");
    // The size may change under us: read at most max + 1 bytes and check.
    std::string text;
    text.resize(static_cast<size_t>(max) + 1);
    size_t got = 0;
    while (got < text.size()) {
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
