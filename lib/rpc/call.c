/* call.c — a server call of libadrpc (see core.h): its lifetime, its output
 * queue and final status (under call->mu), running its handler, and the
 * rpc_call_* functions handlers use. No I/O: output reaches the stream
 * through the core (rpc_core_call_ready) once env->notify told the loop. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

rpc_call *call_new(rpc_core_env *env, int32_t stream_id, const char *peer, const char *identity,
		   bool authority_any)
{
	rpc_call *call = malloc(sizeof(*call));
	if (!call)
		return NULL;
	/* Only the header needs zeroing; the arena zeroes what it hands out. */
	memset(call, 0, offsetof(rpc_call, arena_inline));
	atomic_init(&call->refs, 1);
	atomic_init(&call->cancelled, false);
	call->env = env;
	call->stream_id = stream_id;
	call->cancel_fd = -1;
	rpc_req_headers_init(&call->hdrs, authority_any);
	pthread_mutex_init(&call->mu, NULL);
	pthread_cond_init(&call->cond, NULL);
	rpc_arena_init(&call->arena, call->arena_inline, sizeof(call->arena_inline));
	call->peer = rpc_call_strdup(call, identity ? identity : peer);
	call->identity = identity ? call->peer : NULL;
	return call;
}

static void call_chunks_free(rpc_chunk *ch)
{
	while (ch) {
		rpc_chunk *n = ch->next;
		if (ch->heap)
			free(ch);
		ch = n;
	}
}

void call_ref(rpc_call *call)
{
	atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
}

void call_unref(rpc_call *call)
{
	if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1)
		return;
	rpc_framer_reset(&call->fr);
	call_chunks_free(call->out_head);
	if (call->cancel_fd >= 0)
		close(call->cancel_fd);
	pthread_mutex_destroy(&call->mu);
	pthread_cond_destroy(&call->cond);
	rpc_arena_free(&call->arena);
	free(call);
}

void call_cancel(rpc_call *call)
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

static void call_notify(rpc_call *call)
{
	call->env->notify(call, call->env->hook_arg);
}

bool call_lock_status(rpc_call *call, rpc_code code, const char *msg)
{
	pthread_mutex_lock(&call->mu);
	if (call->status_locked) {
		pthread_mutex_unlock(&call->mu);
		return false;
	}
	call_chunks_free(call->out_head);
	call->out_head = call->out_tail = NULL;
	call->queued = 0;
	call->code = code;
	call->msg = msg;
	call->status_locked = true;
	pthread_mutex_unlock(&call->mu);
	return true;
}

bool call_status_locked(rpc_call *call)
{
	pthread_mutex_lock(&call->mu);
	bool locked = call->status_locked;
	pthread_mutex_unlock(&call->mu);
	return locked;
}

size_t call_output_read(rpc_call *call, uint8_t *buf, size_t len, bool *ret_eof,
			rpc_code *ret_code, const char **ret_msg)
{
	size_t n = 0;
	pthread_mutex_lock(&call->mu);
	while (n < len && call->out_head) {
		rpc_chunk *ch = call->out_head;
		size_t take = ch->len - ch->off;
		if (take > len - n)
			take = len - n;
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
		if (before >= CALL_QUEUE_MAX && call->queued < CALL_QUEUE_MAX)
			pthread_cond_broadcast(&call->cond);
	}
	*ret_eof = !call->out_head && call->status_locked;
	if (*ret_eof) {
		*ret_code = call->code;
		*ret_msg = call->msg;
	}
	pthread_mutex_unlock(&call->mu);
	return n;
}

bool call_output_peek(rpc_call *call, bool *ret_have, rpc_code *ret_code, const char **ret_msg)
{
	pthread_mutex_lock(&call->mu);
	*ret_have = call->out_head != NULL;
	bool locked = call->status_locked;
	*ret_code = call->code;
	*ret_msg = call->msg;
	pthread_mutex_unlock(&call->mu);
	return locked;
}

static void call_queue_locked(rpc_call *call, rpc_chunk *ch)
{
	if (call->out_tail)
		call->out_tail->next = ch;
	else
		call->out_head = ch;
	call->out_tail = ch;
	call->queued += ch->len;
}

/* The 5-byte gRPC message prefix (uncompressed) for a message of sz bytes. */
static void call_frame_prefix(uint8_t *p, size_t sz)
{
	p[0] = 0;
	p[1] = (uint8_t)(sz >> 24);
	p[2] = (uint8_t)(sz >> 16);
	p[3] = (uint8_t)(sz >> 8);
	p[4] = (uint8_t)sz;
}

void call_run(rpc_call *call)
{
	const rpc_method *m = call->method;
	size_t max_send = call->env->max_send_msg;
	rpc_code rc;
	if (atomic_load(&call->cancelled))
		rc = RPC_CANCELLED;
	else
		rc = m->handler(call, call->req, call->resp, m->userdata);

	rpc_chunk *ch = NULL;
	if (rc == RPC_OK && m->kind == RPC_UNARY) {
		size_t sz = protobuf_c_message_get_packed_size(call->resp);
		if (sz > max_send) {
			rc = rpc_call_error(call, RPC_RESOURCE_EXHAUSTED,
					    "response message of %zu bytes exceeds the limit of %zu",
					    sz, max_send);
		} else {
			ch = rpc_arena_alloc(&call->arena, sizeof(*ch) + 5 + sz);
			ch->len = 5 + sz;
			call_frame_prefix(ch->data, sz);
			protobuf_c_message_pack(call->resp, ch->data + 5);
		}
	}
	pthread_mutex_lock(&call->mu);
	if (!call->status_locked) {
		if (ch)
			call_queue_locked(call, ch);
		call->code = rc;
		call->msg = rc != RPC_OK && call->err_code == rc ? call->err_msg : NULL;
		if (rc != RPC_OK && !call->msg && rc == RPC_CANCELLED)
			call->msg = "call cancelled";
		call->status_locked = true;
	}
	pthread_mutex_unlock(&call->mu);
}

/* ======================================================================
 * inside a handler (rpc.h)
 * ====================================================================== */

rpc_code rpc_call_error(rpc_call *call, rpc_code code, const char *fmt, ...)
{
	char buf[CALL_MESSAGE_MAX];
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
	size_t max_send = call->env->max_send_msg;
	size_t sz = protobuf_c_message_get_packed_size(msg);
	if (sz > max_send) {
		/* The call ends RESOURCE_EXHAUSTED whatever the handler returns
		 * next; what was queued before still goes out first. */
		rpc_call_error(call, RPC_RESOURCE_EXHAUSTED,
			       "response message of %zu bytes exceeds the limit of %zu", sz,
			       max_send);
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
	call_frame_prefix(ch->data, sz);
	protobuf_c_message_pack(msg, ch->data + 5);

	pthread_mutex_lock(&call->mu);
	/* Flow control: wait while the client is not reading. On the loop
	 * thread we must never wait; the handler finishes before any send. */
	while (!call->inline_running && call->queued >= CALL_QUEUE_MAX &&
	       !atomic_load(&call->cancelled) && !call->status_locked)
		pthread_cond_wait(&call->cond, &call->mu);
	if (atomic_load(&call->cancelled) || call->status_locked) {
		pthread_mutex_unlock(&call->mu);
		free(ch);
		return -1;
	}
	bool first = call->out_head == NULL;
	call_queue_locked(call, ch);
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
