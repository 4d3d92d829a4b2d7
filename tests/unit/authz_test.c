/* libadauthz: subjects to roles, roles to methods, bad configs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"

static authz_policy *policy(const char *map, bool ou, const char *def)
{
	authz_policy *p = NULL;
	ad_error *err = NULL;
	if (authz_policy_new(map, ou, def, &p, &err) < 0)
		fail_msg("%s", err->message);
	return p;
}

static void test_subject_attrs(void **state)
{
	(void)state;
	const char *s = "CN=ops\\, the team,OU=read-only+OU=admin,O=fleet \\2B co,C=DE";
	char *v = authz_subject_attr(s, "CN", 0);
	assert_string_equal(v, "ops, the team");
	free(v);
	v = authz_subject_attr(s, "ou", 1);
	assert_string_equal(v, "admin");
	free(v);
	v = authz_subject_attr(s, "O", 0);
	assert_string_equal(v, "fleet + co");
	free(v);
	assert_null(authz_subject_attr(s, "OU", 2));
	assert_null(authz_subject_attr(s, "L", 0));
	assert_null(authz_subject_attr(NULL, "CN", 0));
	assert_null(authz_subject_attr("garbage", "CN", 0));
}

static const char *const reads[] = {
    "/runtime.v1.RuntimeService/ListContainers",
    "/runtime.v1.RuntimeService/ListPodSandbox",
    "/runtime.v1.RuntimeService/ContainerStatus",
    "/runtime.v1.RuntimeService/Status",
    "/runtime.v1.RuntimeService/Version",
    "/runtime.v1.RuntimeService/ContainerStats",
    "/runtime.v1.RuntimeService/ListPodSandboxStats",
    "/runtime.v1.RuntimeService/ListMetricDescriptors",
    "/runtime.v1.RuntimeService/ListPodSandboxMetrics",
    "/runtime.v1.ImageService/ImageFsInfo",
    "/runtime.v1.ImageService/ImageStatus",
    "/agent.v1.AgentService/Info",
    "/grpc.health.v1.Health/Check",
};
static const char *const writes[] = {
    "/runtime.v1.RuntimeService/RunPodSandbox",
    "/runtime.v1.RuntimeService/RemoveContainer",
    "/runtime.v1.RuntimeService/ExecSync",
    "/runtime.v1.RuntimeService/Exec",
    "/runtime.v1.RuntimeService/UpdateContainerResources",
    "/runtime.v1.RuntimeService/UpdateRuntimeConfig",
    "/runtime.v1.ImageService/PullImage",
    "/runtime.v1.ImageService/RemoveImage",
    "/agent.v1.DebugService/Echo",
};

static void test_methods_by_role(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(reads) / sizeof(*reads); i++) {
		assert_true(authz_role_allows(AUTHZ_ROLE_READ_ONLY, reads[i]));
		assert_true(authz_role_allows(AUTHZ_ROLE_ADMIN, reads[i]));
		assert_false(authz_role_allows(AUTHZ_ROLE_NONE, reads[i]));
	}
	for (size_t i = 0; i < sizeof(writes) / sizeof(*writes); i++) {
		if (authz_role_allows(AUTHZ_ROLE_READ_ONLY, writes[i]))
			fail_msg("read-only may call %s", writes[i]);
		assert_true(authz_role_allows(AUTHZ_ROLE_ADMIN, writes[i]));
		assert_false(authz_role_allows(AUTHZ_ROLE_NONE, writes[i]));
	}
}

static void test_roles_of_subjects(void **state)
{
	(void)state;
	authz_policy *p = policy(" prometheus = read-only , ops=admin,locked=none", true, "none");
	assert_int_equal(authz_role_of(p, "CN=ops,O=x"), AUTHZ_ROLE_ADMIN);
	assert_int_equal(authz_role_of(p, "CN=prometheus,OU=admin"), AUTHZ_ROLE_READ_ONLY);
	assert_int_equal(authz_role_of(p, "CN=locked,OU=admin"), AUTHZ_ROLE_NONE);
	assert_int_equal(authz_role_of(p, "CN=host7,OU=read-only"), AUTHZ_ROLE_READ_ONLY);
	/* The first OU that names a role counts. */
	assert_int_equal(authz_role_of(p, "CN=h,OU=team-a,OU=admin"), AUTHZ_ROLE_ADMIN);
	assert_int_equal(authz_role_of(p, "CN=stranger"), AUTHZ_ROLE_NONE);
	authz_policy_free(p);

	p = policy("", false, "read-only");
	assert_int_equal(authz_role_of(p, "CN=x,OU=admin"), AUTHZ_ROLE_READ_ONLY);
	authz_policy_free(p);
}

static void test_check_message(void **state)
{
	(void)state;
	authz_policy *p = policy("", true, "none");
	ad_error *err = NULL;
	authz_role role;
	assert_int_equal(authz_check(p, "CN=mon,OU=read-only",
				     "/runtime.v1.RuntimeService/ListContainers", &role, &err),
			 0);
	assert_int_equal(role, AUTHZ_ROLE_READ_ONLY);
	assert_int_equal(authz_check(p, "CN=mon,OU=read-only",
				     "/runtime.v1.RuntimeService/StopContainer", &role, &err),
			 -1);
	assert_int_equal(err->code, AD_E_PERMISSION);
	assert_string_equal(err->message,
			    "method /runtime.v1.RuntimeService/StopContainer is not "
			    "allowed for role read-only (client CN=mon,OU=read-only)");
	ad_error_free(&err);
	/* No client certificate: the unix socket, guarded by its mode. */
	assert_int_equal(
	    authz_check(p, NULL, "/runtime.v1.RuntimeService/StopContainer", &role, &err), 0);
	assert_int_equal(role, AUTHZ_ROLE_ADMIN);
	authz_policy_free(p);
}

/* More subjects than authz_check remembers, each checked twice in turn: a
 * remembered role must be the subject's own, also after evictions. */
static void test_check_remembers_roles(void **state)
{
	(void)state;
	authz_policy *p = policy("", true, "none");
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 20; i++) {
			char subject[64];
			snprintf(subject, sizeof(subject), "CN=h%d,OU=%s", i,
				 i % 2 ? "admin" : "read-only");
			authz_role role;
			ad_error *err = NULL;
			int rv = authz_check(p, subject, "/runtime.v1.RuntimeService/StopContainer",
					     &role, &err);
			assert_int_equal(role, i % 2 ? AUTHZ_ROLE_ADMIN : AUTHZ_ROLE_READ_ONLY);
			assert_int_equal(rv, i % 2 ? 0 : -1);
			ad_error_free(&err);
		}
	authz_policy_free(p);
}

static void test_bad_config(void **state)
{
	(void)state;
	authz_policy *p = NULL;
	ad_error *err = NULL;
	assert_int_equal(authz_policy_new("ops", true, "none", &p, &err), -1);
	assert_string_equal(err->message, "role mapping \"ops\": want CN=role");
	ad_error_free(&err);
	assert_int_equal(authz_policy_new("ops=root", true, "none", &p, &err), -1);
	assert_non_null(strstr(err->message, "\"ops=root\""));
	ad_error_free(&err);
	assert_int_equal(authz_policy_new("=admin", true, "none", &p, &err), -1);
	ad_error_free(&err);
	assert_int_equal(authz_policy_new("", true, "everyone", &p, &err), -1);
	assert_non_null(strstr(err->message, "default role \"everyone\""));
	ad_error_free(&err);
	authz_role r;
	assert_int_equal(authz_role_parse("readonly", &r), -1);
	assert_string_equal(authz_role_name(AUTHZ_ROLE_READ_ONLY), "read-only");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_subject_attrs),     cmocka_unit_test(test_methods_by_role),
	    cmocka_unit_test(test_roles_of_subjects), cmocka_unit_test(test_check_message),
	    cmocka_unit_test(test_check_remembers_roles), cmocka_unit_test(test_bad_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
