/* Ids: new random ones, and the holds that keep one operation per pod or
 * container at a time (a stop and a remove of the same pod cannot interleave). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "pods_int.h"

/* busy_lock held. */
static bool held(const mgr *m, const char *id)
{
	for (size_t i = 0; i < m->n_busy; i++)
		if (strcmp(m->busy[i], id) == 0)
			return true;
	return false;
}

/* busy_lock held. */
static void take(mgr *m, const char *id)
{
	if (m->n_busy == m->cap_busy) {
		m->cap_busy = m->cap_busy ? 2 * m->cap_busy : 16;
		m->busy = ad_realloc(m->busy, m->cap_busy * sizeof(char *));
	}
	m->busy[m->n_busy++] = ad_strdup(id);
}

void mgr_hold(mgr *m, const char *id)
{
	pthread_mutex_lock(&m->busy_lock);
	while (held(m, id))
		pthread_cond_wait(&m->busy_cond, &m->busy_lock);
	take(m, id);
	pthread_mutex_unlock(&m->busy_lock);
}

bool mgr_try_hold(mgr *m, const char *id)
{
	pthread_mutex_lock(&m->busy_lock);
	bool free_now = !held(m, id);
	if (free_now)
		take(m, id);
	pthread_mutex_unlock(&m->busy_lock);
	return free_now;
}

void mgr_release(mgr *m, const char *id)
{
	pthread_mutex_lock(&m->busy_lock);
	for (size_t i = 0; i < m->n_busy; i++) {
		if (strcmp(m->busy[i], id) == 0) {
			free(m->busy[i]);
			m->busy[i] = m->busy[--m->n_busy];
			break;
		}
	}
	pthread_cond_broadcast(&m->busy_cond);
	pthread_mutex_unlock(&m->busy_lock);
}

char *mgr_new_id(void)
{
	uint8_t b[32];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n > 0)
			got += (size_t)n;
		else if (errno != EINTR)
			abort();
	}
	char *s = ad_malloc0(65);
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(s + 2 * i, 3, "%02x", b[i]);
	return s;
}
