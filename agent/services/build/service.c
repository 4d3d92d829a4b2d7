/* agent.v1.BuildService: Build (a Dockerfile and its context as a tar in the
 * request, progress streamed back) and Commit (a container's changes as a
 * new image). */
#include "build_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/v1/build.pb-c.h"

#define BUILD_PREFIX "build-"

static build_service *require(void *userdata, ad_error **err)
{
	if (!userdata)
		ad_fail(err, AD_E_UNAVAILABLE, "the build service is not available");
	return userdata;
}

/* ---- RUN's network ---- */

#define POD_NETWORK "pod:"

int build_network_resolve(build_service *b, const char *spec, build_network *ret, ad_error **err)
{
	*ret = (build_network){0};
	if (!spec || !*spec || strcmp(spec, "none") == 0)
		return 0;
	if (strcmp(spec, "host") == 0) {
		ret->host = true;
		return 0;
	}
	if (strncmp(spec, POD_NETWORK, strlen(POD_NETWORK)) != 0)
		return ad_fail(err, AD_E_INVALID, "network '%s': none, host or pod:<POD>", spec);
	const char *id = spec + strlen(POD_NETWORK);
	if (!*id)
		return ad_fail(err, AD_E_INVALID, "network '%s': the pod's id is missing", spec);
	mgr_pod *p = NULL;
	if (!b->pods || mgr_pod_get(b->pods, id, &p, err) < 0)
		return b->pods ? ad_error_wrap(err, "network")
			       : ad_fail(err, AD_E_UNAVAILABLE, "network %s: no pod manager", spec);
	int r = 0;
	if (p->state != MGR_POD_READY)
		r = ad_fail(err, AD_E_PRECONDITION, "network %s: the pod is not ready", spec);
	else if (!p->netns)
		r = ad_fail(err, AD_E_PRECONDITION,
			    "network %s: the pod uses the host's network (use --network host)", spec);
	else {
		ret->netns = ad_strdup(p->netns);
		ret->pod_id = ad_strdup(p->id);
	}
	mgr_pod_free(p);
	return r;
}

void build_network_clear(build_network *n)
{
	free(n->netns);
	free(n->pod_id);
	*n = (build_network){0};
}

const char *build_network_mode(const build_network *n)
{
	return n && n->host ? "host" : n && n->netns ? "pod" : "none";
}

/* ---- Build ---- */

typedef struct progress {
	rpc_call *call;
	bool gone;
} progress;

void build_progress_send(rpc_call *call, bool *gone, unsigned step, unsigned steps,
			 bool cached, const char *text, size_t len)
{
	if (*gone)
		return;
	Agent__V1__BuildProgress m = AGENT__V1__BUILD_PROGRESS__INIT;
	_cleanup_free_ char *s = ad_strndup(text, len);
	m.output = s;
	m.step = step;
	m.steps = steps;
	m.cached = cached;
	if (rpc_call_send(call, &m.base) < 0)
		*gone = true;
}

static void on_output(void *userdata, unsigned step, unsigned steps, bool cached, const char *text,
		      size_t len)
{
	progress *p = userdata;
	build_progress_send(p->call, &p->gone, step, steps, cached, text, len);
}

static int write_all(int fd, const uint8_t *p, size_t len, ad_error **err)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ad_fail_errno(err, AD_E_RESOURCE, "build context: write");
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* <work>/context from the request's tar (agentd-fetch unpacks it). */
static int unpack_context(build_service *b, const ProtobufCBinaryData *tar, const char *dir,
			  int cancel_fd, ad_error **err)
{
	if (mkdir(dir, 0700) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", dir);
	if (tar->len == 0)
		return 0;
	_cleanup_close_ int fd = memfd_create("build-context", MFD_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_RESOURCE, "build context: memfd");
	if (write_all(fd, tar->data, tar->len, err) < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	if (store_unpack_archive(b->images, fd, dir, cancel_fd, err) < 0)
		return ad_error_wrap(err, "build context");
	return 0;
}

/* The cache's entries of removed images go at start and before each build. */
static void prune_cache(build_service *b)
{
	size_t pruned = build_cache_prune(b);
	if (pruned)
		ad_info("build cache: %zu entries of removed images removed", pruned);
}

static rpc_code build_call(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			   void *userdata)
{
	(void)resp;
	const Agent__V1__BuildRequest *rq = (const Agent__V1__BuildRequest *)req;
	_cleanup_error_ ad_error *e = NULL;
	build_service *b = require(userdata, &e);
	if (!b)
		return status_call_error(call, e);
	if (rq->dockerfile.len == 0) {
		ad_fail(&e, AD_E_INVALID, "the Dockerfile is empty");
		return status_call_error(call, e);
	}
	build_network net = {0};
	if (build_network_resolve(b, rq->network, &net, &e) < 0)
		return status_call_error(call, e);
	if (rq->tag && *rq->tag) {
		store_ref ref = {0};
		if (store_ref_parse(rq->tag, &ref, &e) < 0)
			return status_call_error(call, e);
		store_ref_clear(&ref);
	}
	char rnd[8];
	int urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (urandom < 0 || read(urandom, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
		memcpy(rnd, &(int64_t){ad_monotonic_ns()}, sizeof(rnd));
	if (urandom >= 0)
		close(urandom);
	_cleanup_free_ char *work = ad_asprintf("%s/%02x%02x%02x%02x%02x%02x%02x%02x", b->work_root,
						(uint8_t)rnd[0], (uint8_t)rnd[1], (uint8_t)rnd[2],
						(uint8_t)rnd[3], (uint8_t)rnd[4], (uint8_t)rnd[5],
						(uint8_t)rnd[6], (uint8_t)rnd[7]);
	_cleanup_free_ char *ctxdir = ad_asprintf("%s/context", work);
	int cancel_fd = rpc_call_cancel_fd(call);
	char **args = ad_malloc0(sizeof(char *) * (rq->n_build_args + 1));
	for (size_t i = 0; i < rq->n_build_args; i++)
		args[i] = ad_asprintf("%s=%s", rq->build_args[i]->key, rq->build_args[i]->value);
	progress p = {.call = call};
	_cleanup_free_ char *id = NULL;
	int r = -1;
	_cleanup_close_ int ctx_fd = -1;
	if (mkdir(work, 0700) < 0)
		ad_fail_errno(&e, AD_E_INTERNAL, "mkdir %s", work);
	else if (unpack_context(b, &rq->context, ctxdir, cancel_fd, &e) == 0 &&
		 (ctx_fd = open(ctxdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		build_opts o = {
		    .dockerfile_name = rq->dockerfile_name && *rq->dockerfile_name
					   ? rq->dockerfile_name
					   : "Dockerfile",
		    .dockerfile = (const char *)rq->dockerfile.data,
		    .dockerfile_len = rq->dockerfile.len,
		    .context_fd = ctx_fd,
		    .work_dir = work,
		    .build_args = args,
		    .tag = rq->tag && *rq->tag ? rq->tag : NULL,
		    .target = rq->target && *rq->target ? rq->target : NULL,
		    .no_cache = rq->no_cache,
		    .source_date_epoch = rq->source_date_epoch > 0 ? rq->source_date_epoch : -1,
		    .net = &net,
		    .cancel_fd = cancel_fd,
		    .output = on_output,
		    .userdata = &p,
		};
		prune_cache(b);
		r = build_run(b, &o, &id, &e);
	}
	_cleanup_error_ ad_error *re = NULL;
	if (ad_remove_tree(work, &re) < 0)
		ad_warn("build: %s", re->message);
	ad_strv_free(args);
	build_network_clear(&net);
	if (r < 0)
		return status_call_error(call, e);
	ad_info("built %s as %s", rq->tag && *rq->tag ? rq->tag : "(untagged)", id);
	Agent__V1__BuildProgress last = AGENT__V1__BUILD_PROGRESS__INIT;
	last.output = (char *)"";
	last.image_id = id;
	if (p.gone || rpc_call_send(call, &last.base) < 0) {
		ad_fail(&e, AD_E_CANCELLED, "build: the client went away");
		return status_call_error(call, e);
	}
	return RPC_OK;
}

/* ---- Commit ---- */

static rpc_code commit_call(rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
			    void *userdata)
{
	const Agent__V1__CommitRequest *rq = (const Agent__V1__CommitRequest *)req;
	Agent__V1__CommitResponse *rs = (Agent__V1__CommitResponse *)resp;
	_cleanup_error_ ad_error *e = NULL;
	build_service *b = require(userdata, &e);
	if (!b)
		return status_call_error(call, e);
	if (!rq->container_id || !*rq->container_id) {
		ad_fail(&e, AD_E_INVALID, "a container is required");
		return status_call_error(call, e);
	}
	/* A working container by its name, else a container of the pods. */
	working_commit_strings wk = {0};
	_cleanup_working_hold_ working_hold hold = {0};
	if (working_hold_name(b, rq->container_id, rpc_call_cancel_fd(call), &hold, &e) < 0)
		return status_call_error(call, e);
	int64_t epoch = rq->source_date_epoch > 0 ? rq->source_date_epoch : -1;
	store_commit_opts wo = {.source_date_epoch = epoch};
	int w = working_commit_opts(b, rq->container_id, &wo, &wk, &e);
	if (w < 0)
		return status_call_error(call, e);
	if (w == 0) {
		_cleanup_free_ char *by = ad_asprintf("agentctl commit %s", rq->container_id);
		wo.created_by = by;
		wo.comment = rq->message && *rq->message ? rq->message : NULL;
		if (rq->author && *rq->author)
			wo.author = rq->author;
		wo.reference = rq->reference && *rq->reference ? rq->reference : NULL;
		char *id = NULL;
		int r = store_image_commit(b->images, &wo, rpc_call_cancel_fd(call), &id, &e);
		working_commit_strings_clear(&wk);
		if (r < 0)
			return status_call_error(call, e);
		ad_info("committed working container %s as %s", rq->container_id, id);
		rs->image_id = rpc_call_strdup(call, id);
		free(id);
		return RPC_OK;
	}
	mgr_ctr *c = NULL;
	if (mgr_ctr_get(b->pods, rq->container_id, &c, &e) < 0)
		return status_call_error(call, e);
	_cleanup_free_ char *created_by = ad_asprintf("agentctl commit %s", c->name ? c->name : c->id);
	store_commit_opts co = {
	    .base = c->image_id,
	    .container_id = c->id,
	    .created_by = created_by,
	    .comment = rq->message && *rq->message ? rq->message : NULL,
	    .author = rq->author && *rq->author ? rq->author : NULL,
	    .reference = rq->reference && *rq->reference ? rq->reference : NULL,
	    .source_date_epoch = epoch,
	};
	char *id = NULL;
	int r = store_image_commit(b->images, &co, rpc_call_cancel_fd(call), &id, &e);
	if (r == 0)
		ad_info("committed container %s as %s", c->id, id);
	mgr_ctr_free(c);
	if (r < 0)
		return status_call_error(call, e);
	rs->image_id = rpc_call_strdup(call, id);
	free(id);
	return RPC_OK;
}

void svc_build_register(svc_table *t, build_service *b)
{
	const rpc_method methods[] = {
	    {
		.path = "/agent.v1.BuildService/Build",
		.request = &agent__v1__build_request__descriptor,
		.response = &agent__v1__build_progress__descriptor,
		.kind = RPC_SERVER_STREAM,
		.handler = build_call,
		.userdata = b,
	    },
	    {
		.path = "/agent.v1.BuildService/Commit",
		.request = &agent__v1__commit_request__descriptor,
		.response = &agent__v1__commit_response__descriptor,
		.handler = commit_call,
		.userdata = b,
	    },
	};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		svc_table_add(t, &methods[i]);
	if (b)
		working_register(t, b);
}

/* ---- the service ---- */

/* What an interrupted build left: its work dirs, its containers' state and
 * their rootfs (named build-*). */
static void remove_leftovers(build_service *b, const char *root)
{
	_cleanup_error_ ad_error *e = NULL;
	if (ad_remove_tree(b->work_root, &e) < 0)
		ad_warn("build: %s", e->message);
	ad_error_free(&e);
	if (b->rt) {
		char **ids = NULL;
		size_t n = 0;
		if (rt_list(b->rt, &ids, &n, &e) == 0) {
			for (size_t i = 0; i < n; i++) {
				rt_container *c = NULL;
				if (rt_open(b->rt, ids[i], &c, NULL) == 0) {
					rt_delete(c, NULL);
					rt_container_free(c);
				}
			}
			rt_list_free(ids, n);
		}
		ad_error_free(&e);
	}
	_cleanup_free_ char *cdir = ad_asprintf("%s/containers", root);
	DIR *d = opendir(cdir);
	struct dirent *de;
	while (d && (de = ad_readdir(d)))
		if (strncmp(de->d_name, BUILD_PREFIX, strlen(BUILD_PREFIX)) == 0) {
			ad_info("build: removing the leftover rootfs %s", de->d_name);
			if (store_rootfs_remove(b->images, de->d_name, &e) < 0)
				ad_warn("build: %s", e->message);
			ad_error_free(&e);
		}
	if (d)
		closedir(d);
}

int build_service_new(const cfg_config *cfg, store *images, mgr *pods, build_service **ret,
		      ad_error **err)
{
	build_service *b = ad_malloc0(sizeof(*b));
	b->images = images;
	b->pods = pods;
	b->work_root = ad_asprintf("%s/builds", cfg->root);
	b->cache_dir = ad_asprintf("%s/build-cache", cfg->root);
	b->working_dir = ad_asprintf("%s/working", cfg->root);
	pthread_mutex_init(&b->busy_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->busy_changed, &ca);
	pthread_condattr_destroy(&ca);
	b->busy = ad_malloc0(sizeof(char *));
	_cleanup_free_ char *rt_state = ad_asprintf("%s/build", cfg->state);
	static const char *const near_self[] = {"../runtime/agentd-shim", "agentd-shim", NULL};
	_cleanup_free_ char *shim = getenv("AGENTD_SHIM") ? NULL : ad_find_helper("agentd-shim", near_self);
	rt_options ro = {.state_root = rt_state, .shim_path = shim};
	ad_error *e = NULL;
	if (rt_runtime_new(&ro, &b->rt, &e) < 0) {
		ad_warn("build: RUN steps unavailable: %s", e->message);
		b->rt_error = ad_strdup(e->message);
		ad_error_free(&e);
	}
	remove_leftovers(b, cfg->root);
	if (ad_mkdir_p(b->work_root, 0700, err) < 0 || ad_mkdir_p(b->cache_dir, 0700, err) < 0 ||
	    ad_mkdir_p(b->working_dir, 0700, err) < 0) {
		build_service_free(b);
		return -1;
	}
	prune_cache(b);
	*ret = b;
	return 0;
}

void build_service_free(build_service *b)
{
	if (!b)
		return;
	if (b->rt)
		rt_runtime_free(b->rt);
	free(b->rt_error);
	free(b->work_root);
	free(b->cache_dir);
	free(b->working_dir);
	ad_strv_free(b->busy);
	pthread_cond_destroy(&b->busy_changed);
	pthread_mutex_destroy(&b->busy_lock);
	free(b);
}
