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
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

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
static atomic_int stream_sent;

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

/* rpc_call_after_reply: how often it ran; a "block" one waits for after_go. */
static atomic_int after_ran;
static sem_t after_go;

static void after_reply(void *arg)
{
	if (arg) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 10;
		while (sem_timedwait(&after_go, &ts) < 0 && errno == EINTR)
			;
	}
	atomic_fetch_add(&after_ran, 1);
}

static rpc_code echo_handler(rpc_call *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_,
			     void *userdata)
{
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	Agent__V1__EchoResponse *resp = (Agent__V1__EchoResponse *)resp_;
	if (req->delay_ms > 0 && !wait_or_cancel(call, req->delay_ms))
		return RPC_CANCELLED;
	if (strncmp(req->message, "after", 5) == 0)
		rpc_call_after_reply(call, after_reply,
				     strcmp(req->message, "after:block") == 0 ? &after_go : NULL);
	if (strncmp(req->message, "error:", 6) == 0 || strcmp(req->message, "after:error") == 0)
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
		atomic_fetch_add(&stream_sent, 1);
	}
	return RPC_OK;
}

static const rpc_method methods[] = {
    {ECHO, &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor, RPC_UNARY,
     false, echo_handler, NULL},
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

static int echo(rpc_client *c, const char *path, const char *msg, int delay_ms, unsigned timeout_ms,
		Agent__V1__EchoResponse **ret, rpc_status *st, ad_error **err)
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

/* The after-reply function runs once per call, errors too, and does not
 * hold up the reply: the client has its response while it still blocks. */
static void test_after_reply(void **state)
{
	(void)state;
	assert_int_equal(sem_init(&after_go, 0, 0), 0);
	atomic_store(&after_ran, 0);
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	const char *paths[] = {ECHO, ECHO_INLINE};
	int want = 0;
	for (int i = 0; i < 2; i++) {
		const char *msgs[] = {"after", "after:error"};
		for (int j = 0; j < 2; j++) {
			Agent__V1__EchoResponse *resp = NULL;
			rpc_status rs = {0};
			ad_error *err = NULL;
			assert_int_equal(echo(c, paths[i], msgs[j], 0, 5000, &resp, &rs, &err), 0);
			assert_int_equal(rs.code, j ? RPC_NOT_FOUND : RPC_OK);
			if (resp)
				protobuf_c_message_free_unpacked(&resp->base, NULL);
			rpc_status_clear(&rs);
			want++;
			for (int k = 0; k < 500 && atomic_load(&after_ran) < want; k++)
				sleep_ms(10);
			assert_int_equal(atomic_load(&after_ran), want);
		}
	}
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo(c, ECHO, "after:block", 0, 5000, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_string_equal(resp->message, "after:block");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_clear(&rs);
	assert_int_equal(atomic_load(&after_ran), want);
	sem_post(&after_go);
	for (int k = 0; k < 500 && atomic_load(&after_ran) <= want; k++)
		sleep_ms(10);
	assert_int_equal(atomic_load(&after_ran), want + 1);
	/* A call that never set one runs none. */
	assert_int_equal(echo(c, ECHO, "plain", 0, 5000, &resp, &rs, &err), 0);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_clear(&rs);
	sleep_ms(50);
	assert_int_equal(atomic_load(&after_ran), want + 1);
	rpc_client_free(c);
	server_stop(ts);
	sem_destroy(&after_go);
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

/* A streaming Echo call whose messages are counted and order-checked in sc. */
static int echo_stream(rpc_client *c, Agent__V1__EchoRequest *req, unsigned timeout_ms,
		       stream_ctx *sc, rpc_status *st, ad_error **err)
{
	return rpc_client_stream(c, STREAM, &req->base, &agent__v1__echo_response__descriptor,
				 timeout_ms, on_stream_msg, sc, st, err);
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
	assert_int_equal(echo_stream(c, &req, 10000, &sc, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(sc.n, 200);
	assert_true(sc.order_ok);

	/* Zero messages: OK with nothing (Trailers-Only). */
	req.repeat = 0;
	sc = (stream_ctx){.order_ok = true};
	assert_int_equal(echo_stream(c, &req, 10000, &sc, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(sc.n, 0);

	/* The caller stops early: CANCELLED here, and the handler's next send
	 * fails on the server. */
	atomic_store(&stream_send_failed, 0);
	req.repeat = 100000;
	req.response_bytes = 1000;
	sc = (stream_ctx){.order_ok = true, .stop_after = 3};
	assert_int_equal(echo_stream(c, &req, 10000, &sc, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_CANCELLED);
	rpc_status_clear(&rs);
	assert_int_equal(sc.n, 3);
	for (int i = 0; i < 200 && !atomic_load(&stream_send_failed); i++)
		sleep_ms(10);
	assert_true(atomic_load(&stream_send_failed));

	/* A unary call that gets zero or two messages: response cardinality
	 * violation (the streaming method called as if it were unary). */
	for (int repeat = 0; repeat <= 2; repeat += 2) {
		Agent__V1__EchoResponse *r1 = NULL;
		req.repeat = repeat;
		req.response_bytes = 0;
		assert_int_equal(rpc_client_unary(c, STREAM, &req.base,
						  &agent__v1__echo_response__descriptor, 5000,
						  (ProtobufCMessage **)&r1, &rs, &err),
				 0);
		assert_int_equal(rs.code, RPC_UNIMPLEMENTED);
		assert_null(r1);
		rpc_status_clear(&rs);
	}

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
		const char *text =
		    "nicht gefunden: 100% \xc3\xbc\x62\x65r \xe6\x97\xa5\xe6\x9c\xac "
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
	for (int i = 0; i < 500 && !atomic_load(&handler_saw_cancel); i++)
		sleep_ms(10);
	assert_true(atomic_load(&handler_saw_cancel));

	/* Streaming with a deadline in the middle. */
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = "s";
	req.repeat = 100;
	req.delay_ms = 50;
	stream_ctx sc = {.order_ok = true};
	assert_int_equal(echo_stream(c, &req, 300, &sc, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_DEADLINE_EXCEEDED);
	assert_true(sc.n < 10);
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

	/* Bulk over TLS: a request at the size limit (many records, more than
	 * one read event's worth of input) comes back intact, and a 2 MB stream
	 * arrives whole and in order (many records out, under flow control). */
	Agent__V1__EchoRequest big = AGENT__V1__ECHO_REQUEST__INIT;
	big.message = "";
	uint8_t *buf = malloc(LIMIT);
	for (size_t i = 0; i < LIMIT; i++)
		buf[i] = (uint8_t)(i * 7 + i / 251);
	big.payload.data = buf;
	big.payload.len = payload_for(LIMIT);
	assert_int_equal(rpc_client_unary(c, ECHO, &big.base, &agent__v1__echo_response__descriptor,
					  10000, (ProtobufCMessage **)&resp, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(resp->payload.len, big.payload.len);
	assert_memory_equal(resp->payload.data, buf, big.payload.len);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	free(buf);
	Agent__V1__EchoRequest sreq = AGENT__V1__ECHO_REQUEST__INIT;
	sreq.message = "s";
	sreq.repeat = 200;
	sreq.response_bytes = 10000;
	stream_ctx sc = {.order_ok = true};
	assert_int_equal(echo_stream(c, &sreq, 10000, &sc, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(sc.n, 200);
	assert_true(sc.order_ok);
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

static void block_loop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sleep_ms(1000); /* the loop accepts nothing meanwhile */
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

	/* The listen backlog is not libevent's default 128: 300 connections
	 * made while the server's loop is not accepting all get queued. */
	{
		struct timeval zero = {0, 0};
		event_base_once(ts->base, -1, EV_TIMEOUT, block_loop_cb, NULL, &zero);
		sleep_ms(100);
		int fds[300], queued = 0;
		for (int i = 0; i < 300; i++) {
			fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
			struct sockaddr_un a = {.sun_family = AF_UNIX};
			strcpy(a.sun_path, sock_path);
			queued += connect(fds[i], (struct sockaddr *)&a, sizeof(a)) == 0;
		}
		for (int i = 0; i < 300; i++)
			close(fds[i]);
		assert_int_equal(queued, 300);
	}

	/* A live one is not. */
	struct event_base *base = event_base_new();
	rpc_server_config cfg = {.unix_path = sock_path};
	rpc_server *srv = NULL;
	ad_error *err = NULL;
	assert_int_equal(rpc_server_new(base, &cfg, &srv, &err), -1);
	assert_non_null(strstr(err->message, "already listening"));
	ad_error_free(&err);
	/* Nor is a file that is not a socket. */
	char plain[400];
	snprintf(plain, sizeof(plain), "%s/not-a-socket", tmpdir);
	FILE *f = fopen(plain, "w");
	fclose(f);
	cfg.unix_path = plain;
	assert_int_equal(rpc_server_new(base, &cfg, &srv, &err), -1);
	assert_non_null(strstr(err->message, "is not a socket"));
	ad_error_free(&err);
	struct stat pst;
	assert_int_equal(stat(plain, &pst), 0);
	assert_true(S_ISREG(pst.st_mode));
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

/* ======================================================================
 * Raw HTTP/2: frames written by hand, for inputs no well-behaved client
 * sends. Header blocks go through nghttp2's HPACK codec only.
 * ====================================================================== */

typedef struct raw_conn {
	int fd;
	nghttp2_hd_deflater *def;
	nghttp2_hd_inflater *inf;
	uint8_t rbuf[1 << 16];
	size_t rlen;
} raw_conn;

typedef struct raw_result {
	int http_status;
	int grpc_status;
	char grpc_message[512];
	size_t data_bytes;
	bool ended;
	int rst;    /* -1: none */
	int goaway; /* -1: none */
	bool closed;
} raw_result;

static void raw_write(raw_conn *rc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = send(rc->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the server may have closed: the reader sees it */
		p += n;
		len -= (size_t)n;
	}
}

static void raw_frame(raw_conn *rc, uint8_t type, uint8_t flags, uint32_t sid, const void *payload,
		      size_t len)
{
	uint8_t h[9] = {(uint8_t)(len >> 16),
			(uint8_t)(len >> 8),
			(uint8_t)len,
			type,
			flags,
			(uint8_t)(sid >> 24 & 0x7f),
			(uint8_t)(sid >> 16),
			(uint8_t)(sid >> 8),
			(uint8_t)sid};
	raw_write(rc, h, 9);
	if (len)
		raw_write(rc, payload, len);
}

static raw_conn *raw_open(void)
{
	raw_conn *rc = calloc(1, sizeof(*rc));
	rc->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, sock_path);
	assert_int_equal(connect(rc->fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(nghttp2_hd_deflate_new(&rc->def, 4096), 0);
	assert_int_equal(nghttp2_hd_inflate_new(&rc->inf), 0);
	raw_write(rc, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
	raw_frame(rc, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	return rc;
}

static void raw_close(raw_conn *rc)
{
	close(rc->fd);
	nghttp2_hd_deflate_del(rc->def);
	nghttp2_hd_inflate_del(rc->inf);
	free(rc);
}

/* HEADERS (+CONTINUATION when over 16 KiB) for a gRPC request. `extra`
 * replaces or adds headers: pairs of name, value, NULL-terminated. */
static void raw_request(raw_conn *rc, uint32_t sid, const char *path, const char *const *extra,
			bool end_stream)
{
	nghttp2_nv nv[128];
	size_t n = 0;
	const char *base[] = {
	    ":method",	 "POST",	 ":scheme",	     "http", ":path",	 path, ":authority",
	    "localhost", "content-type", "application/grpc", "te",   "trailers", NULL};
#define ADD(k, v)                                                                                  \
	nv[n++] = (nghttp2_nv)                                                                     \
	{                                                                                          \
		(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE         \
	}
	for (int i = 0; base[i]; i += 2) {
		const char *v = base[i + 1];
		for (int j = 0; extra && extra[j]; j += 2)
			if (strcmp(extra[j], base[i]) == 0)
				v = extra[j + 1];
		ADD(base[i], v);
	}
	for (int j = 0; extra && extra[j]; j += 2) {
		bool dup = false;
		for (int i = 0; base[i]; i += 2)
			dup |= strcmp(extra[j], base[i]) == 0;
		if (!dup)
			ADD(extra[j], extra[j + 1]);
	}
#undef ADD
	size_t bound = nghttp2_hd_deflate_bound(rc->def, nv, n);
	uint8_t *blk = malloc(bound);
	ssize_t len = nghttp2_hd_deflate_hd(rc->def, blk, bound, nv, n);
	assert_true(len > 0);
	size_t off = 0;
	bool first = true;
	do {
		size_t take = (size_t)len - off > 16384 ? 16384 : (size_t)len - off;
		bool last = off + take == (size_t)len;
		uint8_t flags = last ? NGHTTP2_FLAG_END_HEADERS : 0;
		if (first && end_stream)
			flags |= NGHTTP2_FLAG_END_STREAM;
		raw_frame(rc, first ? NGHTTP2_HEADERS : NGHTTP2_CONTINUATION, flags, sid, blk + off,
			  take);
		off += take;
		first = false;
	} while (off < (size_t)len);
	free(blk);
}

/* One gRPC message with an explicit prefix, as DATA frames of `split` bytes. */
static void raw_message(raw_conn *rc, uint32_t sid, uint8_t flag, uint32_t declared,
			const void *body, size_t len, size_t split, bool end_stream)
{
	uint8_t *buf = malloc(5 + len);
	buf[0] = flag;
	buf[1] = (uint8_t)(declared >> 24);
	buf[2] = (uint8_t)(declared >> 16);
	buf[3] = (uint8_t)(declared >> 8);
	buf[4] = (uint8_t)declared;
	memcpy(buf + 5, body, len);
	size_t total = 5 + len, off = 0;
	while (off < total) {
		size_t take = total - off > split ? split : total - off;
		bool last = off + take == total;
		raw_frame(rc, NGHTTP2_DATA, last && end_stream ? NGHTTP2_FLAG_END_STREAM : 0, sid,
			  buf + off, take);
		off += take;
	}
	free(buf);
}

static void raw_rst(raw_conn *rc, uint32_t sid, uint32_t code)
{
	uint8_t p[4] = {(uint8_t)(code >> 24), (uint8_t)(code >> 16), (uint8_t)(code >> 8),
			(uint8_t)code};
	raw_frame(rc, NGHTTP2_RST_STREAM, 0, sid, p, 4);
}

static void raw_inflate(raw_conn *rc, raw_result *res, bool mine, const uint8_t *p, size_t len)
{
	for (;;) {
		nghttp2_nv nv;
		int fl = 0;
		ssize_t n = nghttp2_hd_inflate_hd2(rc->inf, &nv, &fl, p, len, 1);
		assert_true(n >= 0);
		p += n;
		len -= (size_t)n;
		if (fl & NGHTTP2_HD_INFLATE_EMIT && mine) {
			char v[512];
			size_t vl = nv.valuelen < sizeof(v) - 1 ? nv.valuelen : sizeof(v) - 1;
			memcpy(v, nv.value, vl);
			v[vl] = 0;
			if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0)
				res->http_status = atoi(v);
			else if (nv.namelen == 11 && memcmp(nv.name, "grpc-status", 11) == 0)
				res->grpc_status = atoi(v);
			else if (nv.namelen == 12 && memcmp(nv.name, "grpc-message", 12) == 0)
				snprintf(res->grpc_message, sizeof(res->grpc_message), "%s", v);
		}
		if (fl & NGHTTP2_HD_INFLATE_FINAL) {
			nghttp2_hd_inflate_end_headers(rc->inf);
			break;
		}
		if (n == 0 && len == 0)
			break;
	}
}

/* Reads frames until stream `sid` ends (or is reset), a GOAWAY arrives, the
 * connection closes or timeout_ms passes. sid 0: until GOAWAY/close. */
static void raw_wait(raw_conn *rc, uint32_t sid, raw_result *res, int timeout_ms)
{
	memset(res, 0, sizeof(*res));
	res->grpc_status = -1;
	res->rst = -1;
	res->goaway = -1;
	int64_t end = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		while (rc->rlen >= 9) {
			size_t flen =
			    (size_t)rc->rbuf[0] << 16 | (size_t)rc->rbuf[1] << 8 | rc->rbuf[2];
			if (rc->rlen < 9 + flen)
				break;
			uint8_t type = rc->rbuf[3], flags = rc->rbuf[4];
			uint32_t fsid = ((uint32_t)rc->rbuf[5] << 24 | (uint32_t)rc->rbuf[6] << 16 |
					 (uint32_t)rc->rbuf[7] << 8 | rc->rbuf[8]) &
					0x7fffffff;
			const uint8_t *pl = rc->rbuf + 9;
			bool mine = sid && fsid == sid;
			if (type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK))
				raw_frame(rc, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
			if (type == NGHTTP2_HEADERS) {
				size_t skip = 0;
				if (flags & NGHTTP2_FLAG_PADDED)
					skip = 1;
				if (flags & NGHTTP2_FLAG_PRIORITY)
					skip += 5;
				raw_inflate(rc, res, mine, pl + skip, flen - skip);
			}
			if (type == NGHTTP2_DATA && mine)
				res->data_bytes += flen;
			if (type == NGHTTP2_DATA && flen) {
				/* Keep the server's windows open. */
				uint8_t w[4] = {(uint8_t)(flen >> 24), (uint8_t)(flen >> 16),
						(uint8_t)(flen >> 8), (uint8_t)flen};
				raw_frame(rc, NGHTTP2_WINDOW_UPDATE, 0, 0, w, 4);
				raw_frame(rc, NGHTTP2_WINDOW_UPDATE, 0, fsid, w, 4);
			}
			if (mine && (type == NGHTTP2_HEADERS || type == NGHTTP2_DATA) &&
			    (flags & NGHTTP2_FLAG_END_STREAM))
				res->ended = true;
			if (type == NGHTTP2_RST_STREAM && mine)
				res->rst = (int)((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 |
						 (uint32_t)pl[2] << 8 | pl[3]);
			if (type == NGHTTP2_GOAWAY)
				res->goaway = (int)((uint32_t)pl[4] << 24 | (uint32_t)pl[5] << 16 |
						    (uint32_t)pl[6] << 8 | pl[7]);
			memmove(rc->rbuf, rc->rbuf + 9 + flen, rc->rlen - 9 - flen);
			rc->rlen -= 9 + flen;
			if (res->ended || res->rst >= 0 || res->goaway >= 0)
				return;
		}
		int left = (int)((end - ad_monotonic_ns()) / 1000000);
		if (left <= 0)
			return;
		struct pollfd p = {.fd = rc->fd, .events = POLLIN};
		if (poll(&p, 1, left) <= 0)
			return;
		if (rc->rlen == sizeof(rc->rbuf))
			fail_msg("frame too large for the raw reader");
		ssize_t n = recv(rc->fd, rc->rbuf + rc->rlen, sizeof(rc->rbuf) - rc->rlen, 0);
		if (n <= 0) {
			res->closed = true;
			return;
		}
		rc->rlen += (size_t)n;
	}
}

static size_t pack_echo(const char *msg, int delay_ms, uint8_t *buf)
{
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = (char *)msg;
	req.delay_ms = delay_ms;
	return protobuf_c_message_pack(&req.base, buf);
}

static void assert_server_alive(void)
{
	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo(c, ECHO, "alive", 0, 5000, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
}

static void test_raw_framing(void **state)
{
	(void)state;
	tserver *ts = server_start();
	raw_conn *rc = raw_open();
	raw_result res;
	uint8_t body[256];
	size_t blen = pack_echo("split", 0, body);

	/* A message cut into 1-byte DATA frames is reassembled. */
	raw_request(rc, 1, ECHO, NULL, false);
	raw_message(rc, 1, 0, (uint32_t)blen, body, blen, 1, true);
	raw_wait(rc, 1, &res, 5000);
	assert_true(res.ended);
	assert_int_equal(res.http_status, 200);
	assert_int_equal(res.grpc_status, RPC_OK);
	assert_true(res.data_bytes > 5);

	/* Same on the inline path, with the prefix split 2+3. */
	raw_request(rc, 3, ECHO_INLINE, NULL, false);
	raw_message(rc, 3, 0, (uint32_t)blen, body, blen, 2, true);
	raw_wait(rc, 3, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_OK);

	/* A 4 GiB length prefix: refused from the prefix alone. */
	raw_request(rc, 5, ECHO, NULL, false);
	raw_message(rc, 5, 0, 0xffffffffu, body, 10, 16384, false);
	raw_wait(rc, 5, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(res.grpc_message, "4294967295"));

	/* Zero messages, then two messages, on a unary method. */
	raw_request(rc, 7, ECHO, NULL, true);
	raw_wait(rc, 7, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_INTERNAL);
	raw_request(rc, 9, ECHO, NULL, false);
	raw_message(rc, 9, 0, (uint32_t)blen, body, blen, 16384, false);
	raw_message(rc, 9, 0, (uint32_t)blen, body, blen, 16384, true);
	raw_wait(rc, 9, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_UNIMPLEMENTED);

	/* A stream that ends inside a message. */
	raw_request(rc, 11, ECHO, NULL, false);
	raw_message(rc, 11, 0, (uint32_t)blen + 10, body, blen, 16384, true);
	raw_wait(rc, 11, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_INTERNAL);

	/* Compressed with an encoding we do not do. */
	const char *gz[] = {"grpc-encoding", "gzip", NULL};
	raw_request(rc, 13, ECHO, gz, false);
	raw_message(rc, 13, 1, (uint32_t)blen, body, blen, 16384, true);
	raw_wait(rc, 13, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_UNIMPLEMENTED);
	assert_string_equal(res.grpc_message, "grpc-encoding gzip is not supported");
	/* ...and compressed without any encoding at all. */
	raw_request(rc, 15, ECHO, NULL, false);
	raw_message(rc, 15, 1, (uint32_t)blen, body, blen, 16384, true);
	raw_wait(rc, 15, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_INTERNAL);

	/* Not gRPC: wrong content-type, wrong method. */
	const char *ct[] = {"content-type", "application/json", NULL};
	raw_request(rc, 17, ECHO, ct, true);
	raw_wait(rc, 17, &res, 5000);
	assert_int_equal(res.http_status, 415);
	assert_int_equal(res.grpc_status, -1);
	const char *get[] = {":method", "GET", NULL};
	raw_request(rc, 19, ECHO, get, true);
	raw_wait(rc, 19, &res, 5000);
	assert_int_equal(res.http_status, 405);

	/* grpc-timeout: malformed, and already expired. */
	const char *badt[] = {"grpc-timeout", "123456789S", NULL};
	raw_request(rc, 21, ECHO, badt, false);
	raw_message(rc, 21, 0, (uint32_t)blen, body, blen, 16384, true);
	raw_wait(rc, 21, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_INTERNAL);
	const char *tiny[] = {"grpc-timeout", "1n", NULL};
	raw_request(rc, 23, ECHO, tiny, false);
	raw_message(rc, 23, 0, (uint32_t)blen, body, blen, 16384, true);
	raw_wait(rc, 23, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_DEADLINE_EXCEEDED);

	/* Undecodable bytes. */
	uint8_t junk[] = {0x0a, 0xff, 0xff};
	raw_request(rc, 25, ECHO, NULL, false);
	raw_message(rc, 25, 0, sizeof(junk), junk, sizeof(junk), 16384, true);
	raw_wait(rc, 25, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_INVALID_ARGUMENT);
	assert_string_equal(res.grpc_message, "cannot decode agent.v1.EchoRequest");

	/* A header list over max_header_list (64 KiB): the stream dies, the
	 * connection and the server do not. */
	static char big[4000];
	memset(big, 'a', sizeof(big) - 1);
	const char *many[2 * 24 + 1];
	char names[24][16];
	for (int i = 0; i < 24; i++) {
		snprintf(names[i], sizeof(names[i]), "x-big-%d", i);
		many[2 * i] = names[i];
		many[2 * i + 1] = big;
	}
	many[48] = NULL;
	raw_request(rc, 27, ECHO, many, false);
	raw_message(rc, 27, 0, (uint32_t)blen, body, blen, 16384, true);
	raw_wait(rc, 27, &res, 5000);
	assert_true(res.rst >= 0 || res.goaway >= 0 || res.closed || res.grpc_status > 0);
	if (res.goaway < 0 && !res.closed) {
		raw_request(rc, 29, ECHO, NULL, false);
		raw_message(rc, 29, 0, (uint32_t)blen, body, blen, 16384, true);
		raw_wait(rc, 29, &res, 5000);
		assert_int_equal(res.grpc_status, RPC_OK);
	}
	raw_close(rc);

	/* A deadline that passes while the request is still being sent. */
	rc = raw_open();
	const char *t200[] = {"grpc-timeout", "200m", NULL};
	int64_t t0 = ad_monotonic_ns();
	raw_request(rc, 1, ECHO, t200, false);
	raw_wait(rc, 1, &res, 5000);
	int64_t ms = (ad_monotonic_ns() - t0) / 1000000;
	assert_int_equal(res.grpc_status, RPC_DEADLINE_EXCEEDED);
	assert_true(ms >= 150 && ms < 3000);
	/* and on the inline path, half a message in */
	raw_request(rc, 3, ECHO_INLINE, t200, false);
	raw_message(rc, 3, 0, (uint32_t)blen + 5, body, blen, 16384, false);
	raw_wait(rc, 3, &res, 5000);
	assert_int_equal(res.grpc_status, RPC_DEADLINE_EXCEEDED);
	raw_close(rc);
	assert_server_alive();
	server_stop(ts);
}

typedef struct bg_load {
	atomic_bool stop;
	atomic_int ok, bad;
} bg_load;

static void *load_main(void *arg)
{
	bg_load *l = arg;
	rpc_client *c = client_unix();
	while (!atomic_load(&l->stop)) {
		Agent__V1__EchoResponse *resp = NULL;
		rpc_status rs = {0};
		ad_error *err = NULL;
		if (echo(c, ECHO, "bystander", 0, 5000, &resp, &rs, &err) == 0 && rs.code == RPC_OK)
			atomic_fetch_add(&l->ok, 1);
		else
			atomic_fetch_add(&l->bad, 1);
		if (resp)
			protobuf_c_message_free_unpacked(&resp->base, NULL);
		rpc_status_clear(&rs);
		ad_error_free(&err);
		sleep_ms(5);
	}
	rpc_client_free(c);
	return NULL;
}

static void test_rapid_reset(void **state)
{
	(void)state;
	tserver *ts = server_start();
	bg_load load = {0};
	pthread_t th;
	pthread_create(&th, NULL, load_main, &load);
	sleep_ms(50);

	raw_conn *rc = raw_open();
	uint8_t body[64];
	size_t blen = pack_echo("reset-me", 200, body);
	raw_result res = {.goaway = -1};
	uint32_t sid = 1;
	int64_t t0 = ad_monotonic_ns();
	for (int i = 0; i < 10000; i++, sid += 2) {
		raw_request(rc, sid, ECHO, NULL, false);
		raw_message(rc, sid, 0, (uint32_t)blen, body, blen, 16384, true);
		raw_rst(rc, sid, NGHTTP2_CANCEL);
		if (i % 200 == 199) {
			raw_wait(rc, 0, &res, 1);
			if (res.goaway >= 0 || res.closed)
				break;
		}
	}
	if (res.goaway < 0 && !res.closed)
		raw_wait(rc, 0, &res, 5000);
	/* The abuser is told to calm down (or cut off). */
	assert_true(res.goaway == NGHTTP2_ENHANCE_YOUR_CALM ||
		    res.goaway == NGHTTP2_INTERNAL_ERROR || res.closed);
	raw_close(rc);
	int64_t ms = (ad_monotonic_ns() - t0) / 1000000;
	assert_true(ms < 10000);

	/* Others were served throughout, and still are. */
	sleep_ms(100);
	atomic_store(&load.stop, true);
	pthread_join(th, NULL);
	assert_true(atomic_load(&load.ok) > 0);
	assert_int_equal(atomic_load(&load.bad), 0);
	assert_server_alive();
	server_stop(ts);
}

static void test_preface_timeout(void **state)
{
	(void)state;
	tserver *ts = server_start();
	/* Says nothing at all. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	/* An idle but well-behaved connection stays. */
	rpc_client *idle = client_unix();
	int64_t t0 = ad_monotonic_ns();
	char buf[4096];
	ssize_t n;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_true(poll(&p, 1, 15000) > 0);
		n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break; /* closed (the server's SETTINGS came first) */
	}
	int64_t ms = (ad_monotonic_ns() - t0) / 1000000;
	assert_true(ms >= 9000 && ms < 13000);
	close(fd);
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo(idle, ECHO, "idle", 0, 5000, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(idle);
	server_stop(ts);
}

/* max_conns_per_peer: a peer's connection past the limit is closed at
 * accept and counted; another peer (TCP from 127.0.0.1 vs unix uid 0) has
 * its own count; a closed connection makes room again. */
static int raw_connect(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, sa, len), 0);
	return fd;
}

/* 1: the server spoke (its SETTINGS), 0: it closed without a word. */
static int first_read(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_true(poll(&p, 1, 5000) > 0);
	char buf[64];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	return n > 0;
}

static void test_conns_per_peer(void **state)
{
	(void)state;
	rpc_server_config cfg = {.unix_path = sock_path,
				 .tcp_listen = "127.0.0.1:0",
				 .tcp_insecure = true,
				 .max_conns_per_peer = 3};
	tserver *ts = server_start_cfg(&cfg);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, sock_path);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ts->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	rpc_client *c[3];
	for (int i = 0; i < 3; i++)
		c[i] = client_unix();
	int over = raw_connect((struct sockaddr *)&sun, sizeof(sun));
	assert_int_equal(first_read(over), 0);
	close(over);
	assert_int_equal(rpc_server_refused_connections(ts->srv), 1);
	/* TCP from 127.0.0.1 is another peer. */
	int tcp = raw_connect((struct sockaddr *)&sin, sizeof(sin));
	assert_int_equal(first_read(tcp), 1);
	close(tcp);
	/* The three are served all along. */
	for (int i = 0; i < 3; i++) {
		Agent__V1__EchoResponse *resp = NULL;
		rpc_status rs = {0};
		ad_error *err = NULL;
		assert_int_equal(echo(c[i], ECHO, "in", 0, 5000, &resp, &rs, &err), 0);
		assert_int_equal(rs.code, RPC_OK);
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	/* One leaves: room for one more (once the server saw it go). */
	rpc_client_free(c[2]);
	int spoke = 0;
	for (int i = 0; i < 100 && !spoke; i++) {
		int fd = raw_connect((struct sockaddr *)&sun, sizeof(sun));
		spoke = first_read(fd);
		close(fd);
		if (!spoke)
			usleep(20000);
	}
	assert_true(spoke);
	rpc_client_free(c[0]);
	rpc_client_free(c[1]);
	server_stop(ts);
}

static void test_client_after_server_gone(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo(c, ECHO, "before", 0, 0, &resp, &rs, &err), 0);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	resp = NULL;
	server_stop(ts);
	/* The next call fails promptly as a transport error, twice. */
	for (int i = 0; i < 2; i++) {
		int64_t t0 = ad_monotonic_ns();
		assert_int_equal(echo(c, ECHO, "after", 0, 0, &resp, &rs, &err), -1);
		assert_int_equal(err->code, AD_E_UNAVAILABLE);
		assert_true((ad_monotonic_ns() - t0) / 1000000 < 2000);
		ad_error_free(&err);
	}
	rpc_client_free(c);
}

typedef struct slow_reader {
	int n;
	int sent_during_stall;
} slow_reader;

static int on_slow_msg(const ProtobufCMessage *msg, void *userdata)
{
	(void)msg;
	slow_reader *sr = userdata;
	if (sr->n++ == 0) {
		/* Stop reading for a while: the handler must end up blocked in
		 * rpc_call_send rather than queue everything in memory. */
		sleep_ms(1000);
		sr->sent_during_stall = atomic_load(&stream_sent);
	}
	return 0;
}

static void test_stream_backpressure(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = "bp";
	req.repeat = 2000;
	req.response_bytes = 16000; /* 32 MB in all */
	atomic_store(&stream_sent, 0);
	slow_reader sr = {0};
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(rpc_client_stream(c, STREAM, &req.base,
					   &agent__v1__echo_response__descriptor, 60000,
					   on_slow_msg, &sr, &rs, &err),
			 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_int_equal(sr.n, 2000);
	/* Windows (1 MiB) + call queue (1 MiB) + connection buffer (1 MiB) +
	 * socket buffers: well under 32 MB. */
	print_message("sent while the client stalled: %d\n", sr.sent_during_stall);
	assert_true(sr.sent_during_stall > 0);
	assert_true(sr.sent_during_stall < 800);
	rpc_client_free(c);
	server_stop(ts);
}

static void test_slow_calls_do_not_starve(void **state)
{
	(void)state;
	tserver *ts = server_start(); /* 4 permanent workers */
	bg_call b[12];
	for (int i = 0; i < 12; i++) {
		b[i] = (bg_call){.delay_ms = 3000};
		pthread_create(&b[i].th, NULL, bg_main, &b[i]);
	}
	sleep_ms(300);
	rpc_client *c = client_unix();
	Agent__V1__EchoResponse *resp = NULL;
	rpc_status rs = {0};
	ad_error *err = NULL;
	int64_t t0 = ad_monotonic_ns();
	assert_int_equal(echo(c, ECHO, "quick", 0, 5000, &resp, &rs, &err), 0);
	assert_int_equal(rs.code, RPC_OK);
	assert_true((ad_monotonic_ns() - t0) / 1000000 < 1000);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_client_free(c);
	for (int i = 0; i < 12; i++) {
		pthread_join(b[i].th, NULL);
		assert_int_equal(b[i].ret, 0);
		assert_int_equal(b[i].rs.code, RPC_OK);
	}
	server_stop(ts);
}

static int count_threads(void)
{
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "ls /proc/%d/task | wc -l", (int)getpid());
	FILE *f = popen(cmd, "r");
	int n = -1;
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		pclose(f);
	}
	return n;
}

static void run_slow_batch(int n)
{
	bg_call b[16];
	for (int i = 0; i < n; i++) {
		b[i] = (bg_call){.delay_ms = 600};
		pthread_create(&b[i].th, NULL, bg_main, &b[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(b[i].th, NULL);
		assert_int_equal(b[i].ret, 0);
		assert_int_equal(b[i].rs.code, RPC_OK);
	}
}

static void test_extra_workers_come_and_go(void **state)
{
	(void)state;
	tserver *ts = server_start(); /* 4 permanent workers, started on demand */
	int before = count_threads();
	int base = before;
	for (int i = 0; i < 3 && base < before + 4; i++) {
		run_slow_batch(4);
		base = count_threads();
	}
	assert_int_equal(base, before + 4);
	run_slow_batch(12);
	int grown = count_threads();
	assert_true(grown >= base + 6);
	/* Extra workers leave after 10 s without work... */
	int now = grown;
	for (int i = 0; i < 150 && now > base; i++) {
		sleep_ms(100);
		now = count_threads();
	}
	assert_int_equal(now, base);
	/* ...and their slots are reused (joined, then restarted). */
	run_slow_batch(12);
	assert_true(count_threads() >= base + 6);
	server_stop(ts);
}

static void test_stream_message_over_limit(void **state)
{
	(void)state;
	tserver *ts = server_start();
	rpc_client *c = client_unix();
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = "";
	req.repeat = 3;
	req.response_bytes = (int32_t)LIMIT; /* each message is a little over LIMIT */
	stream_ctx sc = {.order_ok = true};
	rpc_status rs = {0};
	ad_error *err = NULL;
	assert_int_equal(echo_stream(c, &req, 10000, &sc, &rs, &err), 0);
	/* The handler returns CANCELLED after the failed send; the status the
	 * client sees is the reason. */
	assert_int_equal(rs.code, RPC_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(rs.message, "exceeds the limit"));
	assert_int_equal(sc.n, 0);
	rpc_status_clear(&rs);
	rpc_client_free(c);
	server_stop(ts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_code_name),
	    cmocka_unit_test(test_unary_unix),
	    cmocka_unit_test(test_stream),
	    cmocka_unit_test(test_after_reply),
	    cmocka_unit_test(test_error_message),
	    cmocka_unit_test(test_unknown_method),
	    cmocka_unit_test(test_deadline),
	    cmocka_unit_test(test_size_limits),
	    cmocka_unit_test(test_tls),
	    cmocka_unit_test(test_connect_errors),
	    cmocka_unit_test(test_socket_takeover),
	    cmocka_unit_test(test_shutdown_drain),
	    cmocka_unit_test(test_raw_framing),
	    cmocka_unit_test(test_rapid_reset),
	    cmocka_unit_test(test_preface_timeout),
	    cmocka_unit_test(test_conns_per_peer),
	    cmocka_unit_test(test_client_after_server_gone),
	    cmocka_unit_test(test_stream_backpressure),
	    cmocka_unit_test(test_slow_calls_do_not_starve),
	    cmocka_unit_test(test_stream_message_over_limit),
	    cmocka_unit_test(test_extra_workers_come_and_go),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
