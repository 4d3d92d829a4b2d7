/* Exec, Attach and PortForward: the calls register their request with the
 * streaming server (libadstreaming) and answer its URL; the server calls back
 * here (cri_streaming_backend, its ctx the cri_service) to start the exec,
 * attach to the container or dial the pod's port. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "cri_int.h"

/* An exec in flight: its helper process (our child). A tty's master is only
 * in the server's hands (proc's stdin and stdout fds): once it closes them
 * all, the terminal hangs up. */
typedef struct exec_handle {
	pid_t pid;
} exec_handle;

/* The container's own pty; one of the host's where it has no devpts of its
 * own (the process then has a tty, but `tty` cannot name it). */
static int open_pty(cri_service *svc, const char *id, int *ret_master, int *ret_slave,
		    ad_error **err)
{
	_cleanup_error_ ad_error *e = NULL;
	if (mgr_ctr_open_pty(svc->pods, id, ret_master, ret_slave, &e) == 0)
		return 0;
	if (e->code == AD_E_NOT_FOUND || e->code == AD_E_PRECONDITION) {
		*err = ad_steal_ptr(e);
		return -1;
	}
	ad_debug("exec in %s: a host pty: %s", id, e->message);
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	char name[64];
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof(name)) != 0) {
		int e = errno;
		if (m >= 0)
			close(m);
		return ad_error_make(err, AD_E_INTERNAL, e, "exec: cannot allocate a pty");
	}
	int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s < 0) {
		int e = errno;
		close(m);
		return ad_error_make(err, AD_E_INTERNAL, e, "exec: open %s", name);
	}
	*ret_master = m;
	*ret_slave = s;
	return 0;
}

static void close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static int be_exec(void *ctx, const st_request *req, st_process *proc, ad_error **err)
{
	cri_service *svc = ctx;
	/* ours: the ends the server keeps; theirs: the process's stdio */
	int ours[3] = {-1, -1, -1}, theirs[3] = {-1, -1, -1}, master = -1;
	int r = 0;
	if (req->tty) {
		int slave = -1;
		r = open_pty(svc, req->target, &master, &slave, err);
		if (r == 0)
			theirs[0] = slave;
	} else {
		bool want[3] = {req->in, req->out, req->err};
		for (int i = 0; i < 3 && r == 0; i++) {
			int p[2];
			if (!want[i])
				continue;
			if (pipe2(p, O_CLOEXEC) < 0) {
				r = ad_fail_errno(err, AD_E_INTERNAL, "exec: pipe");
				break;
			}
			ours[i] = i == 0 ? p[1] : p[0];
			theirs[i] = i == 0 ? p[0] : p[1];
		}
	}
	pid_t pid = -1;
	if (r == 0) {
		/* With a tty the slave is all three. */
		int out = req->tty ? theirs[0] : theirs[1],
		    errfd = req->tty ? theirs[0] : theirs[2];
		r = mgr_ctr_exec_start(svc->pods, req->target, (const char *const *)req->cmd,
				       theirs[0], out, errfd, &pid, err);
	}
	close_all(theirs, 3);
	int pidfd = r == 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
	if (r == 0 && pidfd < 0) {
		r = ad_fail_errno(err, AD_E_INTERNAL, "exec: pidfd_open");
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (r < 0) {
		close_all(ours, 3);
		close_all(&master, 1);
		return -1;
	}
	exec_handle *h = ad_malloc0(sizeof(*h));
	h->pid = pid;
	if (master >= 0) {
		/* stdin and stdout are both the master; each end is closed alone. */
		proc->stdin_fd = req->in ? fcntl(master, F_DUPFD_CLOEXEC, 3) : -1;
		proc->stdout_fd = master;
	} else {
		proc->stdin_fd = ours[0];
		proc->stdout_fd = ours[1];
		proc->stderr_fd = ours[2];
	}
	proc->exit_fd = pidfd;
	proc->handle = h;
	return 0;
}

static int be_attach(void *ctx, const st_request *req, st_process *proc, ad_error **err)
{
	cri_service *svc = ctx;
	int fd;
	if (mgr_ctr_attach(svc->pods, req->target, req->in, &fd, err) < 0)
		return -1;
	proc->stdout_fd = fd;
	proc->framed = true;
	return 0;
}

static int be_resize(void *ctx, const st_request *req, st_process *proc, unsigned rows,
		     unsigned cols)
{
	cri_service *svc = ctx;
	if (req->kind == ST_EXEC) {
		/* The pty master, while the server still has it. */
		struct winsize ws = {.ws_row = (unsigned short)rows,
				     .ws_col = (unsigned short)cols};
		return req->tty && proc->stdout_fd >= 0 ? ioctl(proc->stdout_fd, TIOCSWINSZ, &ws)
							: -1;
	}
	_cleanup_error_ ad_error *e = NULL;
	if (req->kind == ST_ATTACH && mgr_ctr_resize(svc->pods, req->target, rows, cols, &e) < 0) {
		ad_debug("attach %s: resize: %s", req->target, e->message);
		return -1;
	}
	return 0;
}

static int be_finish(void *ctx, const st_request *req, st_process *proc, bool abort, int *exit_code,
		     ad_error **err)
{
	(void)ctx;
	(void)req;
	(void)err;
	exec_handle *h = proc->handle;
	*exit_code = 0;
	if (!h) /* attach: the container's exit is not the attacher's */
		return 0;
	if (abort)
		kill(h->pid, SIGKILL); /* the helper; its child dies with it */
	int st = 0;
	while (waitpid(h->pid, &st, 0) < 0 && errno == EINTR)
		;
	*exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	free(h);
	proc->handle = NULL;
	return 0;
}

static int be_dial(void *ctx, const char *pod_id, uint16_t port, int *ret_fd, ad_error **err)
{
	cri_service *svc = ctx;
	return mgr_pod_dial(svc->pods, pod_id, port, ret_fd, err);
}

const st_backend cri_streaming_backend = {
    .exec = be_exec,
    .attach = be_attach,
    .resize = be_resize,
    .finish = be_finish,
    .dial = be_dial,
};

/* ---- the CRI calls ------------------------------------------------------------ */

static rpc_code url_reply(rpc_call *call, cri_service *svc, const st_request *req, char **ret_url)
{
	if (!svc->streaming)
		return rpc_call_error(call, RPC_UNAVAILABLE, "the streaming server is not running");
	ad_error *e = NULL;
	char *url = NULL;
	if (st_request_url(svc->streaming, req, &url, &e) < 0)
		return cri_fail(call, e);
	*ret_url = rpc_call_strdup(call, url);
	free(url);
	return RPC_OK;
}

/* Fails early for what the URL would only report later. */
static rpc_code check_running(rpc_call *call, cri_service *svc, const char *id)
{
	if (cri_empty(id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "container_id is required");
	mgr_ctr *c = NULL;
	ad_error *e = NULL;
	if (mgr_ctr_get(svc->pods, id, &c, &e) < 0)
		return cri_fail(call, e);
	bool running = c->state == MGR_CTR_RUNNING;
	mgr_ctr_free(c);
	if (!running)
		return rpc_call_error(call, RPC_FAILED_PRECONDITION, "container %s is not running",
				      id);
	return RPC_OK;
}

rpc_code cri_exec(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__ExecRequest *q = req;
	rpc_code c = check_running(call, svc, q->container_id);
	if (c != RPC_OK)
		return c;
	if (q->n_cmd == 0)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "Exec: cmd is required");
	if (!q->stdin && !q->stdout && !q->stderr)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "Exec: one of stdin, stdout and stderr must be set");
	if (q->tty && q->stderr)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "Exec: tty and stderr cannot both be set");
	char **cmd = rpc_call_alloc(call, (q->n_cmd + 1) * sizeof(char *));
	for (size_t i = 0; i < q->n_cmd; i++)
		cmd[i] = q->cmd[i];
	cmd[q->n_cmd] = NULL;
	st_request r = {.kind = ST_EXEC,
			.target = q->container_id,
			.cmd = cmd,
			.tty = q->tty,
			.in = q->stdin,
			.out = q->stdout,
			.err = q->stderr};
	return url_reply(call, svc, &r, &((Runtime__V1__ExecResponse *)resp)->url);
}

rpc_code cri_attach(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__AttachRequest *q = req;
	rpc_code c = check_running(call, svc, q->container_id);
	if (c != RPC_OK)
		return c;
	if (!q->stdin && !q->stdout && !q->stderr)
		return rpc_call_error(call, RPC_INVALID_ARGUMENT,
				      "Attach: one of stdin, stdout and stderr must be set");
	st_request r = {.kind = ST_ATTACH,
			.target = q->container_id,
			.tty = q->tty,
			.in = q->stdin,
			.out = q->stdout,
			.err = q->stderr};
	return url_reply(call, svc, &r, &((Runtime__V1__AttachResponse *)resp)->url);
}

rpc_code cri_port_forward(rpc_call *call, cri_service *svc, const void *req, void *resp)
{
	const Runtime__V1__PortForwardRequest *q = req;
	if (cri_empty(q->pod_sandbox_id))
		return rpc_call_error(call, RPC_INVALID_ARGUMENT, "pod_sandbox_id is required");
	mgr_pod *pod = NULL;
	ad_error *e = NULL;
	if (mgr_pod_get(svc->pods, q->pod_sandbox_id, &pod, &e) < 0)
		return cri_fail(call, e);
	bool ready = pod->state == MGR_POD_READY;
	mgr_pod_free(pod);
	if (!ready)
		return rpc_call_error(call, RPC_FAILED_PRECONDITION, "pod sandbox %s is not ready",
				      q->pod_sandbox_id);
	uint16_t *ports = rpc_call_alloc(call, (q->n_port + 1) * sizeof(uint16_t));
	for (size_t i = 0; i < q->n_port; i++) {
		if (q->port[i] <= 0 || q->port[i] > 65535)
			return rpc_call_error(call, RPC_INVALID_ARGUMENT, "invalid port %d",
					      (int)q->port[i]);
		ports[i] = (uint16_t)q->port[i];
	}
	st_request r = {.kind = ST_PORTFORWARD,
			.target = q->pod_sandbox_id,
			.ports = ports,
			.n_ports = q->n_port};
	return url_reply(call, svc, &r, &((Runtime__V1__PortForwardResponse *)resp)->url);
}
