/* Pull orchestration: manifest (through an index if need be) → config →
 * layers, each downloaded and unpacked at once in its own worker, at most
 * max_parallel at a time. Every transfer runs on the session's one curl multi
 * loop (registry.c); a layer's bytes go from curl's write callback on that
 * loop into the content store, hashed, and through a bounded buffer to the
 * layer's unpacker. Nothing is recorded until every layer is in place. */
#include "store_int.h"
#include "unpack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <jansson.h>
#include <openssl/evp.h>

#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_V1 "application/vnd.docker.distribution.manifest.v1"
#define PIPE_CAP (2u << 20)
#define PROGRESS_STEP (256u << 10)
#define MAX_LAYERS 500

typedef struct pull_layer {
	char *digest, *media_type, *diff_id;
	uint64_t size;
	uint64_t done;
	uint64_t last_reported;
	ad_error *err;
} pull_layer;

typedef struct pull_ctx {
	store *s;
	store_session *sess;
	const store_pull_opts *opts;
	pull_layer *layers;
	size_t n_layers;
	size_t next; /* the next layer a worker takes */
	pthread_mutex_t lock;
} pull_ctx;

static void report(pull_ctx *pc, size_t i, store_layer_state state)
{
	if (!pc->opts || !pc->opts->progress)
		return;
	pull_layer *l = &pc->layers[i];
	store_progress p = {.index = i,
			    .count = pc->n_layers,
			    .digest = l->digest,
			    .state = state,
			    .done = l->done,
			    .total = l->size};
	pthread_mutex_lock(&pc->s->progress_lock);
	pc->opts->progress(pc->opts->progress_userdata, &p);
	pthread_mutex_unlock(&pc->s->progress_lock);
}

/* ---- host platform ---- */

static struct utsname host_uname;
static pthread_once_t host_uname_once = PTHREAD_ONCE_INIT;
static void host_uname_init(void)
{
	uname(&host_uname);
}

void store_host_platform(const char **os, const char **arch, const char **variant)
{
	pthread_once(&host_uname_once, host_uname_init);
	const struct utsname *u = &host_uname;
	*os = "linux";
	*variant = NULL;
	const char *m = u->machine;
	if (strcmp(m, "x86_64") == 0)
		*arch = "amd64";
	else if (strcmp(m, "aarch64") == 0) {
		*arch = "arm64";
		*variant = "v8";
	} else if (strncmp(m, "armv7", 5) == 0) {
		*arch = "arm";
		*variant = "v7";
	} else if (strncmp(m, "armv6", 5) == 0) {
		*arch = "arm";
		*variant = "v6";
	} else if (strcmp(m, "i686") == 0 || strcmp(m, "i386") == 0)
		*arch = "386";
	else if (strcmp(m, "ppc64le") == 0)
		*arch = "ppc64le";
	else if (strcmp(m, "s390x") == 0)
		*arch = "s390x";
	else if (strcmp(m, "riscv64") == 0)
		*arch = "riscv64";
	else
		*arch = m;
}

/* The index entry for os/arch[/variant]: an exact variant match wins, then an
 * entry without a variant (arm64 images often omit v8). */
json_t *store_choose_platform(json_t *manifests, const char *os, const char *arch,
			      const char *variant)
{
	json_t *fallback = NULL, *m;
	size_t i;
	json_array_foreach(manifests, i, m)
	{
		json_t *p = json_object_get(m, "platform");
		const char *pos = json_string_value(json_object_get(p, "os"));
		const char *parch = json_string_value(json_object_get(p, "architecture"));
		const char *pvar = json_string_value(json_object_get(p, "variant"));
		if (!pos || !parch || strcmp(pos, os) != 0 || strcmp(parch, arch) != 0)
			continue;
		if (!variant || (pvar && strcmp(pvar, variant) == 0))
			return m;
		if (!pvar && !fallback)
			fallback = m;
	}
	return fallback;
}

/* ---- small blobs (config) straight into the store ---- */

static int writer_sink(void *u, const void *buf, size_t len, ad_error **err)
{
	return store_blob_writer_write(u, buf, len, err);
}

static int fetch_blob(pull_ctx *pc, const char *digest, int64_t size, ad_error **err)
{
	store *s = pc->s;
	store_inflight_claim(s, digest);
	int r = 0;
	if (!store_blob_exists(s, digest)) {
		store_blob_writer *w = NULL;
		r = store_blob_writer_open(s, digest, size, &w, err);
		if (r == 0) {
			r = store_session_get_blob(pc->sess, digest, (uint64_t)size, writer_sink, w,
						   err);
			if (r == 0)
				r = store_blob_writer_commit(w, err);
			else
				store_blob_writer_abort(w);
		}
	}
	store_inflight_release(s, digest);
	return r;
}

/* ---- the bounded buffer between download and unpack ---- */

/* Filled by the session's loop thread (never blocking: a full pipe pauses the
 * transfer), drained by the layer's unpacker. */
typedef struct pipe_buf {
	pthread_mutex_t m;
	pthread_cond_t c;
	char *buf;
	size_t cap, head, len;
	bool eof, closed;
	bool paused;   /* the producer was turned away: resume it once drained */
	ad_error *err; /* the download's failure, handed to the unpacker */
	store_session *sess;
} pipe_buf;

static int pipe_push(pipe_buf *p, const void *data, size_t len, ad_error **err)
{
	pthread_mutex_lock(&p->m);
	if (p->closed) {
		pthread_mutex_unlock(&p->m);
		return ad_fail(err, AD_E_CANCELLED, "layer extraction stopped");
	}
	if (p->head + p->len + len > p->cap) {
		if (p->len > 0)
			memmove(p->buf, p->buf + p->head, p->len);
		p->head = 0;
		if (p->len + len > p->cap) {
			p->cap = p->len + len;
			p->buf = ad_realloc(p->buf, p->cap);
		}
	}
	memcpy(p->buf + p->head + p->len, data, len);
	p->len += len;
	pthread_cond_broadcast(&p->c);
	pthread_mutex_unlock(&p->m);
	return 0;
}

typedef struct download {
	pull_ctx *pc;
	size_t idx;
	pipe_buf pipe;
	/* Written and hashed on the loop thread, so that a layer's hashing and
	 * its unpacking run in parallel; committed by the unpacker at the end. */
	store_blob_writer *w;
} download;

/* The transfer's sink (on the loop thread): into the content store, then to
 * the unpacker. A full pipe turns the chunk away before it is written; the
 * limit is soft: a chunk is taken whole (curl hands back a paused chunk
 * whole, perhaps grown), so the pipe holds at most PIPE_CAP plus one chunk.
 * Only this thread adds to the pipe: it cannot fill up in between. */
static int download_sink(void *u, const void *data, size_t len, ad_error **err)
{
	download *d = u;
	pipe_buf *p = &d->pipe;
	pthread_mutex_lock(&p->m);
	bool full = p->len >= PIPE_CAP && !p->closed;
	if (full)
		p->paused = true;
	pthread_mutex_unlock(&p->m);
	if (full)
		return 1;
	if (store_blob_writer_write(d->w, data, len, err) < 0)
		return -1;
	return pipe_push(p, data, len, err);
}

/* The unpacker's read_fn: bytes from the pipe; the end of the stream is only
 * reported once the blob's digest and size are verified and it is stored. */
static ssize_t download_read(void *u, void *out, size_t want, ad_error **err)
{
	download *d = u;
	pipe_buf *p = &d->pipe;
	pthread_mutex_lock(&p->m);
	while (p->len == 0 && !p->eof && !p->err)
		pthread_cond_wait(&p->c, &p->m);
	if (p->len == 0) {
		int r = 0;
		if (p->err)
			r = ad_fail(err, p->err->code, "%s", p->err->message);
		pthread_mutex_unlock(&p->m);
		if (r == 0) {
			store_blob_writer *w = ad_steal_ptr(d->w);
			r = store_blob_writer_commit(w, err);
			if (r == 0)
				report(d->pc, d->idx, STORE_LAYER_EXTRACTING);
		}
		return r;
	}
	size_t n = want < p->len ? want : p->len;
	memcpy(out, p->buf + p->head, n);
	p->head += n;
	p->len -= n;
	bool resume = p->paused && p->len <= PIPE_CAP / 2;
	if (resume)
		p->paused = false;
	pthread_mutex_unlock(&p->m);
	if (resume)
		store_session_resume(p->sess);
	pull_layer *l = &d->pc->layers[d->idx];
	l->done += n;
	if (l->done - l->last_reported >= PROGRESS_STEP) {
		l->last_reported = l->done;
		report(d->pc, d->idx, STORE_LAYER_DOWNLOADING);
	}
	return (ssize_t)n;
}

/* The layer's transfer: blocks on the session's loop (with its retries,
 * auth and redirects) while the unpacker drains the pipe. */
static void *download_main(void *u)
{
	download *d = u;
	pull_layer *l = &d->pc->layers[d->idx];
	ad_error *err = NULL;
	int r = store_session_get_blob(d->pc->sess, l->digest, l->size, download_sink, d, &err);
	pthread_mutex_lock(&d->pipe.m);
	if (r == 0)
		d->pipe.eof = true;
	else
		d->pipe.err = err;
	pthread_cond_broadcast(&d->pipe.c);
	pthread_mutex_unlock(&d->pipe.m);
	return NULL;
}

static bool layer_present(store *s, const char *diff_id)
{
	struct stat st;
	return fstatat(s->layers_fd, diff_id + 7, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISDIR(st.st_mode);
}

int store_layer_unpack(store *s, const char *label, const char *want_diff_id, store_read_fn read_fn,
		       void *userdata, char ret_diff_id[72], ad_error **err)
{
	static unsigned counter;
	char tmpname[128];
	snprintf(tmpname, sizeof(tmpname), "layer-%d-%u", (int)getpid(),
		 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
	if (mkdirat(s->tmp_fd, tmpname, 0755) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer %s: mkdir", label);
	_cleanup_free_ char *tmppath = ad_asprintf("%s/tmp/%s", s->root, tmpname);
	store_unpack_opts uo = {.allow_devices = s->allow_devices,
				.max_unpacked_bytes = s->max_unpacked_bytes};
	store_unpack_result res = {0};
	int r = store_unpack_layer(tmppath, read_fn, userdata, &uo, &res, err);
	if (r == 0 && want_diff_id && strcmp(res.diff_id, want_diff_id) != 0)
		r = ad_fail(err, AD_E_DATA_LOSS,
			    "layer %s: uncompressed digest mismatch: config says %s, got %s", label,
			    want_diff_id, res.diff_id);
	if (r == 0) {
		_cleanup_close_ int dfd =
		    openat(s->tmp_fd, tmpname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* The files must be on disk before the dir is named as complete. */
		if (dfd >= 0)
			syncfs(dfd);
		ad_fault_point("layer.commit");
		if (renameat(s->tmp_fd, tmpname, s->layers_fd, res.diff_id + 7) < 0 &&
		    !layer_present(s, res.diff_id))
			r = ad_fail_errno(err, AD_E_INTERNAL, "layer %s: rename into place", label);
		else
			fsync(s->layers_fd);
		if (r == 0)
			ad_fault_point("layer.committed");
	}
	struct stat st;
	if (fstatat(s->tmp_fd, tmpname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		_cleanup_error_ ad_error *e = NULL;
		ad_remove_tree(tmppath, &e);
	}
	if (r == 0 && ret_diff_id)
		memcpy(ret_diff_id, res.diff_id, sizeof(res.diff_id));
	return r;
}

int store_layer_unpack_blob(store *s, const char *digest, const char *want_diff_id,
			    char ret_diff_id[72], ad_error **err)
{
	_cleanup_close_ int fd = openat(s->blobs_fd, digest + 7, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open blob %s", digest);
	return store_layer_unpack(s, digest, want_diff_id, store_fd_read, &fd, ret_diff_id, err);
}

static int unpack_layer(pull_ctx *pc, size_t i, ad_error **err)
{
	store *s = pc->s;
	pull_layer *l = &pc->layers[i];
	int r;

	if (store_blob_exists(s, l->digest)) {
		/* A pull that died after the download: unpack from the store. */
		l->done = l->size;
		report(pc, i, STORE_LAYER_EXTRACTING);
		r = store_layer_unpack_blob(s, l->digest, l->diff_id, NULL, err);
	} else {
		download d = {.pc = pc, .idx = i};
		pipe_buf *p = &d.pipe;
		p->sess = pc->sess;
		pthread_mutex_init(&p->m, NULL);
		pthread_cond_init(&p->c, NULL);
		pthread_t th;
		r = store_blob_writer_open(s, l->digest, (int64_t)l->size, &d.w, err);
		if (r == 0) {
			report(pc, i, STORE_LAYER_DOWNLOADING);
			if (pthread_create(&th, NULL, download_main, &d) != 0) {
				r = ad_fail(err, AD_E_RESOURCE, "cannot start a download thread");
			} else {
				r = store_layer_unpack(s, l->digest, l->diff_id, download_read, &d,
						       NULL, err);
				/* Stop the download if the unpack stopped early (a paused
				 * transfer must run again to see it). */
				pthread_mutex_lock(&p->m);
				p->closed = true;
				pthread_cond_broadcast(&p->c);
				pthread_mutex_unlock(&p->m);
				store_session_resume(pc->sess);
				pthread_join(th, NULL);
				if (r < 0 && p->err && (*err)->code == AD_E_CANCELLED) {
					ad_error_free(err);
					*err = ad_steal_ptr(p->err);
				}
			}
			store_blob_writer_abort(d.w); /* NULL once committed */
		}
		ad_error_free(&p->err);
		pthread_mutex_destroy(&p->m);
		pthread_cond_destroy(&p->c);
		free(p->buf);
	}
	if (r < 0)
		return ad_error_wrap(err, "layer %zu/%zu %s", i + 1, pc->n_layers, l->digest);
	return 0;
}

static void *layer_worker(void *u)
{
	pull_ctx *pc = u;
	for (;;) {
		pthread_mutex_lock(&pc->lock);
		size_t i = pc->next++;
		pthread_mutex_unlock(&pc->lock);
		if (i >= pc->n_layers || store_session_cancelled(pc->sess))
			return NULL;
		pull_layer *l = &pc->layers[i];
		/* Two pulls of images sharing a layer unpack it once. */
		store_inflight_claim(pc->s, l->diff_id);
		if (layer_present(pc->s, l->diff_id)) {
			l->done = l->size;
			report(pc, i, STORE_LAYER_EXISTS);
		} else if (unpack_layer(pc, i, &l->err) < 0) {
			report(pc, i, STORE_LAYER_FAILED);
		} else {
			l->done = l->size;
			report(pc, i, STORE_LAYER_DONE);
		}
		store_inflight_release(pc->s, l->diff_id);
	}
}

/* ---- manifest ---- */

static int get_verified_manifest(store_session *sess, const char *ref_string, const char *what,
				 const char *want_digest, char **ret_body, size_t *ret_len,
				 char **ret_mt, char ret_digest[72], ad_error **err)
{
	char *body = NULL, *mt = NULL, *hdr_digest = NULL;
	size_t len = 0;
	if (store_session_get_manifest(sess, what, &body, &len, &mt, &hdr_digest, err) < 0)
		return -1;
	free(hdr_digest);
	store_sha256_digest(body, len, ret_digest);
	if (want_digest && strcmp(want_digest, ret_digest) != 0) {
		free(body);
		free(mt);
		return ad_fail(err, AD_E_DATA_LOSS,
			       "image %s: manifest digest mismatch: expected %s, got %s",
			       ref_string, want_digest, ret_digest);
	}
	*ret_body = body;
	*ret_len = len;
	*ret_mt = mt;
	return 0;
}

int store_manifest_layers(const char *ref_string, json_t *manifest, json_t *config,
			 store_layer_rec **ret, size_t *ret_n, ad_error **err)
{
	json_t *layers = json_object_get(manifest, "layers");
	json_t *diff_ids = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
	if (!json_is_array(layers) || !json_is_array(diff_ids))
		return ad_fail(err, AD_E_DATA_LOSS,
			       "image %s: manifest without layers or config "
			       "without rootfs.diff_ids",
			       ref_string);
	if (json_array_size(layers) != json_array_size(diff_ids))
		return ad_fail(err, AD_E_DATA_LOSS,
			       "image %s: manifest has %zu layers, config %zu diff_ids", ref_string,
			       json_array_size(layers), json_array_size(diff_ids));
	/* Overlay stacks at most 500 lowerdirs; anything near that is hostile. */
	if (json_array_size(layers) > MAX_LAYERS)
		return ad_fail(err, AD_E_RESOURCE, "image %s has %zu layers, more than %d",
			       ref_string, json_array_size(layers), MAX_LAYERS);
	size_t n = json_array_size(layers);
	store_layer_rec *v = ad_malloc0(sizeof(*v) * (n ? n : 1));
	for (size_t i = 0; i < n; i++) {
		json_t *d = json_array_get(layers, i);
		const char *dig = json_string_value(json_object_get(d, "digest"));
		const char *mt = json_string_value(json_object_get(d, "mediaType"));
		const char *diff = json_string_value(json_array_get(diff_ids, i));
		json_int_t size = json_integer_value(json_object_get(d, "size"));
		if (!store_digest_valid(dig) || !store_digest_valid(diff) || size < 0) {
			store_layer_recs_free(v, i);
			return ad_fail(err, AD_E_DATA_LOSS,
				       "image %s: layer %zu has an invalid digest, diff_id or size",
				       ref_string, i);
		}
		v[i].digest = ad_strdup(dig);
		v[i].media_type = ad_strdup(mt ? mt : "");
		v[i].diff_id = ad_strdup(diff);
		v[i].size = (uint64_t)size;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

void store_layer_recs_free(store_layer_rec *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].digest);
		free(v[i].media_type);
		free(v[i].diff_id);
	}
	free(v);
}

static int parse_layers(pull_ctx *pc, const char *ref_string, json_t *manifest, json_t *config,
			ad_error **err)
{
	store_layer_rec *v;
	size_t n;
	if (store_manifest_layers(ref_string, manifest, config, &v, &n, err) < 0)
		return -1;
	pc->n_layers = n;
	pc->layers = ad_malloc0(sizeof(*pc->layers) * (n ? n : 1));
	for (size_t i = 0; i < n; i++)
		pc->layers[i] = (pull_layer){.digest = v[i].digest,
					     .media_type = v[i].media_type,
					     .diff_id = v[i].diff_id,
					     .size = v[i].size};
	free(v); /* the strings moved to pc->layers */
	return 0;
}

static void pull_ctx_clear(pull_ctx *pc)
{
	for (size_t i = 0; i < pc->n_layers; i++) {
		free(pc->layers[i].digest);
		free(pc->layers[i].media_type);
		free(pc->layers[i].diff_id);
		ad_error_free(&pc->layers[i].err);
	}
	free(pc->layers);
	store_session_free(pc->sess);
	pthread_mutex_destroy(&pc->lock);
}

/* The image manifest a reference resolves to, and the index it was chosen
 * from when the reference names one. */
typedef struct resolved_manifest {
	char *body;
	size_t len;
	char digest[72];
	json_t *json;
	char *index_body; /* NULL: the reference names the manifest itself */
	size_t index_len;
	char top_digest[72]; /* what the reference resolves to: index or manifest */
} resolved_manifest;

static void resolved_manifest_clear(resolved_manifest *rm)
{
	free(rm->body);
	free(rm->index_body);
	json_decref(rm->json);
}

static bool is_index(const char *media_type, json_t *manifest)
{
	return strcmp(media_type, MT_DOCKER_LIST) == 0 || strcmp(media_type, MT_OCI_INDEX) == 0 ||
	       json_is_array(json_object_get(manifest, "manifests"));
}

/* The digest of the index's manifest for the requested platform (the
 * host's unless opts name one). */
static int choose_platform_manifest(const char *ref_string, json_t *index,
				    const store_pull_opts *opts, char **ret_digest, ad_error **err)
{
	const char *os, *arch, *variant;
	store_host_platform(&os, &arch, &variant);
	/* Empty strings (as a request's unset fields arrive) mean the host's. */
	if (opts && opts->os && *opts->os)
		os = opts->os;
	if (opts && opts->arch && *opts->arch) {
		arch = opts->arch;
		variant = opts->variant && *opts->variant ? opts->variant : NULL;
	}
	json_t *m = store_choose_platform(json_object_get(index, "manifests"), os, arch, variant);
	const char *want = json_string_value(json_object_get(m, "digest"));
	if (!m || !store_digest_valid(want))
		return ad_fail(err, AD_E_NOT_FOUND, "image %s has no manifest for %s/%s%s%s",
			       ref_string, os, arch, variant ? "/" : "", variant ? variant : "");
	*ret_digest = ad_strdup(want);
	return 0;
}

/* Fetches the manifest the reference names and, when that is an index, the
 * one it lists for the platform; each checked against its digest. */
static int resolve_manifest(pull_ctx *pc, const store_ref *ref, const char *ref_string,
			    resolved_manifest *rm, ad_error **err)
{
	_cleanup_free_ char *mt = NULL;
	if (get_verified_manifest(pc->sess, ref_string, ref->digest ? ref->digest : ref->tag,
				  ref->digest, &rm->body, &rm->len, &mt, rm->top_digest, err) < 0)
		return -1;
	strcpy(rm->digest, rm->top_digest);
	json_error_t jerr;
	rm->json = json_loadb(rm->body, rm->len, 0, &jerr);
	if (!json_is_object(rm->json))
		return ad_fail(err, AD_E_DATA_LOSS, "image %s: manifest is not JSON: %s",
			       ref_string, jerr.text);
	const char *jmt = json_string_value(json_object_get(rm->json, "mediaType"));
	if (jmt && !*mt) {
		free(mt);
		mt = ad_strdup(jmt);
	}
	if (json_integer_value(json_object_get(rm->json, "schemaVersion")) == 1 ||
	    strncmp(mt, MT_DOCKER_V1, strlen(MT_DOCKER_V1)) == 0)
		return ad_fail(err, AD_E_UNIMPLEMENTED,
			       "image %s: Docker schema 1 manifests are not supported", ref_string);
	if (!is_index(mt, rm->json))
		return 0;

	_cleanup_free_ char *want = NULL;
	if (choose_platform_manifest(ref_string, rm->json, pc->opts, &want, err) < 0)
		return -1;
	json_decref(rm->json);
	rm->json = NULL;
	rm->index_body = ad_steal_ptr(rm->body);
	rm->index_len = rm->len;
	free(mt);
	mt = NULL;
	if (get_verified_manifest(pc->sess, ref_string, want, want, &rm->body, &rm->len, &mt,
				  rm->digest, err) < 0)
		return -1;
	rm->json = json_loadb(rm->body, rm->len, 0, &jerr);
	if (!json_is_object(rm->json) || json_is_array(json_object_get(rm->json, "manifests")))
		return ad_fail(err, AD_E_DATA_LOSS,
			       "image %s: platform manifest %s is not an image manifest",
			       ref_string, rm->digest);
	return 0;
}

/* Fetches the image config the manifest names; *ret_digest points into the
 * manifest's JSON. */
static int fetch_config(pull_ctx *pc, const char *ref_string, const resolved_manifest *rm,
			const char **ret_digest, json_t **ret_config, ad_error **err)
{
	json_t *cd = json_object_get(rm->json, "config");
	const char *digest = json_string_value(json_object_get(cd, "digest"));
	json_int_t size = json_integer_value(json_object_get(cd, "size"));
	if (!store_digest_valid(digest))
		return ad_fail(err, AD_E_DATA_LOSS,
			       "image %s: manifest %s has no valid config digest", ref_string,
			       rm->digest);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	if (fetch_blob(pc, digest, size > 0 ? size : -1, err) < 0 ||
	    store_blob_read(pc->s, digest, 16u << 20, &data, &len, err) < 0)
		return -1;
	json_error_t jerr;
	json_t *config = json_loadb(data, len, 0, &jerr);
	if (!json_is_object(config)) {
		json_decref(config);
		return ad_fail(err, AD_E_DATA_LOSS, "image %s: config %s is not JSON", ref_string,
			       digest);
	}
	*ret_digest = digest;
	*ret_config = config;
	return 0;
}

/* Downloads and unpacks the layers, at most max_parallel at a time; the
 * first layer's error, if any, is the pull's. */
static int pull_layers(pull_ctx *pc, const char *ref_string, ad_error **err)
{
	for (size_t i = 0; i < pc->n_layers; i++)
		report(pc, i, STORE_LAYER_WAITING);
	size_t nthreads = pc->n_layers < pc->s->max_parallel ? pc->n_layers : pc->s->max_parallel;
	pthread_t *th = ad_malloc0(sizeof(*th) * (nthreads ? nthreads : 1));
	size_t started = 0;
	for (; started < nthreads; started++)
		if (pthread_create(&th[started], NULL, layer_worker, pc) != 0)
			break;
	if (started == 0 && nthreads > 0)
		layer_worker(pc);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	/* Whatever the layers say, a cancelled pull records nothing. */
	if (store_session_cancelled(pc->sess))
		return ad_fail(err, AD_E_CANCELLED, "pull of %s cancelled", ref_string);
	for (size_t i = 0; i < pc->n_layers; i++) {
		if (pc->layers[i].err) {
			*err = ad_steal_ptr(pc->layers[i].err);
			return ad_error_wrap(err, "pull %s", ref_string);
		}
	}
	return 0;
}

/* The image's records: its names (the tag, and name@digest of what the
 * reference resolved to), manifest, config and layers. */
static int record_image(pull_ctx *pc, const store_ref *ref, const resolved_manifest *rm,
			const char *config_digest, ad_error **err)
{
	store_layer_rec *recs = ad_malloc0(sizeof(*recs) * (pc->n_layers ? pc->n_layers : 1));
	for (size_t i = 0; i < pc->n_layers; i++) {
		recs[i].digest = pc->layers[i].digest;
		recs[i].media_type = pc->layers[i].media_type;
		recs[i].diff_id = pc->layers[i].diff_id;
		recs[i].size = pc->layers[i].size;
	}
	_cleanup_free_ char *name = store_ref_name(ref);
	_cleanup_free_ char *tag = ref->tag ? ad_asprintf("%s:%s", name, ref->tag) : NULL;
	_cleanup_free_ char *repo_digest = ad_asprintf("%s@%s", name, rm->top_digest);
	const char *extra[] = {rm->index_body ? rm->top_digest : NULL, NULL};
	int r = store_image_record(pc->s, tag, repo_digest, rm->digest, config_digest, recs,
				   pc->n_layers, extra, err);
	free(recs);
	return r;
}

static int pull_locked(store *s, const store_ref *ref, const char *ref_string,
		       const store_pull_opts *opts, char **ret_image_id, ad_error **err)
{
	pull_ctx pc = {.s = s, .opts = opts};
	pthread_mutex_init(&pc.lock, NULL);
	resolved_manifest rm = {0};
	const char *config_digest = NULL;
	json_t *config = NULL;
	int r = store_session_new(s, ref, opts ? opts->auth : NULL, opts ? opts->cancel : NULL,
				  opts ? opts->cancel_userdata : NULL, &pc.sess, err);
	if (r == 0)
		r = resolve_manifest(&pc, ref, ref_string, &rm, err);
	if (r == 0)
		r = fetch_config(&pc, ref_string, &rm, &config_digest, &config, err);
	if (r == 0)
		r = parse_layers(&pc, ref_string, rm.json, config, err);
	if (r == 0)
		r = store_blob_put(s, rm.digest, rm.body, rm.len, err);
	if (r == 0 && rm.index_body)
		r = store_blob_put(s, rm.top_digest, rm.index_body, rm.index_len, err);
	if (r == 0)
		r = pull_layers(&pc, ref_string, err);
	if (r == 0)
		r = record_image(&pc, ref, &rm, config_digest, err);
	if (r == 0 && ret_image_id)
		*ret_image_id = ad_strdup(config_digest);
	json_decref(config);
	resolved_manifest_clear(&rm);
	pull_ctx_clear(&pc);
	return r;
}

int fetch_pull(store *s, const char *reference, const store_pull_opts *opts, char **ret_image_id,
	       ad_error **err)
{
	store_ref ref = {0};
	if (store_ref_parse(reference, &ref, err) < 0)
		return -1;
	_cleanup_free_ char *ref_string = store_ref_string(&ref);
	pthread_rwlock_rdlock(&s->gc_lock);
	int r = pull_locked(s, &ref, ref_string, opts, ret_image_id, err);
	pthread_rwlock_unlock(&s->gc_lock);
	store_ref_clear(&ref);
	return r;
}
