/* The container half of the manager: a CRI ContainerConfig merged with its
 * image's config becomes an rt_config in the pod's namespaces, on an overlay
 * rootfs from the store. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

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
	free(c->config);
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
	" finished_ns, exit_code, reason, message, log_path, image_config, config"

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
	c->config = mgr_col_blob(st, 16, &c->config_len);
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
	const char *reason = st->oom_killed	  ? "OOMKilled"
			     : st->exit_code == 0 ? "Completed"
						  : "Error";
	int64_t finished = st->finished_at ? st->finished_at : ad_now_ns();
	/* The exit watch, a status poll and StopContainer may all see the same
	 * exit: only the one whose update moves the row to EXITED records it and
	 * announces STOPPED. */
	int changed = mgr_db_exec_changes(
	    m, err,
	    "UPDATE containers SET state = ?2, finished_ns = ?3, exit_code = ?4,"
	    " reason = ?5 WHERE id = ?1 AND state <> ?2",
	    "siiis", c->id, (int64_t)MGR_CTR_EXITED, finished, (int64_t)st->exit_code, reason);
	if (changed < 0)
		return -1;
	c->state = MGR_CTR_EXITED;
	if (changed > 0)
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_STOPPED);
	c->finished_ns = finished;
	c->exit_code = st->exit_code;
	free(c->reason);
	c->reason = ad_strdup(reason);
	return 0;
}

/* A running container whose process is gone gets its exit recorded. */
static int ctr_refresh(mgr *m, mgr_ctr *c, ad_error **err)
{
	if (c->state != MGR_CTR_RUNNING || !m->rt)
		return 0;
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_open(m->rt, c->id, &rc, &e) < 0) {
		/* The shim and its state are gone (a reboot): the exit is unknown. */
		rt_state st = {.exit_code = 255};
		if (record_exit(m, c, &st, err) < 0)
			return -1;
		free(c->message);
		c->message = ad_strdup("container state lost");
		return mgr_db_exec(m, err, "UPDATE containers SET message = ?2 WHERE id = ?1", "ss",
				   c->id, c->message);
	}
	/* Most refreshes find it still running: no need to ask its shim. */
	rt_state st = {.status = RT_STATUS_RUNNING};
	int r = rt_init_alive(rc) ? 0 : rt_get_state(rc, &st, err);
	if (r == 0 && st.status == RT_STATUS_STOPPED)
		r = record_exit(m, c, &st, err);
	rt_container_free(rc);
	return r;
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

int mgr_ctr_list(mgr *m, const char *pod_id, mgr_ctr ***ret, ad_error **err)
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
	for (mgr_ctr **c = v; *c; c++) {
		_cleanup_error_ ad_error *e = NULL;
		if (ctr_refresh(m, *c, &e) < 0)
			ad_warn("container %s: %s", (*c)->id, e->message);
	}
	*ret = v;
	return 0;
}

/* ---- building the runtime config ----------------------------------------------- */
/* What an rt_config points to, freed together. */
typedef struct arena {
	void **p;
	size_t n;
} arena;

static void *ar_keep(arena *a, void *p)
{
	a->p = ad_realloc(a->p, (a->n + 1) * sizeof(void *));
	a->p[a->n++] = p;
	return p;
}

static void ar_free(arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->p[i]);
	free(a->p);
	*a = (arena){0};
}

static const char **strv_new(arena *a, size_t n)
{
	return ar_keep(a, ad_malloc0((n + 1) * sizeof(char *)));
}

static json_t *image_cfg_get(json_t *img, const char *key)
{
	return json_object_get(json_object_get(img, "config"), key);
}

/* Kubelet's rule: command replaces Entrypoint (and drops Cmd), args replace Cmd. */
static const char **build_args(arena *a, const Runtime__V1__ContainerConfig *cc, json_t *img)
{
	json_t *ep = image_cfg_get(img, "Entrypoint"), *cmd = image_cfg_get(img, "Cmd");
	size_t n = 0, cap = cc->n_command + cc->n_args + json_array_size(ep) + json_array_size(cmd);
	const char **v = strv_new(a, cap);
	if (cc->n_command) {
		for (size_t i = 0; i < cc->n_command; i++)
			v[n++] = cc->command[i];
		for (size_t i = 0; i < cc->n_args; i++)
			v[n++] = cc->args[i];
		return v;
	}
	for (size_t i = 0; i < json_array_size(ep); i++)
		v[n++] = json_string_value(json_array_get(ep, i));
	if (cc->n_args) {
		for (size_t i = 0; i < cc->n_args; i++)
			v[n++] = cc->args[i];
	} else {
		for (size_t i = 0; i < json_array_size(cmd); i++)
			v[n++] = json_string_value(json_array_get(cmd, i));
	}
	return v;
}

/* Image Env with the CRI envs over it, key by key. */
static const char **build_env(arena *a, const Runtime__V1__ContainerConfig *cc, json_t *img)
{
	json_t *ienv = image_cfg_get(img, "Env");
	size_t n = 0, cap = json_array_size(ienv) + cc->n_envs + 1;
	const char **v = strv_new(a, cap);
	for (size_t i = 0; i < json_array_size(ienv); i++) {
		const char *kv = json_string_value(json_array_get(ienv, i));
		if (!kv)
			continue;
		size_t klen = strcspn(kv, "=");
		bool overridden = false;
		for (size_t j = 0; j < cc->n_envs && !overridden; j++)
			overridden = strlen(cc->envs[j]->key) == klen &&
				     strncmp(cc->envs[j]->key, kv, klen) == 0;
		if (!overridden)
			v[n++] = kv;
	}
	for (size_t j = 0; j < cc->n_envs; j++)
		v[n++] = ar_keep(a, ad_asprintf("%s=%s", cc->envs[j]->key, cc->envs[j]->value));
	return v;
}

/* "name" or "uid" from /etc/passwd or /etc/group of the rootfs. */
static int lookup_id(const char *rootfs, const char *file, const char *name, long *ret_id,
		     long *ret_gid)
{
	_cleanup_close_ int root = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -1;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_close_ int fd = ad_openat_in_root(root, file, O_RDONLY, 0, &e);
	if (fd < 0)
		return -1;
	_cleanup_fclose_ FILE *f = fdopen(fd, "r");
	if (!f)
		return -1;
	fd = -1;
	char line[1024];
	bool numeric = name[strspn(name, "0123456789")] == '\0';
	while (fgets(line, sizeof(line), f)) {
		char *fields[4] = {0};
		char *save = NULL, *p = line;
		for (int i = 0; i < 4; i++, p = NULL)
			fields[i] = strtok_r(p, ":\n", &save);
		if (!fields[0] || !fields[2])
			continue;
		/* passwd: name:x:uid:gid; group: name:x:gid */
		bool match = numeric ? strcmp(fields[2], name) == 0 : strcmp(fields[0], name) == 0;
		if (match) {
			*ret_id = strtol(fields[2], NULL, 10);
			if (ret_gid)
				*ret_gid = fields[3] ? strtol(fields[3], NULL, 10) : -1;
			return 0;
		}
	}
	return -1;
}

static int build_user(const Runtime__V1__ContainerConfig *cc, json_t *img, const char *rootfs,
		      rt_config *rc, ad_error **err)
{
	const Runtime__V1__LinuxContainerSecurityContext *sc =
	    cc->linux ? cc->linux->security_context : NULL;
	_cleanup_free_ char *user = NULL, *group = NULL;
	if (sc && sc->run_as_user)
		user = ad_asprintf("%lld", (long long)sc->run_as_user->value);
	else if (sc && sc->run_as_username && *sc->run_as_username)
		user = ad_strdup(sc->run_as_username);
	else {
		const char *u = json_string_value(image_cfg_get(img, "User"));
		if (u && *u) {
			user = ad_strdup(u);
			char *colon = strchr(user, ':');
			if (colon) {
				*colon = '\0';
				group = ad_strdup(colon + 1);
			}
		}
	}
	long uid = 0, gid = -1;
	if (user && *user) {
		bool numeric = user[strspn(user, "0123456789")] == '\0';
		long pw_gid = -1;
		if (lookup_id(rootfs, "/etc/passwd", user, &uid, &pw_gid) == 0)
			gid = pw_gid;
		else if (numeric)
			uid = strtol(user, NULL, 10);
		else
			return ad_fail(err, AD_E_INVALID, "user '%s' not found in the image", user);
	}
	if (sc && sc->run_as_group)
		gid = (long)sc->run_as_group->value;
	else if (group && *group) {
		long g;
		if (lookup_id(rootfs, "/etc/group", group, &g, NULL) == 0)
			gid = g;
		else if (group[strspn(group, "0123456789")] == '\0')
			gid = strtol(group, NULL, 10);
		else
			return ad_fail(err, AD_E_INVALID, "group '%s' not found in the image",
				       group);
	}
	rc->uid = (uid_t)uid;
	rc->gid = (gid_t)(gid < 0 ? 0 : gid);
	return 0;
}

static int cap_bits(const char *const *names, size_t n, uint64_t *bits, ad_error **err)
{
	for (size_t i = 0; i < n; i++) {
		const char *name = names[i];
		if (strcasecmp(name, "ALL") == 0) {
			*bits = ~0ULL;
			continue;
		}
		_cleanup_free_ char *full = strncasecmp(name, "CAP_", 4) == 0
						? ad_strdup(name)
						: ad_asprintf("CAP_%s", name);
		cap_value_t v;
		if (cap_from_name(full, &v) < 0 || v > 63)
			return ad_fail(err, AD_E_INVALID, "unknown capability '%s'", name);
		*bits |= 1ULL << v;
	}
	return 0;
}

void mgr_security_profiles(const Runtime__V1__SecurityProfile *seccomp,
			   const Runtime__V1__SecurityProfile *apparmor, rt_security *sec)
{
	if (seccomp) {
		switch (seccomp->profile_type) {
		case RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__RuntimeDefault:
			sec->seccomp = RT_SECCOMP_DEFAULT;
			break;
		case RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost:
			sec->seccomp = RT_SECCOMP_CUSTOM;
			sec->seccomp_profile = seccomp->localhost_ref;
			break;
		default:
			sec->seccomp = RT_SECCOMP_UNCONFINED;
			break;
		}
	}
	/* AppArmor: a Localhost profile by name; RuntimeDefault and Unconfined
	 * apply none (no default profile is shipped). */
	if (apparmor &&
	    apparmor->profile_type == RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost &&
	    apparmor->localhost_ref && *apparmor->localhost_ref)
		sec->apparmor_profile = apparmor->localhost_ref;
}

static int build_security(arena *a, const Runtime__V1__ContainerConfig *cc, rt_config *rc,
			  ad_error **err)
{
	const Runtime__V1__LinuxContainerSecurityContext *sc =
	    cc->linux ? cc->linux->security_context : NULL;
	/* An absent seccomp profile is Unconfined in CRI (kubelet says so
	 * explicitly when it wants RuntimeDefault). */
	rc->security.seccomp = RT_SECCOMP_UNCONFINED;
	if (!sc)
		return 0;
	rc->security.privileged = sc->privileged;
	rc->security.no_new_privs = sc->no_new_privs;
	rc->security.readonly_rootfs = sc->readonly_rootfs;
	if (sc->capabilities && !sc->privileged &&
	    (sc->capabilities->n_add_capabilities || sc->capabilities->n_drop_capabilities)) {
		uint64_t add = 0, drop = 0;
		if (cap_bits((const char *const *)sc->capabilities->add_capabilities,
			     sc->capabilities->n_add_capabilities, &add, err) < 0 ||
		    cap_bits((const char *const *)sc->capabilities->drop_capabilities,
			     sc->capabilities->n_drop_capabilities, &drop, err) < 0)
			return -1;
		uint64_t set = (rt_default_capabilities() | add) & ~drop;
		if (add == ~0ULL)
			set = ~0ULL & ~drop;
		rc->security.capabilities_set = true;
		rc->security.cap_bounding = rc->security.cap_effective = set;
		rc->security.cap_permitted = rc->security.cap_inheritable = set;
	}
	mgr_security_profiles(sc->seccomp, sc->apparmor, &rc->security);
	if (sc->n_masked_paths) {
		const char **v = strv_new(a, sc->n_masked_paths);
		for (size_t i = 0; i < sc->n_masked_paths; i++)
			v[i] = sc->masked_paths[i];
		rc->security.masked_paths = v;
	}
	if (sc->n_readonly_paths) {
		const char **v = strv_new(a, sc->n_readonly_paths);
		for (size_t i = 0; i < sc->n_readonly_paths; i++)
			v[i] = sc->readonly_paths[i];
		rc->security.readonly_paths = v;
	}
	if (sc->n_supplemental_groups) {
		gid_t *g = ar_keep(a, ad_malloc0(sc->n_supplemental_groups * sizeof(gid_t)));
		for (size_t i = 0; i < sc->n_supplemental_groups; i++)
			g[i] = (gid_t)sc->supplemental_groups[i];
		rc->additional_gids = g;
		rc->n_additional_gids = sc->n_supplemental_groups;
	}
	return 0;
}

static void build_resources(const Runtime__V1__ContainerConfig *cc, rt_config *rc)
{
	const Runtime__V1__LinuxContainerResources *r = cc->linux ? cc->linux->resources : NULL;
	if (!r)
		return;
	if (r->cpu_shares > 0)
		rc->resources.cpu_shares = (uint64_t)r->cpu_shares;
	if (r->cpu_quota > 0)
		rc->resources.cpu_quota_us = r->cpu_quota;
	if (r->cpu_period > 0)
		rc->resources.cpu_period_us = (uint64_t)r->cpu_period;
	if (r->memory_limit_in_bytes > 0)
		rc->resources.memory_limit = r->memory_limit_in_bytes;
	if (r->memory_swap_limit_in_bytes > 0)
		rc->resources.memory_swap = r->memory_swap_limit_in_bytes;
	if (r->cpuset_cpus && *r->cpuset_cpus)
		rc->resources.cpuset_cpus = r->cpuset_cpus;
	if (r->cpuset_mems && *r->cpuset_mems)
		rc->resources.cpuset_mems = r->cpuset_mems;
	if (r->oom_score_adj) {
		rc->oom_score_adj = (int)r->oom_score_adj;
		rc->oom_score_adj_set = true;
	}
}

static bool has_mount(const Runtime__V1__ContainerConfig *cc, const char *dest)
{
	for (size_t i = 0; i < cc->n_mounts; i++)
		if (strcmp(cc->mounts[i]->container_path, dest) == 0)
			return true;
	return false;
}

static int build_mounts(arena *a, const Runtime__V1__ContainerConfig *cc, const mgr_pod *p,
			rt_config *rc, ad_error **err)
{
	static const char *const pod_files[] = {"hosts", "hostname", "resolv.conf"};
	rt_mount *mv =
	    ar_keep(a, ad_malloc0((cc->n_mounts + cc->n_devices + 3) * sizeof(rt_mount)));
	size_t n = 0;
	for (size_t i = 0; i < cc->n_mounts; i++) {
		const Runtime__V1__Mount *cm = cc->mounts[i];
		if (!cm->container_path || cm->container_path[0] != '/')
			return ad_fail(err, AD_E_INVALID,
				       "mount: container path '%s' is not absolute",
				       cm->container_path ? cm->container_path : "");
		if (!cm->host_path || cm->host_path[0] != '/')
			return ad_fail(err, AD_E_INVALID, "mount: host path '%s' is not absolute",
				       cm->host_path ? cm->host_path : "");
		struct stat sb;
		/* A missing host path becomes a directory, as kubelet's hostPath
		 * DirectoryOrCreate and containerd do. */
		if (stat(cm->host_path, &sb) < 0 && ad_mkdir_p(cm->host_path, 0755, err) < 0)
			return ad_error_wrap(err, "mount %s", cm->container_path);
		if (cm->selinux_relabel)
			ad_warn("mount %s: SELinux relabel requested; SELinux is not used here",
				cm->container_path);
		mv[n++] = (rt_mount){
		    .type = "bind",
		    .source = cm->host_path,
		    .destination = cm->container_path,
		    .readonly = cm->readonly,
		    .propagation =
			cm->propagation == RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_BIDIRECTIONAL
			    ? RT_PROP_RSHARED
			: cm->propagation ==
				RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_HOST_TO_CONTAINER
			    ? RT_PROP_RSLAVE
			    : RT_PROP_PRIVATE,
		};
	}
	for (size_t i = 0; i < 3; i++) {
		char *dest = ar_keep(a, ad_asprintf("/etc/%s", pod_files[i]));
		if (has_mount(cc, dest))
			continue;
		mv[n++] = (rt_mount){
		    .type = "bind",
		    .source = ar_keep(a, ad_asprintf("%s/%s", p->dir, pod_files[i])),
		    .destination = dest,
		};
	}
	/* Devices: the host's node bound in, and allowed in the devices cgroup. */
	const char **rules = strv_new(a, cc->n_devices);
	for (size_t i = 0; i < cc->n_devices; i++) {
		const Runtime__V1__Device *d = cc->devices[i];
		struct stat sb;
		if (!d->host_path || stat(d->host_path, &sb) < 0)
			return ad_fail_errno(err, AD_E_INVALID, "device %s",
					     d->host_path ? d->host_path : "");
		if (!S_ISCHR(sb.st_mode) && !S_ISBLK(sb.st_mode))
			return ad_fail(err, AD_E_INVALID, "device %s is not a device node",
				       d->host_path);
		const char *perms = d->permissions && *d->permissions ? d->permissions : "rwm";
		if (perms[strspn(perms, "rwm")] != '\0')
			return ad_fail(err, AD_E_INVALID, "device %s: bad permissions '%s'",
				       d->host_path, perms);
		const char *dest =
		    d->container_path && *d->container_path ? d->container_path : d->host_path;
		if (dest[0] != '/')
			return ad_fail(err, AD_E_INVALID,
				       "device %s: container path '%s' is not "
				       "absolute",
				       d->host_path, dest);
		rules[i] = ar_keep(a, ad_asprintf("%c %u:%u %s", S_ISCHR(sb.st_mode) ? 'c' : 'b',
						  major(sb.st_rdev), minor(sb.st_rdev), perms));
		mv[n++] = (rt_mount){.type = "bind",
				     .source = d->host_path,
				     .destination = dest,
				     .readonly = !strchr(perms, 'w')};
	}
	if (cc->n_devices && !rc->security.privileged)
		rc->security.device_rules = rules;
	rc->mounts = mv;
	rc->n_mounts = n;
	return 0;
}

static Runtime__V1__NamespaceMode pod_mode(const Runtime__V1__PodSandboxConfig *pc, char which)
{
	const Runtime__V1__NamespaceOption *o = pc && pc->linux && pc->linux->security_context
						    ? pc->linux->security_context->namespace_options
						    : NULL;
	if (!o)
		return RUNTIME__V1__NAMESPACE_MODE__POD;
	return which == 'n' ? o->network : o->ipc;
}

/* The init pid of a pid namespace TARGET: a running container of the same
 * pod, as containerd and CRI-O require for ephemeral (debug) containers. */
static int target_pid(mgr *m, const mgr_pod *p, const char *target_id, pid_t *ret,
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
	if (strcmp(t->pod_id, p->id) != 0)
		r = ad_fail(err, AD_E_INVALID,
			    "pid namespace target container %s is in pod sandbox %s, not in %s",
			    target_id, t->pod_id, p->id);
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

/* `creating`: resolve everything for a new container; exec (which joins the
 * running container's own namespaces) only needs the rest of the config. */
static int build_namespaces(mgr *m, arena *a, const Runtime__V1__ContainerConfig *cc,
			    const mgr_pod *p, const Runtime__V1__PodSandboxConfig *pc,
			    bool creating, rt_config *rc, ad_error **err)
{
	pid_t infra = 0;
	rt_container *ic = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (p->infra_id && rt_open(m->rt, p->infra_id, &ic, &e) == 0) {
		infra = rt_container_init_pid(ic);
		rt_container_free(ic);
	}
	char *ipc = ar_keep(a, ad_asprintf("/proc/%d/ns/ipc", (int)infra));
	char *uts = ar_keep(a, ad_asprintf("/proc/%d/ns/uts", (int)infra));
	char *pid = ar_keep(a, ad_asprintf("/proc/%d/ns/pid", (int)infra));
	if (pod_mode(pc, 'n') == RUNTIME__V1__NAMESPACE_MODE__NODE) {
		rc->namespaces[RT_NS_NET].mode = RT_NS_SHARE_HOST;
		rc->namespaces[RT_NS_UTS].mode = RT_NS_SHARE_HOST;
	} else {
		rc->namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, p->netns};
		rc->namespaces[RT_NS_UTS] = (rt_namespace){RT_NS_JOIN, uts};
	}
	if (pod_mode(pc, 'i') == RUNTIME__V1__NAMESPACE_MODE__NODE)
		rc->namespaces[RT_NS_IPC].mode = RT_NS_SHARE_HOST;
	else
		rc->namespaces[RT_NS_IPC] = (rt_namespace){RT_NS_JOIN, ipc};
	const Runtime__V1__NamespaceOption *o = cc->linux && cc->linux->security_context
						    ? cc->linux->security_context->namespace_options
						    : NULL;
	/* Without options a container gets its own pid namespace (Kubernetes'
	 * default, shareProcessNamespace false). */
	Runtime__V1__NamespaceMode pm = o ? o->pid : RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
	switch (pm) {
	case RUNTIME__V1__NAMESPACE_MODE__POD:
		rc->namespaces[RT_NS_PID] = (rt_namespace){RT_NS_JOIN, pid};
		break;
	case RUNTIME__V1__NAMESPACE_MODE__NODE:
		rc->namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
		break;
	case RUNTIME__V1__NAMESPACE_MODE__TARGET: {
		pid_t tpid = 0;
		if (creating && target_pid(m, p, o->target_id, &tpid, err) < 0)
			return -1;
		/* Later (a status summary) the target may be gone: no path then. */
		ad_error_free(&e);
		if (!creating && target_pid(m, p, o->target_id, &tpid, &e) < 0) {
			ad_error_free(&e);
			rc->namespaces[RT_NS_PID] = (rt_namespace){RT_NS_JOIN, NULL};
			break;
		}
		rc->namespaces[RT_NS_PID] = (rt_namespace){
		    RT_NS_JOIN, ar_keep(a, ad_asprintf("/proc/%d/ns/pid", (int)tpid))};
		break;
	}
	default:
		rc->namespaces[RT_NS_PID].mode = RT_NS_NEW;
		break;
	}
	return 0;
}

/* The rt_config of a container: the CRI config merged with the image config,
 * in the pod's namespaces. Everything it points to is in `a` or `cc`/`img`. */
static int build_config(mgr *m, arena *a, const mgr_ctr *c, const Runtime__V1__ContainerConfig *cc,
			json_t *img, const mgr_pod *p, const Runtime__V1__PodSandboxConfig *pc,
			const char *rootfs, rt_config *rc, ad_error **err)
{
	rt_config_init(rc);
	rc->id = c->id;
	rc->rootfs = rootfs;
	rc->args = build_args(a, cc, img);
	if (!rc->args[0])
		return ad_fail(err, AD_E_INVALID,
			       "container %s: no command (neither the config nor"
			       " the image has one)",
			       cc->metadata->name);
	rc->env = build_env(a, cc, img);
	const char *wd = json_string_value(image_cfg_get(img, "WorkingDir"));
	rc->cwd = cc->working_dir && *cc->working_dir ? cc->working_dir : wd && *wd ? wd : NULL;
	rc->tty = cc->tty;
	/* stdin: a pipe the shim holds open (fed by attach), so the process
	 * does not read EOF at once. */
	rc->open_stdin = cc->stdin;
	rc->stdin_once = cc->stdin_once;
	rc->log_path = c->log_path && *c->log_path ? c->log_path : NULL;
	build_resources(cc, rc);
	/* The pod's cgroup (kubelet's cgroupfs path), shared by all its containers. */
	if (pc && pc->linux && pc->linux->cgroup_parent && *pc->linux->cgroup_parent)
		rc->cgroup_parent = pc->linux->cgroup_parent;
	if (build_user(cc, img, rootfs, rc, err) < 0 || build_security(a, cc, rc, err) < 0 ||
	    build_mounts(a, cc, p, rc, err) < 0 || build_namespaces(m, a, cc, p, pc, c->state == MGR_CTR_CREATING, rc, err) < 0)
		return -1;
	return 0;
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
			       " image_config, config) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8,"
			       " ?9, ?10, ?11, ?12, ?13)",
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
		sqlite3_bind_blob(st, 13, c->config, (int)c->config_len, SQLITE_TRANSIENT);
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

static int ctr_create_in_pod(mgr *m, const mgr_pod *p, const Runtime__V1__ContainerConfig *cc,
			     char **ret_id, ad_error **err)
{
	if (p->state != MGR_POD_READY)
		return ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	if (!cc || !cc->metadata || !cc->metadata->name || !*cc->metadata->name)
		return ad_fail(err, AD_E_INVALID, "container config: metadata.name is required");
	if (!cc->image || !cc->image->image || !*cc->image->image)
		return ad_fail(err, AD_E_INVALID, "container config: image is required");
	if (!m->images)
		return ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");

	int64_t t0 = ad_monotonic_ns();
	store_image *img = NULL;
	if (store_image_get(m->images, cc->image->image, &img, err) < 0)
		return -1;
	json_t *ij = json_loads(img->config_json ? img->config_json : "{}", 0, NULL);

	mgr_ctr *c = ad_malloc0(sizeof(*c));
	c->id = mgr_new_id();
	c->pod_id = ad_strdup(p->id);
	c->name = ad_strdup(cc->metadata->name);
	c->attempt = cc->metadata->attempt;
	c->image = ad_strdup(cc->image->image);
	c->image_id = ad_strdup(img->id);
	c->image_ref =
	    ad_strdup(img->repo_digests && img->repo_digests[0] ? img->repo_digests[0] : img->id);
	c->created_ns = ad_now_ns();
	c->image_config = ad_strdup(img->config_json ? img->config_json : "{}");
	if (p->log_directory && *p->log_directory && cc->log_path && *cc->log_path)
		c->log_path = ad_asprintf("%s/%s", p->log_directory, cc->log_path);
	c->config_len = protobuf_c_message_get_packed_size(&cc->base);
	c->config = ad_malloc0(c->config_len + 1);
	protobuf_c_message_pack(&cc->base, c->config);
	store_image_free(img);

	_cleanup_free_ char *labels = mgr_kv_json(cc->n_labels, (void *const *)cc->labels);
	_cleanup_free_ char *annotations =
	    mgr_kv_json(cc->n_annotations, (void *const *)cc->annotations);
	if (ctr_insert(m, c, labels, annotations, err) < 0) {
		json_decref(ij);
		mgr_ctr_free(c);
		return -1;
	}
	mgr_hold(m, c->id);
	int64_t t_insert = ad_monotonic_ns();

	Runtime__V1__PodSandboxConfig *pc =
	    runtime__v1__pod_sandbox_config__unpack(NULL, p->config_len, p->config);
	_cleanup_free_ char *rootfs = NULL;
	arena a = {0};
	rt_config rc;
	bool created = false;
	int r = store_rootfs_mount(m->images, c->image_id, c->id, &rootfs, err);
	int64_t t_mount = ad_monotonic_ns();
	if (r == 0)
		r = build_config(m, &a, c, cc, ij, p, pc, rootfs, &rc, err);
	int64_t t_config = ad_monotonic_ns(), t_rt = t_config;
	if (r == 0 && c->log_path) {
		_cleanup_free_ char *dir = ad_strdup(c->log_path);
		*strrchr(dir, '/') = '\0';
		r = ad_mkdir_p(dir, 0755, err);
	}
	if (r == 0) {
		rt_container *rtc = NULL;
		r = rt_create(m->rt, &rc, &rtc, err);
		created = r == 0;
		rt_container_free(rtc);
		t_rt = ad_monotonic_ns();
	}
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE containers SET state = ?2 WHERE id = ?1", "si",
				c->id, (int64_t)MGR_CTR_CREATED);
	if (ad_log_enabled(AD_LOG_DEBUG)) {
		int64_t t_end = ad_monotonic_ns();
		ad_debug("CreateContainer %s (ms): record %.2f, rootfs %.2f, config %.2f, "
			 "runtime %.2f, state %.2f",
			 c->id, (t_insert - t0) / 1e6, (t_mount - t_insert) / 1e6,
			 (t_config - t_mount) / 1e6, (t_rt - t_config) / 1e6, (t_end - t_rt) / 1e6);
	}
	ar_free(&a);
	if (pc)
		runtime__v1__pod_sandbox_config__free_unpacked(pc, NULL);
	json_decref(ij);
	if (r < 0) {
		ctr_undo(m, c->id, created);
		ad_error_wrap(err, "create container %s in pod sandbox %s", c->name, p->id);
	} else {
		*ret_id = ad_strdup(c->id);
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_CREATED);
	}
	mgr_release(m, c->id);
	mgr_ctr_free(c);
	return r;
}

int mgr_ctr_create(mgr *m, const char *pod_id, const Runtime__V1__ContainerConfig *cc,
		   char **ret_id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_hold(m, pod_id);
	mgr_pod *p = NULL;
	int r = mgr_pod_get(m, pod_id, &p, err);
	if (r == 0)
		r = ctr_create_in_pod(m, p, cc, ret_id, err);
	mgr_pod_free(p);
	mgr_release(m, pod_id);
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
		int64_t started = rt_container_started_at(rc);
		r = mgr_db_exec(m, err,
				"UPDATE containers SET state = ?2, started_ns = ?3 WHERE id = ?1",
				"sii", id, (int64_t)MGR_CTR_RUNNING, started);
		if (r == 0) {
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
	Runtime__V1__ContainerConfig *cc =
	    runtime__v1__container_config__unpack(NULL, c->config_len, c->config);
	int sig = 0;
	if (cc) {
		/* The CRI Signal enum follows Linux numbering from SIGABRT on. */
		if (cc->stop_signal > 0 && cc->stop_signal < 65)
			sig = (int)cc->stop_signal;
		runtime__v1__container_config__free_unpacked(cc, NULL);
	}
	return sig ? sig : SIGTERM;
}

int mgr_ctr_stop_locked(mgr *m, const char *id, int grace_ms, ad_error **err)
{
	mgr_ctr *c = NULL;
	rt_container *rc = NULL;
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state == MGR_CTR_EXITED)
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
	mgr_hold(m, id);
	if (timeout_s < 0)
		timeout_s = 0;
	if (timeout_s > 24 * 3600)
		timeout_s = 24 * 3600;
	int r = mgr_ctr_stop_locked(m, id, (int)timeout_s * 1000, err);
	mgr_release(m, id);
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
	rt_container *rc = NULL;
	int r = 0;
	int64_t t[4] = {ad_monotonic_ns()};
	if (rt_open(m->rt, id, &rc, &e) == 0) {
		r = rt_delete(rc, err);
		rt_container_free(rc);
	}
	t[1] = ad_monotonic_ns();
	if (r == 0)
		r = store_rootfs_remove(m->images, id, err);
	t[2] = ad_monotonic_ns();
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
/* The rt_config of an existing container rebuilt from what was stored, its
 * rootfs seen through /proc/<init pid>/root; `cfg` points into the rest. */
typedef struct stored_config {
	mgr_pod *pod;
	Runtime__V1__ContainerConfig *cc;
	Runtime__V1__PodSandboxConfig *pc;
	json_t *img;
	char *rootfs;
	arena a;
	rt_config cfg;
} stored_config;

static void stored_config_clear(stored_config *s)
{
	ar_free(&s->a);
	json_decref(s->img);
	if (s->cc)
		runtime__v1__container_config__free_unpacked(s->cc, NULL);
	if (s->pc)
		runtime__v1__pod_sandbox_config__free_unpacked(s->pc, NULL);
	mgr_pod_free(s->pod);
	free(s->rootfs);
	*s = (stored_config){0};
}

static int stored_config_build(mgr *m, const mgr_ctr *c, pid_t init_pid, stored_config *s,
			       ad_error **err)
{
	*s = (stored_config){0};
	if (mgr_pod_get(m, c->pod_id, &s->pod, err) < 0)
		return -1;
	s->cc = runtime__v1__container_config__unpack(NULL, c->config_len, c->config);
	s->pc = runtime__v1__pod_sandbox_config__unpack(NULL, s->pod->config_len, s->pod->config);
	s->img = json_loads(c->image_config ? c->image_config : "{}", 0, NULL);
	if (!s->cc || !s->pc)
		return ad_fail(err, AD_E_DATA_LOSS, "container %s: stored config unreadable",
			       c->id);
	s->rootfs = ad_asprintf("/proc/%d/root", (int)init_pid);
	return build_config(m, &s->a, c, s->cc, s->img, s->pod, s->pc, s->rootfs, &s->cfg, err);
}

int mgr_ctr_exec_sync(mgr *m, const char *id, const char *const *args, int64_t timeout_s,
		      size_t max_output, rt_exec_result *ret, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (!args || !args[0])
		return ad_fail(err, AD_E_INVALID, "exec: no command");
	mgr_ctr *c = NULL;
	rt_container *rc = NULL;
	stored_config sc = {0};
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is not running", id);
	if (r == 0)
		r = rt_open(m->rt, id, &rc, err);
	if (r == 0)
		r = stored_config_build(m, c, rt_container_init_pid(rc), &sc, err);
	if (r == 0) {
		int64_t ms = timeout_s > 0 ? timeout_s * 1000 : 0;
		if (ms > INT32_MAX)
			ms = INT32_MAX;
		r = rt_exec_sync(rc, &sc.cfg, args, (int)ms,
				 max_output ? max_output : EXEC_MAX_OUTPUT_DEFAULT, ret, err);
	}
	stored_config_clear(&sc);
	rt_container_free(rc);
	mgr_ctr_free(c);
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
static int store_resources(mgr *m, const char *id, const Runtime__V1__LinuxContainerResources *res,
			   ad_error **err)
{
	mgr_ctr *c = NULL;
	if (ctr_load(m, id, &c, err) < 0)
		return -1;
	Runtime__V1__ContainerConfig *cc =
	    runtime__v1__container_config__unpack(NULL, c->config_len, c->config);
	int r = 0;
	if (!cc) {
		r = ad_fail(err, AD_E_DATA_LOSS, "container %s: stored config unreadable", id);
	} else {
		Runtime__V1__LinuxContainerConfig lc = RUNTIME__V1__LINUX_CONTAINER_CONFIG__INIT;
		Runtime__V1__LinuxContainerConfig *own = cc->linux;
		if (!own)
			cc->linux = &lc;
		Runtime__V1__LinuxContainerResources *old = cc->linux->resources;
		cc->linux->resources = (Runtime__V1__LinuxContainerResources *)res;
		size_t len = protobuf_c_message_get_packed_size(&cc->base);
		uint8_t *buf = ad_malloc0(len + 1);
		protobuf_c_message_pack(&cc->base, buf);
		cc->linux->resources = old;
		cc->linux = own;
		runtime__v1__container_config__free_unpacked(cc, NULL);
		r = mgr_db_exec(m, err, "UPDATE containers SET config = ?2 WHERE id = ?1", "sb", id,
				buf, len);
		free(buf);
	}
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

int mgr_ctr_update(mgr *m, const char *id, const Runtime__V1__LinuxContainerResources *res,
		   ad_error **err)
{
	rt_container *rc = NULL;
	mgr_hold(m, id);
	int r = open_running(m, id, &rc, err);
	if (r == 0) {
		Runtime__V1__LinuxContainerConfig lc = RUNTIME__V1__LINUX_CONTAINER_CONFIG__INIT;
		Runtime__V1__ContainerConfig cc = RUNTIME__V1__CONTAINER_CONFIG__INIT;
		lc.resources = (Runtime__V1__LinuxContainerResources *)res;
		cc.linux = &lc;
		rt_config tmp = {0};
		build_resources(&cc, &tmp);
		r = rt_update(rc, &tmp.resources, err);
	}
	if (r == 0)
		r = store_resources(m, id, res, err);
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
	/* Created: what it will run with, from the config and its rootfs. */
	Runtime__V1__ContainerConfig *cc =
	    runtime__v1__container_config__unpack(NULL, c->config_len, c->config);
	if (!cc)
		return ad_fail(err, AD_E_DATA_LOSS, "container %s: stored config unreadable", c->id);
	json_t *ij = json_loads(c->image_config ? c->image_config : "{}", 0, NULL);
	_cleanup_free_ char *rootfs = ad_asprintf("/proc/%d/root", (int)pid);
	arena a = {0};
	rt_config rcfg = {0};
	int r = build_user(cc, ij, rootfs, &rcfg, err);
	if (r == 0)
		r = build_security(&a, cc, &rcfg, err);
	if (r == 0) {
		ret->uid = rcfg.uid;
		ret->gid = rcfg.gid;
		for (size_t i = 0; i < rcfg.n_additional_gids && i < MGR_MAX_GROUPS; i++)
			ret->groups[ret->n_groups++] = rcfg.additional_gids[i];
	}
	ar_free(&a);
	json_decref(ij);
	runtime__v1__container_config__free_unpacked(cc, NULL);
	return r;
}

static json_t *strv_json(const char *const *v)
{
	json_t *a = json_array();
	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

char *mgr_ctr_spec_json(mgr *m, const mgr_ctr *c, pid_t *ret_pid)
{
	*ret_pid = 0;
	if (!m->rt || c->state == MGR_CTR_EXITED)
		return NULL;
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_open(m->rt, c->id, &rc, &e) < 0)
		return NULL;
	pid_t pid = rt_container_init_pid(rc);
	rt_container_free(rc);
	if (c->state == MGR_CTR_RUNNING)
		*ret_pid = pid;
	stored_config sc;
	char *out = NULL;
	if (stored_config_build(m, c, pid, &sc, &e) == 0) {
		const rt_config *rcfg = &sc.cfg;
		static const char *const ns_names[_RT_NS_MAX] = {
		    [RT_NS_PID] = "pid", [RT_NS_NET] = "network", [RT_NS_IPC] = "ipc",
		    [RT_NS_UTS] = "uts", [RT_NS_MOUNT] = "mount", [RT_NS_USER] = "user",
		    [RT_NS_CGROUP] = "cgroup"};
		json_t *ns = json_array();
		for (int i = 0; i < _RT_NS_MAX; i++) {
			if (rcfg->namespaces[i].mode == RT_NS_SHARE_HOST)
				continue;
			json_t *o = json_pack("{s:s}", "type", ns_names[i]);
			if (rcfg->namespaces[i].mode == RT_NS_JOIN && rcfg->namespaces[i].path)
				json_object_set_new(o, "path",
						    json_string(rcfg->namespaces[i].path));
			json_array_append_new(ns, o);
		}
		json_t *gids = json_array();
		for (size_t i = 0; i < rcfg->n_additional_gids; i++)
			json_array_append_new(gids, json_integer(rcfg->additional_gids[i]));
		const rt_resources *rr = &rcfg->resources;
		json_t *res = json_pack("{s:I, s:I, s:I, s:I, s:I, s:s*, s:s*}", "cpuShares",
					(json_int_t)rr->cpu_shares, "cpuQuota",
					(json_int_t)rr->cpu_quota_us, "cpuPeriod",
					(json_int_t)rr->cpu_period_us, "memoryLimit",
					(json_int_t)rr->memory_limit, "memorySwap",
					(json_int_t)rr->memory_swap, "cpusetCpus", rr->cpuset_cpus,
					"cpusetMems", rr->cpuset_mems);
		json_t *spec = json_pack(
		    "{s:{s:o, s:o, s:s, s:b, s:{s:i, s:i, s:o}},"
		    " s:{s:o, s:s*, s:o, s:b, s:b}}",
		    "process", "args", strv_json(rcfg->args), "env", strv_json(rcfg->env), "cwd",
		    rcfg->cwd ? rcfg->cwd : "/", "terminal", rcfg->tty, "user", "uid",
		    (int)rcfg->uid, "gid", (int)rcfg->gid, "additionalGids", gids, "linux",
		    "namespaces", ns, "cgroupsParent", rcfg->cgroup_parent, "resources", res,
		    "privileged", rcfg->security.privileged, "readonlyRootfs",
		    rcfg->security.readonly_rootfs);
		out = json_dumps(spec, JSON_COMPACT);
		json_decref(spec);
	}
	stored_config_clear(&sc);
	return out;
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
