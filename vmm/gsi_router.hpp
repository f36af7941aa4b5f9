// The VM's interrupt routing table: KVM's default PIC/IOAPIC routes for GSIs
// 0..23 plus one MSI route per device vector. KVM_SET_GSI_ROUTING replaces
// the whole table, so it is kept here and committed whole.
#pragma once

#include <linux/kvm.h>

#include <map>
#include <mutex>

#include "vmm/base/result.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::vmm {

struct MsiMessage {
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const MsiMessage&) const = default;
};

class GsiRouter {
public:
    explicit GsiRouter(KvmVm& vm) : vm_(vm) {}
    // A fresh GSI for an MSI vector (>= 24, above the IOAPIC pins).
    uint32_t allocate_msi_gsi();
    // Points `gsi` at `msg` and commits the table if it changed.
    Result<void> set_msi(uint32_t gsi, const MsiMessage& msg);

    // The full table for the current MSI routes (pure, unit-tested).
    static std::vector<kvm_irq_routing_entry> table(const std::map<uint32_t, MsiMessage>& msi);

private:
    KvmVm& vm_;
    std::mutex mutex_;
    uint32_t next_gsi_ = 24;
    std::map<uint32_t, MsiMessage> msi_;
};

}  // namespace vvmm::vmm
