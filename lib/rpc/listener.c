/* listener.c — libadrpc's listeners (see listener.h): a unix socket and a
 * TCP socket on libevent's evconnlistener, a deep backlog, and a pause
 * instead of a busy loop when accept() runs out of descriptors. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* listen() backlog (the kernel caps it at net.core.somaxconn). A burst of
 * connections while the loop is busy waits here instead of being refused.
 * evconnlistener_new gets backlog 0 so that it keeps ours (-1 would
 * re-listen with 128). */
#define LISTENER_BACKLOG 4096
#define LISTENER_PAUSE_US 100000

static void listener_set_enabled(rpc_listeners *l, bool on)
{
	struct evconnlistener *all[] = {l->unix_lis, l->tcp_lis};
	for (size_t i = 0; i < 2; i++) {
		if (!all[i])
			continue;
		if (on)
			evconnlistener_enable(all[i]);
		else
			evconnlistener_disable(all[i]);
	}
}

static void listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	listener_set_enabled(arg, true);
}

/* accept() failing with EMFILE & co would otherwise spin the loop on a
 * readable listener: pause accepting for a moment instead. */
static void listener_error_cb(struct evconnlistener *lis, void *arg)
{
	(void)lis;
	rpc_listeners *l = arg;
	int e = EVUTIL_SOCKET_ERROR();
	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
		return;
	listener_set_enabled(l, false);
	struct timeval tv = {0, LISTENER_PAUSE_US};
	evtimer_add(l->resume_ev, &tv);
}

static void listener_accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
			       struct sockaddr *sa, int salen, void *arg)
{
	(void)salen;
	rpc_listeners *l = arg;
	l->accept_fn(fd, sa, lis == l->tcp_lis && l->tcp_tls, l->accept_arg);
}

static struct evconnlistener *listener_start(rpc_listeners *l, int fd)
{
	struct evconnlistener *lis =
	    evconnlistener_new(l->base, listener_accept_cb, l, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (lis)
		evconnlistener_set_error_cb(lis, listener_error_cb);
	return lis;
}

int listener_init(rpc_listeners *l, struct event_base *base,
		  void (*accept_fn)(int fd, const struct sockaddr *sa, bool tls, void *arg),
		  void *arg, ad_error **err)
{
	*l = (rpc_listeners){.base = base, .tcp_port = -1, .accept_fn = accept_fn,
			     .accept_arg = arg};
	l->resume_ev = evtimer_new(base, listener_resume_cb, l);
	if (!l->resume_ev)
		return ad_fail(err, AD_E_INTERNAL, "event_new failed");
	return 0;
}

int listener_unix(rpc_listeners *l, const char *path, ad_error **err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path))
		return ad_fail(err, AD_E_INVALID, "unix socket path too long: %s", path);
	strcpy(sun.sun_path, path);

	_cleanup_free_ char *dir = ad_strdup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (ad_mkdir_p(dir, 0755, err) < 0)
			return ad_error_wrap(err, "socket directory");
	}

	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return ad_fail(err, AD_E_EXISTS, "%s exists and is not a socket", path);
		/* Non-blocking: a live but busy server (full backlog) answers
		 * EAGAIN rather than keeping us waiting. */
		_cleanup_close_ int probe =
		    socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (probe < 0)
			return ad_fail_errno(err, AD_E_INTERNAL, "socket");
		if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN)
			return ad_fail(err, AD_E_EXISTS,
				       "another server is already listening on %s", path);
		if (errno != ECONNREFUSED)
			return ad_fail_errno(err, AD_E_INTERNAL, "cannot probe %s", path);
		/* A stale socket left by a dead server. */
		if (unlink(path) < 0 && errno != ENOENT)
			return ad_fail_errno(err, AD_E_INTERNAL, "cannot remove stale %s", path);
	}

	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "socket");
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "cannot bind %s", path);
	if (chmod(path, 0660) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "chmod %s", path);
	if (listen(fd, LISTENER_BACKLOG) < 0)
		return ad_fail_errno(err, AD_E_INTERNAL, "listen on %s", path);
	l->unix_lis = listener_start(l, fd);
	if (!l->unix_lis)
		return ad_fail(err, AD_E_INTERNAL, "evconnlistener_new failed");
	fd = -1;
	l->unix_path = ad_strdup(path);
	return 0;
}

static int listener_split_hostport(const char *s, char **ret_host, char **ret_port,
				   ad_error **err)
{
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return ad_fail(err, AD_E_INVALID, "bad address %s (want [v6]:port)", s);
		*ret_host = ad_strndup(s + 1, (size_t)(end - s - 1));
		*ret_port = ad_strdup(end + 2);
		return 0;
	}
	const char *colon = strrchr(s, ':');
	if (!colon)
		return ad_fail(err, AD_E_INVALID, "bad address %s (want host:port)", s);
	*ret_host = ad_strndup(s, (size_t)(colon - s));
	*ret_port = ad_strdup(colon + 1);
	return 0;
}

int listener_tcp(rpc_listeners *l, const char *addr, bool tls, ad_error **err)
{
	_cleanup_free_ char *host = NULL;
	_cleanup_free_ char *port = NULL;
	if (listener_split_hostport(addr, &host, &port, err) < 0)
		return -1;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int r = getaddrinfo(*host ? host : NULL, port, &hints, &res);
	if (r != 0)
		return ad_fail(err, AD_E_INVALID, "cannot resolve %s: %s", addr, gai_strerror(r));
	int fd = -1, saved = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTENER_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ad_error_make(err, AD_E_INTERNAL, saved, "cannot listen on %s", addr);
	return listener_adopt(l, fd, true, tls, err);
}

int listener_adopt(rpc_listeners *l, int fd, bool tcp, bool tls, ad_error **err)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		ad_fail_errno(err, AD_E_INTERNAL, "listening socket fd %d", fd);
		close(fd);
		return -1;
	}
	struct evconnlistener **slot = tcp ? &l->tcp_lis : &l->unix_lis;
	if (tcp) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		l->tcp_port = ss.ss_family == AF_INET
				  ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
				  : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		l->tcp_tls = tls;
	}
	*slot = listener_start(l, fd);
	if (!*slot) {
		close(fd);
		return ad_fail(err, AD_E_INTERNAL, "evconnlistener_new failed");
	}
	return 0;
}

void listener_close(rpc_listeners *l)
{
	if (l->unix_lis) {
		evconnlistener_free(l->unix_lis);
		l->unix_lis = NULL;
		if (l->unix_path)
			unlink(l->unix_path);
	}
	if (l->tcp_lis) {
		evconnlistener_free(l->tcp_lis);
		l->tcp_lis = NULL;
	}
}

void listener_destroy(rpc_listeners *l)
{
	listener_close(l);
	if (l->resume_ev)
		event_free(l->resume_ev);
	l->resume_ev = NULL;
	free(l->unix_path);
	l->unix_path = NULL;
}
