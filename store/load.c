/* Images from and to files: load of a docker-archive (docker save) or an
 * oci-archive, save in the layout docker 25+ writes (an OCI layout plus
 * docker's manifest.json and legacy repositories, which both loaders read), and import of a rootfs
 * tar as a one-layer image. */
#include "store_int.h"
#include "unpack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <openssl/evp.h>

#define MAX_ENTRIES 100000
#define MAX_JSON (16u << 20)
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define REF_NAME "org.opencontainers.image.ref.name"

/* ---- helpers ---- */

static int sha256_fd(int fd, char out[72], uint64_t *ret_size, ad_error **err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	char buf[65536];
	uint64_t total = 0;
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			EVP_MD_CTX_free(md);
			return ad_fail_errno(err, AD_E_INTERNAL, "read");
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(md, buf, (size_t)n);
		off += n;
		total += (uint64_t)n;
	}
	unsigned char r[32];
	unsigned int len = 0;
	EVP_DigestFinal_ex(md, r, &len);
	EVP_MD_CTX_free(md);
	store_digest_format(r, out);
	*ret_size = total;
	return 0;
}

static int read_in_root(int dir_fd, const char *name, char **ret, size_t *ret_len, ad_error **err)
{
	_cleanup_close_ int fd = ad_openat_in_root(dir_fd, name, O_RDONLY, 0, err);
	if (fd < 0)
		return ad_error_wrap(err, "archive member %s", name);
	size_t cap = 4096, len = 0;
	char *buf = ad_malloc0(cap + 1);
	for (;;) {
		if (len == cap) {
			if (cap > MAX_JSON) {
				free(buf);
				return ad_fail(err, AD_E_RESOURCE,
					       "archive member %s is over %u bytes", name,
					       MAX_JSON);
			}
			cap *= 2;
			buf = ad_realloc(buf, cap + 1);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return ad_fail_errno(err, AD_E_INTERNAL, "read %s", name);
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* The layer media type from the stream's magic bytes. */
static const char *layer_media_type(int fd)
{
	unsigned char m[4] = {0};
	if (pread(fd, m, sizeof(m), 0) >= 2 && m[0] == 0x1f && m[1] == 0x8b)
		return "application/vnd.oci.image.layer.v1.tar+gzip";
	if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
		return "application/vnd.oci.image.layer.v1.tar+zstd";
	return "application/vnd.oci.image.layer.v1.tar";
}

static int ingest_fd(store *s, int fd, const char *digest, ad_error **err)
{
	if (store_blob_exists(s, digest))
		return 0;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "seek");
	return store_blob_ingest(s, digest, -1, store_fd_read, &fd, err);
}

static int ingest_mem(store *s, const char *data, size_t len, char digest[72], ad_error **err)
{
	store_sha256_digest(data, len, digest);
	return store_blob_put(s, digest, data, len, err);
}

/* ---- extraction of the archive into tmp/ ---- */

/* Opens (creating with mkdir if asked) each directory of `path` inside root. */
static int open_parent(int root_fd, const char *path, bool create, const char **ret_base,
		       ad_error **err)
{
	const char *slash = strrchr(path, '/');
	*ret_base = slash ? slash + 1 : path;
	if (!slash)
		return fcntl(root_fd, F_DUPFD_CLOEXEC, 3);
	_cleanup_free_ char *dir = ad_strndup(path, (size_t)(slash - path));
	int fd = ad_openat_in_root(root_fd, dir, O_RDONLY | O_DIRECTORY, 0, err);
	if (fd >= 0 || !create)
		return fd;
	ad_error_free(err);
	const char *base;
	_cleanup_close_ int pfd = open_parent(root_fd, dir, true, &base, err);
	if (pfd < 0)
		return -1;
	if (mkdirat(pfd, base, 0755) < 0 && errno != EEXIST)
		return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", dir);
	return ad_openat_in_root(root_fd, dir, O_RDONLY | O_DIRECTORY, 0, err);
}

static int extract(int in_fd, int dir_fd, ad_error **err)
{
	struct archive *a = archive_read_new();
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	int r = 0;
	if (archive_read_open_fd(a, in_fd, 65536) != ARCHIVE_OK) {
		r = ad_fail(err, AD_E_INVALID, "not a tar archive: %s", archive_error_string(a));
		goto out;
	}
	struct archive_entry *e;
	uint64_t n = 0;
	int rc;
	while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		if (++n > MAX_ENTRIES) {
			r = ad_fail(err, AD_E_RESOURCE, "archive has more than %d entries",
				    MAX_ENTRIES);
			goto out;
		}
		const char *name = archive_entry_pathname(e);
		while (name && name[0] == '.' && name[1] == '/')
			name += 2;
		if (!name || !*name || strcmp(name, ".") == 0)
			continue;
		_cleanup_free_ char *clean = ad_strdup(name);
		size_t cl = strlen(clean);
		while (cl > 0 && clean[cl - 1] == '/')
			clean[--cl] = '\0';
		if (clean[0] == '/' || strcmp(clean, "..") == 0 || strncmp(clean, "../", 3) == 0 ||
		    strstr(clean, "/../") || (cl >= 3 && strcmp(clean + cl - 3, "/..") == 0)) {
			r = ad_fail(err, AD_E_INVALID, "archive member \"%s\" leaves the archive",
				    name);
			goto out;
		}
		mode_t type = archive_entry_filetype(e);
		const char *base;
		_cleanup_close_ int pfd = open_parent(dir_fd, clean, true, &base, err);
		if (pfd < 0) {
			r = -1;
			goto out;
		}
		if (type == AE_IFDIR) {
			if (mkdirat(pfd, base, 0755) < 0 && errno != EEXIST) {
				r = ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", clean);
				goto out;
			}
		} else if (type == AE_IFLNK) {
			/* docker save links repeated layers; resolved inside the root later. */
			const char *target = archive_entry_symlink(e);
			if (target && symlinkat(target, pfd, base) < 0 && errno != EEXIST) {
				r = ad_fail_errno(err, AD_E_INTERNAL, "symlink %s", clean);
				goto out;
			}
		} else if (type == AE_IFREG) {
			_cleanup_close_ int fd = openat(
			    pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
			if (fd < 0) {
				r = ad_fail_errno(err, AD_E_INVALID, "archive member %s", clean);
				goto out;
			}
			const void *buf;
			size_t size;
			la_int64_t off;
			int dr;
			while ((dr = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
				if (store_pwrite_all(fd, buf, size, off) < 0) {
					r = ad_fail_errno(err, AD_E_INTERNAL, "write %s", clean);
					goto out;
				}
			}
			if (dr != ARCHIVE_EOF) {
				r = ad_fail(err, AD_E_INVALID, "archive member %s: %s", clean,
					    archive_error_string(a));
				goto out;
			}
		}
	}
	if (rc != ARCHIVE_EOF)
		r = ad_fail(err, AD_E_INVALID, "archive: %s", archive_error_string(a));
out:
	archive_read_free(a);
	return r;
}

/* ---- one image from local files ---- */

typedef struct load_layer {
	const char *path;	/* in the extracted archive */
	const char *digest;	/* NULL: computed */
	const char *media_type; /* NULL: from the magic bytes */
} load_layer;

static char *synth_manifest(const char *config_digest, size_t config_len,
			    const store_layer_rec *recs, size_t n)
{
	json_t *layers = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(
		    layers, json_pack("{s:s, s:s, s:I}", "mediaType", recs[i].media_type, "digest",
				      recs[i].digest, "size", (json_int_t)recs[i].size));
	json_t *m = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
			      MT_OCI_MANIFEST, "config", "mediaType", MT_OCI_CONFIG, "digest",
			      config_digest, "size", (json_int_t)config_len, "layers", layers);
	char *out = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	return out;
}

static int load_image(store *s, int dir_fd, const char *config, size_t config_len,
		      const load_layer *layers, size_t n, const char *manifest, size_t manifest_len,
		      char **tags, char **ret_id, ad_error **err)
{
	char config_digest[72], manifest_digest[72];
	json_t *cfg = json_loadb(config, config_len, 0, NULL);
	json_t *diff_ids = json_object_get(json_object_get(cfg, "rootfs"), "diff_ids");
	store_layer_rec *recs = ad_malloc0(sizeof(*recs) * (n ? n : 1));
	char *synth = NULL;
	int r = -1;
	if (!json_is_object(cfg) || (n && !json_is_array(diff_ids)) ||
	    json_array_size(diff_ids) != n) {
		ad_fail(err, AD_E_INVALID,
			"image config is not JSON or its rootfs.diff_ids do not match %zu layers",
			n);
		goto out;
	}
	if (ingest_mem(s, config, config_len, config_digest, err) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *diff = json_string_value(json_array_get(diff_ids, i));
		if (!store_digest_valid(diff)) {
			ad_fail(err, AD_E_INVALID, "image config: invalid diff_id %zu", i);
			goto out;
		}
		_cleanup_close_ int fd =
		    ad_openat_in_root(dir_fd, layers[i].path, O_RDONLY, 0, err);
		if (fd < 0) {
			ad_error_wrap(err, "layer %s", layers[i].path);
			goto out;
		}
		char digest[72];
		uint64_t size = 0;
		if (sha256_fd(fd, digest, &size, err) < 0)
			goto out;
		if (layers[i].digest && strcmp(digest, layers[i].digest) != 0) {
			ad_fail(err, AD_E_DATA_LOSS,
				"layer %s: digest mismatch: expected %s, got %s", layers[i].path,
				layers[i].digest, digest);
			goto out;
		}
		recs[i].digest = ad_strdup(digest);
		recs[i].diff_id = ad_strdup(diff);
		recs[i].media_type =
		    ad_strdup(layers[i].media_type ? layers[i].media_type : layer_media_type(fd));
		recs[i].size = size;
		if (ingest_fd(s, fd, digest, err) < 0)
			goto out;
		store_inflight_claim(s, diff);
		struct stat st;
		int ur = 0;
		if (fstatat(s->layers_fd, diff + 7, &st, AT_SYMLINK_NOFOLLOW) < 0)
			ur = store_layer_unpack_blob(s, digest, diff, NULL, err);
		store_inflight_release(s, diff);
		if (ur < 0) {
			ad_error_wrap(err, "layer %s", layers[i].path);
			goto out;
		}
	}
	if (!manifest) {
		synth = synth_manifest(config_digest, config_len, recs, n);
		manifest = synth;
		manifest_len = strlen(synth);
	}
	if (ingest_mem(s, manifest, manifest_len, manifest_digest, err) < 0)
		goto out;
	r = store_image_record(s, tags && tags[0] ? tags[0] : NULL, NULL, manifest_digest,
			       config_digest, recs, n, NULL, err);
	for (size_t t = 1; r == 0 && tags && tags[t]; t++)
		r = store_image_record(s, tags[t], NULL, manifest_digest, config_digest, recs, n,
				       NULL, err);
	if (r == 0 && ret_id)
		*ret_id = ad_strdup(config_digest);
out:
	for (size_t i = 0; i < n; i++) {
		free(recs[i].digest);
		free(recs[i].diff_id);
		free(recs[i].media_type);
	}
	free(recs);
	free(synth);
	json_decref(cfg);
	return r;
}

static char **strv_add(char **v, size_t *n, char *owned)
{
	v = ad_realloc(v, sizeof(char *) * (*n + 2));
	v[(*n)++] = owned;
	v[*n] = NULL;
	return v;
}

/* A tag from an archive, normalised; NULL when it names no repository. */
static char *normalise_tag(const char *name)
{
	store_ref ref = {0};
	ad_error *e = NULL;
	if (!name || (!strchr(name, ':') && !strchr(name, '/')) ||
	    store_ref_parse(name, &ref, &e) < 0 || !ref.tag) {
		ad_error_free(&e);
		store_ref_clear(&ref);
		return NULL;
	}
	char *name_tag = ad_asprintf("%s/%s:%s", ref.domain, ref.path, ref.tag);
	store_ref_clear(&ref);
	return name_tag;
}

static int load_docker(store *s, int dir_fd, json_t *manifest, char ***ids, size_t *nids,
		       ad_error **err)
{
	size_t i;
	json_t *entry;
	json_array_foreach(manifest, i, entry)
	{
		const char *config_path = json_string_value(json_object_get(entry, "Config"));
		json_t *jl = json_object_get(entry, "Layers");
		if (!config_path || !json_is_array(jl))
			return ad_fail(err, AD_E_INVALID,
				       "manifest.json entry %zu lacks Config or "
				       "Layers",
				       i);
		_cleanup_free_ char *config = NULL;
		size_t config_len = 0;
		if (read_in_root(dir_fd, config_path, &config, &config_len, err) < 0)
			return -1;
		size_t n = json_array_size(jl);
		load_layer *layers = ad_malloc0(sizeof(*layers) * (n ? n : 1));
		for (size_t k = 0; k < n; k++)
			layers[k].path = json_string_value(json_array_get(jl, k));
		char **tags = NULL;
		size_t nt = 0;
		size_t t;
		json_t *jt;
		json_array_foreach(json_object_get(entry, "RepoTags"), t, jt)
		{
			char *tag = normalise_tag(json_string_value(jt));
			if (tag)
				tags = strv_add(tags, &nt, tag);
		}
		bool ok = true;
		for (size_t k = 0; k < n; k++)
			ok = ok && layers[k].path;
		char *id = NULL;
		int r =
		    ok ? load_image(s, dir_fd, config, config_len, layers, n, NULL, 0, tags, &id,
				    err)
		       : ad_fail(err, AD_E_INVALID, "manifest.json: a layer path is not a string");
		free(layers);
		store_strv_free(tags);
		if (r < 0)
			return -1;
		*ids = strv_add(*ids, nids, id);
	}
	return 0;
}

static int read_blob_in(int dir_fd, const char *digest, char **ret, size_t *ret_len, ad_error **err)
{
	if (!store_digest_valid(digest))
		return ad_fail(err, AD_E_INVALID, "invalid digest \"%s\" in the archive",
			       digest ? digest : "");
	_cleanup_free_ char *path = ad_asprintf("blobs/sha256/%s", digest + 7);
	if (read_in_root(dir_fd, path, ret, ret_len, err) < 0)
		return -1;
	char got[72];
	store_sha256_digest(*ret, *ret_len, got);
	if (strcmp(got, digest) != 0) {
		free(*ret);
		*ret = NULL;
		return ad_fail(err, AD_E_DATA_LOSS, "blob digest mismatch: expected %s, got %s",
			       digest, got);
	}
	return 0;
}

static int load_oci_manifest(store *s, int dir_fd, const char *digest, const char *tag_name,
			     char ***ids, size_t *nids, int depth, ad_error **err)
{
	_cleanup_free_ char *body = NULL, *config = NULL;
	size_t len = 0, config_len = 0;
	if (read_blob_in(dir_fd, digest, &body, &len, err) < 0)
		return -1;
	json_t *m = json_loadb(body, len, 0, NULL);
	int r = -1;
	if (!json_is_object(m)) {
		ad_fail(err, AD_E_INVALID, "manifest %s is not JSON", digest);
		goto out;
	}
	json_t *sub = json_object_get(m, "manifests");
	if (json_is_array(sub)) {
		if (depth > 2) {
			ad_fail(err, AD_E_INVALID, "indexes nested too deep");
			goto out;
		}
		const char *os, *arch, *variant;
		store_host_platform(&os, &arch, &variant);
		json_t *d = store_choose_platform(sub, os, arch, variant);
		if (!d)
			d = json_array_size(sub) == 1 ? json_array_get(sub, 0) : NULL;
		if (!d) {
			ad_fail(err, AD_E_NOT_FOUND, "index %s has no manifest for %s/%s", digest,
				os, arch);
			goto out;
		}
		r = load_oci_manifest(s, dir_fd, json_string_value(json_object_get(d, "digest")),
				      tag_name, ids, nids, depth + 1, err);
		goto out;
	}
	const char *config_digest =
	    json_string_value(json_object_get(json_object_get(m, "config"), "digest"));
	if (read_blob_in(dir_fd, config_digest, &config, &config_len, err) < 0)
		goto out;
	json_t *jl = json_object_get(m, "layers");
	size_t n = json_array_size(jl);
	load_layer *layers = ad_malloc0(sizeof(*layers) * (n ? n : 1));
	char **paths = ad_malloc0(sizeof(char *) * (n + 1));
	bool ok = true;
	for (size_t k = 0; k < n; k++) {
		json_t *d = json_array_get(jl, k);
		const char *dg = json_string_value(json_object_get(d, "digest"));
		if (!store_digest_valid(dg)) {
			ok = false;
			break;
		}
		paths[k] = ad_asprintf("blobs/sha256/%s", dg + 7);
		layers[k].path = paths[k];
		layers[k].digest = dg;
		layers[k].media_type = json_string_value(json_object_get(d, "mediaType"));
	}
	char **tags = NULL;
	size_t nt = 0;
	char *tag = normalise_tag(tag_name);
	if (tag)
		tags = strv_add(tags, &nt, tag);
	char *id = NULL;
	r = ok ? load_image(s, dir_fd, config, config_len, layers, n, body, len, tags, &id, err)
	       : ad_fail(err, AD_E_INVALID, "manifest %s: invalid layer digest", digest);
	if (r == 0)
		*ids = strv_add(*ids, nids, id);
	store_strv_free(tags);
	store_strv_free(paths);
	free(layers);
out:
	json_decref(m);
	return r;
}

static int load_oci(store *s, int dir_fd, json_t *index, char ***ids, size_t *nids, ad_error **err)
{
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(index, "manifests"), i, d)
	{
		json_t *ann = json_object_get(d, "annotations");
		const char *name =
		    json_string_value(json_object_get(ann, "io.containerd.image.name"));
		if (!name)
			name = json_string_value(json_object_get(ann, REF_NAME));
		if (load_oci_manifest(s, dir_fd, json_string_value(json_object_get(d, "digest")),
				      name, ids, nids, 0, err) < 0)
			return -1;
	}
	return 0;
}

static int make_tmpdir(store *s, const char *prefix, char **ret_path, int *ret_fd, ad_error **err)
{
	static unsigned counter;
	_cleanup_free_ char *name = ad_asprintf("%s-%d-%u", prefix, (int)getpid(),
						__atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
	if (mkdirat(s->tmp_fd, name, 0700) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "mkdir tmp/%s", name);
	*ret_fd = openat(s->tmp_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*ret_path = ad_asprintf("%s/tmp/%s", s->root, name);
	if (*ret_fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open tmp/%s", name);
	return 0;
}

int fetch_image_load(store *s, int fd, char ***ret_image_ids, ad_error **err)
{
	_cleanup_free_ char *tmppath = NULL, *data = NULL;
	_cleanup_close_ int dir_fd = -1;
	char **ids = NULL;
	size_t nids = 0;
	int r = -1;
	pthread_rwlock_rdlock(&s->gc_lock);
	if (make_tmpdir(s, "load", &tmppath, &dir_fd, err) < 0 || extract(fd, dir_fd, err) < 0)
		goto out;
	size_t len = 0;
	ad_error *e = NULL;
	if (read_in_root(dir_fd, "manifest.json", &data, &len, &e) == 0) {
		json_t *m = json_loadb(data, len, 0, NULL);
		r = json_is_array(m) ? load_docker(s, dir_fd, m, &ids, &nids, err)
				     : ad_fail(err, AD_E_INVALID, "manifest.json is not a list");
		json_decref(m);
	} else if (ad_error_free(&e), read_in_root(dir_fd, "index.json", &data, &len, &e) == 0) {
		json_t *m = json_loadb(data, len, 0, NULL);
		r = json_is_object(m) ? load_oci(s, dir_fd, m, &ids, &nids, err)
				      : ad_fail(err, AD_E_INVALID, "index.json is not an object");
		json_decref(m);
	} else {
		ad_error_free(&e);
		ad_fail(err, AD_E_INVALID,
			"neither a docker-archive (manifest.json) nor an oci-archive (index.json)");
	}
out:
	pthread_rwlock_unlock(&s->gc_lock);
	if (tmppath) {
		_cleanup_error_ ad_error *re = NULL;
		ad_remove_tree(tmppath, &re);
	}
	if (r < 0) {
		store_strv_free(ids);
		return ad_error_wrap(err, "load image");
	}
	if (!ids)
		ids = ad_malloc0(sizeof(char *));
	*ret_image_ids = ids;
	return 0;
}

int fetch_image_import(store *s, int fd, const char *reference, char **ret_image_id, ad_error **err)
{
	_cleanup_free_ char *tag = NULL, *config = NULL, *path = NULL;
	if (reference) {
		store_ref ref = {0};
		if (store_ref_parse(reference, &ref, err) < 0)
			return -1;
		if (!ref.tag) {
			store_ref_clear(&ref);
			return ad_fail(err, AD_E_INVALID, "import needs a tag, not a digest: %s",
				       reference);
		}
		tag = ad_asprintf("%s/%s:%s", ref.domain, ref.path, ref.tag);
		store_ref_clear(&ref);
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return ad_fail(err, AD_E_INVALID, "import needs a regular file");
	pthread_rwlock_rdlock(&s->gc_lock);
	int r = -1;
	char digest[72], diff_id[72];
	uint64_t size = 0;
	bool empty = st.st_size == 0;
	/* A tar that is only a terminator (1024 zero bytes) is as empty as none. */
	if (!empty && st.st_size <= 10240) {
		char buf[10240];
		ssize_t n = pread(fd, buf, sizeof(buf), 0);
		empty = n == st.st_size;
		for (ssize_t i = 0; empty && i < n; i++)
			empty = buf[i] == 0;
	}
	const char *os, *arch, *variant;
	store_host_platform(&os, &arch, &variant);
	char created[40];
	ad_format_rfc3339nano(ad_now_ns(), created);
	json_t *diffs = json_array();
	load_layer layer = {0};
	if (!empty) {
		/* The file goes in as is: its own digest names the blob. */
		if (sha256_fd(fd, digest, &size, err) < 0 || ingest_fd(s, fd, digest, err) < 0 ||
		    store_layer_unpack_blob(s, digest, NULL, diff_id, err) < 0) {
			json_decref(diffs);
			goto out;
		}
		json_array_append_new(diffs, json_string(diff_id));
		path = ad_asprintf("%s", digest + 7);
		layer.path = path;
		layer.digest = digest;
	}
	json_t *c = json_pack("{s:s, s:s, s:s, s:{}, s:{s:s, s:o}, s:[{s:s, s:s}]}", "created",
			      created, "architecture", arch, "os", os, "config", "rootfs", "type",
			      "layers", "diff_ids", diffs, "history", "created", created,
			      "created_by", "agentd import");
	config = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	char *tags[] = {tag, NULL};
	r = load_image(s, s->blobs_fd, config, strlen(config), &layer, empty ? 0 : 1, NULL, 0,
		       tag ? tags : NULL, ret_image_id, err);
out:
	pthread_rwlock_unlock(&s->gc_lock);
	return r < 0 ? ad_error_wrap(err, "import image") : 0;
}

/* ---- save ---- */

typedef struct saver {
	store *s;
	struct archive *a;
	char **written; /* blob digests already in the archive */
	size_t n_written;
} saver;

static int write_entry(saver *sv, const char *name, const void *data, size_t len, int blob_fd,
		       ad_error **err)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, data || blob_fd >= 0 ? AE_IFREG : AE_IFDIR);
	archive_entry_set_perm(e, data || blob_fd >= 0 ? 0644 : 0755);
	archive_entry_set_size(e, (la_int64_t)len);
	int r = 0;
	if (archive_write_header(sv->a, e) != ARCHIVE_OK) {
		r = ad_fail(err, AD_E_INTERNAL, "save: %s: %s", name, archive_error_string(sv->a));
		goto out;
	}
	if (data && len && archive_write_data(sv->a, data, len) != (la_ssize_t)len) {
		r = ad_fail(err, AD_E_INTERNAL, "save: %s: %s", name, archive_error_string(sv->a));
		goto out;
	}
	if (blob_fd >= 0) {
		char buf[65536];
		size_t left = len;
		while (left > 0) {
			ssize_t n = read(blob_fd, buf, sizeof(buf) < left ? sizeof(buf) : left);
			if (n <= 0) {
				r = ad_fail_errno(err, AD_E_INTERNAL, "save: read %s", name);
				goto out;
			}
			if (archive_write_data(sv->a, buf, (size_t)n) != n) {
				r = ad_fail(err, AD_E_INTERNAL, "save: %s: %s", name,
					    archive_error_string(sv->a));
				goto out;
			}
			left -= (size_t)n;
		}
	}
out:
	archive_entry_free(e);
	return r;
}

static int write_blob(saver *sv, const char *digest, ad_error **err)
{
	for (size_t i = 0; i < sv->n_written; i++)
		if (strcmp(sv->written[i], digest) == 0)
			return 0;
	_cleanup_close_ int fd = openat(sv->s->blobs_fd, digest + 7, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return ad_fail(err, AD_E_PRECONDITION, "blob %s is not in the store", digest);
	_cleanup_free_ char *name = ad_asprintf("blobs/sha256/%s", digest + 7);
	if (write_entry(sv, name, NULL, (size_t)st.st_size, fd, err) < 0)
		return -1;
	sv->written = strv_add(sv->written, &sv->n_written, ad_strdup(digest));
	return 0;
}

/* docker save's legacy `repositories`: {"name": {"tag": "<top layer id>"}},
 * the id naming the top layer's file under blobs/sha256/. */
static void add_repository(json_t *repositories, const char *name_tag, json_t *top_layer_path)
{
	const char *colon = strrchr(name_tag, ':');
	_cleanup_free_ char *name = ad_strndup(name_tag, (size_t)(colon - name_tag));
	const char *path = json_string_value(top_layer_path);
	const char *slash = path ? strrchr(path, '/') : NULL;
	json_t *tags = json_object_get(repositories, name);
	if (!tags) {
		tags = json_object();
		json_object_set_new(repositories, name, tags);
	}
	json_object_set_new(tags, colon + 1, json_string(slash ? slash + 1 : ""));
}

int fetch_image_save(store *s, const char *const *queries, int fd, ad_error **err)
{
	saver sv = {.s = s, .a = archive_write_new()};
	json_t *index = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
				  "manifests");
	json_t *dmanifest = json_array();
	json_t *repositories = json_object();
	int r = -1;
	archive_write_set_format_pax_restricted(sv.a);
	if (archive_write_open_fd(sv.a, fd) != ARCHIVE_OK) {
		ad_fail(err, AD_E_INTERNAL, "save: %s", archive_error_string(sv.a));
		goto out;
	}
	const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
	if (write_entry(&sv, "oci-layout", layout, strlen(layout), -1, err) < 0 ||
	    write_entry(&sv, "blobs", NULL, 0, -1, err) < 0 ||
	    write_entry(&sv, "blobs/sha256", NULL, 0, -1, err) < 0)
		goto out;
	for (const char *const *q = queries; q && *q; q++) {
		store_image *img = NULL;
		_cleanup_free_ char *mdigest = NULL, *mbody = NULL;
		size_t mlen = 0;
		if (store_image_get(s, *q, &img, err) < 0)
			goto out;
		int ir = store_image_manifest_digest(s, img->id, &mdigest, err);
		if (ir == 0)
			ir = store_blob_read(s, mdigest, MAX_JSON, &mbody, &mlen, err);
		json_t *m = ir == 0 ? json_loadb(mbody, mlen, 0, NULL) : NULL;
		if (ir == 0 && !json_is_object(m))
			ir = ad_fail(err, AD_E_DATA_LOSS, "manifest %s is not JSON", mdigest);
		json_t *layer_paths = json_array();
		size_t i;
		json_t *l;
		if (ir == 0)
			ir = write_blob(&sv, img->id, err);
		if (ir == 0)
			ir = write_blob(&sv, mdigest, err);
		json_array_foreach(json_object_get(m, "layers"), i, l)
		{
			const char *dg = json_string_value(json_object_get(l, "digest"));
			if (ir == 0 && !store_digest_valid(dg))
				ir =
				    ad_fail(err, AD_E_DATA_LOSS, "manifest %s: bad layer", mdigest);
			if (ir == 0)
				ir = write_blob(&sv, dg, err);
			if (ir == 0)
				json_array_append_new(layer_paths,
						      json_sprintf("blobs/sha256/%s", dg + 7));
		}
		const char *mt = json_string_value(json_object_get(m, "mediaType"));
		json_t *tags = json_array();
		size_t n_layers = json_array_size(layer_paths);
		for (char **t = img->tags; ir == 0 && *t; t++) {
			json_array_append_new(tags, json_string(*t));
			const char *colon = strrchr(*t, ':');
			if (colon && n_layers)
				add_repository(repositories, *t, json_array_get(layer_paths, n_layers - 1));
			json_array_append_new(json_object_get(index, "manifests"),
					      json_pack("{s:s, s:s, s:I, s:{s:s, s:s}}",
							"mediaType", mt ? mt : MT_OCI_MANIFEST,
							"digest", mdigest, "size", (json_int_t)mlen,
							"annotations", "io.containerd.image.name",
							*t, REF_NAME, colon ? colon + 1 : *t));
		}
		if (ir == 0 && !img->tags[0])
			json_array_append_new(json_object_get(index, "manifests"),
					      json_pack("{s:s, s:s, s:I}", "mediaType",
							mt ? mt : MT_OCI_MANIFEST, "digest",
							mdigest, "size", (json_int_t)mlen));
		if (ir == 0)
			json_array_append_new(dmanifest,
					      json_pack("{s:s+, s:o, s:o}", "Config",
							"blobs/sha256/", img->id + 7, "RepoTags",
							tags, "Layers", layer_paths));
		else {
			json_decref(tags);
			json_decref(layer_paths);
		}
		json_decref(m);
		store_image_free(img);
		if (ir < 0)
			goto out;
	}
	char *idx = json_dumps(index, JSON_COMPACT);
	char *dm = json_dumps(dmanifest, JSON_COMPACT);
	r = write_entry(&sv, "index.json", idx, strlen(idx), -1, err);
	if (r == 0)
		r = write_entry(&sv, "manifest.json", dm, strlen(dm), -1, err);
	if (r == 0 && json_object_size(repositories)) {
		char *repos = json_dumps(repositories, JSON_COMPACT | JSON_SORT_KEYS);
		r = write_entry(&sv, "repositories", repos, strlen(repos), -1, err);
		free(repos);
	}
	free(idx);
	free(dm);
	if (r == 0 && archive_write_close(sv.a) != ARCHIVE_OK)
		r = ad_fail(err, AD_E_INTERNAL, "save: %s", archive_error_string(sv.a));
out:
	archive_write_free(sv.a);
	json_decref(index);
	json_decref(dmanifest);
	json_decref(repositories);
	store_strv_free(sv.written);
	return r < 0 ? ad_error_wrap(err, "save images") : 0;
}
