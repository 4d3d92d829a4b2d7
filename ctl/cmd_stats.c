/* agentctl stats, update, events: container resource usage, resource
 * updates and the container event stream of runtime.v1.RuntimeService. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cri/api.pb-c.h"
#include "ctl.h"

#define SVC "/runtime.v1.RuntimeService/"
#define PATH_STATS SVC "ContainerStats"
#define PATH_LIST_STATS SVC "ListContainerStats"
#define PATH_UPDATE SVC "UpdateContainerResources"
#define PATH_EVENTS SVC "GetContainerEvents"

/* ---- stats ------------------------------------------------------------------------------- */

/* Decimal units, as crictl's (docker's) HumanSize prints them. */
static void human_size(uint64_t v, char buf[32])
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
	double d = (double)v;
	size_t u = 0;
	while (d >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		d /= 1000;
		u++;
	}
	snprintf(buf, 32, "%.4g%s", d, units[u]);
}

static uint64_t u64_or_0(const Runtime__V1__UInt64Value *v)
{
	return v ? v->value : 0;
}

/* One ContainerStats or ListContainerStats call; returns the stats as an
 * array the caller frees with the response (*ret_msg). */
static int fetch_stats(ctl_ctx *ctx, const char *one_id, json_t *filter, ProtobufCMessage **ret_msg,
		       size_t *ret_n, Runtime__V1__ContainerStats ***ret_stats)
{
	ProtobufCMessage *m = NULL;
	int r;
	if (one_id) {
		Runtime__V1__ContainerStatsRequest req = RUNTIME__V1__CONTAINER_STATS_REQUEST__INIT;
		req.container_id = (char *)one_id;
		r = ctl_unary(ctx, PATH_STATS, &req.base,
			      &runtime__v1__container_stats_response__descriptor, &m);
		if (r)
			return r;
		Runtime__V1__ContainerStatsResponse *resp = (void *)m;
		*ret_n = resp->stats ? 1 : 0;
		*ret_stats = &resp->stats;
	} else {
		Runtime__V1__ListContainerStatsRequest req =
		    RUNTIME__V1__LIST_CONTAINER_STATS_REQUEST__INIT;
		req.filter = (Runtime__V1__ContainerStatsFilter *)ctl_pb_from_json(
		    &runtime__v1__container_stats_filter__descriptor, filter, "filter");
		r = ctl_unary(ctx, PATH_LIST_STATS, &req.base,
			      &runtime__v1__list_container_stats_response__descriptor, &m);
		if (req.filter)
			protobuf_c_message_free_unpacked(&req.filter->base, NULL);
		if (r)
			return r;
		Runtime__V1__ListContainerStatsResponse *resp = (void *)m;
		*ret_n = resp->n_stats;
		*ret_stats = resp->stats;
	}
	*ret_msg = m;
	return 0;
}

static const Runtime__V1__ContainerStats *find_stats(size_t n, Runtime__V1__ContainerStats **v,
						     const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (v[i]->attributes && strcmp(v[i]->attributes->id, id) == 0)
			return v[i];
	return NULL;
}

/* CPU % of one core: the server's usage_nano_cores if it fills it, else the
 * usage between two samples (as crictl does); negative when unknown. */
static double cpu_percent(const Runtime__V1__ContainerStats *now,
			  const Runtime__V1__ContainerStats *before)
{
	if (!now->cpu)
		return -1;
	if (now->cpu->usage_nano_cores)
		return (double)now->cpu->usage_nano_cores->value / 1e7;
	if (!before || !before->cpu || !before->cpu->usage_core_nano_seconds ||
	    !now->cpu->usage_core_nano_seconds || now->cpu->timestamp <= before->cpu->timestamp)
		return -1;
	uint64_t a = before->cpu->usage_core_nano_seconds->value;
	uint64_t b = now->cpu->usage_core_nano_seconds->value;
	if (b < a)
		return -1;
	return (double)(b - a) * 100.0 / (double)(now->cpu->timestamp - before->cpu->timestamp);
}

/* A text row of stats; before: the first sample, for the CPU %. */
static void print_stats_row(const Runtime__V1__ContainerStats *s,
			    const Runtime__V1__ContainerStats *before)
{
	const Runtime__V1__ContainerAttributes *a = s->attributes;
	double cpu = cpu_percent(s, before);
	char cpubuf[32], mem[32], disk[32];
	if (cpu >= 0)
		snprintf(cpubuf, sizeof(cpubuf), "%.2f", cpu);
	else
		snprintf(cpubuf, sizeof(cpubuf), "-");
	human_size(s->memory ? u64_or_0(s->memory->working_set_bytes) : 0, mem);
	human_size(s->writable_layer ? u64_or_0(s->writable_layer->used_bytes) : 0, disk);
	printf("%-13.13s %-24s %-8s %-10s %-10s %" PRIu64 "\n", a ? a->id : "",
	       a && a->metadata ? a->metadata->name : "", cpubuf, mem, disk,
	       s->writable_layer ? u64_or_0(s->writable_layer->inodes_used) : 0);
}

static int run_stats(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"all", no_argument, NULL, 'a'},
	    {"output", required_argument, NULL, 'o'},
	    {"pod", required_argument, NULL, 'p'},
	    {"id", required_argument, NULL, 'i'},
	    {"label", required_argument, NULL, 'L'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	ctl_list_opts o;
	ctl_list_opts_init(&o);
	bool all = false;
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_stats, argc, argv, ":ao:p:h", opts, &r)) != -1) {
		if (c == 'a')
			all = true;
		else
			r = ctl_list_option(&ctl_cmd_stats, c, optarg, &o);
	}
	if (!r)
		r = ctl_operands_at_most(&ctl_cmd_stats, argc, argv, 1);
	if (!r && optind < argc && o.id)
		r = ctl_usage_error(&ctl_cmd_stats, "CONTAINER and --id do not go together");
	_cleanup_free_ char *pod_id = NULL, *one = NULL;
	if (!r && o.pod)
		r = ctl_resolve_id(ctx, true, o.pod, &pod_id);
	if (!r && optind < argc)
		r = ctl_resolve_id(ctx, false, argv[optind], &one);
	if (r) {
		ctl_list_opts_clear(&o);
		return r < 0 ? 0 : r;
	}
	json_t *filter = ctl_list_filter(&o, o.id, pod_id, NULL);
	ctl_list_opts_clear(&o);
	ctl_format fmt = o.fmt;

	ProtobufCMessage *m0 = NULL, *m1 = NULL;
	size_t n0 = 0, n1 = 0;
	Runtime__V1__ContainerStats **v0 = NULL, **v1 = NULL;
	r = fetch_stats(ctx, one, filter, &m0, &n0, &v0);
	/* A second sample for CPU % unless the server computed it already. */
	bool need_second = false;
	for (size_t i = 0; !r && i < n0; i++)
		if (v0[i]->cpu && !v0[i]->cpu->usage_nano_cores)
			need_second = true;
	if (!r && need_second && fmt == CTL_TEXT) {
		sleep(1);
		r = fetch_stats(ctx, one, filter, &m1, &n1, &v1);
	}
	json_decref(filter);
	if (r) {
		if (m0)
			protobuf_c_message_free_unpacked(m0, NULL);
		return r;
	}
	size_t n = m1 ? n1 : n0;
	Runtime__V1__ContainerStats **v = m1 ? v1 : v0;
	json_t *items = json_array();
	if (fmt == CTL_TEXT)
		printf("%-13s %-24s %-8s %-10s %-10s %s\n", "CONTAINER", "NAME", "CPU %", "MEM",
		       "DISK", "INODES");
	for (size_t i = 0; i < n; i++) {
		const Runtime__V1__ContainerStats *s = v[i];
		/* Like crictl: only running containers (those with usage) unless -a. */
		if (!all && !one && !s->cpu && !s->memory)
			continue;
		if (fmt != CTL_TEXT) {
			json_array_append_new(items,
					      pbjson_from_message(&s->base, PBJSON_PROTOJSON));
			continue;
		}
		const Runtime__V1__ContainerAttributes *a = s->attributes;
		print_stats_row(s, a ? find_stats(n0, v0, a->id) : NULL);
	}
	if (fmt != CTL_TEXT)
		ctl_print(json_pack("{s:O}", "stats", items), fmt);
	json_decref(items);
	protobuf_c_message_free_unpacked(m0, NULL);
	if (m1)
		protobuf_c_message_free_unpacked(m1, NULL);
	return 0;
}

/* ---- update ------------------------------------------------------------------------------ */

/* BYTES with an optional binary suffix: 64m, 1g, 512k, 1048576. */
static bool parse_bytes(const char *s, int64_t *ret)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || v < 0)
		return false;
	int shift = 0;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case '\0':
		break;
	default:
		return false;
	}
	if (*end && end[1] && !((end[1] == 'b' || end[1] == 'B') && !end[2]))
		return false;
	if (v > (INT64_MAX >> shift))
		return false;
	*ret = (int64_t)v << shift;
	return true;
}

static bool parse_int(const char *s, int64_t *ret)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return false;
	*ret = v;
	return true;
}

static int update_one(ctl_ctx *ctx, const char *id, void *userdata)
{
	Runtime__V1__UpdateContainerResourcesRequest req =
	    RUNTIME__V1__UPDATE_CONTAINER_RESOURCES_REQUEST__INIT;
	req.container_id = (char *)id;
	req.linux = userdata;
	int r = ctl_unary(ctx, PATH_UPDATE, &req.base,
			  &runtime__v1__update_container_resources_response__descriptor, NULL);
	if (!r)
		printf("%s\n", id);
	return r;
}

static int run_update(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"memory", required_argument, NULL, 'm'},
	    {"cpu-shares", required_argument, NULL, 's'},
	    {"cpu-quota", required_argument, NULL, 'q'},
	    {"cpu-period", required_argument, NULL, 'p'},
	    {"cpuset-cpus", required_argument, NULL, 'c'},
	    {"cpuset-mems", required_argument, NULL, 'M'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	Runtime__V1__LinuxContainerResources res = RUNTIME__V1__LINUX_CONTAINER_RESOURCES__INIT;
	bool any = false;
	int c, r = 0;
	while ((c = ctl_getopt(&ctl_cmd_update, argc, argv, ":h", opts, &r)) != -1) {
		bool ok = true;
		switch (c) {
		case 'm':
			ok = parse_bytes(optarg, &res.memory_limit_in_bytes) &&
			     res.memory_limit_in_bytes > 0;
			break;
		case 's':
			ok = parse_int(optarg, &res.cpu_shares) && res.cpu_shares >= 0;
			break;
		case 'q':
			ok = parse_int(optarg, &res.cpu_quota);
			break;
		case 'p':
			ok = parse_int(optarg, &res.cpu_period) && res.cpu_period >= 0;
			break;
		case 'c':
			res.cpuset_cpus = optarg;
			break;
		case 'M':
			res.cpuset_mems = optarg;
			break;
		}
		if (!ok) {
			const struct option *o = opts;
			while (o->val != c)
				o++;
			return ctl_usage_error(&ctl_cmd_update, "invalid value '%s' for --%s",
					       optarg, o->name);
		}
		any = true;
	}
	if (r)
		return r < 0 ? 0 : r;
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_update, "CONTAINER is required");
	if (!any)
		return ctl_usage_error(&ctl_cmd_update, "nothing to update");
	return ctl_each_id(ctx, false, argc, argv, update_one, &res);
}

/* ---- events ------------------------------------------------------------------------------ */

static void events_interrupted(int sig)
{
	(void)sig;
	/* The stream only ends when the user stops it; stdout is line
	 * buffered, so everything received is already written. */
	_exit(0);
}

static int on_event(const ProtobufCMessage *msg, void *userdata)
{
	const ctl_format *fmt = userdata;
	const Runtime__V1__ContainerEventResponse *ev = (const void *)msg;
	if (*fmt != CTL_TEXT) {
		ctl_print_stream_item(pbjson_from_message(msg, PBJSON_PROTOJSON), *fmt);
		return 0;
	}
	const ProtobufCEnumValue *ev_type = protobuf_c_enum_descriptor_get_value(
	    &runtime__v1__container_event_type__descriptor, (int)ev->container_event_type);
	char when[64] = "";
	time_t secs = (time_t)(ev->created_at / 1000000000);
	struct tm tm;
	if (gmtime_r(&secs, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("%s.%09" PRId64 "Z %s %s %s\n", when, ev->created_at % 1000000000,
	       ev_type ? ev_type->name : "UNKNOWN", ev->container_id,
	       ev->pod_sandbox_status && ev->pod_sandbox_status->id[0] ? ev->pod_sandbox_status->id
								       : "-");
	return 0;
}

static int run_events(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_TEXT;
	int r = ctl_format_only(&ctl_cmd_events, argc, argv, &fmt);
	if (r)
		return r < 0 ? 0 : r;
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa = {.sa_handler = events_interrupted};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	Runtime__V1__GetEventsRequest req = RUNTIME__V1__GET_EVENTS_REQUEST__INIT;
	/* -t bounds the stream only when given. */
	return ctl_stream(ctx, PATH_EVENTS, &req.base,
			  &runtime__v1__container_event_response__descriptor,
			  ctx->timeout_given ? ctx->timeout_ms : 0, on_event, &fmt);
}

const ctl_command ctl_cmd_stats = {
    .name = "stats",
    .synopsis = "[-a] [-o table|json|yaml] [-p POD] [--id ID] [--label K=V] [CTR]",
    .summary = "containers' CPU and memory usage",
    .run = run_stats,
};

const ctl_command ctl_cmd_update = {
    .name = "update",
    .synopsis = "[--memory BYTES] [--cpu-shares N] [--cpu-quota N] [--cpu-period N] "
		"[--cpuset-cpus S] [--cpuset-mems S] CONTAINER...",
    .summary = "change containers' resource limits",
    .run = run_update,
};

const ctl_command ctl_cmd_events = {
    .name = "events",
    .synopsis = "[-o table|json|yaml]",
    .summary = "print container events until interrupted (json: a line each, yaml: a "
	       "document each)",
    .run = run_events,
};
