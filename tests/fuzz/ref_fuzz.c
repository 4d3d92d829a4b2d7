/* ref_fuzz.c — libFuzzer target for image references (store_ref_parse):
 * any string either parses or is refused with a message; a parsed
 * reference prints back to a string that parses to the same reference. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = ad_strndup((const char *)data, size);
	store_ref ref = {0};
	ad_error *err = NULL;
	if (store_ref_parse(s, &ref, &err) < 0) {
		if (!err || !err->message || !err->message[0])
			abort(); /* a refusal says why */
		ad_error_free(&err);
		free(s);
		return 0;
	}
	char *again = store_ref_string(&ref);
	store_ref ref2 = {0};
	if (store_ref_parse(again, &ref2, &err) < 0)
		abort(); /* what we print must parse */
	char *third = store_ref_string(&ref2);
	if (strcmp(again, third) != 0)
		abort(); /* and be a fixed point */
	free(third);
	free(again);
	store_ref_clear(&ref2);
	store_ref_clear(&ref);
	free(s);
	return 0;
}
