#!/usr/bin/env python3
"""Boots the test guest under QEMU/KVM and checks its output.

usage: qemu_check.py BZIMAGE [--machines microvm,pc] [--smp 1,2,4]
                             [--tests boot,smp,count,shell[,panic]] [-v]

Exit status 0 if every run produced the expected lines, the numbers match
reference.py and QEMU exited by itself.  Needs /dev/kvm and
qemu-system-x86_64.
"""
import argparse
import os
import re
import subprocess
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
    if test in ('smp', 'count'):
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            ok = reference.check(tg)
        if not ok:
            errs.append('reference mismatch: ' + buf.getvalue().strip())
    return errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('image')
    ap.add_argument('--machines', default='microvm,pc')
    ap.add_argument('--smp', default='1,2,4')
    ap.add_argument('--tests', default='boot,smp,count,shell')
    ap.add_argument('--timeout', type=float, default=120)
    ap.add_argument('-v', '--verbose', action='store_true')
    args = ap.parse_args()

    failures = 0
    for machine in args.machines.split(','):
        for smp in map(int, args.smp.split(',')):
            for test in args.tests.split(','):
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
    print('all ok' if not failures else f'{failures} failures')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
