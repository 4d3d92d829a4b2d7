/* agentd's service tables: every CRI RPC registered with the right kind (the
 * streaming table checked against proto/cri/api.proto itself), the debug
 * service only on request, and the one ad_code -> gRPC code mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cri.h"
#include "cri/api.pb-c.h"
#include "services.h"

/* "runtime.v1.<Service>/<Method>" of every server-streaming RPC in the proto. */
static size_t streaming_in_proto(char ***ret)
{
	const char *src = getenv("AGENTD_SOURCE_DIR");
	assert_non_null(src);
	char *path = ad_asprintf("%s/proto/cri/api.proto", src);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	free(path);
	char line[1024], service[128] = "";
	char **out = NULL;
	size_t n = 0;
	while (fgets(line, sizeof(line), f)) {
		char name[128];
		if (sscanf(line, " service %127[A-Za-z0-9_]", name) == 1)
			snprintf(service, sizeof(service), "%s", name);
		if (sscanf(line, " rpc %127[A-Za-z0-9_](", name) == 1 &&
		    strstr(line, "returns (stream ")) {
			out = ad_realloc(out, (n + 1) * sizeof(char *));
			out[n++] = ad_asprintf("runtime.v1.%s/%s", service, name);
		}
	}
	fclose(f);
	*ret = out;
	return n;
}

static void test_streaming_table_matches_proto(void **state)
{
	(void)state;
	char **names;
	size_t n = streaming_in_proto(&names);
	assert_true(n >= 1); /* at least GetContainerEvents */
	for (size_t i = 0; i < n; i++) {
		if (!cri_is_streaming(names[i]))
			fail_msg("%s streams in api.proto but not in cri_streaming", names[i]);
	}
	for (size_t i = 0; i < cri_n_streaming; i++) {
		bool found = false;
		for (size_t j = 0; j < n; j++)
			found = found || strcmp(names[j], cri_streaming[i]) == 0;
		if (!found)
			fail_msg("%s is in cri_streaming but not a stream in api.proto",
				 cri_streaming[i]);
	}
	assert_int_equal(n, cri_n_streaming);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static void test_every_cri_method_registered(void **state)
{
	(void)state;
	svc_table t = {0};
	cri_service svc = {0};
	cri_register(&t, &svc);
	const ProtobufCServiceDescriptor *svcs[] = {&runtime__v1__runtime_service__descriptor,
						    &runtime__v1__image_service__descriptor};
	size_t expected = svcs[0]->n_methods + svcs[1]->n_methods;
	assert_int_equal(t.n, expected);
	assert_true(svcs[0]->n_methods >= 35); /* the whole RuntimeService */
	assert_true(svcs[1]->n_methods >= 6);

	size_t k = 0, version = 0;
	for (size_t s = 0; s < 2; s++) {
		for (unsigned i = 0; i < svcs[s]->n_methods; i++, k++) {
			const rpc_method *m = &t.methods[k];
			char *path = ad_asprintf("/%s/%s", svcs[s]->name, svcs[s]->methods[i].name);
			assert_string_equal(m->path, path);
			assert_ptr_equal(m->request, svcs[s]->methods[i].input);
			assert_ptr_equal(m->response, svcs[s]->methods[i].output);
			assert_int_equal(m->kind, cri_is_streaming(path + 1) ? RPC_SERVER_STREAM
										 : RPC_UNARY);
			if (m->kind == RPC_SERVER_STREAM)
				assert_false(m->on_loop);
			/* Every method gets the service; the stubs name their
			 * method in the UNIMPLEMENTED message. */
			const cri_route *route = m->userdata;
			assert_ptr_equal(route->svc, &svc);
			assert_string_equal(route->method, path + 1);
			if (strcmp(path, "/runtime.v1.RuntimeService/Version") == 0) {
				version++;
				assert_true(m->on_loop);
				assert_non_null(route->rpc);
			}
			for (size_t j = 0; j < k; j++)
				assert_string_not_equal(t.methods[j].path, m->path);
			free(path);
		}
	}
	assert_int_equal(version, 1);
	svc_table_free(&t);
}

static size_t count_prefix(const svc_table *t, const char *prefix)
{
	size_t n = 0;
	for (size_t i = 0; i < t->n; i++)
		n += strncmp(t->methods[i].path, prefix, strlen(prefix)) == 0;
	return n;
}

static void test_debug_service_only_when_configured(void **state)
{
	(void)state;
	cfg_config cfg;
	cfg_init(&cfg);
	agent_ctx ctx = {.cfg = &cfg};
	svc_table t = {0};
	svc_agent_register(&t, &ctx);
	svc_health_register(&t, &ctx);
	assert_int_equal(count_prefix(&t, "/agent.v1.AgentService/"), 1);
	assert_int_equal(count_prefix(&t, "/agent.v1.DebugService/"), 0);
	assert_int_equal(count_prefix(&t, "/grpc.health.v1.Health/"), 2);
	svc_table_free(&t);

	cfg.debug_service = true;
	svc_agent_register(&t, &ctx);
	assert_int_equal(count_prefix(&t, "/agent.v1.DebugService/"), 2);
	for (size_t i = 0; i < t.n; i++)
		if (strcmp(t.methods[i].path, "/agent.v1.DebugService/StreamEcho") == 0)
			assert_int_equal(t.methods[i].kind, RPC_SERVER_STREAM);
	svc_table_free(&t);
	cfg_free(&cfg);
}

static void test_status_mapping(void **state)
{
	(void)state;
	static const rpc_code want[_AD_E_MAX] = {
	    [AD_E_INTERNAL] = RPC_INTERNAL,
	    [AD_E_INVALID] = RPC_INVALID_ARGUMENT,
	    [AD_E_NOT_FOUND] = RPC_NOT_FOUND,
	    [AD_E_EXISTS] = RPC_ALREADY_EXISTS,
	    [AD_E_PRECONDITION] = RPC_FAILED_PRECONDITION,
	    [AD_E_UNAVAILABLE] = RPC_UNAVAILABLE,
	    [AD_E_UNAUTHENTICATED] = RPC_UNAUTHENTICATED,
	    [AD_E_PERMISSION] = RPC_PERMISSION_DENIED,
	    [AD_E_RESOURCE] = RPC_RESOURCE_EXHAUSTED,
	    [AD_E_DEADLINE] = RPC_DEADLINE_EXCEEDED,
	    [AD_E_CANCELLED] = RPC_CANCELLED,
	    [AD_E_UNIMPLEMENTED] = RPC_UNIMPLEMENTED,
	    [AD_E_DATA_LOSS] = RPC_DATA_LOSS,
	};
	for (int c = 0; c < _AD_E_MAX; c++) {
		rpc_code got = status_from_ad_code((ad_code)c);
		if (got != want[c])
			fail_msg("%s -> %s, want %s", ad_code_name((ad_code)c), rpc_code_name(got),
				 rpc_code_name(want[c]));
		assert_int_not_equal(got, RPC_OK);
	}
	/* Out-of-range codes are bugs: INTERNAL, never OK. */
	assert_int_equal(status_from_ad_code(_AD_E_MAX), RPC_INTERNAL);
	assert_int_equal(status_from_ad_code((ad_code)-1), RPC_INTERNAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_streaming_table_matches_proto),
	    cmocka_unit_test(test_every_cri_method_registered),
	    cmocka_unit_test(test_debug_service_only_when_configured),
	    cmocka_unit_test(test_status_mapping),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
