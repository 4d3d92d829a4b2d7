/* What /proc says of a running container: its init's capability sets, and
 * the processes of its cgroup (agentctl inspect and top, through the verbose
 * ContainerStatus). A process belongs to the container when its
 * /proc/PID/cgroup names the same cgroups as the init's and it lives in the
 * init's pid namespace. */
#include "pods_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROC_FILE (1u << 20)

static int running_pid(mgr *m, const mgr_ctr *c, pid_t *ret, ad_error **err)
{
	if (mgr_need_rt(m, err) < 0)
		return -1;
	rt_container *rc = NULL;
	if (c->state != MGR_CTR_RUNNING || rt_open(m->rt, c->id, &rc, err) < 0) {
		ad_error_free(err);
		return ad_fail(err, AD_E_PRECONDITION, "container %s is not running", c->id);
	}
	*ret = rt_container_init_pid(rc);
	rt_container_free(rc);
	return 0;
}

static char *proc_file(pid_t pid, const char *name)
{
	_cleanup_free_ char *path = ad_asprintf("/proc/%d/%s", (int)pid, name);
	char *data = NULL;
	size_t len;
	_cleanup_error_ ad_error *e = NULL;
	if (ad_read_file(AT_FDCWD, path, MAX_PROC_FILE, &data, &len, &e) < 0)
		return NULL;
	return data;
}

static uint64_t status_hex(const char *status, const char *key)
{
	const char *l = strstr(status, key);
	return l ? strtoull(l + strlen(key), NULL, 16) : 0;
}

int mgr_ctr_caps(mgr *m, const mgr_ctr *c, mgr_caps *ret, ad_error **err)
{
	pid_t pid;
	if (running_pid(m, c, &pid, err) < 0)
		return -1;
	_cleanup_free_ char *st = proc_file(pid, "status");
	if (!st || !strstr(st, "\nCapEff:"))
		return ad_fail(err, AD_E_NOT_FOUND, "container %s: its process %d is gone", c->id,
			       (int)pid);
	ret->inheritable = status_hex(st, "\nCapInh:");
	ret->permitted = status_hex(st, "\nCapPrm:");
	ret->effective = status_hex(st, "\nCapEff:");
	ret->bounding = status_hex(st, "\nCapBnd:");
	ret->ambient = status_hex(st, "\nCapAmb:");
	return 0;
}

/* uid → name from the container's own /etc/passwd (as podman top shows). */
static char *user_name(pid_t init, uint32_t uid)
{
	/* Resolved inside the container's root: its symlinks cannot lead out. */
	_cleanup_free_ char *root = ad_asprintf("/proc/%d/root", (int)init);
	_cleanup_close_ int root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_error_ ad_error *e = NULL;
	_cleanup_close_ int fd =
	    root_fd < 0 ? -1 : ad_openat_in_root(root_fd, "etc/passwd", O_RDONLY, 0, &e);
	_cleanup_free_ char *data = NULL, *opened = ad_asprintf("/proc/self/fd/%d", fd);
	size_t len;
	if (fd >= 0 && ad_read_file(AT_FDCWD, opened, MAX_PROC_FILE, &data, &len, &e) == 0) {
		for (char *line = data, *next; line && *line; line = next) {
			next = strchr(line, '\n');
			if (next)
				*next++ = '\0';
			char *f1 = strchr(line, ':');
			char *f2 = f1 ? strchr(f1 + 1, ':') : NULL;
			if (f2 && strtoul(f2 + 1, NULL, 10) == uid && f2[1] != ':') {
				*f1 = '\0';
				return ad_strdup(line);
			}
		}
	}
	return ad_asprintf("%u", uid);
}

/* The command line with spaces, or [comm] for a process without one. */
static char *command_line(pid_t pid, const char *comm)
{
	_cleanup_free_ char *path = ad_asprintf("/proc/%d/cmdline", (int)pid);
	char *data = NULL;
	size_t len = 0;
	_cleanup_error_ ad_error *e = NULL;
	if (ad_read_file(AT_FDCWD, path, MAX_PROC_FILE, &data, &len, &e) < 0 || len == 0) {
		free(data);
		return ad_asprintf("[%s]", comm);
	}
	while (len > 0 && data[len - 1] == '\0')
		len--;
	for (size_t i = 0; i < len; i++)
		if (data[i] == '\0')
			data[i] = ' ';
	data[len] = '\0';
	return data;
}

static char *tty_name(unsigned long tty_nr)
{
	if (!tty_nr)
		return ad_strdup("?");
	unsigned maj = major(tty_nr), min = minor(tty_nr);
	if (maj >= 136 && maj <= 143)
		return ad_asprintf("pts/%u", (maj - 136) * 256 + min);
	if (maj == 4)
		return ad_asprintf("tty%u", min);
	return ad_asprintf("%u:%u", maj, min);
}

/* One process from /proc/PID/stat; false if it is gone or unreadable. */
static bool read_proc(pid_t pid, pid_t init, int64_t boot_ns, mgr_proc *p)
{
	_cleanup_free_ char *stat = proc_file(pid, "stat");
	_cleanup_free_ char *status = proc_file(pid, "status");
	char *open = stat ? strchr(stat, '(') : NULL;
	char *close = stat ? strrchr(stat, ')') : NULL;
	if (!open || !close || !status)
		return false;
	_cleanup_free_ char *comm = ad_strndup(open + 1, (size_t)(close - open - 1));
	/* After the comm: state ppid pgrp session tty_nr tpgid flags minflt
	 * cminflt majflt cmajflt utime stime cutime cstime priority nice
	 * num_threads itrealvalue starttime (proc(5)). */
	char state;
	int ppid, pgrp, session, tpgid;
	unsigned long tty_nr, flags, minflt, cminflt, majflt, cmajflt, utime, stime;
	long cutime, cstime, priority, nice, threads, itreal;
	unsigned long long start;
	if (sscanf(close + 2, "%c %d %d %d %lu %d %lu %lu %lu %lu %lu %lu %lu %ld %ld %ld %ld %ld %ld %llu",
		   &state, &ppid, &pgrp, &session, &tty_nr, &tpgid, &flags, &minflt, &cminflt,
		   &majflt, &cmajflt, &utime, &stime, &cutime, &cstime, &priority, &nice, &threads,
		   &itreal, &start) != 20)
		return false;
	long hz = sysconf(_SC_CLK_TCK);
	const char *u = strstr(status, "\nUid:");
	p->pid = pid;
	p->ppid = ppid;
	p->uid = u ? (uint32_t)strtoul(u + 5, NULL, 10) : 0;
	p->user = user_name(init, p->uid);
	p->tty = tty_name(tty_nr);
	p->cpu_ns = (int64_t)(utime + stime) * (1000000000LL / hz);
	p->started_ns = boot_ns + (int64_t)start * (1000000000LL / hz);
	p->command = command_line(pid, comm);
	return true;
}

/* Wall-clock time of boot, to turn start ticks into a time of day: read
 * once, so that a process's start time is the same in every answer. */
static pthread_once_t boot_once = PTHREAD_ONCE_INIT;
static int64_t boot_time_ns;
static void boot_time_init(void)
{
	struct timespec rt, bt;
	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_BOOTTIME, &bt);
	boot_time_ns = ((int64_t)rt.tv_sec - bt.tv_sec) * 1000000000LL + rt.tv_nsec - bt.tv_nsec;
}

/* agentd's exec helper joins the cgroup but stays outside the container's
 * pid namespace: it is not one of the container's processes. */
static bool same_pid_ns(pid_t pid, const struct stat *ns)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)pid);
	struct stat st;
	return stat(path, &st) == 0 && st.st_ino == ns->st_ino && st.st_dev == ns->st_dev;
}

int mgr_ctr_processes(mgr *m, const mgr_ctr *c, mgr_proc **ret, size_t *ret_n, ad_error **err)
{
	pid_t init;
	if (running_pid(m, c, &init, err) < 0)
		return -1;
	_cleanup_free_ char *cgroups = proc_file(init, "cgroup");
	if (!cgroups)
		return ad_fail(err, AD_E_NOT_FOUND, "container %s: its process %d is gone", c->id,
			       (int)init);
	struct stat init_ns;
	_cleanup_free_ char *init_ns_path = ad_asprintf("/proc/%d/ns/pid", (int)init);
	if (stat(init_ns_path, &init_ns) < 0)
		return ad_fail(err, AD_E_NOT_FOUND, "container %s: its process %d is gone", c->id,
			       (int)init);
	pthread_once(&boot_once, boot_time_init);
	int64_t boot_ns = boot_time_ns;
	_cleanup_closedir_ DIR *d = opendir("/proc");
	if (!d)
		return ad_fail_errno(err, AD_E_INTERNAL, "open /proc");
	mgr_proc *v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		_cleanup_free_ char *cg = proc_file((pid_t)pid, "cgroup");
		if (!cg || strcmp(cg, cgroups) != 0 || !same_pid_ns((pid_t)pid, &init_ns))
			continue;
		mgr_proc p = {0};
		if (!read_proc((pid_t)pid, init, boot_ns, &p))
			continue;
		v = ad_realloc(v, sizeof(*v) * (n + 1));
		v[n++] = p;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

void mgr_procs_free(mgr_proc *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].user);
		free(v[i].tty);
		free(v[i].command);
	}
	free(v);
}
