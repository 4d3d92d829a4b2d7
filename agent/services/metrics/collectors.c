/* Ready-made collectors: the process's own numbers (from /proc/self) and
 * cAdvisor's container, network and machine families. */
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cni.h"
#include "metrics.h"
#include "metrics_int.h"
#include "runtime.h"

static double process_start_seconds(unsigned long long start_ticks, long hz)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");
	char line[256];
	unsigned long long btime = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "btime %llu", &btime) == 1)
			break;
	return (double)btime + (double)start_ticks / (double)hz;
}

static size_t count_fds(void)
{
	/* Since Linux 6.2 the directory's size is the number of open fds:
	 * no walk over the entries (each one a dentry lookup in procfs). */
	struct stat st;
	if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0)
		return (size_t)st.st_size;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n > 0 ? n - 1 : 0; /* not the directory's own fd */
}

void metrics_collect_process(metrics_out *o, void *arg)
{
	(void)arg;
	char buf[1024];
	_cleanup_close_ int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	ssize_t len = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (len <= 0)
		return;
	buf[len] = '\0';
	/* Fields after the command, which may hold spaces and parentheses. */
	const char *p = strrchr(buf, ')');
	unsigned long long utime, stime, start, vsize;
	long threads, rss;
	if (!p || sscanf(p + 2,
			 "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
			 "%ld %*d %llu %llu %ld",
			 &utime, &stime, &threads, &start, &vsize, &rss) != 6)
		return;
	long hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl = {0};
	getrlimit(RLIMIT_NOFILE, &rl);
	metrics_family(o, "process_cpu_seconds_total", METRICS_COUNTER,
		       "Total user and system CPU time spent in seconds.");
	metrics_sample(o, NULL, NULL, (double)(utime + stime) / (double)hz);
	metrics_family(o, "process_resident_memory_bytes", METRICS_GAUGE,
		       "Resident memory size in bytes.");
	metrics_sample(o, NULL, NULL, (double)rss * (double)page);
	metrics_family(o, "process_virtual_memory_bytes", METRICS_GAUGE,
		       "Virtual memory size in bytes.");
	metrics_sample(o, NULL, NULL, (double)vsize);
	metrics_family(o, "process_open_fds", METRICS_GAUGE, "Number of open file descriptors.");
	metrics_sample(o, NULL, NULL, (double)count_fds());
	metrics_family(o, "process_max_fds", METRICS_GAUGE,
		       "Maximum number of open file descriptors.");
	metrics_sample(o, NULL, NULL, (double)rl.rlim_cur);
	metrics_family(o, "process_threads", METRICS_GAUGE, "Number of OS threads in the process.");
	metrics_sample(o, NULL, NULL, (double)threads);
	metrics_family(o, "process_start_time_seconds", METRICS_GAUGE,
		       "Start time of the process since unix epoch in seconds.");
	metrics_sample(o, NULL, NULL, process_start_seconds(start, hz));
}

/* How a field of metrics_container becomes a sample value. */
typedef enum value_kind {
	U64,
	U64_NS_AS_S, /* nanoseconds shown as seconds */
	I64_NS_AS_S,
	I64_POSITIVE, /* no sample unless > 0 (an unset quota) */
} value_kind;

typedef struct family {
	metrics_family_info info;
	size_t offset;
	value_kind kind;
} family;

#define C(field) offsetof(metrics_container, field)
/* cAdvisor's names, types and help texts (container/metrics in cAdvisor). */
static const family container_families[] = {
    {{"container_cpu_usage_seconds_total", METRICS_COUNTER,
      "Cumulative cpu time consumed in seconds."},
     C(cpu_usage_ns),
     U64_NS_AS_S},
    {{"container_cpu_user_seconds_total", METRICS_COUNTER,
      "Cumulative user cpu time consumed in seconds."},
     C(cpu_user_ns),
     U64_NS_AS_S},
    {{"container_cpu_system_seconds_total", METRICS_COUNTER,
      "Cumulative system cpu time consumed in seconds."},
     C(cpu_system_ns),
     U64_NS_AS_S},
    {{"container_cpu_cfs_periods_total", METRICS_COUNTER,
      "Number of elapsed enforcement period intervals."},
     C(cpu_cfs_periods),
     U64},
    {{"container_cpu_cfs_throttled_periods_total", METRICS_COUNTER,
      "Number of throttled period intervals."},
     C(cpu_cfs_throttled_periods),
     U64},
    {{"container_cpu_cfs_throttled_seconds_total", METRICS_COUNTER,
      "Total time duration the container has been throttled."},
     C(cpu_cfs_throttled_ns),
     U64_NS_AS_S},
    {{"container_memory_usage_bytes", METRICS_GAUGE,
      "Current memory usage in bytes, including all memory regardless of when it was accessed"},
     C(memory_usage),
     U64},
    {{"container_memory_working_set_bytes", METRICS_GAUGE, "Current working set in bytes."},
     C(memory_working_set),
     U64},
    {{"container_memory_rss", METRICS_GAUGE, "Size of RSS in bytes."}, C(memory_rss), U64},
    {{"container_memory_cache", METRICS_GAUGE, "Number of bytes of page cache memory."},
     C(memory_cache),
     U64},
    {{"container_memory_failcnt", METRICS_COUNTER, "Number of memory usage hits limits"},
     C(memory_failcnt),
     U64},
    {{"container_oom_events_total", METRICS_COUNTER,
      "Count of out of memory events observed for the container"},
     C(oom_events),
     U64},
    {{"container_spec_memory_limit_bytes", METRICS_GAUGE, "Memory limit for the container."},
     C(spec_memory_limit),
     U64},
    {{"container_spec_cpu_shares", METRICS_GAUGE, "CPU share of the container."},
     C(spec_cpu_shares),
     U64},
    {{"container_spec_cpu_quota", METRICS_GAUGE, "CPU quota of the container."},
     C(spec_cpu_quota),
     I64_POSITIVE},
    {{"container_spec_cpu_period", METRICS_GAUGE, "CPU period of the container."},
     C(spec_cpu_period),
     I64_POSITIVE},
    {{"container_processes", METRICS_GAUGE, "Number of processes running inside the container."},
     C(processes),
     U64},
    {{"container_threads", METRICS_GAUGE, "Number of threads running inside the container"},
     C(threads),
     U64},
    {{"container_start_time_seconds", METRICS_GAUGE,
      "Start time of the container since unix epoch in seconds."},
     C(start_time_ns),
     I64_NS_AS_S},
    {{"container_last_seen", METRICS_GAUGE, "Last time a container was seen by the exporter"},
     C(last_seen_ns),
     I64_NS_AS_S},
};
#undef C

#define N(field) offsetof(metrics_pod_net, field)
static const family net_families[] = {
    {{"container_network_receive_bytes_total", METRICS_COUNTER,
      "Cumulative count of bytes received"},
     N(rx_bytes),
     U64},
    {{"container_network_receive_packets_total", METRICS_COUNTER,
      "Cumulative count of packets received"},
     N(rx_packets),
     U64},
    {{"container_network_receive_packets_dropped_total", METRICS_COUNTER,
      "Cumulative count of packets dropped while receiving"},
     N(rx_dropped),
     U64},
    {{"container_network_receive_errors_total", METRICS_COUNTER,
      "Cumulative count of errors encountered while receiving"},
     N(rx_errors),
     U64},
    {{"container_network_transmit_bytes_total", METRICS_COUNTER,
      "Cumulative count of bytes transmitted"},
     N(tx_bytes),
     U64},
    {{"container_network_transmit_packets_total", METRICS_COUNTER,
      "Cumulative count of packets transmitted"},
     N(tx_packets),
     U64},
    {{"container_network_transmit_packets_dropped_total", METRICS_COUNTER,
      "Cumulative count of packets dropped while transmitting"},
     N(tx_dropped),
     U64},
    {{"container_network_transmit_errors_total", METRICS_COUNTER,
      "Cumulative count of errors encountered while transmitting"},
     N(tx_errors),
     U64},
};
#undef N

/* false: no sample (an unset quota, like cAdvisor, is not shown). */
static bool field_value(const void *base, const family *f, double *ret)
{
	const char *p = (const char *)base + f->offset;
	uint64_t u;
	int64_t i;
	switch (f->kind) {
	case U64:
	case U64_NS_AS_S:
		memcpy(&u, p, sizeof(u));
		*ret = f->kind == U64_NS_AS_S ? (double)u / 1e9 : (double)u;
		return true;
	case I64_POSITIVE:
	case I64_NS_AS_S:
		memcpy(&i, p, sizeof(i));
		if (f->kind == I64_POSITIVE && i <= 0)
			return false;
		*ret = f->kind == I64_NS_AS_S ? (double)i / 1e9 : (double)i;
		return true;
	}
	return false;
}

/* A time in nanoseconds, for metrics_sample_ns (exact and cheaper than a
 * double's formatting). */
static bool field_ns(const void *base, const family *f, int64_t *ret)
{
	const char *p = (const char *)base + f->offset;
	uint64_t u;
	switch (f->kind) {
	case U64_NS_AS_S:
		memcpy(&u, p, sizeof(u));
		if (u > INT64_MAX)
			return false;
		*ret = (int64_t)u;
		return true;
	case I64_NS_AS_S:
		memcpy(ret, p, sizeof(*ret));
		return true;
	default:
		return false;
	}
}

#define N_CONTAINER_FAMILIES (sizeof(container_families) / sizeof(*container_families))
#define N_NET_FAMILIES (sizeof(net_families) / sizeof(*net_families))

const metrics_family_info *metrics_container_family(size_t i)
{
	return i < N_CONTAINER_FAMILIES ? &container_families[i].info : NULL;
}

const metrics_family_info *metrics_network_family(size_t i)
{
	return i < N_NET_FAMILIES ? &net_families[i].info : NULL;
}

bool metrics_container_value(const metrics_container *c, size_t i, double *ret)
{
	return i < N_CONTAINER_FAMILIES && field_value(c, &container_families[i], ret);
}

bool metrics_network_value(const metrics_pod_net *n, size_t i, double *ret)
{
	return i < N_NET_FAMILIES && field_value(n, &net_families[i], ret);
}

void metrics_pod_net_init(metrics_pod_net *n, const char *id, const char *pod,
			  const char *namespace_, const cni_if_stats *s)
{
	*n = (metrics_pod_net){
	    .id = id,
	    .pod = pod,
	    .namespace_ = namespace_,
	    .interface = s->name,
	    .rx_bytes = s->rx_bytes,
	    .rx_packets = s->rx_packets,
	    .rx_errors = s->rx_errors,
	    .rx_dropped = s->rx_dropped,
	    .tx_bytes = s->tx_bytes,
	    .tx_packets = s->tx_packets,
	    .tx_errors = s->tx_errors,
	    .tx_dropped = s->tx_dropped,
	};
}

void metrics_container_init(metrics_container *mc, const char *id, const char *name,
			    const char *pod, const char *namespace_, const char *image,
			    int64_t start_time_ns, const rt_stats *st)
{
	*mc = (metrics_container){.id = id,
				  .name = name,
				  .pod = pod,
				  .namespace_ = namespace_,
				  .image = image,
				  .start_time_ns = start_time_ns};
	mc->cpu_usage_ns = st->cpu_usage_ns;
	mc->cpu_user_ns = st->cpu_user_ns;
	mc->cpu_system_ns = st->cpu_system_ns;
	mc->cpu_cfs_periods = st->cpu_cfs_periods;
	mc->cpu_cfs_throttled_periods = st->cpu_cfs_throttled_periods;
	mc->cpu_cfs_throttled_ns = st->cpu_cfs_throttled_ns;
	mc->memory_usage = st->memory_usage;
	mc->memory_working_set = st->memory_working_set;
	mc->memory_rss = st->memory_rss;
	mc->memory_cache = st->memory_cache;
	mc->memory_failcnt = st->memory_failcnt;
	mc->oom_events = st->oom_kill_count;
	mc->spec_memory_limit = st->memory_limit;
	mc->spec_cpu_shares = st->cpu_shares;
	mc->spec_cpu_quota = st->cpu_quota_us;
	mc->spec_cpu_period = (int64_t)st->cpu_period_us;
	mc->processes = st->processes;
	mc->threads = st->threads;
	mc->last_seen_ns = st->timestamp_ns;
}

static const char *const container_label_names[] = {"container", "pod", "namespace", "image", "id"};
static const char *const net_label_names[] = {"container", "pod", "namespace",
					      "image",	   "id",  "interface"};

void metrics_write_containers(metrics_out *o, const metrics_container *c, size_t n_c,
			      const metrics_pod_net *net, size_t n_net)
{
	char **labels = ad_malloc0((n_c + n_net + 1) * sizeof(char *));
	for (size_t i = 0; i < n_c; i++) {
		const char *v[] = {c[i].name, c[i].pod, c[i].namespace_, c[i].image, c[i].id};
		labels[i] = metrics_labels(5, container_label_names, v);
	}
	for (size_t i = 0; i < n_net; i++) {
		/* The pod's network is the sandbox's: kubelet's cAdvisor shows
		 * it on the pod-level series, container "POD". */
		const char *v[] = {"POD", net[i].pod, net[i].namespace_,
				   "",	  net[i].id,  net[i].interface};
		labels[n_c + i] = metrics_labels(6, net_label_names, v);
	}
	double value;
	for (size_t f = 0; f < N_CONTAINER_FAMILIES; f++) {
		const family *fam = &container_families[f];
		metrics_family(o, fam->info.name, fam->info.type, fam->info.help);
		for (size_t i = 0; i < n_c; i++) {
			int64_t ns;
			if (field_ns(&c[i], fam, &ns))
				metrics_sample_ns(o, labels[i], ns);
			else if (field_value(&c[i], fam, &value))
				metrics_sample(o, NULL, labels[i], value);
		}
	}
	for (size_t f = 0; f < N_NET_FAMILIES; f++) {
		const family *fam = &net_families[f];
		metrics_family(o, fam->info.name, fam->info.type, fam->info.help);
		for (size_t i = 0; i < n_net; i++)
			if (field_value(&net[i], fam, &value))
				metrics_sample(o, NULL, labels[n_c + i], value);
	}
	for (size_t i = 0; i < n_c + n_net; i++)
		free(labels[i]);
	free(labels);

	long cpus = sysconf(_SC_NPROCESSORS_ONLN), pages = sysconf(_SC_PHYS_PAGES),
	     page = sysconf(_SC_PAGESIZE);
	metrics_family(o, "machine_cpu_cores", METRICS_GAUGE, "Number of logical CPU cores.");
	metrics_sample(o, NULL, NULL, (double)cpus);
	metrics_family(o, "machine_memory_bytes", METRICS_GAUGE,
		       "Amount of memory installed on the machine.");
	metrics_sample(o, NULL, NULL, (double)pages * (double)page);
}
