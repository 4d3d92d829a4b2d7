/* Container lifecycle: create (a detached shim whose child is the container's
 * init, set up in the cloned child itself: no re-exec of agentd), start,
 * kill, state, wait, delete; the state dir; the shim control socket. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <spawn.h>
#include <termios.h>

#include "rt_internal.h"

/* ---- small helpers -------------------------------------------------------- */

uint64_t rt_proc_start_time(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_free_ char *buf = NULL;
	if (ad_read_file(AT_FDCWD, path, 4096, &buf, NULL, NULL) < 0)
		return 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	int field = 2;
	for (p++; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	return strtoull(p, NULL, 10);
}

int rt_msg_recv(int fd, rt_msg *ret, const char *what, ad_error **err)
{
	for (;;) {
		ssize_t n = recv(fd, ret, sizeof(*ret), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "%s", what);
		if (n == 0)
			return ad_fail(err, AD_E_INTERNAL, "%s: the process exited early", what);
		if ((size_t)n != sizeof(*ret))
			return ad_fail(err, AD_E_INTERNAL, "%s: short message", what);
		ret->text[sizeof(ret->text) - 1] = '\0';
		return 0;
	}
}

int rt_msg_to_error(const rt_msg *m, ad_error **err)
{
	ad_code code = (m->code >= 0 && m->code < _AD_E_MAX) ? (ad_code)m->code : AD_E_INTERNAL;
	return ad_error_make(err, code, 0, "%s", m->text);
}

static bool valid_id(const char *id)
{
	if (!id || !*id || strlen(id) > 128)
		return false;
	for (const char *p = id; *p; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || (p != id && strchr("_.-", *p));
		if (!ok)
			return false;
	}
	return true;
}

/* ---- runtime -------------------------------------------------------------- */

/* A sealed in-memory copy of the shim, exec'd for every container: the
 * containers' processes descend from it, and /proc/PID/exe of any of them
 * then leads to this copy, which nobody can write, not to a host file. */
static int sealed_copy(const char *path, ad_error **err)
{
	_cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return ad_fail_errno(err, AD_E_PRECONDITION, "shim %s", path);
	_cleanup_close_ int mfd = memfd_create("agentd-shim", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "memfd_create");
	ssize_t n;
	while ((n = sendfile(mfd, in, NULL, 1 << 20)) != 0)
		if (n < 0 && errno != EINTR)
			return ad_fail_errno(err, AD_E_INTERNAL, "copy shim %s", path);
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "seal the shim's copy");
	return ad_steal_fd(mfd);
}

int rt_runtime_new(const rt_options *opts, rt_runtime **ret, ad_error **err)
{
	rt_options o = opts ? *opts : (rt_options){0};
	const char *shim = o.shim_path ? o.shim_path : getenv("AGENTD_SHIM");
	if (!shim)
		shim = AGENTD_LIBEXECDIR "/agentd-shim";
	/* The shim is exec'd from a child whose cwd is not ours. */
	_cleanup_free_ char *shim_abs = realpath(shim, NULL);
	if (!shim_abs || access(shim_abs, X_OK) < 0)
		return ad_fail_errno(err, AD_E_PRECONDITION, "shim %s", shim);
	const char *root = o.state_root ? o.state_root : "/run/agentd/containers";
	if (ad_mkdir_p(root, 0700, err) < 0)
		return ad_error_wrap(err, "state dir");
	int shim_fd = sealed_copy(shim_abs, err);
	if (shim_fd < 0)
		return -1;
	rt_runtime *rt = ad_malloc0(sizeof(*rt));
	rt->shim_fd = shim_fd;
	rt->state_root = ad_strdup(root);
	rt->shim_path = ad_steal_ptr(shim_abs);
	rt->cgroup_parent = ad_strdup(o.cgroup_parent ? o.cgroup_parent : "agentd");
	pthread_mutex_init(&rt->seccomp_lock, NULL);
	pthread_mutex_init(&rt->running_lock, NULL);
	*ret = rt;
	return 0;
}

void rt_runtime_free(rt_runtime *rt)
{
	if (!rt)
		return;
	free(rt->state_root);
	free(rt->shim_path);
	close(rt->shim_fd);
	free(rt->cgroup_parent);
	free(rt->seccomp_bpf);
	pthread_mutex_destroy(&rt->seccomp_lock);
	rt_running_free_all(rt);
	pthread_mutex_destroy(&rt->running_lock);
	free(rt);
}

void rt_config_init(rt_config *cfg)
{
	*cfg = (rt_config){0};
	cfg->namespaces[RT_NS_PID].mode = RT_NS_NEW;
	cfg->namespaces[RT_NS_IPC].mode = RT_NS_NEW;
	cfg->namespaces[RT_NS_UTS].mode = RT_NS_NEW;
	cfg->namespaces[RT_NS_MOUNT].mode = RT_NS_NEW;
	cfg->namespaces[RT_NS_NET].mode = RT_NS_NEW;
	cfg->namespaces[RT_NS_CGROUP].mode = RT_NS_NEW;
}

const char *rt_container_id(const rt_container *c)
{
	return c->id;
}

const char *rt_container_state_dir(const rt_container *c)
{
	return c->dir;
}

pid_t rt_container_init_pid(const rt_container *c)
{
	return c->init_pid;
}

void rt_container_free(rt_container *c)
{
	if (!c)
		return;
	if (c->cg)
		cg_free(c->cg);
	free(c->id);
	free(c->dir);
	free(c);
}

/* ---- the state file ------------------------------------------------------- */

static int write_state(rt_container *c, const char *cgroup_parent, ad_error **err)
{
	_cleanup_free_ char *s = ad_asprintf(
	    "init_pid=%d\ninit_start=%llu\nshim_pid=%d\nshim_start=%llu\ncreated_at=%lld\n"
	    "oom_base=%llu\ncgroup_parent=%s\n",
	    (int)c->init_pid, (unsigned long long)c->init_start, (int)c->shim_pid,
	    (unsigned long long)c->shim_start, (long long)c->created_at,
	    (unsigned long long)c->oom_base, cgroup_parent);
	_cleanup_close_ int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", c->dir);
	return ad_write_file_atomic(dfd, RT_FILE_STATE, s, strlen(s), 0600, err);
}

/* Looks `key=` up in a key=value text. */
static const char *kv_get(const char *text, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = text; p && *p;) {
		if (!strncmp(p, key, kl) && p[kl] == '=')
			return p + kl + 1;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

static long long kv_num(const char *text, const char *key)
{
	const char *v = kv_get(text, key);
	return v ? strtoll(v, NULL, 10) : 0;
}

/* ---- control socket ------------------------------------------------------- */

static int shim_connect(rt_container *c, ad_error **err)
{
	_cleanup_close_ int dfd = open(c->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ad_fail_errno(err, AD_E_NOT_FOUND, "container %s: state dir", c->id);
	/* Through the dir fd: a long state root must not overflow sun_path. */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dfd, RT_FILE_CTL);
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "socket");
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return ad_fail_errno(err, AD_E_PRECONDITION, "container %s: shim not reachable",
				     c->id);
	return ad_steal_fd(s);
}

/* Sends one command to the shim; reply holds the text after "ok". */
static int shim_call(rt_container *c, const char *cmd, char *reply, size_t reply_size,
		     ad_error **err)
{
	_cleanup_close_ int s = shim_connect(c, err);
	if (s < 0)
		return -1;
	struct timeval tv = {.tv_sec = 5};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	_cleanup_free_ char *line = ad_asprintf("%s\n", cmd);
	if (send(s, line, strlen(line), MSG_NOSIGNAL) < 0)
		return ad_fail_errno(err, AD_E_UNAVAILABLE, "container %s: shim", c->id);
	char buf[256];
	size_t len = 0;
	ssize_t n;
	while (len < sizeof(buf) - 1 && (n = read(s, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strncmp(buf, "ok", 2) != 0)
		return ad_fail(err, AD_E_PRECONDITION, "container %s: shim: %s", c->id,
			       len ? buf : "no reply");
	if (reply) {
		const char *rest = buf[2] ? buf + 3 : "";
		size_t rl = strlen(rest);
		if (rl >= reply_size)
			rl = reply_size - 1;
		memcpy(reply, rest, rl);
		reply[rl] = '\0';
	}
	return 0;
}

/* ---- create --------------------------------------------------------------- */

static void close_pair(int p[2])
{
	for (int i = 0; i < 2; i++)
		if (p[i] >= 0) {
			close(p[i]);
			p[i] = -1;
		}
}

static int default_devices(cg_manager *cg, const rt_security *sec, ad_error **err)
{
	static const char *const std[] = {"c *:* m",   "b *:* m",   "c 1:3 rwm",   "c 1:5 rwm",
					  "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",   "c 5:0 rwm",
					  "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:229 rwm",
					  NULL};
	if (sec->privileged)
		return cg_devices_allow(cg, "a *:* rwm", err);
	for (size_t i = 0; std[i]; i++)
		if (cg_devices_allow(cg, std[i], err) < 0)
			return -1;
	for (size_t i = 0; sec->device_rules && sec->device_rules[i]; i++)
		if (cg_devices_allow(cg, sec->device_rules[i], err) < 0)
			return -1;
	return 0;
}

static int bind_ctl_socket(const char *dir, ad_error **err)
{
	_cleanup_close_ int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", dir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dfd, RT_FILE_CTL);
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 16) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "control socket in %s", dir);
	return ad_steal_fd(s);
}

int rt_spawn_shim(rt_runtime *rt, const char *mode, const int *src, const int *dst, size_t n,
		  bool detach, pid_t *ret_pid, ad_error **err)
{
	/* Sources above every target first: a dup2 must never clobber a source. */
	enum { HIGH = RT_SHIM_FD_CGROUP + RT_SHIM_MAX_CGROUP_FDS + RT_SHIM_MAX_NS_FDS };
	int high[RT_SHIM_FD_CGROUP + RT_SHIM_MAX_CGROUP_FDS + RT_SHIM_MAX_NS_FDS];
	size_t n_high = 0;
	int r = -1, top = 2;
	bool has[3] = {false, false, false};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	if (n > sizeof(high) / sizeof(high[0])) {
		ad_fail(err, AD_E_INTERNAL, "spawn shim: %zu fds", n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (src[i] < 0 && dst[i] <= 2) {
			posix_spawn_file_actions_addopen(&fa, dst[i], "/dev/null", O_RDWR, 0);
			has[dst[i]] = true;
			continue;
		}
		high[n_high] = fcntl(src[i], F_DUPFD_CLOEXEC, HIGH);
		if (high[n_high] < 0) {
			ad_fail_errno(err, AD_E_INTERNAL, "dup");
			goto out;
		}
		posix_spawn_file_actions_adddup2(&fa, high[n_high++], dst[i]);
		if (dst[i] <= 2)
			has[dst[i]] = true;
		if (dst[i] > top)
			top = dst[i];
	}
	posix_spawn_file_actions_addclosefrom_np(&fa, top + 1);
	/* Stdio not given: /dev/null, but stderr stays agentd's (setup warnings). */
	if (!has[0])
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (!has[1])
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	/* An attached shim (exec) leads a process group of its own, which the
	 * exec'd process and what it starts inherit: rt_exec_sync's timeout kills
	 * that group. */
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, (detach ? POSIX_SPAWN_SETSID : POSIX_SPAWN_SETPGROUP) |
					    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	/* Through agentd's fd table: the file actions close the child's copy. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), rt->shim_fd);
	char *argv[] = {"agentd-shim", (char *)mode, NULL}, *envp[] = {NULL};
	int e = posix_spawn(ret_pid, path, &fa, &attr, argv, envp);
	if (e != 0)
		ad_error_make(err, AD_E_INTERNAL, e, "spawn shim %s", rt->shim_path);
	else
		r = 0;
out:
	for (size_t i = 0; i < n_high; i++)
		close(high[i]);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return r;
}

/* The container's cgroup with its resources (v1: and the default device
 * rules), and the OOM kill count it starts from. */
static int create_cgroup(const char *cg_parent, const rt_config *cfg, rt_container *c,
			 ad_error **err)
{
	if (cg_create(cg_parent, cfg->id, &cfg->resources, &c->cg, err) < 0)
		return ad_error_wrap(err, "cgroup");
	if (strcmp(cg_version_name(), "v1") == 0 && default_devices(c->cg, &cfg->security, err) < 0)
		return ad_error_wrap(err, "cgroup devices");
	if (cg_oom_kill_count(c->cg, &c->oom_base, NULL) < 0)
		c->oom_base = 0;
	return 0;
}

/* What the shim is given at fixed fd numbers (rt_shim_proto.h). */
typedef struct shim_handover {
	int sync[2]; /* [0] ours, [1] the shim's */
	int ctl_fd, state_fd;
	int cgroup_fds[RT_SHIM_MAX_CGROUP_FDS];
	size_t n_cgroup_fds;
} shim_handover;

static void handover_close(shim_handover *h)
{
	close_pair(h->sync);
	if (h->ctl_fd >= 0)
		close(h->ctl_fd);
	if (h->state_fd >= 0)
		close(h->state_fd);
	for (size_t i = 0; i < h->n_cgroup_fds; i++)
		close(h->cgroup_fds[i]);
}

static int handover_open(rt_container *c, shim_handover *h, ad_error **err)
{
	*h = (shim_handover){.sync = {-1, -1}, .ctl_fd = -1, .state_fd = -1};
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, h->sync) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "socketpair");
	/* A setup stuck (say, on a hung mount) must not hang the caller. */
	struct timeval tv = {.tv_sec = 60};
	setsockopt(h->sync[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	h->ctl_fd = bind_ctl_socket(c->dir, err);
	if (h->ctl_fd < 0)
		return -1;
	h->state_fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->state_fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", c->dir);
	return cg_open_procs(c->cg, h->cgroup_fds, RT_SHIM_MAX_CGROUP_FDS, &h->n_cgroup_fds, err);
}

/* Queues the config, then spawns the shim with the handover's fds. */
static int spawn_shim(rt_runtime *rt, const rt_config *cfg, const rt_secplan *plan,
		      rt_container *c, shim_handover *h, int64_t *t_sent, ad_error **err)
{
	_cleanup_free_ char *spec = NULL;
	size_t spec_len = 0;
	rt_spawn_spec sp = {.cfg = *cfg, .plan = *plan, .state_dir = c->dir,
			    .n_cgroup_fds = h->n_cgroup_fds};
	rt_spawn_pack(&sp, &spec, &spec_len);
	/* Queued before the spawn (the socket's buffer is empty and takes one
	 * message of up to its size): the shim finds its config as soon as it
	 * runs, without waiting for this thread to get a CPU again. */
	if (send(h->sync[0], spec, spec_len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)spec_len)
		return ad_fail_errno(err, AD_E_INTERNAL, "send the container config to the shim");
	*t_sent = ad_monotonic_ns();
	int src[3 + RT_SHIM_MAX_CGROUP_FDS] = {h->sync[1], h->ctl_fd, h->state_fd};
	int dst[3 + RT_SHIM_MAX_CGROUP_FDS] = {RT_SHIM_FD_SYNC, RT_SHIM_FD_CTL, RT_SHIM_FD_STATE};
	for (size_t i = 0; i < h->n_cgroup_fds; i++)
		src[3 + i] = h->cgroup_fds[i], dst[3 + i] = RT_SHIM_FD_CGROUP + (int)i;
	/* The spawned process is the shim itself (it does not fork to detach):
	 * our child until we exit, reaped once it has exited (reap_shim). */
	pid_t spawned;
	if (rt_spawn_shim(rt, NULL, src, dst, 3 + h->n_cgroup_fds, true, &spawned, err) < 0)
		return -1;
	c->shim_pid = spawned;
	close(h->sync[1]);
	h->sync[1] = -1;
	return 0;
}

/* The shim's and the init's reports: init pid, init ready, shim ready (or
 * an error). t[0..2] get the time of each. */
static int await_setup(rt_container *c, int sync_fd, int64_t t[3], ad_error **err)
{
	bool init_ready = false, shim_ready = false;
	while (!init_ready || !shim_ready) {
		rt_msg m;
		if (rt_msg_recv(sync_fd, &m, "container setup", err) < 0)
			return -1;
		switch (m.type) {
		case RT_MSG_INIT_PID:
			t[0] = ad_monotonic_ns();
			c->init_pid = m.pid;
			c->init_start = rt_proc_start_time(m.pid);
			break;
		case RT_MSG_READY:
			t[1] = ad_monotonic_ns();
			init_ready = true;
			break;
		case RT_SHIM_MSG_READY:
			t[2] = ad_monotonic_ns();
			shim_ready = true;
			c->shim_start = rt_proc_start_time(c->shim_pid);
			break;
		case RT_MSG_ERROR:
			return rt_msg_to_error(&m, err);
		default:
			return ad_fail(err, AD_E_INTERNAL, "container setup: message %d", m.type);
		}
	}
	return 0;
}

static int do_create(rt_runtime *rt, const rt_config *cfg, rt_container *c, const rt_secplan *plan,
		     ad_error **err)
{
	/* Phase times (ms since t[0]) for the debug log: cgroup, config sent,
	 * spawned, init pid, init ready, shim ready, state written. */
	int64_t t[8] = {ad_monotonic_ns()};
	const char *cg_parent = cfg->cgroup_parent ? cfg->cgroup_parent : rt->cgroup_parent;
	if (create_cgroup(cg_parent, cfg, c, err) < 0)
		return -1;
	t[1] = ad_monotonic_ns();
	if (cfg->log_path) {
		/* Checked here: the shim could only lose the output silently. */
		int lfd = open(cfg->log_path,
			       O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
		if (lfd < 0)
			return ad_fail_errno(err, AD_E_INVALID, "log path %s", cfg->log_path);
		close(lfd);
	}
	shim_handover h;
	int r = -1;
	if (handover_open(c, &h, err) == 0 && spawn_shim(rt, cfg, plan, c, &h, &t[2], err) == 0) {
		t[3] = ad_monotonic_ns();
		if (await_setup(c, h.sync[0], &t[4], err) == 0) {
			c->created_at = ad_now_ns();
			r = write_state(c, cg_parent, err);
		}
	}
	t[7] = ad_monotonic_ns();
	if (r == 0 && ad_log_enabled(AD_LOG_DEBUG))
		ad_debug("container %s created (ms): cgroup %.2f, config sent %.2f, spawned %.2f, "
			 "init %.2f, init ready %.2f, shim ready %.2f, state %.2f",
			 cfg->id, (t[1] - t[0]) / 1e6, (t[2] - t[0]) / 1e6, (t[3] - t[0]) / 1e6,
			 (t[4] - t[0]) / 1e6, (t[5] - t[0]) / 1e6, (t[6] - t[0]) / 1e6,
			 (t[7] - t[0]) / 1e6);
	if (r < 0) {
		/* Both were just created: nobody else can own these pids yet (the
		 * init is the shim's child, and the shim ours, still unreaped). */
		if (c->init_pid > 0)
			kill(c->init_pid, SIGKILL);
		if (c->shim_pid > 0) {
			kill(c->shim_pid, SIGKILL);
			while (waitpid(c->shim_pid, NULL, 0) < 0 && errno == EINTR)
				;
		}
	}
	handover_close(&h);
	return r;
}

/* A state dir without a state file is what a create interrupted by a crash
 * of agentd leaves. With no shim answering in it, it and its cgroup are
 * removed so that the id can be used again (callers serialize creates of
 * one id). Returns 0 when something stale was removed. */
static int remove_stale(rt_runtime *rt, const rt_config *cfg, rt_container *c)
{
	_cleanup_free_ char *st = ad_asprintf("%s/%s", c->dir, RT_FILE_STATE);
	if (access(st, F_OK) == 0 || shim_call(c, "status", NULL, 0, NULL) == 0)
		return -1;
	cg_manager *cg;
	if (cg_open(cfg->cgroup_parent ? cfg->cgroup_parent : rt->cgroup_parent, cfg->id, &cg,
		    NULL) == 0) {
		int r = cg_destroy(cg, NULL);
		cg_free(cg);
		if (r < 0)
			return -1;
	}
	return ad_remove_tree(c->dir, NULL);
}

int rt_create(rt_runtime *rt, const rt_config *cfg, rt_container **ret, ad_error **err)
{
	if (!valid_id(cfg->id))
		return ad_fail(err, AD_E_INVALID, "invalid container id \"%s\"",
			       cfg->id ? cfg->id : "");
	if (!cfg->args || !cfg->args[0])
		return ad_fail(err, AD_E_INVALID, "container %s: no command", cfg->id);
	if (cfg->namespaces[RT_NS_MOUNT].mode != RT_NS_NEW)
		return ad_fail(err, AD_E_INVALID, "container %s: needs a new mount namespace",
			       cfg->id);
	struct stat st;
	if (!cfg->rootfs || stat(cfg->rootfs, &st) < 0 || !S_ISDIR(st.st_mode))
		return ad_fail(err, AD_E_INVALID, "container %s: rootfs %s is not a directory",
			       cfg->id, cfg->rootfs ? cfg->rootfs : "(null)");
	for (int t = 0; t < _RT_NS_MAX; t++) {
		const rt_namespace *ns = &cfg->namespaces[t];
		if (ns->mode != RT_NS_JOIN)
			continue;
		if (!ns->path || stat(ns->path, &st) < 0)
			return ad_fail_errno(err, AD_E_INVALID, "container %s: namespace path %s",
					     cfg->id, ns->path ? ns->path : "(null)");
	}
	for (size_t i = 0; i < cfg->n_mounts; i++) {
		const rt_mount *m = &cfg->mounts[i];
		if ((!m->type || !strcmp(m->type, "bind")) &&
		    (!m->source || stat(m->source, &st) < 0))
			return ad_fail_errno(err, AD_E_INVALID,
					     "container %s: bind mount source %s", cfg->id,
					     m->source ? m->source : "(null)");
	}
	if (cfg->namespaces[RT_NS_USER].mode == RT_NS_NEW && (!cfg->n_uid_maps || !cfg->n_gid_maps))
		return ad_fail(err, AD_E_INVALID,
			       "container %s: a user namespace needs uid and gid maps", cfg->id);

	rt_secplan plan;
	if (rt_secplan_build(rt, cfg, &plan, err) < 0)
		return ad_error_wrap(err, "container %s", cfg->id);

	rt_container *c = ad_malloc0(sizeof(*c));
	c->rt = rt;
	c->id = ad_strdup(cfg->id);
	c->dir = ad_asprintf("%s/%s", rt->state_root, cfg->id);
	int r = -1;
	int mk = mkdir(c->dir, 0700) < 0 ? errno : 0;
	if (mk == EEXIST && remove_stale(rt, cfg, c) == 0)
		mk = mkdir(c->dir, 0700) < 0 ? errno : 0;
	if (mk != 0) {
		if (mk == EEXIST)
			ad_fail(err, AD_E_EXISTS, "container %s already exists", cfg->id);
		else
			ad_error_make(err, AD_E_INTERNAL, mk, "mkdir %s", c->dir);
		rt_secplan_clear(&plan);
		rt_container_free(c);
		return -1;
	}
	r = do_create(rt, cfg, c, &plan, err);
	rt_secplan_clear(&plan);
	if (r < 0) {
		ad_error_wrap(err, "container %s", cfg->id);
		if (c->cg)
			cg_destroy(c->cg, NULL);
		ad_remove_tree(c->dir, NULL);
		rt_container_free(c);
		return -1;
	}
	*ret = c;
	return 0;
}

/* ---- open and list -------------------------------------------------------- */

int rt_open(rt_runtime *rt, const char *id, rt_container **ret, ad_error **err)
{
	if (!valid_id(id))
		return ad_fail(err, AD_E_INVALID, "invalid container id \"%s\"", id ? id : "");
	_cleanup_free_ char *dir = ad_asprintf("%s/%s", rt->state_root, id);
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INTERNAL,
				     "container %s", id);
	_cleanup_free_ char *s = NULL;
	if (ad_read_file(dfd, RT_FILE_STATE, 4096, &s, NULL, err) < 0)
		return ad_error_wrap(err, "container %s", id);
	rt_container *c = ad_malloc0(sizeof(*c));
	c->rt = rt;
	c->id = ad_strdup(id);
	c->dir = ad_steal_ptr(dir);
	c->init_pid = (pid_t)kv_num(s, "init_pid");
	c->init_start = (uint64_t)kv_num(s, "init_start");
	c->shim_pid = (pid_t)kv_num(s, "shim_pid");
	c->shim_start = (uint64_t)kv_num(s, "shim_start");
	c->created_at = kv_num(s, "created_at");
	c->oom_base = (uint64_t)kv_num(s, "oom_base");
	const char *parent = kv_get(s, "cgroup_parent");
	_cleanup_free_ char *p = parent ? ad_strndup(parent, strcspn(parent, "\n")) : NULL;
	if (p && cg_open(p, id, &c->cg, NULL) < 0)
		c->cg = NULL; /* already removed */
	*ret = c;
	return 0;
}

int rt_list(rt_runtime *rt, char ***ret_ids, size_t *ret_n, ad_error **err)
{
	DIR *d = opendir(rt->state_root);
	if (!d)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", rt->state_root);
	char **ids = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!valid_id(de->d_name))
			continue;
		_cleanup_free_ char *f =
		    ad_asprintf("%s/%s/%s", rt->state_root, de->d_name, RT_FILE_STATE);
		if (access(f, F_OK) < 0)
			continue;
		ids = ad_realloc(ids, (n + 1) * sizeof(*ids));
		ids[n++] = ad_strdup(de->d_name);
	}
	closedir(d);
	*ret_ids = ids;
	*ret_n = n;
	return 0;
}

void rt_list_free(char **ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* ---- start, state, wait, kill, delete ------------------------------------- */

int rt_start(rt_container *c, ad_error **err)
{
	char reply[64];
	if (shim_call(c, "start", reply, sizeof(reply), err) < 0)
		return -1;
	c->started_at = strtoll(reply, NULL, 10);
	if (c->started_at <= 0) /* a shim from before the reply carried it */
		c->started_at = ad_now_ns();
	return 0;
}

int64_t rt_container_started_at(const rt_container *c)
{
	return c->started_at;
}

int rt_pidfd_of(pid_t pid, uint64_t start)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -1;
	/* Checked after opening: from here on the fd pins this very process. */
	if (rt_proc_start_time(pid) != start) {
		close(fd);
		return -1;
	}
	return fd;
}

int rt_container_exit_fd(rt_container *c)
{
	return rt_pidfd_of(c->shim_pid, c->shim_start);
}

int rt_container_mnt_ns_fd(rt_container *c)
{
	_cleanup_close_ int pfd = rt_pidfd_of(c->init_pid, c->init_start);
	if (pfd < 0)
		return -1;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)c->init_pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	/* Still alive after the open: the pid was not reused in between, so the
	 * namespace is the init's. */
	struct pollfd p = {.fd = pfd, .events = POLLIN};
	if (fd >= 0 && poll(&p, 1, 0) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* The shim is the child of the process that created the container until
 * that one exits: once the shim has exited (pidfd readable), its creator
 * collects it so that it leaves no zombie. ECHILD (someone else's child: a
 * shim from before a restart, reaped by init) and "still running" are fine. */
static void reap_pidfd(int pidfd)
{
	siginfo_t si;
	while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG) < 0 && errno == EINTR)
		;
}

void rt_reap_exit_fd(int exit_fd)
{
	if (exit_fd >= 0)
		reap_pidfd(exit_fd);
}

static void reap_shim(rt_container *c)
{
	_cleanup_close_ int pfd = rt_pidfd_of(c->shim_pid, c->shim_start);
	if (pfd >= 0)
		reap_pidfd(pfd);
}

static bool read_exit(rt_container *c, int dfd, rt_state *s)
{
	_cleanup_free_ char *ex = NULL;
	if (ad_read_file(dfd, RT_FILE_EXIT, 4096, &ex, NULL, NULL) < 0)
		return false;
	s->status = RT_STATUS_STOPPED;
	s->pid = 0;
	s->exit_code = (int)kv_num(ex, "exit_code");
	s->signal = (int)kv_num(ex, "signal");
	s->started_at = kv_num(ex, "started_at");
	s->finished_at = kv_num(ex, "finished_at");
	uint64_t oom;
	if (c->cg && cg_oom_kill_count(c->cg, &oom, NULL) == 0 && oom > c->oom_base)
		s->oom_killed = true;
	return true;
}

/* The shim is gone without an exit file (it was killed): no one waits for
 * the container's processes nor holds its stdio, so they must not run on
 * outside agentd's view. Everything in the container's cgroup is killed
 * (cgroup.kill on v2; frozen, killed and thawed on v1, so that nothing
 * forks away meanwhile), the init directly too in case its cgroup is gone,
 * and the init's end is awaited (its new parent reaps it). */
static void kill_orphaned(rt_container *c)
{
	_cleanup_close_ int pfd = rt_pidfd_of(c->init_pid, c->init_start);
	if (c->cg) {
		_cleanup_error_ ad_error *e = NULL;
		if (cg_kill_all(c->cg, SIGKILL, &e) < 0)
			ad_warn("container %s: shim died: %s", c->id, e->message);
	}
	if (pfd < 0)
		return;
	syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
	struct pollfd p = {.fd = pfd, .events = POLLIN};
	while (poll(&p, 1, 5000) < 0 && errno == EINTR)
		;
}

int rt_get_state(rt_container *c, rt_state *ret, ad_error **err)
{
	rt_state s = {.created_at = c->created_at};
	_cleanup_close_ int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return ad_fail_errno(err, AD_E_NOT_FOUND, "container %s", c->id);
	if (read_exit(c, dfd, &s)) {
		reap_shim(c);
		*ret = s;
		return 0;
	}
	_cleanup_close_ int pfd = rt_pidfd_of(c->shim_pid, c->shim_start);
	if (pfd >= 0) {
		char reply[128];
		if (shim_call(c, "status", reply, sizeof(reply), NULL) == 0 &&
		    strncmp(reply, "exited", 6) != 0) {
			s.status =
			    strncmp(reply, "running", 7) ? RT_STATUS_CREATED : RT_STATUS_RUNNING;
			s.pid = c->init_pid;
			const char *sp = strchr(reply, ' ');
			s.started_at = sp ? strtoll(sp + 1, NULL, 10) : 0;
			*ret = s;
			return 0;
		}
		/* The init is gone and the shim is finishing (draining output,
		 * writing the exit file): give it the moment it needs. */
		struct pollfd p = {.fd = pfd, .events = POLLIN};
		while (poll(&p, 1, 5000) < 0 && errno == EINTR)
			;
		reap_pidfd(pfd);
	}
	if (read_exit(c, dfd, &s)) {
		*ret = s;
		return 0;
	}
	/* The shim died without a word (killed): the exit is unknown, and
	 * nothing watches the container any more. */
	kill_orphaned(c);
	s.status = RT_STATUS_STOPPED;
	s.exit_code = 255;
	s.shim_died = true;
	s.finished_at = ad_now_ns();
	*ret = s;
	return 0;
}

bool rt_init_alive(rt_container *c)
{
	_cleanup_close_ int dfd = open(c->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || faccessat(dfd, RT_FILE_EXIT, F_OK, 0) == 0)
		return false;
	_cleanup_close_ int pfd = rt_pidfd_of(c->init_pid, c->init_start);
	if (pfd < 0)
		return false;
	/* A live init under a dead shim is no longer a running container
	 * (rt_get_state ends it). */
	_cleanup_close_ int shim_fd = rt_pidfd_of(c->shim_pid, c->shim_start);
	if (shim_fd < 0)
		return false;
	/* Each is readable once it has exited, before anyone reaps it: a
	 * killed shim nobody watches (a pod's infra) stays a zombie. */
	struct pollfd p[2] = {{.fd = pfd, .events = POLLIN}, {.fd = shim_fd, .events = POLLIN}};
	return poll(p, 2, 0) == 0;
}

int rt_wait(rt_container *c, int timeout_ms, rt_state *ret, ad_error **err)
{
	_cleanup_close_ int pfd = rt_pidfd_of(c->shim_pid, c->shim_start);
	if (pfd >= 0) {
		struct pollfd p = {.fd = pfd, .events = POLLIN};
		int64_t deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
		for (;;) {
			int left = -1;
			if (timeout_ms >= 0) {
				int64_t l = (deadline - ad_monotonic_ns()) / 1000000;
				left = l < 0 ? 0 : (int)l;
			}
			int n = poll(&p, 1, left);
			if (n > 0) {
				reap_pidfd(pfd);
				break;
			}
			if (n == 0)
				return ad_fail(err, AD_E_DEADLINE, "container %s: still running",
					       c->id);
			if (errno != EINTR)
				return ad_fail_errno(err, AD_E_INTERNAL, "poll");
		}
	}
	return rt_get_state(c, ret, err);
}

int rt_kill(rt_container *c, int sig, ad_error **err)
{
	_cleanup_close_ int pfd = rt_pidfd_of(c->init_pid, c->init_start);
	if (pfd < 0)
		return ad_fail(err, AD_E_PRECONDITION, "container %s is not running", c->id);
	if (syscall(SYS_pidfd_send_signal, pfd, sig, NULL, 0) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "container %s: signal %d", c->id, sig);
	return 0;
}

/* SigBlk and SigCgt of /proc/PID/status: which signals the process blocks
 * and which it has handlers for. */
static int signal_masks(pid_t pid, uint64_t *ret_blocked, uint64_t *ret_caught)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	_cleanup_free_ char *st = NULL;
	if (ad_read_file(AT_FDCWD, path, 1 << 16, &st, NULL, NULL) < 0)
		return -1;
	const char *b = strstr(st, "\nSigBlk:"), *k = strstr(st, "\nSigCgt:");
	if (!b || !k)
		return -1;
	*ret_blocked = strtoull(b + 8, NULL, 16);
	*ret_caught = strtoull(k + 8, NULL, 16);
	return 0;
}

#define SIGNAL_BIT(sig) (1ULL << ((sig) - 1))

/* Once the init is gone, whatever is left in the container's cgroup goes
 * too: a process the init did not wait for (with the node's or the pod's
 * pid namespace the kernel does not end it with the init) must not run on
 * after agentd reports the container exited. */
static void kill_leftovers(rt_container *c)
{
	_cleanup_error_ ad_error *e = NULL;
	if (c->cg && cg_kill_all(c->cg, SIGKILL, &e) < 0)
		ad_warn("container %s: %s", c->id, e->message);
}

int rt_stop(rt_container *c, int sig, int grace_ms, ad_error **err)
{
	sig = sig ? sig : SIGTERM;
	/* SIGKILL early enough that the container is gone, and the caller (who
	 * waits grace_ms for the reply: kubelet, critest) answered, in time. */
	int margin_ms = grace_ms / 10 < 1000 ? grace_ms / 10 : 1000;
	int64_t kill_at = ad_monotonic_ns() + (int64_t)(grace_ms - margin_ms) * 1000000;
	/* A pid-namespace init drops a signal it neither catches nor blocks, and
	 * one that has only just started has no handler yet: such a signal is
	 * sent again as soon as a handler appears. */
	uint64_t blocked = 0, caught = 0;
	bool dropped = signal_masks(c->init_pid, &blocked, &caught) == 0 &&
		       !((blocked | caught) & SIGNAL_BIT(sig));
	_cleanup_close_ int init_fd = rt_pidfd_of(c->init_pid, c->init_start);
	if (init_fd < 0 || rt_kill(c, sig, NULL) < 0) {
		kill_leftovers(c); /* the init has already exited */
		return 0;
	}
	_cleanup_close_ int pfd = rt_pidfd_of(c->shim_pid, c->shim_start);
	int slice_ms = 2;
	while (pfd >= 0) {
		int64_t left_ms = (kill_at - ad_monotonic_ns()) / 1000000;
		if (left_ms <= 0)
			break;
		/* The init's end first: the shim may still drain output a leftover
		 * process holds open, until that one is killed. */
		struct pollfd p[2] = {{.fd = pfd, .events = POLLIN},
				      {.fd = init_fd, .events = POLLIN}};
		int n = poll(p, init_fd >= 0 ? 2 : 1,
			     dropped && slice_ms < left_ms ? slice_ms : (int)left_ms);
		if (n > 0 && p[1].revents) {
			kill_leftovers(c);
			close(init_fd);
			init_fd = -1;
			dropped = false;
		}
		if (n > 0 && p[0].revents) {
			reap_pidfd(pfd);
			if (init_fd >= 0)
				kill_leftovers(c);
			return 0;
		}
		if (n < 0 && errno != EINTR)
			break;
		if (dropped && signal_masks(c->init_pid, &blocked, &caught) == 0 &&
		    (caught & SIGNAL_BIT(sig))) {
			rt_kill(c, sig, NULL);
			dropped = false;
		}
		if (slice_ms < 100)
			slice_ms *= 2;
	}
	kill_leftovers(c);
	rt_kill(c, SIGKILL, NULL);
	rt_state st;
	return rt_wait(c, 10000, &st, err);
}

int rt_delete(rt_container *c, ad_error **err)
{
	rt_running_forget(c->rt, c->id);
	rt_kill(c, SIGKILL, NULL);
	if (c->cg) {
		if (cg_destroy(c->cg, err) < 0)
			return ad_error_wrap(err, "container %s", c->id);
		cg_free(c->cg);
		c->cg = NULL;
	}
	rt_state st;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_wait(c, 5000, &st, &e) < 0) {
		_cleanup_close_ int pfd = rt_pidfd_of(c->shim_pid, c->shim_start);
		if (pfd >= 0) {
			syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
			struct pollfd p = {.fd = pfd, .events = POLLIN};
			while (poll(&p, 1, 1000) < 0 && errno == EINTR)
				;
			reap_pidfd(pfd);
		}
	}
	if (ad_remove_tree(c->dir, err) < 0)
		return ad_error_wrap(err, "container %s", c->id);
	return 0;
}

/* ---- resources and shim requests ------------------------------------------ */

int rt_get_stats(rt_container *c, rt_stats *ret, ad_error **err)
{
	if (!c->cg)
		return ad_fail(err, AD_E_NOT_FOUND, "container %s: no cgroup", c->id);
	return cg_stats(c->cg, ret, err);
}

int rt_update(rt_container *c, const rt_resources *res, ad_error **err)
{
	if (!c->cg)
		return ad_fail(err, AD_E_NOT_FOUND, "container %s: no cgroup", c->id);
	/* Its kept handle (rt_running_stats) holds the old limits: dropped
	 * before and after, so that no stats read in between keeps them. */
	rt_running_forget(c->rt, c->id);
	int r = cg_update(c->cg, res, err);
	rt_running_forget(c->rt, c->id);
	return r < 0 ? ad_error_wrap(err, "container %s", c->id) : 0;
}

/* One attach request on a new control connection: 1 with *ret_fd on "ok",
 * 0 with the shim's reply in line otherwise. */
static int attach_request(rt_container *c, const char *req, int *ret_fd, char line[128],
			  ad_error **err)
{
	_cleanup_close_ int s = shim_connect(c, err);
	if (s < 0)
		return -1;
	struct timeval tv = {.tv_sec = 5};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (send(s, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
		return ad_fail_errno(err, AD_E_UNAVAILABLE, "container %s: attach", c->id);
	/* Byte by byte up to the newline: what follows is already the stream. */
	size_t n = 0;
	while (n < 127) {
		ssize_t r = read(s, line + n, 1);
		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	if (strcmp(line, "ok") != 0)
		return 0;
	tv.tv_sec = 0;
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	*ret_fd = ad_steal_fd(s);
	return 1;
}

int rt_attach(rt_container *c, bool with_stdin, int *ret_fd, ad_error **err)
{
	char line[128];
	int r = attach_request(c, with_stdin ? "attach\n" : "attach-output\n", ret_fd, line, err);
	/* A shim from before attach-output (it outlives agentd's upgrades): a
	 * plain attach, whose end then counts for stdin_once as it always did. */
	if (r == 0 && !with_stdin && !strcmp(line, "error unknown command"))
		r = attach_request(c, "attach\n", ret_fd, line, err);
	if (r == 0)
		return ad_fail(err, AD_E_PRECONDITION, "container %s: attach: %s", c->id,
			       *line ? line : "no reply");
	return r < 0 ? -1 : 0;
}

int rt_reopen_log(rt_container *c, ad_error **err)
{
	return shim_call(c, "reopen", NULL, 0, err);
}

int rt_resize(rt_container *c, unsigned rows, unsigned cols, ad_error **err)
{
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "resize %u %u", rows, cols);
	return shim_call(c, cmd, NULL, 0, err);
}
