/* CRI ContainerConfig + the image's config -> rt_config, without I/O: what
 * the host has to say (passwd and group files, device nodes, namespaces)
 * comes in spec_input. Built once, at CreateContainer; the pod manager
 * stores the result in the runtime's own form. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/capability.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <jansson.h>

#include "spec.h"

static void *keep(spec_result *r, void *p)
{
	r->owned = ad_realloc(r->owned, (r->n_owned + 1) * sizeof(void *));
	r->owned[r->n_owned++] = p;
	return p;
}

void spec_result_clear(spec_result *r)
{
	for (size_t i = 0; i < r->n_owned; i++)
		free(r->owned[i]);
	free(r->owned);
	json_decref(r->image);
	*r = (spec_result){0};
}

static const char **strv_new(spec_result *r, size_t n)
{
	return keep(r, ad_malloc0((n + 1) * sizeof(char *)));
}

static json_t *image_cfg_get(json_t *img, const char *key)
{
	return json_object_get(json_object_get(img, "config"), key);
}

/* Kubelet's rule: command replaces Entrypoint (and drops Cmd), args replace Cmd. */
static const char **build_args(spec_result *r, const Runtime__V1__ContainerConfig *cc, json_t *img)
{
	json_t *ep = image_cfg_get(img, "Entrypoint"), *cmd = image_cfg_get(img, "Cmd");
	size_t n = 0, cap = cc->n_command + cc->n_args + json_array_size(ep) + json_array_size(cmd);
	const char **v = strv_new(r, cap);
	if (cc->n_command) {
		for (size_t i = 0; i < cc->n_command; i++)
			v[n++] = cc->command[i];
		for (size_t i = 0; i < cc->n_args; i++)
			v[n++] = cc->args[i];
		return v;
	}
	for (size_t i = 0; i < json_array_size(ep); i++)
		v[n++] = json_string_value(json_array_get(ep, i));
	if (cc->n_args) {
		for (size_t i = 0; i < cc->n_args; i++)
			v[n++] = cc->args[i];
	} else {
		for (size_t i = 0; i < json_array_size(cmd); i++)
			v[n++] = json_string_value(json_array_get(cmd, i));
	}
	return v;
}

/* Image Env with the CRI envs over it, key by key. */
static const char **build_env(spec_result *r, const Runtime__V1__ContainerConfig *cc, json_t *img)
{
	json_t *ienv = image_cfg_get(img, "Env");
	size_t n = 0, cap = json_array_size(ienv) + cc->n_envs + 1;
	const char **v = strv_new(r, cap);
	for (size_t i = 0; i < json_array_size(ienv); i++) {
		const char *kv = json_string_value(json_array_get(ienv, i));
		if (!kv)
			continue;
		size_t klen = strcspn(kv, "=");
		bool overridden = false;
		for (size_t j = 0; j < cc->n_envs && !overridden; j++)
			overridden = strlen(cc->envs[j]->key) == klen &&
				     strncmp(cc->envs[j]->key, kv, klen) == 0;
		if (!overridden)
			v[n++] = kv;
	}
	for (size_t j = 0; j < cc->n_envs; j++)
		v[n++] = keep(r, ad_asprintf("%s=%s", cc->envs[j]->key, cc->envs[j]->value));
	return v;
}

/* "name" or "uid" in the text of an /etc/passwd or /etc/group. With
 * ret_name, the entry's name (malloc'd). */
static int lookup_id(const char *text, const char *name, long *ret_id, long *ret_gid,
		     char **ret_name)
{
	return ad_id_file_find(text, name, name[strspn(name, "0123456789")] == '\0', ret_id,
			       ret_gid, ret_name);
}

typedef struct member_groups {
	const char *user;
	gid_t *gids;
	size_t n;
} member_groups;

static int collect_member_group(char **fields, void *arg)
{
	member_groups *m = arg;
	char *save = NULL;
	for (char *u = fields[3] ? strtok_r(fields[3], ",", &save) : NULL; u;
	     u = strtok_r(NULL, ",", &save)) {
		if (strcmp(u, m->user) == 0) {
			m->gids = ad_realloc(m->gids, (m->n + 1) * sizeof(gid_t));
			m->gids[m->n++] = (gid_t)strtol(fields[2], NULL, 10);
			break;
		}
	}
	return 0;
}

/* The container's groups besides its primary one, as containerd and CRI-O
 * give them: every group of the image's /etc/group that lists the user as
 * a member, then the security context's supplemental groups, once each. */
static void build_groups(spec_result *r, const spec_input *in, const char *username,
			 rt_config *rc)
{
	const Runtime__V1__ContainerConfig *cc = in->config;
	const Runtime__V1__LinuxContainerSecurityContext *sc =
	    cc->linux ? cc->linux->security_context : NULL;
	member_groups m = {.user = username};
	if (username)
		ad_id_file_each(in->group, collect_member_group, &m);
	for (size_t i = 0; sc && i < sc->n_supplemental_groups; i++) {
		gid_t g = (gid_t)sc->supplemental_groups[i];
		bool dup = false;
		for (size_t k = 0; k < m.n && !dup; k++)
			dup = m.gids[k] == g;
		if (!dup) {
			m.gids = ad_realloc(m.gids, (m.n + 1) * sizeof(gid_t));
			m.gids[m.n++] = g;
		}
	}
	if (m.n) {
		rc->additional_gids = keep(r, m.gids);
		rc->n_additional_gids = m.n;
	}
}

static int build_user(spec_result *r, const spec_input *in, json_t *img, rt_config *rc,
		      ad_error **err)
{
	const Runtime__V1__ContainerConfig *cc = in->config;
	const Runtime__V1__LinuxContainerSecurityContext *sc =
	    cc->linux ? cc->linux->security_context : NULL;
	/* A group says nothing without the user it is for (as kubelet
	 * validates it, and containerd and CRI-O refuse it). */
	if (sc && sc->run_as_group && !sc->run_as_user &&
	    !(sc->run_as_username && *sc->run_as_username))
		return ad_fail(err, AD_E_INVALID,
			       "run_as_group %lld is set without run_as_user or run_as_username",
			       (long long)sc->run_as_group->value);
	_cleanup_free_ char *user = NULL, *group = NULL, *username = NULL;
	if (sc && sc->run_as_user)
		user = ad_asprintf("%lld", (long long)sc->run_as_user->value);
	else if (sc && sc->run_as_username && *sc->run_as_username)
		user = ad_strdup(sc->run_as_username);
	else {
		const char *u = json_string_value(image_cfg_get(img, "User"));
		if (u && *u) {
			user = ad_strdup(u);
			char *colon = strchr(user, ':');
			if (colon) {
				*colon = '\0';
				group = ad_strdup(colon + 1);
			}
		}
	}
	long uid = 0, gid = -1;
	if (user && *user) {
		bool numeric = user[strspn(user, "0123456789")] == '\0';
		long pw_gid = -1;
		if (lookup_id(in->passwd, user, &uid, &pw_gid, &username) == 0)
			gid = pw_gid;
		else if (numeric)
			uid = strtol(user, NULL, 10);
		else
			return ad_fail(err, AD_E_INVALID, "user '%s' not found in the image", user);
	}
	if (sc && sc->run_as_group)
		gid = (long)sc->run_as_group->value;
	else if (group && *group) {
		long g;
		if (lookup_id(in->group, group, &g, NULL, NULL) == 0)
			gid = g;
		else if (group[strspn(group, "0123456789")] == '\0')
			gid = strtol(group, NULL, 10);
		else
			return ad_fail(err, AD_E_INVALID, "group '%s' not found in the image",
				       group);
	}
	rc->uid = (uid_t)uid;
	rc->gid = (gid_t)(gid < 0 ? 0 : gid);
	/* No user at all is root, whose image groups count too. */
	if (!user || !*user)
		lookup_id(in->passwd, "0", &uid, NULL, &username);
	build_groups(r, in, username, rc);
	return 0;
}

static int cap_bits(const char *const *names, size_t n, uint64_t *bits, ad_error **err)
{
	for (size_t i = 0; i < n; i++) {
		const char *name = names[i];
		if (strcasecmp(name, "ALL") == 0) {
			*bits = ~0ULL;
			continue;
		}
		_cleanup_free_ char *full = strncasecmp(name, "CAP_", 4) == 0
						? ad_strdup(name)
						: ad_asprintf("CAP_%s", name);
		cap_value_t v;
		if (cap_from_name(full, &v) < 0 || v > 63)
			return ad_fail(err, AD_E_INVALID, "unknown capability '%s'", name);
		*bits |= 1ULL << v;
	}
	return 0;
}

void spec_security_profiles(const Runtime__V1__SecurityProfile *seccomp,
			    const Runtime__V1__SecurityProfile *apparmor, rt_security *sec)
{
	if (seccomp) {
		switch (seccomp->profile_type) {
		case RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__RuntimeDefault:
			sec->seccomp = RT_SECCOMP_DEFAULT;
			break;
		case RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost:
			sec->seccomp = RT_SECCOMP_CUSTOM;
			sec->seccomp_profile = seccomp->localhost_ref;
			break;
		default:
			sec->seccomp = RT_SECCOMP_UNCONFINED;
			break;
		}
	}
	/* AppArmor: a Localhost profile by name; RuntimeDefault and Unconfined
	 * apply none (no default profile is shipped). */
	if (apparmor &&
	    apparmor->profile_type == RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost &&
	    apparmor->localhost_ref && *apparmor->localhost_ref)
		sec->apparmor_profile = apparmor->localhost_ref;
}

static int build_security(spec_result *r, const Runtime__V1__ContainerConfig *cc, rt_config *rc,
			  ad_error **err)
{
	const Runtime__V1__LinuxContainerSecurityContext *sc =
	    cc->linux ? cc->linux->security_context : NULL;
	/* An absent seccomp profile is Unconfined in CRI (kubelet says so
	 * explicitly when it wants RuntimeDefault). */
	rc->security.seccomp = RT_SECCOMP_UNCONFINED;
	if (!sc)
		return 0;
	rc->security.privileged = sc->privileged;
	rc->security.no_new_privs = sc->no_new_privs;
	rc->security.readonly_rootfs = sc->readonly_rootfs;
	if (sc->capabilities && !sc->privileged &&
	    (sc->capabilities->n_add_capabilities || sc->capabilities->n_drop_capabilities)) {
		uint64_t add = 0, drop = 0;
		if (cap_bits((const char *const *)sc->capabilities->add_capabilities,
			     sc->capabilities->n_add_capabilities, &add, err) < 0 ||
		    cap_bits((const char *const *)sc->capabilities->drop_capabilities,
			     sc->capabilities->n_drop_capabilities, &drop, err) < 0)
			return -1;
		uint64_t set = (rt_default_capabilities() | add) & ~drop;
		if (add == ~0ULL)
			set = ~0ULL & ~drop;
		rc->security.capabilities_set = true;
		rc->security.cap_bounding = rc->security.cap_effective = set;
		rc->security.cap_permitted = rc->security.cap_inheritable = set;
	}
	spec_security_profiles(sc->seccomp, sc->apparmor, &rc->security);
	if (sc->n_masked_paths) {
		const char **v = strv_new(r, sc->n_masked_paths);
		for (size_t i = 0; i < sc->n_masked_paths; i++)
			v[i] = sc->masked_paths[i];
		rc->security.masked_paths = v;
	}
	if (sc->n_readonly_paths) {
		const char **v = strv_new(r, sc->n_readonly_paths);
		for (size_t i = 0; i < sc->n_readonly_paths; i++)
			v[i] = sc->readonly_paths[i];
		rc->security.readonly_paths = v;
	}
	return 0;
}

void spec_resources(const Runtime__V1__LinuxContainerResources *r, rt_config *rc)
{
	if (!r)
		return;
	if (r->cpu_shares > 0)
		rc->resources.cpu_shares = (uint64_t)r->cpu_shares;
	if (r->cpu_quota > 0)
		rc->resources.cpu_quota_us = r->cpu_quota;
	if (r->cpu_period > 0)
		rc->resources.cpu_period_us = (uint64_t)r->cpu_period;
	if (r->memory_limit_in_bytes > 0)
		rc->resources.memory_limit = r->memory_limit_in_bytes;
	if (r->memory_swap_limit_in_bytes > 0)
		rc->resources.memory_swap = r->memory_swap_limit_in_bytes;
	if (r->cpuset_cpus && *r->cpuset_cpus)
		rc->resources.cpuset_cpus = r->cpuset_cpus;
	if (r->cpuset_mems && *r->cpuset_mems)
		rc->resources.cpuset_mems = r->cpuset_mems;
	if (r->oom_score_adj) {
		rc->oom_score_adj = (int)r->oom_score_adj;
		rc->oom_score_adj_set = true;
	}
}

static bool has_mount(const Runtime__V1__ContainerConfig *cc, const char *dest)
{
	for (size_t i = 0; i < cc->n_mounts; i++)
		if (strcmp(cc->mounts[i]->container_path, dest) == 0)
			return true;
	return false;
}

static int build_mounts(spec_result *r, const spec_input *in, rt_config *rc, ad_error **err)
{
	static const char *const pod_files[] = {"hosts", "hostname", "resolv.conf"};
	const Runtime__V1__ContainerConfig *cc = in->config;
	rt_mount *mv = keep(r, ad_malloc0((cc->n_mounts + cc->n_devices + 3) * sizeof(rt_mount)));
	size_t n = 0;
	for (size_t i = 0; i < cc->n_mounts; i++) {
		const Runtime__V1__Mount *cm = cc->mounts[i];
		if (!cm->container_path || cm->container_path[0] != '/')
			return ad_fail(err, AD_E_INVALID,
				       "mount: container path '%s' is not absolute",
				       cm->container_path ? cm->container_path : "");
		if (!cm->host_path || cm->host_path[0] != '/')
			return ad_fail(err, AD_E_INVALID, "mount: host path '%s' is not absolute",
				       cm->host_path ? cm->host_path : "");
		mv[n++] = (rt_mount){
		    .type = "bind",
		    .source = cm->host_path,
		    .destination = cm->container_path,
		    .readonly = cm->readonly,
		    .propagation =
			cm->propagation == RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_BIDIRECTIONAL
			    ? RT_PROP_RSHARED
			: cm->propagation ==
				RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_HOST_TO_CONTAINER
			    ? RT_PROP_RSLAVE
			    : RT_PROP_PRIVATE,
		};
	}
	for (size_t i = 0; i < 3; i++) {
		char *dest = keep(r, ad_asprintf("/etc/%s", pod_files[i]));
		if (has_mount(cc, dest))
			continue;
		mv[n++] = (rt_mount){
		    .type = "bind",
		    .source = keep(r, ad_asprintf("%s/%s", in->pod_dir, pod_files[i])),
		    .destination = dest,
		};
	}
	/* Devices: the host's node bound in, and allowed in the devices cgroup. */
	const char **rules = strv_new(r, cc->n_devices);
	for (size_t i = 0; i < cc->n_devices; i++) {
		const Runtime__V1__Device *d = cc->devices[i];
		const spec_device *node = in->devices ? &in->devices[i] : NULL;
		if (!d->host_path || !node || node->errno_value)
			return ad_error_make(err, AD_E_INVALID, node ? node->errno_value : 0,
					     "device %s", d->host_path ? d->host_path : "");
		if (!S_ISCHR(node->mode) && !S_ISBLK(node->mode))
			return ad_fail(err, AD_E_INVALID, "device %s is not a device node",
				       d->host_path);
		const char *perms = d->permissions && *d->permissions ? d->permissions : "rwm";
		if (perms[strspn(perms, "rwm")] != '\0')
			return ad_fail(err, AD_E_INVALID, "device %s: bad permissions '%s'",
				       d->host_path, perms);
		const char *dest =
		    d->container_path && *d->container_path ? d->container_path : d->host_path;
		if (dest[0] != '/')
			return ad_fail(err, AD_E_INVALID,
				       "device %s: container path '%s' is not "
				       "absolute",
				       d->host_path, dest);
		rules[i] = keep(r, ad_asprintf("%c %u:%u %s", S_ISCHR(node->mode) ? 'c' : 'b',
					       node->major, node->minor, perms));
		mv[n++] = (rt_mount){.type = "bind",
				     .source = d->host_path,
				     .destination = dest,
				     .readonly = !strchr(perms, 'w')};
	}
	if (cc->n_devices && !rc->security.privileged)
		rc->security.device_rules = rules;
	rc->mounts = mv;
	rc->n_mounts = n;
	return 0;
}

static Runtime__V1__NamespaceMode pod_mode(const Runtime__V1__PodSandboxConfig *pc, char which)
{
	const Runtime__V1__NamespaceOption *o = pc && pc->linux && pc->linux->security_context
						    ? pc->linux->security_context->namespace_options
						    : NULL;
	if (!o)
		return RUNTIME__V1__NAMESPACE_MODE__POD;
	return which == 'n' ? o->network : o->ipc;
}

static int build_namespaces(spec_result *r, const spec_input *in, rt_config *rc, ad_error **err)
{
	const Runtime__V1__ContainerConfig *cc = in->config;
	pid_t infra = in->infra_pid;
	char *ipc = keep(r, ad_asprintf("/proc/%d/ns/ipc", (int)infra));
	char *uts = keep(r, ad_asprintf("/proc/%d/ns/uts", (int)infra));
	char *pid = keep(r, ad_asprintf("/proc/%d/ns/pid", (int)infra));
	if (pod_mode(in->pod, 'n') == RUNTIME__V1__NAMESPACE_MODE__NODE) {
		rc->namespaces[RT_NS_NET].mode = RT_NS_SHARE_HOST;
		rc->namespaces[RT_NS_UTS].mode = RT_NS_SHARE_HOST;
	} else {
		rc->namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, in->netns};
		rc->namespaces[RT_NS_UTS] = (rt_namespace){RT_NS_JOIN, uts};
	}
	if (pod_mode(in->pod, 'i') == RUNTIME__V1__NAMESPACE_MODE__NODE)
		rc->namespaces[RT_NS_IPC].mode = RT_NS_SHARE_HOST;
	else
		rc->namespaces[RT_NS_IPC] = (rt_namespace){RT_NS_JOIN, ipc};
	if (in->pod_userns)
		rc->namespaces[RT_NS_USER] = (rt_namespace){
		    RT_NS_JOIN, keep(r, ad_asprintf("/proc/%d/ns/user", (int)infra))};
	const Runtime__V1__NamespaceOption *o = cc->linux && cc->linux->security_context
						    ? cc->linux->security_context->namespace_options
						    : NULL;
	/* Without options a container gets its own pid namespace (Kubernetes'
	 * default, shareProcessNamespace false). */
	Runtime__V1__NamespaceMode pm = o ? o->pid : RUNTIME__V1__NAMESPACE_MODE__CONTAINER;
	switch (pm) {
	case RUNTIME__V1__NAMESPACE_MODE__POD:
		rc->namespaces[RT_NS_PID] = (rt_namespace){RT_NS_JOIN, pid};
		break;
	case RUNTIME__V1__NAMESPACE_MODE__NODE:
		rc->namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
		break;
	case RUNTIME__V1__NAMESPACE_MODE__TARGET:
		if (in->target_pid <= 0)
			return ad_fail(err, AD_E_INVALID,
				       "namespace_options: pid mode TARGET needs a target");
		rc->namespaces[RT_NS_PID] = (rt_namespace){
		    RT_NS_JOIN, keep(r, ad_asprintf("/proc/%d/ns/pid", (int)in->target_pid))};
		break;
	default:
		rc->namespaces[RT_NS_PID].mode = RT_NS_NEW;
		break;
	}
	return 0;
}

int spec_build(const spec_input *in, spec_result *ret, ad_error **err)
{
	*ret = (spec_result){0};
	const Runtime__V1__ContainerConfig *cc = in->config;
	const Runtime__V1__PodSandboxConfig *pc = in->pod;
	json_t *img = json_loads(in->image_config ? in->image_config : "{}", 0, NULL);
	ret->image = img;
	rt_config *rc = &ret->cfg;
	rt_config_init(rc);
	rc->id = in->id;
	rc->rootfs = in->rootfs;
	rc->args = build_args(ret, cc, img);
	if (!rc->args[0])
		return ad_fail(err, AD_E_INVALID,
			       "container %s: no command (neither the config nor"
			       " the image has one)",
			       cc->metadata && cc->metadata->name ? cc->metadata->name : "");
	rc->env = build_env(ret, cc, img);
	const char *wd = json_string_value(image_cfg_get(img, "WorkingDir"));
	rc->cwd = cc->working_dir && *cc->working_dir ? cc->working_dir : wd && *wd ? wd : NULL;
	rc->tty = cc->tty;
	/* stdin: a pipe the shim holds open (fed by attach), so the process
	 * does not read EOF at once. */
	rc->open_stdin = cc->stdin;
	rc->stdin_once = cc->stdin_once;
	rc->log_path = in->log_path && *in->log_path ? in->log_path : NULL;
	spec_resources(cc->linux ? cc->linux->resources : NULL, rc);
	/* agentd's unit raises its own RLIMIT_NOFILE far up (it holds fds per
	 * container and connection); a container must not inherit that: it gets
	 * what systemd gives services, soft 1024 for select() users, hard
	 * 524288 (agentd's hard limit if lower: raising one needs
	 * CAP_SYS_RESOURCE). */
	rt_rlimit *nofile = keep(ret, ad_malloc0(sizeof(*nofile)));
	uint64_t hard = in->nofile_max && in->nofile_max < SPEC_NOFILE_HARD ? in->nofile_max
									    : SPEC_NOFILE_HARD;
	*nofile = (rt_rlimit){RLIMIT_NOFILE, hard < SPEC_NOFILE_SOFT ? hard : SPEC_NOFILE_SOFT,
			      hard};
	rc->rlimits = nofile;
	rc->n_rlimits = 1;
	/* The pod's cgroup (kubelet's cgroupfs path), shared by all its containers. */
	if (pc && pc->linux && pc->linux->cgroup_parent && *pc->linux->cgroup_parent)
		rc->cgroup_parent = pc->linux->cgroup_parent;
	if (build_user(ret, in, img, rc, err) < 0 || build_security(ret, cc, rc, err) < 0 ||
	    build_mounts(ret, in, rc, err) < 0 || build_namespaces(ret, in, rc, err) < 0)
		return -1;
	return 0;
}
