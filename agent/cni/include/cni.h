/* cni.h — the one public header of libadcni: pod network namespaces and CNI
 * plugin execution (containernetworking/cni SPEC.md, conflists of version
 * 0.3.x, 0.4.0 and 1.0.0). No protobuf, no gRPC here.
 *
 * Typical use by agentd for a pod sandbox:
 *   cni_netns_create(NULL, id, &ns, &err);   new netns pinned under /run/agentd/netns
 *   cni_loopback_up(ns, &err);
 *   cni_net_load(&opts, &net, &err);
 *   cni_add(net, &pod, &result, &err);       store `result` (and the pod's port
 *                                            mappings) in the DB
 *   cni_result_ips(result, &ips, &n, &err);  pod IPs, IPv4 first
 *   ... later, also after a restart ...
 *   cni_del(net, &pod, result, &err);        idempotent
 *   cni_netns_remove(ns, &err);              idempotent
 *
 * Plugins are children of the calling process: it must not ignore SIGCHLD nor
 * reap with waitpid(-1) in another thread. */
#ifndef AGENTD_CNI_H
#define AGENTD_CNI_H

#include <stddef.h>
#include <stdint.h>

#include "base.h"

#define CNI_DEFAULT_NETNS_DIR "/run/agentd/netns"
#define CNI_DEFAULT_CONF_DIR "/etc/cni/net.d"
#define CNI_DEFAULT_PLUGIN_DIRS                                                                    \
	{                                                                                          \
		"/usr/lib/cni", "/opt/cni/bin", NULL                                               \
	}
#define CNI_DEFAULT_TIMEOUT_MS 60000
/* Bound on what a plugin may write to stdout (its result or error). */
#define CNI_MAX_OUTPUT (1024 * 1024)

/* ---- network namespaces -------------------------------------------------- */
/* Creates a new network namespace pinned by a bind mount at `dir`/`name`
 * (dir NULL → CNI_DEFAULT_NETNS_DIR), the way `ip netns add` does: `dir` is
 * made a shared mount so the pin is visible to and removable from other mount
 * namespaces. The caller's own network namespace is untouched. The namespace
 * has only a "lo" that is down (see cni_loopback_up). An existing pin of the
 * same name → AD_E_EXISTS. *ret_path receives the pin's path. */
int cni_netns_create(const char *dir, const char *name, char **ret_path, ad_error **err);
/* Unmounts (MNT_DETACH) and unlinks a pin; a missing pin is not an error. */
int cni_netns_remove(const char *path, ad_error **err);
/* Whether path still pins a network namespace (a reboot leaves the pin a
 * plain file, or removes it). */
bool cni_netns_alive(const char *path);
/* Brings "lo" up inside the namespace pinned at `netns_path` (an ioctl in a
 * short-lived thread that joins it, so no plugin binary is needed). */
int cni_loopback_up(const char *netns_path, ad_error **err);
/* A TCP connection to 127.0.0.1:port inside the namespace pinned at
 * `netns_path` (NULL: the caller's), made by a short-lived thread that joins
 * it; the socket stays in that namespace. AD_E_UNAVAILABLE when nothing
 * listens there. */
int cni_netns_connect(const char *netns_path, uint16_t port, int *ret_fd, ad_error **err);

/* Counters of one interface as /proc/<pid>/net/dev shows them for the
 * network namespace of <pid>. */
typedef struct cni_if_stats {
	char name[32];
	uint64_t rx_bytes, rx_errors, tx_bytes, tx_errors;
	uint64_t rx_packets, rx_dropped, tx_packets, tx_dropped;
} cni_if_stats;
/* Parses the text of a /proc/.../net/dev; *ret is an array of *ret_n entries
 * (free()). A line that is not "name: 16 numbers" → AD_E_INVALID. */
int cni_netdev_parse(const char *text, cni_if_stats **ret, size_t *ret_n, ad_error **err);

/* ---- network configuration ------------------------------------------------ */
typedef struct cni_opts {
	/* NULL-terminated lists; NULL → CNI_DEFAULT_CONF_DIR / CNI_DEFAULT_PLUGIN_DIRS. */
	const char *const *conf_dirs;
	const char *const *plugin_dirs;
	/* The network ("name" of the conflist) to use; NULL → the first valid
	 * *.conflist, *.conf or *.json in lexical order, as kubelet and CRI-O do. */
	const char *network_name;
	int timeout_ms; /* per plugin invocation; <= 0 → CNI_DEFAULT_TIMEOUT_MS */
	/* cni_net_load: the network (cni_net_json) to use when the conf dirs
	 * hold configs but none that loads, i.e. a bad edit: typically the last
	 * one that did. With no config at all there is no network. NULL: none. */
	const char *fallback_json;
} cni_opts;

/* A loaded network configuration list. Immutable once loaded: one cni_net may
 * serve concurrent cni_add/cni_del calls from several threads. */
typedef struct cni_net cni_net;

/* Loads the network configuration selected by `opts` (NULL → all defaults).
 * No usable config → AD_E_UNAVAILABLE with the reason. */
int cni_net_load(const cni_opts *opts, cni_net **ret_net, ad_error **err);
/* Same from JSON text (a conflist, or a single plugin .conf); `source` names it
 * in messages. opts->conf_dirs and network_name are ignored. */
int cni_net_parse(const cni_opts *opts, const char *json, const char *source, cni_net **ret_net,
		  ad_error **err);
void cni_net_free(cni_net *net);
const char *cni_net_name(const cni_net *net);
const char *cni_net_version(const cni_net *net); /* the list's cniVersion */
const char *cni_net_source(const cni_net *net);  /* the file it came from */
/* NULL when the network came from the conf dirs; when it is opts'
 * fallback_json, why the conf dirs' configs were refused (file:line). */
const char *cni_net_refused(const cni_net *net);
/* The list as JSON text, to keep beside an ADD result: cni_net_parse of it
 * gives back the same network, for a DEL after the files have changed. */
char *cni_net_json(const cni_net *net);
/* Every plugin binary of the list is present and executable in a plugin dir;
 * else AD_E_UNAVAILABLE naming the first missing one. */
int cni_net_check_plugins(const cni_net *net, ad_error **err);

/* ---- plugin operations ----------------------------------------------------- */
typedef struct cni_port_mapping {
	uint16_t host_port;
	uint16_t container_port;
	const char *protocol; /* "tcp" (NULL), "udp" or "sctp" */
	const char *host_ip;  /* NULL or "" → all addresses */
} cni_port_mapping;

typedef struct cni_pod {
	const char *container_id; /* the sandbox id: [A-Za-z0-9][A-Za-z0-9_.-]* */
	const char *netns_path;	  /* the pin; for DEL it may be gone already */
	const char *ifname;	  /* NULL → "eth0" */
	/* CNI_ARGS K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID (NULL → omitted);
	 * K8S_POD_INFRA_CONTAINER_ID is container_id. */
	const char *pod_namespace;
	const char *pod_name;
	const char *pod_uid;
	/* runtimeConfig "portMappings" for plugins with that capability (portmap).
	 * DEL needs the same mappings as ADD to remove the rules. A mapping with
	 * host_port 0 publishes nothing; container_port 0 is refused. */
	const cni_port_mapping *port_mappings;
	size_t n_port_mappings;
} cni_pod;

/* ADD: runs the list's plugins in order, each getting the previous one's
 * result as prevResult. On success *ret_result holds the final result (JSON
 * text) to keep for DEL and CHECK. If a plugin fails, DEL is run for the
 * plugins already invoked (the failing one included) so no veth, address or
 * iptables rule is left behind, and the plugin's error is returned: its "msg"
 * (and "details") naming the plugin, AD_E_INTERNAL; a missing plugin or config
 * → AD_E_UNAVAILABLE; a plugin that outruns the timeout is killed →
 * AD_E_DEADLINE. */
int cni_add(const cni_net *net, const cni_pod *pod, char **ret_result, ad_error **err);
/* DEL: runs the plugins in reverse order with `cached_result` (the ADD result;
 * NULL if unknown) as prevResult. Every plugin runs even when one fails (the
 * first error is returned). Idempotent: deleting twice, or deleting what was
 * never added, succeeds. */
int cni_del(const cni_net *net, const cni_pod *pod, const char *cached_result, ad_error **err);
/* CHECK (cniVersion >= 0.4.0, not "disableCheck"): plugins in order with the
 * cached ADD result. Older lists → AD_E_UNIMPLEMENTED; disableCheck → 0. */
int cni_check(const cni_net *net, const cni_pod *pod, const char *cached_result, ad_error **err);

/* The addresses (without prefix length) of a result's ips[] (0.3.0+) or
 * ip4/ip6 (0.1/0.2), IPv4 first, otherwise in result order. *ret_ips is a
 * NULL-terminated array (free with cni_strv_free); *ret_n may be NULL. */
int cni_result_ips(const char *result, char ***ret_ips, size_t *ret_n, ad_error **err);
void cni_strv_free(char **strv);

#endif
