/* ad_sd_notify / ad_sd_watchdog_usec against a datagram socket this test
 * listens on, as systemd's manager does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base.h"

/* Binds a datagram socket at `name` (a path, or "@x" for abstract). */
static int listen_at(const char *name)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(name);
	memcpy(sa.sun_path, name, len);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	assert_int_equal(bind(fd, (struct sockaddr *)&sa,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)),
			 0);
	return fd;
}

static void expect_datagram(int fd, const char *want)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

static void test_notify_path_and_abstract(void **state)
{
	(void)state;
	char dir[] = "/tmp/notify_test.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof(path), "%s/notify", dir);
	int fd = listen_at(path);
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(ad_sd_notify("READY=1\nSTATUS=serving"), 1);
	expect_datagram(fd, "READY=1\nSTATUS=serving");
	close(fd);
	/* Nobody listening any more: the error, not a crash or a block. */
	assert_int_equal(ad_sd_notify("WATCHDOG=1"), -ECONNREFUSED);
	unlink(path);
	rmdir(dir);

	char abstract[64];
	snprintf(abstract, sizeof(abstract), "@agentd-notify-test-%d", (int)getpid());
	fd = listen_at(abstract);
	setenv("NOTIFY_SOCKET", abstract, 1);
	assert_int_equal(ad_sd_notify("STOPPING=1"), 1);
	expect_datagram(fd, "STOPPING=1");
	close(fd);

	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(ad_sd_notify("READY=1"), -EAFNOSUPPORT);
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(ad_sd_notify("READY=1"), 0);
}

static void test_watchdog_usec(void **state)
{
	(void)state;
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	assert_int_equal(ad_sd_watchdog_usec(), 0);
	setenv("WATCHDOG_USEC", "3000000", 1);
	assert_int_equal(ad_sd_watchdog_usec(), 3000000);
	char pid[32];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(ad_sd_watchdog_usec(), 3000000);
	setenv("WATCHDOG_PID", "1", 1); /* another process's */
	assert_int_equal(ad_sd_watchdog_usec(), 0);
	unsetenv("WATCHDOG_PID");
	setenv("WATCHDOG_USEC", "12x", 1);
	assert_int_equal(ad_sd_watchdog_usec(), 0);
	unsetenv("WATCHDOG_USEC");
}

/* sd_listen_fds semantics: only for this pid, fds from 3 made
 * close-on-exec, the variables removed either way. */
static void test_listen_fds(void **state)
{
	(void)state;
	int pair[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
	/* What systemd hands over: the sockets at 3 and 4, without CLOEXEC. */
	int saved3 = dup(3), saved4 = dup(4);
	assert_int_equal(dup2(pair[0], 3), 3);
	assert_int_equal(dup2(pair[1], 4), 4);
	char pid[32];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "2", 1);
	setenv("LISTEN_FDNAMES", "a:b", 1);
	assert_int_equal(ad_sd_listen_fds(), 2);
	assert_true(fcntl(3, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(4, F_GETFD) & FD_CLOEXEC);
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
	assert_int_equal(ad_sd_listen_fds(), 0); /* gone once taken */
	/* Another process's sockets (a parent's unit): not ours. */
	setenv("LISTEN_PID", "1", 1);
	setenv("LISTEN_FDS", "2", 1);
	assert_int_equal(ad_sd_listen_fds(), 0);
	assert_null(getenv("LISTEN_FDS"));
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "2x", 1);
	assert_int_equal(ad_sd_listen_fds(), 0);
	for (int i = 0; i < 2; i++)
		close(pair[i]);
	if (saved3 >= 0) {
		dup2(saved3, 3);
		close(saved3);
	} else {
		close(3);
	}
	if (saved4 >= 0) {
		dup2(saved4, 4);
		close(saved4);
	} else {
		close(4);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_notify_path_and_abstract),
	    cmocka_unit_test(test_watchdog_usec),
	    cmocka_unit_test(test_listen_fds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
