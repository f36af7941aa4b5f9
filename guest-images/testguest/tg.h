/* Test guest: shared declarations.  Everything here runs at CPL 3 unless
 * noted (exc_handler runs at CPL 0). */
#ifndef TG_H
#define TG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "layout.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t i64;

#define NORETURN __attribute__((noreturn))

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}
static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
/* CPL 3 -> CPL 0 call (see sys_entry in head.S) */
static inline void sys_call(u32 fn, u32 arg, u64 v)
{
	__asm__ volatile("int3"
			 : "+a"(v)
			 : "D"(fn), "S"(arg), "d"((u32)(v >> 32))
			 : "rcx", "memory");
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 rd32(const void *p) { u32 v; __builtin_memcpy(&v, p, 4); return v; }
static inline u64 rd64(const void *p) { u64 v; __builtin_memcpy(&v, p, 8); return v; }
static inline u16 rd16(const void *p) { u16 v; __builtin_memcpy(&v, p, 2); return v; }
/* Pointer to a physical address (identity-mapped).  The empty asm hides the
 * constant from gcc, which otherwise warns about "accessing address 0x40e". */
static inline void *phys(u64 a)
{
	__asm__("" : "+r"(a));
	return (void *)a;
}

/* lib.c */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void serial_init(void);
int serial_getc(void);                  /* -1 if nothing received */
void con_write(const char *s, size_t n); /* whole buffer under the console lock */
void con_write_panic(const char *s, size_t n);
void tg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* hw.c */
struct e820_entry {
	u64 addr, size;
	u32 type;
} __attribute__((packed));

#define E820_MAX 128
extern struct e820_entry e820[E820_MAX];
extern int e820_count;
extern char cmdline[2048];
extern u64 tsc_khz;
extern const char *tsc_source;
extern const char *cpu_source;        /* "mptable", "madt" or "none" */

struct cpu {
	u32 apic;
	volatile u32 state;             /* CPU_* */
};
#define CPU_PENDING 0
#define CPU_ONLINE 1
#define CPU_LOST 2                      /* did not report in time */
extern struct cpu cpus[MAX_CPUS];
extern int ncpus;                       /* CPUs found in MP table / MADT */
extern volatile int cpus_online;
extern volatile int slot_cpu[MAX_CPUS]; /* CPU slot -> logical index */

void idt_init(void);
void boot_params_read(void);
u64 ram_total(void);
void map_high_ram(void);
void cpus_detect(void);
void tsc_init(void);
void delay_ms(u64 ms);
void start_aps(void);
int cpu_index_of_apic(u32 apic);
u32 my_apic_id(void);
NORETURN void park(void);
NORETURN void reboot(void);

/* main.c */
NORETURN void bsp_main(void);
NORETURN void ap_main(u32 slot);

/* head.S */
extern char _end[], exc_stubs[], sys_entry[], ap_tramp[], ap_tramp_end[];
extern char kstacks[], ustacks[];
extern u64 pdpt[512];
extern u64 boot_params_phys;

#endif
