/* Pod network namespaces pinned by bind mounts, like `ip netns add/del`. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cni.h"

/* The pins must be visible in (and removable from) the mount namespaces of
 * every process that joins a pod, so the directory becomes a shared mount
 * point, bind-mounting it onto itself first if it is not one yet. One caller
 * at a time: pods created at once would each bind the dir, stacking binds
 * that hide the pins made on the ones below. */
static int cni_netns_prepare_dir(const char *dir, ad_error **err)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	if (ad_mkdir_p(dir, 0755, err) < 0)
		return ad_error_wrap(err, "netns dir %s", dir);
	pthread_mutex_lock(&lock);
	bool bound = false;
	int r = 0;
	while (r == 0 && mount("", dir, "none", MS_SHARED | MS_REC, NULL) < 0) {
		if (errno != EINVAL || bound)
			r = ad_fail_errno(err, AD_E_INTERNAL, "make %s a shared mount", dir);
		else if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL) < 0)
			r = ad_fail_errno(err, AD_E_INTERNAL, "bind mount %s onto itself", dir);
		bound = true;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

enum { NETNS_CREATE, NETNS_LOOPBACK_UP, NETNS_CONNECT };

struct cni_netns_job {
	const char *path; /* pin to create, or namespace to join */
	int op;		  /* NETNS_* */
	uint16_t port;	  /* NETNS_CONNECT: 127.0.0.1:port */
	int fd;		  /* NETNS_CONNECT: the connected socket */
	int err_no;
	const char *what;
};

/* A socket keeps the namespace it was made in: it may be used from any thread. */
static void netns_connect(struct cni_netns_job *job)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(job->port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		job->err_no = errno;
		job->what = "connect";
		if (fd >= 0)
			close(fd);
		return;
	}
	job->fd = fd;
}

/* Runs in its own thread: network namespaces belong to a thread, so only this
 * short-lived thread changes namespace, never the caller. */
static void *cni_netns_thread(void *arg)
{
	struct cni_netns_job *job = arg;
	if (job->op == NETNS_CREATE) {
		if (unshare(CLONE_NEWNET) < 0) {
			job->err_no = errno;
			job->what = "unshare(CLONE_NEWNET)";
			return NULL;
		}
		if (mount("/proc/thread-self/ns/net", job->path, "none", MS_BIND, NULL) < 0) {
			job->err_no = errno;
			job->what = "bind mount of the new namespace";
		}
		return NULL;
	}

	int nsfd = open(job->path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0) {
		job->err_no = errno;
		job->what = "open";
		return NULL;
	}
	int r = setns(nsfd, CLONE_NEWNET);
	close(nsfd);
	if (r < 0) {
		job->err_no = errno;
		job->what = "setns";
		return NULL;
	}
	if (job->op == NETNS_CONNECT) {
		netns_connect(job);
		return NULL;
	}
	int lr = ad_loopback_up();
	if (lr < 0) {
		job->err_no = -lr;
		job->what = "bringing lo up";
	}
	return NULL;
}

/* Runs the job in a thread of its own; the job's own failure is in err_no. */
static int netns_thread_run(struct cni_netns_job *job, ad_error **err)
{
	pthread_t t;
	int r = pthread_create(&t, NULL, cni_netns_thread, job);
	if (r != 0)
		return ad_error_make(err, AD_E_INTERNAL, r, "create netns thread");
	pthread_join(t, NULL);
	return 0;
}

static int cni_netns_run(struct cni_netns_job *job, ad_error **err)
{
	if (netns_thread_run(job, err) < 0)
		return -1;
	if (job->err_no != 0)
		return ad_error_make(err, AD_E_INTERNAL, job->err_no, "netns %s: %s", job->path,
				     job->what);
	return 0;
}

int cni_netns_create(const char *dir, const char *name, char **ret_path, ad_error **err)
{
	if (!dir)
		dir = CNI_DEFAULT_NETNS_DIR;
	if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return ad_fail(err, AD_E_INVALID, "invalid netns name \"%s\"", name ? name : "");
	if (cni_netns_prepare_dir(dir, err) < 0)
		return -1;

	_cleanup_free_ char *path = ad_asprintf("%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (fd < 0) {
		if (errno == EEXIST)
			return ad_fail(err, AD_E_EXISTS, "netns %s already exists", path);
		return ad_fail_errno(err, AD_E_INTERNAL, "create netns pin %s", path);
	}
	close(fd);

	struct cni_netns_job job = {.path = path, .op = NETNS_CREATE};
	if (cni_netns_run(&job, err) < 0) {
		umount2(path, MNT_DETACH);
		unlink(path);
		return -1;
	}
	*ret_path = ad_steal_ptr(path);
	return 0;
}

int cni_netns_remove(const char *path, ad_error **err)
{
	if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		return ad_fail_errno(err, AD_E_INTERNAL, "unmount netns %s", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return ad_fail_errno(err, AD_E_INTERNAL, "remove netns pin %s", path);
	return 0;
}

bool cni_netns_alive(const char *path)
{
	struct statfs fs;
	return statfs(path, &fs) == 0 && fs.f_type == NSFS_MAGIC;
}

int cni_loopback_up(const char *netns_path, ad_error **err)
{
	struct cni_netns_job job = {.path = netns_path, .op = NETNS_LOOPBACK_UP};
	return cni_netns_run(&job, err);
}

int cni_netns_connect(const char *netns_path, uint16_t port, int *ret_fd, ad_error **err)
{
	struct cni_netns_job job = {
	    .path = netns_path, .op = NETNS_CONNECT, .port = port, .fd = -1};
	if (!netns_path)
		netns_connect(&job);
	else if (netns_thread_run(&job, err) < 0)
		return -1;
	if (job.fd >= 0) {
		*ret_fd = job.fd;
		return 0;
	}
	/* Nothing listening is the caller's to report, not agentd's failure. */
	return ad_error_make(err, strcmp(job.what, "connect") ? AD_E_INTERNAL : AD_E_UNAVAILABLE,
			     job.err_no, "%s 127.0.0.1:%u%s%s", job.what, port,
			     netns_path ? " in " : "", netns_path ? netns_path : "");
}

int cni_netdev_parse(const char *text, cni_if_stats **ret, size_t *ret_n, ad_error **err)
{
	*ret = NULL;
	*ret_n = 0;
	cni_if_stats *v = NULL;
	size_t n = 0;
	for (const char *line = text; line && *line;) {
		const char *eol = strchrnul(line, '\n');
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		/* The two header lines have '|' and no ':'. */
		if (colon) {
			const char *name = line + strspn(line, " \t");
			size_t name_len = (size_t)(colon - name);
			uint64_t f[16];
			int got = 0;
			const char *p = colon + 1;
			while (got < 16 && p < eol) {
				char *end;
				p += strspn(p, " \t");
				if (p >= eol)
					break;
				errno = 0;
				unsigned long long x = strtoull(p, &end, 10);
				if (end == p || errno)
					break;
				f[got++] = x;
				p = end;
			}
			if (got != 16 || name_len == 0 || name_len >= sizeof(v->name)) {
				free(v);
				return ad_fail(err, AD_E_INVALID, "net/dev: bad line '%.*s'",
					       (int)(eol - line), line);
			}
			v = ad_realloc(v, (n + 1) * sizeof(*v));
			v[n] = (cni_if_stats){.rx_bytes = f[0],
					      .rx_errors = f[2],
					      .tx_bytes = f[8],
					      .tx_errors = f[10],
					      .rx_packets = f[1],
					      .rx_dropped = f[3],
					      .tx_packets = f[9],
					      .tx_dropped = f[11]};
			memcpy(v[n].name, name, name_len);
			v[n].name[name_len] = '\0';
			n++;
		}
		line = *eol ? eol + 1 : eol;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}
