#include "devices/pc_board.hpp"

#include <nlohmann/json.hpp>

#include "devices/virtio/virtio_blk.hpp"
#include "devices/virtio/virtio_net.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::dev {
namespace {
constexpr uint64_t kCom1Port = 0x3f8;
constexpr uint32_t kCom1Irq = 4;
constexpr uint64_t kI8042Port = 0x60;
constexpr uint64_t kBarWindowEnd = vmm::layout::kIoApicBase;
}  // namespace

Result<std::unique_ptr<PcBoard>> PcBoard::create(vmm::Machine& machine, const BoardConfig& config)
{
    std::unique_ptr<PcBoard> b(new PcBoard(machine));
    TRY_ASSIGN(b->console_, HostConsole::create(config.console, [&machine] {
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

    b->pci_ = std::make_shared<PciBus>();
    TRY(machine.pio_bus().add(PciBus::kConfigAddressPort, 8, b->pci_));
    TRY_ASSIGN(b->io_, vmm::IoThread::create());
    if (!config.restored_disks.empty()) {
        for (const auto& d : config.restored_disks) {
            TRY_ASSIGN(auto chain, DiskChain::open(d, config.overlay_dir));
            b->blks_.push_back(VirtioBlk::create(std::move(chain)));
        }
    } else {
        for (const auto& disk : config.disks) {
            TRY_ASSIGN(auto blk, VirtioBlk::create(disk));
            b->blks_.push_back(std::move(blk));
        }
    }
    for (size_t i = 0; i < b->blks_.size(); ++i) TRY(b->add_virtio(b->blks_[i], "virtio-blk" + std::to_string(i)));
    for (size_t i = 0; i < config.nics.size(); ++i) {
        const auto& nic = config.nics[i];
        b->nets_.push_back(std::make_shared<VirtioNet>(nic.mac, nic.backend, *b->io_));
        TRY(b->add_virtio(b->nets_.back(), "virtio-net" + std::to_string(i)));
        b->backends_.push_back(nic.backend);
    }
    return b;
}

PcBoard::~PcBoard()
{
    // Nothing may call into a device once it is gone: stop its threads first.
    for (auto& backend : backends_) backend->stop();
    if (io_) io_->stop();
}

Result<void> PcBoard::add_virtio(std::shared_ptr<VirtioDevice> device, const std::string& section)
{
    // Firmware-style BAR assignment, so the guest finds them ready.
    const uint32_t bar = next_bar_;
    if (bar + vpci::kBarSize > kBarWindowEnd) return Error("no room left for PCI BARs");
    next_bar_ += vpci::kBarSize;
    VirtioPlatform platform{machine_.vm(), gsi_, machine_.mmio_bus(), *io_, machine_.memory()};
    TRY_ASSIGN(auto transport, VirtioPciTransport::create(std::move(device), platform, bar));
    transport->set_section_name(section);
    TRY(pci_->add(transport));
    virtio_.push_back(std::move(transport));
    return ok();
}

Result<void> PcBoard::start()
{
    console_->connect_input(*com1_);
    io_->start();
    for (auto& backend : backends_) TRY(backend->start());
    return ok();
}

std::vector<Snapshottable*> PcBoard::snapshot_components()
{
    std::vector<Snapshottable*> out{com1_.get(), i8042_.get(), pci_.get()};
    for (auto& t : virtio_) out.push_back(t.get());
    return out;
}

Result<std::vector<ChainDescription>> PcBoard::freeze_disks(const std::string& overlay_dir)
{
    std::vector<ChainDescription> out;
    for (auto& blk : blks_) {
        TRY_ASSIGN(auto d, blk->freeze(overlay_dir));
        out.push_back(std::move(d));
    }
    return out;
}

uint64_t PcBoard::spoofed_tx_dropped() const
{
    uint64_t n = 0;
    for (const auto& net : nets_) n += net->spoofed_tx_dropped();
    return n;
}

nlohmann::json PcBoard::report() const
{
    nlohmann::json devices = nlohmann::json::array(), network = nlohmann::json::array();
    for (const auto& t : virtio_) devices.push_back(t->report());
    for (const auto& b : backends_) network.push_back(b->report());
    return {{"devices", std::move(devices)}, {"network", std::move(network)}};
}

}  // namespace vvmm::dev
