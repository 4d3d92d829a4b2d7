/* agentctl create, start, run, stop, rm, ps, inspect, logs, exec: the
 * container half of the CRI runtime.v1.RuntimeService. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/v1/agent.pb-c.h"
#include "cri/api.pb-c.h"
#include "ctl.h"

#define SVC "/runtime.v1.RuntimeService/"
#define PATH_CREATE SVC "CreateContainer"
#define PATH_START SVC "StartContainer"
#define PATH_STOP SVC "StopContainer"
#define PATH_REMOVE SVC "RemoveContainer"
#define PATH_LIST SVC "ListContainers"
#define PATH_STATUS SVC "ContainerStatus"
#define PATH_EXEC SVC "ExecSync"
#define LOG_MAX_SIZE (256u << 20)

/* ---- create, start, run --------------------------------------------------------- */

/* CreateContainer in pod_id (NULL: a new pod from pcfg, *ret_pod_id). */
static int create_container_in(ctl_ctx *ctx, const char *pod_id, ProtobufCMessage *cfg,
			       ProtobufCMessage *pcfg, char **ret_pod_id, char **ret_id)
{
	_cleanup_free_ char *pod_ours = NULL;
	int r = 0;
	if (!pod_id) {
		r = ctl_run_pod(ctx, (Runtime__V1__PodSandboxConfig *)pcfg, &pod_ours);
		pod_id = pod_ours;
	}
	if (!r) {
		Runtime__V1__CreateContainerRequest req =
		    RUNTIME__V1__CREATE_CONTAINER_REQUEST__INIT;
		req.pod_sandbox_id = (char *)pod_id;
		req.config = (Runtime__V1__ContainerConfig *)cfg;
		req.sandbox_config = (Runtime__V1__PodSandboxConfig *)pcfg;
		ProtobufCMessage *m = NULL;
		ctl_long_call(ctx);
		r = ctl_unary(ctx, PATH_CREATE, &req.base,
			      &runtime__v1__create_container_response__descriptor, &m);
		if (!r) {
			*ret_id =
			    ad_strdup(((Runtime__V1__CreateContainerResponse *)m)->container_id);
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	if (ret_pod_id && pod_ours)
		*ret_pod_id = ad_steal_ptr(pod_ours);
	return r;
}

static int create_container(ctl_ctx *ctx, const char *pod_id, const char *ctr_file,
			    const char *pod_file, char **ret_id)
{
	ProtobufCMessage *cfg = NULL, *pcfg = NULL;
	int r = ctl_pb_from_file(ctr_file, &runtime__v1__container_config__descriptor, &cfg);
	if (!r)
		r = ctl_pb_from_file(pod_file, &runtime__v1__pod_sandbox_config__descriptor, &pcfg);
	if (!r)
		r = create_container_in(ctx, pod_id, cfg, pcfg, NULL, ret_id);
	if (cfg)
		protobuf_c_message_free_unpacked(cfg, NULL);
	if (pcfg)
		protobuf_c_message_free_unpacked(pcfg, NULL);
	return r;
}

static int start_container(ctl_ctx *ctx, const char *id)
{
	Runtime__V1__StartContainerRequest req = RUNTIME__V1__START_CONTAINER_REQUEST__INIT;
	req.container_id = (char *)id;
	ctl_long_call(ctx);
	return ctl_unary(ctx, PATH_START, &req.base,
			 &runtime__v1__start_container_response__descriptor, NULL);
}

static int run_create(ctl_ctx *ctx, int argc, char **argv)
{
	int r = ctl_ids_only(&ctl_cmd_create, argc, argv, "POD");
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind != 3)
		return ctl_usage_error(&ctl_cmd_create,
				       "POD, CONTAINER_CONFIG and POD_CONFIG are required");
	_cleanup_free_ char *pod = NULL, *id = NULL;
	r = ctl_resolve_id(ctx, true, argv[optind], &pod);
	if (r)
		return r;
	r = create_container(ctx, pod, argv[optind + 1], argv[optind + 2], &id);
	if (!r)
		printf("%s\n", id);
	return r;
}

static int run_image(ctl_ctx *ctx, int argc, char **argv);

/* A config file's name: crictl's run, not podman's. */
static bool config_file_name(const char *arg)
{
	struct stat st;
	size_t n = strlen(arg);
	return (n > 5 && strcmp(arg + n - 5, ".json") == 0) ||
	       (n > 5 && strcmp(arg + n - 5, ".yaml") == 0) ||
	       (n > 4 && strcmp(arg + n - 4, ".yml") == 0) ||
	       (stat(arg, &st) == 0 && S_ISREG(st.st_mode));
}

/* crictl's form (config files) or podman's (an image and options). */
static int run_run(ctl_ctx *ctx, int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '-' || !config_file_name(argv[1]))
		return run_image(ctx, argc, argv);
	int r = ctl_ids_only(&ctl_cmd_run, argc, argv, "CONTAINER_CONFIG");
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind != 2)
		return ctl_usage_error(&ctl_cmd_run,
				       "CONTAINER_CONFIG and POD_CONFIG are required");
	_cleanup_free_ char *id = NULL;
	r = create_container(ctx, NULL, argv[optind], argv[optind + 1], &id);
	if (!r)
		r = start_container(ctx, id);
	if (!r)
		printf("%s\n", id);
	return r;
}

static int run_start(ctl_ctx *ctx, int argc, char **argv)
{
	static const ctl_id_call start = {
	    .path = PATH_START,
	    .req_desc = &runtime__v1__start_container_request__descriptor,
	    .resp_desc = &runtime__v1__start_container_response__descriptor,
	    .id_field = "container_id",
	    .done_prefix = "",
	};
	return ctl_run_id_command(ctx, &ctl_cmd_start, argc, argv, &start);
}

/* ---- stop, rm ------------------------------------------------------------------------ */

/* getopt for stop: -t SECONDS and -h. 0 to go on, -1 after printing help,
 * else the exit status of a usage error. */
static int seconds_option(const ctl_command *cmd, int argc, char **argv, long *ret_seconds)
{
	static const struct option opts[] = {
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int r = 0;
	while (!r && ctl_getopt(cmd, argc, argv, ":t:h", opts, &r) != -1)
		r = ctl_parse_seconds(cmd, optarg, ret_seconds);
	return r;
}

static int stop_one(ctl_ctx *ctx, const char *id, void *userdata)
{
	Runtime__V1__StopContainerRequest req = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
	req.container_id = (char *)id;
	req.timeout = *(const long *)userdata;
	int r = ctl_unary(ctx, PATH_STOP, &req.base,
			  &runtime__v1__stop_container_response__descriptor, NULL);
	if (!r)
		printf("%s\n", id);
	return r;
}

static int run_stop(ctl_ctx *ctx, int argc, char **argv)
{
	long grace = 0;
	int r = seconds_option(&ctl_cmd_stop, argc, argv, &grace);
	if (r)
		return r < 0 ? 0 : r;
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_stop, "CONTAINER is required");
	ctl_long_call(ctx);
	/* The call must outlive the grace period it asks for. */
	if (ctx->timeout_ms && ctx->timeout_ms < (unsigned)(grace + 30) * 1000)
		ctx->timeout_ms = (unsigned)(grace + 30) * 1000;
	return ctl_each_id(ctx, false, argc, argv, stop_one, &grace);
}

static int run_rm(ctl_ctx *ctx, int argc, char **argv)
{
	static const ctl_id_call remove = {
	    .path = PATH_REMOVE,
	    .req_desc = &runtime__v1__remove_container_request__descriptor,
	    .resp_desc = &runtime__v1__remove_container_response__descriptor,
	    .id_field = "container_id",
	    .done_prefix = "",
	};
	return ctl_run_id_command(ctx, &ctl_cmd_rm, argc, argv, &remove);
}

/* ---- ps ---------------------------------------------------------------------------------- */

/* --image: the image as the container's config named it, or the image it
 * names now (image_id, when agentd has it), or the image's id. */
static bool image_matches(const Runtime__V1__Container *ct, const char *image,
			  const char *image_id)
{
	if (!image)
		return true;
	const char *named = ct->image ? ct->image->user_specified_image : NULL;
	const char *id = ct->image ? ct->image->image : NULL;
	const char *candidates[] = {named, id, ct->image_ref};
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		const char *c = candidates[i];
		if (c && *c && (strcmp(c, image) == 0 || (image_id && strcmp(c, image_id) == 0)))
			return true;
	}
	return false;
}

/* What ps was asked for, beyond the shared list options. */
typedef struct ps_opts {
	ctl_list_opts list;
	bool all;
	const char *image;
	const char *state; /* a ContainerState name */
} ps_opts;

static int parse_state_option(const char *arg, const char **ret_state)
{
	static const char *const states[][2] = {
	    {"created", "CONTAINER_CREATED"},
	    {"running", "CONTAINER_RUNNING"},
	    {"exited", "CONTAINER_EXITED"},
	    {"unknown", "CONTAINER_UNKNOWN"},
	};
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		if (strcasecmp(arg, states[i][0]) == 0) {
			*ret_state = states[i][1];
			return 0;
		}
	}
	return ctl_usage_error(&ctl_cmd_ps,
			       "unknown state '%s' (created, running, exited or unknown)", arg);
}

/* 0 to go on, -1 after printing help, else the exit status of a usage error. */
static int parse_ps_options(int argc, char **argv, ps_opts *o)
{
	static const struct option opts[] = {
	    {"all", no_argument, NULL, 'a'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"output", required_argument, NULL, 'o'},
	    {"pod", required_argument, NULL, 'p'},
	    {"id", required_argument, NULL, 'i'},
	    {"name", required_argument, NULL, 'N'},
	    {"image", required_argument, NULL, 'I'},
	    {"state", required_argument, NULL, 's'},
	    {"label", required_argument, NULL, 'L'},
	    {"last", required_argument, NULL, 'n'},
	    {"latest", no_argument, NULL, 'l'},
	    {"no-trunc", no_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_ps, argc, argv, ":aqo:p:s:n:lh", opts, &r)) != -1) {
		switch (c) {
		case 'a':
			o->all = true;
			break;
		case 'I':
			o->image = optarg;
			break;
		case 's':
			r = parse_state_option(optarg, &o->state);
			break;
		default:
			r = ctl_list_option(&ctl_cmd_ps, c, optarg, &o->list);
		}
	}
	if (!r)
		r = ctl_operands_at_most(&ctl_cmd_ps, argc, argv, 0);
	/* Like crictl: running containers only unless -a, --state, --last or
	 * --latest (which look at every state). */
	if (!o->state && !o->all && !o->list.last)
		o->state = "CONTAINER_RUNNING";
	return r;
}

static const char *state_label(Runtime__V1__ContainerState s)
{
	switch (s) {
	case RUNTIME__V1__CONTAINER_STATE__CONTAINER_CREATED:
		return "Created";
	case RUNTIME__V1__CONTAINER_STATE__CONTAINER_RUNNING:
		return "Running";
	case RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED:
		return "Exited";
	default:
		return "Unknown";
	}
}

static void print_container_row(const ProtobufCMessage *item, const ctl_list_opts *o)
{
	const Runtime__V1__Container *ct = (const Runtime__V1__Container *)item;
	const Runtime__V1__ContainerMetadata *md = ct->metadata;
	int id_width = o->no_trunc ? 64 : 13;
	char age[32];
	ctl_format_age(ct->created_at, age);
	const char *image_name = ct->image && ct->image->image[0] ? ct->image->image : ct->image_ref;
	/* An image id is cut to 13 hex digits like the ids, as crictl does. */
	int image_width = 4096;
	if (!o->no_trunc && strncmp(image_name, "sha256:", 7) == 0) {
		image_name += 7;
		image_width = 13;
	}
	printf("%-13.*s %-24.*s %-20s %-9s %-24s %-7u %.*s\n", id_width, ct->id, image_width,
	       image_name, age, state_label(ct->state), md ? md->name : "", md ? md->attempt : 0,
	       id_width, ct->pod_sandbox_id);
}

/* ListContainers with the filter; the answer is *ret_resp. */
static int list_containers(ctl_ctx *ctx, json_t *filter,
			   Runtime__V1__ListContainersResponse **ret_resp)
{
	Runtime__V1__ListContainersRequest req = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
	req.filter = (Runtime__V1__ContainerFilter *)ctl_pb_from_json(
	    &runtime__v1__container_filter__descriptor, filter, "filter");
	int r = ctl_unary(ctx, PATH_LIST, &req.base,
			  &runtime__v1__list_containers_response__descriptor,
			  (ProtobufCMessage **)ret_resp);
	if (req.filter)
		protobuf_c_message_free_unpacked(&req.filter->base, NULL);
	return r;
}

/* The filter for agentd, with the pod, container and image named by
 * prefix or name resolved to ids. */
static int ps_filter(ctl_ctx *ctx, ps_opts *o, json_t **ret_filter, char **ret_image_id)
{
	_cleanup_free_ char *pod_id = NULL, *ctr_id = NULL;
	int r = 0;
	if (o->list.pod)
		r = ctl_resolve_id(ctx, true, o->list.pod, &pod_id);
	if (!r && o->image)
		r = ctl_image_id(ctx, o->image, ret_image_id);
	if (!r && o->list.id)
		r = ctl_resolve_id(ctx, false, o->list.id, &ctr_id);
	if (!r)
		*ret_filter = ctl_list_filter(&o->list, ctr_id, pod_id, o->state);
	return r;
}

static int run_ps(ctl_ctx *ctx, int argc, char **argv)
{
	ps_opts o = {0};
	ctl_list_opts_init(&o.list);
	_cleanup_free_ char *image_id = NULL;
	json_t *filter = NULL;
	Runtime__V1__ListContainersResponse *resp = NULL;
	int r = parse_ps_options(argc, argv, &o);
	if (!r)
		r = ps_filter(ctx, &o, &filter, &image_id);
	if (!r)
		r = list_containers(ctx, filter, &resp);
	json_decref(filter);
	if (!r) {
		ProtobufCMessage **ctrs = ad_malloc0(sizeof(*ctrs) * (resp->n_containers + 1));
		size_t n = 0;
		for (size_t i = 0; i < resp->n_containers; i++) {
			const Runtime__V1__Container *ct = resp->containers[i];
			if (ctl_regex_match(&o.list.name, ct->metadata ? ct->metadata->name : "") &&
			    image_matches(ct, o.image, image_id))
				ctrs[n++] = &resp->containers[i]->base;
		}
		_cleanup_free_ char *header =
		    ad_asprintf("%-13s %-24s %-20s %-9s %-24s %-7s %s", "CONTAINER", "IMAGE",
				"CREATED", "STATE", "NAME", "ATTEMPT", "POD ID");
		ctl_list_print(&o.list, "containers", ctrs, n, header, print_container_row);
		free(ctrs);
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	ctl_list_opts_clear(&o.list);
	return r < 0 ? 0 : r;
}

/* ---- inspect, logs ----------------------------------------------------------------------- */

int ctl_container_status(ctl_ctx *ctx, const char *arg, bool verbose,
			 Runtime__V1__ContainerStatusResponse **ret)
{
	_cleanup_free_ char *id = NULL;
	int r = ctl_resolve_id(ctx, false, arg, &id);
	if (r)
		return r;
	Runtime__V1__ContainerStatusRequest req = RUNTIME__V1__CONTAINER_STATUS_REQUEST__INIT;
	req.container_id = id;
	req.verbose = verbose;
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_STATUS, &req.base,
		      &runtime__v1__container_status_response__descriptor, &m);
	if (!r)
		*ret = (Runtime__V1__ContainerStatusResponse *)m;
	return r;
}

static int run_inspect(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_JSON;
	int r = ctl_ids_and_format(&ctl_cmd_inspect, argc, argv, "CONTAINER", &fmt);
	if (r)
		return r < 0 ? 0 : r;
	json_t *out = json_array();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		Runtime__V1__ContainerStatusResponse *st = NULL;
		r = ctl_container_status(ctx, argv[i], true, &st);
		if (r) {
			status = r;
			continue;
		}
		json_t *o = ctl_status_json(
		    st->status ? pbjson_from_message(&st->status->base, PBJSON_PROTOJSON) : NULL,
		    st->n_info, (void **)st->info);
		ctl_caps_decode_info(json_object_get(o, "info"));
		json_array_append_new(out, o);
		protobuf_c_message_free_unpacked(&st->base, NULL);
	}
	ctl_print_inspected(out, argc - optind == 1, fmt);
	return status;
}

typedef struct log_line {
	const char *time;
	size_t time_len;
	bool err;
	char *text; /* partial lines joined */
} log_line;

/* CRI log lines: "<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <text>"; a P
 * line continues in the next one of the same stream. */
static size_t parse_log(char *data, log_line **ret)
{
	log_line *lines = NULL;
	size_t n = 0, cap = 0;
	char *partial[2] = {NULL, NULL};
	for (char *p = data; *p;) {
		char *nl = strchr(p, '\n');
		char *end = nl ? nl : p + strlen(p);
		char *next = nl ? nl + 1 : end;
		char *sp1 = memchr(p, ' ', (size_t)(end - p));
		char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
		char *sp3 = sp2 ? memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1)) : NULL;
		char *text = sp3 ? sp3 + 1 : end;
		if (!sp2) {
			p = next; /* not a CRI log line */
			continue;
		}
		bool err = strncmp(sp1 + 1, "stderr", 6) == 0;
		bool is_partial = sp2[1] == 'P';
		char *joined = ad_asprintf("%s%.*s", partial[err] ? partial[err] : "",
					   (int)(end - text), text);
		free(partial[err]);
		partial[err] = NULL;
		if (is_partial) {
			partial[err] = joined;
		} else {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				lines = ad_realloc(lines, cap * sizeof(*lines));
			}
			lines[n++] = (log_line){
			    .time = p, .time_len = (size_t)(sp1 - p), .err = err, .text = joined};
		}
		p = next;
	}
	free(partial[0]);
	free(partial[1]);
	*ret = lines;
	return n;
}

/* ---- time stamps for --since and the log lines ---- */

static bool take_digits(const char **p, const char *end, int n, int *ret)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (*p >= end || (*p)[0] < '0' || (*p)[0] > '9')
			return false;
		v = v * 10 + (*(*p)++ - '0');
	}
	*ret = v;
	return true;
}

/* RFC 3339 ("2006-01-02T15:04:05.999999999Z07:00", what CRI log lines start
 * with); without a zone the local time, and "2006-01-02" alone its local
 * midnight, as docker's and crictl's --since read them. */
static bool parse_rfc3339(const char *s, size_t len, int64_t *ret_ns)
{
	const char *p = s, *end = s + len;
	struct tm tm = {.tm_isdst = -1};
	int y, mo, d, h = 0, mi = 0, sec = 0, zone_s = 0;
	int64_t frac = 0;
	bool local = true;
	if (!take_digits(&p, end, 4, &y) || p >= end || *p++ != '-' ||
	    !take_digits(&p, end, 2, &mo) || p >= end || *p++ != '-' ||
	    !take_digits(&p, end, 2, &d))
		return false;
	if (p < end) {
		if (*p != 'T' && *p != 't' && *p != ' ')
			return false;
		p++;
		if (!take_digits(&p, end, 2, &h) || p >= end || *p++ != ':' ||
		    !take_digits(&p, end, 2, &mi) || p >= end || *p++ != ':' ||
		    !take_digits(&p, end, 2, &sec))
			return false;
		if (p < end && *p == '.') {
			p++;
			int n = 0;
			for (; p < end && *p >= '0' && *p <= '9'; p++, n++)
				if (n < 9)
					frac = frac * 10 + (*p - '0');
			if (!n)
				return false;
			for (; n < 9; n++)
				frac *= 10;
		}
		if (p < end && (*p == 'Z' || *p == 'z')) {
			p++;
			local = false;
		} else if (p < end && (*p == '+' || *p == '-')) {
			int sign = *p++ == '-' ? -1 : 1, zh, zm;
			if (!take_digits(&p, end, 2, &zh) || p >= end || *p++ != ':' ||
			    !take_digits(&p, end, 2, &zm) || zh > 23 || zm > 59)
				return false;
			zone_s = sign * (zh * 3600 + zm * 60);
			local = false;
		}
	}
	if (p != end || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return false;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	time_t t = local ? mktime(&tm) : timegm(&tm) - zone_s;
	*ret_ns = (int64_t)t * 1000000000 + frac;
	return true;
}

/* A Go duration ("1h30m", "90s", "1.5h", "300ms"), as kubectl's and crictl's
 * --since take it; negative ones are refused. */
static bool parse_duration(const char *s, int64_t *ret_ns)
{
	static const struct {
		const char *name;
		double ns;
	} units[] = {{"ns", 1},	     {"us", 1e3},	  {"\u00b5s", 1e3}, {"\u03bcs", 1e3},
		     {"ms", 1e6},    {"s", 1e9},	  {"m", 60e9},	    {"h", 3600e9}};
	if (strcmp(s, "0") == 0) {
		*ret_ns = 0;
		return true;
	}
	double total = 0;
	const char *p = *s == '+' ? s + 1 : s;
	if (!*p)
		return false;
	while (*p) {
		char *end;
		if (!((*p >= '0' && *p <= '9') || *p == '.'))
			return false;
		errno = 0;
		double v = strtod(p, &end);
		if (errno || end == p)
			return false;
		size_t best = 0, best_len = 0;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t n = strlen(units[i].name);
			if (strncmp(end, units[i].name, n) == 0 && n > best_len)
				best = i, best_len = n;
		}
		if (!best_len)
			return false;
		total += v * units[best].ns;
		p = end + best_len;
	}
	if (total > 9.2e18)
		return false;
	*ret_ns = (int64_t)total;
	return true;
}

/* --since: a duration back from now, an RFC 3339 time or a Unix time
 * (seconds[.nanoseconds]), tried in that order as crictl does. */
static int parse_since(const char *s, int64_t *ret_ns)
{
	int64_t v;
	if (parse_duration(s, &v)) {
		*ret_ns = ad_now_ns() - v;
		return 0;
	}
	if (parse_rfc3339(s, strlen(s), ret_ns))
		return 0;
	const char *p = s;
	int64_t secs = 0, frac = 0;
	int n_int = 0, n_frac = 0;
	for (; *p >= '0' && *p <= '9' && n_int < 12; p++, n_int++)
		secs = secs * 10 + (*p - '0');
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9' && n_frac < 9; p++, n_frac++)
			frac = frac * 10 + (*p - '0');
	if (n_int && !*p && (s[n_int] != '.' || n_frac)) {
		for (; n_frac < 9; n_frac++)
			frac *= 10;
		*ret_ns = secs * 1000000000 + frac;
		return 0;
	}
	return ctl_usage_error(&ctl_cmd_logs,
			       "invalid --since '%s' (a duration like 10s, 5m or 1h30m, an RFC 3339 "
			       "time like 2024-01-02T15:04:05Z, or Unix seconds)",
			       s);
}

typedef struct log_opts {
	long tail; /* the last N lines of what is there at first; -1: all */
	bool stamps;
	bool since_set;
	int64_t since_ns;
} log_opts;

/* Prints the log lines in data: of the first read only the last `tail`
 * (then, as kubelet does, --since among those), afterwards every line. */
static void print_log(char *data, const log_opts *o, bool first_read)
{
	log_line *lines = NULL;
	size_t n = parse_log(data, &lines);
	long tail = first_read ? o->tail : -1;
	size_t first = tail >= 0 && (size_t)tail < n ? n - (size_t)tail : 0;
	for (size_t i = 0; i < n; i++) {
		int64_t at;
		bool shown = i >= first;
		if (shown && o->since_set && parse_rfc3339(lines[i].time, lines[i].time_len, &at))
			shown = at >= o->since_ns;
		if (shown) {
			FILE *out = lines[i].err ? stderr : stdout;
			if (o->stamps)
				fprintf(out, "%.*s ", (int)lines[i].time_len, lines[i].time);
			fprintf(out, "%s\n", lines[i].text);
		}
		free(lines[i].text);
	}
	free(lines);
	fflush(stdout);
	fflush(stderr);
}

/* How much of data is whole lines, up to a full (F) one: a partial (P)
 * line waits for the rest of its text before it is printed. */
static size_t log_complete(const char *data, size_t len)
{
	size_t done = 0;
	for (size_t p = 0; p < len;) {
		const char *nl = memchr(data + p, '\n', len - p);
		if (!nl)
			break;
		size_t end = (size_t)(nl - data) + 1;
		const char *sp1 = memchr(data + p, ' ', end - p);
		const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(data + end - sp1 - 1)) : NULL;
		if (!sp2 || sp2[1] != 'P')
			done = end;
		p = end;
	}
	return done;
}

typedef struct log_follow {
	int fd; /* -1 until the file exists */
	struct stat st; /* of the file fd reads */
	char *buf;
	size_t len, cap;
	bool printed; /* the first read (where --tail applies) is done */
} log_follow;

static volatile sig_atomic_t logs_interrupted;

static void on_logs_interrupt(int sig)
{
	(void)sig;
	logs_interrupted = 1;
}

/* Reads what fd has and prints the whole lines of it. */
static void log_drain(log_follow *f, const log_opts *o)
{
	for (;;) {
		if (f->cap - f->len < 65536) {
			f->cap = f->cap * 2 + 65536;
			f->buf = ad_realloc(f->buf, f->cap);
		}
		ssize_t k = read(f->fd, f->buf + f->len, f->cap - f->len - 1);
		if (k <= 0)
			break;
		f->len += (size_t)k;
	}
	size_t done = log_complete(f->buf, f->len);
	bool first = !f->printed;
	f->printed = true;
	if (!done)
		return;
	char saved = f->buf[done];
	f->buf[done] = '\0';
	print_log(f->buf, o, first);
	f->buf[done] = saved;
	memmove(f->buf, f->buf + done, f->len - done);
	f->len -= done;
}

/* Opens the log once it exists; false on an error other than its absence. */
static bool log_open(log_follow *f, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &f->st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		if (e == ENOENT)
			return true;
		ctl_warnx("%s: %s", path, strerror(e));
		return false;
	}
	f->fd = fd;
	return true;
}

/* logs -f: prints the log, then what is appended to it, re-opening the path
 * when it is rotated (another inode) and starting over when it is truncated,
 * until the container exits or SIGINT. A log that is not there yet (the
 * container was just created, or its log was rotated away) is waited for. */
static int follow_log(ctl_ctx *ctx, const char *id, const char *path, const log_opts *o)
{
	log_follow f = {.fd = -1};
	struct sigaction sa = {.sa_handler = on_logs_interrupt};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	int r = 0;
	bool exited = false;
	int64_t next_check = 0;
	while (!logs_interrupted) {
		int64_t now = ad_monotonic_ns();
		if (now >= next_check) {
			/* Checked before the last read, so nothing written before
			 * the exit is missed. */
			Runtime__V1__ContainerStatusResponse *st = NULL;
			r = ctl_container_status(ctx, id, false, &st);
			if (r)
				break;
			exited = !st->status || st->status->state ==
						    RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
			protobuf_c_message_free_unpacked(&st->base, NULL);
			next_check = now + 1000000000;
		}
		if (f.fd < 0 && !log_open(&f, path)) {
			r = EX_NOINPUT;
			break;
		}
		if (f.fd >= 0) {
			log_drain(&f, o);
			struct stat cur;
			if (stat(path, &cur) == 0 &&
			    (cur.st_ino != f.st.st_ino || cur.st_dev != f.st.st_dev)) {
				int fd = open(path, O_RDONLY | O_CLOEXEC);
				if (fd >= 0) {
					log_drain(&f, o); /* the old file's last lines */
					close(f.fd);
					f.fd = fd;
					f.st = cur;
					f.len = 0;
					log_drain(&f, o);
				}
			} else if (stat(path, &cur) == 0 && cur.st_size < lseek(f.fd, 0, SEEK_CUR)) {
				lseek(f.fd, 0, SEEK_SET);
				f.len = 0;
			}
		}
		if (exited)
			break;
		nanosleep(&(struct timespec){.tv_nsec = 200000000}, NULL);
	}
	if (!r && exited && f.fd < 0) {
		ctl_warnx("%s: no such file: container %s exited without a log", path, id);
		r = EX_NOINPUT;
	}
	if (f.fd >= 0)
		close(f.fd);
	free(f.buf);
	return r;
}

static int run_logs(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"tail", required_argument, NULL, 'n'},
	    {"since", required_argument, NULL, 'S'},
	    {"timestamps", no_argument, NULL, 't'},
	    {"follow", no_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	log_opts o = {.tail = -1};
	bool follow = false;
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_logs, argc, argv, ":fth", opts, &r)) != -1) {
		switch (c) {
		case 'f':
			follow = true;
			break;
		case 'n':
			r = ctl_parse_count(&ctl_cmd_logs, "--tail", optarg, &o.tail);
			break;
		case 'S':
			r = parse_since(optarg, &o.since_ns);
			o.since_set = true;
			break;
		case 't':
			o.stamps = true;
			break;
		}
	}
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind != 1)
		return ctl_usage_error(&ctl_cmd_logs, "one CONTAINER is required");
	_cleanup_free_ char *id = NULL;
	r = ctl_resolve_id(ctx, false, argv[optind], &id);
	if (r)
		return r;
	Runtime__V1__ContainerStatusResponse *st = NULL;
	r = ctl_container_status(ctx, id, false, &st);
	if (r)
		return r;
	_cleanup_free_ char *path =
	    ad_strdup(st->status && st->status->log_path ? st->status->log_path : "");
	protobuf_c_message_free_unpacked(&st->base, NULL);
	if (!path[0]) {
		ctl_warnx("container %s has no log file (its pod has no log_directory or the "
			  "container no log_path)",
			  argv[optind]);
		return 1;
	}
	if (follow)
		return follow_log(ctx, id, path, &o);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	_cleanup_error_ ad_error *err = NULL;
	if (ad_read_file(AT_FDCWD, path, LOG_MAX_SIZE, &data, &len, &err) < 0) {
		ctl_warnx("%s: %s", path, err->message);
		return EX_NOINPUT;
	}
	print_log(data, &o, true);
	return 0;
}

/* ---- exec -------------------------------------------------------------------------------- */

static int run_exec(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"timeout", required_argument, NULL, 'T'},
	    {"stdin", no_argument, NULL, 'i'},
	    {"tty", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	long timeout = 0;
	bool in = false, tty = false;
	int c, r = 0;
	/* "+": options end at CONTAINER; what follows is the command's. */
	while (!r && (c = ctl_getopt(&ctl_cmd_exec, argc, argv, "+:ith", opts, &r)) != -1) {
		if (c == 'T')
			r = ctl_parse_seconds(&ctl_cmd_exec, optarg, &timeout);
		else if (c == 'i')
			in = true;
		else
			tty = true;
	}
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind < 2)
		return ctl_usage_error(&ctl_cmd_exec, "CONTAINER and CMD are required");
	if ((in || tty) && timeout)
		return ctl_usage_error(&ctl_cmd_exec, "--timeout is for exec without -i or -t");
	_cleanup_free_ char *id = NULL;
	r = ctl_resolve_id(ctx, false, argv[optind], &id);
	if (r)
		return r;
	if (in || tty)
		return ctl_exec_stream(ctx, id, argv + optind + 1, (size_t)(argc - optind - 1), in,
				       tty);
	Runtime__V1__ExecSyncRequest req = RUNTIME__V1__EXEC_SYNC_REQUEST__INIT;
	req.container_id = id;
	req.cmd = argv + optind + 1;
	req.n_cmd = (size_t)(argc - optind - 1);
	req.timeout = timeout;
	/* The command may run as long as --timeout lets it (or forever). */
	if (!ctx->timeout_given)
		ctx->timeout_ms = timeout ? (unsigned)(timeout + 30) * 1000 : 0;
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_EXEC, &req.base, &runtime__v1__exec_sync_response__descriptor, &m);
	if (r)
		return r;
	const Runtime__V1__ExecSyncResponse *resp = (void *)m;
	if (resp->stdout.len)
		fwrite(resp->stdout.data, 1, resp->stdout.len, stdout);
	if (resp->stderr.len)
		fwrite(resp->stderr.data, 1, resp->stderr.len, stderr);
	r = resp->exit_code < 0 || resp->exit_code > 255 ? 255 : resp->exit_code;
	protobuf_c_message_free_unpacked(m, NULL);
	return r;
}

/* ---- run IMAGE: podman's one-liner on pods -------------------------------------------- */

typedef struct run_opts {
	bool detach, rm, replace;
	bool userns; /* --userns auto: the pod in a user namespace agentd maps */
	const char *name, *entrypoint;
	json_t *ports, *mounts, *envs; /* CRI JSON, for ctl_pb_from_json */
} run_opts;

/* -p [IP:]HOST:CTR[/tcp|udp|sctp] (podman's syntax, without ranges). */
static int parse_port(const char *arg, json_t *ports)
{
	_cleanup_free_ char *s = ad_strdup(arg);
	const char *proto = "TCP";
	char *slash = strchr(s, '/');
	if (slash) {
		*slash = '\0';
		if (strcasecmp(slash + 1, "tcp") == 0)
			proto = "TCP";
		else if (strcasecmp(slash + 1, "udp") == 0)
			proto = "UDP";
		else if (strcasecmp(slash + 1, "sctp") == 0)
			proto = "SCTP";
		else
			return ctl_usage_error(&ctl_cmd_run, "-p %s: unknown protocol '%s' (tcp, udp "
					       "or sctp)", arg, slash + 1);
	}
	char *parts[3] = {0};
	size_t n = 0;
	for (char *p = s, *colon; n < 3; p = colon + 1) {
		/* An IPv6 host address is in brackets: [::1]:8080:80. */
		char *from = p[0] == '[' && strchr(p, ']') ? strchr(p, ']') : p;
		parts[n++] = p;
		if (!(colon = strchr(from, ':')))
			break;
		*colon = '\0';
	}
	if (n < 2 || (n == 3 && strchr(parts[2], ':')))
		return ctl_usage_error(&ctl_cmd_run, "-p %s: want [IP:]HOST_PORT:CONTAINER_PORT", arg);
	long port[2];
	for (size_t i = 0; i < 2; i++) {
		const char *v = parts[n - 2 + i];
		char *end;
		port[i] = strtol(v, &end, 10);
		if (!*v || *end || port[i] < 1 || port[i] > 65535)
			return ctl_usage_error(&ctl_cmd_run, "-p %s: '%s' is not a port (1-65535)", arg,
					       v);
	}
	json_t *m = json_pack("{s:I, s:I, s:s}", "host_port", (json_int_t)port[0], "container_port",
			      (json_int_t)port[1], "protocol", proto);
	if (n == 3) {
		char *ip = parts[0];
		size_t l = strlen(ip);
		if (ip[0] == '[' && l > 2 && ip[l - 1] == ']') {
			ip[l - 1] = '\0';
			ip++;
		}
		json_object_set_new(m, "host_ip", json_string(ip));
	}
	json_array_append_new(ports, m);
	return 0;
}

/* -v SRC:DST[:ro|rw], SRC an absolute host path (podman's named volumes are
 * not agentd's). */
static int parse_volume(const char *arg, json_t *mounts)
{
	_cleanup_free_ char *s = ad_strdup(arg);
	char *dst = strchr(s, ':');
	char *mode = dst ? strchr(dst + 1, ':') : NULL;
	if (dst)
		*dst++ = '\0';
	if (mode)
		*mode++ = '\0';
	if (!dst || !*s || !*dst)
		return ctl_usage_error(&ctl_cmd_run, "-v %s: want SRC:DST[:ro]", arg);
	if (s[0] != '/' || dst[0] != '/')
		return ctl_usage_error(&ctl_cmd_run, "-v %s: SRC and DST must be absolute paths", arg);
	if (mode && strcmp(mode, "ro") != 0 && strcmp(mode, "rw") != 0)
		return ctl_usage_error(&ctl_cmd_run, "-v %s: unknown mode '%s' (ro or rw)", arg, mode);
	struct stat st;
	if (stat(s, &st) < 0)
		return ctl_usage_error(&ctl_cmd_run, "-v %s: %s: %s", arg, s, strerror(errno));
	json_array_append_new(mounts, json_pack("{s:s, s:s, s:b}", "host_path", s, "container_path",
						dst, "readonly", mode && strcmp(mode, "ro") == 0));
	return 0;
}

static int parse_env(const char *arg, json_t *envs)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg)
		return ctl_usage_error(&ctl_cmd_run, "-e %s: want KEY=VALUE", arg);
	_cleanup_free_ char *key = ad_strndup(arg, (size_t)(eq - arg));
	json_array_append_new(envs, json_pack("{s:s, s:s}", "key", key, "value", eq + 1));
	return 0;
}

static int parse_run_options(int argc, char **argv, run_opts *o)
{
	static const struct option opts[] = {
	    {"detach", no_argument, NULL, 'd'},
	    {"name", required_argument, NULL, 'n'},
	    {"publish", required_argument, NULL, 'p'},
	    {"volume", required_argument, NULL, 'v'},
	    {"env", required_argument, NULL, 'e'},
	    {"rm", no_argument, NULL, 'R'},
	    {"replace", no_argument, NULL, 'P'},
	    {"entrypoint", required_argument, NULL, 'E'},
	    {"userns", required_argument, NULL, 'U'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c, r = 0;
	/* "+": CMD's own options are CMD's. */
	while (!r && (c = ctl_getopt(&ctl_cmd_run, argc, argv, "+:dn:p:v:e:h", opts, &r)) != -1) {
		switch (c) {
		case 'd':
			o->detach = true;
			break;
		case 'n':
			o->name = optarg;
			break;
		case 'p':
			r = parse_port(optarg, o->ports);
			break;
		case 'v':
			r = parse_volume(optarg, o->mounts);
			break;
		case 'e':
			r = parse_env(optarg, o->envs);
			break;
		case 'R':
			o->rm = true;
			break;
		case 'P':
			o->replace = true;
			break;
		case 'E':
			o->entrypoint = optarg;
			break;
		case 'U':
			/* podman's names: auto (a block of ids of its own), host */
			if (strcmp(optarg, "auto") && strcmp(optarg, "host"))
				r = ctl_usage_error(&ctl_cmd_run, "--userns %s: auto or host", optarg);
			o->userns = !strcmp(optarg, "auto");
			break;
		}
	}
	if (!r && o->replace && !o->name)
		r = ctl_usage_error(&ctl_cmd_run, "--replace needs --name");
	if (!r && o->detach && o->rm)
		r = ctl_usage_error(&ctl_cmd_run, "--rm is for an attached run, not -d");
	if (!r && optind >= argc)
		r = ctl_usage_error(&ctl_cmd_run, "IMAGE is required");
	return r;
}

/* Where the pod's logs go: under agentd's root, which agentd makes. */
static int run_log_dir(ctl_ctx *ctx, const char *pod_name, char **ret)
{
	Agent__V1__InfoRequest req = AGENT__V1__INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, "/agent.v1.AgentService/Info", &req.base,
			  &agent__v1__info_response__descriptor, &m);
	if (r)
		return r;
	*ret = ad_asprintf("%s/run-logs/%s", ((Agent__V1__InfoResponse *)m)->root_dir, pod_name);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

/* Stops and removes the pods `run --name name` made (their label says so). */
static int remove_run_pods(ctl_ctx *ctx, const char *name)
{
	Runtime__V1__ListPodSandboxRequest req = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
	Runtime__V1__PodSandboxFilter filter = RUNTIME__V1__POD_SANDBOX_FILTER__INIT;
	Runtime__V1__PodSandboxFilter__LabelSelectorEntry label =
	    RUNTIME__V1__POD_SANDBOX_FILTER__LABEL_SELECTOR_ENTRY__INIT;
	Runtime__V1__PodSandboxFilter__LabelSelectorEntry *labels[] = {&label};
	label.key = (char *)"io.agentd.run";
	label.value = (char *)name;
	filter.label_selector = labels;
	filter.n_label_selector = 1;
	req.filter = &filter;
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, SVC "ListPodSandbox", &req.base,
			  &runtime__v1__list_pod_sandbox_response__descriptor, &m);
	if (r)
		return r;
	const Runtime__V1__ListPodSandboxResponse *l = (const Runtime__V1__ListPodSandboxResponse *)m;
	ctl_long_call(ctx);
	for (size_t i = 0; !r && i < l->n_items; i++) {
		Runtime__V1__StopPodSandboxRequest stop = RUNTIME__V1__STOP_POD_SANDBOX_REQUEST__INIT;
		Runtime__V1__RemovePodSandboxRequest rm = RUNTIME__V1__REMOVE_POD_SANDBOX_REQUEST__INIT;
		stop.pod_sandbox_id = rm.pod_sandbox_id = l->items[i]->id;
		r = ctl_unary(ctx, SVC "StopPodSandbox", &stop.base,
			      &runtime__v1__stop_pod_sandbox_response__descriptor, NULL);
		if (!r)
			r = ctl_unary(ctx, SVC "RemovePodSandbox", &rm.base,
				      &runtime__v1__remove_pod_sandbox_response__descriptor, NULL);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	return r;
}

/* Waits for the container's end while printing its log; its exit code.
 * Interrupted (SIGINT, SIGTERM): with `stop`, the container is stopped
 * (SIGTERM, SIGKILL after RUN_STOP_TIMEOUT_S) and its code returned; else it
 * goes on. */
#define RUN_STOP_TIMEOUT_S 10
static int run_attached(ctl_ctx *ctx, const char *id, bool stop)
{
	Runtime__V1__ContainerStatusResponse *st = NULL;
	int r = ctl_container_status(ctx, id, false, &st);
	if (r)
		return r;
	_cleanup_free_ char *path = ad_strdup(st->status->log_path);
	protobuf_c_message_free_unpacked(&st->base, NULL);
	log_opts lo = {.tail = -1};
	if ((r = follow_log(ctx, id, path, &lo)))
		return r;
	if ((r = ctl_container_status(ctx, id, false, &st)))
		return r;
	bool exited = st->status->state == RUNTIME__V1__CONTAINER_STATE__CONTAINER_EXITED;
	int code = st->status->exit_code;
	protobuf_c_message_free_unpacked(&st->base, NULL);
	if (!exited && stop) {
		Runtime__V1__StopContainerRequest req = RUNTIME__V1__STOP_CONTAINER_REQUEST__INIT;
		req.container_id = (char *)id;
		req.timeout = RUN_STOP_TIMEOUT_S;
		ctl_long_call(ctx);
		if ((r = ctl_unary(ctx, PATH_STOP, &req.base,
				   &runtime__v1__stop_container_response__descriptor, NULL)) ||
		    (r = ctl_container_status(ctx, id, false, &st)))
			return r;
		exited = true;
		code = st->status->exit_code;
		protobuf_c_message_free_unpacked(&st->base, NULL);
	}
	if (!exited) {
		ctl_warnx("interrupted: container %s goes on running (agentctl stop %.13s)", id, id);
		return EX_TEMPFAIL;
	}
	return code & 0xff;
}

static int run_image(ctl_ctx *ctx, int argc, char **argv)
{
	run_opts o = {.ports = json_array(), .mounts = json_array(), .envs = json_array()};
	_cleanup_free_ char *image_id = NULL, *pod_id = NULL, *id = NULL, *log_dir = NULL;
	_cleanup_free_ char *generated = NULL;
	ProtobufCMessage *cfg = NULL, *pcfg = NULL;
	json_t *pod = NULL, *ctr = NULL;
	int r = parse_run_options(argc, argv, &o);
	if (r)
		goto out;
	const char *image = argv[optind];
	/* Pulled when agentd does not have it; the container names it as given
	 * (generate systemd makes units from that). */
	if ((r = ctl_image_id(ctx, image, &image_id)))
		goto out;
	if (!image_id && (r = ctl_pull(ctx, image, NULL, NULL, &image_id)))
		goto out;
	unsigned char rnd[4] = {0};
	FILE *ur = fopen("/dev/urandom", "rb");
	if (!ur || fread(rnd, 1, sizeof(rnd), ur) != sizeof(rnd)) {
		for (size_t i = 0; i < sizeof(rnd); i++)
			rnd[i] = (unsigned char)(ad_monotonic_ns() >> (8 * i));
	}
	if (ur)
		fclose(ur);
	generated = ad_asprintf("run-%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
	const char *name = o.name ? o.name : generated;
	if (o.replace && (r = remove_run_pods(ctx, name)))
		goto out;
	if ((r = run_log_dir(ctx, name, &log_dir)))
		goto out;
	pod = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:O, s:{s:s}}", "metadata", "name", name,
			"namespace", "default", "uid", generated, "hostname", name, "log_directory",
			log_dir, "port_mappings", o.ports, "labels", "io.agentd.run", name);
	json_t *args = json_array();
	for (int i = optind + 1; i < argc; i++)
		json_array_append_new(args, json_string(argv[i]));
	ctr = json_pack("{s:{s:s}, s:{s:s}, s:o, s:O, s:O, s:s, s:{s:s}}", "metadata", "name", name,
			"image", "image", image, "args", args, "envs", o.envs, "mounts", o.mounts,
			"log_path", "container.log", "labels", "io.agentd.run", name);
	if (o.entrypoint)
		json_object_set_new(ctr, "command", json_pack("[s]", o.entrypoint));
	if (o.userns)
		json_object_set_new(pod, "linux",
				    json_pack("{s:{s:{s:{s:s}}}}", "security_context",
					      "namespace_options", "userns_options", "mode", "POD"));
	pcfg = ctl_pb_from_json(&runtime__v1__pod_sandbox_config__descriptor, pod, "run");
	cfg = ctl_pb_from_json(&runtime__v1__container_config__descriptor, ctr, "run");
	if (!pcfg || !cfg) {
		r = EX_SOFTWARE;
		goto out;
	}
	if ((r = create_container_in(ctx, NULL, cfg, pcfg, &pod_id, &id))) {
		if (pod_id) { /* nothing half made stays */
			Runtime__V1__RemovePodSandboxRequest rm =
			    RUNTIME__V1__REMOVE_POD_SANDBOX_REQUEST__INIT;
			rm.pod_sandbox_id = pod_id;
			ctl_unary(ctx, SVC "RemovePodSandbox", &rm.base,
				  &runtime__v1__remove_pod_sandbox_response__descriptor, NULL);
		}
		goto out;
	}
	if ((r = start_container(ctx, id)))
		goto out;
	if (o.detach) {
		printf("%s\n", id);
	} else {
		r = run_attached(ctx, id, o.rm);
		/* --rm: the pod goes with the container's end, or with agentctl's
		 * (SIGTERM from a service manager, ^C). */
		int rr = o.rm ? remove_run_pods(ctx, name) : 0;
		if (rr && r == 0)
			r = rr;
	}
out:
	json_decref(pod);
	json_decref(ctr);
	json_decref(o.ports);
	json_decref(o.mounts);
	json_decref(o.envs);
	if (cfg)
		protobuf_c_message_free_unpacked(cfg, NULL);
	if (pcfg)
		protobuf_c_message_free_unpacked(pcfg, NULL);
	return r;
}

const ctl_command ctl_cmd_create = {
    .name = "create",
    .synopsis = "POD CONTAINER_CONFIG POD_CONFIG",
    .summary = "create a container in a pod (configs in JSON or YAML); prints its id",
    .run = run_create,
};

const ctl_command ctl_cmd_start = {
    .name = "start",
    .synopsis = "CONTAINER...",
    .summary = "start created containers",
    .run = run_start,
};

const ctl_command ctl_cmd_run = {
    .name = "run",
    .synopsis = "[-d|--rm] [--name N [--replace]] [-p [IP:]HOST:CTR[/PROTO]]... "
		"[-v SRC:DST[:ro]]... [-e K=V]... [--entrypoint PATH] [--userns auto|host] "
		"IMAGE [CMD...] | "
		"CONTAINER_CONFIG POD_CONFIG",
    .summary = "run IMAGE in a new pod (pulled if needed; ports mapped as the pod's), "
	       "streaming its log and exiting with its code (-d: print its id); or, given two "
	       "config files, crictl's run",
    .run = run_run,
};

const ctl_command ctl_cmd_stop = {
    .name = "stop",
    .synopsis = "[-t SECONDS] CONTAINER...",
    .summary = "stop containers (SIGKILL after the grace period)",
    .run = run_stop,
};

const ctl_command ctl_cmd_rm = {
    .name = "rm",
    .synopsis = "CONTAINER...",
    .summary = "remove containers",
    .run = run_rm,
};

const ctl_command ctl_cmd_ps = {
    .name = "ps",
    .synopsis = "[-aql] [-o table|json|yaml] [-n LAST] [-p POD] [--id ID] [--name RE] "
		"[--image IMAGE] [-s STATE] [--label K=V] [--no-trunc]",
    .summary = "list containers, newest first; running ones unless -a, -s, -n or -l",
    .run = run_ps,
};

const ctl_command ctl_cmd_inspect = {
    .name = "inspect",
    .synopsis = "[-o json|yaml] CONTAINER...",
    .summary = "a container's status and info",
    .run = run_inspect,
};

const ctl_command ctl_cmd_logs = {
    .name = "logs",
    .synopsis = "[-ft] [--tail N] [--since TIME|DURATION] CONTAINER",
    .summary = "print a container's log (-f: follow it until the container exits; "
	       "-t: with time stamps)",
    .run = run_logs,
};

const ctl_command ctl_cmd_exec = {
    .name = "exec",
    .synopsis = "[-i] [-t] [--timeout SECONDS] CONTAINER CMD [ARG...]",
    .summary = "run a command in a container; exits with its status (-i: with stdin, "
	       "-t: in a tty; both: interactive, as crictl exec -it)",
    .run = run_exec,
};
