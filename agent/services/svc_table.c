#include <string.h>

#include "services.h"

void svc_table_add(svc_table *t, const rpc_method *m)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->methods = ad_realloc(t->methods, t->cap * sizeof(*t->methods));
	}
	t->methods[t->n++] = *m;
}

const char *svc_table_own(svc_table *t, char *s)
{
	if (t->n_owned == t->cap_owned) {
		t->cap_owned = t->cap_owned ? t->cap_owned * 2 : 128;
		t->owned = ad_realloc(t->owned, t->cap_owned * sizeof(*t->owned));
	}
	t->owned[t->n_owned++] = s;
	return s;
}

void svc_table_free(svc_table *t)
{
	for (size_t i = 0; i < t->n_owned; i++)
		free(t->owned[i]);
	free(t->owned);
	free(t->methods);
	*t = (svc_table){0};
}
