/* What the listing commands (ps, pods, stats) share: crictl's list options,
 * the filter they make, and the listing itself, newest first. */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

void ctl_list_opts_init(ctl_list_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->fmt = CTL_TEXT;
	o->labels = json_object();
}

void ctl_list_opts_clear(ctl_list_opts *o)
{
	ctl_regex_free(&o->name);
	json_decref(o->labels);
	o->labels = NULL;
}

int ctl_list_option(const ctl_command *cmd, int c, const char *arg, ctl_list_opts *o)
{
	switch (c) {
	case 'q':
		o->quiet = true;
		return 0;
	case 'o':
		return ctl_parse_format(cmd, arg, &o->fmt);
	case 'i':
		o->id = arg;
		return 0;
	case 'p':
		o->pod = arg;
		return 0;
	case 'N':
		return ctl_regex_compile(cmd, "--name", arg, &o->name);
	case 'L':
		return ctl_add_label(cmd, o->labels, arg);
	case 'n':
		return ctl_parse_count(cmd, "--last", arg, &o->last);
	case 'l':
		o->last = 1;
		return 0;
	case 'T':
		o->no_trunc = true;
		return 0;
	}
	return 0;
}

json_t *ctl_list_filter(ctl_list_opts *o, const char *id, const char *pod_id, const char *state)
{
	json_t *filter = json_pack("{s:o}", "label_selector", o->labels);
	o->labels = NULL;
	if (id)
		json_object_set_new(filter, "id", json_string(id));
	if (pod_id)
		json_object_set_new(filter, "pod_sandbox_id", json_string(pod_id));
	if (state)
		json_object_set_new(filter, "state", json_pack("{s:s}", "state", state));
	return filter;
}

/* A listed message's string or int64 field, found through its descriptor:
 * every item listed has an id and a created_at. */
static const void *field_of(const ProtobufCMessage *m, const char *name)
{
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
	return (const char *)m + f->offset;
}

static int newer_first(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)field_of(*(ProtobufCMessage *const *)a, "created_at");
	int64_t y = *(const int64_t *)field_of(*(ProtobufCMessage *const *)b, "created_at");
	return x < y ? 1 : x > y ? -1 : 0;
}

void ctl_list_print(const ctl_list_opts *o, const char *key, ProtobufCMessage **items, size_t n,
		    const char *header, ctl_list_row_fn *row)
{
	qsort(items, n, sizeof(*items), newer_first);
	if (o->last > 0 && (size_t)o->last < n)
		n = (size_t)o->last;
	if (o->fmt != CTL_TEXT) {
		json_t *out = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(out, pbjson_from_message(items[i], PBJSON_PROTOJSON));
		ctl_print(json_pack("{s:o}", key, out), o->fmt);
		return;
	}
	if (!o->quiet)
		printf("%s\n", header);
	for (size_t i = 0; i < n; i++) {
		if (o->quiet)
			printf("%s\n", *(char *const *)field_of(items[i], "id"));
		else
			row(items[i], o);
	}
}
