/* ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats:
 * cgroup usage from the runtime, the writable layer from the store, network
 * counters from the pod's namespace. */
#include <string.h>

#include "cri_int.h"

/* ---- stats, resources, logs, runtime config ------------------------------------ */
static Runtime__V1__UInt64Value *u64(rpc_call *call, uint64_t v)
{
	Runtime__V1__UInt64Value *p = rpc_call_alloc(call, sizeof(*p));
	runtime__v1__uint64_value__init(p);
	p->value = v;
	return p;
}

/* A container's stats; usage only while it runs (an exited one has no cgroup).
 * ret_st (if any) gets the numbers read, timestamp_ns 0 if none: the pod's
 * sum needs the process count, which ContainerStats has no field for. */
static Runtime__V1__ContainerStats *ctr_stats(rpc_call *call, mgr *m, const mgr_ctr *c,
					      const Runtime__V1__ContainerConfig *cfg,
					      rt_stats *ret_st)
{
	Runtime__V1__ContainerStats *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__container_stats__init(s);
	Runtime__V1__ContainerAttributes *a = rpc_call_alloc(call, sizeof(*a));
	runtime__v1__container_attributes__init(a);
	a->id = rpc_call_strdup(call, c->id);
	if (cfg) {
		a->metadata = cfg->metadata;
		CRI_COPY_MAP(call, a, labels,
			     runtime__v1__container_attributes__labels_entry__descriptor,
			     cfg->n_labels, cfg->labels);
		CRI_COPY_MAP(call, a, annotations,
			     runtime__v1__container_attributes__annotations_entry__descriptor,
			     cfg->n_annotations, cfg->annotations);
	}
	s->attributes = a;
	ad_error *e = NULL;
	uint64_t bytes, inodes;
	const char *mountpoint;
	int64_t measured_at;
	if (mgr_ctr_fs_usage(m, c->id, &bytes, &inodes, &mountpoint, &measured_at, &e) == 0) {
		Runtime__V1__FilesystemUsage *fs = rpc_call_alloc(call, sizeof(*fs));
		runtime__v1__filesystem_usage__init(fs);
		fs->timestamp = measured_at;
		Runtime__V1__FilesystemIdentifier *fid = rpc_call_alloc(call, sizeof(*fid));
		runtime__v1__filesystem_identifier__init(fid);
		fid->mountpoint = rpc_call_strdup(call, mountpoint);
		fs->fs_id = fid;
		fs->used_bytes = u64(call, bytes);
		fs->inodes_used = u64(call, inodes);
		s->writable_layer = fs;
	}
	ad_error_free(&e);
	rt_stats st = {0};
	if (ret_st)
		ret_st->timestamp_ns = 0;
	if (c->state != MGR_CTR_RUNNING || mgr_ctr_stats(m, c->id, &st, &e) < 0) {
		ad_error_free(&e);
		return s;
	}
	if (ret_st)
		*ret_st = st;
	Runtime__V1__CpuUsage *cpu = rpc_call_alloc(call, sizeof(*cpu));
	runtime__v1__cpu_usage__init(cpu);
	cpu->timestamp = st.timestamp_ns;
	cpu->usage_core_nano_seconds = u64(call, st.cpu_usage_ns);
	/* None on the first sample: kubelet and crictl then compute it themselves. */
	uint64_t rate;
	if (mgr_cpu_nano_cores(m, c->id, st.cpu_usage_ns, st.timestamp_ns, &rate))
		cpu->usage_nano_cores = u64(call, rate);
	s->cpu = cpu;
	Runtime__V1__MemoryUsage *mem = rpc_call_alloc(call, sizeof(*mem));
	runtime__v1__memory_usage__init(mem);
	mem->timestamp = st.timestamp_ns;
	mem->working_set_bytes = u64(call, st.memory_working_set);
	mem->usage_bytes = u64(call, st.memory_usage);
	mem->rss_bytes = u64(call, st.memory_rss);
	mem->page_faults = u64(call, st.memory_page_faults);
	mem->major_page_faults = u64(call, st.memory_major_page_faults);
	if (st.memory_limit)
		mem->available_bytes = u64(call, st.memory_limit > st.memory_working_set
						     ? st.memory_limit - st.memory_working_set
						     : 0);
	s->memory = mem;
	return s;
}

rpc_code cri_container_stats(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__ContainerStatsRequest *q =
	    (const Runtime__V1__ContainerStatsRequest *)req;
	mgr_ctr *c = NULL;
	Runtime__V1__ContainerConfig *cfg = NULL;
	rpc_code rc = cri_get_ctr(call, m, q->container_id, &c, &cfg);
	if (rc != RPC_OK)
		return rc;
	((Runtime__V1__ContainerStatsResponse *)resp)->stats = ctr_stats(call, m, c, cfg, NULL);
	mgr_ctr_free(c);
	return RPC_OK;
}

static void *ctr_stats_item(rpc_call *call, mgr *m, const void *c, void *cfg)
{
	return ctr_stats(call, m, c, cfg, NULL);
}

rpc_code cri_list_container_stats(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__ContainerStatsFilter *f =
	    ((const Runtime__V1__ListContainerStatsRequest *)req)->filter;
	Runtime__V1__ListContainerStatsResponse *r = resp;
	cri_list_filter lf = CRI_LIST_FILTER(f);
	if (f && !cri_empty(f->pod_sandbox_id))
		lf.pod_id = f->pod_sandbox_id;
	return cri_list(call, svc->pods, CRI_LIST_CONTAINERS, &lf, ctr_stats_item,
			(void ***)&r->stats, &r->n_stats);
}

/* ---- PodSandboxStats ----------------------------------------------------------------- */
/* The pod's usage: its containers' (listed too) plus the infra process's. */
static Runtime__V1__PodSandboxStats *pod_stats(rpc_call *call, mgr *m, const mgr_pod *p,
					       const Runtime__V1__PodSandboxConfig *cfg)
{
	Runtime__V1__PodSandboxStats *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__pod_sandbox_stats__init(s);
	Runtime__V1__PodSandboxAttributes *a = rpc_call_alloc(call, sizeof(*a));
	runtime__v1__pod_sandbox_attributes__init(a);
	a->id = rpc_call_strdup(call, p->id);
	if (cfg) {
		a->metadata = cfg->metadata;
		CRI_COPY_MAP(call, a, labels,
			     runtime__v1__pod_sandbox_attributes__labels_entry__descriptor,
			     cfg->n_labels, cfg->labels);
		CRI_COPY_MAP(call, a, annotations,
			     runtime__v1__pod_sandbox_attributes__annotations_entry__descriptor,
			     cfg->n_annotations, cfg->annotations);
	}
	s->attributes = a;
	Runtime__V1__LinuxPodSandboxStats *l = rpc_call_alloc(call, sizeof(*l));
	runtime__v1__linux_pod_sandbox_stats__init(l);
	s->linux = l;

	rt_stats infra;
	ad_error *e = NULL;
	if (mgr_pod_infra_stats(m, p, &infra, &e) < 0) {
		ad_error_free(&e);
		return s; /* not ready: no usage */
	}
	uint64_t cpu = infra.cpu_usage_ns, ws = infra.memory_working_set;
	uint64_t usage = infra.memory_usage, rss = infra.memory_rss, procs = infra.pids_current;
	uint64_t faults = infra.memory_page_faults, major = infra.memory_major_page_faults;
	/* Available: what the containers' limits leave, if each running one has one. */
	uint64_t available = 0;
	bool limited = true;
	size_t measured = 0;
	mgr_ctr **v = NULL;
	if (mgr_ctr_list(m, p->id, &v, &e) == 0) {
		size_t n = 0;
		while (v[n])
			n++;
		l->containers = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
		for (size_t i = 0; i < n; i++) {
			Runtime__V1__ContainerConfig *cc =
			    cri_unpack_in_call(call, &runtime__v1__container_config__descriptor,
					       v[i]->request_len, v[i]->request);
			rt_stats st;
			Runtime__V1__ContainerStats *cs = ctr_stats(call, m, v[i], cc, &st);
			l->containers[l->n_containers++] = cs;
			if (st.timestamp_ns)
				procs += st.pids_current;
			if (cs->cpu && cs->cpu->usage_core_nano_seconds)
				cpu += cs->cpu->usage_core_nano_seconds->value;
			if (cs->memory) {
				ws += cs->memory->working_set_bytes->value;
				usage += cs->memory->usage_bytes->value;
				rss += cs->memory->rss_bytes->value;
				measured++;
				faults += cs->memory->page_faults->value;
				major += cs->memory->major_page_faults->value;
				if (cs->memory->available_bytes)
					available += cs->memory->available_bytes->value;
				else
					limited = false;
			}
		}
		mgr_ctrs_free(v);
	}
	ad_error_free(&e);
	Runtime__V1__CpuUsage *c = rpc_call_alloc(call, sizeof(*c));
	runtime__v1__cpu_usage__init(c);
	c->timestamp = infra.timestamp_ns;
	c->usage_core_nano_seconds = u64(call, cpu);
	uint64_t rate;
	if (mgr_cpu_nano_cores(m, p->id, cpu, infra.timestamp_ns, &rate))
		c->usage_nano_cores = u64(call, rate);
	l->cpu = c;
	Runtime__V1__MemoryUsage *mu = rpc_call_alloc(call, sizeof(*mu));
	runtime__v1__memory_usage__init(mu);
	mu->timestamp = infra.timestamp_ns;
	mu->working_set_bytes = u64(call, ws);
	mu->usage_bytes = u64(call, usage);
	mu->rss_bytes = u64(call, rss);
	mu->page_faults = u64(call, faults);
	mu->major_page_faults = u64(call, major);
	if (limited && measured)
		mu->available_bytes = u64(call, available);
	l->memory = mu;
	cni_if_stats *ifs = NULL;
	size_t n_ifs = 0;
	if (mgr_pod_net_stats(m, p, &ifs, &n_ifs, &e) == 0) {
		Runtime__V1__NetworkUsage *nu = rpc_call_alloc(call, sizeof(*nu));
		runtime__v1__network_usage__init(nu);
		nu->timestamp = infra.timestamp_ns;
		nu->interfaces = rpc_call_alloc(call, (n_ifs + 1) * sizeof(void *));
		for (size_t i = 0; i < n_ifs; i++) {
			/* Loopback traffic never leaves the pod: kubelet and cAdvisor skip it. */
			if (strcmp(ifs[i].name, "lo") == 0)
				continue;
			Runtime__V1__NetworkInterfaceUsage *iu = rpc_call_alloc(call, sizeof(*iu));
			runtime__v1__network_interface_usage__init(iu);
			iu->name = rpc_call_strdup(call, ifs[i].name);
			iu->rx_bytes = u64(call, ifs[i].rx_bytes);
			iu->rx_errors = u64(call, ifs[i].rx_errors);
			iu->tx_bytes = u64(call, ifs[i].tx_bytes);
			iu->tx_errors = u64(call, ifs[i].tx_errors);
			nu->interfaces[nu->n_interfaces++] = iu;
			if (strcmp(ifs[i].name, "eth0") == 0)
				nu->default_interface = iu;
		}
		l->network = nu;
	}
	free(ifs);
	ad_error_free(&e);
	Runtime__V1__ProcessUsage *pu = rpc_call_alloc(call, sizeof(*pu));
	runtime__v1__process_usage__init(pu);
	pu->timestamp = infra.timestamp_ns;
	pu->process_count = u64(call, procs);
	l->process = pu;
	return s;
}

rpc_code cri_pod_sandbox_stats(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__PodSandboxStatsRequest *q =
	    (const Runtime__V1__PodSandboxStatsRequest *)req;
	mgr_pod *p = NULL;
	Runtime__V1__PodSandboxConfig *cfg = NULL;
	rpc_code rc = cri_get_pod(call, m, q->pod_sandbox_id, &p, &cfg);
	if (rc != RPC_OK)
		return rc;
	((Runtime__V1__PodSandboxStatsResponse *)resp)->stats = pod_stats(call, m, p, cfg);
	mgr_pod_free(p);
	return RPC_OK;
}

static void *pod_stats_item(rpc_call *call, mgr *m, const void *p, void *cfg)
{
	return pod_stats(call, m, p, cfg);
}

rpc_code cri_list_pod_sandbox_stats(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__PodSandboxStatsFilter *f =
	    ((const Runtime__V1__ListPodSandboxStatsRequest *)req)->filter;
	Runtime__V1__ListPodSandboxStatsResponse *r = resp;
	cri_list_filter lf = CRI_LIST_FILTER(f);
	return cri_list(call, svc->pods, CRI_LIST_PODS, &lf, pod_stats_item, (void ***)&r->stats,
			&r->n_stats);
}
