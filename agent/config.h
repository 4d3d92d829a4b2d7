/* config.h — agentd's configuration: defaults, the INI file (libinih) and
 * the command line, which overrides the file. Every key is documented in
 * deploy/agentd.conf, which is also compiled in as the default config. */
#ifndef AGENTD_CONFIG_H
#define AGENTD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"

typedef struct cfg_config {
	/* [agentd] */
	char *root;  /* persistent data: state DB, blobs, layers */
	char *state; /* runtime state: sockets, shim dirs */
	ad_log_level log_level;
	/* [grpc] */
	char *listen;	  /* unix socket path; "" = none */
	char *tls_listen; /* host:port; "" = off */
	char *tls_cert;	  /* PEM files, all three required with tls_listen */
	char *tls_key;
	char *tls_client_ca;
	char *tcp_insecure_listen; /* host:port, h2c without TLS; "" = off */
	size_t max_recv_msg_size;
	size_t max_send_msg_size;
	uint32_t max_concurrent_streams;
	unsigned workers;
	unsigned drain_timeout; /* seconds */
	unsigned max_connections_per_peer; /* 0: no limit */
	bool debug_service;
	/* [images] */
	unsigned max_parallel_layers; /* layers fetched at once per pull */
	unsigned stall_timeout;	      /* seconds without bytes that fail a fetch */
	size_t max_unpacked_layer_size; /* bytes a layer may unpack to */
	char *certs_dir;	      /* certs.d layout; "" = none */
	char *auth_file;	      /* auth.json / config.json; "" = none */
	/* Comma-separated "host[:port]" lists. */
	char *plain_http_registries;
	char *insecure_registries;
	/* "host=URL|URL,host2=URL": mirrors tried before each host. */
	char *registry_mirrors;
	char *fetch_helper; /* the agentd-fetch executable; "" = beside agentd or installed */
	/* [cni] */
	char *cni_conf_dir;    /* network config lists */
	char *cni_plugin_dirs; /* colon-separated plugin binary dirs */
	char *cni_netns_dir;   /* netns pins; "" = <state>/netns */
	/* [pods] */
	char *pause_image; /* infra image; "" = the built-in agentd-infra */
	/* [userns] pods in a user namespace: host ids from these files' ranges
	 * for this user (a name or a uid) */
	char *userns_user;
	char *userns_subuid_file;
	char *userns_subgid_file;
	/* [streaming] Exec, Attach and PortForward */
	char *streaming_listen;		 /* host:port (port 0: ephemeral); "": off */
	bool streaming_tls;		 /* https with [grpc] tls_cert/tls_key */
	unsigned streaming_idle_timeout; /* seconds */
	unsigned streaming_token_ttl;	 /* seconds */
	unsigned streaming_max_sessions;
	/* [metrics] */
	char *metrics_listen;	/* host:port of /metrics, /healthz, /readyz; "" = off */
	char *metrics_tls_cert; /* both set: HTTPS */
	char *metrics_tls_key;
	/* [authz] */
	bool authz_role_from_ou; /* a client certificate's OU names its role */
	char *authz_roles;	 /* "CN=role,..." */
	char *authz_default_role;
	/* Where the settings came from ("<built-in>" or the file name). */
	char *source;
} cfg_config;

typedef enum cfg_action { CFG_RUN, CFG_HELP, CFG_VERSION } cfg_action;

/* The built-in config: the text of deploy/agentd.conf. */
extern const char cfg_default_text[];

/* Fills `cfg` with the compiled-in defaults (without parsing anything). */
void cfg_init(cfg_config *cfg);
void cfg_free(cfg_config *cfg);

/* Applies an INI file / INI text over `cfg`. Unknown sections and keys,
 * malformed lines and bad values fail with AD_E_INVALID and a message that
 * starts with "name:line: ". */
int cfg_load_file(cfg_config *cfg, const char *path, ad_error **err);
int cfg_load_string(cfg_config *cfg, const char *text, const char *name, ad_error **err);

/* Checks the combination of settings (e.g. TLS needs cert, key and CA). */
int cfg_validate(const cfg_config *cfg, ad_error **err);

/* agentd's command line: loads --config FILE (or the built-in config),
 * applies the options over it and validates. On failure *err says what was
 * wrong (usage errors and config errors alike: agentd exits 2). */
int cfg_from_args(cfg_config *cfg, int argc, char **argv, cfg_action *ret_action, ad_error **err);

/* The --help text. */
void cfg_usage(FILE *out, const char *prog);

#endif
