/* build_test.c — the Dockerfile parser (directives, comments, continuations,
 * flags, exec forms, file:line errors) and Docker's word expansion
 * (agent/services/build/dockerfile.c, words.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "build_int.h"

static dockerfile parse_ok(const char *text)
{
	dockerfile df = {0};
	ad_error *e = NULL;
	int r = df_parse("Dockerfile", text, strlen(text), &df, &e);
	if (r < 0)
		fail_msg("parse failed: %s", e->message);
	return df;
}

static void parse_fails(const char *text, const char *message)
{
	dockerfile df = {0};
	ad_error *e = NULL;
	assert_int_equal(df_parse("Dockerfile", text, strlen(text), &df, &e), -1);
	assert_non_null(e);
	if (!strstr(e->message, message))
		fail_msg("'%s' does not contain '%s'", e->message, message);
	assert_int_equal(e->code, AD_E_INVALID);
	ad_error_free(&e);
}

static void test_parse_instructions(void **state)
{
	(void)state;
	dockerfile df = parse_ok("# escape=\\\n"
				 "\n"
				 "# a comment\n"
				 "from busybox AS base\n"
				 "RUN echo a \\\n"
				 "# a comment inside\n"
				 "\n"
				 "    && echo b\n"
				 "COPY --from=base --chown=1:2 a b /dst/\n"
				 "CMD [\"sh\", \"-c\", \"echo hi\"]\n"
				 "ENTRYPOINT [not json\n"
				 "HEALTHCHECK --interval=5s CMD true\n");
	assert_int_equal(df.n, 6);
	assert_string_equal(df.v[0].cmd, "FROM");
	assert_int_equal(df.v[0].line, 4);
	assert_string_equal(df.v[0].args, "busybox AS base");
	assert_string_equal(df.v[1].cmd, "RUN");
	assert_int_equal(df.v[1].line, 5);
	assert_string_equal(df.v[1].args, "echo a     && echo b");
	assert_null(df.v[1].exec);
	assert_string_equal(df_flag(&df.v[2], "from"), "base");
	assert_string_equal(df_flag(&df.v[2], "chown"), "1:2");
	assert_null(df_flag(&df.v[2], "chmod"));
	assert_string_equal(df.v[2].args, "a b /dst/");
	assert_non_null(df.v[3].exec);
	assert_string_equal(df.v[3].exec[2], "echo hi");
	assert_null(df.v[3].exec[3]);
	assert_null(df.v[4].exec); /* not JSON: the shell form */
	assert_string_equal(df_flag(&df.v[5], "interval"), "5s");
	df_free(&df);
}

static void test_escape_directive(void **state)
{
	(void)state;
	dockerfile df = parse_ok("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo done\n");
	assert_int_equal(df.escape, '`');
	assert_int_equal(df.n, 2);
	assert_string_equal(df.v[1].args, "dir c:\\   && echo done");
	df_free(&df);
	/* A directive after a comment is a comment. */
	df = parse_ok("# hello\n# escape=`\nFROM x\nRUN a \\\n b\n");
	assert_int_equal(df.escape, '\\');
	assert_string_equal(df.v[1].args, "a  b");
	df_free(&df);
}

static void test_parse_errors(void **state)
{
	(void)state;
	parse_fails("FROM x\nRUN true\nFROOM y\n", "Dockerfile:3: unknown instruction: FROOM");
	parse_fails("FROM x\nONBUILD RUN true\n", "Dockerfile:2: ONBUILD is not supported");
	parse_fails("FROM x\nCOPY --link a b\n", "Dockerfile:2: COPY: unsupported flag --link");
	parse_fails("FROM x\nRUN --mount=type=cache,target=/c true\n",
		    "Dockerfile:2: RUN: unsupported flag --mount");
	parse_fails("FROM x\nCOPY --chown a b\n", "Dockerfile:2: COPY: flag --chown needs a value");
	parse_fails("FROM x\nRUN <<EOF\necho\nEOF\n", "Dockerfile:2: RUN: heredocs are not supported");
	parse_fails("RUN true\n", "Dockerfile:1: the first instruction must be FROM");
	parse_fails("ARG A\nENV B=1\nFROM x\n", "Dockerfile:2: ENV before the first FROM");
	parse_fails("FROM x\nRUN\n", "Dockerfile:2: RUN requires at least one argument");
	parse_fails("FROM x\nSHELL sh -c\n", "Dockerfile:2: SHELL requires a JSON array");
	parse_fails("# escape=x\nFROM x\n", "Dockerfile:1: invalid escape directive");
	parse_fails("\n# only a comment\n", "Dockerfile: the file has no instructions");
}

static const char *vars(void *userdata, const char *name, size_t len)
{
	(void)userdata;
	static const char *const table[][2] = {
	    {"A", "alpha"}, {"EMPTY", ""}, {"SP", "two words"}, {"P", "/usr/bin"}};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strlen(table[i][0]) == len && strncmp(table[i][0], name, len) == 0)
			return table[i][1];
	return NULL;
}

static void expands_to(const char *in, const char *want)
{
	char *out = NULL;
	ad_error *e = NULL;
	if (df_expand_word(in, '\\', vars, NULL, &out, &e) < 0)
		fail_msg("%s: %s", in, e->message);
	if (strcmp(out, want) != 0)
		fail_msg("'%s' expanded to '%s', want '%s'", in, out, want);
	free(out);
}

static void test_expand_word(void **state)
{
	(void)state;
	expands_to("$A", "alpha");
	expands_to("${A}x", "alphax");
	expands_to("$Ax", ""); /* the variable Ax */
	expands_to("pre-$A-post", "pre-alpha-post");
	expands_to("${NOPE:-dflt}", "dflt");
	expands_to("${EMPTY:-dflt}", "dflt");
	expands_to("${EMPTY-dflt}", "");
	expands_to("${NOPE-dflt}", "dflt");
	expands_to("${A:+set}", "set");
	expands_to("${NOPE:+set}", "");
	expands_to("${EMPTY+set}", "set");
	expands_to("${NOPE:-${A}}", "alpha");
	expands_to("'$A'", "$A");
	expands_to("\"$A b\"", "alpha b");
	expands_to("\\$A", "$A");
	expands_to("\"\\$A \\\"q\\\"\"", "$A \"q\"");
	expands_to("a\\ b", "a b");
	expands_to("$", "$");
	expands_to("$1x", "x");
	expands_to("$P:/bin", "/usr/bin:/bin");
	char *out = NULL;
	ad_error *e = NULL;
	assert_int_equal(df_expand_word("${NOPE:?is needed}", '\\', vars, NULL, &out, &e), -1);
	assert_string_equal(e->message, "NOPE: is needed");
	ad_error_free(&e);
	assert_int_equal(df_expand_word("${A", '\\', vars, NULL, &out, &e), -1);
	assert_non_null(strstr(e->message, "bad substitution"));
	ad_error_free(&e);
	assert_int_equal(df_expand_word("'open", '\\', vars, NULL, &out, &e), -1);
	assert_non_null(strstr(e->message, "single-quote"));
	ad_error_free(&e);
	/* The escape directive's character. */
	assert_int_equal(df_expand_word("`$A", '`', vars, NULL, &out, &e), 0);
	assert_string_equal(out, "$A");
	free(out);
}

static void test_expand_words(void **state)
{
	(void)state;
	char **w = NULL;
	ad_error *e = NULL;
	assert_int_equal(df_expand_words("  a $SP \"$SP\" '' $NOPE b\\ c  ", '\\', vars, NULL, &w,
					 &e),
			 0);
	/* An unquoted expansion is not split again (Docker), "" is a word,
	 * an unset variable alone is none. */
	assert_int_equal(df_strv_len(w), 5);
	assert_string_equal(w[0], "a");
	assert_string_equal(w[1], "two words");
	assert_string_equal(w[2], "two words");
	assert_string_equal(w[3], "");
	assert_string_equal(w[4], "b c");
	ad_strv_free(w);
	assert_int_equal(df_split_raw("A=1 B=\"two words\" C='x y'", '\\', &w, &e), 0);
	assert_int_equal(df_strv_len(w), 3);
	assert_string_equal(w[1], "B=\"two words\"");
	assert_string_equal(w[2], "C='x y'");
	ad_strv_free(w);
}

static void test_clean_path(void **state)
{
	(void)state;
	char *p = bfs_clean_path("./a/./b/../c/");
	assert_string_equal(p, "a/c");
	free(p);
	p = bfs_clean_path("/abs//x");
	assert_string_equal(p, "abs/x");
	free(p);
	assert_null(bfs_clean_path("../x"));
	assert_null(bfs_clean_path("a/../../x"));
	p = bfs_clean_path(".");
	assert_string_equal(p, "");
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_instructions), cmocka_unit_test(test_escape_directive),
	    cmocka_unit_test(test_parse_errors),       cmocka_unit_test(test_expand_word),
	    cmocka_unit_test(test_expand_words),       cmocka_unit_test(test_clean_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
