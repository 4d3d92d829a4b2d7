/* CreateContainer, StartContainer, StopContainer, RemoveContainer,
 * ListContainers, ContainerStatus, UpdateContainerResources,
 * ReopenContainerLog. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <jansson.h>

#include "cri_int.h"
#include "pbjson.h"
#include "spec.h"
#include "validate.h"

/* ---- CreateContainer: the runtime config is built here, once ---------------- */
/* A file of the rootfs (resolved inside it), NULL if it has none. */
static char *read_in_rootfs(const char *rootfs, const char *path)
{
	_cleanup_close_ int root = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return NULL;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_close_ int fd = ad_openat_in_root(root, path, O_RDONLY, 0, &e);
	if (fd < 0)
		return NULL;
	size_t len = 0, cap = 4096;
	char *buf = ad_malloc0(cap + 1);
	for (;;) {
		if (len == cap) {
			if (cap >= (4u << 20))
				break;
			cap *= 2;
			buf = ad_realloc(buf, cap + 1);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

/* The host's device nodes the config names (free them). */
static spec_device *stat_devices(const Runtime__V1__ContainerConfig *cc)
{
	spec_device *v = ad_malloc0((cc->n_devices + 1) * sizeof(*v));
	for (size_t i = 0; i < cc->n_devices; i++) {
		struct stat sb;
		const char *path = cc->devices[i]->host_path;
		if (!path || stat(path, &sb) < 0) {
			v[i] = (spec_device){.errno_value = path ? errno : ENOENT};
			continue;
		}
		v[i] = (spec_device){.mode = sb.st_mode & S_IFMT,
				     .major = major(sb.st_rdev),
				     .minor = minor(sb.st_rdev)};
	}
	return v;
}

/* A missing host path becomes a directory, as kubelet's hostPath
 * DirectoryOrCreate and containerd do. */
static int make_mount_sources(const Runtime__V1__ContainerConfig *cc, ad_error **err)
{
	for (size_t i = 0; i < cc->n_mounts; i++) {
		const Runtime__V1__Mount *cm = cc->mounts[i];
		struct stat sb;
		if (stat(cm->host_path, &sb) < 0 && ad_mkdir_p(cm->host_path, 0755, err) < 0)
			return ad_error_wrap(err, "mount %s", cm->container_path);
		if (cm->selinux_relabel)
			ad_warn("mount %s: SELinux relabel requested; SELinux is not used here",
				cm->container_path);
	}
	return 0;
}

/* CRI's Signal enum is in the order of the names (SIGABRT = 1, SIGALRM = 2,
 * ...), not Linux's numbering: the Linux signal its value names, 0 for
 * RUNTIME_DEFAULT or a value it does not know (the runtime's default). */
static int linux_signal(Runtime__V1__Signal s)
{
	const ProtobufCEnumValue *v =
	    protobuf_c_enum_descriptor_get_value(&runtime__v1__signal__descriptor, (int)s);
	if (!v || s == RUNTIME__V1__SIGNAL__RUNTIME_DEFAULT || strncmp(v->name, "SIG", 3) != 0)
		return 0;
	const char *name = v->name + 3;
	if (strncmp(name, "RTMINPLUS", 9) == 0)
		return SIGRTMIN + atoi(name + 9);
	if (strncmp(name, "RTMAXMINUS", 10) == 0)
		return SIGRTMAX - atoi(name + 10);
	if (strcmp(name, "RTMIN") == 0)
		return SIGRTMIN;
	if (strcmp(name, "RTMAX") == 0)
		return SIGRTMAX;
	static const struct {
		const char *alias, *name;
	} aliases[] = {{"CLD", "CHLD"}, {"POLL", "IO"}, {"IOT", "ABRT"}};
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(name, aliases[i].alias) == 0)
			name = aliases[i].name;
	for (int sig = 1; sig < SIGRTMIN; sig++) {
		const char *abbrev = sigabbrev_np(sig);
		if (abbrev && strcmp(abbrev, name) == 0)
			return sig;
	}
	return 0;
}

/* agentd's hard RLIMIT_NOFILE: a container's own cannot be higher. */
static uint64_t nofile_max(void)
{
	struct rlimit rl;
	return getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY
		   ? (uint64_t)rl.rlim_max
		   : 0;
}

static const Runtime__V1__NamespaceOption *ns_options(const Runtime__V1__ContainerConfig *cc)
{
	return cc->linux && cc->linux->security_context
		   ? cc->linux->security_context->namespace_options
		   : NULL;
}

/* The container's runtime config from its CRI config, its image's config
 * and what the draft has set up (rootfs, the pod's namespaces). */
static int build_in_draft(const mgr_ctr_draft *d, const Runtime__V1__ContainerConfig *cc,
			  const Runtime__V1__PodSandboxConfig *pc, pid_t target_pid,
			  spec_result *ret, ad_error **err)
{
	_cleanup_free_ char *passwd = read_in_rootfs(d->rootfs, "/etc/passwd");
	_cleanup_free_ char *group = read_in_rootfs(d->rootfs, "/etc/group");
	_cleanup_free_ spec_device *devices = stat_devices(cc);
	spec_input in = {
	    .config = cc,
	    .pod = pc,
	    .image_config = d->ctr->image_config,
	    .id = d->ctr->id,
	    .rootfs = d->rootfs,
	    .log_path = d->ctr->log_path,
	    .pod_dir = d->pod->dir,
	    .netns = d->pod->netns,
	    .infra_pid = d->infra_pid,
	    .target_pid = target_pid,
	    .pod_userns = d->pod->n_uid_maps > 0,
	    .passwd = passwd,
	    .group = group,
	    .devices = devices,
	    .nofile_max = nofile_max(),
	};
	return spec_build(&in, ret, err);
}

/* Built here, once, and handed to the pod manager, which creates the
 * container and keeps the config. */
static int create_in_draft(rpc_call *call, mgr_ctr_draft *d, const Runtime__V1__ContainerConfig *cc,
			   char **ret_id, ad_error **err)
{
	const Runtime__V1__PodSandboxConfig *pc =
	    cri_unpack_in_call(call, &runtime__v1__pod_sandbox_config__descriptor,
			       d->pod->request_len, d->pod->request);
	const Runtime__V1__NamespaceOption *o = ns_options(cc);
	pid_t target = 0;
	if (o && o->pid == RUNTIME__V1__NAMESPACE_MODE__TARGET &&
	    mgr_ctr_target_pid(d->m, d->pod->id, o->target_id, &target, err) < 0) {
		mgr_ctr_abort(d, err);
		return -1;
	}
	spec_result res;
	if (build_in_draft(d, cc, pc, target, &res, err) < 0 || make_mount_sources(cc, err) < 0) {
		spec_result_clear(&res);
		mgr_ctr_abort(d, err);
		return -1;
	}
	int r = mgr_ctr_commit(d, &res.cfg, ret_id, err);
	spec_result_clear(&res);
	return r;
}

/* One container an older agentd created: its config from the CRI config
 * and pod config that agentd stored, as CreateContainer builds it now. */
static int backfill_one(mgr_ctr_draft *d, ad_error **err)
{
	Runtime__V1__ContainerConfig *cc =
	    runtime__v1__container_config__unpack(NULL, d->ctr->request_len, d->ctr->request);
	Runtime__V1__PodSandboxConfig *pc =
	    d->pod->request_len ? runtime__v1__pod_sandbox_config__unpack(NULL, d->pod->request_len,
									  d->pod->request)
				: NULL;
	spec_result res = {0};
	int r = 0;
	if (!cc || (d->pod->request_len && !pc))
		r = ad_fail(err, AD_E_DATA_LOSS, "its stored CRI config is unreadable");
	const Runtime__V1__NamespaceOption *o = cc ? ns_options(cc) : NULL;
	pid_t target = 0;
	/* A running container is in its target's pid namespace already: its
	 * own init names it, whether the target still runs or not. */
	if (r == 0 && o && o->pid == RUNTIME__V1__NAMESPACE_MODE__TARGET) {
		if (d->init_pid > 0)
			target = d->init_pid;
		else
			r = mgr_ctr_target_pid(d->m, d->pod->id, o->target_id, &target, err);
	}
	if (r == 0)
		r = build_in_draft(d, cc, pc, target, &res, err);
	int stop_signal = cc ? linux_signal(cc->stop_signal) : 0;
	if (r < 0) {
		spec_result_clear(&res);
		mgr_ctr_backfill_end(d, NULL, 0, NULL);
	} else {
		r = mgr_ctr_backfill_end(d, &res.cfg, stop_signal, err);
		spec_result_clear(&res);
	}
	if (cc)
		runtime__v1__container_config__free_unpacked(cc, NULL);
	if (pc)
		runtime__v1__pod_sandbox_config__free_unpacked(pc, NULL);
	return r;
}

void cri_backfill_runtime_configs(cri_service *svc)
{
	if (!svc->pods)
		return;
	char **ids = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_backfill_ids(svc->pods, &ids, &e) < 0) {
		ad_warn("containers of an older agentd: %s", e->message);
		return;
	}
	for (char **id = ids; *id; id++) {
		mgr_ctr_draft *d = NULL;
		ad_error_free(&e);
		if (mgr_ctr_backfill_begin(svc->pods, *id, &d, &e) < 0 ||
		    (d && backfill_one(d, &e) < 0))
			ad_warn("container %s (created by an older agentd): no runtime config: %s",
				*id, e->message);
		else if (d)
			ad_info("container %s (created by an older agentd): runtime config rebuilt "
				"from its CRI config",
				*id);
	}
	mgr_strv_free(ids);
}

rpc_code cri_create_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__CreateContainerRequest *q = req;
	if (cri_empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	if (!q->config)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "CreateContainer: config is required");
	const Runtime__V1__ContainerConfig *cc = q->config;
	ad_error *e = NULL;
	if (cri_validate_container_config(cc, &e) < 0)
		return cri_fail(call, e);
	/* The request itself is kept: status and list answers carry the
	 * caller's metadata, labels, annotations and mounts back. */
	size_t len = protobuf_c_message_get_packed_size(&cc->base);
	uint8_t *packed = rpc_call_alloc(call, len + 1);
	protobuf_c_message_pack(&cc->base, packed);
	mgr_ctr_spec spec = {
	    .name = cc->metadata ? cc->metadata->name : NULL,
	    .attempt = cc->metadata ? cc->metadata->attempt : 0,
	    .image = cc->image ? cc->image->image : NULL,
	    .log_path = cc->log_path,
	    .stop_signal = linux_signal(cc->stop_signal),
	    .labels_json = cri_kv_json(call, cc->n_labels, (void *const *)cc->labels),
	    .annotations_json =
		cri_kv_json(call, cc->n_annotations, (void *const *)cc->annotations),
	    .request = packed,
	    .request_len = len,
	};
	mgr_ctr_draft *d = NULL;
	char *id = NULL;
	if (mgr_ctr_begin(svc->pods, q->pod_sandbox_id, &spec, &d, &e) < 0 ||
	    create_in_draft(call, d, cc, &id, &e) < 0)
		return cri_fail(call, e);
	((Runtime__V1__CreateContainerResponse *)resp)->container_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

rpc_code cri_start_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "container_id",
			 ((const Runtime__V1__StartContainerRequest *)req)->container_id,
			 mgr_ctr_start);
}

rpc_code cri_remove_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "container_id",
			 ((const Runtime__V1__RemoveContainerRequest *)req)->container_id,
			 mgr_ctr_remove);
}

rpc_code cri_stop_container(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	mgr *m = svc->pods;
	const Runtime__V1__StopContainerRequest *q = (const Runtime__V1__StopContainerRequest *)req;
	if (cri_empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	ad_error *e = NULL;
	if (mgr_ctr_stop(m, q->container_id, q->timeout, &e) < 0)
		return cri_fail(call, e);
	return RPC_OK;
}

static Runtime__V1__ImageSpec *image_spec(rpc_call *call, const mgr_ctr *c,
					  const Runtime__V1__ContainerConfig *cfg)
{
	Runtime__V1__ImageSpec *s = rpc_call_alloc(call, sizeof(*s));
	runtime__v1__image_spec__init(s);
	s->image = rpc_call_strdup(call, c->image_id ? c->image_id : "");
	s->user_specified_image = rpc_call_strdup(call, c->image ? c->image : "");
	if (cfg && cfg->image) {
		s->annotations = cfg->image->annotations;
		s->n_annotations = cfg->image->n_annotations;
	}
	return s;
}

static void *ctr_item(rpc_call *call, mgr *m, const void *obj, void *config)
{
	(void)m;
	const mgr_ctr *c = obj;
	const Runtime__V1__ContainerConfig *cfg = config;
	Runtime__V1__Container *it = rpc_call_alloc(call, sizeof(*it));
	runtime__v1__container__init(it);
	it->id = rpc_call_strdup(call, c->id);
	it->pod_sandbox_id = rpc_call_strdup(call, c->pod_id);
	it->metadata = cfg->metadata;
	it->image = image_spec(call, c, cfg);
	it->image_ref = rpc_call_strdup(call, c->image_ref ? c->image_ref : "");
	it->image_id = rpc_call_strdup(call, c->image_id ? c->image_id : "");
	it->state = cri_ctr_state(c);
	it->created_at = c->created_ns;
	CRI_COPY_MAP(call, it, labels, runtime__v1__container__labels_entry__descriptor,
		     cfg->n_labels, cfg->labels);
	CRI_COPY_MAP(call, it, annotations, runtime__v1__container__annotations_entry__descriptor,
		     cfg->n_annotations, cfg->annotations);
	return it;
}

rpc_code cri_list_containers(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__ContainerFilter *f =
	    ((const Runtime__V1__ListContainersRequest *)req)->filter;
	Runtime__V1__ListContainersResponse *r = resp;
	cri_list_filter lf = CRI_LIST_FILTER(f);
	if (f && f->state)
		lf.state = (int)f->state->state;
	if (f && !cri_empty(f->pod_sandbox_id))
		lf.pod_id = f->pod_sandbox_id;
	return cri_list(call, svc->pods, CRI_LIST_CONTAINERS, &lf, ctr_item,
			(void ***)&r->containers, &r->n_containers);
}

static json_t *strv_json(const char *const *v)
{
	json_t *a = json_array();
	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* A summary of the stored runtime config of a created or running container
 * (an OCI-spec-like "runtimeSpec" for ContainerStatus verbose), or NULL;
 * *ret_pid: its process while running, else 0. */
static json_t *runtime_spec_json(mgr *m, const mgr_ctr *c, pid_t *ret_pid)
{
	rt_config cfg;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_runtime_config(m, c, &cfg, ret_pid, &e) < 0)
		return NULL;
	const rt_config *rcfg = &cfg;
	static const char *const ns_names[_RT_NS_MAX] = {
	    [RT_NS_PID] = "pid",      [RT_NS_NET] = "network", [RT_NS_IPC] = "ipc",
	    [RT_NS_UTS] = "uts",      [RT_NS_MOUNT] = "mount", [RT_NS_USER] = "user",
	    [RT_NS_CGROUP] = "cgroup"};
	json_t *ns = json_array();
	for (int i = 0; i < _RT_NS_MAX; i++) {
		if (rcfg->namespaces[i].mode == RT_NS_SHARE_HOST)
			continue;
		json_t *o = json_pack("{s:s}", "type", ns_names[i]);
		if (rcfg->namespaces[i].mode == RT_NS_JOIN && rcfg->namespaces[i].path)
			json_object_set_new(o, "path", json_string(rcfg->namespaces[i].path));
		json_array_append_new(ns, o);
	}
	json_t *gids = json_array();
	for (size_t i = 0; i < rcfg->n_additional_gids; i++)
		json_array_append_new(gids, json_integer(rcfg->additional_gids[i]));
	const rt_resources *rr = &rcfg->resources;
	json_t *res = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:s*, s:s*}", "cpuShares", (json_int_t)rr->cpu_shares,
	    "cpuQuota", (json_int_t)rr->cpu_quota_us, "cpuPeriod", (json_int_t)rr->cpu_period_us,
	    "memoryLimit", (json_int_t)rr->memory_limit, "memorySwap", (json_int_t)rr->memory_swap,
	    "cpusetCpus", rr->cpuset_cpus, "cpusetMems", rr->cpuset_mems);
	json_t *spec = json_pack(
	    "{s:{s:o, s:o, s:s, s:b, s:{s:i, s:i, s:o}},"
	    " s:{s:o, s:s*, s:o, s:b, s:b}}",
	    "process", "args", strv_json(rcfg->args), "env", strv_json(rcfg->env), "cwd",
	    rcfg->cwd ? rcfg->cwd : "/", "terminal", rcfg->tty, "user", "uid", (int)rcfg->uid,
	    "gid", (int)rcfg->gid, "additionalGids", gids, "linux", "namespaces", ns,
	    "cgroupsParent", rcfg->cgroup_parent, "resources", res, "privileged",
	    rcfg->security.privileged, "readonlyRootfs", rcfg->security.readonly_rootfs);
	rt_config_unpacked_clear(&cfg);
	return spec;
}

/* Of a running container, as agentctl inspect and top show them: its
 * init's capability sets (hex masks, as /proc/PID/status has them) and the
 * processes of its cgroup. */
static void add_process_info(mgr *m, const mgr_ctr *c, json_t *o)
{
	_cleanup_error_ ad_error *e = NULL;
	mgr_caps caps;
	if (mgr_ctr_caps(m, c, &caps, &e) == 0) {
		const struct {
			const char *name;
			uint64_t mask;
		} sets[] = {{"effective", caps.effective},   {"permitted", caps.permitted},
			    {"inheritable", caps.inheritable}, {"bounding", caps.bounding},
			    {"ambient", caps.ambient}};
		json_t *j = json_object();
		for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
			char hex[17];
			snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)sets[i].mask);
			json_object_set_new(j, sets[i].name, json_string(hex));
		}
		json_object_set_new(o, "capabilities", j);
	}
	ad_error_free(&e);
	mgr_proc *procs = NULL;
	size_t n = 0;
	if (mgr_ctr_processes(m, c, &procs, &n, &e) == 0) {
		json_t *a = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(
			    a, json_pack("{s:i, s:i, s:I, s:s, s:s, s:I, s:I, s:s}", "pid",
					 (int)procs[i].pid, "ppid", (int)procs[i].ppid, "uid",
					 (json_int_t)procs[i].uid, "user", procs[i].user, "tty",
					 procs[i].tty, "cpuNanos", (json_int_t)procs[i].cpu_ns,
					 "startedAt", (json_int_t)procs[i].started_ns, "command",
					 procs[i].command));
		mgr_procs_free(procs, n);
		json_object_set_new(o, "processes", a);
	}
}

rpc_code cri_container_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__ContainerStatusRequest *q =
	    (const Runtime__V1__ContainerStatusRequest *)req;
	mgr_ctr *c = NULL;
	Runtime__V1__ContainerConfig *cfg = NULL;
	rpc_code rc = cri_get_ctr(call, m, q->container_id, &c, &cfg);
	if (rc != RPC_OK)
		return rc;
	Runtime__V1__ContainerStatus *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__container_status__init(st);
	st->id = rpc_call_strdup(call, c->id);
	st->state = cri_ctr_state(c);
	st->created_at = c->created_ns;
	st->started_at = c->started_ns;
	st->finished_at = c->finished_ns;
	st->exit_code = c->exit_code;
	st->image = image_spec(call, c, cfg);
	st->image_ref = rpc_call_strdup(call, c->image_ref ? c->image_ref : "");
	st->image_id = rpc_call_strdup(call, c->image_id ? c->image_id : "");
	st->reason = rpc_call_strdup(call, c->reason ? c->reason : "");
	st->message = rpc_call_strdup(call, c->message ? c->message : "");
	st->log_path = rpc_call_strdup(call, c->log_path ? c->log_path : "");
	if (cfg) {
		st->metadata = cfg->metadata;
		CRI_COPY_MAP(call, st, labels,
			     runtime__v1__container_status__labels_entry__descriptor, cfg->n_labels,
			     cfg->labels);
		CRI_COPY_MAP(call, st, annotations,
			     runtime__v1__container_status__annotations_entry__descriptor,
			     cfg->n_annotations, cfg->annotations);
		st->mounts = cfg->mounts;
		st->n_mounts = cfg->n_mounts;
		st->stop_signal = cfg->stop_signal;
		/* As applied: UpdateContainerResources rewrites the stored ones. */
		if (cfg->linux && cfg->linux->resources) {
			Runtime__V1__ContainerResources *res = rpc_call_alloc(call, sizeof(*res));
			runtime__v1__container_resources__init(res);
			res->linux = cfg->linux->resources;
			st->resources = res;
		}
	}
	mgr_user u;
	ad_error *e = NULL;
	if (mgr_ctr_user(m, c, &u, &e) == 0) {
		Runtime__V1__LinuxContainerUser *lu = rpc_call_alloc(call, sizeof(*lu));
		runtime__v1__linux_container_user__init(lu);
		lu->uid = u.uid;
		lu->gid = u.gid;
		lu->supplemental_groups = rpc_call_alloc(call, (u.n_groups + 1) * sizeof(int64_t));
		for (size_t i = 0; i < u.n_groups; i++)
			lu->supplemental_groups[i] = u.groups[i];
		lu->n_supplemental_groups = u.n_groups;
		Runtime__V1__ContainerUser *cu = rpc_call_alloc(call, sizeof(*cu));
		runtime__v1__container_user__init(cu);
		cu->linux = lu;
		st->user = cu;
	}
	ad_error_free(&e);
	Runtime__V1__ContainerStatusResponse *r = (Runtime__V1__ContainerStatusResponse *)resp;
	r->status = st;
	if (q->verbose) {
		/* The keys containerd and CRI-O use: sandboxID, pid, runtimeSpec,
		 * config. */
		pid_t pid = 0;
		json_t *spec = runtime_spec_json(m, c, &pid);
		json_t *o =
		    json_pack("{s:s, s:s, s:i, s:s, s:s, s:s*}", "id", c->id, "sandboxID",
			      c->pod_id, "pid", (int)pid, "image", c->image ? c->image : "",
			      "imageId", c->image_id ? c->image_id : "", "logPath", c->log_path);
		if (spec)
			json_object_set_new(o, "runtimeSpec", spec);
		if (pid)
			add_process_info(m, c, o);
		/* The config as CreateContainer got it (after live updates of its
		 * resources), in containerd's info.config form. */
		if (cfg)
			json_object_set_new(o, "config",
					    pbjson_from_message(&cfg->base, PBJSON_GO));
		char *s = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		Runtime__V1__ContainerStatusResponse__InfoEntry *ie =
		    rpc_call_alloc(call, sizeof(*ie));
		runtime__v1__container_status_response__info_entry__init(ie);
		ie->key = rpc_call_strdup(call, "info");
		ie->value = rpc_call_strdup(call, s);
		free(s);
		r->info = rpc_call_alloc(call, sizeof(*r->info));
		r->info[0] = ie;
		r->n_info = 1;
	}
	mgr_ctr_free(c);
	return RPC_OK;
}

rpc_code cri_update_container_resources(rpc_call *call, cri_service *svc, const void *req,
					void *resp)
{
	(void)resp;
	mgr *m = svc->pods;
	const Runtime__V1__UpdateContainerResourcesRequest *q = req;
	if (cri_empty(q->container_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	if (!q->linux)
		return RPC_OK;
	ad_error *e = NULL;
	mgr_ctr *c = NULL;
	if (mgr_ctr_get(m, q->container_id, &c, &e) < 0)
		return cri_fail(call, e);
	/* The stored request gets the new resources too, so ContainerStatus
	 * reports what is applied now (containerd likewise updates the
	 * container's spec). */
	Runtime__V1__ContainerConfig *cc = cri_unpack_in_call(
	    call, &runtime__v1__container_config__descriptor, c->request_len, c->request);
	uint8_t *packed = NULL;
	size_t len = 0;
	if (cc) {
		Runtime__V1__LinuxContainerConfig lc = RUNTIME__V1__LINUX_CONTAINER_CONFIG__INIT;
		if (!cc->linux)
			cc->linux = &lc;
		cc->linux->resources = q->linux;
		len = protobuf_c_message_get_packed_size(&cc->base);
		packed = rpc_call_alloc(call, len + 1);
		protobuf_c_message_pack(&cc->base, packed);
	}
	mgr_ctr_free(c);
	rt_config res = {0};
	spec_resources(q->linux, &res);
	if (mgr_ctr_update(m, q->container_id, &res.resources, packed, len, &e) < 0)
		return cri_fail(call, e);
	return RPC_OK;
}

rpc_code cri_reopen_container_log(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "container_id",
			 ((const Runtime__V1__ReopenContainerLogRequest *)req)->container_id,
			 mgr_ctr_reopen_log);
}
