#include <doctest/doctest.h>

#include "coord/epoch_initiator.hpp"

using vvmm::coord::EpochInitiator;
using Outcome = EpochInitiator::Outcome;

namespace {
nlohmann::json done(const std::string& id)
{
    return {{"ok", true}, {"node", "n0"}, {"id", id}, {"manifest_xxh3", "00000000000000ff"}, {"bytes", 4096},
            {"pause_ms", 1.5}, {"total_ms", 20.0}, {"incremental", false}};
}
}  // namespace

TEST_CASE("epoch initiator: commits when every VM is done, in configuration order")
{
    EpochInitiator e(3, {"vm0", "vm1", "vm2"});
    CHECK(e.on_done("vm2", done("000002")) == Outcome::pending);
    CHECK(e.on_done("vm2", done("000009")) == Outcome::pending);  // a repeat changes nothing
    CHECK(e.on_done("stranger", done("000001")) == Outcome::pending);
    CHECK(e.on_done("vm0", done("000001")) == Outcome::pending);
    CHECK(e.waiting_for() == std::vector<std::string>{"vm1"});
    CHECK(e.on_vm_lost("vm0") == Outcome::pending);  // done already: its checkpoint is durable
    CHECK(e.on_done("vm1", done("000005")) == Outcome::commit);
    REQUIRE(e.results().size() == 3);
    CHECK(e.results()[0].name == "vm0");
    CHECK(e.results()[2].id == "000002");
    CHECK(e.results()[1].manifest_xxh3 == 0xff);
    CHECK(e.on_deadline() == Outcome::commit);  // decided
}

TEST_CASE("epoch initiator: aborts on a failed DONE, a lost VM, a deadline or a malformed DONE")
{
    EpochInitiator a(1, {"vm0", "vm1"});
    CHECK(a.on_done("vm1", {{"ok", false}, {"error", "disk full"}}) == Outcome::abort);
    CHECK(a.abort_reason() == "vm1: disk full");
    CHECK(a.on_done("vm0", done("000001")) == Outcome::abort);

    EpochInitiator b(1, {"vm0", "vm1"});
    CHECK(b.on_done("vm0", done("000001")) == Outcome::pending);
    CHECK(b.on_vm_lost("vm1") == Outcome::abort);

    EpochInitiator c(1, {"vm0", "vm1"});
    CHECK(c.on_deadline() == Outcome::abort);
    CHECK(c.abort_reason() == "timed out waiting for vm0, vm1");

    EpochInitiator d(1, {"vm0"});
    auto bad = done("../etc");
    CHECK(d.on_done("vm0", bad) == Outcome::abort);
    EpochInitiator f(1, {"vm0"});
    auto bad_digest = done("000001");
    bad_digest["manifest_xxh3"] = 12;
    CHECK(f.on_done("vm0", bad_digest) == Outcome::abort);

    // Fields of the wrong type (a peer's JSON) abort; they never throw.
    EpochInitiator g(1, {"vm0"});
    auto odd_ok = done("000001");
    odd_ok["ok"] = 1;
    CHECK(g.on_done("vm0", odd_ok) == Outcome::abort);
    EpochInitiator k(1, {"vm0"});
    CHECK(k.on_done("vm0", {{"ok", false}, {"error", 5}}) == Outcome::abort);
    CHECK(k.abort_reason() == "vm0: failed");
}

using vvmm::coord::EpochAuthority;

TEST_CASE("epoch authority: COMMIT and ABORT count only from the epoch's initiator, once")
{
    EpochAuthority a("vm0", 4);
    REQUIRE(a.on_prepare("vm1", 5).ok());
    CHECK_FALSE(a.on_decision("vm2", 5).ok());  // a peer that did not start it
    CHECK_FALSE(a.on_decision("vm1", 6).ok());  // an epoch that never came here
    CHECK(a.on_decision("vm1", 5).ok());
    CHECK_FALSE(a.on_decision("vm1", 5).ok());  // a second COMMIT or ABORT of it
    CHECK(a.last_epoch() == 5);

    // This VMM's own epoch: no peer decides it.
    REQUIRE(a.next_epoch().value() == 6);
    a.started(6);
    auto forged = a.on_decision("vm1", 6);
    REQUIRE_FALSE(forged.ok());
    CHECK(forged.error().message() == "this VMM initiated it");

    // A PREPARE refused here for being busy is still its epoch's: its ABORT counts.
    REQUIRE(a.on_prepare("vm2", 7).ok());
    CHECK(a.on_decision("vm2", 7).ok());
}

TEST_CASE("epoch authority: epoch numbers move forward by a bounded step and never wrap")
{
    EpochAuthority a("vm0", 10);
    CHECK(a.on_prepare("vm1", 10).error().message() == "has seen epoch 10 already");
    CHECK_FALSE(a.on_prepare("vm1", 3).ok());
    auto wild = a.on_prepare("vm1", ~0ull);
    REQUIRE_FALSE(wild.ok());
    CHECK(wild.error().message().find("at most 1024 ahead") != std::string::npos);
    CHECK(a.last_epoch() == 10);  // a refused PREPARE moves nothing
    CHECK(a.next_epoch().value() == 11);
    CHECK(a.on_prepare("vm1", 10 + 1024).ok());
    CHECK(a.last_epoch() == 1034);

    // A node whose own files say the last epoch is 2^64-1 (restored from them) starts no more.
    EpochAuthority end("vm0", 0);
    end.restored(~0ull);
    auto next = end.next_epoch();
    REQUIRE_FALSE(next.ok());
    CHECK(next.error().message().find("exhausted") != std::string::npos);
    CHECK_FALSE(end.on_prepare("vm1", 0).ok());  // nothing after it either, and no wrap to 0
}

TEST_CASE("epoch authority: only a few refused epochs are remembered")
{
    EpochAuthority a("vm0", 0);
    for (uint64_t e = 1; e <= 20; ++e) REQUIRE(a.on_prepare("vm1", e).ok());
    CHECK_FALSE(a.on_decision("vm1", 1).ok());  // long forgotten
    CHECK(a.on_decision("vm1", 20).ok());

    // The running epoch is never forgotten, however many refused PREPAREs come meanwhile.
    a.running(20);
    REQUIRE(a.on_prepare("vm2", 21).ok());
    for (uint64_t e = 22; e <= 60; ++e) REQUIRE(a.on_prepare("vm1", e).ok());
    CHECK_FALSE(a.on_decision("vm2", 21).ok());
    EpochAuthority b("vm0", 0);
    REQUIRE(b.on_prepare("vm1", 1).ok());
    b.running(1);
    for (uint64_t e = 2; e <= 40; ++e) REQUIRE(b.on_prepare("vm2", e).ok());
    CHECK(b.on_decision("vm1", 1).ok());
}
