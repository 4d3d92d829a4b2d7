/* agentctl generate systemd POD|CONTAINER: a unit that runs the container
 * through agentd as podman's `generate systemd --new` does: ExecStart is an
 * attached `agentctl run --rm --replace` rebuilt from the container's config
 * and its pod's port mappings (a CRI container cannot start again once it
 * exited, so each start makes a new pod), stopping the unit stops the
 * container and removes its pod, and Restart= makes a new one. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cri/api.pb-c.h"
#include "ctl.h"

#define SVC "/runtime.v1.RuntimeService/"

static const char *const RESTART_POLICIES[] = {
    "no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always", NULL};

/* The container `arg` names: a container id (prefix) or name, else a pod id
 * (prefix) or name whose only container it is. *ret_pod: its pod's id. */
static int find_container(ctl_ctx *ctx, const char *arg, char **ret_id, char **ret_pod)
{
	Runtime__V1__ListContainersRequest req = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
	ProtobufCMessage *m = NULL, *pm = NULL;
	int r = ctl_unary(ctx, SVC "ListContainers", &req.base,
			  &runtime__v1__list_containers_response__descriptor, &m);
	if (r)
		return r;
	const Runtime__V1__ListContainersResponse *cl = (const Runtime__V1__ListContainersResponse *)m;
	const Runtime__V1__Container *found = NULL;
	size_t n_found = 0;
	for (size_t i = 0; i < cl->n_containers; i++) {
		const Runtime__V1__Container *c = cl->containers[i];
		if (strncmp(c->id, arg, strlen(arg)) == 0 ||
		    (c->metadata && strcmp(c->metadata->name, arg) == 0)) {
			found = c;
			n_found++;
		}
	}
	if (!n_found) {
		Runtime__V1__ListPodSandboxRequest preq = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
		r = ctl_unary(ctx, SVC "ListPodSandbox", &preq.base,
			      &runtime__v1__list_pod_sandbox_response__descriptor, &pm);
		if (r)
			goto out;
		const Runtime__V1__ListPodSandboxResponse *pl =
		    (const Runtime__V1__ListPodSandboxResponse *)pm;
		const char *pod = NULL;
		size_t n_pods = 0;
		for (size_t i = 0; i < pl->n_items; i++) {
			const Runtime__V1__PodSandbox *p = pl->items[i];
			if (strncmp(p->id, arg, strlen(arg)) == 0 ||
			    (p->metadata && strcmp(p->metadata->name, arg) == 0)) {
				pod = p->id;
				n_pods++;
			}
		}
		if (n_pods > 1) {
			ctl_warnx("'%s' names more than one pod", arg);
			r = EX_DATAERR;
			goto out;
		}
		for (size_t i = 0; pod && i < cl->n_containers; i++) {
			if (strcmp(cl->containers[i]->pod_sandbox_id, pod) == 0) {
				found = cl->containers[i];
				n_found++;
			}
		}
		if (pod && n_found != 1) {
			ctl_warnx("pod '%s' has %zu containers: a unit runs one (generate one per "
				  "container)",
				  arg, n_found);
			r = EX_DATAERR;
			goto out;
		}
	}
	if (!n_found) {
		ctl_warnx("no container or pod '%s'", arg);
		r = EX_NOINPUT;
	} else if (n_found > 1) {
		ctl_warnx("'%s' names more than one container", arg);
		r = EX_DATAERR;
	} else {
		*ret_id = ad_strdup(found->id);
		*ret_pod = ad_strdup(found->pod_sandbox_id);
	}
out:
	protobuf_c_message_free_unpacked(m, NULL);
	if (pm)
		protobuf_c_message_free_unpacked(pm, NULL);
	return r;
}

/* The "config" of a verbose status's info (the CRI config, Go's JSON form). */
static json_t *info_config(size_t n_info, void **info)
{
	for (size_t i = 0; i < n_info; i++) {
		const Runtime__V1__ContainerStatusResponse__InfoEntry *e = info[i];
		if (strcmp(e->key, "info") != 0)
			continue;
		json_t *o = json_loads(e->value, 0, NULL);
		json_t *cfg = json_incref(json_object_get(o, "config"));
		json_decref(o);
		return cfg;
	}
	return NULL;
}

static int configs(ctl_ctx *ctx, const char *id, const char *pod, json_t **ret_ctr,
		   json_t **ret_pod)
{
	Runtime__V1__ContainerStatusRequest cq = RUNTIME__V1__CONTAINER_STATUS_REQUEST__INIT;
	Runtime__V1__PodSandboxStatusRequest pq = RUNTIME__V1__POD_SANDBOX_STATUS_REQUEST__INIT;
	cq.container_id = (char *)id;
	cq.verbose = pq.verbose = true;
	pq.pod_sandbox_id = (char *)pod;
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, SVC "ContainerStatus", &cq.base,
			  &runtime__v1__container_status_response__descriptor, &m);
	if (r)
		return r;
	const Runtime__V1__ContainerStatusResponse *cs = (const Runtime__V1__ContainerStatusResponse *)m;
	*ret_ctr = info_config(cs->n_info, (void **)cs->info);
	protobuf_c_message_free_unpacked(m, NULL);
	r = ctl_unary(ctx, SVC "PodSandboxStatus", &pq.base,
		      &runtime__v1__pod_sandbox_status_response__descriptor, &m);
	if (r)
		return r;
	const Runtime__V1__PodSandboxStatusResponse *ps = (const Runtime__V1__PodSandboxStatusResponse *)m;
	*ret_pod = info_config(ps->n_info, (void **)ps->info);
	protobuf_c_message_free_unpacked(m, NULL);
	if (!*ret_ctr || !*ret_pod) {
		ctl_warnx("container %s: agentd's verbose status has no config", id);
		return EX_PROTOCOL;
	}
	return 0;
}

/* One word of ExecStart=: quoted, with systemd's specifiers (%) and
 * variables ($) escaped. */
static void exec_word(FILE *out, const char *w)
{
	fputs(" \"", out);
	for (const char *p = w; *p; p++) {
		if (*p == '"' || *p == '\\')
			fputc('\\', out);
		if (*p == '%' || *p == '$')
			fputc(*p, out);
		if (*p == '\n')
			fputs("\\n", out);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static json_t *s(json_t *o, const char *k)
{
	return json_object_get(o, k);
}

/* argv of `agentctl run` that makes this container again. */
static json_t *run_words(const char *agentctl, const char *endpoint, json_t *ctr, json_t *pod,
			 const char *name)
{
	json_t *w = json_pack("[s, s, s, s, s, s, s, s]", agentctl, "-e", endpoint, "run", "--rm",
			      "--replace", "--name", name);
	size_t i;
	json_t *v;
	static const char *const protos[] = {"tcp", "udp", "sctp"};
	json_array_foreach(s(pod, "port_mappings"), i, v)
	{
		json_int_t proto = json_integer_value(s(v, "protocol"));
		const char *ip = json_string_value(s(v, "host_ip"));
		json_array_append_new(w, json_string("-p"));
		json_array_append_new(
		    w, json_sprintf("%s%s%s%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT "/%s",
				    ip && strchr(ip, ':') ? "[" : "", ip ? ip : "",
				    ip ? (strchr(ip, ':') ? "]:" : ":") : "",
				    json_integer_value(s(v, "host_port")),
				    json_integer_value(s(v, "container_port")),
				    proto >= 0 && proto < 3 ? protos[proto] : "tcp"));
	}
	json_array_foreach(s(ctr, "mounts"), i, v)
	{
		json_array_append_new(w, json_string("-v"));
		json_array_append_new(w, json_sprintf("%s:%s%s", json_string_value(s(v, "host_path")),
						      json_string_value(s(v, "container_path")),
						      json_is_true(s(v, "readonly")) ? ":ro" : ""));
	}
	json_array_foreach(s(ctr, "envs"), i, v)
	{
		json_array_append_new(w, json_string("-e"));
		json_array_append_new(w, json_sprintf("%s=%s", json_string_value(s(v, "key")),
						      json_string_value(s(v, "value")) ?: ""));
	}
	/* CRI's command replaces the entrypoint: its first word is run's
	 * --entrypoint, the rest come before the args. */
	json_t *command = s(ctr, "command");
	if (json_array_size(command)) {
		json_array_append_new(w, json_string("--entrypoint"));
		json_array_append(w, json_array_get(command, 0));
	}
	json_array_append_new(w, json_string(json_string_value(s(s(ctr, "image"), "image"))));
	for (i = 1; i < json_array_size(command); i++)
		json_array_append(w, json_array_get(command, i));
	json_array_foreach(s(ctr, "args"), i, v)
		json_array_append(w, v);
	return w;
}

static int run_generate(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"restart-policy", required_argument, NULL, 'r'},
	    {"files", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *policy = "on-failure";
	bool files = false;
	int c, r = 0;
	while ((c = ctl_getopt(&ctl_cmd_generate, argc, argv, ":r:fh", opts, &r)) != -1) {
		if (c == 'r')
			policy = optarg;
		else if (c == 'f')
			files = true;
	}
	if (r)
		return r < 0 ? 0 : r;
	if (optind >= argc || strcmp(argv[optind], "systemd") != 0)
		return ctl_usage_error(&ctl_cmd_generate, optind < argc
							      ? "unknown kind '%s' (systemd)"
							      : "what to generate is required (systemd)",
				       optind < argc ? argv[optind] : "");
	if (argc - optind != 2)
		return ctl_usage_error(&ctl_cmd_generate, argc - optind < 2
							      ? "POD or CONTAINER is required"
							      : "one POD or CONTAINER only");
	bool known = false;
	for (const char *const *p = RESTART_POLICIES; *p; p++)
		known = known || strcmp(*p, policy) == 0;
	if (!known)
		return ctl_usage_error(&ctl_cmd_generate,
				       "unknown --restart-policy '%s' (no, on-success, on-failure, "
				       "on-abnormal, on-watchdog, on-abort, always)",
				       policy);
	_cleanup_free_ char *id = NULL, *pod = NULL;
	json_t *ctr_cfg = NULL, *pod_cfg = NULL;
	if ((r = find_container(ctx, argv[optind + 1], &id, &pod)) ||
	    (r = configs(ctx, id, pod, &ctr_cfg, &pod_cfg)))
		goto out;
	const char *name = json_string_value(s(s(pod_cfg, "metadata"), "name"));
	const char *image = json_string_value(s(s(ctr_cfg, "image"), "image"));
	if (!name || !image) {
		ctl_warnx("container %s: its config has no name or image", id);
		r = EX_PROTOCOL;
		goto out;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = '\0';
	const char *endpoint = ctx->endpoint ? ctx->endpoint : CTL_DEFAULT_ENDPOINT;
	json_t *words = run_words(n > 0 ? self : "/usr/bin/agentctl", endpoint, ctr_cfg, pod_cfg,
				  name);
	_cleanup_free_ char *unit_name = ad_asprintf("agentd-%s.service", name);
	FILE *out = stdout;
	if (files && !(out = fopen(unit_name, "w"))) {
		ctl_warnx("%s: %s", unit_name, strerror(errno));
		json_decref(words);
		r = EX_CANTCREAT;
		goto out;
	}
	fprintf(out,
		"# %s: agentd runs container %s (%s) of pod %s.\n"
		"# Generated by agentctl generate systemd; see deploy/systemd.md.\n"
		"[Unit]\n"
		"Description=agentd container %s (%s)\n"
		"Wants=network-online.target\n"
		"After=network-online.target agentd.service\n"
		"Requires=agentd.service\n"
		"\n"
		"[Service]\n"
		"Type=exec\n"
		"# Each start makes a new pod (--replace removes one left over); stopping\n"
		"# stops the container and removes its pod (--rm).\n"
		"ExecStart=",
		unit_name, name, id, pod, name, image);
	size_t i;
	json_t *w;
	json_array_foreach(words, i, w)
	{
		if (i == 0)
			fputs(json_string_value(w), out);
		else
			exec_word(out, json_string_value(w));
	}
	fprintf(out,
		"\n"
		"Restart=%s\n"
		"RestartSec=1\n"
		"# SIGTERM to agentctl stops the container within 10 s; a container\n"
		"# ended by that SIGTERM exits 143.\n"
		"TimeoutStopSec=30\n"
		"SuccessExitStatus=143\n"
		"\n"
		"[Install]\n"
		"WantedBy=multi-user.target\n",
		policy);
	json_decref(words);
	if (files) {
		if (fclose(out) != 0) {
			ctl_warnx("%s: %s", unit_name, strerror(errno));
			r = EX_IOERR;
			goto out;
		}
		char cwd[PATH_MAX];
		printf("%s/%s\n", getcwd(cwd, sizeof(cwd)) ? cwd : ".", unit_name);
	}
out:
	json_decref(ctr_cfg);
	json_decref(pod_cfg);
	return r;
}

const ctl_command ctl_cmd_generate = {
    .name = "generate",
    .synopsis = "systemd [--restart-policy POLICY] [--files] POD|CONTAINER",
    .summary = "a systemd unit that runs the container through agentd (--files: "
	       "agentd-NAME.service in the current directory)",
    .run = run_generate,
};
