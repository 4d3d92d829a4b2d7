/* rt_stats.c — rt_running_stats: whether running containers still run, and
 * their cgroup numbers, through handles kept between calls. Periodic readers
 * (the metrics scrape, CRI stats, the lists' liveness look) ask about every
 * running container each time; opening the state dir, two pidfds with their
 * /proc/PID/stat start-time checks and ~14 cgroup files by path for each was
 * most of a scrape's CPU (path walks in the kernel). A handle costs about 20
 * fds, so they are only kept while the fd limit leaves room. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cgroup_internal.h"
#include "rt_internal.h"

struct rt_running {
	uint64_t key; /* id_key(id): most entries are told apart without strcmp */
	rt_container *c;
	int dir_fd;	      /* O_PATH: where the shim writes the exit file */
	int init_fd, shim_fd; /* pidfds: readable once the process has exited */
};

/* The state dir, two pidfds and the cgroup files at most. */
#define RUNNING_FDS (3 + CG_STAT_SLOTS)

static uint64_t id_key(const char *id)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a */
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	return h;
}

static void running_free(struct rt_running *h)
{
	if (!h)
		return;
	ad_closep(&h->dir_fd);
	ad_closep(&h->init_fd);
	ad_closep(&h->shim_fd);
	rt_container_free(h->c);
	free(h);
}

static struct rt_running *running_open(rt_runtime *rt, const char *id)
{
	rt_container *c = NULL;
	if (rt_open(rt, id, &c, NULL) < 0)
		return NULL;
	struct rt_running *h = ad_malloc0(sizeof(*h));
	h->key = id_key(id);
	h->c = c;
	h->dir_fd = open(c->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	/* Checked once: from here on the pidfds pin these very processes. */
	h->init_fd = rt_pidfd_of(c->init_pid, c->init_start);
	h->shim_fd = rt_pidfd_of(c->shim_pid, c->shim_start);
	if (h->dir_fd < 0 || h->init_fd < 0 || h->shim_fd < 0) {
		running_free(h);
		return NULL;
	}
	return h;
}

/* rt_init_alive's question: no exit recorded, init and shim both alive (a
 * live init under a dead shim is no running container). */
static bool running_alive(const struct rt_running *h)
{
	if (faccessat(h->dir_fd, RT_FILE_EXIT, F_OK, 0) == 0 || errno != ENOENT)
		return false;
	struct pollfd p[2] = {{.fd = h->init_fd, .events = POLLIN},
			      {.fd = h->shim_fd, .events = POLLIN}};
	return poll(p, 2, 0) == 0;
}

/* Takes the container's handle out of the cache (one user at a time). */
static struct rt_running *running_take(rt_runtime *rt, const char *id)
{
	struct rt_running *h = NULL;
	uint64_t key = id_key(id);
	pthread_mutex_lock(&rt->running_lock);
	for (size_t i = 0; i < rt->n_running; i++)
		if (rt->running[i]->key == key && strcmp(rt->running[i]->c->id, id) == 0) {
			h = rt->running[i];
			rt->running[i] = rt->running[--rt->n_running];
			rt->running_fds -= RUNNING_FDS;
			break;
		}
	pthread_mutex_unlock(&rt->running_lock);
	return h;
}

/* A quarter of the fd limit (read once: the limit is set before start). */
static size_t fd_budget(void)
{
	static atomic_size_t budget;
	size_t b = atomic_load(&budget);
	if (b)
		return b;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		b = 1 << 20;
	else
		b = (size_t)rl.rlim_cur / 4 + 1;
	atomic_store(&budget, b);
	return b;
}

/* Back into the cache, unless another caller put one there meanwhile or
 * the fds are needed more elsewhere. */
static void running_put(rt_runtime *rt, struct rt_running *h)
{
	size_t budget = fd_budget();
	pthread_mutex_lock(&rt->running_lock);
	bool keep = rt->running_fds + RUNNING_FDS <= budget;
	for (size_t i = 0; keep && i < rt->n_running; i++)
		keep =
		    rt->running[i]->key != h->key || strcmp(rt->running[i]->c->id, h->c->id) != 0;
	if (keep) {
		rt->running = ad_realloc(rt->running, (rt->n_running + 1) * sizeof(*rt->running));
		rt->running[rt->n_running++] = h;
		rt->running_fds += RUNNING_FDS;
		h = NULL;
	}
	pthread_mutex_unlock(&rt->running_lock);
	running_free(h);
}

bool rt_running_stats(rt_runtime *rt, const char *id, rt_stats *ret)
{
	struct rt_running *h = running_take(rt, id);
	if (!h && !(h = running_open(rt, id)))
		return false;
	if (!running_alive(h)) {
		running_free(h);
		return false;
	}
	if (ret && (!h->c->cg || cg_stats(h->c->cg, ret, NULL) < 0))
		ret->timestamp_ns = 0; /* no numbers (its cgroup is gone) */
	running_put(rt, h);
	return true;
}

void rt_running_forget(rt_runtime *rt, const char *id)
{
	running_free(running_take(rt, id));
}

void rt_running_free_all(rt_runtime *rt)
{
	for (size_t i = 0; i < rt->n_running; i++)
		running_free(rt->running[i]);
	free(rt->running);
	rt->running = NULL;
	rt->n_running = rt->running_fds = 0;
}
