#include "devices/pc_board.hpp"

namespace vvmm::dev {
namespace {
constexpr uint64_t kCom1Port = 0x3f8;
constexpr uint32_t kCom1Irq = 4;
constexpr uint64_t kI8042Port = 0x60;
}  // namespace

Result<std::unique_ptr<PcBoard>> PcBoard::create(vmm::Machine& machine, const ConsoleSpec& console_spec)
{
    std::unique_ptr<PcBoard> b(new PcBoard());
    TRY_ASSIGN(b->console_, HostConsole::create(console_spec, [&machine] {
        machine.request_exit({0, "console: quit (Ctrl-A x)"});
    }));
    HostConsole* console = b->console_.get();
    b->com1_ = std::make_shared<Serial16550>([console](uint8_t byte) { console->write(byte); },
                                             [&machine](bool level) {
                                                 // Cannot fail for a valid ISA line on a live VM.
                                                 (void)machine.vm().set_irq_line(kCom1Irq, level);
                                             });
    TRY(machine.pio_bus().add(kCom1Port, 8, b->com1_));
    b->i8042_ = std::make_shared<I8042>([&machine] { machine.request_exit({0, ""}); });
    TRY(machine.pio_bus().add(kI8042Port, 5, b->i8042_));
    return b;
}

void PcBoard::start() { console_->connect_input(*com1_); }

}  // namespace vvmm::dev
