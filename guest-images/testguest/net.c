/*
 * virtio-net driver and the network workloads: test=net, test=netbench
 * (test=ring in ring.c uses the driver through tg.h)
 * (see README.md for the output contract and the frame format).
 *
 * One RX queue (0) and one TX queue (1), no offloads, no control queue.
 * With VIRTIO_F_VERSION_1 the virtio-net header is 12 bytes.  RX: one
 * 2 KiB buffer per descriptor, all posted all the time.  TX: ring size / 2
 * buffers of 2 KiB; a frame is header + frame in one descriptor (even
 * sequence numbers) or header and frame in two (odd), so the TX ring can
 * never be overrun.
 */
#include "tg.h"

#define VIRTIO_NET_F_MAC (1ull << 5)
#define VIRTIO_NET_F_STATUS (1ull << 16)

/* shared with ring.c through tg.h */
struct virtio_dev nvd;
struct vq rxq, txq;
static u8 *rxbufs;
static u8 **txfree;
int ntxfree, ntxbufs;
u64 mymac, devmac;
int link_up;
u64 tx_frames, rx_frames;

/* ---- helpers ---- */
void put_mac(u8 *p, u64 mac)
{
	for (int i = 0; i < 6; i++)
		p[i] = (u8)(mac >> (40 - 8 * i));
}

u64 get_mac(const u8 *p)
{
	u64 m = 0;
	for (int i = 0; i < 6; i++)
		m = m << 8 | p[i];
	return m;
}

/* "52:54:00:12:34:56" -> 0x525400123456; returns -1 if malformed */
int parse_mac(const char *s, u64 *out)
{
	u64 m = 0;
	for (int i = 0; i < 6; i++) {
		u32 v = 0;
		for (int j = 0; j < 2; j++, s++) {
			char c = *s;
			if (c >= '0' && c <= '9')
				v = v * 16 + (u32)(c - '0');
			else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
				v = v * 16 + (u32)((c | 0x20) - 'a' + 10);
			else
				return -1;
		}
		m = m << 8 | v;
		if (i < 5 && *s++ != ':')
			return -1;
	}
	*out = m;
	return *s && *s != ',' ? -1 : 0;
}

char *fmt_mac(char *buf, u64 m)
{
	snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", (u32)(m >> 40) & 0xff, (u32)(m >> 32) & 0xff,
		 (u32)(m >> 24) & 0xff, (u32)(m >> 16) & 0xff, (u32)(m >> 8) & 0xff, (u32)m & 0xff);
	return buf;
}

/* FNV-1a 32 over frame bytes [14, len) with the checksum field as zero. */
u32 frame_csum(const u8 *f, u32 len)
{
	u32 h = 0x811c9dc5u;
	for (u32 i = 14; i < len; i++) {
		u8 b = i >= 44 && i < 48 ? 0 : f[i];
		h = (h ^ b) * 0x01000193u;
	}
	return h;
}

/* DATA frames: key and total length derived from (sender MAC, seq) */
static u64 data_key(u64 mac, u64 seq) { return splitmix64(splitmix64(mac) ^ seq); }
u32 data_len(u64 key) { return MIN_FRAME + (u32)(key % (MAX_FRAME - MIN_FRAME + 1)); }

void fill_payload(u8 *f, u32 len, u64 key)
{
	u32 off = PAYLOAD;
	for (u64 m = 0; off < len; m++, off += 8) {
		u64 w = splitmix64(key + m);
		if (len - off >= 8)
			st64(f + off, w);
		else
			for (u32 j = 0; off + j < len; j++)
				f[off + j] = (u8)(w >> (8 * j));
	}
}

int check_payload(const u8 *f, u32 len, u64 key)
{
	u32 off = PAYLOAD;
	for (u64 m = 0; off < len; m++, off += 8) {
		u64 w = splitmix64(key + m);
		if (len - off >= 8) {
			if (rd64(f + off) != w)
				return -1;
		} else {
			for (u32 j = 0; off + j < len; j++)
				if (f[off + j] != (u8)(w >> (8 * j)))
					return -1;
		}
	}
	return 0;
}

/* Frame header; the payload (if any) must be in place before the checksum. */
void build_hdr(u8 *f, u64 dst, u16 kind, u64 seq, u64 aux, u32 len)
{
	put_mac(f, dst);
	put_mac(f + 6, mymac);
	f[12] = ETHERTYPE >> 8;
	f[13] = ETHERTYPE & 0xff;
	st32(f + 14, MAGIC);
	put_mac(f + 18, mymac);
	st16(f + 24, (u16)len);
	st16(f + 26, kind);
	st64(f + 28, seq);
	st64(f + 36, aux);
	st32(f + 44, 0);
}

void seal(u8 *f, u32 len) { st32(f + 44, frame_csum(f, len)); }

/* ---- device ---- */
/* me_is_mac: the "me=" option, if given, is our MAC (test=net, netbench). */
int nic_init(int me_is_mac)
{
	char v[24];
	pci_scan(opt("pci", v, sizeof(v)) && streq(v, "verbose"));
	u64 want = VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS;
	if (opt_u64("evidx", 0))
		want |= VIRTIO_F_EVENT_IDX;
	u64 which = opt_u64("nic", 0), seen = 0;
	struct pci_dev *p = 0;
	for (int i = 0; i < pci_ndevs && !p; i++)
		if (virtio_type(&pci_devs[i]) == 1 && seen++ == which)
			p = &pci_devs[i];
	if (!p) {
		tg_printf("tg: error net no virtio-net device\n");
		return -1;
	}
	if (virtio_init(&nvd, p, want))
		return -1;
	if (opt_u64("msix", 0) && virtio_msix_setup(&nvd, 2))
		return -1;
	if (nvd.features & VIRTIO_NET_F_MAC)
		for (int i = 0; i < 6; i++)
			devmac = devmac << 8 | virtio_cfg8(&nvd, (u32)i);
	if (virtio_vq_setup(&nvd, &rxq, 0, 256) || virtio_vq_setup(&nvd, &txq, 1, 256))
		return -1;
	rxbufs = dma_alloc((u64)rxq.size * BUFSZ, 4096);
	ntxbufs = txq.size / 2;
	u8 *tx = dma_alloc((u64)ntxbufs * BUFSZ, 4096);
	txfree = dma_alloc(8ull * (u64)ntxbufs, 64);
	if (!rxbufs || !tx || !txfree) {
		tg_printf("tg: error net out of memory\n");
		return -1;
	}
	for (int i = 0; i < ntxbufs; i++)
		txfree[ntxfree++] = tx + (u64)i * BUFSZ;    /* headers stay zero */
	for (int i = 0; i < rxq.size; i++) {
		struct sg sg = { (u64)rxbufs + (u64)i * BUFSZ, BUFSZ };
		vq_add(&rxq, &sg, 0, 1, rxbufs + (u64)i * BUFSZ);
	}
	if (virtio_driver_ok(&nvd))
		return -1;
	vq_kick(&rxq);
	if (me_is_mac && opt("me", v, sizeof(v))) {
		if (parse_mac(v, &mymac)) {
			tg_printf("tg: error net bad me=%s\n", v);
			return -1;
		}
	} else {
		mymac = devmac;
	}
	link_up = !(nvd.features & VIRTIO_NET_F_STATUS);
	char a[18], b[18];
	tg_printf("tg: info net dev=%s me=%s dev_mac=%s features=0x%lx offered=0x%lx rx_size=%u tx_size=%u notify_mult=%u\n",
		  p->bdf, fmt_mac(a, mymac), fmt_mac(b, devmac), nvd.features, nvd.dev_features,
		  rxq.size, txq.size, nvd.notify_mult);
	return 0;
}

void poll_link(void)
{
	static u64 last;
	if (link_up)
		return;
	u64 now = rdtsc();
	if (now - last < 10 * tsc_khz)
		return;
	last = now;
	link_up = virtio_cfg16(&nvd, 6) & 1;
}

int tx_reap(void)
{
	u8 *b;
	int n = 0;
	while ((b = vq_get(&txq, 0)) != 0) {
		txfree[ntxfree++] = b;
		tx_frames++;
		n++;
	}
	return n;
}

/* msix=1: nothing to do, wait for an RX or TX interrupt (or `until`). */
void net_sleep(u64 until)
{
	struct vq *qs[2] = { &rxq, &txq };
	vq_sleep(qs, 2, until);
}

static void rx_sleep(u64 until)
{
	struct vq *q = &rxq;
	vq_sleep(&q, 1, until);
}

/* A free TX buffer; the frame goes at +NET_HDR.  0 if none free. */
u8 *tx_buf(void)
{
	if (!ntxfree)
		tx_reap();
	return ntxfree ? txfree[--ntxfree] : 0;
}

void tx_queue(u8 *b, u32 len, int split)
{
	struct sg sg[2];
	int n;
	if (split) {
		sg[0] = (struct sg){ (u64)b, NET_HDR };
		sg[1] = (struct sg){ (u64)b + NET_HDR, len };
		n = 2;
	} else {
		sg[0] = (struct sg){ (u64)b, NET_HDR + len };
		n = 1;
	}
	if (vq_add(&txq, sg, n, 0, b) < 0)     /* cannot happen: size/2 buffers */
		tg_printf("tg: error net tx ring full\n");
}

void tx_drain(u64 limit_cycles)
{
	u64 t0 = rdtsc();
	vq_kick(&txq);
	while (ntxfree < ntxbufs && rdtsc() - t0 < limit_cycles) {
		tx_reap();
		if (nvd.msix && ntxfree < ntxbufs) {
			struct vq *q = &txq;
			vq_sleep(&q, 1, t0 + limit_cycles);
		}
	}
}

/* Polls RX: calls fn(frame, len) for each received frame, reposts the
 * buffers.  Returns the number of frames. */
int rx_poll(void (*fn)(const u8 *f, u32 len))
{
	u8 *b;
	u32 len;
	int n = 0;
	while ((b = vq_get(&rxq, &len)) != 0) {
		if (len >= NET_HDR)
			fn(b + NET_HDR, len - NET_HDR);
		struct sg sg = { (u64)b, BUFSZ };
		vq_add(&rxq, &sg, 0, 1, b);
		n++;
	}
	if (n) {
		rx_frames += (u64)n;
		vq_kick(&rxq);
	}
	return n;
}

/* Is this one of our frames (ethertype, magic, length fields)? */
int ours(const u8 *f, u32 len)
{
	return len >= PAYLOAD && f[12] == (ETHERTYPE >> 8) && f[13] == (ETHERTYPE & 0xff) &&
	       rd32(f + 14) == MAGIC;
}

/* A small control frame.  Waits for a TX buffer only if `block` (callers
 * that also receive must not block: the peer may be waiting for us). */
int send_ctl(u64 dst, u16 kind, u64 seq, u64 aux, u32 len, int block)
{
	u8 *b;
	while (!(b = tx_buf())) {
		if (!block)
			return -1;
		cpu_relax();
	}
	u8 *f = b + NET_HDR;
	build_hdr(f, dst, kind, seq, aux, len);
	memset(f + PAYLOAD, 0, len - PAYLOAD);
	seal(f, len);
	tx_queue(b, len, 0);
	vq_kick(&txq);
	return 0;
}

/* ---- test=net ---- */
#define MAX_PEERS 16
struct peer {
	u64 mac;
	u64 sent, received, dup, reorder, corrupt, next;
	u8 *seen;                       /* bitmap of received sequence numbers */
	int heard, acked;
	u64 last_hello;
};
static struct peer peers[MAX_PEERS];
static int npeers;
static u64 count, foreign, unknown, own, other;

static struct peer *find_peer(u64 mac)
{
	for (int i = 0; i < npeers; i++)
		if (peers[i].mac == mac)
			return &peers[i];
	return 0;
}

static void net_rx(const u8 *f, u32 len)
{
	u64 dst = get_mac(f), src = get_mac(f + 6);
	if (dst != mymac && dst != 0xffffffffffffull) {
		foreign++;
		return;
	}
	if (src == mymac) {
		own++;
		return;
	}
	struct peer *p = find_peer(src);
	if (!p) {
		unknown++;
		return;
	}
	if (!ours(f, len)) {
		p->corrupt++;
		return;
	}
	u16 kind = rd16(f + 26);
	u64 seq = rd64(f + 28);
	if (kind == K_HELLO || kind == K_HELLO_ACK) {
		p->heard = 1;
		if (rd64(f + 36))
			p->acked = 1;
		return;
	}
	if (kind != K_DATA) {
		other++;
		return;
	}
	u64 key = data_key(src, seq);
	if (seq >= count || rd16(f + 24) != len || len != data_len(key) ||
	    get_mac(f + 18) != src || rd32(f + 44) != frame_csum(f, len) || check_payload(f, len, key)) {
		p->corrupt++;
		return;
	}
	p->heard = p->acked = 1;
	if (p->seen[seq >> 3] & (1u << (seq & 7))) {
		p->dup++;
		return;
	}
	p->seen[seq >> 3] |= (u8)(1u << (seq & 7));
	p->received++;
	if (seq < p->next)
		p->reorder++;
	else
		p->next = seq + 1;
}

NORETURN void test_net(void)
{
	if (nic_init(1))
		goto fail;
	count = opt_u64("count", 1000);
	u64 timeout = opt_u64("timeout", 60) * 1000 * tsc_khz;
	u64 linger = opt_u64("linger", 200) * tsc_khz;
	int hello = (int)opt_u64("hello", 0);
	char list[MAX_PEERS * 18 + 8], a[18];
	if (!opt("peers", list, sizeof(list)) && !opt("peer", list, sizeof(list))) {
		tg_printf("tg: error net no peers=\n");
		goto fail;
	}
	for (const char *s = list; *s && npeers < MAX_PEERS;) {
		struct peer *p = &peers[npeers];
		if (parse_mac(s, &p->mac)) {
			tg_printf("tg: error net bad peers=%s\n", list);
			goto fail;
		}
		p->seen = dma_alloc(count / 8 + 1, 64);
		if (!p->seen) {
			tg_printf("tg: error net out of memory\n");
			goto fail;
		}
		npeers++;
		s += 17;
		if (*s == ',')
			s++;
	}
	u64 t0 = rdtsc(), t_done = 0, last_check = t0;
	int rr = 0, timed_out = 0;
	for (;;) {
		u64 now = rdtsc();
		int progress = tx_reap();
		poll_link();
		/* send: round robin over the peers that still need frames */
		for (int tries = 0; link_up && tries < npeers;) {
			struct peer *p = &peers[rr];
			rr = (rr + 1) % npeers;
			if (hello && !p->acked && now - p->last_hello > 100 * tsc_khz &&
			    !send_ctl(p->mac, K_HELLO, 0, (u64)p->heard, MIN_FRAME, 0)) {
				p->last_hello = now;
				progress++;
			}
			if (p->sent >= count || (hello && !p->heard)) {
				tries++;
				continue;
			}
			tries = 0;
			u8 *b = tx_buf();
			if (!b)
				break;
			u8 *f = b + NET_HDR;
			u64 key = data_key(mymac, p->sent);
			u32 len = data_len(key);
			build_hdr(f, p->mac, K_DATA, p->sent, 0, len);
			fill_payload(f, len, key);
			seal(f, len);
			tx_queue(b, len, (int)(p->sent & 1));
			p->sent++;
			progress++;
		}
		vq_kick(&txq);
		progress += rx_poll(net_rx);
		int done = ntxfree == ntxbufs;
		for (int i = 0; i < npeers; i++)
			done &= peers[i].sent == count && peers[i].received == count;
		if (done && !t_done)
			t_done = now;
		if (t_done && now - t_done >= linger)
			break;
		if (now - t0 > timeout) {
			timed_out = 1;
			break;
		}
		if (now - last_check > 100 * tsc_khz) {
			last_check = now;
			if (virtio_check(&nvd))
				break;
		}
		if (nvd.msix && !progress) {
			/* wake up for HELLOs / link polling / checks, and the end */
			u64 until = now + (link_up ? 50 : 10) * tsc_khz;
			if (t_done && t_done + linger < until)
				until = t_done + linger;
			net_sleep(until);
		}
	}
	u64 us = tsc_to_us((t_done ? t_done : rdtsc()) - t0);
	if (timed_out)
		tg_printf("tg: warn net timeout after %lus\n", opt_u64("timeout", 60));
	int ok = !timed_out && !nvd.failed && !unknown;
	for (int i = 0; i < npeers; i++) {
		struct peer *p = &peers[i];
		u64 lost = count - p->received;
		tg_printf("tg: net peer=%s sent=%lu received=%lu lost=%lu dup=%lu reorder=%lu corrupt=%lu\n",
			  fmt_mac(a, p->mac), p->sent, p->received, lost, p->dup, p->reorder, p->corrupt);
		ok &= p->sent == count && !lost && !p->dup && !p->reorder && !p->corrupt;
		if (lost) {
			u64 first = 0, runs = 0;
			while (first < count && (p->seen[first >> 3] & (1u << (first & 7))))
				first++;
			for (u64 q = 0; q < count; q++)
				if (!(p->seen[q >> 3] & (1u << (q & 7))) &&
				    (q == 0 || (p->seen[(q - 1) >> 3] & (1u << ((q - 1) & 7)))))
					runs++;
			tg_printf("tg: info net peer=%s first_missing=%lu missing_runs=%lu highest=%ld\n",
				  fmt_mac(a, p->mac), first, runs, (i64)p->next - 1);
		}
	}
	tg_printf("tg: info net ms=%lu tx_frames=%lu rx_frames=%lu foreign=%lu unknown=%lu own=%lu other=%lu "
		  "tx_notifies=%lu rx_notifies=%lu\n",
		  us / 1000, tx_frames, rx_frames, foreign, unknown, own, other, txq.notifies, rxq.notifies);
	if (virtio_msix_report(&nvd) || msix_failures)
		ok = 0;
	tg_printf(ok ? "tg: net ok\n" : "tg: net fail\n");
	reboot();
fail:
	tg_printf("tg: net fail\n");
	reboot();
}

/* ---- test=netbench ---- */
static u64 nb_peer, nb_frames, nb_end_count, nb_t_first, nb_t_last, nb_pongs;
static int nb_end, nb_hello_acked;
static u64 nb_ping_seq, nb_rtt_cycles;
static int nb_pong_seen;

static void nb_rx(const u8 *f, u32 len)
{
	if (!ours(f, len) || get_mac(f + 6) != nb_peer)
		return;
	u16 kind = rd16(f + 26);
	switch (kind) {
	case K_HELLO:
		send_ctl(nb_peer, K_HELLO_ACK, 0, 1, MIN_FRAME, 0);
		break;
	case K_HELLO_ACK:
		nb_hello_acked = 1;
		break;
	case K_BENCH:
		if (!nb_frames)
			nb_t_first = rdtsc();
		nb_frames++;
		nb_t_last = rdtsc();
		break;
	case K_END:
		nb_end = 1;
		nb_end_count = rd64(f + 36);
		break;
	case K_PING: {
		u8 *b;
		while (!(b = tx_buf()))
			cpu_relax();
		memcpy(b + NET_HDR, f, len);
		u8 *g = b + NET_HDR;
		put_mac(g, nb_peer);
		put_mac(g + 6, mymac);
		put_mac(g + 18, mymac);
		st16(g + 26, K_PONG);
		seal(g, len);
		tx_queue(b, len, 0);
		vq_kick(&txq);
		nb_pongs++;
		break;
	}
	case K_PONG:
		if (rd64(f + 28) == nb_ping_seq) {
			nb_rtt_cycles = rdtsc() - rd64(f + 36);
			nb_pong_seen = 1;
		}
		break;
	}
}

static u64 pct(const u32 *hist, u32 nb, u64 n, u64 num, u64 den)
{
	u64 want = (n * num + den - 1) / den, acc = 0;
	if (!want)
		want = 1;
	for (u32 i = 0; i < nb; i++) {
		acc += hist[i];
		if (acc >= want)
			return i;
	}
	return nb;
}

NORETURN void test_netbench(void)
{
	char role[16], v[24];
	if (nic_init(1))
		goto fail;
	if (!opt("role", role, sizeof(role)) ||
	    !(streq(role, "send") || streq(role, "recv") || streq(role, "ping") || streq(role, "pong"))) {
		tg_printf("tg: error netbench role=send|recv|ping|pong needed\n");
		goto fail;
	}
	if (!opt("peer", v, sizeof(v)) || parse_mac(v, &nb_peer)) {
		tg_printf("tg: error netbench peer=<MAC> needed\n");
		goto fail;
	}
	u64 secs = opt_u64("secs", 3), timeout = opt_u64("timeout", 60) * 1000 * tsc_khz;
	u64 run = secs * 1000 * tsc_khz;
	int active = streq(role, "send") || streq(role, "ping");
	u64 t0 = rdtsc(), last = 0;
	/* start barrier: the active side says HELLO every 100 ms until answered */
	while (active && !nb_hello_acked) {
		u64 now = rdtsc();
		tx_reap();
		poll_link();
		if (link_up && now - last > 100 * tsc_khz && !send_ctl(nb_peer, K_HELLO, 0, 0, MIN_FRAME, 0))
			last = now;
		if (!rx_poll(nb_rx) && nvd.msix && !nb_hello_acked)
			net_sleep(now + 10 * tsc_khz);
		if (now - t0 > timeout) {
			tg_printf("tg: error netbench no answer from peer\n");
			goto fail;
		}
	}
	char a[18];
	if (streq(role, "send")) {
		/* prebuilt 1514-byte frames; only the sequence number changes */
		u64 seq = 0, start = rdtsc(), end = start + run, tend = start;
		tx_drain(timeout);
		u64 done0 = tx_frames;
		for (int i = 0; i < ntxbufs; i++) {
			u8 *f = txfree[i] + NET_HDR;
			build_hdr(f, nb_peer, K_BENCH, 0, 0, MAX_FRAME);
			fill_payload(f, MAX_FRAME, 0);
		}
		while (rdtsc() < end) {
			u8 *b;
			while ((b = tx_buf()) != 0) {
				u8 *f = b + NET_HDR;
				if (rd16(f + 26) != K_BENCH || rd16(f + 24) != MAX_FRAME) {
					/* a control frame (HELLO_ACK) used this buffer */
					build_hdr(f, nb_peer, K_BENCH, 0, 0, MAX_FRAME);
					fill_payload(f, MAX_FRAME, 0);
				}
				st64(f + 28, seq++);
				tx_queue(b, MAX_FRAME, 0);
			}
			vq_kick(&txq);
			if (!rx_poll(nb_rx) && nvd.msix && !ntxfree)
				net_sleep(end);         /* TX ring full */
		}
		tx_drain(timeout);
		tend = rdtsc();
		u64 n = tx_frames - done0, us = tsc_to_us(tend - start);
		send_ctl(nb_peer, K_END, 0, n, MIN_FRAME, 1);
		tx_drain(timeout);
		u64 mbps10 = n * MAX_FRAME * 10 / (us ? us : 1);
		tg_printf("tg: netbench role=send frames=%lu mbps=%lu.%lu fps=%lu peer=%s\n", n, mbps10 / 10,
			  mbps10 % 10, n * 1000000 / (us ? us : 1), fmt_mac(a, nb_peer));
	} else if (streq(role, "recv")) {
		u64 start = rdtsc();
		while (!nb_end) {
			int n = rx_poll(nb_rx);
			tx_reap();
			if (rdtsc() - start > run + timeout) {
				tg_printf("tg: error netbench no END from peer\n");
				break;
			}
			if (!n && nvd.msix)
				rx_sleep(rdtsc() + 100 * tsc_khz);
		}
		u64 us = nb_frames > 1 ? tsc_to_us(nb_t_last - nb_t_first) : 0;
		u64 n = nb_frames;
		u64 mbps10 = n * MAX_FRAME * 10 / (us ? us : 1);
		tg_printf("tg: netbench role=recv frames=%lu mbps=%lu.%lu fps=%lu lost=%ld peer=%s\n", n,
			  mbps10 / 10, mbps10 % 10, n * 1000000 / (us ? us : 1),
			  nb_end ? (i64)(nb_end_count - n) : -1, fmt_mac(a, nb_peer));
		tx_drain(timeout);
	} else if (streq(role, "ping")) {
#define HIST 100000
		static u32 hist[HIST + 1];
		u64 start = rdtsc(), end = start + run, n = 0, mn = ~0ull, mx = 0, sum = 0;
		u32 size = (u32)opt_u64("size", MIN_FRAME);
		if (size < MIN_FRAME || size > MAX_FRAME)
			size = MIN_FRAME;
		while (rdtsc() < end) {
			nb_ping_seq++;
			nb_pong_seen = 0;
			send_ctl(nb_peer, K_PING, nb_ping_seq, rdtsc(), size, 1);
			u64 ts = rdtsc();
			while (!nb_pong_seen) {
				rx_poll(nb_rx);
				tx_reap();
				if (rdtsc() - ts > timeout)
					break;
				if (nvd.msix && !nb_pong_seen)
					rx_sleep(ts + timeout);
			}
			if (!nb_pong_seen) {
				tg_printf("tg: error netbench no pong for seq=%lu\n", nb_ping_seq);
				break;
			}
			u64 ns = tsc_to_us(nb_rtt_cycles * 1000);     /* cycles -> ns */
			u64 usv = ns / 1000;
			hist[usv < HIST ? usv : HIST]++;
			n++;
			sum += ns;
			if (ns < mn)
				mn = ns;
			if (ns > mx)
				mx = ns;
		}
		send_ctl(nb_peer, K_END, 0, n, MIN_FRAME, 1);
		tx_drain(timeout);
		tg_printf("tg: netbench rtt_us_median=%lu rtt_us_p99=%lu pings=%lu rtt_ns_min=%lu rtt_ns_avg=%lu rtt_ns_max=%lu size=%u\n",
			  pct(hist, HIST + 1, n, 1, 2), pct(hist, HIST + 1, n, 99, 100), n,
			  n ? mn : 0, n ? sum / n : 0, mx, size);
	} else {                                /* pong */
		u64 start = rdtsc();
		while (!nb_end) {
			int n = rx_poll(nb_rx);
			tx_reap();
			if (rdtsc() - start > run + timeout) {
				tg_printf("tg: error netbench no END from peer\n");
				break;
			}
			if (!n && nvd.msix)
				rx_sleep(rdtsc() + 100 * tsc_khz);
		}
		tx_drain(timeout);
		tg_printf("tg: netbench role=pong pongs=%lu peer=%s\n", nb_pongs, fmt_mac(a, nb_peer));
	}
	if (virtio_msix_report(&nvd) || msix_failures)
		goto fail;
	reboot();
fail:
	tg_printf("tg: netbench fail\n");
	reboot();
}
