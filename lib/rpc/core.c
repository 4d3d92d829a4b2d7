/* core.c — the I/O-free gRPC server core of libadrpc (see core.h): one
 * nghttp2 server session per connection, fed with nghttp2_session_mem_recv
 * and drained with nghttp2_session_mem_send. Here live the request rules
 * (rpc_req_header_check & co. in util.c), routing, grpc-timeout, size
 * limits, responses (Trailers-Only or HEADERS, DATA, trailers), stream
 * resets, the rapid-reset guard and GOAWAY. */
#include "core.h"

#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An output buffer larger than this is freed once it has drained, so that a
 * burst (a big stream) does not leave its peak allocated per connection. */
#define CORE_OUTBUF_KEEP (32u << 10)
#define CORE_RECV_BUDGET (64u << 20) /* partially received request bytes per connection */
#define CORE_RESET_WINDOW_NS (10LL * 1000000000LL)
#define CORE_RESET_LIMIT 1000 /* client resets per window before ENHANCE_YOUR_CALM */
#define CORE_STREAM_WINDOW (1 << 20)
#define CORE_CONN_WINDOW (4 << 20)

struct rpc_core {
	rpc_core_env *env;
	nghttp2_session *session;
	void *user;
	const char *peer, *identity;
	bool authority_any;
	rpc_call *calls;
	uint8_t *out; /* serialized frames not yet written: out[out_off..out_len) */
	size_t out_off, out_len, out_cap;
	size_t recv_buffered;
	int64_t reset_window_start;
	unsigned resets;
	bool got_frame;
	bool deadlines_changed; /* calls with a grpc-timeout arrived, or one expired */
};

/* ======================================================================
 * the environment: limits and methods
 * ====================================================================== */

void rpc_core_env_init(rpc_core_env *env, const rpc_server_config *cfg)
{
	*env = (rpc_core_env){
	    .max_recv_msg = cfg->max_recv_msg ? cfg->max_recv_msg : RPC_DEFAULT_MAX_MSG,
	    .max_send_msg = cfg->max_send_msg ? cfg->max_send_msg : RPC_DEFAULT_MAX_MSG,
	    .max_header_list = cfg->max_header_list ? cfg->max_header_list : 64 * 1024,
	    .max_concurrent_streams =
		cfg->max_concurrent_streams ? cfg->max_concurrent_streams : 1000,
	};
}

void rpc_core_env_free(rpc_core_env *env)
{
	free(env->mtab);
	env->mtab = NULL;
	env->mtab_cap = env->mtab_n = 0;
}

static uint32_t core_path_hash(const char *path)
{
	uint32_t h = 2166136261u;
	for (const char *p = path; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h;
}

static const rpc_method *core_method_find(const rpc_core_env *env, const char *path)
{
	if (!env->mtab_cap)
		return NULL;
	for (size_t i = core_path_hash(path) & (env->mtab_cap - 1);;
	     i = (i + 1) & (env->mtab_cap - 1)) {
		const rpc_method *m = env->mtab[i];
		if (!m)
			return NULL;
		if (strcmp(m->path, path) == 0)
			return m;
	}
}

static void core_method_insert(const rpc_method **tab, size_t cap, const rpc_method *m)
{
	size_t i = core_path_hash(m->path) & (cap - 1);
	while (tab[i])
		i = (i + 1) & (cap - 1);
	tab[i] = m;
}

int rpc_core_methods_add(rpc_core_env *env, const rpc_method *methods, size_t n, ad_error **err)
{
	for (size_t i = 0; i < n; i++) {
		const rpc_method *m = &methods[i];
		if (!m->path || m->path[0] != '/' || !m->request || !m->response || !m->handler)
			return ad_fail(err, AD_E_INVALID, "incomplete method entry %s",
				       m->path ? m->path : "(null)");
		if (core_method_find(env, m->path))
			return ad_fail(err, AD_E_EXISTS, "method %s registered twice", m->path);
		for (size_t j = 0; j < i; j++)
			if (strcmp(methods[j].path, m->path) == 0)
				return ad_fail(err, AD_E_EXISTS, "method %s registered twice",
					       m->path);
	}
	size_t need = env->mtab_n + n;
	if (need * 2 > env->mtab_cap) {
		size_t cap = 16;
		while (cap < need * 2)
			cap *= 2;
		const rpc_method **tab = ad_malloc0(cap * sizeof(*tab));
		for (size_t i = 0; i < env->mtab_cap; i++)
			if (env->mtab[i])
				core_method_insert(tab, cap, env->mtab[i]);
		free(env->mtab);
		env->mtab = tab;
		env->mtab_cap = cap;
	}
	for (size_t i = 0; i < n; i++)
		core_method_insert(env->mtab, env->mtab_cap, &methods[i]);
	env->mtab_n += n;
	return 0;
}

/* ======================================================================
 * responses
 * ====================================================================== */

/* Detaches the call from its (dying or closed) stream. */
static void core_call_detach(rpc_call *call)
{
	rpc_core *core = call->core;
	if (!core)
		return;
	if (call->core_prev)
		call->core_prev->core_next = call->core_next;
	else
		core->calls = call->core_next;
	if (call->core_next)
		call->core_next->core_prev = call->core_prev;
	call->core = NULL;
	if (call->counted_recv) {
		core->recv_buffered -= rpc_framer_buffered(&call->fr);
		call->counted_recv = false;
	}
	rpc_framer_reset(&call->fr);
	if (!call->finished) {
		call->finished = true;
		call_cancel(call);
	}
	call_unref(call);
}

static int core_submit_trailers(rpc_call *call, rpc_code code, const char *msg)
{
	char st[12];
	int stlen = snprintf(st, sizeof(st), "%d", (int)code);
	nghttp2_nv nv[2] = {
	    {(uint8_t *)"grpc-status", (uint8_t *)st, 11, (size_t)stlen, NGHTTP2_NV_FLAG_NONE},
	};
	size_t n = 1;
	char *enc = NULL;
	if (msg && *msg) {
		enc = rpc_percent_encode(msg, CALL_MESSAGE_MAX);
		nv[1] = (nghttp2_nv){(uint8_t *)"grpc-message", (uint8_t *)enc, 12, strlen(enc),
				     NGHTTP2_NV_FLAG_NONE};
		n = 2;
	}
	int rv = nghttp2_submit_trailer(call->core->session, call->stream_id, nv, n);
	free(enc);
	return rv;
}

static ssize_t core_data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
				 size_t length, uint32_t *data_flags, nghttp2_data_source *source,
				 void *user_data)
{
	(void)session;
	(void)stream_id;
	(void)user_data;
	rpc_call *call = source->ptr;
	bool eof;
	rpc_code code = RPC_OK;
	const char *msg = NULL;
	size_t n = call_output_read(call, buf, length, &eof, &code, &msg);
	if (eof) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		call->finished = true;
		if (core_submit_trailers(call, code, msg) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		return (ssize_t)n;
	}
	if (n == 0) {
		call->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* Starts the response once there is something to send, or resumes it. */
static void core_call_pump(rpc_call *call)
{
	rpc_core *core = call->core;
	if (!core || call->finished)
		return;
	if (call->responded) {
		if (call->deferred) {
			call->deferred = false;
			nghttp2_session_resume_data(core->session, call->stream_id);
		}
		return;
	}
	bool have;
	rpc_code code;
	const char *msg;
	bool locked = call_output_peek(call, &have, &code, &msg);
	if (!have && !locked)
		return;
	call->responded = true;
	if (!have) {
		/* Trailers-Only: one HEADERS frame with END_STREAM. */
		char st[12];
		int stlen = snprintf(st, sizeof(st), "%d", (int)code);
		char *enc = msg && *msg ? rpc_percent_encode(msg, CALL_MESSAGE_MAX) : NULL;
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
		nghttp2_submit_response(core->session, call->stream_id, nv, n, NULL);
		free(enc);
		return;
	}
	static const nghttp2_nv hdrs[] = {
	    {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
	     NGHTTP2_NV_FLAG_NONE},
	};
	nghttp2_data_provider prd = {.source.ptr = call, .read_callback = core_data_read_cb};
	nghttp2_submit_response(core->session, call->stream_id, hdrs, 2, &prd);
}

/* Pre-dispatch failures and the deadline: the status, unless the handler
 * locked one already, without any queued output. */
static void core_call_fail(rpc_call *call, rpc_code code, const char *msg)
{
	if (call_lock_status(call, code, msg))
		core_call_pump(call);
}

static void core_call_failf(rpc_call *call, rpc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void core_call_failf(rpc_call *call, rpc_code code, const char *fmt, ...)
{
	/* Pre-dispatch only: the loop still owns the arena. */
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	core_call_fail(call, code, rpc_call_strdup(call, buf));
}

static void core_respond_http(rpc_call *call, const char *status)
{
	nghttp2_nv nv[] = {
	    {(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE},
	};
	pthread_mutex_lock(&call->mu);
	call->status_locked = true;
	pthread_mutex_unlock(&call->mu);
	call->responded = true;
	call->finished = true;
	nghttp2_submit_response(call->core->session, call->stream_id, nv, 1, NULL);
}

rpc_core *rpc_core_call_ready(rpc_call *call)
{
	core_call_pump(call);
	return call->core;
}

/* ======================================================================
 * requests (nghttp2 callbacks)
 * ====================================================================== */

static int core_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
				 void *user_data)
{
	rpc_core *core = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	rpc_call *call = call_new(core->env, frame->hd.stream_id, core->peer, core->identity,
				  core->authority_any);
	if (!call)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	call->core = core;
	call->core_next = core->calls;
	if (core->calls)
		core->calls->core_prev = call;
	core->calls = call;
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
	return 0;
}

/* A malformed request (RFC 9113 section 8.1.1): the stream is reset with
 * PROTOCOL_ERROR, as nghttp2's own HTTP checks do, and nothing more of it
 * is read or answered. */
static void core_call_reject(nghttp2_session *session, rpc_call *call, const char *why)
{
	call->malformed = true;
	ad_debug("rpc: stream %d reset: malformed request: %s", call->stream_id, why);
	nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, call->stream_id,
				  NGHTTP2_PROTOCOL_ERROR);
}

static char *core_arena_strndup(rpc_call *call, const uint8_t *s, size_t n)
{
	char *p = rpc_arena_alloc(&call->arena, n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

static int core_on_header(nghttp2_session *session, const nghttp2_frame *frame,
			  const uint8_t *name, size_t namelen, const uint8_t *value,
			  size_t valuelen, uint8_t flags, void *user_data)
{
	(void)flags;
	rpc_core *core = user_data;
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
	if (call->hdr_bytes > core->env->max_header_list)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	const char *why;
	if (!request) {
		/* Client trailers: checked, nothing we use. */
		if (rpc_req_trailer_check(name, namelen, value, valuelen, &why) ==
		    RPC_HDR_MALFORMED)
			core_call_reject(session, call, why);
		return 0;
	}
	switch (rpc_req_header_check(&call->hdrs, name, namelen, value, valuelen, &why)) {
	case RPC_HDR_MALFORMED:
		core_call_reject(session, call, why);
		return 0;
	case RPC_HDR_IGNORE:
		return 0;
	case RPC_HDR_OK:
		break;
	}
	if (name[0] == ':') {
		if (namelen == 5 && memcmp(name, ":path", 5) == 0)
			call->path = core_arena_strndup(call, value, valuelen);
		else if (namelen == 7 && memcmp(name, ":method", 7) == 0)
			call->http_method = core_arena_strndup(call, value, valuelen);
		return 0;
	}
	if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
		call->ctype = core_arena_strndup(call, value, valuelen);
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
		call->encoding = core_arena_strndup(call, value, valuelen);
		return 0;
	}
	rpc_md *md = rpc_arena_alloc(&call->arena, sizeof(*md));
	md->name = core_arena_strndup(call, name, namelen);
	md->value = core_arena_strndup(call, value, valuelen);
	md->next = call->md;
	call->md = md;
	return 0;
}

static bool core_ctype_ok(const char *ct)
{
	if (!ct || strncmp(ct, "application/grpc", 16) != 0)
		return false;
	return ct[16] == 0 || ct[16] == '+' || ct[16] == ';';
}

/* End of the request HEADERS: validate and route. */
static void core_headers_done(rpc_core *core, rpc_call *call)
{
	rpc_core_env *env = core->env;
	if (!call->http_method || strcmp(call->http_method, "POST") != 0) {
		core_respond_http(call, "405");
		return;
	}
	if (!core_ctype_ok(call->ctype)) {
		core_respond_http(call, "415");
		return;
	}
	call->method = core_method_find(env, call->path);
	if (!call->method) {
		core_call_failf(call, RPC_UNIMPLEMENTED, "unknown method %s", call->path);
		return;
	}
	if (call->bad_timeout) {
		core_call_fail(call, RPC_INTERNAL, "malformed grpc-timeout");
		return;
	}
	if (env->shutting_down) {
		core_call_fail(call, RPC_UNAVAILABLE, "server is shutting down");
		return;
	}
	if (call->deadline) {
		int64_t left = call->deadline - ad_monotonic_ns();
		if (left <= 0) {
			core_call_fail(call, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
			return;
		}
		/* The caller asks for the next deadline after this read batch
		 * (rpc_core_next_deadline); most inline calls are over by then. */
		core->deadlines_changed = true;
	}
}

static int core_on_message(const uint8_t *msg, size_t len, bool compressed, void *ctx)
{
	rpc_call *call = ctx;
	if (compressed) {
		/* We decompress nothing. A compressed message without an encoding
		 * (or "identity") is a protocol error; a real encoding is one we
		 * do not implement. */
		if (!call->encoding || strcmp(call->encoding, "identity") == 0) {
			core_call_fail(call, RPC_INTERNAL,
				       "compressed message without a grpc-encoding");
			return RPC_INTERNAL;
		}
		core_call_failf(call, RPC_UNIMPLEMENTED, "grpc-encoding %s is not supported",
				call->encoding);
		return RPC_UNIMPLEMENTED;
	}
	if (call->nmsgs > 0) {
		/* statuscodes.md: request cardinality violation. */
		core_call_fail(call, RPC_UNIMPLEMENTED,
			       "cardinality violation: more than one request message for a "
			       "non-client-streaming method");
		return RPC_UNIMPLEMENTED;
	}
	call->nmsgs++;
	ProtobufCAllocator alloc;
	rpc_arena_pb_allocator(&call->arena, &alloc);
	call->req = protobuf_c_message_unpack(call->method->request, &alloc, len, msg);
	if (!call->req) {
		core_call_failf(call, RPC_INVALID_ARGUMENT, "cannot decode %s",
				call->method->request->name);
		return RPC_INVALID_ARGUMENT;
	}
	return 0;
}

static int core_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			      const uint8_t *data, size_t len, void *user_data)
{
	(void)flags;
	rpc_core *core = user_data;
	rpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!call || call->malformed)
		return 0;
	const char *why;
	if (rpc_req_headers_data(&call->hdrs, len, false, &why) == RPC_HDR_MALFORMED) {
		core_call_reject(session, call, why);
		return 0;
	}
	if (call->finished || call->dispatched || !call->method)
		return 0;
	size_t max_recv = core->env->max_recv_msg;
	size_t before = rpc_framer_buffered(&call->fr);
	if (core->recv_buffered > CORE_RECV_BUDGET) {
		core_call_fail(call, RPC_RESOURCE_EXHAUSTED, "too much request data in flight");
		return 0;
	}
	uint32_t big = 0;
	int r = rpc_framer_feed(&call->fr, data, len, max_recv, core_on_message, call, &big);
	size_t after = rpc_framer_buffered(&call->fr);
	core->recv_buffered = core->recv_buffered - before + after;
	call->counted_recv = true;
	if (r == RPC_RESOURCE_EXHAUSTED && big)
		core_call_failf(call, RPC_RESOURCE_EXHAUSTED,
				"received message larger than max (%u vs. %zu)", big, max_recv);
	if (r != RPC_OK) {
		core->recv_buffered -= after;
		rpc_framer_reset(&call->fr);
		call->counted_recv = false;
	}
	return 0;
}

/* The request is complete: run the handler inline or hand it off. */
static void core_call_dispatch(rpc_call *call)
{
	if (rpc_framer_partial(&call->fr)) {
		core_call_fail(call, RPC_INTERNAL, "request ended inside a message");
		return;
	}
	if (call->nmsgs != 1) {
		/* As grpc-go: a stream that ends without the request is INTERNAL. */
		core_call_fail(call, RPC_INTERNAL, "cardinality violation: no request message");
		return;
	}
	call->dispatched = true;
	const rpc_method *m = call->method;
	if (m->kind == RPC_UNARY) {
		call->resp = rpc_arena_alloc(&call->arena, m->response->sizeof_message);
		protobuf_c_message_init(m->response, call->resp);
	}
	if (call->deadline && ad_monotonic_ns() >= call->deadline) {
		core_call_fail(call, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
		return;
	}
	if (m->on_loop) {
		call->inline_running = true;
		call_run(call);
		call->inline_running = false;
		void (*after)(void *) = call->after_fn;
		void *after_arg = call->after_arg;
		core_call_pump(call);
		if (after)
			after(after_arg);
		return;
	}
	call_ref(call); /* the job's */
	call->env->dispatch(call, call->env->hook_arg);
}

static int core_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
			      void *user_data)
{
	rpc_core *core = user_data;
	core->got_frame = true;
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
				core_call_reject(session, call, why);
				return 0;
			}
			core_headers_done(core, call);
		} else if (!end_stream) {
			core_call_reject(session, call, "trailers without END_STREAM");
			return 0;
		}
	}
	if (end_stream && rpc_req_headers_data(&call->hdrs, 0, true, &why) == RPC_HDR_MALFORMED) {
		core_call_reject(session, call, why);
		return 0;
	}
	if (end_stream && !call->finished && !call->dispatched)
		core_call_dispatch(call);
	return 0;
}

static int core_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
			      void *user_data)
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

static int core_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
				void *user_data)
{
	rpc_core *core = user_data;
	rpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!call)
		return 0;
	if (error_code != NGHTTP2_NO_ERROR && !call->finished) {
		/* Opened and reset before we answered: the rapid-reset pattern. */
		int64_t now = ad_monotonic_ns();
		if (now - core->reset_window_start > CORE_RESET_WINDOW_NS) {
			core->reset_window_start = now;
			core->resets = 0;
		}
		if (++core->resets > CORE_RESET_LIMIT)
			nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
	}
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	core_call_detach(call);
	return 0;
}

/* ======================================================================
 * the session
 * ====================================================================== */

int rpc_core_new(rpc_core_env *env, const char *peer, const char *identity, bool authority_any,
		 void *user, rpc_core **ret_core)
{
	rpc_core *core = ad_malloc0(sizeof(*core));
	core->env = env;
	core->user = user;
	core->peer = peer;
	core->identity = identity;
	core->authority_any = authority_any;
	nghttp2_session_callbacks *cbs;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		goto fail;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, core_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, core_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, core_on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, core_on_frame_send);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, core_on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, core_on_stream_close);
	nghttp2_option *opt;
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		goto fail;
	}
	nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
	/* gRPC does not use stream priorities: do not keep closed streams
	 * around for the priority tree (memory per connection). */
	nghttp2_option_set_no_closed_streams(opt, 1);
	/* nghttp2 would refuse a unix socket path as :authority (grpc-go sends
	 * one); the same request rules are checked in core_on_header and
	 * core_on_frame_recv instead (rpc_req_header_check). */
	nghttp2_option_set_no_http_messaging(opt, 1);
	int rv = nghttp2_session_server_new2(&core->session, cbs, core, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0)
		goto fail;
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, env->max_concurrent_streams},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)env->max_header_list},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CORE_STREAM_WINDOW},
	};
	if (nghttp2_submit_settings(core->session, NGHTTP2_FLAG_NONE, iv, 3) != 0)
		goto fail;
	nghttp2_session_set_local_window_size(core->session, NGHTTP2_FLAG_NONE, 0,
					      CORE_CONN_WINDOW);
	*ret_core = core;
	return 0;
fail:
	rpc_core_free(core);
	return -1;
}

void rpc_core_free(rpc_core *core)
{
	if (!core)
		return;
	while (core->calls)
		core_call_detach(core->calls);
	if (core->session)
		nghttp2_session_del(core->session);
	free(core->out);
	free(core);
}

void *rpc_core_user(const rpc_core *core)
{
	return core->user;
}

int rpc_core_recv(rpc_core *core, const uint8_t *data, size_t len)
{
	return nghttp2_session_mem_recv(core->session, data, len) < 0 ? -1 : 0;
}

static int core_out_append(rpc_core *core, const uint8_t *data, size_t length)
{
	size_t pending = core->out_len - core->out_off;
	if (core->out_len + length > core->out_cap) {
		if (core->out_off) {
			/* Safe while a TLS write is pending: the connection's
			 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. */
			memmove(core->out, core->out + core->out_off, pending);
			core->out_off = 0;
			core->out_len = pending;
		}
		if (core->out_len + length > core->out_cap) {
			size_t cap = core->out_cap ? core->out_cap : 16384;
			while (cap < core->out_len + length)
				cap *= 2;
			uint8_t *p = realloc(core->out, cap);
			if (!p)
				return -1;
			core->out = p;
			core->out_cap = cap;
		}
	}
	memcpy(core->out + core->out_len, data, length);
	core->out_len += length;
	return 0;
}

int rpc_core_send(rpc_core *core)
{
	while (!rpc_core_output_full(core)) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(core->session, &data);
		if (n < 0)
			return -1;
		if (n == 0)
			return 0;
		if (core_out_append(core, data, (size_t)n) != 0)
			return -1;
	}
	return 0;
}

const uint8_t *rpc_core_output(const rpc_core *core, size_t *ret_len)
{
	*ret_len = core->out_len - core->out_off;
	return core->out + core->out_off;
}

void rpc_core_output_done(rpc_core *core, size_t written)
{
	core->out_off += written;
	if (core->out_off < core->out_len)
		return;
	core->out_off = core->out_len = 0;
	if (core->out_cap > CORE_OUTBUF_KEEP) {
		free(core->out);
		core->out = NULL;
		core->out_cap = 0;
	}
}

bool rpc_core_output_full(const rpc_core *core)
{
	return core->out_len - core->out_off >= RPC_CORE_OUTBUF_MAX;
}

bool rpc_core_done(const rpc_core *core)
{
	return !nghttp2_session_want_read(core->session) &&
	       !nghttp2_session_want_write(core->session) && core->out_len == core->out_off;
}

bool rpc_core_got_frame(const rpc_core *core)
{
	return core->got_frame;
}

bool rpc_core_next_deadline(rpc_core *core, int64_t *ret_deadline)
{
	if (!core->deadlines_changed)
		return false;
	core->deadlines_changed = false;
	int64_t next = 0;
	for (rpc_call *call = core->calls; call; call = call->core_next) {
		if (call->finished || !call->deadline || (next && call->deadline >= next))
			continue;
		if (!call_status_locked(call)) /* e.g. answered inline */
			next = call->deadline;
	}
	*ret_deadline = next;
	return true;
}

void rpc_core_expire(rpc_core *core, int64_t now)
{
	for (rpc_call *call = core->calls; call; call = call->core_next) {
		if (call->finished || !call->deadline || call->deadline > now ||
		    call_status_locked(call))
			continue;
		/* Status first: a handler woken by the cancellation must not get
		 * its own CANCELLED in before DEADLINE_EXCEEDED. */
		core_call_fail(call, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
		call_cancel(call);
	}
	core->deadlines_changed = true;
}

void rpc_core_goaway(rpc_core *core)
{
	nghttp2_submit_goaway(core->session, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(core->session),
			      NGHTTP2_NO_ERROR, NULL, 0);
}
