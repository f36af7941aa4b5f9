/*
 * virtio-blk driver and the disk workloads: test=blk, test=blkverify,
 * test=blkbench (see README.md for the output contract).
 *
 * Pattern (mirrored in reference.py): sector s is 64 little-endian 64-bit
 * words, word w = splitmix64(seed * 2^40 + s * 64 + w) (mod 2^64).
 */
#include "tg.h"

#define VIRTIO_BLK_F_SIZE_MAX (1ull << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ull << 6)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define ST_NONE 0xff                    /* status byte before completion */

struct blk_hdr {
	u32 type, reserved;
	u64 sector;
};

struct disk {
	struct virtio_dev vd;
	struct vq q;
	int n;
	u64 capacity;                   /* 512-byte sectors */
	int ro, flush;
	u32 blk_size, seg_max, size_max;
	char id[21];
};

struct req {
	struct blk_hdr *hdr;            /* 64 bytes of DMA memory: header, status at +16 */
	volatile u8 *status;
	u8 *buf;
	u64 bufsize;
	u64 sector;
	u32 nsect;
	int type;
	u64 t_submit;
	struct req *next_free;
};

#define MAX_DISKS 8
#define MAX_QD 128
static struct disk disks[MAX_DISKS];
static int ndisks;
static struct req reqs[MAX_QD];
static struct req *free_reqs;
static int nreqs, inflight;
static u64 req_timeout;                 /* TSC cycles without any completion */
static int failed;
static int use_msix;                    /* msix=1 */

/* ---- pattern ---- */
static u64 seed;

static void fill_sector(u8 *p, u64 s)
{
	u64 *w = (u64 *)p, base = (seed << 40) + s * 64;
	for (int i = 0; i < 64; i++)
		w[i] = splitmix64(base + (u64)i);
}

static int check_sector(const u8 *p, u64 s)
{
	const u64 *w = (const u64 *)p;
	u64 base = (seed << 40) + s * 64;
	for (int i = 0; i < 64; i++)
		if (w[i] != splitmix64(base + (u64)i))
			return -1;
	return 0;
}

/* ---- requests ---- */
static int alloc_reqs(int n, u64 bufsize)
{
	free_reqs = 0;
	nreqs = n;
	for (int i = 0; i < n; i++) {
		struct req *r = &reqs[i];
		if (!r->hdr)
			r->hdr = dma_alloc(64, 64);
		if (r->bufsize < bufsize) {
			r->buf = dma_alloc(bufsize, 4096);
			r->bufsize = bufsize;
		}
		if (!r->hdr || !r->buf) {
			tg_printf("tg: error blk out of memory for %d requests of %lu bytes\n", n, bufsize);
			return -1;
		}
		r->status = (volatile u8 *)r->hdr + 16;
		r->next_free = free_reqs;
		free_reqs = r;
	}
	return 0;
}

static struct req *get_req(void)
{
	struct req *r = free_reqs;
	if (r)
		free_reqs = r->next_free;
	return r;
}

static void put_req(struct req *r)
{
	r->next_free = free_reqs;
	free_reqs = r;
}

/* Data segment sizes for multi-descriptor requests (bytes), cycled. */
static const u32 seg_cycle[] = { 4096, 512, 12288, 1024, 65536, 2048, 8192, 1536, 32768, 3584 };
#define NSEG_CYCLE (sizeof(seg_cycle) / sizeof(seg_cycle[0]))

/*
 * Queues one request.  split = 0: the data is one descriptor (split into
 * size_max pieces if the device has a limit); split = k > 0: the data is
 * cut into pieces following seg_cycle from position k.  Returns -1 if the
 * ring has not enough free descriptors right now.
 */
static int submit(struct disk *d, struct req *r, int type, u64 sector, u32 nsect, int split)
{
	struct sg sg[260];
	int n = 0;
	u32 bytes = type == T_GET_ID ? 20 : nsect * 512;
	r->hdr->type = (u32)type;
	r->hdr->reserved = 0;
	r->hdr->sector = type == T_FLUSH || type == T_GET_ID ? 0 : sector;
	*r->status = ST_NONE;
	r->type = type;
	r->sector = sector;
	r->nsect = nsect;
	sg[n++] = (struct sg){ (u64)r->hdr, 16 };
	u32 maxseg = d->seg_max ? d->seg_max : 254;
	if (maxseg > sizeof(sg) / sizeof(sg[0]) - 2)
		maxseg = sizeof(sg) / sizeof(sg[0]) - 2;
	u32 off = 0;
	for (int k = 0; bytes && off < bytes; k++) {
		u32 len = bytes - off;
		if (split) {
			u32 c = seg_cycle[(u32)(split + k) % NSEG_CYCLE];
			if (len > c)
				len = c;
		}
		if (d->size_max && len > d->size_max)
			len = d->size_max;
		if ((u32)n >= maxseg)                   /* n - 1 data segments so far: the last one takes the rest */
			len = bytes - off;
		sg[n++] = (struct sg){ (u64)r->buf + off, len };
		off += len;
	}
	sg[n++] = (struct sg){ (u64)r->status, 1 };
	int nout = type == T_OUT ? n - 1 : 1;  /* header (+ data) | (data +) status */
	r->t_submit = rdtsc();
	if (vq_add(&d->q, sg, nout, n - nout, r) < 0)
		return -1;
	inflight++;
	return 0;
}

/* A completed request, or 0 if none has completed yet. */
static struct req *poll_one(struct disk *d)
{
	struct req *r = vq_get(&d->q, 0);
	if (r)
		inflight--;
	return r;
}

/* Waits for the next completion (msix=1: sleeping on the queue's
 * interrupt).  Returns 0 (after printing why) on a timeout or if the device
 * needs a reset. */
static struct req *wait_one(struct disk *d)
{
	u64 t0 = rdtsc(), last_check = t0;
	for (;;) {
		struct req *r = vq_get(&d->q, 0);
		if (r) {
			inflight--;
			return r;
		}
		if (d->vd.msix) {
			struct vq *q = &d->q;
			vq_sleep(&q, 1, last_check + 50 * tsc_khz);
		}
		u64 now = rdtsc();
		if (now - last_check > 50 * tsc_khz) {          /* every 50 ms idle */
			last_check = now;
			if (virtio_check(&d->vd))
				return 0;
		}
		if (now - t0 > req_timeout) {
			tg_printf("tg: error blk disk=%d timeout inflight=%d\n", d->n, inflight);
			virtio_check(&d->vd);
			return 0;
		}
		if (!d->vd.msix)
			cpu_relax();
	}
}

/* One synchronous request (GET_ID, FLUSH, single writes). Returns the
 * status byte, or -1 on timeout. */
static int sync_req(struct disk *d, int type, u64 sector, u32 nsect)
{
	struct req *r = get_req();
	if (!r || submit(d, r, type, sector, nsect, 0) < 0) {
		tg_printf("tg: error blk disk=%d cannot queue a request\n", d->n);
		return -1;
	}
	vq_kick(&d->q);
	struct req *c = wait_one(d);
	if (!c)
		return -1;
	put_req(c);
	return *c->status;
}

/* ---- probing ---- */
static u64 blk_want;

/* (Re)initialises a disk: reset, features, queue 0, DRIVER_OK. */
static int disk_init(struct disk *d, struct pci_dev *p)
{
	if (virtio_init(&d->vd, p, blk_want))
		return -1;
	if (use_msix && virtio_msix_setup(&d->vd, 1))
		return -1;
	u64 f = d->vd.features;
	d->capacity = virtio_cfg64(&d->vd, 0);
	d->size_max = f & VIRTIO_BLK_F_SIZE_MAX ? virtio_cfg32(&d->vd, 8) : 0;
	d->seg_max = f & VIRTIO_BLK_F_SEG_MAX ? virtio_cfg32(&d->vd, 12) : 0;
	d->blk_size = f & VIRTIO_BLK_F_BLK_SIZE ? virtio_cfg32(&d->vd, 20) : 512;
	if (d->blk_size < 512 || (d->blk_size & (d->blk_size - 1)))
		d->blk_size = 512;
	d->ro = !!(f & VIRTIO_BLK_F_RO);
	d->flush = !!(f & VIRTIO_BLK_F_FLUSH);
	if (virtio_vq_setup(&d->vd, &d->q, 0, 256) || virtio_driver_ok(&d->vd))
		return -1;
	return 0;
}

static void probe(void)
{
	char v[16];
	pci_scan(opt("pci", v, sizeof(v)) && streq(v, "verbose"));
	use_msix = (int)opt_u64("msix", 0);
	blk_want = VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_RO |
		   VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH;
	if (opt_u64("evidx", 0))
		blk_want |= VIRTIO_F_EVENT_IDX;
	if (alloc_reqs(1, 4096))
		return;
	for (int i = 0; i < pci_ndevs && ndisks < MAX_DISKS; i++) {
		if (virtio_type(&pci_devs[i]) != 2)
			continue;
		struct disk *d = &disks[ndisks];
		d->n = ndisks;
		if (disk_init(d, &pci_devs[i]))
			continue;
		ndisks++;
		tg_printf("tg: info blk disk=%d dev=%s features=0x%lx offered=0x%lx queue_size=%u "
			  "seg_max=%u size_max=%u blk_size=%u notify_mult=%u\n",
			  d->n, d->vd.pci->bdf, d->vd.features, d->vd.dev_features, d->q.size, d->seg_max,
			  d->size_max, d->blk_size, d->vd.notify_mult);
		/* GET_ID: up to 20 bytes, NUL-padded */
		memset(reqs[0].buf, 0, 20);
		int st = sync_req(d, T_GET_ID, 0, 0);
		size_t k = 0;
		if (st == 0)
			for (; k < 20 && reqs[0].buf[k]; k++) {
				char c = (char)reqs[0].buf[k];
				d->id[k] = c > ' ' && c < 0x7f ? c : '_';
			}
		d->id[k] = 0;
		tg_printf("tg: blk disk=%d capacity=%lu ro=%d id=%s\n", d->n, d->capacity, d->ro, d->id);
	}
}

static NORETURN void finish(void)
{
	for (int i = 0; i < ndisks; i++)
		if (virtio_msix_report(&disks[i].vd))
			failed = 1;
	if (msix_failures)
		failed = 1;
	tg_printf(failed ? "tg: blk fail\n" : "tg: blk ok\n");
	reboot();
}

/* ---- test=blk / test=blkverify ---- */
static const u32 wsizes[] = { 1, 8, 256, 3, 64, 1, 255, 16, 128, 7, 2, 32, 200, 1, 96 };
static const u32 rsizes[] = { 256, 5, 1, 128, 33, 8, 1, 64, 250, 2, 16, 129, 4 };

/*
 * Writes (write = 1) or reads back and verifies the pattern over
 * [start, start + count) with up to qd requests in flight, request sizes
 * cycling through wsizes/rsizes (rounded to the logical block size) and
 * two of three requests split over several descriptors.
 */
static int pass(struct disk *d, int write, u64 start, u64 count, int qd)
{
	const u32 *sizes = write ? wsizes : rsizes;
	u32 nsizes = write ? sizeof(wsizes) / 4 : sizeof(rsizes) / 4;
	u32 unit = d->blk_size / 512;
	if (alloc_reqs(qd, 256 * 512))
		return -1;
	u64 s = start, end = start + count, bad = 0, first_bad = ~0ull;
	u64 k = 0, ooo = 0, last_done = 0;
	int err = 0;
	while ((s < end && !err) || inflight) {
		while (s < end && !err) {
			u32 n = sizes[k % nsizes];
			n = (n + unit - 1) / unit * unit;
			if (n > end - s)
				n = (u32)(end - s);
			struct req *r = get_req();
			if (!r)
				break;
			if (write)
				for (u32 j = 0; j < n; j++)
					fill_sector(r->buf + 512 * j, s + j);
			if (submit(d, r, write ? T_OUT : T_IN, s, n, k % 3 ? (int)(k % NSEG_CYCLE) + 1 : 0) < 0) {
				put_req(r);
				if (!inflight) {
					tg_printf("tg: error blk disk=%d request does not fit the ring\n", d->n);
					return -1;
				}
				break;
			}
			s += n;
			k++;
		}
		vq_kick(&d->q);
		struct req *r = wait_one(d);
		if (!r)
			return -1;
		for (; r; r = poll_one(d)) {    /* everything that has completed */
			if (r->sector < last_done)
				ooo++;
			last_done = r->sector;
			if (*r->status) {
				tg_printf("tg: error blk disk=%d op=%s sector=%lu nsect=%u status=%u\n", d->n,
					  write ? "write" : "read", r->sector, r->nsect, *r->status);
				err = 1;
			} else if (!write) {
				for (u32 j = 0; j < r->nsect; j++)
					if (check_sector(r->buf + 512 * j, r->sector + j)) {
						bad++;
						if (r->sector + j < first_bad)
							first_bad = r->sector + j;
					}
			}
			put_req(r);
		}
	}
	tg_printf("tg: info blk disk=%d %s requests=%lu out_of_order=%lu kicks=%lu notifies=%lu\n",
		  d->n, write ? "write" : "read", k, ooo, d->q.kicks, d->q.notifies);
	if (err)
		return -1;
	if (!write) {
		if (bad) {
			tg_printf("tg: blk verify error sector=%lu bad_sectors=%lu\n", first_bad, bad);
			return -1;
		}
		tg_printf("tg: blk verify ok\n");
	}
	return 0;
}

/*
 * Fault injection, then reset and re-initialise the disk and go on:
 *  inject=badaddr  one read whose data descriptor points far outside RAM
 *                  (0x7f00000000): the device should fail the request or
 *                  set NEEDS_RESET (QEMU bounces it and reports success);
 *  inject=badhead  an out-of-range head index in the available ring: a
 *                  virtio 1.x device must set NEEDS_RESET (QEMU does).
 * NEEDS_RESET is reported as "tg: virtio dev=<bdf> needs-reset".
 */
static void inject(struct disk *d, const char *what)
{
	int q = 0, st = -1;
	u32 cfg0 = virtio_config_irqs(&d->vd);
	if (streq(what, "badaddr")) {
		struct req *r = get_req();
		u8 *save = r->buf;
		r->buf = (u8 *)0x7f00000000ull;
		q = submit(d, r, T_IN, 0, 1, 0);
		r->buf = save;
		vq_kick(&d->q);
	} else if (streq(what, "badhead")) {
		vq_inject_bad_head(&d->q);
	} else {
		tg_printf("tg: error blk unknown inject=%s\n", what);
		failed = 1;
		return;
	}
	u64 t0 = rdtsc();
	while (q == 0 && rdtsc() - t0 < 2000 * tsc_khz) {
		struct req *c = poll_one(d);
		if (c) {
			st = *c->status;
			break;
		}
		if (virtio_check(&d->vd))
			break;
		delay_ms(10);
	}
	tg_printf("tg: blk inject=%s disk=%d needs_reset=%d status=%d\n", what, d->n, d->vd.failed, st);
	if (d->vd.msix && d->vd.failed) {
		/* virtio 1.x 2.1.2: NEEDS_RESET after DRIVER_OK comes with a
		 * configuration change notification */
		u64 t1 = rdtsc();
		while (virtio_config_irqs(&d->vd) == cfg0 && rdtsc() - t1 < 100 * tsc_khz)
			cpu_relax();
		u32 n = virtio_config_irqs(&d->vd) - cfg0;
		tg_printf("tg: info msix dev=%s needs-reset config_interrupts=%u\n", d->vd.pci->bdf, n);
		if (!n) {
			tg_printf("tg: msix fail reason=no-config-interrupt dev=%s\n", d->vd.pci->bdf);
			msix_failures++;
		}
	}
	inflight = 0;
	alloc_reqs(1, 4096);
	if (disk_init(d, d->vd.pci)) {
		tg_printf("tg: error blk disk=%d re-initialisation failed\n", d->n);
		failed = 1;
		finish();
	}
	tg_printf("tg: blk disk=%d reset ok\n", d->n);
}

/*
 * msix=1, test=blk: MSI-X masking.  With the queue's entry masked (vector
 * control bit 0) and interrupts requested, one 1-sector read is submitted
 * and its completion found by polling the used ring (used->idx); then no
 * interrupt must have arrived and the entry's PBA bit must become set.
 * Unmasking must deliver the pending interrupt and clear the PBA bit.  Prints
 * "tg: msix mask ok" or "tg: msix mask fail reason=...".
 */
static int mask_test(struct disk *d, u64 sector)
{
	struct vq *q = &d->q;
	struct virtio_dev *vd = &d->vd;
	int e = q->msix_entry, pba0 = virtio_msix_pending(vd, e), pba1 = 0, pba2 = 0;
	const char *why = 0;
	u64 t_pba = 0, t_irq = 0;
	virtio_msix_mask(vd, e, 1);
	u32 c0 = vq_irqs(q), c1 = c0, c2 = c0;
	vq_cb_enable(q);                        /* (already on in msix mode) */
	struct req *r = get_req(), *c = 0;
	if (!r || submit(d, r, T_IN, sector, 1, 0) < 0) {
		tg_printf("tg: error blk disk=%d cannot queue a request\n", d->n);
		return -1;
	}
	vq_kick(q);
	/* Completion seen in used->idx only: taking the entry now would move
	 * used_event past it (evidx=1), and a device that decides about the
	 * interrupt a little after publishing the entry (QEMU) would then
	 * rightly not raise it. */
	u64 t0 = rdtsc();
	while (!vq_pending(q) && rdtsc() - t0 < 5000 * tsc_khz)
		cpu_relax();
	if (!vq_pending(q)) {
		why = "request-timeout";
		goto out;
	}
	/* the device raises the interrupt after publishing the used entry */
	u64 t1 = rdtsc();
	while (!(pba1 = virtio_msix_pending(vd, e)) && rdtsc() - t1 < 1000 * tsc_khz)
		cpu_relax();
	t_pba = rdtsc() - t1;
	c1 = vq_irqs(q);
	if (c1 != c0) {
		why = "interrupt-while-masked";
		goto out;
	}
	if (!pba1) {
		why = "pba-not-set";
		goto out;
	}
	virtio_msix_mask(vd, e, 0);
	u64 t2 = rdtsc();
	while (vq_irqs(q) == c0 && rdtsc() - t2 < 1000 * tsc_khz)
		cpu_relax();
	t_irq = rdtsc() - t2;
	c2 = vq_irqs(q);
	pba2 = virtio_msix_pending(vd, e);
	if (c2 == c1)
		why = "pending-not-delivered";
	else if (pba2)
		why = "pba-not-cleared";
out:
	virtio_msix_mask(vd, e, 0);
	if ((c = poll_one(d)) != 0) {
		put_req(c);
		if (*c->status && !why)
			why = "request-status";
	}
	tg_printf("tg: info msix mask dev=%s entry=%d vector=0x%x pba_before=%d pba_masked=%d pba_after=%d "
		  "interrupts_masked=%u delivered=%u pba_us=%lu deliver_us=%lu\n",
		  vd->pci->bdf, e, q->vec, pba0, pba1, pba2, c1 - c0, c2 - c1, tsc_to_us(t_pba), tsc_to_us(t_irq));
	if (why) {
		tg_printf("tg: msix mask fail reason=%s\n", why);
		return -1;
	}
	tg_printf("tg: msix mask ok\n");
	return 0;
}

static struct disk *pick_disk(int allow_ro)
{
	u64 n = opt_u64("disk", ~0ull);
	if (n != ~0ull)
		return n < (u64)ndisks ? &disks[n] : 0;
	for (int i = 0; i < ndisks; i++)
		if (!disks[i].ro)
			return &disks[i];
	return allow_ro && ndisks ? &disks[0] : 0;
}

NORETURN void test_blk(int verify_only)
{
	seed = opt_u64("seed", 1);
	req_timeout = opt_u64("timeout", 60) * 1000 * tsc_khz;
	u64 start = opt_u64("start", 0), count = opt_u64("sectors", 2048);
	int qd = (int)opt_u64("qd", 16);
	if (qd < 1)
		qd = 1;
	if (qd > MAX_QD)
		qd = MAX_QD;
	probe();
	if (!ndisks) {
		tg_printf("tg: error blk no virtio-blk disk\n");
		failed = 1;
		finish();
	}
	struct disk *d = pick_disk(verify_only);
	char inj[16];
	if (opt("inject", inj, sizeof(inj)))
		inject(d ? d : &disks[0], inj);
	if (d) {
		if (!count)
			count = d->capacity > start ? d->capacity - start : 0;
		u32 unit = d->blk_size / 512;
		if (!count || start + count > d->capacity || start % unit || count % unit) {
			tg_printf("tg: error blk disk=%d range start=%lu sectors=%lu capacity=%lu blk_size=%u\n",
				  d->n, start, count, d->capacity, d->blk_size);
			failed = 1;
			finish();
		}
		if (!verify_only) {
			if (pass(d, 1, start, count, qd)) {
				failed = 1;
				finish();
			}
			if (d->flush) {
				int st = sync_req(d, T_FLUSH, 0, 0);
				if (st) {
					tg_printf("tg: error blk disk=%d flush status=%d\n", d->n, st);
					failed = 1;
					finish();
				}
			}
			tg_printf("tg: blk write ok sectors=%lu\n", count);
			if (d->vd.msix && mask_test(d, start))
				failed = 1;
		}
		if (pass(d, 0, start, count, qd))
			failed = 1;
	} else {
		tg_printf("tg: %s blk no %sdisk to use\n", verify_only ? "error" : "warn",
			  verify_only ? "" : "writable ");
		failed = verify_only;
	}
	if (!verify_only) {
		/* read-only disks: one write anyway, expect VIRTIO_BLK_S_IOERR */
		alloc_reqs(1, 4096);
		for (int i = 0; i < ndisks; i++) {
			if (!disks[i].ro)
				continue;
			u32 n = disks[i].blk_size / 512;
			for (u32 j = 0; j < n; j++)
				fill_sector(reqs[0].buf + 512 * j, j);
			int st = sync_req(&disks[i], T_OUT, 0, n);
			tg_printf("tg: blk ro-write status=%d disk=%d\n", st, i);
			if (st != 1)
				failed = 1;
		}
	}
	finish();
}

/* ---- test=blkbench ---- */
NORETURN void test_blkbench(void)
{
	req_timeout = opt_u64("timeout", 60) * 1000 * tsc_khz;
	u64 start = opt_u64("start", 0), mb = opt_u64("mb", 256), secs = opt_u64("secs", 3);
	int qd = (int)opt_u64("qd", 16);
	if (qd < 1)
		qd = 1;
	if (qd > MAX_QD)
		qd = MAX_QD;
	char which[64];
	if (!opt("patterns", which, sizeof(which)))
		memcpy(which, "seqwrite,seqread,randwrite,randread", 36);
	probe();
	struct disk *d = pick_disk(1);
	if (!d) {
		tg_printf("tg: error blk no virtio-blk disk\n");
		failed = 1;
		finish();
	}
	u64 region = mb * 2048;                 /* sectors */
	if (start >= d->capacity || region > d->capacity - start)
		region = d->capacity > start ? d->capacity - start : 0;
	if (alloc_reqs(qd, 1 << 20))
		finish();
	for (int i = 0; i < qd; i++)
		memset(reqs[i].buf, 0xa5 + i, 1 << 20);
	static const char *const names[] = { "seqwrite", "seqread", "randwrite", "randread" };
	for (int pi = 0; pi < 4; pi++) {
		const char *name = names[pi];
		/* is name in the comma-separated list? */
		int listed = 0;
		for (const char *p = which; *p;) {
			size_t l = 0;
			while (p[l] && p[l] != ',')
				l++;
			if (l == strlen(name) && !memcmp(p, name, l))
				listed = 1;
			p += l + (p[l] == ',');
		}
		if (!listed)
			continue;
		int wr = pi == 0 || pi == 2, seq = pi < 2;
		u32 bs = seq ? 1 << 20 : 4096, ns = bs / 512;
		if (wr && d->ro) {
			tg_printf("tg: blkbench skip pattern=%s ro=1\n", name);
			continue;
		}
		u64 slots = region / ns;
		if (!slots) {
			tg_printf("tg: error blkbench disk=%d too small\n", d->n);
			failed = 1;
			break;
		}
		u64 next = 0, rnd = 0x9e3779b97f4a7c15ull + (u64)pi, done = 0, lat = 0;
		u64 notifies0 = d->q.notifies;
		u64 t0 = rdtsc(), stop = t0 + secs * 1000 * tsc_khz, tend = t0;
		int err = 0;
		for (;;) {
			while (!err && rdtsc() < stop) {
				u64 slot;
				if (seq) {
					slot = next++ % slots;
				} else {
					rnd ^= rnd << 13;
					rnd ^= rnd >> 7;
					rnd ^= rnd << 17;
					slot = rnd % slots;
				}
				struct req *r = get_req();
				if (!r)
					break;
				if (submit(d, r, wr ? T_OUT : T_IN, start + slot * ns, ns, 0) < 0) {
					put_req(r);
					break;
				}
			}
			vq_kick(&d->q);
			if (!inflight)
				break;
			struct req *r = wait_one(d);
			if (!r) {
				failed = 1;
				finish();
			}
			tend = rdtsc();
			for (; r; r = poll_one(d)) {
				lat += tend - r->t_submit;
				if (*r->status && !err) {
					tg_printf("tg: error blkbench op=%s sector=%lu status=%u\n", name,
						  r->sector, *r->status);
					err = 1;
					failed = 1;
				}
				done++;
				put_req(r);
			}
		}
		u64 us = tsc_to_us(tend - t0);
		if (!us)
			us = 1;
		u64 iops = done * 1000000 / us, mbps10 = done * bs * 10 / us;
		tg_printf("tg: blkbench pattern=%s bs=%u iops=%lu mbps=%lu.%lu qd=%d ios=%lu lat_us_avg=%lu notifies=%lu\n",
			  name, bs, iops, mbps10 / 10, mbps10 % 10, qd, done,
			  done ? tsc_to_us(lat / done) : 0, d->q.notifies - notifies0);
	}
	finish();
}

/* ---- test=blkseq ---- */
/*
 * One 4 KiB block per step, block k at sector 8k: read it and decode its
 * tag, write it with a fresh tag, print both.  Then read every block back.
 * Block layout (mirrored in reference.py): "BLKSEQ01", u64 k, u64 tag, then
 * words 3..511 = splitmix64(key + w) with key = splitmix64(k ^ splitmix64(tag)),
 * all little-endian.  Tags are never 0: an all-zero block reads as tag 0.
 */
#define BLKSEQ_MAGIC 0x31305145534b4c42ull       /* "BLKSEQ01" little-endian */
#define BLKSEQ_BAD (~0ull)                       /* decode result: not a blkseq block */

static void blkseq_fill(u8 *p, u64 k, u64 tag)
{
	u64 *w = (u64 *)p, key = splitmix64(k ^ splitmix64(tag));
	w[0] = BLKSEQ_MAGIC;
	w[1] = k;
	w[2] = tag;
	for (u64 i = 3; i < 512; i++)
		w[i] = splitmix64(key + i);
}

/* The tag of block k in p, 0 if all zero, BLKSEQ_BAD otherwise. */
static u64 blkseq_decode(const u8 *p, u64 k)
{
	const u64 *w = (const u64 *)p;
	u64 any = 0;
	for (int i = 0; i < 512; i++)
		any |= w[i];
	if (!any)
		return 0;
	u64 tag = w[2];
	if (w[0] != BLKSEQ_MAGIC || w[1] != k || !tag || tag == BLKSEQ_BAD)
		return BLKSEQ_BAD;
	u64 key = splitmix64(k ^ splitmix64(tag));
	for (u64 i = 3; i < 512; i++)
		if (w[i] != splitmix64(key + i))
			return BLKSEQ_BAD;
	return tag;
}

static const char *blkseq_fmt(char *buf, u64 tag)
{
	if (tag == BLKSEQ_BAD)
		return "bad";
	if (!tag)
		return "0";
	snprintf(buf, 17, "%016lx", tag);
	return buf;
}

static NORETURN void blkseq_fail(void)
{
	tg_printf("tg: blkseq fail\n");
	reboot();
}

/* Reads (T_IN) or writes (T_OUT) block k through reqs[0].buf. */
static int blkseq_io(struct disk *d, int type, u64 k)
{
	int st = sync_req(d, type, 8 * k, 8);
	if (st) {
		tg_printf("tg: error blkseq disk=%d k=%lu op=%s status=%d\n", d->n, k,
			  type == T_IN ? "read" : "write", st);
		return -1;
	}
	return 0;
}

NORETURN void test_blkseq(void)
{
	req_timeout = opt_u64("timeout", 60) * 1000 * tsc_khz;
	u64 blocks = opt_u64("blocks", 200), delay = opt_u64("delay", 20);
	int flush = (int)opt_u64("flush", 0);
	probe();
	struct disk *d = pick_disk(0);
	if (!d || d->ro) {
		tg_printf("tg: error blkseq no writable virtio-blk disk\n");
		blkseq_fail();
	}
	if (d->blk_size > 4096) {
		tg_printf("tg: error blkseq disk=%d blk_size=%u above 4096\n", d->n, d->blk_size);
		blkseq_fail();
	}
	if (blocks > d->capacity / 8)
		blocks = d->capacity / 8;
	if (alloc_reqs(1, 4096))
		blkseq_fail();
	u8 *buf = reqs[0].buf;
	char b1[17], b2[17];
	for (u64 k = 0; k < blocks; k++) {
		if (blkseq_io(d, T_IN, k))
			blkseq_fail();
		u64 before = blkseq_decode(buf, k);
		/* differs between two runs from the same memory image (restored
		 * twice): TSC jitter; never 0 or BLKSEQ_BAD */
		u64 tag = splitmix64(rdtsc() ^ (k << 40));
		if (!tag || tag == BLKSEQ_BAD)
			tag = 1;
		blkseq_fill(buf, k, tag);
		if (blkseq_io(d, T_OUT, k))
			blkseq_fail();
		if (flush && d->flush) {
			int st = sync_req(d, T_FLUSH, 0, 0);
			if (st) {
				tg_printf("tg: error blkseq disk=%d flush status=%d\n", d->n, st);
				blkseq_fail();
			}
		}
		tg_printf("tg: blkseq k=%lu before=%s tag=%016lx\n", k, blkseq_fmt(b1, before), tag);
		if (delay)
			delay_ms(delay);
	}
	for (u64 k = 0; k < blocks; k++) {
		if (blkseq_io(d, T_IN, k))
			blkseq_fail();
		tg_printf("tg: blkseq check k=%lu tag=%s\n", k, blkseq_fmt(b2, blkseq_decode(buf, k)));
	}
	if (virtio_msix_report(&d->vd) || msix_failures)
		blkseq_fail();
	tg_printf("tg: blkseq done blocks=%lu\n", blocks);
	reboot();
}
