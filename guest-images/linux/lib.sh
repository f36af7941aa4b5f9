# Shared helpers for building initramfs images from Debian 12 packages. Sourced (not run) by
# guest-images/linux/build.sh (the Linux guest for vvmm) and tests/kvm-host/build.sh (the test
# host VM). Needs bash with `set -euo pipefail` and `shopt -s inherit_errexit` in the caller.
#
# The caller sets before calling lib_init:
#   PROG     name used in messages
#   CACHE    package cache directory (debs/ and unpacked/ are created in it)
# lib_init creates TMP (a temporary directory removed on exit).
#
# Functions:
#   candidate_version PKG          version apt-get download would fetch
#   fetch_unpack PKG               prints the directory PKG is unpacked in (downloaded/unpacked once)
#   resolve_kernel                 sets KPKG KVER KDIR KIMG MODROOT (VVMM_KERNEL_PKG overrides)
#   fetch_busybox                  sets BUSYBOX (static amd64 busybox from busybox-static)
#   stage_busybox STAGE APPLET...  installs busybox + applet symlinks; dies if an APPLET is missing
#   modules_init STAGE             indexes the kernel's modules; staged into STAGE/$MODDIR
#   add_module NAME                stages NAME and its dependencies (depends=), appends to LOAD_ORDER
#   add_optional_module NAME       same, but skipped (with a message) if the kernel lacks NAME
#   write_cpio STAGE OUT [PATH...] gzip newc cpio of STAGE plus a hand-made /dev/console; sets LISTING

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

u32() { od -An -tu4 --endian=little -j "$2" -N4 "$1" | tr -d ' '; }
u8()  { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
hexat() { od -An -tx1 -j "$2" -N"$3" "$1" | tr -d ' \n'; }

lib_init() {
    need apt-get apt-cache dpkg dpkg-deb cpio gzip od head tail find sort stat mktemp objcopy
    [[ $(dpkg --print-architecture) == amd64 ]] ||
        die "host architecture is $(dpkg --print-architecture); this script fetches amd64 packages and runs the amd64 busybox at build time"
    # Temporary files (removed on exit).
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/vvmm-guest.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    mkdir -p "$CACHE/debs" "$CACHE/unpacked" || die "cannot create cache directory $CACHE (set VVMM_CACHE)"
}

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
# Kernel package and busybox
# ------------------------------------------------------------------------------------------------
resolve_kernel() {
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
}

fetch_busybox() {
    local bbdir
    bbdir=$(fetch_unpack busybox-static)
    BUSYBOX="$bbdir/bin/busybox"
    [[ -x $BUSYBOX ]] || die "busybox-static contains no executable bin/busybox"
}

# stage_busybox STAGE APPLET...: busybox + applet symlinks (the static amd64 binary runs on the
# build host to list them); every APPLET named must exist.
stage_busybox() {
    local stage=$1 a applets; shift
    mkdir -p "$stage/bin"
    install -m 0755 "$BUSYBOX" "$stage/bin/busybox"
    applets=$("$BUSYBOX" --list-full) || die "cannot run $BUSYBOX --list-full on this host"
    while IFS= read -r a; do
        [[ -n $a && $a != bin/busybox ]] || continue
        mkdir -p "$stage/$(dirname "$a")"
        ln -sf /bin/busybox "$stage/$a"
    done <<<"$applets"
    for a in "$@"; do
        grep -qE "(^|/)$a\$" <<<"$applets" || die "busybox-static lacks the '$a' applet needed by /init"
    done
}

# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------
# modules_init STAGE: index the kernel package's modules (call after resolve_kernel).
modules_init() {
    local f n
    MSTAGE=$1
    MODDIR="lib/modules/$KVER"
    mkdir -p "$MSTAGE/$MODDIR"
    declare -gA MODPATH=()     # normalized name -> path in the kernel package
    declare -gA STATE=()       # "" unvisited, 1 visiting, 2 done
    MODFORMATS=()
    LOAD_ORDER=()
    while IFS= read -r -d '' f; do
        n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
        MODPATH[$n]=$f
    done < <(find "$MODROOT/kernel" \( -name '*.ko' -o -name '*.ko.*' \) -print0)
}
is_builtin() {            # NAME listed in modules.builtin (paths like kernel/drivers/x/name.ko)?
    [[ -f $MODROOT/modules.builtin ]] &&
        awk -v m="$1" '{ n = $0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n) }
                       n == m { f = 1 } END { exit !f }' "$MODROOT/modules.builtin"
}
have_module() { [[ -n ${MODPATH[$1]:-} ]]; }

# stage_module NAME: copy (decompressing if needed) into the initramfs; prints nothing
stage_module() {
    local n=$1 src=${MODPATH[$1]} dst="$MSTAGE/$MODDIR/$1.ko"
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
    local f="$MSTAGE/$MODDIR/$1.ko" d
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
    objcopy -O binary --only-section=.modinfo "$MSTAGE/$MODDIR/$1.ko" "$TMP/modinfo"
    modinfo_field vermagic
}
modinfo_field() { tr '\0' '\n' <"$TMP/modinfo" | awk -v k="$1=" 'index($0, k) == 1 && !f { print substr($0, length(k) + 1); f = 1 }'; }

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
add_module() { visit "$1"; }
add_optional_module() {
    if have_module "$1"; then visit "$1"
    else log "optional module $1 not in this kernel; skipped"; fi
}
# Depth-first per root: a module added after one that depends on it was already included through
# that dependency, so LOAD_ORDER is always a valid load order.
# write_module_list FILE: the load order as absolute paths inside the image, one per line.
write_module_list() {
    printf "/$MODDIR/%s.ko\n" "${LOAD_ORDER[@]}" >"$1"
    mapfile -t MODFORMATS < <(printf '%s\n' "${MODFORMATS[@]}" | sort -u)
}

# ------------------------------------------------------------------------------------------------
# cpio
# ------------------------------------------------------------------------------------------------
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
# write_cpio STAGE OUT [PATH...]: gzip newc cpio of STAGE (plus /dev and /dev/console), written to
# OUT via a temporary file next to it, after checking it has init, bin/busybox, bin/sh, dev/console
# and every PATH given; sets LISTING to its `cpio -t` listing.
write_cpio() {
    local stage=$1 out=$2 tmp
    tmp="$(dirname "$out")/.$(basename "$out").tmp"
    find "$stage" -exec touch -h -d @0 {} +          # fixed mtimes: identical output on rebuilds
    {
        newc_entry dev 040755 2 0 0 $((0x7fff0001))
        newc_entry dev/console 020600 1 5 1 $((0x7fff0002))
        (cd "$stage" && find . -mindepth 1 | sed 's,^\./,,' | LC_ALL=C sort |
            cpio --quiet -o -H newc -R 0:0 --reproducible)
    } | gzip -9 -n >"$tmp"
    # Sanity check: the archive lists (one archive, so cpio -t sees everything).
    LISTING=$(gzip -dc "$tmp" | cpio -t --quiet) || die "generated cpio does not list"
    local p
    for p in init bin/busybox bin/sh dev/console "${@:3}"; do
        grep -qx "$p" <<<"$LISTING" || { rm -f "$tmp"; die "generated initramfs lacks $p"; }
    done
    mv -f "$tmp" "$out"
}

size() { printf '%10s bytes (%s)' "$(stat -c %s "$1")" "$(du -h --apparent-size "$1" | cut -f1)"; }
