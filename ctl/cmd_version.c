/* agentctl version: this client's version and agentd's CRI VersionResponse. */
#include <getopt.h>
#include <jansson.h>
#include <string.h>

#include "cri/api.pb-c.h"
#include "ctl.h"

static int run_version(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	ctl_format fmt = CTL_TEXT;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (ctl_parse_format(&ctl_cmd_version, optarg, &fmt))
				return EX_USAGE;
			break;
		case 'h':
			ctl_command_usage(stdout, &ctl_cmd_version);
			return 0;
		case ':':
			return ctl_usage_error(&ctl_cmd_version, "option '%s' needs an argument",
					       argv[optind - 1]);
		default:
			return ctl_usage_error(&ctl_cmd_version, "bad option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind < argc)
		return ctl_usage_error(&ctl_cmd_version, "unexpected argument '%s'", argv[optind]);

	Runtime__V1__VersionRequest req = RUNTIME__V1__VERSION_REQUEST__INIT;
	req.version = (char *)"v1";
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, "/runtime.v1.RuntimeService/Version", &req.base,
			  &runtime__v1__version_response__descriptor, &m);
	if (r)
		return r;
	Runtime__V1__VersionResponse *v = (Runtime__V1__VersionResponse *)m;
	if (fmt != CTL_TEXT) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "client_version", AGENTD_VERSION,
				      "version", v->version, "runtime_name", v->runtime_name,
				      "runtime_version", v->runtime_version, "runtime_api_version",
				      v->runtime_api_version);
		ctl_print(o, fmt);
	} else {
		printf("ClientVersion:  %s\n", AGENTD_VERSION);
		printf("Version:  %s\n", v->version);
		printf("RuntimeName:  %s\n", v->runtime_name);
		printf("RuntimeVersion:  %s\n", v->runtime_version);
		printf("RuntimeApiVersion:  %s\n", v->runtime_api_version);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

const ctl_command ctl_cmd_version = {
    .name = "version",
    .synopsis = "[-o table|json|yaml]",
    .summary = "client version and agentd's runtime version (CRI Version)",
    .run = run_version,
};
