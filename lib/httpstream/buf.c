/* Byte buffers and base64 for the codecs. */
#include <openssl/evp.h>
#include <string.h>

#include "httpstream.h"

void hs_buf_put(hs_buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	if (b->len + n > b->cap) {
		if (b->off) { /* reuse the consumed prefix before growing */
			memmove(b->data, b->data + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		if (b->len + n > b->cap) {
			size_t cap = b->cap ? b->cap : 256;
			while (cap < b->len + n)
				cap *= 2;
			b->data = ad_realloc(b->data, cap);
			b->cap = cap;
		}
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void hs_buf_put_u8(hs_buf *b, uint8_t v)
{
	hs_buf_put(b, &v, 1);
}

void hs_buf_put_u16(hs_buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	hs_buf_put(b, x, 2);
}

void hs_buf_put_u32(hs_buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	hs_buf_put(b, x, 4);
}

void hs_buf_consume(hs_buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

void hs_buf_free(hs_buf *b)
{
	free(b->data);
	*b = (hs_buf){0};
}

char *hs_base64(const void *data, size_t len, bool url)
{
	char *out = ad_malloc0(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	if (url) {
		for (char *p = out; *p; p++) {
			if (*p == '+')
				*p = '-';
			else if (*p == '/')
				*p = '_';
			else if (*p == '=')
				*p = '\0';
		}
	}
	return out;
}

ssize_t hs_unbase64(const char *in, size_t len, uint8_t *out)
{
	if (len % 4)
		return -1;
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	if (len && in[len - 1] == '=')
		n--;
	if (len > 1 && in[len - 2] == '=')
		n--;
	return n;
}
