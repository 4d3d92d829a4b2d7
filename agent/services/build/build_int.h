/* build_int.h — private to agent/services/build: the Dockerfile parser
 * (dockerfile.c), Docker's word processing and variable expansion (words.c)
 * and the builder (builder.c) the RPC handlers (service.c) call. */
#ifndef AGENTD_BUILD_INT_H
#define AGENTD_BUILD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "base.h"
#include "build.h"
#include "runtime.h"
#include "store.h"

struct build_service {
	store *images;
	mgr *pods;
	rt_runtime *rt; /* NULL: rt_error says why */
	char *rt_error;
	char *work_root; /* <root>/builds: one dir per running build */
	char *cache_dir; /* <root>/build-cache: cache key -> image id */
	char *working_dir; /* <root>/working: <name>.json per working container */
	/* The working containers a call is using now: one call at a time on each. */
	pthread_mutex_t busy_lock;
	pthread_cond_t busy_changed; /* CLOCK_MONOTONIC */
	char **busy;		     /* NULL-terminated names */
};

/* ---- dockerfile.c ---- */
typedef struct df_instr {
	char *cmd;	/* upper case: "FROM", "RUN", ... */
	char *args;	/* after the flags, continuation lines joined, unexpanded */
	char **flags;	/* NULL-terminated "name=value" (without "--"), unexpanded */
	char **exec;	/* the JSON (exec) form's strings, NULL-terminated; NULL: shell form */
	unsigned line;	/* where the instruction starts */
	char *original; /* "RUN apt-get ..." as written (joined): history, cache key */
} df_instr;

typedef struct dockerfile {
	df_instr *v;
	size_t n;
	char escape; /* the escape parser directive: '\\' or '`' */
} dockerfile;

/* Parses `text` (named `name` in errors: "Dockerfile:3: ..."): parser
 * directives, comments, line continuations, the instructions and the flags
 * each supports. Anything unsupported is AD_E_INVALID naming file:line. */
int df_parse(const char *name, const char *text, size_t len, dockerfile *ret, ad_error **err);
void df_free(dockerfile *df);
/* The value of flag `name` of `in` (NULL: not given). */
const char *df_flag(const df_instr *in, const char *name);

/* ---- words.c: Docker's shell-like word processing ---- */
/* Looks `name` up (NULL: unset). */
typedef const char *(*df_lookup_fn)(void *userdata, const char *name, size_t len);

/* Expands $VAR, ${VAR}, ${VAR:-w}, ${VAR-w}, ${VAR:+w}, ${VAR+w}, ${VAR:?msg}
 * and removes quotes ('...' literal, "..." expanded) and escapes, as Docker
 * does for FROM, COPY, ENV and the others. One word: whitespace is kept.
 * AD_E_INVALID for a bad substitution or an unterminated quote. */
int df_expand_word(const char *word, char escape, df_lookup_fn lookup, void *userdata,
		   char **ret, ad_error **err);
/* Splits `s` at unquoted, unescaped whitespace and processes each word as
 * df_expand_word. *ret is NULL-terminated. */
int df_expand_words(const char *s, char escape, df_lookup_fn lookup, void *userdata,
		    char ***ret, ad_error **err);
/* Splits without processing (quotes and escapes kept): for "k=v k2=v2" forms. */
int df_split_raw(const char *s, char escape, char ***ret, ad_error **err);
size_t df_strv_len(char *const *v);

/* ---- fsops.c: COPY and ADD's file work ---- */
#include <sys/types.h>
/* "a/./b/../c" -> "a/c" (leading '/' dropped); NULL if it climbs out. */
char *bfs_clean_path(const char *path);
/* An O_PATH fd of the cleaned path `clean` under root_fd: beneath (the
 * context: a symlink that leads out is AD_E_INVALID) or in root (a rootfs:
 * absolute symlinks stay inside). `shown` names it in errors. */
int bfs_open_source(int root_fd, const char *clean, bool beneath, const char *shown,
		    ad_error **err);
/* `src` cleaned (outside the root: AD_E_INVALID) and its last element's
 * wildcards matched, sorted; a missing source is AD_E_NOT_FOUND. */
int bfs_expand_sources(int root_fd, const char *src, bool beneath, const char *what,
		       char ***ret, ad_error **err);
/* Digest of the sources' paths, types, modes, sizes, contents, link targets. */
int bfs_hash_sources(int root_fd, char *const *sources, char out[72], ad_error **err);
/* "sha256:<hex>" of the bytes (cache keys). */
void bfs_sha256(const void *data, size_t len, char out[72]);
/* mkdir -p inside the root (every element resolved in it); an O_RDONLY fd of it. */
int bfs_mkdir_in_root(int root_fd, const char *path, uid_t uid, gid_t gid, ad_error **err);

typedef struct bfs_copy_opts {
	uid_t uid;
	gid_t gid;
	bool keep_owner; /* the sources' owners instead of uid:gid (ADD of a tar) */
	bool chmod_set;
	mode_t chmod;
	bool beneath; /* sources resolved beneath their root (the context) */
} bfs_copy_opts;
/* COPY's rules: a directory's contents go into dest; a file goes to dest, or
 * into it when dest_is_dir or dest is an existing directory. Owners set, modes
 * and mtimes kept. */
int bfs_copy(int src_root, const char *src, int dst_root, const char *dest, bool dest_is_dir,
	     const bfs_copy_opts *o, ad_error **err);
/* "user[:group]" (names or numbers) against the rootfs's /etc/passwd and
 * /etc/group; a name that is not there is AD_E_INVALID. */
int bfs_resolve_user(int root_fd, const char *spec, uid_t *ret_uid, gid_t *ret_gid,
		     ad_error **err);

/* ---- config.c: edits of the image config's "config" object ---- */
/* cfg[key], made a new object or array if missing or of another type. */
json_t *bcfg_member(json_t *cfg, const char *key, json_type type);
/* The value of Env's entry `name` (len bytes), NULL if none. */
const char *bcfg_env_get(json_t *cfg, const char *name, size_t len);
void bcfg_env_set(json_t *cfg, const char *key, size_t key_len, const char *value);
/* "80", "80/tcp", "53/udp", "8000-8010" into ExposedPorts. */
int bcfg_expose(json_t *cfg, const char *spec, ad_error **err);
void bcfg_label(json_t *cfg, const char *key, const char *value);
/* A JSON array's strings as a NULL-terminated vector (ad_strv_free). */
char **bcfg_strv(json_t *array);
/* The first n strings of v (stopping at a NULL) as a JSON array. */
json_t *bcfg_json(char *const *v, size_t n);
/* The environment a RUN gets: Env, plus the default PATH if it has none. */
json_t *bcfg_run_env(json_t *cfg);

/* ---- service.c ---- */
/* RUN's network, from the request's "" or "none" (a namespace of its own,
 * loopback only), "host", or "pod:<ID>" (the network namespace of a ready
 * pod that has one, as its containers see it). */
typedef struct build_network {
	bool host;
	char *netns;  /* the pod's pinned netns (joined); NULL otherwise */
	char *pod_id; /* the pod's id; NULL otherwise */
} build_network;
int build_network_resolve(build_service *b, const char *spec, build_network *ret, ad_error **err);
void build_network_clear(build_network *n);
/* "none", "host" or "pod": the mode, what a RUN's cache key depends on. */
const char *build_network_mode(const build_network *n);

/* Sends one BuildProgress on a Build or WorkingRun stream unless the client
 * left (*gone, set when a send fails). */
void build_progress_send(rpc_call *call, bool *gone, unsigned step, unsigned steps,
			 bool cached, const char *text, size_t len);

/* ---- run.c ---- */
typedef struct brun_opts {
	const char *rootfs;
	const char *const *args, *const *env;
	const char *cwd;
	uid_t uid;
	gid_t gid;
	const build_network *net;
	const char *log_path;
	int cancel_fd; /* > 0: readable when the build is given up */
	void (*output)(void *userdata, const char *text, size_t len);
	void *userdata;
} brun_opts;
/* Runs to the end; *ret_exit its exit code, *ret_tail the end of its output. */
int brun(build_service *b, const char *id, const brun_opts *o, int *ret_exit, char **ret_tail,
	 ad_error **err);

/* ---- builder.c ---- */
typedef struct build_opts {
	const char *dockerfile_name;
	const char *dockerfile;
	size_t dockerfile_len;
	int context_fd; /* the unpacked context dir */
	const char *work_dir; /* this build's private dir */
	char **build_args;    /* "K=V", NULL-terminated */
	const char *tag;      /* NULL: untagged */
	const char *target;   /* NULL: the last stage */
	bool no_cache;
	int64_t source_date_epoch; /* < 0: none */
	const build_network *net;
	int cancel_fd;
	/* Progress: step is 1-based (0: output within a step). */
	void (*output)(void *userdata, unsigned step, unsigned steps, bool cached,
		       const char *text, size_t len);
	void *userdata;
} build_opts;
int build_run(build_service *b, const build_opts *o, char **ret_image_id, ad_error **err);
/* The image FROM scratch starts from: no layers, an empty config. */
int build_scratch_image(build_service *b, int cancel_fd, char **ret_id, ad_error **err);
/* Removes the layer cache's entries whose image is no longer in the store
 * (removed since they were made); the number removed. */
size_t build_cache_prune(build_service *b);

/* ---- working.c: buildah-style working containers ---- */
void working_register(svc_table *t, build_service *b);
/* Holds the working container `name` for one call: waits while another call
 * holds it (AD_E_CANCELLED if cancel_fd fires meanwhile). The hold ends with
 * working_release (the cleanup attribute below). */
typedef struct working_hold {
	build_service *b;
	char *name; /* NULL: nothing held */
} working_hold;
int working_hold_name(build_service *b, const char *name, int cancel_fd, working_hold *ret,
		      ad_error **err);
void working_release(working_hold *h);
#define _cleanup_working_hold_ __attribute__((cleanup(working_release)))
/* What store_commit_opts points to for a working container. */
typedef struct working_commit_strings {
	char *base, *rootfs_id, *config_json, *author;
} working_commit_strings;
/* Fills o's base, container_id, config_json and author for working
 * container `name` (the strings in *keep); 0, 1 if there is none of that
 * name, or -1. */
int working_commit_opts(build_service *b, const char *name, store_commit_opts *o,
			working_commit_strings *keep, ad_error **err);
void working_commit_strings_clear(working_commit_strings *keep);

#endif
