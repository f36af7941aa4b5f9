/*
 * test=ring: N VMs on one Ethernet pass sequence-numbered messages around
 * for cluster checkpoint tests (README.md, "test=ring").
 *
 * Every VM sends every other VM a stream of DATA messages (flow control: a
 * window of W unacknowledged messages, cumulative ACKs), and one TOKEN
 * circulates 0 -> 1 -> ... -> N-1 -> 0.  Nothing is ever retransmitted:
 * every ring frame from A to B carries a per-pair link sequence number in
 * `aux`, so a lost or doubled frame of any kind is reported at the next
 * frame from the same peer, and a peer that went silent is PROBEd (the
 * PROBE_REPLY carries the link number, which exposes a lost last frame).
 * The guest knows nothing about checkpoints: a VMM that restores it
 * exactly (memory, devices, frames in flight) lets it carry on unnoticed.
 */
#include "tg.h"

#define RING_MAX 16
#define PROBE_MS 250                    /* silence from a peer before probing it */
#define STALL_MS 5000                   /* no progress before an info line */

struct rpeer {
	u64 mac;
	int idx;
	int heard, hello_acked;         /* start barrier, as test=net hello=1 */
	u64 last_hello;
	/* our stream to it */
	u64 tx_base, sent, acked, tx_sum;
	/* its stream to us */
	u64 rx_base, rcvd, ack_sent, rx_sum, last_data;
	/* link: every ring frame carries its number within the pair */
	u64 lseq_tx, lseq_rx;
	u64 last_rx, last_probe;
	int reply_due;
};

static struct rpeer rp[RING_MAX];       /* indexed by VM index; rp[me] unused */
static int me, nvm;
static u64 count, window, report, work, ack_every;
static int failed;
static u64 total_rcvd, work_acc;
/* token */
static int token_seen_any, token_pending, token_started;
static u64 token_last, token_out, token_visits;
static u64 last_progress;

static u64 stream_base(u64 src, u64 dst) { return splitmix64(src ^ splitmix64(dst)); }
/* payload key of message seq of a stream (payload and length follow from it) */
static inline u64 msg_key(u64 base, u64 seq) { return splitmix64(base ^ seq); }

static void fail_now(void) { failed = 1; }

static struct rpeer *peer_of(u64 mac)
{
	for (int i = 0; i < nvm; i++)
		if (i != me && rp[i].mac == mac)
			return &rp[i];
	return 0;
}

/* A control frame with the next link number; only to peers that are up. */
static int send_ring_ctl(struct rpeer *p, u16 kind, u64 seq)
{
	if (!p->heard)
		return -1;
	u8 *b = tx_buf();
	if (!b)
		return -1;
	u8 *f = b + NET_HDR;
	build_hdr(f, p->mac, kind, seq, p->lseq_tx++, MIN_FRAME);
	memset(f + PAYLOAD, 0, MIN_FRAME - PAYLOAD);
	seal(f, MIN_FRAME);
	tx_queue(b, MIN_FRAME, 0);
	return 0;
}

static void token_arrived(struct rpeer *from, u64 hop)
{
	int pred = (me + nvm - 1) % nvm;
	if (from && from->idx != pred) {
		tg_printf("tg: ring error token from=%d expected_from=%d hop=%lu\n", from->idx, pred, hop);
		fail_now();
		return;
	}
	u64 want = token_seen_any ? token_last + (u64)nvm : (u64)me;
	if (hop != want || token_pending) {
		tg_printf("tg: ring error token expected=%lu got=%lu\n", want, hop);
		fail_now();
		return;
	}
	token_seen_any = 1;
	token_last = hop;
	token_visits++;
	if (token_visits % report == 0)
		tg_printf("tg: ring token hops=%lu\n", hop);
	token_pending = 1;
	token_out = hop + 1;
}

static void ring_rx(const u8 *f, u32 len)
{
	if (failed)
		return;
	u64 dst = get_mac(f), src = get_mac(f + 6);
	if (dst != mymac || src == mymac || !ours(f, len))
		return;         /* flooded by a switch, our own, or not a test frame */
	struct rpeer *p = peer_of(src);
	char a[18];
	if (!p) {
		tg_printf("tg: ring error unknown src=%s\n", fmt_mac(a, src));
		fail_now();
		return;
	}
	u16 kind = rd16(f + 26);
	u64 seq = rd64(f + 28), aux = rd64(f + 36);
	if (rd16(f + 24) != len || get_mac(f + 18) != src || rd32(f + 44) != frame_csum(f, len)) {
		tg_printf("tg: ring error from=%d corrupt kind=%u len=%u\n", p->idx, kind, len);
		fail_now();
		return;
	}
	u64 now = rdtsc();
	p->heard = 1;
	p->last_rx = now;
	if (kind == K_HELLO || kind == K_HELLO_ACK) {
		if (aux)
			p->hello_acked = 1;
		return;
	}
	p->hello_acked = 1;
	/* DATA first: a gap or duplicate gets the precise message */
	if (kind == K_RDATA && seq != p->rcvd) {
		tg_printf("tg: ring error from=%d expected=%lu got=%lu\n", p->idx, p->rcvd, seq);
		fail_now();
		return;
	}
	if (aux != p->lseq_rx) {
		tg_printf("tg: ring error from=%d link expected=%lu got=%lu kind=%u seq=%lu\n", p->idx,
			  p->lseq_rx, aux, kind, seq);
		fail_now();
		return;
	}
	p->lseq_rx++;
	switch (kind) {
	case K_RDATA: {
		u64 key = msg_key(p->rx_base, seq);
		if (len != data_len(key) || check_payload(f, len, key) || (count && seq >= count)) {
			tg_printf("tg: ring error from=%d corrupt seq=%lu len=%u\n", p->idx, seq, len);
			fail_now();
			return;
		}
		p->rcvd++;
		total_rcvd++;
		p->rx_sum = splitmix64(p->rx_sum ^ key);
		p->last_data = now;
		last_progress = now;
		if (p->rcvd % report == 0)
			tg_printf("tg: ring rx from=%d n=%lu sum=0x%016lx\n", p->idx, p->rcvd, p->rx_sum);
		break;
	}
	case K_RACK:
		/* cumulative count; each ACK carries a new link number, so
		 * only the range needs checking here */
		if (seq < p->acked || seq > p->sent) {
			tg_printf("tg: ring error from=%d ack=%lu acked=%lu sent=%lu\n", p->idx, seq, p->acked,
				  p->sent);
			fail_now();
			return;
		}
		if (seq > p->acked)
			last_progress = now;
		p->acked = seq;
		break;
	case K_RTOKEN:
		token_arrived(p, seq);
		last_progress = now;
		break;
	case K_RPROBE:
		p->reply_due = 1;
		break;
	case K_RPROBE_REPLY:
		break;
	default:
		tg_printf("tg: ring error from=%d kind=%u\n", p->idx, kind);
		fail_now();
	}
}

/* "M0,M1,..." -> macs[]; number of entries, -1 if malformed or too many */
static int parse_macs(const char *s, u64 *macs, int max)
{
	int n = 0;
	while (*s) {
		if (n == max || parse_mac(s, &macs[n]))
			return -1;
		n++;
		s += 17;
		if (*s == ',' && *++s == 0)
			return -1;
	}
	return n;
}

static void peer_lines(void)
{
	for (int i = 0; i < nvm; i++) {
		struct rpeer *p = &rp[i];
		if (i == me)
			continue;
		tg_printf("tg: info ring peer=%d sent=%lu acked=%lu rcvd=%lu ack_sent=%lu link_tx=%lu link_rx=%lu heard=%d\n",
			  i, p->sent, p->acked, p->rcvd, p->ack_sent, p->lseq_tx, p->lseq_rx, p->heard);
	}
	tg_printf("tg: info ring token visits=%lu last=%lu pending=%d tx_frames=%lu rx_frames=%lu work=%016lx\n",
		  token_visits, token_last, token_pending, tx_frames, rx_frames, work_acc);
}

NORETURN void test_ring(void)
{
	static u64 macs[RING_MAX + 1];
	static char list[(RING_MAX + 1) * 18 + 8];
	char a[18];
	if (nic_init(0))
		goto fail;
	u64 me64 = opt_u64("me", ~0ull);
	u64 n64 = opt_u64("n", 0);
	count = opt_u64("count", 0);
	window = opt_u64("window", 4);
	report = opt_u64("report", 1000);
	work = opt_u64("work", 0);
	u64 linger = opt_u64("linger", 200) * tsc_khz;
	u64 timeout = opt_u64("timeout", 0) * 1000 * tsc_khz;
	int nm = opt("vvmm.macs", list, sizeof(list)) ? parse_macs(list, macs, RING_MAX + 1) : 0;
	if (nm < 0 || nm > RING_MAX) {
		tg_printf("tg: error ring bad vvmm.macs=%s (up to %d MACs)\n", list, RING_MAX);
		goto fail;
	}
	if (n64 < 2 || n64 > RING_MAX || n64 != (u64)nm) {
		tg_printf("tg: error ring n=%lu must be 2..%d and equal the %d MACs of vvmm.macs\n", n64,
			  RING_MAX, nm);
		goto fail;
	}
	nvm = (int)n64;
	if (me64 >= n64) {
		tg_printf("tg: error ring me=%ld must be 0..%d\n", (i64)me64, nvm - 1);
		goto fail;
	}
	me = (int)me64;
	if (!window || window > 128 || !report) {
		tg_printf("tg: error ring window=%lu must be 1..128, report=%lu at least 1\n", window, report);
		goto fail;
	}
	if (macs[me] != devmac || mymac != devmac) {
		char b[18];
		tg_printf("tg: error ring vvmm.macs[%d]=%s but the device MAC is %s\n", me, fmt_mac(a, macs[me]),
			  fmt_mac(b, devmac));
		goto fail;
	}
	for (int i = 0; i < nvm; i++)
		for (int j = 0; j < i; j++)
			if (macs[i] == macs[j]) {
				tg_printf("tg: error ring vvmm.macs lists %s twice\n", fmt_mac(a, macs[i]));
				goto fail;
			}
	ack_every = window / 2 ? window / 2 : 1;
	for (int i = 0; i < nvm; i++) {
		rp[i].mac = macs[i];
		rp[i].idx = i;
		rp[i].tx_base = stream_base(mymac, macs[i]);
		rp[i].rx_base = stream_base(macs[i], mymac);
	}
	tg_printf("tg: ring ready me=%d n=%d\n", me, nvm);

	u64 t0 = rdtsc(), t_start = 0, t_done = 0, last_check = t0, stall_told = 0;
	u64 ms1 = tsc_khz, probe_gap = PROBE_MS * tsc_khz;
	last_progress = t0;
	int rr = 0;
	for (;;) {
		u64 now = rdtsc();
		int progress = tx_reap();
		poll_link();
		progress += rx_poll(ring_rx);
		if (failed)
			goto fail;
		int all_heard = 1;
		for (int i = 0; i < nvm; i++)
			all_heard &= i == me || rp[i].heard;
		if (all_heard && !t_start)
			t_start = now;
		/* VM 0 starts the token (hop 0 "arrives" here) once all are up */
		if (me == 0 && all_heard && !token_started) {
			token_started = 1;
			token_arrived(0, 0);
		}
		for (int i = 0; link_up && i < nvm; i++) {
			struct rpeer *p = &rp[i];
			if (i == me)
				continue;
			if (!p->hello_acked && now - p->last_hello > 100 * tsc_khz &&
			    !send_ctl(p->mac, K_HELLO, 0, (u64)p->heard, MIN_FRAME, 0)) {
				p->last_hello = now;
				progress++;
			}
			if (!p->heard)
				continue;
			if (p->rcvd > p->ack_sent &&
			    (p->rcvd - p->ack_sent >= ack_every || p->rcvd == count || now - p->last_data > ms1) &&
			    !send_ring_ctl(p, K_RACK, p->rcvd)) {
				p->ack_sent = p->rcvd;
				progress++;
			}
			if (p->reply_due && !send_ring_ctl(p, K_RPROBE_REPLY, 0)) {
				p->reply_due = 0;
				progress++;
			}
			int complete = count && p->sent == count && p->acked == count && p->rcvd == count &&
				       p->ack_sent == count;
			if (!complete && now - p->last_rx > probe_gap && now - p->last_probe > probe_gap &&
			    !send_ring_ctl(p, K_RPROBE, 0)) {
				p->last_probe = now;
				progress++;
			}
		}
		if (token_pending && link_up && !send_ring_ctl(&rp[(me + 1) % nvm], K_RTOKEN, token_out)) {
			token_pending = 0;
			progress++;
		}
		/* DATA: round robin over the streams with room in their window */
		for (int tries = 0; link_up && tries < nvm;) {
			struct rpeer *p = &rp[rr];
			rr = (rr + 1) % nvm;
			if (p == &rp[me] || !p->heard || (count && p->sent >= count) || p->sent - p->acked >= window) {
				tries++;
				continue;
			}
			tries = 0;
			u8 *b = tx_buf();
			if (!b)
				break;
			u8 *f = b + NET_HDR;
			u64 key = msg_key(p->tx_base, p->sent);
			u32 len = data_len(key);
			build_hdr(f, p->mac, K_RDATA, p->sent, p->lseq_tx++, len);
			fill_payload(f, len, key);
			seal(f, len);
			tx_queue(b, len, (int)(p->sent & 1));
			for (u64 k = 0; k < work; k++)
				work_acc = splitmix64(work_acc ^ k);
			p->sent++;
			p->tx_sum = splitmix64(p->tx_sum ^ key);
			if (p->sent % report == 0)
				tg_printf("tg: ring tx to=%d n=%lu sum=0x%016lx\n", p->idx, p->sent, p->tx_sum);
			progress++;
		}
		vq_kick(&txq);

		if (count && !t_done) {
			int done = ntxfree == ntxbufs;
			for (int i = 0; i < nvm; i++)
				done &= i == me || (rp[i].sent == count && rp[i].acked == count &&
						    rp[i].rcvd == count && rp[i].ack_sent == count);
			if (done)
				t_done = now;
		}
		if (t_done && now - t_done >= linger)
			break;
		if (timeout && now - t0 > timeout && !t_done) {
			tg_printf("tg: ring error timeout after %lus\n", opt_u64("timeout", 0));
			goto fail;
		}
		if (now - last_check > 100 * tsc_khz) {
			last_check = now;
			if (virtio_check(&nvd))
				goto fail;
			if ((i64)(now - last_progress) > (i64)(STALL_MS * tsc_khz) && stall_told != last_progress &&
			    !t_done) {
				/* not an error by itself (the peers may be paused) */
				stall_told = last_progress;
				tg_printf("tg: info ring stalled ms=%lu\n", tsc_to_us(now - last_progress) / 1000);
				peer_lines();
			}
		}
		if (nvd.msix && !progress) {
			/* wake up for the ACK timer, HELLOs, probes, link and checks */
			u64 until = now + 20 * tsc_khz;
			for (int i = 0; i < nvm; i++)
				if (i != me && rp[i].rcvd > rp[i].ack_sent && rp[i].last_data + ms1 + 1 < until)
					until = rp[i].last_data + ms1 + 1;
			if (t_done && t_done + linger < until)
				until = t_done + linger;
			net_sleep(until);
		}
	}
	peer_lines();
	if (virtio_msix_report(&nvd) || msix_failures)
		goto fail;
	tg_printf("tg: ring ok ms=%lu msgs=%lu\n", tsc_to_us(t_done - (t_start ? t_start : t0)) / 1000,
		  total_rcvd);
	reboot();
fail:
	tx_drain(100 * tsc_khz);
	if (nvm)
		peer_lines();
	tg_printf("tg: ring fail\n");
	reboot();
}
