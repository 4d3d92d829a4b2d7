/* rt_internal.h — shared between the libadruntime sources. Not public. */
#ifndef AGENTD_RT_INTERNAL_H
#define AGENTD_RT_INTERNAL_H

#include <linux/filter.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cgroup.h"
#include "base.h"
#include "runtime.h"
#include "rt_shim_proto.h"

#define RT_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct rt_runtime {
	/* Docker's default seccomp profile, compiled once per bounding set:
	 * generating the BPF costs more than the rest of a container start. */
	pthread_mutex_t seccomp_lock;
	uint64_t seccomp_caps;
	struct sock_filter *seccomp_bpf;
	size_t seccomp_len;
	char *state_root;
	char *shim_path;
	int shim_fd; /* sealed memfd copy of shim_path: what is exec'd */
	char *cgroup_parent;
	/* rt_running_stats' handles of running containers (rt_stats.c). */
	pthread_mutex_t running_lock;
	struct rt_running **running;
	size_t n_running;
	size_t running_fds;
};

struct rt_container {
	rt_runtime *rt;
	char *id;
	char *dir;	/* state dir */
	cg_manager *cg; /* NULL if the cgroup is already gone */
	pid_t init_pid;
	uint64_t init_start; /* /proc/PID/stat starttime: guards against pid reuse */
	pid_t shim_pid;
	uint64_t shim_start;
	int64_t created_at;
	int64_t started_at; /* set by rt_start (0 before) */
	uint64_t oom_base; /* the cgroup's oom_kill count when the container was created */
};

/* What the container's processes get, computed before any fork so that bad
 * input fails early and the children only apply it. */
typedef struct rt_secplan {
	uint64_t bounding, effective, permitted, inheritable, ambient;
	bool all_caps;
	struct sock_filter *seccomp; /* NULL: unconfined */
	size_t seccomp_len;	     /* instructions */
	const char *apparmor;
	bool no_new_privs;
	int last_cap; /* /proc/sys/kernel/cap_last_cap, read by the parent */
} rt_secplan;

/* What agentd-shim gets from rt_create (to set the container up) or rt_exec
 * (to run a process in it). */
typedef struct rt_spawn_spec {
	rt_config cfg; /* only what the shim and the init use (see rt_pack.c) */
	rt_secplan plan;
	const char *state_dir; /* create only */
	size_t n_cgroup_fds;   /* cgroup.procs fds at RT_SHIM_FD_CGROUP.. */
	/* exec only: namespace fds right after the cgroup fds, joined in order */
	size_t n_ns_fds;
	int ns_flags[RT_SHIM_MAX_NS_FDS];
} rt_spawn_spec;

/* ret is malloc'd. */
void rt_spawn_pack(const rt_spawn_spec *s, char **ret, size_t *ret_len);
/* Pointers in s point into buf, which must outlive s. */
int rt_spawn_unpack(const char *buf, size_t len, rt_spawn_spec *s, ad_error **err);

/* Spawns agentd-shim (`agentd-shim [mode]`) from the sealed memfd with
 * src[i] at dst[i] (src -1 for a stdio dst: /dev/null) and nothing else
 * open but stdio (0 and 1 not listed: /dev/null, 2: agentd's stderr);
 * detach: in a new session. posix_spawn's
 * child only dup2s and execs: safe from any thread, no page tables copied. */
int rt_spawn_shim(rt_runtime *rt, const char *mode, const int *src, const int *dst, size_t n,
		  bool detach, pid_t *ret_pid, ad_error **err);

/* agentd-shim's first step: reads the spec on RT_SHIM_FD_SYNC, clones and
 * sets up the container's init (the spawned process stays the shim)
 * and returns in the shim with the shim's fds in place (rt_shim_proto.h) and
 * *ret_init_pid set. Failures are reported on the sync socket and exit. */
void rt_shim_setup(rt_spawn_spec *ret_spec, pid_t *ret_init_pid, bool *ret_pty);
/* agentd-shim exec: reads the spec, enters the container's cgroup and
 * namespaces, forks the process that takes the container's user and
 * security and execs, and exits with its status. Never returns. */
void rt_shim_exec(void);

int rt_secplan_build(rt_runtime *rt, const rt_config *cfg, rt_secplan *ret, ad_error **err);
void rt_secplan_clear(rt_secplan *p);
/* Child side, in order: before the uid switch, after it (caps), and last. */
int rt_secplan_apply_pre_user(const rt_secplan *p, ad_error **err);
int rt_secplan_apply_post_user(const rt_secplan *p, ad_error **err);
int rt_secplan_apply_final(const rt_secplan *p, ad_error **err);
/* Detects AppArmor on the host (/sys/module/apparmor/parameters/enabled). */
bool rt_apparmor_enabled(void);

/* The container's rlimits and oom_score_adj for the calling process; what
 * the kernel refuses (no CAP_SYS_RESOURCE) is only logged. */
void rt_apply_rlimits(const rt_config *cfg);

/* Closes every fd >= 3 but those listed (-1 entries ignored; at most 16). */
void rt_close_all_but(const int *keep, size_t n);

/* Reads field 22 of /proc/PID/stat; 0 if the process is gone. */
uint64_t rt_proc_start_time(pid_t pid);
/* A pidfd of pid if it is still the process that started at `start`; -1 if
 * not (or gone). */
int rt_pidfd_of(pid_t pid, uint64_t start);

/* rt_stats.c: drop the kept handles of a container (it is being deleted), or
 * all of them. */
void rt_running_forget(rt_runtime *rt, const char *id);
void rt_running_free_all(rt_runtime *rt);

/* Child side of the container's init and of exec: switch to the user, check
 * the executable, and run it. */
int rt_switch_user(const rt_config *cfg, ad_error **err);
/* Resolves args[0] with PATH from env (inside the current root). ret is
 * malloc'd. */
int rt_find_executable(const char *name, const char *const *env, char **ret, ad_error **err);

void rt_msg_send_error(int fd, ad_error *e);
int rt_msg_send(int fd, int type, pid_t pid);
/* Waits for a message; a closed peer is an error with `what` as context. */
int rt_msg_recv(int fd, rt_msg *ret, const char *what, ad_error **err);
/* Turns an RT_MSG_ERROR into an ad_error. */
int rt_msg_to_error(const rt_msg *m, ad_error **err);

/* setns() into each fd (flags[i]: its CLONE_NEW* type; names[i], if names
 * is given, for errors): a namespace owned by the user namespace among them
 * after it, any other before it. */
int rt_setns_ordered(const int *fds, const int *flags, const char *const *names, size_t n,
		     ad_error **err);
/* Joins the namespaces of `cfg` that are RT_NS_JOIN (pid only with_pid: it
 * applies to children) in that order. */
int rt_join_namespaces(const rt_config *cfg, bool with_pid, ad_error **err);
/* rt_join_namespaces in two steps: the fds first (while their paths are
 * still visible), rt_setns_ordered later. */
typedef struct rt_ns_fds {
	int fds[_RT_NS_MAX], flags[_RT_NS_MAX];
	const char *names[_RT_NS_MAX];
	size_t n;
} rt_ns_fds;
int rt_open_namespaces(const rt_config *cfg, bool with_pid, rt_ns_fds *ret, ad_error **err);
void rt_close_namespaces(rt_ns_fds *ns);
/* Container root setup, in the init after the namespaces exist, in two
 * steps: what does not depend on the init's cgroup (the rootfs bind, /proc,
 * /dev, /sys; returns the rootfs as an O_PATH fd), then, once the init is in
 * its cgroup and its cgroup namespace, the rest (/sys/fs/cgroup, the user's
 * mounts, pivot_root, masked and read-only paths). The split lets the first
 * step run while the shim moves the init into the cgroup: on cgroup v1 that
 * write waits for an RCU grace period (the threadgroup rwsem), up to several
 * ms on a busy 2-CPU machine. */
int rt_setup_rootfs_base(const rt_config *cfg, int *ret_root, ad_error **err);
/* In a user namespace the container's root could not walk the paths of
 * its bind mount sources whose parents only the host's root may search
 * (kubelet's pod dirs are 0750): before it joins the user namespace, the
 * process that clones the init binds each source (but a bidirectional one)
 * into a tmpfs of a private mount namespace of its own (over /tmp, which
 * the node does not see; the sources are opened before it hides anything)
 * and points cfg's mounts there; the init's mount namespace, a copy, has
 * them. Paths under /tmp are not walked after this. */
int rt_stage_bind_sources(rt_config *cfg, ad_error **err);
/* own_cgroups: /proc/self/cgroup as read before the new cgroup namespace
 * (NULL: not in a user namespace). */
int rt_setup_rootfs_finish(const rt_config *cfg, int root, const char *own_cgroups, ad_error **err);

#endif
