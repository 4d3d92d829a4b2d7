/* The container event ring the GetContainerEvents streams read. A thread may
 * hold what it publishes (mgr_events_hold) until it releases it: held events
 * keep their place in the order, and every later one waits behind them. */
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "pods_int.h"

/* This thread's held events (mgr_events_hold); beyond the array, events are
 * shown at once. */
static _Thread_local mgr *ev_hold_m;
static _Thread_local uint64_t ev_held[4];
static _Thread_local size_t n_ev_held;

/* Under ev_lock. */
static void events_show(mgr *m)
{
	uint64_t was = m->shown_seq;
	while (m->shown_seq < m->next_seq && !m->held[m->shown_seq % MGR_EVENT_RING])
		m->shown_seq++;
	if (m->shown_seq != was)
		pthread_cond_broadcast(&m->ev_cond);
}

void mgr_event_publish(mgr *m, const char *id, const char *pod_id, mgr_event_type type)
{
	pthread_mutex_lock(&m->ev_lock);
	uint64_t seq = m->next_seq++;
	mgr_event *e = &m->ring[seq % MGR_EVENT_RING];
	*e = (mgr_event){.seq = seq, .type = type, .at_ns = ad_now_ns()};
	snprintf(e->id, sizeof(e->id), "%s", id);
	snprintf(e->pod_id, sizeof(e->pod_id), "%s", pod_id ? pod_id : "");
	bool hold = ev_hold_m == m && n_ev_held < sizeof(ev_held) / sizeof(ev_held[0]);
	m->held[seq % MGR_EVENT_RING] = hold;
	if (hold)
		ev_held[n_ev_held++] = seq;
	else
		events_show(m);
	pthread_mutex_unlock(&m->ev_lock);
}

void mgr_events_hold(mgr *m)
{
	ev_hold_m = m;
}

void mgr_events_release(mgr *m)
{
	if (ev_hold_m != m)
		return;
	ev_hold_m = NULL;
	pthread_mutex_lock(&m->ev_lock);
	for (size_t i = 0; i < n_ev_held; i++)
		m->held[ev_held[i] % MGR_EVENT_RING] = false;
	n_ev_held = 0;
	events_show(m);
	pthread_mutex_unlock(&m->ev_lock);
}

uint64_t mgr_events_cursor(mgr *m)
{
	pthread_mutex_lock(&m->ev_lock);
	uint64_t c = m->shown_seq;
	pthread_mutex_unlock(&m->ev_lock);
	return c;
}

size_t mgr_events_wait(mgr *m, uint64_t *cursor, mgr_event *out, size_t max, int timeout_ms)
{
	struct timespec until = ad_monotonic_after_ms((unsigned)timeout_ms);
	pthread_mutex_lock(&m->ev_lock);
	while (m->shown_seq == *cursor && !m->stopping)
		if (pthread_cond_timedwait(&m->ev_cond, &m->ev_lock, &until) == ETIMEDOUT)
			break;
	if (m->shown_seq - *cursor > MGR_EVENT_RING)
		*cursor = m->shown_seq - MGR_EVENT_RING;
	size_t n = 0;
	while (*cursor < m->shown_seq && n < max)
		out[n++] = m->ring[(*cursor)++ % MGR_EVENT_RING];
	pthread_mutex_unlock(&m->ev_lock);
	return n;
}
