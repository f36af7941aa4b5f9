#!/usr/bin/env python3
"""Reference values for the test guest's workloads (see README.md).

  reference.py smp INDEX [ITERS]      expected "result=" of "tg: smp cpu=INDEX"
  reference.py count N [MB]           expected "sum=" of "tg: count n=N"
  reference.py check [LOGFILE]        verify every smp/count line of a guest log
                                      (stdin if no file); exit status 1 on mismatch
                                      (count: also the "cpu=I" lines of allcpus=1)
  reference.py blkseqcheck LOGFILE [IMAGE]
                                      check a test=blkseq log: every before=0, the
                                      check tags = the last tag of each block, done
                                      line; with IMAGE also decode the image's blocks
  reference.py blkseqblock K TAG      block K of test=blkseq with TAG, as hex
  reference.py blkpattern SEED SECTOR  the 512 bytes of a test=blk sector, as hex
  reference.py blkcheck IMAGE SEED START SECTORS
                                      verify a test=blk pattern in a disk image
                                      (exit status 1 and the first bad sector)
  reference.py blkwrite IMAGE SEED START SECTORS
                                      write the pattern into a disk image (for
                                      test=blkverify without a test=blk run)
  reference.py netframe SRC DST SEQ   a test=net DATA frame (SRC sends to DST), as hex
  reference.py selftest               compare the fast and the naive algorithms

smp:   x = INDEX + 1, then ITERS times x = xorshift64(x) (13, 7, 17); ITERS
       defaults to 10000000.
count: MB MiB (default 64) of 64-bit words, word 0 = splitmix64(N) (1 if that
       is 0), word i+1 = xorshift64(word i); sum = XOR of all words.

blkseq: block k (4 KiB at sector 8k) = "BLKSEQ01", u64 k, u64 tag, then
       words w = 3..511 = splitmix64(key + w), key = splitmix64(k ^ splitmix64(tag)),
       little-endian; an all-zero block has tag 0.
blk:   sector s = 64 little-endian 64-bit words, word w =
       splitmix64(SEED * 2**40 + s * 64 + w) mod 2**64.
net:   see README.md ("test=net frame format") and net_frame() below.

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


def blk_sector(seed, sector):
    base = (seed << 40) + sector * 64
    return b''.join(splitmix64((base + w) & MASK).to_bytes(8, 'little') for w in range(64))


def blk_check(image, seed, start, sectors):
    """Returns (number of bad sectors, first bad sector or None)."""
    bad, first = 0, None
    with open(image, 'rb') as f:
        f.seek(start * 512)
        for s in range(start, start + sectors):
            data = f.read(512)
            if data != blk_sector(seed, s):
                bad += 1
                if first is None:
                    first = s
    return bad, first


def blk_write(image, seed, start, sectors):
    with open(image, 'r+b') as f:
        f.seek(start * 512)
        for s in range(start, start + sectors):
            f.write(blk_sector(seed, s))


BLKSEQ_MAGIC = b'BLKSEQ01'


def blkseq_block(k, tag):
    key = splitmix64(k ^ splitmix64(tag))
    return BLKSEQ_MAGIC + k.to_bytes(8, 'little') + tag.to_bytes(8, 'little') + \
        b''.join(splitmix64((key + w) & MASK).to_bytes(8, 'little') for w in range(3, 512))


def blkseq_decode(data, k):
    """The tag of a test=blkseq block: int, 0 for an all-zero block, None if bad."""
    if data == bytes(4096):
        return 0
    if len(data) != 4096 or data[:8] != BLKSEQ_MAGIC or int.from_bytes(data[8:16], 'little') != k:
        return None
    tag = int.from_bytes(data[16:24], 'little')
    if tag in (0, MASK) or data != blkseq_block(k, tag):
        return None
    return tag


def blkseq_check(lines, image=None):
    """Returns a list of problems of a test=blkseq log (and the disk image)."""
    errs, last, checked, done = [], {}, {}, None
    for line in lines:
        line = line.strip('\r\n')
        m = re.search(r'tg: blkseq k=(\d+) before=(\S+) tag=([0-9a-f]{16})$', line)
        if m:
            k = int(m.group(1))
            if m.group(2) != '0':
                errs.append(f'block {k} not fresh: {line}')
            last[k] = m.group(3)
            continue
        m = re.search(r'tg: blkseq check k=(\d+) tag=(\S+)$', line)
        if m:
            checked[int(m.group(1))] = m.group(2)
            continue
        m = re.search(r'tg: blkseq done blocks=(\d+)', line)
        if m:
            done = int(m.group(1))
    if done is None:
        errs.append('no "tg: blkseq done" line')
    elif sorted(checked) != list(range(done)) or sorted(last) != list(range(done)):
        errs.append(f'blocks written {len(last)}, checked {len(checked)}, done={done}')
    for k, tag in sorted(checked.items()):
        if last.get(k) != tag:
            errs.append(f'block {k}: check tag={tag}, last written {last.get(k)}')
    if image is not None:
        with open(image, 'rb') as f:
            for k, tag in sorted(last.items()):
                f.seek(k * 4096)
                got = blkseq_decode(f.read(4096), k)
                if got != int(tag, 16):
                    errs.append(f'image block {k}: {got if got is None else f"{got:016x}"}, want {tag}')
    return errs


NET_ETHERTYPE = 0x88B5
NET_MAGIC = 0x746E6774   # b"tgnt" little-endian
NET_KIND_DATA = 1


def parse_mac(text):
    return int(text.replace(':', ''), 16)


def net_key(src_mac, seq):
    return splitmix64(splitmix64(src_mac) ^ seq)


def fnv1a32(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def net_frame(src_mac, dst_mac, seq):
    """The DATA frame number seq that src_mac sends to dst_mac in test=net."""
    key = net_key(src_mac, seq)
    length = 60 + key % 1455
    f = bytearray(length)
    f[0:6] = dst_mac.to_bytes(6, 'big')
    f[6:12] = src_mac.to_bytes(6, 'big')
    f[12:14] = NET_ETHERTYPE.to_bytes(2, 'big')
    f[14:18] = NET_MAGIC.to_bytes(4, 'little')
    f[18:24] = src_mac.to_bytes(6, 'big')
    f[24:26] = length.to_bytes(2, 'little')
    f[26:28] = NET_KIND_DATA.to_bytes(2, 'little')
    f[28:36] = seq.to_bytes(8, 'little')
    # 36..43 aux = 0, 44..47 checksum (0 while it is computed)
    payload = b''.join(splitmix64((key + m) & MASK).to_bytes(8, 'little')
                       for m in range((length - 48 + 7) // 8))
    f[48:] = payload[:length - 48]
    f[44:48] = fnv1a32(f[14:]).to_bytes(4, 'little')
    return bytes(f)


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
            m = re.search(r'tg: count (?:cpu=\d+ )?n=(\d+) sum=([0-9a-f]{16})', line)
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
    elif len(argv) >= 3 and argv[0] == 'blkpattern':
        print(blk_sector(int(argv[1], 0), int(argv[2], 0)).hex())
    elif len(argv) >= 5 and argv[0] in ('blkcheck', 'blkwrite'):
        image, seed, start, sectors = argv[1], int(argv[2], 0), int(argv[3], 0), int(argv[4], 0)
        if argv[0] == 'blkwrite':
            blk_write(image, seed, start, sectors)
            print(f'wrote {sectors} sectors')
            return 0
        bad, first = blk_check(image, seed, start, sectors)
        if bad:
            print(f'blkcheck error sector={first} bad_sectors={bad}')
            return 1
        print(f'blkcheck ok sectors={sectors}')
    elif len(argv) >= 2 and argv[0] == 'blkseqcheck':
        with open(argv[1], errors='replace') as f:
            lines = f.readlines()
        errs = blkseq_check(lines, argv[2] if len(argv) > 2 else None)
        for e in errs:
            print('blkseqcheck error:', e)
        if errs:
            return 1
        print('blkseqcheck ok')
    elif len(argv) >= 3 and argv[0] == 'blkseqblock':
        print(blkseq_block(int(argv[1], 0), int(argv[2], 16)).hex())
    elif len(argv) >= 4 and argv[0] == 'netframe':
        print(net_frame(parse_mac(argv[1]), parse_mac(argv[2]), int(argv[3], 0)).hex())
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
