/* manifest_fuzz.c — libFuzzer target for what a pull makes of a registry's
 * JSON (store/pull.c): an index or manifest list (platform choice) and an
 * image manifest with its config (the layer list, store_manifest_layers).
 * Input: the manifest or index, a NUL byte, the config. Anything parses or
 * is refused with a message; nothing crashes or leaks. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t mlen = nul ? (size_t)(nul - data) : size;
	json_error_t je;
	json_t *manifest = json_loadb((const char *)data, mlen, 0, &je);
	json_t *config = nul ? json_loadb((const char *)nul + 1, size - mlen - 1, 0, &je) : NULL;
	if (manifest) {
		/* As an index: the platforms a pull may pick. */
		static const char *const arch[] = {"amd64", "arm64", "arm"};
		for (size_t i = 0; i < 3; i++) {
			json_t *m = store_choose_platform(json_object_get(manifest, "manifests"),
							  "linux", arch[i], i == 2 ? "v7" : NULL);
			if (m)
				(void)store_digest_valid(json_string_value(json_object_get(m, "digest")));
		}
		/* As an image manifest with its config. */
		store_layer_rec *v = NULL;
		size_t n = 0;
		ad_error *err = NULL;
		if (store_manifest_layers("fuzz", manifest, config, &v, &n, &err) == 0) {
			for (size_t i = 0; i < n; i++)
				if (!store_digest_valid(v[i].digest) || !store_digest_valid(v[i].diff_id))
					abort(); /* accepted means checked */
			store_layer_recs_free(v, n);
		} else {
			if (!err || !err->message[0])
				abort();
			ad_error_free(&err);
		}
	}
	json_decref(manifest);
	json_decref(config);
	return 0;
}
