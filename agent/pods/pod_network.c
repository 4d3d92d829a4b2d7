/* A pod's network: CNI ADD/DEL/CHECK with what was stored at ADD time (the
 * network config, the port mappings, the result), the network's readiness,
 * dials into the pod's namespace (PortForward) and its interface stats. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "pods_int.h"

void mgr_cni_opts(mgr *m, cni_opts *o)
{
	*o = (cni_opts){
	    .conf_dirs = (const char *const *)m->conf_dirs,
	    .plugin_dirs = (const char *const *)m->plugin_dirs,
	};
}

/* The network for a new pod and for NetworkReady: the conf dirs' first
 * config that loads, remembered; while they hold configs but none that loads
 * (a bad edit), the last one that did stays in use, as a reload keeps the
 * old settings over a bad file (logged when `say`: at a pod's creation and
 * a SIGHUP, not at every Status). With no config at all there is no
 * network: that is how an operator takes it away. */
static int current_network(mgr *m, bool say, cni_net **ret, ad_error **err)
{
	cni_opts o;
	mgr_cni_opts(m, &o);
	pthread_mutex_lock(&m->cni_lock);
	_cleanup_free_ char *last = m->cni_last_good ? ad_strdup(m->cni_last_good) : NULL;
	pthread_mutex_unlock(&m->cni_lock);
	o.fallback_json = last;
	cni_net *net = NULL;
	if (cni_net_load(&o, &net, err) < 0)
		return -1;
	if (cni_net_refused(net)) {
		if (say)
			ad_warn("CNI config refused: %s; network \"%s\" as last loaded stays",
				cni_net_refused(net), cni_net_name(net));
	} else {
		char *json = cni_net_json(net);
		pthread_mutex_lock(&m->cni_lock);
		if (!m->cni_last_good || strcmp(m->cni_last_good, json) != 0) {
			free(m->cni_last_good);
			m->cni_last_good = ad_steal_ptr(json);
		}
		pthread_mutex_unlock(&m->cni_lock);
		free(json);
	}
	*ret = net;
	return 0;
}

int mgr_network_ready(mgr *m, bool say, ad_error **err)
{
	cni_net *net = NULL;
	if (current_network(m, say, &net, err) < 0)
		return -1;
	int r = cni_net_check_plugins(net, err);
	cni_net_free(net);
	return r;
}

static char *ports_to_json(const mgr_pod_spec *spec)
{
	json_t *a = json_array();
	for (size_t i = 0; i < spec->n_ports; i++) {
		const cni_port_mapping *pm = &spec->ports[i];
		json_array_append_new(a, json_pack("{s:i, s:i, s:s, s:s}", "hostPort",
						   (int)pm->host_port, "containerPort",
						   (int)pm->container_port, "protocol",
						   pm->protocol ? pm->protocol : "tcp", "hostIP",
						   pm->host_ip ? pm->host_ip : ""));
	}
	char *s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

/* The port mappings stored beside the ADD result; `*ret_json` owns the strings. */
static cni_port_mapping *ports_from_json(const char *text, size_t *ret_n, json_t **ret_json)
{
	*ret_n = 0;
	*ret_json = NULL;
	if (!text)
		return NULL;
	json_t *a = json_loads(text, 0, NULL);
	if (!json_is_array(a)) {
		json_decref(a);
		return NULL;
	}
	size_t n = json_array_size(a);
	cni_port_mapping *pm = ad_malloc0((n + 1) * sizeof(*pm));
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(a, i);
		pm[i].host_port = (uint16_t)json_integer_value(json_object_get(o, "hostPort"));
		pm[i].container_port =
		    (uint16_t)json_integer_value(json_object_get(o, "containerPort"));
		pm[i].protocol = json_string_value(json_object_get(o, "protocol"));
		pm[i].host_ip = json_string_value(json_object_get(o, "hostIP"));
	}
	*ret_n = n;
	*ret_json = a;
	return pm;
}

/* What CNI is told of a pod: its ids, netns and port mappings. The mappings
 * point into *ret_json; pod_cni_args_clear frees both. */
static cni_pod pod_cni_args(const mgr_pod *p, json_t **ret_json)
{
	size_t n_pm;
	cni_port_mapping *pm = ports_from_json(p->ports_json, &n_pm, ret_json);
	return (cni_pod){
	    .container_id = p->id,
	    .netns_path = p->netns,
	    .pod_namespace = p->namespace_,
	    .pod_name = p->name,
	    .pod_uid = p->uid,
	    .port_mappings = pm,
	    .n_port_mappings = n_pm,
	};
}

static void pod_cni_args_clear(cni_pod *cp, json_t *json)
{
	free((void *)cp->port_mappings);
	json_decref(json);
}

typedef int (*cni_op)(const cni_net *net, const cni_pod *pod, const char *cached_result,
		      ad_error **err);

/* DEL or CHECK with what was stored at ADD time (the network config, the
 * port mappings and the result, which is the prevResult). */
static int pod_network_op(mgr *m, const mgr_pod *p, cni_op op, ad_error **err)
{
	cni_opts o;
	mgr_cni_opts(m, &o);
	cni_net *net = NULL;
	if (cni_net_parse(&o, p->cni_net, "stored network config", &net, err) < 0)
		return -1;
	json_t *pj;
	cni_pod cp = pod_cni_args(p, &pj);
	int r = op(net, &cp, p->cni_result, err);
	pod_cni_args_clear(&cp, pj);
	cni_net_free(net);
	return r;
}

/* The pod's own network namespace, pinned, with loopback up and the CNI ADD
 * of the configured network, each part recorded as it is made. */
int mgr_pod_network_up(mgr *m, mgr_pod *p, const mgr_pod_spec *spec, ad_error **err)
{
	int r = cni_netns_create(m->netns_dir, p->id, &p->netns, err);
	if (r == 0)
		r = mgr_db_exec(m, err, "UPDATE pods SET netns = ?2 WHERE id = ?1", "ss", p->id,
				p->netns);
	if (r == 0)
		ad_fault_point("pod.netns");
	if (r == 0)
		r = cni_loopback_up(p->netns, err);
	cni_net *net = NULL;
	if (r == 0)
		r = current_network(m, true, &net, err);
	if (r == 0) {
		/* Stored before ADD: a crash during ADD still gets its DEL. */
		p->cni_net = cni_net_json(net);
		p->ports_json = ports_to_json(spec);
		r = mgr_db_exec(m, err,
				"UPDATE pods SET cni_net = ?2, port_mappings = ?3 WHERE id = ?1",
				"sss", p->id, p->cni_net, p->ports_json);
		if (r == 0)
			ad_fault_point("pod.cni_stored");
	}
	if (r == 0) {
		json_t *pj;
		cni_pod cp = pod_cni_args(p, &pj);
		r = cni_add(net, &cp, &p->cni_result, err);
		pod_cni_args_clear(&cp, pj);
		if (r == 0)
			r = mgr_db_exec(m, err, "UPDATE pods SET cni_result = ?2 WHERE id = ?1",
					"ss", p->id, p->cni_result);
		if (r == 0)
			ad_fault_point("pod.cni_added");
	}
	cni_net_free(net);
	return r;
}

/* CNI DEL; idempotent. */
int mgr_pod_network_down(mgr *m, const mgr_pod *p, ad_error **err)
{
	if (!p->cni_net)
		return 0;
	return pod_network_op(m, p, cni_del, err);
}

int mgr_pod_network_check(mgr *m, const mgr_pod *p, ad_error **err)
{
	/* Held, and read again: a stop tearing the network down meanwhile is
	 * not a failed CHECK. */
	mgr_hold(m, p->id);
	mgr_pod *now = NULL;
	int r = mgr_pod_get(m, p->id, &now, err);
	if (r == 0 && (!now->cni_net || !now->netns))
		r = ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s has no CNI network", p->id);
	else if (r == 0 && now->state != MGR_POD_READY)
		r = ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	else if (r == 0 && pod_network_op(m, now, cni_check, err) < 0)
		r = ad_error_wrap(err, "pod sandbox %s: CNI CHECK", p->id);
	mgr_pod_free(now);
	mgr_release(m, p->id);
	return r;
}

int mgr_pod_dial(mgr *m, const char *id, uint16_t port, int *ret_fd, ad_error **err)
{
	mgr_pod *p = NULL;
	if (mgr_pod_get(m, id, &p, err) < 0)
		return -1;
	int r = p->state == MGR_POD_READY
		    ? cni_netns_connect(p->netns, port, ret_fd, err)
		    : ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", id);
	mgr_pod_free(p);
	return r;
}

int mgr_pod_net_stats(mgr *m, const mgr_pod *p, cni_if_stats **ret, size_t *ret_n, ad_error **err)
{
	*ret = NULL;
	*ret_n = 0;
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (p->state != MGR_POD_READY || p->infra_pid <= 0)
		return ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s is not ready", p->id);
	if (!p->netns)
		return ad_fail(err, AD_E_PRECONDITION, "pod sandbox %s uses the node's network",
			       p->id);
	/* /proc/<pid>/net is the network namespace of that process. */
	_cleanup_free_ char *path = ad_asprintf("/proc/%d/net/dev", (int)p->infra_pid);
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (ad_read_file(AT_FDCWD, path, 1 << 20, &text, &len, err) < 0)
		return -1;
	return cni_netdev_parse(text, ret, ret_n, err);
}

char **mgr_pod_ips(const mgr_pod *p)
{
	if (!p->cni_result)
		return NULL;
	char **ips = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (cni_result_ips(p->cni_result, &ips, NULL, &e) < 0)
		return NULL;
	return ips;
}
