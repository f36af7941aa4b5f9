#include "devices/i8042.hpp"

namespace vvmm::dev {
namespace {
constexpr uint64_t kData = 0, kStatus = 4;
constexpr uint8_t kStatusOutputFull = 0x01, kStatusSystem = 0x04;
constexpr uint8_t kCmdReadCommandByte = 0x20, kCmdWriteCommandByte = 0x60, kCmdSelfTest = 0xAA,
                  kCmdAuxTest = 0xA9, kCmdKbdTest = 0xAB, kCmdWriteOutputPort = 0xD1, kCmdPulseReset = 0xFE;
}  // namespace

void I8042::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(mutex_);
    uint8_t v = 0;
    if (offset == kStatus) {
        v = static_cast<uint8_t>((output_.empty() ? 0 : kStatusOutputFull) | kStatusSystem);
    } else if (offset == kData && !output_.empty()) {
        v = output_.front();
        output_.pop_front();
    }
    for (auto& b : data) b = 0;
    if (!data.empty()) data[0] = v;
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data)
{
    if (data.empty()) return;
    bool reset = false;
    {
        std::lock_guard lock(mutex_);
        if (offset == kStatus) {
            reset = data[0] == kCmdPulseReset;
            if (!reset) command(data[0]);
        } else if (offset == kData) {
            // Output port bit 0 low holds the CPU in reset.
            reset = pending_command_ == kCmdWriteOutputPort && !(data[0] & 1);
            data_write(data[0]);
        }
    }
    if (reset) on_reset_();
}

void I8042::command(uint8_t cmd)
{
    switch (cmd) {
    case kCmdReadCommandByte: output_.push_back(command_byte_); break;
    case kCmdSelfTest: output_.push_back(0x55); break;
    case kCmdAuxTest:
    case kCmdKbdTest: output_.push_back(0x00); break;
    case kCmdWriteCommandByte:
    case kCmdWriteOutputPort: pending_command_ = cmd; break;
    default: break;  // enable/disable port and the like: nothing attached, nothing to do
    }
}

void I8042::data_write(uint8_t value)
{
    if (pending_command_ == kCmdWriteCommandByte) command_byte_ = value;
    pending_command_ = 0;  // bytes for the (absent) keyboard are dropped
}

Result<void> I8042::save(StateWriter& out) const
{
    std::lock_guard lock(mutex_);
    out.bytes(std::vector<uint8_t>(output_.begin(), output_.end()));
    out.u8(command_byte_);
    out.u8(pending_command_);
    return ok();
}

Result<void> I8042::restore(StateReader& in, uint16_t)
{
    std::lock_guard lock(mutex_);
    TRY_ASSIGN(auto output, in.bytes(16));
    TRY_ASSIGN(command_byte_, in.u8());
    TRY_ASSIGN(pending_command_, in.u8());
    TRY(in.expect_end());
    output_.assign(output.begin(), output.end());
    return ok();
}

}  // namespace vvmm::dev
