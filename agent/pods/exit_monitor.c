/* How a container's exit gets recorded: when a query finds its process gone
 * (mgr_ctr_refresh), when the shim's pidfd the monitor thread waits on
 * becomes readable (the exit watches), or at the monitor's periodic poll of
 * the containers it does not watch. Whichever sees it first records it and
 * announces STOPPED. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <sqlite3.h>

#include "pods_int.h"

const char *const mgr_exit_reasons[MGR_EXIT_REASONS] = {"Completed", "Error", "OOMKilled",
							"ShimDied", "StartError"};

void mgr_count_exit(mgr *m, unsigned reason)
{
	if (reason < MGR_EXIT_REASONS)
		atomic_fetch_add(&m->exits[reason], 1);
}

uint64_t mgr_infra_shim_deaths(mgr *m)
{
	return atomic_load(&m->infra_shim_deaths);
}

void mgr_exit_counts(mgr *m, uint64_t ret[MGR_EXIT_REASONS])
{
	for (size_t i = 0; i < MGR_EXIT_REASONS; i++)
		ret[i] = atomic_load(&m->exits[i]);
}

int mgr_ctr_record_exit(mgr *m, mgr_ctr *c, const rt_state *st, ad_error **err)
{
	unsigned why = st->shim_died	    ? MGR_EXIT_SHIM_DIED
		       : st->oom_killed	    ? MGR_EXIT_OOM_KILLED
		       : st->exit_code == 0 ? MGR_EXIT_COMPLETED
					    : MGR_EXIT_ERROR;
	const char *reason = mgr_exit_reasons[why];
	/* Its exit status died with the shim (the runtime killed whatever
	 * of the container was left). */
	const char *message =
	    st->shim_died ? "agentd-shim died; every process of the container was killed and "
			    "its exit code is unknown"
			  : NULL;
	int64_t finished = st->finished_at ? st->finished_at : ad_now_ns();
	/* The exit watch, a status poll and StopContainer may all see the same
	 * exit: only the one whose update moves the row to EXITED records it and
	 * announces STOPPED. */
	int changed = mgr_db_exec_changes(
	    m, err,
	    "UPDATE containers SET state = ?2, finished_ns = ?3, exit_code = ?4,"
	    " reason = ?5, message = coalesce(?6, message) WHERE id = ?1 AND state <> ?2",
	    "siiiss", c->id, (int64_t)MGR_CTR_EXITED, finished, (int64_t)st->exit_code, reason,
	    message);
	if (changed < 0 && (*err)->code == AD_E_RESOURCE) {
		/* A full disk: the answer is still the runtime's truth; the row
		 * follows at a later look, once there is room (the runtime keeps
		 * the exit and the row still says it runs). */
		ad_warn("container %s: exit not recorded yet: %s", c->id, (*err)->message);
		ad_error_free(err);
		changed = 0;
	}
	if (changed < 0)
		return -1;
	c->state = MGR_CTR_EXITED;
	if (changed > 0) {
		mgr_count_exit(m, why);
		mgr_event_publish(m, c->id, c->pod_id, MGR_EV_STOPPED);
	}
	c->finished_ns = finished;
	c->exit_code = st->exit_code;
	free(c->reason);
	c->reason = ad_strdup(reason);
	if (message) {
		free(c->message);
		c->message = ad_strdup(message);
	}
	return 0;
}

/* The shim and its state are gone (a reboot): the exit is unknown. */
int mgr_ctr_record_state_lost(mgr *m, mgr_ctr *c, ad_error **err)
{
	rt_state st = {.exit_code = 255};
	if (mgr_ctr_record_exit(m, c, &st, err) < 0)
		return -1;
	free(c->message);
	c->message = ad_strdup("container state lost");
	return mgr_db_exec(m, err, "UPDATE containers SET message = ?2 WHERE id = ?1", "ss", c->id,
			   c->message);
}

/* A created container whose shim or init is gone can never start: its end
 * is recorded as a running one's would be (a dead shim as ShimDied). Not
 * while an operation holds it: a start records its own outcome. */
static int refresh_created(mgr *m, mgr_ctr *c, ad_error **err)
{
	if (!mgr_try_hold(m, c->id))
		return 0;
	/* What was read before the hold may have changed meanwhile. */
	mgr_ctr *now = NULL;
	int r = mgr_ctr_load(m, c->id, &now, err);
	if (r == 0) {
		mgr_ctr was = *c;
		*c = *now;
		*now = was;
		mgr_ctr_free(now);
	}
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	/* No runtime state: a pod's removal has released it and is about to
	 * drop the row (until then it reads created, as containerd's does; a
	 * reboot's loss is start-up's to record). */
	if (r == 0 && c->state == MGR_CTR_CREATED && rt_open(m->rt, c->id, &rc, &e) == 0 &&
	    !rt_init_alive(rc)) {
		rt_state st;
		r = rt_get_state(rc, &st, err);
		if (r == 0 && st.status == RT_STATUS_STOPPED)
			r = mgr_ctr_record_exit(m, c, &st, err);
	}
	rt_container_free(rc);
	mgr_release(m, c->id);
	return r;
}

/* Records the exit of a container that stopped unseen; with ret_stats, also
 * reads the cgroup stats of one still running (timestamp_ns 0 if not). */
int mgr_ctr_refresh_stats(mgr *m, mgr_ctr *c, rt_stats *ret_stats, ad_error **err)
{
	if (c->state == MGR_CTR_CREATED && m->rt)
		return refresh_created(m, c, err);
	if (c->state != MGR_CTR_RUNNING || !m->rt)
		return 0;
	if (rt_running_stats(m->rt, c->id, ret_stats))
		return 0; /* most refreshes: still running, asked through kept handles */
	rt_container *rc = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (rt_open(m->rt, c->id, &rc, &e) < 0)
		return mgr_ctr_record_state_lost(m, c, err);
	/* Most refreshes find it still running: no need to ask its shim. */
	rt_state st = {.status = RT_STATUS_RUNNING};
	int r = rt_init_alive(rc) ? 0 : rt_get_state(rc, &st, err);
	if (r == 0 && st.status == RT_STATUS_STOPPED)
		r = mgr_ctr_record_exit(m, c, &st, err);
	else if (r == 0 && ret_stats && rt_get_stats(rc, ret_stats, NULL) < 0)
		ret_stats->timestamp_ns = 0; /* exited meanwhile: no numbers */
	rt_container_free(rc);
	return r;
}

int mgr_ctr_refresh(mgr *m, mgr_ctr *c, ad_error **err)
{
	return mgr_ctr_refresh_stats(m, c, NULL, err);
}

struct exit_watch {
	int fd;	   /* the shim's pidfd */
	int ns_fd; /* the container's mount namespace, or -1 (rt_container_mnt_ns_fd) */
	char id[72];
	struct exit_watch *next;
};

int mgr_ctr_watch_init(mgr *m, ad_error **err)
{
	m->exit_epoll = epoll_create1(EPOLL_CLOEXEC);
	m->exit_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (m->exit_epoll < 0 || m->exit_wake < 0 ||
	    epoll_ctl(m->exit_epoll, EPOLL_CTL_ADD, m->exit_wake, &ev) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "exit watches");
	return 0;
}

/* From now on the monitor records the container's exit when it happens.
 * exit_fd (rt_container_exit_fd, taken over) must be taken while the shim is
 * known alive and added once the DB says running: an exit in between makes
 * it readable at once, and the monitor's query then records it. */
/* ns_fd (taken over, may be -1): the container's mount namespace, held until
 * its exit is recorded and announced, so that the init's exit does not wait
 * for that namespace's teardown (rt_container_mnt_ns_fd). */
void mgr_ctr_watch_exit(mgr *m, const char *id, int fd, int ns_fd)
{
	if (fd < 0 || m->exit_epoll < 0) {
		/* the next query or poll records the exit */
		ad_closep(&fd);
		ad_closep(&ns_fd);
		return;
	}
	struct exit_watch *w = ad_malloc0(sizeof(*w));
	w->fd = fd;
	w->ns_fd = ns_fd;
	snprintf(w->id, sizeof(w->id), "%s", id);
	pthread_mutex_lock(&m->watch_lock);
	w->next = m->watches;
	m->watches = w;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
	if (epoll_ctl(m->exit_epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
		m->watches = w->next;
		close(fd);
		ad_closep(&ns_fd);
		free(w);
	}
	pthread_mutex_unlock(&m->watch_lock);
}

static void unwatch(mgr *m, struct exit_watch *w)
{
	pthread_mutex_lock(&m->watch_lock);
	for (struct exit_watch **p = &m->watches; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	epoll_ctl(m->exit_epoll, EPOLL_CTL_DEL, w->fd, NULL);
	pthread_mutex_unlock(&m->watch_lock);
	close(w->fd);
	ad_closep(&w->ns_fd);
	free(w);
}

void mgr_ctr_wait_exits(mgr *m, int timeout_ms)
{
	int64_t deadline = ad_monotonic_ns() + (int64_t)timeout_ms * 1000000;
	for (;;) {
		int64_t left = (deadline - ad_monotonic_ns()) / 1000000;
		if (left <= 0)
			return;
		struct epoll_event evs[16];
		int n = epoll_wait(m->exit_epoll, evs, 16, (int)left);
		if (n < 0 && errno != EINTR)
			return;
		for (int i = 0; i < n; i++) {
			struct exit_watch *w = evs[i].data.ptr;
			if (!w) {
				uint64_t v;
				if (read(m->exit_wake, &v, sizeof(v)) < 0) {
				}
				return;
			}
			char id[72];
			snprintf(id, sizeof(id), "%s", w->id);
			rt_reap_exit_fd(w->fd);
			int ns_fd = w->ns_fd;
			w->ns_fd = -1;
			unwatch(m, w);
			/* A query records the exit (and sends its event). */
			mgr_ctr *c = NULL;
			_cleanup_error_ ad_error *e = NULL;
			if (mgr_ctr_get(m, id, &c, &e) < 0 && e->code != AD_E_NOT_FOUND)
				ad_debug("container %s: %s", id, e->message);
			mgr_ctr_free(c);
			/* Only now, with the exit announced: the namespace's teardown. */
			ad_closep(&ns_fd);
		}
	}
}

void mgr_ctr_watch_wake(mgr *m)
{
	uint64_t one = 1;
	if (m->exit_wake >= 0 && write(m->exit_wake, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake is pending anyway */
	}
}

void mgr_ctr_watch_close(mgr *m)
{
	while (m->watches) {
		struct exit_watch *w = m->watches;
		m->watches = w->next;
		close(w->fd);
		ad_closep(&w->ns_fd);
		free(w);
	}
	if (m->exit_epoll >= 0)
		close(m->exit_epoll);
	if (m->exit_wake >= 0)
		close(m->exit_wake);
	m->exit_epoll = m->exit_wake = -1;
}

void mgr_ctr_poll(mgr *m)
{
	mgr_ctr **v = NULL;
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_query(m, "SELECT " CTR_COLS " FROM containers WHERE state = 2", NULL, &v, NULL,
			  &e) < 0) {
		ad_warn("container monitor: %s", e->message);
		return;
	}
	for (mgr_ctr **c = v; *c; c++) {
		ad_error *e2 = NULL;
		if (mgr_ctr_refresh(m, *c, &e2) < 0)
			ad_debug("container %s: %s", (*c)->id, e2->message);
		ad_error_free(&e2);
	}
	mgr_ctrs_free(v);
}

void *mgr_monitor_main(void *arg)
{
	mgr *m = arg;
	for (;;) {
		/* Started containers' exits are recorded as they happen; the rest
		 * (say, a watch that could not be set) once per interval. */
		mgr_ctr_wait_exits(m, MGR_MONITOR_INTERVAL_MS);
		pthread_mutex_lock(&m->ev_lock);
		bool stopping = m->stopping;
		pthread_mutex_unlock(&m->ev_lock);
		if (stopping)
			break;
		mgr_ctr_poll(m);
	}
	return NULL;
}
