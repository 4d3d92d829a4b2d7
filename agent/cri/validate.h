/* validate.h — what RunPodSandbox and CreateContainer refuse before anything
 * is created: names, sizes, paths. Pure (no I/O), so that it is fuzzed
 * (tests/fuzz/cri_request_fuzz.c) and unit-tested. Private to agent/cri. */
#ifndef AGENTD_CRI_VALIDATE_H
#define AGENTD_CRI_VALIDATE_H

#include "base.h"
#include "cri/api.pb-c.h"

/* Labels and annotations, each: at most this many entries and bytes (keys
 * plus values; Kubernetes's own limit on an object's annotations). */
#define CRI_MAX_KV_ENTRIES 4096
#define CRI_MAX_KV_BYTES (256 * 1024)
/* The environment: what execve takes (MAX_ARG_STRLEN per string, and well
 * below the 2 MiB a default stack leaves for arguments and environment). */
#define CRI_MAX_ENV_ENTRY (128 * 1024)
#define CRI_MAX_ENV_BYTES (1024 * 1024)

/* AD_E_INVALID naming the field. */
int cri_validate_pod_config(const Runtime__V1__PodSandboxConfig *cfg, ad_error **err);
int cri_validate_container_config(const Runtime__V1__ContainerConfig *cc, ad_error **err);

/* A path with no "." or ".." component and no empty one (no "//"). */
bool cri_path_is_clean(const char *path);

#endif
