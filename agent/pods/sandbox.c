/* The pod half of the manager: pod sandboxes (network namespace pin, CNI,
 * the infra process that holds the IPC/UTS/PID namespaces, the per-pod
 * hosts/hostname/resolv.conf) and what both halves share (DB, id holds). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <sqlite3.h>

#include "pods_int.h"

#define INFRA_BINARY "agentd-infra"
#define INFRA_STOP_GRACE_MS 2000
/* StopPodSandbox is forceful: kubelet stopped the containers gracefully before. */
#define POD_CTR_STOP_GRACE_MS 0

void mgr_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* ---- holds ---------------------------------------------------------------- */
void mgr_hold(mgr *m, const char *id)
{
	pthread_mutex_lock(&m->busy_lock);
	for (;;) {
		bool taken = false;
		for (size_t i = 0; i < m->n_busy && !taken; i++)
			taken = strcmp(m->busy[i], id) == 0;
		if (!taken)
			break;
		pthread_cond_wait(&m->busy_cond, &m->busy_lock);
	}
	if (m->n_busy == m->cap_busy) {
		m->cap_busy = m->cap_busy ? 2 * m->cap_busy : 16;
		m->busy = ad_realloc(m->busy, m->cap_busy * sizeof(char *));
	}
	m->busy[m->n_busy++] = ad_strdup(id);
	pthread_mutex_unlock(&m->busy_lock);
}

void mgr_release(mgr *m, const char *id)
{
	pthread_mutex_lock(&m->busy_lock);
	for (size_t i = 0; i < m->n_busy; i++) {
		if (strcmp(m->busy[i], id) == 0) {
			free(m->busy[i]);
			m->busy[i] = m->busy[--m->n_busy];
			break;
		}
	}
	pthread_cond_broadcast(&m->busy_cond);
	pthread_mutex_unlock(&m->busy_lock);
}

char *mgr_new_id(void)
{
	uint8_t b[32];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n > 0)
			got += (size_t)n;
		else if (errno != EINTR)
			abort();
	}
	char *s = ad_malloc0(65);
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(s + 2 * i, 3, "%02x", b[i]);
	return s;
}

/* ---- events ------------------------------------------------------------- */
/* This thread's held events (mgr_events_hold); beyond the array, events are
 * shown at once. */
static _Thread_local mgr *ev_hold_m;
static _Thread_local uint64_t ev_held[4];
static _Thread_local size_t n_ev_held;

/* Under ev_lock. */
static void events_show(mgr *m)
{
	uint64_t was = m->shown_seq;
	while (m->shown_seq < m->next_seq && !m->held[m->shown_seq % MGR_EVENT_RING])
		m->shown_seq++;
	if (m->shown_seq != was)
		pthread_cond_broadcast(&m->ev_cond);
}

void mgr_event_publish(mgr *m, const char *id, const char *pod_id, mgr_event_type type)
{
	pthread_mutex_lock(&m->ev_lock);
	uint64_t seq = m->next_seq++;
	mgr_event *e = &m->ring[seq % MGR_EVENT_RING];
	*e = (mgr_event){.seq = seq, .type = type, .at_ns = ad_now_ns()};
	snprintf(e->id, sizeof(e->id), "%s", id);
	snprintf(e->pod_id, sizeof(e->pod_id), "%s", pod_id ? pod_id : "");
	bool hold = ev_hold_m == m && n_ev_held < sizeof(ev_held) / sizeof(ev_held[0]);
	m->held[seq % MGR_EVENT_RING] = hold;
	if (hold)
		ev_held[n_ev_held++] = seq;
	else
		events_show(m);
	pthread_mutex_unlock(&m->ev_lock);
}

void mgr_events_hold(mgr *m)
{
	ev_hold_m = m;
}

void mgr_events_release(mgr *m)
{
	if (ev_hold_m != m)
		return;
	ev_hold_m = NULL;
	pthread_mutex_lock(&m->ev_lock);
	for (size_t i = 0; i < n_ev_held; i++)
		m->held[ev_held[i] % MGR_EVENT_RING] = false;
	n_ev_held = 0;
	events_show(m);
	pthread_mutex_unlock(&m->ev_lock);
}

uint64_t mgr_events_cursor(mgr *m)
{
	pthread_mutex_lock(&m->ev_lock);
	uint64_t c = m->shown_seq;
	pthread_mutex_unlock(&m->ev_lock);
	return c;
}

size_t mgr_events_wait(mgr *m, uint64_t *cursor, mgr_event *out, size_t max, int timeout_ms)
{
	struct timespec until = ad_monotonic_after_ms((unsigned)timeout_ms);
	pthread_mutex_lock(&m->ev_lock);
	while (m->shown_seq == *cursor && !m->stopping)
		if (pthread_cond_timedwait(&m->ev_cond, &m->ev_lock, &until) == ETIMEDOUT)
			break;
	if (m->shown_seq - *cursor > MGR_EVENT_RING)
		*cursor = m->shown_seq - MGR_EVENT_RING;
	size_t n = 0;
	while (*cursor < m->shown_seq && n < max)
		out[n++] = m->ring[(*cursor)++ % MGR_EVENT_RING];
	pthread_mutex_unlock(&m->ev_lock);
	return n;
}

static void *monitor_main(void *arg)
{
	mgr *m = arg;
	for (;;) {
		/* Started containers' exits are recorded as they happen; the rest
		 * (say, a watch that could not be set) once per interval. */
		mgr_ctr_wait_exits(m, MGR_MONITOR_INTERVAL_MS);
		pthread_mutex_lock(&m->ev_lock);
		bool stopping = m->stopping;
		pthread_mutex_unlock(&m->ev_lock);
		if (stopping)
			break;
		mgr_ctr_poll(m);
	}
	return NULL;
}

/* ---- DB ------------------------------------------------------------------- */
static int bind_args(sqlite3_stmt *st, const char *fmt, va_list ap)
{
	int idx = 1;
	for (const char *f = fmt; *f; f++, idx++) {
		int rc;
		if (*f == 's') {
			const char *s = va_arg(ap, const char *);
			rc = s ? sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(st, idx);
		} else if (*f == 'i') {
			rc = sqlite3_bind_int64(st, idx, va_arg(ap, int64_t));
		} else {
			const void *p = va_arg(ap, const void *);
			size_t len = va_arg(ap, size_t);
			rc = sqlite3_bind_blob(st, idx, p ? p : "", (int)len, SQLITE_TRANSIENT);
		}
		if (rc != SQLITE_OK)
			return -1;
	}
	return 0;
}

static int db_exec_va(mgr *m, ad_error **err, int *ret_changes, const char *sql, const char *fmt,
		      va_list ap)
{
	pthread_mutex_lock(&m->db_lock);
	sqlite3_stmt *st;
	int r = ad_db_prepare(m->db, sql, &st, err);
	if (r == 0) {
		if (bind_args(st, fmt, ap) < 0 || sqlite3_step(st) != SQLITE_DONE)
			r = ad_db_fail(m->db, err, "state DB");
		else if (ret_changes)
			*ret_changes = sqlite3_changes(ad_db_handle(m->db));
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&m->db_lock);
	return r;
}

/* One statement (its own transaction). fmt: s = text (NULL binds NULL),
 * i = int64_t, b = blob (pointer, size_t). */
int mgr_db_exec(mgr *m, ad_error **err, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = db_exec_va(m, err, NULL, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* mgr_db_exec answering how many rows the statement changed: a conditional
 * UPDATE tells which of two racing threads made a transition. */
int mgr_db_exec_changes(mgr *m, ad_error **err, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int changes = 0;
	int r = db_exec_va(m, err, &changes, sql, fmt, ap);
	va_end(ap);
	return r < 0 ? r : changes;
}

char *mgr_col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? ad_strdup((const char *)t) : NULL;
}

uint8_t *mgr_col_blob(sqlite3_stmt *st, int i, size_t *ret_len)
{
	const void *b = sqlite3_column_blob(st, i);
	size_t n = (size_t)sqlite3_column_bytes(st, i);
	*ret_len = n;
	uint8_t *p = ad_malloc0(n + 1);
	if (b && n)
		memcpy(p, b, n);
	return p;
}

int mgr_query_rows(mgr *m, const char *sql, const char *param, void *(*from_row)(sqlite3_stmt *),
		   void (*free_all)(void *), const char *what, void ***ret, size_t *ret_n,
		   ad_error **err)
{
	pthread_mutex_lock(&m->db_lock);
	sqlite3_stmt *st;
	void **v = ad_malloc0(sizeof(*v));
	size_t n = 0;
	int r = ad_db_prepare(m->db, sql, &st, err);
	if (r == 0) {
		if (param)
			sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT);
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			v = ad_realloc(v, (n + 2) * sizeof(*v));
			v[n++] = from_row(st);
			v[n] = NULL;
		}
		if (rc != SQLITE_DONE)
			r = ad_db_fail(m->db, err, what);
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&m->db_lock);
	if (r < 0) {
		free_all(v);
		return -1;
	}
	*ret = v;
	if (ret_n)
		*ret_n = n;
	return 0;
}

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

#define POD_COLS                                                                                   \
	"id, name, namespace, uid, attempt, state, created_ns, netns, infra_id, cni_result,"       \
	" port_mappings, cni_net, log_directory, hostname, dir, runtime_handler, config"

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
static int pod_query(mgr *m, const char *sql, const char *param, mgr_pod ***ret, size_t *ret_n,
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
			st = (rt_state){.status = RT_STATUS_RUNNING, .pid = rt_container_init_pid(c)};
		else if (rt_get_state(c, &st, &e) < 0)
			st.status = RT_STATUS_STOPPED;
		rt_container_free(c);
	}
	if (st.status == RT_STATUS_RUNNING) {
		p->infra_pid = st.pid;
		return;
	}
	ad_warn("pod %s: its infra process is gone; the pod is not ready", p->id);
	p->state = MGR_POD_NOTREADY;
	ad_error_free(&e);
	if (mgr_db_exec(m, &e, "UPDATE pods SET state = ?2 WHERE id = ?1 AND state = ?3", "sii",
			p->id, (int64_t)MGR_POD_NOTREADY, (int64_t)MGR_POD_READY) < 0)
		ad_warn("pod %s: %s", p->id, e->message);
}

int mgr_pod_get(mgr *m, const char *id, mgr_pod **ret, ad_error **err)
{
	mgr_pod **v;
	size_t n;
	if (pod_query(m, "SELECT " POD_COLS " FROM pods WHERE id = ?1", id, &v, &n, err) < 0)
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

int mgr_pod_dial(mgr *m, const char *id, uint16_t port, int *ret_fd, ad_error **err)
{
	mgr_pod *p = NULL;
	if (mgr_pod_get(m, id, &p, err) < 0)
		return -1;
	int r = p->state == MGR_POD_READY
		    ? cni_netns_connect(p->netns, port, ret_fd, err)
		    : ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", id);
	mgr_pod_free(p);
	return r;
}

int mgr_pod_list(mgr *m, mgr_pod ***ret, ad_error **err)
{
	if (pod_query(m, "SELECT " POD_COLS " FROM pods WHERE state != 0 ORDER BY created_ns", NULL,
		      ret, NULL, err) < 0)
		return -1;
	for (mgr_pod **p = *ret; *p; p++)
		pod_check_alive(m, *p);
	return 0;
}

char **mgr_pod_ips(const mgr_pod *p)
{
	if (!p->cni_result)
		return NULL;
	char **ips = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (cni_result_ips(p->cni_result, &ips, NULL, &e) < 0)
		return NULL;
	return ips;
}

void mgr_cni_opts(mgr *m, cni_opts *o)
{
	*o = (cni_opts){
	    .conf_dirs = (const char *const *)m->conf_dirs,
	    .plugin_dirs = (const char *const *)m->plugin_dirs,
	};
}

int mgr_network_ready(mgr *m, ad_error **err)
{
	cni_opts o;
	mgr_cni_opts(m, &o);
	return cni_network_ready(&o, err);
}

/* ---- pod network ------------------------------------------------------------ */
static char *ports_to_json(const mgr_pod_spec *spec)
{
	json_t *a = json_array();
	for (size_t i = 0; i < spec->n_ports; i++) {
		const cni_port_mapping *pm = &spec->ports[i];
		json_array_append_new(a, json_pack("{s:i, s:i, s:s, s:s}", "hostPort",
						   (int)pm->host_port, "containerPort",
						   (int)pm->container_port, "protocol",
						   pm->protocol ? pm->protocol : "tcp", "hostIP",
						   pm->host_ip ? pm->host_ip : ""));
	}
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

/* The port mappings stored beside the ADD result; `*ret_json` owns the strings. */
static cni_port_mapping *ports_from_json(const char *text, size_t *ret_n, json_t **ret_json)
{
	*ret_n = 0;
	*ret_json = NULL;
	if (!text)
		return NULL;
	json_t *a = json_loads(text, 0, NULL);
	if (!json_is_array(a)) {
		json_decref(a);
		return NULL;
	}
	size_t n = json_array_size(a);
	cni_port_mapping *pm = ad_malloc0((n + 1) * sizeof(*pm));
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(a, i);
		pm[i].host_port = (uint16_t)json_integer_value(json_object_get(o, "hostPort"));
		pm[i].container_port =
		    (uint16_t)json_integer_value(json_object_get(o, "containerPort"));
		pm[i].protocol = json_string_value(json_object_get(o, "protocol"));
		pm[i].host_ip = json_string_value(json_object_get(o, "hostIP"));
	}
	*ret_n = n;
	*ret_json = a;
	return pm;
}

/* What CNI is told of a pod: its ids, netns and port mappings. The mappings
 * point into *ret_json; pod_cni_args_clear frees both. */
static cni_pod pod_cni_args(const mgr_pod *p, json_t **ret_json)
{
	size_t n_pm;
	cni_port_mapping *pm = ports_from_json(p->ports_json, &n_pm, ret_json);
	return (cni_pod){
	    .container_id = p->id,
	    .netns_path = p->netns,
	    .pod_namespace = p->namespace_,
	    .pod_name = p->name,
	    .pod_uid = p->uid,
	    .port_mappings = pm,
	    .n_port_mappings = n_pm,
	};
}

static void pod_cni_args_clear(cni_pod *cp, json_t *json)
{
	free((void *)cp->port_mappings);
	json_decref(json);
}

typedef int (*cni_op)(const cni_net *net, const cni_pod *pod, const char *cached_result,
		      ad_error **err);

/* DEL or CHECK with what was stored at ADD time (the network config, the
 * port mappings and the result, which is the prevResult). */
static int pod_network_op(mgr *m, const mgr_pod *p, cni_op op, ad_error **err)
{
	cni_opts o;
	mgr_cni_opts(m, &o);
	cni_net *net = NULL;
	if (cni_net_parse(&o, p->cni_net, "stored network config", &net, err) < 0)
		return -1;
	json_t *pj;
	cni_pod cp = pod_cni_args(p, &pj);
	int r = op(net, &cp, p->cni_result, err);
	pod_cni_args_clear(&cp, pj);
	cni_net_free(net);
	return r;
}

/* CNI DEL; idempotent. */
static int pod_network_down(mgr *m, const mgr_pod *p, ad_error **err)
{
	if (!p->cni_net)
		return 0;
	return pod_network_op(m, p, cni_del, err);
}

int mgr_pod_network_check(mgr *m, const mgr_pod *p, ad_error **err)
{
	/* Held, and read again: a stop tearing the network down meanwhile is
	 * not a failed CHECK. */
	mgr_hold(m, p->id);
	mgr_pod *now = NULL;
	int r = mgr_pod_get(m, p->id, &now, err);
	if (r == 0 && (!now->cni_net || !now->netns))
		r = ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s has no CNI network", p->id);
	else if (r == 0 && now->state != MGR_POD_READY)
		r = ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	else if (r == 0 && pod_network_op(m, now, cni_check, err) < 0)
		r = ad_error_wrap(err, "pod sandbox %s: CNI CHECK", p->id);
	mgr_pod_free(now);
	mgr_release(m, p->id);
	return r;
}

/* ---- per-pod files ---------------------------------------------------------- */
static int write_text(const char *dir, const char *name, const char *text, ad_error **err)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", dir);
	return ad_write_file_atomic(fd, name, text, strlen(text), 0644, err);
}

static size_t strv_len(const char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

static int pod_write_files(const mgr_pod *p, const mgr_pod_spec *spec, const char *ip,
			   ad_error **err)
{
	const char *hn = p->hostname && *p->hostname ? p->hostname : p->name;
	_cleanup_free_ char *hostname = ad_asprintf("%s\n", hn);
	if (write_text(p->dir, "hostname", hostname, err) < 0)
		return -1;
	_cleanup_free_ char *hosts =
	    ad_asprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s%s%s%s",
			ip ? ip : "", ip ? "\t" : "", ip ? hn : "", ip ? "\n" : "");
	if (write_text(p->dir, "hosts", hosts, err) < 0)
		return -1;

	_cleanup_free_ char *resolv = NULL;
	size_t n_servers = strv_len(spec->dns_servers), n_searches = strv_len(spec->dns_searches);
	size_t n_options = strv_len(spec->dns_options);
	if (n_servers || n_searches || n_options) {
		size_t len = 0;
		_cleanup_fclose_ FILE *f = NULL;
		char *buf = NULL;
		f = open_memstream(&buf, &len);
		if (!f)
			return ad_fail_errno(err, AD_E_INTERNAL, "open_memstream");
		for (size_t i = 0; i < n_servers; i++)
			fprintf(f, "nameserver %s\n", spec->dns_servers[i]);
		if (n_searches) {
			fputs("search", f);
			for (size_t i = 0; i < n_searches; i++)
				fprintf(f, " %s", spec->dns_searches[i]);
			fputc('\n', f);
		}
		if (n_options) {
			fputs("options", f);
			for (size_t i = 0; i < n_options; i++)
				fprintf(f, " %s", spec->dns_options[i]);
			fputc('\n', f);
		}
		fclose(f);
		f = NULL;
		resolv = buf;
	} else {
		/* No DNSConfig: the node's resolver, as containerd does. */
		size_t n;
		_cleanup_error_ ad_error *e = NULL;
		if (ad_read_file(AT_FDCWD, "/etc/resolv.conf", 1 << 20, &resolv, &n, &e) < 0)
			resolv = ad_strdup("");
	}
	return write_text(p->dir, "resolv.conf", resolv, err);
}

/* ---- infra process -------------------------------------------------------- */
/* A configured pause image: its rootfs (mounted for the pod) and its
 * Entrypoint + Cmd, Env, WorkingDir and numeric User. */
typedef struct pause_spec {
	char *rootfs;
	const char **args, **env;
	json_t *cfg;
} pause_spec;

static void pause_spec_clear(pause_spec *s)
{
	free(s->rootfs);
	free(s->args);
	free(s->env);
	json_decref(s->cfg);
	*s = (pause_spec){0};
}

static const char **json_strv(json_t *a, json_t *b)
{
	size_t n = 0;
	const char **v = ad_malloc0((json_array_size(a) + json_array_size(b) + 1) * sizeof(char *));
	for (size_t i = 0; i < json_array_size(a); i++)
		if (json_is_string(json_array_get(a, i)))
			v[n++] = json_string_value(json_array_get(a, i));
	for (size_t i = 0; i < json_array_size(b); i++)
		if (json_is_string(json_array_get(b, i)))
			v[n++] = json_string_value(json_array_get(b, i));
	return v;
}

static int pause_prepare(mgr *m, const mgr_pod *p, pause_spec *s, rt_config *rc, ad_error **err)
{
	store_image *img = NULL;
	if (!m->images)
		return ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	if (store_image_get(m->images, m->pause_image, &img, err) < 0)
		return ad_error_wrap(err, "pause image (pull it first)");
	s->cfg = json_loads(img->config_json ? img->config_json : "{}", 0, NULL);
	int r = store_rootfs_mount(m->images, img->id, p->infra_id, &s->rootfs, err);
	store_image_free(img);
	if (r < 0)
		return ad_error_wrap(err, "pause image");
	json_t *c = json_object_get(s->cfg, "config");
	s->args = json_strv(json_object_get(c, "Entrypoint"), json_object_get(c, "Cmd"));
	s->env = json_strv(json_object_get(c, "Env"), NULL);
	if (!s->args[0])
		return ad_fail(err, AD_E_INVALID, "pause image %s has no command", m->pause_image);
	rc->rootfs = s->rootfs;
	rc->args = s->args;
	rc->env = s->env;
	const char *wd = json_string_value(json_object_get(c, "WorkingDir"));
	rc->cwd = wd && *wd ? wd : NULL;
	const char *user = json_string_value(json_object_get(c, "User"));
	if (user && *user) {
		char *end;
		unsigned long uid = strtoul(user, &end, 10), gid = 0;
		if (*end == ':')
			gid = strtoul(end + 1, &end, 10);
		if (*end)
			return ad_fail(err, AD_E_INVALID,
				       "pause image user '%s': only numeric ids are supported",
				       user);
		rc->uid = (uid_t)uid;
		rc->gid = (gid_t)gid;
	}
	return 0;
}

static int infra_start(mgr *m, const mgr_pod *p, const mgr_pod_spec *spec, pid_t *ret_pid,
		       ad_error **err)
{
	static const char *const args[] = {"/" INFRA_BINARY, NULL};
	rt_config rc;
	rt_config_init(&rc);
	rc.id = p->infra_id;
	rc.rootfs = m->infra_rootfs;
	rc.args = args;
	pause_spec ps = {0};
	if (m->pause_image && pause_prepare(m, p, &ps, &rc, err) < 0) {
		pause_spec_clear(&ps);
		return -1;
	}
	rc.security.readonly_rootfs = true;
	rc.security.no_new_privs = true;
	if (spec->cgroup_parent && *spec->cgroup_parent)
		rc.cgroup_parent = spec->cgroup_parent;
	/* pause needs no capability at all, whatever the sandbox's privileged
	 * says (that is for its containers, which say so themselves). */
	rc.security.capabilities_set = true;
	/* The sandbox's security context: its user, groups and profiles are the
	 * infra process's, as containerd applies them to pause. */
	if (spec->run_as_user_set)
		rc.uid = spec->run_as_user;
	if (spec->run_as_group_set)
		rc.gid = spec->run_as_group;
	rc.additional_gids = spec->supplemental_groups;
	rc.n_additional_gids = spec->n_supplemental_groups;
	rc.security.seccomp = spec->seccomp;
	rc.security.seccomp_profile = spec->seccomp_profile;
	rc.security.apparmor_profile = spec->apparmor_profile;
	if (spec->network == MGR_NS_NODE) {
		rc.namespaces[RT_NS_NET].mode = RT_NS_SHARE_HOST;
		rc.namespaces[RT_NS_UTS].mode = RT_NS_SHARE_HOST;
	} else {
		rc.namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, p->netns};
		rc.hostname = p->hostname && *p->hostname ? p->hostname : p->name;
	}
	if (spec->ipc == MGR_NS_NODE)
		rc.namespaces[RT_NS_IPC].mode = RT_NS_SHARE_HOST;
	if (spec->pid == MGR_NS_NODE)
		rc.namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
	rt_container *c = NULL;
	int r = rt_create(m->rt, &rc, &c, err);
	pause_spec_clear(&ps);
	if (r < 0)
		return ad_error_wrap(err, "infra process");
	r = rt_start(c, err);
	if (r < 0) {
		_cleanup_error_ ad_error *e2 = NULL;
		rt_delete(c, &e2);
		ad_error_wrap(err, "infra process");
	}
	*ret_pid = rt_container_init_pid(c);
	rt_container_free(c);
	return r;
}

/* ---- sysctls ------------------------------------------------------------------ */
/* Kubernetes' namespaced sysctls: net.* live in the network namespace, the
 * IPC ones in the IPC namespace; anything else would change the node. */
static bool sysctl_is_ipc(const char *k)
{
	return strncmp(k, "kernel.shm", 10) == 0 || strncmp(k, "kernel.msg", 10) == 0 ||
	       strcmp(k, "kernel.sem") == 0 || strncmp(k, "fs.mqueue.", 10) == 0;
}

typedef struct sysctl_job {
	const mgr_pod_spec *spec;
	const char *netns;
	pid_t infra;
	ad_error *err;
} sysctl_job;

static int write_sysctl(const char *key, const char *value, ad_error **err)
{
	_cleanup_free_ char *path = ad_asprintf("/proc/sys/%s", key);
	for (char *c = path + 10; *c; c++)
		if (*c == '.')
			*c = '/';
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INVALID, "sysctl %s", key);
	size_t len = strlen(value);
	if (write(fd, value, len) != (ssize_t)len)
		return ad_fail_errno(err, AD_E_INVALID, "sysctl %s = %s", key, value);
	return 0;
}

/* setns() changes only the calling thread: a short-lived one does the writes. */
static void *sysctl_thread(void *arg)
{
	sysctl_job *j = arg;
	const mgr_pod_spec *spec = j->spec;
	for (int pass = 0; pass < 2 && !j->err; pass++) {
		bool ipc = pass == 1;
		_cleanup_free_ char *ipc_path = ad_asprintf("/proc/%d/ns/ipc", (int)j->infra);
		const char *ns = ipc ? ipc_path : j->netns;
		_cleanup_close_ int fd = -1;
		for (size_t i = 0; i < spec->n_sysctls && !j->err; i++) {
			const char *k = spec->sysctls[i].key;
			if (sysctl_is_ipc(k) != ipc)
				continue;
			if (fd < 0) {
				fd = open(ns, O_RDONLY | O_CLOEXEC);
				if (fd < 0 || setns(fd, ipc ? CLONE_NEWIPC : CLONE_NEWNET) < 0) {
					ad_fail_errno(&j->err, AD_E_INTERNAL, "sysctl %s: join %s",
						      k, ns);
					break;
				}
			}
			write_sysctl(k, spec->sysctls[i].value, &j->err);
		}
	}
	return NULL;
}

static int check_sysctls(const mgr_pod_spec *spec, ad_error **err)
{
	for (size_t i = 0; i < spec->n_sysctls; i++) {
		const char *k = spec->sysctls[i].key;
		bool net = strncmp(k, "net.", 4) == 0;
		if (!net && !sysctl_is_ipc(k))
			return ad_fail(err, AD_E_INVALID, "sysctl %s is not namespaced", k);
		if (strstr(k, "..") || strchr(k, '/'))
			return ad_fail(err, AD_E_INVALID, "sysctl %s: bad name", k);
		if (net && spec->network == MGR_NS_NODE)
			return ad_fail(err, AD_E_INVALID,
				       "sysctl %s needs the pod's own network namespace", k);
		if (!net && spec->ipc == MGR_NS_NODE)
			return ad_fail(err, AD_E_INVALID,
				       "sysctl %s needs the pod's own IPC namespace", k);
	}
	return 0;
}

static int apply_sysctls(const mgr_pod_spec *spec, const char *netns, pid_t infra,
			 ad_error **err)
{
	if (!spec->n_sysctls)
		return 0;
	sysctl_job j = {.spec = spec, .netns = netns, .infra = infra};
	pthread_t t;
	int rc = pthread_create(&t, NULL, sysctl_thread, &j);
	if (rc != 0)
		return ad_error_make(err, AD_E_INTERNAL, rc, "sysctl thread");
	pthread_join(t, NULL);
	if (j.err) {
		*err = j.err;
		return -1;
	}
	return 0;
}

static int infra_stop(mgr *m, const char *infra_id, bool delete, ad_error **err)
{
	if (!infra_id)
		return 0;
	rt_container *c = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_open(m->rt, infra_id, &c, &e) < 0)
		return 0; /* already gone */
	int r = rt_stop(c, SIGTERM, INFRA_STOP_GRACE_MS, err);
	if (r == 0 && delete)
		r = rt_delete(c, err);
	rt_container_free(c);
	return r;
}

/* Undoes whatever of a pod exists: every step tolerates its part being absent. */
static int pod_teardown(mgr *m, mgr_pod *p, bool remove, ad_error **err)
{
	_cleanup_error_ ad_error *first = NULL;
	ad_error *e = NULL;
	char **cids = NULL;
	if (mgr_ctr_ids_of_pod(m, p->id, &cids, &e) < 0) {
		first = e;
		e = NULL;
	}
	/* The containers are stopped (their exits recorded) and, to remove,
	 * released first; their records go last, just before the pod's, so that
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
	if (infra_stop(m, p->infra_id, remove, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	/* The pause image's rootfs, if one was used (absent is fine). */
	if (remove && p->infra_id && m->images &&
	    store_rootfs_remove(m->images, p->infra_id, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	if (pod_network_down(m, p, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	if (p->netns && cni_netns_remove(p->netns, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	if (remove && p->dir && ad_remove_tree(p->dir, &e) < 0 && !first)
		first = e, e = NULL;
	ad_error_free(&e);
	for (char **c = cids; remove && !first && c && *c; c++) {
		mgr_hold(m, *c);
		if (mgr_ctr_remove_locked(m, *c, &e) < 0 && !first)
			first = e, e = NULL;
		mgr_release(m, *c);
		ad_error_free(&e);
	}
	mgr_strv_free(cids);
	if (first) {
		*err = ad_steal_ptr(first);
		return -1;
	}
	return 0;
}

/* ---- RunPodSandbox ------------------------------------------------------------ */
/* Inserts the 'creating' row; a pod of the same name, namespace and attempt
 * → AD_E_EXISTS naming it. */
static int pod_insert(mgr *m, const mgr_pod *p, const char *labels, const char *annotations,
		      ad_error **err)
{
	pthread_mutex_lock(&m->db_lock);
	int r = 0;
	sqlite3_stmt *st;
	/* Check and insert in one transaction so two racing runs cannot both win. */
	if (ad_db_begin(m->db, err) < 0) {
		pthread_mutex_unlock(&m->db_lock);
		return -1;
	}
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
	if (r == 0 &&
	    (r = ad_db_prepare(m->db,
			       "INSERT INTO pods (id, name, namespace, uid, attempt, state,"
			       " created_ns, labels, annotations, log_directory, hostname, dir,"
			       " runtime_handler, config) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7,"
			       " ?8, ?9, ?10, ?11, ?12, ?13)",
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
		if (sqlite3_step(st) != SQLITE_DONE)
			r = ad_db_fail(m->db, err, "state DB: insert pod");
		sqlite3_reset(st);
	}
	if (r == 0)
		r = ad_db_commit(m->db, err);
	else
		ad_db_rollback(m->db);
	pthread_mutex_unlock(&m->db_lock);
	return r;
}

int mgr_pod_run(mgr *m, const mgr_pod_spec *spec, char **ret_id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0 || check_sysctls(spec, err) < 0)
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

	if (pod_insert(m, p, spec->labels_json, spec->annotations_json, err) < 0) {
		mgr_pod_free(p);
		return -1;
	}
	mgr_hold(m, p->id);
	ad_fault_point("pod.inserted");

	int r = ad_mkdir_p(p->dir, 0755, err);
	if (r == 0 && spec->network != MGR_NS_NODE) {
		r = cni_netns_create(m->netns_dir, p->id, &p->netns, err);
		if (r == 0)
			r = mgr_db_exec(m, err, "UPDATE pods SET netns = ?2 WHERE id = ?1", "ss",
					p->id, p->netns);
		if (r == 0)
			ad_fault_point("pod.netns");
		if (r == 0)
			r = cni_loopback_up(p->netns, err);
		cni_net *net = NULL;
		cni_opts o;
		mgr_cni_opts(m, &o);
		if (r == 0)
			r = cni_net_load(&o, &net, err);
		if (r == 0) {
			/* Stored before ADD: a crash during ADD still gets its DEL. */
			p->cni_net = cni_net_json(net);
			p->ports_json = ports_to_json(spec);
			r = mgr_db_exec(
			    m, err,
			    "UPDATE pods SET cni_net = ?2, port_mappings = ?3 WHERE id = ?1", "sss",
			    p->id, p->cni_net, p->ports_json);
			if (r == 0)
				ad_fault_point("pod.cni_stored");
		}
		if (r == 0) {
			json_t *pj;
			cni_pod cp = pod_cni_args(p, &pj);
			r = cni_add(net, &cp, &p->cni_result, err);
			pod_cni_args_clear(&cp, pj);
			if (r == 0)
				r = mgr_db_exec(m, err,
						"UPDATE pods SET cni_result = ?2 WHERE id = ?1",
						"ss", p->id, p->cni_result);
			if (r == 0)
				ad_fault_point("pod.cni_added");
		}
		cni_net_free(net);
	}
	if (r == 0) {
		char **ips = mgr_pod_ips(p);
		r = pod_write_files(p, spec, ips && ips[0] ? ips[0] : NULL, err);
		cni_strv_free(ips);
	}
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE pods SET infra_id = ?2 WHERE id = ?1", "ss", p->id,
				p->infra_id);
	pid_t infra_pid = 0;
	if (r == 0)
		r = infra_start(m, p, spec, &infra_pid, err);
	if (r == 0)
		r = apply_sysctls(spec, p->netns, infra_pid, err);
	if (r == 0)
		ad_fault_point("pod.infra_started");
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE pods SET state = ?2 WHERE id = ?1", "si", p->id,
				(int64_t)MGR_POD_READY);
	if (r == 0)
		ad_fault_point("pod.ready");
	if (r < 0) {
		_cleanup_error_ ad_error *e2 = NULL;
		if (pod_teardown(m, p, true, &e2) < 0)
			ad_warn("pod %s: cleanup after a failed start: %s", p->id, e2->message);
		_cleanup_error_ ad_error *e3 = NULL;
		if (mgr_db_exec(m, &e3, "DELETE FROM pods WHERE id = ?1", "s", p->id) < 0)
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

int mgr_pod_infra_stats(mgr *m, const mgr_pod *p, rt_stats *ret, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (p->state != MGR_POD_READY || !p->infra_id)
		return ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	rt_container *c = NULL;
	if (rt_open(m->rt, p->infra_id, &c, err) < 0)
		return -1;
	int r = rt_get_stats(c, ret, err);
	rt_container_free(c);
	return r;
}

int mgr_pod_net_stats(mgr *m, const mgr_pod *p, cni_if_stats **ret, size_t *ret_n,
		      ad_error **err)
{
	*ret = NULL;
	*ret_n = 0;
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (p->state != MGR_POD_READY || p->infra_pid <= 0)
		return ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	if (!p->netns)
		return ad_fail(err, AD_E_PRECONDITION,
			       "pod sandbox %s uses the node's network", p->id);
	/* /proc/<pid>/net is the network namespace of that process. */
	_cleanup_free_ char *path = ad_asprintf("/proc/%d/net/dev", (int)p->infra_pid);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (ad_read_file(AT_FDCWD, path, 1 << 20, &text, &len, err) < 0)
		return -1;
	return cni_netdev_parse(text, ret, ret_n, err);
}

int mgr_pod_stop(mgr *m, const char *id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
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
		r = pod_teardown(m, p, false, err);
	if (r < 0 && p)
		ad_error_wrap(err, "stop pod sandbox %s", id);
	mgr_pod_free(p);
	mgr_release(m, id);
	return r;
}

int mgr_pod_remove(mgr *m, const char *id, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
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
	r = pod_teardown(m, p, true, err);
	if (r == 0)
		ad_fault_point("pod.remove.torn_down");
	if (r == 0)
		r = mgr_db_exec(m, err, "DELETE FROM pods WHERE id = ?1", "s", id);
	if (r < 0)
		ad_error_wrap(err, "remove pod sandbox %s", id);
	else
		ad_info("pod %s removed", id);
	mgr_pod_free(p);
	mgr_release(m, id);
	return r;
}

/* ---- open/close ------------------------------------------------------------- */
static char **split_dirs(const char *s)
{
	size_t n = 0;
	char **v = ad_malloc0(sizeof(char *));
	for (const char *p = s; p && *p;) {
		size_t len = strcspn(p, ":");
		if (len) {
			v = ad_realloc(v, (n + 2) * sizeof(char *));
			v[n++] = ad_strndup(p, len);
			v[n] = NULL;
		}
		p += len;
		if (*p == ':')
			p++;
	}
	return v;
}

int mgr_need_rt(mgr *m, ad_error **err)
{
	if (m->rt)
		return 0;
	return ad_fail(err, AD_E_UNAVAILABLE, "the container runtime is unavailable: %s",
		       m->rt_error ? m->rt_error : "not set up");
}

/* The shim: AGENTD_SHIM (read by the runtime), else ours (a build tree or
 * installed). */
static char *find_shim(void)
{
	if (getenv("AGENTD_SHIM"))
		return NULL;
	static const char *const near_self[] = {"../runtime/agentd-shim", "agentd-shim", NULL};
	return ad_find_helper("agentd-shim", near_self);
}

/* The infra binary: AGENTD_INFRA, else ours (a build tree or installed). */
static char *find_infra_binary(void)
{
	const char *env = getenv("AGENTD_INFRA");
	if (env && *env)
		return ad_strdup(env);
	static const char *const near_self[] = {"pods/infra/" INFRA_BINARY, INFRA_BINARY, NULL};
	return ad_find_helper(INFRA_BINARY, near_self);
}

/* <root>/infra-rootfs: the binary and the mount points, nothing else. */
static int make_infra_rootfs(mgr *m, ad_error **err)
{
	static const char *const dirs[] = {"proc", "dev", "sys", "etc", "tmp"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		_cleanup_free_ char *d = ad_asprintf("%s/%s", m->infra_rootfs, dirs[i]);
		if (ad_mkdir_p(d, 0755, err) < 0)
			return -1;
	}
	_cleanup_free_ char *src = find_infra_binary();
	_cleanup_free_ char *data = NULL;
	size_t len;
	if (ad_read_file(AT_FDCWD, src, 16 << 20, &data, &len, err) < 0)
		return ad_error_wrap(err, "infra binary");
	_cleanup_close_ int fd = open(m->infra_rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", m->infra_rootfs);
	return ad_write_file_atomic(fd, INFRA_BINARY, data, len, 0755, err);
}

/* Half-created pods (agentd died in RunPodSandbox) are undone. */
static void pod_reconcile(mgr *m)
{
	mgr_pod **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (pod_query(m, "SELECT " POD_COLS " FROM pods WHERE state = 0", NULL, &v, NULL, &e) < 0) {
		ad_warn("reconcile pods: %s", e->message);
		return;
	}
	for (mgr_pod **p = v; *p; p++) {
		ad_error *e2 = NULL;
		ad_info("pod %s: cleaning up an interrupted start", (*p)->id);
		if (pod_teardown(m, *p, true, &e2) < 0 ||
		    mgr_db_exec(m, &e2, "DELETE FROM pods WHERE id = ?1", "s", (*p)->id) < 0)
			ad_warn("pod %s: %s", (*p)->id, e2->message);
		ad_error_free(&e2);
	}
	mgr_pods_free(v);
}

/* Pods that should be ready still have their network (the CNI spec's CHECK,
 * as CRI-O runs it when it restores sandboxes): a failure is logged, and
 * PodSandboxStatus verbose reports it too. */
static void pod_check_networks(mgr *m)
{
	mgr_pod **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_pod_list(m, &v, &e) < 0) {
		ad_warn("check pod networks: %s", e->message);
		return;
	}
	for (mgr_pod **p = v; *p; p++) {
		if (!(*p)->cni_net || !(*p)->netns)
			continue;
		ad_error *e2 = NULL;
		if (!cni_netns_alive((*p)->netns)) {
			/* The node rebooted: the namespace, and the pod with it, are
			 * gone; the address and the host side (IPAM lease, port
			 * mappings) go back now rather than at the pod's removal. */
			ad_info("pod %s: its network namespace is gone; releasing its network",
				(*p)->id);
			if (pod_network_down(m, *p, &e2) < 0 ||
			    cni_netns_remove((*p)->netns, &e2) < 0)
				ad_warn("pod %s: %s", (*p)->id, e2->message);
			ad_error_free(&e2);
			continue;
		}
		if ((*p)->state != MGR_POD_READY)
			continue;
		if (mgr_pod_network_check(m, *p, &e2) < 0 && e2->code != AD_E_UNIMPLEMENTED &&
		    e2->code != AD_E_PRECONDITION)
			ad_warn("%s", e2->message);
		ad_error_free(&e2);
	}
	mgr_pods_free(v);
}


/* The pods' and containers' tables in the state DB (lib/db runs the
 * migrations). state: 0 creating (half set up, cleaned up on start), then
 * per table. config: the caller's record of the request the object was
 * made from (the CRI layer's packed protobuf; opaque here). */
static const char *const pods_migrations[] = {
	"CREATE TABLE pods (id TEXT PRIMARY KEY, name TEXT NOT NULL, namespace TEXT NOT NULL,"
	" uid TEXT NOT NULL, attempt INTEGER NOT NULL, state INTEGER NOT NULL,"
	" created_ns INTEGER NOT NULL, netns TEXT, infra_id TEXT, cni_result TEXT,"
	" port_mappings TEXT, cni_net TEXT, labels TEXT, annotations TEXT, log_directory TEXT,"
	" hostname TEXT, dir TEXT, runtime_handler TEXT, config BLOB,"
	" UNIQUE (name, namespace, attempt));"
	"CREATE TABLE containers (id TEXT PRIMARY KEY,"
	" pod_id TEXT NOT NULL REFERENCES pods(id), name TEXT NOT NULL,"
	" attempt INTEGER NOT NULL, state INTEGER NOT NULL, image TEXT, image_id TEXT,"
	" image_ref TEXT, created_ns INTEGER NOT NULL, started_ns INTEGER NOT NULL DEFAULT 0,"
	" finished_ns INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0,"
	" reason TEXT, message TEXT, log_path TEXT, labels TEXT, annotations TEXT,"
	" image_config TEXT, config BLOB, UNIQUE (pod_id, name, attempt));"
	"CREATE INDEX containers_pod ON containers(pod_id);",
	/* 2: a container's runtime config as the runtime packs it (built once,
	 * at create; NULL for containers created before) and its stop signal;
	 * config is the caller's own record of its request from now on. */
	("ALTER TABLE containers ADD COLUMN stop_signal INTEGER NOT NULL DEFAULT 0;"
	 "ALTER TABLE containers ADD COLUMN rt_config BLOB;"),
	/* 3: what the caller says of the node (the pod CIDR). */
	"CREATE TABLE node_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
};

static const ad_db_schema pods_schema = {
    .owner = "pods",
    .migrations = pods_migrations,
    .n_migrations = sizeof(pods_migrations) / sizeof(pods_migrations[0]),
    .legacy_user_version = 3,
};

int mgr_open(const cfg_config *cfg, store *images, mgr **ret, ad_error **err)
{
	mgr *m = ad_malloc0(sizeof(*m));
	m->exit_epoll = m->exit_wake = -1;
	pthread_mutex_init(&m->watch_lock, NULL);
	pthread_mutex_init(&m->cpu_lock, NULL);
	pthread_mutex_init(&m->db_lock, NULL);
	pthread_mutex_init(&m->busy_lock, NULL);
	pthread_cond_init(&m->busy_cond, NULL);
	pthread_mutex_init(&m->ev_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->ev_cond, &ca);
	pthread_condattr_destroy(&ca);
	m->next_seq = m->shown_seq = 1;
	m->root = ad_strdup(cfg->root);
	m->state = ad_strdup(cfg->state);
	m->images = images;
	m->conf_dirs = split_dirs(cfg->cni_conf_dir);
	m->plugin_dirs = split_dirs(cfg->cni_plugin_dirs);
	m->netns_dir = *cfg->cni_netns_dir ? ad_strdup(cfg->cni_netns_dir)
					   : ad_asprintf("%s/netns", cfg->state);
	m->infra_rootfs = ad_asprintf("%s/infra-rootfs", cfg->root);
	if (cfg->pause_image && *cfg->pause_image)
		m->pause_image = ad_strdup(cfg->pause_image);
	m->pods_dir = ad_asprintf("%s/pods", cfg->state);
	_cleanup_free_ char *db_path = ad_asprintf("%s/agentd.db", cfg->root);
	_cleanup_free_ char *rt_state = ad_asprintf("%s/containers", cfg->state);
	_cleanup_free_ char *shim = find_shim();
	rt_options ro = {.state_root = rt_state, .shim_path = shim};
	if (ad_db_open(db_path, &pods_schema, &m->db, err) < 0 || ad_mkdir_p(m->pods_dir, 0711, err) < 0) {
		mgr_close(m);
		return -1;
	}
	/* Without a runtime agentd still serves images and the rest; the pod
	 * RPCs answer UNAVAILABLE with the reason. */
	ad_error *e = NULL;
	if (make_infra_rootfs(m, &e) < 0 || rt_runtime_new(&ro, &m->rt, &e) < 0) {
		ad_warn("pods and containers unavailable: %s", e->message);
		m->rt_error = ad_strdup(e->message);
		ad_error_free(&e);
		m->rt = NULL;
	} else {
		int watching = mgr_ctr_watch_init(m, &e);
		pod_reconcile(m);
		mgr_ctr_reconcile(m);
		pod_check_networks(m);
		if (watching == 0 && pthread_create(&m->monitor, NULL, monitor_main, m) == 0)
			m->monitor_started = true;
		else
			ad_warn("pods: no exit monitor thread (%s); exits are noticed on queries",
				e ? e->message : strerror(errno));
		ad_error_free(&e);
	}
	*ret = m;
	return 0;
}

void mgr_close(mgr *m)
{
	if (!m)
		return;
	if (m->monitor_started) {
		pthread_mutex_lock(&m->ev_lock);
		m->stopping = true;
		pthread_cond_broadcast(&m->ev_cond);
		pthread_mutex_unlock(&m->ev_lock);
		mgr_ctr_watch_wake(m);
		pthread_join(m->monitor, NULL);
	}
	mgr_ctr_watch_close(m);
	if (m->rt)
		rt_runtime_free(m->rt);
	if (m->db)
		ad_db_close(m->db);
	mgr_strv_free(m->conf_dirs);
	mgr_strv_free(m->plugin_dirs);
	for (size_t i = 0; i < m->n_busy; i++)
		free(m->busy[i]);
	free(m->busy);
	free(m->rt_error);
	free(m->netns_dir);
	free(m->infra_rootfs);
	free(m->pause_image);
	free(m->pods_dir);
	free(m->root);
	free(m->state);
	pthread_mutex_destroy(&m->db_lock);
	pthread_mutex_destroy(&m->busy_lock);
	pthread_cond_destroy(&m->busy_cond);
	pthread_mutex_destroy(&m->ev_lock);
	pthread_mutex_destroy(&m->watch_lock);
	pthread_mutex_destroy(&m->cpu_lock);
	free(m->cpu_samples);
	pthread_cond_destroy(&m->ev_cond);
	free(m);
}
