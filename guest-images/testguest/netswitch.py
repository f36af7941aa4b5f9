#!/usr/bin/env python3
"""A tiny Ethernet learning switch for QEMU `-netdev stream` (unix socket).

usage: netswitch.py SOCKET_PATH [--ports N] [--timeout S] [--drop K] [--dup K]

Listens on SOCKET_PATH; each QEMU connects with
  -netdev stream,id=n0,server=off,addr.type=unix,addr.path=SOCKET_PATH
Frames use QEMU's stream framing (4-byte big-endian length, then the frame).
Unicast frames go to the port their destination MAC was learned on, others
are flooded.  Writes are blocking, so a slow receiver slows the senders
down (back-pressure) instead of losing frames.  Exits when every port that
connected has disconnected again (after at least --ports connected), or
after --timeout seconds.  Used by qemu_check.py to run test=net with three
guests; needs no network access, only a unix socket.

Fault injection (for test=ring, which must notice): --drop K loses, --dup K
delivers twice, the K-th (from 1) unicast test frame (ethertype 0x88B5)
that goes to a known port.
"""
import argparse
import os
import select
import socket
import struct
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('path')
    ap.add_argument('--ports', type=int, default=2)
    ap.add_argument('--timeout', type=float, default=600)
    ap.add_argument('--drop', type=int, default=0)
    ap.add_argument('--dup', type=int, default=0)
    args = ap.parse_args()
    try:
        os.unlink(args.path)
    except FileNotFoundError:
        pass
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(args.path)
    ls.listen(16)
    ports = {}                  # socket -> receive buffer
    fdb = {}                    # MAC -> socket
    seen = 0
    frames = 0
    test_frames = 0             # unicast 0x88B5 frames to a known port
    t_end = time.monotonic() + args.timeout
    while time.monotonic() < t_end:
        if seen >= args.ports and not ports:
            break
        r, _, _ = select.select([ls] + list(ports), [], [], 1.0)
        for s in r:
            if s is ls:
                c, _ = ls.accept()
                ports[c] = b''
                seen += 1
                continue
            try:
                data = s.recv(1 << 16)
            except OSError:
                data = b''
            if not data:
                del ports[s]
                for mac in [m for m, p in fdb.items() if p is s]:
                    del fdb[mac]
                s.close()
                continue
            buf = ports[s] + data
            out = {}
            while len(buf) >= 4:
                (n,) = struct.unpack('>I', buf[:4])
                if len(buf) < 4 + n:
                    break
                frame, rec = buf[4:4 + n], buf[:4 + n]
                buf = buf[4 + n:]
                frames += 1
                if n >= 12:
                    fdb[frame[6:12]] = s
                    dst = fdb.get(frame[0:6]) if not frame[0] & 1 else None
                    targets = [dst] if dst is not None else [p for p in ports if p is not s]
                    if dst is not None and frame[12:14] == b'\x88\xb5':
                        test_frames += 1
                        if test_frames == args.drop:
                            print(f'netswitch: dropped test frame {test_frames}', file=sys.stderr)
                            targets = []
                        elif test_frames == args.dup:
                            print(f'netswitch: doubled test frame {test_frames}', file=sys.stderr)
                            targets = [dst, dst]
                    for t in targets:
                        if t is not s:
                            out.setdefault(t, []).append(rec)
            ports[s] = buf
            for t, recs in out.items():
                try:
                    t.sendall(b''.join(recs))
                except OSError:
                    pass        # that port went away; its frames are lost
    print(f'netswitch: {frames} frames, {seen} ports', file=sys.stderr)
    try:
        os.unlink(args.path)
    except FileNotFoundError:
        pass


if __name__ == '__main__':
    main()
