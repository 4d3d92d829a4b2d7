/* Single-use tokens for registered requests, as kubelet's request cache:
 * random, bound to one request, expiring, bounded in number. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#include "st_int.h"

typedef struct token_entry {
	char *token;
	int64_t expires; /* CLOCK_MONOTONIC ns */
	st_request *req;
} token_entry;

struct st_tokens {
	pthread_mutex_t lock;
	size_t max, n;
	int64_t ttl_ns;
	token_entry *e;
};

st_request *st_request_copy(const st_request *req)
{
	st_request *c = ad_malloc0(sizeof(*c));
	*c = *req;
	c->target = ad_strdup(req->target ? req->target : "");
	c->cmd = NULL;
	if (req->cmd) {
		size_t n = 0;
		while (req->cmd[n])
			n++;
		c->cmd = ad_malloc0((n + 1) * sizeof(char *));
		for (size_t i = 0; i < n; i++)
			c->cmd[i] = ad_strdup(req->cmd[i]);
	}
	c->ports = NULL;
	if (req->n_ports) {
		c->ports = ad_malloc0(req->n_ports * sizeof(uint16_t));
		memcpy(c->ports, req->ports, req->n_ports * sizeof(uint16_t));
	}
	return c;
}

void st_request_free(st_request *req)
{
	if (!req)
		return;
	free(req->target);
	for (size_t i = 0; req->cmd && req->cmd[i]; i++)
		free(req->cmd[i]);
	free(req->cmd);
	free(req->ports);
	free(req);
}

st_tokens *st_tokens_new(size_t max, int ttl_ms)
{
	st_tokens *t = ad_malloc0(sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	t->max = max;
	t->ttl_ns = (int64_t)ttl_ms * 1000000;
	t->e = ad_malloc0(max * sizeof(*t->e));
	return t;
}

static void drop(st_tokens *t, size_t i, bool free_req)
{
	free(t->e[i].token);
	if (free_req)
		st_request_free(t->e[i].req);
	t->e[i] = t->e[--t->n];
}

void st_tokens_free(st_tokens *t)
{
	if (!t)
		return;
	while (t->n)
		drop(t, 0, true);
	free(t->e);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static void expire(st_tokens *t, int64_t now)
{
	for (size_t i = 0; i < t->n;)
		if (t->e[i].expires <= now)
			drop(t, i, true);
		else
			i++;
}

int st_tokens_add(st_tokens *t, st_request *req, char **ret_token, ad_error **err)
{
	uint8_t raw[16];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		st_request_free(req);
		return ad_fail_errno(err, AD_E_INTERNAL, "getrandom");
	}
	pthread_mutex_lock(&t->lock);
	int64_t now = ad_monotonic_ns();
	expire(t, now);
	if (t->n == t->max) {
		pthread_mutex_unlock(&t->lock);
		st_request_free(req);
		return ad_fail(err, AD_E_RESOURCE,
			       "streaming: too many requests in flight (%zu unused tokens)",
			       t->max);
	}
	char *token = hs_base64(raw, sizeof(raw), true);
	t->e[t->n++] = (token_entry){.token = token, .expires = now + t->ttl_ns, .req = req};
	*ret_token = ad_strdup(token);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

st_request *st_tokens_take(st_tokens *t, const char *token)
{
	st_request *req = NULL;
	pthread_mutex_lock(&t->lock);
	expire(t, ad_monotonic_ns());
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->e[i].token, token))
			continue;
		req = t->e[i].req;
		drop(t, i, false);
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return req;
}
