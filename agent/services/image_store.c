/* Opening the image store with the [images] settings: registry lists and
 * mirrors from the config turned into the store's registry configs. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "services.h"

/* The entry for `host` in *regs, added if missing. */
static store_registry_config *registry_entry(store_registry_config **regs, size_t *n,
					     const char *host, size_t len)
{
	for (size_t i = 0; i < *n; i++)
		if (strlen((*regs)[i].host) == len && strncmp((*regs)[i].host, host, len) == 0)
			return &(*regs)[i];
	*regs = ad_realloc(*regs, (*n + 1) * sizeof(**regs));
	store_registry_config *c = &(*regs)[(*n)++];
	*c = (store_registry_config){.host = ad_strndup(host, len)};
	return c;
}

/* "a,b:5000" (validated by the config parser) -> plain_http or insecure. */
static void add_registries(store_registry_config **regs, size_t *n, const char *list,
			   bool plain_http)
{
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		store_registry_config *c = registry_entry(regs, n, p, len);
		if (plain_http)
			c->plain_http = true;
		else
			c->insecure = true;
		p += len;
		if (*p == ',')
			p++;
	}
}

/* "host=URL|URL,host2=URL" (validated by the config parser) -> mirrors. */
static void add_mirrors(store_registry_config **regs, size_t *n, const char *list)
{
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		const char *eq = memchr(p, '=', len);
		store_registry_config *c = registry_entry(regs, n, p, (size_t)(eq - p));
		size_t k = 0;
		while (c->mirrors && c->mirrors[k])
			k++;
		for (const char *u = eq + 1; u < p + len;) {
			size_t m = strcspn(u, "|,");
			c->mirrors = ad_realloc(c->mirrors, (k + 2) * sizeof(char *));
			c->mirrors[k++] = ad_strndup(u, m);
			c->mirrors[k] = NULL;
			u += m + (u[m] == '|');
		}
		p += len;
		if (*p == ',')
			p++;
	}
}

static void registries_free(store_registry_config *regs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (const char **m = regs[i].mirrors; m && *m; m++)
			free((char *)*m);
		free(regs[i].mirrors);
		free((char *)regs[i].host);
	}
	free(regs);
}

/* The store's settings from [images]; free the registries with
 * registries_free. */
static store_opts images_opts(const cfg_config *cfg, const char *db_path,
			      store_registry_config **ret_regs, size_t *ret_n)
{
	store_registry_config *regs = NULL;
	size_t n = 0;
	add_registries(&regs, &n, cfg->plain_http_registries, true);
	add_registries(&regs, &n, cfg->insecure_registries, false);
	add_mirrors(&regs, &n, cfg->registry_mirrors);
	*ret_regs = regs;
	*ret_n = n;
	return (store_opts){
	    .root = cfg->root,
	    .db_path = db_path,
	    .certs_dir = cfg->certs_dir[0] ? cfg->certs_dir : NULL,
	    .auth_file = cfg->auth_file[0] ? cfg->auth_file : NULL,
	    .registries = regs,
	    .n_registries = n,
	    .max_parallel = cfg->max_parallel_layers,
	    .stall_timeout_s = cfg->stall_timeout,
	    .max_unpacked_bytes = cfg->max_unpacked_layer_size,
	    .fetch_helper = cfg->fetch_helper[0] ? cfg->fetch_helper : NULL,
	};
}

int agent_images_open(const cfg_config *cfg, store **ret_store, ad_error **err)
{
	store_registry_config *regs;
	size_t n;
	_cleanup_free_ char *db_path = ad_asprintf("%s/agentd.db", cfg->root);
	store_opts o = images_opts(cfg, db_path, &regs, &n);
	int r = store_open(&o, ret_store, err);
	registries_free(regs, n);
	if (r < 0)
		return ad_error_wrap(err, "image store");
	return 0;
}

/* The auth file as agentd-fetch reads it: JSON with an "auths" object. A
 * missing file is no error (pulls are anonymous then). */
static int check_auth_file(const char *path, ad_error **err)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	if (!root && errno == ENOENT)
		return 0;
	if (!root)
		return ad_fail(err, AD_E_INVALID, "%s:%d:%d: %s", path, jerr.line, jerr.column,
			       jerr.text);
	json_t *auths = json_object_get(root, "auths");
	bool bad = !json_is_object(root) || (auths && !json_is_object(auths));
	json_decref(root);
	if (bad)
		return ad_fail(err, AD_E_INVALID, "%s:1: \"auths\" must be an object of registries",
			       path);
	return 0;
}

/* One certs.d file parses as PEM: a certificate (*.crt, *.cert) or a key
 * (*.key); other files are not agentd-fetch's. */
static int check_pem(const char *path, ad_error **err)
{
	const char *ext = strrchr(path, '.');
	bool key = ext && strcmp(ext, ".key") == 0;
	if (!ext || (!key && strcmp(ext, ".crt") != 0 && strcmp(ext, ".cert") != 0))
		return 0;
	BIO *b = BIO_new_file(path, "r");
	void *obj = !b	  ? NULL
		    : key ? (void *)PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)
			  : (void *)PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	ERR_clear_error();
	if (!obj)
		return ad_fail(err, AD_E_INVALID, "%s: not a PEM %s", path,
			       key ? "private key" : "certificate");
	if (key)
		EVP_PKEY_free(obj);
	else
		X509_free(obj);
	return 0;
}

/* Every certificate and key of a certs.d tree (<dir>/<host[:port]>/). */
static int check_certs_dir(const char *dir, ad_error **err)
{
	char **hosts = ad_dir_names(AT_FDCWD, dir, NULL);
	if (!hosts)
		return errno == ENOENT ? 0 : ad_fail_errno(err, AD_E_INVALID, "certs dir %s", dir);
	int r = 0;
	for (char **h = hosts; r == 0 && *h; h++) {
		_cleanup_free_ char *host = ad_asprintf("%s/%s", dir, *h);
		char **files = ad_dir_names(AT_FDCWD, host, NULL);
		for (char **f = files; r == 0 && f && *f; f++) {
			_cleanup_free_ char *path = ad_asprintf("%s/%s", host, *f);
			r = check_pem(path, err);
		}
		ad_strv_free(files);
	}
	ad_strv_free(hosts);
	return r;
}

int agent_images_reload(const cfg_config *cfg, store *s, ad_error **err)
{
	if ((cfg->auth_file[0] && check_auth_file(cfg->auth_file, err) < 0) ||
	    (cfg->certs_dir[0] && check_certs_dir(cfg->certs_dir, err) < 0))
		return -1;
	store_registry_config *regs;
	size_t n;
	store_opts o = images_opts(cfg, NULL, &regs, &n);
	store_set_registry_settings(s, &o);
	registries_free(regs, n);
	return 0;
}
