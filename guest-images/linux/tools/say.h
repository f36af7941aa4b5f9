/* say(): one console line, written with a single write() so the lines of a
 * guest tool never interleave with others on the serial console. Shared by
 * lw.c and tcpstream.c (each a single-file static program). */
#ifndef VVMM_TOOLS_SAY_H
#define VVMM_TOOLS_SAY_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static void say(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(1, p, (size_t)n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (int)w;
	}
}

#endif
