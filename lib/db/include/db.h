/* db.h — the one public header of libaddb: agentd's state DB (SQLite, WAL).
 * It owns opening, the connection settings and the migration runner; each
 * owner of tables (the store its images, the daemon its pods and
 * containers) registers its own ordered schema when it opens a connection.
 * Depends on lib/base and SQLite. */
#ifndef AGENTD_DB_H
#define AGENTD_DB_H

#include "base.h"

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
typedef struct ad_db ad_db;

/* One owner's tables: migrations[i] takes the owner from version i to
 * i + 1. Append only: never edit a released migration. */
typedef struct ad_db_schema {
	const char *owner; /* unique name, e.g. "images" */
	const char *const *migrations;
	size_t n_migrations;
	/* DBs written before owners had schemas of their own kept one list,
	 * numbered by PRAGMA user_version: the owner's first migration is
	 * already applied in such a DB whose user_version is at least this
	 * (0: the owner came later). */
	int legacy_user_version;
} ad_db_schema;

/* Opens (creating if missing) `path`, runs quick_check (corrupt →
 * AD_E_DATA_LOSS, never replaced), turns on WAL, foreign keys and
 * busy_timeout, and brings `schema` (may be NULL) up to date. One
 * connection per thread that uses it. */
int ad_db_open(const char *path, const ad_db_schema *schema, ad_db **ret_db, ad_error **err);
void ad_db_close(ad_db *db);
sqlite3 *ad_db_handle(ad_db *db);
/* The number of migrations applied, all owners together (the DB's own
 * bookkeeping included): it grows with every schema change. */
int ad_db_schema_version(ad_db *db);
/* Prepared statements are cached per connection by SQL text. */
int ad_db_prepare(ad_db *db, const char *sql, sqlite3_stmt **ret_stmt, ad_error **err);
int ad_db_begin(ad_db *db, ad_error **err); /* BEGIN IMMEDIATE */
int ad_db_commit(ad_db *db, ad_error **err);
void ad_db_rollback(ad_db *db);
/* A full disk: removing things is how space comes back, yet a removal must
 * write its rows too. ad_db_open keeps a reserve file beside the DB
 * (1 MiB, `<path>-reserve`). ad_db_removal runs remove(arg, err); when it
 * fails with AD_E_RESOURCE and the reserve is there, the reserve is
 * released and remove runs once more (it must be safe to repeat). After a
 * removal that succeeded, a released reserve is made again (when there is
 * room). */
int ad_db_removal(ad_db *db, int (*remove)(void *arg, ad_error **err), void *arg,
		  ad_error **err);
/* Turns the connection's last SQLite error into an ad_error with context. */
int ad_db_fail(ad_db *db, ad_error **err, const char *context);

#endif
