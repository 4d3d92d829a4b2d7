/* A pod's infra process: agentd-infra from its read-only rootfs (or a
 * configured pause image), which holds the pod's namespaces and runs with the
 * sandbox's security context. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "pods_int.h"

#define INFRA_BINARY "agentd-infra"
#define INFRA_STOP_GRACE_MS 2000

/* A configured pause image: its rootfs (mounted for the pod) and its
 * Entrypoint + Cmd, Env, WorkingDir and numeric User. */
typedef struct pause_spec {
	char *rootfs;
	const char **args, **env;
	json_t *cfg;
} pause_spec;

static void pause_spec_clear(pause_spec *s)
{
	free(s->rootfs);
	free(s->args);
	free(s->env);
	json_decref(s->cfg);
	*s = (pause_spec){0};
}

static const char **json_strv(json_t *a, json_t *b)
{
	size_t n = 0;
	const char **v = ad_malloc0((json_array_size(a) + json_array_size(b) + 1) * sizeof(char *));
	for (size_t i = 0; i < json_array_size(a); i++)
		if (json_is_string(json_array_get(a, i)))
			v[n++] = json_string_value(json_array_get(a, i));
	for (size_t i = 0; i < json_array_size(b); i++)
		if (json_is_string(json_array_get(b, i)))
			v[n++] = json_string_value(json_array_get(b, i));
	return v;
}

static int pause_prepare(mgr *m, const mgr_pod *p, pause_spec *s, rt_config *rc, ad_error **err)
{
	store_image *img = NULL;
	if (!m->images)
		return ad_fail(err, AD_E_UNAVAILABLE, "the image store is not open");
	if (store_image_get(m->images, m->pause_image, &img, err) < 0)
		return ad_error_wrap(err, "pause image (pull it first)");
	s->cfg = json_loads(img->config_json ? img->config_json : "{}", 0, NULL);
	int r = store_rootfs_mount(m->images, img->id, p->infra_id, &s->rootfs, err);
	store_image_free(img);
	if (r < 0)
		return ad_error_wrap(err, "pause image");
	json_t *c = json_object_get(s->cfg, "config");
	s->args = json_strv(json_object_get(c, "Entrypoint"), json_object_get(c, "Cmd"));
	s->env = json_strv(json_object_get(c, "Env"), NULL);
	if (!s->args[0])
		return ad_fail(err, AD_E_INVALID, "pause image %s has no command", m->pause_image);
	rc->rootfs = s->rootfs;
	rc->args = s->args;
	rc->env = s->env;
	const char *wd = json_string_value(json_object_get(c, "WorkingDir"));
	rc->cwd = wd && *wd ? wd : NULL;
	const char *user = json_string_value(json_object_get(c, "User"));
	if (user && *user) {
		char *end;
		unsigned long uid = strtoul(user, &end, 10), gid = 0;
		if (*end == ':')
			gid = strtoul(end + 1, &end, 10);
		if (*end)
			return ad_fail(err, AD_E_INVALID,
				       "pause image user '%s': only numeric ids are supported",
				       user);
		rc->uid = (uid_t)uid;
		rc->gid = (gid_t)gid;
	}
	return 0;
}

int mgr_infra_start(mgr *m, const mgr_pod *p, const mgr_pod_spec *spec, pid_t *ret_pid,
		    ad_error **err)
{
	static const char *const args[] = {"/" INFRA_BINARY, NULL};
	rt_config rc;
	rt_config_init(&rc);
	rc.id = p->infra_id;
	rc.rootfs = m->infra_rootfs;
	rc.args = args;
	pause_spec ps = {0};
	if (m->pause_image && pause_prepare(m, p, &ps, &rc, err) < 0) {
		pause_spec_clear(&ps);
		return -1;
	}
	rc.security.readonly_rootfs = true;
	rc.security.no_new_privs = true;
	/* The pod's user namespace is the infra process's; its containers join
	 * it. Its rootfs needs no mapping: nothing there is written, and what is
	 * read and run is world-readable. */
	if (p->n_uid_maps) {
		rc.namespaces[RT_NS_USER].mode = RT_NS_NEW;
		rc.uid_maps = p->uid_maps;
		rc.n_uid_maps = p->n_uid_maps;
		rc.gid_maps = p->gid_maps;
		rc.n_gid_maps = p->n_gid_maps;
	}
	if (spec->cgroup_parent && *spec->cgroup_parent)
		rc.cgroup_parent = spec->cgroup_parent;
	/* pause needs no capability at all, whatever the sandbox's privileged
	 * says (that is for its containers, which say so themselves). */
	rc.security.capabilities_set = true;
	/* The sandbox's security context: its user, groups and profiles are the
	 * infra process's, as containerd applies them to pause. */
	if (spec->run_as_user_set)
		rc.uid = spec->run_as_user;
	if (spec->run_as_group_set)
		rc.gid = spec->run_as_group;
	rc.additional_gids = spec->supplemental_groups;
	rc.n_additional_gids = spec->n_supplemental_groups;
	rc.security.seccomp = spec->seccomp;
	rc.security.seccomp_profile = spec->seccomp_profile;
	rc.security.apparmor_profile = spec->apparmor_profile;
	if (spec->network == MGR_NS_NODE) {
		rc.namespaces[RT_NS_NET].mode = RT_NS_SHARE_HOST;
		rc.namespaces[RT_NS_UTS].mode = RT_NS_SHARE_HOST;
	} else {
		rc.namespaces[RT_NS_NET] = (rt_namespace){RT_NS_JOIN, p->netns};
		rc.hostname = p->hostname && *p->hostname ? p->hostname : p->name;
	}
	if (spec->ipc == MGR_NS_NODE)
		rc.namespaces[RT_NS_IPC].mode = RT_NS_SHARE_HOST;
	if (spec->pid == MGR_NS_NODE)
		rc.namespaces[RT_NS_PID].mode = RT_NS_SHARE_HOST;
	rt_container *c = NULL;
	int r = rt_create(m->rt, &rc, &c, err);
	pause_spec_clear(&ps);
	if (r < 0)
		return ad_error_wrap(err, "infra process");
	r = rt_start(c, err);
	if (r < 0) {
		_cleanup_error_ ad_error *e2 = NULL;
		rt_delete(c, &e2);
		ad_error_wrap(err, "infra process");
	}
	*ret_pid = rt_container_init_pid(c);
	rt_container_free(c);
	return r;
}

int mgr_infra_stop(mgr *m, const char *infra_id, bool delete, ad_error **err)
{
	if (!infra_id)
		return 0;
	rt_container *c = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_open(m->rt, infra_id, &c, &e) < 0)
		return 0; /* already gone */
	int r = rt_stop(c, SIGTERM, INFRA_STOP_GRACE_MS, err);
	if (r == 0 && delete)
		r = rt_delete(c, err);
	rt_container_free(c);
	return r;
}

int mgr_pod_infra_stats(mgr *m, const mgr_pod *p, rt_stats *ret, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (p->state != MGR_POD_READY || !p->infra_id)
		return ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	if (rt_running_stats(m->rt, p->infra_id, ret) && ret->timestamp_ns)
		return 0; /* most calls: through its kept handle (CRI pod stats) */
	rt_container *c = NULL;
	if (rt_open(m->rt, p->infra_id, &c, err) < 0)
		return -1;
	int r = rt_get_stats(c, ret, err);
	rt_container_free(c);
	return r;
}

/* The infra binary: AGENTD_INFRA, else ours (a build tree or installed). */
static char *find_infra_binary(void)
{
	const char *env = getenv("AGENTD_INFRA");
	if (env && *env)
		return ad_strdup(env);
	static const char *const near_self[] = {"pods/infra/" INFRA_BINARY, INFRA_BINARY, NULL};
	return ad_find_helper(INFRA_BINARY, near_self);
}

/* <root>/infra-rootfs: the binary and the mount points, nothing else. */
int mgr_infra_rootfs_make(mgr *m, ad_error **err)
{
	static const char *const dirs[] = {"proc", "dev", "sys", "etc", "tmp"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		_cleanup_free_ char *d = ad_asprintf("%s/%s", m->infra_rootfs, dirs[i]);
		if (ad_mkdir_p(d, 0755, err) < 0)
			return -1;
	}
	_cleanup_free_ char *src = find_infra_binary();
	_cleanup_free_ char *data = NULL;
	size_t len;
	if (ad_read_file(AT_FDCWD, src, 16 << 20, &data, &len, err) < 0)
		return ad_error_wrap(err, "infra binary");
	_cleanup_close_ int fd = open(m->infra_rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", m->infra_rootfs);
	return ad_write_file_atomic(fd, INFRA_BINARY, data, len, 0755, err);
}
