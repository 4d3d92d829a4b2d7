/* runtime_test.c — libadruntime against real containers (root needed): a
 * busybox-static rootfs in a private temp dir, cgroups under
 * "agentd-rt-test-<pid>", every container deleted and checked for leftovers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <pty.h>
#include <stdlib.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cgroup.h"
#include "runtime.h"

static char g_tmp[64];
static char g_rootfs[128];
static char g_state[128];
static char g_cgparent[64];
static rt_runtime *g_rt;

#define MiB (1024LL * 1024)

/* Evaluates the call first: its error is read after. */
#define must(call, e, what)                                                                        \
	do {                                                                                       \
		if ((call) < 0)                                                                    \
			fail_msg("%s: %s", (what), (e) ? (e)->message : "?");                      \
	} while (0)

static char *slurp(const char *path)
{
	char *data = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (ad_read_file(AT_FDCWD, path, 4 << 20, &data, NULL, &err) < 0)
		return NULL;
	return data;
}

static const char *const applets[] = {"sh",   "ps",   "hostname", "cat",      "grep",	"sleep",
				      "true", "echo", "ls",	  "unshare",  "mount",	"seq",
				      "head", "tr",   "wc",	  "readlink", "printf", "mkdir",
				      "id",   "dd",   "tty",	  NULL};

static int setup_all(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "runtime_test needs root\n");
		return -1;
	}
	/* Our own mount namespace, receiving from the host's but never sending
	 * to it: a container that gets propagation wrong (the mount propagation
	 * test provokes it) must not touch other programs' mounts. */
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
		fprintf(stderr, "private mount namespace: %s\n", strerror(errno));
		return -1;
	}
	snprintf(g_tmp, sizeof(g_tmp), "/tmp/rt-test-XXXXXX");
	/* searchable: a user-namespaced container's root is not host root */
	if (!mkdtemp(g_tmp) || chmod(g_tmp, 0711) < 0)
		return -1;
	snprintf(g_rootfs, sizeof(g_rootfs), "%s/rootfs", g_tmp);
	snprintf(g_state, sizeof(g_state), "%s/state", g_tmp);
	snprintf(g_cgparent, sizeof(g_cgparent), "agentd-rt-test-%d", (int)getpid());
	static const char *const dirs[] = {"",	   "/bin", "/etc",  "/proc", "/sys",
					   "/dev", "/tmp", "/root", NULL};
	for (size_t i = 0; dirs[i]; i++) {
		char p[256];
		snprintf(p, sizeof(p), "%s%s", g_rootfs, dirs[i]);
		if (mkdir(p, 0755) < 0)
			return -1;
	}
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "cp /bin/busybox %s/bin/busybox", g_rootfs);
	if (system(cmd) != 0)
		return -1;
	for (size_t i = 0; applets[i]; i++) {
		char p[256];
		snprintf(p, sizeof(p), "%s/bin/%s", g_rootfs, applets[i]);
		if (symlink("busybox", p) < 0)
			return -1;
	}
	const char *build = getenv("AGENTD_BUILD_DIR");
	snprintf(cmd, sizeof(cmd), "cp %s/tests/unit/runtime_probe %s/bin/probe",
		 build ? build : ".", g_rootfs);
	if (system(cmd) != 0)
		return -1;
	char shim[512];
	snprintf(shim, sizeof(shim), "%s/runtime/agentd-shim", build ? build : ".");
	char shim_abs[PATH_MAX];
	if (!realpath(shim, shim_abs)) {
		fprintf(stderr, "%s: %s\n", shim, strerror(errno));
		return -1;
	}
	rt_options o = {.state_root = g_state, .shim_path = shim_abs, .cgroup_parent = g_cgparent};
	_cleanup_error_ ad_error *e = NULL;
	if (rt_runtime_new(&o, &g_rt, &e) < 0) {
		fprintf(stderr, "rt_runtime_new: %s\n", e->message);
		return -1;
	}
	return 0;
}

static void unmount_under(const char *dir);

static int teardown_all(void **state)
{
	(void)state;
	/* Anything a failed test left running, then the shared parent cgroup. */
	char **ids = NULL;
	size_t n = 0;
	if (g_rt && rt_list(g_rt, &ids, &n, NULL) == 0) {
		for (size_t i = 0; i < n; i++) {
			rt_container *c;
			if (rt_open(g_rt, ids[i], &c, NULL) == 0) {
				rt_delete(c, NULL);
				rt_container_free(c);
			}
		}
		rt_list_free(ids, n);
	}
	cg_manager *p;
	if (cg_open("", g_cgparent, &p, NULL) == 0) {
		cg_destroy(p, NULL);
		cg_free(p);
	}
	rt_runtime_free(g_rt);
	unmount_under(g_tmp); /* what a failed test left */
	ad_remove_tree(g_tmp, NULL);
	return 0;
}

static void base_config(rt_config *cfg, const char *id, const char *const *args)
{
	rt_config_init(cfg);
	cfg->id = id;
	cfg->rootfs = g_rootfs;
	cfg->args = args;
	static char log[256];
	snprintf(log, sizeof(log), "%s/%s.log", g_tmp, id);
	cfg->log_path = log;
}

/* The content of the CRI log's lines for one stream, "\n"-joined; checks
 * every line's format on the way. */
static char *log_stream(const char *id, const char *stream)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s.log", g_tmp, id);
	_cleanup_free_ char *all = slurp(path);
	char *out = ad_malloc0(all ? strlen(all) + 1 : 1);
	size_t len = 0;
	for (char *line = all, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		/* 2026-11-29T02:46:36.123456789Z stdout F text */
		int y, mo, d, h, mi, s;
		long ns;
		char st[16], tag[4];
		int off = 0;
		if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%9ldZ %15s %3s %n", &y, &mo, &d, &h, &mi,
			   &s, &ns, st, tag, &off) != 9 ||
		    strlen(line) < 30 || line[29] != 'Z' || (strcmp(tag, "P") && strcmp(tag, "F")))
			fail_msg("bad CRI log line: \"%s\"", line);
		if (strcmp(st, stream))
			continue;
		/* the content starts after exactly one space following the tag */
		const char *text = strstr(line + 31, tag) + 2;
		len += (size_t)sprintf(out + len, "%s%s", text, tag[0] == 'F' ? "\n" : "");
	}
	return out;
}

/* Whether the container's log comes to hold `needle` within 10 s. */
static bool log_shows(const char *id, const char *needle)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s.log", g_tmp, id);
	for (int i = 0; i < 1000; i++) {
		_cleanup_free_ char *l = slurp(path);
		if (l && strstr(l, needle))
			return true;
		usleep(10000);
	}
	return false;
}

/* Waits (up to 10 s) until the container's log holds `needle`. */
static void wait_log(const char *id, const char *needle)
{
	if (!log_shows(id, needle))
		fail_msg("%s: no \"%s\" in the log", id, needle);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

static void assert_gone(const char *id, pid_t init_pid)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", g_state, id);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), "/sys/fs/cgroup/memory/%s/%s", g_cgparent, id);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), "/sys/fs/cgroup/pids/%s/%s", g_cgparent, id);
	assert_int_equal(access(p, F_OK), -1);
	if (init_pid > 0)
		assert_true(kill(init_pid, 0) < 0 && errno == ESRCH);
	_cleanup_free_ char *mi = slurp("/proc/self/mountinfo");
	assert_non_null(mi);
	assert_null(strstr(mi, g_rootfs));
}

/* The shim's pid, from the container's state file. */
static pid_t shim_pid_of(const char *id)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s/state", g_state, id);
	_cleanup_free_ char *s = slurp(p);
	assert_non_null(s);
	const char *v = strstr(s, "shim_pid=");
	assert_non_null(v);
	return (pid_t)atoi(v + 9);
}

/* create + start + wait; returns the final state. */
static rt_state run(const rt_config *cfg)
{
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, cfg, &c, &e), e, "create");
	assert_true(rt_init_alive(c)); /* created: the init waits for start */
	pid_t shim = shim_pid_of(cfg->id);
	assert_int_equal(waitpid(shim, NULL, WNOHANG), 0); /* our child, running */
	/* the init's own mount namespace, held across its exit */
	int ns = rt_container_mnt_ns_fd(c);
	struct stat ns_st, self_st;
	assert_true(ns >= 0 && fstat(ns, &ns_st) == 0 && stat("/proc/self/ns/mnt", &self_st) == 0);
	assert_true(ns_st.st_ino != self_st.st_ino);
	must(rt_start(c, &e), e, "start");
	rt_state st;
	must(rt_wait(c, 20000, &st, &e), e, "wait");
	assert_int_equal(st.status, RT_STATUS_STOPPED);
	assert_false(rt_init_alive(c));
	assert_int_equal(rt_container_mnt_ns_fd(c), -1);
	pid_t pid = rt_container_init_pid(c);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	assert_gone(cfg->id, pid); /* also while its namespace is still held */
	close(ns);
	/* The shim is our child (it does not detach by forking) and was
	 * collected once it exited: no zombie left. */
	assert_true(waitpid(shim, NULL, WNOHANG) < 0 && errno == ECHILD);
	return st;
}

static void test_isolation(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c",
	    "ps -o pid,comm; hostname; grep -E '^(Seccomp|CapEff):' /proc/self/status;"
	    "echo timers=$(cat /proc/timer_list | wc -c) keys=$(cat /proc/keys | wc -c)"
	    " fw=$(ls /sys/firmware | wc -l);"
	    "unshare -U true 2>&1; mount -t tmpfs none /tmp 2>&1;"
	    "(echo x > /proc/sys/kernel/domainname) 2>&1; ls -l /dev/ptmx /dev/null; exit 0",
	    NULL};
	rt_config cfg;
	base_config(&cfg, "iso", args);
	cfg.hostname = "box1";
	rt_state st = run(&cfg);
	assert_int_equal(st.exit_code, 0);
	_cleanup_free_ char *out = log_stream("iso", "stdout");
	/* only our processes: the init (sh) as pid 1 and ps */
	if (!strstr(out, "    1 sh\n") || strstr(out, "    3 "))
		fail_msg("ps output: %s", out);
	assert_non_null(strstr(out, "\nbox1\n"));
	assert_non_null(strstr(out, "CapEff:\t00000000a80425fb\nSeccomp:\t2\n"));
	/* masked: empty here, not on the host */
	assert_non_null(strstr(out, "timers=0 keys=0 fw=0\n"));
	/* unshare of a user namespace needs no capability: EPERM is seccomp's */
	assert_non_null(strstr(out, "unshare(0x10000000): Operation not permitted"));
	assert_non_null(strstr(out, "mount: permission denied"));
	assert_non_null(strstr(out, "domainname: Read-only file system"));
	assert_non_null(strstr(out, "/dev/ptmx -> pts/ptmx"));
}

static void test_exit_and_log(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c",
	    "echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; printf tail;"
	    "exit 3",
	    NULL};
	rt_config cfg;
	base_config(&cfg, "logs", args);
	rt_state st = run(&cfg);
	assert_int_equal(st.exit_code, 3);
	assert_int_equal(st.signal, 0);
	assert_true(st.finished_at >= st.started_at && st.started_at > 0);
	_cleanup_free_ char *out = log_stream("logs", "stdout");
	_cleanup_free_ char *err = log_stream("logs", "stderr");
	assert_string_equal(err, "err1\n");
	assert_int_equal(strncmp(out, "out1\naaaa", 9), 0);
	assert_int_equal(strlen(out), 5 + 20000 + 1 + 5);
	assert_string_equal(out + strlen(out) - 5, "tail\n");
	/* the 20000-byte line was split: one partial record of 16 KiB */
	char path[256];
	snprintf(path, sizeof(path), "%s/logs.log", g_tmp);
	_cleanup_free_ char *raw = slurp(path);
	assert_non_null(strstr(raw, " stdout P aaaa"));
}

/* "PID (comm) STATE" of every sleep and sh in the container but the
 * checking shell itself. */
static char *sleeps_in(rt_container *c, const rt_config *cfg)
{
	static const char *const args[] = {
	    "sh", "-c",
	    "for f in /proc/[0-9]*/stat; do read p n s rest < $f 2>/dev/null || continue;"
	    " [ $p = $$ ] && continue;"
	    " case $n in '(sleep)'|'(sh)') echo $p $n $s;; esac; done",
	    NULL};
	rt_exec_result r;
	_cleanup_error_ ad_error *e = NULL;
	must(rt_exec_sync(c, cfg, args, 10000, 65536, &r, &e), e, "exec_sync ps");
	char *out = ad_strdup(r.out);
	rt_exec_result_clear(&r);
	return out;
}

static void test_exec(void **state)
{
	(void)state;
	static const char *const args[] = {"sleep", "100", NULL};
	rt_config cfg;
	base_config(&cfg, "exec", args);
	int fds_before = count_fds();
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	rt_state st;
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.status, RT_STATUS_CREATED);
	must(rt_start(c, &e), e, "start");
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.status, RT_STATUS_RUNNING);
	assert_true(st.pid > 0);

	static const char *const ns_args[] = {
	    "sh", "-c",
	    "for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done;"
	    "grep -E '^(Seccomp|CapEff):' /proc/self/status; echo oops >&2; exit 5",
	    NULL};
	rt_exec_result r;
	must(rt_exec_sync(c, &cfg, ns_args, 10000, 65536, &r, &e), e, "exec_sync");
	assert_int_equal(r.exit_code, 5);
	assert_false(r.timed_out);
	assert_string_equal(r.err, "oops\n");
	char want[1024] = "";
	static const char *const ns[] = {"pid", "net", "ipc", "uts", "mnt", "cgroup"};
	for (size_t i = 0; i < 6; i++) {
		char p[64], link[128] = "";
		snprintf(p, sizeof(p), "/proc/%d/ns/%s", (int)st.pid, ns[i]);
		ssize_t n = readlink(p, link, sizeof(link) - 1);
		assert_true(n > 0);
		strcat(want, link);
		strcat(want, "\n");
	}
	strcat(want, "CapEff:\t00000000a80425fb\nSeccomp:\t2\n");
	assert_string_equal(r.out, want);
	rt_exec_result_clear(&r);

#ifdef RT_SHIM_MAX_RSS_KIB
	{
		/* the shim (the init's parent) stays small */
		char sp[64];
		snprintf(sp, sizeof(sp), "/proc/%d/status", (int)st.pid);
		_cleanup_free_ char *is = slurp(sp);
		pid_t shim = (pid_t)atoi(strstr(is, "PPid:") + 5);
		snprintf(sp, sizeof(sp), "/proc/%d/status", (int)shim);
		_cleanup_free_ char *ss = slurp(sp);
		const char *rss = strstr(ss, "VmRSS:");
		assert_non_null(rss);
		long kib = strtol(rss + 6, NULL, 10);
		if (kib <= 0 || kib > RT_SHIM_MAX_RSS_KIB)
			fail_msg("shim VmRSS %ld KiB", kib);
	}
#endif
	/* the exec'd process is in the container's cgroup */
	static const char *const cg_args[] = {"cat", "/proc/self/cgroup", NULL};
	must(rt_exec_sync(c, &cfg, cg_args, 10000, 65536, &r, &e), e, "exec_sync cgroup");
	assert_int_equal(r.exit_code, 0);
	assert_non_null(strstr(r.out, "memory:/\n")); /* root of its cgroup namespace */
	rt_exec_result_clear(&r);

	/* exec with a terminal: a pty slave as stdio */
	int master, slave;
	assert_int_equal(openpty(&master, &slave, NULL, NULL, NULL), 0);
	static const char *const tty_args[] = {"sh", "-c", "test -t 0 && test -t 1 && echo tty-ok",
					       NULL};
	pid_t tpid;
	must(rt_exec(c, &cfg, tty_args, slave, slave, slave, &tpid, &e), e, "exec tty");
	close(slave);
	char tbuf[256] = "";
	size_t tl = 0;
	ssize_t tn;
	while (tl < sizeof(tbuf) - 1 && (tn = read(master, tbuf + tl, sizeof(tbuf) - 1 - tl)) > 0)
		tl += (size_t)tn; /* EIO once the slave side is gone */
	close(master);
	int tst;
	assert_int_equal(waitpid(tpid, &tst, 0), tpid);
	assert_true(WIFEXITED(tst) && WEXITSTATUS(tst) == 0);
	assert_non_null(strstr(tbuf, "tty-ok"));

	static const char *const slow[] = {"sleep", "30", NULL};
	int64_t t0 = ad_monotonic_ns();
	must(rt_exec_sync(c, &cfg, slow, 300, 1024, &r, &e), e, "exec_sync timeout");
	assert_true(r.timed_out);
	assert_true(ad_monotonic_ns() - t0 < 5000000000LL);
	rt_exec_result_clear(&r);
	/* gone, not even a zombie left to the container's init (sleep, which
	 * never reaps), by the time rt_exec_sync returns */
	_cleanup_free_ char *after = sleeps_in(c, &cfg);
	assert_string_equal(after, "1 (sleep) S\n");
	/* what the timed-out process started dies with it */
	static const char *const family[] = {"sh", "-c", "sleep 31 & sleep 32; echo not-reached",
					     NULL};
	must(rt_exec_sync(c, &cfg, family, 300, 1024, &r, &e), e, "exec_sync timeout family");
	assert_true(r.timed_out);
	assert_string_equal(r.out, "");
	rt_exec_result_clear(&r);
	/* sh was reaped; its children, orphaned to the init, may stay zombies */
	for (int i = 0;; i++) {
		_cleanup_free_ char *left = sleeps_in(c, &cfg);
		assert_int_equal(strncmp(left, "1 (sleep) S\n", 12), 0);
		const char *others = left + 12;
		if (!strstr(others, " S\n") && !strstr(others, " R\n") && !strstr(others, "(sh)"))
			break;
		if (i == 100)
			fail_msg("still running after the timeout:\n%s", left);
		usleep(20000);
	}

	/* a bad security setting for the exec: an error, nothing started */
	rt_config bad = cfg;
	bad.security.seccomp = RT_SECCOMP_CUSTOM;
	bad.security.seccomp_profile = "/nonexistent.json";
	assert_int_equal(rt_exec_sync(c, &bad, slow, 1000, 1024, &r, &e), -1);
	assert_non_null(strstr(e->message, "/nonexistent.json"));
	ad_error_free(&e);

	static const char *const missing[] = {"nosuchcmd", NULL};
	assert_int_equal(rt_exec_sync(c, &cfg, missing, 1000, 1024, &r, &e), -1);
	assert_non_null(strstr(e->message, "executable file not found: nosuchcmd"));
	ad_error_free(&e);

	/* stop: sleep as pid 1 ignores SIGTERM, so the grace period runs out */
	must(rt_stop(c, SIGTERM, 300, &e), e, "stop");
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.status, RT_STATUS_STOPPED);
	assert_int_equal(st.signal, SIGKILL);
	assert_int_equal(st.exit_code, 128 + SIGKILL);
	pid_t pid = rt_container_init_pid(c);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	assert_gone("exec", pid);
	/* no fd of ours stays behind */
	assert_int_equal(count_fds(), fds_before);
}

static void test_memory_oom_and_update(void **state)
{
	(void)state;
	static const char *const args[] = {"sleep", "100", NULL};
	rt_config cfg;
	base_config(&cfg, "mem", args);
	cfg.resources.memory_limit = 32 * MiB;
	cfg.resources.memory_swap = 32 * MiB;
	cfg.resources.cpu_shares = 512;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	char p[256];
	snprintf(p, sizeof(p), "/sys/fs/cgroup/memory/%s/mem/memory.limit_in_bytes", g_cgparent);
	_cleanup_free_ char *before = slurp(p);
	assert_non_null(before);
	assert_int_equal(strtoll(before, NULL, 10), 32 * MiB);
	char shares[256];
	snprintf(shares, sizeof(shares), "/sys/fs/cgroup/cpu/%s/mem/cpu.shares", g_cgparent);
	_cleanup_free_ char *sh = slurp(shares);
	assert_non_null(sh);
	assert_string_equal(sh, "512\n");
	rt_resources res = {.memory_limit = 48 * MiB, .memory_swap = 48 * MiB};
	must(rt_update(c, &res, &e), e, "update");
	/* the container sees its own cgroup, with the new limit, as the root */
	static const char *const cgfs[] = {
	    "sh", "-c",
	    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; ls /sys/fs/cgroup/memory | "
	    "grep -c memory.limit_in_bytes; touch /sys/fs/cgroup/x 2>&1",
	    NULL};
	rt_exec_result cr;
	must(rt_exec_sync(c, &cfg, cgfs, 10000, 4096, &cr, &e), e, "exec cgroupfs");
	if (!strstr(cr.out, "50331648\n1\n") || !strstr(cr.out, "Read-only file system"))
		fail_msg("cgroupfs: %s", cr.out);
	rt_exec_result_clear(&cr);
	_cleanup_free_ char *after = slurp(p);
	assert_int_equal(strtoll(after, NULL, 10), 48 * MiB);
	rt_stats stats;
	must(rt_get_stats(c, &stats, &e), e, "stats");
	assert_int_equal(stats.memory_limit, 48 * MiB);
	assert_true(stats.pids_current >= 1);

	/* a limit below what the container uses cannot be set (shmem cannot be
	 * reclaimed without swap) */
	static const char *const fill[] = {
	    "sh", "-c",
	    "dd if=/dev/zero of=/dev/shm/f bs=1M count=16 2>/dev/null; echo filled; sleep 100",
	    NULL};
	rt_exec_result fr;
	rt_container *c2 = NULL;
	rt_config cfg3;
	base_config(&cfg3, "memfull", fill);
	must(rt_create(g_rt, &cfg3, &c2, &e), e, "create memfull");
	must(rt_start(c2, &e), e, "start memfull");
	char flog[256];
	snprintf(flog, sizeof(flog), "%s/memfull.log", g_tmp);
	for (int i = 0; i < 1000; i++) {
		_cleanup_free_ char *l = slurp(flog);
		if (l && strstr(l, "filled"))
			break;
		usleep(10000);
	}
	_cleanup_free_ char *fl = slurp(flog);
	if (!fl || !strstr(fl, "filled"))
		fail_msg("memfull: %s", fl ? fl : "(no log)");
	rt_stats fst;
	must(rt_get_stats(c2, &fst, &e), e, "stats memfull");
	if (fst.memory_usage < 8 * MiB)
		fail_msg("memfull uses only %llu bytes", (unsigned long long)fst.memory_usage);
	rt_resources tiny = {.memory_limit = 4 * MiB, .memory_swap = 4 * MiB};
	assert_int_equal(rt_update(c2, &tiny, &e), -1);
	assert_int_equal(e->code, AD_E_PRECONDITION);
	ad_error_free(&e);
	(void)fr;
	must(rt_delete(c2, &e), e, "delete memfull");
	rt_container_free(c2);

	/* a string that doubles until the limit stops it */
	static const char *const hog[] = {"sh", "-c", "a=x; while :; do a=$a$a; done", NULL};
	rt_exec_result r;
	must(rt_exec_sync(c, &cfg, hog, 20000, 1024, &r, &e), e, "exec hog");
	assert_int_equal(r.exit_code, 128 + SIGKILL);
	rt_exec_result_clear(&r);
	/* the init was not the victim; now make it one */
	static const char *const hog1[] = {"sh", "-c", "a=x; while :; do a=$a$a; done", NULL};
	rt_config cfg2;
	base_config(&cfg2, "oom", hog1);
	cfg2.resources.memory_limit = 24 * MiB;
	cfg2.resources.memory_swap = 24 * MiB;
	rt_state st = run(&cfg2);
	assert_int_equal(st.signal, SIGKILL);
	assert_true(st.oom_killed);
	rt_state st1;
	must(rt_stop(c, SIGKILL, 1000, &e), e, "stop");
	must(rt_get_state(c, &st1, &e), e, "state");
	assert_true(st1.oom_killed); /* the exec's OOM kill counts for the container */
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
}

static void test_pids_limit(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c", "for i in $(seq 1 40); do sleep 3 & done 2>&1; echo done", NULL};
	rt_config cfg;
	base_config(&cfg, "pids", args);
	cfg.resources.pids_limit = 10;
	rt_state st = run(&cfg);
	(void)st;
	_cleanup_free_ char *out = log_stream("pids", "stdout");
	assert_non_null(strstr(out, "can't fork"));
}

static void test_shim_outlives_creator(void **state)
{
	(void)state;
	static const char *const args[] = {"sh", "-c", "sleep 1; echo bye; exit 7", NULL};
	rt_config cfg;
	base_config(&cfg, "orphan", args);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* The "agentd" that creates the container and dies. */
		rt_container *c = NULL;
		ad_error *e = NULL;
		if (rt_create(g_rt, &cfg, &c, &e) < 0 || rt_start(c, &e) < 0)
			_exit(1);
		raise(SIGKILL); /* like kill -9 of agentd */
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	char **ids;
	size_t n;
	must(rt_list(g_rt, &ids, &n, &e), e, "list");
	bool listed = false;
	for (size_t i = 0; i < n; i++)
		listed |= !strcmp(ids[i], "orphan");
	assert_true(listed);
	rt_list_free(ids, n);
	must(rt_open(g_rt, "orphan", &c, &e), e, "open");
	rt_state s;
	must(rt_get_state(c, &s, &e), e, "state");
	assert_int_equal(s.status, RT_STATUS_RUNNING);
	/* nobody listens while it exits */
	struct timespec ts = {.tv_sec = 1, .tv_nsec = 200000000};
	nanosleep(&ts, NULL);
	rt_container_free(c);
	/* then only the files speak (a loaded machine may need a little longer) */
	for (int i = 0; i < 100; i++) {
		must(rt_open(g_rt, "orphan", &c, &e), e, "reopen");
		must(rt_get_state(c, &s, &e), e, "state");
		if (s.status == RT_STATUS_STOPPED)
			break;
		rt_container_free(c);
		c = NULL;
		usleep(100000);
	}
	assert_non_null(c);
	assert_int_equal(s.status, RT_STATUS_STOPPED);
	assert_int_equal(s.exit_code, 7);
	_cleanup_free_ char *out = log_stream("orphan", "stdout");
	assert_string_equal(out, "bye\n");
	pid_t pid = rt_container_init_pid(c);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	assert_gone("orphan", pid);
}

/* kill -9 of a container's shim: nothing may run on unwatched. The next
 * look at the container (status, the exit watch, reconcile after a restart)
 * kills everything in its cgroup, also a process that left the init's
 * wait (the host pid namespace: it outlives the init there), and reports
 * the exit as unknown with the shim's death. */
/* The pid a container wrote to <rootfs>/tmp/<name>. */
static pid_t read_escapee(const char *name)
{
	char p[320];
	snprintf(p, sizeof(p), "%s/tmp/%s", g_rootfs, name);
	pid_t pid = 0;
	for (int i = 0; i < 200 && pid <= 0; i++) {
		_cleanup_free_ char *pidtext = slurp(p);
		pid = pidtext ? atoi(pidtext) : 0;
		if (pid <= 0)
			usleep(20000);
	}
	assert_true(pid > 0);
	unlink(p);
	return pid;
}

static bool pid_running(pid_t pid)
{
	char stat_path[64], buf[512] = "";
	snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(stat_path, "r");
	if (!f)
		return false;
	bool got = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	const char *rp = got ? strrchr(buf, ')') : NULL;
	return rp && rp[2] != 'Z';
}

/* Gone, or a zombie its new parent has yet to reap: within 4 s. */
static void wait_dead(pid_t pid)
{
	for (int i = 0; pid_running(pid); i++) {
		assert_true(i < 200);
		usleep(20000);
	}
}

static void test_shim_killed(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c", "sleep 1000 & echo $! > /tmp/escapee; exec sleep 1001", NULL};
	rt_config cfg;
	base_config(&cfg, "shimkill", args);
	cfg.namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	pid_t escapee = read_escapee("escapee");
	pid_t init = rt_container_init_pid(c);
	pid_t shim = shim_pid_of("shimkill");
	assert_true(rt_init_alive(c));
	assert_int_equal(kill(shim, SIGKILL), 0);
	assert_int_equal(waitpid(shim, NULL, 0), shim);
	/* The init runs on under init(1), but it is not a running container. */
	assert_int_equal(kill(init, 0), 0);
	assert_false(rt_init_alive(c));
	rt_state st;
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.status, RT_STATUS_STOPPED);
	assert_true(st.shim_died);
	assert_int_equal(st.exit_code, 255);
	assert_true(st.finished_at > 0);
	/* Both gone (or zombies waiting for their new parent's wait). */
	wait_dead(init);
	wait_dead(escapee);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	assert_gone("shimkill", 0);
}

/* With the node's pid namespace, the kernel does not end the init's other
 * processes with it: rt_stop kills what is left in the cgroup, both when
 * the stop signal ended the init and when it had exited on its own. */
static void test_stop_kills_leftovers(void **state)
{
	(void)state;
	static const char *const stopped[] = {
	    "sh", "-c", "sleep 1000 & echo $! > /tmp/left1; exec sleep 1001", NULL};
	static const char *const exited[] = {
	    "sh", "-c", "sleep 1000 & echo $! > /tmp/left2; exit 3", NULL};
	const char *const *args[] = {stopped, exited};
	for (int k = 0; k < 2; k++) {
		char id[32];
		snprintf(id, sizeof(id), "leftover%d", k);
		rt_config cfg;
		base_config(&cfg, id, args[k]);
		cfg.namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
		_cleanup_error_ ad_error *e = NULL;
		rt_container *c = NULL;
		must(rt_create(g_rt, &cfg, &c, &e), e, "create");
		must(rt_start(c, &e), e, "start");
		pid_t left = read_escapee(k ? "left2" : "left1");
		rt_state st;
		if (k == 1) {
			must(rt_wait(c, 10000, &st, &e), e, "wait");
			assert_int_equal(st.exit_code, 3);
			/* Exited, yet its child runs until someone stops it. */
			assert_true(pid_running(left));
		}
		int64_t t0 = ad_monotonic_ns();
		must(rt_stop(c, SIGTERM, 10000, &e), e, "stop");
		/* Not at the deadline: right after the init's end. */
		assert_true(ad_monotonic_ns() - t0 < 5000000000LL);
		wait_dead(left);
		must(rt_get_state(c, &st, &e), e, "state");
		assert_int_equal(st.status, RT_STATUS_STOPPED);
		must(rt_delete(c, &e), e, "delete");
		rt_container_free(c);
		assert_gone(id, 0);
	}
}

static void test_tty(void **state)
{
	(void)state;
	static const char *const args[] = {"sh", "-c", "test -t 1 && echo is-a-tty", NULL};
	rt_config cfg;
	base_config(&cfg, "tty", args);
	cfg.tty = true;
	rt_state st = run(&cfg);
	assert_int_equal(st.exit_code, 0);
	_cleanup_free_ char *out = log_stream("tty", "stdout");
	assert_string_equal(out, "is-a-tty\n");
}

static void test_user_and_mounts(void **state)
{
	(void)state;
	char src[256];
	snprintf(src, sizeof(src), "%s/shared", g_tmp);
	assert_int_equal(mkdir(src, 0755), 0);
	static const char *const args[] = {
	    "sh", "-c",
	    "id; cat /data/hello; (echo x > /data/new) 2>&1; grep -c ' /scratch ' /proc/mounts;"
	    "grep CapEff /proc/self/status; echo adj=$(cat /proc/self/oom_score_adj)",
	    NULL};
	char hello[300];
	snprintf(hello, sizeof(hello), "%s/hello", src);
	FILE *f = fopen(hello, "w");
	assert_non_null(f);
	fputs("hi from host\n", f);
	fclose(f);
	rt_mount mounts[] = {
	    {.type = "bind", .source = src, .destination = "/data", .readonly = true},
	    {.type = "tmpfs", .destination = "/scratch", .options = "size=1m"},
	};
	static const gid_t extra[] = {2000, 3000};
	rt_config cfg;
	base_config(&cfg, "user", args);
	cfg.uid = 1000;
	cfg.gid = 1000;
	cfg.additional_gids = extra;
	cfg.n_additional_gids = 2;
	cfg.mounts = mounts;
	cfg.n_mounts = 2;
	cfg.security.no_new_privs = true;
	cfg.oom_score_adj = 500;
	cfg.oom_score_adj_set = true;
	rt_rlimit rl[] = {{.resource = RLIMIT_NOFILE, .soft = 512, .hard = 1024}};
	cfg.rlimits = rl;
	cfg.n_rlimits = 1;
	rt_state st = run(&cfg);
	assert_int_equal(st.exit_code, 0);
	_cleanup_free_ char *out = log_stream("user", "stdout");
	if (!strstr(out, "uid=1000 gid=1000 groups=2000,3000\n") ||
	    !strstr(out, "hi from host\n") || !strstr(out, "Read-only file system") ||
	    !strstr(out, "\n1\n") || !strstr(out, "CapEff:\t0000000000000000\n") ||
	    !strstr(out, "adj=500\n"))
		fail_msg("output: %s", out);
}

static void test_custom_seccomp(void **state)
{
	(void)state;
	char prof[256];
	snprintf(prof, sizeof(prof), "%s/profile.json", g_tmp);
	FILE *f = fopen(prof, "w");
	assert_non_null(f);
	fputs("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_X86_64\","
	      "\"SCMP_ARCH_X86\",\"SCMP_ARCH_X32\"],\"syscalls\":[{\"names\":[\"mkdir\","
	      "\"mkdirat\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":13}]}",
	      f);
	fclose(f);
	static const char *const args[] = {"sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?", NULL};
	rt_config cfg;
	base_config(&cfg, "scmp", args);
	cfg.security.seccomp = RT_SECCOMP_CUSTOM;
	cfg.security.seccomp_profile = prof;
	run(&cfg);
	_cleanup_free_ char *out = log_stream("scmp", "stdout");
	if (!strstr(out, "Permission denied") || !strstr(out, "rc=1"))
		fail_msg("output: %s", out);
}

static void test_user_namespace(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c",
	    "id -u; cat /proc/self/uid_map /proc/self/gid_map; grep CapEff /proc/self/status;"
	    "echo proc=$(cat /proc/1/comm); sleep 100",
	    NULL};
	rt_id_map map = {.container_id = 0, .host_id = 200000, .size = 65536};
	rt_config cfg;
	base_config(&cfg, "userns", args);
	cfg.namespaces[RT_NS_USER].mode = RT_NS_NEW;
	cfg.uid_maps = &map;
	cfg.n_uid_maps = 1;
	cfg.gid_maps = &map;
	cfg.n_gid_maps = 1;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	wait_log("userns", "proc=");
	/* seen from the host, the container's root is an unprivileged uid */
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/status", (int)rt_container_init_pid(c));
	_cleanup_free_ char *st = slurp(p);
	assert_non_null(strstr(st, "Uid:\t200000\t200000\t200000\t200000\n"));
	/* exec joins the user namespace too */
	static const char *const ex[] = {"cat", "/proc/self/uid_map", NULL};
	rt_exec_result r;
	must(rt_exec_sync(c, &cfg, ex, 10000, 4096, &r, &e), e, "exec");
	assert_int_equal(r.exit_code, 0);
	assert_non_null(strstr(r.out, "200000"));
	rt_exec_result_clear(&r);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	_cleanup_free_ char *out = log_stream("userns", "stdout");
	if (!strstr(out, "0\n") || !strstr(out, "0     200000      65536") ||
	    !strstr(out, "CapEff:\t00000000a80425fb") || !strstr(out, "proc=sh\n"))
		fail_msg("output: %s", out);
	assert_gone("userns", 0);
}

/* A second container joins the first's user, IPC and UTS namespaces (as a
 * pod's containers join its infra process's) with a pid and mount namespace
 * of its own: those must be owned by the joined user namespace, or mounting
 * its /proc would fail; and exec must join the user namespace before the
 * namespaces it owns. */
static void test_join_user_namespace(void **state)
{
	(void)state;
	rt_id_map map = {.container_id = 0, .host_id = 300000, .size = 65536};
	static const char *const a_args[] = {"sleep", "100", NULL};
	rt_config a;
	base_config(&a, "usera", a_args);
	a.namespaces[RT_NS_USER].mode = RT_NS_NEW;
	a.uid_maps = a.gid_maps = &map;
	a.n_uid_maps = a.n_gid_maps = 1;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *ca = NULL;
	must(rt_create(g_rt, &a, &ca, &e), e, "create a");
	must(rt_start(ca, &e), e, "start a");
	pid_t apid = rt_container_init_pid(ca);
	char user[64], ipc[64], uts[64];
	snprintf(user, sizeof(user), "/proc/%d/ns/user", (int)apid);
	snprintf(ipc, sizeof(ipc), "/proc/%d/ns/ipc", (int)apid);
	snprintf(uts, sizeof(uts), "/proc/%d/ns/uts", (int)apid);
	static const char *const b_args[] = {
	    "sh", "-c", "id -u; cat /proc/self/uid_map; echo pid1=$(cat /proc/1/comm); sleep 100",
	    NULL};
	rt_config b;
	base_config(&b, "userb", b_args);
	b.namespaces[RT_NS_USER] = (rt_namespace){RT_NS_JOIN, user};
	b.namespaces[RT_NS_IPC] = (rt_namespace){RT_NS_JOIN, ipc};
	b.namespaces[RT_NS_UTS] = (rt_namespace){RT_NS_JOIN, uts};
	rt_container *cb = NULL;
	must(rt_create(g_rt, &b, &cb, &e), e, "create b");
	must(rt_start(cb, &e), e, "start b");
	wait_log("userb", "pid1=");
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/status", (int)rt_container_init_pid(cb));
	_cleanup_free_ char *st = slurp(p);
	assert_non_null(strstr(st, "Uid:\t300000\t300000\t300000\t300000\n"));
	struct stat s1, s2;
	snprintf(p, sizeof(p), "/proc/%d/ns/user", (int)rt_container_init_pid(cb));
	assert_int_equal(stat(user, &s1), 0);
	assert_int_equal(stat(p, &s2), 0);
	assert_int_equal(s1.st_ino, s2.st_ino);
	static const char *const ex[] = {"sh", "-c", "id -u; cat /proc/self/uid_map", NULL};
	rt_exec_result r;
	must(rt_exec_sync(cb, &b, ex, 10000, 4096, &r, &e), e, "exec");
	assert_int_equal(r.exit_code, 0);
	if (!strstr(r.out, "0\n") || !strstr(r.out, "300000"))
		fail_msg("exec output: %s", r.out);
	rt_exec_result_clear(&r);
	must(rt_delete(cb, &e), e, "delete b");
	rt_container_free(cb);
	must(rt_delete(ca, &e), e, "delete a");
	rt_container_free(ca);
	_cleanup_free_ char *out = log_stream("userb", "stdout");
	if (!strstr(out, "0\n") || !strstr(out, "0     300000      65536") ||
	    !strstr(out, "pid1=sh\n"))
		fail_msg("output: %s", out);
	assert_gone("userb", 0);
	assert_gone("usera", 0);
}

static void test_join_namespaces(void **state)
{
	(void)state;
	static const char *const a_args[] = {"sleep", "100", NULL};
	rt_config a;
	base_config(&a, "nsa", a_args);
	_cleanup_error_ ad_error *e = NULL;
	rt_container *ca = NULL;
	must(rt_create(g_rt, &a, &ca, &e), e, "create a");
	must(rt_start(ca, &e), e, "start a");
	/* until it execs, a's init still carries this program's name */
	char commp[64];
	snprintf(commp, sizeof(commp), "/proc/%d/comm", (int)rt_container_init_pid(ca));
	for (int i = 0; i < 1000; i++) {
		_cleanup_free_ char *comm = slurp(commp);
		if (comm && !strcmp(comm, "sleep\n"))
			break;
		usleep(10000);
	}
	char netp[64], pidp[64], want_net[128] = "";
	snprintf(netp, sizeof(netp), "/proc/%d/ns/net", (int)rt_container_init_pid(ca));
	snprintf(pidp, sizeof(pidp), "/proc/%d/ns/pid", (int)rt_container_init_pid(ca));
	assert_true(readlink(netp, want_net, sizeof(want_net) - 1) > 0);

	static const char *const b_args[] = {"sh", "-c", "readlink /proc/self/ns/net; ps -o comm",
					     NULL};
	rt_config b;
	base_config(&b, "nsb", b_args);
	b.namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, netp};
	b.namespaces[RT_NS_PID] = (rt_namespace){RT_NS_JOIN, pidp};
	rt_state st = run(&b);
	assert_int_equal(st.exit_code, 0);
	_cleanup_free_ char *out = log_stream("nsb", "stdout");
	assert_int_equal(strncmp(out, want_net, strlen(want_net)), 0);
	/* one pid namespace: a's init is visible from b */
	assert_non_null(strstr(out, "\nsleep\n"));
	must(rt_delete(ca, &e), e, "delete a");
	rt_container_free(ca);
}

static void test_reopen_log_and_rlimits(void **state)
{
	(void)state;
	char fifo[256];
	snprintf(fifo, sizeof(fifo), "%s/fifo-dir", g_tmp);
	assert_int_equal(mkdir(fifo, 0755), 0);
	strcat(fifo, "/f");
	assert_int_equal(mkfifo(fifo, 0644), 0);
	static const char *const args[] = {
	    "sh", "-c", "echo first; ulimit -n; ulimit -Hn; cat /ctl/f; echo second", NULL};
	rt_mount m = {.type = "bind", .source = fifo, .destination = "/ctl/f"};
	rt_config cfg;
	base_config(&cfg, "reopen", args);
	cfg.mounts = &m;
	cfg.n_mounts = 1;
	cfg.security.readonly_rootfs = true;
	/* the hard limit cannot be raised without CAP_SYS_RESOURCE: a warning */
	rt_rlimit rl[] = {{.resource = RLIMIT_NOFILE, .soft = 200, .hard = 300},
			  {.resource = RLIMIT_NPROC, .soft = RLIM_INFINITY, .hard = RLIM_INFINITY}};
	struct rlimit cur;
	getrlimit(RLIMIT_NPROC, &cur);
	cfg.rlimits = rl;
	cfg.n_rlimits = cur.rlim_max == RLIM_INFINITY ? 1 : 2;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	char log[256], moved[256];
	snprintf(log, sizeof(log), "%s/reopen.log", g_tmp);
	snprintf(moved, sizeof(moved), "%s/reopen.log.1", g_tmp);
	for (int i = 0; i < 500; i++) {
		_cleanup_free_ char *l = slurp(log);
		if (l && strstr(l, "300\n"))
			break;
		usleep(10000);
	}
	assert_int_equal(rename(log, moved), 0);
	must(rt_reopen_log(c, &e), e, "reopen");
	/* exec'd processes get the container's rlimits too */
	static const char *const ul[] = {"sh", "-c", "ulimit -n", NULL};
	rt_exec_result r;
	must(rt_exec_sync(c, &cfg, ul, 10000, 1024, &r, &e), e, "exec ulimit");
	assert_string_equal(r.out, "200\n");
	rt_exec_result_clear(&r);
	int fd = open(fifo, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "via-fifo\n", 9), 9);
	close(fd);
	rt_state st;
	must(rt_wait(c, 10000, &st, &e), e, "wait");
	assert_int_equal(st.exit_code, 0);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	_cleanup_free_ char *now = log_stream("reopen", "stdout");
	assert_string_equal(now, "via-fifo\nsecond\n");
	_cleanup_free_ char *old = slurp(moved);
	assert_non_null(strstr(old, " stdout F first\n"));
	assert_non_null(strstr(old, " stdout F 200\n"));
	assert_non_null(strstr(old, " stdout F 300\n"));
	assert_null(strstr(old, "second"));
}

static void test_privileged_and_signals(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c",
	    "grep -E '^(CapEff|Seccomp):' /proc/self/status; echo keys=$(cat /proc/keys | wc -c);"
	    "trap 'echo got-term; exit 4' TERM; echo ready; while :; do sleep 0.1; done",
	    NULL};
	rt_config cfg;
	base_config(&cfg, "priv", args);
	cfg.security.privileged = true;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	char log[256];
	snprintf(log, sizeof(log), "%s/priv.log", g_tmp);
	for (int i = 0; i < 500; i++) {
		_cleanup_free_ char *l = slurp(log);
		if (l && strstr(l, "ready"))
			break;
		usleep(10000);
	}
	/* a signal to the shim is forwarded to the container's init */
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/status", (int)rt_container_init_pid(c));
	_cleanup_free_ char *st = slurp(p);
	const char *pp = strstr(st, "PPid:");
	assert_non_null(pp);
	pid_t shim = (pid_t)atoi(pp + 5);
	assert_true(shim > 1);
	assert_int_equal(kill(shim, SIGTERM), 0);
	rt_state s;
	must(rt_wait(c, 10000, &s, &e), e, "wait");
	assert_int_equal(s.exit_code, 4);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	_cleanup_free_ char *out = log_stream("priv", "stdout");
	/* every capability this process holds */
	cap_t mine = cap_get_proc();
	uint64_t mask = 0;
	for (int cap = 0; cap < 64; cap++) {
		cap_flag_value_t v = CAP_CLEAR;
		if (cap_get_flag(mine, cap, CAP_PERMITTED, &v) == 0 && v == CAP_SET)
			mask |= 1ULL << cap;
	}
	cap_free(mine);
	char all[64];
	snprintf(all, sizeof(all), "CapEff:\t%016llx\nSeccomp:\t0\n", (unsigned long long)mask);
	if (!strstr(out, all) || strstr(out, "keys=0\n") || !strstr(out, "got-term"))
		fail_msg("output: %s", out);
}

/* This process's bounding set (what agentd would hold). */
static uint64_t own_bounding_set(void)
{
	uint64_t mask = 0;
	for (int cap = 0; cap < 64; cap++)
		if (cap_get_bound((cap_value_t)cap) == 1)
			mask |= 1ULL << cap;
	return mask;
}

/* CRI "add ALL" (every bit set, as the agent expands it) and a named
 * capability the host withholds from root: the container gets what agentd's
 * bounding set has, instead of failing capset with EPERM. */
static void test_all_capabilities(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status", NULL};
	uint64_t held = own_bounding_set();
	char want[128];
	snprintf(want, sizeof(want), "CapPrm:\t%016llx\nCapEff:\t%016llx\nCapBnd:\t%016llx\n",
		 (unsigned long long)held, (unsigned long long)held, (unsigned long long)held);

	rt_config cfg;
	base_config(&cfg, "allcaps", args);
	cfg.security.capabilities_set = true;
	cfg.security.cap_bounding = cfg.security.cap_effective = ~0ULL;
	cfg.security.cap_permitted = cfg.security.cap_inheritable = ~0ULL;
	rt_state st = run(&cfg);
	_cleanup_free_ char *out = log_stream("allcaps", "stdout");
	if (st.exit_code != 0 || strcmp(out, want) != 0)
		fail_msg("exit %d, output:\n%s\nwant:\n%s", st.exit_code, out, want);

	/* the default set plus CAP_SYS_RESOURCE and CAP_SYS_ADMIN */
	uint64_t asked = rt_default_capabilities() | 1ULL << CAP_SYS_RESOURCE | 1ULL << CAP_SYS_ADMIN;
	base_config(&cfg, "somecaps", args);
	cfg.security.capabilities_set = true;
	cfg.security.cap_bounding = cfg.security.cap_effective = asked;
	cfg.security.cap_permitted = cfg.security.cap_inheritable = asked;
	st = run(&cfg);
	_cleanup_free_ char *out2 = log_stream("somecaps", "stdout");
	uint64_t got = asked & held;
	snprintf(want, sizeof(want), "CapPrm:\t%016llx\nCapEff:\t%016llx\nCapBnd:\t%016llx\n",
		 (unsigned long long)got, (unsigned long long)got, (unsigned long long)got);
	if (st.exit_code != 0 || strcmp(out2, want) != 0)
		fail_msg("exit %d, output:\n%s\nwant:\n%s", st.exit_code, out2, want);
}

/* Stop right after start: the init (pid 1 of its namespace) has no handler
 * yet, so the kernel drops the SIGTERM; it is sent again once the handler is
 * there, well before the grace period ends. An init that never installs
 * one is SIGKILLed in time for rt_stop to return within the grace period. */
static void test_stop_before_handler(void **state)
{
	(void)state;
	static const char *const late_trap[] = {
	    "sh", "-c", "sleep 0.5; trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done",
	    NULL};
	rt_config cfg;
	base_config(&cfg, "latetrap", late_trap);
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	int64_t t0 = ad_monotonic_ns();
	must(rt_stop(c, SIGTERM, 20000, &e), e, "stop");
	int64_t took_ms = (ad_monotonic_ns() - t0) / 1000000;
	rt_state st;
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.status, RT_STATUS_STOPPED);
	if (st.exit_code != 7 || took_ms > 5000)
		fail_msg("exit %d signal %d after %lld ms", st.exit_code, st.signal,
			 (long long)took_ms);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	_cleanup_free_ char *out = log_stream("latetrap", "stdout");
	assert_string_equal(out, "got-term\n");

	static const char *const no_trap[] = {"sleep", "100", NULL};
	base_config(&cfg, "notrap", no_trap);
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	t0 = ad_monotonic_ns();
	must(rt_stop(c, SIGTERM, 1500, &e), e, "stop");
	took_ms = (ad_monotonic_ns() - t0) / 1000000;
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.signal, SIGKILL);
	if (took_ms >= 1500 || took_ms < 1000)
		fail_msg("stop with a 1500 ms grace period took %lld ms", (long long)took_ms);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
}

static bool host_mounted(const char *path)
{
	_cleanup_free_ char *mi = slurp("/proc/self/mountinfo");
	_cleanup_free_ char *needle = ad_asprintf(" %s ", path);
	return mi && strstr(mi, needle);
}

/* Lazily unmounts everything mounted under `dir` (and dir itself), innermost
 * first, until nothing is left: a mount that leaked back from a container
 * must not reach the tests that follow. */
static void unmount_under(const char *dir)
{
	size_t len = strlen(dir);
	for (int pass = 0; pass < 20; pass++) {
		_cleanup_free_ char *mi = slurp("/proc/self/mountinfo");
		char *found[256];
		size_t n = 0;
		for (char *l = mi ? strtok(mi, "\n") : NULL; l && n < 256; l = strtok(NULL, "\n")) {
			char mp[512];
			if (sscanf(l, "%*s %*s %*s %*s %511s", mp) == 1 && !strncmp(mp, dir, len) &&
			    (mp[len] == '\0' || mp[len] == '/'))
				found[n++] = ad_strdup(mp);
		}
		if (n == 0)
			return;
		for (size_t i = n; i-- > 0;) {
			umount2(found[i], MNT_DETACH);
			free(found[i]);
		}
	}
}

/* A volume on a shared host mount, as kubelet (and critest) prepare one:
 * with Bidirectional (rshared) a mount made in the container under it shows
 * on the host, and with HostToContainer (rslave) it does not; a host mount
 * under it shows in the container with both. Returns what went wrong, or
 * NULL, once every mount it made is gone. */
static char *check_propagation(rt_propagation prop, const char *id)
{
	char base[256], vol[300], from_ctr[320], from_host[320], hsrc[300], flag[320], canary[300];
	snprintf(base, sizeof(base), "%s/%s", g_tmp, id);
	snprintf(canary, sizeof(canary), "%s/canary", base);
	snprintf(vol, sizeof(vol), "%s/vol", base);
	snprintf(from_ctr, sizeof(from_ctr), "%s/from-ctr", vol);
	snprintf(from_host, sizeof(from_host), "%s/from-host", vol);
	snprintf(hsrc, sizeof(hsrc), "%s/hsrc", base);
	snprintf(flag, sizeof(flag), "%s/host-flag", hsrc);
	assert_int_equal(ad_mkdir_p(from_ctr, 0755, NULL), 0);
	assert_int_equal(ad_mkdir_p(from_host, 0755, NULL), 0);
	assert_int_equal(ad_mkdir_p(hsrc, 0755, NULL), 0);
	assert_int_equal(ad_mkdir_p(canary, 0755, NULL), 0);
	FILE *f = fopen(flag, "w");
	assert_non_null(f);
	fclose(f);
	char *what = NULL;
	rt_container *c = NULL;
	_cleanup_error_ ad_error *e = NULL;
	/* The rootfs on a shared mount as well (as under a systemd host's /):
	 * the container's setup must not propagate from there either. */
	if (mount(g_tmp, g_tmp, NULL, MS_BIND | MS_REC, NULL) < 0 ||
	    mount(NULL, g_tmp, NULL, MS_SHARED, NULL) < 0 ||
	    mount(vol, vol, NULL, MS_BIND | MS_REC, NULL) < 0 ||
	    mount(NULL, vol, NULL, MS_SHARED, NULL) < 0 ||
	    /* an unrelated host mount under a shared one (as netns pins are),
	     * which no container may unmount */
	    mount("canary", canary, "tmpfs", 0, "size=16k") < 0) {
		what = ad_asprintf("host mounts: %s", strerror(errno));
		goto out;
	}

	static const char *const args[] = {
	    "sh", "-c",
	    "mount -t tmpfs ctr /vol/from-ctr && echo c > /vol/from-ctr/ctr-flag && echo mounted;"
	    "while ! cat /vol/from-host/host-flag 2>/dev/null; do sleep 0.05; done;"
	    "echo seen-host; sleep 100",
	    NULL};
	rt_config cfg;
	base_config(&cfg, id, args);
	cfg.security.privileged = true; /* mount(2) in the container */
	rt_mount m = {.type = "bind", .source = vol, .destination = "/vol", .propagation = prop};
	cfg.mounts = &m;
	cfg.n_mounts = 1;
	if (rt_create(g_rt, &cfg, &c, &e) < 0 || rt_start(c, &e) < 0) {
		what = ad_asprintf("create/start: %s", e->message);
		goto out;
	}
	if (!log_shows(id, "mounted")) {
		what = ad_strdup("no mount in the container");
		goto out;
	}
	char ctr_flag[340], rootfs_proc[300];
	snprintf(ctr_flag, sizeof(ctr_flag), "%s/ctr-flag", from_ctr);
	snprintf(rootfs_proc, sizeof(rootfs_proc), "%s/proc", g_rootfs);
	bool seen = false;
	for (int i = 0; i < 100 && !seen; i++) {
		seen = access(ctr_flag, F_OK) == 0;
		if (!seen)
			usleep(10000);
	}
	if (seen != (prop == RT_PROP_RSHARED))
		what = ad_asprintf("the container's mount %s on the host", seen ? "shows" : "is not");
	else if (host_mounted(g_rootfs) || host_mounted(rootfs_proc))
		what = ad_strdup("the container's rootfs mounts leaked to the host");
	else if (!host_mounted(canary) || !host_mounted(vol) || !host_mounted(g_tmp))
		what = ad_strdup("the container's setup unmounted host mounts");
	else if (mount(hsrc, from_host, NULL, MS_BIND, NULL) < 0)
		what = ad_asprintf("host mount: %s", strerror(errno));
	else if (!log_shows(id, "seen-host"))
		what = ad_strdup("the host's mount does not show in the container");
out:
	if (c) {
		rt_stop(c, SIGKILL, 0, NULL);
		rt_delete(c, NULL);
		rt_container_free(c);
	}
	unmount_under(g_tmp);
	if (!what && host_mounted(g_tmp))
		what = ad_asprintf("%s still mounted", g_tmp);
	return what;
}

static void test_mount_propagation(void **state)
{
	(void)state;
	static const struct {
		rt_propagation prop;
		const char *id;
	} cases[] = {{RT_PROP_RSHARED, "bidir"}, {RT_PROP_RSLAVE, "h2c"}};
	for (size_t i = 0; i < 2; i++) {
		_cleanup_free_ char *what = check_propagation(cases[i].prop, cases[i].id);
		if (what)
			fail_msg("%s: %s", cases[i].id, what);
	}
}

/* Reads attach frames until EOF; returns stdout and stderr concatenated. */
static void read_frames(int fd, char *out, size_t out_size, char *err, size_t err_size)
{
	size_t ol = 0, el = 0;
	for (;;) {
		unsigned char hdr[5];
		size_t got = 0;
		while (got < 5) {
			ssize_t n = read(fd, hdr + got, 5 - got);
			if (n <= 0)
				goto done;
			got += (size_t)n;
		}
		size_t len =
		    (size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 | hdr[4];
		char buf[4096];
		assert_true(len < sizeof(buf));
		got = 0;
		while (got < len) {
			ssize_t n = read(fd, buf + got, len - got);
			assert_true(n > 0);
			got += (size_t)n;
		}
		char *dst = hdr[0] == 1 ? out : err;
		size_t *dl = hdr[0] == 1 ? &ol : &el;
		size_t cap = hdr[0] == 1 ? out_size : err_size;
		assert_true(hdr[0] == 1 || hdr[0] == 2);
		if (*dl + len < cap) {
			memcpy(dst + *dl, buf, len);
			*dl += len;
		}
	}
done:
	out[ol] = '\0';
	err[el] = '\0';
}

static void test_attach_stdin(void **state)
{
	(void)state;
	static const char *const args[] = {
	    "sh", "-c", "read a; echo got:$a; echo oops >&2; read b || echo eof; exit 2", NULL};
	rt_config cfg;
	base_config(&cfg, "attach", args);
	cfg.open_stdin = true;
	cfg.stdin_once = true;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	int fd;
	/* An attach without stdin: what it sends is dropped, its end is not the
	 * container's EOF. */
	must(rt_attach(c, false, &fd, &e), e, "attach-output");
	assert_int_equal(write(fd, "dropped\n", 8), 8);
	close(fd);
	usleep(200 * 1000);
	must(rt_attach(c, true, &fd, &e), e, "attach");
	assert_int_equal(write(fd, "hello\n", 6), 6);
	/* our EOF is the container's (stdin_once): the second read ends */
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	char out[256], err[256];
	read_frames(fd, out, sizeof(out), err, sizeof(err));
	close(fd);
	assert_string_equal(out, "got:hello\neof\n");
	assert_string_equal(err, "oops\n");
	rt_state st;
	must(rt_wait(c, 10000, &st, &e), e, "wait");
	assert_int_equal(st.exit_code, 2);
	must(rt_delete(c, &e), e, "delete");
	rt_container_free(c);
	/* the log has it all as well */
	_cleanup_free_ char *log = log_stream("attach", "stdout");
	assert_string_equal(log, "got:hello\neof\n");
}

static void test_seccomp_blocks(void **state)
{
	(void)state;
	static const char *const args[] = {"/bin/probe", NULL};
	rt_config cfg;
	base_config(&cfg, "probe", args);
	run(&cfg);
	_cleanup_free_ char *out = log_stream("probe", "stdout");
	assert_string_equal(out, "keyctl=EPERM\nadd_key=EPERM\nunshare=EPERM\nmount=EPERM\n"
				 "personality=EPERM\nclone_newns=EPERM\nclone=ok\n");
	/* same capabilities, no filter: keyctl works, so the EPERM was seccomp's */
	base_config(&cfg, "probe2", args);
	cfg.security.seccomp = RT_SECCOMP_UNCONFINED;
	run(&cfg);
	_cleanup_free_ char *out2 = log_stream("probe2", "stdout");
	if (strstr(out2, "keyctl=EPERM") || !strstr(out2, "personality=ok"))
		fail_msg("unconfined: %s", out2);
}

/* An image whose /dev points out of its root: everything set up there must
 * land inside the rootfs, never on the host path. */
static void test_hostile_rootfs(void **state)
{
	(void)state;
	char escape[256], evil[256], cmd[1024], link[512];
	snprintf(escape, sizeof(escape), "%s/escape", g_tmp);
	snprintf(evil, sizeof(evil), "%s/evil", g_tmp);
	assert_int_equal(mkdir(escape, 0755), 0);
	snprintf(cmd, sizeof(cmd), "cp -a %s %s && rmdir %s/dev", g_rootfs, evil, evil);
	assert_int_equal(system(cmd), 0);
	snprintf(link, sizeof(link), "../../../../../../../..%s", escape);
	snprintf(cmd, sizeof(cmd), "%s/dev", evil);
	assert_int_equal(symlink(link, cmd), 0);
	static const char *const args[] = {"sh", "-c", "echo hi > /dev/null && echo ok", NULL};
	rt_config cfg;
	base_config(&cfg, "evil", args);
	cfg.rootfs = evil;
	rt_state st = run(&cfg);
	assert_int_equal(st.exit_code, 0);
	_cleanup_free_ char *out = log_stream("evil", "stdout");
	assert_string_equal(out, "ok\n");
	_cleanup_closedir_ DIR *d = ad_opendir_at(AT_FDCWD, escape, 0);
	assert_non_null(d);
	assert_null(ad_readdir(d));
}

/* The init exits while a process it left behind (host pid namespace here)
 * still holds its stdout: the shim drains for a while; the state asked in
 * that window is the real exit, not "unknown". */
static void test_exit_while_draining(void **state)
{
	(void)state;
	static const char *const args[] = {"sh", "-c", "sleep 3 & echo bye; exit 5", NULL};
	rt_config cfg;
	base_config(&cfg, "drain", args);
	cfg.namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	must(rt_create(g_rt, &cfg, &c, &e), e, "create");
	must(rt_start(c, &e), e, "start");
	pid_t pid = rt_container_init_pid(c);
	for (int i = 0; i < 500 && kill(pid, 0) == 0; i++)
		usleep(10000);
	rt_state st;
	must(rt_get_state(c, &st, &e), e, "state");
	assert_int_equal(st.status, RT_STATUS_STOPPED);
	assert_int_equal(st.exit_code, 5);
	must(rt_delete(c, &e), e, "delete"); /* kills the straggler with the cgroup */
	rt_container_free(c);
	assert_gone("drain", pid);
	_cleanup_free_ char *out = log_stream("drain", "stdout");
	assert_string_equal(out, "bye\n");
}

/* agentd calls in from a worker pool: creates race each other, and the
 * other threads keep allocating. A create that forked agentd and then
 * allocated in the child (ASan's allocator has no fork lock in GCC 12) hung
 * on a lock another thread held at the fork, until the 60 s setup timeout. */
static atomic_bool allocating;

static void *allocator_worker(void *arg)
{
	(void)arg;
	void *keep[64] = {0};
	for (unsigned i = 0; allocating; i++) {
		size_t slot = i % 64;
		free(keep[slot]);
		keep[slot] = ad_asprintf("%*u", (int)(16 + i % 1000), i);
	}
	for (size_t i = 0; i < 64; i++)
		free(keep[i]);
	return NULL;
}

static void *parallel_worker(void *arg)
{
	int n = (int)(intptr_t)arg;
	static const char *const args[] = {"sh", "-c", "exit 9", NULL};
	for (int i = 0; i < 5; i++) {
		char id[32];
		snprintf(id, sizeof(id), "par-%d-%d", n, i);
		rt_config cfg;
		rt_config_init(&cfg);
		cfg.id = id;
		cfg.rootfs = g_rootfs;
		cfg.args = args;
		rt_container *c = NULL;
		ad_error *e = NULL;
		rt_state st;
		if (rt_create(g_rt, &cfg, &c, &e) < 0 || rt_start(c, &e) < 0 ||
		    rt_wait(c, 20000, &st, &e) < 0 || rt_delete(c, &e) < 0) {
			fprintf(stderr, "%s: %s\n", id, e ? e->message : "?");
			ad_error_free(&e);
			rt_container_free(c);
			return (void *)1;
		}
		rt_container_free(c);
		if (st.exit_code != 9)
			return (void *)2;
	}
	return NULL;
}

static void test_parallel_creates(void **state)
{
	(void)state;
	pthread_t t[4], a[3];
	allocating = true;
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&a[i], NULL, allocator_worker, NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, parallel_worker, (void *)(intptr_t)i),
				 0);
	void *r[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_join(t[i], &r[i]), 0);
	allocating = false;
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_join(a[i], NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_null(r[i]);
}

/* Each bad input: a clear error and nothing left behind. */
static void expect_create_error(rt_config *cfg, const char *want)
{
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	if (rt_create(g_rt, cfg, &c, &e) == 0)
		fail_msg("create %s succeeded", cfg->id);
	if (!strstr(e->message, want))
		fail_msg("error \"%s\" lacks \"%s\"", e->message, want);
	assert_gone(cfg->id, 0);
}

static void test_errors(void **state)
{
	(void)state;
	rt_container *c_unused = NULL;
	static const char *const missing[] = {"nosuch", NULL};
	rt_config cfg;
	base_config(&cfg, "err1", missing);
	expect_create_error(&cfg, "executable file not found: nosuch in PATH=/usr/local/sbin:");

	static const char *const ok[] = {"true", NULL};
	static const char *const env[] = {"PATH=/opt/bin", NULL};
	base_config(&cfg, "err2", ok);
	cfg.env = env;
	expect_create_error(&cfg, "executable file not found: true in PATH=/opt/bin");

	rt_mount m = {.type = "bind", .source = "/nonexistent/src", .destination = "/x"};
	base_config(&cfg, "err3", ok);
	cfg.mounts = &m;
	cfg.n_mounts = 1;
	expect_create_error(&cfg, "bind mount source /nonexistent/src");

	base_config(&cfg, "err4", ok);
	cfg.namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, "/proc/self/ns/nosuch"};
	expect_create_error(&cfg, "namespace path /proc/self/ns/nosuch");

	base_config(&cfg, "err5", ok);
	cfg.namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, "/etc/hostname"};
	expect_create_error(&cfg, "join namespace /etc/hostname");

	char prof[256];
	snprintf(prof, sizeof(prof), "%s/bad.json", g_tmp);
	FILE *f = fopen(prof, "w");
	assert_non_null(f);
	fputs("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\","
	      "\"nosuchcall\"],\"action\":\"SCMP_ACT_ALLOW\"}]}",
	      f);
	fclose(f);
	base_config(&cfg, "err6", ok);
	cfg.security.seccomp = RT_SECCOMP_CUSTOM;
	cfg.security.seccomp_profile = prof;
	expect_create_error(&cfg, "unknown syscall \"nosuchcall\"");

	base_config(&cfg, "err7", ok);
	cfg.gid = (gid_t)-1;
	expect_create_error(&cfg, "invalid uid/gid");

	base_config(&cfg, "err8", ok);
	cfg.cwd = "/does/not/exist";
	expect_create_error(&cfg, "cwd /does/not/exist");

	base_config(&cfg, "err9", ok);
	cfg.security.apparmor_profile = "docker-default";
	expect_create_error(&cfg, "AppArmor");

	base_config(&cfg, "err10", ok);
	cfg.log_path = "/nonexistent/dir/x.log";
	expect_create_error(&cfg, "log path /nonexistent/dir/x.log");

	/* a live container's id is taken ... */
	static const char *const sl[] = {"sleep", "100", NULL};
	base_config(&cfg, "dup", sl);
	rt_container *live = NULL;
	_cleanup_error_ ad_error *e0 = NULL;
	must(rt_create(g_rt, &cfg, &live, &e0), e0, "create dup");
	assert_int_equal(rt_create(g_rt, &cfg, &c_unused, &e0), -1);
	assert_int_equal(e0->code, AD_E_EXISTS);
	ad_error_free(&e0);
	must(rt_delete(live, &e0), e0, "delete dup");
	rt_container_free(live);
	/* ... the leftovers of a create interrupted by a crash are not */
	char stale[256];
	snprintf(stale, sizeof(stale), "%s/dup", g_state);
	assert_int_equal(mkdir(stale, 0700), 0);
	base_config(&cfg, "dup", ok);
	run(&cfg);

	base_config(&cfg, "bad/id", ok);
	_cleanup_error_ ad_error *e = NULL;
	rt_container *c = NULL;
	assert_int_equal(rt_create(g_rt, &cfg, &c, &e), -1);
	assert_int_equal(e->code, AD_E_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_isolation),
	    cmocka_unit_test(test_exit_and_log),
	    cmocka_unit_test(test_exec),
	    cmocka_unit_test(test_memory_oom_and_update),
	    cmocka_unit_test(test_pids_limit),
	    cmocka_unit_test(test_shim_outlives_creator),
	    cmocka_unit_test(test_tty),
	    cmocka_unit_test(test_user_and_mounts),
	    cmocka_unit_test(test_custom_seccomp),
	    cmocka_unit_test(test_user_namespace),
	    cmocka_unit_test(test_join_user_namespace),
	    cmocka_unit_test(test_join_namespaces),
	    cmocka_unit_test(test_reopen_log_and_rlimits),
	    cmocka_unit_test(test_privileged_and_signals),
	    cmocka_unit_test(test_all_capabilities),
	    cmocka_unit_test(test_stop_before_handler),
	    cmocka_unit_test(test_mount_propagation),
	    cmocka_unit_test(test_attach_stdin),
	    cmocka_unit_test(test_seccomp_blocks),
	    cmocka_unit_test(test_hostile_rootfs),
	    cmocka_unit_test(test_exit_while_draining),
	    cmocka_unit_test(test_shim_killed),
	    cmocka_unit_test(test_stop_kills_leftovers),
	    cmocka_unit_test(test_parallel_creates),
	    cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
