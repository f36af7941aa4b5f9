#include "vmm/mp_table.hpp"

#include <cstring>

#include "vmm/base/le.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {
namespace {

constexpr size_t kFloatingSize = 16;
constexpr size_t kHeaderSize = 44;
constexpr uint8_t kEntryProcessor = 0, kEntryBus = 1, kEntryIoApic = 2, kEntryIoInt = 3, kEntryLocalInt = 4;
constexpr uint8_t kIntTypeInt = 0, kIntTypeNmi = 1, kIntTypeExtInt = 3;
constexpr uint8_t kApicVersion = 0x14, kIoApicVersion = 0x11;
constexpr uint8_t kCpuEnabled = 1, kCpuBootstrap = 2;

class Writer {
public:
    explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) { put(v); }
    void u32(uint32_t v) { put(v); }
    void bytes(const char* s, size_t n) { out_.insert(out_.end(), s, s + n); }

private:
    template <typename T>
    void put(T v)
    {
        uint8_t b[sizeof(T)];
        store_le(b, v);
        out_.insert(out_.end(), b, b + sizeof b);
    }
    std::vector<uint8_t>& out_;
};

}  // namespace

uint8_t mp_checksum(const uint8_t* data, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; ++i) sum = static_cast<uint8_t>(sum + data[i]);
    return static_cast<uint8_t>(-sum);
}

Result<std::vector<uint8_t>> build_mp_table(unsigned cpus, uint32_t base)
{
    if (cpus == 0 || cpus > kMaxCpus) return Error("MP table: cpu count out of range");
    std::vector<uint8_t> t;
    Writer w(t);
    // Floating pointer structure.
    w.bytes("_MP_", 4);
    w.u32(base + kFloatingSize);  // physical address of the configuration table
    w.u8(1);                      // length in 16-byte units
    w.u8(4);                      // spec revision 1.4
    w.u8(0);                      // checksum, below
    for (int i = 0; i < 5; ++i) w.u8(0);  // feature bytes: a configuration table is present
    t[10] = mp_checksum(t.data(), kFloatingSize);

    // Configuration table header; length, count and checksum are patched below.
    const size_t hdr = t.size();
    w.bytes("PCMP", 4);
    w.u16(0);
    w.u8(4);
    w.u8(0);
    w.bytes("VVMM    ", 8);
    w.bytes("VVMM-PC     ", 12);
    w.u32(0);
    w.u16(0);
    w.u16(0);  // entry count
    w.u32(static_cast<uint32_t>(layout::kLapicBase));
    w.u16(0);
    w.u8(0);
    w.u8(0);
    uint16_t entries = 0;

    for (unsigned cpu = 0; cpu < cpus; ++cpu, ++entries) {
        w.u8(kEntryProcessor);
        w.u8(static_cast<uint8_t>(cpu));  // APIC id = vCPU index
        w.u8(kApicVersion);
        w.u8(kCpuEnabled | (cpu == 0 ? kCpuBootstrap : 0));
        w.u32(0x600);    // CPU signature: family 6
        w.u32(0x201);    // feature flags: FPU, APIC
        w.u32(0);
        w.u32(0);
    }
    w.u8(kEntryBus);
    w.u8(0);
    w.bytes("ISA   ", 6);
    ++entries;
    const uint8_t ioapic = mp_ioapic_id(cpus);
    w.u8(kEntryIoApic);
    w.u8(ioapic);
    w.u8(kIoApicVersion);
    w.u8(1);  // enabled
    w.u32(static_cast<uint32_t>(layout::kIoApicBase));
    ++entries;
    // ISA IRQ n arrives at IOAPIC pin n, as KVM's default GSI routing wires it.
    for (unsigned irq = 0; irq < 16; ++irq, ++entries) {
        w.u8(kEntryIoInt);
        w.u8(kIntTypeInt);
        w.u16(0);  // conforming polarity and trigger: ISA is edge, active high
        w.u8(0);   // bus 0 = ISA
        w.u8(static_cast<uint8_t>(irq));
        w.u8(ioapic);
        w.u8(static_cast<uint8_t>(irq));
    }
    // LINT0 is the PIC's ExtINT, LINT1 is NMI, on every local APIC (0xff).
    const uint8_t lint_types[2] = {kIntTypeExtInt, kIntTypeNmi};
    for (uint8_t lint = 0; lint < 2; ++lint, ++entries) {
        w.u8(kEntryLocalInt);
        w.u8(lint_types[lint]);
        w.u16(0);
        w.u8(0);
        w.u8(0);
        w.u8(0xff);
        w.u8(lint);
    }
    const uint16_t length = static_cast<uint16_t>(t.size() - hdr);
    store_le<uint16_t>(t.data() + hdr + 4, length);
    store_le<uint16_t>(t.data() + hdr + 34, entries);
    t[hdr + 7] = mp_checksum(t.data() + hdr, length);
    if (t.size() > layout::kBiosStart - layout::kEbdaStart) return Error("MP table does not fit in the EBDA");
    return t;
}

}  // namespace vvmm::vmm
