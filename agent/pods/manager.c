/* The pod manager: what it holds (config, the state DB, the runtime), open
 * (with the start-up reconcile and the exit monitor thread) and close. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pods_int.h"

void mgr_strv_free(char **v)
{
	ad_strv_free(v);
}

static char **split_dirs(const char *s)
{
	size_t n = 0;
	char **v = ad_malloc0(sizeof(char *));
	for (const char *p = s; p && *p;) {
		size_t len = strcspn(p, ":");
		if (len) {
			v = ad_realloc(v, (n + 2) * sizeof(char *));
			v[n++] = ad_strndup(p, len);
			v[n] = NULL;
		}
		p += len;
		if (*p == ':')
			p++;
	}
	return v;
}

int mgr_need_rt(mgr *m, ad_error **err)
{
	if (m->rt)
		return 0;
	return ad_fail(err, AD_E_UNAVAILABLE, "the container runtime is unavailable: %s",
		       m->rt_error ? m->rt_error : "not set up");
}

/* The shim: AGENTD_SHIM (read by the runtime), else ours (a build tree or
 * installed). */
static char *find_shim(void)
{
	if (getenv("AGENTD_SHIM"))
		return NULL;
	static const char *const near_self[] = {"../runtime/agentd-shim", "agentd-shim", NULL};
	return ad_find_helper("agentd-shim", near_self);
}

static int open_manager(const cfg_config *cfg, store *images, bool with_runtime, mgr **ret,
			ad_error **err)
{
	mgr *m = ad_malloc0(sizeof(*m));
	m->exit_epoll = m->exit_wake = -1;
	pthread_mutex_init(&m->watch_lock, NULL);
	pthread_mutex_init(&m->cpu_lock, NULL);
	pthread_mutex_init(&m->db_lock, NULL);
	pthread_mutex_init(&m->busy_lock, NULL);
	pthread_cond_init(&m->busy_cond, NULL);
	pthread_mutex_init(&m->ev_lock, NULL);
	pthread_mutex_init(&m->cni_lock, NULL);
	pthread_mutex_init(&m->fs_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->ev_cond, &ca);
	pthread_condattr_destroy(&ca);
	m->next_seq = m->shown_seq = 1;
	m->root = ad_strdup(cfg->root);
	m->state = ad_strdup(cfg->state);
	m->images = images;
	m->conf_dirs = split_dirs(cfg->cni_conf_dir);
	m->plugin_dirs = split_dirs(cfg->cni_plugin_dirs);
	/* Remembers the network as it loads now: a bad edit before the first
	 * pod still leaves it in use. */
	ad_error *net_err = NULL;
	if (mgr_network_ready(m, false, &net_err) < 0)
		ad_error_free(&net_err);
	m->netns_dir = *cfg->cni_netns_dir ? ad_strdup(cfg->cni_netns_dir)
					   : ad_asprintf("%s/netns", cfg->state);
	m->infra_rootfs = ad_asprintf("%s/infra-rootfs", cfg->root);
	m->userns_user = ad_strdup(cfg->userns_user);
	m->subuid_file = ad_strdup(cfg->userns_subuid_file);
	m->subgid_file = ad_strdup(cfg->userns_subgid_file);
	if (cfg->pause_image && *cfg->pause_image)
		m->pause_image = ad_strdup(cfg->pause_image);
	m->pods_dir = ad_asprintf("%s/pods", cfg->state);
	_cleanup_free_ char *db_path = ad_asprintf("%s/agentd.db", cfg->root);
	_cleanup_free_ char *rt_state = ad_asprintf("%s/containers", cfg->state);
	_cleanup_free_ char *shim = find_shim();
	rt_options ro = {.state_root = rt_state, .shim_path = shim};
	if (ad_db_open(db_path, &mgr_pods_schema, &m->db, err) < 0 ||
	    ad_mkdir_p(m->pods_dir, 0711, err) < 0) {
		mgr_close(m);
		return -1;
	}
	/* Without a runtime agentd still serves images and the rest; the pod
	 * RPCs answer UNAVAILABLE with the reason. */
	ad_error *e = NULL;
	if (!with_runtime) {
		m->rt_error = ad_strdup("the pod manager was opened without one");
	} else if (mgr_infra_rootfs_make(m, &e) < 0 || rt_runtime_new(&ro, &m->rt, &e) < 0) {
		ad_warn("pods and containers unavailable: %s", e->message);
		m->rt_error = ad_strdup(e->message);
		ad_error_free(&e);
		m->rt = NULL;
	} else {
		int watching = mgr_ctr_watch_init(m, &e);
		mgr_reconcile(m);
		if (watching == 0 && pthread_create(&m->monitor, NULL, mgr_monitor_main, m) == 0)
			m->monitor_started = true;
		else
			ad_warn("pods: no exit monitor thread (%s); exits are noticed on queries",
				e ? e->message : strerror(errno));
		ad_error_free(&e);
	}
	*ret = m;
	return 0;
}

int mgr_open(const cfg_config *cfg, store *images, mgr **ret, ad_error **err)
{
	return open_manager(cfg, images, true, ret, err);
}

int mgr_open_without_runtime(const cfg_config *cfg, store *images, mgr **ret, ad_error **err)
{
	return open_manager(cfg, images, false, ret, err);
}

void mgr_close(mgr *m)
{
	if (!m)
		return;
	if (m->monitor_started) {
		pthread_mutex_lock(&m->ev_lock);
		m->stopping = true;
		pthread_cond_broadcast(&m->ev_cond);
		pthread_mutex_unlock(&m->ev_lock);
		mgr_ctr_watch_wake(m);
		pthread_join(m->monitor, NULL);
	}
	mgr_ctr_watch_close(m);
	if (m->rt)
		rt_runtime_free(m->rt);
	if (m->db)
		ad_db_close(m->db);
	mgr_strv_free(m->conf_dirs);
	mgr_strv_free(m->plugin_dirs);
	for (size_t i = 0; i < m->n_busy; i++)
		free(m->busy[i]);
	free(m->busy);
	free(m->rt_error);
	free(m->netns_dir);
	free(m->infra_rootfs);
	free(m->pause_image);
	free(m->userns_user);
	free(m->subuid_file);
	free(m->subgid_file);
	free(m->pods_dir);
	free(m->root);
	free(m->state);
	pthread_mutex_destroy(&m->db_lock);
	pthread_mutex_destroy(&m->busy_lock);
	pthread_cond_destroy(&m->busy_cond);
	pthread_mutex_destroy(&m->ev_lock);
	pthread_mutex_destroy(&m->cni_lock);
	pthread_mutex_destroy(&m->fs_lock);
	free(m->fs_usage);
	free(m->cni_last_good);
	pthread_mutex_destroy(&m->watch_lock);
	pthread_mutex_destroy(&m->cpu_lock);
	free(m->cpu_samples);
	pthread_cond_destroy(&m->ev_cond);
	free(m);
}
