#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

/* The DB's own bookkeeping is numbered by PRAGMA user_version. Up to
 * LEGACY_MAX it was one list of every owner's tables (1: meta, 2: the
 * image store's, 3: pods and containers); since LAYOUT_OWNERS each owner's
 * version is a row of schema_versions, and the legacy number is kept in
 * meta for owners whose first migration such a DB already holds. */
#define LEGACY_MAX 3
#define LAYOUT_OWNERS 100
#define META_TABLE "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
#define OWNERS_TABLE                                                                               \
	"CREATE TABLE schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL);"

#define STMT_CACHE_SIZE 64
#define BUSY_TIMEOUT_MS 5000
/* Room for a few removals' rows and the WAL frames they write. */
#define RESERVE_BYTES (1 << 20)
#define RESERVE_SUFFIX "-reserve"

/* Released by this process and not made again yet (every connection to the
 * DB shares the one reserve file). */
static atomic_bool reserve_released;

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
	int sys_errno = 0;
	switch (code & 0xff) {
	case SQLITE_CONSTRAINT:
		c = (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
			    ? AD_E_EXISTS
			    : AD_E_PRECONDITION;
		break;
	case SQLITE_FULL:
		c = AD_E_RESOURCE;
		break;
	case SQLITE_IOERR:
		/* SQLite says FULL only for a failed write; a full disk met
		 * while growing the WAL index or syncing is an I/O error, told
		 * apart by its errno (which ad_error_make turns into
		 * AD_E_RESOURCE). */
		sys_errno = sqlite3_system_errno(db->handle);
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
	const char *what = sqlite3_errmsg(db->handle);
	if (strcmp(context, what) == 0) /* exec_sql's message is SQLite's own */
		return ad_error_make(err, c, sys_errno, "state db %s: %s", db->path, what);
	return ad_error_make(err, c, sys_errno, "state db %s: %s: %s", db->path, context, what);
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

static int user_version(ad_db *db)
{
	sqlite3_stmt *st = NULL;
	int v = -1;
	if (sqlite3_prepare_v2(db->handle, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* One integer from a query with an optional text parameter; `dflt` when
 * there is no row. */
static int query_int(ad_db *db, const char *sql, const char *param, int dflt, int *ret,
		     ad_error **err)
{
	sqlite3_stmt *st;
	if (ad_db_prepare(db, sql, &st, err) < 0)
		return -1;
	if (param)
		sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_type(st, 0) == SQLITE_NULL ? dflt : sqlite3_column_int(st, 0);
	else if (rc == SQLITE_DONE)
		*ret = dflt;
	else
		return ad_db_fail(db, err, sql);
	sqlite3_reset(st);
	return 0;
}

/* The bookkeeping itself: a new DB gets it, a legacy one is converted. */
static int migrate_layout(ad_db *db, ad_error **err)
{
	if (ad_db_begin(db, err) < 0)
		return -1;
	int version = user_version(db); /* again, now that we hold the write lock */
	int r = 0;
	if (version < 0) {
		r = ad_db_fail(db, err, "read user_version");
	} else if (version == 0) {
		r = exec_sql(db, META_TABLE OWNERS_TABLE, err);
	} else if (version <= LEGACY_MAX) {
		char *sql = ad_asprintf(OWNERS_TABLE "INSERT INTO meta (key, value) VALUES "
						     "('legacy_user_version', '%d');",
					version);
		r = exec_sql(db, sql, err);
		free(sql);
	} else if (version != LAYOUT_OWNERS) {
		r = ad_fail(err, AD_E_PRECONDITION,
			    "state db %s has layout version %d, newer than this agentd (%d); "
			    "run a newer agentd",
			    db->path, version, LAYOUT_OWNERS);
	}
	if (r == 0 && version != LAYOUT_OWNERS) {
		char pragma[64];
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", LAYOUT_OWNERS);
		r = exec_sql(db, pragma, err);
	}
	if (r < 0) {
		ad_db_rollback(db);
		return -1;
	}
	return ad_db_commit(db, err);
}

static int migrate_owner(ad_db *db, const ad_db_schema *schema, ad_error **err)
{
	if (ad_db_begin(db, err) < 0)
		return -1;
	int version = -1, legacy = 0;
	if (query_int(db, "SELECT version FROM schema_versions WHERE owner = ?", schema->owner,
		      -1, &version, err) < 0 ||
	    query_int(db, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = "
			  "'legacy_user_version'",
		      NULL, 0, &legacy, err) < 0)
		goto fail;
	if (version < 0)
		version = schema->legacy_user_version > 0 && legacy >= schema->legacy_user_version;
	if ((size_t)version > schema->n_migrations) {
		ad_fail(err, AD_E_PRECONDITION,
			"state db %s has %s schema version %d, newer than this agentd (%zu); run "
			"a newer agentd",
			db->path, schema->owner, version, schema->n_migrations);
		goto fail;
	}
	for (size_t v = (size_t)version; v < schema->n_migrations; v++) {
		if (exec_sql(db, schema->migrations[v], err) < 0) {
			ad_error_wrap(err, "migrate %s to schema %zu", schema->owner, v + 1);
			goto fail;
		}
	}
	sqlite3_stmt *st;
	if (ad_db_prepare(db,
			  "INSERT INTO schema_versions (owner, version) VALUES (?, ?) "
			  "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
			  &st, err) < 0)
		goto fail;
	sqlite3_bind_text(st, 1, schema->owner, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)schema->n_migrations);
	if (sqlite3_step(st) != SQLITE_DONE) {
		ad_db_fail(db, err, "record schema version");
		goto fail;
	}
	sqlite3_reset(st);
	return ad_db_commit(db, err);
fail:
	ad_db_rollback(db);
	return -1;
}

static int migrate(ad_db *db, const ad_db_schema *schema, ad_error **err)
{
	if (user_version(db) != LAYOUT_OWNERS && migrate_layout(db, err) < 0)
		return -1;
	return schema ? migrate_owner(db, schema, err) : 0;
}

int ad_db_schema_version(ad_db *db)
{
	int sum = 0;
	if (query_int(db, "SELECT SUM(version) FROM schema_versions", NULL, 0, &sum, NULL) < 0)
		return -1;
	return 1 + sum; /* the bookkeeping's own, as the legacy list counted meta */
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

/* Best effort: without room it is made at a later successful ad_db_removal. */
static void reserve_make(const char *db_path)
{
	_cleanup_free_ char *path = ad_asprintf("%s" RESERVE_SUFFIX, db_path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return; /* there already (another connection made it), or no room */
	int r = posix_fallocate(fd, 0, RESERVE_BYTES);
	close(fd);
	if (r != 0) {
		unlink(path);
		atomic_store(&reserve_released, true);
	}
}

int ad_db_open(const char *path, const ad_db_schema *schema, ad_db **ret_db, ad_error **err)
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
	    exec_sql(db, "PRAGMA foreign_keys = ON", err) < 0 || migrate(db, schema, err) < 0) {
		ad_db_close(db);
		return -1;
	}
	/* quick_check read every page into the cache: let go of them. */
	sqlite3_db_release_memory(db->handle);
	reserve_make(db->path);
	*ret_db = db;
	return 0;
}

int ad_db_removal(ad_db *db, int (*remove)(void *arg, ad_error **err), void *arg,
		  ad_error **err)
{
	int r = remove(arg, err);
	if (r < 0 && *err && (*err)->code == AD_E_RESOURCE) {
		_cleanup_free_ char *path = ad_asprintf("%s" RESERVE_SUFFIX, db->path);
		if (unlink(path) == 0) {
			atomic_store(&reserve_released, true);
			ad_warn("state db %s: disk full; its %d KiB reserve released so that a "
				"removal can free space (%s)",
				db->path, RESERVE_BYTES >> 10, (*err)->message);
			ad_error_free(err);
			r = remove(arg, err);
		}
	}
	if (r == 0 && atomic_exchange(&reserve_released, false))
		reserve_make(db->path);
	return r;
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
