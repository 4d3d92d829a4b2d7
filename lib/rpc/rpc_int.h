/* rpc_int.h — private to libadrpc: the I/O-free pieces shared by the server
 * and the client (message framer, grpc-message percent-encoding, grpc-timeout,
 * call arena). Not installed, not included outside lib/rpc and its tests. */
#ifndef AGENTD_RPC_INT_H
#define AGENTD_RPC_INT_H

#include "rpc.h"

/* ---- length-prefixed message framer ---------------------------------------
 * gRPC messages are "compressed flag (1) + length (u32 BE) + bytes" and may
 * be split across, or share, DATA frames. The framer reassembles them; the
 * declared length is checked against `max` before anything is buffered, and
 * the buffer only grows as bytes actually arrive. */
typedef struct rpc_framer {
	uint8_t hdr[5];
	uint8_t hdr_got;
	bool in_body;
	bool compressed;
	uint32_t len;
	uint8_t *buf;
	size_t cap;
	size_t got;
} rpc_framer;

/* Called once per complete message. Returns 0 to go on, else a gRPC code that
 * stops feeding and is returned by rpc_framer_feed. */
typedef int (*rpc_framer_msg_fn)(const uint8_t *msg, size_t len, bool compressed, void *ctx);

/* Returns RPC_OK, RPC_RESOURCE_EXHAUSTED (a length over max; *ret_len gets
 * it), or what the callback returned. */
int rpc_framer_feed(rpc_framer *fr, const uint8_t *data, size_t len, size_t max,
		    rpc_framer_msg_fn fn, void *ctx, uint32_t *ret_len);
/* True when a message is partially received. */
bool rpc_framer_partial(const rpc_framer *fr);
/* Bytes currently buffered (for per-connection accounting). */
size_t rpc_framer_buffered(const rpc_framer *fr);
void rpc_framer_reset(rpc_framer *fr);

/* ---- grpc-message percent-encoding (PROTOCOL-HTTP2.md) ------------------- */
/* Encodes bytes outside 0x20..0x7E and '%' as %XX. malloc'd. */
char *rpc_percent_encode(const char *s, size_t max_in);
/* Decodes %XX; invalid escapes are kept verbatim (as the spec asks). malloc'd. */
char *rpc_percent_decode(const char *s, size_t len);

/* ---- grpc-timeout ---------------------------------------------------------
 * "1-8 ASCII digits + unit (H M S m u n)". Returns 0 and the timeout in ns
 * (saturated), or -1 when malformed. */
int rpc_timeout_parse(const char *s, size_t len, int64_t *ret_ns);
/* Formats a timeout in ms as a valid grpc-timeout value (<= 8 digits). */
void rpc_timeout_format(uint64_t ms, char buf[16]);

/* HTTP status → gRPC code for responses that are not gRPC (http-grpc-status-mapping.md). */
rpc_code rpc_code_from_http(int status);

/* ---- request header rules (RFC 9113 section 8.2 and 8.3) ------------------
 * The server turns nghttp2's HTTP messaging checks off: they refuse any
 * :authority that is not a host[:port], and grpc-go (kubelet) dialling a
 * unix socket sends the socket's path. These are the same rules, with the
 * :authority rule relaxed where the listener asks for it. A MALFORMED
 * request is reset with PROTOCOL_ERROR, as nghttp2 does; an IGNORE header
 * (a regular header with a bad name or value) is dropped, as nghttp2 does. */
typedef enum rpc_hdr_verdict {
	RPC_HDR_OK,
	RPC_HDR_IGNORE,
	RPC_HDR_MALFORMED,
} rpc_hdr_verdict;

typedef struct rpc_req_headers {
	unsigned seen;		/* pseudo-headers received (private bits) */
	bool regular_seen;	/* no pseudo-header may follow a regular one */
	bool authority_any;	/* any field value as :authority (unix socket) */
	int64_t content_length; /* -1 while none was sent */
	uint64_t data_len;	/* request body bytes received */
} rpc_req_headers;

void rpc_req_headers_init(rpc_req_headers *h, bool authority_any);
/* One header of the request's HEADERS block. *ret_why says what was wrong. */
rpc_hdr_verdict rpc_req_header_check(rpc_req_headers *h, const uint8_t *name, size_t namelen,
				     const uint8_t *value, size_t valuelen, const char **ret_why);
/* The request's header block is complete: the required pseudo-headers are there. */
rpc_hdr_verdict rpc_req_headers_complete(const rpc_req_headers *h, const char **ret_why);
/* One header of a trailer block the client sent. */
rpc_hdr_verdict rpc_req_trailer_check(const uint8_t *name, size_t namelen, const uint8_t *value,
				      size_t valuelen, const char **ret_why);
/* Request body bytes: more than content-length, or (at the end of the
 * stream) fewer, is MALFORMED. */
rpc_hdr_verdict rpc_req_headers_data(rpc_req_headers *h, size_t len, bool end_stream,
				     const char **ret_why);

/* ---- call arena ----------------------------------------------------------
 * A bump allocator: the first block lives inside the owner, further blocks are
 * malloc'd and freed together. Not thread-safe; a call's arena is used by one
 * thread at a time (the loop until dispatch, then the handler). */
typedef struct rpc_arena_block rpc_arena_block;
typedef struct rpc_arena {
	uint8_t *cur;
	size_t left;
	rpc_arena_block *blocks;
} rpc_arena;

void rpc_arena_init(rpc_arena *a, void *first, size_t first_size);
void *rpc_arena_alloc(rpc_arena *a, size_t size); /* zeroed, 16-aligned, never NULL */
void rpc_arena_free(rpc_arena *a);
/* A protobuf-c allocator that draws from the arena and never frees. */
void rpc_arena_pb_allocator(rpc_arena *a, ProtobufCAllocator *ret);

#endif
