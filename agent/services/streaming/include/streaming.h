/* streaming.h — the one public header of libadstreaming: kubelet-compatible
 * streaming server for CRI Exec, Attach and PortForward.
 *
 * The CRI handlers register a request (st_request_*) and hand the URL back to
 * the client (kubelet, crictl, agentctl), which then connects and speaks the
 * Kubernetes remote-command protocol (SPDY/3.1 or WebSocket) or port-forward
 * protocol to it. The server knows nothing about containers: the daemon
 * supplies an st_backend that starts processes, attaches and dials ports. */
#ifndef AGENTD_STREAMING_H
#define AGENTD_STREAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base.h"

typedef enum st_kind {
	ST_EXEC,
	ST_ATTACH,
	ST_PORTFORWARD,
} st_kind;

/* What a token stands for; owned by the server once registered. */
typedef struct st_request {
	st_kind kind;
	char *target; /* container id (exec, attach) or pod sandbox id (port forward) */
	char **cmd;   /* exec: NULL-terminated */
	bool tty, in, out, err;
	uint16_t *ports; /* port forward: the ports a WebSocket client gets */
	size_t n_ports;
} st_request;

/* A running exec or attach, as the backend hands it over. Every fd is the
 * server's to close (-1: none). */
typedef struct st_process {
	int stdin_fd;  /* written with the client's stdin; a tty's pty master */
	int stdout_fd; /* a tty's pty master (a dup: closed separately) */
	int stderr_fd;
	/* Attach: stdout_fd carries frames (1 byte stream, 1 stdout 2 stderr; 4
	 * bytes big-endian length; the bytes) and takes stdin writes itself;
	 * shutdown(SHUT_WR) on it ends the container's stdin. */
	bool framed;
	/* Readable once the process has ended (a pidfd); -1: the end is the EOF of
	 * its output. */
	int exit_fd;
	void *handle; /* the backend's */
} st_process;

/* Every callback gets the ctx given to st_server_start. */
typedef struct st_backend {
	int (*exec)(void *ctx, const st_request *req, st_process *proc, ad_error **err);
	int (*attach)(void *ctx, const st_request *req, st_process *proc, ad_error **err);
	int (*resize)(void *ctx, const st_request *req, st_process *proc, unsigned rows,
		      unsigned cols);
	/* Collects the process (killed first when abort is set: the client went
	 * away) and releases proc->handle. *exit_code: the exit code (128+signal);
	 * -1 with *err when it cannot be known. */
	int (*finish)(void *ctx, const st_request *req, st_process *proc, bool abort,
		      int *exit_code, ad_error **err);
	/* A connected TCP socket to 127.0.0.1:port in the pod's network namespace. */
	int (*dial)(void *ctx, const char *pod_id, uint16_t port, int *ret_fd, ad_error **err);
} st_backend;

typedef struct st_config {
	const char *address;  /* listen address; NULL: 127.0.0.1 */
	uint16_t port;	      /* 0: an ephemeral port */
	const char *url_host; /* host in the URLs; NULL: the bound address */
	const char *tls_cert; /* PEM; both set: https */
	const char *tls_key;
	int token_ttl_ms;      /* 0: 60 s (kubelet's) */
	int idle_timeout_ms;   /* 0: 4 h (containerd's) */
	int stream_timeout_ms; /* wait for the client's streams; 0: 30 s */
	int max_sessions;      /* concurrent connections; 0: 64 */
	int max_tokens;	       /* unused tokens held; 0: 1000 */
} st_config;

typedef struct st_server st_server;

int st_server_start(const st_config *cfg, const st_backend *backend, void *backend_ctx,
		    st_server **ret, ad_error **err);
/* Closes the listener, ends every session and waits for them. */
void st_server_stop(st_server *s);
/* SIGHUP: a new certificate (chain) and key for the sessions that start
 * from now on; running ones keep theirs. A file that does not load, or a key
 * that does not match, is refused (the error names both) and the old pair
 * stays. AD_E_PRECONDITION without TLS. */
int st_server_reload_tls(st_server *s, const char *cert_file, const char *key_file, ad_error **err);
/* "http://127.0.0.1:PORT" (https with TLS). */
const char *st_server_base_url(const st_server *s);
uint16_t st_server_port(const st_server *s);

/* Registers a request (copied) and returns its single-use URL (free()). */
int st_request_url(st_server *s, const st_request *req, char **ret_url, ad_error **err);

#endif
