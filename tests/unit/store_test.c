/* Unit tests of libadstore that need no registry: references, the content
 * store, image records, GC. (Pulls are tested against a real registry in
 * tests/integration/test_store_pull.py.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "store.h"
#include "store_int.h"

#include <jansson.h>

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DIG_A "sha256:" HEX_A

static const struct {
	const char *in;
	const char *out; /* NULL: invalid */
} ref_table[] = {
    /* docker.io defaults: domain, library/, latest */
    {"nginx", "docker.io/library/nginx:latest"},
    {"nginx:1.25", "docker.io/library/nginx:1.25"},
    {"library/nginx", "docker.io/library/nginx:latest"},
    {"docker.io/nginx", "docker.io/library/nginx:latest"},
    {"index.docker.io/nginx", "docker.io/library/nginx:latest"},
    {"docker.io/library/nginx:latest", "docker.io/library/nginx:latest"},
    {"user/repo", "docker.io/user/repo:latest"},
    {"user/repo/sub", "docker.io/user/repo/sub:latest"},
    /* the first component is a host only with '.', ':', "localhost" or uppercase */
    {"daocloud.io/library/nginx", "daocloud.io/library/nginx:latest"},
    {"quay.io/x", "quay.io/x:latest"},
    {"localhost/x", "localhost/x:latest"},
    {"localhost:5000/x", "localhost:5000/x:latest"},
    {"localhost:5000/x:v1", "localhost:5000/x:v1"},
    {"127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"},
    {"[::1]:5000/x", "[::1]:5000/x:latest"},
    {"[::1]/x", "[::1]/x:latest"},
    {"Registry/x", "Registry/x:latest"},
    {"localhostx/x", "docker.io/localhostx/x:latest"},
    /* a port with no path is a tag on docker.io */
    {"localhost:5000", "docker.io/library/localhost:5000"},
    /* digests, with and without a tag */
    {"nginx@" DIG_A, "docker.io/library/nginx@" DIG_A},
    {"nginx:1@" DIG_A, "docker.io/library/nginx:1@" DIG_A},
    {"host:1/x@" DIG_A, "host:1/x@" DIG_A},
    /* separators in path components */
    {"a.b/c_d", "a.b/c_d:latest"},
    {"a.b/c__d", "a.b/c__d:latest"},
    {"a.b/c---d", "a.b/c---d:latest"},
    {"a.b/c.d-e_f", "a.b/c.d-e_f:latest"},
    {"x:_tag", "docker.io/library/x:_tag"},
    {"x:A.b-C", "docker.io/library/x:A.b-C"},
    /* a bare name with dots is a repository on docker.io, not a host */
    {"docker.io", "docker.io/library/docker.io:latest"},
    {"a:1/b", "a:1/b:latest"},
    {"sub.example.com:443/team/app:2.0-rc_1", "sub.example.com:443/team/app:2.0-rc_1"},
    {"x:"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "docker.io/library/x:"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    /* invalid */
    {"a:/b", NULL},
    {"_x", NULL},
    {"x_", NULL},
    {"x..y", NULL},
    {"a.b/c@", NULL},
    {"a.b/c@sha256:", NULL},
    {"nginx:tag:extra", NULL},
    {"ex ample.com/x", NULL},
    {"", NULL},
    {"Nginx", NULL},
    {"docker.io/Nginx", NULL},
    {"nginx:", NULL},
    {"nginx:.x", NULL},
    {"nginx:-x", NULL},
    {"nginx@sha256:abc", NULL},
    {"nginx@sha256:" HEX_A "0", NULL},
    {"nginx@md5:" HEX_A, NULL},
    {"nginx@sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL},
    {HEX_A, NULL},
    {"a.b/c..d", NULL},
    {"a.b/c___d", NULL},
    {"a.b/-c", NULL},
    {"a.b/c-", NULL},
    {"a.b//c", NULL},
    {"a.b/c/", NULL},
    {"/x", NULL},
    {"-a.b/x", NULL},
    {"a-.b/x", NULL},
    {"host:port/x", NULL},
    {"host:123456/x", NULL},
    {"[zz]/x", NULL},
    {"a b", NULL},
    {"x:t@", NULL},
};

static void test_ref_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(ref_table) / sizeof(ref_table[0]); i++) {
		store_ref r = {0};
		ad_error *err = NULL;
		int rc = store_ref_parse(ref_table[i].in, &r, &err);
		if (ref_table[i].out) {
			if (rc != 0)
				fail_msg("\"%s\": unexpected error %s", ref_table[i].in,
					 err->message);
			char *s = store_ref_string(&r);
			if (strcmp(s, ref_table[i].out) != 0)
				fail_msg("\"%s\": got %s want %s", ref_table[i].in, s,
					 ref_table[i].out);
			free(s);
		} else {
			if (rc == 0)
				fail_msg("\"%s\": accepted as %s/%s", ref_table[i].in, r.domain,
					 r.path);
			assert_int_equal(err->code, AD_E_INVALID);
			/* The error names the reference. */
			char quoted[512];
			snprintf(quoted, sizeof(quoted), "\"%s\"", ref_table[i].in);
			assert_non_null(strstr(err->message, quoted));
		}
		store_ref_clear(&r);
		ad_error_free(&err);
	}
}

static void test_ref_length(void **state)
{
	(void)state;
	/* docker.io/ + library/ + name: 255 in all is the most a name may have. */
	char name[300];
	size_t prefix = strlen("docker.io/library/");
	memset(name, 'a', sizeof(name));
	name[255 - prefix] = '\0';
	store_ref r = {0};
	ad_error *err = NULL;
	assert_int_equal(store_ref_parse(name, &r, &err), 0);
	store_ref_clear(&r);
	name[255 - prefix] = 'a';
	name[256 - prefix] = '\0';
	assert_int_equal(store_ref_parse(name, &r, &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	ad_error_free(&err);

	char tag[200];
	memset(tag, 'b', sizeof(tag));
	memcpy(tag, "x:", 2);
	tag[2 + 128] = '\0';
	assert_int_equal(store_ref_parse(tag, &r, &err), 0);
	store_ref_clear(&r);
	tag[2 + 128] = 'b';
	tag[2 + 129] = '\0';
	assert_int_equal(store_ref_parse(tag, &r, &err), -1);
	ad_error_free(&err);
}

/* ---- content store ---- */

typedef struct fixture {
	char dir[64];
	store *s;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/store_test.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	char root[1024], db[1024];
	snprintf(root, sizeof(root), "%s/root", f->dir);
	snprintf(db, sizeof(db), "%s/state.db", f->dir);
	store_opts o = {.root = root, .db_path = db};
	ad_error *err = NULL;
	if (store_open(&o, &f->s, &err) < 0) {
		fprintf(stderr, "store_open: %s\n", err->message);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	store_close(f->s);
	ad_error *err = NULL;
	ad_remove_tree(f->dir, &err);
	ad_error_free(&err);
	free(f);
	return 0;
}

static void sha256_of(const void *data, size_t len, char out[72])
{
	unsigned char md[32];
	unsigned int n = 0;
	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

typedef struct mem_src {
	const char *data;
	size_t len, pos, chunk;
	int fail_at; /* return an error once pos reaches it (-1: never) */
	ad_code fail_code;
	int fail_errno;
} mem_src;

static ssize_t mem_read(void *u, void *buf, size_t len, ad_error **err)
{
	mem_src *m = u;
	if (m->fail_at >= 0 && m->pos >= (size_t)m->fail_at)
		return ad_error_make(err, m->fail_code, m->fail_errno, "source failed");
	size_t n = m->len - m->pos;
	if (n > len)
		n = len;
	if (m->chunk && n > m->chunk)
		n = m->chunk;
	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static int count_entries(const char *dir)
{
	char *cmd = ad_asprintf("ls -A %s | wc -l", dir);
	FILE *p = popen(cmd, "r");
	free(cmd);
	int n = -1;
	if (fscanf(p, "%d", &n) != 1)
		n = -1;
	pclose(p);
	return n;
}

static void test_blob_ok(void **state)
{
	fixture *f = *state;
	const char *data = "hello, content store";
	char dig[72];
	sha256_of(data, strlen(data), dig);
	mem_src m = {data, strlen(data), 0, 3, -1, 0, 0};
	ad_error *err = NULL;
	assert_false(store_blob_exists(f->s, dig));
	assert_int_equal(store_blob_ingest(f->s, dig, (int64_t)strlen(data), mem_read, &m, &err),
			 0);
	assert_true(store_blob_exists(f->s, dig));
	char *path = NULL;
	assert_int_equal(store_blob_path(f->s, dig, &path, &err), 0);
	char buf[64] = {0};
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), (int)strlen(data));
	close(fd);
	assert_string_equal(buf, data);
	free(path);
	/* Unknown size (-1) is accepted too. */
	mem_src m2 = {data, strlen(data), 0, 0, -1, 0, 0};
	assert_int_equal(store_blob_ingest(f->s, dig, -1, mem_read, &m2, &err), 0);
}

static void test_blob_mismatch(void **state)
{
	fixture *f = *state;
	const char *data = "the wrong bytes";
	char got[72];
	sha256_of(data, strlen(data), got);
	char blobs[1024], tmp[1024];
	snprintf(blobs, sizeof(blobs), "%s/root/blobs/sha256", f->dir);
	snprintf(tmp, sizeof(tmp), "%s/root/tmp", f->dir);

	mem_src m = {data, strlen(data), 0, 0, -1, 0, 0};
	ad_error *err = NULL;
	assert_int_equal(store_blob_ingest(f->s, DIG_A, (int64_t)strlen(data), mem_read, &m, &err),
			 -1);
	assert_int_equal(err->code, AD_E_DATA_LOSS);
	assert_non_null(strstr(err->message, DIG_A));
	assert_non_null(strstr(err->message, got));
	ad_error_free(&err);
	assert_false(store_blob_exists(f->s, DIG_A));
	assert_int_equal(count_entries(blobs), 0);
	assert_int_equal(count_entries(tmp), 0);

	/* Truncated: right digest, fewer bytes than announced. */
	char dig[72];
	sha256_of(data, strlen(data), dig);
	mem_src t = {data, strlen(data) - 2, 0, 0, -1, 0, 0};
	assert_int_equal(store_blob_ingest(f->s, dig, (int64_t)strlen(data), mem_read, &t, &err),
			 -1);
	assert_int_equal(err->code, AD_E_DATA_LOSS);
	ad_error_free(&err);
	/* Too long. */
	mem_src l = {data, strlen(data), 0, 0, -1, 0, 0};
	assert_int_equal(store_blob_ingest(f->s, dig, 4, mem_read, &l, &err), -1);
	assert_int_equal(err->code, AD_E_DATA_LOSS);
	ad_error_free(&err);
	/* The source fails midway (a reset connection, a full disk upstream). */
	mem_src e = {data, strlen(data), 0, 4, 8, AD_E_RESOURCE, ENOSPC};
	assert_int_equal(store_blob_ingest(f->s, dig, (int64_t)strlen(data), mem_read, &e, &err),
			 -1);
	assert_int_equal(err->code, AD_E_RESOURCE);
	ad_error_free(&err);
	assert_false(store_blob_exists(f->s, dig));
	assert_int_equal(count_entries(blobs), 0);
	assert_int_equal(count_entries(tmp), 0);
	/* Not a digest. */
	assert_int_equal(store_blob_ingest(f->s, "sha256:xyz", 1, mem_read, &m, &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	ad_error_free(&err);
}

/* A full disk: a tmpfs of 64 KiB under the store's tmp/ and blobs/. */
static void test_blob_enospc(void **state)
{
	fixture *f = *state;
	char small[256], cmd[1100];
	snprintf(small, sizeof(small), "%s/small", f->dir);
	mkdir(small, 0700);
	snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=64k tmpfs %s", small);
	if (system(cmd) != 0)
		skip();
	char root[1024], db[1024];
	snprintf(root, sizeof(root), "%s/root", small);
	snprintf(db, sizeof(db), "%s/state.db", f->dir);
	store_opts o = {.root = root, .db_path = db};
	store *s = NULL;
	ad_error *err = NULL;
	assert_int_equal(store_open(&o, &s, &err), 0);
	size_t len = 1 << 20;
	char *data = calloc(1, len);
	char dig[72];
	sha256_of(data, len, dig);
	mem_src m = {data, len, 0, 0, -1, 0, 0};
	assert_int_equal(store_blob_ingest(s, dig, (int64_t)len, mem_read, &m, &err), -1);
	assert_int_equal(err->code, AD_E_RESOURCE);
	ad_error_free(&err);
	assert_false(store_blob_exists(s, dig));
	char tmp[1100];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	assert_int_equal(count_entries(tmp), 0);
	store_close(s);
	free(data);
	snprintf(cmd, sizeof(cmd), "umount %s", small);
	assert_int_equal(system(cmd), 0);
}

/* Leftovers of a killed pull in tmp/ are removed by the next open. */
static void test_open_cleans_tmp(void **state)
{
	fixture *f = *state;
	char p[1024];
	snprintf(p, sizeof(p), "%s/root/tmp/blob-dead", f->dir);
	int fd = open(p, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/root/tmp/layer-dead", f->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/root/tmp/layer-dead/f", f->dir);
	close(open(p, O_CREAT | O_WRONLY, 0600));
	store_close(f->s);
	char root[1024], db[1024];
	snprintf(root, sizeof(root), "%s/root", f->dir);
	snprintf(db, sizeof(db), "%s/state.db", f->dir);
	store_opts o = {.root = root, .db_path = db};
	ad_error *err = NULL;
	assert_int_equal(store_open(&o, &f->s, &err), 0);
	snprintf(p, sizeof(p), "%s/root/tmp", f->dir);
	assert_int_equal(count_entries(p), 0);
}

/* GC: blobs and layer dirs no image references go, as do stray names. */
static void test_gc_unreferenced(void **state)
{
	fixture *f = *state;
	const char *data = "unreferenced";
	char dig[72], p[1024];
	sha256_of(data, strlen(data), dig);
	mem_src m = {data, strlen(data), 0, 0, -1, 0, 0};
	ad_error *err = NULL;
	assert_int_equal(store_blob_ingest(f->s, dig, -1, mem_read, &m, &err), 0);
	snprintf(p, sizeof(p), "%s/root/layers/%s", f->dir, HEX_A);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/root/layers/%s/file", f->dir, HEX_A);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	snprintf(p, sizeof(p), "%s/root/layers/not-a-digest", f->dir);
	assert_int_equal(mkdir(p, 0755), 0);
	uint64_t freed = 0;
	assert_int_equal(store_gc(f->s, &freed, &err), 0);
	assert_true(freed > 0);
	assert_false(store_blob_exists(f->s, dig));
	snprintf(p, sizeof(p), "%s/root/layers", f->dir);
	assert_int_equal(count_entries(p), 0);
	assert_int_equal(store_gc(f->s, &freed, &err), 0);
	assert_int_equal(freed, 0);

	store_image **imgs = NULL;
	assert_int_equal(store_image_list(f->s, NULL, &imgs, &err), 0);
	assert_null(imgs[0]);
	store_images_free(imgs);
	store_image *img = NULL;
	assert_int_equal(store_image_get(f->s, "nginx", &img, &err), -1);
	assert_int_equal(err->code, AD_E_NOT_FOUND);
	assert_non_null(strstr(err->message, "nginx"));
	ad_error_free(&err);
	/* Removing what is absent is not an error; a bad reference is. */
	assert_int_equal(store_image_remove(f->s, "nginx", &err), 0);
	assert_int_equal(store_image_remove(f->s, "Bad/Ref", &err), -1);
	assert_int_equal(err->code, AD_E_INVALID);
	ad_error_free(&err);
}

/* Platform choice in an index: os and architecture must match; an exact
 * variant wins over an entry without one, which wins over another variant. */
static void test_choose_platform(void **state)
{
	(void)state;
	json_t *m = json_loads(
	    "["
	    "{\"digest\":\"a\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":"
	    "\"v6\"}},"
	    "{\"digest\":\"b\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
	    "{\"digest\":\"c\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":"
	    "\"v7\"}},"
	    "{\"digest\":\"d\",\"platform\":{\"os\":\"windows\",\"architecture\":\"amd64\"}},"
	    "{\"digest\":\"e\",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
	    "{\"digest\":\"f\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\","
	    "\"variant\":\"v8\"}}"
	    "]",
	    0, NULL);
	assert_non_null(m);
	static const struct {
		const char *os, *arch, *variant, *want;
	} cases[] = {
	    {"linux", "amd64", NULL, "e"},  {"windows", "amd64", NULL, "d"},
	    {"linux", "arm", "v7", "c"},    {"linux", "arm", "v6", "a"},
	    {"linux", "arm", "v5", NULL},   {"linux", "arm64", "v8", "f"},
	    {"linux", "arm64", NULL, "b"},  {"linux", "arm64", "v9", "b"},
	    {"linux", "s390x", NULL, NULL}, {"darwin", "amd64", NULL, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *d = store_choose_platform(m, cases[i].os, cases[i].arch, cases[i].variant);
		const char *got = d ? json_string_value(json_object_get(d, "digest")) : NULL;
		if ((got == NULL) != (cases[i].want == NULL) ||
		    (got && strcmp(got, cases[i].want) != 0))
			fail_msg("%s/%s/%s: got %s want %s", cases[i].os, cases[i].arch,
				 cases[i].variant ? cases[i].variant : "-", got ? got : "none",
				 cases[i].want ? cases[i].want : "none");
	}
	json_decref(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ref_table),
	    cmocka_unit_test(test_ref_length),
	    cmocka_unit_test(test_choose_platform),
	    cmocka_unit_test_setup_teardown(test_blob_ok, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blob_mismatch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blob_enospc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_cleans_tmp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gc_unreferenced, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
