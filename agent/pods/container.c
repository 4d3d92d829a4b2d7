/* The container half of the manager: containers on an overlay rootfs from
 * the store, created from the runtime config their caller built (stored as
 * the runtime packs it, read again for exec and status), their exits
 * watched. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "pods_int.h"

#define EXEC_MAX_OUTPUT_DEFAULT (16u << 20)

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

#define CTR_COLS                                                                                   \
	"id, pod_id, name, attempt, state, image, image_id, image_ref, created_ns, started_ns,"    \
	" finished_ns, exit_code, reason, message, log_path, image_config, config, stop_signal,"    \
	" rt_config"

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

static int ctr_query(mgr *m, const char *sql, const char *param, mgr_ctr ***ret, size_t *ret_n,
		     ad_error **err)
{
	return mgr_query_rows(m, sql, param, ctr_row, ctrs_free_all, "state DB: containers",
			      (void ***)ret, ret_n, err);
}

static int ctr_load(mgr *m, const char *id, mgr_ctr **ret, ad_error **err)
{
	mgr_ctr **v;
	size_t n;
	if (ctr_query(m, "SELECT " CTR_COLS " FROM containers WHERE id = ?1", id, &v, &n, err) < 0)
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

int mgr_ctr_ids_of_pod(mgr *m, const char *pod_id, char ***ret, ad_error **err)
{
	mgr_ctr **v;
	size_t n;
	if (ctr_query(m, "SELECT " CTR_COLS " FROM containers WHERE pod_id = ?1", pod_id, &v, &n,
		      err) < 0)
		return -1;
	char **ids = ad_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		ids[i] = ad_strdup(v[i]->id);
	mgr_ctrs_free(v);
	*ret = ids;
	return 0;
}

/* ---- exit bookkeeping -------------------------------------------------------- */
static int record_exit(mgr *m, mgr_ctr *c, const rt_state *st, ad_error **err)
{
	const char *reason = st->shim_died	  ? "ShimDied"
			     : st->oom_killed	  ? "OOMKilled"
			     : st->exit_code == 0 ? "Completed"
						  : "Error";
	/* Its exit status died with the shim (the runtime killed whatever
	 * of the container was left). */
	const char *message =
	    st->shim_died ? "agentd-shim died; every process of the container was killed and "
			    "its exit code is unknown"
			  : NULL;
	int64_t finished = st->finished_at ? st->finished_at : ad_now_ns();
	/* The exit watch, a status poll and StopContainer may all see the same
	 * exit: only the one whose update moves the row to EXITED records it and
	 * announces STOPPED. */
	int changed = mgr_db_exec_changes(
	    m, err,
	    "UPDATE containers SET state = ?2, finished_ns = ?3, exit_code = ?4,"
	    " reason = ?5, message = coalesce(?6, message) WHERE id = ?1 AND state <> ?2",
	    "siiiss", c->id, (int64_t)MGR_CTR_EXITED, finished, (int64_t)st->exit_code, reason,
	    message);
	if (changed < 0)
		return -1;
	c->state = MGR_CTR_EXITED;
	if (changed > 0)
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_STOPPED);
	c->finished_ns = finished;
	c->exit_code = st->exit_code;
	free(c->reason);
	c->reason = ad_strdup(reason);
	if (message) {
		free(c->message);
		c->message = ad_strdup(message);
	}
	return 0;
}

/* The shim and its state are gone (a reboot): the exit is unknown. */
static int record_state_lost(mgr *m, mgr_ctr *c, ad_error **err)
{
	rt_state st = {.exit_code = 255};
	if (record_exit(m, c, &st, err) < 0)
		return -1;
	free(c->message);
	c->message = ad_strdup("container state lost");
	return mgr_db_exec(m, err, "UPDATE containers SET message = ?2 WHERE id = ?1", "ss", c->id,
			   c->message);
}

/* A running container whose process is gone gets its exit recorded. */
/* Records the exit of a container that stopped unseen; with ret_stats, also
 * reads the cgroup stats of one still running (timestamp_ns 0 if not). */
static int ctr_refresh_stats(mgr *m, mgr_ctr *c, rt_stats *ret_stats, ad_error **err)
{
	if (c->state != MGR_CTR_RUNNING || !m->rt)
		return 0;
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_open(m->rt, c->id, &rc, &e) < 0)
		return record_state_lost(m, c, err);
	/* Most refreshes find it still running: no need to ask its shim. */
	rt_state st = {.status = RT_STATUS_RUNNING};
	int r = rt_init_alive(rc) ? 0 : rt_get_state(rc, &st, err);
	if (r == 0 && st.status == RT_STATUS_STOPPED)
		r = record_exit(m, c, &st, err);
	else if (r == 0 && ret_stats && rt_get_stats(rc, ret_stats, NULL) < 0)
		ret_stats->timestamp_ns = 0; /* exited meanwhile: no numbers */
	rt_container_free(rc);
	return r;
}

static int ctr_refresh(mgr *m, mgr_ctr *c, ad_error **err)
{
	return ctr_refresh_stats(m, c, NULL, err);
}

/* ---- exit watches --------------------------------------------------------------- */
struct exit_watch {
	int fd;	   /* the shim's pidfd */
	int ns_fd; /* the container's mount namespace, or -1 (rt_container_mnt_ns_fd) */
	char id[72];
	struct exit_watch *next;
};

int mgr_ctr_watch_init(mgr *m, ad_error **err)
{
	m->exit_epoll = epoll_create1(EPOLL_CLOEXEC);
	m->exit_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (m->exit_epoll < 0 || m->exit_wake < 0 ||
	    epoll_ctl(m->exit_epoll, EPOLL_CTL_ADD, m->exit_wake, &ev) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "exit watches");
	return 0;
}

/* From now on the monitor records the container's exit when it happens.
 * exit_fd (rt_container_exit_fd, taken over) must be taken while the shim is
 * known alive and added once the DB says running: an exit in between makes
 * it readable at once, and the monitor's query then records it. */
/* ns_fd (taken over, may be -1): the container's mount namespace, held until
 * its exit is recorded and announced, so that the init's exit does not wait
 * for that namespace's teardown (rt_container_mnt_ns_fd). */
static void watch_exit(mgr *m, const char *id, int fd, int ns_fd)
{
	if (fd < 0 || m->exit_epoll < 0) {
		/* the next query or poll records the exit */
		ad_closep(&fd);
		ad_closep(&ns_fd);
		return;
	}
	struct exit_watch *w = ad_malloc0(sizeof(*w));
	w->fd = fd;
	w->ns_fd = ns_fd;
	snprintf(w->id, sizeof(w->id), "%s", id);
	pthread_mutex_lock(&m->watch_lock);
	w->next = m->watches;
	m->watches = w;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
	if (epoll_ctl(m->exit_epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
		m->watches = w->next;
		close(fd);
		ad_closep(&ns_fd);
		free(w);
	}
	pthread_mutex_unlock(&m->watch_lock);
}

static void unwatch(mgr *m, struct exit_watch *w)
{
	pthread_mutex_lock(&m->watch_lock);
	for (struct exit_watch **p = &m->watches; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	epoll_ctl(m->exit_epoll, EPOLL_CTL_DEL, w->fd, NULL);
	pthread_mutex_unlock(&m->watch_lock);
	close(w->fd);
	ad_closep(&w->ns_fd);
	free(w);
}

void mgr_ctr_wait_exits(mgr *m, int timeout_ms)
{
	int64_t deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		int64_t left = (deadline - ad_monotonic_ns()) / 1000000;
		if (left <= 0)
			return;
		struct epoll_event evs[16];
		int n = epoll_wait(m->exit_epoll, evs, 16, (int)left);
		if (n < 0 && errno != EINTR)
			return;
		for (int i = 0; i < n; i++) {
			struct exit_watch *w = evs[i].data.ptr;
			if (!w) {
				uint64_t v;
				if (read(m->exit_wake, &v, sizeof(v)) < 0) {
				}
				return;
			}
			char id[72];
			snprintf(id, sizeof(id), "%s", w->id);
			rt_reap_exit_fd(w->fd);
			int ns_fd = w->ns_fd;
			w->ns_fd = -1;
			unwatch(m, w);
			/* A query records the exit (and sends its event). */
			mgr_ctr *c = NULL;
			_cleanup_error_ ad_error *e = NULL;
			if (mgr_ctr_get(m, id, &c, &e) < 0 && e->code != AD_E_NOT_FOUND)
				ad_debug("container %s: %s", id, e->message);
			mgr_ctr_free(c);
			/* Only now, with the exit announced: the namespace's teardown. */
			ad_closep(&ns_fd);
		}
	}
}

void mgr_ctr_watch_wake(mgr *m)
{
	uint64_t one = 1;
	if (m->exit_wake >= 0 && write(m->exit_wake, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake is pending anyway */
	}
}

void mgr_ctr_watch_close(mgr *m)
{
	while (m->watches) {
		struct exit_watch *w = m->watches;
		m->watches = w->next;
		close(w->fd);
		ad_closep(&w->ns_fd);
		free(w);
	}
	if (m->exit_epoll >= 0)
		close(m->exit_epoll);
	if (m->exit_wake >= 0)
		close(m->exit_wake);
	m->exit_epoll = m->exit_wake = -1;
}

int mgr_ctr_get(mgr *m, const char *id, mgr_ctr **ret, ad_error **err)
{
	mgr_ctr *c = NULL;
	if (ctr_load(m, id, &c, err) < 0)
		return -1;
	if (c->state == MGR_CTR_CREATING) {
		mgr_ctr_free(c);
		return ad_fail(err, AD_E_NOT_FOUND, "container %s not found (being created)", id);
	}
	if (ctr_refresh(m, c, err) < 0) {
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
	int r = pod_id ? ctr_query(m,
				   "SELECT " CTR_COLS " FROM containers WHERE pod_id = ?1 AND"
				   " state != 0 ORDER BY created_ns",
				   pod_id, &v, NULL, err)
		       : ctr_query(m,
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
		if (ctr_refresh_stats(m, v[i], stats ? &stats[i] : NULL, &e) < 0)
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

/* ---- CreateContainer ------------------------------------------------------------ */
static int ctr_insert(mgr *m, const mgr_ctr *c, const char *labels, const char *annotations,
		      ad_error **err)
{
	pthread_mutex_lock(&m->db_lock);
	sqlite3_stmt *st;
	if (ad_db_begin(m->db, err) < 0) {
		pthread_mutex_unlock(&m->db_lock);
		return -1;
	}
	int r = ad_db_prepare(m->db,
			      "SELECT id FROM containers WHERE pod_id = ?1 AND name = ?2 AND"
			      " attempt = ?3",
			      &st, err);
	if (r == 0) {
		sqlite3_bind_text(st, 1, c->pod_id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, c->name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, c->attempt);
		if (sqlite3_step(st) == SQLITE_ROW)
			r = ad_fail(
			    err, AD_E_EXISTS,
			    "container %s (attempt %u) already exists in pod sandbox %s: %s",
			    c->name, c->attempt, c->pod_id, sqlite3_column_text(st, 0));
		sqlite3_reset(st);
	}
	if (r == 0 &&
	    (r = ad_db_prepare(m->db,
			       "INSERT INTO containers (id, pod_id, name, attempt, state, image,"
			       " image_id, image_ref, created_ns, log_path, labels, annotations,"
			       " image_config, config, stop_signal) VALUES (?1, ?2, ?3, ?4, 0, ?5,"
			       " ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
			       &st, err)) == 0) {
		sqlite3_bind_text(st, 1, c->id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, c->pod_id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 3, c->name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 4, c->attempt);
		sqlite3_bind_text(st, 5, c->image, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 6, c->image_id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 7, c->image_ref, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 8, c->created_ns);
		sqlite3_bind_text(st, 9, c->log_path, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 10, labels, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 11, annotations, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 12, c->image_config, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 13, c->request ? (const void *)c->request : "",
				  (int)c->request_len, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 14, c->stop_signal);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = ad_db_fail(m->db, err, "state DB: insert container");
		sqlite3_reset(st);
	}
	if (r == 0)
		r = ad_db_commit(m->db, err);
	else
		ad_db_rollback(m->db);
	pthread_mutex_unlock(&m->db_lock);
	return r;
}

static void ctr_undo(mgr *m, const char *id, bool runtime)
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
	r = store_rootfs_mount(m->images, c->image_id, c->id, &d->rootfs, err);
	d->t_mount = ad_monotonic_ns();
	if (r == 0)
		ad_fault_point("ctr.rootfs");
	rt_container *ic = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (p->infra_id && rt_open(m->rt, p->infra_id, &ic, &e) == 0) {
		d->infra_pid = rt_container_init_pid(ic);
		rt_container_free(ic);
	}
	if (r < 0) {
		mgr_ctr_abort(d, err);
		return -1;
	}
	*ret = d;
	return 0;
}

void mgr_ctr_abort(mgr_ctr_draft *d, ad_error **err)
{
	ctr_undo(d->m, d->ctr->id, false);
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
		ctr_undo(m, c->id, created);
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
	if (ctr_load(m, target_id, &t, &e) < 0 || t->state == MGR_CTR_CREATING) {
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
	else if (ctr_refresh(m, t, err) < 0)
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

/* ---- start / stop / remove ------------------------------------------------------- */
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
			watch_exit(m, id, exit_fd, ns_fd);
			exit_fd = ns_fd = -1;
		}
		t[4] = ad_monotonic_ns();
		ad_debug("StartContainer %s (ms): record %.2f, open %.2f, runtime %.2f, state %.2f",
			 id, (t[1] - t[0]) / 1e6, (t[2] - t[1]) / 1e6, (t[3] - t[2]) / 1e6,
			 (t[4] - t[3]) / 1e6);
	} else if (c && c->state == MGR_CTR_CREATED) {
		/* A start that failed leaves an exited container, as upstream does. */
		_cleanup_error_ ad_error *e = NULL;
		mgr_db_exec(m, &e,
			    "UPDATE containers SET state = ?2, finished_ns = ?3, exit_code = 128,"
			    " reason = 'StartError', message = ?4 WHERE id = ?1",
			    "siis", id, (int64_t)MGR_CTR_EXITED, ad_now_ns(), (*err)->message);
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
	/* The CRI Signal enum follows Linux numbering from SIGABRT on. */
	return c->stop_signal > 0 && c->stop_signal < 65 ? c->stop_signal : SIGTERM;
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
		r = record_exit(m, c, &st, err);
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
		r = record_exit(m, c, &st, err);
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
	if (ctr_load(m, id, &c, &e) < 0) {
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
	int r = mgr_ctr_remove_locked(m, id, err);
	mgr_release(m, id);
	return r;
}

/* ---- exec --------------------------------------------------------------------------- */
/* The runtime config stored at create. */
static int stored_config(const mgr_ctr *c, rt_config *ret, ad_error **err)
{
	if (!c->rt_config)
		return ad_fail(err, AD_E_DATA_LOSS,
			       "container %s: no stored runtime config (created by an older agentd)",
			       c->id);
	if (rt_config_unpack(c->rt_config, c->rt_config_len, ret, err) < 0)
		return ad_error_wrap(err, "container %s", c->id);
	return 0;
}

/* What an exec into a running container needs: the runtime's handle and the
 * config the container was created with (the same user, cgroup, namespaces
 * and security for every exec). */
typedef struct exec_target {
	mgr_ctr *c; /* holds the packed config cfg points into */
	rt_container *rc;
	rt_config cfg;
} exec_target;

static void exec_target_clear(exec_target *t)
{
	rt_config_unpacked_clear(&t->cfg);
	rt_container_free(t->rc);
	mgr_ctr_free(t->c);
	*t = (exec_target){0};
}

static int exec_target_open(mgr *m, const char *id, const char *const *args, exec_target *ret,
			    ad_error **err)
{
	*ret = (exec_target){0};
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (!args || !args[0])
		return ad_fail(err, AD_E_INVALID, "exec: no command");
	int r = mgr_ctr_get(m, id, &ret->c, err);
	if (r == 0 && ret->c->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is not running", id);
	if (r == 0)
		r = rt_open(m->rt, id, &ret->rc, err);
	if (r == 0)
		r = stored_config(ret->c, &ret->cfg, err);
	if (r < 0)
		exec_target_clear(ret);
	return r;
}

int mgr_ctr_exec_sync(mgr *m, const char *id, const char *const *args, int64_t timeout_s,
		      size_t max_output, rt_exec_result *ret, ad_error **err)
{
	exec_target t;
	if (exec_target_open(m, id, args, &t, err) < 0)
		return -1;
	int64_t ms = timeout_s > 0 ? timeout_s * 1000 : 0;
	if (ms > INT32_MAX)
		ms = INT32_MAX;
	int r = rt_exec_sync(t.rc, &t.cfg, args, (int)ms,
			     max_output ? max_output : EXEC_MAX_OUTPUT_DEFAULT, ret, err);
	exec_target_clear(&t);
	return r;
}

int mgr_ctr_exec_start(mgr *m, const char *id, const char *const *args, int stdin_fd, int stdout_fd,
		       int stderr_fd, pid_t *ret_pid, ad_error **err)
{
	exec_target t;
	if (exec_target_open(m, id, args, &t, err) < 0)
		return -1;
	int r = rt_exec(t.rc, &t.cfg, args, stdin_fd, stdout_fd, stderr_fd, ret_pid, err);
	exec_target_clear(&t);
	return r;
}

int mgr_ctr_open_pty(mgr *m, const char *id, int *ret_master, int *ret_slave, ad_error **err)
{
	exec_target t;
	static const char *const none[] = {"-", NULL};
	if (exec_target_open(m, id, none, &t, err) < 0)
		return -1;
	_cleanup_free_ char *root = ad_asprintf("/proc/%d/root", (int)rt_container_init_pid(t.rc));
	_cleanup_close_ int root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	exec_target_clear(&t);
	if (root_fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "container %s: open %s", id, root);
	/* Resolved in the container's root and mounts: its own devpts. */
	int master = ad_openat_in_root(root_fd, "dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC, 0,
				       err);
	if (master < 0)
		return ad_error_wrap(err, "container %s: pty", id);
	int slave = unlockpt(master) == 0
			? ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)
			: -1;
	if (slave < 0) {
		int r = ad_fail_errno(err, AD_E_INTERNAL, "container %s: pty peer", id);
		close(master);
		return r;
	}
	*ret_master = master;
	*ret_slave = slave;
	return 0;
}

int mgr_ctr_attach(mgr *m, const char *id, int *ret_fd, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_ctr *c = NULL;
	rt_container *rc = NULL;
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is not running", id);
	if (r == 0)
		r = rt_open(m->rt, id, &rc, err);
	if (r == 0)
		r = rt_attach(rc, ret_fd, err);
	rt_container_free(rc);
	mgr_ctr_free(c);
	return r;
}

int mgr_ctr_resize(mgr *m, const char *id, unsigned rows, unsigned cols, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	rt_container *rc = NULL;
	int r = rt_open(m->rt, id, &rc, err);
	if (r == 0)
		r = rt_resize(rc, rows, cols, err);
	rt_container_free(rc);
	return r;
}

void mgr_ctr_poll(mgr *m)
{
	mgr_ctr **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (ctr_query(m, "SELECT " CTR_COLS " FROM containers WHERE state = 2", NULL, &v, NULL,
		      &e) < 0) {
		ad_warn("container monitor: %s", e->message);
		return;
	}
	for (mgr_ctr **c = v; *c; c++) {
		ad_error *e2 = NULL;
		if (ctr_refresh(m, *c, &e2) < 0)
			ad_debug("container %s: %s", (*c)->id, e2->message);
		ad_error_free(&e2);
	}
	mgr_ctrs_free(v);
}

/* ---- reconcile ---------------------------------------------------------------------- */
/* A container recorded as created whose shim says it was started: agentd
 * died between the start and its record. It is recorded as running (from
 * when it started), and its exit, if it has one, follows. One whose
 * runtime state is gone (a reboot, or a remove cut short) can never start:
 * it is recorded as exited. */
static int ctr_adopt_started(mgr *m, mgr_ctr *c, ad_error **err)
{
	rt_container *rc = NULL;
	if (rt_open(m->rt, c->id, &rc, NULL) < 0)
		return record_state_lost(m, c, err);
	rt_state st = {0};
	int r = rt_get_state(rc, &st, err);
	rt_container_free(rc);
	if (r < 0 || st.started_at <= 0 ||
	    (st.status != RT_STATUS_RUNNING && st.status != RT_STATUS_STOPPED))
		return r;
	ad_info("container %s: recording a start that was interrupted", c->id);
	r = mgr_db_exec(m, err,
			"UPDATE containers SET state = ?2, started_ns = ?3 WHERE id = ?1 AND state = ?4",
			"siii", c->id, (int64_t)MGR_CTR_RUNNING, st.started_at,
			(int64_t)MGR_CTR_CREATED);
	if (r == 0) {
		c->state = MGR_CTR_RUNNING;
		c->started_ns = st.started_at;
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_STARTED);
	}
	return r;
}

void mgr_ctr_reconcile(mgr *m)
{
	mgr_ctr **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (ctr_query(m, "SELECT " CTR_COLS " FROM containers", NULL, &v, NULL, &e) < 0) {
		ad_warn("reconcile containers: %s", e->message);
		return;
	}
	for (mgr_ctr **c = v; *c; c++) {
		if ((*c)->state == MGR_CTR_CREATING) {
			ad_info("container %s: cleaning up an interrupted create", (*c)->id);
			ctr_undo(m, (*c)->id, true);
			continue;
		}
		ad_error *e2 = NULL;
		if ((*c)->state == MGR_CTR_CREATED && ctr_adopt_started(m, *c, &e2) < 0) {
			ad_warn("container %s: %s", (*c)->id, e2->message);
			ad_error_free(&e2);
		}
		rt_container *rc = NULL;
		int exit_fd = (*c)->state == MGR_CTR_RUNNING && rt_open(m->rt, (*c)->id, &rc, NULL) == 0
				  ? rt_container_exit_fd(rc)
				  : -1;
		rt_container_free(rc);
		if (ctr_refresh(m, *c, &e2) < 0)
			ad_warn("container %s: %s", (*c)->id, e2->message);
		else if ((*c)->state == MGR_CTR_EXITED && (*c)->reason)
			ad_debug("container %s: exited %d", (*c)->id, (*c)->exit_code);
		if ((*c)->state == MGR_CTR_RUNNING) {
			watch_exit(m, (*c)->id, exit_fd, -1);
			exit_fd = -1;
		}
		if (exit_fd >= 0)
			close(exit_fd);
		ad_error_free(&e2);
	}
	mgr_ctrs_free(v);
}

/* ---- stats, resources, logs --------------------------------------------------------- */
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
	rt_container *rc = NULL;
	int r = open_running(m, id, &rc, err);
	if (r == 0)
		r = rt_get_stats(rc, ret, err);
	rt_container_free(rc);
	return r;
}

/* The stored config gets the new resources, so ContainerStatus reports what
 * is applied now (containerd likewise updates the container's spec). */
static int store_resources(mgr *m, const char *id, const rt_resources *res,
			   const uint8_t *request, size_t request_len, ad_error **err)
{
	mgr_ctr *c = NULL;
	if (ctr_load(m, id, &c, err) < 0)
		return -1;
	rt_config cfg = {0};
	int r = stored_config(c, &cfg, err);
	if (r == 0) {
		cfg.resources = *res;
		_cleanup_free_ char *packed = NULL;
		size_t len = 0;
		rt_config_pack(&cfg, &packed, &len);
		r = request ? mgr_db_exec(m, err,
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

int mgr_ctr_fs_usage(mgr *m, const char *id, uint64_t *ret_bytes, uint64_t *ret_inodes,
		     const char **ret_mountpoint, ad_error **err)
{
	*ret_mountpoint = m->root;
	if (!m->images)
		return ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	return store_rootfs_usage(m->images, id, ret_bytes, ret_inodes, err);
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
		return 0;
	}
	/* Created: what it will run with. */
	rt_config cfg = {0};
	if (stored_config(c, &cfg, err) < 0)
		return -1;
	ret->uid = cfg.uid;
	ret->gid = cfg.gid;
	for (size_t i = 0; i < cfg.n_additional_gids && i < MGR_MAX_GROUPS; i++)
		ret->groups[ret->n_groups++] = cfg.additional_gids[i];
	rt_config_unpacked_clear(&cfg);
	return 0;
}

int mgr_ctr_runtime_config(mgr *m, const mgr_ctr *c, rt_config *ret, pid_t *ret_pid,
			   ad_error **err)
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
	return stored_config(c, ret, err);
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
