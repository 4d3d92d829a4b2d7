/* Registry client: OCI distribution API v2 over libcurl.
 *
 * Each session (one pull) owns one curl multi handle and one thread that
 * drives it: every request of the pull (manifests, tokens, blobs) is an easy
 * handle handed to that loop, so all transfers share the multi handle's
 * connection pool (keep-alive, and HTTP/2 multiplexing where the registry
 * offers it). The callers (the pull's layer threads) keep the request logic
 * (auth, redirects, retries) and block until their transfer is done; a blob's
 * bytes go to its sink from the loop thread, which pauses the transfer when
 * the sink is full. The loop also enforces the stall timeout and the pull's
 * cancel hook. DNS and TLS sessions are shared across pulls through a CURLSH.
 * Redirects are followed by hand so that credentials only ever go to the
 * registry and its token realm. */
#include "store_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define MAX_REDIRECTS 5
#define MAX_SMALL_BODY (4u << 20) /* manifests, tokens, error bodies */
#define MAX_ERROR_BODY (64u << 10)
/* How often the loop looks at the cancel hook and the stall timers. */
#define LOOP_CHECK_NS (50 * 1000000LL)
#define LOOP_POLL_MS 50
#define RECV_BUFFER (256L << 10)

static const char *const ACCEPT = "Accept: application/vnd.oci.image.index.v1+json, "
				  "application/vnd.docker.distribution.manifest.list.v2+json, "
				  "application/vnd.oci.image.manifest.v1+json, "
				  "application/vnd.docker.distribution.manifest.v2+json";

typedef struct token_entry {
	char *key; /* realm + service + scope */
	char *token;
	int64_t expires_ns;
	struct token_entry *next;
} token_entry;

struct store_registry {
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t tokens_lock;
	token_entry *tokens;
};

typedef struct endpoint {
	char *base;	/* "https://registry-1.docker.io" */
	char *hostport; /* "registry-1.docker.io", "127.0.0.1:5000": certs.d name */
	char *origin;	/* scheme://host:port as the server sees it, for redirects */
	bool insecure;
	bool upstream; /* credentials of the reference's registry apply */
	/* Auth scheme learned from the last 401. */
	char *bearer;	 /* current token */
	char *basic;	 /* "user:pass" base64 */
	char *challenge; /* the WWW-Authenticate value */
} endpoint;

typedef struct xfer xfer;

/* A transfer handed to the session's loop; lives on the waiting caller's stack. */
typedef struct loop_xfer {
	CURL *h;
	xfer *x;
	bool done; /* set by the loop under loop_lock, then never touched by it */
	CURLcode result;
	struct loop_xfer *next;
} loop_xfer;

struct store_session {
	store *s;
	/* The transfer loop: one multi handle, driven by `loop_thread`. */
	CURLM *multi;
	pthread_t loop_thread;
	bool loop_started;
	pthread_mutex_t loop_lock;
	pthread_cond_t loop_cond;	/* a transfer finished, or the pull was cancelled */
	loop_xfer *pending;		/* submitted, not yet in the multi handle */
	loop_xfer *active;		/* in the multi handle: loop thread only */
	bool loop_stop, resume_paused, cancelled;
	store_cancel_fn cancel;
	void *cancel_userdata;

	store_ref ref;
	char *ref_string;
	endpoint *eps;
	size_t n_eps;
	size_t preferred; /* the endpoint that answered last */
	pthread_mutex_t lock;
	/* Credentials for the upstream registry. */
	char *username, *password, *identity_token, *registry_token;
};

/* ---- shared curl state ---- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a, void *u)
{
	(void)h;
	(void)a;
	store_registry *r = u;
	pthread_mutex_lock(&r->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *u)
{
	(void)h;
	store_registry *r = u;
	pthread_mutex_unlock(&r->share_locks[data]);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int store_registry_init(store *s, ad_error **err)
{
	pthread_once(&curl_once, curl_init_once);
	store_registry *r = ad_malloc0(sizeof(*r));
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&r->share_locks[i], NULL);
	pthread_mutex_init(&r->tokens_lock, NULL);
	r->share = curl_share_init();
	if (!r->share) {
		free(r);
		return ad_fail(err, AD_E_INTERNAL, "curl_share_init failed");
	}
	curl_share_setopt(r->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(r->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(r->share, CURLSHOPT_USERDATA, r);
	/* Not CURL_LOCK_DATA_CONNECT: connections live in each pull's multi
	 * handle (libcurl does not support sharing them between threads). */
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	s->reg = r;
	return 0;
}

void store_registry_free(store *s)
{
	store_registry *r = s->reg;
	if (!r)
		return;
	curl_share_cleanup(r->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&r->share_locks[i]);
	while (r->tokens) {
		token_entry *t = r->tokens;
		r->tokens = t->next;
		free(t->key);
		free(t->token);
		free(t);
	}
	pthread_mutex_destroy(&r->tokens_lock);
	free(r);
	s->reg = NULL;
}

/* ---- helpers ---- */

static char *b64(const char *in)
{
	size_t n = strlen(in);
	char *out = ad_malloc0(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
	return out;
}

static char *b64_decode(const char *in)
{
	size_t n = strlen(in);
	unsigned char *out = ad_malloc0(n + 4);
	int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (len < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts padding as zero bytes. */
	while (n > 0 && in[n - 1] == '=') {
		n--;
		len--;
	}
	out[len < 0 ? 0 : len] = '\0';
	return (char *)out;
}

static bool host_is_loopback(const char *hostport)
{
	char host[256];
	if (hostport[0] == '[') {
		const char *close = strchr(hostport, ']');
		if (!close || (size_t)(close - hostport - 1) >= sizeof(host))
			return false;
		memcpy(host, hostport + 1, (size_t)(close - hostport - 1));
		host[close - hostport - 1] = '\0';
	} else {
		snprintf(host, sizeof(host), "%s", hostport);
		char *colon = strchr(host, ':');
		if (colon)
			*colon = '\0';
	}
	if (strcmp(host, "localhost") == 0)
		return true;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

static const store_registry_config *registry_config(store *s, const char *host)
{
	for (size_t i = 0; i < s->n_registries; i++)
		if (strcmp(s->registries[i].host, host) == 0)
			return &s->registries[i];
	return NULL;
}

/* "scheme://host[:port]" of a URL, for same-origin checks on redirects. */
static char *url_origin(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *res = NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		for (char *c = host; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		res = ad_asprintf("%s://%s:%s", scheme, host, port);
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return res;
}

static void endpoint_add(store_session *sess, const char *base, bool insecure, bool upstream)
{
	sess->eps = ad_realloc(sess->eps, sizeof(*sess->eps) * (sess->n_eps + 1));
	endpoint *ep = &sess->eps[sess->n_eps++];
	memset(ep, 0, sizeof(*ep));
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	ep->base = ad_strndup(base, n);
	const char *h = strstr(ep->base, "://");
	h = h ? h + 3 : ep->base;
	const char *slash = strchr(h, '/');
	ep->hostport = slash ? ad_strndup(h, (size_t)(slash - h)) : ad_strdup(h);
	ep->origin = url_origin(ep->base);
	if (!ep->origin)
		ep->origin = ad_strdup(ep->base);
	ep->insecure = insecure;
	ep->upstream = upstream;
}

/* ---- credentials from an auth file ---- */

static void creds_from_entry(store_session *sess, json_t *entry)
{
	const char *auth = json_string_value(json_object_get(entry, "auth"));
	const char *user = json_string_value(json_object_get(entry, "username"));
	const char *pass = json_string_value(json_object_get(entry, "password"));
	const char *idt = json_string_value(json_object_get(entry, "identitytoken"));
	if (auth && *auth) {
		char *dec = b64_decode(auth);
		char *colon = dec ? strchr(dec, ':') : NULL;
		if (colon) {
			*colon = '\0';
			sess->username = ad_strdup(dec);
			sess->password = ad_strdup(colon + 1);
		}
		free(dec);
	} else if (user && pass) {
		sess->username = ad_strdup(user);
		sess->password = ad_strdup(pass);
	}
	if (idt && *idt)
		sess->identity_token = ad_strdup(idt);
}

static int creds_from_file(store_session *sess, const char *path, ad_error **err)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	if (!root) {
		if (errno == ENOENT)
			return 0;
		return ad_fail(err, AD_E_INVALID, "auth file %s: %s (line %d)", path, jerr.text,
			       jerr.line);
	}
	json_t *auths = json_object_get(root, "auths");
	const store_ref *r = &sess->ref;
	/* Most specific first: containers auth.json allows host/namespace keys. */
	_cleanup_free_ char *full = ad_asprintf("%s/%s", r->domain, r->path);
	json_t *entry = NULL;
	for (char *end = full + strlen(full); !entry && end > full;) {
		*end = '\0';
		entry = json_object_get(auths, full);
		char *slash = strrchr(full, '/');
		if (!slash)
			break;
		end = slash;
	}
	const char *alts[] = {"https://%s", "http://%s", "https://%s/v1/", "https://%s/v2/"};
	for (size_t i = 0; !entry && i < sizeof(alts) / sizeof(alts[0]); i++) {
		_cleanup_free_ char *k = ad_asprintf(alts[i], r->domain);
		entry = json_object_get(auths, k);
	}
	if (!entry && strcmp(r->domain, "docker.io") == 0) {
		entry = json_object_get(auths, "https://index.docker.io/v1/");
		if (!entry)
			entry = json_object_get(auths, "index.docker.io");
		if (!entry)
			entry = json_object_get(auths, "registry-1.docker.io");
	}
	if (json_is_object(entry))
		creds_from_entry(sess, entry);
	json_decref(root);
	return 0;
}

/* CRI sends every AuthConfig field, empty when unset. */
static bool filled(const char *s)
{
	return s && *s;
}

static bool has_certs_dir(store *s, const char *hostport)
{
	if (!s->certs_dir)
		return false;
	_cleanup_free_ char *dir = ad_asprintf("%s/%s", s->certs_dir, hostport);
	return access(dir, F_OK) == 0;
}

/* ---- session ---- */

static int loop_start(store_session *sess, ad_error **err);
static void loop_stop(store_session *sess);

int store_session_new(store *s, const store_ref *ref, const store_auth *auth,
		      store_cancel_fn cancel, void *cancel_userdata, store_session **ret_sess,
		      ad_error **err)
{
	store_session *sess = ad_malloc0(sizeof(*sess));
	sess->s = s;
	sess->cancel = cancel;
	sess->cancel_userdata = cancel_userdata;
	pthread_mutex_init(&sess->lock, NULL);
	pthread_mutex_init(&sess->loop_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* backoff_sleep's deadlines */
	pthread_cond_init(&sess->loop_cond, &ca);
	pthread_condattr_destroy(&ca);
	sess->ref.domain = ad_strdup(ref->domain);
	sess->ref.path = ad_strdup(ref->path);
	sess->ref.tag = ref->tag ? ad_strdup(ref->tag) : NULL;
	sess->ref.digest = ref->digest ? ad_strdup(ref->digest) : NULL;
	sess->ref_string = store_ref_string(ref);

	const store_registry_config *cfg = registry_config(s, ref->domain);
	if (cfg && cfg->mirrors)
		for (const char **m = cfg->mirrors; *m; m++)
			endpoint_add(sess, *m, cfg->insecure, false);
	const char *host =
	    strcmp(ref->domain, "docker.io") == 0 ? "registry-1.docker.io" : ref->domain;
	/* Loopback speaks plain HTTP, as docker and podman allow, unless a CA
	 * for it is configured in certs.d (then it is a TLS registry). */
	bool plain = (cfg && cfg->plain_http) ||
		     (!(cfg && cfg->insecure) && host_is_loopback(host) && !has_certs_dir(s, host));
	_cleanup_free_ char *base = ad_asprintf("%s://%s", plain ? "http" : "https", host);
	endpoint_add(sess, base, cfg && cfg->insecure, true);

	if (auth && (filled(auth->username) || filled(auth->auth) || filled(auth->identity_token) ||
		     filled(auth->registry_token))) {
		if (auth->auth && *auth->auth) {
			char *dec = b64_decode(auth->auth);
			char *colon = dec ? strchr(dec, ':') : NULL;
			if (!colon) {
				free(dec);
				store_session_free(sess);
				return ad_fail(err, AD_E_INVALID,
					       "auth for %s is not base64 of user:password",
					       ref->domain);
			}
			*colon = '\0';
			sess->username = ad_strdup(dec);
			sess->password = ad_strdup(colon + 1);
			free(dec);
		} else if (filled(auth->username)) {
			sess->username = ad_strdup(auth->username);
			sess->password = ad_strdup(auth->password ? auth->password : "");
		}
		if (auth->identity_token && *auth->identity_token)
			sess->identity_token = ad_strdup(auth->identity_token);
		if (auth->registry_token && *auth->registry_token)
			sess->registry_token = ad_strdup(auth->registry_token);
	} else if (s->auth_file && creds_from_file(sess, s->auth_file, err) < 0) {
		store_session_free(sess);
		return -1;
	}
	if (loop_start(sess, err) < 0) {
		store_session_free(sess);
		return -1;
	}
	*ret_sess = sess;
	return 0;
}

void store_session_free(store_session *sess)
{
	if (!sess)
		return;
	loop_stop(sess);
	for (size_t i = 0; i < sess->n_eps; i++) {
		endpoint *ep = &sess->eps[i];
		free(ep->base);
		free(ep->hostport);
		free(ep->origin);
		free(ep->bearer);
		free(ep->basic);
		free(ep->challenge);
	}
	free(sess->eps);
	store_ref_clear(&sess->ref);
	free(sess->ref_string);
	free(sess->username);
	free(sess->password);
	free(sess->identity_token);
	free(sess->registry_token);
	pthread_mutex_destroy(&sess->lock);
	free(sess);
}

/* ---- one HTTP exchange ---- */

struct xfer {
	CURL *h;
	long status;
	/* Body: 2xx goes to sink (or small), others to errbody. */
	store_sink_fn sink;
	void *sink_data;
	ad_error *sink_err;
	uint64_t skip; /* bytes to drop: a 200 answered our Range */
	uint64_t delivered;
	char *small;
	size_t small_len, small_max;
	char *errbody;
	size_t errbody_len;
	char *www_auth, *content_type, *docker_digest, *location;
	bool status_checked, range_request;
	/* A request other than GET (a push's): its method, headers and body. */
	const char *method; /* "HEAD", "POST", "PUT", "PATCH"; NULL: GET */
	const char *const *headers;
	const store_upload *upload;
	uint64_t upload_pos;
	/* Loop thread only: the sink was full (the transfer is paused), and the
	 * stall timer: no byte for the session's stall timeout since last_byte_ns. */
	bool paused, stalled;
	int64_t last_byte_ns;
};

static char *header_value(const char *line, size_t n, const char *name)
{
	size_t nl = strlen(name);
	if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return NULL;
	const char *v = line + nl + 1;
	const char *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	return ad_strndup(v, (size_t)(end - v));
}

static size_t on_header(char *buf, size_t size, size_t n, void *u)
{
	xfer *x = u;
	size_t len = size * n;
	x->last_byte_ns = ad_monotonic_ns();
	/* A new status line (after a 100 or a redirect) resets what we saw. */
	if (len > 5 && strncmp(buf, "HTTP/", 5) == 0) {
		free(x->www_auth);
		free(x->content_type);
		free(x->docker_digest);
		free(x->location);
		x->www_auth = x->content_type = x->docker_digest = x->location = NULL;
		return len;
	}
	char *v;
	if ((v = header_value(buf, len, "WWW-Authenticate"))) {
		free(x->www_auth);
		x->www_auth = v;
	} else if ((v = header_value(buf, len, "Content-Type"))) {
		free(x->content_type);
		x->content_type = v;
	} else if ((v = header_value(buf, len, "Docker-Content-Digest"))) {
		free(x->docker_digest);
		x->docker_digest = v;
	} else if ((v = header_value(buf, len, "Location"))) {
		free(x->location);
		x->location = v;
	}
	return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *u)
{
	xfer *x = u;
	size_t len = size * n;
	x->last_byte_ns = ad_monotonic_ns();
	if (!x->status_checked) {
		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
		x->status_checked = true;
		if (x->status == 200 && x->range_request)
			x->skip = x->delivered; /* server ignored Range: drop what we have */
	}
	if (x->status < 200 || x->status >= 300) {
		size_t room = MAX_ERROR_BODY - x->errbody_len;
		size_t take = len < room ? len : room;
		x->errbody = ad_realloc(x->errbody, x->errbody_len + take + 1);
		memcpy(x->errbody + x->errbody_len, buf, take);
		x->errbody_len += take;
		x->errbody[x->errbody_len] = '\0';
		return len;
	}
	const char *p = buf;
	size_t left = len;
	/* Only consumed once the sink took the rest: a paused chunk comes again. */
	size_t skip = x->skip < left ? (size_t)x->skip : left;
	p += skip;
	left -= skip;
	if (!left) {
		x->skip -= skip;
		return len;
	}
	if (x->sink) {
		int r = x->sink(x->sink_data, p, left, &x->sink_err);
		if (r < 0)
			return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
		if (r > 0) {
			x->paused = true;
			return CURL_WRITEFUNC_PAUSE;
		}
		x->skip -= skip;
		x->delivered += left;
		return len;
	}
	x->skip -= skip;
	if (x->small_len + left > x->small_max)
		return 0;
	x->small = ad_realloc(x->small, x->small_len + left + 1);
	memcpy(x->small + x->small_len, p, left);
	x->small_len += left;
	x->small[x->small_len] = '\0';
	return len;
}

/* The request body of an upload, from memory or a file region; restarts at
 * each attempt. */
static size_t on_read(char *buf, size_t size, size_t n, void *u)
{
	xfer *x = u;
	const store_upload *up = x->upload;
	uint64_t left = up->length - x->upload_pos;
	size_t want = size * n < left ? size * n : (size_t)left;
	if (!want)
		return 0;
	if (up->data) {
		memcpy(buf, (const char *)up->data + x->upload_pos, want);
	} else {
		ssize_t got;
		do
			got = pread(up->fd, buf, want, up->offset + (off_t)x->upload_pos);
		while (got < 0 && errno == EINTR);
		if (got <= 0)
			return CURL_READFUNC_ABORT; /* the blob changed under us */
		want = (size_t)got;
	}
	x->upload_pos += want;
	x->last_byte_ns = ad_monotonic_ns();
	return want;
}

static void xfer_reset_response(xfer *x)
{
	free(x->www_auth);
	free(x->content_type);
	free(x->docker_digest);
	free(x->location);
	free(x->errbody);
	x->www_auth = x->content_type = x->docker_digest = x->location = NULL;
	x->upload_pos = 0;
	x->errbody = NULL;
	x->errbody_len = 0;
	x->status = 0;
	x->status_checked = false;
	x->skip = 0;
	if (!x->sink) {
		free(x->small);
		x->small = NULL;
		x->small_len = 0;
	}
}

static void xfer_free(xfer *x)
{
	xfer_reset_response(x);
	free(x->small);
	ad_error_free(&x->sink_err);
}

static CURLcode ssl_ctx_cb(CURL *h, void *sslctx, void *u)
{
	(void)h;
	const char *dir = u;
	X509_STORE *st = SSL_CTX_get_cert_store((SSL_CTX *)sslctx);
	_cleanup_closedir_ DIR *d = ad_opendir_at(AT_FDCWD, dir, 0);
	struct dirent *e;
	while (d && (e = ad_readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n > 4 && strcmp(e->d_name + n - 4, ".crt") == 0) {
			_cleanup_free_ char *p = ad_asprintf("%s/%s", dir, e->d_name);
			X509_STORE_load_file(st, p);
		}
	}
	return CURLE_OK;
}

typedef struct tls_files {
	char *dir; /* certs.d/<host:port> when it exists */
	char *cert, *key;
} tls_files;

static void tls_files_find(store *s, const endpoint *ep, tls_files *t)
{
	memset(t, 0, sizeof(*t));
	if (!s->certs_dir)
		return;
	_cleanup_free_ char *dir = ad_asprintf("%s/%s", s->certs_dir, ep->hostport);
	_cleanup_closedir_ DIR *d = ad_opendir_at(AT_FDCWD, dir, 0);
	if (!d)
		return;
	struct dirent *e;
	while ((e = ad_readdir(d))) {
		size_t n = strlen(e->d_name);
		if (!t->cert && n > 5 && strcmp(e->d_name + n - 5, ".cert") == 0) {
			_cleanup_free_ char *key =
			    ad_asprintf("%s/%.*s.key", dir, (int)(n - 5), e->d_name);
			if (access(key, R_OK) == 0) {
				t->cert = ad_asprintf("%s/%s", dir, e->d_name);
				t->key = ad_steal_ptr(key);
			}
		}
	}
	t->dir = ad_steal_ptr(dir);
}

static void tls_files_clear(tls_files *t)
{
	free(t->dir);
	free(t->cert);
	free(t->key);
}

/* ---- the session's transfer loop ---- */

/* Loop thread: takes `t` out of the multi handle and hands it back to its caller. */
static int fail_cancelled(store_session *sess, ad_error **err)
{
	return ad_fail(err, AD_E_CANCELLED, "pull of %s cancelled", sess->ref_string);
}

static void loop_finish(store_session *sess, loop_xfer *t, CURLcode result)
{
	curl_multi_remove_handle(sess->multi, t->h);
	for (loop_xfer **p = &sess->active; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			break;
		}
	}
	pthread_mutex_lock(&sess->loop_lock);
	t->result = result;
	t->done = true;
	pthread_cond_broadcast(&sess->loop_cond);
	pthread_mutex_unlock(&sess->loop_lock);
}

/* Loop thread: the cancel hook and the stall timers, every LOOP_CHECK_NS. */
static void loop_check(store_session *sess, int64_t now)
{
	bool cancelled = sess->cancelled; /* only the loop thread writes it */
	if (!cancelled && sess->cancel && sess->cancel(sess->cancel_userdata)) {
		pthread_mutex_lock(&sess->loop_lock);
		sess->cancelled = cancelled = true;
		pthread_cond_broadcast(&sess->loop_cond); /* wakes backoff sleeps */
		pthread_mutex_unlock(&sess->loop_lock);
	}
	int64_t stall_ns = (int64_t)sess->s->stall_timeout_s * 1000000000LL;
	for (loop_xfer *t = sess->active, *next; t; t = next) {
		next = t->next;
		/* The stall timeout counts from the last byte, not an average speed
		 * (curl's LOW_SPEED_* lags by its averaging window); a transfer we
		 * paused ourselves is not stalled. */
		if (cancelled) {
			loop_finish(sess, t, CURLE_ABORTED_BY_CALLBACK);
		} else if (!t->x->paused && now - t->x->last_byte_ns > stall_ns) {
			t->x->stalled = true;
			loop_finish(sess, t, CURLE_OPERATION_TIMEDOUT);
		}
	}
}

static void *loop_main(void *u)
{
	store_session *sess = u;
	int64_t next_check = 0;
	for (;;) {
		pthread_mutex_lock(&sess->loop_lock);
		bool stop = sess->loop_stop, resume = sess->resume_paused;
		bool cancelled = sess->cancelled;
		loop_xfer *incoming = sess->pending;
		sess->pending = NULL;
		sess->resume_paused = false;
		pthread_mutex_unlock(&sess->loop_lock);
		if (stop)
			break;
		for (loop_xfer *t = incoming, *next; t; t = next) {
			next = t->next;
			t->next = sess->active;
			sess->active = t;
			t->x->paused = t->x->stalled = false;
			t->x->last_byte_ns = ad_monotonic_ns();
			CURLMcode mc = curl_multi_add_handle(sess->multi, t->h);
			if (cancelled || mc != CURLM_OK)
				loop_finish(sess, t,
					    cancelled ? CURLE_ABORTED_BY_CALLBACK : CURLE_OUT_OF_MEMORY);
		}
		if (resume) {
			for (loop_xfer *t = sess->active; t; t = t->next) {
				if (!t->x->paused)
					continue;
				t->x->paused = false;
				t->x->last_byte_ns = ad_monotonic_ns();
				/* Redelivers the held chunk now; the sink may pause again. */
				curl_easy_pause(t->h, CURLPAUSE_CONT);
			}
		}
		int64_t now = ad_monotonic_ns();
		if (now >= next_check) {
			next_check = now + LOOP_CHECK_NS;
			loop_check(sess, now);
		}
		int running = 0;
		curl_multi_perform(sess->multi, &running);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(sess->multi, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			loop_xfer *t = NULL;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
			CURLcode result = msg->data.result; /* msg dies with the removal */
			loop_finish(sess, t, result);
		}
		curl_multi_poll(sess->multi, NULL, 0, LOOP_POLL_MS, NULL);
	}
	return NULL;
}

/* Runs the configured easy handle on the session's loop and waits for it. */
static CURLcode loop_run(store_session *sess, CURL *h, xfer *x)
{
	loop_xfer t = {.h = h, .x = x};
	curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)&t);
	pthread_mutex_lock(&sess->loop_lock);
	if (sess->cancelled) {
		pthread_mutex_unlock(&sess->loop_lock);
		return CURLE_ABORTED_BY_CALLBACK;
	}
	loop_xfer **tail = &sess->pending;
	while (*tail)
		tail = &(*tail)->next;
	*tail = &t;
	pthread_mutex_unlock(&sess->loop_lock);
	curl_multi_wakeup(sess->multi);
	pthread_mutex_lock(&sess->loop_lock);
	while (!t.done)
		pthread_cond_wait(&sess->loop_cond, &sess->loop_lock);
	pthread_mutex_unlock(&sess->loop_lock);
	return t.result;
}

void store_session_resume(store_session *sess)
{
	pthread_mutex_lock(&sess->loop_lock);
	sess->resume_paused = true;
	pthread_mutex_unlock(&sess->loop_lock);
	curl_multi_wakeup(sess->multi);
}

bool store_session_cancelled(store_session *sess)
{
	pthread_mutex_lock(&sess->loop_lock);
	bool c = sess->cancelled;
	pthread_mutex_unlock(&sess->loop_lock);
	return c;
}

/* Sleeps for a retry's backoff; false if the pull was cancelled meanwhile. */
static bool backoff_sleep(store_session *sess, unsigned ms)
{
	struct timespec until = ad_monotonic_after_ms(ms);
	pthread_mutex_lock(&sess->loop_lock);
	while (!sess->cancelled &&
	       pthread_cond_timedwait(&sess->loop_cond, &sess->loop_lock, &until) != ETIMEDOUT)
		;
	bool ok = !sess->cancelled;
	pthread_mutex_unlock(&sess->loop_lock);
	return ok;
}

static int loop_start(store_session *sess, ad_error **err)
{
	sess->multi = curl_multi_init();
	if (!sess->multi)
		return ad_fail(err, AD_E_INTERNAL, "curl_multi_init failed");
	curl_multi_setopt(sess->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	int e = pthread_create(&sess->loop_thread, NULL, loop_main, sess);
	if (e != 0)
		return ad_error_make(err, AD_E_RESOURCE, e, "cannot start the transfer thread");
	sess->loop_started = true;
	return 0;
}

/* No transfer is outstanding: every caller of loop_run has returned. */
static void loop_stop(store_session *sess)
{
	if (sess->loop_started) {
		pthread_mutex_lock(&sess->loop_lock);
		sess->loop_stop = true;
		pthread_mutex_unlock(&sess->loop_lock);
		curl_multi_wakeup(sess->multi);
		pthread_join(sess->loop_thread, NULL);
	}
	if (sess->multi)
		curl_multi_cleanup(sess->multi);
	pthread_mutex_destroy(&sess->loop_lock);
	pthread_cond_destroy(&sess->loop_cond);
}

/* Performs one request to `url` following redirects by hand; `auth_header`
 * goes only to `origin`. Returns the CURLcode; x->status holds the answer. */
static CURLcode perform(store_session *sess, const endpoint *ep, const char *url,
			const char *auth_header, const char *extra_header, xfer *x,
			const char *post_body)
{
	store *s = sess->s;
	_cleanup_free_ char *cur = ad_strdup(url);
	tls_files tls;
	tls_files_find(s, ep, &tls);
	CURLcode rc = CURLE_OK;
	for (int hop = 0; hop <= MAX_REDIRECTS; hop++) {
		CURL *h = curl_easy_init();
		if (!h) {
			rc = CURLE_OUT_OF_MEMORY;
			break;
		}
		x->h = h;
		xfer_reset_response(x);
		_cleanup_free_ char *origin = url_origin(cur);
		bool same = origin && ep->origin && strcmp(origin, ep->origin) == 0;
		struct curl_slist *hdrs = NULL;
		if (!post_body && !x->upload)
			hdrs = curl_slist_append(hdrs, ACCEPT);
		for (const char *const *hh = x->headers; hh && *hh; hh++)
			hdrs = curl_slist_append(hdrs, *hh);
		if (auth_header && same)
			hdrs = curl_slist_append(hdrs, auth_header);
		if (extra_header)
			hdrs = curl_slist_append(hdrs, extra_header);
		curl_easy_setopt(h, CURLOPT_URL, cur);
		curl_easy_setopt(h, CURLOPT_SHARE, s->reg->share);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_USERAGENT, "agentd/" AGENTD_VERSION);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)s->stall_timeout_s);
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, RECV_BUFFER);
		/* A second transfer to an HTTP/2 server waits for the first one's
		 * connection to multiplex on it rather than opening its own. */
		if (strncmp(cur, "https:", 6) == 0)
			curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
		if (post_body) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, post_body);
		}
		if (x->method && strcmp(x->method, "HEAD") == 0) {
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		} else if (x->upload) {
			/* Uploads go without "Expect: 100-continue" (headers). */
			curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, x);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->upload->length);
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, x->method);
		} else if (x->method && strcmp(x->method, "POST") == 0) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
		} else if (x->method) {
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, x->method);
		}
		if (same && ep->insecure) {
			curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
			curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
		}
		if (same && tls.dir) {
			curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
			curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, tls.dir);
			if (tls.cert) {
				curl_easy_setopt(h, CURLOPT_SSLCERT, tls.cert);
				curl_easy_setopt(h, CURLOPT_SSLKEY, tls.key);
			}
		}
		rc = loop_run(sess, h, x);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
		char *loc = NULL;
		_cleanup_free_ char *next = NULL;
		if (rc == CURLE_OK && x->status >= 300 && x->status < 400 &&
		    curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc)
			next = ad_strdup(loc);
		curl_easy_cleanup(h);
		curl_slist_free_all(hdrs);
		x->h = NULL;
		if (!next)
			break;
		free(cur);
		cur = ad_steal_ptr(next);
		if (hop == MAX_REDIRECTS)
			rc = CURLE_TOO_MANY_REDIRECTS;
	}
	tls_files_clear(&tls);
	return rc;
}

/* The registry's own words from an error body: {"errors":[{"code","message"}]}. */
static char *registry_message(const xfer *x)
{
	if (!x->errbody || !*x->errbody)
		return ad_asprintf("HTTP %ld", x->status);
	json_t *root = json_loads(x->errbody, 0, NULL);
	json_t *e0 = json_array_get(json_object_get(root, "errors"), 0);
	const char *code = json_string_value(json_object_get(e0, "code"));
	const char *msg = json_string_value(json_object_get(e0, "message"));
	char *res;
	if (code || msg)
		res = ad_asprintf("%s%s%s", code ? code : "", code && msg ? ": " : "",
				  msg ? msg : "");
	else {
		size_t n = strnlen(x->errbody, 200);
		while (n > 0 && isspace((unsigned char)x->errbody[n - 1]))
			n--;
		res = ad_asprintf("HTTP %ld: %.*s", x->status, (int)n, x->errbody);
	}
	json_decref(root);
	return res;
}

/* ---- token auth (distribution docs/spec/auth/token.md) ---- */

/* Parses `Bearer realm="..",service="..",scope=".."` into its parameters. */
static char *challenge_param(const char *ch, const char *name)
{
	size_t nl = strlen(name);
	const char *p = ch;
	while ((p = strcasestr(p, name))) {
		bool boundary = p == ch || p[-1] == ' ' || p[-1] == ',';
		const char *q = p + nl;
		while (*q == ' ')
			q++;
		if (!boundary || *q != '=') {
			p += nl;
			continue;
		}
		q++;
		while (*q == ' ')
			q++;
		if (*q == '"') {
			const char *end = strchr(q + 1, '"');
			return end ? ad_strndup(q + 1, (size_t)(end - q - 1)) : NULL;
		}
		size_t n = strcspn(q, ", ");
		return ad_strndup(q, n);
	}
	return NULL;
}

/* A cached token for key, dropping those expired or rejected on the way. */
static char *cached_token(store_registry *reg, const char *key, const char *rejected,
			  int64_t now)
{
	char *found = NULL;
	pthread_mutex_lock(&reg->tokens_lock);
	for (token_entry **tp = &reg->tokens; *tp;) {
		token_entry *t = *tp;
		/* Expired, or refused by the registry before its time: fetch anew. */
		if (t->expires_ns <= now || (rejected && strcmp(t->token, rejected) == 0)) {
			*tp = t->next;
			free(t->key);
			free(t->token);
			free(t);
			continue;
		}
		tp = &t->next;
		if (strcmp(t->key, key) == 0) {
			found = ad_strdup(t->token);
			break;
		}
	}
	pthread_mutex_unlock(&reg->tokens_lock);
	return found;
}

static void cache_token(store_registry *reg, const char *key, const char *token,
			int64_t expires_ns)
{
	token_entry *t = ad_malloc0(sizeof(*t));
	t->key = ad_strdup(key);
	t->token = ad_strdup(token);
	t->expires_ns = expires_ns;
	pthread_mutex_lock(&reg->tokens_lock);
	t->next = reg->tokens;
	reg->tokens = t;
	pthread_mutex_unlock(&reg->tokens_lock);
}

/* The token request: the realm's URL with service and scope as its query,
 * or, with an identity token, an OAuth2 refresh-token grant as *ret_post. */
static char *token_request_url(const store_session *sess, const char *realm, const char *service,
			       const char *scope, bool creds, char **ret_post)
{
	CURLU *u = curl_url();
	curl_url_set(u, CURLUPART_URL, realm, 0);
	char *esc_scope = curl_easy_escape(NULL, scope, 0);
	char *esc_service = service ? curl_easy_escape(NULL, service, 0) : NULL;
	*ret_post = NULL;
	if (creds && sess->identity_token) {
		/* The identity token stands for the password. */
		char *esc_rt = curl_easy_escape(NULL, sess->identity_token, 0);
		*ret_post = ad_asprintf("grant_type=refresh_token&client_id=agentd&refresh_token=%s"
					"&scope=%s%s%s",
					esc_rt, esc_scope, esc_service ? "&service=" : "",
					esc_service ? esc_service : "");
		curl_free(esc_rt);
	} else {
		if (esc_service) {
			_cleanup_free_ char *q_service = ad_asprintf("service=%s", esc_service);
			curl_url_set(u, CURLUPART_QUERY, q_service, CURLU_APPENDQUERY);
		}
		_cleanup_free_ char *q_scope = ad_asprintf("scope=%s", esc_scope);
		curl_url_set(u, CURLUPART_QUERY, q_scope, CURLU_APPENDQUERY);
	}
	curl_free(esc_scope);
	curl_free(esc_service);
	char *url = NULL;
	curl_url_get(u, CURLUPART_URL, &url, 0);
	curl_url_cleanup(u);
	return url;
}

/* The token and its lifetime from the token server's answer. */
static int token_from_response(const endpoint *ep, const char *realm, CURLcode rc, xfer *x,
			       store_session *sess, char **ret_token, json_int_t *ret_expires_s,
			       ad_error **err)
{
	if (rc == CURLE_ABORTED_BY_CALLBACK)
		return fail_cancelled(sess, err);
	if (rc != CURLE_OK)
		return ad_fail(err, AD_E_UNAVAILABLE, "token server %s for %s unreachable: %s",
			       realm, ep->hostport, curl_easy_strerror(rc));
	if (x->status == 401 || x->status == 403) {
		_cleanup_free_ char *m = registry_message(x);
		return ad_fail(err, x->status == 401 ? AD_E_UNAUTHENTICATED : AD_E_PERMISSION,
			       "registry %s: token request refused: %s", ep->hostport, m);
	}
	if (x->status != 200) {
		_cleanup_free_ char *m = registry_message(x);
		return ad_fail(err, AD_E_UNAVAILABLE, "registry %s: token request failed: %s",
			       ep->hostport, m);
	}
	json_t *root = json_loads(x->small ? x->small : "", 0, NULL);
	const char *tok = json_string_value(json_object_get(root, "token"));
	if (!tok)
		tok = json_string_value(json_object_get(root, "access_token"));
	json_int_t expires = json_integer_value(json_object_get(root, "expires_in"));
	*ret_token = tok ? ad_strdup(tok) : NULL;
	*ret_expires_s = expires < 60 ? 60 : expires; /* the spec's default and minimum */
	json_decref(root);
	if (!*ret_token)
		return ad_fail(err, AD_E_UNAVAILABLE, "registry %s: token response without a token",
			       ep->hostport);
	return 0;
}

static int fetch_token(store_session *sess, const endpoint *ep, const char *challenge,
		       const char *rejected, char **ret_token, ad_error **err)
{
	store *s = sess->s;
	_cleanup_free_ char *realm = challenge_param(challenge, "realm");
	_cleanup_free_ char *service = challenge_param(challenge, "service");
	_cleanup_free_ char *scope = challenge_param(challenge, "scope");
	if (!realm)
		return ad_fail(err, AD_E_UNAVAILABLE,
			       "registry %s: Bearer challenge without a realm", ep->hostport);
	if (!scope)
		scope = ad_asprintf("repository:%s:pull", sess->ref.path);
	bool creds = ep->upstream;
	_cleanup_free_ char *key = ad_asprintf("%s|%s|%s|%s", realm, service ? service : "", scope,
					       creds && sess->username ? sess->username : "");
	int64_t now = ad_monotonic_ns();
	if ((*ret_token = cached_token(s->reg, key, rejected, now)))
		return 0;

	_cleanup_free_ char *post = NULL;
	char *url = token_request_url(sess, realm, service, scope, creds, &post);
	if (!url)
		return ad_fail(err, AD_E_UNAVAILABLE, "registry %s: bad token realm %s",
			       ep->hostport, realm);
	/* The realm is the one other host that may see the credentials. */
	endpoint realm_ep = {0};
	realm_ep.origin = url_origin(url);
	realm_ep.hostport = ad_strdup(ep->hostport);
	realm_ep.insecure = ep->insecure;
	_cleanup_free_ char *auth_header = NULL;
	if (creds && sess->username && !sess->identity_token) {
		_cleanup_free_ char *up = ad_asprintf("%s:%s", sess->username, sess->password);
		_cleanup_free_ char *enc = b64(up);
		auth_header = ad_asprintf("Authorization: Basic %s", enc);
	}
	xfer x = {.small_max = MAX_SMALL_BODY};
	CURLcode rc = perform(sess, &realm_ep, url, auth_header, NULL, &x, post);
	curl_free(url);
	free(realm_ep.origin);
	free(realm_ep.hostport);
	json_int_t expires_s = 0;
	int r = token_from_response(ep, realm, rc, &x, sess, ret_token, &expires_s, err);
	xfer_free(&x);
	/* Refresh a little early so a token never expires mid-request. */
	if (r == 0)
		cache_token(s->reg, key, *ret_token, now + (int64_t)(expires_s - 10) * 1000000000LL);
	return r;
}

/* Turns a 401 challenge into credentials for the next attempt. */
static int answer_challenge(store_session *sess, endpoint *ep, const char *challenge,
			    const char *rejected, ad_error **err)
{
	if (strncasecmp(challenge, "Bearer", 6) == 0) {
		char *tok = NULL;
		if (ep->upstream && sess->registry_token) {
			tok = ad_strdup(sess->registry_token);
		} else if (fetch_token(sess, ep, challenge, rejected, &tok, err) < 0) {
			return -1;
		}
		free(ep->bearer);
		ep->bearer = tok;
		free(ep->challenge);
		ep->challenge = ad_strdup(challenge);
		return 0;
	}
	if (strncasecmp(challenge, "Basic", 5) == 0) {
		if (!ep->upstream || !sess->username)
			return ad_fail(err, AD_E_UNAUTHENTICATED,
				       "registry %s requires credentials for %s", ep->hostport,
				       sess->ref_string);
		_cleanup_free_ char *up = ad_asprintf("%s:%s", sess->username, sess->password);
		free(ep->basic);
		ep->basic = b64(up);
		return 0;
	}
	return ad_fail(err, AD_E_UNAUTHENTICATED, "registry %s: unsupported auth challenge \"%s\"",
		       ep->hostport, challenge);
}

static bool transient_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

/* The Authorization header the endpoint's last challenge earned (NULL:
 * none yet); *ret_bearer: the token used, to drop it if it is refused. */
static char *endpoint_auth_header(store_session *sess, const endpoint *ep, char **ret_bearer)
{
	char *h = NULL;
	pthread_mutex_lock(&sess->lock);
	if (ep->bearer) {
		h = ad_asprintf("Authorization: Bearer %s", ep->bearer);
		*ret_bearer = ad_strdup(ep->bearer);
	} else if (ep->basic) {
		h = ad_asprintf("Authorization: Basic %s", ep->basic);
	}
	pthread_mutex_unlock(&sess->lock);
	return h;
}

typedef enum what { WHAT_MANIFEST, WHAT_BLOB } what;

/* One request against one endpoint, with auth, retries and (for blobs) resume. */
static int request_ep(store_session *sess, endpoint *ep, what kind, const char *name, xfer *x,
		      ad_error **err)
{
	store *s = sess->s;
	_cleanup_free_ char *url = ad_asprintf("%s/v2/%s/%s/%s", ep->base, sess->ref.path,
					       kind == WHAT_MANIFEST ? "manifests" : "blobs", name);
	bool auth_retried = false;
	unsigned delay = s->backoff_ms;
	for (unsigned attempt = 0;; attempt++) {
		_cleanup_free_ char *range = NULL, *used_bearer = NULL;
		_cleanup_free_ char *auth_header = endpoint_auth_header(sess, ep, &used_bearer);
		x->range_request = x->sink && x->delivered > 0;
		if (x->range_request)
			range = ad_asprintf("Range: bytes=%llu-", (unsigned long long)x->delivered);
		CURLcode rc = perform(sess, ep, url, auth_header, range, x, NULL);
		if (x->sink_err) {
			*err = ad_steal_ptr(x->sink_err);
			return -1;
		}
		bool retry = false;
		if (rc == CURLE_OK && x->status == 401 && x->www_auth && !auth_retried) {
			auth_retried = true;
			pthread_mutex_lock(&sess->lock);
			int r = answer_challenge(sess, ep, x->www_auth, used_bearer, err);
			pthread_mutex_unlock(&sess->lock);
			if (r < 0)
				return -1;
			continue;
		}
		if (rc == CURLE_ABORTED_BY_CALLBACK)
			return fail_cancelled(sess, err);
		if (rc != CURLE_OK) {
			if (rc == CURLE_OPERATION_TIMEDOUT && attempt >= s->retries)
				return ad_fail(err, AD_E_UNAVAILABLE,
					       "registry %s: no data for %u s (stalled)",
					       ep->hostport, s->stall_timeout_s);
			if (!transient_curl(rc) || attempt >= s->retries)
				return ad_fail(err, AD_E_UNAVAILABLE, "registry %s unreachable: %s",
					       ep->hostport, curl_easy_strerror(rc));
			retry = true;
		} else if (x->status >= 500 || x->status == 429) {
			if (attempt >= s->retries) {
				_cleanup_free_ char *m = registry_message(x);
				return ad_fail(err, AD_E_UNAVAILABLE, "registry %s: %s",
					       ep->hostport, m);
			}
			retry = true;
		} else if (x->status == 401 || x->status == 403) {
			_cleanup_free_ char *m = registry_message(x);
			return ad_fail(
			    err, x->status == 401 ? AD_E_UNAUTHENTICATED : AD_E_PERMISSION,
			    "registry %s denied %s: %s", ep->hostport, sess->ref_string, m);
		} else if (x->status == 404) {
			_cleanup_free_ char *m = registry_message(x);
			if (kind == WHAT_MANIFEST)
				return ad_fail(err, AD_E_NOT_FOUND, "image %s not found: %s",
					       sess->ref_string, m);
			return ad_fail(err, AD_E_NOT_FOUND, "image %s: blob %s not found: %s",
				       sess->ref_string, name, m);
		} else if (x->status < 200 || x->status >= 300) {
			_cleanup_free_ char *m = registry_message(x);
			return ad_fail(err, AD_E_UNAVAILABLE, "registry %s: %s: %s", ep->hostport,
				       url, m);
		}
		if (!retry)
			return 0;
		if (attempt >= s->retries)
			return ad_fail(err, AD_E_UNAVAILABLE,
				       "registry %s: giving up after %u attempts", ep->hostport,
				       attempt + 1);
		if (!backoff_sleep(sess, delay))
			return fail_cancelled(sess, err);
		delay *= 2;
	}
}

/* Tries the preferred endpoint first, then the others in order (mirrors before
 * the upstream). Data already streamed cannot be taken back, so a blob that
 * failed midway is not retried elsewhere. */
static int request(store_session *sess, what kind, const char *name, xfer *x, ad_error **err)
{
	pthread_mutex_lock(&sess->lock);
	size_t first = sess->preferred;
	pthread_mutex_unlock(&sess->lock);
	ad_error *last = NULL;
	for (size_t k = 0; k < sess->n_eps; k++) {
		size_t i = k == 0 ? first : (k <= first ? k - 1 : k);
		ad_error *e = NULL;
		if (request_ep(sess, &sess->eps[i], kind, name, x, &e) == 0) {
			ad_error_free(&last);
			pthread_mutex_lock(&sess->lock);
			sess->preferred = i;
			pthread_mutex_unlock(&sess->lock);
			return 0;
		}
		ad_error_free(&last);
		last = e;
		if (e->code == AD_E_DATA_LOSS || e->code == AD_E_RESOURCE ||
		    e->code == AD_E_CANCELLED)
			break;
	}
	*err = last;
	return -1;
}

int store_session_get_manifest(store_session *sess, const char *tag_or_digest, char **ret_body,
			       size_t *ret_len, char **ret_media_type, char **ret_digest,
			       ad_error **err)
{
	xfer x = {.small_max = MAX_SMALL_BODY};
	if (request(sess, WHAT_MANIFEST, tag_or_digest, &x, err) < 0) {
		xfer_free(&x);
		return -1;
	}
	*ret_body = x.small ? ad_steal_ptr(x.small) : ad_strdup("");
	*ret_len = x.small_len;
	if (ret_media_type) {
		char *ct = x.content_type ? ad_strdup(x.content_type) : ad_strdup("");
		ct[strcspn(ct, ";")] = '\0';
		*ret_media_type = ct;
	}
	if (ret_digest)
		*ret_digest = x.docker_digest ? ad_strdup(x.docker_digest) : NULL;
	xfer_free(&x);
	return 0;
}

int store_session_get_blob(store_session *sess, const char *digest, uint64_t size,
			   store_sink_fn sink, void *userdata, ad_error **err)
{
	(void)size;
	xfer x = {.sink = sink, .sink_data = userdata};
	int r = request(sess, WHAT_BLOB, digest, &x, err);
	xfer_free(&x);
	return r;
}

/* ---- requests of a push ---- */

void store_reply_clear(store_reply *r)
{
	free(r->location);
	free(r->digest);
	free(r->message);
	memset(r, 0, sizeof(*r));
}

static endpoint *upstream_endpoint(store_session *sess)
{
	for (size_t i = 0; i < sess->n_eps; i++)
		if (sess->eps[i].upstream)
			return &sess->eps[i];
	return &sess->eps[sess->n_eps - 1];
}

int store_session_send(store_session *sess, const char *method, const char *target,
		       const char *const *headers, const store_upload *body, store_reply *ret,
		       ad_error **err)
{
	store *s = sess->s;
	endpoint *ep = upstream_endpoint(sess);
	_cleanup_free_ char *url =
	    target[0] == '/' ? ad_asprintf("%s%s", ep->base, target) : ad_strdup(target);
	bool may_retry = strcmp(method, "PATCH") != 0;
	bool auth_retried = false;
	unsigned delay = s->backoff_ms;
	memset(ret, 0, sizeof(*ret));
	xfer x = {.small_max = MAX_SMALL_BODY, .method = method, .headers = headers,
		  .upload = body};
	int r = -1;
	for (unsigned attempt = 0;; attempt++) {
		_cleanup_free_ char *used_bearer = NULL;
		_cleanup_free_ char *auth_header = endpoint_auth_header(sess, ep, &used_bearer);
		CURLcode rc = perform(sess, ep, url, auth_header, NULL, &x, NULL);
		if (rc == CURLE_OK && x.status == 401 && x.www_auth && !auth_retried) {
			auth_retried = true;
			pthread_mutex_lock(&sess->lock);
			int ar = answer_challenge(sess, ep, x.www_auth, used_bearer, err);
			pthread_mutex_unlock(&sess->lock);
			if (ar < 0)
				break;
			continue;
		}
		if (rc == CURLE_ABORTED_BY_CALLBACK) {
			fail_cancelled(sess, err);
			break;
		}
		bool transient = rc != CURLE_OK ? transient_curl(rc)
						: x.status >= 500 || x.status == 429;
		if (transient && may_retry && attempt < s->retries) {
			if (!backoff_sleep(sess, delay)) {
				fail_cancelled(sess, err);
				break;
			}
			delay *= 2;
			continue;
		}
		if (rc != CURLE_OK) {
			ad_fail(err, AD_E_UNAVAILABLE, "registry %s unreachable: %s", ep->hostport,
				curl_easy_strerror(rc));
			break;
		}
		if (x.status == 401 || x.status == 403) {
			/* A HEAD's refusal has no body: say what was refused. */
			_cleanup_free_ char *m = registry_message(&x);
			ad_fail(err, x.status == 401 ? AD_E_UNAUTHENTICATED : AD_E_PERMISSION,
				"registry %s denied the push to %s%s: %s", ep->hostport,
				sess->ref_string,
				x.status == 401 && auth_header ? " (credentials refused)" : "", m);
			break;
		}
		ret->status = x.status;
		if (x.location) { /* it may be relative to the URL it answered */
			CURLU *u = curl_url();
			char *abs = NULL;
			if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
			    curl_url_set(u, CURLUPART_URL, x.location, 0) == CURLUE_OK &&
			    curl_url_get(u, CURLUPART_URL, &abs, 0) == CURLUE_OK)
				ret->location = ad_strdup(abs);
			curl_free(abs);
			curl_url_cleanup(u);
		}
		ret->digest = ad_steal_ptr(x.docker_digest);
		if (x.status < 200 || x.status >= 300)
			ret->message = registry_message(&x);
		r = 0;
		break;
	}
	xfer_free(&x);
	return r;
}
