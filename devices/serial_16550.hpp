// A 16550A UART as on a PC's COM1: enough of the register file for Linux's
// 8250 driver (probe, loopback test, FIFO detection, interrupts) and for
// polling drivers. The register logic is pure; output and the IRQ line are
// callbacks so it is unit-tested without KVM.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

#include "vmm/base/snapshottable.hpp"
#include "vmm/io_bus.hpp"

namespace vvmm::dev {

class Serial16550 : public vmm::BusDevice, public Snapshottable {
public:
    using Transmit = std::function<void(uint8_t)>;
    using IrqLevel = std::function<void(bool)>;
    static constexpr size_t kInputCapacity = 1024;

    Serial16550(Transmit transmit, IrqLevel irq) : transmit_(std::move(transmit)), irq_(std::move(irq)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host side: queue bytes typed for the guest. Returns how many fitted.
    size_t push_input(std::span<const uint8_t> bytes);

    std::string_view section() const override { return "serial-com1"; }
    uint16_t version() const override { return 1; }
    Result<void> save(StateWriter& out) const override;
    Result<void> restore(StateReader& in, uint16_t version) override;

private:
    uint8_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint8_t value);
    uint8_t interrupt_id() const;
    void update_irq();
    bool loopback() const { return mcr_ & kMcrLoop; }

    static constexpr uint8_t kLcrDlab = 0x80, kMcrLoop = 0x10, kMcrOut2 = 0x08;
    static constexpr uint8_t kIerRx = 0x01, kIerThre = 0x02;
    static constexpr uint8_t kIirNone = 0x01, kIirThre = 0x02, kIirRx = 0x04, kIirFifo = 0xC0;
    static constexpr uint8_t kLsrDataReady = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;

    mutable std::mutex mutex_;
    Transmit transmit_;
    IrqLevel irq_;
    std::deque<uint8_t> rx_;
    uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = kMcrOut2, scr_ = 0;
    uint8_t dll_ = 0x0C, dlm_ = 0;  // 9600 baud, as after reset
    bool fifo_enabled_ = false;
    bool thre_pending_ = false;     // "THR empty" interrupt not yet acknowledged
    bool irq_asserted_ = false;
};

}  // namespace vvmm::dev
