#include "devices/disk_image.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <sstream>

namespace vvmm::dev {

Result<DiskSpec> parse_disk_spec(const std::string& text)
{
    DiskSpec spec;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        const auto eq = item.find('=');
        if (eq == std::string::npos) return Error("--disk: '" + item + "' is not key=value");
        const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
        if (key == "path") {
            spec.path = value;
        } else if (key == "readonly" || key == "ro") {
            if (value == "on" || value == "true" || value == "1") spec.readonly = true;
            else if (value == "off" || value == "false" || value == "0") spec.readonly = false;
            else return Error("--disk: readonly must be on or off, not '" + value + "'");
        } else if (key == "id" || key == "serial") {
            if (value.size() > 20) return Error("--disk: id '" + value + "' is longer than 20 bytes");
            spec.id = value;
        } else {
            return Error("--disk: unknown key '" + key + "' (expected path, readonly, id)");
        }
    }
    if (spec.path.empty()) return Error("--disk needs path=FILE");
    return spec;
}

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
