/* Status, RuntimeConfig, UpdateRuntimeConfig: the runtime as a whole. */
#include <string.h>

#include "cri_int.h"

/* ---- Status --------------------------------------------------------------- */
rpc_code cri_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)req;
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
	if (mgr_network_ready(m, &e) == 0) {
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
	(void)svc;
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
	 * has no config template: the CIDR is only taken note of. */
	ad_info("pod CIDR %s (pod addresses come from the CNI network config)", cidr);
	return RPC_OK;
}
