/* lw: Linux workload for vvmm single-VM checkpoint/restart tests.
 *
 *   lw --mem MIB --period-ms P --records PATH [--max-records N] [--status-every S]
 *   lw --check PATH
 *
 * Every P ms: verify the buffer holds generation g and rewrite it with g+1,
 * append "rec N mono_ns=T\n" to PATH and fsync it, and check CLOCK_MONOTONIC
 * did not go backwards.  See README.md in this directory for the output lines.
 * Plain C11 + POSIX; built with gcc -static.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "say.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64 finaliser: the pattern word for (generation, index). */
static inline uint64_t pattern(uint64_t gen, uint64_t idx)
{
	uint64_t z = (gen << 36) ^ idx ^ 0x5bd1e9955bd1e995ull;
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lw --mem MIB --period-ms P --records PATH [--max-records N] [--status-every S]\n"
		"       lw --check PATH\n");
	exit(2);
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

/* ---- record file scan -------------------------------------------------- */

struct scan {
	uint64_t records;    /* complete, parseable lines */
	uint64_t first, last;
	uint64_t gaps, dups; /* gaps: n > prev+1; dups: n <= prev */
	uint64_t bad_line;   /* 1-based line number of first unparseable line, 0 if none */
	uint64_t good_len;   /* byte length up to and including the last '\n' */
	uint64_t torn;       /* bytes after the last '\n' (an unfinished record) */
};

/* A line is "rec N mono_ns=T" with N >= 1 and T decimal. */
static int parse_rec(const char *line, size_t len, uint64_t *n)
{
	char tmp[128];
	if (len == 0 || len >= sizeof tmp)
		return -1;
	memcpy(tmp, line, len);
	tmp[len] = 0;
	if (strncmp(tmp, "rec ", 4) != 0)
		return -1;
	char *p = tmp + 4, *end;
	if (*p < '0' || *p > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 10);
	if (errno || v == 0 || strncmp(end, " mono_ns=", 9) != 0)
		return -1;
	p = end + 9;
	if (*p < '0' || *p > '9')
		return -1;
	strtoull(p, &end, 10);
	if (errno || *end)
		return -1;
	*n = v;
	return 0;
}

/* Returns 0, or -1 with errno if the file can't be read. */
static int scan_file(const char *path, struct scan *s)
{
	memset(s, 0, sizeof *s);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	uint64_t lineno = 0, off = 0;
	while ((len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] != '\n') {
			s->torn = (uint64_t)len;
			break;
		}
		lineno++;
		off += (uint64_t)len;
		s->good_len = off;
		uint64_t n;
		if (parse_rec(line, (size_t)len - 1, &n) != 0) {
			if (!s->bad_line)
				s->bad_line = lineno;
			continue;
		}
		if (s->records == 0) {
			s->first = n;
		} else if (n > s->last + 1) {
			s->gaps++;
		} else if (n <= s->last) {
			s->dups++;
		}
		s->records++;
		s->last = n;
	}
	int err = ferror(f);
	free(line);
	fclose(f);
	if (err) {
		errno = EIO;
		return -1;
	}
	return 0;
}

static int scan_ok(const struct scan *s)
{
	if (s->bad_line || s->gaps || s->dups)
		return 0;
	if (s->records && (s->first != 1 || s->last != s->records))
		return 0;
	return 1;
}

static int do_check(const char *path)
{
	struct scan s;
	if (scan_file(path, &s) != 0) {
		say("lw: FAIL check open err=%d", errno);
		return 1;
	}
	int ok = scan_ok(&s);
	say("lw: %s records=%" PRIu64 " first=%" PRIu64 " last=%" PRIu64 " gaps=%" PRIu64
	    " dups=%" PRIu64 " bad=%" PRIu64 " torn=%" PRIu64,
	    ok ? "check" : "FAIL check", s.records, s.first, s.last, s.gaps, s.dups,
	    s.bad_line, s.torn);
	return ok ? 0 : 1;
}

/* ---- main loop --------------------------------------------------------- */

static volatile sig_atomic_t want_status;

static void on_usr1(int sig)
{
	(void)sig;
	want_status = 1;
}

int main(int argc, char **argv)
{
	uint64_t mem_mib = 0, period_ms = 0, max_records = 0, status_every = 1;
	const char *path = NULL, *check = NULL;
	int have_mem = 0, have_period = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--check") && v) {
			check = v;
		} else if (!strcmp(a, "--records") && v) {
			path = v;
		} else if (!strcmp(a, "--mem") && v) {
			if (parse_u64(v, &mem_mib) || mem_mib == 0)
				usage();
			have_mem = 1;
		} else if (!strcmp(a, "--period-ms") && v) {
			if (parse_u64(v, &period_ms))
				usage();
			have_period = 1;
		} else if (!strcmp(a, "--max-records") && v) {
			if (parse_u64(v, &max_records) || max_records == 0)
				usage();
		} else if (!strcmp(a, "--status-every") && v) {
			if (parse_u64(v, &status_every))
				usage();
		} else {
			usage();
		}
		i++;
	}
	if (check)
		return do_check(check);
	if (!have_mem || !have_period || !path)
		usage();

	/* Existing records: must be contiguous from 1.  A torn last line (bytes
	 * after the last '\n': a record whose write had not finished, e.g. the
	 * disk image was cut in the middle of the write) is cut off, and its
	 * number is written again. */
	uint64_t next = 1;
	struct scan s;
	if (scan_file(path, &s) == 0) {
		if (!scan_ok(&s)) {
			say("lw: FAIL records=%" PRIu64 " first=%" PRIu64 " last=%" PRIu64
			    " gaps=%" PRIu64 " dups=%" PRIu64 " bad=%" PRIu64,
			    s.records, s.first, s.last, s.gaps, s.dups, s.bad_line);
			return 1;
		}
		next = s.last + 1;
		if (s.torn) {
			if (truncate(path, (off_t)s.good_len) != 0) {
				say("lw: FAIL records truncate err=%d", errno);
				return 1;
			}
			say("lw: torn bytes=%" PRIu64 " cut", s.torn);
		}
	} else if (errno != ENOENT) {
		say("lw: FAIL records open err=%d", errno);
		return 1;
	}

	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		say("lw: FAIL records open err=%d", errno);
		return 1;
	}

	size_t bytes = (size_t)mem_mib << 20;
	size_t words = bytes / 8;
	uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED) {
		say("lw: FAIL mmap mem_mib=%" PRIu64 " err=%d", mem_mib, errno);
		return 1;
	}
	uint64_t gen = 0;
	for (size_t i = 0; i < words; i++)
		mem[i] = pattern(gen, i);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART: wakes the sleep */

	say("lw: start mem_mib=%" PRIu64 " next=%" PRIu64, mem_mib, next);
	if (max_records && next > max_records) {
		say("lw: done rec=%" PRIu64, next - 1);
		return 0;
	}

	uint64_t last_mono = mono_ns();
	uint64_t deadline = last_mono;
	uint64_t next_status = last_mono + status_every * 1000000000ull;
	uint64_t rec = next - 1;

	for (;;) {
		/* (a) verify generation gen, rewrite with gen+1 */
		for (size_t i = 0; i < words; i++) {
			uint64_t want = pattern(gen, i);
			uint64_t got = mem[i];
			if (got != want) {
				say("lw: FAIL memory gen=%" PRIu64 " word=%zu got=%016" PRIx64
				    " want=%016" PRIx64, gen, i, got, want);
				return 1;
			}
			mem[i] = pattern(gen + 1, i);
		}
		gen++;

		/* (c) the clock */
		uint64_t now = mono_ns();
		if (now < last_mono) {
			say("lw: FAIL clock back by %" PRIu64, last_mono - now);
			return 1;
		}
		last_mono = now;

		/* (b) the record */
		char line[96];
		int n = snprintf(line, sizeof line, "rec %" PRIu64 " mono_ns=%" PRIu64 "\n",
				 rec + 1, now);
		const char *p = line;
		while (n > 0) {
			ssize_t w = write(fd, p, (size_t)n);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				say("lw: FAIL records write err=%d", errno);
				return 1;
			}
			p += w;
			n -= (int)w;
		}
		while (fsync(fd) != 0) {
			if (errno != EINTR) {
				say("lw: FAIL records fsync err=%d", errno);
				return 1;
			}
		}
		rec++;

		if (max_records && rec >= max_records) {
			say("lw: done rec=%" PRIu64, rec);
			return 0;
		}

		now = mono_ns();
		if ((status_every && now >= next_status) || want_status) {
			want_status = 0;
			say("lw: ok rec=%" PRIu64 " gen=%" PRIu64 " mono_ms=%" PRIu64, rec, gen,
			    now / 1000000);
			if (status_every) {
				next_status += status_every * 1000000000ull;
				if (next_status <= now) /* after a pause: no burst of lines */
					next_status = now + status_every * 1000000000ull;
			}
		}

		/* sleep until the next period; if late (slow guest, a pause), start
		 * the next iteration now and re-anchor the schedule */
		deadline += period_ms * 1000000ull;
		if (deadline <= now) {
			deadline = now;
			continue;
		}
		struct timespec ts = { (time_t)(deadline / 1000000000ull),
				       (long)(deadline % 1000000000ull) };
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
			if (want_status) {
				want_status = 0;
				uint64_t t = mono_ns();
				say("lw: ok rec=%" PRIu64 " gen=%" PRIu64 " mono_ms=%" PRIu64, rec,
				    gen, t / 1000000);
			}
		}
	}
}
