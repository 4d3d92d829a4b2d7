/* Exec into a running container: `agentd-shim exec` (rt_init.c), spawned
 * with the init's namespace fds and cgroup.procs fds, joins them (a pid
 * namespace applies to its children only); its child takes the container's
 * user and security and execs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "rt_internal.h"

static const struct {
	const char *name;
	int flag;
} exec_ns[] = {
    /* mnt last: it changes our root (the user namespace goes where its
     * ownership says: rt_setns_ordered). */
    {"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
    {"net", CLONE_NEWNET},   {"pid", CLONE_NEWPID}, {"cgroup", CLONE_NEWCGROUP},
    {"mnt", CLONE_NEWNS},
};
#define N_EXEC_NS (sizeof(exec_ns) / sizeof(exec_ns[0]))

int rt_exec(rt_container *c, const rt_config *cfg, const char *const *args, int stdin_fd,
	    int stdout_fd, int stderr_fd, pid_t *ret_pid, ad_error **err)
{
	if (!args || !args[0])
		return ad_fail(err, AD_E_INVALID, "container %s: exec: no command", c->id);
	if (rt_proc_start_time(c->init_pid) != c->init_start || !c->init_start)
		return ad_fail(err, AD_E_PRECONDITION, "container %s is not running", c->id);
	int nsfd[N_EXEC_NS];
	for (size_t i = 0; i < N_EXEC_NS; i++) {
		char path[64], mine[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)c->init_pid, exec_ns[i].name);
		snprintf(mine, sizeof(mine), "/proc/self/ns/%s", exec_ns[i].name);
		struct stat a, b;
		/* Joining our own user namespace fails: skip the ones we share. */
		nsfd[i] = -1;
		if (stat(path, &a) == 0 && stat(mine, &b) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev)
			continue;
		nsfd[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (nsfd[i] < 0) {
			int e = errno;
			for (size_t j = 0; j < i; j++)
				if (nsfd[j] >= 0)
					close(nsfd[j]);
			return ad_error_make(err, AD_E_PRECONDITION, e, "container %s: %s", c->id,
					     path);
		}
	}
	/* The init may have died and its pid been reused while we opened. */
	if (rt_proc_start_time(c->init_pid) != c->init_start) {
		for (size_t j = 0; j < N_EXEC_NS; j++)
			if (nsfd[j] >= 0)
				close(nsfd[j]);
		return ad_fail(err, AD_E_PRECONDITION, "container %s is not running", c->id);
	}
	rt_secplan plan = {0}; /* cleared below even if the build fails */
	int r = rt_secplan_build(c->rt, cfg, &plan, err);
	int sync[2] = {-1, -1};
	int cgroup_fds[RT_SHIM_MAX_CGROUP_FDS];
	size_t n_cgroup_fds = 0;
	if (r == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sync) < 0)
		r = ad_fail_errno(err, AD_E_INTERNAL, "socketpair");
	if (r == 0 && c->cg)
		r = cg_open_procs(c->cg, cgroup_fds, RT_SHIM_MAX_CGROUP_FDS, &n_cgroup_fds, err);
	pid_t pid = -1;
	if (r == 0) {
		/* The helper enters the cgroup and the namespaces (a pid namespace
		 * applies to children only), forks the process and relays its exit. */
		rt_spawn_spec sp = {.cfg = *cfg, .plan = plan, .n_cgroup_fds = n_cgroup_fds};
		sp.cfg.args = args;
		int src[4 + RT_SHIM_MAX_CGROUP_FDS + N_EXEC_NS] = {stdin_fd, stdout_fd, stderr_fd,
								   sync[1]};
		int dst[4 + RT_SHIM_MAX_CGROUP_FDS + N_EXEC_NS] = {0, 1, 2, RT_SHIM_FD_SYNC};
		size_t n = 4;
		for (size_t i = 0; i < n_cgroup_fds; i++, n++)
			src[n] = cgroup_fds[i], dst[n] = RT_SHIM_FD_CGROUP + (int)i;
		for (size_t i = 0; i < N_EXEC_NS; i++) {
			if (nsfd[i] < 0)
				continue;
			src[n] = nsfd[i], dst[n] = RT_SHIM_FD_CGROUP + (int)(n - 4);
			n++;
			sp.ns_flags[sp.n_ns_fds++] = exec_ns[i].flag;
		}
		_cleanup_free_ char *spec = NULL;
		size_t spec_len = 0;
		rt_spawn_pack(&sp, &spec, &spec_len);
		r = rt_spawn_shim(c->rt, "exec", src, dst, n, false, &pid, err);
		if (r == 0 && send(sync[0], spec, spec_len, MSG_NOSIGNAL) != (ssize_t)spec_len) {
			r = ad_fail_errno(err, AD_E_INTERNAL, "send the exec config to the shim");
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
		}
	}
	for (size_t j = 0; j < N_EXEC_NS; j++)
		if (nsfd[j] >= 0)
			close(nsfd[j]);
	for (size_t i = 0; i < n_cgroup_fds; i++)
		close(cgroup_fds[i]);
	if (r == 0) {
		close(sync[1]);
		sync[1] = -1;
		rt_msg m;
		ssize_t n;
		while ((n = recv(sync[0], &m, sizeof(m), 0)) < 0 && errno == EINTR)
			;
		if (n == (ssize_t)sizeof(m) && m.type == RT_MSG_ERROR) {
			m.text[sizeof(m.text) - 1] = '\0';
			rt_msg_to_error(&m, err);
			ad_error_wrap(err, "container %s: exec", c->id);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			r = -1;
		} else {
			*ret_pid = pid;
		}
	}
	if (sync[0] >= 0)
		close(sync[0]);
	if (sync[1] >= 0)
		close(sync[1]);
	rt_secplan_clear(&plan);
	return r;
}

void rt_exec_result_clear(rt_exec_result *r)
{
	free(r->out);
	free(r->err);
	*r = (rt_exec_result){0};
}

int rt_exec_sync(rt_container *c, const rt_config *cfg, const char *const *args, int timeout_ms,
		 size_t max_output, rt_exec_result *ret, ad_error **err)
{
	int o[2], e[2];
	if (pipe2(o, O_CLOEXEC) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "pipe");
	if (pipe2(e, O_CLOEXEC) < 0) {
		close(o[0]);
		close(o[1]);
		return ad_fail_errno(err, AD_E_INTERNAL, "pipe");
	}
	pid_t pid;
	int r = rt_exec(c, cfg, args, -1, o[1], e[1], &pid, err);
	close(o[1]);
	close(e[1]);
	if (r < 0) {
		close(o[0]);
		close(e[0]);
		return -1;
	}
	rt_exec_result res = {0};
	/* Grown as output comes: most execs print a line, and a buffer of the
	 * whole limit (16 MiB by default) each time would stay in the heap. */
	size_t caps[2] = {4096, 4096};
	res.out = ad_malloc0(caps[0] + 1);
	res.err = ad_malloc0(caps[1] + 1);
	int fds[2] = {o[0], e[0]};
	char **bufs[2] = {&res.out, &res.err};
	size_t *lens[2] = {&res.out_len, &res.err_len};
	int64_t deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	/* Read until both pipes close (or the deadline): a daemonized grandchild
	 * holding them open only extends this up to the timeout. */
	while (fds[0] >= 0 || fds[1] >= 0) {
		int left = -1;
		if (timeout_ms > 0) {
			int64_t l = (deadline - ad_monotonic_ns()) / 1000000;
			if (l <= 0) {
				res.timed_out = true;
				break;
			}
			left = (int)l;
		}
		struct pollfd p[2] = {{.fd = fds[0], .events = POLLIN},
				      {.fd = fds[1], .events = POLLIN}};
		if (poll(p, 2, left) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char buf[4096];
			ssize_t n = read(fds[i], buf, sizeof(buf));
			if (n <= 0) {
				close(fds[i]);
				fds[i] = -1;
				continue;
			}
			size_t room = max_output - *lens[i];
			size_t take = (size_t)n < room ? (size_t)n : room;
			if (*lens[i] + take > caps[i]) {
				while (caps[i] < *lens[i] + take)
					caps[i] *= 2;
				if (caps[i] > max_output)
					caps[i] = max_output;
				*bufs[i] = ad_realloc(*bufs[i], caps[i] + 1);
			}
			memcpy(*bufs[i] + *lens[i], buf, take);
			*lens[i] += take;
			(*bufs[i])[*lens[i]] = '\0';
		}
	}
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (res.timed_out) {
		/* The shim kills and reaps the process, then exits; what the process
		 * started is left in the shim's process group, killed while the
		 * unreaped shim still holds its pid (the group's id). */
		kill(pid, SIGTERM);
		siginfo_t si;
		while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
			;
		kill(-pid, SIGKILL);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	res.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	*ret = res;
	return 0;
}
