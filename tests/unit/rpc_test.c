/* rpc_test.c — libadrpc server and client against each other: unix socket
 * and TLS (mutual) listeners, unary and streaming calls, errors, deadlines,
 * size limits, mTLS refusal, shutdown drain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/v1/agent.pb-c.h"
#include "rpc.h"

#define ECHO "/agent.v1.DebugService/Echo"
#define ECHO_INLINE "/test.Debug/EchoInline"
#define STREAM "/agent.v1.DebugService/StreamEcho"
#define LIMIT (256u * 1024)

static char tmpdir[256];
static char sock_path[320];
static atomic_int handler_saw_cancel;
static atomic_int stream_send_failed;

/* ---- handlers ------------------------------------------------------------ */

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Sleeps, but wakes on cancellation like a well-behaved long handler. */
static bool wait_or_cancel(rpc_call *call, int ms)
{
	struct pollfd p = {.fd = rpc_call_cancel_fd(call), .events = POLLIN};
	if (poll(&p, 1, ms) > 0 || rpc_call_cancelled(call)) {
		atomic_store(&handler_saw_cancel, 1);
		return false;
	}
	return true;
}

static rpc_code echo_handler(rpc_call *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_,
			     void *userdata)
{
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	Agent__V1__EchoResponse *resp = (Agent__V1__EchoResponse *)resp_;
	if (req->delay_ms > 0 && !wait_or_cancel(call, req->delay_ms))
		return RPC_CANCELLED;
	if (strncmp(req->message, "error:", 6) == 0)
		return rpc_call_error(call, RPC_NOT_FOUND, "%s", req->message + 6);
	if (strcmp(req->message, "whoami") == 0) {
		const char *id = rpc_call_peer_identity(call);
		resp->message = rpc_call_strdup(call, id ? id : "(none)");
		return RPC_OK;
	}
	if (strcmp(req->message, "peer") == 0) {
		resp->message = rpc_call_strdup(call, rpc_call_peer(call));
		return RPC_OK;
	}
	if (strncmp(req->message, "md:", 3) == 0) {
		const char *v = rpc_call_metadata(call, req->message + 3);
		resp->message = rpc_call_strdup(call, v ? v : "(none)");
		return RPC_OK;
	}
	resp->message = rpc_call_strdup(call, req->message);
	if (req->response_bytes > 0) {
		resp->payload.len = (size_t)req->response_bytes;
		resp->payload.data = rpc_call_alloc(call, resp->payload.len);
		memset(resp->payload.data, 'r', resp->payload.len);
	} else {
		resp->payload = req->payload; /* owned by the call too */
	}
	return RPC_OK;
}

static rpc_code stream_handler(rpc_call *call, const ProtobufCMessage *req_,
			       ProtobufCMessage *resp_, void *userdata)
{
	(void)resp_;
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	for (int i = 0; i < req->repeat; i++) {
		if (req->delay_ms > 0 && !wait_or_cancel(call, req->delay_ms))
			return RPC_CANCELLED;
		Agent__V1__EchoResponse m = AGENT__V1__ECHO_RESPONSE__INIT;
		m.message = req->message;
		m.index = i;
		if (req->response_bytes > 0) {
			m.payload.len = (size_t)req->response_bytes;
			m.payload.data = calloc(1, m.payload.len);
		}
		int r = rpc_call_send(call, &m.base);
		free(m.payload.data);
		if (r < 0) {
			atomic_store(&stream_send_failed, 1);
			return RPC_CANCELLED;
		}
	}
	return RPC_OK;
}

static const rpc_method methods[] = {
	{ECHO, &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor,
	 RPC_UNARY, false, echo_handler, NULL},
	{ECHO_INLINE, &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor,
	 RPC_UNARY, true, echo_handler, NULL},
	{STREAM, &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor,
	 RPC_SERVER_STREAM, false, stream_handler, NULL},
};

/* ---- a server on its own loop thread ------------------------------------- */

typedef struct tserver {
	struct event_base *base;
	rpc_server *srv;
	pthread_t th;
	int port;
} tserver;

static void *loop_main(void *arg)
{
	tserver *ts = arg;
	event_base_loop(ts->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void shutdown_done(void *arg)
{
	tserver *ts = arg;
	event_base_loopbreak(ts->base);
}

static void shutdown_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tserver *ts = arg;
	rpc_server_shutdown(ts->srv, shutdown_done, ts);
}

static void cert_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static tserver *server_start_cfg(rpc_server_config *cfg)
{
	tserver *ts = calloc(1, sizeof(*ts));
	ts->base = event_base_new();
	assert_non_null(ts->base);
	ad_error *err = NULL;
	if (rpc_server_new(ts->base, cfg, &ts->srv, &err) < 0)
		fail_msg("rpc_server_new: %s", err->message);
	if (rpc_server_register(ts->srv, methods, sizeof(methods) / sizeof(methods[0]), &err) < 0)
		fail_msg("register: %s", err->message);
	ts->port = rpc_server_tcp_port(ts->srv);
	assert_int_equal(pthread_create(&ts->th, NULL, loop_main, ts), 0);
	return ts;
}

static tserver *server_start(void)
{
	char cert[300], key[300], ca[300];
	cert_path(cert, sizeof(cert), "server.pem");
	cert_path(key, sizeof(key), "server.key");
	cert_path(ca, sizeof(ca), "ca.pem");
	rpc_server_config cfg = {
		.unix_path = sock_path,
		.tcp_listen = "127.0.0.1:0",
		.tls_cert = cert,
		.tls_key = key,
		.tls_client_ca = ca,
		.max_recv_msg = LIMIT,
		.max_send_msg = LIMIT,
		.workers = 4,
		.drain_timeout_ms = 2000,
	};
	return server_start_cfg(&cfg);
}

static void server_stop(tserver *ts)
{
	struct timeval zero = {0, 0};
	event_base_once(ts->base, -1, EV_TIMEOUT, shutdown_cb, ts, &zero);
	pthread_join(ts->th, NULL);
	rpc_server_free(ts->srv);
	event_base_free(ts->base);
	free(ts);
}

static rpc_client *client_unix(void)
{
	char ep[400];
	snprintf(ep, sizeof(ep), "unix://%s", sock_path);
	rpc_client_config cfg = {.endpoint = ep};
	rpc_client *c = NULL;
	ad_error *err = NULL;
	if (rpc_client_connect(&cfg, &c, &err) < 0)
		fail_msg("connect: %s", err->message);
	return c;
}

static int client_tls(int port, const char *ca_name, const char *cert_name, rpc_client **ret,
		      ad_error **err)
{
	char ep[64], ca[300], cert[300], key[300];
	snprintf(ep, sizeof(ep), "tls://127.0.0.1:%d", port);
	cert_path(ca, sizeof(ca), ca_name);
	rpc_client_config cfg = {.endpoint = ep, .tls_ca = ca};
	if (cert_name) {
		snprintf(cert, sizeof(cert), "%s/%s.pem", tmpdir, cert_name);
		snprintf(key, sizeof(key), "%s/%s.key", tmpdir, cert_name);
		cfg.tls_cert = cert;
		cfg.tls_key = key;
	}
	return rpc_client_connect(&cfg, ret, err);
}

static int echo(rpc_client *c, const char *path, const char *msg, int delay_ms,
		unsigned timeout_ms, Agent__V1__EchoResponse **ret, rpc_status *st, ad_error **err)
{
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = (char *)msg;
	req.delay_ms = delay_ms;
	return rpc_client_unary(c, path, &req.base, &agent__v1__echo_response__descriptor,
				timeout_ms, (ProtobufCMessage **)ret, st, err);
}

/* ---- fixtures ---------------------------------------------------------- */

static int setup_all(void **state)
{
	(void)state;
	evthread_use_pthreads();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rpc_test.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/run/sub/agentd.sock", tmpdir);
	char cmd[4096];
	/* A CA, a server certificate for 127.0.0.1/localhost, a client
	 * certificate, and a second CA with its own client (the wrong one). */
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd %s; exec >openssl.log 2>&1;"
		 "for ca in ca other-ca; do "
		 " openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		 "  -keyout $ca.key -out $ca.pem -days 2 -subj /CN=$ca; done;"
		 "mk() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		 "  -keyout $1.key -out $1.csr -subj /CN=$2;"
		 " printf '%%s\\n' \"$3\" > $1.ext;"
		 " openssl x509 -req -in $1.csr -CA $4.pem -CAkey $4.key -CAcreateserial "
		 "  -out $1.pem -days 2 -extfile $1.ext; };"
		 "mk server localhost 'subjectAltName=DNS:localhost,IP:127.0.0.1' ca;"
		 "mk client test-client 'extendedKeyUsage=clientAuth' ca;"
		 "mk rogue rogue-client 'extendedKeyUsage=clientAuth' other-ca",
		 tmpdir);
	if (system(cmd) != 0) {
		fprintf(stderr, "certificate generation failed, see %s/openssl.log\n", tmpdir);
		return -1;
	}
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests ------------------------------------------------------------- */

static void test_code_name(void **state)
{
	(void)state;
	assert_string_equal(rpc_code_name(RPC_NOT_FOUND), "NOT_FOUND");
	assert_string_equal(rpc_code_name(RPC_OK), "OK");
	assert_string_equal(rpc_code_name(RPC_UNAUTHENTICATED), "UNAUTHENTICATED");
	assert_string_equal(rpc_code_name((rpc_code)99), "UNKNOWN");
}

static void test_unary_unix(void **state)
{
	(void)state;
	tserver *ts = server_start();
	struct stat st;
	assert_int_equal(stat(sock_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	rpc_client *c = client_unix();
	const char *paths[] = {ECHO, ECHO_INLINE};
	for (int round = 0; round < 50; round++) {
		const char *path = paths[round % 2];
		Agent__V1__EchoResponse *resp = NULL;
		rpc_status rs = {0};
		ad_error *err = NULL;
		char msg[64];
		snprintf(msg, sizeof(msg), "hello %d", round);
		assert_int_equal(echo(c, path, msg, 0, 5000, &resp, &rs, &err), 0);
		assert_int_equal(rs.code, RPC_OK);
		assert_non_null(resp);
		assert_string_equal(resp->message, msg);
		protobuf_c_message_free_unpacked(&resp->base, NULL);
		rpc_status_clear(&rs);
	}
	/* peer and metadata */
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo(c, ECHO, "peer", 0, 0, &resp, &rs, &err), 0);
	assert_string_equal(resp->message, "unix");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	assert_int_equal(echo(c, ECHO, "md:user-agent", 0, 0, &resp, &rs, &err), 0);
	assert_non_null(strstr(resp->message, "agentd-rpc/"));
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	assert_int_equal(echo(c, ECHO, "whoami", 0, 0, &resp, &rs, &err), 0);
	assert_string_equal(resp->message, "(none)");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	server_stop(ts);
	/* The socket is removed on shutdown. */
	assert_int_not_equal(stat(sock_path, &st), 0);
}

typedef struct stream_ctx {
	int n;
	int stop_after;
	bool order_ok;
} stream_ctx;

static int on_stream_msg(const ProtobufCMessage *msg, void *userdata)
{
	stream_ctx *sc = userdata;
	const Agent__V1__EchoResponse *m = (const Agent__V1__EchoResponse *)msg;
	if (m->index != sc->n)
		sc->order_ok = false;
	sc->n++;
	return sc->stop_after && sc->n >= sc->stop_after;
}

static void test_stream(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = "s";
	req.repeat = 200;
	req.response_bytes = 10000; /* 2 MB in total: exercises flow control */
	stream_ctx sc = {.order_ok = true};
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(rpc_client_stream(c, STREAM, &req.base,
					   &agent__v1__echo_response__descriptor, 10000,
					   on_stream_msg, &sc, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(sc.n, 200);
	assert_true(sc.order_ok);

	/* Zero messages: OK with nothing (Trailers-Only). */
	req.repeat = 0;
	sc = (stream_ctx){.order_ok = true};
	assert_int_equal(rpc_client_stream(c, STREAM, &req.base,
					   &agent__v1__echo_response__descriptor, 10000,
					   on_stream_msg, &sc, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(sc.n, 0);

	/* The caller stops early: CANCELLED here, and the handler's next send
	 * fails on the server. */
	atomic_store(&stream_send_failed, 0);
	req.repeat = 100000;
	req.response_bytes = 1000;
	sc = (stream_ctx){.order_ok = true, .stop_after = 3};
	assert_int_equal(rpc_client_stream(c, STREAM, &req.base,
					   &agent__v1__echo_response__descriptor, 10000,
					   on_stream_msg, &sc, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_CANCELLED);
	rpc_status_clear(&rs);
	assert_int_equal(sc.n, 3);
	for (int i = 0; i < 200 && !atomic_load(&stream_send_failed); i++)
		sleep_ms(10);
	assert_true(atomic_load(&stream_send_failed));

	/* The connection still works. */
	Agent__V1__EchoResponse *resp = NULL;
	assert_int_equal(echo(c, ECHO, "after", 0, 0, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	server_stop(ts);
}

static void test_error_message(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	const char *paths[] = {ECHO, ECHO_INLINE};
	for (int i = 0; i < 2; i++) {
		const char *text = "nicht gefunden: 100% \xc3\xbc\x62\x65r \xe6\x97\xa5\xe6\x9c\xac "
				   "%41 tab\there\nnewline";
		char msg[256];
		snprintf(msg, sizeof(msg), "error:%s", text);
		Agent__V1__EchoResponse *resp = NULL;
		rpc_status rs = {0};
		ad_error *err = NULL;
		assert_int_equal(echo(c, paths[i], msg, 0, 0, &resp, &rs, &err), 0);
		assert_null(resp);
		assert_int_equal(rs.code, RPC_NOT_FOUND);
		assert_string_equal(rs.message, text);
		rpc_status_clear(&rs);
	}
	rpc_client_free(c);
	server_stop(ts);
}

static void test_unknown_method(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo(c, "/agent.v1.DebugService/Nope", "x", 0, 0, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_UNIMPLEMENTED);
	assert_string_equal(rs.message, "unknown method /agent.v1.DebugService/Nope");
	rpc_status_clear(&rs);
	/* A request of the wrong type cannot be decoded. */
	Agent__V1__InfoResponse bad = AGENT__V1__INFO_RESPONSE__INIT;
	bad.pid = -1;
	bad.started_at = 5; /* field 8 varint: unknown in EchoRequest, fine */
	bad.version = "v";  /* field 1 string: EchoRequest.message, fine */
	/* field 2 as a length-delimited string breaks EchoRequest.repeat (varint). */
	bad.api_version = "zz";
	assert_int_equal(rpc_client_unary(c, ECHO, &bad.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_INVALID_ARGUMENT);
	assert_string_equal(rs.message, "cannot decode agent.v1.EchoRequest");
	rpc_status_clear(&rs);
	rpc_client_free(c);
	server_stop(ts);
}

static void test_deadline(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	atomic_store(&handler_saw_cancel, 0);
	int64_t t0 = ad_monotonic_ns();
	assert_int_equal(echo(c, ECHO, "slow", 3000, 200, &resp, &rs, &err), 0);
	int64_t ms = (ad_monotonic_ns() - t0) / 1000000;
	assert_int_equal(rs.code, RPC_DEADLINE_EXCEEDED);
	assert_true(ms >= 150 && ms < 2000);
	rpc_status_clear(&rs);
	for (int i = 0; i < 100 && !atomic_load(&handler_saw_cancel); i++)
		sleep_ms(10);
	assert_true(atomic_load(&handler_saw_cancel));

	/* Streaming with a deadline in the middle. */
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = "s";
	req.repeat = 100;
	req.delay_ms = 50;
	stream_ctx sc = {.order_ok = true};
	assert_int_equal(rpc_client_stream(c, STREAM, &req.base,
					   &agent__v1__echo_response__descriptor, 300,
					   on_stream_msg, &sc, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_DEADLINE_EXCEEDED);
	assert_true(sc.n >= 1 && sc.n < 10);
	rpc_status_clear(&rs);

	/* A fast call with a deadline is fine and the connection is intact. */
	assert_int_equal(echo(c, ECHO, "quick", 0, 1000, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	server_stop(ts);
}

/* Payload length giving an EchoRequest/EchoResponse of exactly `size` bytes. */
static size_t payload_for(size_t size)
{
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	size_t n = size - 8;
	for (;;) {
		req.payload.len = n;
		size_t s = protobuf_c_message_get_packed_size(&req.base);
		if (s == size)
			return n;
		n += s < size ? 1 : -1;
	}
}

static void test_size_limits(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	req.message = "";
	uint8_t *buf = calloc(1, LIMIT + 10);
	req.payload.data = buf;

	/* Request: exactly at the server's limit passes, one byte over fails. */
	req.payload.len = payload_for(LIMIT);
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(resp->payload.len, req.payload.len);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	resp = NULL;
	req.payload.len = payload_for(LIMIT + 1);
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(rs.message, "larger than max"));
	rpc_status_clear(&rs);

	/* Response: the server's max_send_msg. */
	req.payload.len = 0;
	req.response_bytes = (int32_t)payload_for(LIMIT);
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(resp->payload.len, (size_t)req.response_bytes);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	resp = NULL;
	req.response_bytes = (int32_t)payload_for(LIMIT + 1);
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_RESOURCE_EXHAUSTED);
	rpc_status_clear(&rs);
	rpc_client_free(c);

	/* Client side: its own max_recv_msg, both sides of the boundary. */
	char ep[400];
	snprintf(ep, sizeof(ep), "unix://%s", sock_path);
	rpc_client_config cfg = {.endpoint = ep, .max_recv_msg = 1000};
	assert_int_equal(rpc_client_connect(&cfg, &c, &err), 0);
	req.response_bytes = (int32_t)payload_for(1000);
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	resp = NULL;
	req.response_bytes = (int32_t)payload_for(1001);
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_RESOURCE_EXHAUSTED);
	rpc_status_clear(&rs);
	/* and the connection survives the local reset */
	req.response_bytes = 10;
	assert_int_equal(rpc_client_unary(c, ECHO, &req.base, &agent__v1__echo_response__descriptor,
					  0, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	free(buf);
	server_stop(ts);
}

static void test_tls(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = NULL;
	ad_error *err = NULL;
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};

	if (client_tls(ts->port, "ca.pem", "client", &c, &err) < 0)
		fail_msg("tls connect: %s", err->message);
	assert_int_equal(echo(c, ECHO, "whoami", 0, 2000, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_non_null(strstr(resp->message, "CN=test-client"));
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	assert_int_equal(echo(c, ECHO_INLINE, "hi", 0, 2000, &resp, &rs, &err), 0);
	assert_string_equal(resp->message, "hi");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);

	/* No client certificate, or one from another CA: refused. */
	const char *bad[] = {NULL, "rogue"};
	for (int i = 0; i < 2; i++) {
		c = NULL;
		err = NULL;
		int r = client_tls(ts->port, "ca.pem", bad[i], &c, &err);
		if (r == 0) {
			r = echo(c, ECHO, "x", 0, 2000, &resp, &rs, &err);
			rpc_client_free(c);
		}
		assert_int_equal(r, -1);
		assert_int_equal(err->code, AD_E_UNAVAILABLE);
		ad_error_free(&err);
	}
	/* The client refuses a server it cannot verify. */
	assert_int_equal(client_tls(ts->port, "other-ca.pem", "client", &c, &err), -1);
	assert_non_null(strstr(err->message, "certificate verify failed"));
	ad_error_free(&err);
	server_stop(ts);
}

static void test_connect_errors(void **state)
{
	(void)state;
	char ep[400];
	snprintf(ep, sizeof(ep), "unix://%s/nope.sock", tmpdir);
	rpc_client_config cfg = {.endpoint = ep};
	rpc_client *c = NULL;
	ad_error *err = NULL;
	assert_int_equal(rpc_client_connect(&cfg, &c, &err), -1);
	assert_int_equal(err->code, AD_E_UNAVAILABLE);
	char want[512];
	snprintf(want, sizeof(want),
		 "cannot connect to %s: No such file or directory (is agentd running?)", ep);
	assert_string_equal(err->message, want);
	ad_error_free(&err);
	cfg.endpoint = "bogus://x";
	assert_int_equal(rpc_client_connect(&cfg, &c, &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	ad_error_free(&err);
}

static void test_socket_takeover(void **state)
{
	(void)state;
	/* A stale socket file (nobody listening) is replaced. */
	char dir[400];
	snprintf(dir, sizeof(dir), "%s/run/sub", tmpdir);
	char cmd[500];
	snprintf(cmd, sizeof(cmd), "mkdir -p %s", dir);
	assert_int_equal(system(cmd), 0);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, sock_path);
	unlink(sock_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	tserver *ts = server_start();

	/* A live one is not. */
	struct event_base *base = event_base_new();
	rpc_server_config cfg = {.unix_path = sock_path};
	rpc_server *srv = NULL;
	ad_error *err = NULL;
	assert_int_equal(rpc_server_new(base, &cfg, &srv, &err), -1);
	assert_non_null(strstr(err->message, "already listening"));
	ad_error_free(&err);
	event_base_free(base);

	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	assert_int_equal(echo(c, ECHO, "still", 0, 0, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	server_stop(ts);
}

typedef struct bg_call {
	pthread_t th;
	int delay_ms;
	int ret;
	rpc_status rs;
	ad_error *err;
} bg_call;

static void *bg_main(void *arg)
{
	bg_call *b = arg;
	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	b->ret = echo(c, ECHO, "drain", b->delay_ms, 0, &resp, &b->rs, &b->err);
	if (resp)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	return NULL;
}

static void test_shutdown_drain(void **state)
{
	(void)state;
	/* An in-flight call finishes during the drain... */
	tserver *ts = server_start();
	bg_call b = {.delay_ms = 500};
	pthread_create(&b.th, NULL, bg_main, &b);
	sleep_ms(150);
	int64_t t0 = ad_monotonic_ns();
	server_stop(ts);
	pthread_join(b.th, NULL);
	assert_int_equal(b.ret, 0);
	assert_int_equal(b.rs.code, RPC_OK);
	int64_t ms = (ad_monotonic_ns() - t0) / 1000000;
	assert_true(ms < 1500);

	/* ...one longer than drain_timeout_ms is cut off. */
	ts = server_start();
	atomic_store(&handler_saw_cancel, 0);
	b = (bg_call){.delay_ms = 10000};
	pthread_create(&b.th, NULL, bg_main, &b);
	sleep_ms(150);
	t0 = ad_monotonic_ns();
	server_stop(ts);
	pthread_join(b.th, NULL);
	ms = (ad_monotonic_ns() - t0) / 1000000;
	assert_true(ms < 5000);
	assert_true(b.ret == -1 || b.rs.code != RPC_OK);
	assert_true(atomic_load(&handler_saw_cancel));
	if (b.err)
		ad_error_free(&b.err);
	rpc_status_clear(&b.rs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_code_name),
		cmocka_unit_test(test_unary_unix),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_error_message),
		cmocka_unit_test(test_unknown_method),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_connect_errors),
		cmocka_unit_test(test_socket_takeover),
		cmocka_unit_test(test_shutdown_drain),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
