/* The Prometheus text format (0.0.4) and OpenMetrics 1.0.0 writer. Text is
 * appended to a libevent evbuffer, which the HTTP side sends as it is. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "metrics_int.h"

struct metrics_out {
	struct evbuffer *buf;
	metrics_format format;
	const char *name; /* the current family's sample name */
	bool finished;
};

metrics_out *metrics_out_new(metrics_format format)
{
	metrics_out *o = ad_malloc0(sizeof(*o));
	o->format = format;
	o->buf = evbuffer_new();
	if (!o->buf)
		abort();
	return o;
}

void metrics_out_free(metrics_out *o)
{
	if (!o)
		return;
	evbuffer_free(o->buf);
	free(o);
}

struct evbuffer *metrics_out_buffer(metrics_out *o)
{
	if (o->format == METRICS_OPENMETRICS && !o->finished)
		evbuffer_add(o->buf, "# EOF\n", 6);
	o->finished = true;
	return o->buf;
}

const char *metrics_out_finish(metrics_out *o, size_t *ret_len)
{
	metrics_out_buffer(o);
	*ret_len = evbuffer_get_length(o->buf);
	/* pullup of an empty buffer is NULL */
	const char *p = (const char *)evbuffer_pullup(o->buf, -1);
	return p ? p : "";
}

/* "application/openmetrics-text" anywhere in Accept selects OpenMetrics (as
 * Prometheus sends it with a higher q than text/plain when it wants it). */
metrics_format metrics_format_from_accept(const char *accept)
{
	if (accept && strstr(accept, "application/openmetrics-text"))
		return METRICS_OPENMETRICS;
	return METRICS_TEXT;
}

const char *metrics_content_type(metrics_format format)
{
	return format == METRICS_OPENMETRICS
		   ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
		   : "text/plain; version=0.0.4; charset=utf-8";
}

static void add_escaped(struct evbuffer *b, const char *s, bool quote)
{
	const char *run = s;
	for (; *s; s++) {
		const char *esc = NULL;
		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (*s == '"' && quote)
			esc = "\\\"";
		if (!esc)
			continue;
		evbuffer_add(b, run, (size_t)(s - run));
		evbuffer_add(b, esc, 2);
		run = s + 1;
	}
	evbuffer_add(b, run, (size_t)(s - run));
}

static const char *type_name(metrics_type t)
{
	switch (t) {
	case METRICS_COUNTER:
		return "counter";
	case METRICS_GAUGE:
		return "gauge";
	case METRICS_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

void metrics_family(metrics_out *o, const char *name, metrics_type type, const char *help)
{
	o->name = name;
	size_t family_len = strlen(name);
	const char *type_str = type_name(type);
	if (o->format == METRICS_OPENMETRICS && type == METRICS_COUNTER) {
		if (ends_with(name, "_total"))
			family_len -= strlen("_total");
		else
			type_str = "unknown";
	}
	evbuffer_add(o->buf, "# HELP ", 7);
	evbuffer_add(o->buf, name, family_len);
	evbuffer_add(o->buf, " ", 1);
	add_escaped(o->buf, help, o->format == METRICS_OPENMETRICS);
	evbuffer_add(o->buf, "\n# TYPE ", 8);
	evbuffer_add(o->buf, name, family_len);
	evbuffer_add_printf(o->buf, " %s\n", type_str);
}

/* Integral values (counts, bytes) as integers; others in the shortest of
 * %.15g / %.17g that reads back as the same double. */
size_t metrics_format_value(double v, char buf[32])
{
	if (isnan(v))
		return (size_t)snprintf(buf, 32, "NaN");
	if (isinf(v))
		return (size_t)snprintf(buf, 32, v > 0 ? "+Inf" : "-Inf");
	if (v == (double)(int64_t)v && fabs(v) < 1e15) {
		char tmp[24];
		int64_t i = (int64_t)v;
		uint64_t u = i < 0 ? (uint64_t)(-i) : (uint64_t)i;
		size_t n = 0;
		do {
			tmp[n++] = (char)('0' + u % 10);
			u /= 10;
		} while (u);
		size_t len = 0;
		if (i < 0)
			buf[len++] = '-';
		while (n)
			buf[len++] = tmp[--n];
		buf[len] = '\0';
		return len;
	}
	int len = snprintf(buf, 32, "%.15g", v);
	if (strtod(buf, NULL) != v)
		len = snprintf(buf, 32, "%.17g", v);
	return (size_t)len;
}

/* Decimal digits of u into the end of buf; returns where they start. */
static char *digits_back(uint64_t u, char *end)
{
	do
		*--end = (char)('0' + u % 10);
	while (u /= 10);
	return end;
}

static void sample_head(metrics_out *o, const char *suffix, const char *labels, const char *le)
{
	evbuffer_add(o->buf, o->name, strlen(o->name));
	if (suffix)
		evbuffer_add(o->buf, suffix, strlen(suffix));
	bool any = labels && *labels;
	if (any || le) {
		evbuffer_add(o->buf, "{", 1);
		if (any)
			evbuffer_add(o->buf, labels, strlen(labels));
		if (le) {
			if (any)
				evbuffer_add(o->buf, ",", 1);
			evbuffer_add_printf(o->buf, "le=\"%s\"", le);
		}
		evbuffer_add(o->buf, "}", 1);
	}
}

static void sample_le(metrics_out *o, const char *suffix, const char *labels, const char *le,
		      double value)
{
	sample_head(o, suffix, labels, le);
	char num[34] = " ";
	size_t n = 1 + metrics_format_value(value, num + 1);
	num[n++] = '\n';
	evbuffer_add(o->buf, num, n);
}

void metrics_sample_ns(metrics_out *o, const char *labels, int64_t ns)
{
	sample_head(o, NULL, labels, NULL);
	uint64_t u = ns < 0 ? -(uint64_t)ns : (uint64_t)ns;
	char buf[48], *end = buf + sizeof(buf), *p = end;
	*--p = '\n';
	uint64_t frac = u % 1000000000;
	if (frac) {
		int width = 9;
		while (frac % 10 == 0) { /* no trailing zeros */
			frac /= 10;
			width--;
		}
		char *start = digits_back(frac, p);
		while (p - start < width)
			*--start = '0';
		p = start;
		*--p = '.';
	}
	p = digits_back(u / 1000000000, p);
	if (ns < 0)
		*--p = '-';
	*--p = ' ';
	evbuffer_add(o->buf, p, (size_t)(end - p));
}

void metrics_sample(metrics_out *o, const char *suffix, const char *labels, double value)
{
	sample_le(o, suffix, labels, NULL, value);
}

void metrics_histogram(metrics_out *o, const char *labels, const double *bounds,
		       const uint64_t *cumulative, size_t n, double sum, uint64_t count)
{
	char le[32];
	for (size_t i = 0; i < n; i++) {
		metrics_format_value(bounds[i], le);
		/* OpenMetrics wants bounds as floats ("1.0", not "1"). */
		if (o->format == METRICS_OPENMETRICS && !strpbrk(le, ".eE"))
			strcat(le, ".0");
		sample_le(o, "_bucket", labels, le, (double)cumulative[i]);
	}
	sample_le(o, "_bucket", labels, "+Inf", (double)count);
	sample_le(o, "_sum", labels, NULL, sum);
	sample_le(o, "_count", labels, NULL, (double)count);
}

char *metrics_labels(size_t n, const char *const *names, const char *const *values)
{
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (i)
			evbuffer_add(b, ",", 1);
		evbuffer_add(b, names[i], strlen(names[i]));
		evbuffer_add(b, "=\"", 2);
		add_escaped(b, values[i] ? values[i] : "", true);
		evbuffer_add(b, "\"", 1);
	}
	size_t len = evbuffer_get_length(b);
	char *s = ad_malloc0(len + 1);
	evbuffer_remove(b, s, len);
	evbuffer_free(b);
	return s;
}
