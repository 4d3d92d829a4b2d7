/* The CRI services. Every RPC of runtime.v1.RuntimeService and
 * runtime.v1.ImageService is registered straight from the protobuf-c service
 * descriptors, so the server always answers the whole API: the RPCs listed in
 * `implemented` run their handler, every other one answers UNIMPLEMENTED with
 * its full name. Implementing an RPC = adding a line to `implemented`. */
#include <string.h>

#include "cri/api.pb-c.h"
#include "images.h"
#include "manager.h"
#include "services.h"

const char *const svc_cri_streaming[] = {
    "runtime.v1.RuntimeService/StreamPodSandboxes",
    "runtime.v1.RuntimeService/StreamContainers",
    "runtime.v1.RuntimeService/StreamContainerStats",
    "runtime.v1.RuntimeService/StreamPodSandboxStats",
    "runtime.v1.RuntimeService/GetContainerEvents",
    "runtime.v1.RuntimeService/StreamPodSandboxMetrics",
    "runtime.v1.ImageService/StreamImages",
};
const size_t svc_cri_n_streaming = sizeof(svc_cri_streaming) / sizeof(svc_cri_streaming[0]);

bool svc_cri_is_streaming(const char *full_method)
{
	for (size_t i = 0; i < svc_cri_n_streaming; i++)
		if (strcmp(svc_cri_streaming[i], full_method) == 0)
			return true;
	return false;
}

static rpc_code cri_version(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			    void *userdata)
{
	(void)req;
	(void)userdata;
	Runtime__V1__VersionResponse *r = (Runtime__V1__VersionResponse *)resp;
	/* The kubelet's CRI API version, as every CRI runtime reports it. */
	r->version = rpc_call_strdup(call, "0.1.0");
	r->runtime_name = rpc_call_strdup(call, "agentd");
	r->runtime_version = rpc_call_strdup(call, AGENTD_VERSION);
	r->runtime_api_version = rpc_call_strdup(call, "v1");
	return RPC_OK;
}

static rpc_code cri_unimplemented(rpc_call *call, const ProtobufCMessage *req,
				  ProtobufCMessage *resp, void *userdata)
{
	(void)req;
	(void)resp;
	return rpc_call_error(call, RPC_UNIMPLEMENTED, "%s is not implemented yet",
			      (const char *)userdata);
}

static const struct {
	const char *method; /* "runtime.v1.RuntimeService/Version" */
	rpc_handler_fn handler;
	bool on_loop;
} implemented[] = {
    {"runtime.v1.RuntimeService/Version", cri_version, true},
    {"runtime.v1.ImageService/PullImage", cri_pull_image, false},
    {"runtime.v1.ImageService/ListImages", cri_list_images, false},
    {"runtime.v1.ImageService/ImageStatus", cri_image_status, false},
    {"runtime.v1.ImageService/RemoveImage", cri_remove_image, false},
    {"runtime.v1.ImageService/ImageFsInfo", cri_image_fs_info, false},
    {"runtime.v1.RuntimeService/Status", cri_status, false},
    {"runtime.v1.RuntimeService/RunPodSandbox", cri_run_pod_sandbox, false},
    {"runtime.v1.RuntimeService/StopPodSandbox", cri_stop_pod_sandbox, false},
    {"runtime.v1.RuntimeService/RemovePodSandbox", cri_remove_pod_sandbox, false},
    {"runtime.v1.RuntimeService/PodSandboxStatus", cri_pod_sandbox_status, false},
    {"runtime.v1.RuntimeService/ListPodSandbox", cri_list_pod_sandbox, false},
    {"runtime.v1.RuntimeService/CreateContainer", cri_create_container, false},
    {"runtime.v1.RuntimeService/StartContainer", cri_start_container, false},
    {"runtime.v1.RuntimeService/StopContainer", cri_stop_container, false},
    {"runtime.v1.RuntimeService/RemoveContainer", cri_remove_container, false},
    {"runtime.v1.RuntimeService/ListContainers", cri_list_containers, false},
    {"runtime.v1.RuntimeService/ContainerStatus", cri_container_status, false},
    {"runtime.v1.RuntimeService/ExecSync", cri_exec_sync, false},
    {"runtime.v1.RuntimeService/ContainerStats", cri_container_stats, false},
    {"runtime.v1.RuntimeService/ListContainerStats", cri_list_container_stats, false},
    {"runtime.v1.RuntimeService/UpdateContainerResources", cri_update_container_resources, false},
    {"runtime.v1.RuntimeService/ReopenContainerLog", cri_reopen_container_log, false},
    {"runtime.v1.RuntimeService/RuntimeConfig", cri_runtime_config, false},
    {"runtime.v1.RuntimeService/GetContainerEvents", cri_get_container_events, false},
    {"runtime.v1.RuntimeService/PodSandboxStats", cri_pod_sandbox_stats, false},
    {"runtime.v1.RuntimeService/ListPodSandboxStats", cri_list_pod_sandbox_stats, false},
    {"runtime.v1.RuntimeService/UpdateRuntimeConfig", cri_update_runtime_config, false},
};

static void register_service(svc_table *t, agent_ctx *ctx, const ProtobufCServiceDescriptor *svc)
{
	for (unsigned i = 0; i < svc->n_methods; i++) {
		const ProtobufCMethodDescriptor *md = &svc->methods[i];
		const char *full = svc_table_own(t, ad_asprintf("%s/%s", svc->name, md->name));
		rpc_method m = {
		    .path = svc_table_own(t, ad_asprintf("/%s", full)),
		    .request = md->input,
		    .response = md->output,
		    .kind = svc_cri_is_streaming(full) ? RPC_SERVER_STREAM : RPC_UNARY,
		    /* Answering UNIMPLEMENTED is pure computation; streams
		     * always go to the workers, where sending may block. */
		    .on_loop = !svc_cri_is_streaming(full),
		    .handler = cri_unimplemented,
		    .userdata = (void *)full,
		};
		for (size_t j = 0; j < sizeof(implemented) / sizeof(implemented[0]); j++) {
			if (strcmp(implemented[j].method, full) == 0) {
				m.handler = implemented[j].handler;
				m.on_loop = implemented[j].on_loop && m.kind == RPC_UNARY;
				m.userdata = ctx;
			}
		}
		svc_table_add(t, &m);
	}
}

void svc_cri_register(svc_table *t, agent_ctx *ctx)
{
	register_service(t, ctx, &runtime__v1__runtime_service__descriptor);
	register_service(t, ctx, &runtime__v1__image_service__descriptor);
}
