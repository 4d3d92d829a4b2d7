/* cgroup_v2.c — the driver for the unified hierarchy: one directory, the
 * controllers enabled top-down through cgroup.subtree_control. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup_internal.h"

static const char *const v2_wanted[] = {"cpu", "memory", "pids", "cpuset", "io"};
#define V2_N_WANTED (sizeof(v2_wanted) / sizeof(v2_wanted[0]))

static bool v2_has_word(const char *text, const char *word)
{
	size_t wl = strlen(word);
	for (const char *p = text; (p = strstr(p, word)); p += wl) {
		bool start = p == text || p[-1] == ' ' || p[-1] == '\n';
		bool end = p[wl] == '\0' || p[wl] == ' ' || p[wl] == '\n';
		if (start && end)
			return true;
	}
	return false;
}

/* Makes every wanted controller that `dir` offers available to its children.
 * One write first (the common case); if the kernel refuses the batch, each
 * controller alone, so one unavailable controller does not cost the rest. A
 * controller that stays off shows up later as a missing limit file. */
static int v2_enable_controllers(const char *dir, ad_error **err)
{
	_cleanup_free_ char *avail = NULL, *enabled = NULL;
	if (cg_read_opt(dir, "cgroup.controllers", &avail, err) < 0 ||
	    cg_read_opt(dir, "cgroup.subtree_control", &enabled, err) < 0)
		return -1;
	if (!avail)
		return 0;
	char batch[128] = "";
	const char *todo[V2_N_WANTED];
	size_t n = 0;
	for (size_t i = 0; i < V2_N_WANTED; i++) {
		if (!v2_has_word(avail, v2_wanted[i]) ||
		    (enabled && v2_has_word(enabled, v2_wanted[i])))
			continue;
		todo[n++] = v2_wanted[i];
		snprintf(batch + strlen(batch), sizeof(batch) - strlen(batch), "%s+%s",
			 *batch ? " " : "", v2_wanted[i]);
	}
	if (n == 0)
		return 0;
	_cleanup_error_ ad_error *e = NULL;
	if (cg_write(dir, "cgroup.subtree_control", batch, &e) == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		_cleanup_error_ ad_error *one = NULL;
		if (cg_writef(dir, "cgroup.subtree_control", &one, "+%s", todo[i]) < 0)
			ad_debug("cgroup: %s", one->message);
	}
	return 0;
}

static int v2_write_max(const char *dir, const char *file, int64_t v, ad_error **err)
{
	if (v == -1)
		return cg_write(dir, file, "max", err);
	return cg_writef(dir, file, err, "%" PRId64, v);
}

static int v2_apply_memory(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	int64_t limit = res->memory_limit, swap = res->memory_swap;
	if (limit > 0) {
		/* Unlike v1, the kernel answers a memory.max below usage with OOM
		 * kills, not EBUSY, so refuse here. Inactive file pages reclaim. */
		uint64_t usage = 0, inactive = 0;
		_cleanup_free_ char *stat = NULL;
		if (cg_read_u64_opt(cg->dir, "memory.current", &usage, err) < 0 ||
		    cg_read_opt(cg->dir, "memory.stat", &stat, err) < 0)
			return -1;
		if (stat)
			cg_parse_keyed(stat, "inactive_file", &inactive);
		uint64_t ws = usage > inactive ? usage - inactive : 0;
		if ((uint64_t)limit < ws)
			return ad_fail(err, AD_E_PRECONDITION,
				       "memory limit %" PRId64 " is below current usage %" PRIu64
				       " (working set %" PRIu64 ")",
				       limit, usage, ws);
	}
	if (limit && v2_write_max(cg->dir, "memory.max", limit, err) < 0)
		return -1;
	if (swap) {
		/* Docker's memory_swap is memory+swap; v2 limits swap alone. */
		int64_t only_swap = swap == -1 ? -1 : swap - limit;
		_cleanup_error_ ad_error *e = NULL;
		if (v2_write_max(cg->dir, "memory.swap.max", only_swap, &e) < 0) {
			if (e->code != AD_E_NOT_FOUND || (only_swap != 0 && only_swap != -1)) {
				*err = ad_steal_ptr(e);
				return -1;
			}
		}
	}
	return 0;
}

static int v2_apply_cpu_max(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	char quota[32] = "max";
	uint64_t period = 100000;
	_cleanup_free_ char *cur = NULL;
	/* cpu.max holds "quota period"; keep whichever half is not being set. */
	if (cg_read_opt(cg->dir, "cpu.max", &cur, err) < 0)
		return -1;
	if (cur) {
		unsigned long long p;
		if (sscanf(cur, "%31s %llu", quota, &p) == 2)
			period = p;
	}
	if (res->cpu_quota_us == -1)
		snprintf(quota, sizeof(quota), "max");
	else if (res->cpu_quota_us > 0)
		snprintf(quota, sizeof(quota), "%" PRId64, res->cpu_quota_us);
	if (res->cpu_period_us)
		period = res->cpu_period_us;
	return cg_writef(cg->dir, "cpu.max", err, "%s %" PRIu64, quota, period);
}

static int v2_apply(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	if (res->cpu_shares && cg_writef(cg->dir, "cpu.weight", err, "%" PRIu64,
					 cg_shares_to_weight(res->cpu_shares)) < 0)
		return -1;
	if ((res->cpu_quota_us || res->cpu_period_us) && v2_apply_cpu_max(cg, res, err) < 0)
		return -1;
	if (res->cpuset_cpus && *res->cpuset_cpus &&
	    cg_write(cg->dir, "cpuset.cpus", res->cpuset_cpus, err) < 0)
		return -1;
	if (res->cpuset_mems && *res->cpuset_mems &&
	    cg_write(cg->dir, "cpuset.mems", res->cpuset_mems, err) < 0)
		return -1;
	if (v2_apply_memory(cg, res, err) < 0)
		return -1;
	if (res->pids_limit && v2_write_max(cg->dir, "pids.max", res->pids_limit, err) < 0)
		return -1;
	return 0;
}

/* A missing limit file means the controller is not enabled for this cgroup. */
static int v2_apply_checked(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	if (v2_apply(cg, res, err) == 0)
		return 0;
	if ((*err)->code == AD_E_NOT_FOUND) {
		(*err)->code = AD_E_PRECONDITION;
		ad_error_wrap(err, "controller not enabled in %s's cgroup.subtree_control",
			      *cg->parent_path ? cg->parent_path : "the root");
	}
	return -1;
}

static int v2_create(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	_cleanup_free_ char *cur = ad_strdup(cg_root());
	for (const char *p = cg->path; *p;) {
		size_t len = strcspn(p, "/");
		bool leaf = p[len] == '\0';
		if (v2_enable_controllers(cur, err) < 0)
			return -1;
		char *next = ad_asprintf("%s/%.*s", cur, (int)len, p);
		free(cur);
		cur = next;
		if (leaf) {
			if (mkdir(cur, 0755) < 0)
				return ad_error_make(err,
						     errno == EEXIST ? AD_E_EXISTS : AD_E_INTERNAL,
						     errno, "mkdir %s", cur);
		} else {
			bool made;
			if (cg_mkdir(cur, &made, err) < 0)
				return -1;
		}
		p += len;
		if (*p == '/')
			p++;
	}
	if (res && v2_apply_checked(cg, res, err) < 0) {
		rmdir(cg->dir);
		return -1;
	}
	return 0;
}

static int v2_open(cg_manager *cg, ad_error **err)
{
	struct stat st;
	if (stat(cg->dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return ad_fail(err, AD_E_NOT_FOUND, "no such cgroup: %s", cg->dir);
	return 0;
}

static int v2_enter(cg_manager *cg, pid_t pid, ad_error **err)
{
	return cg_writef(cg->dir, "cgroup.procs", err, "%d", (int)pid);
}

static int v2_update(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	return v2_apply_checked(cg, res, err);
}

/* The files v2_stats reads (cg_manager.stat_fds). */
enum {
	V2_CPU_STAT,
	V2_CPU_WEIGHT,
	V2_CPU_MAX,
	V2_MEMORY_STAT,
	V2_MEMORY_EVENTS,
	V2_MEMORY_CURRENT,
	V2_MEMORY_MAX,
	V2_PIDS_CURRENT,
	V2_PIDS_MAX,
	V2_PROCS,
};
#define V2_SPEC_SLOTS                                                                              \
	(1u << V2_CPU_WEIGHT | 1u << V2_CPU_MAX | 1u << V2_MEMORY_MAX | 1u << V2_PIDS_MAX)

static int v2_stats_cpu_cfs(cg_manager *cg, const char *cpustat, struct rt_stats *st,
			    ad_error **err)
{
	char max[64];
	uint64_t weight = 0;
	if (cg_stat_u64(cg, V2_CPU_WEIGHT, cg->dir, "cpu.weight", &weight, err) < 0 ||
	    cg_stat_text(cg, V2_CPU_MAX, cg->dir, "cpu.max", max, sizeof(max), err) < 0)
		return -1;
	st->cpu_shares = cg_weight_to_shares(weight);
	uint64_t throttled_us = 0;
	const cg_key cfs[] = {{"nr_periods", &st->cpu_cfs_periods},
			      {"nr_throttled", &st->cpu_cfs_throttled_periods},
			      {"throttled_usec", &throttled_us}};
	cg_parse_keys(cpustat, cfs, sizeof(cfs) / sizeof(*cfs));
	st->cpu_cfs_throttled_ns = throttled_us * 1000;
	/* "quota period" or "max period" */
	long long quota = 0;
	unsigned long long period = 0;
	if (*max && sscanf(max, "%lld %llu", &quota, &period) >= 1)
		st->cpu_quota_us = quota > 0 ? quota : 0;
	if (*max && !period)
		sscanf(max, "max %llu", &period);
	st->cpu_period_us = period;
	return 0;
}

static int v2_stats(cg_manager *cg, struct rt_stats *st, ad_error **err)
{
	/* memory.stat is about 1.5 KiB on 6.x kernels. */
	char cpu[1024], mem[8192], events[512];
	cg->stat_spec_mask = V2_SPEC_SLOTS;
	uint64_t inactive = 0, limit = 0, pmax = 0;
	if (cg_stat_text(cg, V2_CPU_STAT, cg->dir, "cpu.stat", cpu, sizeof(cpu), err) < 0 ||
	    cg_stat_text(cg, V2_MEMORY_STAT, cg->dir, "memory.stat", mem, sizeof(mem), err) < 0 ||
	    cg_stat_text(cg, V2_MEMORY_EVENTS, cg->dir, "memory.events", events, sizeof(events),
			 err) < 0 ||
	    cg_stat_u64(cg, V2_MEMORY_CURRENT, cg->dir, "memory.current", &st->memory_usage, err) <
		0 ||
	    cg_stat_u64(cg, V2_MEMORY_MAX, cg->dir, "memory.max", &limit, err) < 0 ||
	    cg_stat_u64(cg, V2_PIDS_CURRENT, cg->dir, "pids.current", &st->pids_current, err) < 0 ||
	    cg_stat_u64(cg, V2_PIDS_MAX, cg->dir, "pids.max", &pmax, err) < 0)
		return -1;
	uint64_t usage = 0, user = 0, sys = 0;
	const cg_key cpukeys[] = {
	    {"usage_usec", &usage}, {"user_usec", &user}, {"system_usec", &sys}};
	cg_parse_keys(cpu, cpukeys, sizeof(cpukeys) / sizeof(*cpukeys));
	st->cpu_usage_ns = usage * 1000;
	st->cpu_user_ns = user * 1000;
	st->cpu_system_ns = sys * 1000;
	const cg_key memkeys[] = {{"anon", &st->memory_rss},
				  {"file", &st->memory_cache},
				  {"inactive_file", &inactive},
				  {"pgfault", &st->memory_page_faults},
				  {"pgmajfault", &st->memory_major_page_faults}};
	cg_parse_keys(mem, memkeys, sizeof(memkeys) / sizeof(*memkeys));
	st->memory_working_set = st->memory_usage > inactive ? st->memory_usage - inactive : 0;
	st->memory_limit = limit == UINT64_MAX ? 0 : limit;
	st->pids_limit = pmax == UINT64_MAX ? 0 : pmax;
	const cg_key evkeys[] = {{"oom_kill", &st->oom_kill_count}, {"max", &st->memory_failcnt}};
	cg_parse_keys(events, evkeys, 2);
	st->threads = st->pids_current;
	size_t procs = 0;
	if (v2_stats_cpu_cfs(cg, cpu, st, err) < 0 ||
	    cg_stat_lines(cg, V2_PROCS, cg->dir, "cgroup.procs", &procs, err) < 0)
		return -1;
	st->processes = procs;
	return 0;
}

static int v2_oom_kill_count(cg_manager *cg, uint64_t *ret, ad_error **err)
{
	_cleanup_free_ char *events = NULL;
	/* No memory.events: the memory controller is off here, so nothing in
	 * this cgroup can have been OOM-killed by its limit. */
	if (cg_read_opt(cg->dir, "memory.events", &events, err) < 0)
		return -1;
	uint64_t n = 0;
	if (events)
		cg_parse_keyed(events, "oom_kill", &n);
	*ret = n;
	return 0;
}

static bool v2_frozen(const char *dir)
{
	_cleanup_free_ char *ev = NULL;
	uint64_t frozen = 0;
	if (cg_read(dir, "cgroup.events", &ev, NULL) < 0)
		return true; /* nothing to wait for */
	cg_parse_keyed(ev, "frozen", &frozen);
	return frozen == 1;
}

static int v2_kill_all(cg_manager *cg, int sig, ad_error **err)
{
	/* cgroup.kill (5.14+) kills atomically, forks included. */
	if (sig == SIGKILL && cg_file_exists(cg->dir, "cgroup.kill"))
		return cg_write(cg->dir, "cgroup.kill", "1", err);
	if (!cg_file_exists(cg->dir, "cgroup.freeze"))
		return cg_signal_procs(cg->dir, sig, NULL, err);
	if (cg_write(cg->dir, "cgroup.freeze", "1", err) < 0)
		return -1;
	for (int i = 0; i < 1000 && !v2_frozen(cg->dir); i++)
		cg_sleep_ms(1);
	int r = cg_signal_procs(cg->dir, sig, NULL, err);
	_cleanup_error_ ad_error *thaw_err = NULL;
	if (cg_write(cg->dir, "cgroup.freeze", "0", r < 0 ? &thaw_err : err) < 0 && r == 0)
		return -1;
	return r;
}

static int v2_destroy(cg_manager *cg, ad_error **err)
{
	if (access(cg->dir, F_OK) < 0)
		return 0;
	int64_t deadline = ad_monotonic_ns() + CG_DESTROY_TIMEOUT_NS;
	for (;;) {
		size_t n = 0;
		if (cg_count_procs(cg->dir, &n, err) < 0)
			return -1;
		if (n == 0)
			break;
		if (ad_monotonic_ns() > deadline)
			return ad_fail(err, AD_E_DEADLINE,
				       "%zu processes still running after SIGKILL", n);
		if (v2_kill_all(cg, SIGKILL, err) < 0)
			return -1;
		cg_sleep_ms(5);
	}
	return cg_rmdir(cg->dir, err);
}

static int v2_devices_allow(cg_manager *cg, const char *rule, ad_error **err)
{
	cg->dev_rules = ad_realloc(cg->dev_rules, (cg->n_dev_rules + 1) * sizeof(char *));
	cg->dev_rules[cg->n_dev_rules++] = ad_strdup(rule);
	if (cg_bpf_devices_apply(cg->dir, cg->dev_rules, cg->n_dev_rules, err) == 0)
		return 0;
	free(cg->dev_rules[--cg->n_dev_rules]);
	return ad_error_wrap(err, "device rule \"%s\"", rule);
}

const cg_driver cg_v2_driver = {
    .name = "v2",
    .create = v2_create,
    .open = v2_open,
    .enter = v2_enter,
    .update = v2_update,
    .stats = v2_stats,
    .oom_kill_count = v2_oom_kill_count,
    .kill_all = v2_kill_all,
    .destroy = v2_destroy,
    .devices_allow = v2_devices_allow,
};
