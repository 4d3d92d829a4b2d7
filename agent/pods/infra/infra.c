/* agentd-infra: the process that holds a pod's namespaces. It is pid 1 of
 * the pod's pid namespace, so it reaps whatever gets re-parented to it, and
 * it ends on SIGTERM/SIGINT (pid 1 ignores signals it has no handler for).
 * Static and libc-only: it runs from a rootfs that holds nothing else. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_child(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	struct sigaction term = {.sa_handler = on_term};
	struct sigaction chld = {.sa_handler = on_child, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
	sigemptyset(&term.sa_mask);
	sigemptyset(&chld.sa_mask);
	if (sigaction(SIGTERM, &term, NULL) < 0 || sigaction(SIGINT, &term, NULL) < 0 ||
	    sigaction(SIGCHLD, &chld, NULL) < 0)
		return 1;
	for (;;)
		pause();
}
