/* agentctl info: agent.v1.AgentService/Info. */
#include <jansson.h>
#include <string.h>

#include "agent/v1/agent.pb-c.h"
#include "ctl.h"

static void print_tree(const Agent__V1__InfoResponse *in, ctl_format fmt)
{
	json_t *listeners = json_array();
	for (size_t i = 0; i < in->n_listeners; i++)
		json_array_append_new(listeners, json_string(in->listeners[i]));
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:o, s:i}",
			      "version", in->version, "api_version", in->api_version, "root_dir",
			      in->root_dir, "state_dir", in->state_dir, "cgroup_version",
			      in->cgroup_version, "kernel_version", in->kernel_version, "hostname",
			      in->hostname, "started_at", (json_int_t)in->started_at,
			      "uptime_seconds", (json_int_t)in->uptime_seconds, "pid", (int)in->pid,
			      "listeners", listeners, "schema_version", (int)in->schema_version);
	ctl_print(o, fmt);
}

static void print_text(const Agent__V1__InfoResponse *in)
{
	char started[40];
	ad_format_rfc3339nano(in->started_at, started);
	printf("Version:        %s\n", in->version);
	printf("ApiVersion:     %s\n", in->api_version);
	printf("RootDir:        %s\n", in->root_dir);
	printf("StateDir:       %s\n", in->state_dir);
	printf("CgroupVersion:  %s\n", in->cgroup_version);
	printf("KernelVersion:  %s\n", in->kernel_version);
	printf("Hostname:       %s\n", in->hostname);
	printf("StartedAt:      %s\n", started);
	printf("Uptime:         %llds\n", (long long)in->uptime_seconds);
	printf("Pid:            %d\n", (int)in->pid);
	printf("Listeners:     ");
	for (size_t i = 0; i < in->n_listeners; i++)
		printf(" %s", in->listeners[i]);
	printf("\n");
	printf("SchemaVersion:  %d\n", (int)in->schema_version);
}

static int run_info(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_TEXT;
	int r = ctl_format_only(&ctl_cmd_info, argc, argv, &fmt);
	if (r)
		return r < 0 ? 0 : r;

	Agent__V1__InfoRequest req = AGENT__V1__INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, "/agent.v1.AgentService/Info", &req.base,
		      &agent__v1__info_response__descriptor, &m);
	if (r)
		return r;
	if (fmt != CTL_TEXT)
		print_tree((Agent__V1__InfoResponse *)m, fmt);
	else
		print_text((Agent__V1__InfoResponse *)m);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

const ctl_command ctl_cmd_info = {
    .name = "info",
    .synopsis = "[-o table|json|yaml]",
    .summary = "agentd's version, directories, listeners, cgroup version",
    .run = run_info,
};
