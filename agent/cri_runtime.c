/* runtime.v1.RuntimeService on the manager: validate, call the manager,
 * translate its records into CRI messages. Answers carry back the caller's
 * own metadata, labels and annotations from the stored request. */
#include <string.h>

#include <jansson.h>

#include "manager.h"
#include "pbjson.h"
#include "status.h"

#define R(type) Runtime__V1__##type

static void *call_alloc(void *data, size_t size)
{
	return rpc_call_alloc(data, size);
}

static void call_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

/* Unpacks a stored request into call memory: it lives as long as the answer. */
static void *unpack_in_call(rpc_call *call, const ProtobufCMessageDescriptor *d, size_t len,
			    const uint8_t *data)
{
	ProtobufCAllocator a = {.alloc = call_alloc, .free = call_free, .allocator_data = call};
	return protobuf_c_message_unpack(d, &a, len, data);
}

static mgr *get_mgr(rpc_call *call, rpc_code *ret_code)
{
	mgr *m = mgr_default();
	if (!m)
		*ret_code = rpc_call_error(call, RPC_UNAVAILABLE, "the pod manager is not running");
	return m;
}

static void flush_events(void *m)
{
	mgr_events_flush(m);
}

/* The call's container events reach the streams once its reply is on its
 * way: a client that reads the events stream (a kubelet with evented PLEG)
 * then handles the reply first, and the stream's worker (which looks the
 * container up for each event) does not compete with the handler. */
static void events_after_reply(rpc_call *call, mgr *m)
{
	rpc_call_after_reply(call, flush_events, m);
	mgr_events_defer(m);
}

static rpc_code fail(rpc_call *call, ad_error *e)
{
	rpc_code c = status_call_error(call, e);
	ad_error_free(&e);
	return c;
}

static bool empty(const char *s)
{
	return !s || !*s;
}

/* Map entries share one layout ({base, key, value}); `d` is the entry type. */
static void **copy_map(rpc_call *call, const ProtobufCMessageDescriptor *d, size_t n,
		       void *const *src)
{
	void **v = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	for (size_t i = 0; i < n; i++) {
		R(KeyValue) *e = rpc_call_alloc(call, d->sizeof_message);
		protobuf_c_message_init(d, e);
		const R(KeyValue) *s = src[i];
		e->key = s->key;
		e->value = s->value;
		v[i] = e;
	}
	return v;
}

#define COPY_MAP(call, obj, field, desc, src_n, src)                                               \
	do {                                                                                       \
		(obj)->field = (void *)copy_map((call), &(desc), (src_n), (void *const *)(src));   \
		(obj)->n_##field = (src_n);                                                        \
	} while (0)

/* Every label of the selector is on the object. */
static bool labels_match(size_t n_sel, void *const *sel, size_t n, void *const *labels)
{
	for (size_t i = 0; i < n_sel; i++) {
		const R(KeyValue) *s = sel[i];
		bool found = false;
		for (size_t j = 0; j < n && !found; j++) {
			const R(KeyValue) *l = labels[j];
			found = strcmp(l->key, s->key) == 0 && strcmp(l->value, s->value) == 0;
		}
		if (!found)
			return false;
	}
	return true;
}

/* What the four List filters (pods, containers and their stats) share: an id
 * prefix and a label selector. The state, where there is one, is the caller's. */
typedef struct list_filter {
	const char *id;
	size_t n_sel;
	void *const *sel;
} list_filter;

#define LIST_FILTER(f)                                                                             \
	((list_filter){(f) ? (f)->id : NULL, (f) ? (f)->n_label_selector : 0,                      \
		       (f) ? (void *const *)(f)->label_selector : NULL})

/* The stored config of a listed pod or container (d: its type,
 * PodSandboxConfig or ContainerConfig) if the object passes the filter, else
 * NULL. */
static void *listed_config(rpc_call *call, const list_filter *f, const char *id,
			   const ProtobufCMessageDescriptor *d, size_t len, const uint8_t *data)
{
	if (!empty(f->id) && strncmp(id, f->id, strlen(f->id)) != 0)
		return NULL;
	char *cfg = unpack_in_call(call, d, len, data);
	if (!cfg)
		return NULL;
	/* Both types have a map<string, string> labels: found by name, so that
	 * one function serves both. */
	const ProtobufCFieldDescriptor *fd =
	    protobuf_c_message_descriptor_get_field_by_name(d, "labels");
	size_t n = *(const size_t *)(cfg + fd->quantifier_offset);
	void *const *labels = *(void *const *const *)(cfg + fd->offset);
	return labels_match(f->n_sel, f->sel, n, labels) ? cfg : NULL;
}

/* ---- Status --------------------------------------------------------------- */
rpc_code cri_status(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
		    void *userdata)
{
	(void)req;
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	R(StatusResponse) *r = (R(StatusResponse) *)resp;
	R(RuntimeStatus) *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__runtime_status__init(st);
	R(RuntimeCondition) **conds = rpc_call_alloc(call, 2 * sizeof(*conds));
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

/* ---- pods ----------------------------------------------------------------- */
rpc_code cri_run_pod_sandbox(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(RunPodSandboxRequest) *q = (const R(RunPodSandboxRequest) *)req;
	if (!q->config)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "RunPodSandbox: config is required");
	ad_error *e = NULL;
	char *id = NULL;
	if (mgr_pod_run(m, q->config, q->runtime_handler, &id, &e) < 0)
		return fail(call, e);
	((R(RunPodSandboxResponse) *)resp)->pod_sandbox_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

/* The RPCs whose whole request is one id: check it, then call the manager. */
static rpc_code id_op(rpc_call *call, const char *field, const char *id,
		      int (*op)(mgr *, const char *, ad_error **))
{
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	if (empty(id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "%s is required", field);
	ad_error *e = NULL;
	if (op(m, id, &e) < 0)
		return fail(call, e);
	return RPC_OK;
}

static rpc_code pod_id_op(rpc_call *call, const char *id,
			  int (*op)(mgr *, const char *, ad_error **))
{
	return id_op(call, "pod_sandbox_id", id, op);
}

rpc_code cri_stop_pod_sandbox(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			      void *userdata)
{
	(void)resp;
	(void)userdata;
	return pod_id_op(call, ((const R(StopPodSandboxRequest) *)req)->pod_sandbox_id,
			 mgr_pod_stop);
}

rpc_code cri_remove_pod_sandbox(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
				void *userdata)
{
	(void)resp;
	(void)userdata;
	return pod_id_op(call, ((const R(RemovePodSandboxRequest) *)req)->pod_sandbox_id,
			 mgr_pod_remove);
}

static R(PodSandboxState) pod_state(const mgr_pod *p)
{
	return p->state == MGR_POD_READY ? RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY
					 : RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
}

static void add_info(rpc_call *call, mgr *m, R(PodSandboxStatusResponse) * r, const mgr_pod *p,
		     const R(PodSandboxConfig) * cfg)
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
	R(PodSandboxStatusResponse__InfoEntry) *e = rpc_call_alloc(call, sizeof(*e));
	runtime__v1__pod_sandbox_status_response__info_entry__init(e);
	e->key = rpc_call_strdup(call, "info");
	e->value = rpc_call_strdup(call, s);
	free(s);
	r->info = rpc_call_alloc(call, sizeof(*r->info));
	r->info[0] = e;
	r->n_info = 1;
}

rpc_code cri_pod_sandbox_status(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
				void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(PodSandboxStatusRequest) *q = (const R(PodSandboxStatusRequest) *)req;
	if (empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	ad_error *e = NULL;
	mgr_pod *p = NULL;
	if (mgr_pod_get(m, q->pod_sandbox_id, &p, &e) < 0)
		return fail(call, e);
	R(PodSandboxConfig) *cfg = unpack_in_call(
	    call, &runtime__v1__pod_sandbox_config__descriptor, p->config_len, p->config);
	R(PodSandboxStatusResponse) *r = (R(PodSandboxStatusResponse) *)resp;
	R(PodSandboxStatus) *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__pod_sandbox_status__init(st);
	st->id = rpc_call_strdup(call, p->id);
	st->state = pod_state(p);
	st->created_at = p->created_ns;
	st->runtime_handler = rpc_call_strdup(call, p->runtime_handler ? p->runtime_handler : "");
	if (cfg) {
		st->metadata = cfg->metadata;
		COPY_MAP(call, st, labels,
			 runtime__v1__pod_sandbox_status__labels_entry__descriptor, cfg->n_labels,
			 cfg->labels);
		COPY_MAP(call, st, annotations,
			 runtime__v1__pod_sandbox_status__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
		R(LinuxPodSandboxStatus) *ls = rpc_call_alloc(call, sizeof(*ls));
		runtime__v1__linux_pod_sandbox_status__init(ls);
		R(Namespace) *ns = rpc_call_alloc(call, sizeof(*ns));
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
	R(PodSandboxNetworkStatus) *net = rpc_call_alloc(call, sizeof(*net));
	runtime__v1__pod_sandbox_network_status__init(net);
	char **ips = p->state == MGR_POD_READY ? mgr_pod_ips(p) : NULL;
	if (ips && ips[0]) {
		net->ip = rpc_call_strdup(call, ips[0]);
		size_t n = 0;
		while (ips[n + 1])
			n++;
		net->additional_ips = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
		for (size_t i = 0; i < n; i++) {
			R(PodIP) *pip = rpc_call_alloc(call, sizeof(*pip));
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

rpc_code cri_list_pod_sandbox(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			      void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(PodSandboxFilter) *f = ((const R(ListPodSandboxRequest) *)req)->filter;
	ad_error *e = NULL;
	mgr_pod **pods = NULL;
	if (mgr_pod_list(m, &pods, &e) < 0)
		return fail(call, e);
	size_t n = 0;
	while (pods[n])
		n++;
	R(ListPodSandboxResponse) *r = (R(ListPodSandboxResponse) *)resp;
	r->items = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	list_filter lf = LIST_FILTER(f);
	for (size_t i = 0; i < n; i++) {
		mgr_pod *p = pods[i];
		if (f && f->state && f->state->state != pod_state(p))
			continue;
		R(PodSandboxConfig) *cfg =
		    listed_config(call, &lf, p->id, &runtime__v1__pod_sandbox_config__descriptor,
				  p->config_len, p->config);
		if (!cfg)
			continue;
		R(PodSandbox) *it = rpc_call_alloc(call, sizeof(*it));
		runtime__v1__pod_sandbox__init(it);
		it->id = rpc_call_strdup(call, p->id);
		it->metadata = cfg->metadata;
		it->state = pod_state(p);
		it->created_at = p->created_ns;
		it->runtime_handler =
		    rpc_call_strdup(call, p->runtime_handler ? p->runtime_handler : "");
		COPY_MAP(call, it, labels, runtime__v1__pod_sandbox__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		COPY_MAP(call, it, annotations,
			 runtime__v1__pod_sandbox__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
		r->items[r->n_items++] = it;
	}
	mgr_pods_free(pods);
	return RPC_OK;
}

/* ---- containers --------------------------------------------------------------- */
rpc_code cri_create_container(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			      void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(CreateContainerRequest) *q = (const R(CreateContainerRequest) *)req;
	events_after_reply(call, m);
	if (empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	if (!q->config)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "CreateContainer: config is required");
	ad_error *e = NULL;
	char *id = NULL;
	if (mgr_ctr_create(m, q->pod_sandbox_id, q->config, &id, &e) < 0)
		return fail(call, e);
	((R(CreateContainerResponse) *)resp)->container_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

static rpc_code ctr_id_op(rpc_call *call, const char *id,
			  int (*op)(mgr *, const char *, ad_error **))
{
	mgr *m = mgr_default();
	if (m)
		events_after_reply(call, m);
	return id_op(call, "container_id", id, op);
}

rpc_code cri_start_container(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	(void)resp;
	(void)userdata;
	return ctr_id_op(call, ((const R(StartContainerRequest) *)req)->container_id,
			 mgr_ctr_start);
}

rpc_code cri_remove_container(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			      void *userdata)
{
	(void)resp;
	(void)userdata;
	return ctr_id_op(call, ((const R(RemoveContainerRequest) *)req)->container_id,
			 mgr_ctr_remove);
}

rpc_code cri_stop_container(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			    void *userdata)
{
	(void)resp;
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(StopContainerRequest) *q = (const R(StopContainerRequest) *)req;
	if (empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	if (mgr_ctr_stop(m, q->container_id, q->timeout, &e) < 0)
		return fail(call, e);
	return RPC_OK;
}

static R(ContainerState) ctr_state(const mgr_ctr *c)
{
	switch (c->state) {
	case MGR_CTR_CREATED:
		return RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED;
	case MGR_CTR_RUNNING:
		return RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
	case MGR_CTR_EXITED:
		return RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
	default:
		return RUNTIME__V1__CONTAINER_STATE__CONTAINER_UNKNOWN;
	}
}

static R(ImageSpec) * image_spec(rpc_call *call, const mgr_ctr *c, const R(ContainerConfig) * cfg)
{
	R(ImageSpec) *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__image_spec__init(s);
	s->image = rpc_call_strdup(call, c->image_id ? c->image_id : "");
	s->user_specified_image = rpc_call_strdup(call, c->image ? c->image : "");
	if (cfg && cfg->image) {
		s->annotations = cfg->image->annotations;
		s->n_annotations = cfg->image->n_annotations;
	}
	return s;
}

rpc_code cri_list_containers(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(ContainerFilter) *f = ((const R(ListContainersRequest) *)req)->filter;
	ad_error *e = NULL;
	mgr_ctr **v = NULL;
	if (mgr_ctr_list(m, f && !empty(f->pod_sandbox_id) ? f->pod_sandbox_id : NULL, &v, &e) < 0)
		return fail(call, e);
	size_t n = 0;
	while (v[n])
		n++;
	R(ListContainersResponse) *r = (R(ListContainersResponse) *)resp;
	r->containers = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	list_filter lf = LIST_FILTER(f);
	for (size_t i = 0; i < n; i++) {
		mgr_ctr *c = v[i];
		if (f && f->state && f->state->state != ctr_state(c))
			continue;
		R(ContainerConfig) *cfg =
		    listed_config(call, &lf, c->id, &runtime__v1__container_config__descriptor,
				  c->config_len, c->config);
		if (!cfg)
			continue;
		R(Container) *it = rpc_call_alloc(call, sizeof(*it));
		runtime__v1__container__init(it);
		it->id = rpc_call_strdup(call, c->id);
		it->pod_sandbox_id = rpc_call_strdup(call, c->pod_id);
		it->metadata = cfg->metadata;
		it->image = image_spec(call, c, cfg);
		it->image_ref = rpc_call_strdup(call, c->image_ref ? c->image_ref : "");
		it->image_id = rpc_call_strdup(call, c->image_id ? c->image_id : "");
		it->state = ctr_state(c);
		it->created_at = c->created_ns;
		COPY_MAP(call, it, labels, runtime__v1__container__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		COPY_MAP(call, it, annotations,
			 runtime__v1__container__annotations_entry__descriptor, cfg->n_annotations,
			 cfg->annotations);
		r->containers[r->n_containers++] = it;
	}
	mgr_ctrs_free(v);
	return RPC_OK;
}

rpc_code cri_container_status(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			      void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(ContainerStatusRequest) *q = (const R(ContainerStatusRequest) *)req;
	if (empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	mgr_ctr *c = NULL;
	if (mgr_ctr_get(m, q->container_id, &c, &e) < 0)
		return fail(call, e);
	R(ContainerConfig) *cfg = unpack_in_call(call, &runtime__v1__container_config__descriptor,
						 c->config_len, c->config);
	R(ContainerStatus) *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__container_status__init(st);
	st->id = rpc_call_strdup(call, c->id);
	st->state = ctr_state(c);
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
		COPY_MAP(call, st, labels, runtime__v1__container_status__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		COPY_MAP(call, st, annotations,
			 runtime__v1__container_status__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
		st->mounts = cfg->mounts;
		st->n_mounts = cfg->n_mounts;
		st->stop_signal = cfg->stop_signal;
		/* As applied: UpdateContainerResources rewrites the stored ones. */
		if (cfg->linux && cfg->linux->resources) {
			R(ContainerResources) *res = rpc_call_alloc(call, sizeof(*res));
			runtime__v1__container_resources__init(res);
			res->linux = cfg->linux->resources;
			st->resources = res;
		}
	}
	mgr_user u;
	if (mgr_ctr_user(m, c, &u, &e) == 0) {
		R(LinuxContainerUser) *lu = rpc_call_alloc(call, sizeof(*lu));
		runtime__v1__linux_container_user__init(lu);
		lu->uid = u.uid;
		lu->gid = u.gid;
		lu->supplemental_groups = rpc_call_alloc(call, (u.n_groups + 1) * sizeof(int64_t));
		for (size_t i = 0; i < u.n_groups; i++)
			lu->supplemental_groups[i] = u.groups[i];
		lu->n_supplemental_groups = u.n_groups;
		R(ContainerUser) *cu = rpc_call_alloc(call, sizeof(*cu));
		runtime__v1__container_user__init(cu);
		cu->linux = lu;
		st->user = cu;
	}
	ad_error_free(&e);
	R(ContainerStatusResponse) *r = (R(ContainerStatusResponse) *)resp;
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
		R(ContainerStatusResponse__InfoEntry) *ie = rpc_call_alloc(call, sizeof(*ie));
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

rpc_code cri_exec_sync(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
		       void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(ExecSyncRequest) *q = (const R(ExecSyncRequest) *)req;
	if (empty(q->container_id))
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
		return fail(call, e);
	R(ExecSyncResponse) *r = (R(ExecSyncResponse) *)resp;
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

/* ---- stats, resources, logs, runtime config ------------------------------------ */
static R(UInt64Value) * u64(rpc_call *call, uint64_t v)
{
	R(UInt64Value) *p = rpc_call_alloc(call, sizeof(*p));
	runtime__v1__uint64_value__init(p);
	p->value = v;
	return p;
}

/* A container's stats; usage only while it runs (an exited one has no cgroup). */
static R(ContainerStats) *
    ctr_stats(rpc_call *call, mgr *m, const mgr_ctr *c, const R(ContainerConfig) * cfg)
{
	R(ContainerStats) *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__container_stats__init(s);
	R(ContainerAttributes) *a = rpc_call_alloc(call, sizeof(*a));
	runtime__v1__container_attributes__init(a);
	a->id = rpc_call_strdup(call, c->id);
	if (cfg) {
		a->metadata = cfg->metadata;
		COPY_MAP(call, a, labels,
			 runtime__v1__container_attributes__labels_entry__descriptor, cfg->n_labels,
			 cfg->labels);
		COPY_MAP(call, a, annotations,
			 runtime__v1__container_attributes__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
	}
	s->attributes = a;
	ad_error *e = NULL;
	uint64_t bytes, inodes;
	const char *mountpoint;
	if (mgr_ctr_fs_usage(m, c->id, &bytes, &inodes, &mountpoint, &e) == 0) {
		R(FilesystemUsage) *fs = rpc_call_alloc(call, sizeof(*fs));
		runtime__v1__filesystem_usage__init(fs);
		fs->timestamp = ad_now_ns();
		R(FilesystemIdentifier) *fid = rpc_call_alloc(call, sizeof(*fid));
		runtime__v1__filesystem_identifier__init(fid);
		fid->mountpoint = rpc_call_strdup(call, mountpoint);
		fs->fs_id = fid;
		fs->used_bytes = u64(call, bytes);
		fs->inodes_used = u64(call, inodes);
		s->writable_layer = fs;
	}
	ad_error_free(&e);
	rt_stats st;
	if (c->state != MGR_CTR_RUNNING || mgr_ctr_stats(m, c->id, &st, &e) < 0) {
		ad_error_free(&e);
		return s;
	}
	R(CpuUsage) *cpu = rpc_call_alloc(call, sizeof(*cpu));
	runtime__v1__cpu_usage__init(cpu);
	cpu->timestamp = st.timestamp_ns;
	cpu->usage_core_nano_seconds = u64(call, st.cpu_usage_ns);
	s->cpu = cpu;
	R(MemoryUsage) *mem = rpc_call_alloc(call, sizeof(*mem));
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

rpc_code cri_container_stats(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			     void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(ContainerStatsRequest) *q = (const R(ContainerStatsRequest) *)req;
	if (empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	mgr_ctr *c = NULL;
	if (mgr_ctr_get(m, q->container_id, &c, &e) < 0)
		return fail(call, e);
	R(ContainerConfig) *cfg = unpack_in_call(call, &runtime__v1__container_config__descriptor,
						 c->config_len, c->config);
	((R(ContainerStatsResponse) *)resp)->stats = ctr_stats(call, m, c, cfg);
	mgr_ctr_free(c);
	return RPC_OK;
}

rpc_code cri_list_container_stats(rpc_call *call, const ProtobufCMessage *req,
				  ProtobufCMessage *resp, void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(ContainerStatsFilter) *f = ((const R(ListContainerStatsRequest) *)req)->filter;
	ad_error *e = NULL;
	mgr_ctr **v = NULL;
	if (mgr_ctr_list(m, f && !empty(f->pod_sandbox_id) ? f->pod_sandbox_id : NULL, &v, &e) < 0)
		return fail(call, e);
	size_t n = 0;
	while (v[n])
		n++;
	R(ListContainerStatsResponse) *r = (R(ListContainerStatsResponse) *)resp;
	r->stats = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	list_filter lf = LIST_FILTER(f);
	for (size_t i = 0; i < n; i++) {
		mgr_ctr *c = v[i];
		R(ContainerConfig) *cfg =
		    listed_config(call, &lf, c->id, &runtime__v1__container_config__descriptor,
				  c->config_len, c->config);
		if (cfg)
			r->stats[r->n_stats++] = ctr_stats(call, m, c, cfg);
	}
	mgr_ctrs_free(v);
	return RPC_OK;
}

rpc_code cri_update_container_resources(rpc_call *call, const ProtobufCMessage *req,
					ProtobufCMessage *resp, void *userdata)
{
	(void)resp;
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(UpdateContainerResourcesRequest) *q =
	    (const R(UpdateContainerResourcesRequest) *)req;
	if (empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	if (!q->linux)
		return RPC_OK;
	ad_error *e = NULL;
	if (mgr_ctr_update(m, q->container_id, q->linux, &e) < 0)
		return fail(call, e);
	return RPC_OK;
}

rpc_code cri_reopen_container_log(rpc_call *call, const ProtobufCMessage *req,
				  ProtobufCMessage *resp, void *userdata)
{
	(void)resp;
	(void)userdata;
	return ctr_id_op(call, ((const R(ReopenContainerLogRequest) *)req)->container_id,
			 mgr_ctr_reopen_log);
}

rpc_code cri_runtime_config(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			    void *userdata)
{
	(void)req;
	(void)userdata;
	R(LinuxRuntimeConfiguration) *l = rpc_call_alloc(call, sizeof(*l));
	runtime__v1__linux_runtime_configuration__init(l);
	/* The runtime manages cgroups through the filesystem, never systemd. */
	l->cgroup_driver = RUNTIME__V1__CGROUP_DRIVER__CGROUPFS;
	((R(RuntimeConfigResponse) *)resp)->linux = l;
	return RPC_OK;
}

/* ---- GetContainerEvents ------------------------------------------------------------ */
/* One event with the container's and its pod's status at sending time (the
 * objects may be gone already: a deleted event carries ids only). Built on
 * the stack and in `owned`: a stream can run for days, call memory would
 * only grow. */
static int send_event(rpc_call *call, mgr *m, const mgr_event *ev)
{
	R(ContainerEventResponse) r = RUNTIME__V1__CONTAINER_EVENT_RESPONSE__INIT;
	r.container_id = (char *)ev->id;
	r.container_event_type = (R(ContainerEventType))ev->type;
	r.created_at = ev->at_ns;

	R(PodSandboxStatus) ps = RUNTIME__V1__POD_SANDBOX_STATUS__INIT;
	R(PodSandboxMetadata) pmd = RUNTIME__V1__POD_SANDBOX_METADATA__INIT;
	R(ContainerStatus) cs = RUNTIME__V1__CONTAINER_STATUS__INIT;
	R(ContainerStatus) * csv[1] = {&cs};
	R(ContainerMetadata) cmd = RUNTIME__V1__CONTAINER_METADATA__INIT;
	mgr_pod *p = NULL;
	mgr_ctr *c = NULL;
	ad_error *e = NULL;
	if (ev->pod_id[0] && mgr_pod_get(m, ev->pod_id, &p, &e) == 0) {
		ps.id = p->id;
		ps.state = pod_state(p);
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
		cs.state = ctr_state(c);
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

rpc_code cri_get_container_events(rpc_call *call, const ProtobufCMessage *req,
				  ProtobufCMessage *resp, void *userdata)
{
	(void)req;
	(void)resp;
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
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

/* ---- PodSandboxStats ----------------------------------------------------------------- */
/* The pod's usage: its containers' (listed too) plus the infra process's. */
static R(PodSandboxStats) *
    pod_stats(rpc_call *call, mgr *m, const mgr_pod *p, const R(PodSandboxConfig) * cfg)
{
	R(PodSandboxStats) *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__pod_sandbox_stats__init(s);
	R(PodSandboxAttributes) *a = rpc_call_alloc(call, sizeof(*a));
	runtime__v1__pod_sandbox_attributes__init(a);
	a->id = rpc_call_strdup(call, p->id);
	if (cfg) {
		a->metadata = cfg->metadata;
		COPY_MAP(call, a, labels,
			 runtime__v1__pod_sandbox_attributes__labels_entry__descriptor,
			 cfg->n_labels, cfg->labels);
		COPY_MAP(call, a, annotations,
			 runtime__v1__pod_sandbox_attributes__annotations_entry__descriptor,
			 cfg->n_annotations, cfg->annotations);
	}
	s->attributes = a;
	R(LinuxPodSandboxStats) *l = rpc_call_alloc(call, sizeof(*l));
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
	mgr_ctr **v = NULL;
	if (mgr_ctr_list(m, p->id, &v, &e) == 0) {
		size_t n = 0;
		while (v[n])
			n++;
		l->containers = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
		for (size_t i = 0; i < n; i++) {
			R(ContainerConfig) *cc =
			    unpack_in_call(call, &runtime__v1__container_config__descriptor,
					   v[i]->config_len, v[i]->config);
			R(ContainerStats) *cs = ctr_stats(call, m, v[i], cc);
			l->containers[l->n_containers++] = cs;
			if (cs->cpu && cs->cpu->usage_core_nano_seconds)
				cpu += cs->cpu->usage_core_nano_seconds->value;
			if (cs->memory) {
				ws += cs->memory->working_set_bytes->value;
				usage += cs->memory->usage_bytes->value;
				rss += cs->memory->rss_bytes->value;
			}
		}
		mgr_ctrs_free(v);
	}
	ad_error_free(&e);
	for (size_t i = 0; i < l->n_containers; i++) {
		rt_stats st;
		/* Process counts are not in ContainerStats: read them again. */
		if (l->containers[i]->cpu &&
		    mgr_ctr_stats(m, l->containers[i]->attributes->id, &st, &e) == 0)
			procs += st.pids_current;
		ad_error_free(&e);
	}
	R(CpuUsage) *c = rpc_call_alloc(call, sizeof(*c));
	runtime__v1__cpu_usage__init(c);
	c->timestamp = infra.timestamp_ns;
	c->usage_core_nano_seconds = u64(call, cpu);
	l->cpu = c;
	R(MemoryUsage) *mu = rpc_call_alloc(call, sizeof(*mu));
	runtime__v1__memory_usage__init(mu);
	mu->timestamp = infra.timestamp_ns;
	mu->working_set_bytes = u64(call, ws);
	mu->usage_bytes = u64(call, usage);
	mu->rss_bytes = u64(call, rss);
	l->memory = mu;
	cni_if_stats *ifs = NULL;
	size_t n_ifs = 0;
	if (mgr_pod_net_stats(m, p, &ifs, &n_ifs, &e) == 0) {
		R(NetworkUsage) *nu = rpc_call_alloc(call, sizeof(*nu));
		runtime__v1__network_usage__init(nu);
		nu->timestamp = infra.timestamp_ns;
		nu->interfaces = rpc_call_alloc(call, (n_ifs + 1) * sizeof(void *));
		for (size_t i = 0; i < n_ifs; i++) {
			/* Loopback traffic never leaves the pod: kubelet and cAdvisor skip it. */
			if (strcmp(ifs[i].name, "lo") == 0)
				continue;
			R(NetworkInterfaceUsage) *iu = rpc_call_alloc(call, sizeof(*iu));
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
	R(ProcessUsage) *pu = rpc_call_alloc(call, sizeof(*pu));
	runtime__v1__process_usage__init(pu);
	pu->timestamp = infra.timestamp_ns;
	pu->process_count = u64(call, procs);
	l->process = pu;
	return s;
}

rpc_code cri_pod_sandbox_stats(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			       void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(PodSandboxStatsRequest) *q = (const R(PodSandboxStatsRequest) *)req;
	if (empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	ad_error *e = NULL;
	mgr_pod *p = NULL;
	if (mgr_pod_get(m, q->pod_sandbox_id, &p, &e) < 0)
		return fail(call, e);
	R(PodSandboxConfig) *cfg = unpack_in_call(
	    call, &runtime__v1__pod_sandbox_config__descriptor, p->config_len, p->config);
	((R(PodSandboxStatsResponse) *)resp)->stats = pod_stats(call, m, p, cfg);
	mgr_pod_free(p);
	return RPC_OK;
}

rpc_code cri_list_pod_sandbox_stats(rpc_call *call, const ProtobufCMessage *req,
				    ProtobufCMessage *resp, void *userdata)
{
	(void)userdata;
	rpc_code code;
	mgr *m = get_mgr(call, &code);
	if (!m)
		return code;
	const R(PodSandboxStatsFilter) *f = ((const R(ListPodSandboxStatsRequest) *)req)->filter;
	ad_error *e = NULL;
	mgr_pod **pods = NULL;
	if (mgr_pod_list(m, &pods, &e) < 0)
		return fail(call, e);
	size_t n = 0;
	while (pods[n])
		n++;
	R(ListPodSandboxStatsResponse) *r = (R(ListPodSandboxStatsResponse) *)resp;
	r->stats = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	list_filter lf = LIST_FILTER(f);
	for (size_t i = 0; i < n; i++) {
		mgr_pod *p = pods[i];
		R(PodSandboxConfig) *cfg =
		    listed_config(call, &lf, p->id, &runtime__v1__pod_sandbox_config__descriptor,
				  p->config_len, p->config);
		if (cfg)
			r->stats[r->n_stats++] = pod_stats(call, m, p, cfg);
	}
	mgr_pods_free(pods);
	return RPC_OK;
}

rpc_code cri_update_runtime_config(rpc_call *call, const ProtobufCMessage *req,
				   ProtobufCMessage *resp, void *userdata)
{
	(void)resp;
	(void)userdata;
	const R(UpdateRuntimeConfigRequest) *q = (const R(UpdateRuntimeConfigRequest) *)req;
	const char *cidr = q->runtime_config && q->runtime_config->network_config
			       ? q->runtime_config->network_config->pod_cidr
			       : NULL;
	if (empty(cidr))
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
