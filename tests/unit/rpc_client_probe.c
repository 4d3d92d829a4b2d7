/* rpc_client_probe — drives libadrpc's client against any agent.v1.DebugService
 * server and prints what came back, one "key=value" per line, for
 * tests/integration/test_rpc_c_client.py.
 *
 *   rpc_client_probe [--ca F] [--cert F] [--key F] [--server-name N]
 *                    [--timeout MS] [--delay MS] [--max-recv N] [--response-bytes N]
 *                    ENDPOINT
 *                    unary MESSAGE | stream MESSAGE REPEAT
 *
 * Exit status: 0 when the call completed at the gRPC level (any status),
 * 2 on a transport error (printed as error=...), 64 on usage errors. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/v1/agent.pb-c.h"
#include "rpc.h"

static int on_msg(const ProtobufCMessage *msg, void *userdata)
{
	(void)userdata;
	const Agent__V1__EchoResponse *m = (const Agent__V1__EchoResponse *)msg;
	printf("msg=%d %s\n", m->index, m->message);
	fflush(stdout);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: rpc_client_probe [--ca F] [--cert F] [--key F] [--server-name N] "
			"[--timeout MS] [--delay MS] [--max-recv N] [--response-bytes N] ENDPOINT "
			"unary MESSAGE | stream MESSAGE REPEAT\n");
	exit(64);
}

int main(int argc, char **argv)
{
	rpc_client_config cfg = {0};
	unsigned timeout_ms = 0;
	int delay_ms = 0;
	int response_bytes = 0;
	static const struct option opts[] = {
	    {"ca", required_argument, NULL, 'a'},
	    {"cert", required_argument, NULL, 'c'},
	    {"key", required_argument, NULL, 'k'},
	    {"server-name", required_argument, NULL, 'n'},
	    {"timeout", required_argument, NULL, 't'},
	    {"delay", required_argument, NULL, 'd'},
	    {"max-recv", required_argument, NULL, 'm'},
	    {"response-bytes", required_argument, NULL, 'r'},
	    {NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'a':
			cfg.tls_ca = optarg;
			break;
		case 'c':
			cfg.tls_cert = optarg;
			break;
		case 'k':
			cfg.tls_key = optarg;
			break;
		case 'n':
			cfg.tls_server_name = optarg;
			break;
		case 't':
			timeout_ms = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'd':
			delay_ms = atoi(optarg);
			break;
		case 'r':
			response_bytes = atoi(optarg);
			break;
		case 'm':
			cfg.max_recv_msg = strtoul(optarg, NULL, 10);
			break;
		default:
			usage();
		}
	}
	if (argc - optind < 3)
		usage();
	cfg.endpoint = argv[optind];
	const char *cmd = argv[optind + 1];
	Agent__V1__EchoRequest req = AGENT__V1__ECHO_REQUEST__INIT;
	req.message = argv[optind + 2];
	req.delay_ms = delay_ms;
	req.response_bytes = response_bytes;

	rpc_client *c = NULL;
	ad_error *err = NULL;
	if (rpc_client_connect(&cfg, &c, &err) < 0) {
		printf("error=%s %s\n", ad_code_name(err->code), err->message);
		ad_error_free(&err);
		return 2;
	}
	rpc_status st = {0};
	int r;
	if (strcmp(cmd, "unary") == 0) {
		ProtobufCMessage *resp = NULL;
		r = rpc_client_unary(c, "/agent.v1.DebugService/Echo", &req.base,
				     &agent__v1__echo_response__descriptor, timeout_ms, &resp, &st,
				     &err);
		if (r == 0 && resp) {
			const Agent__V1__EchoResponse *m = (const Agent__V1__EchoResponse *)resp;
			printf("reply=%s\n", m->message);
			printf("payload=%zu\n", m->payload.len);
			protobuf_c_message_free_unpacked(resp, NULL);
		}
	} else if (strcmp(cmd, "stream") == 0 && argc - optind >= 4) {
		req.repeat = atoi(argv[optind + 3]);
		r = rpc_client_stream(c, "/agent.v1.DebugService/StreamEcho", &req.base,
				      &agent__v1__echo_response__descriptor, timeout_ms, on_msg,
				      NULL, &st, &err);
	} else {
		rpc_client_free(c);
		usage();
		return 64;
	}
	if (r < 0) {
		printf("error=%s %s\n", ad_code_name(err->code), err->message);
		ad_error_free(&err);
		rpc_client_free(c);
		return 2;
	}
	printf("status=%s\n", rpc_code_name(st.code));
	if (st.message)
		printf("message=%s\n", st.message);
	rpc_status_clear(&st);
	rpc_client_free(c);
	return 0;
}
