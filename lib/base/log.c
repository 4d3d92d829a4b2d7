#include "base.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static ad_log_level current_level = AD_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void ad_log_set_level(ad_log_level level) { current_level = level; }

bool ad_log_enabled(ad_log_level level) { return level <= current_level; }

int ad_log_level_parse(const char *name, ad_log_level *ret_level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*ret_level = (ad_log_level)i;
			return 0;
		}
	}
	if (strcasecmp(name, "warning") == 0) {
		*ret_level = AD_LOG_WARN;
		return 0;
	}
	return -1;
}

void ad_log(ad_log_level level, const char *fmt, ...)
{
	if (!ad_log_enabled(level))
		return;
	int saved = errno;
	char ts[40], line[4096];
	ad_format_rfc3339nano(ad_now_ns(), ts);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line so concurrent threads never interleave within a line. */
	fprintf(stderr, "%s %-5s %s\n", ts, level_names[level], line);
	errno = saved;
}

int64_t ad_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ad_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec ad_monotonic_after_ms(unsigned ms)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

void ad_format_rfc3339nano(int64_t epoch_ns, char buf[40])
{
	time_t secs = (time_t)(epoch_ns / 1000000000);
	long nsec = (long)(epoch_ns % 1000000000);
	if (nsec < 0) {
		nsec += 1000000000;
		secs--;
	}
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t n = strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 40 - n, ".%09ldZ", nsec);
}

/* ---- crash points ---------------------------------------------------------- */
static pid_t fault_partner;

void ad_fault_set_partner(pid_t pid) { fault_partner = pid; }

void ad_fault_point(const char *name)
{
	const char *armed = getenv("AGENTD_FAULT");
	if (!armed)
		return;
	/* "NAME" fires on the first hit, "NAME:N" on the Nth (the second
	 * layer of a pull, a later container of a pod). One point is armed per
	 * process, so one counter of its hits is enough. */
	size_t len = strlen(name);
	if (strncmp(armed, name, len) != 0 || (armed[len] != '\0' && armed[len] != ':'))
		return;
	unsigned long want = 1;
	if (armed[len] == ':') {
		char *end;
		errno = 0;
		want = strtoul(armed + len + 1, &end, 10);
		if (errno || *end || end == armed + len + 1 || want == 0)
			return;
	}
	static unsigned long hits;
	unsigned long hit = __atomic_add_fetch(&hits, 1, __ATOMIC_SEQ_CST);
	if (hit != want)
		return;
	ad_log(AD_LOG_ERROR, "fault point %s reached (hit %lu): killing %s", name, hit,
	       fault_partner > 0 ? "agentd and this process" : "this process");
	if (fault_partner > 0)
		kill(fault_partner, SIGKILL);
	raise(SIGKILL);
}
