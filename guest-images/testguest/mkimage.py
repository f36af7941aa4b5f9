#!/usr/bin/env python3
"""Packs the test guest into a Linux x86 boot-protocol bzImage.

usage: mkimage.py setup.elf kernel.elf out.bzImage

The real-mode setup (linked at 0) is padded to whole sectors and followed by
the protected-mode part (linked at 0x100000).  setup_sects, syssize and
init_size in the setup header are filled in here.
"""
import struct
import sys

KERNEL_BASE = 0x100000


def load_elf(path, base):
    """Returns (flat image of the PT_LOAD file contents starting at base,
    end address of the loaded memory incl. bss)."""
    data = open(path, 'rb').read()
    if data[:4] != b'\x7fELF' or data[4] != 2:
        sys.exit(f'{path}: not an ELF64 file')
    phoff, = struct.unpack_from('<Q', data, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', data, 0x36)
    segs = []
    for i in range(phnum):
        p_type, _flags, off, _vaddr, paddr, filesz, memsz, _align = \
            struct.unpack_from('<IIQQQQQQ', data, phoff + i * phentsize)
        if p_type == 1 and memsz:
            if paddr < base:
                sys.exit(f'{path}: segment at {paddr:#x} below {base:#x}')
            segs.append((paddr, data[off:off + filesz], memsz))
    file_end = max(p + len(b) for p, b, _ in segs)
    mem_end = max(p + m for p, _, m in segs)
    img = bytearray(file_end - base)
    for p, b, _ in segs:
        img[p - base:p - base + len(b)] = b
    return img, mem_end


def main():
    setup_elf, kernel_elf, out = sys.argv[1:4]
    setup, _ = load_elf(setup_elf, 0)
    kernel, mem_end = load_elf(kernel_elf, KERNEL_BASE)

    if setup[0x1fe:0x200] != b'\x55\xaa' or setup[0x202:0x206] != b'HdrS':
        sys.exit('setup: boot_flag/HdrS missing')
    sects = max((len(setup) + 511) // 512, 2)
    setup += bytes(sects * 512 - len(setup))
    init_size = (mem_end - KERNEL_BASE + 4095) & ~4095

    setup[0x1f1] = sects - 1                                   # setup_sects
    struct.pack_into('<I', setup, 0x1f4, (len(kernel) + 15) // 16)   # syssize
    struct.pack_into('<I', setup, 0x260, init_size)            # init_size
    with open(out, 'wb') as f:
        f.write(setup)
        f.write(kernel)


if __name__ == '__main__':
    main()
