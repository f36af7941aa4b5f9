// The devices of a vvmm VM and where they sit: COM1 (0x3f8, IRQ 4), the
// i8042 (0x60/0x64), PCI bus 0 (conf1 at 0xCF8) with one virtio-pci device
// per disk and network card, BARs in the 32-bit hole. PIC, IOAPIC, PIT and
// LAPICs are in KVM. Also owns the I/O thread the virtio devices run on.
#pragma once

#include <memory>
#include <vector>

#include "devices/disk_image.hpp"
#include "devices/disk_layers.hpp"
#include "devices/host_console.hpp"
#include "devices/i8042.hpp"
#include "devices/pci/pci_bus.hpp"
#include "devices/serial_16550.hpp"
#include "devices/virtio/virtio_pci_transport.hpp"
#include "net/net_backend.hpp"
#include "vmm/gsi_router.hpp"
#include "vmm/io_thread.hpp"
#include "vmm/machine.hpp"

namespace vvmm::dev {

struct NicConfig {
    std::array<uint8_t, 6> mac;
    std::shared_ptr<net::NetBackend> backend;
};

struct BoardConfig {
    ConsoleSpec console;
    std::vector<DiskSpec> disks;
    std::vector<NicConfig> nics;
    // Restore: the disks' layer chains as a checkpoint recorded them (one
    // per disk, replacing `disks`), with new overlays in `overlay_dir`.
    std::vector<ChainDescription> restored_disks;
    std::string overlay_dir;
};

class VirtioBlk;
class VirtioNet;

class PcBoard {
public:
    static Result<std::unique_ptr<PcBoard>> create(vmm::Machine& machine, const BoardConfig& config);
    ~PcBoard();
    // Starts host input, the I/O thread and the network backends; call just before the vCPUs run.
    Result<void> start();

    // Every stateful device, each with a unique section name.
    std::vector<Snapshottable*> snapshot_components();
    // Checkpoint, devices quiesced: freeze every disk's top layer.
    Result<std::vector<ChainDescription>> freeze_disks(const std::string& overlay_dir);
    // Frames the guest sent with a source MAC not its own (dropped), all NICs.
    uint64_t spoofed_tx_dropped() const;
    // For `vvmm status`: every virtio device's queues and holds, and every
    // network backend's links (VirtioPciTransport::report, NetBackend::report).
    nlohmann::json report() const;

private:
    explicit PcBoard(vmm::Machine& machine) : machine_(machine), gsi_(machine.vm()) {}
    Result<void> add_virtio(std::shared_ptr<VirtioDevice> device, const std::string& section);

    vmm::Machine& machine_;
    vmm::GsiRouter gsi_;
    std::unique_ptr<vmm::IoThread> io_;
    std::unique_ptr<HostConsole> console_;
    std::shared_ptr<Serial16550> com1_;
    std::shared_ptr<I8042> i8042_;
    std::shared_ptr<PciBus> pci_;
    std::vector<std::shared_ptr<VirtioPciTransport>> virtio_;
    std::vector<std::shared_ptr<VirtioBlk>> blks_;
    std::vector<std::shared_ptr<VirtioNet>> nets_;
    std::vector<std::shared_ptr<net::NetBackend>> backends_;
    uint32_t next_bar_ = 0xC0000000;
};

}  // namespace vvmm::dev
