/*
 * virtio-pci modern (virtio 1.x) transport and split virtqueues.
 *
 * Default (polling): MSI-X stays disabled (config/queue vectors are set to
 * VIRTIO_MSI_NO_VECTOR), INTx is disabled in the PCI command register, and
 * the driver asks the device not to interrupt (VRING_AVAIL_F_NO_INTERRUPT,
 * or with VIRTIO_F_EVENT_IDX a used_event kept far away).  Completions are
 * found by polling used->idx.  Notifications honour VRING_USED_F_NO_NOTIFY,
 * or avail_event with VIRTIO_F_EVENT_IDX.
 *
 * msix=1 (virtio_msix_setup): MSI-X enabled, one vector for configuration
 * changes and one per queue, all to the BSP.  As in Linux, the queues ask
 * for interrupts all the time (flags 0, or used_event = the next used
 * index), so every completion (batch) interrupts.  A driver with nothing to
 * do calls vq_sleep(): it re-checks the used ring and spins on the vectors'
 * interrupt counters (incremented by the CPL 0 stubs in head.S).
 */
#include "tg.h"

/* common configuration structure (virtio 1.x, 4.1.4.3) */
#define VC_DFSELECT 0x00
#define VC_DF 0x04
#define VC_GFSELECT 0x08
#define VC_GF 0x0c
#define VC_MSIX 0x10
#define VC_NUMQ 0x12
#define VC_STATUS 0x14
#define VC_CFGGEN 0x15
#define VC_Q_SELECT 0x16
#define VC_Q_SIZE 0x18
#define VC_Q_MSIX 0x1a
#define VC_Q_ENABLE 0x1c
#define VC_Q_NOFF 0x1e
#define VC_Q_DESC 0x20
#define VC_Q_AVAIL 0x28
#define VC_Q_USED 0x30

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40
#define S_FAILED 0x80

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1

int virtio_type(const struct pci_dev *p)
{
	if (p->vendor != 0x1af4)
		return 0;
	if (p->device >= 0x1040 && p->device <= 0x107f)
		return p->device - 0x1040;      /* modern */
	if (p->device == 0x1000)
		return 1;                       /* transitional net */
	if (p->device == 0x1001)
		return 2;                       /* transitional blk */
	return 0;
}

static void fail(struct virtio_dev *vd, const char *what)
{
	tg_printf("tg: error virtio dev=%s %s\n", vd->pci->bdf, what);
	mmio_w8(vd->common + VC_STATUS, mmio_r8(vd->common + VC_STATUS) | S_FAILED);
}

/* Walks the vendor-specific capabilities; takes the first of each type. */
static int find_caps(struct virtio_dev *vd)
{
	struct pci_dev *p = vd->pci;
	for (u8 c = pci_find_cap(p, 0x09, 0); c; c = pci_find_cap(p, 0x09, c)) {
		u8 type = pci_read8(p, (u16)(c + 3)), bar = pci_read8(p, (u16)(c + 4));
		u32 off = pci_read32(p, (u16)(c + 8)), len = pci_read32(p, (u16)(c + 12));
		if (type < 1 || type > 4 || bar > 5 || !p->bar[bar].size || p->bar[bar].io)
			continue;                       /* type 5 = PCI cfg access: unused */
		if ((u64)off + len > p->bar[bar].size)
			continue;
		u64 a = p->bar[bar].addr + off;
		switch (type) {
		case 1:
			if (!vd->common && len >= 0x38)
				vd->common = a;
			break;
		case 2:
			if (!vd->notify) {
				vd->notify = a;
				vd->notify_mult = pci_read32(p, (u16)(c + 16));
			}
			break;
		case 3:
			if (!vd->isr)
				vd->isr = a;
			break;
		case 4:
			if (!vd->cfg) {
				vd->cfg = a;
				vd->cfg_len = len;
			}
			break;
		}
	}
	return vd->common && vd->notify ? 0 : -1;
}

/*
 * Reset, ACKNOWLEDGE, DRIVER, feature negotiation (VERSION_1 required,
 * `wanted` & offered accepted), FEATURES_OK check.  Queues are set up next
 * with virtio_vq_setup(), then virtio_driver_ok().
 */
int virtio_init(struct virtio_dev *vd, struct pci_dev *p, u64 wanted)
{
	memset(vd, 0, sizeof(*vd));
	vd->pci = p;
	vd->type = virtio_type(p);
	if (pci_enable(p))
		return -1;
	if (find_caps(vd)) {
		tg_printf("tg: error virtio dev=%s no modern capabilities\n", p->bdf);
		return -1;
	}
	u64 c = vd->common;
	mmio_w8(c + VC_STATUS, 0);
	u64 t0 = rdtsc();
	while (mmio_r8(c + VC_STATUS)) {
		if (rdtsc() - t0 > 1000 * tsc_khz) {
			tg_printf("tg: error virtio dev=%s reset timeout\n", p->bdf);
			return -1;
		}
		cpu_relax();
	}
	mmio_w16(c + VC_MSIX, 0xffff);         /* no config interrupt */
	mmio_w8(c + VC_STATUS, S_ACKNOWLEDGE);
	mmio_w8(c + VC_STATUS, S_ACKNOWLEDGE | S_DRIVER);
	mmio_w32(c + VC_DFSELECT, 0);
	u64 f = mmio_r32(c + VC_DF);
	mmio_w32(c + VC_DFSELECT, 1);
	f |= (u64)mmio_r32(c + VC_DF) << 32;
	vd->dev_features = f;
	if (!(f & VIRTIO_F_VERSION_1)) {
		fail(vd, "no VIRTIO_F_VERSION_1");
		return -1;
	}
	vd->features = f & (wanted | VIRTIO_F_VERSION_1);
	mmio_w32(c + VC_GFSELECT, 0);
	mmio_w32(c + VC_GF, (u32)vd->features);
	mmio_w32(c + VC_GFSELECT, 1);
	mmio_w32(c + VC_GF, (u32)(vd->features >> 32));
	mmio_w8(c + VC_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
	if (!(mmio_r8(c + VC_STATUS) & S_FEATURES_OK)) {
		fail(vd, "features rejected");
		return -1;
	}
	return 0;
}

int virtio_driver_ok(struct virtio_dev *vd)
{
	mmio_w8(vd->common + VC_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	return virtio_check(vd);
}

int virtio_check(struct virtio_dev *vd)
{
	if (vd->failed)
		return -1;
	u8 s = mmio_r8(vd->common + VC_STATUS);
	if (s & S_NEEDS_RESET) {
		tg_printf("tg: virtio dev=%s needs-reset\n", vd->pci->bdf);
		vd->failed = 1;
		return -1;
	}
	return 0;
}

/* Device configuration: multi-byte reads are retried until
 * config_generation is stable. */
#define CFG_READ(expr)                                                            \
	do {                                                                      \
		u8 g0, g1;                                                        \
		do {                                                              \
			g0 = mmio_r8(vd->common + VC_CFGGEN);                     \
			v = (expr);                                               \
			g1 = mmio_r8(vd->common + VC_CFGGEN);                     \
		} while (g0 != g1);                                               \
	} while (0)

u8 virtio_cfg8(struct virtio_dev *vd, u32 off) { return mmio_r8(vd->cfg + off); }
u16 virtio_cfg16(struct virtio_dev *vd, u32 off) { return mmio_r16(vd->cfg + off); }
u32 virtio_cfg32(struct virtio_dev *vd, u32 off) { return mmio_r32(vd->cfg + off); }
u64 virtio_cfg64(struct virtio_dev *vd, u32 off)
{
	u64 v;
	CFG_READ(mmio_r32(vd->cfg + off) | (u64)mmio_r32(vd->cfg + off + 4) << 32);
	return v;
}

/*
 * Queue `index`: size = min(device maximum, maxsize), rounded down to a
 * power of two; descriptor table, driver and device areas each in their own
 * zeroed page(s) of RAM.
 */
int virtio_vq_setup(struct virtio_dev *vd, struct vq *q, u16 index, u16 maxsize)
{
	u64 c = vd->common;
	memset(q, 0, sizeof(*q));
	q->vd = vd;
	q->index = index;
	q->evidx = !!(vd->features & VIRTIO_F_EVENT_IDX);
	mmio_w16(c + VC_Q_SELECT, index);
	u16 max = mmio_r16(c + VC_Q_SIZE);
	if (!max) {
		tg_printf("tg: error virtio dev=%s queue=%u not available\n", vd->pci->bdf, index);
		return -1;
	}
	u16 n = max < maxsize ? max : maxsize;
	while (n & (n - 1))
		n &= (u16)(n - 1);
	q->size = n;
	q->desc = dma_alloc(16ull * n, 4096);
	q->avail = dma_alloc(6 + 2ull * n, 4096);
	q->used = dma_alloc(6 + 8ull * n, 4096);
	q->cookie = dma_alloc(8ull * n, 64);
	if (!q->desc || !q->avail || !q->used || !q->cookie) {
		tg_printf("tg: error out of memory for virtqueues\n");
		return -1;
	}
	for (u16 i = 0; i < n; i++)
		q->desc[i].next = (u16)(i + 1);
	q->num_free = n;
	q->free_head = 0;
	if (vd->msix)
		q->cb_on = 1;                   /* interrupts wanted: flags 0, used_event 0 */
	else if (q->evidx)
		q->avail[2 + n] = 0x8000;       /* used_event: far away, no interrupts */
	else
		q->avail[0] = VRING_AVAIL_F_NO_INTERRUPT;
	mmio_w16(c + VC_Q_SIZE, n);
	if (vd->msix) {
		u16 e = (u16)(1 + index), got;
		if (e >= vd->msix_n) {
			tg_printf("tg: error virtio dev=%s queue=%u has no msix entry\n", vd->pci->bdf, index);
			return -1;
		}
		mmio_w16(c + VC_Q_MSIX, e);
		got = mmio_r16(c + VC_Q_MSIX);
		if (got != e) {
			tg_printf("tg: virtio dev=%s msix refused\n", vd->pci->bdf);
			tg_printf("tg: info msix dev=%s refused=queue%u wrote=%u read=0x%x\n", vd->pci->bdf,
				  index, e, got);
			return -1;
		}
		q->msix_entry = e;
		q->vec = (u8)(vd->pci->msix_vec0 + e);
		vd->msix_q[index] = q;
	} else {
		mmio_w16(c + VC_Q_MSIX, 0xffff);
	}
	mmio_w32(c + VC_Q_DESC, (u32)(u64)q->desc);
	mmio_w32(c + VC_Q_DESC + 4, (u32)((u64)q->desc >> 32));
	mmio_w32(c + VC_Q_AVAIL, (u32)(u64)q->avail);
	mmio_w32(c + VC_Q_AVAIL + 4, (u32)((u64)q->avail >> 32));
	mmio_w32(c + VC_Q_USED, (u32)(u64)q->used);
	mmio_w32(c + VC_Q_USED + 4, (u32)((u64)q->used >> 32));
	u16 noff = mmio_r16(c + VC_Q_NOFF);
	q->notify = vd->notify + (u64)noff * vd->notify_mult;
	mmio_w16(c + VC_Q_ENABLE, 1);
	return 0;
}

/*
 * Adds a buffer chain (nout device-readable, then nin device-writable
 * segments) and publishes it in the available ring.  Returns the head
 * descriptor, or -1 if there are not enough free descriptors.
 */
int vq_add(struct vq *q, const struct sg *sg, int nout, int nin, void *cookie)
{
	int n = nout + nin;
	if (n < 1 || n > q->num_free)
		return -1;
	u16 head = q->free_head, i = head;
	for (int k = 0; k < n; k++) {
		struct vring_desc *d = &q->desc[i];
		d->addr = sg[k].addr;
		d->len = sg[k].len;
		d->flags = (u16)((k >= nout ? VRING_DESC_F_WRITE : 0) | (k + 1 < n ? VRING_DESC_F_NEXT : 0));
		i = d->next;
	}
	q->free_head = i;
	q->num_free = (u16)(q->num_free - n);
	q->cookie[head] = cookie;
	q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
	q->avail_idx++;
	barrier();                              /* x86: stores stay ordered */
	q->avail[1] = q->avail_idx;
	return head;
}

/* Fault injection: publishes head index `size` (out of range) in the
 * available ring.  A virtio 1.x device must treat it as a fatal error. */
void vq_inject_bad_head(struct vq *q)
{
	q->avail[2 + (q->avail_idx & (q->size - 1))] = q->size;
	q->avail_idx++;
	barrier();
	q->avail[1] = q->avail_idx;
	vq_kick(q);
}

static inline int need_event(u16 event, u16 new_idx, u16 old)
{
	return (u16)(new_idx - event - 1) < (u16)(new_idx - old);
}

/* Notifies the device about buffers added since the last kick, unless it
 * asked not to be notified. */
void vq_kick(struct vq *q)
{
	u16 new_idx = q->avail_idx, old = q->kicked;
	if (new_idx == old)
		return;
	q->kicks++;
	mfence();                               /* avail->idx store before the flag load */
	int need;
	if (q->evidx) {
		u16 ev = *(volatile u16 *)(q->used + 4 + 8u * q->size);
		need = need_event(ev, new_idx, old);
	} else {
		need = !(*(volatile u16 *)q->used & VRING_USED_F_NO_NOTIFY);
	}
	q->kicked = new_idx;
	if (need) {
		mmio_w16(q->notify, q->index);
		q->notifies++;
	}
}

/* Next completed buffer chain: returns its cookie (and the number of bytes
 * the device wrote in *len), or 0 if none.  Frees its descriptors. */
void *vq_get(struct vq *q, u32 *len)
{
	u16 used_idx = __atomic_load_n((volatile u16 *)(q->used + 2), __ATOMIC_ACQUIRE);
	if (used_idx == q->last_used)
		return 0;
	const volatile u8 *e = q->used + 4 + 8u * (q->last_used & (q->size - 1));
	u32 id = *(const volatile u32 *)e;
	if (len)
		*len = *(const volatile u32 *)(e + 4);
	q->last_used++;
	q->completions++;
	if (q->evidx)   /* interrupt at the next completion only if requested */
		q->avail[2 + q->size] = (u16)(q->cb_on ? q->last_used : q->last_used + 0x8000);
	if (id >= q->size) {
		tg_printf("tg: error virtio dev=%s queue=%u used id=%u out of range\n",
			  q->vd->pci->bdf, q->index, id);
		return 0;
	}
	void *cookie = q->cookie[id];
	if (!cookie) {
		tg_printf("tg: error virtio dev=%s queue=%u used id=%u is not in flight\n",
			  q->vd->pci->bdf, q->index, id);
		return 0;
	}
	q->cookie[id] = 0;
	/* return the chain to the free list */
	u16 i = (u16)id, n = 1;
	while (q->desc[i].flags & VRING_DESC_F_NEXT) {
		i = q->desc[i].next;
		n++;
	}
	q->desc[i].next = q->free_head;
	q->free_head = (u16)id;
	q->num_free = (u16)(q->num_free + n);
	return cookie;
}

/* ---- MSI-X (msix=1) ---- */
int msix_failures;
static int irq_next;                    /* next free vector, from IRQ_VEC_BASE */

#define MSIX_CTL_ENABLE 0x8000
#define MSIX_CTL_FMASK 0x4000

/*
 * Enables MSI-X with 1 + nqueues entries (0 = configuration changes, 1 + i
 * = queue i), each to its own CPU vector (fixed delivery, edge, physical
 * destination = the BSP), unmasked, and maps the configuration vector.
 * Order as Linux: enable with the function masked, program the table (each
 * entry written while masked, then unmasked, then read back), clear the
 * function mask.  Call after virtio_init(); virtio_vq_setup() then maps the
 * queue vectors.  A vector the device does not take (reads back other than
 * written, e.g. NO_VECTOR) is reported as "tg: virtio dev=<bdf> msix refused".
 */
int virtio_msix_setup(struct virtio_dev *vd, int nqueues)
{
	static int irq_checked;
	struct pci_dev *p = vd->pci;
	int n = 1 + nqueues;
	if (!irq_checked) {
		irq_checked = 1;
		if (irq_setup())
			msix_failures++;
	}
	u8 cap = pci_find_cap(p, 0x11, 0);
	if (!cap) {
		tg_printf("tg: error virtio dev=%s no msix capability\n", p->bdf);
		return -1;
	}
	u16 ctl = pci_read16(p, (u16)(cap + 2));
	u32 tsize = (ctl & 0x7ffu) + 1, tbl = pci_read32(p, (u16)(cap + 4)), pba = pci_read32(p, (u16)(cap + 8));
	const struct pci_bar *tb = (tbl & 7) < 6 ? &p->bar[tbl & 7] : 0;
	const struct pci_bar *pb = (pba & 7) < 6 ? &p->bar[pba & 7] : 0;
	if (!tb || !tb->size || tb->io || (u64)(tbl & ~7u) + 16ull * tsize > tb->size || !pb || !pb->size ||
	    pb->io || (u64)(pba & ~7u) + 8ull * ((tsize + 63) / 64) > pb->size) {
		tg_printf("tg: error virtio dev=%s msix table=0x%x pba=0x%x vectors=%u outside its BAR\n", p->bdf, tbl,
			  pba, tsize);
		return -1;
	}
	if ((u32)n > tsize || n > VIRTIO_MSIX_MAX) {
		tg_printf("tg: error virtio dev=%s msix vectors=%u need=%d\n", p->bdf, tsize, n);
		return -1;
	}
	if (!p->msix_nvec) {
		if (irq_next + n > IRQ_NVEC - 1) {              /* the last one is the self-test's */
			tg_printf("tg: error virtio dev=%s out of interrupt vectors\n", p->bdf);
			return -1;
		}
		p->msix_vec0 = (u8)(IRQ_VEC_BASE + irq_next);
		p->msix_nvec = (u8)n;
		irq_next += n;
	}
	vd->msix_table = tb->addr + (tbl & ~7u);
	vd->msix_pba = pb->addr + (pba & ~7u);
	vd->msix_cap = cap;
	vd->msix_n = (u16)n;
	pci_write16(p, (u16)(cap + 2), (u16)(ctl | MSIX_CTL_ENABLE | MSIX_CTL_FMASK));
	u32 addr = 0xfee00000u | cpus[0].apic << 12;    /* physical destination: the BSP */
	for (int i = 0; i < n; i++) {
		u64 e = vd->msix_table + 16ull * (u64)i;
		u32 data = (u32)(p->msix_vec0 + i);     /* fixed delivery, edge */
		mmio_w32(e + 12, 1);
		mmio_w32(e + 0, addr);
		mmio_w32(e + 4, 0);
		mmio_w32(e + 8, data);
		mmio_w32(e + 12, 0);
		u32 a = mmio_r32(e), ah = mmio_r32(e + 4), d = mmio_r32(e + 8), vc = mmio_r32(e + 12);
		if (a != addr || ah || d != data || (vc & 1)) {
			tg_printf("tg: msix fail reason=table-readback dev=%s entry=%d addr=0x%x:%08x data=0x%x ctl=0x%x\n",
				  p->bdf, i, ah, a, d, vc);
			msix_failures++;
			return -1;
		}
	}
	pci_write16(p, (u16)(cap + 2), (u16)((ctl & ~MSIX_CTL_FMASK) | MSIX_CTL_ENABLE));
	u16 ctl2 = pci_read16(p, (u16)(cap + 2));
	if ((ctl2 & (MSIX_CTL_ENABLE | MSIX_CTL_FMASK)) != MSIX_CTL_ENABLE) {
		tg_printf("tg: msix fail reason=control-readback dev=%s ctl=0x%x\n", p->bdf, ctl2);
		msix_failures++;
		return -1;
	}
	vd->msix = 1;
	mmio_w16(vd->common + VC_MSIX, 0);
	u16 got = mmio_r16(vd->common + VC_MSIX);
	if (got != 0) {
		tg_printf("tg: virtio dev=%s msix refused\n", p->bdf);
		tg_printf("tg: info msix dev=%s refused=config wrote=0 read=0x%x\n", p->bdf, got);
		return -1;
	}
	return 0;
}

void virtio_msix_mask(struct virtio_dev *vd, int entry, int masked)
{
	u64 vc = vd->msix_table + 16ull * (u64)entry + 12;
	mmio_w32(vc, masked ? 1 : 0);
	(void)mmio_r32(vc);                     /* flush the posted write */
}

int virtio_msix_pending(struct virtio_dev *vd, int entry)
{
	return (int)((mmio_r32(vd->msix_pba + 4ull * (u64)(entry / 32)) >> (entry % 32)) & 1);
}

u32 vq_irqs(struct vq *q) { return irq_count[q->vec - IRQ_VEC_BASE]; }

u32 virtio_config_irqs(struct virtio_dev *vd)
{
	return vd->msix ? irq_count[vd->pci->msix_vec0 - IRQ_VEC_BASE] : 0;
}

int vq_pending(struct vq *q)
{
	return __atomic_load_n((volatile u16 *)(q->used + 2), __ATOMIC_ACQUIRE) != q->last_used;
}

/* Asks for an interrupt at the next completion, then re-checks the used
 * ring (the device may have used buffers while interrupts were off). */
int vq_cb_enable(struct vq *q)
{
	q->cb_on = 1;
	if (q->evidx)
		q->avail[2 + q->size] = q->last_used;
	else
		q->avail[0] = 0;
	mfence();                               /* the store before the used->idx load */
	return vq_pending(q);
}

void vq_cb_disable(struct vq *q)
{
	q->cb_on = 0;
	if (q->evidx)
		q->avail[2 + q->size] = (u16)(q->last_used + 0x8000);
	else
		q->avail[0] = VRING_AVAIL_F_NO_INTERRUPT;
}

static void report_missed(struct vq *q)
{
	struct virtio_dev *vd = q->vd;
	if (vd->msix_missed++)
		return;
	msix_failures++;
	u64 e = vd->msix_table + 16ull * q->msix_entry;
	tg_printf("tg: msix fail reason=missed-interrupt dev=%s queue=%u entry=%u vector=0x%x used_idx=%u "
		  "last_used=%u %s=%u interrupts=%u msix_ctl=0x%x entry_ctl=0x%x pba=%d\n",
		  vd->pci->bdf, q->index, q->msix_entry, q->vec, *(volatile u16 *)(q->used + 2), q->last_used,
		  q->evidx ? "used_event" : "avail_flags", q->evidx ? q->avail[2 + q->size] : q->avail[0],
		  vq_irqs(q), pci_read16(vd->pci, (u16)(vd->msix_cap + 2)), mmio_r32(e + 12),
		  virtio_msix_pending(vd, q->msix_entry));
}

/*
 * msix=1: waits for an interrupt on one of the n queues (returns 1), or
 * until the TSC passes `until` (returns 0).  Interrupts are requested (if
 * they were off, for the duration) and the used rings re-checked after
 * taking the counters, so a completion that raced with that returns at
 * once.  Once a new used entry shows up, its interrupt is waited for even
 * past `until`; if none comes within irqwait= ms (default 20; longer on a
 * crowded host, where the VMM's I/O thread may wait that long for a CPU
 * between publishing a used entry and signalling it) that is a missed interrupt:
 * "tg: msix fail reason=missed-interrupt" (once per device), and the
 * caller goes on polling.
 */
static u64 irq_wait_ms(void)
{
	static u64 ms;
	if (!ms)
		ms = opt_u64("irqwait", 20) ?: 20;
	return ms;
}

int vq_sleep(struct vq *const *qs, int n, u64 until)
{
	u32 seen[VIRTIO_MSIX_MAX];
	int pend = 0, r = 1, was_on[VIRTIO_MSIX_MAX];
	for (int i = 0; i < n; i++)
		seen[i] = vq_irqs(qs[i]);
	for (int i = 0; i < n; i++) {
		was_on[i] = qs[i]->cb_on;
		pend |= vq_cb_enable(qs[i]);
	}
	if (!pend) {
		qs[0]->vd->msix_sleeps++;
		u64 t_pend = 0;
		for (;;) {
			int woke = 0;
			for (int i = 0; i < n; i++)
				woke |= vq_irqs(qs[i]) != seen[i];
			if (woke)
				break;
			u64 now = rdtsc();
			if (!t_pend) {
				if ((i64)(now - until) >= 0) {
					r = 0;
					break;
				}
				for (int i = 0; i < n; i++)
					if (vq_pending(qs[i]))
						t_pend = now;
			} else if (now - t_pend > irq_wait_ms() * tsc_khz) {
				for (int i = 0; i < n; i++)
					if (vq_pending(qs[i]) && vq_irqs(qs[i]) == seen[i])
						report_missed(qs[i]);
				break;
			}
			cpu_relax();
		}
	}
	for (int i = 0; i < n; i++)
		if (!was_on[i])
			vq_cb_disable(qs[i]);
	return r;
}

/*
 * End of a test: "tg: msix dev=<bdf> vectors=<n> interrupts=<total>" and
 * per entry an info line.  Returns -1 (after "tg: msix fail ...") if its
 * queues completed requests without a single interrupt, or if an
 * interrupt was missed.
 */
int virtio_msix_report(struct virtio_dev *vd)
{
	if (!vd->msix)
		return 0;
	struct pci_dev *p = vd->pci;
	u64 total = 0, qirqs = 0, done = 0;
	for (int i = 0; i < vd->msix_n; i++)
		total += irq_count[p->msix_vec0 + i - IRQ_VEC_BASE];
	tg_printf("tg: msix dev=%s vectors=%u interrupts=%lu\n", p->bdf, vd->msix_n, total);
	for (int i = 0; i < vd->msix_n; i++) {
		struct vq *q = i ? vd->msix_q[i - 1] : 0;
		u32 c = irq_count[p->msix_vec0 + i - IRQ_VEC_BASE];
		char what[16];
		if (q) {
			snprintf(what, sizeof(what), "queue%u", q->index);
			qirqs += c;
			done += q->completions;
		} else {
			memcpy(what, "config", 7);
		}
		tg_printf("tg: info msix dev=%s entry=%d vector=0x%x %s interrupts=%u completions=%lu\n", p->bdf, i,
			  p->msix_vec0 + i, what, c, q ? q->completions : 0);
	}
	tg_printf("tg: info msix dev=%s sleeps=%lu missed=%lu\n", p->bdf, vd->msix_sleeps, vd->msix_missed);
	if (done && !qirqs) {
		tg_printf("tg: msix fail reason=no-interrupts dev=%s completions=%lu\n", p->bdf, done);
		msix_failures++;
		return -1;
	}
	return vd->msix_missed ? -1 : 0;
}
