/* RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
 * ListPodSandbox. */
#include <string.h>

#include <jansson.h>

#include "pbjson.h"
#include "cri_int.h"

#include "spec.h"
#include "validate.h"

static mgr_ns_mode pod_ns_mode(const Runtime__V1__PodSandboxConfig *cfg, char which)
{
	const Runtime__V1__NamespaceOption *o =
	    cfg->linux && cfg->linux->security_context
		? cfg->linux->security_context->namespace_options
		: NULL;
	if (!o)
		return MGR_NS_POD;
	return (mgr_ns_mode)(which == 'n' ? o->network : which == 'p' ? o->pid : o->ipc);
}

/* A repeated string field as a NULL-terminated list in call memory. */
static const char *const *call_strv(rpc_call *call, char **v, size_t n)
{
	const char **out = rpc_call_alloc(call, (n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out[i] = v[i];
	return out;
}

static Runtime__V1__IDMapping **cri_id_mappings(rpc_call *call, const rt_id_map *maps, size_t n)
{
	Runtime__V1__IDMapping **v = rpc_call_alloc(call, (n + 1) * sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		v[i] = rpc_call_alloc(call, sizeof(**v));
		runtime__v1__idmapping__init(v[i]);
		v[i]->container_id = maps[i].container_id;
		v[i]->host_id = maps[i].host_id;
		v[i]->length = maps[i].size;
	}
	return v;
}

static const rt_id_map *id_maps(rpc_call *call, Runtime__V1__IDMapping **v, size_t n)
{
	rt_id_map *out = rpc_call_alloc(call, (n + 1) * sizeof(*out));
	for (size_t i = 0; i < n; i++)
		out[i] = (rt_id_map){.container_id = v[i]->container_id,
				     .host_id = v[i]->host_id,
				     .size = v[i]->length};
	return out;
}

/* The sandbox config as the pod manager takes it; everything it points to
 * lives in `cfg` or in call memory. */
static void pod_spec_from_cri(rpc_call *call, const Runtime__V1__PodSandboxConfig *cfg,
			      const char *runtime_handler, mgr_pod_spec *spec)
{
	const Runtime__V1__LinuxPodSandboxConfig *l = cfg->linux;
	const Runtime__V1__LinuxSandboxSecurityContext *sc = l ? l->security_context : NULL;
	*spec = (mgr_pod_spec){
	    .name = cfg->metadata->name,
	    .namespace_ = cfg->metadata->namespace_,
	    .uid = cfg->metadata->uid,
	    .attempt = cfg->metadata->attempt,
	    .hostname = cfg->hostname,
	    .log_directory = cfg->log_directory,
	    .runtime_handler = runtime_handler,
	    .cgroup_parent = l ? l->cgroup_parent : NULL,
	    .network = pod_ns_mode(cfg, 'n'),
	    .pid = pod_ns_mode(cfg, 'p'),
	    .ipc = pod_ns_mode(cfg, 'i'),
	};
	const Runtime__V1__DNSConfig *dns = cfg->dns_config;
	if (dns) {
		spec->dns_servers = call_strv(call, dns->servers, dns->n_servers);
		spec->dns_searches = call_strv(call, dns->searches, dns->n_searches);
		spec->dns_options = call_strv(call, dns->options, dns->n_options);
	}
	cni_port_mapping *ports =
	    rpc_call_alloc(call, (cfg->n_port_mappings + 1) * sizeof(cni_port_mapping));
	size_t n_ports = 0;
	for (size_t i = 0; i < cfg->n_port_mappings; i++) {
		const Runtime__V1__PortMapping *pm = cfg->port_mappings[i];
		/* No host port, nothing to publish (containerd skips them too):
		 * a container port alone is reached through the pod's IP or
		 * PortForward (critest's portforward spec sends one). */
		if (pm->host_port <= 0)
			continue;
		ports[n_ports++] = (cni_port_mapping){
		    .host_port = (uint16_t)pm->host_port,
		    .container_port = (uint16_t)pm->container_port,
		    .protocol = pm->protocol == RUNTIME__V1__PROTOCOL__UDP    ? "udp"
				: pm->protocol == RUNTIME__V1__PROTOCOL__SCTP ? "sctp"
									      : "tcp",
		    .host_ip = pm->host_ip,
		};
	}
	spec->ports = ports;
	spec->n_ports = n_ports;
	if (l && l->n_sysctls) {
		mgr_kv *kv = rpc_call_alloc(call, l->n_sysctls * sizeof(mgr_kv));
		for (size_t i = 0; i < l->n_sysctls; i++)
			kv[i] = (mgr_kv){l->sysctls[i]->key, l->sysctls[i]->value};
		spec->sysctls = kv;
		spec->n_sysctls = l->n_sysctls;
	}
	/* The infra process runs with the sandbox's security context. */
	rt_security sec = {.seccomp = RT_SECCOMP_DEFAULT};
	if (sc) {
		spec->run_as_user_set = sc->run_as_user != NULL;
		spec->run_as_user = sc->run_as_user ? (uid_t)sc->run_as_user->value : 0;
		spec->run_as_group_set = sc->run_as_group != NULL;
		spec->run_as_group = sc->run_as_group ? (gid_t)sc->run_as_group->value : 0;
		if (sc->n_supplemental_groups) {
			gid_t *g = rpc_call_alloc(call, sc->n_supplemental_groups * sizeof(gid_t));
			for (size_t i = 0; i < sc->n_supplemental_groups; i++)
				g[i] = (gid_t)sc->supplemental_groups[i];
			spec->supplemental_groups = g;
			spec->n_supplemental_groups = sc->n_supplemental_groups;
		}
		spec_security_profiles(sc->seccomp, sc->apparmor, &sec);
	}
	const Runtime__V1__UserNamespace *u =
	    sc && sc->namespace_options ? sc->namespace_options->userns_options : NULL;
	if (u && u->mode == RUNTIME__V1__NAMESPACE_MODE__POD) {
		spec->userns = true;
		spec->uid_maps = id_maps(call, u->uids, u->n_uids);
		spec->n_uid_maps = u->n_uids;
		spec->gid_maps = id_maps(call, u->gids, u->n_gids);
		spec->n_gid_maps = u->n_gids;
	}
	spec->seccomp = sec.seccomp;
	spec->seccomp_profile = sec.seccomp_profile;
	spec->apparmor_profile = sec.apparmor_profile;
	spec->labels_json = cri_kv_json(call, cfg->n_labels, (void *const *)cfg->labels);
	spec->annotations_json =
	    cri_kv_json(call, cfg->n_annotations, (void *const *)cfg->annotations);
	/* The request itself, so that status and list answers carry the
	 * caller's metadata, labels and annotations back. */
	spec->request_len = protobuf_c_message_get_packed_size(&cfg->base);
	uint8_t *packed = rpc_call_alloc(call, spec->request_len + 1);
	protobuf_c_message_pack(&cfg->base, packed);
	spec->request = packed;
}

rpc_code cri_run_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__RunPodSandboxRequest *q = req;
	if (!q->config)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "RunPodSandbox: config is required");
	ad_error *e = NULL;
	if (cri_validate_pod_config(q->config, &e) < 0)
		return cri_fail(call, e);
	mgr_pod_spec spec;
	pod_spec_from_cri(call, q->config, q->runtime_handler, &spec);
	char *id = NULL;
	if (mgr_pod_run(svc->pods, &spec, &id, &e) < 0)
		return cri_fail(call, e);
	((Runtime__V1__RunPodSandboxResponse *)resp)->pod_sandbox_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

rpc_code cri_stop_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "pod_sandbox_id",
			 ((const Runtime__V1__StopPodSandboxRequest *)req)->pod_sandbox_id,
			 mgr_pod_stop);
}

rpc_code cri_remove_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	return cri_id_op(call, svc, "pod_sandbox_id",
			 ((const Runtime__V1__RemovePodSandboxRequest *)req)->pod_sandbox_id,
			 mgr_pod_remove);
}

static void add_info(rpc_call *call, mgr *m, Runtime__V1__PodSandboxStatusResponse *r,
		     const mgr_pod *p, const Runtime__V1__PodSandboxConfig *cfg)
{
	json_t *o = json_pack("{s:s, s:s*, s:s*, s:i, s:s*, s:s*}", "id", p->id, "netns", p->netns,
			      "infraId", p->infra_id, "pid", (int)p->infra_pid, "podDir", p->dir,
			      "network", p->cni_net);
	/* The pod's config as RunPodSandbox got it (hostname, DNS, ports,
	 * labels...), written as containerd writes it, for tools that read
	 * containerd's info.config. */
	if (cfg)
		json_object_set_new(o, "config", pbjson_from_message(&cfg->base, PBJSON_GO));
	if (p->cni_result)
		json_object_set_new(o, "cniResult", json_loads(p->cni_result, 0, NULL));
	/* CNI CHECK: "ok", or why the pod's network is not as ADD left it. */
	if (p->state == MGR_POD_READY && p->cni_net && p->netns) {
		ad_error *e = NULL;
		const char *check = "ok";
		if (mgr_pod_network_check(m, p, &e) < 0)
			check = e->code == AD_E_UNIMPLEMENTED ? "unsupported" : e->message;
		json_object_set_new(o, "cniCheck", json_string(check));
		if (e && e->code != AD_E_UNIMPLEMENTED && e->code != AD_E_PRECONDITION)
			ad_warn("%s", e->message);
		ad_error_free(&e);
	}
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	Runtime__V1__PodSandboxStatusResponse__InfoEntry *e = rpc_call_alloc(call, sizeof(*e));
	runtime__v1__pod_sandbox_status_response__info_entry__init(e);
	e->key = rpc_call_strdup(call, "info");
	e->value = rpc_call_strdup(call, s);
	free(s);
	r->info = rpc_call_alloc(call, sizeof(*r->info));
	r->info[0] = e;
	r->n_info = 1;
}

rpc_code cri_pod_sandbox_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	mgr *m = svc->pods;
	const Runtime__V1__PodSandboxStatusRequest *q =
	    (const Runtime__V1__PodSandboxStatusRequest *)req;
	mgr_pod *p = NULL;
	Runtime__V1__PodSandboxConfig *cfg = NULL;
	rpc_code rc = cri_get_pod(call, m, q->pod_sandbox_id, &p, &cfg);
	if (rc != RPC_OK)
		return rc;
	Runtime__V1__PodSandboxStatusResponse *r = (Runtime__V1__PodSandboxStatusResponse *)resp;
	Runtime__V1__PodSandboxStatus *st = rpc_call_alloc(call, sizeof(*st));
	runtime__v1__pod_sandbox_status__init(st);
	st->id = rpc_call_strdup(call, p->id);
	st->state = cri_pod_state(p);
	st->created_at = p->created_ns;
	st->runtime_handler = rpc_call_strdup(call, p->runtime_handler ? p->runtime_handler : "");
	if (cfg) {
		st->metadata = cfg->metadata;
		CRI_COPY_MAP(call, st, labels,
			     runtime__v1__pod_sandbox_status__labels_entry__descriptor,
			     cfg->n_labels, cfg->labels);
		CRI_COPY_MAP(call, st, annotations,
			     runtime__v1__pod_sandbox_status__annotations_entry__descriptor,
			     cfg->n_annotations, cfg->annotations);
		Runtime__V1__LinuxPodSandboxStatus *ls = rpc_call_alloc(call, sizeof(*ls));
		runtime__v1__linux_pod_sandbox_status__init(ls);
		Runtime__V1__Namespace *ns = rpc_call_alloc(call, sizeof(*ns));
		runtime__v1__namespace__init(ns);
		if (cfg->linux && cfg->linux->security_context &&
		    cfg->linux->security_context->namespace_options) {
			ns->options = cfg->linux->security_context->namespace_options;
		} else {
			ns->options = rpc_call_alloc(call, sizeof(*ns->options));
			runtime__v1__namespace_option__init(ns->options);
		}
		if (p->n_uid_maps) {
			/* The mappings in force, agentd's choice included. */
			Runtime__V1__NamespaceOption *o = rpc_call_alloc(call, sizeof(*o));
			*o = *ns->options;
			Runtime__V1__UserNamespace *u = rpc_call_alloc(call, sizeof(*u));
			runtime__v1__user_namespace__init(u);
			u->mode = RUNTIME__V1__NAMESPACE_MODE__POD;
			u->uids = cri_id_mappings(call, p->uid_maps, p->n_uid_maps);
			u->n_uids = p->n_uid_maps;
			u->gids = cri_id_mappings(call, p->gid_maps, p->n_gid_maps);
			u->n_gids = p->n_gid_maps;
			o->userns_options = u;
			ns->options = o;
		}
		ls->namespaces = ns;
		st->linux = ls;
	}
	Runtime__V1__PodSandboxNetworkStatus *net = rpc_call_alloc(call, sizeof(*net));
	runtime__v1__pod_sandbox_network_status__init(net);
	char **ips = p->state == MGR_POD_READY ? mgr_pod_ips(p) : NULL;
	if (ips && ips[0]) {
		net->ip = rpc_call_strdup(call, ips[0]);
		size_t n = 0;
		while (ips[n + 1])
			n++;
		net->additional_ips = rpc_call_alloc(call, (n ? n : 1) * sizeof(void *));
		for (size_t i = 0; i < n; i++) {
			Runtime__V1__PodIP *pip = rpc_call_alloc(call, sizeof(*pip));
			runtime__v1__pod_ip__init(pip);
			pip->ip = rpc_call_strdup(call, ips[i + 1]);
			net->additional_ips[i] = pip;
		}
		net->n_additional_ips = n;
	}
	mgr_strv_free(ips);
	st->network = net;
	r->status = st;
	r->timestamp = ad_now_ns();
	if (q->verbose)
		add_info(call, m, r, p, cfg);
	mgr_pod_free(p);
	return RPC_OK;
}

static void *pod_item(rpc_call *call, mgr *m, const void *obj, void *config)
{
	(void)m;
	const mgr_pod *p = obj;
	const Runtime__V1__PodSandboxConfig *cfg = config;
	Runtime__V1__PodSandbox *it = rpc_call_alloc(call, sizeof(*it));
	runtime__v1__pod_sandbox__init(it);
	it->id = rpc_call_strdup(call, p->id);
	it->metadata = cfg->metadata;
	it->state = cri_pod_state(p);
	it->created_at = p->created_ns;
	it->runtime_handler = rpc_call_strdup(call, p->runtime_handler ? p->runtime_handler : "");
	CRI_COPY_MAP(call, it, labels, runtime__v1__pod_sandbox__labels_entry__descriptor,
		     cfg->n_labels, cfg->labels);
	CRI_COPY_MAP(call, it, annotations, runtime__v1__pod_sandbox__annotations_entry__descriptor,
		     cfg->n_annotations, cfg->annotations);
	return it;
}

rpc_code cri_list_pod_sandbox(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__PodSandboxFilter *f =
	    ((const Runtime__V1__ListPodSandboxRequest *)req)->filter;
	Runtime__V1__ListPodSandboxResponse *r = resp;
	cri_list_filter lf = CRI_LIST_FILTER(f);
	if (f && f->state)
		lf.state = (int)f->state->state;
	return cri_list(call, svc->pods, CRI_LIST_PODS, &lf, pod_item, (void ***)&r->items,
			&r->n_items);
}
