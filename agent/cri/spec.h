/* spec.h — CRI container config + image config -> the runtime's rt_config.
 * Pure: everything it needs from the host (the rootfs's passwd and group
 * files, the device nodes, the pod's namespaces) is passed in, so that it is
 * tested without root. Private to agent/cri (and its unit test). */
#ifndef AGENTD_CRI_SPEC_H
#define AGENTD_CRI_SPEC_H

#include <sys/types.h>

#include "cri/api.pb-c.h"
#include "runtime.h"

/* A device of the config's `devices`, as the host has it (stat). */
typedef struct spec_device {
	int errno_value; /* the stat failed: why */
	mode_t mode;	 /* S_IFCHR, S_IFBLK or another file type */
	unsigned major, minor;
} spec_device;

typedef struct spec_input {
	const Runtime__V1__ContainerConfig *config;
	const Runtime__V1__PodSandboxConfig *pod; /* may be NULL */
	const char *image_config; /* the image's config JSON (OCI image config); NULL: none */
	const char *id;
	const char *rootfs;
	const char *log_path; /* the full path, or NULL: no log */
	const char *pod_dir;  /* the pod's hosts, hostname and resolv.conf */
	const char *netns;    /* the pod's network namespace pin */
	pid_t infra_pid;      /* holds the pod's IPC, UTS and pid namespaces */
	pid_t target_pid;     /* pid mode TARGET: the target container's init */
	bool pod_userns;      /* the pod has a user namespace (the infra's): join it */
	/* The rootfs's /etc/passwd and /etc/group, NULL if it has none. */
	const char *passwd, *group;
	const spec_device *devices; /* one per config->devices */
	uint64_t nofile_max; /* agentd's hard RLIMIT_NOFILE (none can be raised above it); 0: unknown */
} spec_input;

/* The config and what it points to (besides the input's strings). */
typedef struct spec_result {
	rt_config cfg;
	void **owned;
	size_t n_owned;
	void *image; /* the parsed image config (json_t) */
} spec_result;

/* Kubelet's rules as containerd and CRI-O apply them: command replaces the
 * image's Entrypoint (and drops its Cmd), args replace Cmd; the config's
 * envs override the image's Env key by key; working_dir or the image's;
 * run_as_user/run_as_username, else the image's User (name or uid, with a
 * group), looked up in the rootfs; the security context, the mounts (and
 * the pod's hosts, hostname and resolv.conf unless mounted over), the
 * devices, the resources and the pod's namespaces; RLIMIT_NOFILE of its own
 * (SPEC_NOFILE_SOFT, SPEC_NOFILE_HARD or nofile_max if lower), not agentd's.
 * Bad input: AD_E_INVALID. */
#define SPEC_NOFILE_SOFT 1024
#define SPEC_NOFILE_HARD 524288
int spec_build(const spec_input *in, spec_result *ret, ad_error **err);
void spec_result_clear(spec_result *r);

/* The cgroup limits and oom_score_adj of CRI resources onto cfg. */
void spec_resources(const Runtime__V1__LinuxContainerResources *res, rt_config *cfg);

/* A CRI seccomp and AppArmor profile (either NULL: unchanged) onto `sec`;
 * the strings stay the caller's. */
void spec_security_profiles(const Runtime__V1__SecurityProfile *seccomp,
			    const Runtime__V1__SecurityProfile *apparmor, rt_security *sec);

#endif
