/* unpack_test.c — store_unpack_layer() against real layers built here with
 * libarchive, extracted into private temp dirs (run as root). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <dirent.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "unpack.h"

/* ---- growable byte buffer -------------------------------------------------- */

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 4096;
		b->p = ad_realloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static la_ssize_t buf_write_cb(struct archive *a, void *data, const void *p, size_t n)
{
	(void)a;
	buf_append(data, p, n);
	return (la_ssize_t)n;
}

/* ---- layer builder ------------------------------------------------------------ */

struct layer {
	struct archive *a;
	struct buf tar;
};

static void layer_begin(struct layer *l)
{
	memset(l, 0, sizeof(*l));
	l->a = archive_write_new();
	assert_non_null(l->a);
	assert_int_equal(archive_write_set_format_pax(l->a), ARCHIVE_OK);
	assert_int_equal(archive_write_open(l->a, &l->tar, NULL, buf_write_cb, NULL), ARCHIVE_OK);
}

static struct archive_entry *new_entry(const char *path, mode_t type, mode_t perm, int uid, int gid)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, path);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_uid(e, uid);
	archive_entry_set_gid(e, gid);
	archive_entry_set_mtime(e, 1600000000, 123456789);
	return e;
}

static void write_entry(struct layer *l, struct archive_entry *e, const void *data, size_t len)
{
	if (archive_write_header(l->a, e) != ARCHIVE_OK)
		fail_msg("write %s: %s", archive_entry_pathname(e), archive_error_string(l->a));
	if (len)
		assert_int_equal(archive_write_data(l->a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
}

static void add_file(struct layer *l, const char *path, const char *content, mode_t perm, int uid,
		     int gid)
{
	struct archive_entry *e = new_entry(path, AE_IFREG, perm, uid, gid);
	archive_entry_set_size(e, (la_int64_t)strlen(content));
	write_entry(l, e, content, strlen(content));
}

static void add_dir(struct layer *l, const char *path, mode_t perm)
{
	struct archive_entry *e = new_entry(path, AE_IFDIR, perm, 0, 0);
	write_entry(l, e, NULL, 0);
}

static void add_symlink(struct layer *l, const char *path, const char *target)
{
	struct archive_entry *e = new_entry(path, AE_IFLNK, 0777, 0, 0);
	archive_entry_set_symlink(e, target);
	write_entry(l, e, NULL, 0);
}

static void add_hardlink(struct layer *l, const char *path, const char *target)
{
	struct archive_entry *e = new_entry(path, AE_IFREG, 0644, 0, 0);
	archive_entry_set_hardlink(e, target);
	write_entry(l, e, NULL, 0);
}

static void add_node(struct layer *l, const char *path, mode_t type, dev_t rdev)
{
	struct archive_entry *e = new_entry(path, type, 0640, 0, 0);
	archive_entry_set_rdev(e, rdev);
	write_entry(l, e, NULL, 0);
}

static void layer_end(struct layer *l)
{
	assert_int_equal(archive_write_close(l->a), ARCHIVE_OK);
	archive_write_free(l->a);
	l->a = NULL;
}

enum comp { COMP_NONE, COMP_GZIP, COMP_ZSTD };

/* The tar bytes compressed as one stream (no block padding after it). */
static struct buf compress_bytes(const struct buf *in, enum comp c)
{
	struct buf out = {0};
	if (c == COMP_NONE) {
		buf_append(&out, in->p, in->len);
		return out;
	}
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_raw(a), ARCHIVE_OK);
	assert_int_equal(c == COMP_GZIP ? archive_write_add_filter_gzip(a)
					: archive_write_add_filter_zstd(a),
			 ARCHIVE_OK);
	assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
	assert_int_equal(archive_write_open(a, &out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "data");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_size(e, (la_int64_t)in->len);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, in->p, in->len), (la_ssize_t)in->len);
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	return out;
}

static void sha256_hex(const void *p, size_t n, char out[72])
{
	unsigned char md[32];
	unsigned int len = 0;
	assert_int_equal(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
	char *o = out + sprintf(out, "sha256:");
	for (unsigned i = 0; i < len; i++)
		o += sprintf(o, "%02x", md[i]);
}

/* ---- feeding the unpacker -------------------------------------------------------- */

struct feeder {
	const unsigned char *p;
	size_t len, pos;
	unsigned calls;
	size_t fail_after; /* fail once pos reaches it (0: never) */
};

/* Alternates 7 and 4093 byte chunks so every boundary lands mid-header. */
static ssize_t feed_cb(void *userdata, void *buf, size_t len, ad_error **err)
{
	struct feeder *f = userdata;
	if (f->fail_after && f->pos >= f->fail_after)
		return ad_fail(err, AD_E_UNAVAILABLE, "registry connection reset (boom)");
	size_t want = (f->calls++ % 2) ? 4093 : 7;
	if (want > len)
		want = len;
	if (want > f->len - f->pos)
		want = f->len - f->pos;
	if (want)
		memcpy(buf, f->p + f->pos, want);
	f->pos += want;
	return (ssize_t)want;
}

static int unpack_bytes(const char *dest, const struct buf *b, const store_unpack_opts *opts,
			store_unpack_result *res, ad_error **err)
{
	struct feeder f = {.p = b->p, .len = b->len};
	int r = store_unpack_layer(dest, feed_cb, &f, opts, res, err);
	if (r == 0)
		assert_int_equal(f.pos, f.len); /* the whole stream was consumed */
	return r;
}

/* ---- temp dirs ----------------------------------------------------------------- */

struct fixture {
	char tmp[64];
	char mnt[128];
	bool mounted;
};

static int setup(void **state)
{
	struct fixture *fx = ad_malloc0(sizeof(*fx));
	snprintf(fx->tmp, sizeof(fx->tmp), "/tmp/unpack_test.XXXXXX");
	if (!mkdtemp(fx->tmp))
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	if (fx->mounted)
		umount2(fx->mnt, MNT_DETACH);
	ad_error *e = NULL;
	if (ad_remove_tree(fx->tmp, &e) < 0) {
		fprintf(stderr, "cleanup %s: %s\n", fx->tmp, e->message);
		ad_error_free(&e);
	}
	free(fx);
	return 0;
}

static char *tpath(struct fixture *fx, const char *rel)
{
	return ad_asprintf("%s/%s", fx->tmp, rel);
}

static char *mkdest(struct fixture *fx, const char *rel)
{
	char *p = tpath(fx, rel);
	ad_error *e = NULL;
	assert_int_equal(ad_mkdir_p(p, 0755, &e), 0);
	return p;
}

static void assert_content(const char *dir, const char *rel, const char *want)
{
	char *p = ad_asprintf("%s/%s", dir, rel);
	char *data = NULL;
	size_t len = 0;
	ad_error *e = NULL;
	int r = ad_read_file(AT_FDCWD, p, 1 << 24, &data, &len, &e);
	if (r < 0)
		fail_msg("%s: %s", p, e->message);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(data, want, len);
	free(data);
	free(p);
}

static struct stat lstat_of(const char *dir, const char *rel)
{
	char *p = ad_asprintf("%s/%s", dir, rel);
	struct stat st;
	if (lstat(p, &st) < 0)
		fail_msg("lstat %s: %s", p, strerror(errno));
	free(p);
	return st;
}

static bool exists(const char *dir, const char *rel)
{
	char *p = ad_asprintf("%s/%s", dir, rel);
	struct stat st;
	bool r = lstat(p, &st) == 0;
	free(p);
	return r;
}

static void expect_error(int r, ad_error **err, ad_code code, const char *needle)
{
	assert_int_equal(r, -1);
	assert_non_null(*err);
	if ((*err)->code != code || (needle && !strstr((*err)->message, needle)))
		fail_msg("unexpected error %s: %s (wanted %s containing \"%s\")",
			 ad_code_name((*err)->code), (*err)->message, ad_code_name(code),
			 needle ? needle : "");
	ad_error_free(err);
}

/* ---- normal tree ------------------------------------------------------------------ */

static void build_tree(struct buf *ret_tar)
{
	struct layer l;
	layer_begin(&l);
	add_dir(&l, "./", 0755);
	struct archive_entry *e = new_entry("etc/", AE_IFDIR, 0750, 1000, 1000);
	archive_entry_set_mtime(e, 1000000, 0);
	write_entry(&l, e, NULL, 0);
	e = new_entry("etc/hello", AE_IFREG, 0644, 1000, 1000);
	archive_entry_set_size(e, 12);
	archive_entry_set_mtime(e, 1234567, 500);
	archive_entry_xattr_add_entry(e, "user.x", "val", 3);
	write_entry(&l, e, "hello world\n", 12);
	add_dir(&l, "bin", 0755);
	add_file(&l, "bin/su", "#!su\n", 04755, 0, 0);
	add_file(&l, "bin/mine", "#!mine\n", 06750, 1000, 1000);
	/* Big enough to cross many read and decompression blocks. */
	size_t big_len = 3 * 1024 * 1024 + 17;
	char *big = ad_malloc0(big_len + 1);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
	add_file(&l, "big", big, 0600, 0, 0);
	free(big);
	add_file(&l, "empty", "", 0644, 0, 0);
	add_symlink(&l, "etc/link", "hello");
	e = new_entry("abs", AE_IFLNK, 0777, 1000, 1001);
	archive_entry_set_symlink(e, "/etc/hello");
	archive_entry_xattr_add_entry(e, "trusted.t", "1", 1);
	write_entry(&l, e, NULL, 0);
	add_hardlink(&l, "etc/hard", "etc/hello");
	e = new_entry("fifo", AE_IFIFO, 0640, 0, 0);
	archive_entry_xattr_add_entry(e, "trusted.f", "ff", 2);
	/* Overlay markers come only from whiteout entries. */
	archive_entry_xattr_add_entry(e, "trusted.overlay.redirect", "/x", 2);
	write_entry(&l, e, NULL, 0);
	add_file(&l, "deep/a/b/c/file", "deep\n", 0644, 0, 0);
	layer_end(&l);
	*ret_tar = l.tar;
}

static void check_tree(const char *d)
{
	assert_content(d, "etc/hello", "hello world\n");
	struct stat st = lstat_of(d, "etc/hello");
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_gid, 1000);
	assert_int_equal(st.st_mtim.tv_sec, 1234567);
	assert_int_equal(st.st_mtim.tv_nsec, 500);
	assert_int_equal(st.st_nlink, 2);
	char x[16];
	char *p = ad_asprintf("%s/etc/hello", d);
	assert_int_equal(getxattr(p, "user.x", x, sizeof(x)), 3);
	assert_memory_equal(x, "val", 3);
	free(p);

	struct stat hard = lstat_of(d, "etc/hard");
	assert_int_equal(hard.st_ino, st.st_ino);

	st = lstat_of(d, "etc");
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_mtim.tv_sec, 1000000); /* set after its content */

	st = lstat_of(d, "bin/su");
	assert_int_equal(st.st_mode & 07777, 04755);
	st = lstat_of(d, "bin/mine");
	assert_int_equal(st.st_mode & 07777, 06750); /* setuid/setgid survive chown */
	assert_int_equal(st.st_uid, 1000);

	st = lstat_of(d, "big");
	assert_int_equal(st.st_size, 3 * 1024 * 1024 + 17);
	p = ad_asprintf("%s/big", d);
	FILE *f = fopen(p, "r");
	free(p);
	assert_non_null(f);
	for (size_t i = 0; i < (size_t)st.st_size; i++) {
		int c = fgetc(f);
		if (c != 'a' + (int)((i * 7 + i / 4096) % 26))
			fail_msg("big differs at %zu", i);
	}
	fclose(f);
	st = lstat_of(d, "empty");
	assert_int_equal(st.st_size, 0);

	char target[64];
	p = ad_asprintf("%s/etc/link", d);
	ssize_t n = readlink(p, target, sizeof(target));
	assert_int_equal(n, 5);
	assert_memory_equal(target, "hello", 5);
	free(p);
	p = ad_asprintf("%s/abs", d);
	n = readlink(p, target, sizeof(target));
	assert_int_equal(n, 10);
	assert_memory_equal(target, "/etc/hello", 10); /* verbatim */
	free(p);
	st = lstat_of(d, "abs");
	assert_int_equal(st.st_uid, 1000);
	assert_int_equal(st.st_gid, 1001);

	p = ad_asprintf("%s/abs", d);
	assert_int_equal(lgetxattr(p, "trusted.t", x, sizeof(x)), 1);
	assert_int_equal(x[0], '1');
	free(p);
	p = ad_asprintf("%s/fifo", d);
	assert_int_equal(lgetxattr(p, "trusted.f", x, sizeof(x)), 2);
	assert_memory_equal(x, "ff", 2);
	assert_int_equal(lgetxattr(p, "trusted.overlay.redirect", x, sizeof(x)), -1);
	free(p);
	st = lstat_of(d, "fifo");
	assert_true(S_ISFIFO(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_content(d, "deep/a/b/c/file", "deep\n");
	st = lstat_of(d, "deep/a");
	assert_int_equal(st.st_mode & 07777, 0755);
}

static void test_tree(void **state, enum comp c, const char *name)
{
	struct fixture *fx = *state;
	struct buf tar;
	build_tree(&tar);
	struct buf layer = compress_bytes(&tar, c);
	char *dest = mkdest(fx, name);
	store_unpack_result res;
	ad_error *err = NULL;
	int r = unpack_bytes(dest, &layer, NULL, &res, &err);
	if (r < 0)
		fail_msg("%s", err->message);
	char want[72];
	sha256_hex(tar.p, tar.len, want);
	assert_string_equal(res.diff_id, want);
	assert_int_equal(res.uncompressed_size, tar.len);
	assert_int_equal(res.entries, 13);
	check_tree(dest);
	free(dest);
	free(tar.p);
	free(layer.p);
}

static void test_tree_plain(void **state)
{
	test_tree(state, COMP_NONE, "plain");
}

static void test_tree_gzip(void **state)
{
	test_tree(state, COMP_GZIP, "gzip");
}

static void test_tree_zstd(void **state)
{
	test_tree(state, COMP_ZSTD, "zstd");
}

/* ---- whiteouts ---------------------------------------------------------------------- */

static void unpack_ok(const char *dest, struct layer *l, enum comp c, const store_unpack_opts *opts)
{
	struct buf b = compress_bytes(&l->tar, c);
	store_unpack_result res;
	ad_error *err = NULL;
	if (unpack_bytes(dest, &b, opts, &res, &err) < 0)
		fail_msg("%s", err->message);
	free(b.p);
	free(l->tar.p);
	l->tar.p = NULL;
}

static void test_whiteouts(void **state)
{
	struct fixture *fx = *state;
	char *lower = mkdest(fx, "lower");
	char *upper = mkdest(fx, "upper");
	struct layer l;
	layer_begin(&l);
	add_dir(&l, "d", 0755);
	add_file(&l, "d/old", "old\n", 0644, 0, 0);
	add_file(&l, "foo", "foo\n", 0644, 0, 0);
	add_file(&l, "keep", "keep\n", 0644, 0, 0);
	add_dir(&l, "d2", 0755);
	add_file(&l, "d2/x", "x\n", 0644, 0, 0);
	add_file(&l, "d2/y", "y\n", 0644, 0, 0);
	layer_end(&l);
	unpack_ok(lower, &l, COMP_GZIP, NULL);

	layer_begin(&l);
	add_file(&l, ".wh.foo", "", 0644, 0, 0);
	add_dir(&l, "d", 0755);
	add_file(&l, "d/.wh..wh..opq", "", 0644, 0, 0);
	add_file(&l, "d/new", "new\n", 0644, 0, 0);
	add_file(&l, "d2/.wh.x", "", 0644, 0, 0);
	add_dir(&l, ".wh..wh.plnk", 0700);
	add_file(&l, ".wh..wh.plnk/123.456", "aufs", 0644, 0, 0);
	layer_end(&l);
	unpack_ok(upper, &l, COMP_ZSTD, NULL);

	struct stat st = lstat_of(upper, "foo");
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_rdev, makedev(0, 0));
	assert_int_equal(st.st_uid, 0);
	assert_false(exists(upper, ".wh.foo"));
	assert_false(exists(upper, ".wh..wh.plnk"));
	assert_false(exists(upper, "d/.wh..wh..opq"));
	char v[8];
	char *p = ad_asprintf("%s/d", upper);
	assert_int_equal(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)), 1);
	assert_int_equal(v[0], 'y');
	free(p);
	p = ad_asprintf("%s/d2", upper); /* made as a missing parent */
	assert_int_equal(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)), -1);
	free(p);

	char *mnt = mkdest(fx, "merged");
	snprintf(fx->mnt, sizeof(fx->mnt), "%s", mnt);
	char *data = ad_asprintf("lowerdir=%s:%s", upper, lower);
	if (mount("overlay", mnt, "overlay", MS_RDONLY, data) < 0)
		fail_msg("mount overlay %s: %s", data, strerror(errno));
	fx->mounted = true;
	assert_false(exists(mnt, "foo"));
	assert_content(mnt, "keep", "keep\n");
	assert_false(exists(mnt, "d/old"));
	assert_content(mnt, "d/new", "new\n");
	assert_false(exists(mnt, "d2/x"));
	assert_content(mnt, "d2/y", "y\n");
	assert_int_equal(umount2(mnt, 0), 0);
	fx->mounted = false;
	free(data);
	free(mnt);
	free(lower);
	free(upper);
}

/* ---- hostile layers ------------------------------------------------------------------ */

/* Layout: tmp/outer/{victim,inner/dest}; nothing may change in outer. */
struct jail {
	char *outer, *dest, *victim;
	struct stat victim_st;
};

static void jail_make(struct fixture *fx, struct jail *j, const char *name)
{
	j->outer = tpath(fx, "outer");
	char *rel = ad_asprintf("outer/inner/%s", name);
	j->dest = mkdest(fx, rel);
	free(rel);
	j->victim = ad_asprintf("%s/victim", j->outer);
	if (!exists(j->outer, "victim")) {
		ad_error *e = NULL;
		int fd = open(j->outer, O_RDONLY | O_DIRECTORY);
		assert_true(fd >= 0);
		assert_int_equal(ad_write_file_atomic(fd, "victim", "orig", 4, 0644, &e), 0);
		close(fd);
	}
	assert_int_equal(lstat(j->victim, &j->victim_st), 0);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void list_dir(const char *dir, char *out, size_t out_len)
{
	out[0] = '\0';
	_cleanup_closedir_ DIR *d = ad_opendir_at(AT_FDCWD, dir, 0);
	assert_non_null(d);
	struct dirent *de;
	size_t n = 0;
	char names[16][256];
	while (n < 16 && (de = ad_readdir(d)))
		snprintf(names[n++], sizeof(names[0]), "%s", de->d_name);
	qsort(names, n, sizeof(names[0]), cmp_names);
	for (size_t i = 0; i < n; i++) {
		strncat(out, names[i], out_len - strlen(out) - 1);
		strncat(out, " ", out_len - strlen(out) - 1);
	}
}

/* Nothing was created, removed or changed outside the destinations. */
static void jail_check(struct jail *j, const char *inner_listing)
{
	char got[512];
	list_dir(j->outer, got, sizeof(got));
	assert_string_equal(got, "inner victim ");
	char *inner = ad_asprintf("%s/inner", j->outer);
	list_dir(inner, got, sizeof(got));
	assert_string_equal(got, inner_listing);
	free(inner);
	struct stat st;
	assert_int_equal(lstat(j->victim, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_ino, j->victim_st.st_ino);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_mode, j->victim_st.st_mode);
	assert_int_equal(st.st_uid, j->victim_st.st_uid);
	assert_int_equal(st.st_gid, j->victim_st.st_gid);
	assert_int_equal(st.st_mtim.tv_sec, j->victim_st.st_mtim.tv_sec);
	assert_int_equal(st.st_mtim.tv_nsec, j->victim_st.st_mtim.tv_nsec);
	assert_content(j->outer, "victim", "orig");
}

static void jail_free(struct jail *j)
{
	free(j->outer);
	free(j->dest);
	free(j->victim);
}

static void test_escapes_contained(void **state)
{
	struct fixture *fx = *state;
	struct jail j;
	jail_make(fx, &j, "dest");
	struct layer l;
	layer_begin(&l);
	add_file(&l, "../../etc/evil", "e1", 0644, 0, 0);
	add_file(&l, "/abs/evil", "e2", 0644, 0, 0);
	add_file(&l, "a/../../../../up", "e3", 0644, 0, 0);
	add_symlink(&l, "link", "/");
	add_file(&l, "link/evil1", "e4", 0644, 0, 0);
	add_symlink(&l, "link2", "../../");
	add_file(&l, "link2/evil2", "e5", 0644, 0, 0);
	add_file(&l, "x", "x", 0644, 0, 0);
	add_hardlink(&l, "hl", "link/x");
	/* A file entry over a symlink replaces the symlink, never writes
	 * through it. */
	add_symlink(&l, "link3", j.victim);
	add_file(&l, "link3", "new", 0644, 0, 0);
	add_symlink(&l, "link4", j.outer);
	add_dir(&l, "link4", 0755);
	add_symlink(&l, "link5", j.victim);
	add_node(&l, "link5", AE_IFIFO, 0);
	layer_end(&l);
	unpack_ok(j.dest, &l, COMP_GZIP, NULL);

	assert_content(j.dest, "etc/evil", "e1");
	assert_content(j.dest, "abs/evil", "e2");
	assert_content(j.dest, "up", "e3");
	assert_content(j.dest, "evil1", "e4");
	assert_content(j.dest, "evil2", "e5");
	assert_int_equal(lstat_of(j.dest, "hl").st_ino, lstat_of(j.dest, "x").st_ino);
	assert_content(j.dest, "link3", "new");
	assert_true(S_ISREG(lstat_of(j.dest, "link3").st_mode));
	assert_true(S_ISDIR(lstat_of(j.dest, "link4").st_mode));
	assert_true(S_ISFIFO(lstat_of(j.dest, "link5").st_mode));
	jail_check(&j, "dest ");
	jail_free(&j);
}

/* Each layer must fail with AD_E_INVALID naming `entry`, leaving outer alone. */
static void expect_rejected(struct jail *j, struct layer *l, const char *entry,
			    const store_unpack_opts *opts)
{
	struct buf b = compress_bytes(&l->tar, COMP_NONE);
	free(l->tar.p);
	ad_error *err = NULL;
	store_unpack_result res;
	char *needle = ad_asprintf("\"%s\"", entry);
	expect_error(unpack_bytes(j->dest, &b, opts, &res, &err), &err, AD_E_INVALID, needle);
	free(needle);
	free(b.p);
	jail_check(j, "dest ");
}

static void test_escapes_rejected(void **state)
{
	struct fixture *fx = *state;
	struct jail j;
	jail_make(fx, &j, "dest");
	struct stat passwd_before, passwd_after;
	assert_int_equal(stat("/etc/passwd", &passwd_before), 0);
	struct layer l;

	layer_begin(&l);
	add_hardlink(&l, "hp", "../../../etc/passwd");
	layer_end(&l);
	expect_rejected(&j, &l, "hp", NULL);

	layer_begin(&l);
	add_hardlink(&l, "hp2", "/etc/passwd");
	layer_end(&l);
	expect_rejected(&j, &l, "hp2", NULL);

	layer_begin(&l);
	add_symlink(&l, "l6", j.outer);
	add_hardlink(&l, "h6", "l6/victim");
	layer_end(&l);
	expect_rejected(&j, &l, "h6", NULL);

	layer_begin(&l);
	add_symlink(&l, "l4", j.outer);
	add_file(&l, "l4/evil", "e", 0644, 0, 0);
	layer_end(&l);
	expect_rejected(&j, &l, "l4/evil", NULL);

	layer_begin(&l);
	add_symlink(&l, "l5", j.outer);
	add_file(&l, "l5/.wh.victim", "", 0644, 0, 0);
	layer_end(&l);
	expect_rejected(&j, &l, "l5/.wh.victim", NULL);

	layer_begin(&l);
	add_dir(&l, "dir", 0755);
	add_hardlink(&l, "hd", "dir");
	layer_end(&l);
	expect_rejected(&j, &l, "hd", NULL);

	layer_begin(&l);
	add_node(&l, "sda", AE_IFCHR, makedev(8, 0));
	layer_end(&l);
	expect_rejected(&j, &l, "sda", NULL);

	layer_begin(&l);
	struct archive_entry *e = new_entry("nobody-ish", AE_IFREG, 0644, 0, 0);
	archive_entry_set_uid(e, 4294967295LL); /* chown's "unchanged" */
	write_entry(&l, e, NULL, 0);
	layer_end(&l);
	expect_rejected(&j, &l, "nobody-ish", NULL);

	layer_begin(&l);
	add_node(&l, "loop0", AE_IFBLK, makedev(7, 0));
	layer_end(&l);
	expect_rejected(&j, &l, "loop0", NULL);

	assert_int_equal(stat("/etc/passwd", &passwd_after), 0);
	assert_int_equal(passwd_after.st_nlink, passwd_before.st_nlink);
	assert_int_equal(passwd_after.st_ino, passwd_before.st_ino);

	/* Allowed explicitly, devices are made; a 0:0 one is always fine. */
	char *dev_dest = mkdest(fx, "devs");
	layer_begin(&l);
	add_node(&l, "sda", AE_IFCHR, makedev(8, 0));
	add_node(&l, "wh", AE_IFCHR, makedev(0, 0));
	layer_end(&l);
	store_unpack_opts opts = {.allow_devices = true};
	unpack_ok(dev_dest, &l, COMP_NONE, &opts);
	struct stat st = lstat_of(dev_dest, "sda");
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(st.st_rdev, makedev(8, 0));
	assert_int_equal(st.st_mode & 07777, 0640);
	free(dev_dest);
	dev_dest = mkdest(fx, "devs2");
	layer_begin(&l);
	add_node(&l, "wh", AE_IFCHR, makedev(0, 0));
	layer_end(&l);
	unpack_ok(dev_dest, &l, COMP_NONE, NULL);
	assert_true(S_ISCHR(lstat_of(dev_dest, "wh").st_mode));
	free(dev_dest);
	jail_free(&j);
}

/* ---- malformed streams and limits ------------------------------------------------------- */

static void octal(char *field, size_t width, uint64_t v)
{
	snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

static void ustar_header(unsigned char h[512], const char *name, char type, uint64_t size)
{
	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", name);
	octal((char *)h + 100, 8, 0644);
	octal((char *)h + 108, 8, 0);
	octal((char *)h + 116, 8, 0);
	octal((char *)h + 124, 12, size);
	octal((char *)h + 136, 12, 1600000000);
	h[156] = (unsigned char)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

/* A tar whose first entry is preceded by a `type` header of `body_len` bytes
 * (only `have` of them present), written by hand to stay independent of the
 * writer's own limits. */
static void giant_header_tar(struct buf *b, char type, size_t body_len, size_t have)
{
	unsigned char h[512];
	ustar_header(h, type == 'x' || type == 'g' ? "PaxHeaders/f" : "././@LongLink", type,
		     body_len);
	buf_append(b, h, 512);
	size_t start = b->len;
	if (type == 'x' || type == 'g') {
		char prefix[32];
		snprintf(prefix, sizeof(prefix), "%zu path=", body_len);
		buf_append(b, prefix, strlen(prefix));
	}
	char *as = ad_malloc0(have);
	memset(as, 'A', have);
	size_t left = have - (b->len - start);
	buf_append(b, as, left - 1);
	buf_append(b, (type == 'x' || type == 'g') ? "\n" : "", 1);
	free(as);
	if (have < body_len)
		return; /* the stream ends inside the header */
	static const unsigned char zeros[1024];
	buf_append(b, zeros, (512 - b->len % 512) % 512);
	ustar_header(h, "f", type == 'K' ? '2' : '0', 0);
	buf_append(b, h, 512);
	buf_append(b, zeros, 1024);
}

static void test_giant_headers(void **state)
{
	struct fixture *fx = *state;
	char *dest = mkdest(fx, "giant");
	const size_t big = 10 * 1024 * 1024 + 15;
	const struct {
		char type;
		size_t len, have;
	} cases[] = {
	    {'x', big, big},	     /* pax path of 10 MiB */
	    {'g', big, big},	     /* pax global header */
	    {'L', big, big},	     /* GNU long name */
	    {'K', big, big},	     /* GNU long link name */
	    {'x', 1ull << 33, 4096}, /* a claim far beyond the stream */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b = {0};
		giant_header_tar(&b, cases[i].type, cases[i].len, cases[i].have);
		/* In a child, so its peak RSS shows what the unpacker allocated. */
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct rusage before, after;
			getrusage(RUSAGE_SELF, &before);
			ad_error *err = NULL;
			store_unpack_result res;
			int r = unpack_bytes(dest, &b, NULL, &res, &err);
			getrusage(RUSAGE_SELF, &after);
			long grew_kb = after.ru_maxrss - before.ru_maxrss;
			if (r == 0 || (err->code != AD_E_INVALID && err->code != AD_E_RESOURCE) ||
			    grew_kb >= 6 * 1024) {
				fprintf(stderr,
					"giant '%c' header: r=%d err=%s, peak RSS grew %ld KiB\n",
					cases[i].type, r, err ? err->message : "-", grew_kb);
				_exit(1);
			}
			_exit(0);
		}
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		if (WEXITSTATUS(status) != 0)
			fail_msg("giant '%c' header case %zu not rejected cheaply", cases[i].type,
				 i);
		free(b.p);
	}
	free(dest);
}

static void test_bad_streams(void **state)
{
	struct fixture *fx = *state;
	struct buf tar;
	build_tree(&tar);
	struct buf gz = compress_bytes(&tar, COMP_GZIP);
	struct buf zs = compress_bytes(&tar, COMP_ZSTD);
	ad_error *err = NULL;
	store_unpack_result res;
	int n = 0;

	size_t cuts[] = {gz.len / 2, gz.len - 4, 10};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		char *name = ad_asprintf("trunc%d", n++);
		char *dest = mkdest(fx, name);
		free(name);
		struct buf t = {.p = gz.p, .len = cuts[i]};
		int r = unpack_bytes(dest, &t, NULL, &res, &err);
		if (r == 0)
			fail_msg("gzip truncated at %zu of %zu unpacked fine", cuts[i], gz.len);
		expect_error(r, &err, AD_E_INVALID, NULL);
		free(dest);
	}
	{
		char *dest = mkdest(fx, "trunczstd");
		struct buf t = {.p = zs.p, .len = zs.len / 2};
		expect_error(unpack_bytes(dest, &t, NULL, &res, &err), &err, AD_E_INVALID, NULL);
		free(dest);
	}
	{
		/* A plain tar cut mid-file. */
		char *dest = mkdest(fx, "trunctar");
		struct buf t = {.p = tar.p, .len = tar.len / 2};
		expect_error(unpack_bytes(dest, &t, NULL, &res, &err), &err, AD_E_INVALID, NULL);
		free(dest);
	}

	struct buf garbage = {0};
	unsigned x = 12345;
	for (int i = 0; i < 65536; i++) {
		x = x * 1103515245 + 12345;
		unsigned char c = (unsigned char)(x >> 16);
		buf_append(&garbage, &c, 1);
	}
	char *dest = mkdest(fx, "garbage");
	expect_error(unpack_bytes(dest, &garbage, NULL, &res, &err), &err, AD_E_INVALID, NULL);
	memcpy(garbage.p, "\x1f\x8b\x08\x00", 4);
	expect_error(unpack_bytes(dest, &garbage, NULL, &res, &err), &err, AD_E_INVALID, NULL);
	memcpy(garbage.p, "\x28\xb5\x2f\xfd", 4);
	expect_error(unpack_bytes(dest, &garbage, NULL, &res, &err), &err, AD_E_INVALID, NULL);
	struct buf empty = {0};
	expect_error(unpack_bytes(dest, &empty, NULL, &res, &err), &err, AD_E_INVALID, NULL);
	free(garbage.p);
	free(dest);

	/* The read callback's own error comes out unchanged. */
	dest = mkdest(fx, "readfail");
	size_t fail_points[] = {1, 5000, gz.len - 1};
	for (size_t i = 0; i < 3; i++) {
		struct feeder f = {.p = gz.p, .len = gz.len, .fail_after = fail_points[i]};
		expect_error(store_unpack_layer(dest, feed_cb, &f, NULL, &res, &err), &err,
			     AD_E_UNAVAILABLE, "boom");
	}
	free(dest);

	free(gz.p);
	free(zs.p);
	free(tar.p);
}

static void test_limits(void **state)
{
	struct fixture *fx = *state;
	struct buf tar;
	build_tree(&tar);
	ad_error *err = NULL;
	store_unpack_result res;
	char *dest = mkdest(fx, "lim");

	store_unpack_opts opts = {.max_entries = 3};
	expect_error(unpack_bytes(dest, &tar, &opts, &res, &err), &err, AD_E_RESOURCE, "entries");
	opts = (store_unpack_opts){.max_entries = 13};
	if (unpack_bytes(dest, &tar, &opts, &res, &err) < 0)
		fail_msg("%s", err->message);

	opts = (store_unpack_opts){.max_path_len = 14};
	expect_error(unpack_bytes(dest, &tar, &opts, &res, &err), &err, AD_E_INVALID,
		     "deep/a/b/c/file");
	opts = (store_unpack_opts){.max_path_len = 15};
	assert_int_equal(unpack_bytes(dest, &tar, &opts, &res, &err), 0);
	free(tar.p);

	struct layer l;
	layer_begin(&l);
	struct archive_entry *e = new_entry("fat", AE_IFREG, 0644, 0, 0);
	char big[200];
	memset(big, 'v', sizeof(big));
	archive_entry_xattr_add_entry(e, "user.big", big, sizeof(big));
	write_entry(&l, e, NULL, 0);
	layer_end(&l);
	opts = (store_unpack_opts){.max_header_bytes = 150};
	expect_error(unpack_bytes(dest, &l.tar, &opts, &res, &err), &err, AD_E_INVALID, "\"fat\"");
	opts = (store_unpack_opts){.max_header_bytes = 300};
	if (unpack_bytes(dest, &l.tar, &opts, &res, &err) < 0)
		fail_msg("%s", err->message);
	free(l.tar.p);
	free(dest);
}

/* chmod, chown and times must never reach through a symlink (the
 * CVE-2021-32760 class): a directory whose metadata is applied after its
 * children, replaced meanwhile by a symlink to the host; entries with other
 * owners and setuid modes over symlinks to the host. */
static void test_metadata_through_symlinks(void **state)
{
	struct fixture *fx = *state;
	struct jail j;
	jail_make(fx, &j, "meta");
	struct layer l;
	layer_begin(&l);
	write_entry(&l, new_entry("d", AE_IFDIR, 0700, 1234, 1234), NULL, 0);
	add_file(&l, "d/child", "c", 0644, 0, 0);
	add_symlink(&l, "d", j.victim);
	write_entry(&l, new_entry("e", AE_IFDIR, 0777, 4321, 4321), NULL, 0);
	add_symlink(&l, "e", j.outer);
	add_symlink(&l, "s", j.victim);
	add_file(&l, "s", "suid", 04777, 4321, 4321);
	add_symlink(&l, "t", j.victim);
	write_entry(&l, new_entry("t", AE_IFDIR, 01777, 99, 99), NULL, 0);
	add_symlink(&l, "u", j.victim);
	add_hardlink(&l, "v", "u");
	layer_end(&l);
	unpack_ok(j.dest, &l, COMP_GZIP, NULL);
	jail_check(&j, "meta ");
	assert_true(S_ISLNK(lstat_of(j.dest, "d").st_mode));
	assert_true(S_ISLNK(lstat_of(j.dest, "e").st_mode));
	struct stat st = lstat_of(j.dest, "s");
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 04777);
	assert_int_equal(st.st_uid, 4321);
	st = lstat_of(j.dest, "t");
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 01777);
	/* A hard link to a symlink links the symlink, not its target. */
	assert_true(S_ISLNK(lstat_of(j.dest, "v").st_mode));
	jail_free(&j);
}

/* setuid, setgid and sticky bits are the image's to set: kept, inside the
 * layer. */
static void test_setuid_kept(void **state)
{
	struct fixture *fx = *state;
	char *dest = mkdest(fx, "suid");
	struct layer l;
	layer_begin(&l);
	add_dir(&l, "bin", 0755);
	add_file(&l, "bin/su", "su", 04755, 0, 0);
	add_file(&l, "bin/wall", "wall", 02755, 0, 5);
	add_dir(&l, "tmp", 01777);
	layer_end(&l);
	unpack_ok(dest, &l, COMP_NONE, NULL);
	assert_int_equal(lstat_of(dest, "bin/su").st_mode & 07777, 04755);
	assert_int_equal(lstat_of(dest, "bin/wall").st_mode & 07777, 02755);
	assert_int_equal(lstat_of(dest, "bin/wall").st_gid, 5);
	assert_int_equal(lstat_of(dest, "tmp").st_mode & 07777, 01777);
	free(dest);
}

/* A path of 2,000 levels (4,001 bytes) unpacks (fd-relative, no PATH_MAX
 * trouble); one past the 4,096-byte default limit is refused by name. */
static void test_deep_paths(void **state)
{
	struct fixture *fx = *state;
	char *dest = mkdest(fx, "deep");
	size_t levels = 2000;
	char *deep = ad_malloc0(2 * 2100 + 2);
	for (size_t i = 0; i < levels; i++)
		memcpy(deep + 2 * i, "a/", 2);
	deep[2 * levels] = 'f';
	struct layer l;
	layer_begin(&l);
	add_file(&l, deep, "deep", 0644, 0, 0);
	layer_end(&l);
	unpack_ok(dest, &l, COMP_GZIP, NULL);
	assert_content(dest, deep, "deep");

	for (size_t i = 0; i < 2100; i++)
		memcpy(deep + 2 * i, "a/", 2);
	deep[2 * 2100] = 'f';
	layer_begin(&l);
	add_file(&l, deep, "deeper", 0644, 0, 0);
	layer_end(&l);
	ad_error *err = NULL;
	store_unpack_result res;
	char *dest2 = mkdest(fx, "deeper");
	expect_error(unpack_bytes(dest2, &l.tar, NULL, &res, &err), &err, AD_E_INVALID,
		     "a/a/a/a/");
	free(l.tar.p);
	free(deep);
	free(dest2);
	free(dest);
}

/* 32 MiB of zeros in ~32 KiB of gzip: the unpack limit stops it early, with
 * RESOURCE_EXHAUSTED naming the limit. */
static void test_gzip_bomb(void **state)
{
	struct fixture *fx = *state;
	char *dest = mkdest(fx, "bomb");
	struct layer l;
	layer_begin(&l);
	size_t size = 32u << 20;
	struct archive_entry *e = new_entry("zeros", AE_IFREG, 0644, 0, 0);
	archive_entry_set_size(e, (la_int64_t)size);
	assert_int_equal(archive_write_header(l.a, e), ARCHIVE_OK);
	archive_entry_free(e);
	char *zeros = ad_malloc0(1 << 20);
	for (size_t off = 0; off < size; off += 1 << 20)
		assert_int_equal(archive_write_data(l.a, zeros, 1 << 20), 1 << 20);
	free(zeros);
	layer_end(&l);
	struct buf gz = compress_bytes(&l.tar, COMP_GZIP);
	free(l.tar.p);
	assert_true(gz.len < size / 100);
	store_unpack_opts opts = {.max_unpacked_bytes = 4u << 20};
	ad_error *err = NULL;
	store_unpack_result res;
	expect_error(unpack_bytes(dest, &gz, &opts, &res, &err), &err, AD_E_RESOURCE,
		     "unpack limit");
	struct stat st;
	char *p = ad_asprintf("%s/zeros", dest);
	if (stat(p, &st) == 0)
		assert_true(st.st_size <= (off_t)(5u << 20));
	free(p);
	/* Within the limit it unpacks. */
	char *dest2 = mkdest(fx, "bomb2");
	opts.max_unpacked_bytes = 64u << 20;
	if (unpack_bytes(dest2, &gz, &opts, &res, &err) < 0)
		fail_msg("%s", err->message);
	free(gz.p);
	free(dest2);
	free(dest);
}

/* ---- duplicates ---------------------------------------------------------------------------- */

static void test_duplicates(void **state)
{
	struct fixture *fx = *state;
	char *dest = mkdest(fx, "dup");
	struct layer l;
	/* The writer needs a UTF-8 locale to store a non-ASCII name; the
	 * unpacker then runs in the C locale, as the agent does. */
	assert_non_null(setlocale(LC_CTYPE, "C.UTF-8"));
	layer_begin(&l);
	add_dir(&l, "a", 0755);
	add_file(&l, "a/f", "f", 0644, 0, 0);
	add_dir(&l, "a/sub", 0755);
	add_file(&l, "a/sub/g", "g", 0644, 0, 0);
	add_file(&l, "a", "now a file", 0600, 0, 0);
	add_file(&l, "b", "b", 0644, 0, 0);
	add_dir(&l, "b", 0711);
	add_file(&l, "b/in", "in", 0644, 0, 0);
	add_file(&l, "c", "one", 0644, 0, 0);
	add_file(&l, "c", "two", 0644, 0, 0);
	add_symlink(&l, "s", "x");
	add_symlink(&l, "s", "y");
	add_dir(&l, "k", 0700);
	add_file(&l, "k/f", "kf", 0644, 0, 0);
	add_dir(&l, "k", 0755);
	add_file(&l, "self", "self", 0644, 0, 0);
	add_hardlink(&l, "self", "self");
	add_file(&l, "héllo wörld", "utf8", 0644, 0, 0);
	layer_end(&l);
	assert_non_null(setlocale(LC_CTYPE, "C"));
	unpack_ok(dest, &l, COMP_GZIP, NULL);
	assert_content(dest, "a", "now a file");
	assert_int_equal(lstat_of(dest, "a").st_mode & 07777, 0600);
	assert_true(S_ISDIR(lstat_of(dest, "b").st_mode));
	assert_int_equal(lstat_of(dest, "b").st_mode & 07777, 0711);
	assert_content(dest, "b/in", "in");
	assert_content(dest, "c", "two");
	char t[8];
	char *p = ad_asprintf("%s/s", dest);
	assert_int_equal(readlink(p, t, sizeof(t)), 1);
	assert_int_equal(t[0], 'y');
	free(p);
	assert_content(dest, "k/f", "kf");
	assert_int_equal(lstat_of(dest, "k").st_mode & 07777, 0755);
	assert_content(dest, "self", "self");
	assert_content(dest, "héllo wörld", "utf8");
	free(dest);
}

/* ---- sparse files ------------------------------------------------------------------------ */

static void test_sparse(void **state)
{
	struct fixture *fx = *state;
	char *dest = mkdest(fx, "sparse");
	const size_t size = 4 * 1024 * 1024;
	char *data = ad_malloc0(size);
	memset(data, 'a', 8192);
	memset(data + 1024 * 1024, 'b', 4096);
	struct layer l;
	layer_begin(&l);
	struct archive_entry *e = new_entry("holes", AE_IFREG, 0644, 0, 0);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_sparse_add_entry(e, 0, 8192);
	archive_entry_sparse_add_entry(e, 1024 * 1024, 4096);
	write_entry(&l, e, data, size); /* holes included: the writer skips them */
	layer_end(&l);
	assert_true(l.tar.len < 64 * 1024); /* it really was stored sparse */
	unpack_ok(dest, &l, COMP_GZIP, NULL);
	struct stat st = lstat_of(dest, "holes");
	assert_int_equal(st.st_size, size);
	assert_true(st.st_blocks * 512 < 1024 * 1024);
	char *p = ad_asprintf("%s/holes", dest);
	char *got = NULL;
	size_t len = 0;
	ad_error *err = NULL;
	assert_int_equal(ad_read_file(AT_FDCWD, p, size + 1, &got, &len, &err), 0);
	assert_int_equal(len, size);
	assert_memory_equal(got, data, size);
	free(got);
	free(p);
	free(data);
	free(dest);
}

/* ---- layers in parallel (the store unpacks up to N at once) --------------------------------- */

struct par_job {
	char *dest;
	struct buf layer;
	store_unpack_result res;
	ad_error *err;
	int r;
};

static void *par_run(void *arg)
{
	struct par_job *j = arg;
	struct feeder f = {.p = j->layer.p, .len = j->layer.len};
	j->r = store_unpack_layer(j->dest, feed_cb, &f, NULL, &j->res, &j->err);
	return NULL;
}

static void test_parallel(void **state)
{
	struct fixture *fx = *state;
	struct buf tar;
	build_tree(&tar);
	char want[72];
	sha256_hex(tar.p, tar.len, want);
	struct par_job jobs[3];
	pthread_t th[3];
	for (int i = 0; i < 3; i++) {
		char *name = ad_asprintf("par%d", i);
		jobs[i] =
		    (struct par_job){.dest = mkdest(fx, name),
				     .layer = compress_bytes(&tar, i == 1 ? COMP_ZSTD : COMP_GZIP)};
		free(name);
		assert_int_equal(pthread_create(&th[i], NULL, par_run, &jobs[i]), 0);
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < 3; i++) {
		if (jobs[i].r < 0)
			fail_msg("job %d: %s", i, jobs[i].err->message);
		assert_string_equal(jobs[i].res.diff_id, want);
		check_tree(jobs[i].dest);
		free(jobs[i].dest);
		free(jobs[i].layer.p);
	}
	free(tar.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_tree_plain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tree_gzip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tree_zstd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_whiteouts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_escapes_contained, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_escapes_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_giant_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_streams, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_metadata_through_symlinks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setuid_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deep_paths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gzip_bomb, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sparse, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_parallel, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
