// A checkpoint is user input: state.bin, manifest.json and channels.bin must be refused,
// never crash or over-read, whatever their bytes. The first byte chooses the
// decoder (bit 0: manifest JSON, bit 1: channels.bin, else state.bin); state
// sections go into real device models.
#include <cstdint>
#include <cstddef>

#include "ckpt/manifest.hpp"
#include "net/channel_state.hpp"
#include "ckpt/state_file.hpp"
#include "devices/i8042.hpp"
#include "devices/pci/pci_bus.hpp"
#include "devices/serial_16550.hpp"

using namespace vvmm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size == 0) return 0;
    std::span<const uint8_t> rest(data + 1, size - 1);
    if (data[0] & 1) {
        auto j = nlohmann::json::parse(rest.begin(), rest.end(), nullptr, false);
        if (!j.is_discarded()) (void)ckpt::manifest_from_json(j);
        return 0;
    }
    if (data[0] & 2) {  // channels.bin of a cluster epoch
        (void)net::decode_channel_state(rest);
        return 0;
    }
    auto sections = ckpt::decode_state(rest);
    if (!sections) return 0;
    dev::Serial16550 serial([](uint8_t) {}, [](bool) {});
    dev::I8042 i8042([] {});
    dev::PciBus pci;
    Snapshottable* components[] = {&serial, &i8042, &pci};
    (void)ckpt::restore_sections(sections.value(), components);
    return 0;
}
