/* pods_int.h — what the pod manager's files share (the README lists them).
 * Not a public header: only the manager's own files include it. */
#ifndef AGENTD_PODS_INT_H
#define AGENTD_PODS_INT_H

#include <pthread.h>

#include "cni.h"
#include "db.h"
#include "pods.h"

#define MGR_EVENT_RING 512
#define MGR_MONITOR_INTERVAL_MS 1000

struct mgr {
	char *root, *state;
	store *images;
	rt_runtime *rt; /* NULL: no runtime (shim missing); pod RPCs unavailable */
	char *rt_error; /* why */
	/* One connection; SQLite objects are not shared between threads
	 * concurrently, so every use holds db_lock. */
	ad_db *db;
	pthread_mutex_t db_lock;
	char **conf_dirs, **plugin_dirs; /* NULL-terminated */
	/* The conf dirs' network as it last loaded (cni_net_json), used while
	 * they hold only configs that do not load; under cni_lock. */
	char *cni_last_good;
	pthread_mutex_t cni_lock;
	/* Writable layer sizes measured in the last second (mgr_ctr_fs_usage),
	 * under fs_lock. */
	struct mgr_fs_usage *fs_usage;
	size_t n_fs_usage, cap_fs_usage;
	pthread_mutex_t fs_lock;
	char *netns_dir;
	char *infra_rootfs; /* read-only rootfs of the infra process */
	char *pause_image;  /* NULL: agentd-infra from infra_rootfs */
	/* [userns]: whose subordinate ids pods' user namespaces use */
	char *userns_user, *subuid_file, *subgid_file;
	char *pods_dir; /* <state>/pods/<id>/: hosts, hostname, resolv.conf */
	/* Objects an operation is working on: one operation per id at a time,
	 * so a stop and a remove of the same pod cannot interleave. */
	pthread_mutex_t busy_lock;
	pthread_cond_t busy_cond;
	char **busy;
	size_t n_busy, cap_busy;
	/* Container events: a ring the GetContainerEvents streams read. */
	pthread_mutex_t ev_lock;
	pthread_cond_t ev_cond;
	mgr_event ring[MGR_EVENT_RING];
	uint64_t next_seq; /* seq of the next event; the first is 1 */
	/* Streams see the events before shown_seq. An event published while its
	 * thread defers (mgr_events_hold) keeps its place in the order but is
	 * held, and with it every later one, until mgr_events_release. */
	uint64_t shown_seq;
	bool held[MGR_EVENT_RING];
	/* Notices exits of running containers without waiting for a query. */
	pthread_t monitor;
	bool monitor_started, stopping;
	/* Exit watches (exit_monitor.c): the shims' pidfds of started containers
	 * in an epoll set the monitor waits on, so an exit is recorded (and its
	 * event sent) as it happens; plus an eventfd that wakes the monitor. */
	int exit_epoll, exit_wake;
	pthread_mutex_t watch_lock;
	struct exit_watch *watches;
	/* mgr_exit_counts, by the index of mgr_exit_reasons. */
	_Atomic uint64_t exits[MGR_EXIT_REASONS];
	_Atomic uint64_t infra_shim_deaths; /* mgr_infra_shim_deaths */
	/* The last CPU sample of each container and pod (node.c). */
	pthread_mutex_t cpu_lock;
	struct cpu_sample *cpu_samples;
	size_t n_cpu_samples;
};

/* events.c */
void mgr_event_publish(mgr *m, const char *id, const char *pod_id, mgr_event_type type);

/* exit_monitor.c */
/* Refreshes every running container (records exits). */
void mgr_ctr_poll(mgr *m);
/* Exit watches: set up before the monitor starts; wait returns after
 * timeout_ms or early once mgr_ctr_watch_wake was called, recording the
 * exits that happen meanwhile; close after the monitor stopped. */
int mgr_ctr_watch_init(mgr *m, ad_error **err);
void mgr_ctr_wait_exits(mgr *m, int timeout_ms);
void mgr_ctr_watch_wake(mgr *m);
void mgr_ctr_watch_close(mgr *m);
void mgr_ctr_watch_exit(mgr *m, const char *id, int fd, int ns_fd);
/* The monitor thread's body (mgr_open starts it). */
void *mgr_monitor_main(void *arg);
/* Counts an exit recorded with this reason (mgr_exit_counts; the index of
 * mgr_exit_reasons). */
enum {
	MGR_EXIT_COMPLETED,
	MGR_EXIT_ERROR,
	MGR_EXIT_OOM_KILLED,
	MGR_EXIT_SHIM_DIED,
	MGR_EXIT_START_ERROR
};
void mgr_count_exit(mgr *m, unsigned reason);
/* Records the exit st describes (once: only the caller that moves the row to
 * exited announces STOPPED); state_lost: the shim and its state are gone. */
int mgr_ctr_record_exit(mgr *m, mgr_ctr *c, const rt_state *st, ad_error **err);
int mgr_ctr_record_state_lost(mgr *m, mgr_ctr *c, ad_error **err);
/* A running container whose process is gone gets its exit recorded; with
 * ret_stats, the cgroup stats of one still running are read too. */
int mgr_ctr_refresh(mgr *m, mgr_ctr *c, ad_error **err);
int mgr_ctr_refresh_stats(mgr *m, mgr_ctr *c, rt_stats *ret_stats, ad_error **err);

typedef struct mgr_fs_usage {
	char id[72];
	uint64_t bytes, inodes;
	int64_t measured_mono, measured_at; /* CLOCK_MONOTONIC, CLOCK_REALTIME ns */
} mgr_fs_usage;

/* id_holds.c */
/* Waits until no other operation holds `id`, then holds it. */
void mgr_hold(mgr *m, const char *id);
/* Holds `id` if no other operation does; false (and nothing held) if one does. */
bool mgr_try_hold(mgr *m, const char *id);
void mgr_release(mgr *m, const char *id);
/* A new random 64-hex id. */
char *mgr_new_id(void);

/* state_db.c */
extern const ad_db_schema mgr_pods_schema;
/* DB helpers; each takes db_lock itself. */
int mgr_db_exec(mgr *m, ad_error **err, const char *sql, const char *fmt, ...);
/* A removal of one pod or container (stop, remove): on a full disk it gets
 * the state DB's reserve (ad_db_removal); `remove` must be safe to repeat. */
typedef int (*mgr_removal_fn)(mgr *m, const char *id, ad_error **err);
int mgr_db_removal(mgr *m, mgr_removal_fn remove, const char *id, ad_error **err);
/* The same, returning the number of rows changed (or -1). */
int mgr_db_exec_changes(mgr *m, ad_error **err, const char *sql, const char *fmt, ...);
/* Runs body under db_lock in one transaction: committed when it returns 0,
 * rolled back otherwise (its result returned). Inside, statements go through
 * mgr_db_exec_locked (mgr_db_exec would take db_lock again). */
int mgr_db_tx(mgr *m, ad_error **err, int (*body)(mgr *m, void *arg, ad_error **err), void *arg);
int mgr_db_exec_locked(mgr *m, ad_error **err, const char *sql, const char *fmt, ...);
/* Check and insert in one transaction, so that two racing inserts cannot
 * both win: `check` (a SELECT of the id of a row the new one conflicts with)
 * and, if it finds none, `insert`; the parameters of both follow, check's
 * first (as mgr_db_exec takes them). 0: inserted; 1: a conflict, with
 * *ret_existing the id found. */
int mgr_db_insert_unless(mgr *m, ad_error **err, char **ret_existing, const char *check,
			 const char *check_fmt, const char *insert, const char *insert_fmt, ...);
/* Column readers for rows of the pods and containers tables: copies (NULL for
 * SQL NULL text; a blob is NUL-terminated and may be empty). */
char *mgr_col_text(sqlite3_stmt *st, int i);
uint8_t *mgr_col_blob(sqlite3_stmt *st, int i, size_t *ret_len);
/* Runs `sql` (one optional text parameter) and turns each row into an object
 * with from_row; *ret is a NULL-terminated array of them. `what` names the
 * table in errors; free_all frees a partial array. */
int mgr_query_rows(mgr *m, const char *sql, const char *param, void *(*from_row)(sqlite3_stmt *),
		   void (*free_all)(void *), const char *what, void ***ret, size_t *ret_n,
		   ad_error **err);

/* pod.c */
#define POD_COLS                                                                                   \
	"id, name, namespace, uid, attempt, state, created_ns, netns, infra_id, cni_result,"       \
	" port_mappings, cni_net, log_directory, hostname, dir, runtime_handler, config,"          \
	" uid_maps, gid_maps"
/* Rows of `sql` (one optional text parameter, selecting POD_COLS) as pods. */
int mgr_pod_query(mgr *m, const char *sql, const char *param, mgr_pod ***ret, size_t *ret_n,
		  ad_error **err);
/* Undoes whatever of a pod exists (remove: everything, else what runs). */
int mgr_pod_teardown(mgr *m, mgr_pod *p, bool remove, ad_error **err);
int mgr_pod_forget(mgr *m, const char *id, ad_error **err);

/* pod_network.c */
void mgr_cni_opts(mgr *m, cni_opts *o);
int mgr_pod_network_up(mgr *m, mgr_pod *p, const mgr_pod_spec *spec, ad_error **err);
/* CNI DEL with what ADD stored; idempotent. */
int mgr_pod_network_down(mgr *m, const mgr_pod *p, ad_error **err);

/* pod_files.c: hostname, hosts, resolv.conf in the pod's dir. */
int mgr_pod_write_files(const mgr_pod *p, const mgr_pod_spec *spec, const char *ip, ad_error **err);

/* pod_sysctls.c */
int mgr_pod_sysctls_check(const mgr_pod_spec *spec, ad_error **err);
int mgr_pod_sysctls_apply(const mgr_pod_spec *spec, const char *netns, pid_t infra, ad_error **err);

/* pod_infra.c */
int mgr_infra_start(mgr *m, const mgr_pod *p, const mgr_pod_spec *spec, pid_t *ret_pid,
		    ad_error **err);
int mgr_infra_stop(mgr *m, const char *infra_id, bool delete, ad_error **err);
/* <root>/infra-rootfs: the infra binary and the mount points. */
int mgr_infra_rootfs_make(mgr *m, ad_error **err);

/* container.c */
#define CTR_COLS                                                                                   \
	"id, pod_id, name, attempt, state, image, image_id, image_ref, created_ns, started_ns,"    \
	" finished_ns, exit_code, reason, message, log_path, image_config, config, stop_signal,"   \
	" rt_config"
int mgr_ctr_query(mgr *m, const char *sql, const char *param, mgr_ctr ***ret, size_t *ret_n,
		  ad_error **err);
/* The ids of the rows `sql` (selecting CTR_COLS) finds, NULL-terminated. */
int mgr_ctr_query_ids(mgr *m, const char *sql, const char *param, char ***ret, ad_error **err);
/* The row as it is (creating too), without a refresh. */
int mgr_ctr_load(mgr *m, const char *id, mgr_ctr **ret, ad_error **err);
/* The runtime config stored at create (AD_E_DATA_LOSS if there is none). */
int mgr_ctr_stored_config(const mgr_ctr *c, rt_config *ret, ad_error **err);
/* Stop / remove with the container id already held by the caller. */
int mgr_ctr_remove_locked(mgr *m, const char *id, ad_error **err);
int mgr_ctr_stop_locked(mgr *m, const char *id, int grace_ms, ad_error **err);
/* What a container holds besides its record: the runtime's state (killing
 * what still runs) and the rootfs. Absent parts are fine. t: timestamps of
 * the start, runtime done, rootfs done (debug timings). */
int mgr_ctr_release_locked(mgr *m, const char *id, int64_t t[3], ad_error **err);
/* Containers of a pod (ids, NULL-terminated). */
int mgr_ctr_ids_of_pod(mgr *m, const char *pod_id, char ***ret, ad_error **err);

/* container_create.c: a draft's row and rootfs go (and its runtime state, with runtime). */
void mgr_ctr_undo(mgr *m, const char *id, bool runtime);

/* reconcile.c: start-up (README.md says what it does). */
void mgr_reconcile(mgr *m);

/* manager.c */
/* 0 if the runtime is there, else AD_E_UNAVAILABLE saying why. */
int mgr_need_rt(mgr *m, ad_error **err);

/* userns.c: subordinate id ranges and the pods' mappings. */
typedef struct mgr_subid_range {
	uint32_t start, count;
} mgr_subid_range;
/* The ranges of `user` (its name, or its uid user_uid unless -1) in the
 * text of a subuid/subgid file; none: AD_E_PRECONDITION. */
int mgr_subids_parse(const char *text, const char *file, const char *user, uid_t user_uid,
		     mgr_subid_range **ret, size_t *ret_n, ad_error **err);
int mgr_subids_read(const char *file, const char *user, mgr_subid_range **ret, size_t *ret_n,
		    ad_error **err);
/* Mappings a caller gave: each inside the allowed ranges, none overlapping
 * another, id 0 mapped (what: "uid" or "gid"); AD_E_INVALID says which. */
int mgr_idmap_check(const rt_id_map *maps, size_t n, const mgr_subid_range *allowed,
		    size_t n_allowed, const char *what, const char *file, ad_error **err);
/* AD_E_INVALID if a mapping's host ids overlap a used block. */
int mgr_idmap_in_use(const rt_id_map *maps, size_t n, const rt_id_map *used, size_t n_used,
		     const char *what, ad_error **err);
/* The lowest host id where `size` ids inside the allowed ranges overlap no
 * used block; AD_E_RESOURCE if there is none. */
int mgr_idmap_allocate(const mgr_subid_range *allowed, size_t n_allowed, const rt_id_map *used,
		       size_t n_used, uint32_t size, const char *what, const char *file,
		       uint32_t *ret_host_id, ad_error **err);
/* "container:host:size,..." as the pods table keeps them. */
char *mgr_idmaps_to_text(const rt_id_map *maps, size_t n);
int mgr_idmaps_from_text(const char *text, rt_id_map **ret, size_t *ret_n);
/* The id a host id is inside a user namespace, by its uid_map/gid_map
 * text ("container host length" lines); unmapped: 65534. */
uint32_t mgr_id_in_container(const char *id_map, uint32_t host_id);
/* Gives p its mappings for spec (checked, or a free block), against the
 * pods' rows; called inside the transaction that inserts p, db_lock held. */
int mgr_pod_userns_assign(mgr *m, mgr_pod *p, const mgr_pod_spec *spec, ad_error **err);
/* The pod's mappings as the store takes them, with an fd of its infra
 * process's user namespace (-1 if gone or infra_pid is 0); cleared with
 * mgr_store_idmap_clear. */
void mgr_pod_store_idmap(const mgr_pod *p, pid_t infra_pid, store_idmap *ret);
void mgr_store_idmap_clear(store_idmap *map);

#endif
