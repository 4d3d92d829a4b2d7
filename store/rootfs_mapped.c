/* Layers for a container in a user namespace (store_rootfs_mount_mapped):
 * an idmapped mount of each layer dir (open_tree + mount_setattr
 * MOUNT_ATTR_IDMAP with the pod's user namespace), which overlay accepts as
 * a lower layer; where the kernel or the filesystem refuses one, a copy of
 * the layer with every owner shifted by the mappings, made once per mapping
 * under <root>/mapped/<mapping>/<layer>/ and shared by the pod's
 * containers until store_idmap_release. */
#include "store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static uint32_t map_id(const store_id_range *r, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (id >= r[i].container_id && id - r[i].container_id < r[i].size)
			return r[i].host_id + (id - r[i].container_id);
	return id; /* unmapped: shows as the overflow id inside */
}

/* "u0-100000-65536_g0-100000-65536": the cache dir of one mapping. */
static char *mapping_key(const store_idmap *map)
{
	char *key = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&key, &len);
	fputc('u', f);
	for (size_t i = 0; i < map->n_uids; i++)
		fprintf(f, "%s%u-%u-%u", i ? "." : "", map->uids[i].container_id,
			map->uids[i].host_id, map->uids[i].size);
	fputs("_g", f);
	for (size_t i = 0; i < map->n_gids; i++)
		fprintf(f, "%s%u-%u-%u", i ? "." : "", map->gids[i].container_id,
			map->gids[i].host_id, map->gids[i].size);
	fclose(f);
	return key;
}

typedef struct copy_ctx {
	const store_idmap *map;
	int dst_root;
	/* Files with several links: the first copy's path, to link the others to. */
	struct seen {
		dev_t dev;
		ino_t ino;
		char *path;
	} * seen;
	size_t n_seen;
} copy_ctx;

static void copy_xattrs(int src, int dst)
{
	char names[4096], value[4096];
	ssize_t n = flistxattr(src, names, sizeof(names));
	for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t)strlen(names + off) + 1) {
		ssize_t vl = fgetxattr(src, names + off, value, sizeof(value));
		if (vl >= 0 && fsetxattr(dst, names + off, value, (size_t)vl, 0) < 0)
			ad_debug("mapped layer copy: xattr %s: %s", names + off, strerror(errno));
	}
}

/* Owner (shifted), mode (after the chown, which clears set-id bits) and times. */
static int set_attrs(const copy_ctx *c, int dirfd, const char *name, int fd, const struct stat *st,
		     ad_error **err)
{
	uid_t uid = map_id(c->map->uids, c->map->n_uids, st->st_uid);
	gid_t gid = map_id(c->map->gids, c->map->n_gids, st->st_gid);
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	if (S_ISLNK(st->st_mode)) {
		if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    utimensat(dirfd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", name);
		return 0;
	}
	if (fd >= 0 ? (fchown(fd, uid, gid) < 0 || fchmod(fd, st->st_mode & 07777) < 0 ||
		       futimens(fd, times) < 0)
		    : (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		       fchmodat(dirfd, name, st->st_mode & 07777, 0) < 0 ||
		       utimensat(dirfd, name, times, AT_SYMLINK_NOFOLLOW) < 0))
		return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", name);
	return 0;
}

static int copy_data(int src, int dst, const char *name, ad_error **err)
{
	for (;;) {
		ssize_t n = copy_file_range(src, NULL, dst, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", name);
		char buf[65536];
		ssize_t r;
		while ((r = read(src, buf, sizeof(buf))) > 0)
			if (write(dst, buf, (size_t)r) != r)
				return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s",
						     name);
		return r < 0 ? ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", name) : 0;
	}
}

static int copy_tree(copy_ctx *c, int src_dir, int dst_dir, const char *rel, ad_error **err);

static int copy_entry(copy_ctx *c, int src_dir, int dst_dir, const char *rel, const char *name,
		      ad_error **err)
{
	struct stat st;
	if (fstatat(src_dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s/%s", rel, name);
	_cleanup_free_ char *path = ad_asprintf("%s%s%s", rel, *rel ? "/" : "", name);
	if (S_ISDIR(st.st_mode)) {
		if (mkdirat(dst_dir, name, 0700) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", path);
		_cleanup_close_ int s =
		    openat(src_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		_cleanup_close_ int d =
		    openat(dst_dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (s < 0 || d < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", path);
		if (copy_tree(c, s, d, path, err) < 0)
			return -1;
		copy_xattrs(s, d);
		return set_attrs(c, dst_dir, name, d, &st, err);
	}
	if (S_ISREG(st.st_mode)) {
		if (st.st_nlink > 1) {
			for (size_t i = 0; i < c->n_seen; i++)
				if (c->seen[i].dev == st.st_dev && c->seen[i].ino == st.st_ino) {
					if (linkat(c->dst_root, c->seen[i].path, dst_dir, name, 0) <
					    0)
						return ad_fail_errno(err, AD_E_INTERNAL,
								     "mapped layer copy: link %s",
								     path);
					return 0;
				}
			c->seen = ad_realloc(c->seen, (c->n_seen + 1) * sizeof(*c->seen));
			c->seen[c->n_seen++] = (struct seen){
			    .dev = st.st_dev, .ino = st.st_ino, .path = ad_strdup(path)};
		}
		_cleanup_close_ int s = openat(src_dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		_cleanup_close_ int d = openat(
		    dst_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (s < 0 || d < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", path);
		if (copy_data(s, d, path, err) < 0)
			return -1;
		copy_xattrs(s, d);
		return set_attrs(c, dst_dir, name, d, &st, err);
	}
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlinkat(src_dir, name, target, sizeof(target) - 1);
		if (n < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", path);
		target[n] = '\0';
		if (symlinkat(target, dst_dir, name) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", path);
		return set_attrs(c, dst_dir, name, -1, &st, err);
	}
	if (S_ISSOCK(st.st_mode))
		return 0;
	/* devices, fifos, and the overlay whiteouts (0:0 character devices) */
	if (mknodat(dst_dir, name, st.st_mode & S_IFMT, st.st_rdev) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", path);
	return set_attrs(c, dst_dir, name, -1, &st, err);
}

static int copy_tree(copy_ctx *c, int src_dir, int dst_dir, const char *rel, ad_error **err)
{
	int dup = fcntl(src_dir, F_DUPFD_CLOEXEC, 3);
	DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
	if (!d) {
		if (dup >= 0)
			close(dup);
		return ad_fail_errno(err, AD_E_INTERNAL, "mapped layer copy: %s", rel);
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			r = copy_entry(c, src_dir, dst_dir, rel, de->d_name, err);
	closedir(d);
	return r;
}

/* <root>/mapped/<key>/<hex>, made if missing (in a temporary dir renamed
 * into place, so a crash or a racing copy never leaves a half one in use). */
static int layer_copy(store *s, const char *hex, const store_idmap *map, ad_error **err)
{
	_cleanup_free_ char *key = mapping_key(map);
	_cleanup_free_ char *dir = ad_asprintf("%s/mapped/%s", s->root, key);
	if (ad_mkdir_p(dir, 0700, err) < 0)
		return -1;
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "%s", dir);
	int fd = openat(dfd, hex, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0)
		return fd;
	_cleanup_free_ char *tmp = ad_asprintf(".%s.%d.%ld", hex, (int)getpid(), (long)gettid());
	_cleanup_close_ int src =
	    openat(s->layers_fd, hex, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (src < 0 || fstat(src, &st) < 0)
		return ad_fail_errno(err, AD_E_NOT_FOUND, "layer %s", hex);
	if (mkdirat(dfd, tmp, 0700) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "%s/%s", dir, tmp);
	_cleanup_close_ int dst = openat(dfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	copy_ctx c = {.map = map, .dst_root = dst};
	int r = dst < 0 ? ad_fail_errno(err, AD_E_INTERNAL, "%s/%s", dir, tmp)
			: copy_tree(&c, src, dst, "", err);
	if (r == 0) {
		copy_xattrs(src, dst);
		r = set_attrs(&c, dfd, tmp, dst, &st, err);
	}
	for (size_t i = 0; i < c.n_seen; i++)
		free(c.seen[i].path);
	free(c.seen);
	if (r == 0 && renameat(dfd, tmp, dfd, hex) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		r = ad_fail_errno(err, AD_E_INTERNAL, "%s/%s", dir, hex);
	_cleanup_free_ char *left = ad_asprintf("%s/%s", dir, tmp);
	_cleanup_error_ ad_error *e2 = NULL;
	if (faccessat(dfd, tmp, F_OK, AT_SYMLINK_NOFOLLOW) == 0 && ad_remove_tree(left, &e2) < 0)
		ad_warn("%s", e2->message);
	if (r < 0)
		return ad_error_wrap(err, "chowned copy of layer %s", hex);
	fd = openat(dfd, hex, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "%s/%s", dir, hex);
	return fd;
}

int store_layer_mapped(store *s, const char *hex, const store_idmap *map, store_idmap_kind *kind,
		       ad_error **err)
{
	if (map->userns_fd >= 0) {
		int tree = open_tree(s->layers_fd, hex, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (tree < 0)
			return ad_fail_errno(err, AD_E_NOT_FOUND, "layer %s", hex);
		struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP,
					  .userns_fd = (uint64_t)map->userns_fd};
		if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof(attr)) == 0) {
			if (kind && *kind == STORE_IDMAP_NONE)
				*kind = STORE_IDMAP_MOUNTS;
			return tree;
		}
		ad_info("layer %s: no idmapped mount (%s): using a chowned copy", hex,
			strerror(errno));
		close(tree);
	}
	if (kind)
		*kind = STORE_IDMAP_COPY;
	return layer_copy(s, hex, map, err);
}

int store_idmap_own_upper(int container_dir, const store_idmap *map, ad_error **err)
{
	uid_t uid = map_id(map->uids, map->n_uids, 0);
	gid_t gid = map_id(map->gids, map->n_gids, 0);
	if (fchownat(container_dir, "upper", uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "chown the upper dir");
	return 0;
}

int store_idmap_release(store *s, const store_idmap *map, ad_error **err)
{
	_cleanup_free_ char *key = mapping_key(map);
	_cleanup_free_ char *dir = ad_asprintf("%s/mapped/%s", s->root, key);
	if (access(dir, F_OK) < 0)
		return 0;
	return ad_remove_tree(dir, err);
}
