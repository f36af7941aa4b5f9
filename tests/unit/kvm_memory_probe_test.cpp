// Does KVM on this host honour userfaultfd and dirty logging for guest RAM?
// A few bytes of real-mode code at 0x1000 touch guest pages; the host watches
// through a userfaultfd or KVM's dirty log. Skipped without /dev/kvm.
#include <doctest/doctest.h>

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "ckpt/userfault.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/kvm_vcpu.hpp"
#include "vmm/kvm_vm.hpp"
#include "vmm/long_mode_setup.hpp"

using namespace vvmm;
using ckpt::describe_event;
using ckpt::UffdMode;
using ckpt::Userfault;

namespace {

constexpr uint64_t kPage = 4096;

// The error text of a failed Result, "" otherwise: doctest may format a
// _MESSAGE argument even when the check passed.
template <typename R>
std::string why(const R& r)
{
    return r.ok() ? std::string() : r.error().message();
}
constexpr uint64_t kMemSize = 2ull << 20;
constexpr uint64_t kCodeGpa = 0x1000;
constexpr uint16_t kDonePort = 0x10;

// Real-mode machine code, DS = ES = 0.
struct Code {
    std::vector<uint8_t> b;
    Code& write32(uint16_t addr, uint32_t v)  // mov dword [addr], v
    {
        b.insert(b.end(), {0x66, 0xC7, 0x06, uint8_t(addr), uint8_t(addr >> 8), uint8_t(v), uint8_t(v >> 8),
                           uint8_t(v >> 16), uint8_t(v >> 24)});
        return *this;
    }
    Code& load_eax(uint16_t addr)  // mov eax, [addr]
    {
        b.insert(b.end(), {0x66, 0xA1, uint8_t(addr), uint8_t(addr >> 8)});
        return *this;
    }
    Code& store_eax(uint16_t addr)  // mov [addr], eax
    {
        b.insert(b.end(), {0x66, 0xA3, uint8_t(addr), uint8_t(addr >> 8)});
        return *this;
    }
    Code& out(uint8_t port)  // out port, al
    {
        b.insert(b.end(), {0xE6, port});
        return *this;
    }
    // Writes one byte to each of `pages` pages starting at guest page `first`.
    Code& touch_pages(uint16_t first, uint16_t pages)
    {
        const uint16_t seg = uint16_t(first << 8);
        b.insert(b.end(), {0xB9, uint8_t(pages), uint8_t(pages >> 8),  // mov cx, pages
                           0xB8, uint8_t(seg), uint8_t(seg >> 8)});    // mov ax, seg
        const size_t loop = b.size();
        b.insert(b.end(), {0x8E, 0xC0,                                 // mov es, ax
                           0x26, 0xC6, 0x06, 0x00, 0x00, 0x01,         // mov byte es:[0], 1
                           0x05, 0x00, 0x01,                           // add ax, 0x100
                           0x49,                                       // dec cx
                           0x75});                                     // jnz loop
        b.push_back(uint8_t(int(loop) - int(b.size() + 1)));
        return *this;
    }
};

// 64-bit code run at CPL 3: guest user code is what this host runs natively
// (real mode and kernel code are emulated), so it exercises KVM's
// (shadow) page tables rather than its instruction emulator.
struct Code64 {
    std::vector<uint8_t> b;
    Code64& write32(uint32_t addr, uint32_t v)  // mov dword [addr], v
    {
        b.insert(b.end(), {0xC7, 0x04, 0x25, uint8_t(addr), uint8_t(addr >> 8), uint8_t(addr >> 16),
                           uint8_t(addr >> 24), uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)});
        return *this;
    }
    Code64& load_eax(uint32_t addr)  // mov eax, [addr]
    {
        b.insert(b.end(), {0x8B, 0x04, 0x25, uint8_t(addr), uint8_t(addr >> 8), uint8_t(addr >> 16), uint8_t(addr >> 24)});
        return *this;
    }
    Code64& store_eax(uint32_t addr)  // mov [addr], eax
    {
        b.insert(b.end(), {0x89, 0x04, 0x25, uint8_t(addr), uint8_t(addr >> 8), uint8_t(addr >> 16), uint8_t(addr >> 24)});
        return *this;
    }
    Code64& out(uint8_t port)  // out port, al (IOPL 3 allows it)
    {
        b.insert(b.end(), {0xE6, port});
        return *this;
    }
    Code64& touch_pages(uint32_t first_gpa, uint32_t pages)
    {
        b.insert(b.end(), {0xBF, uint8_t(first_gpa), uint8_t(first_gpa >> 8), uint8_t(first_gpa >> 16),
                           uint8_t(first_gpa >> 24),                                           // mov edi, first
                           0xB9, uint8_t(pages), uint8_t(pages >> 8), uint8_t(pages >> 16), 0});  // mov ecx, pages
        const size_t loop = b.size();
        b.insert(b.end(), {0xC6, 0x07, 0x01,                          // mov byte [rdi], 1
                           0x48, 0x81, 0xC7, 0x00, 0x10, 0x00, 0x00,  // add rdi, 0x1000
                           0xFF, 0xC9,                                // dec ecx
                           0x75});                                    // jnz loop
        b.push_back(uint8_t(int(loop) - int(b.size() + 1)));
        return *this;
    }
};

struct TinyVm {
    vmm::KvmSystem kvm;
    vmm::KvmVm vm;
    vmm::GuestMemory mem;
    std::optional<vmm::KvmVcpu> vcpu;

    uint8_t* host(uint64_t gpa) const { return mem.host_base() + gpa; }

    // Returns the port of the next `out`, or an error for any other exit.
    Result<uint16_t> run()
    {
        for (;;) {
            if (::ioctl(vcpu->fd(), KVM_RUN, 0) < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                return errno_error("KVM_RUN");
            }
            kvm_run* r = vcpu->run_page();
            if (r->exit_reason == KVM_EXIT_IO && r->io.direction == KVM_EXIT_IO_OUT) return r->io.port;
            return Error("unexpected exit reason " + std::to_string(r->exit_reason));
        }
    }
};

std::optional<TinyVm> open_kvm()
{
    if (::access("/dev/kvm", R_OK | W_OK) != 0) return std::nullopt;
    auto kvm = vmm::KvmSystem::open();
    if (!kvm) return std::nullopt;
    auto vm = vmm::KvmVm::create(*kvm);
    REQUIRE_MESSAGE(vm.ok(), why(vm));
    auto mem = vmm::GuestMemory::create(kMemSize);
    REQUIRE(mem.ok());
    return TinyVm{std::move(*kvm), std::move(*vm), std::move(*mem), std::nullopt};
}

// The slot is set by the caller (flags differ); then code and vCPU.
void start(TinyVm& t, const Code& code)
{
    std::memcpy(t.host(kCodeGpa), code.b.data(), code.b.size());
    auto vcpu = vmm::KvmVcpu::create(t.kvm, t.vm, 0);
    REQUIRE_MESSAGE(vcpu.ok(), why(vcpu));
    t.vcpu.emplace(std::move(*vcpu));
    auto s = t.vcpu->sregs();
    REQUIRE(s.ok());
    s->cs.base = 0;
    s->cs.selector = 0;
    REQUIRE(t.vcpu->set_sregs(*s).ok());
    kvm_regs r{};
    r.rip = kCodeGpa;
    r.rflags = 2;
    REQUIRE(t.vcpu->set_regs(r).ok());
}

// Long mode at CPL 3 straight from KVM_SET_SREGS: page tables at 0x8000
// map the first 2 MiB user-accessible, a GDT at 0x7000 matches the segments.
void start_user64(TinyVm& t, const Code64& code)
{
    constexpr uint64_t kGdt = 0x7000, kPml4 = 0x8000, kPdpt = 0x9000, kPd = 0xA000;
    constexpr uint64_t P = 1, RW = 2, US = 4, PS = 0x80;
    std::memset(t.host(kGdt), 0, 4 * kPage);
    const uint64_t gdt[] = {0, 0, vmm::gdt_entry(0xA09B, 0, 0xfffff), vmm::gdt_entry(0xC093, 0, 0xfffff),
                            vmm::gdt_entry(0xC0F3, 0, 0xfffff), vmm::gdt_entry(0xA0FB, 0, 0xfffff),
                            vmm::gdt_entry(0x008B, 0, 0x67), 0};
    std::memcpy(t.host(kGdt), gdt, sizeof gdt);
    const uint64_t pml4e = kPdpt | P | RW | US, pdpte = kPd | P | RW | US, pde = 0 | P | RW | US | PS;
    std::memcpy(t.host(kPml4), &pml4e, 8);
    std::memcpy(t.host(kPdpt), &pdpte, 8);
    std::memcpy(t.host(kPd), &pde, 8);
    std::memcpy(t.host(kCodeGpa), code.b.data(), code.b.size());

    auto vcpu = vmm::KvmVcpu::create(t.kvm, t.vm, 0);
    REQUIRE_MESSAGE(vcpu.ok(), why(vcpu));
    t.vcpu.emplace(std::move(*vcpu));
    auto cpuid = t.kvm.supported_cpuid();
    REQUIRE(cpuid.ok());
    REQUIRE(t.vcpu->set_cpuid(*cpuid).ok());
    auto s = t.vcpu->sregs();
    REQUIRE(s.ok());
    auto seg = [](uint16_t sel, uint8_t type, bool is_code) {
        kvm_segment g{};
        g.selector = sel;
        g.limit = 0xfffff;
        g.type = type;
        g.present = 1;
        g.dpl = 3;
        g.s = 1;
        g.g = 1;
        g.l = is_code;
        g.db = !is_code;
        return g;
    };
    s->cs = seg(0x2B, 0xB, true);
    s->ds = s->es = s->fs = s->gs = s->ss = seg(0x23, 0x3, false);
    s->tr = kvm_segment{};
    s->tr.selector = 0x30;
    s->tr.limit = 0x67;
    s->tr.type = 0xB;
    s->tr.present = 1;
    s->gdt.base = kGdt;
    s->gdt.limit = sizeof gdt - 1;
    s->idt.base = 0;
    s->idt.limit = 0;
    s->cr3 = kPml4;
    s->cr4 |= 0x20;                                    // PAE
    s->cr0 = (s->cr0 | 0x80010033) & ~0x60000000ull;  // PG WP NE ET MP PE, caches on
    s->efer |= 0x500;                                  // LME LMA
    REQUIRE(t.vcpu->set_sregs(*s).ok());
    kvm_regs r{};
    r.rip = kCodeGpa;
    r.rflags = 0x3002;  // IOPL 3: `out` from CPL 3 reaches us
    REQUIRE(t.vcpu->set_regs(r).ok());
}

#define SKIP_WITHOUT_KVM(t)                                  \
    auto t##_opt = open_kvm();                               \
    if (!t##_opt) {                                          \
        MESSAGE("skipped: no usable /dev/kvm on this host"); \
        return;                                              \
    }                                                        \
    TinyVm& t = *t##_opt

// Reads events until `stop`, handing each fault to `handle`. If nothing
// arrives for 5 s while the vCPU has not come back, a fault was lost:
// `rescue` then unblocks it so the test fails instead of hanging.
struct Handler {
    Userfault& u;
    std::function<void(const ckpt::UffdFault&)> handle;
    std::function<void()> rescue;
    std::atomic<bool> stop{false};
    std::atomic<bool> rescued{false};
    std::thread th;

    void begin()
    {
        th = std::thread([this] {
            auto last = std::chrono::steady_clock::now();
            while (!stop) {
                auto e = u.read_event(50);
                if (!e.ok()) break;
                if (*e) {
                    if (auto f = describe_event(**e)) handle(*f);
                    last = std::chrono::steady_clock::now();
                } else if (std::chrono::steady_clock::now() - last > std::chrono::seconds(5) && !rescued) {
                    rescued = true;
                    rescue();
                }
            }
        });
    }
    void end()
    {
        stop = true;
        th.join();
    }
};

std::vector<uint64_t> dirty_pages(const std::vector<uint64_t>& bitmap)
{
    std::vector<uint64_t> pages;
    for (size_t w = 0; w < bitmap.size(); ++w)
        for (int b = 0; b < 64; ++b)
            if (bitmap[w] >> b & 1) pages.push_back(w * 64 + b);
    return pages;
}

// The first log after the vCPU started: kvm-amd on Linux 6.1 (seen under
// QEMU's SVM emulation) also reports the code page the guest only fetched
// from. More pages than written costs a checkpoint bytes, never correctness,
// so that one page is allowed; any other extra page, or a missing one, fails.
std::vector<uint64_t> first_dirty_pages(const std::vector<uint64_t>& bitmap)
{
    auto pages = dirty_pages(bitmap);
    std::erase(pages, kCodeGpa / kPage);
    return pages;
}

std::string hex(uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}

double since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("kvm probe: a guest write to a write-protected page waits for the uffd handler")
{
    SKIP_WITHOUT_KVM(t);
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base()).ok());
    start(t, Code().write32(0x3000, 0x12345678).out(kDonePort));
    std::memset(t.host(0x2000), 0xAA, 8 * kPage);  // populate the data pages
    auto u = Userfault::create(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
    REQUIRE_MESSAGE(u.ok(), why(u));
    REQUIRE(u->register_range(t.mem.host_base(), kMemSize, UffdMode::wp).ok());
    REQUIRE(u->write_protect(t.host(0x2000), 8 * kPage, true).ok());

    std::atomic<bool> vcpu_back{false};
    std::atomic<int> wp_faults{0};
    std::atomic<uint64_t> fault_addr{0};
    std::atomic<bool> blocked_while_handling{false};
    std::vector<uint8_t> saved(kPage);
    Handler h{*u,
              [&](const ckpt::UffdFault& f) {
                  fault_addr = f.address;
                  wp_faults += f.wp && f.write;
                  std::this_thread::sleep_for(std::chrono::milliseconds(50));
                  blocked_while_handling = !vcpu_back;
                  std::memcpy(saved.data(), reinterpret_cast<void*>(f.address), kPage);
                  (void)u->write_protect(reinterpret_cast<void*>(f.address), kPage, false);
              },
              [&] { (void)u->write_protect(t.mem.host_base(), kMemSize, false); }};
    h.begin();
    auto port = t.run();
    vcpu_back = true;
    h.end();
    REQUIRE_MESSAGE(port.ok(), why(port));
    CHECK(*port == kDonePort);
    CHECK_FALSE(h.rescued.load());
    CHECK(wp_faults == 1);
    CHECK(fault_addr == reinterpret_cast<uint64_t>(t.host(0x3000)));
    CHECK(blocked_while_handling.load());
    uint32_t now, before;
    std::memcpy(&now, t.host(0x3000), 4);
    std::memcpy(&before, saved.data(), 4);
    CHECK(now == 0x12345678);
    CHECK(before == 0xAAAAAAAA);

    // A host thread writing guest RAM (as a device would) faults the same way.
    std::atomic<int> host_faults{0};
    Handler h2{*u,
               [&](const ckpt::UffdFault& f) {
                   host_faults += f.wp && f.address == reinterpret_cast<uint64_t>(t.host(0x4000));
                   (void)u->write_protect(reinterpret_cast<void*>(f.address), kPage, false);
               },
               [&] { (void)u->write_protect(t.mem.host_base(), kMemSize, false); }};
    h2.begin();
    std::thread([&] { std::memset(t.host(0x4000), 0x77, 16); }).join();
    h2.end();
    CHECK(host_faults == 1);
    CHECK(t.host(0x4000)[15] == 0x77);
}

TEST_CASE("kvm probe: guest writes to never-touched write-protected pages (shmem PTE markers)")
{
    SKIP_WITHOUT_KVM(t);
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base()).ok());
    // 0x3000 never touched by anyone; 0x5000 in the memfd's page cache but
    // not mapped by us (as after a restore that wrote the file).
    start(t, Code().write32(0x3000, 0x11111111).write32(0x5000, 0x22222222).out(kDonePort));
    const uint32_t seed = 0x5EED;
    REQUIRE(::pwrite(t.mem.memfd(), &seed, 4, 0x5000) == 4);
    auto u = Userfault::create(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
    REQUIRE(u.ok());
    REQUIRE(u->register_range(t.mem.host_base(), kMemSize, UffdMode::wp).ok());
    REQUIRE(u->write_protect(t.mem.host_base(), kMemSize, true).ok());
    std::vector<uint64_t> faults;
    Handler h{*u,
              [&](const ckpt::UffdFault& f) {
                  if (f.wp) faults.push_back(f.address - reinterpret_cast<uint64_t>(t.mem.host_base()));
                  (void)u->write_protect(reinterpret_cast<void*>(f.address), kPage, false);
              },
              [&] { (void)u->write_protect(t.mem.host_base(), kMemSize, false); }};
    h.begin();
    auto port = t.run();
    h.end();
    REQUIRE_MESSAGE(port.ok(), why(port));
    std::string seen;
    for (auto a : faults) seen += " " + hex(a);
    MESSAGE("WP faults at:" << seen);
    CHECK(faults == std::vector<uint64_t>{0x3000, 0x5000});
    uint32_t a, b;
    std::memcpy(&a, t.host(0x3000), 4);
    std::memcpy(&b, t.host(0x5000), 4);
    CHECK(a == 0x11111111);
    CHECK(b == 0x22222222);
}

TEST_CASE("kvm probe: missing guest pages are served by UFFDIO_COPY")
{
    SKIP_WITHOUT_KVM(t);
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base()).ok());
    start(t, Code().load_eax(0x5000).store_eax(0x6000).out(kDonePort));  // code page is now present
    auto u = Userfault::create(UFFD_FEATURE_MISSING_SHMEM);
    REQUIRE(u.ok());
    REQUIRE(u->register_range(t.mem.host_base(), kMemSize, UffdMode::missing).ok());
    std::vector<uint8_t> image(kPage, 0);
    const uint32_t value = 0xCAFEBABE;
    std::memcpy(image.data(), &value, 4);
    std::vector<std::pair<uint64_t, bool>> faults;  // (gpa, write)
    Handler h{*u,
              [&](const ckpt::UffdFault& f) {
                  const uint64_t gpa = f.address - reinterpret_cast<uint64_t>(t.mem.host_base());
                  faults.emplace_back(gpa, f.write);
                  if (gpa == 0x5000) (void)u->copy(reinterpret_cast<void*>(f.address), image.data(), kPage);
                  else (void)u->zeropage(reinterpret_cast<void*>(f.address), kPage);
              },
              [&] { (void)u->zeropage(t.mem.host_base(), kMemSize); }};
    h.begin();
    auto port = t.run();
    h.end();
    REQUIRE_MESSAGE(port.ok(), why(port));
    CHECK_FALSE(h.rescued.load());
    std::string seen;
    for (auto [gpa, w] : faults) seen += " " + hex(gpa) + (w ? "(w)" : "(r)");
    MESSAGE("missing faults at:" << seen);
    REQUIRE(faults.size() >= 2);
    CHECK(faults[0] == std::pair<uint64_t, bool>{0x5000, false});
    CHECK(faults[1].first == 0x6000);
    auto regs = t.vcpu->regs();
    REQUIRE(regs.ok());
    CHECK(uint32_t(regs->rax) == value);
    uint32_t stored;
    std::memcpy(&stored, t.host(0x6000), 4);
    CHECK(stored == value);
}

TEST_CASE("kvm probe: dirty log reports the pages the guest wrote")
{
    SKIP_WITHOUT_KVM(t);
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base(), KVM_MEM_LOG_DIRTY_PAGES).ok());
    start(t, Code().write32(0x3000, 1).out(kDonePort).write32(0x5000, 2).out(kDonePort + 1));
    auto port = t.run();
    REQUIRE_MESSAGE(port.ok(), why(port));
    auto log = t.vm.dirty_log(0, kMemSize);
    REQUIRE_MESSAGE(log.ok(), why(log));
    CHECK(first_dirty_pages(*log) == std::vector<uint64_t>{3});
    port = t.run();
    REQUIRE(port.ok());
    CHECK(*port == kDonePort + 1);
    log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    CHECK(dirty_pages(*log) == std::vector<uint64_t>{5});  // the first get cleared page 3
}

TEST_CASE("kvm probe: manual dirty log protect (KVM_CLEAR_DIRTY_LOG)")
{
    SKIP_WITHOUT_KVM(t);
    auto en = t.vm.enable_manual_dirty_log_protect(t.kvm);
    REQUIRE_MESSAGE(en.ok(), why(en));
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base(), KVM_MEM_LOG_DIRTY_PAGES).ok());
    start(t, Code().write32(0x3000, 1).out(kDonePort).write32(0x5000, 2).write32(0x3004, 3).out(kDonePort + 1));
    REQUIRE(t.run().ok());
    auto log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    CHECK(first_dirty_pages(*log) == std::vector<uint64_t>{3});
    log = t.vm.dirty_log(0, kMemSize);  // not cleared by the get
    REQUIRE(log.ok());
    CHECK(first_dirty_pages(*log) == std::vector<uint64_t>{3});
    auto clr = t.vm.clear_dirty_log(0, 0, kMemSize / kPage, *log);
    REQUIRE_MESSAGE(clr.ok(), why(clr));
    log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    CHECK(dirty_pages(*log).empty());
    REQUIRE(t.run().ok());  // writes 0x5000 and page 3 again: clear re-protected it
    log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    CHECK(dirty_pages(*log) == std::vector<uint64_t>{3, 5});
}

TEST_CASE("kvm probe: cost of a write-protect fault round trip (measured)")
{
    SKIP_WITHOUT_KVM(t);
    constexpr uint16_t kFirst = 0x10, kPages = 200;  // guest pages 0x10000..0xD8000
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base()).ok());
    start(t, Code().touch_pages(kFirst, kPages).out(kDonePort).touch_pages(kFirst, kPages).out(kDonePort + 1));
    std::memset(t.host(kFirst * kPage), 0xAA, kPages * kPage);
    auto t0 = std::chrono::steady_clock::now();  // baseline: no protection
    auto port = t.run();
    REQUIRE_MESSAGE(port.ok(), why(port));
    const double plain = since(t0);
    CHECK(t.host(kFirst * kPage)[0] == 1);

    auto u = Userfault::create(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
    REQUIRE(u.ok());
    REQUIRE(u->register_range(t.mem.host_base(), kMemSize, UffdMode::wp).ok());
    REQUIRE(u->write_protect(t.host(kFirst * kPage), kPages * kPage, true).ok());
    std::vector<uint8_t> saved(kPages * kPage);
    std::atomic<int> faults{0};
    Handler h{*u,
              [&](const ckpt::UffdFault& f) {
                  const uint64_t off = f.address - reinterpret_cast<uint64_t>(t.host(kFirst * kPage));
                  if (off < saved.size()) std::memcpy(saved.data() + off, reinterpret_cast<void*>(f.address), kPage);
                  (void)u->write_protect(reinterpret_cast<void*>(f.address), kPage, false);
                  ++faults;
              },
              [&] { (void)u->write_protect(t.mem.host_base(), kMemSize, false); }};
    h.begin();
    t0 = std::chrono::steady_clock::now();
    port = t.run();
    const double wp = since(t0);
    h.end();
    REQUIRE(port.ok());
    CHECK(*port == kDonePort + 1);
    CHECK(faults == kPages);
    CHECK(saved[0] == 1);
    MESSAGE("guest touching " << kPages << " pages: " << plain * 1e6 / kPages << " us/page unprotected, "
            << wp * 1e6 / kPages << " us/page write-protected => ~" << (wp - plain) * 1e6 / kPages
            << " us per WP fault round trip");

    // The same for a host thread.
    REQUIRE(u->write_protect(t.host(kFirst * kPage), kPages * kPage, true).ok());
    faults = 0;
    Handler h2{*u,
               [&](const ckpt::UffdFault& f) {
                   (void)u->write_protect(reinterpret_cast<void*>(f.address), kPage, false);
                   ++faults;
               },
               [&] { (void)u->write_protect(t.mem.host_base(), kMemSize, false); }};
    h2.begin();
    t0 = std::chrono::steady_clock::now();
    std::thread([&] {
        for (uint64_t p = 0; p < kPages; ++p) t.host(kFirst * kPage)[p * kPage] = 2;
    }).join();
    const double host = since(t0);
    h2.end();
    CHECK(faults == kPages);
    MESSAGE("host thread: " << host * 1e6 / kPages << " us per WP fault round trip");
}

TEST_CASE("kvm probe: native guest user code: write-protect faults and dirty log")
{
    SKIP_WITHOUT_KVM(t);
    constexpr uint32_t kFirst = 0x10000, kPages = 200;
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base(), KVM_MEM_LOG_DIRTY_PAGES).ok());
    start_user64(t, Code64()
                        .touch_pages(kFirst, kPages)
                        .out(kDonePort)
                        .touch_pages(kFirst, kPages)
                        .out(kDonePort + 1)
                        .touch_pages(kFirst, kPages)
                        .out(kDonePort + 2));
    std::memset(t.host(kFirst), 0xAA, kPages * kPage);
    (void)t.vm.dirty_log(0, kMemSize);  // start clean

    // First pass: the guest maps the pages writable in KVM's page tables.
    auto t0 = std::chrono::steady_clock::now();
    auto port = t.run();
    const double plain = since(t0);
    REQUIRE_MESSAGE(port.ok(), why(port));
    REQUIRE(*port == kDonePort);
    CHECK(t.host(kFirst)[0] == 1);
    auto log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    auto pages = dirty_pages(*log);
    std::vector<uint64_t> touched;
    for (uint64_t p = kFirst / kPage; p < kFirst / kPage + kPages; ++p) touched.push_back(p);
    std::vector<uint64_t> extra;
    for (auto p : pages)
        if (p < kFirst / kPage || p >= kFirst / kPage + kPages) extra.push_back(p);
    std::string extra_s;
    for (auto p : extra) extra_s += " " + hex(p * kPage);
    // Extra pages are expected: the page tables (A/D bits) and, with shadow
    // paging, pages only read through a guest mapping that is already dirty
    // (KVM maps those writable and counts them). Over-reporting is safe.
    MESSAGE("dirty pages besides the " << kPages << " written:" << extra_s);
    CHECK(pages.size() - extra.size() == kPages);

    // Second pass with the pages write-protected: KVM must drop its writable
    // mappings (mmu notifier) and fault each page through the uffd.
    auto u = Userfault::create(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
    REQUIRE(u.ok());
    REQUIRE(u->register_range(t.mem.host_base(), kMemSize, UffdMode::wp).ok());
    std::memset(t.host(kFirst), 0xAA, kPages * kPage);
    REQUIRE(u->write_protect(t.host(kFirst), kPages * kPage, true).ok());
    std::vector<uint8_t> saved(kPages * kPage);
    std::atomic<int> faults{0};
    Handler h{*u,
              [&](const ckpt::UffdFault& f) {
                  const uint64_t off = f.address - reinterpret_cast<uint64_t>(t.host(kFirst));
                  if (off < saved.size()) std::memcpy(saved.data() + off, reinterpret_cast<void*>(f.address), kPage);
                  (void)u->write_protect(reinterpret_cast<void*>(f.address), kPage, false);
                  faults += f.wp;
              },
              [&] { (void)u->write_protect(t.mem.host_base(), kMemSize, false); }};
    h.begin();
    t0 = std::chrono::steady_clock::now();
    port = t.run();
    const double wp = since(t0);
    h.end();
    REQUIRE_MESSAGE(port.ok(), why(port));
    CHECK(*port == kDonePort + 1);
    CHECK_FALSE(h.rescued.load());
    CHECK(faults == kPages);
    CHECK(saved[0] == 0xAA);
    CHECK(saved[(kPages - 1) * kPage] == 0xAA);
    CHECK(t.host(kFirst + (kPages - 1) * kPage)[0] == 1);
    MESSAGE("native guest writes, " << kPages << " pages: " << plain * 1e6 / kPages << " us/page first touch, "
            << wp * 1e6 / kPages << " us/page write-protected (fault -> handler copies 4 KiB -> unprotect -> resume)");

    // The dirty log saw the second pass too (the host memsets did not count).
    log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    pages = dirty_pages(*log);
    CHECK(std::includes(pages.begin(), pages.end(), touched.begin(), touched.end()));

    // Third pass, nothing protected: the dirty log must re-arm for native writes.
    t0 = std::chrono::steady_clock::now();
    port = t.run();
    MESSAGE("native guest writes with dirty logging re-armed: " << since(t0) * 1e6 / kPages << " us/page");
    REQUIRE(port.ok());
    CHECK(*port == kDonePort + 2);
    log = t.vm.dirty_log(0, kMemSize);
    REQUIRE(log.ok());
    pages = dirty_pages(*log);
    CHECK(std::includes(pages.begin(), pages.end(), touched.begin(), touched.end()));
}

TEST_CASE("kvm probe: native guest user code: missing pages served by UFFDIO_COPY")
{
    SKIP_WITHOUT_KVM(t);
    REQUIRE(t.vm.set_memory_region(0, 0, kMemSize, t.mem.host_base()).ok());
    start_user64(t, Code64().load_eax(0x20008).store_eax(0x21000).out(kDonePort));  // tables and code present
    auto u = Userfault::create(UFFD_FEATURE_MISSING_SHMEM);
    REQUIRE(u.ok());
    REQUIRE(u->register_range(t.mem.host_base(), kMemSize, UffdMode::missing).ok());
    std::vector<uint8_t> image(kPage, 0);
    const uint32_t value = 0x600DF00D;
    std::memcpy(image.data() + 8, &value, 4);
    std::vector<std::pair<uint64_t, bool>> faults;
    Handler h{*u,
              [&](const ckpt::UffdFault& f) {
                  const uint64_t gpa = f.address - reinterpret_cast<uint64_t>(t.mem.host_base());
                  faults.emplace_back(gpa, f.write);
                  if (gpa == 0x20000) (void)u->copy(reinterpret_cast<void*>(f.address), image.data(), kPage);
                  else (void)u->zeropage(reinterpret_cast<void*>(f.address), kPage);
              },
              [&] { (void)u->zeropage(t.mem.host_base(), kMemSize); }};
    h.begin();
    auto port = t.run();
    h.end();
    REQUIRE_MESSAGE(port.ok(), why(port));
    CHECK(*port == kDonePort);
    CHECK_FALSE(h.rescued.load());
    std::string seen;
    for (auto [gpa, w] : faults) seen += " " + hex(gpa) + (w ? "(w)" : "(r)");
    MESSAGE("native missing faults at:" << seen);
    REQUIRE(faults.size() >= 2);
    CHECK(faults[0].first == 0x20000);
    CHECK(faults[1].first == 0x21000);
    auto regs = t.vcpu->regs();
    REQUIRE(regs.ok());
    CHECK(uint32_t(regs->rax) == value);
    uint32_t stored;
    std::memcpy(&stored, t.host(0x21000), 4);
    CHECK(stored == value);
}
