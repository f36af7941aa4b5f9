// The cluster control plane's typed messages: what a controller may ask a
// cluster VMM, and an epoch's PREPARE, each refused with one line when wrong.
#include <doctest/doctest.h>

#include "coord/cluster_request.hpp"

using namespace vvmm;
using namespace vvmm::coord;
using nlohmann::json;

TEST_CASE("cluster request: status, list and checkpoint round-trip; defaults filled in")
{
    for (auto cmd : {ClusterCommand::status, ClusterCommand::list}) {
        auto r = parse_cluster_request(to_json(ClusterRequest{cmd}));
        REQUIRE(r);
        CHECK(r->cmd == cmd);
    }
    ClusterRequest c{ClusterCommand::checkpoint, ckpt::CheckpointMode::cow, true, std::chrono::seconds(42)};
    auto r = parse_cluster_request(to_json(c));
    REQUIRE(r);
    CHECK((r->cmd == ClusterCommand::checkpoint && r->mode == ckpt::CheckpointMode::cow && r->incremental &&
           r->timeout == std::chrono::seconds(42)));
    auto d = parse_cluster_request({{"cmd", "checkpoint"}});
    REQUIRE(d);
    CHECK((!d->mode && !d->incremental && d->timeout == kDefaultEpochTimeout));
    CHECK(!to_json(ClusterRequest{ClusterCommand::checkpoint}).contains("mode"));
}

TEST_CASE("cluster request: unknown commands and fields, wrong types and out-of-range timeouts are refused")
{
    struct Case {
        json request;
        const char* error;
    };
    const Case cases[] = {
        {json::array(), "request must be a JSON object"},
        {{{"mode", "stop"}}, "missing \"cmd\""},
        {{{"cmd", "reboot"}}, "unknown command 'reboot' (status, list, checkpoint)"},
        {{{"cmd", "list"}, {"i", 1}}, "unknown field 'i' for list"},
        {{{"cmd", "status"}, {"mode", "stop"}}, "unknown field 'mode' for status"},
        {{{"cmd", "checkpoint"}, {"dir", "/etc"}}, "unknown field 'dir' for checkpoint"},
        {{{"cmd", "checkpoint"}, {"mode", "fast"}}, "'mode' must be stop, live or cow, not 'fast'"},
        {{{"cmd", "checkpoint"}, {"mode", 1}}, "'mode' must be a string"},
        {{{"cmd", "checkpoint"}, {"incremental", "yes"}}, "'incremental' must be true or false"},
        {{{"cmd", "checkpoint"}, {"timeout_s", 0}}, "'timeout_s' is out of range (1..3600)"},
        {{{"cmd", "checkpoint"}, {"timeout_s", 3601}}, "'timeout_s' is out of range (1..3600)"},
        {{{"cmd", "checkpoint"}, {"timeout_s", -5}}, "'timeout_s' is out of range (1..3600)"},
        {{{"cmd", "checkpoint"}, {"timeout_s", "10"}}, "'timeout_s' is out of range (1..3600)"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.request.dump());
        auto r = parse_cluster_request(c.request);
        REQUIRE(!r);
        CHECK(r.error().message() == c.error);
    }
}

TEST_CASE("epoch PREPARE: round trip; no mode or initiator, a 24 h deadline and unknown fields refused")
{
    EpochPrepare p{ckpt::CheckpointMode::live, true, std::chrono::milliseconds(1500), "vm1"};
    auto r = parse_epoch_prepare(to_json(p));
    REQUIRE(r);
    CHECK((r->mode == p.mode && r->incremental && r->timeout == p.timeout && r->initiator == "vm1"));

    json j = to_json(p);
    j.erase("mode");
    CHECK(parse_epoch_prepare(j).error().message() == "PREPARE has no 'mode'");
    j = to_json(p);
    j.erase("initiator");
    CHECK(parse_epoch_prepare(j).error().message() == "PREPARE has no 'initiator'");
    j = to_json(p);
    j["timeout_ms"] = 24ull * 3600 * 1000;
    CHECK(parse_epoch_prepare(j).error().message() == "'timeout_ms' is out of range (1..3600000)");
    j = to_json(p);
    j["extra"] = 1;
    CHECK(parse_epoch_prepare(j).error().message() == "unknown field 'extra' for PREPARE");
    CHECK(!parse_epoch_prepare(json("x")));
}
