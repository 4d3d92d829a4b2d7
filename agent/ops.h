/* ops.h — agentd's operations glue: the metrics registry and what feeds it
 * (pods and containers from the manager, RPCs, the process), the access
 * check and instrumentation wrapped around every gRPC method, the HTTP
 * endpoint's readiness, and systemd notification with the watchdog. */
#ifndef AGENTD_OPS_H
#define AGENTD_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "base.h"
#include "config.h"
#include "pods.h"
#include "rpc.h"
#include "store.h"

struct event_base;
typedef struct agent_ops agent_ops;

typedef enum ops_phase {
	OPS_STARTING, /* /readyz 503 */
	OPS_SERVING,  /* listeners up, state reconciled: READY=1, /readyz 200 */
	OPS_DRAINING, /* SIGTERM: STOPPING=1, /readyz 503 */
} ops_phase;

/* pods, images: what the collectors read (both outlive ops). */
int ops_new(const cfg_config *cfg, mgr *pods, store *images, agent_ops **ret, ad_error **err);
/* A gRPC server whose refused connections are counted (at most 4). */
void ops_add_server(agent_ops *o, rpc_server *srv);
void ops_free(agent_ops *o);

/* Wraps every method's handler (before the table is registered): mutual-TLS
 * clients are checked against the [authz] policy (a denial is logged and
 * answered PERMISSION_DENIED naming method and role), and every call is
 * counted by method and code, timed, and shown in flight. */
void ops_instrument(agent_ops *o, rpc_method *methods, size_t n);

/* The HTTP endpoint ([metrics] listen; nothing if empty). *ret_url: its
 * http(s)://host:port, or NULL. */
int ops_http_start(agent_ops *o, char **ret_url, ad_error **err);

/* Readiness and systemd: READY=1 / STOPPING=1 and STATUS=status. */
void ops_set_phase(agent_ops *o, ops_phase phase, const char *status);

/* WATCHDOG=1 from `base`'s loop at half of WATCHDOG_USEC (nothing without
 * a watchdog). With [grpc] debug_service, SIGUSR2 stalls the loop for three
 * watchdog intervals (the test of a stuck loop). */
int ops_watchdog_start(agent_ops *o, struct event_base *base, ad_error **err);

/* SIGHUP: the new settings that apply without a restart (the authz
 * policy; the metrics endpoint's certificate, which when it does not load is
 * logged and the old one kept; the caller applies the log level and the
 * other TLS files). */
int ops_reload(agent_ops *o, const cfg_config *cfg, ad_error **err);

#endif
