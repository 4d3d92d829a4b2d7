/* SPDY/3.1 framing, I/O-free: bytes are fed in, frames come out as events;
 * frames are appended to a buffer. Header blocks are compressed with one
 * zlib stream per direction for the whole connection, primed with the
 * SPDY/3 dictionary (the draft's section 2.6.10.1), as moby/spdystream does.
 *
 * Frame layout (big-endian):
 *   control: 1 | version(15) | type(16) | flags(8) | length(24) | payload
 *   data:    0 | stream id(31)           | flags(8) | length(24) | payload */
#include <string.h>

#include "httpstream.h"

/* The dictionary: the header names of the draft, each with a 32-bit length,
 * then status lines, dates and media types. */
/* clang-format off */
#define W(len, word) "\0\0\0" len word
const uint8_t spdy_dictionary[] =
    W("\x07", "options")
    W("\x04", "head")
    W("\x04", "post")
    W("\x03", "put")
    W("\x06", "delete")
    W("\x05", "trace")
    W("\x06", "accept")
    W("\x0e", "accept-charset")
    W("\x0f", "accept-encoding")
    W("\x0f", "accept-language")
    W("\x0d", "accept-ranges")
    W("\x03", "age")
    W("\x05", "allow")
    W("\x0d", "authorization")
    W("\x0d", "cache-control")
    W("\x0a", "connection")
    W("\x0c", "content-base")
    W("\x10", "content-encoding")
    W("\x10", "content-language")
    W("\x0e", "content-length")
    W("\x10", "content-location")
    W("\x0b", "content-md5")
    W("\x0d", "content-range")
    W("\x0c", "content-type")
    W("\x04", "date")
    W("\x04", "etag")
    W("\x06", "expect")
    W("\x07", "expires")
    W("\x04", "from")
    W("\x04", "host")
    W("\x08", "if-match")
    W("\x11", "if-modified-since")
    W("\x0d", "if-none-match")
    W("\x08", "if-range")
    W("\x13", "if-unmodified-since")
    W("\x0d", "last-modified")
    W("\x08", "location")
    W("\x0c", "max-forwards")
    W("\x06", "pragma")
    W("\x12", "proxy-authenticate")
    W("\x13", "proxy-authorization")
    W("\x05", "range")
    W("\x07", "referer")
    W("\x0b", "retry-after")
    W("\x06", "server")
    W("\x02", "te")
    W("\x07", "trailer")
    W("\x11", "transfer-encoding")
    W("\x07", "upgrade")
    W("\x0a", "user-agent")
    W("\x04", "vary")
    W("\x03", "via")
    W("\x07", "warning")
    W("\x10", "www-authenticate")
    W("\x06", "method")
    W("\x03", "get")
    W("\x06", "status")
    W("\x06", "200 OK")
    W("\x07", "version")
    W("\x08", "HTTP/1.1")
    W("\x03", "url")
    W("\x06", "public")
    W("\x0a", "set-cookie")
    W("\x0a", "keep-alive")
    W("\x06", "origin")
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information"
    "204 No Content"
    "301 Moved Permanently"
    "400 Bad Request"
    "401 Unauthorized"
    "403 Forbidden"
    "404 Not Found"
    "500 Internal Server Error"
    "501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
;
/* clang-format on */
#undef W
const size_t spdy_dictionary_len = sizeof(spdy_dictionary) - 1; /* no final NUL */

#define SPDY_VERSION 3

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void spdy_codec_init(spdy_codec *c)
{
	*c = (spdy_codec){0};
}

void spdy_codec_free(spdy_codec *c)
{
	if (c->inflater_ready)
		inflateEnd(&c->inflater);
	if (c->deflater_ready)
		deflateEnd(&c->deflater);
	hs_buf_free(&c->rx);
	*c = (spdy_codec){0};
}

void spdy_feed(spdy_codec *c, const void *data, size_t len)
{
	hs_buf_put(&c->rx, data, len);
}

void spdy_event_clear(spdy_event *ev)
{
	for (size_t i = 0; i < ev->n_headers; i++) {
		free(ev->headers[i].name);
		free(ev->headers[i].value);
	}
	free(ev->headers);
	*ev = (spdy_event){0};
}

const char *spdy_header_get(const spdy_event *ev, const char *name)
{
	for (size_t i = 0; i < ev->n_headers; i++)
		if (!strcmp(ev->headers[i].name, name))
			return ev->headers[i].value;
	return NULL;
}

/* Inflates one header block (the connection's zlib stream continues across
 * blocks) and splits it into name/value pairs. */
static int parse_header_block(spdy_codec *c, const uint8_t *in, size_t in_len, spdy_event *ev,
			      const char **why)
{
	if (!c->inflater_ready) {
		if (inflateInit(&c->inflater) != Z_OK) {
			*why = "zlib inflateInit failed";
			return -1;
		}
		c->inflater_ready = true;
	}
	_cleanup_free_ uint8_t *block = ad_malloc0(SPDY_MAX_HEADER_BLOCK);
	z_stream *z = &c->inflater;
	z->next_in = (Bytef *)in;
	z->avail_in = (uInt)in_len;
	z->next_out = block;
	z->avail_out = SPDY_MAX_HEADER_BLOCK;
	while (z->avail_in > 0) {
		int r = inflate(z, Z_SYNC_FLUSH);
		if (r == Z_NEED_DICT) {
			if (inflateSetDictionary(z, spdy_dictionary, (uInt)spdy_dictionary_len) !=
			    Z_OK) {
				*why = "header block: wrong zlib dictionary";
				return -1;
			}
			continue;
		}
		if (r == Z_BUF_ERROR && z->avail_out == 0) {
			*why = "header block too large";
			return -1;
		}
		if (r != Z_OK) {
			*why = "header block: corrupt zlib data";
			return -1;
		}
	}
	size_t n = SPDY_MAX_HEADER_BLOCK - z->avail_out, pos = 4;
	if (n < 4) {
		*why = "header block: truncated";
		return -1;
	}
	uint32_t count = get32(block);
	/* Every pair takes at least 8 bytes: a bound before allocating. */
	if (count > (n - 4) / 8) {
		*why = "header block: bad count";
		return -1;
	}
	ev->headers = ad_malloc0((count ? count : 1) * sizeof(*ev->headers));
	for (uint32_t i = 0; i < count; i++) {
		uint32_t len[2];
		const uint8_t *str[2];
		for (int k = 0; k < 2; k++) {
			if (n - pos < 4) {
				*why = "header block: truncated";
				return -1;
			}
			len[k] = get32(block + pos);
			pos += 4;
			if (len[k] > n - pos) {
				*why = "header block: truncated";
				return -1;
			}
			str[k] = block + pos;
			pos += len[k];
		}
		if (len[0] == 0) {
			*why = "header block: empty header name";
			return -1;
		}
		spdy_header *h = &ev->headers[ev->n_headers++];
		h->name = ad_strndup((const char *)str[0], len[0]);
		h->value = ad_malloc0(len[1] + 1);
		memcpy(h->value, str[1], len[1]);
		h->value_len = len[1];
		for (char *p = h->name; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		if (strlen(h->name) != len[0]) {
			*why = "header block: NUL in a header name";
			return -1;
		}
	}
	return 0;
}

int spdy_next(spdy_codec *c, spdy_event *ev, const char **why)
{
	*ev = (spdy_event){0};
	hs_buf_consume(&c->rx, c->pending);
	c->pending = 0;
	size_t avail = hs_buf_size(&c->rx);
	if (avail < 8)
		return 0;
	const uint8_t *p = hs_buf_head(&c->rx);
	uint32_t w0 = get32(p), w1 = get32(p + 4);
	uint32_t len = w1 & 0xffffff;
	if (len > SPDY_MAX_FRAME) {
		*why = "frame too large";
		return -1;
	}
	if (avail < 8 + (size_t)len)
		return 0;
	c->pending = 8 + (size_t)len;
	ev->flags = (uint8_t)(w1 >> 24);
	const uint8_t *pl = p + 8;
	if (!(w0 & 0x80000000u)) {
		ev->type = SPDY_DATA;
		ev->stream_id = w0 & 0x7fffffff;
		ev->data = pl;
		ev->len = len;
		if (!ev->stream_id) {
			*why = "data frame on stream 0";
			return -1;
		}
		return 1;
	}
	if (((w0 >> 16) & 0x7fff) != SPDY_VERSION) {
		*why = "unsupported SPDY version";
		return -1;
	}
	ev->type = (int)(w0 & 0xffff);
	int r = 0;
	switch (ev->type) {
	case SPDY_SYN_STREAM:
		if (len < 10) {
			*why = "short SYN_STREAM";
			return -1;
		}
		ev->stream_id = get32(pl) & 0x7fffffff;
		r = parse_header_block(c, pl + 10, len - 10, ev, why);
		break;
	case SPDY_SYN_REPLY:
	case SPDY_HEADERS:
		if (len < 4) {
			*why = "short SYN_REPLY/HEADERS";
			return -1;
		}
		ev->stream_id = get32(pl) & 0x7fffffff;
		r = parse_header_block(c, pl + 4, len - 4, ev, why);
		break;
	case SPDY_RST_STREAM:
		if (len != 8) {
			*why = "bad RST_STREAM length";
			return -1;
		}
		ev->stream_id = get32(pl) & 0x7fffffff;
		ev->value = get32(pl + 4);
		break;
	case SPDY_SETTINGS: {
		ev->initial_window = -1;
		if (len < 4 || (len - 4) / 8 < get32(pl) || (len - 4) % 8) {
			*why = "bad SETTINGS length";
			return -1;
		}
		uint32_t count = get32(pl);
		for (uint32_t i = 0; i < count; i++) {
			const uint8_t *e = pl + 4 + 8 * i;
			if ((get32(e) & 0xffffff) == SPDY_SETTINGS_INITIAL_WINDOW)
				ev->initial_window = get32(e + 4);
		}
		break;
	}
	case SPDY_PING:
		if (len != 4) {
			*why = "bad PING length";
			return -1;
		}
		ev->value = get32(pl);
		break;
	case SPDY_GOAWAY:
		if (len != 8) {
			*why = "bad GOAWAY length";
			return -1;
		}
		ev->stream_id = get32(pl) & 0x7fffffff;
		ev->value = get32(pl + 4);
		break;
	case SPDY_WINDOW_UPDATE:
		if (len != 8) {
			*why = "bad WINDOW_UPDATE length";
			return -1;
		}
		ev->stream_id = get32(pl) & 0x7fffffff;
		ev->value = get32(pl + 4) & 0x7fffffff;
		if (!ev->value) {
			*why = "WINDOW_UPDATE of 0";
			return -1;
		}
		break;
	default:
		/* Unknown control frames are ignored (the draft says so). */
		break;
	}
	if (r < 0) {
		spdy_event_clear(ev);
		return -1;
	}
	if ((ev->type == SPDY_SYN_STREAM || ev->type == SPDY_SYN_REPLY ||
	     ev->type == SPDY_RST_STREAM) &&
	    !ev->stream_id) {
		spdy_event_clear(ev);
		*why = "stream id 0";
		return -1;
	}
	return 1;
}

static void put_control_head(hs_buf *out, uint16_t type, uint8_t flags, uint32_t len)
{
	hs_buf_put_u16(out, 0x8000 | SPDY_VERSION);
	hs_buf_put_u16(out, type);
	hs_buf_put_u32(out, (uint32_t)flags << 24 | len);
}

/* Deflates a name/value block onto the connection's stream. */
static int deflate_block(spdy_codec *c, const spdy_header *h, size_t n, hs_buf *ret)
{
	if (!c->deflater_ready) {
		if (deflateInit(&c->deflater, Z_DEFAULT_COMPRESSION) != Z_OK)
			return -1;
		if (deflateSetDictionary(&c->deflater, spdy_dictionary,
					 (uInt)spdy_dictionary_len) != Z_OK) {
			deflateEnd(&c->deflater);
			return -1;
		}
		c->deflater_ready = true;
	}
	hs_buf raw = {0};
	hs_buf_put_u32(&raw, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(h[i].name);
		hs_buf_put_u32(&raw, (uint32_t)nl);
		hs_buf_put(&raw, h[i].name, nl);
		size_t vl = h[i].value_len ? h[i].value_len : strlen(h[i].value);
		hs_buf_put_u32(&raw, (uint32_t)vl);
		hs_buf_put(&raw, h[i].value, vl);
	}
	z_stream *z = &c->deflater;
	z->next_in = raw.data;
	z->avail_in = (uInt)raw.len;
	int r = 0;
	do {
		uint8_t chunk[4096];
		z->next_out = chunk;
		z->avail_out = sizeof(chunk);
		if (deflate(z, Z_SYNC_FLUSH) == Z_STREAM_ERROR) {
			r = -1;
			break;
		}
		hs_buf_put(ret, chunk, sizeof(chunk) - z->avail_out);
	} while (z->avail_out == 0);
	hs_buf_free(&raw);
	return r;
}

int spdy_put_syn_stream(spdy_codec *c, hs_buf *out, uint32_t id, uint8_t flags,
			const spdy_header *h, size_t n)
{
	hs_buf block = {0};
	if (deflate_block(c, h, n, &block) < 0) {
		hs_buf_free(&block);
		return -1;
	}
	put_control_head(out, SPDY_SYN_STREAM, flags, 10 + (uint32_t)block.len);
	hs_buf_put_u32(out, id & 0x7fffffff);
	hs_buf_put_u32(out, 0); /* associated stream */
	hs_buf_put_u16(out, 0); /* priority, slot */
	hs_buf_put(out, block.data, block.len);
	hs_buf_free(&block);
	return 0;
}

int spdy_put_syn_reply(spdy_codec *c, hs_buf *out, uint32_t id, uint8_t flags, const spdy_header *h,
		       size_t n)
{
	hs_buf block = {0};
	if (deflate_block(c, h, n, &block) < 0) {
		hs_buf_free(&block);
		return -1;
	}
	put_control_head(out, SPDY_SYN_REPLY, flags, 4 + (uint32_t)block.len);
	hs_buf_put_u32(out, id & 0x7fffffff);
	hs_buf_put(out, block.data, block.len);
	hs_buf_free(&block);
	return 0;
}

void spdy_put_data(hs_buf *out, uint32_t id, uint8_t flags, const void *data, size_t len)
{
	hs_buf_put_u32(out, id & 0x7fffffff);
	hs_buf_put_u32(out, (uint32_t)flags << 24 | (uint32_t)len);
	hs_buf_put(out, data, len);
}

void spdy_put_rst(hs_buf *out, uint32_t id, uint32_t status)
{
	put_control_head(out, SPDY_RST_STREAM, 0, 8);
	hs_buf_put_u32(out, id & 0x7fffffff);
	hs_buf_put_u32(out, status);
}

void spdy_put_settings_window(hs_buf *out, uint32_t window)
{
	put_control_head(out, SPDY_SETTINGS, 0, 12);
	hs_buf_put_u32(out, 1);
	hs_buf_put_u32(out, SPDY_SETTINGS_INITIAL_WINDOW);
	hs_buf_put_u32(out, window);
}

void spdy_put_ping(hs_buf *out, uint32_t id)
{
	put_control_head(out, SPDY_PING, 0, 4);
	hs_buf_put_u32(out, id);
}

void spdy_put_goaway(hs_buf *out, uint32_t last_id, uint32_t status)
{
	put_control_head(out, SPDY_GOAWAY, 0, 8);
	hs_buf_put_u32(out, last_id & 0x7fffffff);
	hs_buf_put_u32(out, status);
}

void spdy_put_window_update(hs_buf *out, uint32_t id, uint32_t delta)
{
	put_control_head(out, SPDY_WINDOW_UPDATE, 0, 8);
	hs_buf_put_u32(out, id & 0x7fffffff);
	hs_buf_put_u32(out, delta & 0x7fffffff);
}
