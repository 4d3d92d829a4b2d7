/* RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
 * ListPodSandbox. */
#include <string.h>

#include <jansson.h>

#include "pbjson.h"
#include "cri_int.h"

/* ---- pods ----------------------------------------------------------------- */
rpc_code cri_run_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__RunPodSandboxRequest *q = (const Runtime__V1__RunPodSandboxRequest *)req;
	if (!q->config)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "RunPodSandbox: config is required");
	ad_error *e = NULL;
	char *id = NULL;
	if (mgr_pod_run(m, q->config, q->runtime_handler, &id, &e) < 0)
		return cri_fail(call, e);
	((Runtime__V1__RunPodSandboxResponse *)resp)->pod_sandbox_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

rpc_code cri_stop_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "pod_sandbox_id", ((const Runtime__V1__StopPodSandboxRequest *)req)->pod_sandbox_id,
			 mgr_pod_stop);
}

rpc_code cri_remove_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "pod_sandbox_id", ((const Runtime__V1__RemovePodSandboxRequest *)req)->pod_sandbox_id,
			 mgr_pod_remove);
}

static void add_info(rpc_call *call, mgr *m, Runtime__V1__PodSandboxStatusResponse *r, const mgr_pod *p,
		     const Runtime__V1__PodSandboxConfig *cfg)
{
	json_t *o = json_pack("{s:s, s:s*, s:s*, s:i, s:s*, s:s*}", "id", p->id, "netns", p->netns,
			      "infraId", p->infra_id, "pid", (int)p->infra_pid, "podDir", p->dir,
			      "network", p->cni_net);
	/* The pod's config as RunPodSandbox got it (hostname, DNS, ports,
	 * labels...), written as containerd writes it, for tools that read
	 * containerd's info.config. */
	if (cfg)
		json_object_set_new(o, "config", pbjson_from_message(&cfg->base, PBJSON_GO));
	if (p->cni_result)
		json_object_set_new(o, "cniResult", json_loads(p->cni_result, 0, NULL));
	/* CNI CHECK: "ok", or why the pod's network is not as ADD left it. */
	if (p->state == MGR_POD_READY && p->cni_net && p->netns) {
		ad_error *e = NULL;
		const char *check = "ok";
		if (mgr_pod_network_check(m, p, &e) < 0)
			check = e->code == AD_E_UNIMPLEMENTED ? "unsupported" : e->message;
		json_object_set_new(o, "cniCheck", json_string(check));
		if (e && e->code != AD_E_UNIMPLEMENTED && e->code != AD_E_PRECONDITION)
			ad_warn("%s", e->message);
		ad_error_free(&e);
	}
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	Runtime__V1__PodSandboxStatusResponse__InfoEntry *e = rpc_call_alloc(call, sizeof(*e));
	runtime__v1__pod_sandbox_status_response__info_entry__init(e);
	e->key = rpc_call_strdup(call, "info");
	e->value = rpc_call_strdup(call, s);
	free(s);
	r->info = rpc_call_alloc(call, sizeof(*r->info));
	r->info[0] = e;
	r->n_info = 1;
}

rpc_code cri_pod_sandbox_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__PodSandboxStatusRequest *q = (const Runtime__V1__PodSandboxStatusRequest *)req;
	if (cri_empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	ad_error *e = NULL;
	mgr_pod *p = NULL;
	if (mgr_pod_get(m, q->pod_sandbox_id, &p, &e) < 0)
		return cri_fail(call, e);
	Runtime__V1__PodSandboxConfig *cfg = cri_unpack_in_call(
	    call, &runtime__v1__pod_sandbox_config__descriptor, p->config_len, p->config);
	Runtime__V1__PodSandboxStatusResponse *r = (Runtime__V1__PodSandboxStatusResponse *)resp;
	Runtime__V1__PodSandboxStatus *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__pod_sandbox_status__init(st);
	st->id = rpc_call_strdup(call, p->id);
	st->state = cri_pod_state(p);
	st->created_at = p->created_ns;
	st->runtime_handler = rpc_call_strdup(call, p->runtime_handler ? p->runtime_handler : "");
	if (cfg) {
		st->metadata = cfg->metadata;
		CRI_COPY_MAP(call, st, labels,
			 runtime__v1__pod_sandbox_status__labels_entry__descriptor, cfg->n_labels,
			 cfg->labels);
		CRI_COPY_MAP(call, st, annotations,
			 runtime__v1__pod_sandbox_status__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
		Runtime__V1__LinuxPodSandboxStatus *ls = rpc_call_alloc(call, sizeof(*ls));
		runtime__v1__linux_pod_sandbox_status__init(ls);
		Runtime__V1__Namespace *ns = rpc_call_alloc(call, sizeof(*ns));
		runtime__v1__namespace__init(ns);
		if (cfg->linux && cfg->linux->security_context &&
		    cfg->linux->security_context->namespace_options) {
			ns->options = cfg->linux->security_context->namespace_options;
		} else {
			ns->options = rpc_call_alloc(call, sizeof(*ns->options));
			runtime__v1__namespace_option__init(ns->options);
		}
		ls->namespaces = ns;
		st->linux = ls;
	}
	Runtime__V1__PodSandboxNetworkStatus *net = rpc_call_alloc(call, sizeof(*net));
	runtime__v1__pod_sandbox_network_status__init(net);
	char **ips = p->state == MGR_POD_READY ? mgr_pod_ips(p) : NULL;
	if (ips && ips[0]) {
		net->ip = rpc_call_strdup(call, ips[0]);
		size_t n = 0;
		while (ips[n + 1])
			n++;
		net->additional_ips = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
		for (size_t i = 0; i < n; i++) {
			Runtime__V1__PodIP *pip = rpc_call_alloc(call, sizeof(*pip));
			runtime__v1__pod_ip__init(pip);
			pip->ip = rpc_call_strdup(call, ips[i + 1]);
			net->additional_ips[i] = pip;
		}
		net->n_additional_ips = n;
	}
	mgr_strv_free(ips);
	st->network = net;
	r->status = st;
	r->timestamp = ad_now_ns();
	if (q->verbose)
		add_info(call, m, r, p, cfg);
	mgr_pod_free(p);
	return RPC_OK;
}

rpc_code cri_list_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__PodSandboxFilter *f = ((const Runtime__V1__ListPodSandboxRequest *)req)->filter;
	ad_error *e = NULL;
	mgr_pod **pods = NULL;
	if (mgr_pod_list(m, &pods, &e) < 0)
		return cri_fail(call, e);
	size_t n = 0;
	while (pods[n])
		n++;
	Runtime__V1__ListPodSandboxResponse *r = (Runtime__V1__ListPodSandboxResponse *)resp;
	r->items = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	cri_list_filter lf = CRI_LIST_FILTER(f);
	for (size_t i = 0; i < n; i++) {
		mgr_pod *p = pods[i];
		if (f && f->state && f->state->state != cri_pod_state(p))
			continue;
		Runtime__V1__PodSandboxConfig *cfg =
		    cri_listed_config(call, &lf, p->id, &runtime__v1__pod_sandbox_config__descriptor,
				  p->config_len, p->config);
		if (!cfg)
			continue;
		Runtime__V1__PodSandbox *it = rpc_call_alloc(call, sizeof(*it));
		runtime__v1__pod_sandbox__init(it);
		it->id = rpc_call_strdup(call, p->id);
		it->metadata = cfg->metadata;
		it->state = cri_pod_state(p);
		it->created_at = p->created_ns;
		it->runtime_handler =
		    rpc_call_strdup(call, p->runtime_handler ? p->runtime_handler : "");
		CRI_COPY_MAP(call, it, labels, runtime__v1__pod_sandbox__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		CRI_COPY_MAP(call, it, annotations,
			 runtime__v1__pod_sandbox__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
		r->items[r->n_items++] = it;
	}
	mgr_pods_free(pods);
	return RPC_OK;
}
