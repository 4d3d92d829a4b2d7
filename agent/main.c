/* agentd: configuration, state DB, gRPC servers, signals. */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "build.h"
#include "config.h"
#include "cri.h"
#include "db.h"
#include "ops.h"
#include "pods.h"
#include "services.h"

#define EXIT_CONFIG 2

typedef struct agentd {
	cfg_config cfg;
	agent_ctx ctx;
	svc_table table;
	struct event_base *base;
	struct event *sig_term, *sig_int, *sig_hup;
	rpc_server *servers[2];
	size_t n_servers;
	size_t pending_shutdowns;
	ad_db *db;
	store *images;
	mgr *pods;
	build_service *build;
	cri_service cri;
	agent_ops *ops;
	/* Sockets passed by systemd (socket activation), from fd 3 on. */
	int listen_fds;
	/* The command line, read again on SIGHUP. */
	int argc;
	char **argv;
} agentd;

static void add_listener(agent_ctx *ctx, char *s)
{
	ctx->listeners = ad_realloc(ctx->listeners, (ctx->n_listeners + 1) * sizeof(char *));
	ctx->listeners[ctx->n_listeners++] = s;
}

/* "host:port" with the port the server actually bound (port 0 picks one). */
static char *bound_address(const char *scheme, const char *host_port, int port)
{
	const char *colon = strrchr(host_port, ':');
	int host_len = (int)(colon - host_port);
	return ad_asprintf("%s://%.*s:%d", scheme, host_len, host_port, port);
}

/* Health knows "" and each service that has methods in the table. */
static void collect_services(agent_ctx *ctx, const svc_table *t)
{
	ctx->services = ad_malloc0((t->n + 1) * sizeof(char *));
	ctx->services[ctx->n_services++] = ad_strdup("");
	for (size_t i = 0; i < t->n; i++) {
		const char *p = t->methods[i].path + 1;
		const char *slash = strchr(p, '/');
		_cleanup_free_ char *name = ad_strndup(p, (size_t)(slash - p));
		bool seen = false;
		for (size_t j = 0; j < ctx->n_services && !seen; j++)
			seen = strcmp(ctx->services[j], name) == 0;
		if (!seen)
			ctx->services[ctx->n_services++] = ad_steal_ptr(name);
	}
}

static void on_server_done(void *arg)
{
	agentd *d = arg;
	if (--d->pending_shutdowns == 0)
		event_base_loopbreak(d->base);
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
	(void)events;
	agentd *d = arg;
	if (atomic_load(&d->ctx.shutting_down)) {
		ad_info("received %s again; still draining", strsignal((int)sig));
		return;
	}
	ad_info("received %s, shutting down (drain timeout %us)", strsignal((int)sig),
		d->cfg.drain_timeout);
	ops_set_phase(d->ops, OPS_DRAINING, "draining: finishing in-flight calls");
	svc_health_shutdown(&d->ctx);
	d->pending_shutdowns = d->n_servers;
	for (size_t i = 0; i < d->n_servers; i++)
		rpc_server_shutdown(d->servers[i], on_server_done, d);
}

/* SIGHUP: the config file and command line again; what can change without
 * a restart is applied (log level, the mTLS certificates and CA, the access
 * policy, the streaming server's and the metrics endpoint's certificates,
 * registry settings; CNI config
 * lists are read per pod anyway and are checked). A config that does not
 * load or validate is refused with its error and nothing changes; a bad
 * certificate or registry file is refused with its error and only its part
 * keeps the old settings. */
static void on_reload(evutil_socket_t sig, short events, void *arg)
{
	(void)sig;
	(void)events;
	agentd *d = arg;
	cfg_config next;
	cfg_action action;
	_cleanup_error_ ad_error *err = NULL;
	cfg_init(&next);
	if (cfg_from_args(&next, d->argc, d->argv, &action, &err) < 0) {
		ad_error_log("reload refused, the running settings stay: %s", err->message);
		cfg_free(&next);
		return;
	}
	if (ops_reload(d->ops, &next, &err) < 0) {
		ad_error_log("reload refused, the running settings stay: %s", err->message);
		cfg_free(&next);
		return;
	}
	if (next.tls_listen[0] && d->n_servers &&
	    rpc_server_reload_tls(d->servers[0], next.tls_cert, next.tls_key, next.tls_client_ca,
				  &err) < 0) {
		ad_error_log("reload: TLS files refused, the old certificates stay: %s",
			     err->message);
		ad_error_free(&err);
	}
	if (d->cri.streaming && next.streaming_tls && next.tls_cert[0] &&
	    st_server_reload_tls(d->cri.streaming, next.tls_cert, next.tls_key, &err) < 0) {
		ad_error_log("reload: refused, the streaming server keeps its certificate: %s",
			     err->message);
		ad_error_free(&err);
	}
	if (agent_images_reload(&next, d->images, &err) < 0) {
		ad_error_log("reload: registry settings refused, the old ones stay: %s",
			     err->message);
		ad_error_free(&err);
	}
	/* CNI config lists are read for each pod; this is the operator's check
	 * of what the next pod gets. */
	if (mgr_network_ready(d->pods, true, &err) < 0) {
		ad_warn("reload: CNI network not ready: %s", err->message);
		ad_error_free(&err);
	}
	if (strcmp(next.tls_listen, d->cfg.tls_listen) != 0 ||
	    strcmp(next.listen, d->cfg.listen) != 0 ||
	    strcmp(next.metrics_listen, d->cfg.metrics_listen) != 0 ||
	    strcmp(next.streaming_listen, d->cfg.streaming_listen) != 0)
		ad_warn("reload: listen addresses change only with a restart");
	if (strcmp(next.cni_conf_dir, d->cfg.cni_conf_dir) != 0 ||
	    strcmp(next.cni_plugin_dirs, d->cfg.cni_plugin_dirs) != 0)
		ad_warn("reload: [cni] directories change only with a restart (the files in them "
			"are read for each pod)");
	ad_log_set_level(next.log_level);
	d->cfg.log_level = next.log_level;
	ad_info("reloaded %s (log level, TLS files, access policy, registry settings)",
		next.source);
	cfg_free(&next);
}

/* The configured TCP listener `host_port` names this socket's port (its
 * host is not compared: systemd's ListenStream= may spell it differently). */
static bool same_port(const struct sockaddr_storage *ss, const char *host_port)
{
	const char *colon = host_port[0] ? strrchr(host_port, ':') : NULL;
	if (!colon)
		return false;
	int port = ss->ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)ss)->sin_port)
		   : ss->ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)ss)->sin6_port)
					       : -1;
	return port == atoi(colon + 1);
}

/* Socket activation (deploy/agentd.socket): each socket systemd passed is
 * matched to a configured listener, the unix one by its path, a TCP one by
 * its port; that listener then uses it instead of binding. A socket that
 * matches none is an error: agentd would not answer on it. */
static int inherited_listeners(const cfg_config *c, int n, int *unix_fd, int *tls_fd, int *tcp_fd,
			       ad_error **err)
{
	for (int fd = AD_SD_LISTEN_FDS_START; fd < AD_SD_LISTEN_FDS_START + n; fd++) {
		struct sockaddr_storage ss = {0};
		socklen_t sl = sizeof(ss);
		int *slot = NULL;
		int listening = 0;
		socklen_t ll = sizeof(listening);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) == 0 && listening) {
			const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
			if (ss.ss_family == AF_UNIX && c->listen[0] &&
			    strcmp(sun->sun_path, c->listen) == 0)
				slot = unix_fd;
			else if (same_port(&ss, c->tls_listen))
				slot = tls_fd;
			else if (same_port(&ss, c->tcp_insecure_listen))
				slot = tcp_fd;
		}
		if (!slot || *slot > 0)
			return ad_fail(
			    err, AD_E_INVALID,
			    "socket activation: inherited fd %d is no listening socket of "
			    "a configured listener (listen, tls_listen, "
			    "tcp_insecure_listen)",
			    fd);
		*slot = fd;
	}
	if (n)
		ad_info("socket activation: %d listening socket%s from systemd", n,
			n == 1 ? "" : "s");
	return 0;
}

static int start_servers(agentd *d, ad_error **err)
{
	const cfg_config *c = &d->cfg;
	int unix_fd = 0, tls_fd = 0, tcp_fd = 0;
	if (inherited_listeners(c, d->listen_fds, &unix_fd, &tls_fd, &tcp_fd, err) < 0)
		return -1;
	rpc_server_config base_cfg = {
	    .max_recv_msg = c->max_recv_msg_size,
	    .max_send_msg = c->max_send_msg_size,
	    .max_concurrent_streams = c->max_concurrent_streams,
	    .workers = c->workers,
	    /* 0 would mean the library default; "no drain" is 1 ms. */
	    .drain_timeout_ms = c->drain_timeout ? c->drain_timeout * 1000 : 1,
	    .max_conns_per_peer = c->max_connections_per_peer,
	};

	/* One server for the unix socket and the mTLS port, another one for the
	 * plain-text TCP port (a server has at most one TCP listener). */
	if (c->listen[0] || c->tls_listen[0]) {
		rpc_server_config sc = base_cfg;
		sc.unix_path = c->listen[0] ? c->listen : NULL;
		sc.unix_fd = unix_fd;
		if (c->tls_listen[0]) {
			sc.tcp_fd = tls_fd;
			sc.tcp_listen = c->tls_listen;
			sc.tls_cert = c->tls_cert;
			sc.tls_key = c->tls_key;
			sc.tls_client_ca = c->tls_client_ca;
		}
		if (rpc_server_new(d->base, &sc, &d->servers[d->n_servers], err) < 0)
			return -1;
		rpc_server *srv = d->servers[d->n_servers++];
		if (c->listen[0])
			add_listener(&d->ctx, ad_asprintf("unix://%s", c->listen));
		if (c->tls_listen[0])
			add_listener(&d->ctx,
				     bound_address("tls", c->tls_listen, rpc_server_tcp_port(srv)));
	}
	if (c->tcp_insecure_listen[0]) {
		rpc_server_config sc = base_cfg;
		sc.tcp_listen = c->tcp_insecure_listen;
		sc.tcp_fd = tcp_fd;
		sc.tcp_insecure = true;
		if (rpc_server_new(d->base, &sc, &d->servers[d->n_servers], err) < 0)
			return -1;
		rpc_server *srv = d->servers[d->n_servers++];
		add_listener(&d->ctx, bound_address("tcp", c->tcp_insecure_listen,
						    rpc_server_tcp_port(srv)));
		ad_warn("listening without TLS or authentication on %s (benchmarks only)",
			d->ctx.listeners[d->ctx.n_listeners - 1]);
	}
	for (size_t i = 0; i < d->n_servers; i++) {
		if (rpc_server_register(d->servers[i], d->table.methods, d->table.n, err) < 0)
			return -1;
		ops_add_server(d->ops, d->servers[i]);
	}
	return 0;
}

static int make_dirs(const cfg_config *c, ad_error **err)
{
	if (ad_mkdir_p(c->root, 0711, err) < 0)
		return ad_error_wrap(err, "root dir");
	if (ad_mkdir_p(c->state, 0711, err) < 0)
		return ad_error_wrap(err, "state dir");
	if (c->listen[0]) {
		_cleanup_free_ char *dir = ad_strdup(c->listen);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			if (ad_mkdir_p(dir, 0755, err) < 0)
				return ad_error_wrap(err, "socket dir");
		}
	}
	return 0;
}

/* [streaming] listen is host:port or [v6]:port (checked by config.c). */
static int start_streaming(agentd *d, ad_error **err)
{
	const cfg_config *c = &d->cfg;
	if (!c->streaming_listen[0])
		return 0;
	const char *colon = strrchr(c->streaming_listen, ':');
	const char *host = c->streaming_listen;
	size_t host_len = (size_t)(colon - host);
	if (host[0] == '[') {
		host++;
		host_len -= 2;
	}
	_cleanup_free_ char *addr = ad_strndup(host, host_len);
	st_config sc = {
	    .address = addr,
	    .port = (uint16_t)atoi(colon + 1),
	    .tls_cert = c->streaming_tls ? c->tls_cert : NULL,
	    .tls_key = c->streaming_tls ? c->tls_key : NULL,
	    .token_ttl_ms = (int)c->streaming_token_ttl * 1000,
	    .idle_timeout_ms = (int)c->streaming_idle_timeout * 1000,
	    .max_sessions = (int)c->streaming_max_sessions,
	};
	/* Not one of the gRPC listeners: the server logs its URL itself. */
	return st_server_start(&sc, &cri_streaming_backend, &d->cri, &d->cri.streaming, err);
}

static int run(agentd *d)
{
	_cleanup_error_ ad_error *err = NULL;
	agent_ctx *ctx = &d->ctx;

	ctx->cfg = &d->cfg;
	ctx->started_at_ns = ad_now_ns();
	ctx->started_mono_ns = ad_monotonic_ns();
	ctx->shutdown_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	atomic_init(&ctx->shutting_down, false);
	atomic_init(&ctx->health_watchers, 0);
	if (ctx->shutdown_fd < 0) {
		ad_error_log("eventfd: %s", strerror(errno));
		return 1;
	}
	if (make_dirs(&d->cfg, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}
	_cleanup_free_ char *db_path = ad_asprintf("%s/agentd.db", d->cfg.root);
	if (ad_db_open(db_path, NULL, &d->db, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}
	if (agent_images_open(&d->cfg, &d->images, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}
	if (mgr_open(&d->cfg, d->images, &d->pods, &err) < 0) {
		ad_error_log("pods: %s", err->message);
		return 1;
	}
	/* Read once every owner of tables has migrated its own. */
	ctx->schema_version = ad_db_schema_version(d->db);
	d->cri = (cri_service){.pods = d->pods, .images = d->images};
	cri_backfill_runtime_configs(&d->cri);
	if (start_streaming(d, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}

	cri_register(&d->table, &d->cri);
	svc_agent_register(&d->table, ctx);
	svc_agent_image_register(&d->table, d->images);
	if (build_service_new(&d->cfg, d->images, d->pods, &d->build, &err) < 0) {
		ad_error_log("build: %s", err->message);
		return 1;
	}
	svc_build_register(&d->table, d->build);
	svc_health_register(&d->table, ctx);
	collect_services(ctx, &d->table);
	if (ops_new(&d->cfg, d->pods, d->images, &d->ops, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}
	ops_instrument(d->ops, d->table.methods, d->table.n);
	_cleanup_free_ char *metrics_url = NULL;
	if (ops_http_start(d->ops, &metrics_url, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}

	if (evthread_use_pthreads() < 0 || !(d->base = event_base_new())) {
		ad_error_log("cannot set up the libevent loop");
		return 1;
	}
	d->sig_term = evsignal_new(d->base, SIGTERM, on_signal, d);
	d->sig_int = evsignal_new(d->base, SIGINT, on_signal, d);
	d->sig_hup = evsignal_new(d->base, SIGHUP, on_reload, d);
	if (!d->sig_term || !d->sig_int || !d->sig_hup || evsignal_add(d->sig_term, NULL) < 0 ||
	    evsignal_add(d->sig_int, NULL) < 0 || evsignal_add(d->sig_hup, NULL) < 0) {
		ad_error_log("cannot install signal handlers");
		return 1;
	}
	if (ops_watchdog_start(d->ops, d->base, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}
	if (start_servers(d, &err) < 0) {
		ad_error_log("%s", err->message);
		return 1;
	}

	size_t len = 0;
	for (size_t i = 0; i < ctx->n_listeners; i++)
		len += strlen(ctx->listeners[i]) + 1;
	_cleanup_free_ char *where = ad_malloc0(len + 1);
	for (size_t i = 0; i < ctx->n_listeners; i++) {
		if (i)
			strcat(where, " ");
		strcat(where, ctx->listeners[i]);
	}
	ad_info("agentd %s ready on %s (root %s, state %s, schema %d%s)", AGENTD_VERSION, where,
		d->cfg.root, d->cfg.state, ctx->schema_version,
		d->cfg.debug_service ? ", debug service on" : "");
	if (metrics_url)
		ad_info("metrics on %s/metrics", metrics_url);
	_cleanup_free_ char *status = ad_asprintf("serving on %s", where);
	ops_set_phase(d->ops, OPS_SERVING, status);

	if (event_base_dispatch(d->base) < 0) {
		ad_error_log("event loop failed");
		return 1;
	}
	ad_info("agentd stopped");
	return 0;
}

static void teardown(agentd *d)
{
	for (size_t i = 0; i < d->n_servers; i++) {
		uint64_t refused = rpc_server_refused_connections(d->servers[i]);
		if (refused)
			ad_info("%" PRIu64 " connections refused (max_connections_per_peer)", refused);
		rpc_server_free(d->servers[i]);
	}
	if (d->sig_term)
		event_free(d->sig_term);
	if (d->sig_int)
		event_free(d->sig_int);
	if (d->sig_hup)
		event_free(d->sig_hup);
	/* Its HTTP thread reads the manager; its timers are on the loop. */
	ops_free(d->ops);
	if (d->base)
		event_base_free(d->base);
	/* After the servers: no handler can be using the store any more. The
	 * streaming sessions use the pod manager: they end first. */
	if (d->cri.streaming)
		st_server_stop(d->cri.streaming);
	build_service_free(d->build);
	mgr_close(d->pods);
	if (d->images)
		store_close(d->images);
	if (d->db)
		ad_db_close(d->db);
	for (size_t i = 0; i < d->ctx.n_listeners; i++)
		free(d->ctx.listeners[i]);
	free(d->ctx.listeners);
	for (size_t i = 0; i < d->ctx.n_services; i++)
		free(d->ctx.services[i]);
	free(d->ctx.services);
	if (d->ctx.shutdown_fd >= 0)
		close(d->ctx.shutdown_fd);
	svc_table_free(&d->table);
	cfg_free(&d->cfg);
	libevent_global_shutdown();
}

int main(int argc, char **argv)
{
	static agentd d = {.ctx.shutdown_fd = -1};
	ad_error *err = NULL;
	cfg_action action;

	/* A client that goes away mid-write must not kill the daemon. */
	signal(SIGPIPE, SIG_IGN);
	/* glibc gives each new thread an arena of its own (up to 8 per CPU):
	 * with dozens of worker threads their touched, fragmented pages add up.
	 * agentd's threads are not malloc-bound; two arenas are enough. */
	mallopt(M_ARENA_MAX, 2);

	/* First: close-on-exec before any child could inherit them. */
	d.listen_fds = ad_sd_listen_fds();
	cfg_init(&d.cfg);
	if (cfg_from_args(&d.cfg, argc, argv, &action, &err) < 0) {
		fprintf(stderr, "agentd: %s\n", err->message);
		ad_error_free(&err);
		cfg_free(&d.cfg);
		return EXIT_CONFIG;
	}
	if (action == CFG_HELP) {
		cfg_usage(stdout, "agentd");
		cfg_free(&d.cfg);
		return 0;
	}
	if (action == CFG_VERSION) {
		printf("agentd %s\n", AGENTD_VERSION);
		cfg_free(&d.cfg);
		return 0;
	}
	ad_log_set_level(d.cfg.log_level);
	d.argc = argc;
	d.argv = argv;
	int r = run(&d);
	teardown(&d);
	return r;
}
