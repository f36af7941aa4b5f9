// A VM's disks in a checkpoint. Commit: the overlay layers a checkpoint froze
// are hard-linked into its directory and named in the manifest. Restore: the
// manifest's layers become chains again, each on the base image it recorded.
#pragma once

#include <string>
#include <vector>

#include "ckpt/manifest.hpp"
#include "devices/disk_layers.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

// Links every layer of `chains` (and its page map) into `dir` as
// "disk<N>-<file>"; returns what the manifest records for each disk.
Result<std::vector<DiskLayers>> link_disk_layers(const std::vector<dev::ChainDescription>& chains,
                                                 const std::string& dir);

// The disks of a loaded checkpoint (manifest `m` of directory `dir`) as chains
// to open: the recorded base, size and mtime (checked when it is opened), the
// disk's options from the VM's description, the layers inside `dir`.
Result<std::vector<dev::ChainDescription>> restored_disk_chains(const Manifest& m, const std::string& dir);

}  // namespace vvmm::ckpt
