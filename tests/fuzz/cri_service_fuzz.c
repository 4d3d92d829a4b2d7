/* cri_service_fuzz.c — libFuzzer target for every CRI request as a client's
 * bytes reach the daemon: an nghttp2 client session in memory sends one gRPC
 * call to libadrpc's server core (lib/rpc/core.h), where the CRI methods are
 * registered as agentd registers them (cri_register into a svc_table), on
 * the real image store and pod manager in a scratch root. The core decodes
 * the request and runs the real handler: validation, lookups, errors.
 *
 * Nothing here can run a container or reach a registry: the pod manager is
 * opened without a runtime (everything that needs one answers UNAVAILABLE:
 * no process, netns, cgroup or CNI call), and the image fetch helper is a
 * path that does not exist, so PullImage fails before any network code
 * runs (its reference parsing is ref_fuzz's too). Left out: server-streaming
 * methods that have a handler (GetContainerEvents waits for events until the
 * call ends); the streaming ones that answer UNIMPLEMENTED are in.
 *
 * Input: one byte picks the method (modulo their number, in the order of
 * the services' descriptors, RuntimeService then ImageService), the rest is
 * the request protobuf. Checks beyond "no crash, no leak": every call ends
 * with a grpc-status, a non-OK status has a grpc-message, an OK unary answer
 * is one message that decodes as the method's response. With
 * CRI_SERVICE_FUZZ_TRACE set, each call's method and status go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "core.h"
#include "cri.h"

/* What the client saw of its one call. */
typedef struct reply {
	int grpc_status;   /* -1: none */
	char message[128]; /* grpc-message as sent (percent-coded), cut short */
	bool closed;
	uint32_t close_code;
	uint8_t *data;
	size_t len;
} reply;

typedef struct upload {
	const uint8_t *bytes;
	size_t len, off;
} upload;

static struct {
	char base[64];
	cfg_config cfg;
	store *images;
	mgr *pods;
	cri_service cri;
	svc_table table;
	rpc_core_env env;
	const rpc_method **fuzzed;
	size_t n_fuzzed;
	nghttp2_session_callbacks *cbs;
} g;

/* Worker methods run at once, on this thread, as the pool runs them. */
static void fuzz_dispatch(rpc_call *call, void *arg)
{
	(void)arg;
	call_run(call);
	rpc_core_call_ready(call);
	if (call->after_fn)
		call->after_fn(call->after_arg);
	call_unref(call); /* the job's reference */
}

static void fuzz_notify(rpc_call *call, void *arg)
{
	(void)call;
	(void)arg;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	(void)s;
	(void)frame;
	(void)flags;
	reply *r = user;
	if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		int code = 0;
		for (size_t i = 0; i < valuelen; i++) {
			if (value[i] < '0' || value[i] > '9' || code > 16)
				abort(); /* not a status code */
			code = code * 10 + (value[i] - '0');
		}
		if (valuelen == 0 || code > 16 || r->grpc_status >= 0)
			abort(); /* empty, out of range, or a second one */
		r->grpc_status = code;
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		snprintf(r->message, sizeof(r->message), "%.*s", (int)valuelen, value);
	}
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
		   size_t len, void *user)
{
	(void)s;
	(void)flags;
	(void)stream_id;
	reply *r = user;
	r->data = realloc(r->data, r->len + len);
	memcpy(r->data + r->len, data, len);
	r->len += len;
	return 0;
}

static int on_close(nghttp2_session *s, int32_t stream_id, uint32_t code, void *user)
{
	(void)s;
	(void)stream_id;
	reply *r = user;
	r->closed = true;
	r->close_code = code;
	return 0;
}

static ssize_t upload_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
			   uint32_t *flags, nghttp2_data_source *src, void *user)
{
	(void)s;
	(void)stream_id;
	(void)user;
	upload *u = src->ptr;
	size_t n = u->len - u->off < length ? u->len - u->off : length;
	memcpy(buf, u->bytes + u->off, n);
	u->off += n;
	if (u->off == u->len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static void teardown(void)
{
	free(g.fuzzed);
	nghttp2_session_callbacks_del(g.cbs);
	rpc_core_env_free(&g.env);
	svc_table_free(&g.table);
	mgr_close(g.pods);
	store_close(g.images);
	cfg_free(&g.cfg);
	ad_error *err = NULL;
	if (ad_remove_tree(g.base, &err) < 0) {
		fprintf(stderr, "cri_service_fuzz: %s\n", err->message);
		ad_error_free(&err);
	}
}

static void fail_setup(const char *what, ad_error *err)
{
	fprintf(stderr, "cri_service_fuzz: %s: %s\n", what, err ? err->message : "failed");
	ad_error_free(&err);
	ad_remove_tree(g.base, NULL);
	abort();
}

/* The daemon's set-up (agent/main.c) on a scratch root under /dev/shm
 * (tmpfs: SQLite's writes cost no disk), without runtime or fetch helper. */
static void setup(void)
{
	snprintf(g.base, sizeof(g.base), "/dev/shm/cri_service_fuzz.XXXXXX");
	if (!mkdtemp(g.base)) {
		snprintf(g.base, sizeof(g.base), "/tmp/cri_service_fuzz.XXXXXX");
		if (!mkdtemp(g.base))
			abort();
	}
	/* Host files stay out of it: no certs.d, auth file, CNI or subuid
	 * file of the host is read. The socket is named (a valid config has a
	 * listener) but never bound; no streaming or metrics port opens. */
	_cleanup_free_ char *conf =
	    ad_asprintf("[agentd]\nroot = %1$s/root\nstate = %1$s/state\nlog_level = error\n"
			"[grpc]\nlisten = %1$s/agentd.sock\n"
			"[images]\ncerts_dir =\nauth_file =\nfetch_helper = %1$s/no-fetch-helper\n"
			"[cni]\nconf_dir = %1$s/cni/net.d\nplugin_dirs = %1$s/cni/bin\n"
			"[userns]\nsubuid_file = %1$s/subuid\nsubgid_file = %1$s/subgid\n"
			"[streaming]\nlisten =\n"
			"[metrics]\nlisten =\n",
			g.base);
	ad_error *err = NULL;
	cfg_init(&g.cfg);
	if (cfg_load_string(&g.cfg, conf, "cri_service_fuzz", &err) < 0 ||
	    cfg_validate(&g.cfg, &err) < 0)
		fail_setup("config", err);
	ad_log_set_level(g.cfg.log_level);
	if (ad_mkdir_p(g.cfg.root, 0711, &err) < 0 || ad_mkdir_p(g.cfg.state, 0711, &err) < 0)
		fail_setup("dirs", err);
	if (agent_images_open(&g.cfg, &g.images, &err) < 0)
		fail_setup("images", err);
	if (mgr_open_without_runtime(&g.cfg, g.images, &g.pods, &err) < 0)
		fail_setup("pods", err);
	g.cri = (cri_service){.pods = g.pods, .images = g.images};
	cri_backfill_runtime_configs(&g.cri);
	cri_register(&g.table, &g.cri);

	rpc_server_config sc = {.max_recv_msg = g.cfg.max_recv_msg_size,
				.max_send_msg = g.cfg.max_send_msg_size,
				.max_concurrent_streams = g.cfg.max_concurrent_streams};
	rpc_core_env_init(&g.env, &sc);
	g.env.dispatch = fuzz_dispatch;
	g.env.notify = fuzz_notify;
	if (rpc_core_methods_add(&g.env, g.table.methods, g.table.n, &err) < 0)
		fail_setup("methods", err);
	g.fuzzed = calloc(g.table.n, sizeof(*g.fuzzed));
	for (size_t i = 0; i < g.table.n; i++) {
		const rpc_method *m = &g.table.methods[i];
		const cri_route *route = m->userdata;
		if (m->kind == RPC_SERVER_STREAM && route->rpc)
			continue; /* waits for what it streams */
		g.fuzzed[g.n_fuzzed++] = m;
	}

	nghttp2_session_callbacks_new(&g.cbs);
	nghttp2_session_callbacks_set_on_header_callback(g.cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g.cbs, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(g.cbs, on_close);
	atexit(teardown);
}

/* Moves bytes both ways until neither side has anything to say; false if
 * the server broke the connection. */
static bool exchange(nghttp2_session *client, rpc_core *core)
{
	for (int round = 0; round < 1000; round++) {
		bool moved = false;
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(client, &data)) > 0) {
			moved = true;
			if (rpc_core_recv(core, data, (size_t)n) != 0)
				return false;
		}
		if (n < 0 || rpc_core_send(core) != 0)
			abort();
		size_t len;
		const uint8_t *out = rpc_core_output(core, &len);
		if (len) {
			moved = true;
			if (nghttp2_session_mem_recv(client, out, len) != (ssize_t)len)
				abort(); /* the server's HTTP/2 is broken */
			rpc_core_output_done(core, len);
		}
		if (!moved)
			return true;
	}
	abort(); /* the two sessions never went quiet */
}

/* An OK unary answer: one uncompressed message that decodes as its type. */
static void check_response(const rpc_method *m, const reply *r)
{
	if (r->len < 5 || r->data[0] != 0)
		abort();
	size_t len = (size_t)r->data[1] << 24 | (size_t)r->data[2] << 16 | (size_t)r->data[3] << 8 |
		     r->data[4];
	if (len != r->len - 5)
		abort();
	ProtobufCMessage *msg = protobuf_c_message_unpack(m->response, NULL, len, r->data + 5);
	if (!msg)
		abort();
	protobuf_c_message_free_unpacked(msg, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!g.cbs)
		setup();
	if (size < 1)
		return 0;
	const rpc_method *m = g.fuzzed[data[0] % g.n_fuzzed];
	size_t len = size - 1;
	uint8_t *body = malloc(5 + len);
	body[0] = 0;
	body[1] = (uint8_t)(len >> 24);
	body[2] = (uint8_t)(len >> 16);
	body[3] = (uint8_t)(len >> 8);
	body[4] = (uint8_t)len;
	if (len)
		memcpy(body + 5, data + 1, len);
	upload u = {.bytes = body, .len = 5 + len};
	reply r = {.grpc_status = -1};

	rpc_core *core;
	nghttp2_session *client;
	if (rpc_core_new(&g.env, "unix", NULL, true, NULL, &core) != 0 ||
	    nghttp2_session_client_new(&client, g.cbs, &r) != 0 ||
	    nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, NULL, 0) != 0)
		abort();
#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}
	const nghttp2_nv nv[] = {
	    NV(":method", "POST"),
	    NV(":scheme", "http"),
	    NV(":path", m->path),
	    NV(":authority", "localhost"),
	    NV("content-type", "application/grpc"),
	    NV("te", "trailers"),
	};
#undef NV
	nghttp2_data_provider dp = {.source.ptr = &u, .read_callback = upload_read};
	if (nghttp2_submit_request(client, NULL, nv, sizeof(nv) / sizeof(nv[0]), &dp, NULL) < 0)
		abort();
	if (!exchange(client, core))
		abort(); /* one valid call must not break the connection */
	if (!r.closed || r.close_code != NGHTTP2_NO_ERROR)
		abort(); /* the call did not end, or ended in a reset */
	if (r.grpc_status < 0)
		abort(); /* ended without a grpc-status */
	if (getenv("CRI_SERVICE_FUZZ_TRACE"))
		fprintf(stderr, "%s: %d %s\n", m->path, r.grpc_status, r.message);
	if (r.grpc_status != 0 && !r.message[0])
		abort(); /* a refusal says why */
	if (r.grpc_status == 0 && m->kind == RPC_UNARY)
		check_response(m, &r);

	nghttp2_session_del(client);
	rpc_core_free(core);
	free(r.data);
	free(body);
	return 0;
}
