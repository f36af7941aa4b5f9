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
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
/* MMIO accessors: one plain mov each (KVM's emulator decodes them). */
static inline u8 mmio_r8(u64 a) { u8 v; __asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory"); return v; }
static inline u16 mmio_r16(u64 a) { u16 v; __asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline u32 mmio_r32(u64 a) { u32 v; __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline void mmio_w8(u64 a, u8 v) { __asm__ volatile("movb %0, (%1)" : : "q"(v), "r"(a) : "memory"); }
static inline void mmio_w16(u64 a, u16 v) { __asm__ volatile("movw %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static inline void mmio_w32(u64 a, u32 v) { __asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static inline void mfence(void) { __asm__ volatile("mfence" ::: "memory"); }
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

int irq_setup(void);                    /* device interrupts at CPL 3 (msix=1); 0 = ok */
extern volatile u32 irq_count[IRQ_NVEC];/* per vector from IRQ_VEC_BASE (head.S stubs) */

u64 tsc_to_us(u64 cycles);
int map_mmio(u64 addr, u64 len);        /* uncached identity map above 4 GiB */
void *dma_alloc(u64 size, u64 align);   /* zeroed RAM above the kernel, 0 if none */

/* main.c */
NORETURN void bsp_main(void);
NORETURN void ap_main(u32 slot);
int opt(const char *key, char *out, size_t outsz);
u64 opt_u64(const char *key, u64 def);
int streq(const char *a, const char *b);
u64 splitmix64(u64 z);

/* pci.c */
#define PCI_MAX_DEVS 64
struct pci_bar {
	u64 addr, size;
	u8 io, mem64, pref;
};
struct pci_dev {
	u8 bus, dev, fn, hdr;
	u16 vendor, device;
	u32 class;                      /* class << 16 | subclass << 8 | prog-if */
	char bdf[8];                    /* "bb:dd.f" */
	struct pci_bar bar[6];
	u8 msix_vec0, msix_nvec;        /* CPU vectors given to its MSI-X entries (kept over resets) */
};
extern struct pci_dev pci_devs[PCI_MAX_DEVS];
extern int pci_ndevs;
void pci_scan(int verbose);
u8 pci_read8(const struct pci_dev *d, u16 off);
u16 pci_read16(const struct pci_dev *d, u16 off);
u32 pci_read32(const struct pci_dev *d, u16 off);
void pci_write16(const struct pci_dev *d, u16 off, u16 v);
void pci_write32(const struct pci_dev *d, u16 off, u32 v);
int pci_enable(struct pci_dev *d);      /* size/assign BARs, enable mem/io + bus master */
u8 pci_find_cap(const struct pci_dev *d, u8 id, u8 start);
NORETURN void test_pci(void);
NORETURN void test_barmove(int online);
void barmove_reader(void);               /* the other CPUs' part of test=barmove */

/* virtio.c */
struct sg {
	u64 addr;
	u32 len;
};
struct virtio_dev;
struct vq {
	struct virtio_dev *vd;
	u16 index, size, num_free, free_head, last_used, avail_idx, kicked;
	int evidx;
	struct vring_desc *desc;
	volatile u16 *avail;            /* flags, idx, ring[size], used_event */
	volatile u8 *used;              /* flags, idx, {id, len}[size], avail_event */
	u64 notify;                     /* MMIO address of this queue's notify register */
	void **cookie;
	u64 notifies, kicks;
	int cb_on;                      /* interrupts requested (flags 0 / used_event = last_used) */
	u16 msix_entry;                 /* MSI-X table entry (msix=1) */
	u8 vec;                         /* its CPU vector */
	u64 completions;                /* chains taken from the used ring */
};
#define VIRTIO_MSIX_MAX 4               /* table entries used per device: config + 3 queues */
struct virtio_dev {
	struct pci_dev *pci;
	int type;                       /* virtio device id: 1 net, 2 blk */
	u64 common, notify, isr, cfg;   /* MMIO addresses of the capability regions */
	u32 notify_mult, cfg_len;
	u64 dev_features, features;     /* offered, negotiated */
	int failed;                     /* needs-reset reported */
	/* MSI-X (msix=1): entry 0 = config changes, entry 1 + i = queue i */
	int msix;                       /* in use */
	u8 msix_cap;
	u16 msix_n;                     /* entries used */
	u64 msix_table, msix_pba;       /* MMIO addresses */
	struct vq *msix_q[VIRTIO_MSIX_MAX - 1];
	u64 msix_sleeps, msix_missed;
};
#define VIRTIO_F_EVENT_IDX (1ull << 29)
#define VIRTIO_F_VERSION_1 (1ull << 32)
int virtio_type(const struct pci_dev *p);
int virtio_init(struct virtio_dev *vd, struct pci_dev *p, u64 wanted);
int virtio_vq_setup(struct virtio_dev *vd, struct vq *q, u16 index, u16 maxsize);
int virtio_driver_ok(struct virtio_dev *vd);
int virtio_check(struct virtio_dev *vd);  /* 0 ok; -1 (and reported once) if NEEDS_RESET */
u8 virtio_cfg8(struct virtio_dev *vd, u32 off);
u16 virtio_cfg16(struct virtio_dev *vd, u32 off);
u32 virtio_cfg32(struct virtio_dev *vd, u32 off);
u64 virtio_cfg64(struct virtio_dev *vd, u32 off);
int vq_add(struct vq *q, const struct sg *sg, int nout, int nin, void *cookie);
void vq_kick(struct vq *q);
void *vq_get(struct vq *q, u32 *len);
void vq_inject_bad_head(struct vq *q);
/* MSI-X mode (virtio.c; see there) */
extern int msix_failures;               /* "tg: msix fail" lines printed */
int virtio_msix_setup(struct virtio_dev *vd, int nqueues);  /* after virtio_init, before the queues */
int vq_cb_enable(struct vq *q);         /* request interrupts; 1 if used entries are pending already */
void vq_cb_disable(struct vq *q);
int vq_pending(struct vq *q);           /* used ring has entries we have not taken */
u32 vq_irqs(struct vq *q);              /* interrupts received on the queue's vector */
u32 virtio_config_irqs(struct virtio_dev *vd);  /* ... on the configuration-change vector */
int vq_sleep(struct vq *const *qs, int n, u64 until);
void virtio_msix_mask(struct virtio_dev *vd, int entry, int masked);
int virtio_msix_pending(struct virtio_dev *vd, int entry);  /* PBA bit */
int virtio_msix_report(struct virtio_dev *vd);  /* tg: msix dev=... line; -1 = test must fail */

/* blk.c, net.c, ring.c */
NORETURN void test_blk(int verify_only);
NORETURN void test_blkbench(void);
NORETURN void test_blkseq(void);
NORETURN void test_net(void);
NORETURN void test_netbench(void);
NORETURN void test_ring(void);

/* net.c: the virtio-net driver and the frame format (README.md, "net frame"),
 * shared by test=net, test=netbench and test=ring. */
#define NET_HDR 12                      /* virtio-net header (VERSION_1) */
#define BUFSZ 2048
#define ETHERTYPE 0x88b5
#define MAGIC 0x746e6774u               /* "tgnt" */
#define MIN_FRAME 60
#define MAX_FRAME 1514
#define PAYLOAD 48                      /* offset of the payload */
/* frame kinds (u16 at offset 26) */
#define K_DATA 1
#define K_HELLO 2
#define K_HELLO_ACK 3
#define K_BENCH 4
#define K_END 5
#define K_PING 6
#define K_PONG 7
#define K_RDATA 8                       /* test=ring (ring.c) */
#define K_RACK 9
#define K_RTOKEN 10
#define K_RPROBE 11
#define K_RPROBE_REPLY 12

static inline void st16(u8 *p, u16 v) { __builtin_memcpy(p, &v, 2); }
static inline void st32(u8 *p, u32 v) { __builtin_memcpy(p, &v, 4); }
static inline void st64(u8 *p, u64 v) { __builtin_memcpy(p, &v, 8); }

extern struct virtio_dev nvd;
extern struct vq rxq, txq;
extern int ntxfree, ntxbufs;            /* free / all TX buffers */
extern u64 mymac, devmac;               /* 48-bit MACs in the low bits */
extern int link_up;
extern u64 tx_frames, rx_frames;
int nic_init(int me_is_mac);            /* 0 ok; errors printed */
void put_mac(u8 *p, u64 mac);
u64 get_mac(const u8 *p);
int parse_mac(const char *s, u64 *out); /* stops at NUL or ','; -1 if malformed */
char *fmt_mac(char *buf, u64 m);        /* buf: 18 bytes */
u32 frame_csum(const u8 *f, u32 len);
u32 data_len(u64 key);                  /* 60..1514 from a payload key */
void fill_payload(u8 *f, u32 len, u64 key);
int check_payload(const u8 *f, u32 len, u64 key);
void build_hdr(u8 *f, u64 dst, u16 kind, u64 seq, u64 aux, u32 len);
void seal(u8 *f, u32 len);              /* checksum, after the payload is in place */
int ours(const u8 *f, u32 len);         /* ethertype + magic */
void poll_link(void);
int tx_reap(void);
u8 *tx_buf(void);                       /* frame at +NET_HDR; 0 if none free */
void tx_queue(u8 *b, u32 len, int split);
void tx_drain(u64 limit_cycles);
int rx_poll(void (*fn)(const u8 *f, u32 len));
int send_ctl(u64 dst, u16 kind, u64 seq, u64 aux, u32 len, int block);
void net_sleep(u64 until);              /* msix=1: wait for an RX/TX interrupt */

/* head.S */
extern char _end[], exc_stubs[], sys_entry[], irq_stubs[], irq_spurious[], ap_tramp[], ap_tramp_end[];
extern char kstacks[], ustacks[];
extern u64 pdpt[512];
extern u64 boot_params_phys;

#endif
