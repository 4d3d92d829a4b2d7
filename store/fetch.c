/* fetch_open/fetch_close: a store set up for the work of libadfetch. */
#include "fetch.h"
#include "store_int.h"

#include <errno.h>
#include <unistd.h>

int fetch_open(const store_opts *opts, store **ret_store, ad_error **err)
{
	store *s = NULL;
	if (store_open(opts, &s, err) < 0)
		return -1;
	s->lock_fd = store_lock(s, false, false);
	if (s->lock_fd < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "store %s: lock store.lock", s->root);
		store_close(s);
		return -1;
	}
	if (store_registry_init(s, err) < 0) {
		store_close(s);
		return -1;
	}
	*ret_store = s;
	return 0;
}

void fetch_close(store *s)
{
	if (!s)
		return;
	store_registry_free(s);
	/* The last helper out empties tmp/ (its ingest locks, and whatever
	 * killed ones left): with its own lock released, the cleanup runs only
	 * if no other helper holds one. */
	if (s->lock_fd >= 0) {
		close(s->lock_fd);
		s->lock_fd = -1;
	}
	store_clean_tmp(s);
	store_close(s);
}
