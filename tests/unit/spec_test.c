/* agent/cri/spec.c: CRI container config + image config -> rt_config, pure
 * (no root, no files): the image config merge, mounts and devices, the
 * security context, resources and the pod's namespaces; and the stored form
 * (rt_config_pack) giving the same config back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "spec.h"

static const char *const passwd = "root:x:0:0:root:/root:/bin/sh\n"
				  "app:x:1000:1001:app:/home/app:/bin/sh\n"
				  "nobody:x:65534:65534:nobody:/:/bin/false\n";
static const char *const group = "root:x:0:\nstaff:x:50:app\nusers:x:100:\n";

/* A container config with name "c" and nothing else set. */
typedef struct fixture {
	Runtime__V1__ContainerConfig cc;
	Runtime__V1__ContainerMetadata md;
	Runtime__V1__LinuxContainerConfig linux_;
	Runtime__V1__LinuxContainerSecurityContext sc;
	Runtime__V1__LinuxContainerResources res;
	spec_input in;
} fixture;

static void fixture_init(fixture *f, const char *image_config)
{
	*f = (fixture){0};
	runtime__v1__container_config__init(&f->cc);
	runtime__v1__container_metadata__init(&f->md);
	runtime__v1__linux_container_config__init(&f->linux_);
	runtime__v1__linux_container_security_context__init(&f->sc);
	runtime__v1__linux_container_resources__init(&f->res);
	f->md.name = "c";
	f->cc.metadata = &f->md;
	f->in = (spec_input){
	    .config = &f->cc,
	    .image_config = image_config,
	    .id = "ctr1",
	    .rootfs = "/r",
	    .pod_dir = "/pods/p1",
	    .netns = "/run/netns/p1",
	    .infra_pid = 42,
	    .passwd = passwd,
	    .group = group,
	};
}

static void with_security(fixture *f)
{
	f->linux_.security_context = &f->sc;
	f->cc.linux = &f->linux_;
}

static void build_ok(fixture *f, spec_result *r)
{
	ad_error *e = NULL;
	if (spec_build(&f->in, r, &e) < 0)
		fail_msg("spec_build: %s", e->message);
}

static void build_fails(fixture *f, ad_code code, const char *needle)
{
	spec_result r;
	ad_error *e = NULL;
	assert_int_equal(spec_build(&f->in, &r, &e), -1);
	assert_int_equal(e->code, code);
	if (!strstr(e->message, needle))
		fail_msg("'%s' does not say '%s'", e->message, needle);
	ad_error_free(&e);
	spec_result_clear(&r);
}

static size_t strv_len(const char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

static const char *const img_full =
    "{\"config\": {\"Entrypoint\": [\"/ep\", \"-x\"], \"Cmd\": [\"c1\", \"c2\"],"
    " \"Env\": [\"PATH=/bin\", \"A=img\", \"B=img\"], \"WorkingDir\": \"/wd\","
    " \"User\": \"app:staff\"}}";

static void test_args_merge(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	/* The image's Entrypoint + Cmd. */
	fixture_init(&f, img_full);
	build_ok(&f, &r);
	assert_int_equal(strv_len(r.cfg.args), 4);
	assert_string_equal(r.cfg.args[0], "/ep");
	assert_string_equal(r.cfg.args[3], "c2");
	spec_result_clear(&r);
	/* args replace Cmd only. */
	char *args[] = {"a1"};
	f.cc.args = args;
	f.cc.n_args = 1;
	build_ok(&f, &r);
	assert_int_equal(strv_len(r.cfg.args), 3);
	assert_string_equal(r.cfg.args[0], "/ep");
	assert_string_equal(r.cfg.args[2], "a1");
	spec_result_clear(&r);
	/* command replaces Entrypoint and drops Cmd; args follow it. */
	char *cmd[] = {"/bin/run"};
	f.cc.command = cmd;
	f.cc.n_command = 1;
	build_ok(&f, &r);
	assert_int_equal(strv_len(r.cfg.args), 2);
	assert_string_equal(r.cfg.args[0], "/bin/run");
	assert_string_equal(r.cfg.args[1], "a1");
	spec_result_clear(&r);
	/* Neither the config nor the image has a command. */
	fixture_init(&f, "{}");
	build_fails(&f, AD_E_INVALID, "no command");
	fixture_init(&f, NULL);
	build_fails(&f, AD_E_INVALID, "no command");
}

static void test_env_and_workdir(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	fixture_init(&f, img_full);
	Runtime__V1__KeyValue a = RUNTIME__V1__KEY_VALUE__INIT, c = RUNTIME__V1__KEY_VALUE__INIT;
	a.key = "A", a.value = "cri";
	c.key = "C", c.value = "x=y";
	Runtime__V1__KeyValue *envs[] = {&a, &c};
	f.cc.envs = envs;
	f.cc.n_envs = 2;
	build_ok(&f, &r);
	/* Image env in order minus the overridden key, then the config's. */
	assert_int_equal(strv_len(r.cfg.env), 4);
	assert_string_equal(r.cfg.env[0], "PATH=/bin");
	assert_string_equal(r.cfg.env[1], "B=img");
	assert_string_equal(r.cfg.env[2], "A=cri");
	assert_string_equal(r.cfg.env[3], "C=x=y");
	assert_string_equal(r.cfg.cwd, "/wd");
	spec_result_clear(&r);
	f.cc.working_dir = "/mine";
	build_ok(&f, &r);
	assert_string_equal(r.cfg.cwd, "/mine");
	spec_result_clear(&r);
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"]}}");
	build_ok(&f, &r);
	assert_null(r.cfg.cwd);
	assert_int_equal(strv_len(r.cfg.env), 0);
	spec_result_clear(&r);
}

static void test_user_and_groups(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	/* The image's "name:group", looked up in the rootfs's files. */
	fixture_init(&f, img_full);
	build_ok(&f, &r);
	assert_int_equal(r.cfg.uid, 1000);
	assert_int_equal(r.cfg.gid, 50);
	spec_result_clear(&r);
	/* A user alone gets its passwd group. */
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"], \"User\": \"app\"}}");
	build_ok(&f, &r);
	assert_int_equal(r.cfg.uid, 1000);
	assert_int_equal(r.cfg.gid, 1001);
	spec_result_clear(&r);
	/* Numeric ids need no entry; a numeric group too. */
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"], \"User\": \"4242:77\"}}");
	f.in.passwd = f.in.group = NULL;
	build_ok(&f, &r);
	assert_int_equal(r.cfg.uid, 4242);
	assert_int_equal(r.cfg.gid, 77);
	spec_result_clear(&r);
	/* Unknown names are errors naming them. */
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"], \"User\": \"ghost\"}}");
	build_fails(&f, AD_E_INVALID, "user 'ghost' not found");
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"], \"User\": \"app:ghosts\"}}");
	build_fails(&f, AD_E_INVALID, "group 'ghosts' not found");
	/* run_as_user / run_as_group / run_as_username override the image. */
	fixture_init(&f, img_full);
	with_security(&f);
	Runtime__V1__Int64Value uid = RUNTIME__V1__INT64_VALUE__INIT;
	Runtime__V1__Int64Value gid = RUNTIME__V1__INT64_VALUE__INIT;
	uid.value = 65534;
	f.sc.run_as_user = &uid;
	build_ok(&f, &r);
	assert_int_equal(r.cfg.uid, 65534);
	assert_int_equal(r.cfg.gid, 65534);
	spec_result_clear(&r);
	gid.value = 5;
	f.sc.run_as_group = &gid;
	int64_t groups[] = {7, 8};
	f.sc.supplemental_groups = groups;
	f.sc.n_supplemental_groups = 2;
	build_ok(&f, &r);
	assert_int_equal(r.cfg.gid, 5);
	assert_int_equal(r.cfg.n_additional_gids, 2);
	assert_int_equal(r.cfg.additional_gids[1], 8);
	spec_result_clear(&r);
	f.sc.run_as_user = NULL;
	f.sc.run_as_username = "root";
	build_ok(&f, &r);
	assert_int_equal(r.cfg.uid, 0);
	assert_int_equal(r.cfg.gid, 5);
	spec_result_clear(&r);
	/* A group without the user it is for is refused, as kubelet and
	 * containerd refuse it. */
	f.sc.run_as_username = NULL;
	build_fails(&f, AD_E_INVALID, "run_as_group 5 is set without run_as_user");
	f.sc.run_as_username = "";
	build_fails(&f, AD_E_INVALID, "without run_as_user or run_as_username");
}

/* The groups of the image's /etc/group that list the user as a member come
 * with it (critest: user 1000 in group 50000, SupplementalGroups [1234] ->
 * `id -G` "1000 1234 50000"), before the supplemental ones, each once. */
static void test_image_member_groups(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"], \"User\": \"1000\"}}");
	f.in.passwd = "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home:/bin/sh\n";
	f.in.group = "root:x:0:\nuser:x:1000:\ngroup1:x:50000:other,user\nwheel:x:10:root\n"
		     "lone:x:60000:\n";
	with_security(&f);
	int64_t groups[] = {1234, 50000};
	f.sc.supplemental_groups = groups;
	f.sc.n_supplemental_groups = 2;
	build_ok(&f, &r);
	assert_int_equal(r.cfg.uid, 1000);
	assert_int_equal(r.cfg.gid, 1000);
	assert_int_equal(r.cfg.n_additional_gids, 2);
	assert_int_equal(r.cfg.additional_gids[0], 50000);
	assert_int_equal(r.cfg.additional_gids[1], 1234);
	spec_result_clear(&r);
	/* No user: root, and root's groups. */
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"]}}");
	f.in.group = "root:x:0:\nwheel:x:10:root\nadm:x:4:daemon,root\n";
	build_ok(&f, &r);
	assert_int_equal(r.cfg.n_additional_gids, 2);
	assert_int_equal(r.cfg.additional_gids[0], 10);
	assert_int_equal(r.cfg.additional_gids[1], 4);
	spec_result_clear(&r);
	/* A uid the image does not know has no name, so no member groups. */
	fixture_init(&f, "{\"config\": {\"Cmd\": [\"sh\"], \"User\": \"4242\"}}");
	f.in.group = "g:x:7:4242\n";
	build_ok(&f, &r);
	assert_int_equal(r.cfg.n_additional_gids, 0);
	spec_result_clear(&r);
}

static void test_mounts_and_devices(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	fixture_init(&f, img_full);
	Runtime__V1__Mount m1 = RUNTIME__V1__MOUNT__INIT, m2 = RUNTIME__V1__MOUNT__INIT;
	m1.container_path = "/data";
	m1.host_path = "/srv/data";
	m1.readonly = true;
	m1.propagation = RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_HOST_TO_CONTAINER;
	m2.container_path = "/etc/hosts";
	m2.host_path = "/my/hosts";
	m2.propagation = RUNTIME__V1__MOUNT_PROPAGATION__PROPAGATION_BIDIRECTIONAL;
	Runtime__V1__Mount *mounts[] = {&m1, &m2};
	f.cc.mounts = mounts;
	f.cc.n_mounts = 2;
	Runtime__V1__Device dev = RUNTIME__V1__DEVICE__INIT;
	dev.host_path = "/dev/fuse";
	dev.permissions = "rw";
	Runtime__V1__Device *devs[] = {&dev};
	f.cc.devices = devs;
	f.cc.n_devices = 1;
	spec_device node = {.mode = S_IFCHR, .major = 10, .minor = 229};
	f.in.devices = &node;
	build_ok(&f, &r);
	/* Two of the config, the pod's hostname and resolv.conf (its hosts is
	 * mounted over), the device. */
	assert_int_equal(r.cfg.n_mounts, 5);
	assert_string_equal(r.cfg.mounts[0].destination, "/data");
	assert_true(r.cfg.mounts[0].readonly);
	assert_int_equal(r.cfg.mounts[0].propagation, RT_PROP_RSLAVE);
	assert_int_equal(r.cfg.mounts[1].propagation, RT_PROP_RSHARED);
	assert_string_equal(r.cfg.mounts[2].source, "/pods/p1/hostname");
	assert_string_equal(r.cfg.mounts[3].destination, "/etc/resolv.conf");
	assert_string_equal(r.cfg.mounts[4].destination, "/dev/fuse");
	assert_false(r.cfg.mounts[4].readonly);
	assert_string_equal(r.cfg.security.device_rules[0], "c 10:229 rw");
	spec_result_clear(&r);
	/* Bad input. */
	node = (spec_device){.mode = S_IFREG};
	build_fails(&f, AD_E_INVALID, "is not a device node");
	node = (spec_device){.errno_value = 2};
	build_fails(&f, AD_E_INVALID, "device /dev/fuse");
	node = (spec_device){.mode = S_IFBLK};
	dev.permissions = "rwx";
	build_fails(&f, AD_E_INVALID, "bad permissions 'rwx'");
	m1.host_path = "relative";
	build_fails(&f, AD_E_INVALID, "host path 'relative' is not absolute");
	m1.container_path = "data";
	build_fails(&f, AD_E_INVALID, "container path 'data' is not absolute");
}

static void test_security_context(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	/* No context: Unconfined seccomp, Docker's default capabilities. */
	fixture_init(&f, img_full);
	build_ok(&f, &r);
	assert_int_equal(r.cfg.security.seccomp, RT_SECCOMP_UNCONFINED);
	assert_false(r.cfg.security.capabilities_set);
	assert_false(r.cfg.security.privileged);
	spec_result_clear(&r);
	with_security(&f);
	Runtime__V1__Capability caps = RUNTIME__V1__CAPABILITY__INIT;
	char *add[] = {"NET_ADMIN"}, *drop[] = {"CAP_CHOWN"};
	caps.add_capabilities = add;
	caps.n_add_capabilities = 1;
	caps.drop_capabilities = drop;
	caps.n_drop_capabilities = 1;
	f.sc.capabilities = &caps;
	Runtime__V1__SecurityProfile seccomp = RUNTIME__V1__SECURITY_PROFILE__INIT;
	seccomp.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
	seccomp.localhost_ref = "/etc/profile.json";
	f.sc.seccomp = &seccomp;
	Runtime__V1__SecurityProfile aa = RUNTIME__V1__SECURITY_PROFILE__INIT;
	aa.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
	aa.localhost_ref = "my-profile";
	f.sc.apparmor = &aa;
	f.sc.readonly_rootfs = true;
	f.sc.no_new_privs = true;
	char *masked[] = {"/proc/kcore"};
	f.sc.masked_paths = masked;
	f.sc.n_masked_paths = 1;
	build_ok(&f, &r);
	uint64_t want = (rt_default_capabilities() | (1ULL << 12)) & ~1ULL; /* NET_ADMIN, CHOWN */
	assert_true(r.cfg.security.capabilities_set);
	assert_int_equal(r.cfg.security.cap_bounding, want);
	assert_int_equal(r.cfg.security.cap_effective, want);
	assert_int_equal(r.cfg.security.seccomp, RT_SECCOMP_CUSTOM);
	assert_string_equal(r.cfg.security.seccomp_profile, "/etc/profile.json");
	assert_string_equal(r.cfg.security.apparmor_profile, "my-profile");
	assert_true(r.cfg.security.readonly_rootfs);
	assert_true(r.cfg.security.no_new_privs);
	assert_string_equal(r.cfg.security.masked_paths[0], "/proc/kcore");
	assert_null(r.cfg.security.masked_paths[1]);
	spec_result_clear(&r);
	/* ALL, then drop. */
	add[0] = "ALL";
	build_ok(&f, &r);
	assert_int_equal(r.cfg.security.cap_bounding, ~1ULL);
	spec_result_clear(&r);
	add[0] = "NO_SUCH_CAP";
	build_fails(&f, AD_E_INVALID, "unknown capability 'NO_SUCH_CAP'");
	/* Privileged: capabilities as given are ignored; device rules none. */
	f.sc.capabilities = NULL;
	f.sc.privileged = true;
	seccomp.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__RuntimeDefault;
	build_ok(&f, &r);
	assert_true(r.cfg.security.privileged);
	assert_int_equal(r.cfg.security.seccomp, RT_SECCOMP_DEFAULT);
	spec_result_clear(&r);
}

static void test_resources(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	fixture_init(&f, img_full);
	f.linux_.resources = &f.res;
	f.cc.linux = &f.linux_;
	f.res.cpu_shares = 512;
	f.res.cpu_quota = 50000;
	f.res.cpu_period = 100000;
	f.res.memory_limit_in_bytes = 64 << 20;
	f.res.memory_swap_limit_in_bytes = 128 << 20;
	f.res.cpuset_cpus = "0-1";
	f.res.cpuset_mems = "";
	f.res.oom_score_adj = 500;
	build_ok(&f, &r);
	const rt_resources *res = &r.cfg.resources;
	assert_int_equal(res->cpu_shares, 512);
	assert_int_equal(res->cpu_quota_us, 50000);
	assert_int_equal(res->cpu_period_us, 100000);
	assert_int_equal(res->memory_limit, 64 << 20);
	assert_int_equal(res->memory_swap, 128 << 20);
	assert_string_equal(res->cpuset_cpus, "0-1");
	assert_null(res->cpuset_mems);
	assert_true(r.cfg.oom_score_adj_set);
	assert_int_equal(r.cfg.oom_score_adj, 500);
	/* RLIMIT_NOFILE of its own, not agentd's (unknown: the default). */
	assert_int_equal(r.cfg.n_rlimits, 1);
	assert_int_equal(r.cfg.rlimits[0].resource, RLIMIT_NOFILE);
	assert_int_equal(r.cfg.rlimits[0].soft, 1024);
	assert_int_equal(r.cfg.rlimits[0].hard, 524288);
	spec_result_clear(&r);
	/* Never above agentd's own hard limit, which it cannot raise. */
	f.in.nofile_max = 20000;
	build_ok(&f, &r);
	assert_int_equal(r.cfg.rlimits[0].soft, 1024);
	assert_int_equal(r.cfg.rlimits[0].hard, 20000);
	spec_result_clear(&r);
	f.in.nofile_max = 512;
	build_ok(&f, &r);
	assert_int_equal(r.cfg.rlimits[0].soft, 512);
	assert_int_equal(r.cfg.rlimits[0].hard, 512);
	spec_result_clear(&r);
	/* Unset (0) is not a limit. */
	rt_config cfg = {0};
	Runtime__V1__LinuxContainerResources none = RUNTIME__V1__LINUX_CONTAINER_RESOURCES__INIT;
	spec_resources(&none, &cfg);
	assert_int_equal(cfg.resources.cpu_shares, 0);
	assert_int_equal(cfg.resources.memory_limit, 0);
	assert_false(cfg.oom_score_adj_set);
}

static void test_namespaces(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	/* The pod's network, UTS and IPC; a pid namespace of its own. */
	fixture_init(&f, img_full);
	build_ok(&f, &r);
	assert_int_equal(r.cfg.namespaces[RT_NS_NET].mode, RT_NS_JOIN);
	assert_string_equal(r.cfg.namespaces[RT_NS_NET].path, "/run/netns/p1");
	assert_string_equal(r.cfg.namespaces[RT_NS_IPC].path, "/proc/42/ns/ipc");
	assert_string_equal(r.cfg.namespaces[RT_NS_UTS].path, "/proc/42/ns/uts");
	assert_int_equal(r.cfg.namespaces[RT_NS_PID].mode, RT_NS_NEW);
	assert_int_equal(r.cfg.namespaces[RT_NS_MOUNT].mode, RT_NS_NEW);
	assert_string_equal(r.cfg.id, "ctr1");
	assert_string_equal(r.cfg.rootfs, "/r");
	spec_result_clear(&r);
	/* pid POD, then TARGET; the node's network from the pod config. */
	with_security(&f);
	Runtime__V1__NamespaceOption o = RUNTIME__V1__NAMESPACE_OPTION__INIT;
	o.pid = RUNTIME__V1__NAMESPACE_MODE__POD;
	f.sc.namespace_options = &o;
	Runtime__V1__PodSandboxConfig pc = RUNTIME__V1__POD_SANDBOX_CONFIG__INIT;
	Runtime__V1__LinuxPodSandboxConfig pl = RUNTIME__V1__LINUX_POD_SANDBOX_CONFIG__INIT;
	Runtime__V1__LinuxSandboxSecurityContext psc =
	    RUNTIME__V1__LINUX_SANDBOX_SECURITY_CONTEXT__INIT;
	Runtime__V1__NamespaceOption po = RUNTIME__V1__NAMESPACE_OPTION__INIT;
	po.network = RUNTIME__V1__NAMESPACE_MODE__NODE;
	psc.namespace_options = &po;
	pl.security_context = &psc;
	pl.cgroup_parent = "/kubepods/pod1";
	pc.linux = &pl;
	f.in.pod = &pc;
	build_ok(&f, &r);
	assert_string_equal(r.cfg.namespaces[RT_NS_PID].path, "/proc/42/ns/pid");
	assert_int_equal(r.cfg.namespaces[RT_NS_NET].mode, RT_NS_SHARE_HOST);
	assert_int_equal(r.cfg.namespaces[RT_NS_UTS].mode, RT_NS_SHARE_HOST);
	assert_string_equal(r.cfg.cgroup_parent, "/kubepods/pod1");
	spec_result_clear(&r);
	o.pid = RUNTIME__V1__NAMESPACE_MODE__TARGET;
	f.in.target_pid = 77;
	build_ok(&f, &r);
	assert_string_equal(r.cfg.namespaces[RT_NS_PID].path, "/proc/77/ns/pid");
	spec_result_clear(&r);
	f.in.target_pid = 0;
	build_fails(&f, AD_E_INVALID, "TARGET");
}

/* The stored form: what spec_build made comes back field by field. */
static void test_stored_form(void **state)
{
	(void)state;
	fixture f;
	spec_result r;
	fixture_init(&f, img_full);
	with_security(&f);
	f.linux_.resources = &f.res;
	f.res.memory_limit_in_bytes = 1 << 20;
	f.res.cpuset_cpus = "1";
	Runtime__V1__SecurityProfile aa = RUNTIME__V1__SECURITY_PROFILE__INIT;
	aa.profile_type = RUNTIME__V1__SECURITY_PROFILE__PROFILE_TYPE__Localhost;
	aa.localhost_ref = "p";
	f.sc.apparmor = &aa;
	int64_t groups[] = {9};
	f.sc.supplemental_groups = groups;
	f.sc.n_supplemental_groups = 1;
	f.cc.tty = true;
	f.in.log_path = "/logs/c.log";
	build_ok(&f, &r);
	char *buf = NULL;
	size_t len = 0;
	rt_config_pack(&r.cfg, &buf, &len);
	rt_config back;
	ad_error *e = NULL;
	if (rt_config_unpack(buf, len, &back, &e) < 0)
		fail_msg("%s", e->message);
	assert_string_equal(back.id, "ctr1");
	assert_int_equal(strv_len(back.args), 4);
	assert_string_equal(back.args[3], "c2");
	assert_int_equal(strv_len(back.env), 3);
	assert_string_equal(back.cwd, "/wd");
	assert_int_equal(back.uid, 1000);
	assert_int_equal(back.n_additional_gids, 2); /* staff (the image's), then 9 */
	assert_int_equal(back.additional_gids[0], 50);
	assert_int_equal(back.additional_gids[1], 9);
	assert_int_equal(back.n_mounts, r.cfg.n_mounts);
	assert_string_equal(back.mounts[2].source, "/pods/p1/resolv.conf");
	assert_string_equal(back.namespaces[RT_NS_IPC].path, "/proc/42/ns/ipc");
	assert_int_equal(back.namespaces[RT_NS_PID].mode, RT_NS_NEW);
	assert_int_equal(back.resources.memory_limit, 1 << 20);
	assert_string_equal(back.resources.cpuset_cpus, "1");
	assert_int_equal(back.security.seccomp, RT_SECCOMP_UNCONFINED);
	assert_string_equal(back.security.apparmor_profile, "p");
	assert_null(back.security.masked_paths);
	assert_true(back.tty);
	assert_string_equal(back.log_path, "/logs/c.log");
	rt_config_unpacked_clear(&back);
	/* A damaged or foreign blob is an error, not a config. */
	assert_int_equal(rt_config_unpack(buf, len - 1, &back, &e), -1);
	assert_int_equal(e->code, AD_E_DATA_LOSS);
	ad_error_free(&e);
	buf[0] ^= 1;
	assert_int_equal(rt_config_unpack(buf, len, &back, &e), -1);
	assert_int_equal(e->code, AD_E_DATA_LOSS);
	ad_error_free(&e);
	free(buf);
	spec_result_clear(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_args_merge),	     cmocka_unit_test(test_env_and_workdir),
	    cmocka_unit_test(test_user_and_groups),  cmocka_unit_test(test_image_member_groups),
	    cmocka_unit_test(test_mounts_and_devices),
	    cmocka_unit_test(test_security_context), cmocka_unit_test(test_resources),
	    cmocka_unit_test(test_namespaces),	     cmocka_unit_test(test_stored_form),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
