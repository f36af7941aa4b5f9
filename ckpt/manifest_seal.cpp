#include "ckpt/manifest_seal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "vmm/base/crypto.hpp"
#include "vmm/base/hex.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr std::string_view kMacPrefix = "hmac-sha256:";

// The seal covers the manifest as nlohmann dumps it without "mac": the
// same bytes on the writer and on any reader, however the file is spaced.
Sha256Digest mac_of(const nlohmann::json& manifest, const SealKey& key)
{
    nlohmann::json body = manifest;
    body.erase("mac");
    return hmac_sha256(key.bytes, as_bytes(body.dump()));
}

// Writes a fresh key to a temporary file and links it into place: another
// vvmm creating the same key at the same moment wins or loses whole.
Result<void> create_key_file(const std::string& path)
{
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error("cannot create " + dir.string() + " for the checkpoint key: " + ec.message());
    std::array<uint8_t, kKeyBytes> key{};
    random_bytes(key);
    const std::string text = to_hex(key) + "\n";
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    {
        UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd.valid()) return errno_error("cannot create the checkpoint key " + tmp);
        if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) || ::fsync(fd.get()) < 0) {
            const Error e = errno_error("cannot write the checkpoint key " + tmp);
            ::unlink(tmp.c_str());
            return e;
        }
    }
    const int linked = ::link(tmp.c_str(), path.c_str());
    const int link_errno = errno;
    ::unlink(tmp.c_str());
    if (linked < 0 && link_errno != EEXIST) {
        errno = link_errno;
        return errno_error("cannot create the checkpoint key " + path);
    }
    if (linked == 0) log_info("created the checkpoint key " + path + " (it seals every checkpoint this user takes)");
    return ok();
}

}  // namespace

Result<std::string> default_key_path()
{
    if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg == '/') return std::string(xdg) + "/vvmm/checkpoint.key";
    const char* home = std::getenv("HOME");
    if (!home || *home != '/') return Error("no checkpoint key: HOME is not set; name one with --checkpoint-key FILE");
    return std::string(home) + "/.config/vvmm/checkpoint.key";
}

Result<SealKey> load_key_file(const std::string& path, bool create)
{
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) {
        if (errno != ENOENT || !create) return errno_error("checkpoint key " + path);
        TRY(create_key_file(path));
    }
    TRY_ASSIGN(auto text, read_small_file(path, 2 * kKeyBytes + 1, "checkpoint key", Symlinks::follow, &st));
    if (st.st_mode & 077)
        return Error("checkpoint key " + path + " is accessible to group or others (mode " +
                     std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) +
                     std::to_string(st.st_mode & 7) + "); chmod 600 it");
    if (!text.empty() && text.back() == '\n') text.pop_back();
    auto bytes = from_hex(text);
    if (!bytes || bytes->size() != kKeyBytes)
        return Error("checkpoint key " + path + " is not " + std::to_string(2 * kKeyBytes) + " hex digits");
    return SealKey{std::move(*bytes), "key file " + path};
}

SealKey cluster_seal_key(std::span<const uint8_t> secret, std::string_view cluster)
{
    SealKey key{std::vector<uint8_t>(kKeyBytes), "cluster '" + std::string(cluster) + "' secret"};
    hkdf_sha256(secret, as_bytes("vvmm-manifest-mac-v1"), as_bytes(cluster), key.bytes);
    return key;
}

void seal_manifest(nlohmann::json& manifest, const SealKey& key)
{
    manifest["mac"] = std::string(kMacPrefix) + to_hex(mac_of(manifest, key));
}

Result<void> check_manifest_seal(const nlohmann::json& manifest, const SealPolicy& policy, const std::string& path)
{
    const auto problem = [&]() -> std::optional<std::string> {
        const auto mac = manifest.find("mac");
        if (mac == manifest.end() || !mac->is_string()) return "is not sealed (no MAC)";
        if (!policy.key) return "cannot be verified (no key)";
        const std::string& text = mac->get_ref<const std::string&>();
        const auto given = text.starts_with(kMacPrefix) ? from_hex(std::string_view(text).substr(kMacPrefix.size()))
                                                        : std::nullopt;
        const Sha256Digest expected = mac_of(manifest, *policy.key);
        if (!given || !equal_constant_time(*given, expected))
            return "has a MAC that does not match the " + policy.key->source +
                   " (changed since it was written, or sealed with another key)";
        return std::nullopt;
    }();
    if (!problem) return ok();
    if (policy.trust_unsigned) {
        log_warn(path + " " + *problem + "; restored anyway (--trust-unsigned)");
        return ok();
    }
    return Error(path + " " + *problem + "; refused (--trust-unsigned restores it without this check)");
}

}  // namespace vvmm::ckpt
