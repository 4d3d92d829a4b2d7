/* manager.h — agentd's pods and containers: the state machine behind the CRI
 * RuntimeService. Every transition is written to the state DB (one
 * transaction) before it is acknowledged; the runtime (libadruntime), the
 * image store (overlay rootfs) and CNI (libadcni) do the work.
 *
 * The manager keeps the CRI requests it was given (packed protobuf) so that
 * status and list answers carry the caller's own metadata, labels and
 * annotations back. */
#ifndef AGENTD_PODS_H
#define AGENTD_PODS_H

#include <stdbool.h>
#include <stdint.h>

#include "cni.h"
#include "config.h"
#include "cri/api.pb-c.h"
#include "runtime.h"
#include "store.h"

typedef struct mgr mgr;

typedef enum mgr_pod_state {
	MGR_POD_CREATING = 0, /* half set up: cleaned up on start */
	MGR_POD_READY,
	MGR_POD_NOTREADY,
} mgr_pod_state;

typedef enum mgr_ctr_state {
	MGR_CTR_CREATING = 0,
	MGR_CTR_CREATED,
	MGR_CTR_RUNNING,
	MGR_CTR_EXITED,
} mgr_ctr_state;

typedef struct mgr_pod {
	char *id;
	char *name, *namespace_, *uid;
	uint32_t attempt;
	mgr_pod_state state;
	int64_t created_ns;
	char *netns;	  /* pin path; NULL with host networking or once removed */
	char *infra_id;	  /* runtime id of the infra process */
	char *cni_result; /* the ADD result (JSON) or NULL */
	char *ports_json; /* the port mappings given to ADD (DEL needs them) */
	char *cni_net;	  /* the network config list the ADD used */
	char *log_directory;
	char *hostname;
	char *dir; /* resolv.conf, hostname, hosts for the containers */
	char *runtime_handler;
	uint8_t *config; /* packed runtime.v1.PodSandboxConfig */
	size_t config_len;
	pid_t infra_pid; /* while ready, as found by get/list; else 0 */
} mgr_pod;

typedef struct mgr_ctr {
	char *id;
	char *pod_id;
	char *name;
	uint32_t attempt;
	mgr_ctr_state state;
	char *image;	 /* as requested */
	char *image_id;	 /* "sha256:..." */
	char *image_ref; /* repo digest if known, else the id */
	int64_t created_ns, started_ns, finished_ns;
	int exit_code;
	char *reason, *message;
	char *log_path;
	char *image_config; /* the image's config JSON at create time */
	uint8_t *config;    /* packed runtime.v1.ContainerConfig */
	size_t config_len;
} mgr_ctr;

void mgr_pod_free(mgr_pod *p);
void mgr_pods_free(mgr_pod **v); /* NULL-terminated */
void mgr_ctr_free(mgr_ctr *c);
void mgr_ctrs_free(mgr_ctr **v);

/* Opens the manager's DB connection, the runtime, the infra rootfs under
 * cfg->root, and reconciles the DB with the shims. */
int mgr_open(const cfg_config *cfg, store *images, mgr **ret, ad_error **err);
void mgr_close(mgr *m);

/* NetworkReady: 0, or -1 with the reason. */
int mgr_network_ready(mgr *m, ad_error **err);

/* ---- pods ---- */
int mgr_pod_run(mgr *m, const Runtime__V1__PodSandboxConfig *cfg, const char *runtime_handler,
		char **ret_id, ad_error **err);
/* Unknown id: AD_E_NOT_FOUND. Stopping twice is fine. */
int mgr_pod_stop(mgr *m, const char *id, ad_error **err);
/* Unknown id is not an error (already removed). */
int mgr_pod_remove(mgr *m, const char *id, ad_error **err);
int mgr_pod_get(mgr *m, const char *id, mgr_pod **ret, ad_error **err);
/* NULL-terminated. */
int mgr_pod_list(mgr *m, mgr_pod ***ret, ad_error **err);
/* CNI CHECK of a ready pod's network with the stored ADD result as
 * prevResult. Lists older than 0.4.0: AD_E_UNIMPLEMENTED. */
int mgr_pod_network_check(mgr *m, const mgr_pod *p, ad_error **err);
/* The pod's IPs from its CNI result (NULL-terminated, mgr_strv_free) or NULL. */
char **mgr_pod_ips(const mgr_pod *p);
void mgr_strv_free(char **v);

/* ---- containers ---- */
int mgr_ctr_create(mgr *m, const char *pod_id, const Runtime__V1__ContainerConfig *cfg,
		   char **ret_id, ad_error **err);
int mgr_ctr_start(mgr *m, const char *id, ad_error **err);
/* SIGTERM, SIGKILL after timeout_s; a stopped container stays as it is. */
int mgr_ctr_stop(mgr *m, const char *id, int64_t timeout_s, ad_error **err);
/* Unknown id is not an error. */
int mgr_ctr_remove(mgr *m, const char *id, ad_error **err);
/* With the exit of a container that stopped recorded first. */
int mgr_ctr_get(mgr *m, const char *id, mgr_ctr **ret, ad_error **err);
/* pod_id NULL: all. NULL-terminated. */
int mgr_ctr_list(mgr *m, const char *pod_id, mgr_ctr ***ret, ad_error **err);
int mgr_ctr_exec_sync(mgr *m, const char *id, const char *const *args, int64_t timeout_s,
		      size_t max_output, rt_exec_result *ret, ad_error **err);

/* ---- container events (GetContainerEvents) ---- */
typedef enum mgr_event_type { /* the CRI ContainerEventType values */
			      MGR_EV_CREATED = 0,
			      MGR_EV_STARTED,
			      MGR_EV_STOPPED,
			      MGR_EV_DELETED,
} mgr_event_type;

typedef struct mgr_event {
	uint64_t seq;
	mgr_event_type type;
	int64_t at_ns;
	char id[65];
	char pod_id[65];
} mgr_event;

/* From here until mgr_events_release, the events this thread publishes
 * reach the watchers only at the release (a caller that wants them seen
 * after something of its own, say its reply). Later events of other threads
 * wait for them, so the order stays the publishing order. */
void mgr_events_hold(mgr *m);
void mgr_events_release(mgr *m);
/* Where a new watcher starts: after every event so far. */
uint64_t mgr_events_cursor(mgr *m);
/* Waits up to timeout_ms for events after *cursor and copies up to `max`
 * of them (a watcher that falls more than the ring behind loses the oldest).
 * Returns how many; *cursor moves past them. */
size_t mgr_events_wait(mgr *m, uint64_t *cursor, mgr_event *out, size_t max, int timeout_ms);

/* The infra process's cgroup usage (a ready pod only). */
int mgr_pod_infra_stats(mgr *m, const mgr_pod *p, rt_stats *ret, ad_error **err);

/* The counters of the pod's interfaces (its own network namespace, ready
 * pods only; else AD_E_PRECONDITION). *ret: free(). */
int mgr_pod_net_stats(mgr *m, const mgr_pod *p, cni_if_stats **ret, size_t *ret_n,
		      ad_error **err);
/* The container's writable layer (its overlay upper dir) and the mount
 * point it lives under. */
int mgr_ctr_fs_usage(mgr *m, const char *id, uint64_t *ret_bytes, uint64_t *ret_inodes,
		     const char **ret_mountpoint, ad_error **err);

/* Running containers only (else AD_E_PRECONDITION). */
int mgr_ctr_stats(mgr *m, const char *id, rt_stats *ret, ad_error **err);
/* The user a container's process runs with (running: as the kernel says;
 * created: as it will). Exited containers: AD_E_NOT_FOUND. */
#define MGR_MAX_GROUPS 64
typedef struct mgr_user {
	uint32_t uid, gid;
	uint32_t groups[MGR_MAX_GROUPS];
	size_t n_groups;
} mgr_user;
int mgr_ctr_user(mgr *m, const mgr_ctr *c, mgr_user *ret, ad_error **err);
/* A summary of the runtime config of a created or running container as JSON
 * (an OCI-spec-like "runtimeSpec" for ContainerStatus verbose), or NULL;
 * *ret_pid: its process while running, else 0. */
char *mgr_ctr_spec_json(mgr *m, const mgr_ctr *c, pid_t *ret_pid);
/* The stored resources are replaced by `res` once applied. */
int mgr_ctr_update(mgr *m, const char *id, const Runtime__V1__LinuxContainerResources *res,
		   ad_error **err);
int mgr_ctr_reopen_log(mgr *m, const char *id, ad_error **err);

#endif
