// The PC keyboard controller, for the one thing a VM needs from it: the CPU
// reset line (command 0xFE, which Linux uses with reboot=k). No keyboard or
// mouse is attached. Registered at ports 0x60..0x64 (offset 0 data, 4 status/command).
#pragma once

#include <deque>
#include <functional>
#include <mutex>

#include "vmm/base/snapshottable.hpp"
#include "vmm/io_bus.hpp"

namespace vvmm::dev {

class I8042 : public vmm::BusDevice, public Snapshottable {
public:
    explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    std::string_view section() const override { return "i8042"; }
    uint16_t version() const override { return 1; }
    Result<void> save(StateWriter& out) const override;
    Result<void> restore(StateReader& in, uint16_t version) override;

private:
    void command(uint8_t cmd);
    void data_write(uint8_t value);

    mutable std::mutex mutex_;
    std::function<void()> on_reset_;
    std::deque<uint8_t> output_;
    uint8_t command_byte_ = 0x61;  // kbd interrupt on, translation on, system flag
    uint8_t pending_command_ = 0;  // a command waiting for its data byte
};

}  // namespace vvmm::dev
