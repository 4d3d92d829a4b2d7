/* Pod sandboxes: their rows, RunPodSandbox (row, network namespace + CNI,
 * files, infra process, sysctls, each step recorded before the next),
 * StopPodSandbox, RemovePodSandbox, and the teardown that undoes whatever of a
 * pod exists. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "pods_int.h"

/* StopPodSandbox is forceful: kubelet stopped the containers gracefully before. */
#define POD_CTR_STOP_GRACE_MS 0

void mgr_pod_free(mgr_pod *p)
{
	if (!p)
		return;
	free(p->id);
	free(p->name);
	free(p->namespace_);
	free(p->uid);
	free(p->netns);
	free(p->infra_id);
	free(p->cni_result);
	free(p->ports_json);
	free(p->cni_net);
	free(p->log_directory);
	free(p->hostname);
	free(p->dir);
	free(p->runtime_handler);
	free(p->request);
	free(p->uid_maps);
	free(p->gid_maps);
	free(p);
}

void mgr_pods_free(mgr_pod **v)
{
	if (!v)
		return;
	for (mgr_pod **p = v; *p; p++)
		mgr_pod_free(*p);
	free(v);
}

static mgr_pod *pod_from_row(sqlite3_stmt *st)
{
	mgr_pod *p = ad_malloc0(sizeof(*p));
	p->id = mgr_col_text(st, 0);
	p->name = mgr_col_text(st, 1);
	p->namespace_ = mgr_col_text(st, 2);
	p->uid = mgr_col_text(st, 3);
	p->attempt = (uint32_t)sqlite3_column_int64(st, 4);
	p->state = (mgr_pod_state)sqlite3_column_int(st, 5);
	p->created_ns = sqlite3_column_int64(st, 6);
	p->netns = mgr_col_text(st, 7);
	p->infra_id = mgr_col_text(st, 8);
	p->cni_result = mgr_col_text(st, 9);
	p->ports_json = mgr_col_text(st, 10);
	p->cni_net = mgr_col_text(st, 11);
	p->log_directory = mgr_col_text(st, 12);
	p->hostname = mgr_col_text(st, 13);
	p->dir = mgr_col_text(st, 14);
	p->runtime_handler = mgr_col_text(st, 15);
	p->request = mgr_col_blob(st, 16, &p->request_len);
	_cleanup_free_ char *uids = mgr_col_text(st, 17), *gids = mgr_col_text(st, 18);
	if (uids && gids &&
	    (mgr_idmaps_from_text(uids, &p->uid_maps, &p->n_uid_maps) < 0 ||
	     mgr_idmaps_from_text(gids, &p->gid_maps, &p->n_gid_maps) < 0))
		ad_warn("pod %s: unreadable user namespace mappings %s / %s", p->id, uids, gids);
	return p;
}

static void *pod_row(sqlite3_stmt *st)
{
	return pod_from_row(st);
}

static void pods_free_all(void *v)
{
	mgr_pods_free(v);
}

/* Rows of `sql` (one optional text parameter) as pods. */
int mgr_pod_query(mgr *m, const char *sql, const char *param, mgr_pod ***ret, size_t *ret_n,
		  ad_error **err)
{
	return mgr_query_rows(m, sql, param, pod_row, pods_free_all, "state DB: pods",
			      (void ***)ret, ret_n, err);
}

/* A ready pod whose infra process is gone (killed, or the node rebooted) is
 * not ready any more: the kubelet then replaces it. */
static void pod_check_alive(mgr *m, mgr_pod *p)
{
	if (p->state != MGR_POD_READY || !m->rt || !p->infra_id)
		return;
	rt_container *c = NULL;
	_cleanup_error_ ad_error *e = NULL;
	rt_state st = {.status = RT_STATUS_STOPPED};
	if (rt_open(m->rt, p->infra_id, &c, &e) == 0) {
		/* Checked on every request about the pod (CreateContainer too):
		 * its live init is answer enough, without a round trip to its shim. */
		if (rt_init_alive(c))
			st = (rt_state){.status = RT_STATUS_RUNNING,
					.pid = rt_container_init_pid(c)};
		else if (rt_get_state(c, &st, &e) < 0)
			st.status = RT_STATUS_STOPPED;
		rt_container_free(c);
	}
	if (st.status == RT_STATUS_RUNNING) {
		p->infra_pid = st.pid;
		return;
	}
	ad_warn("pod %s: its infra process is gone%s; the pod is not ready", p->id,
		st.shim_died ? " (its agentd-shim died)" : "");
	p->state = MGR_POD_NOTREADY;
	ad_error_free(&e);
	int changed = mgr_db_exec_changes(
	    m, &e, "UPDATE pods SET state = ?2 WHERE id = ?1 AND state = ?3", "sii", p->id,
	    (int64_t)MGR_POD_NOTREADY, (int64_t)MGR_POD_READY);
	if (changed < 0)
		ad_warn("pod %s: %s", p->id, e->message);
	else if (changed > 0 && st.shim_died)
		atomic_fetch_add(&m->infra_shim_deaths, 1); /* once: whoever moved the row */
}

int mgr_pod_get(mgr *m, const char *id, mgr_pod **ret, ad_error **err)
{
	mgr_pod **v;
	size_t n;
	if (mgr_pod_query(m, "SELECT " POD_COLS " FROM pods WHERE id = ?1", id, &v, &n, err) < 0)
		return -1;
	if (n == 0) {
		mgr_pods_free(v);
		return ad_fail(err, AD_E_NOT_FOUND, "pod sandbox %s not found", id);
	}
	*ret = v[0];
	v[0] = NULL;
	mgr_pods_free(v);
	pod_check_alive(m, *ret);
	return 0;
}

int mgr_pod_list(mgr *m, mgr_pod ***ret, ad_error **err)
{
	if (mgr_pod_query(m, "SELECT " POD_COLS " FROM pods WHERE state != 0 ORDER BY created_ns",
			  NULL, ret, NULL, err) < 0)
		return -1;
	for (mgr_pod **p = *ret; *p; p++)
		pod_check_alive(m, *p);
	return 0;
}

/* Undoes whatever of a pod exists: every step tolerates its part being absent. */
int mgr_pod_teardown(mgr *m, mgr_pod *p, bool remove, ad_error **err)
{
	_cleanup_error_ ad_error *first = NULL;
	ad_error *e = NULL;
	char **cids = NULL;
	if (mgr_ctr_ids_of_pod(m, p->id, &cids, &e) < 0) {
		first = e;
		e = NULL;
	}
	/* The containers are stopped (their exits recorded) and, to remove,
	 * released; their records go with the pod's (mgr_pod_forget), so that
	 * ContainerStatus answers with the exited container for as long as the
	 * pod is there (as containerd does while it removes a pod). */
	for (char **c = cids; c && *c; c++) {
		/* Pod, then container: the order every operation holds them in. */
		mgr_hold(m, *c);
		int64_t t[3];
		int r = mgr_ctr_stop_locked(m, *c, POD_CTR_STOP_GRACE_MS, &e);
		if (r < 0 && e->code == AD_E_NOT_FOUND) { /* a draft an interrupted create left */
			ad_error_free(&e);
			r = 0;
		}
		if (r == 0 && remove)
			r = mgr_ctr_release_locked(m, *c, t, &e);
		mgr_release(m, *c);
		if (r < 0 && !first)
			first = e, e = NULL;
		ad_error_free(&e);
	}
	if (mgr_infra_stop(m, p->infra_id, remove, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	/* The pause image's rootfs, if one was used (absent is fine). */
	if (remove && p->infra_id && m->images &&
	    store_rootfs_remove(m->images, p->infra_id, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	if (mgr_pod_network_down(m, p, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	if (p->netns && cni_netns_remove(p->netns, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	if (remove && p->dir && ad_remove_tree(p->dir, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	mgr_strv_free(cids);
	/* The containers' rootfs are gone: so can the layer copies made for the
	 * pod's mappings be (the host ids go with the pod's row). */
	if (remove && !first && p->n_uid_maps && m->images) {
		store_idmap map;
		mgr_pod_store_idmap(p, 0, &map);
		if (store_idmap_release(m->images, &map, &e) < 0)
			first = e, e = NULL;
		mgr_store_idmap_clear(&map);
	}
	if (first) {
		*err = ad_steal_ptr(first);
		return -1;
	}
	return 0;
}

/* Drops the pod's record and its containers' in one transaction: no one
 * sees a pod that lost its containers' records while it is being removed. */
static int pod_forget_body(mgr *m, void *arg, ad_error **err)
{
	const char *id = arg;
	if (mgr_db_exec_locked(m, err, "DELETE FROM containers WHERE pod_id = ?1", "s", id) < 0)
		return -1;
	return mgr_db_exec_locked(m, err, "DELETE FROM pods WHERE id = ?1", "s", id);
}

int mgr_pod_forget(mgr *m, const char *id, ad_error **err)
{
	char **cids = NULL;
	if (mgr_ctr_ids_of_pod(m, id, &cids, err) < 0)
		return -1;
	int r = mgr_db_tx(m, err, pod_forget_body, (void *)id);
	for (char **c = cids; r == 0 && c && *c; c++)
		mgr_event_publish(m, *c, id, MGR_EV_DELETED);
	mgr_strv_free(cids);
	return r;
}

struct pod_insert {
	mgr_pod *p;
	const mgr_pod_spec *spec;
};

/* Check and insert in one transaction so two racing runs cannot both win. */
static int pod_insert_body(mgr *m, void *arg, ad_error **err)
{
	mgr_pod *p = ((struct pod_insert *)arg)->p;
	const mgr_pod_spec *spec = ((struct pod_insert *)arg)->spec;
	const char *labels = spec->labels_json, *annotations = spec->annotations_json;
	int r = 0;
	sqlite3_stmt *st;
	if ((r = ad_db_prepare(m->db,
			       "SELECT id FROM pods WHERE name = ?1 AND namespace = ?2 AND"
			       " attempt = ?3",
			       &st, err)) == 0) {
		sqlite3_bind_text(st, 1, p->name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, p->namespace_, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, p->attempt);
		if (sqlite3_step(st) == SQLITE_ROW)
			r = ad_fail(err, AD_E_EXISTS,
				    "pod sandbox %s/%s (attempt %u) already exists: %s",
				    p->namespace_, p->name, p->attempt, sqlite3_column_text(st, 0));
		sqlite3_reset(st);
	}
	/* In the same transaction: two pods never get the same host ids. */
	if (r == 0 && spec->userns)
		r = mgr_pod_userns_assign(m, p, spec, err);
	_cleanup_free_ char *uid_maps =
	    p->n_uid_maps ? mgr_idmaps_to_text(p->uid_maps, p->n_uid_maps) : NULL;
	_cleanup_free_ char *gid_maps =
	    p->n_gid_maps ? mgr_idmaps_to_text(p->gid_maps, p->n_gid_maps) : NULL;
	if (r == 0 &&
	    (r = ad_db_prepare(m->db,
			       "INSERT INTO pods (id, name, namespace, uid, attempt, state,"
			       " created_ns, labels, annotations, log_directory, hostname, dir,"
			       " runtime_handler, config, uid_maps, gid_maps) VALUES (?1, ?2, ?3,"
			       " ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
			       &st, err)) == 0) {
		sqlite3_bind_text(st, 1, p->id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, p->name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, p->namespace_, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 4, p->uid, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 5, p->attempt);
		sqlite3_bind_int64(st, 6, p->created_ns);
		sqlite3_bind_text(st, 7, labels, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 8, annotations, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 9, p->log_directory, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 10, p->hostname, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 11, p->dir, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 12, p->runtime_handler, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 13, p->request, (int)p->request_len, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 14, uid_maps, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 15, gid_maps, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = ad_db_fail(m->db, err, "state DB: insert pod");
		sqlite3_reset(st);
	}
	return r;
}

/* Inserts the 'creating' row; a pod of the same name, namespace and attempt
 * → AD_E_EXISTS naming it. */
static int pod_insert(mgr *m, mgr_pod *p, const mgr_pod_spec *spec, ad_error **err)
{
	struct pod_insert a = {p, spec};
	return mgr_db_tx(m, err, pod_insert_body, &a);
}

int mgr_pod_run(mgr *m, const mgr_pod_spec *spec, char **ret_id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0 || mgr_pod_sysctls_check(spec, err) < 0)
		return -1;
	const char *runtime_handler = spec->runtime_handler;
	if (runtime_handler && *runtime_handler && strcmp(runtime_handler, "agentd") != 0)
		return ad_fail(err, AD_E_INVALID, "unknown runtime handler '%s'", runtime_handler);

	mgr_pod *p = ad_malloc0(sizeof(*p));
	p->id = mgr_new_id();
	p->name = ad_strdup(spec->name);
	p->namespace_ = ad_strdup(spec->namespace_);
	p->uid = ad_strdup(spec->uid);
	p->attempt = spec->attempt;
	p->created_ns = ad_now_ns();
	p->log_directory = ad_strdup(spec->log_directory ? spec->log_directory : "");
	p->hostname = ad_strdup(spec->hostname ? spec->hostname : "");
	p->dir = ad_asprintf("%s/%s", m->pods_dir, p->id);
	p->runtime_handler = ad_strdup(runtime_handler ? runtime_handler : "");
	p->infra_id = ad_strdup(p->id);
	p->request_len = spec->request_len;
	p->request = ad_malloc0(spec->request_len + 1);
	if (spec->request_len)
		memcpy(p->request, spec->request, spec->request_len);

	if (pod_insert(m, p, spec, err) < 0) {
		mgr_pod_free(p);
		return -1;
	}
	mgr_hold(m, p->id);
	ad_fault_point("pod.inserted");

	int r = ad_mkdir_p(p->dir, 0755, err);
	if (r == 0 && spec->network != MGR_NS_NODE)
		r = mgr_pod_network_up(m, p, spec, err);
	if (r == 0) {
		char **ips = mgr_pod_ips(p);
		r = mgr_pod_write_files(p, spec, ips && ips[0] ? ips[0] : NULL, err);
		cni_strv_free(ips);
	}
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE pods SET infra_id = ?2 WHERE id = ?1", "ss", p->id,
				p->infra_id);
	pid_t infra_pid = 0;
	if (r == 0)
		r = mgr_infra_start(m, p, spec, &infra_pid, err);
	if (r == 0)
		r = mgr_pod_sysctls_apply(spec, p->netns, infra_pid, err);
	if (r == 0)
		ad_fault_point("pod.infra_started");
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE pods SET state = ?2 WHERE id = ?1", "si", p->id,
				(int64_t)MGR_POD_READY);
	if (r == 0)
		ad_fault_point("pod.ready");
	if (r < 0) {
		_cleanup_error_ ad_error *e2 = NULL;
		if (mgr_pod_teardown(m, p, true, &e2) < 0)
			ad_warn("pod %s: cleanup after a failed start: %s", p->id, e2->message);
		_cleanup_error_ ad_error *e3 = NULL;
		if (mgr_pod_forget(m, p->id, &e3) < 0)
			ad_warn("pod %s: %s", p->id, e3->message);
		mgr_release(m, p->id);
		mgr_pod_free(p);
		return -1;
	}
	ad_info("pod %s (%s/%s) ready", p->id, p->namespace_, p->name);
	mgr_release(m, p->id);
	*ret_id = ad_strdup(p->id);
	mgr_pod_free(p);
	return 0;
}

static int pod_stop_once(mgr *m, const char *id, ad_error **err)
{
	mgr_hold(m, id);
	mgr_pod *p = NULL;
	int r = mgr_pod_get(m, id, &p, err);
	/* Not ready first: from here on no created container of the pod starts
	 * (mgr_ctr_start). */
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE pods SET state = ?2 WHERE id = ?1", "si", id,
				(int64_t)MGR_POD_NOTREADY);
	if (r == 0)
		ad_fault_point("pod.stop.notready");
	if (r == 0)
		r = mgr_pod_teardown(m, p, false, err);
	if (r < 0 && p)
		ad_error_wrap(err, "stop pod sandbox %s", id);
	mgr_pod_free(p);
	mgr_release(m, id);
	return r;
}

static int pod_remove_once(mgr *m, const char *id, ad_error **err)
{
	mgr_hold(m, id);
	mgr_pod *p = NULL;
	_cleanup_error_ ad_error *e = NULL;
	int r = 0;
	if (mgr_pod_get(m, id, &p, &e) < 0) {
		if (e->code != AD_E_NOT_FOUND) {
			*err = ad_steal_ptr(e);
			r = -1;
		}
		mgr_release(m, id);
		return r;
	}
	r = mgr_pod_teardown(m, p, true, err);
	if (r == 0)
		ad_fault_point("pod.remove.torn_down");
	if (r == 0)
		r = mgr_pod_forget(m, id, err);
	if (r < 0)
		ad_error_wrap(err, "remove pod sandbox %s", id);
	else
		ad_info("pod %s removed", id);
	mgr_pod_free(p);
	mgr_release(m, id);
	return r;
}

/* Stopping and removing free space (and record it): on a full disk they get
 * the state DB's reserve (mgr_db_removal). */
int mgr_pod_stop(mgr *m, const char *id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	return mgr_db_removal(m, pod_stop_once, id, err);
}

int mgr_pod_remove(mgr *m, const char *id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	return mgr_db_removal(m, pod_remove_once, id, err);
}
