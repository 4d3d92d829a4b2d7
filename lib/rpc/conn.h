/* conn.h — private to libadrpc: server connections, the socket and TLS I/O
 * around one rpc_core each (see core.h), on the event loop thread. */
#ifndef AGENTD_RPC_CONN_H
#define AGENTD_RPC_CONN_H

#include <openssl/ssl.h>
#include <sys/socket.h>

#include "core.h"

struct event_base;

typedef struct rpc_conn rpc_conn;

/* A server's connections and what they share. */
typedef struct rpc_conn_set {
	struct event_base *base;
	rpc_core_env *env;
	SSL_CTX *ssl_ctx; /* NULL: no TLS */
	uint8_t *rbuf;	  /* input buffer shared by all connections */
	rpc_conn *head;
	unsigned max_per_peer; /* 0: no limit */
	/* Connections closed for max_per_peer (read by the metrics thread). */
	_Atomic uint64_t refused;
	/* Runs after a connection was freed. */
	void (*closed_fn)(void *arg);
	void *closed_arg;
} rpc_conn_set;

void conn_set_init(rpc_conn_set *set, struct event_base *base, rpc_core_env *env,
		   void (*closed_fn)(void *arg), void *closed_arg);
/* The server side of mutual TLS: certificate, key, the CA that client
 * certificates must chain to, ALPN h2. Again: replaces them for new
 * connections; a file that does not load changes nothing. */
int conn_set_tls(rpc_conn_set *set, const char *cert, const char *key, const char *client_ca,
		 ad_error **err);
/* Takes over an accepted socket. */
void conn_set_accept(rpc_conn_set *set, int fd, const struct sockaddr *sa, bool tls);
/* GOAWAY on every connection; each closes once its streams are done. */
void conn_set_goaway(rpc_conn_set *set);
/* Closes every connection (their calls are cancelled). */
void conn_set_close_all(rpc_conn_set *set);
void conn_set_destroy(rpc_conn_set *set);

/* A batch of calls that workers made ready (linked by batch_next): their
 * output is queued first, then every connection concerned is written once,
 * so that the responses of one wakeup share TLS records and write()s. */
void conn_set_pump_ready(rpc_call *batch);

#endif
