/* ExecSync: a command run to completion in a running container. */
#include <string.h>

#include "cri_int.h"

rpc_code cri_exec_sync(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__ExecSyncRequest *q = (const Runtime__V1__ExecSyncRequest *)req;
	if (cri_empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	if (q->n_cmd == 0)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "ExecSync: cmd is required");
	const char **args = rpc_call_alloc(call, (q->n_cmd + 1) * sizeof(char *));
	for (size_t i = 0; i < q->n_cmd; i++)
		args[i] = q->cmd[i];
	args[q->n_cmd] = NULL;
	ad_error *e = NULL;
	rt_exec_result res = {0};
	if (mgr_ctr_exec_sync(m, q->container_id, args, q->timeout, 0, &res, &e) < 0)
		return cri_fail(call, e);
	Runtime__V1__ExecSyncResponse *r = (Runtime__V1__ExecSyncResponse *)resp;
	if (res.timed_out) {
		rt_exec_result_clear(&res);
		return rpc_call_error(call, RPC_DEADLINE_EXCEEDED,
				      "ExecSync in %s: command timed out after %llds",
				      q->container_id, (long long)q->timeout);
	}
	r->stdout.data = rpc_call_alloc(call, res.out_len + 1);
	memcpy(r->stdout.data, res.out ? res.out : "", res.out_len);
	r->stdout.len = res.out_len;
	r->stderr.data = rpc_call_alloc(call, res.err_len + 1);
	memcpy(r->stderr.data, res.err ? res.err : "", res.err_len);
	r->stderr.len = res.err_len;
	r->exit_code = res.exit_code;
	rt_exec_result_clear(&res);
	return RPC_OK;
}
