#!/bin/sh
# selftest.sh: build lw and tcpstream for this host and check them here (they are
# ordinary Linux programs).  Exits non-zero if a check fails.  Takes about 90 s.
# tcpstream uses 127.0.0.1-3 and a port from 20000-39999 (override: SELFTEST_PORT).
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vvmm-tools-selftest.XXXXXX")
pids=""
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

failed=0
pass() { echo "selftest: PASS $*"; }
bad() { echo "selftest: FAIL $*"; failed=1; }
show() { sed 's/^/    /' "$1"; }

"$here/build.sh" "$work/bin" || { echo "selftest: FAIL build"; exit 1; }
lw=$work/bin/lw
ts=$work/bin/tcpstream

# ---- lw ---------------------------------------------------------------------
rec=$work/rec
"$lw" --mem 64 --period-ms 100 --records "$rec" --max-records 30 >"$work/lw1" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -qx 'lw: start mem_mib=64 next=1' "$work/lw1" &&
	grep -qx 'lw: done rec=30' "$work/lw1"; then
	pass "lw first run: records 1..30"
else
	bad "lw first run rc=$rc"; show "$work/lw1"
fi

"$lw" --mem 64 --period-ms 100 --records "$rec" --max-records 40 >"$work/lw2" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -qx 'lw: start mem_mib=64 next=31' "$work/lw2" &&
	grep -qx 'lw: done rec=40' "$work/lw2"; then
	pass "lw second run continues at 31"
else
	bad "lw second run rc=$rc"; show "$work/lw2"
fi

out=$("$lw" --check "$rec"); rc=$?
case "$out" in
"lw: check records=40 first=1 last=40 gaps=0 dups=0 "*) [ $rc -eq 0 ] && pass "lw --check: $out" || bad "lw --check rc=$rc: $out" ;;
*) bad "lw --check rc=$rc: $out" ;;
esac

# a duplicated line: --check and a new run both refuse the file
cp "$rec" "$work/dup"
sed -n 5p "$rec" >>"$work/dup"
out=$("$lw" --check "$work/dup"); rc=$?
case "$out" in
"lw: FAIL check "*dups=1*) [ $rc -eq 1 ] && pass "lw --check finds a duplicate: $out" || bad "lw --check dup rc=$rc: $out" ;;
*) bad "lw --check dup rc=$rc: $out" ;;
esac
out=$("$lw" --mem 1 --period-ms 10 --records "$work/dup" --max-records 50); rc=$?
case "$out" in
"lw: FAIL records"*) [ $rc -eq 1 ] && pass "lw refuses to continue a bad file: $out" || bad "lw bad file rc=$rc" ;;
*) bad "lw bad file rc=$rc: $out" ;;
esac

# a gap
grep -v '^rec 7 ' "$rec" >"$work/gap"
out=$("$lw" --check "$work/gap"); rc=$?
case "$out" in
"lw: FAIL check "*gaps=1*) [ $rc -eq 1 ] && pass "lw --check finds a gap: $out" || bad "lw --check gap rc=$rc" ;;
*) bad "lw --check gap rc=$rc: $out" ;;
esac

# a torn last line is cut and its number written again
cp "$rec" "$work/torn"
printf 'rec 41 mono_n' >>"$work/torn"
"$lw" --mem 1 --period-ms 10 --records "$work/torn" --max-records 42 >"$work/lw3" 2>&1
rc=$?
out=$("$lw" --check "$work/torn")
if [ $rc -eq 0 ] && grep -qx 'lw: torn bytes=13 cut' "$work/lw3" &&
	grep -qx 'lw: start mem_mib=1 next=41' "$work/lw3" &&
	case "$out" in "lw: check records=42 first=1 last=42 gaps=0 dups=0 bad=0 torn=0") true ;; *) false ;; esac; then
	pass "lw cuts a torn last line"
else
	bad "lw torn line rc=$rc: $out"; show "$work/lw3"
fi

# SIGSTOP for 3 s, SIGCONT: no false failure
"$lw" --mem 64 --period-ms 100 --records "$rec" --max-records 80 >"$work/lw4" 2>&1 &
p=$!; pids="$pids $p"
sleep 1.5; kill -STOP $p; sleep 3; kill -CONT $p
wait $p; rc=$?
if [ $rc -eq 0 ] && grep -qx 'lw: done rec=80' "$work/lw4" && ! grep -q FAIL "$work/lw4" &&
	"$lw" --check "$rec" >/dev/null; then
	pass "lw survives SIGSTOP/SIGCONT"
else
	bad "lw STOP/CONT rc=$rc"; show "$work/lw4"
fi

# memory corruption: flip a bit of the buffer through /proc/PID/mem (needs python3 and
# ptrace permission over our own child; skipped otherwise)
if command -v python3 >/dev/null 2>&1; then
	cat >"$work/poke.py" <<'PY'
import sys
pid, size = int(sys.argv[1]), int(sys.argv[2]) << 20
for l in open(f'/proc/{pid}/maps'):
    f = l.split()
    a, b = (int(x, 16) for x in f[0].split('-'))
    if b - a >= size and len(f) < 6 and f[1].startswith('rw'):
        with open(f'/proc/{pid}/mem', 'r+b', buffering=0) as m:
            m.seek(a + 8 * 1000); w = m.read(8)
            m.seek(a + 8 * 1000); m.write(bytes([w[0] ^ 0x40]) + w[1:])
        sys.exit(0)
sys.exit('no mapping')
PY
	"$lw" --mem 16 --period-ms 500 --records "$work/poke" >"$work/lw5" 2>&1 &
	p=$!; pids="$pids $p"
	sleep 1.2
	if python3 "$work/poke.py" $p 16 2>"$work/poke.err"; then
		wait $p; rc=$?
		if [ $rc -eq 1 ] && grep -Eq '^lw: FAIL memory gen=[0-9]+ word=1000 got=[0-9a-f]{16} want=[0-9a-f]{16}$' "$work/lw5"; then
			pass "lw finds a flipped bit: $(grep FAIL "$work/lw5")"
		else
			bad "lw flipped bit rc=$rc"; show "$work/lw5"
		fi
	else
		kill $p; wait $p 2>/dev/null
		echo "selftest: SKIP lw memory corruption (can't write /proc/$p/mem: $(tail -1 "$work/poke.err"))"
	fi
else
	echo "selftest: SKIP lw memory corruption (no python3)"
fi

# ---- tcpstream ----------------------------------------------------------------
port=${SELFTEST_PORT:-$((20000 + $$ % 20000))}
peers=127.0.0.1,127.0.0.2,127.0.0.3

# start N LOG ARGS...: one instance in the background, its pid in $last
start() {
	n=$1; shift
	"$ts" --me 127.0.0.$n --peers $peers --port $port --rate 50 --status-every 2 "$@" \
		>"$work/ts$n.log" 2>&1 &
	last=$!; pids="$pids $last"
}

# pairwise: what A sent to B must be what B received from A (from the done lines)
counts_equal() {
	awk '
	/^ts: done / {
		me = substr($3, 4)
		for (i = 5; i <= NF; i++) {
			split($i, kv, "="); split(kv[2], sr, "/")
			sent[me "," kv[1]] = sr[1]; recv[me "," kv[1]] = sr[2]; n++
		}
	}
	END {
		if (n != 6) { print "expected 6 peer counts, got " n; exit 1 }
		for (k in sent) {
			split(k, ab, ",")
			if (sent[k] != recv[ab[2] "," ab[1]] || sent[k] < 1) {
				print ab[1] " sent " sent[k] " to " ab[2] ", which received " recv[ab[2] "," ab[1]]; exit 1
			}
		}
	}' "$work/ts1.log" "$work/ts2.log" "$work/ts3.log"
}

# 1. start in the order 3, 1, 2 with delays; 20 s each; all exit 0 with equal counts
start 3 --duration 20; p3=$last
sleep 2; start 1 --duration 20; p1=$last
sleep 1; start 2 --duration 20; p2=$last
wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
if [ "$r1$r2$r3" = 000 ] && counts_equal; then
	pass "tcpstream 3 instances, 20 s: $(grep -h '^ts: done' "$work"/ts[123].log | tr '\n' ';')"
else
	bad "tcpstream duration run rc=$r1,$r2,$r3"; for n in 1 2 3; do show "$work/ts$n.log"; done
fi

# 2. kill -9 one: the other two exit 1 with kind=eof or reset; at least one names the
#    killed one (each stops at its first failure, so the survivor that notices second
#    may instead report the first survivor's exit)
port=$((port + 1))
start 1; p1=$last; start 2; p2=$last; start 3; p3=$last
sleep 4
kill -9 $p2; wait $p2 2>/dev/null
( sleep 20; kill -9 $p1 $p3 2>/dev/null ) & guard=$!
wait $p1; r1=$?; wait $p3; r3=$?
kill $guard 2>/dev/null; wait $guard 2>/dev/null
if [ "$r1$r3" = 11 ] &&
	grep -Eq '^ts: FAIL peer=[0-9.]+ kind=(eof|reset) ' "$work/ts1.log" &&
	grep -Eq '^ts: FAIL peer=[0-9.]+ kind=(eof|reset) ' "$work/ts3.log" &&
	grep -Eqh '^ts: FAIL peer=127\.0\.0\.2 kind=(eof|reset) ' "$work/ts1.log" "$work/ts3.log"; then
	pass "tcpstream kill -9: $(grep -h '^ts: FAIL' "$work/ts1.log" "$work/ts3.log" | tr '\n' ';')"
else
	bad "tcpstream kill -9 rc=$r1,$r3"; show "$work/ts1.log"; show "$work/ts3.log"
fi

# 3. SIGSTOP one for 15 s, then SIGCONT: no failure, equal counts
port=$((port + 1))
start 1 --duration 30; p1=$last; start 2 --duration 30; p2=$last; start 3 --duration 30; p3=$last
sleep 5; kill -STOP $p2; sleep 15; kill -CONT $p2
wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
if [ "$r1$r2$r3" = 000 ] && ! grep -q FAIL "$work"/ts[123].log && counts_equal; then
	pass "tcpstream SIGSTOP 15 s: $(grep -h '^ts: done' "$work"/ts[123].log | tr '\n' ';')"
else
	bad "tcpstream STOP/CONT rc=$r1,$r2,$r3"; for n in 1 2 3; do show "$work/ts$n.log"; done
fi

# 4. a fake peer (python3) sends broken streams: each is caught with the right kind
if command -v python3 >/dev/null 2>&1; then
	cat >"$work/fake.py" <<'PY'
import socket, struct, sys, time
M = (1 << 64) - 1
def mix(z):
    z = (z + 0x9e3779b97f4a7c15) & M
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    return z ^ (z >> 31)
def fnv(b, h=0x811c9dc5):
    for c in b:
        h = ((h ^ c) * 0x01000193) & 0xffffffff
    return h
def msg(sender, seq, n=256, magic=0x76764d31, flip=False):
    pl = bytearray()
    for i in range(0, n - 24, 8):
        pl += mix((sender << 32) ^ seq ^ ((i // 8) << 48)).to_bytes(8, 'little')
    pl = bytes(pl[:n - 24])
    h = struct.pack('>IIQI', magic, sender, seq, n - 24)
    s = fnv(pl, fnv(h))
    if flip:
        pl = bytes([pl[0] ^ 1]) + pl[1:]
    return h + struct.pack('>I', s) + pl
me, peer, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ip = struct.unpack('>I', socket.inet_aton(me))[0]
for _ in range(100):
    s = socket.socket(); s.bind((me, 0))
    try:
        s.connect((peer, port)); break
    except OSError:
        s.close(); time.sleep(0.1)
seqs = {'gap': [1, 2, 4], 'dup': [1, 2, 2], 'reorder': [1, 2, 3, 1]}.get(mode, [1, 2, 3])
for q in seqs:
    s.sendall(msg(ip, q, flip=(mode == 'corrupt' and q == 2)))
if mode in ('ok', 'endgap'):
    s.sendall(msg(ip, 3 if mode == 'ok' else 5, magic=0x76764d45))
    s.shutdown(socket.SHUT_WR)
if mode == 'eof':
    s.close()
time.sleep(3)
PY
	port=$((port + 1))
	for c in "gap:kind=gap got=4 want=3" "dup:kind=dup got=2 want=3" \
		"reorder:kind=reorder got=1 want=4" "corrupt:kind=corrupt got=2 want=2" \
		"endgap:kind=gap got=5 want=3" "eof:kind=eof got=0 want=4" "ok:"; do
		mode=${c%%:*}; want=${c#*:}
		"$ts" --me 127.0.0.5 --peers 127.0.0.4 --port $port --duration 2 --status-every 0 \
			>"$work/fake.log" 2>&1 &
		p=$!; pids="$pids $p"
		python3 "$work/fake.py" 127.0.0.4 127.0.0.5 $port $mode
		wait $p; rc=$?
		if [ "$mode" = ok ]; then
			if [ $rc -eq 0 ] && grep -Eq '^ts: done me=127\.0\.0\.5 up=1/1 127\.0\.0\.4=[0-9]+/3$' "$work/fake.log"; then
				pass "tcpstream fake peer, good stream: $(grep done "$work/fake.log")"
			else
				bad "tcpstream fake peer ok rc=$rc"; show "$work/fake.log"
			fi
		elif [ $rc -eq 1 ] && grep -qx "ts: FAIL peer=127.0.0.4 $want" "$work/fake.log"; then
			pass "tcpstream fake peer $mode: $(grep FAIL "$work/fake.log")"
		else
			bad "tcpstream fake peer $mode rc=$rc (want $want)"; show "$work/fake.log"
		fi
	done
else
	echo "selftest: SKIP tcpstream fake peer (no python3)"
fi

if [ $failed -ne 0 ]; then
	echo "selftest: FAILED"
	exit 1
fi
echo "selftest: all passed"
