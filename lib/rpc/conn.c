/* conn.c — libadrpc's server connections (see conn.h): socket and TLS I/O
 * without bufferevents. Each connection has a persistent read event and a
 * write event armed only while the socket is full. All input of a readiness
 * event is fed to the core before anything is sent; the output of that batch
 * is then written at once (one TLS record and one write() for many
 * responses). The connection also keeps the core's timers: the preface
 * timeout and the calls' deadlines. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <event2/event.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Bytes read per read() / SSL_read() (which returns at most one 16 KiB
 * record) into the shared input buffer, and at most this many such reads
 * per readiness event (fairness between connections). */
#define CONN_READ_CHUNK (16u << 10)
#define CONN_READS_PER_EVENT 16
#define CONN_PREFACE_TIMEOUT_S 10

struct rpc_conn {
	rpc_conn_set *set;
	rpc_conn *prev, *next;
	int fd;
	SSL *ssl;		 /* NULL for h2c */
	struct event *rev, *wev; /* readable (persistent, unless paused); writable (while blocked) */
	struct event *preface_ev;
	struct event *deadline_ev; /* the earliest deadline of the core's calls */
	rpc_core *core;		   /* NULL until the TLS handshake is done */
	char peer[INET6_ADDRSTRLEN + 16];
	char peer_key[INET6_ADDRSTRLEN + 8]; /* address, or "uid N": whom max_per_peer counts */
	char *identity;
	rpc_conn *flush_next; /* in a batch of connections to flush (conn_set_pump_ready) */
	bool flush_listed;
	bool unix_peer;	       /* any :authority is accepted (grpc-go sends the socket path) */
	bool handshaking;      /* TLS handshake in progress */
	bool write_armed;      /* wev is pending */
	bool read_wants_write; /* SSL_read asked for writability */
	bool read_paused;
};

static void conn_free(rpc_conn *c)
{
	rpc_conn_set *set = c->set;
	rpc_core_free(c->core);
	if (c->preface_ev)
		event_free(c->preface_ev);
	if (c->deadline_ev)
		event_free(c->deadline_ev);
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->ssl) {
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->identity);
	if (c->prev)
		c->prev->next = c->next;
	else
		set->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
	set->closed_fn(set->closed_arg);
}

static void conn_arm_write(rpc_conn *c, bool on)
{
	if (on == c->write_armed)
		return;
	c->write_armed = on;
	if (on)
		event_add(c->wev, NULL);
	else
		event_del(c->wev);
}

/* Input that OpenSSL has already taken from the socket (read-ahead) makes
 * no readiness event: when reading stops with such input left, the read
 * callback is run again from the loop. */
static void conn_read_again_if_buffered(rpc_conn *c)
{
	if (c->ssl && !c->handshaking && !c->read_paused && SSL_has_pending(c->ssl))
		event_active(c->rev, EV_READ, 1);
}

static void conn_pause_read(rpc_conn *c, bool pause)
{
	if (pause == c->read_paused)
		return;
	c->read_paused = pause;
	if (pause) {
		event_del(c->rev);
	} else {
		event_add(c->rev, NULL);
		conn_read_again_if_buffered(c);
	}
}

/* Writes the core's output until done or the socket is full (then the
 * write event is armed). Returns -1 when the connection is broken. */
static int conn_write(rpc_conn *c)
{
	for (;;) {
		size_t left;
		const uint8_t *out = rpc_core_output(c->core, &left);
		if (!left)
			break;
		ssize_t n;
		if (c->ssl) {
			/* Partial writes on: SSL_write returns after each record
			 * (at most 16 KiB of plaintext) that went out. */
			ERR_clear_error();
			int r = SSL_write(c->ssl, out, left > INT_MAX ? INT_MAX : (int)left);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE) {
					conn_arm_write(c, true);
					return 0;
				}
				if (e == SSL_ERROR_WANT_READ)
					return 0; /* the next read event writes again */
				ERR_clear_error();
				return -1;
			}
			n = r;
		} else {
			n = send(c->fd, out, left, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					conn_arm_write(c, true);
					return 0;
				}
				if (errno == EINTR)
					continue;
				return -1;
			}
		}
		rpc_core_output_done(c->core, (size_t)n);
	}
	conn_arm_write(c, false);
	return 0;
}

/* Generates output and writes it; returns -1 when the connection is finished. */
static int conn_flush(rpc_conn *c)
{
	if (!c->core)
		return 0;
	if (rpc_core_send(c->core) != 0)
		return -1;
	if (conn_write(c) != 0)
		return -1;
	if (rpc_core_done(c->core))
		return -1;
	/* Backpressure: a client that does not read its responses gets no new
	 * requests processed until it does (the write event resumes reading). */
	conn_pause_read(c, rpc_core_output_full(c->core));
	return 0;
}

static void conn_deadline_cb(evutil_socket_t fd, short what, void *arg);

/* After a batch: the timer follows the earliest deadline of a call still
 * waiting for its status (most inline calls are answered by then). */
static void conn_arm_deadline(rpc_conn *c)
{
	int64_t next;
	if (!rpc_core_next_deadline(c->core, &next))
		return;
	if (!next) {
		if (c->deadline_ev)
			event_del(c->deadline_ev);
		return;
	}
	if (!c->deadline_ev) {
		c->deadline_ev = evtimer_new(c->set->base, conn_deadline_cb, c);
		if (!c->deadline_ev)
			return;
	}
	int64_t left = next - ad_monotonic_ns();
	if (left < 0)
		left = 0;
	/* Rounded up: a timer that fires early finds nothing due. */
	left += 999;
	struct timeval tv = {.tv_sec = left / 1000000000LL,
			     .tv_usec = (left % 1000000000LL) / 1000};
	evtimer_add(c->deadline_ev, &tv);
}

static void conn_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	rpc_core_expire(c->core, ad_monotonic_ns());
	conn_arm_deadline(c);
	if (conn_flush(c) != 0)
		conn_free(c);
}

static int conn_start_core(rpc_conn *c)
{
	if (rpc_core_new(c->set->env, c->peer, c->identity, c->unix_peer, c, &c->core) != 0)
		return -1;
	return conn_flush(c);
}

/* TLS handshake done (client certificate verified by OpenSSL): check ALPN,
 * record the peer's identity, start HTTP/2. */
static int conn_tls_established(rpc_conn *c)
{
	const unsigned char *alpn = NULL;
	unsigned alpnlen = 0;
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpnlen);
	if (alpnlen && !(alpnlen == 2 && memcmp(alpn, "h2", 2) == 0))
		return -1;
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	if (cert) {
		BIO *b = BIO_new(BIO_s_mem());
		X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
		char *p;
		long n = BIO_get_mem_data(b, &p);
		c->identity = ad_strndup(p, (size_t)n);
		BIO_free(b);
		X509_free(cert);
	}
	return conn_start_core(c);
}

/* Returns 1 when the handshake is complete, 0 while it goes on, -1 on failure. */
static int conn_handshake(rpc_conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->handshaking = false;
		conn_arm_write(c, false);
		return conn_tls_established(c) == 0 ? 1 : -1;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		conn_arm_write(c, false);
		return 0;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		conn_arm_write(c, true);
		return 0;
	}
	ERR_clear_error();
	return -1;
}

/* Reads what has arrived (up to CONN_READS_PER_EVENT chunks) and feeds it to
 * the core. Returns -1 when the connection is finished. */
static int conn_read(rpc_conn *c)
{
	uint8_t *buf = c->set->rbuf;
	for (int i = 0; i < CONN_READS_PER_EVENT && !c->read_paused; i++) {
		ssize_t n;
		bool more;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf, CONN_READ_CHUNK);
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ)
					return 0;
				if (e == SSL_ERROR_WANT_WRITE) {
					c->read_wants_write = true;
					conn_arm_write(c, true);
					return 0;
				}
				ERR_clear_error();
				return -1; /* close_notify, EOF or a TLS error */
			}
			n = r;
			/* With read-ahead, OpenSSL holds whatever else the socket
			 * gave it; when it holds nothing, the socket was drained
			 * (or will report readable again): no read for EAGAIN. */
			more = SSL_has_pending(c->ssl);
		} else {
			n = recv(c->fd, buf, CONN_READ_CHUNK, 0);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return 0;
				if (errno == EINTR)
					continue;
				return -1;
			}
			if (n == 0)
				return -1;
			more = (size_t)n == CONN_READ_CHUNK;
		}
		if (c->core) {
			if (rpc_core_recv(c->core, buf, (size_t)n) != 0)
				return -1;
			if (c->preface_ev && rpc_core_got_frame(c->core)) {
				event_free(c->preface_ev);
				c->preface_ev = NULL;
			}
			/* Stop reading while the output is over its bound
			 * (conn_flush pauses reading; resuming reads what
			 * OpenSSL holds). */
			if (rpc_core_output_full(c->core))
				return 0;
		}
		if (!more)
			return 0;
	}
	/* Read CONN_READS_PER_EVENT times: let other connections have a turn. */
	conn_read_again_if_buffered(c);
	return 0;
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	if (c->handshaking) {
		int r = conn_handshake(c);
		if (r < 0) {
			conn_free(c);
			return;
		}
		if (r == 0)
			return;
	}
	if (conn_read(c) != 0) {
		conn_free(c);
		return;
	}
	if (c->core)
		conn_arm_deadline(c);
	if (conn_flush(c) != 0)
		conn_free(c);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	if (c->handshaking) {
		int r = conn_handshake(c);
		if (r < 0)
			conn_free(c);
		else if (r > 0)
			conn_read_cb(fd, EV_READ, c);
		return;
	}
	if (c->read_wants_write) {
		c->read_wants_write = false;
		conn_read_cb(fd, EV_READ, c);
		return;
	}
	/* Writable again: the core may hold frames it could not hand over while
	 * the buffer was full (conn_flush writes them after the rest), and
	 * reading may resume. */
	if (conn_flush(c) != 0)
		conn_free(c);
}

static void conn_preface_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rpc_conn *c = arg;
	if (!c->core || !rpc_core_got_frame(c->core))
		conn_free(c);
}

/* Whether the peer already has as many connections as it may. */
static bool conn_peer_full(rpc_conn_set *set, const char *key)
{
	unsigned n = 0;
	for (rpc_conn *o = set->head; o && n < set->max_per_peer; o = o->next)
		n += strcmp(o->peer_key, key) == 0;
	return n >= set->max_per_peer;
}

void conn_set_accept(rpc_conn_set *set, int fd, const struct sockaddr *sa, bool tls)
{
	rpc_conn *c = ad_malloc0(sizeof(*c));
	c->set = set;
	c->fd = fd;
	if (sa->sa_family == AF_UNIX) {
		c->unix_peer = true;
		snprintf(c->peer, sizeof(c->peer), "unix");
		struct ucred cred = {.uid = (uid_t)-1};
		socklen_t len = sizeof(cred);
		getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
		snprintf(c->peer_key, sizeof(c->peer_key), "uid %u", (unsigned)cred.uid);
	} else {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		char host[INET6_ADDRSTRLEN] = "?";
		int port = 0;
		if (sa->sa_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			port = ntohs(in->sin_port);
			snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
		} else {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
			port = ntohs(in6->sin6_port);
			snprintf(c->peer, sizeof(c->peer), "[%s]:%d", host, port);
		}
		snprintf(c->peer_key, sizeof(c->peer_key), "%s", host);
	}
	if (set->max_per_peer && conn_peer_full(set, c->peer_key)) {
		/* Not linked yet: closed before anything is read or allocated. */
		atomic_fetch_add(&set->refused, 1);
		close(fd);
		free(c);
		return;
	}
	c->next = set->head;
	if (set->head)
		set->head->prev = c;
	set->head = c;
	evutil_make_socket_nonblocking(fd);
	c->rev = event_new(set->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	c->wev = event_new(set->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
	c->preface_ev = evtimer_new(set->base, conn_preface_timeout, c);
	if (!c->rev || !c->wev || !c->preface_ev) {
		conn_free(c);
		return;
	}
	if (tls) {
		c->ssl = SSL_new(set->ssl_ctx);
		if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
			conn_free(c);
			return;
		}
		SSL_set_accept_state(c->ssl);
		c->handshaking = true;
	}
	struct timeval tv = {.tv_sec = CONN_PREFACE_TIMEOUT_S};
	evtimer_add(c->preface_ev, &tv);
	event_add(c->rev, NULL);
	if (!tls && conn_start_core(c) != 0)
		conn_free(c);
}

void conn_set_pump_ready(rpc_call *batch)
{
	rpc_conn *to_flush = NULL;
	for (rpc_call *call = batch; call; call = call->batch_next) {
		rpc_core *core = rpc_core_call_ready(call);
		if (!core)
			continue;
		rpc_conn *c = rpc_core_user(core);
		if (!c->flush_listed) {
			c->flush_listed = true;
			c->flush_next = to_flush;
			to_flush = c;
		}
	}
	while (to_flush) {
		rpc_conn *c = to_flush;
		to_flush = c->flush_next;
		c->flush_listed = false;
		if (conn_flush(c) != 0)
			conn_free(c);
	}
}

void conn_set_goaway(rpc_conn_set *set)
{
	for (rpc_conn *c = set->head, *next; c; c = next) {
		next = c->next;
		if (c->core) {
			rpc_core_goaway(c->core);
			if (conn_flush(c) != 0)
				conn_free(c);
		} else {
			conn_free(c);
		}
	}
}

void conn_set_close_all(rpc_conn_set *set)
{
	while (set->head)
		conn_free(set->head);
}

/* ======================================================================
 * TLS
 * ====================================================================== */

static int conn_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			    const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int conn_ssl_fail(ad_error **err, const char *what, const char *file)
{
	char buf[256] = "";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return ad_fail(err, AD_E_INVALID, "%s %s: %s", what, file ? file : "", buf);
}

/* A server TLS context from the files, or NULL with *err. */
static SSL_CTX *conn_tls_ctx(const char *cert, const char *key, const char *client_ca,
			     ad_error **err)
{
	if (!cert || !key || !client_ca) {
		ad_fail(err, AD_E_INVALID,
			"TCP listener needs tls_cert, tls_key and tls_client_ca (or tcp_insecure)");
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		conn_ssl_fail(err, "SSL_CTX_new", NULL);
		return NULL;
	}
	const char *what = NULL, *file = NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		what = "cannot load certificate", file = cert;
	else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		what = "cannot load key", file = key;
	else if (SSL_CTX_check_private_key(ctx) != 1)
		what = "key does not match certificate", file = key;
	else if (SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1)
		what = "cannot load client CA", file = client_ca;
	if (what) {
		conn_ssl_fail(err, what, file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
	if (names)
		SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* With client verification on, OpenSSL refuses to resume a session
	 * without a context id: clients that resume would fail the handshake. */
	static const unsigned char sid_ctx[] = "agentd-rpc";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_alpn_select_cb(ctx, conn_alpn_select, NULL);
	/* Read-ahead: one read() takes in all the records that have arrived
	 * instead of a header read and a body read per record. Partial writes:
	 * conn_write sends a big buffer record by record, and the buffer may
	 * move (grow) between a blocked write and its retry. */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* An idle connection keeps no record buffers (about 34 KiB); under load
	 * they are allocated once per batch, not per response. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

int conn_set_tls(rpc_conn_set *set, const char *cert, const char *key, const char *client_ca,
		 ad_error **err)
{
	SSL_CTX *ctx = conn_tls_ctx(cert, key, client_ca, err);
	if (!ctx)
		return -1;
	/* Each connection's SSL holds a reference to the context it started
	 * with: replacing it leaves established connections as they are. */
	if (set->ssl_ctx)
		SSL_CTX_free(set->ssl_ctx);
	set->ssl_ctx = ctx;
	return 0;
}

void conn_set_init(rpc_conn_set *set, struct event_base *base, rpc_core_env *env,
		   void (*closed_fn)(void *arg), void *closed_arg)
{
	*set = (rpc_conn_set){.base = base, .env = env, .closed_fn = closed_fn,
			      .closed_arg = closed_arg};
	/* Not zeroed: pages are touched as input arrives. */
	set->rbuf = ad_realloc(NULL, CONN_READ_CHUNK);
}

void conn_set_destroy(rpc_conn_set *set)
{
	conn_set_close_all(set);
	if (set->ssl_ctx)
		SSL_CTX_free(set->ssl_ctx);
	set->ssl_ctx = NULL;
	free(set->rbuf);
	set->rbuf = NULL;
}
