#include "devices/disk_image.hpp"

#include <fcntl.h>
#include <sys/stat.h>

namespace vvmm::dev {

Result<DiskImage> DiskImage::open(const DiskSpec& spec)
{
    UniqueFd fd(::open(spec.path.c_str(), (spec.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!fd.valid()) return errno_error("cannot open disk image '" + spec.path + "'");
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error("cannot stat disk image '" + spec.path + "'");
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return Error("disk image '" + spec.path + "' is not a file or block device");
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        const off_t end = ::lseek(fd.get(), 0, SEEK_END);
        if (end < 0) return errno_error("cannot size block device '" + spec.path + "'");
        size = static_cast<uint64_t>(end);
    }
    if (size < 512) return Error("disk image '" + spec.path + "' is smaller than one 512-byte sector");
    return DiskImage(std::move(fd), size, spec.readonly);
}

}  // namespace vvmm::dev
