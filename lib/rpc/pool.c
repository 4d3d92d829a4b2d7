/* pool.c — libadrpc's worker pool (see pool.h). A worker runs a call's
 * handler, puts the call on the ready list and wakes the loop through an
 * eventfd, written only when the list was empty: one wakeup per batch. */
#include "pool.h"

#include <errno.h>
#include <event2/event.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define POOL_IDLE_S 10
#define POOL_MIN_CAP 64 /* extra workers: up to max(this, 4 x permanent) in all */

struct pool_worker {
	rpc_pool *pool;
	unsigned idx;
	pthread_t th;
	bool started; /* joinable until joined */
	bool exited;
};

void pool_notify(rpc_pool *p, rpc_call *call)
{
	pthread_mutex_lock(&p->mu);
	if (!call->in_ready) {
		call->in_ready = true;
		call_ref(call);
		bool was_empty = !p->ready;
		call->ready_next = p->ready;
		p->ready = call;
		if (was_empty) {
			uint64_t one = 1;
			ssize_t r = write(p->ready_fd, &one, sizeof(one));
			(void)r;
		}
	}
	pthread_mutex_unlock(&p->mu);
}

static void *pool_worker_main(void *arg)
{
	pool_worker *w = arg;
	rpc_pool *p = w->pool;
	bool extra = w->idx >= p->permanent;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->job_head && !p->stop) {
			p->idle++;
			int rc = 0;
			if (extra) {
				struct timespec ts;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += POOL_IDLE_S;
				rc = pthread_cond_timedwait(&p->job_cond, &p->mu, &ts);
			} else {
				pthread_cond_wait(&p->job_cond, &p->mu);
			}
			p->idle--;
			if (rc == ETIMEDOUT && !p->job_head && !p->stop) {
				w->exited = true;
				p->alive--;
				pthread_mutex_unlock(&p->mu);
				/* The pool shrinks after a busy spell: give back
				 * what the handlers freed. */
				malloc_trim(0);
				return NULL;
			}
		}
		if (p->stop)
			break;
		rpc_call *call = p->job_head;
		p->job_head = call->job_next;
		if (!p->job_head)
			p->job_tail = NULL;
		p->njobs--;
		pthread_mutex_unlock(&p->mu);
		call_run(call);
		pool_notify(p, call);
		if (call->after_fn)
			call->after_fn(call->after_arg);
		call_unref(call); /* the job's reference */
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Under p->mu. Returns 0 or -1 (no slot, or pthread_create failed). */
static int pool_spawn(rpc_pool *p)
{
	for (unsigned i = 0; i < p->nslots; i++) {
		pool_worker *w = &p->slots[i];
		if (w->started && !w->exited)
			continue;
		if (w->started) {
			/* It has returned (exited is set just before). */
			pthread_join(w->th, NULL);
			w->started = false;
		}
		w->pool = p;
		w->idx = i;
		w->exited = false;
		if (pthread_create(&w->th, NULL, pool_worker_main, w) != 0)
			return -1;
		w->started = true;
		p->alive++;
		return 0;
	}
	return -1;
}

void pool_submit(rpc_pool *p, rpc_call *call)
{
	pthread_mutex_lock(&p->mu);
	call->job_next = NULL;
	if (p->job_tail)
		p->job_tail->job_next = call;
	else
		p->job_head = call;
	p->job_tail = call;
	p->njobs++;
	/* Every worker busy: add one rather than make this call wait. */
	if (p->njobs > p->idle)
		pool_spawn(p);
	pthread_cond_signal(&p->job_cond);
	pthread_mutex_unlock(&p->mu);
}

static void pool_ready_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	rpc_pool *p = arg;
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));
	(void)r;
	/* The batch is linked through batch_next, which only the loop touches:
	 * once in_ready is clear a worker may put a call on the ready list
	 * again, and that rewrites ready_next. */
	rpc_call *batch = NULL;
	pthread_mutex_lock(&p->mu);
	for (rpc_call *x = p->ready; x; x = x->ready_next) {
		x->in_ready = false;
		x->batch_next = batch;
		batch = x;
	}
	p->ready = NULL;
	pthread_mutex_unlock(&p->mu);
	p->ready_fn(batch, p->ready_arg);
	while (batch) {
		rpc_call *call = batch;
		batch = call->batch_next;
		call_unref(call); /* the notification's reference */
	}
}

int pool_init(rpc_pool *p, struct event_base *base, unsigned permanent,
	      void (*ready_fn)(rpc_call *batch, void *arg), void *arg, ad_error **err)
{
	*p = (rpc_pool){.permanent = permanent, .ready_fd = -1, .ready_fn = ready_fn,
			.ready_arg = arg};
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->job_cond, &ca);
	pthread_condattr_destroy(&ca);
	p->nslots = permanent * 4 > POOL_MIN_CAP ? permanent * 4 : POOL_MIN_CAP;
	if (p->nslots < permanent)
		p->nslots = permanent;
	/* Workers start as jobs arrive (pool_submit). */
	p->slots = ad_malloc0(sizeof(*p->slots) * p->nslots);
	p->ready_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->ready_fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "eventfd");
	p->ready_ev = event_new(base, p->ready_fd, EV_READ | EV_PERSIST, pool_ready_cb, p);
	if (!p->ready_ev || event_add(p->ready_ev, NULL) != 0)
		return ad_fail(err, AD_E_INTERNAL, "event_new failed");
	return 0;
}

void pool_destroy(rpc_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->job_cond);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nslots; i++)
		if (p->slots[i].started)
			pthread_join(p->slots[i].th, NULL);
	free(p->slots);
	p->slots = NULL;
	while (p->job_head) {
		rpc_call *call = p->job_head;
		p->job_head = call->job_next;
		call_unref(call);
	}
	while (p->ready) {
		rpc_call *call = p->ready;
		p->ready = call->ready_next;
		call_unref(call);
	}
	if (p->ready_ev)
		event_free(p->ready_ev);
	p->ready_ev = NULL;
	if (p->ready_fd >= 0)
		close(p->ready_fd);
	p->ready_fd = -1;
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->job_cond);
}
