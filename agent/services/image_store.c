/* Opening the image store with the [images] settings: registry lists and
 * mirrors from the config turned into the store's registry configs. */
#include <string.h>

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

int agent_images_open(const cfg_config *cfg, store **ret_store, ad_error **err)
{
	store_registry_config *regs = NULL;
	size_t n = 0;
	add_registries(&regs, &n, cfg->plain_http_registries, true);
	add_registries(&regs, &n, cfg->insecure_registries, false);
	add_mirrors(&regs, &n, cfg->registry_mirrors);
	_cleanup_free_ char *db_path = ad_asprintf("%s/agentd.db", cfg->root);
	store_opts o = {
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
	int r = store_open(&o, ret_store, err);
	registries_free(regs, n);
	if (r < 0)
		return ad_error_wrap(err, "image store");
	return 0;
}
