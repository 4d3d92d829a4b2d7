#!/usr/bin/python3
"""Pod start benchmark: agentd vs containerd's CRI plugin, one grpcio client.

RunPodSandbox + CreateContainer + StartContainer until ContainerStatus says
RUNNING: sequential single pods (latency median/p90), then 50 pods in
parallel (wall time), then the daemon's + its shims' memory with the 50 pods
running. Both daemons get the same private CNI config (own bridge, subnet and
host-local dataDir) and pull the same busybox image from a docker-registry on
loopback. Run by tests/bench/pod/run (which installs the packages and builds
agentd); everything lives under the work dir given (a tmpfs).

With AGENTD_BASELINE_BUILD (a Release build of another revision,
BENCH_AGENTD_BASELINE in ./run) that revision's agentd is benchmarked too:
BENCH_ROUNDS (3) rounds, each running both agentds one after the other (the
order alternating between rounds, so that both see the same drift in the
machine's load), then the medians and the new / baseline ratios."""
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

TOP = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(TOP / "tests" / "integration"))
import agentd_harness as H  # noqa: E402

sys.path.insert(0, str(TOP / "tests" / "bench"))
from containerd_cri import ContainerdSide, busybox_registry, procs, write_cni  # noqa: E402

WORK = Path(sys.argv[1])
BUILD = os.environ["AGENTD_BUILD_DIR"]
SINGLE = int(os.environ.get("BENCH_SINGLE", "10"))
PAR = int(os.environ.get("BENCH_PARALLEL", "50"))
ONLY = os.environ.get("BENCH_ONLY", "")  # "agentd" or "containerd" to run one side
BRIDGE = "adbp%d" % (os.getpid() % 1000)
SUBNET = "10.233.%d.0/24" % (os.getpid() % 250)
SHIM = os.path.join(BUILD, "runtime", "agentd-shim")
BASELINE = os.environ.get("AGENTD_BASELINE_BUILD")
BASELINE_REV = os.environ.get("BENCH_AGENTD_BASELINE", "baseline")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3")) if BASELINE else 1


def run(*a, check=True):
    return subprocess.run([str(x) for x in a], capture_output=True, text=True, check=check)


def mem_kib(pid):
    """(VmRSS, Pss) in KiB of one process, or (0, 0) if it is gone."""
    try:
        rss = int(next(l.split()[1] for l in open("/proc/%d/status" % pid)
                       if l.startswith("VmRSS:")))
        pss = int(next(l.split()[1] for l in open("/proc/%d/smaps_rollup" % pid)
                       if l.startswith("Pss:")))
        return rss, pss
    except (OSError, StopIteration):
        return 0, 0


class Side:
    name = ""
    pid = 0
    sock = ""

    def shims(self):
        return []


class AgentdSide(Side):
    def __init__(self, pb, name="agentd", build=None):
        """build: the build dir of another revision (the baseline), whose
        agentd and shim run instead of this tree's."""
        self.name = name
        d = WORK / name
        d.mkdir(parents=True, exist_ok=True)
        self.netns = d / "netns"
        cfg = d / "agentd.conf"
        cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (WORK / "cni", self.netns))
        shim = os.path.join(build, "runtime", "agentd-shim") if build else SHIM
        self.a = H.Agentd(workdir=str(d / "agentd"), debug_service=False,
                          extra_args=["--config", str(cfg)], env={"AGENTD_SHIM": shim},
                          log_level="warn")
        if build:
            self.a.args[0] = os.path.join(build, "agent", "agentd")
            # An older agentd may not know it (its metrics endpoint then
            # keeps its default address: nothing else here uses it).
            i = self.a.args.index("--metrics-listen")
            del self.a.args[i:i + 2]
        self.a.start()
        self.pid = self.a.pid
        self.sock = "unix://" + self.a.sock

    def shims(self):
        # agentd execs its shims from a sealed memfd (runtime/README.md), so
        # their exe is "/memfd:agentd-shim (deleted)", never SHIM's path;
        # they are agentd's children (spawned, not forked away).
        return procs(lambda exe, cmd, ppid: exe.startswith("/memfd:agentd-shim")
                     and ppid == self.pid)

    def stop(self):
        self.a.stop()
        if str(self.netns) in Path("/proc/self/mountinfo").read_text():
            run("umount", self.netns, check=False)


def bench_side(pb, side, image, pull_extra=()):
    ch = grpc.insecure_channel(side.sock, options=[("grpc.max_receive_message_length", 64 << 20)])
    rt = pb.api_grpc.RuntimeServiceStub(ch)
    im = pb.api_grpc.ImageServiceStub(ch)
    for ref in (image,) + tuple(pull_extra):
        im.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=120)
    seq = [0]

    def one():
        seq[0] += 1
        n = "%s-p%d" % (side.name, seq[0])
        pcfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name=n, namespace="bench", uid="uid-" + n),
            hostname=n, log_directory=str(WORK / "logs" / n))
        t0 = time.monotonic()
        pid = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg), timeout=300).pod_sandbox_id
        cfg = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name="c"),
                                     image=pb.api.ImageSpec(image=image),
                                     command=["sleep", "100000"], log_path="c.log")
        cid = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pid, config=cfg, sandbox_config=pcfg), timeout=300).container_id
        rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=300)
        while rt.ContainerStatus(pb.api.ContainerStatusRequest(container_id=cid),
                                 timeout=60).status.state != pb.api.CONTAINER_RUNNING:
            time.sleep(0.005)
        return time.monotonic() - t0, pid

    def remove(pid):
        rt.StopPodSandbox(pb.api.StopPodSandboxRequest(pod_sandbox_id=pid), timeout=300)
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=300)

    res = {}
    # One warm-up pod, then single pods one after the other.
    _, p = one()
    remove(p)
    lat = []
    for _ in range(SINGLE):
        t, p = one()
        lat.append(t * 1000)
        remove(p)
    lat.sort()
    res["single_median_ms"] = statistics.median(lat)
    res["single_p90_ms"] = lat[min(len(lat) - 1, int(round(0.9 * (len(lat) - 1))))]
    with ThreadPoolExecutor(PAR) as ex:
        t0 = time.monotonic()
        out = list(ex.map(lambda _: one(), range(PAR)))
        res["parallel_wall_s"] = time.monotonic() - t0
    plat = sorted(t * 1000 for t, _ in out)
    res["parallel_median_ms"] = statistics.median(plat)
    time.sleep(1)
    shims = side.shims()
    if len(shims) < PAR:
        # Every running pod has at least one shim: fewer means the count
        # misses some, and the memory figures below would leave them out.
        raise SystemExit("%s: found %d shims for %d running pods; not counting what it says"
                         % (side.name, len(shims), PAR))
    d_rss, d_pss = mem_kib(side.pid)
    s = [mem_kib(p) for p in shims]
    res.update(daemon_rss=d_rss, daemon_pss=d_pss, nshims=len(shims),
               shims_rss=sum(r for r, _ in s), shims_pss=sum(p for _, p in s))
    res["total_rss"] = d_rss + res["shims_rss"]
    res["total_pss"] = d_pss + res["shims_pss"]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda o: remove(o[1]), out))
    left = rt.ListPodSandbox(pb.api.ListPodSandboxRequest(), timeout=60).items
    for p in left:
        remove(p.id)
    ch.close()
    return res


def main():
    (WORK / "stubs").mkdir()
    pb = H.load_stubs(str(WORK / "stubs"))
    write_cni(WORK, BRIDGE, SUBNET)
    results = {}
    try:
        with busybox_registry(WORK) as (reg, image, pause):
            if ONLY in ("", "agentd"):
                rounds = {"agentd": [], "baseline": []}
                for r in range(ROUNDS):
                    order = ["agentd", "baseline"] if BASELINE else ["agentd"]
                    for name in (order if r % 2 == 0 else order[::-1]):
                        s = AgentdSide(pb, name, BASELINE if name == "baseline" else None)
                        try:
                            rounds[name].append(bench_side(pb, s, image))
                        finally:
                            s.stop()
                        print("round %d/%d %s: %s" % (r + 1, ROUNDS, name,
                                                      json.dumps(rounds[name][-1])),
                              file=sys.stderr)
                results["agentd"] = median_of(rounds["agentd"])
                if BASELINE:
                    results["baseline"] = median_of(rounds["baseline"])
                    results["rounds"] = rounds
            if ONLY in ("", "containerd"):
                try:
                    s = ContainerdSide(WORK, reg.host, pause, WORK / "cni")
                except Exception as e:  # noqa: BLE001
                    print("containerd: could not start: %s" % e, file=sys.stderr)
                    s = None
                if s:
                    try:
                        results["containerd"] = bench_side(pb, s, image, (pause,))
                    except Exception as e:  # noqa: BLE001
                        print("containerd: failed: %s" % e, file=sys.stderr)
                        print(s.log_tail(), file=sys.stderr)
                    finally:
                        s.stop()
    finally:
        run("ip", "link", "del", BRIDGE, check=False)
    report(results)


def median_of(runs):
    return {k: statistics.median(run[k] for run in runs) for k in runs[0]}


def report_baseline(r):
    a, b = r["agentd"], r["baseline"]
    print("agentd new vs baseline %s, %d alternating rounds (medians; ratio = new / baseline, "
          "below 1: new is faster or smaller):" % (BASELINE_REV, ROUNDS))
    print("  %-34s %12s %12s %8s   %s" % ("", "new", BASELINE_REV, "ratio", "each round"))
    for label, key in (("1 pod: median latency (ms)", "single_median_ms"),
                       ("1 pod: p90 latency (ms)", "single_p90_ms"),
                       ("%d pods parallel: wall time (s)" % PAR, "parallel_wall_s"),
                       ("%d pods parallel: median pod (ms)" % PAR, "parallel_median_ms"),
                       ("daemon VmRSS (KiB)", "daemon_rss"),
                       ("daemon+shims PSS (KiB)", "total_pss")):
        each = " ".join("%.2f" % (x[key] / y[key]) for x, y in
                        zip(r["rounds"]["agentd"], r["rounds"]["baseline"]))
        print("  %-34s %12.1f %12.1f %7.2fx   %s" % (label, a[key], b[key], a[key] / b[key], each))


def report(r):
    if r.get("baseline"):
        report_baseline(r)
    a, c = r.get("agentd"), r.get("containerd")
    print("pod start (RunPodSandbox+CreateContainer+StartContainer until RUNNING), "
          "load: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    print("  %-34s %12s %12s %8s" % ("", "agentd", "containerd", "ratio"))

    def row(label, key, fmt="%12.1f", goal=None):
        av = a[key] if a else None
        cv = c[key] if c else None
        ratio = (av / cv) if (av is not None and cv) else None
        print("  %-34s %12s %12s %8s%s" % (
            label, fmt % av if av is not None else "-", fmt % cv if cv is not None else "-",
            "%.2fx" % ratio if ratio is not None else "-",
            ("  goal <= %.2fx: %s" % (goal, "met" if ratio <= goal else "NOT met"))
            if goal and ratio is not None else ""))
    row("1 pod: median latency (ms)", "single_median_ms", goal=0.5)
    row("1 pod: p90 latency (ms)", "single_p90_ms")
    row("%d pods parallel: wall time (s)" % PAR, "parallel_wall_s", "%12.2f", goal=0.5)
    row("%d pods parallel: median pod (ms)" % PAR, "parallel_median_ms")
    row("daemon VmRSS (KiB)", "daemon_rss", "%12d")
    row("shims count", "nshims", "%12d")
    row("shims VmRSS sum (KiB)", "shims_rss", "%12d")
    row("daemon+shims VmRSS (KiB)", "total_rss", "%12d", goal=0.25)
    row("daemon PSS (KiB)", "daemon_pss", "%12d")
    row("shims PSS sum (KiB)", "shims_pss", "%12d")
    row("daemon+shims PSS (KiB)", "total_pss", "%12d", goal=0.25)
    print("  (ratio = agentd / containerd; a pod-start ratio <= 0.5x is the '>= 2x faster' goal)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
