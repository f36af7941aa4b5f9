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
  reference.py ringsum SRC DST K      expected "sum=" after K test=ring messages SRC -> DST
  reference.py ringcheck LOG...       check test=ring consoles (one per VM process): no
                                      errors, progress, tx/rx sums agree and are right,
                                      token hops increasing (exit status 1 on problems)
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
ring:  key of message seq = splitmix64(splitmix64(src ^ splitmix64(dst)) ^ seq)
       (MACs as 48-bit integers); sum_0 = 0, sum_{k+1} = splitmix64(sum_k ^ key_k).

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


# ---- test=ring ----
RING_LINE = re.compile(r'tg: ring (tx to|rx from)=(\d+) n=(\d+) sum=0x([0-9a-f]{16})$')
RING_ERRORS = ('tg: ring error', 'tg: ring fail', 'tg: error', 'tg: panic', 'tg: msix fail')


def ring_stream_base(src_mac, dst_mac):
    return splitmix64(src_mac ^ splitmix64(dst_mac))


def ring_key(src_mac, dst_mac, seq):
    """Payload key of DATA message seq from src_mac to dst_mac (the payload
    and the length 60 + key % 1455 follow from it as in test=net)."""
    return splitmix64(ring_stream_base(src_mac, dst_mac) ^ seq)


def ring_sums(src_mac, dst_mac, ks):
    """{K: running sum after K messages} for every K in ks: sum_0 = 0,
    sum_{k+1} = splitmix64(sum_k ^ key_k)."""
    want = sorted(set(ks))
    base = ring_stream_base(src_mac, dst_mac)
    out, s, k = {}, 0, 0
    for target in want:
        while k < target:
            s = splitmix64(s ^ splitmix64(base ^ k))
            k += 1
        out[target] = s
    return out


def ring_sum(src_mac, dst_mac, k):
    """Expected "sum=" of "tg: ring tx to=.. n=K" on src and "tg: ring rx from=.. n=K" on dst."""
    return ring_sums(src_mac, dst_mac, [k])[k]


def ring_check(logs, macs=None, index=None):
    """Checks test=ring consoles.  logs: {name: console text}.  A log's VM
    index is taken from its "tg: ring ready me=I" line, else from
    index[name] (a console that starts after a restore has no ready line);
    the MACs from the cmdline on "tg: ready", else from macs (list in
    cluster order).  Returns a list of problems (empty = fine): error or
    fail lines; a log without any tx/rx report (no progress); a (src -> dst,
    K) whose tx and rx sums (over all logs, repeats included) differ or
    differ from ring_sum(); token hops not strictly increasing within a log
    or not = me mod n.  Pass each process's console as its own log: a VM
    restored from an earlier checkpoint prints some lines again."""
    problems = []
    seen = {}                           # (src, dst, K) -> {sum: [where]}
    n_vms = None
    for name, text in logs.items():
        lines = [l.rstrip('\r') for l in text.splitlines()]
        lines = [l[l.index('tg: '):] for l in lines if 'tg: ' in l]
        me = index.get(name) if index else None
        progress = 0
        last_hop = None
        for l in lines:
            if l.startswith(RING_ERRORS):
                problems.append(f'{name}: {l}')
            m = re.fullmatch(r'tg: ring ready me=(\d+) n=(\d+)', l)
            if m:
                me, n_vms = int(m.group(1)), int(m.group(2))
                continue
            m = re.search(r'tg: ready .* cmdline=".*\bvvmm\.macs=([0-9a-fA-F:,]+)', l)
            if m and macs is None:
                macs = [parse_mac(x) for x in m.group(1).split(',')]
                continue
            m = RING_LINE.fullmatch(l)
            if m:
                if me is None:
                    problems.append(f'{name}: report before knowing which VM this is: {l}')
                    continue
                other, k, s = int(m.group(2)), int(m.group(3)), int(m.group(4), 16)
                pair = (me, other) if m.group(1) == 'tx to' else (other, me)
                seen.setdefault(pair + (k,), {}).setdefault(s, []).append(f'{name} {m.group(1).split()[0]}')
                progress += 1
                continue
            m = re.fullmatch(r'tg: ring token hops=(\d+)', l)
            if m:
                hop = int(m.group(1))
                if last_hop is not None and hop <= last_hop:
                    problems.append(f'{name}: token hops={hop} after hops={last_hop}')
                if me is not None and n_vms and hop % n_vms != me:
                    problems.append(f'{name}: token hops={hop} is not {me} mod {n_vms}')
                last_hop = hop
        if me is None:
            problems.append(f'{name}: no "tg: ring ready" line and no index given')
        if not progress:
            problems.append(f'{name}: no progress (no "tg: ring tx/rx" report)')
    expected = {}
    if macs:
        streams = {}
        for (src, dst, k) in seen:
            streams.setdefault((src, dst), []).append(k)
        for (src, dst), ks in streams.items():
            if src >= len(macs) or dst >= len(macs):
                problems.append(f'stream {src}->{dst}: VM index outside vvmm.macs')
                continue
            for k, s in ring_sums(macs[src], macs[dst], ks).items():
                expected[(src, dst, k)] = s
    for key in sorted(seen):
        sums = seen[key]
        src, dst, k = key
        if len(sums) > 1:
            problems.append(f'stream {src}->{dst} n={k}: sums differ: ' +
                            ', '.join(f'0x{s:016x} ({" ".join(w)})' for s, w in sums.items()))
        elif key in expected and expected[key] not in sums:
            (s, w), = sums.items()
            problems.append(f'stream {src}->{dst} n={k}: sum 0x{s:016x} ({" ".join(w)}), '
                            f'expected 0x{expected[key]:016x}')
    return problems


def ring_selftest():
    macs = [0x525400AA0000 + i for i in range(3)]
    assert ring_sum(macs[0], macs[1], 0) == 0
    assert ring_sum(macs[0], macs[1], 2) == splitmix64(splitmix64(ring_key(macs[0], macs[1], 0)) ^
                                                       ring_key(macs[0], macs[1], 1))
    cmd = 'tg: ready cpus=1 ram=1 cmdline="test=ring vvmm.macs=' + ','.join(
        ':'.join(f'{m:012x}'[i:i + 2] for i in range(0, 12, 2)) for m in macs) + '"'

    def logs(mutate=None):
        out = {}
        for i in range(3):
            ls = [cmd, f'tg: ring ready me={i} n=3']
            for k in (100, 200):
                for j in range(3):
                    if j != i:
                        ls.append(f'tg: ring tx to={j} n={k} sum=0x{ring_sum(macs[i], macs[j], k):016x}')
                        ls.append(f'tg: ring rx from={j} n={k} sum=0x{ring_sum(macs[j], macs[i], k):016x}')
                ls.append(f'tg: ring token hops={i + 3 * k}')
            out[f'vm{i}'] = '\n'.join(ls) + '\n'
        if mutate:
            mutate(out)
        return out
    assert ring_check(logs()) == [], ring_check(logs())

    def bad_sum(o):
        o['vm1'] = o['vm1'].replace(f'rx from=0 n=200 sum=0x{ring_sum(macs[0], macs[1], 200):016x}',
                                    f'rx from=0 n=200 sum=0x{ring_sum(macs[0], macs[1], 199):016x}')

    def bad_both(o):        # tx and rx agree but are not the stream's sum
        for name, i, j in (('vm0', 0, 1), ('vm1', 1, 0)):
            word = 'tx to=1' if i == 0 else 'rx from=0'
            o[name] = o[name].replace(f'{word} n=100 sum=0x{ring_sum(macs[0], macs[1], 100):016x}',
                                      f'{word} n=100 sum=0x{1:016x}')

    def token_back(o):
        o['vm2'] += 'tg: ring token hops=5\n'

    def error_line(o):
        o['vm0'] += 'tg: ring error from=2 expected=7 got=8\ntg: ring fail\n'

    def no_progress(o):
        o['vm2'] = cmd + '\ntg: ring ready me=2 n=3\n'
    for mut, want in ((bad_sum, 'sums differ'), (bad_both, 'expected'), (token_back, 'token hops=5'),
                      (error_line, 'ring error'), (no_progress, 'no progress')):
        p = ring_check(logs(mut))
        assert any(want in x for x in p), (mut.__name__, p)
    # a restored console: no ready line, VM known from index
    o = logs()
    o['vm0-restored'] = '\n'.join(l for l in o['vm0'].splitlines() if 'n=200' in l or 'hops=600' in l)
    assert ring_check(o, index={'vm0-restored': 0}) == []
    assert any('no "tg: ring ready"' in x for x in ring_check(o))


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
    elif len(argv) >= 4 and argv[0] == 'ringsum':
        print(f'0x{ring_sum(parse_mac(argv[1]), parse_mac(argv[2]), int(argv[3], 0)):016x}')
    elif len(argv) >= 2 and argv[0] == 'ringcheck':
        logs = {}
        for path in argv[1:]:
            with open(path, errors='replace') as f:
                logs[path] = f.read()
        problems = ring_check(logs)
        for p in problems:
            print('ringcheck error:', p)
        if problems:
            return 1
        print(f'ringcheck ok logs={len(logs)}')
    elif argv and argv[0] == 'selftest':
        for idx in range(4):
            for iters in (0, 1, 2, 3, 1000, 4321):
                assert smp_result(idx, iters) == smp_result_naive(idx, iters)
        for n in (1, 2, 3, 77):
            for words in (0, 1, 2, 5, 1000, 4099):
                assert apply(xs_series(words), count_seed(n)) == count_sum_naive(n, words)
        ring_selftest()
        print('selftest ok')
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
