/* pool.h — private to libadrpc: the worker pool that runs the handlers of
 * calls that are not `on_loop`, and the ready list through which their
 * results come back to the event loop (one eventfd wakeup per batch). */
#ifndef AGENTD_RPC_POOL_H
#define AGENTD_RPC_POOL_H

#include "core.h"

struct event_base;
struct event;

typedef struct pool_worker pool_worker;

/* Workers: when a job is queued and none is idle, another is started (up to
 * max(64, 4 x permanent)); the first `permanent` stay for good, the extra
 * ones leave after 10 s without work. Slow handlers (a long exec, a pull)
 * thus never starve quick calls, while an idle server keeps only the
 * permanent ones, and a server that only runs on_loop handlers none. */
typedef struct rpc_pool {
	pthread_mutex_t mu;
	pthread_cond_t job_cond;
	rpc_call *job_head, *job_tail;
	bool stop;
	pool_worker *slots;
	unsigned nslots, permanent;
	unsigned alive, idle, njobs;
	rpc_call *ready;
	int ready_fd;
	struct event *ready_ev;
	/* Loop thread: a batch of ready calls, linked by batch_next. */
	void (*ready_fn)(rpc_call *batch, void *arg);
	void *ready_arg;
} rpc_pool;

int pool_init(rpc_pool *p, struct event_base *base, unsigned permanent,
	      void (*ready_fn)(rpc_call *batch, void *arg), void *arg, ad_error **err);
/* Loop thread: queues the call's handler; takes over one reference. */
void pool_submit(rpc_pool *p, rpc_call *call);
/* Any thread: puts the call on the ready list (once) and wakes the loop. */
void pool_notify(rpc_pool *p, rpc_call *call);
/* Stops and joins the workers; drops queued jobs and ready calls. */
void pool_destroy(rpc_pool *p);

#endif
