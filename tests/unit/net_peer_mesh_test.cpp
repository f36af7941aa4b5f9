// PeerMesh over real TCP sockets on 127.0.0.0/8 (no mocks): several meshes in
// this process play several VMMs. Ports come from the kernel (bind to port 0),
// so parallel test runs do not collide.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/peer_mesh.hpp"
#include "net/peer_protocol.hpp"
#include "net/tls_link.hpp"
#include "net/tls_psk.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/unique_fd.hpp"

using namespace vvmm;
using namespace vvmm::net;
using namespace std::chrono_literals;

namespace {

const MacAddress kBroadcast({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});

// The message of a failed Result; doctest evaluates a REQUIRE_MESSAGE's
// message on success too (with -s), so it must not call error() blindly.
template <typename R>
std::string error_of(const R& r)
{
    return r.ok() ? std::string() : r.error().message();
}

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
std::string message_of(const Result<void>& r) { return r.ok() ? std::string("(no error)") : r.error().message(); }

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
    size_t size()
    {
        std::lock_guard lock(mutex_);
        return frames_.size();
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

// Records what the mesh hands to the cluster layer. Controls also note how
// many frames the sink had then (both run on the network thread, one at a
// time), which shows where they fell among the frames.
class TestHandler : public PeerMessageSink, public ControllerRequestHandler {
public:
    struct Control {
        std::string peer;
        MessageType type;
        uint64_t epoch;
        nlohmann::json body;
        size_t frames_before;
    };

    explicit TestHandler(TestSink& sink) : sink_(sink) {}

    void on_control(const std::string& peer, MessageType type, uint64_t epoch, const nlohmann::json& body) override
    {
        // As the cluster code does with a field of the wrong type.
        if (body.contains("throw")) (void)body.at("throw").get<std::string>();
        const size_t frames = sink_.size();
        std::lock_guard lock(mutex_);
        controls_.push_back({peer, type, epoch, body, frames});
    }
    void on_peer_lost(const std::string& peer) override
    {
        std::lock_guard lock(mutex_);
        lost_.push_back(peer);
    }
    void on_parity(const std::string& peer, const ParityMessage& m) override
    {
        std::lock_guard lock(mutex_);
        parity_from_.push_back(peer);
        parity_.push_back(m);
    }
    std::vector<ParityMessage> parity()
    {
        std::lock_guard lock(mutex_);
        return parity_;
    }
    void on_request(const nlohmann::json& request, std::function<void(nlohmann::json)> reply) override
    {
        std::lock_guard lock(mutex_);
        requests_.push_back(request);
        replies_.push_back(std::move(reply));
    }

    std::vector<Control> controls()
    {
        std::lock_guard lock(mutex_);
        return controls_;
    }
    std::vector<std::string> lost()
    {
        std::lock_guard lock(mutex_);
        return lost_;
    }
    std::vector<nlohmann::json> requests()
    {
        std::lock_guard lock(mutex_);
        return requests_;
    }
    // Answers the i-th request, from the calling thread.
    void reply(size_t i, nlohmann::json body)
    {
        std::function<void(nlohmann::json)> fn;
        {
            std::lock_guard lock(mutex_);
            REQUIRE(i < replies_.size());
            fn = replies_[i];
        }
        fn(std::move(body));
    }

private:
    TestSink& sink_;
    std::mutex mutex_;
    std::vector<Control> controls_;
    std::vector<std::string> lost_;
    std::vector<ParityMessage> parity_;
    std::vector<std::string> parity_from_;
    std::vector<nlohmann::json> requests_;
    std::vector<std::function<void(nlohmann::json)>> replies_;
};

struct Node {
    PeerNetSpec spec;
    TestSink sink;
    TestHandler handler{sink};
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

// With a cluster, node->handler is the mesh's message sink and request handler.
std::unique_ptr<Node> create_node(const PeerNetSpec& spec, const PeerMeshLimits& limits = {},
                                  std::optional<MeshCluster> cluster = std::nullopt)
{
    auto node = std::make_unique<Node>();
    node->spec = spec;
    auto mesh = cluster ? PeerMesh::create(spec, limits, *cluster) : PeerMesh::create(spec, limits);
    REQUIRE_MESSAGE(mesh.ok(), error_of(mesh));
    node->mesh = std::move(mesh.value());
    node->mesh->attach(&node->sink);
    if (cluster) {
        node->mesh->set_message_sink(&node->handler);
        node->mesh->set_request_handler(&node->handler);
    }
    return node;
}

void start(Node& node)
{
    auto started = node.mesh->start();
    REQUIRE_MESSAGE(started.ok(), error_of(started));
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

// ---- a hand-written peer speaking raw protocol bytes inside TLS ------------

sockaddr_in ipv4_of(const SocketAddress& a)
{
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(a.port());
    std::memcpy(&sa.sin_addr, a.address().data(), 4);
    return sa;
}

// A connection to `a`, from `source_ip` if given (any port).
UniqueFd connect_from(const char* source_ip, const SocketAddress& a)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    if (source_ip) {
        sockaddr_in from{};
        from.sin_family = AF_INET;
        REQUIRE(::inet_pton(AF_INET, source_ip, &from.sin_addr) == 1);
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from) == 0);
    }
    sockaddr_in sa = ipv4_of(a);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    return fd;
}

UniqueFd connect_to(const SocketAddress& a) { return connect_from(nullptr, a); }

// Whether the other end closed `fd` within `timeout` (EOF or reset).
bool closed_within(int fd, std::chrono::milliseconds timeout)
{
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        uint8_t buf[512];
        const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
    }
    return false;
}

UniqueFd listen_on(const SocketAddress& a)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa = ipv4_of(a);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd.get(), 4) == 0);
    return fd;
}

UniqueFd accept_within(int listen_fd, int timeout_ms)
{
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return UniqueFd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
}

// A mesh created without a MeshCluster: cluster "-", empty secret.
const std::vector<uint8_t> kNoSecret;
constexpr const char* kNoCluster = "-";

std::vector<uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// One TLS connection with the mesh, keyed like a member of `cluster` with `secret`.
struct RawPeer {
    std::unique_ptr<ClusterPsk> psk;
    UniqueSslCtx ctx;
    std::optional<TlsLink> link;
    std::string handshake_error;  // empty: the TLS handshake succeeded
    MessageDecoder decoder;
};

std::unique_ptr<RawPeer> tls_over(UniqueFd fd, TlsLink::Side side, const std::vector<uint8_t>& secret,
                                  const std::string& cluster)
{
    auto peer = std::make_unique<RawPeer>();
    peer->psk = std::make_unique<ClusterPsk>(derive_cluster_psk(secret, cluster));
    auto ctx = make_psk_tls_context(peer->psk.get());
    REQUIRE_MESSAGE(ctx.ok(), error_of(ctx));
    peer->ctx = std::move(ctx.value());
    auto link = TlsLink::handshake(std::move(fd), peer->ctx.get(), side, TlsLink::Clock::now() + 3s, "the mesh");
    if (link) peer->link.emplace(std::move(link.value()));
    else peer->handshake_error = link.error().message();
    return peer;
}

// Dials the mesh and completes the TLS handshake (REQUIREd unless `may_fail`).
std::unique_ptr<RawPeer> dial_tls(const SocketAddress& a, const std::vector<uint8_t>& secret = kNoSecret,
                                  const std::string& cluster = kNoCluster, bool may_fail = false)
{
    auto peer = tls_over(connect_to(a), TlsLink::Side::client, secret, cluster);
    if (!may_fail) REQUIRE_MESSAGE(peer->link, peer->handshake_error);
    return peer;
}

std::unique_ptr<RawPeer> accept_tls(int listen_fd, const std::vector<uint8_t>& secret = kNoSecret,
                                    const std::string& cluster = kNoCluster)
{
    UniqueFd fd = accept_within(listen_fd, 3000);
    REQUIRE(fd.valid());
    auto peer = tls_over(std::move(fd), TlsLink::Side::server, secret, cluster);
    REQUIRE_MESSAGE(peer->link, peer->handshake_error);
    return peer;
}

void write_all(RawPeer& peer, const std::vector<uint8_t>& bytes)
{
    REQUIRE(peer.link);
    auto sent = peer.link->send(bytes, TlsLink::Clock::now() + 3s);
    REQUIRE_MESSAGE(sent.ok(), error_of(sent));
}

// Reads until `want` messages decoded, EOF or a TLS/socket error (returns
// eof) or the 3 s timeout (REQUIREd not to happen).
struct Received {
    std::vector<Message> messages;
    bool eof = false;
};

Received read_messages(RawPeer& peer, size_t want)
{
    Received r;
    REQUIRE(peer.link);
    uint8_t buf[4096];
    while (r.messages.size() < want) {
        auto n = peer.link->receive(buf, TlsLink::Clock::now() + 3s);
        if (!n.ok()) REQUIRE_MESSAGE(n.error().message().find("timed out") == std::string::npos, "timed out waiting for the mesh");
        if (!n.ok() || n.value() == 0) {
            r.eof = true;
            return r;
        }
        peer.decoder.feed(std::span<const uint8_t>(buf, n.value()));
        for (;;) {
            auto m = peer.decoder.next();
            REQUIRE(m.ok());
            if (!m.value()) break;
            r.messages.push_back(std::move(*m.value()));
        }
    }
    return r;
}

Hello peer_hello(const std::string& id, const SocketAddress& listen, const SocketAddress& target,
                 const std::string& cluster = kNoCluster, const std::string& target_id = "")
{
    return Hello{.mac = MacAddress::derived_from_id(id), .listen = listen, .id = id, .cluster = cluster,
                 .target = target, .target_id = target_id};
}

std::vector<uint8_t> hello_bytes(const Hello& hello, uint16_t version = kProtocolVersion)
{
    std::vector<uint8_t> out;
    append_hello(out, hello);
    store_le<uint16_t>(out.data() + kHeaderSize + 4, version);
    return out;
}

// Reads the HELLO the mesh sends (REQUIREd).
Hello read_hello(RawPeer& peer)
{
    Received r = read_messages(peer, 1);
    REQUIRE_FALSE(r.eof);
    REQUIRE(std::holds_alternative<Hello>(r.messages[0]));
    return std::get<Hello>(r.messages[0]);
}

}  // namespace

TEST_CASE("mesh: create reports a busy listen address, start needs a sink")
{
    const SocketAddress a = fresh_address();
    auto first = PeerMesh::create(make_spec("a", a, {}));
    REQUIRE(first.ok());
    PeerMeshLimits impatient;
    impatient.listen_busy_wait = std::chrono::milliseconds(200);
    const auto before = std::chrono::steady_clock::now();
    auto second = PeerMesh::create(make_spec("b", a, {}), impatient);
    REQUIRE_FALSE(second.ok());
    CHECK(std::chrono::steady_clock::now() - before >= impatient.listen_busy_wait);
    CHECK(second.error().message().find("cannot listen on " + a.to_string()) != std::string::npos);
    CHECK(first.value()->start().error().message().find("no frame sink") != std::string::npos);
    PeerMeshLimits tiny;
    tiny.send_queue_bytes = 1000;
    CHECK_FALSE(PeerMesh::create(make_spec("c", fresh_address(), {}), tiny).ok());
}

TEST_CASE("mesh: create waits for a listen address its predecessor is still releasing")
{
    const SocketAddress a = fresh_address();
    auto first = PeerMesh::create(make_spec("a", a, {}));
    REQUIRE(first.ok());
    std::thread releaser([&first] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        first.value().reset();
    });
    auto second = PeerMesh::create(make_spec("a", a, {}));
    releaser.join();
    CHECK(second.ok());
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
        if (a.sink.wait_for_transmit_ready(ready, 300ms)) continue;
        // No call for 300 ms; blocked for good only if it still refuses (on a
        // slow machine the last write may just have taken longer).
        if (!a.mesh->try_send(make_frame(b.mac(), a.mac(), sent, 1500))) break;
        ++sent;
    }
    MESSAGE("A is blocked after " << sent << " frames");
    CHECK(b.sink.refused() >= 1);
    CHECK(b.sink.frames().empty());
    const int ready_before = a.sink.transmit_ready_count();
    // `vvmm status` shows who waits: B holds a frame its guest refused, A's queue is full.
    const auto ra = a.mesh->report(), rb = b.mesh->report();
    CHECK(ra["guest_tx_blocked"] == true);
    REQUIRE(ra["peers"].size() == 1);
    CHECK(ra["peers"][0]["linked"] == true);
    CHECK(ra["peers"][0]["stage"] == "established");
    CHECK(ra["peers"][0]["queued_bytes"].get<size_t>() > 64 * 1024);
    CHECK(rb["peers"][0]["frame_refused_by_guest"] == true);
    CHECK(rb["peers"][0]["reading"] == false);

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

TEST_CASE("mesh: after the boot grace, an unconnected peer's full queue drops frames for it instead of stalling the guest")
{
    PeerMeshLimits limits;
    limits.send_queue_bytes = 100 * 1024;
    limits.boot_grace = 200ms;
    const SocketAddress absent = fresh_address();  // nobody listens here
    auto a = create_node(make_spec("a", fresh_address(), {absent}), limits);
    start(*a);
    std::this_thread::sleep_for(400ms);
    for (uint32_t i = 0; i < 1000; ++i)
        CHECK(a->mesh->try_send(make_frame(kBroadcast, a->mac(), i, 1500)));  // 1.5 MB, never refused
}

TEST_CASE("mesh: while the cluster boots, a peer not up yet pushes back; every frame arrives once it comes")
{
    // A guest that sends far more than a queue holds before its peer's VMM
    // has even started: nothing may be dropped (the test guest never retransmits).
    PeerMeshLimits limits;
    limits.send_queue_bytes = 100 * 1024;
    const SocketAddress low = fresh_address("127.0.0.1");
    const SocketAddress high = fresh_address("127.0.0.2");
    auto early = create_node(make_spec("low", low, {high}), limits);
    start(*early);
    const PeerNetSpec late_spec = make_spec("high", high, {low});
    constexpr uint32_t kFrames = 1000;  // 1.5 MB
    std::thread sender([&] {
        for (uint32_t i = 0; i < kFrames; ++i) early->send(make_frame(late_spec.mac, early->mac(), i, 1500));
    });
    std::this_thread::sleep_for(500ms);
    CHECK(early->sink.transmit_ready_count() == 0);  // refused, and waiting: not dropped
    auto late = create_node(late_spec, limits);
    start(*late);
    sender.join();
    REQUIRE(late->sink.wait_for_frames(kFrames, 10s));
    CHECK(late->sink.seqs() == range(0, kFrames));
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
    const Hello good = peer_hello("f", fake, listen);

    SUBCASE("wrong version: closed without an answer")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(good, 2));
        const Received r = read_messages(*s, 1);
        CHECK(r.eof);
        CHECK(r.messages.empty());
    }
    SUBCASE("not a configured peer")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("f", address("127.0.0.1", 1), listen)));
        CHECK(read_messages(*s, 1).eof);
    }
    SUBCASE("a peer that should have waited to be dialed")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("f", should_be_dialed, listen)));
        CHECK(read_messages(*s, 1).eof);
    }
    SUBCASE("a frame before HELLO")
    {
        auto s = dial_tls(listen);
        std::vector<uint8_t> bytes;
        append_frame(bytes, make_frame(kBroadcast, MacAddress::derived_from_id("f"), 1));
        write_all(*s, bytes);
        CHECK(read_messages(*s, 1).eof);
    }
    SUBCASE("our own id")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("m", fake, listen)));
        CHECK(read_messages(*s, 1).eof);
    }
    SUBCASE("meant for another VMM (a relay): closed without an answer")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("f", fake, should_be_dialed)));
        const Received r = read_messages(*s, 1);
        CHECK(r.eof);
        CHECK(r.messages.empty());
    }
    SUBCASE("meant for another id at this address: closed")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("f", fake, listen, kNoCluster, "n")));
        CHECK(read_messages(*s, 1).eof);
    }
    SUBCASE("no target stated: closed")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("f", fake, SocketAddress())));
        CHECK(read_messages(*s, 1).eof);
    }
    SUBCASE("plain TCP, no TLS: closed, nothing decoded")
    {
        UniqueFd s = connect_to(listen);
        const auto bytes = hello_bytes(good);
        REQUIRE(::send(s.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
        timeval tv{3, 0};
        ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        uint8_t buf[256];
        ssize_t n;
        while ((n = ::recv(s.get(), buf, sizeof buf, 0)) > 0) {}  // perhaps a TLS alert, then EOF
        CHECK(n == 0);
    }
    SUBCASE("another cluster name inside TLS: closed without an answer")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(peer_hello("f", fake, listen, "default")));
        const Received r = read_messages(*s, 1);
        CHECK(r.eof);
        CHECK(r.messages.empty());
    }
    SUBCASE("a good handshake connects; short frames are dropped; a second HELLO closes")
    {
        auto s = dial_tls(listen);
        write_all(*s, hello_bytes(good));
        const Hello answer = read_hello(*s);
        CHECK(answer.role == PeerRole::peer);
        CHECK(answer.id == "m");
        CHECK(answer.cluster == kNoCluster);
        CHECK(answer.listen == listen);
        CHECK(answer.mac == node->mac());
        CHECK(answer.target == fake);  // whom it answered
        CHECK(answer.target_id == "f");
        REQUIRE(wait_until([&] { return node->mesh->connected_peers() == 1; }));
        CHECK(node->mesh->connected_peer_ids() == std::vector<std::string>{"f"});

        std::vector<uint8_t> bytes;
        append_frame(bytes, std::vector<uint8_t>(13, 0xff));
        append_frame(bytes, make_frame(node->mac(), MacAddress::derived_from_id("f"), 42));
        write_all(*s, bytes);
        REQUIRE(node->sink.wait_for_frames(1));
        CHECK(node->sink.seqs() == std::vector<uint32_t>{42});

        // The mesh's guest answers; the fake peer receives it.
        node->send(make_frame(MacAddress::derived_from_id("f"), node->mac(), 43));
        Received r = read_messages(*s, 1);
        REQUIRE(r.messages.size() == 1);
        CHECK(seq_of(std::get<FrameMessage>(r.messages[0]).frame) == 43);

        write_all(*s, hello_bytes(good));
        CHECK(read_messages(*s, 1).eof);
        CHECK(wait_until([&] { return node->mesh->connected_peers() == 0; }));
    }
    CHECK(node->sink.frames().size() <= 1);
}

TEST_CASE("mesh: the dialing side refuses a peer that answers with another version, as another VMM or for another, and retries")
{
    const SocketAddress fake = fresh_address("127.0.0.2");
    UniqueFd listener = listen_on(fake);
    auto node = create_node(make_spec("m", fresh_address("127.0.0.1"), {fake}));
    start(*node);
    const SocketAddress& listen = node->spec.listen;

    auto first = accept_tls(listener.get());
    const Hello dialer = read_hello(*first);
    CHECK(dialer.id == "m");
    CHECK(dialer.target == fake);  // whom it meant
    write_all(*first, hello_bytes(peer_hello("f", fake, listen, kNoCluster, "m"), 7));
    CHECK(read_messages(*first, 1).eof);
    CHECK(node->mesh->connected_peers() == 0);

    // It dials again (after its backoff); this answer is for someone else.
    auto second = accept_tls(listener.get());
    (void)read_hello(*second);
    write_all(*second, hello_bytes(peer_hello("f", fake, address("127.0.0.9", 9), kNoCluster, "m")));
    CHECK(read_messages(*second, 1).eof);
    CHECK(node->mesh->connected_peers() == 0);

    // And again; this answer is from another address than the one dialed.
    auto third = accept_tls(listener.get());
    (void)read_hello(*third);
    write_all(*third, hello_bytes(peer_hello("f", address("127.0.0.2", 1), listen, kNoCluster, "m")));
    CHECK(read_messages(*third, 1).eof);
    CHECK(node->mesh->connected_peers() == 0);

    // This time the answer is good.
    auto fourth = accept_tls(listener.get());
    (void)read_hello(*fourth);
    write_all(*fourth, hello_bytes(peer_hello("f", fake, listen, kNoCluster, "m")));
    CHECK(wait_until([&] { return node->mesh->connected_peers() == 1; }));
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

// ---- clusters: authentication, controllers, control messages, epochs --------

namespace {


constexpr const char* kCluster = "lab";
constexpr const char* kSecret = "correct horse battery staple";

struct Member {
    std::string id;
    SocketAddress listen;
    std::string cluster = kCluster;
    std::string secret = kSecret;
};

// Creates and starts one mesh per member, each knowing every other one (by
// address and id); waits for nothing.
std::vector<std::unique_ptr<Node>> make_members(const std::vector<Member>& members, const PeerMeshLimits& limits = {})
{
    std::vector<std::unique_ptr<Node>> nodes;
    for (size_t i = 0; i < members.size(); ++i) {
        std::vector<SocketAddress> others;
        MeshCluster cluster{.name = members[i].cluster, .secret = bytes_of(members[i].secret), .peer_ids = {}};
        for (size_t j = 0; j < members.size(); ++j) {
            if (j == i) continue;
            others.push_back(members[j].listen);
            cluster.peer_ids.push_back(members[j].id);
        }
        nodes.push_back(create_node(make_spec(members[i].id, members[i].listen, others), limits, cluster));
    }
    for (auto& node : nodes) start(*node);
    return nodes;
}

// n VMMs "a", "b", ... of cluster kCluster, all holding its secret, connected.
std::vector<std::unique_ptr<Node>> make_secure_cluster(size_t n, const PeerMeshLimits& limits = {})
{
    std::vector<Member> members;
    for (size_t i = 0; i < n; ++i) members.push_back({std::string(1, static_cast<char>('a' + i)), fresh_address()});
    auto nodes = make_members(members, limits);
    for (auto& node : nodes)
        REQUIRE_MESSAGE(wait_until([&] { return node->mesh->connected_peers() == n - 1; }), "mesh did not connect");
    return nodes;
}

// Each node begins `epoch` and takes its cut, in the order given, as the
// VMMs of a cluster checkpoint do.
void begin_and_cut(std::initializer_list<Node*> nodes, uint64_t epoch)
{
    for (Node* n : nodes) REQUIRE(n->mesh->begin_epoch(epoch).ok());
    for (Node* n : nodes) {
        n->mesh->hold_delivery();
        n->mesh->cut(epoch);
    }
}

std::vector<std::string> sorted(std::vector<std::string> v)
{
    std::sort(v.begin(), v.end());
    return v;
}

// A guest that keeps sending numbered frames to every other node (its own
// sequence per destination), in batches like a device, never blocking: a
// refused frame is offered again next round with the same number. paused()
// stops it like a paused VM, so the count of frames sent before a cut is
// exact.
class Traffic {
public:
    Traffic(std::vector<Node*> nodes, size_t self) : nodes_(std::move(nodes)), self_(self), next_(nodes_.size(), 0)
    {
        thread_ = std::thread([this] { run(); });
    }
    ~Traffic() { stop(); }
    void stop()
    {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    // Frames sent so far to each node (by index), after running `fn` with the sender paused.
    std::vector<uint32_t> paused(const std::function<void()>& fn)
    {
        std::lock_guard lock(mutex_);
        fn();
        return next_;
    }
    std::vector<uint32_t> sent()
    {
        std::lock_guard lock(mutex_);
        return next_;
    }

private:
    void run()
    {
        Node& self = *nodes_[self_];
        while (!stop_) {
            {
                std::lock_guard lock(mutex_);
                self.mesh->begin_batch();
                for (size_t j = 0; j < nodes_.size(); ++j) {
                    if (j == self_) continue;
                    if (self.mesh->try_send(make_frame(nodes_[j]->mac(), self.mac(), next_[j]))) ++next_[j];
                }
                self.mesh->end_batch();
            }
            std::this_thread::sleep_for(200us);
        }
    }

    std::vector<Node*> nodes_;
    size_t self_;
    std::mutex mutex_;
    std::vector<uint32_t> next_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// The recorded frames of `state` from the peer with VMM id `id`, as sequence
// numbers; every one must come from `source`.
std::vector<uint32_t> recorded_seqs(const ChannelState& state, const std::string& id, const MacAddress& source)
{
    std::vector<uint32_t> seqs;
    size_t found = 0;
    for (const auto& p : state.peers) {
        if (p.id != id) continue;
        ++found;
        for (const auto& f : p.frames) {
            REQUIRE(f.size() >= 18);
            CHECK(MacAddress::from_bytes(f.data() + 6) == source);
            seqs.push_back(seq_of(f));
        }
    }
    CHECK_MESSAGE(found == 1, "channel state has " << found << " entries for '" << id << "'");
    return seqs;
}

// Copies bytes both ways between two sockets on a thread of its own, like a
// machine on the path; can flip one byte of what goes from `a` to `b`.
class Pump {
public:
    Pump(UniqueFd a, UniqueFd b) : a_(std::move(a)), b_(std::move(b)), thread_([this] { run(); }) {}
    ~Pump()
    {
        stop_ = true;
        thread_.join();
    }
    // Flips the byte `skip` bytes into what `a` sends from now on.
    void flip_after(size_t skip) { flip_at_ = sent_.load() + skip; }
    size_t relayed_bytes() const { return sent_.load() + received_.load(); }

private:
    void run()
    {
        std::vector<uint8_t> buf(16384);
        while (!stop_) {
            pollfd fds[2] = {{a_.get(), POLLIN, 0}, {b_.get(), POLLIN, 0}};
            if (::poll(fds, 2, 50) <= 0) continue;
            for (int k = 0; k < 2; ++k) {
                if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                const int from = k == 0 ? a_.get() : b_.get();
                const int to = k == 0 ? b_.get() : a_.get();
                const ssize_t n = ::recv(from, buf.data(), buf.size(), 0);
                if (n <= 0) {  // one side closed: close both, as a proxy does
                    ::shutdown(a_.get(), SHUT_RDWR);
                    ::shutdown(b_.get(), SHUT_RDWR);
                    return;
                }
                if (k == 0) {
                    const size_t at = flip_at_.load(), start = sent_.load();
                    if (at >= start && at < start + static_cast<size_t>(n)) buf[at - start] ^= 0x01;
                    sent_ += static_cast<size_t>(n);
                } else {
                    received_ += static_cast<size_t>(n);
                }
                if (::send(to, buf.data(), static_cast<size_t>(n), MSG_NOSIGNAL) != n) return;
            }
        }
    }

    UniqueFd a_, b_;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> flip_at_{SIZE_MAX};
    std::atomic<size_t> sent_{0}, received_{0};
    std::thread thread_;
};

// A process that took a down VMM's address: every connection made to it is
// spliced, byte for byte, to `to` (it holds no secret; it only forwards).
class Relay {
public:
    Relay(const SocketAddress& at, const SocketAddress& to) : listener_(listen_on(at)), to_(to), thread_([this] { run(); }) {}
    ~Relay()
    {
        stop_ = true;
        thread_.join();
    }
    size_t spliced() const { return spliced_.load(); }

private:
    void run()
    {
        while (!stop_) {
            pollfd p{listener_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            UniqueFd in(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
            if (!in.valid()) continue;
            UniqueFd out(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            sockaddr_in sa = ipv4_of(to_);
            if (::connect(out.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) continue;
            pumps_.push_back(std::make_unique<Pump>(std::move(in), std::move(out)));
            ++spliced_;
        }
        pumps_.clear();
    }

    UniqueFd listener_;
    SocketAddress to_;
    std::atomic<bool> stop_{false};
    std::atomic<size_t> spliced_{0};
    std::vector<std::unique_ptr<Pump>> pumps_;
    std::thread thread_;
};

// A controller's HELLO, meant for the VMM `target_id` at `target`.
std::vector<uint8_t> controller_hello_bytes(const std::string& cluster, const SocketAddress& target,
                                            const std::string& target_id)
{
    std::vector<uint8_t> bytes;
    append_hello(bytes, Hello{.role = PeerRole::controller, .id = "ctl", .cluster = cluster, .target = target,
                              .target_id = target_id});
    return bytes;
}

}  // namespace

TEST_CASE("mesh cluster: three VMMs holding the cluster's secret connect and pass frames")
{
    auto nodes = make_secure_cluster(3);
    CHECK(sorted(nodes[0]->mesh->connected_peer_ids()) == std::vector<std::string>{"b", "c"});
    CHECK(sorted(nodes[1]->mesh->connected_peer_ids()) == std::vector<std::string>{"a", "c"});
    CHECK(sorted(nodes[2]->mesh->connected_peer_ids()) == std::vector<std::string>{"a", "b"});
    for (uint32_t i = 0; i < 3; ++i) nodes[i]->send(make_frame(kBroadcast, nodes[i]->mac(), 10 + i));
    nodes[0]->send(make_frame(nodes[2]->mac(), nodes[0]->mac(), 20));
    REQUIRE(nodes[0]->sink.wait_for_frames(2));
    REQUIRE(nodes[1]->sink.wait_for_frames(2));
    REQUIRE(nodes[2]->sink.wait_for_frames(3));
    CHECK(nodes[0]->sink.seqs_from(nodes[1]->mac()) == std::vector<uint32_t>{11});
    CHECK(nodes[0]->sink.seqs_from(nodes[2]->mac()) == std::vector<uint32_t>{12});
    CHECK(nodes[1]->sink.seqs_from(nodes[0]->mac()) == std::vector<uint32_t>{10});
    CHECK(nodes[2]->sink.seqs_from(nodes[0]->mac()) == std::vector<uint32_t>{10, 20});
    for (auto& node : nodes) CHECK(node->handler.lost().empty());
}

TEST_CASE("mesh cluster: a VMM with the wrong secret or another cluster name is refused by both sides")
{
    // x sits between a and b in the dialing order: a dials x, x dials b (and a dials b).
    Member a{"a", fresh_address("127.0.0.1")};
    Member x{"x", fresh_address("127.0.0.2")};
    Member b{"b", fresh_address("127.0.0.3")};
    SUBCASE("wrong secret") { x.secret = "incorrect horse"; }
    SUBCASE("another cluster name, same secret") { x.cluster = "other"; }
    SUBCASE("no secret") { x.secret = ""; }
    PeerMeshLimits limits;  // redial often, so the window below sees many attempts
    limits.backoff_initial = 10ms;
    limits.backoff_max = 40ms;
    auto nodes = make_members({a, x, b}, limits);
    Node& na = *nodes[0];
    Node& nx = *nodes[1];
    Node& nb = *nodes[2];

    // Broadcasts from x wait in its queues for a and b; theirs wait for x.
    // Any connection with x, however short, would deliver them.
    for (uint32_t i = 0; i < 5; ++i) nx.send(make_frame(kBroadcast, nx.mac(), i));
    REQUIRE(wait_until([&] { return na.mesh->connected_peers() == 1 && nb.mesh->connected_peers() == 1; }));
    na.send(make_frame(kBroadcast, na.mac(), 100));
    nb.send(make_frame(kBroadcast, nb.mac(), 200));
    REQUIRE(nb.sink.wait_for_frames(1));
    REQUIRE(na.sink.wait_for_frames(1));
    std::this_thread::sleep_for(300ms);  // x and a redial, and are refused, several times

    CHECK(na.mesh->connected_peer_ids() == std::vector<std::string>{"b"});
    CHECK(nb.mesh->connected_peer_ids() == std::vector<std::string>{"a"});
    CHECK(nx.mesh->connected_peers() == 0);
    CHECK(na.sink.seqs() == std::vector<uint32_t>{200});
    CHECK(nb.sink.seqs() == std::vector<uint32_t>{100});
    CHECK(nx.sink.frames().empty());
    for (auto& node : nodes) CHECK(node->handler.lost().empty());  // nothing was ever established with x
}

TEST_CASE("mesh cluster: an impostor claiming a connected peer's address does not disturb its connection")
{
    // a (127.0.0.1) dials b (127.0.0.2); the impostor dials b as if it were a.
    auto nodes = make_members({{"a", fresh_address("127.0.0.1")}, {"b", fresh_address("127.0.0.2")}});
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    REQUIRE(wait_until([&] { return a.mesh->connected_peers() == 1 && b.mesh->connected_peers() == 1; }));

    SUBCASE("without the secret, the TLS handshake fails")
    {
        auto impostor = dial_tls(b.spec.listen, bytes_of("guess"), kCluster, true);
        CHECK_FALSE(impostor->link);
        CHECK_FALSE(impostor->handshake_error.empty());
    }
    SUBCASE("without TLS, nothing is read as a message")
    {
        UniqueFd raw = connect_to(b.spec.listen);
        std::vector<uint8_t> bytes = hello_bytes(peer_hello("a", a.spec.listen, b.spec.listen, kCluster, "b"));
        append_frame(bytes, make_frame(b.mac(), a.mac(), 666));
        CHECK(::send(raw.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
        std::this_thread::sleep_for(200ms);
    }
    SUBCASE("silence: the real connection works meanwhile")
    {
        UniqueFd raw = connect_to(b.spec.listen);
        std::this_thread::sleep_for(200ms);
    }

    // The real connection was neither replaced nor closed, and carries frames both ways.
    a.send(make_frame(b.mac(), a.mac(), 1));
    b.send(make_frame(a.mac(), b.mac(), 2));
    REQUIRE(b.sink.wait_for_frames(1));
    REQUIRE(a.sink.wait_for_frames(1));
    CHECK(b.sink.seqs() == std::vector<uint32_t>{1});
    CHECK(a.sink.seqs() == std::vector<uint32_t>{2});
    CHECK(a.mesh->connected_peer_ids() == std::vector<std::string>{"b"});
    CHECK(b.mesh->connected_peer_ids() == std::vector<std::string>{"a"});
    CHECK(a.handler.lost().empty());
    CHECK(b.handler.lost().empty());
}

TEST_CASE("mesh cluster: a relay on a down VMM's address cannot splice a dial meant for it onto another VMM")
{
    // d (127.0.0.1) dials x (127.0.0.2) and a (127.0.0.3). x is down; a
    // relay holding no secret took its address and splices whatever dials
    // it to a. Version 2 let d log in to a as d through it (and a frame
    // reach a's guest); now the TLS handshake succeeds end to end (d and a
    // both hold the secret) but d's HELLO says it meant x, so a refuses it,
    // and d refuses a's answer, if any, for not being x.
    const Member d{"d", fresh_address("127.0.0.1")};
    const Member x{"x", fresh_address("127.0.0.2")};
    const Member a{"a", fresh_address("127.0.0.3")};
    // d and a each know all three; x is never started.
    std::vector<std::unique_ptr<Node>> started;
    for (const Member& m : {d, a}) {
        std::vector<SocketAddress> others;
        MeshCluster cluster{.name = kCluster, .secret = bytes_of(kSecret), .peer_ids = {}};
        for (const Member& o : {d, x, a}) {
            if (o.id == m.id) continue;
            others.push_back(o.listen);
            cluster.peer_ids.push_back(o.id);
        }
        started.push_back(create_node(make_spec(m.id, m.listen, others), {}, cluster));
    }
    Node& nd = *started[0];
    Node& na = *started[1];
    Relay relay(x.listen, a.listen);
    for (auto& n : started) start(*n);
    REQUIRE(wait_until([&] { return nd.mesh->connected_peer_ids() == std::vector<std::string>{"a"}; }));
    REQUIRE(wait_until([&] { return relay.spliced() >= 3; }));  // d keeps redialing x

    std::this_thread::sleep_for(300ms);
    CHECK(nd.mesh->connected_peer_ids() == std::vector<std::string>{"a"});
    CHECK(na.mesh->connected_peer_ids() == std::vector<std::string>{"d"});
    CHECK(na.sink.frames().empty());
    CHECK(nd.handler.lost().empty());
    CHECK(na.handler.lost().empty());

    // A controller relayed the same way is refused too: its HELLO names x.
    auto c = dial_tls(x.listen, bytes_of(kSecret), kCluster);
    write_all(*c, controller_hello_bytes(kCluster, x.listen, "x"));
    const Received r = read_messages(*c, 1);
    CHECK(r.eof);
    CHECK(r.messages.empty());
    CHECK(na.handler.requests().empty());

    // The direct connection is intact.
    nd.send(make_frame(na.mac(), nd.mac(), 7));
    REQUIRE(na.sink.wait_for_frames(1));
    CHECK(na.sink.seqs() == std::vector<uint32_t>{7});
}

TEST_CASE("mesh cluster: one byte flipped on the path after the handshake closes the connection and fails the epoch; no frame reaches the guest")
{
    // The test plays peer "f" (it dials: 127.0.0.1 sorts lower) through a
    // pump that can flip a byte of what it sends, as a machine on the path.
    const SocketAddress f = fresh_address("127.0.0.1");
    const SocketAddress m = fresh_address("127.0.0.2");
    auto node = create_node(make_spec("m", m, {f}), {}, MeshCluster{.name = kCluster, .secret = bytes_of(kSecret), .peer_ids = {"f"}});
    start(*node);

    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    Pump pump{UniqueFd(pair[1]), connect_to(m)};
    auto peer = tls_over(UniqueFd(pair[0]), TlsLink::Side::client, bytes_of(kSecret), kCluster);
    REQUIRE_MESSAGE(peer->link, peer->handshake_error);
    write_all(*peer, hello_bytes(peer_hello("f", f, m, kCluster, "m")));
    CHECK(read_hello(*peer).id == "m");
    REQUIRE(wait_until([&] { return node->mesh->connected_peers() == 1; }));

    // A frame goes through untouched.
    std::vector<uint8_t> bytes;
    append_frame(bytes, make_frame(node->mac(), MacAddress::derived_from_id("f"), 1));
    write_all(*peer, bytes);
    REQUIRE(node->sink.wait_for_frames(1));

    // An epoch runs; then one byte of the next record is flipped.
    REQUIRE(node->mesh->begin_epoch(5).ok());
    node->mesh->hold_delivery();
    node->mesh->cut(5);
    pump.flip_after(20);
    bytes.clear();
    append_frame(bytes, make_frame(node->mac(), MacAddress::derived_from_id("f"), 2));
    write_all(*peer, bytes);

    CHECK(wait_until([&] { return node->mesh->connected_peers() == 0; }));
    auto state = node->mesh->wait_channel_state(5, std::chrono::steady_clock::now() + 5s);
    REQUIRE_FALSE(state.ok());
    CHECK(state.error().message().find("lost the connection to f") != std::string::npos);
    std::this_thread::sleep_for(100ms);
    CHECK(node->sink.seqs() == std::vector<uint32_t>{1});
    CHECK(node->handler.lost() == std::vector<std::string>{"f"});
}

TEST_CASE("mesh cluster: a controller with the secret gets its request answered; without, it is refused")
{
    auto nodes = make_secure_cluster(2);
    Node& m = *nodes[0];

    SUBCASE("the right secret")
    {
        auto c = dial_tls(m.spec.listen, bytes_of(kSecret), kCluster);
        write_all(*c, controller_hello_bytes(kCluster, m.spec.listen, "a"));
        const Hello answer = read_hello(*c);
        CHECK(answer.id == "a");
        CHECK(answer.role == PeerRole::peer);
        CHECK(answer.target_id == "ctl");
        // A controller is not a peer.
        CHECK(m.mesh->connected_peer_ids() == std::vector<std::string>{"b"});

        std::vector<uint8_t> bytes;
        append_ctl_request(bytes, {{"op", "list"}});
        write_all(*c, bytes);
        REQUIRE(wait_until([&] { return m.handler.requests().size() == 1; }));
        CHECK(m.handler.requests()[0] == nlohmann::json{{"op", "list"}});
        // Answered later, from this thread.
        m.handler.reply(0, {{"ok", true}, {"vms", {"a", "b"}}});
        Received r = read_messages(*c, 1);
        REQUIRE(r.messages.size() == 1);
        REQUIRE(std::holds_alternative<ControlReply>(r.messages[0]));
        CHECK(std::get<ControlReply>(r.messages[0]).body == nlohmann::json{{"ok", true}, {"vms", {"a", "b"}}});

        // A second request on the same connection.
        bytes.clear();
        append_ctl_request(bytes, {{"op", "status"}});
        write_all(*c, bytes);
        REQUIRE(wait_until([&] { return m.handler.requests().size() == 2; }));
        m.handler.reply(1, {{"ok", false}});
        r = read_messages(*c, 1);
        REQUIRE(r.messages.size() == 1);
        CHECK(std::get<ControlReply>(r.messages[0]).body == nlohmann::json{{"ok", false}});

        // A controller may not send a frame.
        bytes.clear();
        append_frame(bytes, make_frame(m.mac(), MacAddress::derived_from_id("ctl"), 1));
        write_all(*c, bytes);
        CHECK(read_messages(*c, 1).eof);
        CHECK(m.sink.frames().empty());
    }
    SUBCASE("a wrong secret: the TLS handshake fails, nothing reaches the handler")
    {
        auto c = dial_tls(m.spec.listen, bytes_of("nope"), kCluster, true);
        CHECK_FALSE(c->link);
    }
    SUBCASE("a request before HELLO: closed")
    {
        auto c = dial_tls(m.spec.listen, bytes_of(kSecret), kCluster);
        std::vector<uint8_t> bytes;
        append_ctl_request(bytes, {{"op", "checkpoint"}});
        write_all(*c, bytes);
        CHECK(read_messages(*c, 1).eof);
    }
    SUBCASE("no target named: closed")
    {
        auto c = dial_tls(m.spec.listen, bytes_of(kSecret), kCluster);
        write_all(*c, controller_hello_bytes(kCluster, SocketAddress(), ""));
        CHECK(read_messages(*c, 1).eof);
    }
    SUBCASE("another cluster: the TLS handshake fails (its key is another)")
    {
        auto c = dial_tls(m.spec.listen, bytes_of(kSecret), "other", true);
        CHECK_FALSE(c->link);
    }
    // Whatever a refused controller did, the peers are undisturbed.
    CHECK(m.mesh->connected_peer_ids() == std::vector<std::string>{"b"});
    const size_t answered = m.handler.requests().size();
    CHECK((answered == 0 || answered == 2));
}

TEST_CASE("mesh cluster: control messages reach their target only, in order with frames")
{
    auto nodes = make_secure_cluster(3);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    Node& c = *nodes[2];
    for (uint32_t i = 0; i < 10; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    a.mesh->send_control("b", MessageType::prepare, 5, {{"n", 1}});
    for (uint32_t i = 10; i < 20; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    a.mesh->send_control("", MessageType::commit, 5, {{"n", 2}});
    a.send(make_frame(b.mac(), a.mac(), 20));
    a.mesh->send_control("nobody", MessageType::abort, 5, {});  // no such peer: dropped
    a.mesh->send_control("c", MessageType::restored, 6, {{"n", 3}});
    b.mesh->send_control("a", MessageType::done, 5, {{"ok", true}});

    REQUIRE(b.sink.wait_for_frames(21));
    REQUIRE(wait_until([&] { return b.handler.controls().size() >= 2; }));
    REQUIRE(wait_until([&] { return c.handler.controls().size() >= 2; }));
    REQUIRE(wait_until([&] { return a.handler.controls().size() >= 1; }));
    std::this_thread::sleep_for(50ms);  // nothing more comes

    const auto at_b = b.handler.controls();
    REQUIRE(at_b.size() == 2);
    CHECK(at_b[0].peer == "a");
    CHECK(at_b[0].type == MessageType::prepare);
    CHECK(at_b[0].epoch == 5);
    CHECK(at_b[0].body == nlohmann::json{{"n", 1}});
    CHECK(at_b[0].frames_before == 10);
    CHECK(at_b[1].type == MessageType::commit);
    CHECK(at_b[1].body == nlohmann::json{{"n", 2}});
    CHECK(at_b[1].frames_before == 20);
    CHECK(b.sink.seqs() == range(0, 21));

    const auto at_c = c.handler.controls();
    REQUIRE(at_c.size() == 2);
    CHECK(at_c[0].peer == "a");
    CHECK(at_c[0].type == MessageType::commit);
    CHECK(at_c[1].type == MessageType::restored);
    CHECK(at_c[1].epoch == 6);
    CHECK(at_c[1].body == nlohmann::json{{"n", 3}});
    CHECK(c.sink.frames().empty());

    const auto at_a = a.handler.controls();
    REQUIRE(at_a.size() == 1);
    CHECK(at_a[0].peer == "b");
    CHECK(at_a[0].type == MessageType::done);
    CHECK(at_a[0].body == nlohmann::json{{"ok", true}});
}

TEST_CASE("mesh cluster: bulk parity (34 MB) waits for the queue instead of dropping; all of it arrives in order")
{
    auto nodes = make_secure_cluster(2);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    REQUIRE(wait_until([&] { return a.mesh->connected_peers() == 1 && b.mesh->connected_peers() == 1; }));
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    constexpr uint32_t kCount = 600;
    auto piece = [](uint32_t i) {
        std::vector<uint8_t> d(kMaxParityData);
        for (size_t k = 0; k < d.size(); ++k) d[k] = static_cast<uint8_t>(i * 31 + k * 7);
        return d;
    };
    // Frames keep flowing meanwhile: parity shares the queue with them.
    for (uint32_t i = 0; i < kCount; ++i) {
        REQUIRE(a.mesh->send_parity("b", ParityMessage{3, 1, 2, uint64_t{i} * kMaxParityData, piece(i)}, deadline).ok());
        if (i % 100 == 0) a.send(make_frame(b.mac(), a.mac(), i / 100));
    }
    REQUIRE(wait_until([&] { return b.handler.parity().size() == kCount; }, 30s));
    const auto got = b.handler.parity();
    for (uint32_t i = 0; i < kCount; ++i) {
        CHECK(got[i].epoch == 3);
        CHECK(got[i].set == 1);
        CHECK(got[i].member == 2);
        CHECK(got[i].offset == uint64_t{i} * kMaxParityData);
        CHECK(got[i].data == piece(i));
    }
    REQUIRE(b.sink.wait_for_frames(6));
    CHECK(message_of(a.mesh->send_parity("nobody", ParityMessage{3, 0, 0, 0, {}}, deadline)).find("no peer 'nobody'") !=
          std::string::npos);
    b.mesh->stop();
    REQUIRE(wait_until([&] { return a.mesh->connected_peers() == 0; }));
    CHECK(message_of(a.mesh->send_parity("b", ParityMessage{3, 0, 0, 0, {}}, deadline)).find("not connected") !=
          std::string::npos);
}

TEST_CASE("mesh cluster: a control message its handler cannot take costs that message, not the network")
{
    auto nodes = make_secure_cluster(2);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    for (uint32_t i = 0; i < 10; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    a.mesh->send_control("b", MessageType::abort, 3, {{"throw", 1}});  // a number where a string belongs
    for (uint32_t i = 10; i < 20; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    a.mesh->send_control("b", MessageType::commit, 4, {{"n", 2}});
    REQUIRE(b.sink.wait_for_frames(20));
    REQUIRE(wait_until([&] { return !b.handler.controls().empty(); }));
    CHECK(b.sink.seqs() == range(0, 20));
    const auto at_b = b.handler.controls();
    REQUIRE(at_b.size() == 1);
    CHECK(at_b[0].type == MessageType::commit);
    CHECK(at_b[0].frames_before == 20);
    // Still alive both ways.
    b.send(make_frame(a.mac(), b.mac(), 7));
    REQUIRE(a.sink.wait_for_frames(1));
}

// Like ClusterMember on an ABORT: the handler calls back into the mesh from
// the network thread, here just as the VMM shuts down.
class AbortingHandler : public PeerMessageSink {
public:
    explicit AbortingHandler(PeerMesh& mesh) : mesh_(mesh) {}
    void on_control(const std::string&, MessageType, uint64_t epoch, const nlohmann::json&) override
    {
        entered = true;
        std::this_thread::sleep_for(300ms);  // stop() starts meanwhile
        mesh_.abort_epoch(epoch);
        left = true;
    }
    void on_peer_lost(const std::string&) override {}
    std::atomic<bool> entered{false}, left{false};

private:
    PeerMesh& mesh_;
};

TEST_CASE("mesh cluster: stop() while a handler calls back into the mesh does not deadlock")
{
    auto nodes = make_secure_cluster(2);
    AbortingHandler handler(*nodes[1]->mesh);
    nodes[1]->mesh->set_message_sink(&handler);
    nodes[0]->mesh->send_control("b", MessageType::abort, 1, {{"reason", "test"}});
    REQUIRE(wait_until([&] { return handler.entered.load(); }));
    auto stopped = std::async(std::launch::async, [&] { nodes[1]->mesh->stop(); });
    if (stopped.wait_for(10s) != std::future_status::ready) {
        // The stuck threads can be neither joined nor destroyed: say so and end here.
        std::fprintf(stderr, "FAILED: mesh: stop() deadlocked with the network thread\n");
        std::_Exit(1);
    }
    CHECK(handler.left);
}

TEST_CASE("mesh cluster: a restored backlog the guest has not taken yet at the next cut is in that cut's channel state")
{
    auto nodes = make_secure_cluster(2);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    ChannelState backlog;
    backlog.epoch = 3;
    backlog.peers.push_back({"b", {}});
    for (uint32_t i = 0; i < 10; ++i) backlog.peers[0].frames.push_back(make_frame(a.mac(), b.mac(), 1000 + i));
    a.sink.set_refuse(true);  // the restored guest has no RX buffers yet
    a.mesh->set_restore_backlog(backlog);
    a.mesh->receive_ready();
    begin_and_cut({&a, &b}, 4);
    a.sink.set_refuse(false);
    a.mesh->receive_ready();
    const auto at_a = a.mesh->wait_channel_state(4, std::chrono::steady_clock::now() + 5s);
    REQUIRE_MESSAGE(at_a.ok(), error_of(at_a));
    CHECK(recorded_seqs(at_a.value(), "b", b.mac()) == range(1000, 1010));
    REQUIRE(a.sink.wait_for_frames(10));
    CHECK(a.sink.seqs() == range(1000, 1010));
}

TEST_CASE("mesh cluster: a restored backlog reaches the guest first, in order, while the peer sends at once")
{
    const Member ma{"a", fresh_address()};
    const Member mb{"b", fresh_address()};
    // b is up first and has frames for a waiting in its queue: they go out
    // the moment a connects.
    auto b_node = create_node(make_spec("b", mb.listen, {ma.listen}), {},
                              MeshCluster{.name = kCluster, .secret = bytes_of(kSecret), .peer_ids = {"a"}});
    Node& b = *b_node;
    start(b);
    for (uint32_t i = 0; i < 30; ++i) b.send(make_frame(MacAddress::derived_from_id("a"), b.mac(), i));

    auto a = create_node(make_spec("a", ma.listen, {mb.listen}), {},
                         MeshCluster{.name = kCluster, .secret = bytes_of(kSecret), .peer_ids = {"b"}});
    ChannelState backlog;
    backlog.epoch = 3;
    backlog.peers.push_back({"b", {}});
    for (uint32_t i = 0; i < 10; ++i) backlog.peers[0].frames.push_back(make_frame(a->mac(), b.mac(), 1000 + i));
    backlog.peers.push_back({"c", {}});  // a peer that is gone: its frames still come, after b's
    for (uint32_t i = 0; i < 3; ++i)
        backlog.peers[1].frames.push_back(make_frame(a->mac(), MacAddress::derived_from_id("c"), 2000 + i));
    a->mesh->set_restore_backlog(backlog);

    std::vector<uint32_t> expected = range(1000, 1010);
    for (uint32_t s : range(2000, 2003)) expected.push_back(s);
    for (uint32_t s : range(0, 30)) expected.push_back(s);

    SUBCASE("the guest has room")
    {
        start(*a);
        REQUIRE(a->sink.wait_for_frames(43));
    }
    SUBCASE("the guest often has no room")
    {
        a->sink.refuse_every(3, a->mesh.get());
        start(*a);
        REQUIRE(a->sink.wait_for_frames(43));
        CHECK(a->sink.refused() > 0);
    }
    SUBCASE("the guest's room comes and goes; the device says so late")
    {
        // Every 3rd offer is refused, and only the test calls receive_ready():
        // a frame from b offered while the backlog waits would be accepted.
        a->sink.refuse_every(3, nullptr);
        start(*a);
        REQUIRE(wait_until([&] { return a->mesh->connected_peers() == 1; }));
        std::this_thread::sleep_for(50ms);  // b's frames reach a's socket
        CHECK(a->sink.size() == 2);
        REQUIRE(wait_until([&] {
            a->mesh->receive_ready();
            return a->sink.size() >= 43;
        }));
    }
    SUBCASE("the guest has no room until the peer's frames are there")
    {
        a->sink.set_refuse(true);
        start(*a);
        REQUIRE(wait_until([&] { return a->mesh->connected_peers() == 1; }));
        std::this_thread::sleep_for(50ms);  // b's frames reach a's socket
        CHECK(a->sink.frames().empty());
        a->sink.set_refuse(false);
        a->mesh->receive_ready();
        REQUIRE(a->sink.wait_for_frames(43));
    }
    std::this_thread::sleep_for(20ms);
    CHECK(a->sink.seqs() == expected);
}

TEST_CASE("mesh cluster: abort_epoch reads a held connection again; the next epoch works")
{
    auto nodes = make_secure_cluster(2);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    for (uint32_t i = 0; i < 10; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    REQUIRE(a.mesh->begin_epoch(1).ok());
    a.mesh->hold_delivery();
    a.mesh->cut(1);
    for (uint32_t i = 10; i < 20; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    // b has not begun epoch 1: a's MARKER begins it and holds the connection.
    REQUIRE(b.sink.wait_for_frames(10));
    std::this_thread::sleep_for(50ms);
    CHECK(b.sink.seqs() == range(0, 10));

    b.mesh->abort_epoch(1);
    REQUIRE(b.sink.wait_for_frames(20));
    CHECK(b.sink.seqs() == range(0, 20));
    const auto failed = b.mesh->wait_channel_state(1, std::chrono::steady_clock::now() + 5s);
    CHECK_FALSE(failed.ok());

    const auto t0 = std::chrono::steady_clock::now();
    a.mesh->abort_epoch(1);
    const auto aborted = a.mesh->wait_channel_state(1, t0 + 5s);
    REQUIRE_FALSE(aborted.ok());
    CHECK(aborted.error().message().find("aborted") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    CHECK_FALSE(a.mesh->begin_epoch(1).ok());  // an ended epoch does not come back

    // Epoch 2 goes through on both, with frames in flight from a.
    REQUIRE(a.mesh->begin_epoch(2).ok());
    REQUIRE(b.mesh->begin_epoch(2).ok());
    b.mesh->hold_delivery();
    b.mesh->cut(2);
    for (uint32_t i = 20; i < 25; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    a.mesh->hold_delivery();
    a.mesh->cut(2);
    const auto at_a = a.mesh->wait_channel_state(2, std::chrono::steady_clock::now() + 5s);
    const auto at_b = b.mesh->wait_channel_state(2, std::chrono::steady_clock::now() + 5s);
    REQUIRE_MESSAGE(at_a.ok(), error_of(at_a));
    REQUIRE_MESSAGE(at_b.ok(), error_of(at_b));
    CHECK(at_a.value().epoch == 2);
    CHECK(at_a.value().frame_count() == 0);
    CHECK(recorded_seqs(at_b.value(), "a", a.mac()) == range(20, 25));
    REQUIRE(b.sink.wait_for_frames(25));
    CHECK(b.sink.seqs() == range(0, 25));
}

TEST_CASE("mesh cluster: an epoch that failed stays failed when its cut completes later")
{
    const std::vector<Member> members{{"a", fresh_address()}, {"b", fresh_address()}};
    auto nodes = make_members(members);
    Node& a = *nodes[0];
    nodes[1].reset();
    REQUIRE(wait_until([&] { return a.mesh->connected_peers() == 0; }));
    REQUIRE(a.mesh->begin_epoch(1).ok());  // failed at once: b is not connected
    // b comes back and takes part: the cut completes on both sides, but a's
    // epoch had already failed (frames could have been lost meanwhile).
    MeshCluster cluster{.name = kCluster, .secret = bytes_of(kSecret), .peer_ids = {"a"}};
    nodes[1] = create_node(make_spec("b", members[1].listen, {members[0].listen}), {}, cluster);
    start(*nodes[1]);
    Node& b = *nodes[1];
    REQUIRE(wait_until([&] { return a.mesh->connected_peers() == 1 && b.mesh->connected_peers() == 1; }));
    REQUIRE(b.mesh->begin_epoch(1).ok());
    a.mesh->hold_delivery();
    a.mesh->cut(1);
    b.mesh->hold_delivery();
    b.mesh->cut(1);
    CHECK(b.mesh->wait_channel_state(1, std::chrono::steady_clock::now() + 5s).ok());
    // As a checkpointer does, ask only later (after writing the VM's memory),
    // once b's marker has long reached a and completed a's cut.
    std::this_thread::sleep_for(500ms);
    const auto at_a = a.mesh->wait_channel_state(1, std::chrono::steady_clock::now() + 5s);
    REQUIRE_FALSE(at_a.ok());
    CHECK(at_a.error().message().find("not connected") != std::string::npos);
}

TEST_CASE("mesh cluster: an epoch a MARKER began without a PREPARE is abandoned, and its connection read again")
{
    PeerMeshLimits limits;
    limits.unadopted_epoch_timeout = 300ms;
    auto nodes = make_secure_cluster(2, limits);
    Node& a = *nodes[0];
    Node& b = *nodes[1];
    // a's initiator reached a but died before its PREPARE reached b.
    REQUIRE(a.mesh->begin_epoch(1).ok());
    a.mesh->hold_delivery();
    a.mesh->cut(1);
    for (uint32_t i = 0; i < 10; ++i) a.send(make_frame(b.mac(), a.mac(), i));
    std::this_thread::sleep_for(100ms);
    CHECK(b.sink.frames().empty());  // held behind the marker
    REQUIRE(b.sink.wait_for_frames(10));  // then read again
    CHECK(b.sink.seqs() == range(0, 10));
    CHECK_FALSE(b.mesh->begin_epoch(1).ok());  // a late PREPARE of it is refused
    a.mesh->abort_epoch(1);
    // The next epoch works on both.
    begin_and_cut({&a, &b}, 2);
    CHECK(a.mesh->wait_channel_state(2, std::chrono::steady_clock::now() + 5s).ok());
    CHECK(b.mesh->wait_channel_state(2, std::chrono::steady_clock::now() + 5s).ok());
}

TEST_CASE("mesh cluster: a peer lost during an epoch fails it at once and is reported")
{
    auto nodes = make_secure_cluster(3);
    Node& a = *nodes[0];
    bool before_cut = false;
    SUBCASE("lost after the cut") { before_cut = false; }
    SUBCASE("lost before the cut") { before_cut = true; }
    CAPTURE(before_cut);

    REQUIRE(a.mesh->begin_epoch(1).ok());
    if (!before_cut) {
        a.mesh->hold_delivery();
        a.mesh->cut(1);
    }
    nodes[2].reset();  // c goes away
    REQUIRE(wait_until([&] { return a.handler.lost() == std::vector<std::string>{"c"}; }));
    CHECK(wait_until([&] { return nodes[1]->handler.lost() == std::vector<std::string>{"c"}; }));
    if (before_cut) {
        a.mesh->hold_delivery();
        a.mesh->cut(1);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto state = a.mesh->wait_channel_state(1, t0 + 10s);
    REQUIRE_FALSE(state.ok());
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    CHECK(state.error().message().find("connection to c") != std::string::npos);
    a.mesh->abort_epoch(1);
    nodes[1]->mesh->abort_epoch(1);
    // And the survivors still talk.
    a.send(make_frame(nodes[1]->mac(), a.mac(), 7));
    REQUIRE(nodes[1]->sink.wait_for_frames(1));
}

TEST_CASE("mesh cluster: the cut of an epoch on three VMMs under traffic is consistent on every channel")
{
    auto nodes = make_secure_cluster(3);
    std::vector<Node*> all{nodes[0].get(), nodes[1].get(), nodes[2].get()};
    Node& a = *all[0];
    Node& b = *all[1];
    Node& c = *all[2];
    std::vector<std::unique_ptr<Traffic>> traffic;
    for (size_t i = 0; i < 3; ++i) traffic.push_back(std::make_unique<Traffic>(all, i));
    for (size_t x = 0; x < 3; ++x)
        for (size_t y = 0; y < 3; ++y)
            if (x != y) REQUIRE(wait_until([&] { return all[y]->sink.seqs_from(all[x]->mac()).size() >= 20; }));

    // got[y][x]: what y's guest got from x before y's cut; sent[x][y]: what x sent y before x's cut.
    std::vector<std::vector<std::vector<uint32_t>>> got(3, std::vector<std::vector<uint32_t>>(3));
    std::vector<std::vector<uint32_t>> sent(3);
    // Like the checkpointer: delivery is held before the VM pauses, the cut
    // taken while it is paused (and delivery resumes with it).
    auto take_cut = [&](size_t y) {
        all[y]->mesh->hold_delivery();
        for (size_t x = 0; x < 3; ++x)
            if (x != y) got[y][x] = all[y]->sink.seqs_from(all[x]->mac());
        sent[y] = traffic[y]->paused([&] { all[y]->mesh->cut(1); });
    };

    // c prepares first and holds delivery from now to its cut; a sends it
    // something meanwhile, which c must record (held, not delivered).
    REQUIRE(c.mesh->begin_epoch(1).ok());
    c.mesh->hold_delivery();
    const uint32_t a_to_c_at_hold = traffic[0]->sent()[2];
    REQUIRE(wait_until([&] { return traffic[0]->sent()[2] > a_to_c_at_hold; }));

    // a cuts first.
    REQUIRE(a.mesh->begin_epoch(1).ok());
    take_cut(0);
    const auto b_at_a_cut = traffic[1]->sent();
    const auto c_at_a_cut = traffic[2]->sent();

    // a's MARKER reaches b before b's cut (b has not even begun the epoch):
    // what a sends after its cut must not reach b's guest before b's cut.
    REQUIRE(wait_until([&] { return b.sink.seqs_from(a.mac()).size() >= sent[0][1]; }));
    REQUIRE(wait_until([&] { return traffic[0]->sent()[1] >= sent[0][1] + 20; }));
    // b and c send a frames it must record.
    REQUIRE(wait_until([&] { return traffic[1]->sent()[0] > b_at_a_cut[0] && traffic[2]->sent()[0] > c_at_a_cut[0]; }));
    std::this_thread::sleep_for(50ms);  // time for a wrongly read frame to show
    CHECK(b.sink.seqs_from(a.mac()) == range(0, sent[0][1]));

    REQUIRE(b.mesh->begin_epoch(1).ok());  // already begun by the MARKER
    take_cut(1);
    // c sends b frames b must record.
    const uint32_t c_to_b_at_b_cut = traffic[2]->sent()[1];
    REQUIRE(wait_until([&] { return traffic[2]->sent()[1] > c_to_b_at_b_cut; }));

    // c cuts last, both markers already on their way.
    take_cut(2);

    std::vector<ChannelState> states;
    for (size_t y = 0; y < 3; ++y) {
        auto state = all[y]->mesh->wait_channel_state(1, std::chrono::steady_clock::now() + 5s);
        REQUIRE_MESSAGE(state.ok(), all[y]->spec.id << ": " << error_of(state));
        CHECK(state.value().epoch == 1);
        CHECK(state.value().peers.size() == 2);
        states.push_back(std::move(state.value()));
    }

    // Every frame a sender sent before its cut is, at its receiver, either
    // delivered before the receiver's cut or recorded: exactly once, in order.
    std::vector<std::vector<std::vector<uint32_t>>> recorded(3, std::vector<std::vector<uint32_t>>(3));
    for (size_t y = 0; y < 3; ++y) {
        for (size_t x = 0; x < 3; ++x) {
            if (x == y) continue;
            CAPTURE(all[x]->spec.id);
            CAPTURE(all[y]->spec.id);
            recorded[y][x] = recorded_seqs(states[y], all[x]->spec.id, all[x]->mac());
            std::vector<uint32_t> seen = got[y][x];
            seen.insert(seen.end(), recorded[y][x].begin(), recorded[y][x].end());
            CHECK(seen == range(0, sent[x][y]));
        }
    }
    // The cases above did happen.
    CHECK_FALSE(recorded[0][1].empty());  // a cut first: in flight from b
    CHECK_FALSE(recorded[0][2].empty());  // and from c
    CHECK_FALSE(recorded[2][0].empty());  // c held a's frames in its guest's stead
    CHECK_FALSE(recorded[1][2].empty());  // b records c's until c's marker
    MESSAGE("recorded a<-b " << recorded[0][1].size() << ", a<-c " << recorded[0][2].size() << ", b<-a "
                             << recorded[1][0].size() << ", b<-c " << recorded[1][2].size() << ", c<-a "
                             << recorded[2][0].size() << ", c<-b " << recorded[2][1].size());

    // And nothing is lost or doubled for the guests, who kept running.
    for (auto& t : traffic) t->stop();
    for (size_t x = 0; x < 3; ++x) {
        const auto total = traffic[x]->sent();
        for (size_t y = 0; y < 3; ++y) {
            if (x == y) continue;
            CAPTURE(x);
            CAPTURE(y);
            CHECK(wait_until([&] { return all[y]->sink.seqs_from(all[x]->mac()).size() >= total[y]; }));
            CHECK(all[y]->sink.seqs_from(all[x]->mac()) == range(0, total[y]));
        }
    }
}

// ---- bounds and liveness ----------------------------------------------------

TEST_CASE("mesh: idle sockets cannot keep a restarting peer out; per-address and total limits hold")
{
    // m (127.0.0.2) is dialed by peer f (127.0.0.1). 16 idle sockets from
    // four other addresses fill every handshake slot.
    const SocketAddress f = fresh_address("127.0.0.1");
    PeerMeshLimits limits;
    limits.handshake_timeout = 20s;  // the idle sockets would otherwise just time out
    auto node = create_node(make_spec("m", fresh_address("127.0.0.2"), {f}), limits);
    start(*node);
    const SocketAddress& m = node->spec.listen;

    std::vector<UniqueFd> idle;
    for (const char* ip : {"127.0.0.50", "127.0.0.51", "127.0.0.52", "127.0.0.53"})
        for (int i = 0; i < 4; ++i) idle.push_back(connect_from(ip, m));
    std::this_thread::sleep_for(200ms);
    // A fifth from one of those addresses, and a seventeenth from a new one: refused.
    UniqueFd fifth = connect_from("127.0.0.50", m);
    CHECK(closed_within(fifth.get(), 2s));
    UniqueFd seventeenth = connect_from("127.0.0.60", m);
    CHECK(closed_within(seventeenth.get(), 2s));

    // The peer restarts and dials: it gets in, and one idle socket goes.
    auto peer = tls_over(connect_from("127.0.0.1", m), TlsLink::Side::client, kNoSecret, kNoCluster);
    REQUIRE_MESSAGE(peer->link, peer->handshake_error);
    write_all(*peer, hello_bytes(peer_hello("f", f, m)));
    CHECK(read_hello(*peer).id == "m");
    CHECK(wait_until([&] { return node->mesh->connected_peers() == 1; }));
    size_t evicted = 0;
    for (auto& fd : idle) evicted += closed_within(fd.get(), 10ms) ? 1 : 0;
    CHECK(evicted == 1);
}

TEST_CASE("mesh: a peer that stops reading is dropped after the write-stall limit; broadcast to the others goes on")
{
    // m broadcasts; b reads; f (the test) completes its handshake and then
    // never reads again, like a SIGSTOPped VMM.
    const SocketAddress f = fresh_address("127.0.0.1");
    const SocketAddress m = fresh_address("127.0.0.2");
    const SocketAddress b = fresh_address("127.0.0.3");
    PeerMeshLimits limits;
    limits.write_stall_timeout = 500ms;
    auto nm = create_node(make_spec("m", m, {f, b}), limits);
    auto nb = create_node(make_spec("b", b, {f, m}), limits);
    start(*nm);
    start(*nb);
    auto peer = tls_over(connect_from("127.0.0.1", m), TlsLink::Side::client, kNoSecret, kNoCluster);
    REQUIRE_MESSAGE(peer->link, peer->handshake_error);
    write_all(*peer, hello_bytes(peer_hello("f", f, m)));
    (void)read_hello(*peer);
    REQUIRE(wait_until([&] { return nm->mesh->connected_peers() == 2; }));

    // Far more than f's socket buffers and send queue hold.
    constexpr uint32_t kFrames = 12000;
    const auto start_time = std::chrono::steady_clock::now();
    for (uint32_t i = 0; i < kFrames; ++i) nm->send(make_frame(kBroadcast, nm->mac(), i, 1400));
    REQUIRE(nb->sink.wait_for_frames(kFrames, 30s));
    CHECK(nb->sink.seqs() == range(0, kFrames));
    CHECK(std::chrono::steady_clock::now() - start_time < 20s);
    CHECK(nm->mesh->connected_peer_ids() == std::vector<std::string>{"b"});
}

TEST_CASE("mesh cluster: a controller gets one request at a time (10,000 pipelined: closed after the first) and is closed when idle")
{
    PeerMeshLimits limits;
    limits.controller_idle_timeout = 300ms;
    auto nodes = make_secure_cluster(2, limits);
    Node& m = *nodes[0];

    SUBCASE("pipelined requests")
    {
        auto c = dial_tls(m.spec.listen, bytes_of(kSecret), kCluster);
        write_all(*c, controller_hello_bytes(kCluster, m.spec.listen, "a"));
        (void)read_hello(*c);
        std::vector<uint8_t> bytes;
        for (int i = 0; i < 10000; ++i) append_ctl_request(bytes, {{"cmd", "list"}, {"i", i}});
        (void)c->link->send(bytes, TlsLink::Clock::now() + 5s);  // may fail once it is closed
        CHECK(read_messages(*c, 1).eof);
        CHECK(m.handler.requests().size() == 1);
    }
    SUBCASE("idle")
    {
        auto c = dial_tls(m.spec.listen, bytes_of(kSecret), kCluster);
        write_all(*c, controller_hello_bytes(kCluster, m.spec.listen, "a"));
        (void)read_hello(*c);
        const auto before = std::chrono::steady_clock::now();
        CHECK(read_messages(*c, 1).eof);
        CHECK(std::chrono::steady_clock::now() - before < 2s);
    }
    CHECK(m.mesh->connected_peer_ids() == std::vector<std::string>{"b"});
}
