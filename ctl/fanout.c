/* agentctl --hosts FILE: one read command against many agents at once. Each
 * host gets its own agentctl process (this program, with -e set to the
 * host's endpoint and the same options otherwise), all running
 * concurrently; their outputs become one table with a HOST column. A host
 * that fails gets a line on stderr and makes the exit status non-zero. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl.h"

extern char **environ;

/* Commands that only read, and whether their table starts with a header. */
static const struct {
	const char *name;
	bool header;
} fanout_commands[] = {
    {"version", false}, {"info", false}, {"images", true},
    {"pods", true},	{"ps", true},	 {"stats", true},
};

typedef struct host {
	char *name, *endpoint;
	pid_t pid;
	int out_fd, err_fd;
	char *out, *err;
	size_t out_len, err_len;
	int status;
} host;

static void hosts_free(host *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].endpoint);
		free(h[i].out);
		free(h[i].err);
	}
	free(h);
}

/* Lines "[NAME] ENDPOINT" ('#' comments); ENDPOINT "host:port" means
 * tls://host:port. */
static int read_hosts(const char *path, host **ret, size_t *ret_n)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f) {
		ctl_warnx("--hosts %s: %s", path, strerror(errno));
		return EX_NOINPUT;
	}
	host *v = NULL;
	size_t n = 0, lineno = 0;
	char line[1024];
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *save = NULL, *a = strtok_r(line, " \t\r\n", &save);
		char *b = a ? strtok_r(NULL, " \t\r\n", &save) : NULL;
		char *extra = b ? strtok_r(NULL, " \t\r\n", &save) : NULL;
		if (!a)
			continue;
		if (extra) {
			hosts_free(v, n);
			ctl_warnx("%s:%zu: want [NAME] ENDPOINT, got a third field '%s'", path,
				  lineno, extra);
			return EX_DATAERR;
		}
		const char *ep = b ? b : a;
		v = ad_realloc(v, (n + 1) * sizeof(host));
		v[n] = (host){.name = ad_strdup(a), .out_fd = -1, .err_fd = -1};
		v[n].endpoint =
		    strstr(ep, "://") || ep[0] == '/' ? ad_strdup(ep) : ad_asprintf("tls://%s", ep);
		n++;
	}
	if (!n) {
		ctl_warnx("--hosts %s: no hosts in the file", path);
		return EX_DATAERR;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* argv of one host's agentctl: the global options as given (without
 * --hosts), -e ENDPOINT, then the command and its arguments. */
static char **child_argv(int argc, char **argv, int cmd_index, const char *endpoint)
{
	char **v = ad_malloc0((size_t)(argc + 4) * sizeof(char *));
	size_t n = 0;
	v[n++] = argv[0];
	for (int i = 1; i < cmd_index; i++) {
		if (strcmp(argv[i], "--hosts") == 0) {
			i++;
			continue;
		}
		if (strncmp(argv[i], "--hosts=", 8) == 0)
			continue;
		v[n++] = argv[i];
	}
	v[n++] = (char *)"-e";
	v[n++] = (char *)endpoint;
	for (int i = cmd_index; i < argc; i++)
		v[n++] = argv[i];
	return v;
}

static int spawn_host(host *h, char **argv)
{
	int out[2], err[2];
	if (pipe2(out, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
	int r = posix_spawn(&h->pid, "/proc/self/exe", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(out[1]);
	close(err[1]);
	if (r != 0) {
		close(out[0]);
		close(err[0]);
		errno = r;
		return -1;
	}
	h->out_fd = out[0];
	h->err_fd = err[0];
	return 0;
}

static void drain(int *fd, char **buf, size_t *len)
{
	char chunk[4096];
	ssize_t n = read(*fd, chunk, sizeof(chunk));
	if (n > 0) {
		*buf = ad_realloc(*buf, *len + (size_t)n + 1);
		memcpy(*buf + *len, chunk, (size_t)n);
		*len += (size_t)n;
		(*buf)[*len] = '\0';
		return;
	}
	if (n < 0 && errno == EINTR)
		return;
	close(*fd);
	*fd = -1;
}

/* Reads every child's stdout and stderr until all are closed. */
static void collect(host *h, size_t n)
{
	struct pollfd *p = ad_malloc0(2 * n * sizeof(struct pollfd));
	for (;;) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			if (h[i].out_fd >= 0)
				p[k++] = (struct pollfd){.fd = h[i].out_fd, .events = POLLIN};
			if (h[i].err_fd >= 0)
				p[k++] = (struct pollfd){.fd = h[i].err_fd, .events = POLLIN};
		}
		if (!k)
			break;
		if (poll(p, k, -1) < 0 && errno != EINTR)
			break;
		for (size_t j = 0; j < k; j++) {
			if (!p[j].revents)
				continue;
			for (size_t i = 0; i < n; i++) {
				if (h[i].out_fd == p[j].fd)
					drain(&h[i].out_fd, &h[i].out, &h[i].out_len);
				else if (h[i].err_fd == p[j].fd)
					drain(&h[i].err_fd, &h[i].err, &h[i].err_len);
			}
		}
	}
	free(p);
	for (size_t i = 0; i < n; i++) {
		if (h[i].pid <= 0) /* never started: its status is set */
			continue;
		int st = 0;
		while (waitpid(h[i].pid, &st, 0) < 0 && errno == EINTR)
			;
		h[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
}

/* The last line of a child's stderr, without its "agentctl: " prefix. */
static const char *why(host *h)
{
	if (!h->err || !h->err_len)
		return "failed without a message";
	while (h->err_len && h->err[h->err_len - 1] == '\n')
		h->err[--h->err_len] = '\0';
	char *last = strrchr(h->err, '\n');
	last = last ? last + 1 : h->err;
	return strncmp(last, "agentctl: ", 10) == 0 ? last + 10 : last;
}

int ctl_fanout(const char *hosts_file, int argc, char **argv, int cmd_index)
{
	const char *name = argv[cmd_index];
	int cmd = -1;
	for (size_t i = 0; i < sizeof(fanout_commands) / sizeof(*fanout_commands); i++)
		if (strcmp(fanout_commands[i].name, name) == 0)
			cmd = (int)i;
	if (cmd < 0)
		return ctl_usage_error(NULL,
				       "--hosts runs read commands only (version, info, images, "
				       "pods, ps, stats), not '%s'",
				       name);
	for (int i = cmd_index + 1; i < argc; i++)
		if ((strcmp(argv[i], "-o") == 0 && i + 1 < argc &&
		     strcmp(argv[i + 1], "table") != 0 && strcmp(argv[i + 1], "text") != 0) ||
		    (strncmp(argv[i], "-o", 2) == 0 && argv[i][2] && strcmp(argv[i] + 2, "table") &&
		     strcmp(argv[i] + 2, "text")) ||
		    strncmp(argv[i], "--output", 8) == 0)
			return ctl_usage_error(NULL,
					       "--hosts merges tables only (no -o json|yaml)");

	host *h = NULL;
	size_t n = 0;
	int r = read_hosts(hosts_file, &h, &n);
	if (r)
		return r;
	size_t width = strlen("HOST");
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(h[i].name);
		width = len > width ? len : width;
		_cleanup_free_ char **child = child_argv(argc, argv, cmd_index, h[i].endpoint);
		if (spawn_host(&h[i], child) < 0) {
			h[i].status = EX_OSERR;
			h[i].err = ad_asprintf("cannot run agentctl: %s", strerror(errno));
			h[i].err_len = strlen(h[i].err);
			h[i].pid = -1;
		}
	}
	collect(h, n);

	bool header_done = !fanout_commands[cmd].header;
	int status = 0;
	for (size_t i = 0; i < n; i++) {
		if (h[i].status != 0)
			continue;
		char *save = NULL;
		bool first = true;
		for (char *line = strtok_r(h[i].out ? h[i].out : (char *)"", "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			if (first && fanout_commands[cmd].header) {
				first = false;
				if (!header_done)
					printf("%-*s %s\n", (int)width, "HOST", line);
				header_done = true;
				continue;
			}
			first = false;
			printf("%-*s %s\n", (int)width, h[i].name, line);
		}
	}
	fflush(stdout);
	for (size_t i = 0; i < n; i++) {
		if (h[i].status == 0)
			continue;
		fprintf(stderr, "agentctl: %s (%s): %s\n", h[i].name, h[i].endpoint, why(&h[i]));
		if (!status)
			status = h[i].status;
	}
	hosts_free(h, n);
	return status;
}
