/* The file work of COPY and ADD: sources resolved inside their root (the
 * context, or another stage's rootfs), copied into the build container's
 * rootfs with every destination path resolved inside it; the sources'
 * digest for the layer cache; users and groups from the rootfs. */
#include "build_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/evp.h>

#define MAX_DEPTH 256

static int openat2_(int dirfd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how = {.flags = (uint64_t)flags | O_CLOEXEC, .resolve = resolve};
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* "a/./b/../c" → "a/c"; NULL if it climbs above its root. */
char *bfs_clean_path(const char *path)
{
	char *out = ad_malloc0(strlen(path) + 1);
	size_t len = 0;
	const char *p = path;
	while (*p) {
		while (*p == '/')
			p++;
		const char *end = p + strcspn(p, "/");
		size_t n = (size_t)(end - p);
		if (n == 0)
			break;
		if (n == 1 && p[0] == '.') {
		} else if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (len == 0) {
				free(out);
				return NULL;
			}
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			out[len] = '\0';
		} else {
			if (len)
				out[len++] = '/';
			memcpy(out + len, p, n);
			len += n;
			out[len] = '\0';
		}
		p = end;
	}
	return out;
}

int bfs_open_source(int root_fd, const char *clean, bool beneath, const char *shown,
		    ad_error **err)
{
	const char *p = *clean ? clean : ".";
	int fd = openat2_(root_fd, p, O_PATH,
			  beneath ? RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
				  : RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
	if (fd >= 0)
		return fd;
	if (errno == EXDEV)
		return ad_fail(err, AD_E_INVALID,
			       "%s: a symbolic link in it points outside the build context",
			       shown);
	if (errno == ENOENT || errno == ENOTDIR)
		return ad_fail(err, AD_E_NOT_FOUND, "%s: no such file or directory", shown);
	return ad_fail_errno(err, AD_E_INTERNAL, "%s", shown);
}

/* The names in dir `dir_fd` matching `pattern` (NULL: all), sorted. */
static int list_matches(int dir_fd, const char *pattern, char ***ret)
{
	size_t n = 0, kept = 0;
	char **v = ad_dir_names(dir_fd, ".", &n);
	if (!v)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (pattern && fnmatch(pattern, v[i], FNM_PERIOD) != 0)
			free(v[i]);
		else
			v[kept++] = v[i];
	}
	v[kept] = NULL;
	*ret = v;
	return 0;
}

int bfs_expand_sources(int root_fd, const char *src, bool beneath, const char *what,
		       char ***ret, ad_error **err)
{
	_cleanup_free_ char *clean = bfs_clean_path(src);
	if (!clean)
		return ad_fail(err, AD_E_INVALID, "%s %s: the path is outside the build context",
			       what, src);
	char **v = ad_malloc0(sizeof(char *));
	if (!strpbrk(clean, "*?[")) {
		_cleanup_close_ int fd = bfs_open_source(root_fd, clean, beneath, src, err);
		if (fd < 0) {
			free(v);
			return -1;
		}
		v = ad_realloc(v, sizeof(char *) * 2);
		v[0] = ad_steal_ptr(clean);
		v[1] = NULL;
		*ret = v;
		return 0;
	}
	free(v);
	char *slash = strrchr(clean, '/');
	_cleanup_free_ char *dir = slash ? ad_strndup(clean, (size_t)(slash - clean)) : ad_strdup("");
	const char *pattern = slash ? slash + 1 : clean;
	if (strpbrk(dir, "*?["))
		return ad_fail(err, AD_E_INVALID, "%s %s: wildcards are supported in the last path element only",
			       what, src);
	_cleanup_close_ int pfd = bfs_open_source(root_fd, dir, beneath, src, err);
	if (pfd < 0)
		return -1;
	_cleanup_close_ int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names = NULL;
	if (dfd < 0 || list_matches(dfd, pattern, &names) < 0 || !names[0]) {
		ad_strv_free(names);
		return ad_fail(err, AD_E_NOT_FOUND, "%s %s: no source files were specified", what,
			       src);
	}
	for (char **n = names; *n; n++) {
		char *full = *dir ? ad_asprintf("%s/%s", dir, *n) : ad_strdup(*n);
		free(*n);
		*n = full;
	}
	*ret = names;
	return 0;
}

/* ---- digest of sources (the cache key's inputs) ---- */

/* `name` in dir_fd opened for reading; "" is dir_fd itself (an O_PATH fd). */
static int reopen(int dir_fd, const char *name, int flags)
{
	if (*name)
		return openat(dir_fd, name, flags | O_NOFOLLOW | O_CLOEXEC);
	if (flags & O_DIRECTORY)
		return openat(dir_fd, ".", flags | O_CLOEXEC);
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", dir_fd);
	return open(self, flags | O_CLOEXEC);
}

static void hash_str(EVP_MD_CTX *md, const char *s)
{
	EVP_DigestUpdate(md, s, strlen(s) + 1);
}

static int hash_entry(EVP_MD_CTX *md, int dir_fd, const char *name, const char *rel,
		      unsigned depth, ad_error **err)
{
	if (depth > MAX_DEPTH)
		return ad_fail(err, AD_E_RESOURCE, "%s: nested too deep", rel);
	struct stat st;
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "stat %s", rel);
	char meta[128];
	/* A directory's size is the file system's business (it varies between
	 * two unpacks of one tar); its entries say what it holds. */
	snprintf(meta, sizeof(meta), "%o %lld", (unsigned)st.st_mode,
		 S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size);
	hash_str(md, rel);
	hash_str(md, meta);
	if (S_ISLNK(st.st_mode)) {
		char t[4097];
		ssize_t n = readlinkat(dir_fd, name, t, sizeof(t) - 1);
		if (n < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "readlink %s", rel);
		t[n] = '\0';
		hash_str(md, t);
	} else if (S_ISREG(st.st_mode)) {
		_cleanup_close_ int fd = reopen(dir_fd, name, O_RDONLY);
		if (fd < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "open %s", rel);
		char buf[65536];
		ssize_t n;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			EVP_DigestUpdate(md, buf, (size_t)n);
		if (n < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "read %s", rel);
	} else if (S_ISDIR(st.st_mode)) {
		_cleanup_close_ int sub = reopen(dir_fd, name, O_RDONLY | O_DIRECTORY);
		char **names = NULL;
		if (sub < 0 || list_matches(sub, NULL, &names) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "read dir %s", rel);
		int r = 0;
		for (char **n = names; r == 0 && *n; n++) {
			_cleanup_free_ char *child = ad_asprintf("%s/%s", rel, *n);
			r = hash_entry(md, sub, *n, child, depth + 1, err);
		}
		ad_strv_free(names);
		return r;
	}
	return 0;
}

static void digest_text(const unsigned char h[32], char out[72])
{
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", h[i]);
}

int bfs_hash_sources(int root_fd, char *const *sources, char out[72], ad_error **err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	int r = 0;
	for (char *const *s = sources; r == 0 && *s; s++) {
		_cleanup_close_ int fd = bfs_open_source(root_fd, *s, false, *s, err);
		r = fd < 0 ? -1 : hash_entry(md, fd, "", *s, 0, err);
	}
	unsigned char h[32];
	unsigned int n = 0;
	EVP_DigestFinal_ex(md, h, &n);
	EVP_MD_CTX_free(md);
	digest_text(h, out);
	return r;
}

void bfs_sha256(const void *data, size_t len, char out[72])
{
	unsigned char h[32];
	unsigned int n = 0;
	EVP_Digest(data, len, h, &n, EVP_sha256(), NULL);
	digest_text(h, out);
}

/* ---- the copy ---- */

int bfs_mkdir_in_root(int root_fd, const char *path, uid_t uid, gid_t gid, ad_error **err)
{
	_cleanup_free_ char *clean = bfs_clean_path(path);
	if (!clean)
		clean = ad_strdup("");
	int fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (char *p = clean, *end; fd >= 0 && *p; p = end) {
		end = p + strcspn(p, "/");
		char saved = *end;
		*end = '\0';
		int sub = openat2_(fd, p, O_RDONLY | O_DIRECTORY,
				   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
		if (sub < 0 && errno == ENOENT) {
			if (mkdirat(fd, p, 0755) < 0 && errno != EEXIST) {
				close(fd);
				return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", path);
			}
			/* Best effort, as the owner of a new parent is cosmetic. */
			(void)!fchownat(fd, p, uid, gid, AT_SYMLINK_NOFOLLOW);
			sub = openat2_(fd, p, O_RDONLY | O_DIRECTORY,
				       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
		}
		close(fd);
		fd = sub;
		if (fd < 0)
			return ad_fail_errno(err, AD_E_INVALID, "%s: not a directory in the image",
					     path);
		*end = saved;
		if (*end)
			end++;
	}
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", path);
	return fd;
}

typedef struct copy_ctx {
	const bfs_copy_opts *o;
	ad_error **err;
} copy_ctx;

static int copy_data(int in, int out, const char *rel, ad_error **err)
{
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return ad_fail_errno(err, AD_E_INTERNAL, "copy %s", rel);
		break;
	}
	char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "read %s", rel);
		if (n == 0)
			return 0;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return ad_fail_errno(err, AD_E_INTERNAL, "write %s", rel);
			off += w;
		}
	}
}

static void set_meta(const copy_ctx *c, int dir_fd, const char *name, const struct stat *st)
{
	uid_t u = c->o->keep_owner ? st->st_uid : c->o->uid;
	gid_t g = c->o->keep_owner ? st->st_gid : c->o->gid;
	(void)!fchownat(dir_fd, name, u, g, AT_SYMLINK_NOFOLLOW);
	/* After the chown, which clears setuid bits. */
	if (!S_ISLNK(st->st_mode))
		(void)!fchmodat(dir_fd, name,
				c->o->chmod_set ? c->o->chmod : (st->st_mode & 07777), 0);
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	utimensat(dir_fd, name, ts, AT_SYMLINK_NOFOLLOW);
}

static int copy_entry(const copy_ctx *c, int src_dir, const char *src_name, int dst_dir,
		      const char *dst_name, const char *rel, unsigned depth)
{
	ad_error **err = c->err;
	if (depth > MAX_DEPTH)
		return ad_fail(err, AD_E_RESOURCE, "%s: nested too deep", rel);
	struct stat st;
	if (fstatat(src_dir, src_name, &st, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "stat %s", rel);
	struct stat old;
	bool exists = fstatat(dst_dir, dst_name, &old, AT_SYMLINK_NOFOLLOW) == 0;
	if (exists && !(S_ISDIR(old.st_mode) && S_ISDIR(st.st_mode)) &&
	    unlinkat(dst_dir, dst_name, S_ISDIR(old.st_mode) ? AT_REMOVEDIR : 0) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "%s: cannot replace what the image has there",
				     rel);
	if (S_ISREG(st.st_mode)) {
		_cleanup_close_ int in = reopen(src_dir, src_name, O_RDONLY);
		_cleanup_close_ int out = openat(dst_dir, dst_name,
						 O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
						 0600);
		if (in < 0 || out < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "copy %s", rel);
		if (copy_data(in, out, rel, err) < 0)
			return -1;
	} else if (S_ISLNK(st.st_mode)) {
		char t[4097];
		ssize_t n = readlinkat(src_dir, src_name, t, sizeof(t) - 1);
		if (n < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "readlink %s", rel);
		t[n] = '\0';
		if (symlinkat(t, dst_dir, dst_name) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "symlink %s", rel);
	} else if (S_ISDIR(st.st_mode)) {
		if (!exists && mkdirat(dst_dir, dst_name, 0700) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", rel);
		_cleanup_close_ int sub = reopen(src_dir, src_name, O_RDONLY | O_DIRECTORY);
		_cleanup_close_ int dsub =
		    openat(dst_dir, dst_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		char **names = NULL;
		if (sub < 0 || dsub < 0 || list_matches(sub, NULL, &names) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "copy dir %s", rel);
		int r = 0;
		for (char **n = names; r == 0 && *n; n++) {
			_cleanup_free_ char *child = ad_asprintf("%s/%s", rel, *n);
			r = copy_entry(c, sub, *n, dsub, *n, child, depth + 1);
		}
		ad_strv_free(names);
		if (r < 0)
			return -1;
	} else if (S_ISFIFO(st.st_mode)) {
		if (mkfifoat(dst_dir, dst_name, 0600) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mkfifo %s", rel);
	} else {
		return ad_fail(err, AD_E_INVALID, "%s: devices and sockets cannot be copied", rel);
	}
	set_meta(c, dst_dir, dst_name, &st);
	return 0;
}

int bfs_copy(int src_root, const char *src, int dst_root, const char *dest, bool dest_is_dir,
	     const bfs_copy_opts *o, ad_error **err)
{
	copy_ctx c = {.o = o, .err = err};
	_cleanup_close_ int sfd = bfs_open_source(src_root, src, o->beneath, src, err);
	if (sfd < 0)
		return -1;
	struct stat st;
	if (fstatat(sfd, "", &st, AT_EMPTY_PATH) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "stat %s", src);
	/* Reopened for reading: an O_PATH fd serves stat and openat only. */
	_cleanup_close_ int src_dir = -1;
	const char *src_name = "";
	_cleanup_free_ char *parent = NULL;
	if (S_ISDIR(st.st_mode)) {
		src_dir = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* A directory's contents go into dest, not the directory itself. */
		_cleanup_close_ int dfd = bfs_mkdir_in_root(dst_root, dest, 0, 0, err);
		if (dfd < 0 || src_dir < 0)
			return dfd < 0 ? -1 : ad_fail_errno(err, AD_E_INTERNAL, "open %s", src);
		char **names = NULL;
		if (list_matches(src_dir, NULL, &names) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "read dir %s", src);
		int r = 0;
		for (char **n = names; r == 0 && *n; n++) {
			_cleanup_free_ char *rel = ad_asprintf("%s/%s", src, *n);
			r = copy_entry(&c, src_dir, *n, dfd, *n, rel, 0);
		}
		ad_strv_free(names);
		return r;
	}
	const char *base = strrchr(src, '/') ? strrchr(src, '/') + 1 : src;
	parent = strrchr(src, '/') ? ad_strndup(src, (size_t)(base - 1 - src)) : ad_strdup("");
	_cleanup_close_ int ppath = bfs_open_source(src_root, parent, o->beneath, src, err);
	if (ppath < 0)
		return -1;
	src_dir = openat(ppath, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	src_name = base;
	if (src_dir < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", src);
	_cleanup_free_ char *clean_dest = bfs_clean_path(dest);
	if (!clean_dest)
		clean_dest = ad_strdup("");
	_cleanup_free_ char *dparent = NULL;
	const char *dname;
	if (dest_is_dir || !*clean_dest) {
		dparent = ad_strdup(clean_dest);
		dname = base;
	} else {
		char *slash = strrchr(clean_dest, '/');
		dparent = slash ? ad_strndup(clean_dest, (size_t)(slash - clean_dest)) : ad_strdup("");
		dname = slash ? slash + 1 : clean_dest;
	}
	_cleanup_close_ int dfd = bfs_mkdir_in_root(dst_root, dparent, 0, 0, err);
	if (dfd < 0)
		return -1;
	/* An existing directory at dest takes the file inside it. */
	struct stat dst;
	if (!dest_is_dir && fstatat(dfd, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(dst.st_mode)) {
		_cleanup_close_ int inner =
		    openat(dfd, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (inner < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "open %s", dest);
		return copy_entry(&c, src_dir, src_name, inner, base, src, 0);
	}
	return copy_entry(&c, src_dir, src_name, dfd, dname, src, 0);
}

/* ---- users and groups ---- */

static char *read_rootfs_file(int root_fd, const char *path)
{
	char *data = NULL;
	size_t len = 0;
	ad_error *e = NULL;
	int fd = ad_openat_in_root(root_fd, path, O_RDONLY, 0, &e);
	ad_error_free(&e);
	if (fd < 0)
		return NULL;
	char buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0 && len < (4u << 20)) {
		data = ad_realloc(data, len + (size_t)n + 1);
		memcpy(data + len, buf, (size_t)n);
		len += (size_t)n;
		data[len] = '\0';
	}
	close(fd);
	return data;
}

static bool numeric(const char *s)
{
	return *s && s[strspn(s, "0123456789")] == '\0';
}

int bfs_resolve_user(int root_fd, const char *spec, uid_t *ret_uid, gid_t *ret_gid,
		     ad_error **err)
{
	*ret_uid = 0;
	*ret_gid = 0;
	if (!spec || !*spec)
		return 0;
	_cleanup_free_ char *user = ad_strdup(spec);
	char *group = strchr(user, ':');
	if (group)
		*group++ = '\0';
	_cleanup_free_ char *passwd = read_rootfs_file(root_fd, "/etc/passwd");
	_cleanup_free_ char *groups = read_rootfs_file(root_fd, "/etc/group");
	long uid = 0, gid = -1;
	if (numeric(user)) {
		/* A numeric user listed in passwd gets its primary group. */
		uid = strtol(user, NULL, 10);
		long id;
		if (passwd && ad_id_file_find(passwd, user, true, &id, &gid, NULL) < 0)
			gid = -1;
	} else if (!passwd || ad_id_file_find(passwd, user, false, &uid, &gid, NULL) < 0) {
		return ad_fail(err, AD_E_INVALID, "user '%s' not found in the image's /etc/passwd",
			       user);
	}
	if (group && *group) {
		if (numeric(group))
			gid = strtol(group, NULL, 10);
		else if (!groups || ad_id_file_find(groups, group, false, &gid, NULL, NULL) < 0)
			return ad_fail(err, AD_E_INVALID,
				       "group '%s' not found in the image's /etc/group", group);
	}
	*ret_uid = (uid_t)uid;
	*ret_gid = gid < 0 ? 0 : (gid_t)gid;
	return 0;
}
