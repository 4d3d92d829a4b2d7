/* Container creation inside agentd-shim (single-threaded, static): clone
 * the container's init into its namespaces, move it into its cgroup,
 * and set it up in the init itself (rt_setup.c). agentd only spawns the
 * shim (posix_spawn from a sealed memfd) and sends the config, so nothing
 * here runs in a forked copy of the multithreaded agentd, and the init is a
 * copy of the shim, never of agentd. */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pty.h>
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

static const int clone_ns[_RT_NS_MAX] = {
    [RT_NS_PID] = CLONE_NEWPID,	      [RT_NS_NET] = CLONE_NEWNET,  [RT_NS_IPC] = CLONE_NEWIPC,
    [RT_NS_UTS] = CLONE_NEWUTS,	      [RT_NS_MOUNT] = CLONE_NEWNS, [RT_NS_USER] = CLONE_NEWUSER,
    [RT_NS_CGROUP] = CLONE_NEWCGROUP,
};

typedef struct init_fds {
	int go[2];    /* shim -> init: uid maps and cgroup are in place */
	int start[2]; /* shim -> init: exec now; EOF back: exec'd (or died) */
	int out[2], err[2], in[2];
	int pty_master, pty_slave;
} init_fds;

static void fail(ad_error *e)
{
	rt_msg_send_error(RT_SHIM_FD_SYNC, e);
	_exit(1);
}

static int write_id_map(pid_t pid, const char *file, const rt_id_map *maps, size_t n,
			ad_error **err)
{
	char buf[4096];
	size_t len = 0;
	for (size_t i = 0; i < n && len < sizeof(buf); i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%u %u %u\n",
					maps[i].container_id, maps[i].host_id, maps[i].size);
	if (len >= sizeof(buf))
		return ad_fail(err, AD_E_INVALID, "%s: too many entries", file);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", path);
	ssize_t w = write(fd, buf, len);
	int e = errno;
	close(fd);
	if (w != (ssize_t)len)
		return ad_error_make(err, AD_E_INVALID, e, "write %s", file);
	return 0;
}

/* The container's user, capabilities and cwd for the calling process (init
 * or exec), before the uid switch what must come before it; returns args[0]
 * resolved inside the container. Fails through the sync socket. */
static char *take_identity(const rt_spawn_spec *s)
{
	const rt_config *cfg = &s->cfg;
	ad_error *e = NULL;
	if (rt_secplan_apply_pre_user(&s->plan, &e) < 0 || rt_switch_user(cfg, &e) < 0 ||
	    rt_secplan_apply_post_user(&s->plan, &e) < 0)
		fail(e);
	const char *cwd = cfg->cwd ? cfg->cwd : "/";
	if (chdir(cwd) < 0) {
		ad_fail_errno(&e, AD_E_INVALID, "cwd %s", cwd);
		fail(e);
	}
	char *exe = NULL;
	if (rt_find_executable(cfg->args[0], cfg->env, &exe, &e) < 0)
		fail(e);
	return exe;
}

static void wait_go(init_fds *x)
{
	char b;
	if (read(x->go[0], &b, 1) != 1)
		_exit(1);
	close(x->go[0]);
}

/* The container's init, in its new namespaces; never returns. */
static void run_init(const rt_spawn_spec *s, init_fds *x)
{
	const rt_config *cfg = &s->cfg;
	ad_error *e = NULL;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Until exec this is a copy of the shim: keep container processes from
	 * opening it through /proc (the CVE-2019-5736 class). */
	prctl(PR_SET_DUMPABLE, 0);
	const int keep[] = {RT_SHIM_FD_SYNC, x->go[0], x->start[0], x->out[1],
			    x->err[1],	     x->in[0], x->pty_slave};
	rt_close_all_but(keep, sizeof(keep) / sizeof(keep[0]));
	/* "go": the shim has put us into the cgroup (and written the id maps of
	 * a new user namespace). Without a new user namespace the mounts that
	 * do not depend on the cgroup are made while the shim waits for that
	 * move (rt_setup_rootfs_base); a new one must be mapped first. */
	bool mapped_first = cfg->namespaces[RT_NS_USER].mode == RT_NS_NEW;
	if (mapped_first)
		wait_go(x);
	umask(0);
	/* With a user namespace, the process that cloned us joined them. */
	bool in_userns = cfg->namespaces[RT_NS_USER].mode != RT_NS_SHARE_HOST;
	if (!in_userns && rt_join_namespaces(cfg, false, &e) < 0)
		fail(e);
	/* In a user namespace we still run as agentd's unmapped uid: become
	 * its root so that what setup creates is owned by someone. */
	if (in_userns && (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)) {
		ad_fail_errno(&e, AD_E_INVALID, "user namespace: uid/gid 0 is not mapped");
		fail(e);
	}
	if (cfg->namespaces[RT_NS_UTS].mode == RT_NS_NEW) {
		const char *h = cfg->hostname ? cfg->hostname : cfg->id;
		size_t hl = strlen(h);
		if (sethostname(h, hl > 63 ? 63 : hl) < 0) {
			ad_fail_errno(&e, AD_E_INVALID, "hostname %s", h);
			fail(e);
		}
	}
	/* A network namespace of its own has just "lo", down: up, as docker's
	 * and podman's "none" network give it. */
	if (cfg->namespaces[RT_NS_NET].mode == RT_NS_NEW) {
		int lr = ad_loopback_up();
		if (lr < 0) {
			errno = -lr;
			ad_fail_errno(&e, AD_E_INTERNAL, "network namespace: bringing lo up");
			fail(e);
		}
	}
	int root = -1;
	if (rt_setup_rootfs_base(cfg, &root, &e) < 0)
		fail(e);
	if (!mapped_first)
		wait_go(x);
	/* Our cgroups as the node names them, read while we still see its
	 * hierarchy: in a user namespace v1 hierarchies cannot be mounted, and
	 * /sys/fs/cgroup binds our own cgroups instead. */
	char *own_cgroups = NULL;
	size_t own_len;
	if (in_userns &&
	    ad_read_file(AT_FDCWD, "/proc/self/cgroup", 65536, &own_cgroups, &own_len, NULL) < 0)
		own_cgroups = NULL;
	if (cfg->namespaces[RT_NS_CGROUP].mode == RT_NS_NEW && unshare(CLONE_NEWCGROUP) < 0) {
		ad_fail_errno(&e, AD_E_INTERNAL, "new cgroup namespace");
		fail(e);
	}
	if (rt_setup_rootfs_finish(cfg, root, own_cgroups, &e) < 0)
		fail(e);
	free(own_cgroups);
	close(root);
	rt_apply_rlimits(cfg);
	char *exe = take_identity(s);
	umask(022);
	if (x->pty_slave >= 0) {
		setsid();
		ioctl(x->pty_slave, TIOCSCTTY, 0);
		dup2(x->pty_slave, 0);
		dup2(x->pty_slave, 1);
		dup2(x->pty_slave, 2);
	} else {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(x->in[0] >= 0 ? x->in[0] : null, 0);
		dup2(x->out[1] >= 0 ? x->out[1] : null, 1);
		dup2(x->err[1] >= 0 ? x->err[1] : null, 2);
	}
	if (rt_msg_send(RT_SHIM_FD_SYNC, RT_MSG_READY, 0) < 0)
		_exit(1);
	close(RT_SHIM_FD_SYNC);
	/* EOF without a byte: the container was deleted before it started. */
	char b;
	if (read(x->start[0], &b, 1) != 1)
		_exit(1);
	if (rt_secplan_apply_final(&s->plan, &e) < 0) {
		if (write(2, e->message, strlen(e->message)) < 0 || write(2, "\n", 1) < 0) {
		}
		_exit(127);
	}
	prctl(PR_SET_PDEATHSIG, 0);
	syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
	static const char *const default_env[] = {"PATH=" RT_DEFAULT_PATH, NULL};
	execve(exe, (char *const *)cfg->args, (char *const *)(cfg->env ? cfg->env : default_env));
	dprintf(2, "exec %s: %s\n", exe, strerror(errno));
	_exit(127);
}

/* Moves fd to `target` (closing what was there); -1 stays -1 and closes target. */
static void place_fd(int fd, int target)
{
	if (fd < 0) {
		close(target);
		return;
	}
	if (fd != target)
		dup2(fd, target);
	fcntl(target, F_SETFD, FD_CLOEXEC);
}

static void read_spec(char **ret_buf, rt_spawn_spec *spec)
{
	ad_error *e = NULL;
	ssize_t n;
	while ((n = recv(RT_SHIM_FD_SYNC, NULL, 0, MSG_PEEK | MSG_TRUNC)) < 0 && errno == EINTR)
		;
	if (n <= 0)
		_exit(1); /* the creator is gone */
	char *buf = ad_malloc0((size_t)n);
	if (recv(RT_SHIM_FD_SYNC, buf, (size_t)n, 0) != n) {
		ad_fail_errno(&e, AD_E_INTERNAL, "shim: receive the container config");
		fail(e);
	}
	if (rt_spawn_unpack(buf, (size_t)n, spec, &e) < 0)
		fail(e);
	*ret_buf = buf;
}

/* The init's side of the handover: the go pipe, the start socket, and its
 * stdio (a pty, or pipes that always pass through the shim: for the log
 * and for attach). Failing here ends the shim. */
static void open_init_fds(const rt_config *cfg, init_fds *x)
{
	ad_error *e = NULL;
	*x = (init_fds){.go = {-1, -1},
			.start = {-1, -1},
			.out = {-1, -1},
			.err = {-1, -1},
			.in = {-1, -1},
			.pty_master = -1,
			.pty_slave = -1};
	/* start: a socket, not a pipe, so that the shim also sees the init's end
	 * close (close-on-exec) once the init has exec'd. */
	if (pipe2(x->go, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x->start) < 0) {
		ad_fail_errno(&e, AD_E_INTERNAL, "pipes");
		fail(e);
	}
	if (cfg->tty) {
		if (openpty(&x->pty_master, &x->pty_slave, NULL, NULL, NULL) < 0) {
			ad_fail_errno(&e, AD_E_INTERNAL, "openpty");
			fail(e);
		}
		fcntl(x->pty_master, F_SETFD, FD_CLOEXEC);
		fcntl(x->pty_slave, F_SETFD, FD_CLOEXEC);
	} else if (pipe2(x->out, O_CLOEXEC) < 0 || pipe2(x->err, O_CLOEXEC) < 0 ||
		   (cfg->open_stdin && pipe2(x->in, O_CLOEXEC) < 0)) {
		ad_fail_errno(&e, AD_E_INTERNAL, "pipes");
		fail(e);
	}
}

static int clone_flags(const rt_config *cfg)
{
	int flags = 0;
	for (int t = 0; t < _RT_NS_MAX; t++)
		if (cfg->namespaces[t].mode == RT_NS_NEW && t != RT_NS_CGROUP)
			flags |= clone_ns[t];
	return flags;
}

/* Fork-like clone (no new stack): the calling process is single-threaded. */
static pid_t clone_fork(unsigned long flags)
{
	return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
}

/* The namespaces a clone creates are owned by the cloning process's user
 * namespace, and those to join must be entered before or after the user
 * namespace by who owns them (rt_setns_ordered). So with a user namespace
 * the shim does not clone the init itself: a helper joins what is to be
 * joined (the pod's user namespace, or for a new one the namespaces owned
 * by the node's), then clones the init as the shim's child (CLONE_PARENT)
 * with the new namespaces owned by the right user namespace, reports its
 * pid and exits. The shim's own namespaces never change. */
static pid_t clone_in_userns(rt_spawn_spec *spec, init_fds *x)
{
	ad_error *e = NULL;
	int pidpipe[2];
	if (pipe2(pidpipe, O_CLOEXEC) < 0) {
		ad_fail_errno(&e, AD_E_INTERNAL, "pipe");
		fail(e);
	}
	pid_t helper = clone_fork(0);
	if (helper < 0) {
		ad_fail_errno(&e, AD_E_INTERNAL, "clone");
		fail(e);
	}
	if (helper == 0) {
		close(pidpipe[0]);
		/* The namespaces are opened before the staging tmpfs may hide
		 * their paths. */
		rt_ns_fds ns;
		if (rt_open_namespaces(&spec->cfg, true, &ns, &e) < 0 ||
		    rt_stage_bind_sources(&spec->cfg, &e) < 0 ||
		    rt_setns_ordered(ns.fds, ns.flags, ns.names, ns.n, &e) < 0)
			fail(e);
		rt_close_namespaces(&ns);
		pid_t pid = clone_fork(CLONE_PARENT | (unsigned long)clone_flags(&spec->cfg));
		if (pid < 0) {
			ad_fail_errno(&e, AD_E_INTERNAL, "clone");
			fail(e);
		}
		if (pid == 0)
			run_init(spec, x);
		_exit(write(pidpipe[1], &pid, sizeof(pid)) == sizeof(pid) ? 0 : 1);
	}
	close(pidpipe[1]);
	pid_t pid = -1;
	ssize_t n;
	while ((n = read(pidpipe[0], &pid, sizeof(pid))) < 0 && errno == EINTR)
		;
	close(pidpipe[0]);
	while (waitpid(helper, NULL, 0) < 0 && errno == EINTR)
		;
	if (n != sizeof(pid))
		_exit(1); /* the helper sent agentd its error */
	return pid;
}

/* Clones the init into its new namespaces (a pid namespace to join is
 * joined here: setns applies it to children only) and closes the init's
 * ends of its fds on our side. */
static pid_t clone_init(rt_spawn_spec *spec, init_fds *x)
{
	const rt_config *cfg = &spec->cfg;
	ad_error *e = NULL;
	pid_t pid;
	/* The init finds its rootfs as its cwd (rt_setup_rootfs_base). */
	if (chdir(cfg->rootfs) < 0) {
		ad_fail_errno(&e, AD_E_INVALID, "rootfs %s", cfg->rootfs);
		fail(e);
	}
	if (cfg->namespaces[RT_NS_USER].mode != RT_NS_SHARE_HOST) {
		pid = clone_in_userns(spec, x);
	} else {
		if (cfg->namespaces[RT_NS_PID].mode == RT_NS_JOIN) {
			int fd = open(cfg->namespaces[RT_NS_PID].path, O_RDONLY | O_CLOEXEC);
			if (fd < 0 || setns(fd, CLONE_NEWPID) < 0) {
				ad_fail_errno(&e, AD_E_INVALID, "join pid namespace %s",
					      cfg->namespaces[RT_NS_PID].path);
				fail(e);
			}
			close(fd);
		}
		pid = clone_fork((unsigned long)clone_flags(cfg));
		if (pid < 0) {
			ad_fail_errno(&e, AD_E_INTERNAL, "clone");
			fail(e);
		}
		if (pid == 0)
			run_init(spec, x);
	}
	close(x->go[0]);
	close(x->start[0]);
	int theirs[] = {x->pty_slave, x->out[1], x->err[1], x->in[0]};
	for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++)
		if (theirs[i] >= 0)
			close(theirs[i]);
	return pid;
}

/* Tells agentd the init's pid, writes its id maps, moves it into its
 * cgroup and lets it go on with its set-up. */
static int release_init(const rt_spawn_spec *spec, pid_t pid, init_fds *x, ad_error **err)
{
	const rt_config *cfg = &spec->cfg;
	if (rt_msg_send(RT_SHIM_FD_SYNC, RT_MSG_INIT_PID, pid) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "tell agentd the init's pid");
	if (cfg->namespaces[RT_NS_USER].mode == RT_NS_NEW &&
	    (write_id_map(pid, "uid_map", cfg->uid_maps, cfg->n_uid_maps, err) < 0 ||
	     write_id_map(pid, "gid_map", cfg->gid_maps, cfg->n_gid_maps, err) < 0))
		return -1;
	char pidbuf[16];
	int pl = snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
	for (size_t i = 0; i < spec->n_cgroup_fds; i++)
		if (write(RT_SHIM_FD_CGROUP + (int)i, pidbuf, (size_t)pl) != pl)
			return ad_fail_errno(err, AD_E_INTERNAL, "cgroup: enter pid %d", (int)pid);
	if (write(x->go[1], "g", 1) != 1)
		return ad_fail_errno(err, AD_E_INTERNAL, "wake the container init");
	close(x->go[1]);
	return 0;
}

/* The shim's fds at their fixed numbers; nothing else stays open, stdio
 * is /dev/null and the cwd is /. */
static void keep_shim_fds(const init_fds *x)
{
	int keep[_RT_SHIM_FD_MAX] = {
	    [RT_SHIM_FD_SYNC] = RT_SHIM_FD_SYNC,
	    [RT_SHIM_FD_CTL] = RT_SHIM_FD_CTL,
	    [RT_SHIM_FD_START] = x->start[1],
	    [RT_SHIM_FD_OUT] = x->pty_master >= 0 ? x->pty_master : x->out[0],
	    [RT_SHIM_FD_ERR] = x->pty_master >= 0 ? -1 : x->err[0],
	    [RT_SHIM_FD_STATE] = RT_SHIM_FD_STATE,
	    [RT_SHIM_FD_IN] = x->pty_master >= 0 ? -1 : x->in[1],
	};
	for (int i = RT_SHIM_FD_SYNC; i < _RT_SHIM_FD_MAX; i++)
		if (keep[i] >= 0)
			keep[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 64);
	for (int i = RT_SHIM_FD_SYNC; i < _RT_SHIM_FD_MAX; i++)
		place_fd(keep[i], i);
	syscall(SYS_close_range, _RT_SHIM_FD_MAX, ~0U, 0);
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	if (chdir("/") < 0) {
	}
}

void rt_shim_setup(rt_spawn_spec *spec, pid_t *ret_init_pid, bool *ret_pty)
{
	char *buf; /* spec points into it: kept for the shim's lifetime */
	read_spec(&buf, spec);
	/* No detaching fork: posix_spawn made us the leader of a new session,
	 * so nothing sent to agentd's process group or session reaches us, and
	 * when agentd exits (even killed) we are adopted by init (or a
	 * subreaper) like any orphan. Until then agentd reaps us. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	init_fds x;
	open_init_fds(&spec->cfg, &x);
	pid_t pid = clone_init(spec, &x);
	ad_error *e = NULL;
	if (release_init(spec, pid, &x, &e) < 0) {
		/* agentd may be gone already: its error, if it listens. */
		rt_msg_send_error(RT_SHIM_FD_SYNC, e);
		kill(pid, SIGKILL);
		_exit(1);
	}
	keep_shim_fds(&x);
	*ret_init_pid = pid;
	*ret_pty = x.pty_master >= 0;
}

/* ---- exec into a running container ---------------------------------------- */

/* The exec'd process: the container's user and security, then args. */
static void exec_child(const rt_spawn_spec *s)
{
	const rt_config *cfg = &s->cfg;
	ad_error *e = NULL;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	rt_apply_rlimits(cfg);
	/* A terminal on stdin (the caller's pty slave) becomes the controlling
	 * one, as for the init with a tty. */
	if (isatty(0)) {
		setsid();
		ioctl(0, TIOCSCTTY, 0);
	}
	char *exe = take_identity(s);
	if (rt_secplan_apply_final(&s->plan, &e) < 0)
		fail(e);
	static const char *const default_env[] = {"PATH=" RT_DEFAULT_PATH, NULL};
	/* The sync socket too: EOF there tells the creator the exec happened. */
	syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
	execve(exe, (char *const *)cfg->args, (char *const *)(cfg->env ? cfg->env : default_env));
	ad_fail_errno(&e, AD_E_INTERNAL, "exec %s", exe);
	fail(e);
}

void rt_shim_exec(void)
{
	ad_error *e = NULL;
	char *buf; /* spec points into it */
	rt_spawn_spec spec;
	/* Dies with its creator, like the process it runs; and until the exec
	 * it is a copy of the shim, which container processes must not open. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_DUMPABLE, 0);
	read_spec(&buf, &spec);
	char pidbuf[16];
	int pl = snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
	for (size_t i = 0; i < spec.n_cgroup_fds; i++)
		if (write(RT_SHIM_FD_CGROUP + (int)i, pidbuf, (size_t)pl) != pl) {
			ad_fail_errno(&e, AD_E_INTERNAL, "cgroup: enter pid %d", (int)getpid());
			fail(e);
		}
	int ns_fds[RT_SHIM_MAX_NS_FDS];
	for (size_t i = 0; i < spec.n_ns_fds; i++)
		ns_fds[i] = RT_SHIM_FD_CGROUP + (int)(spec.n_cgroup_fds + i);
	if (rt_setns_ordered(ns_fds, spec.ns_flags, NULL, spec.n_ns_fds, &e) < 0)
		fail(e);
	syscall(SYS_close_range, RT_SHIM_FD_CGROUP, ~0U, 0);
	/* Blocked before the fork: a SIGTERM must never find us unprepared. */
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	pid_t child = fork();
	if (child < 0) {
		ad_fail_errno(&e, AD_E_INTERNAL, "fork");
		fail(e);
	}
	if (child == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		exec_child(&spec);
	}
	syscall(SYS_close_range, 0, ~0U, 0);
	/* Relay the exit: our creator waits on us, not on the grandchild. SIGTERM
	 * from the creator (an exec timeout) kills the process, which we reap
	 * before exiting: orphaned, its zombie would go to the container's init,
	 * which may never reap it. The creator kills the rest of our process
	 * group (what the process started) once we are gone. */
	sigset_t wake;
	sigemptyset(&wake);
	sigaddset(&wake, SIGCHLD);
	sigaddset(&wake, SIGTERM);
	int st = 0;
	for (;;) {
		pid_t w = waitpid(child, &st, WNOHANG);
		if (w == child || (w < 0 && errno != EINTR))
			break;
		if (w == 0 && sigwaitinfo(&wake, NULL) == SIGTERM) {
			kill(-child, SIGKILL); /* its own group, with a terminal (setsid) */
			kill(child, SIGKILL);
		}
	}
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}
