/* What the manager keeps about the node as a whole rather than one pod: the
 * pod CIDR the caller gave (kept in the state DB, so a restart keeps it; a
 * kubelet sends it again only when it changes) and the last CPU sample of
 * each container and pod, from which a usage rate is computed. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pods_int.h"

/* ---- pod CIDR ---------------------------------------------------------------- */
int mgr_pod_cidr_set(mgr *m, const char *cidr, ad_error **err)
{
	return mgr_db_exec(m, err,
			   "INSERT INTO node_settings (key, value) VALUES ('pod_cidr', ?1)"
			   " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
			   "s", cidr);
}

static void *text_row(sqlite3_stmt *st)
{
	return mgr_col_text(st, 0);
}

static void strv_free_all(void *v)
{
	mgr_strv_free(v);
}

int mgr_pod_cidr_get(mgr *m, char **ret, ad_error **err)
{
	char **v = NULL;
	if (mgr_query_rows(m, "SELECT value FROM node_settings WHERE key = 'pod_cidr'", NULL,
			   text_row, strv_free_all, "state DB: node settings", (void ***)&v, NULL,
			   err) < 0)
		return -1;
	*ret = ad_strdup(v[0] ? v[0] : "");
	mgr_strv_free(v);
	return 0;
}

/* ---- CPU usage rate ---------------------------------------------------------- */
/* Two callers asking within this interval (kubelet's summary and a
 * ListContainerStats of its own, say) get the same rate: one over a few
 * milliseconds would say little but scheduling noise. */
#define CPU_SAMPLE_MIN_INTERVAL_NS 1000000000LL
/* Samples not asked for in this long belong to objects that are gone. */
#define CPU_SAMPLE_TTL_NS (10 * 60 * 1000000000LL)

struct cpu_sample {
	char id[72];
	uint64_t usage_ns;
	int64_t at_ns;	   /* when the usage was read (wall clock) */
	int64_t touched_ns; /* monotonic: last asked for */
	uint64_t rate;	    /* the last rate computed */
	bool known;	    /* rate was computed (a second sample came) */
};

bool mgr_cpu_nano_cores(mgr *m, const char *id, uint64_t usage_ns, int64_t at_ns, uint64_t *ret)
{
	int64_t now = ad_monotonic_ns();
	bool known;
	pthread_mutex_lock(&m->cpu_lock);
	struct cpu_sample *s = NULL;
	size_t keep = 0;
	for (size_t i = 0; i < m->n_cpu_samples; i++) {
		struct cpu_sample *c = &m->cpu_samples[i];
		if (strcmp(c->id, id) != 0 && now - c->touched_ns > CPU_SAMPLE_TTL_NS)
			continue;
		m->cpu_samples[keep] = *c;
		if (strcmp(c->id, id) == 0)
			s = &m->cpu_samples[keep];
		keep++;
	}
	m->n_cpu_samples = keep;
	if (!s) {
		m->cpu_samples = ad_realloc(m->cpu_samples, (keep + 1) * sizeof(*s));
		s = &m->cpu_samples[m->n_cpu_samples++];
		*s = (struct cpu_sample){0};
		snprintf(s->id, sizeof(s->id), "%s", id);
		s->usage_ns = usage_ns;
		s->at_ns = at_ns;
	} else if (at_ns - s->at_ns >= CPU_SAMPLE_MIN_INTERVAL_NS) {
		/* As containerd: the usage between the last two samples over their
		 * interval; 0 after a counter that went back (a restarted
		 * container). */
		s->rate = usage_ns >= s->usage_ns ? (uint64_t)((double)(usage_ns - s->usage_ns) *
							       1e9 / (double)(at_ns - s->at_ns))
						  : 0;
		s->known = true;
		s->usage_ns = usage_ns;
		s->at_ns = at_ns;
	} else if (at_ns < s->at_ns) { /* the wall clock was set back: start over */
		s->usage_ns = usage_ns;
		s->at_ns = at_ns;
	}
	*ret = s->rate;
	known = s->known;
	s->touched_ns = now;
	pthread_mutex_unlock(&m->cpu_lock);
	return known;
}
