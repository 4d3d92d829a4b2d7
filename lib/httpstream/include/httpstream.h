/* httpstream.h — the one public header of libadhttpstream: the I/O-free
 * codecs of the Kubernetes streaming protocols, shared by agentd's streaming
 * server and agentctl's client: SPDY/3.1 and WebSocket (RFC 6455) framing,
 * the HTTP/1.1 head of an upgrade (request or response), base64, and the
 * byte buffer they write to. Nothing here touches a socket: bytes in,
 * events and bytes out (unit tested and fuzzed in memory). */
#ifndef AGENTD_HTTPSTREAM_H
#define AGENTD_HTTPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <zlib.h>

#include "base.h"

/* ---- byte buffer ---------------------------------------------------------- */
typedef struct hs_buf {
	uint8_t *data;
	size_t off; /* consumed prefix */
	size_t len; /* end of the valid bytes */
	size_t cap;
} hs_buf;

void hs_buf_put(hs_buf *b, const void *p, size_t n);
void hs_buf_put_u8(hs_buf *b, uint8_t v);
void hs_buf_put_u16(hs_buf *b, uint16_t v); /* big-endian */
void hs_buf_put_u32(hs_buf *b, uint32_t v);
static inline size_t hs_buf_size(const hs_buf *b)
{
	return b->len - b->off;
}
static inline const uint8_t *hs_buf_head(const hs_buf *b)
{
	return b->data ? b->data + b->off : (const uint8_t *)"";
}
void hs_buf_consume(hs_buf *b, size_t n);
void hs_buf_free(hs_buf *b);

/* ---- SPDY/3.1 ------------------------------------------------------------- */
enum {
	SPDY_SYN_STREAM = 1,
	SPDY_SYN_REPLY = 2,
	SPDY_RST_STREAM = 3,
	SPDY_SETTINGS = 4,
	SPDY_PING = 6,
	SPDY_GOAWAY = 7,
	SPDY_HEADERS = 8,
	SPDY_WINDOW_UPDATE = 9,
	SPDY_DATA = 0x100, /* not a control type: the event for a data frame */
};
#define SPDY_FLAG_FIN 0x01
#define SPDY_FLAG_UNIDIRECTIONAL 0x02
#define SPDY_SETTINGS_INITIAL_WINDOW 7
#define SPDY_DEFAULT_WINDOW 65536
/* RST_STREAM status codes */
enum {
	SPDY_PROTOCOL_ERROR = 1,
	SPDY_INVALID_STREAM = 2,
	SPDY_REFUSED_STREAM = 3,
	SPDY_CANCEL = 5,
	SPDY_INTERNAL_ERROR = 6,
	SPDY_FLOW_CONTROL_ERROR = 7,
	SPDY_STREAM_IN_USE = 8,
	SPDY_FRAME_TOO_LARGE = 11,
};
/* The largest frame accepted: client-go writes 32 KiB at most. */
#define SPDY_MAX_FRAME (1u << 20)
#define SPDY_MAX_HEADER_BLOCK (64u << 10)

typedef struct spdy_header {
	char *name; /* lower case */
	char *value;
	size_t value_len; /* several values are NUL-separated */
} spdy_header;

typedef struct spdy_event {
	int type; /* SPDY_* */
	uint8_t flags;
	uint32_t stream_id;	/* also: GOAWAY's last good stream */
	uint32_t value;		/* PING id, WINDOW_UPDATE delta, RST/GOAWAY status */
	int64_t initial_window; /* SETTINGS: -1 unless set */
	const uint8_t *data;	/* DATA: valid until the next spdy_next */
	size_t len;
	spdy_header *headers; /* SYN_STREAM, SYN_REPLY, HEADERS */
	size_t n_headers;
} spdy_event;

typedef struct spdy_codec {
	hs_buf rx;
	size_t pending; /* bytes of the last returned frame, dropped on the next call */
	z_stream inflater, deflater;
	bool inflater_ready, deflater_ready;
} spdy_codec;

void spdy_codec_init(spdy_codec *c);
void spdy_codec_free(spdy_codec *c);
void spdy_feed(spdy_codec *c, const void *data, size_t len);
/* 1: *ev holds the next frame (spdy_event_clear it); 0: more bytes needed;
 * -1: a malformed frame (*why says which), the connection is unusable. */
int spdy_next(spdy_codec *c, spdy_event *ev, const char **why);
void spdy_event_clear(spdy_event *ev);
const char *spdy_header_get(const spdy_event *ev, const char *name);

int spdy_put_syn_stream(spdy_codec *c, hs_buf *out, uint32_t id, uint8_t flags,
			const spdy_header *h, size_t n);
int spdy_put_syn_reply(spdy_codec *c, hs_buf *out, uint32_t id, uint8_t flags, const spdy_header *h,
		       size_t n);
void spdy_put_data(hs_buf *out, uint32_t id, uint8_t flags, const void *data, size_t len);
void spdy_put_rst(hs_buf *out, uint32_t id, uint32_t status);
void spdy_put_settings_window(hs_buf *out, uint32_t window);
void spdy_put_ping(hs_buf *out, uint32_t id);
void spdy_put_goaway(hs_buf *out, uint32_t last_id, uint32_t status);
void spdy_put_window_update(hs_buf *out, uint32_t id, uint32_t delta);
extern const uint8_t spdy_dictionary[];
extern const size_t spdy_dictionary_len;

/* ---- WebSocket (RFC 6455) ------------------------------------------------- */
enum {
	WS_CONT = 0x0,
	WS_TEXT = 0x1,
	WS_BINARY = 0x2,
	WS_CLOSE = 0x8,
	WS_PING = 0x9,
	WS_PONG = 0xa,
};
#define WS_MAX_MESSAGE (1u << 20)

typedef struct ws_event {
	uint8_t opcode;	     /* TEXT/BINARY: a whole message; CLOSE/PING/PONG */
	const uint8_t *data; /* valid until the next ws_next */
	size_t len;
} ws_event;

typedef struct ws_codec {
	bool server; /* frames from a client must be masked, from a server not */
	hs_buf rx;
	size_t pending;
	hs_buf msg;	    /* a fragmented message being reassembled */
	uint8_t msg_opcode; /* of the message in msg; 0: none */
	bool msg_out;	    /* msg was handed out: drop it on the next call */
} ws_codec;

void ws_codec_init(ws_codec *c, bool server);
void ws_codec_free(ws_codec *c);
void ws_feed(ws_codec *c, const void *data, size_t len);
int ws_next(ws_codec *c, ws_event *ev, const char **why); /* as spdy_next */
/* mask: NULL from a server; a client's 4 random bytes. */
void ws_put_frame(hs_buf *out, uint8_t opcode, const void *data, size_t len, const uint8_t *mask);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (free()). */
char *ws_accept_key(const char *key);

/* ---- base64 --------------------------------------------------------------- */
char *hs_base64(const void *data, size_t len, bool url); /* url: no padding */
/* Returns the decoded length, -1 if malformed. out needs len*3/4+3 bytes. */
ssize_t hs_unbase64(const char *in, size_t len, uint8_t *out);

/* ---- HTTP/1.1 head of an upgrade ------------------------------------------ */
#define HS_HTTP_MAX_HEAD (16u << 10)
#define HS_HTTP_MAX_HEADERS 64

typedef struct hs_http_head {
	char method[16]; /* a request's */
	char *path;	 /* a request's */
	char *query;	 /* a request's; NULL if none */
	int status;	 /* a response's ("101 Switching Protocols": 101) */
	struct {
		char *name; /* lower case */
		char *value;
	} headers[HS_HTTP_MAX_HEADERS];
	size_t n_headers;
	size_t head_len; /* bytes up to the end of the head */
	bool done;
} hs_http_head;

/* Parses a request head (the server's side) or a response head (the
 * client's) out of data, the whole of what arrived so far: 1: complete
 * (head->head_len bytes; what follows belongs to the upgraded protocol);
 * 0: more needed; -1: malformed (*why). */
int hs_http_parse_request(hs_http_head *head, const uint8_t *data, size_t len, const char **why);
int hs_http_parse_response(hs_http_head *head, const uint8_t *data, size_t len, const char **why);
void hs_http_head_clear(hs_http_head *head);
/* The first value of a header (case-insensitive name), NULL if absent. */
const char *hs_http_header(const hs_http_head *head, const char *name);
/* Whether some value of header `name`, as a comma-separated list, holds
 * `token` (case-insensitive). */
bool hs_http_has_token(const hs_http_head *head, const char *name, const char *token);

#endif
