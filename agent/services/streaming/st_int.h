/* st_int.h — libadstreaming's private parts: the token store and the
 * session loop. The codecs are lib/httpstream's (httpstream.h). */
#ifndef AGENTD_ST_INT_H
#define AGENTD_ST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "httpstream.h"
#include "streaming.h"

/* ---- tokens --------------------------------------------------------------- */
typedef struct st_tokens st_tokens;
st_tokens *st_tokens_new(size_t max, int ttl_ms);
void st_tokens_free(st_tokens *t);
/* Takes ownership of req; *ret_token (free()). AD_E_RESOURCE when full. */
int st_tokens_add(st_tokens *t, st_request *req, char **ret_token, ad_error **err);
/* The request of a live token, removed from the store (single use); NULL if
 * unknown, used or expired. */
st_request *st_tokens_take(st_tokens *t, const char *token);
st_request *st_request_copy(const st_request *req);
void st_request_free(st_request *req);

/* ---- sessions (session.c) ------------------------------------------------- */
typedef struct st_session_env {
	const st_backend *backend;
	void *backend_ctx;
	st_tokens *tokens;
	void *tls;   /* SSL_CTX *, NULL: plain */
	int stop_fd; /* readable once the server stops */
	int idle_timeout_ms;
	int stream_timeout_ms;
} st_session_env;

/* Serves one connection to its end; closes fd. */
void st_session_run(const st_session_env *env, int fd);

#endif
