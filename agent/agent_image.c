/* agent.v1.ImageService: PullImage with a stream of per-layer progress. */
#include <string.h>

#include "agent/v1/agent.pb-c.h"
#include "images.h"
#include "status.h"

/* Byte progress of one layer is sent at most this often; state changes always. */
#define PROGRESS_INTERVAL_NS (100 * 1000000LL)

typedef struct pull_stream {
	rpc_call *call;
	bool gone; /* a send failed: the client left, stop sending */
	size_t count;
	int64_t *last_sent; /* per layer, monotonic ns */
	int *last_state;
} pull_stream;

static Agent__V1__LayerState layer_state(store_layer_state s)
{
	switch (s) {
	case STORE_LAYER_WAITING:
		return AGENT__V1__LAYER_STATE__LAYER_STATE_WAITING;
	case STORE_LAYER_DOWNLOADING:
		return AGENT__V1__LAYER_STATE__LAYER_STATE_DOWNLOADING;
	case STORE_LAYER_EXTRACTING:
		return AGENT__V1__LAYER_STATE__LAYER_STATE_EXTRACTING;
	case STORE_LAYER_DONE:
		return AGENT__V1__LAYER_STATE__LAYER_STATE_DONE;
	case STORE_LAYER_EXISTS:
		return AGENT__V1__LAYER_STATE__LAYER_STATE_EXISTS;
	case STORE_LAYER_FAILED:
		break;
	}
	return AGENT__V1__LAYER_STATE__LAYER_STATE_FAILED;
}

/* Runs on the pull's threads, serialised by the store. Sending may block
 * while the client does not read; that only slows this pull down. */
static void on_progress(void *userdata, const store_progress *p)
{
	pull_stream *ps = userdata;
	if (ps->gone)
		return;
	if (!ps->last_sent && p->count) {
		ps->count = p->count;
		ps->last_sent = ad_malloc0(sizeof(int64_t) * p->count);
		ps->last_state = ad_malloc0(sizeof(int) * p->count);
		for (size_t i = 0; i < p->count; i++)
			ps->last_state[i] = -1;
	}
	if (p->index >= ps->count)
		return;
	int64_t now = ad_monotonic_ns();
	int state = (int)p->state;
	if (state == ps->last_state[p->index] && p->done != p->total &&
	    now - ps->last_sent[p->index] < PROGRESS_INTERVAL_NS)
		return;
	ps->last_state[p->index] = state;
	ps->last_sent[p->index] = now;

	Agent__V1__PullImageProgress m = AGENT__V1__PULL_IMAGE_PROGRESS__INIT;
	m.layer_index = (uint32_t)p->index;
	m.layer_count = (uint32_t)p->count;
	m.digest = (char *)(p->digest ? p->digest : "");
	m.state = layer_state(p->state);
	m.bytes_done = p->done;
	m.bytes_total = p->total;
	if (rpc_call_send(ps->call, &m.base) < 0)
		ps->gone = true;
}

static rpc_code image_pull(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	(void)resp;
	(void)userdata;
	const Agent__V1__PullImageRequest *rq = (const Agent__V1__PullImageRequest *)req;
	_cleanup_error_ ad_error *e = NULL;
	store *s = agent_images_store();
	if (!s) {
		ad_fail(&e, AD_E_UNAVAILABLE, "the image store is not open");
		return status_call_error(call, e);
	}
	if (!rq->image || !rq->image[0]) {
		ad_fail(&e, AD_E_INVALID, "an image reference is required");
		return status_call_error(call, e);
	}
	store_ref ref = {0};
	if (store_ref_parse(rq->image, &ref, &e) < 0)
		return status_call_error(call, e);
	_cleanup_free_ char *normalised = store_ref_string(&ref);
	store_ref_clear(&ref);

	store_auth auth = {0};
	bool have_auth = false;
#define NONEMPTY(f) ((f) && (f)[0] ? (have_auth = true, (f)) : NULL)
	auth.username = NONEMPTY(rq->username);
	auth.password = NONEMPTY(rq->password);
	auth.auth = NONEMPTY(rq->auth);
	auth.identity_token = NONEMPTY(rq->identity_token);
	auth.registry_token = NONEMPTY(rq->registry_token);
#undef NONEMPTY

	pull_stream ps = {.call = call};
	store_pull_opts po = {
	    .auth = have_auth ? &auth : NULL,
	    .progress = on_progress,
	    .progress_userdata = &ps,
	};
	_cleanup_free_ char *id = NULL;
	/* libadstore has no cancel hook: a pull whose client left runs to its
	 * end (its content is kept for the next pull of the image). */
	int r = store_pull(s, rq->image, &po, &id, &e);
	size_t count = ps.count;
	free(ps.last_sent);
	free(ps.last_state);
	if (r < 0)
		return status_call_error(call, e);
	ad_info("pulled %s as %s", normalised, id);
	if (ps.gone || rpc_call_cancelled(call)) {
		ad_fail(&e, AD_E_CANCELLED,
			"pull of %s: the client went away (the image was "
			"pulled anyway)",
			normalised);
		return status_call_error(call, e);
	}
	Agent__V1__PullImageProgress last = AGENT__V1__PULL_IMAGE_PROGRESS__INIT;
	last.layer_count = (uint32_t)count;
	last.digest = (char *)"";
	last.image_id = id;
	last.image_ref = normalised;
	if (rpc_call_send(call, &last.base) < 0) {
		ad_fail(&e, AD_E_CANCELLED, "pull of %s: the client went away", normalised);
		return status_call_error(call, e);
	}
	return RPC_OK;
}

void agent_image_register(svc_table *t, agent_ctx *ctx)
{
	const rpc_method pull = {
	    .path = "/agent.v1.ImageService/PullImage",
	    .request = &agent__v1__pull_image_request__descriptor,
	    .response = &agent__v1__pull_image_progress__descriptor,
	    .kind = RPC_SERVER_STREAM,
	    .on_loop = false,
	    .handler = image_pull,
	    .userdata = ctx,
	};
	svc_table_add(t, &pull);
}
