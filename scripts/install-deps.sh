#!/usr/bin/env bash
# Installs what building and testing vvmm needs, from Debian 12 packages.
set -euo pipefail
PACKAGES=(
  meson ninja-build g++ pkg-config python3
  libcli11-dev doctest-dev liburing-dev libasio-dev libtomlplusplus-dev nlohmann-json3-dev
  libxxhash-dev libzstd-dev
  # TLS 1.3 for the peer channel and hashes (OpenSSL); the sandbox's seccomp filter
  libssl-dev libseccomp-dev
  # parity (XOR, Reed-Solomon) for diskless cluster checkpoints
  libisal-dev
  # guest images: guest-images/linux/build.sh fetches Debian's kernel and busybox with apt-get download
  binutils cpio xz-utils
  # benchmarks compare against QEMU/KVM on the same guest image
  qemu-system-x86
  # fuzz targets (libFuzzer) and the ext4 image of the Linux device test
  clang libclang-rt-14-dev e2fsprogs
  # the cluster test runs its nodes as network namespaces (ip netns, veth, bridge)
  iproute2 procps
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# apt-get download (used by the Linux guest build) needs package lists.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
echo "install-deps: all build dependencies present"
