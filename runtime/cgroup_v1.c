/* cgroup_v1.c — the driver for legacy hierarchies: one directory per mounted
 * hierarchy (co-mounted controllers such as cpu,cpuacct share one). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup_internal.h"

/* The kernel reports "no limit" as PAGE_COUNTER_MAX pages, which depends on
 * the page size; anything this large is no limit. */
#define CG_V1_UNLIMITED (1ULL << 62)

static const char *v1_dir(cg_manager *cg, unsigned ctrl)
{
	for (size_t i = 0; i < cg_v1_hier_count(); i++)
		if (cg_v1_hier_get(i)->mask & ctrl)
			return cg->v1_dirs[i];
	return NULL;
}

static bool v1_blank(const char *s)
{
	return s[strspn(s, " \t\n")] == '\0';
}

/* A new cpuset cgroup starts with empty cpus/mems and no task may join it
 * until both are set; inherit the parent's. */
static int v1_cpuset_inherit(const char *dir, ad_error **err)
{
	static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
	_cleanup_free_ char *parent = ad_strdup(dir);
	char *slash = strrchr(parent, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	for (size_t i = 0; i < 2; i++) {
		_cleanup_free_ char *cur = NULL, *pv = NULL;
		if (cg_read(dir, files[i], &cur, err) < 0)
			return -1;
		if (!v1_blank(cur))
			continue;
		if (cg_read(parent, files[i], &pv, err) < 0)
			return -1;
		pv[strcspn(pv, "\n")] = '\0';
		if (v1_blank(pv))
			return ad_fail(err, AD_E_PRECONDITION, "%s/%s is empty", parent, files[i]);
		if (cg_write(dir, files[i], pv, err) < 0)
			return -1;
	}
	return 0;
}

static int v1_write_i64(const char *dir, const char *file, int64_t v, ad_error **err)
{
	return cg_writef(dir, file, err, "%" PRId64, v);
}

static int v1_apply_memory(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	int64_t limit = res->memory_limit, swap = res->memory_swap;
	if (limit == 0 && swap == 0)
		return 0;
	const char *dir = v1_dir(cg, CG_CTRL_MEMORY);
	if (!dir)
		return ad_fail(err, AD_E_PRECONDITION, "memory controller is not mounted");
	bool have_memsw = cg_file_exists(dir, "memory.memsw.limit_in_bytes");
	/* memsw.limit >= limit must hold after every single write, so unlimited
	 * memory drags an unset swap limit along. */
	if (limit == -1 && swap == 0 && have_memsw)
		swap = -1;
	if (swap != 0 && !have_memsw) {
		if (swap != -1 && swap != limit)
			return ad_fail(err, AD_E_UNIMPLEMENTED,
				       "memory+swap limit %" PRId64
				       ": swap accounting is not enabled (no memory.memsw.*)",
				       swap);
		swap = 0;
	}
	uint64_t cur = 0;
	if (cg_read_u64(dir, "memory.limit_in_bytes", &cur, err) < 0)
		return -1;
	/* Raising: memsw first so the new limit fits under it; lowering: limit
	 * first so memsw never drops below it. */
	bool raising = limit == -1 || (limit > 0 && (uint64_t)limit > cur);
	for (int step = 0; step < 2; step++) {
		bool do_swap = (step == 0) == raising;
		if (do_swap) {
			if (swap != 0 &&
			    v1_write_i64(dir, "memory.memsw.limit_in_bytes", swap, err) < 0)
				return -1;
			continue;
		}
		if (limit == 0)
			continue;
		if (v1_write_i64(dir, "memory.limit_in_bytes", limit, err) < 0) {
			if ((*err)->errno_value != EBUSY)
				return -1;
			/* EBUSY: the kernel could not reclaim down to the new limit. */
			uint64_t usage = 0;
			ad_error_free(err);
			cg_read_u64(dir, "memory.usage_in_bytes", &usage, NULL);
			return ad_fail(err, AD_E_PRECONDITION,
				       "memory limit %" PRId64 " is below current usage %" PRIu64
				       " that cannot be reclaimed",
				       limit, usage);
		}
	}
	return 0;
}

static int v1_apply(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	const char *dir;
	if (res->cpu_shares || res->cpu_quota_us || res->cpu_period_us) {
		if (!(dir = v1_dir(cg, CG_CTRL_CPU)))
			return ad_fail(err, AD_E_PRECONDITION, "cpu controller is not mounted");
		if (res->cpu_shares &&
		    cg_writef(dir, "cpu.shares", err, "%" PRIu64, res->cpu_shares) < 0)
			return -1;
		/* Period first: a quota is checked against the period in force. */
		if (res->cpu_period_us &&
		    cg_writef(dir, "cpu.cfs_period_us", err, "%" PRIu64, res->cpu_period_us) < 0)
			return -1;
		if (res->cpu_quota_us &&
		    v1_write_i64(dir, "cpu.cfs_quota_us", res->cpu_quota_us, err) < 0)
			return -1;
	}
	bool cpus = res->cpuset_cpus && *res->cpuset_cpus,
	     mems = res->cpuset_mems && *res->cpuset_mems;
	if (cpus || mems) {
		if (!(dir = v1_dir(cg, CG_CTRL_CPUSET)))
			return ad_fail(err, AD_E_PRECONDITION, "cpuset controller is not mounted");
		if (cpus && cg_write(dir, "cpuset.cpus", res->cpuset_cpus, err) < 0)
			return -1;
		if (mems && cg_write(dir, "cpuset.mems", res->cpuset_mems, err) < 0)
			return -1;
	}
	if (v1_apply_memory(cg, res, err) < 0)
		return -1;
	if (res->pids_limit) {
		if (!(dir = v1_dir(cg, CG_CTRL_PIDS)))
			return ad_fail(err, AD_E_PRECONDITION, "pids controller is not mounted");
		if (res->pids_limit == -1 ? cg_write(dir, "pids.max", "max", err)
					  : v1_write_i64(dir, "pids.max", res->pids_limit, err))
			return -1;
	}
	return 0;
}

static void v1_rollback(cg_manager *cg, const bool *created)
{
	for (size_t i = 0; i < cg_v1_hier_count(); i++)
		if (created[i])
			rmdir(cg->v1_dirs[i]);
}

static int v1_create(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	bool created[CG_V1_MAX_HIER] = {0};
	for (size_t i = 0; i < cg_v1_hier_count(); i++) {
		const cg_v1_hier *h = cg_v1_hier_get(i);
		bool cpuset = h->mask & CG_CTRL_CPUSET;
		_cleanup_free_ char *cur = ad_strdup(h->mountpoint);
		for (const char *p = cg->parent_path; *p;) {
			size_t len = strcspn(p, "/");
			char *next = ad_asprintf("%s/%.*s", cur, (int)len, p);
			free(cur);
			cur = next;
			bool made;
			if (cg_mkdir(cur, &made, err) < 0 ||
			    (cpuset && v1_cpuset_inherit(cur, err) < 0)) {
				v1_rollback(cg, created);
				return -1;
			}
			p += len;
			if (*p == '/')
				p++;
		}
		if (mkdir(cg->v1_dirs[i], 0755) < 0) {
			int e = errno;
			v1_rollback(cg, created);
			return ad_error_make(err, e == EEXIST ? AD_E_EXISTS : AD_E_INTERNAL, e,
					     "mkdir %s", cg->v1_dirs[i]);
		}
		created[i] = true;
		if (cpuset && v1_cpuset_inherit(cg->v1_dirs[i], err) < 0) {
			v1_rollback(cg, created);
			return -1;
		}
	}
	if (res && v1_apply(cg, res, err) < 0) {
		v1_rollback(cg, created);
		return -1;
	}
	return 0;
}

static int v1_open(cg_manager *cg, ad_error **err)
{
	/* One hierarchy is proof enough that the cgroup exists; each stat of a
	 * cgroupfs dir costs a path walk on every container lookup. */
	for (size_t i = 0; i < cg_v1_hier_count(); i++) {
		struct stat st;
		if (stat(cg->v1_dirs[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			cg->devices_restricted = -1;
			return 0;
		}
	}
	return ad_fail(err, AD_E_NOT_FOUND, "no such cgroup in any hierarchy");
}

static int v1_enter(cg_manager *cg, pid_t pid, ad_error **err)
{
	for (size_t i = 0; i < cg_v1_hier_count(); i++)
		if (cg_writef(cg->v1_dirs[i], "cgroup.procs", err, "%d", (int)pid) < 0)
			return -1;
	return 0;
}

static int v1_update(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	return v1_apply(cg, res, err);
}

/* The files v1_stats reads (cg_manager.stat_fds). */
enum {
	V1_CPUACCT_USAGE,
	V1_CPUACCT_STAT,
	V1_MEMORY_USAGE,
	V1_MEMORY_LIMIT,
	V1_MEMORY_STAT,
	V1_MEMORY_OOM,
	V1_MEMORY_FAILCNT,
	V1_PIDS_CURRENT,
	V1_PIDS_MAX,
	V1_CPU_STAT,
	V1_CPU_SHARES,
	V1_CPU_QUOTA,
	V1_CPU_PERIOD,
	V1_PROCS,
	V1_TASKS,
};
#define V1_SPEC_SLOTS                                                                              \
	(1u << V1_MEMORY_LIMIT | 1u << V1_PIDS_MAX | 1u << V1_CPU_SHARES | 1u << V1_CPU_QUOTA |    \
	 1u << V1_CPU_PERIOD)

static int v1_stats_cpu_cfs(cg_manager *cg, struct rt_stats *st, ad_error **err)
{
	const char *cpu = v1_dir(cg, CG_CTRL_CPU);
	char cpustat[1024], quota[64];
	if (cg_stat_text(cg, V1_CPU_STAT, cpu, "cpu.stat", cpustat, sizeof(cpustat), err) < 0 ||
	    cg_stat_u64(cg, V1_CPU_SHARES, cpu, "cpu.shares", &st->cpu_shares, err) < 0 ||
	    cg_stat_text(cg, V1_CPU_QUOTA, cpu, "cpu.cfs_quota_us", quota, sizeof(quota), err) <
		0 ||
	    cg_stat_u64(cg, V1_CPU_PERIOD, cpu, "cpu.cfs_period_us", &st->cpu_period_us, err) < 0)
		return -1;
	const cg_key cfs[] = {{"nr_periods", &st->cpu_cfs_periods},
			      {"nr_throttled", &st->cpu_cfs_throttled_periods},
			      {"throttled_time", &st->cpu_cfs_throttled_ns}};
	cg_parse_keys(cpustat, cfs, sizeof(cfs) / sizeof(*cfs));
	long long q = *quota ? strtoll(quota, NULL, 10) : -1; /* -1: no quota */
	st->cpu_quota_us = q > 0 ? q : 0;
	return 0;
}

/* Processes from cgroup.procs; without a pids controller, threads from tasks. */
static int v1_stats_procs(cg_manager *cg, struct rt_stats *st, ad_error **err)
{
	const char *dir = v1_dir(cg, CG_CTRL_PIDS);
	if (!dir)
		dir = v1_dir(cg, CG_CTRL_MEMORY);
	if (!dir)
		return 0;
	size_t n = 0;
	if (cg_stat_lines(cg, V1_PROCS, dir, "cgroup.procs", &n, err) < 0)
		return -1;
	st->processes = n;
	if (!v1_dir(cg, CG_CTRL_PIDS)) {
		n = 0;
		if (cg_stat_lines(cg, V1_TASKS, dir, "tasks", &n, err) < 0)
			return -1;
		st->threads = n;
	}
	return 0;
}

static int v1_stats(cg_manager *cg, struct rt_stats *st, ad_error **err)
{
	const char *acct = v1_dir(cg, CG_CTRL_CPUACCT), *mem = v1_dir(cg, CG_CTRL_MEMORY),
		   *pids = v1_dir(cg, CG_CTRL_PIDS);
	/* memory.stat with its total_* lines is about 1.5 KiB. */
	char cpustat[256], memstat[8192], oom[256];
	cg->stat_spec_mask = V1_SPEC_SLOTS;
	if (cg_stat_u64(cg, V1_CPUACCT_USAGE, acct, "cpuacct.usage", &st->cpu_usage_ns, err) < 0 ||
	    cg_stat_text(cg, V1_CPUACCT_STAT, acct, "cpuacct.stat", cpustat, sizeof(cpustat), err) <
		0)
		return -1;
	if (*cpustat) {
		/* cpuacct.stat counts USER_HZ ticks. */
		long hz = sysconf(_SC_CLK_TCK);
		uint64_t ns_per_tick = hz > 0 ? 1000000000ULL / (uint64_t)hz : 10000000ULL;
		uint64_t user = 0, sys = 0;
		const cg_key times[] = {{"user", &user}, {"system", &sys}};
		cg_parse_keys(cpustat, times, 2);
		st->cpu_user_ns = user * ns_per_tick;
		st->cpu_system_ns = sys * ns_per_tick;
	}
	uint64_t limit = 0, inactive = 0;
	if (cg_stat_u64(cg, V1_MEMORY_USAGE, mem, "memory.usage_in_bytes", &st->memory_usage, err) <
		0 ||
	    cg_stat_u64(cg, V1_MEMORY_LIMIT, mem, "memory.limit_in_bytes", &limit, err) < 0 ||
	    cg_stat_text(cg, V1_MEMORY_STAT, mem, "memory.stat", memstat, sizeof(memstat), err) <
		0 ||
	    cg_stat_text(cg, V1_MEMORY_OOM, mem, "memory.oom_control", oom, sizeof(oom), err) < 0)
		return -1;
	st->memory_limit = limit >= CG_V1_UNLIMITED ? 0 : limit;
	/* total_* include descendants, matching usage_in_bytes. */
	const cg_key memkeys[] = {{"total_rss", &st->memory_rss},
				  {"total_cache", &st->memory_cache},
				  {"total_inactive_file", &inactive},
				  {"total_pgfault", &st->memory_page_faults},
				  {"total_pgmajfault", &st->memory_major_page_faults}};
	cg_parse_keys(memstat, memkeys, sizeof(memkeys) / sizeof(*memkeys));
	st->memory_working_set = st->memory_usage > inactive ? st->memory_usage - inactive : 0;
	cg_parse_keyed(oom, "oom_kill", &st->oom_kill_count);
	uint64_t pmax = 0;
	if (cg_stat_u64(cg, V1_PIDS_CURRENT, pids, "pids.current", &st->pids_current, err) < 0 ||
	    cg_stat_u64(cg, V1_PIDS_MAX, pids, "pids.max", &pmax, err) < 0)
		return -1;
	st->pids_limit = pmax == UINT64_MAX ? 0 : pmax;
	st->threads = st->pids_current;
	return v1_stats_cpu_cfs(cg, st, err) < 0 ||
		       cg_stat_u64(cg, V1_MEMORY_FAILCNT, mem, "memory.failcnt",
				   &st->memory_failcnt, err) < 0
		   ? -1
		   : v1_stats_procs(cg, st, err);
}

static int v1_oom_kill_count(cg_manager *cg, uint64_t *ret, ad_error **err)
{
	const char *mem = v1_dir(cg, CG_CTRL_MEMORY);
	if (!mem)
		return ad_fail(err, AD_E_PRECONDITION, "memory controller is not mounted");
	_cleanup_free_ char *oom = NULL;
	if (cg_read(mem, "memory.oom_control", &oom, err) < 0)
		return -1;
	uint64_t n = 0;
	cg_parse_keyed(oom, "oom_kill", &n);
	*ret = n;
	return 0;
}

static bool v1_state_is(const char *dir, const char *want)
{
	_cleanup_free_ char *s = NULL;
	if (cg_read(dir, "freezer.state", &s, NULL) < 0)
		return false;
	s[strcspn(s, "\n")] = '\0';
	return strcmp(s, want) == 0;
}

/* One pass: with a freezer, stop everything first so a fork bomb cannot
 * outrun the signals; the signals land when the cgroup thaws. */
static int v1_signal_once(cg_manager *cg, int sig, size_t *ret_count, ad_error **err)
{
	const char *fz = v1_dir(cg, CG_CTRL_FREEZER);
	if (fz && access(fz, F_OK) < 0)
		fz = NULL; /* a half-destroyed cgroup */
	if (fz) {
		if (cg_write(fz, "freezer.state", "FROZEN", err) < 0)
			return -1;
		for (int i = 0; i < 1000 && !v1_state_is(fz, "FROZEN"); i++)
			cg_sleep_ms(1);
	}
	/* Every hierarchy, not just the freezer's: a task may have been moved
	 * in only some of them. While frozen, the duplicate signals merge. */
	int r = 0;
	size_t total = 0;
	for (size_t i = 0; i < cg_v1_hier_count() && r == 0; i++) {
		size_t n = 0;
		if (access(cg->v1_dirs[i], F_OK) < 0)
			continue;
		r = cg_signal_procs(cg->v1_dirs[i], sig, &n, err);
		total = n > total ? n : total;
	}
	_cleanup_error_ ad_error *thaw_err = NULL;
	if (fz && cg_write(fz, "freezer.state", "THAWED", r < 0 ? &thaw_err : err) < 0 && r == 0)
		return -1;
	*ret_count = total;
	return r;
}

static int v1_kill_all(cg_manager *cg, int sig, ad_error **err)
{
	size_t n;
	return v1_signal_once(cg, sig, &n, err);
}

static int v1_count_all(cg_manager *cg, size_t *ret, ad_error **err)
{
	size_t total = 0;
	for (size_t i = 0; i < cg_v1_hier_count(); i++) {
		size_t n = 0;
		if (access(cg->v1_dirs[i], F_OK) < 0)
			continue;
		if (cg_count_procs(cg->v1_dirs[i], &n, err) < 0)
			return -1;
		total += n;
	}
	*ret = total;
	return 0;
}

static int v1_destroy(cg_manager *cg, ad_error **err)
{
	int64_t deadline = ad_monotonic_ns() + CG_DESTROY_TIMEOUT_NS;
	for (;;) {
		size_t n = 0;
		if (v1_count_all(cg, &n, err) < 0)
			return -1;
		if (n == 0)
			break;
		if (ad_monotonic_ns() > deadline)
			return ad_fail(err, AD_E_DEADLINE,
				       "%zu processes still running after SIGKILL", n);
		size_t seen;
		if (v1_signal_once(cg, SIGKILL, &seen, err) < 0)
			return -1;
		cg_sleep_ms(5);
	}
	for (size_t i = 0; i < cg_v1_hier_count(); i++)
		if (cg_rmdir(cg->v1_dirs[i], err) < 0)
			return -1;
	return 0;
}

static int v1_devices_allow(cg_manager *cg, const char *rule, ad_error **err)
{
	const char *dir = v1_dir(cg, CG_CTRL_DEVICES);
	if (!dir)
		return ad_fail(err, AD_E_PRECONDITION, "devices controller is not mounted");
	/* Default-deny starts with the first rule, so a container nobody lists
	 * devices for keeps the parent's access. */
	if (cg->devices_restricted < 0) {
		_cleanup_free_ char *list = NULL;
		cg->devices_restricted = cg_read(dir, "devices.list", &list, NULL) == 0 &&
					 strcmp(list, "a *:* rwm\n") != 0;
	}
	if (!cg->devices_restricted) {
		if (cg_write(dir, "devices.deny", "a", err) < 0)
			return -1;
		cg->devices_restricted = 1;
	}
	return cg_write(dir, "devices.allow", rule, err);
}

const cg_driver cg_v1_driver = {
    .name = "v1",
    .create = v1_create,
    .open = v1_open,
    .enter = v1_enter,
    .update = v1_update,
    .stats = v1_stats,
    .oom_kill_count = v1_oom_kill_count,
    .kill_all = v1_kill_all,
    .destroy = v1_destroy,
    .devices_allow = v1_devices_allow,
};
