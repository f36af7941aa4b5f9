#include "vmm/machine.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "vmm/cpuid.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {
namespace {

// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does
// nothing: the point is the EINTR (and immediate_exit closes the race).
int kick_signal() { return SIGRTMIN; }

void install_kick_handler()
{
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_handler = [](int) {};
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
        sigaction(kick_signal(), &sa, nullptr);
    });
}

const char* exit_reason_name(uint32_t r)
{
    switch (r) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_IO: return "KVM_EXIT_IO";
    case KVM_EXIT_HYPERCALL: return "KVM_EXIT_HYPERCALL";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "KVM_EXIT_IRQ_WINDOW_OPEN";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTR: return "KVM_EXIT_INTR";
    case KVM_EXIT_SET_TPR: return "KVM_EXIT_SET_TPR";
    case KVM_EXIT_TPR_ACCESS: return "KVM_EXIT_TPR_ACCESS";
    case KVM_EXIT_NMI: return "KVM_EXIT_NMI";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    case KVM_EXIT_X86_RDMSR: return "KVM_EXIT_X86_RDMSR";
    case KVM_EXIT_X86_WRMSR: return "KVM_EXIT_X86_WRMSR";
    default: return "unknown exit";
    }
}

// Initial MSR values (as after a reset, with fast strings and write-back MTRRs
// so a Linux guest does not run with uncached memory).
std::vector<kvm_msr_entry> boot_msrs(const std::vector<uint32_t>& supported)
{
    const std::pair<uint32_t, uint64_t> wanted[] = {
        {0x174, 0}, {0x175, 0}, {0x176, 0},                          // SYSENTER_CS/ESP/EIP
        {0xC0000081, 0}, {0xC0000082, 0}, {0xC0000083, 0},           // STAR, LSTAR, CSTAR
        {0xC0000084, 0}, {0xC0000102, 0},                            // SFMASK, KERNEL_GS_BASE
        {0x1A0, 1},                                                   // MISC_ENABLE: fast strings
        {0x2FF, (1u << 11) | 6},                                      // MTRRdefType: enabled, WB
    };
    std::vector<kvm_msr_entry> out;
    for (const auto& [index, value] : wanted) {
        if (std::find(supported.begin(), supported.end(), index) == supported.end()) continue;
        kvm_msr_entry e{};
        e.index = index;
        e.data = value;
        out.push_back(e);
    }
    return out;
}

std::string hex(uint64_t v)
{
    std::ostringstream s;
    s << "0x" << std::hex << v;
    return s.str();
}

}  // namespace

Machine::Machine(KvmVm vm, GuestMemory memory) : vm_(std::move(vm)), memory_(std::move(memory)) {}

Machine::~Machine()
{
    if (!threads_.empty()) {
        request_exit({1, "machine destroyed"});
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }
}

Result<std::unique_ptr<Machine>> Machine::create(const KvmSystem& kvm, unsigned cpus, uint64_t mem_size, bool huge_pages)
{
    TRY_ASSIGN(auto vm, KvmVm::create(kvm));
    TRY_ASSIGN(auto memory, GuestMemory::create(mem_size, huge_pages));
    TRY(memory.register_with(vm));
    std::unique_ptr<Machine> m(new Machine(std::move(vm), std::move(memory)));
    TRY_ASSIGN(auto supported, kvm.supported_cpuid());
    TRY_ASSIGN(auto msr_list, kvm.msr_index_list());
    for (unsigned i = 0; i < cpus; ++i) {
        TRY_ASSIGN(auto vcpu, KvmVcpu::create(kvm, m->vm_, i));
        m->vcpus_.push_back(std::make_unique<KvmVcpu>(std::move(vcpu)));
        TRY(m->init_vcpu(*m->vcpus_.back(), cpus, supported, msr_list));
    }
    return m;
}

Result<void> Machine::init_vcpu(KvmVcpu& vcpu, unsigned cpus, const std::vector<kvm_cpuid_entry2>& supported,
                                const std::vector<uint32_t>& msr_list)
{
    const std::string who = "vCPU " + std::to_string(vcpu.index());
    if (auto r = vcpu.set_cpuid(vcpu_cpuid(supported, vcpu.index(), cpus)); !r)
        return r.error().context(who);
    if (auto r = vcpu.set_msrs(boot_msrs(msr_list)); !r) return r.error().context(who);
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    if (auto r = vcpu.set_fpu(fpu); !r) return r.error().context(who);
    // Local interrupt pins as on a PC: LINT0 = ExtINT (the PIC), LINT1 = NMI.
    TRY_ASSIGN(auto lapic, vcpu.lapic());
    auto set_lvt = [&](size_t off, uint32_t mode) {
        uint32_t v;
        std::memcpy(&v, lapic.regs + off, 4);
        v = (v & ~0x700u) | (mode << 8);
        std::memcpy(lapic.regs + off, &v, 4);
    };
    set_lvt(0x350, 7);
    set_lvt(0x360, 4);
    if (auto r = vcpu.set_lapic(lapic); !r) return r.error().context(who);
    return ok();
}

MachineExit Machine::run()
{
    install_kick_handler();
    {
        std::lock_guard lock(threads_mutex_);
        for (auto& v : vcpus_) threads_.emplace_back([this, vcpu = v.get()] { vcpu_loop(*vcpu); });
        thread_count_ = threads_.size();
    }
    {
        std::unique_lock lock(exit_mutex_);
        exit_cv_.wait(lock, [&] { return exit_.has_value(); });
    }
    {
        std::lock_guard lock(threads_mutex_);
        kick_locked();
        joining_ = true;
    }
    for (auto& t : threads_) t.join();
    std::lock_guard lock(threads_mutex_);
    threads_.clear();
    thread_count_ = 0;
    joining_ = false;
    return *exit_;
}

void Machine::request_exit(MachineExit reason)
{
    {
        std::lock_guard lock(exit_mutex_);
        if (exit_) return;
        exit_ = std::move(reason);
        stopping_ = true;
    }
    exit_cv_.notify_all();
    pause_cv_.notify_all();
    kick_all();
}

void Machine::pause()
{
    std::unique_lock lock(pause_mutex_);
    pause_requested_ = true;
    kick_all();
    pause_cv_.wait(lock, [&] { return parked_ == thread_count_ || stopping_; });
}

void Machine::resume()
{
    {
        std::lock_guard lock(pause_mutex_);
        pause_requested_ = false;
    }
    pause_cv_.notify_all();
}

void Machine::park(KvmVcpu& vcpu)
{
    // KVM completes a pending IN/MMIO read only on the next KVM_RUN; with
    // immediate_exit set it does that and returns EINTR without running
    // guest code. A string instruction may exit again: handle and repeat.
    kvm_run* run = vcpu.run_page();
    for (;;) {
        run->immediate_exit = 1;
        const int r = ::ioctl(vcpu.fd(), KVM_RUN, 0);
        run->immediate_exit = 0;
        if (r < 0) break;
        if (!handle_exit(vcpu)) return;
    }
    std::unique_lock lock(pause_mutex_);
    ++parked_;
    pause_cv_.notify_all();
    pause_cv_.wait(lock, [&] { return !pause_requested_ || stopping_; });
    --parked_;
}

void Machine::kick_all()
{
    std::lock_guard lock(threads_mutex_);
    if (!joining_) kick_locked();
}

void Machine::kick_locked()
{
    // Setting immediate_exit on a vCPU that is between KVM_RUN calls makes
    // its next entry return at once, so a kick is never lost.
    for (size_t i = 0; i < threads_.size() && i < vcpus_.size(); ++i) {
        vcpus_[i]->run_page()->immediate_exit = 1;
        pthread_kill(threads_[i].native_handle(), kick_signal());
    }
}

void Machine::vcpu_loop(KvmVcpu& vcpu)
{
    // A vCPU that is waiting for INIT/SIPI may have KVM_RUN return EAGAIN
    // instead of blocking: retry, backing off so an idle AP costs little.
    unsigned eagain_streak = 0;
    while (!stopping_) {
        if (pause_requested_) {
            park(vcpu);
            continue;
        }
        if (::ioctl(vcpu.fd(), KVM_RUN, 0) < 0) {
            if (errno == EINTR) {
                vcpu.run_page()->immediate_exit = 0;
                continue;
            }
            if (errno == EAGAIN) {
                ++eagain_streak;
                struct timespec ts{0, eagain_streak < 200 ? 20'000L : 1'000'000L};
                nanosleep(&ts, nullptr);
                continue;
            }
            fatal_exit(vcpu, std::string("KVM_RUN failed: ") + std::strerror(errno));
            return;
        }
        eagain_streak = 0;
        if (!handle_exit(vcpu)) return;
    }
}

bool Machine::handle_exit(KvmVcpu& vcpu)
{
    kvm_run* run = vcpu.run_page();
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(run);
        return true;
    case KVM_EXIT_MMIO:
        handle_mmio(run);
        return true;
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_SHUTDOWN:
        fatal_exit(vcpu, "triple fault (KVM_EXIT_SHUTDOWN)");
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET || run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
            request_exit({0, ""});
            return false;
        }
        fatal_exit(vcpu, "system event " + std::to_string(run->system_event.type) + " (KVM_EXIT_SYSTEM_EVENT)");
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        fatal_exit(vcpu, "KVM internal error, suberror " + std::to_string(run->internal.suberror) +
                             " (KVM_EXIT_INTERNAL_ERROR)");
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        fatal_exit(vcpu, "VM entry failed, reason " + hex(run->fail_entry.hardware_entry_failure_reason) +
                             " (KVM_EXIT_FAIL_ENTRY)");
        return false;
    default:
        fatal_exit(vcpu, std::string("unhandled exit ") + std::to_string(run->exit_reason) + " (" +
                             exit_reason_name(run->exit_reason) + ")");
        return false;
    }
}

void Machine::handle_io(kvm_run* run)
{
    auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
    for (uint32_t i = 0; i < run->io.count; ++i, data += run->io.size) {
        std::span<uint8_t> bytes(data, run->io.size);
        const bool handled = run->io.direction == KVM_EXIT_IO_OUT ? pio_.write(run->io.port, bytes)
                                                                  : pio_.read(run->io.port, bytes);
        if (!handled && log_level() >= LogLevel::debug)
            log_debug("guest accessed unassigned port " + hex(run->io.port));
    }
}

void Machine::handle_mmio(kvm_run* run)
{
    const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof run->mmio.data);
    std::span<uint8_t> bytes(run->mmio.data, len);
    const bool handled = run->mmio.is_write ? mmio_.write(run->mmio.phys_addr, bytes) : mmio_.read(run->mmio.phys_addr, bytes);
    if (!handled) unhandled_log_.warn("guest accessed unassigned MMIO address " + hex(run->mmio.phys_addr));
}

void Machine::fatal_exit(const KvmVcpu& vcpu, const std::string& what)
{
    std::string rip = "unknown";
    if (auto regs = vcpu.regs(); regs.ok()) rip = hex(regs.value().rip);
    request_exit({1, "vCPU " + std::to_string(vcpu.index()) + ": " + what + " at rip=" + rip});
}

}  // namespace vvmm::vmm
