/* config_fuzz.c — libFuzzer target for agentd's config file (INI through
 * libinih, then validation): any text loads or is refused with a
 * file:line message; nothing crashes or leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = ad_strndup((const char *)data, size);
	cfg_config cfg;
	ad_error *err = NULL;
	cfg_init(&cfg);
	if (cfg_load_string(&cfg, text, "fuzz.conf", &err) < 0 || cfg_validate(&cfg, &err) < 0) {
		if (!err || !err->message[0])
			abort(); /* a refusal says why */
		ad_error_free(&err);
	}
	cfg_free(&cfg);
	free(text);
	return 0;
}
