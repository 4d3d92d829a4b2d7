/* The Dockerfile parser: parser directives, comments, line continuations,
 * instructions with their flags and JSON (exec) forms. Expansion happens
 * later, per instruction, when the builder knows the variables. */
#include "build_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

/* Instructions and the flags each takes (NULL-terminated list after the name). */
static const char *const instructions[][6] = {
    {"FROM", "platform", NULL},
    {"RUN", "network", NULL},
    {"COPY", "from", "chown", "chmod", NULL},
    {"ADD", "chown", "chmod", NULL},
    {"ENV", NULL},
    {"ARG", NULL},
    {"WORKDIR", NULL},
    {"USER", NULL},
    {"ENTRYPOINT", NULL},
    {"CMD", NULL},
    {"EXPOSE", NULL},
    {"LABEL", NULL},
    {"VOLUME", NULL},
    {"STOPSIGNAL", NULL},
    {"HEALTHCHECK", "interval", "timeout", "start-period", "retries", NULL},
    {"SHELL", NULL},
    {"MAINTAINER", NULL},
};

/* Forms that take a JSON array of strings. */
static bool takes_exec_form(const char *cmd)
{
	static const char *const v[] = {"RUN",	"CMD",	"ENTRYPOINT", "SHELL",
					"COPY", "ADD", "VOLUME",     "HEALTHCHECK"};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (strcmp(cmd, v[i]) == 0)
			return true;
	return false;
}

size_t df_strv_len(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

static char **strv_push(char **v, char *owned)
{
	size_t n = df_strv_len(v);
	v = ad_realloc(v, sizeof(char *) * (n + 2));
	v[n] = owned;
	v[n + 1] = NULL;
	return v;
}

void df_free(dockerfile *df)
{
	for (size_t i = 0; i < df->n; i++) {
		free(df->v[i].cmd);
		free(df->v[i].args);
		free(df->v[i].original);
		ad_strv_free(df->v[i].flags);
		ad_strv_free(df->v[i].exec);
	}
	free(df->v);
	*df = (dockerfile){0};
}

const char *df_flag(const df_instr *in, const char *name)
{
	size_t n = strlen(name);
	for (char **f = in->flags; f && *f; f++)
		if (strncmp(*f, name, n) == 0 && (*f)[n] == '=')
			return *f + n + 1;
	return NULL;
}

static char *trim(char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* "# escape=`" at the top: returns true and sets *escape for a directive. */
static bool parse_directive(const char *line, char *escape, bool *ret_is_directive,
			    const char *name, unsigned lineno, ad_error **err)
{
	*ret_is_directive = false;
	const char *p = line;
	if (*p != '#')
		return true;
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	const char *key = p;
	while (isalpha((unsigned char)*p))
		p++;
	size_t klen = (size_t)(p - key);
	while (*p == ' ' || *p == '\t')
		p++;
	if (klen == 0 || *p != '=')
		return true; /* a comment: directives end here */
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	_cleanup_free_ char *value = ad_strdup(p);
	char *v = trim(value);
	*ret_is_directive = true;
	if (klen == 6 && strncasecmp(key, "escape", 6) == 0) {
		if (strcmp(v, "\\") != 0 && strcmp(v, "`") != 0) {
			ad_fail(err, AD_E_INVALID, "%s:%u: invalid escape directive '%s' (\\ or `)",
				name, lineno, v);
			return false;
		}
		*escape = v[0];
	}
	/* syntax=, check=: meaningful to BuildKit's front ends only. */
	return true;
}

static int parse_exec_form(const char *args, char ***ret)
{
	*ret = NULL;
	if (args[0] != '[')
		return 0;
	json_t *j = json_loads(args, JSON_DECODE_ANY, NULL);
	if (!json_is_array(j)) {
		json_decref(j);
		return 0; /* not JSON: the shell form, as Docker falls back */
	}
	char **v = ad_malloc0(sizeof(char *));
	size_t i;
	json_t *s;
	json_array_foreach(j, i, s)
	{
		if (!json_is_string(s)) {
			ad_strv_free(v);
			json_decref(j);
			return 0;
		}
		v = strv_push(v, ad_strdup(json_string_value(s)));
	}
	json_decref(j);
	*ret = v;
	return 0;
}

static int add_instruction(dockerfile *df, const char *name, const char *text, unsigned lineno,
			   ad_error **err)
{
	const char *p = text;
	while (*p && !isspace((unsigned char)*p))
		p++;
	_cleanup_free_ char *cmd = ad_strndup(text, (size_t)(p - text));
	for (char *c = cmd; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	const char *const *spec = NULL;
	for (size_t i = 0; i < sizeof(instructions) / sizeof(instructions[0]); i++)
		if (strcmp(instructions[i][0], cmd) == 0)
			spec = instructions[i];
	if (!spec) {
		if (strcmp(cmd, "ONBUILD") == 0)
			return ad_fail(err, AD_E_INVALID, "%s:%u: ONBUILD is not supported", name,
				       lineno);
		return ad_fail(err, AD_E_INVALID, "%s:%u: unknown instruction: %s", name, lineno,
			       cmd);
	}
	while (*p && isspace((unsigned char)*p))
		p++;
	char **flags = NULL;
	/* Flags: leading --name=value words. */
	while (strncmp(p, "--", 2) == 0) {
		const char *end = p;
		while (*end && !isspace((unsigned char)*end))
			end++;
		_cleanup_free_ char *flag = ad_strndup(p + 2, (size_t)(end - p - 2));
		char *eq = strchr(flag, '=');
		size_t nlen = eq ? (size_t)(eq - flag) : strlen(flag);
		bool known = false;
		for (const char *const *f = spec + 1; *f; f++)
			if (strlen(*f) == nlen && strncmp(*f, flag, nlen) == 0)
				known = true;
		if (!known || !eq) {
			ad_strv_free(flags);
			if (!known)
				return ad_fail(err, AD_E_INVALID, "%s:%u: %s: unsupported flag --%.*s",
					       name, lineno, cmd, (int)nlen, flag);
			return ad_fail(err, AD_E_INVALID, "%s:%u: %s: flag --%s needs a value",
				       name, lineno, cmd, flag);
		}
		flags = strv_push(flags, ad_steal_ptr(flag));
		p = end;
		while (*p && isspace((unsigned char)*p))
			p++;
	}
	/* Heredocs ("RUN <<EOF") are BuildKit syntax; a << later in a shell
	 * command is the shell's own. */
	if (strncmp(p, "<<", 2) == 0) {
		ad_strv_free(flags);
		return ad_fail(err, AD_E_INVALID, "%s:%u: %s: heredocs are not supported", name,
			       lineno, cmd);
	}
	if (!*p) {
		ad_strv_free(flags);
		return ad_fail(err, AD_E_INVALID, "%s:%u: %s requires at least one argument", name,
			       lineno, cmd);
	}
	df->v = ad_realloc(df->v, sizeof(df_instr) * (df->n + 1));
	df_instr *in = &df->v[df->n++];
	*in = (df_instr){.cmd = ad_steal_ptr(cmd),
			 .args = ad_strdup(p),
			 .flags = flags,
			 .line = lineno,
			 .original = ad_strdup(text)};
	if (takes_exec_form(in->cmd))
		parse_exec_form(in->args, &in->exec);
	if (strcmp(in->cmd, "SHELL") == 0 && (!in->exec || !in->exec[0]))
		return ad_fail(err, AD_E_INVALID, "%s:%u: SHELL requires a JSON array of strings",
			       name, lineno);
	return 0;
}

int df_parse(const char *name, const char *text, size_t len, dockerfile *ret, ad_error **err)
{
	dockerfile df = {.escape = '\\'};
	bool directives = true;
	char *buf = ad_strndup(text, len);
	if (strlen(buf) != len) {
		free(buf);
		return ad_fail(err, AD_E_INVALID, "%s: contains a NUL byte", name);
	}
	char *joined = NULL;
	size_t joined_len = 0;
	unsigned start = 0, lineno = 0;
	int r = 0;
	char *save = NULL;
	for (char *line = buf; line && r == 0; line = save) {
		char *nl = strchr(line, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		lineno++;
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[--l] = '\0';
		/* A continuation line keeps its leading whitespace (as Docker). */
		char *t = joined ? line : trim(line);
		if (joined) {
			size_t tl0 = strlen(t);
			while (tl0 && isspace((unsigned char)t[tl0 - 1]))
				t[--tl0] = '\0';
		}
		if (directives) {
			bool is_directive;
			if (!parse_directive(t, &df.escape, &is_directive, name, lineno, err)) {
				r = -1;
				break;
			}
			if (is_directive)
				continue;
			directives = false;
		}
		const char *first = t + strspn(t, " \t");
		if (*first == '#' || !*first)
			continue; /* comments and empty lines, also inside a continuation */
		if (!joined) {
			start = lineno;
			joined = ad_strdup("");
			joined_len = 0;
		}
		size_t tl = strlen(t);
		bool cont = tl && t[tl - 1] == df.escape;
		if (cont)
			t[--tl] = '\0';
		joined = ad_realloc(joined, joined_len + tl + 1);
		memcpy(joined + joined_len, t, tl + 1);
		joined_len += tl;
		if (cont)
			continue;
		r = add_instruction(&df, name, trim(joined), start, err);
		free(joined);
		joined = NULL;
	}
	if (r == 0 && joined) {
		char *t = trim(joined);
		if (*t)
			r = add_instruction(&df, name, t, start, err);
	}
	free(joined);
	free(buf);
	if (r == 0 && df.n == 0)
		r = ad_fail(err, AD_E_INVALID, "%s: the file has no instructions", name);
	if (r == 0 && strcmp(df.v[0].cmd, "FROM") != 0 && strcmp(df.v[0].cmd, "ARG") != 0)
		r = ad_fail(err, AD_E_INVALID, "%s:%u: the first instruction must be FROM (or ARG), not %s",
			    name, df.v[0].line, df.v[0].cmd);
	for (size_t i = 0; r == 0 && i < df.n && strcmp(df.v[i].cmd, "FROM") != 0; i++)
		if (strcmp(df.v[i].cmd, "ARG") != 0)
			r = ad_fail(err, AD_E_INVALID, "%s:%u: %s before the first FROM", name,
				    df.v[i].line, df.v[i].cmd);
	if (r < 0) {
		df_free(&df);
		return -1;
	}
	*ret = df;
	return 0;
}
