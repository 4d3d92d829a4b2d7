/* grpc.health.v1.Health: "" and every registered service are SERVING until
 * shutdown begins, then NOT_SERVING. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "services.h"

#define ST(x) GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__##x

static bool known_service(const agent_ctx *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->n_services; i++)
		if (strcmp(ctx->services[i], name) == 0)
			return true;
	return false;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus status_of(agent_ctx *ctx,
								      const char *name)
{
	if (!known_service(ctx, name))
		return ST(SERVICE_UNKNOWN);
	return atomic_load(&ctx->shutting_down) ? ST(NOT_SERVING) : ST(SERVING);
}

static rpc_code health_check(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	agent_ctx *ctx = userdata;
	const Grpc__Health__V1__HealthCheckRequest *rq =
	    (const Grpc__Health__V1__HealthCheckRequest *)req;
	const char *name = rq->service ? rq->service : "";
	Grpc__Health__V1__HealthCheckResponse__ServingStatus st = status_of(ctx, name);
	if (st == ST(SERVICE_UNKNOWN))
		return rpc_call_error(call, RPC_NOT_FOUND, "unknown service '%s'", name);
	((Grpc__Health__V1__HealthCheckResponse *)resp)->status = st;
	return RPC_OK;
}

static int send_status(rpc_call *call, Grpc__Health__V1__HealthCheckResponse__ServingStatus st)
{
	Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = st;
	return rpc_call_send(call, &r.base);
}

/* Sends the current status, then holds the stream open (statuses only change
 * at shutdown) until the client cancels or the server begins shutting down,
 * which is announced as NOT_SERVING. */
static rpc_code watch(rpc_call *call, agent_ctx *ctx, const char *name)
{
	Grpc__Health__V1__HealthCheckResponse__ServingStatus st = status_of(ctx, name);
	if (send_status(call, st) < 0)
		return RPC_CANCELLED;
	for (;;) {
		if (atomic_load(&ctx->shutting_down)) {
			if (st == ST(SERVING))
				(void)send_status(call, ST(NOT_SERVING));
			return rpc_call_error(call, RPC_UNAVAILABLE, "agentd is shutting down");
		}
		if (rpc_call_cancelled(call))
			return RPC_CANCELLED;
		struct pollfd fds[2] = {
		    {.fd = ctx->shutdown_fd, .events = POLLIN},
		    {.fd = rpc_call_cancel_fd(call), .events = POLLIN},
		};
		/* The timeout only bounds the wait should an fd be unusable. */
		if (poll(fds, fds[1].fd >= 0 ? 2 : 1, 1000) < 0 && errno != EINTR)
			return rpc_call_error(call, RPC_INTERNAL, "poll: %s", strerror(errno));
	}
}

static rpc_code health_watch(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	(void)resp;
	agent_ctx *ctx = userdata;
	const Grpc__Health__V1__HealthCheckRequest *rq =
	    (const Grpc__Health__V1__HealthCheckRequest *)req;
	const char *name = rq->service ? rq->service : "";
	/* A Watch occupies a worker for as long as it is open: leave at least
	 * half of them to the other calls. */
	unsigned limit = ctx->cfg->workers > 1 ? ctx->cfg->workers / 2 : 1;
	if (atomic_fetch_add(&ctx->health_watchers, 1) >= limit) {
		atomic_fetch_sub(&ctx->health_watchers, 1);
		return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED,
				      "too many health Watch streams (at most %u with %u workers)",
				      limit, ctx->cfg->workers);
	}
	rpc_code code = watch(call, ctx, name);
	atomic_fetch_sub(&ctx->health_watchers, 1);
	return code;
}

void svc_health_shutdown(agent_ctx *ctx)
{
	atomic_store(&ctx->shutting_down, true);
	uint64_t one = 1;
	if (ctx->shutdown_fd >= 0 && write(ctx->shutdown_fd, &one, sizeof(one)) < 0)
		ad_warn("health: cannot wake watchers: %s", strerror(errno));
}

void svc_health_register(svc_table *t, agent_ctx *ctx)
{
	const rpc_method methods[] = {
	    {
		.path = "/grpc.health.v1.Health/Check",
		.request = &grpc__health__v1__health_check_request__descriptor,
		.response = &grpc__health__v1__health_check_response__descriptor,
		.kind = RPC_UNARY,
		.on_loop = true,
		.handler = health_check,
		.userdata = ctx,
	    },
	    {
		.path = "/grpc.health.v1.Health/Watch",
		.request = &grpc__health__v1__health_check_request__descriptor,
		.response = &grpc__health__v1__health_check_response__descriptor,
		.kind = RPC_SERVER_STREAM,
		.on_loop = false,
		.handler = health_watch,
		.userdata = ctx,
	    },
	};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		svc_table_add(t, &methods[i]);
}
