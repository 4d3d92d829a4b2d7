/* build, commit: agent.v1.BuildService. The build context is sent as a tar in
 * the request (made here, .dockerignore applied), so a remote agentd over
 * mutual TLS builds exactly what a local one does; it is bounded by agentd's
 * [grpc] max_recv_msg_size (16 MiB by default). */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/v1/build.pb-c.h"
#include "ctl.h"

#include <jansson.h>

#define PATH_BUILD "/agent.v1.BuildService/Build"
#define PATH_COMMIT "/agent.v1.BuildService/Commit"
#define MAX_DEPTH 256

/* ---- the context tar ---- */

typedef struct ignore {
	char **patterns; /* cleaned; a leading '!' kept: an exception */
	size_t n;
} ignore;

static void ignore_load(ignore *ig, int ctx_fd)
{
	int fd = openat(ctx_fd, ".dockerignore", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	FILE *f = fdopen(fd, "r");
	char *line = NULL;
	size_t cap = 0;
	while (f && getline(&line, &cap, f) > 0) {
		char *p = line;
		p[strcspn(p, "\r\n")] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		size_t l = strlen(p);
		while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
			p[--l] = '\0';
		if (!*p || *p == '#')
			continue;
		bool exception = *p == '!';
		if (exception)
			p++;
		while (*p == '/')
			p++;
		while (strncmp(p, "./", 2) == 0)
			p += 2;
		l = strlen(p);
		while (l > 1 && p[l - 1] == '/')
			p[--l] = '\0';
		ig->patterns = ad_realloc(ig->patterns, sizeof(char *) * (ig->n + 1));
		ig->patterns[ig->n++] = ad_asprintf("%s%s", exception ? "!" : "", p);
	}
	free(line);
	if (f)
		fclose(f);
}

/* Whether `path` (relative, no leading "./") is excluded: the last matching
 * pattern decides, a pattern matching a directory matches what is in it. */
static bool ignored(const ignore *ig, const char *path)
{
	bool out = false;
	for (size_t i = 0; i < ig->n; i++) {
		const char *p = ig->patterns[i];
		bool exception = *p == '!';
		if (exception)
			p++;
		/* "**" matches any number of directories: without FNM_PATHNAME. */
		int flags = strstr(p, "**") ? 0 : FNM_PATHNAME;
		bool match = fnmatch(p, path, flags) == 0;
		for (const char *s = strchr(path, '/'); !match && s; s = strchr(s + 1, '/')) {
			_cleanup_free_ char *prefix = ad_strndup(path, (size_t)(s - path));
			match = fnmatch(p, prefix, flags) == 0;
		}
		if (match)
			out = !exception;
	}
	return out;
}

typedef struct membuf {
	uint8_t *p;
	size_t len, cap, max;
	bool over;
} membuf;

static la_ssize_t membuf_write(struct archive *a, void *client, const void *buf, size_t n)
{
	(void)a;
	membuf *m = client;
	if (m->len + n > m->max) {
		m->over = true;
		return -1;
	}
	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2;
		m->p = ad_realloc(m->p, m->cap);
	}
	memcpy(m->p + m->len, buf, n);
	m->len += n;
	return (la_ssize_t)n;
}

static int add_tree(struct archive *a, int dir_fd, const char *prefix, const ignore *ig,
		    unsigned depth)
{
	if (depth > MAX_DEPTH) {
		ctl_warnx("build context: %s is nested too deep", prefix);
		return -1;
	}
	size_t n = 0;
	char **names = ad_dir_names(dir_fd, ".", &n);
	if (!names) {
		ctl_warnx("build context: %s: %s", *prefix ? prefix : ".", strerror(errno));
		return -1;
	}
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *rel = ad_asprintf("%s%s", prefix, names[i]);
		struct stat st;
		if (r || ignored(ig, rel) || fstatat(dir_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			goto next;
		if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode))
			goto next; /* devices, sockets, fifos: not context material */
		struct archive_entry *e = archive_entry_new();
		archive_entry_copy_stat(e, &st);
		archive_entry_set_pathname(e, rel);
		archive_entry_set_atime(e, 0, 0);
		archive_entry_unset_atime(e);
		archive_entry_unset_ctime(e);
		archive_entry_unset_birthtime(e);
		archive_entry_set_nlink(e, 1);
		if (S_ISLNK(st.st_mode)) {
			char t[4097];
			ssize_t l = readlinkat(dir_fd, names[i], t, sizeof(t) - 1);
			t[l < 0 ? 0 : l] = '\0';
			archive_entry_set_symlink(e, t);
		}
		if (!S_ISREG(st.st_mode))
			archive_entry_set_size(e, 0);
		if (archive_write_header(a, e) != ARCHIVE_OK) {
			archive_entry_free(e);
			r = -1;
			goto next;
		}
		archive_entry_free(e);
		if (S_ISREG(st.st_mode)) {
			int fd = openat(dir_fd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				ctl_warnx("build context: %s: %s", rel, strerror(errno));
				r = -1;
				goto next;
			}
			char buf[65536];
			ssize_t got;
			while ((got = read(fd, buf, sizeof(buf))) > 0)
				if (archive_write_data(a, buf, (size_t)got) != got) {
					r = -1;
					break;
				}
			close(fd);
		} else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dir_fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			_cleanup_free_ char *p = ad_asprintf("%s/", rel);
			r = sub < 0 ? -1 : add_tree(a, sub, p, ig, depth + 1);
			if (sub >= 0)
				close(sub);
		}
	next:;
	}
	ad_strv_free(names);
	return r;
}

/* The context dir as a tar in memory; 0 or an exit status. */
static int context_tar(const char *dir, size_t max, membuf *out)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ctl_warnx("build context %s: %s", dir, strerror(errno));
		return EX_NOINPUT;
	}
	ignore ig = {0};
	ignore_load(&ig, fd);
	*out = (membuf){.max = max};
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	int r = archive_write_open2(a, out, NULL, membuf_write, NULL, NULL) == ARCHIVE_OK
		    ? add_tree(a, fd, "", &ig, 0)
		    : -1;
	if (archive_write_close(a) != ARCHIVE_OK)
		r = -1;
	if (r < 0 && !out->over)
		ctl_warnx("build context %s: %s", dir,
			  archive_error_string(a) ? archive_error_string(a) : "cannot be read");
	archive_write_free(a);
	close(fd);
	for (size_t i = 0; i < ig.n; i++)
		free(ig.patterns[i]);
	free(ig.patterns);
	if (out->over) {
		ctl_warnx("build context %s is over %zu bytes (agentd's message limit): list what "
			  "the build does not need in .dockerignore",
			  dir, max);
		return EX_DATAERR;
	}
	return r < 0 ? EX_IOERR : 0;
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ctl_warnx("%s: %s", path, strerror(errno));
		return EX_NOINPUT;
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	ssize_t n;
	do {
		buf = ad_realloc(buf, len + 65536);
		n = read(fd, buf + len, 65536);
		if (n > 0)
			len += (size_t)n;
	} while (n > 0 && len < (1u << 20));
	close(fd);
	if (n < 0) {
		free(buf);
		ctl_warnx("%s: %s", path, strerror(errno));
		return EX_IOERR;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* ---- build ---- */

typedef struct build_view {
	bool quiet;
	char *image_id;
} build_view;

static int on_build_msg(const ProtobufCMessage *msg, void *userdata)
{
	build_view *v = userdata;
	const Agent__V1__BuildProgress *p = (const Agent__V1__BuildProgress *)msg;
	if (p->image_id && *p->image_id) {
		free(v->image_id);
		v->image_id = ad_strdup(p->image_id);
	}
	if (!v->quiet && p->output && *p->output) {
		fputs(p->output, stderr);
		fflush(stderr);
	}
	return 0;
}

/* SOURCE_DATE_EPOCH from the environment, as build tools read it; 0: unset. */
static int64_t source_date_epoch(void)
{
	const char *epoch = getenv("SOURCE_DATE_EPOCH");
	return epoch && *epoch ? strtoll(epoch, NULL, 10) : 0;
}

/* --network pod:PREFIX is sent with the pod's full id; none and host as
 * given (agentd says what else is wrong). 0 or an exit status. */
static int network_option(ctl_ctx *ctx, const char *arg, char **ret)
{
	*ret = NULL;
	if (strncmp(arg, "pod:", 4) != 0 || !arg[4]) {
		*ret = ad_strdup(arg);
		return 0;
	}
	_cleanup_free_ char *id = NULL;
	int r = ctl_resolve_id(ctx, true, arg + 4, &id);
	if (!r)
		*ret = ad_asprintf("pod:%s", id);
	return r;
}

static int run_build(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"tag", required_argument, NULL, 't'},   {"file", required_argument, NULL, 'f'},
	    {"build-arg", required_argument, NULL, 'a'}, {"no-cache", no_argument, NULL, 'n'},
	    {"target", required_argument, NULL, 'T'}, {"network", required_argument, NULL, 'N'},
	    {"quiet", no_argument, NULL, 'q'},	     {"help", no_argument, NULL, 'h'},
	    {0},
	};
	Agent__V1__BuildRequest req = AGENT__V1__BUILD_REQUEST__INIT;
	const char *file = NULL, *network = NULL;
	_cleanup_free_ char *network_full = NULL;
	Agent__V1__BuildRequest__BuildArgsEntry **args = NULL;
	size_t n_args = 0;
	build_view v = {0};
	int r = 0, c;
	while ((c = ctl_getopt(&ctl_cmd_build, argc, argv, ":t:f:qh", opts, &r)) != -1) {
		switch (c) {
		case 't':
			req.tag = optarg;
			break;
		case 'f':
			file = optarg;
			break;
		case 'a': {
			char *eq = strchr(optarg, '=');
			args = ad_realloc(args, sizeof(*args) * (n_args + 1));
			Agent__V1__BuildRequest__BuildArgsEntry *e = ad_malloc0(sizeof(*e));
			agent__v1__build_request__build_args_entry__init(e);
			e->key = eq ? ad_strndup(optarg, (size_t)(eq - optarg)) : ad_strdup(optarg);
			/* KEY alone: its value from the environment, as docker does. */
			e->value = ad_strdup(eq ? eq + 1 : (getenv(optarg) ? getenv(optarg) : ""));
			args[n_args++] = e;
			break;
		}
		case 'n':
			req.no_cache = true;
			break;
		case 'T':
			req.target = optarg;
			break;
		case 'N':
			network = optarg;
			break;
		case 'q':
			v.quiet = true;
			break;
		}
	}
	if (!r && optind != argc - 1)
		r = ctl_usage_error(&ctl_cmd_build, "CONTEXT (a directory) is required");
	if (!r && network && (r = network_option(ctx, network, &network_full)) == 0)
		req.network = network_full;
	uint8_t *df = NULL, *tar = NULL;
	size_t df_len = 0;
	_cleanup_free_ char *df_path = NULL;
	if (!r) {
		const char *dir = argv[optind];
		df_path = file ? ad_strdup(file) : ad_asprintf("%s/Dockerfile", dir);
		r = read_file(df_path, &df, &df_len);
		membuf m = {0};
		if (!r)
			r = context_tar(dir, RPC_DEFAULT_MAX_MSG - df_len - 65536, &m);
		tar = m.p;
		req.context.data = m.p;
		req.context.len = m.len;
	}
	if (!r) {
		const char *base = strrchr(df_path, '/') ? strrchr(df_path, '/') + 1 : df_path;
		req.dockerfile_name = (char *)base;
		req.dockerfile.data = df;
		req.dockerfile.len = df_len;
		req.build_args = args;
		req.n_build_args = n_args;
		req.source_date_epoch = source_date_epoch();
		r = ctl_stream(ctx, PATH_BUILD, &req.base, &agent__v1__build_progress__descriptor,
			       ctx->timeout_given ? ctx->timeout_ms : 0, on_build_msg, &v);
		if (!r && !v.image_id) {
			ctl_warnx("%s: the stream ended without an image id", PATH_BUILD + 1);
			r = EX_PROTOCOL;
		}
		if (!r)
			printf("%s\n", v.image_id);
	}
	for (size_t i = 0; i < n_args; i++) {
		free(args[i]->key);
		free(args[i]->value);
		free(args[i]);
	}
	free(args);
	free(df);
	free(tar);
	free(v.image_id);
	return r < 0 ? 0 : r;
}

/* ---- commit ---- */

static int run_commit(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"author", required_argument, NULL, 'a'},
	    {"message", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	Agent__V1__CommitRequest req = AGENT__V1__COMMIT_REQUEST__INIT;
	int r = 0, c;
	while ((c = ctl_getopt(&ctl_cmd_commit, argc, argv, ":a:m:h", opts, &r)) != -1) {
		if (c == 'a')
			req.author = optarg;
		else if (c == 'm')
			req.message = optarg;
	}
	if (r)
		return r < 0 ? 0 : r;
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_commit, "CONTAINER is required");
	r = ctl_operands_at_most(&ctl_cmd_commit, argc, argv, 2);
	if (r)
		return r;
	_cleanup_free_ char *id = NULL;
	r = ctl_resolve_id(ctx, false, argv[optind], &id);
	if (r)
		return r;
	req.container_id = id;
	req.reference = optind + 1 < argc ? argv[optind + 1] : (char *)"";
	req.source_date_epoch = source_date_epoch();
	ctl_long_call(ctx);
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_COMMIT, &req.base, &agent__v1__commit_response__descriptor, &m);
	if (r)
		return r;
	printf("%s\n", ((const Agent__V1__CommitResponse *)m)->image_id);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

/* ---- wc: working containers ---- */

#define PATH_WC(m) "/agent.v1.BuildService/Working" m

static int wc_usage(void)
{
	return ctl_usage_error(&ctl_cmd_wc, "VERB is one of from, run, copy, config, commit, "
					    "mount, umount, rm");
}

/* A tar of SRC...: a file as its base name, a directory's contents. */
static int sources_tar(char **srcs, int n, membuf *out)
{
	*out = (membuf){.max = RPC_DEFAULT_MAX_MSG - 65536};
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	ignore none = {0};
	int r = archive_write_open2(a, out, NULL, membuf_write, NULL, NULL) == ARCHIVE_OK ? 0 : -1;
	for (int i = 0; r == 0 && i < n; i++) {
		struct stat st;
		if (lstat(srcs[i], &st) < 0) {
			ctl_warnx("%s: %s", srcs[i], strerror(errno));
			r = EX_NOINPUT;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int fd = open(srcs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			r = fd < 0 ? -1 : add_tree(a, fd, "", &none, 0);
			if (fd >= 0)
				close(fd);
			continue;
		}
		_cleanup_free_ char *copy = ad_strdup(srcs[i]);
		char *slash = strrchr(copy, '/');
		const char *base = slash ? slash + 1 : copy;
		if (slash)
			*slash = '\0';
		int dfd = open(slash ? (*copy ? copy : "/") : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* add_tree of the parent would take its siblings too: one entry. */
		ignore only = {0};
		_cleanup_free_ char *pat = ad_asprintf("!%s", base);
		char *pats[] = {(char *)"*", pat};
		only.patterns = pats;
		only.n = 2;
		r = dfd < 0 ? -1 : add_tree(a, dfd, "", &only, 0);
		if (dfd >= 0)
			close(dfd);
	}
	if (archive_write_close(a) != ARCHIVE_OK && r == 0)
		r = -1;
	archive_write_free(a);
	if (out->over) {
		ctl_warnx("what to copy is over %zu bytes (agentd's message limit)", out->max);
		return EX_DATAERR;
	}
	return r < 0 ? EX_IOERR : r;
}

static int on_run_msg(const ProtobufCMessage *msg, void *userdata)
{
	(void)userdata;
	const Agent__V1__BuildProgress *p = (const Agent__V1__BuildProgress *)msg;
	if (p->output && *p->output) {
		fputs(p->output, stdout);
		fflush(stdout);
	}
	return 0;
}

static int wc_from(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
					     {"help", no_argument, NULL, 'h'}, {0}};
	Agent__V1__WorkingFromRequest req = AGENT__V1__WORKING_FROM_REQUEST__INIT;
	int r = 0, c;
	while ((c = ctl_getopt(&ctl_cmd_wc, argc, argv, ":n:h", opts, &r)) != -1)
		req.name = optarg;
	if (r)
		return r < 0 ? 0 : r;
	if (optind != argc - 1)
		return ctl_usage_error(&ctl_cmd_wc, "from: IMAGE (or scratch) is required");
	req.image = argv[optind];
	ctl_long_call(ctx);
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_WC("From"), &req.base,
		      &agent__v1__working_from_response__descriptor, &m);
	if (r)
		return r;
	printf("%s\n", ((const Agent__V1__WorkingFromResponse *)m)->name);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static int wc_run(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {{"network", required_argument, NULL, 'N'},
					     {"help", no_argument, NULL, 'h'}, {0}};
	Agent__V1__WorkingRunRequest req = AGENT__V1__WORKING_RUN_REQUEST__INIT;
	int r = 0, c;
	const char *network = NULL;
	while ((c = ctl_getopt(&ctl_cmd_wc, argc, argv, "+:h", opts, &r)) != -1)
		network = optarg;
	if (r)
		return r < 0 ? 0 : r;
	_cleanup_free_ char *network_full = NULL;
	if (network && (r = network_option(ctx, network, &network_full)) != 0)
		return r;
	req.network = network_full;
	if (optind < argc && strcmp(argv[optind], "--") == 0)
		optind++;
	if (argc - optind < 2)
		return ctl_usage_error(&ctl_cmd_wc, "run: NAME [--] COMMAND... is required");
	req.name = argv[optind];
	if (optind + 1 < argc && strcmp(argv[optind + 1], "--") == 0)
		optind++;
	req.args = argv + optind + 1;
	req.n_args = (size_t)(argc - optind - 1);
	if (!req.n_args)
		return ctl_usage_error(&ctl_cmd_wc, "run: a COMMAND is required");
	return ctl_stream(ctx, PATH_WC("Run"), &req.base, &agent__v1__build_progress__descriptor,
			  ctx->timeout_given ? ctx->timeout_ms : 0, on_run_msg, NULL);
}

static int wc_copy(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {{"chown", required_argument, NULL, 'c'},
					     {"help", no_argument, NULL, 'h'}, {0}};
	Agent__V1__WorkingCopyRequest req = AGENT__V1__WORKING_COPY_REQUEST__INIT;
	int r = 0, c;
	while ((c = ctl_getopt(&ctl_cmd_wc, argc, argv, ":h", opts, &r)) != -1)
		req.chown = optarg;
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind < 3)
		return ctl_usage_error(&ctl_cmd_wc, "copy: NAME SRC... DEST is required");
	req.name = argv[optind];
	req.dest = argv[argc - 1];
	membuf m = {0};
	r = sources_tar(argv + optind + 1, argc - optind - 2, &m);
	if (!r) {
		req.archive.data = m.p;
		req.archive.len = m.len;
		ctl_long_call(ctx);
		r = ctl_unary(ctx, PATH_WC("Copy"), &req.base,
			      &agent__v1__working_response__descriptor, NULL);
	}
	free(m.p);
	return r;
}

/* --entrypoint/--cmd: a JSON array, else the shell form. */
static char **command_arg(const char *s, size_t *ret_n)
{
	json_error_t je;
	json_t *j = s[0] == '[' ? json_loads(s, 0, &je) : NULL;
	char **v;
	if (json_is_array(j)) {
		*ret_n = json_array_size(j);
		v = ad_malloc0(sizeof(char *) * (*ret_n + 1));
		for (size_t i = 0; i < *ret_n; i++)
			v[i] = ad_strdup(json_string_value(json_array_get(j, i)) ?: "");
	} else {
		*ret_n = s[0] ? 3 : 0;
		v = ad_malloc0(sizeof(char *) * 4);
		if (s[0]) {
			v[0] = ad_strdup("/bin/sh");
			v[1] = ad_strdup("-c");
			v[2] = ad_strdup(s);
		}
	}
	json_decref(j);
	return v;
}

static int wc_config(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"entrypoint", required_argument, NULL, 'E'}, {"cmd", required_argument, NULL, 'C'},
	    {"env", required_argument, NULL, 'e'},	  {"port", required_argument, NULL, 'p'},
	    {"label", required_argument, NULL, 'l'},	  {"user", required_argument, NULL, 'u'},
	    {"workingdir", required_argument, NULL, 'w'}, {"author", required_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},		  {0}};
	Agent__V1__WorkingConfigRequest req = AGENT__V1__WORKING_CONFIG_REQUEST__INIT;
	char **env = ad_malloc0(sizeof(char *) * (size_t)argc), **ports = ad_malloc0(sizeof(char *) * (size_t)argc),
	     **labels = ad_malloc0(sizeof(char *) * (size_t)argc);
	int r = 0, c;
	while ((c = ctl_getopt(&ctl_cmd_wc, argc, argv, ":e:p:l:u:h", opts, &r)) != -1) {
		switch (c) {
		case 'E':
			for (size_t i = 0; i < req.n_entrypoint; i++)
				free(req.entrypoint[i]);
			free(req.entrypoint);
			req.entrypoint = command_arg(optarg, &req.n_entrypoint);
			req.set_entrypoint = true;
			break;
		case 'C':
			for (size_t i = 0; i < req.n_cmd; i++)
				free(req.cmd[i]);
			free(req.cmd);
			req.cmd = command_arg(optarg, &req.n_cmd);
			req.set_cmd = true;
			break;
		case 'e':
			env[req.n_env++] = optarg;
			break;
		case 'p':
			ports[req.n_ports++] = optarg;
			break;
		case 'l':
			labels[req.n_labels++] = optarg;
			break;
		case 'u':
			req.user = optarg;
			break;
		case 'w':
			req.workdir = optarg;
			break;
		case 'a':
			req.author = optarg;
			break;
		}
	}
	req.env = env;
	req.ports = ports;
	req.labels = labels;
	if (!r && optind != argc - 1)
		r = ctl_usage_error(&ctl_cmd_wc, "config: NAME is required");
	if (!r) {
		req.name = argv[optind];
		r = ctl_unary(ctx, PATH_WC("Config"), &req.base,
			      &agent__v1__working_response__descriptor, NULL);
	}
	for (size_t i = 0; i < req.n_entrypoint; i++)
		free(req.entrypoint[i]);
	free(req.entrypoint);
	for (size_t i = 0; i < req.n_cmd; i++)
		free(req.cmd[i]);
	free(req.cmd);
	free(env);
	free(ports);
	free(labels);
	return r < 0 ? 0 : r;
}

static int wc_simple(ctl_ctx *ctx, int argc, char **argv, const char *verb)
{
	int r = ctl_ids_only(&ctl_cmd_wc, argc, argv, "NAME");
	if (r)
		return r < 0 ? 0 : r;
	int status = 0;
	for (int i = optind; i < argc; i++) {
		Agent__V1__WorkingRequest req = AGENT__V1__WORKING_REQUEST__INIT;
		req.name = argv[i];
		ProtobufCMessage *m = NULL;
		if (strcmp(verb, "mount") == 0) {
			r = ctl_unary(ctx, PATH_WC("Mount"), &req.base,
				      &agent__v1__working_mount_response__descriptor, &m);
			if (!r)
				printf("%s\n", ((const Agent__V1__WorkingMountResponse *)m)->path);
		} else {
			r = ctl_unary(ctx,
				      strcmp(verb, "umount") == 0 ? PATH_WC("Umount")
								 : PATH_WC("Remove"),
				      &req.base, &agent__v1__working_response__descriptor, NULL);
		}
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
		if (r)
			status = r;
	}
	return status;
}

static int run_wc(ctl_ctx *ctx, int argc, char **argv)
{
	if (argc < 2)
		return wc_usage();
	const char *verb = argv[1];
	if (strcmp(verb, "-h") == 0 || strcmp(verb, "--help") == 0) {
		ctl_command_usage(stdout, &ctl_cmd_wc);
		return 0;
	}
	argc--;
	argv++;
	optind = 0;
	if (strcmp(verb, "from") == 0)
		return wc_from(ctx, argc, argv);
	if (strcmp(verb, "run") == 0)
		return wc_run(ctx, argc, argv);
	if (strcmp(verb, "copy") == 0)
		return wc_copy(ctx, argc, argv);
	if (strcmp(verb, "config") == 0)
		return wc_config(ctx, argc, argv);
	if (strcmp(verb, "commit") == 0)
		return ctl_cmd_commit.run(ctx, argc, argv);
	if (strcmp(verb, "mount") == 0 || strcmp(verb, "umount") == 0 || strcmp(verb, "rm") == 0)
		return wc_simple(ctx, argc, argv, verb);
	return wc_usage();
}

const ctl_command ctl_cmd_wc = {
    .name = "wc",
    .synopsis = "from [--name N] IMAGE|scratch | run [--network none|host|pod:POD] NAME [--] CMD... | "
		"copy [--chown U:G] NAME SRC... DEST | config [--entrypoint E] [--cmd C] "
		"[-e K=V] [-p PORT] [-l K=V] [-u USER] [--workingdir D] NAME | commit NAME IMAGE | "
		"mount NAME | umount NAME | rm NAME...",
    .summary = "buildah-style working containers: from, run, copy, config, commit, mount, "
	       "umount, rm",
    .run = run_wc,
};

const ctl_command ctl_cmd_build = {
    .name = "build",
    .synopsis = "[-t NAME] [-f DOCKERFILE] [--build-arg K=V]... [--target STAGE] [--no-cache] "
		"[--network none|host|pod:POD] [-q] CONTEXT",
    .summary = "build an image from a Dockerfile (SOURCE_DATE_EPOCH clamps times); prints its id",
    .run = run_build,
};

const ctl_command ctl_cmd_commit = {
    .name = "commit",
    .synopsis = "[--author A] [-m MESSAGE] CONTAINER [NAME]",
    .summary = "a container's changes as a new image (SOURCE_DATE_EPOCH clamps times); prints "
	       "its id",
    .run = run_commit,
};
