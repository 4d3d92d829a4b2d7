/* The pods' and containers' tables in the state DB (their migrations, run by
 * lib/db) and the statement and row helpers the rest of the manager uses. */
#include <stdarg.h>
#include <string.h>

#include <sqlite3.h>

#include "pods_int.h"

/* ap by pointer: one list may feed two statements (mgr_db_insert_unless). */
static int bind_args(sqlite3_stmt *st, const char *fmt, va_list *ap)
{
	int idx = 1;
	for (const char *f = fmt; *f; f++, idx++) {
		int rc;
		if (*f == 's') {
			const char *s = va_arg(*ap, const char *);
			rc = s ? sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(st, idx);
		} else if (*f == 'i') {
			rc = sqlite3_bind_int64(st, idx, va_arg(*ap, int64_t));
		} else {
			const void *p = va_arg(*ap, const void *);
			size_t len = va_arg(*ap, size_t);
			rc = sqlite3_bind_blob(st, idx, p ? p : "", (int)len, SQLITE_TRANSIENT);
		}
		if (rc != SQLITE_OK)
			return -1;
	}
	return 0;
}

/* Under db_lock, in the caller's transaction or its own. */
static int db_exec_locked_va(mgr *m, ad_error **err, int *ret_changes, const char *sql,
			     const char *fmt, va_list *ap)
{
	sqlite3_stmt *st;
	int r = ad_db_prepare(m->db, sql, &st, err);
	if (r == 0) {
		if (bind_args(st, fmt, ap) < 0 || sqlite3_step(st) != SQLITE_DONE)
			r = ad_db_fail(m->db, err, "state DB");
		else if (ret_changes)
			*ret_changes = sqlite3_changes(ad_db_handle(m->db));
		sqlite3_reset(st);
	}
	return r;
}

static int db_exec_va(mgr *m, ad_error **err, int *ret_changes, const char *sql, const char *fmt,
		      va_list *ap)
{
	pthread_mutex_lock(&m->db_lock);
	int r = db_exec_locked_va(m, err, ret_changes, sql, fmt, ap);
	pthread_mutex_unlock(&m->db_lock);
	return r;
}

int mgr_db_tx(mgr *m, ad_error **err, int (*body)(mgr *m, void *arg, ad_error **err), void *arg)
{
	pthread_mutex_lock(&m->db_lock);
	int r = ad_db_begin(m->db, err);
	if (r == 0) {
		r = body(m, arg, err);
		if (r == 0)
			r = ad_db_commit(m->db, err);
		else
			ad_db_rollback(m->db);
	}
	pthread_mutex_unlock(&m->db_lock);
	return r;
}

int mgr_db_exec_locked(mgr *m, ad_error **err, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = db_exec_locked_va(m, err, NULL, sql, fmt, &ap);
	va_end(ap);
	return r;
}

typedef struct removal {
	mgr *m;
	mgr_removal_fn remove;
	const char *id;
} removal;

static int run_removal(void *arg, ad_error **err)
{
	const removal *rm = arg;
	return rm->remove(rm->m, rm->id, err);
}

int mgr_db_removal(mgr *m, mgr_removal_fn remove, const char *id, ad_error **err)
{
	removal rm = {m, remove, id};
	return ad_db_removal(m->db, run_removal, &rm, err);
}

/* One statement (its own transaction). fmt: s = text (NULL binds NULL),
 * i = int64_t, b = blob (pointer, size_t). */
int mgr_db_exec(mgr *m, ad_error **err, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = db_exec_va(m, err, NULL, sql, fmt, &ap);
	va_end(ap);
	return r;
}

/* mgr_db_exec answering how many rows the statement changed: a conditional
 * UPDATE tells which of two racing threads made a transition. */
int mgr_db_exec_changes(mgr *m, ad_error **err, const char *sql, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int changes = 0;
	int r = db_exec_va(m, err, &changes, sql, fmt, &ap);
	va_end(ap);
	return r < 0 ? r : changes;
}

/* Under db_lock, in the caller's transaction. */
static int insert_unless_locked(mgr *m, ad_error **err, char **ret_existing, const char *check,
				const char *check_fmt, const char *insert, const char *insert_fmt,
				va_list *ap)
{
	sqlite3_stmt *st;
	if (ad_db_prepare(m->db, check, &st, err) < 0)
		return -1;
	int r = bind_args(st, check_fmt, ap) < 0 ? ad_db_fail(m->db, err, "state DB") : 0;
	if (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
		*ret_existing = mgr_col_text(st, 0);
		r = 1;
	}
	sqlite3_reset(st);
	if (r != 0)
		return r;
	if (ad_db_prepare(m->db, insert, &st, err) < 0)
		return -1;
	if (bind_args(st, insert_fmt, ap) < 0 || sqlite3_step(st) != SQLITE_DONE)
		r = ad_db_fail(m->db, err, "state DB: insert");
	sqlite3_reset(st);
	return r;
}

struct insert_unless {
	char **ret_existing;
	const char *check, *check_fmt, *insert, *insert_fmt;
	va_list *ap;
};

static int insert_unless_body(mgr *m, void *arg, ad_error **err)
{
	struct insert_unless *a = arg;
	return insert_unless_locked(m, err, a->ret_existing, a->check, a->check_fmt, a->insert,
				    a->insert_fmt, a->ap);
}

int mgr_db_insert_unless(mgr *m, ad_error **err, char **ret_existing, const char *check,
			 const char *check_fmt, const char *insert, const char *insert_fmt, ...)
{
	*ret_existing = NULL;
	va_list ap;
	va_start(ap, insert_fmt);
	struct insert_unless a = {ret_existing, check, check_fmt, insert, insert_fmt, &ap};
	int r = mgr_db_tx(m, err, insert_unless_body, &a);
	va_end(ap);
	return r;
}

char *mgr_col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? ad_strdup((const char *)t) : NULL;
}

uint8_t *mgr_col_blob(sqlite3_stmt *st, int i, size_t *ret_len)
{
	const void *b = sqlite3_column_blob(st, i);
	size_t n = (size_t)sqlite3_column_bytes(st, i);
	*ret_len = n;
	uint8_t *p = ad_malloc0(n + 1);
	if (b && n)
		memcpy(p, b, n);
	return p;
}

int mgr_query_rows(mgr *m, const char *sql, const char *param, void *(*from_row)(sqlite3_stmt *),
		   void (*free_all)(void *), const char *what, void ***ret, size_t *ret_n,
		   ad_error **err)
{
	pthread_mutex_lock(&m->db_lock);
	sqlite3_stmt *st;
	void **v = ad_malloc0(sizeof(*v));
	size_t n = 0;
	int r = ad_db_prepare(m->db, sql, &st, err);
	if (r == 0) {
		if (param)
			sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT);
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			v = ad_realloc(v, (n + 2) * sizeof(*v));
			v[n++] = from_row(st);
			v[n] = NULL;
		}
		if (rc != SQLITE_DONE)
			r = ad_db_fail(m->db, err, what);
		sqlite3_reset(st);
	}
	pthread_mutex_unlock(&m->db_lock);
	if (r < 0) {
		free_all(v);
		return -1;
	}
	*ret = v;
	if (ret_n)
		*ret_n = n;
	return 0;
}

/* The pods' and containers' tables in the state DB (lib/db runs the
 * migrations). state: 0 creating (half set up, cleaned up on start), then
 * per table. config: the caller's record of the request the object was
 * made from (the CRI layer's packed protobuf; opaque here). */
static const char *const pods_migrations[] = {
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
    /* 2: a container's runtime config as the runtime packs it (built once,
     * at create; NULL for containers created before) and its stop signal;
     * config is the caller's own record of its request from now on. */
    ("ALTER TABLE containers ADD COLUMN stop_signal INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE containers ADD COLUMN rt_config BLOB;"),
    /* 3: what the caller says of the node (the pod CIDR). */
    "CREATE TABLE node_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 4: a pod's user namespace mappings ("container:host:size,..."): the
     * host ids it holds until its row is gone. */
    ("ALTER TABLE pods ADD COLUMN uid_maps TEXT;"
     "ALTER TABLE pods ADD COLUMN gid_maps TEXT;"),
};

const ad_db_schema mgr_pods_schema = {
    .owner = "pods",
    .migrations = pods_migrations,
    .n_migrations = sizeof(pods_migrations) / sizeof(pods_migrations[0]),
    .legacy_user_version = 3,
};
