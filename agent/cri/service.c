/* The CRI services. Every RPC of runtime.v1.RuntimeService and
 * runtime.v1.ImageService is registered straight from the protobuf-c service
 * descriptors, so the server always answers the whole API: the RPCs listed in
 * `implemented` run their handler, every other one answers UNIMPLEMENTED with
 * its full name. Implementing an RPC = adding a line to `implemented`. */
#include <string.h>

#include "cri_int.h"

const char *const cri_streaming[] = {
    "runtime.v1.RuntimeService/StreamPodSandboxes",
    "runtime.v1.RuntimeService/StreamContainers",
    "runtime.v1.RuntimeService/StreamContainerStats",
    "runtime.v1.RuntimeService/StreamPodSandboxStats",
    "runtime.v1.RuntimeService/GetContainerEvents",
    "runtime.v1.RuntimeService/StreamPodSandboxMetrics",
    "runtime.v1.ImageService/StreamImages",
};
const size_t cri_n_streaming = sizeof(cri_streaming) / sizeof(cri_streaming[0]);

bool cri_is_streaming(const char *full_method)
{
	for (size_t i = 0; i < cri_n_streaming; i++)
		if (strcmp(cri_streaming[i], full_method) == 0)
			return true;
	return false;
}

static rpc_code cri_version(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)req;
	(void)svc;
	Runtime__V1__VersionResponse *r = resp;
	/* The kubelet's CRI API version, as every CRI runtime reports it. */
	r->version = rpc_call_strdup(call, "0.1.0");
	r->runtime_name = rpc_call_strdup(call, "agentd");
	r->runtime_version = rpc_call_strdup(call, AGENTD_VERSION);
	r->runtime_api_version = rpc_call_strdup(call, "v1");
	return RPC_OK;
}

#define RT(name) "runtime.v1.RuntimeService/" name
#define IMG(name) "runtime.v1.ImageService/" name
static const cri_rpc implemented[] = {
    {RT("Version"), cri_version, CRI_NEEDS_NOTHING, true, false},
    {IMG("PullImage"), cri_pull_image, CRI_NEEDS_IMAGES, false, false},
    {IMG("ListImages"), cri_list_images, CRI_NEEDS_IMAGES, false, false},
    {IMG("ImageStatus"), cri_image_status, CRI_NEEDS_IMAGES, false, false},
    {IMG("RemoveImage"), cri_remove_image, CRI_NEEDS_IMAGES, false, false},
    {IMG("ImageFsInfo"), cri_image_fs_info, CRI_NEEDS_IMAGES, false, false},
    {RT("Status"), cri_status, CRI_NEEDS_PODS, false, false},
    {RT("RunPodSandbox"), cri_run_pod_sandbox, CRI_NEEDS_PODS, false, false},
    {RT("StopPodSandbox"), cri_stop_pod_sandbox, CRI_NEEDS_PODS, false, false},
    {RT("RemovePodSandbox"), cri_remove_pod_sandbox, CRI_NEEDS_PODS, false, false},
    {RT("PodSandboxStatus"), cri_pod_sandbox_status, CRI_NEEDS_PODS, false, false},
    {RT("ListPodSandbox"), cri_list_pod_sandbox, CRI_NEEDS_PODS, false, false},
    {RT("CreateContainer"), cri_create_container, CRI_NEEDS_PODS, false, true},
    {RT("StartContainer"), cri_start_container, CRI_NEEDS_PODS, false, true},
    {RT("StopContainer"), cri_stop_container, CRI_NEEDS_PODS, false, false},
    {RT("RemoveContainer"), cri_remove_container, CRI_NEEDS_PODS, false, true},
    {RT("ListContainers"), cri_list_containers, CRI_NEEDS_PODS, false, false},
    {RT("ContainerStatus"), cri_container_status, CRI_NEEDS_PODS, false, false},
    {RT("ExecSync"), cri_exec_sync, CRI_NEEDS_PODS, false, false},
    {RT("Exec"), cri_exec, CRI_NEEDS_PODS, false, false},
    {RT("Attach"), cri_attach, CRI_NEEDS_PODS, false, false},
    {RT("PortForward"), cri_port_forward, CRI_NEEDS_PODS, false, false},
    {RT("ContainerStats"), cri_container_stats, CRI_NEEDS_PODS, false, false},
    {RT("ListContainerStats"), cri_list_container_stats, CRI_NEEDS_PODS, false, false},
    {RT("UpdateContainerResources"), cri_update_container_resources, CRI_NEEDS_PODS, false, false},
    {RT("ReopenContainerLog"), cri_reopen_container_log, CRI_NEEDS_PODS, false, true},
    {RT("RuntimeConfig"), cri_runtime_config, CRI_NEEDS_NOTHING, false, false},
    {RT("GetContainerEvents"), cri_get_container_events, CRI_NEEDS_PODS, false, false},
    {RT("PodSandboxStats"), cri_pod_sandbox_stats, CRI_NEEDS_PODS, false, false},
    {RT("ListPodSandboxStats"), cri_list_pod_sandbox_stats, CRI_NEEDS_PODS, false, false},
    {RT("UpdateRuntimeConfig"), cri_update_runtime_config, CRI_NEEDS_PODS, false, false},
    {RT("ListMetricDescriptors"), cri_list_metric_descriptors, CRI_NEEDS_NOTHING, true, false},
    {RT("ListPodSandboxMetrics"), cri_list_pod_sandbox_metrics, CRI_NEEDS_PODS, false, false},
};

static void release_events(void *pods)
{
	mgr_events_release(pods);
}

/* The one way into every CRI handler: what the method needs is there, the
 * events it publishes wait for its reply. */
static rpc_code dispatch(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			 void *userdata)
{
	const cri_route *route = userdata;
	const cri_rpc *rpc = route->rpc;
	cri_service *svc = route->svc;
	if (!rpc)
		return rpc_call_error(call, RPC_UNIMPLEMENTED, "%s is not implemented yet",
				      route->method);
	if (rpc->needs == CRI_NEEDS_PODS && !svc->pods)
		return rpc_call_error(call, RPC_UNAVAILABLE, "the pod manager is not running");
	if (rpc->needs == CRI_NEEDS_IMAGES && !svc->images) {
		_cleanup_error_ ad_error *e = NULL;
		ad_fail(&e, AD_E_UNAVAILABLE, "the image store is not open");
		return status_call_error(call, e);
	}
	if (rpc->events_after_reply && svc->pods) {
		/* A client that reads the events stream (a kubelet with evented
		 * PLEG) then handles the reply first, and the stream's worker
		 * (which looks the container up for each event) does not compete
		 * with the handler. */
		rpc_call_after_reply(call, release_events, svc->pods);
		mgr_events_hold(svc->pods);
	}
	return rpc->run(call, svc, req, resp);
}

static void register_service(svc_table *t, cri_service *svc, const ProtobufCServiceDescriptor *sd)
{
	for (unsigned i = 0; i < sd->n_methods; i++) {
		const ProtobufCMethodDescriptor *md = &sd->methods[i];
		cri_route *route = ad_malloc0(sizeof(*route));
		svc_table_own(t, (char *)route);
		route->svc = svc;
		route->method = svc_table_own(t, ad_asprintf("%s/%s", sd->name, md->name));
		bool streaming = cri_is_streaming(route->method);
		/* Answering UNIMPLEMENTED is pure computation; streams always go
		 * to the workers, where sending may block. */
		bool on_loop = !streaming;
		for (size_t j = 0; j < sizeof(implemented) / sizeof(implemented[0]); j++) {
			if (strcmp(implemented[j].method, route->method) == 0) {
				route->rpc = &implemented[j];
				on_loop = implemented[j].on_loop && !streaming;
			}
		}
		rpc_method m = {
		    .path = svc_table_own(t, ad_asprintf("/%s", route->method)),
		    .request = md->input,
		    .response = md->output,
		    .kind = streaming ? RPC_SERVER_STREAM : RPC_UNARY,
		    .on_loop = on_loop,
		    .handler = dispatch,
		    .userdata = route,
		};
		svc_table_add(t, &m);
	}
}

void cri_register(svc_table *t, cri_service *svc)
{
	register_service(t, svc, &runtime__v1__runtime_service__descriptor);
	register_service(t, svc, &runtime__v1__image_service__descriptor);
}
