/* agentctl runp, pods, stopp, rmp, inspectp: the pod half of the CRI
 * runtime.v1.RuntimeService, plus what the pod and container commands share:
 * protobuf <-> JSON through the message descriptors (so crictl's config files
 * map onto every field of the generated structs without per-field code) and
 * id prefixes. */
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <string.h>

#include "cri/api.pb-c.h"
#include "ctl.h"

#define PATH_RUNP "/runtime.v1.RuntimeService/RunPodSandbox"
#define PATH_STOPP "/runtime.v1.RuntimeService/StopPodSandbox"
#define PATH_RMP "/runtime.v1.RuntimeService/RemovePodSandbox"
#define PATH_PODSTATUS "/runtime.v1.RuntimeService/PodSandboxStatus"
#define PATH_LISTP "/runtime.v1.RuntimeService/ListPodSandbox"
/* Pod and container set-up (CNI, image mounts, stop grace periods) takes
 * longer than a query; without -t these calls get this much. */
#define LONG_CALL_MS 120000

/* ---- JSON -> protobuf ---------------------------------------------------------- */

typedef struct parse_ctx {
	const char *file;
	/* From YAML: where each value is; and an unquoted 8080 or true for a
	 * string field is its text, as crictl's YAML decoder takes it. */
	json_t *yaml_marks;
} parse_ctx;

static int field_error(parse_ctx *pc, json_t *v, const char *path, const char *what)
{
	int line, column;
	if (ctl_config_mark(pc->yaml_marks, v, &line, &column))
		ctl_warnx("%s:%d:%d: field '%s': %s", pc->file, line, column, path, what);
	else
		ctl_warnx("%s: field '%s': %s", pc->file, path, what);
	return -1;
}

static ProtobufCMessage *msg_from_json(parse_ctx *pc, const ProtobufCMessageDescriptor *d,
				       json_t *obj, const char *path);

static int set_value(parse_ctx *pc, const ProtobufCFieldDescriptor *f, json_t *v, void *p,
		     const char *path)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: {
		if (!json_is_integer(v))
			return field_error(pc, v, path, "expected an integer");
		json_int_t n = json_integer_value(v);
		bool is_unsigned =
		    f->type == PROTOBUF_C_TYPE_UINT32 || f->type == PROTOBUF_C_TYPE_FIXED32 ||
		    f->type == PROTOBUF_C_TYPE_UINT64 || f->type == PROTOBUF_C_TYPE_FIXED64;
		if (is_unsigned && n < 0)
			return field_error(pc, v, path, "expected a non-negative integer");
		if (pbjson_elem_size(f->type) == 4) {
			if (is_unsigned ? n > UINT32_MAX : (n < INT32_MIN || n > INT32_MAX))
				return field_error(pc, v, path, "integer out of range");
			if (is_unsigned)
				*(uint32_t *)p = (uint32_t)n;
			else
				*(int32_t *)p = (int32_t)n;
		} else {
			*(int64_t *)p = n;
		}
		return 0;
	}
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE:
		if (!json_is_number(v))
			return field_error(pc, v, path, "expected a number");
		if (f->type == PROTOBUF_C_TYPE_FLOAT)
			*(float *)p = (float)json_number_value(v);
		else
			*(double *)p = json_number_value(v);
		return 0;
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(v))
			return field_error(pc, v, path, "expected true or false");
		*(protobuf_c_boolean *)p = json_is_true(v);
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		if (json_is_integer(v)) {
			*(int *)p = (int)json_integer_value(v);
			return 0;
		}
		if (!json_is_string(v))
			return field_error(pc, v, path, "expected a name or a number");
		/* crictl's files write protocols as "tcp" as well as "TCP". */
		_cleanup_free_ char *up = ad_strdup(json_string_value(v));
		for (char *c = up; *c; c++)
			*c = (char)toupper((unsigned char)*c);
		const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, up);
		if (!ev) {
			_cleanup_free_ char *msg =
			    ad_asprintf("unknown value '%s'", json_string_value(v));
			return field_error(pc, v, path, msg);
		}
		*(int *)p = ev->value;
		return 0;
	}
	case PROTOBUF_C_TYPE_STRING:
		if (pc->yaml_marks && (json_is_number(v) || json_is_boolean(v))) {
			/* The text of what YAML resolved: jansson prints scalars bare. */
			char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
			*(char **)p = text ? text : ad_strdup("");
			return 0;
		}
		if (!json_is_string(v))
			return field_error(pc, v, path, "expected a string");
		*(char **)p = ad_strdup(json_string_value(v));
		return 0;
	case PROTOBUF_C_TYPE_BYTES: {
		if (!json_is_string(v))
			return field_error(pc, v, path, "expected a string");
		ProtobufCBinaryData *b = p;
		b->len = json_string_length(v);
		b->data = ad_malloc0(b->len + 1);
		memcpy(b->data, json_string_value(v), b->len);
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		if (!json_is_object(v))
			return field_error(pc, v, path, "expected an object");
		ProtobufCMessage *m = msg_from_json(pc, f->descriptor, v, path);
		if (!m)
			return -1;
		*(ProtobufCMessage **)p = m;
		return 0;
	}
	}
	return field_error(pc, v, path, "unsupported field type");
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
						  const char *key)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
	for (unsigned i = 0; !f && i < d->n_fields; i++) {
		_cleanup_free_ char *camel = pbjson_camel_name(d->fields[i].name);
		if (strcmp(camel, key) == 0)
			f = &d->fields[i];
	}
	return f;
}

static int set_repeated(parse_ctx *pc, const ProtobufCFieldDescriptor *f, json_t *v, char *base,
			const char *path)
{
	bool map = f->type == PROTOBUF_C_TYPE_MESSAGE && pbjson_is_map_entry(f->descriptor);
	if (map ? !json_is_object(v) : !json_is_array(v))
		return field_error(pc, v, path, map ? "expected an object" : "expected an array");
	size_t n = map ? json_object_size(v) : json_array_size(v);
	size_t *count = (size_t *)(base + f->quantifier_offset);
	char *arr = ad_malloc0(pbjson_elem_size(f->type) * (n ? n : 1));
	*(char **)(base + f->offset) = arr;
	*count = 0;
	if (map) {
		const char *k;
		json_t *val;
		const ProtobufCMessageDescriptor *ed = f->descriptor;
		const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
		json_object_foreach(v, k, val)
		{
			/* An error names the entry as "labels.app", not its value field. */
			_cleanup_free_ char *sub = ad_asprintf("%s.%s", path, k);
			ProtobufCMessage *m = ad_malloc0(ed->sizeof_message);
			ed->message_init(m);
			((ProtobufCMessage **)arr)[(*count)++] = m;
			json_t *key = json_string(k);
			int r = set_value(pc, kf, key, (char *)m + kf->offset, sub);
			json_decref(key);
			if (r < 0 ||
			    (!json_is_null(val) && set_value(pc, vf, val, (char *)m + vf->offset, sub) < 0))
				return -1;
		}
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *sub = ad_asprintf("%s[%zu]", path, i);
		if (set_value(pc, f, json_array_get(v, i), arr + i * pbjson_elem_size(f->type),
			      sub) < 0)
			return -1;
		(*count)++;
	}
	return 0;
}

static ProtobufCMessage *msg_from_json(parse_ctx *pc, const ProtobufCMessageDescriptor *d,
				       json_t *obj, const char *path)
{
	ProtobufCMessage *m = ad_malloc0(d->sizeof_message);
	d->message_init(m);
	char *base = (char *)m;
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		const ProtobufCFieldDescriptor *f = find_field(d, key);
		/* Unknown fields are skipped, as crictl's decoder does. */
		if (!f || json_is_null(v))
			continue;
		_cleanup_free_ char *sub = *path ? ad_asprintf("%s.%s", path, key) : ad_strdup(key);
		int r;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			r = set_repeated(pc, f, v, base, sub);
		} else {
			r = set_value(pc, f, v, base + f->offset, sub);
			if (!r && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
				*(uint32_t *)(base + f->quantifier_offset) = f->id;
			else if (!r && f->label == PROTOBUF_C_LABEL_OPTIONAL &&
				 f->type != PROTOBUF_C_TYPE_STRING &&
				 f->type != PROTOBUF_C_TYPE_MESSAGE)
				*(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
		}
		if (r < 0) {
			protobuf_c_message_free_unpacked(m, NULL);
			return NULL;
		}
	}
	return m;
}

ProtobufCMessage *ctl_pb_from_json(const ProtobufCMessageDescriptor *desc, json_t *obj,
				   const char *what)
{
	parse_ctx pc = {.file = what};
	return msg_from_json(&pc, desc, obj, "");
}

int ctl_pb_from_file(const char *file, const ProtobufCMessageDescriptor *desc,
		     ProtobufCMessage **ret)
{
	json_t *obj = NULL, *marks = NULL;
	int r = ctl_load_config(file, &obj, &marks);
	if (r)
		return r;
	parse_ctx pc = {.file = file, .yaml_marks = marks};
	*ret = msg_from_json(&pc, desc, obj, "");
	json_decref(obj);
	json_decref(marks);
	return *ret ? 0 : EX_DATAERR;
}

/* ---- shared by pods and containers -------------------------------------------- */

void ctl_long_call(ctl_ctx *ctx)
{
	if (!ctx->timeout_given)
		ctx->timeout_ms = LONG_CALL_MS;
}

void ctl_format_age(int64_t created_ns, char buf[32])
{
	int64_t s = (ad_now_ns() - created_ns) / 1000000000;
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, 32, "%" PRId64 " seconds ago", s);
	else if (s < 3600)
		snprintf(buf, 32, "%" PRId64 " minutes ago", s / 60);
	else if (s < 86400)
		snprintf(buf, 32, "%" PRId64 " hours ago", s / 3600);
	else
		snprintf(buf, 32, "%" PRId64 " days ago", s / 86400);
}

int ctl_add_label(const ctl_command *cmd, json_t *selector, const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv)
		return ctl_usage_error(cmd, "--label wants KEY=VALUE, not '%s'", kv);
	_cleanup_free_ char *k = ad_strndup(kv, (size_t)(eq - kv));
	json_object_set_new(selector, k, json_string(eq + 1));
	return 0;
}

/* Like crictl, a unique prefix names a pod or container; an id matching
 * nothing goes to agentd as typed, which reports NOT_FOUND in its own words. */
int ctl_resolve_id(ctl_ctx *ctx, bool pod, const char *arg, char **ret)
{
	ProtobufCMessage *m = NULL;
	int r;
	if (pod) {
		Runtime__V1__ListPodSandboxRequest req =
		    RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
		r = ctl_unary(ctx, PATH_LISTP, &req.base,
			      &runtime__v1__list_pod_sandbox_response__descriptor, &m);
	} else {
		Runtime__V1__ListContainersRequest req = RUNTIME__V1__LIST_CONTAINERS_REQUEST__INIT;
		r = ctl_unary(ctx, "/runtime.v1.RuntimeService/ListContainers", &req.base,
			      &runtime__v1__list_containers_response__descriptor, &m);
	}
	if (r)
		return r;
	Runtime__V1__PodSandbox **pods = NULL;
	Runtime__V1__Container **ctrs = NULL;
	size_t n;
	if (pod) {
		pods = ((Runtime__V1__ListPodSandboxResponse *)m)->items;
		n = ((Runtime__V1__ListPodSandboxResponse *)m)->n_items;
	} else {
		ctrs = ((Runtime__V1__ListContainersResponse *)m)->containers;
		n = ((Runtime__V1__ListContainersResponse *)m)->n_containers;
	}
	const char *found = NULL;
	size_t n_found = 0;
	for (size_t i = 0; i < n && *arg; i++) {
		const char *id = pod ? pods[i]->id : ctrs[i]->id;
		if (strcmp(id, arg) == 0) {
			n_found = 1;
			found = id;
			break;
		}
		if (strncmp(id, arg, strlen(arg)) == 0) {
			n_found++;
			found = id;
		}
	}
	if (n_found > 1) {
		ctl_warnx("'%s' is the prefix of more than one %s id", arg,
			  pod ? "pod" : "container");
		r = EX_DATAERR;
	} else {
		*ret = ad_strdup(n_found ? found : arg);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	return r;
}

int ctl_each_id(ctl_ctx *ctx, bool pod, int argc, char **argv, ctl_id_op *op, void *userdata)
{
	int status = 0;
	for (int i = optind; i < argc; i++) {
		_cleanup_free_ char *id = NULL;
		int r = ctl_resolve_id(ctx, pod, argv[i], &id);
		if (!r)
			r = op(ctx, id, userdata);
		if (r)
			status = r;
	}
	return status;
}

static int id_call(ctl_ctx *ctx, const char *id, void *userdata)
{
	const ctl_id_call *call = userdata;
	_cleanup_free_ ProtobufCMessage *req = ad_malloc0(call->req_desc->sizeof_message);
	protobuf_c_message_init(call->req_desc, req);
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(call->req_desc, call->id_field);
	*(const char **)((char *)req + f->offset) = id;
	ctl_long_call(ctx);
	int r = ctl_unary(ctx, call->path, req, call->resp_desc, NULL);
	if (!r)
		printf("%s%s\n", call->done_prefix, id);
	return r;
}

int ctl_run_id_command(ctl_ctx *ctx, const ctl_command *cmd, int argc, char **argv,
		       const ctl_id_call *call)
{
	bool pod = strcmp(call->id_field, "pod_sandbox_id") == 0;
	int r = ctl_ids_only(cmd, argc, argv, pod ? "POD" : "CONTAINER");
	if (r)
		return r < 0 ? 0 : r;
	return ctl_each_id(ctx, pod, argc, argv, id_call, (void *)call);
}

void ctl_print_inspected(json_t *items, bool one_asked, ctl_format fmt)
{
	if (json_array_size(items) == 1 && one_asked)
		ctl_print(json_incref(json_array_get(items, 0)), fmt);
	else if (json_array_size(items))
		ctl_print(json_incref(items), fmt);
	json_decref(items);
}

json_t *ctl_status_json(json_t *status, size_t n_info, void **info)
{
	json_t *o = json_object();
	json_object_set_new(o, "status", status ? status : json_null());
	for (size_t i = 0; i < n_info; i++) {
		/* All the InfoEntry types share the map-entry layout. */
		const Runtime__V1__PodSandboxStatusResponse__InfoEntry *e = info[i];
		if (strcmp(e->key, "status") == 0)
			continue; /* the response's own status comes first */
		json_t *v = json_loads(e->value, JSON_DECODE_ANY, NULL);
		json_object_set_new(o, e->key, v ? v : json_string(e->value));
	}
	return o;
}

int ctl_ids_and_format(const ctl_command *cmd, int argc, char **argv, const char *what,
		       ctl_format *fmt)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *shortopts = fmt ? ":o:h" : ":h";
	int r = 0;
	/* -o is the only option left to handle */
	while (!r && ctl_getopt(cmd, argc, argv, shortopts, fmt ? opts : opts + 1, &r) != -1) {
		r = ctl_parse_format(cmd, optarg, fmt);
		if (!r && *fmt == CTL_TEXT)
			r = ctl_usage_error(cmd, "%s prints json or yaml, not '%s'", cmd->name,
					    optarg);
	}
	if (r)
		return r;
	if (optind >= argc)
		return ctl_usage_error(cmd, "%s is required", what);
	return 0;
}

int ctl_ids_only(const ctl_command *cmd, int argc, char **argv, const char *what)
{
	return ctl_ids_and_format(cmd, argc, argv, what, NULL);
}

/* ---- runp ---------------------------------------------------------------------- */

int ctl_run_pod(ctl_ctx *ctx, Runtime__V1__PodSandboxConfig *cfg, char **ret_id)
{
	Runtime__V1__RunPodSandboxRequest req = RUNTIME__V1__RUN_POD_SANDBOX_REQUEST__INIT;
	req.config = cfg;
	ProtobufCMessage *m = NULL;
	ctl_long_call(ctx);
	int r = ctl_unary(ctx, PATH_RUNP, &req.base,
			  &runtime__v1__run_pod_sandbox_response__descriptor, &m);
	if (r)
		return r;
	*ret_id = ad_strdup(((Runtime__V1__RunPodSandboxResponse *)m)->pod_sandbox_id);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static int run_runp(ctl_ctx *ctx, int argc, char **argv)
{
	int r = ctl_ids_only(&ctl_cmd_runp, argc, argv, "POD_CONFIG");
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind != 1)
		return ctl_usage_error(&ctl_cmd_runp, "one POD_CONFIG only");
	ProtobufCMessage *cfg = NULL;
	r = ctl_pb_from_file(argv[optind], &runtime__v1__pod_sandbox_config__descriptor, &cfg);
	if (r)
		return r;
	_cleanup_free_ char *id = NULL;
	r = ctl_run_pod(ctx, (Runtime__V1__PodSandboxConfig *)cfg, &id);
	protobuf_c_message_free_unpacked(cfg, NULL);
	if (!r)
		printf("%s\n", id);
	return r;
}

/* ---- pods ------------------------------------------------------------------------ */

/* What pods was asked for, beyond the shared list options. */
typedef struct pods_opts {
	ctl_list_opts list;
	ctl_regex namespace_;
	const char *state; /* a PodSandboxState name */
} pods_opts;

/* 0 to go on, -1 after printing help, else the exit status of a usage error. */
static int parse_pods_options(int argc, char **argv, pods_opts *o)
{
	static const struct option opts[] = {
	    {"quiet", no_argument, NULL, 'q'},
	    {"output", required_argument, NULL, 'o'},
	    {"id", required_argument, NULL, 'i'},
	    {"name", required_argument, NULL, 'N'},
	    {"namespace", required_argument, NULL, 'S'},
	    {"state", required_argument, NULL, 's'},
	    {"label", required_argument, NULL, 'L'},
	    {"last", required_argument, NULL, 'n'},
	    {"latest", no_argument, NULL, 'l'},
	    {"no-trunc", no_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_pods, argc, argv, ":qo:s:n:lh", opts, &r)) != -1) {
		switch (c) {
		case 'S':
			r = ctl_regex_compile(&ctl_cmd_pods, "--namespace", optarg, &o->namespace_);
			break;
		case 's':
			if (strcasecmp(optarg, "ready") == 0)
				o->state = "SANDBOX_READY";
			else if (strcasecmp(optarg, "notready") == 0)
				o->state = "SANDBOX_NOTREADY";
			else
				r = ctl_usage_error(&ctl_cmd_pods,
						    "unknown state '%s' (ready or notready)",
						    optarg);
			break;
		default:
			r = ctl_list_option(&ctl_cmd_pods, c, optarg, &o->list);
		}
	}
	if (!r)
		r = ctl_operands_at_most(&ctl_cmd_pods, argc, argv, 0);
	return r;
}

static void print_pod_row(const ProtobufCMessage *item, const ctl_list_opts *o)
{
	const Runtime__V1__PodSandbox *p = (const Runtime__V1__PodSandbox *)item;
	const Runtime__V1__PodSandboxMetadata *md = p->metadata;
	char age[32];
	ctl_format_age(p->created_at, age);
	printf("%-13.*s %-20s %-9s %-32s %-16s %u\n", o->no_trunc ? 64 : 13, p->id, age,
	       p->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY ? "Ready" : "NotReady",
	       md ? md->name : "", md ? md->namespace_ : "", md ? md->attempt : 0);
}

/* ListPodSandbox with the filter; the answer is *ret_resp. */
static int list_pods(ctl_ctx *ctx, json_t *filter, Runtime__V1__ListPodSandboxResponse **ret_resp)
{
	Runtime__V1__ListPodSandboxRequest req = RUNTIME__V1__LIST_POD_SANDBOX_REQUEST__INIT;
	req.filter = (Runtime__V1__PodSandboxFilter *)ctl_pb_from_json(
	    &runtime__v1__pod_sandbox_filter__descriptor, filter, "filter");
	int r = ctl_unary(ctx, PATH_LISTP, &req.base,
			  &runtime__v1__list_pod_sandbox_response__descriptor,
			  (ProtobufCMessage **)ret_resp);
	if (req.filter)
		protobuf_c_message_free_unpacked(&req.filter->base, NULL);
	return r;
}

static int run_pods(ctl_ctx *ctx, int argc, char **argv)
{
	pods_opts o = {0};
	ctl_list_opts_init(&o.list);
	_cleanup_free_ char *pod_id = NULL;
	Runtime__V1__ListPodSandboxResponse *resp = NULL;
	int r = parse_pods_options(argc, argv, &o);
	if (!r && o.list.id)
		r = ctl_resolve_id(ctx, true, o.list.id, &pod_id);
	if (!r) {
		json_t *filter = ctl_list_filter(&o.list, pod_id, NULL, o.state);
		r = list_pods(ctx, filter, &resp);
		json_decref(filter);
	}
	if (!r) {
		/* Name and namespace are regular expressions, matched here as crictl does. */
		ProtobufCMessage **pods = ad_malloc0(sizeof(*pods) * (resp->n_items + 1));
		size_t n = 0;
		for (size_t i = 0; i < resp->n_items; i++) {
			const Runtime__V1__PodSandboxMetadata *md = resp->items[i]->metadata;
			if (ctl_regex_match(&o.list.name, md ? md->name : "") &&
			    ctl_regex_match(&o.namespace_, md ? md->namespace_ : ""))
				pods[n++] = &resp->items[i]->base;
		}
		_cleanup_free_ char *header =
		    ad_asprintf("%-13s %-20s %-9s %-32s %-16s %s", "POD ID", "CREATED", "STATE",
				"NAME", "NAMESPACE", "ATTEMPT");
		ctl_list_print(&o.list, "items", pods, n, header, print_pod_row);
		free(pods);
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	ctl_list_opts_clear(&o.list);
	ctl_regex_free(&o.namespace_);
	return r < 0 ? 0 : r;
}

/* ---- stopp, rmp, inspectp ----------------------------------------------------------- */

static int run_stopp(ctl_ctx *ctx, int argc, char **argv)
{
	static const ctl_id_call stop = {
	    .path = PATH_STOPP,
	    .req_desc = &runtime__v1__stop_pod_sandbox_request__descriptor,
	    .resp_desc = &runtime__v1__stop_pod_sandbox_response__descriptor,
	    .id_field = "pod_sandbox_id",
	    .done_prefix = "Stopped sandbox ",
	};
	return ctl_run_id_command(ctx, &ctl_cmd_stopp, argc, argv, &stop);
}

static int run_rmp(ctl_ctx *ctx, int argc, char **argv)
{
	static const ctl_id_call remove = {
	    .path = PATH_RMP,
	    .req_desc = &runtime__v1__remove_pod_sandbox_request__descriptor,
	    .resp_desc = &runtime__v1__remove_pod_sandbox_response__descriptor,
	    .id_field = "pod_sandbox_id",
	    .done_prefix = "Removed sandbox ",
	};
	return ctl_run_id_command(ctx, &ctl_cmd_rmp, argc, argv, &remove);
}

static int run_inspectp(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_JSON;
	int r = ctl_ids_and_format(&ctl_cmd_inspectp, argc, argv, "POD", &fmt);
	if (r)
		return r < 0 ? 0 : r;
	json_t *out = json_array();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		_cleanup_free_ char *id = NULL;
		r = ctl_resolve_id(ctx, true, argv[i], &id);
		Runtime__V1__PodSandboxStatusRequest req =
		    RUNTIME__V1__POD_SANDBOX_STATUS_REQUEST__INIT;
		req.pod_sandbox_id = id;
		req.verbose = true;
		ProtobufCMessage *m = NULL;
		if (!r)
			r = ctl_unary(ctx, PATH_PODSTATUS, &req.base,
				      &runtime__v1__pod_sandbox_status_response__descriptor, &m);
		if (r) {
			status = r;
			continue;
		}
		const Runtime__V1__PodSandboxStatusResponse *st = (void *)m;
		json_array_append_new(
		    out, ctl_status_json(
			     st->status ? pbjson_from_message(&st->status->base, PBJSON_PROTOJSON)
					: NULL,
			     st->n_info, (void **)st->info));
		protobuf_c_message_free_unpacked(m, NULL);
	}
	ctl_print_inspected(out, argc - optind == 1, fmt);
	return status;
}

const ctl_command ctl_cmd_runp = {
    .name = "runp",
    .synopsis = "POD_CONFIG.{json|yaml}",
    .summary = "run a pod from a crictl pod config (JSON or YAML); prints its id",
    .run = run_runp,
};

const ctl_command ctl_cmd_pods = {
    .name = "pods",
    .synopsis = "[-ql] [-o table|json|yaml] [-n LAST] [--id ID] [--name RE] [--namespace RE] "
		"[-s STATE] [--label K=V] [--no-trunc]",
    .summary = "list pods, newest first (--state ready|notready)",
    .run = run_pods,
};

const ctl_command ctl_cmd_stopp = {
    .name = "stopp",
    .synopsis = "POD...",
    .summary = "stop pods and their containers",
    .run = run_stopp,
};

const ctl_command ctl_cmd_rmp = {
    .name = "rmp",
    .synopsis = "POD...",
    .summary = "remove pods",
    .run = run_rmp,
};

const ctl_command ctl_cmd_inspectp = {
    .name = "inspectp",
    .synopsis = "[-o json|yaml] POD...",
    .summary = "a pod's status and info",
    .run = run_inspectp,
};
