/* store.h — the one public header of libadstore: image references, the
 * content-addressed blob store, the image records in the state DB, GC, and
 * overlay rootfs mounts for containers. Pulls from OCI/Docker registries and
 * the archive formats (load, save, import) run in agentd-fetch, a helper
 * process started per operation (libadfetch, store/fetch.h), so that the
 * daemon links neither libcurl nor libarchive; the functions below start it.
 * No protobuf or gRPC: agent/ translates CRI/agent.v1 messages to these. */
#ifndef AGENTD_STORE_H
#define AGENTD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base.h"

/* ---- references ---------------------------------------------------------
 * Normalised like docker/podman: "nginx" is docker.io/library/nginx:latest. */
typedef struct store_ref {
	char *domain; /* "docker.io", "localhost:5000", "[::1]:5000" */
	char *path;   /* "library/nginx" */
	char *tag;    /* NULL when only a digest was given */
	char *digest; /* "sha256:<hex>" or NULL */
} store_ref;

/* AD_E_INVALID naming the reference and the rule it breaks. */
int store_ref_parse(const char *s, store_ref *ret_ref, ad_error **err);
void store_ref_clear(store_ref *ref);
/* "docker.io/library/nginx:latest", "host/x@sha256:..", "host/x:t@sha256:..". */
char *store_ref_string(const store_ref *ref);
/* "docker.io/library/nginx" */
char *store_ref_name(const store_ref *ref);

/* ---- registry credentials (the CRI AuthConfig) -------------------------- */
typedef struct store_auth {
	const char *username;
	const char *password;
	const char *auth;	    /* base64 "user:password" */
	const char *identity_token; /* OAuth2 refresh token for the token realm */
	const char *registry_token; /* used as the Bearer token as is */
} store_auth;

/* Per-registry settings, matched by the reference's domain ("host[:port]"). */
typedef struct store_registry_config {
	const char *host;
	/* Speak http://. Loopback hosts (localhost, 127/8, ::1) do by default
	 * unless certs_dir has a directory for them or `insecure` is set. */
	bool plain_http;
	bool insecure;	      /* https without certificate verification */
	const char **mirrors; /* NULL-terminated base URLs, tried in order before the host */
} store_registry_config;

typedef struct store_opts {
	const char *root;      /* blobs/, layers/, containers/, tmp/ live here */
	const char *db_path;   /* the state DB (opened with ad_db_open) */
	const char *certs_dir; /* certs.d layout: <dir>/<host[:port]>/{*.crt,*.cert,*.key} */
	const char *auth_file; /* containers auth.json or Docker config.json; NULL: none */
	const store_registry_config *registries;
	size_t n_registries;
	unsigned max_parallel;	  /* layers fetched at once; 0: 3 */
	unsigned stall_timeout_s; /* no bytes for this long fails a fetch; 0: 30 */
	unsigned retries;	  /* extra attempts on 5xx/resets; 0: 3 */
	unsigned backoff_ms;	  /* first retry delay, doubled each time; 0: 200 */
	bool allow_devices;	  /* let layers carry device nodes (see unpack) */
	/* A layer that unpacks to more bytes fails (RESOURCE); 0: the default. */
	uint64_t max_unpacked_bytes;
	/* The agentd-fetch executable. NULL: beside the running executable
	 * (or ../store/ of it, a build tree), else the installed one. */
	const char *fetch_helper;
} store_opts;

typedef struct store store;

/* Creates the directory layout and removes leftovers of interrupted pulls
 * (unless an agentd-fetch of this store is still running). */
int store_open(const store_opts *opts, store **ret_store, ad_error **err);
void store_close(store *s);
/* Replaces the registry settings (certs_dir, auth_file, registries; the
 * other fields of opts are ignored): pulls started from now on use them
 * (a SIGHUP reload). */
void store_set_registry_settings(store *s, const store_opts *opts);

/* ---- content store ------------------------------------------------------ */
typedef ssize_t (*store_source_fn)(void *userdata, void *buf, size_t len, ad_error **err);

/* Streams content into blobs/sha256/<hex>: hashed while written to a temp
 * file, fsynced, renamed only if digest and size (size < 0: any) match.
 * Mismatch → AD_E_DATA_LOSS naming both digests; ENOSPC → AD_E_RESOURCE. In
 * every failure no blob becomes visible. */
int store_blob_ingest(store *s, const char *digest, int64_t size, store_source_fn read_fn,
		      void *userdata, ad_error **err);
bool store_blob_exists(store *s, const char *digest);
/* Path of the blob (which may not exist); validated digest or AD_E_INVALID. */
int store_blob_path(store *s, const char *digest, char **ret_path, ad_error **err);

/* ---- pull ---------------------------------------------------------------- */
typedef enum store_layer_state {
	STORE_LAYER_WAITING,
	STORE_LAYER_DOWNLOADING,
	STORE_LAYER_EXTRACTING, /* the download is done; the tail is being unpacked */
	STORE_LAYER_DONE,	/* unpacked and verified */
	STORE_LAYER_EXISTS,	/* already in the store */
	STORE_LAYER_FAILED,
	STORE_LAYER_MOUNTED, /* push: mounted from another repository of the registry */
} store_layer_state;

/* A push reports its blobs (layers, then the config) with the same states:
 * DOWNLOADING is "uploading", DONE "uploaded", EXISTS "already there". */
typedef struct store_progress {
	size_t index, count; /* which layer of how many */
	const char *digest;  /* the layer's (compressed) digest */
	store_layer_state state;
	uint64_t done, total; /* compressed bytes */
} store_progress;

/* Called on the thread that called store_pull. */
typedef void (*store_progress_fn)(void *userdata, const store_progress *p);

/* Polled by the pull at least every 100 ms; once it returns true the pull
 * stops and fails with AD_E_CANCELLED. Must be cheap and must not block
 * (e.g. read an atomic flag). */
typedef bool (*store_cancel_fn)(void *userdata);

typedef struct store_pull_opts {
	const store_auth *auth;		 /* NULL: from the auth file, else anonymous */
	const char *os, *arch, *variant; /* NULL: the host's */
	store_progress_fn progress;
	void *progress_userdata;
	store_cancel_fn cancel; /* NULL: the pull runs to its end */
	void *cancel_userdata;
	/* > 0: an fd (eventfd, pipe) that becomes readable when the caller gives
	 * up, like `cancel` but noticed at once. 0: none. */
	int cancel_fd;
} store_pull_opts;

/* Pulls the image and records it; *ret_image_id (if non-NULL) receives its
 * id ("sha256:<config hex>"). Runs agentd-fetch: progress arrives on the
 * calling thread. A helper that cannot be started is AD_E_PRECONDITION
 * naming it; other errors keep the code and message the helper gave.
 * Cancelled (`cancel` or `cancel_fd`): the helper is killed and the pull
 * fails with AD_E_CANCELLED; it recorded nothing, and what it completed and
 * verified stays for the next pull or GC. */
int store_pull(store *s, const char *reference, const store_pull_opts *opts, char **ret_image_id,
	       ad_error **err);

/* Pulls since the store was opened (for the metrics): completed and failed
 * ones, the compressed layer bytes the completed ones downloaded (layers
 * already in the store count nothing) and their time. */
/* Completed pulls by duration: the upper bounds (seconds) of the buckets. */
#define STORE_PULL_DURATION_N 11
extern const double store_pull_duration_bounds[STORE_PULL_DURATION_N];
typedef struct store_pull_counters {
	uint64_t pulls, failures, bytes;
	double seconds;
	/* Completed pulls that took at most bound[i] and more than bound[i-1];
	 * the rest took longer than the last bound. */
	uint64_t by_duration[STORE_PULL_DURATION_N];
} store_pull_counters;
void store_pull_counters_get(store *s, store_pull_counters *ret);

/* ---- push ---------------------------------------------------------------- */
typedef struct store_push_opts {
	const store_auth *auth; /* NULL: from the auth file, else anonymous */
	/* The manifest's format: NULL or "" as stored, "oci" or "v2s2" (Docker
	 * image manifest v2 schema 2); converted manifests change digest. */
	const char *format;
	/* 0: each blob in one PUT; else PATCHes of this many bytes, then a PUT. */
	uint64_t chunk_size;
	store_progress_fn progress;
	void *progress_userdata;
	int cancel_fd; /* as store_pull_opts.cancel_fd */
} store_push_opts;

/* Pushes the image found by `image` to the registry reference `dest` (NULL:
 * `image` itself, which must then be one of its tags): each blob checked
 * with HEAD, mounted from another repository of the same registry that holds
 * the image when there is one, else uploaded; then the manifest. Runs
 * agentd-fetch. *ret_digest: the pushed manifest's digest; *ret_ref: the
 * normalised destination. A refusal by the registry keeps its words
 * (UNAUTHENTICATED/PERMISSION_DENIED for auth, else FAILED_PRECONDITION or
 * UNAVAILABLE). The image gets the repo digest dest@digest. */
int store_push(store *s, const char *image, const char *dest, const store_push_opts *opts,
	       char **ret_digest, char **ret_ref, ad_error **err);

/* ---- images ---------------------------------------------------------------- */
typedef struct store_image {
	char *id;	     /* "sha256:<config hex>" */
	char **tags;	     /* NULL-terminated, normalised names */
	char **repo_digests; /* NULL-terminated, "name@sha256:<manifest>" */
	uint64_t size;	     /* compressed layers + config */
	char *config_json;   /* the image config */
	char **layer_ids;    /* NULL-terminated diff_ids, bottom first */
	int64_t created_ns;  /* when it was stored here */
} store_image;

void store_image_free(store_image *img);
void store_images_free(store_image **imgs);

/* Finds by tag/reference ("nginx", "docker.io/library/nginx:1"), id (full or
 * a unique hex prefix of at least 12), manifest or repo digest. Absent →
 * AD_E_NOT_FOUND naming the query. */
int store_image_get(store *s, const char *query, store_image **ret_image, ad_error **err);
/* NULL-terminated list; `filter` (may be NULL) as in store_image_get. */
int store_image_list(store *s, const char *filter, store_image ***ret_images, ad_error **err);
/* Removes the image found by `query` (all its tags when given an id or digest,
 * only that tag when given a tag that is not the image's last). Absent is not
 * an error. An image a container uses → AD_E_PRECONDITION. Content nobody else
 * references is freed. */
int store_image_remove(store *s, const char *query, ad_error **err);
/* Names the image found by `image` also `new_ref` (a tag; it moves there
 * from another image that had it). *ret_ref (may be NULL): normalised. */
int store_image_tag(store *s, const char *image, const char *new_ref, char **ret_ref,
		    ad_error **err);
/* Deletes blobs and layer dirs no image references, and temp leftovers. */
int store_gc(store *s, uint64_t *ret_freed_bytes, ad_error **err);

/* Load, save and import run agentd-fetch too. `cancel_fd` is as
 * store_pull_opts.cancel_fd (0: none): when it becomes readable the helper
 * is killed and the operation fails with AD_E_CANCELLED, having recorded
 * no image it had not completed (what it wrote to `fd` by then is the
 * caller's to remove). */

/* Loads a docker-archive (docker save) or an oci-archive, plain or compressed,
 * from `fd`; records the tags it carries. *ret_image_ids: NULL-terminated. */
int store_image_load(store *s, int fd, int cancel_fd, char ***ret_image_ids, ad_error **err);
/* Writes the images found by `queries` (NULL-terminated) to `fd` as a tar in
 * docker 25's save layout: an OCI layout (oci-layout, index.json, blobs/)
 * plus manifest.json, so docker load and oci-archive readers both take it. */
int store_image_save(store *s, const char *const *queries, int fd, int cancel_fd, ad_error **err);
/* Imports a rootfs tar (plain, gzip or zstd; a regular file) as a one-layer
 * image, tagged `reference` if not NULL. An empty tar gives an image without
 * layers. */
int store_image_import(store *s, int fd, const char *reference, int cancel_fd, char **ret_image_id,
		       ad_error **err);

/* Commit: a new image on top of `base`, with the writable layer of a
 * container's rootfs (store_rootfs_mount) as its top layer, or only a new
 * config (an "empty_layer" history entry). The layer is the overlay upper
 * dir as an OCI tar+gzip (overlay whiteouts and opaque dirs as .wh.
 * entries), reproducible: sorted, numeric owners, no gzip name or time,
 * mtimes clamped to source_date_epoch when it is >= 0 (which is then also
 * the image's created time). Nothing is recorded unless all of it is. */
typedef struct store_commit_opts {
	const char *base;	  /* image query; NULL: scratch */
	const char *container_id; /* whose upper dir becomes the layer; NULL: no layer */
	const char *config_json;  /* the image config's "config" object; NULL: the base's */
	const char *created_by;	  /* the history entry's */
	const char *comment;
	const char *author;
	const char *reference; /* tag; NULL: untagged */
	int64_t source_date_epoch; /* < 0: now, times as they are */
} store_commit_opts;
int store_image_commit(store *s, const store_commit_opts *opts, int cancel_fd,
		       char **ret_image_id, ad_error **err);

/* Unpacks a tar (plain, gzip or zstd) read from `fd` into `dest_dir` (which
 * must exist and be empty) with the layer unpacker's containment and limits
 * (every path resolved inside dest_dir, no devices): a build context or an
 * ADD source. AD_E_INVALID for a damaged or hostile archive. */
int store_unpack_archive(store *s, int fd, const char *dest_dir, int cancel_fd, ad_error **err);

typedef struct store_fs_usage {
	char *mountpoint;    /* the store root */
	uint64_t used_bytes; /* bytes of blobs and layers */
	uint64_t inodes_used;
	uint64_t fs_free_bytes, fs_total_bytes;
} store_fs_usage;
int store_fs_usage_get(store *s, store_fs_usage *ret_usage, ad_error **err);
void store_fs_usage_clear(store_fs_usage *u);

/* ---- container rootfs ------------------------------------------------------ */
/* Pins the image for `container_id` and mounts an overlay of its layers with
 * an upper/work dir under <root>/containers/<id>/; *ret_path is the merged
 * dir. Idempotent for a mounted container. */
int store_rootfs_mount(store *s, const char *image, const char *container_id, char **ret_path,
		       ad_error **err);
/* A container in a user namespace: its rootfs must show the image's files
 * owned by the container's ids, i.e. host ids shifted by the mappings. */
typedef struct store_id_range {
	uint32_t container_id, host_id, size;
} store_id_range;
typedef struct store_idmap {
	int userns_fd; /* a user namespace with exactly these mappings */
	const store_id_range *uids, *gids;
	size_t n_uids, n_gids;
} store_idmap;
/* How a mapped rootfs was made. */
typedef enum store_idmap_kind {
	STORE_IDMAP_NONE = 0, /* not mapped */
	STORE_IDMAP_MOUNTS,   /* idmapped mounts of the layers (mount_setattr) */
	STORE_IDMAP_COPY,     /* chowned copies of the layers, cached per mapping */
} store_idmap_kind;
/* store_rootfs_mount for a user namespace: the overlay's lower layers are
 * idmapped mounts of the layer dirs where the kernel and filesystem allow,
 * else chowned copies under <root>/mapped/<mapping>/ (made once per mapping
 * and layer); the upper dir belongs to the container's root. *ret_kind (may
 * be NULL) says which; STORE_IDMAP_NONE for a container already mounted. */
int store_rootfs_mount_mapped(store *s, const char *image, const char *container_id,
			      const store_idmap *map, char **ret_path, store_idmap_kind *ret_kind,
			      ad_error **err);
/* Removes the chowned copies made for `map` (its pod is gone). */
int store_idmap_release(store *s, const store_idmap *map, ad_error **err);
/* Bytes (by blocks, as du) and inodes of the container's writable layer (its
 * overlay upper dir). No rootfs → AD_E_NOT_FOUND. */
int store_rootfs_usage(store *s, const char *container_id, uint64_t *ret_bytes,
		       uint64_t *ret_inodes, ad_error **err);
/* Unmounts the merged dir only: upper/ and the pin stay, and
 * store_rootfs_mount mounts it again with its changes. */
int store_rootfs_unmount(store *s, const char *container_id, ad_error **err);
/* Unmounts, removes <root>/containers/<id>/ and the pin. Absent is not an error. */
int store_rootfs_remove(store *s, const char *container_id, ad_error **err);

#endif
