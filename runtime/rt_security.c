/* Capabilities, seccomp (Docker's default profile and JSON profiles),
 * AppArmor and no_new_privs. Plans are built in the parent (errors surface
 * before any process exists) and applied by the setup children. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <linux/seccomp.h>

#include "rt_internal.h"

#define CAPM(c) (1ULL << (c))

uint64_t rt_default_capabilities(void)
{
	return CAPM(CAP_CHOWN) | CAPM(CAP_DAC_OVERRIDE) | CAPM(CAP_FSETID) | CAPM(CAP_FOWNER) |
	       CAPM(CAP_MKNOD) | CAPM(CAP_NET_RAW) | CAPM(CAP_SETGID) | CAPM(CAP_SETUID) |
	       CAPM(CAP_SETFCAP) | CAPM(CAP_SETPCAP) | CAPM(CAP_NET_BIND_SERVICE) |
	       CAPM(CAP_SYS_CHROOT) | CAPM(CAP_KILL) | CAPM(CAP_AUDIT_WRITE);
}

static int last_cap(void)
{
	static int last = -1;
	if (last >= 0)
		return last;
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	if (f) {
		if (fscanf(f, "%d", &last) != 1)
			last = -1;
		fclose(f);
	}
	if (last < 0 || last > 63)
		last = CAP_LAST_CAP;
	return last;
}

static uint64_t kernel_capabilities(void)
{
	return last_cap() == 63 ? ~0ULL : CAPM(last_cap() + 1) - 1;
}

/* What a container may get: agentd's own bounding set (a host may withhold
 * some capabilities even from root, e.g. CAP_SYS_RESOURCE). Privileged and
 * "ALL" mean this; nothing outside it is ever raised, since the kernel would
 * refuse the whole capset with EPERM. */
static uint64_t held_capabilities(void)
{
	uint64_t held = 0;
	for (int c = 0; c <= last_cap(); c++)
		if (cap_get_bound((cap_value_t)c) == 1)
			held |= CAPM(c);
	return held;
}

/* Docker's default allow-list (moby profiles/seccomp/default.json). Names the
 * running libseccomp does not know for this architecture are skipped. */
static const char *const default_allow[] = {"accept",
					    "accept4",
					    "access",
					    "adjtimex",
					    "alarm",
					    "arch_prctl",
					    "bind",
					    "brk",
					    "cachestat",
					    "capget",
					    "capset",
					    "chdir",
					    "chmod",
					    "chown",
					    "chown32",
					    "clock_adjtime",
					    "clock_adjtime64",
					    "clock_getres",
					    "clock_getres_time64",
					    "clock_gettime",
					    "clock_gettime64",
					    "clock_nanosleep",
					    "clock_nanosleep_time64",
					    "close",
					    "close_range",
					    "connect",
					    "copy_file_range",
					    "creat",
					    "dup",
					    "dup2",
					    "dup3",
					    "epoll_create",
					    "epoll_create1",
					    "epoll_ctl",
					    "epoll_ctl_old",
					    "epoll_pwait",
					    "epoll_pwait2",
					    "epoll_wait",
					    "epoll_wait_old",
					    "eventfd",
					    "eventfd2",
					    "execve",
					    "execveat",
					    "exit",
					    "exit_group",
					    "faccessat",
					    "faccessat2",
					    "fadvise64",
					    "fadvise64_64",
					    "fallocate",
					    "fanotify_mark",
					    "fchdir",
					    "fchmod",
					    "fchmodat",
					    "fchmodat2",
					    "fchown",
					    "fchown32",
					    "fchownat",
					    "fcntl",
					    "fcntl64",
					    "fdatasync",
					    "fgetxattr",
					    "flistxattr",
					    "flock",
					    "fork",
					    "fremovexattr",
					    "fsetxattr",
					    "fstat",
					    "fstat64",
					    "fstatat64",
					    "fstatfs",
					    "fstatfs64",
					    "fsync",
					    "ftruncate",
					    "ftruncate64",
					    "futex",
					    "futex_requeue",
					    "futex_time64",
					    "futex_wait",
					    "futex_waitv",
					    "futex_wake",
					    "futimesat",
					    "getcpu",
					    "getcwd",
					    "getdents",
					    "getdents64",
					    "getegid",
					    "getegid32",
					    "geteuid",
					    "geteuid32",
					    "getgid",
					    "getgid32",
					    "getgroups",
					    "getgroups32",
					    "getitimer",
					    "getpeername",
					    "getpgid",
					    "getpgrp",
					    "getpid",
					    "getppid",
					    "getpriority",
					    "getrandom",
					    "getresgid",
					    "getresgid32",
					    "getresuid",
					    "getresuid32",
					    "getrlimit",
					    "get_robust_list",
					    "getrusage",
					    "getsid",
					    "getsockname",
					    "getsockopt",
					    "get_thread_area",
					    "gettid",
					    "gettimeofday",
					    "getuid",
					    "getuid32",
					    "getxattr",
					    "inotify_add_watch",
					    "inotify_init",
					    "inotify_init1",
					    "inotify_rm_watch",
					    "io_cancel",
					    "ioctl",
					    "io_destroy",
					    "io_getevents",
					    "io_pgetevents",
					    "io_pgetevents_time64",
					    "ioprio_get",
					    "ioprio_set",
					    "io_setup",
					    "io_submit",
					    "ipc",
					    "kill",
					    "landlock_add_rule",
					    "landlock_create_ruleset",
					    "landlock_restrict_self",
					    "lchown",
					    "lchown32",
					    "lgetxattr",
					    "link",
					    "linkat",
					    "listen",
					    "listxattr",
					    "llistxattr",
					    "_llseek",
					    "lremovexattr",
					    "lseek",
					    "lsetxattr",
					    "lstat",
					    "lstat64",
					    "madvise",
					    "map_shadow_stack",
					    "membarrier",
					    "memfd_create",
					    "memfd_secret",
					    "mincore",
					    "mkdir",
					    "mkdirat",
					    "mknod",
					    "mknodat",
					    "mlock",
					    "mlock2",
					    "mlockall",
					    "mmap",
					    "mmap2",
					    "mprotect",
					    "mq_getsetattr",
					    "mq_notify",
					    "mq_open",
					    "mq_timedreceive",
					    "mq_timedreceive_time64",
					    "mq_timedsend",
					    "mq_timedsend_time64",
					    "mq_unlink",
					    "mremap",
					    "msgctl",
					    "msgget",
					    "msgrcv",
					    "msgsnd",
					    "msync",
					    "munlock",
					    "munlockall",
					    "munmap",
					    "name_to_handle_at",
					    "nanosleep",
					    "newfstatat",
					    "_newselect",
					    "open",
					    "openat",
					    "openat2",
					    "pause",
					    "pidfd_open",
					    "pidfd_send_signal",
					    "pipe",
					    "pipe2",
					    "pkey_alloc",
					    "pkey_free",
					    "pkey_mprotect",
					    "poll",
					    "ppoll",
					    "ppoll_time64",
					    "prctl",
					    "pread64",
					    "preadv",
					    "preadv2",
					    "prlimit64",
					    "process_mrelease",
					    "pselect6",
					    "pselect6_time64",
					    "pwrite64",
					    "pwritev",
					    "pwritev2",
					    "read",
					    "readahead",
					    "readlink",
					    "readlinkat",
					    "readv",
					    "recv",
					    "recvfrom",
					    "recvmmsg",
					    "recvmmsg_time64",
					    "recvmsg",
					    "remap_file_pages",
					    "removexattr",
					    "rename",
					    "renameat",
					    "renameat2",
					    "restart_syscall",
					    "rmdir",
					    "rseq",
					    "rt_sigaction",
					    "rt_sigpending",
					    "rt_sigprocmask",
					    "rt_sigqueueinfo",
					    "rt_sigreturn",
					    "rt_sigsuspend",
					    "rt_sigtimedwait",
					    "rt_sigtimedwait_time64",
					    "rt_tgsigqueueinfo",
					    "sched_getaffinity",
					    "sched_getattr",
					    "sched_getparam",
					    "sched_get_priority_max",
					    "sched_get_priority_min",
					    "sched_getscheduler",
					    "sched_rr_get_interval",
					    "sched_rr_get_interval_time64",
					    "sched_setaffinity",
					    "sched_setattr",
					    "sched_setparam",
					    "sched_setscheduler",
					    "sched_yield",
					    "seccomp",
					    "select",
					    "semctl",
					    "semget",
					    "semop",
					    "semtimedop",
					    "semtimedop_time64",
					    "send",
					    "sendfile",
					    "sendfile64",
					    "sendmmsg",
					    "sendmsg",
					    "sendto",
					    "setfsgid",
					    "setfsgid32",
					    "setfsuid",
					    "setfsuid32",
					    "setgid",
					    "setgid32",
					    "setgroups",
					    "setgroups32",
					    "setitimer",
					    "setpgid",
					    "setpriority",
					    "setregid",
					    "setregid32",
					    "setresgid",
					    "setresgid32",
					    "setresuid",
					    "setresuid32",
					    "setreuid",
					    "setreuid32",
					    "setrlimit",
					    "set_robust_list",
					    "setsid",
					    "setsockopt",
					    "set_thread_area",
					    "set_tid_address",
					    "setuid",
					    "setuid32",
					    "setxattr",
					    "shmat",
					    "shmctl",
					    "shmdt",
					    "shmget",
					    "shutdown",
					    "sigaltstack",
					    "signalfd",
					    "signalfd4",
					    "sigprocmask",
					    "sigreturn",
					    "socket",
					    "socketcall",
					    "socketpair",
					    "splice",
					    "stat",
					    "stat64",
					    "statfs",
					    "statfs64",
					    "statx",
					    "symlink",
					    "symlinkat",
					    "sync",
					    "sync_file_range",
					    "syncfs",
					    "sysinfo",
					    "tee",
					    "tgkill",
					    "time",
					    "timer_create",
					    "timer_delete",
					    "timer_getoverrun",
					    "timer_gettime",
					    "timer_gettime64",
					    "timer_settime",
					    "timer_settime64",
					    "timerfd_create",
					    "timerfd_gettime",
					    "timerfd_gettime64",
					    "timerfd_settime",
					    "timerfd_settime64",
					    "times",
					    "tkill",
					    "truncate",
					    "truncate64",
					    "ugetrlimit",
					    "umask",
					    "uname",
					    "unlink",
					    "unlinkat",
					    "utime",
					    "utimensat",
					    "utimensat_time64",
					    "utimes",
					    "vfork",
					    "vmsplice",
					    "wait4",
					    "waitid",
					    "waitpid",
					    "write",
					    "writev",
					    NULL};

/* Syscalls Docker's profile allows only when the container holds a capability. */
static const struct {
	int cap;
	const char *names[16];
} cap_allow[] = {
    {CAP_SYS_ADMIN,
     {"bpf", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
      "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl",
      "quotactl_fd", NULL}},
    {CAP_SYS_ADMIN,
     {"setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare", NULL}},
    {CAP_SYS_BOOT, {"reboot", NULL}},
    {CAP_SYS_CHROOT, {"chroot", NULL}},
    {CAP_SYS_MODULE, {"delete_module", "init_module", "finit_module", NULL}},
    {CAP_SYS_PACCT, {"acct", NULL}},
    {CAP_SYS_PTRACE,
     {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace",
      NULL}},
    {CAP_SYS_RAWIO, {"iopl", "ioperm", NULL}},
    {CAP_SYS_TIME, {"settimeofday", "stime", "clock_settime", "clock_settime64", NULL}},
    {CAP_SYS_TTY_CONFIG, {"vhangup", NULL}},
    {CAP_SYS_NICE, {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node", NULL}},
    {CAP_SYSLOG, {"syslog", NULL}},
    {CAP_DAC_READ_SEARCH, {"open_by_handle_at", NULL}},
};

static int add_allow(scmp_filter_ctx ctx, const char *name, ad_error **err)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0;
	int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
	/* Pseudo-syscalls that do not exist on this arch are refused: fine. */
	if (r < 0 && r != -EDOM && r != -EOPNOTSUPP && r != -EEXIST)
		return ad_error_make(err, AD_E_INTERNAL, -r, "seccomp rule for %s", name);
	return 0;
}

static int build_default(uint64_t caps, scmp_filter_ctx *ret, ad_error **err)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		return ad_fail(err, AD_E_INTERNAL, "seccomp_init failed");
	/* As Docker: the 32-bit ABIs an x86-64 kernel also runs get the same rules. */
	if (seccomp_arch_native() == SCMP_ARCH_X86_64 &&
	    (seccomp_arch_add(ctx, SCMP_ARCH_X86) < 0 ||
	     seccomp_arch_add(ctx, SCMP_ARCH_X32) < 0)) {
		seccomp_release(ctx);
		return ad_fail(err, AD_E_INTERNAL, "seccomp: add the x86 and x32 ABIs");
	}
	/* A binary tree of syscall numbers rather than a chain of about 350
	 * tests: the kernel runs the filter for every syscall number of each
	 * ABI when the init attaches it (its action cache), and the container
	 * on every syscall. Attach went from about 1.3 to 0.6 ms. Only here:
	 * libseccomp < 2.5.4 gets a filter without rules wrong this way, and a
	 * profile from a file may have none. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) < 0)
		ad_debug("seccomp: no binary tree optimization");
	for (size_t i = 0; default_allow[i]; i++)
		if (add_allow(ctx, default_allow[i], err) < 0)
			goto fail;
	for (size_t i = 0; i < sizeof(cap_allow) / sizeof(cap_allow[0]); i++) {
		if (!(caps & CAPM(cap_allow[i].cap)))
			continue;
		for (size_t j = 0; cap_allow[i].names[j]; j++)
			if (add_allow(ctx, cap_allow[i].names[j], err) < 0)
				goto fail;
	}
	int r;
	if (caps & CAPM(CAP_SYS_ADMIN)) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 0);
	} else {
		/* Threads and forks yes, new namespaces no. glibc falls back from
		 * clone3 (whose flags seccomp cannot see) to clone on ENOSYS. */
		const uint64_t ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC |
					  CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
					  CLONE_NEWCGROUP;
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags, 0));
		if (r == 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	}
	static const uint64_t personas[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};
	for (size_t i = 0; r == 0 && i < sizeof(personas) / sizeof(personas[0]); i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1,
				     SCMP_A0(SCMP_CMP_EQ, personas[i], 0));
	if (r < 0) {
		ad_error_make(err, AD_E_INTERNAL, -r, "seccomp conditional rules");
		goto fail;
	}
	*ret = ctx;
	return 0;
fail:
	seccomp_release(ctx);
	return -1;
}

static int parse_action(const char *s, json_t *errno_ret, uint32_t *ret)
{
	int e = json_is_integer(errno_ret) ? (int)json_integer_value(errno_ret) : EPERM;
	if (!strcmp(s, "SCMP_ACT_ALLOW"))
		*ret = SCMP_ACT_ALLOW;
	else if (!strcmp(s, "SCMP_ACT_ERRNO"))
		*ret = SCMP_ACT_ERRNO(e);
	else if (!strcmp(s, "SCMP_ACT_KILL") || !strcmp(s, "SCMP_ACT_KILL_THREAD"))
		*ret = SCMP_ACT_KILL;
	else if (!strcmp(s, "SCMP_ACT_KILL_PROCESS"))
		*ret = SCMP_ACT_KILL_PROCESS;
	else if (!strcmp(s, "SCMP_ACT_TRAP"))
		*ret = SCMP_ACT_TRAP;
	else if (!strcmp(s, "SCMP_ACT_LOG"))
		*ret = SCMP_ACT_LOG;
	else if (!strcmp(s, "SCMP_ACT_TRACE"))
		*ret = SCMP_ACT_TRACE(e);
	else
		return -1;
	return 0;
}

static int parse_op(const char *s, enum scmp_compare *ret)
{
	static const struct {
		const char *n;
		enum scmp_compare op;
	} ops[] = {{"SCMP_CMP_NE", SCMP_CMP_NE},
		   {"SCMP_CMP_LT", SCMP_CMP_LT},
		   {"SCMP_CMP_LE", SCMP_CMP_LE},
		   {"SCMP_CMP_EQ", SCMP_CMP_EQ},
		   {"SCMP_CMP_GE", SCMP_CMP_GE},
		   {"SCMP_CMP_GT", SCMP_CMP_GT},
		   {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strcmp(s, ops[i].n)) {
			*ret = ops[i].op;
			return 0;
		}
	return -1;
}

static const char *cap_names[] = {"CAP_CHOWN",
				  "CAP_DAC_OVERRIDE",
				  "CAP_DAC_READ_SEARCH",
				  "CAP_FOWNER",
				  "CAP_FSETID",
				  "CAP_KILL",
				  "CAP_SETGID",
				  "CAP_SETUID",
				  "CAP_SETPCAP",
				  "CAP_LINUX_IMMUTABLE",
				  "CAP_NET_BIND_SERVICE",
				  "CAP_NET_BROADCAST",
				  "CAP_NET_ADMIN",
				  "CAP_NET_RAW",
				  "CAP_IPC_LOCK",
				  "CAP_IPC_OWNER",
				  "CAP_SYS_MODULE",
				  "CAP_SYS_RAWIO",
				  "CAP_SYS_CHROOT",
				  "CAP_SYS_PTRACE",
				  "CAP_SYS_PACCT",
				  "CAP_SYS_ADMIN",
				  "CAP_SYS_BOOT",
				  "CAP_SYS_NICE",
				  "CAP_SYS_RESOURCE",
				  "CAP_SYS_TIME",
				  "CAP_SYS_TTY_CONFIG",
				  "CAP_MKNOD",
				  "CAP_LEASE",
				  "CAP_AUDIT_WRITE",
				  "CAP_AUDIT_CONTROL",
				  "CAP_SETFCAP",
				  "CAP_MAC_OVERRIDE",
				  "CAP_MAC_ADMIN",
				  "CAP_SYSLOG",
				  "CAP_WAKE_ALARM",
				  "CAP_BLOCK_SUSPEND",
				  "CAP_AUDIT_READ",
				  "CAP_PERFMON",
				  "CAP_BPF",
				  "CAP_CHECKPOINT_RESTORE"};

/* Docker's "includes"/"excludes": {"caps": [...], "arches": [...]} */
static bool filter_matches(json_t *f, uint64_t caps, bool want_all)
{
	if (!json_is_object(f))
		return want_all;
	json_t *list = json_object_get(f, "caps");
	size_t i;
	json_t *v;
	bool any = false, all = true;
	json_array_foreach(list, i, v)
	{
		bool have = false;
		for (size_t k = 0; k < sizeof(cap_names) / sizeof(cap_names[0]); k++)
			if (json_is_string(v) && !strcmp(json_string_value(v), cap_names[k]))
				have = caps & CAPM(k);
		any |= have;
		all &= have;
	}
	if (json_array_size(list) == 0)
		any = false, all = true;
	/* Arch filters name docker arches; native is x86_64/amd64 here. */
	json_t *arches = json_object_get(f, "arches");
	if (json_array_size(arches)) {
		struct utsname u;
		uname(&u);
		bool arch_any = false;
		json_array_foreach(arches, i, v)
		{
			const char *a = json_string_value(v);
			if (a && (!strcmp(a, u.machine) ||
				  (!strcmp(a, "amd64") && !strcmp(u.machine, "x86_64")) ||
				  (!strcmp(a, "arm64") && !strcmp(u.machine, "aarch64"))))
				arch_any = true;
		}
		any |= arch_any;
		all &= arch_any;
	}
	return want_all ? all : any;
}

static int build_custom(const char *path, uint64_t caps, scmp_filter_ctx *ret, ad_error **err)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	if (!root)
		return ad_fail(err, AD_E_INVALID, "seccomp profile %s: line %d: %s", path,
			       jerr.line, jerr.text);
	scmp_filter_ctx ctx = NULL;
	uint32_t def;
	json_t *da = json_object_get(root, "defaultAction");
	if (!json_is_string(da) ||
	    parse_action(json_string_value(da), json_object_get(root, "defaultErrnoRet"), &def) <
		0) {
		ad_fail(err, AD_E_INVALID, "seccomp profile %s: missing or unknown defaultAction",
			path);
		goto fail;
	}
	ctx = seccomp_init(def);
	if (!ctx) {
		ad_fail(err, AD_E_INTERNAL, "seccomp_init failed");
		goto fail;
	}
	size_t ai;
	json_t *av;
	json_array_foreach(json_object_get(root, "architectures"), ai, av)
	{
		/* "SCMP_ARCH_X86_64" -> "x86_64" */
		const char *a = json_string_value(av);
		char name[32] = "";
		for (size_t k = 0; a && a[k] && k < sizeof(name) - 1; k++)
			name[k] = (char)(a[k] >= 'A' && a[k] <= 'Z' ? a[k] - 'A' + 'a' : a[k]);
		const char *n = strncmp(name, "scmp_arch_", 10) ? name : name + 10;
		uint32_t arch = seccomp_arch_resolve_name(n);
		if (!arch) {
			ad_fail(err, AD_E_INVALID,
				"seccomp profile %s: unknown architecture \"%s\"", path,
				a ? a : "(not a string)");
			goto fail;
		}
		int r = seccomp_arch_add(ctx, arch);
		if (r < 0 && r != -EEXIST) {
			ad_error_make(err, AD_E_INVALID, -r, "seccomp profile %s: architecture %s",
				      path, a);
			goto fail;
		}
	}
	size_t i;
	json_t *rule;
	json_array_foreach(json_object_get(root, "syscalls"), i, rule)
	{
		if (!filter_matches(json_object_get(rule, "includes"), caps, true))
			continue;
		json_t *ex = json_object_get(rule, "excludes");
		if (json_is_object(ex) && json_object_size(ex) && filter_matches(ex, caps, false))
			continue;
		uint32_t act;
		json_t *a = json_object_get(rule, "action");
		if (!json_is_string(a) ||
		    parse_action(json_string_value(a), json_object_get(rule, "errnoRet"), &act) <
			0) {
			ad_fail(err, AD_E_INVALID, "seccomp profile %s: syscalls[%zu]: bad action",
				path, i);
			goto fail;
		}
		struct scmp_arg_cmp cmps[6];
		unsigned n_cmps = 0;
		size_t j;
		json_t *arg;
		json_array_foreach(json_object_get(rule, "args"), j, arg)
		{
			enum scmp_compare op;
			json_t *o = json_object_get(arg, "op");
			if (n_cmps >= 6 || !json_is_string(o) ||
			    parse_op(json_string_value(o), &op) < 0) {
				ad_fail(err, AD_E_INVALID,
					"seccomp profile %s: syscalls[%zu]: bad args[%zu]", path, i,
					j);
				goto fail;
			}
			cmps[n_cmps++] = (struct scmp_arg_cmp){
			    .arg = (unsigned)json_integer_value(json_object_get(arg, "index")),
			    .op = op,
			    .datum_a = (uint64_t)json_integer_value(json_object_get(arg, "value")),
			    .datum_b =
				(uint64_t)json_integer_value(json_object_get(arg, "valueTwo")),
			};
		}
		json_t *names = json_object_get(rule, "names");
		json_t *one = json_object_get(rule, "name");
		size_t n_names = json_is_array(names) ? json_array_size(names) : (one ? 1 : 0);
		for (size_t k = 0; k < n_names; k++) {
			json_t *nv = json_is_array(names) ? json_array_get(names, k) : one;
			const char *name = json_string_value(nv);
			int nr = name ? seccomp_syscall_resolve_name(name) : __NR_SCMP_ERROR;
			if (nr == __NR_SCMP_ERROR) {
				ad_fail(err, AD_E_INVALID,
					"seccomp profile %s: unknown syscall \"%s\"", path,
					name ? name : "(not a string)");
				goto fail;
			}
			if (act == def)
				continue; /* libseccomp refuses rules equal to the default */
			int r = seccomp_rule_add_array(ctx, act, nr, n_cmps, cmps);
			if (r < 0 && r != -EDOM && r != -EOPNOTSUPP && r != -EEXIST) {
				ad_error_make(err, AD_E_INVALID, -r,
					      "seccomp profile %s: rule for %s", path, name);
				goto fail;
			}
		}
	}
	json_decref(root);
	*ret = ctx;
	return 0;
fail:
	if (ctx)
		seccomp_release(ctx);
	json_decref(root);
	return -1;
}

/* Compiles ctx into BPF here, in the parent, and releases it. */
static int export_bpf(scmp_filter_ctx ctx, struct sock_filter **ret, size_t *ret_len,
		      ad_error **err)
{
	int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	_cleanup_close_ int fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
	if (fd < 0) {
		seccomp_release(ctx);
		return ad_fail_errno(err, AD_E_INTERNAL, "memfd_create");
	}
	if (r == 0)
		r = seccomp_export_bpf(ctx, fd);
	seccomp_release(ctx);
	if (r < 0)
		return ad_error_make(err, AD_E_INTERNAL, -r, "compile the seccomp filter");
	off_t len = lseek(fd, 0, SEEK_END);
	if (len <= 0 || len % (off_t)sizeof(struct sock_filter) || len > (1 << 20))
		return ad_fail(err, AD_E_INTERNAL, "seccomp filter of %lld bytes", (long long)len);
	struct sock_filter *bpf = ad_malloc0((size_t)len);
	if (pread(fd, bpf, (size_t)len, 0) != len) {
		free(bpf);
		return ad_fail_errno(err, AD_E_INTERNAL, "read the seccomp filter");
	}
	*ret = bpf;
	*ret_len = (size_t)len / sizeof(struct sock_filter);
	return 0;
}

static int default_bpf(rt_runtime *rt, uint64_t caps, struct sock_filter **ret, size_t *ret_len,
		       ad_error **err)
{
	scmp_filter_ctx ctx = NULL;
	if (!rt) {
		if (build_default(caps, &ctx, err) < 0)
			return -1;
		return export_bpf(ctx, ret, ret_len, err);
	}
	pthread_mutex_lock(&rt->seccomp_lock);
	int r = 0;
	if (!rt->seccomp_bpf || rt->seccomp_caps != caps) {
		struct sock_filter *bpf;
		size_t len;
		r = build_default(caps, &ctx, err);
		if (r == 0)
			r = export_bpf(ctx, &bpf, &len, err);
		if (r == 0) {
			free(rt->seccomp_bpf);
			rt->seccomp_bpf = bpf;
			rt->seccomp_len = len;
			rt->seccomp_caps = caps;
		}
	}
	if (r == 0) {
		*ret = ad_malloc0(rt->seccomp_len * sizeof(struct sock_filter));
		memcpy(*ret, rt->seccomp_bpf, rt->seccomp_len * sizeof(struct sock_filter));
		*ret_len = rt->seccomp_len;
	}
	pthread_mutex_unlock(&rt->seccomp_lock);
	return r;
}

bool rt_apparmor_enabled(void)
{
	char c = 0;
	int fd = open("/sys/module/apparmor/parameters/enabled", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (read(fd, &c, 1) != 1)
		c = 0;
	close(fd);
	return c == 'Y';
}

int rt_secplan_build(rt_runtime *rt, const rt_config *cfg, rt_secplan *ret, ad_error **err)
{
	const rt_security *s = &cfg->security;
	rt_secplan p = {.no_new_privs = s->no_new_privs,
			.apparmor = s->apparmor_profile,
			.last_cap = last_cap()};
	uint64_t held = held_capabilities();
	if (s->privileged) {
		p.bounding = p.effective = p.permitted = p.inheritable = held;
		p.all_caps = true;
	} else if (s->capabilities_set) {
		p.bounding = s->cap_bounding & held;
		p.effective = s->cap_effective & held;
		p.permitted = s->cap_permitted & held;
		p.inheritable = s->cap_inheritable & held;
		p.ambient = s->cap_ambient & held;
		uint64_t missing = (s->cap_bounding | s->cap_effective | s->cap_permitted) & ~held &
				   kernel_capabilities();
		if (missing)
			ad_debug("container %s: capabilities 0x%llx are not in agentd's bounding "
				 "set; left out",
				 cfg->id, (unsigned long long)missing);
	} else {
		p.bounding = p.effective = p.permitted = p.inheritable =
		    rt_default_capabilities() & held;
	}
	if (s->apparmor_profile && !rt_apparmor_enabled())
		return ad_fail(err, AD_E_INVALID,
			       "AppArmor profile \"%s\" requested but AppArmor is not enabled on "
			       "this host",
			       s->apparmor_profile);
	if (!s->privileged && s->seccomp == RT_SECCOMP_DEFAULT) {
		if (default_bpf(rt, p.bounding, &p.seccomp, &p.seccomp_len, err) < 0)
			return -1;
	} else if (!s->privileged && s->seccomp == RT_SECCOMP_CUSTOM) {
		scmp_filter_ctx ctx = NULL;
		if (!s->seccomp_profile)
			return ad_fail(err, AD_E_INVALID, "custom seccomp without a profile path");
		if (build_custom(s->seccomp_profile, p.bounding, &ctx, err) < 0 ||
		    export_bpf(ctx, &p.seccomp, &p.seccomp_len, err) < 0)
			return -1;
	}
	*ret = p;
	return 0;
}

void rt_secplan_clear(rt_secplan *p)
{
	free(p->seccomp);
	p->seccomp = NULL;
}
