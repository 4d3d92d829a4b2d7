/* The authorization policy: certificate subject -> role -> allowed methods. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"

typedef struct cn_role {
	char *cn;
	authz_role role;
} cn_role;

/* The roles of the last subjects checked: a connection's calls all carry its
 * one certificate subject, and parsing it (allocations per attribute) on every
 * call showed in perf. A policy never changes (a reload makes a new one), so
 * an entry stays right for the policy's life. */
enum { ROLE_MEMO_SLOTS = 8 };
typedef struct role_memo {
	pthread_mutex_t mu;
	struct {
		char *subject;
		authz_role role;
	} slot[ROLE_MEMO_SLOTS];
	size_t next; /* the slot to replace */
} role_memo;

struct authz_policy {
	cn_role *map;
	size_t n_map;
	bool role_from_ou;
	authz_role default_role;
	role_memo *memo; /* behind a pointer: filled in through a const policy */
};

static const char *const role_names[_AUTHZ_ROLE_MAX] = {
    [AUTHZ_ROLE_NONE] = "none",
    [AUTHZ_ROLE_READ_ONLY] = "read-only",
    [AUTHZ_ROLE_ADMIN] = "admin",
};

int authz_role_parse(const char *name, authz_role *ret)
{
	for (int r = 0; r < _AUTHZ_ROLE_MAX; r++)
		if (strcmp(name, role_names[r]) == 0) {
			*ret = (authz_role)r;
			return 0;
		}
	return -1;
}

const char *authz_role_name(authz_role role)
{
	return role >= 0 && role < _AUTHZ_ROLE_MAX ? role_names[role] : "invalid";
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

void authz_policy_free(authz_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_map; i++)
		free(p->map[i].cn);
	free(p->map);
	for (size_t i = 0; i < ROLE_MEMO_SLOTS; i++)
		free(p->memo->slot[i].subject);
	pthread_mutex_destroy(&p->memo->mu);
	free(p->memo);
	free(p);
}

int authz_policy_new(const char *cn_roles, bool role_from_ou, const char *default_role,
		     authz_policy **ret, ad_error **err)
{
	authz_policy *p = ad_malloc0(sizeof(*p));
	p->memo = ad_malloc0(sizeof(*p->memo));
	pthread_mutex_init(&p->memo->mu, NULL);
	p->role_from_ou = role_from_ou;
	if (authz_role_parse(default_role, &p->default_role) < 0) {
		authz_policy_free(p);
		return ad_fail(err, AD_E_INVALID,
			       "default role \"%s\": want admin, read-only or none", default_role);
	}
	_cleanup_free_ char *copy = ad_strdup(cn_roles ? cn_roles : "");
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *entry = trim(tok);
		if (!*entry)
			continue;
		char *eq = strrchr(entry, '=');
		authz_role role;
		if (!eq) {
			authz_policy_free(p);
			return ad_fail(err, AD_E_INVALID, "role mapping \"%s\": want CN=role",
				       entry);
		}
		*eq = '\0';
		char *cn = trim(entry), *name = trim(eq + 1);
		if (!*cn || authz_role_parse(name, &role) < 0) {
			authz_policy_free(p);
			return ad_fail(err, AD_E_INVALID,
				       "role mapping \"%s=%s\": want CN=role with role admin, "
				       "read-only or none",
				       cn, name);
		}
		p->map = ad_realloc(p->map, (p->n_map + 1) * sizeof(cn_role));
		p->map[p->n_map++] = (cn_role){ad_strdup(cn), role};
	}
	*ret = p;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Walks "type=value" pairs separated by unescaped ',' or '+' (RFC 2253
 * section 2/3: "\," "\+" "\\" and "\XX" hex escapes). */
char *authz_subject_attr(const char *subject, const char *type, size_t index)
{
	if (!subject)
		return NULL;
	size_t tlen = strlen(type), seen = 0;
	const char *p = subject;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *eq = strchr(p, '=');
		if (!eq)
			return NULL;
		bool match = (size_t)(eq - p) == tlen && strncasecmp(p, type, tlen) == 0;
		size_t cap = strlen(eq), n = 0;
		char *val = ad_malloc0(cap + 1);
		for (p = eq + 1; *p && *p != ',' && *p != '+'; p++) {
			if (*p == '\\' && p[1]) {
				int hi = hexval(p[1]), lo = hi >= 0 && p[2] ? hexval(p[2]) : -1;
				if (lo >= 0) {
					val[n++] = (char)(hi * 16 + lo);
					p += 2;
				} else {
					val[n++] = *++p;
				}
				continue;
			}
			val[n++] = *p;
		}
		if (match && seen++ == index)
			return val;
		free(val);
		if (*p)
			p++;
	}
	return NULL;
}

authz_role authz_role_of(const authz_policy *p, const char *subject)
{
	_cleanup_free_ char *cn = authz_subject_attr(subject, "CN", 0);
	for (size_t i = 0; cn && i < p->n_map; i++)
		if (strcmp(p->map[i].cn, cn) == 0)
			return p->map[i].role;
	if (p->role_from_ou) {
		for (size_t i = 0;; i++) {
			_cleanup_free_ char *ou = authz_subject_attr(subject, "OU", i);
			authz_role role;
			if (!ou)
				break;
			if (authz_role_parse(ou, &role) == 0)
				return role;
		}
	}
	return p->default_role;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

bool authz_method_reads(const char *path)
{
	if (starts_with(path, "/grpc.health.v1.Health/"))
		return true;
	const char *slash = strrchr(path, '/');
	const char *m = slash ? slash + 1 : path;
	return starts_with(m, "List") || ends_with(m, "Status") || strcmp(m, "Version") == 0 ||
	       ends_with(m, "Info") || ends_with(m, "Stats");
}

bool authz_role_allows(authz_role role, const char *path)
{
	switch (role) {
	case AUTHZ_ROLE_ADMIN:
		return true;
	case AUTHZ_ROLE_READ_ONLY:
		return authz_method_reads(path);
	default:
		return false;
	}
}

static authz_role role_of_memoized(const authz_policy *p, const char *subject)
{
	role_memo *m = p->memo;
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < ROLE_MEMO_SLOTS; i++)
		if (m->slot[i].subject && strcmp(m->slot[i].subject, subject) == 0) {
			authz_role role = m->slot[i].role;
			pthread_mutex_unlock(&m->mu);
			return role;
		}
	pthread_mutex_unlock(&m->mu);
	authz_role role = authz_role_of(p, subject);
	char *copy = ad_strdup(subject);
	pthread_mutex_lock(&m->mu);
	char *old = m->slot[m->next].subject;
	m->slot[m->next].subject = copy;
	m->slot[m->next].role = role;
	m->next = (m->next + 1) % ROLE_MEMO_SLOTS;
	pthread_mutex_unlock(&m->mu);
	free(old);
	return role;
}

int authz_check(const authz_policy *p, const char *subject, const char *path, authz_role *ret_role,
		ad_error **err)
{
	authz_role role = subject ? role_of_memoized(p, subject) : AUTHZ_ROLE_ADMIN;
	if (ret_role)
		*ret_role = role;
	if (authz_role_allows(role, path))
		return 0;
	return ad_fail(err, AD_E_PERMISSION, "method %s is not allowed for role %s (client %s)",
		       path, authz_role_name(role), subject);
}
