/* Push of a stored image to a registry (OCI distribution spec, "push"):
 * every blob (layers, then the config) is checked with HEAD, mounted from
 * another repository of the same registry that holds the image (POST
 * ?mount=&from=), or uploaded (POST, then one PUT ?digest=, or PATCH chunks
 * and a closing PUT); the manifest goes last, so the tag never names an
 * image whose blobs are missing. The manifest is pushed as stored, or
 * converted to OCI or Docker v2s2 (media types only: the config and layer
 * blobs are the same bytes in both). */
#include "fetch.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <jansson.h>

#define MAX_MANIFEST (4u << 20)

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define MT_OCI_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define MT_OCI_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define MT_DOCKER_LAYER "application/vnd.docker.image.rootfs.diff.tar"
#define MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"

typedef struct push_ctx {
	store *s;
	store_session *sess;
	const store_push_opts *opts;
	const store_ref *dest;
	const char *mount_from; /* a repository path on the same registry, or NULL */
	size_t count;
} push_ctx;

static void report(push_ctx *pc, size_t i, const char *digest, store_layer_state state,
		   uint64_t done, uint64_t total)
{
	if (!pc->opts->progress)
		return;
	store_progress p = {.index = i,
			    .count = pc->count,
			    .digest = digest,
			    .state = state,
			    .done = done,
			    .total = total};
	pc->opts->progress(pc->opts->progress_userdata, &p);
}

/* ---- the manifest in the format asked for ---- */

typedef struct media_pair {
	const char *oci, *docker;
} media_pair;

static const media_pair MEDIA_TYPES[] = {
    {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST},
    {MT_OCI_CONFIG, MT_DOCKER_CONFIG},
    {MT_OCI_LAYER_GZIP, MT_DOCKER_LAYER_GZIP},
    {MT_OCI_LAYER, MT_DOCKER_LAYER},
};

/* The media type `mt` in the format asked for (as it is if it is of that
 * format already); NULL if it has none there. */
static const char *media_type_for(const char *mt, bool docker)
{
	if (strncmp(mt, docker ? "application/vnd.docker." : "application/vnd.oci.",
		    docker ? 23 : 20) == 0)
		return mt;
	for (size_t i = 0; i < sizeof(MEDIA_TYPES) / sizeof(MEDIA_TYPES[0]); i++) {
		const char *from = docker ? MEDIA_TYPES[i].oci : MEDIA_TYPES[i].docker;
		const char *to = docker ? MEDIA_TYPES[i].docker : MEDIA_TYPES[i].oci;
		if (strcmp(mt, from) == 0 || strcmp(mt, to) == 0)
			return to;
	}
	return NULL;
}

static int convert_descriptor(json_t *d, bool docker, const char *what, ad_error **err)
{
	const char *mt = json_string_value(json_object_get(d, "mediaType"));
	const char *to = mt ? media_type_for(mt, docker) : NULL;
	if (!to)
		return ad_fail(err, AD_E_PRECONDITION, "%s has media type %s, which %s has no name for",
			       what, mt ? mt : "(none)",
			       docker ? "Docker v2s2 (push it as oci)" : "OCI");
	json_object_set_new(d, "mediaType", json_string(to));
	if (docker) /* v2s2 descriptors have no annotations */
		json_object_del(d, "annotations");
	return 0;
}

/* *ret_body: the manifest to push, `stored` itself when no conversion is
 * asked for or needed. */
static int manifest_in_format(const char *stored, size_t len, json_t *m, const char *format,
			      char **ret_body, size_t *ret_len, const char **ret_media_type,
			      ad_error **err)
{
	const char *mt = json_string_value(json_object_get(m, "mediaType"));
	if (!mt)
		mt = MT_OCI_MANIFEST; /* OCI manifests may leave it out */
	bool want_docker;
	if (!format || !*format)
		want_docker = strcmp(mt, MT_DOCKER_MANIFEST) == 0;
	else if (strcmp(format, "v2s2") == 0)
		want_docker = true;
	else if (strcmp(format, "oci") == 0)
		want_docker = false;
	else
		return ad_fail(err, AD_E_INVALID, "unknown manifest format '%s' (oci or v2s2)",
			       format);
	const char *target = want_docker ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST;
	if (strcmp(mt, target) == 0) {
		*ret_body = ad_strndup(stored, len);
		*ret_len = len;
		*ret_media_type = target;
		return 0;
	}
	json_t *c = json_deep_copy(m);
	json_object_set_new(c, "mediaType", json_string(target));
	if (want_docker) {
		json_object_del(c, "annotations");
		json_object_del(c, "artifactType");
		json_object_del(c, "subject");
	}
	int r = convert_descriptor(json_object_get(c, "config"), want_docker, "the config", err);
	size_t i;
	json_t *l;
	json_array_foreach(json_object_get(c, "layers"), i, l)
	{
		if (r == 0) {
			char what[32];
			snprintf(what, sizeof(what), "layer %zu", i + 1);
			r = convert_descriptor(l, want_docker, what, err);
		}
	}
	if (r == 0) {
		*ret_body = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER);
		*ret_len = strlen(*ret_body);
		*ret_media_type = target;
	}
	json_decref(c);
	return r;
}

/* ---- blobs ---- */

/* The upload session's URL with ?digest= appended (the closing PUT). */
static char *upload_url(const char *location, const char *digest)
{
	CURLU *u = curl_url();
	char *res = NULL;
	if (curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK) {
		if (digest) {
			_cleanup_free_ char *q = ad_asprintf("digest=%s", digest);
			curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE);
		}
		char *out = NULL;
		if (curl_url_get(u, CURLUPART_URL, &out, 0) == CURLUE_OK) {
			res = ad_strdup(out);
			curl_free(out);
		}
	}
	curl_url_cleanup(u);
	return res;
}

static int refused(push_ctx *pc, const char *what, const store_reply *rep, ad_error **err)
{
	/* 404 (unknown repository), 405 (a read-only registry), 400 (a manifest it
	 * does not take): the registry will answer the same again. */
	ad_code code = rep->status >= 500 ? AD_E_UNAVAILABLE : AD_E_PRECONDITION;
	return ad_fail(err, code, "registry %s refused %s: %s", pc->dest->domain, what,
		       rep->message ? rep->message : "(no message)");
}

/* Uploads the blob at `location` (an upload session the registry opened). */
static int upload_blob(push_ctx *pc, size_t idx, const char *digest, uint64_t size,
		       const char *location, ad_error **err)
{
	_cleanup_close_ int fd = openat(pc->s->blobs_fd, digest + 7, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_PRECONDITION, "blob %s is not in the store", digest);
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size)
		return ad_fail(err, AD_E_DATA_LOSS, "blob %s: %llu bytes in the store, %llu in the "
			       "manifest", digest, (unsigned long long)st.st_size,
			       (unsigned long long)size);
	_cleanup_free_ char *cur = ad_strdup(location);
	uint64_t chunk = pc->opts->chunk_size;
	uint64_t off = 0;
	static const char *const octets[] = {"Content-Type: application/octet-stream",
					     "Expect:", NULL};
	report(pc, idx, digest, STORE_LAYER_DOWNLOADING, 0, size);
	while (chunk && off < size) {
		uint64_t n = size - off < chunk ? size - off : chunk;
		_cleanup_free_ char *range = ad_asprintf("Content-Range: %llu-%llu",
							 (unsigned long long)off,
							 (unsigned long long)(off + n - 1));
		const char *hdrs[] = {octets[0], octets[1], range, NULL};
		store_upload up = {.fd = fd, .offset = (off_t)off, .length = n};
		store_reply rep;
		if (store_session_send(pc->sess, "PATCH", cur, hdrs, &up, &rep, err) < 0)
			return -1;
		if (rep.status != 202 || !rep.location) {
			_cleanup_free_ char *what = ad_asprintf("a chunk of blob %s", digest);
			int r = rep.status == 202
				    ? ad_fail(err, AD_E_UNAVAILABLE,
					      "registry %s: no Location after a chunk of %s",
					      pc->dest->domain, digest)
				    : refused(pc, what, &rep, err);
			store_reply_clear(&rep);
			return r;
		}
		free(cur);
		cur = ad_steal_ptr(rep.location);
		store_reply_clear(&rep);
		off += n;
		report(pc, idx, digest, STORE_LAYER_DOWNLOADING, off, size);
	}
	/* The closing PUT carries the rest: all of it (monolithic), or nothing. */
	_cleanup_free_ char *url = upload_url(cur, digest);
	if (!url)
		return ad_fail(err, AD_E_UNAVAILABLE, "registry %s: bad upload location %s",
			       pc->dest->domain, cur);
	store_upload up = {.fd = fd, .offset = (off_t)off, .length = size - off};
	store_reply rep;
	if (store_session_send(pc->sess, "PUT", url, octets, &up, &rep, err) < 0)
		return -1;
	int r = 0;
	if (rep.status != 201) {
		_cleanup_free_ char *what = ad_asprintf("blob %s", digest);
		r = refused(pc, what, &rep, err);
	} else if (rep.digest && strcmp(rep.digest, digest) != 0) {
		r = ad_fail(err, AD_E_DATA_LOSS, "registry %s stored blob %s as %s",
			    pc->dest->domain, digest, rep.digest);
	}
	store_reply_clear(&rep);
	if (r == 0)
		report(pc, idx, digest, STORE_LAYER_DONE, size, size);
	return r;
}

static int push_blob(push_ctx *pc, size_t idx, const char *digest, uint64_t size,
		     ad_error **err)
{
	if (!store_digest_valid(digest))
		return ad_fail(err, AD_E_DATA_LOSS, "the manifest names an invalid blob digest");
	_cleanup_free_ char *head = ad_asprintf("/v2/%s/blobs/%s", pc->dest->path, digest);
	store_reply rep;
	if (store_session_send(pc->sess, "HEAD", head, NULL, NULL, &rep, err) < 0)
		return -1;
	if (rep.status != 404) {
		_cleanup_free_ char *what = ad_asprintf("a check for blob %s", digest);
		int r = rep.status == 200 ? 0 : refused(pc, what, &rep, err);
		store_reply_clear(&rep);
		if (r == 0)
			report(pc, idx, digest, STORE_LAYER_EXISTS, size, size);
		return r;
	}
	store_reply_clear(&rep);
	_cleanup_free_ char *start = NULL;
	if (pc->mount_from) {
		char *from = curl_easy_escape(NULL, pc->mount_from, 0);
		start = ad_asprintf("/v2/%s/blobs/uploads/?mount=%s&from=%s", pc->dest->path,
				    digest, from);
		curl_free(from);
	} else {
		start = ad_asprintf("/v2/%s/blobs/uploads/", pc->dest->path);
	}
	if (store_session_send(pc->sess, "POST", start, NULL, NULL, &rep, err) < 0)
		return -1;
	int r;
	if (pc->mount_from && rep.status == 201) {
		report(pc, idx, digest, STORE_LAYER_MOUNTED, size, size);
		r = 0;
	} else if (rep.status == 202 && rep.location) {
		/* Also the answer to a mount the registry declined: upload there. */
		r = upload_blob(pc, idx, digest, size, rep.location, err);
	} else {
		_cleanup_free_ char *what = ad_asprintf("an upload of blob %s", digest);
		r = rep.status == 202 ? ad_fail(err, AD_E_UNAVAILABLE,
						"registry %s: upload started without a Location",
						pc->dest->domain)
				      : refused(pc, what, &rep, err);
	}
	store_reply_clear(&rep);
	return r;
}

/* ---- the image ---- */

/* The path of a repository on dest's registry that has the image (one of
 * its other names), for cross-repository mounts; NULL if none. */
static char *mount_source(const store_image *img, const store_ref *dest)
{
	char **lists[] = {img->tags, img->repo_digests};
	for (size_t l = 0; l < 2; l++) {
		for (char **n = lists[l]; n && *n; n++) {
			store_ref r = {0};
			ad_error *e = NULL;
			char *found = NULL;
			if (store_ref_parse(*n, &r, &e) == 0 && strcmp(r.domain, dest->domain) == 0 &&
			    strcmp(r.path, dest->path) != 0)
				found = ad_strdup(r.path);
			ad_error_free(&e);
			store_ref_clear(&r);
			if (found)
				return found;
		}
	}
	return NULL;
}

/* The destination: `dest`, or `image` when that names the image by a tag. */
static int push_destination(const store_image *img, const char *image, const char *dest,
			    store_ref *ret, ad_error **err)
{
	const char *target = dest && *dest ? dest : image;
	if (store_ref_parse(target, ret, err) < 0)
		return ad_error_wrap(err, "push destination");
	if (ret->digest) {
		store_ref_clear(ret);
		return ad_fail(err, AD_E_INVALID, "push to a tag, not a digest: %s", target);
	}
	if (dest && *dest)
		return 0;
	_cleanup_free_ char *name = store_ref_string(ret);
	for (char **t = img->tags; t && *t; t++)
		if (strcmp(*t, name) == 0)
			return 0;
	store_ref_clear(ret);
	return ad_fail(err, AD_E_INVALID,
		       "%s is not a tag of the image: give the destination (NAME DEST)", image);
}

static int push_manifest(push_ctx *pc, const char *body, size_t len, const char *media_type,
			 char ret_digest[72], ad_error **err)
{
	store_sha256_digest(body, len, ret_digest);
	_cleanup_free_ char *path =
	    ad_asprintf("/v2/%s/manifests/%s", pc->dest->path, pc->dest->tag);
	_cleanup_free_ char *ct = ad_asprintf("Content-Type: %s", media_type);
	const char *hdrs[] = {ct, "Expect:", NULL};
	store_upload up = {.data = body, .length = len};
	store_reply rep;
	if (store_session_send(pc->sess, "PUT", path, hdrs, &up, &rep, err) < 0)
		return -1;
	int r = 0;
	if (rep.status != 201)
		r = refused(pc, "the manifest", &rep, err);
	else if (rep.digest && strcmp(rep.digest, ret_digest) != 0)
		r = ad_fail(err, AD_E_DATA_LOSS, "registry %s stored the manifest as %s, not %s",
			    pc->dest->domain, rep.digest, ret_digest);
	store_reply_clear(&rep);
	return r;
}

int fetch_push(store *s, const char *image, const char *dest, const store_push_opts *opts,
	       store_cancel_fn cancel, void *cancel_userdata, char **ret_digest, char **ret_ref,
	       ad_error **err)
{
	store_image *img = NULL;
	store_ref ref = {0};
	_cleanup_free_ char *mdigest = NULL, *stored = NULL, *body = NULL, *from = NULL;
	_cleanup_free_ char *ref_string = NULL, *name = NULL, *repo_digest = NULL;
	size_t stored_len = 0, len = 0;
	const char *media_type = NULL;
	json_t *m = NULL;
	store_session *sess = NULL;
	int r = -1;
	pthread_rwlock_rdlock(&s->gc_lock); /* the blobs stay while they are read */
	if (store_image_get(s, image, &img, err) < 0 ||
	    push_destination(img, image, dest, &ref, err) < 0)
		goto out;
	ref_string = store_ref_string(&ref);
	if (store_image_manifest_digest(s, img->id, &mdigest, err) < 0 ||
	    store_blob_read(s, mdigest, MAX_MANIFEST, &stored, &stored_len, err) < 0)
		goto out;
	m = json_loadb(stored, stored_len, 0, NULL);
	if (!json_is_object(m) || !json_is_array(json_object_get(m, "layers"))) {
		ad_fail(err, AD_E_DATA_LOSS, "manifest %s of %s is not an image manifest", mdigest,
			image);
		goto out;
	}
	if (manifest_in_format(stored, stored_len, m, opts->format, &body, &len, &media_type,
			       err) < 0)
		goto out;
	if (store_session_new(s, &ref, opts->auth, cancel, cancel_userdata, &sess, err) < 0)
		goto out;
	from = mount_source(img, &ref);
	json_t *layers = json_object_get(m, "layers");
	json_t *config = json_object_get(m, "config");
	push_ctx pc = {.s = s,
		       .sess = sess,
		       .opts = opts,
		       .dest = &ref,
		       .mount_from = from,
		       .count = json_array_size(layers) + 1};
	for (size_t i = 0; i < pc.count; i++) {
		json_t *d = i + 1 < pc.count ? json_array_get(layers, i) : config;
		const char *dg = json_string_value(json_object_get(d, "digest"));
		json_int_t size = json_integer_value(json_object_get(d, "size"));
		report(&pc, i, dg, STORE_LAYER_WAITING, 0, (uint64_t)size);
		if (size < 0 || push_blob(&pc, i, dg, (uint64_t)size, err) < 0) {
			if (size < 0)
				ad_fail(err, AD_E_DATA_LOSS, "manifest %s: a negative size", mdigest);
			report(&pc, i, dg, STORE_LAYER_FAILED, 0, (uint64_t)size);
			goto out;
		}
	}
	char digest[72];
	if (push_manifest(&pc, body, len, media_type, digest, err) < 0)
		goto out;
	/* As docker push: the image now has that repo digest. */
	name = store_ref_name(&ref);
	repo_digest = ad_asprintf("%s@%s", name, digest);
	if (store_image_name_add(s, img->id, repo_digest, true, err) < 0)
		goto out;
	*ret_digest = ad_strdup(digest);
	*ret_ref = ad_steal_ptr(ref_string);
	r = 0;
out:
	store_session_free(sess);
	pthread_rwlock_unlock(&s->gc_lock);
	json_decref(m);
	store_ref_clear(&ref);
	store_image_free(img);
	if (r < 0)
		return ad_error_wrap(err, "push %s%s%s", image, ref_string ? " to " : "",
				     ref_string ? ref_string : "");
	return 0;
}
