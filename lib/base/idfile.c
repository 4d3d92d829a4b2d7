/* The entries of /etc/passwd and /etc/group texts (an image's, read from its
 * rootfs): the CRI's run_as_username and a Dockerfile's USER both resolve
 * names through them, never through the host's NSS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

int ad_id_file_each(const char *text, int (*fn)(char **fields, void *arg), void *arg)
{
	for (const char *line = text; line && *line;) {
		size_t len = strcspn(line, "\n");
		char buf[1024];
		snprintf(buf, sizeof(buf), "%.*s", (int)(len < sizeof(buf) ? len : sizeof(buf) - 1),
			 line);
		line += len + (line[len] == '\n');
		/* Empty fields count ("user::1000:100": no password). */
		char *fields[AD_ID_FIELDS] = {0};
		char *p = buf;
		for (int i = 0; i < AD_ID_FIELDS && p; i++)
			fields[i] = strsep(&p, ":");
		if (!fields[0] || !*fields[0] || !fields[2] || !*fields[2])
			continue;
		int r = fn(fields, arg);
		if (r)
			return r;
	}
	return 0;
}

typedef struct id_find {
	const char *key;
	bool by_id;
	long id, gid;
	char *name;
} id_find;

static int match_entry(char **fields, void *arg)
{
	id_find *f = arg;
	if (strcmp(f->by_id ? fields[2] : fields[0], f->key) != 0)
		return 0;
	f->id = strtol(fields[2], NULL, 10);
	f->gid = fields[3] && *fields[3] ? strtol(fields[3], NULL, 10) : -1;
	f->name = ad_strdup(fields[0]);
	return 1;
}

int ad_id_file_find(const char *text, const char *key, bool by_id, long *ret_id, long *ret_gid,
		    char **ret_name)
{
	id_find f = {.key = key, .by_id = by_id};
	if (ad_id_file_each(text, match_entry, &f) == 0)
		return -1;
	*ret_id = f.id;
	if (ret_gid)
		*ret_gid = f.gid;
	if (ret_name)
		*ret_name = f.name;
	else
		free(f.name);
	return 0;
}
