/* cri_int.h — what the files of agent/cri share. Private to agent/cri. */
#ifndef AGENTD_CRI_INT_H
#define AGENTD_CRI_INT_H

#include "cri.h"
#include "cri/api.pb-c.h"

/* A CRI handler: `svc` has what `needs` asks for (the dispatcher answers
 * UNAVAILABLE otherwise); req and resp are the method's message types. */
typedef rpc_code (*cri_handler)(rpc_call *call, cri_service *svc, const void *req, void *resp);

typedef enum cri_needs {
	CRI_NEEDS_NOTHING,
	CRI_NEEDS_PODS,
	CRI_NEEDS_IMAGES,
} cri_needs;

typedef struct cri_rpc {
	const char *method; /* "runtime.v1.RuntimeService/Version" */
	cri_handler run;
	cri_needs needs;
	bool on_loop; /* pure computation: answered on the loop thread */
	/* The container events the call publishes reach the streams once its
	 * reply is on its way (see service.c). */
	bool events_after_reply;
} cri_rpc;

/* ---- handlers, one file per group ---- */
/* runtime.c */
rpc_code cri_status(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_runtime_config(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_update_runtime_config(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* sandbox.c */
rpc_code cri_run_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_stop_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_remove_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_pod_sandbox_status(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_list_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* containers.c */
rpc_code cri_create_container(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_start_container(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_stop_container(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_remove_container(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_list_containers(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_container_status(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_update_container_resources(rpc_call *call, cri_service *svc, const void *req,
					void *resp);
rpc_code cri_reopen_container_log(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* exec.c */
rpc_code cri_exec_sync(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* streaming.c */
rpc_code cri_exec(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_attach(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_port_forward(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* stats.c */
rpc_code cri_container_stats(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_list_container_stats(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_pod_sandbox_stats(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_list_pod_sandbox_stats(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* metrics.c */
rpc_code cri_list_metric_descriptors(rpc_call *call, cri_service *svc, const void *req,
				     void *resp);
rpc_code cri_list_pod_sandbox_metrics(rpc_call *call, cri_service *svc, const void *req,
				      void *resp);
/* events.c */
rpc_code cri_get_container_events(rpc_call *call, cri_service *svc, const void *req, void *resp);
/* images.c: the ImageService */
rpc_code cri_pull_image(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_list_images(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_image_status(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_remove_image(rpc_call *call, cri_service *svc, const void *req, void *resp);
rpc_code cri_image_fs_info(rpc_call *call, cri_service *svc, const void *req, void *resp);

/* ---- shared helpers (common.c) ---- */
static inline bool cri_empty(const char *s)
{
	return !s || !*s;
}

/* Sets the call's status from `e` (freed) and returns the code. */
rpc_code cri_fail(rpc_call *call, ad_error *e);

/* The RPCs whose whole request is one id: check it, then call the manager. */
rpc_code cri_id_op(rpc_call *call, cri_service *svc, const char *field, const char *id,
		   int (*op)(mgr *, const char *, ad_error **));

/* The pod or container a status or stats call names, with its stored
 * config in call memory; else the call's error (INVALID_ARGUMENT without an
 * id, or the manager's). */
rpc_code cri_get_pod(rpc_call *call, mgr *m, const char *id, mgr_pod **ret,
		     Runtime__V1__PodSandboxConfig **ret_cfg);
rpc_code cri_get_ctr(rpc_call *call, mgr *m, const char *id, mgr_ctr **ret,
		     Runtime__V1__ContainerConfig **ret_cfg);

/* Unpacks a stored request into call memory: it lives as long as the answer. */
void *cri_unpack_in_call(rpc_call *call, const ProtobufCMessageDescriptor *d, size_t len,
			 const uint8_t *data);

/* Map entries share one layout ({base, key, value}); `d` is the entry type. */
void **cri_copy_map(rpc_call *call, const ProtobufCMessageDescriptor *d, size_t n,
		    void *const *src);
#define CRI_COPY_MAP(call, obj, field, desc, src_n, src)                                           \
	do {                                                                                       \
		(obj)->field =                                                                     \
		    (void *)cri_copy_map((call), &(desc), (src_n), (void *const *)(src));          \
		(obj)->n_##field = (src_n);                                                        \
	} while (0)

/* What the four List filters (pods, containers and their stats) share: an id
 * prefix and a label selector; the pod (containers only) and the CRI state
 * (-1: any) where the filter has them. */
typedef struct cri_list_filter {
	const char *id;
	size_t n_sel;
	void *const *sel;
	const char *pod_id;
	int state;
} cri_list_filter;

#define CRI_LIST_FILTER(f)                                                                         \
	((cri_list_filter){(f) ? (f)->id : NULL, (f) ? (f)->n_label_selector : 0,                  \
			   (f) ? (void *const *)(f)->label_selector : NULL, NULL, -1})

typedef enum cri_list_kind {
	CRI_LIST_PODS,
	CRI_LIST_CONTAINERS,
} cri_list_kind;

/* One item of a List answer from a pod (mgr_pod, PodSandboxConfig) or a
 * container (mgr_ctr, ContainerConfig) and its stored config. */
typedef void *(*cri_list_item)(rpc_call *call, mgr *m, const void *obj, void *cfg);

/* The four List calls: the pods or containers the filter selects, in
 * creation order, each made an item of the answer; *ret_items (call memory)
 * and *ret_n are the answer's repeated field. */
rpc_code cri_list(rpc_call *call, mgr *m, cri_list_kind kind, const cri_list_filter *f,
		  cri_list_item item, void ***ret_items, size_t *ret_n);

/* A CRI label or annotation map as JSON ("{}" when empty), in call memory. */
const char *cri_kv_json(rpc_call *call, size_t n, void *const *entries);

Runtime__V1__PodSandboxState cri_pod_state(const mgr_pod *p);
Runtime__V1__ContainerState cri_ctr_state(const mgr_ctr *c);

#endif
