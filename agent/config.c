#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <ini.h>

#include "authz.h"

#define DEFAULT_ROOT "/var/lib/agentd"
#define DEFAULT_STATE "/run/agentd"
#define DEFAULT_LISTEN "/run/agentd/agentd.sock"
#define DEFAULT_MAX_MSG (16u * 1024 * 1024)
#define MAX_MSG_LIMIT ((uint64_t)INT32_MAX) /* gRPC frames carry a 31-bit-safe length */
#define CONFIG_MAX_SIZE (1024 * 1024)

typedef enum key_type {
	K_ABS_PATH,  /* absolute path, required */
	K_SOCK_PATH, /* absolute unix socket path, or "" */
	K_HOST_PORT, /* host:port or [v6]:port, or "" */
	K_FILE,	     /* any path, or "" */
	K_LOG_LEVEL,
	K_SIZE,	    /* size_t in [min, max] */
	K_U32,	    /* uint32_t in [min, max] */
	K_UNSIGNED, /* unsigned in [min, max] */
	K_BOOL,
	K_HOST_LIST, /* comma-separated host or host:port, or "" */
	K_MIRRORS,   /* comma-separated host=URL|URL..., or "" */
	K_ROLE,	     /* admin, read-only or none */
	K_ROLES,     /* comma-separated CN=role, or "" */
} key_type;

typedef struct cfg_key {
	const char *section;
	const char *name;
	key_type type;
	size_t offset;
	uint64_t min, max;
} cfg_key;

#define KEY(sec, name, type, min, max)                                                             \
	{                                                                                          \
		sec, #name, type, offsetof(cfg_config, name), min, max                             \
	}

static const cfg_key keys[] = {
    KEY("agentd", root, K_ABS_PATH, 0, 0),
    KEY("agentd", state, K_ABS_PATH, 0, 0),
    KEY("agentd", log_level, K_LOG_LEVEL, 0, 0),
    KEY("grpc", listen, K_SOCK_PATH, 0, 0),
    KEY("grpc", tls_listen, K_HOST_PORT, 0, 0),
    KEY("grpc", tls_cert, K_FILE, 0, 0),
    KEY("grpc", tls_key, K_FILE, 0, 0),
    KEY("grpc", tls_client_ca, K_FILE, 0, 0),
    KEY("grpc", tcp_insecure_listen, K_HOST_PORT, 0, 0),
    KEY("grpc", max_recv_msg_size, K_SIZE, 1, MAX_MSG_LIMIT),
    KEY("grpc", max_send_msg_size, K_SIZE, 1, MAX_MSG_LIMIT),
    KEY("grpc", max_concurrent_streams, K_U32, 1, UINT32_MAX),
    KEY("grpc", workers, K_UNSIGNED, 1, 1024),
    KEY("grpc", drain_timeout, K_UNSIGNED, 0, 3600),
    KEY("grpc", max_connections_per_peer, K_UNSIGNED, 0, 1000000),
    KEY("grpc", debug_service, K_BOOL, 0, 0),
    KEY("images", max_parallel_layers, K_UNSIGNED, 1, 64),
    KEY("images", stall_timeout, K_UNSIGNED, 1, 3600),
    KEY("images", max_unpacked_layer_size, K_SIZE, 1 << 20, UINT64_MAX),
    KEY("images", certs_dir, K_FILE, 0, 0),
    KEY("images", auth_file, K_FILE, 0, 0),
    KEY("images", plain_http_registries, K_HOST_LIST, 0, 0),
    KEY("images", insecure_registries, K_HOST_LIST, 0, 0),
    KEY("images", registry_mirrors, K_MIRRORS, 0, 0),
    KEY("images", fetch_helper, K_FILE, 0, 0),
    {"cni", "conf_dir", K_FILE, offsetof(cfg_config, cni_conf_dir), 0, 0},
    {"cni", "plugin_dirs", K_FILE, offsetof(cfg_config, cni_plugin_dirs), 0, 0},
    {"cni", "netns_dir", K_FILE, offsetof(cfg_config, cni_netns_dir), 0, 0},
    KEY("pods", pause_image, K_FILE, 0, 0),
    {"userns", "user", K_FILE, offsetof(cfg_config, userns_user), 0, 0},
    {"userns", "subuid_file", K_FILE, offsetof(cfg_config, userns_subuid_file), 0, 0},
    {"userns", "subgid_file", K_FILE, offsetof(cfg_config, userns_subgid_file), 0, 0},
    {"streaming", "listen", K_HOST_PORT, offsetof(cfg_config, streaming_listen), 0, 0},
    {"streaming", "tls", K_BOOL, offsetof(cfg_config, streaming_tls), 0, 0},
    {"streaming", "idle_timeout", K_UNSIGNED, offsetof(cfg_config, streaming_idle_timeout), 1,
     7 * 86400},
    {"streaming", "token_ttl", K_UNSIGNED, offsetof(cfg_config, streaming_token_ttl), 1, 3600},
    {"streaming", "max_sessions", K_UNSIGNED, offsetof(cfg_config, streaming_max_sessions), 1,
     4096},
    {"metrics", "listen", K_HOST_PORT, offsetof(cfg_config, metrics_listen), 0, 0},
    {"metrics", "tls_cert", K_FILE, offsetof(cfg_config, metrics_tls_cert), 0, 0},
    {"metrics", "tls_key", K_FILE, offsetof(cfg_config, metrics_tls_key), 0, 0},
    {"authz", "role_from_ou", K_BOOL, offsetof(cfg_config, authz_role_from_ou), 0, 0},
    {"authz", "roles", K_ROLES, offsetof(cfg_config, authz_roles), 0, 0},
    {"authz", "default_role", K_ROLE, offsetof(cfg_config, authz_default_role), 0, 0},
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

void cfg_init(cfg_config *cfg)
{
	*cfg = (cfg_config){
	    .root = ad_strdup(DEFAULT_ROOT),
	    .state = ad_strdup(DEFAULT_STATE),
	    .log_level = AD_LOG_INFO,
	    .listen = ad_strdup(DEFAULT_LISTEN),
	    .tls_listen = ad_strdup(""),
	    .tls_cert = ad_strdup(""),
	    .tls_key = ad_strdup(""),
	    .tls_client_ca = ad_strdup(""),
	    .tcp_insecure_listen = ad_strdup(""),
	    .max_recv_msg_size = DEFAULT_MAX_MSG,
	    .max_send_msg_size = DEFAULT_MAX_MSG,
	    .max_concurrent_streams = 1000,
	    .workers = 8,
	    .drain_timeout = 5,
	    .max_connections_per_peer = 1024,
	    .debug_service = false,
	    .max_parallel_layers = 3,
	    .stall_timeout = 30,
	    .max_unpacked_layer_size = (size_t)64 << 30, /* store/unpack.h STORE_DEFAULT_MAX_UNPACKED */
	    .certs_dir = ad_strdup("/etc/agentd/certs.d"),
	    .auth_file = ad_strdup(""),
	    .plain_http_registries = ad_strdup(""),
	    .insecure_registries = ad_strdup(""),
	    .registry_mirrors = ad_strdup(""),
	    .fetch_helper = ad_strdup(""),
	    .cni_conf_dir = ad_strdup("/etc/cni/net.d"),
	    .cni_plugin_dirs = ad_strdup("/usr/lib/cni:/opt/cni/bin"),
	    .cni_netns_dir = ad_strdup(""),
	    .pause_image = ad_strdup(""),
	    .userns_user = ad_strdup("agentd"),
	    .userns_subuid_file = ad_strdup("/etc/subuid"),
	    .userns_subgid_file = ad_strdup("/etc/subgid"),
	    .streaming_listen = ad_strdup("127.0.0.1:0"),
	    .streaming_idle_timeout = 4 * 3600,
	    .streaming_token_ttl = 60,
	    .streaming_max_sessions = 64,
	    .metrics_listen = ad_strdup("127.0.0.1:9101"),
	    .metrics_tls_cert = ad_strdup(""),
	    .metrics_tls_key = ad_strdup(""),
	    .authz_role_from_ou = true,
	    .authz_roles = ad_strdup(""),
	    .authz_default_role = ad_strdup("none"),
	    .source = ad_strdup("<defaults>"),
	};
}

void cfg_free(cfg_config *cfg)
{
	free(cfg->root);
	free(cfg->state);
	free(cfg->listen);
	free(cfg->tls_listen);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_client_ca);
	free(cfg->tcp_insecure_listen);
	free(cfg->certs_dir);
	free(cfg->auth_file);
	free(cfg->plain_http_registries);
	free(cfg->insecure_registries);
	free(cfg->registry_mirrors);
	free(cfg->fetch_helper);
	free(cfg->cni_conf_dir);
	free(cfg->cni_plugin_dirs);
	free(cfg->cni_netns_dir);
	free(cfg->pause_image);
	free(cfg->userns_user);
	free(cfg->userns_subuid_file);
	free(cfg->userns_subgid_file);
	free(cfg->streaming_listen);
	free(cfg->metrics_listen);
	free(cfg->metrics_tls_cert);
	free(cfg->metrics_tls_key);
	free(cfg->authz_roles);
	free(cfg->authz_default_role);
	free(cfg->source);
	*cfg = (cfg_config){0};
}

static const cfg_key *find_key(const char *section, const char *name)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static bool known_section(const char *section)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0)
			return true;
	return false;
}

/* Strict unsigned decimal: no sign, no spaces, no suffix, no overflow. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*ret = v;
	return 0;
}

static int parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -1;
}

/* "host:port" or "[v6]:port" with a numeric port 0..65535 and a non-empty host. */
static bool valid_host_port(const char *s)
{
	const char *colon;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close == s + 1 || close[1] != ':')
			return false;
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || colon == s || memchr(s, ':', (size_t)(colon - s)))
			return false;
	}
	uint64_t port;
	return parse_u64(colon + 1, 0, 65535, &port) == 0;
}

/* Registry names as a reference's domain has them: no scheme, path or spaces. */
static bool valid_host_list(const char *s)
{
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, ",");
		if (n == 0 || memchr(p, '/', n) || memchr(p, ' ', n) || memchr(p, '\t', n))
			return false;
		p += n;
		if (*p == ',' && !*++p)
			return false;
	}
	return true;
}

/* "host=URL|URL,host2=URL" with http(s) URLs; no spaces anywhere. */
static bool valid_mirrors(const char *s)
{
	if (strpbrk(s, " \t"))
		return false;
	for (const char *p = s; *p;) {
		size_t n = strcspn(p, ",");
		const char *eq = memchr(p, '=', n);
		if (!eq || eq == p || memchr(p, '/', (size_t)(eq - p)))
			return false;
		for (const char *u = eq + 1; u <= p + n;) {
			size_t m = strcspn(u, "|,");
			if (u + m > p + n)
				m = (size_t)(p + n - u);
			if (!((m > 7 && strncmp(u, "http://", 7) == 0) ||
			      (m > 8 && strncmp(u, "https://", 8) == 0)))
				return false;
			u += m + 1;
		}
		p += n;
		if (*p == ',' && !*++p)
			return false;
	}
	return true;
}

/* Sets one key from its text form. On a bad value returns -1 and a malloc'd
 * description (without location) in *ret_msg. */
static int set_key(cfg_config *cfg, const cfg_key *k, const char *value, char **ret_msg)
{
	void *field = (char *)cfg + k->offset;
	uint64_t n;

	switch (k->type) {
	case K_ABS_PATH:
		if (value[0] != '/') {
			*ret_msg =
			    ad_asprintf("invalid value '%s' (expected an absolute path)", value);
			return -1;
		}
		break;
	case K_SOCK_PATH:
		if (strncmp(value, "unix://", 7) == 0)
			value += 7;
		if (value[0] && value[0] != '/') {
			*ret_msg = ad_asprintf(
			    "invalid value '%s' (expected an absolute unix socket path)", value);
			return -1;
		}
		if (strlen(value) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			*ret_msg =
			    ad_asprintf("socket path '%s' is too long (at most %zu bytes)", value,
					sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -1;
		}
		break;
	case K_HOST_PORT:
		if (value[0] && !valid_host_port(value)) {
			*ret_msg = ad_asprintf(
			    "invalid value '%s' (expected host:port or [ipv6]:port)", value);
			return -1;
		}
		break;
	case K_FILE:
		break;
	case K_HOST_LIST:
		if (!valid_host_list(value)) {
			*ret_msg = ad_asprintf("invalid value '%s' (expected comma-separated "
					       "host or host:port names, without spaces)",
					       value);
			return -1;
		}
		break;
	case K_MIRRORS:
		if (!valid_mirrors(value)) {
			*ret_msg = ad_asprintf("invalid value '%s' (expected "
					       "host=URL[|URL...][,host=URL...] with http:// or "
					       "https:// URLs, without spaces)",
					       value);
			return -1;
		}
		break;
	case K_ROLE:
	case K_ROLES: {
		/* The policy module checks the text (roles, CN=role pairs). */
		authz_policy *p = NULL;
		_cleanup_error_ ad_error *e = NULL;
		if (authz_policy_new(k->type == K_ROLES ? value : "", true,
				     k->type == K_ROLE ? value : "none", &p, &e) < 0) {
			*ret_msg = ad_asprintf("invalid value: %s", e->message);
			return -1;
		}
		authz_policy_free(p);
		break;
	}
	case K_LOG_LEVEL:
		if (ad_log_level_parse(value, (ad_log_level *)field) < 0) {
			*ret_msg = ad_asprintf(
			    "invalid value '%s' (expected error, warn, info or debug)", value);
			return -1;
		}
		return 0;
	case K_SIZE:
	case K_U32:
	case K_UNSIGNED:
		if (parse_u64(value, k->min, k->max, &n) < 0) {
			*ret_msg =
			    ad_asprintf("invalid value '%s' (expected an integer from %" PRIu64
					" to %" PRIu64 ")",
					value, k->min, k->max);
			return -1;
		}
		if (k->type == K_SIZE)
			*(size_t *)field = (size_t)n;
		else if (k->type == K_U32)
			*(uint32_t *)field = (uint32_t)n;
		else
			*(unsigned *)field = (unsigned)n;
		return 0;
	case K_BOOL:
		if (parse_bool(value, (bool *)field) < 0) {
			*ret_msg =
			    ad_asprintf("invalid value '%s' (expected true or false)", value);
			return -1;
		}
		return 0;
	}
	char **s = field;
	free(*s);
	*s = ad_strdup(value);
	return 0;
}

/* ---- INI ---------------------------------------------------------------- */

typedef struct ini_ctx {
	cfg_config *cfg;
	const char *name;
	const char *pos, *end; /* the text still to be read */
	int line;	       /* number of the line being parsed */
	bool at_line_start;
	char *err_msg; /* first error found by us (reader or handler) */
	int err_line;
} ini_ctx;

static void ctx_error(ini_ctx *ctx, char *msg)
{
	if (ctx->err_msg) {
		free(msg);
		return;
	}
	ctx->err_msg = msg;
	ctx->err_line = ctx->line;
}

/* A section header we check ourselves: inih tells the handler only about
 * keys, so an unknown section without keys would otherwise pass silently. */
static void check_section_line(ini_ctx *ctx, const char *line, size_t len)
{
	while (len && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	if (!len || *line != '[')
		return;
	const char *close = memchr(line, ']', len);
	if (!close)
		return; /* inih reports it as a syntax error */
	const char *a = line + 1, *b = close;
	while (a < b && (*a == ' ' || *a == '\t'))
		a++;
	while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
		b--;
	_cleanup_free_ char *sec = ad_strndup(a, (size_t)(b - a));
	if (!known_section(sec))
		ctx_error(ctx, ad_asprintf("unknown section [%s] (known: [agentd], [grpc], "
					   "[images], [cni], [pods])",
					   sec));
}

static char *cfg_ini_read(char *str, int num, void *stream)
{
	ini_ctx *ctx = stream;
	if (ctx->pos >= ctx->end || num < 2)
		return NULL;
	const char *nl = memchr(ctx->pos, '\n', (size_t)(ctx->end - ctx->pos));
	size_t len = nl ? (size_t)(nl - ctx->pos) + 1 : (size_t)(ctx->end - ctx->pos);
	ctx->line++;
	if (memchr(ctx->pos, '\0', len)) {
		ctx_error(ctx, ad_strdup("NUL byte in line"));
		return NULL;
	}
	if (len > (size_t)num - 1) {
		/* inih would silently split the line and parse the rest as another. */
		ctx_error(ctx, ad_asprintf("line too long (at most %d characters)", num - 3));
		return NULL;
	}
	memcpy(str, ctx->pos, len);
	str[len] = '\0';
	check_section_line(ctx, str, len);
	ctx->pos += len;
	return str;
}

static int cfg_ini_key(void *user, const char *section, const char *name, const char *value)
{
	ini_ctx *ctx = user;
	if (!section[0]) {
		ctx_error(ctx, ad_asprintf("key '%s' outside of a section", name));
		return 0;
	}
	if (!known_section(section))
		return 0; /* reported on the section line */
	const cfg_key *k = find_key(section, name);
	if (!k) {
		ctx_error(ctx, ad_asprintf("unknown key '%s' in section [%s]", name, section));
		return 0;
	}
	char *msg = NULL;
	if (set_key(ctx->cfg, k, value ? value : "", &msg) < 0) {
		ctx_error(ctx, ad_asprintf("[%s] %s: %s", section, name, msg));
		free(msg);
		return 0;
	}
	return 1;
}

int cfg_load_string(cfg_config *cfg, const char *text, const char *name, ad_error **err)
{
	ini_ctx ctx = {
	    .cfg = cfg,
	    .name = name,
	    .pos = text,
	    .end = text + strlen(text),
	};
	int r = ini_parse_stream(cfg_ini_read, &ctx, cfg_ini_key, &ctx);
	if (ctx.err_msg && (r <= 0 || ctx.err_line <= r)) {
		ad_fail(err, AD_E_INVALID, "%s:%d: %s", name, ctx.err_line, ctx.err_msg);
		free(ctx.err_msg);
		return -1;
	}
	free(ctx.err_msg);
	if (r > 0)
		return ad_fail(err, AD_E_INVALID,
			       "%s:%d: syntax error (expected '[section]', 'key = value' or a "
			       "comment)",
			       name, r);
	if (r < 0)
		return ad_fail(err, AD_E_INTERNAL, "%s: cannot parse (inih error %d)", name, r);
	free(cfg->source);
	cfg->source = ad_strdup(name);
	return 0;
}

int cfg_load_file(cfg_config *cfg, const char *path, ad_error **err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	ad_error *e = NULL;
	if (ad_read_file(AT_FDCWD, path, CONFIG_MAX_SIZE, &text, &len, &e) < 0) {
		int r = e->errno_value ? ad_error_make(err, e->code, e->errno_value,
						       "cannot read config file %s", path)
				       : ad_fail(err, e->code, "cannot read config file %s: %s",
						 path, e->message);
		ad_error_free(&e);
		return r;
	}
	if (strlen(text) != len)
		return ad_fail(err, AD_E_INVALID, "%s: contains a NUL byte", path);
	return cfg_load_string(cfg, text, path, err);
}

int cfg_validate(const cfg_config *cfg, ad_error **err)
{
	if (cfg->tls_listen[0]) {
		const char *missing = !cfg->tls_cert[0]	       ? "tls_cert"
				      : !cfg->tls_key[0]       ? "tls_key"
				      : !cfg->tls_client_ca[0] ? "tls_client_ca"
							       : NULL;
		if (missing)
			return ad_fail(err, AD_E_INVALID,
				       "%s: tls_listen = %s needs tls_cert, tls_key and "
				       "tls_client_ca ([grpc] %s is not set)",
				       cfg->source, cfg->tls_listen, missing);
	}
	if (cfg->streaming_tls && (!cfg->tls_cert[0] || !cfg->tls_key[0]))
		return ad_fail(err, AD_E_INVALID,
			       "%s: [streaming] tls = true needs [grpc] tls_cert and tls_key",
			       cfg->source);
	if (!cfg->metrics_tls_cert[0] != !cfg->metrics_tls_key[0])
		return ad_fail(err, AD_E_INVALID,
			       "%s: [metrics] tls_cert and tls_key go together (HTTPS needs both)",
			       cfg->source);
	if (!cfg->listen[0] && !cfg->tls_listen[0] && !cfg->tcp_insecure_listen[0])
		return ad_fail(err, AD_E_INVALID,
			       "%s: no listener: set at least one of [grpc] listen, tls_listen, "
			       "tcp_insecure_listen",
			       cfg->source);
	if (cfg->tls_listen[0] && cfg->tcp_insecure_listen[0] &&
	    strcmp(cfg->tls_listen, cfg->tcp_insecure_listen) == 0)
		return ad_fail(err, AD_E_INVALID,
			       "%s: tls_listen and tcp_insecure_listen are the same address %s",
			       cfg->source, cfg->tls_listen);
	return 0;
}

/* ---- command line ------------------------------------------------------- */

enum {
	OPT_ROOT = 0x100,
	OPT_STATE,
	OPT_LISTEN,
	OPT_TLS_LISTEN,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_CLIENT_CA,
	OPT_TCP_INSECURE_LISTEN,
	OPT_LOG_LEVEL,
	OPT_MAX_MSG_SIZE,
	OPT_DEBUG_SERVICE,
	OPT_METRICS_LISTEN,
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"root", required_argument, NULL, OPT_ROOT},
    {"state", required_argument, NULL, OPT_STATE},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"tls-listen", required_argument, NULL, OPT_TLS_LISTEN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
    {"tcp-insecure-listen", required_argument, NULL, OPT_TCP_INSECURE_LISTEN},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"max-msg-size", required_argument, NULL, OPT_MAX_MSG_SIZE},
    {"debug-service", no_argument, NULL, OPT_DEBUG_SERVICE},
    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* Which config key(s) each overriding option sets. */
static const struct {
	int opt;
	const char *section, *key, *key2;
} option_keys[] = {
    {OPT_ROOT, "agentd", "root", NULL},
    {OPT_STATE, "agentd", "state", NULL},
    {OPT_LOG_LEVEL, "agentd", "log_level", NULL},
    {OPT_LISTEN, "grpc", "listen", NULL},
    {OPT_TLS_LISTEN, "grpc", "tls_listen", NULL},
    {OPT_TLS_CERT, "grpc", "tls_cert", NULL},
    {OPT_TLS_KEY, "grpc", "tls_key", NULL},
    {OPT_TLS_CLIENT_CA, "grpc", "tls_client_ca", NULL},
    {OPT_TCP_INSECURE_LISTEN, "grpc", "tcp_insecure_listen", NULL},
    {OPT_MAX_MSG_SIZE, "grpc", "max_recv_msg_size", "max_send_msg_size"},
    {OPT_DEBUG_SERVICE, "grpc", "debug_service", NULL},
    {OPT_METRICS_LISTEN, "metrics", "listen", NULL},
};

static const char *option_name(int opt)
{
	for (const struct option *o = long_options; o->name; o++)
		if (o->val == opt)
			return o->name;
	return "?";
}

static int apply_option(cfg_config *cfg, int opt, const char *value, ad_error **err)
{
	for (size_t i = 0; i < sizeof(option_keys) / sizeof(option_keys[0]); i++) {
		if (option_keys[i].opt != opt)
			continue;
		const char *names[2] = {option_keys[i].key, option_keys[i].key2};
		for (size_t j = 0; j < 2 && names[j]; j++) {
			char *msg = NULL;
			if (set_key(cfg, find_key(option_keys[i].section, names[j]), value, &msg) <
			    0) {
				ad_fail(err, AD_E_INVALID, "--%s: %s", option_name(opt), msg);
				free(msg);
				return -1;
			}
		}
		return 0;
	}
	return ad_fail(err, AD_E_INTERNAL, "option %d has no config key", opt);
}

int cfg_from_args(cfg_config *cfg, int argc, char **argv, cfg_action *ret_action, ad_error **err)
{
	const char *config_path = NULL;
	_cleanup_free_ int *opts = ad_malloc0(sizeof(int) * (size_t)(argc + 1));
	_cleanup_free_ const char **vals = ad_malloc0(sizeof(char *) * (size_t)(argc + 1));
	size_t n = 0;
	cfg_action action = CFG_RUN;

	optind = 0; /* full re-initialisation, so this can run more than once */
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":c:hV", long_options, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'h':
			action = CFG_HELP;
			break;
		case 'V':
			if (action == CFG_RUN)
				action = CFG_VERSION;
			break;
		case ':':
			return ad_fail(err, AD_E_INVALID, "option '%s' needs an argument",
				       argv[optind - 1]);
		case '?':
			if (optopt && optopt < 0x100)
				return ad_fail(err, AD_E_INVALID, "unknown option '-%c'", optopt);
			return ad_fail(err, AD_E_INVALID, "unknown option '%s'", argv[optind - 1]);
		default:
			opts[n] = c;
			vals[n] = optarg ? optarg : "true";
			n++;
			break;
		}
	}
	if (optind < argc)
		return ad_fail(err, AD_E_INVALID, "unexpected argument '%s'", argv[optind]);
	*ret_action = action;
	if (action != CFG_RUN)
		return 0;

	if (config_path) {
		if (cfg_load_file(cfg, config_path, err) < 0)
			return -1;
	} else if (cfg_load_string(cfg, cfg_default_text, "<built-in agentd.conf>", err) < 0) {
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (apply_option(cfg, opts[i], vals[i], err) < 0)
			return -1;
	return cfg_validate(cfg, err);
}

void cfg_usage(FILE *out, const char *prog)
{
	fprintf(out,
		"usage: %s [--config FILE] [--root DIR] [--state DIR] [--listen PATH]\n"
		"       %*s [--tls-listen HOST:PORT --tls-cert FILE --tls-key FILE "
		"--tls-client-ca FILE]\n"
		"       %*s [--tcp-insecure-listen HOST:PORT] [--log-level LEVEL]\n"
		"       %*s [--max-msg-size BYTES] [--debug-service] [--metrics-listen HOST:PORT]\n"
		"       %s --version | --help\n"
		"\n"
		"The container node agent: serves the Kubernetes CRI (runtime.v1) and agent.v1\n"
		"over gRPC. Options override the config file; without --config the built-in\n"
		"defaults are used (the same as deploy/agentd.conf).\n"
		"\n"
		"  -c, --config FILE            INI config file (see agentd.conf)\n"
		"      --root DIR               persistent data dir [agentd] root\n"
		"      --state DIR              runtime state dir [agentd] state\n"
		"      --listen PATH            unix socket [grpc] listen\n"
		"      --tls-listen HOST:PORT   mutual-TLS TCP listener [grpc] tls_listen\n"
		"      --tls-cert FILE          server certificate chain (PEM)\n"
		"      --tls-key FILE           server private key (PEM)\n"
		"      --tls-client-ca FILE     CA that client certificates must chain to\n"
		"      --tcp-insecure-listen HOST:PORT\n"
		"                               plain-text HTTP/2 on TCP (benchmarks only)\n"
		"      --log-level LEVEL        error, warn, info or debug\n"
		"      --max-msg-size BYTES     max gRPC message size, both directions\n"
		"      --debug-service          register agent.v1.DebugService (tests)\n"
		"      --metrics-listen HOST:PORT\n"
		"                               /metrics, /healthz, /readyz [metrics] listen\n"
		"  -V, --version                print the version and exit\n"
		"  -h, --help                   print this help and exit\n",
		prog, (int)strlen(prog), "", (int)strlen(prog), "", (int)strlen(prog), "", prog);
}
