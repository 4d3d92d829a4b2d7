"""What a kubelet reads from the CRI beyond what critest checks, against a
real agentd (private CNI network, busybox from a loopback registry, real
containers): Status conditions following the CNI conf dir without a restart,
the pod CIDR kept and reported, dual-stack pod IPs, ImageFsInfo's image and
container filesystems, the stats fields of /stats/summary (CPU rates from two
samples, memory, writable layer, network, processes), ContainerStatus of a
container that could not start, and log rotation (rename + ReopenContainerLog)
under a fast writer with no line lost or split."""
import json
import os
import re
import sys
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adk%d" % (os.getpid() % 1000)
SUBNET = "10.239.%d.0/24" % N

registry, daemon, image = P.busybox_pod_fixtures("agentd-kubelet-test", BRIDGE, SUBNET,
                                                 "test/kbox:v1")


@pytest.fixture(scope="module")
def rt(pb, daemon):
    with daemon.unix_channel() as ch:
        yield pb.api_grpc.RuntimeServiceStub(ch)


_seq = [0]


class Pod:
    """A pod for one test, removed at the end whatever happened."""

    def __init__(self, rt, pb, work):
        _seq[0] += 1
        name = "k%d" % _seq[0]
        self.rt, self.pb = rt, pb
        self.cfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name),
            hostname=name, log_directory=str(work / "logs" / name))

    def __enter__(self):
        self.id = self.rt.RunPodSandbox(
            self.pb.api.RunPodSandboxRequest(config=self.cfg)).pod_sandbox_id
        return self

    def __exit__(self, *exc):
        self.rt.RemovePodSandbox(self.pb.api.RemovePodSandboxRequest(pod_sandbox_id=self.id))

    def create(self, image, name, cmd, memory=0, log=""):
        cfg = self.pb.api.ContainerConfig(metadata=self.pb.api.ContainerMetadata(name=name),
                                          image=self.pb.api.ImageSpec(image=image),
                                          command=cmd, log_path=log)
        if memory:
            cfg.linux.resources.memory_limit_in_bytes = memory
        return self.rt.CreateContainer(self.pb.api.CreateContainerRequest(
            pod_sandbox_id=self.id, config=cfg, sandbox_config=self.cfg)).container_id

    def run(self, image, name, cmd, **kw):
        cid = self.create(image, name, cmd, **kw)
        self.rt.StartContainer(self.pb.api.StartContainerRequest(container_id=cid))
        return cid

    def exec(self, cid, *cmd):
        r = self.rt.ExecSync(self.pb.api.ExecSyncRequest(container_id=cid, cmd=list(cmd),
                                                         timeout=20))
        assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
        return r.stdout.decode()


def status(rt, pb, cid):
    return rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid)).status


def conditions(rt, pb):
    r = rt.Status(pb.api.StatusRequest(verbose=True))
    return {c.type: c for c in r.status.conditions}, dict(r.info)


def test_network_ready_follows_conf_dir_and_pod_cidr_is_kept(pb, work):
    """NetworkReady is false (NetworkPluginNotReady, a message) while the
    conf dir holds no network config and true as soon as one appears, without
    a restart; verbose Status says the same. The pod CIDR of
    UpdateRuntimeConfig is reported in verbose Status, also after a restart."""
    conf = work / "cni-late"
    conf.mkdir()
    a = P.agentd_on(work, "late", conf)
    a.start()
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            conds, info = conditions(rt, pb)
            assert conds["RuntimeReady"].status
            net = conds["NetworkReady"]
            assert not net.status and net.reason == "NetworkPluginNotReady"
            assert str(conf) in net.message, net.message
            assert info["lastCNILoadStatus"] == net.message
            assert json.loads(info["config"])["podCIDR"] == ""

            (conf / "10-late.conflist").write_text(json.dumps({
                "cniVersion": "1.0.0", "name": "late-%d" % os.getpid(),
                "plugins": [{"type": "bridge", "bridge": BRIDGE + "l",
                             "ipam": {"type": "host-local", "dataDir": str(work / "ipam-late"),
                                      "ranges": [[{"subnet": "10.240.%d.0/24" % N}]]}}]}))
            conds, info = conditions(rt, pb)
            assert conds["NetworkReady"].status, conds["NetworkReady"].message
            assert not conds["NetworkReady"].reason
            assert info["lastCNILoadStatus"] == "OK"

            for cidr in ("10.244.1.0/24", "fd00:10:244:1::/64"):
                rt.UpdateRuntimeConfig(pb.api.UpdateRuntimeConfigRequest(
                    runtime_config=pb.api.RuntimeConfig(
                        network_config=pb.api.NetworkConfig(pod_cidr=cidr))))
                assert json.loads(conditions(rt, pb)[1]["config"])["podCIDR"] == cidr
            # An empty CIDR changes nothing (kubelet sends one only when it has one).
            rt.UpdateRuntimeConfig(pb.api.UpdateRuntimeConfigRequest(
                runtime_config=pb.api.RuntimeConfig()))
            assert json.loads(conditions(rt, pb)[1]["config"])["podCIDR"] == cidr
            # Not verbose: no info.
            assert len(rt.Status(pb.api.StatusRequest()).info) == 0
        a.stop()
        (conf / "10-late.conflist").unlink()
        a.start()
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            conds, info = conditions(rt, pb)
            assert json.loads(info["config"])["podCIDR"] == "fd00:10:244:1::/64"
            assert not conds["NetworkReady"].status
    finally:
        a.stop()


def test_dual_stack_pod_ips(pb, work, registry):
    """A CNI network with an IPv4 and an IPv6 range: PodSandboxStatus has the
    IPv4 address as ip and the IPv6 one in additional_ips, as the pod's eth0
    has them."""
    d = work / "dual"
    (d / "cni").mkdir(parents=True)
    bridge = BRIDGE + "d"
    (d / "cni" / "10-dual.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "dual-%d" % os.getpid(),
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True,
                     "ipam": {"type": "host-local", "dataDir": str(d / "ipam"),
                              "ranges": [[{"subnet": "10.241.%d.0/24" % N}],
                                         [{"subnet": "fd00:241:%x::/64" % N}]]}}]}))
    a = P.agentd_on(work, "dual", d / "cni")
    a.start()
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            with Pod(rt, pb, work) as pod:
                st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                    pod_sandbox_id=pod.id, verbose=True))
                net = st.status.network
                assert net.ip.startswith("10.241.%d." % N), net
                assert [i.ip for i in net.additional_ips] == \
                    [x for x in [net.additional_ips[0].ip] if x.startswith("fd00:241:")], net
                assert len(net.additional_ips) == 1
                pin = json.loads(st.info["info"])["netns"]
                addrs = P.run("nsenter", "--net=" + pin, "ip", "-o", "addr", "show",
                              "eth0").stdout
                assert " %s/" % net.ip in addrs and " %s/" % net.additional_ips[0].ip in addrs
    finally:
        P.remove_all_pods(pb, a)
        a.stop()
        P.remove_network(d, bridge)


def test_image_fs_info_has_container_filesystems(rt, pb, work, image, daemon):
    """ImageFsInfo: the image filesystem and the containers' writable layers,
    on the same mountpoint (one filesystem), with bytes, inodes and a time."""
    with daemon.unix_channel() as ch:
        im = pb.api_grpc.ImageServiceStub(ch)
        with Pod(rt, pb, work) as pod:
            before = im.ImageFsInfo(pb.api.ImageFsInfoRequest()).container_filesystems[0]
            cid = pod.run(image, "w", ["sleep", "1000"])
            pod.exec(cid, "sh", "-c", "dd if=/dev/zero of=/big bs=1024 count=512 && "
                     "mkdir /d && touch /d/1 /d/2 /d/3")
            r = im.ImageFsInfo(pb.api.ImageFsInfoRequest())
            assert len(r.image_filesystems) == 1 and len(r.container_filesystems) == 1
            img, ctr = r.image_filesystems[0], r.container_filesystems[0]
            assert ctr.fs_id.mountpoint == img.fs_id.mountpoint == os.path.realpath(daemon.root)
            assert ctr.timestamp > time.time_ns() - 60 * 10**9
            assert ctr.used_bytes.value >= before.used_bytes.value + 512 * 1024
            assert ctr.inodes_used.value >= before.inodes_used.value + 5
            assert img.used_bytes.value > 100_000
        after = im.ImageFsInfo(pb.api.ImageFsInfoRequest()).container_filesystems[0]
        assert after.used_bytes.value < 512 * 1024


def test_stats_for_the_summary_api(rt, pb, work, image, daemon):
    """Every field kubelet's /stats/summary reads: CPU time and a rate from
    two samples, memory working set/usage/rss/page faults/available, the
    writable layer; for the pod the same summed, network counters per
    interface and the process count."""
    with Pod(rt, pb, work) as pod:
        busy = pod.run(image, "busy", ["sh", "-c", "while :; do :; done"], memory=64 << 20)
        idle = pod.run(image, "idle", ["sleep", "1000"], memory=32 << 20)
        pod.exec(idle, "sh", "-c", "echo x > /written")
        req = pb.api.ContainerStatsRequest(container_id=busy)
        first = rt.ContainerStats(req).stats
        assert not first.cpu.HasField("usage_nano_cores")  # one sample: no rate yet
        rt.PodSandboxStats(pb.api.PodSandboxStatsRequest(pod_sandbox_id=pod.id))
        time.sleep(1.5)
        s = rt.ContainerStats(req).stats
        assert s.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value
        assert s.cpu.timestamp > first.cpu.timestamp
        rate = s.cpu.usage_nano_cores.value
        # A busy loop on a shared 2-CPU machine: well above nothing, at most a core.
        assert 50_000_000 < rate <= 1_100_000_000, rate
        m = s.memory
        assert m.timestamp > 0 and m.working_set_bytes.value > 0
        assert m.usage_bytes.value >= m.working_set_bytes.value
        assert m.rss_bytes.value > 0 and m.page_faults.value > 0
        assert m.HasField("major_page_faults")
        assert m.available_bytes.value == (64 << 20) - m.working_set_bytes.value
        assert s.writable_layer.used_bytes.value >= 0 and s.writable_layer.timestamp > 0
        assert rt.ContainerStats(pb.api.ContainerStatsRequest(
            container_id=idle)).stats.writable_layer.inodes_used.value >= 1

        ps = rt.PodSandboxStats(pb.api.PodSandboxStatsRequest(pod_sandbox_id=pod.id)).stats
        lx = ps.linux
        assert lx.cpu.usage_core_nano_seconds.value >= s.cpu.usage_core_nano_seconds.value
        assert 50_000_000 < lx.cpu.usage_nano_cores.value <= 2_200_000_000, lx.cpu
        assert lx.memory.working_set_bytes.value >= m.working_set_bytes.value
        assert lx.memory.page_faults.value >= m.page_faults.value
        assert lx.memory.HasField("major_page_faults")
        # Both containers have a limit: what they leave.
        assert 0 < lx.memory.available_bytes.value <= (96 << 20)
        assert lx.process.process_count.value >= 3  # infra, sh, sleep
        assert lx.network.default_interface.name == "eth0"
        assert [i.name for i in lx.network.interfaces] == ["eth0"]
        for f in ("rx_bytes", "tx_bytes", "rx_errors", "tx_errors"):
            assert lx.network.default_interface.HasField(f), f
        assert {c.attributes.id for c in lx.containers} == {busy, idle}
        listed = rt.ListPodSandboxStats(pb.api.ListPodSandboxStatsRequest(
            filter=pb.api.PodSandboxStatsFilter(id=pod.id))).stats
        assert len(listed) == 1 and listed[0].linux.cpu.usage_nano_cores.value > 0
        all_ctrs = rt.ListContainerStats(pb.api.ListContainerStatsRequest(
            filter=pb.api.ContainerStatsFilter(pod_sandbox_id=pod.id))).stats
        assert [c.cpu.usage_nano_cores.value > 0 for c in all_ctrs
                if c.attributes.id == busy] == [True]


def test_container_status_reasons_messages_and_times(rt, pb, work, image, daemon):
    """ContainerStatus as kubelet shows it: a container that could not start
    (its pod stopped meanwhile) is exited with StartError, 128, a message
    saying why and its finish time; exits 0 and 2 are Completed and Error
    with no message, created <= started <= finished. A command that does not
    exist fails CreateContainer, naming it."""
    with Pod(rt, pb, work) as pod:
        e = pytest.raises(grpc.RpcError, pod.create, image, "nocmd", ["/no/such/binary"]).value
        assert "/no/such/binary" in e.details()

        done = pod.run(image, "done", ["sh", "-c", "exit 0"])
        failed = pod.run(image, "failed", ["sh", "-c", "exit 2"])
        for cid, code, reason in ((done, 0, "Completed"), (failed, 2, "Error")):
            deadline = time.monotonic() + 20
            while (st := status(rt, pb, cid)).state != pb.api.CONTAINER_EXITED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert (st.exit_code, st.reason, st.message) == (code, reason, ""), st
            assert 0 < st.created_at <= st.started_at <= st.finished_at <= time.time_ns()

        late = pod.create(image, "late", ["true"])
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
        t0 = time.time_ns()
        e = pytest.raises(grpc.RpcError, rt.StartContainer,
                          pb.api.StartContainerRequest(container_id=late)).value
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        st = status(rt, pb, late)
        assert st.state == pb.api.CONTAINER_EXITED
        assert (st.exit_code, st.reason) == (128, "StartError"), st
        assert "not ready" in st.message and pod.id in st.message, st.message
        assert 0 < st.created_at <= t0 <= st.finished_at <= time.time_ns()
        assert st.started_at == 0


LINE = re.compile(r"^\S+ stdout F line-(\d+)-abcdefghijklmnopqrstuvwxyz$")


def test_log_rotation_under_a_fast_writer(rt, pb, work, image, daemon):
    """kubelet's rotation: rename the log, ReopenContainerLog makes the
    runtime write to the path again. Under a writer that never pauses, every
    line is in one of the files, whole, once and in order."""
    with Pod(rt, pb, work) as pod:
        total = 60000
        cid = pod.run(image, "fast", ["sh", "-c", "i=0; while [ $i -lt %d ]; do i=$((i+1)); "
                                      "echo line-$i-abcdefghijklmnopqrstuvwxyz; done; "
                                      "sleep 1000" % total], log="fast.log")
        log = Path(status(rt, pb, cid).log_path)
        files = []
        for n in range(4):
            deadline = time.monotonic() + 20
            while not log.exists() or log.stat().st_size < 4096:
                assert time.monotonic() < deadline, "the log does not grow"
                time.sleep(0.01)
            rotated = Path("%s.%d" % (log, n))
            log.rename(rotated)
            files.append(rotated)
            rt.ReopenContainerLog(pb.api.ReopenContainerLogRequest(container_id=cid))
        deadline = time.monotonic() + 120
        while True:
            text = log.read_text() if log.exists() else ""
            if text.endswith("line-%d-abcdefghijklmnopqrstuvwxyz\n" % total):
                break
            assert time.monotonic() < deadline, text[-300:]
            time.sleep(0.1)
        files.append(log)
        numbers, bad = [], []
        for f in files:
            for line in f.read_text().splitlines():
                m = LINE.match(line)
                if m:
                    numbers.append(int(m.group(1)))
                else:
                    bad.append((f.name, line))
        assert bad == []
        # Lines arrive while the rotation happens: some land in every file.
        assert all(f.stat().st_size > 0 for f in files)
        assert numbers == list(range(1, total + 1))
