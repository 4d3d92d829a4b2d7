/* Commit: a container's writable layer (its overlay upper dir) as an OCI
 * layer, and a new image on top of its base. Runs in agentd-fetch (it needs
 * libarchive); store_image_commit in fetch_client.c starts it.
 *
 * The layer is a tar of the upper dir with overlayfs' markers turned back
 * into OCI whiteouts: a 0:0 character device is ".wh.<name>", a directory
 * with the opaque xattr gets a ".wh..wh..opq" entry. It is reproducible:
 * entries sorted by name, owners numeric without names, no atime/ctime,
 * whole-second mtimes clamped to SOURCE_DATE_EPOCH when given, and a gzip
 * header without name or time, so the same tree always gives the same
 * diff_id and blob digest. */
#include "fetch.h"
#include "store_int.h"
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <zlib.h>

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define MAX_JSON (16u << 20)
#define MAX_DEPTH 256

/* ---- the tar of a directory with whiteouts -------------------------------- */

typedef struct hardlink {
	dev_t dev;
	ino_t ino;
	char *path;
} hardlink;

typedef struct tar_walk {
	struct archive *a;
	int64_t clamp; /* < 0: times as they are */
	hardlink *links;
	size_t n_links;
	ad_error **err;
} tar_walk;

static bool is_overlay_xattr(const char *name)
{
	return strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0;
}

/* Whether a directory of the upper dir hides everything below it. */
static bool dir_is_opaque(int dir_fd)
{
	char v[2] = {0};
	_cleanup_free_ char *p = ad_asprintf("/proc/self/fd/%d", dir_fd);
	return (getxattr(p, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y') ||
	       (getxattr(p, "user.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y');
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The xattrs of `name` in dir_fd, sorted, without overlay's own. */
static void add_xattrs(struct archive_entry *e, int dir_fd, const char *name)
{
	_cleanup_free_ char *p = ad_asprintf("/proc/self/fd/%d/%s", dir_fd, name);
	char list[65536];
	ssize_t n = llistxattr(p, list, sizeof(list));
	if (n <= 0)
		return;
	const char *names[512];
	size_t count = 0;
	for (ssize_t off = 0; off < n && count < 512; off += (ssize_t)strlen(list + off) + 1)
		if (!is_overlay_xattr(list + off))
			names[count++] = list + off;
	qsort(names, count, sizeof(names[0]), cmp_names);
	for (size_t i = 0; i < count; i++) {
		char val[65536];
		ssize_t vn = lgetxattr(p, names[i], val, sizeof(val));
		if (vn >= 0)
			archive_entry_xattr_add_entry(e, names[i], val, (size_t)vn);
	}
}

static struct archive_entry *entry_new(const tar_walk *w, const char *path, const struct stat *st)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, path);
	archive_entry_set_mode(e, st->st_mode);
	archive_entry_set_uid(e, st->st_uid);
	archive_entry_set_gid(e, st->st_gid);
	int64_t mtime = st->st_mtim.tv_sec;
	if (w->clamp >= 0 && mtime > w->clamp)
		mtime = w->clamp;
	archive_entry_set_mtime(e, mtime, 0);
	return e;
}

static int write_header(tar_walk *w, struct archive_entry *e, const char *path)
{
	int r = archive_write_header(w->a, e);
	if (r < ARCHIVE_WARN)
		return ad_fail(w->err, AD_E_INTERNAL, "layer entry %s: %s", path,
			       archive_error_string(w->a));
	return 0;
}

/* An empty regular file named `path`: the OCI form of a whiteout. */
static int write_marker(tar_walk *w, const char *path, const struct stat *st)
{
	struct stat m = *st;
	m.st_mode = S_IFREG | 0644;
	struct archive_entry *e = entry_new(w, path, &m);
	archive_entry_set_size(e, 0);
	int r = write_header(w, e, path);
	archive_entry_free(e);
	return r;
}

static int write_file_data(tar_walk *w, int dir_fd, const char *name, const char *path)
{
	_cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(w->err, AD_E_INTERNAL, "layer entry %s: open", path);
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ad_fail_errno(w->err, AD_E_INTERNAL, "layer entry %s: read", path);
		if (n == 0)
			return 0;
		if (archive_write_data(w->a, buf, (size_t)n) != n)
			return ad_fail(w->err, AD_E_INTERNAL, "layer entry %s: %s", path,
				       archive_error_string(w->a));
	}
}

static int walk_dir(tar_walk *w, int dir_fd, const char *prefix, unsigned depth);

static int walk_entry(tar_walk *w, int dir_fd, const char *name, const char *prefix,
		      unsigned depth)
{
	struct stat st;
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(w->err, AD_E_INTERNAL, "layer entry %s%s: stat", prefix, name);
	_cleanup_free_ char *path = ad_asprintf("%s%s", prefix, name);
	if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
		_cleanup_free_ char *wh = ad_asprintf("%s.wh.%s", prefix, name);
		return write_marker(w, wh, &st);
	}
	struct archive_entry *e = entry_new(w, path, &st);
	int r = 0;
	if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
		for (size_t i = 0; i < w->n_links; i++)
			if (w->links[i].dev == st.st_dev && w->links[i].ino == st.st_ino) {
				archive_entry_set_hardlink(e, w->links[i].path);
				archive_entry_set_size(e, 0);
				r = write_header(w, e, path);
				archive_entry_free(e);
				return r;
			}
		w->links = ad_realloc(w->links, sizeof(*w->links) * (w->n_links + 1));
		w->links[w->n_links++] =
		    (hardlink){.dev = st.st_dev, .ino = st.st_ino, .path = ad_strdup(path)};
	}
	add_xattrs(e, dir_fd, name);
	if (S_ISREG(st.st_mode)) {
		archive_entry_set_size(e, st.st_size);
		r = write_header(w, e, path);
		if (r == 0 && st.st_size > 0)
			r = write_file_data(w, dir_fd, name, path);
	} else if (S_ISLNK(st.st_mode)) {
		char target[4097];
		ssize_t n = readlinkat(dir_fd, name, target, sizeof(target) - 1);
		if (n < 0)
			r = ad_fail_errno(w->err, AD_E_INTERNAL, "layer entry %s: readlink", path);
		else {
			target[n] = '\0';
			archive_entry_set_symlink(e, target);
			r = write_header(w, e, path);
		}
	} else if (S_ISDIR(st.st_mode)) {
		_cleanup_free_ char *dpath = ad_asprintf("%s/", path);
		archive_entry_set_pathname(e, dpath);
		r = write_header(w, e, dpath);
		_cleanup_close_ int sub = -1;
		if (r == 0) {
			sub = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				r = ad_fail_errno(w->err, AD_E_INTERNAL, "layer entry %s: open", path);
		}
		if (r == 0 && dir_is_opaque(sub)) {
			_cleanup_free_ char *opq = ad_asprintf("%s.wh..wh..opq", dpath);
			r = write_marker(w, opq, &st);
		}
		if (r == 0)
			r = walk_dir(w, sub, dpath, depth + 1);
	} else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
		archive_entry_set_rdev(e, st.st_rdev);
		r = write_header(w, e, path);
	}
	/* Sockets have no tar form; they are left out, as docker does. */
	archive_entry_free(e);
	return r;
}

static int walk_dir(tar_walk *w, int dir_fd, const char *prefix, unsigned depth)
{
	if (depth > MAX_DEPTH)
		return ad_fail(w->err, AD_E_RESOURCE, "layer: %s is nested over %d levels deep",
			       prefix, MAX_DEPTH);
	size_t n = 0;
	char **names = ad_dir_names(dir_fd, ".", &n);
	if (!names)
		return ad_fail_errno(w->err, AD_E_INTERNAL, "layer: read dir %s", prefix);
	int r = 0;
	for (size_t i = 0; r == 0 && i < n; i++)
		r = walk_entry(w, dir_fd, names[i], prefix, depth);
	ad_strv_free(names);
	return r;
}

typedef struct tar_out {
	store_sink_fn sink;
	void *userdata;
	ad_error *err;
} tar_out;

static la_ssize_t tar_out_write(struct archive *a, void *client, const void *buf, size_t len)
{
	tar_out *o = client;
	if (o->err)
		return -1;
	if (o->sink(o->userdata, buf, len, &o->err) != 0) {
		archive_set_error(a, EIO, "%s", o->err ? o->err->message : "write failed");
		return -1;
	}
	return (la_ssize_t)len;
}

int store_layer_tar(int dir_fd, int64_t clamp_epoch, store_sink_fn sink, void *userdata,
		    ad_error **err)
{
	tar_walk w = {.a = archive_write_new(), .clamp = clamp_epoch, .err = err};
	tar_out out = {.sink = sink, .userdata = userdata};
	archive_write_set_format_pax_restricted(w.a);
	archive_write_add_filter_none(w.a);
	archive_write_set_bytes_in_last_block(w.a, 1);
	int r;
	if (archive_write_open2(w.a, &out, NULL, tar_out_write, NULL, NULL) != ARCHIVE_OK)
		r = ad_fail(err, AD_E_INTERNAL, "layer: %s", archive_error_string(w.a));
	else
		r = walk_dir(&w, dir_fd, "", 0);
	if (archive_write_close(w.a) != ARCHIVE_OK && r == 0)
		r = ad_fail(err, AD_E_INTERNAL, "layer: %s", archive_error_string(w.a));
	archive_write_free(w.a);
	if (out.err) {
		/* The sink's own error says more than libarchive's copy of it. */
		ad_error_free(err);
		*err = out.err;
		r = -1;
	}
	for (size_t i = 0; i < w.n_links; i++)
		free(w.links[i].path);
	free(w.links);
	return r;
}

/* ---- the layer blob: gzip, both digests, into the store ------------------- */

typedef struct layer_out {
	EVP_MD_CTX *diff, *blob;
	z_stream z;
	int fd; /* the compressed blob, in tmp/ */
	uint64_t size;
} layer_out;

static int layer_out_flush(layer_out *o, int flush, ad_error **err)
{
	unsigned char buf[65536];
	int zr;
	do {
		o->z.next_out = buf;
		o->z.avail_out = sizeof(buf);
		zr = deflate(&o->z, flush);
		if (zr == Z_STREAM_ERROR)
			return ad_fail(err, AD_E_INTERNAL, "layer: gzip failed");
		size_t n = sizeof(buf) - o->z.avail_out;
		EVP_DigestUpdate(o->blob, buf, n);
		for (size_t off = 0; off < n;) {
			ssize_t w = write(o->fd, buf + off, n - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return ad_fail_errno(err, AD_E_INTERNAL, "layer: write");
			off += (size_t)w;
		}
		o->size += n;
	} while (o->z.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
	return 0;
}

static int layer_out_sink(void *userdata, const void *buf, size_t len, ad_error **err)
{
	layer_out *o = userdata;
	EVP_DigestUpdate(o->diff, buf, len);
	o->z.next_in = (unsigned char *)(uintptr_t)buf;
	o->z.avail_in = (uInt)len;
	return layer_out_flush(o, Z_NO_FLUSH, err);
}

static void digest_final(EVP_MD_CTX *md, char out[72])
{
	unsigned char h[32];
	unsigned int n = 0;
	EVP_DigestFinal_ex(md, h, &n);
	store_digest_format(h, out);
}

/* Writes the layer of `dir_fd` into the content store and layers/. */
static int layer_commit(store *s, int dir_fd, int64_t clamp, store_layer_rec *ret, ad_error **err)
{
	layer_out o = {.diff = EVP_MD_CTX_new(), .blob = EVP_MD_CTX_new(), .fd = -1};
	EVP_DigestInit_ex(o.diff, EVP_sha256(), NULL);
	EVP_DigestInit_ex(o.blob, EVP_sha256(), NULL);
	/* windowBits 15 + 16: a gzip wrapper, whose header zlib writes without
	 * a name and with mtime 0, so that it does not vary between runs. */
	bool z_ok = deflateInit2(&o.z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
				 Z_DEFAULT_STRATEGY) == Z_OK;
	int r = -1;
	char diff_id[72], digest[72];
	o.fd = openat(s->tmp_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (!z_ok)
		ad_fail(err, AD_E_INTERNAL, "layer: gzip init failed");
	else if (o.fd < 0)
		ad_fail_errno(err, AD_E_INTERNAL, "layer: temp file in %s/tmp", s->root);
	else if (store_layer_tar(dir_fd, clamp, layer_out_sink, &o, err) == 0 &&
		 layer_out_flush(&o, Z_FINISH, err) == 0)
		r = 0;
	if (z_ok)
		deflateEnd(&o.z);
	digest_final(o.diff, diff_id);
	digest_final(o.blob, digest);
	EVP_MD_CTX_free(o.diff);
	EVP_MD_CTX_free(o.blob);
	if (r == 0 && !store_blob_exists(s, digest)) {
		if (lseek(o.fd, 0, SEEK_SET) < 0)
			r = ad_fail_errno(err, AD_E_INTERNAL, "layer: seek");
		else
			r = store_blob_ingest(s, digest, (int64_t)o.size, store_fd_read, &o.fd, err);
	}
	if (o.fd >= 0)
		close(o.fd);
	if (r < 0)
		return -1;
	/* The overlay lowerdir the new image's containers mount: unpacked from
	 * the blob, so it is exactly what a pull of the image would give. */
	store_inflight_claim(s, diff_id);
	struct stat st;
	if (fstatat(s->layers_fd, diff_id + 7, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = store_layer_unpack_blob(s, digest, diff_id, NULL, err);
	store_inflight_release(s, diff_id);
	if (r < 0)
		return -1;
	ret->digest = ad_strdup(digest);
	ret->diff_id = ad_strdup(diff_id);
	ret->media_type = ad_strdup(MT_LAYER_GZIP);
	ret->size = o.size;
	return 0;
}

/* ---- the image ---------------------------------------------------------------- */

static json_t *blob_json(store *s, const char *digest, char **ret_text, size_t *ret_len,
			 ad_error **err)
{
	char *text = NULL;
	size_t len = 0;
	if (store_blob_read(s, digest, MAX_JSON, &text, &len, err) < 0)
		return NULL;
	json_t *j = json_loadb(text, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		free(text);
		ad_fail(err, AD_E_DATA_LOSS, "blob %s is not a JSON object", digest);
		return NULL;
	}
	if (ret_text) {
		*ret_text = text;
		*ret_len = len;
	} else
		free(text);
	return j;
}

/* The base image's config and layers (a fresh config for scratch). */
static int base_load(store *s, const char *base, json_t **ret_config, store_layer_rec **ret_layers,
		     size_t *ret_n, ad_error **err)
{
	*ret_layers = NULL;
	*ret_n = 0;
	if (!base) {
		const char *os, *arch, *variant;
		store_host_platform(&os, &arch, &variant);
		*ret_config = json_pack("{s:s, s:s, s:{}, s:{s:s, s:[]}, s:[]}", "architecture",
					arch, "os", os, "config", "rootfs", "type", "layers",
					"diff_ids", "history");
		if (variant)
			json_object_set_new(*ret_config, "variant", json_string(variant));
		return 0;
	}
	store_image *img = NULL;
	if (store_image_get(s, base, &img, err) < 0)
		return -1;
	_cleanup_free_ char *mdigest = NULL;
	json_t *manifest = NULL, *config = NULL;
	int r = -1;
	if (store_image_manifest_digest(s, img->id, &mdigest, err) == 0 &&
	    (manifest = blob_json(s, mdigest, NULL, NULL, err)) &&
	    (config = blob_json(s, img->id, NULL, NULL, err)))
		r = store_manifest_layers(img->id, manifest, config, ret_layers, ret_n, err);
	store_image_free(img);
	json_decref(manifest);
	if (r < 0) {
		json_decref(config);
		return -1;
	}
	*ret_config = config;
	return 0;
}

/* parent[key], replaced by a new `type` value if it is missing or another type. */
static json_t *member_of_type(json_t *parent, const char *key, json_type type)
{
	json_t *v = json_object_get(parent, key);
	if (!v || json_typeof(v) != type) {
		v = type == JSON_ARRAY ? json_array() : json_object();
		json_object_set_new(parent, key, v);
	}
	return v;
}

int fetch_image_commit(store *s, const store_commit_opts *o, char **ret_image_id, ad_error **err)
{
	_cleanup_free_ char *tag = NULL;
	if (o->reference) {
		store_ref ref = {0};
		if (store_ref_parse(o->reference, &ref, err) < 0)
			return -1;
		if (!ref.tag) {
			store_ref_clear(&ref);
			return ad_fail(err, AD_E_INVALID, "commit needs a tag, not a digest: %s",
				       o->reference);
		}
		tag = ad_asprintf("%s/%s:%s", ref.domain, ref.path, ref.tag);
		store_ref_clear(&ref);
	}
	json_t *new_config = NULL;
	if (o->config_json) {
		new_config = json_loads(o->config_json, 0, NULL);
		if (!json_is_object(new_config)) {
			json_decref(new_config);
			return ad_fail(err, AD_E_INVALID, "commit: the config is not a JSON object");
		}
	}
	pthread_rwlock_rdlock(&s->gc_lock);
	json_t *config = NULL;
	store_layer_rec *layers = NULL;
	size_t n = 0;
	int r = -1;
	_cleanup_close_ int upper_fd = -1;
	char *config_text = NULL, *manifest_text = NULL;
	if (base_load(s, o->base, &config, &layers, &n, err) < 0)
		goto out;
	if (o->container_id) {
		_cleanup_free_ char *upper = ad_asprintf("%s/upper", o->container_id);
		upper_fd = ad_openat_in_root(s->containers_fd, upper, O_RDONLY | O_DIRECTORY, 0,
					     err);
		if (upper_fd < 0) {
			ad_error_wrap(err, "container %s has no writable layer", o->container_id);
			goto out;
		}
		layers = ad_realloc(layers, sizeof(*layers) * (n + 1));
		memset(&layers[n], 0, sizeof(layers[n]));
		if (layer_commit(s, upper_fd, o->source_date_epoch, &layers[n], err) < 0)
			goto out;
		n++;
		ad_fault_point("commit.layer_committed"); /* its image not recorded yet */
	}
	char created[40];
	ad_format_rfc3339nano(o->source_date_epoch >= 0 ? o->source_date_epoch * 1000000000LL
							: ad_now_ns(),
			      created);
	json_object_set_new(config, "created", json_string(created));
	if (o->author)
		json_object_set_new(config, "author", json_string(o->author));
	if (new_config)
		json_object_set(config, "config", new_config);
	json_t *rootfs = member_of_type(config, "rootfs", JSON_OBJECT);
	json_object_set_new(rootfs, "type", json_string("layers"));
	json_t *diff_ids = member_of_type(rootfs, "diff_ids", JSON_ARRAY);
	if (o->container_id)
		json_array_append_new(diff_ids, json_string(layers[n - 1].diff_id));
	json_t *h = json_pack("{s:s}", "created", created);
	if (o->created_by)
		json_object_set_new(h, "created_by", json_string(o->created_by));
	if (o->comment)
		json_object_set_new(h, "comment", json_string(o->comment));
	if (o->author)
		json_object_set_new(h, "author", json_string(o->author));
	if (!o->container_id)
		json_object_set_new(h, "empty_layer", json_true());
	json_array_append_new(member_of_type(config, "history", JSON_ARRAY), h);

	config_text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
	char config_digest[72], manifest_digest[72];
	store_sha256_digest(config_text, strlen(config_text), config_digest);
	json_t *ml = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(ml, json_pack("{s:s, s:s, s:I}", "mediaType",
						    layers[i].media_type, "digest",
						    layers[i].digest, "size",
						    (json_int_t)layers[i].size));
	json_t *m = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2,
			      "mediaType", MT_OCI_MANIFEST, "config", "mediaType", MT_OCI_CONFIG,
			      "digest", config_digest, "size", (json_int_t)strlen(config_text),
			      "layers", ml);
	manifest_text = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	store_sha256_digest(manifest_text, strlen(manifest_text), manifest_digest);
	if (store_blob_put(s, config_digest, config_text, strlen(config_text), err) < 0 ||
	    store_blob_put(s, manifest_digest, manifest_text, strlen(manifest_text), err) < 0 ||
	    store_image_record(s, tag, NULL, manifest_digest, config_digest, layers, n, NULL,
			       err) < 0)
		goto out;
	*ret_image_id = ad_strdup(config_digest);
	r = 0;
out:
	pthread_rwlock_unlock(&s->gc_lock);
	store_layer_recs_free(layers, n);
	json_decref(config);
	json_decref(new_config);
	free(config_text);
	free(manifest_text);
	return r < 0 ? ad_error_wrap(err, "commit") : 0;
}

int fetch_unpack_archive(store *s, int fd, const char *dest_dir, ad_error **err)
{
	if (dest_dir[0] != '/')
		return ad_fail(err, AD_E_INVALID, "unpack: %s is not an absolute path", dest_dir);
	store_unpack_opts uo = {.max_unpacked_bytes = s->max_unpacked_bytes};
	store_unpack_result res = {0};
	if (store_unpack_layer(dest_dir, store_fd_read, &fd, &uo, &res, err) < 0)
		return ad_error_wrap(err, "unpack archive");
	return 0;
}
