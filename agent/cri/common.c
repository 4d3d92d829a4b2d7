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

void *cri_listed_config(rpc_call *call, const cri_list_filter *f, const char *id,
			const ProtobufCMessageDescriptor *d, size_t len, const uint8_t *data)
{
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
