/* layer_write_test.c — store_layer_tar (store/commit.c): an overlay upper
 * dir with whiteouts (0:0 char devices) and an opaque dir written as an OCI
 * layer tar, read back with libarchive; the same tree gives the same bytes,
 * and SOURCE_DATE_EPOCH clamps times. Runs as root (mknod, trusted.*). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "store_int.h"

typedef struct bytes {
	char *p;
	size_t len;
} bytes;

static int to_bytes(void *userdata, const void *buf, size_t len, ad_error **err)
{
	(void)err;
	bytes *b = userdata;
	b->p = ad_realloc(b->p, b->len + len);
	memcpy(b->p + b->len, buf, len);
	b->len += len;
	return 0;
}

static int fail_sink(void *userdata, const void *buf, size_t len, ad_error **err)
{
	(void)userdata, (void)buf, (void)len;
	return ad_fail(err, AD_E_RESOURCE, "disk full (test)");
}

typedef struct fixture {
	char dir[64];
	int fd;
} fixture;

static void put_file(int dir_fd, const char *name, const char *text)
{
	int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* upper/: etc/new.conf, etc/gone (whiteout), opq/ (opaque) with keep,
 * bin/sh -> busybox, hard and hard2 (one inode), a fifo, an empty dir. */
static int setup(void **state)
{
	fixture *f = ad_malloc0(sizeof(*f));
	strcpy(f->dir, "/tmp/layer_write_test.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_int_equal(mkdirat(f->fd, "etc", 0755), 0);
	put_file(f->fd, "etc/new.conf", "hello\n");
	assert_int_equal(mknodat(f->fd, "etc/gone", S_IFCHR | 0, makedev(0, 0)), 0);
	assert_int_equal(mkdirat(f->fd, "opq", 0700), 0);
	_cleanup_free_ char *opq = ad_asprintf("%s/opq", f->dir);
	assert_int_equal(setxattr(opq, "trusted.overlay.opaque", "y", 1, 0), 0);
	put_file(f->fd, "opq/keep", "k");
	assert_int_equal(mkdirat(f->fd, "bin", 0755), 0);
	assert_int_equal(symlinkat("busybox", f->fd, "bin/sh"), 0);
	put_file(f->fd, "hard", "same inode");
	assert_int_equal(linkat(f->fd, "hard", f->fd, "hard2", 0), 0);
	assert_int_equal(mkfifoat(f->fd, "fifo", 0600), 0);
	assert_int_equal(mkdirat(f->fd, "empty", 0755), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	ad_error *e = NULL;
	close(f->fd);
	ad_remove_tree(f->dir, &e);
	ad_error_free(&e);
	free(f);
	return 0;
}

typedef struct seen {
	char path[256];
	int type;
	int64_t size, mtime;
	char link[256];
	bool has_overlay_xattr;
} seen;

static size_t read_back(const bytes *b, seen *out, size_t max)
{
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_memory(a, b->p, b->len), ARCHIVE_OK);
	struct archive_entry *e;
	size_t n = 0;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK && n < max) {
		seen *s = &out[n++];
		memset(s, 0, sizeof(*s));
		snprintf(s->path, sizeof(s->path), "%s", archive_entry_pathname(e));
		s->type = (int)archive_entry_filetype(e);
		s->size = archive_entry_size(e);
		s->mtime = archive_entry_mtime(e);
		if (archive_entry_hardlink(e))
			snprintf(s->link, sizeof(s->link), "hard:%s", archive_entry_hardlink(e));
		else if (archive_entry_symlink(e))
			snprintf(s->link, sizeof(s->link), "%s", archive_entry_symlink(e));
		const char *name;
		const void *v;
		size_t vl;
		archive_entry_xattr_reset(e);
		while (archive_entry_xattr_next(e, &name, &v, &vl) == ARCHIVE_OK)
			if (strstr(name, "overlay"))
				s->has_overlay_xattr = true;
	}
	archive_read_free(a);
	return n;
}

static const seen *find(const seen *v, size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].path, path) == 0)
			return &v[i];
	return NULL;
}

static void test_whiteouts_and_opaque(void **state)
{
	fixture *f = *state;
	bytes b = {0};
	ad_error *e = NULL;
	assert_int_equal(store_layer_tar(f->fd, -1, to_bytes, &b, &e), 0);
	seen v[32];
	size_t n = read_back(&b, v, 32);
	const char *const want[] = {"bin/",	    "bin/sh", "empty/", "etc/",
				    "etc/.wh.gone", "etc/new.conf", "fifo", "hard",
				    "hard2",	    "opq/",	"opq/.wh..wh..opq", "opq/keep"};
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < n; i++)
		assert_string_equal(v[i].path, want[i]); /* sorted, whiteouts in place */
	const seen *wh = find(v, n, "etc/.wh.gone");
	assert_int_equal(wh->type, AE_IFREG);
	assert_int_equal(wh->size, 0);
	assert_int_equal(find(v, n, "opq/.wh..wh..opq")->type, AE_IFREG);
	assert_false(find(v, n, "opq/")->has_overlay_xattr);
	assert_string_equal(find(v, n, "bin/sh")->link, "busybox");
	assert_string_equal(find(v, n, "hard2")->link, "hard:hard");
	assert_int_equal(find(v, n, "hard")->size, 10);
	assert_int_equal(find(v, n, "fifo")->type, AE_IFIFO);
	assert_int_equal(find(v, n, "etc/new.conf")->size, 6);
	free(b.p);
}

static void test_reproducible_and_clamped(void **state)
{
	fixture *f = *state;
	bytes a = {0}, b = {0};
	ad_error *e = NULL;
	assert_int_equal(store_layer_tar(f->fd, 1000, to_bytes, &a, &e), 0);
	/* New times on a file: clamped, so nothing changes. */
	struct timespec ts[2] = {{.tv_sec = 2000000000}, {.tv_sec = 2000000000}};
	assert_int_equal(utimensat(f->fd, "etc/new.conf", ts, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(store_layer_tar(f->fd, 1000, to_bytes, &b, &e), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.p, b.p, a.len);
	seen v[32];
	size_t n = read_back(&b, v, 32);
	for (size_t i = 0; i < n; i++)
		assert_true(v[i].mtime <= 1000);
	free(a.p);
	free(b.p);
	/* Unclamped, the file's own time is kept. */
	bytes c = {0};
	assert_int_equal(store_layer_tar(f->fd, -1, to_bytes, &c, &e), 0);
	n = read_back(&c, v, 32);
	assert_int_equal(find(v, n, "etc/new.conf")->mtime, 2000000000);
	free(c.p);
}

static void test_sink_error_comes_back(void **state)
{
	fixture *f = *state;
	ad_error *e = NULL;
	assert_int_equal(store_layer_tar(f->fd, -1, fail_sink, NULL, &e), -1);
	assert_non_null(e);
	assert_int_equal(e->code, AD_E_RESOURCE);
	assert_non_null(strstr(e->message, "disk full"));
	ad_error_free(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_whiteouts_and_opaque, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reproducible_and_clamped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sink_error_comes_back, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
