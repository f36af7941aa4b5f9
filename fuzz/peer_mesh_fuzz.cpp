// libFuzzer target: the peer mesh's connection state machine beyond the
// decoder (peer_decoder_fuzz): a real PeerMesh listening on 127.0.0.1, one
// TLS-PSK connection per input from a client that holds the cluster's key
// and then sends what the input says: a HELLO (built from fuzzed fields:
// role, listen address, ids, cluster, target; or raw payload bytes), then
// FRAMEs, MARKERs, control messages, controller requests, second HELLOs and
// raw bytes, and closes its sending side. The mesh is the accepting side
// (both configured peers sort lower, so they dial it); its MARKERs'
// unadopted-epoch timeout is short so a held connection is read again, and
// the fake guest refuses some frames and calls receive_ready() every 2 ms.
// A bug is a crash, a sanitizer report, or:
//  - the mesh answering with anything but its own HELLO first (naming this
//    client as its target), or with anything after it but controller
//    replies (to a controller, at most one per request);
//  - a frame reaching the guest that is not an Ethernet frame; a control
//    message reaching the cluster handler while no peer is connected;
//  - a well-formed HELLO from a configured peer not answered with the
//    mesh's HELLO (e.g. an earlier connection left it wedged);
//  - the connection not closed once the client closed its side, or a peer
//    still counted as connected afterwards.
#include <arpa/inet.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "fuzz/support/fuzz_platform.hpp"
#include "net/peer_mesh.hpp"
#include "net/tls_link.hpp"
#include "vmm/base/log.hpp"

using namespace vvmm;
using namespace vvmm::net;
using fuzz::check;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kCluster = "fuzzcluster";
const std::string kId = "vm-fuzz";
const std::vector<std::string> kPeerIds = {"vm-a", "vm-b"};
const std::vector<uint8_t> kSecret(32, 0x5e);

SocketAddress loopback(uint16_t port)
{
    std::array<uint8_t, 16> a{};
    a[0] = 127, a[3] = 1;
    return SocketAddress(SocketAddress::Family::ipv4, a, port);
}

uint16_t free_port()
{
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    check(fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "bind a free port");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

struct Sink : FrameSink {
    PeerMesh* mesh = nullptr;
    std::atomic<uint8_t> refuse_mask{0};
    std::atomic<size_t> delivered{0};
    bool deliver_to_guest(std::span<const uint8_t> frame) override
    {
        // (A frame held while the guest had no room may come after its connection is gone.)
        check(frame.size() >= kEthernetHeaderSize && frame.size() <= kMaxFrameSize, "a frame to the guest that is not an Ethernet frame");
        if ((delivered.fetch_add(1) & 7) < refuse_mask.load()) return false;  // no room: the mesh holds it
        return true;
    }
    void transmit_ready() override {}
};

struct Handler : PeerMessageSink, ControllerRequestHandler {
    PeerMesh* mesh = nullptr;
    std::atomic<size_t> requests{0};
    void on_control(const std::string& peer, MessageType type, uint64_t epoch, const nlohmann::json& body) override
    {
        check(!peer.empty() && is_control_type(type) && epoch != 0 && body.is_object(), "a bad control message reached the handler");
        check(mesh->connected_peers() > 0, "a control message from a peer that is not connected");
    }
    void on_peer_lost(const std::string& peer) override { check(!peer.empty(), "a lost peer without an id"); }
    void on_request(const nlohmann::json& request, std::function<void(nlohmann::json)> reply) override
    {
        check(request.is_object(), "a controller request that is not an object");
        ++requests;
        reply({{"ok", true}, {"echo", request}});
    }
};

struct Mesh {
    SocketAddress listen = loopback(free_port());
    Sink sink;
    Handler handler;
    std::unique_ptr<PeerMesh> mesh;
    UniqueSslCtx client_tls;
    ClusterPsk psk = derive_cluster_psk(kSecret, kCluster);
    Mesh()
    {
        PeerNetSpec spec;
        spec.id = kId;
        spec.listen = listen;
        spec.peers = {loopback(1), loopback(2)};  // both lower than `listen`: they dial us
        spec.mac = MacAddress({0x52, 0x54, 0x00, 0x00, 0x00, 0x01});
        PeerMeshLimits limits;
        limits.unadopted_epoch_timeout = std::chrono::milliseconds(20);
        limits.handshake_timeout = std::chrono::milliseconds(3000);
        auto m = PeerMesh::create(spec, limits, MeshCluster{kCluster, kSecret, kPeerIds});
        if (!m) {
            std::fprintf(stderr, "peer mesh: %s\n", m.error().message().c_str());
            std::abort();
        }
        mesh = std::move(m).value();
        sink.mesh = mesh.get();
        handler.mesh = mesh.get();
        mesh->attach(&sink);
        mesh->set_message_sink(&handler);
        mesh->set_request_handler(&handler);
        check(mesh->start().ok(), "peer mesh start");
        client_tls = make_psk_tls_context(&psk).value();
    }
};

Mesh& mesh()
{
    static Mesh m;
    return m;
}

std::string any_id(FuzzedDataProvider& in)
{
    switch (in.ConsumeIntegral<uint8_t>() % 5) {
    case 0: return kPeerIds[0];
    case 1: return kPeerIds[1];
    case 2: return kId;
    case 3: return "";
    default: return in.ConsumeRandomLengthString(70);
    }
}

SocketAddress any_address(FuzzedDataProvider& in)
{
    switch (in.ConsumeIntegral<uint8_t>() % 5) {
    case 0: return loopback(1);
    case 1: return loopback(2);
    case 2: return mesh().listen;
    case 3: return SocketAddress();
    default: {
        std::array<uint8_t, 16> a{};
        const bool v6 = in.ConsumeBool();
        for (size_t i = 0; i < (v6 ? 16u : 4u); ++i) a[i] = in.ConsumeIntegral<uint8_t>();
        return SocketAddress(v6 ? SocketAddress::Family::ipv6 : SocketAddress::Family::ipv4, a, in.ConsumeIntegral<uint16_t>());
    }
    }
}

nlohmann::json any_body(FuzzedDataProvider& in)
{
    switch (in.ConsumeIntegral<uint8_t>() % 4) {
    case 0: return nlohmann::json::object();
    case 1: return {{"cmd", "status"}};
    case 2: return {{"mode", "stop"}, {"ok", true}, {"digest", "ab"}};
    default: return {{"x", in.ConsumeRandomLengthString(40)}};
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    // Every refused connection is an error line: none unless asked for.
    set_log_level(std::getenv("VVMM_FUZZ_LOG") ? LogLevel::debug : static_cast<LogLevel>(-1));
    (void)mesh();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    FuzzedDataProvider in(data, size);
    Mesh& m = mesh();
    m.sink.refuse_mask = in.ConsumeIntegralInRange<uint8_t>(0, 3);

    // Our HELLO.
    std::vector<uint8_t> out;
    Hello hello;
    bool canonical = false;  // a configured peer's well-formed HELLO: the mesh must answer it
    const uint8_t how = in.ConsumeIntegral<uint8_t>();
    if (how < 96) {  // a configured peer, as it should introduce itself
        const size_t i = how % 2;
        hello = Hello{.role = PeerRole::peer, .mac = MacAddress({0x52, 0x54, 0x00, 0x00, 0x01, uint8_t(i)}),
                      .listen = loopback(uint16_t(i + 1)), .id = kPeerIds[i], .cluster = kCluster,
                      .target = m.listen, .target_id = how & 4 ? kId : ""};
        canonical = true;
    } else if (how < 128) {  // a controller
        hello = Hello{.role = PeerRole::controller, .id = "ctl", .cluster = kCluster, .target_id = kId};
    } else {
        hello.role = in.ConsumeBool() ? PeerRole::peer : PeerRole::controller;
        std::array<uint8_t, 6> mac;
        for (auto& b : mac) b = in.ConsumeIntegral<uint8_t>();
        hello.mac = MacAddress(mac);
        hello.listen = any_address(in);
        hello.id = any_id(in);
        hello.cluster = in.ConsumeBool() ? kCluster : in.ConsumeRandomLengthString(70);
        hello.target = any_address(in);
        hello.target_id = any_id(in);
    }
    if (how >= 250) {  // raw HELLO payload
        const auto payload = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 200));
        const uint8_t header[8] = {uint8_t(payload.size()), uint8_t(payload.size() >> 8), 0, 0, 1, 0, 0, 0};
        out.insert(out.end(), header, header + 8);
        out.insert(out.end(), payload.begin(), payload.end());
        canonical = false;
    } else {
        append_hello(out, hello);
    }
    // What follows it.
    std::vector<uint8_t> rest;
    size_t requests = 0;
    for (int i = 0; i < 16 && in.remaining_bytes() > 0; ++i) {
        switch (in.ConsumeIntegral<uint8_t>() % 8) {
        case 0: case 1: {
            std::vector<uint8_t> frame = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(0, 100));
            if (frame.size() >= 12 && in.ConsumeBool()) std::memcpy(frame.data() + 6, "\x52\x54\x00\x00\x00\x01", 6);
            append_frame(rest, frame);
            break;
        }
        case 2: append_marker(rest, in.ConsumeIntegralInRange<uint64_t>(1, 4)); break;
        case 3: {
            static constexpr MessageType kTypes[] = {MessageType::prepare, MessageType::done, MessageType::commit,
                                                     MessageType::abort, MessageType::restored};
            append_control(rest, kTypes[in.ConsumeIntegralInRange<size_t>(0, 4)], in.ConsumeIntegralInRange<uint64_t>(1, 4), any_body(in));
            break;
        }
        case 4: append_ctl_request(rest, any_body(in)); ++requests; break;
        case 5: append_ctl_reply(rest, any_body(in)); break;
        case 6: append_hello(rest, hello); break;
        default: {
            const auto raw = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 32));
            rest.insert(rest.end(), raw.begin(), raw.end());
            break;
        }
        }
    }

    // Connect, handshake, send our HELLO (a configured peer waits for the
    // answer, as a real one does), the rest, close our side, read everything back.
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(m.listen.port());
    check(fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "connect to the mesh");
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // no 40 ms Nagle/delayed-ACK stalls
    const auto deadline = Clock::now() + std::chrono::seconds(8);
    auto link = TlsLink::handshake(UniqueFd(fd), m.client_tls.get(), TlsLink::Side::client, deadline, "mesh");
    check(link.ok(), "TLS handshake with the mesh failed");
    std::vector<uint8_t> back;
    MessageDecoder decoder;
    auto receive = [&] {
        uint8_t buf[16384];
        auto n = link.value().receive(buf, deadline);
        if (!n) {
            check(Clock::now() < deadline, "the mesh did not answer or close the connection in 8 s");
            return false;  // reset, or a TLS alert
        }
        if (n.value() == 0) return false;
        back.insert(back.end(), buf, buf + n.value());
        decoder.feed(std::span<const uint8_t>(buf, n.value()));
        return true;
    };
    // The guest makes room now and then (a refused frame stops the mesh
    // reading that connection until receive_ready()).
    std::atomic<bool> done{false};
    std::thread guest([&] {
        while (!done) {
            m.mesh->receive_ready();
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    (void)link.value().send(out, deadline);  // the mesh may close early (a refused HELLO)
    std::optional<Message> first;
    if (canonical) {
        for (;;) {
            auto next = decoder.next();
            check(next.ok(), "the mesh sent bytes that do not decode");
            if (next.value()) {
                first = std::move(*next.value());
                break;
            }
            if (!receive()) break;
        }
        check(first.has_value(), "a configured peer's well-formed HELLO was not answered");
    }
    (void)link.value().send(rest, deadline);
    ::shutdown(link.value().fd(), SHUT_WR);
    while (receive()) {
    }
    done = true;
    guest.join();

    // What came back: the mesh's HELLO, then (to a controller) replies.
    if (!first) {
        auto next = decoder.next();
        check(next.ok(), "the mesh sent bytes that do not decode");
        if (next.value()) first = std::move(*next.value());
    }
    if (first) {
        const Hello* theirs = std::get_if<Hello>(&*first);
        check(theirs != nullptr, "the mesh's first message is not HELLO");
        check(theirs->id == kId && theirs->cluster == kCluster && theirs->listen == m.listen && theirs->role == PeerRole::peer,
              "the mesh's HELLO is not its own");
        check(theirs->target_id == hello.id &&
                  theirs->target == (hello.role == PeerRole::controller ? SocketAddress() : hello.listen),
              "the mesh's HELLO names someone else as its target");
        size_t replies = 0;
        for (;;) {
            auto next = decoder.next();
            check(next.ok(), "the mesh sent bytes that do not decode");
            if (!next.value()) break;
            check(hello.role == PeerRole::controller && std::holds_alternative<ControlReply>(*next.value()),
                  "the mesh sent something other than a controller's reply after its HELLO");
            ++replies;
        }
        check(replies <= requests, "more replies than requests");
    }
    // Every connection is gone once ours is.
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (m.mesh->connected_peers() != 0) {
        check(Clock::now() < until, "a peer still connected after its connection closed");
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return 0;
}
