/* runtime.h — the one public header of libadruntime: a container config in
 * plain C structs -> an isolated process under a shim. No protobuf here.
 * (Being built: issue 4. The runtime work owns this file; the resource and
 * stats types below are shared with the cgroup drivers.) */
#ifndef AGENTD_RUNTIME_H
#define AGENTD_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"

/* Cgroup limits. 0 means "not set" for every field; -1 means "unlimited"
 * where the field allows it. */
typedef struct rt_resources {
	uint64_t cpu_shares;    /* v1 cpu.shares (2..262144); v2: converted to cpu.weight */
	int64_t cpu_quota_us;   /* cpu.cfs_quota_us / cpu.max quota; -1 unlimited */
	uint64_t cpu_period_us; /* cpu.cfs_period_us / cpu.max period */
	char *cpuset_cpus;      /* "0-1,3"; NULL: not set */
	char *cpuset_mems;
	int64_t memory_limit;   /* bytes; -1 unlimited */
	int64_t memory_swap;    /* memory + swap in bytes (Docker semantics); -1 unlimited */
	int64_t pids_limit;     /* -1 unlimited */
} rt_resources;

/* A snapshot of a container's cgroup usage. */
typedef struct rt_stats {
	int64_t timestamp_ns;         /* CLOCK_REALTIME when read */
	uint64_t cpu_usage_ns;        /* total CPU time */
	uint64_t cpu_user_ns;
	uint64_t cpu_system_ns;
	uint64_t memory_usage;        /* bytes charged (usage_in_bytes / memory.current) */
	uint64_t memory_working_set;  /* usage - inactive_file (what kubelet evicts on) */
	uint64_t memory_rss;          /* anon */
	uint64_t memory_cache;        /* file */
	uint64_t memory_limit;        /* effective limit; 0 if none */
	uint64_t memory_page_faults;
	uint64_t memory_major_page_faults;
	uint64_t pids_current;
	uint64_t pids_limit;          /* 0 if none */
	uint64_t oom_kill_count;      /* OOM kills inside this cgroup so far */
} rt_stats;

#endif
