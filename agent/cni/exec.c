/* Running one plugin binary: config on stdin, result on stdout, bounded output,
 * a deadline, and nothing of ours leaking into the child. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>

#include "cni_private.h"

#define CNI_MAX_STDERR (64 * 1024)

struct cni_buf {
	char *data;
	size_t len, max;
	bool truncated;
};

/* Reads what is available; returns 1 at EOF, 0 when it would block, -1 on error. */
static int cni_buf_drain(int fd, struct cni_buf *b)
{
	for (;;) {
		char chunk[16384];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n == 0)
			return 1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -1;
		}
		size_t take = (size_t)n;
		if (b->len + take > b->max) {
			take = b->max - b->len;
			b->truncated = true;
		}
		if (take > 0) {
			b->data = ad_realloc(b->data, b->len + take + 1);
			memcpy(b->data + b->len, chunk, take);
			b->len += take;
			b->data[b->len] = '\0';
		}
	}
}

static void cni_close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static int cni_spawn(const char *path, char *const argv[], char *const envp[], int in_fd,
		     int out_fd, int err_fd, pid_t *ret_pid, ad_error **err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
	posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
	/* Descriptors opened elsewhere in agentd without O_CLOEXEC stay ours. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);

	sigset_t mask, defaults;
	sigemptyset(&mask);
	sigemptyset(&defaults);
	int defsigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof(defsigs) / sizeof(defsigs[0]); i++)
		sigaddset(&defaults, defsigs[i]);
	posix_spawnattr_setsigmask(&attr, &mask);
	posix_spawnattr_setsigdefault(&attr, &defaults);
	/* Its own process group, so a timeout also kills the iptables & co. it runs. */
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
					    POSIX_SPAWN_SETPGROUP);

	int r = posix_spawn(ret_pid, path, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r != 0)
		return ad_error_make(err, AD_E_UNAVAILABLE, r, "execute %s", path);
	return 0;
}

static int cni_wait(pid_t pid, int *ret_status)
{
	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	*ret_status = status;
	return 0;
}

int cni_exec(const char *path, char *const envp[], const char *input, int timeout_ms,
	     struct cni_exec_out *out, ad_error **err)
{
	int in[2] = {-1, -1}, op[2] = {-1, -1}, ep[2] = {-1, -1};
	int ret = -1;
	pid_t pid = -1;
	int pidfd = -1;
	struct cni_buf so = {.max = CNI_MAX_OUTPUT}, se = {.max = CNI_MAX_STDERR};
	size_t in_len = input ? strlen(input) : 0, in_off = 0;

	/* A plugin that exits without reading its stdin must not SIGPIPE us. */
	sigset_t pipe_set, old_set, pending_before;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending_before);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "pipe");
		goto out;
	}
	char *argv[] = {(char *)path, NULL};
	if (cni_spawn(path, argv, envp, in[0], op[1], ep[1], &pid, err) < 0) {
		pid = -1;
		goto out;
	}
	cni_close_fd(&in[0]);
	cni_close_fd(&op[1]);
	cni_close_fd(&ep[1]);
	pidfd = pidfd_open(pid, 0);
	if (pidfd < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "pidfd_open");
		goto out;
	}
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(op[0], F_SETFL, O_NONBLOCK);
	fcntl(ep[0], F_SETFL, O_NONBLOCK);
	if (in_len == 0)
		cni_close_fd(&in[1]);

	int64_t deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	bool exited = false;
	while (!exited || op[0] >= 0 || ep[0] >= 0) {
		int64_t left_ns = deadline - ad_monotonic_ns();
		if (left_ns <= 0) {
			ad_fail(err, AD_E_DEADLINE, "%s did not finish within %d ms", path,
				timeout_ms);
			goto out;
		}
		struct pollfd pfd[4] = {
		    {.fd = in[1], .events = POLLOUT},
		    {.fd = op[0], .events = POLLIN},
		    {.fd = ep[0], .events = POLLIN},
		    {.fd = exited ? -1 : pidfd, .events = POLLIN},
		};
		int n = poll(pfd, 4, (int)(left_ns / 1000000) + 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ad_fail_errno(err, AD_E_INTERNAL, "poll");
			goto out;
		}
		if (in[1] >= 0 && pfd[0].revents) {
			ssize_t w = write(in[1], input + in_off, in_len - in_off);
			if (w > 0)
				in_off += (size_t)w;
			if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == in_len)
				cni_close_fd(&in[1]);
		}
		for (int i = 1; i <= 2; i++) {
			int *fd = i == 1 ? &op[0] : &ep[0];
			if (*fd >= 0 && pfd[i].revents &&
			    cni_buf_drain(*fd, i == 1 ? &so : &se) != 0)
				cni_close_fd(fd);
		}
		if (!exited && pfd[3].revents) {
			exited = true;
			/* Whatever the plugin wrote is in the pipes now; a daemon it left
			 * behind holding them open must not keep us waiting. */
			if (op[0] >= 0)
				cni_buf_drain(op[0], &so);
			if (ep[0] >= 0)
				cni_buf_drain(ep[0], &se);
			cni_close_fd(&op[0]);
			cni_close_fd(&ep[0]);
		}
	}
	int status;
	if (cni_wait(pid, &status) < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "waitpid %s", path);
		goto out;
	}
	pid = -1;
	if (so.truncated) {
		ad_fail(err, AD_E_RESOURCE, "%s wrote more than %d bytes", path, CNI_MAX_OUTPUT);
		goto out;
	}
	out->status = status;
	out->stdout_data = ad_steal_ptr(so.data);
	out->stderr_data = ad_steal_ptr(se.data);
	ret = 0;
out:
	if (pid > 0) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		int st;
		cni_wait(pid, &st);
	}
	if (pidfd >= 0)
		close(pidfd);
	for (int i = 0; i < 2; i++) {
		cni_close_fd(&in[i]);
		cni_close_fd(&op[i]);
		cni_close_fd(&ep[i]);
	}
	free(so.data);
	free(se.data);
	sigset_t pending;
	sigpending(&pending);
	if (sigismember(&pending, SIGPIPE) && !sigismember(&pending_before, SIGPIPE)) {
		struct timespec zero = {0};
		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old_set, NULL);
	return ret;
}
