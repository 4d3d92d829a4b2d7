/* ctl_config_fuzz.c — libFuzzer target for agentctl's config loader
 * (ctl/yaml.c: crictl-style JSON or YAML, with anchors and aliases): any
 * file loads as a JSON object or is refused with a message (sysexits
 * EX_DATAERR); a loaded tree dumps back as JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sysexits.h>
#include <unistd.h>

#include "ctl.h"

/* agentctl's message sink lives in its main.c, which is not linked here. */
void ctl_warnx(const char *fmt, ...)
{
	(void)fmt;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = memfd_create("ctl_config_fuzz", MFD_CLOEXEC);
		if (fd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	json_t *obj = NULL, *marks = NULL;
	int r = ctl_load_config(path, &obj, &marks);
	if (r == 0) {
		if (!json_is_object(obj))
			abort();
		char *js = json_dumps(obj, JSON_COMPACT);
		free(js);
		json_decref(obj);
		json_decref(marks);
	} else if (r != EX_DATAERR) {
		abort(); /* the file is there: only its content can be wrong */
	}
	return 0;
}
