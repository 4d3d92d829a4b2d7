/* server.c — the gRPC server of libadrpc (rpc.h): it puts together the
 * listeners (listener.c), the connections with their I/O (conn.c) around
 * the I/O-free core (core.c, call.c) and the worker pool (pool.c), and
 * runs shutdown: GOAWAY, drain, cancel what is left.
 *
 * Threading: everything that touches nghttp2, libevent or a connection runs
 * on the loop thread; handlers that are not on_loop run on the pool and
 * hand their results back through its ready list. */
#include "conn.h"
#include "listener.h"
#include "pool.h"

#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* After the last connection closed, free heap pages are returned to the
 * kernel (malloc_trim) once nothing happened for this long. */
#define SERVER_IDLE_TRIM_S 2

struct rpc_server {
	struct event_base *base;
	rpc_core_env env; /* env.shutting_down: shutdown has begun */
	rpc_listeners lis;
	rpc_conn_set conns;
	rpc_pool pool;
	unsigned drain_timeout_ms;
	struct event *drain_ev;
	struct event *trim_ev;
	void (*done_fn)(void *);
	void *done_arg;
	bool done_called;
};

static void server_check_drained(rpc_server *srv)
{
	if (!srv->conns.head && srv->drain_ev && !srv->done_called) {
		/* Report from a fresh loop iteration, never from inside a callback
		 * of a connection being freed. */
		struct timeval zero = {0, 0};
		event_add(srv->drain_ev, &zero);
	}
}

static void server_conn_closed(void *arg)
{
	rpc_server *srv = arg;
	if (!srv->conns.head && srv->trim_ev) {
		struct timeval tv = {.tv_sec = SERVER_IDLE_TRIM_S};
		evtimer_add(srv->trim_ev, &tv);
	}
	if (srv->env.shutting_down)
		server_check_drained(srv);
}

/* The connections freed their sessions and buffers, but the heap keeps
 * the pages (between live allocations glibc does not trim by itself). */
static void server_idle_trim_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_server *srv = arg;
	if (!srv->conns.head)
		malloc_trim(0);
}

static void server_accept(int fd, const struct sockaddr *sa, bool tls, void *arg)
{
	rpc_server *srv = arg;
	if (srv->env.shutting_down) {
		close(fd);
		return;
	}
	conn_set_accept(&srv->conns, fd, sa, tls);
}

static void server_dispatch(rpc_call *call, void *arg)
{
	rpc_server *srv = arg;
	pool_submit(&srv->pool, call);
}

static void server_notify(rpc_call *call, void *arg)
{
	rpc_server *srv = arg;
	pool_notify(&srv->pool, call);
}

static void server_calls_ready(rpc_call *batch, void *arg)
{
	rpc_server *srv = arg;
	conn_set_pump_ready(batch);
	if (srv->env.shutting_down)
		server_check_drained(srv);
}

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
	srv->drain_timeout_ms = cfg->drain_timeout_ms ? cfg->drain_timeout_ms : 5000;
	rpc_core_env_init(&srv->env, cfg);
	srv->env.dispatch = server_dispatch;
	srv->env.notify = server_notify;
	srv->env.hook_arg = srv;
	conn_set_init(&srv->conns, base, &srv->env, server_conn_closed, srv);
	srv->conns.max_per_peer = cfg->max_conns_per_peer;
	if (pool_init(&srv->pool, base, cfg->workers ? cfg->workers : 8, server_calls_ready, srv,
		      err) < 0)
		goto fail;
	if (listener_init(&srv->lis, base, server_accept, srv, err) < 0)
		goto fail;
	srv->trim_ev = evtimer_new(base, server_idle_trim_cb, srv);
	if (!srv->trim_ev) {
		ad_fail(err, AD_E_INTERNAL, "event_new failed");
		goto fail;
	}
	bool tls = cfg->tcp_listen && !cfg->tcp_insecure;
	if (tls && conn_set_tls(&srv->conns, cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca,
				err) < 0)
		goto fail;
	if (cfg->unix_fd > 0 ? listener_adopt(&srv->lis, cfg->unix_fd, false, false, err) < 0
			     : cfg->unix_path && listener_unix(&srv->lis, cfg->unix_path, err) < 0)
		goto fail;
	if (cfg->tcp_fd > 0
		? listener_adopt(&srv->lis, cfg->tcp_fd, true, tls, err) < 0
		: cfg->tcp_listen && listener_tcp(&srv->lis, cfg->tcp_listen, tls, err) < 0)
		goto fail;
	*ret_server = srv;
	return 0;
fail:
	rpc_server_free(srv);
	return -1;
}

int rpc_server_register(rpc_server *srv, const rpc_method *methods, size_t n, ad_error **err)
{
	return rpc_core_methods_add(&srv->env, methods, n, err);
}

int rpc_server_reload_tls(rpc_server *srv, const char *cert, const char *key,
			  const char *client_ca, ad_error **err)
{
	if (!srv->conns.ssl_ctx)
		return ad_fail(err, AD_E_PRECONDITION, "the server has no TLS listener");
	return conn_set_tls(&srv->conns, cert, key, client_ca, err);
}

uint64_t rpc_server_refused_connections(rpc_server *srv)
{
	return atomic_load(&srv->conns.refused);
}

int rpc_server_tcp_port(rpc_server *srv)
{
	return srv->lis.tcp_port;
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

static void server_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_server *srv = arg;
	/* Drained, or the drain timeout hit: cancel what is left (without
	 * coming back here from each connection's close). */
	srv->env.shutting_down = false;
	conn_set_close_all(&srv->conns);
	srv->env.shutting_down = true;
	server_done(srv);
}

void rpc_server_shutdown(rpc_server *srv, void (*done)(void *arg), void *arg)
{
	if (srv->env.shutting_down)
		return;
	srv->env.shutting_down = true;
	srv->done_fn = done;
	srv->done_arg = arg;
	listener_close(&srv->lis);
	srv->drain_ev = evtimer_new(srv->base, server_drain_cb, srv);
	struct timeval tv = {.tv_sec = srv->drain_timeout_ms / 1000,
			     .tv_usec = (srv->drain_timeout_ms % 1000) * 1000};
	evtimer_add(srv->drain_ev, &tv);
	conn_set_goaway(&srv->conns);
	server_check_drained(srv);
}

void rpc_server_free(rpc_server *srv)
{
	if (!srv)
		return;
	listener_destroy(&srv->lis);
	srv->env.shutting_down = false;
	conn_set_destroy(&srv->conns);
	pool_destroy(&srv->pool);
	if (srv->drain_ev)
		event_free(srv->drain_ev);
	if (srv->trim_ev)
		event_free(srv->trim_ev);
	rpc_core_env_free(&srv->env);
	free(srv);
}
