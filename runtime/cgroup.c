/* cgroup.c — version detection, path validation, shared file helpers and the
 * public entry points that dispatch to the v1 or v2 driver. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "cgroup_internal.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CG_DEFAULT_ROOT "/sys/fs/cgroup"

static struct {
	int version; /* 0: not detected yet */
	bool testing;
	char *root;
	cg_v1_hier hiers[CG_V1_MAX_HIER];
	size_t n_hiers;
} cg_layout;
static pthread_once_t cg_layout_once = PTHREAD_ONCE_INIT;

static const struct {
	const char *name;
	unsigned bit;
} cg_ctrl_names[] = {
    {"cpu", CG_CTRL_CPU},	    {"cpuacct", CG_CTRL_CPUACCT},
    {"cpuset", CG_CTRL_CPUSET},	    {"memory", CG_CTRL_MEMORY},
    {"devices", CG_CTRL_DEVICES},   {"freezer", CG_CTRL_FREEZER},
    {"blkio", CG_CTRL_BLKIO},	    {"pids", CG_CTRL_PIDS},
    {"hugetlb", CG_CTRL_HUGETLB},   {"net_cls", CG_CTRL_NET_CLS},
    {"net_prio", CG_CTRL_NET_PRIO}, {"perf_event", CG_CTRL_PERF_EVENT},
    {"rdma", CG_CTRL_RDMA},	    {"misc", CG_CTRL_MISC},
};

/* Comma-separated options -> mask of known controllers (unknown ones and
 * named hierarchies such as name=systemd contribute nothing). */
static unsigned cg_ctrl_mask(const char *opts)
{
	unsigned mask = 0;
	const char *p = opts;
	while (*p) {
		size_t len = strcspn(p, ",");
		for (size_t i = 0; i < sizeof(cg_ctrl_names) / sizeof(cg_ctrl_names[0]); i++)
			if (strlen(cg_ctrl_names[i].name) == len &&
			    memcmp(cg_ctrl_names[i].name, p, len) == 0)
				mask |= cg_ctrl_names[i].bit;
		p += len;
		if (*p == ',')
			p++;
	}
	return mask;
}

static void cg_add_hier(const char *mountpoint, unsigned mask)
{
	if (mask == 0 || cg_layout.n_hiers == CG_V1_MAX_HIER)
		return;
	/* A controller can be mounted more than once; the first mount wins. */
	for (size_t i = 0; i < cg_layout.n_hiers; i++)
		if (cg_layout.hiers[i].mask & mask)
			return;
	cg_layout.hiers[cg_layout.n_hiers].mountpoint = ad_strdup(mountpoint);
	cg_layout.hiers[cg_layout.n_hiers].mask = mask;
	cg_layout.n_hiers++;
}

/* mountinfo escapes blanks and backslashes as \ooo. */
static void cg_unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

bool cg_parse_mountinfo_line(char *line, const char **ret_mountpoint, unsigned *ret_mask)
{
	/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
	char *save = NULL, *fields[5] = {0};
	char *tok = strtok_r(line, " \n", &save);
	for (int i = 0; i < 5 && tok; i++, tok = strtok_r(NULL, " \n", &save))
		fields[i] = tok;
	if (!fields[4])
		return false;
	while (tok && strcmp(tok, "-") != 0)
		tok = strtok_r(NULL, " \n", &save);
	char *fstype = tok ? strtok_r(NULL, " \n", &save) : NULL;
	char *source = fstype ? strtok_r(NULL, " \n", &save) : NULL;
	char *superopts = source ? strtok_r(NULL, " \n", &save) : NULL;
	if (!superopts || strcmp(fstype, "cgroup") != 0)
		return false;
	unsigned mask = cg_ctrl_mask(superopts);
	if (mask == 0)
		return false;
	cg_unescape(fields[4]);
	*ret_mountpoint = fields[4];
	*ret_mask = mask;
	return true;
}

static void cg_scan_mountinfo(void)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		const char *mp;
		unsigned mask;
		if (cg_parse_mountinfo_line(line, &mp, &mask))
			cg_add_hier(mp, mask);
	}
}

/* Test layout for v1: every subdirectory of root is a hierarchy named by its
 * controllers ("cpu,cpuacct"). */
static void cg_scan_test_root(const char *root)
{
	DIR *d = opendir(root);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *mp = ad_asprintf("%s/%s", root, de->d_name);
		cg_add_hier(mp, cg_ctrl_mask(de->d_name));
	}
	closedir(d);
}

static void cg_detect(void)
{
	if (cg_layout.version)
		return;
	cg_layout.root = ad_strdup(CG_DEFAULT_ROOT);
	struct statfs sfs;
	/* Like runc: only a cgroup2 mount at the root itself means v2; a hybrid
	 * host (cgroup2 at .../unified next to v1 controllers) is v1. */
	if (statfs(CG_DEFAULT_ROOT, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
		cg_layout.version = 2;
		return;
	}
	cg_layout.version = 1;
	cg_scan_mountinfo();
}

static void cg_layout_reset(void)
{
	free(cg_layout.root);
	cg_layout.root = NULL;
	for (size_t i = 0; i < cg_layout.n_hiers; i++)
		free(cg_layout.hiers[i].mountpoint);
	cg_layout.n_hiers = 0;
	cg_layout.version = 0;
	cg_layout.testing = false;
}

int cg_set_root_for_testing(const char *root, int version)
{
	pthread_once(&cg_layout_once, cg_detect);
	cg_layout_reset();
	if (!root) {
		cg_detect();
		return 0;
	}
	if (version != 1 && version != 2)
		return -1;
	cg_layout.root = ad_strdup(root);
	cg_layout.version = version;
	cg_layout.testing = true;
	if (version == 1)
		cg_scan_test_root(root);
	return 0;
}

static int cg_version(void)
{
	pthread_once(&cg_layout_once, cg_detect);
	return cg_layout.version;
}

const char *cg_version_name(void)
{
	return cg_version() == 2 ? "v2" : "v1";
}

const char *cg_root(void)
{
	return cg_layout.root;
}
bool cg_testing(void)
{
	return cg_layout.testing;
}
size_t cg_v1_hier_count(void)
{
	return cg_layout.n_hiers;
}
const cg_v1_hier *cg_v1_hier_get(size_t i)
{
	return &cg_layout.hiers[i];
}

/* ---- file helpers ---- */

int cg_write(const char *dir, const char *file, const char *value, ad_error **err)
{
	_cleanup_free_ char *path = ad_asprintf("%s/%s", dir, file);
	/* The test stand-in is a plain directory: files appear on first write. */
	int flags = O_WRONLY | O_TRUNC | O_CLOEXEC | (cg_layout.testing ? O_CREAT : 0);
	_cleanup_close_ int fd = open(path, flags, 0644);
	if (fd < 0) {
		/* kernfs answers EACCES, not ENOENT, for a missing file opened
		 * with O_TRUNC; callers need to know it is missing. */
		int e = errno;
		if (e == ENOENT || (e == EACCES && access(path, F_OK) < 0 && errno == ENOENT))
			return ad_error_make(err, AD_E_NOT_FOUND, ENOENT, "open %s", path);
		return ad_error_make(err,
				     e == EACCES || e == EPERM ? AD_E_PERMISSION : AD_E_INTERNAL, e,
				     "open %s", path);
	}
	size_t len = strlen(value);
	ssize_t n = write(fd, value, len);
	if (n < 0) {
		int e = errno;
		ad_code code = e == EINVAL || e == ERANGE ? AD_E_INVALID : AD_E_INTERNAL;
		if (e == EBUSY)
			code = AD_E_PRECONDITION;
		return ad_error_make(err, code, e, "write \"%s\" to %s", value, path);
	}
	if ((size_t)n != len)
		return ad_fail(err, AD_E_INTERNAL, "short write of \"%s\" to %s", value, path);
	return 0;
}

int cg_writef(const char *dir, const char *file, ad_error **err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *value = NULL;
	int r = vasprintf(&value, fmt, ap);
	va_end(ap);
	if (r < 0)
		return ad_fail(err, AD_E_INTERNAL, "out of memory");
	return cg_write(dir, file, value, err);
}

int cg_read(const char *dir, const char *file, char **ret, ad_error **err)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
		return ad_fail(err, AD_E_INVALID, "cgroup path %s/%s too long", dir, file);
	/* Nearly every cgroup file is one short seq_file read: a read that
	 * does not fill the buffer returned it all, so the usual
	 * read-until-0 would cost a syscall more per file (the metrics scrape
	 * reads ~15 files per container). Longer ones take the general path. */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ad_fail_errno(err, errno == ENOENT ? AD_E_NOT_FOUND : AD_E_INTERNAL, "open %s",
				     path);
	char buf[4096];
	ssize_t n;
	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "read %s", path);
	if ((size_t)n < sizeof(buf)) {
		*ret = ad_strndup(buf, (size_t)n);
		return 0;
	}
	return ad_read_file(AT_FDCWD, path, CG_MAX_FILE, ret, NULL, err);
}

static int cg_parse_u64(const char *s, uint64_t *ret)
{
	while (isspace((unsigned char)*s))
		s++;
	if (strncmp(s, "max", 3) == 0 && (s[3] == '\0' || isspace((unsigned char)s[3]))) {
		*ret = UINT64_MAX;
		return 0;
	}
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	while (isspace((unsigned char)*end))
		end++;
	if (*end)
		return -1;
	*ret = v;
	return 0;
}

int cg_read_u64(const char *dir, const char *file, uint64_t *ret, ad_error **err)
{
	_cleanup_free_ char *text = NULL;
	if (cg_read(dir, file, &text, err) < 0)
		return -1;
	if (cg_parse_u64(text, ret) < 0)
		return ad_fail(err, AD_E_INTERNAL, "%s/%s: not a number: \"%.40s\"", dir, file,
			       text);
	return 0;
}

size_t cg_parse_keys(const char *text, const cg_key *keys, size_t n)
{
	size_t found = 0;
	for (const char *p = text; p && *p;) {
		size_t klen = strcspn(p, " \t\n");
		for (size_t i = 0; p[klen] && p[klen] != '\n' && i < n; i++) {
			if (strncmp(keys[i].name, p, klen) != 0 || keys[i].name[klen])
				continue;
			errno = 0;
			char *end;
			unsigned long long v = strtoull(p + klen + 1, &end, 10);
			if (errno == 0 && end != p + klen + 1) {
				*keys[i].ret = v;
				found++;
			}
			break;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return found;
}

bool cg_parse_keyed(const char *text, const char *key, uint64_t *ret)
{
	return cg_parse_keys(text, &(cg_key){key, ret}, 1) > 0;
}

int cg_read_opt(const char *dir, const char *file, char **ret, ad_error **err)
{
	*ret = NULL;
	if (!dir)
		return 0;
	_cleanup_error_ ad_error *e = NULL;
	if (cg_read(dir, file, ret, &e) == 0 || e->code == AD_E_NOT_FOUND)
		return 0;
	if (err)
		*err = ad_steal_ptr(e);
	return -1;
}

int cg_read_u64_opt(const char *dir, const char *file, uint64_t *ret, ad_error **err)
{
	_cleanup_free_ char *text = NULL;
	if (cg_read_opt(dir, file, &text, err) < 0)
		return -1;
	if (text && cg_parse_u64(text, ret) < 0)
		return ad_fail(err, AD_E_INTERNAL, "%s/%s: not a number: \"%.40s\"", dir, file,
			       text);
	return 0;
}

bool cg_file_exists(const char *dir, const char *file)
{
	_cleanup_free_ char *path = ad_asprintf("%s/%s", dir, file);
	return access(path, F_OK) == 0;
}

/* ---- stats files, kept open ---- */

/* The slot's fd: -1 with *err on failure, -2 for a missing file. */
static int stat_fd(cg_manager *cg, unsigned slot, const char *dir, const char *file, ad_error **err)
{
	if (slot >= CG_STAT_SLOTS)
		return ad_fail(err, AD_E_INTERNAL, "cgroup stats slot %u out of range", slot);
	if (!dir)
		return -2;
	if (cg->stat_fds[slot] == 0) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
			return ad_fail(err, AD_E_INVALID, "cgroup path %s/%s too long", dir, file);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && errno != ENOENT)
			return ad_fail_errno(err, AD_E_INTERNAL, "open %s", path);
		cg->stat_fds[slot] = fd < 0 ? -1 : fd + 1;
	}
	return cg->stat_fds[slot] < 0 ? -2 : cg->stat_fds[slot] - 1;
}

/* pread at `off`: seq_file (every cgroup file) renders the file afresh for a
 * read from offset 0. */
static ssize_t stat_pread(int fd, const char *dir, const char *file, char *buf, size_t len,
			  off_t off, ad_error **err)
{
	ssize_t n;
	do
		n = pread(fd, buf, len, off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		/* ENODEV: the cgroup was removed while its file was open. */
		return ad_fail_errno(err, errno == ENODEV ? AD_E_NOT_FOUND : AD_E_INTERNAL,
				     "read %s/%s", dir, file);
	return n;
}

int cg_stat_text(cg_manager *cg, unsigned slot, const char *dir, const char *file, char *text,
		 size_t len, ad_error **err)
{
	text[0] = '\0';
	unsigned bit = slot < CG_STAT_SLOTS ? 1u << slot : 0;
	if (cg->stat_spec_cached & bit) {
		snprintf(text, len, "%s", cg->stat_spec_text[slot]);
		return 1;
	}
	int fd = stat_fd(cg, slot, dir, file, err);
	if (fd == -2)
		return 0;
	ssize_t n = fd < 0 ? -1 : stat_pread(fd, dir, file, text, len - 1, 0, err);
	if (n < 0)
		return -1;
	text[n] = '\0';
	if ((cg->stat_spec_mask & bit) && (size_t)n < sizeof(cg->stat_spec_text[slot])) {
		memcpy(cg->stat_spec_text[slot], text, (size_t)n + 1);
		cg->stat_spec_cached |= bit;
		close(fd); /* not needed until cg_update */
		cg->stat_fds[slot] = 0;
	}
	return 1;
}

int cg_stat_u64(cg_manager *cg, unsigned slot, const char *dir, const char *file, uint64_t *ret,
		ad_error **err)
{
	char text[64];
	int r = cg_stat_text(cg, slot, dir, file, text, sizeof(text), err);
	if (r > 0 && cg_parse_u64(text, ret) < 0)
		return ad_fail(err, AD_E_INTERNAL, "%s/%s: not a number: \"%.40s\"", dir, file,
			       text);
	return r;
}

int cg_stat_lines(cg_manager *cg, unsigned slot, const char *dir, const char *file, size_t *ret,
		  ad_error **err)
{
	int fd = stat_fd(cg, slot, dir, file, err);
	if (fd == -2)
		return 0;
	if (fd < 0)
		return -1;
	char buf[4096];
	size_t lines = 0;
	off_t off = 0;
	/* Not kept open: v1 serves cgroup.procs and tasks from a pid list it
	 * keeps per open file and reuses for a read from 0 within a second, so a
	 * kept fd would see processes that are gone and miss new ones. */
	cg->stat_fds[slot] = 0;
	int r = 1;
	for (;;) {
		ssize_t n = stat_pread(fd, dir, file, buf, sizeof(buf), off, err);
		if (n <= 0) {
			r = n < 0 ? -1 : 1;
			break;
		}
		for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + n - p))); p++)
			lines++;
		off += n;
		if (off > (off_t)CG_MAX_FILE) {
			r = ad_fail(err, AD_E_INTERNAL, "%s/%s: longer than %u bytes", dir, file,
				    CG_MAX_FILE);
			break;
		}
	}
	close(fd);
	if (r > 0)
		*ret = lines;
	return r;
}

void cg_stat_close(cg_manager *cg)
{
	for (size_t i = 0; i < CG_STAT_SLOTS; i++) {
		if (cg->stat_fds[i] > 0)
			close(cg->stat_fds[i] - 1);
		cg->stat_fds[i] = 0;
	}
}

/* ---- validation ---- */

int cg_validate_cpuset(const char *what, const char *value, ad_error **err)
{
	/* Linux list format: "N" or "N-M" items separated by commas. */
	const char *p = value;
	if (!*p)
		return ad_fail(err, AD_E_INVALID, "%s \"%s\": empty", what, value);
	if (strlen(value) > 4096)
		return ad_fail(err, AD_E_INVALID, "%s: longer than 4096 bytes", what);
	for (;;) {
		if (!isdigit((unsigned char)*p))
			return ad_fail(err, AD_E_INVALID, "%s \"%s\": expected a number at \"%s\"",
				       what, value, p);
		char *end;
		errno = 0;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		if (errno || lo > 65535)
			return ad_fail(err, AD_E_INVALID, "%s \"%s\": number out of range", what,
				       value);
		p = end;
		if (*p == '-') {
			p++;
			if (!isdigit((unsigned char)*p))
				return ad_fail(err, AD_E_INVALID,
					       "%s \"%s\": expected a number after '-'", what,
					       value);
			errno = 0;
			hi = strtoul(p, &end, 10);
			if (errno || hi > 65535)
				return ad_fail(err, AD_E_INVALID, "%s \"%s\": number out of range",
					       what, value);
			if (hi < lo)
				return ad_fail(err, AD_E_INVALID,
					       "%s \"%s\": range %lu-%lu is reversed", what, value,
					       lo, hi);
			p = end;
		}
		if (*p == '\0')
			return 0;
		if (*p != ',')
			return ad_fail(err, AD_E_INVALID, "%s \"%s\": unexpected '%c'", what, value,
				       *p);
		p++;
	}
}

int cg_validate_resources(const rt_resources *res, ad_error **err)
{
	if (!res)
		return 0;
	/* The kernel's bounds for v1 cpu.shares; v2 weight is derived from them. */
	if (res->cpu_shares && (res->cpu_shares < 2 || res->cpu_shares > 262144))
		return ad_fail(err, AD_E_INVALID, "cpu shares %" PRIu64 " out of range 2..262144",
			       res->cpu_shares);
	if (res->cpu_quota_us < -1 || (res->cpu_quota_us > 0 && res->cpu_quota_us < 1000))
		return ad_fail(err, AD_E_INVALID,
			       "cpu quota %" PRId64 "us: must be -1 (unlimited) or at least 1000",
			       res->cpu_quota_us);
	if (res->cpu_period_us && (res->cpu_period_us < 1000 || res->cpu_period_us > 1000000))
		return ad_fail(err, AD_E_INVALID,
			       "cpu period %" PRIu64 "us out of range 1000..1000000",
			       res->cpu_period_us);
	if (res->cpuset_cpus && *res->cpuset_cpus &&
	    cg_validate_cpuset("cpuset cpus", res->cpuset_cpus, err) < 0)
		return -1;
	if (res->cpuset_mems && *res->cpuset_mems &&
	    cg_validate_cpuset("cpuset mems", res->cpuset_mems, err) < 0)
		return -1;
	if (res->memory_limit < -1)
		return ad_fail(err, AD_E_INVALID, "memory limit %" PRId64 " is negative",
			       res->memory_limit);
	if (res->memory_limit > 0 && res->memory_limit < 4096)
		return ad_fail(err, AD_E_INVALID, "memory limit %" PRId64 " is below one page",
			       res->memory_limit);
	if (res->memory_swap < -1)
		return ad_fail(err, AD_E_INVALID, "memory+swap limit %" PRId64 " is negative",
			       res->memory_swap);
	if (res->memory_swap > 0) {
		if (res->memory_limit <= 0)
			return ad_fail(err, AD_E_INVALID,
				       "memory+swap limit %" PRId64 " needs a memory limit",
				       res->memory_swap);
		if (res->memory_swap < res->memory_limit)
			return ad_fail(err, AD_E_INVALID,
				       "memory+swap limit %" PRId64
				       " is below the memory limit %" PRId64,
				       res->memory_swap, res->memory_limit);
	}
	if (res->pids_limit < -1)
		return ad_fail(err, AD_E_INVALID, "pids limit %" PRId64 " is negative",
			       res->pids_limit);
	return 0;
}

uint64_t cg_shares_to_weight(uint64_t shares)
{
	/* Maps 2..262144 onto 1..10000 linearly, the formula runc and crun use. */
	if (shares == 0)
		return 0;
	return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t cg_weight_to_shares(uint64_t weight)
{
	if (weight == 0)
		return 0;
	return 2 + ((weight - 1) * 262142) / 9999;
}

static bool cg_device_number_ok(const char *s, size_t len)
{
	if (len == 1 && s[0] == '*')
		return true;
	/* Device numbers are 32-bit (12-bit major, 20-bit minor in practice); the
	 * v2 program compares them as signed 32-bit immediates. */
	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return strtoull(s, NULL, 10) <= INT32_MAX;
}

int cg_validate_device_rule(const char *rule, ad_error **err)
{
	/* "a" | "<type> <major>:<minor> <access>" with type in abc, access in rwm. */
	if (strcmp(rule, "a") == 0)
		return 0;
	const char *p = rule;
	if ((p[0] != 'a' && p[0] != 'b' && p[0] != 'c') || p[1] != ' ')
		return ad_fail(err, AD_E_INVALID, "device rule \"%s\": type must be a, b or c",
			       rule);
	p += 2;
	size_t maj = strcspn(p, ":");
	if (!cg_device_number_ok(p, maj) || p[maj] != ':')
		return ad_fail(err, AD_E_INVALID, "device rule \"%s\": bad major number", rule);
	p += maj + 1;
	size_t min = strcspn(p, " ");
	if (!cg_device_number_ok(p, min) || p[min] != ' ')
		return ad_fail(err, AD_E_INVALID, "device rule \"%s\": bad minor number", rule);
	p += min + 1;
	if (!*p || strlen(p) > 3 || strspn(p, "rwm") != strlen(p))
		return ad_fail(err, AD_E_INVALID, "device rule \"%s\": access must be of r, w, m",
			       rule);
	return 0;
}

/* ---- processes ---- */

static int cg_read_procs(const char *dir, pid_t **ret, size_t *ret_n, ad_error **err)
{
	_cleanup_free_ char *text = NULL;
	if (cg_read(dir, "cgroup.procs", &text, err) < 0)
		return -1;
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0, cap = 0;
	for (char *p = text; *p;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		if (v > 0 && v <= INT_MAX) {
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				pids = ad_realloc(pids, cap * sizeof(*pids));
			}
			pids[n++] = (pid_t)v;
		}
		p = end;
		while (*p == '\n' || *p == ' ')
			p++;
	}
	*ret = ad_steal_ptr(pids);
	*ret_n = n;
	return 0;
}

int cg_signal_procs(const char *dir, int sig, size_t *ret_count, ad_error **err)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	if (cg_read_procs(dir, &pids, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (kill(pids[i], sig) < 0 && errno != ESRCH)
			return ad_fail_errno(err, AD_E_INTERNAL, "kill %d with signal %d",
					     (int)pids[i], sig);
	if (ret_count)
		*ret_count = n;
	return 0;
}

int cg_count_procs(const char *dir, size_t *ret_count, ad_error **err)
{
	_cleanup_free_ pid_t *pids = NULL;
	return cg_read_procs(dir, &pids, ret_count, err);
}

int cg_mkdir(const char *dir, bool *ret_created, ad_error **err)
{
	if (mkdir(dir, 0755) == 0) {
		*ret_created = true;
		return 0;
	}
	if (errno == EEXIST) {
		struct stat st;
		if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
			*ret_created = false;
			return 0;
		}
	}
	return ad_fail_errno(err,
			     errno == EACCES || errno == EPERM ? AD_E_PERMISSION : AD_E_INTERNAL,
			     "mkdir %s", dir);
}

void cg_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int cg_rmdir(const char *dir, ad_error **err)
{
	for (int i = 0;; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return 0;
		/* The kernel unlinks an exiting task from its cgroup a moment after
		 * cgroup.procs stops listing it. */
		if (errno != EBUSY || i >= 100)
			return ad_fail_errno(err,
					     errno == EBUSY ? AD_E_PRECONDITION : AD_E_INTERNAL,
					     "rmdir %s", dir);
		cg_sleep_ms(10);
	}
}

/* ---- paths ---- */

static int cg_check_component(const char *what, const char *s, size_t len, ad_error **err)
{
	if (len == 0)
		return ad_fail(err, AD_E_INVALID, "cgroup %s: empty path component", what);
	if (len > 255)
		return ad_fail(err, AD_E_INVALID, "cgroup %s: path component longer than 255 bytes",
			       what);
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return ad_fail(err, AD_E_INVALID,
			       "cgroup %s \"%.*s\": \".\" and \"..\" are not allowed", what,
			       (int)len, s);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return ad_fail(err, AD_E_INVALID, "cgroup %s: control character in name",
				       what);
	return 0;
}

/* Joins the components of parent, dropping empty ones; nothing that could
 * climb out of the hierarchy root ("..") survives, and cgroupfs has no
 * symlinks, so root + "/" + result stays under root. */
static int cg_normalize_parent(const char *parent, char **ret, ad_error **err)
{
	if (!parent)
		parent = "";
	if (strlen(parent) > PATH_MAX / 2)
		return ad_fail(err, AD_E_INVALID, "cgroup parent: longer than %d bytes",
			       PATH_MAX / 2);
	_cleanup_free_ char *out = ad_malloc0(strlen(parent) + 1);
	size_t n = 0;
	for (const char *p = parent; *p;) {
		size_t len = strcspn(p, "/");
		if (len > 0) {
			if (cg_check_component("parent", p, len, err) < 0)
				return ad_error_wrap(err, "parent \"%s\"", parent);
			if (n)
				out[n++] = '/';
			memcpy(out + n, p, len);
			n += len;
		}
		p += len;
		while (*p == '/')
			p++;
	}
	out[n] = '\0';
	*ret = ad_steal_ptr(out);
	return 0;
}

static int cg_manager_new(const char *parent, const char *name, cg_manager **ret, ad_error **err)
{
	if (!name)
		return ad_fail(err, AD_E_INVALID, "cgroup name: missing");
	if (strchr(name, '/'))
		return ad_fail(err, AD_E_INVALID, "cgroup name \"%s\": must be one path component",
			       name);
	if (cg_check_component("name", name, strlen(name), err) < 0)
		return -1;
	_cleanup_free_ char *norm = NULL;
	if (cg_normalize_parent(parent, &norm, err) < 0)
		return -1;
	cg_manager *cg = ad_malloc0(sizeof(*cg));
	cg->drv = cg_version() == 2 ? &cg_v2_driver : &cg_v1_driver;
	cg->path = *norm ? ad_asprintf("%s/%s", norm, name) : ad_strdup(name);
	cg->parent_path = ad_steal_ptr(norm);
	if (cg_version() == 2) {
		cg->dir = ad_asprintf("%s/%s", cg_layout.root, cg->path);
	} else {
		if (cg_layout.n_hiers == 0) {
			cg_free(cg);
			return ad_fail(err, AD_E_UNAVAILABLE, "no cgroup v1 hierarchy is mounted");
		}
		for (size_t i = 0; i < cg_layout.n_hiers; i++)
			cg->v1_dirs[i] =
			    ad_asprintf("%s/%s", cg_layout.hiers[i].mountpoint, cg->path);
	}
	*ret = cg;
	return 0;
}

/* ---- public API ---- */

/* The drivers inspect the error they got back (EBUSY, NOT_FOUND), so they
 * always need somewhere to put it, even when the caller passed NULL. */
#define CG_ERR_GUARD(err)                                                                          \
	_cleanup_error_ ad_error *_local_err = NULL;                                               \
	if (!(err))                                                                                \
	(err) = &_local_err

int cg_create(const char *parent, const char *name, const rt_resources *res, cg_manager **ret,
	      ad_error **err)
{
	CG_ERR_GUARD(err);
	if (cg_validate_resources(res, err) < 0)
		return -1;
	cg_manager *cg = NULL;
	if (cg_manager_new(parent, name, &cg, err) < 0)
		return -1;
	if (cg->drv->create(cg, res, err) < 0) {
		ad_error_wrap(err, "cgroup %s", cg->path);
		cg_free(cg);
		return -1;
	}
	*ret = cg;
	return 0;
}

int cg_open(const char *parent, const char *name, cg_manager **ret, ad_error **err)
{
	CG_ERR_GUARD(err);
	cg_manager *cg = NULL;
	if (cg_manager_new(parent, name, &cg, err) < 0)
		return -1;
	if (cg->drv->open(cg, err) < 0) {
		ad_error_wrap(err, "cgroup %s", cg->path);
		cg_free(cg);
		return -1;
	}
	*ret = cg;
	return 0;
}

int cg_enter(cg_manager *cg, pid_t pid, ad_error **err)
{
	CG_ERR_GUARD(err);
	if (pid <= 0)
		return ad_fail(err, AD_E_INVALID, "cgroup %s: bad pid %d", cg->path, (int)pid);
	if (cg->drv->enter(cg, pid, err) < 0)
		return ad_error_wrap(err, "cgroup %s: enter pid %d", cg->path, (int)pid);
	return 0;
}

int cg_open_procs(cg_manager *cg, int *fds, size_t max, size_t *ret_n, ad_error **err)
{
	const char *dirs[CG_V1_MAX_HIER];
	size_t n = 0;
	if (cg->dir)
		dirs[n++] = cg->dir;
	for (size_t i = 0; !cg->dir && i < cg_v1_hier_count() && i < CG_V1_MAX_HIER; i++)
		dirs[n++] = cg->v1_dirs[i];
	if (n > max)
		return ad_fail(err, AD_E_INTERNAL, "cgroup %s: %zu hierarchies, at most %zu", cg->path,
			       n, max);
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *p = ad_asprintf("%s/cgroup.procs", dirs[i]);
		fds[i] = open(p, O_WRONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			ad_fail_errno(err, AD_E_INTERNAL, "open %s", p);
			while (i-- > 0)
				close(fds[i]);
			return -1;
		}
	}
	*ret_n = n;
	return 0;
}

int cg_update(cg_manager *cg, const rt_resources *res, ad_error **err)
{
	CG_ERR_GUARD(err);
	cg->stat_spec_cached = 0;
	if (cg_validate_resources(res, err) < 0 || (res && cg->drv->update(cg, res, err) < 0))
		return ad_error_wrap(err, "cgroup %s: update", cg->path);
	return 0;
}

int cg_stats(cg_manager *cg, struct rt_stats *ret, ad_error **err)
{
	CG_ERR_GUARD(err);
	struct rt_stats st = {.timestamp_ns = ad_now_ns()};
	if (cg->drv->stats(cg, &st, err) < 0)
		return ad_error_wrap(err, "cgroup %s: stats", cg->path);
	*ret = st;
	return 0;
}

int cg_oom_kill_count(cg_manager *cg, uint64_t *ret, ad_error **err)
{
	CG_ERR_GUARD(err);
	if (cg->drv->oom_kill_count(cg, ret, err) < 0)
		return ad_error_wrap(err, "cgroup %s: oom kill count", cg->path);
	return 0;
}

int cg_kill_all(cg_manager *cg, int sig, ad_error **err)
{
	CG_ERR_GUARD(err);
	if (sig <= 0 || sig >= NSIG)
		return ad_fail(err, AD_E_INVALID, "cgroup %s: bad signal %d", cg->path, sig);
	if (cg->drv->kill_all(cg, sig, err) < 0)
		return ad_error_wrap(err, "cgroup %s: kill with signal %d", cg->path, sig);
	return 0;
}

int cg_destroy(cg_manager *cg, ad_error **err)
{
	CG_ERR_GUARD(err);
	cg_stat_close(cg); /* an open file would keep the removed cgroup's memory */
	if (cg->drv->destroy(cg, err) < 0)
		return ad_error_wrap(err, "cgroup %s: destroy", cg->path);
	return 0;
}

int cg_devices_allow(cg_manager *cg, const char *rule, ad_error **err)
{
	CG_ERR_GUARD(err);
	if (!rule || cg_validate_device_rule(rule, err) < 0 ||
	    cg->drv->devices_allow(cg, rule, err) < 0)
		return rule
			   ? ad_error_wrap(err, "cgroup %s", cg->path)
			   : ad_fail(err, AD_E_INVALID, "cgroup %s: missing device rule", cg->path);
	return 0;
}

const char *cg_path(cg_manager *cg)
{
	return cg->path;
}

void cg_free(cg_manager *cg)
{
	if (!cg)
		return;
	cg_stat_close(cg);
	free(cg->path);
	free(cg->parent_path);
	free(cg->dir);
	for (size_t i = 0; i < CG_V1_MAX_HIER; i++)
		free(cg->v1_dirs[i]);
	for (size_t i = 0; i < cg->n_dev_rules; i++)
		free(cg->dev_rules[i]);
	free(cg->dev_rules);
	free(cg);
}
