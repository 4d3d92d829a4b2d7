#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cgroup.h"

static void test_version(void **state)
{
	(void)state;
	assert_string_equal(cg_version_name(), "v1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_version)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
