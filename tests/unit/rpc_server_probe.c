/* rpc_server_probe — serves agent.v1.DebugService with libadrpc so that
 * independent clients (grpcio in tests/integration/test_rpc_c_client.py,
 * h2load, raw sockets) can exercise the server without the rest of agentd.
 *
 *   rpc_server_probe [--unix PATH] [--tcp HOST:PORT] [--cert F --key F --client-ca F]
 *                    [--insecure] [--max-msg N] [--inline] [--workers N]
 *
 * Prints "port=N" (when listening on TCP) and "ready", then serves until
 * SIGTERM/SIGINT, which drains (rpc_server_shutdown) and exits 0. */
#include <event2/event.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/v1/agent.pb-c.h"
#include "rpc.h"

static rpc_code echo_handler(rpc_call *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_,
			     void *userdata)
{
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	Agent__V1__EchoResponse *resp = (Agent__V1__EchoResponse *)resp_;
	if (req->delay_ms > 0) {
		struct pollfd p = {.fd = rpc_call_cancel_fd(call), .events = POLLIN};
		if (poll(&p, 1, req->delay_ms) > 0)
			return rpc_call_error(call, RPC_CANCELLED, "cancelled while sleeping");
	}
	if (strncmp(req->message, "error:", 6) == 0)
		return rpc_call_error(call, RPC_NOT_FOUND, "%s", req->message + 6);
	if (strcmp(req->message, "whoami") == 0) {
		const char *id = rpc_call_peer_identity(call);
		resp->message = rpc_call_strdup(call, id ? id : "(none)");
		return RPC_OK;
	}
	if (strncmp(req->message, "md:", 3) == 0) {
		const char *v = rpc_call_metadata(call, req->message + 3);
		resp->message = rpc_call_strdup(call, v ? v : "(none)");
		return RPC_OK;
	}
	resp->message = req->message;
	if (req->response_bytes > 0) {
		resp->payload.len = (size_t)req->response_bytes;
		resp->payload.data = rpc_call_alloc(call, resp->payload.len);
		memset(resp->payload.data, 'p', resp->payload.len);
	} else {
		resp->payload = req->payload;
	}
	return RPC_OK;
}

static rpc_code stream_handler(rpc_call *call, const ProtobufCMessage *req_,
			       ProtobufCMessage *resp_, void *userdata)
{
	(void)resp_;
	(void)userdata;
	const Agent__V1__EchoRequest *req = (const Agent__V1__EchoRequest *)req_;
	for (int i = 0; i < req->repeat; i++) {
		if (req->delay_ms > 0) {
			struct pollfd p = {.fd = rpc_call_cancel_fd(call), .events = POLLIN};
			if (poll(&p, 1, req->delay_ms) > 0)
				return RPC_CANCELLED;
		}
		Agent__V1__EchoResponse m = AGENT__V1__ECHO_RESPONSE__INIT;
		m.message = req->message;
		m.index = i;
		if (rpc_call_send(call, &m.base) < 0)
			return RPC_CANCELLED;
	}
	return RPC_OK;
}

static rpc_method methods[] = {
    {"/agent.v1.DebugService/Echo", &agent__v1__echo_request__descriptor,
     &agent__v1__echo_response__descriptor, RPC_UNARY, false, echo_handler, NULL},
    {"/agent.v1.DebugService/StreamEcho", &agent__v1__echo_request__descriptor,
     &agent__v1__echo_response__descriptor, RPC_SERVER_STREAM, false, stream_handler, NULL},
};

static rpc_server *srv;
static struct event_base *base;

static void done_cb(void *arg)
{
	(void)arg;
	event_base_loopbreak(base);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	rpc_server_shutdown(srv, done_cb, NULL);
}

int main(int argc, char **argv)
{
	rpc_server_config cfg = {0};
	static const struct option opts[] = {
	    {"unix", required_argument, NULL, 'u'},	 {"tcp", required_argument, NULL, 't'},
	    {"cert", required_argument, NULL, 'c'},	 {"key", required_argument, NULL, 'k'},
	    {"client-ca", required_argument, NULL, 'a'}, {"insecure", no_argument, NULL, 'i'},
	    {"max-msg", required_argument, NULL, 'm'},	 {"inline", no_argument, NULL, 'l'},
	    {"workers", required_argument, NULL, 'w'},	 {NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'u':
			cfg.unix_path = optarg;
			break;
		case 't':
			cfg.tcp_listen = optarg;
			break;
		case 'c':
			cfg.tls_cert = optarg;
			break;
		case 'k':
			cfg.tls_key = optarg;
			break;
		case 'a':
			cfg.tls_client_ca = optarg;
			break;
		case 'i':
			cfg.tcp_insecure = true;
			break;
		case 'm':
			cfg.max_recv_msg = cfg.max_send_msg = strtoul(optarg, NULL, 10);
			break;
		case 'l':
			methods[0].on_loop = true;
			break;
		case 'w':
			cfg.workers = (unsigned)atoi(optarg);
			break;
		default:
			fprintf(stderr,
				"usage: rpc_server_probe [--unix PATH] [--tcp ADDR] "
				"[--cert F --key F --client-ca F] [--insecure] [--max-msg N] "
				"[--inline] [--workers N]\n");
			return 64;
		}
	}
	base = event_base_new();
	ad_error *err = NULL;
	if (rpc_server_new(base, &cfg, &srv, &err) < 0 ||
	    rpc_server_register(srv, methods, sizeof(methods) / sizeof(methods[0]), &err) < 0) {
		fprintf(stderr, "rpc_server_probe: %s\n", err->message);
		ad_error_free(&err);
		return 1;
	}
	struct event *sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	struct event *sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	if (rpc_server_tcp_port(srv) >= 0)
		printf("port=%d\n", rpc_server_tcp_port(srv));
	printf("ready\n");
	fflush(stdout);
	event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
	event_free(sigterm);
	event_free(sigint);
	rpc_server_free(srv);
	event_base_free(base);
	return 0;
}
