/* WebSocket framing (RFC 6455), I/O-free. Fragmented messages are
 * reassembled; control frames may arrive between fragments. */
#include <openssl/sha.h>
#include <string.h>

#include "httpstream.h"

void ws_codec_init(ws_codec *c, bool server)
{
	*c = (ws_codec){.server = server};
}

void ws_codec_free(ws_codec *c)
{
	hs_buf_free(&c->rx);
	hs_buf_free(&c->msg);
	*c = (ws_codec){0};
}

void ws_feed(ws_codec *c, const void *data, size_t len)
{
	hs_buf_put(&c->rx, data, len);
}

int ws_next(ws_codec *c, ws_event *ev, const char **why)
{
	*ev = (ws_event){0};
	hs_buf_consume(&c->rx, c->pending);
	c->pending = 0;
	if (c->msg_out) {
		hs_buf_consume(&c->msg, hs_buf_size(&c->msg));
		c->msg_out = false;
		c->msg_opcode = 0;
	}
	for (;;) {
		size_t avail = hs_buf_size(&c->rx);
		/* rx.data is ours: unmasking happens in place. */
		uint8_t *p = c->rx.data + c->rx.off;
		if (avail < 2)
			return 0;
		bool fin = p[0] & 0x80, masked = p[1] & 0x80;
		uint8_t opcode = p[0] & 0x0f;
		if (p[0] & 0x70) {
			*why = "reserved bits set (no extension was negotiated)";
			return -1;
		}
		if (masked != c->server) {
			*why = c->server ? "unmasked frame from a client"
					 : "masked frame from a server";
			return -1;
		}
		size_t hl = 2;
		uint64_t len = p[1] & 0x7f;
		if (len == 126) {
			if (avail < 4)
				return 0;
			len = (uint64_t)p[2] << 8 | p[3];
			hl = 4;
		} else if (len == 127) {
			if (avail < 10)
				return 0;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | p[2 + i];
			hl = 10;
		}
		if (len > WS_MAX_MESSAGE) {
			*why = "frame too large";
			return -1;
		}
		size_t mask_at = hl;
		if (masked)
			hl += 4;
		if (avail < hl + len)
			return 0;
		uint8_t *pl = p + hl;
		if (masked)
			for (size_t i = 0; i < len; i++)
				pl[i] ^= p[mask_at + (i & 3)];
		c->pending = hl + (size_t)len;
		if (opcode >= 0x8) {
			if (!fin || len > 125) {
				*why = "fragmented or long control frame";
				return -1;
			}
			if (opcode != WS_CLOSE && opcode != WS_PING && opcode != WS_PONG) {
				*why = "unknown control opcode";
				return -1;
			}
			*ev = (ws_event){.opcode = opcode, .data = pl, .len = (size_t)len};
			return 1;
		}
		if (opcode == WS_CONT) {
			if (!c->msg_opcode) {
				*why = "continuation without a message";
				return -1;
			}
			if (hs_buf_size(&c->msg) + len > WS_MAX_MESSAGE) {
				*why = "message too large";
				return -1;
			}
			hs_buf_put(&c->msg, pl, (size_t)len);
			if (!fin) {
				hs_buf_consume(&c->rx, c->pending);
				c->pending = 0;
				continue;
			}
			/* The message stays in msg until the next call. */
			hs_buf_consume(&c->rx, c->pending);
			c->pending = 0;
			*ev = (ws_event){.opcode = c->msg_opcode,
					 .data = hs_buf_head(&c->msg),
					 .len = hs_buf_size(&c->msg)};
			c->msg_out = true;
			return 1;
		}
		if (opcode != WS_TEXT && opcode != WS_BINARY) {
			*why = "unknown data opcode";
			return -1;
		}
		if (c->msg_opcode) {
			*why = "new message inside a fragmented one";
			return -1;
		}
		if (fin) {
			*ev = (ws_event){.opcode = opcode, .data = pl, .len = (size_t)len};
			return 1;
		}
		hs_buf_put(&c->msg, pl, (size_t)len);
		c->msg_opcode = opcode;
		hs_buf_consume(&c->rx, c->pending);
		c->pending = 0;
	}
}

void ws_put_frame(hs_buf *out, uint8_t opcode, const void *data, size_t len, const uint8_t *mask)
{
	hs_buf_put_u8(out, (uint8_t)(0x80 | opcode));
	uint8_t m = mask ? 0x80 : 0;
	if (len < 126) {
		hs_buf_put_u8(out, (uint8_t)(m | len));
	} else if (len < 65536) {
		hs_buf_put_u8(out, m | 126);
		hs_buf_put_u16(out, (uint16_t)len);
	} else {
		hs_buf_put_u8(out, m | 127);
		hs_buf_put_u32(out, (uint32_t)((uint64_t)len >> 32));
		hs_buf_put_u32(out, (uint32_t)len);
	}
	if (!mask) {
		hs_buf_put(out, data, len);
		return;
	}
	hs_buf_put(out, mask, 4);
	const uint8_t *d = data;
	for (size_t i = 0; i < len; i++)
		hs_buf_put_u8(out, d[i] ^ mask[i & 3]);
}

char *ws_accept_key(const char *key)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	_cleanup_free_ char *s = ad_asprintf("%s%s", key, guid);
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)s, strlen(s), md);
	return hs_base64(md, sizeof(md), false);
}
