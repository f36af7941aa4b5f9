// Deterministic, single-threaded stand-ins for the two platform pieces the
// virtio devices need, for fuzz targets only:
//  - fuzz/support/fake_kvm.cpp replaces vmm/kvm_vm.cpp and
//    vmm/kvm_system.cpp: a KvmVm with no kernel VM behind it. irqfds,
//    ioeventfds and the GSI routing table are recorded and checked the way
//    KVM would check them, never passed to an ioctl.
//  - fuzz/support/fake_io_thread.cpp replaces vmm/io_thread.cpp: nothing
//    runs until the target calls pump(), which then runs eventfd watches,
//    posted tasks and queued disk I/O on the calling thread until idle.
//    Every disk I/O is checked before it runs (see IoCheck).
// A target links one or both instead of the real files (SOURCES table of
// fuzz/build_and_run.sh).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <functional>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "vmm/io_thread.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::fuzz {

// Prints "fuzz: invariant broken: <what>" and aborts (a finding).
[[noreturn]] inline void broken(const char* what)
{
    std::fprintf(stderr, "fuzz: invariant broken: %s\n", what);
    std::abort();
}
inline void check(bool condition, const char* what)
{
    if (!condition) broken(what);
}

// A fresh directory for this process's files (disk images, layers,
// sockets): on /dev/shm (tmpfs: fsync is free) if there is one, else in
// $TMPDIR or /tmp. Removed when the process exits normally; a crash leaves
// it for the post-mortem.
inline const std::string& scratch_dir(const std::string& name)
{
    static std::string dir;
    if (dir.empty()) {
        std::error_code ec;
        std::string base = std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                               ? "/dev/shm"
                               : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
        dir = base + "/vvmm-fuzz-" + name + "-" + std::to_string(::getpid());
        std::filesystem::remove_all(dir, ec);
        std::filesystem::create_directories(dir);
        std::atexit([] {
            std::error_code ignored;
            std::filesystem::remove_all(dir, ignored);
        });
    }
    return dir;
}

// ---- KVM ----
// Fake VMs (a /dev/null fd each, never an ioctl): 0 for the VM under test,
// others for a second machine, e.g. the one a checkpoint is restored into.
vmm::KvmVm& fake_vm(unsigned index = 0);
struct KvmRecord {
    std::map<int, uint32_t> irqfds;                          // eventfd -> gsi
    std::set<std::tuple<int, uint64_t, int>> ioeventfds;     // (VM fd, guest address, eventfd)
    size_t routing_entries = 0;                              // size of the last KVM_SET_GSI_ROUTING table
    size_t routing_commits = 0;
};
KvmRecord& kvm_record();  // of every fake VM; clear it between runs
// Fake VM `index` is destroyed (its machine is gone): KVM drops its ioeventfds.
void forget_vm(unsigned index);

// ---- I/O thread ----
enum class IoKind { read, write, fsync };
// Called before each disk I/O runs, with the request as the device queued
// it. A check that fails calls broken().
using IoCheck = std::function<void(IoKind kind, int fd, const iovec* iov, unsigned count, uint64_t offset)>;
void set_io_check(IoCheck check);
// Chooses, for each queued disk I/O, which one completes next (byte %
// number queued) and whether it fails with -EIO (bit 7). Without a chooser
// I/Os complete in order and succeed.
void set_io_chooser(std::function<uint8_t()> chooser);
// Runs watches, tasks and I/O until nothing is left; aborts if the thread
// never goes idle (a livelock). `max_io` bounds the disk I/Os completed
// (queued ones stay queued). Returns the number of steps taken.
size_t pump(vmm::IoThread& io, size_t max_io = SIZE_MAX);
// Disk I/Os queued and not completed yet.
size_t queued_io(const vmm::IoThread& io);

}  // namespace vvmm::fuzz
