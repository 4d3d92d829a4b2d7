/* agentd-shim — the per-container monitor. Spawned by libadruntime, it
 * creates the container (rt_init.c: detach, clone and set up the init) and
 * stays its parent; outlives agentd.
 * Holds the init's stdio and writes it to a CRI-format log, forwards signals,
 * answers the control socket, and records the exit status atomically.
 * Deliberately tiny: libc only, linked statically, no allocation on the hot
 * path. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "rt_internal.h"

/* kubelet splits log lines at 16 KiB as well. */
#define LINE_MAX_BYTES 16384
#define DRAIN_AFTER_EXIT_MS 2000
#define EXIT_RECORD_MAX 512

struct stream {
	int fd;
	const char *name;
	size_t len;
	uint64_t lost; /* bytes the log could not take (disk full) since the last record */
	int lost_errno;
	char buf[LINE_MAX_BYTES];
};

static pid_t init_pid;
static unsigned long long init_start;
static const char *log_path;
static int log_fd = -1;
static int exit_fd = -1; /* the exit record's file, its space taken at start */
static int pty_fd = -1;
static int start_fd = RT_SHIM_FD_START;
static int64_t started_at;
static struct stream out_s = {.name = "stdout"}, err_s = {.name = "stderr"};
/* attach: clients that receive the output (framed) and feed stdin */
#define MAX_ATTACH 8
static int attach_fds[MAX_ATTACH] = {-1, -1, -1, -1, -1, -1, -1, -1};
static int in_fd = -1; /* the container's stdin: pipe write end or the pty master */
static bool stdin_once;
static bool exited; /* the init is gone; draining its output */

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static unsigned long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* comm may hold spaces and parens */
	if (!p)
		return 0;
	/* after ") " come fields 3..; starttime is field 22 */
	int field = 2;
	for (p++; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	return strtoull(p, NULL, 10);
}

static void reopen_log(void)
{
	if (!log_path || !*log_path)
		return;
	int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0)
		return; /* keep the old one rather than lose output */
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
}

/* One CRI log record in one writev, so that concurrent readers never see
 * half a line. A record the disk cannot take whole is taken back out and
 * counted; false then. */
static bool write_record(struct stream *s, const char *line, size_t n, bool partial)
{
	char ts[48];
	int64_t t = now_ns();
	time_t secs = (time_t)(t / 1000000000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t k = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + k, sizeof(ts) - k, ".%09dZ %s %c ", (int)(t % 1000000000), s->name,
		 partial ? 'P' : 'F');
	struct iovec iov[3] = {
	    {ts, strlen(ts)},
	    {(void *)line, n},
	    {"\n", 1},
	};
	size_t want = iov[0].iov_len + n + 1;
	ssize_t w;
	while ((w = writev(log_fd, iov, 3)) < 0 && errno == EINTR)
		;
	if (w == (ssize_t)want)
		return true;
	if (w > 0) {
		off_t end = lseek(log_fd, 0, SEEK_END);
		if (end >= w && ftruncate(log_fd, end - w) == 0)
			w = 0;
		errno = ENOSPC;
	}
	s->lost += n + 1;
	s->lost_errno = errno;
	return false;
}

static void emit(struct stream *s, const char *line, size_t n, bool partial)
{
	if (log_fd < 0)
		return;
	if (s->lost) {
		/* The log says where output is missing, once the disk can take
		 * the note (as journald reports what it suppressed). */
		char note[160];
		int k = snprintf(note, sizeof(note),
				 "[agentd-shim: %llu bytes of %s lost: the log could not be written: %s]",
				 (unsigned long long)s->lost, s->name, strerror(s->lost_errno));
		uint64_t lost = s->lost;
		s->lost = 0;
		if (!write_record(s, note, (size_t)k, false)) {
			s->lost = lost + n + 1;
			return;
		}
	}
	write_record(s, line, n, partial);
}

static bool attach_eof[MAX_ATTACH];
static bool attach_stdin[MAX_ATTACH]; /* feeds stdin (not "attach-output") */

/* The client finished sending: with stdin_once that is the container's EOF
 * (not with a tty: as containerd, whose attach closes stdin only without). */
static void attach_input_done(int i)
{
	attach_eof[i] = true;
	if (attach_stdin[i] && stdin_once && in_fd >= 0 && in_fd != pty_fd) {
		close(in_fd);
		in_fd = -1;
	}
}

static void drop_attach(int i)
{
	if (!attach_eof[i])
		attach_input_done(i);
	close(attach_fds[i]);
	attach_fds[i] = -1;
}

/* Frames: 1 byte stream (1 stdout, 2 stderr), 4 bytes big-endian length,
 * data. A client that cannot keep up is dropped, never waited for. */
static void broadcast(int stream, const char *data, size_t n)
{
	unsigned char hdr[5] = {(unsigned char)stream, (unsigned char)(n >> 24),
				(unsigned char)(n >> 16), (unsigned char)(n >> 8),
				(unsigned char)n};
	for (int i = 0; i < MAX_ATTACH; i++) {
		if (attach_fds[i] < 0)
			continue;
		struct iovec iov[2] = {{hdr, 5}, {(void *)data, n}};
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
		if (sendmsg(attach_fds[i], &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)(n + 5))
			drop_attach(i);
	}
}

/* Returns false at EOF. */
static bool stream_read(struct stream *s)
{
	ssize_t n = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0) {
		if (s->len)
			emit(s, s->buf, s->len, false);
		s->len = 0;
		close(s->fd);
		s->fd = -1;
		return false;
	}
	broadcast(s == &err_s ? 2 : 1, s->buf + s->len, (size_t)n);
	s->len += (size_t)n;
	size_t start = 0;
	for (size_t i = s->len - (size_t)n; i < s->len; i++) {
		if (s->buf[i] != '\n')
			continue;
		size_t end = i;
		if (end > start && s->buf[end - 1] == '\r' && pty_fd >= 0)
			end--; /* a pty turns \n into \r\n */
		emit(s, s->buf + start, end - start, false);
		start = i + 1;
	}
	memmove(s->buf, s->buf + start, s->len - start);
	s->len -= start;
	if (s->len == sizeof(s->buf)) {
		emit(s, s->buf, s->len, true);
		s->len = 0;
	}
	return true;
}

static void write_exit(int status, int64_t finished)
{
	char buf[EXIT_RECORD_MAX];
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	int n = snprintf(buf, sizeof(buf),
			 "init_pid=%d\ninit_start=%llu\nstatus=%d\nexit_code=%d\nsignal=%d\n"
			 "started_at=%lld\nfinished_at=%lld\n",
			 (int)init_pid, init_start, status, code, sig, (long long)started_at,
			 (long long)finished);
	int fd = exit_fd;
	if (fd < 0)
		fd = openat(RT_SHIM_FD_STATE, RT_FILE_EXIT ".tmp",
			    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	/* Written over the reserved bytes and cut to length: no new space. */
	bool ok = pwrite(fd, buf, (size_t)n, 0) == n && ftruncate(fd, n) == 0 && fsync(fd) == 0;
	close(fd);
	if (ok &&
	    renameat(RT_SHIM_FD_STATE, RT_FILE_EXIT ".tmp", RT_SHIM_FD_STATE, RT_FILE_EXIT) == 0)
		fsync(RT_SHIM_FD_STATE);
}

/* The exit record's space is taken while there is some: a state directory
 * that fills up while the container runs must not turn its exit into an
 * unknown one (a shim death). Best effort: without it the record is made at
 * the exit as before. */
static void reserve_exit_record(void)
{
	int fd = openat(RT_SHIM_FD_STATE, RT_FILE_EXIT ".tmp",
			O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	char pad[EXIT_RECORD_MAX];
	memset(pad, '\n', sizeof(pad));
	if (write(fd, pad, sizeof(pad)) != (ssize_t)sizeof(pad)) {
		close(fd);
		unlinkat(RT_SHIM_FD_STATE, RT_FILE_EXIT ".tmp", 0);
		return;
	}
	exit_fd = fd;
}

/* Started means running the container's program: the init's end of the
 * start socket is close-on-exec, so EOF comes with its exec (or its death).
 * Bounded: an exec stuck on a hung filesystem must not stall the shim. */
static void wait_exec(void)
{
	struct pollfd p = {.fd = start_fd, .events = POLLIN};
	int64_t deadline = now_ns() + 10 * 1000000000LL;
	char b;
	for (;;) {
		int left = (int)((deadline - now_ns()) / 1000000);
		if (left <= 0 || (poll(&p, 1, left) < 0 && errno != EINTR))
			return;
		if (p.revents && read(start_fd, &b, 1) <= 0)
			return;
	}
}

/* Returns true when the connection stays open (attach). */
static bool handle_client(int fd)
{
	struct timeval tv = {.tv_sec = 1};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char req[128];
	ssize_t n = read(fd, req, sizeof(req) - 1);
	if (n <= 0)
		return false;
	req[n] = '\0';
	req[strcspn(req, "\r\n")] = '\0';
	char reply[128] = "ok\n";
	unsigned rows, cols;
	bool output_only = !strcmp(req, "attach-output");
	if (output_only || !strcmp(req, "attach")) {
		for (int i = 0; i < MAX_ATTACH; i++) {
			if (attach_fds[i] >= 0)
				continue;
			if (write(fd, "ok\n", 3) != 3)
				return false;
			int big = 1 << 20;
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
			fcntl(fd, F_SETFL, O_NONBLOCK);
			attach_fds[i] = fd;
			attach_eof[i] = false;
			attach_stdin[i] = !output_only;
			return true;
		}
		strcpy(reply, "error too many attached clients\n");
	} else if (!strcmp(req, "start")) {
		if (start_fd < 0) {
			strcpy(reply, "error already started\n");
		} else {
			started_at = now_ns();
			snprintf(reply, sizeof(reply), "ok %lld\n", (long long)started_at);
			if (write(start_fd, "s", 1) != 1)
				snprintf(reply, sizeof(reply), "error start: %s\n",
					 strerror(errno));
			else
				wait_exec();
			close(start_fd);
			start_fd = -1;
		}
	} else if (!strcmp(req, "status")) {
		snprintf(reply, sizeof(reply), "ok %s %lld\n",
			 exited		? "exited"
			 : start_fd < 0 ? "running"
					: "created",
			 (long long)started_at);
	} else if (sscanf(req, "kill %u", &rows) == 1) {
		if (rows == 0 || rows >= 65 || kill(init_pid, (int)rows) < 0)
			strcpy(reply, "error kill failed\n");
	} else if (!strcmp(req, "reopen")) {
		reopen_log();
	} else if (sscanf(req, "resize %u %u", &rows, &cols) == 2) {
		struct winsize ws = {.ws_row = (unsigned short)rows,
				     .ws_col = (unsigned short)cols};
		if (pty_fd < 0 || ioctl(pty_fd, TIOCSWINSZ, &ws) < 0)
			strcpy(reply, "error no tty\n");
	} else {
		strcpy(reply, "error unknown command\n");
	}
	if (write(fd, reply, strlen(reply)) < 0) {
		/* the client went away: nothing to tell */
	}
	return false;
}

/* The init's stdio as rt_shim_setup left it at the fixed fds, and the log. */
static void take_stdio(const rt_spawn_spec *spec, bool pty)
{
	stdin_once = spec->cfg.stdin_once;
	if (fcntl(RT_SHIM_FD_IN, F_GETFD) >= 0)
		in_fd = RT_SHIM_FD_IN;
	log_path = spec->cfg.log_path ? spec->cfg.log_path : "";
	if (pty)
		pty_fd = RT_SHIM_FD_OUT;
	out_s.fd = fcntl(RT_SHIM_FD_OUT, F_GETFD) >= 0 ? RT_SHIM_FD_OUT : -1;
	err_s.fd = fcntl(RT_SHIM_FD_ERR, F_GETFD) >= 0 ? RT_SHIM_FD_ERR : -1;
	if (pty_fd >= 0)
		out_s.fd = -1; /* read through pty_fd, as stdout, once serving */
	reopen_log();
}

/* The signals we reap and forward to the init, as a signalfd (-1: failed). */
static int open_signals(void)
{
	sigset_t mask;
	sigemptyset(&mask);
	static const int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&mask, sigs[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* READY (or what went wrong) to our creator; false if we cannot go on. */
static bool report_ready(int sfd)
{
	rt_msg m = {.type = RT_SHIM_MSG_READY, .pid = getpid()};
	if (sfd < 0 || init_start == 0) {
		m.type = RT_MSG_ERROR;
		snprintf(m.text, sizeof(m.text), "shim: %s",
			 sfd < 0 ? "signalfd failed" : "container init vanished");
	}
	if (send(RT_SHIM_FD_SYNC, &m, sizeof(m), MSG_NOSIGNAL) < 0 || m.type == RT_MSG_ERROR)
		return false;
	close(RT_SHIM_FD_SYNC);
	return true;
}

/* Input from attached clients goes to the container's stdin. */
static void attach_input(const struct pollfd *pfd)
{
	for (int i = 0; i < MAX_ATTACH; i++) {
		if (attach_fds[i] < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (attach_eof[i]) { /* gone entirely */
			drop_attach(i);
			continue;
		}
		char buf[4096];
		ssize_t n = read(attach_fds[i], buf, sizeof(buf));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n == 0) {
			attach_input_done(i); /* half-close: output still flows */
			continue;
		}
		if (n < 0) {
			drop_attach(i);
			continue;
		}
		if (attach_stdin[i] && in_fd >= 0 && write(in_fd, buf, (size_t)n) < 0) {
			/* a full stdin pipe drops input rather than stall the shim */
		}
	}
}

typedef struct init_exit {
	int status;
	int64_t finished, drain_deadline;
} init_exit;

/* Forwards signals to the init and reaps children; records the init's exit. */
static void handle_signals(int sfd, init_exit *ex)
{
	struct signalfd_siginfo si;
	while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo != SIGCHLD) {
			kill(init_pid, (int)si.ssi_signo);
			continue;
		}
		int st;
		pid_t p;
		/* Reparented orphans land here too (we are their subreaper). */
		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			if (p == init_pid && !exited) {
				exited = true;
				ex->status = st;
				ex->finished = now_ns();
				ex->drain_deadline = ex->finished + DRAIN_AFTER_EXIT_MS * 1000000LL;
			}
		}
	}
}

/* Until the init has exited and its output is drained (or the drain time is
 * up): log its output, serve attachers and the control socket. */
static void serve(int sfd, init_exit *ex)
{
	for (;;) {
		if (exited && (out_s.fd < 0 && err_s.fd < 0))
			return;
		int64_t left = -1;
		if (exited) {
			left = (ex->drain_deadline - now_ns()) / 1000000;
			if (left <= 0)
				return;
		}
		struct pollfd pfd[4 + MAX_ATTACH] = {
		    {.fd = sfd, .events = POLLIN},
		    {.fd = RT_SHIM_FD_CTL, .events = POLLIN},
		    {.fd = out_s.fd, .events = POLLIN},
		    {.fd = err_s.fd, .events = POLLIN},
		};
		for (int i = 0; i < MAX_ATTACH; i++)
			pfd[4 + i] = (struct pollfd){.fd = attach_fds[i],
						     .events = attach_eof[i] ? 0 : POLLIN};
		if (poll(pfd, 4 + MAX_ATTACH, (int)left) < 0 && errno != EINTR)
			return;
		attach_input(pfd + 4);
		if (pfd[0].revents & POLLIN)
			handle_signals(sfd, ex);
		if (pfd[1].revents & POLLIN) {
			int c = accept4(RT_SHIM_FD_CTL, NULL, NULL, SOCK_CLOEXEC);
			if (c >= 0 && !handle_client(c))
				close(c);
		}
		/* A pty master reports EIO once every slave is closed: that is EOF. */
		if (pfd[2].revents & (POLLIN | POLLHUP | POLLERR))
			stream_read(&out_s);
		if (pfd[3].revents & (POLLIN | POLLHUP | POLLERR))
			stream_read(&err_s);
	}
}

int main(int argc, char **argv)
{
	/* Exec'd from a memfd, the kernel named us after its fd number. */
	prctl(PR_SET_NAME, "agentd-shim", 0, 0, 0);
	if (argc == 2 && !strcmp(argv[1], "exec"))
		rt_shim_exec();
	if (argc != 1)
		return 2;
	rt_spawn_spec spec;
	bool pty;
	rt_shim_setup(&spec, &init_pid, &pty);
	init_start = proc_start_time(init_pid);
	take_stdio(&spec, pty);
	reserve_exit_record();
	signal(SIGPIPE, SIG_IGN);
	int sfd = open_signals();
	if (!report_ready(sfd))
		return 1;
	if (pty_fd >= 0)
		out_s.fd = in_fd = pty_fd;
	if (in_fd >= 0 && in_fd != pty_fd)
		fcntl(in_fd, F_SETFL, O_NONBLOCK); /* a stalled container never blocks us */
	init_exit ex = {0};
	serve(sfd, &ex);
	unlinkat(RT_SHIM_FD_STATE, RT_FILE_CTL, 0);
	write_exit(ex.status, ex.finished);
	return 0;
}
