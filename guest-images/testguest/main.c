/* Test guest main program (CPL 3): command line, CPU bring-up, workloads. */
#include "tg.h"

int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* Finds "key=value" among the space-separated words of the command line
 * (the last occurrence wins) and copies the value.  Returns 0 if absent. */
int opt(const char *key, char *out, size_t outsz)
{
	size_t klen = strlen(key);
	int found = 0;
	for (const char *p = cmdline; *p;) {
		while (*p == ' ')
			p++;
		const char *w = p;
		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - w) > klen && !memcmp(w, key, klen) && w[klen] == '=') {
			size_t n = (size_t)(p - w) - klen - 1;
			if (n > outsz - 1)
				n = outsz - 1;
			memcpy(out, w + klen + 1, n);
			out[n] = 0;
			found = 1;
		}
	}
	return found;
}

u64 opt_u64(const char *key, u64 def)
{
	char v[32];
	if (!opt(key, v, sizeof(v)))
		return def;
	u64 x = 0;
	const char *s = v;
	unsigned base = 10;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s; s++) {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (unsigned)((*s | 0x20) - 'a' + 10);
		else
			break;
		x = x * base + d;
	}
	return x;
}

/* ---- workload functions (mirrored in reference.py) ---- */
static inline u64 xorshift64(u64 x)
{
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

u64 splitmix64(u64 z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static u64 count_seed(u64 n)
{
	u64 s = splitmix64(n);
	return s ? s : 1;
}

/* ---- test=smp ---- */
#define JOB_PARK 0
#define JOB_SMP 1
#define JOB_COUNT 2
#define JOB_BARMOVE 3
static volatile int ap_job;
static volatile int smp_go;
static volatile int smp_done;
static u64 smp_iters;

static void smp_run(int idx)
{
	u64 x = (u64)idx + 1;
	for (u64 i = 0; i < smp_iters; i++)
		x = xorshift64(x);
	tg_printf("tg: smp cpu=%d apic=%u result=%016lx\n", idx, cpus[idx].apic, x);
	__atomic_add_fetch(&smp_done, 1, __ATOMIC_RELEASE);
}

/* ---- test=count ---- */
static int mapped(u64 a, u64 len)
{
	for (u64 g = a >> 30; g <= (a + len - 1) >> 30; g++)
		if (g >= 512 || !(pdpt[g] & 1))
			return 0;
	return 1;
}

/* First 2 MiB-aligned RAM range of `size` bytes above the kernel. */
static u64 find_area(u64 size)
{
	const u64 M2 = 0x200000;
	u64 lo = ((u64)_end + M2 - 1) & ~(M2 - 1);
	for (int i = 0; i < e820_count; i++) {
		if (e820[i].type != 1)
			continue;
		u64 s = e820[i].addr > lo ? e820[i].addr : lo;
		s = (s + M2 - 1) & ~(M2 - 1);
		u64 e = e820[i].addr + e820[i].size;
		if (e > s && e - s >= size && (size == 0 || mapped(s, size)))
			return s;
	}
	return 0;
}

/* One count step n over words at p: fill, re-read, check.  cpu < 0: the
 * single-CPU line format. */
static void count_step(u64 *p, u64 words, u64 n, int cpu)
{
	u64 x = count_seed(n);
	for (u64 i = 0; i < words; i++) {
		p[i] = x;
		x = xorshift64(x);
	}
	barrier();      /* the re-read below must really read memory */
	x = count_seed(n);
	u64 sum = 0;
	int bad = 0;
	char who[16] = "";
	if (cpu >= 0)
		snprintf(who, sizeof(who), "cpu=%d ", cpu);
	for (u64 i = 0; i < words; i++) {
		u64 v = p[i];
		if (v != x && !bad) {
			bad = 1;
			tg_printf("tg: count error %sn=%lu at=0x%lx got=%016lx want=%016lx\n",
				  who, n, (u64)&p[i], v, x);
		}
		sum ^= v;
		x = xorshift64(x);
	}
	tg_printf("tg: count %sn=%lu sum=%016lx\n", who, n, sum);
}

/* allcpus=1: every online CPU runs count on its own area (logical index i
 * at count_base + i * count_size), the BSP reboots when all are done. */
static volatile int count_go;
static volatile int count_done;
static u64 count_base, count_size, count_steps, count_delay;

static void count_run(int idx)
{
	u64 *p = (u64 *)(count_base + (u64)idx * count_size);
	for (u64 n = 1; !count_steps || n <= count_steps; n++) {
		count_step(p, count_size / 8, n, idx);
		if (count_delay)
			delay_ms(count_delay);
	}
	__atomic_add_fetch(&count_done, 1, __ATOMIC_RELEASE);
}

static NORETURN void test_count(int online)
{
	u64 mb = opt_u64("mb", 64), steps = opt_u64("steps", 0), delay = opt_u64("delay", 0);
	u64 size = mb << 20, words = size / 8;
	if (opt_u64("allcpus", 0)) {
		/* areas for every listed CPU, so that an index maps to its
		 * area even if some CPU did not start */
		u64 base = mb && (u64)ncpus <= (~0ull >> 1) / size ? find_area(size * (u64)ncpus) : 0;
		if (!base) {
			tg_printf("tg: error count mb=%lu cpus=%d does not fit in RAM\n", mb, ncpus);
			reboot();
		}
		count_base = base;
		count_size = size;
		count_steps = steps;
		count_delay = delay;
		__atomic_store_n(&count_go, 1, __ATOMIC_RELEASE);
		count_run(0);
		while (__atomic_load_n(&count_done, __ATOMIC_ACQUIRE) < online)
			cpu_relax();
		reboot();
	}
	u64 base = find_area(size);
	if (!base) {
		tg_printf("tg: error count mb=%lu does not fit in RAM\n", mb);
		reboot();
	}
	u64 *p = (u64 *)base;
	for (u64 n = 1; !steps || n <= steps; n++) {
		count_step(p, words, n, -1);
		if (delay)
			delay_ms(delay);
	}
	reboot();
}

/* ---- test=dirty ---- */
/*
 * Fills `fill` MiB with non-zero pseudo-random words, then per step
 * rewrites the next `rate` MiB (a window rotating over the area) and takes
 * the TSC after every 4 KiB page: the longest gap between two pages is how
 * long the vCPU was stalled inside the step (VMM pause, copy-on-write fault).
 */
static NORETURN void test_dirty(void)
{
	u64 fill = opt_u64("fill", 64), rate = opt_u64("rate", 8);
	u64 steps = opt_u64("steps", 0), delay = opt_u64("delay", 0);
	u64 base = fill && fill < (1ull << 40) ? find_area(fill << 20) : 0;
	if (!base) {
		tg_printf("tg: error dirty fill=%lu does not fit in RAM\n", fill);
		reboot();
	}
	if (!rate || rate > fill) {
		tg_printf("tg: error dirty rate=%lu must be 1..fill=%lu\n", rate, fill);
		reboot();
	}
	const u64 PW = 4096 / 8;                /* words per page */
	u64 pages = fill << 8, wpages = rate << 8;
	u64 *area = (u64 *)base;
	u64 x = 0x9e3779b97f4a7c15ull;          /* xorshift64 never yields 0 from non-0 */
	for (u64 i = 0; i < pages * PW; i++) {
		x = xorshift64(x);
		area[i] = x;
	}
	tg_printf("tg: dirty filled mb=%lu\n", fill);
	u64 next = 0;                           /* first page of the next window */
	for (u64 n = 1; !steps || n <= steps; n++) {
		u64 t0 = rdtsc(), last = t0, maxgap = 0;
		for (u64 k = 0; k < wpages; k++) {
			u64 *w = area + next * PW;
			for (u64 i = 0; i < PW; i++) {
				x = xorshift64(x);
				w[i] = x;
			}
			if (++next == pages)
				next = 0;
			u64 t = rdtsc();
			if (t - last > maxgap)
				maxgap = t - last;
			last = t;
		}
		tg_printf("tg: dirty n=%lu mb=%lu step_us=%lu maxgap_us=%lu\n", n, rate,
			  tsc_to_us(last - t0), tsc_to_us(maxgap));
		if (delay)
			delay_ms(delay);
	}
	reboot();
}

/* ---- test=shell ---- */
static NORETURN void test_shell(void)
{
	char line[256];
	size_t n = 0;
	int last_cr = 0;
	tg_printf("tg: shell\n");
	for (;;) {
		int c = serial_getc();
		if (c < 0) {
			cpu_relax();
			continue;
		}
		if (c == '\n' && last_cr) {     /* CR LF counts as one line end */
			last_cr = 0;
			continue;
		}
		last_cr = c == '\r';
		if (c == '\r' || c == '\n') {
			line[n] = 0;
			n = 0;
			con_write("\n", 1);
			tg_printf("tg: echo %s\n", line);
			if (streq(line, "reboot"))
				reboot();
			if (streq(line, "panic"))
				__asm__ volatile("ud2");
			continue;
		}
		if (c == 0x7f || c == 0x08) {
			if (n) {
				n--;
				con_write("\b \b", 3);
			}
			continue;
		}
		if (c < 0x20 || n >= sizeof(line) - 1)
			continue;
		line[n++] = (char)c;
		char ch = (char)c;
		con_write(&ch, 1);
	}
}

/* ---- entry points ---- */
NORETURN void bsp_main(void)
{
	idt_init();             /* first: until now any fault triple-faults */
	serial_init();
	boot_params_read();     /* copy cmdline + e820 before anything overwrites low memory */
	map_high_ram();

	char test[32];
	if (!opt("test", test, sizeof(test)))
		memcpy(test, "shell", 6);
	smp_iters = opt_u64("iters", 10000000);
	ap_job = streq(test, "smp") ? JOB_SMP
		 : streq(test, "count") && opt_u64("allcpus", 0) ? JOB_COUNT
		 : streq(test, "barmove") ? JOB_BARMOVE : JOB_PARK;

	tsc_init();
	cpus_detect();
	start_aps();
	int online = 0;
	for (int i = 0; i < ncpus; i++)
		online += cpus[i].state == CPU_ONLINE;

	/* leading newline: firmware (SeaBIOS) may have left a partial line */
	tg_printf("\ntg: ready cpus=%d ram=%lu cmdline=\"%s\"\n", online, ram_total(), cmdline);
	tg_printf("tg: info cpu_table=%s cpus_listed=%d tsc_khz=%lu tsc_source=%s\n",
		  cpu_source, ncpus, tsc_khz, tsc_source);

	char pv[16];
	if (opt("pci", pv, sizeof(pv)) && streq(pv, "verbose"))
		pci_scan(1);

	if (streq(test, "boot")) {
		tg_printf("tg: boot ok\n");
		reboot();
	} else if (streq(test, "smp")) {
		__atomic_store_n(&smp_go, 1, __ATOMIC_RELEASE);
		smp_run(0);
		while (__atomic_load_n(&smp_done, __ATOMIC_ACQUIRE) < online)
			cpu_relax();
		tg_printf("tg: smp ok cpus=%d\n", online);
		reboot();
	} else if (streq(test, "count")) {
		test_count(online);
	} else if (streq(test, "dirty")) {
		test_dirty();
	} else if (streq(test, "blkseq")) {
		test_blkseq();
	} else if (streq(test, "shell")) {
		test_shell();
	} else if (streq(test, "pci")) {
		test_pci();
	} else if (streq(test, "barmove")) {
		test_barmove(online);
	} else if (streq(test, "blk")) {
		test_blk(0);
	} else if (streq(test, "blkverify")) {
		test_blk(1);
	} else if (streq(test, "blkbench")) {
		test_blkbench();
	} else if (streq(test, "net")) {
		test_net();
	} else if (streq(test, "netbench")) {
		test_netbench();
	} else if (streq(test, "ring")) {
		test_ring();
	}
	tg_printf("tg: error unknown test=%s\n", test);
	reboot();
}

NORETURN void ap_main(u32 slot)
{
	int idx = cpu_index_of_apic(my_apic_id());
	if (idx <= 0)
		park();         /* not in the CPU table */
	slot_cpu[slot] = idx;
	u32 old = CPU_PENDING;
	if (!__atomic_compare_exchange_n(&cpus[idx].state, &old, CPU_ONLINE, 0,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		park();         /* the BSP already gave up on us */
	__atomic_add_fetch(&cpus_online, 1, __ATOMIC_RELEASE);
	if (ap_job == JOB_SMP) {
		while (!__atomic_load_n(&smp_go, __ATOMIC_ACQUIRE))
			cpu_relax();
		smp_run(idx);
	} else if (ap_job == JOB_COUNT) {
		while (!__atomic_load_n(&count_go, __ATOMIC_ACQUIRE))
			cpu_relax();
		count_run(idx);
	} else if (ap_job == JOB_BARMOVE) {
		barmove_reader();
	}
	park();
}
