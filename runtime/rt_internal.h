/* rt_internal.h — shared between the libadruntime sources. Not public. */
#ifndef AGENTD_RT_INTERNAL_H
#define AGENTD_RT_INTERNAL_H

#include <linux/filter.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cgroup.h"
#include "common.h"
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
	char *cgroup_parent;
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
} rt_secplan;

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

/* Joins the namespaces of `cfg` that are RT_NS_JOIN (except pid) after the
 * user namespace; used by the init. */
int rt_join_namespaces(const rt_config *cfg, ad_error **err);
/* Container root setup, in the init after the namespaces exist. */
int rt_setup_rootfs(const rt_config *cfg, ad_error **err);

#endif
