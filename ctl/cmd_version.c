/* agentctl version: this client's version and agentd's CRI VersionResponse. */
#include <jansson.h>
#include <string.h>

#include "cri/api.pb-c.h"
#include "ctl.h"

static int run_version(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_TEXT;
	int r = ctl_format_only(&ctl_cmd_version, argc, argv, &fmt);
	if (r)
		return r < 0 ? 0 : r;

	Runtime__V1__VersionRequest req = RUNTIME__V1__VERSION_REQUEST__INIT;
	req.version = (char *)"v1";
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, "/runtime.v1.RuntimeService/Version", &req.base,
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
