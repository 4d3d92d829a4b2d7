/* Image references, normalised with the rules of docker's distribution/reference
 * (grammar in its reference.go, normalisation in normalize.go). */
#include "store.h"
#include "store_int.h"

#include <ctype.h>
#include <string.h>

#define NAME_MAX_LEN 255
#define TAG_MAX_LEN 128

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | [-]+ */
static bool valid_path_component(const char *p, size_t n)
{
	size_t i = 0;
	if (n == 0 || !is_lower_alnum(p[0]))
		return false;
	while (i < n) {
		while (i < n && is_lower_alnum(p[i]))
			i++;
		if (i == n)
			return true;
		size_t sep = i;
		if (p[i] == '.') {
			i++;
		} else if (p[i] == '_') {
			i++;
			if (i < n && p[i] == '_')
				i++;
		} else if (p[i] == '-') {
			while (i < n && p[i] == '-')
				i++;
		} else {
			return false;
		}
		if (i == n || !is_lower_alnum(p[i]) || i == sep)
			return false;
	}
	return true;
}

static bool valid_path(const char *p)
{
	const char *start = p;
	for (;;) {
		const char *slash = strchr(start, '/');
		size_t n = slash ? (size_t)(slash - start) : strlen(start);
		if (!valid_path_component(start, n))
			return false;
		if (!slash)
			return true;
		start = slash + 1;
	}
}

/* domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9] */
static bool valid_domain_component(const char *p, size_t n)
{
	if (n == 0 || !isalnum((unsigned char)p[0]) || !isalnum((unsigned char)p[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)p[i]) && p[i] != '-')
			return false;
	return true;
}

/* host := domain-component ('.' domain-component)* | '[' ipv6 ']', then [':' port] */
static bool valid_domain(const char *d)
{
	const char *port = NULL;
	size_t hostlen;
	if (d[0] == '[') {
		const char *close = strchr(d, ']');
		if (!close || close == d + 1)
			return false;
		for (const char *c = d + 1; c < close; c++)
			if (!isxdigit((unsigned char)*c) && *c != ':')
				return false;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return false;
	} else {
		const char *colon = strchr(d, ':');
		hostlen = colon ? (size_t)(colon - d) : strlen(d);
		if (colon)
			port = colon + 1;
		const char *start = d;
		const char *end = d + hostlen;
		while (start <= end) {
			const char *dot = memchr(start, '.', (size_t)(end - start));
			const char *cend = dot ? dot : end;
			if (!valid_domain_component(start, (size_t)(cend - start)))
				return false;
			if (!dot)
				break;
			start = dot + 1;
		}
	}
	if (port) {
		if (*port == '\0' || strlen(port) > 5)
			return false;
		for (const char *c = port; *c; c++)
			if (!isdigit((unsigned char)*c))
				return false;
	}
	return true;
}

/* tag := [\w][\w.-]{0,127} */
static bool valid_tag(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > TAG_MAX_LEN)
		return false;
	if (!isalnum((unsigned char)t[0]) && t[0] != '_')
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)t[i]) && t[i] != '_' && t[i] != '.' && t[i] != '-')
			return false;
	return true;
}

bool store_digest_valid(const char *d)
{
	if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 7 + 64)
		return false;
	for (const char *c = d + 7; *c; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return false;
	return true;
}

static bool is_hex64(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (const char *c = s; *c; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return false;
	return true;
}

void store_ref_clear(store_ref *ref)
{
	if (!ref)
		return;
	free(ref->domain);
	free(ref->path);
	free(ref->tag);
	free(ref->digest);
	memset(ref, 0, sizeof(*ref));
}

static int invalid(ad_error **err, const char *s, const char *why)
{
	return ad_fail(err, AD_E_INVALID, "invalid image reference \"%s\": %s", s, why);
}

int store_ref_parse(const char *s, store_ref *ret_ref, ad_error **err)
{
	if (!s || !*s)
		return ad_fail(err, AD_E_INVALID, "invalid image reference \"\": empty");
	if (is_hex64(s))
		return invalid(err, s,
			       "a 64-character hex string is an image id, not a repository name");
	_cleanup_free_ char *name = ad_strdup(s);
	_cleanup_free_ char *digest = NULL, *tag = NULL, *domain = NULL, *path = NULL;

	char *at = strchr(name, '@');
	if (at) {
		*at = '\0';
		digest = ad_strdup(at + 1);
		if (!store_digest_valid(digest))
			return invalid(
			    err, s, "digest must be sha256: followed by 64 lowercase hex digits");
	}
	char *slash = strrchr(name, '/');
	char *colon = strrchr(slash ? slash : name, ':');
	if (colon) {
		*colon = '\0';
		tag = ad_strdup(colon + 1);
		if (!valid_tag(tag))
			return invalid(
			    err, s,
			    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -");
	}
	if (!*name)
		return invalid(err, s, "repository name is empty");

	char *first = strchr(name, '/');
	bool has_domain = false;
	if (first) {
		size_t n = (size_t)(first - name);
		has_domain = memchr(name, '.', n) || memchr(name, ':', n) ||
			     (n == 9 && strncmp(name, "localhost", 9) == 0);
		for (size_t i = 0; i < n && !has_domain; i++)
			if (isupper((unsigned char)name[i]))
				has_domain = true;
	}
	if (has_domain) {
		domain = ad_strndup(name, (size_t)(first - name));
		path = ad_strdup(first + 1);
	} else {
		domain = ad_strdup("docker.io");
		path = ad_strdup(name);
	}
	if (strcmp(domain, "index.docker.io") == 0) {
		free(domain);
		domain = ad_strdup("docker.io");
	}
	if (!valid_domain(domain))
		return invalid(err, s, "registry host is not a valid host[:port]");
	for (const char *c = path; *c; c++)
		if (isupper((unsigned char)*c))
			return invalid(err, s, "repository name must be lowercase");
	if (!valid_path(path))
		return invalid(err, s,
			       "repository path components must be [a-z0-9] separated by '.', "
			       "'_', '__' or '-' runs, joined by '/'");
	if (strcmp(domain, "docker.io") == 0 && !strchr(path, '/')) {
		char *p = ad_asprintf("library/%s", path);
		free(path);
		path = p;
	}
	if (strlen(domain) + 1 + strlen(path) > NAME_MAX_LEN)
		return invalid(err, s, "repository name is longer than 255 characters");
	if (!tag && !digest)
		tag = ad_strdup("latest");

	ret_ref->domain = ad_steal_ptr(domain);
	ret_ref->path = ad_steal_ptr(path);
	ret_ref->tag = ad_steal_ptr(tag);
	ret_ref->digest = ad_steal_ptr(digest);
	return 0;
}

char *store_ref_name(const store_ref *ref)
{
	return ad_asprintf("%s/%s", ref->domain, ref->path);
}

char *store_ref_string(const store_ref *ref)
{
	return ad_asprintf("%s/%s%s%s%s%s", ref->domain, ref->path, ref->tag ? ":" : "",
			   ref->tag ? ref->tag : "", ref->digest ? "@" : "",
			   ref->digest ? ref->digest : "");
}
