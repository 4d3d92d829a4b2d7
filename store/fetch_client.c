/* store_pull, store_image_load/save/import/commit: each runs one agentd-fetch
 * process (store/fetch_main.c), so that the process calling them (agentd)
 * links neither libcurl nor libarchive and a pull can be stopped by killing
 * its process. The request goes on a socket that is the helper's stdin and
 * stdout; progress and the result come back on it (fetch_proto.c). An
 * archive's file is the helper's fd 3. */
#include "store_int.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

/* How often store_pull_opts.cancel is asked. */
#define CANCEL_POLL_MS 50

/* A reply line longer than this is a broken helper. */
#define FETCH_MAX_LINE (16u << 20)

typedef struct fetch_run {
	store *s;
	const char *what; /* "pull docker.io/library/x:1", for messages */
	int data_fd;	  /* -1: none */
	int cancel_fd;	  /* > 0: readable when the caller gives up */
	store_cancel_fn cancel; /* polled every CANCEL_POLL_MS */
	void *cancel_userdata;
	store_progress_fn progress;
	void *progress_userdata;
	/* A pull's downloaded bytes per layer (the highest `done` seen), for
	 * store_pull_counters. NULL: not counted. */
	struct pull_tally *tally;
} fetch_run;

typedef struct pull_tally {
	uint64_t *layer_done;
	size_t n;
} pull_tally;

static void tally_progress(pull_tally *t, const store_progress *p)
{
	if (p->count > 4096 || p->index >= p->count)
		return; /* a broken helper: its counts are not worth memory */
	if (p->count > t->n) {
		t->layer_done = ad_realloc(t->layer_done, p->count * sizeof(*t->layer_done));
		memset(t->layer_done + t->n, 0, (p->count - t->n) * sizeof(*t->layer_done));
		t->n = p->count;
	}
	bool fetched = p->state == STORE_LAYER_DOWNLOADING || p->state == STORE_LAYER_EXTRACTING ||
		       p->state == STORE_LAYER_DONE;
	if (fetched && p->done > t->layer_done[p->index])
		t->layer_done[p->index] = p->done;
}

extern char **environ;

static int spawn_helper(const fetch_run *fr, int sock, pid_t *ret_pid, ad_error **err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, sock, 0);
	posix_spawn_file_actions_adddup2(&fa, sock, 1);
	if (fr->data_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, fr->data_fd, 3);
	posix_spawn_file_actions_addclosefrom_np(&fa, fr->data_fd >= 0 ? 4 : 3);
	sigset_t mask, defaults;
	sigemptyset(&mask);
	sigfillset(&defaults);
	posix_spawnattr_setsigmask(&attr, &mask);
	posix_spawnattr_setsigdefault(&attr, &defaults);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	/* The helper sets PR_SET_PDEATHSIG itself and compares getppid() with
	 * this, so that it dies with agentd even if agentd died first. */
	char parent[32];
	snprintf(parent, sizeof(parent), "%d", (int)getpid());
	char *const argv[] = {(char *)"agentd-fetch", parent, NULL};
	int r = posix_spawn(ret_pid, fr->s->fetch_helper, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r != 0)
		return ad_error_make(err, AD_E_PRECONDITION, r,
				     "%s: cannot run the image fetch helper %s", fr->what,
				     fr->s->fetch_helper);
	return 0;
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One reply line. Returns 1 for the final one (result or error), 2 for
 * garbage (the error says so), else 0. */
static int handle_line(const fetch_run *fr, const char *line, size_t len, json_t **ret_ok,
		       ad_error **err)
{
	json_error_t jerr;
	json_t *j = json_loadb(line, len, 0, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		ad_fail(err, AD_E_INTERNAL, "%s: the image fetch helper sent garbage: %s",
			fr->what, jerr.text);
		return 2;
	}
	json_t *v;
	int r = 0;
	if ((v = json_object_get(j, "progress"))) {
		if (fr->progress || fr->tally) {
			store_progress p;
			fetch_proto_progress_parse(v, &p);
			if (fr->tally)
				tally_progress(fr->tally, &p);
			if (fr->progress)
				fr->progress(fr->progress_userdata, &p);
		}
	} else if ((v = json_object_get(j, "ok"))) {
		*ret_ok = json_incref(v);
		r = 1;
	} else {
		fetch_proto_error_parse(json_object_get(j, "error"), err);
		r = 1;
	}
	json_decref(j);
	return r;
}

static const char *exit_reason(int status, char buf[64])
{
	if (WIFSIGNALED(status))
		snprintf(buf, 64, "was killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, 64, "exited with status %d", WEXITSTATUS(status));
	return buf;
}

/* Runs the helper on `request` until its final reply; *ret_ok gets the "ok"
 * object. */
static int fetch_run_helper(const fetch_run *fr, json_t *request, json_t **ret_ok, ad_error **err)
{
	pthread_mutex_lock(&fr->s->settings_lock);
	json_object_set_new(request, "store", fetch_proto_store(fr->s));
	pthread_mutex_unlock(&fr->s->settings_lock);
	char *req = json_dumps(request, JSON_COMPACT);
	json_decref(request);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		free(req);
		return ad_fail_errno(err, AD_E_RESOURCE, "%s: socketpair", fr->what);
	}
	pid_t pid;
	if (spawn_helper(fr, sv[1], &pid, err) < 0) {
		free(req);
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	close(sv[1]);
	int sock = sv[0];
	/* The helper reads the whole request before it writes: no deadlock. */
	bool sent = send_all(sock, req, strlen(req)) == 0 && send_all(sock, "\n", 1) == 0;
	free(req);
	shutdown(sock, SHUT_WR);

	json_t *ok = NULL;
	bool final = false, cancelled = false, broken = false;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	while (sent && !final) {
		struct pollfd p[2] = {{.fd = sock, .events = POLLIN},
				      {.fd = fr->cancel_fd, .events = POLLIN}};
		int n = poll(p, fr->cancel_fd > 0 ? 2 : 1, fr->cancel ? CANCEL_POLL_MS : -1);
		if (fr->cancel && fr->cancel(fr->cancel_userdata)) {
			cancelled = true;
			break;
		}
		if (n == 0 || (n < 0 && errno == EINTR))
			continue;
		if (n < 0) {
			ad_fail_errno(err, AD_E_INTERNAL, "%s: poll", fr->what);
			final = broken = true;
			break;
		}
		if (fr->cancel_fd > 0 && p[1].revents) {
			cancelled = true;
			break;
		}
		if (cap - len < 65536) {
			cap = cap ? cap * 2 : 131072;
			buf = ad_realloc(buf, cap);
		}
		ssize_t got = read(sock, buf + len, cap - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break; /* the helper is gone: its exit status says why */
		len += (size_t)got;
		char *nl;
		while (!final && (nl = memchr(buf, '\n', len))) {
			size_t line = (size_t)(nl - buf);
			int r = handle_line(fr, buf, line, &ok, err);
			final = r != 0;
			broken = r == 2;
			memmove(buf, nl + 1, len - line - 1);
			len -= line + 1;
		}
		if (!final && len > FETCH_MAX_LINE) {
			ad_fail(err, AD_E_INTERNAL, "%s: the image fetch helper sent a line of over %u bytes",
				fr->what, FETCH_MAX_LINE);
			final = broken = true;
		}
	}
	free(buf);
	close(sock);
	/* Cancelled, or after a bad reply: stop it now. Nothing it did not
	 * finish is visible in the store; its temp files go once no other
	 * helper runs (now, or at the next cleanup). */
	if (cancelled || broken)
		kill(pid, SIGKILL);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (cancelled || broken || !final)
		store_clean_tmp(fr->s);
	if (cancelled) {
		json_decref(ok);
		return ad_fail(err, AD_E_CANCELLED, "%s: cancelled", fr->what);
	}
	if (!final) {
		char why[64];
		if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
			return ad_fail(err, AD_E_PRECONDITION,
				       "%s: cannot run the image fetch helper %s (exit status 127)",
				       fr->what, fr->s->fetch_helper);
		return ad_fail(err, AD_E_INTERNAL, "%s: the image fetch helper %s %s", fr->what,
			       fr->s->fetch_helper, exit_reason(status, why));
	}
	if (!ok)
		return -1;
	*ret_ok = ok;
	return 0;
}

/* For the operations that answer {"image_id": ...}. */
static int run_for_image_id(const fetch_run *fr, json_t *req, char **ret_image_id,
			    ad_error **err)
{
	json_t *ok = NULL;
	if (fetch_run_helper(fr, req, &ok, err) < 0)
		return -1;
	const char *id = json_string_value(json_object_get(ok, "image_id"));
	if (ret_image_id)
		*ret_image_id = ad_strdup(id ? id : "");
	json_decref(ok);
	return 0;
}

int store_pull(store *s, const char *reference, const store_pull_opts *opts, char **ret_image_id,
	       ad_error **err)
{
	store_ref ref = {0};
	if (store_ref_parse(reference, &ref, err) < 0)
		return -1;
	_cleanup_free_ char *ref_string = store_ref_string(&ref);
	store_ref_clear(&ref);
	_cleanup_free_ char *what = ad_asprintf("pull %s", ref_string);
	store_pull_opts o = opts ? *opts : (store_pull_opts){0};
	json_t *req = json_pack("{s:s, s:s}", "op", "pull", "reference", reference);
	if (o.auth)
		json_object_set_new(req, "auth", fetch_proto_auth(o.auth));
	if (o.os)
		json_object_set_new(req, "os", json_string(o.os));
	if (o.arch)
		json_object_set_new(req, "arch", json_string(o.arch));
	if (o.variant)
		json_object_set_new(req, "variant", json_string(o.variant));
	pull_tally tally = {0};
	fetch_run fr = {.s = s,
			.what = what,
			.data_fd = -1,
			.cancel_fd = o.cancel_fd,
			.cancel = o.cancel,
			.cancel_userdata = o.cancel_userdata,
			.progress = o.progress,
			.progress_userdata = o.progress_userdata,
			.tally = &tally};
	int64_t t0 = ad_monotonic_ns();
	int r = run_for_image_id(&fr, req, ret_image_id, err);
	if (r == 0) {
		uint64_t bytes = 0;
		for (size_t i = 0; i < tally.n; i++)
			bytes += tally.layer_done[i];
		int64_t took = ad_monotonic_ns() - t0;
		for (size_t i = 0; i < STORE_PULL_DURATION_N; i++) {
			if ((double)took / 1e9 <= store_pull_duration_bounds[i]) {
				atomic_fetch_add(&s->pulls_by_duration[i], 1);
				break;
			}
		}
		atomic_fetch_add(&s->pulls, 1);
		atomic_fetch_add(&s->pull_bytes, bytes);
		atomic_fetch_add(&s->pull_ns, (uint64_t)took);
	} else {
		atomic_fetch_add(&s->pull_failures, 1);
	}
	free(tally.layer_done);
	return r;
}

/* Its length must match the declaration's, or this does not compile. */
const double store_pull_duration_bounds[] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800};

void store_pull_counters_get(store *s, store_pull_counters *ret)
{
	*ret = (store_pull_counters){
	    .pulls = atomic_load(&s->pulls),
	    .failures = atomic_load(&s->pull_failures),
	    .bytes = atomic_load(&s->pull_bytes),
	    .seconds = (double)atomic_load(&s->pull_ns) / 1e9,
	};
	for (size_t i = 0; i < STORE_PULL_DURATION_N; i++)
		ret->by_duration[i] = atomic_load(&s->pulls_by_duration[i]);
}

int store_push(store *s, const char *image, const char *dest, const store_push_opts *opts,
	       char **ret_digest, char **ret_ref, ad_error **err)
{
	store_push_opts o = opts ? *opts : (store_push_opts){0};
	_cleanup_free_ char *what = ad_asprintf("push %s", image);
	json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:I}", "op", "push", "image", image, "dest",
				dest ? dest : "", "format", o.format ? o.format : "", "chunk_size",
				(json_int_t)o.chunk_size);
	if (o.auth)
		json_object_set_new(req, "auth", fetch_proto_auth(o.auth));
	fetch_run fr = {.s = s,
			.what = what,
			.data_fd = -1,
			.cancel_fd = o.cancel_fd,
			.progress = o.progress,
			.progress_userdata = o.progress_userdata};
	json_t *ok = NULL;
	if (fetch_run_helper(&fr, req, &ok, err) < 0)
		return -1;
	const char *digest = json_string_value(json_object_get(ok, "digest"));
	const char *ref = json_string_value(json_object_get(ok, "reference"));
	*ret_digest = ad_strdup(digest ? digest : "");
	*ret_ref = ad_strdup(ref ? ref : "");
	json_decref(ok);
	return 0;
}

int store_image_load(store *s, int fd, int cancel_fd, char ***ret_image_ids, ad_error **err)
{
	fetch_run fr = {.s = s, .what = "load", .data_fd = fd, .cancel_fd = cancel_fd};
	json_t *ok = NULL;
	if (fetch_run_helper(&fr, json_pack("{s:s}", "op", "load"), &ok, err) < 0)
		return -1;
	json_t *ids = json_object_get(ok, "image_ids");
	char **v = ad_malloc0(sizeof(char *) * (json_array_size(ids) + 1));
	for (size_t i = 0; i < json_array_size(ids); i++)
		v[i] = ad_strdup(json_string_value(json_array_get(ids, i)) ?: "");
	json_decref(ok);
	*ret_image_ids = v;
	return 0;
}

int store_image_save(store *s, const char *const *queries, int fd, int cancel_fd, ad_error **err)
{
	json_t *q = json_array();
	for (size_t i = 0; queries && queries[i]; i++)
		json_array_append_new(q, json_string(queries[i]));
	fetch_run fr = {.s = s, .what = "save", .data_fd = fd, .cancel_fd = cancel_fd};
	json_t *ok = NULL;
	if (fetch_run_helper(&fr, json_pack("{s:s, s:o}", "op", "save", "queries", q), &ok, err) <
	    0)
		return -1;
	json_decref(ok);
	return 0;
}

int store_image_import(store *s, int fd, const char *reference, int cancel_fd, char **ret_image_id,
		       ad_error **err)
{
	json_t *req = json_pack("{s:s}", "op", "import");
	if (reference)
		json_object_set_new(req, "reference", json_string(reference));
	fetch_run fr = {.s = s, .what = "import", .data_fd = fd, .cancel_fd = cancel_fd};
	return run_for_image_id(&fr, req, ret_image_id, err);
}

int store_image_commit(store *s, const store_commit_opts *o, int cancel_fd, char **ret_image_id,
		       ad_error **err)
{
	json_t *req = json_pack("{s:s}", "op", "commit");
	const char *const fields[][2] = {
	    {"base", o->base},		     {"container_id", o->container_id},
	    {"config", o->config_json},	     {"created_by", o->created_by},
	    {"comment", o->comment},	     {"author", o->author},
	    {"reference", o->reference},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (fields[i][1])
			json_object_set_new(req, fields[i][0], json_string(fields[i][1]));
	if (o->source_date_epoch >= 0)
		json_object_set_new(req, "source_date_epoch",
				    json_integer((json_int_t)o->source_date_epoch));
	fetch_run fr = {.s = s, .what = "commit", .data_fd = -1, .cancel_fd = cancel_fd};
	return run_for_image_id(&fr, req, ret_image_id, err);
}

int store_unpack_archive(store *s, int fd, const char *dest_dir, int cancel_fd, ad_error **err)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "unpack", "dest", dest_dir);
	fetch_run fr = {.s = s, .what = "unpack", .data_fd = fd, .cancel_fd = cancel_fd};
	json_t *ok = NULL;
	if (fetch_run_helper(&fr, req, &ok, err) < 0)
		return -1;
	json_decref(ok);
	return 0;
}
