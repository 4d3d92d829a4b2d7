#include "base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>

#define MAX_SYMLINK_HOPS 40

static int sys_openat2(int dirfd, const char *path, struct open_how *how)
{
	return (int)syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
}

/* Walks `path` one component at a time with O_NOFOLLOW, resolving symlinks
 * ourselves against root_fd so that neither ".." nor an absolute link target
 * can leave the root. Used only where openat2 is missing (ENOSYS). */
static int open_in_root_fallback(int root_fd, const char *path, int flags, mode_t mode, int hops,
				 ad_error **err)
{
	_cleanup_free_ char *work = ad_strdup(path);
	/* Stack of directory fds: the first is a dup of the root. */
	int stack[256];
	int depth = 0;
	stack[depth] = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
	if (stack[0] < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "dup root fd");
	int result = -1;
	char *save = NULL;
	char *comp = strtok_r(work, "/", &save);
	while (comp) {
		char *next = strtok_r(NULL, "/", &save);
		bool last = next == NULL;
		if (strcmp(comp, ".") == 0) {
			comp = next;
			continue;
		}
		if (strcmp(comp, "..") == 0) {
			if (depth > 0)
				close(stack[depth--]);
			comp = next;
			continue;
		}
		int oflags = last ? (flags | O_NOFOLLOW | O_CLOEXEC)
				  : (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int fd = openat(stack[depth], comp, oflags, mode);
		if (fd < 0 && (errno == ELOOP || errno == ENOTDIR || errno == EMLINK)) {
			char target[4096];
			ssize_t n = readlinkat(stack[depth], comp, target, sizeof(target) - 1);
			if (n >= 0) {
				if (hops >= MAX_SYMLINK_HOPS) {
					errno = ELOOP;
					ad_fail_errno(err, AD_E_INVALID, "resolve %s", path);
					goto out;
				}
				target[n] = '\0';
				/* Rebuild: (absolute ? "" : current dir path) + target + rest. */
				_cleanup_free_ char *rest = ad_asprintf(
					"%s%s%s", target, next ? "/" : "", next ? next : "");
				if (target[0] == '/') {
					while (depth > 0)
						close(stack[depth--]);
				}
				result = open_in_root_fallback(stack[depth], rest, flags, mode,
							       hops + 1, err);
				/* A relative target resolves from the link's directory, and
				 * ".." in it stops there: stricter than the kernel, never
				 * looser, and this path only runs without openat2. */
				goto out;
			}
		}
		if (fd < 0) {
			ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INTERNAL, "open %s",
				      path);
			goto out;
		}
		if (last) {
			result = fd;
			goto out;
		}
		if (depth + 1 >= (int)(sizeof(stack) / sizeof(stack[0]))) {
			close(fd);
			ad_fail(err, AD_E_INVALID, "path too deep: %s", path);
			goto out;
		}
		stack[++depth] = fd;
		comp = next;
	}
	/* Empty path or only "." / "..": the directory we ended in. */
	result = openat(stack[depth], ".", flags | O_CLOEXEC, mode);
	if (result < 0)
		ad_fail_errno(err, AD_E_INTERNAL, "open %s", path);
out:
	while (depth >= 0)
		close(stack[depth--]);
	return result;
}

int ad_openat_in_root(int root_fd, const char *path, int flags, mode_t mode, ad_error **err)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	for (;;) {
		int fd = sys_openat2(root_fd, path, &how);
		if (fd >= 0)
			return fd;
		if (errno == EAGAIN || errno == EINTR)
			continue; /* a concurrent rename raced the lookup */
		if (errno == ENOSYS)
			break;
		return ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INTERNAL, "open %s",
				     path);
	}
	return open_in_root_fallback(root_fd, path, flags, mode, 0, err);
}

int ad_mkdir_p(const char *path, mode_t mode, ad_error **err)
{
	_cleanup_free_ char *p = ad_strdup(path);
	size_t len = strlen(p);
	while (len > 1 && p[len - 1] == '/')
		p[--len] = '\0';
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", p);
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", p);
	struct stat st;
	if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
		return ad_fail(err, AD_E_INTERNAL, "mkdir %s: exists and is not a directory", p);
	return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int ad_write_file_atomic(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
			 ad_error **err)
{
	_cleanup_free_ char *tmp = ad_asprintf(".%s.tmp.%d", name, (int)getpid());
	_cleanup_close_ int fd =
		openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "create %s", tmp);
	if (write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		int e = errno;
		unlinkat(dir_fd, tmp, 0);
		return ad_error_make(err, AD_E_INTERNAL, e, "write %s", name);
	}
	if (renameat(dir_fd, tmp, dir_fd, name) < 0) {
		int e = errno;
		unlinkat(dir_fd, tmp, 0);
		return ad_error_make(err, AD_E_INTERNAL, e, "rename %s", name);
	}
	return 0;
}

int ad_read_file(int dir_fd, const char *name, size_t max_size, char **ret_data, size_t *ret_len,
		 ad_error **err)
{
	_cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INTERNAL, "open %s",
				     name);
	/* Reads one byte past the limit so that "exactly max_size" and "larger"
	 * are told apart. */
	size_t limit = max_size + 1;
	size_t cap = limit < 4096 ? limit : 4096, len = 0;
	_cleanup_free_ char *buf = ad_malloc0(cap + 1);
	for (;;) {
		if (len == cap) {
			if (cap >= limit)
				break;
			cap = cap * 2 > limit ? limit : cap * 2;
			buf = ad_realloc(buf, cap + 1);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ad_fail_errno(err, AD_E_INTERNAL, "read %s", name);
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > max_size)
		return ad_fail(err, AD_E_RESOURCE, "%s: larger than %zu bytes", name, max_size);
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	*ret_data = ad_steal_ptr(buf);
	return 0;
}

DIR *ad_opendir_at(int dir_fd, const char *name, int open_flags)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | open_flags);
	if (fd < 0)
		return NULL;
	DIR *d = fdopendir(fd);
	if (!d) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return d;
}

struct dirent *ad_readdir(DIR *d)
{
	struct dirent *de;
	while ((de = readdir(d)) && (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0))
		;
	return de;
}

void ad_closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char **ad_dir_names(int dir_fd, const char *name, size_t *ret_n)
{
	DIR *d = ad_opendir_at(dir_fd, name, 0);
	if (!d)
		return NULL;
	size_t n = 0;
	char **v = ad_malloc0(sizeof(char *));
	struct dirent *de;
	while ((de = ad_readdir(d))) {
		v = ad_realloc(v, sizeof(char *) * (n + 2));
		v[n++] = ad_strdup(de->d_name);
		v[n] = NULL;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(char *), compare_names);
	if (ret_n)
		*ret_n = n;
	return v;
}

void ad_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int remove_dir_contents(int dir_fd, dev_t dev, const char *path, ad_error **err)
{
	DIR *d = ad_opendir_at(dir_fd, ".", 0);
	if (!d)
		return ad_fail_errno(err, AD_E_INTERNAL, "opendir %s", path);
	int r = 0;
	struct dirent *de;
	while ((de = ad_readdir(d))) {
		struct stat st;
		if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (st.st_dev != dev) {
				r = ad_fail(err, AD_E_PRECONDITION,
					    "%s/%s is a mount point; refusing to cross it", path,
					    de->d_name);
				break;
			}
			int child = openat(dir_fd, de->d_name,
					   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (child < 0) {
				r = ad_fail_errno(err, AD_E_INTERNAL, "open %s/%s", path, de->d_name);
				break;
			}
			_cleanup_free_ char *sub = ad_asprintf("%s/%s", path, de->d_name);
			r = remove_dir_contents(child, dev, sub, err);
			close(child);
			if (r < 0)
				break;
			if (unlinkat(dir_fd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
				r = ad_fail_errno(err, AD_E_INTERNAL, "rmdir %s", sub);
				break;
			}
		} else if (unlinkat(dir_fd, de->d_name, 0) < 0 && errno != ENOENT) {
			r = ad_fail_errno(err, AD_E_INTERNAL, "unlink %s/%s", path, de->d_name);
			break;
		}
	}
	closedir(d);
	return r;
}

int ad_remove_tree(const char *path, ad_error **err)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return ad_fail_errno(err, AD_E_INTERNAL, "stat %s", path);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlink(path) < 0 && errno != ENOENT)
			return ad_fail_errno(err, AD_E_INTERNAL, "unlink %s", path);
		return 0;
	}
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", path);
	if (remove_dir_contents(fd, st.st_dev, path, err) < 0)
		return -1;
	if (rmdir(path) < 0 && errno != ENOENT)
		return ad_fail_errno(err, AD_E_INTERNAL, "rmdir %s", path);
	return 0;
}

char *ad_find_helper(const char *name, const char *const *near_self)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash = n > 0 ? (self[n] = '\0', strrchr(self, '/')) : NULL;
	if (slash) {
		*slash = '\0';
		for (size_t i = 0; near_self && near_self[i]; i++) {
			char *cand = ad_asprintf("%s/%s", self, near_self[i]);
			if (access(cand, X_OK) == 0)
				return cand;
			free(cand);
		}
	}
	return ad_asprintf("%s/%s", AGENTD_LIBEXECDIR, name);
}
