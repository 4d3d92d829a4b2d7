/* agentctl capsh --decode and top; the capability names agentctl inspect
 * shows. Both read what agentd reports of a running container in its verbose
 * ContainerStatus ("capabilities", "processes"; agent/cri/containers.c). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <time.h>

#include "cri/api.pb-c.h"
#include "ctl.h"


/* ---- capability masks ---------------------------------------------------------- */

json_t *ctl_caps_names(uint64_t mask)
{
	json_t *names = json_array();
	for (unsigned bit = 0; bit < 64; bit++) {
		if (!(mask & (1ULL << bit)))
			continue;
		/* libcap names the capabilities it knows, numbers the others (as capsh). */
		char *name = cap_to_name((cap_value_t)bit);
		json_array_append_new(names, json_string(name ? name : ""));
		cap_free(name);
	}
	return names;
}

static int parse_mask(const char *s, uint64_t *ret)
{
	const char *hex = strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0 ? s + 2 : s;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(hex, &end, 16);
	if (!*hex || *end || errno || hex[0] == '-' || hex[0] == '+' || strlen(hex) > 16)
		return -1;
	*ret = v;
	return 0;
}

void ctl_caps_decode_info(json_t *info)
{
	json_t *caps = json_object_get(info, "capabilities");
	const char *key;
	json_t *v;
	json_object_foreach(caps, key, v)
	{
		uint64_t mask;
		if (!json_is_string(v) || parse_mask(json_string_value(v), &mask) < 0)
			continue;
		json_object_set_new(caps, key,
				    json_pack("{s:O, s:o}", "mask", v, "names",
					      ctl_caps_names(mask)));
	}
}

static int run_capsh(ctl_ctx *ctx, int argc, char **argv)
{
	(void)ctx;
	static const struct option opts[] = {
	    {"decode", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *hex = NULL;
	int c, r = 0;
	while ((c = ctl_getopt(&ctl_cmd_capsh, argc, argv, ":d:h", opts, &r)) != -1)
		if (c == 'd')
			hex = optarg;
	if (r)
		return r < 0 ? 0 : r;
	if ((r = ctl_operands_at_most(&ctl_cmd_capsh, argc, argv, 0)))
		return r;
	if (!hex)
		return ctl_usage_error(&ctl_cmd_capsh, "--decode HEX is required");
	uint64_t mask;
	if (parse_mask(hex, &mask) < 0)
		return ctl_usage_error(&ctl_cmd_capsh,
				       "'%s' is not a capability mask (up to 16 hex digits)", hex);
	/* As capsh --decode prints it. */
	json_t *names = ctl_caps_names(mask);
	printf("0x%016" PRIx64 "=", mask);
	for (size_t i = 0; i < json_array_size(names); i++)
		printf("%s%s", i ? "," : "", json_string_value(json_array_get(names, i)));
	putchar('\n');
	json_decref(names);
	return 0;
}

/* ---- top --------------------------------------------------------------------------- */

/* A duration as Go prints one (podman top's ELAPSED and TIME): "1h2m3.5s". */
static void go_duration(int64_t ns, bool whole_seconds, char buf[48])
{
	if (ns < 0)
		ns = 0;
	int64_t h = ns / 3600000000000LL, m = ns / 60000000000LL % 60;
	int64_t s_ns = ns % 60000000000LL;
	char sec[24];
	if (whole_seconds || s_ns % 1000000000LL == 0) {
		snprintf(sec, sizeof(sec), "%llds", (long long)(s_ns / 1000000000LL));
	} else {
		snprintf(sec, sizeof(sec), "%lld.%09lld", (long long)(s_ns / 1000000000LL),
			 (long long)(s_ns % 1000000000LL));
		size_t n = strlen(sec);
		while (sec[n - 1] == '0')
			sec[--n] = '\0';
		sec[n] = 's';
		sec[n + 1] = '\0';
	}
	if (h)
		snprintf(buf, 48, "%lldh%lldm%s", (long long)h, (long long)m, sec);
	else if (m)
		snprintf(buf, 48, "%lldm%s", (long long)m, sec);
	else
		snprintf(buf, 48, "%s", sec);
}

static int run_top(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_TEXT;
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_top, argc, argv, ":o:h", opts, &r)) != -1)
		if (c == 'o')
			r = ctl_parse_format(&ctl_cmd_top, optarg, &fmt);
	if (r)
		return r < 0 ? 0 : r;
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_top, "CONTAINER is required");
	if ((r = ctl_operands_at_most(&ctl_cmd_top, argc, argv, 1)))
		return r;
	Runtime__V1__ContainerStatusResponse *m = NULL;
	if ((r = ctl_container_status(ctx, argv[optind], true, &m)))
		return r;
	const Runtime__V1__ContainerStatusResponse *st =
	    (const Runtime__V1__ContainerStatusResponse *)m;
	json_t *info = NULL;
	for (size_t i = 0; i < st->n_info; i++)
		if (strcmp(st->info[i]->key, "info") == 0)
			info = json_loads(st->info[i]->value, 0, NULL);
	bool running = st->status &&
		       st->status->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING;
	protobuf_c_message_free_unpacked(&m->base, NULL);
	json_t *procs = json_object_get(info, "processes");
	if (!running || !json_is_array(procs)) {
		ctl_warnx("container %s is not running", argv[optind]);
		json_decref(info);
		return EX_UNAVAILABLE;
	}
	if (fmt != CTL_TEXT) {
		ctl_print(json_pack("{s:O}", "processes", procs), fmt);
		json_decref(info);
		return 0;
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	printf("%-10s %-8s %-8s %-7s %-16s %-8s %-8s %s\n", "USER", "PID", "PPID", "%CPU",
	       "ELAPSED", "TTY", "TIME", "COMMAND");
	size_t i;
	json_t *p;
	json_array_foreach(procs, i, p)
	{
		int64_t started = json_integer_value(json_object_get(p, "startedAt"));
		int64_t cpu = json_integer_value(json_object_get(p, "cpuNanos"));
		int64_t elapsed = now_ns - started;
		char el[48], tm[48];
		go_duration(elapsed, false, el);
		go_duration(cpu, true, tm);
		double pcpu = elapsed > 0 ? 100.0 * (double)cpu / (double)elapsed : 0;
		printf("%-10s %-8" JSON_INTEGER_FORMAT " %-8" JSON_INTEGER_FORMAT
		       " %-7.3f %-16s %-8s %-8s %s\n",
		       json_string_value(json_object_get(p, "user")),
		       json_integer_value(json_object_get(p, "pid")),
		       json_integer_value(json_object_get(p, "ppid")), pcpu, el,
		       json_string_value(json_object_get(p, "tty")), tm,
		       json_string_value(json_object_get(p, "command")));
	}
	json_decref(info);
	return 0;
}

const ctl_command ctl_cmd_capsh = {
    .name = "capsh",
    .synopsis = "--decode HEX",
    .summary = "decode a capability mask into names, as capsh --decode does",
    .run = run_capsh,
};

const ctl_command ctl_cmd_top = {
    .name = "top",
    .synopsis = "[-o table|json|yaml] CONTAINER",
    .summary = "the processes of a running container's cgroup, as podman top lists them",
    .run = run_top,
};
