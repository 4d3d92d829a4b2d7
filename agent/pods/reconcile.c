/* Start-up: the DB is brought in line with what the runtime says. Pods and
 * containers still being created are undone, interrupted starts recorded,
 * exits that happened while agentd was down recorded, running containers'
 * exit watches set again, and the pods' networks checked (or released after
 * a reboot). */
#include <stdio.h>
#include <unistd.h>

#include "pods_int.h"

/* Half-created pods (agentd died in RunPodSandbox) are undone. */
static void pod_reconcile(mgr *m)
{
	mgr_pod **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_pod_query(m, "SELECT " POD_COLS " FROM pods WHERE state = 0", NULL, &v, NULL, &e) <
	    0) {
		ad_warn("reconcile pods: %s", e->message);
		return;
	}
	for (mgr_pod **p = v; *p; p++) {
		ad_error *e2 = NULL;
		ad_info("pod %s: cleaning up an interrupted start", (*p)->id);
		if (mgr_pod_teardown(m, *p, true, &e2) < 0 ||
		    mgr_pod_forget(m, (*p)->id, &e2) < 0)
			ad_warn("pod %s: %s", (*p)->id, e2->message);
		ad_error_free(&e2);
	}
	mgr_pods_free(v);
}

/* A container recorded as created whose shim says it was started: agentd
 * died between the start and its record. It is recorded as running (from
 * when it started), and its exit, if it has one, follows. One whose
 * runtime state is gone (a reboot, or a remove cut short) can never start:
 * it is recorded as exited. */
static int ctr_adopt_started(mgr *m, mgr_ctr *c, ad_error **err)
{
	rt_container *rc = NULL;
	if (rt_open(m->rt, c->id, &rc, NULL) < 0)
		return mgr_ctr_record_state_lost(m, c, err);
	rt_state st = {0};
	int r = rt_get_state(rc, &st, err);
	rt_container_free(rc);
	if (r < 0 || st.started_at <= 0 ||
	    (st.status != RT_STATUS_RUNNING && st.status != RT_STATUS_STOPPED))
		return r;
	ad_info("container %s: recording a start that was interrupted", c->id);
	r = mgr_db_exec(
	    m, err,
	    "UPDATE containers SET state = ?2, started_ns = ?3 WHERE id = ?1 AND state = ?4",
	    "siii", c->id, (int64_t)MGR_CTR_RUNNING, st.started_at, (int64_t)MGR_CTR_CREATED);
	if (r == 0) {
		c->state = MGR_CTR_RUNNING;
		c->started_ns = st.started_at;
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_STARTED);
	}
	return r;
}

static void ctr_reconcile(mgr *m)
{
	mgr_ctr **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_query(m, "SELECT " CTR_COLS " FROM containers", NULL, &v, NULL, &e) < 0) {
		ad_warn("reconcile containers: %s", e->message);
		return;
	}
	for (mgr_ctr **c = v; *c; c++) {
		if ((*c)->state == MGR_CTR_CREATING) {
			ad_info("container %s: cleaning up an interrupted create", (*c)->id);
			mgr_ctr_undo(m, (*c)->id, true);
			continue;
		}
		ad_error *e2 = NULL;
		if ((*c)->state == MGR_CTR_CREATED && ctr_adopt_started(m, *c, &e2) < 0) {
			ad_warn("container %s: %s", (*c)->id, e2->message);
			ad_error_free(&e2);
		}
		rt_container *rc = NULL;
		int exit_fd =
		    (*c)->state == MGR_CTR_RUNNING && rt_open(m->rt, (*c)->id, &rc, NULL) == 0
			? rt_container_exit_fd(rc)
			: -1;
		rt_container_free(rc);
		if (mgr_ctr_refresh(m, *c, &e2) < 0)
			ad_warn("container %s: %s", (*c)->id, e2->message);
		else if ((*c)->state == MGR_CTR_EXITED && (*c)->reason)
			ad_debug("container %s: exited %d", (*c)->id, (*c)->exit_code);
		if ((*c)->state == MGR_CTR_RUNNING) {
			mgr_ctr_watch_exit(m, (*c)->id, exit_fd, -1);
			exit_fd = -1;
		}
		if (exit_fd >= 0)
			close(exit_fd);
		ad_error_free(&e2);
	}
	mgr_ctrs_free(v);
}

/* Pods that should be ready still have their network (the CNI spec's CHECK,
 * as CRI-O runs it when it restores sandboxes): a failure is logged, and
 * PodSandboxStatus verbose reports it too. */
static void pod_check_networks(mgr *m)
{
	mgr_pod **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_pod_list(m, &v, &e) < 0) {
		ad_warn("check pod networks: %s", e->message);
		return;
	}
	for (mgr_pod **p = v; *p; p++) {
		if (!(*p)->cni_net || !(*p)->netns)
			continue;
		ad_error *e2 = NULL;
		if (!cni_netns_alive((*p)->netns)) {
			/* The node rebooted: the namespace, and the pod with it, are
			 * gone; the address and the host side (IPAM lease, port
			 * mappings) go back now rather than at the pod's removal. */
			ad_info("pod %s: its network namespace is gone; releasing its network",
				(*p)->id);
			if (mgr_pod_network_down(m, *p, &e2) < 0 ||
			    cni_netns_remove((*p)->netns, &e2) < 0)
				ad_warn("pod %s: %s", (*p)->id, e2->message);
			ad_error_free(&e2);
			continue;
		}
		if ((*p)->state != MGR_POD_READY)
			continue;
		if (mgr_pod_network_check(m, *p, &e2) < 0 && e2->code != AD_E_UNIMPLEMENTED &&
		    e2->code != AD_E_PRECONDITION)
			ad_warn("%s", e2->message);
		ad_error_free(&e2);
	}
	mgr_pods_free(v);
}

void mgr_reconcile(mgr *m)
{
	pod_reconcile(m);
	ctr_reconcile(m);
	pod_check_networks(m);
}
