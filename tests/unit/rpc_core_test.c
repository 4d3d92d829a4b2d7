/* rpc_core_test.c — libadrpc's I/O-free pieces, in memory, without sockets:
 * the HTTP/2 request header rules the server applies in place of nghttp2's
 * HTTP messaging checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "rpc_int.h"

typedef struct hdr {
	const char *name, *value;
} hdr;

#define END {NULL, NULL}

/* Feeds a header block; returns the first verdict that is not OK, or the
 * verdict of the complete block. */
static rpc_hdr_verdict check_block(bool authority_any, const hdr *h, const char **ret_why)
{
	rpc_req_headers st;
	rpc_req_headers_init(&st, authority_any);
	for (; h->name; h++) {
		rpc_hdr_verdict v = rpc_req_header_check(
		    &st, (const uint8_t *)h->name, strlen(h->name), (const uint8_t *)h->value,
		    strlen(h->value), ret_why);
		if (v != RPC_HDR_OK)
			return v;
	}
	return rpc_req_headers_complete(&st, ret_why);
}

#define GRPC_HEADERS(authority)                                                              \
	{":method", "POST"}, {":scheme", "http"},                                            \
	    {":path", "/runtime.v1.RuntimeService/Version"}, {":authority", authority},     \
	    {"content-type", "application/grpc"}, {"te", "trailers"}

static void test_authority_any_on_unix(void **state)
{
	(void)state;
	const char *why = NULL;
	const char *ok[] = {"/run/agentd/agentd.sock", "", "%%garbage {}|\\^`<>\x7f\x01", "localhost"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		hdr h[] = {GRPC_HEADERS(ok[i]), END};
		assert_int_equal(check_block(true, h, &why), RPC_HDR_OK);
	}
	/* A field value still has no CR or LF (NUL cannot pass through strlen). */
	hdr crlf[] = {GRPC_HEADERS("a\r\nb"), END};
	assert_int_equal(check_block(true, crlf, &why), RPC_HDR_MALFORMED);
	assert_string_equal(why, "invalid :authority");
}

static void test_authority_host_port_on_tcp(void **state)
{
	(void)state;
	const char *why = NULL;
	const char *ok[] = {"localhost", "127.0.0.1:443", "[::1]:8443", "", "user@host:1"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		hdr h[] = {GRPC_HEADERS(ok[i]), END};
		assert_int_equal(check_block(false, h, &why), RPC_HDR_OK);
	}
	const char *bad[] = {"/run/agentd/agentd.sock", "a b", "x{y}", "h\x01"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hdr h[] = {GRPC_HEADERS(bad[i]), END};
		assert_int_equal(check_block(false, h, &why), RPC_HDR_MALFORMED);
		assert_string_equal(why, "invalid :authority");
	}
	hdr host[] = {GRPC_HEADERS("localhost"), {"host", "/path"}, END};
	assert_int_equal(check_block(false, host, &why), RPC_HDR_MALFORMED);
	assert_int_equal(check_block(true, host, &why), RPC_HDR_OK);
}

static void test_pseudo_header_rules(void **state)
{
	(void)state;
	const char *why = NULL;
	struct {
		hdr h[8];
		const char *why;
	} cases[] = {
	    {{{":scheme", "http"}, {":path", "/a"}, END}, "missing :method"},
	    {{{":method", "POST"}, {":path", "/a"}, END}, "missing :scheme"},
	    {{{":method", "POST"}, {":scheme", "http"}, END}, "missing :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", "a"}, END}, "invalid :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", ""}, END}, "invalid :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", "/a b"}, END}, "invalid :path"},
	    {{{":method", "POST"}, {":scheme", "http"}, {":path", "*"}, END},
	     ":path * without OPTIONS"},
	    {{{":method", "P T"}, {":scheme", "http"}, {":path", "/a"}, END}, "invalid :method"},
	    {{{":method", "POST"}, {":scheme", "1x"}, {":path", "/a"}, END}, "invalid :scheme"},
	    {{{":method", "POST"}, {":method", "POST"}, END}, "repeated pseudo-header"},
	    {{{":method", "POST"}, {"x", "1"}, {":path", "/a"}, END},
	     "pseudo-header after a regular header"},
	    {{{":protocol", "websocket"}, END}, "unknown pseudo-header"},
	    {{{":", "x"}, END}, "unknown pseudo-header"},
	    {{{":method", "CONNECT"}, END}, "CONNECT without :authority"},
	    {{{":method", "CONNECT"}, {":authority", "h:1"}, {":path", "/"}, END},
	     "CONNECT with :scheme or :path"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why = NULL;
		assert_int_equal(check_block(true, cases[i].h, &why), RPC_HDR_MALFORMED);
		assert_string_equal(why, cases[i].why);
	}
	hdr options[] = {{":method", "OPTIONS"}, {":scheme", "https"}, {":path", "*"}, END};
	assert_int_equal(check_block(false, options, &why), RPC_HDR_OK);
	hdr connect[] = {{":method", "CONNECT"}, {":authority", "h:1"}, END};
	assert_int_equal(check_block(false, connect, &why), RPC_HDR_OK);
}

static void test_regular_header_rules(void **state)
{
	(void)state;
	const char *why = NULL;
	struct {
		hdr extra;
		rpc_hdr_verdict want;
	} cases[] = {
	    {{"x-Upper", "1"}, RPC_HDR_MALFORMED},
	    {{"connection", "close"}, RPC_HDR_MALFORMED},
	    {{"keep-alive", "5"}, RPC_HDR_MALFORMED},
	    {{"proxy-connection", "x"}, RPC_HDR_MALFORMED},
	    {{"transfer-encoding", "chunked"}, RPC_HDR_MALFORMED},
	    {{"upgrade", "h2c"}, RPC_HDR_MALFORMED},
	    {{"te", "gzip"}, RPC_HDR_MALFORMED},
	    {{"te", "Trailers"}, RPC_HDR_OK},
	    {{"content-length", "12a"}, RPC_HDR_MALFORMED},
	    {{"content-length", ""}, RPC_HDR_MALFORMED},
	    {{"content-length", "1234567890123456789"}, RPC_HDR_MALFORMED},
	    {{"x bad", "1"}, RPC_HDR_IGNORE},
	    {{"x-lead", " v"}, RPC_HDR_IGNORE},
	    {{"x-trail", "v\t"}, RPC_HDR_IGNORE},
	    {{"x-crlf", "a\nb"}, RPC_HDR_IGNORE},
	    {{"", "v"}, RPC_HDR_MALFORMED},
	    {{"user-agent", "grpc-go/1.50"}, RPC_HDR_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hdr h[] = {GRPC_HEADERS("localhost"), cases[i].extra, END};
		assert_int_equal(check_block(false, h, &why), cases[i].want);
	}
}

static void test_content_length(void **state)
{
	(void)state;
	const char *why = NULL;
	rpc_req_headers st;
	rpc_req_headers_init(&st, false);
	assert_int_equal(rpc_req_header_check(&st, (const uint8_t *)"content-length", 14,
					      (const uint8_t *)"10", 2, &why),
			 RPC_HDR_OK);
	/* The same value twice is allowed, another one is not. */
	assert_int_equal(rpc_req_header_check(&st, (const uint8_t *)"content-length", 14,
					      (const uint8_t *)"10", 2, &why),
			 RPC_HDR_OK);
	assert_int_equal(rpc_req_header_check(&st, (const uint8_t *)"content-length", 14,
					      (const uint8_t *)"11", 2, &why),
			 RPC_HDR_MALFORMED);
	assert_int_equal(rpc_req_headers_data(&st, 4, false, &why), RPC_HDR_OK);
	assert_int_equal(rpc_req_headers_data(&st, 5, true, &why), RPC_HDR_MALFORMED);
	assert_string_equal(why, "less data than content-length");

	rpc_req_headers_init(&st, false);
	st.content_length = 3;
	assert_int_equal(rpc_req_headers_data(&st, 4, false, &why), RPC_HDR_MALFORMED);
	assert_string_equal(why, "more data than content-length");

	rpc_req_headers_init(&st, false);
	st.content_length = 3;
	assert_int_equal(rpc_req_headers_data(&st, 3, false, &why), RPC_HDR_OK);
	assert_int_equal(rpc_req_headers_data(&st, 0, true, &why), RPC_HDR_OK);

	/* Without content-length any amount is fine. */
	rpc_req_headers_init(&st, false);
	assert_int_equal(rpc_req_headers_data(&st, 1u << 30, true, &why), RPC_HDR_OK);
}

static void test_trailer_rules(void **state)
{
	(void)state;
	const char *why = NULL;
	assert_int_equal(
	    rpc_req_trailer_check((const uint8_t *)":path", 5, (const uint8_t *)"/a", 2, &why),
	    RPC_HDR_MALFORMED);
	assert_string_equal(why, "pseudo-header in trailers");
	assert_int_equal(
	    rpc_req_trailer_check((const uint8_t *)"x-t", 3, (const uint8_t *)"1", 1, &why),
	    RPC_HDR_OK);
	assert_int_equal(rpc_req_trailer_check((const uint8_t *)"connection", 10,
					       (const uint8_t *)"close", 5, &why),
			 RPC_HDR_MALFORMED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_authority_any_on_unix),
	    cmocka_unit_test(test_authority_host_port_on_tcp),
	    cmocka_unit_test(test_pseudo_header_rules),
	    cmocka_unit_test(test_regular_header_rules),
	    cmocka_unit_test(test_content_length),
	    cmocka_unit_test(test_trailer_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
