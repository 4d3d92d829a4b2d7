/* Docker's word processing for Dockerfile instructions (what BuildKit's
 * shell lexer does): quotes, escapes and variable expansion, optionally
 * splitting into words at unquoted whitespace. Written from the documented
 * behaviour (docs.docker.com "Environment replacement"). */
#include "build_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lexer {
	const char *s;
	size_t i;
	char escape;
	df_lookup_fn lookup;
	void *userdata;
	ad_error **err;
	/* the word being built */
	char *w;
	size_t wlen, wcap;
	bool in_word; /* something (even "") was seen: the word exists */
} lexer;

static void put(lexer *lx, const char *p, size_t n)
{
	if (lx->wlen + n + 1 > lx->wcap) {
		lx->wcap = (lx->wlen + n + 1) * 2;
		lx->w = ad_realloc(lx->w, lx->wcap);
	}
	memcpy(lx->w + lx->wlen, p, n);
	lx->wlen += n;
	lx->w[lx->wlen] = '\0';
	lx->in_word = true;
}

static void putc_(lexer *lx, char c)
{
	put(lx, &c, 1);
}

static int expand_into(lexer *lx, const char *word, char **ret);

/* After a '$' at lx->i. */
static int dollar(lexer *lx)
{
	const char *s = lx->s;
	if (s[lx->i] != '{') {
		size_t start = lx->i;
		if (isdigit((unsigned char)s[lx->i])) {
			lx->i++; /* $1: positional, always empty here */
			return 0;
		}
		while (isalnum((unsigned char)s[lx->i]) || s[lx->i] == '_')
			lx->i++;
		if (lx->i == start) {
			putc_(lx, '$');
			return 0;
		}
		const char *v = lx->lookup(lx->userdata, s + start, lx->i - start);
		if (v)
			put(lx, v, strlen(v));
		return 0;
	}
	lx->i++;
	size_t start = lx->i;
	while (isalnum((unsigned char)s[lx->i]) || s[lx->i] == '_')
		lx->i++;
	size_t nlen = lx->i - start;
	if (nlen == 0)
		return ad_fail(lx->err, AD_E_INVALID, "bad substitution in '%s'", s);
	const char *v = lx->lookup(lx->userdata, s + start, nlen);
	if (s[lx->i] == '}') {
		lx->i++;
		if (v)
			put(lx, v, strlen(v));
		return 0;
	}
	bool colon = s[lx->i] == ':';
	if (colon)
		lx->i++;
	char op = s[lx->i];
	if (op != '-' && op != '+' && op != '?')
		return ad_fail(lx->err, AD_E_INVALID, "bad substitution in '%s'", s);
	lx->i++;
	/* The word runs to the matching '}' (nested ${} allowed). */
	size_t wstart = lx->i;
	int depth = 1;
	while (s[lx->i] && depth) {
		if (s[lx->i] == lx->escape && s[lx->i + 1])
			lx->i++;
		else if (s[lx->i] == '{')
			depth++;
		else if (s[lx->i] == '}')
			depth--;
		if (depth)
			lx->i++;
	}
	if (depth)
		return ad_fail(lx->err, AD_E_INVALID, "missing '}' in '%s'", s);
	_cleanup_free_ char *word = ad_strndup(s + wstart, lx->i - wstart);
	lx->i++;
	bool set = v && (!colon || *v);
	_cleanup_free_ char *expanded = NULL;
	if (op == '-') {
		if (set)
			put(lx, v, strlen(v));
		else if (expand_into(lx, word, &expanded) == 0)
			put(lx, expanded, strlen(expanded));
		else
			return -1;
	} else if (op == '+') {
		if (set) {
			if (expand_into(lx, word, &expanded) < 0)
				return -1;
			put(lx, expanded, strlen(expanded));
		}
	} else {
		if (!set) {
			if (expand_into(lx, word, &expanded) < 0)
				return -1;
			return ad_fail(lx->err, AD_E_INVALID, "%.*s: %s", (int)nlen, s + start,
				       *expanded ? expanded : "is not set");
		}
		put(lx, v, strlen(v));
	}
	return 0;
}

/* Processes from lx->i; with `split`, stops at unquoted whitespace. */
static int word(lexer *lx, bool split)
{
	const char *s = lx->s;
	while (s[lx->i]) {
		char c = s[lx->i];
		if (split && isspace((unsigned char)c))
			return 0;
		if (c == lx->escape) {
			lx->i++;
			if (!s[lx->i]) {
				putc_(lx, c);
				return 0;
			}
			putc_(lx, s[lx->i++]);
		} else if (c == '\'') {
			lx->i++;
			size_t start = lx->i;
			while (s[lx->i] && s[lx->i] != '\'')
				lx->i++;
			if (!s[lx->i])
				return ad_fail(lx->err, AD_E_INVALID, "unexpected end of statement while looking for matching single-quote in '%s'", s);
			put(lx, s + start, lx->i - start);
			lx->i++;
		} else if (c == '"') {
			lx->i++;
			lx->in_word = true;
			for (;;) {
				char d = s[lx->i];
				if (!d)
					return ad_fail(lx->err, AD_E_INVALID, "unexpected end of statement while looking for matching double-quote in '%s'", s);
				if (d == '"') {
					lx->i++;
					break;
				}
				if (d == lx->escape && (s[lx->i + 1] == '"' || s[lx->i + 1] == '$' ||
							s[lx->i + 1] == lx->escape)) {
					putc_(lx, s[lx->i + 1]);
					lx->i += 2;
				} else if (d == '$') {
					lx->i++;
					if (dollar(lx) < 0)
						return -1;
				} else {
					putc_(lx, d);
					lx->i++;
				}
			}
		} else if (c == '$') {
			lx->i++;
			if (dollar(lx) < 0)
				return -1;
		} else {
			putc_(lx, c);
			lx->i++;
		}
	}
	return 0;
}

static int expand_into(lexer *parent, const char *w, char **ret)
{
	lexer lx = {.s = w,
		    .escape = parent->escape,
		    .lookup = parent->lookup,
		    .userdata = parent->userdata,
		    .err = parent->err};
	if (word(&lx, false) < 0) {
		free(lx.w);
		return -1;
	}
	*ret = lx.w ? lx.w : ad_strdup("");
	return 0;
}

int df_expand_word(const char *w, char escape, df_lookup_fn lookup, void *userdata, char **ret,
		   ad_error **err)
{
	lexer lx = {.s = w, .escape = escape, .lookup = lookup, .userdata = userdata, .err = err};
	return expand_into(&lx, w, ret);
}

int df_expand_words(const char *s, char escape, df_lookup_fn lookup, void *userdata,
		    char ***ret, ad_error **err)
{
	lexer lx = {.s = s, .escape = escape, .lookup = lookup, .userdata = userdata, .err = err};
	size_t n = 0;
	char **v = ad_malloc0(sizeof(char *));
	for (;;) {
		while (isspace((unsigned char)s[lx.i]))
			lx.i++;
		if (!s[lx.i])
			break;
		lx.in_word = false;
		lx.wlen = 0;
		if (word(&lx, true) < 0) {
			free(lx.w);
			ad_strv_free(v);
			return -1;
		}
		/* An unquoted variable that expanded to nothing is no word. */
		if (lx.wlen == 0 && !lx.in_word)
			continue;
		v = ad_realloc(v, sizeof(char *) * (n + 2));
		v[n++] = ad_strndup(lx.w ? lx.w : "", lx.wlen);
		v[n] = NULL;
	}
	free(lx.w);
	*ret = v;
	return 0;
}

int df_split_raw(const char *s, char escape, char ***ret, ad_error **err)
{
	size_t n = 0, i = 0;
	char **v = ad_malloc0(sizeof(char *));
	for (;;) {
		while (isspace((unsigned char)s[i]))
			i++;
		if (!s[i])
			break;
		size_t start = i;
		char quote = 0;
		while (s[i] && (quote || !isspace((unsigned char)s[i]))) {
			if (s[i] == escape && s[i + 1] && quote != '\'')
				i++;
			else if (!quote && (s[i] == '"' || s[i] == '\''))
				quote = s[i];
			else if (quote && s[i] == quote)
				quote = 0;
			i++;
		}
		if (quote) {
			ad_strv_free(v);
			return ad_fail(err, AD_E_INVALID, "unterminated quote in '%s'", s);
		}
		v = ad_realloc(v, sizeof(char *) * (n + 2));
		v[n++] = ad_strndup(s + start, i - start);
		v[n] = NULL;
	}
	*ret = v;
	return 0;
}
