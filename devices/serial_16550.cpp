#include "devices/serial_16550.hpp"

namespace vvmm::dev {

void Serial16550::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(mutex_);
    for (auto& b : data) b = 0;
    if (!data.empty()) data[0] = read_register(offset);  // byte-wide registers
    update_irq();
}

void Serial16550::write(uint64_t offset, std::span<const uint8_t> data)
{
    if (data.empty()) return;
    std::lock_guard lock(mutex_);
    write_register(offset, data[0]);
    update_irq();
}

size_t Serial16550::push_input(std::span<const uint8_t> bytes)
{
    std::lock_guard lock(mutex_);
    size_t n = 0;
    while (n < bytes.size() && rx_.size() < kInputCapacity) rx_.push_back(bytes[n++]);
    update_irq();
    return n;
}

uint8_t Serial16550::read_register(uint64_t offset)
{
    const bool dlab = lcr_ & kLcrDlab;
    switch (offset) {
    case 0:
        if (dlab) return dll_;
        if (rx_.empty()) return 0;
        {
            const uint8_t b = rx_.front();
            rx_.pop_front();
            return b;
        }
    case 1:
        return dlab ? dlm_ : ier_;
    case 2: {
        const uint8_t id = interrupt_id();
        if (id == kIirThre) thre_pending_ = false;  // reading IIR acknowledges THRE
        return static_cast<uint8_t>(id | (fifo_enabled_ ? kIirFifo : 0));
    }
    case 3:
        return lcr_;
    case 4:
        return mcr_;
    case 5:
        return static_cast<uint8_t>((rx_.empty() ? 0 : kLsrDataReady) | kLsrThre | kLsrTemt);
    case 6:
        if (loopback()) {
            // Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
            return static_cast<uint8_t>(((mcr_ & 0x02) << 3) | ((mcr_ & 0x01) << 5) | ((mcr_ & 0x04) << 4) |
                                        ((mcr_ & 0x08) << 4));
        }
        return 0xB0;  // DCD, DSR, CTS: a terminal is always there
    case 7:
        return scr_;
    default:
        return 0xff;
    }
}

void Serial16550::write_register(uint64_t offset, uint8_t value)
{
    const bool dlab = lcr_ & kLcrDlab;
    switch (offset) {
    case 0:
        if (dlab) {
            dll_ = value;
        } else {
            if (loopback()) {
                if (rx_.size() < kInputCapacity) rx_.push_back(value);
            } else {
                transmit_(value);
            }
            thre_pending_ = true;  // the byte left at once: THR is empty again
        }
        break;
    case 1:
        if (dlab) {
            dlm_ = value;
        } else {
            const uint8_t old = ier_;
            ier_ = value & 0x0f;
            if ((ier_ & kIerThre) && !(old & kIerThre)) thre_pending_ = true;
        }
        break;
    case 2:
        fifo_enabled_ = value & 0x01;
        if (value & 0x02) rx_.clear();
        break;
    case 3:
        lcr_ = value;
        break;
    case 4:
        mcr_ = value & 0x1f;
        break;
    case 7:
        scr_ = value;
        break;
    default:
        break;  // LSR and MSR are read-only
    }
}

uint8_t Serial16550::interrupt_id() const
{
    if ((ier_ & kIerRx) && !rx_.empty()) return kIirRx;
    if ((ier_ & kIerThre) && thre_pending_) return kIirThre;
    return kIirNone;
}

Result<void> Serial16550::save(StateWriter& out) const
{
    std::lock_guard lock(mutex_);
    for (uint8_t r : {ier_, lcr_, mcr_, scr_, dll_, dlm_}) out.u8(r);
    out.boolean(fifo_enabled_);
    out.boolean(thre_pending_);
    out.boolean(irq_asserted_);
    out.bytes(std::vector<uint8_t>(rx_.begin(), rx_.end()));
    return ok();
}

Result<void> Serial16550::restore(StateReader& in, uint16_t)
{
    std::lock_guard lock(mutex_);
    for (uint8_t* r : {&ier_, &lcr_, &mcr_, &scr_, &dll_, &dlm_}) {
        TRY_ASSIGN(*r, in.u8());
    }
    TRY_ASSIGN(fifo_enabled_, in.boolean());
    TRY_ASSIGN(thre_pending_, in.boolean());
    TRY_ASSIGN(bool asserted, in.boolean());
    TRY_ASSIGN(auto rx, in.bytes(kInputCapacity));
    TRY(in.expect_end());
    rx_.assign(rx.begin(), rx.end());
    // KVM keeps its own per-source level for a shared line, outside the
    // irqchip state: drive the line again.
    irq_asserted_ = !asserted;
    update_irq();
    return ok();
}

void Serial16550::update_irq()
{
    // On a PC, OUT2 gates the UART's interrupt onto the ISA bus.
    const bool level = interrupt_id() != kIirNone && (mcr_ & kMcrOut2);
    if (level != irq_asserted_) {
        irq_asserted_ = level;
        irq_(level);
    }
}

}  // namespace vvmm::dev
