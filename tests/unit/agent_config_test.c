/* agentd's config: defaults, the INI file (errors as file:line), the command
 * line over the file, and the checks across keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

/* Parses `text` over the defaults; returns the error message (malloc'd) or NULL. */
static char *parse(cfg_config *cfg, const char *text)
{
	ad_error *err = NULL;
	cfg_init(cfg);
	if (cfg_load_string(cfg, text, "test.conf", &err) == 0)
		return NULL;
	char *msg = ad_strdup(err->message);
	assert_int_equal(err->code, AD_E_INVALID);
	ad_error_free(&err);
	return msg;
}

static void expect_error(const char *text, const char *prefix, const char *needle)
{
	cfg_config cfg;
	char *msg = parse(&cfg, text);
	if (!msg)
		fail_msg("no error for:\n%s", text);
	if (strncmp(msg, prefix, strlen(prefix)) != 0 || !strstr(msg, needle))
		fail_msg("error '%s' does not start with '%s' / contain '%s'", msg, prefix, needle);
	free(msg);
	cfg_free(&cfg);
}

static void expect_ok(const char *text)
{
	cfg_config cfg;
	char *msg = parse(&cfg, text);
	if (msg)
		fail_msg("unexpected error '%s' for:\n%s", msg, text);
	cfg_free(&cfg);
}

static void assert_defaults(const cfg_config *c)
{
	assert_string_equal(c->root, "/var/lib/agentd");
	assert_string_equal(c->state, "/run/agentd");
	assert_int_equal(c->log_level, AD_LOG_INFO);
	assert_string_equal(c->listen, "/run/agentd/agentd.sock");
	assert_string_equal(c->tls_listen, "");
	assert_string_equal(c->tls_cert, "");
	assert_string_equal(c->tls_key, "");
	assert_string_equal(c->tls_client_ca, "");
	assert_string_equal(c->tcp_insecure_listen, "");
	assert_int_equal(c->max_recv_msg_size, 16777216);
	assert_int_equal(c->max_send_msg_size, 16777216);
	assert_int_equal(c->max_concurrent_streams, 1000);
	assert_int_equal(c->workers, 8);
	assert_int_equal(c->drain_timeout, 5);
	assert_false(c->debug_service);
	assert_string_equal(c->metrics_listen, "127.0.0.1:9101");
	assert_string_equal(c->metrics_tls_cert, "");
	assert_true(c->authz_role_from_ou);
	assert_string_equal(c->authz_roles, "");
	assert_string_equal(c->authz_default_role, "none");
}

static void test_defaults(void **state)
{
	(void)state;
	cfg_config cfg;
	cfg_init(&cfg);
	assert_defaults(&cfg);
	cfg_free(&cfg);
}

/* The built-in text (deploy/agentd.conf) sets every key to its default. */
static void test_builtin_matches_defaults(void **state)
{
	(void)state;
	cfg_config cfg;
	char *msg = parse(&cfg, cfg_default_text);
	assert_null(msg);
	assert_defaults(&cfg);
	assert_int_equal(cfg_validate(&cfg, NULL), 0);
	cfg_free(&cfg);
	/* ... and documents every key: each one appears as "key =". */
	const char *keys[] = {"root",
			      "state",
			      "log_level",
			      "listen",
			      "tls_listen",
			      "tls_cert",
			      "tls_key",
			      "tls_client_ca",
			      "tcp_insecure_listen",
			      "max_recv_msg_size",
			      "max_send_msg_size",
			      "max_concurrent_streams",
			      "workers",
			      "drain_timeout",
			      "debug_service",
			      "roles",
			      "role_from_ou",
			      "default_role"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char *pat = ad_asprintf("\n%s =", keys[i]);
		if (!strstr(cfg_default_text, pat))
			fail_msg("key %s is not in deploy/agentd.conf", keys[i]);
		free(pat);
	}
}

static void test_deploy_file(void **state)
{
	(void)state;
	const char *src = getenv("AGENTD_SOURCE_DIR");
	if (!src)
		skip();
	char *path = ad_asprintf("%s/deploy/agentd.conf", src);
	cfg_config cfg;
	ad_error *err = NULL;
	cfg_init(&cfg);
	assert_int_equal(cfg_load_file(&cfg, path, &err), 0);
	assert_defaults(&cfg);
	assert_string_equal(cfg.source, path);
	cfg_free(&cfg);
	free(path);
}

static void test_values(void **state)
{
	(void)state;
	cfg_config cfg;
	char *msg = parse(&cfg, "; comment\n"
				"[agentd]\n"
				"root = /srv/agentd ; inline comment\n"
				"state=/run/x\n"
				"log_level = DEBUG\n"
				"[grpc]\n"
				"listen = unix:///run/x/a.sock\n"
				"tls_listen = [::1]:10250\n"
				"tls_cert = /c.pem\n"
				"tls_key = /k.pem\n"
				"tls_client_ca = /ca.pem\n"
				"tcp_insecure_listen = 127.0.0.1:0\n"
				"max_recv_msg_size = 1\n"
				"max_send_msg_size = 2147483647\n"
				"max_concurrent_streams = 4294967295\n"
				"workers = 1024\n"
				"drain_timeout = 0\n"
				"debug_service = yes\n");
	assert_null(msg);
	assert_string_equal(cfg.root, "/srv/agentd");
	assert_string_equal(cfg.state, "/run/x");
	assert_int_equal(cfg.log_level, AD_LOG_DEBUG);
	assert_string_equal(cfg.listen, "/run/x/a.sock");
	assert_string_equal(cfg.tls_listen, "[::1]:10250");
	assert_string_equal(cfg.tls_client_ca, "/ca.pem");
	assert_string_equal(cfg.tcp_insecure_listen, "127.0.0.1:0");
	assert_int_equal(cfg.max_recv_msg_size, 1);
	assert_int_equal(cfg.max_send_msg_size, 2147483647);
	assert_int_equal(cfg.max_concurrent_streams, UINT32_MAX);
	assert_int_equal(cfg.workers, 1024);
	assert_int_equal(cfg.drain_timeout, 0);
	assert_true(cfg.debug_service);
	assert_int_equal(cfg_validate(&cfg, NULL), 0);
	cfg_free(&cfg);

	const char *bools[][2] = {{"true", "1"},  {"on", "1"}, {"1", "1"},   {"TRUE", "1"},
				  {"false", "0"}, {"no", "0"}, {"off", "0"}, {"0", "0"}};
	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		char *t = ad_asprintf("[grpc]\ndebug_service = %s\n", bools[i][0]);
		assert_null(parse(&cfg, t));
		assert_int_equal(cfg.debug_service, bools[i][1][0] == '1');
		cfg_free(&cfg);
		free(t);
	}
}

static void test_unknown_key(void **state)
{
	(void)state;
	expect_error("[agentd]\nroot = /x\n\nrot = /y\n", "test.conf:4: ", "unknown key 'rot'");
	expect_error("[grpc]\nlisten = /a.sock\nroot = /x\n",
		     "test.conf:3: ", "unknown key 'root' in section [grpc]");
	expect_error("stray = 1\n[agentd]\n", "test.conf:1: ", "outside of a section");
}

static void test_unknown_section(void **state)
{
	(void)state;
	/* Even an empty one: a typo must not silently drop settings. */
	expect_error("[agentd]\nroot = /x\n[grcp]\n", "test.conf:3: ", "unknown section [grcp]");
	expect_error("# c\n[ Agentd ]\nroot = /x\n", "test.conf:2: ", "unknown section [Agentd]");
}

static void test_bad_values(void **state)
{
	(void)state;
	struct {
		const char *text, *needle;
	} cases[] = {
	    {"[grpc]\nworkers = abc\n", "[grpc] workers: invalid value 'abc'"},
	    {"[grpc]\nworkers = 0\n", "from 1 to 1024"},
	    {"[grpc]\nworkers = 1025\n", "from 1 to 1024"},
	    {"[grpc]\nworkers = -1\n", "invalid value '-1'"},
	    {"[grpc]\nworkers = 8x\n", "invalid value '8x'"},
	    {"[grpc]\nworkers =\n", "invalid value ''"},
	    {"[grpc]\nmax_recv_msg_size = 0\n", "from 1 to 2147483647"},
	    {"[grpc]\nmax_send_msg_size = 2147483648\n", "from 1 to 2147483647"},
	    {"[grpc]\nmax_concurrent_streams = 4294967296\n", "max_concurrent_streams"},
	    {"[grpc]\ndrain_timeout = 3601\n", "from 0 to 3600"},
	    {"[grpc]\nmax_recv_msg_size = 99999999999999999999999\n", "invalid value"},
	    {"[grpc]\ndebug_service = maybe\n", "expected true or false"},
	    {"[agentd]\nlog_level = loud\n", "expected error, warn, info or debug"},
	    {"[agentd]\nroot = relative/dir\n", "expected an absolute path"},
	    {"[agentd]\nstate =\n", "expected an absolute path"},
	    {"[grpc]\nlisten = run/a.sock\n", "absolute unix socket path"},
	    {"[grpc]\ntls_listen = localhost\n", "expected host:port"},
	    {"[grpc]\ntls_listen = :10250\n", "expected host:port"},
	    {"[grpc]\ntls_listen = 127.0.0.1:65536\n", "expected host:port"},
	    {"[grpc]\ntcp_insecure_listen = ::1:80\n", "expected host:port"},
	    {"[grpc]\ntcp_insecure_listen = [::1]80\n", "expected host:port"},
	    {"[metrics]\nlisten = 9101\n", "expected host:port"},
	    {"[authz]\ndefault_role = root\n", "default role \"root\""},
	    {"[authz]\nroles = ops=admin,prom\n", "role mapping \"prom\": want CN=role"},
	    {"[authz]\nroles = ops=superuser\n", "\"ops=superuser\""},
	    {"[authz]\nrole_from_ou = perhaps\n", "expected true or false"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *line = cases[i].text[0] == '[' ? "test.conf:2: " : "test.conf:1: ";
		expect_error(cases[i].text, line, cases[i].needle);
	}
	/* The first error is the one reported. */
	expect_error("[grpc]\nworkers = 1\nworkers = x\nfoo = 1\n", "test.conf:3: ", "workers");
}

static void test_metrics_tls_pair(void **state)
{
	(void)state;
	cfg_config cfg;
	assert_null(parse(&cfg, "[metrics]\ntls_cert = /etc/m.crt\n"));
	ad_error *err = NULL;
	assert_int_equal(cfg_validate(&cfg, &err), -1);
	assert_non_null(strstr(err->message, "[metrics] tls_cert and tls_key go together"));
	ad_error_free(&err);
	cfg_free(&cfg);
}

static void test_socket_path_length(void **state)
{
	(void)state;
	char path[200];
	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[108] = '\0'; /* 108 bytes: one too many for sun_path with its NUL */
	char *t = ad_asprintf("[grpc]\nlisten = %s\n", path);
	expect_error(t, "test.conf:2: ", "too long");
	free(t);
	path[107] = '\0';
	t = ad_asprintf("[grpc]\nlisten = %s\n", path);
	expect_ok(t);
	free(t);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	expect_error("[agentd]\nroot /x\n", "test.conf:2: ", "syntax error");
	expect_error("[agentd\nroot = /x\n", "test.conf:1: ", "syntax error");
	/* Longer than inih's line buffer: refused, never split in two. */
	char *big = ad_malloc0(1000);
	memset(big, 'a', 999);
	char *t = ad_asprintf("[agentd]\nroot = /%s\n", big);
	expect_error(t, "test.conf:2: ", "line too long");
	free(t);
	free(big);
}

static void test_tls_needs_all_files(void **state)
{
	(void)state;
	cfg_config cfg;
	ad_error *err = NULL;
	assert_null(parse(&cfg, "[grpc]\ntls_listen = 127.0.0.1:0\ntls_cert = /c\n"));
	assert_int_equal(cfg_validate(&cfg, &err), -1);
	assert_non_null(strstr(err->message, "tls_key"));
	assert_non_null(strstr(err->message, "tls_cert, tls_key and tls_client_ca"));
	ad_error_free(&err);
	cfg_free(&cfg);

	assert_null(parse(&cfg, "[grpc]\nlisten =\n"));
	assert_int_equal(cfg_validate(&cfg, &err), -1);
	assert_non_null(strstr(err->message, "no listener"));
	ad_error_free(&err);
	cfg_free(&cfg);
}

/* ---- command line -------------------------------------------------------- */

static char *write_temp(const char *text)
{
	char *path = ad_strdup("/tmp/agent_config_test.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* Runs cfg_from_args on a NULL-terminated list of arguments. */
static int from_args(cfg_config *cfg, cfg_action *action, char **ret_msg, ...)
{
	char *argv[32] = {(char *)"agentd"};
	int argc = 1;
	va_list ap;
	va_start(ap, ret_msg);
	for (char *a; (a = va_arg(ap, char *)) && argc < 31;)
		argv[argc++] = a;
	va_end(ap);
	ad_error *err = NULL;
	cfg_init(cfg);
	int r = cfg_from_args(cfg, argc, argv, action, &err);
	*ret_msg = r < 0 ? ad_strdup(err->message) : NULL;
	ad_error_free(&err);
	return r;
}

static void test_args_override_file(void **state)
{
	(void)state;
	char *path = write_temp("[agentd]\nroot = /from/file\nstate = /file/state\n"
				"log_level = warn\n[grpc]\nworkers = 3\nmax_recv_msg_size = 100\n");
	cfg_config cfg;
	cfg_action action;
	char *msg;
	assert_int_equal(from_args(&cfg, &action, &msg, "--config", path, "--root", "/from/args",
				   "--listen", "/tmp/x.sock", "--max-msg-size", "4096",
				   "--debug-service", "--log-level", "debug", NULL),
			 0);
	assert_null(msg);
	assert_int_equal(action, CFG_RUN);
	assert_string_equal(cfg.root, "/from/args");
	assert_string_equal(cfg.state, "/file/state"); /* from the file */
	assert_int_equal(cfg.workers, 3);	       /* from the file */
	assert_string_equal(cfg.listen, "/tmp/x.sock");
	assert_int_equal(cfg.max_recv_msg_size, 4096);
	assert_int_equal(cfg.max_send_msg_size, 4096);
	assert_true(cfg.debug_service);
	assert_int_equal(cfg.log_level, AD_LOG_DEBUG);
	assert_string_equal(cfg.source, path);
	cfg_free(&cfg);

	/* Options apply whatever their position relative to --config. */
	assert_int_equal(from_args(&cfg, &action, &msg, "--root", "/first", "-c", path, NULL), 0);
	assert_string_equal(cfg.root, "/first");
	cfg_free(&cfg);

	/* TLS from the command line. */
	assert_int_equal(from_args(&cfg, &action, &msg, "--tls-listen", "127.0.0.1:0", "--tls-cert",
				   "/c", "--tls-key", "/k", "--tls-client-ca", "/ca",
				   "--tcp-insecure-listen", "127.0.0.1:1", "--state", "/s", NULL),
			 0);
	assert_string_equal(cfg.tls_listen, "127.0.0.1:0");
	assert_string_equal(cfg.tls_key, "/k");
	assert_string_equal(cfg.tcp_insecure_listen, "127.0.0.1:1");
	assert_string_equal(cfg.state, "/s");
	cfg_free(&cfg);

	unlink(path);
	free(path);
}

static void test_args_without_config_use_builtin(void **state)
{
	(void)state;
	cfg_config cfg;
	cfg_action action;
	char *msg;
	assert_int_equal(from_args(&cfg, &action, &msg, NULL), 0);
	assert_defaults(&cfg);
	assert_non_null(strstr(cfg.source, "built-in"));
	cfg_free(&cfg);
}

static void test_args_errors(void **state)
{
	(void)state;
	struct {
		const char *a, *b, *needle;
	} cases[] = {
	    {"--bogus", NULL, "unknown option '--bogus'"},
	    {"-x", NULL, "unknown option '-x'"},
	    {"--root", NULL, "needs an argument"},
	    {"--root", "rel", "--root: invalid value 'rel'"},
	    {"--max-msg-size", "0", "--max-msg-size: invalid value '0'"},
	    {"--log-level", "chatty", "--log-level: invalid value"},
	    {"--tls-listen", "127.0.0.1:0", "tls_cert"},
	    {"--config", "/nonexistent/agentd.conf", "cannot read config file"},
	    {"extra", NULL, "unexpected argument 'extra'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cfg_config cfg;
		cfg_action action;
		char *msg;
		assert_int_equal(from_args(&cfg, &action, &msg, cases[i].a, cases[i].b, NULL), -1);
		if (!strstr(msg, cases[i].needle))
			fail_msg("%s %s: '%s' lacks '%s'", cases[i].a, cases[i].b ? cases[i].b : "",
				 msg, cases[i].needle);
		free(msg);
		cfg_free(&cfg);
	}

	/* A bad config file is reported as file:line. */
	char *path = write_temp("[agentd]\nroot = /x\n[grpc]\nworkers = many\n");
	cfg_config cfg;
	cfg_action action;
	char *msg;
	assert_int_equal(from_args(&cfg, &action, &msg, "--config", path, NULL), -1);
	char *prefix = ad_asprintf("%s:4: ", path);
	assert_memory_equal(msg, prefix, strlen(prefix));
	free(prefix);
	free(msg);
	cfg_free(&cfg);
	unlink(path);
	free(path);
}

static void test_args_actions(void **state)
{
	(void)state;
	cfg_config cfg;
	cfg_action action;
	char *msg;
	assert_int_equal(from_args(&cfg, &action, &msg, "--help", NULL), 0);
	assert_int_equal(action, CFG_HELP);
	cfg_free(&cfg);
	/* --version does not even read the config. */
	assert_int_equal(
	    from_args(&cfg, &action, &msg, "--config", "/nonexistent", "--version", NULL), 0);
	assert_int_equal(action, CFG_VERSION);
	cfg_free(&cfg);
	assert_int_equal(from_args(&cfg, &action, &msg, "-V", NULL), 0);
	assert_int_equal(action, CFG_VERSION);
	cfg_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_builtin_matches_defaults),
	    cmocka_unit_test(test_deploy_file),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_unknown_key),
	    cmocka_unit_test(test_unknown_section),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_metrics_tls_pair),
	    cmocka_unit_test(test_socket_path_length),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_tls_needs_all_files),
	    cmocka_unit_test(test_args_override_file),
	    cmocka_unit_test(test_args_without_config_use_builtin),
	    cmocka_unit_test(test_args_errors),
	    cmocka_unit_test(test_args_actions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
