/* A pod's sysctls: only namespaced ones (net.* in the pod's network
 * namespace, the IPC ones in its IPC namespace), written from a short-lived
 * thread that joins the namespace. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pods_int.h"

/* Kubernetes' namespaced sysctls: net.* live in the network namespace, the
 * IPC ones in the IPC namespace; anything else would change the node. */
static bool sysctl_is_ipc(const char *k)
{
	return strncmp(k, "kernel.shm", 10) == 0 || strncmp(k, "kernel.msg", 10) == 0 ||
	       strcmp(k, "kernel.sem") == 0 || strncmp(k, "fs.mqueue.", 10) == 0;
}

typedef struct sysctl_job {
	const mgr_pod_spec *spec;
	const char *netns;
	pid_t infra;
	ad_error *err;
} sysctl_job;

static int write_sysctl(const char *key, const char *value, ad_error **err)
{
	_cleanup_free_ char *path = ad_asprintf("/proc/sys/%s", key);
	for (char *c = path + 10; *c; c++)
		if (*c == '.')
			*c = '/';
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INVALID, "sysctl %s", key);
	size_t len = strlen(value);
	if (write(fd, value, len) != (ssize_t)len)
		return ad_fail_errno(err, AD_E_INVALID, "sysctl %s = %s", key, value);
	return 0;
}

/* setns() changes only the calling thread: a short-lived one does the writes. */
static void *sysctl_thread(void *arg)
{
	sysctl_job *j = arg;
	const mgr_pod_spec *spec = j->spec;
	for (int pass = 0; pass < 2 && !j->err; pass++) {
		bool ipc = pass == 1;
		_cleanup_free_ char *ipc_path = ad_asprintf("/proc/%d/ns/ipc", (int)j->infra);
		const char *ns = ipc ? ipc_path : j->netns;
		_cleanup_close_ int fd = -1;
		for (size_t i = 0; i < spec->n_sysctls && !j->err; i++) {
			const char *k = spec->sysctls[i].key;
			if (sysctl_is_ipc(k) != ipc)
				continue;
			if (fd < 0) {
				fd = open(ns, O_RDONLY | O_CLOEXEC);
				if (fd < 0 || setns(fd, ipc ? CLONE_NEWIPC : CLONE_NEWNET) < 0) {
					ad_fail_errno(&j->err, AD_E_INTERNAL, "sysctl %s: join %s",
						      k, ns);
					break;
				}
			}
			write_sysctl(k, spec->sysctls[i].value, &j->err);
		}
	}
	return NULL;
}

int mgr_pod_sysctls_check(const mgr_pod_spec *spec, ad_error **err)
{
	for (size_t i = 0; i < spec->n_sysctls; i++) {
		const char *k = spec->sysctls[i].key;
		bool net = strncmp(k, "net.", 4) == 0;
		if (!net && !sysctl_is_ipc(k))
			return ad_fail(err, AD_E_INVALID, "sysctl %s is not namespaced", k);
		if (strstr(k, "..") || strchr(k, '/'))
			return ad_fail(err, AD_E_INVALID, "sysctl %s: bad name", k);
		if (net && spec->network == MGR_NS_NODE)
			return ad_fail(err, AD_E_INVALID,
				       "sysctl %s needs the pod's own network namespace", k);
		if (!net && spec->ipc == MGR_NS_NODE)
			return ad_fail(err, AD_E_INVALID,
				       "sysctl %s needs the pod's own IPC namespace", k);
	}
	return 0;
}

int mgr_pod_sysctls_apply(const mgr_pod_spec *spec, const char *netns, pid_t infra, ad_error **err)
{
	if (!spec->n_sysctls)
		return 0;
	sysctl_job j = {.spec = spec, .netns = netns, .infra = infra};
	pthread_t t;
	int rc = pthread_create(&t, NULL, sysctl_thread, &j);
	if (rc != 0)
		return ad_error_make(err, AD_E_INTERNAL, rc, "sysctl thread");
	pthread_join(t, NULL);
	if (j.err) {
		*err = j.err;
		return -1;
	}
	return 0;
}
