/* The content store: blobs/sha256/<hex>, each written through a temp file in
 * tmp/ while hashed, and renamed into place only once digest and size match. */
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <openssl/evp.h>

struct store_blob_writer {
	store *s;
	int fd;
	char tmpname[128];
	char *digest;
	int64_t size;
	uint64_t written;
	EVP_MD_CTX *md;
};

struct store_inflight {
	char *digest;
	int lock_fd; /* tmp/ingest-<hex>.lock, flocked: other processes wait on it */
	store_inflight *next;
};

int store_blob_path(store *s, const char *digest, char **ret_path, ad_error **err)
{
	if (!store_digest_valid(digest))
		return ad_fail(err, AD_E_INVALID, "invalid digest \"%s\"", digest ? digest : "");
	*ret_path = ad_asprintf("%s/blobs/sha256/%s", s->root, digest + 7);
	return 0;
}

bool store_blob_exists(store *s, const char *digest)
{
	struct stat st;
	if (!store_digest_valid(digest))
		return false;
	return fstatat(s->blobs_fd, digest + 7, &st, 0) == 0 && S_ISREG(st.st_mode);
}

static int write_errno(ad_error **err, int e, const char *what, const char *digest)
{
	/* A full disk becomes AD_E_RESOURCE in ad_error_make. */
	return ad_error_make(err, AD_E_INTERNAL, e, "blob %s: %s", digest, what);
}

int store_blob_writer_open(store *s, const char *digest, int64_t size, store_blob_writer **ret_w,
			   ad_error **err)
{
	if (!store_digest_valid(digest))
		return ad_fail(err, AD_E_INVALID, "invalid digest \"%s\"", digest ? digest : "");
	store_blob_writer *w = ad_malloc0(sizeof(*w));
	w->s = s;
	w->digest = ad_strdup(digest);
	w->size = size;
	static unsigned counter;
	snprintf(w->tmpname, sizeof(w->tmpname), "blob-%.16s-%d-%u", digest + 7, (int)getpid(),
		 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
	w->fd = openat(s->tmp_fd, w->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		write_errno(err, errno, "create temp file", digest);
		free(w->digest);
		free(w);
		return -1;
	}
	w->md = EVP_MD_CTX_new();
	if (!w->md || EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
		store_blob_writer_abort(w);
		return ad_fail(err, AD_E_INTERNAL, "blob %s: sha256 init failed", digest);
	}
	*ret_w = w;
	return 0;
}

int store_blob_writer_write(store_blob_writer *w, const void *buf, size_t len, ad_error **err)
{
	if (w->size >= 0 && w->written + len > (uint64_t)w->size)
		return ad_fail(err, AD_E_DATA_LOSS,
			       "blob %s: more than the expected %lld bytes received", w->digest,
			       (long long)w->size);
	EVP_DigestUpdate(w->md, buf, len);
	const char *p = buf;
	size_t left = len;
	while (left > 0) {
		ssize_t n = write(w->fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return write_errno(err, errno, "write", w->digest);
		}
		p += n;
		left -= (size_t)n;
	}
	w->written += len;
	return 0;
}

uint64_t store_blob_writer_written(store_blob_writer *w)
{
	return w->written;
}

int store_blob_writer_reset(store_blob_writer *w, ad_error **err)
{
	if (ftruncate(w->fd, 0) < 0 || lseek(w->fd, 0, SEEK_SET) < 0)
		return write_errno(err, errno, "truncate", w->digest);
	EVP_DigestInit_ex(w->md, EVP_sha256(), NULL);
	w->written = 0;
	return 0;
}

static void writer_free(store_blob_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	EVP_MD_CTX_free(w->md);
	free(w->digest);
	free(w);
}

void store_blob_writer_abort(store_blob_writer *w)
{
	if (!w)
		return;
	unlinkat(w->s->tmp_fd, w->tmpname, 0);
	writer_free(w);
}

int store_blob_writer_commit(store_blob_writer *w, ad_error **err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char got[72];
	EVP_DigestFinal_ex(w->md, md, &mdlen);
	store_digest_format(md, got);
	if (w->size >= 0 && w->written != (uint64_t)w->size) {
		ad_fail(err, AD_E_DATA_LOSS,
			"blob %s: size mismatch: expected %lld bytes, got %llu (digest %s)",
			w->digest, (long long)w->size, (unsigned long long)w->written, got);
		store_blob_writer_abort(w);
		return -1;
	}
	if (strcmp(got, w->digest) != 0) {
		ad_fail(err, AD_E_DATA_LOSS, "blob digest mismatch: expected %s, got %s", w->digest,
			got);
		store_blob_writer_abort(w);
		return -1;
	}
	if (fsync(w->fd) < 0) {
		write_errno(err, errno, "fsync", w->digest);
		store_blob_writer_abort(w);
		return -1;
	}
	ad_fault_point("blob.commit");
	if (renameat(w->s->tmp_fd, w->tmpname, w->s->blobs_fd, w->digest + 7) < 0) {
		write_errno(err, errno, "rename into the store", w->digest);
		store_blob_writer_abort(w);
		return -1;
	}
	/* The rename must reach the disk before the DB can point at the blob. */
	fsync(w->s->blobs_fd);
	writer_free(w);
	ad_fault_point("blob.committed");
	return 0;
}

int store_blob_ingest(store *s, const char *digest, int64_t size, store_source_fn read_fn,
		      void *userdata, ad_error **err)
{
	store_blob_writer *w = NULL;
	if (store_blob_writer_open(s, digest, size, &w, err) < 0)
		return -1;
	char buf[65536];
	for (;;) {
		ssize_t n = read_fn(userdata, buf, sizeof(buf), err);
		if (n < 0) {
			store_blob_writer_abort(w);
			return -1;
		}
		if (n == 0)
			break;
		if (store_blob_writer_write(w, buf, (size_t)n, err) < 0) {
			store_blob_writer_abort(w);
			return -1;
		}
	}
	return store_blob_writer_commit(w, err);
}

typedef struct mem_source {
	const char *data;
	size_t len, pos;
} mem_source;

static ssize_t mem_read(void *u, void *buf, size_t len, ad_error **err)
{
	(void)err;
	mem_source *m = u;
	size_t n = m->len - m->pos < len ? m->len - m->pos : len;
	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

ssize_t store_fd_read(void *fd_ptr, void *buf, size_t len, ad_error **err)
{
	int fd = *(int *)fd_ptr;
	for (;;) {
		ssize_t n = read(fd, buf, len);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return ad_fail_errno(err, AD_E_INTERNAL, "read");
	}
}

int store_blob_put(store *s, const char *digest, const void *data, size_t len, ad_error **err)
{
	if (store_blob_exists(s, digest))
		return 0;
	mem_source m = {data, len, 0};
	return store_blob_ingest(s, digest, (int64_t)len, mem_read, &m, err);
}

void store_digest_format(const unsigned char sha256[32], char out[72])
{
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", sha256[i]);
}

void store_sha256_digest(const void *data, size_t len, char out[72])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	store_digest_format(md, out);
}

int store_blob_read(store *s, const char *digest, size_t max, char **ret_data, size_t *ret_len,
		    ad_error **err)
{
	if (!store_digest_valid(digest))
		return ad_fail(err, AD_E_INVALID, "invalid digest \"%s\"", digest ? digest : "");
	if (ad_read_file(s->blobs_fd, digest + 7, max, ret_data, ret_len, err) < 0)
		return ad_error_wrap(err, "blob %s", digest);
	return 0;
}

/* Across processes (agentd-fetch runs one per pull): an exclusive flock on
 * tmp/ingest-<hex>.lock. The file stays (unlinking it would let a third
 * process lock a new inode while the second waits on the old one); the
 * tmp/ cleanup removes it once no agentd-fetch runs. -1 if it cannot be
 * opened: then only this process is excluded, and the worst case is a
 * second download of the blob. */
static int ingest_lock(store *s, const char *key)
{
	const char *hex = strchr(key, ':');
	_cleanup_free_ char *name = ad_asprintf("ingest-%s.lock", hex ? hex + 1 : key);
	int fd = openat(s->tmp_fd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

void store_inflight_claim(store *s, const char *digest)
{
	pthread_mutex_lock(&s->lock);
	for (;;) {
		store_inflight *f = s->inflight;
		while (f && strcmp(f->digest, digest) != 0)
			f = f->next;
		if (!f)
			break;
		pthread_cond_wait(&s->cond, &s->lock);
	}
	store_inflight *f = ad_malloc0(sizeof(*f));
	f->digest = ad_strdup(digest);
	f->lock_fd = -1;
	f->next = s->inflight;
	s->inflight = f;
	pthread_mutex_unlock(&s->lock);
	/* Outside the mutex: this may wait for a whole download elsewhere. The
	 * entry, already listed, keeps this process's other threads out. */
	f->lock_fd = ingest_lock(s, digest);
}

void store_inflight_release(store *s, const char *digest)
{
	pthread_mutex_lock(&s->lock);
	for (store_inflight **p = &s->inflight; *p; p = &(*p)->next) {
		if (strcmp((*p)->digest, digest) == 0) {
			store_inflight *f = *p;
			*p = f->next;
			if (f->lock_fd >= 0)
				close(f->lock_fd);
			free(f->digest);
			free(f);
			break;
		}
	}
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}
