"""Disk full: agentd's root dir (the image store, the state DB, the
containers' rootfs upper dirs) on a small tmpfs the test mounts, filled up
by the test to a chosen amount of room left.

With too little room, a pull, a load, an import, a container create (and a
container's log in a pod log directory on the same disk) fail with
RESOURCE_EXHAUSTED and a message that says the disk is full; nothing is
left behind: no image, no blob that does not hash to its name, nothing in
tmp/, no layer dir, no container rootfs; the state DB passes
integrity_check. Once the space is back, the same operations work.

Two amounts of room: a few KiB (the blob download fails) and a little more
than a layer's blob (the blob is stored, its unpacking fails).

Running containers: a full log disk costs output but never a torn record,
and the log says how much was lost; a full state dir (another small tmpfs:
where the shims record exits) does not turn an exit into a shim death."""
import errno
import os
import re
import sys
import tarfile
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pods_harness as P  # noqa: E402
from registry_harness import ImageBuilder, Registry  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and pods need root")

N = os.getpid() % 250
BRIDGE = "adf%d" % (os.getpid() % 1000)
SUBNET = "10.235.%d.0/24" % N
DISK_MB = 40
INODES = 4000
LAYER = 4 << 20  # bytes of random data per test layer (its gzip is as big)
CGROUP_PARENT = "/agentd-diskfull-%d" % os.getpid()
SLEEP = 7000 + os.getpid() % 1000
ROOMS = {"tiny": 64 << 10, "blob_fits": LAYER + (1 << 20)}


def small_tmpfs(d, options, source):
    """Mounts a tmpfs with `options` on d (made if missing); unmounted after."""
    d.mkdir(exist_ok=True)
    P.run("mount", "-t", "tmpfs", "-o", options, source, d)
    try:
        yield d
    finally:
        P.run("umount", "-l", d, check=False)


@pytest.fixture(scope="module")
def disk(work):
    """A tmpfs of DISK_MB MiB and INODES inodes, removed at the end."""
    yield from small_tmpfs(work / "disk", "size=%dm,nr_inodes=%d,mode=0755" % (DISK_MB, INODES),
                           "agentd-disk-full")


@pytest.fixture(scope="module")
def images(work):
    """base busybox; per room and operation an image with a layer of LAYER
    random bytes: pushed for the pulls, a docker-archive for the loads, a
    rootfs tar for the imports."""
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    out = {"pull": {}, "load": {}, "import": {}}
    for room in ROOMS:
        for op in out:
            tag = "%s-%s" % (op, room)
            if op == "import":
                path = work / (tag + ".tar")
                with tarfile.open(path, "w") as tf:
                    tf.add(_random_file(work / (tag + ".bin")), "big")
                out[op][room] = (str(path), "docker.io/test/%s:v1" % tag)
                continue
            b.append_layer("base", tag, [("big", "file", os.urandom(LAYER))])
            if op == "load":
                path = work / (tag + ".tar")
                P.run("skopeo", "copy", "--quiet", "oci:%s:%s" % (b.path, tag),
                      "docker-archive:%s:test/%s:v1" % (path, tag))
                out[op][room] = (str(path), "docker.io/test/%s:v1" % tag)
    with Registry(work) as reg:
        reg.push(b, "base", "test/base:v1", fmt="oci")
        out["base"] = "%s/test/base:v1" % reg.host
        for room in ROOMS:
            reg.push(b, "pull-" + room, "test/pull-%s:v1" % room, fmt="oci")
            out["pull"][room] = (None, "%s/test/pull-%s:v1" % (reg.host, room))
        yield out


def _random_file(path):
    path.write_bytes(os.urandom(LAYER))
    return str(path)


@pytest.fixture(scope="module")
def statedisk(work):
    """A small tmpfs for agentd's state dir, removed at the end."""
    yield from small_tmpfs(work / "statedisk", "size=4m,nr_inodes=2000,mode=0755",
                           "agentd-state-full")


@pytest.fixture(scope="module")
def daemon(work, pb, disk, statedisk, images):
    try:
        with P.pod_agentd(work, pb, "agentd-disk", BRIDGE, SUBNET, root=disk / "root",
                          state=statedisk / "state") as a:
            P.pull(pb, a, images["base"])
            yield a
    finally:
        P.remove_empty_cgroup_parents(CGROUP_PARENT.lstrip("/"))


class Filler:
    """Takes the disk's free space (and with inodes=True its free inodes)
    down to `room` bytes; give() hands it all back."""

    def __init__(self, disk):
        self.dir = disk / "filler"
        self.dir.mkdir(exist_ok=True)
        self.n = 0

    def _new(self):
        self.n += 1
        return os.open(self.dir / str(self.n), os.O_CREAT | os.O_WRONLY, 0o600)

    def take(self, room, inodes=False):
        st = os.statvfs(self.dir)
        want = st.f_bavail * st.f_frsize - room
        if want > 0:
            fd = self._new()
            try:
                os.posix_fallocate(fd, 0, want)
            finally:
                os.close(fd)
        if room == 0:
            # What fallocate's rounding left.
            fd = self._new()
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
            finally:
                os.close(fd)
        while inodes:
            try:
                os.close(self._new())
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break

    def give(self):
        for f in self.dir.iterdir():
            f.unlink()


def cgroup_names():
    """The cgroups under the test's cgroup parent (pids hierarchy or v2)."""
    for top in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        d = Path(top + CGROUP_PARENT)
        if d.is_dir():
            return sorted(c.name for c in d.iterdir() if c.is_dir())
    return []


def sleepers():
    """Pids of the test container's process (its unique sleep)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes() == b"sleep\0%d\0" % SLEEP:
                found.append(int(d.name))
        except OSError:
            pass
    return found


def disk_full_error(e):
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
    d = e.details().lower()
    assert "no space left on device" in d or "disk is full" in d, e.details()


def expect_disk_full(call):
    with pytest.raises(grpc.RpcError) as ei:
        call()
    disk_full_error(ei.value)


def image_op(pb, a, op, item):
    path, ref = item
    with a.unix_channel() as ch:
        if op == "pull":
            pb.api_grpc.ImageServiceStub(ch).PullImage(
                pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=120)
        elif op == "load":
            pb.agent_grpc.ImageServiceStub(ch).LoadImage(pb.agent.LoadImageRequest(path=path),
                                                         timeout=120)
        else:
            pb.agent_grpc.ImageServiceStub(ch).ImportImage(
                pb.agent.ImportImageRequest(path=path, reference=ref), timeout=120)


def image_present(pb, a, ref):
    with a.unix_channel() as ch:
        return bool(pb.api_grpc.ImageServiceStub(ch).ImageStatus(
            pb.api.ImageStatusRequest(image=pb.api.ImageSpec(image=ref))).image.id)


def remove_image(pb, a, ref):
    with a.unix_channel() as ch:
        pb.api_grpc.ImageServiceStub(ch).RemoveImage(
            pb.api.RemoveImageRequest(image=pb.api.ImageSpec(image=ref)))


def listing(a, sub):
    d = Path(a.root, sub)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("op", ["pull", "load", "import"])
@pytest.mark.parametrize("room", list(ROOMS))
def test_image_op_on_full_disk(pb, disk, images, daemon, op, room):
    item = images[op][room]
    layers = listing(daemon, "layers")
    fill = Filler(disk)
    try:
        fill.take(ROOMS[room])
        expect_disk_full(lambda: image_op(pb, daemon, op, item))
        assert not image_present(pb, daemon, item[1])
        assert P.store_problems(daemon) == []
        assert listing(daemon, "layers") == layers, "a layer dir was left"
    finally:
        fill.give()
    # The space is back: the same operation works.
    image_op(pb, daemon, op, item)
    assert image_present(pb, daemon, item[1])
    assert P.store_problems(daemon) == []
    remove_image(pb, daemon, item[1])


@pytest.fixture
def logdisk(work):
    """A second, small tmpfs for a pod's log directory."""
    yield from small_tmpfs(work / "logdisk", "size=1m,nr_inodes=64", "agentd-log-full")


def test_container_on_full_disk(pb, work, disk, logdisk, images, daemon):
    """A container's rootfs cannot be made (no inode left, the state DB
    still has room), or its log file (the pod's log dir on another full
    disk): the create fails and leaves nothing. The state DB cannot record
    a start: the start fails, the container does not run and is reported
    exited. With space back, both work."""
    cfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name="full", namespace="test", uid="uid-full"),
        log_directory=str(logdisk))
    cfg.linux.cgroup_parent = CGROUP_PARENT
    ccfg = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name="c"),
                                  image=pb.api.ImageSpec(image=images["base"]),
                                  command=["sh", "-c", "echo hello; exec sleep %d" % SLEEP],
                                  log_path="c.log")
    fill, logfill = Filler(disk), Filler(logdisk)
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg),
                               timeout=60).pod_sandbox_id
        rootfs = listing(daemon, "containers")

        def create():
            return rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id

        def start_fails(cid):
            expect_disk_full(lambda: rt.StartContainer(
                pb.api.StartContainerRequest(container_id=cid), timeout=60))
            # It does not run where nothing reports it running, and it is
            # reported as it is (exited: killed), although the DB cannot
            # take that yet.
            st = rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
            assert st.state == pb.api.CONTAINER_EXITED, st
            assert not sleepers(), "the container runs although its start failed"
            assert P.store_problems(daemon) == []

        try:
            fill.take(1 << 20, inodes=True)
            expect_disk_full(create)
            assert len(rt.ListContainers(pb.api.ListContainersRequest()).containers) == 0
            assert listing(daemon, "containers") == rootfs, "a rootfs was left"
            assert P.store_problems(daemon) == []
        finally:
            fill.give()
        cid = create()
        try:
            fill.take(0, inodes=True)
            start_fails(cid)
        finally:
            fill.give()
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid))
        cgroups = cgroup_names()
        ccfg.log_path = "new.log"  # c.log exists from the creates above
        try:
            logfill.take(0, inodes=True)
            expect_disk_full(create)
            assert len(rt.ListContainers(pb.api.ListContainersRequest()).containers) == 0
            assert listing(daemon, "containers") == rootfs, "a rootfs was left"
            assert cgroup_names() == cgroups, "a cgroup was left"
        finally:
            logfill.give()
        assert len(rt.ListContainers(pb.api.ListContainersRequest()).containers) == 0
        cid = create()
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)
        log = logdisk / "new.log"
        for _ in range(100):
            if log.exists() and "hello" in log.read_text():
                break
            time.sleep(0.1)
        assert "hello" in log.read_text()
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert listing(daemon, "containers") == rootfs
    assert P.store_problems(daemon) == []


def test_state_db_full(pb, disk, daemon):
    """The state DB itself cannot grow (SQLite's SQLITE_FULL): a new pod
    fails with RESOURCE_EXHAUSTED, "database or disk is full", and nothing
    of it is left; the DB stays intact."""
    fill = Filler(disk)
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        cfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name="db", namespace="test", uid="uid-db"))
        cfg.linux.cgroup_parent = CGROUP_PARENT
        # Big enough that the write-ahead log must grow.
        cfg.annotations["pad"] = "x" * (200 << 10)
        try:
            fill.take(0, inodes=True)
            with pytest.raises(grpc.RpcError) as ei:
                rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg), timeout=60)
            disk_full_error(ei.value)
            assert "database or disk is full" in ei.value.details()
            assert P.store_problems(daemon) == []
        finally:
            fill.give()
        assert len(rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items) == 0
        pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_restart_after_disk_full(pb, images, daemon):
    """After all that, agentd restarts on the same root: the DB opens (its
    quick_check passes), the base image is there, the store is clean."""
    daemon.stop()
    daemon.start()
    assert image_present(pb, daemon, images["base"])
    assert P.store_problems(daemon) == []


def _pod(pb, rt, name, **kw):
    cfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name), **kw)
    cfg.linux.cgroup_parent = CGROUP_PARENT
    return cfg, rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg),
                                 timeout=60).pod_sandbox_id


LINE_PAD = "x" * 100


def test_log_disk_full_keeps_records_whole(pb, logdisk, images, daemon):
    """The pod's log disk fills while the container writes: what cannot be
    written is lost, but no record is torn, and once there is room again the
    log carries a note of exactly how many bytes went missing."""
    fill = Filler(logdisk)
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        cfg, pod = _pod(pb, rt, "logfull", log_directory=str(logdisk))
        ccfg = pb.api.ContainerConfig(
            metadata=pb.api.ContainerMetadata(name="talker"),
            image=pb.api.ImageSpec(image=images["base"]),
            command=["sh", "-c", "i=0; while :; do echo line-$i-%s; i=$((i+1)); "
                     "sleep 0.005; done" % LINE_PAD],
            log_path="talker.log")
        cid = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)
        log = logdisk / "talker.log"
        try:
            P.wait_for(lambda: log.exists() and log.stat().st_size > 4096, "output", 30)
            fill.take(0, inodes=True)
            time.sleep(1.5)
        finally:
            fill.give()
        P.wait_for(lambda: "bytes of stdout lost" in log.read_text()
                   and not log.read_text().endswith("lost: No space left on device]\n"),
                   "the loss note and output after it", 30)
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))
    seen, lost, notes = [], 0, 0
    for rec in log.read_text().splitlines():
        ts, stream, tag, msg = rec.split(" ", 3)
        assert stream == "stdout" and tag == "F", rec
        if msg.startswith("[agentd-shim: "):
            assert msg.endswith("bytes of stdout lost: the log could not be written: "
                                "No space left on device]"), msg
            lost += int(msg.split()[1])
            notes += 1
            continue
        m = re.fullmatch(r"line-(\d+)-" + LINE_PAD, msg)
        assert m and (not seen or int(m.group(1)) > seen[-1]), rec
        seen.append(int(m.group(1)))
    assert notes == 1, notes
    # The lines missing from the sequence are exactly what the note counts.
    missing = sorted(set(range(seen[0], seen[-1] + 1)) - set(seen))
    assert missing, "nothing was lost: the disk never filled"
    assert lost == sum(len("line-%d-%s" % (i, LINE_PAD)) + 1 for i in missing), (lost, missing)


def test_exit_recorded_on_full_state_dir(pb, work, statedisk, images, daemon):
    """The state dir fills up while a container runs: its exit is recorded
    with its own code, not taken for the death of its shim."""
    trigger = work / "trigger"
    trigger.mkdir(exist_ok=True)
    fill = Filler(statedisk)
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        cfg, pod = _pod(pb, rt, "statefull")
        ccfg = pb.api.ContainerConfig(
            metadata=pb.api.ContainerMetadata(name="ender"),
            image=pb.api.ImageSpec(image=images["base"]),
            command=["sh", "-c", "until [ -e /trigger/go ]; do sleep 0.05; done; exit 7"],
            mounts=[pb.api.Mount(container_path="/trigger", host_path=str(trigger))])
        cid = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)

        def status():
            return rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status
        try:
            fill.take(0, inodes=True)
            assert status().state == pb.api.CONTAINER_RUNNING
            (trigger / "go").touch()
            st = P.wait_for(lambda: (lambda s: s if s.state ==
                                     pb.api.CONTAINER_EXITED else None)(status()), "the exit", 30)
        finally:
            fill.give()
        assert (st.exit_code, st.reason) == (7, "Error"), st
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_removals_on_full_disk(pb, disk, images, daemon):
    """Removing is how space comes back, yet removals write rows too: with
    the disk full to the last byte and inode, RemoveContainer, RemoveImage,
    StopPodSandbox and RemovePodSandbox still work, on the state DB's
    reserve (a file beside the DB, released for them and made again once
    there is room); the DB stays intact."""
    reserve = Path(daemon.root, "agentd.db-reserve")
    assert reserve.stat().st_size == 1 << 20
    item = images["pull"]["tiny"]
    image_op(pb, daemon, "pull", item)
    fill = Filler(disk)
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        cfg, pod = _pod(pb, rt, "rmfull")
        ccfg = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name="c"),
                                      image=pb.api.ImageSpec(image=images["base"]),
                                      command=["sleep", "%d" % SLEEP])
        cid = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg),
            timeout=60).container_id
        try:
            fill.take(0, inodes=True)
            rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid), timeout=60)
            assert not reserve.exists()
            remove_image(pb, daemon, item[1])
            rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            assert "reserve released" in daemon.stderr_text()
        finally:
            fill.give()
        assert not image_present(pb, daemon, item[1])
        assert len(rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items) == 0
        assert P.store_problems(daemon) == []
        # The next removal with room makes the reserve again.
        cfg, pod = _pod(pb, rt, "rmfull2")
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        assert reserve.stat().st_size == 1 << 20
