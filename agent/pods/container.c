/* Containers: their rows, queries (which record exits they find), start,
 * stop, remove, stats, resource updates, the user they run as, the stored
 * runtime config, log reopening. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "pods_int.h"

void mgr_ctr_free(mgr_ctr *c)
{
	if (!c)
		return;
	free(c->id);
	free(c->pod_id);
	free(c->name);
	free(c->image);
	free(c->image_id);
	free(c->image_ref);
	free(c->reason);
	free(c->message);
	free(c->log_path);
	free(c->image_config);
	free(c->request);
	free(c->rt_config);
	free(c);
}

void mgr_ctrs_free(mgr_ctr **v)
{
	if (!v)
		return;
	for (mgr_ctr **c = v; *c; c++)
		mgr_ctr_free(*c);
	free(v);
}

static mgr_ctr *ctr_from_row(sqlite3_stmt *st)
{
	mgr_ctr *c = ad_malloc0(sizeof(*c));
	c->id = mgr_col_text(st, 0);
	c->pod_id = mgr_col_text(st, 1);
	c->name = mgr_col_text(st, 2);
	c->attempt = (uint32_t)sqlite3_column_int64(st, 3);
	c->state = (mgr_ctr_state)sqlite3_column_int(st, 4);
	c->image = mgr_col_text(st, 5);
	c->image_id = mgr_col_text(st, 6);
	c->image_ref = mgr_col_text(st, 7);
	c->created_ns = sqlite3_column_int64(st, 8);
	c->started_ns = sqlite3_column_int64(st, 9);
	c->finished_ns = sqlite3_column_int64(st, 10);
	c->exit_code = sqlite3_column_int(st, 11);
	c->reason = mgr_col_text(st, 12);
	c->message = mgr_col_text(st, 13);
	c->log_path = mgr_col_text(st, 14);
	c->image_config = mgr_col_text(st, 15);
	c->request = mgr_col_blob(st, 16, &c->request_len);
	c->stop_signal = sqlite3_column_int(st, 17);
	if (sqlite3_column_type(st, 18) != SQLITE_NULL)
		c->rt_config = (char *)mgr_col_blob(st, 18, &c->rt_config_len);
	return c;
}

static void *ctr_row(sqlite3_stmt *st)
{
	return ctr_from_row(st);
}

static void ctrs_free_all(void *v)
{
	mgr_ctrs_free(v);
}

int mgr_ctr_query(mgr *m, const char *sql, const char *param, mgr_ctr ***ret, size_t *ret_n,
		  ad_error **err)
{
	return mgr_query_rows(m, sql, param, ctr_row, ctrs_free_all, "state DB: containers",
			      (void ***)ret, ret_n, err);
}

int mgr_ctr_load(mgr *m, const char *id, mgr_ctr **ret, ad_error **err)
{
	mgr_ctr **v;
	size_t n;
	if (mgr_ctr_query(m, "SELECT " CTR_COLS " FROM containers WHERE id = ?1", id, &v, &n, err) <
	    0)
		return -1;
	if (n == 0) {
		mgr_ctrs_free(v);
		return ad_fail(err, AD_E_NOT_FOUND, "container %s not found", id);
	}
	*ret = v[0];
	v[0] = NULL;
	mgr_ctrs_free(v);
	return 0;
}

int mgr_ctr_query_ids(mgr *m, const char *sql, const char *param, char ***ret, ad_error **err)
{
	mgr_ctr **v;
	size_t n;
	if (mgr_ctr_query(m, sql, param, &v, &n, err) < 0)
		return -1;
	char **ids = ad_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		ids[i] = ad_strdup(v[i]->id);
	mgr_ctrs_free(v);
	*ret = ids;
	return 0;
}

int mgr_ctr_ids_of_pod(mgr *m, const char *pod_id, char ***ret, ad_error **err)
{
	return mgr_ctr_query_ids(m, "SELECT " CTR_COLS " FROM containers WHERE pod_id = ?1", pod_id,
				 ret, err);
}

int mgr_ctr_get(mgr *m, const char *id, mgr_ctr **ret, ad_error **err)
{
	mgr_ctr *c = NULL;
	if (mgr_ctr_load(m, id, &c, err) < 0)
		return -1;
	if (c->state == MGR_CTR_CREATING) {
		mgr_ctr_free(c);
		return ad_fail(err, AD_E_NOT_FOUND, "container %s not found (being created)", id);
	}
	if (mgr_ctr_refresh(m, c, err) < 0) {
		mgr_ctr_free(c);
		return -1;
	}
	*ret = c;
	return 0;
}

static int ctr_list(mgr *m, const char *pod_id, mgr_ctr ***ret, rt_stats **ret_stats,
		    ad_error **err)
{
	mgr_ctr **v;
	int r = pod_id ? mgr_ctr_query(m,
				       "SELECT " CTR_COLS " FROM containers WHERE pod_id = ?1 AND"
				       " state != 0 ORDER BY created_ns",
				       pod_id, &v, NULL, err)
		       : mgr_ctr_query(m,
				       "SELECT " CTR_COLS " FROM containers WHERE state != 0"
				       " ORDER BY created_ns",
				       NULL, &v, NULL, err);
	if (r < 0)
		return -1;
	size_t n = 0;
	while (v[n])
		n++;
	rt_stats *stats = ret_stats ? ad_malloc0((n + 1) * sizeof(*stats)) : NULL;
	for (size_t i = 0; i < n; i++) {
		_cleanup_error_ ad_error *e = NULL;
		if (mgr_ctr_refresh_stats(m, v[i], stats ? &stats[i] : NULL, &e) < 0)
			ad_warn("container %s: %s", v[i]->id, e->message);
	}
	*ret = v;
	if (ret_stats)
		*ret_stats = stats;
	return 0;
}

int mgr_ctr_list(mgr *m, const char *pod_id, mgr_ctr ***ret, ad_error **err)
{
	return ctr_list(m, pod_id, ret, NULL, err);
}

int mgr_ctr_list_stats(mgr *m, mgr_ctr ***ret, rt_stats **ret_stats, ad_error **err)
{
	return ctr_list(m, NULL, ret, ret_stats, err);
}

int mgr_ctr_start(mgr *m, const char *id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_hold(m, id);
	int64_t t[5] = {ad_monotonic_ns()};
	mgr_ctr *c = NULL;
	rt_container *rc = NULL;
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state != MGR_CTR_CREATED)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is %s, not created", id,
			    c->state == MGR_CTR_RUNNING ? "running" : "exited");
	/* StopPodSandbox marks the pod not ready before it stops the containers
	 * (each under its hold): a container created there starts before the
	 * stop reaches it, or never. */
	mgr_pod *p = NULL;
	if (r == 0)
		r = mgr_pod_get(m, c->pod_id, &p, err);
	if (r == 0 && p->state != MGR_POD_READY)
		r = ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	mgr_pod_free(p);
	t[1] = ad_monotonic_ns();
	if (r == 0)
		r = rt_open(m->rt, id, &rc, err);
	int exit_fd = r == 0 ? rt_container_exit_fd(rc) : -1;
	int ns_fd = exit_fd >= 0 ? rt_container_mnt_ns_fd(rc) : -1;
	t[2] = ad_monotonic_ns();
	if (r == 0)
		r = rt_start(rc, err);
	t[3] = ad_monotonic_ns();
	if (r == 0) {
		ad_fault_point("ctr.start.runtime");
		int64_t started = rt_container_started_at(rc);
		r = mgr_db_exec(m, err,
				"UPDATE containers SET state = ?2, started_ns = ?3 WHERE id = ?1",
				"sii", id, (int64_t)MGR_CTR_RUNNING, started);
		if (r == 0) {
			ad_fault_point("ctr.started");
			mgr_event_publish(m, id, c->pod_id, MGR_EV_STARTED);
			mgr_ctr_watch_exit(m, id, exit_fd, ns_fd);
			exit_fd = ns_fd = -1;
		} else {
			/* Not recorded as running (a full state DB): it must not
			 * run on where nothing reports it. */
			rt_stop(rc, SIGKILL, 0, NULL);
		}
		t[4] = ad_monotonic_ns();
		ad_debug("StartContainer %s (ms): record %.2f, open %.2f, runtime %.2f, state %.2f",
			 id, (t[1] - t[0]) / 1e6, (t[2] - t[1]) / 1e6, (t[3] - t[2]) / 1e6,
			 (t[4] - t[3]) / 1e6);
	}
	if (r < 0 && c && c->state == MGR_CTR_CREATED) {
		/* A start that failed leaves an exited container, as upstream does. */
		_cleanup_error_ ad_error *e = NULL;
		if (mgr_db_exec(
			m, &e,
			"UPDATE containers SET state = ?2, finished_ns = ?3, exit_code = 128,"
			" reason = 'StartError', message = ?4 WHERE id = ?1",
			"siis", id, (int64_t)MGR_CTR_EXITED, ad_now_ns(), (*err)->message) == 0)
			mgr_count_exit(m, MGR_EXIT_START_ERROR);
	}
	ad_closep(&exit_fd);
	ad_closep(&ns_fd);
	rt_container_free(rc);
	mgr_ctr_free(c);
	mgr_release(m, id);
	return r;
}

static int stop_signal(const mgr_ctr *c)
{
	/* A Linux signal number (the caller's translation of its own names). */
	return c->stop_signal > 0 && c->stop_signal <= SIGRTMAX ? c->stop_signal : SIGTERM;
}

int mgr_ctr_stop_locked(mgr *m, const char *id, int grace_ms, ad_error **err)
{
	mgr_ctr *c = NULL;
	rt_container *rc = NULL;
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state == MGR_CTR_EXITED) {
		/* Its init is gone; what it left in its cgroup goes now. */
		if (rt_open(m->rt, id, &rc, NULL) == 0)
			rt_stop(rc, SIGKILL, 0, NULL);
		goto out;
	}
	/* Only a process that runs is stopped: a created container stays
	 * created (as in containerd), also when its pod stops. */
	if (r == 0 && c->state != MGR_CTR_RUNNING)
		goto out;
	if (r == 0 && rt_open(m->rt, id, &rc, err) < 0) {
		ad_error_free(err);
		rt_state st = {.exit_code = 255};
		r = mgr_ctr_record_exit(m, c, &st, err);
		goto out;
	}
	if (r == 0)
		r = rt_stop(rc, stop_signal(c), grace_ms, err);
	rt_state st;
	if (r == 0)
		r = rt_get_state(rc, &st, err);
	if (r == 0 && st.status != RT_STATUS_STOPPED)
		r = ad_fail(err, AD_E_INTERNAL, "container %s did not stop", id);
	if (r == 0)
		ad_fault_point("ctr.stop.runtime");
	if (r == 0)
		r = mgr_ctr_record_exit(m, c, &st, err);
out:
	rt_container_free(rc);
	mgr_ctr_free(c);
	return r;
}

int mgr_ctr_stop(mgr *m, const char *id, int64_t timeout_s, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	int64_t asked_ns = ad_monotonic_ns();
	mgr_hold(m, id);
	if (timeout_s < 0)
		timeout_s = 0;
	if (timeout_s > 24 * 3600)
		timeout_s = 24 * 3600;
	/* The caller's timeout runs from its request, not from our turn. */
	int64_t held_ms = (ad_monotonic_ns() - asked_ns) / 1000000;
	int grace_ms = (int)(timeout_s * 1000 > held_ms ? timeout_s * 1000 - held_ms : 0);
	int r = mgr_ctr_stop_locked(m, id, grace_ms, err);
	mgr_release(m, id);
	return r;
}

int mgr_ctr_release_locked(mgr *m, const char *id, int64_t t[3], ad_error **err)
{
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	int r = 0;
	t[0] = ad_monotonic_ns();
	if (rt_open(m->rt, id, &rc, &e) == 0) {
		r = rt_delete(rc, err);
		rt_container_free(rc);
	}
	t[1] = ad_monotonic_ns();
	if (r == 0)
		ad_fault_point("ctr.remove.runtime");
	if (r == 0)
		r = store_rootfs_remove(m->images, id, err);
	t[2] = ad_monotonic_ns();
	return r;
}

int mgr_ctr_remove_locked(mgr *m, const char *id, ad_error **err)
{
	mgr_ctr *c = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_load(m, id, &c, &e) < 0) {
		if (e->code == AD_E_NOT_FOUND)
			return 0;
		*err = ad_steal_ptr(e);
		return -1;
	}
	int64_t t[4];
	int r = mgr_ctr_release_locked(m, id, t, err);
	if (r == 0)
		ad_fault_point("ctr.remove.rootfs");
	if (r == 0)
		r = mgr_db_exec(m, err, "DELETE FROM containers WHERE id = ?1", "s", id);
	if (r < 0)
		ad_error_wrap(err, "remove container %s", id);
	else
		mgr_event_publish(m, id, c->pod_id, MGR_EV_DELETED);
	t[3] = ad_monotonic_ns();
	if (r == 0)
		ad_debug("RemoveContainer %s (ms): runtime %.2f, rootfs %.2f, record %.2f", id,
			 (t[1] - t[0]) / 1e6, (t[2] - t[1]) / 1e6, (t[3] - t[2]) / 1e6);
	mgr_ctr_free(c);
	return r;
}

int mgr_ctr_remove(mgr *m, const char *id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_hold(m, id);
	int r = mgr_db_removal(m, mgr_ctr_remove_locked, id, err);
	mgr_release(m, id);
	return r;
}

/* The runtime config stored at create. */
int mgr_ctr_stored_config(const mgr_ctr *c, rt_config *ret, ad_error **err)
{
	if (!c->rt_config)
		return ad_fail(
		    err, AD_E_DATA_LOSS,
		    "container %s: no stored runtime config (created by an older agentd)", c->id);
	if (rt_config_unpack(c->rt_config, c->rt_config_len, ret, err) < 0)
		return ad_error_wrap(err, "container %s", c->id);
	return 0;
}

/* Opens the runtime side of a running container. */
static int open_running(mgr *m, const char *id, rt_container **ret, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_ctr *c = NULL;
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is not running", id);
	mgr_ctr_free(c);
	if (r == 0)
		r = rt_open(m->rt, id, ret, err);
	return r;
}

int mgr_ctr_stats(mgr *m, const char *id, rt_stats *ret, ad_error **err)
{
	/* Periodic callers (CRI stats every few seconds) ask about every running
	 * container: through the kept handles, not a state load and an rt_open
	 * each. The slow path below also records an exit nobody saw yet. */
	if (m->rt && rt_running_stats(m->rt, id, ret) && ret->timestamp_ns)
		return 0;
	rt_container *rc = NULL;
	int r = open_running(m, id, &rc, err);
	if (r == 0)
		r = rt_get_stats(rc, ret, err);
	rt_container_free(rc);
	return r;
}

/* The stored config gets the new resources, so ContainerStatus reports what
 * is applied now (containerd likewise updates the container's spec). */
static int store_resources(mgr *m, const char *id, const rt_resources *res, const uint8_t *request,
			   size_t request_len, ad_error **err)
{
	mgr_ctr *c = NULL;
	if (mgr_ctr_load(m, id, &c, err) < 0)
		return -1;
	rt_config cfg = {0};
	int r = mgr_ctr_stored_config(c, &cfg, err);
	if (r == 0) {
		cfg.resources = *res;
		_cleanup_free_ char *packed = NULL;
		size_t len = 0;
		rt_config_pack(&cfg, &packed, &len);
		r = request
			? mgr_db_exec(m, err,
				      "UPDATE containers SET rt_config = ?2, config = ?3"
				      " WHERE id = ?1",
				      "sbb", id, packed, len, request, request_len)
			: mgr_db_exec(m, err, "UPDATE containers SET rt_config = ?2 WHERE id = ?1",
				      "sb", id, packed, len);
	}
	rt_config_unpacked_clear(&cfg);
	mgr_ctr_free(c);
	return r;
}

#define FS_USAGE_REUSE_NS 1000000000LL

int mgr_ctr_fs_usage(mgr *m, const char *id, uint64_t *ret_bytes, uint64_t *ret_inodes,
		     const char **ret_mountpoint, int64_t *ret_at, ad_error **err)
{
	*ret_mountpoint = m->root;
	if (!m->images)
		return ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	int64_t now = ad_monotonic_ns();
	pthread_mutex_lock(&m->fs_lock);
	/* Older ones go: the list holds what the current round measured. */
	size_t keep = 0;
	bool found = false;
	for (size_t i = 0; i < m->n_fs_usage; i++) {
		mgr_fs_usage *u = &m->fs_usage[i];
		if (now - u->measured_mono >= FS_USAGE_REUSE_NS)
			continue;
		if (!found && strcmp(u->id, id) == 0) {
			*ret_bytes = u->bytes;
			*ret_inodes = u->inodes;
			*ret_at = u->measured_at;
			found = true;
		}
		m->fs_usage[keep++] = *u;
	}
	m->n_fs_usage = keep;
	pthread_mutex_unlock(&m->fs_lock);
	if (found)
		return 0;
	mgr_fs_usage u = {.measured_mono = now, .measured_at = ad_now_ns()};
	if (store_rootfs_usage(m->images, id, &u.bytes, &u.inodes, err) < 0)
		return -1;
	snprintf(u.id, sizeof(u.id), "%s", id);
	pthread_mutex_lock(&m->fs_lock);
	if (m->n_fs_usage == m->cap_fs_usage) {
		m->cap_fs_usage = m->cap_fs_usage ? 2 * m->cap_fs_usage : 16;
		m->fs_usage = ad_realloc(m->fs_usage, m->cap_fs_usage * sizeof(*m->fs_usage));
	}
	m->fs_usage[m->n_fs_usage++] = u;
	pthread_mutex_unlock(&m->fs_lock);
	*ret_bytes = u.bytes;
	*ret_inodes = u.inodes;
	*ret_at = u.measured_at;
	return 0;
}

int mgr_ctr_update(mgr *m, const char *id, const rt_resources *res, const uint8_t *request,
		   size_t request_len, ad_error **err)
{
	rt_container *rc = NULL;
	mgr_hold(m, id);
	int r = open_running(m, id, &rc, err);
	if (r == 0)
		r = rt_update(rc, res, err);
	if (r == 0)
		r = store_resources(m, id, res, request, request_len, err);
	rt_container_free(rc);
	mgr_release(m, id);
	return r;
}

/* "Uid:\t0\t0\t0\t0" → the real id (the first). */
static bool status_id(const char *status, const char *key, uint32_t *ret)
{
	const char *l = strstr(status, key);
	if (!l)
		return false;
	*ret = (uint32_t)strtoul(l + strlen(key), NULL, 10);
	return true;
}

int mgr_ctr_user(mgr *m, const mgr_ctr *c, mgr_user *ret, ad_error **err)
{
	*ret = (mgr_user){0};
	if (mgr_need_rt(m, err) < 0)
		return -1;
	rt_container *rc = NULL;
	if (c->state == MGR_CTR_EXITED || rt_open(m->rt, c->id, &rc, err) < 0)
		return ad_fail(err, AD_E_NOT_FOUND, "container %s has no process", c->id);
	pid_t pid = rt_container_init_pid(rc);
	rt_container_free(rc);
	if (c->state == MGR_CTR_RUNNING) {
		/* What the process really runs with. */
		_cleanup_free_ char *path = ad_asprintf("/proc/%d/status", (int)pid), *st = NULL;
		size_t len;
		if (ad_read_file(AT_FDCWD, path, 1 << 20, &st, &len, err) < 0)
			return -1;
		if (!status_id(st, "\nUid:", &ret->uid) || !status_id(st, "\nGid:", &ret->gid))
			return ad_fail(err, AD_E_INTERNAL, "%s: no Uid/Gid", path);
		const char *g = strstr(st, "\nGroups:");
		for (char *end = NULL, *p = g ? (char *)g + 8 : NULL;
		     p && *p != '\n' && ret->n_groups < MGR_MAX_GROUPS; p = end) {
			unsigned long v = strtoul(p, &end, 10);
			if (end == p)
				break;
			ret->groups[ret->n_groups++] = (uint32_t)v;
		}
		/* Ids as the container sees them (its user namespace's, if any). */
		_cleanup_free_ char *uid_map = NULL, *gid_map = NULL;
		_cleanup_free_ char *up = ad_asprintf("/proc/%d/uid_map", (int)pid);
		_cleanup_free_ char *gp = ad_asprintf("/proc/%d/gid_map", (int)pid);
		if (ad_read_file(AT_FDCWD, up, 1 << 16, &uid_map, &len, NULL) == 0 &&
		    ad_read_file(AT_FDCWD, gp, 1 << 16, &gid_map, &len, NULL) == 0) {
			ret->uid = mgr_id_in_container(uid_map, ret->uid);
			ret->gid = mgr_id_in_container(gid_map, ret->gid);
			for (size_t i = 0; i < ret->n_groups; i++)
				ret->groups[i] = mgr_id_in_container(gid_map, ret->groups[i]);
		}
		return 0;
	}
	/* Created: what it will run with. */
	rt_config cfg = {0};
	if (mgr_ctr_stored_config(c, &cfg, err) < 0)
		return -1;
	ret->uid = cfg.uid;
	ret->gid = cfg.gid;
	for (size_t i = 0; i < cfg.n_additional_gids && i < MGR_MAX_GROUPS; i++)
		ret->groups[ret->n_groups++] = cfg.additional_gids[i];
	rt_config_unpacked_clear(&cfg);
	return 0;
}

int mgr_ctr_runtime_config(mgr *m, const mgr_ctr *c, rt_config *ret, pid_t *ret_pid, ad_error **err)
{
	*ret_pid = 0;
	*ret = (rt_config){0};
	if (mgr_need_rt(m, err) < 0)
		return -1;
	rt_container *rc = NULL;
	if (c->state == MGR_CTR_EXITED || rt_open(m->rt, c->id, &rc, err) < 0)
		return ad_fail(err, AD_E_NOT_FOUND, "container %s has no process", c->id);
	if (c->state == MGR_CTR_RUNNING)
		*ret_pid = rt_container_init_pid(rc);
	rt_container_free(rc);
	return mgr_ctr_stored_config(c, ret, err);
}

int mgr_ctr_reopen_log(mgr *m, const char *id, ad_error **err)
{
	rt_container *rc = NULL;
	int r = open_running(m, id, &rc, err);
	if (r == 0)
		r = rt_reopen_log(rc, err);
	rt_container_free(rc);
	return r;
}
