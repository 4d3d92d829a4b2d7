/* cgroup_test.c — the cgroup drivers against real cgroups (root needed).
 * v1 runs wherever the host is v1/hybrid; the v2 driver runs against the
 * real cgroup2 mount at /sys/fs/cgroup/unified when present (no controllers
 * there on a hybrid host) and, for its limit and stat file formats, against a
 * private directory laid out like a v2 cgroup. Everything lives under
 * "agentd-test-<pid>" and is removed by the teardowns even when a test fails. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cgroup.h"
#include "cgroup_internal.h"

#define MiB (1024LL * 1024)
#define UNIFIED "/sys/fs/cgroup/unified"
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static char g_parent[64];
static cg_manager *g_parent_cg;
static char g_tmp[64];

/* ---- helpers ---- */

static char *slurp(const char *path)
{
	char *data = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (ad_read_file(AT_FDCWD, path, 1 << 20, &data, NULL, &err) < 0)
		return NULL;
	data[strcspn(data, "\n")] = '\0';
	return data;
}

static void assert_file(const char *want, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void assert_file(const char *want, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *path = NULL;
	assert_true(vasprintf(&path, fmt, ap) >= 0);
	va_end(ap);
	_cleanup_free_ char *got = slurp(path);
	if (!got || strcmp(got, want) != 0)
		fail_msg("%s: want \"%s\", got \"%s\"", path, want, got ? got : "(missing)");
}

static void put_file(const char *dir, const char *name, const char *content)
{
	_cleanup_free_ char *path = ad_asprintf("%s/%s", dir, name);
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Removes a cgroup tree bottom-up, killing whatever is inside. */
static void nuke(const char *path, bool self)
{
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *sub = ad_asprintf("%s/%s", path, de->d_name);
		nuke(sub, true);
	}
	closedir(d);
	if (!self)
		return;
	for (int i = 0; i < 200; i++) {
		_cleanup_free_ char *fs = ad_asprintf("%s/freezer.state", path);
		_cleanup_free_ char *fz = ad_asprintf("%s/cgroup.freeze", path);
		_cleanup_free_ char *procs = ad_asprintf("%s/cgroup.procs", path);
		FILE *f;
		if ((f = fopen(fs, "we"))) {
			fputs("THAWED", f);
			fclose(f);
		}
		if ((f = fopen(fz, "we"))) {
			fputs("0", f);
			fclose(f);
		}
		if ((f = fopen(procs, "re"))) {
			int pid;
			while (fscanf(f, "%d", &pid) == 1)
				kill(pid, SIGKILL);
			fclose(f);
		}
		if (rmdir(path) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY)
			break;
		usleep(10000);
	}
	/* A plain directory (the v2 stand-in) */
	_cleanup_error_ ad_error *err = NULL;
	ad_remove_tree(path, &err);
}

static const char *const v1_ctrls[] = {"cpu",	  "cpuacct", "cpuset", "memory",
				       "devices", "freezer", "blkio",  "pids"};
#define N_V1 (sizeof(v1_ctrls) / sizeof(v1_ctrls[0]))

static void nuke_all(bool self)
{
	for (size_t i = 0; i < N_V1; i++) {
		_cleanup_free_ char *p = ad_asprintf("/sys/fs/cgroup/%s/%s", v1_ctrls[i], g_parent);
		nuke(p, self);
	}
	_cleanup_free_ char *p = ad_asprintf(UNIFIED "/%s", g_parent);
	nuke(p, true);
}

/* Kills and reaps every child and grandchild (we are their subreaper). */
static void reap_all(void)
{
	for (int i = 0; i < 500; i++) {
		int status;
		pid_t p = waitpid(-1, &status, WNOHANG);
		if (p < 0 && errno == ECHILD)
			return;
		if (p == 0)
			usleep(10000);
	}
}

typedef void (*child_fn)(long arg, int report_fd);

/* Forks a child that waits until it has been moved into cg, then runs fn. */
static pid_t spawn(cg_manager *cg, child_fn fn, long arg, int *ret_report)
{
	int go[2], rep[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(rep, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c;
		close(go[1]);
		close(rep[0]);
		if (read(go[0], &c, 1) != 1)
			_exit(99);
		fn(arg, rep[1]);
		_exit(0);
	}
	close(go[0]);
	close(rep[1]);
	_cleanup_error_ ad_error *err = NULL;
	int r = cg_enter(cg, pid, &err);
	if (r < 0) {
		kill(pid, SIGKILL);
		fail_msg("cg_enter: %s", err->message);
	}
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	if (ret_report)
		*ret_report = rep[0];
	else
		close(rep[0]);
	return pid;
}

static void wait_report(int fd, void *buf, size_t len)
{
	assert_int_equal(read(fd, buf, len), (ssize_t)len);
}

static int64_t cputime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void child_spin(long ms, int fd)
{
	/* Only CPU time spent after joining the cgroup is charged to it. */
	int64_t start = cputime_ns();
	while (cputime_ns() - start < ms * 1000000LL)
		;
	char c = 'r';
	if (write(fd, &c, 1) != 1)
		_exit(98);
	for (;;)
		;
}

static void child_alloc(long bytes, int fd)
{
	char *p =
	    mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		_exit(97);
	for (long i = 0; i < bytes; i += 4096)
		p[i] = 1;
	char c = 'r';
	if (write(fd, &c, 1) != 1)
		_exit(98);
	for (;;)
		pause();
}

static void child_forks(long n, int fd)
{
	int ok = 0;
	for (long i = 0; i < n; i++) {
		pid_t p = fork();
		if (p == 0) {
			for (;;)
				pause();
		}
		if (p > 0)
			ok++;
	}
	if (write(fd, &ok, sizeof(ok)) != sizeof(ok))
		_exit(98);
	for (;;)
		pause();
}

static void child_bomb(long unused, int fd)
{
	(void)unused;
	char c = 'r';
	if (write(fd, &c, 1) != 1)
		_exit(98);
	close(fd);
	for (;;)
		fork();
}

static void child_pause(long unused, int fd)
{
	(void)unused;
	char c = 'r';
	if (write(fd, &c, 1) != 1)
		_exit(98);
	for (;;)
		pause();
}

/* Reports the errno (0: success) of opening /dev/null rw, /dev/zero r and
 * /dev/zero w. */
static void child_devices(long unused, int fd)
{
	(void)unused;
	static const struct {
		const char *path;
		int flags;
	} tries[] = {{"/dev/null", O_RDWR}, {"/dev/zero", O_RDONLY}, {"/dev/zero", O_WRONLY}};
	int res[3];
	for (int i = 0; i < 3; i++) {
		int f = open(tries[i].path, tries[i].flags | O_CLOEXEC);
		res[i] = f < 0 ? errno : 0;
		if (f >= 0)
			close(f);
	}
	if (write(fd, res, sizeof(res)) != sizeof(res))
		_exit(98);
}

static int wait_child(pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static cg_manager *create_ok(const char *name, const rt_resources *res)
{
	cg_manager *cg = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (cg_create(g_parent, name, res, &cg, &err) < 0)
		fail_msg("cg_create %s: %s", name, err->message);
	return cg;
}

static void destroy_ok(cg_manager *cg)
{
	_cleanup_error_ ad_error *err = NULL;
	if (cg_destroy(cg, &err) < 0)
		fail_msg("cg_destroy: %s", err->message);
	cg_free(cg);
}

static bool is_v1_host(void)
{
	return geteuid() == 0 && strcmp(cg_version_name(), "v1") == 0 &&
	       exists("/sys/fs/cgroup/memory/memory.limit_in_bytes");
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
	(void)state;
	snprintf(g_parent, sizeof(g_parent), "agentd-test-%d", (int)getpid());
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (!is_v1_host())
		return 0;
	_cleanup_error_ ad_error *err = NULL;
	if (cg_create(NULL, g_parent, NULL, &g_parent_cg, &err) < 0) {
		fprintf(stderr, "parent cgroup: %s\n", err->message);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	cg_set_root_for_testing(NULL, 0);
	if (g_parent_cg) {
		_cleanup_error_ ad_error *err = NULL;
		if (cg_destroy(g_parent_cg, &err) < 0)
			fprintf(stderr, "destroy parent cgroup: %s\n", err->message);
	}
	nuke_all(true);
	cg_free(g_parent_cg);
	reap_all();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	cg_set_root_for_testing(NULL, 0);
	nuke_all(false);
	reap_all();
	if (*g_tmp) {
		_cleanup_error_ ad_error *err = NULL;
		ad_remove_tree(g_tmp, &err);
		*g_tmp = '\0';
	}
	return 0;
}

#define REQUIRE_V1()                                                                               \
	do {                                                                                       \
		if (!is_v1_host())                                                                 \
			skip();                                                                    \
	} while (0)

/* ---- v1 ---- */

static void test_detect(void **state)
{
	(void)state;
	struct statfs sfs;
	assert_int_equal(statfs("/sys/fs/cgroup", &sfs), 0);
	assert_string_equal(cg_version_name(), sfs.f_type == CGROUP2_SUPER_MAGIC ? "v2" : "v1");
}

static void test_mountinfo(void **state)
{
	(void)state;
	static const struct {
		const char *line;
		const char *mountpoint; /* NULL: not a v1 hierarchy agentd uses */
		unsigned mask;
	} cases[] = {
	    {"31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup "
	     "rw,cpu,cpuacct\n",
	     "/sys/fs/cgroup/cpu,cpuacct", CG_CTRL_CPU | CG_CTRL_CPUACCT},
	    {"32 30 0:29 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio",
	     "/sys/fs/cgroup/net_cls,net_prio", CG_CTRL_NET_CLS | CG_CTRL_NET_PRIO},
	    {"34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
	     "/sys/fs/cgroup/memory", CG_CTRL_MEMORY},
	    {"35 30 0:32 / /mnt/my\\040cg rw master:3 shared:4 - cgroup none rw,pids,freezer\n",
	     "/mnt/my cg", CG_CTRL_PIDS | CG_CTRL_FREEZER},
	    {"39 30 0:36 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n", NULL,
	     0},
	    {"40 30 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n", NULL, 0},
	    {"30 22 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n", NULL, 0},
	    {"garbage\n", NULL, 0},
	    {"1 2 3 4 5 6 - cgroup\n", NULL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		_cleanup_free_ char *line = ad_strdup(cases[i].line);
		const char *mp = NULL;
		unsigned mask = 0;
		bool ok = cg_parse_mountinfo_line(line, &mp, &mask);
		if (!cases[i].mountpoint) {
			if (ok)
				fail_msg("case %zu: parsed as a hierarchy", i);
			continue;
		}
		if (!ok)
			fail_msg("case %zu: not parsed", i);
		assert_string_equal(mp, cases[i].mountpoint);
		assert_int_equal(mask, cases[i].mask);
	}
	/* Weights span 1..10000 like runc's and crun's conversion. */
	assert_int_equal(cg_shares_to_weight(2), 1);
	assert_int_equal(cg_shares_to_weight(1024), 39);
	assert_int_equal(cg_shares_to_weight(262144), 10000);
}

static void test_v1_create_limits_destroy(void **state)
{
	(void)state;
	REQUIRE_V1();
	rt_resources res = {.cpu_shares = 512,
			    .cpu_quota_us = 50000,
			    .cpu_period_us = 100000,
			    .cpuset_cpus = "0",
			    .cpuset_mems = "0",
			    .memory_limit = 64 * MiB,
			    .memory_swap = 64 * MiB,
			    .pids_limit = 50};
	cg_manager *cg = create_ok("c1", &res);
	_cleanup_free_ char *want_path = ad_asprintf("%s/c1", g_parent);
	assert_string_equal(cg_path(cg), want_path);
	const char *p = cg_path(cg);
	assert_file("512", "/sys/fs/cgroup/cpu/%s/cpu.shares", p);
	assert_file("50000", "/sys/fs/cgroup/cpu/%s/cpu.cfs_quota_us", p);
	assert_file("100000", "/sys/fs/cgroup/cpu/%s/cpu.cfs_period_us", p);
	assert_file("0", "/sys/fs/cgroup/cpuset/%s/cpuset.cpus", p);
	assert_file("0", "/sys/fs/cgroup/cpuset/%s/cpuset.mems", p);
	assert_file("67108864", "/sys/fs/cgroup/memory/%s/memory.limit_in_bytes", p);
	if (exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"))
		assert_file("67108864", "/sys/fs/cgroup/memory/%s/memory.memsw.limit_in_bytes", p);
	assert_file("50", "/sys/fs/cgroup/pids/%s/pids.max", p);
	/* The parent got a usable cpuset copied in on creation. */
	_cleanup_free_ char *root_cpus = slurp("/sys/fs/cgroup/cpuset/cpuset.cpus");
	assert_file(root_cpus, "/sys/fs/cgroup/cpuset/%s/cpuset.cpus", g_parent);

	/* Creating it again collides; opening finds it. */
	cg_manager *dup = NULL, *opened = NULL;
	_cleanup_error_ ad_error *err = NULL;
	assert_int_equal(cg_create(g_parent, "c1", NULL, &dup, &err), -1);
	assert_int_equal(err->code, AD_E_EXISTS);
	ad_error_free(&err);
	assert_int_equal(cg_open(g_parent, "c1", &opened, &err), 0);
	assert_string_equal(cg_path(opened), p);
	cg_free(opened);

	int fd;
	char c;
	pid_t pid = spawn(cg, child_pause, 0, &fd);
	wait_report(fd, &c, 1);
	close(fd);
	destroy_ok(cg);
	int st = wait_child(pid);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		fail_msg("child status 0x%x, want SIGKILL", st);
	for (size_t i = 0; i < N_V1; i++) {
		_cleanup_free_ char *dir =
		    ad_asprintf("/sys/fs/cgroup/%s/%s", v1_ctrls[i], want_path);
		if (exists(dir))
			fail_msg("%s still exists after cg_destroy", dir);
	}
	assert_int_equal(cg_open(g_parent, "c1", &opened, &err), -1);
	assert_int_equal(err->code, AD_E_NOT_FOUND);
}

static void test_v1_stats(void **state)
{
	(void)state;
	REQUIRE_V1();
	rt_resources res = {.memory_limit = 256 * MiB, .pids_limit = 20};
	cg_manager *cg = create_ok("stats", &res);
	int spin_fd, mem_fd;
	char c;
	_cleanup_error_ ad_error *err = NULL;
	rt_stats before, after;
	assert_int_equal(cg_stats(cg, &before, &err), 0);
	assert_int_equal(before.pids_current, 0);
	assert_int_equal(before.memory_limit, 256 * MiB);
	assert_int_equal(before.pids_limit, 20);

	pid_t spinner = spawn(cg, child_spin, 300, &spin_fd);
	wait_report(spin_fd, &c, 1);
	pid_t eater = spawn(cg, child_alloc, 48 * MiB, &mem_fd);
	wait_report(mem_fd, &c, 1);
	close(spin_fd);
	close(mem_fd);

	assert_int_equal(cg_stats(cg, &after, &err), 0);
	assert_true(after.timestamp_ns > 0);
	assert_true(after.cpu_usage_ns >= 300000000ULL);
	assert_true(after.cpu_user_ns + after.cpu_system_ns >= 200000000ULL);
	assert_true(after.memory_usage >= 48 * MiB);
	assert_true(after.memory_rss >= 40 * MiB);
	assert_true(after.memory_working_set <= after.memory_usage);
	assert_true(after.memory_working_set >= 40 * MiB);
	assert_true(after.memory_page_faults > 0); /* THP may fold 4k faults */
	assert_int_equal(after.pids_current, 2);
	assert_int_equal(after.oom_kill_count, 0);
	assert_int_equal(after.processes, 2);
	assert_int_equal(after.threads, 2);
	assert_int_equal(after.memory_failcnt, 0);
	assert_int_equal(after.cpu_shares, 1024); /* the kernel's default */
	assert_int_equal(after.cpu_quota_us, 0);   /* -1 in the file: none */
	assert_int_equal(after.cpu_period_us, 100000);

	rt_stats later;
	usleep(100000);
	assert_int_equal(cg_stats(cg, &later, &err), 0);
	assert_true(later.cpu_usage_ns > after.cpu_usage_ns);

	/* A signal other than SIGKILL goes through the freezer and arrives. */
	assert_int_equal(cg_kill_all(cg, SIGTERM, &err), 0);
	int st = wait_child(spinner);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	st = wait_child(eater);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	destroy_ok(cg);
}

static void test_v1_update_memory(void **state)
{
	(void)state;
	REQUIRE_V1();
	rt_resources res = {.memory_limit = 256 * MiB};
	cg_manager *cg = create_ok("upd", &res);
	const char *p = cg_path(cg);
	int fd;
	char c;
	pid_t pid = spawn(cg, child_alloc, 48 * MiB, &fd);
	wait_report(fd, &c, 1);
	close(fd);
	_cleanup_error_ ad_error *err = NULL;

	rt_resources lower = {.memory_limit = 128 * MiB};
	if (cg_update(cg, &lower, &err) < 0)
		fail_msg("cg_update: %s", err->message);
	assert_file("134217728", "/sys/fs/cgroup/memory/%s/memory.limit_in_bytes", p);

	/* Below the 48 MiB the child holds (no swap to push it to). */
	rt_resources tiny = {.memory_limit = 16 * MiB};
	assert_int_equal(cg_update(cg, &tiny, &err), -1);
	assert_int_equal(err->code, AD_E_PRECONDITION);
	assert_non_null(strstr(err->message, "below current usage"));
	assert_non_null(strstr(err->message, "16777216"));
	ad_error_free(&err);
	assert_file("134217728", "/sys/fs/cgroup/memory/%s/memory.limit_in_bytes", p);

	if (exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")) {
		/* Raising both needs memsw first, lowering needs the limit first. */
		rt_resources up = {.memory_limit = 512 * MiB, .memory_swap = 512 * MiB};
		if (cg_update(cg, &up, &err) < 0)
			fail_msg("raise: %s", err->message);
		assert_file("536870912", "/sys/fs/cgroup/memory/%s/memory.limit_in_bytes", p);
		assert_file("536870912", "/sys/fs/cgroup/memory/%s/memory.memsw.limit_in_bytes", p);
		rt_resources down = {.memory_limit = 100 * MiB, .memory_swap = 100 * MiB};
		if (cg_update(cg, &down, &err) < 0)
			fail_msg("lower: %s", err->message);
		assert_file("104857600", "/sys/fs/cgroup/memory/%s/memory.limit_in_bytes", p);
		assert_file("104857600", "/sys/fs/cgroup/memory/%s/memory.memsw.limit_in_bytes", p);
		rt_resources unl = {.memory_limit = -1};
		if (cg_update(cg, &unl, &err) < 0)
			fail_msg("unlimit: %s", err->message);
		rt_stats st;
		assert_int_equal(cg_stats(cg, &st, &err), 0);
		assert_int_equal(st.memory_limit, 0);
	}

	rt_resources cpu = {.cpu_shares = 2048, .cpu_quota_us = -1, .pids_limit = -1};
	assert_int_equal(cg_update(cg, &cpu, &err), 0);
	assert_file("2048", "/sys/fs/cgroup/cpu/%s/cpu.shares", p);
	assert_file("-1", "/sys/fs/cgroup/cpu/%s/cpu.cfs_quota_us", p);
	assert_file("max", "/sys/fs/cgroup/pids/%s/pids.max", p);

	destroy_ok(cg);
	int st = wait_child(pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static void test_v1_oom(void **state)
{
	(void)state;
	REQUIRE_V1();
	rt_resources res = {.memory_limit = 32 * MiB, .memory_swap = 32 * MiB};
	if (!exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"))
		res.memory_swap = 0;
	cg_manager *cg = create_ok("oom", &res);
	_cleanup_error_ ad_error *err = NULL;
	uint64_t n = 99;
	assert_int_equal(cg_oom_kill_count(cg, &n, &err), 0);
	assert_int_equal(n, 0);
	pid_t pid = spawn(cg, child_alloc, 256 * MiB, NULL);
	int st = wait_child(pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_int_equal(cg_oom_kill_count(cg, &n, &err), 0);
	assert_true(n >= 1);
	rt_stats stats;
	assert_int_equal(cg_stats(cg, &stats, &err), 0);
	assert_int_equal(stats.oom_kill_count, n);
	destroy_ok(cg);
}

static void test_v1_pids_and_destroy(void **state)
{
	(void)state;
	REQUIRE_V1();
	rt_resources res = {.pids_limit = 5};
	cg_manager *cg = create_ok("pids", &res);
	_cleanup_free_ char *path = ad_strdup(cg_path(cg));
	int fd, forked = 0;
	pid_t pid = spawn(cg, child_forks, 20, &fd);
	wait_report(fd, &forked, sizeof(forked));
	close(fd);
	/* The forking child is the fifth task. */
	assert_int_equal(forked, 4);
	_cleanup_error_ ad_error *err = NULL;
	rt_stats st;
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_int_equal(st.pids_current, 5);

	destroy_ok(cg);
	int status = wait_child(pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	for (size_t i = 0; i < N_V1; i++) {
		_cleanup_free_ char *dir = ad_asprintf("/sys/fs/cgroup/%s/%s", v1_ctrls[i], path);
		if (exists(dir))
			fail_msg("%s still exists after cg_destroy", dir);
	}
	/* The grandchildren died too: we are their subreaper, so they are ours
	 * to reap, and no live process is left. */
	reap_all();
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static void test_v1_destroy_fork_bomb(void **state)
{
	(void)state;
	REQUIRE_V1();
	/* pids.max keeps the bomb from hurting the host; the freezer keeps it
	 * from outrunning the kill loop. */
	rt_resources res = {.pids_limit = 128};
	cg_manager *cg = create_ok("bomb", &res);
	_cleanup_free_ char *path = ad_strdup(cg_path(cg));
	int fd;
	char c;
	pid_t pid = spawn(cg, child_bomb, 0, &fd);
	wait_report(fd, &c, 1);
	close(fd);
	usleep(200000);
	_cleanup_error_ ad_error *err = NULL;
	rt_stats st;
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_true(st.pids_current > 1);
	int64_t t0 = ad_monotonic_ns();
	destroy_ok(cg);
	assert_true(ad_monotonic_ns() - t0 < 5000000000LL);
	wait_child(pid);
	for (size_t i = 0; i < N_V1; i++) {
		_cleanup_free_ char *dir = ad_asprintf("/sys/fs/cgroup/%s/%s", v1_ctrls[i], path);
		if (exists(dir))
			fail_msg("%s still exists after cg_destroy", dir);
	}
	reap_all();
}

static void test_v1_devices(void **state)
{
	(void)state;
	REQUIRE_V1();
	cg_manager *cg = create_ok("dev", NULL);
	_cleanup_error_ ad_error *err = NULL;
	assert_file("a *:* rwm", "/sys/fs/cgroup/devices/%s/devices.list", cg_path(cg));
	assert_int_equal(cg_devices_allow(cg, "c 1:3 rwm", &err), 0);
	assert_int_equal(cg_devices_allow(cg, "c 1:5 rw", &err), 0);
	_cleanup_free_ char *list_path =
	    ad_asprintf("/sys/fs/cgroup/devices/%s/devices.list", cg_path(cg));
	_cleanup_free_ char *list = NULL;
	assert_int_equal(ad_read_file(AT_FDCWD, list_path, 4096, &list, NULL, &err), 0);
	assert_string_equal(list, "c 1:3 rwm\nc 1:5 rw\n");
	assert_int_equal(cg_devices_allow(cg, "x 1:3 rwm", &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	assert_non_null(strstr(err->message, "x 1:3 rwm"));
	ad_error_free(&err);
	assert_int_equal(cg_devices_allow(cg, "c 1:3 rwx", &err), -1);
	ad_error_free(&err);
	/* Reopened after a restart, the allowlist mode is remembered. */
	cg_manager *again = NULL;
	assert_int_equal(cg_open(g_parent, "dev", &again, &err), 0);
	assert_int_equal(cg_devices_allow(again, "c 1:8 r", &err), 0);
	cg_free(again);
	/* What the runtime writes for a privileged container. */
	assert_int_equal(cg_devices_allow(cg, "a *:* rwm", &err), 0);
	assert_file("a *:* rwm", "/sys/fs/cgroup/devices/%s/devices.list", cg_path(cg));
	destroy_ok(cg);
}

static void expect_invalid(const char *parent, const char *name, const rt_resources *res,
			   const char *needle)
{
	cg_manager *cg = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (cg_create(parent, name, res, &cg, &err) == 0) {
		_cleanup_error_ ad_error *e2 = NULL;
		cg_destroy(cg, &e2);
		cg_free(cg);
		fail_msg("cg_create(%s, %s) succeeded", parent, name);
	}
	assert_int_equal(err->code, AD_E_INVALID);
	if (!strstr(err->message, needle))
		fail_msg("error \"%s\" does not mention \"%s\"", err->message, needle);
}

static void test_bad_input(void **state)
{
	(void)state;
	/* Validation runs before anything touches the filesystem; no root needed. */
	expect_invalid(g_parent, "..", NULL, "..");
	expect_invalid(g_parent, ".", NULL, ".");
	expect_invalid(g_parent, "a/b", NULL, "a/b");
	expect_invalid(g_parent, "", NULL, "empty");
	expect_invalid("../../etc", "x", NULL, "..");
	expect_invalid("agentd/../../x", "x", NULL, "..");
	rt_resources r = {.cpu_shares = 1};
	expect_invalid(g_parent, "x", &r, "1");
	r.cpu_shares = 300000;
	expect_invalid(g_parent, "x", &r, "300000");
	r = (rt_resources){.cpuset_cpus = "0-"};
	expect_invalid(g_parent, "x", &r, "0-");
	r = (rt_resources){.cpuset_cpus = "3-1"};
	expect_invalid(g_parent, "x", &r, "3-1");
	r = (rt_resources){.cpuset_mems = "zero"};
	expect_invalid(g_parent, "x", &r, "zero");
	r = (rt_resources){.cpuset_cpus = "0,,1"};
	expect_invalid(g_parent, "x", &r, "0,,1");
	r = (rt_resources){.cpu_quota_us = 10};
	expect_invalid(g_parent, "x", &r, "10");
	r = (rt_resources){.cpu_period_us = 5000000};
	expect_invalid(g_parent, "x", &r, "5000000");
	r = (rt_resources){.memory_limit = 64 * MiB, .memory_swap = 32 * MiB};
	expect_invalid(g_parent, "x", &r, "33554432");
	r = (rt_resources){.memory_limit = -5};
	expect_invalid(g_parent, "x", &r, "-5");
	r = (rt_resources){.pids_limit = -2};
	expect_invalid(g_parent, "x", &r, "-2");
	/* Nothing escaped the hierarchy root. */
	assert_false(exists("/sys/fs/cgroup/memory/x"));
	assert_false(exists("/sys/fs/cgroup/x"));
	assert_false(exists("/sys/x"));
}

static void test_v1_parent_normalized(void **state)
{
	(void)state;
	REQUIRE_V1();
	/* A CRI cgroup_parent with a leading slash and doubled separators. */
	_cleanup_free_ char *parent = ad_asprintf("//%s//kubepods/", g_parent);
	cg_manager *cg = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (cg_create(parent, "ctr", NULL, &cg, &err) < 0)
		fail_msg("cg_create: %s", err->message);
	_cleanup_free_ char *want = ad_asprintf("%s/kubepods/ctr", g_parent);
	assert_string_equal(cg_path(cg), want);
	_cleanup_free_ char *dir = ad_asprintf("/sys/fs/cgroup/memory/%s", want);
	assert_true(exists(dir));
	int fd;
	char c;
	pid_t pid = spawn(cg, child_pause, 0, &fd);
	wait_report(fd, &c, 1);
	close(fd);
	destroy_ok(cg);
	wait_child(pid);
	assert_false(exists(dir));
}

/* ---- v2 ---- */

static void test_v2_real_unified(void **state)
{
	(void)state;
	struct statfs sfs;
	if (geteuid() != 0 || statfs(UNIFIED, &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC)
		skip();
	assert_int_equal(cg_set_root_for_testing(UNIFIED, 2), 0);
	assert_string_equal(cg_version_name(), "v2");
	_cleanup_error_ ad_error *err = NULL;
	cg_manager *parent = NULL, *cg = NULL;
	if (cg_create(NULL, g_parent, NULL, &parent, &err) < 0)
		fail_msg("parent: %s", err->message);
	cg_free(parent);

	_cleanup_free_ char *ctrls = slurp(UNIFIED "/cgroup.controllers");
	if (ctrls && !strstr(ctrls, "pids")) {
		/* No pids controller here: the limit cannot be set, and says why. */
		rt_resources res = {.pids_limit = 10};
		assert_int_equal(cg_create(g_parent, "nopids", &res, &cg, &err), -1);
		if (err->code != AD_E_PRECONDITION)
			fail_msg("%s: %s", ad_code_name(err->code), err->message);
		assert_non_null(strstr(err->message, "pids.max"));
		assert_non_null(strstr(err->message, "not enabled"));
		ad_error_free(&err);
		_cleanup_free_ char *left = ad_asprintf(UNIFIED "/%s/nopids", g_parent);
		assert_false(exists(left));
	}

	if (cg_create(g_parent, "c1", NULL, &cg, &err) < 0)
		fail_msg("cg_create: %s", err->message);
	_cleanup_free_ char *dir = ad_asprintf(UNIFIED "/%s", cg_path(cg));
	assert_true(exists(dir));

	int fd;
	char c;
	pid_t spinner = spawn(cg, child_spin, 100, &fd);
	wait_report(fd, &c, 1);
	close(fd);
	_cleanup_free_ char *procs_path = ad_asprintf("%s/cgroup.procs", dir);
	_cleanup_free_ char *procs = slurp(procs_path);
	assert_non_null(procs);
	assert_int_equal(atoi(procs), spinner);

	rt_stats st;
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_true(st.cpu_usage_ns >= 100000000ULL); /* cpu.stat exists without controllers */
	uint64_t n = 99;
	assert_int_equal(cg_oom_kill_count(cg, &n, &err), 0);
	assert_int_equal(n, 0);

	/* SIGTERM: freeze, signal, thaw. */
	assert_int_equal(cg_kill_all(cg, SIGTERM, &err), 0);
	int status = wait_child(spinner);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
	_cleanup_free_ char *freeze = ad_asprintf("%s/cgroup.freeze", dir);
	if (exists(freeze))
		assert_file("0", "%s", freeze);

	/* Device allowlist as an eBPF program on the real cgroup2 directory (it
	 * applies on a hybrid host too). */
	int res[3];
	if (cg_devices_allow(cg, "c 1:3 rwm", &err) < 0)
		fail_msg("%s", err->message);
	pid_t dev = spawn(cg, child_devices, 0, &fd);
	wait_report(fd, res, sizeof(res));
	close(fd);
	wait_child(dev);
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], EPERM);
	assert_int_equal(res[2], EPERM);
	/* A second rule replaces the program with one allowing both. */
	assert_int_equal(cg_devices_allow(cg, "c 1:5 r", &err), 0);
	dev = spawn(cg, child_devices, 0, &fd);
	wait_report(fd, res, sizeof(res));
	close(fd);
	wait_child(dev);
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], 0);
	assert_int_equal(res[2], EPERM);
	/* "a" allows everything again. */
	assert_int_equal(cg_devices_allow(cg, "a", &err), 0);
	dev = spawn(cg, child_devices, 0, &fd);
	wait_report(fd, res, sizeof(res));
	close(fd);
	wait_child(dev);
	assert_int_equal(res[2], 0);
	/* Wildcards and an access subset, in a fresh cgroup. */
	cg_manager *wild = NULL;
	if (cg_create(g_parent, "wild", NULL, &wild, &err) < 0)
		fail_msg("wild: %s", err->message);
	assert_int_equal(cg_devices_allow(wild, "b *:* m", &err), 0);
	assert_int_equal(cg_devices_allow(wild, "c *:* r", &err), 0);
	dev = spawn(wild, child_devices, 0, &fd);
	wait_report(fd, res, sizeof(res));
	close(fd);
	wait_child(dev);
	assert_int_equal(res[0], EPERM);
	assert_int_equal(res[1], 0);
	assert_int_equal(res[2], EPERM);
	destroy_ok(wild);
	assert_int_equal(cg_devices_allow(cg, "c 99999999999:1 r", &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	ad_error_free(&err);

	/* Destroy: cgroup.kill (or the kill loop), then rmdir. */
	pid_t pauser = spawn(cg, child_pause, 0, &fd);
	wait_report(fd, &c, 1);
	close(fd);
	destroy_ok(cg);
	status = wait_child(pauser);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_false(exists(dir));

	cg_manager *gone = NULL;
	assert_int_equal(cg_open(g_parent, "c1", &gone, &err), -1);
	assert_int_equal(err->code, AD_E_NOT_FOUND);
	ad_error_free(&err);
	assert_int_equal(cg_open(NULL, g_parent, &parent, &err), 0);
	destroy_ok(parent);
	_cleanup_free_ char *pdir = ad_asprintf(UNIFIED "/%s", g_parent);
	assert_false(exists(pdir));
}

static void test_v2_file_formats(void **state)
{
	(void)state;
	snprintf(g_tmp, sizeof(g_tmp), "/tmp/cgroup-test-XXXXXX");
	assert_non_null(mkdtemp(g_tmp));
	put_file(g_tmp, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
	put_file(g_tmp, "cgroup.subtree_control", "");
	_cleanup_free_ char *kp = ad_asprintf("%s/kubepods", g_tmp);
	assert_int_equal(mkdir(kp, 0755), 0);
	put_file(kp, "cgroup.controllers", "cpu memory pids\n");
	put_file(kp, "cgroup.subtree_control", "cpu\n");
	assert_int_equal(cg_set_root_for_testing(g_tmp, 2), 0);
	assert_string_equal(cg_version_name(), "v2");

	rt_resources res = {.cpu_shares = 1024,
			    .cpu_quota_us = 50000,
			    .cpu_period_us = 100000,
			    .cpuset_cpus = "0-1",
			    .cpuset_mems = "0",
			    .memory_limit = 64 * MiB,
			    .memory_swap = 96 * MiB,
			    .pids_limit = 100};
	cg_manager *cg = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (cg_create("/kubepods/pod1", "c1", &res, &cg, &err) < 0)
		fail_msg("cg_create: %s", err->message);
	assert_string_equal(cg_path(cg), "kubepods/pod1/c1");
	/* Controllers enabled top-down, only what each level offers and lacks. */
	assert_file("+cpu +memory +pids +cpuset +io", "%s/cgroup.subtree_control", g_tmp);
	assert_file("+memory +pids", "%s/cgroup.subtree_control", kp);
	const char *leaf_rel = "kubepods/pod1/c1";
	/* 1 + (1024 - 2) * 9999 / 262142 */
	assert_file("39", "%s/%s/cpu.weight", g_tmp, leaf_rel);
	assert_file("50000 100000", "%s/%s/cpu.max", g_tmp, leaf_rel);
	assert_file("0-1", "%s/%s/cpuset.cpus", g_tmp, leaf_rel);
	assert_file("0", "%s/%s/cpuset.mems", g_tmp, leaf_rel);
	assert_file("67108864", "%s/%s/memory.max", g_tmp, leaf_rel);
	assert_file("33554432", "%s/%s/memory.swap.max", g_tmp, leaf_rel);
	assert_file("100", "%s/%s/pids.max", g_tmp, leaf_rel);

	_cleanup_free_ char *leaf = ad_asprintf("%s/%s", g_tmp, leaf_rel);
	put_file(leaf, "cpu.stat",
		 "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\n"
		 "nr_throttled 4\nthrottled_usec 2500\n");
	put_file(leaf, "cgroup.procs", "101\n102\n");
	put_file(leaf, "memory.current", "10485760\n");
	put_file(leaf, "memory.stat",
		 "anon 4194304\nfile 6291456\nkernel 8192\nanon_thp 0\nfile_mapped 1\n"
		 "active_file 4194304\ninactive_file 2097152\npgfault 77\npgmajfault 3\n");
	put_file(leaf, "memory.events",
		 "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 9\n");
	put_file(leaf, "pids.current", "3\n");
	rt_stats st;
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_int_equal(st.cpu_usage_ns, 1500000);
	assert_int_equal(st.cpu_user_ns, 1000000);
	assert_int_equal(st.cpu_system_ns, 500000);
	assert_int_equal(st.memory_usage, 10485760);
	assert_int_equal(st.memory_working_set, 10485760 - 2097152);
	assert_int_equal(st.memory_rss, 4194304);
	assert_int_equal(st.memory_cache, 6291456);
	assert_int_equal(st.memory_page_faults, 77);
	assert_int_equal(st.memory_major_page_faults, 3);
	assert_int_equal(st.memory_limit, 64 * MiB);
	assert_int_equal(st.pids_current, 3);
	assert_int_equal(st.pids_limit, 100);
	assert_int_equal(st.oom_kill_count, 2);
	assert_int_equal(st.memory_failcnt, 5); /* memory.events max */
	assert_int_equal(st.cpu_cfs_periods, 10);
	assert_int_equal(st.cpu_cfs_throttled_periods, 4);
	assert_int_equal(st.cpu_cfs_throttled_ns, 2500000);
	assert_int_equal(st.processes, 2);
	assert_int_equal(st.threads, 3);
	assert_int_equal(st.cpu_shares, 998); /* weight 39 back, as close as it maps */
	assert_int_equal(st.cpu_quota_us, 50000);
	assert_int_equal(st.cpu_period_us, 100000);
	uint64_t n = 0;
	assert_int_equal(cg_oom_kill_count(cg, &n, &err), 0);
	assert_int_equal(n, 2);

	/* Below the working set: refused before the kernel could OOM-kill. */
	rt_resources tiny = {.memory_limit = 4 * MiB};
	assert_int_equal(cg_update(cg, &tiny, &err), -1);
	assert_int_equal(err->code, AD_E_PRECONDITION);
	assert_non_null(strstr(err->message, "4194304"));
	ad_error_free(&err);
	assert_file("67108864", "%s/memory.max", leaf);

	rt_resources upd = {
	    .memory_limit = -1, .memory_swap = -1, .cpu_quota_us = -1, .pids_limit = -1};
	assert_int_equal(cg_update(cg, &upd, &err), 0);
	assert_file("max", "%s/memory.max", leaf);
	assert_file("max", "%s/memory.swap.max", leaf);
	assert_file("max 100000", "%s/cpu.max", leaf);
	assert_file("max", "%s/pids.max", leaf);

	/* The manager keeps its stats files open: a second read sees new
	 * usage through them; limits come from the first read until an
	 * update, which cg_update just was. */
	put_file(leaf, "memory.current", "20971520\n");
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_int_equal(st.memory_usage, 20971520);
	assert_int_equal(st.memory_limit, 0);
	assert_int_equal(st.cpu_quota_us, 0);
	assert_int_equal(st.pids_limit, 0);
	put_file(leaf, "memory.max", "1048576\n");
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_int_equal(st.memory_limit, 0); /* spec read once, as cAdvisor does */
	rt_resources per = {.cpu_period_us = 200000, .cpu_shares = 262144};
	assert_int_equal(cg_update(cg, &per, &err), 0);
	assert_file("max 200000", "%s/cpu.max", leaf);
	assert_file("10000", "%s/cpu.weight", leaf);
	put_file(leaf, "memory.max", "max\n");
	put_file(leaf, "pids.max", "max\n");
	assert_int_equal(cg_stats(cg, &st, &err), 0);
	assert_int_equal(st.memory_limit, 0);
	assert_int_equal(st.pids_limit, 0);

	cg_manager *dup = NULL;
	assert_int_equal(cg_create("kubepods/pod1", "c1", NULL, &dup, &err), -1);
	assert_int_equal(err->code, AD_E_EXISTS);
	ad_error_free(&err);
	cg_manager *opened = NULL;
	assert_int_equal(cg_open("kubepods//pod1", "c1", &opened, &err), 0);
	cg_free(opened);
	cg_free(cg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_detect, teardown),
	    cmocka_unit_test_teardown(test_bad_input, teardown),
	    cmocka_unit_test(test_mountinfo),
	    cmocka_unit_test_teardown(test_v1_create_limits_destroy, teardown),
	    cmocka_unit_test_teardown(test_v1_stats, teardown),
	    cmocka_unit_test_teardown(test_v1_update_memory, teardown),
	    cmocka_unit_test_teardown(test_v1_oom, teardown),
	    cmocka_unit_test_teardown(test_v1_pids_and_destroy, teardown),
	    cmocka_unit_test_teardown(test_v1_destroy_fork_bomb, teardown),
	    cmocka_unit_test_teardown(test_v1_devices, teardown),
	    cmocka_unit_test_teardown(test_v1_parent_normalized, teardown),
	    cmocka_unit_test_teardown(test_v2_real_unified, teardown),
	    cmocka_unit_test_teardown(test_v2_file_formats, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
