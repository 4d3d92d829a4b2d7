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

/* While we write to a plugin that may exit without reading its stdin,
 * SIGPIPE is blocked, and one raised meanwhile is consumed: it must not
 * kill agentd. */
struct sigpipe_guard {
	sigset_t set, old, pending_before;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigemptyset(&g->set);
	sigaddset(&g->set, SIGPIPE);
	sigpending(&g->pending_before);
	pthread_sigmask(SIG_BLOCK, &g->set, &g->old);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	sigset_t pending;
	sigpending(&pending);
	if (sigismember(&pending, SIGPIPE) && !sigismember(&g->pending_before, SIGPIPE)) {
		struct timespec zero = {0};
		sigtimedwait(&g->set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* A running plugin: the pipes to its stdin, stdout and stderr (ours are
 * in[1], op[0], ep[0]), and what it has read and written so far. */
struct cni_child {
	const char *path;
	pid_t pid; /* -1: none to reap */
	int pidfd;
	int in[2], op[2], ep[2];
	const char *input;
	size_t in_len, in_off;
	struct cni_buf so, se;
	bool exited;
};

static int child_start(struct cni_child *c, char *const envp[], ad_error **err)
{
	if (pipe2(c->in, O_CLOEXEC) < 0 || pipe2(c->op, O_CLOEXEC) < 0 ||
	    pipe2(c->ep, O_CLOEXEC) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "pipe");
	char *argv[] = {(char *)c->path, NULL};
	if (cni_spawn(c->path, argv, envp, c->in[0], c->op[1], c->ep[1], &c->pid, err) < 0) {
		c->pid = -1;
		return -1;
	}
	cni_close_fd(&c->in[0]);
	cni_close_fd(&c->op[1]);
	cni_close_fd(&c->ep[1]);
	c->pidfd = pidfd_open(c->pid, 0);
	if (c->pidfd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "pidfd_open");
	fcntl(c->in[1], F_SETFL, O_NONBLOCK);
	fcntl(c->op[0], F_SETFL, O_NONBLOCK);
	fcntl(c->ep[0], F_SETFL, O_NONBLOCK);
	if (c->in_len == 0)
		cni_close_fd(&c->in[1]);
	return 0;
}

static void child_write_input(struct cni_child *c)
{
	ssize_t w = write(c->in[1], c->input + c->in_off, c->in_len - c->in_off);
	if (w > 0)
		c->in_off += (size_t)w;
	if ((w < 0 && errno != EAGAIN && errno != EINTR) || c->in_off == c->in_len)
		cni_close_fd(&c->in[1]);
}

static void child_exited(struct cni_child *c)
{
	c->exited = true;
	/* Whatever the plugin wrote is in the pipes now; a daemon it left behind
	 * holding them open must not keep us waiting. */
	if (c->op[0] >= 0)
		cni_buf_drain(c->op[0], &c->so);
	if (c->ep[0] >= 0)
		cni_buf_drain(c->ep[0], &c->se);
	cni_close_fd(&c->op[0]);
	cni_close_fd(&c->ep[0]);
}

/* Feeds the plugin its input and collects its output until it has exited
 * and its pipes are drained, or the deadline passes. */
static int child_exchange(struct cni_child *c, int timeout_ms, ad_error **err)
{
	int64_t deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	while (!c->exited || c->op[0] >= 0 || c->ep[0] >= 0) {
		int64_t left_ns = deadline - ad_monotonic_ns();
		if (left_ns <= 0)
			return ad_fail(err, AD_E_DEADLINE, "%s did not finish within %d ms",
				       c->path, timeout_ms);
		struct pollfd pfd[4] = {
		    {.fd = c->in[1], .events = POLLOUT},
		    {.fd = c->op[0], .events = POLLIN},
		    {.fd = c->ep[0], .events = POLLIN},
		    {.fd = c->exited ? -1 : c->pidfd, .events = POLLIN},
		};
		int n = poll(pfd, 4, (int)(left_ns / 1000000) + 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ad_fail_errno(err, AD_E_INTERNAL, "poll");
		}
		if (c->in[1] >= 0 && pfd[0].revents)
			child_write_input(c);
		if (c->op[0] >= 0 && pfd[1].revents && cni_buf_drain(c->op[0], &c->so) != 0)
			cni_close_fd(&c->op[0]);
		if (c->ep[0] >= 0 && pfd[2].revents && cni_buf_drain(c->ep[0], &c->se) != 0)
			cni_close_fd(&c->ep[0]);
		if (!c->exited && pfd[3].revents)
			child_exited(c);
	}
	return 0;
}

/* Kills (with its process group) a plugin not yet reaped, closes the pipes. */
static void child_clear(struct cni_child *c)
{
	if (c->pid > 0) {
		kill(-c->pid, SIGKILL);
		kill(c->pid, SIGKILL);
		int st;
		cni_wait(c->pid, &st);
	}
	if (c->pidfd >= 0)
		close(c->pidfd);
	for (int i = 0; i < 2; i++) {
		cni_close_fd(&c->in[i]);
		cni_close_fd(&c->op[i]);
		cni_close_fd(&c->ep[i]);
	}
	free(c->so.data);
	free(c->se.data);
}

int cni_exec(const char *path, char *const envp[], const char *input, int timeout_ms,
	     struct cni_exec_out *out, ad_error **err)
{
	struct cni_child c = {
	    .path = path,
	    .pid = -1,
	    .pidfd = -1,
	    .in = {-1, -1},
	    .op = {-1, -1},
	    .ep = {-1, -1},
	    .input = input,
	    .in_len = input ? strlen(input) : 0,
	    .so = {.max = CNI_MAX_OUTPUT},
	    .se = {.max = CNI_MAX_STDERR},
	};
	struct sigpipe_guard guard;
	sigpipe_block(&guard);
	int status = 0;
	int r = child_start(&c, envp, err);
	if (r == 0)
		r = child_exchange(&c, timeout_ms, err);
	if (r == 0 && cni_wait(c.pid, &status) < 0)
		r = ad_fail_errno(err, AD_E_INTERNAL, "waitpid %s", path);
	if (r == 0) {
		c.pid = -1;
		if (c.so.truncated)
			r = ad_fail(err, AD_E_RESOURCE, "%s wrote more than %d bytes", path,
				    CNI_MAX_OUTPUT);
	}
	if (r == 0) {
		out->status = status;
		out->stdout_data = ad_steal_ptr(c.so.data);
		out->stderr_data = ad_steal_ptr(c.se.data);
	}
	child_clear(&c);
	sigpipe_restore(&guard);
	return r;
}
