"""Pods and containers through the CRI RuntimeService, end to end: a real
agentd with a private CNI config (its own bridge and subnet, host-local state
in the temp dir), a busybox image pulled from a docker-registry on loopback,
and containers under the real runtime. Everything the tests create (bridge,
netns pins, mounts, cgroups, processes) is checked for and removed."""
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402
from pods_harness import new_agentd, remove_all_pods, run  # noqa: E402
from registry_harness import ImageBuilder, Registry  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adp%d" % (os.getpid() % 1000)
SUBNET_PREFIX = "10.232.%d." % N
IMAGE_PATH = "test/podbox:v1"
PAUSE_PATH = "test/pause:v1"


def http_get(host, port, timeout):
    """The whole answer to an HTTP/1.0 GET / (headers and body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


@pytest.fixture(scope="module")
def registry(work):
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    b.append_layer("base", "pod", [("bin/wget", "symlink", "busybox"),
                                   ("bin/nc", "symlink", "busybox"),
                                   ("bin/hostname", "symlink", "busybox"),
                                   ("bin/head", "symlink", "busybox"),
                                   ("bin/tr", "symlink", "busybox")])
    # A "pause" image: busybox whose command sleeps (run as a non-root user).
    b.busybox("pause")
    run("umoci", "config", "--image", "%s:pause" % b.path, "--clear", "config.cmd",
        "--config.entrypoint", "sleep", "--config.cmd", "100000", "--config.user", "65534:65534")
    with Registry(work) as reg:
        reg.push(b, "pod", IMAGE_PATH, fmt="oci")
        reg.push(b, "pause", PAUSE_PATH, fmt="oci")
        yield reg


@pytest.fixture(scope="module")
def daemon(work, pb, registry):
    with P.pod_agentd(work, pb, "agentd-test", BRIDGE, SUBNET_PREFIX + "0/24",
                      portmap=True) as a:
        yield a


@pytest.fixture(scope="module")
def rt(pb, daemon):
    with daemon.unix_channel() as ch:
        yield pb.api_grpc.RuntimeServiceStub(ch)


@pytest.fixture(scope="module")
def image(pb, daemon, registry):
    ref = "%s/%s" % (registry.host, IMAGE_PATH)
    with daemon.unix_channel() as ch:
        pb.api_grpc.ImageServiceStub(ch).PullImage(
            pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=120)
    return ref


_seq = [0]


def pod_config(pb, work, name=None, labels=None, attempt=0):
    _seq[0] += 1
    name = name or "pod%d" % _seq[0]
    logdir = work / "logs" / name
    return pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name,
                                           attempt=attempt),
        hostname=name, log_directory=str(logdir), labels=labels or {"app": name},
        annotations={"note": "n-" + name},
        dns_config=pb.api.DNSConfig(servers=["10.0.0.10"], searches=["svc.test"],
                                    options=["ndots:2"]))


def ctr_config(pb, image, name, cmd, log=None, labels=None):
    return pb.api.ContainerConfig(
        metadata=pb.api.ContainerMetadata(name=name), image=pb.api.ImageSpec(image=image),
        command=cmd, log_path=log or "", labels=labels or {"c": name},
        envs=[pb.api.KeyValue(key="GREETING", value="hi")])


def wait_state(rt, pb, cid, state, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        if st.state == state or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def run_ctr(rt, pb, pod_id, pcfg, cfg):
    cid = rt.CreateContainer(pb.api.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=cfg, sandbox_config=pcfg)).container_id
    rt.StartContainer(pb.api.StartContainerRequest(container_id=cid))
    return cid


def rpc_error(fn, req):
    with pytest.raises(grpc.RpcError) as ei:
        fn(req, timeout=60)
    return ei.value


def leftovers(work, daemon, ids):
    """What remains of the given pod/container ids on the host."""
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    # Every test removes all its pods: no container rootfs may stay mounted
    # (also those of creates that failed, whose ids nobody knows).
    if os.path.join(daemon.root, "containers") in mounts:
        found.append("rootfs mounts under " + daemon.root)
    for i in ids:
        if i in mounts:
            found.append("mount of " + i)
        for ctl in ("memory", "pids", "cpu"):
            for p in P.cgroup_dirs(ctl, i):
                found.append("cgroup " + p)
    netns = work / "netns"
    if netns.exists():
        found += ["netns pin " + p.name for p in netns.iterdir() if p.name in ids]
    brif = Path("/sys/class/net", BRIDGE, "brif")
    if brif.exists():
        found += ["veth " + p.name for p in brif.iterdir()]
    state = Path(daemon.state, "containers")
    if state.exists():
        found += ["runtime state " + p.name for p in state.iterdir() if p.name in ids]
    return found


def test_status_reports_ready(rt, pb):
    st = rt.Status(pb.api.StatusRequest()).status
    conds = {c.type: c for c in st.conditions}
    assert conds["RuntimeReady"].status
    assert conds["NetworkReady"].status, conds["NetworkReady"].message
    rt.UpdateRuntimeConfig(pb.api.UpdateRuntimeConfigRequest(runtime_config=pb.api.RuntimeConfig(
        network_config=pb.api.NetworkConfig(pod_cidr="10.244.1.0/24"))))
    e = rpc_error(rt.UpdateRuntimeConfig, pb.api.UpdateRuntimeConfigRequest(
        runtime_config=pb.api.RuntimeConfig(network_config=pb.api.NetworkConfig(
            pod_cidr="nonsense"))))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_network_not_ready_without_cni_config(pb, work):
    """No CNI config: Status says NetworkReady=false with the reason, and a
    pod cannot get a network."""
    empty = work / "cni-empty"
    empty.mkdir()
    cfg = work / "agentd-nocni.conf"
    cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (empty, work / "netns"))
    a = H.Agentd(workdir=str(work / "nocni"), extra_args=["--config", str(cfg)],
                 env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")})
    a.start()
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            conds = {c.type: c for c in rt.Status(pb.api.StatusRequest()).status.conditions}
            assert conds["RuntimeReady"].status
            assert not conds["NetworkReady"].status
            assert conds["NetworkReady"].reason and conds["NetworkReady"].message
            e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(
                config=pod_config(pb, work)))
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            assert len(rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items) == 0
            assert not any((work / "netns").iterdir()) if (work / "netns").exists() else True
    finally:
        a.stop()


def test_pod_lifecycle(rt, pb, work, image, daemon):
    pcfg = pod_config(pb, work, labels={"app": "web", "tier": "front"})
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid,
                                                            verbose=True))
    assert st.status.id == pid
    assert st.status.state == pb.api.SANDBOX_READY
    assert st.status.metadata.name == pcfg.metadata.name
    assert st.status.network.ip.startswith(SUBNET_PREFIX), st.status.network.ip
    assert dict(st.status.labels) == {"app": "web", "tier": "front"}
    assert dict(st.status.annotations) == dict(pcfg.annotations)
    assert st.status.created_at > 0
    assert "info" in st.info and pid in st.info["info"]

    F = pb.api.PodSandboxFilter
    ls = lambda f: [p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest(filter=f)).items]  # noqa
    assert pid in ls(None)
    assert ls(F(id=pid)) == [pid]
    assert pid in ls(F(label_selector={"tier": "front"}))
    assert pid not in ls(F(label_selector={"tier": "back"}))
    assert pid in ls(F(state=pb.api.PodSandboxStateValue(state=pb.api.SANDBOX_READY)))

    # A container: logs in CRI format, environment, the pod's hostname/resolv.conf.
    log = "hello/0.log"
    cid = run_ctr(rt, pb, pid, pcfg, ctr_config(
        pb, image, "hello",
        ["sh", "-c", "echo out-$GREETING; echo err-line >&2; hostname; cat /etc/resolv.conf"],
        log=log))
    cs = wait_state(rt, pb, cid, pb.api.CONTAINER_EXITED)
    assert cs.state == pb.api.CONTAINER_EXITED
    assert cs.exit_code == 0 and cs.reason == "Completed"
    assert cs.started_at >= cs.created_at > 0 and cs.finished_at >= cs.started_at
    assert cs.log_path == os.path.join(pcfg.log_directory, log)
    assert cs.metadata.name == "hello"
    deadline = time.monotonic() + 10
    while True:
        text = Path(cs.log_path).read_text() if Path(cs.log_path).exists() else ""
        if "ndots" in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    lines = text.splitlines()
    pat = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) (stdout|stderr) [FP] ")
    assert lines and all(pat.match(line) for line in lines), text
    assert any(line.endswith(" stdout F out-hi") for line in lines), text
    assert any(line.endswith(" stderr F err-line") for line in lines), text
    assert any(line.endswith(" F " + pcfg.hostname) for line in lines), text
    assert any("nameserver 10.0.0.10" in line for line in lines), text

    # Exit codes.
    bad = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "bad", ["sh", "-c", "exit 3"]))
    cs = wait_state(rt, pb, bad, pb.api.CONTAINER_EXITED)
    assert (cs.state, cs.exit_code, cs.reason) == (pb.api.CONTAINER_EXITED, 3, "Error")

    # A long-running one, stopped with a timeout; ExecSync while it runs.
    long = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "long", ["sleep", "1000"],
                                                 labels={"kind": "long"}))
    assert wait_state(rt, pb, long, pb.api.CONTAINER_RUNNING).state == pb.api.CONTAINER_RUNNING
    ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=long, cmd=["sh", "-c", "echo $GREETING; echo e >&2; exit 4"], timeout=30))
    assert (ex.stdout, ex.stderr, ex.exit_code) == (b"hi\n", b"e\n", 4)
    # Output well past the first buffer arrives whole, on each stream.
    ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=long, cmd=[
        "sh", "-c", "head -c 300001 /dev/zero | tr '\\0' a; head -c 9000 /dev/zero | tr '\\0' b >&2"],
        timeout=30))
    assert (ex.stdout, ex.stderr, ex.exit_code) == (b"a" * 300001, b"b" * 9000, 0)

    C = pb.api.ContainerFilter
    lc = lambda f: [c.id for c in rt.ListContainers(pb.api.ListContainersRequest(filter=f)).containers]  # noqa
    assert set(lc(C(pod_sandbox_id=pid))) == {cid, bad, long}
    assert lc(C(label_selector={"kind": "long"})) == [long]
    assert lc(C(id=bad)) == [bad]
    assert lc(C(state=pb.api.ContainerStateValue(state=pb.api.CONTAINER_RUNNING),
                pod_sandbox_id=pid)) == [long]

    # Stats, resources and log reopening while it runs.
    stats = rt.ContainerStats(pb.api.ContainerStatsRequest(container_id=long)).stats
    assert stats.attributes.id == long and stats.attributes.metadata.name == "long"
    assert stats.memory.working_set_bytes.value > 0
    assert stats.cpu.timestamp > 0
    all_stats = rt.ListContainerStats(pb.api.ListContainerStatsRequest(
        filter=pb.api.ContainerStatsFilter(pod_sandbox_id=pid))).stats
    assert {s.attributes.id for s in all_stats} == {cid, bad, long}
    rt.UpdateContainerResources(pb.api.UpdateContainerResourcesRequest(
        container_id=long, linux=pb.api.LinuxContainerResources(
            memory_limit_in_bytes=64 << 20)))
    stats = rt.ContainerStats(pb.api.ContainerStatsRequest(container_id=long)).stats
    assert stats.memory.available_bytes.value <= 64 << 20
    rt.ReopenContainerLog(pb.api.ReopenContainerLogRequest(container_id=long))
    e = rpc_error(rt.ReopenContainerLog, pb.api.ReopenContainerLogRequest(container_id=bad))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    rc = rt.RuntimeConfig(pb.api.RuntimeConfigRequest())
    assert rc.linux.cgroup_driver == pb.api.CGROUPFS

    # sleep is pid 1 of its pid namespace: SIGTERM is ignored, SIGKILL after 1 s.
    t0 = time.monotonic()
    rt.StopContainer(pb.api.StopContainerRequest(container_id=long, timeout=1))
    assert 0.9 < time.monotonic() - t0 < 15
    cs = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=long)).status
    assert cs.state == pb.api.CONTAINER_EXITED and cs.exit_code == 128 + 9
    assert cs.reason == "Error"
    rt.StopContainer(pb.api.StopContainerRequest(container_id=long, timeout=10))
    rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=long))
    rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=long))
    assert long not in lc(None)

    # Stop and remove the pod, twice each.
    rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pid))
    st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid)).status
    assert st.state == pb.api.SANDBOX_NOTREADY
    assert pid in ls(F(state=pb.api.PodSandboxStateValue(state=pb.api.SANDBOX_NOTREADY)))
    assert pid not in ls(F(state=pb.api.PodSandboxStateValue(state=pb.api.SANDBOX_READY)))
    rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pid))
    e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
        pod_sandbox_id=pid, config=ctr_config(pb, image, "late", ["true"])))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and pid in e.details()
    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert pid not in ls(None)
    assert lc(C(pod_sandbox_id=pid)) == []
    e = rpc_error(rt.PodSandboxStatus, pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid))
    assert e.code() == grpc.StatusCode.NOT_FOUND and pid in e.details()
    assert leftovers(work, daemon, [pid, cid, bad, long]) == []


def test_containers_share_localhost_and_pod_ip_reachable(rt, pb, work, image, daemon):
    pcfg = pod_config(pb, work)
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    ids = [pid]
    try:
        ip = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
            pod_sandbox_id=pid)).status.network.ip
        web = run_ctr(rt, pb, pid, pcfg, ctr_config(
            pb, image, "web",
            ["sh", "-c", "mkdir -p /www && echo pod-page-%s > /www/index.html && "
             "exec httpd -f -p 8080 -h /www" % pid[:8]]))
        client = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "client",
                                                       ["sleep", "1000"]))
        ids += [web, client]
        assert wait_state(rt, pb, client, pb.api.CONTAINER_RUNNING).state == \
            pb.api.CONTAINER_RUNNING
        want = "pod-page-%s" % pid[:8]
        # Over the pod's shared loopback, from the other container.
        deadline = time.monotonic() + 15
        while True:
            ex = rt.ExecSync(pb.api.ExecSyncRequest(
                container_id=client, cmd=["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
                timeout=10))
            if ex.exit_code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ex.exit_code == 0, ex.stderr
        assert ex.stdout.decode().strip() == want
        # Pod stats: both containers and the infra process.
        ps = rt.PodSandboxStats(pb.api.PodSandboxStatsRequest(pod_sandbox_id=pid)).stats
        assert ps.attributes.id == pid and ps.attributes.metadata.name == pcfg.metadata.name
        assert {c.attributes.id for c in ps.linux.containers} == {web, client}
        assert ps.linux.process.process_count.value >= 3
        assert ps.linux.memory.working_set_bytes.value > 0
        assert ps.linux.cpu.usage_core_nano_seconds.value > 0
        ls = rt.ListPodSandboxStats(pb.api.ListPodSandboxStatsRequest(
            filter=pb.api.PodSandboxStatsFilter(id=pid))).stats
        assert [x.attributes.id for x in ls] == [pid]
        # Same UTS namespace: the pod's hostname.
        ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=client, cmd=["hostname"],
                                                timeout=10))
        assert ex.stdout.decode().strip() == pcfg.hostname
        # From the host, to the pod IP over the private bridge.
        assert want.encode() in http_get(ip, 8080, timeout=5)
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, ids) == []


def test_bad_requests(rt, pb, work, image, daemon):
    unknown = "f" * 64
    for fn, req in [
        (rt.PodSandboxStatus, pb.api.PodSandboxStatusRequest(pod_sandbox_id=unknown)),
        (rt.StopPodSandbox, pb.api.StopPodSandboxRequest(pod_sandbox_id=unknown)),
        (rt.ContainerStatus, pb.api.ContainerStatusRequest(container_id=unknown)),
        (rt.StartContainer, pb.api.StartContainerRequest(container_id=unknown)),
        (rt.StopContainer, pb.api.StopContainerRequest(container_id=unknown)),
        (rt.ExecSync, pb.api.ExecSyncRequest(container_id=unknown, cmd=["true"])),
        (rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=unknown, config=ctr_config(pb, image, "x", ["true"]))),
    ]:
        e = rpc_error(fn, req)
        assert e.code() == grpc.StatusCode.NOT_FOUND, (fn, e)
        assert unknown in e.details()
    # Removing what does not exist is fine (idempotent).
    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=unknown))
    rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=unknown))

    e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(
        config=pb.api.PodSandboxConfig(metadata=pb.api.PodSandboxMetadata(name="x"))))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "namespace" in e.details()

    pcfg = pod_config(pb, work)
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(config=pcfg))
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS and pid in e.details()
        cfg = ctr_config(pb, image, "dup", ["sleep", "100"])
        cid = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=cfg)).container_id
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=cfg))
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS and cid in e.details()
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=ctr_config(pb, image + "-missing", "noimg", ["true"])))
        assert e.code() == grpc.StatusCode.NOT_FOUND
        # ExecSync needs a running container.
        e = rpc_error(rt.ExecSync, pb.api.ExecSyncRequest(container_id=cid, cmd=["true"]))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        assert st.state == pb.api.CONTAINER_CREATED
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, [pid, cid]) == []


def test_cni_failure_leaves_nothing(rt, pb, work, daemon):
    """A plugin that fails (host-local given an invalid subnet: agentd reads
    the config dir at each RunPodSandbox) fails the run with the plugin's
    message and leaves no pod, pin or veth behind."""
    conf = work / "cni" / "10-test.conflist"
    good = conf.read_text()
    bad = json.loads(good)
    bad["plugins"][0]["ipam"]["ranges"] = [[{"subnet": SUBNET_PREFIX + "0/33"}]]
    before = {p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items}
    conf.write_text(json.dumps(bad))
    try:
        e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(config=pod_config(pb, work)))
    finally:
        conf.write_text(good)
    assert e.code() == grpc.StatusCode.INTERNAL, e
    assert "/33" in e.details() or "subnet" in e.details(), e.details()
    after = {p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items}
    assert after == before
    netns = work / "netns"
    assert not netns.exists() or list(netns.iterdir()) == []
    assert leftovers(work, daemon, []) == []
    # And the next pod works again.
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pod_config(pb, work))).pod_sandbox_id
    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, [pid]) == []


def test_restart_keeps_objects_and_records_exits(pb, work, image, daemon):
    """agentd killed (SIGKILL) in the middle of a lifecycle: the pod and a
    running container survive it (their shims are agentd's children, in
    their own sessions: orphaned, not killed), an exit that happened
    meanwhile is recorded with its code by the next agentd (sharing the
    image store through the same root would need the same dirs, so this
    daemon pulls the image itself)."""
    a = new_agentd(work, "restart")
    a.start()
    ids = []
    try:
        with a.unix_channel() as ch:
            pb.api_grpc.ImageServiceStub(ch).PullImage(
                pb.api.PullImageRequest(image=pb.api.ImageSpec(image=image)), timeout=120)
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            pcfg = pod_config(pb, work)
            pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
            quick = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "quick",
                                                          ["sh", "-c", "sleep 2; exit 7"]))
            long = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "long", ["sleep", "1000"]))
            created = rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=pid, config=ctr_config(pb, image, "later", ["echo", "late"]),
                sandbox_config=pcfg)).container_id
            ids = [pid, quick, long, created]
            assert wait_state(rt, pb, long, pb.api.CONTAINER_RUNNING).state == \
                pb.api.CONTAINER_RUNNING
        a.kill()
        time.sleep(3)  # "quick" exits while agentd is down
        a = new_agentd(work, "restart")
        a.start()
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid)).status
            assert st.state == pb.api.SANDBOX_READY
            assert st.network.ip.startswith(SUBNET_PREFIX)
            # (On a loaded machine it may exit only now: still recorded.)
            cs = wait_state(rt, pb, quick, pb.api.CONTAINER_EXITED)
            assert (cs.state, cs.exit_code, cs.reason) == (pb.api.CONTAINER_EXITED, 7, "Error")
            cs = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=long)).status
            assert cs.state == pb.api.CONTAINER_RUNNING
            ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=long, cmd=["echo", "alive"],
                                                    timeout=10))
            assert ex.stdout == b"alive\n"
            # The created one can still be started after the restart.
            rt.StartContainer(pb.api.StartContainerRequest(container_id=created))
            cs = wait_state(rt, pb, created, pb.api.CONTAINER_EXITED)
            assert (cs.state, cs.exit_code) == (pb.api.CONTAINER_EXITED, 0)
            rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pid))
            rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
        assert leftovers(work, a, ids) == []
    finally:
        try:
            remove_all_pods(pb, a)
        finally:
            a.stop()


def test_port_mapping_and_oom(rt, pb, work, image, daemon):
    """A port mapping host:P -> pod:80 (the portmap plugin's DNAT, reached at
    the bridge's own address on the host), one without a host port (kubelet
    sends one per containerPort) that publishes nothing, and a container
    killed by the OOM killer reported as OOMKilled."""
    pcfg = pod_config(pb, work)
    host_port = H.free_port()
    pcfg.port_mappings.append(pb.api.PortMapping(container_port=80, host_port=host_port))
    pcfg.port_mappings.append(pb.api.PortMapping(container_port=8079))
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    ids = [pid]
    try:
        web = run_ctr(rt, pb, pid, pcfg, ctr_config(
            pb, image, "web", ["sh", "-c", "mkdir -p /www && echo mapped-page > "
                               "/www/index.html && exec httpd -f -p 80 -h /www"]))
        ids.append(web)
        gw = SUBNET_PREFIX + "1"
        deadline = time.monotonic() + 15
        data = b""
        while b"mapped-page" not in data and time.monotonic() < deadline:
            try:
                data = http_get(gw, host_port, timeout=3)
            except OSError:
                time.sleep(0.2)
        assert b"mapped-page" in data
        rules = run("iptables", "-t", "nat", "-S").stdout
        assert "dport %d" % host_port in rules
        assert ":8079" not in rules and "dport 0 " not in rules

        cfg = ctr_config(pb, image, "hog", ["sh", "-c",
                                            "x=$(head -c 300000000 /dev/zero | tr '\\0' a)"])
        cfg.linux.resources.memory_limit_in_bytes = 32 << 20
        cfg.linux.resources.memory_swap_limit_in_bytes = 32 << 20
        hog = run_ctr(rt, pb, pid, pcfg, cfg)
        ids.append(hog)
        cs = wait_state(rt, pb, hog, pb.api.CONTAINER_EXITED, timeout=60)
        assert cs.state == pb.api.CONTAINER_EXITED
        assert cs.reason == "OOMKilled", (cs.reason, cs.exit_code)
        assert cs.exit_code != 0
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, ids) == []
    assert "dport %d" % host_port not in run("iptables", "-t", "nat", "-S").stdout


def test_parallel_pods(rt, pb, work, image, daemon):
    """Pods started, used and removed from several client threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        pcfg = pod_config(pb, work)
        pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg),
                               timeout=120).pod_sandbox_id
        cid = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "c", ["sh", "-c",
                                                                    "exit %d" % i]))
        cs = wait_state(rt, pb, cid, pb.api.CONTAINER_EXITED, timeout=60)
        ip = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
            pod_sandbox_id=pid)).status.network.ip
        return pid, cid, cs.exit_code, ip

    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(one, range(6)))
    assert [r[2] for r in results] == list(range(6))
    ips = [r[3] for r in results]
    assert len(set(ips)) == 6 and all(ip.startswith(SUBNET_PREFIX) for ip in ips)
    with ThreadPoolExecutor(6) as ex:
        list(ex.map(lambda r: rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(
            pod_sandbox_id=r[0]), timeout=120), results))
    left = {p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items}
    assert not left & {r[0] for r in results}
    assert leftovers(work, daemon, [x for r in results for x in r[:2]]) == []


def test_container_events(rt, pb, work, image, daemon):
    """GetContainerEvents streams created, started, stopped (noticed by the
    exit monitor, nobody asks for the status) and deleted."""
    import threading
    got = []
    stream = rt.GetContainerEvents(pb.api.GetEventsRequest(), timeout=60)

    def reader():
        try:
            for ev in stream:
                got.append(ev)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=reader)
    t.start()
    try:
        time.sleep(0.3)
        pcfg = pod_config(pb, work)
        pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
        cid = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "ev", ["sh", "-c", "exit 5"]))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
                e.container_id == cid and e.container_event_type == pb.api.CONTAINER_STOPPED_EVENT
                for e in got):
            time.sleep(0.1)
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                e.container_id == cid and e.container_event_type == pb.api.CONTAINER_DELETED_EVENT
                for e in got):
            time.sleep(0.1)
    finally:
        stream.cancel()
        t.join(10)
    mine = [e for e in got if e.container_id == cid]
    assert [e.container_event_type for e in mine] == [
        pb.api.CONTAINER_CREATED_EVENT, pb.api.CONTAINER_STARTED_EVENT,
        pb.api.CONTAINER_STOPPED_EVENT, pb.api.CONTAINER_DELETED_EVENT]
    stopped = mine[2]
    assert stopped.pod_sandbox_status.id == pid
    assert stopped.containers_statuses[0].exit_code == 5
    assert stopped.created_at > 0


def test_cgroup_parent(rt, pb, work, image, daemon):
    """The pod's cgroup_parent holds the infra process and every container."""
    parent = "agentd-test-pods-%d" % os.getpid()
    pcfg = pod_config(pb, work)
    pcfg.linux.cgroup_parent = "/" + parent
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        cid = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "cg", ["sleep", "1000"]))
        assert wait_state(rt, pb, cid, pb.api.CONTAINER_RUNNING).state == \
            pb.api.CONTAINER_RUNNING
        for ctl in ("pids", "memory"):
            assert Path("/sys/fs/cgroup", ctl, parent, cid).is_dir()
            assert Path("/sys/fs/cgroup", ctl, parent, pid).is_dir()
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
        for ctl in ("pids", "memory"):
            assert not Path("/sys/fs/cgroup", ctl, parent, cid).exists()
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
        for d in Path("/sys/fs/cgroup").glob("*/" + parent):
            try:
                d.rmdir()
            except OSError:
                pass


def test_sysctls(rt, pb, work, image, daemon):
    """Namespaced sysctls land in the pod's network and IPC namespaces, not
    the node's; others are refused."""
    host_range = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    host_msgmax = Path("/proc/sys/kernel/msgmax").read_text()
    pcfg = pod_config(pb, work)
    pcfg.linux.sysctls["net.ipv4.ip_local_port_range"] = "20000 30000"
    pcfg.linux.sysctls["kernel.msgmax"] = "12345"
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        cid = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "sys", ["sleep", "1000"]))
        assert wait_state(rt, pb, cid, pb.api.CONTAINER_RUNNING).state == \
            pb.api.CONTAINER_RUNNING
        ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=[
            "cat", "/proc/sys/net/ipv4/ip_local_port_range", "/proc/sys/kernel/msgmax"],
            timeout=10))
        assert ex.stdout.decode().split() == ["20000", "30000", "12345"], ex.stderr
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert Path("/proc/sys/net/ipv4/ip_local_port_range").read_text() == host_range
    assert Path("/proc/sys/kernel/msgmax").read_text() == host_msgmax
    bad = pod_config(pb, work)
    bad.linux.sysctls["vm.swappiness"] = "1"
    e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(config=bad))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "vm.swappiness" in e.details()


def test_infra_killed_makes_pod_notready(rt, pb, work, image, daemon):
    pcfg = pod_config(pb, work)
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid,
                                                                verbose=True))
        infra = json.loads(st.info["info"])["pid"]
        assert infra > 0
        assert Path("/proc/%d/exe" % infra).resolve().name == "agentd-infra"
        os.kill(infra, 9)
        deadline = time.monotonic() + 10
        while True:
            state = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                pod_sandbox_id=pid)).status.state
            if state == pb.api.SANDBOX_NOTREADY or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert state == pb.api.SANDBOX_NOTREADY
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=ctr_config(pb, image, "late", ["true"])))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pid))
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, [pid]) == []


def test_devices(rt, pb, work, image, daemon):
    """A CRI device is bound in and allowed by the devices cgroup (the node
    is not in the default allow list)."""
    pcfg = pod_config(pb, work)
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        cfg = ctr_config(pb, image, "dev", ["sleep", "1000"])
        cfg.devices.append(pb.api.Device(host_path="/dev/loop-control",
                                         container_path="/dev/lc", permissions="rwm"))
        cid = run_ctr(rt, pb, pid, pcfg, cfg)
        assert wait_state(rt, pb, cid, pb.api.CONTAINER_RUNNING).state == \
            pb.api.CONTAINER_RUNNING
        ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=[
            "sh", "-c", "test -c /dev/lc && exec 3<>/dev/lc && echo opened"], timeout=10))
        assert ex.stdout == b"opened\n", ex.stderr
        # A container without it does not have the node.
        plain = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "plain", ["sleep", "1000"]))
        assert wait_state(rt, pb, plain, pb.api.CONTAINER_RUNNING).state == \
            pb.api.CONTAINER_RUNNING
        ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=plain, cmd=[
            "sh", "-c", "test -c /dev/lc"], timeout=10))
        assert ex.exit_code != 0
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=pb.api.ContainerConfig(
                metadata=pb.api.ContainerMetadata(name="baddev"),
                image=pb.api.ImageSpec(image=image), command=["true"],
                devices=[pb.api.Device(host_path="/etc/hostname", container_path="/dev/x")])))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))


def test_list_200_containers_fast(rt, pb, work, image, daemon):
    """ListContainers over 200 containers (100 of them running) answers fast
    (typically 0.05 s; the bound leaves room for a loaded machine)."""
    from concurrent.futures import ThreadPoolExecutor
    pcfg = pod_config(pb, work)
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        def make(i):
            cid = rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=pid, config=ctr_config(pb, image, "c%d" % i, ["sleep", "1000"]),
                sandbox_config=pcfg), timeout=120).container_id
            if i % 2 == 0:
                rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)
            return cid

        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as ex:
            ids = list(ex.map(make, range(200)))
        created = time.monotonic() - t0
        best = 1e9
        for _ in range(3):
            t0 = time.monotonic()
            got = rt.ListContainers(pb.api.ListContainersRequest(
                filter=pb.api.ContainerFilter(pod_sandbox_id=pid)), timeout=60).containers
            best = min(best, time.monotonic() - t0)
        assert len(got) == 200 and {c.id for c in got} == set(ids)
        assert sum(c.state == pb.api.CONTAINER_RUNNING for c in got) == 100
        print("200 containers created in %.1fs, ListContainers %.3fs" % (created, best))
        assert best < 5.0, best
    finally:
        t0 = time.monotonic()
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=300)
        print("pod with 200 containers removed in %.1fs" % (time.monotonic() - t0))
    assert leftovers(work, daemon, [pid] + ids) == []


def test_host_network_pod(rt, pb, work, image, daemon):
    """NamespaceOption network=NODE: no netns, no CNI, the node's network and
    hostname; StopPodSandbox kills what still runs at once."""
    pcfg = pod_config(pb, work)
    pcfg.linux.security_context.namespace_options.network = pb.api.NODE
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid)).status
        assert st.state == pb.api.SANDBOX_READY and st.network.ip == ""
        assert st.linux.namespaces.options.network == pb.api.NODE
        cid = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "h", ["sleep", "1000"]))
        assert wait_state(rt, pb, cid, pb.api.CONTAINER_RUNNING).state == \
            pb.api.CONTAINER_RUNNING
        ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=["hostname"],
                                                timeout=10))
        assert ex.stdout.decode().strip() == socket.gethostname()
        t0 = time.monotonic()
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pid))
        assert time.monotonic() - t0 < 10
        cs = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        assert cs.state == pb.api.CONTAINER_EXITED and cs.exit_code == 137
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, [pid, cid]) == []


def test_pod_status_verbose_config(rt, pb, work, daemon):
    """The verbose PodSandboxStatus carries the pod's config as containerd
    writes it (info.config: the .proto's field names, enums as numbers, zero
    values left out), and agentctl inspectp shows it."""
    from google.protobuf import json_format
    pcfg = pod_config(pb, work, labels={"app": "cfg", "tier": "back"})
    tcp, udp = H.free_port(), H.free_port()
    pcfg.port_mappings.append(pb.api.PortMapping(container_port=80, host_port=tcp))
    pcfg.port_mappings.append(pb.api.PortMapping(protocol=pb.api.UDP, container_port=53,
                                                 host_port=udp))
    pcfg.linux.sysctls["net.ipv4.ip_local_port_range"] = "20000 30000"
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        want = json_format.MessageToDict(pcfg, preserving_proto_field_name=True,
                                         use_integers_for_enums=True)
        st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid,
                                                                verbose=True))
        info = json.loads(st.info["info"])
        assert info["config"] == want, info["config"]
        cfg = info["config"]
        assert cfg["hostname"] == pcfg.metadata.name
        assert cfg["dns_config"] == {"servers": ["10.0.0.10"], "searches": ["svc.test"],
                                     "options": ["ndots:2"]}
        assert cfg["port_mappings"] == [{"container_port": 80, "host_port": tcp},
                                        {"protocol": 1, "container_port": 53,
                                         "host_port": udp}]
        assert cfg["labels"] == {"app": "cfg", "tier": "back"}
        # Without verbose: no info at all.
        st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pid))
        assert dict(st.info) == {}
        p = run(H.agentctl_binary(), "-e", os.path.abspath(daemon.sock), "inspectp", "-o",
                "json", pid)
        assert json.loads(p.stdout)["info"]["config"] == want, p.stdout
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, [pid]) == []


def test_image_config_merge(rt, pb, work, image, daemon):
    """Kubelet's merge: no command runs the image's Cmd; working_dir,
    run_as_user/group and env apply; a user the image lacks is refused and
    leaves nothing behind."""
    pcfg = pod_config(pb, work)
    pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        # Image Cmd ["sh"] with stdin at /dev/null: exits 0 at once.
        dflt = run_ctr(rt, pb, pid, pcfg, pb.api.ContainerConfig(
            metadata=pb.api.ContainerMetadata(name="dflt"), image=pb.api.ImageSpec(image=image)))
        cs = wait_state(rt, pb, dflt, pb.api.CONTAINER_EXITED)
        assert (cs.state, cs.exit_code, cs.reason) == (pb.api.CONTAINER_EXITED, 0, "Completed")

        cfg = ctr_config(pb, image, "who", ["sh", "-c", "pwd; echo g=$GREETING; "
                                            "cat /proc/self/status"], log="who.log")
        cfg.working_dir = "/data"
        cfg.linux.security_context.run_as_user.value = 1234
        cfg.linux.security_context.run_as_group.value = 5678
        cfg.linux.security_context.readonly_rootfs = True
        who = run_ctr(rt, pb, pid, pcfg, cfg)
        cs = wait_state(rt, pb, who, pb.api.CONTAINER_EXITED)
        assert cs.exit_code == 0
        deadline = time.monotonic() + 10
        text = ""
        while "Gid:" not in text and time.monotonic() < deadline:
            text = Path(cs.log_path).read_text() if Path(cs.log_path).exists() else ""
            time.sleep(0.1)
        out = [line.split(" ", 3)[3] for line in text.splitlines()]
        assert out[0] == "/data" and out[1] == "g=hi", out
        uid = [x for x in out if x.startswith("Uid:")][0].split()
        gid = [x for x in out if x.startswith("Gid:")][0].split()
        assert uid[1:] == ["1234"] * 4 and gid[1:] == ["5678"] * 4

        bad = ctr_config(pb, image, "nouser", ["true"])
        bad.linux.security_context.run_as_username = "no-such-user"
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=bad))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "no-such-user" in e.details()
        names = [c.metadata.name for c in rt.ListContainers(pb.api.ListContainersRequest(
            filter=pb.api.ContainerFilter(pod_sandbox_id=pid))).containers]
        assert sorted(names) == ["dflt", "who"]
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid))
    assert leftovers(work, daemon, [pid, dflt, who]) == []


def test_configured_pause_image(pb, work, registry, image):
    """[pods] pause_image: the infra process comes from that image (its
    Entrypoint/Cmd and User), containers still share its namespaces, and its
    rootfs goes with the pod."""
    pause = "%s/%s" % (registry.host, PAUSE_PATH)
    cfg = work / "agentd-pause.conf"
    cfg.write_text((work / "agentd.conf").read_text() + "[pods]\npause_image = %s\n" % pause)
    a = H.Agentd(workdir=str(work / "pause"), extra_args=["--config", str(cfg)],
                 env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")})
    a.start()
    ids = []
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            im = pb.api_grpc.ImageServiceStub(ch)
            pcfg = pod_config(pb, work)
            e = rpc_error(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(config=pcfg))
            assert e.code() == grpc.StatusCode.NOT_FOUND and "pause" in e.details()
            for ref in (pause, image):
                im.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)),
                             timeout=120)
            pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
            ids.append(pid)
            info = json.loads(rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                pod_sandbox_id=pid, verbose=True)).info["info"])
            status = Path("/proc/%d/status" % info["pid"]).read_text()
            assert Path("/proc/%d/cmdline" % info["pid"]).read_bytes() == b"sleep\x00100000\x00"
            assert re.search(r"^Uid:\s+65534\s", status, re.M)
            cid = run_ctr(rt, pb, pid, pcfg, ctr_config(pb, image, "h", ["sleep", "1000"]))
            ids.append(cid)
            assert wait_state(rt, pb, cid, pb.api.CONTAINER_RUNNING).state == \
                pb.api.CONTAINER_RUNNING
            ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=["hostname"],
                                                    timeout=10))
            assert ex.stdout.decode().strip() == pcfg.hostname
            rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=60)
        assert leftovers(work, a, ids) == []
    finally:
        try:
            remove_all_pods(pb, a)
        finally:
            a.stop()


def test_interrupted_run_cleaned_up_on_start(pb, work, daemon):
    """agentd killed (SIGKILL) in the middle of RunPodSandbox's CNI ADD: the
    next agentd finds the half-created pod and undoes it (CNI DEL with the
    stored config, netns pin, record)."""
    import threading
    plugins = work / "slow-plugins"
    plugins.mkdir()
    slow = plugins / "slowbridge"
    slow.write_text("#!/bin/sh\nsleep 2\nexec /usr/lib/cni/bridge\n")
    slow.chmod(0o755)
    conf = work / "cni-slow"
    conf.mkdir()
    net = json.loads((work / "cni" / "10-test.conflist").read_text())
    net["plugins"][0]["type"] = "slowbridge"
    (conf / "10-slow.conflist").write_text(json.dumps(net))
    cfg = work / "agentd-slow.conf"
    cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\nplugin_dirs = %s:/usr/lib/cni\n"
                   % (conf, work / "netns", plugins))

    def start():
        a = H.Agentd(workdir=str(work / "slow"), extra_args=["--config", str(cfg)],
                     env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")})
        a.start()
        return a

    a = start()
    errors = []

    def runp():
        try:
            with a.unix_channel() as ch:
                pb.api_grpc.RuntimeServiceStub(ch).RunPodSandbox(
                    pb.api.RunPodSandboxRequest(config=pod_config(pb, work)), timeout=30)
        except grpc.RpcError as e:
            errors.append(e)

    t = threading.Thread(target=runp)
    t.start()
    deadline = time.monotonic() + 10
    netns = work / "netns"
    while time.monotonic() < deadline and not (netns.exists() and any(netns.iterdir())):
        time.sleep(0.05)
    pins = [p.name for p in netns.iterdir()]
    assert pins, "RunPodSandbox never pinned a netns"
    time.sleep(0.5)
    a.kill()
    t.join(30)
    assert errors  # the client saw the daemon go away
    # The orphaned plugin finishes its ADD: its veth shows up on the bridge.
    brif = Path("/sys/class/net", BRIDGE, "brif")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (brif.exists() and any(brif.iterdir())):
        time.sleep(0.1)
    time.sleep(1)
    a = start()
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            assert len(rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items) == 0
        assert [p.name for p in netns.iterdir() if p.name in pins] == []
        assert leftovers(work, a, pins) == []
        assert "interrupted start" in a.stderr_text()
    finally:
        a.stop()
