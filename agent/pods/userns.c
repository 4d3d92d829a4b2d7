/* User namespaces of pods: agentd's subordinate id ranges (/etc/subuid and
 * /etc/subgid, shadow's "user:start:count" lines), the check of mappings a
 * caller gives against them, the choice of a free block for a pod that
 * gives none, and the text form mappings are stored in. Pure: the pod code
 * (pod.c) reads the files and the used blocks and keeps the result. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "pods_int.h"

/* The kernel's limit of lines in uid_map. */
#define MAX_ID_MAP_LINES 340

static bool parse_u32(const char *s, size_t len, uint32_t *ret)
{
	if (len == 0 || len > 10)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > UINT32_MAX)
		return false;
	*ret = (uint32_t)v;
	return true;
}

int mgr_subids_parse(const char *text, const char *file, const char *user, uid_t user_uid,
		     mgr_subid_range **ret, size_t *ret_n, ad_error **err)
{
	char uid_text[16] = "";
	if (user_uid != (uid_t)-1)
		snprintf(uid_text, sizeof(uid_text), "%u", (unsigned)user_uid);
	mgr_subid_range *v = NULL;
	size_t n = 0;
	unsigned lineno = 0;
	for (const char *line = text; line && *line;) {
		const char *end = strchrnul(line, '\n');
		lineno++;
		size_t len = (size_t)(end - line);
		const char *c1 = memchr(line, ':', len);
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
		mgr_subid_range r;
		if (len == 0 || line[0] == '#') {
			/* blank or comment */
		} else if (!c2 || !parse_u32(c1 + 1, (size_t)(c2 - c1 - 1), &r.start) ||
			   !parse_u32(c2 + 1, (size_t)(end - c2 - 1), &r.count)) {
			free(v);
			return ad_fail(err, AD_E_PRECONDITION, "%s:%u: expected user:start:count",
				       file, lineno);
		} else {
			size_t nl = (size_t)(c1 - line);
			bool mine =
			    (nl == strlen(user) && !strncmp(line, user, nl)) ||
			    (*uid_text && nl == strlen(uid_text) && !strncmp(line, uid_text, nl));
			if (mine && r.count > 0 &&
			    (uint64_t)r.start + r.count <= (uint64_t)UINT32_MAX + 1) {
				v = ad_realloc(v, (n + 1) * sizeof(*v));
				v[n++] = r;
			}
		}
		line = *end ? end + 1 : end;
	}
	if (n == 0) {
		free(v);
		return ad_fail(err, AD_E_PRECONDITION,
			       "no subordinate ids for user %s in %s (add a line like "
			       "\"%s:100000:1048576\")",
			       user, file, user);
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int mgr_subids_read(const char *file, const char *user, mgr_subid_range **ret, size_t *ret_n,
		    ad_error **err)
{
	if (!user || !*user)
		return ad_fail(err, AD_E_PRECONDITION,
			       "user namespaces: no user configured ([userns] user)");
	uid_t uid = (uid_t)-1;
	uint32_t numeric;
	if (parse_u32(user, strlen(user), &numeric)) {
		uid = numeric;
	} else {
		struct passwd pw, *found = NULL;
		char buf[4096];
		if (getpwnam_r(user, &pw, buf, sizeof(buf), &found) == 0 && found)
			uid = found->pw_uid;
	}
	_cleanup_free_ char *text = NULL;
	size_t len;
	if (ad_read_file(AT_FDCWD, file, 16 << 20, &text, &len, err) < 0)
		return ad_error_wrap(err, "user namespaces: subordinate ids of %s", user);
	return mgr_subids_parse(text, file, user, uid, ret, ret_n, err);
}

static bool inside(const mgr_subid_range *allowed, size_t n_allowed, uint64_t start, uint64_t len)
{
	/* The ranges may touch: walk from `start` through whichever contains it. */
	while (len > 0) {
		bool moved = false;
		for (size_t i = 0; i < n_allowed && !moved; i++) {
			uint64_t a = allowed[i].start, b = a + allowed[i].count;
			if (start >= a && start < b) {
				uint64_t take = b - start < len ? b - start : len;
				start += take;
				len -= take;
				moved = true;
			}
		}
		if (!moved)
			return false;
	}
	return true;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int mgr_idmap_check(const rt_id_map *maps, size_t n, const mgr_subid_range *allowed,
		    size_t n_allowed, const char *what, const char *file, ad_error **err)
{
	if (n == 0)
		return ad_fail(err, AD_E_INVALID, "userns_options: no %s mappings", what);
	if (n > MAX_ID_MAP_LINES)
		return ad_fail(err, AD_E_INVALID, "userns_options: %zu %s mappings (at most %d)", n,
			       what, MAX_ID_MAP_LINES);
	bool root = false;
	for (size_t i = 0; i < n; i++) {
		const rt_id_map *m = &maps[i];
		if (m->size == 0)
			return ad_fail(err, AD_E_INVALID,
				       "userns_options: %s mapping %zu has length 0", what, i);
		if ((uint64_t)m->container_id + m->size > (uint64_t)UINT32_MAX + 1 ||
		    (uint64_t)m->host_id + m->size > (uint64_t)UINT32_MAX + 1)
			return ad_fail(err, AD_E_INVALID,
				       "userns_options: %s mapping %u %u %u overflows 32 bits",
				       what, m->container_id, m->host_id, m->size);
		if (!inside(allowed, n_allowed, m->host_id, m->size))
			return ad_fail(
			    err, AD_E_INVALID,
			    "userns_options: %s mapping of host ids %u-%u is outside the "
			    "subordinate ranges agentd may use (%s)",
			    what, m->host_id, m->host_id + (m->size - 1), file);
		for (size_t j = 0; j < i; j++) {
			if (overlaps(m->container_id, m->size, maps[j].container_id, maps[j].size))
				return ad_fail(
				    err, AD_E_INVALID,
				    "userns_options: %s mappings %zu and %zu overlap inside "
				    "the container",
				    what, j, i);
			if (overlaps(m->host_id, m->size, maps[j].host_id, maps[j].size))
				return ad_fail(
				    err, AD_E_INVALID,
				    "userns_options: %s mappings %zu and %zu overlap on the "
				    "host",
				    what, j, i);
		}
		root |= m->container_id == 0;
	}
	if (!root)
		return ad_fail(err, AD_E_INVALID, "userns_options: %s mappings must map id 0",
			       what);
	return 0;
}

int mgr_idmap_in_use(const rt_id_map *maps, size_t n, const rt_id_map *used, size_t n_used,
		     const char *what, ad_error **err)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n_used; j++)
			if (overlaps(maps[i].host_id, maps[i].size, used[j].host_id, used[j].size))
				return ad_fail(err, AD_E_INVALID,
					       "userns_options: host %s %u-%u are already mapped "
					       "for another pod",
					       what, maps[i].host_id,
					       maps[i].host_id + (maps[i].size - 1));
	return 0;
}

int mgr_idmap_allocate(const mgr_subid_range *allowed, size_t n_allowed, const rt_id_map *used,
		       size_t n_used, uint32_t size, const char *what, const char *file,
		       uint32_t *ret_host_id, ad_error **err)
{
	/* First fit: the candidates are each range's start and the end of each
	 * used block; the lowest one that fits wins. */
	uint64_t best = UINT64_MAX;
	for (size_t i = 0; i < n_allowed + n_used; i++) {
		uint64_t cand = i < n_allowed ? allowed[i].start
					      : (uint64_t)used[i - n_allowed].host_id +
						    used[i - n_allowed].size;
		if (cand >= best || !inside(allowed, n_allowed, cand, size))
			continue;
		bool clash = false;
		for (size_t j = 0; j < n_used && !clash; j++)
			clash = overlaps(cand, size, used[j].host_id, used[j].size);
		if (!clash)
			best = cand;
	}
	if (best == UINT64_MAX)
		return ad_fail(err, AD_E_RESOURCE,
			       "user namespaces: no free block of %u subordinate %s left in %s "
			       "(%zu block(s) in use by pods)",
			       size, what, file, n_used);
	*ret_host_id = (uint32_t)best;
	return 0;
}

char *mgr_idmaps_to_text(const rt_id_map *maps, size_t n)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%u:%u:%u", i ? "," : "", maps[i].container_id, maps[i].host_id,
			maps[i].size);
	fclose(f);
	return text;
}

int mgr_idmaps_from_text(const char *text, rt_id_map **ret, size_t *ret_n)
{
	rt_id_map *v = NULL;
	size_t n = 0;
	for (const char *p = text; p && *p;) {
		unsigned c, h, s;
		int used = 0;
		if (sscanf(p, "%u:%u:%u%n", &c, &h, &s, &used) != 3) {
			free(v);
			return -1;
		}
		v = ad_realloc(v, (n + 1) * sizeof(*v));
		v[n++] = (rt_id_map){.container_id = c, .host_id = h, .size = s};
		p += used;
		if (*p == ',')
			p++;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int used_maps(mgr *m, int column, rt_id_map **ret, size_t *ret_n, ad_error **err)
{
	sqlite3_stmt *st;
	const char *sql = column == 0 ? "SELECT uid_maps FROM pods WHERE uid_maps IS NOT NULL"
				      : "SELECT gid_maps FROM pods WHERE gid_maps IS NOT NULL";
	if (ad_db_prepare(m->db, sql, &st, err) < 0)
		return -1;
	rt_id_map *v = NULL;
	size_t n = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		rt_id_map *one;
		size_t k;
		if (mgr_idmaps_from_text((const char *)sqlite3_column_text(st, 0), &one, &k) < 0)
			continue;
		v = ad_realloc(v, (n + k + 1) * sizeof(*v));
		memcpy(v + n, one, k * sizeof(*v));
		n += k;
		free(one);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(v);
		return ad_db_fail(m->db, err, "state DB: pods' user namespaces");
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* One of the two id kinds: the caller's mappings checked, or a block. */
static int assign_one(mgr *m, const char *file, const char *what, int column,
		      const rt_id_map *given, size_t n_given, rt_id_map **ret, size_t *ret_n,
		      ad_error **err)
{
	_cleanup_free_ mgr_subid_range *allowed = NULL;
	size_t n_allowed = 0;
	if (mgr_subids_read(file, m->userns_user, &allowed, &n_allowed, err) < 0)
		return -1;
	_cleanup_free_ rt_id_map *used = NULL;
	size_t n_used = 0;
	if (used_maps(m, column, &used, &n_used, err) < 0)
		return -1;
	if (n_given) {
		if (mgr_idmap_check(given, n_given, allowed, n_allowed, what, file, err) < 0 ||
		    mgr_idmap_in_use(given, n_given, used, n_used, what, err) < 0)
			return -1;
		*ret = ad_malloc0(n_given * sizeof(**ret));
		memcpy(*ret, given, n_given * sizeof(**ret));
		*ret_n = n_given;
		return 0;
	}
	uint32_t host;
	if (mgr_idmap_allocate(allowed, n_allowed, used, n_used, MGR_USERNS_BLOCK, what, file,
			       &host, err) < 0)
		return -1;
	*ret = ad_malloc0(sizeof(**ret));
	**ret = (rt_id_map){.container_id = 0, .host_id = host, .size = MGR_USERNS_BLOCK};
	*ret_n = 1;
	return 0;
}

int mgr_pod_userns_assign(mgr *m, mgr_pod *p, const mgr_pod_spec *spec, ad_error **err)
{
	if (assign_one(m, m->subuid_file, "uids", 0, spec->uid_maps, spec->n_uid_maps, &p->uid_maps,
		       &p->n_uid_maps, err) < 0 ||
	    assign_one(m, m->subgid_file, "gids", 1, spec->gid_maps, spec->n_gid_maps, &p->gid_maps,
		       &p->n_gid_maps, err) < 0) {
		free(p->uid_maps);
		p->uid_maps = NULL;
		p->n_uid_maps = 0;
		return -1;
	}
	return 0;
}

static store_id_range *to_store(const rt_id_map *maps, size_t n)
{
	store_id_range *v = ad_malloc0((n + 1) * sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = (store_id_range){maps[i].container_id, maps[i].host_id, maps[i].size};
	return v;
}

void mgr_pod_store_idmap(const mgr_pod *p, pid_t infra_pid, store_idmap *ret)
{
	*ret = (store_idmap){.userns_fd = -1,
			     .uids = to_store(p->uid_maps, p->n_uid_maps),
			     .n_uids = p->n_uid_maps,
			     .gids = to_store(p->gid_maps, p->n_gid_maps),
			     .n_gids = p->n_gid_maps};
	if (infra_pid > 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)infra_pid);
		ret->userns_fd = open(path, O_RDONLY | O_CLOEXEC);
	}
}

void mgr_store_idmap_clear(store_idmap *map)
{
	if (map->userns_fd >= 0)
		close(map->userns_fd);
	free((void *)map->uids);
	free((void *)map->gids);
	*map = (store_idmap){.userns_fd = -1};
}

uint32_t mgr_id_in_container(const char *id_map, uint32_t host_id)
{
	for (const char *l = id_map; l && *l;) {
		unsigned c, h, n;
		if (sscanf(l, "%u %u %u", &c, &h, &n) == 3 && host_id >= h && host_id - h < n)
			return c + (host_id - h);
		const char *nl = strchr(l, '\n');
		l = nl ? nl + 1 : NULL;
	}
	return 65534; /* unmapped: the kernel's overflow id */
}
