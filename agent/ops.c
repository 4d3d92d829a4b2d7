/* agentd's operations glue (ops.h): metrics, access checks, readiness,
 * systemd notify and watchdog. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "authz.h"
#include "metrics.h"
#include "ops.h"

enum { RPC_CODES = RPC_UNAUTHENTICATED + 1 };

/* The method's series per status code, resolved on the code's first call
 * (a label hash and lookup per call showed in perf). */
typedef struct method_series {
	metrics_series *_Atomic total, *_Atomic seconds;
} method_series;

typedef struct wrapped {
	agent_ops *ops;
	const char *path;
	rpc_handler_fn handler;
	void *userdata;
	method_series by_code[RPC_CODES];
} wrapped;

#define OPS_MAX_SERVERS 4

struct agent_ops {
	const cfg_config *cfg;
	mgr *pods;
	store *images;
	rpc_server *servers[OPS_MAX_SERVERS];
	atomic_size_t n_servers; /* servers are added after the HTTP thread started */
	metrics_registry *reg;
	metrics_vec *rpc_total, *rpc_seconds;
	atomic_long in_flight;
	metrics_http *http;
	pthread_rwlock_t authz_lock;
	authz_policy *authz;
	wrapped **wraps; /* one block per ops_instrument (handlers point into them) */
	size_t n_wraps;
	atomic_int phase;
	struct event *watchdog_ev, *stall_ev;
	uint64_t watchdog_usec;
};

static const char *const method_code[] = {"method", "code"};
static const double rpc_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
				     0.25,   0.5,   1,	    2.5,   5,	 10,	30,   60};

/* ---- RPC wrapper ------------------------------------------------------- */

static void record_call(wrapped *w, rpc_code code, double seconds)
{
	agent_ops *o = w->ops;
	const char *labels[] = {w->path, rpc_code_name(code)};
	if ((unsigned)code >= RPC_CODES) {
		metrics_vec_add(o->rpc_total, labels, 1);
		metrics_vec_observe(o->rpc_seconds, labels, seconds);
		return;
	}
	method_series *ms = &w->by_code[code];
	metrics_series *total = atomic_load_explicit(&ms->total, memory_order_acquire);
	metrics_series *secs = atomic_load_explicit(&ms->seconds, memory_order_acquire);
	if (!total || !secs) {
		/* Racing threads resolve the same series. */
		total = metrics_vec_series(o->rpc_total, labels);
		secs = metrics_vec_series(o->rpc_seconds, labels);
		atomic_store_explicit(&ms->total, total, memory_order_release);
		atomic_store_explicit(&ms->seconds, secs, memory_order_release);
	}
	metrics_series_add(total, 1);
	metrics_series_observe(secs, seconds);
}

static rpc_code instrumented(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	wrapped *w = userdata;
	agent_ops *o = w->ops;
	int64_t t0 = ad_monotonic_ns();
	atomic_fetch_add(&o->in_flight, 1);
	const char *subject = rpc_call_peer_identity(call);
	rpc_code code;
	_cleanup_error_ ad_error *err = NULL;
	authz_role role = AUTHZ_ROLE_ADMIN;
	int allowed = 0;
	if (subject) {
		pthread_rwlock_rdlock(&o->authz_lock);
		allowed = authz_check(o->authz, subject, w->path, &role, &err);
		pthread_rwlock_unlock(&o->authz_lock);
	}
	if (allowed < 0) {
		ad_warn("authz: denied %s to %s (role %s)", w->path, subject,
			authz_role_name(role));
		code = rpc_call_error(call, RPC_PERMISSION_DENIED, "%s", err->message);
	} else {
		if (subject)
			ad_debug("authz: allowed %s to %s (role %s)", w->path, subject,
				 authz_role_name(role));
		code = w->handler(call, req, resp, w->userdata);
	}
	atomic_fetch_sub(&o->in_flight, 1);
	record_call(w, code, (double)(ad_monotonic_ns() - t0) / 1e9);
	return code;
}

void ops_instrument(agent_ops *o, rpc_method *methods, size_t n)
{
	wrapped *block = ad_malloc0((n + 1) * sizeof(wrapped));
	o->wraps = ad_realloc(o->wraps, (o->n_wraps + 1) * sizeof(wrapped *));
	o->wraps[o->n_wraps++] = block;
	for (size_t i = 0; i < n; i++) {
		wrapped *w = &block[i];
		w->ops = o;
		w->path = methods[i].path;
		w->handler = methods[i].handler;
		w->userdata = methods[i].userdata;
		methods[i].handler = instrumented;
		methods[i].userdata = w;
	}
}

/* ---- collectors --------------------------------------------------------- */

static void collect_rpc(metrics_out *out, void *arg)
{
	agent_ops *o = arg;
	metrics_family(out, "agentd_grpc_requests_in_flight", METRICS_GAUGE,
		       "gRPC calls being handled now.");
	metrics_sample(out, NULL, NULL, (double)atomic_load(&o->in_flight));
}

/* Connections refused for max_connections_per_peer. */
static void collect_refused(metrics_out *out, void *arg)
{
	agent_ops *o = arg;
	uint64_t refused = 0;
	size_t n = atomic_load(&o->n_servers);
	for (size_t i = 0; i < n; i++)
		refused += rpc_server_refused_connections(o->servers[i]);
	metrics_family(out, "agentd_grpc_refused_connections_total", METRICS_COUNTER,
		       "gRPC connections closed at accept: the peer had max_connections_per_peer "
		       "open.");
	metrics_sample(out, NULL, NULL, (double)refused);
}

/* Container exits and shim deaths as they are recorded, and image pulls. */
static void collect_events(metrics_out *out, void *arg)
{
	agent_ops *o = arg;
	uint64_t exits[MGR_EXIT_REASONS];
	mgr_exit_counts(o->pods, exits);
	metrics_family(out, "agentd_container_exits_total", METRICS_COUNTER,
		       "Container exits recorded since agentd started, by reason.");
	for (size_t i = 0; i < MGR_EXIT_REASONS; i++) {
		const char *name[] = {"reason"}, *value[] = {mgr_exit_reasons[i]};
		_cleanup_free_ char *l = metrics_labels(1, name, value);
		metrics_sample(out, NULL, l, (double)exits[i]);
	}
	uint64_t shim_died = mgr_infra_shim_deaths(o->pods);
	for (size_t i = 0; i < MGR_EXIT_REASONS; i++)
		if (strcmp(mgr_exit_reasons[i], "ShimDied") == 0)
			shim_died += exits[i];
	metrics_family(out, "agentd_shim_deaths_total", METRICS_COUNTER,
		       "agentd-shim processes that died before their process's exit was written: "
		       "a container's (killed; exit reason ShimDied) or a pod infra's (the pod "
		       "went not ready).");
	metrics_sample(out, NULL, NULL, (double)shim_died);
	if (!o->images)
		return;
	store_pull_counters p;
	store_pull_counters_get(o->images, &p);
	metrics_family(out, "agentd_image_pulls_total", METRICS_COUNTER,
		       "Image pulls since agentd started, by result.");
	metrics_sample(out, NULL, "result=\"ok\"", (double)p.pulls);
	metrics_sample(out, NULL, "result=\"error\"", (double)p.failures);
	metrics_family(out, "agentd_image_pull_bytes_total", METRICS_COUNTER,
		       "Compressed layer bytes downloaded by completed pulls (layers already "
		       "present count nothing).");
	metrics_sample(out, NULL, NULL, (double)p.bytes);
	metrics_family(out, "agentd_image_pull_duration_seconds", METRICS_HISTOGRAM,
		       "Completed pulls by how long they took.");
	uint64_t cumulative[STORE_PULL_DURATION_N], below = 0;
	for (size_t i = 0; i < STORE_PULL_DURATION_N; i++)
		cumulative[i] = below += p.by_duration[i];
	/* A pull that ends between the two reads counts in a bucket first. */
	metrics_histogram(out, NULL, store_pull_duration_bounds, cumulative, STORE_PULL_DURATION_N,
			  p.seconds, p.pulls > below ? p.pulls : below);
}

/* <root>/blobs/sha256: the content store's size. */
static void collect_store(metrics_out *out, void *arg)
{
	agent_ops *o = arg;
	_cleanup_free_ char *path = ad_asprintf("%s/blobs/sha256", o->cfg->root);
	DIR *d = opendir(path);
	uint64_t bytes = 0, blobs = 0;
	if (d) {
		struct stat st;
		for (struct dirent *e; (e = readdir(d));)
			if (e->d_name[0] != '.' &&
			    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISREG(st.st_mode)) {
				blobs++;
				bytes += (uint64_t)st.st_size;
			}
		closedir(d);
	}
	metrics_family(out, "agentd_image_store_bytes", METRICS_GAUGE,
		       "Bytes of the blobs in the image content store.");
	metrics_sample(out, NULL, NULL, (double)bytes);
	metrics_family(out, "agentd_image_store_blobs", METRICS_GAUGE,
		       "Blobs in the image content store.");
	metrics_sample(out, NULL, NULL, (double)blobs);
}

static const mgr_pod *pod_by_id(mgr_pod **pods, const char *id)
{
	for (size_t i = 0; pods && pods[i]; i++)
		if (strcmp(pods[i]->id, id) == 0)
			return pods[i];
	return NULL;
}

typedef struct reason_count {
	const char *reason;
	size_t n;
} reason_count;

static void count_reason(reason_count *v, size_t *n, const char *reason)
{
	reason = reason && *reason ? reason : "Unknown";
	for (size_t i = 0; i < *n; i++)
		if (strcmp(v[i].reason, reason) == 0) {
			v[i].n++;
			return;
		}
	v[(*n)++] = (reason_count){reason, 1};
}

static void write_states(metrics_out *out, mgr_pod **pods, mgr_ctr **ctrs)
{
	size_t pod_states[3] = {0}, ctr_states[4] = {0}, n_ctrs = 0;
	for (size_t i = 0; pods && pods[i]; i++)
		if (pods[i]->state <= MGR_POD_NOTREADY)
			pod_states[pods[i]->state]++;
	for (size_t i = 0; ctrs && ctrs[i]; i++, n_ctrs++)
		if (ctrs[i]->state <= MGR_CTR_EXITED)
			ctr_states[ctrs[i]->state]++;
	static const char *const pod_names[] = {"creating", "ready", "notready"};
	static const char *const ctr_names[] = {"creating", "created", "running", "exited"};
	metrics_family(out, "agentd_pods", METRICS_GAUGE, "Pod sandboxes by state.");
	for (size_t i = 0; i < 3; i++) {
		_cleanup_free_ char *l = ad_asprintf("state=\"%s\"", pod_names[i]);
		metrics_sample(out, NULL, l, (double)pod_states[i]);
	}
	metrics_family(out, "agentd_containers", METRICS_GAUGE, "Containers by state.");
	for (size_t i = 0; i < 4; i++) {
		_cleanup_free_ char *l = ad_asprintf("state=\"%s\"", ctr_names[i]);
		metrics_sample(out, NULL, l, (double)ctr_states[i]);
	}
	reason_count *reasons = ad_malloc0((n_ctrs + 1) * sizeof(reason_count));
	size_t n_reasons = 0;
	for (size_t i = 0; ctrs && ctrs[i]; i++)
		if (ctrs[i]->state == MGR_CTR_EXITED)
			count_reason(reasons, &n_reasons, ctrs[i]->reason);
	metrics_family(out, "agentd_containers_exited", METRICS_GAUGE,
		       "Exited containers (not yet removed) by the reason of their exit "
		       "(Completed, Error, OOMKilled, StartError, ShimDied).");
	for (size_t i = 0; i < n_reasons; i++) {
		const char *name[] = {"reason"}, *value[] = {reasons[i].reason};
		_cleanup_free_ char *l = metrics_labels(1, name, value);
		metrics_sample(out, NULL, l, (double)reasons[i].n);
	}
	free(reasons);
}

/* Pods and containers: cAdvisor's families for the running containers and
 * the ready pods' interfaces, and agentd's counts by state. */
static void collect_pods(metrics_out *out, void *arg)
{
	agent_ops *o = arg;
	mgr_pod **pods = NULL;
	mgr_ctr **ctrs = NULL;
	rt_stats *stats = NULL;
	_cleanup_error_ ad_error *err = NULL;
	if (mgr_pod_list(o->pods, &pods, &err) < 0 ||
	    mgr_ctr_list_stats(o->pods, &ctrs, &stats, &err) < 0) {
		ad_warn("metrics: %s", err->message);
		mgr_pods_free(pods);
		return;
	}
	size_t n_ctrs = 0, n_pods = 0;
	while (ctrs[n_ctrs])
		n_ctrs++;
	while (pods[n_pods])
		n_pods++;
	metrics_container *mc = ad_malloc0((n_ctrs + 1) * sizeof(*mc));
	size_t n_mc = 0;
	for (size_t i = 0; i < n_ctrs; i++) {
		const mgr_ctr *c = ctrs[i];
		const mgr_pod *p = pod_by_id(pods, c->pod_id);
		if (c->state == MGR_CTR_RUNNING && stats[i].timestamp_ns)
			metrics_container_init(&mc[n_mc++], c->id, c->name, p ? p->name : "",
					       p ? p->namespace_ : "", c->image, c->started_ns,
					       &stats[i]);
	}
	metrics_pod_net *net = NULL;
	cni_if_stats **ifs = ad_malloc0((n_pods + 1) * sizeof(*ifs));
	size_t n_net = 0;
	for (size_t i = 0; i < n_pods; i++) {
		size_t n_if = 0;
		ad_error *e = NULL;
		if (pods[i]->state != MGR_POD_READY || !pods[i]->netns)
			continue;
		if (mgr_pod_net_stats(o->pods, pods[i], &ifs[i], &n_if, &e) < 0) {
			ad_debug("metrics: pod %s: %s", pods[i]->id, e->message);
			ad_error_free(&e);
			continue;
		}
		net = ad_realloc(net, (n_net + n_if + 1) * sizeof(*net));
		for (size_t j = 0; j < n_if; j++) {
			const cni_if_stats *s = &ifs[i][j];
			if (strcmp(s->name, "lo") == 0)
				continue;
			metrics_pod_net_init(&net[n_net++], pods[i]->id, pods[i]->name,
					     pods[i]->namespace_, s);
		}
	}
	metrics_write_containers(out, mc, n_mc, net, n_net);
	write_states(out, pods, ctrs);
	for (size_t i = 0; i < n_pods; i++)
		free(ifs[i]);
	free(ifs);
	free(net);
	free(stats);
	free(mc);
	mgr_ctrs_free(ctrs);
	mgr_pods_free(pods);
}

/* ---- readiness ------------------------------------------------------------ */

static bool ready_serving(void *arg, char *why, size_t len)
{
	agent_ops *o = arg;
	switch (atomic_load(&o->phase)) {
	case OPS_SERVING:
		return true;
	case OPS_STARTING:
		snprintf(why, len, "starting: listeners or state reconciliation not done");
		return false;
	default:
		snprintf(why, len, "shutting down");
		return false;
	}
}

static bool ready_db(void *arg, char *why, size_t len)
{
	agent_ops *o = arg;
	_cleanup_free_ char *path = ad_asprintf("%s/agentd.db", o->cfg->root);
	if (access(path, R_OK | W_OK) == 0)
		return true;
	snprintf(why, len, "state DB %s: %s", path, strerror(errno));
	return false;
}

/* ---- life cycle ---------------------------------------------------------- */

void ops_add_server(agent_ops *o, rpc_server *srv)
{
	size_t n = atomic_load(&o->n_servers);
	if (n == OPS_MAX_SERVERS)
		return;
	o->servers[n] = srv;
	atomic_store(&o->n_servers, n + 1); /* after the slot is written */
}

int ops_new(const cfg_config *cfg, mgr *pods, store *images, agent_ops **ret, ad_error **err)
{
	agent_ops *o = ad_malloc0(sizeof(*o));
	o->cfg = cfg;
	o->pods = pods;
	o->images = images;
	pthread_rwlock_init(&o->authz_lock, NULL);
	atomic_init(&o->phase, OPS_STARTING);
	if (authz_policy_new(cfg->authz_roles, cfg->authz_role_from_ou, cfg->authz_default_role,
			     &o->authz, err) < 0) {
		ops_free(o);
		return ad_error_wrap(err, "%s: [authz]", cfg->source);
	}
	o->reg = metrics_registry_new();
	o->rpc_total =
	    metrics_counter_vec(o->reg, "agentd_grpc_requests_total",
				"gRPC calls handled, by method and status code.", 2, method_code);
	o->rpc_seconds = metrics_histogram_vec(
	    o->reg, "agentd_grpc_request_duration_seconds",
	    "Time from a call's dispatch to its handler's return, by method and status code.", 2,
	    method_code, rpc_buckets, sizeof(rpc_buckets) / sizeof(*rpc_buckets));
	metrics_registry_add_collector(o->reg, collect_rpc, o);
	metrics_registry_add_collector(o->reg, collect_refused, o);
	metrics_registry_add_collector(o->reg, collect_pods, o);
	metrics_registry_add_collector(o->reg, collect_events, o);
	metrics_registry_add_collector(o->reg, collect_store, o);
	metrics_registry_add_collector(o->reg, metrics_collect_process, NULL);
	*ret = o;
	return 0;
}

int ops_http_start(agent_ops *o, char **ret_url, ad_error **err)
{
	*ret_url = NULL;
	if (!o->cfg->metrics_listen[0])
		return 0;
	metrics_http_config hc = {
	    .listen = o->cfg->metrics_listen,
	    .tls_cert = o->cfg->metrics_tls_cert,
	    .tls_key = o->cfg->metrics_tls_key,
	};
	if (metrics_http_new(&hc, o->reg, &o->http, err) < 0)
		return -1;
	metrics_http_add_ready(o->http, "serving", ready_serving, o);
	metrics_http_add_ready(o->http, "db", ready_db, o);
	if (metrics_http_start(o->http, err) < 0)
		return -1;
	const char *colon = strrchr(o->cfg->metrics_listen, ':');
	*ret_url = ad_asprintf("%s://%.*s:%d", o->cfg->metrics_tls_cert[0] ? "https" : "http",
			       (int)(colon - o->cfg->metrics_listen), o->cfg->metrics_listen,
			       metrics_http_port(o->http));
	return 0;
}

static void notify(const char *state)
{
	int r = ad_sd_notify(state);
	if (r < 0)
		ad_warn("systemd notify (%s): %s", state, strerror(-r));
}

void ops_set_phase(agent_ops *o, ops_phase phase, const char *status)
{
	atomic_store(&o->phase, phase);
	const char *what = phase == OPS_SERVING	   ? "READY=1\n"
			   : phase == OPS_DRAINING ? "STOPPING=1\n"
						   : "";
	_cleanup_free_ char *msg = ad_asprintf("%sSTATUS=%s", what, status);
	notify(msg);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	notify("WATCHDOG=1");
}

/* Blocks the loop thread: what a stuck loop looks like to systemd. */
static void on_stall(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	agent_ops *o = arg;
	uint64_t usec = o->watchdog_usec ? 3 * o->watchdog_usec : 5000000;
	ad_warn("debug: SIGUSR2: stalling the event loop for %llu ms",
		(unsigned long long)(usec / 1000));
	usleep((useconds_t)(usec < 30000000 ? usec : 30000000));
}

int ops_watchdog_start(agent_ops *o, struct event_base *base, ad_error **err)
{
	o->watchdog_usec = ad_sd_watchdog_usec();
	if (o->watchdog_usec) {
		struct timeval tv = {.tv_sec = (time_t)(o->watchdog_usec / 2 / 1000000),
				     .tv_usec = (suseconds_t)(o->watchdog_usec / 2 % 1000000)};
		o->watchdog_ev = event_new(base, -1, EV_PERSIST, on_watchdog, o);
		if (!o->watchdog_ev || event_add(o->watchdog_ev, &tv) < 0)
			return ad_fail(err, AD_E_INTERNAL, "watchdog timer");
		notify("WATCHDOG=1");
		ad_info("systemd watchdog: WATCHDOG=1 every %llu ms",
			(unsigned long long)(o->watchdog_usec / 2000));
	}
	if (o->cfg->debug_service) {
		o->stall_ev = evsignal_new(base, SIGUSR2, on_stall, o);
		if (!o->stall_ev || evsignal_add(o->stall_ev, NULL) < 0)
			return ad_fail(err, AD_E_INTERNAL, "SIGUSR2 handler");
	}
	return 0;
}

int ops_reload(agent_ops *o, const cfg_config *cfg, ad_error **err)
{
	authz_policy *p = NULL;
	if (authz_policy_new(cfg->authz_roles, cfg->authz_role_from_ou, cfg->authz_default_role, &p,
			     err) < 0)
		return ad_error_wrap(err, "%s: [authz]", cfg->source);
	pthread_rwlock_wrlock(&o->authz_lock);
	authz_policy *old = o->authz;
	o->authz = p;
	pthread_rwlock_unlock(&o->authz_lock);
	authz_policy_free(old);
	_cleanup_error_ ad_error *e = NULL;
	if (o->http && cfg->metrics_tls_cert[0] &&
	    metrics_http_reload_tls(o->http, cfg->metrics_tls_cert, cfg->metrics_tls_key, &e) < 0)
		ad_error_log("reload: refused, the metrics endpoint keeps its certificate: %s",
			     e->message);
	return 0;
}

void ops_free(agent_ops *o)
{
	if (!o)
		return;
	metrics_http_free(o->http); /* first: it runs the collectors */
	if (o->watchdog_ev)
		event_free(o->watchdog_ev);
	if (o->stall_ev)
		event_free(o->stall_ev);
	metrics_registry_free(o->reg);
	authz_policy_free(o->authz);
	pthread_rwlock_destroy(&o->authz_lock);
	for (size_t i = 0; i < o->n_wraps; i++)
		free(o->wraps[i]);
	free(o->wraps);
	free(o);
}
