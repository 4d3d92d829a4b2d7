/* client.c — the blocking gRPC client of libadrpc (agentctl, tests): one
 * connection, an nghttp2 client session driven by a plain poll() loop. */
#include "rpc_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <pthread.h>
#include <time.h>

typedef struct rpc_ccall {
	int32_t stream_id;
	const ProtobufCMessageDescriptor *desc;
	rpc_framer fr;
	size_t max_recv;
	int http_status;
	bool have_status;
	rpc_code code;
	char *msg;
	bool closed;
	uint32_t rst_code;
	bool local_fail; /* decided here: too large, undecodable, cancelled, deadline */
	rpc_code local_code;
	char *local_msg;
	bool stop; /* RST_STREAM(CANCEL) wanted */
	/* unary */
	bool unary;
	ProtobufCMessage *resp;
	unsigned nmsgs;
	/* stream */
	rpc_stream_fn fn;
	void *userdata;
	/* request body */
	uint8_t *req;
	size_t reqlen, reqoff;
} rpc_ccall;

struct rpc_client {
	int fd;
	SSL *ssl;
	nghttp2_session *session;
	char *endpoint;
	char *authority;
	bool tls;
	size_t max_recv;
	bool dead;
	char *dead_reason;
	bool got_settings;
	rpc_ccall *cur;
};

static void ccall_local_fail(rpc_ccall *cc, rpc_code code, char *msg)
{
	if (cc->local_fail) {
		free(msg);
		return;
	}
	cc->local_fail = true;
	cc->local_code = code;
	cc->local_msg = msg;
	cc->stop = true;
}

/* ---- raw I/O ---------------------------------------------------------- */

static int remaining_ms(int64_t deadline)
{
	if (!deadline)
		return -1;
	int64_t left = (deadline - ad_monotonic_ns()) / 1000000;
	if (left < 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

static void client_kill(rpc_client *c, const char *why)
{
	if (!c->dead) {
		c->dead = true;
		c->dead_reason = ad_strdup(why);
	}
}

static int client_dead_err(rpc_client *c, ad_error **err)
{
	return ad_fail(err, AD_E_UNAVAILABLE, "connection to %s lost: %s", c->endpoint,
		       c->dead_reason ? c->dead_reason : "closed");
}

/* OpenSSL writes with plain write(): a server that goes away must give
 * EPIPE, not kill the caller's process. SIGPIPE is blocked for this thread
 * around TLS work and one it raised is consumed before unblocking. */
typedef struct sigpipe_guard {
	bool active;
	bool was_pending;
	sigset_t old;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	g->was_pending = sigismember(&pending, SIGPIPE);
	g->active = pthread_sigmask(SIG_BLOCK, &pipe, &g->old) == 0;
}

static void sigpipe_restore(sigpipe_guard *g)
{
	if (!g->active)
		return;
	if (!g->was_pending) {
		sigset_t pipe;
		sigemptyset(&pipe);
		sigaddset(&pipe, SIGPIPE);
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe, NULL, &zero) > 0)
			;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
	g->active = false;
}

/* Writes all of buf. Returns 0, or -1 (connection dead). */
static int write_all(rpc_client *c, const uint8_t *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n;
		short want = POLLOUT;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
			if (r > 0) {
				n = r;
			} else {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ)
					want = POLLIN;
				else if (e != SSL_ERROR_WANT_WRITE) {
					client_kill(c, "TLS write failed");
					return -1;
				}
				n = -1;
			}
		} else {
			n = send(c->fd, buf, len, MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				client_kill(c, strerror(errno));
				return -1;
			}
		}
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		struct pollfd p = {.fd = c->fd, .events = want};
		int t = remaining_ms(deadline);
		int pr = poll(&p, 1, t);
		if (pr == 0) {
			client_kill(c, "write timed out");
			return -1;
		}
	}
	return 0;
}

static int io_send(rpc_client *c, int64_t deadline)
{
	for (;;) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(c->session, &data);
		if (n < 0) {
			client_kill(c, nghttp2_strerror((int)n));
			return -1;
		}
		if (n == 0)
			return 0;
		if (write_all(c, data, (size_t)n, deadline) < 0)
			return -1;
	}
}

/* Waits up to timeout_ms for input and feeds it to nghttp2. Returns 1 when
 * something was read, 0 on timeout, -1 when the connection is dead. */
static int io_recv(rpc_client *c, int timeout_ms)
{
	uint8_t buf[16384];
	for (;;) {
		ssize_t n;
		short want = POLLIN;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf, sizeof(buf));
			if (r > 0) {
				n = r;
			} else {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE) {
					want = POLLOUT;
				} else if (e != SSL_ERROR_WANT_READ) {
					unsigned long le = ERR_peek_error();
					char ebuf[200] = "connection closed by peer";
					if (le)
						ERR_error_string_n(le, ebuf, sizeof(ebuf));
					client_kill(c, ebuf);
					return -1;
				}
				n = -1;
			}
		} else {
			n = recv(c->fd, buf, sizeof(buf), 0);
			if (n == 0) {
				client_kill(c, "connection closed by peer");
				return -1;
			}
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				client_kill(c, strerror(errno));
				return -1;
			}
		}
		if (n > 0) {
			ssize_t rv = nghttp2_session_mem_recv(c->session, buf, (size_t)n);
			if (rv < 0) {
				client_kill(c, nghttp2_strerror((int)rv));
				return -1;
			}
			return 1;
		}
		struct pollfd p = {.fd = c->fd, .events = want};
		int pr = poll(&p, 1, timeout_ms);
		if (pr == 0)
			return 0;
		if (pr < 0 && errno != EINTR) {
			client_kill(c, strerror(errno));
			return -1;
		}
	}
}

/* ---- nghttp2 callbacks ------------------------------------------------- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	(void)session;
	(void)flags;
	rpc_client *c = user_data;
	rpc_ccall *cc = c->cur;
	if (!cc || frame->hd.stream_id != cc->stream_id)
		return 0;
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		int st = 0;
		for (size_t i = 0; i < valuelen && i < 4; i++)
			st = st * 10 + (value[i] - '0');
		cc->http_status = st;
	} else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		long v = 0;
		bool ok = valuelen > 0 && valuelen < 4;
		for (size_t i = 0; ok && i < valuelen; i++) {
			if (value[i] < '0' || value[i] > '9')
				ok = false;
			else
				v = v * 10 + (value[i] - '0');
		}
		cc->have_status = true;
		cc->code = ok && v <= 16 ? (rpc_code)v : RPC_UNKNOWN;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		free(cc->msg);
		cc->msg = rpc_percent_decode((const char *)value, valuelen);
	}
	return 0;
}

static int on_message(const uint8_t *msg, size_t len, bool compressed, void *ctx)
{
	rpc_ccall *cc = ctx;
	if (compressed) {
		ccall_local_fail(cc, RPC_INTERNAL,
				 ad_strdup("compressed response without negotiated encoding"));
		return RPC_INTERNAL;
	}
	ProtobufCMessage *m = protobuf_c_message_unpack(cc->desc, NULL, len, msg);
	if (!m) {
		ccall_local_fail(cc, RPC_INTERNAL, ad_asprintf("cannot decode %s", cc->desc->name));
		return RPC_INTERNAL;
	}
	if (cc->unary) {
		if (cc->nmsgs++ > 0) {
			protobuf_c_message_free_unpacked(m, NULL);
			/* statuscodes.md: response cardinality violation. */
			ccall_local_fail(
			    cc, RPC_UNIMPLEMENTED,
			    ad_strdup("more than one response message for a unary call"));
			return RPC_UNIMPLEMENTED;
		}
		cc->resp = m;
		return 0;
	}
	cc->nmsgs++;
	int r = cc->fn(m, cc->userdata);
	protobuf_c_message_free_unpacked(m, NULL);
	if (r != 0) {
		ccall_local_fail(cc, RPC_CANCELLED, ad_strdup("cancelled by the caller"));
		return RPC_CANCELLED;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			 const uint8_t *data, size_t len, void *user_data)
{
	(void)session;
	(void)flags;
	rpc_client *c = user_data;
	rpc_ccall *cc = c->cur;
	if (!cc || stream_id != cc->stream_id || cc->local_fail)
		return 0;
	uint32_t big = 0;
	int r = rpc_framer_feed(&cc->fr, data, len, cc->max_recv, on_message, cc, &big);
	if (r == RPC_RESOURCE_EXHAUSTED && big)
		ccall_local_fail(cc, RPC_RESOURCE_EXHAUSTED,
				 ad_asprintf("received message larger than max (%u vs. %zu)", big,
					     cc->max_recv));
	if (r != RPC_OK)
		rpc_framer_reset(&cc->fr);
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	(void)session;
	rpc_client *c = user_data;
	if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
		c->got_settings = true;
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	(void)session;
	rpc_client *c = user_data;
	rpc_ccall *cc = c->cur;
	if (!cc || stream_id != cc->stream_id)
		return 0;
	cc->closed = true;
	cc->rst_code = error_code;
	return 0;
}

static ssize_t req_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			   uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	(void)session;
	(void)stream_id;
	(void)user_data;
	rpc_ccall *cc = source->ptr;
	size_t n = cc->reqlen - cc->reqoff;
	if (n > length)
		n = length;
	memcpy(buf, cc->req + cc->reqoff, n);
	cc->reqoff += n;
	if (cc->reqoff == cc->reqlen)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* ---- connect ----------------------------------------------------------- */

static int connect_fail(const rpc_client_config *cfg, int e, ad_error **err)
{
	ad_fail(err, AD_E_UNAVAILABLE, "cannot connect to %s: %s (is agentd running?)",
		cfg->endpoint, strerror(e));
	if (err && *err)
		(*err)->errno_value = e;
	return -1;
}

static int connect_unix(rpc_client *c, const rpc_client_config *cfg, const char *path,
			int64_t deadline, ad_error **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path))
		return ad_fail(err, AD_E_INVALID, "unix socket path too long: %s", path);
	strcpy(sun.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "socket");
	/* Non-blocking: a server whose backlog is full (hung) answers EAGAIN
	 * instead of blocking us past the connect timeout. */
	while (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || remaining_ms(deadline) == 0)
			return connect_fail(cfg, errno, err);
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	c->authority = ad_strdup("localhost");
	return 0;
}

static int connect_tcp(rpc_client *c, const rpc_client_config *cfg, const char *hostport,
		       int64_t deadline, char **ret_host, ad_error **err)
{
	_cleanup_free_ char *host = NULL;
	const char *port;
	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');
		if (!end || end[1] != ':')
			return ad_fail(err, AD_E_INVALID, "bad endpoint %s", cfg->endpoint);
		host = ad_strndup(hostport + 1, (size_t)(end - hostport - 1));
		port = end + 2;
	} else {
		const char *colon = strrchr(hostport, ':');
		if (!colon)
			return ad_fail(err, AD_E_INVALID, "bad endpoint %s (want host:port)",
				       cfg->endpoint);
		host = ad_strndup(hostport, (size_t)(colon - hostport));
		port = colon + 1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int r = getaddrinfo(host, port, &hints, &res);
	if (r != 0)
		return ad_fail(err, AD_E_UNAVAILABLE, "cannot resolve %s: %s", cfg->endpoint,
			       gai_strerror(r));
	int e = ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			e = errno;
			close(fd);
			continue;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int pr = poll(&p, 1, remaining_ms(deadline));
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (pr <= 0) {
			e = pr == 0 ? ETIMEDOUT : errno;
			close(fd);
			continue;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			e = soerr;
			close(fd);
			continue;
		}
		c->fd = fd;
		break;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		return connect_fail(cfg, e, err);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->authority = ad_strdup(hostport);
	*ret_host = ad_steal_ptr(host);
	return 0;
}

static int tls_fail(rpc_client *c, const char *what, ad_error **err)
{
	char buf[256] = "";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	if (c->ssl) {
		long vr = SSL_get_verify_result(c->ssl);
		if (vr != X509_V_OK)
			snprintf(buf, sizeof(buf), "certificate verify failed: %s",
				 X509_verify_cert_error_string(vr));
	}
	return ad_fail(err, AD_E_UNAVAILABLE, "%s %s: %s", what, c->endpoint, buf);
}

int rpc_tls_client_session(int fd, const char *ca, const char *cert, const char *key,
			   const char *name, const unsigned char *alpn, unsigned alpn_len,
			   SSL **ret_ssl, ad_error **err)
{
	SSL_CTX *t = SSL_CTX_new(TLS_client_method());
	if (!t)
		return ad_fail(err, AD_E_INTERNAL, "TLS setup failed");
	int r = 0;
	SSL_CTX_set_min_proto_version(t, TLS1_2_VERSION);
	if (ca) {
		if (SSL_CTX_load_verify_locations(t, ca, NULL) != 1)
			r = ad_fail(err, AD_E_INVALID, "cannot load CA %s", ca);
	} else {
		SSL_CTX_set_default_verify_paths(t);
	}
	if (r == 0 && cert) {
		if (SSL_CTX_use_certificate_chain_file(t, cert) != 1)
			r = ad_fail(err, AD_E_INVALID, "cannot load certificate %s", cert);
		else if (SSL_CTX_use_PrivateKey_file(t, key ? key : cert, SSL_FILETYPE_PEM) != 1)
			r = ad_fail(err, AD_E_INVALID, "cannot load key %s", key ? key : cert);
	}
	SSL_CTX_set_verify(t, SSL_VERIFY_PEER, NULL);
	if (alpn)
		SSL_CTX_set_alpn_protos(t, alpn, alpn_len);
	SSL_CTX_set_mode(t, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL *ssl = r == 0 ? SSL_new(t) : NULL;
	SSL_CTX_free(t); /* the session holds its own reference */
	if (r == 0 && !ssl)
		r = ad_fail(err, AD_E_INTERNAL, "TLS setup failed");
	ERR_clear_error();
	if (r < 0)
		return r;
	struct in6_addr a6;
	struct in_addr a4;
	if (inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
	} else {
		SSL_set_tlsext_host_name(ssl, name);
		SSL_set1_host(ssl, name);
	}
	SSL_set_fd(ssl, fd);
	*ret_ssl = ssl;
	return 0;
}

static int tls_start(rpc_client *c, const rpc_client_config *cfg, const char *host,
		     int64_t deadline, ad_error **err)
{
	static const unsigned char alpn[] = "\x02h2";
	if (rpc_tls_client_session(c->fd, cfg->tls_ca, cfg->tls_cert, cfg->tls_key,
				   cfg->tls_server_name ? cfg->tls_server_name : host, alpn, 3,
				   &c->ssl, err) < 0)
		return -1;
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(c->ssl);
		if (r == 1)
			break;
		int e = SSL_get_error(c->ssl, r);
		short ev;
		if (e == SSL_ERROR_WANT_READ)
			ev = POLLIN;
		else if (e == SSL_ERROR_WANT_WRITE)
			ev = POLLOUT;
		else
			return tls_fail(c, "TLS handshake with", err);
		struct pollfd p = {.fd = c->fd, .events = ev};
		if (poll(&p, 1, remaining_ms(deadline)) <= 0)
			return ad_fail(err, AD_E_UNAVAILABLE, "TLS handshake with %s timed out",
				       cfg->endpoint);
	}
	const unsigned char *sel = NULL;
	unsigned sellen = 0;
	SSL_get0_alpn_selected(c->ssl, &sel, &sellen);
	if (!(sellen == 2 && memcmp(sel, "h2", 2) == 0))
		return ad_fail(err, AD_E_UNAVAILABLE, "%s did not negotiate HTTP/2 (ALPN h2)",
			       cfg->endpoint);
	return 0;
}

static int client_connect(const rpc_client_config *cfg, rpc_client **ret_client, ad_error **err)
{
	if (!cfg->endpoint)
		return ad_fail(err, AD_E_INVALID, "no endpoint");
	rpc_client *c = ad_malloc0(sizeof(*c));
	c->fd = -1;
	c->endpoint = ad_strdup(cfg->endpoint);
	c->max_recv = cfg->max_recv_msg ? cfg->max_recv_msg : RPC_DEFAULT_MAX_MSG;
	unsigned cto = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 5000;
	int64_t deadline = ad_monotonic_ns() + (int64_t)cto * 1000000;
	const char *ep = cfg->endpoint;
	int r;
	_cleanup_free_ char *host = NULL;
	if (strncmp(ep, "unix://", 7) == 0) {
		r = connect_unix(c, cfg, ep + 7, deadline, err);
	} else if (ep[0] == '/') {
		r = connect_unix(c, cfg, ep, deadline, err);
	} else if (strncmp(ep, "tcp://", 6) == 0) {
		r = connect_tcp(c, cfg, ep + 6, deadline, &host, err);
	} else if (strncmp(ep, "tls://", 6) == 0) {
		c->tls = true;
		r = connect_tcp(c, cfg, ep + 6, deadline, &host, err);
		if (r == 0)
			r = tls_start(c, cfg, host, deadline, err);
	} else {
		r = ad_fail(err, AD_E_INVALID,
			    "bad endpoint %s (want unix:///path, /path, tls://host:port or "
			    "tcp://host:port)",
			    ep);
	}
	if (r < 0) {
		rpc_client_free(c);
		return -1;
	}

	nghttp2_session_callbacks *cbs;
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	r = nghttp2_session_client_new(&c->session, cbs, c);
	nghttp2_session_callbacks_del(cbs);
	if (r != 0) {
		rpc_client_free(c);
		return ad_fail(err, AD_E_INTERNAL, "nghttp2_session_client_new: %s",
			       nghttp2_strerror(r));
	}
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
	};
	nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
	nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 4 << 20);
	/* Wait for the server's SETTINGS: proves it speaks HTTP/2 and, with
	 * TLS 1.3, that it accepted our client certificate. */
	while (!c->dead && !c->got_settings) {
		if (io_send(c, deadline) < 0)
			break;
		int t = remaining_ms(deadline);
		if (t == 0) {
			client_kill(c, "timed out waiting for the HTTP/2 handshake");
			break;
		}
		if (io_recv(c, t) < 0)
			break;
	}
	if (c->dead) {
		ad_fail(err, AD_E_UNAVAILABLE, "cannot connect to %s: %s", c->endpoint,
			c->dead_reason);
		rpc_client_free(c);
		return -1;
	}
	*ret_client = c;
	return 0;
}

int rpc_client_connect(const rpc_client_config *cfg, rpc_client **ret_client, ad_error **err)
{
	sigpipe_guard g;
	sigpipe_block(&g);
	int r = client_connect(cfg, ret_client, err);
	sigpipe_restore(&g);
	return r;
}

void rpc_client_free(rpc_client *c)
{
	if (!c)
		return;
	sigpipe_guard g = {0};
	if (c->ssl)
		sigpipe_block(&g);
	if (c->session && !c->dead) {
		nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
		io_send(c, ad_monotonic_ns() + 100000000LL);
	}
	if (c->session)
		nghttp2_session_del(c->session);
	if (c->ssl) {
		if (!c->dead)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->endpoint);
	free(c->authority);
	free(c->dead_reason);
	free(c);
	sigpipe_restore(&g);
}

void rpc_status_clear(rpc_status *st)
{
	if (!st)
		return;
	free(st->message);
	st->message = NULL;
	st->code = RPC_OK;
}

/* ---- calls ------------------------------------------------------------- */

static rpc_code code_from_rst(uint32_t rst)
{
	switch (rst) {
	case NGHTTP2_REFUSED_STREAM:
		return RPC_UNAVAILABLE;
	case NGHTTP2_CANCEL:
		return RPC_CANCELLED;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		return RPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY:
		return RPC_PERMISSION_DENIED;
	default:
		return RPC_INTERNAL;
	}
}

static int run_call_io(rpc_client *c, rpc_ccall *cc, const char *path, const ProtobufCMessage *req,
		       unsigned timeout_ms, rpc_status *st, ad_error **err);

static int run_call(rpc_client *c, rpc_ccall *cc, const char *path, const ProtobufCMessage *req,
		    unsigned timeout_ms, rpc_status *st, ad_error **err)
{
	sigpipe_guard g = {0};
	if (c->ssl)
		sigpipe_block(&g);
	int r = run_call_io(c, cc, path, req, timeout_ms, st, err);
	sigpipe_restore(&g);
	return r;
}

static int run_call_io(rpc_client *c, rpc_ccall *cc, const char *path, const ProtobufCMessage *req,
		       unsigned timeout_ms, rpc_status *st, ad_error **err)
{
	if (!c->dead && !nghttp2_session_want_read(c->session) &&
	    !nghttp2_session_want_write(c->session))
		client_kill(c, "the server closed the connection (GOAWAY)");
	if (c->dead)
		return client_dead_err(c, err);
	size_t sz = protobuf_c_message_get_packed_size(req);
	if (sz > UINT32_MAX)
		return ad_fail(err, AD_E_RESOURCE, "request too large");
	cc->reqlen = 5 + sz;
	cc->req = malloc(cc->reqlen);
	if (!cc->req)
		return ad_fail(err, AD_E_RESOURCE, "out of memory");
	cc->req[0] = 0;
	cc->req[1] = (uint8_t)(sz >> 24);
	cc->req[2] = (uint8_t)(sz >> 16);
	cc->req[3] = (uint8_t)(sz >> 8);
	cc->req[4] = (uint8_t)sz;
	protobuf_c_message_pack(req, cc->req + 5);
	cc->max_recv = c->max_recv;

	char tmo[16];
	int64_t deadline = 0;
	nghttp2_nv nv[8];
	size_t n = 0;
#define NV(k, v)                                                                                   \
	nv[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v),               \
			       NGHTTP2_NV_FLAG_NONE}
	NV(":method", "POST");
	NV(":scheme", c->tls ? "https" : "http");
	NV(":path", path);
	NV(":authority", c->authority);
	NV("content-type", "application/grpc");
	NV("te", "trailers");
	NV("user-agent", "agentd-rpc/" AGENTD_VERSION);
	if (timeout_ms) {
		rpc_timeout_format(timeout_ms, tmo);
		NV("grpc-timeout", tmo);
		deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	}
#undef NV
	nghttp2_data_provider prd = {.source.ptr = cc, .read_callback = req_read_cb};
	cc->stream_id = nghttp2_submit_request(c->session, NULL, nv, n, &prd, cc);
	if (cc->stream_id < 0)
		return ad_fail(err, AD_E_UNAVAILABLE, "cannot start a call on %s: %s", c->endpoint,
			       nghttp2_strerror(cc->stream_id));
	c->cur = cc;
	bool sent_rst = false;
	int ret = 0;
	while (!cc->closed) {
		if (cc->stop && !sent_rst) {
			nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, cc->stream_id,
						  NGHTTP2_CANCEL);
			sent_rst = true;
		}
		if (io_send(c, deadline ? deadline + 1000000000LL : 0) < 0) {
			ret = client_dead_err(c, err);
			break;
		}
		if (cc->closed)
			break;
		int t = remaining_ms(deadline);
		if (deadline && t == 0) {
			ccall_local_fail(cc, RPC_DEADLINE_EXCEEDED, ad_strdup("Deadline Exceeded"));
			continue;
		}
		if (io_recv(c, t) < 0) {
			ret = client_dead_err(c, err);
			break;
		}
	}
	c->cur = NULL;
	if (ret < 0)
		return -1;

	if (cc->local_fail) {
		st->code = cc->local_code;
		st->message = ad_steal_ptr(cc->local_msg);
	} else if (cc->have_status) {
		st->code = cc->code;
		st->message = ad_steal_ptr(cc->msg);
	} else if (cc->http_status && cc->http_status != 200) {
		st->code = rpc_code_from_http(cc->http_status);
		st->message = ad_asprintf("HTTP status %d", cc->http_status);
	} else if (cc->rst_code != NGHTTP2_NO_ERROR) {
		st->code = code_from_rst(cc->rst_code);
		st->message =
		    ad_asprintf("stream reset by the server (HTTP/2 error %u)", cc->rst_code);
	} else {
		st->code = RPC_INTERNAL;
		st->message = ad_strdup("stream ended without grpc-status");
	}
	if (st->code == RPC_OK && cc->unary && cc->nmsgs != 1) {
		/* statuscodes.md: response cardinality violation. */
		free(st->message);
		st->code = RPC_UNIMPLEMENTED;
		st->message = ad_strdup("no response message for a unary call");
	}
	return 0;
}

static void ccall_clear(rpc_ccall *cc)
{
	rpc_framer_reset(&cc->fr);
	free(cc->msg);
	free(cc->local_msg);
	free(cc->req);
	if (cc->resp)
		protobuf_c_message_free_unpacked(cc->resp, NULL);
}

int rpc_client_unary(rpc_client *c, const char *path, const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *resp_desc, unsigned timeout_ms,
		     ProtobufCMessage **ret_resp, rpc_status *ret_status, ad_error **err)
{
	rpc_ccall cc = {.desc = resp_desc, .unary = true};
	rpc_status st = {0};
	int r = run_call(c, &cc, path, req, timeout_ms, &st, err);
	if (r == 0) {
		if (st.code == RPC_OK)
			*ret_resp = ad_steal_ptr(cc.resp);
		*ret_status = st;
	}
	ccall_clear(&cc);
	return r;
}

int rpc_client_stream(rpc_client *c, const char *path, const ProtobufCMessage *req,
		      const ProtobufCMessageDescriptor *resp_desc, unsigned timeout_ms,
		      rpc_stream_fn on_msg, void *userdata, rpc_status *ret_status, ad_error **err)
{
	rpc_ccall cc = {.desc = resp_desc, .fn = on_msg, .userdata = userdata};
	rpc_status st = {0};
	int r = run_call(c, &cc, path, req, timeout_ms, &st, err);
	if (r == 0)
		*ret_status = st;
	ccall_clear(&cc);
	return r;
}
