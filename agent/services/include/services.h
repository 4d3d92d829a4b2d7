/* services.h — the one public header of agent/services: the method table
 * every service module appends its methods to (main.c registers it with
 * every server), the one ad_error -> gRPC status mapping, and the services
 * that are not CRI: grpc.health.v1, agent.v1 (Info, Debug) and agent.v1's
 * ImageService (pull with progress, load, save, import). Depends on lib rpc,
 * the store and the daemon's config only. */
#ifndef AGENTD_SERVICES_H
#define AGENTD_SERVICES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"
#include "config.h"
#include "rpc.h"
#include "store.h"

typedef struct svc_table {
	rpc_method *methods;
	size_t n, cap;
	char **owned; /* strings the table owns (paths, messages), freed with it */
	size_t n_owned, cap_owned;
} svc_table;

/* What the services read; set up by main.c before serving, then read-only
 * except for the shutdown flag. */
typedef struct agent_ctx {
	const cfg_config *cfg;
	int64_t started_at_ns;	 /* CLOCK_REALTIME at start */
	int64_t started_mono_ns; /* CLOCK_MONOTONIC at start */
	int schema_version;
	char **listeners; /* "unix:///run/agentd/agentd.sock", "tls://127.0.0.1:10250" */
	size_t n_listeners;
	/* Health: the service names that answer SERVING ("" = the whole server). */
	char **services;
	size_t n_services;
	atomic_bool shutting_down;
	atomic_uint health_watchers; /* open Watch streams (each holds a worker) */
	int shutdown_fd;	     /* eventfd, readable once shutdown began */
} agent_ctx;

void svc_table_add(svc_table *t, const rpc_method *m);
/* A copy of `s` that lives as long as the table. */
const char *svc_table_own(svc_table *t, char *s);
void svc_table_free(svc_table *t);

/* grpc.health.v1.Health (Check, Watch). */
void svc_health_register(svc_table *t, agent_ctx *ctx);
/* Marks the server NOT_SERVING and wakes Watch streams (call before
 * rpc_server_shutdown). */
void svc_health_shutdown(agent_ctx *ctx);

/* agent.v1.AgentService, and agent.v1.DebugService if configured. */
void svc_agent_register(svc_table *t, agent_ctx *ctx);

/* agent.v1.ImageService on `images` (NULL: its calls answer UNAVAILABLE). */
void svc_agent_image_register(svc_table *t, store *images);

/* The credentials a pull request gives (CRI AuthConfig, agent.v1
 * PullImageRequest; empty strings are none) into *ret; false if it gives
 * none, and the pull then reads the auth file. */
bool svc_pull_auth(store_auth *ret, const char *username, const char *password, const char *auth,
		   const char *identity_token, const char *registry_token);

/* Opens the image store under cfg->root with the [images] settings. */
int agent_images_open(const cfg_config *cfg, store **ret_store, ad_error **err);
/* SIGHUP: the registry settings of the new config ([images] certs_dir,
 * auth_file, plain-http and insecure registries, mirrors) for the pulls
 * that start from now on. The auth file must be JSON and every certs.d
 * certificate and key PEM, else the error names the file (and line) and
 * nothing changes. agentd-fetch reads both files at each pull. */
int agent_images_reload(const cfg_config *cfg, store *s, ad_error **err);

/* ---- errors ---- */
/* The gRPC code that answers an error of class `code`. */
rpc_code status_from_ad_code(ad_code code);
/* Sets the call's status from `e` (code mapped as above, message as is) and
 * returns the code, so handlers can `return status_call_error(call, e);`. */
rpc_code status_call_error(rpc_call *call, const ad_error *e);

#endif
