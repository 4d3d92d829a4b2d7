/* store_int.h — private to libadstore: the store object and the helpers its
 * modules (blob, registry, pull, images, rootfs) share. */
#ifndef AGENTD_STORE_INT_H
#define AGENTD_STORE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base.h"
#include "db.h"
#include "store.h"

typedef struct store_inflight store_inflight;
typedef struct store_registry store_registry;

struct store {
	char *root, *db_path;
	int root_fd, blobs_fd, layers_fd, tmp_fd, containers_fd;
	/* <root>/store.lock: agentd-fetch processes hold it shared while they
	 * run, GC and the tmp/ cleanup take it exclusively (see store_lock). */
	int lock_fd;
	char *fetch_helper; /* the agentd-fetch executable */
	ad_db *db;
	pthread_mutex_t db_lock; /* one connection, used by whichever thread records */

	/* Blobs being downloaded right now: a second fetch of one waits for the
	 * first (in this process; other processes through a lock file). */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	store_inflight *inflight;

	/* Pulls hold it shared from their first byte until the image is recorded;
	 * GC takes it exclusively, so it never sees a pull's unrecorded content. */
	pthread_rwlock_t gc_lock;
	pthread_mutex_t progress_lock;
	/* store_pull_counters */
	_Atomic uint64_t pulls, pull_failures, pull_bytes, pull_ns;
	_Atomic uint64_t pulls_by_duration[STORE_PULL_DURATION_N];

	/* Settings, copied from store_opts. settings_lock guards the registry
	 * ones (certs_dir, auth_file, registries): store_set_registry_settings
	 * replaces them while pulls start. */
	pthread_mutex_t settings_lock;
	char *certs_dir, *auth_file;
	store_registry_config *registries;
	size_t n_registries;
	unsigned max_parallel, stall_timeout_s, retries, backoff_ms;
	bool allow_devices;
	uint64_t max_unpacked_bytes;

	store_registry *reg; /* connection cache, token cache */
};

bool store_digest_valid(const char *d);

/* ---- store.c: the store-wide lock between processes ----
 * flock(2) on <root>/store.lock, a new open file description each time (so
 * it also excludes threads of this process holding it through another).
 * Returns the fd holding the lock (close it to release), or -1 (with
 * nonblocking set: someone holds it the other way). */
int store_lock(store *s, bool exclusive, bool nonblocking);
/* Empties tmp/ if no agentd-fetch is running (store.lock is free). */
void store_clean_tmp(store *s);

/* ---- blob.c: streaming writer into the content store ---- */
typedef struct store_blob_writer store_blob_writer;
int store_blob_writer_open(store *s, const char *digest, int64_t size, store_blob_writer **ret_w,
			   ad_error **err);
int store_blob_writer_write(store_blob_writer *w, const void *buf, size_t len, ad_error **err);
uint64_t store_blob_writer_written(store_blob_writer *w);
/* Starts over (the source restarted from byte 0). */
int store_blob_writer_reset(store_blob_writer *w, ad_error **err);
/* Verifies, fsyncs and renames into place; frees w either way. */
int store_blob_writer_commit(store_blob_writer *w, ad_error **err);
void store_blob_writer_abort(store_blob_writer *w);
int store_blob_read(store *s, const char *digest, size_t max, char **ret_data, size_t *ret_len,
		    ad_error **err);
/* Puts bytes held in memory into the content store under digest (which
 * they must match), unless it has them already. */
int store_blob_put(store *s, const char *digest, const void *data, size_t len, ad_error **err);
/* A store_source_fn reading the file descriptor *(int *)fd_ptr. */
ssize_t store_fd_read(void *fd_ptr, void *buf, size_t len, ad_error **err);
/* A digest as the store names blobs: "sha256:" and the hash in hex. */
void store_digest_format(const unsigned char sha256[32], char out[72]);
void store_sha256_digest(const void *data, size_t len, char out[72]);

/* Waits while another thread or process works on `key` (a blob or layer),
 * then claims it; the caller checks whether the work is still needed. */
void store_inflight_claim(store *s, const char *key);
void store_inflight_release(store *s, const char *digest);

/* ---- registry.c ---- */
int store_registry_init(store *s, ad_error **err);
void store_registry_free(store *s);

/* One pull's view of one repository, with the pull's transfer loop (one
 * curl multi handle and its thread). `cancel` (may be NULL) is polled by that
 * thread every 50 ms; once it returns true every transfer of the session is
 * aborted and every request fails with AD_E_CANCELLED. */
typedef struct store_session store_session;
int store_session_new(store *s, const store_ref *ref, const store_auth *auth,
		      store_cancel_fn cancel, void *cancel_userdata, store_session **ret_sess,
		      ad_error **err);
/* All of the session's requests must have returned. */
void store_session_free(store_session *sess);
bool store_session_cancelled(store_session *sess);
/* GETs the manifest `tag_or_digest` with the Accept of every supported type. */
int store_session_get_manifest(store_session *sess, const char *tag_or_digest, char **ret_body,
			       size_t *ret_len, char **ret_media_type, char **ret_digest,
			       ad_error **err);
/* Streams a blob to `sink` (resuming with Range after a reset). The sink runs
 * on the session's loop thread, so it must not block: it returns 0 when it
 * took all `len` bytes, 1 when it is full (the transfer pauses and the same
 * bytes come again after store_session_resume()), -1 to abort with its error. */
typedef int (*store_sink_fn)(void *userdata, const void *buf, size_t len, ad_error **err);
int store_session_get_blob(store_session *sess, const char *digest, uint64_t size,
			   store_sink_fn sink, void *userdata, ad_error **err);
/* A sink that returned 1 has room again (any thread). */
void store_session_resume(store_session *sess);

/* The body of a push's request: `length` bytes from `data`, or else from
 * `fd` at `offset` (read as curl sends). */
typedef struct store_upload {
	const void *data;
	int fd;
	off_t offset;
	uint64_t length;
} store_upload;
/* The registry's answer to store_session_send. */
typedef struct store_reply {
	long status;
	char *location; /* Location, made absolute */
	char *digest;	/* Docker-Content-Digest */
	char *message;	/* the registry's error ("CODE: message") for a non-2xx */
} store_reply;
void store_reply_clear(store_reply *r);
/* One request of a push to the reference's registry itself (mirrors serve
 * pulls only): `target` is "/v2/..." or an absolute URL from a Location.
 * Auth as for pulls (a 401 is answered once); transport failures, 5xx and
 * 429 retried with backoff, except for PATCH (a chunk is not resent). A 401
 * or 403 after that fails (UNAUTHENTICATED, PERMISSION); any other status is
 * the caller's to judge, in *ret. */
int store_session_send(store_session *sess, const char *method, const char *target,
		       const char *const *headers, const store_upload *body, store_reply *ret,
		       ad_error **err);

/* ---- pull.c: layers and platforms, shared with load.c ---- */
/* Unpacks a stream into tmp/, checks its diff_id against want_diff_id (unless
 * NULL) and renames it to layers/<hex>. */
int store_layer_unpack(store *s, const char *label, const char *want_diff_id,
		       store_source_fn read_fn, void *userdata, char ret_diff_id[72],
		       ad_error **err);
int store_layer_unpack_blob(store *s, const char *digest, const char *want_diff_id,
			    char ret_diff_id[72], ad_error **err);
void store_host_platform(const char **os, const char **arch, const char **variant);
typedef struct json_t json_t;
json_t *store_choose_platform(json_t *manifests, const char *os, const char *arch,
			      const char *variant);

/* ---- images.c ---- */
typedef struct store_layer_rec {
	char *digest; /* compressed blob */
	char *media_type;
	char *diff_id; /* uncompressed; names layers/<hex> */
	uint64_t size;
} store_layer_rec;

/* ---- pull.c ---- */
/* The layers an image manifest and its config describe, checked: as many
 * rootfs.diff_ids as layers, at most 500, valid digests and sizes
 * (AD_E_DATA_LOSS or AD_E_RESOURCE naming ref_string). Fuzzed:
 * tests/fuzz/manifest_fuzz.c. */
int store_manifest_layers(const char *ref_string, json_t *manifest, json_t *config,
			 store_layer_rec **ret, size_t *ret_n, ad_error **err);
void store_layer_recs_free(store_layer_rec *v, size_t n);

int store_image_record(store *s, const char *name_tag, const char *repo_digest,
		       const char *manifest_digest, const char *config_digest,
		       const store_layer_rec *layers, size_t n_layers,
		       const char *const *extra_blobs, ad_error **err);
/* Layer dir ids (diff_id hex), bottom first, of the image found by `query`. */
int store_image_layers(store *s, const char *query, char **ret_image_id, char ***ret_layer_ids,
		       ad_error **err);
/* Adds (or moves) a tag or a repo digest ("name@sha256:..") to the image. */
int store_image_name_add(store *s, const char *image_id, const char *name, bool digest,
			 ad_error **err);
int store_image_manifest_digest(store *s, const char *image_id, char **ret, ad_error **err);
int store_pin(store *s, const char *holder, const char *image_id, ad_error **err);
int store_unpin(store *s, const char *holder, ad_error **err);

void store_strv_free(char **v);

/* ---- commit.c (libadfetch) ---- */
/* The OCI layer tar of a directory that was an overlay upper dir (whiteouts
 * and opaque dirs converted, reproducible; see store_image_commit), written
 * through `sink` (which takes all bytes or fails: never 1). Times after
 * clamp_epoch (>= 0) are set to it. */
int store_layer_tar(int dir_fd, int64_t clamp_epoch, store_sink_fn sink, void *userdata,
		    ad_error **err);

/* rootfs_mapped.c: a layer dir for a container in a user namespace (an fd
 * for /proc/self/fd/N in lowerdir; *kind: how it was made), and the upper
 * dir handed to the container's root. */
int store_layer_mapped(store *s, const char *hex, const store_idmap *map, store_idmap_kind *kind,
		       ad_error **err);
int store_idmap_own_upper(int container_dir, const store_idmap *map, ad_error **err);

/* ---- fetch_proto.c: the messages between agentd (fetch_client.c) and
 * agentd-fetch (fetch_main.c), one JSON object per line ---- */
json_t *fetch_proto_store(const store *s);
/* Fills *o from `j` (strings point into j; *o->registries is allocated:
 * fetch_proto_store_clear frees it). */
int fetch_proto_store_parse(json_t *j, store_opts *o, ad_error **err);
void fetch_proto_store_clear(store_opts *o);
json_t *fetch_proto_error(const ad_error *e);
void fetch_proto_error_parse(json_t *j, ad_error **err);
json_t *fetch_proto_progress(const store_progress *p);
/* Registry credentials (strings point into j). */
json_t *fetch_proto_auth(const store_auth *a);
void fetch_proto_auth_parse(json_t *j, store_auth *a);
void fetch_proto_progress_parse(json_t *j, store_progress *p);

#endif
