/* server.c — the gRPC server of libadrpc: libevent loop, one nghttp2 server
 * session per connection, handlers inline on the loop or on a worker pool.
 *
 * Threading: everything that touches nghttp2, libevent or a connection runs
 * on the loop thread. A call (one per stream) is reference counted: the stream
 * holds one reference, a queued/running worker job one, a pending loop
 * notification one. Workers hand results back through the server's ready
 * list and an eventfd; the loop never blocks. The call's output queue and
 * final status are guarded by call->mu. */
#include "rpc_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

/* A call's arena starts inside the call: room for a small unary call's
 * headers (path, content-type, user-agent, grpc-accept-encoding, te), the
 * decoded request and response and the packed response (a Version call from
 * gRPC C++ takes about 620 bytes). A call that outgrows it allocates a 4 KiB
 * block: at 512 bytes every such call did, 5 KiB per call in flight. */
#define CALL_ARENA_INLINE 1024
#define STREAM_QUEUE_MAX (1u << 20)  /* bytes a streaming call may queue before send blocks */
#define CONN_OUTBUF_MAX (1u << 20)   /* bytes buffered towards the socket per connection */
/* An output buffer larger than this is freed once it has drained, so that a
 * burst (a big stream) does not leave its peak allocated per connection. */
#define CONN_OUTBUF_KEEP (32u << 10)
/* Bytes read per read() / SSL_read() (which returns at most one 16 KiB
 * record) into the server's input buffer, and at most this many such reads
 * per readiness event (fairness between connections). */
#define CONN_READ_CHUNK (16u << 10)
#define CONN_READS_PER_EVENT 16
/* After the last connection closed, free heap pages are returned to the
 * kernel (malloc_trim) once nothing happened for this long. */
#define IDLE_TRIM_S 2
#define CONN_RECV_BUDGET (64u << 20) /* partially received request bytes per connection */
#define PREFACE_TIMEOUT_S 10
#define RESET_WINDOW_NS (10LL * 1000000000LL)
#define RESET_LIMIT 1000      /* client resets per window before ENHANCE_YOUR_CALM */
#define GRPC_MESSAGE_MAX 1024 /* bytes of grpc-message kept (before encoding) */
/* listen() backlog (the kernel caps it at net.core.somaxconn). A burst of
 * connections while the loop is busy waits here instead of being refused.
 * evconnlistener_new gets backlog 0 so that it keeps ours (-1 would
 * re-listen with 128). */
#define RPC_LISTEN_BACKLOG 4096
#define WORKER_IDLE_S 10
#define WORKERS_MIN_CAP 64 /* extra workers: up to max(this, 4 x cfg.workers) in all */
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (4 << 20)

typedef struct rpc_conn rpc_conn;

/* Worker threads: when a job is queued and none is idle, another is started
 * (up to a cap); the first cfg.workers stay for good, the extra ones leave
 * after WORKER_IDLE_S without work. Slow handlers (a long exec, a
 * pull) thus never starve quick calls of other clients, while an idle
 * server keeps only the permanent ones. */
typedef struct rpc_worker {
	rpc_server *srv;
	unsigned idx;
	pthread_t th;
	bool started; /* joinable until joined */
	bool exited;
} rpc_worker;

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

struct rpc_call {
	atomic_int refs;
	rpc_server *srv;
	const rpc_method *method;

	/* ---- loop thread only ---- */
	rpc_conn *conn; /* NULL once the stream is gone */
	rpc_call *conn_prev, *conn_next;
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
	struct event *deadline_ev;
	rpc_md *md;
	const char *peer, *identity;
	int64_t deadline;
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

	/* ---- under srv->mu ---- */
	bool in_ready;
	rpc_call *ready_next;
	rpc_call *job_next;

	rpc_arena arena;
	_Alignas(16) uint8_t arena_inline[CALL_ARENA_INLINE];
};

/* A connection does its own socket I/O (no bufferevents): all input of a
 * readiness event is fed to nghttp2 before anything is sent, and the output
 * of that batch is then written at once (one TLS record and one write() for
 * many responses). The write event is armed only while the socket is full. */
struct rpc_conn {
	rpc_server *srv;
	rpc_conn *prev, *next;
	int fd;
	SSL *ssl;		 /* NULL for h2c */
	struct event *rev, *wev; /* readable (persistent, unless paused); writable (while blocked) */
	nghttp2_session *session;
	struct event *preface_ev;
	rpc_call *calls;
	char peer[INET6_ADDRSTRLEN + 16];
	char *identity;
	uint8_t *out; /* serialized frames not yet written: out[out_off..out_len) */
	size_t out_off, out_len, out_cap;
	rpc_conn *flush_next; /* in a batch of connections to flush (ready_cb) */
	bool flush_listed;
	bool unix_peer;		/* any :authority is accepted (grpc-go sends the socket path) */
	bool handshaking;	/* TLS handshake in progress */
	bool write_armed;	/* wev is pending */
	bool read_wants_write;	/* SSL_read asked for writability */
	bool got_frame;
	bool read_paused;
	bool arm_deadlines; /* calls with a grpc-timeout arrived in this batch */
	size_t recv_buffered;
	int64_t reset_window_start;
	unsigned resets;
};

struct rpc_server {
	struct event_base *base;
	uint8_t *rbuf; /* input buffer shared by all connections (loop thread) */
	rpc_server_config cfg;
	char *unix_path;
	struct evconnlistener *unix_lis, *tcp_lis;
	int tcp_port;
	SSL_CTX *ssl_ctx;

	const rpc_method **mtab; /* open addressing by path */
	size_t mtab_cap, mtab_n;

	rpc_conn *conns;
	bool shutting_down;
	struct event *drain_ev;
	void (*done_fn)(void *);
	void *done_arg;
	bool done_called;

	/* worker pool */
	pthread_mutex_t mu;
	pthread_cond_t job_cond;
	rpc_call *job_head, *job_tail;
	bool stop;
	rpc_worker *slots; /* cfg.workers permanent + extra ones on demand */
	unsigned nslots;
	unsigned alive, idle, njobs;
	rpc_call *ready;
	int ready_fd;
	struct event *ready_ev;
	struct event *accept_ev;
	struct event *trim_ev;
};

static void conn_free(rpc_conn *c);
static int conn_flush(rpc_conn *c);
static void call_finish_status(rpc_call *call);
static void server_check_drained(rpc_server *srv);

/* ======================================================================
 * calls
 * ====================================================================== */

static rpc_call *call_new(rpc_conn *c, int32_t stream_id)
{
	rpc_call *call = malloc(sizeof(*call));
	if (!call)
		return NULL;
	/* Only the header needs zeroing; the arena zeroes what it hands out. */
	memset(call, 0, offsetof(rpc_call, arena_inline));
	atomic_init(&call->refs, 1);
	atomic_init(&call->cancelled, false);
	call->srv = c->srv;
	call->conn = c;
	call->stream_id = stream_id;
	call->cancel_fd = -1;
	rpc_req_headers_init(&call->hdrs, c->unix_peer);
	pthread_mutex_init(&call->mu, NULL);
	pthread_cond_init(&call->cond, NULL);
	rpc_arena_init(&call->arena, call->arena_inline, sizeof(call->arena_inline));
	/* Copies: a worker may still run the handler after the connection is gone. */
	call->peer = rpc_call_strdup(call, c->identity ? c->identity : c->peer);
	call->identity = c->identity ? call->peer : NULL;
	call->conn_next = c->calls;
	if (c->calls)
		c->calls->conn_prev = call;
	c->calls = call;
	return call;
}

static void chunks_free(rpc_chunk *ch)
{
	while (ch) {
		rpc_chunk *n = ch->next;
		if (ch->heap)
			free(ch);
		ch = n;
	}
}

static void call_ref(rpc_call *call)
{
	atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
}

static void call_unref(rpc_call *call)
{
	if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1)
		return;
	rpc_framer_reset(&call->fr);
	chunks_free(call->out_head);
	if (call->cancel_fd >= 0)
		close(call->cancel_fd);
	pthread_mutex_destroy(&call->mu);
	pthread_cond_destroy(&call->cond);
	rpc_arena_free(&call->arena);
	free(call);
}

static void call_cancel(rpc_call *call)
{
	atomic_store(&call->cancelled, true);
	pthread_mutex_lock(&call->mu);
	if (call->cancel_fd >= 0) {
		uint64_t one = 1;
		ssize_t r = write(call->cancel_fd, &one, sizeof(one));
		(void)r;
	}
	pthread_cond_broadcast(&call->cond);
	pthread_mutex_unlock(&call->mu);
}

/* Detaches the call from its (dying or closed) stream. Loop thread. */
static void call_detach(rpc_call *call)
{
	rpc_conn *c = call->conn;
	if (!c)
		return;
	if (call->conn_prev)
		call->conn_prev->conn_next = call->conn_next;
	else
		c->calls = call->conn_next;
	if (call->conn_next)
		call->conn_next->conn_prev = call->conn_prev;
	call->conn = NULL;
	if (call->counted_recv) {
		c->recv_buffered -= rpc_framer_buffered(&call->fr);
		call->counted_recv = false;
	}
	rpc_framer_reset(&call->fr);
	if (!call->finished) {
		call->finished = true;
		call_cancel(call);
	}
	if (call->deadline_ev) {
		event_free(call->deadline_ev);
		call->deadline_ev = NULL;
	}
	call_unref(call);
}

/* Hands a call to the loop (from a worker). */
static void call_notify(rpc_call *call)
{
	rpc_server *srv = call->srv;
	pthread_mutex_lock(&srv->mu);
	if (!call->in_ready) {
		call->in_ready = true;
		call_ref(call);
		bool was_empty = !srv->ready;
		call->ready_next = srv->ready;
		srv->ready = call;
		if (was_empty) {
			uint64_t one = 1;
			ssize_t r = write(srv->ready_fd, &one, sizeof(one));
			(void)r;
		}
	}
	pthread_mutex_unlock(&srv->mu);
}

/* Loop: pre-dispatch failures and the deadline. Locks the status if the
 * handler has not, drops queued output, and sends it. */
static void call_fail(rpc_call *call, rpc_code code, const char *msg)
{
	pthread_mutex_lock(&call->mu);
	if (call->status_locked) {
		pthread_mutex_unlock(&call->mu);
		return;
	}
	chunks_free(call->out_head);
	call->out_head = call->out_tail = NULL;
	call->queued = 0;
	call->code = code;
	call->msg = msg;
	call->status_locked = true;
	pthread_mutex_unlock(&call->mu);
	call_finish_status(call);
}

static void call_failf(rpc_call *call, rpc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_failf(rpc_call *call, rpc_code code, const char *fmt, ...)
{
	/* Pre-dispatch only: the loop still owns the arena. */
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	size_t n = strlen(buf) + 1;
	char *m = rpc_arena_alloc(&call->arena, n);
	memcpy(m, buf, n);
	call_fail(call, code, m);
}

static int submit_trailers(rpc_call *call, rpc_code code, const char *msg)
{
	char st[12];
	int stlen = snprintf(st, sizeof(st), "%d", (int)code);
	nghttp2_nv nv[2] = {
	    {(uint8_t *)"grpc-status", (uint8_t *)st, 11, (size_t)stlen, NGHTTP2_NV_FLAG_NONE},
	};
	size_t n = 1;
	char *enc = NULL;
	if (msg && *msg) {
		enc = rpc_percent_encode(msg, GRPC_MESSAGE_MAX);
		nv[1] = (nghttp2_nv){(uint8_t *)"grpc-message", (uint8_t *)enc, 12, strlen(enc),
				     NGHTTP2_NV_FLAG_NONE};
		n = 2;
	}
	int rv = nghttp2_submit_trailer(call->conn->session, call->stream_id, nv, n);
	free(enc);
	return rv;
}

static ssize_t call_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
			    size_t length, uint32_t *data_flags, nghttp2_data_source *source,
			    void *user_data)
{
	(void)session;
	(void)stream_id;
	(void)user_data;
	rpc_call *call = source->ptr;
	size_t n = 0;
	bool eof = false;
	rpc_code code = RPC_OK;
	const char *msg = NULL;

	pthread_mutex_lock(&call->mu);
	while (n < length && call->out_head) {
		rpc_chunk *ch = call->out_head;
		size_t take = ch->len - ch->off;
		if (take > length - n)
			take = length - n;
		memcpy(buf + n, ch->data + ch->off, take);
		ch->off += take;
		n += take;
		if (ch->off == ch->len) {
			call->out_head = ch->next;
			if (!call->out_head)
				call->out_tail = NULL;
			if (ch->heap)
				free(ch);
		}
	}
	if (n) {
		size_t before = call->queued;
		call->queued -= n;
		if (before >= STREAM_QUEUE_MAX && call->queued < STREAM_QUEUE_MAX)
			pthread_cond_broadcast(&call->cond);
	}
	if (!call->out_head && call->status_locked) {
		eof = true;
		code = call->code;
		msg = call->msg;
	}
	pthread_mutex_unlock(&call->mu);

	if (eof) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		call->finished = true;
		if (submit_trailers(call, code, msg) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return (ssize_t)n;
	}
	if (n == 0) {
		call->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* Loop: starts the response once there is something to send, or resumes it. */
static void call_pump(rpc_call *call)
{
	rpc_conn *c = call->conn;
	if (!c || call->finished)
		return;
	if (call->responded) {
		if (call->deferred) {
			call->deferred = false;
			nghttp2_session_resume_data(c->session, call->stream_id);
		}
		return;
	}
	pthread_mutex_lock(&call->mu);
	bool have = call->out_head != NULL;
	bool locked = call->status_locked;
	rpc_code code = call->code;
	const char *msg = call->msg;
	pthread_mutex_unlock(&call->mu);
	if (!have && !locked)
		return;
	call->responded = true;
	if (!have) {
		/* Trailers-Only: one HEADERS frame with END_STREAM. */
		char st[12];
		int stlen = snprintf(st, sizeof(st), "%d", (int)code);
		char *enc = msg && *msg ? rpc_percent_encode(msg, GRPC_MESSAGE_MAX) : NULL;
		nghttp2_nv nv[4] = {
		    {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
		    {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
		     NGHTTP2_NV_FLAG_NONE},
		    {(uint8_t *)"grpc-status", (uint8_t *)st, 11, (size_t)stlen,
		     NGHTTP2_NV_FLAG_NONE},
		};
		size_t n = 3;
		if (enc) {
			nv[3] = (nghttp2_nv){(uint8_t *)"grpc-message", (uint8_t *)enc, 12,
					     strlen(enc), NGHTTP2_NV_FLAG_NONE};
			n = 4;
		}
		call->finished = true;
		nghttp2_submit_response(c->session, call->stream_id, nv, n, NULL);
		free(enc);
		return;
	}
	static const nghttp2_nv hdrs[] = {
	    {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
	     NGHTTP2_NV_FLAG_NONE},
	};
	nghttp2_data_provider prd = {.source.ptr = call, .read_callback = call_read_cb};
	nghttp2_submit_response(c->session, call->stream_id, hdrs, 2, &prd);
}

static void call_finish_status(rpc_call *call)
{
	if (call->deadline_ev) {
		event_free(call->deadline_ev);
		call->deadline_ev = NULL;
	}
	call_pump(call);
}

static void call_respond_http(rpc_call *call, const char *status)
{
	rpc_conn *c = call->conn;
	nghttp2_nv nv[] = {
	    {(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE},
	};
	pthread_mutex_lock(&call->mu);
	call->status_locked = true;
	pthread_mutex_unlock(&call->mu);
	call->responded = true;
	call->finished = true;
	nghttp2_submit_response(c->session, call->stream_id, nv, 1, NULL);
}

static void call_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_call *call = arg;
	rpc_conn *c = call->conn;
	if (!c || call->finished)
		return;
	/* Status first: a handler woken by the cancellation must not get its
	 * own CANCELLED in before DEADLINE_EXCEEDED. */
	call_fail(call, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
	call_cancel(call);
	if (conn_flush(c) != 0)
		conn_free(c);
}

/* Runs the handler and queues the result (loop or worker thread). */
static void call_run(rpc_call *call)
{
	const rpc_method *m = call->method;
	rpc_server *srv = call->srv;
	rpc_code rc;
	if (atomic_load(&call->cancelled))
		rc = RPC_CANCELLED;
	else
		rc = m->handler(call, call->req, call->resp, m->userdata);

	rpc_chunk *ch = NULL;
	if (rc == RPC_OK && m->kind == RPC_UNARY) {
		size_t sz = protobuf_c_message_get_packed_size(call->resp);
		if (sz > srv->cfg.max_send_msg) {
			rc =
			    rpc_call_error(call, RPC_RESOURCE_EXHAUSTED,
					   "response message of %zu bytes exceeds the limit of %zu",
					   sz, srv->cfg.max_send_msg);
		} else {
			ch = rpc_arena_alloc(&call->arena, sizeof(*ch) + 5 + sz);
			ch->len = 5 + sz;
			ch->data[0] = 0;
			ch->data[1] = (uint8_t)(sz >> 24);
			ch->data[2] = (uint8_t)(sz >> 16);
			ch->data[3] = (uint8_t)(sz >> 8);
			ch->data[4] = (uint8_t)sz;
			protobuf_c_message_pack(call->resp, ch->data + 5);
		}
	}
	pthread_mutex_lock(&call->mu);
	if (!call->status_locked) {
		if (ch) {
			if (call->out_tail)
				call->out_tail->next = ch;
			else
				call->out_head = ch;
			call->out_tail = ch;
			call->queued += ch->len;
		}
		call->code = rc;
		call->msg = rc != RPC_OK && call->err_code == rc ? call->err_msg : NULL;
		if (rc != RPC_OK && !call->msg && rc == RPC_CANCELLED)
			call->msg = "call cancelled";
		call->status_locked = true;
	}
	pthread_mutex_unlock(&call->mu);
}

static void *worker_main(void *arg)
{
	rpc_worker *w = arg;
	rpc_server *srv = w->srv;
	bool extra = w->idx >= srv->cfg.workers;
	pthread_mutex_lock(&srv->mu);
	for (;;) {
		while (!srv->job_head && !srv->stop) {
			srv->idle++;
			int rc = 0;
			if (extra) {
				struct timespec ts;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += WORKER_IDLE_S;
				rc = pthread_cond_timedwait(&srv->job_cond, &srv->mu, &ts);
			} else {
				pthread_cond_wait(&srv->job_cond, &srv->mu);
			}
			srv->idle--;
			if (rc == ETIMEDOUT && !srv->job_head && !srv->stop) {
				w->exited = true;
				srv->alive--;
				pthread_mutex_unlock(&srv->mu);
				/* The pool shrinks after a busy spell: give back
				 * what the handlers freed. */
				malloc_trim(0);
				return NULL;
			}
		}
		if (srv->stop)
			break;
		rpc_call *call = srv->job_head;
		srv->job_head = call->job_next;
		if (!srv->job_head)
			srv->job_tail = NULL;
		srv->njobs--;
		pthread_mutex_unlock(&srv->mu);
		call_run(call);
		call_notify(call);
		if (call->after_fn)
			call->after_fn(call->after_arg);
		call_unref(call); /* the job's reference */
		pthread_mutex_lock(&srv->mu);
	}
	pthread_mutex_unlock(&srv->mu);
	return NULL;
}

/* Under srv->mu. Returns 0 or -1 (no slot, or pthread_create failed). */
static int worker_spawn(rpc_server *srv)
{
	for (unsigned i = 0; i < srv->nslots; i++) {
		rpc_worker *w = &srv->slots[i];
		if (w->started && !w->exited)
			continue;
		if (w->started) {
			/* It has returned (exited is set just before). */
			pthread_join(w->th, NULL);
			w->started = false;
		}
		w->srv = srv;
		w->idx = i;
		w->exited = false;
		if (pthread_create(&w->th, NULL, worker_main, w) != 0)
			return -1;
		w->started = true;
		srv->alive++;
		return 0;
	}
	return -1;
}

static void ready_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	rpc_server *srv = arg;
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));
	(void)r;
	pthread_mutex_lock(&srv->mu);
	rpc_call *list = srv->ready;
	srv->ready = NULL;
	for (rpc_call *x = list; x; x = x->ready_next)
		x->in_ready = false;
	pthread_mutex_unlock(&srv->mu);
	/* Queue every ready response first, then send once per connection: the
	 * responses of one wakeup share TLS records and write()s. */
	rpc_conn *to_flush = NULL;
	while (list) {
		rpc_call *call = list;
		list = call->ready_next;
		rpc_conn *c = call->conn;
		if (c) {
			call_pump(call);
			pthread_mutex_lock(&call->mu);
			bool locked = call->status_locked;
			pthread_mutex_unlock(&call->mu);
			if (locked && call->deadline_ev) {
				event_free(call->deadline_ev);
				call->deadline_ev = NULL;
			}
			if (!c->flush_listed) {
				c->flush_listed = true;
				c->flush_next = to_flush;
				to_flush = c;
			}
		}
		call_unref(call);
	}
	while (to_flush) {
		rpc_conn *c = to_flush;
		to_flush = c->flush_next;
		c->flush_listed = false;
		if (conn_flush(c) != 0)
			conn_free(c);
	}
	if (srv->shutting_down)
		server_check_drained(srv);
}

/* ======================================================================
 * request handling (nghttp2 callbacks)
 * ====================================================================== */

static const rpc_method *method_lookup(rpc_server *srv, const char *path)
{
	if (!srv->mtab_cap)
		return NULL;
	uint32_t h = 2166136261u;
	for (const char *p = path; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	for (size_t i = h & (srv->mtab_cap - 1);; i = (i + 1) & (srv->mtab_cap - 1)) {
		const rpc_method *m = srv->mtab[i];
		if (!m)
			return NULL;
		if (strcmp(m->path, path) == 0)
			return m;
	}
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	rpc_conn *c = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	rpc_call *call = call_new(c, frame->hd.stream_id);
	if (!call)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
	return 0;
}

/* A malformed request (RFC 9113 section 8.1.1): the stream is reset with
 * PROTOCOL_ERROR, as nghttp2's own HTTP checks do, and nothing more of it
 * is read or answered. */
static void call_reject(nghttp2_session *session, rpc_call *call, const char *why)
{
	call->malformed = true;
	ad_debug("rpc: stream %d reset: malformed request: %s", call->stream_id, why);
	nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, call->stream_id,
				  NGHTTP2_PROTOCOL_ERROR);
}

static char *arena_strndup(rpc_call *call, const uint8_t *s, size_t n)
{
	char *p = rpc_arena_alloc(&call->arena, n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	(void)flags;
	rpc_conn *c = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	rpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!call || call->malformed)
		return 0;
	bool request = frame->headers.cat == NGHTTP2_HCAT_REQUEST;
	if (request && (call->dispatched || call->finished))
		return 0;
	/* The header list limit, as SETTINGS_MAX_HEADER_LIST_SIZE counts it. */
	call->hdr_bytes += namelen + valuelen + 32;
	if (call->hdr_bytes > c->srv->cfg.max_header_list)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	const char *why;
	if (!request) {
		/* Client trailers: checked, nothing we use. */
		if (rpc_req_trailer_check(name, namelen, value, valuelen, &why) ==
		    RPC_HDR_MALFORMED)
			call_reject(session, call, why);
		return 0;
	}
	switch (rpc_req_header_check(&call->hdrs, name, namelen, value, valuelen, &why)) {
	case RPC_HDR_MALFORMED:
		call_reject(session, call, why);
		return 0;
	case RPC_HDR_IGNORE:
		return 0;
	case RPC_HDR_OK:
		break;
	}
	if (name[0] == ':') {
		if (namelen == 5 && memcmp(name, ":path", 5) == 0)
			call->path = arena_strndup(call, value, valuelen);
		else if (namelen == 7 && memcmp(name, ":method", 7) == 0)
			call->http_method = arena_strndup(call, value, valuelen);
		return 0;
	}
	if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
		call->ctype = arena_strndup(call, value, valuelen);
		return 0;
	}
	if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
		int64_t ns;
		if (rpc_timeout_parse((const char *)value, valuelen, &ns) < 0) {
			call->bad_timeout = true;
		} else {
			int64_t now = ad_monotonic_ns();
			call->deadline = ns > INT64_MAX - now ? INT64_MAX : now + ns;
		}
		return 0;
	}
	if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0) {
		call->encoding = arena_strndup(call, value, valuelen);
		return 0;
	}
	rpc_md *md = rpc_arena_alloc(&call->arena, sizeof(*md));
	md->name = arena_strndup(call, name, namelen);
	md->value = arena_strndup(call, value, valuelen);
	md->next = call->md;
	call->md = md;
	return 0;
}

static bool ctype_ok(const char *ct)
{
	if (!ct || strncmp(ct, "application/grpc", 16) != 0)
		return false;
	return ct[16] == 0 || ct[16] == '+' || ct[16] == ';';
}

/* End of the request HEADERS: validate and route. */
static void call_headers_done(rpc_conn *c, rpc_call *call)
{
	rpc_server *srv = c->srv;
	if (!call->http_method || strcmp(call->http_method, "POST") != 0) {
		call_respond_http(call, "405");
		return;
	}
	if (!ctype_ok(call->ctype)) {
		call_respond_http(call, "415");
		return;
	}
	call->method = method_lookup(srv, call->path);
	if (!call->method) {
		call_failf(call, RPC_UNIMPLEMENTED, "unknown method %s", call->path);
		return;
	}
	if (call->bad_timeout) {
		call_fail(call, RPC_INTERNAL, "malformed grpc-timeout");
		return;
	}
	if (srv->shutting_down) {
		call_fail(call, RPC_UNAVAILABLE, "server is shutting down");
		return;
	}
	if (call->deadline) {
		int64_t left = call->deadline - ad_monotonic_ns();
		if (left <= 0) {
			call_fail(call, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
			return;
		}
		/* The timer is armed after this read batch (conn_arm_deadlines)
		 * unless the call is over by then: most inline calls are. */
		c->arm_deadlines = true;
	}
}

static void call_arm_deadline(rpc_call *call)
{
	if (call->deadline_ev || call->finished || !call->deadline)
		return;
	pthread_mutex_lock(&call->mu);
	bool decided = call->status_locked; /* e.g. answered inline */
	pthread_mutex_unlock(&call->mu);
	if (decided)
		return;
	int64_t left = call->deadline - ad_monotonic_ns();
	if (left < 0)
		left = 0;
	call->deadline_ev = evtimer_new(call->srv->base, call_deadline_cb, call);
	struct timeval tv = {.tv_sec = left / 1000000000LL,
			     .tv_usec = (left % 1000000000LL) / 1000};
	evtimer_add(call->deadline_ev, &tv);
}

static void conn_arm_deadlines(rpc_conn *c)
{
	if (!c->arm_deadlines)
		return;
	c->arm_deadlines = false;
	for (rpc_call *call = c->calls; call; call = call->conn_next)
		call_arm_deadline(call);
}

static int on_message(const uint8_t *msg, size_t len, bool compressed, void *ctx)
{
	rpc_call *call = ctx;
	if (compressed) {
		/* We decompress nothing. A compressed message without an encoding
		 * (or "identity") is a protocol error; a real encoding is one we
		 * do not implement. */
		if (!call->encoding || strcmp(call->encoding, "identity") == 0) {
			call_fail(call, RPC_INTERNAL, "compressed message without a grpc-encoding");
			return RPC_INTERNAL;
		}
		call_failf(call, RPC_UNIMPLEMENTED, "grpc-encoding %s is not supported",
			   call->encoding);
		return RPC_UNIMPLEMENTED;
	}
	if (call->nmsgs > 0) {
		/* statuscodes.md: request cardinality violation. */
		call_fail(call, RPC_UNIMPLEMENTED,
			  "cardinality violation: more than one request message for a "
			  "non-client-streaming method");
		return RPC_UNIMPLEMENTED;
	}
	call->nmsgs++;
	ProtobufCAllocator alloc;
	rpc_arena_pb_allocator(&call->arena, &alloc);
	call->req = protobuf_c_message_unpack(call->method->request, &alloc, len, msg);
	if (!call->req) {
		call_failf(call, RPC_INVALID_ARGUMENT, "cannot decode %s",
			   call->method->request->name);
		return RPC_INVALID_ARGUMENT;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			 const uint8_t *data, size_t len, void *user_data)
{
	(void)flags;
	rpc_conn *c = user_data;
	rpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!call || call->malformed)
		return 0;
	const char *why;
	if (rpc_req_headers_data(&call->hdrs, len, false, &why) == RPC_HDR_MALFORMED) {
		call_reject(session, call, why);
		return 0;
	}
	if (call->finished || call->dispatched || !call->method)
		return 0;
	rpc_server *srv = c->srv;
	size_t before = rpc_framer_buffered(&call->fr);
	if (c->recv_buffered > CONN_RECV_BUDGET) {
		call_fail(call, RPC_RESOURCE_EXHAUSTED, "too much request data in flight");
		return 0;
	}
	uint32_t big = 0;
	int r =
	    rpc_framer_feed(&call->fr, data, len, srv->cfg.max_recv_msg, on_message, call, &big);
	size_t after = rpc_framer_buffered(&call->fr);
	c->recv_buffered = c->recv_buffered - before + after;
	call->counted_recv = true;
	if (r == RPC_RESOURCE_EXHAUSTED && big)
		call_failf(call, RPC_RESOURCE_EXHAUSTED,
			   "received message larger than max (%u vs. %zu)", big,
			   srv->cfg.max_recv_msg);
	if (r != RPC_OK) {
		c->recv_buffered -= after;
		rpc_framer_reset(&call->fr);
		call->counted_recv = false;
	}
	return 0;
}

static void call_dispatch(rpc_conn *c, rpc_call *call)
{
	rpc_server *srv = c->srv;
	if (rpc_framer_partial(&call->fr)) {
		call_fail(call, RPC_INTERNAL, "request ended inside a message");
		return;
	}
	if (call->nmsgs != 1) {
		/* As grpc-go: a stream that ends without the request is INTERNAL. */
		call_fail(call, RPC_INTERNAL, "cardinality violation: no request message");
		return;
	}
	call->dispatched = true;
	const rpc_method *m = call->method;
	if (m->kind == RPC_UNARY) {
		call->resp = rpc_arena_alloc(&call->arena, m->response->sizeof_message);
		protobuf_c_message_init(m->response, call->resp);
	}
	if (call->deadline && ad_monotonic_ns() >= call->deadline) {
		call_fail(call, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
		return;
	}
	if (m->on_loop) {
		call->inline_running = true;
		call_run(call);
		call->inline_running = false;
		void (*after)(void *) = call->after_fn;
		void *after_arg = call->after_arg;
		call_finish_status(call);
		if (after)
			after(after_arg);
		return;
	}
	call_ref(call);
	pthread_mutex_lock(&srv->mu);
	call->job_next = NULL;
	if (srv->job_tail)
		srv->job_tail->job_next = call;
	else
		srv->job_head = call;
	srv->job_tail = call;
	srv->njobs++;
	/* Every worker busy: add one rather than make this call wait. */
	if (srv->njobs > srv->idle)
		worker_spawn(srv);
	pthread_cond_signal(&srv->job_cond);
	pthread_mutex_unlock(&srv->mu);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	rpc_conn *c = user_data;
	if (!c->got_frame) {
		c->got_frame = true;
		if (c->preface_ev)
			event_del(c->preface_ev);
	}
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	rpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!call || call->malformed)
		return 0;
	bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
	const char *why;
	if (frame->hd.type == NGHTTP2_HEADERS) {
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
			if (rpc_req_headers_complete(&call->hdrs, &why) == RPC_HDR_MALFORMED) {
				call_reject(session, call, why);
				return 0;
			}
			call_headers_done(c, call);
		} else if (!end_stream) {
			call_reject(session, call, "trailers without END_STREAM");
			return 0;
		}
	}
	if (end_stream && rpc_req_headers_data(&call->hdrs, 0, true, &why) == RPC_HDR_MALFORMED) {
		call_reject(session, call, why);
		return 0;
	}
	if (end_stream && !call->finished && !call->dispatched)
		call_dispatch(c, call);
	return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	(void)user_data;
	/* Our side is complete while the client is still sending (an early
	 * error): tell it to stop (RFC 9113 section 8.1). */
	if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    !nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id))
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					  NGHTTP2_NO_ERROR);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	rpc_conn *c = user_data;
	rpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!call)
		return 0;
	if (error_code != NGHTTP2_NO_ERROR && !call->finished) {
		/* Opened and reset before we answered: the rapid-reset pattern. */
		int64_t now = ad_monotonic_ns();
		if (now - c->reset_window_start > RESET_WINDOW_NS) {
			c->reset_window_start = now;
			c->resets = 0;
		}
		if (++c->resets > RESET_LIMIT)
			nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
	}
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	call_detach(call);
	return 0;
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
		       void *user_data)
{
	(void)session;
	(void)flags;
	rpc_conn *c = user_data;
	size_t pending = c->out_len - c->out_off;
	if (pending >= CONN_OUTBUF_MAX)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (c->out_len + length > c->out_cap) {
		if (c->out_off) {
			/* Safe while a TLS write is pending: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. */
			memmove(c->out, c->out + c->out_off, pending);
			c->out_off = 0;
			c->out_len = pending;
		}
		if (c->out_len + length > c->out_cap) {
			size_t cap = c->out_cap ? c->out_cap : 16384;
			while (cap < c->out_len + length)
				cap *= 2;
			uint8_t *p = realloc(c->out, cap);
			if (!p)
				return NGHTTP2_ERR_CALLBACK_FAILURE;
			c->out = p;
			c->out_cap = cap;
		}
	}
	memcpy(c->out + c->out_len, data, length);
	c->out_len += length;
	return (ssize_t)length;
}

/* ======================================================================
 * connections
 * ====================================================================== */

static void conn_arm_write(rpc_conn *c, bool on)
{
	if (on == c->write_armed)
		return;
	c->write_armed = on;
	if (on)
		event_add(c->wev, NULL);
	else
		event_del(c->wev);
}

/* Input that OpenSSL has already taken from the socket (read-ahead) makes
 * no readiness event: when reading stops with such input left, the read
 * callback is run again from the loop. */
static void conn_read_again_if_buffered(rpc_conn *c)
{
	if (c->ssl && !c->handshaking && !c->read_paused && SSL_has_pending(c->ssl))
		event_active(c->rev, EV_READ, 1);
}

static void conn_pause_read(rpc_conn *c, bool pause)
{
	if (pause == c->read_paused)
		return;
	c->read_paused = pause;
	if (pause) {
		event_del(c->rev);
	} else {
		event_add(c->rev, NULL);
		conn_read_again_if_buffered(c);
	}
}

/* Writes what is buffered until done or the socket is full (then the write
 * event is armed). Returns -1 when the connection is broken. */
static int conn_write(rpc_conn *c)
{
	while (c->out_off < c->out_len) {
		size_t left = c->out_len - c->out_off;
		ssize_t n;
		if (c->ssl) {
			/* Partial writes on: SSL_write returns after each record
			 * (at most 16 KiB of plaintext) that went out. */
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out + c->out_off, left > INT_MAX ? INT_MAX : (int)left);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE) {
					conn_arm_write(c, true);
					return 0;
				}
				if (e == SSL_ERROR_WANT_READ)
					return 0; /* the next read event writes again */
				ERR_clear_error();
				return -1;
			}
			n = r;
		} else {
			n = send(c->fd, c->out + c->out_off, left, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					conn_arm_write(c, true);
					return 0;
				}
				if (errno == EINTR)
					continue;
				return -1;
			}
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->out_cap > CONN_OUTBUF_KEEP) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
	conn_arm_write(c, false);
	return 0;
}

/* Generates output and writes it; returns -1 when the connection is finished. */
static int conn_flush(rpc_conn *c)
{
	if (!c->session)
		return 0;
	if (nghttp2_session_send(c->session) != 0)
		return -1;
	if (conn_write(c) != 0)
		return -1;
	size_t pending = c->out_len - c->out_off;
	if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
	    pending == 0)
		return -1;
	/* Backpressure: a client that does not read its responses gets no new
	 * requests processed until it does (the write event resumes reading). */
	conn_pause_read(c, pending >= CONN_OUTBUF_MAX);
	return 0;
}

static void conn_free(rpc_conn *c)
{
	rpc_server *srv = c->srv;
	while (c->calls)
		call_detach(c->calls);
	if (c->session)
		nghttp2_session_del(c->session);
	if (c->preface_ev)
		event_free(c->preface_ev);
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->ssl) {
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	free(c->identity);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
	if (!srv->conns && srv->trim_ev) {
		struct timeval tv = {.tv_sec = IDLE_TRIM_S};
		evtimer_add(srv->trim_ev, &tv);
	}
	if (srv->shutting_down)
		server_check_drained(srv);
}

/* The connections freed their sessions and buffers, but the heap keeps
 * the pages (between live allocations glibc does not trim by itself). */
static void idle_trim_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_server *srv = arg;
	if (!srv->conns)
		malloc_trim(0);
}

static int conn_start_session(rpc_conn *c);

/* TLS handshake done (client certificate verified by OpenSSL): check ALPN,
 * record the peer's identity, start HTTP/2. */
static int conn_tls_established(rpc_conn *c)
{
	const unsigned char *alpn = NULL;
	unsigned alpnlen = 0;
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpnlen);
	if (alpnlen && !(alpnlen == 2 && memcmp(alpn, "h2", 2) == 0))
		return -1;
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	if (cert) {
		BIO *b = BIO_new(BIO_s_mem());
		X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
		char *p;
		long n = BIO_get_mem_data(b, &p);
		c->identity = ad_strndup(p, (size_t)n);
		BIO_free(b);
		X509_free(cert);
	}
	return conn_start_session(c);
}

/* Returns 1 when the handshake is complete, 0 while it goes on, -1 on failure. */
static int conn_handshake(rpc_conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->handshaking = false;
		conn_arm_write(c, false);
		return conn_tls_established(c) == 0 ? 1 : -1;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		conn_arm_write(c, false);
		return 0;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		conn_arm_write(c, true);
		return 0;
	}
	ERR_clear_error();
	return -1;
}

/* Reads what has arrived (up to CONN_READS_PER_EVENT chunks) and feeds it to
 * nghttp2. Returns -1 when the connection is finished. */
static int conn_read(rpc_conn *c)
{
	uint8_t *buf = c->srv->rbuf;
	for (int i = 0; i < CONN_READS_PER_EVENT && !c->read_paused; i++) {
		ssize_t n;
		bool more;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf, CONN_READ_CHUNK);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ)
					return 0;
				if (e == SSL_ERROR_WANT_WRITE) {
					c->read_wants_write = true;
					conn_arm_write(c, true);
					return 0;
				}
				ERR_clear_error();
				return -1; /* close_notify, EOF or a TLS error */
			}
			n = r;
			/* With read-ahead, OpenSSL holds whatever else the socket
			 * gave it; when it holds nothing, the socket was drained
			 * (or will report readable again): no read for EAGAIN. */
			more = SSL_has_pending(c->ssl);
		} else {
			n = recv(c->fd, buf, CONN_READ_CHUNK, 0);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return 0;
				if (errno == EINTR)
					continue;
				return -1;
			}
			if (n == 0)
				return -1;
			more = (size_t)n == CONN_READ_CHUNK;
		}
		if (c->session) {
			ssize_t rv = nghttp2_session_mem_recv(c->session, buf, (size_t)n);
			if (rv < 0)
				return -1;
		}
		/* Stop reading while the output is over its bound (conn_flush
		 * pauses reading; resuming reads what OpenSSL holds). */
		if (c->out_len - c->out_off >= CONN_OUTBUF_MAX || !more)
			return 0;
	}
	/* Read CONN_READS_PER_EVENT times: let other connections have a turn. */
	conn_read_again_if_buffered(c);
	return 0;
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	if (c->handshaking) {
		int r = conn_handshake(c);
		if (r < 0) {
			conn_free(c);
			return;
		}
		if (r == 0)
			return;
	}
	if (conn_read(c) != 0) {
		conn_free(c);
		return;
	}
	conn_arm_deadlines(c);
	if (conn_flush(c) != 0)
		conn_free(c);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	if (c->handshaking) {
		int r = conn_handshake(c);
		if (r < 0)
			conn_free(c);
		else if (r > 0)
			conn_read_cb(fd, EV_READ, c);
		return;
	}
	if (c->read_wants_write) {
		c->read_wants_write = false;
		conn_read_cb(fd, EV_READ, c);
		return;
	}
	/* Writable again: nghttp2 may hold frames it could not hand over while
	 * the buffer was full (conn_flush writes them after the rest), and
	 * reading may resume. */
	if (conn_flush(c) != 0)
		conn_free(c);
}

static int conn_start_session(rpc_conn *c)
{
	rpc_server *srv = c->srv;
	nghttp2_session_callbacks *cbs;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return -1;
	nghttp2_session_callbacks_set_send_callback(cbs, on_send);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_option *opt;
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		return -1;
	}
	nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
	/* gRPC does not use stream priorities: do not keep closed streams
	 * around for the priority tree (memory per connection). */
	nghttp2_option_set_no_closed_streams(opt, 1);
	/* nghttp2 would refuse a unix socket path as :authority (grpc-go sends
	 * one); the same request rules are checked in on_header and
	 * on_frame_recv instead (rpc_req_header_check). */
	nghttp2_option_set_no_http_messaging(opt, 1);
	int rv = nghttp2_session_server_new2(&c->session, cbs, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0)
		return -1;
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_concurrent_streams},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)srv->cfg.max_header_list},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
	};
	if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 3) != 0)
		return -1;
	nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
	return conn_flush(c);
}

static void conn_preface_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	if (!c->got_frame)
		conn_free(c);
}

static void accept_conn(rpc_server *srv, evutil_socket_t fd, struct sockaddr *sa, bool tls)
{
	if (srv->shutting_down) {
		close(fd);
		return;
	}
	rpc_conn *c = ad_malloc0(sizeof(*c));
	c->srv = srv;
	c->fd = fd;
	if (sa->sa_family == AF_UNIX) {
		c->unix_peer = true;
		snprintf(c->peer, sizeof(c->peer), "unix");
	} else {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char host[INET6_ADDRSTRLEN] = "?";
		int port = 0;
		if (sa->sa_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)sa;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			port = ntohs(in->sin_port);
			snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
			port = ntohs(in6->sin6_port);
			snprintf(c->peer, sizeof(c->peer), "[%s]:%d", host, port);
		}
	}
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	evutil_make_socket_nonblocking(fd);
	c->rev = event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	c->wev = event_new(srv->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
	c->preface_ev = evtimer_new(srv->base, conn_preface_timeout, c);
	if (!c->rev || !c->wev || !c->preface_ev) {
		conn_free(c);
		return;
	}
	if (tls) {
		c->ssl = SSL_new(srv->ssl_ctx);
		if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
			conn_free(c);
			return;
		}
		SSL_set_accept_state(c->ssl);
		c->handshaking = true;
	}
	struct timeval tv = {.tv_sec = PREFACE_TIMEOUT_S};
	evtimer_add(c->preface_ev, &tv);
	event_add(c->rev, NULL);
	if (!tls && conn_start_session(c) != 0)
		conn_free(c);
}

/* accept() failing with EMFILE & co would otherwise spin the loop on a
 * readable listener: pause accepting for a moment instead. */
static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_server *srv = arg;
	if (srv->shutting_down)
		return;
	if (srv->unix_lis)
		evconnlistener_enable(srv->unix_lis);
	if (srv->tcp_lis)
		evconnlistener_enable(srv->tcp_lis);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	rpc_server *srv = arg;
	int e = EVUTIL_SOCKET_ERROR();
	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
		return;
	if (srv->unix_lis)
		evconnlistener_disable(srv->unix_lis);
	if (srv->tcp_lis)
		evconnlistener_disable(srv->tcp_lis);
	struct timeval tv = {0, 100000};
	evtimer_add(srv->accept_ev, &tv);
}

static void unix_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			   int salen, void *arg)
{
	(void)l;
	(void)salen;
	accept_conn(arg, fd, sa, false);
}

static void tcp_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			  int salen, void *arg)
{
	(void)l;
	(void)salen;
	rpc_server *srv = arg;
	accept_conn(srv, fd, sa, srv->ssl_ctx != NULL);
}

/* ======================================================================
 * listeners and TLS
 * ====================================================================== */

static int listen_unix(rpc_server *srv, const char *path, ad_error **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path))
		return ad_fail(err, AD_E_INVALID, "unix socket path too long: %s", path);
	strcpy(sun.sun_path, path);

	_cleanup_free_ char *dir = ad_strdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (ad_mkdir_p(dir, 0755, err) < 0)
			return ad_error_wrap(err, "socket directory");
	}

	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return ad_fail(err, AD_E_EXISTS, "%s exists and is not a socket", path);
		/* Non-blocking: a live but busy server (full backlog) answers
		 * EAGAIN rather than keeping us waiting. */
		_cleanup_close_ int probe =
		    socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (probe < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "socket");
		if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN)
			return ad_fail(err, AD_E_EXISTS,
				       "another server is already listening on %s", path);
		if (errno != ECONNREFUSED)
			return ad_fail_errno(err, AD_E_INTERNAL, "cannot probe %s", path);
		/* A stale socket left by a dead server. */
		if (unlink(path) < 0 && errno != ENOENT)
			return ad_fail_errno(err, AD_E_INTERNAL, "cannot remove stale %s", path);
	}

	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "socket");
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "cannot bind %s", path);
	if (chmod(path, 0660) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "chmod %s", path);
	if (listen(fd, RPC_LISTEN_BACKLOG) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "listen on %s", path);
	srv->unix_lis =
	    evconnlistener_new(srv->base, unix_accept_cb, srv, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!srv->unix_lis)
		return ad_fail(err, AD_E_INTERNAL, "evconnlistener_new failed");
	evconnlistener_set_error_cb(srv->unix_lis, accept_error_cb);
	fd = -1;
	srv->unix_path = ad_strdup(path);
	return 0;
}

static int split_hostport(const char *s, char **ret_host, char **ret_port, ad_error **err)
{
	const char *colon;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return ad_fail(err, AD_E_INVALID, "bad address %s (want [v6]:port)", s);
		*ret_host = ad_strndup(s + 1, (size_t)(end - s - 1));
		*ret_port = ad_strdup(end + 2);
		return 0;
	}
	colon = strrchr(s, ':');
	if (!colon)
		return ad_fail(err, AD_E_INVALID, "bad address %s (want host:port)", s);
	*ret_host = ad_strndup(s, (size_t)(colon - s));
	*ret_port = ad_strdup(colon + 1);
	return 0;
}

static int listen_tcp(rpc_server *srv, const char *addr, ad_error **err)
{
	_cleanup_free_ char *host = NULL;
	_cleanup_free_ char *port = NULL;
	if (split_hostport(addr, &host, &port, err) < 0)
		return -1;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int r = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (r != 0)
		return ad_fail(err, AD_E_INVALID, "cannot resolve %s: %s", addr, gai_strerror(r));
	int fd = -1, saved = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, RPC_LISTEN_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ad_error_make(err, AD_E_INTERNAL, saved, "cannot listen on %s", addr);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	srv->tcp_port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
						: ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	srv->tcp_lis =
	    evconnlistener_new(srv->base, tcp_accept_cb, srv, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!srv->tcp_lis) {
		close(fd);
		return ad_fail(err, AD_E_INTERNAL, "evconnlistener_new failed");
	}
	evconnlistener_set_error_cb(srv->tcp_lis, accept_error_cb);
	return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int ssl_fail(ad_error **err, const char *what, const char *file)
{
	char buf[256] = "";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return ad_fail(err, AD_E_INVALID, "%s %s: %s", what, file ? file : "", buf);
}

static int tls_setup(rpc_server *srv, ad_error **err)
{
	const rpc_server_config *cfg = &srv->cfg;
	if (!cfg->tls_cert || !cfg->tls_key || !cfg->tls_client_ca)
		return ad_fail(err, AD_E_INVALID,
			       "TCP listener needs tls_cert, tls_key and tls_client_ca "
			       "(or tcp_insecure)");
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return ssl_fail(err, "SSL_CTX_new", NULL);
	srv->ssl_ctx = ctx;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
		return ssl_fail(err, "cannot load certificate", cfg->tls_cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1)
		return ssl_fail(err, "cannot load key", cfg->tls_key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return ssl_fail(err, "key does not match certificate", cfg->tls_key);
	if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1)
		return ssl_fail(err, "cannot load client CA", cfg->tls_client_ca);
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
	if (names)
		SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* With client verification on, OpenSSL refuses to resume a session
	 * without a context id: clients that resume would fail the handshake. */
	static const unsigned char sid_ctx[] = "agentd-rpc";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	/* Read-ahead: one read() takes in all the records that have arrived
	 * instead of a header read and a body read per record. Partial writes:
	 * conn_write sends a big buffer record by record, and the buffer may
	 * move (grow) between a blocked write and its retry. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* An idle connection keeps no record buffers (about 34 KiB); under load
	 * they are allocated once per batch, not per response. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

/* ======================================================================
 * public API
 * ====================================================================== */

int rpc_server_new(struct event_base *base, const rpc_server_config *cfg, rpc_server **ret_server,
		   ad_error **err)
{
	/* A peer that goes away mid-write must be an EPIPE, not the end of the
	 * process (OpenSSL writes with plain write()). */
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
	rpc_server *srv = ad_malloc0(sizeof(*srv));
	srv->base = base;
	srv->cfg = *cfg;
	srv->cfg.unix_path = srv->cfg.tcp_listen = NULL;
	srv->cfg.tls_cert = srv->cfg.tls_key = srv->cfg.tls_client_ca = NULL;
	if (!srv->cfg.max_recv_msg)
		srv->cfg.max_recv_msg = RPC_DEFAULT_MAX_MSG;
	if (!srv->cfg.max_send_msg)
		srv->cfg.max_send_msg = RPC_DEFAULT_MAX_MSG;
	if (!srv->cfg.max_concurrent_streams)
		srv->cfg.max_concurrent_streams = 1000;
	if (!srv->cfg.max_header_list)
		srv->cfg.max_header_list = 64 * 1024;
	if (!srv->cfg.workers)
		srv->cfg.workers = 8;
	if (!srv->cfg.drain_timeout_ms)
		srv->cfg.drain_timeout_ms = 5000;
	srv->tcp_port = -1;
	srv->ready_fd = -1;
	pthread_mutex_init(&srv->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&srv->job_cond, &ca);
	pthread_condattr_destroy(&ca);

	srv->rbuf = ad_realloc(NULL, CONN_READ_CHUNK); /* not zeroed: pages are touched as input arrives */
	srv->ready_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->ready_fd < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "eventfd");
		goto fail;
	}
	srv->ready_ev = event_new(base, srv->ready_fd, EV_READ | EV_PERSIST, ready_cb, srv);
	srv->accept_ev = evtimer_new(base, accept_resume_cb, srv);
	srv->trim_ev = evtimer_new(base, idle_trim_cb, srv);
	if (!srv->ready_ev || !srv->accept_ev || !srv->trim_ev ||
	    event_add(srv->ready_ev, NULL) != 0) {
		ad_fail(err, AD_E_INTERNAL, "event_new failed");
		goto fail;
	}
	if (cfg->tcp_listen && !cfg->tcp_insecure) {
		srv->cfg.tls_cert = cfg->tls_cert;
		srv->cfg.tls_key = cfg->tls_key;
		srv->cfg.tls_client_ca = cfg->tls_client_ca;
		if (tls_setup(srv, err) < 0)
			goto fail;
	}
	if (cfg->unix_path && listen_unix(srv, cfg->unix_path, err) < 0)
		goto fail;
	if (cfg->tcp_listen && listen_tcp(srv, cfg->tcp_listen, err) < 0)
		goto fail;

	srv->nslots =
	    srv->cfg.workers * 4 > WORKERS_MIN_CAP ? srv->cfg.workers * 4 : WORKERS_MIN_CAP;
	if (srv->nslots < srv->cfg.workers)
		srv->nslots = srv->cfg.workers;
	/* Workers start as jobs arrive (call_dispatch), the first cfg.workers
	 * of them for good: a server whose handlers all run on the loop, or
	 * that is never called, has no worker threads. */
	srv->slots = ad_malloc0(sizeof(*srv->slots) * srv->nslots);
	srv->cfg.tls_cert = srv->cfg.tls_key = srv->cfg.tls_client_ca = NULL;
	*ret_server = srv;
	return 0;
fail:
	rpc_server_free(srv);
	return -1;
}

static void mtab_insert(const rpc_method **tab, size_t cap, const rpc_method *m)
{
	uint32_t h = 2166136261u;
	for (const char *p = m->path; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	size_t i = h & (cap - 1);
	while (tab[i])
		i = (i + 1) & (cap - 1);
	tab[i] = m;
}

int rpc_server_register(rpc_server *srv, const rpc_method *methods, size_t n, ad_error **err)
{
	for (size_t i = 0; i < n; i++) {
		const rpc_method *m = &methods[i];
		if (!m->path || m->path[0] != '/' || !m->request || !m->response || !m->handler)
			return ad_fail(err, AD_E_INVALID, "incomplete method entry %s",
				       m->path ? m->path : "(null)");
		if (method_lookup(srv, m->path))
			return ad_fail(err, AD_E_EXISTS, "method %s registered twice", m->path);
		for (size_t j = 0; j < i; j++)
			if (strcmp(methods[j].path, m->path) == 0)
				return ad_fail(err, AD_E_EXISTS, "method %s registered twice",
					       m->path);
	}
	size_t need = srv->mtab_n + n;
	if (need * 2 > srv->mtab_cap) {
		size_t cap = 16;
		while (cap < need * 2)
			cap *= 2;
		const rpc_method **tab = ad_malloc0(cap * sizeof(*tab));
		for (size_t i = 0; i < srv->mtab_cap; i++)
			if (srv->mtab[i])
				mtab_insert(tab, cap, srv->mtab[i]);
		free(srv->mtab);
		srv->mtab = tab;
		srv->mtab_cap = cap;
	}
	for (size_t i = 0; i < n; i++)
		mtab_insert(srv->mtab, srv->mtab_cap, &methods[i]);
	srv->mtab_n += n;
	return 0;
}

int rpc_server_tcp_port(rpc_server *srv)
{
	return srv->tcp_port;
}

static void server_done(rpc_server *srv)
{
	if (srv->done_called)
		return;
	srv->done_called = true;
	if (srv->drain_ev)
		event_del(srv->drain_ev);
	if (srv->done_fn)
		srv->done_fn(srv->done_arg);
}

static void server_check_drained(rpc_server *srv)
{
	if (!srv->conns && srv->drain_ev && !srv->done_called) {
		/* Report from a fresh loop iteration, never from inside a callback
		 * of a connection being freed. */
		struct timeval zero = {0, 0};
		event_add(srv->drain_ev, &zero);
	}
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_server *srv = arg;
	/* Drained, or the drain timeout hit: cancel what is left. */
	while (srv->conns) {
		rpc_conn *c = srv->conns;
		srv->shutting_down = false; /* no re-entry from conn_free */
		conn_free(c);
		srv->shutting_down = true;
	}
	server_done(srv);
}

void rpc_server_shutdown(rpc_server *srv, void (*done)(void *arg), void *arg)
{
	if (srv->shutting_down)
		return;
	srv->shutting_down = true;
	srv->done_fn = done;
	srv->done_arg = arg;
	if (srv->unix_lis) {
		evconnlistener_free(srv->unix_lis);
		srv->unix_lis = NULL;
		if (srv->unix_path)
			unlink(srv->unix_path);
	}
	if (srv->tcp_lis) {
		evconnlistener_free(srv->tcp_lis);
		srv->tcp_lis = NULL;
	}
	srv->drain_ev = evtimer_new(srv->base, drain_cb, srv);
	struct timeval tv = {.tv_sec = srv->cfg.drain_timeout_ms / 1000,
			     .tv_usec = (srv->cfg.drain_timeout_ms % 1000) * 1000};
	evtimer_add(srv->drain_ev, &tv);
	for (rpc_conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		if (c->session) {
			nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
					      nghttp2_session_get_last_proc_stream_id(c->session),
					      NGHTTP2_NO_ERROR, NULL, 0);
			if (conn_flush(c) != 0)
				conn_free(c);
		} else {
			conn_free(c);
		}
	}
	server_check_drained(srv);
}

void rpc_server_free(rpc_server *srv)
{
	if (!srv)
		return;
	if (srv->unix_lis) {
		evconnlistener_free(srv->unix_lis);
		if (srv->unix_path)
			unlink(srv->unix_path);
	}
	if (srv->tcp_lis)
		evconnlistener_free(srv->tcp_lis);
	srv->shutting_down = false;
	while (srv->conns)
		conn_free(srv->conns);
	pthread_mutex_lock(&srv->mu);
	srv->stop = true;
	pthread_cond_broadcast(&srv->job_cond);
	pthread_mutex_unlock(&srv->mu);
	for (unsigned i = 0; i < srv->nslots; i++)
		if (srv->slots[i].started)
			pthread_join(srv->slots[i].th, NULL);
	free(srv->slots);
	while (srv->job_head) {
		rpc_call *call = srv->job_head;
		srv->job_head = call->job_next;
		call_unref(call);
	}
	while (srv->ready) {
		rpc_call *call = srv->ready;
		srv->ready = call->ready_next;
		call_unref(call);
	}
	if (srv->ready_ev)
		event_free(srv->ready_ev);
	if (srv->drain_ev)
		event_free(srv->drain_ev);
	if (srv->accept_ev)
		event_free(srv->accept_ev);
	if (srv->trim_ev)
		event_free(srv->trim_ev);
	if (srv->ready_fd >= 0)
		close(srv->ready_fd);
	if (srv->ssl_ctx)
		SSL_CTX_free(srv->ssl_ctx);
	pthread_mutex_destroy(&srv->mu);
	pthread_cond_destroy(&srv->job_cond);
	free(srv->mtab);
	free(srv->unix_path);
	free(srv->rbuf);
	free(srv);
}

/* ---- inside a handler ---- */

rpc_code rpc_call_error(rpc_call *call, rpc_code code, const char *fmt, ...)
{
	char buf[GRPC_MESSAGE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	size_t n = strlen(buf) + 1;
	char *m = rpc_arena_alloc(&call->arena, n);
	memcpy(m, buf, n);
	pthread_mutex_lock(&call->mu);
	call->err_code = code;
	call->err_msg = m;
	pthread_mutex_unlock(&call->mu);
	return code;
}

void *rpc_call_alloc(rpc_call *call, size_t size)
{
	return rpc_arena_alloc(&call->arena, size);
}

char *rpc_call_strdup(rpc_call *call, const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *p = rpc_arena_alloc(&call->arena, n);
	memcpy(p, s, n);
	return p;
}

int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg)
{
	if (rpc_call_cancelled(call))
		return -1;
	size_t sz = protobuf_c_message_get_packed_size(msg);
	if (sz > call->srv->cfg.max_send_msg) {
		/* The call ends RESOURCE_EXHAUSTED whatever the handler returns
		 * next; what was queued before still goes out first. */
		rpc_call_error(call, RPC_RESOURCE_EXHAUSTED,
			       "response message of %zu bytes exceeds the limit of %zu", sz,
			       call->srv->cfg.max_send_msg);
		pthread_mutex_lock(&call->mu);
		if (!call->status_locked) {
			call->code = RPC_RESOURCE_EXHAUSTED;
			call->msg = call->err_msg;
			call->status_locked = true;
		}
		pthread_mutex_unlock(&call->mu);
		call_cancel(call);
		if (!call->inline_running)
			call_notify(call);
		return -1;
	}
	rpc_chunk *ch = malloc(sizeof(*ch) + 5 + sz);
	if (!ch)
		return -1;
	ch->next = NULL;
	ch->off = 0;
	ch->heap = true;
	ch->len = 5 + sz;
	ch->data[0] = 0;
	ch->data[1] = (uint8_t)(sz >> 24);
	ch->data[2] = (uint8_t)(sz >> 16);
	ch->data[3] = (uint8_t)(sz >> 8);
	ch->data[4] = (uint8_t)sz;
	protobuf_c_message_pack(msg, ch->data + 5);

	pthread_mutex_lock(&call->mu);
	/* Flow control: wait while the client is not reading. On the loop
	 * thread we must never wait; the handler finishes before any send. */
	while (!call->inline_running && call->queued >= STREAM_QUEUE_MAX &&
	       !atomic_load(&call->cancelled) && !call->status_locked)
		pthread_cond_wait(&call->cond, &call->mu);
	if (atomic_load(&call->cancelled) || call->status_locked) {
		pthread_mutex_unlock(&call->mu);
		free(ch);
		return -1;
	}
	bool first = call->out_head == NULL;
	if (call->out_tail)
		call->out_tail->next = ch;
	else
		call->out_head = ch;
	call->out_tail = ch;
	call->queued += ch->len;
	pthread_mutex_unlock(&call->mu);
	if (first && !call->inline_running)
		call_notify(call);
	return 0;
}

void rpc_call_after_reply(rpc_call *call, void (*fn)(void *arg), void *arg)
{
	call->after_fn = fn;
	call->after_arg = arg;
}

bool rpc_call_cancelled(rpc_call *call)
{
	if (atomic_load(&call->cancelled))
		return true;
	return call->deadline && ad_monotonic_ns() >= call->deadline;
}

int rpc_call_cancel_fd(rpc_call *call)
{
	pthread_mutex_lock(&call->mu);
	if (call->cancel_fd < 0) {
		call->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (call->cancel_fd >= 0 && atomic_load(&call->cancelled)) {
			uint64_t one = 1;
			ssize_t r = write(call->cancel_fd, &one, sizeof(one));
			(void)r;
		}
	}
	int fd = call->cancel_fd;
	pthread_mutex_unlock(&call->mu);
	return fd;
}

int64_t rpc_call_deadline(rpc_call *call)
{
	return call->deadline;
}

const char *rpc_call_metadata(rpc_call *call, const char *name)
{
	for (rpc_md *md = call->md; md; md = md->next)
		if (strcmp(md->name, name) == 0)
			return md->value;
	return NULL;
}

const char *rpc_call_peer(rpc_call *call)
{
	return call->peer;
}

const char *rpc_call_peer_identity(rpc_call *call)
{
	return call->identity;
}
