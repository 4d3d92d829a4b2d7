/* cgroup.h — agentd's cgroup drivers (v1 and v2 behind one interface).
 * Internal to libadruntime: only runtime/ includes this. */
#ifndef AGENTD_CGROUP_H
#define AGENTD_CGROUP_H

#include <stdint.h>
#include <sys/types.h>

#include "base.h"
#include "runtime.h"

typedef struct cg_manager cg_manager;

/* parent: cgroupfs path relative to each hierarchy root, e.g. "agentd" or a CRI
 * cgroup_parent like "/kubepods/besteffort/pod123"; name: the container's leaf
 * (a single path component). Creates the directories and applies res. */
int cg_create(const char *parent, const char *name, const rt_resources *res, cg_manager **ret,
	      ad_error **err);
/* An existing one, after agentd restarts (AD_E_NOT_FOUND if absent). */
int cg_open(const char *parent, const char *name, cg_manager **ret, ad_error **err);
int cg_enter(cg_manager *cg, pid_t pid, ad_error **err);
/* Opens cgroup.procs for writing in each hierarchy (v2: the one), so that
 * another process (the shim) can move a pid in by writing it to each. */
int cg_open_procs(cg_manager *cg, int *fds, size_t max, size_t *ret_n, ad_error **err);
/* Live; a memory limit below current usage -> AD_E_PRECONDITION naming both values. */
int cg_update(cg_manager *cg, const rt_resources *res, ad_error **err);
int cg_stats(cg_manager *cg, struct rt_stats *ret, ad_error **err);
int cg_oom_kill_count(cg_manager *cg, uint64_t *ret, ad_error **err);
int cg_kill_all(cg_manager *cg, int sig, ad_error **err);
/* Kills every process (freeze/kill loop), waits until empty (bounded), rmdir
 * in every hierarchy. Does not free cg. */
int cg_destroy(cg_manager *cg, ad_error **err);
void cg_free(cg_manager *cg);
/* "v1" or "v2", detected once. */
const char *cg_version_name(void);
/* "c 1:3 rwm" (or "a"). Everything not allowed is denied from the first call
 * on; until then the cgroup keeps its parent's device access.
 * v1: devices.deny "a" once, then devices.allow rule.
 * v2: the rules this manager was given so far are compiled into one
 * BPF_PROG_TYPE_CGROUP_DEVICE program that replaces any device program on
 * the cgroup; so after cg_open, give the whole rule set again. */
int cg_devices_allow(cg_manager *cg, const char *rule, ad_error **err);
/* The relative path ("agentd/c1"), for state files and metrics. */
const char *cg_path(cg_manager *cg);

/* Tests only: use `root` instead of /sys/fs/cgroup. version 2: root is a
 * cgroup2-like directory; version 1: root holds one directory per controller
 * (named like the controller, co-mounts as "cpu,cpuacct"). root NULL restores
 * detection. */
int cg_set_root_for_testing(const char *root, int version);

#endif
