#include <doctest/doctest.h>

#include <vector>

#include "net/mac_table.hpp"
#include "net/peer_protocol.hpp"
#include "net/send_queue.hpp"

using namespace vvmm::net;

namespace {
MacAddress mac(uint8_t last) { return MacAddress({0x52, 0x54, 0, 0, 0, last}); }
}  // namespace

TEST_CASE("MAC table learns, moves and forgets")
{
    MacTable t;
    CHECK_FALSE(t.lookup(mac(1)));
    t.learn(mac(1), 0);
    t.learn(mac(2), 1);
    CHECK(t.lookup(mac(1)) == 0u);
    CHECK(t.lookup(mac(2)) == 1u);
    t.learn(mac(1), 2);  // the VM moved
    CHECK(t.lookup(mac(1)) == 2u);
    t.forget_peer(2);
    CHECK_FALSE(t.lookup(mac(1)));
    CHECK(t.lookup(mac(2)) == 1u);
}

TEST_CASE("MAC table ignores group and zero addresses and is bounded")
{
    MacTable t(3);
    t.learn(MacAddress({0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), 0);
    t.learn(MacAddress({0x01, 0x00, 0x5e, 0, 0, 1}), 0);
    t.learn(MacAddress(), 0);
    CHECK(t.size() == 0);
    for (uint8_t i = 1; i <= 10; ++i) t.learn(mac(i), i);
    CHECK(t.size() == 3);
    CHECK(t.lookup(mac(1)) == 1u);
    CHECK_FALSE(t.lookup(mac(4)));
    t.learn(mac(1), 7);  // known MACs still move when full
    CHECK(t.lookup(mac(1)) == 7u);
}

TEST_CASE("a MAC pinned by HELLO does not move when another peer's guest claims it")
{
    MacTable t(2);
    t.learn(mac(1), 0);
    t.learn(mac(2), 0);
    t.pin(mac(9), 1);  // admitted although learning filled the table
    CHECK(t.lookup(mac(9)) == 1u);
    t.learn(mac(9), 0);
    CHECK(t.lookup(mac(9)) == 1u);
    t.learn(mac(9), 1);  // its own peer may send from it, it stays pinned
    t.learn(mac(9), 0);
    CHECK(t.lookup(mac(9)) == 1u);
    t.pin(mac(1), 1);  // a HELLO overrides a learned entry
    CHECK(t.lookup(mac(1)) == 1u);
    t.forget_peer(1);
    CHECK_FALSE(t.lookup(mac(9)));
    t.learn(mac(9), 0);
    CHECK(t.lookup(mac(9)) == 0u);
}

TEST_CASE("send queue counts queued and in-flight bytes against one limit")
{
    SendQueue q(3 * encoded_frame_size(100));
    const std::vector<uint8_t> frame(100, 0xab);
    CHECK(q.has_room(encoded_frame_size(100)));
    q.push_frame(frame);
    q.push_frame(frame);
    CHECK(q.bytes() == 2 * encoded_frame_size(100));
    std::vector<uint8_t> batch{1, 2, 3};
    q.take_batch(batch);
    CHECK(batch.size() == 2 * encoded_frame_size(100));
    CHECK_FALSE(q.has_pending());
    CHECK(q.bytes() == batch.size());  // still counted while written
    q.push_frame(frame);
    CHECK_FALSE(q.has_room(encoded_frame_size(100)));
    q.batch_done();
    CHECK(q.bytes() == encoded_frame_size(100));
    CHECK(q.has_room(2 * encoded_frame_size(100)));

    // The batch decodes to the frames pushed, in order.
    MessageDecoder d;
    d.feed(batch);
    for (int i = 0; i < 2; ++i) {
        auto m = d.next();
        REQUIRE(m.ok());
        REQUIRE(m.value().has_value());
        CHECK(std::get<FrameMessage>(*m.value()).frame == frame);
    }
    CHECK_FALSE(d.next().value().has_value());
}

TEST_CASE("send queue: control messages may pass the frame limit, but only by a bounded allowance")
{
    SendQueue q(3 * encoded_frame_size(100));
    const std::vector<uint8_t> frame(100, 0xab);
    for (int i = 0; i < 3; ++i) q.push_frame(frame);
    CHECK_FALSE(q.has_room(encoded_frame_size(100)));
    std::vector<uint8_t> marker;
    append_marker(marker, 1);
    CHECK(q.push_bytes(marker));  // a cut needs its marker even behind a full queue
    const size_t before = q.bytes();
    size_t pushed = 0;
    while (q.push_bytes(marker)) ++pushed;
    CHECK(pushed > 0);
    CHECK(q.bytes() <= q.limit() + SendQueue::kControlAllowance);
    CHECK(q.bytes() == before + pushed * marker.size());
}
