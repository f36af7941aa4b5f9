// bench/parity_encode: parity encoding throughput per core (ckpt/parity_codec,
// ISA-L) against memcpy of the same bytes, for the redundancies a diskless
// cluster uses: XOR over a set, and Reed-Solomon with 2 parity blocks, full
// encodes and dirty-page delta updates. Medians of --runs runs; one thread.
// Goal (issue 12): encoding >= 5 GB/s per core of data encoded.
//
//   build/bench-parity-encode [--runs 5] [--set 4] [--mib 64]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "ckpt/parity_codec.hpp"

using namespace vvmm;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// GB/s of `bytes` per call of `fn`, median of `runs`.
double throughput(unsigned runs, double bytes, const std::function<void()>& fn)
{
    fn();  // warm caches and page tables
    std::vector<double> rates;
    for (unsigned r = 0; r < runs; ++r) {
        const auto t0 = Clock::now();
        fn();
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        rates.push_back(bytes / s / 1e9);
    }
    return median(rates);
}

}  // namespace

int main(int argc, char** argv)
{
    unsigned runs = 5, set = 4, mib = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        const unsigned v = static_cast<unsigned>(std::strtoul(argv[i + 1], nullptr, 10));
        if (flag == "--runs") runs = std::max(1u, v);
        else if (flag == "--set") set = std::clamp(v, 1u, ckpt::ParityCodec::kMaxData);
        else if (flag == "--mib") mib = std::clamp(v, 1u, 1024u);
        else {
            std::fprintf(stderr, "usage: %s [--runs N] [--set N] [--mib N]\n", argv[0]);
            return 2;
        }
    }
    const size_t len = size_t{mib} << 20;  // per block
    std::mt19937_64 rng(1);
    std::vector<std::vector<uint8_t>> data(set, std::vector<uint8_t>(len)), parity(2, std::vector<uint8_t>(len));
    for (auto& b : data)
        for (size_t i = 0; i < len; i += 8) {
            const uint64_t x = rng();
            std::memcpy(&b[i], &x, std::min<size_t>(8, len - i));
        }
    std::vector<const uint8_t*> in;
    for (auto& b : data) in.push_back(b.data());
    std::vector<uint8_t*> out = {parity[0].data(), parity[1].data()};
    const double all = double(len) * set;

    const double copy = throughput(runs, all, [&] {
        for (unsigned i = 0; i < set; ++i) std::memcpy(parity[i % 2].data(), data[i].data(), len);
    });
    std::printf("parity encode, %u blocks of %u MiB, median of %u runs, one core\n", set, mib, runs);
    std::printf("  memcpy               %6.2f GB/s\n", copy);
    for (auto [name, kind, k] : {std::tuple{"xor", ckpt::ParityCodec::Kind::xor_parity, 1u},
                                 std::tuple{"rs:2", ckpt::ParityCodec::Kind::reed_solomon, 2u}}) {
        auto codec = ckpt::ParityCodec::create(kind, set, k).value();
        const double full = throughput(runs, all, [&] { codec.encode(in, {out.data(), k}, len); });
        // A dirty page's delta folded into the parity: 4 KiB at a time, as an epoch sends them.
        const double delta = throughput(runs, double(len), [&] {
            uint8_t* targets[2];
            for (size_t off = 0; off < len; off += 4096) {
                targets[0] = out[0] + off;
                targets[1] = out[1] + off;
                codec.update(0, data[0].data() + off, {targets, k}, 4096);
            }
        });
        std::printf("  %-5s full encode    %6.2f GB/s (%.2fx memcpy)\n", name, full, full / copy);
        std::printf("  %-5s 4 KiB updates  %6.2f GB/s (%.2fx memcpy)\n", name, delta, delta / copy);
    }
    return 0;
}
