/* CreateContainer, StartContainer, StopContainer, RemoveContainer,
 * ListContainers, ContainerStatus, UpdateContainerResources,
 * ReopenContainerLog. */
#include <string.h>

#include <jansson.h>

#include "pbjson.h"
#include "cri_int.h"

/* ---- containers --------------------------------------------------------------- */
rpc_code cri_create_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__CreateContainerRequest *q = (const Runtime__V1__CreateContainerRequest *)req;
	if (cri_empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	if (!q->config)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "CreateContainer: config is required");
	ad_error *e = NULL;
	char *id = NULL;
	if (mgr_ctr_create(m, q->pod_sandbox_id, q->config, &id, &e) < 0)
		return cri_fail(call, e);
	((Runtime__V1__CreateContainerResponse *)resp)->container_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

rpc_code cri_start_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "container_id", ((const Runtime__V1__StartContainerRequest *)req)->container_id,
			 mgr_ctr_start);
}

rpc_code cri_remove_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "container_id", ((const Runtime__V1__RemoveContainerRequest *)req)->container_id,
			 mgr_ctr_remove);
}

rpc_code cri_stop_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	mgr *m = svc->pods;
	const Runtime__V1__StopContainerRequest *q = (const Runtime__V1__StopContainerRequest *)req;
	if (cri_empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	if (mgr_ctr_stop(m, q->container_id, q->timeout, &e) < 0)
		return cri_fail(call, e);
	return RPC_OK;
}

static Runtime__V1__ImageSpec *image_spec(rpc_call *call, const mgr_ctr *c, const Runtime__V1__ContainerConfig *cfg)
{
	Runtime__V1__ImageSpec *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__image_spec__init(s);
	s->image = rpc_call_strdup(call, c->image_id ? c->image_id : "");
	s->user_specified_image = rpc_call_strdup(call, c->image ? c->image : "");
	if (cfg && cfg->image) {
		s->annotations = cfg->image->annotations;
		s->n_annotations = cfg->image->n_annotations;
	}
	return s;
}

rpc_code cri_list_containers(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__ContainerFilter *f = ((const Runtime__V1__ListContainersRequest *)req)->filter;
	ad_error *e = NULL;
	mgr_ctr **v = NULL;
	if (mgr_ctr_list(m, f && !cri_empty(f->pod_sandbox_id) ? f->pod_sandbox_id : NULL, &v, &e) < 0)
		return cri_fail(call, e);
	size_t n = 0;
	while (v[n])
		n++;
	Runtime__V1__ListContainersResponse *r = (Runtime__V1__ListContainersResponse *)resp;
	r->containers = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	cri_list_filter lf = CRI_LIST_FILTER(f);
	for (size_t i = 0; i < n; i++) {
		mgr_ctr *c = v[i];
		if (f && f->state && f->state->state != cri_ctr_state(c))
			continue;
		Runtime__V1__ContainerConfig *cfg =
		    cri_listed_config(call, &lf, c->id, &runtime__v1__container_config__descriptor,
				  c->config_len, c->config);
		if (!cfg)
			continue;
		Runtime__V1__Container *it = rpc_call_alloc(call, sizeof(*it));
		runtime__v1__container__init(it);
		it->id = rpc_call_strdup(call, c->id);
		it->pod_sandbox_id = rpc_call_strdup(call, c->pod_id);
		it->metadata = cfg->metadata;
		it->image = image_spec(call, c, cfg);
		it->image_ref = rpc_call_strdup(call, c->image_ref ? c->image_ref : "");
		it->image_id = rpc_call_strdup(call, c->image_id ? c->image_id : "");
		it->state = cri_ctr_state(c);
		it->created_at = c->created_ns;
		CRI_COPY_MAP(call, it, labels, runtime__v1__container__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		CRI_COPY_MAP(call, it, annotations,
			 runtime__v1__container__annotations_entry__descriptor, cfg->n_annotations,
			 cfg->annotations);
		r->containers[r->n_containers++] = it;
	}
	mgr_ctrs_free(v);
	return RPC_OK;
}

rpc_code cri_container_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__ContainerStatusRequest *q = (const Runtime__V1__ContainerStatusRequest *)req;
	if (cri_empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	mgr_ctr *c = NULL;
	if (mgr_ctr_get(m, q->container_id, &c, &e) < 0)
		return cri_fail(call, e);
	Runtime__V1__ContainerConfig *cfg = cri_unpack_in_call(call, &runtime__v1__container_config__descriptor,
						 c->config_len, c->config);
	Runtime__V1__ContainerStatus *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__container_status__init(st);
	st->id = rpc_call_strdup(call, c->id);
	st->state = cri_ctr_state(c);
	st->created_at = c->created_ns;
	st->started_at = c->started_ns;
	st->finished_at = c->finished_ns;
	st->exit_code = c->exit_code;
	st->image = image_spec(call, c, cfg);
	st->image_ref = rpc_call_strdup(call, c->image_ref ? c->image_ref : "");
	st->image_id = rpc_call_strdup(call, c->image_id ? c->image_id : "");
	st->reason = rpc_call_strdup(call, c->reason ? c->reason : "");
	st->message = rpc_call_strdup(call, c->message ? c->message : "");
	st->log_path = rpc_call_strdup(call, c->log_path ? c->log_path : "");
	if (cfg) {
		st->metadata = cfg->metadata;
		CRI_COPY_MAP(call, st, labels, runtime__v1__container_status__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		CRI_COPY_MAP(call, st, annotations,
			 runtime__v1__container_status__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
		st->mounts = cfg->mounts;
		st->n_mounts = cfg->n_mounts;
		st->stop_signal = cfg->stop_signal;
		/* As applied: UpdateContainerResources rewrites the stored ones. */
		if (cfg->linux && cfg->linux->resources) {
			Runtime__V1__ContainerResources *res = rpc_call_alloc(call, sizeof(*res));
			runtime__v1__container_resources__init(res);
			res->linux = cfg->linux->resources;
			st->resources = res;
		}
	}
	mgr_user u;
	if (mgr_ctr_user(m, c, &u, &e) == 0) {
		Runtime__V1__LinuxContainerUser *lu = rpc_call_alloc(call, sizeof(*lu));
		runtime__v1__linux_container_user__init(lu);
		lu->uid = u.uid;
		lu->gid = u.gid;
		lu->supplemental_groups = rpc_call_alloc(call, (u.n_groups + 1) * sizeof(int64_t));
		for (size_t i = 0; i < u.n_groups; i++)
			lu->supplemental_groups[i] = u.groups[i];
		lu->n_supplemental_groups = u.n_groups;
		Runtime__V1__ContainerUser *cu = rpc_call_alloc(call, sizeof(*cu));
		runtime__v1__container_user__init(cu);
		cu->linux = lu;
		st->user = cu;
	}
	ad_error_free(&e);
	Runtime__V1__ContainerStatusResponse *r = (Runtime__V1__ContainerStatusResponse *)resp;
	r->status = st;
	if (q->verbose) {
		/* The keys containerd and CRI-O use: sandboxID, pid, runtimeSpec,
		 * config. */
		pid_t pid = 0;
		char *spec = mgr_ctr_spec_json(m, c, &pid);
		json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s*}", "id", c->id, "sandboxID",
				      c->pod_id, "pid", (int)pid, "image", c->image ? c->image : "",
				      "imageId", c->image_id ? c->image_id : "", "logPath",
				      c->log_path);
		if (spec)
			json_object_set_new(o, "runtimeSpec", json_loads(spec, 0, NULL));
		free(spec);
		/* The config as CreateContainer got it (after live updates of its
		 * resources), in containerd's info.config form. */
		if (cfg)
			json_object_set_new(o, "config",
					    pbjson_from_message(&cfg->base, PBJSON_GO));
		char *s = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		Runtime__V1__ContainerStatusResponse__InfoEntry *ie = rpc_call_alloc(call, sizeof(*ie));
		runtime__v1__container_status_response__info_entry__init(ie);
		ie->key = rpc_call_strdup(call, "info");
		ie->value = rpc_call_strdup(call, s);
		free(s);
		r->info = rpc_call_alloc(call, sizeof(*r->info));
		r->info[0] = ie;
		r->n_info = 1;
	}
	mgr_ctr_free(c);
	return RPC_OK;
}

rpc_code cri_update_container_resources(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	mgr *m = svc->pods;
	const Runtime__V1__UpdateContainerResourcesRequest *q =
	    (const Runtime__V1__UpdateContainerResourcesRequest *)req;
	if (cri_empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	if (!q->linux)
		return RPC_OK;
	ad_error *e = NULL;
	if (mgr_ctr_update(m, q->container_id, q->linux, &e) < 0)
		return cri_fail(call, e);
	return RPC_OK;
}

rpc_code cri_reopen_container_log(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "container_id", ((const Runtime__V1__ReopenContainerLogRequest *)req)->container_id,
			 mgr_ctr_reopen_log);
}
