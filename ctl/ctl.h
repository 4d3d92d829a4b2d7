/* ctl.h — what agentctl's commands share: the connection to agentd, error
 * reporting and the command table entry. A new command is one ctl/cmd_*.c
 * defining a ctl_command, plus its line in the table in ctl/main.c. */
#ifndef AGENTCTL_CTL_H
#define AGENTCTL_CTL_H

#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <sysexits.h>

#include "base.h"
#include "pbjson.h" /* answers as JSON: pbjson_from_message(m, PBJSON_PROTOJSON) */
#include "rpc.h"

#define CTL_DEFAULT_ENDPOINT "unix:///run/agentd/agentd.sock"
#define CTL_DEFAULT_TIMEOUT_MS 10000

typedef struct ctl_ctx {
	const char *endpoint;
	const char *cacert, *cert, *key;
	unsigned timeout_ms; /* 0: no deadline */
	bool timeout_given;  /* -t was given (long calls like pull have none by default) */
	rpc_client *client;  /* connected on first use */
} ctl_ctx;

typedef struct ctl_command {
	const char *name;
	const char *synopsis; /* arguments, man-page style: "[-o json|text]" */
	const char *summary;
	/* argv[0] is the command name; returns the process exit status. */
	int (*run)(ctl_ctx *ctx, int argc, char **argv);
} ctl_command;

/* agentctl --hosts FILE: runs the read command argv[cmd_index..] against
 * every host in FILE at once (fanout.c); returns the exit status. */
int ctl_fanout(const char *hosts_file, int argc, char **argv, int cmd_index);

extern const ctl_command ctl_cmd_version;
extern const ctl_command ctl_cmd_info;
extern const ctl_command ctl_cmd_pull;
extern const ctl_command ctl_cmd_images;
extern const ctl_command ctl_cmd_inspecti;
extern const ctl_command ctl_cmd_rmi;
extern const ctl_command ctl_cmd_load;
extern const ctl_command ctl_cmd_save;
extern const ctl_command ctl_cmd_import;
extern const ctl_command ctl_cmd_push;
extern const ctl_command ctl_cmd_tag;
extern const ctl_command ctl_cmd_runp;
extern const ctl_command ctl_cmd_pods;
extern const ctl_command ctl_cmd_stopp;
extern const ctl_command ctl_cmd_rmp;
extern const ctl_command ctl_cmd_inspectp;
extern const ctl_command ctl_cmd_create;
extern const ctl_command ctl_cmd_start;
extern const ctl_command ctl_cmd_run;
extern const ctl_command ctl_cmd_stop;
extern const ctl_command ctl_cmd_rm;
extern const ctl_command ctl_cmd_ps;
extern const ctl_command ctl_cmd_inspect;
extern const ctl_command ctl_cmd_logs;
extern const ctl_command ctl_cmd_exec;
extern const ctl_command ctl_cmd_attach;
extern const ctl_command ctl_cmd_port_forward;
extern const ctl_command ctl_cmd_stats;
extern const ctl_command ctl_cmd_update;
extern const ctl_command ctl_cmd_events;
extern const ctl_command ctl_cmd_capsh;
extern const ctl_command ctl_cmd_top;
extern const ctl_command ctl_cmd_generate;
extern const ctl_command ctl_cmd_build;
extern const ctl_command ctl_cmd_commit;
extern const ctl_command ctl_cmd_wc;

/* err(3)-style: "agentctl: " + message on stderr. */
void ctl_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "agentctl: <message>" and the command's usage line; returns EX_USAGE. */
int ctl_usage_error(const ctl_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctl_command_usage(FILE *out, const ctl_command *cmd);

struct option;
/* getopt_long for a command: returns the next option for the command to
 * handle, or -1 when there are none left. -h (printing the usage), an option
 * missing its argument and an unknown option end the loop as well, with
 * *status set to -1 after help or to the usage error's exit status; *status
 * is left alone otherwise (start it at 0). */
int ctl_getopt(const ctl_command *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *longopts, int *status);
/* After the options: at most max operands, else the usage error's exit
 * status ("unexpected argument"). */
int ctl_operands_at_most(const ctl_command *cmd, int argc, char **argv, int max);

/* Unary call to agentd (connecting first if needed). Returns 0 with *ret_resp
 * set (free with protobuf_c_message_free_unpacked; ret_resp NULL: the answer
 * is not wanted), or, having printed why, the exit status to use:
 * EX_UNAVAILABLE when agentd cannot be reached. */
int ctl_unary(ctl_ctx *ctx, const char *path, const ProtobufCMessage *req,
	      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **ret_resp);

/* Server-streaming call, like ctl_unary; on_msg returning non-zero cancels. */
int ctl_stream(ctl_ctx *ctx, const char *path, const ProtobufCMessage *req,
	       const ProtobufCMessageDescriptor *resp_desc, unsigned timeout_ms,
	       rpc_stream_fn on_msg, void *userdata);

/* Output format option shared by commands: -o table (or text), json, yaml. */
typedef enum ctl_format { CTL_TEXT, CTL_JSON, CTL_YAML } ctl_format;
int ctl_parse_format(const ctl_command *cmd, const char *s, ctl_format *ret);
/* getopt for commands taking just -o and -h (no operands): 0 to go on, -1
 * after printing help, else the exit status of a usage error. */
int ctl_format_only(const ctl_command *cmd, int argc, char **argv, ctl_format *fmt);
/* A command's whole-seconds option (0 to 86400): 0, or the usage error's exit code. */
int ctl_parse_seconds(const ctl_command *cmd, const char *s, long *ret);
/* A count option (--last N, --tail N): a non-negative integer; 0 or the
 * usage error's exit code. */
int ctl_parse_count(const ctl_command *cmd, const char *option, const char *s, long *ret);

/* A --name-style filter: an extended regular expression that matches
 * anywhere in the value (crictl's regexp filters); unset matches all. */
typedef struct ctl_regex {
	bool set;
	regex_t re;
} ctl_regex;
int ctl_regex_compile(const ctl_command *cmd, const char *option, const char *pattern,
		      ctl_regex *ret);
bool ctl_regex_match(const ctl_regex *re, const char *s);
void ctl_regex_free(ctl_regex *re);

/* ---- pods and containers (ctl/cmd_pod.c) ---- */
typedef struct json_t json_t;
typedef struct Runtime__V1__PodSandboxConfig Runtime__V1__PodSandboxConfig;

/* Builds a message from JSON by field name (snake_case or lowerCamelCase);
 * unknown keys are ignored. On a type mismatch prints "<what>: field 'a.b':
 * ..." and returns NULL. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *ctl_pb_from_json(const ProtobufCMessageDescriptor *desc, json_t *obj,
				   const char *what);
/* ctl_pb_from_json of a JSON or YAML config file (ctl_load_config); returns 0
 * or, having printed why, an exit status. */
int ctl_pb_from_file(const char *file, const ProtobufCMessageDescriptor *desc,
		     ProtobufCMessage **ret);
/* -o json and -o yaml of one tree (ctl/yaml.c); take the reference. */
void ctl_print(json_t *o, ctl_format fmt); /* CTL_TEXT prints JSON */
/* One item of a stream (events): a JSON line, or a "---" YAML document. */
void ctl_print_stream_item(json_t *o, ctl_format fmt);
/* A config file as a JSON object: JSON if it starts with '{', else YAML
 * (as crictl decides). Returns 0, or, having printed what is wrong and
 * where (FILE:LINE:COLUMN), an exit status. *ret_marks: NULL for JSON; for
 * YAML where its values are, for ctl_config_mark (json_decref it). */
int ctl_load_config(const char *file, json_t **ret, json_t **ret_marks);
/* The line and column a YAML value of the tree started at, if known. */
bool ctl_config_mark(json_t *marks, const json_t *v, int *ret_line, int *ret_column);
/* As crictl prints a verbose status: {"status": ..., <info keys>: ...}, each
 * info value's JSON parsed. status is taken; info is an array of map entries
 * (key, value). */
json_t *ctl_status_json(json_t *status, size_t n_info, void **info);
/* What the inspect commands print (takes items): the one object asked for,
 * as crictl prints it, or the array of them; nothing when all failed. */
void ctl_print_inspected(json_t *items, bool one_asked, ctl_format fmt);
/* Gives calls that set up or tear down pods and containers a longer deadline
 * unless -t was given. */
void ctl_long_call(ctl_ctx *ctx);
void ctl_format_age(int64_t created_ns, char buf[32]);
/* --label KEY=VALUE into a label_selector object: 0, or the usage error's
 * exit status. */
int ctl_add_label(const ctl_command *cmd, json_t *selector, const char *kv);
/* *ret: the full id of the pod (pod) or container that arg is a unique prefix
 * of, else arg itself. Returns 0 or, having printed why, an exit status. */
int ctl_resolve_id(ctl_ctx *ctx, bool pod, const char *arg, char **ret);
/* getopt for commands taking just "-h" and operands: 0 to go on, -1 after
 * printing help, else the exit status of a usage error. */
int ctl_ids_only(const ctl_command *cmd, int argc, char **argv, const char *what);
/* ctl_ids_only that also takes -o json|yaml (the inspect commands). */
int ctl_ids_and_format(const ctl_command *cmd, int argc, char **argv, const char *what,
		       ctl_format *fmt);
/* Runs op on each operand (from optind) as a full pod or container id
 * (ctl_resolve_id); returns 0, or the exit status of the last that failed. */
typedef int ctl_id_op(ctl_ctx *ctx, const char *id, void *userdata);
int ctl_each_id(ctl_ctx *ctx, bool pod, int argc, char **argv, ctl_id_op *op, void *userdata);
/* A command whose operands are pod or container ids (stopp, rmp, start, rm):
 * one call each, its request just the id, its answer not wanted; prints
 * done_prefix and the id for each that succeeds. */
typedef struct ctl_id_call {
	const char *path;
	const ProtobufCMessageDescriptor *req_desc, *resp_desc;
	const char *id_field; /* the request's pod_sandbox_id or container_id */
	const char *done_prefix;
} ctl_id_call;
int ctl_run_id_command(ctl_ctx *ctx, const ctl_command *cmd, int argc, char **argv,
		       const ctl_id_call *call);
int ctl_run_pod(ctl_ctx *ctx, Runtime__V1__PodSandboxConfig *cfg, char **ret_id);
/* Pulls with agent.v1's progress stream (a bar on a terminal, else a line
 * per layer state, on stderr); 0 with *ret_id, or the exit status. */
int ctl_pull(ctl_ctx *ctx, const char *image, char *user, char *password, char **ret_id);
/* The id of the image agentd knows by that name (*ret_id NULL if none);
 * returns 0 or, having printed why, an exit status. */
int ctl_image_id(ctl_ctx *ctx, const char *image, char **ret_id);

typedef struct Runtime__V1__ContainerStatusResponse Runtime__V1__ContainerStatusResponse;
/* ContainerStatus of the container `arg` names (an id or a unique prefix);
 * 0 with *ret, or, having printed why, an exit status. */
int ctl_container_status(ctl_ctx *ctx, const char *arg, bool verbose,
			 Runtime__V1__ContainerStatusResponse **ret);

/* ---- capabilities (ctl/cmd_proc.c) ---- */
/* The names of a mask's capabilities, lowest bit first (libcap's; numbers
 * for those it does not know), as capsh --decode lists them. */
json_t *ctl_caps_names(uint64_t mask);
/* A verbose container info's "capabilities" ({set: hex}) as {set: {mask,
 * names}}. */
void ctl_caps_decode_info(json_t *info);

/* ---- listing (ctl/list.c): ps, pods, stats ---- */
/* crictl's list options; each command's getopt table names those it takes:
 * -q, -o, --id (i), -p POD, --name RE (N), --label K=V (L), -n/--last,
 * -l/--latest, --no-trunc (T). */
typedef struct ctl_list_opts {
	ctl_format fmt;
	bool quiet, no_trunc;
	long last;	      /* 0: all */
	const char *id, *pod; /* as given */
	ctl_regex name;
	json_t *labels; /* the label_selector; ctl_list_filter takes it */
} ctl_list_opts;
void ctl_list_opts_init(ctl_list_opts *o);
void ctl_list_opts_clear(ctl_list_opts *o);
/* Takes option c (from ctl_getopt) if it is one of the above; 0, or the
 * usage error's exit status. */
int ctl_list_option(const ctl_command *cmd, int c, const char *arg, ctl_list_opts *o);
/* A list filter as JSON: o's label_selector, with id, pod_sandbox_id and
 * state ({"state": state}) when not NULL. */
json_t *ctl_list_filter(ctl_list_opts *o, const char *id, const char *pod_id, const char *state);
/* Lists items (listed messages: each has an id and a created_at) newest
 * first, the first --last of them: with -o json|yaml as {key: [...]}, with
 * -q their ids, else the header line and a row each. Sorts items. */
typedef void ctl_list_row_fn(const ProtobufCMessage *item, const ctl_list_opts *o);
void ctl_list_print(const ctl_list_opts *o, const char *key, ProtobufCMessage **items, size_t n,
		    const char *header, ctl_list_row_fn *row);

/* ---- streaming (ctl/cmd_stream.c) ---- */
/* CRI Exec, then the command's stdio over the URL's remote-command protocol
 * (SPDY/3.1, as crictl): the local stdin with `in`, a raw local terminal and
 * resizes with `tty`. Returns the command's exit status, or agentctl's. */
int ctl_exec_stream(ctl_ctx *ctx, const char *id, char **cmd, size_t n_cmd, bool in, bool tty);

#endif
