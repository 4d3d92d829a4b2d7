"""Soak: pod and container create/start/exec/stop/remove cycles against a
real agentd; what agentd holds must come back to its baseline: open fds,
threads, RSS (within a bound), mounts, cgroups (under the test's own cgroup
parent), the state DB's size (within a bound), netns pins and veths.

AGENTD_SOAK_CYCLES sets the number of cycles (default 20, what the suite
runs; the long run: AGENTD_SOAK_CYCLES=2000). The figures are printed at the
start, every 500 cycles and at the end (pytest -s shows them).

Also: 1,000 concurrent RPC clients, each on its own connection, all served,
while a client that never reads its responses sits on another connection."""
import os
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "ads%d" % (os.getpid() % 1000)
SUBNET = "10.236.%d.0/24" % N
IMAGE_PATH = "test/soakbox:v1"
CGROUP_PARENT = "/agentd-soak-%d" % os.getpid()
CYCLES = int(os.environ.get("AGENTD_SOAK_CYCLES", "20"))

registry, _, image = P.busybox_pod_fixtures("agentd-soak", BRIDGE, SUBNET, IMAGE_PATH)


@pytest.fixture(scope="module")
def daemon(work, pb, registry):
    """agentd on its own network; ASan keeps no freed memory in quarantine,
    so that its RSS shows what it holds."""
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=0"}
    try:
        with P.pod_agentd(work, pb, "agentd-soak", BRIDGE, SUBNET, env=env) as a:
            yield a
    finally:
        # A child cgroup the kernel is still tearing down keeps its parent
        # busy for a moment.
        for top in Path("/sys/fs/cgroup").iterdir():
            d = top / CGROUP_PARENT.lstrip("/")
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def cgroup_count():
    n = 0
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / CGROUP_PARENT.lstrip("/")
        if d.is_dir():
            n += sum(1 for c in d.iterdir() if c.is_dir())
    return n


def figures(a, work):
    st = H.proc_status(a.pid)
    mounts = sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines()
                 if a.workdir in line.split()[4] or str(work / "netns") in line.split()[4])
    db = sum(os.path.getsize(os.path.join(a.root, f)) for f in os.listdir(a.root)
             if f.startswith("agentd.db"))
    brif = Path("/sys/class/net", BRIDGE, "brif")
    return {
        "fds": len(os.listdir("/proc/%d/fd" % a.pid)),
        "threads": int(st["Threads"].split()[0]),
        "rss_kib": a.rss_kib(),
        "mounts": mounts,
        "cgroups": cgroup_count(),
        "db_bytes": db,
        "veths": len(list(brif.iterdir())) if brif.exists() else 0,
    }


def cycle(pb, rt, work, image, i):
    name = "soak%d" % i
    pcfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="soak", uid="uid-" + name),
        hostname=name, log_directory=str(work / "logs" / name), labels={"i": str(i)})
    pcfg.linux.cgroup_parent = CGROUP_PARENT
    pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg), timeout=60).pod_sandbox_id
    cid = rt.CreateContainer(pb.api.CreateContainerRequest(
        pod_sandbox_id=pod, sandbox_config=pcfg,
        config=pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name="c"),
                                      image=pb.api.ImageSpec(image=image),
                                      # Ends on SIGTERM: a stop need not wait
                                      # out its grace (pid 1 ignores it).
                                      command=["sh", "-c", "trap 'exit 0' TERM; "
                                               "sleep 1000 & wait"],
                                      log_path="c/0.log")),
        timeout=60).container_id
    rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)
    r = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=["echo", str(i)], timeout=20))
    assert r.stdout == b"%d\n" % i, r
    rt.StopContainer(pb.api.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
    rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid), timeout=60)
    rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def settled(a, work, want, keys, timeout=15):
    """The figures once `keys` are back at `want` (extra workers leave after
    10 s idle), or the last ones seen."""
    deadline = time.monotonic() + timeout
    while True:
        f = figures(a, work)
        if all(f[k] <= want[k] for k in keys) or time.monotonic() > deadline:
            return f
        time.sleep(0.5)


def test_soak(pb, daemon, work, image):
    a = daemon
    with a.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        for i in range(2):  # warm up: lazily opened things open now
            cycle(pb, rt, work, image, -1 - i)
        base = settled(a, work, figures(a, work), ["threads"])
        print("soak baseline:", base)
        for i in range(CYCLES):
            cycle(pb, rt, work, image, i)
            if (i + 1) % 500 == 0:
                print("soak after %d cycles:" % (i + 1), figures(a, work))
    # Workers started for the cycles' calls leave after 10 s idle.
    end = settled(a, work, base, ["fds", "threads", "mounts", "cgroups", "veths"])
    print("soak after %d cycles:" % CYCLES, end)
    for k in ("fds", "mounts", "cgroups", "veths"):
        assert end[k] <= base[k], (k, base, end)
    assert end["threads"] <= base["threads"] + 2, (base, end)
    # ASan's allocator caches freed memory: a bound, not equality.
    assert end["rss_kib"] - base["rss_kib"] < 8 * 1024 + CYCLES * 16, (base, end)
    # Rows are deleted; the WAL is checkpointed past 4 MB.
    assert end["db_bytes"] - base["db_bytes"] < 8 << 20, (base, end)


def connect(a):
    for _ in range(200):
        try:
            c = H.RawH2(unix_path=a.sock, timeout=30)
            c.start()
            return c
        except BlockingIOError:  # listen backlog full: wait for accept()
            time.sleep(0.01)
    pytest.fail("agentd stopped accepting connections")


def test_thousand_clients_and_a_silent_one(pb, daemon):
    """1,000 clients at once, each on its own connection with its call in
    flight before any answer is read, all answered; meanwhile a client that
    asked for big server streams never reads a byte."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    a = daemon
    silent = connect(a)
    big = H.grpc_message(pb.agent.EchoRequest(message="s", repeat=1000,
                                              response_bytes=1 << 20).SerializeToString())
    for _ in range(4):
        silent.request("/agent.v1.DebugService/StreamEcho", big)
    version = H.grpc_message(pb.api.VersionRequest(version="v1").SerializeToString())
    conns = []
    try:
        t0 = time.monotonic()
        for _ in range(1000):
            c = connect(a)
            conns.append((c, c.request("/runtime.v1.RuntimeService/Version", version)))
        answered = 0
        for c, sid in conns:
            r = c.wait_stream(sid, timeout=30)
            if r.grpc_status() == 0:
                answered += 1
        elapsed = time.monotonic() - t0
        print("1000 concurrent clients answered in %.1f s" % elapsed)
        assert answered == 1000
    finally:
        for c, _ in conns:
            c.close()
        silent.close()
    a.assert_healthy()
