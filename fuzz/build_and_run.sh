#!/usr/bin/env bash
# Builds every fuzz/NAME_fuzz.cpp with clang++ and libFuzzer (+ASan, UBSan)
# into build-fuzz/, then runs each for a bounded time. Exits non-zero if a
# target fails to build, crashes, leaks, times out or trips a sanitizer; the
# input that did it is left in build-fuzz/artifacts/.
#
#   fuzz/build_and_run.sh [SECONDS] [NAME...]     # default: 60 s, every target
#
# Optional per target: fuzz/NAME.dict (libFuzzer dictionary) and
# fuzz/corpus/NAME/ (seed inputs, read-only; the growing corpus lives in
# build-fuzz/corpus/NAME/).
set -euo pipefail

# What each target links besides fuzz/NAME_fuzz.cpp, relative to the
# repository root. Adding a target = adding its file and one line here.
declare -A SOURCES=(
    [checkpoint_state]="vmm/vm_description.cpp vmm/base/size_parse.cpp vmm/memory_layout.cpp ckpt/state_file.cpp ckpt/manifest.cpp ckpt/manifest_seal.cpp vmm/base/crypto.cpp vmm/base/small_file.cpp net/channel_state.cpp devices/serial_16550.cpp devices/i8042.cpp devices/pci/pci_bus.cpp devices/pci/pci_config_space.cpp vmm/base/log.cpp"
    [cluster_input]="vmm/base/small_file.cpp coord/cluster_config.cpp coord/parity_placement.cpp vmm/base/duration_parse.cpp coord/cluster_manifest.cpp ckpt/manifest_seal.cpp vmm/base/crypto.cpp ckpt/checkpoint_dir.cpp net/net_spec.cpp vmm/base/size_parse.cpp vmm/memory_layout.cpp vmm/mp_table.cpp vmm/vm_description.cpp vmm/base/log.cpp"
    [control_socket]="control/control_server.cpp control/control_request.cpp vmm/base/log.cpp"
    [disk_layers]="devices/disk_layers.cpp devices/disk_image.cpp vmm/base/small_file.cpp vmm/base/log.cpp"
    [peer_decoder]="net/peer_protocol.cpp net/net_spec.cpp vmm/vm_description.cpp vmm/base/size_parse.cpp vmm/memory_layout.cpp"
    [peer_mesh]="vmm/vm_description.cpp vmm/base/size_parse.cpp vmm/memory_layout.cpp net/peer_mesh.cpp net/peer_mesh_links.cpp net/peer_mesh_traffic.cpp net/peer_mesh_epoch.cpp net/peer_protocol.cpp net/net_spec.cpp net/mac_table.cpp net/send_queue.cpp net/channel_cut.cpp net/channel_state.cpp net/tls_psk.cpp net/tls_link.cpp vmm/base/crypto.cpp vmm/base/log.cpp"
    [virtqueue]="devices/virtio/virtqueue.cpp vmm/guest_memory.cpp vmm/kvm_vm.cpp vmm/kvm_system.cpp vmm/memory_layout.cpp vmm/base/size_parse.cpp vmm/base/log.cpp"
    # fuzz/support/fake_kvm.cpp and fake_io_thread.cpp stand in for
    # vmm/kvm_vm.cpp, vmm/kvm_system.cpp and vmm/io_thread.cpp: no /dev/kvm,
    # no io_uring, nothing on another thread (fuzz/support/fuzz_platform.hpp).
    [virtio_blk]="devices/virtio/virtio_blk.cpp devices/virtio/virtqueue.cpp devices/disk_layers.cpp devices/disk_image.cpp vmm/guest_memory.cpp vmm/memory_layout.cpp vmm/base/size_parse.cpp vmm/base/small_file.cpp vmm/base/log.cpp fuzz/support/fake_kvm.cpp fuzz/support/fake_io_thread.cpp"
    [virtio_pci]="devices/virtio/virtio_pci_transport.cpp devices/virtio/virtio_blk.cpp devices/virtio/virtio_net.cpp devices/virtio/virtqueue.cpp devices/pci/msix.cpp devices/pci/pci_bus.cpp devices/pci/pci_config_space.cpp devices/disk_layers.cpp devices/disk_image.cpp vmm/gsi_router.cpp vmm/io_bus.cpp vmm/guest_memory.cpp vmm/memory_layout.cpp vmm/base/size_parse.cpp vmm/base/small_file.cpp vmm/base/log.cpp fuzz/support/fake_kvm.cpp fuzz/support/fake_io_thread.cpp"
    [virtio_restore]="devices/virtio/virtio_pci_transport.cpp devices/virtio/virtio_blk.cpp devices/virtio/virtio_net.cpp devices/virtio/virtqueue.cpp devices/pci/msix.cpp devices/pci/pci_config_space.cpp devices/disk_layers.cpp devices/disk_image.cpp vmm/gsi_router.cpp vmm/io_bus.cpp vmm/guest_memory.cpp vmm/memory_layout.cpp vmm/base/size_parse.cpp vmm/base/small_file.cpp vmm/base/log.cpp fuzz/support/fake_kvm.cpp fuzz/support/fake_io_thread.cpp"
)

# Flags a target needs besides the common ones: libraries it links, and for
# toml++ the same shared library vvmm links (its header-only build has debug
# assertions that the release library does not).
declare -A FLAGS=(
    [checkpoint_state]="-lcrypto"
    [cluster_input]="$(pkg-config --cflags --libs tomlplusplus 2>/dev/null || echo -DTOML_HEADER_ONLY=1) -lxxhash -lcrypto"
    [disk_layers]="-lxxhash"
    [peer_mesh]="-lssl -lcrypto"
    [virtio_blk]="-lxxhash"
    [virtio_pci]="-lxxhash"
    [virtio_restore]="-lxxhash"
)

SECONDS_PER_TARGET=${1:-60}
shift || true
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || (( SECONDS_PER_TARGET < 1 )); then
    echo "usage: $0 [SECONDS] [NAME...]  (SECONDS: a positive integer, got '$SECONDS_PER_TARGET')" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/build-fuzz"
CXX=${CXX_FUZZ:-clang++}
CXXFLAGS=(-std=c++20 -O1 -g -fno-omit-frame-pointer -I"$ROOT"
          -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

if ! command -v "$CXX" >/dev/null; then
    echo "error: $CXX not found (install clang; libFuzzer comes with it)" >&2
    exit 2
fi

if (( $# > 0 )); then
    names=("$@")
else
    names=()
    for f in "$ROOT"/fuzz/*_fuzz.cpp; do
        n=$(basename "$f" _fuzz.cpp)
        names+=("$n")
    done
fi

mkdir -p "$OUT/artifacts" "$OUT/logs"
failed=()
for name in "${names[@]}"; do
    src="$ROOT/fuzz/${name}_fuzz.cpp"
    if [[ ! -f $src ]]; then
        echo "error: no fuzz target $src" >&2
        failed+=("$name (no source)")
        continue
    fi
    if [[ ! -v SOURCES[$name] ]]; then
        echo "error: fuzz/${name}_fuzz.cpp has no line in the SOURCES table of $0" >&2
        failed+=("$name (not in table)")
        continue
    fi
    extra=()
    for s in ${SOURCES[$name]}; do extra+=("$ROOT/$s"); done

    bin="$OUT/${name}_fuzz"
    echo "== $name: building"
    flags=()
    [[ -v FLAGS[$name] ]] && read -ra flags <<< "${FLAGS[$name]}"
    if ! "$CXX" "${CXXFLAGS[@]}" "$src" "${extra[@]}" -o "$bin" -pthread "${flags[@]}" 2> "$OUT/logs/$name.build.log"; then
        tail -n 30 "$OUT/logs/$name.build.log" >&2
        failed+=("$name (build)")
        continue
    fi

    corpus="$OUT/corpus/$name"
    mkdir -p "$corpus"
    args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$OUT/artifacts/$name-" "$corpus")
    [[ -d $ROOT/fuzz/corpus/$name ]] && args+=("$ROOT/fuzz/corpus/$name")
    [[ -f $ROOT/fuzz/$name.dict ]] && args=(-dict="$ROOT/fuzz/$name.dict" "${args[@]}")

    echo "== $name: running for ${SECONDS_PER_TARGET} s (log: build-fuzz/logs/$name.run.log)"
    if "$bin" "${args[@]}" > "$OUT/logs/$name.run.log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$OUT/logs/$name.run.log" || true
        echo "== $name: ok, corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        tail -n 40 "$OUT/logs/$name.run.log" >&2
        failed+=("$name (crash: see build-fuzz/artifacts/)")
    fi
done

if (( ${#failed[@]} > 0 )); then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "all fuzz targets ran clean: ${names[*]}"
