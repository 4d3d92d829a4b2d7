/* rpc_core_test.c — libadrpc's I/O-free pieces, in memory, without sockets:
 * the HTTP/2 request header rules the server applies in place of nghttp2's
 * HTTP messaging checks, and the server core (core.c, call.c) driven by an
 * nghttp2 client session in the same process: bytes from the client's
 * mem_send go to rpc_core_recv, the core's output to the client's mem_recv.
 * Worker calls stay with the test (the env's dispatch hook) until it runs
 * them, so cancellation and deadlines are seen without threads or timers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "agent/v1/agent.pb-c.h"
#include "core.h"

typedef struct hdr {
	const char *name, *value;
} hdr;

#define END {NULL, NULL}

/* Feeds a header block; returns the first verdict that is not OK, or the
 * verdict of the complete block. */
static rpc_hdr_verdict check_block(bool authority_any, const hdr *h, const char **ret_why)
{
	rpc_req_headers st;
	rpc_req_headers_init(&st, authority_any);
	for (; h->name; h++) {
		rpc_hdr_verdict v = rpc_req_header_check(
		    &st, (const uint8_t *)h->name, strlen(h->name), (const uint8_t *)h->value,
		    strlen(h->value), ret_why);
		if (v != RPC_HDR_OK)
			return v;
	}
	return rpc_req_headers_complete(&st, ret_why);
}

#define GRPC_HEADERS(authority)                                                              \
	{":method", "POST"}, {":scheme", "http"},                                            \
	    {":path", "/runtime.v1.RuntimeService/Version"}, {":authority", authority},     \
	    {"content-type", "application/grpc"}, {"te", "trailers"}

static void test_authority_any_on_unix(void **state)
{
	(void)state;
	const char *why = NULL;
	const char *ok[] = {"/run/agentd/agentd.sock", "", "%%garbage {}|\\^`<>\x7f\x01", "localhost"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		hdr h[] = {GRPC_HEADERS(ok[i]), END};
		assert_int_equal(check_block(true, h, &why), RPC_HDR_OK);
	}
	/* A field value still has no CR or LF (NUL cannot pass through strlen). */
	hdr crlf[] = {GRPC_HEADERS("a\r\nb"), END};
	assert_int_equal(check_block(true, crlf, &why), RPC_HDR_MALFORMED);
	assert_string_equal(why, "invalid :authority");
}

static void test_authority_host_port_on_tcp(void **state)
{
	(void)state;
	const char *why = NULL;
	const char *ok[] = {"localhost", "127.0.0.1:443", "[::1]:8443", "", "user@host:1"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		hdr h[] = {GRPC_HEADERS(ok[i]), END};
		assert_int_equal(check_block(false, h, &why), RPC_HDR_OK);
	}
	const char *bad[] = {"/run/agentd/agentd.sock", "a b", "x{y}", "h\x01"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hdr h[] = {GRPC_HEADERS(bad[i]), END};
		assert_int_equal(check_block(false, h, &why), RPC_HDR_MALFORMED);
		assert_string_equal(why, "invalid :authority");
	}
	hdr host[] = {GRPC_HEADERS("localhost"), {"host", "/path"}, END};
	assert_int_equal(check_block(false, host, &why), RPC_HDR_MALFORMED);
	assert_int_equal(check_block(true, host, &why), RPC_HDR_OK);
}

static void test_pseudo_header_rules(void **state)
{
	(void)state;
	const char *why = NULL;
	struct {
		hdr h[8];
		const char *why;
	} cases[] = {
	    {{{":scheme", "http"}, {":path", "/a"}, END}, "missing :method"},
	    {{{":method", "POST"}, {":path", "/a"}, END}, "missing :scheme"},
	    {{{":method", "POST"}, {":scheme", "http"}, END}, "missing :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", "a"}, END}, "invalid :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", ""}, END}, "invalid :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", "/a b"}, END}, "invalid :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", "*"}, END},
	     ":path * without OPTIONS"},
	    {{{":method", "P T"}, {":scheme", "http"}, {":path", "/a"}, END}, "invalid :method"},
	    {{{":method", "POST"}, {":scheme", "1x"}, {":path", "/a"}, END}, "invalid :scheme"},
	    {{{":method", "POST"}, {":method", "POST"}, END}, "repeated pseudo-header"},
	    {{{":method", "POST"}, {"x", "1"}, {":path", "/a"}, END},
	     "pseudo-header after a regular header"},
	    {{{":protocol", "websocket"}, END}, "unknown pseudo-header"},
	    {{{":", "x"}, END}, "unknown pseudo-header"},
	    {{{":method", "CONNECT"}, END}, "CONNECT without :authority"},
	    {{{":method", "CONNECT"}, {":authority", "h:1"}, {":path", "/"}, END},
	     "CONNECT with :scheme or :path"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why = NULL;
		assert_int_equal(check_block(true, cases[i].h, &why), RPC_HDR_MALFORMED);
		assert_string_equal(why, cases[i].why);
	}
	hdr options[] = {{":method", "OPTIONS"}, {":scheme", "https"}, {":path", "*"}, END};
	assert_int_equal(check_block(false, options, &why), RPC_HDR_OK);
	hdr connect[] = {{":method", "CONNECT"}, {":authority", "h:1"}, END};
	assert_int_equal(check_block(false, connect, &why), RPC_HDR_OK);
}

static void test_regular_header_rules(void **state)
{
	(void)state;
	const char *why = NULL;
	struct {
		hdr extra;
		rpc_hdr_verdict want;
	} cases[] = {
	    {{"x-Upper", "1"}, RPC_HDR_MALFORMED},
	    {{"connection", "close"}, RPC_HDR_MALFORMED},
	    {{"keep-alive", "5"}, RPC_HDR_MALFORMED},
	    {{"proxy-connection", "x"}, RPC_HDR_MALFORMED},
	    {{"transfer-encoding", "chunked"}, RPC_HDR_MALFORMED},
	    {{"upgrade", "h2c"}, RPC_HDR_MALFORMED},
	    {{"te", "gzip"}, RPC_HDR_MALFORMED},
	    {{"te", "Trailers"}, RPC_HDR_OK},
	    {{"content-length", "12a"}, RPC_HDR_MALFORMED},
	    {{"content-length", ""}, RPC_HDR_MALFORMED},
	    {{"content-length", "1234567890123456789"}, RPC_HDR_MALFORMED},
	    {{"x bad", "1"}, RPC_HDR_IGNORE},
	    {{"x-lead", " v"}, RPC_HDR_IGNORE},
	    {{"x-trail", "v\t"}, RPC_HDR_IGNORE},
	    {{"x-crlf", "a\nb"}, RPC_HDR_IGNORE},
	    {{"", "v"}, RPC_HDR_MALFORMED},
	    {{"user-agent", "grpc-go/1.50"}, RPC_HDR_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hdr h[] = {GRPC_HEADERS("localhost"), cases[i].extra, END};
		assert_int_equal(check_block(false, h, &why), cases[i].want);
	}
}

static void test_content_length(void **state)
{
	(void)state;
	const char *why = NULL;
	rpc_req_headers st;
	rpc_req_headers_init(&st, false);
	assert_int_equal(rpc_req_header_check(&st, (const uint8_t *)"content-length", 14,
					      (const uint8_t *)"10", 2, &why),
			 RPC_HDR_OK);
	/* The same value twice is allowed, another one is not. */
	assert_int_equal(rpc_req_header_check(&st, (const uint8_t *)"content-length", 14,
					      (const uint8_t *)"10", 2, &why),
			 RPC_HDR_OK);
	assert_int_equal(rpc_req_header_check(&st, (const uint8_t *)"content-length", 14,
					      (const uint8_t *)"11", 2, &why),
			 RPC_HDR_MALFORMED);
	assert_int_equal(rpc_req_headers_data(&st, 4, false, &why), RPC_HDR_OK);
	assert_int_equal(rpc_req_headers_data(&st, 5, true, &why), RPC_HDR_MALFORMED);
	assert_string_equal(why, "less data than content-length");

	rpc_req_headers_init(&st, false);
	st.content_length = 3;
	assert_int_equal(rpc_req_headers_data(&st, 4, false, &why), RPC_HDR_MALFORMED);
	assert_string_equal(why, "more data than content-length");

	rpc_req_headers_init(&st, false);
	st.content_length = 3;
	assert_int_equal(rpc_req_headers_data(&st, 3, false, &why), RPC_HDR_OK);
	assert_int_equal(rpc_req_headers_data(&st, 0, true, &why), RPC_HDR_OK);

	/* Without content-length any amount is fine. */
	rpc_req_headers_init(&st, false);
	assert_int_equal(rpc_req_headers_data(&st, 1u << 30, true, &why), RPC_HDR_OK);
}

static void test_trailer_rules(void **state)
{
	(void)state;
	const char *why = NULL;
	assert_int_equal(
	    rpc_req_trailer_check((const uint8_t *)":path", 5, (const uint8_t *)"/a", 2, &why),
	    RPC_HDR_MALFORMED);
	assert_string_equal(why, "pseudo-header in trailers");
	assert_int_equal(
	    rpc_req_trailer_check((const uint8_t *)"x-t", 3, (const uint8_t *)"1", 1, &why),
	    RPC_HDR_OK);
	assert_int_equal(rpc_req_trailer_check((const uint8_t *)"connection", 10,
					       (const uint8_t *)"close", 5, &why),
			 RPC_HDR_MALFORMED);
}


/* ======================================================================
 * the core, driven by an nghttp2 client session
 * ====================================================================== */

#define MAX_STREAMS 64

typedef struct reply {
	int http_status;
	int grpc_status; /* -1: none */
	char grpc_message[256];
	bool trailers_only; /* grpc-status in the response HEADERS */
	unsigned header_blocks;
	uint8_t data[4096];
	size_t data_len;
	bool closed;
	uint32_t close_code;
} reply;

typedef struct body {
	uint8_t bytes[4096];
	size_t len, off;
	bool end; /* END_STREAM after the bytes */
} body;

typedef struct harness {
	rpc_core_env env;
	rpc_core *core;
	nghttp2_session *client;
	reply replies[MAX_STREAMS];
	reply overflow; /* streams past MAX_STREAMS (the rapid-reset test) */
	body bodies[MAX_STREAMS];
	rpc_call *held[8]; /* worker calls dispatched to the test */
	size_t nheld;
	unsigned notified;
	bool goaway;
	uint32_t goaway_code;
	int32_t goaway_last;
	bool core_broken;
} harness;

static reply *reply_of(harness *h, int32_t stream_id)
{
	assert_true(stream_id > 0);
	if ((stream_id - 1) / 2 >= MAX_STREAMS)
		return &h->overflow;
	return &h->replies[(stream_id - 1) / 2];
}

static int client_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
			    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			    void *user)
{
	(void)s;
	(void)flags;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	reply *r = reply_of(user, frame->hd.stream_id);
	char v[256];
	snprintf(v, sizeof(v), "%.*s", (int)valuelen, (const char *)value);
	if (namelen == 7 && memcmp(name, ":status", 7) == 0)
		r->http_status = atoi(v);
	else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		r->grpc_status = atoi(v);
		r->trailers_only = r->header_blocks == 0;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		char *dec = rpc_percent_decode(v, strlen(v));
		snprintf(r->grpc_message, sizeof(r->grpc_message), "%s", dec);
		free(dec);
	}
	return 0;
}

static int client_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
	(void)s;
	harness *h = user;
	if (frame->hd.type == NGHTTP2_HEADERS)
		reply_of(h, frame->hd.stream_id)->header_blocks++;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		h->goaway = true;
		h->goaway_code = frame->goaway.error_code;
		h->goaway_last = frame->goaway.last_stream_id;
	}
	return 0;
}

static int client_on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id,
			  const uint8_t *data, size_t len, void *user)
{
	(void)s;
	(void)flags;
	reply *r = reply_of(user, stream_id);
	assert_true(r->data_len + len <= sizeof(r->data));
	memcpy(r->data + r->data_len, data, len);
	r->data_len += len;
	return 0;
}

static int client_on_close(nghttp2_session *s, int32_t stream_id, uint32_t code, void *user)
{
	(void)s;
	reply *r = reply_of(user, stream_id);
	r->closed = true;
	r->close_code = code;
	return 0;
}

static ssize_t client_body_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf,
				size_t length, uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)s;
	(void)stream_id;
	(void)user;
	body *b = src->ptr;
	size_t n = b->len - b->off < length ? b->len - b->off : length;
	memcpy(buf, b->bytes + b->off, n);
	b->off += n;
	if (b->off == b->len) {
		if (!b->end)
			return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	}
	return (ssize_t)n;
}

static void test_dispatch(rpc_call *call, void *arg)
{
	harness *h = arg;
	assert_true(h->nheld < 8);
	h->held[h->nheld++] = call;
}

static void test_notify(rpc_call *call, void *arg)
{
	(void)call;
	harness *h = arg;
	h->notified++;
}

/* Moves bytes both ways until neither side has anything to say. */
static void exchange(harness *h)
{
	for (int round = 0; round < 10000; round++) {
		bool moved = false;
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(h->client, &data)) > 0) {
			moved = true;
			if (!h->core_broken && rpc_core_recv(h->core, data, (size_t)n) != 0)
				h->core_broken = true;
		}
		assert_true(n >= 0);
		if (h->core_broken)
			return;
		assert_int_equal(rpc_core_send(h->core), 0);
		size_t len;
		const uint8_t *out = rpc_core_output(h->core, &len);
		if (len) {
			moved = true;
			assert_int_equal(nghttp2_session_mem_recv(h->client, out, len), (ssize_t)len);
			rpc_core_output_done(h->core, len);
		}
		if (!moved)
			return;
	}
	fail_msg("the two sessions never went quiet");
}

/* The test's methods: Echo on the loop (error:<text> answers NOT_FOUND,
 * big:<n> a payload of n bytes), Echo and StreamEcho on "workers" (the test). */
static rpc_code echo_handler(rpc_call *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_,
			     void *userdata)
{
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	Agent__V1__EchoResponse *resp = (Agent__V1__EchoResponse *)resp_;
	if (strncmp(req->message, "error:", 6) == 0)
		return rpc_call_error(call, RPC_NOT_FOUND, "%s", req->message + 6);
	if (strncmp(req->message, "md:", 3) == 0) {
		const char *v = rpc_call_metadata(call, req->message + 3);
		resp->message = rpc_call_strdup(call, v ? v : "(none)");
		return RPC_OK;
	}
	resp->message = req->message;
	if (strncmp(req->message, "big:", 4) == 0) {
		resp->payload.len = (size_t)atoi(req->message + 4);
		resp->payload.data = rpc_call_alloc(call, resp->payload.len);
		memset(resp->payload.data, 'p', resp->payload.len);
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
		Agent__V1__EchoResponse m = AGENT__V1__ECHO_RESPONSE__INIT;
		m.message = req->message;
		m.index = i;
		if (rpc_call_send(call, &m.base) < 0)
			return RPC_CANCELLED;
	}
	return RPC_OK;
}

static const rpc_method test_methods[] = {
    {"/t.Echo/Inline", &agent__v1__echo_request__descriptor,
     &agent__v1__echo_response__descriptor, RPC_UNARY, true, echo_handler, NULL},
    {"/t.Echo/Worker", &agent__v1__echo_request__descriptor,
     &agent__v1__echo_response__descriptor, RPC_UNARY, false, echo_handler, NULL},
    {"/t.Echo/Stream", &agent__v1__echo_request__descriptor,
     &agent__v1__echo_response__descriptor, RPC_SERVER_STREAM, false, stream_handler, NULL},
};

#define MAX_RECV 256
#define MAX_SEND 512

static int harness_setup(void **state)
{
	harness *h = calloc(1, sizeof(*h));
	rpc_server_config cfg = {.max_recv_msg = MAX_RECV, .max_send_msg = MAX_SEND,
				 .max_header_list = 4096};
	rpc_core_env_init(&h->env, &cfg);
	h->env.dispatch = test_dispatch;
	h->env.notify = test_notify;
	h->env.hook_arg = h;
	ad_error *err = NULL;
	assert_int_equal(rpc_core_methods_add(&h->env, test_methods, 3, &err), 0);
	assert_int_equal(rpc_core_new(&h->env, "unix", NULL, true, h, &h->core), 0);
	for (size_t i = 0; i < MAX_STREAMS; i++)
		h->replies[i].grpc_status = -1;

	nghttp2_session_callbacks *cbs;
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_header_callback(cbs, client_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, client_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, client_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, client_on_close);
	nghttp2_option *opt;
	assert_int_equal(nghttp2_option_new(&opt), 0);
	/* The client sends what the tests ask for, valid or not. */
	nghttp2_option_set_no_http_messaging(opt, 1);
	assert_int_equal(nghttp2_session_client_new2(&h->client, cbs, h, opt), 0);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	assert_int_equal(nghttp2_submit_settings(h->client, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	exchange(h);
	assert_true(rpc_core_got_frame(h->core));
	*state = h;
	return 0;
}

static int harness_teardown(void **state)
{
	harness *h = *state;
	rpc_core_free(h->core);
	for (size_t i = 0; i < h->nheld; i++)
		call_unref(h->held[i]); /* the job's reference */
	nghttp2_session_del(h->client);
	rpc_core_env_free(&h->env);
	free(h);
	return 0;
}

/* A gRPC message (5-byte prefix + bytes) appended to a body. */
static void body_add_raw(body *b, bool compressed, const uint8_t *msg, size_t len)
{
	assert_true(b->len + 5 + len <= sizeof(b->bytes));
	b->bytes[b->len] = compressed;
	b->bytes[b->len + 1] = (uint8_t)(len >> 24);
	b->bytes[b->len + 2] = (uint8_t)(len >> 16);
	b->bytes[b->len + 3] = (uint8_t)(len >> 8);
	b->bytes[b->len + 4] = (uint8_t)len;
	memcpy(b->bytes + b->len + 5, msg, len);
	b->len += 5 + len;
}

static void body_add_echo(body *b, const char *message, int repeat)
{
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = (char *)message;
	req.repeat = repeat;
	uint8_t buf[1024];
	size_t n = protobuf_c_message_get_packed_size(&req.base);
	assert_true(n <= sizeof(buf));
	protobuf_c_message_pack(&req.base, buf);
	body_add_raw(b, false, buf, n);
}

/* Opens a stream with headers (NULL: a valid gRPC request for path), extra
 * headers after them, and body b (NULL: the HEADERS end the stream). */
static int32_t open_stream(harness *h, const char *path, const hdr *headers, const hdr *extra,
			   const body *b)
{
	nghttp2_nv nv[24];
	size_t n = 0;
	hdr std[] = {{":method", "POST"},	     {":scheme", "http"},
		     {":path", path},		     {":authority", "localhost"},
		     {"content-type", "application/grpc"}, {"te", "trailers"},
		     END};
	for (const hdr *list[] = {headers ? headers : std, extra}, **l = list; l < list + 2; l++)
		for (const hdr *x = *l; x && x->name; x++) {
			assert_true(n < 24);
			/* Names as given: a copied name would be lower-cased. */
			nv[n++] = (nghttp2_nv){(uint8_t *)x->name, (uint8_t *)x->value,
					       strlen(x->name), strlen(x->value),
					       NGHTTP2_NV_FLAG_NO_COPY_NAME};
		}
	/* nghttp2 keeps the provider: it points at the stream's own copy. */
	int32_t next = (int32_t)nghttp2_session_get_next_stream_id(h->client);
	body *slot = NULL;
	if (b) {
		slot = &h->bodies[(next - 1) / 2];
		*slot = *b;
	}
	nghttp2_data_provider prd = {.source.ptr = slot, .read_callback = client_body_read};
	int32_t id = nghttp2_submit_request(h->client, NULL, nv, n, b ? &prd : NULL, NULL);
	assert_int_equal(id, next);
	return id;
}

/* One unary Echo call; returns its stream id after the exchange. */
static int32_t echo_call(harness *h, const char *path, const char *message, const hdr *extra)
{
	body *b = calloc(1, sizeof(*b));
	body_add_echo(b, message, 0);
	b->end = true;
	int32_t id = open_stream(h, path, NULL, extra, b);
	free(b);
	exchange(h);
	return id;
}

static Agent__V1__EchoResponse *reply_message(const reply *r, size_t *off)
{
	assert_true(*off + 5 <= r->data_len);
	const uint8_t *p = r->data + *off;
	assert_int_equal(p[0], 0);
	size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
	assert_true(*off + 5 + len <= r->data_len);
	*off += 5 + len;
	Agent__V1__EchoResponse *m = agent__v1__echo_response__unpack(NULL, len, p + 5);
	assert_non_null(m);
	return m;
}

/* The stream ended with a gRPC status (and no RST_STREAM). */
static void assert_status(const reply *r, int code, const char *message)
{
	assert_int_equal(r->http_status, 200);
	assert_int_equal(r->grpc_status, code);
	if (message)
		assert_string_equal(r->grpc_message, message);
	assert_true(r->closed);
	assert_int_equal(r->close_code, NGHTTP2_NO_ERROR);
}

static void assert_reset(const reply *r, uint32_t code)
{
	assert_int_equal(r->http_status, 0);
	assert_true(r->closed);
	assert_int_equal(r->close_code, code);
}

static void test_core_unary(void **state)
{
	harness *h = *state;
	hdr md[] = {{"x-custom", "v1"}, END};
	reply *r = reply_of(h, echo_call(h, "/t.Echo/Inline", "md:x-custom", md));
	assert_status(r, RPC_OK, "");
	assert_false(r->trailers_only);
	assert_int_equal(r->header_blocks, 2); /* response headers, trailers */
	size_t off = 0;
	Agent__V1__EchoResponse *m = reply_message(r, &off);
	assert_string_equal(m->message, "v1");
	assert_int_equal(off, r->data_len);
	agent__v1__echo_response__free_unpacked(m, NULL);
	/* The inline call was answered in the batch: no deadline, no worker. */
	assert_int_equal(h->nheld, 0);
	assert_int_equal(h->notified, 0);
}

static void test_core_trailers_only(void **state)
{
	harness *h = *state;
	reply *r = reply_of(h, echo_call(h, "/t.Echo/Inline", "error:100% \xc3\xbc\n", NULL));
	assert_status(r, RPC_NOT_FOUND, "100% \xc3\xbc\n");
	assert_true(r->trailers_only);
	assert_int_equal(r->header_blocks, 1);
	assert_int_equal(r->data_len, 0);

	r = reply_of(h, echo_call(h, "/t.Echo/Nope", "x", NULL));
	assert_status(r, RPC_UNIMPLEMENTED, "unknown method /t.Echo/Nope");
	assert_true(r->trailers_only);
}

static void test_core_header_validation(void **state)
{
	harness *h = *state;
	/* RFC 9113 section 8: malformed requests are reset with PROTOCOL_ERROR. */
	hdr upper[] = {{"X-Upper", "1"}, END};
	assert_reset(reply_of(h, echo_call(h, "/t.Echo/Inline", "x", upper)),
		     NGHTTP2_PROTOCOL_ERROR);
	hdr conn[] = {{"connection", "close"}, END};
	assert_reset(reply_of(h, echo_call(h, "/t.Echo/Inline", "x", conn)),
		     NGHTTP2_PROTOCOL_ERROR);
	hdr no_scheme[] = {{":method", "POST"},
			   {":path", "/t.Echo/Inline"},
			   {"content-type", "application/grpc"},
			   END};
	int32_t id = open_stream(h, NULL, no_scheme, NULL, NULL);
	exchange(h);
	assert_reset(reply_of(h, id), NGHTTP2_PROTOCOL_ERROR);

	/* Not gRPC: plain HTTP answers. */
	hdr get[] = {{":method", "GET"},	{":scheme", "http"},
		     {":path", "/t.Echo/Inline"}, {"content-type", "application/grpc"},
		     END};
	id = open_stream(h, NULL, get, NULL, NULL);
	exchange(h);
	assert_int_equal(reply_of(h, id)->http_status, 405);
	assert_int_equal(reply_of(h, id)->grpc_status, -1);
	hdr text[] = {{":method", "POST"},	 {":scheme", "http"},
		      {":path", "/t.Echo/Inline"}, {"content-type", "text/plain"},
		      END};
	id = open_stream(h, NULL, text, NULL, NULL);
	exchange(h);
	assert_int_equal(reply_of(h, id)->http_status, 415);
	hdr proto[] = {{":method", "POST"},
		       {":scheme", "http"},
		       {":path", "/t.Echo/Inline"},
		       {":authority", "/run/agentd/agentd.sock"}, /* unix socket: any */
		       {"content-type", "application/grpc+proto"},
		       END};
	body b = {.end = true};
	body_add_echo(&b, "ok", 0);
	id = open_stream(h, NULL, proto, NULL, &b);
	exchange(h);
	assert_status(reply_of(h, id), RPC_OK, "");
	/* A regular header with a bad value is dropped, the call goes on. */
	hdr bad_value[] = {{"x-lead", " v"}, END};
	assert_status(reply_of(h, echo_call(h, "/t.Echo/Inline", "md:x-lead", bad_value)), RPC_OK,
		      "");
}

static void test_core_grpc_timeout(void **state)
{
	harness *h = *state;
	hdr bogus[] = {{"grpc-timeout", "soon"}, END};
	reply *r = reply_of(h, echo_call(h, "/t.Echo/Inline", "x", bogus));
	assert_status(r, RPC_INTERNAL, "malformed grpc-timeout");
	hdr past[] = {{"grpc-timeout", "1n"}, END};
	r = reply_of(h, echo_call(h, "/t.Echo/Worker", "x", past));
	assert_status(r, RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
	assert_int_equal(h->nheld, 0);

	/* Answered inline within its deadline: no timer wanted. */
	int64_t next = -1;
	hdr ten_s[] = {{"grpc-timeout", "10S"}, END};
	assert_status(reply_of(h, echo_call(h, "/t.Echo/Inline", "x", ten_s)), RPC_OK, "");
	assert_true(rpc_core_next_deadline(h->core, &next));
	assert_int_equal(next, 0);
	assert_false(rpc_core_next_deadline(h->core, &next)); /* nothing new */

	/* A worker call: the core asks for a timer and ends the call when told
	 * the time has come, status first, then the handler's cancel flag. */
	int64_t before = ad_monotonic_ns();
	int32_t id = echo_call(h, "/t.Echo/Worker", "x", ten_s);
	assert_int_equal(h->nheld, 1);
	rpc_call *call = h->held[0];
	assert_true(rpc_core_next_deadline(h->core, &next));
	assert_true(next >= before + 10000000000LL && next <= ad_monotonic_ns() + 10000000000LL);
	assert_int_equal(rpc_call_deadline(call), next);
	rpc_core_expire(h->core, next - 1);
	exchange(h);
	assert_int_equal(reply_of(h, id)->header_blocks, 0);
	assert_false(atomic_load(&call->cancelled));
	rpc_core_expire(h->core, next);
	exchange(h);
	assert_status(reply_of(h, id), RPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
	assert_true(reply_of(h, id)->trailers_only);
	assert_true(rpc_call_cancelled(call));
	struct pollfd p = {.fd = rpc_call_cancel_fd(call), .events = POLLIN};
	assert_int_equal(poll(&p, 1, 0), 1);
	assert_true(rpc_core_next_deadline(h->core, &next));
	assert_int_equal(next, 0);
	/* The worker comes back late: its result has nowhere to go. */
	call_run(call);
	assert_null(rpc_core_call_ready(call));
}

static void test_core_size_limits(void **state)
{
	harness *h = *state;
	char big[301];
	memset(big, 'x', 300);
	big[300] = 0;
	reply *r = reply_of(h, echo_call(h, "/t.Echo/Inline", big, NULL));
	assert_status(r, RPC_RESOURCE_EXHAUSTED, "received message larger than max (303 vs. 256)");
	/* A 4 GiB prefix is refused before anything is buffered. */
	body b = {.bytes = {0, 0xff, 0xff, 0xff, 0xff}, .len = 5, .end = true};
	r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, NULL, &b));
	exchange(h);
	assert_status(r, RPC_RESOURCE_EXHAUSTED,
		      "received message larger than max (4294967295 vs. 256)");
	/* A response over max_send_msg. */
	r = reply_of(h, echo_call(h, "/t.Echo/Inline", "big:600", NULL));
	assert_status(r, RPC_RESOURCE_EXHAUSTED, NULL);
	assert_non_null(strstr(r->grpc_message, "exceeds the limit of 512"));
	/* A header list over max_header_list: the stream is reset. */
	char huge[5000];
	memset(huge, 'h', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = 0;
	hdr long_md[] = {{"x-huge", huge}, END};
	r = reply_of(h, echo_call(h, "/t.Echo/Inline", "x", long_md));
	assert_int_equal(r->http_status, 0);
	assert_true(r->closed);
	assert_int_not_equal(r->close_code, NGHTTP2_NO_ERROR);
	/* The session survives all of it. */
	assert_status(reply_of(h, echo_call(h, "/t.Echo/Inline", "still here", NULL)), RPC_OK, "");
}

static void test_core_message_rules(void **state)
{
	harness *h = *state;
	body two = {.end = true};
	body_add_echo(&two, "a", 0);
	body_add_echo(&two, "b", 0);
	reply *r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, NULL, &two));
	exchange(h);
	assert_status(r, RPC_UNIMPLEMENTED,
		      "cardinality violation: more than one request message for a "
		      "non-client-streaming method");
	r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, NULL, NULL));
	exchange(h);
	assert_status(r, RPC_INTERNAL, "cardinality violation: no request message");
	body partial = {.bytes = {0, 0, 0, 0, 10, 1, 2, 3}, .len = 8, .end = true};
	r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, NULL, &partial));
	exchange(h);
	assert_status(r, RPC_INTERNAL, "request ended inside a message");
	body zipped = {.end = true};
	body_add_raw(&zipped, true, (const uint8_t *)"zz", 2);
	r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, NULL, &zipped));
	exchange(h);
	assert_status(r, RPC_INTERNAL, "compressed message without a grpc-encoding");
	hdr gzip[] = {{"grpc-encoding", "gzip"}, END};
	r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, gzip, &zipped));
	exchange(h);
	assert_status(r, RPC_UNIMPLEMENTED, "grpc-encoding gzip is not supported");
	body junk = {.end = true};
	body_add_raw(&junk, false, (const uint8_t *)"\xff\xff", 2);
	r = reply_of(h, open_stream(h, "/t.Echo/Inline", NULL, NULL, &junk));
	exchange(h);
	assert_status(r, RPC_INVALID_ARGUMENT, "cannot decode agent.v1.EchoRequest");
}

static void test_core_worker_calls(void **state)
{
	harness *h = *state;
	int32_t unary = echo_call(h, "/t.Echo/Worker", "from a worker", NULL);
	body b = {.end = true};
	body_add_echo(&b, "s", 3);
	int32_t stream = open_stream(h, "/t.Echo/Stream", NULL, NULL, &b);
	exchange(h);
	assert_int_equal(h->nheld, 2);
	assert_int_equal(reply_of(h, unary)->header_blocks, 0); /* not answered yet */

	/* What a worker does: run the handler, tell the loop. */
	for (size_t i = 0; i < 2; i++)
		call_run(h->held[i]);
	assert_int_equal(h->notified, 1); /* the stream's first message */
	for (size_t i = 0; i < 2; i++)
		assert_ptr_equal(rpc_core_call_ready(h->held[i]), h->core);
	exchange(h);

	reply *r = reply_of(h, unary);
	assert_status(r, RPC_OK, "");
	size_t off = 0;
	Agent__V1__EchoResponse *m = reply_message(r, &off);
	assert_string_equal(m->message, "from a worker");
	agent__v1__echo_response__free_unpacked(m, NULL);

	r = reply_of(h, stream);
	assert_status(r, RPC_OK, "");
	assert_false(r->trailers_only);
	off = 0;
	for (int i = 0; i < 3; i++) {
		m = reply_message(r, &off);
		assert_int_equal(m->index, i);
		agent__v1__echo_response__free_unpacked(m, NULL);
	}
	assert_int_equal(off, r->data_len);
}

static void test_core_rst_stream_cancels(void **state)
{
	harness *h = *state;
	int32_t id = echo_call(h, "/t.Echo/Worker", "x", NULL);
	body b = {.end = true};
	body_add_echo(&b, "s", 3);
	int32_t sid = open_stream(h, "/t.Echo/Stream", NULL, NULL, &b);
	exchange(h);
	assert_int_equal(h->nheld, 2);
	rpc_call *unary = h->held[0], *stream = h->held[1];
	assert_false(rpc_call_cancelled(unary));
	assert_int_equal(nghttp2_submit_rst_stream(h->client, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL),
			 0);
	assert_int_equal(
	    nghttp2_submit_rst_stream(h->client, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL), 0);
	exchange(h);
	assert_true(rpc_call_cancelled(unary));
	struct pollfd p = {.fd = rpc_call_cancel_fd(unary), .events = POLLIN};
	assert_int_equal(poll(&p, 1, 0), 1);
	/* The handler's sends fail, and its result has nowhere to go. */
	Agent__V1__EchoResponse m = AGENT__V1__ECHO_RESPONSE__INIT;
	assert_int_equal(rpc_call_send(stream, &m.base), -1);
	call_run(unary);
	call_run(stream);
	assert_null(rpc_core_call_ready(unary));
	assert_null(rpc_core_call_ready(stream));
	assert_int_equal(reply_of(h, id)->header_blocks, 0);
	assert_int_equal(reply_of(h, id)->close_code, NGHTTP2_CANCEL);
	assert_status(reply_of(h, echo_call(h, "/t.Echo/Inline", "after", NULL)), RPC_OK, "");
}

static void test_core_goaway(void **state)
{
	harness *h = *state;
	assert_status(reply_of(h, echo_call(h, "/t.Echo/Inline", "x", NULL)), RPC_OK, "");
	h->env.shutting_down = true;
	int32_t late = echo_call(h, "/t.Echo/Inline", "x", NULL);
	assert_status(reply_of(h, late), RPC_UNAVAILABLE, "server is shutting down");
	assert_false(h->goaway);
	rpc_core_goaway(h->core);
	exchange(h);
	assert_true(h->goaway);
	assert_int_equal(h->goaway_code, NGHTTP2_NO_ERROR);
	assert_int_equal(h->goaway_last, late);
	/* Nothing in flight: once the client is done too, so is the core. */
	assert_int_equal(nghttp2_session_terminate_session(h->client, NGHTTP2_NO_ERROR), 0);
	exchange(h);
	assert_true(rpc_core_done(h->core));
}

static void test_core_rapid_reset(void **state)
{
	harness *h = *state;
	nghttp2_nv nv[] = {
	    {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
	    {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
	    {(uint8_t *)":path", (uint8_t *)"/t.Echo/Worker", 5, 14, 0},
	    {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
	};
	/* Batches of streams opened, then reset before any answer. */
	for (int batch = 0; batch < 21 && !h->goaway; batch++) {
		int32_t ids[50];
		for (int i = 0; i < 50; i++) {
			ids[i] = nghttp2_submit_headers(h->client, NGHTTP2_FLAG_NONE, -1, NULL, nv,
							4, NULL);
			assert_true(ids[i] > 0);
		}
		exchange(h);
		for (int i = 0; i < 50; i++)
			assert_int_equal(nghttp2_submit_rst_stream(h->client, NGHTTP2_FLAG_NONE,
								   ids[i], NGHTTP2_CANCEL),
					 0);
		exchange(h);
		if (batch < 20)
			assert_false(h->goaway); /* 1000 within the window are tolerated */
	}
	assert_true(h->goaway);
	assert_int_equal(h->goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
}

static void test_core_bad_preface(void **state)
{
	(void)state;
	rpc_core_env env;
	rpc_server_config cfg = {0};
	rpc_core_env_init(&env, &cfg);
	rpc_core *core;
	assert_int_equal(rpc_core_new(&env, "127.0.0.1:1", NULL, false, NULL, &core), 0);
	static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(rpc_core_recv(core, (const uint8_t *)http1, sizeof(http1) - 1), -1);
	assert_false(rpc_core_got_frame(core));
	rpc_core_free(core);
	rpc_core_env_free(&env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_authority_any_on_unix),
	    cmocka_unit_test(test_authority_host_port_on_tcp),
	    cmocka_unit_test(test_pseudo_header_rules),
	    cmocka_unit_test(test_regular_header_rules),
	    cmocka_unit_test(test_content_length),
	    cmocka_unit_test(test_trailer_rules),
#define CORE_TEST(t) cmocka_unit_test_setup_teardown(t, harness_setup, harness_teardown)
	    CORE_TEST(test_core_unary),
	    CORE_TEST(test_core_trailers_only),
	    CORE_TEST(test_core_header_validation),
	    CORE_TEST(test_core_grpc_timeout),
	    CORE_TEST(test_core_size_limits),
	    CORE_TEST(test_core_message_rules),
	    CORE_TEST(test_core_worker_calls),
	    CORE_TEST(test_core_rst_stream_cancels),
	    CORE_TEST(test_core_goaway),
	    CORE_TEST(test_core_rapid_reset),
	    cmocka_unit_test(test_core_bad_preface),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
