#!/bin/sh
# build.sh OUTDIR: compile the guest tools lw and tcpstream as static binaries into OUTDIR.
set -eu
if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
out=$1
CC=${CC:-gcc}
CFLAGS="-static -O2 -Wall -Wextra -std=gnu11"

if ! command -v "$CC" >/dev/null 2>&1; then
	echo "guest tools: $CC not found (install gcc)" >&2
	exit 1
fi
# A static link needs libc.a; Debian's libc6-dev provides it.
libc_a=$("$CC" -print-file-name=libc.a)
if [ ! -f "$libc_a" ]; then
	echo "guest tools: static glibc (libc.a) is missing; install libc6-dev" >&2
	exit 1
fi

mkdir -p "$out"
for prog in lw tcpstream; do
	"$CC" $CFLAGS -o "$out/$prog.tmp" "$here/$prog.c"
	mv "$out/$prog.tmp" "$out/$prog"
done
