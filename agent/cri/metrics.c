/* ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor families of
 * agentd's /metrics (libadmetrics' tables and values, one definition for
 * both), as the CRI carries them. The CRI value is an unsigned integer:
 * seconds are whole seconds, like the families' names say; the exact
 * figures are in /metrics and ContainerStats. */
#include <math.h>
#include <string.h>

#include "cri_int.h"
#include "metrics.h"

static const char *const container_keys[] = {"container", "pod", "namespace", "image", "id"};
static const char *const network_keys[] = {"container", "pod", "namespace",
					   "image",	"id",  "interface"};
#define N_CONTAINER_KEYS (sizeof(container_keys) / sizeof(*container_keys))
#define N_NETWORK_KEYS (sizeof(network_keys) / sizeof(*network_keys))

static Runtime__V1__MetricDescriptor *descriptor(rpc_call *call, const metrics_family_info *f,
						 const char *const *keys, size_t n_keys)
{
	Runtime__V1__MetricDescriptor *d = rpc_call_alloc(call, sizeof(*d));
	runtime__v1__metric_descriptor__init(d);
	d->name = (char *)f->name;
	d->help = (char *)f->help;
	d->label_keys = (char **)keys;
	d->n_label_keys = n_keys;
	return d;
}

rpc_code cri_list_metric_descriptors(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)svc;
	(void)req;
	Runtime__V1__ListMetricDescriptorsResponse *r = resp;
	size_t n = 0;
	while (metrics_container_family(n))
		n++;
	for (size_t i = 0; metrics_network_family(i); i++)
		n++;
	r->descriptors = rpc_call_alloc(call, (n + 1) * sizeof(void *));
	for (size_t i = 0; metrics_container_family(i); i++)
		r->descriptors[r->n_descriptors++] =
		    descriptor(call, metrics_container_family(i), container_keys, N_CONTAINER_KEYS);
	for (size_t i = 0; metrics_network_family(i); i++)
		r->descriptors[r->n_descriptors++] =
		    descriptor(call, metrics_network_family(i), network_keys, N_NETWORK_KEYS);
	return RPC_OK;
}

static Runtime__V1__Metric *metric(rpc_call *call, const metrics_family_info *f, int64_t at,
				   char **labels, size_t n_labels, double value)
{
	Runtime__V1__Metric *m = rpc_call_alloc(call, sizeof(*m));
	runtime__v1__metric__init(m);
	m->name = (char *)f->name;
	m->timestamp = at;
	m->metric_type = f->type == METRICS_COUNTER ? RUNTIME__V1__METRIC_TYPE__COUNTER
						    : RUNTIME__V1__METRIC_TYPE__GAUGE;
	m->label_values = labels;
	m->n_label_values = n_labels;
	m->value = rpc_call_alloc(call, sizeof(*m->value));
	runtime__v1__uint64_value__init(m->value);
	m->value->value = value > 0 && isfinite(value) ? (uint64_t)value : 0;
	return m;
}

static char **labels_of(rpc_call *call, const char *const *values, size_t n)
{
	char **v = rpc_call_alloc(call, n * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		v[i] = rpc_call_strdup(call, values[i] ? values[i] : "");
	return v;
}

static Runtime__V1__ContainerMetrics *container_metrics(rpc_call *call, const mgr_pod *p,
							const mgr_ctr *c, const rt_stats *st)
{
	metrics_container mc;
	metrics_container_init(&mc, c->id, c->name, p->name, p->namespace_, c->image, c->started_ns,
			       st);
	const char *values[] = {mc.name, mc.pod, mc.namespace_, mc.image, mc.id};
	char **labels = labels_of(call, values, N_CONTAINER_KEYS);
	Runtime__V1__ContainerMetrics *cm = rpc_call_alloc(call, sizeof(*cm));
	runtime__v1__container_metrics__init(cm);
	cm->container_id = rpc_call_strdup(call, c->id);
	size_t n = 0;
	while (metrics_container_family(n))
		n++;
	cm->metrics = rpc_call_alloc(call, (n + 1) * sizeof(void *));
	double v;
	for (size_t i = 0; i < n; i++)
		if (metrics_container_value(&mc, i, &v))
			cm->metrics[cm->n_metrics++] =
			    metric(call, metrics_container_family(i), st->timestamp_ns, labels,
				   N_CONTAINER_KEYS, v);
	return cm;
}

/* The pod's interfaces (not lo) as network metrics. */
static void network_metrics(rpc_call *call, mgr *m, const mgr_pod *p,
			    Runtime__V1__PodSandboxMetrics *pm)
{
	cni_if_stats *ifs = NULL;
	size_t n_ifs = 0;
	ad_error *e = NULL;
	if (p->state != MGR_POD_READY || mgr_pod_net_stats(m, p, &ifs, &n_ifs, &e) < 0) {
		ad_error_free(&e);
		return;
	}
	size_t n_fam = 0;
	while (metrics_network_family(n_fam))
		n_fam++;
	pm->metrics = rpc_call_alloc(call, (n_ifs * n_fam + 1) * sizeof(void *));
	int64_t now = ad_now_ns();
	for (size_t j = 0; j < n_ifs; j++) {
		if (strcmp(ifs[j].name, "lo") == 0)
			continue;
		metrics_pod_net net;
		metrics_pod_net_init(&net, p->id, p->name, p->namespace_, &ifs[j]);
		const char *values[] = {"POD", net.pod, net.namespace_, "", net.id, net.interface};
		char **labels = labels_of(call, values, N_NETWORK_KEYS);
		double v;
		for (size_t i = 0; i < n_fam; i++)
			if (metrics_network_value(&net, i, &v))
				pm->metrics[pm->n_metrics++] =
				    metric(call, metrics_network_family(i), now, labels,
					   N_NETWORK_KEYS, v);
	}
	free(ifs);
}

rpc_code cri_list_pod_sandbox_metrics(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)req;
	mgr *m = svc->pods;
	ad_error *e = NULL;
	mgr_pod **pods = NULL;
	mgr_ctr **ctrs = NULL;
	rt_stats *stats = NULL;
	if (mgr_pod_list(m, &pods, &e) < 0)
		return cri_fail(call, e);
	if (mgr_ctr_list_stats(m, &ctrs, &stats, &e) < 0) {
		mgr_pods_free(pods);
		return cri_fail(call, e);
	}
	size_t n_pods = 0, n_ctrs = 0;
	while (pods[n_pods])
		n_pods++;
	while (ctrs[n_ctrs])
		n_ctrs++;
	Runtime__V1__ListPodSandboxMetricsResponse *r = resp;
	r->pod_metrics = rpc_call_alloc(call, (n_pods + 1) * sizeof(void *));
	for (size_t i = 0; i < n_pods; i++) {
		const mgr_pod *p = pods[i];
		Runtime__V1__PodSandboxMetrics *pm = rpc_call_alloc(call, sizeof(*pm));
		runtime__v1__pod_sandbox_metrics__init(pm);
		pm->pod_sandbox_id = rpc_call_strdup(call, p->id);
		network_metrics(call, m, p, pm);
		pm->container_metrics = rpc_call_alloc(call, (n_ctrs + 1) * sizeof(void *));
		for (size_t j = 0; j < n_ctrs; j++)
			if (strcmp(ctrs[j]->pod_id, p->id) == 0 &&
			    ctrs[j]->state == MGR_CTR_RUNNING && stats[j].timestamp_ns)
				pm->container_metrics[pm->n_container_metrics++] =
				    container_metrics(call, p, ctrs[j], &stats[j]);
		r->pod_metrics[r->n_pod_metrics++] = pm;
	}
	free(stats);
	mgr_ctrs_free(ctrs);
	mgr_pods_free(pods);
	return RPC_OK;
}
