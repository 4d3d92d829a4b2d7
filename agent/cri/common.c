/* What the CRI handlers share: stored requests unpacked into call memory,
 * the list filters, the state mappings. */
#include <string.h>

#include <jansson.h>

#include "cri_int.h"

static void *call_alloc(void *data, size_t size)
{
	return rpc_call_alloc(data, size);
}

static void call_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

void *cri_unpack_in_call(rpc_call *call, const ProtobufCMessageDescriptor *d, size_t len,
			 const uint8_t *data)
{
	ProtobufCAllocator a = {.alloc = call_alloc, .free = call_free, .allocator_data = call};
	return protobuf_c_message_unpack(d, &a, len, data);
}

rpc_code cri_fail(rpc_call *call, ad_error *e)
{
	rpc_code c = status_call_error(call, e);
	ad_error_free(&e);
	return c;
}

void **cri_copy_map(rpc_call *call, const ProtobufCMessageDescriptor *d, size_t n, void *const *src)
{
	void **v = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	for (size_t i = 0; i < n; i++) {
		Runtime__V1__KeyValue *e = rpc_call_alloc(call, d->sizeof_message);
		protobuf_c_message_init(d, e);
		const Runtime__V1__KeyValue *s = src[i];
		e->key = s->key;
		e->value = s->value;
		v[i] = e;
	}
	return v;
}

/* Every label of the selector is on the object. */
static bool labels_match(size_t n_sel, void *const *sel, size_t n, void *const *labels)
{
	for (size_t i = 0; i < n_sel; i++) {
		const Runtime__V1__KeyValue *s = sel[i];
		bool found = false;
		for (size_t j = 0; j < n && !found; j++) {
			const Runtime__V1__KeyValue *l = labels[j];
			found = strcmp(l->key, s->key) == 0 && strcmp(l->value, s->value) == 0;
		}
		if (!found)
			return false;
	}
	return true;
}

/* The stored config of a listed object (d: its type, PodSandboxConfig or
 * ContainerConfig) if the object passes the filter, else NULL. */
static void *listed_config(rpc_call *call, const cri_list_filter *f, const char *id, int state,
			   const ProtobufCMessageDescriptor *d, size_t len, const uint8_t *data)
{
	if (f->state >= 0 && f->state != state)
		return NULL;
	if (!cri_empty(f->id) && strncmp(id, f->id, strlen(f->id)) != 0)
		return NULL;
	char *cfg = cri_unpack_in_call(call, d, len, data);
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

rpc_code cri_list(rpc_call *call, mgr *m, cri_list_kind kind, const cri_list_filter *f,
		  cri_list_item item, void ***ret_items, size_t *ret_n)
{
	ad_error *e = NULL;
	mgr_pod **pods = NULL;
	mgr_ctr **ctrs = NULL;
	if (kind == CRI_LIST_PODS ? mgr_pod_list(m, &pods, &e) < 0
				  : mgr_ctr_list(m, f->pod_id, &ctrs, &e) < 0)
		return cri_fail(call, e);
	size_t n = 0;
	while (kind == CRI_LIST_PODS ? pods[n] != NULL : ctrs[n] != NULL)
		n++;
	void **items = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
	size_t n_items = 0;
	for (size_t i = 0; i < n; i++) {
		const void *obj;
		void *cfg;
		if (kind == CRI_LIST_PODS) {
			const mgr_pod *p = obj = pods[i];
			cfg = listed_config(call, f, p->id, (int)cri_pod_state(p),
					    &runtime__v1__pod_sandbox_config__descriptor,
					    p->request_len, p->request);
		} else {
			const mgr_ctr *c = obj = ctrs[i];
			cfg = listed_config(call, f, c->id, (int)cri_ctr_state(c),
					    &runtime__v1__container_config__descriptor,
					    c->request_len, c->request);
		}
		if (cfg)
			items[n_items++] = item(call, m, obj, cfg);
	}
	mgr_pods_free(pods);
	mgr_ctrs_free(ctrs);
	*ret_items = items;
	*ret_n = n_items;
	return RPC_OK;
}

Runtime__V1__PodSandboxState cri_pod_state(const mgr_pod *p)
{
	return p->state == MGR_POD_READY ? RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY
					 : RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_NOTREADY;
}

Runtime__V1__ContainerState cri_ctr_state(const mgr_ctr *c)
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

rpc_code cri_id_op(rpc_call *call, cri_service *svc, const char *field, const char *id,
		   int (*op)(mgr *, const char *, ad_error **))
{
	if (cri_empty(id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "%s is required", field);
	ad_error *e = NULL;
	if (op(svc->pods, id, &e) < 0)
		return cri_fail(call, e);
	return RPC_OK;
}

rpc_code cri_get_pod(rpc_call *call, mgr *m, const char *id, mgr_pod **ret,
		     Runtime__V1__PodSandboxConfig **ret_cfg)
{
	if (cri_empty(id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	ad_error *e = NULL;
	if (mgr_pod_get(m, id, ret, &e) < 0)
		return cri_fail(call, e);
	*ret_cfg = cri_unpack_in_call(call, &runtime__v1__pod_sandbox_config__descriptor,
				      (*ret)->request_len, (*ret)->request);
	return RPC_OK;
}

rpc_code cri_get_ctr(rpc_call *call, mgr *m, const char *id, mgr_ctr **ret,
		     Runtime__V1__ContainerConfig **ret_cfg)
{
	if (cri_empty(id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	if (mgr_ctr_get(m, id, ret, &e) < 0)
		return cri_fail(call, e);
	*ret_cfg = cri_unpack_in_call(call, &runtime__v1__container_config__descriptor,
				      (*ret)->request_len, (*ret)->request);
	return RPC_OK;
}

const char *cri_kv_json(rpc_call *call, size_t n, void *const *entries)
{
	json_t *o = json_object();
	for (size_t i = 0; i < n; i++) {
		/* Every CRI map entry is {base, key, value}. */
		const Runtime__V1__KeyValue *kv = entries[i];
		json_object_set_new(o, kv->key, json_string(kv->value));
	}
	char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	const char *copy = rpc_call_strdup(call, s);
	free(s);
	return copy;
}
