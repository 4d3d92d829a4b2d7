/* runtime.h — the one public header of libadruntime: a container config in
 * plain C structs -> an isolated process under a shim. No protobuf here.
 * (Being built: issue 4. The runtime work owns this file; the resource and
 * stats types below are shared with the cgroup drivers.) */
#ifndef AGENTD_RUNTIME_H
#define AGENTD_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base.h"

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
	/* CFS bandwidth control (cpu.stat): periods elapsed, throttled, time throttled. */
	uint64_t cpu_cfs_periods, cpu_cfs_throttled_periods, cpu_cfs_throttled_ns;
	uint64_t memory_failcnt;      /* times usage hit the limit (v2: memory.events max) */
	uint64_t processes;           /* cgroup.procs */
	uint64_t threads;             /* tasks (pids.current) */
	/* The limits in force as the cgroup files say (v2 weight as shares). */
	uint64_t cpu_shares;
	int64_t cpu_quota_us;         /* 0 if none */
	uint64_t cpu_period_us;
} rt_stats;

/* ---- container configuration (plain C; the caller owns every pointer) -- */

typedef enum rt_ns_type {
	RT_NS_PID,
	RT_NS_NET,
	RT_NS_IPC,
	RT_NS_UTS,
	RT_NS_MOUNT,
	RT_NS_USER,
	RT_NS_CGROUP,
	_RT_NS_MAX,
} rt_ns_type;

typedef enum rt_ns_mode {
	RT_NS_SHARE_HOST = 0, /* stay in agentd's namespace */
	RT_NS_NEW,
	RT_NS_JOIN, /* setns() to `path` (e.g. /proc/PID/ns/net or a bind-mounted netns) */
} rt_ns_mode;

typedef struct rt_namespace {
	rt_ns_mode mode;
	const char *path; /* RT_NS_JOIN only */
} rt_namespace;

typedef enum rt_propagation {
	RT_PROP_PRIVATE = 0, /* rprivate: the default for container mounts */
	RT_PROP_RSLAVE,
	RT_PROP_RSHARED,
} rt_propagation;

typedef struct rt_mount {
	const char *type;	 /* "bind" or "tmpfs" */
	const char *source;	 /* host path for binds; ignored for tmpfs */
	const char *destination; /* absolute path inside the container */
	bool readonly;
	rt_propagation propagation;
	const char *options; /* tmpfs data, e.g. "size=64m,mode=1777"; NULL: none */
} rt_mount;

typedef struct rt_id_map {
	uint32_t container_id;
	uint32_t host_id;
	uint32_t size;
} rt_id_map;

typedef struct rt_rlimit {
	int resource; /* RLIMIT_* */
	uint64_t soft;
	uint64_t hard;
} rt_rlimit;

typedef enum rt_seccomp_mode {
	RT_SECCOMP_DEFAULT = 0, /* Docker's default profile, built in */
	RT_SECCOMP_UNCONFINED,
	RT_SECCOMP_CUSTOM, /* Docker/OCI JSON profile at seccomp_profile */
} rt_seccomp_mode;

/* Capability masks are (1ULL << CAP_xxx) bits. */
uint64_t rt_default_capabilities(void); /* Docker's default set */

typedef struct rt_security {
	bool privileged; /* all capabilities, no seccomp, no masked/readonly paths */
	bool no_new_privs;
	bool readonly_rootfs;
	/* false: bounding = effective = permitted = inheritable = Docker's default
	 * set, ambient empty (ambient is the caps a non-root user keeps). */
	bool capabilities_set;
	uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
	rt_seccomp_mode seccomp;
	const char *seccomp_profile;  /* RT_SECCOMP_CUSTOM: path of the JSON file */
	const char *apparmor_profile; /* NULL: none applied */
	/* NULL: the OCI/Docker defaults; a list with only NULL: none. */
	const char *const *masked_paths;
	const char *const *readonly_paths;
	/* Extra cgroup device rules ("c 10:200 rwm") beyond the standard nodes. */
	const char *const *device_rules;
} rt_security;

typedef struct rt_config {
	const char *id;	    /* [A-Za-z0-9][A-Za-z0-9_.-]{0,127} */
	const char *rootfs; /* host path of the prepared root filesystem */
	const char *const
	    *args;		/* NULL-terminated; args[0] is resolved with the container's PATH */
	const char *const *env; /* NULL-terminated "K=V"; NULL: PATH only */
	const char *cwd;	/* NULL: "/" */
	uid_t uid;
	gid_t gid;
	const gid_t *additional_gids;
	size_t n_additional_gids;
	const char *hostname; /* new UTS namespace only; NULL: the id, cut to 63 chars */
	const rt_mount *mounts;
	size_t n_mounts;
	/* Zero-initialized means "share the host's"; use rt_config_init() for the
	 * usual container (new pid, ipc, uts, mount, cgroup; net per the caller). */
	rt_namespace namespaces[_RT_NS_MAX];
	const rt_id_map *uid_maps; /* new user namespace only */
	size_t n_uid_maps;
	const rt_id_map *gid_maps;
	size_t n_gid_maps;
	rt_resources resources;
	const char *cgroup_parent; /* NULL: the runtime's default */
	rt_security security;
	const rt_rlimit *rlimits;
	size_t n_rlimits;
	int oom_score_adj;
	bool oom_score_adj_set;
	bool tty;	 /* stdin/stdout/stderr on a pty held by the shim */
	bool open_stdin; /* stdin is a pipe the shim holds (fed by rt_attach); else /dev/null */
	bool stdin_once; /* the first attached client's EOF closes the container's stdin */
	const char *log_path; /* CRI-format log; NULL: output discarded */
} rt_config;

/* Zeroes cfg and sets the usual namespaces (new pid, ipc, uts, mount, net). */
void rt_config_init(rt_config *cfg);

/* The whole config as bytes, to be kept (agentd stores a container's config
 * once, at create, and reads it for exec and status): the flat format the
 * shim gets its config in, plus the fields only the parent uses. *ret is
 * malloc'd. rt_config_unpack points cfg's strings into buf (keep it alive)
 * and allocates its arrays, which rt_config_unpacked_clear frees. A blob of
 * another format or a damaged one: AD_E_DATA_LOSS. */
void rt_config_pack(const rt_config *cfg, char **ret, size_t *ret_len);
int rt_config_unpack(const char *buf, size_t len, rt_config *cfg, ad_error **err);
void rt_config_unpacked_clear(rt_config *cfg);

/* ---- runtime and containers --------------------------------------------- */

typedef struct rt_options {
	const char *state_root;	   /* NULL: /run/agentd/containers */
	const char *shim_path;	   /* NULL: $AGENTD_SHIM or AGENTD_LIBEXECDIR/agentd-shim */
	const char *cgroup_parent; /* NULL: "agentd" */
} rt_options;

typedef struct rt_runtime rt_runtime;
typedef struct rt_container rt_container;

int rt_runtime_new(const rt_options *opts, rt_runtime **ret, ad_error **err);
void rt_runtime_free(rt_runtime *rt);

typedef enum rt_status {
	RT_STATUS_CREATED,
	RT_STATUS_RUNNING,
	RT_STATUS_STOPPED,
	_RT_STATUS_MAX,
} rt_status;

typedef struct rt_state {
	rt_status status;
	pid_t pid;     /* the init's pid on the host; 0 once stopped */
	int exit_code; /* 128 + signal when killed by a signal */
	int signal;    /* the killing signal, or 0 */
	bool oom_killed;
	/* The shim was killed without recording the exit: exit_code is 255
	 * (unknown) and everything in the container's cgroup was killed. */
	bool shim_died;
	int64_t created_at; /* CLOCK_REALTIME ns */
	int64_t started_at; /* 0 if never started */
	int64_t finished_at;
} rt_state;

/* Sets up the container's init (namespaces, mounts, security) under a new
 * detached shim; the init waits for rt_start before exec'ing args[0]. Any
 * failure leaves nothing behind. */
int rt_create(rt_runtime *rt, const rt_config *cfg, rt_container **ret, ad_error **err);
/* A container created earlier (possibly by another agentd process). */
int rt_open(rt_runtime *rt, const char *id, rt_container **ret, ad_error **err);
/* Ids of the containers that have a state dir. */
int rt_list(rt_runtime *rt, char ***ret_ids, size_t *ret_n, ad_error **err);
void rt_list_free(char **ids, size_t n);

const char *rt_container_id(const rt_container *c);
const char *rt_container_state_dir(const rt_container *c);
/* The init's pid on the host (it may have exited since). */
pid_t rt_container_init_pid(const rt_container *c);

int rt_start(rt_container *c, ad_error **err);
/* When rt_start let the init run (CLOCK_REALTIME ns, the shim's clock); 0
 * unless this handle started it. */
int64_t rt_container_started_at(const rt_container *c);
int rt_kill(rt_container *c, int sig, ad_error **err);
/* Sends sig (0: SIGTERM), waits, then SIGKILLs the whole cgroup early
 * enough (grace_ms less a tenth, at most 1 s) to return within grace_ms. A
 * signal the init dropped (a pid-namespace init without a handler for it yet)
 * is sent again once it installs one. */
int rt_stop(rt_container *c, int sig, int grace_ms, ad_error **err);
int rt_get_state(rt_container *c, rt_state *ret, ad_error **err);
/* Whether the container's init still exists (created or running): no exit
 * recorded and its process (pid and start time) alive. Unlike rt_get_state it
 * asks the shim nothing, so it costs no round trip to another process. */
bool rt_init_alive(rt_container *c);
/* The same question about a container that was running, for callers that
 * ask about every running container again and again (stats, lists): the
 * runtime keeps its state dir, init and shim pidfds and cgroup files open
 * between calls (until it stops or is deleted). true: still running, and
 * with ret its cgroup numbers (timestamp_ns 0 if they could not be read);
 * false: stopped or unknown, ask rt_open + rt_get_state. */
bool rt_running_stats(rt_runtime *rt, const char *id, rt_stats *ret);
/* A pidfd of the container's shim (close-on-exec, the caller's to close): it
 * becomes readable once the shim has exited, i.e. after it recorded the
 * exit. -1 if the shim is already gone. */
int rt_container_exit_fd(rt_container *c);
/* An fd of the container's mount namespace (close-on-exec, the caller's to
 * close), -1 if its init is gone. While someone holds it, the init's exit
 * does not tear the namespace down (unmount every mount of the container,
 * then wait for an RCU grace period) before its shim hears of the exit: the
 * exit is recorded that much sooner, and the namespace goes when the fd is
 * closed, once the exit is known. */
int rt_container_mnt_ns_fd(rt_container *c);
/* Collects the exited shim behind a readable exit_fd if the caller created
 * the container (the shim is its child until it exits), so that it leaves
 * no zombie; nothing for a shim created by another process. The library
 * does this itself wherever it sees the shim gone (rt_wait, rt_get_state,
 * rt_delete). */
void rt_reap_exit_fd(int exit_fd);
/* Waits until the container stops (timeout_ms < 0: forever); AD_E_DEADLINE on timeout. */
int rt_wait(rt_container *c, int timeout_ms, rt_state *ret, ad_error **err);
/* Kills what is left, removes the cgroup and the state dir. Frees nothing. */
int rt_delete(rt_container *c, ad_error **err);
void rt_container_free(rt_container *c);

int rt_get_stats(rt_container *c, rt_stats *ret, ad_error **err);
int rt_update(rt_container *c, const rt_resources *res, ad_error **err);
int rt_reopen_log(rt_container *c, ad_error **err);
/* A connection to the shim carrying the container's output from now on, as
 * frames: 1 byte stream (1 stdout, 2 stderr; a tty is all stdout), 4 bytes
 * big-endian length, the bytes. What is written to it goes to the
 * container's stdin (open_stdin or tty) when with_stdin; with stdin_once the
 * first such client's EOF is the container's. EOF when the container is gone;
 * a reader that falls behind by about 1 MiB is disconnected. */
int rt_attach(rt_container *c, bool with_stdin, int *ret_fd, ad_error **err);
int rt_resize(rt_container *c, unsigned rows, unsigned cols, ad_error **err);

/* ---- exec into a running container ---------------------------------------
 * Joins all of its namespaces and its cgroup, with the same user and security
 * as `cfg` (the config the container was created with). */
typedef struct rt_exec_result {
	int exit_code; /* 128 + signal if killed */
	bool timed_out;
	char *out; /* NUL-terminated; each capped at max_output bytes */
	size_t out_len;
	char *err;
	size_t err_len;
} rt_exec_result;

/* Runs args to completion; after timeout_ms (<= 0: none) the process and
 * what it started (unless it left its process group) are killed, the process
 * is reaped (no zombie in the container), and timed_out is set. Like rt_exec
 * and rt_create, it waits for children it forked by pid: the calling program
 * must not reap with waitpid(-1). */
int rt_exec_sync(rt_container *c, const rt_config *cfg, const char *const *args, int timeout_ms,
		 size_t max_output, rt_exec_result *ret, ad_error **err);
void rt_exec_result_clear(rt_exec_result *r);
/* Starts args with the given stdio fds (-1: /dev/null); the caller waits on
 * *ret_pid (a child of the caller) and receives its exit status directly.
 * For a tty, pass a pty slave as stdin (and usually stdout/stderr): it
 * becomes the process's controlling terminal. SIGTERM to *ret_pid kills the
 * process (SIGKILL) and reaps it, then *ret_pid exits; *ret_pid leads the
 * process group that the process and what it starts are in (a tty process
 * gets a session of its own). */
int rt_exec(rt_container *c, const rt_config *cfg, const char *const *args, int stdin_fd,
	    int stdout_fd, int stderr_fd, pid_t *ret_pid, ad_error **err);

#endif
