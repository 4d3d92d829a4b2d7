/* rpc_frame_fuzz — libFuzzer target for libadrpc's I/O-free code. The input
 * is raw HTTP/2 after the client preface, fed in fuzzer-chosen pieces to
 * the server core (core.c, call.c: frames, request rules, routing,
 * messages, limits, deadlines, responses), whose output is serialized and
 * dropped; the same bytes also go through the message framer on its own,
 * grpc-message percent-coding and grpc-timeout parsing. The first byte
 * picks the size limits, the second the piece size. Built and run by
 * tests/fuzz/run.sh (AGENTD_FUZZ); seeds in corpus/rpc_frame_fuzz/ (h2-*:
 * SETTINGS, one request's HEADERS and DATA). */
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "agent/v1/agent.pb-c.h"
#include "core.h"

typedef struct fuzz_ctx {
	size_t msgs;
	size_t bytes;
	uint8_t sum;
} fuzz_ctx;

static int on_msg(const uint8_t *msg, size_t len, bool compressed, void *ctx)
{
	fuzz_ctx *fc = ctx;
	(void)compressed;
	/* Touch every byte so ASan sees out-of-bounds views. */
	for (size_t i = 0; i < len; i++)
		fc->sum += msg[i];
	fc->msgs++;
	fc->bytes += len;
	return fc->msgs > 1000 ? RPC_INTERNAL : 0;
}

/* Handlers: an echo (inline and on a "worker", which here runs at once on
 * the same thread) and a short stream. */
static rpc_code fuzz_echo(rpc_call *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_,
			  void *userdata)
{
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	Agent__V1__EchoResponse *resp = (Agent__V1__EchoResponse *)resp_;
	if (req->repeat < 0)
		return rpc_call_error(call, RPC_NOT_FOUND, "%s", req->message);
	resp->message = rpc_call_strdup(call, rpc_call_metadata(call, "x-echo"));
	resp->payload = req->payload;
	return RPC_OK;
}

static rpc_code fuzz_stream(rpc_call *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_,
			    void *userdata)
{
	(void)resp_;
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	for (int i = 0; i < req->repeat && i < 4; i++) {
		Agent__V1__EchoResponse m = AGENT__V1__ECHO_RESPONSE__INIT;
		m.message = req->message;
		m.index = i;
		if (rpc_call_send(call, &m.base) < 0)
			return RPC_CANCELLED;
	}
	return RPC_OK;
}

static const rpc_method fuzz_methods[] = {
    {"/f/Inline", &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor,
     RPC_UNARY, true, fuzz_echo, NULL},
    {"/f/Worker", &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor,
     RPC_UNARY, false, fuzz_echo, NULL},
    {"/f/Stream", &agent__v1__echo_request__descriptor, &agent__v1__echo_response__descriptor,
     RPC_SERVER_STREAM, false, fuzz_stream, NULL},
};

static void fuzz_dispatch(rpc_call *call, void *arg)
{
	(void)arg;
	call_run(call);
	rpc_core_call_ready(call);
	call_unref(call); /* the job's reference */
}

static void fuzz_notify(rpc_call *call, void *arg)
{
	(void)call;
	(void)arg;
}

/* Drops whatever the core has serialized. */
static int fuzz_drain(rpc_core *core)
{
	if (rpc_core_send(core) != 0)
		return -1;
	size_t len;
	rpc_core_output(core, &len);
	if (len > RPC_CORE_OUTBUF_MAX + (1u << 20))
		abort(); /* the output bound holds, give or take a frame */
	rpc_core_output_done(core, len);
	return 0;
}

static void fuzz_core(size_t max, size_t piece, const uint8_t *data, size_t size)
{
	rpc_server_config cfg = {.max_recv_msg = max, .max_send_msg = max,
				 .max_header_list = max < 256 ? 256 : max};
	rpc_core_env env;
	rpc_core_env_init(&env, &cfg);
	env.dispatch = fuzz_dispatch;
	env.notify = fuzz_notify;
	ad_error *err = NULL;
	if (rpc_core_methods_add(&env, fuzz_methods, 3, &err) != 0)
		abort();
	rpc_core *core;
	if (rpc_core_new(&env, "unix", NULL, max & 1, NULL, &core) != 0)
		abort();
	int rv = rpc_core_recv(core, (const uint8_t *)NGHTTP2_CLIENT_MAGIC,
			       NGHTTP2_CLIENT_MAGIC_LEN);
	for (size_t off = 0; rv == 0 && off < size;) {
		size_t take = size - off < piece ? size - off : piece;
		rv = rpc_core_recv(core, data + off, take);
		if (rv == 0)
			rv = fuzz_drain(core);
		off += take;
	}
	if (rv == 0) {
		int64_t next;
		rpc_core_next_deadline(core, &next);
		rpc_core_expire(core, INT64_MAX);
		rpc_core_goaway(core);
		fuzz_drain(core);
	}
	rpc_core_free(core);
	rpc_core_env_free(&env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	/* First byte: the receive limit (as a power of two); second: piece size. */
	size_t max = (size_t)1 << (data[0] % 24);
	size_t piece = (size_t)data[1] + 1;
	data += 2;
	size -= 2;

	rpc_framer fr = {0};
	fuzz_ctx fc = {0};
	for (size_t off = 0; off < size;) {
		size_t take = size - off < piece ? size - off : piece;
		uint32_t big = 0;
		int r = rpc_framer_feed(&fr, data + off, take, max, on_msg, &fc, &big);
		if (r == RPC_RESOURCE_EXHAUSTED && big <= max)
			abort(); /* refused a message within the limit */
		if (r != RPC_OK)
			break;
		if (rpc_framer_buffered(&fr) > max)
			abort(); /* buffered more than the limit allows */
		off += take;
	}
	rpc_framer_reset(&fr);

	fuzz_core(max, piece, data, size);

	char *dec = rpc_percent_decode((const char *)data, size);
	char *enc = rpc_percent_encode(dec, size + 1);
	char *back = rpc_percent_decode(enc, strlen(enc));
	if (strcmp(back, dec) != 0)
		abort(); /* encode/decode must round-trip */
	free(dec);
	free(enc);
	free(back);

	int64_t ns;
	(void)rpc_timeout_parse((const char *)data, size, &ns);
	return 0;
}
