/* authz.h — the one public header of libadauthz: which gRPC methods a
 * mutual-TLS client may call, decided from its certificate subject. Pure:
 * no I/O, no gRPC; the caller logs the decision and answers
 * PERMISSION_DENIED with the message.
 *
 * Roles: "admin" calls everything; "read-only" calls List*, *Status, Version,
 * *Info, the stats calls and grpc.health.v1.Health; "none" calls nothing.
 * A certificate's role: the config's mapping of its CN, else (if enabled) the
 * first OU that names a role, else the default role. */
#ifndef AGENTD_AUTHZ_H
#define AGENTD_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>

#include "base.h"

typedef enum authz_role {
	AUTHZ_ROLE_NONE = 0,
	AUTHZ_ROLE_READ_ONLY,
	AUTHZ_ROLE_ADMIN,
	_AUTHZ_ROLE_MAX,
} authz_role;

typedef struct authz_policy authz_policy;

/* cn_roles: "CN=role,CN2=role" pairs ("" for none; a CN may not hold ',' or
 * '='); role_from_ou: use the certificate's OU; default_role: for
 * certificates neither names. Bad text: AD_E_INVALID naming the entry. */
int authz_policy_new(const char *cn_roles, bool role_from_ou, const char *default_role,
		     authz_policy **ret, ad_error **err);
void authz_policy_free(authz_policy *p);

/* "admin", "read-only", "none" (else -1). */
int authz_role_parse(const char *name, authz_role *ret);
const char *authz_role_name(authz_role role);

/* The role of a client with this certificate subject (RFC 2253, as
 * rpc_call_peer_identity gives it: "CN=ops,OU=admin,O=fleet"). */
authz_role authz_role_of(const authz_policy *p, const char *subject);
/* A method ("/runtime.v1.RuntimeService/ListContainers") only reads. */
bool authz_method_reads(const char *path);
bool authz_role_allows(authz_role role, const char *path);

/* The decision for one call: 0 allowed, or -1 with AD_E_PERMISSION
 * "method M is not allowed for role R (client S)". subject NULL (no client
 * certificate: the unix socket, guarded by its mode) is allowed. *ret_role
 * (may be NULL) gets the role either way (admin for subject NULL). */
int authz_check(const authz_policy *p, const char *subject, const char *path, authz_role *ret_role,
		ad_error **err);

/* One attribute of an RFC 2253 subject, unescaped ("OU", 0: the first):
 * malloc'd, or NULL if absent. */
char *authz_subject_attr(const char *subject, const char *type, size_t index);

#endif
