/* libadstreaming's token store: single use, bound to the request, bounded,
 * expiring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "st_int.h"

static st_request *req_exec(void)
{
	static char *cmd[] = {"true", NULL};
	st_request r = {.kind = ST_EXEC, .target = "c1", .cmd = cmd, .out = true};
	return st_request_copy(&r);
}

static void test_tokens(void **state)
{
	(void)state;
	st_tokens *t = st_tokens_new(2, 200);
	char *a = NULL, *b = NULL, *c = NULL;
	ad_error *e = NULL;
	assert_int_equal(st_tokens_add(t, req_exec(), &a, &e), 0);
	assert_int_equal(st_tokens_add(t, req_exec(), &b, &e), 0);
	assert_string_not_equal(a, b);
	assert_true(strlen(a) >= 22);
	/* full */
	assert_int_equal(st_tokens_add(t, req_exec(), &c, &e), -1);
	assert_int_equal(e->code, AD_E_RESOURCE);
	ad_error_free(&e);
	/* single use */
	st_request *r = st_tokens_take(t, a);
	assert_non_null(r);
	assert_string_equal(r->cmd[0], "true");
	st_request_free(r);
	assert_null(st_tokens_take(t, a));
	assert_null(st_tokens_take(t, "nope"));
	/* expiry */
	usleep(250 * 1000);
	assert_null(st_tokens_take(t, b));
	assert_int_equal(st_tokens_add(t, req_exec(), &c, &e), 0);
	free(a);
	free(b);
	free(c);
	st_tokens_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tokens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
