"""agentctl stats, update, events and logs -f against a real agentd, set up
like test_agentctl_pods.py: private CNI config (own bridge, subnet and
host-local dataDir under the temp dir), busybox pulled from a loopback
registry, containers under the real runtime. Everything created (pods,
bridge, netns pin mount, agentctl subprocesses) is removed."""
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pods_harness as P  # noqa: E402
from pods_harness import EX_USAGE, ctl, finish, ok, spawn  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adm%d" % (os.getpid() % 1000)
SUBNET = "10.234.%d.0/24" % N
IMAGE_PATH = "test/ctlmore:v1"


registry, daemon, image = P.busybox_pod_fixtures("agentctl-more", BRIDGE, SUBNET, IMAGE_PATH)




@pytest.fixture
def pod(daemon, image, work, request):
    cfg = work / ("pod-%s.json" % request.node.name)
    cfg.write_text(json.dumps({
        "metadata": {"name": "m-" + request.node.name[:40], "namespace": "ctlmore",
                     "uid": "uid-" + request.node.name},
        "log_directory": str(work / ("logs-" + request.node.name)),
    }))
    with P.running_pod(daemon, cfg) as p:
        yield p


def container(daemon, image, work, pod, name, cmd, start=True):
    cfg = work / ("ctr-%s.json" % name)
    cfg.write_text(json.dumps({
        "metadata": {"name": name},
        "image": {"image": image},
        "command": cmd,
        "labels": {"t": name},
        "log_path": name + ".log",
    }))
    return P.created_container(daemon, pod, cfg, start)


def test_stats_and_update(daemon, image, work, pod):
    ctr = container(daemon, image, work, pod, "busy",
                    ["sh", "-c", "x=; while :; do x=$x.; [ ${#x} -gt 20000 ] && x=; done"])
    out = ok(daemon, "stats")
    lines = out.splitlines()
    assert lines[0].split() == ["CONTAINER", "NAME", "CPU", "%", "MEM", "DISK", "INODES"]
    row = [r for r in lines[1:] if r.startswith(ctr[:13])]
    assert len(row) == 1, out
    f = row[0].split()
    assert f[1] == "busy"
    assert float(f[2]) > 0, out  # a busy loop uses CPU
    assert f[3] != "0B", out
    one = ok(daemon, "stats", ctr[:10]).splitlines()
    assert len(one) == 2 and one[1].startswith(ctr[:13])
    assert ok(daemon, "stats", "--label", "t=other").splitlines()[1:] == []
    st = json.loads(ok(daemon, "stats", "-o", "json", "--id", ctr))["stats"]
    assert len(st) == 1 and st[0]["attributes"]["id"] == ctr
    assert int(st[0]["memory"]["workingSetBytes"]["value"]) > 0

    assert ok(daemon, "update", "--memory", "64m", "--cpu-shares", "512", ctr).strip() == ctr
    # The server reports available = limit - working set: the new limit shows.
    mem = json.loads(ok(daemon, "stats", "-o", "json", ctr))["stats"][0]["memory"]
    assert (int(mem["availableBytes"]["value"]) + int(mem["workingSetBytes"]["value"])
            == 64 << 20), mem
    r = ctl(daemon, "update", "--memory", "lots", ctr)
    assert r.returncode == EX_USAGE and "invalid value 'lots' for --memory" in r.stderr
    r = ctl(daemon, "update", ctr)
    assert r.returncode == EX_USAGE and "nothing to update" in r.stderr
    r = ctl(daemon, "update", "--memory", "64m", "nosuchctr")
    assert r.returncode != 0 and "UpdateContainerResources" in r.stderr
    ok(daemon, "stop", "-t", "0", ctr)
    # Exited: no usage, listed only with -a.
    assert not [x for x in ok(daemon, "stats").splitlines()[1:] if x.startswith(ctr[:13])]
    assert [x for x in ok(daemon, "stats", "-a").splitlines()[1:] if x.startswith(ctr[:13])]


def test_events(daemon, image, work, pod):
    ev = spawn(daemon, "events")
    try:
        time.sleep(1)  # subscribed before the container's life starts
        ctr = container(daemon, image, work, pod, "evt", ["sleep", "300"])
        ok(daemon, "stop", "-t", "0", ctr)
        ok(daemon, "rm", ctr)
        time.sleep(1)
    finally:
        ev.send_signal(signal.SIGINT)
        out, err = finish(ev)
    assert ev.returncode == 0, err
    mine = [line.split() for line in out.splitlines() if ctr in line]
    types = [f[1] for f in mine]
    for t in ("CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT", "CONTAINER_STOPPED_EVENT",
              "CONTAINER_DELETED_EVENT"):
        assert t in types, out
    assert types.index("CONTAINER_CREATED_EVENT") < types.index("CONTAINER_STOPPED_EVENT")
    assert all(f[2] == ctr and f[0][:4].isdigit() and f[0].endswith("Z") for f in mine)
    assert any(f[3] == pod[0] for f in mine), out


def test_logs_follow(daemon, image, work, pod):
    ctr = container(daemon, image, work, pod, "talk",
                    ["sh", "-c", "sleep 1; for i in 1 2 3; do echo line$i; sleep 1; done"],
                    start=False)
    ok(daemon, "start", ctr)
    f = spawn(daemon, "logs", "-f", ctr)
    t0 = time.monotonic()
    out, err = finish(f, timeout=30)
    assert f.returncode == 0, err
    assert out.splitlines() == ["line1", "line2", "line3"], (out, err)
    assert time.monotonic() - t0 >= 2  # it waited for lines still to come


def test_logs_follow_interrupt(daemon, image, work, pod):
    ctr = container(daemon, image, work, pod, "quiet", ["sh", "-c", "echo one; sleep 300"])
    deadline = time.monotonic() + 10
    while "one" not in ok(daemon, "logs", ctr) and time.monotonic() < deadline:
        time.sleep(0.1)
    f = spawn(daemon, "logs", "-f", ctr)
    time.sleep(1.5)
    assert f.poll() is None
    f.send_signal(signal.SIGINT)
    out, err = finish(f)
    assert f.returncode == 0 and out == "one\n", (out, err)
    ok(daemon, "stop", "-t", "0", ctr)


def test_logs_follow_rotation(daemon, image, work, pod, pb):
    ctr = container(daemon, image, work, pod, "rot",
                    ["sh", "-c", "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo n$i; "
                     "sleep 0.2; done"])
    log = Path(json.loads(ok(daemon, "inspect", ctr))["status"]["logPath"])
    f = spawn(daemon, "logs", "-f", ctr)
    try:
        time.sleep(1.5)
        # What kubelet does: rename the file, then have the runtime reopen the path.
        log.rename(str(log) + ".1")
        with daemon.unix_channel() as ch:
            pb.api_grpc.RuntimeServiceStub(ch).ReopenContainerLog(
                pb.api.ReopenContainerLogRequest(container_id=ctr), timeout=30)
    finally:
        out, err = finish(f, timeout=30)
    assert f.returncode == 0, err
    # Every line once, in order, across both files.
    assert out.splitlines() == ["n%d" % i for i in range(1, 21)], (out, err)
    assert "n20" in log.read_text() and "n1\n" in Path(str(log) + ".1").read_text()
