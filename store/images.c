/* Image records in the state DB (tables of schema 2 in agent/common/db.c). */
#include "store_int.h"

#include <ctype.h>
#include <string.h>

#include <sqlite3.h>

#define NAME_TAG 0
#define NAME_DIGEST 1

static char **strv_push(char **v, size_t *n, const char *s)
{
	v = ad_realloc(v, sizeof(char *) * (*n + 2));
	v[(*n)++] = ad_strdup(s);
	v[*n] = NULL;
	return v;
}

static int exec_bind(store *s, const char *sql, const char *a, const char *b, int64_t c,
		     ad_error **err)
{
	sqlite3_stmt *st = NULL;
	if (ad_db_prepare(s->db, sql, &st, err) < 0)
		return -1;
	if (a)
		sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, c);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return ad_db_fail(s->db, err, sql);
	return 0;
}

int store_image_record(store *s, const char *name_tag, const char *repo_digest,
		       const char *manifest_digest, const char *config_digest,
		       const store_layer_rec *layers, size_t n_layers,
		       const char *const *extra_blobs, ad_error **err)
{
	uint64_t size = 0;
	for (size_t i = 0; i < n_layers; i++)
		size += layers[i].size;
	pthread_mutex_lock(&s->db_lock);
	if (ad_db_begin(s->db, err) < 0)
		goto fail_unlocked;
	sqlite3_stmt *st = NULL;
	if (ad_db_prepare(s->db,
			  "INSERT INTO images (id, manifest_digest, size, created_ns) "
			  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO NOTHING",
			  &st, err) < 0)
		goto fail;
	sqlite3_bind_text(st, 1, config_digest, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, manifest_digest, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, (int64_t)size);
	sqlite3_bind_int64(st, 4, ad_now_ns());
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		ad_db_fail(s->db, err, "insert image");
		goto fail;
	}
	/* A tag names one image: pulling it again moves it to the new one. */
	const char *upsert = "INSERT INTO image_names (name, image_id, kind) VALUES (?1, ?2, ?3) "
			     "ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id";
	if (name_tag && exec_bind(s, upsert, name_tag, config_digest, NAME_TAG, err) < 0)
		goto fail;
	if (repo_digest && exec_bind(s, upsert, repo_digest, config_digest, NAME_DIGEST, err) < 0)
		goto fail;
	for (size_t i = 0; i < n_layers; i++) {
		if (ad_db_prepare(s->db,
				  "INSERT OR IGNORE INTO image_layers (image_id, idx, digest, "
				  "media_type, diff_id, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
				  &st, err) < 0)
			goto fail;
		sqlite3_bind_text(st, 1, config_digest, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, (int64_t)i);
		sqlite3_bind_text(st, 3, layers[i].digest, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 4, layers[i].media_type, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 5, layers[i].diff_id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 6, (int64_t)layers[i].size);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			ad_db_fail(s->db, err, "insert layer");
			goto fail;
		}
	}
	const char *blob_sql =
	    "INSERT OR IGNORE INTO image_blobs (image_id, digest) VALUES (?2, ?1)";
	if (exec_bind(s, blob_sql, config_digest, config_digest, 0, err) < 0 ||
	    exec_bind(s, blob_sql, manifest_digest, config_digest, 0, err) < 0)
		goto fail;
	for (const char *const *b = extra_blobs; b && *b; b++)
		if (exec_bind(s, blob_sql, *b, config_digest, 0, err) < 0)
			goto fail;
	ad_fault_point("image.record"); /* inside the transaction */
	if (ad_db_commit(s->db, err) < 0)
		goto fail_unlocked;
	pthread_mutex_unlock(&s->db_lock);
	ad_fault_point("image.recorded");
	return 0;
fail:
	ad_db_rollback(s->db);
fail_unlocked:
	pthread_mutex_unlock(&s->db_lock);
	return ad_error_wrap(err, "record image %s", config_digest);
}

static bool all_hex(const char *s)
{
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
			return false;
	return true;
}

/* One text column from a query with one text parameter. */
static int query_one(store *s, const char *sql, const char *param, char **ret, int *ret_count,
		     ad_error **err)
{
	sqlite3_stmt *st = NULL;
	if (ad_db_prepare(s->db, sql, &st, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT);
	int count = 0, rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (count++ == 0)
			*ret = ad_strdup((const char *)sqlite3_column_text(st, 0));
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*ret);
		*ret = NULL;
		return ad_db_fail(s->db, err, "query");
	}
	if (ret_count)
		*ret_count = count;
	return 0;
}

/* Resolves `query` to an image id; *ret_kind says what matched. db_lock held.
 * *ret_id stays NULL when nothing matches. */
static int resolve_locked(store *s, const char *query, char **ret_id, int *ret_kind,
			  char **ret_name, ad_error **err)
{
	*ret_id = NULL;
	*ret_kind = -1;
	if (!query || !*query)
		return ad_fail(err, AD_E_INVALID, "empty image reference");
	if (strncmp(query, "sha256:", 7) == 0 && store_digest_valid(query)) {
		if (query_one(s, "SELECT id FROM images WHERE id = ?1 OR manifest_digest = ?1",
			      query, ret_id, NULL, err) < 0)
			return -1;
		*ret_kind = 2;
		return 0;
	}
	const char *hex = strncmp(query, "sha256:", 7) == 0 ? query + 7 : query;
	size_t hl = strlen(hex);
	if (hl >= 12 && hl <= 64 && all_hex(hex)) {
		_cleanup_free_ char *pattern = ad_asprintf("sha256:%s%%", hex);
		int count = 0;
		_cleanup_free_ char *id = NULL;
		if (query_one(s, "SELECT id FROM images WHERE id LIKE ?1", pattern, &id, &count,
			      err) < 0)
			return -1;
		if (count > 1)
			return ad_fail(err, AD_E_INVALID, "image id prefix %s is ambiguous", query);
		if (count == 1) {
			*ret_id = ad_steal_ptr(id);
			*ret_kind = 2;
			return 0;
		}
		if (hl == 64)
			return 0;
	}
	store_ref ref = {0};
	if (store_ref_parse(query, &ref, err) < 0)
		return -1;
	_cleanup_free_ char *full = store_ref_string(&ref);
	_cleanup_free_ char *name = store_ref_name(&ref);
	int r = 0;
	if (ref.digest) {
		_cleanup_free_ char *rd = ad_asprintf("%s@%s", name, ref.digest);
		r = query_one(s, "SELECT image_id FROM image_names WHERE name = ?1", rd, ret_id,
			      NULL, err);
		*ret_kind = NAME_DIGEST;
		if (r == 0 && !*ret_id)
			r = query_one(s, "SELECT id FROM images WHERE manifest_digest = ?1",
				      ref.digest, ret_id, NULL, err);
		if (ret_name)
			*ret_name = ad_steal_ptr(rd);
	} else {
		r = query_one(s, "SELECT image_id FROM image_names WHERE name = ?1", full, ret_id,
			      NULL, err);
		*ret_kind = NAME_TAG;
		if (ret_name)
			*ret_name = ad_steal_ptr(full);
	}
	store_ref_clear(&ref);
	return r;
}

static int load_locked(store *s, const char *id, store_image **ret, ad_error **err)
{
	_cleanup_error_ ad_error *e = NULL;
	store_image *img = ad_malloc0(sizeof(*img));
	img->id = ad_strdup(id);
	sqlite3_stmt *st = NULL;
	size_t nt = 0, nd = 0, nl = 0;
	img->tags = ad_malloc0(sizeof(char *));
	img->repo_digests = ad_malloc0(sizeof(char *));
	img->layer_ids = ad_malloc0(sizeof(char *));
	if (ad_db_prepare(s->db, "SELECT size, created_ns FROM images WHERE id = ?1", &st, err) < 0)
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW) {
		img->size = (uint64_t)sqlite3_column_int64(st, 0);
		img->created_ns = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	if (ad_db_prepare(s->db,
			  "SELECT name, kind FROM image_names WHERE image_id = ?1 ORDER BY name",
			  &st, err) < 0)
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *n = (const char *)sqlite3_column_text(st, 0);
		if (sqlite3_column_int(st, 1) == NAME_TAG)
			img->tags = strv_push(img->tags, &nt, n);
		else
			img->repo_digests = strv_push(img->repo_digests, &nd, n);
	}
	sqlite3_reset(st);
	if (ad_db_prepare(s->db,
			  "SELECT diff_id FROM image_layers WHERE image_id = ?1 ORDER BY idx", &st,
			  err) < 0)
		goto fail;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW)
		img->layer_ids =
		    strv_push(img->layer_ids, &nl, (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	size_t len = 0;
	/* The config blob is small; a missing one leaves config_json NULL. */
	store_blob_read(s, id, 16 << 20, &img->config_json, &len, &e);
	*ret = img;
	return 0;
fail:
	store_image_free(img);
	return -1;
}

void store_image_free(store_image *img)
{
	if (!img)
		return;
	free(img->id);
	store_strv_free(img->tags);
	store_strv_free(img->repo_digests);
	store_strv_free(img->layer_ids);
	free(img->config_json);
	free(img);
}

void store_images_free(store_image **imgs)
{
	if (!imgs)
		return;
	for (store_image **p = imgs; *p; p++)
		store_image_free(*p);
	free(imgs);
}

int store_image_get(store *s, const char *query, store_image **ret_image, ad_error **err)
{
	_cleanup_free_ char *id = NULL;
	int kind;
	pthread_mutex_lock(&s->db_lock);
	int r = resolve_locked(s, query, &id, &kind, NULL, err);
	if (r == 0 && !id)
		r = ad_fail(err, AD_E_NOT_FOUND, "image \"%s\" not found", query);
	if (r == 0)
		r = load_locked(s, id, ret_image, err);
	pthread_mutex_unlock(&s->db_lock);
	return r;
}

int store_image_list(store *s, const char *filter, store_image ***ret_images, ad_error **err)
{
	size_t n = 0;
	store_image **v = ad_malloc0(sizeof(*v));
	if (filter && *filter) {
		store_image *img = NULL;
		_cleanup_error_ ad_error *e = NULL;
		if (store_image_get(s, filter, &img, &e) == 0) {
			v = ad_realloc(v, sizeof(*v) * 2);
			v[0] = img;
			v[1] = NULL;
		} else if (e->code != AD_E_NOT_FOUND) {
			free(v);
			*err = ad_steal_ptr(e);
			return -1;
		}
		*ret_images = v;
		return 0;
	}
	pthread_mutex_lock(&s->db_lock);
	sqlite3_stmt *st = NULL;
	char **ids = NULL;
	size_t nids = 0;
	if (ad_db_prepare(s->db, "SELECT id FROM images ORDER BY created_ns, id", &st, err) < 0) {
		pthread_mutex_unlock(&s->db_lock);
		free(v);
		return -1;
	}
	while (sqlite3_step(st) == SQLITE_ROW)
		ids = strv_push(ids, &nids, (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	for (size_t i = 0; i < nids; i++) {
		store_image *img = NULL;
		if (load_locked(s, ids[i], &img, err) < 0) {
			pthread_mutex_unlock(&s->db_lock);
			store_strv_free(ids);
			store_images_free(v);
			return -1;
		}
		v = ad_realloc(v, sizeof(*v) * (n + 2));
		v[n++] = img;
		v[n] = NULL;
	}
	pthread_mutex_unlock(&s->db_lock);
	store_strv_free(ids);
	*ret_images = v;
	return 0;
}

void store_gc_try(store *s);

typedef struct image_removal {
	store *s;
	const char *query;
} image_removal;

static int image_remove_once(void *arg, ad_error **err);

int store_image_remove(store *s, const char *query, ad_error **err)
{
	image_removal rm = {s, query};
	return ad_db_removal(s->db, image_remove_once, &rm, err);
}

static int image_remove_once(void *arg, ad_error **err)
{
	const image_removal *rm = arg;
	store *s = rm->s;
	const char *query = rm->query;
	_cleanup_free_ char *id = NULL, *name = NULL, *holder = NULL;
	int kind;
	pthread_mutex_lock(&s->db_lock);
	if (resolve_locked(s, query, &id, &kind, &name, err) < 0)
		goto fail;
	if (!id) {
		pthread_mutex_unlock(&s->db_lock);
		return 0;
	}
	int ntags = 0;
	if (query_one(s, "SELECT name FROM image_names WHERE image_id = ?1 AND kind = 0", id,
		      &holder, &ntags, err) < 0)
		goto fail;
	free(holder);
	holder = NULL;
	if (ad_db_begin(s->db, err) < 0)
		goto fail;
	if (kind == NAME_TAG && ntags > 1) {
		/* Other tags still name the image: only this one goes. */
		if (exec_bind(s, "DELETE FROM image_names WHERE name = ?1", name, NULL, 0, err) < 0)
			goto rollback;
	} else {
		if (query_one(s, "SELECT holder FROM image_pins WHERE image_id = ?1", id, &holder,
			      NULL, err) < 0)
			goto rollback;
		if (holder) {
			ad_fail(err, AD_E_PRECONDITION, "image %s is in use by container %s", query,
				holder);
			goto rollback;
		}
		if (exec_bind(s, "DELETE FROM images WHERE id = ?1", id, NULL, 0, err) < 0)
			goto rollback;
	}
	if (ad_db_commit(s->db, err) < 0)
		goto fail;
	pthread_mutex_unlock(&s->db_lock);
	store_gc_try(s);
	return 0;
rollback:
	ad_db_rollback(s->db);
fail:
	pthread_mutex_unlock(&s->db_lock);
	return ad_error_wrap(err, "remove image %s", query);
}

int store_image_layers(store *s, const char *query, char **ret_image_id, char ***ret_layer_ids,
		       ad_error **err)
{
	store_image *img = NULL;
	if (store_image_get(s, query, &img, err) < 0)
		return -1;
	*ret_image_id = ad_steal_ptr(img->id);
	*ret_layer_ids = ad_steal_ptr(img->layer_ids);
	store_image_free(img);
	return 0;
}

int store_pin(store *s, const char *holder, const char *image_id, ad_error **err)
{
	pthread_mutex_lock(&s->db_lock);
	int r = exec_bind(s,
			  "INSERT INTO image_pins (holder, image_id) VALUES (?1, ?2) "
			  "ON CONFLICT(holder) DO UPDATE SET image_id = excluded.image_id",
			  holder, image_id, 0, err);
	pthread_mutex_unlock(&s->db_lock);
	return r;
}

int store_unpin(store *s, const char *holder, ad_error **err)
{
	pthread_mutex_lock(&s->db_lock);
	int r = exec_bind(s, "DELETE FROM image_pins WHERE holder = ?1", holder, NULL, 0, err);
	pthread_mutex_unlock(&s->db_lock);
	return r;
}

int store_image_manifest_digest(store *s, const char *image_id, char **ret, ad_error **err)
{
	*ret = NULL;
	pthread_mutex_lock(&s->db_lock);
	int r = query_one(s, "SELECT manifest_digest FROM images WHERE id = ?1", image_id, ret,
			  NULL, err);
	pthread_mutex_unlock(&s->db_lock);
	if (r == 0 && !*ret)
		r = ad_fail(err, AD_E_NOT_FOUND, "image %s not found", image_id);
	return r;
}

int store_image_name_add(store *s, const char *image_id, const char *name, bool digest,
			 ad_error **err)
{
	pthread_mutex_lock(&s->db_lock);
	int r = exec_bind(s,
			  "INSERT INTO image_names (name, image_id, kind) VALUES (?1, ?2, ?3) "
			  "ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id, "
			  "kind = excluded.kind",
			  name, image_id, digest ? NAME_DIGEST : NAME_TAG, err);
	pthread_mutex_unlock(&s->db_lock);
	return r;
}

int store_image_tag(store *s, const char *image, const char *new_ref, char **ret_ref,
		    ad_error **err)
{
	store_ref ref = {0};
	if (store_ref_parse(new_ref, &ref, err) < 0)
		return -1;
	if (ref.digest) {
		store_ref_clear(&ref);
		return ad_fail(err, AD_E_INVALID, "tag %s: a tag cannot have a digest", new_ref);
	}
	_cleanup_free_ char *name = store_ref_string(&ref);
	store_ref_clear(&ref);
	store_image *img = NULL;
	if (store_image_get(s, image, &img, err) < 0)
		return -1;
	int r = store_image_name_add(s, img->id, name, false, err);
	store_image_free(img);
	if (r < 0)
		return ad_error_wrap(err, "tag %s as %s", image, name);
	if (ret_ref)
		*ret_ref = ad_steal_ptr(name);
	return 0;
}
