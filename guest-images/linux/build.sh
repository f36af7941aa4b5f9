#!/usr/bin/env bash
# Build a Linux guest (kernel + busybox initramfs) for vvmm from Debian 12 packages.
#
#   guest-images/linux/build.sh [OUTDIR]      (default OUTDIR: <repo>/build/guest)
#
# Produces in OUTDIR:
#   vmlinuz            Debian's stock bzImage (package linux-image-amd64 -> linux-image-6.1.0-N-amd64)
#   vmlinux            the uncompressed ELF kernel extracted from that bzImage
#   initramfs.cpio.gz  newc cpio: static busybox, the virtio and ext4 modules of that kernel, the test
#                      programs lw and tcpstream (tools/), and /init
#
# Packages are fetched with `apt-get download` (never installed on the host) and unpacked with
# `dpkg-deb -x` into ${VVMM_CACHE:-$HOME/.cache/vvmm}, so reruns neither download nor unpack again.
# No root needed. Environment overrides:
#   VVMM_CACHE        cache directory
#   VVMM_KERNEL_PKG   exact kernel package to use (default: what linux-image-amd64 depends on)
#
# See README.md next to this script for how /init works and its kernel command-line options.
set -euo pipefail
shopt -s inherit_errexit    # set -e also inside $(...)

PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUTDIR=${1:-$REPO_ROOT/build/guest}
CACHE=${VVMM_CACHE:-${HOME:?HOME is not set; set VVMM_CACHE}/.cache/vvmm}

# Modules wanted in the initramfs. Optional ones are skipped if this kernel doesn't have them
# (virtio_pci_{modern,legacy}_dev were split out of virtio_pci in 5.x). Their dependencies are
# added automatically and the load order is derived from the modules' own "depends" field.
# ext4 (+ jbd2 mbcache crc16 from its depends=) so `mount -t ext4 /dev/vda` works; ext4 and jbd2
# also need a crc32c shash provider at mount time (softdep "crypto-crc32c": the kernel would
# request_module() it, and busybox has no module database here), hence crc32c_generic.
REQUIRED_MODULES=(virtio virtio_ring virtio_pci virtio_blk failover net_failover virtio_net
                  crc32c_generic ext4)
OPTIONAL_MODULES=(virtio_pci_modern_dev virtio_pci_legacy_dev)

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"
lib_init
mkdir -p "$OUTDIR" || die "cannot create output directory $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# ------------------------------------------------------------------------------------------------
# 1. Kernel package
# ------------------------------------------------------------------------------------------------
resolve_kernel
fetch_busybox

# ------------------------------------------------------------------------------------------------
# 2. vmlinuz and vmlinux
# ------------------------------------------------------------------------------------------------
# How the compressed vmlinux is found inside the bzImage:
#  * The x86 boot protocol header ("HdrS" at 0x202, version at 0x206) gives setup_sects (0x1f1):
#    the 32/64-bit part of the image starts at (setup_sects+1)*512 bytes. Since protocol 2.08,
#    payload_offset (u32 at 0x248, relative to that start) and payload_length (u32 at 0x24c)
#    locate the compressed payload, which is vmlinux (the ELF, stripped) compressed with the
#    algorithm chosen by CONFIG_KERNEL_{GZIP,XZ,ZSTD,...}. Debian 12 uses CONFIG_KERNEL_XZ=y.
#  * The compression is identified by the magic bytes at the payload start (xz: fd 37 7a 58 5a 00,
#    gzip: 1f 8b 08, zstd: 28 b5 2f fd, ...). If the header does not point at a known magic,
#    fall back to what the kernel's scripts/extract-vmlinux does: search the file for each magic
#    and try to decompress from every hit until the result is an ELF.
#  * The last 4 bytes of the payload are the little-endian uncompressed size (the kernel build
#    appends it for every compressor; gzip's own trailer ends with it), used as a cross-check.
#  * Decompressed with the standard tools (xz --single-stream stops at the end of the first
#    stream, so the trailing size word is ignored); the result must start with "\x7fELF".
# magic (hex) -> name:decompressor command
COMPRESSORS=(
    "fd377a585a00:xz:xz -dc --single-stream"
    "1f8b08:gzip:gzip -dc"
    "28b52ffd:zstd:zstd -dcq"
    "02214c18:lz4:lz4 -dcq"
    "894c5a:lzo:lzop -dcq"
    "425a68:bzip2:bunzip2 -c"
    "5d0000:lzma:xz -dc --format=lzma"
)

# try_decompress FILE OFFSET LENGTH(0=to end) CMD OUT -> success if OUT is an ELF
try_decompress() {
    local file=$1 off=$2 len=$3 cmd=$4 out=$5
    need "${cmd%% *}"
    if (( len > 0 )); then
        tail -c +$((off + 1)) "$file" | head -c "$len" | $cmd >"$out" 2>/dev/null || true
    else
        tail -c +$((off + 1)) "$file" | $cmd >"$out" 2>/dev/null || true
    fi
    [[ -s $out && $(hexat "$out" 0 4) == 7f454c46 ]]
}

extract_vmlinux() {
    local img=$1 out=$2 ent magic name cmd setup_sects pm_start poff plen off want have
    [[ $(hexat "$img" $((0x202)) 4) == 48647253 ]] || die "$img is not an x86 bzImage (no HdrS)"
    if (( $(od -An -tu2 --endian=little -j $((0x206)) -N2 "$img" | tr -d ' ') >= 0x208 )); then
        setup_sects=$(u8 "$img" $((0x1f1))); (( setup_sects == 0 )) && setup_sects=4
        pm_start=$(( (setup_sects + 1) * 512 ))
        poff=$(( pm_start + $(u32 "$img" $((0x248))) ))
        plen=$(u32 "$img" $((0x24c)))
        for ent in "${COMPRESSORS[@]}"; do
            IFS=: read -r magic name cmd <<<"$ent"
            [[ $(hexat "$img" "$poff" $(( ${#magic} / 2 ))) == "$magic" ]] || continue
            log "vmlinuz payload: $name-compressed, offset $poff, length $plen (from boot header)"
            try_decompress "$img" "$poff" "$plen" "$cmd" "$out" ||
                die "decompressing the $name payload of $img with '$cmd' did not produce an ELF"
            want=$(u32 "$img" $(( poff + plen - 4 ))); have=$(stat -c %s "$out")
            (( want == have )) || die "vmlinux is $have bytes but the bzImage says $want"
            COMPRESSION=$name; PAYLOAD_OFFSET=$poff; return
        done
        log "boot header payload at $poff has no known compression magic; scanning the file"
    fi
    local hexfile="$TMP/img.hex"
    od -An -v -tx1 "$img" | tr -d ' \n' >"$hexfile"
    for ent in "${COMPRESSORS[@]}"; do
        IFS=: read -r magic name cmd <<<"$ent"
        command -v "${cmd%% *}" >/dev/null 2>&1 || continue
        # byte-aligned hits of the magic in the hex dump
        while IFS=: read -r off _; do
            (( off % 2 == 0 )) || continue
            off=$(( off / 2 ))
            if try_decompress "$img" "$off" 0 "$cmd" "$out"; then
                log "vmlinuz payload: $name-compressed at offset $off (found by scanning)"
                COMPRESSION=$name; PAYLOAD_OFFSET=$off; return
            fi
        done < <(grep -ob "$magic" "$hexfile" | awk -F: '{print $1-0 ":"}' | head -n 20)
    done
    die "no compressed ELF payload found in $img"
}

cp -f "$KIMG" "$OUTDIR/.vmlinuz.tmp"
mv -f "$OUTDIR/.vmlinuz.tmp" "$OUTDIR/vmlinuz"
extract_vmlinux "$OUTDIR/vmlinuz" "$OUTDIR/.vmlinux.tmp"
if command -v file >/dev/null 2>&1; then
    [[ $(file -b "$OUTDIR/.vmlinux.tmp") == "ELF 64-bit LSB executable, x86-64"* ]] ||
        die "extracted vmlinux is not an x86-64 ELF executable: $(file -b "$OUTDIR/.vmlinux.tmp")"
else
    [[ $(hexat "$OUTDIR/.vmlinux.tmp" 0 5) == 7f454c4602 ]] || die "extracted vmlinux is not a 64-bit ELF"
fi
mv -f "$OUTDIR/.vmlinux.tmp" "$OUTDIR/vmlinux"

# ------------------------------------------------------------------------------------------------
# 3. initramfs
# ------------------------------------------------------------------------------------------------
STAGE="$TMP/root"
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,tmp,run,root,mnt,etc/vvmm-linux,lib/modules/"$KVER"}
# /dev (and /dev/console) is emitted by hand below so no mknod/root is needed.

stage_busybox "$STAGE" sh mount insmod setsid cttyhack reboot ip awk cat ls mkdir sleep sync hostname

# --- modules ---
modules_init "$STAGE"
for m in "${REQUIRED_MODULES[@]}"; do add_module "$m"; done
for m in "${OPTIONAL_MODULES[@]}"; do add_optional_module "$m"; done
write_module_list "$STAGE/etc/vvmm-linux/modules"
printf '%s\n' "$KVER" >"$STAGE/etc/vvmm-linux/kernel-release"
# The tests' own guest programs (lw, tcpstream: static, see tools/README.md).
"$SCRIPT_DIR/tools/build.sh" "$STAGE/usr/bin" || die "cannot build the guest tools (guest-images/linux/tools)"

# --- /init ---
cat >"$STAGE/init" <<'INIT'
#!/bin/sh
# /init of the vvmm Linux test initramfs (generated by guest-images/linux/build.sh).
# Kernel command-line options (read from /proc/cmdline; double quotes group words):
#   vvmm.run=<cmd>       run <cmd> with sh -c instead of the interactive shell, then reboot -f
#   ip=<addr/prefix>     configure eth0 with that address (and bring it up); vvmm.ip= (what a
#                        cluster file's `ip` gives) does the same
#   vvmm.peers=IP,IP     the other cluster VMs' addresses; <cmd> sees $VVMM_IP and $VVMM_PEERS
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=linux
umask 022
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev 2>/dev/null
# Attach stdio to the console (it is closed if the kernel could not open /dev/console itself).
exec </dev/console >/dev/console 2>&1
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mkdir -p /dev/pts && mount -t devpts -o gid=5,mode=0620 devpts /dev/pts 2>/dev/null
hostname vvmm
echo "vvmm-linux: init started, kernel $(uname -r)"

# Split /proc/cmdline like the kernel does: on blanks outside double quotes; quotes removed.
cmdline_args() {
    awk '{
        s = $0; arg = ""; q = 0; have = 0
        for (i = 1; i <= length(s); i++) {
            c = substr(s, i, 1)
            if (c == "\"") { q = !q; have = 1; continue }
            if (!q && (c == " " || c == "\t")) { if (have) print arg; arg = ""; have = 0; continue }
            arg = arg c; have = 1
        }
        if (have) print arg
    }' /proc/cmdline
}
RUN='' HAVE_RUN=0 IPADDR='' VVMM_PEERS=''
while IFS= read -r arg; do
    case $arg in
        vvmm.run=*) RUN=${arg#vvmm.run=}; HAVE_RUN=1 ;;
        ip=*)       IPADDR=${arg#ip=} ;;
        vvmm.ip=*)  IPADDR=${arg#vvmm.ip=} ;;                  # from a cluster file's `ip`
        vvmm.peers=*) VVMM_PEERS=${arg#vvmm.peers=} ;;
    esac
done <<EOF
$(cmdline_args)
EOF

# Modules, in dependency order computed at build time.
failed=
loaded=
while IFS= read -r mod; do
    [ -n "$mod" ] || continue
    name=${mod##*/}; name=${name%.ko}
    if insmod "$mod"; then loaded="$loaded $name"
    else echo "vvmm-linux: ERROR: insmod $mod failed"; failed="$failed $name"; fi
done </etc/vvmm-linux/modules
if [ -z "$failed" ]; then
    echo "vvmm-linux: modules loaded:$loaded"
else
    echo "vvmm-linux: ERROR: modules failed to load:$failed"
fi

blk=
for d in /sys/class/block/*; do
    [ -e "$d" ] || continue
    blk="$blk ${d##*/}($(cat "$d/size" 2>/dev/null) sectors)"
done
echo "vvmm-linux: block devices:${blk:- none}"
net=
for d in /sys/class/net/*; do
    [ -e "$d" ] || continue
    net="$net ${d##*/}($(cat "$d/address" 2>/dev/null))"
done
echo "vvmm-linux: network interfaces:${net:- none}"

ip link set lo up 2>/dev/null
if [ -n "$IPADDR" ]; then
    if [ -e /sys/class/net/eth0 ]; then
        if ip addr add "$IPADDR" dev eth0 && ip link set eth0 up; then
            echo "vvmm-linux: eth0 configured: $IPADDR"
        else
            echo "vvmm-linux: ERROR: could not configure eth0 with $IPADDR"
        fi
    else
        echo "vvmm-linux: ip=$IPADDR given but there is no eth0"
    fi
fi

power_off() {
    echo "vvmm-linux: rebooting"
    sync
    reboot -f
    sleep 2
    echo b >/proc/sysrq-trigger    # reboot -f should not return; last resort
    sleep 10
}

if [ "$HAVE_RUN" = 1 ]; then
    echo "vvmm-linux: running: $RUN"
    # The command may use its own address and its cluster peers' ($VVMM_IP, $VVMM_PEERS).
    VVMM_IP=${IPADDR%/*} VVMM_PEERS=$VVMM_PEERS sh -c "$RUN"
    echo "vvmm-linux: command exited with status $?"
    power_off
fi

echo "vvmm-linux: starting shell (exit it to reboot)"
setsid cttyhack sh
echo "vvmm-linux: shell exited"
power_off
INIT
chmod 0755 "$STAGE/init"

# --- cpio ---
write_cpio "$STAGE" "$OUTDIR/initramfs.cpio.gz" "$MODDIR/virtio_blk.ko" "$MODDIR/ext4.ko" etc/vvmm-linux/modules \
    usr/bin/lw usr/bin/tcpstream

# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
ENTRY=$(readelf -h "$OUTDIR/vmlinux" 2>/dev/null | awk '/Entry point/ {print $4}') || true
echo "kernel:      $KPKG $(candidate_version "$KPKG") (release $KVER), bzImage payload $COMPRESSION-compressed at offset $PAYLOAD_OFFSET"
echo "busybox:     busybox-static $(candidate_version busybox-static)"
echo "modules:     ${LOAD_ORDER[*]} (load order; shipped as ${MODFORMATS[*]})"
echo "output:      $OUTDIR"
echo "  vmlinuz            $(size "$OUTDIR/vmlinuz")"
echo "  vmlinux            $(size "$OUTDIR/vmlinux")  ELF 64-bit, entry ${ENTRY:-?}"
echo "  initramfs.cpio.gz  $(size "$OUTDIR/initramfs.cpio.gz")  $(wc -l <<<"$LISTING") entries"
