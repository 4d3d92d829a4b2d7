/* Unit tests for libadbase: errors, in-root path resolution, atomic
 * writes, directory listing, time formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "base.h"

static char *make_tmpdir(void)
{
	char tmpl[] = "/tmp/adcommon-test-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return ad_strdup(tmpl);
}

static void test_error_wrap(void **state)
{
	(void)state;
	ad_error *err = NULL;
	assert_int_equal(ad_error_make(&err, AD_E_NOT_FOUND, ENOENT, "open %s", "x"), -1);
	ad_error_wrap(&err, "image %s", "busybox");
	assert_int_equal(err->code, AD_E_NOT_FOUND);
	assert_string_equal(err->message, "image busybox: open x: No such file or directory");
	ad_error_free(&err);
	assert_null(err);
	/* A NULL error pointer is allowed: the caller does not want details. */
	assert_int_equal(ad_fail(NULL, AD_E_INVALID, "ignored"), -1);
}

static void test_error_disk_full_is_resource(void **state)
{
	(void)state;
	ad_error *err = NULL;
	ad_error_make(&err, AD_E_INTERNAL, ENOSPC, "write %s", "blob");
	assert_int_equal(err->code, AD_E_RESOURCE);
	assert_string_equal(err->message, "write blob: No space left on device");
	ad_error_make(&err, AD_E_INVALID, EDQUOT, "mkdir x");
	assert_int_equal(err->code, AD_E_RESOURCE);
	ad_error_make(&err, AD_E_INTERNAL, EIO, "read x");
	assert_int_equal(err->code, AD_E_INTERNAL);
	ad_error_free(&err);
}

/* Hits the points `names` lists (one char each: a or b) in a child with
 * AGENTD_FAULT=armed, writing a byte to progress_fd after each it lives
 * through; -1 when the child died of SIGKILL, 0 when it lived. */
static int fault_run(const char *armed, const char *names, int progress_fd)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setenv("AGENTD_FAULT", armed, 1);
		ad_log_set_level(AD_LOG_ERROR);
		for (size_t i = 0; names[i]; i++) {
			ad_fault_point(names[i] == 'a' ? "test.point" : "test.point.b");
			/* Tell the parent how far it got. */
			if (write(progress_fd, "x", 1) != 1)
				_exit(2);
		}
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status)) {
		assert_int_equal(WTERMSIG(status), SIGKILL);
		return -1;
	}
	assert_int_equal(WEXITSTATUS(status), 0);
	return 0;
}

/* The hit (1-based, of any point) at which the child died, or 0. */
static int fault_died_at(const char *armed, const char *names)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	int r = fault_run(armed, names, p[1]);
	close(p[1]);
	char buf[64];
	ssize_t n = read(p[0], buf, sizeof(buf));
	close(p[0]);
	return r == 0 ? 0 : (int)(n < 0 ? 0 : n) + 1;
}

static void test_fault_point_nth_hit(void **state)
{
	(void)state;
	assert_int_equal(fault_died_at("test.point", "aaa"), 1);
	assert_int_equal(fault_died_at("test.point:1", "aaa"), 1);
	assert_int_equal(fault_died_at("test.point:3", "aaaa"), 3);
	/* Hits of other points (a longer name too) do not count. */
	assert_int_equal(fault_died_at("test.point:2", "abbba"), 5);
	assert_int_equal(fault_died_at("test.point.b", "aab"), 3);
	assert_int_equal(fault_died_at("test.point:5", "aaaa"), 0);
	/* A bad count arms nothing. */
	assert_int_equal(fault_died_at("test.point:0", "aa"), 0);
	assert_int_equal(fault_died_at("test.point:x", "aa"), 0);
	assert_int_equal(fault_died_at("test.poin", "aa"), 0);
}

static void test_open_in_root_contains_escapes(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_free_ char *sub = ad_asprintf("%s/root", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	_cleanup_free_ char *outside = ad_asprintf("%s/secret", dir);
	FILE *f = fopen(outside, "w");
	fputs("outside", f);
	fclose(f);
	_cleanup_free_ char *inside = ad_asprintf("%s/root/secret", dir);
	f = fopen(inside, "w");
	fputs("inside", f);
	fclose(f);
	/* Symlinks that point out of the root, absolutely and with "..". */
	_cleanup_free_ char *l1 = ad_asprintf("%s/root/abs", dir);
	assert_int_equal(symlink("/secret", l1), 0);
	_cleanup_free_ char *l2 = ad_asprintf("%s/root/rel", dir);
	assert_int_equal(symlink("../../../secret", l2), 0);

	int root = open(sub, O_RDONLY | O_DIRECTORY);
	assert_true(root >= 0);
	const char *paths[] = {"abs", "rel", "../secret", "/../../secret", "secret"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		ad_error *err = NULL;
		int fd = ad_openat_in_root(root, paths[i], O_RDONLY, 0, &err);
		assert_true(fd >= 0);
		char buf[16] = {0};
		assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
		assert_string_equal(buf, "inside");
		close(fd);
	}
	ad_error *err = NULL;
	assert_int_equal(ad_openat_in_root(root, "missing", O_RDONLY, 0, &err), -1);
	assert_int_equal(err->code, AD_E_NOT_FOUND);
	ad_error_free(&err);
	close(root);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

static void test_atomic_write_and_read(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	ad_error *err = NULL;
	assert_int_equal(ad_write_file_atomic(dfd, "status", "exit=3\n", 7, 0600, &err), 0);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(ad_read_file(dfd, "status", 1024, &data, &len, &err), 0);
	assert_int_equal(len, 7);
	assert_string_equal(data, "exit=3\n");
	free(data);
	/* Both sides of the size limit. */
	assert_int_equal(ad_read_file(dfd, "status", 7, &data, &len, &err), 0);
	free(data);
	assert_int_equal(ad_read_file(dfd, "status", 6, &data, &len, &err), -1);
	assert_int_equal(err->code, AD_E_RESOURCE);
	ad_error_free(&err);
	close(dfd);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
	struct stat st;
	assert_int_equal(stat(dir, &st), -1);
}

static size_t count_entries(int dir_fd, const char *name, int open_flags)
{
	_cleanup_closedir_ DIR *d = ad_opendir_at(dir_fd, name, open_flags);
	assert_non_null(d);
	size_t n = 0;
	for (struct dirent *de; (de = ad_readdir(d));) {
		assert_string_not_equal(de->d_name, ".");
		assert_string_not_equal(de->d_name, "..");
		n++;
	}
	return n;
}

static void test_dir_listing(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(count_entries(dfd, ".", 0), 0);
	assert_int_equal(mkdirat(dfd, "sub", 0755), 0);
	assert_int_equal(ad_write_file_atomic(dfd, ".hidden", "x", 1, 0600, NULL), 0);
	assert_int_equal(symlinkat("sub", dfd, "link"), 0);
	/* Each listing has a read position of its own: the second sees all too. */
	assert_int_equal(count_entries(dfd, ".", 0), 3);
	assert_int_equal(count_entries(dfd, ".", 0), 3);
	assert_int_equal(count_entries(AT_FDCWD, dir, 0), 3);
	assert_int_equal(count_entries(dfd, "link", 0), 0);
	/* O_NOFOLLOW refuses the link (Linux says ENOTDIR with O_DIRECTORY). */
	errno = 0;
	assert_null(ad_opendir_at(dfd, "link", O_NOFOLLOW));
	assert_true(errno == ENOTDIR || errno == ELOOP);
	assert_null(ad_opendir_at(dfd, ".hidden", 0));
	assert_int_equal(errno, ENOTDIR);
	assert_null(ad_opendir_at(dfd, "missing", 0));
	assert_int_equal(errno, ENOENT);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

static void test_rfc3339nano(void **state)
{
	(void)state;
	char buf[40];
	ad_format_rfc3339nano(1700000000123456789LL, buf);
	assert_string_equal(buf, "2023-11-14T22:13:20.123456789Z");
}

static int count_members(char **fields, void *arg)
{
	if (fields[3] && strstr(fields[3], "alice"))
		++*(int *)arg;
	return 0;
}

static void test_id_files(void **state)
{
	(void)state;
	const char *passwd = "root:x:0:0:root:/root:/bin/sh\n"
			     "# not an entry\n"
			     "nopw::1000:100:no password:/home/nopw:/bin/sh\n"
			     "broken\n"
			     "alice:x:1001:1001::/home/alice:/bin/sh";
	long id = 0, gid = 0;
	char *name = NULL;
	/* An empty field is a field: the uid of "nopw::1000:100" is 1000. */
	assert_int_equal(ad_id_file_find(passwd, "nopw", false, &id, &gid, &name), 0);
	assert_int_equal(id, 1000);
	assert_int_equal(gid, 100);
	assert_string_equal(name, "nopw");
	free(name);
	assert_int_equal(ad_id_file_find(passwd, "1001", true, &id, &gid, &name), 0);
	assert_int_equal(id, 1001);
	assert_string_equal(name, "alice");
	free(name);
	assert_int_equal(ad_id_file_find(passwd, "bob", false, &id, NULL, NULL), -1);
	assert_int_equal(ad_id_file_find(passwd, "broken", false, &id, NULL, NULL), -1);
	const char *group = "wheel:x:10:root,alice\nusers::100:\nstaff:x:50:alice\n";
	assert_int_equal(ad_id_file_find(group, "users", false, &id, &gid, NULL), 0);
	assert_int_equal(id, 100);
	assert_int_equal(gid, -1);
	int n = 0;
	assert_int_equal(ad_id_file_each(group, count_members, &n), 0);
	assert_int_equal(n, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_wrap),
		cmocka_unit_test(test_error_disk_full_is_resource),
		cmocka_unit_test(test_fault_point_nth_hit),
		cmocka_unit_test(test_open_in_root_contains_escapes),
		cmocka_unit_test(test_atomic_write_and_read),
		cmocka_unit_test(test_dir_listing),
		cmocka_unit_test(test_rfc3339nano),
		cmocka_unit_test(test_id_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
