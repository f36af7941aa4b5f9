#include "ckpt/checkpoint_dir.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <regex>

#include "vmm/base/le.hpp"
#include "vmm/base/parse_number.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {
namespace fs = std::filesystem;

uint64_t digest_of(std::span<const uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

uint64_t digest_of_hashes(std::span<const uint64_t> hashes)
{
    std::vector<uint8_t> bytes(hashes.size() * 8);
    for (size_t i = 0; i < hashes.size(); ++i) store_le<uint64_t>(bytes.data() + 8 * i, hashes[i]);
    return digest_of(bytes);
}

namespace {

// The names in `dir`, without exceptions: an entry that cannot be read ends
// the listing with `ec` set.
std::vector<std::string> list_names(const std::string& dir, std::error_code& ec)
{
    std::vector<std::string> names;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        names.push_back(it->path().filename().string());
    return names;
}

// A temporary directory's writer, from ".tmp-<n>-<pid>"; nullopt for any
// other name, which is not ours to remove.
std::optional<pid_t> tmp_dir_owner(const std::string& name)
{
    static const std::regex tmp_name(R"(\.tmp-\d+-(\d+))");
    std::smatch m;
    if (!std::regex_match(name, m, tmp_name)) return std::nullopt;
    const auto pid = parse_unsigned<uint32_t>(m[1].str());
    if (!pid || *pid == 0 || *pid > static_cast<uint32_t>(std::numeric_limits<pid_t>::max())) return std::nullopt;
    return static_cast<pid_t>(*pid);
}

}  // namespace

Result<void> prepare_root(const std::string& root)
{
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) return Error("cannot create checkpoint directory " + root + ": " + ec.message());
    if (!fs::is_directory(root, ec)) return Error(root + " is not a directory");
    for (const auto& name : list_names(root, ec)) {
        const auto pid = tmp_dir_owner(name);
        if (!pid) continue;
        if (*pid == ::getpid() || (::kill(*pid, 0) == 0 || errno == EPERM)) continue;  // still being written
        fs::remove_all(root + "/" + name, ec);
    }
    return ok();
}

Result<std::string> next_id(const std::string& root)
{
    static const std::regex id_name(R"(\d{6})");
    uint64_t max = 0;
    std::error_code ec;
    for (const auto& name : list_names(root, ec))
        if (std::regex_match(name, id_name)) max = std::max(max, parse_unsigned<uint64_t>(name).value_or(0));
    if (ec) return Error("cannot list " + root + ": " + ec.message());
    char b[24];
    std::snprintf(b, sizeof b, "%06llu", static_cast<unsigned long long>(max + 1));
    return std::string(b);
}

Result<FileDigest> write_durable(const std::string& dir, const std::string& name, std::span<const uint8_t> bytes)
{
    const std::string path = dir + "/" + name;
    // O_EXCL already refuses a planted symbolic link; O_NOFOLLOW says so too.
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
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

// Copies the data of `src` into the new file `dst`, leaving holes where the
// source has them, and fsyncs it.
Result<uint64_t> copy_sparse_file(const std::string& src, const std::string& dst)
{
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!in.valid()) return errno_error("opening " + src);
    struct stat st {};
    if (::fstat(in.get(), &st) < 0) return errno_error("stat " + src);
    if (!S_ISREG(st.st_mode)) return Error(src + " is not a regular file");
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out.valid()) return errno_error("creating " + dst);
    if (::ftruncate(out.get(), st.st_size) < 0) return errno_error("sizing " + dst);
    uint64_t copied = 0;
    off_t pos = 0;
    while (pos < st.st_size) {
        const off_t data = ::lseek(in.get(), pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // only a hole is left
            return errno_error("seeking in " + src);
        }
        off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
        if (hole < 0) hole = st.st_size;
        off_t from = data, to = data;
        while (from < hole) {
            const ssize_t n = ::copy_file_range(in.get(), &from, out.get(), &to, static_cast<size_t>(hole - from), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return errno_error("copying " + src + " to " + dst);
            copied += static_cast<uint64_t>(n);
        }
        pos = hole;
    }
    if (::fsync(out.get()) < 0) return errno_error("fsync " + dst);
    return copied;
}

Result<std::vector<uint8_t>> read_verified(const std::string& dir, const FileDigest& d, uint64_t max_size)
{
    const std::string path = dir + "/" + d.file;
    if (d.size > max_size) return Error(path + ": size " + std::to_string(d.size) + " is implausible");
    TRY_ASSIGN(auto fd, open_no_symlink(path, O_RDONLY, "checkpoint file"));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error("stat " + path);
    if (!S_ISREG(st.st_mode)) return Error(path + " is not a regular file");
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
