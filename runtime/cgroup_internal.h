/* cgroup_internal.h — shared between cgroup.c and the per-version drivers
 * (cgroup_v1.c, cgroup_v2.c). Not included outside the cgroup code. */
#ifndef AGENTD_CGROUP_INTERNAL_H
#define AGENTD_CGROUP_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "cgroup.h"

/* v1 controllers agentd knows; a hierarchy is a mask of these. */
enum {
	CG_CTRL_CPU = 1u << 0,
	CG_CTRL_CPUACCT = 1u << 1,
	CG_CTRL_CPUSET = 1u << 2,
	CG_CTRL_MEMORY = 1u << 3,
	CG_CTRL_DEVICES = 1u << 4,
	CG_CTRL_FREEZER = 1u << 5,
	CG_CTRL_BLKIO = 1u << 6,
	CG_CTRL_PIDS = 1u << 7,
	CG_CTRL_HUGETLB = 1u << 8,
	CG_CTRL_NET_CLS = 1u << 9,
	CG_CTRL_NET_PRIO = 1u << 10,
	CG_CTRL_PERF_EVENT = 1u << 11,
	CG_CTRL_RDMA = 1u << 12,
	CG_CTRL_MISC = 1u << 13,
};

#define CG_V1_MAX_HIER 16
/* Bounds every read of a cgroup file: they are small, but a hostile tmpfs
 * stand-in or a cgroup with huge cgroup.procs must not exhaust memory. */
#define CG_MAX_FILE (4u << 20)
/* Files a driver's stats read (the stat_fds of a manager). */
#define CG_STAT_SLOTS 16
/* How long cg_destroy waits for the cgroup to empty. */
#define CG_DESTROY_TIMEOUT_NS (10LL * 1000 * 1000 * 1000)

typedef struct cg_v1_hier {
	char *mountpoint; /* absolute */
	unsigned mask;
} cg_v1_hier;

typedef struct cg_driver {
	const char *name;
	/* cg->path and the per-hierarchy directories are set; mkdir and limits. */
	int (*create)(cg_manager *cg, const rt_resources *res, ad_error **err);
	int (*open)(cg_manager *cg, ad_error **err);
	int (*enter)(cg_manager *cg, pid_t pid, ad_error **err);
	int (*update)(cg_manager *cg, const rt_resources *res, ad_error **err);
	int (*stats)(cg_manager *cg, struct rt_stats *ret, ad_error **err);
	int (*oom_kill_count)(cg_manager *cg, uint64_t *ret, ad_error **err);
	int (*kill_all)(cg_manager *cg, int sig, ad_error **err);
	int (*destroy)(cg_manager *cg, ad_error **err);
	int (*devices_allow)(cg_manager *cg, const char *rule, ad_error **err);
} cg_driver;

struct cg_manager {
	const cg_driver *drv;
	char *path;	   /* normalized, relative, no leading '/': "agentd/c1" */
	char *parent_path; /* normalized parent ("" for the root) */
	/* v2: the one directory. v1: one per hierarchy, same index as cg_v1_hiers. */
	char *dir;
	char *v1_dirs[CG_V1_MAX_HIER];
	/* v1: devices.deny "a" already written. Unknown (-1) after cg_open until
	 * needed: reading devices.list on every open cost each container lookup. */
	int devices_restricted;
	char **dev_rules;	 /* v2: the allowlist given to this manager */
	size_t n_dev_rules;
	/* The files cg_stats reads, kept open once read (a periodic reader such
	 * as the metrics scrape then costs a pread each, no path walk): the fd
	 * + 1, 0 before the first read, -1 when the file does not exist. Slots
	 * are the driver's. */
	int stat_fds[CG_STAT_SLOTS];
	/* Slots holding limits (the container's spec): read once, then served
	 * from spec_text until cg_update (cAdvisor, too, reads a container's
	 * spec once). The driver's stats set the mask. */
	unsigned stat_spec_mask, stat_spec_cached;
	char stat_spec_text[CG_STAT_SLOTS][32];
};

extern const cg_driver cg_v1_driver;
extern const cg_driver cg_v2_driver;

/* The detected layout (valid once cg_version_name() has run). */
const char *cg_root(void);
bool cg_testing(void);
size_t cg_v1_hier_count(void);
const cg_v1_hier *cg_v1_hier_get(size_t i);

/* One /proc/self/mountinfo line (modified in place): true for a v1 mount
 * carrying at least one controller agentd knows, with its unescaped
 * mountpoint (pointing into line) and controller mask. */
bool cg_parse_mountinfo_line(char *line, const char **ret_mountpoint, unsigned *ret_mask);

/* File helpers: dir is absolute; errors name the file and value. The errno
 * of a failed write is kept in (*err)->errno_value for callers that react to
 * EBUSY/EINVAL. */
int cg_write(const char *dir, const char *file, const char *value, ad_error **err);
int cg_writef(const char *dir, const char *file, ad_error **err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int cg_read(const char *dir, const char *file, char **ret, ad_error **err);
/* "max" reads as UINT64_MAX. */
int cg_read_u64(const char *dir, const char *file, uint64_t *ret, ad_error **err);
/* Missing files (a controller not enabled, an older kernel, dir NULL) leave
 * *ret alone (NULL / untouched) and succeed; other errors fail. */
int cg_read_opt(const char *dir, const char *file, char **ret, ad_error **err);
int cg_read_u64_opt(const char *dir, const char *file, uint64_t *ret, ad_error **err);
/* Looks up `key` in "key value" lines; *ret untouched (returns 0) if absent. */
bool cg_parse_keyed(const char *text, const char *key, uint64_t *ret);
/* The same for several keys in one pass over the lines (memory.stat has
 * dozens): each found key's value goes to its ret; returns how many were. */
typedef struct cg_key {
	const char *name;
	uint64_t *ret;
} cg_key;
size_t cg_parse_keys(const char *text, const cg_key *keys, size_t n);
bool cg_file_exists(const char *dir, const char *file);
/* Stats files through the manager's kept fds (slot: the driver's number for
 * dir/file). Like the _opt readers, a missing file (or dir NULL) is not an
 * error: 0 and an empty text / *ret untouched; 1 when read. text is
 * NUL-terminated and cut at len - 1 bytes. A removed cgroup fails with
 * AD_E_NOT_FOUND. */
int cg_stat_text(cg_manager *cg, unsigned slot, const char *dir, const char *file, char *text,
		 size_t len, ad_error **err);
int cg_stat_u64(cg_manager *cg, unsigned slot, const char *dir, const char *file, uint64_t *ret,
		ad_error **err);
/* The number of lines (cgroup.procs, tasks), however long the file; read
 * from a fresh open each time (v1 caches pid lists per open file). */
int cg_stat_lines(cg_manager *cg, unsigned slot, const char *dir, const char *file, size_t *ret,
		  ad_error **err);
/* Closes the kept fds. */
void cg_stat_close(cg_manager *cg);

int cg_validate_cpuset(const char *what, const char *value, ad_error **err);
int cg_validate_resources(const rt_resources *res, ad_error **err);
uint64_t cg_shares_to_weight(uint64_t shares);
uint64_t cg_weight_to_shares(uint64_t weight); /* the inverse, for stats */
int cg_validate_device_rule(const char *rule, ad_error **err);

/* Sends sig to every pid in dir/cgroup.procs; *ret_count = pids seen. */
int cg_signal_procs(const char *dir, int sig, size_t *ret_count, ad_error **err);
int cg_count_procs(const char *dir, size_t *ret_count, ad_error **err);
/* mkdir that accepts an existing directory; *ret_created says which. */
int cg_mkdir(const char *dir, bool *ret_created, ad_error **err);
/* rmdir with retries for the short EBUSY window after the last task exits;
 * ENOENT is success. */
/* v2: compiles rules (already validated) into a device program, attaches
 * it to dir and detaches every device program attached there before. */
int cg_bpf_devices_apply(const char *dir, char *const *rules, size_t n_rules, ad_error **err);
int cg_rmdir(const char *dir, ad_error **err);
void cg_sleep_ms(unsigned ms);

#endif
