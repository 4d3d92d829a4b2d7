/* runtime.v1.ImageService on libadstore: PullImage, ListImages, ImageStatus,
 * RemoveImage, ImageFsInfo. All of them run on the worker pool: they touch
 * the disk, the state DB and (PullImage) the network. */
#include <ctype.h>
#include <string.h>

#include <jansson.h>

#include "cri_int.h"

/* ---- helpers ---------------------------------------------------------------- */

#define CALL_NEW(call, type, init)                                                                 \
	({                                                                                         \
		type *_m = rpc_call_alloc((call), sizeof(type));                                   \
		type _init = init;                                                                 \
		*_m = _init;                                                                       \
		_m;                                                                                \
	})

static rpc_code fail(rpc_call *call, ad_code code, const char *msg)
{
	_cleanup_error_ ad_error *e = NULL;
	ad_fail(&e, code, "%s", msg);
	return status_call_error(call, e);
}

/* The image spec's reference, required non-empty. */
static rpc_code spec_image(rpc_call *call, const Runtime__V1__ImageSpec *spec, const char **ret)
{
	if (!spec || !spec->image || !spec->image[0])
		return fail(call, AD_E_INVALID, "image spec with an image reference is required");
	*ret = spec->image;
	return RPC_OK;
}

static char **strv_copy(rpc_call *call, char **v, size_t *ret_n)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	char **out = rpc_call_alloc(call, sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++)
		out[i] = rpc_call_strdup(call, v[i]);
	*ret_n = n;
	return out;
}

/* The config's User ("uid[:gid]" or "name[:group]"), as the CRI splits it:
 * a numeric user goes to uid, a name to username, nothing to neither. */
static void set_user(rpc_call *call, Runtime__V1__Image *m, const char *config_json)
{
	json_t *root = config_json ? json_loads(config_json, 0, NULL) : NULL;
	const char *user =
	    json_string_value(json_object_get(json_object_get(root, "config"), "User"));
	if (user && *user) {
		size_t len = strcspn(user, ":");
		bool numeric = len > 0;
		for (size_t i = 0; i < len; i++)
			numeric = numeric && isdigit((unsigned char)user[i]);
		_cleanup_free_ char *name = ad_strndup(user, len);
		if (numeric) {
			m->uid =
			    CALL_NEW(call, Runtime__V1__Int64Value, RUNTIME__V1__INT64_VALUE__INIT);
			m->uid->value = strtoll(name, NULL, 10);
		} else if (len) {
			m->username = rpc_call_strdup(call, name);
		}
	}
	json_decref(root);
}

static Runtime__V1__Image *image_msg(rpc_call *call, const store_image *img)
{
	Runtime__V1__Image *m = CALL_NEW(call, Runtime__V1__Image, RUNTIME__V1__IMAGE__INIT);
	m->id = rpc_call_strdup(call, img->id);
	m->repo_tags = strv_copy(call, img->tags, &m->n_repo_tags);
	m->repo_digests = strv_copy(call, img->repo_digests, &m->n_repo_digests);
	m->size = img->size;
	set_user(call, m, img->config_json);
	m->spec = CALL_NEW(call, Runtime__V1__ImageSpec, RUNTIME__V1__IMAGE_SPEC__INIT);
	m->spec->image = rpc_call_strdup(call, img->id);
	m->pinned = false;
	return m;
}

/* The verbose "info" value: what ImageStatus cannot otherwise say. */
static char *image_info_json(const store_image *img)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(img->id));
	json_t *cfg = img->config_json ? json_loads(img->config_json, 0, NULL) : NULL;
	json_object_set_new(o, "imageSpec", cfg ? cfg : json_null());
	json_t *layers = json_array();
	for (char **l = img->layer_ids; l && *l; l++)
		json_array_append_new(layers, json_string(*l));
	json_object_set_new(o, "layers", layers);
	char when[40];
	ad_format_rfc3339nano(img->created_ns, when);
	json_object_set_new(o, "stored", json_string(when));
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

/* ---- handlers ---------------------------------------------------------------- */

rpc_code cri_pull_image(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__PullImageRequest *rq = (const Runtime__V1__PullImageRequest *)req;
	Runtime__V1__PullImageResponse *r = (Runtime__V1__PullImageResponse *)resp;
	store *s = svc->images;
	const char *image = NULL;
	rpc_code code = spec_image(call, rq->image, &image);
	if (code != RPC_OK)
		return code;

	const Runtime__V1__AuthConfig *a = rq->auth;
	store_auth auth;
	bool have_auth = a && svc_pull_auth(&auth, a->username, a->password, a->auth,
					    a->identity_token, a->registry_token);
	/* A cancelled call or a passed deadline kills the pull's agentd-fetch. */
	store_pull_opts po = {.auth = have_auth ? &auth : NULL,
			      .cancel_fd = rpc_call_cancel_fd(call)};
	_cleanup_free_ char *id = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (store_pull(s, image, &po, &id, &e) < 0)
		return status_call_error(call, e);
	ad_info("pulled %s as %s", image, id);
	r->image_ref = rpc_call_strdup(call, id);
	return RPC_OK;
}

rpc_code cri_list_images(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__ListImagesRequest *rq = (const Runtime__V1__ListImagesRequest *)req;
	Runtime__V1__ListImagesResponse *r = (Runtime__V1__ListImagesResponse *)resp;
	store *s = svc->images;
	const char *filter = NULL;
	if (rq->filter && rq->filter->image && rq->filter->image->image &&
	    rq->filter->image->image[0])
		filter = rq->filter->image->image;
	store_image **imgs = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (store_image_list(s, filter, &imgs, &e) < 0)
		return status_call_error(call, e);
	size_t n = 0;
	while (imgs[n])
		n++;
	r->images = rpc_call_alloc(call, sizeof(*r->images) * (n + 1));
	for (size_t i = 0; i < n; i++)
		r->images[i] = image_msg(call, imgs[i]);
	r->n_images = n;
	store_images_free(imgs);
	return RPC_OK;
}

rpc_code cri_image_status(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__ImageStatusRequest *rq = (const Runtime__V1__ImageStatusRequest *)req;
	Runtime__V1__ImageStatusResponse *r = (Runtime__V1__ImageStatusResponse *)resp;
	store *s = svc->images;
	const char *image = NULL;
	rpc_code code = spec_image(call, rq->image, &image);
	if (code != RPC_OK)
		return code;
	store_image *img = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (store_image_get(s, image, &img, &e) < 0) {
		/* The CRI asks for an empty answer, not an error, for an absent image. */
		if (e->code == AD_E_NOT_FOUND)
			return RPC_OK;
		return status_call_error(call, e);
	}
	r->image = image_msg(call, img);
	if (rq->verbose) {
		char *info = image_info_json(img);
		Runtime__V1__ImageStatusResponse__InfoEntry *entry =
		    CALL_NEW(call, Runtime__V1__ImageStatusResponse__InfoEntry,
			     RUNTIME__V1__IMAGE_STATUS_RESPONSE__INFO_ENTRY__INIT);
		entry->key = rpc_call_strdup(call, "info");
		entry->value = rpc_call_strdup(call, info ? info : "{}");
		free(info);
		r->info = rpc_call_alloc(call, sizeof(*r->info));
		r->info[0] = entry;
		r->n_info = 1;
	}
	store_image_free(img);
	return RPC_OK;
}

rpc_code cri_remove_image(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)resp;
	const Runtime__V1__RemoveImageRequest *rq = (const Runtime__V1__RemoveImageRequest *)req;
	store *s = svc->images;
	const char *image = NULL;
	rpc_code code = spec_image(call, rq->image, &image);
	if (code != RPC_OK)
		return code;
	_cleanup_error_ ad_error *e = NULL;
	if (store_image_remove(s, image, &e) < 0)
		return status_call_error(call, e);
	ad_info("removed image %s", image);
	return RPC_OK;
}

/* The writable layers of every container: bytes and inodes. */
static int containers_fs_usage(mgr *m, uint64_t *ret_bytes, uint64_t *ret_inodes,
			       ad_error **err)
{
	mgr_ctr **v = NULL;
	if (mgr_ctr_list(m, NULL, &v, err) < 0)
		return -1;
	for (mgr_ctr **c = v; *c; c++) {
		uint64_t bytes, inodes;
		const char *mountpoint;
		int64_t measured_at;
		_cleanup_error_ ad_error *e = NULL;
		/* One removed meanwhile has no layer any more. */
		if (mgr_ctr_fs_usage(m, (*c)->id, &bytes, &inodes, &mountpoint, &measured_at,
				     &e) == 0) {
			*ret_bytes += bytes;
			*ret_inodes += inodes;
		}
	}
	mgr_ctrs_free(v);
	return 0;
}

rpc_code cri_image_fs_info(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	(void)req;
	Runtime__V1__ImageFsInfoResponse *r = (Runtime__V1__ImageFsInfoResponse *)resp;
	store *s = svc->images;
	store_fs_usage u = {0};
	_cleanup_error_ ad_error *e = NULL;
	if (store_fs_usage_get(s, &u, &e) < 0)
		return status_call_error(call, e);
	Runtime__V1__FilesystemUsage *fu =
	    CALL_NEW(call, Runtime__V1__FilesystemUsage, RUNTIME__V1__FILESYSTEM_USAGE__INIT);
	fu->timestamp = ad_now_ns();
	fu->fs_id = CALL_NEW(call, Runtime__V1__FilesystemIdentifier,
			     RUNTIME__V1__FILESYSTEM_IDENTIFIER__INIT);
	fu->fs_id->mountpoint = rpc_call_strdup(call, u.mountpoint);
	fu->used_bytes = CALL_NEW(call, Runtime__V1__UInt64Value, RUNTIME__V1__UINT64_VALUE__INIT);
	fu->used_bytes->value = u.used_bytes;
	fu->inodes_used = CALL_NEW(call, Runtime__V1__UInt64Value, RUNTIME__V1__UINT64_VALUE__INIT);
	fu->inodes_used->value = u.inodes_used;
	r->image_filesystems = rpc_call_alloc(call, sizeof(*r->image_filesystems));
	r->image_filesystems[0] = fu;
	r->n_image_filesystems = 1;
	/* The writable layers live under the same root: the same mountpoint
	 * tells a kubelet that images and containers share one filesystem. */
	uint64_t bytes = 0, inodes = 0;
	if (svc->pods && containers_fs_usage(svc->pods, &bytes, &inodes, &e) < 0) {
		store_fs_usage_clear(&u);
		return status_call_error(call, e);
	}
	Runtime__V1__FilesystemUsage *cu =
	    CALL_NEW(call, Runtime__V1__FilesystemUsage, RUNTIME__V1__FILESYSTEM_USAGE__INIT);
	cu->timestamp = fu->timestamp;
	cu->fs_id = fu->fs_id;
	cu->used_bytes = CALL_NEW(call, Runtime__V1__UInt64Value, RUNTIME__V1__UINT64_VALUE__INIT);
	cu->used_bytes->value = bytes;
	cu->inodes_used = CALL_NEW(call, Runtime__V1__UInt64Value, RUNTIME__V1__UINT64_VALUE__INIT);
	cu->inodes_used->value = inodes;
	r->container_filesystems = rpc_call_alloc(call, sizeof(*r->container_filesystems));
	r->container_filesystems[0] = cu;
	r->n_container_filesystems = 1;
	store_fs_usage_clear(&u);
	return RPC_OK;
}
