#include "vmm/base/positional_io.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vvmm {

Result<void> read_at_or_zero(int fd, uint8_t* out, size_t len, uint64_t offset, const std::string& what)
{
    size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pread(fd, out + done, len - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("reading " + what);
        if (n == 0) {
            std::memset(out + done, 0, len - done);
            break;
        }
        done += static_cast<size_t>(n);
    }
    return ok();
}

Result<void> write_all_at(int fd, const uint8_t* in, size_t len, uint64_t offset, const std::string& what)
{
    size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pwrite(fd, in + done, len - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return errno_error("writing " + what);
        done += static_cast<size_t>(n);
    }
    return ok();
}

}  // namespace vvmm
