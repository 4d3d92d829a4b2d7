/* pods.h — the one public header of agent/pods: agentd's pods and
 * containers, the state machine behind the CRI RuntimeService, on plain C
 * records (no protobuf). Every transition is written to the state DB (one
 * transaction) before it is acknowledged; the runtime (libadruntime), the
 * image store (overlay rootfs) and CNI (libadcni) do the work.
 *
 * A container's runtime config is built once by the caller and stored here
 * in the runtime's own form (rt_config_pack); exec, status and resource
 * updates read it. The caller may keep a record of its own request with
 * each object (`request`: opaque bytes here, returned as they were given),
 * so that its answers carry the caller's metadata, labels and annotations
 * back. */
#ifndef AGENTD_PODS_H
#define AGENTD_PODS_H

#include <stdbool.h>
#include <stdint.h>

#include "cni.h"
#include "config.h"
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
	uint8_t *request; /* the caller's record of the request, as given */
	size_t request_len;
	pid_t infra_pid; /* while ready, as found by get/list; else 0 */
	/* A pod in a user namespace of its own: its mappings (n > 0), held in
	 * the state DB until the pod is removed. */
	rt_id_map *uid_maps, *gid_maps;
	size_t n_uid_maps, n_gid_maps;
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
	int stop_signal;    /* 0: SIGTERM */
	uint8_t *request;   /* the caller's record of the request, as given */
	size_t request_len;
	char *rt_config; /* the runtime config (rt_config_pack), NULL if never built */
	size_t rt_config_len;
} mgr_ctr;

void mgr_pod_free(mgr_pod *p);
void mgr_pods_free(mgr_pod **v); /* NULL-terminated */
void mgr_ctr_free(mgr_ctr *c);
void mgr_ctrs_free(mgr_ctr **v);

/* Opens the manager's DB connection, the runtime, the infra rootfs under
 * cfg->root, and reconciles the DB with the shims. */
int mgr_open(const cfg_config *cfg, store *images, mgr **ret, ad_error **err);
/* The same with no runtime (nor infra rootfs, reconcile or exit monitor):
 * everything that needs one fails UNAVAILABLE, as when the runtime cannot
 * be set up; nothing can start a process, a netns, a cgroup or a CNI call.
 * For callers that must never run a container (tests/fuzz/cri_service_fuzz). */
int mgr_open_without_runtime(const cfg_config *cfg, store *images, mgr **ret, ad_error **err);
void mgr_close(mgr *m);

/* NetworkReady: 0, or -1 with the reason. The network is the CNI conf
 * dirs' first config that loads; while they hold only configs that do not
 * (a bad edit), the last one that loaded stays, logged when `say`. */
int mgr_network_ready(mgr *m, bool say, ad_error **err);

/* The node's pod CIDR as the caller last set it ("" until then), kept in the
 * state DB. Pod addresses still come from the CNI config's IPAM. */
int mgr_pod_cidr_set(mgr *m, const char *cidr, ad_error **err);
int mgr_pod_cidr_get(mgr *m, char **ret, ad_error **err);

/* The CPU usage rate of `id` (a container or a pod), in billionths of a
 * core, between its previous sample and this one (usage_ns of CPU time read
 * at wall clock at_ns): false on the first sample (no rate yet); a sample
 * less than a second after the previous one gets the previous rate. Samples
 * of ids not asked for in 10 minutes are dropped. */
bool mgr_cpu_nano_cores(mgr *m, const char *id, uint64_t usage_ns, int64_t at_ns, uint64_t *ret);

/* ---- pods ---- */
typedef enum mgr_ns_mode { /* the CRI NamespaceMode values */
			   MGR_NS_POD = 0,
			   MGR_NS_CONTAINER,
			   MGR_NS_NODE,
			   MGR_NS_TARGET,
} mgr_ns_mode;

typedef struct mgr_kv {
	const char *key, *value;
} mgr_kv;

/* What RunPodSandbox sets up. Lists: NULL-terminated (NULL: empty). */
typedef struct mgr_pod_spec {
	const char *name, *namespace_, *uid;
	uint32_t attempt;
	const char *hostname; /* "" or NULL: the name */
	const char *log_directory;
	const char *runtime_handler;
	const char *cgroup_parent; /* NULL: the runtime's default */
	mgr_ns_mode network, pid, ipc;
	/* resolv.conf; all empty: the node's */
	const char *const *dns_servers, *const *dns_searches, *const *dns_options;
	const cni_port_mapping *ports;
	size_t n_ports;
	const mgr_kv *sysctls; /* namespaced ones only (net.*, IPC) */
	size_t n_sysctls;
	/* The infra process's user, groups and profiles (the sandbox's). */
	bool run_as_user_set, run_as_group_set;
	uid_t run_as_user;
	gid_t run_as_group;
	const gid_t *supplemental_groups;
	size_t n_supplemental_groups;
	rt_seccomp_mode seccomp;
	const char *seccomp_profile, *apparmor_profile;
	const char *labels_json, *annotations_json; /* "{}" when none */
	const uint8_t *request;
	size_t request_len;
	/* A user namespace for the pod (the CRI's mode POD), shared by its
	 * containers. Without mappings agentd picks a free block of
	 * MGR_USERNS_BLOCK ids from its subordinate ranges ([userns]); given ones
	 * must lie inside them and overlap no other pod's (AD_E_INVALID). No
	 * free block left: AD_E_RESOURCE. */
	bool userns;
	const rt_id_map *uid_maps, *gid_maps;
	size_t n_uid_maps, n_gid_maps;
} mgr_pod_spec;
#define MGR_USERNS_BLOCK 65536

int mgr_pod_run(mgr *m, const mgr_pod_spec *spec, char **ret_id, ad_error **err);
int mgr_pod_stop(mgr *m, const char *id, ad_error **err);
/* Unknown id is not an error (already removed). */
int mgr_pod_remove(mgr *m, const char *id, ad_error **err);
int mgr_pod_get(mgr *m, const char *id, mgr_pod **ret, ad_error **err);
/* A TCP connection to 127.0.0.1:port in a ready pod's network namespace (the
 * node's with host networking): PortForward. */
int mgr_pod_dial(mgr *m, const char *id, uint16_t port, int *ret_fd, ad_error **err);
/* NULL-terminated. */
int mgr_pod_list(mgr *m, mgr_pod ***ret, ad_error **err);
/* CNI CHECK of a ready pod's network with the stored ADD result as
 * prevResult. Lists older than 0.4.0: AD_E_UNIMPLEMENTED. */
int mgr_pod_network_check(mgr *m, const mgr_pod *p, ad_error **err);
/* The pod's IPs from its CNI result (NULL-terminated, mgr_strv_free) or NULL. */
char **mgr_pod_ips(const mgr_pod *p);
void mgr_strv_free(char **v);

/* ---- containers ---- */
/* What CreateContainer records besides the runtime config. */
typedef struct mgr_ctr_spec {
	const char *name;
	uint32_t attempt;
	const char *image;    /* as requested: looked up in the store */
	const char *log_path; /* relative to the pod's log directory; NULL: none */
	int stop_signal;      /* a Linux signal number; 0: SIGTERM */
	const char *labels_json, *annotations_json;
	const uint8_t *request;
	size_t request_len;
} mgr_ctr_spec;

/* A container being created: its record (state creating, both the pod and
 * the container held) with its rootfs mounted, and what its runtime config
 * is built from. Ended by mgr_ctr_commit or mgr_ctr_abort. */
typedef struct mgr_ctr_draft {
	mgr *m;
	mgr_pod *pod;
	mgr_ctr *ctr;			    /* id, image id, full log path, image config */
	char *rootfs;			    /* the mounted rootfs */
	pid_t infra_pid;		    /* the pod's infra process (0 if gone) */
	store_idmap_kind rootfs_idmap;	    /* how a user namespace's rootfs is mapped */
	pid_t init_pid;			    /* backfill: a running container's init, else 0 */
	int64_t t_begin, t_insert, t_mount; /* for the debug timings */
} mgr_ctr_draft;

int mgr_ctr_begin(mgr *m, const char *pod_id, const mgr_ctr_spec *spec, mgr_ctr_draft **ret,
		  ad_error **err);
/* Creates the container with `cfg` (built for d->ctr->id and d->rootfs),
 * stores cfg and announces CREATED; ends the draft either way. */
int mgr_ctr_commit(mgr_ctr_draft *d, const rt_config *cfg, char **ret_id, ad_error **err);
/* Undoes the draft; *err (if set) gets the same context a failed commit's has. */
void mgr_ctr_abort(mgr_ctr_draft *d, ad_error **err);
/* Containers an older agentd created have no stored runtime config (it
 * stored only the caller's request), so exec, status and updates cannot
 * serve them. The caller, who builds configs, backfills them at start-up:
 * mgr_ctr_backfill_ids lists the created and running ones without a config;
 * mgr_ctr_backfill_begin gives what CreateContainer's draft gives (the pod,
 * the record, its rootfs, the pod's infra pid; both held), or *ret NULL if
 * the container needs nothing any more; mgr_ctr_backfill_end stores the
 * config built from it (cfg NULL: none) with the stop signal of the request
 * (not recorded by the older agentd either) and ends the draft. */
int mgr_ctr_backfill_ids(mgr *m, char ***ret, ad_error **err);
int mgr_ctr_backfill_begin(mgr *m, const char *id, mgr_ctr_draft **ret, ad_error **err);
int mgr_ctr_backfill_end(mgr_ctr_draft *d, const rt_config *cfg, int stop_signal,
			 ad_error **err);
/* The init pid of a pid namespace TARGET: a running container of the same
 * pod, as containerd and CRI-O require for ephemeral (debug) containers. */
int mgr_ctr_target_pid(mgr *m, const char *pod_id, const char *target_id, pid_t *ret,
		       ad_error **err);
/* A created container of a ready pod; a failed start leaves it exited
 * (StartError, 128). */
int mgr_ctr_start(mgr *m, const char *id, ad_error **err);
/* SIGTERM, SIGKILL after timeout_s; a stopped or created container stays as
 * it is. */
int mgr_ctr_stop(mgr *m, const char *id, int64_t timeout_s, ad_error **err);
/* Unknown id is not an error. */
int mgr_ctr_remove(mgr *m, const char *id, ad_error **err);
/* With the exit of a container that stopped recorded first. */
int mgr_ctr_get(mgr *m, const char *id, mgr_ctr **ret, ad_error **err);
/* pod_id NULL: all. NULL-terminated. */
int mgr_ctr_list(mgr *m, const char *pod_id, mgr_ctr ***ret, ad_error **err);
/* All containers, as mgr_ctr_list, with the cgroup stats of each running one
 * read on the same look (*ret_stats[i], timestamp_ns 0 for the others; free()):
 * the metrics scrape. */
int mgr_ctr_list_stats(mgr *m, mgr_ctr ***ret, rt_stats **ret_stats, ad_error **err);

/* Container exits recorded since the manager opened, by reason (the index
 * into mgr_exit_reasons: "Completed", "Error", "OOMKilled", "ShimDied",
 * "StartError"): counters for the metrics. */
#define MGR_EXIT_REASONS 5
extern const char *const mgr_exit_reasons[MGR_EXIT_REASONS];
void mgr_exit_counts(mgr *m, uint64_t ret[MGR_EXIT_REASONS]);
/* Pods whose infra process's shim died (the pod went not ready), since the
 * manager opened; with the containers' ShimDied exits, every shim death. */
uint64_t mgr_infra_shim_deaths(mgr *m);
int mgr_ctr_exec_sync(mgr *m, const char *id, const char *const *args, int64_t timeout_s,
		      size_t max_output, rt_exec_result *ret, ad_error **err);
/* Exec with the caller's stdio fds (streaming Exec; a pty slave as stdin
 * becomes the controlling terminal); *ret_pid is the caller's child. */
int mgr_ctr_exec_start(mgr *m, const char *id, const char *const *args, int stdin_fd, int stdout_fd,
		       int stderr_fd, pid_t *ret_pid, ad_error **err);
/* A pty of the running container's own devpts (so that its /dev/pts names
 * it): the master for agentd, the slave for mgr_ctr_exec_start. */
int mgr_ctr_open_pty(mgr *m, const char *id, int *ret_master, int *ret_slave, ad_error **err);
/* A connection to a running container's stdio (rt_attach's frames; stdin
 * only with_stdin). */
int mgr_ctr_attach(mgr *m, const char *id, bool with_stdin, int *ret_fd, ad_error **err);
/* The container's tty size (created with tty). */
int mgr_ctr_resize(mgr *m, const char *id, unsigned rows, unsigned cols, ad_error **err);

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
int mgr_pod_net_stats(mgr *m, const mgr_pod *p, cni_if_stats **ret, size_t *ret_n, ad_error **err);
/* The container's writable layer (its overlay upper dir), the mount point
 * it lives under and when it was measured (CLOCK_REALTIME ns): a kubelet
 * stats round asks two or three times in a row (ListContainerStats,
 * ListPodSandboxStats, ImageFsInfo) and the walk is most of the round's
 * cost, so a measurement younger than a second is given again. */
int mgr_ctr_fs_usage(mgr *m, const char *id, uint64_t *ret_bytes, uint64_t *ret_inodes,
		     const char **ret_mountpoint, int64_t *ret_at, ad_error **err);

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
/* The stored runtime config of a created or running container (pointing
 * into c, which must outlive it; rt_config_unpacked_clear). *ret_pid: its
 * process while running, else 0. Exited: AD_E_NOT_FOUND. */
int mgr_ctr_runtime_config(mgr *m, const mgr_ctr *c, rt_config *ret, pid_t *ret_pid,
			   ad_error **err);
/* Applies `res` to the running container, then stores it in its runtime
 * config and `request` (NULL: unchanged) as its new request record. */
int mgr_ctr_update(mgr *m, const char *id, const rt_resources *res, const uint8_t *request,
		   size_t request_len, ad_error **err);
int mgr_ctr_reopen_log(mgr *m, const char *id, ad_error **err);

/* ---- a running container as /proc shows it (procinfo.c); not running:
 * AD_E_PRECONDITION ---- */
typedef struct mgr_caps {
	uint64_t inheritable, permitted, effective, bounding, ambient;
} mgr_caps;
/* Its init's capability sets (/proc/PID/status). */
int mgr_ctr_caps(mgr *m, const mgr_ctr *c, mgr_caps *ret, ad_error **err);
typedef struct mgr_proc {
	pid_t pid, ppid;
	uint32_t uid;
	char *user; /* from the container's /etc/passwd, else the uid */
	char *tty;  /* "pts/0", "?" */
	int64_t cpu_ns, started_ns; /* user + system time; start, unix ns */
	char *command;
} mgr_proc;
/* The processes of its cgroup (those whose cgroups are its init's, in its
 * pid namespace: not agentd's exec helper). */
int mgr_ctr_processes(mgr *m, const mgr_ctr *c, mgr_proc **ret, size_t *ret_n, ad_error **err);
void mgr_procs_free(mgr_proc *v, size_t n);

#endif
