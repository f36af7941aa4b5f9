#!/usr/bin/env python3
"""Reference values for the test guest's workloads (see README.md).

  reference.py smp INDEX [ITERS]      expected "result=" of "tg: smp cpu=INDEX"
  reference.py count N [MB]           expected "sum=" of "tg: count n=N"
  reference.py check [LOGFILE]        verify every smp/count line of a guest log
                                      (stdin if no file); exit status 1 on mismatch
  reference.py selftest               compare the fast and the naive algorithms

smp:   x = INDEX + 1, then ITERS times x = xorshift64(x) (13, 7, 17); ITERS
       defaults to 10000000.
count: MB MiB (default 64) of 64-bit words, word 0 = splitmix64(N) (1 if that
       is 0), word i+1 = xorshift64(word i); sum = XOR of all words.

xorshift64 is linear over GF(2), so both values are computed with 64x64 bit
matrices (powers and a geometric series by repeated squaring): milliseconds
in pure Python even for 10^7 iterations or 8 Mi words.
"""
import re
import sys

MASK = (1 << 64) - 1


def xorshift64(x):
    x ^= (x << 13) & MASK
    x ^= x >> 7
    x ^= (x << 17) & MASK
    return x


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def count_seed(n):
    return splitmix64(n) or 1


# A linear map on 64-bit vectors is stored as the list of images of the 64
# unit vectors (its columns).
def apply(m, v):
    r = 0
    j = 0
    while v:
        if v & 1:
            r ^= m[j]
        v >>= 1
        j += 1
    return r


def compose(a, b):
    """a after b"""
    return [apply(a, c) for c in b]


def add(a, b):
    return [x ^ y for x, y in zip(a, b)]


IDENTITY = [1 << j for j in range(64)]
XS = [xorshift64(1 << j) for j in range(64)]


def xs_power(k):
    """X^k"""
    result, base = IDENTITY, XS
    while k:
        if k & 1:
            result = compose(base, result)
        base = compose(base, base)
        k >>= 1
    return result


def xs_series(k):
    """I + X + ... + X^(k-1)"""
    p, s = IDENTITY, [0] * 64     # X^m, S(m) for m = 0
    for bit in bin(k)[2:] if k else '':
        s = add(s, compose(p, s))   # S(2m) = S(m) + X^m S(m)
        p = compose(p, p)
        if bit == '1':
            s = add(s, p)           # S(m+1) = S(m) + X^m
            p = compose(XS, p)
    return s


def smp_result(index, iters=10_000_000):
    return apply(xs_power(iters), index + 1)


def count_sum(n, mb=64):
    return apply(xs_series(mb * 131072), count_seed(n))


def smp_result_naive(index, iters):
    x = index + 1
    for _ in range(iters):
        x = xorshift64(x)
    return x


def count_sum_naive(n, words):
    x, s = count_seed(n), 0
    for _ in range(words):
        s ^= x
        x = xorshift64(x)
    return s


def check(lines):
    """Verifies smp/count lines against the parameters on the ready line."""
    params = {}
    ok = True
    checked = 0
    for line in lines:
        line = line.strip('\r\n')
        m = re.search(r'tg: ready cpus=\d+ ram=\d+ cmdline="(.*)"', line)
        if m:
            params = dict(w.split('=', 1) for w in m.group(1).split() if '=' in w)
            continue
        m = re.search(r'tg: smp cpu=(\d+) apic=\d+ result=([0-9a-f]{16})', line)
        if m:
            want = smp_result(int(m.group(1)), int(params.get('iters', '10000000'), 0))
            good = int(m.group(2), 16) == want
        else:
            m = re.search(r'tg: count n=(\d+) sum=([0-9a-f]{16})', line)
            if not m:
                continue
            want = count_sum(int(m.group(1)), int(params.get('mb', '64'), 0))
            good = int(m.group(2), 16) == want
        checked += 1
        if not good:
            ok = False
            print(f'MISMATCH: {line}  (expected {want:016x})')
    print(f'{checked} values checked, {"all ok" if ok else "MISMATCHES"}')
    return ok


def main(argv):
    if len(argv) >= 2 and argv[0] == 'smp':
        print(f'{smp_result(int(argv[1]), int(argv[2], 0) if len(argv) > 2 else 10_000_000):016x}')
    elif len(argv) >= 2 and argv[0] == 'count':
        print(f'{count_sum(int(argv[1]), int(argv[2], 0) if len(argv) > 2 else 64):016x}')
    elif argv and argv[0] == 'check':
        src = open(argv[1], errors='replace') if len(argv) > 1 else sys.stdin
        return 0 if check(src) else 1
    elif argv and argv[0] == 'selftest':
        for idx in range(4):
            for iters in (0, 1, 2, 3, 1000, 4321):
                assert smp_result(idx, iters) == smp_result_naive(idx, iters)
        for n in (1, 2, 3, 77):
            for words in (0, 1, 2, 5, 1000, 4099):
                assert apply(xs_series(words), count_seed(n)) == count_sum_naive(n, words)
        print('selftest ok')
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
