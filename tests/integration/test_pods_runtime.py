"""The finer parts of the CRI RuntimeService against a real agentd (private
CNI network: own bridge, subnet and host-local dir; busybox from a loopback
registry; real containers): pid/ipc namespace modes including TARGET (debug
containers), the sandbox security context on the infra process, ContainerStatus
resources/user/verbose info, pod network and writable-layer stats, CNI CHECK,
and stdin held open by the shim. Everything created is removed."""
import json
import os
import socket
import sys
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adq%d" % (os.getpid() % 1000)
SUBNET = "10.237.%d.0/24" % N
IMAGE_PATH = "test/rtbox:v1"


registry, daemon, image = P.busybox_pod_fixtures("agentd-rt-test", BRIDGE, SUBNET, IMAGE_PATH)


@pytest.fixture(scope="module")
def rt(pb, daemon):
    with daemon.unix_channel() as ch:
        yield pb.api_grpc.RuntimeServiceStub(ch)


_seq = [0]


def pod_config(pb, work):
    _seq[0] += 1
    name = "rt%d" % _seq[0]
    return pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name),
        hostname=name, log_directory=str(work / "logs" / name))


def ctr_config(pb, image, name, cmd):
    return pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                  image=pb.api.ImageSpec(image=image), command=cmd)


class Pod:
    """A pod for one test, removed at the end whatever happened."""

    def __init__(self, rt, pb, work, cfg=None):
        self.rt, self.pb = rt, pb
        self.cfg = cfg or pod_config(pb, work)

    def __enter__(self):
        self.id = self.rt.RunPodSandbox(
            self.pb.api.RunPodSandboxRequest(config=self.cfg)).pod_sandbox_id
        return self

    def __exit__(self, *exc):
        self.rt.RemovePodSandbox(self.pb.api.RemovePodSandboxRequest(pod_sandbox_id=self.id))

    def create(self, cfg):
        return self.rt.CreateContainer(self.pb.api.CreateContainerRequest(
            pod_sandbox_id=self.id, config=cfg, sandbox_config=self.cfg)).container_id

    def run(self, cfg):
        cid = self.create(cfg)
        self.rt.StartContainer(self.pb.api.StartContainerRequest(container_id=cid))
        assert wait_state(self.rt, self.pb, cid, self.pb.api.CONTAINER_RUNNING).state == \
            self.pb.api.CONTAINER_RUNNING
        return cid

    def info(self):
        st = self.rt.PodSandboxStatus(self.pb.api.PodSandboxStatusRequest(
            pod_sandbox_id=self.id, verbose=True))
        return json.loads(st.info["info"])

    def exec(self, cid, *cmd):
        r = self.rt.ExecSync(self.pb.api.ExecSyncRequest(container_id=cid, cmd=list(cmd),
                                                         timeout=20))
        assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
        return r.stdout.decode()


def wait_state(rt, pb, cid, state, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        if st.state == state or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def rpc_error(fn, req):
    with pytest.raises(grpc.RpcError) as ei:
        fn(req, timeout=60)
    return ei.value


def status_field(pid, key):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].split()
    raise KeyError(key)


def with_pid_mode(pb, cfg, mode, target=""):
    cfg.linux.security_context.namespace_options.pid = mode
    cfg.linux.security_context.namespace_options.target_id = target
    return cfg


def test_pid_and_ipc_namespace_modes(rt, pb, work, image, daemon):
    """pid POD sees the infra process as pid 1, CONTAINER its own command,
    NODE the node's init; TARGET joins another container's pid namespace (a
    debug container), with NOT_FOUND naming a missing target. ipc NODE is the
    node's IPC namespace."""
    host_init = Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode()
    host_ipc = os.readlink("/proc/self/ns/ipc")
    pcfg = pod_config(pb, work)
    pcfg.linux.security_context.namespace_options.ipc = pb.api.NODE
    with Pod(rt, pb, work, pcfg) as pod:
        def pid1(cid):
            return pod.exec(cid, "cat", "/proc/1/cmdline").split("\0")[0]

        in_pod = pod.run(with_pid_mode(pb, ctr_config(pb, image, "inpod", ["sleep", "1000"]),
                                       pb.api.POD))
        assert pid1(in_pod) == "/agentd-infra"
        own = pod.run(with_pid_mode(pb, ctr_config(pb, image, "own", ["sleep", "1001"]),
                                    pb.api.CONTAINER))
        assert pid1(own) == "sleep"
        assert pod.exec(own, "cat", "/proc/1/cmdline").split("\0")[1] == "1001"
        node = pod.run(with_pid_mode(pb, ctr_config(pb, image, "node", ["sleep", "1000"]),
                                     pb.api.NODE))
        assert pid1(node) == host_init
        debug = pod.run(with_pid_mode(pb, ctr_config(pb, image, "debug", ["sleep", "1000"]),
                                      pb.api.TARGET, own))
        assert pod.exec(debug, "cat", "/proc/1/cmdline").split("\0")[:2] == ["sleep", "1001"]

        def verbose(cid):
            return json.loads(rt.ContainerStatus(pb.api.ContainerStatusRequest(
                container_id=cid, verbose=True)).info["info"])
        assert {"type": "pid", "path": "/proc/%d/ns/pid" % verbose(own)["pid"]} in \
            verbose(debug)["runtimeSpec"]["linux"]["namespaces"]
        # The target's own processes and the debugger's share one namespace.
        assert "sleep\x001000" in pod.exec(debug, "sh", "-c", "cat /proc/[0-9]*/cmdline")
        assert pod.exec(in_pod, "busybox", "readlink", "/proc/self/ns/ipc").strip() == host_ipc

        missing = "f" * 64
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=with_pid_mode(
                pb, ctr_config(pb, image, "dbg2", ["true"]), pb.api.TARGET, missing)))
        assert e.code() == grpc.StatusCode.NOT_FOUND and missing in e.details()
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=with_pid_mode(
                pb, ctr_config(pb, image, "dbg3", ["true"]), pb.api.TARGET)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "target_id" in e.details()
        rt.StopContainer(pb.api.StopContainerRequest(container_id=own, timeout=0))
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=with_pid_mode(
                pb, ctr_config(pb, image, "dbg4", ["true"]), pb.api.TARGET, own)))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and own in e.details()
    # A container of another pod is not a target.
    with Pod(rt, pb, work) as a, Pod(rt, pb, work) as b:
        other = a.run(ctr_config(pb, image, "t", ["sleep", "1000"]))
        e = rpc_error(rt.CreateContainer, pb.api.CreateContainerRequest(
            pod_sandbox_id=b.id, config=with_pid_mode(
                pb, ctr_config(pb, image, "dbg", ["true"]), pb.api.TARGET, other)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and other in e.details()


def test_pod_namespace_modes_on_infra(rt, pb, work, daemon):
    """The sandbox's pid and ipc NODE put the infra process in the node's
    namespaces; POD (the default) gives it its own, network included."""
    def ns(pid, which):
        return os.readlink("/proc/%s/ns/%s" % (pid, which))
    pcfg = pod_config(pb, work)
    opts = pcfg.linux.security_context.namespace_options
    opts.pid, opts.ipc = pb.api.NODE, pb.api.NODE
    with Pod(rt, pb, work, pcfg) as pod:
        infra = pod.info()["pid"]
        assert ns(infra, "pid") == ns("self", "pid")
        assert ns(infra, "ipc") == ns("self", "ipc")
        assert ns(infra, "net") != ns("self", "net")
    with Pod(rt, pb, work) as pod:
        infra = pod.info()["pid"]
        for which in ("pid", "ipc", "uts", "net"):
            assert ns(infra, which) != ns("self", which), which


def test_sandbox_security_context_on_infra(rt, pb, work, daemon):
    """The sandbox's run_as_user/run_as_group/supplemental_groups and seccomp
    profile are the infra process's."""
    pcfg = pod_config(pb, work)
    sc = pcfg.linux.security_context
    sc.run_as_user.value = 65534
    sc.run_as_group.value = 65533
    sc.supplemental_groups.extend([4, 7])
    sc.seccomp.profile_type = pb.api.SecurityProfile.RuntimeDefault
    with Pod(rt, pb, work, pcfg) as pod:
        infra = pod.info()["pid"]
        assert status_field(infra, "Uid")[0] == "65534"
        assert status_field(infra, "Gid")[0] == "65533"
        assert sorted(status_field(infra, "Groups")) == ["4", "7"]
        assert status_field(infra, "Seccomp") == ["2"]
    pcfg = pod_config(pb, work)
    pcfg.linux.security_context.seccomp.profile_type = pb.api.SecurityProfile.Unconfined
    with Pod(rt, pb, work, pcfg) as pod:
        infra = pod.info()["pid"]
        assert status_field(infra, "Seccomp") == ["0"]
        assert status_field(infra, "Uid")[0] == "0"


def test_container_status_resources_user_and_info(rt, pb, work, image, daemon):
    """ContainerStatus reports the resources as applied (after an update too),
    the user the process runs with, and verbose info with its pid, sandbox
    and a runtime spec summary."""
    with Pod(rt, pb, work) as pod:
        cfg = ctr_config(pb, image, "st", ["sleep", "1000"])
        cfg.linux.resources.memory_limit_in_bytes = 64 << 20
        cfg.linux.resources.cpu_shares = 512
        cfg.linux.security_context.run_as_user.value = 1000
        cfg.linux.security_context.run_as_group.value = 1001
        cfg.linux.security_context.supplemental_groups.extend([5, 6])
        cid = pod.create(cfg)
        st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        assert st.resources.linux.memory_limit_in_bytes == 64 << 20
        assert (st.user.linux.uid, st.user.linux.gid) == (1000, 1001)
        assert sorted(st.user.linux.supplemental_groups) == [5, 6]
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid))
        r = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid, verbose=True))
        st = r.status
        assert st.state == pb.api.CONTAINER_RUNNING
        assert st.image_id.startswith("sha256:") and st.image_ref
        assert (st.user.linux.uid, st.user.linux.gid) == (1000, 1001)
        assert sorted(st.user.linux.supplemental_groups) == [5, 6]
        info = json.loads(r.info["info"])
        assert info["sandboxID"] == pod.id and info["imageId"] == st.image_id
        assert status_field(info["pid"], "Uid")[0] == "1000"
        spec = info["runtimeSpec"]
        assert spec["process"]["args"] == ["sleep", "1000"]
        assert spec["process"]["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [5, 6]}
        assert {"type": "network", "path": pod.info()["netns"]} in spec["linux"]["namespaces"]
        assert spec["linux"]["resources"]["memoryLimit"] == 64 << 20
        config = info["config"]
        assert config["metadata"]["name"] == "st" and config["command"] == ["sleep", "1000"]
        assert config["linux"]["security_context"]["run_as_user"] == {"value": 1000}
        assert config["linux"]["resources"]["memory_limit_in_bytes"] == 64 << 20

        rt.UpdateContainerResources(pb.api.UpdateContainerResourcesRequest(
            container_id=cid, linux=pb.api.LinuxContainerResources(
                memory_limit_in_bytes=96 << 20, cpu_shares=256)))
        st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        assert st.resources.linux.memory_limit_in_bytes == 96 << 20
        assert st.resources.linux.cpu_shares == 256
        rt.StopContainer(pb.api.StopContainerRequest(container_id=cid, timeout=0))
        r = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid, verbose=True))
        assert r.status.resources.linux.memory_limit_in_bytes == 96 << 20
        info = json.loads(r.info["info"])
        assert info["pid"] == 0
        assert info["config"]["linux"]["resources"]["memory_limit_in_bytes"] == 96 << 20


def test_pod_network_and_writable_layer_stats(rt, pb, work, image, daemon):
    """PodSandboxStats carries the counters of the pod's eth0 (not lo);
    ContainerStats the bytes and inodes of the writable layer."""
    with Pod(rt, pb, work) as pod:
        cid = pod.run(ctr_config(pb, image, "w", ["sleep", "1000"]))
        pod.exec(cid, "busybox", "dd", "if=/dev/zero", "of=/big", "bs=1024", "count=300")
        pod.exec(cid, "sh", "-c", "mkdir /d && echo a > /d/a && echo b > /d/b")
        st = rt.ContainerStats(pb.api.ContainerStatsRequest(container_id=cid)).stats
        wl = st.writable_layer
        assert wl.used_bytes.value >= 300 * 1024, wl
        assert wl.inodes_used.value >= 4, wl
        assert wl.fs_id.mountpoint and wl.timestamp > 0
        # Within a second (a kubelet round asks two or three times) the same
        # measurement comes back, with the time it was taken; later a new one.
        again = rt.ContainerStats(pb.api.ContainerStatsRequest(
            container_id=cid)).stats.writable_layer
        assert again == wl or again.timestamp - wl.timestamp >= 10**9, (wl, again)
        pod.exec(cid, "busybox", "dd", "if=/dev/zero", "of=/big2", "bs=1024", "count=200")
        time.sleep(1.1)
        later = rt.ContainerStats(pb.api.ContainerStatsRequest(
            container_id=cid)).stats.writable_layer
        assert later.used_bytes.value >= wl.used_bytes.value + 200 * 1024, (wl, later)
        assert later.timestamp > wl.timestamp

        ip = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
            pod_sandbox_id=pod.id)).status.network.ip
        # Traffic: SYNs in, RSTs out (nothing listens on that port).
        for _ in range(5):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect((ip, 9))
            except OSError:
                pass
            s.close()
        ps = rt.PodSandboxStats(pb.api.PodSandboxStatsRequest(pod_sandbox_id=pod.id)).stats
        net = ps.linux.network
        assert [i.name for i in net.interfaces] == ["eth0"]
        assert net.default_interface.name == "eth0"
        assert net.default_interface.rx_bytes.value > 0
        assert net.default_interface.tx_bytes.value > 0
        assert net.default_interface.rx_errors.value == 0
        assert net.timestamp > 0
        listed = rt.ListPodSandboxStats(pb.api.ListPodSandboxStatsRequest(
            filter=pb.api.PodSandboxStatsFilter(id=pod.id))).stats
        assert listed[0].linux.network.default_interface.rx_bytes.value >= \
            net.default_interface.rx_bytes.value
        c = [x for x in ps.linux.containers if x.attributes.id == cid][0]
        assert c.writable_layer.used_bytes.value >= 300 * 1024


def test_cni_check(rt, pb, work, daemon):
    """CNI CHECK with the stored result: "ok" in the verbose status of an
    intact pod; an address removed behind agentd's back is reported there and
    logged, also by an agentd that starts with that pod."""
    with Pod(rt, pb, work) as pod:
        assert pod.info()["cniCheck"] == "ok"
        pin = pod.info()["netns"]
        P.run("nsenter", "--net=" + pin, "ip", "addr", "flush", "dev", "eth0")
        check = pod.info()["cniCheck"]
        assert check != "ok" and "CNI CHECK" in check and pod.id in check
        assert "CNI CHECK" in daemon.stderr_text()


def test_cni_check_on_start(pb, work, daemon):
    """An agentd starting with a ready pod whose network broke logs it."""
    a = P.new_agentd(work, "chk")
    a.start()
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(
                config=pod_config(pb, work))).pod_sandbox_id
            pin = json.loads(rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                pod_sandbox_id=pid, verbose=True)).info["info"])["netns"]
        a.stop()
        P.run("nsenter", "--net=" + pin, "ip", "link", "del", "eth0")
        a = P.new_agentd(work, "chk")
        a.start()
        assert "pod sandbox %s: CNI CHECK" % pid in a.stderr_text()
    finally:
        P.remove_all_pods(pb, a)
        a.stop()


def test_stdin_held_open(rt, pb, work, image, daemon):
    """stdin=true: the shim holds the container's stdin open, so `cat` keeps
    running; without it stdin is at EOF and cat ends at once."""
    with Pod(rt, pb, work) as pod:
        cfg = ctr_config(pb, image, "in", ["cat"])
        cfg.stdin = True
        cfg.stdin_once = True
        held = pod.run(cfg)
        closed = pod.create(ctr_config(pb, image, "noin", ["cat"]))
        rt.StartContainer(pb.api.StartContainerRequest(container_id=closed))
        st = wait_state(rt, pb, closed, pb.api.CONTAINER_EXITED)
        assert st.state == pb.api.CONTAINER_EXITED and st.exit_code == 0
        time.sleep(1)
        st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=held)).status
        assert st.state == pb.api.CONTAINER_RUNNING
        # Attach's stdin reaches it (tests/integration/test_streaming.py).
        url = rt.Attach(pb.api.AttachRequest(container_id=held, stdin=True, stdout=True)).url
        assert url.startswith("http://127.0.0.1:") and "/attach/" in url, url


def running(pid):
    """Alive and not a zombie waiting for its new parent's wait."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids_running(argv):
    """The pids of live processes whose command line is exactly argv."""
    want = ("\0".join(argv) + "\0").encode()
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes() == want and running(int(d.name)):
                found.append(int(d.name))
        except OSError:
            pass
    return found


def wait_gone(pids, timeout=5):
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if running(p)]


def test_stop_signal(rt, pb, work, image, daemon):
    """The config's stop_signal (a CRI Signal name, its own numbering: SIGTERM
    is 23 there, SIGURG in Linux) is the signal StopContainer sends."""
    with Pod(rt, pb, work) as pod:
        cfg = ctr_config(pb, image, "stopsig",
                         ["sh", "-c", "trap 'exit 7' TERM; trap 'exit 9' USR1; "
                                      "while :; do sleep 0.1; done"])
        for name, code in (("SIGUSR1", 9), ("SIGTERM", 7)):
            cfg.metadata.name = "stopsig-" + name.lower()
            cfg.stop_signal = pb.api.Signal.Value(name)
            cid = pod.run(cfg)
            t0 = time.monotonic()
            rt.StopContainer(pb.api.StopContainerRequest(container_id=cid, timeout=30))
            st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
            # Not the SIGKILL at the end of the 30 s grace period.
            assert (st.state, st.exit_code) == (pb.api.CONTAINER_EXITED, code), (name, st)
            assert time.monotonic() - t0 < 10, name
            assert st.stop_signal == pb.api.Signal.Value(name)


def test_stop_kills_what_the_init_left(rt, pb, work, image, daemon):
    """With the node's pid namespace the kernel does not end a container's
    other processes with its init: StopContainer kills what is left in the
    container's cgroup once the init is gone (whether the stop signal ended
    it or it had exited on its own), and StopPodSandbox does for its
    containers; nothing waits for the stop deadline."""
    tag = str(50000 + os.getpid() % 10000)
    with Pod(rt, pb, work) as pod:
        stopped = pod.run(with_pid_mode(pb, ctr_config(
            pb, image, "stopped", ["sh", "-c", "sleep %s1 & exec sleep %s2" % (tag, tag)]),
            pb.api.NODE))
        exited = pod.run(with_pid_mode(pb, ctr_config(
            pb, image, "exited", ["sh", "-c", "sleep %s3 & sleep %s4 & sleep 0.5; exit 7"
                                  % (tag, tag)]), pb.api.NODE))
        deadline = time.monotonic() + 10
        while not (pids_running(["sleep", tag + "1"]) and pids_running(["sleep", tag + "3"])):
            assert time.monotonic() < deadline, "the background sleeps never started"
            time.sleep(0.05)
        left1 = pids_running(["sleep", tag + "1"])
        t0 = time.monotonic()
        rt.StopContainer(pb.api.StopContainerRequest(container_id=stopped, timeout=30))
        assert time.monotonic() - t0 < 10
        assert wait_gone(left1) == []
        st = wait_state(rt, pb, exited, pb.api.CONTAINER_EXITED)
        assert st.exit_code == 7, st
        left2 = pids_running(["sleep", tag + "3"]) + pids_running(["sleep", tag + "4"])
        assert len(left2) == 2, "an exited init's children run on until a stop"
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
        assert wait_gone(left2) == []


def test_killed_shim_ends_the_container(rt, pb, work, image, daemon):
    """kill -9 of a container's agentd-shim: the container must not run on
    outside agentd's view. agentd notices (the shim's pidfd), kills the
    container's cgroup (its init and what it started) and records the exit
    as unknown, with a reason that names the shim; stop and remove work."""
    with Pod(rt, pb, work) as pod:
        cid = pod.run(ctr_config(pb, image, "victim",
                                 ["sh", "-c", "sleep 1000 & exec sleep 1001"]))
        info = json.loads(rt.ContainerStatus(pb.api.ContainerStatusRequest(
            container_id=cid, verbose=True)).info["info"])
        init = info["pid"]
        deadline = time.monotonic() + 10
        while True:
            kids = Path("/proc/%d/task/%d/children" % (init, init)).read_text().split()
            if kids or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert kids, "the container's background sleep never started"
        child = int(kids[0])
        shim = P.shim_of(init)
        os.kill(shim, 9)
        st = wait_state(rt, pb, cid, pb.api.CONTAINER_EXITED, timeout=15)
        assert st.state == pb.api.CONTAINER_EXITED, st
        assert st.reason == "ShimDied" and st.exit_code == 255, st
        assert "agentd-shim died" in st.message, st
        assert st.finished_at > 0
        deadline = time.monotonic() + 10
        while (running(init) or running(child)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(init) and not running(child)
        rt.StopContainer(pb.api.StopContainerRequest(container_id=cid, timeout=5))
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid))
        e = rpc_error(rt.ContainerStatus, pb.api.ContainerStatusRequest(container_id=cid))
        assert e.code() == grpc.StatusCode.NOT_FOUND


def test_killed_shim_of_a_created_container(rt, pb, work, image, daemon):
    """kill -9 of the shim of a container that was created but not started:
    it can never start, so it is reported exited (ShimDied) at once rather
    than created, its waiting init is gone, a start is refused as for any
    exited container, and remove works."""
    with Pod(rt, pb, work) as pod:
        cid = pod.create(ctr_config(pb, image, "never", ["sleep", "1002"]))
        # No pid in the CRI status before a start: the runtime's state file.
        state = dict(line.split("=", 1) for line in Path(
            daemon.state, "containers", cid, "state").read_text().splitlines() if "=" in line)
        init, shim = int(state["init_pid"]), int(state["shim_pid"])
        assert running(init)
        assert P.shim_of(init) == shim
        os.kill(shim, 9)
        st = wait_state(rt, pb, cid, pb.api.CONTAINER_EXITED, timeout=15)
        assert (st.state, st.reason, st.exit_code) == (pb.api.CONTAINER_EXITED, "ShimDied", 255), st
        assert st.started_at == 0, st
        deadline = time.monotonic() + 10
        while running(init) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(init)
        e = rpc_error(rt.StartContainer, pb.api.StartContainerRequest(container_id=cid))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid))
