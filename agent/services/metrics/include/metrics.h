/* metrics.h — the one public header of libadmetrics: metric families written
 * in the Prometheus text exposition format (0.0.4) or OpenMetrics 1.0.0, a
 * registry of instruments and collectors, cAdvisor's container families, and
 * the HTTP endpoint (/metrics, /healthz, /readyz) on libevent's evhttp.
 *
 * Nothing here knows agentd's pods or the CRI: the daemon fills plain structs
 * (metrics_container, metrics_pod_net) in a collector. */
#ifndef AGENTD_METRICS_H
#define AGENTD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"

typedef enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
} metrics_type;

typedef enum metrics_format {
	METRICS_TEXT,	     /* text/plain; version=0.0.4 */
	METRICS_OPENMETRICS, /* application/openmetrics-text; version=1.0.0 */
} metrics_format;

/* ---- exposition (I/O-free: text appended to a buffer) ---- */
typedef struct metrics_out metrics_out;

metrics_out *metrics_out_new(metrics_format format);
void metrics_out_free(metrics_out *o);
/* The text so far; with OpenMetrics the "# EOF" line is added first. The
 * pointer lives until the next write or metrics_out_free. */
const char *metrics_out_finish(metrics_out *o, size_t *ret_len);
metrics_format metrics_format_from_accept(const char *accept); /* NULL: text */
const char *metrics_content_type(metrics_format format);

/* Starts a family. `name` is the sample name as Prometheus' text format
 * shows it (counters usually end in _total); OpenMetrics gets the family
 * name without _total, and a counter without that suffix is typed
 * "unknown" there so that its samples keep their names. */
void metrics_family(metrics_out *o, const char *name, metrics_type type, const char *help);
/* One sample of the current family. `labels` is a rendered label list
 * (metrics_labels) or NULL; `suffix` ("_bucket", "_sum", "_count") or NULL. */
void metrics_sample(metrics_out *o, const char *suffix, const char *labels, double value);
/* A histogram's series: cumulative counts per upper bound (n bounds; +Inf
 * is added), sum and count. */
void metrics_histogram(metrics_out *o, const char *labels, const double *bounds,
		       const uint64_t *cumulative, size_t n, double sum, uint64_t count);

/* Renders n label pairs (names[i]="values[i]", values escaped) as one
 * string for metrics_sample; free() it. NULL values are written as "". */
char *metrics_labels(size_t n, const char *const *names, const char *const *values);

/* ---- registry: instruments (thread-safe) and collectors ---- */
typedef struct metrics_registry metrics_registry;
typedef struct metrics_vec metrics_vec;
typedef struct metrics_series metrics_series;
/* Called on every scrape, on the HTTP thread: write families to `o`. */
typedef void (*metrics_collect_fn)(metrics_out *o, void *arg);

metrics_registry *metrics_registry_new(void);
void metrics_registry_free(metrics_registry *r);
void metrics_registry_add_collector(metrics_registry *r, metrics_collect_fn fn, void *arg);
/* Instruments with a fixed list of label names; series appear on first use.
 * The registry owns them; names and label names must outlive it. bounds:
 * ascending upper bounds of a histogram's buckets (copied). */
metrics_vec *metrics_counter_vec(metrics_registry *r, const char *name, const char *help,
				 size_t n_labels, const char *const *label_names);
metrics_vec *metrics_gauge_vec(metrics_registry *r, const char *name, const char *help,
			       size_t n_labels, const char *const *label_names);
metrics_vec *metrics_histogram_vec(metrics_registry *r, const char *name, const char *help,
				   size_t n_labels, const char *const *label_names,
				   const double *bounds, size_t n_bounds);
/* values: one per label name. add: counters and gauges; set: gauges;
 * observe: histograms. */
void metrics_vec_add(metrics_vec *v, const char *const *values, double delta);
void metrics_vec_set(metrics_vec *v, const char *const *values, double value);
void metrics_vec_observe(metrics_vec *v, const char *const *values, double value);
/* The series of these values, created if new, valid as long as the
 * registry: a hot path resolves it once instead of hashing the labels on
 * every update. */
metrics_series *metrics_vec_series(metrics_vec *v, const char *const *values);
void metrics_series_add(metrics_series *s, double delta);
void metrics_series_observe(metrics_series *s, double value);
/* Instruments first, in creation order, then the collectors. */
void metrics_registry_write(metrics_registry *r, metrics_out *o);

/* ---- ready-made collectors ---- */
/* process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_threads, process_start_time_seconds (from /proc/self). */
void metrics_collect_process(metrics_out *o, void *arg);

/* One container's cgroup numbers and identity, as cAdvisor labels them
 * (container, pod, namespace, image, id). Times in nanoseconds. */
typedef struct metrics_container {
	const char *id, *name, *pod, *namespace_, *image;
	uint64_t cpu_usage_ns, cpu_user_ns, cpu_system_ns;
	uint64_t cpu_cfs_periods, cpu_cfs_throttled_periods, cpu_cfs_throttled_ns;
	uint64_t memory_usage, memory_working_set, memory_rss, memory_cache, memory_failcnt;
	uint64_t oom_events;
	uint64_t spec_memory_limit; /* 0: none */
	uint64_t spec_cpu_shares;
	int64_t spec_cpu_quota;	 /* microseconds per period; 0: none */
	int64_t spec_cpu_period; /* microseconds */
	uint64_t processes, threads;
	int64_t start_time_ns, last_seen_ns;
} metrics_container;

/* One interface of a pod's network namespace. */
typedef struct metrics_pod_net {
	const char *id, *pod, *namespace_, *interface;
	uint64_t rx_bytes, rx_packets, rx_errors, rx_dropped;
	uint64_t tx_bytes, tx_packets, tx_errors, tx_dropped;
} metrics_pod_net;

/* cAdvisor's families for these containers and pods, and machine_cpu_cores /
 * machine_memory_bytes (from sysconf). */
void metrics_write_containers(metrics_out *o, const metrics_container *c, size_t n_c,
			      const metrics_pod_net *net, size_t n_net);

/* The same families one by one, for other ways of reporting them (CRI
 * ListMetricDescriptors / ListPodSandboxMetrics): the i-th container or
 * network family (NULL past the last), and its value for one container or
 * interface (false: no sample, e.g. an unset quota). Values are in the
 * family's unit (seconds, bytes). */
typedef struct metrics_family_info {
	const char *name;
	metrics_type type;
	const char *help;
} metrics_family_info;
const metrics_family_info *metrics_container_family(size_t i);
const metrics_family_info *metrics_network_family(size_t i);
bool metrics_container_value(const metrics_container *c, size_t i, double *ret);
bool metrics_network_value(const metrics_pod_net *n, size_t i, double *ret);

/* A container's identity, start time and the numbers of its cgroup
 * snapshot (runtime.h's rt_stats; last_seen is the snapshot's time). The
 * strings are borrowed. */
struct rt_stats;
struct cni_if_stats;
/* One interface's counters of a pod (cni.h's cni_if_stats; name borrowed). */
void metrics_pod_net_init(metrics_pod_net *n, const char *id, const char *pod,
			  const char *namespace_, const struct cni_if_stats *s);
void metrics_container_init(metrics_container *mc, const char *id, const char *name,
			    const char *pod, const char *namespace_, const char *image,
			    int64_t start_time_ns, const struct rt_stats *st);

/* ---- the HTTP endpoint ---- */
typedef struct metrics_http metrics_http;

typedef struct metrics_http_config {
	const char *listen;   /* "host:port" or "[v6]:port"; port 0 picks one */
	const char *tls_cert; /* both or neither: HTTPS */
	const char *tls_key;
} metrics_http_config;

/* A readiness check: true when ready; else writes why into `why`. Runs on
 * the HTTP thread. */
typedef bool (*metrics_ready_fn)(void *arg, char *why, size_t why_len);

/* Binds the listener (errors name the address); serves nothing until
 * metrics_http_start. */
int metrics_http_new(const metrics_http_config *cfg, metrics_registry *reg, metrics_http **ret,
		     ad_error **err);
/* Before start. /readyz answers 200 when every check passes, else 503 with
 * a line per failing check. */
void metrics_http_add_ready(metrics_http *h, const char *name, metrics_ready_fn fn, void *arg);
int metrics_http_port(const metrics_http *h);
/* SIGHUP: new connections get this certificate and key, open ones keep
 * theirs; files that do not load leave the old pair in place. */
int metrics_http_reload_tls(metrics_http *h, const char *cert, const char *key, ad_error **err);
/* Serves on a thread of its own (a scrape never holds up the gRPC loop). */
int metrics_http_start(metrics_http *h, ad_error **err);
/* Stops the thread (if started) and frees. */
void metrics_http_free(metrics_http *h);

#endif
