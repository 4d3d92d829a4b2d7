/* unpack_fuzz.c — libFuzzer target for store_unpack_layer(): arbitrary bytes
 * as a layer stream, extracted into a scratch directory that is emptied
 * after each input. Whatever the input, nothing may appear outside it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unpack.h"

struct src {
	const uint8_t *p;
	size_t len, pos;
	unsigned calls;
};

static ssize_t fuzz_read(void *userdata, void *buf, size_t len, ad_error **err)
{
	(void)err;
	struct src *s = userdata;
	/* Vary the chunking with the input so boundaries move around. */
	size_t want = s->len ? 1 + (s->p[s->calls++ % s->len] * 37u) : 0;
	if (want > len)
		want = len;
	if (want > s->len - s->pos)
		want = s->len - s->pos;
	if (want)
		memcpy(buf, s->p + s->pos, want);
	s->pos += want;
	return (ssize_t)want;
}

static char base[64];

static void remove_base(void)
{
	rmdir(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!base[0]) {
		/* tmpfs when there is one: on ext4 most of an input's time went
		 * to allocating and freeing inodes, a quarter of the speed. */
		snprintf(base, sizeof(base), "/dev/shm/unpack_fuzz.XXXXXX");
		if (!mkdtemp(base)) {
			snprintf(base, sizeof(base), "/tmp/unpack_fuzz.XXXXXX");
			if (!mkdtemp(base))
				abort();
		}
		atexit(remove_base);
	}
	char *dest = ad_asprintf("%s/root", base);
	if (mkdir(dest, 0755) < 0)
		abort();
	struct src s = {.p = data, .len = size};
	store_unpack_opts opts = {.max_entries = 1000};
	store_unpack_result res;
	ad_error *err = NULL;
	if (store_unpack_layer(dest, fuzz_read, &s, &opts, &res, &err) < 0)
		ad_error_free(&err);
	if (ad_remove_tree(dest, &err) < 0)
		abort();
	free(dest);
	return 0;
}
