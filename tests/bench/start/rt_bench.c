/* rt_bench — libadruntime start latency and shim memory, for tests/bench/start/run.
 * usage: rt_bench <rootfs> <state-dir> <shim> <iterations>
 * Prints "lib_ms <mean ms per create+start+wait+delete of /bin/true>" and
 * "shim_rss_kib <mean VmRSS>" "shim_pss_kib <mean Pss>" over 10 sleeping
 * containers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"

static long status_kib(pid_t pid, const char *file, const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	FILE *f = fopen(path, "re");
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			v = strtol(line + strlen(key), NULL, 10);
	if (f)
		fclose(f);
	return v;
}

static pid_t shim_pid(rt_container *c)
{
	/* the shim is the init's parent */
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)rt_container_init_pid(c));
	FILE *f = fopen(path, "re");
	pid_t p = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "PPid:", 5))
			p = (pid_t)atoi(line + 5);
	if (f)
		fclose(f);
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: rt_bench <rootfs> <state-dir> <shim> <iterations>\n");
		return 64;
	}
	int n = atoi(argv[4]);
	rt_options o = {
	    .state_root = argv[2], .shim_path = argv[3], .cgroup_parent = "agentd-bench"};
	rt_runtime *rt;
	ad_error *e = NULL;
	if (rt_runtime_new(&o, &rt, &e) < 0)
		goto fail;
	static const char *const t_args[] = {"/bin/true", NULL};
	int64_t t0 = ad_monotonic_ns();
	int64_t ph[4] = {0};
	for (int i = 0; i < n; i++) {
		rt_config cfg;
		rt_config_init(&cfg);
		char id[32];
		snprintf(id, sizeof(id), "bench-%d", i);
		cfg.id = id;
		cfg.rootfs = argv[1];
		cfg.args = t_args;
		if (getenv("RT_BENCH_UNCONFINED"))
			cfg.security.seccomp = RT_SECCOMP_UNCONFINED;
		if (getenv("RT_BENCH_NO_CGNS"))
			cfg.namespaces[RT_NS_CGROUP].mode = RT_NS_SHARE_HOST;
		if (getenv("RT_BENCH_NO_NETNS"))
			cfg.namespaces[RT_NS_NET].mode = RT_NS_SHARE_HOST;
		rt_container *c;
		rt_state st;
		int64_t a = ad_monotonic_ns();
		if (rt_create(rt, &cfg, &c, &e) < 0)
			goto fail;
		int64_t b = ad_monotonic_ns();
		if (rt_start(c, &e) < 0)
			goto fail;
		int64_t d = ad_monotonic_ns();
		if (rt_wait(c, 10000, &st, &e) < 0)
			goto fail;
		int64_t f = ad_monotonic_ns();
		if (rt_delete(c, &e) < 0)
			goto fail;
		int64_t g = ad_monotonic_ns();
		ph[0] += b - a, ph[1] += d - b, ph[2] += f - d, ph[3] += g - f;
		rt_container_free(c);
	}
	printf("lib_ms %.3f\n", (double)(ad_monotonic_ns() - t0) / 1e6 / n);
	printf("lib_phases_ms create %.3f start %.3f wait %.3f delete %.3f\n", ph[0] / 1e6 / n,
	       ph[1] / 1e6 / n, ph[2] / 1e6 / n, ph[3] / 1e6 / n);

	static const char *const s_args[] = {"/bin/sleep", "60", NULL};
	rt_container *cs[10] = {0};
	long rss = 0, pss = 0;
	for (int i = 0; i < 10; i++) {
		rt_config cfg;
		rt_config_init(&cfg);
		char id[32];
		snprintf(id, sizeof(id), "sleep-%d", i);
		cfg.id = id;
		cfg.rootfs = argv[1];
		cfg.args = s_args;
		if (rt_create(rt, &cfg, &cs[i], &e) < 0 || rt_start(cs[i], &e) < 0)
			goto fail;
	}
	for (int i = 0; i < 10; i++) {
		pid_t s = shim_pid(cs[i]);
		rss += status_kib(s, "status", "VmRSS:");
		pss += status_kib(s, "smaps_rollup", "Pss:");
	}
	printf("shim_rss_kib %.1f\nshim_pss_kib %.1f\n", rss / 10.0, pss / 10.0);
	for (int i = 0; i < 10; i++) {
		if (rt_delete(cs[i], &e) < 0)
			goto fail;
		rt_container_free(cs[i]);
	}
	rt_runtime_free(rt);
	return 0;
fail:
	fprintf(stderr, "rt_bench: %s\n", e ? e->message : "?");
	return 1;
}
