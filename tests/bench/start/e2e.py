#!/usr/bin/python3
"""End-to-end start latency through agentd's CRI vs `crun run`, and shim
memory: agentd-shim vs conmon. Called by tests/bench/start/run with
  e2e.py <work dir on tmpfs> <agentd build dir> <OCI bundle dir> <iterations>
         [<baseline build dir>]

- agentd (Release) with a private CNI config and one pod (busybox image from
  a docker-registry on loopback, pulled by CRI PullImage); per iteration:
  CreateContainer(/bin/true) + StartContainer, until its
  CONTAINER_STOPPED_EVENT arrives on a GetContainerEvents stream (as a kubelet
  with evented PLEG learns it; the status it carries must say EXITED 0),
  RemoveContainer; timed from the client.
- `crun run --bundle B ID` of the same /bin/true bundle the library bench
  uses, spawned from the same Python process; interleaved rounds.
- with a baseline build dir (BENCH_AGENTD_BASELINE in ./run): that
  revision's agentd too, started beside this one with a pod of its own, in the
  same rounds (the two agentds' order alternating).
- 10 `sleep` containers under agentd (their agentd-shim processes) and 10
  crun containers each under conmon: mean VmRSS and Pss per shim."""
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(TOP / "tests" / "integration"))
import agentd_harness as H  # noqa: E402
from registry_harness import ImageBuilder, Registry  # noqa: E402
import grpc  # noqa: E402

WORK, BUILD, BUNDLE, N = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
# Another revision's build dir: its agentd runs beside this tree's, interleaved.
BASELINE = sys.argv[5] if len(sys.argv) > 5 else None
SHIM = os.path.join(BUILD, "runtime", "agentd-shim")
BRIDGE = "adbs%d" % (os.getpid() % 1000)
SUBNET = "10.234.%d.0/24" % (os.getpid() % 250)
ROUNDS = 5


def run(*a, check=True):
    return subprocess.run([str(x) for x in a], capture_output=True, text=True, check=check)


def ns_run(*a, check=True):
    """A command in a private mount namespace without /sys/fs/cgroup/unified:
    crun 1.8 refuses this host's cgroup v1 hybrid setup (its cgroup2 mount has
    the hugetlb controller) with "cgroups in hybrid mode not supported"."""
    return run("unshare", "-m", "--propagation", "private", "sh", "-c",
               'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh", *a, check=check)


def mem_kib(pid):
    rss = int(next(l.split()[1] for l in open("/proc/%d/status" % pid) if l.startswith("VmRSS:")))
    pss = int(next(l.split()[1] for l in open("/proc/%d/smaps_rollup" % pid)
                   if l.startswith("Pss:")))
    return rss, pss


def shim_pids():
    """agentd-shim processes: exec'd from agentd's sealed memfd copy."""
    out = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % p).startswith("/memfd:agentd-shim"):
                    out.add(int(p))
            except OSError:
                pass
    return out


class CriClient:
    """One agentd (this tree's, or with `binary` the baseline's) with a pod,
    and a GetContainerEvents stream from which the exits are learned (as a
    kubelet with evented PLEG learns them)."""

    def __init__(self, pb, name, image, shim, binary=None):
        self.pb, self.name, self.image = pb, name, image
        d = WORK / name
        d.mkdir()
        self.netns = d / "netns"
        cfg = d / "agentd.conf"
        cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (WORK / "cni", self.netns))
        self.a = H.Agentd(workdir=str(d / "agentd"), debug_service=False, log_level="warn",
                          extra_args=["--config", str(cfg)], env={"AGENTD_SHIM": shim})
        if binary:
            self.a.args[0] = binary
            # An older agentd may not know it.
            i = self.a.args.index("--metrics-listen")
            del self.a.args[i:i + 2]
        self.a.start()
        self.pod = None
        self.events = None
        self.seq = 0
        self.phases = [0.0, 0.0, 0.0, 0.0]  # create, start, until EXITED, remove
        self.times = []
        ch = self.a.unix_channel()
        self.rt = rt = pb.api_grpc.RuntimeServiceStub(ch)
        pb.api_grpc.ImageServiceStub(ch).PullImage(
            pb.api.PullImageRequest(image=pb.api.ImageSpec(image=image)), timeout=120)
        self.pcfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name="e2e-" + name, namespace="bench",
                                               uid="u-e2e-" + name),
            hostname="e2e", log_directory=str(d / "logs"))
        self.pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=self.pcfg),
                                    timeout=120).pod_sandbox_id
        self.stopped, self.stopped_cv = {}, threading.Condition()
        self.events = rt.GetContainerEvents(pb.api.GetEventsRequest())
        threading.Thread(target=self._read_events, daemon=True).start()

    def _read_events(self):
        try:
            for ev in self.events:
                if ev.container_event_type == self.pb.api.CONTAINER_STOPPED_EVENT:
                    with self.stopped_cv:
                        self.stopped[ev.container_id] = list(ev.containers_statuses)
                        self.stopped_cv.notify_all()
        except grpc.RpcError:
            pass  # cancelled at the end

    def ctr(self, cmd):
        pb, rt = self.pb, self.rt
        self.seq += 1
        c = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name="c%d" % self.seq),
                                   image=pb.api.ImageSpec(image=self.image), command=cmd)
        return rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=self.pod, config=c, sandbox_config=self.pcfg),
            timeout=60).container_id

    def once(self):
        """/bin/true: create, start, its STOPPED event, remove (seconds)."""
        pb, rt = self.pb, self.rt
        t0 = time.monotonic()
        cid = self.ctr(["/bin/true"])
        t1 = time.monotonic()
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=60)
        t2 = time.monotonic()
        with self.stopped_cv:
            if not self.stopped_cv.wait_for(lambda: cid in self.stopped, timeout=60):
                raise RuntimeError("%s: no CONTAINER_STOPPED_EVENT for %s" % (self.name, cid))
            st = self.stopped.pop(cid)
        t3 = time.monotonic()
        if len(st) != 1 or st[0].state != pb.api.CONTAINER_EXITED or st[0].exit_code != 0:
            raise RuntimeError("container %s: stopped event with %s" % (cid, st))
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid), timeout=60)
        t4 = time.monotonic()
        for i, d in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.phases[i] += d
        self.times.append(t4 - t0)
        return t4 - t0

    def report(self, key):
        ta = self.times
        print("e2e_%s_ms %.3f %.3f" % (key, statistics.mean(ta) * 1000,
                                        statistics.median(ta) * 1000))
        print("e2e_%s_phases_ms create %.2f start %.2f until_exited %.2f remove %.2f"
              % ((key,) + tuple(x * 1000 / len(ta) for x in self.phases)))

    def close(self):
        """Pods outlive agentd by design: the pod goes first."""
        pb, rt = self.pb, self.rt
        try:
            if self.events:
                self.events.cancel()
            if self.pod:
                rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=self.pod),
                                  timeout=120)
                rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=self.pod),
                                    timeout=120)
        except Exception as e:  # noqa: BLE001
            print("%s: removing the pod: %s" % (self.name, e), file=sys.stderr)
        self.a.stop()
        if str(self.netns) in Path("/proc/self/mountinfo").read_text():
            run("umount", self.netns, check=False)


def main():
    (WORK / "stubs").mkdir()
    pb = H.load_stubs(str(WORK / "stubs"))
    (WORK / "cni").mkdir()
    (WORK / "cni" / "10-bench.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "agentd-bench-%d" % os.getpid(),
        "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "dataDir": str(WORK / "ipam"),
                              "ranges": [[{"subnet": SUBNET}]]}}]}))
    b = ImageBuilder(WORK / "oci")
    b.busybox("box")
    agentds = []
    conmons = []
    try:
        with Registry(WORK) as reg:
            reg.push(b, "box", "bench/box:v1", fmt="oci")
            image = "%s/bench/box:v1" % reg.host
            a = CriClient(pb, "agentd", image, SHIM)
            agentds.append(a)
            if BASELINE:
                agentds.append(CriClient(pb, "baseline", image,
                                         os.path.join(BASELINE, "runtime", "agentd-shim"),
                                         os.path.join(BASELINE, "agent", "agentd")))

            def crun_round(r, n):
                """n x `crun run`, each timed by bash ($EPOCHREALTIME, no
                fork) inside one private mount namespace without the cgroup2
                mount (crun 1.8 refuses this host's v1 hybrid setup)."""
                script = ('umount /sys/fs/cgroup/unified 2>/dev/null; for i in $(seq 1 %d); do '
                          't0=$EPOCHREALTIME; crun run --bundle %s e2e-%d-%d-$i </dev/null '
                          '>/dev/null 2>%s/crun.err || { cat %s/crun.err >&2; exit 1; }; '
                          't1=$EPOCHREALTIME; echo "$t0 $t1"; done' % (n, BUNDLE, os.getpid(), r, WORK, WORK))
                out = run("unshare", "-m", "--propagation", "private", "bash", "-c", script)
                return [float(b) - float(a) for a, b in
                        (l.split() for l in out.stdout.split("\n") if l.strip())]

            for x in agentds:  # warm-up, not counted
                x.once()
                x.times.clear()
                x.phases = [0.0] * 4
            crun_round(0, 1)
            per = max(1, N // ROUNDS)
            tc = []
            # Interleaved: crun, then each agentd in turn (the order
            # alternating between rounds), so that all see the same load.
            for r in range(ROUNDS):
                tc += crun_round(r + 1, per)
                for x in (agentds if r % 2 == 0 else agentds[::-1]):
                    for _ in range(per):
                        x.once()
            a.report("agentd")
            print("e2e_crun_ms %.3f %.3f" % (statistics.mean(tc) * 1000,
                                             statistics.median(tc) * 1000))
            print("e2e_n %d" % len(a.times))
            if BASELINE:
                agentds[1].report("baseline")

            # 10 sleeping containers under agentd: the new agentd-shim processes.
            before = shim_pids()
            for _ in range(10):
                a.rt.StartContainer(a.pb.api.StartContainerRequest(
                    container_id=a.ctr(["sleep", "100000"])), timeout=60)
            time.sleep(1)
            new = sorted(shim_pids() - before)
            m = [mem_kib(p) for p in new]
            print("agentd_shims %d rss %.1f pss %.1f" % (
                len(m), sum(x for x, _ in m) / len(m), sum(y for _, y in m) / len(m)))

            # 10 crun containers under conmon.
            cb = WORK / "conmon"
            cb.mkdir()
            spec = json.loads((BUNDLE / "config.json").read_text())
            spec["process"]["args"] = ["/bin/sleep", "100000"]
            spec["root"]["path"] = str(BUNDLE / "rootfs")
            # conmon (and the crun it runs) in a private mount namespace without
            # the cgroup2 mount, as above; conmon leaves it and stays running.
            for i in range(10):
                cid = "cm-%d-%d" % (os.getpid(), i)
                d = cb / cid
                d.mkdir()
                (d / "config.json").write_text(json.dumps(spec))
                ns_run("conmon", "--cid", cid, "--cuuid", cid, "--name", cid,
                    "--runtime", "/usr/bin/crun", "--bundle", d,
                    "--log-path", d / "ctr.log", "--exit-dir", cb,
                    "--socket-dir-path", d, "--container-pidfile", d / "ctr.pid",
                    "--conmon-pidfile", d / "conmon.pid")
                conmons.append((cid, int((d / "conmon.pid").read_text())))
                deadline = time.monotonic() + 10
                while not (d / "ctr.pid").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                r = ns_run("crun", "start", cid, check=False)
                if r.returncode:
                    raise RuntimeError("crun start %s: %s %s" % (cid, r.stderr, (d / "ctr.log").read_text()
                                                                 if (d / "ctr.log").exists() else ""))
            time.sleep(1)
            m = [mem_kib(p) for _, p in conmons]
            print("conmon_shims %d rss %.1f pss %.1f" % (
                len(m), sum(x for x, _ in m) / len(m), sum(y for _, y in m) / len(m)))
    finally:
        for x in agentds:
            x.close()
        for cid, pid in conmons:
            ns_run("crun", "kill", cid, "KILL", check=False)
        deadline = time.monotonic() + 10
        for cid, pid in conmons:
            while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            ns_run("crun", "delete", "-f", cid, check=False)
        run("ip", "link", "del", BRIDGE, check=False)


if __name__ == "__main__":
    main()
