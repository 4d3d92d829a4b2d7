/* The HTTP endpoint: /metrics, /healthz, /readyz on libevent's evhttp, with
 * an event loop and thread of its own so that collecting (cgroup reads for
 * every container) never holds up the gRPC loop. Optional HTTPS through
 * libevent_openssl. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "metrics.h"
#include "metrics_int.h"

typedef struct ready_check {
	char *name;
	metrics_ready_fn fn;
	void *arg;
} ready_check;

struct metrics_http {
	struct event_base *base;
	struct evhttp *http;
	SSL_CTX *ssl; /* swapped by a reload under ssl_lock; sessions hold their own reference */
	pthread_mutex_t ssl_lock;
	metrics_registry *reg;
	ready_check *checks;
	size_t n_checks;
	int port;
	pthread_t thread;
	bool started;
	/* Activated by metrics_http_free from another thread: unlike a bare
	 * event_base_loopbreak (whose flag event_base_loop clears on entry), an
	 * active event waits for a loop that has not started yet. */
	struct event *stop_ev;
};

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add(b, text, strlen(text));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; charset=utf-8");
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static bool method_ok(struct evhttp_request *req)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
		return true;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	reply_text(req, 405, "Method Not Allowed", "only GET and HEAD\n");
	return false;
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	metrics_http *h = arg;
	if (!method_ok(req))
		return;
	const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
	metrics_format f = metrics_format_from_accept(accept);
	metrics_out *o = metrics_out_new(f);
	metrics_registry_write(h->reg, o);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  metrics_content_type(f));
	evhttp_send_reply(req, HTTP_OK, "OK", metrics_out_buffer(o));
	metrics_out_free(o);
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (method_ok(req))
		reply_text(req, HTTP_OK, "OK", "ok\n");
}

static void on_readyz(struct evhttp_request *req, void *arg)
{
	metrics_http *h = arg;
	if (!method_ok(req))
		return;
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	bool ready = true;
	for (size_t i = 0; i < h->n_checks; i++) {
		char why[256] = "";
		if (h->checks[i].fn(h->checks[i].arg, why, sizeof(why)))
			continue;
		ready = false;
		evbuffer_add_printf(b, "%s: %s\n", h->checks[i].name, why[0] ? why : "not ready");
	}
	if (ready)
		evbuffer_add(b, "ok\n", 3);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; charset=utf-8");
	evhttp_send_reply(req, ready ? HTTP_OK : 503, ready ? "OK" : "Service Unavailable", b);
	evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	reply_text(req, HTTP_NOTFOUND, "Not Found", "not found; try /metrics, /healthz, /readyz\n");
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
	metrics_http *h = arg;
	pthread_mutex_lock(&h->ssl_lock);
	SSL *ssl = SSL_new(h->ssl);
	pthread_mutex_unlock(&h->ssl_lock);
	if (!ssl)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static SSL_CTX *tls_context(const char *cert, const char *key, ad_error **err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ad_fail(err, AD_E_INTERNAL, "metrics: cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		char msg[256];
		ERR_error_string_n(ERR_get_error(), msg, sizeof(msg));
		ERR_clear_error();
		SSL_CTX_free(ctx);
		ad_fail(err, AD_E_INVALID, "metrics: TLS certificate %s / key %s: %s", cert, key,
			msg);
		return NULL;
	}
	return ctx;
}

static int tls_setup(metrics_http *h, const metrics_http_config *cfg, ad_error **err)
{
	if (!cfg->tls_cert || !cfg->tls_cert[0])
		return 0;
	h->ssl = tls_context(cfg->tls_cert, cfg->tls_key, err);
	if (!h->ssl)
		return -1;
	evhttp_set_bevcb(h->http, tls_bev, h);
	return 0;
}

int metrics_http_reload_tls(metrics_http *h, const char *cert, const char *key, ad_error **err)
{
	if (!h->ssl)
		return ad_fail(err, AD_E_PRECONDITION, "metrics: the endpoint has no TLS");
	SSL_CTX *next = tls_context(cert, key, err);
	if (!next)
		return -1;
	pthread_mutex_lock(&h->ssl_lock);
	SSL_CTX *old = h->ssl;
	h->ssl = next;
	pthread_mutex_unlock(&h->ssl_lock);
	SSL_CTX_free(old);
	return 0;
}

/* "host:port" or "[v6]:port" into its parts. */
static int split_host_port(const char *listen, char **ret_host, uint16_t *ret_port, ad_error **err)
{
	const char *colon = strrchr(listen, ':');
	if (!colon || colon == listen || !colon[1])
		return ad_fail(err, AD_E_INVALID, "metrics listen %s: want host:port", listen);
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port > 65535)
		return ad_fail(err, AD_E_INVALID, "metrics listen %s: bad port", listen);
	const char *host = listen;
	size_t len = (size_t)(colon - listen);
	if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
		host++;
		len -= 2;
	}
	*ret_host = ad_strndup(host, len);
	*ret_port = (uint16_t)port;
	return 0;
}

int metrics_http_new(const metrics_http_config *cfg, metrics_registry *reg, metrics_http **ret,
		     ad_error **err)
{
	_cleanup_free_ char *host = NULL;
	uint16_t port = 0;
	if (split_host_port(cfg->listen, &host, &port, err) < 0)
		return -1;
	/* Stopping from another thread needs libevent's locking. */
	if (evthread_use_pthreads() < 0)
		return ad_fail(err, AD_E_INTERNAL, "metrics: libevent threads");
	metrics_http *h = ad_malloc0(sizeof(*h));
	pthread_mutex_init(&h->ssl_lock, NULL);
	h->reg = reg;
	h->port = -1;
	h->base = event_base_new();
	h->http = h->base ? evhttp_new(h->base) : NULL;
	if (!h->http) {
		metrics_http_free(h);
		return ad_fail(err, AD_E_INTERNAL, "metrics: cannot set up libevent's HTTP server");
	}
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
						EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_timeout(h->http, 30);
	evhttp_set_max_headers_size(h->http, 16384);
	evhttp_set_max_body_size(h->http, 0);
	evhttp_set_cb(h->http, "/metrics", on_metrics, h);
	evhttp_set_cb(h->http, "/healthz", on_healthz, h);
	evhttp_set_cb(h->http, "/readyz", on_readyz, h);
	evhttp_set_gencb(h->http, on_other, h);
	if (tls_setup(h, cfg, err) < 0) {
		metrics_http_free(h);
		return -1;
	}
	struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(h->http, host, port);
	if (!bound) {
		int e = errno;
		metrics_http_free(h);
		errno = e;
		return ad_fail_errno(err, AD_E_UNAVAILABLE, "metrics: cannot listen on %s",
				     cfg->listen);
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) == 0)
		h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	*ret = h;
	return 0;
}

void metrics_http_add_ready(metrics_http *h, const char *name, metrics_ready_fn fn, void *arg)
{
	h->checks = ad_realloc(h->checks, (h->n_checks + 1) * sizeof(ready_check));
	h->checks[h->n_checks++] = (ready_check){ad_strdup(name), fn, arg};
}

int metrics_http_port(const metrics_http *h)
{
	return h->port;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

static void *serve(void *arg)
{
	metrics_http *h = arg;
	event_base_loop(h->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

int metrics_http_start(metrics_http *h, ad_error **err)
{
	h->stop_ev = event_new(h->base, -1, 0, on_stop, h->base);
	if (!h->stop_ev)
		return ad_fail(err, AD_E_INTERNAL, "metrics: event_new");
	int r = pthread_create(&h->thread, NULL, serve, h);
	if (r != 0) {
		errno = r;
		return ad_fail_errno(err, AD_E_INTERNAL, "metrics: thread");
	}
	h->started = true;
	return 0;
}

void metrics_http_free(metrics_http *h)
{
	if (!h)
		return;
	if (h->started) {
		event_active(h->stop_ev, EV_READ, 0);
		pthread_join(h->thread, NULL);
	}
	if (h->stop_ev)
		event_free(h->stop_ev);
	if (h->http)
		evhttp_free(h->http);
	if (h->base)
		event_base_free(h->base);
	if (h->ssl)
		SSL_CTX_free(h->ssl);
	pthread_mutex_destroy(&h->ssl_lock);
	for (size_t i = 0; i < h->n_checks; i++)
		free(h->checks[i].name);
	free(h->checks);
	free(h);
}
