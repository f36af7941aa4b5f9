/*
 * PCI: configuration mechanism #1 (ports 0xCF8/0xCFC), bus 0 only, all 32
 * slots and the functions of multifunction devices.  BARs are used as
 * firmware/the VMM assigned them; an unassigned (zero) BAR of a device we
 * enable gets an address from a simple bump allocator in the 32-bit hole
 * 0xC0000000-0xFEBFFFFF (I/O BARs: 0xC000-0xFFFF), avoiding every BAR that
 * is already assigned on the bus.
 */
#include "tg.h"

struct pci_dev pci_devs[PCI_MAX_DEVS];
int pci_ndevs;
static int scanned, pci_verbose;

#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc

static u32 cfg_addr(const struct pci_dev *d, u16 off)
{
	return 0x80000000u | (u32)d->bus << 16 | (u32)d->dev << 11 | (u32)d->fn << 8 | (off & 0xfc);
}

/* Natural-size accesses at 0xCFC + (off & 3), as Linux does. */
u8 pci_read8(const struct pci_dev *d, u16 off)
{
	outl(PCI_ADDR, cfg_addr(d, off));
	return inb((u16)(PCI_DATA + (off & 3)));
}

u16 pci_read16(const struct pci_dev *d, u16 off)
{
	outl(PCI_ADDR, cfg_addr(d, off));
	return inw((u16)(PCI_DATA + (off & 2)));
}

u32 pci_read32(const struct pci_dev *d, u16 off)
{
	outl(PCI_ADDR, cfg_addr(d, off));
	return inl(PCI_DATA);
}

void pci_write16(const struct pci_dev *d, u16 off, u16 v)
{
	outl(PCI_ADDR, cfg_addr(d, off));
	outw((u16)(PCI_DATA + (off & 2)), v);
}

void pci_write32(const struct pci_dev *d, u16 off, u32 v)
{
	outl(PCI_ADDR, cfg_addr(d, off));
	outl(PCI_DATA, v);
}

/* Reads (and sizes) the six BARs of a type-0 header.  Decoding is switched
 * off while a BAR holds all-ones. */
static void read_bars(struct pci_dev *d)
{
	u16 cmd = pci_read16(d, 0x04);
	pci_write16(d, 0x04, cmd & ~0x3);
	for (int i = 0; i < 6; i++) {
		struct pci_bar *b = &d->bar[i];
		u16 off = (u16)(0x10 + 4 * i);
		u32 orig = pci_read32(d, off);
		pci_write32(d, off, 0xffffffff);
		u32 mask = pci_read32(d, off);
		pci_write32(d, off, orig);
		if (!mask || mask == 0xffffffff) /* not implemented */
			continue;
		if (orig & 1) {
			b->io = 1;
			b->addr = orig & ~3u;
			b->size = (~(mask & ~3u) + 1) & 0xffff;
			continue;
		}
		b->pref = (orig >> 3) & 1;
		b->addr = orig & ~0xfu;
		u64 m = mask & ~0xfu;
		if (((orig >> 1) & 3) == 2 && i < 5) {  /* 64-bit */
			b->mem64 = 1;
			u16 hoff = (u16)(off + 4);
			u32 ohi = pci_read32(d, hoff);
			pci_write32(d, hoff, 0xffffffff);
			u32 mhi = pci_read32(d, hoff);
			pci_write32(d, hoff, ohi);
			b->addr |= (u64)ohi << 32;
			m |= (u64)mhi << 32;
			b->size = ~m + 1;
			i++;                            /* upper half */
		} else {
			b->size = (u32)(~(u32)m + 1);
		}
	}
	pci_write16(d, 0x04, cmd);
}

void pci_scan(int verbose)
{
	if (scanned)
		return;
	scanned = 1;
	pci_verbose = verbose;
	for (u8 dev = 0; dev < 32; dev++) {
		for (u8 fn = 0; fn < 8; fn++) {
			if (pci_ndevs == PCI_MAX_DEVS)
				return;
			struct pci_dev *d = &pci_devs[pci_ndevs];
			memset(d, 0, sizeof(*d));
			d->dev = dev;
			d->fn = fn;
			u32 id = pci_read32(d, 0x00);
			if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0) {
				if (fn == 0)
					break;          /* no device in this slot */
				continue;
			}
			d->vendor = (u16)id;
			d->device = (u16)(id >> 16);
			d->class = pci_read32(d, 0x08) >> 8;
			d->hdr = pci_read8(d, 0x0e);
			snprintf(d->bdf, sizeof(d->bdf), "%02x:%02x.%x", d->bus, dev, fn);
			/* BARs of type-0 headers, but never touch bridges (the host
			 * bridge's command register may gate more than its BARs) */
			if ((d->hdr & 0x7f) == 0 && (d->class >> 16) != 0x06)
				read_bars(d);
			pci_ndevs++;
			if (verbose)
				tg_printf("tg: pci dev=%s id=%04x:%04x class=%06x\n", d->bdf, d->vendor,
					  d->device, d->class);
			if (fn == 0 && !(d->hdr & 0x80))
				break;                  /* single-function device */
		}
	}
}

u8 pci_find_cap(const struct pci_dev *d, u8 id, u8 start)
{
	if (!(pci_read16(d, 0x06) & 0x10))     /* status: capability list */
		return 0;
	u8 p = start ? pci_read8(d, (u16)(start + 1)) : pci_read8(d, 0x34);
	for (int n = 0; n < 48 && p >= 0x40; n++) {
		p &= 0xfc;
		if (pci_read8(d, p) == id)
			return p;
		p = pci_read8(d, (u16)(p + 1));
	}
	return 0;
}

/* ---- BAR assignment ---- */
#define MMIO_HOLE_START 0xc0000000ull
#define MMIO_HOLE_END 0xfec00000ull            /* IOAPIC, LAPIC above */
#define IO_START 0xc000ull
#define IO_END 0x10000ull

static int overlaps_any(u64 a, u64 size, int io, u64 *next)
{
	for (int i = 0; i < pci_ndevs; i++)
		for (int j = 0; j < 6; j++) {
			const struct pci_bar *b = &pci_devs[i].bar[j];
			if (!b->size || !b->addr || b->io != io)
				continue;
			if (a < b->addr + b->size && b->addr < a + size) {
				*next = b->addr + b->size;
				return 1;
			}
		}
	return 0;
}

static u64 alloc_range(u64 size, int io)
{
	u64 lo = io ? IO_START : MMIO_HOLE_START, hi = io ? IO_END : MMIO_HOLE_END;
	if (!io && size < 4096)
		size = 4096;                    /* keep BARs in their own pages */
	u64 a = (lo + size - 1) & ~(size - 1), next;
	while (a + size <= hi) {
		if (!overlaps_any(a, size, io, &next))
			return a;
		a = (next + size - 1) & ~(size - 1);
	}
	return 0;
}

/*
 * Makes the device usable: assigns unassigned BARs (pcireassign=1 on the
 * command line first forgets what firmware assigned, to test that path),
 * maps BARs above 4 GiB, and enables memory/I/O decoding and bus mastering.
 * Returns -1 if a BAR could not be placed.
 */
int pci_enable(struct pci_dev *d)
{
	u16 cmd = pci_read16(d, 0x04);
	int io_used = 0, mem_used = 0;
	if (opt_u64("pcireassign", 0)) {
		pci_write16(d, 0x04, cmd & ~0x7);
		for (int i = 0; i < 6; i++) {
			if (!d->bar[i].size)
				continue;
			d->bar[i].addr = 0;
			pci_write32(d, (u16)(0x10 + 4 * i), d->bar[i].io ? 1 : 0);
			if (d->bar[i].mem64)
				pci_write32(d, (u16)(0x14 + 4 * i), 0);
		}
	}
	for (int i = 0; i < 6; i++) {
		struct pci_bar *b = &d->bar[i];
		if (!b->size)
			continue;
		if (b->io)
			io_used = 1;
		else
			mem_used = 1;
		if (b->addr) {
			if (!b->io && map_mmio(b->addr, b->size)) {
				tg_printf("tg: error pci dev=%s bar=%d addr=0x%lx cannot be mapped\n",
					  d->bdf, i, b->addr);
				return -1;
			}
			continue;
		}
		u64 a = alloc_range(b->size, b->io);
		if (!a) {
			tg_printf("tg: error pci dev=%s bar=%d size=0x%lx no room\n", d->bdf, i, b->size);
			return -1;
		}
		pci_write16(d, 0x04, cmd & ~0x3);
		u16 off = (u16)(0x10 + 4 * i);
		u32 lowbits = pci_read32(d, off) & (b->io ? 0x3 : 0xf);
		pci_write32(d, off, (u32)a | lowbits);
		if (b->mem64)
			pci_write32(d, (u16)(off + 4), (u32)(a >> 32));
		b->addr = a;
		if (pci_verbose)
			tg_printf("tg: pci dev=%s bar=%d assigned=0x%lx size=0x%lx\n", d->bdf, i, a, b->size);
	}
	/* bus master, decoding, and INTx disabled: the drivers poll */
	cmd = (u16)(cmd | 0x400 | 0x4 | (mem_used ? 0x2 : 0) | (io_used ? 0x1 : 0));
	pci_write16(d, 0x04, cmd);
	return 0;
}

/* ---- test=pci: list devices, BARs and virtio capabilities ---- */
NORETURN void test_pci(void)
{
	static const char *const vcap[] = { "?", "common", "notify", "isr", "device", "pci-cfg",
					    "shm", "vendor" };
	pci_scan(1);
	for (int i = 0; i < pci_ndevs; i++) {
		struct pci_dev *d = &pci_devs[i];
		for (int b = 0; b < 6; b++)
			if (d->bar[b].size)
				tg_printf("tg: pci bar dev=%s bar=%d addr=0x%lx size=0x%lx type=%s%s\n", d->bdf, b,
					  d->bar[b].addr, d->bar[b].size,
					  d->bar[b].io ? "io" : d->bar[b].mem64 ? "mem64" : "mem32",
					  d->bar[b].pref ? " prefetchable" : "");
		for (u8 p = 0, n = 0; n < 48; n++) {
			p = p ? pci_read8(d, (u16)(p + 1)) : ((pci_read16(d, 0x06) & 0x10) ? pci_read8(d, 0x34) : 0);
			p &= 0xfc;
			if (p < 0x40)
				break;
			u8 id = pci_read8(d, p);
			if (id == 0x09 && virtio_type(d)) {
				u8 t = pci_read8(d, (u16)(p + 3));
				tg_printf("tg: pci cap dev=%s at=0x%x virtio=%s bar=%u offset=0x%x length=0x%x",
					  d->bdf, p, vcap[t < 8 ? t : 0], pci_read8(d, (u16)(p + 4)),
					  pci_read32(d, (u16)(p + 8)), pci_read32(d, (u16)(p + 12)));
				if (t == 2)
					tg_printf(" notify_off_multiplier=%u", pci_read32(d, (u16)(p + 16)));
				tg_printf("\n");
			} else if (id == 0x11) {
				u16 ctl = pci_read16(d, (u16)(p + 2));
				tg_printf("tg: pci cap dev=%s at=0x%x msix vectors=%u enabled=%u table=0x%x pba=0x%x\n",
					  d->bdf, p, (ctl & 0x7ff) + 1, ctl >> 15, pci_read32(d, (u16)(p + 4)),
					  pci_read32(d, (u16)(p + 8)));
			} else {
				tg_printf("tg: pci cap dev=%s at=0x%x id=0x%02x\n", d->bdf, p, id);
			}
		}
	}
	tg_printf("tg: pci ok devices=%d\n", pci_ndevs);
	reboot();
}

/*
 * ---- test=barmove: the boot CPU moves a virtio device's BAR 0 back and
 * forth (PCI config writes) while every other CPU reads that BAR (MMIO), so
 * the VMM remaps a BAR while other vCPUs are inside it.  A VMM that holds
 * the device's lock while it waits for its MMIO map deadlocks here.
 */
static volatile u64 barmove_addr[2];    /* set: the readers start */
static volatile int barmove_stop;
static volatile int barmove_readers_done;
static volatile u64 barmove_reads;

void barmove_reader(void)
{
	while (!__atomic_load_n(&barmove_addr[1], __ATOMIC_ACQUIRE))
		cpu_relax();
	u64 n = 0;
	while (!__atomic_load_n(&barmove_stop, __ATOMIC_ACQUIRE)) {
		(void)mmio_r32(barmove_addr[n & 1]);    /* wherever the BAR is now */
		n++;
	}
	__atomic_add_fetch(&barmove_reads, n, __ATOMIC_RELEASE);
	__atomic_add_fetch(&barmove_readers_done, 1, __ATOMIC_RELEASE);
}

NORETURN void test_barmove(int online)
{
	pci_scan(0);
	struct pci_dev *d = 0;
	for (int i = 0; i < pci_ndevs && !d; i++)
		if (virtio_type(&pci_devs[i]))
			d = &pci_devs[i];
	if (!d || !d->bar[0].size || d->bar[0].io || pci_enable(d)) {
		tg_printf("tg: error barmove needs a virtio device with a memory BAR 0\n");
		reboot();
	}
	const u64 home = d->bar[0].addr, away = alloc_range(d->bar[0].size, 0);
	if (!away || away >> 32) {
		tg_printf("tg: error barmove found no second place for BAR 0\n");
		reboot();
	}
	const u16 num_queues = mmio_r16(home + 18);     /* common config num_queues */
	__atomic_store_n(&barmove_addr[0], home, __ATOMIC_RELEASE);
	__atomic_store_n(&barmove_addr[1], away, __ATOMIC_RELEASE);
	const u64 moves = opt_u64("moves", 400);
	for (u64 i = 1; i <= moves; i++)
		pci_write32(d, 0x10, (u32)((i & 1) ? away : home));
	pci_write32(d, 0x10, (u32)home);
	__atomic_store_n(&barmove_stop, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&barmove_readers_done, __ATOMIC_ACQUIRE) < online - 1)
		cpu_relax();
	const u16 after = mmio_r16(home + 18);
	if (!num_queues || after != num_queues)
		tg_printf("tg: error barmove num_queues=%u before and %u after the moves\n", num_queues, after);
	else
		tg_printf("tg: barmove ok moves=%lu reads=%lu readers=%d\n", moves, barmove_reads, online - 1);
	reboot();
}
