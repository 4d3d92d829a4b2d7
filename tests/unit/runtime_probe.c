/* runtime_probe — a static helper copied into the test rootfs: makes raw
 * syscalls that Docker's seccomp profile blocks and prints what each
 * returned ("name=ok" or "name=EPERM"/errno number). */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long r)
{
	if (r >= 0)
		printf("%s=ok\n", name);
	else if (errno == EPERM)
		printf("%s=EPERM\n", name);
	else if (errno == ENOSYS)
		printf("%s=ENOSYS\n", name);
	else
		printf("%s=errno%d\n", name, errno);
}

int main(void)
{
	/* KEYCTL_GET_KEYRING_ID of the session keyring; needs no capability */
	report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
	report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -3));
	report("unshare", syscall(SYS_unshare, CLONE_NEWUTS));
	report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
	report("personality", syscall(SYS_personality, 0x0400000)); /* READ_IMPLIES_EXEC */
	long pid = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	report("clone_newns", pid);
	pid = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
	report("clone", pid);
	return 0;
}
