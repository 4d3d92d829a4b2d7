"""Pods in user namespaces against a real agentd (private CNI network, busybox
from a loopback registry, a private subuid/subgid file named in agentd's
config): the container sees its mapping and its rootfs owned by its root,
while its processes run as the mapped host ids and cannot write what the
host's root owns; two pods get disjoint blocks, the range runs out with a
clear RESOURCE_EXHAUSTED and nothing left behind, a removed pod's block is
given again; bad mappings are refused; the chowned-copy fallback (idmapped
mounts made to fail with an LD_PRELOAD shim, as crun's tests/no_openat2.c
does for openat2) works and its copies go with the pod; a restarted agentd
keeps the pods and their blocks. agentd's dirs and the volume live under
pytest's 0700 dirs, which the containers' root cannot search: agentd must
reach rootfs and bind sources for it. Everything created is removed."""
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adu%d" % (os.getpid() % 1000)
SUBNET = "10.239.%d.0/24" % N
IMAGE_PATH = "test/usernsbox:v1"
USER = "agentd-userns-test"
# Two blocks of 65536: the third pod finds none.
BASE = 1000000 + 131072 * (os.getpid() % 1000)
BLOCK = 65536

NO_IDMAP_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sys/mount.h>
/* Idmapped mounts "not supported": agentd must fall back to chowned copies. */
int mount_setattr(int dfd, const char *path, unsigned int flags, struct mount_attr *attr,
		  size_t size)
{
	(void)dfd; (void)path; (void)flags; (void)attr; (void)size;
	errno = ENOSYS;
	return -1;
}
"""


def write_config(work, extra=""):
    P.write_network(work, "agentd-userns-test", BRIDGE, SUBNET)
    (work / "subuid").write_text("# test\nsomeoneelse:200000:65536\n%s:%d:%d\n" %
                                 (USER, BASE, 2 * BLOCK))
    (work / "subgid").write_text("%s:%d:%d\n" % (USER, BASE, 2 * BLOCK))
    cfg = work / "agentd.conf"
    cfg.write_text(cfg.read_text() + "[userns]\nuser = %s\nsubuid_file = %s\nsubgid_file = %s\n"
                   % (USER, work / "subuid", work / "subgid") + extra)


@pytest.fixture(scope="module")
def registry(work):
    with P.busybox_registry(work, IMAGE_PATH) as reg:
        yield reg


@pytest.fixture(scope="module")
def daemon(work, pb, registry):
    write_config(work)
    a = H.Agentd(workdir=str(work / "agentd"),
                 extra_args=["--config", str(work / "agentd.conf")],
                 env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")})
    a.start()
    try:
        yield a
    finally:
        try:
            P.remove_all_pods(pb, a)
        finally:
            try:
                a.stop()
            finally:
                a.kill()
                P.remove_network(work, BRIDGE)
                P.remove_empty_cgroup_parents()


@pytest.fixture(scope="module")
def image(pb, daemon, registry):
    return P.pull(pb, daemon, "%s/%s" % (registry.host, IMAGE_PATH))


_seq = [0]


def pod_config(pb, work, mode=None, uids=(), gids=()):
    _seq[0] += 1
    name = "un%d" % _seq[0]
    cfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name),
        hostname=name, log_directory=str(work / "logs" / name))
    if mode is not None:
        u = cfg.linux.security_context.namespace_options.userns_options
        u.mode = mode
        for c, h, n in uids:
            u.uids.add(container_id=c, host_id=h, length=n)
        for c, h, n in gids:
            u.gids.add(container_id=c, host_id=h, length=n)
    return cfg


def run_pod(rt, pb, cfg):
    return rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg), timeout=120).pod_sandbox_id


def remove_pod(rt, pb, pid):
    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=120)


def run_ctr(rt, pb, pod, cfg, image, cmd, mounts=(), name="c"):
    cc = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                image=pb.api.ImageSpec(image=image), command=cmd,
                                mounts=list(mounts))
    cid = rt.CreateContainer(pb.api.CreateContainerRequest(
        pod_sandbox_id=pod, config=cc, sandbox_config=cfg), timeout=120).container_id
    rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def exec_ok(rt, pb, cid, *cmd):
    r = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=20),
                    timeout=60)
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    return r.stdout.decode()


def exec_rc(rt, pb, cid, *cmd):
    r = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=20),
                    timeout=60)
    return r.exit_code, r.stdout.decode() + r.stderr.decode()


def pod_maps(rt, pb, pid):
    st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid)).status
    u = st.linux.namespaces.options.userns_options
    return [(m.container_id, m.host_id, m.length) for m in u.uids], \
        [(m.container_id, m.host_id, m.length) for m in u.gids]


def ctr_pid(rt, pb, cid):
    st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid, verbose=True))
    import json
    return json.loads(st.info["info"])["pid"]


def status_ids(pid, key):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith(key + ":"):
            return [int(x) for x in line.split()[1:]]
    raise KeyError(key)


def rpc_error(fn, req):
    with pytest.raises(grpc.RpcError) as ei:
        fn(req, timeout=120)
    return ei.value


@pytest.fixture
def rt(pb, daemon):
    with daemon.unix_channel() as ch:
        yield pb.api_grpc.RuntimeServiceStub(ch)


def test_status_reports_user_namespaces(rt, pb):
    r = rt.Status(pb.api.StatusRequest())
    assert [h.name for h in r.runtime_handlers] == ["", "agentd"]
    assert all(h.features.user_namespaces for h in r.runtime_handlers)
    assert not r.features.user_namespaces_host_network


def test_pod_in_user_namespace(rt, pb, work, image, daemon):
    # agentd's dirs and this volume are under pytest's 0700 dirs (kubelet's
    # volumes are under 0750 ones): the container's root could not walk
    # there, agentd reaches them for it
    host = work / "hostdir"
    host.mkdir(mode=0o755, exist_ok=True)
    os.chown(host, 0, 0)
    os.chmod(host, 0o755)
    cfg = pod_config(pb, work, pb.api.POD)
    pod = run_pod(rt, pb, cfg)
    try:
        uids, gids = pod_maps(rt, pb, pod)
        assert uids == [(0, BASE, BLOCK)] and gids == [(0, BASE, BLOCK)], (uids, gids)
        mount = pb.api.Mount(container_path="/data", host_path=str(host))
        cid = run_ctr(rt, pb, pod, cfg, image, ["sleep", "300"], [mount])
        out = exec_ok(rt, pb, cid, "cat", "/proc/self/uid_map")
        assert out.split() == ["0", str(BASE), str(BLOCK)], out
        assert exec_ok(rt, pb, cid, "cat", "/proc/self/gid_map").split() == \
            ["0", str(BASE), str(BLOCK)]
        assert exec_ok(rt, pb, cid, "busybox", "id", "-u").strip() == "0"
        # this kernel (6.x, ext4 layers) takes the idmapped mounts: no copies
        assert "rootfs mapped for its user namespace by idmapped mounts" in daemon.stderr_text()
        assert not (Path(daemon.root) / "mapped").exists()
        # the image's files are root's inside (idmapped or chowned)
        owners = exec_ok(rt, pb, cid, "busybox", "stat", "-c", "%u:%g", "/bin/busybox", "/bin",
                         "/etc")
        assert owners.split() == ["0:0"] * 3, owners
        # root inside writes its own rootfs...
        exec_ok(rt, pb, cid, "sh", "-c", "echo hi > /written && mkdir -p /etc/new")
        # ...reads the volume...
        (host / "seen").write_text("from the host\n")
        assert exec_ok(rt, pb, cid, "cat", "/data/seen") == "from the host\n"
        # ...but cannot write what the host's root owns
        rc, out = exec_rc(rt, pb, cid, "sh", "-c", "touch /data/x")
        assert rc != 0 and "Permission denied" in out, (rc, out)
        assert not (host / "x").exists()
        # seen from the host, the container's processes run as the mapped ids
        pid = ctr_pid(rt, pb, cid)
        assert status_ids(pid, "Uid") == [BASE] * 4
        assert status_ids(pid, "Gid") == [BASE] * 4
        # ContainerStatus gives the ids as the container sees them
        user = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status.user
        assert user.linux.uid == 0 and user.linux.gid == 0, user
        # and in the pod's user namespace, the one its infra process holds
        assert os.readlink("/proc/%d/ns/user" % pid) != os.readlink("/proc/self/ns/user")
        # /proc, /sys, /dev and the cgroup mounts are there
        out = exec_ok(rt, pb, cid, "sh", "-c",
                      "cat /proc/1/comm; ls /sys/kernel >/dev/null && echo sys;"
                      " echo x > /dev/null && echo dev; ls /dev/pts/ptmx; ls /sys/fs/cgroup")
        assert "sleep" in out and "sys" in out and "dev" in out, out
        # the container's own cgroup, read-only (v1 hierarchies are bound
        # from the node's mount: they cannot be mounted in a user namespace)
        f = "/sys/fs/cgroup/memory/memory.usage_in_bytes" \
            if os.path.isdir("/sys/fs/cgroup/memory") else "/sys/fs/cgroup/cgroup.procs"
        assert exec_ok(rt, pb, cid, "cat", f).strip()
        rc, out = exec_rc(rt, pb, cid, "sh", "-c", "echo 1 > /sys/fs/cgroup/pids/pids.max")
        assert rc != 0, out
        procs = exec_ok(rt, pb, cid, "cat", "/sys/fs/cgroup/pids/cgroup.procs"
                        if os.path.isdir("/sys/fs/cgroup/pids") else "/sys/fs/cgroup/cgroup.procs")
        assert procs.split()[0] == "1", procs  # its own cgroup, seen from inside
    finally:
        remove_pod(rt, pb, pod)


def test_two_pods_disjoint_exhausted_and_released(rt, pb, work, image, daemon):
    a = run_pod(rt, pb, pod_config(pb, work, pb.api.POD))
    b = None
    try:
        b = run_pod(rt, pb, pod_config(pb, work, pb.api.POD))
        (ua,), _ = pod_maps(rt, pb, a)
        (ub,), _ = pod_maps(rt, pb, b)
        assert {ua[1], ub[1]} == {BASE, BASE + BLOCK}, (ua, ub)
        before = rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items
        netns_before = sorted(os.listdir(work / "netns"))
        e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(
            config=pod_config(pb, work, pb.api.POD)))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        assert "no free block of 65536 subordinate uids" in e.details(), e.details()
        assert str(work / "subuid") in e.details()
        # nothing left of the refused pod
        assert len(rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items) == len(before)
        assert sorted(os.listdir(work / "netns")) == netns_before
        # a pod without a user namespace still runs
        c = run_pod(rt, pb, pod_config(pb, work))
        remove_pod(rt, pb, c)
        # a's block is given again once a is removed
        remove_pod(rt, pb, a)
        a = run_pod(rt, pb, pod_config(pb, work, pb.api.POD))
        (ua2,), _ = pod_maps(rt, pb, a)
        assert ua2 == ua
    finally:
        remove_pod(rt, pb, a)
        if b:
            remove_pod(rt, pb, b)


def test_bad_user_namespace_options(rt, pb, work):
    cases = [
        (dict(mode=pb.api.NODE, uids=[(0, BASE, 10)], gids=[(0, BASE, 10)]),
         "mode NODE takes no uid or gid mappings"),
        (dict(mode=pb.api.POD, uids=[(0, 100, 65536)], gids=[(0, BASE, 65536)]),
         "outside the subordinate ranges"),
        (dict(mode=pb.api.POD, uids=[(0, BASE + BLOCK, 2 * BLOCK)],
              gids=[(0, BASE, 65536)]), "outside the subordinate ranges"),
        (dict(mode=pb.api.POD, uids=[(1, BASE, 100)], gids=[(1, BASE, 100)]),
         "must map id 0"),
        (dict(mode=pb.api.POD, uids=[(0, BASE, 100)]), "both uid and gid mappings"),
        (dict(mode=pb.api.CONTAINER), "not supported"),
        (dict(mode=pb.api.POD, uids=[(0, BASE, 100), (50, BASE + 200, 100)],
              gids=[(0, BASE, 100)]), "overlap inside the container"),
    ]
    for kw, msg in cases:
        e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(
            config=pod_config(pb, work, **kw)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (kw, e)
        assert msg in e.details(), (kw, e.details())
    cfg = pod_config(pb, work, pb.api.POD)
    cfg.linux.security_context.namespace_options.network = pb.api.NODE
    e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(config=cfg))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "node's" in e.details()
    assert not rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items


def test_explicit_mappings_and_overlap(rt, pb, work, image):
    m = [(0, BASE + BLOCK, BLOCK)]
    cfg = pod_config(pb, work, pb.api.POD, uids=m, gids=m)
    pod = run_pod(rt, pb, cfg)
    try:
        assert pod_maps(rt, pb, pod) == (m, m)
        cid = run_ctr(rt, pb, pod, cfg, image, ["sleep", "300"])
        assert exec_ok(rt, pb, cid, "cat", "/proc/self/uid_map").split() == \
            ["0", str(BASE + BLOCK), str(BLOCK)]
        e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(
            config=pod_config(pb, work, pb.api.POD, uids=m, gids=m)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "another pod" in e.details()
    finally:
        remove_pod(rt, pb, pod)


def test_agentctl_runp_with_user_namespace(pb, work, daemon, image):
    f = work / "pod-userns.yaml"
    f.write_text("metadata:\n  name: ctl-userns\n  namespace: test\n  uid: ctl-userns\n"
                 "linux:\n  security_context:\n    namespace_options:\n"
                 "      userns_options:\n        mode: POD\n")
    pod = P.ok(daemon, "runp", f).strip()
    try:
        out = P.ok(daemon, "inspectp", "-o", "json", pod)
        assert '"hostId": %d' % BASE in out or '"host_id": %d' % BASE in out, out
    finally:
        P.ok(daemon, "rmp", pod)


def test_agentctl_run_userns_auto(pb, daemon, image):
    r = P.ctl(daemon, "run", "--rm", "--userns", "auto", image, "cat", "/proc/self/uid_map")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.split() == ["0", str(BASE), str(BLOCK)], r.stdout
    r = P.ctl(daemon, "run", "--rm", "--userns", "private", image, "true")
    assert r.returncode == P.EX_USAGE and "--userns private: auto or host" in r.stderr, r.stderr


def test_restart_keeps_user_namespaced_pod(rt, pb, work, image, daemon):
    cfg = pod_config(pb, work, pb.api.POD)
    pod = run_pod(rt, pb, cfg)
    try:
        cid = run_ctr(rt, pb, pod, cfg, image, ["sleep", "300"])
        maps = pod_maps(rt, pb, pod)
        daemon.stop()
        daemon.start()
        with daemon.unix_channel() as ch:
            rt2 = pb.api_grpc.RuntimeServiceStub(ch)
            assert pod_maps(rt2, pb, pod) == maps
            assert exec_ok(rt2, pb, cid, "cat", "/proc/self/uid_map").split() == \
                ["0", str(maps[0][0][1]), str(BLOCK)]
            exec_ok(rt2, pb, cid, "busybox", "touch", "/after-restart")
            # its block stays taken
            other = run_pod(rt2, pb, pod_config(pb, work, pb.api.POD))
            try:
                assert pod_maps(rt2, pb, other)[0][0][1] != maps[0][0][1]
            finally:
                remove_pod(rt2, pb, other)
            remove_pod(rt2, pb, pod)
            pod = None
    finally:
        if pod:
            with daemon.unix_channel() as ch:
                remove_pod(pb.api_grpc.RuntimeServiceStub(ch), pb, pod)


def test_chowned_copy_fallback(pb, work, registry):
    """A second agentd whose mount_setattr always fails: the layers are
    copied with shifted owners, under <root>/mapped/, removed with the pod."""
    so = work / "no_idmap.so"
    src = work / "no_idmap.c"
    src.write_text(NO_IDMAP_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    d = work / "fallback"
    d.mkdir(exist_ok=True)
    conf = d / "agentd.conf"
    conf.write_text((work / "agentd.conf").read_text().replace(
        "netns_dir = %s" % (work / "netns"), "netns_dir = %s" % (d / "netns")))
    env = {"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim"),
           "LD_PRELOAD": str(so),
           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}
    a = H.Agentd(workdir=str(work / "fallback"), extra_args=["--config", str(conf)], env=env)
    a.start()
    try:
        img = P.pull(pb, a, "%s/%s" % (registry.host, IMAGE_PATH))
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            cfg = pod_config(pb, work, pb.api.POD)
            pod = run_pod(rt, pb, cfg)
            try:
                cid = run_ctr(rt, pb, pod, cfg, img, ["sleep", "300"])
                owners = exec_ok(rt, pb, cid, "busybox", "stat", "-c", "%u:%g", "/bin/busybox",
                                 "/etc")
                assert owners.split() == ["0:0"] * 2, owners
                exec_ok(rt, pb, cid, "sh", "-c", "echo hi > /etc/written")
                mapped = Path(a.root) / "mapped"
                copies = list(mapped.iterdir())
                assert len(copies) == 1 and copies[0].name.startswith("u0-%d-" % BASE), copies
                layer = next(copies[0].iterdir())
                assert layer.stat().st_uid == BASE
                assert "rootfs mapped for its user namespace by chowned copies" in \
                    a.stderr_text()
                cid2 = run_ctr(rt, pb, pod, cfg, img, ["sleep", "300"], name="c2")
                assert exec_ok(rt, pb, cid2, "busybox", "id", "-u").strip() == "0"
                assert len(list(copies[0].iterdir())) == 1  # shared, not copied again
            finally:
                remove_pod(rt, pb, pod)
            assert not any((Path(a.root) / "mapped").iterdir())
    finally:
        try:
            P.remove_all_pods(pb, a)
        finally:
            try:
                a.stop()
            finally:
                a.kill()
                if str(d / "netns") in Path("/proc/self/mountinfo").read_text():
                    subprocess.run(["umount", str(d / "netns")], check=False)
