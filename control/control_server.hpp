// The control API a running VMM answers on: a Unix stream socket (mode 0600)
// carrying one JSON object per line in each direction.
//
// Requests (the server parses them once into a ControlRequest,
// control_request.hpp, defaults filled in; the handler sees only that):
//   {"cmd":"status"}
//   {"cmd":"pause"}
//   {"cmd":"resume"}
//   {"cmd":"stop"}
//   {"cmd":"checkpoint","dir":"ckpts/a","mode":"stop"|"live"|"cow","incremental":false}
//       dir: non-empty string without NUL; mode: default "stop"; incremental: default false.
// Unknown commands, unknown fields, wrong types, malformed JSON and lines
// over kMaxRequestLine bytes are refused by the server with
// {"ok":false,"error":"..."} and never reach the handler; after an overlong
// line the connection is closed (the rest of the line cannot be framed).
//
// Replies (what the VMM's handler returns; "ok" is always present):
//   any failure -> {"ok":false,"error":"one line for the user"}
//   status      -> {"ok":true,"state":"running"|"paused","cpus":2,"mem_bytes":536870912,
//                   "uptime_s":12.3,"checkpoints":3,"last_checkpoint":{<checkpoint reply>}}
//                  (last_checkpoint absent before the first checkpoint; "restore_ms" after
//                  a restore; "spoofed_tx_dropped": frames the guest sent with another
//                  source MAC, dropped, present once there is one)
//                  plus "devices": [per virtio device: driver status, and per queue the
//                  device's ring positions, what the rings in guest memory say and the
//                  MSI-X vector's mask/pending bits] and "network": [per backend: peer
//                  links, queued bytes, frames held either way] (`vvmm status --json`)
//   pause/resume-> {"ok":true,"state":"paused"|"running"}
//   stop        -> {"ok":true,"state":"stopped"}   (the VMM exits 0 after replying)
//   checkpoint  -> {"ok":true,"id":"000003","path":"ckpts/a/000003","mode":"cow",
//                   "incremental":true,"parent":"000002","pause_ms":1.2,"total_ms":310.4,
//                   "bytes_written":188743680,"pages_written":46080}
//                  (parent absent or null for a full checkpoint)
//
// Concurrency: every connection is served one request at a time (the next
// line is read once the reply is written); several connections may be open.
// The handler runs on one of two worker threads, never on the io thread:
// "status" on the query worker, so it is answered while a checkpoint runs;
// pause/resume/checkpoint/stop on the command worker, one at a time. A
// command that arrives while another one is running is refused at once with
// "busy: ..." instead of queueing behind it: a queued pause that runs
// minutes later, after its client gave up, would surprise everyone.
// So the handler may see one "status" call concurrently with one other call.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "control/control_request.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::control {

// Longest request line accepted, without its '\n'.
inline constexpr size_t kMaxRequestLine = 64 * 1024;
// Connections open at once; more are answered with an error and closed.
inline constexpr size_t kMaxConnections = 32;

// Implemented by the VMM: runs on a server worker thread and may block for
// seconds (a checkpoint). Returns the reply object, with "ok". A thrown
// exception or a reply that is not an object with a boolean "ok" becomes
// {"ok":false,"error":"internal error: ..."}.
class ControlHandler {
public:
    virtual ~ControlHandler() = default;
    virtual nlohmann::json handle(const ControlRequest& request) = 0;
};

class ControlServer {
public:
    // Listens on socket_path. Missing parent directories are created (mode
    // 0700). A socket file nobody answers on (a VMM that died) is replaced;
    // a live server there, or any non-socket file, is an error.
    static Result<std::unique_ptr<ControlServer>> create(const std::string& socket_path, ControlHandler& handler);
    // Stops accepting, waits for a running handler call to return, gives
    // replies in flight (the answer to "stop") up to 2 s to be written, and
    // unlinks the socket if it is still the one this server created.
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    const std::string& socket_path() const;

    struct Impl;

private:
    explicit ControlServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace vvmm::control
