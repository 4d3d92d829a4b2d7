/* Status, RuntimeConfig, UpdateRuntimeConfig: the runtime as a whole. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cri_int.h"

/* ---- Status --------------------------------------------------------------- */
/* Verbose: info "config" (JSON) with the pod CIDR as last set, and
 * "lastCNILoadStatus" ("OK" or why no network config loads), as containerd
 * names them. */
static rpc_code status_info(rpc_call *call, mgr *m, const Runtime__V1__RuntimeCondition *net,
			    Runtime__V1__StatusResponse *r)
{
	ad_error *e = NULL;
	char *cidr = NULL;
	if (mgr_pod_cidr_get(m, &cidr, &e) < 0)
		return cri_fail(call, e);
	json_t *o = json_pack("{s:s, s:s}", "podCIDR", cidr, "cgroupDriver", "cgroupfs");
	free(cidr);
	char *config = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	const char *keys[] = {"config", "lastCNILoadStatus"};
	const char *values[] = {config, net->status ? "OK" : net->message};
	r->info = rpc_call_alloc(call, 2 * sizeof(*r->info));
	for (size_t i = 0; i < 2; i++) {
		Runtime__V1__StatusResponse__InfoEntry *ie = rpc_call_alloc(call, sizeof(*ie));
		runtime__v1__status_response__info_entry__init(ie);
		ie->key = rpc_call_strdup(call, keys[i]);
		ie->value = rpc_call_strdup(call, values[i]);
		r->info[r->n_info++] = ie;
	}
	free(config);
	return RPC_OK;
}

rpc_code cri_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	Runtime__V1__StatusResponse *r = (Runtime__V1__StatusResponse *)resp;
	Runtime__V1__RuntimeStatus *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__runtime_status__init(st);
	Runtime__V1__RuntimeCondition **conds = rpc_call_alloc(call, 2 * sizeof(*conds));
	for (int i = 0; i < 2; i++) {
		conds[i] = rpc_call_alloc(call, sizeof(**conds));
		runtime__v1__runtime_condition__init(conds[i]);
	}
	conds[0]->type = rpc_call_strdup(call, "RuntimeReady");
	conds[0]->status = true;
	conds[1]->type = rpc_call_strdup(call, "NetworkReady");
	ad_error *e = NULL;
	if (mgr_network_ready(m, false, &e) == 0) {
		conds[1]->status = true;
	} else {
		conds[1]->status = false;
		conds[1]->reason = rpc_call_strdup(call, "NetworkPluginNotReady");
		conds[1]->message = rpc_call_strdup(call, e->message);
		ad_error_free(&e);
	}
	st->conditions = conds;
	st->n_conditions = 2;
	r->status = st;
	/* The handlers RunPodSandbox accepts (the default one and "agentd") and
	 * what they do (kubelet 1.29+ asks before it sends userns_options). */
	static const char *const handlers[] = {"", "agentd"};
	r->n_runtime_handlers = 2;
	r->runtime_handlers = rpc_call_alloc(call, 2 * sizeof(*r->runtime_handlers));
	for (size_t i = 0; i < 2; i++) {
		Runtime__V1__RuntimeHandler *h = rpc_call_alloc(call, sizeof(*h));
		runtime__v1__runtime_handler__init(h);
		h->name = rpc_call_strdup(call, handlers[i]);
		h->features = rpc_call_alloc(call, sizeof(*h->features));
		runtime__v1__runtime_handler_features__init(h->features);
		h->features->user_namespaces = true;
		r->runtime_handlers[i] = h;
	}
	r->features = rpc_call_alloc(call, sizeof(*r->features));
	runtime__v1__runtime_features__init(r->features);
	if (((const Runtime__V1__StatusRequest *)req)->verbose)
		return status_info(call, m, conds[1], r);
	return RPC_OK;
}

rpc_code cri_runtime_config(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)svc;
	(void)req;
	Runtime__V1__LinuxRuntimeConfiguration *l = rpc_call_alloc(call, sizeof(*l));
	runtime__v1__linux_runtime_configuration__init(l);
	/* The runtime manages cgroups through the filesystem, never systemd. */
	l->cgroup_driver = RUNTIME__V1__CGROUP_DRIVER__CGROUPFS;
	((Runtime__V1__RuntimeConfigResponse *)resp)->linux = l;
	return RPC_OK;
}

rpc_code cri_update_runtime_config(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	const Runtime__V1__UpdateRuntimeConfigRequest *q =
	    (const Runtime__V1__UpdateRuntimeConfigRequest *)req;
	const char *cidr = q->runtime_config && q->runtime_config->network_config
			       ? q->runtime_config->network_config->pod_cidr
			       : NULL;
	if (cri_empty(cidr))
		return RPC_OK;
	const char *slash = strchr(cidr, '/');
	if (!slash || !slash[1] || slash[1 + strspn(slash + 1, "0123456789")] != '\0' ||
	    strspn(cidr, "0123456789abcdefABCDEF.:") != (size_t)(slash - cidr))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod CIDR '%s' is not a CIDR",
				      cidr);
	/* Addresses come from the CNI config's IPAM, as with containerd when it
	 * has no config template: the CIDR is kept and reported (verbose Status). */
	ad_error *e = NULL;
	if (mgr_pod_cidr_set(svc->pods, cidr, &e) < 0)
		return cri_fail(call, e);
	ad_info("pod CIDR %s (pod addresses come from the CNI network config)", cidr);
	return RPC_OK;
}
