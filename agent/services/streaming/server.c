/* The listener: one thread accepts, each connection gets a thread of its own
 * (bounded by max_sessions), and the token store maps URLs to requests. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "st_int.h"

/* The certificate a SIGHUP loaded (st_server_reload_tls): each new TLS
 * session takes it in the context's certificate callback; before any
 * reload the context's own is used. */
typedef struct tls_identity {
	pthread_mutex_t lock;
	X509 *cert;
	EVP_PKEY *key;
	STACK_OF(X509) *chain;
} tls_identity;

struct st_server {
	st_backend backend;
	st_session_env env;
	SSL_CTX *tls;
	tls_identity identity;
	int listen_fd;
	int stop_pipe[2];
	pthread_t acceptor;
	char *base_url;
	uint16_t port;
	int max_sessions;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	int n_sessions;
};

typedef struct conn_arg {
	st_server *s;
	int fd;
} conn_arg;

static void *session_thread(void *p)
{
	conn_arg *a = p;
	st_server *s = a->s;
	st_session_run(&s->env, a->fd);
	free(a);
	pthread_mutex_lock(&s->lock);
	if (--s->n_sessions == 0)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void refuse(int fd)
{
	static const char busy[] =
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 44\r\nConnection: close\r\n\r\n"
	    "streaming: too many sessions, retry later\n\r\n";
	if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* the client is gone already */
	}
	close(fd);
}

static void *accept_thread(void *p)
{
	st_server *s = p;
	for (;;) {
		struct pollfd pf[2] = {{.fd = s->listen_fd, .events = POLLIN},
				       {.fd = s->stop_pipe[0], .events = POLLIN}};
		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			break;
		if (pf[1].revents)
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&s->lock);
		bool full = s->n_sessions >= s->max_sessions;
		if (!full)
			s->n_sessions++;
		pthread_mutex_unlock(&s->lock);
		if (full) {
			ad_log(AD_LOG_WARN, "streaming: %d sessions open, refusing another",
			       s->max_sessions);
			refuse(fd);
			continue;
		}
		conn_arg *a = ad_malloc0(sizeof(*a));
		*a = (conn_arg){.s = s, .fd = fd};
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_t t;
		/* The session thread must not take the process's signals. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		int r = pthread_create(&t, &attr, session_thread, a);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		pthread_attr_destroy(&attr);
		if (r != 0) {
			free(a);
			refuse(fd);
			pthread_mutex_lock(&s->lock);
			s->n_sessions--;
			pthread_mutex_unlock(&s->lock);
		}
	}
	return NULL;
}

static int use_reloaded_identity(SSL *ssl, void *arg)
{
	tls_identity *id = arg;
	pthread_mutex_lock(&id->lock);
	int r = !id->cert || SSL_use_cert_and_key(ssl, id->cert, id->key, id->chain, 1) == 1;
	pthread_mutex_unlock(&id->lock);
	return r;
}

static void identity_clear(tls_identity *id)
{
	X509_free(id->cert);
	EVP_PKEY_free(id->key);
	sk_X509_pop_free(id->chain, X509_free);
	id->cert = NULL;
	id->key = NULL;
	id->chain = NULL;
}

int st_server_reload_tls(st_server *s, const char *cert_file, const char *key_file, ad_error **err)
{
	if (!s->tls)
		return ad_fail(err, AD_E_PRECONDITION, "streaming: the server has no TLS");
	tls_identity next = {0};
	BIO *b = BIO_new_file(cert_file, "r");
	next.cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	next.chain = sk_X509_new_null();
	for (X509 *x; next.cert && (x = PEM_read_bio_X509(b, NULL, NULL, NULL));)
		sk_X509_push(next.chain, x);
	BIO_free(b);
	b = BIO_new_file(key_file, "r");
	next.key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!next.cert || !next.key || X509_check_private_key(next.cert, next.key) != 1) {
		char buf[256] = "not a PEM certificate and matching key";
		unsigned long e = ERR_peek_last_error();
		if (e && next.cert && next.key)
			ERR_error_string_n(e, buf, sizeof(buf));
		ERR_clear_error();
		identity_clear(&next);
		return ad_fail(err, AD_E_INVALID, "streaming: TLS certificate %s / key %s: %s",
			       cert_file, key_file, buf);
	}
	ERR_clear_error();
	pthread_mutex_lock(&s->identity.lock);
	identity_clear(&s->identity);
	s->identity.cert = next.cert;
	s->identity.key = next.key;
	s->identity.chain = next.chain;
	pthread_mutex_unlock(&s->identity.lock);
	return 0;
}

static int tls_context(st_server *s, const st_config *cfg, ad_error **err)
{
	s->tls = SSL_CTX_new(TLS_server_method());
	if (!s->tls)
		return ad_fail(err, AD_E_INTERNAL, "streaming: SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(s->tls, TLS1_2_VERSION);
	SSL_CTX_set_cert_cb(s->tls, use_reloaded_identity, &s->identity);
	if (SSL_CTX_use_certificate_chain_file(s->tls, cfg->tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(s->tls, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(s->tls) != 1) {
		char buf[256];
		ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
		ERR_clear_error();
		return ad_fail(err, AD_E_INVALID, "streaming: TLS certificate %s / key %s: %s",
			       cfg->tls_cert, cfg->tls_key, buf);
	}
	return 0;
}

static int listen_on(st_server *s, const st_config *cfg, ad_error **err)
{
	const char *addr = cfg->address && *cfg->address ? cfg->address : "127.0.0.1";
	char port[8];
	snprintf(port, sizeof(port), "%u", cfg->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	int r = getaddrinfo(addr, port, &hints, &ai);
	if (r != 0)
		return ad_fail(err, AD_E_INVALID, "streaming: address %s: %s", addr,
			       gai_strerror(r));
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return ad_error_make(err, AD_E_UNAVAILABLE, e, "streaming: listen on %s port %s",
				     addr, port);
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	char host[INET6_ADDRSTRLEN];
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		s->port = ntohs(a6->sin6_port);
		inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		s->port = ntohs(a4->sin_port);
		inet_ntop(AF_INET, &a4->sin_addr, host, sizeof(host));
	}
	const char *url_host = cfg->url_host && *cfg->url_host ? cfg->url_host : host;
	/* A wildcard address is no place to connect to. */
	if (!strcmp(url_host, "0.0.0.0"))
		url_host = "127.0.0.1";
	else if (!strcmp(url_host, "::"))
		url_host = "::1";
	bool v6 = strchr(url_host, ':') != NULL;
	s->base_url = ad_asprintf("%s://%s%s%s:%u", s->tls ? "https" : "http", v6 ? "[" : "",
				  url_host, v6 ? "]" : "", s->port);
	s->listen_fd = fd;
	return 0;
}

int st_server_start(const st_config *cfg, const st_backend *backend, void *backend_ctx,
		    st_server **ret, ad_error **err)
{
	if (!backend->exec || !backend->attach || !backend->finish || !backend->dial)
		return ad_fail(err, AD_E_INVALID, "streaming: incomplete backend");
	if (!cfg->tls_cert != !cfg->tls_key)
		return ad_fail(err, AD_E_INVALID,
			       "streaming: TLS needs both a certificate and a key");
	st_server *s = ad_malloc0(sizeof(*s));
	s->listen_fd = -1;
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	s->backend = *backend;
	s->max_sessions = cfg->max_sessions > 0 ? cfg->max_sessions : 64;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->identity.lock, NULL);
	pthread_cond_init(&s->idle, NULL);
	if ((cfg->tls_cert && tls_context(s, cfg, err) < 0) || listen_on(s, cfg, err) < 0)
		goto fail;
	if (pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "streaming: pipe");
		goto fail;
	}
	s->env = (st_session_env){
	    .backend = &s->backend,
	    .backend_ctx = backend_ctx,
	    .tokens = st_tokens_new(cfg->max_tokens > 0 ? (size_t)cfg->max_tokens : 1000,
				    cfg->token_ttl_ms > 0 ? cfg->token_ttl_ms : 60000),
	    .tls = s->tls,
	    .stop_fd = s->stop_pipe[0],
	    .idle_timeout_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : 4 * 3600 * 1000,
	    .stream_timeout_ms = cfg->stream_timeout_ms > 0 ? cfg->stream_timeout_ms : 30000,
	};
	if (pthread_create(&s->acceptor, NULL, accept_thread, s) != 0) {
		ad_fail(err, AD_E_INTERNAL, "streaming: cannot start the listener thread");
		st_tokens_free(s->env.tokens);
		goto fail;
	}
	ad_log(AD_LOG_INFO, "streaming server on %s", s->base_url);
	*ret = s;
	return 0;
fail:
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	for (int i = 0; i < 2; i++)
		if (s->stop_pipe[i] >= 0)
			close(s->stop_pipe[i]);
	if (s->tls)
		SSL_CTX_free(s->tls);
	free(s->base_url);
	identity_clear(&s->identity);
	pthread_mutex_destroy(&s->identity.lock);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->idle);
	free(s);
	return -1;
}

void st_server_stop(st_server *s)
{
	if (!s)
		return;
	/* The pipe's write end closing makes its read end readable for good:
	 * the acceptor and every session see it. */
	close(s->stop_pipe[1]);
	pthread_join(s->acceptor, NULL);
	close(s->listen_fd);
	pthread_mutex_lock(&s->lock);
	while (s->n_sessions > 0)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	close(s->stop_pipe[0]);
	st_tokens_free(s->env.tokens);
	if (s->tls)
		SSL_CTX_free(s->tls);
	free(s->base_url);
	identity_clear(&s->identity);
	pthread_mutex_destroy(&s->identity.lock);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->idle);
	free(s);
}

const char *st_server_base_url(const st_server *s)
{
	return s->base_url;
}

uint16_t st_server_port(const st_server *s)
{
	return s->port;
}

int st_request_url(st_server *s, const st_request *req, char **ret_url, ad_error **err)
{
	if (!req->target || !*req->target)
		return ad_fail(err, AD_E_INVALID, "%s is required",
			       req->kind == ST_PORTFORWARD ? "pod_sandbox_id" : "container_id");
	if (req->kind != ST_PORTFORWARD) {
		if (req->kind == ST_EXEC && (!req->cmd || !req->cmd[0]))
			return ad_fail(err, AD_E_INVALID, "cmd is required");
		if (req->tty && req->err)
			return ad_fail(err, AD_E_INVALID, "tty and stderr cannot both be true");
		if (!req->in && !req->out && !req->err)
			return ad_fail(err, AD_E_INVALID,
				       "one of stdin, stdout, or stderr must be set");
	}
	static const char *const paths[] = {"exec", "attach", "portforward"};
	char *token = NULL;
	if (st_tokens_add(s->env.tokens, st_request_copy(req), &token, err) < 0)
		return -1;
	*ret_url = ad_asprintf("%s/%s/%s", s->base_url, paths[req->kind], token);
	free(token);
	return 0;
}
