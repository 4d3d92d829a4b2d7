/* What the container's processes apply to themselves: rlimits, the security
 * plan (bounding set, AppArmor exec label, capabilities, no_new_privs,
 * seccomp), the sync messages and fd hygiene. Built into both libadruntime
 * (exec) and agentd-shim (the container's init): libc and raw syscalls only,
 * no libcap. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "rt_internal.h"

#define CAPM(c) (1ULL << (c))

void rt_msg_send_error(int fd, ad_error *e)
{
	rt_msg m = {.type = RT_MSG_ERROR};
	if (e) {
		m.code = e->code;
		m.errno_value = e->errno_value;
		snprintf(m.text, sizeof(m.text), "%s", e->message);
	}
	if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) < 0) {
		/* the parent is gone; nobody to tell */
	}
}

int rt_msg_send(int fd, int type, pid_t pid)
{
	rt_msg m = {.type = type, .pid = pid};
	return send(fd, &m, sizeof(m), MSG_NOSIGNAL) == sizeof(m) ? 0 : -1;
}

void rt_apply_rlimits(const rt_config *cfg)
{
	for (size_t i = 0; i < cfg->n_rlimits; i++) {
		struct rlimit rl = {.rlim_cur = cfg->rlimits[i].soft,
				    .rlim_max = cfg->rlimits[i].hard};
		if (setrlimit(cfg->rlimits[i].resource, &rl) < 0)
			/* Raising a hard limit needs CAP_SYS_RESOURCE, which agentd may
			 * lack: the container still runs, with the host's limit. */
			ad_warn("container %s: rlimit %d: %s", cfg->id, cfg->rlimits[i].resource,
				strerror(errno));
	}
	if (cfg->oom_score_adj_set) {
		char v[16];
		int n = snprintf(v, sizeof(v), "%d", cfg->oom_score_adj);
		int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, v, (size_t)n) != n)
			ad_warn("container %s: oom_score_adj %d: %s", cfg->id, cfg->oom_score_adj,
				strerror(errno));
		if (fd >= 0)
			close(fd);
	}
}

/* Closes every fd >= 3 but those in keep (-1 entries ignored). With agentd's
 * threads creating containers side by side, a child otherwise holds the
 * pipes of another container's setup until it execs. */
void rt_close_all_but(const int *keep, size_t n)
{
	int sorted[16];
	size_t m = 0;
	for (size_t i = 0; i < n && m < 16; i++)
		if (keep[i] >= 3)
			sorted[m++] = keep[i];
	for (size_t i = 1; i < m; i++)
		for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
			int t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	unsigned lo = 3;
	for (size_t i = 0; i < m; i++) {
		if ((unsigned)sorted[i] > lo)
			syscall(SYS_close_range, lo, (unsigned)sorted[i] - 1, 0);
		lo = (unsigned)sorted[i] + 1;
	}
	syscall(SYS_close_range, lo, ~0U, 0);
}

static int load_seccomp(const rt_secplan *p, ad_error **err)
{
	struct sock_fprog prog = {.len = (unsigned short)p->seccomp_len, .filter = p->seccomp};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "load seccomp filter");
	return 0;
}

int rt_secplan_apply_pre_user(const rt_secplan *p, ad_error **err)
{
	/* The bounding set can only shrink while CAP_SETPCAP is held: before the
	 * uid switch. */
	for (int c = 0; c <= p->last_cap; c++)
		if (!(p->bounding & CAPM(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 &&
		    errno != EINVAL)
			return ad_fail_errno(err, AD_E_INTERNAL,
					     "drop capability %d from the bounding set", c);
	if (p->apparmor) {
		char cmd[512];
		int len = snprintf(cmd, sizeof(cmd), "exec %s", p->apparmor);
		if (len < 0 || (size_t)len >= sizeof(cmd))
			return ad_fail(err, AD_E_INVALID, "apparmor profile name too long");
		int fd = open("/proc/self/attr/apparmor/exec", O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			fd = open("/proc/self/attr/exec", O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "apparmor: open attr/exec");
		ssize_t n = write(fd, cmd, (size_t)len);
		int e = errno;
		close(fd);
		if (n < 0)
			return ad_error_make(err, AD_E_INVALID, e, "apparmor profile \"%s\"",
					     p->apparmor);
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "PR_SET_KEEPCAPS");
	if (p->seccomp && !p->no_new_privs)
		return load_seccomp(p, err);
	return 0;
}

int rt_secplan_apply_post_user(const rt_secplan *p, ad_error **err)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {
	    {.effective = (uint32_t)p->effective,
	     .permitted = (uint32_t)p->permitted,
	     .inheritable = (uint32_t)p->inheritable},
	    {.effective = (uint32_t)(p->effective >> 32),
	     .permitted = (uint32_t)(p->permitted >> 32),
	     .inheritable = (uint32_t)(p->inheritable >> 32)},
	};
	if (syscall(SYS_capset, &h, d) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "set capabilities");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return ad_fail_errno(err, AD_E_INTERNAL, "clear ambient capabilities");
	for (int c = 0; c <= p->last_cap; c++)
		if ((p->ambient & CAPM(c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
			return ad_fail_errno(err, AD_E_INVALID, "raise ambient capability %d", c);
	return 0;
}

int rt_secplan_apply_final(const rt_secplan *p, ad_error **err)
{
	if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "PR_SET_NO_NEW_PRIVS");
	if (p->seccomp && p->no_new_privs)
		return load_seccomp(p, err);
	return 0;
}
