"""Crash anywhere: agentd SIGKILLed between every pair of persisted steps of
the pod and container lifecycle and of a pull, a load, an import and a build, then
restarted on the same root and state dirs.

The points are ad_fault_point() calls (lib/base): AGENTD_FAULT=<point> makes
the process that reaches it SIGKILL itself there (agentd-fetch kills agentd
first). For each point the test drives a fresh agentd into it, checks that it
died there, starts agentd again and checks:

- a container that ran before still runs (exec works) and is reported
  RUNNING; one that exited while agentd was down is reported EXITED with its
  exit code and the time it exited (not the time agentd came back);
- the interrupted object is complete or gone, never half (the states the
  point allows); it can then be stopped and removed;
- the state DB passes PRAGMA integrity_check; every blob in the store hashes
  to its name; tmp/ is empty;
- once the interrupted operation's objects are removed, nothing of them is
  left: rootfs mounts, cgroups (under the test's own cgroup parent), netns
  pins, veths on the test's bridge, iptables rules naming them, runtime state.

Also: an infra process SIGKILLed (the pod turns NOTREADY, stop and remove
work, nothing leaks) and a host reboot simulated (processes, mounts and the
state dir gone, the root dir kept): agentd starts clean, reports the old
containers exited and gives their network resources (IPAM leases) back.

AGENTD_CRASH_POINTS=a,b,... runs only the named points (a quick look at one).
"""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402
from registry_harness import ImageBuilder, Registry  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adk%d" % (os.getpid() % 1000)
SUBNET = "10.239.%d.0/24" % N
CGROUP_PARENT = "/agentd-crash-%d" % os.getpid()
BASE_PATH = "test/crashbox:v1"
NETWORK = "agentd-crash-%d" % os.getpid()  # write_network's name

# Point -> (operation that reaches it, states the interrupted object may be
# left in after the restart: "gone" or a CRI state name).
POINTS = {
    "pod.inserted": ("run_pod", {"gone"}),
    "pod.netns": ("run_pod", {"gone"}),
    "pod.cni_stored": ("run_pod", {"gone"}),
    "pod.cni_added": ("run_pod", {"gone"}),
    "pod.infra_started": ("run_pod", {"gone"}),
    "pod.ready": ("run_pod", {"SANDBOX_READY"}),
    "pod.stop.notready": ("stop_pod", {"SANDBOX_NOTREADY"}),
    "pod.remove.torn_down": ("remove_pod", {"SANDBOX_NOTREADY", "gone"}),
    "ctr.inserted": ("create", {"gone"}),
    "ctr.rootfs": ("create", {"gone"}),
    "ctr.rt_created": ("create", {"gone"}),
    "ctr.created": ("create", {"CONTAINER_CREATED"}),
    "ctr.start.runtime": ("start", {"CONTAINER_RUNNING"}),
    "ctr.started": ("start", {"CONTAINER_RUNNING"}),
    "ctr.stop.runtime": ("stop", {"CONTAINER_EXITED"}),
    "ctr.remove.runtime": ("remove", {"CONTAINER_EXITED", "gone"}),
    "ctr.remove.rootfs": ("remove", {"CONTAINER_EXITED", "gone"}),
    "running:ctr.remove.runtime": ("remove_running", {"CONTAINER_EXITED", "gone"}),
    "running:ctr.remove.rootfs": ("remove_running", {"CONTAINER_EXITED", "gone"}),
    "blob.commit": ("pull", {"gone"}),
    "blob.committed": ("pull", {"gone"}),
    "layer.commit": ("pull", {"gone"}),
    "layer.committed": ("pull", {"gone"}),
    "image.record": ("pull", {"gone"}),
    "image.recorded": ("pull", {"present"}),
    "load:blob.commit": ("load", {"gone"}),
    "load:layer.commit": ("load", {"gone"}),
    "load:image.record": ("load", {"gone"}),
    "load:image.recorded": ("load", {"present"}),
    "import:blob.commit": ("import", {"gone"}),
    "import:layer.commit": ("import", {"gone"}),
    "import:image.record": ("import", {"gone"}),
    "import:image.recorded": ("import", {"present"}),
    "build.run_ended": ("build", {"gone"}),
    "build:commit.layer_committed": ("build", {"gone"}),
    "build:image.record": ("build", {"gone"}),
    # Later hits (AGENTD_FAULT=NAME:N): the second new layer of a pull, the
    # second container of a pod (the first one runs and must run on).
    "pull2:layer.commit:2": ("pull2", {"gone"}),
    "pull2:layer.committed:2": ("pull2", {"gone"}),
    "pod2:ctr.rootfs:2": ("pod2", {"CONTAINER_RUNNING"}),
    "pod2:ctr.started:2": ("pod2", {"CONTAINER_RUNNING"}),
}


def selected_points():
    only = os.environ.get("AGENTD_CRASH_POINTS")
    names = list(POINTS)
    if only:
        names = [n for n in names if n in only.split(",")]
    return names


@pytest.fixture(scope="module")
def images(work):
    """The registry, with the base image and one image per pull point (each
    with a layer of its own, so that every pull has new blobs to commit),
    plus a docker-archive per load point and a rootfs tar per import point."""
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    pulls = [p for p in POINTS if POINTS[p][0] in ("pull", "pull2")]
    for i, p in enumerate(pulls):
        b.append_layer("base", "p%d" % i, [("point", "file", p.encode())])
        if POINTS[p][0] == "pull2":
            b.append_layer("p%d" % i, "p%d" % i, [("point2", "file", p.encode())])
    archives = {}
    for i, p in enumerate(x for x in POINTS if POINTS[x][0] == "load"):
        b.append_layer("base", "l%d" % i, [("point", "file", p.encode())])
        path = work / ("load%d.tar" % i)
        P.run("skopeo", "copy", "--quiet", "oci:%s:l%d" % (b.path, i),
              "docker-archive:%s:test/loaded%d:v1" % (path, i))
        archives[p] = (str(path), "docker.io/test/loaded%d:v1" % i)
    for i, p in enumerate(x for x in POINTS if POINTS[x][0] == "import"):
        path = work / ("rootfs%d.tar" % i)
        with tarfile.open(path, "w") as tf:
            data = (p * 10).encode()
            ti = tarfile.TarInfo("point")
            ti.size = len(data)
            import io
            tf.addfile(ti, io.BytesIO(data))
        archives[p] = (str(path), "docker.io/test/imported%d:v1" % i)
    with Registry(work) as reg:
        reg.push(b, "base", BASE_PATH, fmt="oci")
        refs = {}
        for i, p in enumerate(pulls):
            dest = "test/crash%d:v1" % i
            reg.push(b, "p%d" % i, dest, fmt="oci")
            refs[p] = "%s/%s" % (reg.host, dest)
        yield {"base": "%s/%s" % (reg.host, BASE_PATH), "pull": refs, "archive": archives}


class Node:
    """agentd on one root and state dir across restarts, on the test's own
    CNI network (bridge, subnet, IPAM dir, netns pins)."""

    def __init__(self, work, name="node"):
        self.work = work
        self.name = name
        P.write_network(work, "agentd-crash", BRIDGE, SUBNET, portmap=True)
        self.a = None

    def start(self, fault=None):
        env = {"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")}
        if fault:
            env["AGENTD_FAULT"] = fault
        self.a = H.Agentd(workdir=str(self.work / self.name),
                          extra_args=["--config", str(self.work / "agentd.conf")], env=env)
        self.a.start()
        return self.a

    def channel(self):
        return self.a.unix_channel()


_seq = [0]


def pod_config(pb, work):
    _seq[0] += 1
    name = "crash%d" % _seq[0]
    cfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name),
        hostname=name, log_directory=str(work / "logs" / name))
    cfg.linux.cgroup_parent = CGROUP_PARENT
    # portmap's iptables chains are among what must not leak.
    cfg.port_mappings.append(pb.api.PortMapping(container_port=80, host_port=H.free_port()))
    return cfg


def ctr_config(pb, image, name, cmd):
    return pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                  image=pb.api.ImageSpec(image=image), command=cmd)


def state_name(pb, enum_type, value):
    return pb.api.DESCRIPTOR.enum_types_by_name[enum_type].values_by_number[value].name


def pod_state(pb, rt, pod_id):
    try:
        st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
                                 timeout=60).status
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return "gone"
    return state_name(pb, "PodSandboxState", st.state)


def ctr_status(pb, rt, cid):
    try:
        return rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid),
                                  timeout=60).status
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return None


def wait_exited(pb, rt, cid, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        st = ctr_status(pb, rt, cid)
        if st.state == pb.api.CONTAINER_EXITED or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


# ---- what must not leak ------------------------------------------------------------------------

def cgroups_under_parent():
    """Names of the cgroups under the test's cgroup parent, every v1
    hierarchy and v2."""
    names = set()
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / CGROUP_PARENT.lstrip("/")
        if top.name == CGROUP_PARENT.lstrip("/"):
            d = top
        if d.is_dir():
            names |= {c.name for c in d.iterdir() if c.is_dir()}
    return names


def host_leftovers(work, a, live_pods, live_ctrs):
    """What is on the host for pods and containers agentd does not have."""
    live = set(live_pods) | set(live_ctrs)
    found = []
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for line in mountinfo.splitlines():
        mp = line.split()[4]
        if mp.startswith(os.path.join(a.root, "containers") + "/"):
            if mp.split("/")[-2] not in live:
                found.append("rootfs mount " + mp)
        if mp.startswith(str(work / "netns") + "/") and mp.rsplit("/", 1)[1] not in live:
            found.append("netns pin " + mp)
    found += ["cgroup " + c for c in cgroups_under_parent() if c not in live]
    brif = Path("/sys/class/net", BRIDGE, "brif")
    veths = list(brif.iterdir()) if brif.exists() else []
    ready = len(live_pods)
    if len(veths) > ready:
        found.append("%d veths on %s for %d live pods" % (len(veths), BRIDGE, ready))
    # portmap and bridge tag their rules with the network's name and the
    # pod's id (only this test's network: other agentds share the host).
    ours = 'name: \\"%s\\"' % NETWORK
    for line in P.run("iptables-save", "-t", "nat").stdout.splitlines():
        if ours in line:
            ident = line.split('id: \\"', 1)[1].split('\\"', 1)[0]
            if ident not in live:
                found.append("iptables: " + line)
    state = Path(a.state, "containers")
    if state.exists():
        found += ["runtime state " + p.name for p in state.iterdir() if p.name not in live]
    ipam = work / "ipam"
    if ipam.exists():
        for net in ipam.iterdir():
            for lease in net.iterdir():
                if lease.name[0].isdigit():
                    owner = lease.read_text().split()[0]
                    if owner not in live:
                        found.append("IPAM lease %s of %s" % (lease.name, owner))
    return found


def remove_everything(pb, node):
    a = node.a
    if a is None or not a.alive():
        return
    P.remove_all_pods(pb, a)


def cleanup_host(work):
    P.remove_network(work, BRIDGE)
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / CGROUP_PARENT.lstrip("/")
        try:
            d.rmdir()
        except OSError:
            pass
    P.run("iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT", check=False)


# ---- the crash points --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(work, pb, images):
    n = Node(work)
    n.start()
    BASE_REF[0] = images["base"]
    try:
        with n.channel() as ch:
            pb.api_grpc.ImageServiceStub(ch).PullImage(
                pb.api.PullImageRequest(image=pb.api.ImageSpec(image=images["base"])),
                timeout=120)
        yield n
    finally:
        try:
            remove_everything(pb, n)
            if n.a is not None:
                n.a.stop()
        finally:
            if n.a is not None:
                n.a.kill()
            cleanup_host(work)


def agentctl_build(node, work, tag):
    """agentctl build --no-cache of FROM base + RUN, tagged `tag`."""
    ctx = work / "build-ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM %s\nRUN echo built > /built\n" % BASE_REF[0])
    return subprocess.run([H.agentctl_binary(), "-e", "unix://" + node.a.sock, "build",
                           "--no-cache", "-t", tag, str(ctx)], capture_output=True, text=True,
                          timeout=120)


def build_leftovers(a):
    """What a build may leave: its work dirs, RUN containers' state, step rootfs and mounts."""
    root, state = Path(a.root), Path(a.state)
    out = [str(p) for p in (root / "builds").glob("*")]
    out += [str(p) for p in (state / "build").glob("*")]
    out += [str(p) for p in (root / "containers").glob("build-*")]
    out += [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(root) in line and "/containers/build-" in line]
    return out


BASE_REF = [None]


def drive(pb, node, work, images, point, op, base_pod, base_pcfg):
    """Runs `op` on the faulted agentd; returns the id of the object it was
    working on (the pod, container or image reference), or None when the
    operation was to make that object and its id never came back."""
    with node.channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        img = pb.api_grpc.ImageServiceStub(ch)
        agent_img = pb.agent_grpc.ImageServiceStub(ch)
        ctr = ctr_config(pb, images["base"], "victim%d" % _seq[0], ["sleep", "1000"])
        _seq[0] += 1

        def create():
            return rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=base_pod, config=ctr, sandbox_config=base_pcfg),
                timeout=60).container_id

        target = None
        try:
            if op == "run_pod":
                rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pod_config(pb, work)),
                                 timeout=60)
            elif op in ("stop_pod", "remove_pod"):
                target = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(
                    config=pod_config(pb, work)), timeout=60).pod_sandbox_id
                if op == "stop_pod":
                    rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=target),
                                      timeout=60)
                else:
                    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=target),
                                        timeout=60)
            elif op == "create":
                create()
            elif op in ("start", "stop", "remove", "remove_running"):
                target = create()
                if op != "remove":
                    rt.StartContainer(pb.api.StartContainerRequest(container_id=target),
                                      timeout=60)
                if op == "stop":
                    rt.StopContainer(pb.api.StopContainerRequest(container_id=target,
                                                                 timeout=10), timeout=60)
                elif op in ("remove", "remove_running"):
                    rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=target),
                                       timeout=60)
            elif op == "pod2":
                pcfg = pod_config(pb, work)
                pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg),
                                       timeout=60).pod_sandbox_id
                for i in range(2):
                    cid = rt.CreateContainer(pb.api.CreateContainerRequest(
                        pod_sandbox_id=pod, sandbox_config=pcfg,
                        config=ctr_config(pb, images["base"], "pod2c%d" % i,
                                          ["sleep", "1000"])), timeout=60).container_id
                    rt.StartContainer(pb.api.StartContainerRequest(container_id=cid),
                                      timeout=60)
            elif op in ("pull", "pull2"):
                target = images["pull"][point]
                img.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=target)),
                              timeout=120)
            elif op == "load":
                path, target = images["archive"][point]
                agent_img.LoadImage(pb.agent.LoadImageRequest(path=path), timeout=120)
            elif op == "build":
                target = "localhost/crashbuild%d:v1" % _seq[0]
                r = agentctl_build(node, work, target)
                # EX_UNAVAILABLE: agentd went away mid-call.
                assert r.returncode == 69 and "lost" in r.stderr, (point, r.stderr)
                return target
            elif op == "import":
                path, target = images["archive"][point]
                agent_img.ImportImage(pb.agent.ImportImageRequest(path=path, reference=target),
                                      timeout=120)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN,
                                grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED), e
        else:
            raise AssertionError("%s: the operation finished: the point was not reached" % point)
    return target


@pytest.mark.parametrize("point", selected_points())
def test_crash_point(pb, work, images, node, point):
    op, allowed = POINTS[point]
    fault = point.split(":", 1)[1] if ":" in point else point
    name, _, hit = fault.partition(":")
    with node.channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        pods = [p for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items
                if p.metadata.name == "base"]
        if pods:
            base_pod = pods[0].id
            base_pcfg = pod_config(pb, work)
            base_pcfg.metadata.name = "base"
            base_pcfg.metadata.uid = "uid-base"
            base_pcfg.ClearField("port_mappings")
            long_id = [c.id for c in rt.ListContainers(pb.api.ListContainersRequest()).containers
                       if c.metadata.name == "long"][0]
        else:
            base_pcfg = pod_config(pb, work)
            base_pcfg.metadata.name = "base"
            base_pcfg.metadata.uid = "uid-base"
            base_pcfg.ClearField("port_mappings")
            base_pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=base_pcfg)).pod_sandbox_id
            long_id = rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=base_pod, sandbox_config=base_pcfg,
                config=ctr_config(pb, images["base"], "long", ["sleep", "100000"]))).container_id
            rt.StartContainer(pb.api.StartContainerRequest(container_id=long_id))
        # Exits while agentd is down.
        quick = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=base_pod, sandbox_config=base_pcfg,
            config=ctr_config(pb, images["base"], "quick%d" % _seq[0],
                              ["sh", "-c", "sleep 2; exit 7"]))).container_id
        _seq[0] += 1
        rt.StartContainer(pb.api.StartContainerRequest(container_id=quick))
        quick_started = time.time()
    node.a.stop()

    node.start(fault=fault)
    target = drive(pb, node, work, images, point, op, base_pod, base_pcfg)
    try:
        node.a.proc.wait(30)
    except subprocess.TimeoutExpired:
        node.a.fail("%s: agentd still runs after the fault point" % point)
    assert node.a.proc.returncode == -signal.SIGKILL, node.a.stderr_text()
    assert "fault point %s reached (hit %s)" % (name, hit or 1) in node.a.stderr_text()
    node.a.kill()
    while time.time() < quick_started + 3:
        time.sleep(0.1)
    restarted = time.time()

    node.start()
    a = node.a
    with node.channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        img = pb.api_grpc.ImageServiceStub(ch)
        # The container that ran runs on and is reported so.
        st = ctr_status(pb, rt, long_id)
        assert st.state == pb.api.CONTAINER_RUNNING, (point, st)
        ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=long_id, cmd=["echo", "alive"],
                                                timeout=20))
        assert ex.stdout == b"alive\n"
        # The exit that happened while agentd was down: code and real time.
        st = wait_exited(pb, rt, quick)
        assert (st.state, st.exit_code, st.reason) == (pb.api.CONTAINER_EXITED, 7, "Error"), st
        assert quick_started + 1.5 < st.finished_at / 1e9 < restarted, (st, quick_started,
                                                                          restarted)
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=quick))

        # The interrupted object: whole or gone; then it can be undone.
        if op in ("run_pod", "stop_pod", "remove_pod"):
            others = [p for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items
                      if p.id != base_pod]
            states = {state_name(pb, "PodSandboxState", p.state) for p in others} or {"gone"}
            assert states <= allowed, (point, states)
            for p in others:
                if p.state == pb.api.SANDBOX_READY:
                    ps = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                        pod_sandbox_id=p.id)).status
                    assert ps.network.ip, ps
                rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=p.id))
                rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=p.id))
        elif op in ("create", "start", "stop", "remove", "remove_running", "pod2"):
            others = [c for c in rt.ListContainers(pb.api.ListContainersRequest()).containers
                      if c.id != long_id]
            if op == "pod2":
                # The first container ran before the crash: it runs on.
                first = [c for c in others if c.metadata.name == "pod2c0"]
                assert len(first) == 1 and first[0].state == pb.api.CONTAINER_RUNNING, others
            states = {state_name(pb, "ContainerState", c.state) for c in others} or {"gone"}
            assert states <= allowed, (point, states)
            for c in others:
                if c.state == pb.api.CONTAINER_RUNNING:
                    ex = rt.ExecSync(pb.api.ExecSyncRequest(container_id=c.id, cmd=["true"],
                                                            timeout=20))
                    assert ex.exit_code == 0
                if c.state == pb.api.CONTAINER_CREATED:
                    rt.StartContainer(pb.api.StartContainerRequest(container_id=c.id))
                rt.StopContainer(pb.api.StopContainerRequest(container_id=c.id, timeout=5))
                rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=c.id))
            for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items:
                if p.id != base_pod:
                    rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=p.id))
                    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=p.id))
        elif op == "build":
            got = img.ImageStatus(pb.api.ImageStatusRequest(
                image=pb.api.ImageSpec(image=target))).image
            assert ("present" if got.id else "gone") in allowed, point
            assert build_leftovers(a) == [], point
            # Nothing in the way of the same build now.
            r = agentctl_build(node, work, target)
            assert r.returncode == 0, r.stderr
            assert build_leftovers(a) == [], point
            img.RemoveImage(pb.api.RemoveImageRequest(image=pb.api.ImageSpec(image=target)))
        else:
            got = img.ImageStatus(pb.api.ImageStatusRequest(
                image=pb.api.ImageSpec(image=target))).image
            state = "present" if got.id else "gone"
            assert state in allowed, (point, state)
            if got.id and op != "import":
                # A complete image: a container can be made of it (an
                # imported rootfs has no shell).
                cid = rt.CreateContainer(pb.api.CreateContainerRequest(
                    pod_sandbox_id=base_pod, sandbox_config=base_pcfg,
                    config=ctr_config(pb, target, "fromimg%d" % _seq[0],
                                      ["sh", "-c", "exit 0"]))).container_id
                _seq[0] += 1
                rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid))
            if got.id:
                img.RemoveImage(pb.api.RemoveImageRequest(image=pb.api.ImageSpec(image=target)))
        assert P.store_problems(a) == [], point
        live_pods = [p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items]
        live_ctrs = [c.id for c in rt.ListContainers(pb.api.ListContainersRequest()).containers]
        assert host_leftovers(work, a, live_pods, live_ctrs) == [], point


# ---- an infra process killed, a reboot ---------------------------------------------------------

def test_infra_killed(pb, work, images, node):
    """The pod's infra process SIGKILLed: the pod is reported NOTREADY, its
    containers are still reported as they are, and stop and remove undo
    everything."""
    with node.channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        pcfg = pod_config(pb, work)
        pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
        cid = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pod, sandbox_config=pcfg,
            config=ctr_config(pb, images["base"], "inpod", ["sleep", "1000"]))).container_id
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid))
        info = json.loads(rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
            pod_sandbox_id=pod, verbose=True)).info["info"])
        infra = info["pid"]
        assert infra > 0
        os.kill(infra, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pod_state(pb, rt, pod) != "SANDBOX_NOTREADY":
            assert time.monotonic() < deadline, "the pod is still reported ready"
            time.sleep(0.1)
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod))
        assert wait_exited(pb, rt, cid).state == pb.api.CONTAINER_EXITED
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))
        live_pods = [p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items]
        live_ctrs = [c.id for c in rt.ListContainers(pb.api.ListContainersRequest()).containers]
        assert pod not in live_pods
        assert host_leftovers(work, node.a, live_pods, live_ctrs) == []


def kill_cgroup_processes(keep):
    """What a reboot does to the containers: every process under the test's
    cgroup parent dies (but those of the ids in `keep`, the other agentd's)."""
    keep = set(keep[0]) | set(keep[1])
    for _ in range(50):
        pids = set()
        for top in Path("/sys/fs/cgroup").iterdir():
            d = top / CGROUP_PARENT.lstrip("/")
            for procs in d.glob("*/cgroup.procs") if d.is_dir() else []:
                if procs.parent.name not in keep:
                    pids |= {int(x) for x in procs.read_text().split()}
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    else:
        raise AssertionError("processes under %s survive SIGKILL" % CGROUP_PARENT)
    # A reboot starts with no cgroups.
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / CGROUP_PARENT.lstrip("/")
        for c in (d.iterdir() if d.is_dir() else []):
            if c.is_dir() and c.name not in keep:
                c.rmdir()


def live_ids(pb, node):
    with node.channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        return ([p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items],
                [c.id for c in rt.ListContainers(pb.api.ListContainersRequest()).containers])


def test_reboot(pb, work, images, node):
    """A host reboot: agentd killed, every container process gone, the mounts
    (rootfs overlays, netns pins) gone, the state dir (a tmpfs) empty; the
    root dir with the DB and the IPAM leases on disk kept. agentd starts
    clean, reports the old pod NOTREADY and its containers EXITED (exit code
    unknown), and gives the pod's IP lease back; stop and remove work."""
    other = node  # the crash points' agentd, with its base pod, runs on
    node = Node(work, "reboot")
    a = node.start()
    pod = None
    try:
        with node.channel() as ch:
            pb.api_grpc.ImageServiceStub(ch).PullImage(
                pb.api.PullImageRequest(image=pb.api.ImageSpec(image=images["base"])),
                timeout=120)
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            pcfg = pod_config(pb, work)
            pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
            cid = rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=pod, sandbox_config=pcfg,
                config=ctr_config(pb, images["base"], "old", ["sleep", "1000"]))).container_id
            rt.StartContainer(pb.api.StartContainerRequest(container_id=cid))
        a.kill()
        kill_cgroup_processes(keep=live_ids(pb, other))
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mp = line.split()[4]
            if mp.startswith(a.root + "/") or mp.startswith(a.state + "/") or \
                    mp == str(work / "netns" / pod):
                P.run("umount", "-l", mp, check=False)
        P.run("rm", "-rf", a.state)
        os.makedirs(a.state)

        a = node.start()
        with node.channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            assert pod_state(pb, rt, pod) == "SANDBOX_NOTREADY"
            st = ctr_status(pb, rt, cid)
            assert st.state == pb.api.CONTAINER_EXITED and st.exit_code == 255, st
            leases = [lease for net in (work / "ipam").iterdir() for lease in net.iterdir()
                      if lease.name[0].isdigit() and pod in lease.read_text()]
            assert leases == [], "the old pod's IP is still leased"
            rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod))
            rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))
            pod = None
            assert host_leftovers(work, a, *live_ids(pb, other)) == []
        assert P.store_problems(a) == []
    finally:
        try:
            if pod is not None:
                remove_everything(pb, node)
        finally:
            a.stop()
