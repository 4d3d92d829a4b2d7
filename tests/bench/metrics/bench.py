"""agentd's CPU per /metrics scrape of N running containers (tests/bench/
metrics/run). Containers run `sleep` in pods of 10 on a private CNI
network; agentd's utime+stime (from /proc) is read around sequential
scrapes, and around the CRI stats calls kubelet would make instead."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

WORK = Path(sys.argv[1])
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

N = int(os.environ.get("BENCH_CONTAINERS", "100"))
SCRAPES = int(os.environ.get("BENCH_SCRAPES", "50"))
BRIDGE = "adbm%d" % (os.getpid() % 1000)
SUBNET = "10.241.%d.0/24" % (os.getpid() % 250)


def cpu_ms(a, fn, n):
    for _ in range(5):
        fn()
    c0, t0 = a.cpu_seconds(), time.monotonic()
    for _ in range(n):
        fn()
    return (a.cpu_seconds() - c0) * 1000 / n, (time.monotonic() - t0) * 1000 / n


def strace_one(a, trace, fn):
    """Traces agentd through one fn(); returns the syscalls it made (an
    interrupted call split across lines counts once)."""
    st = subprocess.Popen(["strace", "-f", "-o", trace, "-p", str(a.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    fn()
    time.sleep(0.5)
    st.send_signal(signal.SIGINT)
    st.wait()
    with open(trace) as f:
        return sum(1 for line in f
                   if "resumed>" not in line and "+++" not in line and "---" not in line)


def main():
    pb = H.load_stubs()
    with P.busybox_registry(WORK, "bench/metrics:v1") as reg, \
            P.pod_agentd(WORK, pb, "bench-metrics", BRIDGE, SUBNET) as a:
        image = P.pull(pb, a, "%s/bench/metrics:v1" % reg.host)
        t0 = time.monotonic()
        for p in range((N + 9) // 10):
            pod_cfg = WORK / ("pod%d.json" % p)
            pod_cfg.write_text(json.dumps({
                "metadata": {"name": "p%d" % p, "namespace": "bench", "uid": "u%d" % p},
                "log_directory": str(WORK / "logs")}))
            pod_id = P.ok(a, "runp", pod_cfg).strip()
            for c in range(min(10, N - 10 * p)):
                cfg = WORK / ("c%d-%d.json" % (p, c))
                cfg.write_text(json.dumps({"metadata": {"name": "c%d" % c},
                                           "image": {"image": image},
                                           "command": ["sleep", "3600"],
                                           "log_path": "c%d.log" % c}))
                P.created_container(a, (pod_id, pod_cfg), cfg)
        print("started %d containers in %d pods in %.1f s" % (N, (N + 9) // 10,
                                                               time.monotonic() - t0))
        url = a.metrics_url() + "/metrics"
        body = urllib.request.urlopen(url, timeout=30).read()
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        if os.environ.get("BENCH_STRACE"):
            n = strace_one(a, os.environ["BENCH_STRACE"],
                           lambda: urllib.request.urlopen(url, timeout=30).read())
            print("GET /metrics: %d syscalls in one scrape (%s)" % (n, os.environ["BENCH_STRACE"]))
        if os.environ.get("BENCH_PERF"):
            perf = subprocess.Popen(["perf", "record", "-g", "-o", os.environ["BENCH_PERF"],
                                     "-p", str(a.pid)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1)
        c0 = a.cpu_seconds()
        time.sleep(2)
        idle = (a.cpu_seconds() - c0) * 1000 / 2
        per, wall = cpu_ms(a, lambda: urllib.request.urlopen(url, timeout=30).read(), SCRAPES)
        if os.environ.get("BENCH_PERF"):
            perf.send_signal(signal.SIGINT)
            perf.wait()
        print("GET /metrics: %d bytes, %d series; agentd CPU %.2f ms per scrape "
              "(wall %.2f ms), %d scrapes; agentd idle: %.2f ms CPU per second"
              % (len(body), series, per, wall, SCRAPES, idle))
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)

            def cri():
                rt.ListContainerStats(pb.api.ListContainerStatsRequest(), timeout=60)
                rt.ListPodSandboxStats(pb.api.ListPodSandboxStatsRequest(), timeout=60)
            per_cri, wall_cri = cpu_ms(a, cri, SCRAPES)
            if os.environ.get("BENCH_STRACE"):
                trace = os.environ["BENCH_STRACE"] + ".cri"
                n = strace_one(a, trace, cri)
                print("CRI stats round: %d syscalls (%s)" % (n, trace))
        print("CRI ListContainerStats + ListPodSandboxStats: agentd CPU %.2f ms per round "
              "(wall %.2f ms)" % (per_cri, wall_cri))


main()
