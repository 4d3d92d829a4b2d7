/* rpc.h — the one public header of libadrpc: gRPC over HTTP/2 (nghttp2 +
 * libevent + OpenSSL), server and blocking client. Messages are protobuf-c.
 * Linked by agentd, agentctl and the C tests. */
#ifndef AGENTD_RPC_H
#define AGENTD_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base.h"

struct event_base;
struct ssl_st;

/* gRPC status codes (grpc/doc/statuscodes.md). */
typedef enum rpc_code {
	RPC_OK = 0,
	RPC_CANCELLED = 1,
	RPC_UNKNOWN = 2,
	RPC_INVALID_ARGUMENT = 3,
	RPC_DEADLINE_EXCEEDED = 4,
	RPC_NOT_FOUND = 5,
	RPC_ALREADY_EXISTS = 6,
	RPC_PERMISSION_DENIED = 7,
	RPC_RESOURCE_EXHAUSTED = 8,
	RPC_FAILED_PRECONDITION = 9,
	RPC_ABORTED = 10,
	RPC_OUT_OF_RANGE = 11,
	RPC_UNIMPLEMENTED = 12,
	RPC_INTERNAL = 13,
	RPC_UNAVAILABLE = 14,
	RPC_DATA_LOSS = 15,
	RPC_UNAUTHENTICATED = 16,
} rpc_code;

const char *rpc_code_name(rpc_code code); /* "NOT_FOUND" */

#define RPC_DEFAULT_MAX_MSG (16u * 1024 * 1024) /* as kubelet uses */

/* ======================================================================
 * Server
 * ====================================================================== */
typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

typedef enum rpc_kind { RPC_UNARY, RPC_SERVER_STREAM } rpc_kind;

/* A handler. For RPC_UNARY, `resp` is an initialised, empty response message
 * of the method's response type for the handler to fill; nested fields,
 * strings and arrays it sets must come from rpc_call_alloc()/rpc_call_strdup()
 * (freed with the call). For RPC_SERVER_STREAM, `resp` is NULL and the handler
 * sends with rpc_call_send(). Returns RPC_OK, or the code given to
 * rpc_call_error(). */
typedef rpc_code (*rpc_handler_fn)(rpc_call *call, const ProtobufCMessage *req,
				   ProtobufCMessage *resp, void *userdata);

typedef struct rpc_method {
	const char *path; /* "/runtime.v1.RuntimeService/Version" */
	const ProtobufCMessageDescriptor *request;
	const ProtobufCMessageDescriptor *response;
	rpc_kind kind;
	/* true: runs on the event-loop thread (must never block: pure
	 * computation, no I/O, no locks held long). false: on the worker pool. */
	bool on_loop;
	rpc_handler_fn handler;
	void *userdata;
} rpc_method;

typedef struct rpc_server_config {
	const char *unix_path;     /* NULL: no unix listener. Created mode 0660. */
	const char *tcp_listen;    /* "host:port" or "[v6]:port"; NULL: none */
	const char *tls_cert;      /* server certificate chain (PEM) */
	const char *tls_key;       /* its private key (PEM) */
	const char *tls_client_ca; /* CA bundle that client certificates must chain to */
	bool tcp_insecure;         /* TCP without TLS (h2c): benchmarks and tests only */
	size_t max_recv_msg;       /* 0: RPC_DEFAULT_MAX_MSG */
	size_t max_send_msg;       /* 0: RPC_DEFAULT_MAX_MSG */
	uint32_t max_concurrent_streams; /* 0: 1000 */
	size_t max_header_list;    /* 0: 64 KiB */
	unsigned workers;          /* permanent worker threads, 0: 8, started as calls
				    * need them; more are started while all are busy
				    * (up to max(64, 4 x workers)) and leave again
				    * after 10 s idle */
	unsigned drain_timeout_ms; /* 0: 5000 */
	/* Open connections per peer (a TCP peer is its address, a unix one its
	 * uid); one more is closed at accept and counted
	 * (rpc_server_refused_connections). 0: no limit. */
	unsigned max_conns_per_peer;
	/* > 0: sockets already bound and listening (socket activation) used
	 * instead of creating unix_path / tcp_listen, which still name them in
	 * messages; the unix socket's file is then left in place at exit. */
	int unix_fd, tcp_fd;
} rpc_server_config;

/* Binds the listeners (a stale unix socket file is replaced only if nothing
 * accepts on it). Registers the handlers on `base`; the caller runs the loop.
 * Sets SIGPIPE to SIG_IGN if it is SIG_DFL (a peer leaving mid-write must be
 * EPIPE, not the end of the process). */
int rpc_server_new(struct event_base *base, const rpc_server_config *cfg, rpc_server **ret_server,
		   ad_error **err);
/* Adds methods; the table must outlive the server. Paths are unique. */
int rpc_server_register(rpc_server *srv, const rpc_method *methods, size_t n, ad_error **err);
/* Replaces the TLS certificate, key and client CA for new connections
 * (loop thread only). Established connections keep the ones they started
 * with. A file that does not load fails with its name and the old ones
 * stay. No TLS listener: AD_E_PRECONDITION. */
int rpc_server_reload_tls(rpc_server *srv, const char *cert, const char *key,
			  const char *client_ca, ad_error **err);
/* The bound TCP port (useful with port 0), or -1. */
int rpc_server_tcp_port(rpc_server *srv);
/* Connections closed at accept for max_conns_per_peer, since the start. */
uint64_t rpc_server_refused_connections(rpc_server *srv);
/* Stops accepting, sends GOAWAY, lets in-flight calls finish for at most
 * drain_timeout_ms, then cancels the rest and calls `done` on the loop. */
void rpc_server_shutdown(rpc_server *srv, void (*done)(void *arg), void *arg);
void rpc_server_free(rpc_server *srv);

/* ---- inside a handler ---- */
/* Sets the call's error; returns `code` so handlers can `return rpc_call_error(...)`.
 * The message is percent-encoded into grpc-message by the transport. */
rpc_code rpc_call_error(rpc_call *call, rpc_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Call-scoped memory, freed after the response is sent. Never fails. */
void *rpc_call_alloc(rpc_call *call, size_t size);
char *rpc_call_strdup(rpc_call *call, const char *s);
/* Server streaming: queues one message (packed immediately; the caller keeps
 * ownership of msg). Blocks the worker while the client is not reading
 * (flow control). Returns 0, or -1 once the call is cancelled/deadline hit. */
int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg);
/* fn(arg) runs on the handler's thread once the handler has returned and
 * its response and status are handed to the loop: for work that should not
 * hold up the reply (one per call; a later call replaces it). */
void rpc_call_after_reply(rpc_call *call, void (*fn)(void *arg), void *arg);
/* True once the client reset the stream, the deadline passed or the server
 * is shutting down. Long handlers poll it (or rpc_call_cancel_fd). */
bool rpc_call_cancelled(rpc_call *call);
/* An fd that becomes readable when the call is cancelled (for poll()). */
int rpc_call_cancel_fd(rpc_call *call);
/* Monotonic deadline in ns (ad_monotonic_ns clock), or 0 for none. */
int64_t rpc_call_deadline(rpc_call *call);
/* Request metadata (lower-case header name), or NULL. */
const char *rpc_call_metadata(rpc_call *call, const char *name);
/* "unix" or the peer's "ip:port"; with mTLS, the client certificate subject. */
const char *rpc_call_peer(rpc_call *call);
const char *rpc_call_peer_identity(rpc_call *call); /* NULL without a client cert */

/* ======================================================================
 * Client (blocking; one connection, usable by one thread at a time)
 * ====================================================================== */
typedef struct rpc_client rpc_client;

typedef struct rpc_client_config {
	/* "unix:///run/agentd/agentd.sock", "/path.sock", "tls://host:port",
	 * "tcp://host:port" (h2c, tests only). */
	const char *endpoint;
	const char *tls_ca;          /* CA bundle to verify the server */
	const char *tls_cert;        /* client certificate (mTLS) */
	const char *tls_key;
	const char *tls_server_name; /* SNI and verification name; default: host */
	unsigned connect_timeout_ms; /* 0: 5000 */
	size_t max_recv_msg;         /* 0: RPC_DEFAULT_MAX_MSG */
} rpc_client_config;

typedef struct rpc_status {
	rpc_code code;
	char *message; /* malloc'd, percent-decoded grpc-message, or NULL */
} rpc_status;
void rpc_status_clear(rpc_status *st);

/* Connects and completes the HTTP/2 (and TLS) handshake. A refused/missing
 * endpoint fails with AD_E_UNAVAILABLE naming the endpoint. */
int rpc_client_connect(const rpc_client_config *cfg, rpc_client **ret_client, ad_error **err);
void rpc_client_free(rpc_client *c);

/* The client end of TLS on a connected fd, set up as the gRPC client's (for
 * agentctl's other connections to agentd, e.g. streaming): TLS 1.2 or newer;
 * the server verified against ca (NULL: the system's trust store) and name
 * (an IP address, or a DNS name also sent as SNI); cert and key (NULL: in
 * cert) presented when cert is given; alpn in wire format or NULL. The
 * handshake is the caller's (SSL_connect). A file that does not load fails
 * with AD_E_INVALID naming it. */
int rpc_tls_client_session(int fd, const char *ca, const char *cert, const char *key,
			   const char *name, const unsigned char *alpn, unsigned alpn_len,
			   struct ssl_st **ret_ssl, ad_error **err);

/* Unary call. Returns 0 when the call completed at the gRPC level (check
 * ret_status->code; on RPC_OK *ret_resp is set, free it with
 * protobuf_c_message_free_unpacked(resp, NULL)); -1 with *err on transport
 * failure. timeout_ms 0: no deadline (else sent as grpc-timeout). */
int rpc_client_unary(rpc_client *c, const char *path, const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *resp_desc, unsigned timeout_ms,
		     ProtobufCMessage **ret_resp, rpc_status *ret_status, ad_error **err);

/* Server-streaming call: on_msg is called for each message (the message is
 * freed after it returns); a non-zero return from on_msg cancels the call
 * (RST_STREAM CANCEL) and ret_status becomes RPC_CANCELLED. */
typedef int (*rpc_stream_fn)(const ProtobufCMessage *msg, void *userdata);
int rpc_client_stream(rpc_client *c, const char *path, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *resp_desc, unsigned timeout_ms,
		      rpc_stream_fn on_msg, void *userdata, rpc_status *ret_status,
		      ad_error **err);

#endif
