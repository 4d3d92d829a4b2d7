/* The messages between agentd (fetch_client.c) and agentd-fetch
 * (fetch_main.c), both ends of each in this one file. One JSON object per
 * line. Request (agentd → helper, then EOF):
 *   {"op": "pull"|"load"|"save"|"import", "store": {settings}, ...op fields}
 * Replies (helper → agentd): any number of {"progress": {...}}, then one of
 *   {"ok": {...results}}  or  {"error": {"code", "errno", "message"}}. */
#include "store_int.h"

#include <string.h>

#include <jansson.h>

json_t *fetch_proto_store(const store *s)
{
	json_t *regs = json_array();
	for (size_t i = 0; i < s->n_registries; i++) {
		const store_registry_config *c = &s->registries[i];
		json_t *mirrors = json_array();
		for (const char **m = c->mirrors; m && *m; m++)
			json_array_append_new(mirrors, json_string(*m));
		json_array_append_new(regs, json_pack("{s:s, s:b, s:b, s:o}", "host", c->host,
						      "plain_http", c->plain_http, "insecure",
						      c->insecure, "mirrors", mirrors));
	}
	json_t *j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:b}", "root", s->root, "db",
			      s->db_path, "registries", regs, "max_parallel",
			      (json_int_t)s->max_parallel, "stall_timeout_s",
			      (json_int_t)s->stall_timeout_s, "retries", (json_int_t)s->retries,
			      "backoff_ms", (json_int_t)s->backoff_ms, "allow_devices",
			      s->allow_devices);
	if (s->max_unpacked_bytes)
		json_object_set_new(j, "max_unpacked_bytes",
				    json_integer((json_int_t)s->max_unpacked_bytes));
	if (s->certs_dir)
		json_object_set_new(j, "certs_dir", json_string(s->certs_dir));
	if (s->auth_file)
		json_object_set_new(j, "auth_file", json_string(s->auth_file));
	return j;
}

int fetch_proto_store_parse(json_t *j, store_opts *o, ad_error **err)
{
	memset(o, 0, sizeof(*o));
	o->root = json_string_value(json_object_get(j, "root"));
	o->db_path = json_string_value(json_object_get(j, "db"));
	o->certs_dir = json_string_value(json_object_get(j, "certs_dir"));
	o->auth_file = json_string_value(json_object_get(j, "auth_file"));
	o->max_parallel = (unsigned)json_integer_value(json_object_get(j, "max_parallel"));
	o->stall_timeout_s = (unsigned)json_integer_value(json_object_get(j, "stall_timeout_s"));
	o->retries = (unsigned)json_integer_value(json_object_get(j, "retries"));
	o->backoff_ms = (unsigned)json_integer_value(json_object_get(j, "backoff_ms"));
	o->allow_devices = json_is_true(json_object_get(j, "allow_devices"));
	o->max_unpacked_bytes = (uint64_t)json_integer_value(json_object_get(j, "max_unpacked_bytes"));
	if (!o->root || !o->db_path)
		return ad_fail(err, AD_E_INVALID, "fetch request: the store has no root or db");
	json_t *regs = json_object_get(j, "registries");
	size_t n = json_array_size(regs);
	store_registry_config *rc = ad_malloc0(sizeof(*rc) * (n ? n : 1));
	for (size_t i = 0; i < n; i++) {
		json_t *r = json_array_get(regs, i);
		json_t *mirrors = json_object_get(r, "mirrors");
		rc[i].host = json_string_value(json_object_get(r, "host"));
		rc[i].plain_http = json_is_true(json_object_get(r, "plain_http"));
		rc[i].insecure = json_is_true(json_object_get(r, "insecure"));
		rc[i].mirrors = ad_malloc0(sizeof(char *) * (json_array_size(mirrors) + 1));
		for (size_t k = 0; k < json_array_size(mirrors); k++)
			rc[i].mirrors[k] = json_string_value(json_array_get(mirrors, k));
	}
	o->registries = rc;
	o->n_registries = n;
	return 0;
}

void fetch_proto_store_clear(store_opts *o)
{
	for (size_t i = 0; i < o->n_registries; i++)
		free(o->registries[i].mirrors);
	free((store_registry_config *)o->registries);
	memset(o, 0, sizeof(*o));
}

json_t *fetch_proto_error(const ad_error *e)
{
	return json_pack("{s:{s:i, s:i, s:s}}", "error", "code", e ? (int)e->code : AD_E_INTERNAL,
			 "errno", e ? e->errno_value : 0, "message",
			 e && e->message ? e->message : "unknown error");
}

/* The helper's error as it made it: same code (so the same gRPC status) and
 * the same message. */
void fetch_proto_error_parse(json_t *j, ad_error **err)
{
	json_int_t code = json_integer_value(json_object_get(j, "code"));
	const char *msg = json_string_value(json_object_get(j, "message"));
	if (code < 0 || code >= _AD_E_MAX)
		code = AD_E_INTERNAL;
	ad_fail(err, (ad_code)code, "%s", msg ? msg : "agentd-fetch failed without a message");
	if (err && *err)
		(*err)->errno_value = (int)json_integer_value(json_object_get(j, "errno"));
}

json_t *fetch_proto_progress(const store_progress *p)
{
	return json_pack("{s:{s:I, s:I, s:s?, s:i, s:I, s:I}}", "progress", "index",
			 (json_int_t)p->index, "count", (json_int_t)p->count, "digest", p->digest,
			 "state", (int)p->state, "done", (json_int_t)p->done, "total",
			 (json_int_t)p->total);
}

/* p->digest points into j. */
void fetch_proto_progress_parse(json_t *j, store_progress *p)
{
	memset(p, 0, sizeof(*p));
	p->index = (size_t)json_integer_value(json_object_get(j, "index"));
	p->count = (size_t)json_integer_value(json_object_get(j, "count"));
	p->digest = json_string_value(json_object_get(j, "digest"));
	p->state = (store_layer_state)json_integer_value(json_object_get(j, "state"));
	p->done = (uint64_t)json_integer_value(json_object_get(j, "done"));
	p->total = (uint64_t)json_integer_value(json_object_get(j, "total"));
}

json_t *fetch_proto_auth(const store_auth *a)
{
	json_t *j = json_object();
	const char *const fields[][2] = {
	    {"username", a->username},
	    {"password", a->password},
	    {"auth", a->auth},
	    {"identity_token", a->identity_token},
	    {"registry_token", a->registry_token},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (fields[i][1])
			json_object_set_new(j, fields[i][0], json_string(fields[i][1]));
	return j;
}

void fetch_proto_auth_parse(json_t *j, store_auth *a)
{
	a->username = json_string_value(json_object_get(j, "username"));
	a->password = json_string_value(json_object_get(j, "password"));
	a->auth = json_string_value(json_object_get(j, "auth"));
	a->identity_token = json_string_value(json_object_get(j, "identity_token"));
	a->registry_token = json_string_value(json_object_get(j, "registry_token"));
}
