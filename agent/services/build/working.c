/* Working containers (buildah's from/run/copy/config/mount/umount/rm): a
 * rootfs mounted on an image under the id "wc-<name>" (store_rootfs_mount,
 * its upper dir kept until rm) and a record <root>/working/<name>.json with
 * the image and the config being edited. Commit (service.c) takes them by
 * name. Calls on one working container are not serialised: the operator
 * drives one at a time, as with buildah. */
#include "build_int.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/v1/build.pb-c.h"

#define WC_PREFIX "wc-"

static int check_name(const char *name, ad_error **err)
{
	size_t n = name ? strlen(name) : 0;
	bool ok = n > 0 && n <= 64 && ((name[0] >= 'a' && name[0] <= 'z') ||
				       (name[0] >= '0' && name[0] <= '9'));
	for (size_t i = 0; ok && i < n; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		     name[i] == '-' || name[i] == '_' || name[i] == '.';
	if (!ok)
		return ad_fail(err, AD_E_INVALID,
			       "working container name \"%s\": [a-z0-9][a-z0-9_.-]*, at most 64",
			       name ? name : "");
	return 0;
}

static char *record_name(const char *name)
{
	return ad_asprintf("%s.json", name);
}

/* The record of `name`: 1 if there is none. */
static int record_load(build_service *b, const char *name, json_t **ret, ad_error **err)
{
	if (check_name(name, err) < 0)
		return -1;
	_cleanup_close_ int dir = open(b->working_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *file = record_name(name);
	char *data = NULL;
	size_t len = 0;
	_cleanup_error_ ad_error *e = NULL;
	if (dir < 0 || ad_read_file(dir, file, 1 << 20, &data, &len, &e) < 0)
		return 1;
	json_t *j = json_loadb(data, len, 0, NULL);
	free(data);
	if (!json_is_object(j)) {
		json_decref(j);
		return ad_fail(err, AD_E_DATA_LOSS, "working container %s: its record is damaged",
			       name);
	}
	*ret = j;
	return 0;
}

static int record_save(build_service *b, const char *name, json_t *rec, ad_error **err)
{
	_cleanup_close_ int dir = open(b->working_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *file = record_name(name);
	_cleanup_free_ char *text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	if (dir < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open %s", b->working_dir);
	return ad_write_file_atomic(dir, file, text, strlen(text), 0600, err);
}

/* ---- one call at a time on a working container ---- */

static bool is_busy(build_service *b, const char *name)
{
	for (char **n = b->busy; *n; n++)
		if (strcmp(*n, name) == 0)
			return true;
	return false;
}

int working_hold_name(build_service *b, const char *name, int cancel_fd, working_hold *ret,
		      ad_error **err)
{
	*ret = (working_hold){0};
	if (!name || !*name)
		return 0;
	pthread_mutex_lock(&b->busy_lock);
	while (is_busy(b, name)) {
		struct pollfd p = {.fd = cancel_fd, .events = POLLIN};
		if (cancel_fd > 0 && poll(&p, 1, 0) > 0) {
			pthread_mutex_unlock(&b->busy_lock);
			return ad_fail(err, AD_E_CANCELLED, "working container %s: cancelled while "
					    "waiting for another call on it", name);
		}
		struct timespec until = ad_monotonic_after_ms(200);
		pthread_cond_timedwait(&b->busy_changed, &b->busy_lock, &until);
	}
	size_t n = df_strv_len(b->busy);
	b->busy = ad_realloc(b->busy, sizeof(char *) * (n + 2));
	b->busy[n] = ad_strdup(name);
	b->busy[n + 1] = NULL;
	pthread_mutex_unlock(&b->busy_lock);
	*ret = (working_hold){.b = b, .name = ad_strdup(name)};
	return 0;
}

void working_release(working_hold *h)
{
	if (!h->name)
		return;
	build_service *b = h->b;
	pthread_mutex_lock(&b->busy_lock);
	size_t n = df_strv_len(b->busy);
	for (size_t i = 0; i < n; i++)
		if (strcmp(b->busy[i], h->name) == 0) {
			free(b->busy[i]);
			b->busy[i] = b->busy[n - 1];
			b->busy[n - 1] = NULL;
			break;
		}
	pthread_cond_broadcast(&b->busy_changed);
	pthread_mutex_unlock(&b->busy_lock);
	free(h->name);
	h->name = NULL;
}

/* The record, or NOT_FOUND naming it. */
static json_t *record_get(build_service *b, const char *name, ad_error **err)
{
	json_t *rec = NULL;
	int r = record_load(b, name, &rec, err);
	if (r == 1)
		ad_fail(err, AD_E_NOT_FOUND, "no working container named %s", name);
	return r == 0 ? rec : NULL;
}

/* Its rootfs, mounted (again after an umount or a restart). */
static int mount_rootfs(build_service *b, const char *name, json_t *rec, char **ret_path,
			ad_error **err)
{
	_cleanup_free_ char *id = ad_asprintf(WC_PREFIX "%s", name);
	return store_rootfs_mount(b->images, json_string_value(json_object_get(rec, "image")), id,
				  ret_path, err);
}

int working_commit_opts(build_service *b, const char *name, store_commit_opts *o,
			working_commit_strings *keep, ad_error **err)
{
	_cleanup_error_ ad_error *e = NULL;
	if (check_name(name, &e) < 0)
		return 1; /* not a working container's name: a container id */
	json_t *rec = NULL;
	int r = record_load(b, name, &rec, err);
	if (r != 0)
		return r;
	keep->base = ad_strdup(json_string_value(json_object_get(rec, "image")) ?: "");
	keep->rootfs_id = ad_asprintf(WC_PREFIX "%s", name);
	keep->config_json = json_dumps(json_object_get(rec, "config"), JSON_COMPACT | JSON_SORT_KEYS);
	const char *author = json_string_value(json_object_get(rec, "author"));
	keep->author = author ? ad_strdup(author) : NULL;
	json_decref(rec);
	o->base = keep->base;
	o->container_id = keep->rootfs_id;
	o->config_json = keep->config_json;
	o->author = keep->author;
	return 0;
}

void working_commit_strings_clear(working_commit_strings *keep)
{
	free(keep->base);
	free(keep->rootfs_id);
	free(keep->config_json);
	free(keep->author);
	*keep = (working_commit_strings){0};
}

/* ---- From ---- */

static char *default_name(build_service *b, const char *image)
{
	char base[64];
	if (strcmp(image, "scratch") == 0)
		snprintf(base, sizeof(base), "working-container");
	else {
		const char *slash = strrchr(image, '/');
		const char *n = slash ? slash + 1 : image;
		size_t len = strcspn(n, ":@");
		snprintf(base, sizeof(base), "%.*s-working-container", (int)(len > 40 ? 40 : len), n);
		for (char *c = base; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
			      *c == '_' || *c == '.'))
				*c = '-';
	}
	for (int i = 1;; i++) {
		char *name = i == 1 ? ad_strdup(base) : ad_asprintf("%s-%d", base, i);
		json_t *rec = NULL;
		ad_error *e = NULL;
		int r = record_load(b, name, &rec, &e);
		ad_error_free(&e);
		json_decref(rec);
		if (r == 1)
			return name;
		free(name);
	}
}

/* The working container's record, once this call holds its name (NULL with
 * *err when the wait was cancelled or there is no such container). */
static json_t *working_hold_record(build_service *b, const char *name, rpc_call *call,
				   working_hold *hold, ad_error **err)
{
	if (working_hold_name(b, name, rpc_call_cancel_fd(call), hold, err) < 0)
		return NULL;
	return record_get(b, name, err);
}

static rpc_code wc_from(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			void *userdata)
{
	const Agent__V1__WorkingFromRequest *rq = (const Agent__V1__WorkingFromRequest *)req;
	Agent__V1__WorkingFromResponse *rs = (Agent__V1__WorkingFromResponse *)resp;
	build_service *b = userdata;
	_cleanup_error_ ad_error *e = NULL;
	if (!rq->image || !*rq->image) {
		ad_fail(&e, AD_E_INVALID, "an image (or scratch) is required");
		return status_call_error(call, e);
	}
	_cleanup_free_ char *name = rq->name && *rq->name ? ad_strdup(rq->name)
							  : default_name(b, rq->image);
	_cleanup_working_hold_ working_hold hold = {0};
	if (working_hold_name(b, name, rpc_call_cancel_fd(call), &hold, &e) < 0)
		return status_call_error(call, e);
	json_t *old = NULL;
	int r = record_load(b, name, &old, &e);
	json_decref(old);
	if (r < 0)
		return status_call_error(call, e);
	if (r == 0) {
		ad_fail(&e, AD_E_EXISTS, "a working container named %s exists", name);
		return status_call_error(call, e);
	}
	int cancel_fd = rpc_call_cancel_fd(call);
	_cleanup_free_ char *image_id = NULL;
	json_t *config = NULL;
	if (strcmp(rq->image, "scratch") == 0) {
		if (build_scratch_image(b, cancel_fd, &image_id, &e) < 0)
			return status_call_error(call, e);
		config = json_object();
	} else {
		store_image *img = NULL;
		if (store_image_get(b->images, rq->image, &img, &e) < 0) {
			ad_error_free(&e);
			store_pull_opts po = {.cancel_fd = cancel_fd};
			_cleanup_free_ char *id = NULL;
			if (store_pull(b->images, rq->image, &po, &id, &e) < 0 ||
			    store_image_get(b->images, id, &img, &e) < 0)
				return status_call_error(call, e);
		}
		image_id = ad_strdup(img->id);
		json_t *cfg = json_loads(img->config_json ? img->config_json : "{}", 0, NULL);
		json_t *c = json_object_get(cfg, "config");
		config = json_is_object(c) ? json_deep_copy(c) : json_object();
		json_decref(cfg);
		store_image_free(img);
	}
	json_t *rec = json_pack("{s:s, s:o}", "image", image_id, "config", config);
	_cleanup_free_ char *path = NULL;
	_cleanup_free_ char *rootfs_id = ad_asprintf(WC_PREFIX "%s", name);
	if (mount_rootfs(b, name, rec, &path, &e) < 0 || record_save(b, name, rec, &e) < 0) {
		_cleanup_error_ ad_error *e2 = NULL;
		store_rootfs_remove(b->images, rootfs_id, &e2);
		json_decref(rec);
		return status_call_error(call, e);
	}
	json_decref(rec);
	ad_info("working container %s on %s", name, image_id);
	rs->name = rpc_call_strdup(call, name);
	return RPC_OK;
}

/* ---- Run ---- */

typedef struct run_stream {
	rpc_call *call;
	bool gone;
} run_stream;

static void run_output(void *userdata, const char *text, size_t len)
{
	run_stream *rs = userdata;
	build_progress_send(rs->call, &rs->gone, 0, 0, false, text, len);
}

static rpc_code wc_run(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
		       void *userdata)
{
	(void)resp;
	const Agent__V1__WorkingRunRequest *rq = (const Agent__V1__WorkingRunRequest *)req;
	build_service *b = userdata;
	_cleanup_error_ ad_error *e = NULL;
	if (rq->n_args == 0) {
		ad_fail(&e, AD_E_INVALID, "a command is required");
		return status_call_error(call, e);
	}
	_cleanup_working_hold_ working_hold hold = {0};
	if (working_hold_name(b, rq->name, rpc_call_cancel_fd(call), &hold, &e) < 0)
		return status_call_error(call, e);
	build_network net = {0};
	if (build_network_resolve(b, rq->network, &net, &e) < 0)
		return status_call_error(call, e);
	json_t *rec = record_get(b, rq->name, &e);
	if (!rec) {
		build_network_clear(&net);
		return status_call_error(call, e);
	}
	json_t *cfg = json_object_get(rec, "config");
	_cleanup_free_ char *path = NULL, *log = NULL, *tail = NULL;
	_cleanup_free_ const char **args = NULL;
	json_t *env_json = bcfg_run_env(cfg);
	char **env = bcfg_strv(env_json);
	json_decref(env_json);
	const char *wd = json_string_value(json_object_get(cfg, "WorkingDir"));
	uid_t uid = 0;
	gid_t gid = 0;
	int exit_code = 0, r;
	/* agentd's pid in the id, as the builder's: a run an earlier agentd left
	 * (its cgroup, after a crash) never has the same name as a new one. */
	static unsigned long seq;
	char id[128];
	snprintf(id, sizeof(id), WC_PREFIX "%s-run-%d-%lu", rq->name, (int)getpid(),
		 __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	log = ad_asprintf("%s/%s.log", b->work_root, id);
	run_stream st = {.call = call};
	r = mount_rootfs(b, rq->name, rec, &path, &e);
	_cleanup_close_ int root_fd = r == 0 ? open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (r == 0 && root_fd < 0)
		r = ad_fail_errno(&e, AD_E_INTERNAL, "open %s", path);
	if (r == 0)
		r = bfs_resolve_user(root_fd, json_string_value(json_object_get(cfg, "User")), &uid,
				     &gid, &e);
	if (r == 0 && wd && *wd) {
		int fd = bfs_mkdir_in_root(root_fd, wd, uid, gid, &e);
		r = fd < 0 ? -1 : 0;
		if (fd >= 0)
			close(fd);
	}
	if (r == 0) {
		/* protobuf-c's repeated strings have a count, not a NULL at the end. */
		args = ad_malloc0(sizeof(char *) * (rq->n_args + 1));
		memcpy(args, rq->args, sizeof(char *) * rq->n_args);
		brun_opts ro = {.rootfs = path,
				.args = args,
				.env = (const char *const *)env,
				.cwd = wd && *wd ? wd : "/",
				.uid = uid,
				.gid = gid,
				.net = &net,
				.log_path = log,
				.cancel_fd = rpc_call_cancel_fd(call),
				.output = run_output,
				.userdata = &st};
		r = brun(b, id, &ro, &exit_code, &tail, &e);
	}
	unlink(log);
	ad_strv_free(env);
	json_decref(rec);
	build_network_clear(&net);
	if (r == 0 && exit_code != 0)
		r = ad_fail(&e, AD_E_PRECONDITION, "%s: exited with code %d", rq->args[0], exit_code);
	if (r < 0)
		return status_call_error(call, e);
	return RPC_OK;
}

/* ---- Copy ---- */

static rpc_code wc_copy(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			void *userdata)
{
	(void)resp;
	const Agent__V1__WorkingCopyRequest *rq = (const Agent__V1__WorkingCopyRequest *)req;
	build_service *b = userdata;
	_cleanup_error_ ad_error *e = NULL;
	if (!rq->dest || !*rq->dest) {
		ad_fail(&e, AD_E_INVALID, "a destination is required");
		return status_call_error(call, e);
	}
	_cleanup_working_hold_ working_hold hold = {0};
	json_t *rec = working_hold_record(b, rq->name, call, &hold, &e);
	if (!rec)
		return status_call_error(call, e);
	json_t *cfg = json_object_get(rec, "config");
	const char *wd = json_string_value(json_object_get(cfg, "WorkingDir"));
	_cleanup_free_ char *dest = rq->dest[0] == '/' ? ad_strdup(rq->dest)
						       : ad_asprintf("%s/%s", wd && *wd ? wd : "", rq->dest);
	_cleanup_free_ char *path = NULL;
	static unsigned long seq;
	_cleanup_free_ char *tmp = ad_asprintf("%s/copy-%d-%lu", b->work_root, (int)getpid(),
					       __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	int r = mount_rootfs(b, rq->name, rec, &path, &e);
	_cleanup_close_ int root_fd = r == 0 ? open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	_cleanup_close_ int mem = -1, tmp_fd = -1;
	bfs_copy_opts co = {.beneath = true};
	if (r == 0 && root_fd < 0)
		r = ad_fail_errno(&e, AD_E_INTERNAL, "open %s", path);
	if (r == 0 && rq->chown && *rq->chown)
		r = bfs_resolve_user(root_fd, rq->chown, &co.uid, &co.gid, &e);
	if (r == 0 && mkdir(tmp, 0700) < 0)
		r = ad_fail_errno(&e, AD_E_INTERNAL, "mkdir %s", tmp);
	if (r == 0 && rq->archive.len) {
		mem = memfd_create("working-copy", MFD_CLOEXEC);
		if (mem < 0 || write(mem, rq->archive.data, rq->archive.len) != (ssize_t)rq->archive.len ||
		    lseek(mem, 0, SEEK_SET) < 0)
			r = ad_fail_errno(&e, AD_E_RESOURCE, "copy: the archive");
		else
			r = store_unpack_archive(b->images, mem, tmp, rpc_call_cancel_fd(call), &e);
	}
	if (r == 0 && (tmp_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		r = ad_fail_errno(&e, AD_E_INTERNAL, "open %s", tmp);
	if (r == 0) {
		/* One file and a dest not ending in '/': that file's new name. */
		size_t dl = strlen(rq->dest);
		_cleanup_free_ char *only = NULL;
		int count = 0;
		DIR *d = fdopendir(fcntl(tmp_fd, F_DUPFD_CLOEXEC, 3));
		struct dirent *de;
		while (d && (de = ad_readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				count++;
				free(only);
				only = ad_strdup(de->d_name);
			}
		if (d)
			closedir(d);
		struct stat st;
		if (count == 1 && rq->dest[dl - 1] != '/' &&
		    fstatat(tmp_fd, only, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			r = bfs_copy(tmp_fd, only, root_fd, dest, false, &co, &e);
		else
			r = bfs_copy(tmp_fd, "", root_fd, dest, true, &co, &e);
	}
	_cleanup_error_ ad_error *re = NULL;
	ad_remove_tree(tmp, &re);
	json_decref(rec);
	if (r < 0)
		return status_call_error(call, e);
	return RPC_OK;
}

/* ---- Config ---- */

static rpc_code wc_config(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			  void *userdata)
{
	(void)resp;
	const Agent__V1__WorkingConfigRequest *rq = (const Agent__V1__WorkingConfigRequest *)req;
	build_service *b = userdata;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_working_hold_ working_hold hold = {0};
	json_t *rec = working_hold_record(b, rq->name, call, &hold, &e);
	if (!rec)
		return status_call_error(call, e);
	json_t *cfg = json_object_get(rec, "config");
	int r = 0;
	/* An empty one clears it (buildah's --cmd ""): absent, as a Dockerfile's
	 * ENTRYPOINT leaves the base's CMD. */
	if (rq->set_entrypoint && rq->n_entrypoint == 0)
		json_object_del(cfg, "Entrypoint");
	else if (rq->set_entrypoint)
		json_object_set_new(cfg, "Entrypoint", bcfg_json(rq->entrypoint, rq->n_entrypoint));
	if (rq->set_cmd && rq->n_cmd == 0)
		json_object_del(cfg, "Cmd");
	else if (rq->set_cmd)
		json_object_set_new(cfg, "Cmd", bcfg_json(rq->cmd, rq->n_cmd));
	for (size_t i = 0; r == 0 && i < rq->n_env; i++) {
		const char *eq = strchr(rq->env[i], '=');
		if (!eq || eq == rq->env[i])
			r = ad_fail(&e, AD_E_INVALID, "env '%s': KEY=VALUE", rq->env[i]);
		else
			bcfg_env_set(cfg, rq->env[i], (size_t)(eq - rq->env[i]), eq + 1);
	}
	for (size_t i = 0; r == 0 && i < rq->n_ports; i++)
		r = bcfg_expose(cfg, rq->ports[i], &e);
	for (size_t i = 0; r == 0 && i < rq->n_labels; i++) {
		const char *eq = strchr(rq->labels[i], '=');
		if (!eq || eq == rq->labels[i]) {
			r = ad_fail(&e, AD_E_INVALID, "label '%s': KEY=VALUE", rq->labels[i]);
			break;
		}
		_cleanup_free_ char *k = ad_strndup(rq->labels[i], (size_t)(eq - rq->labels[i]));
		bcfg_label(cfg, k, eq + 1);
	}
	if (r == 0 && rq->user && *rq->user)
		json_object_set_new(cfg, "User", json_string(rq->user));
	if (r == 0 && rq->workdir && *rq->workdir) {
		if (rq->workdir[0] != '/')
			r = ad_fail(&e, AD_E_INVALID, "workdir '%s' must be absolute", rq->workdir);
		else
			json_object_set_new(cfg, "WorkingDir", json_string(rq->workdir));
	}
	if (r == 0 && rq->author && *rq->author)
		json_object_set_new(rec, "author", json_string(rq->author));
	if (r == 0)
		r = record_save(b, rq->name, rec, &e);
	json_decref(rec);
	return r < 0 ? status_call_error(call, e) : RPC_OK;
}

/* ---- Mount, Umount, Remove ---- */

static rpc_code wc_mount(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			 void *userdata)
{
	const Agent__V1__WorkingRequest *rq = (const Agent__V1__WorkingRequest *)req;
	Agent__V1__WorkingMountResponse *rs = (Agent__V1__WorkingMountResponse *)resp;
	build_service *b = userdata;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_working_hold_ working_hold hold = {0};
	json_t *rec = working_hold_record(b, rq->name, call, &hold, &e);
	if (!rec)
		return status_call_error(call, e);
	_cleanup_free_ char *path = NULL;
	int r = mount_rootfs(b, rq->name, rec, &path, &e);
	json_decref(rec);
	if (r < 0)
		return status_call_error(call, e);
	rs->path = rpc_call_strdup(call, path);
	return RPC_OK;
}

/* Umount (keep) or Remove (drop the rootfs and the record). */
static rpc_code wc_release(rpc_call *call, const ProtobufCMessage *req, bool remove,
			   build_service *b)
{
	const Agent__V1__WorkingRequest *rq = (const Agent__V1__WorkingRequest *)req;
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_working_hold_ working_hold hold = {0};
	json_t *rec = working_hold_record(b, rq->name, call, &hold, &e);
	if (!rec)
		return status_call_error(call, e);
	json_decref(rec);
	_cleanup_free_ char *id = ad_asprintf(WC_PREFIX "%s", rq->name);
	if (!remove)
		return store_rootfs_unmount(b->images, id, &e) < 0 ? status_call_error(call, e)
								    : RPC_OK;
	_cleanup_free_ char *file = ad_asprintf("%s/%s.json", b->working_dir, rq->name);
	if (store_rootfs_remove(b->images, id, &e) < 0)
		return status_call_error(call, e);
	if (unlink(file) < 0 && errno != ENOENT) {
		ad_fail_errno(&e, AD_E_INTERNAL, "remove %s", file);
		return status_call_error(call, e);
	}
	return RPC_OK;
}

static rpc_code wc_umount(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			  void *userdata)
{
	(void)resp;
	return wc_release(call, req, false, userdata);
}

static rpc_code wc_remove(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			  void *userdata)
{
	(void)resp;
	return wc_release(call, req, true, userdata);
}

void working_register(svc_table *t, build_service *b)
{
	const rpc_method methods[] = {
	    {.path = "/agent.v1.BuildService/WorkingFrom",
	     .request = &agent__v1__working_from_request__descriptor,
	     .response = &agent__v1__working_from_response__descriptor,
	     .handler = wc_from},
	    {.path = "/agent.v1.BuildService/WorkingRun",
	     .request = &agent__v1__working_run_request__descriptor,
	     .response = &agent__v1__build_progress__descriptor,
	     .kind = RPC_SERVER_STREAM,
	     .handler = wc_run},
	    {.path = "/agent.v1.BuildService/WorkingCopy",
	     .request = &agent__v1__working_copy_request__descriptor,
	     .response = &agent__v1__working_response__descriptor,
	     .handler = wc_copy},
	    {.path = "/agent.v1.BuildService/WorkingConfig",
	     .request = &agent__v1__working_config_request__descriptor,
	     .response = &agent__v1__working_response__descriptor,
	     .handler = wc_config},
	    {.path = "/agent.v1.BuildService/WorkingMount",
	     .request = &agent__v1__working_request__descriptor,
	     .response = &agent__v1__working_mount_response__descriptor,
	     .handler = wc_mount},
	    {.path = "/agent.v1.BuildService/WorkingUmount",
	     .request = &agent__v1__working_request__descriptor,
	     .response = &agent__v1__working_response__descriptor,
	     .handler = wc_umount},
	    {.path = "/agent.v1.BuildService/WorkingRemove",
	     .request = &agent__v1__working_request__descriptor,
	     .response = &agent__v1__working_response__descriptor,
	     .handler = wc_remove},
	};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		rpc_method m = methods[i];
		m.userdata = b;
		svc_table_add(t, &m);
	}
}
