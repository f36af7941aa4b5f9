/* Hardware-facing code: boot_params, page tables, MP/ACPI tables, TSC,
 * LAPIC and AP start-up, reboot, and the (CPL 0) exception handler. */
#include "tg.h"

struct e820_entry e820[E820_MAX];
int e820_count;
char cmdline[2048];
u64 tsc_khz;
const char *tsc_source = "none";
struct cpu cpus[MAX_CPUS];
int ncpus;
volatile int cpus_online;
volatile int slot_cpu[MAX_CPUS];

/* ---- IDT (lives in user-writable memory, so CPL 3 fills it) ---- */
struct idt_gate {
	u16 off0, sel;
	u8 ist, attr;
	u16 off1;
	u32 off2, rsvd;
};
extern struct idt_gate idt[256];

static void set_gate(int vec, const void *handler, int dpl)
{
	u64 a = (u64)handler;
	idt[vec] = (struct idt_gate){
		.off0 = (u16)a, .sel = SEL_KCODE, .ist = 0,
		.attr = (u8)(0x8e | (dpl << 5)),  /* present 64-bit interrupt gate */
		.off1 = (u16)(a >> 16), .off2 = (u32)(a >> 32), .rsvd = 0,
	};
}

void idt_init(void)
{
	for (int v = 0; v < 32; v++)
		set_gate(v, exc_stubs + 16 * v, 0);
	set_gate(3, sys_entry, 3);      /* int3 = system call */
	/* device interrupts (MSI-X) and the LAPIC spurious vector; the rest
	 * of 32..255 stays not-present (a stray interrupt -> #NP -> panic) */
	for (int v = 0; v < IRQ_NVEC; v++)
		set_gate(IRQ_VEC_BASE + v, irq_stubs + 32 * v, 0);
	set_gate(IRQ_VEC_SPURIOUS, irq_spurious, 0);
}

/* incremented by the CPL 0 stubs in head.S */
volatile u32 irq_count[IRQ_NVEC];

/* ---- boot_params ---- */
void boot_params_read(void)
{
	const u8 *bp = (const u8 *)boot_params_phys;
	u64 p = rd32(bp + 0x228) | ((u64)rd32(bp + 0x0c8) << 32); /* cmd_line_ptr | ext_cmd_line_ptr */
	size_t n = 0;
	if (p) {
		const char *s = (const char *)p;
		while (n < sizeof(cmdline) - 1 && s[n])
			n++;
		memcpy(cmdline, s, n);
	}
	cmdline[n] = 0;
	e820_count = bp[0x1e8];
	if (e820_count > E820_MAX)
		e820_count = E820_MAX;
	memcpy(e820, bp + 0x2d0, sizeof(struct e820_entry) * (size_t)e820_count);
}

u64 ram_total(void)
{
	u64 sum = 0;
	for (int i = 0; i < e820_count; i++)
		if (e820[i].type == 1)
			sum += e820[i].size;
	return sum;
}

/*
 * RAM above 4 GiB is not in the static map: add it here (PDPT entries are
 * not-present -> present, so no TLB flush is needed).  1 GiB pages if the
 * CPU has them, else 2 MiB pages from a small pool.
 */
#define HIGH_PD_POOL 60
static u64 high_pd[HIGH_PD_POOL][512] __attribute__((aligned(4096)));
static int high_pd_used;

void map_high_ram(void)
{
	u32 a, b, c, d;
	cpuid(0x80000000, 0, &a, &b, &c, &d);
	int gbpages = 0;
	if (a >= 0x80000001) {
		cpuid(0x80000001, 0, &a, &b, &c, &d);
		gbpages = (d >> 26) & 1;
	}
	for (int i = 0; i < e820_count; i++) {
		if (e820[i].type != 1)
			continue;
		u64 end = e820[i].addr + e820[i].size;
		for (u64 g = e820[i].addr >> 30; (g << 30) < end && g < 512; g++) {
			if (g < 4 || pdpt[g])
				continue;
			if (gbpages) {
				pdpt[g] = (g << 30) | 0x87;
			} else if (high_pd_used < HIGH_PD_POOL) {
				u64 *pd = high_pd[high_pd_used++];
				for (u64 j = 0; j < 512; j++)
					pd[j] = (g << 30) + (j << 21) + 0x87;
				barrier();
				pdpt[g] = (u64)pd | 0x7;
			}
		}
	}
}

/*
 * MMIO above 4 GiB (a 64-bit BAR that firmware placed high): identity-map
 * its 1 GiB regions uncached (PCD|PWT).  Returns 0 if it is mapped.
 */
int map_mmio(u64 addr, u64 len)
{
	if (!len)
		return 0;
	u32 a, b, c, d;
	cpuid(0x80000001, 0, &a, &b, &c, &d);
	int gbpages = (d >> 26) & 1;
	for (u64 g = addr >> 30; g <= (addr + len - 1) >> 30; g++) {
		if (g >= 512)
			return -1;
		if (g < 4 || pdpt[g])
			continue;               /* low 4 GiB: static map (3-4 GiB uncached) */
		if (gbpages) {
			pdpt[g] = (g << 30) | 0x9f;     /* P RW US PWT PCD PS */
		} else if (high_pd_used < HIGH_PD_POOL) {
			u64 *pd = high_pd[high_pd_used++];
			for (u64 j = 0; j < 512; j++)
				pd[j] = (g << 30) + (j << 21) + 0x9f;
			barrier();
			pdpt[g] = (u64)pd | 0x7;
		} else {
			return -1;
		}
	}
	return 0;
}

/*
 * DMA memory for device rings and buffers: a bump allocator over the e820
 * RAM above the kernel image (identity-mapped, so virtual = physical).
 * Never freed.  Returns zeroed memory, or 0 if no RAM range has room.
 */
static u64 dma_cur, dma_end;

void *dma_alloc(u64 size, u64 align)
{
	if (align < 64)
		align = 64;
	u64 p = (dma_cur + align - 1) & ~(align - 1);
	if (!dma_cur || p + size > dma_end) {
		/* next e820 RAM range above the current one that fits */
		u64 lo = dma_end ? dma_end : (((u64)_end + 0xfff) & ~0xfffull);
		u64 best = 0, best_end = 0;
		for (int i = 0; i < e820_count; i++) {
			if (e820[i].type != 1)
				continue;
			u64 s = e820[i].addr > lo ? e820[i].addr : lo;
			s = (s + align - 1) & ~(align - 1);
			u64 e = e820[i].addr + e820[i].size;
			for (u64 g = s >> 30; g < (e + (1ull << 30) - 1) >> 30; g++)
				if (g >= 512 || !(pdpt[g] & 1)) {       /* stop at unmapped RAM */
					e = g << 30 > s ? g << 30 : s;
					break;
				}
			if (e > s && e - s >= size && (!best || s < best)) {
				best = s;
				best_end = e;
			}
		}
		if (!best)
			return 0;
		dma_cur = best;
		dma_end = best_end;
		p = best;
	}
	dma_cur = p + size;
	memset((void *)p, 0, size);
	return (void *)p;
}

/* ---- MP table / ACPI ---- */

/* The 64/128 KiB BIOS areas are only probed where the e820 map mentions
 * them (RAM or reserved): a VMM that leaves e.g. 0xE0000-0xFFFFF unbacked
 * would turn every probe into an MMIO exit.  1 KiB areas are always probed. */
static int e820_mentions(u64 a, u64 len)
{
	for (int i = 0; i < e820_count; i++)
		if (e820[i].addr <= a && a + len <= e820[i].addr + e820[i].size)
			return 1;
	return 0;
}

static int sum8(const u8 *p, size_t n)
{
	u8 s = 0;
	while (n--)
		s += *p++;
	return s;
}

static const u8 *find_mpf(u64 base, u64 len)
{
	for (u64 a = base; a + 16 <= base + len; a += 16) {
		if (len > 1024 && !e820_mentions(a, 16))
			continue;
		const u8 *p = (const u8 *)a;
		if (!memcmp(p, "_MP_", 4) && p[8] >= 1 && !sum8(p, 16u * p[8]))
			return p;
	}
	return 0;
}

static void add_cpu(u32 apic)
{
	if (ncpus < MAX_CPUS && cpu_index_of_apic(apic) < 0)
		cpus[ncpus++].apic = apic;
}

static int mp_parse(void)
{
	/* EBDA start, the KiB at/below the end of base memory (BDA 0x413;
	 * 0x9fc00 when the BDA is empty, as under a VMM without BIOS), and
	 * the BIOS area 0xF0000-0xFFFFF. */
	u64 ebda = (u64)rd16(phys(0x40e)) << 4;
	u64 basemem = (u64)rd16(phys(0x413)) * 1024;
	const u64 where[][2] = {
		{ ebda, ebda ? 1024 : 0 },
		{ basemem - 1024, basemem >= 1024 ? 1024 : 0 },
		{ basemem, basemem ? 1024 : 0 },
		{ 0x9fc00, 1024 },
		{ 0xf0000, 0x10000 },
	};
	const u8 *mpf = 0;
	for (size_t i = 0; !mpf && i < sizeof(where) / sizeof(where[0]); i++)
		if (where[i][1])
			mpf = find_mpf(where[i][0], where[i][1]);
	if (!mpf)
		return 0;
	const u8 *t = (const u8 *)(u64)rd32(mpf + 4);
	if (!t || memcmp(t, "PCMP", 4))
		return 0;
	u16 len = rd16(t + 4);
	if (len < 44 || sum8(t, len))
		return 0;
	/* walk by length (some tables, e.g. qboot's, leave the entry count 0) */
	for (const u8 *e = t + 44; e < t + len;) {
		if (e[0] == 0) {
			if (e[3] & 1)           /* enabled */
				add_cpu(e[1]);
			e += 20;
		} else if (e[0] <= 4) {
			e += 8;
		} else {
			break;
		}
	}
	return ncpus > 0;
}

static const u8 *find_rsdp_in(u64 base, u64 len)
{
	for (u64 a = base; a + 20 <= base + len; a += 16) {
		if (len > 1024 && !e820_mentions(a, 20))
			continue;
		const u8 *p = (const u8 *)a;
		if (!memcmp(p, "RSD PTR ", 8) && !sum8(p, 20))
			return p;
	}
	return 0;
}

/* Returns the ACPI table with the given signature, or 0. */
static const u8 *acpi_find(const char *sig)
{
	u16 ebda = rd16(phys(0x40e));
	const u8 *rsdp = ebda ? find_rsdp_in((u64)ebda << 4, 1024) : 0;
	if (!rsdp)
		rsdp = find_rsdp_in(0xe0000, 0x20000);
	if (!rsdp)
		return 0;
	const u8 *root;
	int esz;
	if (rsdp[15] >= 2 && rd64(rsdp + 24)) {
		root = (const u8 *)rd64(rsdp + 24);
		esz = 8;
	} else {
		root = (const u8 *)(u64)rd32(rsdp + 16);
		esz = 4;
	}
	if (!root)
		return 0;
	u32 len = rd32(root + 4);
	for (u32 off = 36; off + esz <= len; off += esz) {
		const u8 *t = (const u8 *)(esz == 8 ? rd64(root + off) : rd32(root + off));
		if (t && !memcmp(t, sig, 4))
			return t;
	}
	return 0;
}

static int madt_parse(void)
{
	const u8 *m = acpi_find("APIC");
	if (!m)
		return 0;
	u32 len = rd32(m + 4);
	for (u32 off = 44; off + 2 <= len && m[off + 1] >= 2; off += m[off + 1]) {
		const u8 *e = m + off;
		if (e[0] == 0 && (rd32(e + 4) & 1))   /* processor local APIC, enabled */
			add_cpu(e[3]);
	}
	return ncpus > 0;
}

const char *cpu_source = "none";

void cpus_detect(void)
{
	/*
	 * MP table first.  But SeaBIOS (QEMU -M pc) lists only the first
	 * logical CPU of each package in its MP table, so if the ACPI MADT
	 * lists more enabled CPUs, use that instead.
	 */
	if (mp_parse())
		cpu_source = "mptable";
	int n_mp = ncpus;
	struct cpu saved[MAX_CPUS];
	memcpy(saved, cpus, sizeof(saved));
	ncpus = 0;
	if (madt_parse() && ncpus > n_mp) {
		cpu_source = "madt";
	} else {
		memcpy(cpus, saved, sizeof(saved));
		ncpus = n_mp;
	}
	/* The BSP is logical CPU 0; the others keep the table order. */
	u32 me = my_apic_id();
	int bsp = cpu_index_of_apic(me);
	if (bsp < 0) {
		if (ncpus == MAX_CPUS)
			ncpus--;
		bsp = ncpus++;
		cpus[bsp].apic = me;
	}
	struct cpu c = cpus[bsp];
	for (int i = bsp; i > 0; i--)
		cpus[i] = cpus[i - 1];
	cpus[0] = c;
	cpus[0].state = CPU_ONLINE;
	cpus_online = 1;
	slot_cpu[0] = 0;
	for (int i = 1; i < MAX_CPUS; i++)
		slot_cpu[i] = -1;
}

int cpu_index_of_apic(u32 apic)
{
	for (int i = 0; i < ncpus; i++)
		if (cpus[i].apic == apic)
			return i;
	return -1;
}

u32 my_apic_id(void)
{
	u32 a, b, c, d;
	cpuid(1, 0, &a, &b, &c, &d);
	return b >> 24;
}

/* ---- TSC ---- */
/*
 * TSC frequency, in order of preference: KVM/VMware timing leaf 0x40000010,
 * CPUID 0x15 (crystal ratio), CPUID 0x16 (base MHz), PIT channel 2 (10 ms
 * measurement), else a 2 GHz guess.
 */
static u64 pit_calibrate(void)
{
	u8 v = inb(0x61);
	if (v == 0xff)
		return 0;                       /* nothing there */
	outb(0x61, (v & ~0x02) | 0x01);         /* gate ch2 on, speaker off */
	outb(0x43, 0xb0);                       /* ch2, lo/hi byte, mode 0 */
	outb(0x42, 11932 & 0xff);               /* 10 ms at 1.193182 MHz */
	outb(0x42, 11932 >> 8);
	u64 t0 = rdtsc();
	if (inb(0x61) & 0x20)
		return 0;                       /* OUT2 should be low now */
	while (!(inb(0x61) & 0x20))
		if (rdtsc() - t0 > 20000000000ull)
			return 0;
	return (rdtsc() - t0) / 10;
}

static void wrmsr_gate(u32 msr, u64 v)
{
	sys_call(SYS_WRMSR, msr, v);
}

/* kvmclock publishes the TSC->ns scale; enable it briefly to read it. */
static struct {
	u32 version, pad0;
	u64 tsc_timestamp, system_time;
	u32 mul;
	int8_t shift;
	u8 flags, pad[2];
} pvti __attribute__((aligned(64)));

static u64 kvmclock_khz(void)
{
	u32 a, b, c, d;
	cpuid(0x40000000, 0, &a, &b, &c, &d);
	if (b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d || a < 0x40000001)  /* "KVMKVMKVM" */
		return 0;
	cpuid(0x40000001, 0, &a, &b, &c, &d);
	if (!(a & (1u << 3)))                   /* KVM_FEATURE_CLOCKSOURCE2 */
		return 0;
	wrmsr_gate(0x4b564d01, (u64)&pvti | 1); /* MSR_KVM_SYSTEM_TIME_NEW, enable */
	u32 v;
	u64 khz = 0;
	for (int tries = 0; tries < 1000 && !khz; tries++) {
		v = __atomic_load_n(&pvti.version, __ATOMIC_ACQUIRE);
		u32 mul = pvti.mul;
		int shift = pvti.shift;
		barrier();
		if (!v || (v & 1) || v != __atomic_load_n(&pvti.version, __ATOMIC_ACQUIRE) || !mul)
			continue;
		khz = (1000000ull << 32) / mul;
		khz = shift < 0 ? khz << -shift : khz >> shift;
	}
	wrmsr_gate(0x4b564d01, 0);              /* stop KVM from writing our memory */
	return khz;
}

void tsc_init(void)
{
	u32 a, b, c, d, max;
	cpuid(0x40000000, 0, &a, &b, &c, &d);
	if (a >= 0x40000010 && a < 0x40010000) {
		cpuid(0x40000010, 0, &a, &b, &c, &d);
		if (a) {
			tsc_khz = a;
			tsc_source = "cpuid-40000010";
			return;
		}
	}
	cpuid(0, 0, &max, &b, &c, &d);
	if (max >= 0x15) {
		cpuid(0x15, 0, &a, &b, &c, &d);
		if (a && b && c) {
			tsc_khz = (u64)c * b / a / 1000;
			tsc_source = "cpuid-15";
			return;
		}
	}
	if (max >= 0x16) {
		cpuid(0x16, 0, &a, &b, &c, &d);
		if (a & 0xffff) {
			tsc_khz = (u64)(a & 0xffff) * 1000;
			tsc_source = "cpuid-16";
			return;
		}
	}
	tsc_khz = kvmclock_khz();
	tsc_source = "kvmclock";
	if (tsc_khz)
		return;
	tsc_khz = pit_calibrate();
	tsc_source = "pit";
	if (!tsc_khz) {
		tsc_khz = 2000000;
		tsc_source = "guess";
	}
}

u64 tsc_to_us(u64 cycles)
{
	return cycles / tsc_khz * 1000 + cycles % tsc_khz * 1000 / tsc_khz;
}

void delay_ms(u64 ms)
{
	u64 t0 = rdtsc();
	while (rdtsc() - t0 < ms * tsc_khz)
		cpu_relax();
}

/* ---- LAPIC / AP start-up ---- */
#define LAPIC_BASE 0xfee00000ul
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310

#define LAPIC_TPR 0x80
#define LAPIC_LVT_LINT0 0x350
#define LVT_MASKED 0x10000

static inline void lapic_write(u32 reg, u32 v) { *(volatile u32 *)(LAPIC_BASE + reg) = v; }
static inline u32 lapic_read(u32 reg) { return *(volatile u32 *)(LAPIC_BASE + reg); }

/* xAPIC MMIO writes work from CPL 3: the page is mapped U/S=1 and the
 * access is trapped and emulated by KVM's in-kernel LAPIC either way. */
static void send_ipi(u32 apic, u32 lo)
{
	lapic_write(LAPIC_ICR_HI, apic << 24);
	lapic_write(LAPIC_ICR_LO, lo);
}

static int ram_covers(u64 a, u64 len)
{
	for (int i = 0; i < e820_count; i++)
		if (e820[i].type == 1 && e820[i].addr <= a && a + len <= e820[i].addr + e820[i].size)
			return 1;
	return 0;
}

void start_aps(void)
{
	if (ncpus < 2)
		return;
	if (!ram_covers(TRAMP_BASE, 0x1000)) {
		tg_printf("tg: warn trampoline page 0x%x is not RAM, not starting APs\n", TRAMP_BASE);
		return;
	}
	memcpy((void *)TRAMP_BASE, ap_tramp, (size_t)(ap_tramp_end - ap_tramp));
	barrier();
	lapic_write(LAPIC_SVR, 0x1ff);          /* software-enable, spurious vector 0xff */
	/* No INIT->SIPI delays: KVM's LAPIC does not need them.  All APs are
	 * started in parallel; each takes a CPU slot when it arrives. */
	for (int i = 1; i < ncpus; i++)
		send_ipi(cpus[i].apic, 0x4500);          /* INIT, assert */
	for (int rep = 0; rep < 2; rep++)
		for (int i = 1; i < ncpus; i++)
			send_ipi(cpus[i].apic, 0x4600 | (TRAMP_BASE >> 12)); /* SIPI */

	u64 t0 = rdtsc(), limit = 2000 * tsc_khz;   /* 2 s */
	while (cpus_online < ncpus && rdtsc() - t0 < limit)
		cpu_relax();
	for (int i = 1; i < ncpus; i++) {
		u32 old = CPU_PENDING;
		if (__atomic_compare_exchange_n(&cpus[i].state, &old, CPU_LOST, 0,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			tg_printf("tg: warn cpu=%d apic=%u did not start\n", i, cpus[i].apic);
	}
}

/*
 * Makes the BSP take device interrupts while it runs at CPL 3 (once; used
 * by msix=1): masks the 8259 PICs and LINT0 (KVM resets the BSP's LINT0 to
 * ExtINT, and SeaBIOS leaves the PIT ticking on IRQ 0 with the PIC based at
 * vector 8, which would look like a #DF), software-enables the LAPIC with
 * TPR 0, sets RFLAGS.IF for CPL 3 (SYS_IRQ) and checks the IDT/stub/EOI
 * path with a self-IPI on IRQ_VEC_SELFTEST.  Returns 0 if it arrived.
 */
int irq_setup(void)
{
	static int done, result;
	if (done)
		return result;
	done = 1;
	outb(0x21, 0xff);                       /* OCW1: mask all (master, slave) */
	outb(0xa1, 0xff);
	lapic_write(LAPIC_LVT_LINT0, lapic_read(LAPIC_LVT_LINT0) | LVT_MASKED);
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_SVR, 0x100 | IRQ_VEC_SPURIOUS);
	sys_call(SYS_IRQ, 1, 0);
	volatile u32 *cnt = &irq_count[IRQ_VEC_SELFTEST - IRQ_VEC_BASE];
	u32 c0 = *cnt;
	u64 t0 = rdtsc();
	lapic_write(LAPIC_ICR_LO, 0x40000 | IRQ_VEC_SELFTEST);  /* self, fixed, edge */
	while (*cnt == c0 && rdtsc() - t0 < 100 * tsc_khz)
		cpu_relax();
	u64 t1 = rdtsc();
	if (*cnt == c0) {
		tg_printf("tg: msix fail reason=selftest-ipi-lost vector=0x%x svr=0x%x tpr=0x%x isr=0x%x irr=0x%x\n",
			  IRQ_VEC_SELFTEST, lapic_read(LAPIC_SVR), lapic_read(LAPIC_TPR),
			  lapic_read(0x100 + 0x10 * (IRQ_VEC_SELFTEST / 32)),
			  lapic_read(0x200 + 0x10 * (IRQ_VEC_SELFTEST / 32)));
		result = -1;
	} else {
		tg_printf("tg: info irq self-ipi ok us=%lu apic=%u lint0=0x%x\n", tsc_to_us(t1 - t0),
			  my_apic_id(), lapic_read(LAPIC_LVT_LINT0));
	}
	return result;
}

NORETURN void park(void)
{
	for (;;)
		sys_call(SYS_PARK, 0, 0);
}

/* ---- reboot ---- */
static void acpi_reset(void)
{
	const u8 *f = acpi_find("FACP");
	if (!f || rd32(f + 4) < 129 || !(rd32(f + 112) & (1u << 10)))   /* RESET_REG_SUP */
		return;
	u8 space = f[116];
	u64 addr = rd64(f + 120);
	u8 val = f[128];
	if (space == 0 && addr && addr < (4ull << 30))
		*(volatile u8 *)addr = val;
	else if (space == 1 && addr < 0x10000)
		outb((u16)addr, val);
}

NORETURN void reboot(void)
{
	outb(0x64, 0xfe);       /* i8042 pulse reset line: what vvmm expects */
	delay_ms(10);
	/* Still here: no i8042 (e.g. QEMU microvm).  Try the ACPI reset
	 * register, then the PCI reset control register. */
	acpi_reset();
	delay_ms(10);
	outb(0xcf9, 0x02);
	outb(0xcf9, 0x06);
	delay_ms(10);
	tg_printf("tg: error reboot failed, forcing triple fault\n");
	for (;;)
		sys_call(SYS_DIE, 0, 0);
}

/* ---- exceptions (runs at CPL 0, emulated: keep it short) ---- */
struct exc_frame {
	u64 vec, err, rip, cs, rflags, rsp, ss;
};

void exc_handler(struct exc_frame *f)
{
	/* kernel stack, or the user stack if we faulted inside a syscall */
	u64 slot = (u64)f < (u64)ustacks ? ((u64)f - (u64)kstacks) >> KSTACK_SHIFT
					 : ((u64)f - (u64)ustacks) >> USTACK_SHIFT;
	int cpu = slot < MAX_CPUS ? slot_cpu[slot] : -1;
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "tg: panic cpu=%d vector=%lu error=0x%lx rip=0x%lx rflags=0x%lx cs=0x%lx\n",
			 cpu, f->vec, f->err, f->rip, f->rflags, f->cs);
	con_write_panic(buf, (size_t)n);
	/* head.S forces a triple fault after we return */
}
