/* libadmetrics: the text and OpenMetrics exposition, the registry's
 * instruments, cAdvisor's families, and the HTTP endpoint over a real
 * loopback socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "metrics.h"

static char *finish(metrics_out *o)
{
	size_t len;
	const char *p = metrics_out_finish(o, &len);
	char *s = strndup(p, len);
	assert_int_equal(strlen(s), len);
	return s;
}

static void test_text_counter_gauge(void **state)
{
	(void)state;
	metrics_out *o = metrics_out_new(METRICS_TEXT);
	metrics_family(o, "x_total", METRICS_COUNTER, "Help with \\ and\nnewline \"q\".");
	const char *names[] = {"a", "b"};
	const char *values[] = {"quote\" back\\slash\nnl", NULL};
	char *l = metrics_labels(2, names, values);
	assert_string_equal(l, "a=\"quote\\\" back\\\\slash\\nnl\",b=\"\"");
	metrics_sample(o, NULL, l, 3);
	metrics_family(o, "g", METRICS_GAUGE, "g");
	metrics_sample(o, NULL, NULL, 0.25);
	metrics_sample(o, NULL, "k=\"v\"", -7);
	metrics_sample(o, NULL, NULL, 1.0 / 0.0);
	metrics_sample(o, NULL, NULL, 0.1);
	metrics_sample(o, NULL, NULL, 1e20);
	char *s = finish(o);
	assert_string_equal(s, "# HELP x_total Help with \\\\ and\\nnewline \"q\".\n"
			       "# TYPE x_total counter\n"
			       "x_total{a=\"quote\\\" back\\\\slash\\nnl\",b=\"\"} 3\n"
			       "# HELP g g\n# TYPE g gauge\n"
			       "g 0.25\ng{k=\"v\"} -7\ng +Inf\ng 0.1\ng 1e+20\n");
	free(s);
	free(l);
	metrics_out_free(o);
}

static void test_openmetrics(void **state)
{
	(void)state;
	metrics_out *o = metrics_out_new(METRICS_OPENMETRICS);
	metrics_family(o, "x_total", METRICS_COUNTER, "say \"hi\"");
	metrics_sample(o, NULL, NULL, 1);
	metrics_family(o, "failcnt", METRICS_COUNTER, "no suffix");
	metrics_sample(o, NULL, NULL, 2);
	metrics_family(o, "h_seconds", METRICS_HISTOGRAM, "h");
	const double bounds[] = {0.5, 1};
	const uint64_t cum[] = {1, 2};
	metrics_histogram(o, "m=\"x\"", bounds, cum, 2, 1.75, 3);
	char *s = finish(o);
	assert_string_equal(s, "# HELP x say \\\"hi\\\"\n# TYPE x counter\nx_total 1\n"
			       "# HELP failcnt no suffix\n# TYPE failcnt unknown\nfailcnt 2\n"
			       "# HELP h_seconds h\n# TYPE h_seconds histogram\n"
			       "h_seconds_bucket{m=\"x\",le=\"0.5\"} 1\n"
			       "h_seconds_bucket{m=\"x\",le=\"1.0\"} 2\n"
			       "h_seconds_bucket{m=\"x\",le=\"+Inf\"} 3\n"
			       "h_seconds_sum{m=\"x\"} 1.75\nh_seconds_count{m=\"x\"} 3\n# EOF\n");
	free(s);
	metrics_out_free(o);
	assert_int_equal(metrics_format_from_accept(NULL), METRICS_TEXT);
	assert_int_equal(metrics_format_from_accept("text/plain;version=0.0.4"), METRICS_TEXT);
	assert_int_equal(metrics_format_from_accept("application/openmetrics-text;version=1.0.0,"
						    "text/plain;q=0.5"),
			 METRICS_OPENMETRICS);
	assert_non_null(strstr(metrics_content_type(METRICS_OPENMETRICS), "version=1.0.0"));
}

static const char *const method_code[] = {"method", "code"};

static void test_registry(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_new();
	metrics_vec *c = metrics_counter_vec(r, "rpc_total", "calls", 2, method_code);
	static const double bounds[] = {0.001, 0.01, 0.1};
	metrics_vec *h =
	    metrics_histogram_vec(r, "rpc_seconds", "latency", 1, method_code, bounds, 3);
	/* Enough series to rehash the table several times. */
	for (int i = 0; i < 300; i++) {
		char m[32];
		snprintf(m, sizeof(m), "/s/M%d", i % 100);
		const char *v[] = {m, i < 200 ? "OK" : "NOT_FOUND"};
		metrics_vec_add(c, v, 1);
	}
	const char *m0[] = {"/s/M0"};
	metrics_vec_observe(h, m0, 0.0005);
	/* A series handle updates the same series as its label values. */
	metrics_series *h0 = metrics_vec_series(h, m0);
	metrics_series_observe(h0, 0.05);
	metrics_vec_observe(h, m0, 5);
	const char *m0_ok[] = {"/s/M0", "OK"};
	metrics_series_add(metrics_vec_series(c, m0_ok), 1);
	metrics_out *o = metrics_out_new(METRICS_TEXT);
	metrics_registry_write(r, o);
	char *s = finish(o);
	assert_non_null(strstr(s, "rpc_total{method=\"/s/M0\",code=\"OK\"} 3\n"));
	assert_non_null(strstr(s, "rpc_total{method=\"/s/M99\",code=\"NOT_FOUND\"} 1\n"));
	assert_non_null(strstr(s, "rpc_seconds_bucket{method=\"/s/M0\",le=\"0.001\"} 1\n"
				  "rpc_seconds_bucket{method=\"/s/M0\",le=\"0.01\"} 1\n"
				  "rpc_seconds_bucket{method=\"/s/M0\",le=\"0.1\"} 2\n"
				  "rpc_seconds_bucket{method=\"/s/M0\",le=\"+Inf\"} 3\n"
				  "rpc_seconds_sum{method=\"/s/M0\"} 5.0505\n"
				  "rpc_seconds_count{method=\"/s/M0\"} 3\n"));
	/* 200 distinct series, each once. */
	size_t lines = 0;
	for (const char *p = s; (p = strstr(p, "\nrpc_total{")); p++)
		lines++;
	assert_int_equal(lines, 200);
	free(s);
	metrics_out_free(o);
	metrics_registry_free(r);
}

static void test_containers(void **state)
{
	(void)state;
	metrics_container c = {.id = "abc",
			       .name = "web",
			       .pod = "p",
			       .namespace_ = "ns",
			       .image = "img:1",
			       .cpu_usage_ns = 1500000000,
			       .memory_working_set = 4096,
			       .spec_cpu_quota = 0,
			       .start_time_ns = 1700000000LL * 1000000000LL};
	metrics_pod_net n = {
	    .id = "pod1", .pod = "p", .namespace_ = "ns", .interface = "eth0", .rx_bytes = 1234};
	metrics_out *o = metrics_out_new(METRICS_TEXT);
	metrics_write_containers(o, &c, 1, &n, 1);
	char *s = finish(o);
	const char *lbl =
	    "{container=\"web\",pod=\"p\",namespace=\"ns\",image=\"img:1\",id=\"abc\"}";
	char want[512];
	snprintf(want, sizeof(want), "container_cpu_usage_seconds_total%s 1.5\n", lbl);
	assert_non_null(strstr(s, want));
	snprintf(want, sizeof(want), "container_memory_working_set_bytes%s 4096\n", lbl);
	assert_non_null(strstr(s, want));
	snprintf(want, sizeof(want), "container_start_time_seconds%s 1700000000\n", lbl);
	assert_non_null(strstr(s, want));
	/* An unset quota has no sample, like cAdvisor's. */
	assert_null(strstr(s, "container_spec_cpu_quota{"));
	assert_non_null(strstr(s, "# TYPE container_memory_failcnt counter\n"));
	assert_non_null(
	    strstr(s, "container_network_receive_bytes_total{container=\"POD\",pod=\"p\","
		      "namespace=\"ns\",image=\"\",id=\"pod1\",interface=\"eth0\"} 1234\n"));
	assert_non_null(strstr(s, "\nmachine_cpu_cores "));
	free(s);
	metrics_out_free(o);

	o = metrics_out_new(METRICS_TEXT);
	metrics_collect_process(o, NULL);
	s = finish(o);
	assert_non_null(strstr(s, "\nprocess_resident_memory_bytes "));
	assert_non_null(strstr(s, "\nprocess_open_fds "));
	free(s);
	metrics_out_free(o);
}

/* One HTTP/1.0 exchange over loopback; returns the whole response. */
static char *http_get(int port, const char *request)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	ssize_t n;
	while ((n = read(fd, buf + len, cap - len - 1)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	close(fd);
	return buf;
}

static bool ready_flag;
static bool check_ready(void *arg, char *why, size_t len)
{
	(void)arg;
	if (!ready_flag)
		snprintf(why, len, "state not reconciled yet");
	return ready_flag;
}

static void collect_one(metrics_out *o, void *arg)
{
	(void)arg;
	metrics_family(o, "collected", METRICS_GAUGE, "from a collector");
	metrics_sample(o, NULL, NULL, 42);
}

static void test_http(void **state)
{
	(void)state;
	metrics_registry *r = metrics_registry_new();
	metrics_registry_add_collector(r, collect_one, NULL);
	metrics_http *h = NULL;
	ad_error *err = NULL;
	metrics_http_config bad = {.listen = "127.0.0.1"};
	assert_int_equal(metrics_http_new(&bad, r, &h, &err), -1);
	assert_non_null(strstr(err->message, "want host:port"));
	ad_error_free(&err);
	metrics_http_config cfg = {.listen = "127.0.0.1:0"};
	assert_int_equal(metrics_http_new(&cfg, r, &h, &err), 0);
	metrics_http_add_ready(h, "state", check_ready, NULL);
	assert_true(metrics_http_port(h) > 0);
	assert_int_equal(metrics_http_start(h, &err), 0);
	int port = metrics_http_port(h);

	char *s = http_get(port, "GET /metrics HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(s, "HTTP/1.0 200"));
	assert_non_null(strstr(s, "text/plain; version=0.0.4"));
	assert_non_null(strstr(s, "\r\n\r\n# HELP collected from a collector\n"));
	free(s);
	s = http_get(port, "GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text; "
			   "version=1.0.0\r\n\r\n");
	assert_non_null(strstr(s, "application/openmetrics-text"));
	assert_non_null(strstr(s, "collected 42\n# EOF\n"));
	free(s);
	s = http_get(port, "GET /healthz HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(s, "200"));
	free(s);
	s = http_get(port, "GET /readyz HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(s, "HTTP/1.0 503"));
	assert_non_null(strstr(s, "state: state not reconciled yet\n"));
	free(s);
	ready_flag = true;
	s = http_get(port, "GET /readyz HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(s, "HTTP/1.0 200"));
	free(s);
	s = http_get(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
	assert_non_null(strstr(s, "HTTP/1.0 405"));
	free(s);
	s = http_get(port, "GET /nope HTTP/1.0\r\n\r\n");
	assert_non_null(strstr(s, "HTTP/1.0 404"));
	free(s);

	/* The same port twice is refused with the address named. */
	char busy[64];
	snprintf(busy, sizeof(busy), "127.0.0.1:%d", port);
	metrics_http_config cfg2 = {.listen = busy};
	metrics_http *h2 = NULL;
	assert_int_equal(metrics_http_new(&cfg2, r, &h2, &err), -1);
	assert_non_null(strstr(err->message, busy));
	ad_error_free(&err);

	metrics_http_free(h);
	metrics_registry_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_text_counter_gauge),
	    cmocka_unit_test(test_openmetrics),
	    cmocka_unit_test(test_registry),
	    cmocka_unit_test(test_containers),
	    cmocka_unit_test(test_http),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
