/*
 * virtio-pci modern (virtio 1.x) transport and split virtqueues.
 *
 * Polling only: MSI-X stays disabled (config/queue vectors are set to
 * VIRTIO_MSI_NO_VECTOR), INTx is disabled in the PCI command register, and
 * the driver asks the device not to interrupt (VRING_AVAIL_F_NO_INTERRUPT,
 * or with VIRTIO_F_EVENT_IDX a used_event kept far away).  Completions are
 * found by polling used->idx.  Notifications honour VRING_USED_F_NO_NOTIFY,
 * or avail_event with VIRTIO_F_EVENT_IDX.
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
	if (q->evidx)
		q->avail[2 + n] = 0x8000;       /* used_event: far away, no interrupts */
	else
		q->avail[0] = VRING_AVAIL_F_NO_INTERRUPT;
	mmio_w16(c + VC_Q_SIZE, n);
	mmio_w16(c + VC_Q_MSIX, 0xffff);
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
	if (q->evidx)
		q->avail[2 + q->size] = (u16)(q->last_used + 0x8000);
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
