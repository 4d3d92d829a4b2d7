/* agentctl pull, images, inspecti, rmi: agent.v1.ImageService/PullImage (for
 * its progress stream) and the CRI runtime.v1.ImageService; load, save and
 * import: agent.v1.ImageService on files of agentd's host. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <string.h>
#include <unistd.h>

#include "agent/v1/agent.pb-c.h"
#include "cri/api.pb-c.h"
#include "ctl.h"

#define PATH_PULL "/agent.v1.ImageService/PullImage"
#define PATH_LIST "/runtime.v1.ImageService/ListImages"
#define PATH_STATUS "/runtime.v1.ImageService/ImageStatus"
#define PATH_REMOVE "/runtime.v1.ImageService/RemoveImage"
#define PATH_LOAD "/agent.v1.ImageService/LoadImage"
#define PATH_SAVE "/agent.v1.ImageService/SaveImage"
#define PATH_IMPORT "/agent.v1.ImageService/ImportImage"
#define BAR_WIDTH 30

/* Decimal units with three significant digits, as crictl prints sizes. */
static void human_size(uint64_t n, char buf[32])
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
	double v = (double)n;
	size_t u = 0;
	while (v >= 1000 && u < sizeof(units) / sizeof(units[0]) - 1) {
		v /= 1000;
		u++;
	}
	snprintf(buf, 32, "%.3g%s", v, units[u]);
}

static const char *short_digest(const char *d)
{
	const char *hex = strncmp(d, "sha256:", 7) == 0 ? d + 7 : d;
	return hex;
}

/* ---- pull -------------------------------------------------------------------- */

typedef struct pull_view {
	bool tty;
	size_t count;
	uint64_t *done, *total;
	int *state;
	char *image_id;
	bool drawn;
} pull_view;

static const char *state_name(int s)
{
	switch (s) {
	case AGENT__V1__LAYER_STATE__LAYER_STATE_WAITING:
		return "waiting";
	case AGENT__V1__LAYER_STATE__LAYER_STATE_DOWNLOADING:
		return "downloading";
	case AGENT__V1__LAYER_STATE__LAYER_STATE_EXTRACTING:
		return "extracting";
	case AGENT__V1__LAYER_STATE__LAYER_STATE_DONE:
		return "done";
	case AGENT__V1__LAYER_STATE__LAYER_STATE_EXISTS:
		return "already exists";
	default:
		return "failed";
	}
}

static bool finished(int s)
{
	return s == AGENT__V1__LAYER_STATE__LAYER_STATE_DONE ||
	       s == AGENT__V1__LAYER_STATE__LAYER_STATE_EXISTS;
}

static void draw_bar(pull_view *v)
{
	uint64_t done = 0, total = 0;
	size_t n_finished = 0;
	for (size_t i = 0; i < v->count; i++) {
		done += v->done[i];
		total += v->total[i];
		n_finished += finished(v->state[i]);
	}
	int fill = total ? (int)((double)done / (double)total * BAR_WIDTH) : 0;
	char d[32], t[32];
	human_size(done, d);
	human_size(total, t);
	fprintf(stderr, "\r\033[Klayers %zu/%zu [%.*s%*s] %s/%s", n_finished, v->count, fill,
		"==============================", BAR_WIDTH - fill, "", d, t);
	fflush(stderr);
	v->drawn = true;
}

static int on_pull_msg(const ProtobufCMessage *msg, void *userdata)
{
	pull_view *v = userdata;
	const Agent__V1__PullImageProgress *p = (const Agent__V1__PullImageProgress *)msg;
	if (p->image_id && p->image_id[0]) {
		free(v->image_id);
		v->image_id = ad_strdup(p->image_id);
		return 0;
	}
	if (!v->count && p->layer_count) {
		v->count = p->layer_count;
		v->done = ad_malloc0(sizeof(uint64_t) * v->count);
		v->total = ad_malloc0(sizeof(uint64_t) * v->count);
		v->state = ad_malloc0(sizeof(int) * v->count);
		for (size_t i = 0; i < v->count; i++)
			v->state[i] = -1;
	}
	if (p->layer_index >= v->count)
		return 0;
	size_t i = p->layer_index;
	int old = v->state[i];
	v->done[i] = p->bytes_done;
	v->total[i] = p->bytes_total;
	v->state[i] = (int)p->state;
	if (v->tty) {
		draw_bar(v);
	} else if (old != (int)p->state) {
		char t[32];
		human_size(p->bytes_total, t);
		fprintf(stderr, "layer %u/%u %.12s: %s (%s)\n", p->layer_index + 1, p->layer_count,
			short_digest(p->digest), state_name((int)p->state), t);
	}
	return 0;
}

static int run_pull(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"creds", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *creds = NULL;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			creds = optarg;
			break;
		case 'h':
			ctl_command_usage(stdout, &ctl_cmd_pull);
			return 0;
		case ':':
			return ctl_usage_error(&ctl_cmd_pull, "option '%s' needs an argument",
					       argv[optind - 1]);
		default:
			return ctl_usage_error(&ctl_cmd_pull, "bad option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return ctl_usage_error(&ctl_cmd_pull,
				       optind < argc ? "one IMAGE only" : "IMAGE is required");
	Agent__V1__PullImageRequest req = AGENT__V1__PULL_IMAGE_REQUEST__INIT;
	req.image = argv[optind];
	_cleanup_free_ char *user = NULL;
	if (creds) {
		const char *colon = strchr(creds, ':');
		if (!colon || colon == creds)
			return ctl_usage_error(&ctl_cmd_pull, "--creds wants USER:PASSWORD");
		user = ad_strndup(creds, (size_t)(colon - creds));
		req.username = user;
		req.password = (char *)colon + 1;
	}
	pull_view v = {.tty = isatty(STDERR_FILENO)};
	/* A pull takes as long as it takes unless -t was given. */
	int r = ctl_stream(ctx, PATH_PULL, &req.base, &agent__v1__pull_image_progress__descriptor,
			   ctx->timeout_given ? ctx->timeout_ms : 0, on_pull_msg, &v);
	if (v.drawn)
		fputc('\n', stderr);
	if (!r && !v.image_id) {
		ctl_warnx("%s: the stream ended without an image id", PATH_PULL + 1);
		r = EX_PROTOCOL;
	}
	if (!r)
		printf("%s\n", v.image_id);
	free(v.done);
	free(v.total);
	free(v.state);
	free(v.image_id);
	return r;
}

/* ---- images ------------------------------------------------------------------ */

static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *image_json(const Runtime__V1__Image *im)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(im->id));
	json_object_set_new(o, "repoTags", strv_json(im->repo_tags, im->n_repo_tags));
	json_object_set_new(o, "repoDigests", strv_json(im->repo_digests, im->n_repo_digests));
	json_object_set_new(o, "size", json_integer((json_int_t)im->size));
	if (im->uid)
		json_object_set_new(o, "uid", json_integer((json_int_t)im->uid->value));
	json_object_set_new(o, "username", json_string(im->username ? im->username : ""));
	json_object_set_new(o, "pinned", json_boolean(im->pinned));
	return o;
}

static void print_json(json_t *o)
{
	json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(o);
}

/* "host/name:tag" -> name "host/name", tag "tag" (the ':' after the last '/'). */
static void split_tag(const char *ref, char **ret_name, const char **ret_tag)
{
	const char *slash = strrchr(ref, '/');
	const char *colon = strrchr(slash ? slash : ref, ':');
	if (!colon) {
		*ret_name = ad_strdup(ref);
		*ret_tag = "<none>";
		return;
	}
	*ret_name = ad_strndup(ref, (size_t)(colon - ref));
	*ret_tag = colon + 1;
}

static void table_row(const char *name, const char *tag, const Runtime__V1__Image *im)
{
	char size[32];
	human_size(im->size, size);
	printf("%-40s %-12s %-15.13s %s\n", name, tag, short_digest(im->id), size);
}

static int run_images(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"quiet", no_argument, NULL, 'q'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	ctl_format fmt = CTL_TEXT;
	bool quiet = false;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":qo:h", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			quiet = true;
			break;
		case 'o':
			if (ctl_parse_format(&ctl_cmd_images, optarg, &fmt))
				return EX_USAGE;
			break;
		case 'h':
			ctl_command_usage(stdout, &ctl_cmd_images);
			return 0;
		case ':':
			return ctl_usage_error(&ctl_cmd_images, "option '%s' needs an argument",
					       argv[optind - 1]);
		default:
			return ctl_usage_error(&ctl_cmd_images, "bad option '%s'",
					       argv[optind - 1]);
		}
	}
	if (argc - optind > 1)
		return ctl_usage_error(&ctl_cmd_images, "unexpected argument '%s'",
				       argv[optind + 1]);
	Runtime__V1__ListImagesRequest req = RUNTIME__V1__LIST_IMAGES_REQUEST__INIT;
	Runtime__V1__ImageFilter filter = RUNTIME__V1__IMAGE_FILTER__INIT;
	Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
	if (optind < argc) {
		spec.image = argv[optind];
		filter.image = &spec;
		req.filter = &filter;
	}
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, PATH_LIST, &req.base, &runtime__v1__list_images_response__descriptor,
			  &m);
	if (r)
		return r;
	const Runtime__V1__ListImagesResponse *resp = (const Runtime__V1__ListImagesResponse *)m;
	if (fmt == CTL_JSON) {
		json_t *a = json_array();
		for (size_t i = 0; i < resp->n_images; i++)
			json_array_append_new(a, image_json(resp->images[i]));
		print_json(json_pack("{s:o}", "images", a));
	} else if (quiet) {
		for (size_t i = 0; i < resp->n_images; i++)
			printf("%s\n", resp->images[i]->id);
	} else {
		printf("%-40s %-12s %-15s %s\n", "IMAGE", "TAG", "IMAGE ID", "SIZE");
		for (size_t i = 0; i < resp->n_images; i++) {
			const Runtime__V1__Image *im = resp->images[i];
			if (!im->n_repo_tags) {
				/* Untagged: named by a repo digest, as crictl does. */
				_cleanup_free_ char *name = NULL;
				if (im->n_repo_digests) {
					const char *at = strchr(im->repo_digests[0], '@');
					name = at ? ad_strndup(im->repo_digests[0],
							       (size_t)(at - im->repo_digests[0]))
						  : ad_strdup(im->repo_digests[0]);
				}
				table_row(name ? name : "<none>", "<none>", im);
			}
			for (size_t j = 0; j < im->n_repo_tags; j++) {
				_cleanup_free_ char *name = NULL;
				const char *tag;
				split_tag(im->repo_tags[j], &name, &tag);
				table_row(name, tag, im);
			}
		}
	}
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

/* ---- inspecti, rmi -------------------------------------------------------------- */

/* ImageStatus of `image`; *ret is NULL-image when absent. */
static int image_status(ctl_ctx *ctx, const char *image, bool verbose,
			Runtime__V1__ImageStatusResponse **ret)
{
	Runtime__V1__ImageStatusRequest req = RUNTIME__V1__IMAGE_STATUS_REQUEST__INIT;
	Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
	spec.image = (char *)image;
	req.image = &spec;
	req.verbose = verbose;
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, PATH_STATUS, &req.base,
			  &runtime__v1__image_status_response__descriptor, &m);
	if (r)
		return r;
	*ret = (Runtime__V1__ImageStatusResponse *)m;
	return 0;
}

static int run_inspecti(ctl_ctx *ctx, int argc, char **argv)
{
	int c;
	opterr = 0;
	while ((c = getopt(argc, argv, ":h")) != -1) {
		if (c == 'h') {
			ctl_command_usage(stdout, &ctl_cmd_inspecti);
			return 0;
		}
		return ctl_usage_error(&ctl_cmd_inspecti, "bad option '%s'", argv[optind - 1]);
	}
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_inspecti, "IMAGE is required");
	json_t *out = json_array();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		Runtime__V1__ImageStatusResponse *st = NULL;
		int r = image_status(ctx, argv[i], true, &st);
		if (r) {
			json_decref(out);
			return r;
		}
		if (!st->image) {
			ctl_warnx("no such image: %s", argv[i]);
			status = 1;
		} else {
			json_t *o = json_pack("{s:o}", "status", image_json(st->image));
			json_t *info = json_object();
			for (size_t j = 0; j < st->n_info; j++) {
				json_t *v = json_loads(st->info[j]->value, 0, NULL);
				json_object_set_new(info, st->info[j]->key,
						    v ? v : json_string(st->info[j]->value));
			}
			json_object_set_new(o, "info", info);
			json_array_append_new(out, o);
		}
		protobuf_c_message_free_unpacked(&st->base, NULL);
	}
	/* One image: the object itself, as crictl inspecti prints it. */
	if (json_array_size(out) == 1 && argc - optind == 1)
		print_json(json_incref(json_array_get(out, 0)));
	else if (json_array_size(out))
		print_json(json_incref(out));
	json_decref(out);
	return status;
}

static int run_rmi(ctl_ctx *ctx, int argc, char **argv)
{
	int c;
	opterr = 0;
	while ((c = getopt(argc, argv, ":h")) != -1) {
		if (c == 'h') {
			ctl_command_usage(stdout, &ctl_cmd_rmi);
			return 0;
		}
		return ctl_usage_error(&ctl_cmd_rmi, "bad option '%s'", argv[optind - 1]);
	}
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_rmi, "IMAGE is required");
	int status = 0;
	for (int i = optind; i < argc; i++) {
		/* RemoveImage succeeds for an absent image (the CRI wants it
		 * idempotent); a person typing a name wants to hear about a typo. */
		Runtime__V1__ImageStatusResponse *st = NULL;
		int r = image_status(ctx, argv[i], false, &st);
		if (r)
			return r;
		bool absent = !st->image;
		protobuf_c_message_free_unpacked(&st->base, NULL);
		if (absent) {
			ctl_warnx("no such image: %s", argv[i]);
			status = 1;
			continue;
		}
		Runtime__V1__RemoveImageRequest req = RUNTIME__V1__REMOVE_IMAGE_REQUEST__INIT;
		Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
		spec.image = argv[i];
		req.image = &spec;
		ProtobufCMessage *m = NULL;
		r = ctl_unary(ctx, PATH_REMOVE, &req.base,
			      &runtime__v1__remove_image_response__descriptor, &m);
		if (r) {
			status = r;
			continue;
		}
		protobuf_c_message_free_unpacked(m, NULL);
		printf("Deleted: %s\n", argv[i]);
	}
	return status;
}

/* ---- load, save, import ---------------------------------------------------------- */
/* agentd opens the file itself: it must be absolute, so a relative one is made
 * absolute here (agentd and agentctl share the host's file system). */

static char *absolute_path(const char *path)
{
	if (path[0] == '/')
		return ad_strdup(path);
	char *cwd = getcwd(NULL, 0);
	if (!cwd)
		return ad_strdup(path); /* agentd answers "must be absolute" */
	char *abs = ad_asprintf("%s/%s", cwd, path);
	free(cwd);
	return abs;
}

/* getopt with one option taking a FILE (-i for load, -o for save) and -h. */
static int file_option(const ctl_command *cmd, int argc, char **argv, const char *shortopts,
		       const struct option *opts, const char **ret_file)
{
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		switch (c) {
		case 'i':
		case 'o':
			*ret_file = optarg;
			break;
		case 'h':
			ctl_command_usage(stdout, cmd);
			return -1;
		case ':':
			return ctl_usage_error(cmd, "option '%s' needs an argument",
					       argv[optind - 1]);
		default:
			return ctl_usage_error(cmd, "bad option '%s'", argv[optind - 1]);
		}
	}
	return 0;
}

static int run_load(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"input", required_argument, NULL, 'i'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *file = NULL;
	int r = file_option(&ctl_cmd_load, argc, argv, ":i:h", opts, &file);
	if (r)
		return r < 0 ? 0 : r;
	if (optind < argc)
		return ctl_usage_error(&ctl_cmd_load, "unexpected argument '%s'", argv[optind]);
	if (!file)
		return ctl_usage_error(&ctl_cmd_load, "-i FILE is required");
	_cleanup_free_ char *path = absolute_path(file);
	Agent__V1__LoadImageRequest req = AGENT__V1__LOAD_IMAGE_REQUEST__INIT;
	req.path = path;
	ctl_long_call(ctx);
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_LOAD, &req.base, &agent__v1__load_image_response__descriptor, &m);
	if (r)
		return r;
	const Agent__V1__LoadImageResponse *resp = (const Agent__V1__LoadImageResponse *)m;
	/* As docker load prints: the tags, or the ids of untagged images. */
	for (size_t i = 0; i < resp->n_tags; i++)
		printf("Loaded image: %s\n", resp->tags[i]);
	if (!resp->n_tags)
		for (size_t i = 0; i < resp->n_image_ids; i++)
			printf("Loaded image ID: %s\n", resp->image_ids[i]);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static int run_save(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *file = NULL;
	int r = file_option(&ctl_cmd_save, argc, argv, ":o:h", opts, &file);
	if (r)
		return r < 0 ? 0 : r;
	if (!file)
		return ctl_usage_error(&ctl_cmd_save, "-o FILE is required");
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_save, "IMAGE is required");
	_cleanup_free_ char *path = absolute_path(file);
	Agent__V1__SaveImageRequest req = AGENT__V1__SAVE_IMAGE_REQUEST__INIT;
	req.path = path;
	req.images = argv + optind;
	req.n_images = (size_t)(argc - optind);
	ctl_long_call(ctx);
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_SAVE, &req.base, &agent__v1__save_image_response__descriptor, &m);
	if (r)
		return r;
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static int run_import(ctl_ctx *ctx, int argc, char **argv)
{
	int c;
	opterr = 0;
	while ((c = getopt(argc, argv, ":h")) != -1) {
		if (c == 'h') {
			ctl_command_usage(stdout, &ctl_cmd_import);
			return 0;
		}
		return ctl_usage_error(&ctl_cmd_import, "bad option '%s'", argv[optind - 1]);
	}
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_import, "FILE is required");
	if (argc - optind > 2)
		return ctl_usage_error(&ctl_cmd_import, "unexpected argument '%s'",
				       argv[optind + 2]);
	_cleanup_free_ char *path = absolute_path(argv[optind]);
	Agent__V1__ImportImageRequest req = AGENT__V1__IMPORT_IMAGE_REQUEST__INIT;
	req.path = path;
	req.reference = optind + 1 < argc ? argv[optind + 1] : (char *)"";
	ctl_long_call(ctx);
	ProtobufCMessage *m = NULL;
	int r = ctl_unary(ctx, PATH_IMPORT, &req.base,
			  &agent__v1__import_image_response__descriptor, &m);
	if (r)
		return r;
	/* As docker import prints: the new image's id. */
	printf("%s\n", ((const Agent__V1__ImportImageResponse *)m)->image_id);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

const ctl_command ctl_cmd_pull = {
    .name = "pull",
    .synopsis = "[--creds USER:PASS] IMAGE",
    .summary = "pull an image, showing per-layer progress; prints its id",
    .run = run_pull,
};

const ctl_command ctl_cmd_images = {
    .name = "images",
    .synopsis = "[-q] [-o json|text] [IMAGE]",
    .summary = "list images (IMAGE TAG IMAGE ID SIZE)",
    .run = run_images,
};

const ctl_command ctl_cmd_inspecti = {
    .name = "inspecti",
    .synopsis = "IMAGE...",
    .summary = "an image's status and config as JSON",
    .run = run_inspecti,
};

const ctl_command ctl_cmd_rmi = {
    .name = "rmi",
    .synopsis = "IMAGE...",
    .summary = "remove images",
    .run = run_rmi,
};

const ctl_command ctl_cmd_load = {
    .name = "load",
    .synopsis = "-i FILE",
    .summary = "load images from a docker-archive or oci-archive (a file on agentd's host)",
    .run = run_load,
};

const ctl_command ctl_cmd_save = {
    .name = "save",
    .synopsis = "-o FILE IMAGE...",
    .summary = "save images to a tar that docker load and oci-archive readers take",
    .run = run_save,
};

const ctl_command ctl_cmd_import = {
    .name = "import",
    .synopsis = "FILE [REFERENCE]",
    .summary = "import a rootfs tar as a one-layer image; prints its id",
    .run = run_import,
};
