/* libadhttpstream's codecs in memory: SPDY frames and header blocks (with
 * the SPDY/3 dictionary), WebSocket frames (RFC 6455's examples), the HTTP
 * head of an upgrade (request and response). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "httpstream.h"

static void test_dictionary(void **state)
{
	(void)state;
	assert_int_equal(spdy_dictionary_len, 1423);
	assert_memory_equal(spdy_dictionary, "\0\0\0\x07options", 11);
	assert_memory_equal(spdy_dictionary + spdy_dictionary_len - 6, "enq=0.", 6);
}

/* A client's SYN_STREAM (our encoder, a separate codec for each side as on
 * the wire) is parsed back with its headers; the shared zlib stream carries
 * over from one block to the next. */
static void test_spdy_syn_roundtrip(void **state)
{
	(void)state;
	spdy_codec client, server;
	spdy_codec_init(&client);
	spdy_codec_init(&server);
	hs_buf wire = {0};
	spdy_header h[] = {{.name = "streamtype", .value = "stdout"},
			   {.name = "port", .value = "80"}};
	assert_int_equal(spdy_put_syn_stream(&client, &wire, 1, 0, h, 2), 0);
	assert_int_equal(spdy_put_syn_stream(&client, &wire, 3, SPDY_FLAG_FIN, h, 1), 0);
	spdy_put_data(&wire, 1, SPDY_FLAG_FIN, "abc", 3);
	spdy_put_ping(&wire, 7);
	spdy_put_window_update(&wire, 1, 1000);
	/* fed a byte at a time: frames only come out whole */
	spdy_event ev;
	const char *why = NULL;
	int got = 0;
	for (size_t i = 0; i < wire.len; i++) {
		spdy_feed(&server, wire.data + i, 1);
		int r;
		while ((r = spdy_next(&server, &ev, &why)) == 1) {
			switch (got++) {
			case 0:
				assert_int_equal(ev.type, SPDY_SYN_STREAM);
				assert_int_equal(ev.stream_id, 1);
				assert_string_equal(spdy_header_get(&ev, "streamtype"), "stdout");
				assert_string_equal(spdy_header_get(&ev, "port"), "80");
				break;
			case 1:
				assert_int_equal(ev.stream_id, 3);
				assert_int_equal(ev.flags, SPDY_FLAG_FIN);
				assert_int_equal(ev.n_headers, 1);
				break;
			case 2:
				assert_int_equal(ev.type, SPDY_DATA);
				assert_int_equal(ev.len, 3);
				assert_memory_equal(ev.data, "abc", 3);
				break;
			case 3:
				assert_int_equal(ev.type, SPDY_PING);
				assert_int_equal(ev.value, 7);
				break;
			case 4:
				assert_int_equal(ev.type, SPDY_WINDOW_UPDATE);
				assert_int_equal(ev.value, 1000);
				break;
			}
			spdy_event_clear(&ev);
		}
		assert_int_not_equal(r, -1);
	}
	assert_int_equal(got, 5);
	hs_buf_free(&wire);
	spdy_codec_free(&client);
	spdy_codec_free(&server);
}

static int parse_one(const void *bytes, size_t len, spdy_event *ev, const char **why)
{
	spdy_codec c;
	spdy_codec_init(&c);
	spdy_feed(&c, bytes, len);
	int r = spdy_next(&c, ev, why);
	if (r == 1)
		spdy_event_clear(ev);
	spdy_codec_free(&c);
	return r;
}

static void test_spdy_malformed(void **state)
{
	(void)state;
	spdy_event ev;
	const char *why = NULL;
	/* version 2 */
	static const uint8_t v2[] = {0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1};
	assert_int_equal(parse_one(v2, sizeof(v2), &ev, &why), -1);
	/* a length beyond the limit */
	static const uint8_t big[] = {0, 0, 0, 1, 0, 0xff, 0xff, 0xff};
	assert_int_equal(parse_one(big, sizeof(big), &ev, &why), -1);
	/* data on stream 0 */
	static const uint8_t d0[] = {0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(parse_one(d0, sizeof(d0), &ev, &why), -1);
	/* SYN_STREAM whose header block is not zlib */
	static const uint8_t bad[] = {0x80, 3, 0, 1, 0, 0, 0, 14,  0,	0,   0,
				      1,    0, 0, 0, 0, 0, 0, 'x', 'y', 'z', 'w'};
	assert_int_equal(parse_one(bad, sizeof(bad), &ev, &why), -1);
	/* RST_STREAM with a bad length */
	static const uint8_t rst[] = {0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1};
	assert_int_equal(parse_one(rst, sizeof(rst), &ev, &why), -1);
	/* an unknown control type is skipped, not an error */
	static const uint8_t unk[] = {0x80, 3, 0, 0x77, 0, 0, 0, 1, 9};
	assert_int_equal(parse_one(unk, sizeof(unk), &ev, &why), 1);
}

/* RFC 6455 section 5.7: a masked "Hello" from a client; fragments. */
static void test_ws_frames(void **state)
{
	(void)state;
	static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
					0x7f, 0x9f, 0x4d, 0x51, 0x58};
	ws_codec c;
	ws_codec_init(&c, true);
	ws_feed(&c, hello, sizeof(hello));
	ws_event ev;
	const char *why = NULL;
	assert_int_equal(ws_next(&c, &ev, &why), 1);
	assert_int_equal(ev.opcode, WS_TEXT);
	assert_int_equal(ev.len, 5);
	assert_memory_equal(ev.data, "Hello", 5);
	assert_int_equal(ws_next(&c, &ev, &why), 0);
	/* fragmented "Hel" + ping + "lo", as a client would send them */
	uint8_t mask[4] = {1, 2, 3, 4};
	hs_buf b = {0};
	ws_put_frame(&b, WS_TEXT, "Hel", 3, mask);
	b.data[b.off] &= 0x7f; /* not FIN */
	ws_put_frame(&b, WS_PING, "p", 1, mask);
	ws_put_frame(&b, WS_CONT, "lo", 2, mask);
	ws_feed(&c, b.data, b.len);
	assert_int_equal(ws_next(&c, &ev, &why), 1);
	assert_int_equal(ev.opcode, WS_PING);
	assert_int_equal(ws_next(&c, &ev, &why), 1);
	assert_int_equal(ev.opcode, WS_TEXT);
	assert_int_equal(ev.len, 5);
	assert_memory_equal(ev.data, "Hello", 5);
	assert_int_equal(ws_next(&c, &ev, &why), 0);
	/* an unmasked frame from a client ends the session */
	static const uint8_t unmasked[] = {0x82, 0x01, 0x00};
	ws_feed(&c, unmasked, sizeof(unmasked));
	assert_int_equal(ws_next(&c, &ev, &why), -1);
	hs_buf_free(&b);
	ws_codec_free(&c);
	/* a server's frame, 16-bit length */
	hs_buf s = {0};
	uint8_t big[300];
	memset(big, 'a', sizeof(big));
	ws_put_frame(&s, WS_BINARY, big, sizeof(big), NULL);
	assert_int_equal(s.len, 4 + sizeof(big));
	assert_int_equal(s.data[1], 126);
	ws_codec_init(&c, false);
	ws_feed(&c, s.data, s.len);
	assert_int_equal(ws_next(&c, &ev, &why), 1);
	assert_int_equal(ev.len, sizeof(big));
	ws_codec_free(&c);
	hs_buf_free(&s);
}

static void test_ws_accept(void **state)
{
	(void)state;
	char *a = ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==");
	assert_string_equal(a, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	free(a);
}

static void test_http_head(void **state)
{
	(void)state;
	static const char req[] =
	    "GET /exec/abc?x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
	    "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
	    "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\nREST";
	hs_http_head h = {0};
	const char *why = NULL;
	assert_int_equal(hs_http_parse_request(&h, (const uint8_t *)req, 20, &why), 0);
	assert_int_equal(hs_http_parse_request(&h, (const uint8_t *)req, strlen(req), &why), 1);
	assert_int_equal(h.head_len, strlen(req) - 4);
	assert_string_equal(h.method, "GET");
	assert_string_equal(h.path, "/exec/abc");
	assert_string_equal(h.query, "x=1");
	assert_true(hs_http_has_token(&h, "connection", "upgrade"));
	assert_true(hs_http_has_token(&h, "Upgrade", "spdy/3.1"));
	assert_false(hs_http_has_token(&h, "upgrade", "websocket"));
	assert_string_equal(hs_http_header(&h, "x-stream-protocol-version"), "v4.channel.k8s.io");
	hs_http_head_clear(&h);
	static const char bad[] = "GET\r\n\r\n";
	assert_int_equal(hs_http_parse_request(&h, (const uint8_t *)bad, strlen(bad), &why), -1);
}

static void test_http_response_head(void **state)
{
	(void)state;
	static const char resp[] =
	    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
	    "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
	    "\r\n\x80\x03";
	hs_http_head h = {0};
	const char *why = NULL;
	assert_int_equal(hs_http_parse_response(&h, (const uint8_t *)resp, 30, &why), 0);
	assert_int_equal(hs_http_parse_response(&h, (const uint8_t *)resp, strlen(resp), &why), 1);
	assert_int_equal(h.head_len, strlen(resp) - 2);
	assert_int_equal(h.status, 101);
	assert_string_equal(hs_http_header(&h, "X-Stream-Protocol-Version"), "v4.channel.k8s.io");
	hs_http_head_clear(&h);
	static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\ngone\n";
	assert_int_equal(hs_http_parse_response(&h, (const uint8_t *)nf, strlen(nf), &why), 1);
	assert_int_equal(h.status, 404);
	hs_http_head_clear(&h);
	static const char bad[] = "HTTP/9 x\r\n\r\n";
	assert_int_equal(hs_http_parse_response(&h, (const uint8_t *)bad, strlen(bad), &why), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dictionary),	       cmocka_unit_test(test_spdy_syn_roundtrip),
	    cmocka_unit_test(test_spdy_malformed),     cmocka_unit_test(test_ws_frames),
	    cmocka_unit_test(test_ws_accept),	       cmocka_unit_test(test_http_head),
	    cmocka_unit_test(test_http_response_head),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
