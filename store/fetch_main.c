/* agentd-fetch: one pull, load, save, import or commit for agentd, in a process of
 * its own (see fetch_client.c, which starts it, and fetch_proto.c, the
 * messages). Reads the request from stdin to EOF, answers on stdout; an
 * archive is fd 3. argv[1] is agentd's pid: the helper dies with it. */
#include "fetch.h"
#include "store_int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_REQUEST (4u << 20)

static pthread_mutex_t reply_lock = PTHREAD_MUTEX_INITIALIZER;

/* SIGTERM stops a pull through its cancel hook (agentd itself kills with
 * SIGKILL; this is for an operator or a service manager). */
static volatile sig_atomic_t terminated;

static void on_sigterm(int sig)
{
	(void)sig;
	terminated = 1;
}

static bool pull_cancelled(void *userdata) /* or push */
{
	(void)userdata;
	return terminated;
}

/* One line on stdout; agentd gone means there is nobody left to work for. */
static void reply(json_t *j)
{
	char *line = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!line)
		_exit(1);
	size_t len = strlen(line);
	line[len] = '\n'; /* over the NUL, written with the line */
	pthread_mutex_lock(&reply_lock);
	for (size_t off = 0; off < len + 1;) {
		ssize_t n = write(STDOUT_FILENO, line + off, len + 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(1);
		off += (size_t)n;
	}
	pthread_mutex_unlock(&reply_lock);
	free(line);
}

static void on_progress(void *userdata, const store_progress *p)
{
	(void)userdata;
	reply(fetch_proto_progress(p));
}

static json_t *read_request(ad_error **err)
{
	char *buf = NULL;
	size_t len = 0;
	for (;;) {
		buf = ad_realloc(buf, len + 65536);
		ssize_t n = read(STDIN_FILENO, buf + len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			ad_fail_errno(err, AD_E_INTERNAL, "agentd-fetch: read the request");
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > MAX_REQUEST) {
			free(buf);
			ad_fail(err, AD_E_INVALID, "agentd-fetch: request over %u bytes", MAX_REQUEST);
			return NULL;
		}
	}
	json_error_t jerr;
	json_t *j = json_loadb(buf, len, 0, &jerr);
	free(buf);
	if (!json_is_object(j)) {
		json_decref(j);
		ad_fail(err, AD_E_INVALID, "agentd-fetch: the request is not a JSON object: %s",
			jerr.text);
		return NULL;
	}
	return j;
}

static json_t *do_pull(store *s, json_t *req, ad_error **err)
{
	json_t *a = json_object_get(req, "auth");
	store_auth auth;
	fetch_proto_auth_parse(a, &auth);
	store_pull_opts po = {
	    .auth = a ? &auth : NULL,
	    .os = json_string_value(json_object_get(req, "os")),
	    .arch = json_string_value(json_object_get(req, "arch")),
	    .variant = json_string_value(json_object_get(req, "variant")),
	    .progress = on_progress,
	    .cancel = pull_cancelled,
	};
	_cleanup_free_ char *id = NULL;
	const char *ref = json_string_value(json_object_get(req, "reference"));
	if (fetch_pull(s, ref ? ref : "", &po, &id, err) < 0)
		return NULL;
	return json_pack("{s:s}", "image_id", id);
}

static json_t *do_push(store *s, json_t *req, ad_error **err)
{
	json_t *a = json_object_get(req, "auth");
	store_auth auth;
	fetch_proto_auth_parse(a, &auth);
	store_push_opts po = {
	    .auth = a ? &auth : NULL,
	    .format = json_string_value(json_object_get(req, "format")),
	    .chunk_size = (uint64_t)json_integer_value(json_object_get(req, "chunk_size")),
	    .progress = on_progress,
	};
	_cleanup_free_ char *digest = NULL, *ref = NULL;
	const char *image = json_string_value(json_object_get(req, "image"));
	if (fetch_push(s, image ? image : "", json_string_value(json_object_get(req, "dest")), &po,
		       pull_cancelled, NULL, &digest, &ref, err) < 0)
		return NULL;
	return json_pack("{s:s, s:s}", "digest", digest, "reference", ref);
}

static json_t *do_load(store *s, ad_error **err)
{
	char **ids = NULL;
	if (fetch_image_load(s, 3, &ids, err) < 0)
		return NULL;
	json_t *arr = json_array();
	for (size_t i = 0; ids && ids[i]; i++)
		json_array_append_new(arr, json_string(ids[i]));
	store_strv_free(ids);
	return json_pack("{s:o}", "image_ids", arr);
}

static json_t *do_save(store *s, json_t *req, ad_error **err)
{
	json_t *q = json_object_get(req, "queries");
	size_t n = json_array_size(q);
	_cleanup_free_ const char **queries = ad_malloc0(sizeof(char *) * (n + 1));
	for (size_t i = 0; i < n; i++)
		queries[i] = json_string_value(json_array_get(q, i));
	if (fetch_image_save(s, queries, 3, err) < 0)
		return NULL;
	return json_object();
}

static json_t *do_import(store *s, json_t *req, ad_error **err)
{
	_cleanup_free_ char *id = NULL;
	if (fetch_image_import(s, 3, json_string_value(json_object_get(req, "reference")), &id,
			       err) < 0)
		return NULL;
	return json_pack("{s:s}", "image_id", id);
}

static json_t *do_commit(store *s, json_t *req, ad_error **err)
{
	json_t *epoch = json_object_get(req, "source_date_epoch");
	store_commit_opts o = {
	    .base = json_string_value(json_object_get(req, "base")),
	    .container_id = json_string_value(json_object_get(req, "container_id")),
	    .config_json = json_string_value(json_object_get(req, "config")),
	    .created_by = json_string_value(json_object_get(req, "created_by")),
	    .comment = json_string_value(json_object_get(req, "comment")),
	    .author = json_string_value(json_object_get(req, "author")),
	    .reference = json_string_value(json_object_get(req, "reference")),
	    .source_date_epoch = json_is_integer(epoch) ? json_integer_value(epoch) : -1,
	};
	_cleanup_free_ char *id = NULL;
	if (fetch_image_commit(s, &o, &id, err) < 0)
		return NULL;
	return json_pack("{s:s}", "image_id", id);
}

static json_t *do_unpack(store *s, json_t *req, ad_error **err)
{
	const char *dest = json_string_value(json_object_get(req, "dest"));
	if (fetch_unpack_archive(s, 3, dest ? dest : "", err) < 0)
		return NULL;
	return json_object();
}

static json_t *run(json_t *req, ad_error **err)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	store_opts o;
	if (fetch_proto_store_parse(json_object_get(req, "store"), &o, err) < 0)
		return NULL;
	store *s = NULL;
	json_t *ok = NULL;
	if (fetch_open(&o, &s, err) == 0) {
		if (!op)
			ad_fail(err, AD_E_INVALID, "agentd-fetch: the request has no op");
		else if (strcmp(op, "pull") == 0)
			ok = do_pull(s, req, err);
		else if (strcmp(op, "push") == 0)
			ok = do_push(s, req, err);
		else if (strcmp(op, "load") == 0)
			ok = do_load(s, err);
		else if (strcmp(op, "save") == 0)
			ok = do_save(s, req, err);
		else if (strcmp(op, "import") == 0)
			ok = do_import(s, req, err);
		else if (strcmp(op, "commit") == 0)
			ok = do_commit(s, req, err);
		else if (strcmp(op, "unpack") == 0)
			ok = do_unpack(s, req, err);
		else
			ad_fail(err, AD_E_INVALID, "agentd-fetch: unknown op '%s'", op);
		fetch_close(s);
	}
	fetch_proto_store_clear(&o);
	return ok;
}

int main(int argc, char **argv)
{
	/* Killed with agentd (the pid it passed: if that is already gone, so are we). */
	if (argc != 2 || atoi(argv[1]) <= 0) {
		fprintf(stderr, "usage: agentd-fetch AGENTD_PID (started by agentd, with a "
				"request on stdin)\n");
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != (pid_t)atoi(argv[1]))
		return 1;
	ad_fault_set_partner((pid_t)atoi(argv[1]));
	struct sigaction sa = {.sa_handler = on_sigterm};
	sigaction(SIGTERM, &sa, NULL);
	_cleanup_error_ ad_error *e = NULL;
	json_t *req = read_request(&e);
	json_t *ok = req ? run(req, &e) : NULL;
	json_decref(req);
	if (ok)
		reply(json_pack("{s:o}", "ok", ok));
	else
		reply(fetch_proto_error(e));
	return 0;
}
