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
