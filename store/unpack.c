/* unpack.c — streaming, contained extraction of one OCI image layer.
 *
 * Two libarchive readers are chained in one thread: `raw` runs the
 * decompression filters (gzip, zstd or none) with the "raw" format and yields
 * the uncompressed tar stream, which is hashed (the diff_id) as it passes into
 * `tar`, the tar reader, through a read callback. Nothing buffers more than a
 * read block.
 *
 * Every entry is created with *at() calls relative to an fd of its parent
 * directory, and that parent is opened with RESOLVE_IN_ROOT, so absolute
 * paths, ".." and symlinks in the layer all resolve inside dest_dir. The final
 * component is never followed: an existing entry is replaced instead. */
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define UNPACK_READ_BLOCK (1024 * 1024)
#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_META_PREFIX ".wh..wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

struct dir_time {
	char *path; /* cleaned, relative to the root ("" is the root) */
	struct timespec ts[2];
};

struct unpack_ctx {
	store_read_fn read_fn;
	void *userdata;
	unsigned char *in_buf;
	bool in_eof;
	/* The first failure of read_fn, returned as-is instead of libarchive's
	 * generic "read error". */
	ad_error *read_err;

	struct archive *raw;
	struct archive *tar;
	bool raw_eof;
	bool raw_failed;

	EVP_MD_CTX *md;
	uint64_t usize;

	int root_fd;
	size_t max_path_len;
	size_t max_header_bytes;
	uint64_t max_entries;
	uint64_t max_unpacked_bytes;
	bool allow_devices;

	/* Entries of one directory come in a row: keep its fd. Dropped whenever
	 * an existing entry is removed, since only that can change what a path
	 * resolves to. */
	char *parent_path;
	int parent_fd;

	struct dir_time *dirs;
	size_t n_dirs, cap_dirs;
};

/* ---- the two chained readers -------------------------------------------- */

static la_ssize_t raw_read_cb(struct archive *a, void *data, const void **buffer)
{
	struct unpack_ctx *ctx = data;
	if (ctx->in_eof)
		return 0;
	ad_error *e = NULL;
	ssize_t n = ctx->read_fn(ctx->userdata, ctx->in_buf, UNPACK_READ_BLOCK, &e);
	if (n > UNPACK_READ_BLOCK)
		ad_fail(&e, AD_E_INTERNAL, "layer read returned more than asked");
	if (n < 0 || e) {
		if (!e)
			ad_fail(&e, AD_E_INTERNAL, "layer read failed");
		archive_set_error(a, e->errno_value ? e->errno_value : EIO, "%s", e->message);
		if (!ctx->read_err)
			ctx->read_err = e;
		else
			ad_error_free(&e);
		return -1;
	}
	if (n == 0)
		ctx->in_eof = true;
	*buffer = ctx->in_buf;
	return n;
}

static void hash_bytes(struct unpack_ctx *ctx, const void *p, size_t n)
{
	EVP_DigestUpdate(ctx->md, p, n);
	ctx->usize += n;
}

/* Pulls the next block of the uncompressed stream. Returns its size, 0 at the
 * end, -1 on a failure of the raw reader (ctx->raw_failed set). */
static la_ssize_t pull_uncompressed(struct unpack_ctx *ctx, const void **buffer)
{
	if (ctx->raw_eof || ctx->raw_failed)
		return ctx->raw_failed ? -1 : 0;
	for (;;) {
		size_t size = 0;
		la_int64_t offset = 0;
		int r = archive_read_data_block(ctx->raw, buffer, &size, &offset);
		if (r == ARCHIVE_EOF) {
			ctx->raw_eof = true;
			return 0;
		}
		if (r < ARCHIVE_WARN) {
			ctx->raw_failed = true;
			return -1;
		}
		if (size == 0)
			continue;
		hash_bytes(ctx, *buffer, size);
		if (ctx->usize > ctx->max_unpacked_bytes) {
			if (!ctx->read_err)
				ad_fail(&ctx->read_err, AD_E_RESOURCE,
					"layer unpacks to more than %" PRIu64
					" bytes (the unpack limit)",
					ctx->max_unpacked_bytes);
			ctx->raw_failed = true;
			return -1;
		}
		return (la_ssize_t)size;
	}
}

static la_ssize_t tar_read_cb(struct archive *a, void *data, const void **buffer)
{
	struct unpack_ctx *ctx = data;
	la_ssize_t n = pull_uncompressed(ctx, buffer);
	if (n < 0)
		archive_set_error(a, EIO, "%s",
				  archive_error_string(ctx->raw) ? archive_error_string(ctx->raw)
								 : "decompression failed");
	return n;
}

/* Turns a libarchive failure into an ad_error, preferring the read_fn error
 * that caused it. */
static int archive_fail(struct unpack_ctx *ctx, struct archive *a, ad_error **err, const char *what)
{
	if (ctx->read_err) {
		ad_error *e = ad_steal_ptr(ctx->read_err);
		if (err)
			*err = e;
		else
			ad_error_free(&e);
		return -1;
	}
	if (ctx->raw_failed)
		a = ctx->raw;
	const char *msg = archive_error_string(a);
	return ad_fail(err, AD_E_INVALID, "%s: %s", what, msg ? msg : "malformed archive");
}

/* ---- paths ---------------------------------------------------------------- */

/* Lexically cleans `in` into `out` (room for strlen(in)+1) as a path relative
 * to the root: no leading "/", no "." or empty components, ".." pops a
 * component but never rises above the root (as RESOLVE_IN_ROOT would). */
static void clean_path(const char *in, char *out)
{
	size_t len = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		const char *s = p;
		while (*p && *p != '/')
			p++;
		size_t n = (size_t)(p - s);
		if (n == 0 || (n == 1 && s[0] == '.'))
			continue;
		if (n == 2 && s[0] == '.' && s[1] == '.') {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			continue;
		}
		if (len > 0)
			out[len++] = '/';
		memcpy(out + len, s, n);
		len += n;
	}
	out[len] = '\0';
}

/* Splits a cleaned path in place into parent ("" for the root) and base. */
static const char *split_path(char *path, const char **ret_parent)
{
	char *slash = strrchr(path, '/');
	if (!slash) {
		*ret_parent = "";
		return path;
	}
	*slash = '\0';
	*ret_parent = path;
	return slash + 1;
}

static void drop_parent_cache(struct unpack_ctx *ctx)
{
	free(ctx->parent_path);
	ctx->parent_path = NULL;
	if (ctx->parent_fd >= 0)
		close(ctx->parent_fd);
	ctx->parent_fd = -1;
}

/* Opens `path` (cleaned, non-empty) in the root as a directory. With
 * `create`, missing components are made (0755, as docker does for parents a
 * layer does not list). Returns the fd or -1 with errno set. */
static int open_dir_in_root(struct unpack_ctx *ctx, const char *path, bool create)
{
	ad_error *e = NULL;
	int fd = ad_openat_in_root(ctx->root_fd, path, O_RDONLY | O_DIRECTORY, 0, &e);
	if (fd >= 0)
		return fd;
	int saved = e->errno_value ? e->errno_value : EIO;
	ad_error_free(&e);
	if (!create || saved != ENOENT) {
		errno = saved;
		return -1;
	}

	_cleanup_free_ char *prefix = ad_strdup(path);
	int cur = fcntl(ctx->root_fd, F_DUPFD_CLOEXEC, 3);
	if (cur < 0)
		return -1;
	char *comp = prefix;
	for (;;) {
		char *slash = strchr(comp, '/');
		if (slash)
			*slash = '\0';
		/* Resolve the prefix so far in the root, not relative to `cur`,
		 * so an absolute symlink target stays inside too. */
		fd = ad_openat_in_root(ctx->root_fd, prefix, O_RDONLY | O_DIRECTORY, 0, &e);
		if (fd < 0 && e->errno_value == ENOENT) {
			ad_error_free(&e);
			bool made = mkdirat(cur, comp, 0755) == 0;
			if (!made && errno != EEXIST) {
				saved = errno;
				close(cur);
				errno = saved;
				return -1;
			}
			fd = ad_openat_in_root(ctx->root_fd, prefix, O_RDONLY | O_DIRECTORY, 0, &e);
			/* 0755 whatever the umask, as docker makes them. */
			if (made && fd >= 0)
				(void)fchmod(fd, 0755);
		}
		if (fd < 0) {
			saved = e->errno_value ? e->errno_value : EIO;
			ad_error_free(&e);
			close(cur);
			errno = saved;
			return -1;
		}
		close(cur);
		cur = fd;
		if (!slash)
			return cur;
		*slash = '/';
		comp = slash + 1;
	}
}

/* Returns a borrowed fd of the parent directory `parent` (cleaned). */
static int get_parent(struct unpack_ctx *ctx, const char *parent, const char *name, ad_error **err)
{
	if (parent[0] == '\0')
		return ctx->root_fd;
	if (ctx->parent_path && strcmp(ctx->parent_path, parent) == 0)
		return ctx->parent_fd;
	drop_parent_cache(ctx);
	int fd = open_dir_in_root(ctx, parent, true);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INVALID, "layer entry \"%s\": parent directory",
				     name);
	ctx->parent_path = ad_strdup(parent);
	ctx->parent_fd = fd;
	return fd;
}

/* rm -rf of `name` in `dfd`, never following symlinks. */
static int remove_tree_at(int dfd, const char *name)
{
	DIR *d = ad_opendir_at(dfd, name, O_NOFOLLOW);
	if (!d)
		return -1;
	int r = 0;
	struct dirent *de;
	while ((de = ad_readdir(d))) {
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			continue;
		if (errno != EISDIR || remove_tree_at(dirfd(d), de->d_name) < 0) {
			r = -1;
			break;
		}
	}
	int saved = errno;
	closedir(d);
	if (r < 0) {
		errno = saved;
		return -1;
	}
	return unlinkat(dfd, name, AT_REMOVEDIR);
}

/* Removes whatever is at pfd/base (a directory with its tree). */
static int remove_existing(struct unpack_ctx *ctx, int pfd, const char *base, const char *name,
			   ad_error **err)
{
	/* pfd may be the cached fd: keep it alive, the directory itself stays. */
	if (ctx->parent_fd == pfd) {
		free(ctx->parent_path);
		ctx->parent_path = ad_strdup("\x01"); /* never a cleaned path */
	} else {
		drop_parent_cache(ctx);
	}
	if (unlinkat(pfd, base, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno == EISDIR && remove_tree_at(pfd, base) == 0)
		return 0;
	return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": replacing existing entry",
			     name);
}

/* ---- metadata --------------------------------------------------------------- */

static bool skip_xattr(const char *xname)
{
	/* The overlay's own markers must come from whiteout entries only: a
	 * layer must not smuggle in redirects or metacopy flags. */
	return strncmp(xname, "trusted.overlay.", 16) == 0 ||
	       strncmp(xname, "user.overlay.", 13) == 0;
}

/* libarchive's pax writer stores each xattr twice (LIBARCHIVE.xattr and
 * SCHILY.xattr) and its reader reports both: each name counts once. */
struct xattr_seen {
	const char *names[32];
	size_t n;
};

static bool xattr_seen_before(struct xattr_seen *seen, const char *xname)
{
	for (size_t i = 0; i < seen->n; i++)
		if (strcmp(seen->names[i], xname) == 0)
			return true;
	if (seen->n < sizeof(seen->names) / sizeof(seen->names[0]))
		seen->names[seen->n++] = xname;
	return false;
}

static size_t xattr_bytes(struct archive_entry *entry)
{
	struct xattr_seen seen = {.n = 0};
	size_t total = 0;
	const char *xname;
	const void *value;
	size_t size;
	archive_entry_xattr_reset(entry);
	while (archive_entry_xattr_next(entry, &xname, &value, &size) == ARCHIVE_OK)
		if (!xattr_seen_before(&seen, xname))
			total += strlen(xname) + size;
	return total;
}

static int set_xattrs(struct archive_entry *entry, int fd, int pfd, const char *base,
		      const char *name, ad_error **err)
{
	if (archive_entry_xattr_reset(entry) == 0)
		return 0;
	char proc_path[64] = "";
	struct xattr_seen seen = {.n = 0};
	const char *xname;
	const void *value;
	size_t size;
	while (archive_entry_xattr_next(entry, &xname, &value, &size) == ARCHIVE_OK) {
		if (skip_xattr(xname))
			continue;
		if (xattr_seen_before(&seen, xname))
			continue;
		int r;
		if (fd >= 0) {
			r = fsetxattr(fd, xname, value, size, 0);
		} else {
			/* The magic link is only the parent; the final
			 * component is not followed by lsetxattr. */
			if (!proc_path[0])
				snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d/", pfd);
			_cleanup_free_ char *p = ad_asprintf("%s%s", proc_path, base);
			r = lsetxattr(p, xname, value, size, 0);
		}
		if (r < 0) {
			if (errno == ENOSPC || errno == EDQUOT)
				return ad_fail_errno(err, AD_E_INTERNAL,
						     "layer entry \"%s\": xattr %s", name, xname);
			ad_warn("layer entry \"%s\": skipping xattr %s: %s", name, xname,
				strerror(errno));
		}
	}
	return 0;
}

static void entry_times(struct archive_entry *entry, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime(entry);
	ts[1].tv_nsec = archive_entry_mtime_nsec(entry);
	if (archive_entry_atime_is_set(entry)) {
		ts[0].tv_sec = archive_entry_atime(entry);
		ts[0].tv_nsec = archive_entry_atime_nsec(entry);
	} else {
		ts[0] = ts[1];
	}
	if (ts[0].tv_nsec < 0 || ts[0].tv_nsec >= 1000000000)
		ts[0].tv_nsec = 0;
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec >= 1000000000)
		ts[1].tv_nsec = 0;
}

/* Owner, then mode (chown clears setuid bits), on an open fd. */
static int fd_owner_mode(int fd, struct archive_entry *entry, const char *name, ad_error **err)
{
	if (fchown(fd, (uid_t)archive_entry_uid(entry), (gid_t)archive_entry_gid(entry)) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": chown", name);
	if (fchmod(fd, archive_entry_perm(entry) & 07777) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": chmod", name);
	return 0;
}

/* ---- entry kinds -------------------------------------------------------------- */

int store_pwrite_all(int fd, const void *data, size_t n, off_t off)
{
	const char *p = data;
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

static int extract_file(struct unpack_ctx *ctx, struct archive_entry *entry, int pfd,
			const char *base, const char *name, ad_error **err)
{
	_cleanup_close_ int fd = -1;
	for (int attempt = 0;; attempt++) {
		fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0)
			break;
		if (errno != EEXIST || attempt > 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": create",
					     name);
		if (remove_existing(ctx, pfd, base, name, err) < 0)
			return -1;
	}

	off_t end = 0;
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t offset;
		int r = archive_read_data_block(ctx->tar, &buf, &size, &offset);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return archive_fail(ctx, ctx->tar, err, name);
		if (size == 0)
			continue;
		if (store_pwrite_all(fd, buf, size, (off_t)offset) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": write", name);
		if ((off_t)offset + (off_t)size > end)
			end = (off_t)offset + (off_t)size;
	}
	/* Sparse files may end in a hole. */
	la_int64_t want = archive_entry_size(entry);
	if (archive_entry_size_is_set(entry) && want > end && ftruncate(fd, (off_t)want) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": truncate", name);

	if (fd_owner_mode(fd, entry, name, err) < 0)
		return -1;
	if (set_xattrs(entry, fd, pfd, base, name, err) < 0)
		return -1;
	struct timespec ts[2];
	entry_times(entry, ts);
	if (futimens(fd, ts) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": times", name);
	return 0;
}

static int record_dir_time(struct unpack_ctx *ctx, const char *path, struct archive_entry *entry)
{
	if (ctx->n_dirs == ctx->cap_dirs) {
		ctx->cap_dirs = ctx->cap_dirs ? ctx->cap_dirs * 2 : 64;
		ctx->dirs = ad_realloc(ctx->dirs, ctx->cap_dirs * sizeof(*ctx->dirs));
	}
	struct dir_time *d = &ctx->dirs[ctx->n_dirs++];
	d->path = ad_strdup(path);
	entry_times(entry, d->ts);
	return 0;
}

static int extract_dir(struct unpack_ctx *ctx, struct archive_entry *entry, int pfd,
		       const char *base, const char *name, ad_error **err)
{
	_cleanup_close_ int fd = -1;
	if (!base) {
		fd = fcntl(ctx->root_fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "dup");
	} else {
		for (int attempt = 0;; attempt++) {
			if (mkdirat(pfd, base, 0700) < 0 && errno != EEXIST)
				return ad_fail_errno(err, AD_E_INTERNAL,
						     "layer entry \"%s\": mkdir", name);
			fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				break;
			/* Not a directory (or a symlink): replace it. */
			if ((errno != ENOTDIR && errno != ELOOP) || attempt > 0)
				return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": open",
						     name);
			if (remove_existing(ctx, pfd, base, name, err) < 0)
				return -1;
		}
	}
	if (fd_owner_mode(fd, entry, name, err) < 0)
		return -1;
	return set_xattrs(entry, fd, pfd, base, name, err);
}

/* Creates a non-file node with `create`, replacing what is in its way. */
static int create_replacing(struct unpack_ctx *ctx, int pfd, const char *base, const char *name,
			    int (*create)(int pfd, const char *base, const void *arg),
			    const void *arg, ad_error **err)
{
	for (int attempt = 0;; attempt++) {
		if (create(pfd, base, arg) == 0)
			return 0;
		if (errno != EEXIST || attempt > 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": create",
					     name);
		if (remove_existing(ctx, pfd, base, name, err) < 0)
			return -1;
	}
}

static int do_symlink(int pfd, const char *base, const void *arg)
{
	return symlinkat(arg, pfd, base);
}

struct node_arg {
	mode_t mode;
	dev_t rdev;
};

static int do_mknod(int pfd, const char *base, const void *arg)
{
	const struct node_arg *n = arg;
	return mknodat(pfd, base, n->mode, n->rdev);
}

/* Owner, mode, xattrs and times of a node that has no fd of its own. */
static int node_metadata(struct archive_entry *entry, int pfd, const char *base, const char *name,
			 bool is_link, ad_error **err)
{
	if (fchownat(pfd, base, (uid_t)archive_entry_uid(entry), (gid_t)archive_entry_gid(entry),
		     AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": chown", name);
	if (!is_link &&
	    fchmodat(pfd, base, archive_entry_perm(entry) & 07777, AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": chmod", name);
	if (set_xattrs(entry, -1, pfd, base, name, err) < 0)
		return -1;
	struct timespec ts[2];
	entry_times(entry, ts);
	if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": times", name);
	return 0;
}

static int extract_hardlink(struct unpack_ctx *ctx, const char *target, int pfd, const char *base,
			    const char *name, ad_error **err)
{
	_cleanup_free_ char *tpath = ad_malloc0(strlen(target) + 1);
	clean_path(target, tpath);
	if (tpath[0] == '\0')
		return ad_fail(err, AD_E_INVALID, "layer entry \"%s\": hardlink to the root", name);
	const char *tparent;
	const char *tbase = split_path(tpath, &tparent);
	_cleanup_close_ int tpfd = -1;
	int tdir = ctx->root_fd;
	if (tparent[0]) {
		tpfd = open_dir_in_root(ctx, tparent, false);
		if (tpfd < 0)
			return ad_fail_errno(err, AD_E_INVALID,
					     "layer entry \"%s\": hardlink target \"%s\"", name,
					     target);
		tdir = tpfd;
	}
	struct stat tst;
	if (fstatat(tdir, tbase, &tst, AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INVALID,
				     "layer entry \"%s\": hardlink target \"%s\"", name, target);
	if (S_ISDIR(tst.st_mode))
		return ad_fail(err, AD_E_INVALID,
			       "layer entry \"%s\": hardlink target \"%s\" is a directory", name,
			       target);
	for (int attempt = 0;; attempt++) {
		if (linkat(tdir, tbase, pfd, base, 0) == 0)
			return 0;
		if (errno != EEXIST || attempt > 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": link", name);
		struct stat st;
		if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == tst.st_dev &&
		    st.st_ino == tst.st_ino)
			return 0; /* already that inode (a link to itself) */
		if (remove_existing(ctx, pfd, base, name, err) < 0)
			return -1;
	}
}

static int make_whiteout(struct unpack_ctx *ctx, struct archive_entry *entry, int pfd,
			 const char *base, const char *name, ad_error **err)
{
	if (strcmp(base, WHITEOUT_OPAQUE) == 0) {
		/* pfd is a real directory fd opened in the root. */
		if (fsetxattr(pfd, "trusted.overlay.opaque", "y", 1, 0) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL,
					     "layer entry \"%s\": setting opaque xattr", name);
		return 0;
	}
	if (strncmp(base, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0)
		return 0; /* other AUFS metadata (.wh..wh.plnk, ...): meaningless here */
	const char *target = base + strlen(WHITEOUT_PREFIX);
	if (target[0] == '\0' || strcmp(target, ".") == 0 || strcmp(target, "..") == 0)
		return ad_fail(err, AD_E_INVALID, "layer entry \"%s\": invalid whiteout", name);
	struct node_arg arg = {.mode = S_IFCHR | 0, .rdev = makedev(0, 0)};
	if (create_replacing(ctx, pfd, target, name, do_mknod, &arg, err) < 0)
		return -1;
	if (fchownat(pfd, target, (uid_t)archive_entry_uid(entry), (gid_t)archive_entry_gid(entry),
		     AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "layer entry \"%s\": chown", name);
	return 0;
}

/* ---- driver ---------------------------------------------------------------------- */

static int extract_entry(struct unpack_ctx *ctx, struct archive_entry *entry, ad_error **err)
{
	const char *name = archive_entry_pathname(entry);
	if (!name)
		return ad_fail(err, AD_E_INVALID, "layer entry without a usable path name");
	size_t name_len = strlen(name);
	if (name_len > ctx->max_path_len)
		return ad_fail(err, AD_E_INVALID, "layer entry \"%.64s...\": path longer than %zu",
			       name, ctx->max_path_len);
	const char *hardlink = archive_entry_hardlink(entry);
	const char *symlink = archive_entry_symlink(entry);
	size_t header_bytes = name_len;
	if (hardlink)
		header_bytes += strlen(hardlink);
	if (symlink)
		header_bytes += strlen(symlink);
	/* Counted before anything is made. */
	header_bytes += xattr_bytes(entry);
	if ((hardlink && strlen(hardlink) > ctx->max_path_len) ||
	    header_bytes > ctx->max_header_bytes)
		return ad_fail(err, AD_E_INVALID, "layer entry \"%s\": header too large", name);

	/* (uid_t)-1 would mean "leave unchanged" to chown: refuse it and
	 * anything that does not fit. */
	la_int64_t uid = archive_entry_uid(entry), gid = archive_entry_gid(entry);
	if (uid < 0 || gid < 0 || uid >= (la_int64_t)UINT32_MAX || gid >= (la_int64_t)UINT32_MAX)
		return ad_fail(err, AD_E_INVALID,
			       "layer entry \"%s\": invalid owner %" PRId64 ":%" PRId64, name,
			       (int64_t)uid, (int64_t)gid);

	_cleanup_free_ char *path = ad_malloc0(name_len + 1);
	clean_path(name, path);
	mode_t type = archive_entry_filetype(entry);

	/* AUFS metadata at the top (.wh..wh.plnk/ and its content, ...) means
	 * nothing to overlayfs; an opaque marker there is a real whiteout. */
	if (strncmp(path, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0 &&
	    strcmp(path, WHITEOUT_OPAQUE) != 0)
		return 0;

	if (path[0] == '\0') {
		if (hardlink || type != AE_IFDIR)
			return ad_fail(err, AD_E_INVALID,
				       "layer entry \"%s\": the root must be a directory", name);
		if (extract_dir(ctx, entry, -1, NULL, name, err) < 0)
			return -1;
		return record_dir_time(ctx, "", entry);
	}

	_cleanup_free_ char *full = (type == AE_IFDIR && !hardlink) ? ad_strdup(path) : NULL;
	const char *parent;
	const char *base = split_path(path, &parent);
	int pfd = get_parent(ctx, parent, name, err);
	if (pfd < 0)
		return -1;

	if (strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0)
		return make_whiteout(ctx, entry, pfd, base, name, err);

	if (hardlink)
		return extract_hardlink(ctx, hardlink, pfd, base, name, err);

	int r;
	switch (type) {
	case AE_IFREG:
		r = extract_file(ctx, entry, pfd, base, name, err);
		break;
	case AE_IFDIR:
		r = extract_dir(ctx, entry, pfd, base, name, err);
		if (r == 0)
			r = record_dir_time(ctx, full, entry);
		break;
	case AE_IFLNK:
		if (!symlink)
			return ad_fail(err, AD_E_INVALID,
				       "layer entry \"%s\": symlink without target", name);
		r = create_replacing(ctx, pfd, base, name, do_symlink, symlink, err);
		if (r == 0)
			r = node_metadata(entry, pfd, base, name, true, err);
		break;
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO: {
		dev_t rdev = archive_entry_rdev(entry);
		bool whiteout = type == AE_IFCHR && major(rdev) == 0 && minor(rdev) == 0;
		if (type != AE_IFIFO && !whiteout && !ctx->allow_devices)
			return ad_fail(err, AD_E_INVALID,
				       "layer entry \"%s\": device nodes are not allowed", name);
		struct node_arg arg = {
		    .mode = (type == AE_IFCHR	? S_IFCHR
			     : type == AE_IFBLK ? S_IFBLK
						: S_IFIFO) |
			    0600,
		    .rdev = type == AE_IFIFO ? 0 : rdev,
		};
		r = create_replacing(ctx, pfd, base, name, do_mknod, &arg, err);
		if (r == 0)
			r = node_metadata(entry, pfd, base, name, false, err);
		break;
	}
	default:
		return ad_fail(err, AD_E_INVALID, "layer entry \"%s\": unsupported type 0%o", name,
			       (unsigned)type);
	}
	return r;
}

/* Directory times last: creating entries inside would change them again. */
static int apply_dir_times(struct unpack_ctx *ctx, ad_error **err)
{
	drop_parent_cache(ctx);
	for (size_t i = 0; i < ctx->n_dirs; i++) {
		struct dir_time *d = &ctx->dirs[i];
		if (d->path[0] == '\0') {
			if (futimens(ctx->root_fd, d->ts) < 0)
				return ad_fail_errno(err, AD_E_INTERNAL,
						     "setting times of the root");
			continue;
		}
		const char *parent;
		const char *base = split_path(d->path, &parent);
		int pfd = ctx->root_fd;
		if (parent[0]) {
			if (!ctx->parent_path || strcmp(ctx->parent_path, parent) != 0) {
				drop_parent_cache(ctx);
				int fd = open_dir_in_root(ctx, parent, false);
				if (fd < 0)
					continue; /* replaced later in the layer */
				ctx->parent_path = ad_strdup(parent);
				ctx->parent_fd = fd;
			}
			pfd = ctx->parent_fd;
		}
		struct stat st;
		if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue; /* replaced later in the layer */
		if (utimensat(pfd, base, d->ts, AT_SYMLINK_NOFOLLOW) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "setting times of \"%s\"",
					     d->path);
	}
	return 0;
}

static int run_unpack(struct unpack_ctx *ctx, store_unpack_result *res, ad_error **err)
{
	ctx->raw = archive_read_new();
	ctx->tar = archive_read_new();
	if (!ctx->raw || !ctx->tar)
		return ad_fail(err, AD_E_RESOURCE, "archive_read_new");
	if (archive_read_support_filter_gzip(ctx->raw) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(ctx->raw) != ARCHIVE_OK ||
	    archive_read_support_filter_none(ctx->raw) != ARCHIVE_OK ||
	    archive_read_support_format_raw(ctx->raw) != ARCHIVE_OK)
		return ad_fail(err, AD_E_INTERNAL, "libarchive lacks gzip/zstd support: %s",
			       archive_error_string(ctx->raw));
	if (archive_read_open(ctx->raw, ctx, NULL, raw_read_cb, NULL) != ARCHIVE_OK)
		return archive_fail(ctx, ctx->raw, err, "reading layer");
	struct archive_entry *rawent;
	int r = archive_read_next_header(ctx->raw, &rawent);
	if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
		if (r == ARCHIVE_EOF)
			return ad_fail(err, AD_E_INVALID, "reading layer: empty stream");
		return archive_fail(ctx, ctx->raw, err, "reading layer");
	}

	if (archive_read_support_filter_none(ctx->tar) != ARCHIVE_OK ||
	    archive_read_support_format_tar(ctx->tar) != ARCHIVE_OK)
		return ad_fail(err, AD_E_INTERNAL, "libarchive: %s",
			       archive_error_string(ctx->tar));
	if (archive_read_open(ctx->tar, ctx, NULL, tar_read_cb, NULL) != ARCHIVE_OK)
		return archive_fail(ctx, ctx->tar, err, "reading layer");

	for (;;) {
		struct archive_entry *entry;
		r = archive_read_next_header(ctx->tar, &entry);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN || r == ARCHIVE_RETRY) {
			_cleanup_free_ char *what = ad_asprintf(
			    "reading layer header after %" PRIu64 " entries", res->entries);
			return archive_fail(ctx, ctx->tar, err, what);
		}
		if (++res->entries > ctx->max_entries)
			return ad_fail(err, AD_E_RESOURCE,
				       "layer has more than %" PRIu64 " entries", ctx->max_entries);
		if (extract_entry(ctx, entry, err) < 0)
			return -1;
	}

	/* The tar reader stops at the end-of-archive blocks: hash the rest of
	 * the uncompressed stream, and let the compressed one run out. */
	for (;;) {
		const void *buf;
		la_ssize_t n = pull_uncompressed(ctx, &buf);
		if (n == 0)
			break;
		if (n < 0)
			return archive_fail(ctx, ctx->raw, err, "reading layer");
	}
	while (!ctx->in_eof) {
		const void *buf;
		if (raw_read_cb(ctx->raw, ctx, &buf) < 0)
			return archive_fail(ctx, ctx->raw, err, "reading layer");
	}

	if (apply_dir_times(ctx, err) < 0)
		return -1;

	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	if (EVP_DigestFinal_ex(ctx->md, md, &md_len) != 1 || md_len != 32)
		return ad_fail(err, AD_E_INTERNAL, "sha256 failed");
	char *p = res->diff_id;
	p += sprintf(p, "sha256:");
	for (unsigned i = 0; i < md_len; i++)
		p += sprintf(p, "%02x", md[i]);
	res->uncompressed_size = ctx->usize;
	return 0;
}

int store_unpack_layer(const char *dest_dir, store_read_fn read_fn, void *userdata,
		       const store_unpack_opts *opts, store_unpack_result *ret_result,
		       ad_error **err)
{
	static const store_unpack_opts defaults = {0};
	if (!opts)
		opts = &defaults;
	struct unpack_ctx ctx = {
	    .read_fn = read_fn,
	    .userdata = userdata,
	    .root_fd = -1,
	    .parent_fd = -1,
	    .max_path_len = opts->max_path_len ? opts->max_path_len : 4096,
	    .max_header_bytes = opts->max_header_bytes ? opts->max_header_bytes : 1024 * 1024,
	    .max_entries = opts->max_entries ? opts->max_entries : 10000000,
	    .max_unpacked_bytes =
		opts->max_unpacked_bytes ? opts->max_unpacked_bytes : STORE_DEFAULT_MAX_UNPACKED,
	    .allow_devices = opts->allow_devices,
	};
	store_unpack_result res = {0};
	int r = -1;

	ctx.root_fd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ctx.root_fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", dest_dir);
	ctx.md = EVP_MD_CTX_new();
	ctx.in_buf = ad_malloc0(UNPACK_READ_BLOCK);
	if (!ctx.md || EVP_DigestInit_ex(ctx.md, EVP_sha256(), NULL) != 1) {
		ad_fail(err, AD_E_INTERNAL, "sha256 init failed");
		goto out;
	}
	r = run_unpack(&ctx, &res, err);
	if (r < 0)
		ad_error_wrap(err, "unpacking layer into %s", dest_dir);

out:
	if (ctx.tar)
		archive_read_free(ctx.tar);
	if (ctx.raw)
		archive_read_free(ctx.raw);
	drop_parent_cache(&ctx);
	for (size_t i = 0; i < ctx.n_dirs; i++)
		free(ctx.dirs[i].path);
	free(ctx.dirs);
	ad_error_free(&ctx.read_err);
	EVP_MD_CTX_free(ctx.md);
	free(ctx.in_buf);
	close(ctx.root_fd);
	if (r == 0 && ret_result)
		*ret_result = res;
	return r;
}
