/* Unit tests for libaddb: each owner's migrations, the conversion of a DB
 * from the single migration list of earlier agentd versions, a newer DB
 * and a corrupt file refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"

static char *make_tmpdir(void)
{
	char tmpl[] = "/tmp/addb-test-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return ad_strdup(tmpl);
}

static const char *const fruit_v2[] = {
    "CREATE TABLE fruit (name TEXT PRIMARY KEY);",
    "ALTER TABLE fruit ADD COLUMN colour TEXT;",
};
static const ad_db_schema fruit1 = {.owner = "fruit", .migrations = fruit_v2, .n_migrations = 1};
static const ad_db_schema fruit2 = {.owner = "fruit", .migrations = fruit_v2, .n_migrations = 2};

static const char *const tools_v1[] = {"CREATE TABLE tools (name TEXT PRIMARY KEY);"};
static const ad_db_schema tools = {.owner = "tools", .migrations = tools_v1, .n_migrations = 1};

static int count_rows(ad_db *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(ad_db_prepare(db, sql, &st, NULL), 0);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int n = sqlite3_column_int(st, 0);
	sqlite3_reset(st);
	return n;
}

static void test_owners_migrate_their_own_tables(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_free_ char *path = ad_asprintf("%s/agentd.db", dir);
	ad_db *db = NULL;
	ad_error *err = NULL;
	assert_int_equal(ad_db_open(path, NULL, &db, &err), 0);
	assert_int_equal(ad_db_schema_version(db), 1); /* the bookkeeping alone */
	ad_db_close(db);

	assert_int_equal(ad_db_open(path, &fruit1, &db, &err), 0);
	assert_int_equal(ad_db_schema_version(db), 2);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM fruit"), 0);
	ad_db_close(db);

	/* A second owner beside it, then the first one's next migration. */
	assert_int_equal(ad_db_open(path, &tools, &db, &err), 0);
	assert_int_equal(ad_db_schema_version(db), 3);
	ad_db_close(db);
	assert_int_equal(ad_db_open(path, &fruit2, &db, &err), 0);
	assert_int_equal(ad_db_schema_version(db), 4);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM pragma_table_info('fruit') "
					"WHERE name = 'colour'"),
			 1);
	ad_db_close(db);

	/* Reopening runs nothing again; an older agentd refuses the newer table. */
	assert_int_equal(ad_db_open(path, &fruit2, &db, &err), 0);
	assert_int_equal(ad_db_schema_version(db), 4);
	ad_db_close(db);
	assert_int_equal(ad_db_open(path, &fruit1, &db, &err), -1);
	assert_int_equal(err->code, AD_E_PRECONDITION);
	assert_non_null(strstr(err->message, "fruit schema version 2, newer than this agentd"));
	ad_error_free(&err);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

static void test_failed_migration_changes_nothing(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_free_ char *path = ad_asprintf("%s/agentd.db", dir);
	static const char *const broken[] = {"CREATE TABLE ok_table (x INTEGER);"
					     "CREATE TABLE ok_table (y INTEGER);"};
	static const ad_db_schema schema = {.owner = "broken", .migrations = broken,
					    .n_migrations = 1};
	ad_db *db = NULL;
	ad_error *err = NULL;
	assert_int_equal(ad_db_open(path, &schema, &db, &err), -1);
	assert_non_null(strstr(err->message, "migrate broken to schema 1"));
	ad_error_free(&err);
	assert_int_equal(ad_db_open(path, NULL, &db, &err), 0);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM sqlite_master WHERE name = "
					"'ok_table'"),
			 0);
	assert_int_equal(ad_db_schema_version(db), 1);
	ad_db_close(db);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

/* A DB as agentd wrote it before owners had schemas: one list, numbered by
 * user_version (1 meta, 2 the store's tables, 3 pods). */
static void write_legacy_db(const char *path, int user_version)
{
	sqlite3 *h = NULL;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);%s"
		 "PRAGMA user_version = %d;",
		 user_version >= 2 ? "CREATE TABLE fruit (name TEXT PRIMARY KEY);"
				     "INSERT INTO fruit VALUES ('apple');"
				   : "",
		 user_version);
	assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
}

static void test_legacy_db_is_converted_without_loss(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_free_ char *path = ad_asprintf("%s/agentd.db", dir);
	/* fruit's first migration was legacy number 2, tools' number 3. */
	ad_db_schema fruit = fruit2, tool = tools;
	fruit.legacy_user_version = 2;
	tool.legacy_user_version = 3;
	write_legacy_db(path, 2);
	ad_db *db = NULL;
	ad_error *err = NULL;
	assert_int_equal(ad_db_open(path, &fruit, &db, &err), 0);
	/* The existing table was kept (its row too) and only migration 2 ran. */
	assert_int_equal(count_rows(db, "SELECT count(*) FROM fruit WHERE name = 'apple'"), 1);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM pragma_table_info('fruit') "
					"WHERE name = 'colour'"),
			 1);
	ad_db_close(db);
	/* tools came after legacy version 2: its table is created. */
	assert_int_equal(ad_db_open(path, &tool, &db, &err), 0);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM tools"), 0);
	assert_int_equal(ad_db_schema_version(db), 4);
	ad_db_close(db);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

static void test_newer_layout_and_corrupt_file_refused(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_free_ char *path = ad_asprintf("%s/agentd.db", dir);
	ad_db *db = NULL;
	ad_error *err = NULL;
	write_legacy_db(path, 101);
	assert_int_equal(ad_db_open(path, NULL, &db, &err), -1);
	assert_int_equal(err->code, AD_E_PRECONDITION);
	assert_non_null(strstr(err->message, "newer than this agentd"));
	ad_error_free(&err);
	unlink(path);

	/* Garbage where the DB was: refused with DATA_LOSS, file left alone. */
	FILE *f = fopen(path, "w");
	for (int i = 0; i < 4096; i++)
		fputc('x', f);
	fclose(f);
	assert_int_equal(ad_db_open(path, NULL, &db, &err), -1);
	assert_int_equal(err->code, AD_E_DATA_LOSS);
	assert_non_null(strstr(err->message, "refusing to start"));
	ad_error_free(&err);
	struct stat stb;
	assert_int_equal(stat(path, &stb), 0);
	assert_int_equal(stb.st_size, 4096);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

/* A DB that cannot grow (SQLite's SQLITE_FULL, as on a full disk) is a
 * resource limit, not an internal error; the DB stays intact. */
static void test_full_db_is_resource_exhausted(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = make_tmpdir();
	_cleanup_free_ char *path = ad_asprintf("%s/agentd.db", dir);
	ad_db *db = NULL;
	ad_error *err = NULL;
	assert_int_equal(ad_db_open(path, &tools, &db, &err), 0);
	sqlite3 *h = ad_db_handle(db);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_exec(h, "PRAGMA max_page_count = 16", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(
	    ad_db_prepare(db, "INSERT INTO tools (name) VALUES (printf('%d%.*c', ?1, 2000, 'x'))",
			  &st, &err),
	    0);
	int rc = SQLITE_DONE;
	for (int i = 0; i < 1000 && rc == SQLITE_DONE; i++) {
		sqlite3_bind_int(st, 1, i);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
	}
	assert_int_equal(rc, SQLITE_FULL);
	assert_int_equal(ad_db_fail(db, &err, "insert tool"), -1);
	assert_int_equal(err->code, AD_E_RESOURCE);
	assert_non_null(strstr(err->message, "database or disk is full"));
	ad_error_free(&err);
	assert_int_equal(count_rows(db, "SELECT count(*) FROM pragma_integrity_check "
					"WHERE integrity_check = 'ok'"),
			 1);
	ad_db_close(db);
	assert_int_equal(ad_remove_tree(dir, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_owners_migrate_their_own_tables),
	    cmocka_unit_test(test_failed_migration_changes_nothing),
	    cmocka_unit_test(test_legacy_db_is_converted_without_loss),
	    cmocka_unit_test(test_newer_layout_and_corrupt_file_refused),
	    cmocka_unit_test(test_full_db_is_resource_exhausted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
