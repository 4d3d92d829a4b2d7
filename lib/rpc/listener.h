/* listener.h — private to libadrpc: the server's unix and TCP listeners. */
#ifndef AGENTD_RPC_LISTENER_H
#define AGENTD_RPC_LISTENER_H

#include <sys/socket.h>

#include "rpc.h"

struct event_base;
struct event;
struct evconnlistener;

typedef struct rpc_listeners {
	struct event_base *base;
	struct evconnlistener *unix_lis, *tcp_lis;
	char *unix_path;
	int tcp_port; /* -1: none */
	bool tcp_tls;
	struct event *resume_ev; /* accepting again after EMFILE & co */
	/* An accepted socket (non-blocking, close-on-exec); tls: from the TLS listener. */
	void (*accept_fn)(int fd, const struct sockaddr *sa, bool tls, void *arg);
	void *accept_arg;
} rpc_listeners;

int listener_init(rpc_listeners *l, struct event_base *base,
		  void (*accept_fn)(int fd, const struct sockaddr *sa, bool tls, void *arg),
		  void *arg, ad_error **err);
/* Creates the parent directory (0755) and the socket (0660); replaces a
 * socket file only when nothing accepts on it. */
int listener_unix(rpc_listeners *l, const char *path, ad_error **err);
/* "host:port" or "[v6]:port" (port 0: any; see tcp_port). */
int listener_tcp(rpc_listeners *l, const char *addr, bool tls, ad_error **err);
/* A socket bound and listening already (socket activation): the unix one
 * (tcp false) or the TCP one. Owned from here on, also on failure. */
int listener_adopt(rpc_listeners *l, int fd, bool tcp, bool tls, ad_error **err);
/* Stops accepting and removes the unix socket file. */
void listener_close(rpc_listeners *l);
void listener_destroy(rpc_listeners *l);

#endif
