/* base.h — the one public header of libadbase: errors, cleanup helpers,
 * logging, time, fd-relative filesystem helpers. libc only: the shim links
 * it too. Shared by every other part of the tree; depends on nothing. */
#ifndef AGENTD_BASE_H
#define AGENTD_BASE_H

#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>

/* ---- errors -------------------------------------------------------------
 * Fallible functions return int (0 on success, -1 on failure) and take
 * `ad_error **err` as their last parameter. On failure *err holds a code, the
 * errno that caused it (or 0) and a one-line message; callers add context with
 * ad_error_wrap(). The code says which gRPC status agent/ answers with (mapped
 * in exactly one place in agent/). An errno of ENOSPC or EDQUOT makes any
 * error AD_E_RESOURCE: a full disk is reported as such wherever it surfaces. */
typedef enum ad_code {
	AD_E_INTERNAL = 0, /* default: a bug or an unexpected system failure */
	AD_E_INVALID,      /* the caller sent something wrong */
	AD_E_NOT_FOUND,
	AD_E_EXISTS,
	AD_E_PRECONDITION, /* object in the wrong state for the request */
	AD_E_UNAVAILABLE,  /* a peer (registry, plugin) could not be reached */
	AD_E_UNAUTHENTICATED,
	AD_E_PERMISSION,
	AD_E_RESOURCE, /* a limit was hit (size, disk, memory) */
	AD_E_DEADLINE,
	AD_E_CANCELLED,
	AD_E_UNIMPLEMENTED,
	AD_E_DATA_LOSS, /* corrupt content (digest mismatch, corrupt DB) */
	_AD_E_MAX,
} ad_code;

typedef struct ad_error {
	ad_code code;
	int errno_value;
	char *message;
} ad_error;

/* Sets *err (if err is non-NULL) and returns -1. With errno_value != 0 the
 * message ends with ": strerror(errno_value)". */
int ad_error_make(ad_error **err, ad_code code, int errno_value, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Prefixes the message of *err with "context: "; returns -1. */
int ad_error_wrap(ad_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ad_error_free(ad_error **err);
const char *ad_code_name(ad_code code);

#define ad_fail(err, code, ...) ad_error_make((err), (code), 0, __VA_ARGS__)
#define ad_fail_errno(err, code, ...) ad_error_make((err), (code), errno, __VA_ARGS__)

/* ---- cleanup attributes -------------------------------------------------- */
void ad_freep(void *p);
void ad_closep(int *fd);
void ad_fclosep(void *fp);
void ad_error_freep(ad_error **err);
#define _cleanup_free_ __attribute__((cleanup(ad_freep)))
#define _cleanup_close_ __attribute__((cleanup(ad_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(ad_fclosep)))
#define _cleanup_error_ __attribute__((cleanup(ad_error_freep)))
/* Hands ownership out of a cleanup variable. */
#define ad_steal_ptr(p)                                                                            \
	({                                                                                         \
		__typeof__(p) _stolen = (p);                                                       \
		(p) = NULL;                                                                        \
		_stolen;                                                                           \
	})
#define ad_steal_fd(fd)                                                                            \
	({                                                                                         \
		int _stolen = (fd);                                                                \
		(fd) = -1;                                                                         \
		_stolen;                                                                           \
	})

/* Allocation that cannot fail: aborts with a message on OOM. */
void *ad_malloc0(size_t size);
void *ad_realloc(void *p, size_t size);
char *ad_strdup(const char *s);
char *ad_strndup(const char *s, size_t n);
char *ad_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- logging (stderr; the program at the edge logs, libraries don't) ---- */
typedef enum ad_log_level { AD_LOG_ERROR, AD_LOG_WARN, AD_LOG_INFO, AD_LOG_DEBUG } ad_log_level;
void ad_log_set_level(ad_log_level level);
int ad_log_level_parse(const char *name, ad_log_level *ret_level);
bool ad_log_enabled(ad_log_level level);
void ad_log(ad_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ad_error_log(...) ad_log(AD_LOG_ERROR, __VA_ARGS__)
#define ad_warn(...) ad_log(AD_LOG_WARN, __VA_ARGS__)
#define ad_info(...) ad_log(AD_LOG_INFO, __VA_ARGS__)
#define ad_debug(...) ad_log(AD_LOG_DEBUG, __VA_ARGS__)

/* ---- crash points (tests) ------------------------------------------------ */
/* A place between two persisted steps where a crash must be survivable.
 * Inert unless the environment's AGENTD_FAULT names the point ("NAME", or
 * "NAME:N" for its Nth hit in this process): then the process logs "fault
 * point NAME reached (hit N)" and SIGKILLs its partner (if set) and
 * itself. Compiled into every build (a getenv per hit); the points and the
 * test that walks them: tests/integration/test_crash_points.py. */
void ad_fault_point(const char *name);
/* Who dies with this process at a fault point: agentd-fetch names agentd,
 * so that a point inside a pull is a crash of agentd mid-pull. */
void ad_fault_set_partner(pid_t pid);

/* ---- time --------------------------------------------------------------- */
int64_t ad_now_ns(void);       /* CLOCK_REALTIME, nanoseconds since the epoch */
int64_t ad_monotonic_ns(void); /* CLOCK_MONOTONIC */
/* The CLOCK_MONOTONIC time `ms` from now, for pthread_cond_timedwait on a
 * condition variable set to that clock. */
struct timespec ad_monotonic_after_ms(unsigned ms);
/* RFC 3339 with nanoseconds in UTC ("2026-11-29T02:46:36.123456789Z"). */
void ad_format_rfc3339nano(int64_t epoch_ns, char buf[40]);

/* ---- filesystem (fd-relative, O_CLOEXEC) -------------------------------- */
/* Opens `path` resolved inside the directory `root_fd` as if it were "/":
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), with a verified
 * component-by-component fallback on kernels without openat2. */
int ad_openat_in_root(int root_fd, const char *path, int flags, mode_t mode, ad_error **err);
/* mkdir -p of `path` (absolute or relative to cwd). */
int ad_mkdir_p(const char *path, mode_t mode, ad_error **err);
/* Writes `len` bytes to `dir_fd`/`name` through a temp file, fsync and rename. */
int ad_write_file_atomic(int dir_fd, const char *name, const void *data, size_t len, mode_t mode,
			 ad_error **err);
/* Reads a whole file (at most max_size bytes, else AD_E_RESOURCE); NUL-terminated. */
int ad_read_file(int dir_fd, const char *name, size_t max_size, char **ret_data, size_t *ret_len,
		 ad_error **err);
/* rm -rf that never crosses into another mount. */
int ad_remove_tree(const char *path, ad_error **err);
/* The entries of a directory, "." and ".." left out:
 *	_cleanup_closedir_ DIR *d = ad_opendir_at(dir_fd, name, O_NOFOLLOW);
 *	for (struct dirent *de; d && (de = ad_readdir(d));) ...
 * ad_opendir_at opens dir_fd/name (AT_FDCWD and a path; dir_fd and "." for
 * the directory itself) as a new open file description, so a directory fd
 * kept elsewhere keeps its own read position; `open_flags` are added to
 * O_RDONLY | O_DIRECTORY | O_CLOEXEC. NULL with errno set on failure. */
DIR *ad_opendir_at(int dir_fd, const char *name, int open_flags);
struct dirent *ad_readdir(DIR *d);
void ad_closedirp(DIR **d);
#define _cleanup_closedir_ __attribute__((cleanup(ad_closedirp)))
/* The names in dir_fd/name (opened as ad_opendir_at), without "." and "..",
 * sorted by strcmp: a NULL-terminated vector (ad_strv_free), its length in
 * *ret_n if not NULL. NULL with errno set on failure. */
char **ad_dir_names(int dir_fd, const char *name, size_t *ret_n);
/* Frees a NULL-terminated vector of strings and the strings. */
void ad_strv_free(char **v);

/* ---- /etc/passwd and /etc/group texts -------------------------------- */
#define AD_ID_FIELDS 7
/* Calls fn with the fields of each entry (name, password, id, then the gid
 * (passwd) or the members (group), ...; empty fields kept, missing ones
 * NULL); entries without a name or id are skipped. Stops at the first
 * non-zero return and returns it. */
int ad_id_file_each(const char *text, int (*fn)(char **fields, void *arg), void *arg);
/* The entry whose name (by_id: whose id) is `key`: 0 with its id, its group
 * id (passwd; -1 if none) and its name (malloc'd) for the non-NULL ret_*;
 * -1 if there is none. */
int ad_id_file_find(const char *text, const char *key, bool by_id, long *ret_id, long *ret_gid,
		    char **ret_name);

/* ---- network namespaces ------------------------------------------------ */
/* Brings "lo" up in the calling thread's network namespace: 0 or -errno. */
int ad_loopback_up(void);

/* ---- systemd notify protocol ----------------------------------------- */
/* Sends `state` ("READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1",
 * several joined by '\n') to $NOTIFY_SOCKET. 1: sent, 0: no socket set,
 * -errno on failure. */
int ad_sd_notify(const char *state);
/* The watchdog interval systemd expects WATCHDOG=1 within (WATCHDOG_USEC,
 * if WATCHDOG_PID is unset or this process), or 0 for none. */
uint64_t ad_sd_watchdog_usec(void);
/* Socket activation (sd_listen_fds(3) semantics, with unset_environment):
 * the number of listening sockets passed from fd 3 (AD_SD_LISTEN_FDS_START)
 * on when LISTEN_PID is this process and LISTEN_FDS is set, else 0. They
 * are made close-on-exec, and LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are
 * removed from the environment so that children do not take them. */
#define AD_SD_LISTEN_FDS_START 3
int ad_sd_listen_fds(void);

/* Where agentd's helper programs (agentd-shim, agentd-infra, agentd-fetch)
 * are installed; CMake passes the real libexecdir. */
#ifndef AGENTD_LIBEXECDIR
#define AGENTD_LIBEXECDIR "/usr/libexec/agentd"
#endif
/* The helper program `name`: the first of `near_self` (paths relative to the
 * running executable's directory, NULL-terminated: a build tree or a
 * side-by-side install) that is executable, else AGENTD_LIBEXECDIR/name. */
char *ad_find_helper(const char *name, const char *const *near_self);

#endif
