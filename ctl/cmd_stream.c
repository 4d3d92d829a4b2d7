/* agentctl's side of kubelet's streaming protocols, as client-go speaks them
 * (crictl, kubectl): the CRI Exec/Attach/PortForward call gives a URL, the
 * client upgrades a TCP connection to SPDY/3.1 and opens its streams on it.
 * Remote command (v4.channel.k8s.io): an error stream that ends with a
 * metav1.Status (the exit code), stdin, stdout, stderr, and with a tty a
 * resize stream of {"Width":W,"Height":H} objects. Port forward
 * (portforward.k8s.io): an error and a data stream per connection accepted
 * on the local listener, paired by requestID. One poll() loop; the codec is
 * lib/httpstream's. The commands: exec -i/-t (cmd_container.c), attach,
 * port-forward. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cri/api.pb-c.h"
#include "ctl.h"
#include "httpstream.h"

#define CHUNK (32u << 10) /* client-go's largest write */

/* ---- the SPDY connection -------------------------------------------------- */

typedef struct sstream {
	uint32_t id;
	int64_t send_window; /* what the server lets us send */
	bool in_fin, out_fin;
	hs_buf in; /* what arrived for a stream the caller reads whole (error) */
} sstream;

typedef struct sconn {
	int fd;
	SSL *ssl; /* an https:// URL */
	spdy_codec codec;
	hs_buf out;
	uint32_t next_id;
	int64_t conn_window;	/* the server's session-level window for us */
	int64_t initial_window; /* for new streams (SETTINGS) */
	bool eof;		/* the server closed or said GOAWAY */
} sconn;

static int dial(const char *host, const char *port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	int r = getaddrinfo(host, port, &hints, &ai);
	if (r != 0) {
		ctl_warnx("streaming server %s:%s: %s", host, port, gai_strerror(r));
		return -1;
	}
	int fd = -1, e = 0;
	for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
			e = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (fd < 0)
		ctl_warnx("streaming server %s:%s: %s", host, port, strerror(e));
	return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			poll(&pfd, 1, -1);
			continue;
		}
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* read()/send() on the connection, through TLS for https: >0 bytes, 0 at
 * its end, -1 with errno (EAGAIN: nothing now). */
static ssize_t sconn_io(sconn *c, bool send_it, void *b, size_t n)
{
	if (!c->ssl)
		return send_it ? send(c->fd, b, n, MSG_NOSIGNAL) : read(c->fd, b, n);
	ERR_clear_error();
	errno = 0; /* SSL_ERROR_SYSCALL leaves it 0 for an EOF */
	int r = send_it ? SSL_write(c->ssl, b, (int)n) : SSL_read(c->ssl, b, (int)n);
	if (r > 0)
		return r;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno && errno != EAGAIN)
			return -1;
		return send_it ? (errno = EPIPE, -1) : 0; /* the peer closed without close_notify */
	default:
		errno = EPROTO;
		return -1;
	}
}

/* TLS on c->fd for an https:// streaming URL: the server's certificate must
 * chain to the CA agentctl trusts for agentd (--cacert; without it the
 * system's) and name host; the client certificate goes along if given. */
static int sconn_tls(sconn *c, const ctl_ctx *ctx, const char *host)
{
	_cleanup_error_ ad_error *e = NULL;
	if (rpc_tls_client_session(c->fd, ctx ? ctx->cacert : NULL, ctx ? ctx->cert : NULL,
				   ctx ? ctx->key : NULL, host, NULL, 0, &c->ssl, &e) < 0) {
		ctl_warnx("%s", e->message);
		return e->code == AD_E_INVALID ? EX_NOINPUT : EX_SOFTWARE;
	}
	ERR_clear_error();
	if (SSL_connect(c->ssl) == 1)
		return 0;
	long v = SSL_get_verify_result(c->ssl);
	char why[256] = "handshake failed";
	if (v != X509_V_OK)
		snprintf(why, sizeof(why), "certificate verify failed: %s%s",
			 X509_verify_cert_error_string(v),
			 ctx && ctx->cacert ? "" : " (--cacert names the CA agentd's certificate chains to)");
	else if (ERR_peek_error())
		ERR_error_string_n(ERR_get_error(), why, sizeof(why));
	ERR_clear_error();
	ctl_warnx("streaming server %s: TLS: %s", host, why);
	return EX_UNAVAILABLE;
}

/* Connects to url (http(s)://host:port/path), asks for the upgrade to
 * SPDY/3.1 with `protocol` and checks the answer. 0, or an exit status after
 * saying why. */
static int sconn_open(sconn *c, const ctl_ctx *ctx, const char *url, const char *protocol)
{
	*c = (sconn){.fd = -1,
		     .next_id = 1,
		     .conn_window = SPDY_DEFAULT_WINDOW,
		     .initial_window = SPDY_DEFAULT_WINDOW};
	spdy_codec_init(&c->codec);
	bool tls = strncmp(url, "https://", 8) == 0;
	if (!tls && strncmp(url, "http://", 7) != 0) {
		ctl_warnx("streaming URL %s: not http:// or https://", url);
		return EX_PROTOCOL;
	}
	const char *hp = url + (tls ? 8 : 7), *path = strchr(hp, '/');
	if (!path)
		path = "/";
	_cleanup_free_ char *authority = ad_strndup(hp, (size_t)(path - hp));
	char *colon = strrchr(authority, ':');
	if (!colon || strchr(colon, ']')) {
		ctl_warnx("streaming URL %s has no port", url);
		return EX_PROTOCOL;
	}
	_cleanup_free_ char *host = ad_strndup(authority, (size_t)(colon - authority));
	if (host[0] == '[') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	c->fd = dial(host, colon + 1);
	if (c->fd < 0)
		return EX_UNAVAILABLE;
	if (tls) {
		signal(SIGPIPE, SIG_IGN); /* a closed connection is an error, not a signal */
		int st = sconn_tls(c, ctx, host);
		if (st)
			return st;
	}
	_cleanup_free_ char *req = ad_asprintf("GET %s HTTP/1.1\r\nHost: %s\r\n"
					       "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
					       "X-Stream-Protocol-Version: %s\r\n"
					       "User-Agent: agentctl/" AGENTD_VERSION "\r\n\r\n",
					       path, authority, protocol);
	for (size_t off = 0, len = strlen(req); off < len;) {
		ssize_t w = sconn_io(c, true, req + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			ctl_warnx("streaming server: %s", strerror(errno));
			return EX_UNAVAILABLE;
		}
		off += (size_t)w;
	}
	hs_buf in = {0};
	hs_http_head h = {0};
	int r;
	const char *why = NULL;
	do {
		char b[4096];
		ssize_t n = sconn_io(c, false, b, sizeof(b));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ctl_warnx("streaming server closed the connection during the upgrade");
			hs_buf_free(&in);
			return EX_PROTOCOL;
		}
		hs_buf_put(&in, b, (size_t)n);
	} while ((r = hs_http_parse_response(&h, hs_buf_head(&in), hs_buf_size(&in), &why)) == 0);
	int status = 0;
	if (r < 0) {
		ctl_warnx("streaming server: bad answer: %s", why);
		status = EX_PROTOCOL;
	} else if (h.status != 101) {
		/* The body says why (a used token, an unknown container...). */
		const char *body = (const char *)hs_buf_head(&in) + h.head_len;
		int len = (int)(hs_buf_size(&in) - h.head_len);
		while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r'))
			len--;
		ctl_warnx("streaming server: HTTP %d%s%.*s", h.status, len ? ": " : "", len, body);
		status = EX_UNAVAILABLE;
	} else {
		const char *got = hs_http_header(&h, "x-stream-protocol-version");
		if (!got || strcmp(got, protocol) != 0) {
			ctl_warnx("streaming server: protocol %s not agreed", protocol);
			status = EX_PROTOCOL;
		} else {
			spdy_feed(&c->codec, hs_buf_head(&in) + h.head_len,
				  hs_buf_size(&in) - h.head_len);
		}
	}
	hs_http_head_clear(&h);
	hs_buf_free(&in);
	if (status == 0)
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	return status;
}

static void sconn_close(sconn *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl); /* best effort: a close_notify */
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	spdy_codec_free(&c->codec);
	hs_buf_free(&c->out);
	c->fd = -1;
}

/* A new stream with its headers, e.g. {"streamtype", "stdin"}. */
static void sstream_open(sconn *c, sstream *s, const char *const (*headers)[2], size_t n, bool fin)
{
	spdy_header h[4];
	for (size_t i = 0; i < n; i++)
		h[i] = (spdy_header){.name = (char *)headers[i][0],
				     .value = (char *)headers[i][1],
				     .value_len = strlen(headers[i][1])};
	*s = (sstream){.id = c->next_id, .send_window = c->initial_window, .out_fin = fin};
	c->next_id += 2;
	spdy_put_syn_stream(&c->codec, &c->out, s->id, fin ? SPDY_FLAG_FIN : 0, h, n);
}

static void sstream_send(sconn *c, sstream *s, const void *data, size_t len)
{
	spdy_put_data(&c->out, s->id, 0, data, len);
	s->send_window -= (int64_t)len;
	c->conn_window -= (int64_t)len;
}

static void sstream_fin(sconn *c, sstream *s)
{
	if (s->out_fin)
		return;
	spdy_put_data(&c->out, s->id, SPDY_FLAG_FIN, NULL, 0);
	s->out_fin = true;
}

/* How much may be sent on s now. */
static size_t sstream_room(const sconn *c, const sstream *s)
{
	int64_t w = s->send_window < c->conn_window ? s->send_window : c->conn_window;
	return w <= 0 ? 0 : w > CHUNK ? CHUNK : (size_t)w;
}

/* Received bytes were handed on: the server may send as many again. */
static void sstream_consumed(sconn *c, const sstream *s, size_t len)
{
	if (!len)
		return;
	spdy_put_window_update(&c->out, s->id, (uint32_t)len);
	spdy_put_window_update(&c->out, 0, (uint32_t)len);
}

static int sconn_flush(sconn *c)
{
	while (hs_buf_size(&c->out)) {
		ssize_t w = sconn_io(c, true, (void *)hs_buf_head(&c->out), hs_buf_size(&c->out));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return 0;
		if (w <= 0)
			return -1;
		hs_buf_consume(&c->out, (size_t)w);
	}
	return 0;
}

/* The frames the caller does not handle itself: windows, pings, the end. */
static void sconn_control(sconn *c, const spdy_event *ev, sstream **streams, size_t n)
{
	switch (ev->type) {
	case SPDY_SETTINGS:
		if (ev->initial_window >= 0) {
			for (size_t i = 0; i < n; i++)
				if (streams[i])
					streams[i]->send_window +=
					    ev->initial_window - c->initial_window;
			c->initial_window = ev->initial_window;
		}
		break;
	case SPDY_WINDOW_UPDATE:
		if (ev->stream_id == 0)
			c->conn_window += ev->value;
		for (size_t i = 0; i < n; i++)
			if (streams[i] && streams[i]->id == ev->stream_id)
				streams[i]->send_window += ev->value;
		break;
	case SPDY_PING:
		if (!(ev->value & 1)) /* the server's (even ids): answered */
			spdy_put_ping(&c->out, ev->value);
		break;
	case SPDY_GOAWAY:
		c->eof = true;
		break;
	case SPDY_RST_STREAM:
		for (size_t i = 0; i < n; i++)
			if (streams[i] && streams[i]->id == ev->stream_id)
				streams[i]->in_fin = streams[i]->out_fin = true;
		break;
	default:
		break;
	}
}

/* Reads what the socket has into the codec; false at its end. TLS may hold
 * decrypted bytes that poll() does not show: those are read too. */
static bool sconn_read(sconn *c)
{
	char b[64 << 10];
	for (;;) {
		ssize_t n = sconn_io(c, false, b, sizeof(b));
		if (n > 0) {
			spdy_feed(&c->codec, b, (size_t)n);
			if (c->ssl && SSL_pending(c->ssl))
				continue;
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		c->eof = true;
		return false;
	}
}

/* ---- remote command: exec and attach --------------------------------------- */

static struct termios saved_tty;
static bool tty_raw;
static int winch_pipe[2] = {-1, -1};

static void restore_tty(void)
{
	if (tty_raw)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tty);
	tty_raw = false;
}

static void on_winch(int sig)
{
	(void)sig;
	int e = errno;
	if (write(winch_pipe[1], "w", 1) < 0) { /* a pending one is enough */
	}
	errno = e;
}

static void send_size(sconn *c, sstream *resize)
{
	struct winsize ws;
	if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 || !ws.ws_col || !ws.ws_row)
		return;
	char b[64];
	int n = snprintf(b, sizeof(b), "{\"Width\":%u,\"Height\":%u}\n", ws.ws_col, ws.ws_row);
	sstream_send(c, resize, b, (size_t)n);
}

/* The exit status a v4 Status on the error stream stands for: its ExitCode
 * cause for NonZeroExitCode, 0 for Success; other failures are printed. */
static int status_exit_code(const hs_buf *b)
{
	if (!hs_buf_size(b))
		return 0;
	json_t *j = json_loadb((const char *)hs_buf_head(b), hs_buf_size(b), 0, NULL);
	const char *status = NULL, *reason = NULL, *message = NULL;
	json_t *causes = NULL;
	if (!j || json_unpack(j, "{s:s,s?s,s?s,s?{s?o}}", "status", &status, "reason", &reason,
			      "message", &message, "details", "causes", &causes) < 0) {
		/* Before v4 the error stream carries the message alone. */
		ctl_warnx("%.*s", (int)hs_buf_size(b), (const char *)hs_buf_head(b));
		json_decref(j);
		return 1;
	}
	int code = 0;
	if (strcmp(status, "Success") != 0) {
		code = 1;
		size_t i;
		json_t *cause;
		json_array_foreach(causes, i, cause)
		{
			const char *r = json_string_value(json_object_get(cause, "reason"));
			const char *m = json_string_value(json_object_get(cause, "message"));
			if (reason && !strcmp(reason, "NonZeroExitCode") && r &&
			    !strcmp(r, "ExitCode") && m)
				code = atoi(m);
		}
		if (!reason || strcmp(reason, "NonZeroExitCode") != 0 || code <= 0) {
			ctl_warnx("%s", message ? message : "remote command failed");
			code = code > 0 ? code : 1;
		}
	}
	json_decref(j);
	return code > 255 ? 255 : code;
}

static int remote_command(const ctl_ctx *ctx, const char *url, bool in, bool tty)
{
	sconn c;
	int status = sconn_open(&c, ctx, url, "v4.channel.k8s.io");
	if (status) {
		sconn_close(&c);
		return status;
	}
	sstream err, sin = {0}, sout, serr = {0}, resize = {0};
	sstream_open(&c, &err, (const char *const[][2]){{"streamtype", "error"}}, 1, true);
	if (in)
		sstream_open(&c, &sin, (const char *const[][2]){{"streamtype", "stdin"}}, 1, false);
	sstream_open(&c, &sout, (const char *const[][2]){{"streamtype", "stdout"}}, 1, true);
	if (!tty)
		sstream_open(&c, &serr, (const char *const[][2]){{"streamtype", "stderr"}}, 1,
			     true);
	else
		sstream_open(&c, &resize, (const char *const[][2]){{"streamtype", "resize"}}, 1,
			     false);
	sstream *all[] = {&err, in ? &sin : NULL, &sout, tty ? NULL : &serr, tty ? &resize : NULL};
	size_t n_all = sizeof(all) / sizeof(all[0]);

	bool local_tty = tty && isatty(STDIN_FILENO);
	if (local_tty) {
		if (pipe2(winch_pipe, O_CLOEXEC | O_NONBLOCK) == 0) {
			struct sigaction sa = {.sa_handler = on_winch, .sa_flags = SA_RESTART};
			sigaction(SIGWINCH, &sa, NULL);
		}
		send_size(&c, &resize);
		/* Raw: Ctrl-C and friends are bytes for the remote terminal. */
		if (in && tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
			struct termios raw = saved_tty;
			cfmakeraw(&raw);
			if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) == 0) {
				tty_raw = true;
				atexit(restore_tty);
			}
		}
	}
	bool stdin_open = in;
	while (!(err.in_fin && sout.in_fin && (tty || serr.in_fin)) && !c.eof) {
		if (sconn_flush(&c) < 0) {
			c.eof = true;
			break;
		}
		struct pollfd p[3] = {
		    {.fd = c.fd, .events = POLLIN | (hs_buf_size(&c.out) ? POLLOUT : 0)},
		    {.fd = stdin_open && sstream_room(&c, &sin) ? STDIN_FILENO : -1,
		     .events = POLLIN},
		    {.fd = winch_pipe[0], .events = POLLIN},
		};
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[2].revents & POLLIN) {
			char b[16];
			while (read(winch_pipe[0], b, sizeof(b)) > 0)
				;
			send_size(&c, &resize);
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			char b[CHUNK];
			size_t room = sstream_room(&c, &sin);
			ssize_t r = read(STDIN_FILENO, b, room < sizeof(b) ? room : sizeof(b));
			if (r > 0) {
				sstream_send(&c, &sin, b, (size_t)r);
			} else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
				stdin_open = false;
				sstream_fin(&c, &sin);
			}
		}
		if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		sconn_read(&c);
		spdy_event ev;
		const char *why;
		int r;
		while ((r = spdy_next(&c.codec, &ev, &why)) == 1) {
			sstream *s = NULL;
			for (size_t i = 0; i < n_all && ev.type == SPDY_DATA; i++)
				if (all[i] && all[i]->id == ev.stream_id)
					s = all[i];
			if (s == &sout || s == &serr) {
				int fd = s == &sout ? STDOUT_FILENO : STDERR_FILENO;
				if (ev.len && write_all(fd, ev.data, ev.len) < 0)
					stdin_open = false;
				sstream_consumed(&c, s, ev.len);
			} else if (s == &err) {
				hs_buf_put(&err.in, ev.data, ev.len);
				sstream_consumed(&c, s, ev.len);
			}
			if (s && (ev.flags & SPDY_FLAG_FIN))
				s->in_fin = true;
			if (ev.type == SPDY_SYN_REPLY && (ev.flags & SPDY_FLAG_FIN))
				for (size_t i = 0; i < n_all; i++)
					if (all[i] && all[i]->id == ev.stream_id)
						all[i]->in_fin = true;
			if (ev.type != SPDY_DATA)
				sconn_control(&c, &ev, all, n_all);
			spdy_event_clear(&ev);
		}
		if (r < 0) {
			ctl_warnx("streaming server: %s", why);
			c.eof = true;
		}
	}
	restore_tty();
	if (winch_pipe[0] >= 0) {
		signal(SIGWINCH, SIG_DFL);
		close(winch_pipe[0]);
		close(winch_pipe[1]);
		winch_pipe[0] = winch_pipe[1] = -1;
	}
	if (!err.in_fin && !hs_buf_size(&err.in)) {
		ctl_warnx("streaming server closed the connection before the command's end");
		status = EX_UNAVAILABLE;
	} else {
		status = status_exit_code(&err.in);
	}
	hs_buf_free(&err.in);
	sconn_close(&c);
	return status;
}

/* ---- port forward --------------------------------------------------------- */

typedef struct pf_conn {
	int fd; /* the local connection */
	uint16_t local, remote;
	sstream error, data;
	bool local_eof;	 /* sent FIN for it */
	bool remote_eof; /* shut the local side's write end */
	hs_buf to_local; /* from the pod, not yet written to fd */
} pf_conn;

static void pf_conn_end(pf_conn *p)
{
	if (p->fd >= 0)
		close(p->fd);
	hs_buf_free(&p->to_local);
	hs_buf_free(&p->error.in);
	p->fd = -1;
}

static int listen_local(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
		ctl_warnx("listen on 127.0.0.1:%u: %s", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int port_forward(const ctl_ctx *ctx, const char *url, const char *pod,
			const uint16_t (*ports)[2], size_t n_ports)
{
	int status = 0;
	int *lfd = ad_malloc0(n_ports * sizeof(int));
	for (size_t i = 0; i < n_ports; i++)
		lfd[i] = -1;
	for (size_t i = 0; i < n_ports && !status; i++) {
		lfd[i] = listen_local(ports[i][0]);
		if (lfd[i] < 0)
			status = EX_UNAVAILABLE;
		else
			printf("Forwarding from 127.0.0.1:%u -> %u\n", ports[i][0], ports[i][1]);
	}
	fflush(stdout);
	sconn c = {.fd = -1};
	if (!status)
		status = sconn_open(&c, ctx, url, "portforward.k8s.io");
	pf_conn **conns = NULL;
	size_t n_conns = 0;
	unsigned request_id = 0;
	signal(SIGPIPE, SIG_IGN);
	while (!status && !c.eof) {
		if (sconn_flush(&c) < 0)
			break;
		size_t n_polled = n_conns; /* accepting appends to conns */
		size_t np = 1 + n_ports + n_conns;
		struct pollfd *p = ad_malloc0(np * sizeof(*p));
		p[0] = (struct pollfd){.fd = c.fd,
				       .events = POLLIN | (hs_buf_size(&c.out) ? POLLOUT : 0)};
		for (size_t i = 0; i < n_ports; i++)
			p[1 + i] = (struct pollfd){.fd = lfd[i], .events = POLLIN};
		for (size_t i = 0; i < n_conns; i++) {
			pf_conn *pc = conns[i];
			short ev = 0;
			/* Nothing more is read from a local connection than the
			 * pod may take, nor while its own output waits. */
			if (!pc->local_eof && sstream_room(&c, &pc->data))
				ev |= POLLIN;
			if (hs_buf_size(&pc->to_local))
				ev |= POLLOUT;
			p[1 + n_ports + i] = (struct pollfd){.fd = pc->fd, .events = ev};
		}
		if (poll(p, np, -1) < 0) {
			free(p);
			if (errno == EINTR)
				continue;
			break;
		}
		for (size_t i = 0; i < n_ports; i++) {
			if (!(p[1 + i].revents & POLLIN))
				continue;
			int fd = accept4(lfd[i], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd < 0)
				continue;
			printf("Handling connection for %u\n", ports[i][0]);
			fflush(stdout);
			pf_conn *pc = ad_malloc0(sizeof(*pc));
			pc->fd = fd;
			pc->local = ports[i][0];
			pc->remote = ports[i][1];
			char port[8], rid[16];
			snprintf(port, sizeof(port), "%u", ports[i][1]);
			snprintf(rid, sizeof(rid), "%u", request_id++);
			/* As client-go: the error stream first, its write side
			 * closed at once, then the data stream. */
			sstream_open(&c, &pc->error,
				     (const char *const[][2]){{"streamtype", "error"},
							      {"port", port},
							      {"requestid", rid}},
				     3, true);
			sstream_open(&c, &pc->data,
				     (const char *const[][2]){{"streamtype", "data"},
							      {"port", port},
							      {"requestid", rid}},
				     3, false);
			conns = ad_realloc(conns, (n_conns + 1) * sizeof(*conns));
			conns[n_conns++] = pc;
		}
		for (size_t i = 0; i < n_polled; i++) {
			pf_conn *pc = conns[i];
			short re = p[1 + n_ports + i].revents;
			if ((re & POLLOUT) && hs_buf_size(&pc->to_local)) {
				ssize_t w = write(pc->fd, hs_buf_head(&pc->to_local),
						  hs_buf_size(&pc->to_local));
				if (w > 0) {
					hs_buf_consume(&pc->to_local, (size_t)w);
					sstream_consumed(&c, &pc->data, (size_t)w);
				} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
					hs_buf_consume(&pc->to_local, hs_buf_size(&pc->to_local));
					pc->local_eof = pc->remote_eof = true;
					sstream_fin(&c, &pc->data);
				}
			}
			if (re & (POLLIN | POLLHUP | POLLERR)) {
				char b[CHUNK];
				size_t room = sstream_room(&c, &pc->data);
				ssize_t r = room ? read(pc->fd, b, room) : -1;
				if (r > 0) {
					sstream_send(&c, &pc->data, b, (size_t)r);
				} else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
					pc->local_eof = true;
					sstream_fin(&c, &pc->data);
				}
			}
		}
		free(p);
		/* At its end c.eof ends the loop once the frames it has are handled. */
		sconn_read(&c);
		spdy_event ev;
		const char *why;
		int r;
		while ((r = spdy_next(&c.codec, &ev, &why)) == 1) {
			for (size_t i = 0; i < n_conns; i++) {
				pf_conn *pc = conns[i];
				bool fin = ev.flags & SPDY_FLAG_FIN;
				if (ev.stream_id == pc->data.id &&
				    (ev.type == SPDY_DATA || ev.type == SPDY_SYN_REPLY)) {
					hs_buf_put(&pc->to_local, ev.data, ev.len);
					if (fin)
						pc->data.in_fin = true;
				} else if (ev.stream_id == pc->error.id &&
					   (ev.type == SPDY_DATA || ev.type == SPDY_SYN_REPLY)) {
					hs_buf_put(&pc->error.in, ev.data, ev.len);
					sstream_consumed(&c, &pc->error, ev.len);
					if (fin)
						pc->error.in_fin = true;
				}
			}
			if (ev.type != SPDY_DATA) {
				sstream **all = ad_malloc0((2 * n_conns + 1) * sizeof(*all));
				for (size_t i = 0; i < n_conns; i++) {
					all[2 * i] = &conns[i]->error;
					all[2 * i + 1] = &conns[i]->data;
				}
				sconn_control(&c, &ev, all, 2 * n_conns);
				free(all);
			}
			spdy_event_clear(&ev);
		}
		if (r < 0) {
			ctl_warnx("streaming server: %s", why);
			break;
		}
		/* A connection ends when both ways are done, or on its error. */
		for (size_t i = 0; i < n_conns;) {
			pf_conn *pc = conns[i];
			if (pc->data.in_fin && !pc->remote_eof && !hs_buf_size(&pc->to_local)) {
				shutdown(pc->fd, SHUT_WR);
				pc->remote_eof = true;
			}
			bool failed = hs_buf_size(&pc->error.in) > 0;
			if (failed)
				ctl_warnx("error forwarding 127.0.0.1:%u -> pod %s port %u: %.*s",
					  pc->local, pod, pc->remote,
					  (int)hs_buf_size(&pc->error.in),
					  (const char *)hs_buf_head(&pc->error.in));
			if (failed || (pc->local_eof && pc->remote_eof) ||
			    (pc->data.in_fin && pc->data.out_fin && !hs_buf_size(&pc->to_local))) {
				if (!pc->data.out_fin)
					sstream_fin(&c, &pc->data);
				pf_conn_end(pc);
				free(pc);
				conns[i] = conns[--n_conns];
				continue;
			}
			i++;
		}
	}
	if (!status && c.eof) {
		ctl_warnx("the streaming server ended the port forward");
		status = EX_UNAVAILABLE;
	}
	for (size_t i = 0; i < n_conns; i++) {
		pf_conn_end(conns[i]);
		free(conns[i]);
	}
	free(conns);
	for (size_t i = 0; i < n_ports; i++)
		if (lfd[i] >= 0)
			close(lfd[i]);
	free(lfd);
	sconn_close(&c);
	return status;
}

/* ---- the commands ---------------------------------------------------------- */

#define SVC "/runtime.v1.RuntimeService/"

/* The CRI call that answers a URL (Exec, Attach), then the remote command
 * at that URL. */
static int remote_command_call(ctl_ctx *ctx, const char *method, const ProtobufCMessage *req,
			       const ProtobufCMessageDescriptor *resp_desc, bool in, bool tty)
{
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(resp_desc, "url");
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, method, req, resp_desc, &m);
	if (r)
		return r;
	r = remote_command(ctx, *(const char **)((const char *)m + f->offset), in, tty);
	protobuf_c_message_free_unpacked(m, NULL);
	return r;
}

int ctl_exec_stream(ctl_ctx *ctx, const char *id, char **cmd, size_t n_cmd, bool in, bool tty)
{
	Runtime__V1__ExecRequest req = RUNTIME__V1__EXEC_REQUEST__INIT;
	req.container_id = (char *)id;
	req.cmd = cmd;
	req.n_cmd = n_cmd;
	req.tty = tty;
	req.stdin = in;
	req.stdout = true;
	req.stderr = !tty;
	return remote_command_call(ctx, SVC "Exec", &req.base,
				   &runtime__v1__exec_response__descriptor, in, tty);
}

static int run_attach(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"stdin", no_argument, NULL, 'i'},
	    {"tty", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool in = false, tty = false;
	int c, r = 0;
	while ((c = ctl_getopt(&ctl_cmd_attach, argc, argv, "+:ith", opts, &r)) != -1) {
		if (c == 'i')
			in = true;
		else
			tty = true;
	}
	if (r)
		return r < 0 ? 0 : r;
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_attach, "CONTAINER is required");
	if ((r = ctl_operands_at_most(&ctl_cmd_attach, argc, argv, 1)))
		return r;
	_cleanup_free_ char *id = NULL;
	r = ctl_resolve_id(ctx, false, argv[optind], &id);
	if (r)
		return r;
	Runtime__V1__AttachRequest req = RUNTIME__V1__ATTACH_REQUEST__INIT;
	req.container_id = id;
	req.tty = tty;
	req.stdin = in;
	req.stdout = true;
	req.stderr = !tty;
	return remote_command_call(ctx, SVC "Attach", &req.base,
				   &runtime__v1__attach_response__descriptor, in, tty);
}

/* LOCAL:REMOTE, or PORT for both. */
static int parse_port_pair(const char *s, uint16_t ret[2])
{
	char *end;
	for (int i = 0; i < 2; i++) {
		errno = 0;
		long v = strtol(s, &end, 10);
		if (errno || end == s || v <= 0 || v > 65535 || (*end && *end != ':') ||
		    (i == 1 && *end))
			return -1;
		ret[i] = (uint16_t)v;
		if (!*end) {
			if (i == 0)
				ret[1] = ret[0];
			return 0;
		}
		s = end + 1;
	}
	return 0;
}

static int run_port_forward(ctl_ctx *ctx, int argc, char **argv)
{
	int r = ctl_ids_only(&ctl_cmd_port_forward, argc, argv, "POD");
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind < 2)
		return ctl_usage_error(&ctl_cmd_port_forward, "POD and LOCAL:REMOTE are required");
	size_t n = (size_t)(argc - optind - 1);
	uint16_t(*ports)[2] = ad_malloc0(n * sizeof(*ports));
	Runtime__V1__PortForwardRequest req = RUNTIME__V1__PORT_FORWARD_REQUEST__INIT;
	req.port = ad_malloc0(n * sizeof(*req.port));
	req.n_port = n;
	_cleanup_free_ char *id = NULL;
	for (size_t i = 0; i < n && !r; i++) {
		if (parse_port_pair(argv[optind + 1 + (int)i], ports[i]) < 0)
			r = ctl_usage_error(&ctl_cmd_port_forward,
					    "bad port '%s' (LOCAL:REMOTE or PORT, 1-65535)",
					    argv[optind + 1 + (int)i]);
		else
			req.port[i] = ports[i][1];
	}
	if (!r)
		r = ctl_resolve_id(ctx, true, argv[optind], &id);
	ProtobufCMessage *m = NULL;
	if (!r) {
		req.pod_sandbox_id = id;
		r = ctl_unary(ctx, SVC "PortForward", &req.base,
			      &runtime__v1__port_forward_response__descriptor, &m);
	}
	if (!r)
		r = port_forward(ctx, ((Runtime__V1__PortForwardResponse *)m)->url, id, ports, n);
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	free(req.port);
	free(ports);
	return r;
}

const ctl_command ctl_cmd_attach = {
    .name = "attach",
    .synopsis = "[-i] [-t] CONTAINER",
    .summary = "attach to a running container's output (-i: and its stdin; -t: its tty)",
    .run = run_attach,
};

const ctl_command ctl_cmd_port_forward = {
    .name = "port-forward",
    .synopsis = "POD [LOCAL:]REMOTE...",
    .summary = "forward local ports (on 127.0.0.1) to ports of a pod until interrupted",
    .run = run_port_forward,
};
