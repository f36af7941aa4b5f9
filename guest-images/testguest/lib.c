/* Freestanding helpers: string functions, a small printf, COM1 console. */
#include "tg.h"

void *memcpy(void *d, const void *s, size_t n)
{
	void *r = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return r;
}

void *memset(void *d, int c, size_t n)
{
	void *r = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return r;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

/* Supports %c %s %d %u %x with optional '0' flag, width and 'l'. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	size_t pos = 0;
#define PUT(ch) do { if (pos + 1 < size) buf[pos] = (ch); pos++; } while (0)
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			PUT(*fmt);
			continue;
		}
		fmt++;
		int zero = 0, width = 0, lng = 0;
		if (*fmt == '0') {
			zero = 1;
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			lng = 1;
			fmt++;
		}
		u64 v;
		unsigned base = 10;
		int neg = 0;
		switch (*fmt) {
		case 'c':
			PUT((char)va_arg(ap, int));
			continue;
		case 's': {
			const char *s = va_arg(ap, const char *);
			for (int len = (int)strlen(s); len < width; len++)
				PUT(' ');
			while (*s)
				PUT(*s++);
			continue;
		}
		case 'd': {
			i64 x = lng ? va_arg(ap, i64) : va_arg(ap, int);
			neg = x < 0;
			v = neg ? -(u64)x : (u64)x;
			break;
		}
		case 'u':
			v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned);
			break;
		case 'x':
			v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned);
			base = 16;
			break;
		case '%':
			PUT('%');
			continue;
		default:
			PUT('?');
			if (!*fmt)
				fmt--;
			continue;
		}
		char tmp[24];
		int n = 0;
		do {
			tmp[n++] = "0123456789abcdef"[v % base];
			v /= base;
		} while (v);
		if (neg && !zero)
			tmp[n++] = '-';
		while (n < width && n < (int)sizeof(tmp) - 1)
			tmp[n++] = zero ? '0' : ' ';
		if (neg && zero)
			tmp[n++] = '-';
		while (n)
			PUT(tmp[--n]);
	}
	if (size)
		buf[pos < size ? pos : size - 1] = 0;
	return (int)pos;
#undef PUT
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

/* ---- COM1 (16550) ---- */
#define COM1 0x3f8

void serial_init(void)
{
	outb(COM1 + 1, 0x00);   /* no interrupts */
	outb(COM1 + 3, 0x80);   /* DLAB */
	outb(COM1 + 0, 0x01);   /* divisor 1: 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);   /* 8N1 */
	outb(COM1 + 4, 0x03);   /* DTR | RTS */
	/* The FCR is deliberately not written: enabling or resetting the FIFO
	 * makes QEMU drop input that was already received (e.g. piped stdin). */
}

static void serial_putc(char c)
{
	/* poll THRE; bounded so a missing UART cannot hang us */
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1, (u8)c);
}

int serial_getc(void)
{
	if (inb(COM1 + 5) & 0x01)
		return inb(COM1);
	return -1;
}

static volatile int con_lock;

static void raw_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			serial_putc('\r');
		serial_putc(s[i]);
	}
}

void con_write(const char *s, size_t n)
{
	while (__atomic_exchange_n(&con_lock, 1, __ATOMIC_ACQUIRE))
		while (con_lock)
			cpu_relax();
	raw_write(s, n);
	__atomic_store_n(&con_lock, 0, __ATOMIC_RELEASE);
}

/* CPL 0 panic path: emulated, so only a short bounded wait for the lock. */
void con_write_panic(const char *s, size_t n)
{
	for (int i = 0; i < 1000; i++)
		if (!__atomic_exchange_n(&con_lock, 1, __ATOMIC_ACQUIRE))
			break;
	raw_write(s, n);
	__atomic_store_n(&con_lock, 0, __ATOMIC_RELEASE);
}

void tg_printf(const char *fmt, ...)
{
	char buf[2560];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	con_write(buf, (size_t)n);
}
