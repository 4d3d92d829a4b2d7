/* The Dockerfile builder: stages, the image config each instruction edits,
 * and the steps that change files (RUN, COPY, ADD), each run on an overlay
 * of the stage's image (store_rootfs_mount with a build container id) and
 * committed as a layer (store_image_commit). A step's result is cached by
 * its parent image, the config so far, the instruction and its inputs'
 * digests; a hit skips the work. Nothing is left behind on failure: the
 * build container and its rootfs go, and only complete images exist. */
#include "build_int.h"

#include <errno.h>
#include <stdarg.h>
#include <strings.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

typedef struct stage {
	char *name; /* AS name, lower case; NULL: none */
	char *image_id;
	json_t *config; /* the image config's "config" as built so far */
	json_t *args;	/* ARGs declared in the stage: name -> value (or null) */
	char *author;
	bool dirty;	 /* config changed since image_id */
	bool cmd_set;	 /* CMD given in this stage (ENTRYPOINT keeps it) */
} stage;

typedef struct builder {
	build_service *b;
	const build_opts *o;
	dockerfile df;
	json_t *build_args; /* name -> value, from the request */
	json_t *global;	    /* ARGs before the first FROM: name -> value */
	stage *stages;
	size_t n_stages;
	stage *cur;
	const df_instr *in;
	unsigned step, steps;
	unsigned counter;
	ad_error **err;
} builder;

/* ---- messages ---- */

static void say(builder *bd, bool cached, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(builder *bd, bool cached, const char *fmt, ...)
{
	if (!bd->o->output)
		return;
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n >= 0)
		bd->o->output(bd->o->userdata, bd->step, bd->steps, cached, s, (size_t)n);
	free(s);
}

static void relay_output(void *userdata, const char *text, size_t len)
{
	builder *bd = userdata;
	if (bd->o->output)
		bd->o->output(bd->o->userdata, 0, bd->steps, false, text, len);
}

/* "Dockerfile:7: " + message, for errors of the current instruction. */
static int fail_here(builder *bd, ad_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_here(builder *bd, ad_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	ad_fail(bd->err, code, "%s:%u: %s", bd->o->dockerfile_name, bd->in->line, s ? s : "");
	free(s);
	return -1;
}

static int wrap_here(builder *bd)
{
	return ad_error_wrap(bd->err, "%s:%u: %s", bd->o->dockerfile_name, bd->in->line,
			     bd->in->cmd);
}

/* ---- variables ---- */

static const char *stage_lookup(void *userdata, const char *name, size_t len)
{
	builder *bd = userdata;
	const char *v = bcfg_env_get(bd->cur->config, name, len);
	if (v)
		return v;
	_cleanup_free_ char *key = ad_strndup(name, len);
	return json_string_value(json_object_get(bd->cur->args, key));
}

static const char *global_lookup(void *userdata, const char *name, size_t len)
{
	builder *bd = userdata;
	_cleanup_free_ char *key = ad_strndup(name, len);
	return json_string_value(json_object_get(bd->global, key));
}

static int expand(builder *bd, const char *s, char **ret)
{
	if (df_expand_word(s, bd->df.escape, stage_lookup, bd, ret, bd->err) < 0)
		return wrap_here(bd);
	return 0;
}

static int expand_words(builder *bd, const char *s, char ***ret)
{
	if (df_expand_words(s, bd->df.escape, stage_lookup, bd, ret, bd->err) < 0)
		return wrap_here(bd);
	return 0;
}

/* "K=V K2=V2" or the legacy "K V..." of ENV and LABEL: calls set for each. */
static int key_values(builder *bd, bool legacy_ok, void (*set)(builder *, const char *, const char *))
{
	char **raw = NULL;
	if (df_split_raw(bd->in->args, bd->df.escape, &raw, bd->err) < 0)
		return wrap_here(bd);
	int r = 0;
	if (raw[0] && !strchr(raw[0], '=')) {
		if (!legacy_ok || !raw[1]) {
			ad_strv_free(raw);
			return fail_here(bd, AD_E_INVALID, "%s: expected KEY=VALUE", bd->in->cmd);
		}
		/* The legacy form: the first word is the key, the rest one value. */
		const char *rest = bd->in->args + strlen(raw[0]);
		while (*rest == ' ' || *rest == '\t')
			rest++;
		_cleanup_free_ char *key = NULL, *value = NULL;
		if (expand(bd, raw[0], &key) < 0 || expand(bd, rest, &value) < 0)
			r = -1;
		else
			set(bd, key, value);
		ad_strv_free(raw);
		return r;
	}
	for (char **w = raw; r == 0 && *w; w++) {
		char *eq = strchr(*w, '=');
		if (!eq) {
			r = fail_here(bd, AD_E_INVALID, "%s: '%s' is not KEY=VALUE", bd->in->cmd, *w);
			break;
		}
		_cleanup_free_ char *k = ad_strndup(*w, (size_t)(eq - *w));
		_cleanup_free_ char *key = NULL, *value = NULL;
		if (expand(bd, k, &key) < 0 || expand(bd, eq + 1, &value) < 0) {
			r = -1;
			break;
		}
		if (!*key) {
			r = fail_here(bd, AD_E_INVALID, "%s: an empty key", bd->in->cmd);
			break;
		}
		set(bd, key, value);
	}
	ad_strv_free(raw);
	return r;
}

static void set_env(builder *bd, const char *k, const char *v)
{
	bcfg_env_set(bd->cur->config, k, strlen(k), v);
}

static void set_label(builder *bd, const char *k, const char *v)
{
	bcfg_label(bd->cur->config, k, v);
}

/* ---- cache ---- */

static void cache_key(builder *bd, const char *kind, const char *detail, char out[72])
{
	_cleanup_free_ char *cfg = json_dumps(bd->cur->config, JSON_COMPACT | JSON_SORT_KEYS);
	_cleanup_free_ char *args = json_dumps(bd->cur->args, JSON_COMPACT | JSON_SORT_KEYS);
	_cleanup_free_ char *text =
	    ad_asprintf("v1\n%s\n%s\n%s\n%s\n%s\n%s\n%lld", bd->cur->image_id, cfg ? cfg : "",
			args ? args : "", kind, detail, bd->cur->author ? bd->cur->author : "",
			(long long)bd->o->source_date_epoch);
	bfs_sha256(text, strlen(text), out);
	ad_debug("build cache key %s of:\n%s", out, text);
}

/* The image id the entry `name` of the cache dir names, if that image is
 * still there; an entry whose image is gone is removed. */
static char *cache_entry(build_service *b, int dir, const char *name)
{
	char *id = NULL;
	size_t len = 0;
	_cleanup_error_ ad_error *e = NULL;
	if (ad_read_file(dir, name, 128, &id, &len, &e) < 0)
		return NULL;
	id[strcspn(id, "\n")] = '\0';
	store_image *img = NULL;
	if (store_image_get(b->images, id, &img, &e) < 0) {
		if (e->code == AD_E_NOT_FOUND && unlinkat(dir, name, 0) < 0 && errno != ENOENT)
			ad_warn("build cache: remove %s: %s", name, strerror(errno));
		free(id);
		return NULL; /* removed since: build it again */
	}
	store_image_free(img);
	return id;
}

static char *cache_get(builder *bd, const char *key)
{
	if (bd->o->no_cache)
		return NULL;
	_cleanup_close_ int dir = open(bd->b->cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return dir < 0 ? NULL : cache_entry(bd->b, dir, key + 7);
}

size_t build_cache_prune(build_service *b)
{
	_cleanup_close_ int dir = open(b->cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	size_t n = 0, removed = 0;
	char **names = dir < 0 ? NULL : ad_dir_names(dir, ".", &n);
	for (size_t i = 0; i < n; i++) {
		char *id = cache_entry(b, dir, names[i]);
		if (!id && faccessat(dir, names[i], F_OK, AT_SYMLINK_NOFOLLOW) < 0)
			removed++;
		free(id);
	}
	ad_strv_free(names);
	return removed;
}

static void cache_put(builder *bd, const char *key, const char *image_id)
{
	_cleanup_close_ int dir = open(bd->b->cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_error_ ad_error *e = NULL;
	if (dir < 0 ||
	    ad_write_file_atomic(dir, key + 7, image_id, strlen(image_id), 0644, &e) < 0)
		ad_warn("build cache: %s", e ? e->message : strerror(errno));
}

/* ---- steps on a rootfs ---- */

typedef struct workspace {
	char id[64];  /* the build container's id (its rootfs in the store) */
	char *rootfs; /* the merged dir */
	int root_fd;
} workspace;

static int ws_open(builder *bd, const char *image, workspace *ws)
{
	static unsigned long seq;
	snprintf(ws->id, sizeof(ws->id), "build-%d-%lu-%u", (int)getpid(),
		 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED), bd->counter++);
	ws->root_fd = -1;
	if (store_rootfs_mount(bd->b->images, image, ws->id, &ws->rootfs, bd->err) < 0)
		return -1;
	ws->root_fd = open(ws->rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ws->root_fd < 0)
		return ad_fail_errno(bd->err, AD_E_INTERNAL, "open %s", ws->rootfs);
	return 0;
}

static void ws_close(builder *bd, workspace *ws)
{
	(void)bd;
	if (ws->root_fd >= 0)
		close(ws->root_fd);
	ws->root_fd = -1;
	if (ws->id[0]) {
		_cleanup_error_ ad_error *e = NULL;
		if (store_rootfs_remove(bd->b->images, ws->id, &e) < 0)
			ad_warn("build rootfs %s: %s", ws->id, e->message);
	}
	free(ws->rootfs);
	ws->rootfs = NULL;
	ws->id[0] = '\0';
}

/* The workspace's upper dir as the stage's next layer. */
static int ws_commit(builder *bd, workspace *ws, const char *key)
{
	_cleanup_free_ char *cfg = json_dumps(bd->cur->config, JSON_COMPACT | JSON_SORT_KEYS);
	store_commit_opts co = {
	    .base = bd->cur->image_id,
	    .container_id = ws->id,
	    .config_json = cfg,
	    .created_by = bd->in->original,
	    .author = bd->cur->author,
	    .source_date_epoch = bd->o->source_date_epoch,
	};
	char *id = NULL;
	if (store_image_commit(bd->b->images, &co, bd->o->cancel_fd, &id, bd->err) < 0)
		return wrap_here(bd);
	cache_put(bd, key, id);
	free(bd->cur->image_id);
	bd->cur->image_id = id;
	bd->cur->dirty = false;
	return 0;
}

static const char *workdir(builder *bd)
{
	const char *w = json_string_value(json_object_get(bd->cur->config, "WorkingDir"));
	return w && *w ? w : "/";
}

/* A cache hit: the stage moves to the cached image. */
static bool use_cache(builder *bd, const char *key)
{
	char *id = cache_get(bd, key);
	if (!id)
		return false;
	free(bd->cur->image_id);
	bd->cur->image_id = id;
	bd->cur->dirty = false;
	say(bd, true, " ---> Using cache %.19s\n", id);
	return true;
}

/* ---- instructions ---- */

static char **strv_dup(char *const *v)
{
	size_t n = df_strv_len(v);
	char **out = ad_malloc0(sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++)
		out[i] = ad_strdup(v[i]);
	return out;
}

/* The SHELL-form's argv: the stage's shell + the text. */
static json_t *shell_form(builder *bd, const char *text)
{
	json_t *shell = json_object_get(bd->cur->config, "Shell");
	json_t *a = json_is_array(shell) && json_array_size(shell)
			? json_deep_copy(shell)
			: json_pack("[s, s]", "/bin/sh", "-c");
	json_array_append_new(a, json_string(text));
	return a;
}

static int do_run(builder *bd)
{
	json_t *argv = bd->in->exec ? bcfg_json(bd->in->exec, SIZE_MAX) : shell_form(bd, bd->in->args);
	/* The build args declared in the stage reach RUN's environment (not
	 * the image's), below the ENV of the same name. */
	json_t *env = bcfg_run_env(bd->cur->config);
	const char *k;
	json_t *v;
	json_object_foreach(bd->cur->args, k, v)
	{
		if (json_is_string(v) && !bcfg_env_get(bd->cur->config, k, strlen(k)))
			json_array_append_new(env, json_sprintf("%s=%s", k, json_string_value(v)));
	}
	_cleanup_free_ char *argv_text = json_dumps(argv, JSON_COMPACT);
	_cleanup_free_ char *env_text = json_dumps(env, JSON_COMPACT);
	_cleanup_free_ char *detail =
	    ad_asprintf("%s\n%s\n%s", argv_text, env_text, build_network_mode(bd->o->net));
	char key[72];
	cache_key(bd, "RUN", detail, key);
	int r = 0;
	if (!use_cache(bd, key)) {
		char **args = bcfg_strv(argv);
		char **envv = bcfg_strv(env);
		workspace ws = {0};
		uid_t uid = 0;
		gid_t gid = 0;
		_cleanup_free_ char *log = ad_asprintf("%s/run-%u.log", bd->o->work_dir, bd->step);
		int exit_code = 0;
		_cleanup_free_ char *tail = NULL;
		r = ws_open(bd, bd->cur->image_id, &ws);
		_cleanup_close_ int wd = -1;
		if (r == 0)
			r = bfs_resolve_user(ws.root_fd,
					     json_string_value(json_object_get(bd->cur->config, "User")),
					     &uid, &gid, bd->err);
		if (r == 0 && (wd = bfs_mkdir_in_root(ws.root_fd, workdir(bd), uid, gid, bd->err)) < 0)
			r = -1;
		if (r == 0) {
			brun_opts ro = {.rootfs = ws.rootfs,
					.args = (const char *const *)args,
					.env = (const char *const *)envv,
					.cwd = workdir(bd),
					.uid = uid,
					.gid = gid,
					.net = bd->o->net,
					.log_path = log,
					.cancel_fd = bd->o->cancel_fd,
					.output = relay_output,
					.userdata = bd};
			r = brun(bd->b, ws.id, &ro, &exit_code, &tail, bd->err);
		}
		unlink(log);
		if (r == 0 && exit_code != 0) {
			size_t tl = tail ? strlen(tail) : 0;
			while (tl && tail[tl - 1] == '\n')
				tail[--tl] = '\0';
			r = fail_here(bd, AD_E_PRECONDITION,
				      "RUN %s: exited with code %d%s%s", bd->in->args, exit_code,
				      tl ? "; its output ended with:\n" : " (no output)",
				      tl ? tail : "");
		} else if (r < 0) {
			wrap_here(bd);
		}
		if (r == 0) {
			/* The RUN container is gone, its changes not committed yet. */
			ad_fault_point("build.run_ended");
			r = ws_commit(bd, &ws, key);
		}
		ws_close(bd, &ws);
		ad_strv_free(args);
		ad_strv_free(envv);
	}
	json_decref(argv);
	json_decref(env);
	return r;
}

static bool looks_like_archive(int root_fd, const char *path)
{
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_close_ int fd = ad_openat_in_root(root_fd, path, O_RDONLY, 0, &e);
	if (fd < 0)
		return false;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	unsigned char m[512] = {0};
	ssize_t n = pread(fd, m, sizeof(m), 0);
	if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b)
		return true; /* gzip */
	if (n >= 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
		return true; /* zstd */
	return n >= 262 && memcmp(m + 257, "ustar", 5) == 0;
}

static stage *find_stage(builder *bd, const char *name)
{
	char *end = NULL;
	long idx = strtol(name, &end, 10);
	if (*name && end && !*end)
		return idx >= 0 && (size_t)idx < bd->n_stages - 1 ? &bd->stages[idx] : NULL;
	for (size_t i = 0; i + 1 < bd->n_stages; i++)
		if (bd->stages[i].name && strcasecmp(bd->stages[i].name, name) == 0)
			return &bd->stages[i];
	return NULL;
}

static int do_copy(builder *bd, bool add)
{
	const char *what = add ? "ADD" : "COPY";
	char **words = NULL;
	if (bd->in->exec)
		words = strv_dup(bd->in->exec);
	if (!words && expand_words(bd, bd->in->args, &words) < 0)
		return -1;
	int r = 0;
	size_t n = df_strv_len(words);
	if (n < 2) {
		ad_strv_free(words);
		return fail_here(bd, AD_E_INVALID, "%s requires at least two arguments", what);
	}
	_cleanup_free_ char *from = NULL, *chown_spec = NULL, *chmod_spec = NULL;
	if ((df_flag(bd->in, "from") && expand(bd, df_flag(bd->in, "from"), &from) < 0) ||
	    (df_flag(bd->in, "chown") && expand(bd, df_flag(bd->in, "chown"), &chown_spec) < 0) ||
	    (df_flag(bd->in, "chmod") && expand(bd, df_flag(bd->in, "chmod"), &chmod_spec) < 0)) {
		ad_strv_free(words);
		return -1;
	}
	bfs_copy_opts co = {.beneath = true};
	if (chmod_spec) {
		char *end = NULL;
		long m = strtol(chmod_spec, &end, 8);
		if (!*chmod_spec || *end || m < 0 || m > 07777) {
			ad_strv_free(words);
			return fail_here(bd, AD_E_INVALID, "%s --chmod=%s: not an octal mode", what,
					 chmod_spec);
		}
		co.chmod_set = true;
		co.chmod = (mode_t)m;
	}
	/* The sources' root: the context, another stage's image or an image. */
	workspace src_ws = {0};
	src_ws.root_fd = -1;
	int src_root = bd->o->context_fd;
	if (from) {
		stage *st = find_stage(bd, from);
		const char *image = st ? st->image_id : from;
		if (!st) {
			store_image *img = NULL;
			_cleanup_error_ ad_error *e = NULL;
			if (store_image_get(bd->b->images, from, &img, &e) < 0) {
				ad_strv_free(words);
				return fail_here(bd, AD_E_NOT_FOUND,
						 "%s --from=%s: no such stage or image", what, from);
			}
			store_image_free(img);
		}
		if (ws_open(bd, image, &src_ws) < 0) {
			ad_strv_free(words);
			ws_close(bd, &src_ws);
			return wrap_here(bd);
		}
		src_root = src_ws.root_fd;
		co.beneath = false;
	}
	/* Sources expanded (wildcards) and checked, then their digest. */
	char **sources = ad_malloc0(sizeof(char *));
	size_t ns = 0;
	for (size_t i = 0; r == 0 && i + 1 < n; i++) {
		if (add && (strncmp(words[i], "http://", 7) == 0 ||
			    strncmp(words[i], "https://", 8) == 0 ||
			    strncmp(words[i], "git@", 4) == 0)) {
			r = fail_here(bd, AD_E_INVALID, "ADD %s: remote sources are not supported",
				      words[i]);
			break;
		}
		char **m = NULL;
		if (bfs_expand_sources(src_root, words[i], co.beneath, what, &m, bd->err) < 0) {
			r = wrap_here(bd);
			break;
		}
		for (char **p = m; *p; p++) {
			sources = ad_realloc(sources, sizeof(char *) * (ns + 2));
			sources[ns++] = *p;
			sources[ns] = NULL;
		}
		free(m);
	}
	char inputs[72] = "";
	if (r == 0 && bfs_hash_sources(src_root, sources, inputs, bd->err) < 0)
		r = wrap_here(bd);
	const char *dest_word = words[n - 1];
	_cleanup_free_ char *dest = dest_word[0] == '/'
					? ad_strdup(dest_word)
					: ad_asprintf("%s/%s", workdir(bd), dest_word);
	bool dest_is_dir = dest_word[strlen(dest_word) - 1] == '/' || ns > 1 ||
			   (strcmp(dest_word, ".") == 0);
	if (r == 0 && ns > 1 && dest_word[strlen(dest_word) - 1] != '/')
		r = fail_here(bd, AD_E_INVALID,
			      "%s with more than one source: the destination %s must end with /",
			      what, dest_word);
	char key[72];
	if (r == 0) {
		_cleanup_free_ char *detail =
		    ad_asprintf("%s\n%s\n%s\n%s\n%s\n%s", inputs, dest, chown_spec ? chown_spec : "",
				chmod_spec ? chmod_spec : "", from ? from : "",
				from ? (find_stage(bd, from) ? find_stage(bd, from)->image_id : from)
				     : "");
		cache_key(bd, what, detail, key);
	}
	if (r == 0 && !use_cache(bd, key)) {
		workspace ws = {0};
		ws.root_fd = -1;
		r = ws_open(bd, bd->cur->image_id, &ws);
		if (r == 0 && chown_spec)
			r = bfs_resolve_user(ws.root_fd, chown_spec, &co.uid, &co.gid, bd->err);
		for (size_t i = 0; r == 0 && i < ns; i++) {
			if (add && looks_like_archive(src_root, sources[i])) {
				/* ADD of a local archive: unpacked (by agentd-fetch) into
				 * a dir of its own, then merged into dest. */
				_cleanup_free_ char *tmp =
				    ad_asprintf("%s/add-%u-%zu", bd->o->work_dir, bd->step, i);
				_cleanup_error_ ad_error *e = NULL;
				_cleanup_close_ int fd =
				    ad_openat_in_root(src_root, sources[i], O_RDONLY, 0, bd->err);
				if (fd < 0 || mkdir(tmp, 0700) < 0 ||
				    store_unpack_archive(bd->b->images, fd, tmp, bd->o->cancel_fd,
							 bd->err) < 0) {
					if (fd >= 0 && !*bd->err)
						ad_fail_errno(bd->err, AD_E_INTERNAL, "mkdir %s", tmp);
					r = -1;
				}
				_cleanup_close_ int tfd = r == 0 ? open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
				if (r == 0) {
					bfs_copy_opts ao = co;
					ao.keep_owner = !chown_spec;
					ao.beneath = true;
					r = bfs_copy(tfd, "", ws.root_fd, dest, true, &ao, bd->err);
				}
				ad_remove_tree(tmp, &e);
			} else {
				r = bfs_copy(src_root, sources[i], ws.root_fd, dest, dest_is_dir, &co,
					     bd->err);
			}
		}
		if (r < 0)
			wrap_here(bd);
		if (r == 0)
			r = ws_commit(bd, &ws, key);
		ws_close(bd, &ws);
	}
	ws_close(bd, &src_ws);
	ad_strv_free(sources);
	ad_strv_free(words);
	return r;
}

int build_scratch_image(build_service *b, int cancel_fd, char **ret_id, ad_error **err)
{
	/* An image without layers, so that steps have a rootfs to mount; made
	 * at time 0, it is the same image each time. */
	store_commit_opts co = {.created_by = "FROM scratch", .config_json = "{}",
				.source_date_epoch = 0};
	return store_image_commit(b->images, &co, cancel_fd, ret_id, err);
}

static int do_from(builder *bd)
{
	char **words = NULL;
	if (df_expand_words(bd->in->args, bd->df.escape, global_lookup, bd, &words, bd->err) < 0)
		return wrap_here(bd);
	size_t n = df_strv_len(words);
	if (!(n == 1 || (n == 3 && strcasecmp(words[1], "AS") == 0))) {
		ad_strv_free(words);
		return fail_here(bd, AD_E_INVALID, "FROM takes IMAGE [AS NAME]");
	}
	if (df_flag(bd->in, "platform")) {
		ad_strv_free(words);
		return fail_here(bd, AD_E_INVALID, "FROM --platform is not supported");
	}
	bd->stages = ad_realloc(bd->stages, sizeof(stage) * (bd->n_stages + 1));
	stage *st = &bd->stages[bd->n_stages++];
	*st = (stage){.args = json_object()};
	if (n == 3)
		st->name = ad_strdup(words[2]);
	bd->cur = st;
	const char *image = words[0];
	int r = 0;
	stage *prev = NULL;
	if (strcasecmp(image, "scratch") == 0) {
		if (build_scratch_image(bd->b, bd->o->cancel_fd, &st->image_id, bd->err) < 0)
			r = wrap_here(bd);
		st->config = json_object();
	} else {
		for (size_t i = 0; i + 1 < bd->n_stages; i++)
			if (bd->stages[i].name && strcasecmp(bd->stages[i].name, image) == 0)
				prev = &bd->stages[i];
		store_image *img = NULL;
		if (prev) {
			st->image_id = ad_strdup(prev->image_id);
			st->config = json_deep_copy(prev->config);
			st->dirty = prev->dirty;
		} else {
			_cleanup_error_ ad_error *e = NULL;
			if (store_image_get(bd->b->images, image, &img, &e) < 0) {
				say(bd, false, "Pulling %s\n", image);
				store_pull_opts po = {.cancel_fd = bd->o->cancel_fd};
				_cleanup_free_ char *id = NULL;
				if (store_pull(bd->b->images, image, &po, &id, bd->err) < 0 ||
				    store_image_get(bd->b->images, id, &img, bd->err) < 0)
					r = wrap_here(bd);
			}
			if (r == 0) {
				st->image_id = ad_strdup(img->id);
				json_t *cfg = json_loads(img->config_json ? img->config_json : "{}", 0, NULL);
				json_t *c = json_object_get(cfg, "config");
				st->config = json_is_object(c) ? json_deep_copy(c) : json_object();
				json_decref(cfg);
			}
			store_image_free(img);
		}
	}
	ad_strv_free(words);
	return r;
}

static int do_arg(builder *bd)
{
	char **raw = NULL;
	if (df_split_raw(bd->in->args, bd->df.escape, &raw, bd->err) < 0)
		return wrap_here(bd);
	int r = 0;
	json_t *scope = bd->cur ? bd->cur->args : bd->global;
	for (char **w = raw; r == 0 && *w; w++) {
		char *eq = strchr(*w, '=');
		_cleanup_free_ char *name = ad_strndup(*w, eq ? (size_t)(eq - *w) : strlen(*w));
		_cleanup_free_ char *def = NULL;
		if (eq) {
			int er = bd->cur ? expand(bd, eq + 1, &def)
					 : df_expand_word(eq + 1, bd->df.escape, global_lookup, bd,
							  &def, bd->err);
			if (er < 0) {
				r = bd->cur ? -1 : wrap_here(bd);
				break;
			}
		}
		json_t *given = json_object_get(bd->build_args, name);
		if (given)
			json_object_set(scope, name, given);
		else if (def)
			json_object_set_new(scope, name, json_string(def));
		else if (bd->cur && json_is_string(json_object_get(bd->global, name)))
			json_object_set(scope, name, json_object_get(bd->global, name));
		else
			json_object_set_new(scope, name, json_null());
	}
	ad_strv_free(raw);
	return r;
}

static json_t *command_form(builder *bd)
{
	if (bd->in->exec)
		return bcfg_json(bd->in->exec, SIZE_MAX);
	return shell_form(bd, bd->in->args);
}

static int64_t parse_duration(const char *s, bool *ok)
{
	/* Go's time.ParseDuration subset: 1h2m3s, 500ms, 1.5s. */
	int64_t total = 0;
	*ok = *s != '\0';
	while (*ok && *s) {
		char *end = NULL;
		double v = strtod(s, &end);
		if (end == s) {
			*ok = false;
			break;
		}
		int64_t unit;
		if (strncmp(end, "ms", 2) == 0)
			unit = 1000000, end += 2;
		else if (*end == 's')
			unit = 1000000000, end++;
		else if (*end == 'm')
			unit = 60000000000LL, end++;
		else if (*end == 'h')
			unit = 3600000000000LL, end++;
		else {
			*ok = false;
			break;
		}
		total += (int64_t)(v * (double)unit);
		s = end;
	}
	return total;
}

static int do_healthcheck(builder *bd)
{
	json_t *hc = json_object();
	if (strcasecmp(bd->in->args, "NONE") == 0) {
		json_object_set_new(hc, "Test", json_pack("[s]", "NONE"));
	} else if (strncasecmp(bd->in->args, "CMD", 3) == 0 &&
		   (bd->in->args[3] == ' ' || bd->in->args[3] == '\t')) {
		const char *rest = bd->in->args + 4;
		while (*rest == ' ' || *rest == '\t')
			rest++;
		json_t *j = rest[0] == '[' ? json_loads(rest, 0, NULL) : NULL;
		json_t *test;
		if (json_is_array(j)) {
			test = json_pack("[s]", "CMD");
			json_array_extend(test, j);
		} else {
			test = json_pack("[s, s]", "CMD-SHELL", rest);
		}
		json_decref(j);
		json_object_set_new(hc, "Test", test);
		static const char *const durations[][2] = {{"interval", "Interval"},
							   {"timeout", "Timeout"},
							   {"start-period", "StartPeriod"}};
		for (size_t i = 0; i < 3; i++) {
			const char *v = df_flag(bd->in, durations[i][0]);
			if (!v)
				continue;
			bool ok;
			int64_t ns = parse_duration(v, &ok);
			if (!ok) {
				json_decref(hc);
				return fail_here(bd, AD_E_INVALID, "HEALTHCHECK --%s=%s: not a duration",
						 durations[i][0], v);
			}
			json_object_set_new(hc, durations[i][1], json_integer(ns));
		}
		const char *retries = df_flag(bd->in, "retries");
		if (retries)
			json_object_set_new(hc, "Retries", json_integer(atoi(retries)));
	} else {
		json_decref(hc);
		return fail_here(bd, AD_E_INVALID, "HEALTHCHECK takes NONE or CMD ...");
	}
	json_object_set_new(bd->cur->config, "Healthcheck", hc);
	return 0;
}

static int set_map_keys(builder *bd, const char *field, bool ports)
{
	char **words = NULL;
	if (bd->in->exec)
		words = strv_dup(bd->in->exec);
	else if (expand_words(bd, bd->in->args, &words) < 0)
		return -1;
	json_t *m = bcfg_member(bd->cur->config, field, JSON_OBJECT);
	int r = 0;
	for (char **w = words; r == 0 && *w; w++) {
		if (!ports)
			json_object_set_new(m, *w, json_object());
		else if (bcfg_expose(bd->cur->config, *w, bd->err) < 0)
			r = wrap_here(bd);
	}
	ad_strv_free(words);
	return r;
}

static int do_instruction(builder *bd)
{
	const char *c = bd->in->cmd;
	if (strcmp(c, "FROM") == 0)
		return do_from(bd);
	if (strcmp(c, "ARG") == 0)
		return do_arg(bd);
	if (strcmp(c, "RUN") == 0)
		return do_run(bd);
	if (strcmp(c, "COPY") == 0)
		return do_copy(bd, false);
	if (strcmp(c, "ADD") == 0)
		return do_copy(bd, true);
	/* The rest edit the config only. */
	bd->cur->dirty = true;
	json_t *cfg = bd->cur->config;
	if (strcmp(c, "ENV") == 0)
		return key_values(bd, true, set_env);
	if (strcmp(c, "LABEL") == 0)
		return key_values(bd, false, set_label);
	if (strcmp(c, "EXPOSE") == 0)
		return set_map_keys(bd, "ExposedPorts", true);
	if (strcmp(c, "VOLUME") == 0)
		return set_map_keys(bd, "Volumes", false);
	if (strcmp(c, "HEALTHCHECK") == 0)
		return do_healthcheck(bd);
	if (strcmp(c, "CMD") == 0) {
		json_object_set_new(cfg, "Cmd", command_form(bd));
		bd->cur->cmd_set = true;
		return 0;
	}
	if (strcmp(c, "ENTRYPOINT") == 0) {
		json_object_set_new(cfg, "Entrypoint", command_form(bd));
		/* As docker: a new entrypoint drops the base image's CMD. */
		if (!bd->cur->cmd_set)
			json_object_del(cfg, "Cmd");
		return 0;
	}
	if (strcmp(c, "SHELL") == 0) {
		json_object_set_new(cfg, "Shell", bcfg_json(bd->in->exec, SIZE_MAX));
		return 0;
	}
	_cleanup_free_ char *value = NULL;
	if (expand(bd, bd->in->args, &value) < 0)
		return -1;
	if (strcmp(c, "WORKDIR") == 0) {
		_cleanup_free_ char *joined =
		    value[0] == '/' ? ad_strdup(value) : ad_asprintf("%s/%s", workdir(bd), value);
		_cleanup_free_ char *clean = bfs_clean_path(joined);
		json_object_set_new(cfg, "WorkingDir", json_sprintf("/%s", clean ? clean : ""));
	} else if (strcmp(c, "USER") == 0) {
		json_object_set_new(cfg, "User", json_string(value));
	} else if (strcmp(c, "STOPSIGNAL") == 0) {
		json_object_set_new(cfg, "StopSignal", json_string(value));
	} else if (strcmp(c, "MAINTAINER") == 0) {
		free(bd->cur->author);
		bd->cur->author = ad_strdup(value);
	}
	return 0;
}

/* The last instruction of the target stage. */
static size_t target_end(builder *bd, const char *target, ad_error **err)
{
	size_t end = bd->df.n;
	if (!target)
		return end;
	bool seen = false;
	for (size_t i = 0; i < bd->df.n; i++) {
		if (strcmp(bd->df.v[i].cmd, "FROM") != 0)
			continue;
		if (seen)
			return i;
		char **w = NULL;
		ad_error *e = NULL;
		if (df_split_raw(bd->df.v[i].args, bd->df.escape, &w, &e) == 0 &&
		    df_strv_len(w) == 3 && strcasecmp(w[2], target) == 0)
			seen = true;
		ad_error_free(&e);
		ad_strv_free(w);
	}
	if (!seen) {
		ad_fail(err, AD_E_INVALID, "%s: no stage named '%s'", bd->o->dockerfile_name,
			target);
		return 0;
	}
	return end;
}

int build_run(build_service *b, const build_opts *o, char **ret_image_id, ad_error **err)
{
	builder bd = {.b = b, .o = o, .err = err, .global = json_object(),
		      .build_args = json_object()};
	int r = df_parse(o->dockerfile_name, o->dockerfile, o->dockerfile_len, &bd.df, err);
	for (char **a = o->build_args; r == 0 && a && *a; a++) {
		char *eq = strchr(*a, '=');
		_cleanup_free_ char *k = ad_strndup(*a, eq ? (size_t)(eq - *a) : strlen(*a));
		json_object_set_new(bd.build_args, k, json_string(eq ? eq + 1 : ""));
	}
	size_t end = r == 0 ? target_end(&bd, o->target, err) : 0;
	if (r == 0 && end == 0)
		r = -1;
	bd.steps = (unsigned)end;
	int64_t t0 = ad_monotonic_ns();
	for (size_t i = 0; r == 0 && i < end; i++) {
		bd.in = &bd.df.v[i];
		bd.step = (unsigned)i + 1;
		say(&bd, false, "STEP %u/%u: %s\n", bd.step, bd.steps, bd.in->original);
		r = do_instruction(&bd);
	}
	stage *last = bd.cur;
	if (r == 0 && !last)
		r = ad_fail(err, AD_E_INVALID, "%s: no FROM", o->dockerfile_name);
	if (r == 0 && last->dirty) {
		/* Config-only steps since the last layer: one more image, with
		 * an empty-layer history entry; cached like a step. */
		bd.step = 0;
		char key[72];
		cache_key(&bd, "CONFIG", "", key);
		if (!use_cache(&bd, key)) {
			_cleanup_free_ char *cfg = json_dumps(last->config, JSON_COMPACT | JSON_SORT_KEYS);
			store_commit_opts co = {.base = last->image_id,
						.config_json = cfg,
						.created_by = "agentd build: config",
						.author = last->author,
						.source_date_epoch = o->source_date_epoch};
			char *id = NULL;
			r = store_image_commit(b->images, &co, o->cancel_fd, &id, err);
			if (r == 0) {
				cache_put(&bd, key, id);
				free(last->image_id);
				last->image_id = id;
			}
		}
	}
	if (r == 0 && o->tag && *o->tag)
		r = store_image_tag(b->images, last->image_id, o->tag, NULL, err);
	if (r == 0) {
		bd.step = 0;
		say(&bd, false, "COMMIT %s\n--> %.19s\nbuilt in %.3f s\n", o->tag ? o->tag : "",
		    last->image_id, (double)(ad_monotonic_ns() - t0) / 1e9);
		*ret_image_id = ad_strdup(last->image_id);
	}
	for (size_t i = 0; i < bd.n_stages; i++) {
		free(bd.stages[i].name);
		free(bd.stages[i].image_id);
		free(bd.stages[i].author);
		json_decref(bd.stages[i].config);
		json_decref(bd.stages[i].args);
	}
	free(bd.stages);
	json_decref(bd.global);
	json_decref(bd.build_args);
	df_free(&bd.df);
	return r;
}
