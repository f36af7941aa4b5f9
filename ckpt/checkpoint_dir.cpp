#include "ckpt/checkpoint_dir.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <regex>

#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {
namespace fs = std::filesystem;

uint64_t digest_of(std::span<const uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

Result<void> prepare_root(const std::string& root)
{
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) return Error("cannot create checkpoint directory " + root + ": " + ec.message());
    if (!fs::is_directory(root)) return Error(root + " is not a directory");
    static const std::regex tmp_name(R"(\.tmp-\d+-(\d+))");
    for (const auto& e : fs::directory_iterator(root, ec)) {
        std::smatch m;
        const std::string name = e.path().filename().string();
        if (!std::regex_match(name, m, tmp_name)) continue;
        const pid_t pid = static_cast<pid_t>(std::stol(m[1].str()));
        if (pid == ::getpid() || (::kill(pid, 0) == 0 || errno == EPERM)) continue;  // still being written
        fs::remove_all(e.path(), ec);
    }
    return ok();
}

Result<std::string> next_id(const std::string& root)
{
    static const std::regex id_name(R"(\d{6})");
    unsigned long max = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec)) {
        const std::string name = e.path().filename().string();
        if (std::regex_match(name, id_name)) max = std::max(max, std::stoul(name));
    }
    if (ec) return Error("cannot list " + root + ": " + ec.message());
    char b[16];
    std::snprintf(b, sizeof b, "%06lu", max + 1);
    return std::string(b);
}

Result<FileDigest> write_durable(const std::string& dir, const std::string& name, std::span<const uint8_t> bytes)
{
    const std::string path = dir + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return errno_error("creating " + path);
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("writing " + path);
        if (n == 0) return Error("writing " + path + ": no progress (disk full?)");
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) < 0) return errno_error("fsync " + path);
    return FileDigest{name, bytes.size(), digest_of(bytes)};
}

Result<void> fsync_dir(const std::string& dir)
{
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("opening " + dir);
    if (::fsync(fd.get()) < 0) return errno_error("fsync " + dir);
    return ok();
}

Result<void> link_into(const std::string& src, const std::string& dir, const std::string& name)
{
    const std::string dst = dir + "/" + name;
    if (::link(src.c_str(), dst.c_str()) < 0) return errno_error("linking " + src + " into the checkpoint");
    return ok();
}

Result<void> publish(const std::string& tmp, const std::string& root, const std::string& id)
{
    TRY(fsync_dir(tmp));
    const std::string dst = root + "/" + id;
    // renameat2(RENAME_NOREPLACE): never replace a checkpoint someone else published.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) < 0)
        return errno_error("publishing checkpoint " + dst);
    return fsync_dir(root);
}

Result<std::vector<uint8_t>> read_verified(const std::string& dir, const FileDigest& d, uint64_t max_size)
{
    const std::string path = dir + "/" + d.file;
    if (d.size > max_size) return Error(path + ": size " + std::to_string(d.size) + " is implausible");
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("cannot read " + path);
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error("stat " + path);
    if (static_cast<uint64_t>(st.st_size) != d.size)
        return Error(path + " is " + std::to_string(st.st_size) + " bytes, the manifest says " + std::to_string(d.size) +
                     " (truncated or replaced)");
    std::vector<uint8_t> bytes(d.size);
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::pread(fd.get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return errno_error("reading " + path);
        done += static_cast<size_t>(n);
    }
    if (digest_of(bytes) != d.xxh3) return Error(path + ": checksum mismatch (the file is corrupted)");
    return bytes;
}

}  // namespace vvmm::ckpt
