#include <doctest/doctest.h>

#include "vmm/base/le.hpp"
#include "vmm/memory_layout.hpp"
#include "vmm/mp_table.hpp"

using namespace vvmm;
using namespace vvmm::vmm;

namespace {
uint8_t sum(const uint8_t* p, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + p[i]);
    return s;
}
}  // namespace

TEST_CASE("MP table structure and checksums")
{
    for (unsigned cpus : {1u, 2u, 4u, 32u}) {
        CAPTURE(cpus);
        auto r = build_mp_table(cpus, 0x9fc00);
        REQUIRE(r.ok());
        const auto& t = r.value();
        REQUIRE(t.size() <= 1024);
        CHECK(std::string(t.begin(), t.begin() + 4) == "_MP_");
        CHECK(le32(t, 4) == 0x9fc00 + 16);
        CHECK(sum(t.data(), 16) == 0);
        const uint8_t* h = t.data() + 16;
        CHECK(std::string(h, h + 4) == "PCMP");
        const uint16_t len = load_le<uint16_t>(h + 4);
        CHECK(len == t.size() - 16);
        CHECK(sum(h, len) == 0);
        CHECK(load_le<uint32_t>(h + 36) == layout::kLapicBase);
        const uint16_t count = load_le<uint16_t>(h + 34);
        // Walk the entries: processors first, APIC ids 0..n-1, BSP flagged once.
        const uint8_t* e = h + 44;
        unsigned procs = 0, bsps = 0, ioapics = 0, intsrc = 0, lint = 0;
        for (unsigned i = 0; i < count; ++i) {
            switch (e[0]) {
            case 0:
                CHECK(e[1] == procs);
                CHECK((e[3] & 1) == 1);
                bsps += (e[3] & 2) ? 1 : 0;
                ++procs;
                e += 20;
                break;
            case 2:
                CHECK(e[1] == mp_ioapic_id(cpus));
                CHECK(load_le<uint32_t>(e + 4) == layout::kIoApicBase);
                ++ioapics;
                e += 8;
                break;
            case 3:
                CHECK(e[5] == e[7]);  // ISA irq n -> pin n
                ++intsrc;
                e += 8;
                break;
            case 4:
                ++lint;
                e += 8;
                break;
            default:
                e += 8;
            }
        }
        CHECK(e == h + len);
        CHECK(procs == cpus);
        CHECK(bsps == 1);
        CHECK(ioapics == 1);
        CHECK(intsrc == 16);
        CHECK(lint == 2);
    }
    CHECK_FALSE(build_mp_table(0, 0x9fc00).ok());
    CHECK_FALSE(build_mp_table(33, 0x9fc00).ok());
}
