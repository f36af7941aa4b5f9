// PeerMesh over real TCP sockets on 127.0.0.0/8 (no mocks): several meshes in
// this process play several VMMs. Ports come from the kernel (bind to port 0),
// so parallel test runs do not collide.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/peer_mesh.hpp"
#include "net/peer_protocol.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/unique_fd.hpp"

using namespace vvmm;
using namespace vvmm::net;
using namespace std::chrono_literals;

namespace {

const MacAddress kBroadcast({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});

// A port the kernel just handed out; the mesh binds it right after.
uint16_t free_port(const char* ip)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, ip, &a.sin_addr);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    return ntohs(a.sin_port);
}

SocketAddress address(const char* ip, uint16_t port)
{
    return SocketAddress::parse(std::string(ip) + ":" + std::to_string(port)).value();
}

SocketAddress fresh_address(const char* ip = "127.0.0.1") { return address(ip, free_port(ip)); }

// Test frames: Ethernet header, ethertype 0x88b5, a 32-bit sequence number,
// then a pattern derived from it, so reordering and corruption both show.
std::vector<uint8_t> make_frame(const MacAddress& dst, const MacAddress& src, uint32_t seq, size_t size = 64)
{
    std::vector<uint8_t> f(size);
    std::memcpy(f.data(), dst.bytes().data(), 6);
    std::memcpy(f.data() + 6, src.bytes().data(), 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    store_le<uint32_t>(f.data() + 14, seq);
    for (size_t i = 18; i < size; ++i) f[i] = static_cast<uint8_t>(seq * 31 + i);
    return f;
}

uint32_t seq_of(const std::vector<uint8_t>& f) { return load_le<uint32_t>(f.data() + 14); }

// Polls `pred` until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s)
{
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(2ms);
    }
    return true;
}

// Stands in for a virtio-net device: records every frame delivered to the
// "guest", can refuse them (no RX buffers), counts transmit_ready() calls.
class TestSink : public FrameSink {
public:
    bool deliver_to_guest(std::span<const uint8_t> frame) override
    {
        CHECK(!in_callback_.exchange(true));  // never called concurrently or re-entrantly
        bool accepted = false;
        {
            std::lock_guard lock(mutex_);
            ++offers_;
            if (refuse_ || (refuse_every_ && offers_ % refuse_every_ == 0)) {
                ++refused_;
            } else {
                frames_.emplace_back(frame.begin(), frame.end());
                accepted = true;
            }
        }
        // A device calls receive_ready() when RX buffers appear, possibly
        // from inside this callback: the mesh must not re-enter us.
        if (!accepted && refuse_every_ && backend_) backend_->receive_ready();
        in_callback_ = false;
        cv_.notify_all();
        return accepted;
    }
    void transmit_ready() override
    {
        std::lock_guard lock(mutex_);
        ++transmit_ready_;
        cv_.notify_all();
    }

    void set_refuse(bool refuse)
    {
        std::lock_guard lock(mutex_);
        refuse_ = refuse;
    }
    // Refuse every n-th offer and call receive_ready() from the callback.
    void refuse_every(unsigned n, NetBackend* backend)
    {
        std::lock_guard lock(mutex_);
        refuse_every_ = n;
        backend_ = backend;
    }
    bool wait_for_frames(size_t n, std::chrono::milliseconds timeout = 5s)
    {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return frames_.size() >= n; });
    }
    bool wait_for_transmit_ready(int above, std::chrono::milliseconds timeout)
    {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return transmit_ready_ > above; });
    }
    std::vector<std::vector<uint8_t>> frames()
    {
        std::lock_guard lock(mutex_);
        return frames_;
    }
    std::vector<uint32_t> seqs()
    {
        std::lock_guard lock(mutex_);
        std::vector<uint32_t> s;
        for (const auto& f : frames_) s.push_back(seq_of(f));
        return s;
    }
    // Frames from one source MAC: only those are ordered with each other.
    std::vector<uint32_t> seqs_from(const MacAddress& source)
    {
        std::lock_guard lock(mutex_);
        std::vector<uint32_t> s;
        for (const auto& f : frames_)
            if (MacAddress::from_bytes(f.data() + 6) == source) s.push_back(seq_of(f));
        return s;
    }
    int refused()
    {
        std::lock_guard lock(mutex_);
        return refused_;
    }
    int transmit_ready_count()
    {
        std::lock_guard lock(mutex_);
        return transmit_ready_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::vector<uint8_t>> frames_;
    bool refuse_ = false;
    unsigned refuse_every_ = 0;
    NetBackend* backend_ = nullptr;
    uint64_t offers_ = 0;
    int refused_ = 0;
    int transmit_ready_ = 0;
    std::atomic<bool> in_callback_{false};
};

struct Node {
    PeerNetSpec spec;
    TestSink sink;
    std::unique_ptr<PeerMesh> mesh;

    const MacAddress& mac() const { return spec.mac; }
    // Sends like a device: on refusal, waits for transmit_ready() and retries.
    // (CHECK, not REQUIRE: it also runs on threads of its own.)
    void send(const std::vector<uint8_t>& frame)
    {
        for (;;) {
            const int ready = sink.transmit_ready_count();
            if (mesh->try_send(frame)) return;
            if (!sink.wait_for_transmit_ready(ready, 10s)) {
                FAIL_CHECK("transmit_ready() never came");
                return;
            }
        }
    }
};

PeerNetSpec make_spec(const std::string& id, const SocketAddress& listen, std::vector<SocketAddress> peers)
{
    PeerNetSpec spec;
    spec.id = id;
    spec.listen = listen;
    spec.peers = std::move(peers);
    spec.mac = MacAddress::derived_from_id(id);
    return spec;
}

std::unique_ptr<Node> create_node(const PeerNetSpec& spec, const PeerMeshLimits& limits = {})
{
    auto node = std::make_unique<Node>();
    node->spec = spec;
    auto mesh = PeerMesh::create(spec, limits);
    REQUIRE_MESSAGE(mesh.ok(), mesh.error().message());
    node->mesh = std::move(mesh.value());
    node->mesh->attach(&node->sink);
    return node;
}

void start(Node& node)
{
    auto started = node.mesh->start();
    REQUIRE_MESSAGE(started.ok(), started.error().message());
}

// n VMMs that all know each other, created (listening) before any starts.
std::vector<std::unique_ptr<Node>> make_cluster(size_t n, const PeerMeshLimits& limits = {})
{
    std::vector<SocketAddress> addresses;
    for (size_t i = 0; i < n; ++i) addresses.push_back(fresh_address());
    std::vector<std::unique_ptr<Node>> nodes;
    for (size_t i = 0; i < n; ++i) {
        std::vector<SocketAddress> others;
        for (size_t j = 0; j < n; ++j)
            if (j != i) others.push_back(addresses[j]);
        nodes.push_back(create_node(make_spec(std::string(1, static_cast<char>('a' + i)), addresses[i], others), limits));
    }
    for (auto& node : nodes) start(*node);
    for (auto& node : nodes)
        REQUIRE_MESSAGE(wait_until([&] { return node->mesh->connected_peers() == n - 1; }), "mesh did not connect");
    return nodes;
}

std::vector<uint32_t> range(uint32_t from, uint32_t to)
{
    std::vector<uint32_t> v;
    for (uint32_t i = from; i < to; ++i) v.push_back(i);
    return v;
}

// ---- a hand-written peer speaking raw bytes, for the handshake tests --------

UniqueFd connect_to(const SocketAddress& a)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    timeval tv{3, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(a.port());
    std::memcpy(&sa.sin_addr, a.address().data(), 4);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    return fd;
}

UniqueFd listen_on(const SocketAddress& a)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(a.port());
    std::memcpy(&sa.sin_addr, a.address().data(), 4);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd.get(), 4) == 0);
    return fd;
}

UniqueFd accept_within(int listen_fd, int timeout_ms)
{
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.valid()) {
        timeval rtv{3, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &rtv, sizeof rtv);
    }
    return fd;
}

void write_all(int fd, const std::vector<uint8_t>& bytes)
{
    REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

// Reads until `want` messages decoded, EOF (returns false) or the 3 s timeout (REQUIREd not to happen).
struct Received {
    std::vector<Message> messages;
    bool eof = false;
};

Received read_messages(int fd, size_t want)
{
    Received r;
    MessageDecoder decoder;
    uint8_t buf[4096];
    while (r.messages.size() < want) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            r.eof = true;
            return r;
        }
        REQUIRE_MESSAGE(n > 0, "timed out waiting for the mesh");
        decoder.feed(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
        for (;;) {
            auto m = decoder.next();
            REQUIRE(m.ok());
            if (!m.value()) break;
            r.messages.push_back(std::move(*m.value()));
        }
    }
    return r;
}

// A mesh created without a MeshCluster: cluster "-", empty secret.
const std::vector<uint8_t> kNoSecret;
constexpr const char* kNoCluster = "-";

std::vector<uint8_t> hello_bytes(const std::string& id, const SocketAddress& listen, uint16_t version = kProtocolVersion,
                                 const Nonce& nonce = Nonce{}, const std::string& cluster = kNoCluster)
{
    std::vector<uint8_t> out;
    append_hello(out, Hello{.mac = MacAddress::derived_from_id(id), .listen = listen, .id = id, .cluster = cluster,
                            .nonce = nonce});
    store_le<uint16_t>(out.data() + kHeaderSize + 4, version);
    return out;
}

std::vector<uint8_t> auth_bytes(const AuthTag& tag)
{
    std::vector<uint8_t> out;
    append_auth(out, tag);
    return out;
}

// Reads the HELLO the mesh sends (REQUIREd).
Hello read_hello(int fd)
{
    Received r = read_messages(fd, 1);
    REQUIRE_FALSE(r.eof);
    REQUIRE(std::holds_alternative<Hello>(r.messages[0]));
    return std::get<Hello>(r.messages[0]);
}

// Reads the AUTH the mesh sends (REQUIREd).
AuthTag read_auth(int fd)
{
    Received r = read_messages(fd, 1);
    REQUIRE_FALSE(r.eof);
    REQUIRE(std::holds_alternative<AuthMessage>(r.messages[0]));
    return std::get<AuthMessage>(r.messages[0]).tag;
}

}  // namespace

TEST_CASE("mesh: create reports a busy listen address, start needs a sink")
{
    const SocketAddress a = fresh_address();
    auto first = PeerMesh::create(make_spec("a", a, {}));
    REQUIRE(first.ok());
    auto second = PeerMesh::create(make_spec("b", a, {}));
    REQUIRE_FALSE(second.ok());
    CHECK(second.error().message().find("cannot listen on " + a.to_string()) != std::string::npos);
    CHECK(first.value()->start().error().message().find("no frame sink") != std::string::npos);
    PeerMeshLimits tiny;
    tiny.send_queue_bytes = 1000;
    CHECK_FALSE(PeerMesh::create(make_spec("c", fresh_address(), {}), tiny).ok());
}

TEST_CASE("mesh: two VMMs exchange frames both ways, in order, none lost")
{
    auto nodes = make_cluster(2);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    constexpr uint32_t kCount = 3000;
    // Sizes from the smallest Ethernet frame to a jumbo one.
    auto size_of = [](uint32_t i) { return size_t{14 + 4} + (i * 997) % 9000; };
    std::thread a_sends([&] {
        for (uint32_t i = 0; i < kCount; ++i) a.send(make_frame(b.mac(), a.mac(), i, size_of(i)));
    });
    for (uint32_t i = 0; i < kCount; ++i) b.send(make_frame(i % 2 ? kBroadcast : a.mac(), b.mac(), i, size_of(i)));
    a_sends.join();

    REQUIRE(b.sink.wait_for_frames(kCount, 10s));
    REQUIRE(a.sink.wait_for_frames(kCount, 10s));
    std::this_thread::sleep_for(50ms);  // nothing extra arrives
    const auto at_b = b.sink.frames();
    const auto at_a = a.sink.frames();
    REQUIRE(at_b.size() == kCount);
    REQUIRE(at_a.size() == kCount);
    for (uint32_t i = 0; i < kCount; ++i) {
        CHECK(at_b[i] == make_frame(b.mac(), a.mac(), i, size_of(i)));
        CHECK(at_a[i] == make_frame(i % 2 ? kBroadcast : a.mac(), b.mac(), i, size_of(i)));
    }
}

TEST_CASE("mesh: three VMMs: broadcast reaches all, unicast only its target, MACs are learned")
{
    auto nodes = make_cluster(3);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    Node& c = *nodes[2];

    // Frames from one sender arrive in order on each connection, so a later
    // broadcast proves that an earlier unicast did not go to a peer.
    a.send(make_frame(kBroadcast, a.mac(), 1));
    a.send(make_frame(b.mac(), a.mac(), 2));  // known from B's HELLO
    a.send(make_frame(kBroadcast, a.mac(), 3));
    REQUIRE(b.sink.wait_for_frames(3));
    REQUIRE(c.sink.wait_for_frames(2));
    CHECK(b.sink.seqs() == std::vector<uint32_t>{1, 2, 3});
    CHECK(c.sink.seqs() == std::vector<uint32_t>{1, 3});

    // A VM "behind" C (another MAC on C's guest) speaks: A learns where it is.
    const MacAddress behind_c({0x52, 0x54, 0x00, 0x99, 0x99, 0x99});
    c.send(make_frame(kBroadcast, behind_c, 100));
    REQUIRE(a.sink.wait_for_frames(1));
    CHECK(a.sink.seqs() == std::vector<uint32_t>{100});
    a.send(make_frame(behind_c, a.mac(), 4));
    a.send(make_frame(kBroadcast, a.mac(), 5));
    // Unknown unicast floods.
    a.send(make_frame(MacAddress({0x52, 0x54, 0x00, 0x77, 0x77, 0x77}), a.mac(), 6));
    // Multicast floods.
    a.send(make_frame(MacAddress({0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}), a.mac(), 7));
    REQUIRE(b.sink.wait_for_frames(7));
    REQUIRE(c.sink.wait_for_frames(6));
    std::this_thread::sleep_for(50ms);
    CHECK(b.sink.seqs_from(a.mac()) == std::vector<uint32_t>{1, 2, 3, 5, 6, 7});
    CHECK(b.sink.seqs_from(behind_c) == std::vector<uint32_t>{100});
    CHECK(c.sink.seqs() == std::vector<uint32_t>{1, 3, 4, 5, 6, 7});

    // Everyone reaches everyone.
    b.send(make_frame(c.mac(), b.mac(), 200));
    c.send(make_frame(a.mac(), c.mac(), 300));
    REQUIRE(c.sink.wait_for_frames(7));
    REQUIRE(a.sink.wait_for_frames(2));
    CHECK(c.sink.seqs().back() == 200);
    CHECK(a.sink.seqs().back() == 300);

    // A frame to the sender's own guest, or one too short or too long, goes nowhere.
    CHECK(a.mesh->try_send(make_frame(a.mac(), a.mac(), 8)));
    CHECK(a.mesh->try_send(std::vector<uint8_t>(13, 0xff)));
    CHECK(a.mesh->try_send(std::vector<uint8_t>(kMaxFrameSize + 1, 0xff)));
    a.send(make_frame(kBroadcast, a.mac(), 9));
    REQUIRE(b.sink.wait_for_frames(8));
    CHECK(b.sink.seqs().back() == 9);
    CHECK(b.sink.frames().size() == 8);
}

TEST_CASE("mesh: a guest without RX buffers pushes back to the sender; nothing is lost or duplicated")
{
    PeerMeshLimits limits;
    limits.send_queue_bytes = 128 * 1024;
    auto nodes = make_cluster(2, limits);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    b.sink.set_refuse(true);

    // With B's guest full, B stops reading, the TCP buffers and A's queue
    // fill up, and A's try_send() refuses for good: memory stays bounded.
    // Sends like a device until refused with no transmit_ready() in sight.
    uint32_t sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        REQUIRE_MESSAGE(sent < 200000, "try_send() never refused");  // 300 MB
        const int ready = a.sink.transmit_ready_count();
        if (a.mesh->try_send(make_frame(b.mac(), a.mac(), sent, 1500))) {
            ++sent;
            continue;
        }
        if (!a.sink.wait_for_transmit_ready(ready, 300ms)) break;
    }
    MESSAGE("A is blocked after " << sent << " frames");
    CHECK(b.sink.refused() >= 1);
    CHECK(b.sink.frames().empty());
    CHECK_FALSE(a.mesh->try_send(make_frame(b.mac(), a.mac(), sent, 1500)));
    const int ready_before = a.sink.transmit_ready_count();

    b.sink.set_refuse(false);
    b.mesh->receive_ready();
    REQUIRE(b.sink.wait_for_frames(sent, 10s));
    CHECK(a.sink.wait_for_transmit_ready(ready_before, 5s));
    std::this_thread::sleep_for(50ms);
    const auto got = b.sink.frames();
    REQUIRE(got.size() == sent);
    for (uint32_t i = 0; i < sent; ++i) REQUIRE(got[i] == make_frame(b.mac(), a.mac(), i, 1500));

    // And traffic flows again.
    a.send(make_frame(b.mac(), a.mac(), sent, 1500));
    REQUIRE(b.sink.wait_for_frames(sent + 1));
}

TEST_CASE("mesh: a guest that often runs out of RX buffers still gets every frame once, in order")
{
    auto nodes = make_cluster(3);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    Node& c = *nodes[2];
    // B refuses every 3rd offer and calls receive_ready() from inside the callback.
    b.sink.refuse_every(3, b.mesh.get());
    constexpr uint32_t kCount = 2000;
    std::thread c_sends([&] {
        for (uint32_t i = 0; i < kCount; ++i) c.send(make_frame(b.mac(), c.mac(), 1000000 + i, 200));
    });
    for (uint32_t i = 0; i < kCount; ++i) a.send(make_frame(b.mac(), a.mac(), i, 100 + i % 1000));
    c_sends.join();
    REQUIRE(b.sink.wait_for_frames(2 * kCount, 10s));
    CHECK(b.sink.refused() > 0);
    std::vector<uint32_t> from_a;
    std::vector<uint32_t> from_c;
    for (uint32_t s : b.sink.seqs()) (s >= 1000000 ? from_c : from_a).push_back(s);
    CHECK(from_a == range(0, kCount));
    CHECK(from_c == range(1000000, 1000000 + kCount));
}

TEST_CASE("mesh: frames queued before a peer is up arrive when it comes, and after it restarts")
{
    // 127.0.0.1 sorts before 127.0.0.2, so `low` dials `high`.
    const SocketAddress low = fresh_address("127.0.0.1");
    const SocketAddress high = fresh_address("127.0.0.2");
    const PeerNetSpec low_spec = make_spec("low", low, {high});
    const PeerNetSpec high_spec = make_spec("high", high, {low});
    bool late_is_dialer = false;
    SUBCASE("the late one accepts") { late_is_dialer = false; }
    SUBCASE("the late one dials") { late_is_dialer = true; }
    CAPTURE(late_is_dialer);
    const PeerNetSpec& early_spec = late_is_dialer ? high_spec : low_spec;
    const PeerNetSpec& late_spec = late_is_dialer ? low_spec : high_spec;

    auto early = create_node(early_spec);
    start(*early);
    // The peer is not up: its frames wait (its MAC is unknown, so they flood,
    // which here means: queue for the only peer).
    for (uint32_t i = 0; i < 50; ++i) early->send(make_frame(late_spec.mac, early_spec.mac, i, 300));
    std::this_thread::sleep_for(600ms);  // the dialer, if it is `early`, has backed off a few times
    CHECK(early->mesh->connected_peers() == 0);

    auto late = create_node(late_spec);
    start(*late);
    REQUIRE(late->sink.wait_for_frames(50, 5s));
    CHECK(late->sink.seqs() == range(0, 50));

    // The peer goes away; frames for it wait again, then reach its successor.
    late.reset();
    REQUIRE(wait_until([&] { return early->mesh->connected_peers() == 0; }, 3s));
    for (uint32_t i = 50; i < 70; ++i) early->send(make_frame(late_spec.mac, early_spec.mac, i, 300));
    late = create_node(late_spec);
    start(*late);
    REQUIRE(late->sink.wait_for_frames(20, 5s));
    CHECK(late->sink.seqs() == range(50, 70));
    // And the other direction works on the new connection.
    late->send(make_frame(early_spec.mac, late_spec.mac, 7, 100));
    REQUIRE(early->sink.wait_for_frames(1));
    CHECK(early->sink.seqs() == std::vector<uint32_t>{7});
}

TEST_CASE("mesh: an unconnected peer's full queue drops frames for it instead of stalling the guest")
{
    PeerMeshLimits limits;
    limits.send_queue_bytes = 100 * 1024;
    const SocketAddress absent = fresh_address();  // nobody listens here
    auto a = create_node(make_spec("a", fresh_address(), {absent}), limits);
    start(*a);
    for (uint32_t i = 0; i < 1000; ++i)
        CHECK(a->mesh->try_send(make_frame(kBroadcast, a->mac(), i, 1500)));  // 1.5 MB, never refused
}

TEST_CASE("mesh: the accepting side checks the dialer's HELLO")
{
    // The mesh listens on 127.0.0.2; a fake peer "listening" on 127.0.0.1
    // sorts lower, so it is the one that dials.
    const SocketAddress fake = fresh_address("127.0.0.1");
    const SocketAddress should_be_dialed = address("127.0.0.3", free_port("127.0.0.3"));
    auto node = create_node(make_spec("m", fresh_address("127.0.0.2"), {fake, should_be_dialed}));
    start(*node);
    const SocketAddress& listen = node->spec.listen;

    SUBCASE("wrong version: closed without an answer")
    {
        UniqueFd s = connect_to(listen);
        write_all(s.get(), hello_bytes("f", fake, 1));
        const Received r = read_messages(s.get(), 1);
        CHECK(r.eof);
        CHECK(r.messages.empty());
    }
    SUBCASE("not a configured peer")
    {
        UniqueFd s = connect_to(listen);
        write_all(s.get(), hello_bytes("f", address("127.0.0.1", 1)));
        CHECK(read_messages(s.get(), 1).eof);
    }
    SUBCASE("a peer that should have waited to be dialed")
    {
        UniqueFd s = connect_to(listen);
        write_all(s.get(), hello_bytes("f", should_be_dialed));
        CHECK(read_messages(s.get(), 1).eof);
    }
    SUBCASE("a frame before HELLO")
    {
        UniqueFd s = connect_to(listen);
        std::vector<uint8_t> bytes;
        append_frame(bytes, make_frame(kBroadcast, MacAddress::derived_from_id("f"), 1));
        write_all(s.get(), bytes);
        CHECK(read_messages(s.get(), 1).eof);
    }
    SUBCASE("our own id")
    {
        UniqueFd s = connect_to(listen);
        write_all(s.get(), hello_bytes("m", fake));
        CHECK(read_messages(s.get(), 1).eof);
    }
    SUBCASE("a wrong AUTH tag closes, never connected")
    {
        UniqueFd s = connect_to(listen);
        const Nonce nonce = random_nonce();
        write_all(s.get(), hello_bytes("f", fake, kProtocolVersion, nonce));
        const Hello answer = read_hello(s.get());
        // Signed with a secret the mesh does not have; then a frame it must not take.
        const std::vector<uint8_t> wrong{'x'};
        std::vector<uint8_t> bytes = auth_bytes(auth_tag(wrong, kNoCluster, "f", nonce, answer.nonce));
        append_frame(bytes, make_frame(node->mac(), MacAddress::derived_from_id("f"), 1));
        write_all(s.get(), bytes);
        CHECK(read_messages(s.get(), 1).eof);
        CHECK(node->mesh->connected_peers() == 0);
    }
    SUBCASE("a tag for another nonce (a replay) closes")
    {
        UniqueFd s = connect_to(listen);
        const Nonce nonce = random_nonce();
        write_all(s.get(), hello_bytes("f", fake, kProtocolVersion, nonce));
        (void)read_hello(s.get());
        write_all(s.get(), auth_bytes(auth_tag(kNoSecret, kNoCluster, "f", nonce, random_nonce())));
        CHECK(read_messages(s.get(), 1).eof);
        CHECK(node->mesh->connected_peers() == 0);
    }
    SUBCASE("a frame after HELLO but before AUTH closes")
    {
        UniqueFd s = connect_to(listen);
        write_all(s.get(), hello_bytes("f", fake, kProtocolVersion, random_nonce()));
        (void)read_hello(s.get());
        std::vector<uint8_t> bytes;
        append_frame(bytes, make_frame(node->mac(), MacAddress::derived_from_id("f"), 1));
        write_all(s.get(), bytes);
        CHECK(read_messages(s.get(), 1).eof);
        CHECK(node->mesh->connected_peers() == 0);
    }
    SUBCASE("another cluster name: closed without an answer")
    {
        UniqueFd s = connect_to(listen);
        write_all(s.get(), hello_bytes("f", fake, kProtocolVersion, random_nonce(), "default"));
        const Received r = read_messages(s.get(), 1);
        CHECK(r.eof);
        CHECK(r.messages.empty());
    }
    SUBCASE("a good handshake connects; short frames are dropped; a second HELLO closes")
    {
        UniqueFd s = connect_to(listen);
        const Nonce nonce = random_nonce();
        write_all(s.get(), hello_bytes("f", fake, kProtocolVersion, nonce));
        const Hello answer = read_hello(s.get());
        CHECK(answer.role == PeerRole::peer);
        CHECK(answer.id == "m");
        CHECK(answer.cluster == kNoCluster);
        CHECK(answer.listen == listen);
        CHECK(answer.mac == node->mac());
        CHECK(answer.nonce != nonce);
        CHECK(answer.nonce != Nonce{});
        // Not a peer before it proved itself.
        CHECK(node->mesh->connected_peers() == 0);
        // The dialer proves first; the acceptor answers with its own tag.
        write_all(s.get(), auth_bytes(auth_tag(kNoSecret, kNoCluster, "f", nonce, answer.nonce)));
        CHECK(read_auth(s.get()) == auth_tag(kNoSecret, kNoCluster, "m", answer.nonce, nonce));
        REQUIRE(wait_until([&] { return node->mesh->connected_peers() == 1; }));
        CHECK(node->mesh->connected_peer_ids() == std::vector<std::string>{"f"});

        std::vector<uint8_t> bytes;
        append_frame(bytes, std::vector<uint8_t>(13, 0xff));
        append_frame(bytes, make_frame(node->mac(), MacAddress::derived_from_id("f"), 42));
        write_all(s.get(), bytes);
        REQUIRE(node->sink.wait_for_frames(1));
        CHECK(node->sink.seqs() == std::vector<uint32_t>{42});

        // The mesh's guest answers; the fake peer receives it.
        node->send(make_frame(MacAddress::derived_from_id("f"), node->mac(), 43));
        Received r = read_messages(s.get(), 1);
        REQUIRE(r.messages.size() == 1);
        CHECK(seq_of(std::get<FrameMessage>(r.messages[0]).frame) == 43);

        write_all(s.get(), hello_bytes("f", fake, kProtocolVersion, nonce));
        CHECK(read_messages(s.get(), 1).eof);
        CHECK(wait_until([&] { return node->mesh->connected_peers() == 0; }));
    }
    CHECK(node->sink.frames().size() <= 1);
}

TEST_CASE("mesh: the dialing side refuses a peer that answers with another version or a wrong AUTH, and retries")
{
    const SocketAddress fake = fresh_address("127.0.0.2");
    UniqueFd listener = listen_on(fake);
    auto node = create_node(make_spec("m", fresh_address("127.0.0.1"), {fake}));
    start(*node);

    UniqueFd first = accept_within(listener.get(), 3000);
    REQUIRE(first.valid());
    CHECK(read_hello(first.get()).id == "m");
    write_all(first.get(), hello_bytes("f", fake, 7));
    CHECK(read_messages(first.get(), 1).eof);
    CHECK(node->mesh->connected_peers() == 0);

    // It dials again (after its backoff); this answer's AUTH is wrong.
    UniqueFd second = accept_within(listener.get(), 3000);
    REQUIRE(second.valid());
    Hello dialer = read_hello(second.get());
    Nonce nonce = random_nonce();
    write_all(second.get(), hello_bytes("f", fake, kProtocolVersion, nonce));
    CHECK(read_auth(second.get()) == auth_tag(kNoSecret, kNoCluster, "m", dialer.nonce, nonce));
    // Its own tag reflected back: the tag covers the sender's id and nonce first, so this fails.
    write_all(second.get(), auth_bytes(auth_tag(kNoSecret, kNoCluster, "m", dialer.nonce, nonce)));
    CHECK(read_messages(second.get(), 1).eof);
    CHECK(node->mesh->connected_peers() == 0);

    // And again; this time the answer is good.
    UniqueFd third = accept_within(listener.get(), 3000);
    REQUIRE(third.valid());
    dialer = read_hello(third.get());
    CHECK(dialer.nonce != nonce);
    nonce = random_nonce();
    write_all(third.get(), hello_bytes("f", fake, kProtocolVersion, nonce));
    CHECK(read_auth(third.get()) == auth_tag(kNoSecret, kNoCluster, "m", dialer.nonce, nonce));
    CHECK(node->mesh->connected_peers() == 0);  // not before it has checked our AUTH
    write_all(third.get(), auth_bytes(auth_tag(kNoSecret, kNoCluster, "f", nonce, dialer.nonce)));
    CHECK(wait_until([&] { return node->mesh->connected_peers() == 1; }));

    // A peer that answers as somebody else is refused too.
    node.reset();
    node = create_node(make_spec("m", fresh_address("127.0.0.1"), {fake}));
    start(*node);
    UniqueFd fourth = accept_within(listener.get(), 3000);
    REQUIRE(fourth.valid());
    (void)read_hello(fourth.get());
    write_all(fourth.get(), hello_bytes("f", address("127.0.0.2", 1), kProtocolVersion, random_nonce()));
    CHECK(read_messages(fourth.get(), 1).eof);
}

TEST_CASE("mesh: stop() ends all callbacks")
{
    auto nodes = make_cluster(2);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    a.send(make_frame(b.mac(), a.mac(), 1));
    REQUIRE(b.sink.wait_for_frames(1));
    b.mesh->stop();
    b.mesh->stop();  // idempotent
    for (uint32_t i = 2; i < 100; ++i) (void)a.mesh->try_send(make_frame(b.mac(), a.mac(), i));
    std::this_thread::sleep_for(100ms);
    CHECK(b.sink.frames().size() == 1);
    CHECK(b.mesh->try_send(make_frame(a.mac(), b.mac(), 1)));  // dropped, not refused
}
