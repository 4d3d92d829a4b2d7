/* Child side of container setup: namespaces, the root filesystem (mounts,
 * /dev, pivot_root, masked and read-only paths), the user switch and the
 * executable lookup. Runs in the freshly cloned init, single-threaded. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <linux/nsfs.h>
#include <linux/stat.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <grp.h>
#include <limits.h>

#include "rt_internal.h"

/* musl's headers lack them; glibc's sys/mount.h has them. */
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

static const char *const default_masked[] = {"/proc/acpi",
					     "/proc/kcore",
					     "/proc/keys",
					     "/proc/latency_stats",
					     "/proc/timer_list",
					     "/proc/timer_stats",
					     "/proc/sched_debug",
					     "/proc/scsi",
					     "/sys/firmware",
					     "/sys/devices/virtual/powercap",
					     NULL};
static const char *const default_readonly[] = {
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL};

static const int ns_flags[_RT_NS_MAX] = {
    [RT_NS_PID] = CLONE_NEWPID,	      [RT_NS_NET] = CLONE_NEWNET,  [RT_NS_IPC] = CLONE_NEWIPC,
    [RT_NS_UTS] = CLONE_NEWUTS,	      [RT_NS_MOUNT] = CLONE_NEWNS, [RT_NS_USER] = CLONE_NEWUSER,
    [RT_NS_CGROUP] = CLONE_NEWCGROUP,
};

/* Whether the namespace behind ns_fd is owned by the user namespace
 * behind user_fd. */
static bool owned_by(int ns_fd, int user_fd)
{
	int owner = ioctl(ns_fd, NS_GET_USERNS);
	if (owner < 0)
		return false;
	struct stat a, b;
	bool same = fstat(owner, &a) == 0 && fstat(user_fd, &b) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev;
	close(owner);
	return same;
}

int rt_setns_ordered(const int *fds, const int *flags, const char *const *names, size_t n,
		     ad_error **err)
{
	/* setns needs CAP_SYS_ADMIN in the namespace's owner: one owned by an
	 * ancestor (the node's pinned netns) can only be joined before the user
	 * namespace, and one owned by it (the pod's IPC, UTS, pid) only after. */
	int user = -1;
	for (size_t i = 0; i < n; i++)
		if (flags[i] == CLONE_NEWUSER)
			user = fds[i];
	if (n > RT_SHIM_MAX_NS_FDS)
		return ad_fail(err, AD_E_INTERNAL, "too many namespaces to join");
	bool after[RT_SHIM_MAX_NS_FDS] = {0};
	for (size_t i = 0; i < n; i++)
		after[i] = user >= 0 && flags[i] != CLONE_NEWUSER && owned_by(fds[i], user);
	for (int phase = 0; phase < 3; phase++)
		for (size_t i = 0; i < n; i++) {
			bool is_user = flags[i] == CLONE_NEWUSER;
			if ((phase == 1) != is_user || (phase == 2) != (!is_user && after[i]))
				continue;
			if (setns(fds[i], flags[i]) == 0)
				continue;
			if (names)
				return ad_fail_errno(err, AD_E_INVALID, "join namespace %s",
						     names[i]);
			return ad_fail_errno(err, AD_E_INVALID, "join namespace (flag 0x%x)",
					     (unsigned)flags[i]);
		}
	return 0;
}

int rt_open_namespaces(const rt_config *cfg, bool with_pid, rt_ns_fds *ret, ad_error **err)
{
	static const rt_ns_type order[] = {RT_NS_USER, RT_NS_IPC,    RT_NS_UTS,	 RT_NS_NET,
					   RT_NS_PID,  RT_NS_CGROUP, RT_NS_MOUNT};
	ret->n = 0;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		const rt_namespace *ns = &cfg->namespaces[order[i]];
		if (ns->mode != RT_NS_JOIN || (order[i] == RT_NS_PID && !with_pid))
			continue;
		int fd = open(ns->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rt_close_namespaces(ret);
			return ad_fail_errno(err, AD_E_INVALID, "namespace path %s", ns->path);
		}
		ret->fds[ret->n] = fd;
		ret->names[ret->n] = ns->path;
		ret->flags[ret->n++] = ns_flags[order[i]];
	}
	return 0;
}

void rt_close_namespaces(rt_ns_fds *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		close(ns->fds[i]);
	ns->n = 0;
}

int rt_join_namespaces(const rt_config *cfg, bool with_pid, ad_error **err)
{
	rt_ns_fds ns;
	if (rt_open_namespaces(cfg, with_pid, &ns, err) < 0)
		return -1;
	int r = rt_setns_ordered(ns.fds, ns.flags, ns.names, ns.n, err);
	rt_close_namespaces(&ns);
	return r;
}

static int make_in_root_depth(int root_fd, const char *path, bool as_file, int depth,
			      ad_error **err)
{
	if (depth > 40)
		return ad_fail(err, AD_E_INVALID, "%s: too many levels of symbolic links", path);
	_cleanup_free_ char *p = ad_strdup(path);
	int fd = ad_openat_in_root(root_fd, p, O_PATH, 0, NULL);
	if (fd >= 0)
		return fd;
	char *slash = strrchr(p, '/');
	_cleanup_close_ int parent = -1;
	const char *leaf = p;
	if (slash && slash != p) {
		*slash = '\0';
		parent = make_in_root_depth(root_fd, p, false, depth + 1, err);
		if (parent < 0)
			return -1;
		leaf = slash + 1;
	} else {
		parent = fcntl(root_fd, F_DUPFD_CLOEXEC, 3);
		leaf = slash ? slash + 1 : p;
	}
	if (*leaf == '\0')
		return fcntl(parent, F_DUPFD_CLOEXEC, 3);
	_cleanup_close_ int pdir = openat(parent, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pdir < 0)
		return ad_fail_errno(err, AD_E_INVALID, "%s: parent is not a directory", path);
	/* A dangling symlink (an image's "/dev -> /somewhere"): create its
	 * target instead, resolved inside the root like everything else. */
	char target[PATH_MAX];
	ssize_t tl = readlinkat(pdir, leaf, target, sizeof(target) - 1);
	if (tl > 0) {
		target[tl] = '\0';
		_cleanup_free_ char *next =
		    target[0] == '/' ? ad_strdup(target)
				     : ad_asprintf("%s/%s", slash && slash != p ? p : "", target);
		return make_in_root_depth(root_fd, next, as_file, depth + 1, err);
	}
	if (as_file) {
		int f = openat(pdir, leaf, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (f < 0 && errno != EEXIST)
			return ad_fail_errno(err, AD_E_INTERNAL, "create %s", path);
		if (f >= 0)
			close(f);
	} else if (mkdirat(pdir, leaf, 0755) < 0 && errno != EEXIST) {
		return ad_fail_errno(err, AD_E_INTERNAL, "mkdir %s", path);
	}
	return ad_openat_in_root(root_fd, path, O_PATH, 0, err);
}

/* mkdir -p of `path` inside the root `root_fd`, every component resolved in
 * the root, never following a symlink out of it. Returns an O_PATH fd of the
 * final directory (or, with as_file, of an empty file created there). */
static int make_in_root(int root_fd, const char *path, bool as_file, ad_error **err)
{
	return make_in_root_depth(root_fd, path, as_file, 0, err);
}

static int mount_fd(const char *src, int fd, const char *type, unsigned long flags,
		    const char *data, const char *what, ad_error **err)
{
	char target[64];
	snprintf(target, sizeof(target), "/proc/self/fd/%d", fd);
	if (mount(src, target, type, flags, data) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "mount %s", what);
	return 0;
}

static int mount_in_root(int root_fd, const char *dest, const char *src, const char *type,
			 unsigned long flags, const char *data, bool as_file, ad_error **err)
{
	_cleanup_close_ int fd = make_in_root(root_fd, dest, as_file, err);
	if (fd < 0)
		return -1;
	return mount_fd(src, fd, type, flags, data, dest, err);
}

static int setup_dev(int root_fd, bool in_userns, ad_error **err)
{
	if (mount_in_root(root_fd, "/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME,
			  "mode=755,size=65536k", false, err) < 0)
		return -1;
	_cleanup_close_ int dev =
	    ad_openat_in_root(root_fd, "/dev", O_RDONLY | O_DIRECTORY, 0, err);
	if (dev < 0)
		return -1;
	static const struct {
		const char *name;
		unsigned maj, min;
	} nodes[] = {{"null", 1, 3},   {"zero", 1, 5},	  {"full", 1, 7},
		     {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		if (!in_userns && mknodat(dev, nodes[i].name, S_IFCHR | 0666,
					  makedev(nodes[i].maj, nodes[i].min)) == 0)
			continue;
		/* In a user namespace mknod is refused: bind the host's node. */
		_cleanup_free_ char *dest = ad_asprintf("/dev/%s", nodes[i].name);
		_cleanup_free_ char *src = ad_asprintf("/dev/%s", nodes[i].name);
		if (mount_in_root(root_fd, dest, src, NULL, MS_BIND, NULL, true, err) < 0)
			return -1;
	}
	static const struct {
		const char *name, *target;
	} links[] = {{"ptmx", "pts/ptmx"},	    {"fd", "/proc/self/fd"},
		     {"stdin", "/proc/self/fd/0"},  {"stdout", "/proc/self/fd/1"},
		     {"stderr", "/proc/self/fd/2"}, {"core", "/proc/kcore"}};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlinkat(links[i].target, dev, links[i].name) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "symlink /dev/%s", links[i].name);
	if (mount_in_root(root_fd, "/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
			  "newinstance,ptmxmode=0666,mode=0620,gid=5", false, NULL) < 0 &&
	    /* gid 5 may be unmapped in a user namespace */
	    mount_in_root(root_fd, "/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
			  "newinstance,ptmxmode=0666,mode=0620", false, err) < 0)
		return -1;
	if (mount_in_root(root_fd, "/dev/shm", "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=1777,size=65536k", false, err) < 0)
		return -1;
	if (mount_in_root(root_fd, "/dev/mqueue", "mqueue", "mqueue",
			  MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false, err) < 0)
		return -1;
	return 0;
}

/* A remount must repeat the flags the source mount has: in a user namespace
 * they are locked and dropping one fails with EPERM. */
static unsigned long locked_flags(int fd)
{
	char p[64];
	struct statvfs sv;
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	if (statvfs(p, &sv) < 0)
		return 0;
	unsigned long f = 0;
	if (sv.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

static int user_mount(int root_fd, const rt_mount *m, ad_error **err)
{
	if (!m->destination || m->destination[0] != '/')
		return ad_fail(err, AD_E_INVALID, "mount destination must be absolute: %s",
			       m->destination ? m->destination : "(null)");
	_cleanup_close_ int fd = -1;
	unsigned long ro = m->readonly ? MS_RDONLY : 0;
	if (m->type && !strcmp(m->type, "tmpfs")) {
		fd = make_in_root(root_fd, m->destination, false, err);
		if (fd < 0 || mount_fd("tmpfs", fd, "tmpfs", MS_NOSUID | MS_NODEV | ro, m->options,
				       m->destination, err) < 0)
			return -1;
	} else if (!m->type || !strcmp(m->type, "bind")) {
		struct stat st;
		if (!m->source || stat(m->source, &st) < 0)
			return ad_fail_errno(err, AD_E_INVALID, "bind mount source %s",
					     m->source ? m->source : "(null)");
		fd = make_in_root(root_fd, m->destination, !S_ISDIR(st.st_mode), err);
		if (fd < 0 ||
		    mount_fd(m->source, fd, NULL, MS_BIND | MS_REC, NULL, m->destination, err) < 0)
			return -1;
		/* The first mount is the source's; reopen to reach the new one on top. */
		close(fd);
		fd = ad_openat_in_root(root_fd, m->destination, O_PATH, 0, err);
		if (fd < 0)
			return -1;
		if (ro &&
		    mount_fd(NULL, fd, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags(fd),
			     NULL, m->destination, err) < 0)
			return -1;
	} else {
		return ad_fail(err, AD_E_INVALID, "mount %s: unsupported type %s", m->destination,
			       m->type);
	}
	unsigned long prop = m->propagation == RT_PROP_RSHARED	? MS_SHARED
			     : m->propagation == RT_PROP_RSLAVE ? MS_SLAVE
								: MS_PRIVATE;
	close(fd);
	fd = ad_openat_in_root(root_fd, m->destination, O_PATH, 0, err);
	if (fd < 0)
		return -1;
	return mount_fd(NULL, fd, NULL, MS_REC | prop, NULL, m->destination, err);
}

int rt_stage_bind_sources(rt_config *cfg, ad_error **err)
{
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_mounts; i++)
		if ((!cfg->mounts[i].type || !strcmp(cfg->mounts[i].type, "bind")) &&
		    cfg->mounts[i].propagation != RT_PROP_RSHARED)
			n++;
	if (n == 0 || cfg->namespaces[RT_NS_MOUNT].mode == RT_NS_JOIN)
		return 0;
	/* A mount namespace of our own, nothing in it seen by the node's. */
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "bind mount sources: own mount namespace");
	/* Held open first: the staging tmpfs may hide where they are. */
	int *fds = ad_malloc0(cfg->n_mounts * sizeof(int));
	for (size_t i = 0; i < cfg->n_mounts; i++) {
		const rt_mount *m = &cfg->mounts[i];
		fds[i] = -1;
		if ((m->type && strcmp(m->type, "bind")) || m->propagation == RT_PROP_RSHARED)
			continue;
		fds[i] = m->source ? open(m->source, O_PATH | O_CLOEXEC) : -1;
		if (fds[i] < 0)
			return ad_fail_errno(err, AD_E_INVALID, "bind mount source %s",
					     m->source ? m->source : "(null)");
	}
	static const char *const places[] = {"/tmp", "/run", "/mnt", "/var"};
	const char *stage = NULL;
	for (size_t i = 0; i < sizeof(places) / sizeof(places[0]) && !stage; i++)
		if (mount("tmpfs", places[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=0711,size=64k") == 0)
			stage = places[i];
	if (!stage)
		return ad_fail_errno(err, AD_E_INTERNAL, "bind mount sources: no staging tmpfs");
	rt_mount *v = ad_malloc0(cfg->n_mounts * sizeof(*v));
	memcpy(v, cfg->mounts, cfg->n_mounts * sizeof(*v));
	for (size_t i = 0; i < cfg->n_mounts; i++) {
		rt_mount *m = &v[i];
		if (fds[i] < 0)
			continue;
		struct stat st;
		if (fstat(fds[i], &st) < 0)
			return ad_fail_errno(err, AD_E_INVALID, "bind mount source %s", m->source);
		/* Kept for the init (a copy of this process), which execs or dies. */
		char *at = ad_asprintf("%s/%zu", stage, i);
		char from[64];
		snprintf(from, sizeof(from), "/proc/self/fd/%d", fds[i]);
		int made = S_ISDIR(st.st_mode) ? mkdir(at, 0711) : mknod(at, S_IFREG | 0600, 0);
		if (made < 0 || mount(from, at, NULL, MS_BIND | MS_REC, NULL) < 0)
			return ad_fail_errno(err, AD_E_INVALID, "bind mount source %s", m->source);
		close(fds[i]);
		m->source = at;
	}
	free(fds);
	cfg->mounts = v;
	return 0;
}

static int mask_path(const char *path, ad_error **err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return 0; /* nothing to hide */
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0") < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "mask %s", path);
	} else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
		return ad_fail_errno(err, AD_E_INTERNAL, "mask %s", path);
	}
	return 0;
}

static int readonly_path(const char *path, ad_error **err)
{
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
		if (errno == ENOENT)
			return 0;
		return ad_fail_errno(err, AD_E_INTERNAL, "bind %s", path);
	}
	if (mount(NULL, path, NULL,
		  MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REC,
		  NULL) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "make %s read-only", path);
	return 0;
}

/* /sys/fs/cgroup as the container sees it: each of the host's hierarchies,
 * mounted read-only from inside the new cgroup namespace (so its own cgroup
 * is the root). Runtimes such as the JVM and Go size themselves from it. A
 * hierarchy that cannot be mounted (some in a user namespace) is skipped. */
/* Whether every controller of a /proc/self/cgroup line's list is among
 * the hierarchy's mount options. */
static bool same_hierarchy(const char *controllers, size_t len, const char *options)
{
	char list[256];
	snprintf(list, sizeof(list), "%.*s", (int)len, controllers);
	if (!*list)
		return false;
	for (char *save = NULL, *c = strtok_r(list, ",", &save); c;
	     c = strtok_r(NULL, ",", &save)) {
		bool found = false;
		size_t cl = strlen(c);
		for (const char *o = options; *o && !found;) {
			const char *end = strchrnul(o, ',');
			found = (size_t)(end - o) == cl && !strncmp(o, c, cl);
			o = *end ? end + 1 : end;
		}
		if (!found)
			return false;
	}
	return true;
}

/* In a user namespace a v1 hierarchy cannot be mounted: bind the node's
 * mount of our own cgroup in it instead, read-only (as crun does). */
static int bind_own_cgroup(const char *host_mp, const char *options, const char *own_cgroups,
			   int dest_fd, const char *dest)
{
	for (const char *l = own_cgroups; l && *l;) {
		const char *end = strchrnul(l, '\n');
		const char *c1 = memchr(l, ':', (size_t)(end - l));
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
		if (c2 && same_hierarchy(c1 + 1, (size_t)(c2 - c1 - 1), options)) {
			_cleanup_free_ char *src =
			    ad_asprintf("%s%.*s", host_mp, (int)(end - c2 - 1), c2 + 1);
			if (mount_fd(src, dest_fd, NULL, MS_BIND, NULL, dest, NULL) < 0)
				return -1;
			char p[64];
			snprintf(p, sizeof(p), "/proc/self/fd/%d", dest_fd);
			_cleanup_close_ int top = open(p, O_PATH | O_CLOEXEC);
			return top < 0
				   ? -1
				   : mount_fd(NULL, top, NULL,
					      MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags(top),
					      NULL, dest, NULL);
		}
		l = *end ? end + 1 : end;
	}
	return -1;
}

static int setup_cgroupfs(int root_fd, const char *own_cgroups, ad_error **err)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return ad_fail_errno(err, AD_E_INTERNAL, "read mountinfo");
	_cleanup_close_ int cgfd = -1;
	char *line = NULL;
	size_t cap = 0;
	int r = 0;
	while (r == 0 && getline(&line, &cap, f) > 0) {
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		char mp[512], fstype[64], src[256], opts[512] = "";
		if (sscanf(line, "%*s %*s %*s %*s %511s", mp) != 1 ||
		    sscanf(sep + 3, "%63s %255s %511s", fstype, src, opts) < 2)
			continue;
		bool v2 = !strcmp(fstype, "cgroup2");
		if ((!v2 && strcmp(fstype, "cgroup")) || strncmp(mp, "/sys/fs/cgroup", 14))
			continue;
		const char *leaf = mp[14] == '/' ? mp + 15 : "";
		if (strchr(leaf, '/'))
			continue;
		if (cgfd < 0) {
			if (mount_in_root(root_fd, "/sys/fs/cgroup", "tmpfs", "tmpfs",
					  MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=64k",
					  false, err) < 0) {
				r = -1;
				break;
			}
			cgfd = ad_openat_in_root(root_fd, "/sys/fs/cgroup", O_PATH, 0, err);
			if (cgfd < 0) {
				r = -1;
				break;
			}
		}
		/* super options without rw/ro: the controllers (and name=) */
		char data[512] = "";
		for (char *t = strtok(opts, ","); t; t = strtok(NULL, ","))
			if (strcmp(t, "rw") && strcmp(t, "ro"))
				snprintf(data + strlen(data), sizeof(data) - strlen(data), "%s%s",
					 data[0] ? "," : "", t);
		_cleanup_free_ char *dest =
		    ad_asprintf("/sys/fs/cgroup%s%s", *leaf ? "/" : "", leaf);
		_cleanup_close_ int fd = make_in_root(root_fd, dest, false, NULL);
		if (fd >= 0 && mount_fd(v2 ? "cgroup2" : "cgroup", fd, fstype,
					MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
					v2 ? NULL : data, dest, NULL) == 0)
			continue;
		if (fd < 0 || !own_cgroups || bind_own_cgroup(mp, data, own_cgroups, fd, dest) < 0)
			ad_debug("container cgroupfs: %s not mounted", dest);
	}
	free(line);
	fclose(f);
	if (r == 0 && cgfd >= 0 &&
	    mount_fd(NULL, cgfd, NULL,
		     MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL,
		     "/sys/fs/cgroup", err) < 0)
		r = -1;
	return r;
}

static bool has_bidirectional_mount(const rt_config *cfg)
{
	for (size_t i = 0; i < cfg->n_mounts; i++)
		if (cfg->mounts[i].propagation == RT_PROP_RSHARED)
			return true;
	return false;
}

/* The id of the mount `path` is on (musl has no statx wrapper). */
static int mount_id(const char *path, uint64_t *ret)
{
	struct statx sx;
	if (syscall(SYS_statx, AT_FDCWD, path, 0, STATX_MNT_ID, &sx) < 0)
		return -1;
	*ret = sx.stx_mnt_id;
	return 0;
}

/* The mount point of the mount that holds `path`: the last directory on the
 * way up that is on the same mount as path. */
static int mount_point_of(const char *path, char **ret, ad_error **err)
{
	_cleanup_free_ char *p = realpath(path, NULL);
	uint64_t id, up_id;
	if (!p || mount_id(p, &id) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "rootfs %s", path);
	while (strcmp(p, "/") != 0) {
		char *slash = strrchr(p, '/');
		_cleanup_free_ char *up =
		    slash == p ? ad_strdup("/") : ad_strndup(p, (size_t)(slash - p));
		if (mount_id(up, &up_id) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "stat %s", up);
		if (up_id != id)
			break;
		free(p);
		p = ad_steal_ptr(up);
	}
	*ret = ad_steal_ptr(p);
	return 0;
}

int rt_setup_rootfs_base(const rt_config *cfg, int *ret_root, ad_error **err)
{
	bool in_userns = cfg->namespaces[RT_NS_USER].mode != RT_NS_SHARE_HOST;
	/* Nothing mounted from here on may leak back to the host: everything
	 * rslave, as runc's default root propagation. A bidirectional volume
	 * must join its host mount's peer group instead, which needs its source
	 * still shared when it is bound: then "/" is made rshared (as containerd
	 * asks of runc then), and the mount holding the rootfs private, so that
	 * neither the rootfs bind nor anything under it reaches the host (and
	 * pivot_root accepts it). */
	bool bidirectional = has_bidirectional_mount(cfg);
	if (mount(NULL, "/", NULL, MS_REC | (bidirectional ? MS_SHARED : MS_SLAVE), NULL) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "make / %s",
				     bidirectional ? "rshared" : "rslave");
	if (bidirectional) {
		_cleanup_free_ char *mp = NULL;
		if (mount_point_of(cfg->rootfs, &mp, err) < 0)
			return -1;
		if (mount(NULL, mp, NULL, MS_PRIVATE, NULL) < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "make %s private", mp);
	}
	/* The rootfs is our cwd (the shim's chdir before the clone, which the
	 * new mount namespace moved to its copy of the mount): reached without
	 * walking its path, which in a user namespace may cross directories
	 * only the host's root may search. Bound onto itself: the container's
	 * own mount, whose root becomes `root`. */
	if (cfg->namespaces[RT_NS_MOUNT].mode == RT_NS_JOIN && chdir(cfg->rootfs) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "rootfs %s", cfg->rootfs);
	_cleanup_close_ int root = (int)syscall(SYS_open_tree, AT_FDCWD, ".",
						OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (root < 0 ||
	    syscall(SYS_move_mount, root, "", AT_FDCWD, ".", MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "bind rootfs %s", cfg->rootfs);
	if (mount_in_root(root, "/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL,
			  false, err) < 0)
		return -1;
	if (setup_dev(root, in_userns, err) < 0)
		return -1;
	unsigned long sysflags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (mount_in_root(root, "/sys", "sysfs", "sysfs", sysflags, NULL, false, NULL) < 0) {
		/* sysfs needs a network namespace we own; fall back to the host's. */
		_cleanup_close_ int sys = make_in_root(root, "/sys", false, err);
		if (sys < 0 || mount_fd("/sys", sys, NULL, MS_BIND | MS_REC, NULL, "/sys", err) < 0)
			return -1;
		close(sys);
		sys = ad_openat_in_root(root, "/sys", O_PATH, 0, err);
		if (sys < 0 || mount_fd(NULL, sys, NULL, MS_BIND | MS_REMOUNT | sysflags, NULL,
					"/sys", err) < 0)
			return -1;
	}
	*ret_root = ad_steal_fd(root);
	return 0;
}

int rt_setup_rootfs_finish(const rt_config *cfg, int root, const char *own_cgroups, ad_error **err)
{
	if (cfg->namespaces[RT_NS_CGROUP].mode == RT_NS_NEW &&
	    setup_cgroupfs(root, own_cgroups, err) < 0)
		return -1;
	for (size_t i = 0; i < cfg->n_mounts; i++)
		if (user_mount(root, &cfg->mounts[i], err) < 0)
			return -1;

	_cleanup_close_ int old_root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (old_root < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "open /");
	if (fchdir(root) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "chdir rootfs");
	/* pivot_root(".", ".") stacks the old root on the new one; detaching it
	 * leaves no path back to the host. The old root is made rslave first:
	 * where it is still shared with the host (with a bidirectional volume),
	 * the unmount would propagate and unmount the host's mounts. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "pivot_root %s", cfg->rootfs);
	if (fchdir(old_root) < 0 || mount(NULL, ".", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "make the old root rslave");
	if (umount2(".", MNT_DETACH) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "detach the old root");
	if (chdir("/") < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "chdir /");
	/* The container's own mounts share among themselves as well (nothing of
	 * the host is left to share with but the bidirectional volumes). */
	if (has_bidirectional_mount(cfg) && mount(NULL, "/", NULL, MS_REC | MS_SHARED, NULL) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "make the container's / rshared");

	if (!cfg->security.privileged) {
		const char *const *masked =
		    cfg->security.masked_paths ? cfg->security.masked_paths : default_masked;
		const char *const *ro =
		    cfg->security.readonly_paths ? cfg->security.readonly_paths : default_readonly;
		for (size_t i = 0; masked[i]; i++)
			if (mask_path(masked[i], err) < 0)
				return -1;
		for (size_t i = 0; ro[i]; i++)
			if (readonly_path(ro[i], err) < 0)
				return -1;
	}
	if (cfg->security.readonly_rootfs &&
	    mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "make the rootfs read-only");
	return 0;
}

int rt_switch_user(const rt_config *cfg, ad_error **err)
{
	if (cfg->uid == (uid_t)-1 || cfg->gid == (gid_t)-1)
		return ad_fail(err, AD_E_INVALID, "invalid uid/gid %d:%d", (int)cfg->uid,
			       (int)cfg->gid);
	if (setgroups(cfg->n_additional_gids, cfg->additional_gids) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "set additional gids");
	if (setresgid(cfg->gid, cfg->gid, cfg->gid) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "invalid gid %u", (unsigned)cfg->gid);
	if (setresuid(cfg->uid, cfg->uid, cfg->uid) < 0)
		return ad_fail_errno(err, AD_E_INVALID, "invalid uid %u", (unsigned)cfg->uid);
	return 0;
}

static bool is_executable(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int rt_find_executable(const char *name, const char *const *env, char **ret, ad_error **err)
{
	if (!name || !*name)
		return ad_fail(err, AD_E_INVALID, "no executable given");
	if (strchr(name, '/')) {
		if (!is_executable(name))
			return ad_fail_errno(err, AD_E_NOT_FOUND, "executable file not found: %s",
					     name);
		*ret = ad_strdup(name);
		return 0;
	}
	const char *path = RT_DEFAULT_PATH;
	for (size_t i = 0; env && env[i]; i++)
		if (!strncmp(env[i], "PATH=", 5))
			path = env[i] + 5;
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, ':');
		_cleanup_free_ char *cand = end == p
						? ad_asprintf("./%s", name)
						: ad_asprintf("%.*s/%s", (int)(end - p), p, name);
		if (is_executable(cand)) {
			*ret = ad_steal_ptr(cand);
			return 0;
		}
		p = *end ? end + 1 : end;
	}
	return ad_fail(err, AD_E_NOT_FOUND, "executable file not found: %s in PATH=%s", name, path);
}
