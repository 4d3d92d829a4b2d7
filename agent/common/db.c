#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sqlite3.h>
#include <string.h>

/* The schema, one migration per version. Index i takes the DB from
 * user_version i to i + 1. Append only: never edit a released migration. */
static const char *const migrations[] = {
	/* 1: bookkeeping every later table hangs off. */
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
	/* 2: the image store (store/images.c). An image's id is its config digest. */
	"CREATE TABLE images (id TEXT PRIMARY KEY, manifest_digest TEXT NOT NULL,"
	" size INTEGER NOT NULL, created_ns INTEGER NOT NULL);"
	/* kind 0: a tag (name:tag), 1: a repo digest (name@sha256:..) */
	"CREATE TABLE image_names (name TEXT PRIMARY KEY, kind INTEGER NOT NULL,"
	" image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE);"
	"CREATE INDEX image_names_image ON image_names(image_id);"
	"CREATE TABLE image_layers (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
	" idx INTEGER NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,"
	" diff_id TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (image_id, idx));"
	"CREATE INDEX image_layers_digest ON image_layers(digest);"
	"CREATE INDEX image_layers_diff_id ON image_layers(diff_id);"
	/* Other blobs an image keeps: manifest, config, the index it came from. */
	"CREATE TABLE image_blobs (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
	" digest TEXT NOT NULL, PRIMARY KEY (image_id, digest));"
	"CREATE INDEX image_blobs_digest ON image_blobs(digest);"
	/* A container (holder) using an image: no cascade, a pinned image stays. */
	"CREATE TABLE image_pins (holder TEXT PRIMARY KEY,"
	" image_id TEXT NOT NULL REFERENCES images(id));",
	/* 3: pods and containers (agent/manager.c). state: 0 creating (half set
	 * up, cleaned up on start), then per table. config: the CRI request
	 * (packed protobuf) the object was made from. */
	"CREATE TABLE pods (id TEXT PRIMARY KEY, name TEXT NOT NULL, namespace TEXT NOT NULL,"
	" uid TEXT NOT NULL, attempt INTEGER NOT NULL, state INTEGER NOT NULL,"
	" created_ns INTEGER NOT NULL, netns TEXT, infra_id TEXT, cni_result TEXT,"
	" port_mappings TEXT, cni_net TEXT, labels TEXT, annotations TEXT, log_directory TEXT,"
	" hostname TEXT, dir TEXT, runtime_handler TEXT, config BLOB,"
	" UNIQUE (name, namespace, attempt));"
	"CREATE TABLE containers (id TEXT PRIMARY KEY,"
	" pod_id TEXT NOT NULL REFERENCES pods(id), name TEXT NOT NULL,"
	" attempt INTEGER NOT NULL, state INTEGER NOT NULL, image TEXT, image_id TEXT,"
	" image_ref TEXT, created_ns INTEGER NOT NULL, started_ns INTEGER NOT NULL DEFAULT 0,"
	" finished_ns INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0,"
	" reason TEXT, message TEXT, log_path TEXT, labels TEXT, annotations TEXT,"
	" image_config TEXT, config BLOB, UNIQUE (pod_id, name, attempt));"
	"CREATE INDEX containers_pod ON containers(pod_id);",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

#define STMT_CACHE_SIZE 64
#define BUSY_TIMEOUT_MS 5000

struct ad_db {
	sqlite3 *handle;
	char *path;
	struct {
		char *sql;
		sqlite3_stmt *stmt;
	} cache[STMT_CACHE_SIZE];
	int cached;
};

int ad_db_fail(ad_db *db, ad_error **err, const char *context)
{
	int code = sqlite3_extended_errcode(db->handle);
	ad_code c = AD_E_INTERNAL;
	switch (code & 0xff) {
	case SQLITE_CONSTRAINT:
		c = (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
			    ? AD_E_EXISTS
			    : AD_E_PRECONDITION;
		break;
	case SQLITE_FULL:
		c = AD_E_RESOURCE;
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		c = AD_E_DATA_LOSS;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		c = AD_E_UNAVAILABLE;
		break;
	default:
		break;
	}
	return ad_fail(err, c, "state db %s: %s: %s", db->path, context, sqlite3_errmsg(db->handle));
}

static int exec_sql(ad_db *db, const char *sql, ad_error **err)
{
	char *msg = NULL;
	if (sqlite3_exec(db->handle, sql, NULL, NULL, &msg) != SQLITE_OK) {
		int r = ad_db_fail(db, err, msg ? msg : sql);
		sqlite3_free(msg);
		return r;
	}
	return 0;
}

static int quick_check(ad_db *db, ad_error **err)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db->handle, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK)
		goto corrupt;
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		goto corrupt;
	const char *res = (const char *)sqlite3_column_text(st, 0);
	if (!res || strcmp(res, "ok") != 0) {
		ad_fail(err, AD_E_DATA_LOSS,
			"state db %s is corrupt (quick_check: %s); refusing to start. Restore it "
			"from a backup or move it aside; agentd never replaces it by itself",
			db->path, res ? res : "?");
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	return 0;
corrupt:
	ad_fail(err, AD_E_DATA_LOSS,
		"state db %s cannot be read (%s); refusing to start. Restore it from a backup or "
		"move it aside; agentd never replaces it by itself",
		db->path, sqlite3_errmsg(db->handle));
	sqlite3_finalize(st);
	return -1;
}

int ad_db_schema_version(ad_db *db)
{
	sqlite3_stmt *st = NULL;
	int v = -1;
	if (sqlite3_prepare_v2(db->handle, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int migrate(ad_db *db, ad_error **err)
{
	int version = ad_db_schema_version(db);
	if (version < 0)
		return ad_db_fail(db, err, "read user_version");
	if (version > SCHEMA_VERSION)
		return ad_fail(err, AD_E_PRECONDITION,
			       "state db %s has schema version %d, newer than this agentd (%d); "
			       "run a newer agentd",
			       db->path, version, SCHEMA_VERSION);
	for (int v = version; v < SCHEMA_VERSION; v++) {
		if (ad_db_begin(db, err) < 0)
			return -1;
		char pragma[64];
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
		if (exec_sql(db, migrations[v], err) < 0 || exec_sql(db, pragma, err) < 0) {
			ad_db_rollback(db);
			return ad_error_wrap(err, "migrate to schema %d", v + 1);
		}
		if (ad_db_commit(db, err) < 0)
			return -1;
	}
	return 0;
}

/* The state DB is small, and agentd opens it on a few connections: SQLite's
 * per-connection defaults (a 20-page page-cache allocation up front and
 * about 50 KiB of lookaside slots, both touched when set up) would be a
 * good part of agentd's own heap. Pages are allocated as they are read
 * instead, and the lookaside is small. Process-wide, before SQLite is first
 * initialised (sqlite3_config fails harmlessly after that). */
static void db_memory_config(void)
{
	sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
	sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 128, 32);
}

int ad_db_open(const char *path, ad_db **ret_db, ad_error **err)
{
	static pthread_once_t memory_config_once = PTHREAD_ONCE_INIT;
	pthread_once(&memory_config_once, db_memory_config);
	ad_db *db = ad_malloc0(sizeof(*db));
	db->path = ad_strdup(path);
	int rc = sqlite3_open_v2(path, &db->handle,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		if (db->handle)
			ad_db_fail(db, err, "open");
		else
			ad_fail(err, AD_E_INTERNAL, "state db %s: open: out of memory", path);
		ad_db_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db->handle, BUSY_TIMEOUT_MS);
	sqlite3_extended_result_codes(db->handle, 1);
	/* After quick_check (a corrupt DB gets its clear message): a page
	 * cache of at most 128 KiB per connection (default 2 MiB), as the DB is
	 * small, the kernel's page cache holds it anyway, and in WAL mode a
	 * connection drops its cache whenever another one wrote; no mmap. */
	if (quick_check(db, err) < 0 || exec_sql(db, "PRAGMA cache_size = -128", err) < 0 ||
	    exec_sql(db, "PRAGMA mmap_size = 0", err) < 0 || exec_sql(db, "PRAGMA journal_mode = WAL", err) < 0 ||
	    exec_sql(db, "PRAGMA synchronous = NORMAL", err) < 0 ||
	    exec_sql(db, "PRAGMA foreign_keys = ON", err) < 0 || migrate(db, err) < 0) {
		ad_db_close(db);
		return -1;
	}
	/* quick_check read every page into the cache: let go of them. */
	sqlite3_db_release_memory(db->handle);
	*ret_db = db;
	return 0;
}

void ad_db_close(ad_db *db)
{
	if (!db)
		return;
	for (int i = 0; i < db->cached; i++) {
		sqlite3_finalize(db->cache[i].stmt);
		free(db->cache[i].sql);
	}
	sqlite3_close(db->handle);
	free(db->path);
	free(db);
}

sqlite3 *ad_db_handle(ad_db *db) { return db->handle; }

int ad_db_prepare(ad_db *db, const char *sql, sqlite3_stmt **ret_stmt, ad_error **err)
{
	for (int i = 0; i < db->cached; i++) {
		if (strcmp(db->cache[i].sql, sql) == 0) {
			sqlite3_stmt *st = db->cache[i].stmt;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			*ret_stmt = st;
			return 0;
		}
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(db->handle, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
	    SQLITE_OK)
		return ad_db_fail(db, err, "prepare");
	if (db->cached < STMT_CACHE_SIZE) {
		db->cache[db->cached].sql = ad_strdup(sql);
		db->cache[db->cached].stmt = st;
		db->cached++;
	} else {
		/* Full cache: evict the oldest; callers never hold a statement
		 * across another prepare. */
		sqlite3_finalize(db->cache[0].stmt);
		free(db->cache[0].sql);
		memmove(&db->cache[0], &db->cache[1], sizeof(db->cache[0]) * (STMT_CACHE_SIZE - 1));
		db->cache[STMT_CACHE_SIZE - 1].sql = ad_strdup(sql);
		db->cache[STMT_CACHE_SIZE - 1].stmt = st;
	}
	*ret_stmt = st;
	return 0;
}

int ad_db_begin(ad_db *db, ad_error **err) { return exec_sql(db, "BEGIN IMMEDIATE", err); }

int ad_db_commit(ad_db *db, ad_error **err)
{
	if (exec_sql(db, "COMMIT", err) < 0) {
		ad_db_rollback(db);
		return -1;
	}
	return 0;
}

void ad_db_rollback(ad_db *db)
{
	if (!sqlite3_get_autocommit(db->handle))
		sqlite3_exec(db->handle, "ROLLBACK", NULL, NULL, NULL);
}
