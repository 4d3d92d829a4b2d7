#include "base.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const code_names[_AD_E_MAX] = {
	[AD_E_INTERNAL] = "internal",
	[AD_E_INVALID] = "invalid argument",
	[AD_E_NOT_FOUND] = "not found",
	[AD_E_EXISTS] = "already exists",
	[AD_E_PRECONDITION] = "failed precondition",
	[AD_E_UNAVAILABLE] = "unavailable",
	[AD_E_UNAUTHENTICATED] = "unauthenticated",
	[AD_E_PERMISSION] = "permission denied",
	[AD_E_RESOURCE] = "resource exhausted",
	[AD_E_DEADLINE] = "deadline exceeded",
	[AD_E_CANCELLED] = "cancelled",
	[AD_E_UNIMPLEMENTED] = "unimplemented",
	[AD_E_DATA_LOSS] = "data loss",
};

const char *ad_code_name(ad_code code)
{
	if ((unsigned)code >= _AD_E_MAX)
		return "unknown";
	return code_names[code];
}

int ad_error_make(ad_error **err, ad_code code, int errno_value, const char *fmt, ...)
{
	if (!err)
		return -1;
	char *msg = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (msg && errno_value) {
		char *with_errno = NULL;
		if (asprintf(&with_errno, "%s: %s", msg, strerror(errno_value)) >= 0) {
			free(msg);
			msg = with_errno;
		}
	}
	if (!msg)
		abort();
	/* A second error replaces the first: the newest is what failed. */
	ad_error_free(err);
	/* A full disk or quota is never a bug nor the caller's fault, wherever
	 * it surfaces: the answer is RESOURCE_EXHAUSTED. */
	if (errno_value == ENOSPC || errno_value == EDQUOT)
		code = AD_E_RESOURCE;
	ad_error *e = ad_malloc0(sizeof(*e));
	e->code = code;
	e->errno_value = errno_value;
	e->message = msg;
	*err = e;
	return -1;
}

int ad_error_wrap(ad_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return -1;
	char *ctx = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&ctx, fmt, ap) < 0)
		abort();
	va_end(ap);
	char *msg = ad_asprintf("%s: %s", ctx, (*err)->message);
	free(ctx);
	free((*err)->message);
	(*err)->message = msg;
	return -1;
}

void ad_error_free(ad_error **err)
{
	if (!err || !*err)
		return;
	free((*err)->message);
	free(*err);
	*err = NULL;
}

void ad_error_freep(ad_error **err) { ad_error_free(err); }

void ad_freep(void *p) { free(*(void **)p); }

void ad_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

void ad_fclosep(void *fp)
{
	FILE *f = *(FILE **)fp;
	if (f)
		fclose(f);
}

static void oom(size_t size)
{
	fprintf(stderr, "agentd: out of memory allocating %zu bytes\n", size);
	abort();
}

void *ad_malloc0(size_t size)
{
	void *p = calloc(1, size ? size : 1);
	if (!p)
		oom(size);
	return p;
}

void *ad_realloc(void *p, size_t size)
{
	void *n = realloc(p, size ? size : 1);
	if (!n)
		oom(size);
	return n;
}

char *ad_strdup(const char *s)
{
	char *d = strdup(s ? s : "");
	if (!d)
		oom(strlen(s));
	return d;
}

char *ad_strndup(const char *s, size_t n)
{
	char *d = strndup(s, n);
	if (!d)
		oom(n);
	return d;
}

char *ad_asprintf(const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom(0);
	return s;
}
