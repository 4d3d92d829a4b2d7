/* store_probe: a small CLI over libadstore for the integration tests
 * (tests/integration/test_store_pull.py), which run it against a real
 * docker-registry. Prints results on stdout; on failure one line
 * "ERROR <CODE>: <message>" and exit status 1. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static const char *state_name(store_layer_state s)
{
	static const char *const names[] = {"waiting", "downloading", "extracting",
					    "done",    "exists",      "failed"};
	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static void on_progress(void *u, const store_progress *p)
{
	(void)u;
	fprintf(stderr, "progress %zu/%zu %s %s %llu/%llu\n", p->index + 1, p->count, p->digest,
		state_name(p->state), (unsigned long long)p->done, (unsigned long long)p->total);
}

static void print_image(const store_image *img)
{
	printf("id %s\nsize %llu\n", img->id, (unsigned long long)img->size);
	for (char **t = img->tags; t && *t; t++)
		printf("tag %s\n", *t);
	for (char **t = img->repo_digests; t && *t; t++)
		printf("digest %s\n", *t);
	for (char **t = img->layer_ids; t && *t; t++)
		printf("layer %s\n", *t);
	printf("config %s\n", img->config_json ? "yes" : "no");
}

/* SIGTERM cancels the pulls (through store_pull_opts.cancel), as a pull
 * helper process would on its own SIGTERM. */
static volatile sig_atomic_t terminated;

static void on_sigterm(int sig)
{
	(void)sig;
	terminated = 1;
}

static bool pull_cancelled(void *u)
{
	(void)u;
	return terminated;
}

struct pull_job {
	store *s;
	const char *ref;
	const store_pull_opts *opts;
	pthread_t th;
	int r;
	char *id;
	ad_error *err;
};

static void *pull_main(void *u)
{
	struct pull_job *j = u;
	j->r = store_pull(j->s, j->ref, j->opts, &j->id, &j->err);
	return NULL;
}

static void store_strv_free_public(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

static int usage(void)
{
	fprintf(stderr,
		"usage: store_probe --root DIR --db FILE [--certs-dir DIR] [--auth-file FILE]\n"
		"       [--user U --password P | --auth B64 | --registry-token T | "
		"--identity-token T]\n"
		"       [--plain-http HOST] [--insecure HOST] [--mirror HOST=URL]\n"
		"       [--parallel N] [--retries N] [--stall S] [--platform OS/ARCH[/VARIANT]]\n"
		"       pull REF... | get Q | list [FILTER] | rm Q | gc | usage |\n"
		"       mount IMAGE CONTAINER | umount CONTAINER |\n"
		"       load FILE | save FILE Q... | import FILE [REF]\n");
	return 2;
}

int main(int argc, char **argv)
{
	store_opts o = {0};
	store_auth auth = {0};
	bool have_auth = false;
	store_registry_config regs[8];
	const char *mirrors[8][2];
	size_t nregs = 0;
	char *platform = NULL;
	static const struct option lo[] = {
	    {"root", 1, 0, 'r'},
	    {"db", 1, 0, 'd'},
	    {"certs-dir", 1, 0, 'c'},
	    {"auth-file", 1, 0, 'a'},
	    {"user", 1, 0, 'u'},
	    {"password", 1, 0, 'p'},
	    {"auth", 1, 0, 'A'},
	    {"registry-token", 1, 0, 'T'},
	    {"identity-token", 1, 0, 'i'},
	    {"plain-http", 1, 0, 'H'},
	    {"insecure", 1, 0, 'I'},
	    {"mirror", 1, 0, 'm'},
	    {"parallel", 1, 0, 'j'},
	    {"retries", 1, 0, 'R'},
	    {"stall", 1, 0, 's'},
	    {"platform", 1, 0, 'P'},
	    {0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		store_registry_config *rc = NULL;
		switch (c) {
		case 'r':
			o.root = optarg;
			break;
		case 'd':
			o.db_path = optarg;
			break;
		case 'c':
			o.certs_dir = optarg;
			break;
		case 'a':
			o.auth_file = optarg;
			break;
		case 'u':
			auth.username = optarg;
			have_auth = true;
			break;
		case 'p':
			auth.password = optarg;
			break;
		case 'A':
			auth.auth = optarg;
			have_auth = true;
			break;
		case 'T':
			auth.registry_token = optarg;
			have_auth = true;
			break;
		case 'i':
			auth.identity_token = optarg;
			have_auth = true;
			break;
		case 'H':
		case 'I':
		case 'm':
			if (nregs == 8)
				return usage();
			rc = &regs[nregs];
			memset(rc, 0, sizeof(*rc));
			rc->host = optarg;
			if (c == 'H')
				rc->plain_http = true;
			if (c == 'I')
				rc->insecure = true;
			if (c == 'm') {
				char *eq = strchr(optarg, '=');
				if (!eq)
					return usage();
				*eq = '\0';
				mirrors[nregs][0] = eq + 1;
				mirrors[nregs][1] = NULL;
				rc->mirrors = mirrors[nregs];
			}
			nregs++;
			break;
		case 'j':
			o.max_parallel = (unsigned)atoi(optarg);
			break;
		case 'R':
			o.retries = (unsigned)atoi(optarg);
			break;
		case 's':
			o.stall_timeout_s = (unsigned)atoi(optarg);
			break;
		case 'P':
			platform = optarg;
			break;
		default:
			return usage();
		}
	}
	if (!o.root || !o.db_path || optind >= argc)
		return usage();
	o.registries = regs;
	o.n_registries = nregs;
	const char *cmd = argv[optind];
	const char *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
	const char *arg2 = optind + 2 < argc ? argv[optind + 2] : NULL;

	store *s = NULL;
	ad_error *err = NULL;
	int r = -1;
	/* This build tree's helper, not one beside the probe. */
	o.fetch_helper = getenv("AGENTD_FETCH") ? getenv("AGENTD_FETCH") : STORE_PROBE_FETCH;
	if (store_open(&o, &s, &err) < 0)
		goto out;
	if (strcmp(cmd, "pull") == 0 && arg) {
		store_pull_opts po = {.auth = have_auth ? &auth : NULL,
				      .progress = on_progress,
				      .cancel = pull_cancelled};
		struct sigaction sa = {.sa_handler = on_sigterm};
		sigaction(SIGTERM, &sa, NULL);
		if (platform) {
			po.os = strtok(platform, "/");
			po.arch = strtok(NULL, "/");
			po.variant = strtok(NULL, "/");
		}
		/* Several references are pulled at once, each in its own thread. */
		int n = argc - optind - 1;
		struct pull_job *jobs = calloc((size_t)n, sizeof(*jobs));
		for (int i = 0; i < n; i++) {
			jobs[i] =
			    (struct pull_job){.s = s, .ref = argv[optind + 1 + i], .opts = &po};
			pthread_create(&jobs[i].th, NULL, pull_main, &jobs[i]);
		}
		r = 0;
		for (int i = 0; i < n; i++) {
			pthread_join(jobs[i].th, NULL);
			if (jobs[i].r == 0) {
				printf("pulled %s\n", jobs[i].id);
			} else if (r == 0) {
				r = -1;
				err = jobs[i].err;
				jobs[i].err = NULL;
			}
			free(jobs[i].id);
			ad_error_free(&jobs[i].err);
		}
		free(jobs);
	} else if (strcmp(cmd, "get") == 0 && arg) {
		store_image *img = NULL;
		r = store_image_get(s, arg, &img, &err);
		if (r == 0)
			print_image(img);
		store_image_free(img);
	} else if (strcmp(cmd, "list") == 0) {
		store_image **imgs = NULL;
		r = store_image_list(s, arg, &imgs, &err);
		for (store_image **p = imgs; r == 0 && *p; p++)
			print_image(*p);
		store_images_free(imgs);
	} else if (strcmp(cmd, "rm") == 0 && arg) {
		r = store_image_remove(s, arg, &err);
	} else if (strcmp(cmd, "gc") == 0) {
		uint64_t freed = 0;
		r = store_gc(s, &freed, &err);
		if (r == 0)
			printf("freed %llu\n", (unsigned long long)freed);
	} else if (strcmp(cmd, "usage") == 0) {
		store_fs_usage u = {0};
		r = store_fs_usage_get(s, &u, &err);
		if (r == 0)
			printf("mountpoint %s\nused %llu\ninodes %llu\nfree %llu\ntotal %llu\n",
			       u.mountpoint, (unsigned long long)u.used_bytes,
			       (unsigned long long)u.inodes_used,
			       (unsigned long long)u.fs_free_bytes,
			       (unsigned long long)u.fs_total_bytes);
		store_fs_usage_clear(&u);
	} else if (strcmp(cmd, "mount") == 0 && arg && arg2) {
		char *path = NULL;
		r = store_rootfs_mount(s, arg, arg2, &path, &err);
		if (r == 0)
			printf("rootfs %s\n", path);
		free(path);
	} else if (strcmp(cmd, "load") == 0 && arg) {
		int fd = open(arg, O_RDONLY | O_CLOEXEC);
		char **ids = NULL;
		r = fd < 0 ? ad_fail_errno(&err, AD_E_NOT_FOUND, "open %s", arg)
			   : store_image_load(s, fd, 0, &ids, &err);
		for (char **p = ids; r == 0 && *p; p++)
			printf("loaded %s\n", *p);
		store_strv_free_public(ids);
		if (fd >= 0)
			close(fd);
	} else if (strcmp(cmd, "import") == 0 && arg) {
		int fd = open(arg, O_RDONLY | O_CLOEXEC);
		char *id = NULL;
		r = fd < 0 ? ad_fail_errno(&err, AD_E_NOT_FOUND, "open %s", arg)
			   : store_image_import(s, fd, arg2, 0, &id, &err);
		if (r == 0)
			printf("imported %s\n", id);
		free(id);
		if (fd >= 0)
			close(fd);
	} else if (strcmp(cmd, "save") == 0 && arg && arg2) {
		int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		r = fd < 0
			? ad_fail_errno(&err, AD_E_INTERNAL, "create %s", arg)
			: store_image_save(s, (const char *const *)&argv[optind + 2], fd, 0, &err);
		if (fd >= 0)
			close(fd);
	} else if (strcmp(cmd, "umount") == 0 && arg) {
		r = store_rootfs_remove(s, arg, &err);
	} else {
		store_close(s);
		return usage();
	}
out:
	if (r < 0) {
		printf("ERROR %s: %s\n", ad_code_name(err->code), err->message);
		ad_error_free(&err);
	}
	store_close(s);
	fflush(stdout);
	return r < 0 ? 1 : 0;
}
