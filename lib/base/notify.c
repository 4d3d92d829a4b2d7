/* systemd's service notification protocol (sd_notify(3)), written out: one
 * datagram of "KEY=VALUE\n" lines to the unix socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace); and the
 * socket activation protocol (sd_listen_fds(3)): LISTEN_PID, LISTEN_FDS. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base.h"

int ad_sd_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path))
		return -EAFNOSUPPORT;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl) < 0)
		return -errno;
	return 1;
}

uint64_t ad_sd_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	if (!usec)
		return 0;
	/* Set for another process (our parent's unit, say): not ours. */
	if (pid && strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(usec, &end, 10);
	return errno || *end || end == usec ? 0 : (uint64_t)v;
}

int ad_sd_listen_fds(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	int n = 0;
	if (pid && fds && strtol(pid, NULL, 10) == (long)getpid()) {
		char *end;
		errno = 0;
		long v = strtol(fds, &end, 10);
		if (!errno && !*end && end != fds && v > 0 && v < 1024)
			n = (int)v;
	}
	for (int fd = AD_SD_LISTEN_FDS_START; fd < AD_SD_LISTEN_FDS_START + n; fd++) {
		int flags = fcntl(fd, F_GETFD);
		if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
			n = fd - AD_SD_LISTEN_FDS_START; /* not ours past a closed one */
			break;
		}
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return n;
}
