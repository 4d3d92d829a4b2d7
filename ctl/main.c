/* agentctl: the operator CLI for agentd. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const ctl_command *const commands[] = {
    &ctl_cmd_version, &ctl_cmd_info,  &ctl_cmd_pull, &ctl_cmd_images,	&ctl_cmd_inspecti,
    &ctl_cmd_rmi,     &ctl_cmd_load,  &ctl_cmd_save, &ctl_cmd_import, &ctl_cmd_push, &ctl_cmd_tag,	&ctl_cmd_runp,
    &ctl_cmd_pods,    &ctl_cmd_stopp, &ctl_cmd_rmp,  &ctl_cmd_inspectp, &ctl_cmd_create,
    &ctl_cmd_start,   &ctl_cmd_run,   &ctl_cmd_stop, &ctl_cmd_rm,	&ctl_cmd_ps,
    &ctl_cmd_inspect, &ctl_cmd_logs,  &ctl_cmd_exec, &ctl_cmd_attach, &ctl_cmd_port_forward, &ctl_cmd_stats,	&ctl_cmd_update,
    &ctl_cmd_events, &ctl_cmd_top, &ctl_cmd_capsh, &ctl_cmd_generate, &ctl_cmd_build,
    &ctl_cmd_commit, &ctl_cmd_wc,
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void synopsis(FILE *out)
{
	fputs("usage: agentctl [-e endpoint] [--cacert file] [--cert file --key file]\n"
	      "                [-t seconds] [--hosts file] command [args]\n"
	      "       agentctl -h | -V\n",
	      out);
}

static void usage(FILE *out)
{
	synopsis(out);
	fprintf(
	    out,
	    "\n"
	    "  -e, --endpoint ENDPOINT  agentd's address: unix:///path, /path, tls://host:port\n"
	    "                           (default $AGENTD_ENDPOINT, else %s)\n"
	    "      --cacert FILE        CA bundle that the server's certificate must chain to\n"
	    "      --cert FILE          client certificate for mutual TLS\n"
	    "      --key FILE           its private key\n"
	    "  -t, --timeout SECONDS    deadline of each call (default %u; 0: none)\n"
	    "      --hosts FILE         run a read command (version, info, images, pods, ps,\n"
	    "                           stats) on every agent in FILE (lines: [NAME] ENDPOINT,\n"
	    "                           host:port meaning tls://) at once: one table with a\n"
	    "                           HOST column; exit status non-zero if any host failed\n"
	    "  -h, --help               this help\n"
	    "  -V, --version            agentctl's version\n"
	    "\n"
	    "commands:\n",
	    CTL_DEFAULT_ENDPOINT, CTL_DEFAULT_TIMEOUT_MS / 1000);
	/* The summary beside a short synopsis, under a long one. */
	for (size_t i = 0; i < N_COMMANDS; i++) {
		int n = fprintf(out, "  %s %s", commands[i]->name, commands[i]->synopsis);
		if (n > 26)
			fprintf(out, "\n%27s%s\n", "", commands[i]->summary);
		else
			fprintf(out, "%*s%s\n", 27 - n, "", commands[i]->summary);
	}
}

static void vwarnx(const char *fmt, va_list ap)
{
	fputs("agentctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void ctl_warnx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwarnx(fmt, ap);
	va_end(ap);
}

void ctl_command_usage(FILE *out, const ctl_command *cmd)
{
	fprintf(out, "usage: agentctl [global options] %s %s\n", cmd->name, cmd->synopsis);
}

int ctl_usage_error(const ctl_command *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vwarnx(fmt, ap);
	va_end(ap);
	if (cmd)
		ctl_command_usage(stderr, cmd);
	else
		synopsis(stderr);
	return EX_USAGE;
}

int ctl_getopt(const ctl_command *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *longopts, int *status)
{
	opterr = 0;
	int c = getopt_long(argc, argv, shortopts, longopts, NULL);
	switch (c) {
	case 'h':
		ctl_command_usage(stdout, cmd);
		*status = -1;
		return -1;
	case ':':
		*status = ctl_usage_error(cmd, "option '%s' needs an argument", argv[optind - 1]);
		return -1;
	case '?':
		*status = ctl_usage_error(cmd, "bad option '%s'", argv[optind - 1]);
		return -1;
	default:
		return c;
	}
}

int ctl_operands_at_most(const ctl_command *cmd, int argc, char **argv, int max)
{
	if (argc - optind > max)
		return ctl_usage_error(cmd, "unexpected argument '%s'", argv[optind + max]);
	return 0;
}

int ctl_parse_format(const ctl_command *cmd, const char *s, ctl_format *ret)
{
	if (strcmp(s, "text") == 0 || strcmp(s, "table") == 0)
		*ret = CTL_TEXT;
	else if (strcmp(s, "json") == 0)
		*ret = CTL_JSON;
	else if (strcmp(s, "yaml") == 0)
		*ret = CTL_YAML;
	else
		return ctl_usage_error(cmd, "unknown output format '%s' (table, json or yaml)", s);
	return 0;
}

int ctl_format_only(const ctl_command *cmd, int argc, char **argv, ctl_format *fmt)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c, r = 0;
	while (!r && (c = ctl_getopt(cmd, argc, argv, ":o:h", opts, &r)) != -1)
		if (c == 'o')
			r = ctl_parse_format(cmd, optarg, fmt);
	return r ? r : ctl_operands_at_most(cmd, argc, argv, 0);
}

int ctl_parse_seconds(const ctl_command *cmd, const char *s, long *ret)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (end == s || *end || v < 0 || v > 86400)
		return ctl_usage_error(cmd, "invalid timeout '%s' (seconds)", s);
	*ret = v;
	return 0;
}

int ctl_parse_count(const ctl_command *cmd, const char *option, const char *s, long *ret)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0)
		return ctl_usage_error(cmd, "invalid %s '%s' (a number, 0 or more)", option, s);
	*ret = v;
	return 0;
}

int ctl_regex_compile(const ctl_command *cmd, const char *option, const char *pattern,
		      ctl_regex *ret)
{
	if (ret->set)
		ctl_regex_free(ret);
	int e = regcomp(&ret->re, pattern, REG_EXTENDED | REG_NOSUB);
	if (e) {
		char why[128];
		regerror(e, &ret->re, why, sizeof(why));
		return ctl_usage_error(cmd, "invalid %s '%s': %s", option, pattern, why);
	}
	ret->set = true;
	return 0;
}

bool ctl_regex_match(const ctl_regex *re, const char *s)
{
	return !re->set || regexec(&re->re, s ? s : "", 0, NULL, 0) == 0;
}

void ctl_regex_free(ctl_regex *re)
{
	if (re->set)
		regfree(&re->re);
	re->set = false;
}

/* ---- talking to agentd --------------------------------------------------- */

static bool is_tls(const char *endpoint)
{
	return strncmp(endpoint, "tls://", 6) == 0;
}

static int connect_agentd(ctl_ctx *ctx)
{
	if (ctx->client)
		return 0;
	rpc_client_config cc = {
	    .endpoint = ctx->endpoint,
	    .tls_ca = ctx->cacert,
	    .tls_cert = ctx->cert,
	    .tls_key = ctx->key,
	    .connect_timeout_ms = ctx->timeout_ms,
	};
	_cleanup_error_ ad_error *err = NULL;
	if (rpc_client_connect(&cc, &ctx->client, &err) == 0)
		return 0;
	ctx->client = NULL;
	if (err->code == AD_E_INVALID) {
		ctl_warnx("%s", err->message);
		return EX_USAGE;
	}
	if (err->errno_value)
		ctl_warnx("cannot connect to %s: %s (is agentd running?)", ctx->endpoint,
			  strerror(err->errno_value));
	else
		ctl_warnx("cannot connect to %s: %s", ctx->endpoint, err->message);
	switch (err->code) {
	case AD_E_UNAUTHENTICATED:
	case AD_E_PERMISSION:
		return EX_NOPERM;
	case AD_E_NOT_FOUND:
		/* A missing certificate or key file; a missing socket is UNAVAILABLE. */
		return is_tls(ctx->endpoint) ? EX_NOINPUT : EX_UNAVAILABLE;
	default:
		return EX_UNAVAILABLE;
	}
}

static int exit_status_for(rpc_code code)
{
	switch (code) {
	case RPC_UNAVAILABLE:
	case RPC_UNIMPLEMENTED:
		return EX_UNAVAILABLE;
	case RPC_DEADLINE_EXCEEDED:
	case RPC_RESOURCE_EXHAUSTED:
	case RPC_ABORTED:
		return EX_TEMPFAIL;
	case RPC_UNAUTHENTICATED:
	case RPC_PERMISSION_DENIED:
		return EX_NOPERM;
	case RPC_INVALID_ARGUMENT:
	case RPC_OUT_OF_RANGE:
		return EX_DATAERR;
	case RPC_INTERNAL:
	case RPC_DATA_LOSS:
	case RPC_UNKNOWN:
		return EX_SOFTWARE;
	default:
		return 1;
	}
}

/* The exit status of a call: 0, or, having printed why it failed, that of
 * the transport failure (err) or of the call's gRPC status. */
static int call_outcome(const char *path, int rc, const ad_error *err, rpc_status *st)
{
	int r = 0;
	if (rc < 0) {
		ctl_warnx("%s: %s", path + 1, err->message);
		r = EX_UNAVAILABLE;
	} else if (st->code != RPC_OK) {
		ctl_warnx("%s: %s: %s", path + 1, rpc_code_name(st->code),
			  st->message ? st->message : "(no message)");
		r = exit_status_for(st->code);
	}
	rpc_status_clear(st);
	return r;
}

int ctl_unary(ctl_ctx *ctx, const char *path, const ProtobufCMessage *req,
	      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **ret_resp)
{
	int r = connect_agentd(ctx);
	if (r)
		return r;
	rpc_status st = {0};
	_cleanup_error_ ad_error *err = NULL;
	ProtobufCMessage *resp = NULL;
	int rc =
	    rpc_client_unary(ctx->client, path, req, resp_desc, ctx->timeout_ms, &resp, &st, &err);
	r = call_outcome(path, rc, err, &st);
	if (!r && ret_resp)
		*ret_resp = resp;
	else if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return r;
}

int ctl_stream(ctl_ctx *ctx, const char *path, const ProtobufCMessage *req,
	       const ProtobufCMessageDescriptor *resp_desc, unsigned timeout_ms,
	       rpc_stream_fn on_msg, void *userdata)
{
	int r = connect_agentd(ctx);
	if (r)
		return r;
	rpc_status st = {0};
	_cleanup_error_ ad_error *err = NULL;
	int rc = rpc_client_stream(ctx->client, path, req, resp_desc, timeout_ms, on_msg, userdata,
				   &st, &err);
	return call_outcome(path, rc, err, &st);
}

/* ---- main ----------------------------------------------------------------- */

static int parse_timeout(const char *s, unsigned *ret_ms)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400 * 365)
		return -1;
	*ret_ms = (unsigned)(v * 1000 + 0.5);
	if (v > 0 && *ret_ms == 0)
		*ret_ms = 1;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"endpoint", required_argument, NULL, 'e'}, {"cacert", required_argument, NULL, 'C'},
	    {"cert", required_argument, NULL, 'c'},	{"key", required_argument, NULL, 'k'},
	    {"timeout", required_argument, NULL, 't'},	{"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},	{"hosts", required_argument, NULL, 'H'},
	    {0},
	};
	const char *hosts_file = NULL;
	ctl_ctx ctx = {.timeout_ms = CTL_DEFAULT_TIMEOUT_MS};
	const char *env = getenv("AGENTD_ENDPOINT");
	ctx.endpoint = env && *env ? env : CTL_DEFAULT_ENDPOINT;

	opterr = 0;
	int c;
	/* '+': options end at the command name; the command parses the rest. */
	while ((c = getopt_long(argc, argv, "+:e:t:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			ctx.endpoint = optarg;
			break;
		case 'C':
			ctx.cacert = optarg;
			break;
		case 'c':
			ctx.cert = optarg;
			break;
		case 'k':
			ctx.key = optarg;
			break;
		case 't':
			if (parse_timeout(optarg, &ctx.timeout_ms) < 0)
				return ctl_usage_error(NULL, "invalid timeout '%s' (seconds)",
						       optarg);
			ctx.timeout_given = true;
			break;
		case 'H':
			hosts_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("agentctl %s\n", AGENTD_VERSION);
			return 0;
		case ':':
			return ctl_usage_error(NULL, "option '%s' needs an argument",
					       argv[optind - 1]);
		default:
			if (optopt && optopt < 0x100)
				return ctl_usage_error(NULL, "unknown option '-%c'", optopt);
			return ctl_usage_error(NULL, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (!ctx.endpoint[0])
		return ctl_usage_error(NULL, "empty endpoint");
	if (!ctx.cert != !ctx.key)
		return ctl_usage_error(NULL, "--cert and --key go together");
	if ((ctx.cacert || ctx.cert) && !is_tls(ctx.endpoint) && !hosts_file)
		return ctl_usage_error(NULL, "--cacert, --cert and --key need a tls:// endpoint");
	if (optind >= argc)
		return ctl_usage_error(NULL, "no command given");

	const char *name = argv[optind];
	const ctl_command *cmd = NULL;
	for (size_t i = 0; i < N_COMMANDS && !cmd; i++)
		if (strcmp(commands[i]->name, name) == 0)
			cmd = commands[i];
	if (!cmd)
		return ctl_usage_error(NULL, "unknown command '%s'", name);

	int first = optind;
	if (hosts_file)
		return ctl_fanout(hosts_file, argc, argv, first);
	optind = 0; /* the command's own getopt starts afresh */
	int r = cmd->run(&ctx, argc - first, argv + first);
	if (ctx.client)
		rpc_client_free(ctx.client);
	return r;
}
