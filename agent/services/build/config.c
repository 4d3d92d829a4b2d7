/* Edits of an image config's "config" object (Env, ExposedPorts, Labels, ...)
 * that the Dockerfile builder and the working containers share. */
#include "build_int.h"

#include <string.h>

#include <jansson.h>

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

json_t *bcfg_member(json_t *cfg, const char *key, json_type type)
{
	json_t *v = json_object_get(cfg, key);
	if (!v || json_typeof(v) != type) {
		v = type == JSON_ARRAY ? json_array() : json_object();
		json_object_set_new(cfg, key, v);
	}
	return v;
}

const char *bcfg_env_get(json_t *cfg, const char *name, size_t len)
{
	size_t i;
	json_t *v;
	const char *found = NULL;
	json_array_foreach(json_object_get(cfg, "Env"), i, v)
	{
		const char *kv = json_string_value(v);
		if (kv && strncmp(kv, name, len) == 0 && kv[len] == '=')
			found = kv + len + 1;
	}
	return found;
}

void bcfg_env_set(json_t *cfg, const char *key, size_t key_len, const char *value)
{
	json_t *env = bcfg_member(cfg, "Env", JSON_ARRAY);
	json_t *entry = json_sprintf("%.*s=%s", (int)key_len, key, value);
	size_t i;
	json_t *v;
	json_array_foreach(env, i, v)
	{
		const char *kv = json_string_value(v);
		if (kv && strncmp(kv, key, key_len) == 0 && kv[key_len] == '=') {
			json_array_set_new(env, i, entry);
			return;
		}
	}
	json_array_append_new(env, entry);
}

int bcfg_expose(json_t *cfg, const char *spec, ad_error **err)
{
	const char *slash = strchr(spec, '/');
	size_t digits = strspn(spec, "0123456789-");
	bool proto_ok = !slash || strcmp(slash, "/tcp") == 0 || strcmp(slash, "/udp") == 0 ||
			strcmp(slash, "/sctp") == 0;
	if (digits == 0 || !proto_ok || (slash ? (size_t)(slash - spec) != digits : spec[digits]))
		return ad_fail(err, AD_E_INVALID, "port '%s': PORT[/tcp|udp|sctp]", spec);
	_cleanup_free_ char *key = slash ? ad_strdup(spec) : ad_asprintf("%s/tcp", spec);
	json_object_set_new(bcfg_member(cfg, "ExposedPorts", JSON_OBJECT), key, json_object());
	return 0;
}

void bcfg_label(json_t *cfg, const char *key, const char *value)
{
	json_object_set_new(bcfg_member(cfg, "Labels", JSON_OBJECT), key, json_string(value));
}

char **bcfg_strv(json_t *array)
{
	size_t n = json_array_size(array), i;
	char **v = ad_malloc0(sizeof(char *) * (n + 1));
	json_t *s;
	json_array_foreach(array, i, s) v[i] = ad_strdup(json_string_value(s) ?: "");
	return v;
}

json_t *bcfg_json(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n && v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

json_t *bcfg_run_env(json_t *cfg)
{
	json_t *env = json_deep_copy(json_object_get(cfg, "Env"));
	if (!json_is_array(env)) {
		json_decref(env);
		env = json_array();
	}
	if (!bcfg_env_get(cfg, "PATH", 4))
		json_array_append_new(env, json_string(DEFAULT_PATH));
	return env;
}
