#!/usr/bin/env bash
# Build a Linux guest (kernel + busybox initramfs) for vvmm from Debian 12 packages.
#
#   guest-images/linux/build.sh [OUTDIR]      (default OUTDIR: <repo>/build/guest)
#
# Produces in OUTDIR:
#   vmlinuz            Debian's stock bzImage (package linux-image-amd64 -> linux-image-6.1.0-N-amd64)
#   vmlinux            the uncompressed ELF kernel extracted from that bzImage
#   initramfs.cpio.gz  newc cpio: static busybox, the virtio modules of that kernel, and /init
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
REQUIRED_MODULES=(virtio virtio_ring virtio_pci virtio_blk virtio_net failover net_failover)
OPTIONAL_MODULES=(virtio_pci_modern_dev virtio_pci_legacy_dev)

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "required tool '$c' not found in PATH (Debian package: $(pkg_of "$c"))"
    done
}
pkg_of() {
    case $1 in
        apt-get|apt-cache) echo apt ;;  dpkg-deb|dpkg) echo dpkg ;;  cpio) echo cpio ;;
        xz) echo xz-utils ;;  zstd) echo zstd ;;  lz4) echo lz4 ;;  lzop) echo lzop ;;  bunzip2) echo bzip2 ;;
        objcopy|readelf) echo binutils ;;  *) echo coreutils ;;
    esac
}

need apt-get apt-cache dpkg dpkg-deb cpio gzip od head tail find sort stat mktemp objcopy
[[ $(dpkg --print-architecture) == amd64 ]] ||
    die "host architecture is $(dpkg --print-architecture); this script fetches amd64 packages and runs the amd64 busybox at build time"

# Temporary files (removed on exit).
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vvmm-guest.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

mkdir -p "$CACHE/debs" "$CACHE/unpacked" || die "cannot create cache directory $CACHE (set VVMM_CACHE)"
mkdir -p "$OUTDIR" || die "cannot create output directory $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# ------------------------------------------------------------------------------------------------
# apt helpers
# ------------------------------------------------------------------------------------------------
APT_HINT="is the apt package index present? run 'apt-get update' (as root) first"

# candidate_version PKG -> version apt-get download would fetch
candidate_version() {
    local v
    v=$(LC_ALL=C apt-cache policy "$1" 2>/dev/null | awk '/^ *Candidate:/ && !f {print $2; f=1}')
    [[ -n $v && $v != "(none)" ]] || die "apt knows no installable version of package '$1' ($APT_HINT)"
    printf '%s\n' "$v"
}

# fetch_unpack PKG -> prints the directory the package is unpacked in (cached)
fetch_unpack() {
    local pkg=$1 ver key deb dir dl f
    ver=$(candidate_version "$pkg")
    key="${pkg}_${ver//:/%3a}"
    deb="$CACHE/debs/$key.deb"
    dir="$CACHE/unpacked/$key"
    if [[ -f $dir/.vvmm-unpacked ]]; then
        log "cached: $pkg $ver"
        printf '%s\n' "$dir"; return
    fi
    if [[ ! -f $deb ]]; then
        log "downloading $pkg $ver"
        dl=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
        local -a aptopt=()
        # As root apt drops privileges to _apt, which cannot write to e.g. /root/.cache.
        [[ $(id -u) == 0 ]] && aptopt=(-o APT::Sandbox::User=root)
        if ! (cd "$dl" && apt-get -q "${aptopt[@]}" download "$pkg=$ver" >"$dl.log" 2>&1); then
            sed 's/^/    /' "$dl.log" >&2
            rm -rf "$dl" "$dl.log"
            die "apt-get download $pkg=$ver failed ($APT_HINT; a stale index gives 404 errors)"
        fi
        f=$(find "$dl" -maxdepth 1 -name '*.deb' -print -quit)
        [[ -n $f ]] || { rm -rf "$dl" "$dl.log"; die "apt-get download $pkg produced no .deb"; }
        mv "$f" "$deb"
        rm -rf "$dl" "$dl.log"
    fi
    [[ $(dpkg-deb -f "$deb" Package) == "$pkg" && $(dpkg-deb -f "$deb" Version) == "$ver" ]] ||
        die "$deb is not $pkg $ver (delete it and rerun)"
    log "unpacking $pkg $ver"
    rm -rf "$dir" "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp" || die "dpkg-deb -x $deb failed"
    touch "$dir.tmp/.vvmm-unpacked"
    mv "$dir.tmp" "$dir"
    printf '%s\n' "$dir"
}

# ------------------------------------------------------------------------------------------------
# 1. Kernel package
# ------------------------------------------------------------------------------------------------
LC_ALL=C apt-cache show linux-image-amd64 >/dev/null 2>&1 || die "apt-cache knows no package linux-image-amd64 ($APT_HINT)"
if [[ -n ${VVMM_KERNEL_PKG:-} ]]; then
    KPKG=$VVMM_KERNEL_PKG
else
    # linux-image-amd64 is a metapackage depending on exactly one linux-image-6.1.0-N-amd64.
    KPKG=$(LC_ALL=C apt-cache depends --no-recommends --no-suggests linux-image-amd64 2>/dev/null |
           awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ && !f {print $2; f=1}')
    [[ -n $KPKG ]] || die "cannot resolve the kernel package linux-image-amd64 depends on ($APT_HINT)"
fi
KVER=${KPKG#linux-image-}                # kernel release, e.g. 6.1.0-56-amd64
KDIR=$(fetch_unpack "$KPKG")
KIMG="$KDIR/boot/vmlinuz-$KVER"
MODROOT="$KDIR/lib/modules/$KVER"
[[ -f $KIMG ]] || die "$KPKG contains no boot/vmlinuz-$KVER"
[[ -d $MODROOT/kernel ]] || die "$KPKG contains no lib/modules/$KVER/kernel"

BBDIR=$(fetch_unpack busybox-static)
BUSYBOX="$BBDIR/bin/busybox"
[[ -x $BUSYBOX ]] || die "busybox-static contains no executable bin/busybox"

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
u32() { od -An -tu4 --endian=little -j "$2" -N4 "$1" | tr -d ' '; }
u8()  { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
hexat() { od -An -tx1 -j "$2" -N"$3" "$1" | tr -d ' \n'; }

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
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,tmp,run,root,etc/vvmm-linux,lib/modules/"$KVER"}
# /dev (and /dev/console) is emitted by hand below so no mknod/root is needed.

# busybox + applet symlinks (the static amd64 binary runs on the build host to list them).
install -m 0755 "$BUSYBOX" "$STAGE/bin/busybox"
APPLETS=$("$BUSYBOX" --list-full) || die "cannot run $BUSYBOX --list-full on this host"
while IFS= read -r a; do
    [[ -n $a && $a != bin/busybox ]] || continue
    mkdir -p "$STAGE/$(dirname "$a")"
    ln -sf /bin/busybox "$STAGE/$a"
done <<<"$APPLETS"
for a in sh mount insmod setsid cttyhack reboot ip awk cat ls mkdir sleep sync hostname; do
    grep -qE "(^|/)$a\$" <<<"$APPLETS" || die "busybox-static lacks the '$a' applet needed by /init"
done

# --- modules ---
declare -A MODPATH=()     # normalized name -> path in the kernel package
while IFS= read -r -d '' f; do
    n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
    MODPATH[$n]=$f
done < <(find "$MODROOT/kernel" \( -name '*.ko' -o -name '*.ko.*' \) -print0)
is_builtin() {            # NAME listed in modules.builtin (paths like kernel/drivers/x/name.ko)?
    [[ -f $MODROOT/modules.builtin ]] &&
        awk -v m="$1" '{ n = $0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n) }
                       n == m { f = 1 } END { exit !f }' "$MODROOT/modules.builtin"
}

MODDIR="lib/modules/$KVER"
MODFORMATS=()
# stage_module NAME: copy (decompressing if needed) into the initramfs; prints nothing
stage_module() {
    local n=$1 src=${MODPATH[$1]} dst="$STAGE/$MODDIR/$1.ko"
    case $src in
        *.ko)     cp "$src" "$dst"; MODFORMATS+=(".ko") ;;
        *.ko.xz)  need xz;    xz -dc "$src" >"$dst";    MODFORMATS+=(".ko.xz") ;;
        *.ko.zst) need zstd;  zstd -dcq "$src" >"$dst"; MODFORMATS+=(".ko.zst") ;;
        *.ko.gz)  gzip -dc "$src" >"$dst";              MODFORMATS+=(".ko.gz") ;;
        *) die "unknown module format: $src" ;;
    esac
    [[ $(hexat "$dst" 0 4) == 7f454c46 ]] || die "module $n ($src) is not an ELF object after unpacking"
}
# mod_depends NAME: the module's "depends=" list (from modinfo if the host has it, else read the
# .modinfo section directly; both give the same comma-separated list), one name per line.
mod_depends() {
    local f="$STAGE/$MODDIR/$1.ko" d
    if command -v modinfo >/dev/null 2>&1; then
        d=$(modinfo -F depends "$f")
    else
        objcopy -O binary --only-section=.modinfo "$f" "$TMP/modinfo" ||
            die "cannot read the .modinfo section of $f"
        d=$(modinfo_field depends)
    fi
    tr ',' '\n' <<<"$d" | sed 's/-/_/g; /^$/d'
}
mod_vermagic() {
    objcopy -O binary --only-section=.modinfo "$STAGE/$MODDIR/$1.ko" "$TMP/modinfo"
    modinfo_field vermagic
}
modinfo_field() { tr '\0' '\n' <"$TMP/modinfo" | awk -v k="$1=" 'index($0, k) == 1 && !f { print substr($0, length(k) + 1); f = 1 }'; }

declare -A STATE=()       # "" unvisited, 1 visiting, 2 done
LOAD_ORDER=()
visit() {                 # depth-first: dependencies before dependents
    local n=$1 d
    case ${STATE[$n]:-} in
        2) return ;;
        1) die "module dependency cycle involving $n" ;;
    esac
    if [[ -z ${MODPATH[$n]:-} ]]; then
        is_builtin "$n" && { log "module $n is built into $KVER"; STATE[$n]=2; return; }
        die "module $n (needed: ${2:-requested}) is neither in $KPKG nor built in"
    fi
    STATE[$n]=1
    stage_module "$n"
    [[ $(mod_vermagic "$n") == "$KVER "* ]] || die "module $n vermagic '$(mod_vermagic "$n")' does not match $KVER"
    while IFS= read -r d; do
        [[ -n $d ]] && visit "$d" "by $n"
    done < <(mod_depends "$n")
    STATE[$n]=2
    LOAD_ORDER+=("$n")
}
for m in "${REQUIRED_MODULES[@]}"; do visit "$m"; done
for m in "${OPTIONAL_MODULES[@]}"; do
    if [[ -n ${MODPATH[$m]:-} ]]; then visit "$m"
    else log "optional module $m not in this kernel; skipped"; fi
done
# Order was computed depth-first per root; an optional module visited after a required one that
# depends on it would already be included through that dependency, so LOAD_ORDER is valid.
printf "/$MODDIR/%s.ko\n" "${LOAD_ORDER[@]}" >"$STAGE/etc/vvmm-linux/modules"
printf '%s\n' "$KVER" >"$STAGE/etc/vvmm-linux/kernel-release"
mapfile -t MODFORMATS < <(printf '%s\n' "${MODFORMATS[@]}" | sort -u)

# --- /init ---
cat >"$STAGE/init" <<'INIT'
#!/bin/sh
# /init of the vvmm Linux test initramfs (generated by guest-images/linux/build.sh).
# Kernel command-line options (read from /proc/cmdline; double quotes group words):
#   vvmm.run=<cmd>       run <cmd> with sh -c instead of the interactive shell, then reboot -f
#   ip=<addr/prefix>     configure eth0 with that address (and bring it up)
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
RUN='' HAVE_RUN=0 IPADDR=''
while IFS= read -r arg; do
    case $arg in
        vvmm.run=*) RUN=${arg#vvmm.run=}; HAVE_RUN=1 ;;
        ip=*)       IPADDR=${arg#ip=} ;;
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
    sh -c "$RUN"
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
# newc_entry NAME MODE(octal) NLINK RDEVMAJOR RDEVMINOR INO: one header-only newc entry
# (directories and device nodes), so /dev/console exists before /init runs without mknod/root.
newc_entry() {
    local name=$1 mode=$2 nlink=$3 rmaj=$4 rmin=$5 ino=$6 namesize hdr pad
    namesize=$(( ${#name} + 1 ))
    printf -v hdr '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$ino" $((8#$mode)) 0 0 "$nlink" 0 0 0 0 "$rmaj" "$rmin" "$namesize" 0
    pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    printf '%s%s\0' "$hdr" "$name"
    head -c "$pad" /dev/zero
}
find "$STAGE" -exec touch -h -d @0 {} +          # fixed mtimes: identical output on rebuilds
{
    newc_entry dev 040755 2 0 0 $((0x7fff0001))
    newc_entry dev/console 020600 1 5 1 $((0x7fff0002))
    (cd "$STAGE" && find . -mindepth 1 | sed 's,^\./,,' | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible)
} | gzip -9 -n >"$OUTDIR/.initramfs.tmp"
# Sanity check: the archive lists (one archive, so cpio -t sees everything) and has the essentials.
LISTING=$(gzip -dc "$OUTDIR/.initramfs.tmp" | cpio -t --quiet) || die "generated cpio does not list"
for p in init bin/busybox bin/sh dev/console "$MODDIR/virtio_blk.ko" etc/vvmm-linux/modules; do
    grep -qx "$p" <<<"$LISTING" || die "generated initramfs lacks $p"
done
mv -f "$OUTDIR/.initramfs.tmp" "$OUTDIR/initramfs.cpio.gz"

# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
size() { printf '%10s bytes (%s)' "$(stat -c %s "$1")" "$(du -h --apparent-size "$1" | cut -f1)"; }
ENTRY=$(readelf -h "$OUTDIR/vmlinux" 2>/dev/null | awk '/Entry point/ {print $4}') || true
echo "kernel:      $KPKG $(candidate_version "$KPKG") (release $KVER), bzImage payload $COMPRESSION-compressed at offset $PAYLOAD_OFFSET"
echo "busybox:     busybox-static $(candidate_version busybox-static)"
echo "modules:     ${LOAD_ORDER[*]} (load order; shipped as ${MODFORMATS[*]})"
echo "output:      $OUTDIR"
echo "  vmlinuz            $(size "$OUTDIR/vmlinuz")"
echo "  vmlinux            $(size "$OUTDIR/vmlinux")  ELF 64-bit, entry ${ENTRY:-?}"
echo "  initramfs.cpio.gz  $(size "$OUTDIR/initramfs.cpio.gz")  $(wc -l <<<"$LISTING") entries"
