/* CreateContainer as a draft: the row and holds (mgr_ctr_begin), the rootfs,
 * then the caller's runtime config, created and stored as the runtime packs
 * it (mgr_ctr_commit), or everything undone (mgr_ctr_abort). Also the pid
 * namespace target of a debug container, and the same draft for containers
 * an older agentd created without storing their config (the backfill). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "pods_int.h"

static int ctr_insert(mgr *m, const mgr_ctr *c, const char *labels, const char *annotations,
		      ad_error **err)
{
	_cleanup_free_ char *existing = NULL;
	int r = mgr_db_insert_unless(
	    m, err, &existing,
	    "SELECT id FROM containers WHERE pod_id = ?1 AND name = ?2 AND attempt = ?3", "ssi",
	    "INSERT INTO containers (id, pod_id, name, attempt, state, image, image_id, image_ref,"
	    " created_ns, log_path, labels, annotations, image_config, config, stop_signal) VALUES"
	    " (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
	    "sssisssissssbi", c->pod_id, c->name, (int64_t)c->attempt, c->id, c->pod_id, c->name,
	    (int64_t)c->attempt, c->image, c->image_id, c->image_ref, c->created_ns, c->log_path,
	    labels, annotations, c->image_config, c->request, c->request_len,
	    (int64_t)c->stop_signal);
	if (r == 1)
		return ad_fail(err, AD_E_EXISTS,
			       "container %s (attempt %u) already exists in pod sandbox %s: %s",
			       c->name, c->attempt, c->pod_id, existing);
	return r;
}

void mgr_ctr_undo(mgr *m, const char *id, bool runtime)
{
	_cleanup_error_ ad_error *e = NULL;
	if (runtime) {
		rt_container *rc = NULL;
		if (rt_open(m->rt, id, &rc, &e) == 0) {
			if (rt_delete(rc, &e) < 0)
				ad_warn("container %s: %s", id, e->message);
			rt_container_free(rc);
		}
		ad_error_free(&e);
	}
	if (store_rootfs_remove(m->images, id, &e) < 0)
		ad_warn("container %s: %s", id, e->message);
	ad_error_free(&e);
	if (mgr_db_exec(m, &e, "DELETE FROM containers WHERE id = ?1", "s", id) < 0)
		ad_warn("container %s: %s", id, e->message);
}

static void draft_free(mgr_ctr_draft *d)
{
	mgr_release(d->m, d->ctr->id);
	mgr_release(d->m, d->pod->id);
	mgr_ctr_free(d->ctr);
	mgr_pod_free(d->pod);
	free(d->rootfs);
	free(d);
}

int mgr_ctr_begin(mgr *m, const char *pod_id, const mgr_ctr_spec *spec, mgr_ctr_draft **ret,
		  ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_hold(m, pod_id);
	mgr_pod *p = NULL;
	store_image *img = NULL;
	int r = mgr_pod_get(m, pod_id, &p, err);
	if (r == 0 && p->state != MGR_POD_READY)
		r = ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	else if (r == 0 && (!spec->name || !*spec->name))
		r = ad_fail(err, AD_E_INVALID, "container config: metadata.name is required");
	else if (r == 0 && (!spec->image || !*spec->image))
		r = ad_fail(err, AD_E_INVALID, "container config: image is required");
	else if (r == 0 && !m->images)
		r = ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	int64_t t0 = ad_monotonic_ns();
	if (r == 0)
		r = store_image_get(m->images, spec->image, &img, err);
	if (r < 0) {
		mgr_pod_free(p);
		mgr_release(m, pod_id);
		return -1;
	}

	mgr_ctr *c = ad_malloc0(sizeof(*c));
	c->id = mgr_new_id();
	c->pod_id = ad_strdup(p->id);
	c->name = ad_strdup(spec->name);
	c->attempt = spec->attempt;
	c->image = ad_strdup(spec->image);
	c->image_id = ad_strdup(img->id);
	c->image_ref =
	    ad_strdup(img->repo_digests && img->repo_digests[0] ? img->repo_digests[0] : img->id);
	c->created_ns = ad_now_ns();
	c->image_config = ad_strdup(img->config_json ? img->config_json : "{}");
	if (p->log_directory && *p->log_directory && spec->log_path && *spec->log_path)
		c->log_path = ad_asprintf("%s/%s", p->log_directory, spec->log_path);
	c->stop_signal = spec->stop_signal;
	c->request_len = spec->request_len;
	c->request = ad_malloc0(spec->request_len + 1);
	if (spec->request_len)
		memcpy(c->request, spec->request, spec->request_len);
	store_image_free(img);

	if (ctr_insert(m, c, spec->labels_json, spec->annotations_json, err) < 0) {
		mgr_ctr_free(c);
		mgr_pod_free(p);
		mgr_release(m, pod_id);
		return -1;
	}
	mgr_hold(m, c->id);
	ad_fault_point("ctr.inserted");
	mgr_ctr_draft *d = ad_malloc0(sizeof(*d));
	*d = (mgr_ctr_draft){.m = m, .pod = p, .ctr = c, .t_begin = t0};
	d->t_insert = ad_monotonic_ns();
	rt_container *ic = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (p->infra_id && rt_open(m->rt, p->infra_id, &ic, &e) == 0) {
		d->infra_pid = rt_container_init_pid(ic);
		rt_container_free(ic);
	}
	if (p->n_uid_maps) {
		/* In the pod's user namespace: the image's files must show as
		 * owned by the container's ids. */
		store_idmap map;
		mgr_pod_store_idmap(p, d->infra_pid, &map);
		r = store_rootfs_mount_mapped(m->images, c->image_id, c->id, &map, &d->rootfs,
					      &d->rootfs_idmap, err);
		mgr_store_idmap_clear(&map);
		if (r == 0 && d->rootfs_idmap != STORE_IDMAP_NONE)
			ad_info("container %s: rootfs mapped for its user namespace by %s", c->id,
				d->rootfs_idmap == STORE_IDMAP_MOUNTS ? "idmapped mounts"
								      : "chowned copies");
	} else {
		r = store_rootfs_mount(m->images, c->image_id, c->id, &d->rootfs, err);
	}
	d->t_mount = ad_monotonic_ns();
	if (r == 0)
		ad_fault_point("ctr.rootfs");
	if (r < 0) {
		mgr_ctr_abort(d, err);
		return -1;
	}
	*ret = d;
	return 0;
}

void mgr_ctr_abort(mgr_ctr_draft *d, ad_error **err)
{
	mgr_ctr_undo(d->m, d->ctr->id, false);
	if (err && *err)
		ad_error_wrap(err, "create container %s in pod sandbox %s", d->ctr->name,
			      d->pod->id);
	draft_free(d);
}

/* No component of the log path below the pod's log directory may be a
 * symbolic link: the shim opens the file as root (O_NOFOLLOW covers the last
 * component), and mkdir -p would follow a link to make directories
 * elsewhere on the host. */
static int check_log_path(const char *log_dir, const char *path, ad_error **err)
{
	_cleanup_free_ char *p = ad_strdup(path);
	for (size_t i = strlen(log_dir) + 1;; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char c = p[i];
		p[i] = '\0';
		struct stat sb;
		int r = lstat(p, &sb);
		if (r < 0 && errno != ENOENT)
			return ad_fail_errno(err, AD_E_INTERNAL, "container log path %s", p);
		if (r == 0 && S_ISLNK(sb.st_mode))
			return ad_fail(err, AD_E_INVALID,
				       "container log path %s: %s is a symbolic link", path, p);
		if (r < 0 || !c)
			return 0;
		p[i] = c;
	}
}

int mgr_ctr_commit(mgr_ctr_draft *d, const rt_config *cfg, char **ret_id, ad_error **err)
{
	mgr *m = d->m;
	mgr_ctr *c = d->ctr;
	int64_t t_config = ad_monotonic_ns(), t_rt = t_config;
	bool created = false;
	int r = 0;
	if (c->log_path)
		r = check_log_path(d->pod->log_directory, c->log_path, err);
	if (r == 0 && c->log_path) {
		_cleanup_free_ char *dir = ad_strdup(c->log_path);
		*strrchr(dir, '/') = '\0';
		r = ad_mkdir_p(dir, 0755, err);
	}
	if (r == 0) {
		rt_container *rtc = NULL;
		r = rt_create(m->rt, cfg, &rtc, err);
		created = r == 0;
		rt_container_free(rtc);
		if (created)
			ad_fault_point("ctr.rt_created");
		t_rt = ad_monotonic_ns();
	}
	if (r == 0) {
		/* Stored as the runtime packs it: exec, status and updates read
		 * this, nothing builds it again. */
		_cleanup_free_ char *packed = NULL;
		size_t len = 0;
		rt_config_pack(cfg, &packed, &len);
		r = mgr_db_exec(m, err,
				"UPDATE containers SET state = ?2, rt_config = ?3 WHERE id = ?1",
				"sib", c->id, (int64_t)MGR_CTR_CREATED, packed, len);
		if (r == 0)
			ad_fault_point("ctr.created");
	}
	if (ad_log_enabled(AD_LOG_DEBUG)) {
		int64_t t_end = ad_monotonic_ns();
		ad_debug("CreateContainer %s (ms): record %.2f, rootfs %.2f, config %.2f, "
			 "runtime %.2f, state %.2f",
			 c->id, (d->t_insert - d->t_begin) / 1e6, (d->t_mount - d->t_insert) / 1e6,
			 (t_config - d->t_mount) / 1e6, (t_rt - t_config) / 1e6,
			 (t_end - t_rt) / 1e6);
	}
	if (r < 0) {
		mgr_ctr_undo(m, c->id, created);
		ad_error_wrap(err, "create container %s in pod sandbox %s", c->name, d->pod->id);
	} else {
		*ret_id = ad_strdup(c->id);
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_CREATED);
	}
	draft_free(d);
	return r;
}

int mgr_ctr_target_pid(mgr *m, const char *pod_id, const char *target_id, pid_t *ret,
		       ad_error **err)
{
	if (!target_id || !*target_id)
		return ad_fail(err, AD_E_INVALID,
			       "namespace_options: pid mode TARGET needs a target_id");
	mgr_ctr *t = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_load(m, target_id, &t, &e) < 0 || t->state == MGR_CTR_CREATING) {
		mgr_ctr_free(t);
		if (e && e->code != AD_E_NOT_FOUND) {
			*err = ad_steal_ptr(e);
			return -1;
		}
		return ad_fail(err, AD_E_NOT_FOUND, "pid namespace target container %s not found",
			       target_id);
	}
	int r = 0;
	if (strcmp(t->pod_id, pod_id) != 0)
		r = ad_fail(err, AD_E_INVALID,
			    "pid namespace target container %s is in pod sandbox %s, not in %s",
			    target_id, t->pod_id, pod_id);
	else if (mgr_ctr_refresh(m, t, err) < 0)
		r = -1;
	else if (t->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION,
			    "pid namespace target container %s is not running", target_id);
	mgr_ctr_free(t);
	rt_container *tc = NULL;
	if (r == 0 && rt_open(m->rt, target_id, &tc, err) < 0)
		return -1;
	if (r == 0)
		*ret = rt_container_init_pid(tc);
	rt_container_free(tc);
	return r;
}

int mgr_ctr_backfill_ids(mgr *m, char ***ret, ad_error **err)
{
	return mgr_ctr_query_ids(m,
				 "SELECT " CTR_COLS " FROM containers WHERE rt_config IS NULL AND"
				 " state IN (1, 2) ORDER BY created_ns",
				 NULL, ret, err);
}

static bool needs_backfill(const mgr_ctr *c)
{
	return !c->rt_config && (c->state == MGR_CTR_CREATED || c->state == MGR_CTR_RUNNING);
}

/* A backfill draft that is not handed out (whatever of it was set up). */
static void backfill_drop(mgr_ctr_draft *d, const char *id, const char *pod_id)
{
	mgr_ctr_free(d->ctr);
	mgr_pod_free(d->pod);
	free(d->rootfs);
	mgr_release(d->m, id);
	mgr_release(d->m, pod_id);
	free(d);
}

int mgr_ctr_backfill_begin(mgr *m, const char *id, mgr_ctr_draft **ret, ad_error **err)
{
	*ret = NULL;
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (!m->images)
		return ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	mgr_ctr *c = NULL;
	if (mgr_ctr_load(m, id, &c, err) < 0)
		return -1;
	_cleanup_free_ char *pod_id = ad_strdup(c->pod_id);
	mgr_ctr_free(c);
	c = NULL;
	/* Pod, then container: the order every operation holds them in. */
	mgr_hold(m, pod_id);
	mgr_hold(m, id);
	mgr_ctr_draft *d = ad_malloc0(sizeof(*d));
	*d = (mgr_ctr_draft){.m = m};
	int r = mgr_ctr_get(m, id, &d->ctr, err);
	if (r == 0 && !needs_backfill(d->ctr)) {
		backfill_drop(d, id, pod_id);
		return 0;
	}
	if (r == 0)
		r = mgr_pod_get(m, pod_id, &d->pod, err);
	/* Mounted since its create: this only gives its path. */
	if (r == 0)
		r = store_rootfs_mount(m->images, d->ctr->image_id, id, &d->rootfs, err);
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (r == 0 && d->pod->infra_id && rt_open(m->rt, d->pod->infra_id, &rc, &e) == 0) {
		d->infra_pid = rt_container_init_pid(rc);
		rt_container_free(rc);
		rc = NULL;
	}
	if (r == 0 && d->ctr->state == MGR_CTR_RUNNING && rt_open(m->rt, id, &rc, &e) == 0) {
		d->init_pid = rt_container_init_pid(rc);
		rt_container_free(rc);
	}
	if (r < 0) {
		backfill_drop(d, id, pod_id);
		return ad_error_wrap(err, "container %s", id);
	}
	*ret = d;
	return 0;
}

int mgr_ctr_backfill_end(mgr_ctr_draft *d, const rt_config *cfg, int stop_signal, ad_error **err)
{
	int r = 0;
	if (cfg) {
		_cleanup_free_ char *packed = NULL;
		size_t len = 0;
		rt_config_pack(cfg, &packed, &len);
		r = mgr_db_exec(d->m, err,
				"UPDATE containers SET rt_config = ?2, stop_signal = ?3"
				" WHERE id = ?1 AND rt_config IS NULL",
				"sbi", d->ctr->id, packed, len, (int64_t)stop_signal);
	}
	draft_free(d);
	return r;
}
