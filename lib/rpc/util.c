/* util.c — I/O-free helpers of libadrpc (see rpc_int.h). */
#include "rpc_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const code_names[] = {
    [RPC_OK] = "OK",
    [RPC_CANCELLED] = "CANCELLED",
    [RPC_UNKNOWN] = "UNKNOWN",
    [RPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
    [RPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
    [RPC_NOT_FOUND] = "NOT_FOUND",
    [RPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
    [RPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
    [RPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [RPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
    [RPC_ABORTED] = "ABORTED",
    [RPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
    [RPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
    [RPC_INTERNAL] = "INTERNAL",
    [RPC_UNAVAILABLE] = "UNAVAILABLE",
    [RPC_DATA_LOSS] = "DATA_LOSS",
    [RPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *rpc_code_name(rpc_code code)
{
	if ((unsigned)code >= sizeof(code_names) / sizeof(code_names[0]))
		return "UNKNOWN";
	return code_names[code];
}

rpc_code rpc_code_from_http(int status)
{
	switch (status) {
	case 400:
		return RPC_INTERNAL;
	case 401:
		return RPC_UNAUTHENTICATED;
	case 403:
		return RPC_PERMISSION_DENIED;
	case 404:
		return RPC_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504:
		return RPC_UNAVAILABLE;
	default:
		return RPC_UNKNOWN;
	}
}

/* ---- framer -------------------------------------------------------------- */

void rpc_framer_reset(rpc_framer *fr)
{
	free(fr->buf);
	memset(fr, 0, sizeof(*fr));
}

bool rpc_framer_partial(const rpc_framer *fr)
{
	return fr->hdr_got > 0 || fr->in_body;
}

size_t rpc_framer_buffered(const rpc_framer *fr)
{
	return fr->cap;
}

int rpc_framer_feed(rpc_framer *fr, const uint8_t *data, size_t len, size_t max,
		    rpc_framer_msg_fn fn, void *ctx, uint32_t *ret_len)
{
	while (len > 0) {
		if (!fr->in_body) {
			size_t take = 5 - fr->hdr_got;
			if (take > len)
				take = len;
			memcpy(fr->hdr + fr->hdr_got, data, take);
			fr->hdr_got += take;
			data += take;
			len -= take;
			if (fr->hdr_got < 5)
				break;
			fr->hdr_got = 0;
			fr->compressed = fr->hdr[0] & 1;
			fr->len = (uint32_t)fr->hdr[1] << 24 | (uint32_t)fr->hdr[2] << 16 |
				  (uint32_t)fr->hdr[3] << 8 | fr->hdr[4];
			/* The limit is enforced on the declared length, before a
			 * single body byte is stored. */
			if (fr->len > max) {
				if (ret_len)
					*ret_len = fr->len;
				return RPC_RESOURCE_EXHAUSTED;
			}
			fr->in_body = true;
			fr->got = 0;
			/* Zero-copy: the whole body is in this chunk. */
			if (len >= fr->len) {
				fr->in_body = false;
				int r = fn(data, fr->len, fr->compressed, ctx);
				if (r != 0)
					return r;
				data += fr->len;
				len -= fr->len;
				continue;
			}
			if (len == 0)
				break;
		}
		size_t need = fr->len - fr->got;
		size_t take = need < len ? need : len;
		if (fr->got + take > fr->cap) {
			/* Grow with what arrives, never with what is claimed. */
			size_t ncap = fr->cap ? fr->cap * 2 : 16384;
			if (ncap < fr->got + take)
				ncap = fr->got + take;
			if (ncap > fr->len)
				ncap = fr->len;
			fr->buf = ad_realloc(fr->buf, ncap);
			fr->cap = ncap;
		}
		memcpy(fr->buf + fr->got, data, take);
		fr->got += take;
		data += take;
		len -= take;
		if (fr->got == fr->len) {
			fr->in_body = false;
			int r = fn(fr->buf, fr->len, fr->compressed, ctx);
			free(fr->buf);
			fr->buf = NULL;
			fr->cap = 0;
			fr->got = 0;
			if (r != 0)
				return r;
		}
	}
	return RPC_OK;
}

/* ---- percent-encoding ------------------------------------------------------ */

char *rpc_percent_encode(const char *s, size_t max_in)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strnlen(s, max_in);
	char *out = ad_malloc0(n * 3 + 1);
	char *p = out;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c <= 0x7e && c != '%') {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = 0;
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *rpc_percent_decode(const char *s, size_t len)
{
	char *out = ad_malloc0(len + 1);
	char *p = out;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			*p++ = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
			i += 2;
		} else {
			*p++ = s[i];
		}
	}
	*p = 0;
	return out;
}

/* ---- grpc-timeout -------------------------------------------------------- */

int rpc_timeout_parse(const char *s, size_t len, int64_t *ret_ns)
{
	if (len < 2 || len > 9)
		return -1;
	int64_t v = 0;
	for (size_t i = 0; i + 1 < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	int64_t mul;
	switch (s[len - 1]) {
	case 'H':
		mul = 3600LL * 1000000000LL;
		break;
	case 'M':
		mul = 60LL * 1000000000LL;
		break;
	case 'S':
		mul = 1000000000LL;
		break;
	case 'm':
		mul = 1000000LL;
		break;
	case 'u':
		mul = 1000LL;
		break;
	case 'n':
		mul = 1;
		break;
	default:
		return -1;
	}
	/* 99999999 H does not fit in int64 ns: saturate. */
	if (v > INT64_MAX / mul)
		*ret_ns = INT64_MAX;
	else
		*ret_ns = v * mul;
	return 0;
}

void rpc_timeout_format(uint64_t ms, char buf[16])
{
	if (ms <= 99999999ULL)
		snprintf(buf, 16, "%llum", (unsigned long long)ms);
	else if (ms / 1000 <= 99999999ULL)
		snprintf(buf, 16, "%lluS", (unsigned long long)(ms / 1000));
	else if (ms / 3600000 <= 99999999ULL)
		snprintf(buf, 16, "%lluH", (unsigned long long)(ms / 3600000));
	else
		snprintf(buf, 16, "99999999H");
}

/* ---- arena --------------------------------------------------------------- */

struct rpc_arena_block {
	rpc_arena_block *next;
	size_t pad; /* keeps data 16-aligned */
	uint8_t data[];
};

void rpc_arena_init(rpc_arena *a, void *first, size_t first_size)
{
	a->cur = first;
	a->left = first_size;
	a->blocks = NULL;
}

void *rpc_arena_alloc(rpc_arena *a, size_t size)
{
	size_t sz = (size + 15) & ~(size_t)15;
	if (sz < size)
		abort();
	uintptr_t cur = (uintptr_t)a->cur;
	size_t adj = (16 - (cur & 15)) & 15;
	if (a->cur && a->left >= adj + sz) {
		void *p = a->cur + adj;
		memset(p, 0, sz);
		a->cur += adj + sz;
		a->left -= adj + sz;
		return p;
	}
	if (sz > 2048) {
		/* Big objects get their own block; the current block stays. */
		rpc_arena_block *b = ad_malloc0(sizeof(*b) + sz);
		b->next = a->blocks;
		a->blocks = b;
		return b->data;
	}
	size_t bsz = 4096;
	rpc_arena_block *b = ad_malloc0(sizeof(*b) + bsz);
	b->next = a->blocks;
	a->blocks = b;
	a->cur = b->data + sz;
	a->left = bsz - sz;
	return b->data;
}

void rpc_arena_free(rpc_arena *a)
{
	rpc_arena_block *b = a->blocks;
	while (b) {
		rpc_arena_block *n = b->next;
		free(b);
		b = n;
	}
	a->blocks = NULL;
	a->cur = NULL;
	a->left = 0;
}

static void *arena_pb_alloc(void *data, size_t size)
{
	return rpc_arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

void rpc_arena_pb_allocator(rpc_arena *a, ProtobufCAllocator *ret)
{
	ret->alloc = arena_pb_alloc;
	ret->free = arena_pb_free;
	ret->allocator_data = a;
}

/* ---- request header rules ------------------------------------------------ */

enum {
	PSEUDO_METHOD = 1u << 0,
	PSEUDO_SCHEME = 1u << 1,
	PSEUDO_PATH = 1u << 2,
	PSEUDO_AUTHORITY = 1u << 3,
	PATH_ASTERISK = 1u << 4, /* :path is "*" */
	METHOD_CONNECT = 1u << 5,
	METHOD_OPTIONS = 1u << 6,
};

/* RFC 9110 tchar, looked up per byte of every request header name (a strchr
 * per byte showed in perf). TCHAR_UPPER marks the ones a field name must not
 * have in HTTP/2. nghttp2 checks names and values only in
 * nghttp2_http_on_header, which it skips with HTTP messaging off. */
enum { TCHAR = 1, TCHAR_UPPER = 2 };
static const uint8_t tchar[256] = {
    ['a' ... 'z'] = TCHAR, ['A' ... 'Z'] = TCHAR_UPPER, ['0' ... '9'] = TCHAR,
    ['!'] = TCHAR,	   ['#'] = TCHAR,		['$'] = TCHAR,
    ['%'] = TCHAR,	   ['&'] = TCHAR,		['\''] = TCHAR,
    ['*'] = TCHAR,	   ['+'] = TCHAR,		['-'] = TCHAR,
    ['.'] = TCHAR,	   ['^'] = TCHAR,		['_'] = TCHAR,
    ['`'] = TCHAR,	   ['|'] = TCHAR,		['~'] = TCHAR,
};

static bool is_tchar(uint8_t c)
{
	return tchar[c] != 0;
}

/* A token without upper case. */
static bool is_field_name(const uint8_t *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (tchar[s[i]] != TCHAR)
			return false;
	return true;
}

static bool is_token(const uint8_t *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar(s[i]))
			return false;
	return true;
}

static bool bytes_eq(const uint8_t *s, size_t n, const char *lit)
{
	return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

static bool bytes_caseeq(const uint8_t *s, size_t n, const char *lit)
{
	return n == strlen(lit) && strncasecmp((const char *)s, lit, n) == 0;
}

/* RFC 9110 field-value: no NUL, CR or LF anywhere, no leading or trailing
 * space or tab (RFC 9113 section 8.2.1). */
static bool is_field_value(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == 0 || s[i] == '\r' || s[i] == '\n')
			return false;
	if (n > 0 && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		return false;
	return true;
}

/* host [":" port] with an IP literal in brackets (RFC 3986 authority; the
 * userinfo that nghttp2 lets through too). */
static const bool authority_char[256] = {
    ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['0' ... '9'] = true,
    ['-'] = true,	  ['.'] = true,		['_'] = true,
    ['~'] = true,	  ['%'] = true,		['!'] = true,
    ['$'] = true,	  ['&'] = true,		['\''] = true,
    ['('] = true,	  [')'] = true,		['*'] = true,
    ['+'] = true,	  [','] = true,		[';'] = true,
    ['='] = true,	  [':'] = true,		['@'] = true,
    ['['] = true,	  [']'] = true,
};

static bool is_authority(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!authority_char[s[i]])
			return false;
	return true;
}

/* origin-form ("/..." without controls or spaces) or the asterisk form. */
static bool is_path(const uint8_t *s, size_t n)
{
	if (n == 0 || (s[0] != '/' && !(n == 1 && s[0] == '*')))
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static bool is_scheme(const uint8_t *s, size_t n)
{
	if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return false;
	for (size_t i = 1; i < n; i++) {
		uint8_t c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

static rpc_hdr_verdict malformed(const char **ret_why, const char *why)
{
	*ret_why = why;
	return RPC_HDR_MALFORMED;
}

/* What a regular header's name and value allow, in requests and trailers. */
static rpc_hdr_verdict regular_header_check(const uint8_t *name, size_t namelen,
					    const uint8_t *value, size_t valuelen,
					    const char **ret_why)
{
	if (!is_field_name(name, namelen)) {
		/* Upper case is malformed wherever it is; other bytes only drop
		 * the header. */
		for (size_t i = 0; i < namelen; i++)
			if (name[i] >= 'A' && name[i] <= 'Z')
				return malformed(ret_why, "upper-case header name");
		*ret_why = "invalid header name";
		return RPC_HDR_IGNORE;
	}
	/* Connection-specific fields have no meaning in HTTP/2 (section 8.2.2). */
	if (bytes_eq(name, namelen, "connection") || bytes_eq(name, namelen, "keep-alive") ||
	    bytes_eq(name, namelen, "proxy-connection") ||
	    bytes_eq(name, namelen, "transfer-encoding") || bytes_eq(name, namelen, "upgrade"))
		return malformed(ret_why, "connection-specific header");
	if (bytes_eq(name, namelen, "te") && !bytes_caseeq(value, valuelen, "trailers"))
		return malformed(ret_why, "te other than trailers");
	if (!is_field_value(value, valuelen)) {
		*ret_why = "invalid header value";
		return RPC_HDR_IGNORE;
	}
	return RPC_HDR_OK;
}

void rpc_req_headers_init(rpc_req_headers *h, bool authority_any)
{
	memset(h, 0, sizeof(*h));
	h->authority_any = authority_any;
	h->content_length = -1;
}

static rpc_hdr_verdict pseudo_header_check(rpc_req_headers *h, const uint8_t *name,
					   size_t namelen, const uint8_t *value, size_t valuelen,
					   const char **ret_why)
{
	if (h->regular_seen)
		return malformed(ret_why, "pseudo-header after a regular header");
	unsigned bit;
	bool ok;
	if (bytes_eq(name, namelen, ":method")) {
		bit = PSEUDO_METHOD;
		ok = is_token(value, valuelen);
		if (bytes_eq(value, valuelen, "CONNECT"))
			h->seen |= METHOD_CONNECT;
		else if (bytes_eq(value, valuelen, "OPTIONS"))
			h->seen |= METHOD_OPTIONS;
	} else if (bytes_eq(name, namelen, ":scheme")) {
		bit = PSEUDO_SCHEME;
		ok = is_scheme(value, valuelen);
	} else if (bytes_eq(name, namelen, ":path")) {
		bit = PSEUDO_PATH;
		ok = is_path(value, valuelen);
		if (valuelen == 1 && value[0] == '*')
			h->seen |= PATH_ASTERISK;
	} else if (bytes_eq(name, namelen, ":authority")) {
		bit = PSEUDO_AUTHORITY;
		ok = h->authority_any ? is_field_value(value, valuelen)
				      : is_authority(value, valuelen);
	} else {
		/* :protocol too: extended CONNECT is not offered (RFC 8441). */
		return malformed(ret_why, "unknown pseudo-header");
	}
	if (h->seen & bit)
		return malformed(ret_why, "repeated pseudo-header");
	h->seen |= bit;
	if (!ok)
		return malformed(ret_why, bit == PSEUDO_METHOD	  ? "invalid :method"
					  : bit == PSEUDO_SCHEME  ? "invalid :scheme"
					  : bit == PSEUDO_PATH	  ? "invalid :path"
								  : "invalid :authority");
	return RPC_HDR_OK;
}

rpc_hdr_verdict rpc_req_header_check(rpc_req_headers *h, const uint8_t *name, size_t namelen,
				     const uint8_t *value, size_t valuelen, const char **ret_why)
{
	if (namelen == 0)
		return malformed(ret_why, "empty header name");
	if (name[0] == ':')
		return pseudo_header_check(h, name, namelen, value, valuelen, ret_why);
	h->regular_seen = true;
	rpc_hdr_verdict v = regular_header_check(name, namelen, value, valuelen, ret_why);
	if (v != RPC_HDR_OK)
		return v;
	if (bytes_eq(name, namelen, "host") && !h->authority_any && !is_authority(value, valuelen))
		return malformed(ret_why, "invalid host");
	if (bytes_eq(name, namelen, "content-length")) {
		if (valuelen == 0 || valuelen > 18)
			return malformed(ret_why, "invalid content-length");
		int64_t n = 0;
		for (size_t i = 0; i < valuelen; i++) {
			if (value[i] < '0' || value[i] > '9')
				return malformed(ret_why, "invalid content-length");
			n = n * 10 + (value[i] - '0');
		}
		if (h->content_length >= 0 && h->content_length != n)
			return malformed(ret_why, "conflicting content-length");
		h->content_length = n;
	}
	return RPC_HDR_OK;
}

rpc_hdr_verdict rpc_req_headers_complete(const rpc_req_headers *h, const char **ret_why)
{
	if (!(h->seen & PSEUDO_METHOD))
		return malformed(ret_why, "missing :method");
	if (h->seen & METHOD_CONNECT) {
		if (!(h->seen & PSEUDO_AUTHORITY))
			return malformed(ret_why, "CONNECT without :authority");
		if (h->seen & (PSEUDO_SCHEME | PSEUDO_PATH))
			return malformed(ret_why, "CONNECT with :scheme or :path");
		return RPC_HDR_OK;
	}
	if (!(h->seen & PSEUDO_SCHEME))
		return malformed(ret_why, "missing :scheme");
	if (!(h->seen & PSEUDO_PATH))
		return malformed(ret_why, "missing :path");
	if ((h->seen & PATH_ASTERISK) && !(h->seen & METHOD_OPTIONS))
		return malformed(ret_why, ":path * without OPTIONS");
	return RPC_HDR_OK;
}

rpc_hdr_verdict rpc_req_trailer_check(const uint8_t *name, size_t namelen, const uint8_t *value,
				      size_t valuelen, const char **ret_why)
{
	if (namelen == 0)
		return malformed(ret_why, "empty header name");
	if (name[0] == ':')
		return malformed(ret_why, "pseudo-header in trailers");
	return regular_header_check(name, namelen, value, valuelen, ret_why);
}

rpc_hdr_verdict rpc_req_headers_data(rpc_req_headers *h, size_t len, bool end_stream,
				     const char **ret_why)
{
	h->data_len += len;
	if (h->content_length < 0)
		return RPC_HDR_OK;
	if (h->data_len > (uint64_t)h->content_length)
		return malformed(ret_why, "more data than content-length");
	if (end_stream && h->data_len != (uint64_t)h->content_length)
		return malformed(ret_why, "less data than content-length");
	return RPC_HDR_OK;
}
