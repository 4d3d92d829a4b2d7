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
#define PATH_PUSH "/agent.v1.ImageService/PushImage"
#define PATH_TAG "/agent.v1.ImageService/TagImage"
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

/* --creds USER:PASSWORD: *ret_user allocated, *ret_password into creds. */
static int split_creds(const ctl_command *cmd, const char *creds, char **ret_user,
		       char **ret_password)
{
	const char *colon = strchr(creds, ':');
	if (!colon || colon == creds)
		return ctl_usage_error(cmd, "--creds wants USER:PASSWORD");
	*ret_user = ad_strndup(creds, (size_t)(colon - creds));
	*ret_password = (char *)colon + 1;
	return 0;
}

int ctl_pull(ctl_ctx *ctx, const char *image, char *user, char *password, char **ret_id)
{
	Agent__V1__PullImageRequest req = AGENT__V1__PULL_IMAGE_REQUEST__INIT;
	req.image = (char *)image;
	req.username = user;
	req.password = password;
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
		*ret_id = ad_steal_ptr(v.image_id);
	free(v.done);
	free(v.total);
	free(v.state);
	free(v.image_id);
	return r;
}

static int run_pull(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"creds", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *creds = NULL;
	int c, r = 0;
	while ((c = ctl_getopt(&ctl_cmd_pull, argc, argv, ":c:h", opts, &r)) != -1)
		if (c == 'c')
			creds = optarg;
	if (r)
		return r < 0 ? 0 : r;
	if (optind != argc - 1)
		return ctl_usage_error(&ctl_cmd_pull,
				       optind < argc ? "one IMAGE only" : "IMAGE is required");
	_cleanup_free_ char *user = NULL, *id = NULL;
	char *password = NULL;
	if (creds && (r = split_creds(&ctl_cmd_pull, creds, &user, &password)))
		return r;
	r = ctl_pull(ctx, argv[optind], user, password, &id);
	if (!r)
		printf("%s\n", id);
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

/* The name of an untagged image: its first repo digest's, as crictl shows it. */
static char *digest_name(const Runtime__V1__Image *im)
{
	if (!im->n_repo_digests)
		return NULL;
	const char *d = im->repo_digests[0], *at = strchr(d, '@');
	return at ? ad_strndup(d, (size_t)(at - d)) : ad_strdup(d);
}

typedef struct image_table {
	bool digests, no_trunc;
} image_table;

static void table_row(const image_table *t, const char *name, const char *tag,
		      const Runtime__V1__Image *im)
{
	char size[32];
	human_size(im->size, size);
	printf("%-40s %-12s ", name, tag);
	if (t->digests) {
		const char *at = im->n_repo_digests ? strchr(im->repo_digests[0], '@') : NULL;
		printf("%-15.*s ", t->no_trunc ? 71 : 13, at ? short_digest(at + 1) : "<none>");
	}
	printf("%-15.*s %s\n", t->no_trunc ? 71 : 13, t->no_trunc ? im->id : short_digest(im->id),
	       size);
}

/* crictl's images --filter: dangling=BOOL, reference=REGEX, before=IMAGE and
 * since=IMAGE (by the order agentd lists images in). */
typedef struct image_filter {
	int dangling; /* -1: either */
	ctl_regex reference;
	char *before, *since;
} image_filter;

static int parse_image_filter(image_filter *f, const char *arg)
{
	const char *eq = strchr(arg, '=');
	const char *v = eq ? eq + 1 : "";
	size_t klen = eq ? (size_t)(eq - arg) : strlen(arg);
	if (klen == 8 && strncmp(arg, "dangling", 8) == 0) {
		if (strcmp(v, "true") == 0)
			f->dangling = 1;
		else if (strcmp(v, "false") == 0)
			f->dangling = 0;
		else
			return ctl_usage_error(&ctl_cmd_images,
					       "--filter dangling= wants true or false, not '%s'", v);
		return 0;
	}
	if (klen == 9 && strncmp(arg, "reference", 9) == 0)
		return ctl_regex_compile(&ctl_cmd_images, "--filter reference", v, &f->reference);
	char **slot = klen == 6 && strncmp(arg, "before", 6) == 0  ? &f->before
		      : klen == 5 && strncmp(arg, "since", 5) == 0 ? &f->since
								   : NULL;
	if (!slot)
		return ctl_usage_error(&ctl_cmd_images,
				       "unknown --filter '%s' (dangling=, reference=, before= or "
				       "since=)",
				       arg);
	if (!*v)
		return ctl_usage_error(&ctl_cmd_images, "--filter %.*s= wants an image", (int)klen,
				       arg);
	free(*slot);
	*slot = ad_strdup(v);
	return 0;
}

/* before= and since= name an image by NAME:TAG, an id prefix or NAME@DIGEST. */
static bool image_is(const Runtime__V1__Image *im, const char *ref)
{
	for (size_t i = 0; i < im->n_repo_tags; i++)
		if (strcmp(im->repo_tags[i], ref) == 0)
			return true;
	for (size_t i = 0; i < im->n_repo_digests; i++)
		if (strcmp(im->repo_digests[i], ref) == 0)
			return true;
	return strncmp(im->id, ref, strlen(ref)) == 0 ||
	       strncmp(short_digest(im->id), ref, strlen(ref)) == 0;
}

static bool reference_matches(const image_filter *f, const Runtime__V1__Image *im)
{
	if (!f->reference.set)
		return true;
	for (size_t i = 0; i < im->n_repo_tags; i++)
		if (ctl_regex_match(&f->reference, im->repo_tags[i]))
			return true;
	_cleanup_free_ char *name = digest_name(im);
	return name && ctl_regex_match(&f->reference, name);
}

/* Applies f to the n images in v (in place); returns how many are left, or
 * -1 having said which before=/since= image is not there. */
static ssize_t filter_images(const image_filter *f, Runtime__V1__Image **v, size_t n)
{
	size_t from = 0, to = n;
	const char *marks[2] = {f->since, f->before};
	for (int k = 0; k < 2; k++) {
		if (!marks[k])
			continue;
		size_t i = 0;
		while (i < n && !image_is(v[i], marks[k]))
			i++;
		if (i == n) {
			ctl_warnx("--filter %s=%s: no such image", k ? "before" : "since", marks[k]);
			return -1;
		}
		if (k == 0 && i + 1 > from)
			from = i + 1;
		if (k == 1 && i < to)
			to = i;
	}
	size_t out = 0;
	for (size_t i = from; i < to; i++) {
		bool dangling = v[i]->n_repo_tags == 0;
		if ((f->dangling < 0 || dangling == (f->dangling == 1)) && reference_matches(f, v[i]))
			v[out++] = v[i];
	}
	return (ssize_t)out;
}

static int run_images(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"quiet", no_argument, NULL, 'q'},
	    {"output", required_argument, NULL, 'o'},
	    {"filter", required_argument, NULL, 'f'},
	    {"digests", no_argument, NULL, 'D'},
	    {"no-trunc", no_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	ctl_format fmt = CTL_TEXT;
	bool quiet = false;
	image_table table = {0};
	image_filter filter = {.dangling = -1};
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_images, argc, argv, ":qo:f:h", opts, &r)) != -1) {
		switch (c) {
		case 'q':
			quiet = true;
			break;
		case 'o':
			r = ctl_parse_format(&ctl_cmd_images, optarg, &fmt);
			break;
		case 'f':
			r = parse_image_filter(&filter, optarg);
			break;
		case 'D':
			table.digests = true;
			break;
		case 'T':
			table.no_trunc = true;
			break;
		}
	}
	if (!r)
		r = ctl_operands_at_most(&ctl_cmd_images, argc, argv, 1);
	Runtime__V1__ListImagesRequest req = RUNTIME__V1__LIST_IMAGES_REQUEST__INIT;
	Runtime__V1__ImageFilter spec_filter = RUNTIME__V1__IMAGE_FILTER__INIT;
	Runtime__V1__ImageSpec spec = RUNTIME__V1__IMAGE_SPEC__INIT;
	if (optind < argc) {
		spec.image = argv[optind];
		spec_filter.image = &spec;
		req.filter = &spec_filter;
	}
	ProtobufCMessage *m = NULL;
	if (!r)
		r = ctl_unary(ctx, PATH_LIST, &req.base,
			      &runtime__v1__list_images_response__descriptor, &m);
	ssize_t n = 0;
	Runtime__V1__Image **images = NULL;
	if (!r) {
		const Runtime__V1__ListImagesResponse *resp = (const void *)m;
		images = ad_malloc0(sizeof(*images) * (resp->n_images + 1));
		memcpy(images, resp->images, sizeof(*images) * resp->n_images);
		n = filter_images(&filter, images, resp->n_images);
		if (n < 0)
			r = EX_DATAERR;
	}
	if (!r && fmt != CTL_TEXT) {
		json_t *a = json_array();
		for (ssize_t i = 0; i < n; i++)
			json_array_append_new(a, image_json(images[i]));
		ctl_print(json_pack("{s:o}", "images", a), fmt);
	} else if (!r && quiet) {
		for (ssize_t i = 0; i < n; i++)
			printf("%s\n", images[i]->id);
	} else if (!r) {
		printf("%-40s %-12s %s%-15s %s\n", "IMAGE", "TAG",
		       table.digests ? "DIGEST          " : "", "IMAGE ID", "SIZE");
		for (ssize_t i = 0; i < n; i++) {
			const Runtime__V1__Image *im = images[i];
			if (!im->n_repo_tags) {
				/* Untagged: named by a repo digest, as crictl does. */
				_cleanup_free_ char *name = digest_name(im);
				table_row(&table, name ? name : "<none>", "<none>", im);
			}
			for (size_t j = 0; j < im->n_repo_tags; j++) {
				_cleanup_free_ char *name = NULL;
				const char *tag;
				split_tag(im->repo_tags[j], &name, &tag);
				table_row(&table, name, tag, im);
			}
		}
	}
	free(images);
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	ctl_regex_free(&filter.reference);
	free(filter.before);
	free(filter.since);
	return r < 0 ? 0 : r;
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

int ctl_image_id(ctl_ctx *ctx, const char *image, char **ret_id)
{
	Runtime__V1__ImageStatusResponse *st = NULL;
	int r = image_status(ctx, image, false, &st);
	if (r)
		return r;
	*ret_id = st->image ? ad_strdup(st->image->id) : NULL;
	protobuf_c_message_free_unpacked(&st->base, NULL);
	return 0;
}

static int run_inspecti(ctl_ctx *ctx, int argc, char **argv)
{
	ctl_format fmt = CTL_JSON;
	int r = ctl_ids_and_format(&ctl_cmd_inspecti, argc, argv, "IMAGE", &fmt);
	if (r)
		return r < 0 ? 0 : r;
	json_t *out = json_array();
	int status = 0;
	for (int i = optind; i < argc; i++) {
		Runtime__V1__ImageStatusResponse *st = NULL;
		r = image_status(ctx, argv[i], true, &st);
		if (r) {
			json_decref(out);
			return r;
		}
		if (!st->image) {
			ctl_warnx("no such image: %s", argv[i]);
			status = 1;
		} else {
			json_array_append_new(out, ctl_status_json(image_json(st->image), st->n_info,
								   (void **)st->info));
		}
		protobuf_c_message_free_unpacked(&st->base, NULL);
	}
	ctl_print_inspected(out, argc - optind == 1, fmt);
	return status;
}

static int run_rmi(ctl_ctx *ctx, int argc, char **argv)
{
	int r = ctl_ids_only(&ctl_cmd_rmi, argc, argv, "IMAGE");
	if (r)
		return r < 0 ? 0 : r;
	int status = 0;
	for (int i = optind; i < argc; i++) {
		/* RemoveImage succeeds for an absent image (the CRI wants it
		 * idempotent); a person typing a name wants to hear about a typo. */
		Runtime__V1__ImageStatusResponse *st = NULL;
		r = image_status(ctx, argv[i], false, &st);
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
		r = ctl_unary(ctx, PATH_REMOVE, &req.base,
			      &runtime__v1__remove_image_response__descriptor, NULL);
		if (r)
			status = r;
		else
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
	int r = 0;
	while (ctl_getopt(cmd, argc, argv, shortopts, opts, &r) != -1)
		*ret_file = optarg;
	return r;
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
	if (!r)
		r = ctl_operands_at_most(&ctl_cmd_load, argc, argv, 0);
	if (r)
		return r < 0 ? 0 : r;
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
	return ctl_unary(ctx, PATH_SAVE, &req.base, &agent__v1__save_image_response__descriptor,
			 NULL);
}

static int run_import(ctl_ctx *ctx, int argc, char **argv)
{
	int r = ctl_ids_only(&ctl_cmd_import, argc, argv, "FILE");
	if (!r)
		r = ctl_operands_at_most(&ctl_cmd_import, argc, argv, 2);
	if (r)
		return r < 0 ? 0 : r;
	_cleanup_free_ char *path = absolute_path(argv[optind]);
	Agent__V1__ImportImageRequest req = AGENT__V1__IMPORT_IMAGE_REQUEST__INIT;
	req.path = path;
	req.reference = optind + 1 < argc ? argv[optind + 1] : (char *)"";
	ctl_long_call(ctx);
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_IMPORT, &req.base, &agent__v1__import_image_response__descriptor,
		      &m);
	if (r)
		return r;
	/* As docker import prints: the new image's id. */
	printf("%s\n", ((const Agent__V1__ImportImageResponse *)m)->image_id);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

/* ---- push, tag ---------------------------------------------------------------- */

static const char *push_state_name(int s)
{
	switch (s) {
	case AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_WAITING:
		return "waiting";
	case AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_UPLOADING:
		return "uploading";
	case AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_PUSHED:
		return "pushed";
	case AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_EXISTS:
		return "already exists";
	case AGENT__V1__BLOB_PUSH_STATE__BLOB_PUSH_STATE_MOUNTED:
		return "mounted";
	default:
		return "failed";
	}
}

typedef struct push_view {
	char *digest, *ref;
	int last_state;
	uint32_t last_index;
} push_view;

/* A line per blob state change on stderr (uploads report each chunk: one
 * line for the state is enough). */
static int on_push_msg(const ProtobufCMessage *msg, void *userdata)
{
	push_view *v = userdata;
	const Agent__V1__PushImageProgress *p = (const Agent__V1__PushImageProgress *)msg;
	if (p->manifest_digest && p->manifest_digest[0]) {
		free(v->digest);
		free(v->ref);
		v->digest = ad_strdup(p->manifest_digest);
		v->ref = ad_strdup(p->reference ? p->reference : "");
		return 0;
	}
	if (p->blob_index == v->last_index && (int)p->state == v->last_state)
		return 0;
	v->last_index = p->blob_index;
	v->last_state = (int)p->state;
	char t[32];
	human_size(p->bytes_total, t);
	fprintf(stderr, "blob %u/%u %.12s: %s (%s)\n", p->blob_index + 1, p->blob_count,
		short_digest(p->digest), push_state_name((int)p->state), t);
	return 0;
}

static int run_push(ctl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"creds", required_argument, NULL, 'c'},
	    {"format", required_argument, NULL, 'f'},
	    {"chunk-size", required_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *creds = NULL, *format = "";
	long chunk = 0;
	int c, r = 0;
	while (!r && (c = ctl_getopt(&ctl_cmd_push, argc, argv, ":c:f:h", opts, &r)) != -1) {
		if (c == 'c')
			creds = optarg;
		else if (c == 'f')
			format = optarg;
		else if (c == 'C')
			r = ctl_parse_count(&ctl_cmd_push, "--chunk-size", optarg, &chunk);
	}
	if (r)
		return r < 0 ? 0 : r;
	if (strcmp(format, "") != 0 && strcmp(format, "oci") != 0 && strcmp(format, "v2s2") != 0)
		return ctl_usage_error(&ctl_cmd_push, "unknown --format '%s' (oci or v2s2)", format);
	if (optind >= argc)
		return ctl_usage_error(&ctl_cmd_push, "NAME is required");
	if ((r = ctl_operands_at_most(&ctl_cmd_push, argc, argv, 2)))
		return r;
	Agent__V1__PushImageRequest req = AGENT__V1__PUSH_IMAGE_REQUEST__INIT;
	req.image = argv[optind];
	req.destination = optind + 1 < argc ? argv[optind + 1] : (char *)"";
	req.format = (char *)format;
	req.chunk_size = (uint64_t)chunk;
	_cleanup_free_ char *user = NULL;
	if (creds && (r = split_creds(&ctl_cmd_push, creds, &user, &req.password)))
		return r;
	req.username = user;
	push_view v = {.last_state = -1};
	r = ctl_stream(ctx, PATH_PUSH, &req.base, &agent__v1__push_image_progress__descriptor,
		       ctx->timeout_given ? ctx->timeout_ms : 0, on_push_msg, &v);
	if (!r && !v.digest) {
		ctl_warnx("%s: the stream ended without a manifest digest", PATH_PUSH + 1);
		r = EX_PROTOCOL;
	}
	/* As docker push ends: the reference and the manifest's digest. */
	if (!r)
		printf("%s@%s\n", v.ref, v.digest);
	free(v.digest);
	free(v.ref);
	return r;
}

static int run_tag(ctl_ctx *ctx, int argc, char **argv)
{
	int r = ctl_ids_only(&ctl_cmd_tag, argc, argv, "SOURCE");
	if (r)
		return r < 0 ? 0 : r;
	if (argc - optind != 2)
		return ctl_usage_error(&ctl_cmd_tag, "SOURCE and NEW are required");
	Agent__V1__TagImageRequest req = AGENT__V1__TAG_IMAGE_REQUEST__INIT;
	req.image = argv[optind];
	req.new_reference = argv[optind + 1];
	ProtobufCMessage *m = NULL;
	r = ctl_unary(ctx, PATH_TAG, &req.base, &agent__v1__tag_image_response__descriptor, &m);
	if (r)
		return r;
	printf("%s\n", ((const Agent__V1__TagImageResponse *)m)->reference);
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
    .synopsis = "[-q] [-o table|json|yaml] [-f FILTER]... [--digests] [--no-trunc] [IMAGE]",
    .summary = "list images; filters: dangling=BOOL, reference=RE, before=IMG, since=IMG",
    .run = run_images,
};

const ctl_command ctl_cmd_inspecti = {
    .name = "inspecti",
    .synopsis = "[-o json|yaml] IMAGE...",
    .summary = "an image's status and config",
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

const ctl_command ctl_cmd_push = {
    .name = "push",
    .synopsis = "[--creds USER:PASS] [--format oci|v2s2] [--chunk-size BYTES] NAME [DEST]",
    .summary = "push an image to a registry (DEST: a registry reference, else NAME); prints "
	       "DEST@DIGEST",
    .run = run_push,
};

const ctl_command ctl_cmd_tag = {
    .name = "tag",
    .synopsis = "SOURCE NEW",
    .summary = "give an image another name",
    .run = run_tag,
};
