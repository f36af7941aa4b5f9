// The legacy PC devices of a vvmm VM and where they sit: COM1 (0x3f8, IRQ 4)
// and the i8042 (0x60/0x64). PIC, IOAPIC, PIT and LAPICs are in KVM.
#pragma once

#include <memory>

#include "devices/host_console.hpp"
#include "devices/i8042.hpp"
#include "devices/serial_16550.hpp"
#include "vmm/machine.hpp"

namespace vvmm::dev {

class PcBoard {
public:
    static Result<std::unique_ptr<PcBoard>> create(vmm::Machine& machine, const ConsoleSpec& console);
    // Connects host input; call just before the vCPUs start.
    void start();

private:
    PcBoard() = default;
    std::unique_ptr<HostConsole> console_;
    std::shared_ptr<Serial16550> com1_;
    std::shared_ptr<I8042> i8042_;
};

}  // namespace vvmm::dev
