/* Processes in a running container: exec (to completion, or with the
 * caller's stdio for streaming Exec) with the config stored at create, a pty
 * from the container's own devpts, attach and resize through the shim. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "pods_int.h"

#define EXEC_MAX_OUTPUT_DEFAULT (16u << 20)

/* What an exec into a running container needs: the runtime's handle and the
 * config the container was created with (the same user, cgroup, namespaces
 * and security for every exec). */
typedef struct exec_target {
	mgr_ctr *c; /* holds the packed config cfg points into */
	rt_container *rc;
	rt_config cfg;
} exec_target;

static void exec_target_clear(exec_target *t)
{
	rt_config_unpacked_clear(&t->cfg);
	rt_container_free(t->rc);
	mgr_ctr_free(t->c);
	*t = (exec_target){0};
}

static int exec_target_open(mgr *m, const char *id, const char *const *args, exec_target *ret,
			    ad_error **err)
{
	*ret = (exec_target){0};
	if (mgr_need_rt(m, err) < 0)
		return -1;
	if (!args || !args[0])
		return ad_fail(err, AD_E_INVALID, "exec: no command");
	int r = mgr_ctr_get(m, id, &ret->c, err);
	if (r == 0 && ret->c->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is not running", id);
	if (r == 0)
		r = rt_open(m->rt, id, &ret->rc, err);
	if (r == 0)
		r = mgr_ctr_stored_config(ret->c, &ret->cfg, err);
	if (r < 0)
		exec_target_clear(ret);
	return r;
}

int mgr_ctr_exec_sync(mgr *m, const char *id, const char *const *args, int64_t timeout_s,
		      size_t max_output, rt_exec_result *ret, ad_error **err)
{
	exec_target t;
	if (exec_target_open(m, id, args, &t, err) < 0)
		return -1;
	int64_t ms = timeout_s > 0 ? timeout_s * 1000 : 0;
	if (ms > INT32_MAX)
		ms = INT32_MAX;
	int r = rt_exec_sync(t.rc, &t.cfg, args, (int)ms,
			     max_output ? max_output : EXEC_MAX_OUTPUT_DEFAULT, ret, err);
	exec_target_clear(&t);
	return r;
}

int mgr_ctr_exec_start(mgr *m, const char *id, const char *const *args, int stdin_fd, int stdout_fd,
		       int stderr_fd, pid_t *ret_pid, ad_error **err)
{
	exec_target t;
	if (exec_target_open(m, id, args, &t, err) < 0)
		return -1;
	int r = rt_exec(t.rc, &t.cfg, args, stdin_fd, stdout_fd, stderr_fd, ret_pid, err);
	exec_target_clear(&t);
	return r;
}

int mgr_ctr_open_pty(mgr *m, const char *id, int *ret_master, int *ret_slave, ad_error **err)
{
	exec_target t;
	static const char *const none[] = {"-", NULL};
	if (exec_target_open(m, id, none, &t, err) < 0)
		return -1;
	_cleanup_free_ char *root = ad_asprintf("/proc/%d/root", (int)rt_container_init_pid(t.rc));
	_cleanup_close_ int root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	exec_target_clear(&t);
	if (root_fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "container %s: open %s", id, root);
	/* Resolved in the container's root and mounts: its own devpts. */
	int master =
	    ad_openat_in_root(root_fd, "dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC, 0, err);
	if (master < 0)
		return ad_error_wrap(err, "container %s: pty", id);
	int slave =
	    unlockpt(master) == 0 ? ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
	if (slave < 0) {
		int r = ad_fail_errno(err, AD_E_INTERNAL, "container %s: pty peer", id);
		close(master);
		return r;
	}
	*ret_master = master;
	*ret_slave = slave;
	return 0;
}

int mgr_ctr_attach(mgr *m, const char *id, bool with_stdin, int *ret_fd, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	mgr_ctr *c = NULL;
	rt_container *rc = NULL;
	int r = mgr_ctr_get(m, id, &c, err);
	if (r == 0 && c->state != MGR_CTR_RUNNING)
		r = ad_fail(err, AD_E_PRECONDITION, "container %s is not running", id);
	if (r == 0)
		r = rt_open(m->rt, id, &rc, err);
	if (r == 0)
		r = rt_attach(rc, with_stdin, ret_fd, err);
	rt_container_free(rc);
	mgr_ctr_free(c);
	return r;
}

int mgr_ctr_resize(mgr *m, const char *id, unsigned rows, unsigned cols, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	rt_container *rc = NULL;
	int r = rt_open(m->rt, id, &rc, err);
	if (r == 0)
		r = rt_resize(rc, rows, cols, err);
	rt_container_free(rc);
	return r;
}
