/* The container config as one flat message from rt_create and rt_exec to
 * agentd-shim, which sets the container (or the exec'd process) up itself:
 * agentd never forks (it is multithreaded; a forked copy may only make
 * async-signal-safe calls), it spawns the static shim and sends this. Only
 * what the shim and the init use is carried. Built into both libadruntime
 * (pack) and agentd-shim (unpack). */
#include <string.h>

#include "rt_internal.h"

typedef struct packer {
	char *buf;
	size_t len, cap;
} packer;

static void put(packer *p, const void *data, size_t n)
{
	if (p->len + n > p->cap) {
		p->cap = (p->len + n) * 2 + 256;
		p->buf = ad_realloc(p->buf, p->cap);
	}
	memcpy(p->buf + p->len, data, n);
	p->len += n;
}

static void put_u64(packer *p, uint64_t v)
{
	put(p, &v, sizeof(v));
}

#define NULL_LEN UINT64_MAX

static void put_str(packer *p, const char *s)
{
	put_u64(p, s ? strlen(s) : NULL_LEN);
	if (s)
		put(p, s, strlen(s) + 1);
}

/* NULL-terminated string list; NULL itself is kept apart from an empty list. */
static void put_strv(packer *p, const char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	put_u64(p, v ? n : NULL_LEN);
	for (size_t i = 0; i < n; i++)
		put_str(p, v[i]);
}

static void put_array(packer *p, const void *a, size_t n, size_t elem)
{
	put_u64(p, n);
	if (n)
		put(p, a, n * elem);
}

/* The fields the shim and the init use, in the order both sides read them. */
static void put_config(packer *p, const rt_config *cfg)
{
	put_str(p, cfg->id);
	put_str(p, cfg->rootfs);
	put_strv(p, cfg->args);
	put_strv(p, cfg->env);
	put_str(p, cfg->cwd);
	put_u64(p, cfg->uid);
	put_u64(p, cfg->gid);
	put_array(p, cfg->additional_gids, cfg->n_additional_gids, sizeof(gid_t));
	put_str(p, cfg->hostname);
	put_u64(p, cfg->n_mounts);
	for (size_t i = 0; i < cfg->n_mounts; i++) {
		const rt_mount *m = &cfg->mounts[i];
		put_str(p, m->type);
		put_str(p, m->source);
		put_str(p, m->destination);
		put_u64(p, m->readonly);
		put_u64(p, m->propagation);
		put_str(p, m->options);
	}
	for (int t = 0; t < _RT_NS_MAX; t++) {
		put_u64(p, cfg->namespaces[t].mode);
		put_str(p, cfg->namespaces[t].path);
	}
	put_array(p, cfg->uid_maps, cfg->n_uid_maps, sizeof(rt_id_map));
	put_array(p, cfg->gid_maps, cfg->n_gid_maps, sizeof(rt_id_map));
	put_u64(p, cfg->security.privileged);
	put_u64(p, cfg->security.readonly_rootfs);
	put_strv(p, cfg->security.masked_paths);
	put_strv(p, cfg->security.readonly_paths);
	put_array(p, cfg->rlimits, cfg->n_rlimits, sizeof(rt_rlimit));
	put_u64(p, (uint64_t)(int64_t)cfg->oom_score_adj);
	put_u64(p, cfg->oom_score_adj_set);
	put_u64(p, cfg->tty);
	put_u64(p, cfg->open_stdin);
	put_u64(p, cfg->stdin_once);
	put_str(p, cfg->log_path);
}

void rt_spawn_pack(const rt_spawn_spec *s, char **ret, size_t *ret_len)
{
	const rt_secplan *plan = &s->plan;
	packer p = {0};
	put_config(&p, &s->cfg);
	put_str(&p, s->state_dir);
	put_u64(&p, s->n_cgroup_fds);
	put_u64(&p, s->n_ns_fds);
	for (size_t i = 0; i < s->n_ns_fds && i < RT_SHIM_MAX_NS_FDS; i++)
		put_u64(&p, (uint64_t)s->ns_flags[i]);
	put_u64(&p, plan->bounding);
	put_u64(&p, plan->effective);
	put_u64(&p, plan->permitted);
	put_u64(&p, plan->inheritable);
	put_u64(&p, plan->ambient);
	put_u64(&p, plan->all_caps);
	put_array(&p, plan->seccomp, plan->seccomp ? plan->seccomp_len : 0,
		  sizeof(struct sock_filter));
	put_u64(&p, plan->seccomp != NULL);
	put_str(&p, plan->apparmor);
	put_u64(&p, plan->no_new_privs);
	put_u64(&p, (uint64_t)plan->last_cap);
	*ret = p.buf;
	*ret_len = p.len;
}

/* A stored config starts with this, so that a changed format is told apart. */
#define CONFIG_MAGIC 0x3176676663747261ULL /* "artcfgv1" */

void rt_config_pack(const rt_config *cfg, char **ret, size_t *ret_len)
{
	packer p = {0};
	put_u64(&p, CONFIG_MAGIC);
	put_config(&p, cfg);
	/* What the shim does not get as such (the parent turns it into the
	 * cgroup and the security plan). */
	const rt_resources *r = &cfg->resources;
	put_u64(&p, r->cpu_shares);
	put_u64(&p, (uint64_t)r->cpu_quota_us);
	put_u64(&p, r->cpu_period_us);
	put_str(&p, r->cpuset_cpus);
	put_str(&p, r->cpuset_mems);
	put_u64(&p, (uint64_t)r->memory_limit);
	put_u64(&p, (uint64_t)r->memory_swap);
	put_u64(&p, (uint64_t)r->pids_limit);
	put_str(&p, cfg->cgroup_parent);
	const rt_security *sec = &cfg->security;
	put_u64(&p, sec->no_new_privs);
	put_u64(&p, sec->capabilities_set);
	put_u64(&p, sec->cap_bounding);
	put_u64(&p, sec->cap_effective);
	put_u64(&p, sec->cap_permitted);
	put_u64(&p, sec->cap_inheritable);
	put_u64(&p, sec->cap_ambient);
	put_u64(&p, sec->seccomp);
	put_str(&p, sec->seccomp_profile);
	put_str(&p, sec->apparmor_profile);
	put_strv(&p, sec->device_rules);
	*ret = p.buf;
	*ret_len = p.len;
}

/* ---- unpack: pointers into the (kept) buffer and a few copied arrays ---- */

typedef struct unpacker {
	const char *buf;
	size_t len, off;
	bool bad;
} unpacker;

static const void *take(unpacker *u, size_t n)
{
	if (u->bad || n > u->len - u->off) {
		u->bad = true;
		return NULL;
	}
	const void *r = u->buf + u->off;
	u->off += n;
	return r;
}

static uint64_t get_u64(unpacker *u)
{
	uint64_t v = 0;
	const void *d = take(u, sizeof(v));
	if (d)
		memcpy(&v, d, sizeof(v));
	return v;
}

static const char *get_str(unpacker *u)
{
	uint64_t n = get_u64(u);
	if (n == NULL_LEN || u->bad)
		return NULL;
	const char *s = n < u->len ? take(u, n + 1) : NULL;
	if (!s || s[n] != '\0') {
		u->bad = true;
		return NULL;
	}
	return s;
}

static const char *const *get_strv(unpacker *u)
{
	uint64_t n = get_u64(u);
	if (n == NULL_LEN || u->bad)
		return NULL;
	if (n > u->len) {
		u->bad = true;
		return NULL;
	}
	const char **v = ad_malloc0((n + 1) * sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = get_str(u);
	return v;
}

/* A copy: the buffer gives no alignment guarantee. */
static void *get_array(unpacker *u, size_t elem, size_t *ret_n)
{
	uint64_t n = get_u64(u);
	*ret_n = 0;
	if (u->bad || n == 0)
		return NULL;
	const void *d = n <= u->len / elem ? take(u, n * elem) : NULL;
	if (!d) {
		u->bad = true;
		return NULL;
	}
	void *a = ad_malloc0(n * elem);
	memcpy(a, d, n * elem);
	*ret_n = n;
	return a;
}

static void get_config(unpacker *u, rt_config *cfg)
{
	cfg->id = get_str(u);
	cfg->rootfs = get_str(u);
	cfg->args = get_strv(u);
	cfg->env = get_strv(u);
	cfg->cwd = get_str(u);
	cfg->uid = (uid_t)get_u64(u);
	cfg->gid = (gid_t)get_u64(u);
	cfg->additional_gids = get_array(u, sizeof(gid_t), &cfg->n_additional_gids);
	cfg->hostname = get_str(u);
	uint64_t nm = get_u64(u);
	if (nm > u->len)
		u->bad = true;
	rt_mount *mounts = u->bad || !nm ? NULL : ad_malloc0(nm * sizeof(*mounts));
	for (size_t i = 0; mounts && i < nm; i++) {
		mounts[i].type = get_str(u);
		mounts[i].source = get_str(u);
		mounts[i].destination = get_str(u);
		mounts[i].readonly = get_u64(u) != 0;
		mounts[i].propagation = (rt_propagation)get_u64(u);
		mounts[i].options = get_str(u);
	}
	cfg->mounts = mounts;
	cfg->n_mounts = mounts ? nm : 0;
	for (int t = 0; t < _RT_NS_MAX; t++) {
		cfg->namespaces[t].mode = (rt_ns_mode)get_u64(u);
		cfg->namespaces[t].path = get_str(u);
	}
	cfg->uid_maps = get_array(u, sizeof(rt_id_map), &cfg->n_uid_maps);
	cfg->gid_maps = get_array(u, sizeof(rt_id_map), &cfg->n_gid_maps);
	cfg->security.privileged = get_u64(u) != 0;
	cfg->security.readonly_rootfs = get_u64(u) != 0;
	cfg->security.masked_paths = get_strv(u);
	cfg->security.readonly_paths = get_strv(u);
	cfg->rlimits = get_array(u, sizeof(rt_rlimit), &cfg->n_rlimits);
	cfg->oom_score_adj = (int)(int64_t)get_u64(u);
	cfg->oom_score_adj_set = get_u64(u) != 0;
	cfg->tty = get_u64(u) != 0;
	cfg->open_stdin = get_u64(u) != 0;
	cfg->stdin_once = get_u64(u) != 0;
	cfg->log_path = get_str(u);
}

int rt_spawn_unpack(const char *buf, size_t len, rt_spawn_spec *s, ad_error **err)
{
	unpacker u = {.buf = buf, .len = len};
	rt_config *cfg = &s->cfg;
	rt_secplan *plan = &s->plan;
	*s = (rt_spawn_spec){0};
	get_config(&u, cfg);
	s->state_dir = get_str(&u);
	s->n_cgroup_fds = get_u64(&u);
	s->n_ns_fds = get_u64(&u);
	for (size_t i = 0; i < s->n_ns_fds && i < RT_SHIM_MAX_NS_FDS; i++)
		s->ns_flags[i] = (int)get_u64(&u);
	plan->bounding = get_u64(&u);
	plan->effective = get_u64(&u);
	plan->permitted = get_u64(&u);
	plan->inheritable = get_u64(&u);
	plan->ambient = get_u64(&u);
	plan->all_caps = get_u64(&u) != 0;
	plan->seccomp = get_array(&u, sizeof(struct sock_filter), &plan->seccomp_len);
	if (!get_u64(&u)) {
		free(plan->seccomp);
		plan->seccomp = NULL;
	}
	plan->apparmor = get_str(&u);
	plan->no_new_privs = get_u64(&u) != 0;
	plan->last_cap = (int)get_u64(&u);
	if (u.bad || u.off != len || !cfg->id || !cfg->rootfs || !cfg->args || !cfg->args[0] ||
	    s->n_cgroup_fds > RT_SHIM_MAX_CGROUP_FDS || s->n_ns_fds > RT_SHIM_MAX_NS_FDS ||
	    plan->last_cap > 63)
		return ad_fail(err, AD_E_INTERNAL, "shim: malformed container config (%zu bytes)",
			       len);
	return 0;
}

void rt_config_unpacked_clear(rt_config *cfg)
{
	free((void *)cfg->args);
	free((void *)cfg->env);
	free((void *)cfg->additional_gids);
	free((void *)cfg->mounts);
	free((void *)cfg->uid_maps);
	free((void *)cfg->gid_maps);
	free((void *)cfg->security.masked_paths);
	free((void *)cfg->security.readonly_paths);
	free((void *)cfg->security.device_rules);
	free((void *)cfg->rlimits);
	*cfg = (rt_config){0};
}

int rt_config_unpack(const char *buf, size_t len, rt_config *cfg, ad_error **err)
{
	unpacker u = {.buf = buf, .len = len};
	*cfg = (rt_config){0};
	if (get_u64(&u) != CONFIG_MAGIC)
		return ad_fail(err, AD_E_DATA_LOSS, "stored container config: unknown format");
	get_config(&u, cfg);
	rt_resources *r = &cfg->resources;
	r->cpu_shares = get_u64(&u);
	r->cpu_quota_us = (int64_t)get_u64(&u);
	r->cpu_period_us = get_u64(&u);
	r->cpuset_cpus = (char *)get_str(&u);
	r->cpuset_mems = (char *)get_str(&u);
	r->memory_limit = (int64_t)get_u64(&u);
	r->memory_swap = (int64_t)get_u64(&u);
	r->pids_limit = (int64_t)get_u64(&u);
	cfg->cgroup_parent = get_str(&u);
	rt_security *sec = &cfg->security;
	sec->no_new_privs = get_u64(&u) != 0;
	sec->capabilities_set = get_u64(&u) != 0;
	sec->cap_bounding = get_u64(&u);
	sec->cap_effective = get_u64(&u);
	sec->cap_permitted = get_u64(&u);
	sec->cap_inheritable = get_u64(&u);
	sec->cap_ambient = get_u64(&u);
	sec->seccomp = (rt_seccomp_mode)get_u64(&u);
	sec->seccomp_profile = get_str(&u);
	sec->apparmor_profile = get_str(&u);
	sec->device_rules = get_strv(&u);
	if (u.bad || u.off != len || !cfg->id || !cfg->rootfs || !cfg->args) {
		rt_config_unpacked_clear(cfg);
		return ad_fail(err, AD_E_DATA_LOSS, "stored container config is malformed (%zu bytes)",
			       len);
	}
	return 0;
}
