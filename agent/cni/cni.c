/* CNI network configuration lists and the ADD/DEL/CHECK protocol
 * (containernetworking/cni SPEC.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cni_private.h"

#define CNI_MAX_CONF_SIZE (1024 * 1024)

struct cni_net {
	json_t *list; /* {name, cniVersion, plugins: [...], ...} */
	const char *name, *version;
	char *source;
	char *refused; /* the fallback: why the conf dirs' configs were not used */
	char **plugin_dirs;
	int timeout_ms;
	bool disable_check;
};

static void cni_json_decref(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define _cleanup_json_ __attribute__((cleanup(cni_json_decref)))

void cni_strv_free(char **strv)
{
	if (!strv)
		return;
	for (char **s = strv; *s; s++)
		free(*s);
	free(strv);
}

static void cni_strvp(char ***strv)
{
	cni_strv_free(*strv);
}
#define _cleanup_strv_ __attribute__((cleanup(cni_strvp)))

static char **cni_strv_copy(const char *const *src)
{
	size_t n = 0;
	while (src[n])
		n++;
	char **v = ad_malloc0((n + 1) * sizeof(char *));
	for (size_t i = 0; i < n; i++)
		v[i] = ad_strdup(src[i]);
	return v;
}

static void cni_strv_push(char ***strv, size_t *n, char *s)
{
	*strv = ad_realloc(*strv, (*n + 2) * sizeof(char *));
	(*strv)[(*n)++] = s;
	(*strv)[*n] = NULL;
}

/* "1.0.0" → 10000; unparsable → -1. */
static int cni_version_num(const char *v)
{
	int a = 0, b = 0, c = 0;
	if (!v || sscanf(v, "%d.%d.%d", &a, &b, &c) < 2)
		return -1;
	return a * 10000 + b * 100 + c;
}

void cni_net_free(cni_net *net)
{
	if (!net)
		return;
	if (net->list)
		json_decref(net->list);
	free(net->source);
	free(net->refused);
	cni_strv_free(net->plugin_dirs);
	free(net);
}

const char *cni_net_name(const cni_net *net)
{
	return net->name;
}

const char *cni_net_version(const cni_net *net)
{
	return net->version;
}

const char *cni_net_source(const cni_net *net)
{
	return net->source;
}

const char *cni_net_refused(const cni_net *net)
{
	return net->refused;
}

char *cni_net_json(const cni_net *net)
{
	char *s = json_dumps(net->list, JSON_COMPACT);
	if (!s)
		abort();
	return s;
}

static bool cni_valid_plugin_type(const char *t)
{
	return t && *t && !strchr(t, '/') && strcmp(t, ".") != 0 && strcmp(t, "..") != 0;
}

int cni_net_parse(const cni_opts *opts, const char *text, const char *source, cni_net **ret_net,
		  ad_error **err)
{
	json_error_t jerr;
	_cleanup_json_ json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return ad_fail(err, AD_E_INVALID, "%s: invalid JSON at line %d: %s", source,
			       jerr.line, jerr.text);
	if (!json_is_object(root))
		return ad_fail(err, AD_E_INVALID, "%s: not a JSON object", source);

	_cleanup_json_ json_t *list = NULL;
	if (json_object_get(root, "plugins")) {
		list = json_incref(root);
	} else if (json_object_get(root, "type")) {
		/* A single plugin's .conf is a list of one, as libcni treats it. */
		list = json_object();
		json_object_set(list, "name", json_object_get(root, "name"));
		json_object_set(list, "cniVersion", json_object_get(root, "cniVersion"));
		json_object_set_new(list, "plugins", json_pack("[O]", root));
	} else {
		return ad_fail(err, AD_E_INVALID, "%s: neither \"plugins\" nor \"type\"", source);
	}

	const char *name = json_string_value(json_object_get(list, "name"));
	if (!name || !*name)
		return ad_fail(err, AD_E_INVALID, "%s: missing network \"name\"", source);
	const char *version = json_string_value(json_object_get(list, "cniVersion"));
	if (cni_version_num(version) < 0)
		return ad_fail(err, AD_E_INVALID, "%s: missing or invalid \"cniVersion\"", source);
	json_t *plugins = json_object_get(list, "plugins");
	if (!json_is_array(plugins) || json_array_size(plugins) == 0)
		return ad_fail(err, AD_E_INVALID, "%s: \"plugins\" is not a non-empty array",
			       source);
	size_t i;
	json_t *p;
	json_array_foreach(plugins, i, p)
	{
		if (!json_is_object(p) ||
		    !cni_valid_plugin_type(json_string_value(json_object_get(p, "type"))))
			return ad_fail(err, AD_E_INVALID, "%s: plugin %zu has no valid \"type\"",
				       source, i);
	}

	cni_net *net = ad_malloc0(sizeof(*net));
	net->list = ad_steal_ptr(list);
	net->name = json_string_value(json_object_get(net->list, "name"));
	net->version = json_string_value(json_object_get(net->list, "cniVersion"));
	net->disable_check = json_is_true(json_object_get(net->list, "disableCheck"));
	net->source = ad_strdup(source);
	static const char *const default_plugin_dirs[] = CNI_DEFAULT_PLUGIN_DIRS;
	net->plugin_dirs =
	    cni_strv_copy(opts && opts->plugin_dirs ? opts->plugin_dirs : default_plugin_dirs);
	net->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : CNI_DEFAULT_TIMEOUT_MS;
	*ret_net = net;
	return 0;
}

static bool cni_has_conf_ext(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot && (!strcmp(dot, ".conf") || !strcmp(dot, ".conflist") || !strcmp(dot, ".json"));
}

static int cni_strcmp_p(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted config file names of `dir`; a missing dir has none. */
static int cni_list_conf_files(const char *dir, char ***ret_names, ad_error **err)
{
	char **names = NULL;
	size_t n = 0;
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			return ad_fail_errno(err, AD_E_UNAVAILABLE, "open CNI config dir %s", dir);
		*ret_names = ad_malloc0(sizeof(char *));
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !cni_has_conf_ext(de->d_name))
			continue;
		cni_strv_push(&names, &n, ad_strdup(de->d_name));
	}
	closedir(d);
	if (!names)
		names = ad_malloc0(sizeof(char *));
	qsort(names, n, sizeof(char *), cni_strcmp_p);
	*ret_names = names;
	return 0;
}

int cni_net_load(const cni_opts *opts, cni_net **ret_net, ad_error **err)
{
	static const char *const default_conf_dirs[] = {CNI_DEFAULT_CONF_DIR, NULL};
	const char *const *dirs = opts && opts->conf_dirs ? opts->conf_dirs : default_conf_dirs;
	const char *want = opts ? opts->network_name : NULL;
	_cleanup_free_ char *first_problem = NULL;

	for (size_t d = 0; dirs[d]; d++) {
		_cleanup_strv_ char **names = NULL;
		if (cni_list_conf_files(dirs[d], &names, err) < 0)
			return -1;
		_cleanup_close_ int dfd = open(dirs[d], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		for (size_t i = 0; names[i]; i++) {
			_cleanup_free_ char *path = ad_asprintf("%s/%s", dirs[d], names[i]);
			_cleanup_free_ char *text = NULL;
			_cleanup_error_ ad_error *e = NULL;
			cni_net *net = NULL;
			if (dfd < 0 ||
			    ad_read_file(dfd, names[i], CNI_MAX_CONF_SIZE, &text, NULL, &e) < 0 ||
			    cni_net_parse(opts, text, path, &net, &e) < 0) {
				if (!first_problem)
					first_problem = ad_strdup(e ? e->message : path);
				continue;
			}
			if (json_is_true(json_object_get(net->list, "disabled")) ||
			    (want && strcmp(want, net->name) != 0)) {
				cni_net_free(net);
				continue;
			}
			*ret_net = net;
			return 0;
		}
	}

	_cleanup_free_ char *where = ad_strdup(dirs[0] ? dirs[0] : "");
	for (size_t d = 1; dirs[0] && dirs[d]; d++) {
		char *w = ad_asprintf("%s, %s", where, dirs[d]);
		free(where);
		where = w;
	}
	if (first_problem && opts && opts->fallback_json) {
		cni_net *net = NULL;
		if (cni_net_parse(opts, opts->fallback_json, "the last good network config", &net,
				  err) < 0)
			return -1;
		net->refused = ad_steal_ptr(first_problem);
		*ret_net = net;
		return 0;
	}
	if (want)
		return ad_fail(err, AD_E_UNAVAILABLE, "no CNI network \"%s\" in %s%s%s", want,
			       where, first_problem ? "; skipped " : "",
			       first_problem ? first_problem : "");
	return ad_fail(err, AD_E_UNAVAILABLE, "no CNI network config in %s%s%s", where,
		       first_problem ? "; skipped " : "", first_problem ? first_problem : "");
}

static const char *cni_plugin_type(const cni_net *net, size_t i)
{
	return json_string_value(
	    json_object_get(json_array_get(json_object_get(net->list, "plugins"), i), "type"));
}

static size_t cni_plugin_count(const cni_net *net)
{
	return json_array_size(json_object_get(net->list, "plugins"));
}

static char *cni_find_plugin(const cni_net *net, const char *type)
{
	for (char **d = net->plugin_dirs; *d; d++) {
		char *path = ad_asprintf("%s/%s", *d, type);
		struct stat st;
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
			return path;
		free(path);
	}
	return NULL;
}

static char *cni_join(char **strv, char sep)
{
	size_t len = 1;
	for (char **s = strv; *s; s++)
		len += strlen(*s) + 1;
	char *out = ad_malloc0(len), *p = out;
	for (char **s = strv; *s; s++) {
		if (s != strv)
			*p++ = sep;
		p = stpcpy(p, *s);
	}
	return out;
}

int cni_net_check_plugins(const cni_net *net, ad_error **err)
{
	for (size_t i = 0; i < cni_plugin_count(net); i++) {
		_cleanup_free_ char *path = cni_find_plugin(net, cni_plugin_type(net, i));
		if (!path) {
			_cleanup_free_ char *dirs = cni_join(net->plugin_dirs, ':');
			return ad_fail(err, AD_E_UNAVAILABLE,
				       "CNI plugin \"%s\" of network \"%s\" not found in %s",
				       cni_plugin_type(net, i), net->name, dirs);
		}
	}
	return 0;
}

/* ---- invoking plugins ------------------------------------------------------ */

static bool cni_valid_container_id(const char *id)
{
	if (!id || !*id ||
	    !((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z') ||
	      (id[0] >= '0' && id[0] <= '9')))
		return false;
	return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
	       strlen(id);
}

static bool cni_valid_ifname(const char *n)
{
	return *n && strlen(n) < 16 && strcmp(n, ".") != 0 && strcmp(n, "..") != 0 &&
	       strcspn(n, "/: \t\n") == strlen(n);
}

/* CNI_ARGS is "K=V;K=V": values with ';' or '=' would be misread. */
static bool cni_valid_arg(const char *v)
{
	return !v || strcspn(v, ";=") == strlen(v);
}

static int cni_check_pod(const cni_pod *pod, ad_error **err)
{
	if (!cni_valid_container_id(pod->container_id))
		return ad_fail(err, AD_E_INVALID, "invalid CNI container id \"%s\"",
			       pod->container_id ? pod->container_id : "");
	if (pod->ifname && !cni_valid_ifname(pod->ifname))
		return ad_fail(err, AD_E_INVALID, "invalid interface name \"%s\"", pod->ifname);
	if (!cni_valid_arg(pod->pod_namespace) || !cni_valid_arg(pod->pod_name) ||
	    !cni_valid_arg(pod->pod_uid))
		return ad_fail(err, AD_E_INVALID, "pod name, namespace or uid contains ';' or '='");
	for (size_t i = 0; i < pod->n_port_mappings; i++) {
		if (pod->port_mappings[i].container_port == 0)
			return ad_fail(err, AD_E_INVALID, "port mapping %zu: container port 0", i);
	}
	return 0;
}

/* A mapping without a host port only documents the container's port (kubelet
 * sends one for every containerPort of a pod spec): it publishes nothing, as
 * in containerd and CRI-O. */
static bool cni_publishes(const cni_port_mapping *m)
{
	return m->host_port != 0;
}

static bool cni_publishes_any(const cni_pod *pod)
{
	for (size_t i = 0; i < pod->n_port_mappings; i++)
		if (cni_publishes(&pod->port_mappings[i]))
			return true;
	return false;
}

static json_t *cni_port_mappings_json(const cni_pod *pod)
{
	json_t *a = json_array();
	for (size_t i = 0; i < pod->n_port_mappings; i++) {
		const cni_port_mapping *m = &pod->port_mappings[i];
		if (!cni_publishes(m))
			continue;
		json_t *o = json_pack("{s:i, s:i, s:s}", "hostPort", (int)m->host_port,
				      "containerPort", (int)m->container_port, "protocol",
				      m->protocol && *m->protocol ? m->protocol : "tcp");
		if (m->host_ip && *m->host_ip)
			json_object_set_new(o, "hostIP", json_string(m->host_ip));
		json_array_append_new(a, o);
	}
	return a;
}

/* The stdin of plugin i: its object from the list plus the list's name and
 * cniVersion, runtimeConfig for the capabilities it declares, and prevResult. */
static char *cni_plugin_conf(const cni_net *net, size_t i, const cni_pod *pod, json_t *prev)
{
	json_t *c = json_deep_copy(json_array_get(json_object_get(net->list, "plugins"), i));
	json_object_set_new(c, "name", json_string(net->name));
	json_object_set_new(c, "cniVersion", json_string(net->version));
	json_t *caps = json_object_get(c, "capabilities");
	if (cni_publishes_any(pod) && json_is_true(json_object_get(caps, "portMappings"))) {
		json_t *rc = json_object();
		json_object_set_new(rc, "portMappings", cni_port_mappings_json(pod));
		json_object_set_new(c, "runtimeConfig", rc);
	}
	if (prev)
		json_object_set(c, "prevResult", prev);
	char *s = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	if (!s)
		abort();
	return s;
}

extern char **environ;

static char **cni_plugin_env(const cni_net *net, const char *command, const cni_pod *pod,
			     const char *netns)
{
	char **env = NULL;
	size_t n = 0;
	/* Plugins run iptables & co. by PATH, so they get our environment. */
	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, "CNI_", 4) != 0)
			cni_strv_push(&env, &n, ad_strdup(*e));
	}
	_cleanup_free_ char *path = cni_join(net->plugin_dirs, ':');
	cni_strv_push(&env, &n, ad_asprintf("CNI_COMMAND=%s", command));
	cni_strv_push(&env, &n, ad_asprintf("CNI_CONTAINERID=%s", pod->container_id));
	cni_strv_push(&env, &n, ad_asprintf("CNI_NETNS=%s", netns));
	cni_strv_push(&env, &n, ad_asprintf("CNI_IFNAME=%s", pod->ifname ? pod->ifname : "eth0"));
	cni_strv_push(&env, &n, ad_asprintf("CNI_PATH=%s", path));
	/* IgnoreUnknown: plugins that don't know the K8S_ keys must not fail. */
	char *args = ad_asprintf("CNI_ARGS=IgnoreUnknown=1");
	const char *keys[] = {"K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID",
			      "K8S_POD_UID"};
	const char *vals[] = {pod->pod_namespace, pod->pod_name, pod->container_id, pod->pod_uid};
	for (size_t i = 0; i < 4; i++) {
		if (!vals[i])
			continue;
		char *a = ad_asprintf("%s;%s=%s", args, keys[i], vals[i]);
		free(args);
		args = a;
	}
	cni_strv_push(&env, &n, args);
	return env;
}

/* The plugin's own words: its JSON error's msg and details, else stderr. */
static int cni_plugin_error(const char *type, const char *command, struct cni_exec_out *out,
			    ad_error **err)
{
	_cleanup_json_ json_t *e = out->stdout_data ? json_loads(out->stdout_data, 0, NULL) : NULL;
	const char *msg = json_string_value(json_object_get(e, "msg"));
	if (msg) {
		const char *details = json_string_value(json_object_get(e, "details"));
		json_int_t code = json_integer_value(json_object_get(e, "code"));
		/* Code 11 is the spec's "try again later". */
		return ad_fail(err, code == 11 ? AD_E_UNAVAILABLE : AD_E_INTERNAL,
			       "CNI plugin %s %s failed: %s%s%s", type, command, msg,
			       details && *details ? ": " : "", details ? details : "");
	}
	_cleanup_free_ char *how =
	    WIFEXITED(out->status) ? ad_asprintf("exited with status %d", WEXITSTATUS(out->status))
				   : ad_asprintf("killed by signal %d", WTERMSIG(out->status));
	const char *tail = out->stderr_data ? out->stderr_data : out->stdout_data;
	size_t tl = tail ? strlen(tail) : 0;
	while (tl > 0 && (tail[tl - 1] == '\n' || tail[tl - 1] == ' '))
		tl--;
	size_t start = tl > 512 ? tl - 512 : 0;
	return ad_fail(err, AD_E_INTERNAL, "CNI plugin %s %s %s%s%.*s", type, command, how,
		       tl ? ": " : "", (int)(tl - start), tail ? tail + start : "");
}

/* Runs plugin i; on success *ret_out (may be NULL) gets its stdout. */
static int cni_run_plugin(const cni_net *net, size_t i, const char *command, const cni_pod *pod,
			  const char *netns, json_t *prev, char **ret_out, ad_error **err)
{
	const char *type = cni_plugin_type(net, i);
	_cleanup_free_ char *path = cni_find_plugin(net, type);
	if (!path) {
		_cleanup_free_ char *dirs = cni_join(net->plugin_dirs, ':');
		return ad_fail(err, AD_E_UNAVAILABLE, "CNI plugin \"%s\" not found in %s", type,
			       dirs);
	}
	_cleanup_free_ char *conf = cni_plugin_conf(net, i, pod, prev);
	_cleanup_strv_ char **env = cni_plugin_env(net, command, pod, netns);
	struct cni_exec_out out = {0};
	if (cni_exec(path, env, conf, net->timeout_ms, &out, err) < 0)
		return ad_error_wrap(err, "CNI plugin %s %s", type, command);
	int r = 0;
	if (WIFEXITED(out.status) && WEXITSTATUS(out.status) == 0) {
		if (ret_out)
			*ret_out = ad_steal_ptr(out.stdout_data);
	} else {
		r = cni_plugin_error(type, command, &out, err);
	}
	free(out.stdout_data);
	free(out.stderr_data);
	return r;
}

static const char *cni_del_netns(const cni_pod *pod)
{
	/* A namespace that is gone already is passed as "", which the spec allows
	 * for DEL: plugins then still release IPAM and host-side state. A pin
	 * that is a plain file again (its bind mount went with a reboot) is
	 * gone too: plugins refuse a path that is no namespace. */
	if (!pod->netns_path || !cni_netns_alive(pod->netns_path))
		return "";
	return pod->netns_path;
}

/* DEL of plugins [0, upto) in reverse order; returns the first error. */
static int cni_del_range(const cni_net *net, const cni_pod *pod, json_t *prev, size_t upto,
			 ad_error **err)
{
	const char *netns = cni_del_netns(pod);
	/* Before 0.4.0 DEL had no prevResult. */
	if (cni_version_num(net->version) < 400)
		prev = NULL;
	int ret = 0;
	for (size_t i = upto; i-- > 0;) {
		_cleanup_error_ ad_error *e = NULL;
		if (cni_run_plugin(net, i, "DEL", pod, netns, prev, NULL, &e) < 0 && ret == 0) {
			if (err)
				*err = ad_steal_ptr(e);
			ret = -1;
		}
	}
	return ret;
}

int cni_add(const cni_net *net, const cni_pod *pod, char **ret_result, ad_error **err)
{
	if (cni_check_pod(pod, err) < 0)
		return -1;
	if (!pod->netns_path || !*pod->netns_path)
		return ad_fail(err, AD_E_INVALID, "CNI ADD needs a network namespace");
	/* A missing binary is found before anything is set up. */
	if (cni_net_check_plugins(net, err) < 0)
		return -1;

	_cleanup_json_ json_t *prev = NULL;
	size_t n = cni_plugin_count(net);
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *out = NULL;
		int r = cni_run_plugin(net, i, "ADD", pod, pod->netns_path, prev, &out, err);
		json_t *res = NULL;
		if (r == 0) {
			json_error_t jerr;
			res = out ? json_loads(out, 0, &jerr) : NULL;
			if (!json_is_object(res)) {
				r = ad_fail(err, AD_E_INTERNAL,
					    "CNI plugin %s ADD returned no valid result",
					    cni_plugin_type(net, i));
				if (res)
					json_decref(res);
			}
		}
		if (r < 0) {
			/* Undo what the plugins up to this one (it may have done part of its
			 * work) set up; the caller gets the plugin's error. */
			_cleanup_error_ ad_error *e = NULL;
			if (cni_del_range(net, pod, prev, i + 1, &e) < 0 && err && *err) {
				char *m = ad_asprintf("%s (cleanup also failed: %s)",
						      (*err)->message, e->message);
				free((*err)->message);
				(*err)->message = m;
			}
			return -1;
		}
		if (prev)
			json_decref(prev);
		prev = res;
	}
	char *s = json_dumps(prev, JSON_COMPACT);
	if (!s)
		abort();
	*ret_result = s;
	return 0;
}

static json_t *cni_parse_cached(const char *cached_result)
{
	if (!cached_result)
		return NULL;
	json_t *j = json_loads(cached_result, 0, NULL);
	if (j && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

int cni_del(const cni_net *net, const cni_pod *pod, const char *cached_result, ad_error **err)
{
	if (cni_check_pod(pod, err) < 0)
		return -1;
	/* An unreadable cached result must not stop the teardown. */
	_cleanup_json_ json_t *prev = cni_parse_cached(cached_result);
	return cni_del_range(net, pod, prev, cni_plugin_count(net), err);
}

int cni_check(const cni_net *net, const cni_pod *pod, const char *cached_result, ad_error **err)
{
	if (cni_check_pod(pod, err) < 0)
		return -1;
	if (cni_version_num(net->version) < 400)
		return ad_fail(err, AD_E_UNIMPLEMENTED,
			       "CNI network \"%s\" version %s has no CHECK", net->name,
			       net->version);
	if (net->disable_check)
		return 0;
	_cleanup_json_ json_t *prev = cni_parse_cached(cached_result);
	if (!prev)
		return ad_fail(err, AD_E_INVALID, "CNI CHECK needs the result of ADD");
	if (!pod->netns_path || !*pod->netns_path)
		return ad_fail(err, AD_E_INVALID, "CNI CHECK needs a network namespace");
	for (size_t i = 0; i < cni_plugin_count(net); i++) {
		if (cni_run_plugin(net, i, "CHECK", pod, pod->netns_path, prev, NULL, err) < 0)
			return -1;
	}
	return 0;
}

/* ---- results ----------------------------------------------------------------- */

static void cni_add_ip(const char *addr, char ***v4, size_t *n4, char ***v6, size_t *n6)
{
	if (!addr || !*addr)
		return;
	char *ip = ad_strndup(addr, strcspn(addr, "/"));
	if (strchr(ip, ':'))
		cni_strv_push(v6, n6, ip);
	else
		cni_strv_push(v4, n4, ip);
}

int cni_result_ips(const char *result, char ***ret_ips, size_t *ret_n, ad_error **err)
{
	json_error_t jerr;
	_cleanup_json_ json_t *r = result ? json_loads(result, 0, &jerr) : NULL;
	if (!json_is_object(r))
		return ad_fail(err, AD_E_INVALID, "CNI result is not a JSON object");
	_cleanup_strv_ char **v4 = NULL;
	_cleanup_strv_ char **v6 = NULL;
	size_t n4 = 0, n6 = 0;
	json_t *ips = json_object_get(r, "ips");
	if (json_is_array(ips)) {
		size_t i;
		json_t *ip;
		json_array_foreach(ips, i, ip)
		{
			cni_add_ip(json_string_value(json_object_get(ip, "address")), &v4, &n4, &v6,
				   &n6);
		}
	} else {
		cni_add_ip(json_string_value(json_object_get(json_object_get(r, "ip4"), "ip")), &v4,
			   &n4, &v6, &n6);
		cni_add_ip(json_string_value(json_object_get(json_object_get(r, "ip6"), "ip")), &v4,
			   &n4, &v6, &n6);
	}
	char **all = ad_malloc0((n4 + n6 + 1) * sizeof(char *));
	for (size_t i = 0; i < n4; i++)
		all[i] = ad_steal_ptr(v4[i]);
	for (size_t i = 0; i < n6; i++)
		all[n4 + i] = ad_steal_ptr(v6[i]);
	*ret_ips = all;
	if (ret_n)
		*ret_n = n4 + n6;
	return 0;
}
