#!/usr/bin/env python3
"""Boots the test guest under QEMU/KVM and checks its output.

usage: qemu_check.py BZIMAGE [--machines microvm,pc] [--smp 1,2,4]
                             [--tests boot,smp,count,countall,dirty,shell[,panic][,pci,blk,blkseq,net,net3,netbench,msix,ring]] [-v]

Exit status 0 if every run produced the expected lines, the numbers match
reference.py and QEMU exited by itself.  Needs /dev/kvm and
qemu-system-x86_64.

The device tests (pci, blk, net, net3, netbench, msix, ring; not in the default set) run
once, on -M pc with the first --smp value, with virtio-pci modern devices:
  pci       test=pci lists the virtio devices and their capabilities
  blk       test=blk on a scratch image + a read-only disk, image checked from
            the host with reference.py, test=blkverify in a second VM (also
            with a wrong seed, which must fail), inject=badhead (NEEDS_RESET,
            reset, recovery) with BARs reassigned by the guest (pcireassign=1)
  blkseq    test=blkseq on a fresh image (every block fresh, image decoded from
            the host), then again with msix=1 flush=1 over more blocks (the
            old blocks must decode to the first run's tags)
  net       two VMs joined by -netdev socket (TCP on 127.0.0.1), test=net
  net3      three VMs on netswitch.py (unix socket, -netdev stream)
  netbench  send/recv and ping/pong for 1 s each (sanity only)
  msix      the drivers with msix=1 (MSI-X interrupts): test=blk (mask/PBA
            test, interrupts counted on both disks), inject=badhead with
            evidx=1 qd=1 (config-change interrupt on NEEDS_RESET), test=net
            between two VMs, netbench send/recv and ping/pong
  ring      test=ring count=3000 on three VMs (netswitch.py), consoles
            checked with reference.ring_check; again with msix=1; then with
            netswitch dropping one test frame and doubling one (runs that
            must fail with "tg: ring error")
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

TESTS = {
    # name: (extra cmdline, stdin)
    'boot': ('test=boot', b''),
    'smp': ('test=smp', b''),
    'count': ('test=count steps=3 mb=64', b''),
    'countall': ('test=count allcpus=1 steps=2 mb=32', b''),
    'dirty': ('test=dirty steps=3 fill=64 rate=8', b''),
    'shell': ('', b'hello\nreboot\n'),
    # not in the default set: QEMU exits 0 on the triple fault too
    'panic': ('test=shell', b'panic\n'),
}


def qemu_cmd(image, machine, smp, append):
    return ['qemu-system-x86_64', '-enable-kvm', '-cpu', 'host,arch-capabilities=off',
            '-M', machine, '-nodefaults', '-nographic', '-no-reboot',
            '-serial', 'stdio', '-monitor', 'none',
            '-kernel', image, '-append', append, '-smp', str(smp), '-m', '512M']


def run_qemu(cmd, stdin, timeout):
    """Runs QEMU; stdin is written only once the guest printed "tg: shell"
    (on -M pc, SeaBIOS's serial console would swallow earlier input)."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    chunks = []
    shell_seen = threading.Event()

    def reader():
        buf = b''
        for chunk in iter(lambda: p.stdout.read1(4096), b''):
            chunks.append(chunk)
            buf += chunk
            if b'tg: shell' in buf:
                shell_seen.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    if stdin and shell_seen.wait(timeout):
        p.stdin.write(stdin)
        p.stdin.flush()
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = 'timeout'
    p.stdin.close()
    t.join(5)
    return b''.join(chunks).decode(errors='replace'), rc


def expect(test, smp, out):
    """Returns a list of problems with the guest output."""
    lines = [l.rstrip('\r') for l in out.splitlines()]
    tg = [l for l in lines if l.startswith('tg: ')]
    errs = []
    if not any(re.fullmatch(rf'tg: ready cpus={smp} ram=\d+ cmdline=".*"', l) for l in tg):
        errs.append(f'no "tg: ready cpus={smp}" line')
    for l in tg:
        if l.startswith(('tg: panic', 'tg: error', 'tg: warn', 'tg: count error')) and \
                not (test == 'panic' and l.startswith('tg: panic cpu=0 vector=6 ')):
            errs.append(f'unexpected: {l}')
    want = {
        'boot': ['tg: boot ok'],
        'smp': [f'tg: smp ok cpus={smp}'],
        'count': [],
        'countall': [],
        'dirty': ['tg: dirty filled mb=64'],
        'shell': ['tg: shell', 'tg: echo hello', 'tg: echo reboot'],
        'panic': ['tg: shell', 'tg: echo panic'],
    }[test]
    if test == 'panic' and not any(l.startswith('tg: panic cpu=0 vector=6 ') for l in tg):
        errs.append('missing "tg: panic cpu=0 vector=6"')
    for w in want:
        if w not in tg:
            errs.append(f'missing "{w}"')
    if test == 'smp':
        cpus = sorted(int(m.group(1)) for l in tg
                      if (m := re.match(r'tg: smp cpu=(\d+) ', l)))
        if cpus != list(range(smp)):
            errs.append(f'smp lines for cpus {cpus}')
    if test == 'count':
        ns = [int(m.group(1)) for l in tg if (m := re.match(r'tg: count n=(\d+) sum=', l))]
        if ns != [1, 2, 3]:
            errs.append(f'count steps {ns}')
    if test == 'countall':
        got = sorted((int(m.group(1)), int(m.group(2))) for l in tg
                     if (m := re.match(r'tg: count cpu=(\d+) n=(\d+) sum=', l)))
        if got != [(c, n) for c in range(smp) for n in (1, 2)]:
            errs.append(f'count cpu/steps {got}')
    if test == 'dirty':
        steps = [(int(m.group(1)), int(m.group(2)), int(m.group(3))) for l in tg
                 if (m := re.fullmatch(r'tg: dirty n=(\d+) mb=8 step_us=(\d+) maxgap_us=(\d+)', l))]
        if [n for n, _, _ in steps] != [1, 2, 3]:
            errs.append(f'dirty steps {steps}')
        # 8 MiB at memory speed: well under a second, gaps inside the step
        errs += [f'dirty step implausible: n={n} step_us={st} maxgap_us={g}'
                 for n, st, g in steps if not 0 < st < 1000000 or g > st]
    if test in ('smp', 'count', 'countall'):
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            ok = reference.check(tg)
        if not ok:
            errs.append('reference mismatch: ' + buf.getvalue().strip())
    return errs


DEVICE_TESTS = ('pci', 'blk', 'blkseq', 'net', 'net3', 'netbench', 'msix', 'ring')


def tg_lines(out):
    return [l.rstrip('\r') for l in out.splitlines() if l.startswith('tg: ')]


def common_errs(out, rc):
    errs = [f'unexpected: {l}' for l in tg_lines(out)
            if l.startswith(('tg: panic', 'tg: error', 'tg: warn', 'tg: msix fail', 'tg: msix mask fail'))
            or l.endswith(' msix refused')]
    if rc != 0:
        errs.append(f'qemu exit status {rc}')
    return errs


def want_lines(out, wanted):
    tg = tg_lines(out)
    return [f'missing "{w}"' for w in wanted if w not in tg]


def want_msix(out, devs):
    """Every device in devs reported MSI-X interrupts."""
    tg = tg_lines(out)
    return [f'no interrupts reported for {d}' for d in devs
            if not any(re.fullmatch(rf'tg: msix dev={d} vectors=\d+ interrupts=[1-9]\d*', l) for l in tg)]


def dev_blk(image, smp, timeout, msix=False):
    """Yields (name, cmd, out, errs)."""
    tmp = tempfile.mkdtemp(prefix='tg-blk-')
    try:
        d0, d1 = os.path.join(tmp, 'd0.img'), os.path.join(tmp, 'ro.img')
        with open(d0, 'wb') as f:
            f.truncate(64 << 20)
        with open(d1, 'wb') as f:
            f.write(os.urandom(1 << 20))
        drives = ['-drive', f'if=none,id=d0,file={d0},format=raw,cache=none',
                  '-device', 'virtio-blk-pci,drive=d0,disable-legacy=on,serial=tg-disk0',
                  '-drive', f'if=none,id=d1,file={d1},format=raw,readonly=on',
                  '-device', 'virtio-blk-pci,drive=d1,disable-legacy=on,serial=tg-ro']
        rng = 'seed=5 start=100 sectors=3000'
        disks = ['tg: blk disk=0 capacity=131072 ro=0 id=tg-disk0',
                 'tg: blk disk=1 capacity=2048 ro=1 id=tg-ro']
        runs = [
            ('blk', f'test=blk {rng} qd=16',
             disks + ['tg: blk write ok sectors=3000', 'tg: blk verify ok',
                      'tg: blk ro-write status=1 disk=1', 'tg: blk ok'], []),
            ('blkverify', f'test=blkverify {rng} evidx=1',
             disks + ['tg: blk verify ok', 'tg: blk ok'], []),
            ('blkverify-bad', 'test=blkverify seed=6 start=100 sectors=3000',
             ['tg: blk verify error sector=100 bad_sectors=3000', 'tg: blk fail'], []),
            ('blk-inject', f'test=blk inject=badhead pcireassign=1 pci=verbose evidx=1 seed=9 start=4000 sectors=500',
             ['tg: virtio dev=00:02.0 needs-reset',
              'tg: blk inject=badhead disk=0 needs_reset=1 status=-1', 'tg: blk disk=0 reset ok',
              'tg: blk write ok sectors=500', 'tg: blk verify ok', 'tg: blk ok'], []),
        ]
        if msix:
            runs = [
                ('blk-msix', f'test=blk {rng} msix=1',
                 disks + ['tg: blk write ok sectors=3000', 'tg: msix mask ok', 'tg: blk verify ok',
                          'tg: blk ro-write status=1 disk=1', 'tg: blk ok'], ['00:02.0', '00:03.0']),
                ('blk-msix-inject', 'test=blk inject=badhead evidx=1 msix=1 qd=1 seed=9 start=4000 sectors=500',
                 ['tg: virtio dev=00:02.0 needs-reset',
                  'tg: blk inject=badhead disk=0 needs_reset=1 status=-1',
                  'tg: info msix dev=00:02.0 needs-reset config_interrupts=1', 'tg: blk disk=0 reset ok',
                  'tg: blk write ok sectors=500', 'tg: msix mask ok', 'tg: blk verify ok', 'tg: blk ok'],
                 ['00:02.0', '00:03.0']),
            ]
        for name, extra, wanted, msix_devs in runs:
            cmd = qemu_cmd(image, 'pc', smp, f'console=ttyS0 reboot=k panic=-1 acpi=off {extra}') + drives
            out, rc = run_qemu(cmd, b'', timeout)
            errs = want_lines(out, wanted) + want_msix(out, msix_devs)
            errs += [e for e in common_errs(out, rc) if 'blk verify error' not in e]
            if name in ('blk', 'blk-msix'):
                bad, first = reference.blk_check(d0, 5, 100, 3000)
                if bad:
                    errs.append(f'host check: {bad} bad sectors, first {first}')
                with open(d0, 'rb') as f:
                    if f.read(100 * 512).strip(b'\0') or f.seek(3100 * 512) and f.read(512).strip(b'\0'):
                        errs.append('host check: data outside the written range')
            if name in ('blk-inject', 'blk-msix-inject') and reference.blk_check(d0, 9, 4000, 500)[0]:
                errs.append('host check: inject run data wrong')
            yield name, cmd, out, errs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dev_blkseq(image, smp, timeout):
    """test=blkseq twice on one image: first all blocks fresh, then (msix=1,
    more blocks) every old block decodes to the tag of the first run."""
    tmp = tempfile.mkdtemp(prefix='tg-blkseq-')
    try:
        d0 = os.path.join(tmp, 'd0.img')
        with open(d0, 'wb') as f:
            f.truncate(1 << 20)
        drives = ['-drive', f'if=none,id=d0,file={d0},format=raw,cache=none',
                  '-device', 'virtio-blk-pci,drive=d0,disable-legacy=on']
        first = {}
        for name, extra, blocks in (('blkseq', 'test=blkseq blocks=10 delay=0', 10),
                                    ('blkseq-again', 'test=blkseq blocks=1000 delay=0 msix=1 flush=1', 256)):
            cmd = qemu_cmd(image, 'pc', smp, f'console=ttyS0 reboot=k panic=-1 acpi=off {extra}') + drives
            out, rc = run_qemu(cmd, b'', timeout)
            tg = tg_lines(out)
            errs = common_errs(out, rc) + want_lines(out, [f'tg: blkseq done blocks={blocks}'])
            steps = {int(m.group(1)): (m.group(2), m.group(3)) for l in tg
                     if (m := re.fullmatch(r'tg: blkseq k=(\d+) before=(\S+) tag=([0-9a-f]{16})', l))}
            if not first:
                errs += reference.blkseq_check(tg, d0)
                first = {k: tag for k, (_, tag) in steps.items()}
            else:
                errs += [e for e in reference.blkseq_check(tg, d0) if 'not fresh' not in e]
                errs += [f'block {k}: before={b}, want {first.get(k, "0")}' for k, (b, _) in steps.items()
                         if b != first.get(k, '0')]
            yield name, cmd, out, errs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_many(cmds, timeout):
    procs = []
    outs = []
    for i, cmd in enumerate(cmds):
        f = tempfile.TemporaryFile()
        procs.append((subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f,
                                       stderr=subprocess.STDOUT), f))
        if i == 0:
            time.sleep(0.3)     # the listening side first
    for p, f in procs:
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = 'timeout'
        f.seek(0)
        outs.append((f.read().decode(errors='replace'), rc))
        f.close()
    return outs


def mac(i):
    return f'52:54:00:00:00:{i:02x}'


def dev_net(image, smp, timeout, n, count, extra=''):
    port = free_port()
    sw = None
    tmp = tempfile.mkdtemp(prefix='tg-net-')
    try:
        if n == 2:
            nds = [f'socket,id=n0,listen=127.0.0.1:{port}', f'socket,id=n0,connect=127.0.0.1:{port}']
        else:
            path = os.path.join(tmp, 'sw.sock')
            sw = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(
                os.path.abspath(__file__)), 'netswitch.py'), path, '--ports', str(n),
                '--timeout', str(timeout)], stderr=subprocess.DEVNULL)
            for _ in range(100):
                if os.path.exists(path):
                    break
                time.sleep(0.05)
            nds = [f'stream,id=n0,server=off,addr.type=unix,addr.path={path}'] * n
        cmds = []
        for i in range(1, n + 1):
            peers = ','.join(mac(j) for j in range(1, n + 1) if j != i)
            evidx = i % 2     # mix both notification schemes
            app = (f'console=ttyS0 reboot=k panic=-1 acpi=off test=net me={mac(i)} '
                   f'peers={peers} count={count} hello=1 evidx={evidx} {extra}'.strip())
            cmds.append(qemu_cmd(image, 'pc', smp, app) +
                        ['-netdev', nds[i - 1], '-device',
                         f'virtio-net-pci,netdev=n0,disable-legacy=on,mac={mac(i)}'])
        outs = run_many(cmds, timeout)
        for i, (out, rc) in enumerate(outs, 1):
            wanted = [f'tg: net peer={mac(j)} sent={count} received={count} lost=0 dup=0 '
                      f'reorder=0 corrupt=0' for j in range(1, n + 1) if j != i] + ['tg: net ok']
            errs = want_lines(out, wanted) + common_errs(out, rc)
            if 'msix=1' in extra:
                errs += want_msix(out, ['00:02.0'])
            yield f'net{n}{"-msix" if extra else ""}-vm{i}', cmds[i - 1], out, errs
    finally:
        if sw:
            sw.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def switch(tmp, n, timeout, extra=()):
    path = os.path.join(tmp, 'sw.sock')
    sw = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(
        os.path.abspath(__file__)), 'netswitch.py'), path, '--ports', str(n),
        '--timeout', str(timeout), *extra], stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(path):
            break
        time.sleep(0.05)
    return sw, f'stream,id=n0,server=off,addr.type=unix,addr.path={path}'


def dev_ring(image, smp, timeout, n=3, count=3000):
    """test=ring on n VMs: clean runs must pass ring_check, runs with a
    dropped or doubled frame must fail."""
    macs = ','.join(mac(i) for i in range(1, n + 1))
    for name, extra, fault in (('ring', '', ()), ('ring-msix', 'msix=1', ()),
                               ('ring-drop', 'timeout=15', ('--drop', '3000')),
                               ('ring-dup', 'timeout=15', ('--dup', '3000'))):
        tmp = tempfile.mkdtemp(prefix='tg-ring-')
        sw = None
        try:
            sw, nd = switch(tmp, n, timeout, fault)
            cmds = [qemu_cmd(image, 'pc', smp,
                             f'console=ttyS0 reboot=k panic=-1 acpi=off test=ring me={i} n={n} '
                             f'vvmm.macs={macs} count={count} report=500 {extra}'.strip()) +
                    ['-netdev', nd, '-device', f'virtio-net-pci,netdev=n0,disable-legacy=on,mac={mac(i + 1)}']
                    for i in range(n)]
            outs = run_many(cmds, timeout)
            problems = reference.ring_check({f'vm{i}': out for i, (out, _) in enumerate(outs)})
            for i, (out, rc) in enumerate(outs):
                if not fault:
                    errs = want_lines(out, [f'tg: ring ready me={i} n={n}']) + common_errs(out, rc)
                    if not any(re.fullmatch(rf'tg: ring ok ms=\d+ msgs={count * (n - 1)}', l) for l in tg_lines(out)):
                        errs.append('no "tg: ring ok" line')
                    errs += [p for p in problems if p.startswith(f'vm{i}:') or p.startswith('stream')]
                    if 'msix=1' in extra:
                        errs += want_msix(out, ['00:02.0'])
                else:
                    errs = [f'qemu exit status {rc}'] if rc != 0 else []
                    if i == n - 1 and not any(re.match(r'tg: ring error from=\d+ ', l)
                                              for o, _ in outs for l in tg_lines(o)):
                        errs.append(f'{fault[0]}: no VM reported "tg: ring error from=..."')
                yield f'{name}-vm{i}', cmds[i], out, errs
        finally:
            if sw:
                sw.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)


def dev_netbench(image, smp, timeout, extra=''):
    for a, b in (('send', 'recv'), ('ping', 'pong')):
        port = free_port()
        cmds = []
        for i, role, nd in ((1, a, f'listen=127.0.0.1:{port}'), (2, b, f'connect=127.0.0.1:{port}')):
            app = (f'console=ttyS0 reboot=k panic=-1 acpi=off test=netbench me={mac(i)} '
                   f'peer={mac(3 - i)} role={role} secs=1 {extra}'.strip())
            cmds.append(qemu_cmd(image, 'pc', smp, app) +
                        ['-netdev', f'socket,id=n0,{nd}', '-device',
                         f'virtio-net-pci,netdev=n0,disable-legacy=on,mac={mac(i)}'])
        outs = run_many(cmds, timeout)
        pats = {'send': r'tg: netbench role=send frames=[1-9]\d* mbps=\d+\.\d',
                'recv': r'tg: netbench role=recv frames=[1-9]\d* mbps=\d+\.\d fps=\d+ lost=0 ',
                'ping': r'tg: netbench rtt_us_median=\d+ rtt_us_p99=\d+ pings=[1-9]',
                'pong': r'tg: netbench role=pong pongs=[1-9]'}
        for (out, rc), role, cmd in zip(outs, (a, b), cmds):
            errs = common_errs(out, rc)
            if not any(re.match(pats[role], l) for l in tg_lines(out)):
                errs.append(f'no line matching {pats[role]}')
            if 'msix=1' in extra:
                errs += want_msix(out, ['00:02.0'])
            yield f'netbench{"-msix" if extra else ""}-{role}', cmd, out, errs


def dev_pci(image, smp, timeout):
    cmd = qemu_cmd(image, 'pc', smp, 'console=ttyS0 reboot=k panic=-1 acpi=off test=pci') + [
        '-device', 'virtio-blk-pci,disable-legacy=on,drive=d0', '-drive',
        'if=none,id=d0,file=null-co://,format=raw', '-device', 'virtio-net-pci,disable-legacy=on']
    out, rc = run_qemu(cmd, b'', timeout)
    errs = common_errs(out, rc) + want_lines(out, [
        'tg: pci dev=00:00.0 id=8086:1237 class=060000',
        'tg: pci dev=00:02.0 id=1af4:1042 class=010000',
        'tg: pci dev=00:03.0 id=1af4:1041 class=020000', 'tg: pci ok devices=6'])
    for d in ('00:02.0', '00:03.0'):
        for c in ('common', 'notify', 'isr', 'device'):
            if not any(l.startswith(f'tg: pci cap dev={d} ') and f'virtio={c} ' in l for l in tg_lines(out)):
                errs.append(f'no virtio {c} capability listed for {d}')
    yield 'pci', cmd, out, errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('image')
    ap.add_argument('--machines', default='microvm,pc')
    ap.add_argument('--smp', default='1,2,4')
    ap.add_argument('--tests', default='boot,smp,count,countall,dirty,shell')
    ap.add_argument('--timeout', type=float, default=120)
    ap.add_argument('-v', '--verbose', action='store_true')
    args = ap.parse_args()

    failures = 0
    tests = args.tests.split(',')
    for machine in args.machines.split(','):
        for smp in map(int, args.smp.split(',')):
            for test in [t for t in tests if t not in DEVICE_TESTS]:
                extra, stdin = TESTS[test]
                append = f'console=ttyS0 reboot=k panic=-1 acpi=off {extra}'.strip()
                cmd = qemu_cmd(args.image, machine, smp, append)
                t0 = time.monotonic()
                out, rc = run_qemu(cmd, stdin, args.timeout)
                dt = time.monotonic() - t0
                errs = expect(test, smp, out)
                if rc != 0:
                    errs.append(f'qemu exit status {rc}')
                status = 'ok  ' if not errs else 'FAIL'
                print(f'{status} {machine:8} smp={smp} {test:6} {dt:6.2f}s', flush=True)
                if errs or args.verbose:
                    for e in errs:
                        print(f'     - {e}')
                    if errs:
                        print('     $ ' + ' '.join(repr(c) if ' ' in c else c for c in cmd))
                    for l in out.splitlines():
                        print(f'     | {l}')
                failures += bool(errs)
    smp = int(args.smp.split(',')[0])
    gens = {'pci': lambda: dev_pci(args.image, smp, args.timeout),
            'blk': lambda: dev_blk(args.image, smp, args.timeout),
            'blkseq': lambda: dev_blkseq(args.image, smp, args.timeout),
            'net': lambda: dev_net(args.image, smp, args.timeout, 2, 100000),
            'net3': lambda: dev_net(args.image, smp, args.timeout, 3, 20000),
            'netbench': lambda: dev_netbench(args.image, smp, args.timeout),
            'ring': lambda: dev_ring(args.image, smp, args.timeout),
            'msix': lambda: (r for g in (dev_blk(args.image, smp, args.timeout, msix=True),
                                         dev_net(args.image, smp, args.timeout, 2, 20000, 'msix=1'),
                                         dev_netbench(args.image, smp, args.timeout, 'msix=1'))
                             for r in g)}
    for test in [t for t in tests if t in DEVICE_TESTS]:
        t0 = time.monotonic()
        for name, cmd, out, errs in gens[test]():
            dt = time.monotonic() - t0
            t0 = time.monotonic()
            print(f'{"ok  " if not errs else "FAIL"} pc       smp={smp} {name:18} {dt:6.2f}s', flush=True)
            if errs or args.verbose:
                for e in errs:
                    print(f'     - {e}')
                if errs:
                    print('     $ ' + ' '.join(repr(c) if ' ' in c else c for c in cmd))
                for l in out.splitlines():
                    print(f'     | {l}')
            failures += bool(errs)
    print('all ok' if not failures else f'{failures} failures')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
