/* A container's rootfs: an overlay of the image's layer dirs (top layer first
 * in lowerdir) with upper/ and work/ under containers/<id>/, mounted on
 * containers/<id>/merged. The container pins its image so it is never removed
 * from under it. */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

/* Mount options must fit in a page; long layer lists switch to /proc/self/fd. */
#define MOUNT_OPTS_MAX 4000

static int check_container_id(const char *id, ad_error **err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n > 128 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
		return ad_fail(err, AD_E_INVALID, "invalid container id \"%s\"", id ? id : "");
	for (const char *c = id; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.'))
			return ad_fail(err, AD_E_INVALID, "invalid container id \"%s\"", id);
	return 0;
}

static bool is_mountpoint(const char *path)
{
	struct statx a, b;
	_cleanup_free_ char *parent = ad_asprintf("%s/..", path);
	if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &a) < 0 ||
	    statx(AT_FDCWD, parent, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &b) < 0)
		return false;
	if (a.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
		return (a.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
	return a.stx_dev_major != b.stx_dev_major || a.stx_dev_minor != b.stx_dev_minor;
}

static int mkdir_in(int dirfd, const char *name, const char *what, ad_error **err)
{
	if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
		return ad_fail_errno(err, AD_E_INTERNAL, "%s: mkdir %s", what, name);
	return 0;
}

int store_rootfs_mount(store *s, const char *image, const char *container_id, char **ret_path,
		       ad_error **err)
{
	return store_rootfs_mount_mapped(s, image, container_id, NULL, ret_path, NULL, err);
}

int store_rootfs_mount_mapped(store *s, const char *image, const char *container_id,
			      const store_idmap *map, char **ret_path, store_idmap_kind *ret_kind,
			      ad_error **err)
{
	if (ret_kind)
		*ret_kind = STORE_IDMAP_NONE;
	if (check_container_id(container_id, err) < 0)
		return -1;
	_cleanup_free_ char *image_id = NULL;
	char **layers = NULL;
	if (store_image_layers(s, image, &image_id, &layers, err) < 0)
		return -1;
	_cleanup_free_ char *cdir = ad_asprintf("%s/containers/%s", s->root, container_id);
	_cleanup_free_ char *merged = ad_asprintf("%s/merged", cdir);
	_cleanup_free_ char *opts = NULL;
	size_t n = 0;
	while (layers[n])
		n++;
	int *fds = ad_malloc0(sizeof(int) * (n + 1));
	for (size_t i = 0; i < n; i++)
		fds[i] = -1;
	int r = -1;
	_cleanup_close_ int cfd = -1;

	bool created = false;
	if (store_pin(s, container_id, image_id, err) < 0)
		goto out;
	if (is_mountpoint(merged)) {
		r = 0;
		goto out;
	}
	/* Only a first mount cleans up after itself: a remount after a restart
	 * must not lose the container's upper dir. */
	if (mkdirat(s->containers_fd, container_id, 0755) == 0)
		created = true;
	else if (errno != EEXIST) {
		ad_fail_errno(err, AD_E_INTERNAL, "%s: mkdir", container_id);
		goto out;
	}
	cfd =
	    openat(s->containers_fd, container_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (cfd < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "container %s: open dir", container_id);
		goto out;
	}
	if (mkdir_in(cfd, "upper", container_id, err) < 0 ||
	    mkdir_in(cfd, "work", container_id, err) < 0 ||
	    mkdir_in(cfd, "merged", container_id, err) < 0)
		goto out;

	/* Overlay needs a lowerdir even for an image without layers. */
	char *lower = NULL;
	size_t lower_len = 0;
	FILE *f = open_memstream(&lower, &lower_len);
	if (n == 0) {
		if (mkdir_in(cfd, "empty", container_id, err) < 0) {
			fclose(f);
			free(lower);
			goto out;
		}
		fprintf(f, "%s/empty", cdir);
	}
	for (size_t i = n; i-- > 0;)
		fprintf(f, "%s%s/layers/%s", i == n - 1 ? "" : ":", s->root, layers[i] + 7);
	fclose(f);
	if (n > 0 &&
	    (lower_len + 2 * strlen(cdir) + 64 > MOUNT_OPTS_MAX || strpbrk(s->root, ",:") || map)) {
		free(lower);
		f = open_memstream(&lower, &lower_len);
		for (size_t i = n; i-- > 0;) {
			fds[i] = map ? store_layer_mapped(s, layers[i] + 7, map, ret_kind, err)
				     : openat(s->layers_fd, layers[i] + 7,
					      O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
			if (fds[i] < 0 && map) {
				fclose(f);
				free(lower);
				goto out;
			}
			if (fds[i] < 0) {
				fclose(f);
				free(lower);
				ad_fail_errno(err, AD_E_NOT_FOUND, "image %s: layer %s", image,
					      layers[i]);
				goto out;
			}
			fprintf(f, "%s/proc/self/fd/%d", i == n - 1 ? "" : ":", fds[i]);
		}
		fclose(f);
	}
	if (map && store_idmap_own_upper(cfd, map, err) < 0) {
		free(lower);
		goto out;
	}
	opts = ad_asprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, cdir, cdir);
	free(lower);
	if (strlen(opts) > MOUNT_OPTS_MAX) {
		ad_fail(err, AD_E_RESOURCE, "image %s has too many layers (%zu) to mount", image,
			n);
		goto out;
	}
	if (mount("overlay", merged, "overlay", 0, opts) < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "container %s: mount overlay of image %s",
			      container_id, image);
		goto out;
	}
	r = 0;
out:
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	store_strv_free(layers);
	if (r < 0 && created) {
		/* Nothing mounted: leave no pin or half-made dir behind. */
		_cleanup_error_ ad_error *e = NULL;
		struct stat st;
		if (fstatat(s->containers_fd, container_id, &st, AT_SYMLINK_NOFOLLOW) == 0)
			ad_remove_tree(cdir, &e);
		ad_error_free(&e);
		store_unpin(s, container_id, &e);
	}
	if (r == 0 && ret_path)
		*ret_path = ad_steal_ptr(merged);
	return r;
}

int store_rootfs_remove(store *s, const char *container_id, ad_error **err)
{
	if (check_container_id(container_id, err) < 0)
		return -1;
	_cleanup_free_ char *cdir = ad_asprintf("%s/containers/%s", s->root, container_id);
	_cleanup_free_ char *merged = ad_asprintf("%s/merged", cdir);
	if (is_mountpoint(merged) && umount2(merged, 0) < 0) {
		/* Busy (a process still has it open): detach now, freed on last close. */
		if (errno != EBUSY || umount2(merged, MNT_DETACH) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "container %s: umount %s",
					     container_id, merged);
	}
	struct stat st;
	if (fstatat(s->containers_fd, container_id, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    ad_remove_tree(cdir, err) < 0)
		return ad_error_wrap(err, "container %s", container_id);
	return store_unpin(s, container_id, err);
}

int store_rootfs_unmount(store *s, const char *container_id, ad_error **err)
{
	if (check_container_id(container_id, err) < 0)
		return -1;
	_cleanup_free_ char *merged = ad_asprintf("%s/containers/%s/merged", s->root, container_id);
	if (is_mountpoint(merged) && umount2(merged, 0) < 0 &&
	    (errno != EBUSY || umount2(merged, MNT_DETACH) < 0))
		return ad_fail_errno(err, AD_E_INTERNAL, "container %s: umount %s", container_id,
				     merged);
	return 0;
}
