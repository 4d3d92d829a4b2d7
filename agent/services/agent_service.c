/* agent.v1.AgentService (Info) and agent.v1.DebugService (Echo, StreamEcho:
 * transport tests and benchmarks; registered only with debug_service on). */
#include <errno.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent/v1/agent.pb-c.h"
#include "services.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define ECHO_MAX_REPEAT 100000
#define ECHO_MAX_DELAY_MS (3600 * 1000)
#define SLEEP_STEP_MS 10

/* "v2" only on a unified hierarchy; hybrid hosts (v1 controllers with a v2
 * mount at /sys/fs/cgroup/unified) count as v1. */
static const char *cgroup_version(void)
{
	struct statfs sfs;
	if (statfs("/sys/fs/cgroup", &sfs) == 0 && (unsigned long)sfs.f_type == CGROUP2_SUPER_MAGIC)
		return "v2";
	return "v1";
}

static rpc_code agent_info(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	(void)req;
	agent_ctx *ctx = userdata;
	Agent__V1__InfoResponse *r = (Agent__V1__InfoResponse *)resp;
	struct utsname uts;
	char host[256] = "";

	r->version = rpc_call_strdup(call, AGENTD_VERSION);
	r->api_version = rpc_call_strdup(call, "v1");
	r->root_dir = rpc_call_strdup(call, ctx->cfg->root);
	r->state_dir = rpc_call_strdup(call, ctx->cfg->state);
	r->cgroup_version = rpc_call_strdup(call, cgroup_version());
	r->kernel_version = rpc_call_strdup(call, uname(&uts) == 0 ? uts.release : "");
	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = '\0';
	r->hostname = rpc_call_strdup(call, host);
	r->started_at = ctx->started_at_ns;
	r->uptime_seconds = (ad_monotonic_ns() - ctx->started_mono_ns) / 1000000000;
	r->pid = (int32_t)getpid();
	r->n_listeners = ctx->n_listeners;
	r->listeners = rpc_call_alloc(call, sizeof(char *) * (ctx->n_listeners + 1));
	for (size_t i = 0; i < ctx->n_listeners; i++)
		r->listeners[i] = rpc_call_strdup(call, ctx->listeners[i]);
	r->schema_version = ctx->schema_version;
	return RPC_OK;
}

/* Sleeps `ms` in small steps; false if the call was cancelled meanwhile. */
static bool sleep_cancellable(rpc_call *call, int ms)
{
	int64_t end = ad_monotonic_ns() + (int64_t)ms * 1000000;
	for (;;) {
		if (rpc_call_cancelled(call))
			return false;
		int64_t left = end - ad_monotonic_ns();
		if (left <= 0)
			return true;
		int64_t step = left < SLEEP_STEP_MS * 1000000 ? left : SLEEP_STEP_MS * 1000000;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step};
		nanosleep(&ts, NULL);
	}
}

static rpc_code cancelled_code(rpc_call *call)
{
	int64_t dl = rpc_call_deadline(call);
	if (dl && ad_monotonic_ns() >= dl)
		return rpc_call_error(call, RPC_DEADLINE_EXCEEDED, "deadline exceeded");
	return rpc_call_error(call, RPC_CANCELLED, "call cancelled");
}

/* Checks an Echo request and the size of the reply payload it asks for. */
static rpc_code echo_check(rpc_call *call, agent_ctx *ctx, const Agent__V1__EchoRequest *rq,
			   size_t *ret_len)
{
	if (rq->delay_ms < 0 || rq->delay_ms > ECHO_MAX_DELAY_MS)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "delay_ms %d out of range (0 to %d)", rq->delay_ms,
				      ECHO_MAX_DELAY_MS);
	if (rq->response_bytes < 0)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "response_bytes %d is negative",
				      rq->response_bytes);
	size_t len = rq->payload.len + (size_t)rq->response_bytes;
	if (len > ctx->cfg->max_send_msg_size)
		return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED,
				      "reply payload of %zu bytes exceeds max_send_msg_size (%zu)",
				      len, ctx->cfg->max_send_msg_size);
	*ret_len = len;
	return RPC_OK;
}

/* The reply payload: the request's payload followed by response_bytes of filler. */
static void echo_fill(uint8_t *buf, const Agent__V1__EchoRequest *rq)
{
	if (rq->payload.len)
		memcpy(buf, rq->payload.data, rq->payload.len);
	memset(buf + rq->payload.len, 'x', (size_t)rq->response_bytes);
}

static rpc_code debug_echo(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	agent_ctx *ctx = userdata;
	const Agent__V1__EchoRequest *rq = (const Agent__V1__EchoRequest *)req;
	Agent__V1__EchoResponse *r = (Agent__V1__EchoResponse *)resp;
	size_t len = 0;
	rpc_code code = echo_check(call, ctx, rq, &len);
	if (code != RPC_OK)
		return code;
	if (rq->delay_ms > 0 && !sleep_cancellable(call, rq->delay_ms))
		return cancelled_code(call);
	r->message = rpc_call_strdup(call, rq->message ? rq->message : "");
	r->index = 0;
	if (len) {
		r->payload.data = rpc_call_alloc(call, len);
		r->payload.len = len;
		echo_fill(r->payload.data, rq);
	}
	return RPC_OK;
}

static rpc_code debug_stream_echo(rpc_call *call, const ProtobufCMessage *req,
				  ProtobufCMessage *resp, void *userdata)
{
	(void)resp;
	agent_ctx *ctx = userdata;
	const Agent__V1__EchoRequest *rq = (const Agent__V1__EchoRequest *)req;
	size_t len = 0;
	rpc_code code = echo_check(call, ctx, rq, &len);
	if (code != RPC_OK)
		return code;
	if (rq->repeat < 0 || rq->repeat > ECHO_MAX_REPEAT)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "repeat %d out of range (0 to %d)", rq->repeat,
				      ECHO_MAX_REPEAT);
	_cleanup_free_ uint8_t *buf = len ? ad_malloc0(len) : NULL;
	if (len)
		echo_fill(buf, rq);
	Agent__V1__EchoResponse r = AGENT__V1__ECHO_RESPONSE__INIT;
	r.message = rq->message ? rq->message : (char *)"";
	r.payload.data = buf;
	r.payload.len = len;
	for (int i = 0; i < rq->repeat; i++) {
		if (rq->delay_ms > 0 && !sleep_cancellable(call, rq->delay_ms))
			return cancelled_code(call);
		r.index = i;
		if (rpc_call_send(call, &r.base) < 0)
			return cancelled_code(call);
	}
	return RPC_OK;
}

void svc_agent_register(svc_table *t, agent_ctx *ctx)
{
	const rpc_method info = {
	    .path = "/agent.v1.AgentService/Info",
	    .request = &agent__v1__info_request__descriptor,
	    .response = &agent__v1__info_response__descriptor,
	    .kind = RPC_UNARY,
	    .on_loop = false, /* statfs, uname: system calls that may block */
	    .handler = agent_info,
	    .userdata = ctx,
	};
	svc_table_add(t, &info);
	if (!ctx->cfg->debug_service)
		return;
	const rpc_method debug[] = {
	    {
		.path = "/agent.v1.DebugService/Echo",
		.request = &agent__v1__echo_request__descriptor,
		.response = &agent__v1__echo_response__descriptor,
		.kind = RPC_UNARY,
		.on_loop = false,
		.handler = debug_echo,
		.userdata = ctx,
	    },
	    {
		.path = "/agent.v1.DebugService/StreamEcho",
		.request = &agent__v1__echo_request__descriptor,
		.response = &agent__v1__echo_response__descriptor,
		.kind = RPC_SERVER_STREAM,
		.on_loop = false,
		.handler = debug_stream_echo,
		.userdata = ctx,
	    },
	};
	for (size_t i = 0; i < sizeof(debug) / sizeof(debug[0]); i++)
		svc_table_add(t, &debug[i]);
}
