/* tcpstream: numbered TCP message streams between the VMs of a vvmm cluster.
 *
 *   tcpstream --me IP --peers IP,IP,... [--port 5000] [--msg-bytes 256]
 *             [--rate MSGS_PER_SEC] [--status-every S] [--duration SEC]
 *             [--connect-timeout SEC]
 *
 * One TCP connection per peer: the lower IP connects, the higher accepts.
 * Both directions carry fixed-size messages numbered 1,2,3,... that the
 * receiver verifies.  Single thread, non-blocking sockets, poll().
 * See README.md in this directory for the output lines.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

#define MAGIC_DATA 0x76764d31u /* "vvM1" */
#define MAGIC_END  0x76764d45u /* "vvME": last message, seq = count of data messages */
#define HDR_BYTES  24
#define MAX_PEERS  64
#define OUT_LIMIT  (64 * 1024) /* queue no new message while this much is unsent */
#define IN_BUF     (64 * 1024)

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* FNV-1a, 32 bit. */
static uint32_t fnv1a(const unsigned char *p, size_t n)
{
	uint32_t h = 0x811c9dc5u;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x01000193u;
	}
	return h;
}

/* Message layout (big endian), msg_bytes long:
 *   0  magic       u32
 *   4  sender IP   u32
 *   8  seq         u64
 *  16  payload len u32 (= msg_bytes - 24)
 *  20  checksum    u32: FNV-1a over bytes 0..19 and the payload
 *  24  payload: byte i = byte (i%8) of mix64(sender<<32 ^ seq ^ (i/8)<<48) */
static void fill_payload(unsigned char *p, size_t n, uint32_t sender, uint64_t seq)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t w = mix64(((uint64_t)sender << 32) ^ seq ^ ((uint64_t)(i / 8) << 48));
		for (size_t k = 0; k < 8 && i + k < n; k++)
			p[i + k] = (unsigned char)(w >> (8 * k));
	}
}

static uint32_t msg_sum(const unsigned char *m, size_t msg_bytes)
{
	uint32_t h = fnv1a(m, 20);
	for (size_t i = HDR_BYTES; i < msg_bytes; i++) {
		h ^= m[i];
		h *= 0x01000193u;
	}
	return h;
}

static void build_msg(unsigned char *m, size_t msg_bytes, uint32_t magic, uint32_t sender,
		      uint64_t seq)
{
	put32(m, magic);
	put32(m + 4, sender);
	put64(m + 8, seq);
	put32(m + 16, (uint32_t)(msg_bytes - HDR_BYTES));
	fill_payload(m + HDR_BYTES, msg_bytes - HDR_BYTES, sender, seq);
	put32(m + 20, msg_sum(m, msg_bytes));
}

enum cstate { C_IDLE, C_CONNECTING, C_UP, C_DONE };

struct peer {
	uint32_t ip; /* host order */
	char name[16];
	int fd;
	enum cstate st;
	int we_connect;
	uint64_t retry_at;  /* C_IDLE + we_connect: next connect attempt */
	uint64_t attempt_until;
	/* sending */
	uint64_t sent;      /* data messages fully written to the socket */
	uint64_t queued;    /* data messages built (seq of the last one) */
	double tokens;
	uint64_t tok_ms;
	unsigned char *out;
	size_t out_len, out_off;
	size_t out_cap;
	int end_queued, end_sent, wr_shut;
	/* message boundaries in out[]: count whole messages flushed */
	size_t out_flushed_total;
	/* receiving */
	uint64_t recv;      /* last good seq */
	int end_recv, eof_seen;
	unsigned char *in;
	size_t in_len;
};

static struct peer peers[MAX_PEERS];
static int npeers;
static uint32_t me_ip;
static char me_name[16];
static size_t msg_bytes = 256;
static uint16_t port = 5000;

static void ipname(uint32_t ip, char *out)
{
	struct in_addr a = { htonl(ip) };
	inet_ntop(AF_INET, &a, out, 16);
}

static void fail(struct peer *p, const char *kind, uint64_t got, uint64_t want, int err)
{
	if (err)
		say("ts: FAIL peer=%s kind=%s got=%" PRIu64 " want=%" PRIu64 " errno=%d", p->name,
		    kind, got, want, err);
	else
		say("ts: FAIL peer=%s kind=%s got=%" PRIu64 " want=%" PRIu64, p->name, kind, got,
		    want);
	exit(1);
}

static void status_line(const char *what)
{
	char buf[3500];
	size_t n = 0;
	int up = 0;
	for (int i = 0; i < npeers; i++)
		if (peers[i].st == C_UP || peers[i].st == C_DONE)
			up++;
	for (int i = 0; i < npeers && n < sizeof buf - 64; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, " %s=%" PRIu64 "/%" PRIu64,
				      peers[i].name, peers[i].sent, peers[i].recv);
	buf[n] = 0;
	say("ts: %s me=%s up=%d/%d%s", what, me_name, up, npeers, buf);
}

static void set_opts(int fd)
{
	int zero = 0, one = 1;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &zero, sizeof zero);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_USER_TIMEOUT
	/* Unacknowledged data may sit for a long time while VMs are paused for a
	 * checkpoint; allow 1 hour instead of the ~15 min tcp_retries2 default. */
	unsigned int ut = 3600u * 1000u;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
#endif
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void came_up(struct peer *p, int fd, uint64_t t)
{
	p->fd = fd;
	p->st = C_UP;
	p->tok_ms = t;
	p->tokens = 0;
	say("ts: connected me=%s peer=%s", me_name, p->name);
}

static void start_connect(struct peer *p, uint64_t t, uint64_t attempt_ms)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		say("ts: FAIL me=%s kind=socket errno=%d", me_name, errno);
		exit(1);
	}
	set_opts(fd);
	struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(me_ip) };
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(p->ip) };
	dst.sin_port = htons(port);
	if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
	    (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)) {
		close(fd);
		p->st = C_IDLE;
		p->retry_at = t + 500;
		return;
	}
	p->fd = fd;
	p->st = C_CONNECTING;
	p->attempt_until = t + attempt_ms;
}

static void queue_msg(struct peer *p, uint32_t magic, uint64_t seq)
{
	if (p->out_off == p->out_len)
		p->out_off = p->out_len = 0;
	if (p->out_len + msg_bytes > p->out_cap) {
		memmove(p->out, p->out + p->out_off, p->out_len - p->out_off);
		p->out_len -= p->out_off;
		p->out_off = 0;
	}
	build_msg(p->out + p->out_len, msg_bytes, magic, me_ip, seq);
	p->out_len += msg_bytes;
}

/* Write what is buffered.  Counts whole data messages as sent. */
static void flush_out(struct peer *p)
{
	while (p->out_off < p->out_len) {
		ssize_t w = send(p->fd, p->out + p->out_off, p->out_len - p->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			fail(p, "reset", 0, p->recv + 1, errno);
		}
		p->out_off += (size_t)w;
		p->out_flushed_total += (size_t)w;
	}
	uint64_t whole = p->out_flushed_total / msg_bytes;
	/* data messages precede the END message, which is queued last */
	p->sent = whole < p->queued ? whole : p->queued;
	if (p->end_queued && whole > p->queued)
		p->end_sent = 1;
	if (p->end_sent && !p->wr_shut) {
		shutdown(p->fd, SHUT_WR);
		p->wr_shut = 1;
	}
	if (p->end_sent && p->eof_seen) {
		close(p->fd);
		p->fd = -1;
		p->st = C_DONE;
	}
}

static void handle_msg(struct peer *p, const unsigned char *m)
{
	uint32_t magic = get32(m);
	uint64_t seq = get64(m + 8);
	uint64_t want = p->recv + 1;
	if (p->end_recv)
		fail(p, "corrupt", seq, 0, 0); /* data after the END message */
	if ((magic != MAGIC_DATA && magic != MAGIC_END) || get32(m + 4) != p->ip ||
	    get32(m + 16) != msg_bytes - HDR_BYTES || get32(m + 20) != msg_sum(m, msg_bytes))
		fail(p, "corrupt", seq, want, 0);
	static unsigned char *ref;
	if (!ref)
		ref = malloc(msg_bytes);
	fill_payload(ref, msg_bytes - HDR_BYTES, p->ip, seq);
	if (memcmp(ref, m + HDR_BYTES, msg_bytes - HDR_BYTES) != 0)
		fail(p, "corrupt", seq, want, 0);
	if (magic == MAGIC_END) {
		/* seq = number of data messages the peer sent */
		if (seq != p->recv)
			fail(p, seq > p->recv ? "gap" : "dup", seq, p->recv, 0);
		p->end_recv = 1;
		return;
	}
	if (seq == want) {
		p->recv = seq;
		return;
	}
	if (seq > want)
		fail(p, "gap", seq, want, 0);
	if (seq + 1 == want)
		fail(p, "dup", seq, want, 0);
	fail(p, "reorder", seq, want, 0);
}

static void read_in(struct peer *p)
{
	for (;;) {
		ssize_t r = recv(p->fd, p->in + p->in_len, IN_BUF - p->in_len, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			fail(p, "reset", 0, p->recv + 1, errno);
		}
		if (r == 0) {
			if (p->in_len || !p->end_recv)
				fail(p, "eof", 0, p->recv + 1, 0);
			/* clean end: END received, then EOF; done once our END is out too */
			p->eof_seen = 1;
			if (p->end_sent) {
				close(p->fd);
				p->fd = -1;
				p->st = C_DONE;
			}
			return;
		}
		p->in_len += (size_t)r;
		size_t off = 0;
		while (p->in_len - off >= msg_bytes) {
			handle_msg(p, p->in + off);
			off += msg_bytes;
		}
		memmove(p->in, p->in + off, p->in_len - off);
		p->in_len -= off;
	}
}

static struct peer *find_peer(uint32_t ip)
{
	for (int i = 0; i < npeers; i++)
		if (peers[i].ip == ip)
			return &peers[i];
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: tcpstream --me IP --peers IP,IP,... [--port 5000] [--msg-bytes 256]\n"
			"                 [--rate MSGS_PER_SEC] [--status-every S] [--duration SEC]\n"
			"                 [--connect-timeout SEC]\n");
	exit(2);
}

static uint32_t parse_ip(const char *s)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1) {
		fprintf(stderr, "tcpstream: bad IP %s\n", s);
		exit(2);
	}
	return ntohl(a.s_addr);
}

int main(int argc, char **argv)
{
	const char *me = NULL, *plist = NULL;
	double rate = 50, status_every = 2, duration = 0, connect_timeout = 600;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (!v)
			usage();
		if (!strcmp(a, "--me"))
			me = v;
		else if (!strcmp(a, "--peers"))
			plist = v;
		else if (!strcmp(a, "--port"))
			port = (uint16_t)strtoul(v, &end, 10);
		else if (!strcmp(a, "--msg-bytes"))
			msg_bytes = strtoul(v, &end, 10);
		else if (!strcmp(a, "--rate"))
			rate = strtod(v, &end);
		else if (!strcmp(a, "--status-every"))
			status_every = strtod(v, &end);
		else if (!strcmp(a, "--duration"))
			duration = strtod(v, &end);
		else if (!strcmp(a, "--connect-timeout"))
			connect_timeout = strtod(v, &end);
		else
			usage();
		if (end && *end)
			usage();
		i++;
	}
	if (!me || !plist || msg_bytes < 32 || msg_bytes > 65536 || rate <= 0 || port == 0)
		usage();
	me_ip = parse_ip(me);
	ipname(me_ip, me_name);

	/* peers: comma separated; our own address and repeats are skipped */
	char *copy = strdup(plist), *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!*tok)
			continue;
		uint32_t ip = parse_ip(tok);
		if (ip == me_ip || find_peer(ip))
			continue;
		if (npeers == MAX_PEERS)
			usage();
		struct peer *p = &peers[npeers++];
		memset(p, 0, sizeof *p);
		p->ip = ip;
		ipname(ip, p->name);
		p->fd = -1;
		p->we_connect = me_ip < ip;
		p->out_cap = OUT_LIMIT + 4 * msg_bytes;
		p->out = malloc(p->out_cap);
		p->in = malloc(IN_BUF);
		if (!p->out || !p->in)
			return 1;
	}
	free(copy);
	signal(SIGPIPE, SIG_IGN);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(me_ip) };
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof la) != 0 || listen(lfd, 64) != 0) {
		say("ts: FAIL me=%s kind=listen errno=%d", me_name, errno);
		return 1;
	}
	fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);

	uint64_t t0 = now_ms();
	uint64_t connect_deadline = t0 + (uint64_t)(connect_timeout * 1000);
	uint64_t stop_at = duration > 0 ? t0 + (uint64_t)(duration * 1000) : 0;
	uint64_t status_ms = status_every > 0 ? (uint64_t)(status_every * 1000) : 0;
	if (status_ms && status_ms < 100)
		status_ms = 100;
	uint64_t next_status = t0 + status_ms;
	int stopping = 0;
	double burst = rate < 1 ? 1 : rate; /* at most 1 s of messages after a stall */
	uint64_t tick = (uint64_t)(1000.0 / rate);
	if (tick < 1)
		tick = 1;
	if (tick > 200)
		tick = 200;

	say("ts: start me=%s peers=%d port=%u msg=%zu rate=%g", me_name, npeers, port, msg_bytes,
	    rate);

	struct pollfd pfd[MAX_PEERS + 1];
	int pidx[MAX_PEERS + 1];
	for (;;) {
		uint64_t t = now_ms();

		if (stop_at && !stopping && t >= stop_at)
			stopping = 1;

		int all_done = 1;
		for (int i = 0; i < npeers; i++) {
			struct peer *p = &peers[i];
			if (p->st != C_UP && p->st != C_DONE && t >= connect_deadline)
				fail(p, "connect", 0, 0, 0);
			if (p->we_connect && p->st == C_IDLE && t >= p->retry_at)
				start_connect(p, t, 5000);
			if (p->st == C_CONNECTING && t >= p->attempt_until) {
				close(p->fd); /* this attempt hangs (no SYN-ACK): start over */
				p->fd = -1;
				p->st = C_IDLE;
				p->retry_at = t;
			}
			if (p->st == C_UP) {
				if (!stopping) {
					p->tokens += (double)(t - p->tok_ms) * rate / 1000.0;
					if (p->tokens > burst)
						p->tokens = burst;
					p->tok_ms = t;
					while (p->tokens >= 1 &&
					       p->out_len - p->out_off < OUT_LIMIT) {
						queue_msg(p, MAGIC_DATA, ++p->queued);
						p->tokens -= 1;
					}
				} else if (!p->end_queued) {
					queue_msg(p, MAGIC_END, p->queued);
					p->end_queued = 1;
				}
				flush_out(p);
			}
			if (p->st != C_DONE)
				all_done = 0;
		}
		if (stopping && all_done) {
			status_line("done");
			return 0;
		}

		if (status_ms && t >= next_status) {
			status_line("ok");
			next_status += status_ms;
			if (next_status <= t) /* after a stall: no burst of lines */
				next_status = t + status_ms;
		}

		int n = 0;
		pfd[n].fd = lfd;
		pfd[n].events = POLLIN;
		pidx[n++] = -1;
		for (int i = 0; i < npeers; i++) {
			struct peer *p = &peers[i];
			if (p->st == C_CONNECTING) {
				pfd[n].fd = p->fd;
				pfd[n].events = POLLOUT;
			} else if (p->st == C_UP) {
				pfd[n].fd = p->fd;
				pfd[n].events = p->eof_seen ? 0 : POLLIN;
				if (p->out_off < p->out_len)
					pfd[n].events |= POLLOUT;
			} else {
				continue;
			}
			pidx[n++] = i;
		}
		int timeout = (int)tick;
		if (status_ms && next_status > t && next_status - t < (uint64_t)timeout)
			timeout = (int)(next_status - t);
		if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR) {
			say("ts: FAIL me=%s kind=poll errno=%d", me_name, errno);
			return 1;
		}
		t = now_ms();
		for (int k = 0; k < n; k++) {
			if (!pfd[k].revents)
				continue;
			if (pidx[k] < 0) {
				for (;;) {
					struct sockaddr_in sa;
					socklen_t sl = sizeof sa;
					int fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
					if (fd < 0)
						break;
					uint32_t ip = ntohl(sa.sin_addr.s_addr);
					struct peer *p = find_peer(ip);
					if (!p || p->we_connect) {
						char nm[16];
						ipname(ip, nm);
						say("ts: note me=%s refused=%s", me_name, nm);
						close(fd);
						continue;
					}
					if (p->st != C_IDLE)
						fail(p, "dupconn", 0, 0, 0);
					set_opts(fd);
					came_up(p, fd, t);
				}
				continue;
			}
			struct peer *p = &peers[pidx[k]];
			if (p->st == C_CONNECTING) {
				int err = 0;
				socklen_t el = sizeof err;
				getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err) {
					close(p->fd);
					p->fd = -1;
					p->st = C_IDLE;
					p->retry_at = t + 500;
				} else {
					came_up(p, p->fd, t);
				}
				continue;
			}
			if (p->st == C_UP) {
				if (!p->eof_seen && (pfd[k].revents & (POLLIN | POLLERR | POLLHUP)))
					read_in(p);
				if (p->st == C_UP && (pfd[k].revents & POLLOUT))
					flush_out(p);
			}
		}
	}
}
