#include "ckpt/state_file.hpp"

#include <cstring>
#include <set>

namespace vvmm::ckpt {
namespace {
constexpr char kMagic[8] = {'V', 'V', 'M', 'M', 'S', 'T', 'A', 'T'};
constexpr uint32_t kMaxSections = 4096;
}  // namespace

Result<std::vector<Section>> capture_sections(std::span<Snapshottable* const> components)
{
    std::vector<Section> out;
    for (Snapshottable* c : components) {
        StateWriter w;
        if (auto r = c->save(w); !r) return r.error().context("saving " + std::string(c->section()));
        out.push_back({std::string(c->section()), c->version(), w.take()});
    }
    return out;
}

std::vector<uint8_t> encode_state(const std::vector<Section>& sections)
{
    StateWriter w;
    for (char c : kMagic) w.u8(static_cast<uint8_t>(c));
    w.u32(kStateFormatVersion);
    w.u32(static_cast<uint32_t>(sections.size()));
    for (const auto& s : sections) {
        w.string(s.name);
        w.u16(s.version);
        w.bytes(s.payload);
    }
    return w.take();
}

Result<std::vector<Section>> decode_state(std::span<const uint8_t> bytes)
{
    if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
        return Error("state.bin: not a vvmm state file");
    StateReader in(bytes.subspan(sizeof kMagic), "state.bin");
    TRY_ASSIGN(uint32_t format, in.u32());
    if (format != kStateFormatVersion)
        return Error("state.bin: format version " + std::to_string(format) + ", this vvmm reads version " +
                     std::to_string(kStateFormatVersion));
    TRY_ASSIGN(uint32_t n, in.u32());
    if (n > kMaxSections) return in.err(std::to_string(n) + " sections");
    std::vector<Section> out;
    std::set<std::string> seen;
    for (uint32_t i = 0; i < n; ++i) {
        Section s;
        TRY_ASSIGN(s.name, in.string(64));
        TRY_ASSIGN(s.version, in.u16());
        TRY_ASSIGN(auto payload, in.bytes());
        s.payload.assign(payload.begin(), payload.end());
        if (!seen.insert(s.name).second) return in.err("section '" + s.name + "' appears twice");
        out.push_back(std::move(s));
    }
    TRY(in.expect_end());
    return out;
}

Result<void> restore_sections(const std::vector<Section>& sections, std::span<Snapshottable* const> components)
{
    for (const auto& s : sections) {
        bool known = false;
        for (Snapshottable* c : components) known |= c->section() == s.name;
        if (!known) return Error("state.bin: unknown section '" + s.name + "' (this VM has no such device)");
    }
    for (Snapshottable* c : components) {
        const Section* s = nullptr;
        for (const auto& candidate : sections)
            if (candidate.name == c->section()) s = &candidate;
        if (!s) return Error("state.bin: section '" + std::string(c->section()) + "' is missing");
        if (s->version > c->version())
            return Error("state.bin: section '" + s->name + "' has version " + std::to_string(s->version) +
                         ", newer than this vvmm's " + std::to_string(c->version()));
        if (s->version == 0) return Error("state.bin: section '" + s->name + "' has version 0");
        StateReader in(s->payload, "section '" + s->name + "'");
        TRY(c->restore(in, s->version));
    }
    return ok();
}

}  // namespace vvmm::ckpt
