#!/usr/bin/env bash
# Configures and builds vvmm and the test guest into build/, then the Linux guest images into build/guest/.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/build.ninja ]] || meson setup build
ninja -C build
guest-images/linux/build.sh build/guest
