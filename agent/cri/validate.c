/* The checks of RunPodSandbox's and CreateContainer's requests that need
 * nothing but the request (validate.h). */
#include <string.h>

#include "validate.h"

bool cri_path_is_clean(const char *path)
{
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, "/");
		if ((n == 0 && p != path) || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n;
		if (*p == '/')
			p++;
	}
	return true;
}

/* A name that becomes part of paths and log names: no '/'. */
static int check_name(const char *what, const char *name, ad_error **err)
{
	if (!name || !*name)
		return ad_fail(err, AD_E_INVALID, "%s metadata: name is required", what);
	if (strchr(name, '/'))
		return ad_fail(err, AD_E_INVALID, "%s metadata: name \"%.64s\" contains '/'", what,
			       name);
	return 0;
}

/* Labels and annotations are protobuf map entries with a key and a value. */
typedef struct kv_entry {
	ProtobufCMessage base;
	char *key, *value;
} kv_entry;

static int check_kv(const char *what, const char *field, size_t n, void *const *entries,
		    ad_error **err)
{
	if (n > CRI_MAX_KV_ENTRIES)
		return ad_fail(err, AD_E_INVALID, "%s %s: %zu entries, more than the %d allowed",
			       what, field, n, CRI_MAX_KV_ENTRIES);
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		const kv_entry *e = entries[i];
		bytes += (e->key ? strlen(e->key) : 0) + (e->value ? strlen(e->value) : 0);
	}
	if (bytes > CRI_MAX_KV_BYTES)
		return ad_fail(err, AD_E_INVALID, "%s %s: %zu bytes, more than the %d allowed",
			       what, field, bytes, CRI_MAX_KV_BYTES);
	return 0;
}

static bool any_target(const Runtime__V1__NamespaceOption *o)
{
	return o && (o->network == RUNTIME__V1__NAMESPACE_MODE__TARGET ||
		     o->pid == RUNTIME__V1__NAMESPACE_MODE__TARGET ||
		     o->ipc == RUNTIME__V1__NAMESPACE_MODE__TARGET);
}

/* The user namespace options as kubelet sends them: NODE without mappings,
 * or POD with both uid and gid mappings or neither (agentd picks a block),
 * with the pod's own network, pid and IPC namespaces. Whether the host ids
 * are agentd's to give is the pod manager's check. */
static int check_userns(const Runtime__V1__NamespaceOption *o, ad_error **err)
{
	const Runtime__V1__UserNamespace *u = o ? o->userns_options : NULL;
	if (!u)
		return 0;
	switch (u->mode) {
	case RUNTIME__V1__NAMESPACE_MODE__NODE:
		if (u->n_uids || u->n_gids)
			return ad_fail(err, AD_E_INVALID,
				       "userns_options: mode NODE takes no uid or gid mappings");
		return 0;
	case RUNTIME__V1__NAMESPACE_MODE__POD:
		break;
	default:
		return ad_fail(err, AD_E_INVALID,
			       "userns_options: mode %d is not supported (NODE or POD)",
			       (int)u->mode);
	}
	if (!u->n_uids != !u->n_gids)
		return ad_fail(err, AD_E_INVALID,
			       "userns_options: give both uid and gid mappings, or neither");
	if (o->network == RUNTIME__V1__NAMESPACE_MODE__NODE ||
	    o->pid == RUNTIME__V1__NAMESPACE_MODE__NODE ||
	    o->ipc == RUNTIME__V1__NAMESPACE_MODE__NODE)
		return ad_fail(err, AD_E_INVALID,
			       "userns_options: a pod in a user namespace cannot share the node's "
			       "network, pid or IPC namespace");
	return 0;
}

int cri_validate_pod_config(const Runtime__V1__PodSandboxConfig *cfg, ad_error **err)
{
	const Runtime__V1__PodSandboxMetadata *md = cfg->metadata;
	if (!md)
		return ad_fail(err, AD_E_INVALID, "pod sandbox config without metadata");
	if (check_name("pod sandbox", md->name, err) < 0)
		return -1;
	if (!md->namespace_ || !*md->namespace_)
		return ad_fail(err, AD_E_INVALID, "pod sandbox metadata: namespace is required");
	if (!md->uid || !*md->uid)
		return ad_fail(err, AD_E_INVALID, "pod sandbox metadata: uid is required");
	if (cfg->linux && cfg->linux->security_context &&
	    any_target(cfg->linux->security_context->namespace_options))
		return ad_fail(err, AD_E_INVALID, "namespace mode TARGET is for containers only");
	if (cfg->linux && cfg->linux->security_context &&
	    check_userns(cfg->linux->security_context->namespace_options, err) < 0)
		return -1;
	if (cfg->log_directory && *cfg->log_directory &&
	    (cfg->log_directory[0] != '/' || !cri_path_is_clean(cfg->log_directory)))
		return ad_fail(err, AD_E_INVALID,
			       "pod sandbox log_directory \"%.256s\" is not a clean absolute path",
			       cfg->log_directory);
	if (check_kv("pod sandbox", "labels", cfg->n_labels, (void *const *)cfg->labels, err) < 0 ||
	    check_kv("pod sandbox", "annotations", cfg->n_annotations,
		     (void *const *)cfg->annotations, err) < 0)
		return -1;
	return 0;
}

int cri_validate_container_config(const Runtime__V1__ContainerConfig *cc, ad_error **err)
{
	if (!cc->metadata)
		return ad_fail(err, AD_E_INVALID, "container config: metadata is required");
	if (check_name("container", cc->metadata->name, err) < 0)
		return -1;
	if (check_kv("container", "labels", cc->n_labels, (void *const *)cc->labels, err) < 0 ||
	    check_kv("container", "annotations", cc->n_annotations, (void *const *)cc->annotations,
		     err) < 0)
		return -1;
	/* Relative to the pod's log directory, and staying in it. */
	if (cc->log_path && *cc->log_path &&
	    (cc->log_path[0] == '/' || !cri_path_is_clean(cc->log_path)))
		return ad_fail(err, AD_E_INVALID,
			       "container log_path \"%.256s\" must be a relative path without "
			       "\".\" or \"..\"",
			       cc->log_path);
	size_t env_bytes = 0;
	for (size_t i = 0; i < cc->n_envs; i++) {
		const Runtime__V1__KeyValue *kv = cc->envs[i];
		size_t n =
		    (kv->key ? strlen(kv->key) : 0) + (kv->value ? strlen(kv->value) : 0) + 2;
		if (n > CRI_MAX_ENV_ENTRY)
			return ad_fail(err, AD_E_INVALID,
				       "container env %.64s: %zu bytes, more than the %d allowed",
				       kv->key ? kv->key : "", n, CRI_MAX_ENV_ENTRY);
		env_bytes += n;
	}
	if (env_bytes > CRI_MAX_ENV_BYTES)
		return ad_fail(err, AD_E_INVALID,
			       "container env: %zu bytes, more than the %d allowed", env_bytes,
			       CRI_MAX_ENV_BYTES);
	for (size_t i = 0; i < cc->n_mounts; i++) {
		const Runtime__V1__Mount *m = cc->mounts[i];
		/* What kubelet sends is clean; a ".." would name another place
		 * than the one it reads as. */
		if (m->host_path && *m->host_path && !cri_path_is_clean(m->host_path))
			return ad_fail(err, AD_E_INVALID,
				       "mount host_path \"%.256s\" has \".\" or \"..\" components",
				       m->host_path);
		if (m->container_path && *m->container_path &&
		    !cri_path_is_clean(m->container_path))
			return ad_fail(
			    err, AD_E_INVALID,
			    "mount container_path \"%.256s\" has \".\" or \"..\" components",
			    m->container_path);
	}
	return 0;
}
