/* core.h — private to libadrpc: the I/O-free server core and its calls.
 *
 * One rpc_core per connection wraps an nghttp2 server session. Bytes go in
 * (rpc_core_recv: nghttp2_session_mem_recv), frames come out into the core's
 * output buffer (rpc_core_send: nghttp2_session_mem_send) for the caller to
 * write, and calls come out: handled inline, or handed to env->dispatch. The
 * core knows no socket, timer or thread: the connection layer (conn.c) drives
 * it from the event loop, tests/unit/rpc_core_test.c from an nghttp2 client
 * session in memory. Everything here runs on one thread (the loop), except
 * the rpc_call functions a handler uses and what they touch under call->mu. */
#ifndef AGENTD_RPC_CORE_H
#define AGENTD_RPC_CORE_H

#include <pthread.h>
#include <stdatomic.h>

#include "rpc_int.h"

typedef struct rpc_core rpc_core;

/* What the cores of one server share (it outlives every call): limits, the
 * method table, and the hooks through which worker calls leave the loop and
 * come back. */
typedef struct rpc_core_env {
	size_t max_recv_msg;
	size_t max_send_msg;
	size_t max_header_list;
	uint32_t max_concurrent_streams;
	bool shutting_down; /* new calls are answered UNAVAILABLE */

	const rpc_method **mtab; /* open addressing by path */
	size_t mtab_cap, mtab_n;

	/* Loop thread: run the handler of this call off the loop; the hook
	 * takes over one reference (call_unref once done). */
	void (*dispatch)(rpc_call *call, void *arg);
	/* The handler's thread: the call has output or its final status for
	 * the loop (which then calls rpc_core_call_ready). */
	void (*notify)(rpc_call *call, void *arg);
	void *hook_arg;
} rpc_core_env;

/* Limits from cfg with their defaults; no methods, no hooks. */
void rpc_core_env_init(rpc_core_env *env, const rpc_server_config *cfg);
void rpc_core_env_free(rpc_core_env *env);
/* Adds methods (the table must outlive the env); paths are unique. */
int rpc_core_methods_add(rpc_core_env *env, const rpc_method *methods, size_t n, ad_error **err);

/* A server session for one connection. peer and identity (NULL without a
 * client certificate) must outlive the core; authority_any: any field value
 * is a valid :authority (unix socket). SETTINGS are queued. */
int rpc_core_new(rpc_core_env *env, const char *peer, const char *identity, bool authority_any,
		 void *user, rpc_core **ret_core);
/* Cancels and lets go of every call still on it. */
void rpc_core_free(rpc_core *core);
void *rpc_core_user(const rpc_core *core);

/* Feeds received bytes. -1: the session is broken (close the connection). */
int rpc_core_recv(rpc_core *core, const uint8_t *data, size_t len);
/* Serializes pending frames into the output buffer, until nothing is left
 * or the buffer holds RPC_CORE_OUTBUF_MAX (nghttp2 keeps the rest). */
int rpc_core_send(rpc_core *core);
#define RPC_CORE_OUTBUF_MAX (1u << 20)
/* The bytes to write, and how many of them were written. */
const uint8_t *rpc_core_output(const rpc_core *core, size_t *ret_len);
void rpc_core_output_done(rpc_core *core, size_t written);
/* The output is at its bound: read no more input until it drains. */
bool rpc_core_output_full(const rpc_core *core);
/* Neither side wants anything more and all output is written. */
bool rpc_core_done(const rpc_core *core);
/* A frame has arrived (the client preface was valid). */
bool rpc_core_got_frame(const rpc_core *core);

/* Deadlines: false when nothing changed since the last ask; otherwise true
 * and the earliest deadline (ad_monotonic_ns clock) of a call still waiting
 * for its status, 0 for none. */
bool rpc_core_next_deadline(rpc_core *core, int64_t *ret_deadline);
/* Ends every call whose deadline is <= now with DEADLINE_EXCEEDED. */
void rpc_core_expire(rpc_core *core, int64_t now);
/* GOAWAY with the last stream processed: the server is going away. */
void rpc_core_goaway(rpc_core *core);
/* Loop thread, after env->notify: hands the call's queued output and status
 * to its stream. Returns the core to send on, or NULL when the stream is gone. */
rpc_core *rpc_core_call_ready(rpc_call *call);

/* ======================================================================
 * calls (call.c)
 * ====================================================================== */

typedef struct rpc_chunk {
	struct rpc_chunk *next;
	size_t len, off;
	bool heap; /* malloc'd (streaming) rather than from the arena */
	uint8_t data[];
} rpc_chunk;

typedef struct rpc_md {
	struct rpc_md *next;
	const char *name, *value;
} rpc_md;

/* A call's arena starts inside the call: room for a small unary call's
 * headers (path, content-type, user-agent, grpc-accept-encoding, te), the
 * decoded request and response and the packed response (a Version call from
 * gRPC C++ takes about 620 bytes). A call that outgrows it allocates a 4 KiB
 * block: at 512 bytes every such call did, 5 KiB per call in flight. */
#define CALL_ARENA_INLINE 1024
#define CALL_QUEUE_MAX (1u << 20) /* bytes a streaming call may queue before send blocks */
#define CALL_MESSAGE_MAX 1024      /* bytes of grpc-message text kept (before encoding) */

/* One per stream, reference counted: the stream holds one reference, a
 * queued/running worker job one, a pending loop notification one. */
struct rpc_call {
	atomic_int refs;
	rpc_core_env *env;
	const rpc_method *method;

	/* ---- loop thread only ---- */
	rpc_core *core; /* NULL once the stream is gone */
	rpc_call *core_prev, *core_next;
	int32_t stream_id;
	rpc_framer fr;
	ProtobufCMessage *req;
	ProtobufCMessage *resp;
	unsigned nmsgs;
	size_t hdr_bytes;
	const char *path;
	const char *http_method;
	const char *ctype;
	const char *encoding;
	rpc_req_headers hdrs;
	bool malformed; /* reset with PROTOCOL_ERROR: nothing more is read */
	bool bad_timeout;
	bool dispatched;
	bool responded; /* response HEADERS submitted */
	bool finished;	/* final status handed to nghttp2 (or the stream is gone) */
	bool deferred;	/* the data provider returned NGHTTP2_ERR_DEFERRED */
	bool inline_running;
	bool counted_recv;
	rpc_md *md;
	const char *peer, *identity;
	int64_t deadline;
	rpc_call *batch_next; /* in a batch the loop took from the ready list */

	/* ---- the handler's thread ---- */
	void (*after_fn)(void *arg); /* rpc_call_after_reply */
	void *after_arg;

	/* ---- shared, under mu ---- */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	rpc_chunk *out_head, *out_tail;
	size_t queued;
	bool status_locked; /* all output is queued and code/msg are final */
	rpc_code code;
	const char *msg;
	rpc_code err_code; /* from rpc_call_error */
	const char *err_msg;
	int cancel_fd;
	atomic_bool cancelled;

	/* ---- under the worker pool's lock ---- */
	bool in_ready;
	rpc_call *ready_next;
	rpc_call *job_next;

	rpc_arena arena;
	_Alignas(16) uint8_t arena_inline[CALL_ARENA_INLINE];
};

/* A call for a new stream (one reference, the stream's). peer and identity
 * are copied: a worker may run the handler after the connection is gone. */
rpc_call *call_new(rpc_core_env *env, int32_t stream_id, const char *peer, const char *identity,
		   bool authority_any);
void call_ref(rpc_call *call);
void call_unref(rpc_call *call);
/* Sets the cancel flag, wakes a sender blocked on flow control and the cancel fd. */
void call_cancel(rpc_call *call);
/* Runs the handler and queues its result; the status is then locked. */
void call_run(rpc_call *call);
/* Locks the status as code/msg unless the handler already did, dropping
 * queued output. Returns true when it did. */
bool call_lock_status(rpc_call *call, rpc_code code, const char *msg);
bool call_status_locked(rpc_call *call);
/* Copies up to len queued bytes to buf. *ret_eof: nothing more will be
 * queued (then *ret_code and *ret_msg are the final status). */
size_t call_output_read(rpc_call *call, uint8_t *buf, size_t len, bool *ret_eof,
			rpc_code *ret_code, const char **ret_msg);
/* Whether output is queued; true with the final status when it is locked. */
bool call_output_peek(rpc_call *call, bool *ret_have, rpc_code *ret_code, const char **ret_msg);

#endif
