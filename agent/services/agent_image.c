/* agent.v1.ImageService: PullImage and PushImage with a stream of per-blob
 * progress; LoadImage, SaveImage and ImportImage on files of agentd's host;
 * TagImage. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "agent/v1/agent.pb-c.h"
#include "services.h"

/* Byte progress of one layer is sent at most this often; state changes always. */
#define PROGRESS_INTERVAL_NS (100 * 1000000LL)

/* The handlers' userdata: the store, NULL when it is not open. */
static store *require_store(void *userdata, ad_error **err)
{
	if (!userdata)
		ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	return userdata;
}

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
	case STORE_LAYER_MOUNTED: /* a push's */
	case STORE_LAYER_FAILED:
		break;
	}
	return AGENT__V1__LAYER_STATE__LAYER_STATE_FAILED;
}

/* Whether p is worth a message: state changes and the last bytes always,
 * byte progress of one layer at most every PROGRESS_INTERVAL_NS. */
static bool progress_due(pull_stream *ps, const store_progress *p)
{
	if (ps->gone)
		return false;
	if (!ps->last_sent && p->count) {
		ps->count = p->count;
		ps->last_sent = ad_malloc0(sizeof(int64_t) * p->count);
		ps->last_state = ad_malloc0(sizeof(int) * p->count);
		for (size_t i = 0; i < p->count; i++)
			ps->last_state[i] = -1;
	}
	if (p->index >= ps->count)
		return false;
	int64_t now = ad_monotonic_ns();
	int state = (int)p->state;
	if (state == ps->last_state[p->index] && p->done != p->total &&
	    now - ps->last_sent[p->index] < PROGRESS_INTERVAL_NS)
		return false;
	ps->last_state[p->index] = state;
	ps->last_sent[p->index] = now;
	return true;
}

static void pull_stream_clear(pull_stream *ps)
{
	free(ps->last_sent);
	free(ps->last_state);
}

/* Sends one message of a pull's or push's stream; false once the client is
 * gone (a send failed: nothing more is sent). */
static bool progress_send(pull_stream *ps, ProtobufCMessage *m)
{
	if (!ps->gone && rpc_call_send(ps->call, m) < 0)
		ps->gone = true;
	return !ps->gone;
}

/* Runs on the handler's thread (store_pull relays agentd-fetch's progress).
 * Sending may block while the client does not read; that only slows this
 * pull down (the helper waits to write its next progress line). */
static void on_progress(void *userdata, const store_progress *p)
{
	pull_stream *ps = userdata;
	if (!progress_due(ps, p))
		return;
	Agent__V1__PullImageProgress m = AGENT__V1__PULL_IMAGE_PROGRESS__INIT;
	m.layer_index = (uint32_t)p->index;
	m.layer_count = (uint32_t)p->count;
	m.digest = (char *)(p->digest ? p->digest : "");
	m.state = layer_state(p->state);
	m.bytes_done = p->done;
	m.bytes_total = p->total;
	progress_send(ps, &m.base);
}

static const char *nonempty(const char *s, bool *seen)
{
	if (!s || !*s)
		return NULL;
	*seen = true;
	return s;
}

bool svc_pull_auth(store_auth *ret, const char *username, const char *password, const char *auth,
		   const char *identity_token, const char *registry_token)
{
	bool seen = false;
	*ret = (store_auth){
	    .username = nonempty(username, &seen),
	    .password = nonempty(password, &seen),
	    .auth = nonempty(auth, &seen),
	    .identity_token = nonempty(identity_token, &seen),
	    .registry_token = nonempty(registry_token, &seen),
	};
	return seen;
}

static rpc_code image_pull(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	(void)resp;
	const Agent__V1__PullImageRequest *rq = (const Agent__V1__PullImageRequest *)req;
	_cleanup_error_ ad_error *e = NULL;
	store *s = require_store(userdata, &e);
	if (!s)
		return status_call_error(call, e);
	if (!rq->image || !rq->image[0]) {
		ad_fail(&e, AD_E_INVALID, "an image reference is required");
		return status_call_error(call, e);
	}
	store_ref ref = {0};
	if (store_ref_parse(rq->image, &ref, &e) < 0)
		return status_call_error(call, e);
	_cleanup_free_ char *normalised = store_ref_string(&ref);
	store_ref_clear(&ref);

	store_auth auth;
	bool have_auth = svc_pull_auth(&auth, rq->username, rq->password, rq->auth,
				       rq->identity_token, rq->registry_token);

	pull_stream ps = {.call = call};
	store_pull_opts po = {
	    .auth = have_auth ? &auth : NULL,
	    .progress = on_progress,
	    .progress_userdata = &ps,
	    /* A client that leaves or a deadline that passes kills the pull's
	     * agentd-fetch; what it completed is reused by the next pull. */
	    .cancel_fd = rpc_call_cancel_fd(call),
	};
	_cleanup_free_ char *id = NULL;
	int r = store_pull(s, rq->image, &po, &id, &e);
	size_t count = ps.count;
	pull_stream_clear(&ps);
	if (r < 0)
		return status_call_error(call, e);
	ad_info("pulled %s as %s", normalised, id);
	/* The last message names the image. */
	Agent__V1__PullImageProgress last = AGENT__V1__PULL_IMAGE_PROGRESS__INIT;
	last.layer_count = (uint32_t)count;
	last.digest = (char *)"";
	last.image_id = id;
	last.image_ref = normalised;
	if (rpc_call_cancelled(call) || !progress_send(&ps, &last.base)) {
		ad_fail(&e, AD_E_CANCELLED, "pull of %s: the client went away", normalised);
		return status_call_error(call, e);
	}
	return RPC_OK;
}

/* ---- load, save, import: files on agentd's host ---------------------------- */
/* The path is opened by agentd (root): callers are trusted, as the socket's
 * 0660 already demands. */

static void free_strv(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int check_path(const char *path, ad_error **err)
{
	if (!path || !path[0])
		return ad_fail(err, AD_E_INVALID, "a file path is required");
	if (path[0] != '/')
		return ad_fail(err, AD_E_INVALID, "%s: the path must be absolute", path);
	return 0;
}

static int check_format(const char *format, ad_error **err)
{
	if (!format || !format[0] || strcmp(format, "docker-archive") == 0 ||
	    strcmp(format, "oci-archive") == 0)
		return 0;
	return ad_fail(err, AD_E_INVALID,
		       "unknown archive format '%s' (docker-archive or oci-archive)", format);
}

static int open_input(const char *path, int *ret_fd, ad_error **err)
{
	if (check_path(path, err) < 0)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INVALID, "%s",
				     path);
	*ret_fd = fd;
	return 0;
}

static rpc_code image_load(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	const Agent__V1__LoadImageRequest *rq = (const Agent__V1__LoadImageRequest *)req;
	Agent__V1__LoadImageResponse *rs = (Agent__V1__LoadImageResponse *)resp;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_close_ int fd = -1;
	store *s = require_store(userdata, &e);
	if (!s)
		return status_call_error(call, e);
	if (check_format(rq->format, &e) < 0 || open_input(rq->path, &fd, &e) < 0)
		return status_call_error(call, e);
	char **ids = NULL;
	if (store_image_load(s, fd, rpc_call_cancel_fd(call), &ids, &e) < 0) {
		ad_error_wrap(&e, "%s", rq->path);
		return status_call_error(call, e);
	}
	size_t n = 0, n_tags = 0;
	while (ids && ids[n])
		n++;
	store_image **imgs = ad_malloc0(sizeof(*imgs) * (n + 1));
	rs->image_ids = rpc_call_alloc(call, sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++) {
		rs->image_ids[i] = rpc_call_strdup(call, ids[i]);
		if (store_image_get(s, ids[i], &imgs[i], NULL) < 0)
			imgs[i] = NULL;
		for (size_t j = 0; imgs[i] && imgs[i]->tags && imgs[i]->tags[j]; j++)
			n_tags++;
		ad_info("loaded %s from %s", ids[i], rq->path);
	}
	rs->n_image_ids = n;
	rs->tags = rpc_call_alloc(call, sizeof(char *) * (n_tags + 1));
	n_tags = 0;
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; imgs[i] && imgs[i]->tags && imgs[i]->tags[j]; j++)
			rs->tags[n_tags++] = rpc_call_strdup(call, imgs[i]->tags[j]);
		store_image_free(imgs[i]);
	}
	free(imgs);
	free_strv(ids);
	rs->n_tags = n_tags;
	return RPC_OK;
}

static rpc_code image_save(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	(void)resp;
	const Agent__V1__SaveImageRequest *rq = (const Agent__V1__SaveImageRequest *)req;
	_cleanup_error_ ad_error *e = NULL;
	store *s = require_store(userdata, &e);
	if (!s)
		return status_call_error(call, e);
	if (check_format(rq->format, &e) < 0 || check_path(rq->path, &e) < 0)
		return status_call_error(call, e);
	if (!rq->n_images) {
		ad_fail(&e, AD_E_INVALID, "at least one image is required");
		return status_call_error(call, e);
	}
	/* Unknown images fail before the file is touched. */
	for (size_t i = 0; i < rq->n_images; i++) {
		store_image *img = NULL;
		if (store_image_get(s, rq->images[i], &img, &e) < 0)
			return status_call_error(call, e);
		store_image_free(img);
	}
	_cleanup_free_ const char **queries = ad_malloc0(sizeof(char *) * (rq->n_images + 1));
	for (size_t i = 0; i < rq->n_images; i++)
		queries[i] = rq->images[i];
	_cleanup_close_ int fd =
	    open(rq->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0) {
		ad_fail_errno(&e, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INVALID, "%s", rq->path);
		return status_call_error(call, e);
	}
	if (store_image_save(s, queries, fd, rpc_call_cancel_fd(call), &e) < 0) {
		(void)unlink(rq->path);
		return status_call_error(call, e);
	}
	ad_info("saved %zu image(s) to %s", rq->n_images, rq->path);
	return RPC_OK;
}

static rpc_code image_import(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	const Agent__V1__ImportImageRequest *rq = (const Agent__V1__ImportImageRequest *)req;
	Agent__V1__ImportImageResponse *rs = (Agent__V1__ImportImageResponse *)resp;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_close_ int fd = -1;
	store *s = require_store(userdata, &e);
	if (!s)
		return status_call_error(call, e);
	const char *reference = rq->reference && rq->reference[0] ? rq->reference : NULL;
	if (reference) {
		store_ref ref = {0};
		if (store_ref_parse(reference, &ref, &e) < 0)
			return status_call_error(call, e);
		store_ref_clear(&ref);
	}
	if (open_input(rq->path, &fd, &e) < 0)
		return status_call_error(call, e);
	char *id = NULL;
	if (store_image_import(s, fd, reference, rpc_call_cancel_fd(call), &id, &e) < 0) {
		ad_error_wrap(&e, "%s", rq->path);
		return status_call_error(call, e);
	}
	ad_info("imported %s from %s as %s", reference ? reference : "(untagged)", rq->path, id);
	rs->image_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

/* ---- push, tag ------------------------------------------------------------- */

static Agent__V1__BlobPushState blob_push_state(store_layer_state s)
{
	switch (s) {
	case STORE_LAYER_WAITING:
		return AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_WAITING;
	case STORE_LAYER_DOWNLOADING:
	case STORE_LAYER_EXTRACTING:
		return AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_UPLOADING;
	case STORE_LAYER_DONE:
		return AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_PUSHED;
	case STORE_LAYER_EXISTS:
		return AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_EXISTS;
	case STORE_LAYER_MOUNTED:
		return AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_MOUNTED;
	case STORE_LAYER_FAILED:
		break;
	}
	return AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_FAILED;
}

static void on_push_progress(void *userdata, const store_progress *p)
{
	pull_stream *ps = userdata;
	if (!progress_due(ps, p))
		return;
	Agent__V1__PushImageProgress m = AGENT__V1__PUSH_IMAGE_PROGRESS__INIT;
	m.blob_index = (uint32_t)p->index;
	m.blob_count = (uint32_t)p->count;
	m.digest = (char *)(p->digest ? p->digest : "");
	m.state = blob_push_state(p->state);
	m.bytes_done = p->done;
	m.bytes_total = p->total;
	progress_send(ps, &m.base);
}

static rpc_code image_push(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	(void)resp;
	const Agent__V1__PushImageRequest *rq = (const Agent__V1__PushImageRequest *)req;
	_cleanup_error_ ad_error *e = NULL;
	store *s = require_store(userdata, &e);
	if (!s)
		return status_call_error(call, e);
	if (!rq->image || !rq->image[0]) {
		ad_fail(&e, AD_E_INVALID, "an image is required");
		return status_call_error(call, e);
	}
	if (rq->format && rq->format[0] && strcmp(rq->format, "oci") != 0 &&
	    strcmp(rq->format, "v2s2") != 0) {
		ad_fail(&e, AD_E_INVALID, "unknown manifest format '%s' (oci or v2s2)", rq->format);
		return status_call_error(call, e);
	}
	/* An unknown image fails here, before a helper starts. */
	store_image *img = NULL;
	if (store_image_get(s, rq->image, &img, &e) < 0)
		return status_call_error(call, e);
	store_image_free(img);
	store_auth auth;
	bool have_auth = svc_pull_auth(&auth, rq->username, rq->password, rq->auth,
				       rq->identity_token, rq->registry_token);
	pull_stream ps = {.call = call};
	store_push_opts po = {
	    .auth = have_auth ? &auth : NULL,
	    .format = rq->format,
	    .chunk_size = rq->chunk_size,
	    .progress = on_push_progress,
	    .progress_userdata = &ps,
	    .cancel_fd = rpc_call_cancel_fd(call),
	};
	_cleanup_free_ char *digest = NULL, *ref = NULL;
	int r = store_push(s, rq->image, rq->destination, &po, &digest, &ref, &e);
	size_t count = ps.count;
	pull_stream_clear(&ps);
	if (r < 0)
		return status_call_error(call, e);
	ad_info("pushed %s to %s as %s", rq->image, ref, digest);
	Agent__V1__PushImageProgress last = AGENT__V1__PUSH_IMAGE_PROGRESS__INIT;
	last.blob_count = (uint32_t)count;
	last.digest = (char *)"";
	last.manifest_digest = digest;
	last.reference = ref;
	if (!progress_send(&ps, &last.base)) {
		ad_fail(&e, AD_E_CANCELLED, "push to %s: the client went away", ref);
		return status_call_error(call, e);
	}
	return RPC_OK;
}

static rpc_code image_tag(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			  void *userdata)
{
	const Agent__V1__TagImageRequest *rq = (const Agent__V1__TagImageRequest *)req;
	Agent__V1__TagImageResponse *rs = (Agent__V1__TagImageResponse *)resp;
	_cleanup_error_ ad_error *e = NULL;
	store *s = require_store(userdata, &e);
	if (!s)
		return status_call_error(call, e);
	if (!rq->image || !rq->image[0] || !rq->new_reference || !rq->new_reference[0]) {
		ad_fail(&e, AD_E_INVALID, "an image and a new reference are required");
		return status_call_error(call, e);
	}
	_cleanup_free_ char *ref = NULL;
	if (store_image_tag(s, rq->image, rq->new_reference, &ref, &e) < 0)
		return status_call_error(call, e);
	store_image *img = NULL;
	if (store_image_get(s, ref, &img, &e) < 0)
		return status_call_error(call, e);
	rs->reference = rpc_call_strdup(call, ref);
	rs->image_id = rpc_call_strdup(call, img->id);
	store_image_free(img);
	ad_info("tagged %s as %s", rq->image, ref);
	return RPC_OK;
}

void svc_agent_image_register(svc_table *t, store *images)
{
	const rpc_method pull = {
	    .path = "/agent.v1.ImageService/PullImage",
	    .request = &agent__v1__pull_image_request__descriptor,
	    .response = &agent__v1__pull_image_progress__descriptor,
	    .kind = RPC_SERVER_STREAM,
	    .on_loop = false,
	    .handler = image_pull,
	    .userdata = images,
	};
	svc_table_add(t, &pull);
	rpc_method push = pull;
	push.path = "/agent.v1.ImageService/PushImage";
	push.request = &agent__v1__push_image_request__descriptor;
	push.response = &agent__v1__push_image_progress__descriptor;
	push.handler = image_push;
	svc_table_add(t, &push);
	const rpc_method unary[] = {
	    {
		.path = "/agent.v1.ImageService/LoadImage",
		.request = &agent__v1__load_image_request__descriptor,
		.response = &agent__v1__load_image_response__descriptor,
		.handler = image_load,
	    },
	    {
		.path = "/agent.v1.ImageService/SaveImage",
		.request = &agent__v1__save_image_request__descriptor,
		.response = &agent__v1__save_image_response__descriptor,
		.handler = image_save,
	    },
	    {
		.path = "/agent.v1.ImageService/ImportImage",
		.request = &agent__v1__import_image_request__descriptor,
		.response = &agent__v1__import_image_response__descriptor,
		.handler = image_import,
	    },
	    {
		.path = "/agent.v1.ImageService/TagImage",
		.request = &agent__v1__tag_image_request__descriptor,
		.response = &agent__v1__tag_image_response__descriptor,
		.handler = image_tag,
	    },
	};
	for (size_t i = 0; i < sizeof(unary) / sizeof(unary[0]); i++) {
		rpc_method m = unary[i];
		m.kind = RPC_UNARY;
		m.on_loop = false;
		m.userdata = images;
		svc_table_add(t, &m);
	}
}
