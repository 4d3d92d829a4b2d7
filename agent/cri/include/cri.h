/* cri.h — the one public header of agent/cri: the CRI (runtime.v1
 * RuntimeService and ImageService) on the pod manager and the image store.
 * The handlers validate, translate CRI messages to and from the pod
 * manager's plain records, and map errors to gRPC statuses. */
#ifndef AGENTD_CRI_H
#define AGENTD_CRI_H

#include <stdbool.h>
#include <stddef.h>

#include "pods.h"
#include "services.h"
#include "store.h"
#include "streaming.h"

/* What the CRI handlers work on: the userdata they get (through their
 * route), so that nothing reaches for a process global. */
typedef struct cri_service {
	mgr *pods;	      /* NULL: the RuntimeService RPCs answer UNAVAILABLE */
	store *images;	      /* NULL: the ImageService RPCs answer UNAVAILABLE */
	st_server *streaming; /* Exec/Attach/PortForward URLs; NULL: UNAVAILABLE */
} cri_service;

/* What the streaming server calls to exec, attach and dial; its ctx is the
 * cri_service (streaming.c). */
extern const st_backend cri_streaming_backend;

/* Every RPC of runtime.v1.RuntimeService and runtime.v1.ImageService,
 * registered straight from the protobuf-c service descriptors: the ones
 * agentd implements run their handler, every other one answers
 * UNIMPLEMENTED with its full name. `svc` must outlive the table. */
void cri_register(svc_table *t, cri_service *svc);

/* Containers an older agentd created have no stored runtime config: each
 * created or running one gets it rebuilt from the CRI config and pod config
 * that agentd stored (as CreateContainer builds it now). Run at start-up,
 * before serving; failures are logged (exec, status and updates of that
 * container then answer DATA_LOSS). */
void cri_backfill_runtime_configs(cri_service *svc);

/* The userdata of every registered CRI method. */
typedef struct cri_route {
	cri_service *svc;
	const char *method;	   /* "runtime.v1.RuntimeService/Version" */
	const struct cri_rpc *rpc; /* NULL: not implemented */
} cri_route;

/* Server-streaming CRI methods ("runtime.v1.RuntimeService/GetContainerEvents"):
 * protobuf-c's service descriptors do not record streaming. */
bool cri_is_streaming(const char *full_method);
extern const char *const cri_streaming[];
extern const size_t cri_n_streaming;

#endif
