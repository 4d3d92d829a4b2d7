/* RUN: a command in a container of the build's runtime on the step's rootfs
 * (the overlay store_rootfs_mount made), its output relayed while it runs. */
#include "build_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How much of the output a failed RUN's error repeats. */
#define TAIL_BYTES 2048

typedef struct log_reader {
	int fd;
	char buf[65536];
	size_t len;
	char tail[TAIL_BYTES];
	size_t tail_len;
	const brun_opts *o;
} log_reader;

static void keep_tail(log_reader *lr, const char *p, size_t n)
{
	if (n >= TAIL_BYTES) {
		memcpy(lr->tail, p + n - TAIL_BYTES, TAIL_BYTES);
		lr->tail_len = TAIL_BYTES;
		return;
	}
	if (lr->tail_len + n > TAIL_BYTES) {
		size_t drop = lr->tail_len + n - TAIL_BYTES;
		memmove(lr->tail, lr->tail + drop, lr->tail_len - drop);
		lr->tail_len -= drop;
	}
	memcpy(lr->tail + lr->tail_len, p, n);
	lr->tail_len += n;
}

/* The CRI log's lines: "TIME STREAM P|F text"; P is a partial line. */
static void relay_line(log_reader *lr, char *line, size_t len)
{
	char *sp1 = memchr(line, ' ', len);
	char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - line)) : NULL;
	if (!sp2 || sp2 + 2 > line + len)
		return;
	bool partial = sp2[1] == 'P';
	char *text = sp2 + 3 <= line + len ? sp2 + 3 : line + len;
	size_t tlen = (size_t)(line + len - text);
	char out[65536 + 1];
	memcpy(out, text, tlen);
	if (!partial)
		out[tlen++] = '\n';
	keep_tail(lr, out, tlen);
	if (lr->o->output)
		lr->o->output(lr->o->userdata, out, tlen);
}

static void read_log(log_reader *lr)
{
	for (;;) {
		ssize_t n = read(lr->fd, lr->buf + lr->len, sizeof(lr->buf) - lr->len);
		if (n <= 0)
			break;
		lr->len += (size_t)n;
		char *nl;
		while ((nl = memchr(lr->buf, '\n', lr->len))) {
			size_t l = (size_t)(nl - lr->buf);
			relay_line(lr, lr->buf, l);
			memmove(lr->buf, nl + 1, lr->len - l - 1);
			lr->len -= l + 1;
		}
		if (lr->len == sizeof(lr->buf))
			lr->len = 0; /* a line longer than the buffer: the runtime splits them anyway */
	}
}

int brun(build_service *b, const char *id, const brun_opts *o, int *ret_exit, char **ret_tail,
	 ad_error **err)
{
	*ret_tail = NULL;
	if (!b->rt)
		return ad_fail(err, AD_E_UNAVAILABLE, "RUN needs the container runtime: %s",
			       b->rt_error ? b->rt_error : "not available");
	rt_config cfg;
	rt_config_init(&cfg);
	cfg.id = id;
	cfg.rootfs = o->rootfs;
	cfg.args = o->args;
	cfg.env = o->env;
	cfg.cwd = o->cwd;
	cfg.uid = o->uid;
	cfg.gid = o->gid;
	cfg.log_path = o->log_path;
	cfg.hostname = "buildkitsandbox";
	cfg.cgroup_parent = NULL;
	if (o->net && o->net->host) {
		cfg.namespaces[RT_NS_NET].mode = RT_NS_SHARE_HOST;
	} else if (o->net && o->net->netns) {
		cfg.namespaces[RT_NS_NET].mode = RT_NS_JOIN;
		cfg.namespaces[RT_NS_NET].path = o->net->netns;
	}
	rt_container *c = NULL;
	if (rt_create(b->rt, &cfg, &c, err) < 0)
		return ad_error_wrap(err, "RUN");
	log_reader lr = {.fd = -1, .o = o};
	int r = rt_start(c, err);
	if (r == 0) {
		lr.fd = open(o->log_path, O_RDONLY | O_CLOEXEC);
		rt_state st = {0};
		for (;;) {
			_cleanup_error_ ad_error *we = NULL;
			int wr = rt_wait(c, 100, &st, &we);
			if (lr.fd >= 0)
				read_log(&lr);
			if (wr == 0)
				break;
			if (we->code != AD_E_DEADLINE) {
				r = -1;
				*err = ad_steal_ptr(we);
				break;
			}
			struct pollfd p = {.fd = o->cancel_fd, .events = POLLIN};
			if (o->cancel_fd > 0 && poll(&p, 1, 0) > 0) {
				r = ad_fail(err, AD_E_CANCELLED, "RUN: cancelled");
				break;
			}
		}
		if (r == 0)
			*ret_exit = st.exit_code;
	}
	_cleanup_error_ ad_error *de = NULL;
	if (rt_delete(c, &de) < 0)
		ad_warn("build container %s: %s", id, de->message);
	rt_container_free(c);
	if (lr.fd >= 0)
		close(lr.fd);
	if (r == 0)
		*ret_tail = ad_strndup(lr.tail, lr.tail_len);
	return r;
}
