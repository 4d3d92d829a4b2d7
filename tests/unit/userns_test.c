/* agent/pods/userns.c: the subordinate id files, the check of mappings a
 * caller gives, the choice of a free block, the stored text form. Pure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pods_int.h"

#define BLOCK 65536

/* r: what the call returned; *e: its error (taken by address: the call
 * sets it, and argument evaluation has no order). */
static void expect_error(int r, ad_error **e, ad_code code, const char *needle)
{
	assert_int_equal(r, -1);
	assert_non_null(*e);
	if ((*e)->code != code || !strstr((*e)->message, needle))
		fail_msg("got code %d \"%s\", wanted code %d with \"%s\"", (int)(*e)->code,
			 (*e)->message, (int)code, needle);
	ad_error_free(e);
}

static void test_parse(void **state)
{
	(void)state;
	const char *text = "# comment\n"
			   "\n"
			   "other:100000:65536\n"
			   "agentd:200000:65536\n"
			   "4242:400000:131072\n"
			   "agentd:300000:0\n"
			   "agentd:600000:10";
	mgr_subid_range *r = NULL;
	size_t n = 0;
	ad_error *e = NULL;
	assert_int_equal(mgr_subids_parse(text, "subuid", "agentd", 4242, &r, &n, &e), 0);
	/* by name and by uid; an empty range is none */
	assert_int_equal(n, 3);
	assert_int_equal(r[0].start, 200000);
	assert_int_equal(r[0].count, 65536);
	assert_int_equal(r[1].start, 400000);
	assert_int_equal(r[1].count, 131072);
	assert_int_equal(r[2].start, 600000);
	assert_int_equal(r[2].count, 10);
	free(r);
	/* a user without ranges, a malformed line */
	expect_error(mgr_subids_parse(text, "subuid", "nobody", (uid_t)-1, &r, &n, &e), &e,
		     AD_E_PRECONDITION, "no subordinate ids for user nobody in subuid");
	expect_error(
	    mgr_subids_parse("agentd:1:2\nagentd:x:5\n", "f", "agentd", (uid_t)-1, &r, &n, &e), &e,
	    AD_E_PRECONDITION, "f:2: expected user:start:count");
	expect_error(
	    mgr_subids_parse("agentd:99999999999:5\n", "f", "agentd", (uid_t)-1, &r, &n, &e), &e,
	    AD_E_PRECONDITION, "f:1:");
	expect_error(mgr_subids_read("/nonexistent/subuid", "agentd", &r, &n, &e), &e,
		     AD_E_NOT_FOUND, "subordinate ids of agentd");
	expect_error(mgr_subids_read("/etc/passwd", "", &r, &n, &e), &e, AD_E_PRECONDITION,
		     "no user configured");
}

static const mgr_subid_range allowed[] = {
    {100000, 2 * BLOCK}, {100000 + 2 * BLOCK, BLOCK}, {1000000, 1000}};

static void test_check(void **state)
{
	(void)state;
	ad_error *e = NULL;
	rt_id_map ok[] = {{0, 100000, BLOCK}};
	assert_int_equal(mgr_idmap_check(ok, 1, allowed, 3, "uids", "F", &e), 0);
	/* across two ranges that touch */
	rt_id_map across[] = {{0, 100000 + BLOCK, 2 * BLOCK}};
	assert_int_equal(mgr_idmap_check(across, 1, allowed, 3, "uids", "F", &e), 0);
	rt_id_map two[] = {{0, 1000000, 500}, {500, 100000, 100}};
	assert_int_equal(mgr_idmap_check(two, 2, allowed, 3, "uids", "F", &e), 0);

	rt_id_map outside[] = {{0, 1000, 10}};
	expect_error(mgr_idmap_check(outside, 1, allowed, 3, "uids", "F", &e), &e, AD_E_INVALID,
		     "host ids 1000-1009 is outside the subordinate ranges agentd may use (F)");
	rt_id_map past_end[] = {{0, 1000000, 1001}};
	expect_error(mgr_idmap_check(past_end, 1, allowed, 3, "gids", "F", &e), &e, AD_E_INVALID,
		     "gids mapping of host ids 1000000-1001000 is outside");
	rt_id_map gap[] = {{0, 100000, 4 * BLOCK}};
	expect_error(mgr_idmap_check(gap, 1, allowed, 3, "uids", "F", &e), &e, AD_E_INVALID,
		     "outside");
	rt_id_map empty[] = {{0, 100000, 0}};
	expect_error(mgr_idmap_check(empty, 1, allowed, 3, "uids", "F", &e), &e, AD_E_INVALID,
		     "length 0");
	rt_id_map no_root[] = {{1, 100000, 10}};
	expect_error(mgr_idmap_check(no_root, 1, allowed, 3, "uids", "F", &e), &e, AD_E_INVALID,
		     "must map id 0");
	rt_id_map inside_overlap[] = {{0, 100000, 10}, {5, 100100, 10}};
	expect_error(mgr_idmap_check(inside_overlap, 2, allowed, 3, "uids", "F", &e), &e,
		     AD_E_INVALID, "overlap inside the container");
	rt_id_map host_overlap[] = {{0, 100000, 10}, {100, 100005, 10}};
	expect_error(mgr_idmap_check(host_overlap, 2, allowed, 3, "uids", "F", &e), &e,
		     AD_E_INVALID, "overlap on the host");
	rt_id_map overflow[] = {{0, 0xfffffff0u, 0x20}};
	expect_error(mgr_idmap_check(overflow, 1, allowed, 3, "uids", "F", &e), &e, AD_E_INVALID,
		     "overflows");
	expect_error(mgr_idmap_check(ok, 0, allowed, 3, "uids", "F", &e), &e, AD_E_INVALID,
		     "no uids mappings");

	rt_id_map used[] = {{0, 100000 + BLOCK, BLOCK}};
	assert_int_equal(mgr_idmap_in_use(ok, 1, used, 1, "uids", &e), 0);
	rt_id_map clash[] = {{0, 100000 + BLOCK + 5, 10}};
	expect_error(mgr_idmap_in_use(clash, 1, used, 1, "uids", &e), &e, AD_E_INVALID,
		     "already mapped for another pod");
}

static void test_allocate(void **state)
{
	(void)state;
	ad_error *e = NULL;
	uint32_t host;
	/* first fit from the lowest range */
	assert_int_equal(mgr_idmap_allocate(allowed, 3, NULL, 0, BLOCK, "uids", "F", &host, &e), 0);
	assert_int_equal(host, 100000);
	rt_id_map used[3] = {{0, 100000, BLOCK}};
	assert_int_equal(mgr_idmap_allocate(allowed, 3, used, 1, BLOCK, "uids", "F", &host, &e), 0);
	assert_int_equal(host, 100000 + BLOCK);
	/* the third block spans into the next range, which touches */
	used[1] = (rt_id_map){0, 100000 + BLOCK, BLOCK};
	assert_int_equal(mgr_idmap_allocate(allowed, 3, used, 2, BLOCK, "uids", "F", &host, &e), 0);
	assert_int_equal(host, 100000 + 2 * BLOCK);
	used[2] = (rt_id_map){0, 100000 + 2 * BLOCK, BLOCK};
	/* exhausted (the 1000-id range is too small) */
	expect_error(mgr_idmap_allocate(allowed, 3, used, 3, BLOCK, "uids", "F", &host, &e), &e,
		     AD_E_RESOURCE,
		     "no free block of 65536 subordinate uids left in F (3 block(s)");
	/* a released block in the middle is found again */
	used[0] = used[2];
	assert_int_equal(mgr_idmap_allocate(allowed, 3, used, 2, BLOCK, "uids", "F", &host, &e), 0);
	assert_int_equal(host, 100000);
	/* a small caller-given mapping in the way: the next fit after it */
	rt_id_map small[] = {{0, 100010, 10}};
	assert_int_equal(mgr_idmap_allocate(allowed, 3, small, 1, BLOCK, "uids", "F", &host, &e),
			 0);
	assert_int_equal(host, 100020);
	/* a range at the very top of the id space */
	const mgr_subid_range top[] = {{0xffffffffu - BLOCK + 1, BLOCK}};
	assert_int_equal(mgr_idmap_allocate(top, 1, NULL, 0, BLOCK, "uids", "F", &host, &e), 0);
	assert_int_equal(host, 0xffffffffu - BLOCK + 1);
}

static void test_text(void **state)
{
	(void)state;
	rt_id_map m[] = {{0, 100000, 65536}, {65536, 4000000, 1}};
	char *t = mgr_idmaps_to_text(m, 2);
	assert_string_equal(t, "0:100000:65536,65536:4000000:1");
	rt_id_map *back = NULL;
	size_t n = 0;
	assert_int_equal(mgr_idmaps_from_text(t, &back, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(back, m, sizeof(m));
	free(back);
	free(t);
	assert_int_equal(mgr_idmaps_from_text("0:1", &back, &n), -1);
	assert_int_equal(mgr_idmaps_from_text("", &back, &n), 0);
	assert_int_equal(n, 0);
	free(back);
}

static void test_id_in_container(void **state)
{
	(void)state;
	const char *identity = "         0          0 4294967295\n";
	assert_int_equal(mgr_id_in_container(identity, 1234), 1234);
	const char *two = "         0     100000      65536\n     65536    4000000         10\n";
	assert_int_equal(mgr_id_in_container(two, 100000), 0);
	assert_int_equal(mgr_id_in_container(two, 100005), 5);
	assert_int_equal(mgr_id_in_container(two, 4000009), 65545);
	assert_int_equal(mgr_id_in_container(two, 0), 65534);
	assert_int_equal(mgr_id_in_container(two, 165536), 65534);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_allocate),	    cmocka_unit_test(test_text),
	    cmocka_unit_test(test_id_in_container),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
