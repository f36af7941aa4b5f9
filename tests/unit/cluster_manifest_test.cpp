#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>

#include <filesystem>
#include <fstream>

#include "coord/cluster_manifest.hpp"

using namespace vvmm::coord;

namespace {
const vvmm::ckpt::SealKey kKey = vvmm::ckpt::cluster_seal_key(std::vector<uint8_t>(32, 3), "demo");
const vvmm::ckpt::SealPolicy kPolicy{kKey, false};

ClusterManifest sample(uint64_t epoch)
{
    ClusterManifest m{"demo", epoch, "cow", false, "2026-11-22T08:00:00Z", 12.5, {}};
    m.vms.push_back({"vm0", "n0", "000001", 0x1234, 100, 1.0, 2.0, false});
    m.vms.push_back({"vm1", "n1", "000003", 0xabcd, 200, 1.5, 2.5, true});
    return m;
}
}  // namespace

TEST_CASE("cluster manifest: written atomically, listed, read back; bad ones refused")
{
    const auto dir = std::filesystem::temp_directory_path() / ("vvmm-cm-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    CHECK(committed_epochs(dir.string()).empty());
    REQUIRE(write_cluster_manifest(dir.string(), sample(2), kKey).ok());
    REQUIRE(write_cluster_manifest(dir.string(), sample(10), kKey).ok());
    REQUIRE(write_cluster_manifest(dir.string(), sample(10), kKey).ok());  // again, as a second VMM sharing the directory
    std::ofstream(dir / "epochs" / ".tmp-000011-1.json") << "{";  // a dead writer's leftover is not an epoch
    std::ofstream(dir / "epochs" / "9.json") << "{";        // only the initiator's names count:
    std::ofstream(dir / "epochs" / "0000010.json") << "{";  // not a stray copy, nor epoch 10 twice
    std::ofstream(dir / "epochs" / "000000.json") << "{";   // epoch 0 does not exist
    // A leftover temp file of a writer with this very pid does not block a commit.
    std::ofstream(dir / "epochs" / (".tmp-000012-" + std::to_string(::getpid()) + ".json")) << "{";
    REQUIRE(write_cluster_manifest(dir.string(), sample(12), kKey).ok());
    CHECK(committed_epochs(dir.string()) == std::vector<uint64_t>{2, 10, 12});
    auto back = read_cluster_manifest(dir.string(), 10, kPolicy);
    REQUIRE(back.ok());
    CHECK(back->vms.size() == 2);
    CHECK(back->vms[1].manifest_xxh3 == 0xabcd);
    CHECK(back->vms[1].incremental);
    CHECK(to_json(back.value()) == to_json(sample(10)));
    CHECK_FALSE(read_cluster_manifest(dir.string(), 3, kPolicy).ok());

    auto j = to_json(sample(1));
    for (const char* key : {"format", "epoch", "vms", "mode", "created"}) {
        auto broken = j;
        broken.erase(key);
        CHECK_FALSE(cluster_manifest_from_json(broken).ok());
    }
    auto twice = j;
    twice["vms"].push_back(j["vms"][0]);
    CHECK_FALSE(cluster_manifest_from_json(twice).ok());
    auto escape = j;
    escape["vms"][0]["id"] = "../../x";
    CHECK_FALSE(cluster_manifest_from_json(escape).ok());
    auto newer = j;
    newer["format_version"] = 2;
    CHECK_FALSE(cluster_manifest_from_json(newer).ok());
    std::ofstream(dir / "epochs" / "000004.json") << "not json";
    CHECK_FALSE(read_cluster_manifest(dir.string(), 4, kPolicy).ok());
    std::filesystem::remove_all(dir);
}

TEST_CASE("cluster manifest: foreign names and planted links in the epochs directory")
{
    const auto dir = std::filesystem::temp_directory_path() / ("vvmm-cm-hostile-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    REQUIRE(write_cluster_manifest(dir.string(), sample(5), kKey).ok());
    for (const char* name : {"99999999999999999999.json", "18446744073709551616.json", "-00001.json", "+00001.json",
                             " 00001.json", "00001x.json", "0x0001.json"})
        std::ofstream(dir / "epochs" / name) << "{";
    CHECK(committed_epochs(dir.string()) == std::vector<uint64_t>{5});
    // An epoch's manifest that is a symbolic link (to a real one elsewhere) is refused.
    std::filesystem::rename(dir / "epochs" / "000005.json", dir / "elsewhere.json");
    std::filesystem::create_symlink(dir / "elsewhere.json", dir / "epochs" / "000005.json");
    auto linked = read_cluster_manifest(dir.string(), 5, kPolicy);
    REQUIRE_FALSE(linked.ok());
    CHECK(linked.error().message().find("is a symbolic link") != std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST_CASE("cluster manifest: recent_epochs keeps the newest that fit and counts the rest")
{
    const auto dir = std::filesystem::temp_directory_path() / ("vvmm-cm-recent-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    CHECK(recent_epochs(dir.string(), 1 << 20, kPolicy).epochs.empty());
    for (uint64_t e = 1; e <= 200; ++e) REQUIRE(write_cluster_manifest(dir.string(), sample(e), kKey).ok());
    std::ofstream(dir / "epochs" / "000201.json") << "{";  // unreadable: listed with its error

    const auto all = recent_epochs(dir.string(), SIZE_MAX, kPolicy);
    REQUIRE(all.epochs.size() == 201);
    CHECK(all.omitted == 0);
    CHECK(all.epochs[0]["epoch"] == 1);
    CHECK(all.epochs[200].contains("error"));

    const size_t one = to_json(sample(150)).dump().size() + 1;
    const auto some = recent_epochs(dir.string(), 50 * one, kPolicy);
    CHECK(some.epochs.dump().size() <= 50 * one + 2);
    CHECK(some.omitted == 201 - some.epochs.size());
    REQUIRE(some.epochs.size() >= 40);
    CHECK(some.epochs.back().contains("error"));             // the newest is kept
    CHECK(some.epochs[0]["epoch"] == 201 - some.epochs.size() + 1);  // oldest first, no gap
    std::filesystem::remove_all(dir);
}

TEST_CASE("cluster manifest: an epoch record changed after it was written (another VM's checkpoint id) is refused")
{
    const auto dir = std::filesystem::temp_directory_path() / ("vvmm-cm-sealed-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    REQUIRE(write_cluster_manifest(dir.string(), sample(7), kKey).ok());
    REQUIRE(read_cluster_manifest(dir.string(), 7, kPolicy).ok());
    const auto path = dir / "epochs" / "000007.json";
    nlohmann::json j;
    {
        std::ifstream in(path);
        j = nlohmann::json::parse(in);
    }
    j["vms"][0]["id"] = "000002";  // roll one VM back to an older checkpoint
    std::ofstream(path) << j.dump();
    auto forged = read_cluster_manifest(dir.string(), 7, kPolicy);
    REQUIRE_FALSE(forged.ok());
    CHECK(forged.error().message().find("has a MAC that does not match the cluster 'demo' secret") != std::string::npos);
    CHECK(read_cluster_manifest(dir.string(), 7, vvmm::ckpt::SealPolicy{kKey, true}).ok());
    // Another cluster's key (same secret, other name) does not verify it either.
    const vvmm::ckpt::SealPolicy other{vvmm::ckpt::cluster_seal_key(std::vector<uint8_t>(32, 3), "other"), false};
    j.erase("mac");
    std::ofstream(path) << j.dump();
    CHECK(read_cluster_manifest(dir.string(), 7, other).error().message().find("is not sealed") != std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST_CASE("cluster manifest: remove_epochs_before keeps the given epoch and newer ones, and foreign files")
{
    const auto dir = std::filesystem::temp_directory_path() / ("vvmm-cm-old-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    CHECK(remove_epochs_before(dir.string(), 5).ok());  // nothing there yet
    for (uint64_t e : {1, 3, 5, 6}) REQUIRE(write_cluster_manifest(dir.string(), sample(e), kKey).ok());
    std::ofstream(dir / "epochs" / "notes.txt") << "mine";
    REQUIRE(remove_epochs_before(dir.string(), 5).ok());
    CHECK(committed_epochs(dir.string()) == std::vector<uint64_t>{5, 6});
    CHECK(std::filesystem::exists(dir / "epochs" / "notes.txt"));
    std::filesystem::remove_all(dir);
}
