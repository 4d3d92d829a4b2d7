/* fetch.h — the one public header of libadfetch: the image store's network
 * and archive work (registry pulls, layer unpacking, docker/oci-archive load
 * and save, rootfs import), done in the calling process. Only agentd-fetch
 * (store/fetch_main.c) and tests call these: agentd goes through store.h's
 * store_pull and store_image_load/save/import, which run agentd-fetch, so
 * that agentd links neither libcurl nor libarchive. Same contracts as those. */
#ifndef AGENTD_FETCH_H
#define AGENTD_FETCH_H

#include "store.h"

/* store_open plus the registry client (curl, the connection and token
 * caches); holds store.lock shared until fetch_close, so that no other
 * process's GC or tmp/ cleanup runs meanwhile. */
int fetch_open(const store_opts *opts, store **ret_store, ad_error **err);
/* Releases the lock and empties tmp/ if no other agentd-fetch runs. */
void fetch_close(store *s);

int fetch_pull(store *s, const char *reference, const store_pull_opts *opts, char **ret_image_id,
	       ad_error **err);
int fetch_push(store *s, const char *image, const char *dest, const store_push_opts *opts,
	       store_cancel_fn cancel, void *cancel_userdata, char **ret_digest, char **ret_ref,
	       ad_error **err);
int fetch_image_load(store *s, int fd, char ***ret_image_ids, ad_error **err);
int fetch_image_save(store *s, const char *const *queries, int fd, ad_error **err);
int fetch_image_import(store *s, int fd, const char *reference, char **ret_image_id,
		       ad_error **err);

int fetch_image_commit(store *s, const store_commit_opts *opts, char **ret_image_id,
		       ad_error **err);
int fetch_unpack_archive(store *s, int fd, const char *dest_dir, ad_error **err);

#endif
