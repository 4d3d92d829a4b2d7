"""Upgrades: containers an older agentd created, served by this one.

An older agentd (before the runtime config was stored with each container,
see agent/pods/README.md) kept only the CRI requests. At start-up this
agentd rebuilds the runtime config of every created or running container that
has none from those requests (cri_backfill_runtime_configs), so that ExecSync,
UpdateContainerResources and ContainerStatus serve them as they serve its own;
exited ones are removed as usual.

- test_backfill: the state an older agentd leaves, made here: containers
  created by this agentd whose runtime config and stop signal are cleared in
  the DB while it is stopped (as the pods schema's migration 2 leaves an older
  agentd's rows).
- test_from_older_agentd: the real thing. AGENTD_UPGRADE_FROM=<rev> (6e9c2f3 is
  the last revision before the stored configs) is built with
  tests/build_revision.sh (Release, under /tmp, minutes the first time), runs
  a pod with a running, an exited and a created container, is stopped, and this
  agentd takes over its root and state dirs. Skipped without
  AGENTD_UPGRADE_FROM.
"""
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

N = (os.getpid() + 131) % 250
BRIDGE = "adu%d" % (os.getpid() % 1000)
SUBNET = "10.235.%d.0/24" % N
IMAGE_PATH = "test/upgrade:v1"


@pytest.fixture(scope="module")
def registry(work):
    with P.busybox_registry(work, IMAGE_PATH) as reg:
        yield reg


@pytest.fixture(scope="module")
def network(work):
    P.write_network(work, "agentd-upgrade", BRIDGE, SUBNET)
    yield work / "agentd.conf"
    P.remove_network(work, BRIDGE)
    P.remove_empty_cgroup_parents()


def node_agentd(work, name, network, build=None):
    """An agentd (not started) on the node's dirs work/name; build: another
    build dir (an older revision) whose agentd and shim run instead."""
    build = build or H.build_dir()
    a = H.Agentd(workdir=str(work / name), extra_args=["--config", str(network)],
                 env={"AGENTD_SHIM": os.path.join(build, "runtime", "agentd-shim")})
    if build != H.build_dir():
        a.args[0] = os.path.join(build, "agent", "agentd")
        # Options an older agentd may not know.
        i = a.args.index("--metrics-listen")
        del a.args[i:i + 2]
    return a


def make_containers(pb, a, image, work):
    """A pod with a running container (user 1000, an env var), an exited one
    and a created one; returns (pod id, running, exited, created)."""
    P.pull(pb, a, image)
    with a.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        pod_cfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name="upgrade", namespace="test", uid="u-upgrade"),
            hostname="upgrade", log_directory=str(work / "logs"))
        pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pod_cfg), timeout=120).pod_sandbox_id

        def create(name, cmd, **kw):
            cfg = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                         image=pb.api.ImageSpec(image=image), command=cmd,
                                         log_path=name + ".log", **kw)
            return rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg), timeout=120).container_id

        running = create("running", ["sleep", "100000"],
                         envs=[pb.api.KeyValue(key="UPGRADE", value="kept")],
                         working_dir="/bin",
                         linux=pb.api.LinuxContainerConfig(
                             security_context=pb.api.LinuxContainerSecurityContext(
                                 run_as_user=pb.api.Int64Value(value=1000))))
        rt.StartContainer(pb.api.StartContainerRequest(container_id=running), timeout=60)
        exited = create("exited", ["sh", "-c", "exit 3"])
        rt.StartContainer(pb.api.StartContainerRequest(container_id=exited), timeout=60)
        deadline = time.monotonic() + 20
        while rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=exited),
                                 timeout=30).status.state != pb.api.CONTAINER_EXITED:
            assert time.monotonic() < deadline, "the exited container did not exit"
            time.sleep(0.1)
        created = create("created", ["sleep", "100000"])
    return pod, running, exited, created


def assert_serves(pb, a, pod, running, exited, created):
    """What the containers of an older agentd must get from this one."""
    with a.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)

        def status(cid):
            return rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid),
                                      timeout=30).status

        def exec_sync(cid, cmd):
            r = rt.ExecSync(pb.api.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=20),
                            timeout=60)
            assert r.exit_code == 0, (cmd, r)
            return r.stdout.decode()

        assert status(running).state == pb.api.CONTAINER_RUNNING
        # The rebuilt config is the container's: its user, env and working dir.
        assert exec_sync(running, ["sh", "-c", "id -u; echo $UPGRADE; pwd"]).split() == \
            ["1000", "kept", "/bin"]
        rt.UpdateContainerResources(pb.api.UpdateContainerResourcesRequest(
            container_id=running, linux=pb.api.LinuxContainerResources(cpu_shares=512)),
            timeout=60)
        assert status(running).resources.linux.cpu_shares == 512

        st = status(exited)
        assert (st.state, st.exit_code) == (pb.api.CONTAINER_EXITED, 3)
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=exited), timeout=60)
        with pytest.raises(grpc.RpcError) as e:
            status(exited)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        assert status(created).state == pb.api.CONTAINER_CREATED
        rt.StartContainer(pb.api.StartContainerRequest(container_id=created), timeout=60)
        assert exec_sync(created, ["echo", "started"]).strip() == "started"

        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    assert "runtime config rebuilt" in a.stderr_text()


def without_configs(db_path):
    """Containers whose runtime config is missing, by id."""
    with sqlite3.connect(db_path) as db:
        return {r[0] for r in db.execute("SELECT id FROM containers WHERE rt_config IS NULL")}


def test_backfill(pb, work, registry, network):
    image = "%s/%s" % (registry.host, IMAGE_PATH)
    a = node_agentd(work, "node", network).start()
    try:
        pod, running, exited, created = make_containers(pb, a, image, work / "node")
        a.stop()
        db_path = os.path.join(a.root, "agentd.db")
        with sqlite3.connect(db_path) as db:
            db.execute("UPDATE containers SET rt_config = NULL, stop_signal = 0")
        a = node_agentd(work, "node", network).start()
        # Exited ones need none: they are only removed.
        assert without_configs(db_path) == {exited}
        assert_serves(pb, a, pod, running, exited, created)
    finally:
        try:
            P.remove_all_pods(pb, a)
            a.stop()
        finally:
            a.kill()


def test_from_older_agentd(pb, work, registry, network):
    rev = os.environ.get("AGENTD_UPGRADE_FROM")
    if not rev:
        pytest.skip("AGENTD_UPGRADE_FROM=<rev> (e.g. 6e9c2f3) runs it")
    old_build = subprocess.run(
        [os.path.join(H.source_dir(), "tests", "build_revision.sh"), rev, "release", "--",
         "agentd", "agentd-shim", "agentd-infra", "agentd-fetch"],
        check=True, capture_output=True, text=True).stdout.strip()
    image = "%s/%s" % (registry.host, IMAGE_PATH)
    old = node_agentd(work, "older", network, build=old_build).start()
    a = None
    try:
        pod, running, exited, created = make_containers(pb, old, image, work / "older")
        old.stop()
        a = node_agentd(work, "older", network).start()
        assert without_configs(os.path.join(a.root, "agentd.db")) == {exited}
        assert_serves(pb, a, pod, running, exited, created)
    finally:
        for d in (a, old):
            if d is not None:
                try:
                    P.remove_all_pods(pb, d)
                    d.stop()
                finally:
                    d.kill()
