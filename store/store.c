/* The store object: directory layout, crash recovery on open, GC, fs usage. */
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <sys/file.h>

#include <sqlite3.h>


static int open_subdir(int dirfd, const char *root, const char *name, int *ret_fd, ad_error **err)
{
	if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
		return ad_fail_errno(err, AD_E_INTERNAL, "store %s: mkdir %s", root, name);
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "store %s: open %s", root, name);
	*ret_fd = fd;
	return 0;
}

int store_lock(store *s, bool exclusive, bool nonblocking)
{
	int fd = openat(s->root_fd, "store.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	int op = (exclusive ? LOCK_EX : LOCK_SH) | (nonblocking ? LOCK_NB : 0);
	while (flock(fd, op) < 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

/* Everything in tmp/ belongs to a pull that died: no record points into it.
 * Unless an agentd-fetch is running (it holds store.lock shared while its
 * temp files and ingest locks are in tmp/): then its own cleanup, or the
 * next store_open, does it. */
void store_clean_tmp(store *s)
{
	_cleanup_close_ int lock = store_lock(s, true, true);
	if (lock < 0)
		return;
	/* Not a dup() of tmp_fd: that would share the read position with the
	 * store's long-lived fd, and the next pass would see nothing. */
	_cleanup_closedir_ DIR *d = ad_opendir_at(s->tmp_fd, ".", 0);
	struct dirent *e;
	while (d && (e = ad_readdir(d))) {
		if (unlinkat(s->tmp_fd, e->d_name, 0) < 0 && (errno == EISDIR || errno == EPERM)) {
			_cleanup_free_ char *p = ad_asprintf("%s/tmp/%s", s->root, e->d_name);
			_cleanup_error_ ad_error *err = NULL;
			ad_remove_tree(p, &err);
		}
	}
}

/* certs_dir, auth_file and the registry list: set at open, replaced by
 * store_set_registry_settings. */
static void registry_settings_copy(store *s, const store_opts *opts)
{
	s->certs_dir = opts->certs_dir ? ad_strdup(opts->certs_dir) : NULL;
	s->auth_file = opts->auth_file ? ad_strdup(opts->auth_file) : NULL;
	if (!opts->n_registries)
		return;
	s->registries = ad_malloc0(sizeof(*s->registries) * opts->n_registries);
	s->n_registries = opts->n_registries;
	for (size_t i = 0; i < opts->n_registries; i++) {
		const store_registry_config *c = &opts->registries[i];
		store_registry_config *d = &s->registries[i];
		*d = *c;
		d->host = ad_strdup(c->host ? c->host : "");
		d->mirrors = NULL;
		if (c->mirrors) {
			size_t n = 0;
			while (c->mirrors[n])
				n++;
			d->mirrors = ad_malloc0(sizeof(char *) * (n + 1));
			for (size_t j = 0; j < n; j++)
				d->mirrors[j] = ad_strdup(c->mirrors[j]);
		}
	}
}

static void registry_settings_free(store *s)
{
	for (size_t i = 0; i < s->n_registries; i++) {
		free((char *)s->registries[i].host);
		if (s->registries[i].mirrors) {
			for (const char **m = s->registries[i].mirrors; *m; m++)
				free((char *)*m);
			free(s->registries[i].mirrors);
		}
	}
	free(s->registries);
	free(s->certs_dir);
	free(s->auth_file);
	s->registries = NULL;
	s->n_registries = 0;
	s->certs_dir = s->auth_file = NULL;
}

void store_set_registry_settings(store *s, const store_opts *opts)
{
	pthread_mutex_lock(&s->settings_lock);
	registry_settings_free(s);
	registry_settings_copy(s, opts);
	pthread_mutex_unlock(&s->settings_lock);
}

void store_close(store *s)
{
	if (!s)
		return;
	ad_db_close(s->db);
	int fds[] = {s->root_fd,	   s->blobs_fd, s->layers_fd, s->tmp_fd,
		     s->containers_fd, s->lock_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	registry_settings_free(s);
	pthread_mutex_destroy(&s->settings_lock);
	pthread_mutex_destroy(&s->db_lock);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->progress_lock);
	pthread_cond_destroy(&s->cond);
	pthread_rwlock_destroy(&s->gc_lock);
	free(s->fetch_helper);
	free(s->db_path);
	free(s->root);
	free(s);
}

/* agentd-fetch beside agentd when installed side by side, or in ../store/ of
 * a build tree, where agentd is agent/agentd. */
static const char *const fetch_near_self[] = {"agentd-fetch", "../store/agentd-fetch", NULL};


/* The store's tables in the state DB (lib/db runs the migrations). An
 * image's id is its config digest. */
static const char *const store_migrations[] = {
	/* kind 0: a tag (name:tag), 1: a repo digest (name@sha256:..) */
	"CREATE TABLE images (id TEXT PRIMARY KEY, manifest_digest TEXT NOT NULL,"
	" size INTEGER NOT NULL, created_ns INTEGER NOT NULL);"
	"CREATE TABLE image_names (name TEXT PRIMARY KEY, kind INTEGER NOT NULL,"
	" image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE);"
	"CREATE INDEX image_names_image ON image_names(image_id);"
	"CREATE TABLE image_layers (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
	" idx INTEGER NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,"
	" diff_id TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (image_id, idx));"
	"CREATE INDEX image_layers_digest ON image_layers(digest);"
	"CREATE INDEX image_layers_diff_id ON image_layers(diff_id);"
	/* Other blobs an image keeps: manifest, config, the index it came from. */
	"CREATE TABLE image_blobs (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
	" digest TEXT NOT NULL, PRIMARY KEY (image_id, digest));"
	"CREATE INDEX image_blobs_digest ON image_blobs(digest);"
	/* A container (holder) using an image: no cascade, a pinned image stays. */
	"CREATE TABLE image_pins (holder TEXT PRIMARY KEY,"
	" image_id TEXT NOT NULL REFERENCES images(id));",
};

static const ad_db_schema store_schema = {
    .owner = "images",
    .migrations = store_migrations,
    .n_migrations = sizeof(store_migrations) / sizeof(store_migrations[0]),
    .legacy_user_version = 2,
};

int store_open(const store_opts *opts, store **ret_store, ad_error **err)
{
	if (!opts || !opts->root || !opts->db_path)
		return ad_fail(err, AD_E_INVALID, "store: root and db_path are required");
	store *s = ad_malloc0(sizeof(*s));
	s->root_fd = s->blobs_fd = s->layers_fd = s->tmp_fd = s->containers_fd = -1;
	s->lock_fd = -1;
	pthread_mutex_init(&s->db_lock, NULL);
	pthread_mutex_init(&s->settings_lock, NULL);
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->progress_lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_rwlock_init(&s->gc_lock, NULL);
	s->root = ad_strdup(opts->root);
	s->db_path = ad_strdup(opts->db_path);
	s->fetch_helper = opts->fetch_helper ? ad_strdup(opts->fetch_helper)
					     : ad_find_helper("agentd-fetch", fetch_near_self);
	registry_settings_copy(s, opts);
	s->max_parallel = opts->max_parallel ? opts->max_parallel : 3;
	s->stall_timeout_s = opts->stall_timeout_s ? opts->stall_timeout_s : 30;
	s->retries = opts->retries ? opts->retries : 3;
	s->backoff_ms = opts->backoff_ms ? opts->backoff_ms : 200;
	s->allow_devices = opts->allow_devices;
	s->max_unpacked_bytes = opts->max_unpacked_bytes;
	int blobs_parent = -1;
	if (ad_mkdir_p(s->root, 0700, err) < 0)
		goto fail;
	/* Absolute, so the overlay options and returned paths do not depend on cwd. */
	char *abs = realpath(s->root, NULL);
	if (abs) {
		free(s->root);
		s->root = abs;
	}
	s->root_fd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "store %s: open", s->root);
		goto fail;
	}
	if (open_subdir(s->root_fd, s->root, "blobs", &blobs_parent, err) < 0)
		goto fail;
	int r = open_subdir(blobs_parent, s->root, "sha256", &s->blobs_fd, err);
	close(blobs_parent);
	if (r < 0 || open_subdir(s->root_fd, s->root, "layers", &s->layers_fd, err) < 0 ||
	    open_subdir(s->root_fd, s->root, "tmp", &s->tmp_fd, err) < 0 ||
	    open_subdir(s->root_fd, s->root, "containers", &s->containers_fd, err) < 0)
		goto fail;
	store_clean_tmp(s);
	if (ad_db_open(opts->db_path, &store_schema, &s->db, err) < 0)
		goto fail;
	*ret_store = s;
	return 0;
fail:
	store_close(s);
	return -1;
}

void store_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* Sum of file sizes (by blocks, as du does) and inodes below dirfd/name. */
static void du_at(int at_fd, const char *name, uint64_t *bytes, uint64_t *inodes)
{
	struct stat st;
	if (fstatat(at_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	*bytes += (uint64_t)st.st_blocks * 512;
	*inodes += 1;
	if (!S_ISDIR(st.st_mode))
		return;
	_cleanup_closedir_ DIR *d = ad_opendir_at(at_fd, name, O_NOFOLLOW);
	struct dirent *e;
	while (d && (e = ad_readdir(d)))
		du_at(dirfd(d), e->d_name, bytes, inodes);
}

int store_fs_usage_get(store *s, store_fs_usage *ret_usage, ad_error **err)
{
	struct statvfs vfs;
	if (fstatvfs(s->root_fd, &vfs) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "store %s: statvfs", s->root);
	memset(ret_usage, 0, sizeof(*ret_usage));
	du_at(s->root_fd, "blobs", &ret_usage->used_bytes, &ret_usage->inodes_used);
	du_at(s->root_fd, "layers", &ret_usage->used_bytes, &ret_usage->inodes_used);
	ret_usage->mountpoint = ad_strdup(s->root);
	ret_usage->fs_free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	ret_usage->fs_total_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	return 0;
}

int store_rootfs_usage(store *s, const char *container_id, uint64_t *ret_bytes,
		       uint64_t *ret_inodes, ad_error **err)
{
	*ret_bytes = *ret_inodes = 0;
	if (!container_id || !*container_id || strchr(container_id, '/') ||
	    container_id[0] == '.')
		return ad_fail(err, AD_E_INVALID, "bad container id '%s'",
			       container_id ? container_id : "");
	_cleanup_close_ int fd =
	    openat(s->containers_fd, container_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INTERNAL,
				     "container %s: rootfs", container_id);
	du_at(fd, "upper", ret_bytes, ret_inodes);
	return 0;
}

void store_fs_usage_clear(store_fs_usage *u)
{
	free(u->mountpoint);
	memset(u, 0, sizeof(*u));
}

/* Is `name` (a hex digest) referenced by a row of the query? */
static bool referenced(store *s, const char *sql, const char *value)
{
	sqlite3_stmt *st = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (ad_db_prepare(s->db, sql, &st, &e) < 0)
		return true; /* when unsure, keep */
	sqlite3_bind_text(st, 1, value, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc != SQLITE_DONE;
}

static void sweep(store *s, int dirfd, const char *sub, const char *sql, bool is_dir,
		  uint64_t *freed)
{
	_cleanup_closedir_ DIR *d = ad_opendir_at(dirfd, ".", 0);
	struct dirent *e;
	while (d && (e = ad_readdir(d))) {
		_cleanup_free_ char *digest = ad_asprintf("sha256:%s", e->d_name);
		if (store_digest_valid(digest) && referenced(s, sql, digest))
			continue;
		uint64_t bytes = 0, inodes = 0;
		du_at(dirfd, e->d_name, &bytes, &inodes);
		if (is_dir) {
			_cleanup_free_ char *p = ad_asprintf("%s/%s/%s", s->root, sub, e->d_name);
			_cleanup_error_ ad_error *err = NULL;
			if (ad_remove_tree(p, &err) < 0)
				continue;
		} else if (unlinkat(dirfd, e->d_name, 0) < 0) {
			continue;
		}
		*freed += bytes;
	}
}

/* Caller holds gc_lock exclusively and db_lock. */
static void gc_locked(store *s, uint64_t *freed)
{
	sweep(s, s->blobs_fd, "blobs/sha256",
	      "SELECT 1 FROM image_blobs WHERE digest = ?1 UNION ALL "
	      "SELECT 1 FROM image_layers WHERE digest = ?1 LIMIT 1",
	      false, freed);
	sweep(s, s->layers_fd, "layers", "SELECT 1 FROM image_layers WHERE diff_id = ?1 LIMIT 1",
	      true, freed);
}

int store_gc(store *s, uint64_t *ret_freed_bytes, ad_error **err)
{
	(void)err;
	uint64_t freed = 0;
	pthread_rwlock_wrlock(&s->gc_lock);
	/* Waits for running pulls, loads and imports in agentd-fetch processes. */
	int lock = store_lock(s, true, false);
	pthread_mutex_lock(&s->db_lock);
	gc_locked(s, &freed);
	pthread_mutex_unlock(&s->db_lock);
	if (lock >= 0)
		close(lock);
	pthread_rwlock_unlock(&s->gc_lock);
	if (ret_freed_bytes)
		*ret_freed_bytes = freed;
	return 0;
}

/* After a removal: free what became unreferenced, unless a pull is running
 * (its content is not recorded yet); the next store_gc() does it then. */
void store_gc_try(store *s)
{
	uint64_t freed = 0;
	if (pthread_rwlock_trywrlock(&s->gc_lock) != 0)
		return;
	int lock = store_lock(s, true, true);
	if (lock >= 0) {
		pthread_mutex_lock(&s->db_lock);
		gc_locked(s, &freed);
		pthread_mutex_unlock(&s->db_lock);
		close(lock);
	}
	pthread_rwlock_unlock(&s->gc_lock);
}
