/* One streaming connection, start to end, on its own thread: the request
 * head, the token, the upgrade (SPDY/3.1 or WebSocket), then remote command
 * (exec, attach) or port forward until the process ends or the client goes.
 *
 * Everything is non-blocking around one poll(): a client that stops reading
 * stalls only the output of its own process (nothing more is read from it
 * once OUT_HIGH bytes wait for the socket), never agentd or other sessions. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "st_int.h"

#define OUT_HIGH (256u << 10) /* socket backlog above which no output is read */
#define OUT_MAX (8u << 20)    /* backlog at which a client that does not read is dropped */
#define IN_HIGH (256u << 10)  /* bytes waiting for an fd above which the socket is not read */
#define CHUNK 32768	      /* client-go's copy buffer */
#define ACK_AT 16384	      /* WINDOW_UPDATE once this much was consumed */
#define HEAD_TIMEOUT_MS 30000
#define LINGER_MS 2000
#define MAX_STREAMS 256

enum { T_SPDY, T_WS };
enum { K_NONE, K_ERROR, K_STDIN, K_STDOUT, K_STDERR, K_RESIZE, K_DATA, K_PFERROR, _K_MAX };
/* WebSocket channels of remote command */
enum { CH_STDIN, CH_STDOUT, CH_STDERR, CH_ERROR, CH_RESIZE, CH_CLOSE = 255 };

typedef struct stream {
	uint32_t id; /* SPDY stream id; WebSocket channel */
	int kind;
	bool in_fin;  /* the client sends nothing more */
	bool out_fin; /* we send nothing more */
	int64_t window;
	uint32_t unacked;
	hs_buf acc; /* resize: JSON not yet parsed */
	/* port forward */
	char *request_id;
	uint16_t port;
	struct stream *pair; /* data <-> error of one request */
	int fd;
	hs_buf to_fd;
	bool fd_eof, fd_shut, done;
	bool port_sent; /* WebSocket: the port prefix went out */
} stream;

typedef struct session {
	const st_session_env *env;
	int fd;
	SSL *ssl;
	st_request *req;
	int transport;
	int version; /* remote command: 1 (channel.k8s.io) .. 5 */
	bool base64;
	spdy_codec sp;
	ws_codec ws;
	hs_buf in; /* bytes read before the codec was chosen */
	hs_buf out;
	stream *streams[MAX_STREAMS];
	size_t n_streams;
	uint32_t last_peer_id;
	bool flow_control; /* the client sent WINDOW_UPDATE: honour its windows */
	int64_t initial_window, conn_window;
	uint32_t conn_unacked;
	/* remote command */
	stream *rc[_K_MAX];
	bool started, completed;
	st_process proc;
	hs_buf to_stdin;
	bool stdin_eof; /* close the process's stdin once to_stdin is written */
	bool stdin_shut;
	hs_buf framed;
	bool out_eof, err_eof, exited;
	int64_t creation_deadline, idle_deadline;
	bool peer_eof, peer_gone, goaway, ws_closed;
} session;

/* ---- socket I/O ------------------------------------------------------------ */

/* >0 bytes, 0 EOF, -1 nothing now, -2 error */
static ssize_t conn_read(session *s, void *buf, size_t n)
{
	if (s->ssl) {
		int r = SSL_read(s->ssl, buf, (int)n);
		if (r > 0)
			return r;
		int e = SSL_get_error(s->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return -1;
		return e == SSL_ERROR_ZERO_RETURN ? 0 : -2;
	}
	ssize_t r = read(s->fd, buf, n);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? -1 : -2;
	return r;
}

static ssize_t conn_write(session *s, const void *buf, size_t n)
{
	if (s->ssl) {
		int r = SSL_write(s->ssl, buf, (int)n);
		if (r > 0)
			return r;
		int e = SSL_get_error(s->ssl, r);
		return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -1 : -2;
	}
	ssize_t r = send(s->fd, buf, n, MSG_NOSIGNAL);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? -1 : -2;
	return r;
}

static int flush_out(session *s)
{
	while (hs_buf_size(&s->out)) {
		ssize_t n = conn_write(s, hs_buf_head(&s->out), hs_buf_size(&s->out));
		if (n == -1)
			return 0;
		if (n < 0)
			return -1;
		hs_buf_consume(&s->out, (size_t)n);
		s->idle_deadline = ad_monotonic_ns() + (int64_t)s->env->idle_timeout_ms * 1000000;
	}
	return 0;
}

/* Writes what is queued, blocking up to timeout_ms (plain HTTP answers). */
static void flush_blocking(session *s, int timeout_ms)
{
	int64_t end = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	while (hs_buf_size(&s->out)) {
		if (flush_out(s) < 0)
			return;
		int left = (int)((end - ad_monotonic_ns()) / 1000000);
		if (!hs_buf_size(&s->out) || left <= 0)
			return;
		struct pollfd p = {.fd = s->fd, .events = POLLOUT | POLLIN};
		poll(&p, 1, left);
	}
}

/* After the last bytes: let the client read them before the close (a close
 * with unread input would reset the connection and lose them). */
static void linger(session *s)
{
	flush_blocking(s, 5 * LINGER_MS);
	if (s->ssl)
		SSL_shutdown(s->ssl);
	shutdown(s->fd, SHUT_WR);
	int64_t end = ad_monotonic_ns() + (int64_t)LINGER_MS * 1000000;
	for (;;) {
		int left = (int)((end - ad_monotonic_ns()) / 1000000);
		if (left <= 0)
			return;
		struct pollfd p = {.fd = s->fd, .events = POLLIN};
		if (poll(&p, 1, left) <= 0)
			return;
		char buf[4096];
		if (read(s->fd, buf, sizeof(buf)) <= 0)
			return;
	}
}

static void http_error(session *s, int code, const char *reason, const char *extra_headers,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void http_error(session *s, int code, const char *reason, const char *extra_headers,
		       const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char body[2048];
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	char *resp =
	    ad_asprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			"X-Content-Type-Options: nosniff\r\n%sContent-Length: %zu\r\n"
			"Connection: close\r\n\r\n%s\n",
			code, reason, extra_headers ? extra_headers : "", strlen(body) + 1, body);
	hs_buf_put(&s->out, resp, strlen(resp));
	free(resp);
	ad_log(AD_LOG_DEBUG, "streaming: %d %s", code, body);
	linger(s);
}

/* ---- streams and sending --------------------------------------------------- */

static stream *stream_new(session *s, uint32_t id, int kind)
{
	if (s->n_streams == MAX_STREAMS)
		return NULL;
	stream *st = ad_malloc0(sizeof(*st));
	st->id = id;
	st->kind = kind;
	st->fd = -1;
	st->window = s->initial_window;
	s->streams[s->n_streams++] = st;
	return st;
}

static stream *stream_find(session *s, uint32_t id)
{
	for (size_t i = 0; i < s->n_streams; i++)
		if (s->streams[i]->id == id)
			return s->streams[i];
	return NULL;
}

static void stream_free(stream *st)
{
	if (st->fd >= 0)
		close(st->fd);
	hs_buf_free(&st->acc);
	hs_buf_free(&st->to_fd);
	free(st->request_id);
	free(st);
}

/* Bytes that may go out on st now (flow control and the socket backlog). */
static size_t send_room(session *s, const stream *st)
{
	size_t out = hs_buf_size(&s->out);
	if (out >= OUT_HIGH || st->out_fin)
		return 0;
	int64_t room = CHUNK;
	if (s->transport == T_SPDY && s->flow_control) {
		if (st->window < room)
			room = st->window;
		if (s->conn_window < room)
			room = s->conn_window;
	}
	return room > 0 ? (size_t)room : 0;
}

static void ws_send(session *s, uint8_t channel, const void *data, size_t len)
{
	if (s->base64) {
		_cleanup_free_ char *b = hs_base64(data, len, false);
		size_t bl = strlen(b);
		_cleanup_free_ char *m = ad_malloc0(bl + 2);
		m[0] = (char)('0' + channel);
		memcpy(m + 1, b, bl);
		ws_put_frame(&s->out, WS_TEXT, m, bl + 1, NULL);
		return;
	}
	_cleanup_free_ uint8_t *m = ad_malloc0(len + 1);
	m[0] = channel;
	if (len)
		memcpy(m + 1, data, len);
	ws_put_frame(&s->out, WS_BINARY, m, len + 1, NULL);
}

static void send_data(session *s, stream *st, const void *data, size_t len)
{
	if (!st || st->out_fin)
		return;
	if (s->transport == T_WS) {
		ws_send(s, (uint8_t)st->id, data, len);
		return;
	}
	const uint8_t *p = data;
	do {
		size_t n = len > CHUNK ? CHUNK : len;
		spdy_put_data(&s->out, st->id, 0, p, n);
		st->window -= (int64_t)n;
		s->conn_window -= (int64_t)n;
		p += n;
		len -= n;
	} while (len);
}

static void send_fin(session *s, stream *st)
{
	if (!st || st->out_fin)
		return;
	if (s->transport == T_SPDY)
		spdy_put_data(&s->out, st->id, SPDY_FLAG_FIN, NULL, 0);
	st->out_fin = true;
}

/* Gives the client its window back for bytes that left agentd. */
static void ack(session *s, stream *st, size_t n)
{
	if (s->transport != T_SPDY || !n)
		return;
	s->conn_unacked += (uint32_t)n;
	if (s->conn_unacked >= ACK_AT) {
		spdy_put_window_update(&s->out, 0, s->conn_unacked);
		s->conn_unacked = 0;
	}
	if (!st || st->in_fin)
		return;
	st->unacked += (uint32_t)n;
	if (st->unacked >= ACK_AT) {
		spdy_put_window_update(&s->out, st->id, st->unacked);
		st->unacked = 0;
	}
}

/* ---- remote command -------------------------------------------------------- */

static char *cmd_text(const st_request *req)
{
	hs_buf b = {0};
	hs_buf_put(&b, "[", 1);
	for (size_t i = 0; req->cmd && req->cmd[i]; i++) {
		if (i)
			hs_buf_put(&b, " ", 1);
		hs_buf_put(&b, req->cmd[i], strlen(req->cmd[i]));
	}
	hs_buf_put(&b, "]", 2);
	return (char *)b.data;
}

/* The error stream's last word: v4 and later a metav1.Status in JSON, before
 * that the error text alone (nothing on success). */
static void send_status(session *s, int exit_code, const char *error)
{
	stream *st = s->rc[K_ERROR];
	if (!st)
		return;
	_cleanup_free_ char *cmd = cmd_text(s->req);
	_cleanup_free_ char *msg = NULL;
	if (error)
		msg = ad_strdup(error);
	else if (exit_code != 0)
		msg = ad_asprintf("command terminated with non-zero exit code: error executing "
				  "command %s, exit code %d",
				  cmd, exit_code);
	if (s->version < 4) {
		if (msg)
			send_data(s, st, msg, strlen(msg));
		send_fin(s, st);
		return;
	}
	json_t *j = json_object();
	json_object_set_new(j, "metadata", json_object());
	if (!msg) {
		json_object_set_new(j, "status", json_string("Success"));
	} else if (!error) {
		char code[16];
		snprintf(code, sizeof(code), "%d", exit_code);
		json_object_set_new(j, "status", json_string("Failure"));
		json_object_set_new(j, "message", json_string(msg));
		json_object_set_new(j, "reason", json_string("NonZeroExitCode"));
		json_object_set_new(
		    j, "details",
		    json_pack("{s:[{s:s,s:s}]}", "causes", "reason", "ExitCode", "message", code));
	} else {
		_cleanup_free_ char *m = ad_asprintf("Internal error occurred: %s", error);
		json_object_set_new(j, "status", json_string("Failure"));
		json_object_set_new(j, "message", json_string(m));
		json_object_set_new(j, "reason", json_string("InternalError"));
		json_object_set_new(j, "details",
				    json_pack("{s:[{s:s}]}", "causes", "message", error));
		json_object_set_new(j, "code", json_integer(500));
	}
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	send_data(s, st, text, strlen(text));
	free(text);
	send_fin(s, st);
}

/* Ends the remote command: every stream closed, the status sent, GOAWAY. */
static void complete(session *s, int exit_code, const char *error)
{
	if (s->completed)
		return;
	s->completed = true;
	send_fin(s, s->rc[K_STDOUT]);
	send_fin(s, s->rc[K_STDERR]);
	send_status(s, exit_code, error);
	if (s->transport == T_SPDY) {
		spdy_put_goaway(&s->out, s->last_peer_id, 0);
	} else {
		uint8_t code[2] = {1000 >> 8, 1000 & 0xff};
		ws_put_frame(&s->out, WS_CLOSE, code, 2, NULL);
	}
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void start_process(session *s)
{
	s->started = true;
	s->proc = (st_process){.stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .exit_fd = -1};
	ad_error *e = NULL;
	const st_backend *be = s->env->backend;
	int r = s->req->kind == ST_EXEC ? be->exec(s->env->backend_ctx, s->req, &s->proc, &e)
					: be->attach(s->env->backend_ctx, s->req, &s->proc, &e);
	if (r < 0) {
		s->out_eof = s->err_eof = s->exited = true;
		s->proc =
		    (st_process){.stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .exit_fd = -1};
		complete(s, -1, e ? e->message : "failed to start");
		ad_error_free(&e);
		return;
	}
	int fds[] = {s->proc.stdin_fd, s->proc.stdout_fd, s->proc.stderr_fd};
	for (size_t i = 0; i < 3; i++)
		if (fds[i] >= 0)
			fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
	s->out_eof = s->proc.stdout_fd < 0;
	s->err_eof = s->proc.stderr_fd < 0;
	s->exited = s->proc.exit_fd < 0;
	if (!s->req->in && !s->proc.framed)
		close_fd(&s->proc.stdin_fd);
}

/* Expected streams (SPDY): error, and stdin/stdout/stderr as requested,
 * resize with a tty from v3 on. */
static bool have_all_streams(session *s)
{
	const st_request *q = s->req;
	return s->rc[K_ERROR] && (!q->in || s->rc[K_STDIN]) && (!q->out || s->rc[K_STDOUT]) &&
	       (!q->err || s->rc[K_STDERR]) && (!q->tty || s->version < 3 || s->rc[K_RESIZE]);
}

/* TerminalSize objects, one after another ({"Width":W,"Height":H}). */
static void resize_input(session *s, stream *st, const uint8_t *data, size_t len)
{
	hs_buf_put(&st->acc, data, len);
	for (;;) {
		const char *p = (const char *)hs_buf_head(&st->acc);
		size_t n = hs_buf_size(&st->acc);
		const char *end = memchr(p, '}', n);
		if (!end) {
			if (n > 4096)
				hs_buf_consume(&st->acc, n); /* garbage: no object this long */
			return;
		}
		size_t k = (size_t)(end - p) + 1;
		json_t *j = json_loadb(p, k, JSON_DISABLE_EOF_CHECK, NULL);
		hs_buf_consume(&st->acc, k);
		json_int_t w = 0, h = 0;
		if (j && json_unpack(j, "{s:I,s:I}", "Width", &w, "Height", &h) == 0 && w > 0 &&
		    h > 0 && w < 65536 && h < 65536 && s->started && !s->completed &&
		    s->env->backend->resize)
			s->env->backend->resize(s->env->backend_ctx, s->req, &s->proc, (unsigned)h,
						(unsigned)w);
		json_decref(j);
	}
}

static void stdin_input(session *s, const uint8_t *data, size_t len)
{
	if (s->stdin_eof)
		return;
	hs_buf_put(&s->to_stdin, data, len);
}

static void stdin_closed(session *s)
{
	s->stdin_eof = true;
}

/* Output of the process: attach frames are split by stream. */
static void process_output(session *s, int kind, const uint8_t *data, size_t len)
{
	if (!s->proc.framed) {
		send_data(s, s->rc[kind], data, len);
		return;
	}
	hs_buf_put(&s->framed, data, len);
	for (;;) {
		size_t n = hs_buf_size(&s->framed);
		const uint8_t *p = hs_buf_head(&s->framed);
		if (n < 5)
			return;
		uint32_t fl =
		    (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
		if (n < 5 + (size_t)fl)
			return;
		send_data(s, s->rc[p[0] == 2 ? K_STDERR : K_STDOUT], p + 5, fl);
		hs_buf_consume(&s->framed, 5 + (size_t)fl);
	}
}

/* ---- port forward ---------------------------------------------------------- */

static void pf_fail(session *s, stream *data, stream *err, const char *msg)
{
	if (err) {
		send_data(s, err, msg, strlen(msg));
		send_fin(s, err);
	}
	if (data) {
		send_fin(s, data);
		data->done = true;
		close_fd(&data->fd);
	}
}

static void pf_dial(session *s, stream *data, stream *err)
{
	ad_error *e = NULL;
	int fd = -1;
	if (s->env->backend->dial(s->env->backend_ctx, s->req->target, data->port, &fd, &e) < 0) {
		_cleanup_free_ char *msg =
		    ad_asprintf("error forwarding port %u to pod %s: %s", data->port,
				s->req->target, e ? e->message : "dial failed");
		ad_error_free(&e);
		pf_fail(s, data, err, msg);
		return;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	data->fd = fd;
}

/* A data stream whose both directions ended is over: its error stream too. */
static void pf_check_done(session *s, stream *data)
{
	if (data->done || data->fd < 0)
		return;
	if (data->fd_eof && (data->in_fin || data->fd_shut) && !hs_buf_size(&data->to_fd)) {
		data->done = true;
		close_fd(&data->fd);
		send_fin(s, data);
		send_fin(s, data->pair);
	}
}

/* SPDY: a data and an error stream with the same requestID make a request. */
static void pf_new_stream(session *s, stream *st, const spdy_event *ev)
{
	const char *type = spdy_header_get(ev, "streamtype");
	const char *port = spdy_header_get(ev, "port");
	const char *rid = spdy_header_get(ev, "requestid");
	char *end = NULL;
	long p = port ? strtol(port, &end, 10) : 0;
	st->kind = type && !strcmp(type, "data")    ? K_DATA
		   : type && !strcmp(type, "error") ? K_PFERROR
						    : K_NONE;
	if (st->kind == K_NONE || !port || *end || p <= 0 || p > 65535) {
		const char *msg =
		    st->kind == K_NONE ? "unknown stream type" : "invalid port header";
		if (st->kind == K_PFERROR) {
			send_data(s, st, msg, strlen(msg));
			send_fin(s, st);
		} else {
			spdy_put_rst(&s->out, st->id, SPDY_PROTOCOL_ERROR);
			st->in_fin = st->out_fin = st->done = true;
		}
		return;
	}
	st->port = (uint16_t)p;
	/* Old clients send no requestID: the error stream comes first, its data
	 * stream two ids later. */
	st->request_id =
	    rid ? ad_strdup(rid) : ad_asprintf("%u", st->kind == K_PFERROR ? st->id : st->id - 2);
	for (size_t i = 0; i < s->n_streams; i++) {
		stream *o = s->streams[i];
		if (o == st || o->pair || !o->request_id || strcmp(o->request_id, st->request_id) ||
		    o->kind == st->kind || o->kind == K_NONE)
			continue;
		st->pair = o;
		o->pair = st;
		stream *data = st->kind == K_DATA ? st : o;
		pf_dial(s, data, data->pair);
		return;
	}
}

/* ---- inbound frames -------------------------------------------------------- */

static int fail_session(session *s, const char *why)
{
	ad_log(AD_LOG_WARN, "streaming: closing a session: %s", why);
	if (s->transport == T_SPDY) {
		spdy_put_goaway(&s->out, s->last_peer_id, 1 /* protocol error */);
	} else {
		uint8_t frame[2 + 64] = {1002 >> 8, 1002 & 0xff};
		size_t n = strlen(why) > 64 ? 64 : strlen(why);
		memcpy(frame + 2, why, n);
		ws_put_frame(&s->out, WS_CLOSE, frame, 2 + n, NULL);
	}
	s->peer_gone = true;
	return -1;
}

static void stream_data(session *s, stream *st, const uint8_t *d, size_t len, bool fin)
{
	switch (st->kind) {
	case K_STDIN:
		stdin_input(s, d, len);
		if (fin)
			stdin_closed(s);
		break;
	case K_RESIZE:
		resize_input(s, st, d, len);
		ack(s, st, len);
		break;
	case K_DATA:
		if (!st->done && st->fd >= 0)
			hs_buf_put(&st->to_fd, d, len);
		else
			ack(s, st, len);
		break;
	default:
		ack(s, st, len); /* nothing is read from other streams */
		break;
	}
	if (fin)
		st->in_fin = true;
}

static int spdy_event_in(session *s, spdy_event *ev)
{
	stream *st;
	switch (ev->type) {
	case SPDY_SYN_STREAM: {
		if (!(ev->stream_id & 1) || ev->stream_id <= s->last_peer_id) {
			spdy_put_rst(&s->out, ev->stream_id, SPDY_PROTOCOL_ERROR);
			return 0;
		}
		s->last_peer_id = ev->stream_id;
		st = stream_new(s, ev->stream_id, K_NONE);
		if (!st || s->goaway) {
			spdy_put_rst(&s->out, ev->stream_id, SPDY_REFUSED_STREAM);
			return 0;
		}
		if (spdy_put_syn_reply(&s->sp, &s->out, st->id, 0, NULL, 0) < 0)
			return fail_session(s, "header compression failed");
		if (ev->flags & SPDY_FLAG_FIN)
			st->in_fin = true;
		if (s->req->kind == ST_PORTFORWARD) {
			pf_new_stream(s, st, ev);
			return 0;
		}
		static const struct {
			const char *name;
			int kind;
		} types[] = {{"error", K_ERROR},
			     {"stdin", K_STDIN},
			     {"stdout", K_STDOUT},
			     {"stderr", K_STDERR},
			     {"resize", K_RESIZE}};
		const char *type = spdy_header_get(ev, "streamtype");
		for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++)
			if (!strcmp(type, types[i].name))
				st->kind = types[i].kind;
		if (st->kind == K_NONE || s->rc[st->kind] || s->started) {
			spdy_put_rst(&s->out, st->id, SPDY_PROTOCOL_ERROR);
			st->kind = K_NONE;
			st->in_fin = st->out_fin = true;
			return 0;
		}
		s->rc[st->kind] = st;
		if (st->kind == K_STDIN && st->in_fin)
			stdin_closed(s);
		if (have_all_streams(s))
			start_process(s);
		return 0;
	}
	case SPDY_DATA:
		st = stream_find(s, ev->stream_id);
		if (!st || st->in_fin) {
			spdy_put_rst(&s->out, ev->stream_id,
				     st ? 9 /* STREAM_ALREADY_CLOSED */ : SPDY_INVALID_STREAM);
			ack(s, NULL, ev->len);
			return 0;
		}
		stream_data(s, st, ev->data, ev->len, ev->flags & SPDY_FLAG_FIN);
		return 0;
	case SPDY_RST_STREAM:
		st = stream_find(s, ev->stream_id);
		if (!st)
			return 0;
		if (st->kind == K_STDIN)
			stdin_closed(s);
		st->in_fin = st->out_fin = true;
		if (st->kind == K_DATA || st->kind == K_PFERROR) {
			stream *data = st->kind == K_DATA ? st : st->pair;
			if (data) {
				data->done = data->in_fin = data->out_fin = true;
				close_fd(&data->fd);
			}
		}
		return 0;
	case SPDY_SETTINGS:
		if (ev->initial_window >= 0 && ev->initial_window <= 0x7fffffff) {
			for (size_t i = 0; i < s->n_streams; i++)
				s->streams[i]->window += ev->initial_window - s->initial_window;
			s->initial_window = ev->initial_window;
		}
		return 0;
	case SPDY_PING:
		spdy_put_ping(&s->out, ev->value);
		return 0;
	case SPDY_GOAWAY:
		s->goaway = true;
		return 0;
	case SPDY_WINDOW_UPDATE:
		s->flow_control = true;
		if (!ev->stream_id) {
			s->conn_window += ev->value;
		} else if ((st = stream_find(s, ev->stream_id))) {
			st->window += ev->value;
			if (st->window > 0x7fffffff) {
				spdy_put_rst(&s->out, st->id, SPDY_FLOW_CONTROL_ERROR);
				st->out_fin = true;
			}
		}
		return 0;
	default:
		return 0; /* SYN_REPLY, HEADERS: nothing a server needs */
	}
}

static int ws_message_in(session *s, const uint8_t *d, size_t len)
{
	if (!len)
		return 0;
	uint8_t ch;
	_cleanup_free_ uint8_t *dec = NULL;
	if (s->base64) {
		if (d[0] < '0' || d[0] > '9')
			return fail_session(s, "bad channel in a base64 message");
		ch = (uint8_t)(d[0] - '0');
		dec = ad_malloc0(len * 3 / 4 + 3);
		ssize_t n = hs_unbase64((const char *)d + 1, len - 1, dec);
		if (n < 0)
			return fail_session(s, "bad base64 in a message");
		d = dec;
		len = (size_t)n;
	} else {
		ch = d[0];
		d++;
		len--;
	}
	if (ch == CH_CLOSE && s->version >= 5) {
		if (len >= 1 && d[0] == CH_STDIN && s->req->kind != ST_PORTFORWARD)
			stdin_closed(s);
		if (len >= 1 && s->req->kind == ST_PORTFORWARD && (d[0] & 1) == 0) {
			stream *st = stream_find(s, d[0]);
			if (st)
				st->in_fin = true;
		}
		return 0;
	}
	stream *st = stream_find(s, ch);
	if (!st)
		return 0; /* kubelet ignores channels nobody reads */
	stream_data(s, st, d, len, false);
	return 0;
}

static int ws_event_in(session *s, ws_event *ev)
{
	switch (ev->opcode) {
	case WS_TEXT:
	case WS_BINARY:
		return ws_message_in(s, ev->data, ev->len);
	case WS_PING:
		ws_put_frame(&s->out, WS_PONG, ev->data, ev->len, NULL);
		return 0;
	case WS_CLOSE:
		if (!s->ws_closed && !s->completed)
			ws_put_frame(&s->out, WS_CLOSE, ev->data, ev->len > 2 ? 2 : ev->len, NULL);
		s->ws_closed = true;
		s->peer_gone = true;
		return 0;
	default:
		return 0;
	}
}

static int socket_input(session *s, const uint8_t *data, size_t len)
{
	const char *why = NULL;
	if (s->transport == T_SPDY) {
		spdy_feed(&s->sp, data, len);
		spdy_event ev;
		int r;
		while (!s->peer_gone && (r = spdy_next(&s->sp, &ev, &why)) == 1) {
			int k = spdy_event_in(s, &ev);
			spdy_event_clear(&ev);
			if (k < 0)
				return -1;
		}
		return r < 0 && !s->peer_gone ? fail_session(s, why) : 0;
	}
	ws_feed(&s->ws, data, len);
	ws_event ev;
	int r;
	while (!s->peer_gone && (r = ws_next(&s->ws, &ev, &why)) == 1)
		if (ws_event_in(s, &ev) < 0)
			return -1;
	return r < 0 && !s->peer_gone ? fail_session(s, why) : 0;
}

/* ---- the handshake --------------------------------------------------------- */

static const char *const rc_spdy_protocols[] = {"v4.channel.k8s.io", "v3.channel.k8s.io",
						"v2.channel.k8s.io", "channel.k8s.io", NULL};
static const char *const pf_spdy_protocols[] = {"portforward.k8s.io", NULL};
static const char *const rc_ws_protocols[] = {"v5.channel.k8s.io",	  "v4.channel.k8s.io",
					      "v4.base64.channel.k8s.io", "channel.k8s.io",
					      "base64.channel.k8s.io",	  NULL};
static const char *const pf_ws_protocols[] = {"v4.channel.k8s.io", "v4.base64.channel.k8s.io",
					      NULL};

/* The client's offers in its order (comma lists and repeated headers). */
static size_t offers(const hs_http_head *h, const char *name, char *out[], size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < h->n_headers; i++) {
		if (strcasecmp(h->headers[i].name, name))
			continue;
		for (const char *p = h->headers[i].value; *p && n < max;) {
			p += strspn(p, " \t,");
			size_t k = strcspn(p, ",");
			size_t t = k;
			while (t && (p[t - 1] == ' ' || p[t - 1] == '\t'))
				t--;
			if (t)
				out[n++] = ad_strndup(p, t);
			p += k;
		}
	}
	return n;
}

static const char *pick(char *const offered[], size_t n, const char *const *supported)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; supported[j]; j++)
			if (!strcmp(offered[i], supported[j]))
				return supported[j];
	return NULL;
}

static char *list_text(char *const *v, size_t n)
{
	hs_buf b = {0};
	hs_buf_put(&b, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i)
			hs_buf_put(&b, " ", 1);
		hs_buf_put(&b, v[i], strlen(v[i]));
	}
	hs_buf_put(&b, "]", 2);
	return (char *)b.data;
}

static int handshake_spdy(session *s, const hs_http_head *h)
{
	const char *const *supported =
	    s->req->kind == ST_PORTFORWARD ? pf_spdy_protocols : rc_spdy_protocols;
	char *offered[16];
	size_t n = offers(h, "x-stream-protocol-version", offered, 16);
	const char *chosen = pick(offered, n, supported);
	int r = 0;
	if (!n) {
		http_error(s, 400, "Bad Request", NULL,
			   "unable to upgrade: X-Stream-Protocol-Version is required");
		r = -1;
	} else if (!chosen) {
		hs_buf hdrs = {0};
		size_t ns = 0;
		for (; supported[ns]; ns++) {
			char *l = ad_asprintf("X-Accepted-Stream-Protocol-Versions: %s\r\n",
					      supported[ns]);
			hs_buf_put(&hdrs, l, strlen(l));
			free(l);
		}
		hs_buf_put(&hdrs, "", 1);
		_cleanup_free_ char *c = list_text(offered, n);
		_cleanup_free_ char *sv = list_text((char *const *)supported, ns);
		http_error(s, 403, "Forbidden", (const char *)hdrs.data,
			   "unable to upgrade: unable to negotiate protocol: client supports %s, "
			   "server accepts %s",
			   c, sv);
		hs_buf_free(&hdrs);
		r = -1;
	} else {
		char *resp =
		    ad_asprintf("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
				"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: %s\r\n\r\n",
				chosen);
		hs_buf_put(&s->out, resp, strlen(resp));
		free(resp);
		s->transport = T_SPDY;
		s->version = !strcmp(chosen, "v4.channel.k8s.io")   ? 4
			     : !strcmp(chosen, "v3.channel.k8s.io") ? 3
			     : !strcmp(chosen, "v2.channel.k8s.io") ? 2
								    : 1;
		spdy_codec_init(&s->sp);
	}
	for (size_t i = 0; i < n; i++)
		free(offered[i]);
	return r;
}

static int handshake_ws(session *s, const hs_http_head *h)
{
	const char *key = hs_http_header(h, "sec-websocket-key");
	if (!hs_http_has_token(h, "sec-websocket-version", "13")) {
		http_error(s, 426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n",
			   "unsupported WebSocket version (13 is)");
		return -1;
	}
	if (!key || !*key) {
		http_error(s, 400, "Bad Request", NULL, "Sec-WebSocket-Key is required");
		return -1;
	}
	const char *const *supported =
	    s->req->kind == ST_PORTFORWARD ? pf_ws_protocols : rc_ws_protocols;
	char *offered[16];
	size_t n = offers(h, "sec-websocket-protocol", offered, 16);
	const char *chosen = pick(offered, n, supported);
	if (n && !chosen) {
		_cleanup_free_ char *c = list_text(offered, n);
		size_t ns = 0;
		while (supported[ns])
			ns++;
		_cleanup_free_ char *sv = list_text((char *const *)supported, ns);
		http_error(s, 403, "Forbidden", NULL,
			   "requested protocol(s) are not supported: %s; supports %s", c, sv);
		for (size_t i = 0; i < n; i++)
			free(offered[i]);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		free(offered[i]);
	_cleanup_free_ char *accept = ws_accept_key(key);
	_cleanup_free_ char *proto =
	    chosen ? ad_asprintf("Sec-WebSocket-Protocol: %s\r\n", chosen) : ad_strdup("");
	char *resp = ad_asprintf("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
				 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
				 accept, proto);
	hs_buf_put(&s->out, resp, strlen(resp));
	free(resp);
	s->transport = T_WS;
	s->base64 = chosen && strstr(chosen, "base64");
	s->version = !chosen			  ? 1
		     : !strncmp(chosen, "v5.", 3) ? 5
		     : !strncmp(chosen, "v4.", 3) ? 4
						  : 1;
	ws_codec_init(&s->ws, true);
	return 0;
}

/* WebSocket: the channels exist from the start. */
static void ws_open(session *s)
{
	const st_request *q = s->req;
	if (q->kind == ST_PORTFORWARD) {
		for (size_t i = 0; i < q->n_ports && i < 127; i++) {
			stream *d = stream_new(s, (uint32_t)(2 * i), K_DATA);
			stream *e = stream_new(s, (uint32_t)(2 * i + 1), K_PFERROR);
			if (!d || !e)
				break;
			d->port = e->port = q->ports[i];
			d->pair = e;
			e->pair = d;
			/* Each channel opens with its port, 16 bits little-endian. */
			uint8_t port[2] = {(uint8_t)(q->ports[i] & 0xff),
					   (uint8_t)(q->ports[i] >> 8)};
			ws_send(s, (uint8_t)d->id, port, 2);
			ws_send(s, (uint8_t)e->id, port, 2);
			pf_dial(s, d, e);
		}
		return;
	}
	s->rc[K_ERROR] = stream_new(s, CH_ERROR, K_ERROR);
	if (q->in)
		s->rc[K_STDIN] = stream_new(s, CH_STDIN, K_STDIN);
	if (q->out)
		s->rc[K_STDOUT] = stream_new(s, CH_STDOUT, K_STDOUT);
	if (q->err)
		s->rc[K_STDERR] = stream_new(s, CH_STDERR, K_STDERR);
	if (q->tty)
		s->rc[K_RESIZE] = stream_new(s, CH_RESIZE, K_RESIZE);
	/* An empty message on the lowest writable channel says "ready". */
	send_data(s, s->rc[q->out ? K_STDOUT : q->err ? K_STDERR : K_ERROR], "", 0);
	start_process(s);
}

/* ---- the loop -------------------------------------------------------------- */

static bool pf_all_done(session *s)
{
	for (size_t i = 0; i < s->n_streams; i++)
		if (s->streams[i]->kind == K_DATA && !s->streams[i]->done)
			return false;
	return true;
}

static void finish_process(session *s, bool abort)
{
	int code = -1;
	ad_error *e = NULL;
	const st_backend *be = s->env->backend;
	close_fd(&s->proc.stdin_fd);
	close_fd(&s->proc.stdout_fd);
	close_fd(&s->proc.stderr_fd);
	int r = be->finish(s->env->backend_ctx, s->req, &s->proc, abort, &code, &e);
	close_fd(&s->proc.exit_fd);
	if (!abort)
		complete(s, code, r < 0 ? (e ? e->message : "exit status unknown") : NULL);
	ad_error_free(&e);
}

/* Reads one chunk of a process fd; false at EOF. */
static bool read_output(session *s, int *fd, int kind)
{
	uint8_t buf[CHUNK];
	/* Attach frames mix both streams: the backlog alone limits them. Output
	 * nobody asked for is drained. */
	size_t room = CHUNK;
	if (s->proc.framed)
		room = hs_buf_size(&s->out) < OUT_HIGH ? CHUNK : 0;
	else if (s->rc[kind])
		room = send_room(s, s->rc[kind]);
	if (!room)
		return true;
	ssize_t n = read(*fd, buf, room);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	if (n <= 0) { /* EIO from a pty master: every slave closed */
		close_fd(fd);
		return false;
	}
	process_output(s, kind, buf, (size_t)n);
	return true;
}

/* The end of a tty exec's stdin hangs its terminal up, as containerd does
 * (its shim closes the console once the stdin fifo ends): the pty master
 * closes, the process gets SIGHUP and reads end. What it wrote before is
 * still read and sent. */
static void hang_up(session *s)
{
	for (int i = 0; i < 64 && s->proc.stdout_fd >= 0; i++) {
		size_t before = hs_buf_size(&s->out);
		if (!read_output(s, &s->proc.stdout_fd, K_STDOUT) || hs_buf_size(&s->out) == before)
			break;
	}
	close_fd(&s->proc.stdout_fd);
	s->out_eof = true;
}

static void write_stdin(session *s)
{
	int fd = s->proc.framed ? s->proc.stdout_fd : s->proc.stdin_fd;
	if (fd >= 0 && hs_buf_size(&s->to_stdin)) {
		ssize_t n = write(fd, hs_buf_head(&s->to_stdin), hs_buf_size(&s->to_stdin));
		if (n > 0) {
			hs_buf_consume(&s->to_stdin, (size_t)n);
			ack(s, s->rc[K_STDIN], (size_t)n);
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			hs_buf_consume(&s->to_stdin, hs_buf_size(&s->to_stdin));
			s->stdin_eof = true;
		}
	}
	if (s->stdin_eof && !hs_buf_size(&s->to_stdin)) {
		if (s->proc.framed) {
			if (s->proc.stdout_fd >= 0 && !s->stdin_shut)
				shutdown(s->proc.stdout_fd, SHUT_WR);
			s->stdin_shut = true;
		} else {
			close_fd(&s->proc.stdin_fd);
			if (s->req->kind == ST_EXEC && s->req->tty && s->proc.stdout_fd >= 0)
				hang_up(s);
		}
	}
}

static void pf_io(session *s, stream *d, short revents)
{
	if (revents & POLLOUT && hs_buf_size(&d->to_fd)) {
		ssize_t n =
		    send(d->fd, hs_buf_head(&d->to_fd), hs_buf_size(&d->to_fd), MSG_NOSIGNAL);
		if (n > 0) {
			hs_buf_consume(&d->to_fd, (size_t)n);
			ack(s, d, (size_t)n);
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			hs_buf_consume(&d->to_fd, hs_buf_size(&d->to_fd));
			d->fd_eof = true;
			d->in_fin = true;
		}
	}
	if (d->in_fin && !d->fd_shut && !hs_buf_size(&d->to_fd)) {
		shutdown(d->fd, SHUT_WR);
		d->fd_shut = true;
	}
	/* As much as the backlog takes (OUT_HIGH), not one chunk per poll(): a
	 * download then costs a few system calls per 256 KiB. */
	for (size_t room; revents & (POLLIN | POLLHUP | POLLERR) && !d->fd_eof &&
			  (room = send_room(s, d));) {
		uint8_t buf[CHUNK];
		ssize_t n = recv(d->fd, buf, room, 0);
		if (n > 0) {
			send_data(s, d, buf, (size_t)n);
			if ((size_t)n < room)
				break; /* drained for now */
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			d->fd_eof = true;
			if (s->transport == T_SPDY)
				send_fin(s, d);
		} else {
			break;
		}
	}
	pf_check_done(s, d);
}

static void session_loop(session *s)
{
	int stop_fd = s->env->stop_fd;
	for (;;) {
		if (s->req->kind != ST_PORTFORWARD && s->started && !s->completed && s->out_eof &&
		    s->err_eof && s->exited)
			finish_process(s, false);
		if (s->req->kind == ST_PORTFORWARD && s->transport == T_WS && pf_all_done(s) &&
		    !s->completed) {
			s->completed = true;
			uint8_t code[2] = {1000 >> 8, 1000 & 0xff};
			ws_put_frame(&s->out, WS_CLOSE, code, 2, NULL);
		}
		if (s->completed || s->peer_gone || s->peer_eof) {
			break;
		}
		if (hs_buf_size(&s->out) > OUT_MAX) {
			ad_log(AD_LOG_WARN, "streaming: dropping a client that does not read");
			s->peer_gone = true;
			break;
		}
		int64_t now = ad_monotonic_ns();
		int64_t deadline = s->idle_deadline;
		if (!s->started && s->req->kind != ST_PORTFORWARD &&
		    s->creation_deadline < deadline)
			deadline = s->creation_deadline;
		if (now >= deadline) {
			if (!s->started && s->req->kind != ST_PORTFORWARD &&
			    now >= s->creation_deadline) {
				complete(s, -1, "timed out waiting for client to create streams");
				break;
			}
			ad_log(AD_LOG_DEBUG, "streaming: session idle, closing");
			break;
		}
		struct pollfd p[4 + MAX_STREAMS];
		stream *owner[4 + MAX_STREAMS] = {0};
		size_t n = 0;
		bool stalled = hs_buf_size(&s->to_stdin) > IN_HIGH;
		for (size_t i = 0; i < s->n_streams; i++)
			if (hs_buf_size(&s->streams[i]->to_fd) > IN_HIGH)
				stalled = true;
		short ev = (short)((stalled ? 0 : POLLIN) | (hs_buf_size(&s->out) ? POLLOUT : 0));
		p[n++] = (struct pollfd){.fd = s->fd, .events = ev};
		p[n++] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
		int pout = -1, perr = -1, pexit = -1;
		if (s->started && !s->completed) {
			int in_fd = s->proc.framed ? -1 : s->proc.stdin_fd;
			short oev = hs_buf_size(&s->out) < OUT_HIGH ? POLLIN : 0;
			if (s->proc.stdout_fd >= 0) {
				short e = oev;
				if (s->proc.framed && hs_buf_size(&s->to_stdin))
					e |= POLLOUT;
				pout = (int)n;
				p[n++] = (struct pollfd){.fd = s->proc.stdout_fd, .events = e};
			}
			if (s->proc.stderr_fd >= 0) {
				perr = (int)n;
				p[n++] = (struct pollfd){.fd = s->proc.stderr_fd, .events = oev};
			}
			if (in_fd >= 0 && hs_buf_size(&s->to_stdin)) {
				owner[n] = NULL;
				p[n++] = (struct pollfd){.fd = in_fd, .events = POLLOUT};
			}
			if (s->proc.exit_fd >= 0 && !s->exited) {
				pexit = (int)n;
				p[n++] = (struct pollfd){.fd = s->proc.exit_fd, .events = POLLIN};
			}
		}
		size_t first_pf = n;
		for (size_t i = 0; i < s->n_streams; i++) {
			stream *d = s->streams[i];
			if (d->kind != K_DATA || d->done || d->fd < 0)
				continue;
			short e = 0;
			if (!d->fd_eof && send_room(s, d))
				e |= POLLIN;
			if (hs_buf_size(&d->to_fd))
				e |= POLLOUT;
			owner[n] = d;
			p[n++] = (struct pollfd){.fd = d->fd, .events = e};
		}
		int timeout = (int)((deadline - now) / 1000000) + 1;
		if (s->ssl && SSL_pending(s->ssl))
			timeout = 0;
		if (poll(p, n, timeout) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break; /* the server stops */
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) ||
		    (s->ssl && SSL_pending(s->ssl))) {
			uint8_t buf[CHUNK];
			ssize_t r = conn_read(s, buf, sizeof(buf));
			if (r > 0) {
				s->idle_deadline =
				    ad_monotonic_ns() + (int64_t)s->env->idle_timeout_ms * 1000000;
				socket_input(s, buf, (size_t)r);
			} else if (r == 0 || r == -2) {
				s->peer_eof = true;
			}
		}
		if (s->started && !s->completed) {
			if (pout >= 0 && p[pout].revents & (POLLIN | POLLHUP | POLLERR))
				if (!read_output(s, &s->proc.stdout_fd, K_STDOUT))
					s->out_eof = true;
			if (perr >= 0 && p[perr].revents & (POLLIN | POLLHUP | POLLERR))
				if (!read_output(s, &s->proc.stderr_fd, K_STDERR))
					s->err_eof = true;
			if (pexit >= 0 && p[pexit].revents)
				s->exited = true;
			write_stdin(s);
		}
		for (size_t i = first_pf; i < n; i++)
			if (owner[i] && !owner[i]->done && owner[i]->fd == p[i].fd)
				pf_io(s, owner[i], p[i].revents);
		if (flush_out(s) < 0)
			s->peer_eof = true;
	}
	if (s->started && !s->completed && s->req->kind != ST_PORTFORWARD)
		finish_process(s, true); /* the client left early: the exec dies */
}

/* ---- entry ----------------------------------------------------------------- */

static int read_head(session *s, hs_http_head *h)
{
	int64_t end = ad_monotonic_ns() + (int64_t)HEAD_TIMEOUT_MS * 1000000;
	for (;;) {
		const char *why = NULL;
		int r = hs_http_parse_request(h, hs_buf_head(&s->in), hs_buf_size(&s->in), &why);
		if (r == 1)
			return 0;
		if (r < 0) {
			http_error(s, 400, "Bad Request", NULL, "malformed request: %s", why);
			return -1;
		}
		int left = (int)((end - ad_monotonic_ns()) / 1000000);
		if (left <= 0)
			return -1;
		struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
				      {.fd = s->env->stop_fd, .events = POLLIN}};
		if (!(s->ssl && SSL_pending(s->ssl)) && poll(p, 2, left) <= 0)
			continue;
		if (p[1].revents)
			return -1;
		uint8_t buf[4096];
		ssize_t n = conn_read(s, buf, sizeof(buf));
		if (n == 0 || n == -2)
			return -1;
		if (n > 0)
			hs_buf_put(&s->in, buf, (size_t)n);
	}
}

static int tls_accept(session *s)
{
	s->ssl = SSL_new(s->env->tls);
	if (!s->ssl)
		return -1;
	SSL_set_fd(s->ssl, s->fd);
	int64_t end = ad_monotonic_ns() + (int64_t)HEAD_TIMEOUT_MS * 1000000;
	for (;;) {
		int r = SSL_accept(s->ssl);
		if (r == 1)
			return 0;
		int e = SSL_get_error(s->ssl, r);
		int left = (int)((end - ad_monotonic_ns()) / 1000000);
		if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || left <= 0) {
			ERR_clear_error();
			return -1;
		}
		struct pollfd p = {.fd = s->fd,
				   .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
		poll(&p, 1, left);
	}
}

static int route(session *s, const hs_http_head *h)
{
	static const struct {
		const char *prefix;
		st_kind kind;
	} routes[] = {
	    {"/exec/", ST_EXEC}, {"/attach/", ST_ATTACH}, {"/portforward/", ST_PORTFORWARD}};
	const char *token = NULL;
	st_kind kind = ST_EXEC;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		size_t pl = strlen(routes[i].prefix);
		if (!strncmp(h->path, routes[i].prefix, pl) && h->path[pl] &&
		    !strchr(h->path + pl, '/')) {
			token = h->path + pl;
			kind = routes[i].kind;
		}
	}
	if (!token) {
		http_error(s, 404, "Not Found", NULL, "404 page not found");
		return -1;
	}
	if (strcmp(h->method, "GET") && strcmp(h->method, "POST")) {
		http_error(s, 405, "Method Not Allowed", "Allow: GET, POST\r\n",
			   "method %s not allowed", h->method);
		return -1;
	}
	s->req = st_tokens_take(s->env->tokens, token);
	if (!s->req || s->req->kind != kind) {
		http_error(s, 404, "Not Found", NULL,
			   "streaming: unknown, expired or already used token");
		return -1;
	}
	bool upgrade = hs_http_has_token(h, "connection", "upgrade");
	if (upgrade && hs_http_has_token(h, "upgrade", "websocket"))
		return handshake_ws(s, h);
	if (upgrade && hs_http_has_token(h, "upgrade", "spdy/3.1"))
		return handshake_spdy(s, h);
	http_error(s, 400, "Bad Request", NULL,
		   "unable to upgrade: missing upgrade headers in request (Connection: Upgrade "
		   "and Upgrade: SPDY/3.1 or websocket)");
	return -1;
}

void st_session_run(const st_session_env *env, int fd)
{
	session s = {.env = env,
		     .fd = fd,
		     .initial_window = SPDY_DEFAULT_WINDOW,
		     .conn_window = SPDY_DEFAULT_WINDOW};
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	hs_http_head h = {0};
	if ((env->tls && tls_accept(&s) < 0) || read_head(&s, &h) < 0 || route(&s, &h) < 0)
		goto out;
	s.idle_deadline = ad_monotonic_ns() + (int64_t)env->idle_timeout_ms * 1000000;
	s.creation_deadline = ad_monotonic_ns() + (int64_t)env->stream_timeout_ms * 1000000;
	/* What came after the head is already the upgraded protocol. */
	size_t rest = hs_buf_size(&s.in) - h.head_len;
	if (s.transport == T_WS)
		ws_open(&s);
	if (rest)
		socket_input(&s, hs_buf_head(&s.in) + h.head_len, rest);
	hs_buf_free(&s.in);
	if (flush_out(&s) == 0)
		session_loop(&s);
	linger(&s);
out:
	hs_http_head_clear(&h);
	for (size_t i = 0; i < s.n_streams; i++)
		stream_free(s.streams[i]);
	if (s.transport == T_SPDY)
		spdy_codec_free(&s.sp);
	else
		ws_codec_free(&s.ws);
	hs_buf_free(&s.in);
	hs_buf_free(&s.out);
	hs_buf_free(&s.to_stdin);
	hs_buf_free(&s.framed);
	st_request_free(s.req);
	if (s.ssl)
		SSL_free(s.ssl);
	close(fd);
}
