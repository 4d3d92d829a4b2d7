/* The [images] config section and opening the image store with it. The RPCs
 * themselves are tested end to end in tests/integration/test_image_service.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "services.h"

static void test_defaults_documented(void **state)
{
	(void)state;
	cfg_config cfg;
	cfg_init(&cfg);
	assert_int_equal(cfg.max_parallel_layers, 3);
	assert_int_equal(cfg.stall_timeout, 30);
	assert_string_equal(cfg.certs_dir, "/etc/agentd/certs.d");
	assert_string_equal(cfg.auth_file, "");
	assert_string_equal(cfg.plain_http_registries, "");
	assert_string_equal(cfg.insecure_registries, "");
	assert_string_equal(cfg.registry_mirrors, "");
	/* The built-in text sets the same values and documents each key. */
	assert_int_equal(cfg_load_string(&cfg, cfg_default_text, "<built-in>", NULL), 0);
	assert_int_equal(cfg.max_parallel_layers, 3);
	assert_string_equal(cfg.certs_dir, "/etc/agentd/certs.d");
	cfg_free(&cfg);
	assert_non_null(strstr(cfg_default_text, "\n[images]\n"));
	const char *keys[] = {
	    "max_parallel_layers", "stall_timeout",	    "certs_dir",
	    "auth_file",	   "plain_http_registries", "insecure_registries"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char *pat = ad_asprintf("\n%s =", keys[i]);
		if (!strstr(cfg_default_text, pat))
			fail_msg("key %s is not in deploy/agentd.conf", keys[i]);
		free(pat);
	}
}

/* Empty strings are no credentials: the pull then reads the auth file. */
static void test_pull_auth(void **state)
{
	(void)state;
	store_auth a;
	assert_false(svc_pull_auth(&a, NULL, "", NULL, "", NULL));
	assert_null(a.username);
	assert_null(a.password);
	assert_true(svc_pull_auth(&a, "u", "p", "", NULL, "rt"));
	assert_string_equal(a.username, "u");
	assert_string_equal(a.password, "p");
	assert_null(a.auth);
	assert_null(a.identity_token);
	assert_string_equal(a.registry_token, "rt");
	assert_true(svc_pull_auth(&a, NULL, NULL, NULL, "idt", NULL));
	assert_string_equal(a.identity_token, "idt");
}

static void test_values(void **state)
{
	(void)state;
	cfg_config cfg;
	cfg_init(&cfg);
	assert_int_equal(cfg_load_string(&cfg,
					 "[images]\nmax_parallel_layers = 8\nstall_timeout = 5\n"
					 "certs_dir =\nauth_file = /x/auth.json\n"
					 "plain_http_registries = a.lan:5000,b\n"
					 "insecure_registries = [::1]:5000\n"
					 "registry_mirrors = docker.io=https://m1|http://m2:5000/x,"
					 "q.io=http://m3\n",
					 "t.conf", NULL),
			 0);
	assert_int_equal(cfg.max_parallel_layers, 8);
	assert_int_equal(cfg.stall_timeout, 5);
	assert_string_equal(cfg.certs_dir, "");
	assert_string_equal(cfg.auth_file, "/x/auth.json");
	assert_string_equal(cfg.plain_http_registries, "a.lan:5000,b");
	assert_string_equal(cfg.insecure_registries, "[::1]:5000");
	assert_string_equal(cfg.registry_mirrors,
			    "docker.io=https://m1|http://m2:5000/x,q.io=http://m3");
	cfg_free(&cfg);
}

static void expect_bad(const char *text, const char *needle)
{
	cfg_config cfg;
	ad_error *err = NULL;
	cfg_init(&cfg);
	assert_int_equal(cfg_load_string(&cfg, text, "t.conf", &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	if (strncmp(err->message, "t.conf:2: ", 10) != 0 || !strstr(err->message, needle))
		fail_msg("'%s': unexpected error '%s'", text, err->message);
	ad_error_free(&err);
	cfg_free(&cfg);
}

static void test_bad_values(void **state)
{
	(void)state;
	expect_bad("[images]\nmax_parallel_layers = 0\n", "1 to 64");
	expect_bad("[images]\nmax_parallel_layers = 65\n", "1 to 64");
	expect_bad("[images]\nstall_timeout = 0\n", "1 to 3600");
	expect_bad("[images]\nplain_http_registries = http://a\n", "comma-separated");
	expect_bad("[images]\nplain_http_registries = a, b\n", "comma-separated");
	expect_bad("[images]\ninsecure_registries = a,,b\n", "comma-separated");
	expect_bad("[images]\ninsecure_registries = a,\n", "comma-separated");
	expect_bad("[images]\nregistry_mirrors = docker.io\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = =http://m\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = a/b=http://m\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = a=ftp://m\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = a=http://m|\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = a=http://\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = a=http://m,\n", "host=URL");
	expect_bad("[images]\nregistry_mirrors = a=http://m, b=http://n\n", "host=URL");
	expect_bad("[images]\nmirrors = x\n", "unknown key 'mirrors' in section [images]");
}

/* The store opens under root with agentd.db, with registry lists in place. */
static void test_open_store(void **state)
{
	(void)state;
	char dir[] = "/tmp/agent_image_test.XXXXXX";
	assert_non_null(mkdtemp(dir));
	cfg_config cfg;
	cfg_init(&cfg);
	free(cfg.root);
	cfg.root = ad_strdup(dir);
	free(cfg.plain_http_registries);
	cfg.plain_http_registries = ad_strdup("a:1,b");
	free(cfg.insecure_registries);
	cfg.insecure_registries = ad_strdup("b,c");
	free(cfg.registry_mirrors);
	cfg.registry_mirrors = ad_strdup("b=http://m1|https://m2,d=http://m3,b=http://m4");
	store *s = NULL;
	ad_error *err = NULL;
	if (agent_images_open(&cfg, &s, &err) < 0)
		fail_msg("%s", err->message);
	char *db = ad_asprintf("%s/agentd.db", dir);
	char *blobs = ad_asprintf("%s/blobs/sha256", dir);
	struct stat st;
	assert_int_equal(stat(db, &st), 0);
	assert_int_equal(stat(blobs, &st), 0);
	store_image **imgs = NULL;
	assert_int_equal(store_image_list(s, NULL, &imgs, NULL), 0);
	assert_null(imgs[0]);
	store_images_free(imgs);
	store_close(s);
	free(db);
	free(blobs);

	/* A root that cannot be a directory: the error names the store. */
	char *file = ad_asprintf("%s/file", dir);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);
	free(cfg.root);
	cfg.root = file;
	assert_int_equal(agent_images_open(&cfg, &s, &err), -1);
	assert_non_null(strstr(err->message, "image store"));
	ad_error_free(&err);
	cfg_free(&cfg);
	ad_remove_tree(dir, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_documented),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_pull_auth),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_open_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
