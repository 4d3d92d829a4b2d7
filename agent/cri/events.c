/* GetContainerEvents: the pod manager's event ring as a stream. */
#include "cri_int.h"

/* ---- GetContainerEvents ------------------------------------------------------------ */
/* One event with the container's and its pod's status at sending time (the
 * objects may be gone already: a deleted event carries ids only). Built on
 * the stack and in `owned`: a stream can run for days, call memory would
 * only grow. */
static int send_event(rpc_call *call, mgr *m, const mgr_event *ev)
{
	Runtime__V1__ContainerEventResponse r = RUNTIME__V1__CONTAINER_EVENT_RESPONSE__INIT;
	r.container_id = (char *)ev->id;
	r.container_event_type = (Runtime__V1__ContainerEventType)ev->type;
	r.created_at = ev->at_ns;

	Runtime__V1__PodSandboxStatus ps = RUNTIME__V1__POD_SANDBOX_STATUS__INIT;
	Runtime__V1__PodSandboxMetadata pmd = RUNTIME__V1__POD_SANDBOX_METADATA__INIT;
	Runtime__V1__ContainerStatus cs = RUNTIME__V1__CONTAINER_STATUS__INIT;
	Runtime__V1__ContainerStatus *csv[1] = {&cs};
	Runtime__V1__ContainerMetadata cmd = RUNTIME__V1__CONTAINER_METADATA__INIT;
	mgr_pod *p = NULL;
	mgr_ctr *c = NULL;
	ad_error *e = NULL;
	if (ev->pod_id[0] && mgr_pod_get(m, ev->pod_id, &p, &e) == 0) {
		ps.id = p->id;
		ps.state = cri_pod_state(p);
		ps.created_at = p->created_ns;
		pmd.name = p->name;
		pmd.namespace_ = p->namespace_;
		pmd.uid = p->uid;
		pmd.attempt = p->attempt;
		ps.metadata = &pmd;
		r.pod_sandbox_status = &ps;
	}
	ad_error_free(&e);
	if (ev->type != MGR_EV_DELETED && mgr_ctr_get(m, ev->id, &c, &e) == 0) {
		cs.id = c->id;
		cmd.name = c->name;
		cmd.attempt = c->attempt;
		cs.metadata = &cmd;
		cs.state = cri_ctr_state(c);
		cs.created_at = c->created_ns;
		cs.started_at = c->started_ns;
		cs.finished_at = c->finished_ns;
		cs.exit_code = c->exit_code;
		cs.image_ref = c->image_ref ? c->image_ref : (char *)"";
		cs.image_id = c->image_id ? c->image_id : (char *)"";
		cs.reason = c->reason ? c->reason : (char *)"";
		cs.message = c->message ? c->message : (char *)"";
		cs.log_path = c->log_path ? c->log_path : (char *)"";
		r.containers_statuses = csv;
		r.n_containers_statuses = 1;
	}
	ad_error_free(&e);
	int rc = rpc_call_send(call, &r.base);
	mgr_ctr_free(c);
	mgr_pod_free(p);
	return rc;
}

rpc_code cri_get_container_events(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)req;
	(void)resp;
	mgr *m = svc->pods;
	uint64_t cursor = mgr_events_cursor(m);
	mgr_event evs[16];
	while (!rpc_call_cancelled(call)) {
		size_t n = mgr_events_wait(m, &cursor, evs, 16, 200);
		for (size_t i = 0; i < n; i++)
			if (send_event(call, m, &evs[i]) < 0)
				return RPC_CANCELLED;
	}
	return RPC_CANCELLED;
}
