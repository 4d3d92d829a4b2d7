#!/usr/bin/python3
"""Streaming benchmark: agentd's streaming server against containerd's (the
CRI plugin's, kubelet's streaming library) in one run, both daemons up at
once and measured alternately, with the same clients for both.

Exec round trip, `exec -- true` in a running container:
  * ws:     one Python process, one gRPC channel kept open: the CRI Exec call
            (stdout+stderr, no stdin, no tty), then a WebSocket connection to
            the URL (websocket-client, v4.channel.k8s.io) read to its end;
            an exec counts only when its v4 Status on the error channel says
            Success. Timed: from the Exec call to the connection's end.
  * crictl: `crictl exec CID true` (client-go, SPDY/3.1), one process per
            exec: its start-up (~10-20 ms of Go) is in every figure, on both
            sides alike. Counted when crictl exits 0.
Port-forward throughput: a file of BENCH_MB MiB served by busybox httpd in
the pod, downloaded by curl through `crictl port-forward` (SPDY, one
long-lived process; also `agentctl port-forward` on agentd's side), and
directly from the pod's IP as the floor. Counted bytes are curl's
size_download, checked against the file's size. The daemon's own CPU time
(utime+stime of the agentd or containerd process; the forwarded bytes pass
through both) is reported per GiB.

Run by tests/bench/streaming/run, which installs the packages and builds
agentd; everything lives under the work dir given (a tmpfs)."""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import websocket

TOP = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(TOP / "tests" / "integration"))
sys.path.insert(0, str(TOP / "tests" / "bench"))
import agentd_harness as H  # noqa: E402
from containerd_cri import ContainerdSide, busybox_registry, write_cni  # noqa: E402

WORK = Path(sys.argv[1])
CRICTL = sys.argv[2]
BUILD = os.environ["AGENTD_BUILD_DIR"]
N_EXEC = int(os.environ.get("BENCH_EXEC", "300"))
N_CRICTL = int(os.environ.get("BENCH_CRICTL", "40"))
MB = int(os.environ.get("BENCH_MB", "256"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BATCH = 20  # execs per side before switching to the other
BRIDGE = "adbs%d" % (os.getpid() % 1000)
SUBNET = "10.234.%d.0/24" % (os.getpid() % 250)


def run(*a, check=True, **kw):
    return subprocess.run([str(x) for x in a], capture_output=True, text=True, check=check, **kw)


def cpu_s(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    return H.free_port()


class AgentdSide:
    name = "agentd"

    def __init__(self):
        cfg = WORK / "agentd.conf"
        cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (WORK / "cni", WORK / "netns"))
        self.a = H.Agentd(workdir=str(WORK / "agentd"), debug_service=False,
                          extra_args=["--config", str(cfg)],
                          env={"AGENTD_SHIM": os.path.join(BUILD, "runtime", "agentd-shim")},
                          log_level="warn")
        self.a.start()
        self.pid = self.a.pid
        self.sock = "unix://" + self.a.sock

    def stop(self):
        self.a.stop()
        if str(WORK / "netns") in Path("/proc/self/mountinfo").read_text():
            run("umount", WORK / "netns", check=False)


class Bench:
    """One side's pod: a sleeper to exec in and busybox httpd serving /big."""

    def __init__(self, pb, side, image, pulls):
        self.pb, self.side = pb, side
        self.ch = grpc.insecure_channel(side.sock)
        self.rt = pb.api_grpc.RuntimeServiceStub(self.ch)
        im = pb.api_grpc.ImageServiceStub(self.ch)
        for ref in pulls:
            im.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=120)
        n = side.name + "-stream"
        self.pcfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name=n, namespace="bench", uid="uid-" + n),
            hostname=n, log_directory=str(WORK / "logs" / n))
        self.pod = self.rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=self.pcfg),
                                         timeout=300).pod_sandbox_id
        self.sleeper = self.container(image, "sleeper", ["sleep", "100000"])
        self.web = self.container(image, "web", [
            "sh", "-c", "mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1M count=%d "
            "2>/dev/null && echo ok > /tmp/www/ok && exec httpd -f -p 8080 -h /tmp/www" % MB])
        st = self.rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(pod_sandbox_id=self.pod),
                                      timeout=60)
        self.ip = st.status.network.ip

    def container(self, image, name, cmd):
        pb = self.pb
        cfg = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                     image=pb.api.ImageSpec(image=image), command=cmd,
                                     log_path=name + ".log")
        cid = self.rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=self.pod, config=cfg, sandbox_config=self.pcfg),
            timeout=300).container_id
        self.rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=300)
        return cid

    def ws_exec(self):
        """One exec of `true` over WebSocket; (seconds, rpc seconds) or None
        unless it reported Success."""
        t0 = time.perf_counter()
        url = self.rt.Exec(self.pb.api.ExecRequest(container_id=self.sleeper, cmd=["true"],
                                                   stdout=True, stderr=True), timeout=30).url
        t1 = time.perf_counter()
        ws = websocket.create_connection("ws://" + url[len("http://"):], timeout=30,
                                         subprotocols=["v4.channel.k8s.io"])
        status = b""
        try:
            while True:
                op, data = ws.recv_data()
                if op == websocket.ABNF.OPCODE_CLOSE:
                    break
                if data and data[0] == 3:
                    status += data[1:]
        except websocket.WebSocketConnectionClosedException:
            pass
        finally:
            ws.close()
        t2 = time.perf_counter()
        try:
            ok = json.loads(status.decode()).get("status") == "Success"
        except ValueError:
            ok = False
        return (t2 - t0, t1 - t0) if ok else None

    def crictl(self, *args, **kw):
        return run(CRICTL, "--runtime-endpoint", self.side.sock, "--timeout", "60s", *args,
                   check=False, **kw)

    def crictl_exec(self):
        t0 = time.perf_counter()
        r = self.crictl("exec", self.sleeper, "true")
        t = time.perf_counter() - t0
        return t if r.returncode == 0 else None

    def close(self):
        self.rt.StopPodSandbox(self.pb.api.StopPodSandboxRequest(pod_sandbox_id=self.pod),
                               timeout=300)
        self.rt.RemovePodSandbox(self.pb.api.RemovePodSandboxRequest(pod_sandbox_id=self.pod),
                                 timeout=300)
        self.ch.close()


def curl(url, out="/dev/null", timeout=120):
    r = run("curl", "-sS", "--max-time", str(timeout), "-o", out, "-w",
            "%{size_download} %{time_total}", url, check=False)
    if r.returncode != 0:
        return None
    size, t = r.stdout.split()
    return int(size), float(t)


def wait_http(port_or_ip, timeout=60):
    url = ("http://127.0.0.1:%d/ok" % port_or_ip if isinstance(port_or_ip, int)
           else "http://%s:8080/ok" % port_or_ip)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if curl(url, timeout=5):
            return True
        time.sleep(0.2)
    return False


class Forward:
    """A long-lived port-forward client (crictl or agentctl) to the web pod."""

    def __init__(self, argv):
        self.port = free_port()
        self.p = subprocess.Popen([str(a) for a in argv] + ["%d:8080" % self.port],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
        if not wait_http(self.port):
            self.close()
            raise RuntimeError("port-forward %s did not come up" % argv)

    def close(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def download(side, port_or_ip):
    """MiB/s of one download of /big, and the daemon's CPU seconds for it."""
    url = ("http://127.0.0.1:%d/big" % port_or_ip if isinstance(port_or_ip, int)
           else "http://%s:8080/big" % port_or_ip)
    c0 = cpu_s(side.pid)
    r = curl(url)
    c1 = cpu_s(side.pid)
    if not r or r[0] != MB << 20:
        raise RuntimeError("%s: download of %s got %r, not %d bytes" % (side.name, url, r,
                                                                          MB << 20))
    return r[0] / (1 << 20) / r[1], c1 - c0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def summary(samples):
    ms = [x * 1000 for x in samples]
    return {"n": len(ms), "p50": statistics.median(ms), "p99": pct(ms, 99),
            "mean": statistics.mean(ms)}


def main():
    (WORK / "stubs").mkdir()
    pb = H.load_stubs(str(WORK / "stubs"))
    write_cni(WORK, BRIDGE, SUBNET)
    sides, benches = [], []
    res = {}
    try:
        with busybox_registry(WORK) as (reg, image, pause):
            a = AgentdSide()
            sides.append(a)
            benches.append(Bench(pb, a, image, [image]))
            c = ContainerdSide(WORK, reg.host, pause, WORK / "cni")
            sides.append(c)
            try:
                benches.append(Bench(pb, c, image, [image, pause]))
            except Exception:
                print(c.log_tail(), file=sys.stderr)
                raise
            res = measure(benches)
    finally:
        for bn in benches:
            try:
                bn.close()
            except Exception as e:  # noqa: BLE001
                print("%s: pod removal: %s" % (bn.side.name, e), file=sys.stderr)
        for s in reversed(sides):
            s.stop()
        run("ip", "link", "del", BRIDGE, check=False)
    report(res)


def measure(benches):
    res = {bn.side.name: {} for bn in benches}
    for bn in benches:  # warm-up: the first exec and connection of each side
        for _ in range(5):
            bn.ws_exec()
        bn.crictl_exec()
    # Exec latency: batches alternating between the sides.
    ws = {bn.side.name: [] for bn in benches}
    rpc = {bn.side.name: [] for bn in benches}
    failed = {bn.side.name: 0 for bn in benches}
    for i in range(0, N_EXEC, BATCH):
        for bn in benches:
            for _ in range(min(BATCH, N_EXEC - i)):
                r = bn.ws_exec()
                if r is None:
                    failed[bn.side.name] += 1
                else:
                    ws[bn.side.name].append(r[0])
                    rpc[bn.side.name].append(r[1])
    cr = {bn.side.name: [] for bn in benches}
    for i in range(N_CRICTL):
        for bn in benches:
            t = bn.crictl_exec()
            if t is None:
                failed[bn.side.name] += 1
            else:
                cr[bn.side.name].append(t)
    for bn in benches:
        n = bn.side.name
        res[n]["exec_ws"] = summary(ws[n])
        res[n]["exec_ws_rpc"] = summary(rpc[n])
        res[n]["exec_crictl"] = summary(cr[n])
        res[n]["exec_failed"] = failed[n]
    # Port-forward throughput.
    for bn in benches:
        if not wait_http(bn.ip):
            raise RuntimeError("%s: httpd in the pod does not answer" % bn.side.name)
    fwd = {}
    try:
        for bn in benches:
            fwd[(bn.side.name, "crictl")] = Forward(
                [CRICTL, "--runtime-endpoint", bn.side.sock, "port-forward", bn.pod])
        agentd = next(bn for bn in benches if bn.side.name == "agentd")
        fwd[("agentd", "agentctl")] = Forward(
            [H.agentctl_binary(), "-e", agentd.side.sock, "port-forward", agentd.pod])
        runs = {}
        for _ in range(ROUNDS):
            for bn in benches:
                for (name, client), f in fwd.items():
                    if name == bn.side.name:
                        runs.setdefault((name, client), []).append(download(bn.side, f.port))
                runs.setdefault((bn.side.name, "direct"), []).append(download(bn.side, bn.ip))
    finally:
        for f in fwd.values():
            f.close()
    for (name, client), v in runs.items():
        res[name]["pf_" + client] = {
            "mib_s": statistics.median(x[0] for x in v),
            "runs": [round(x[0], 1) for x in v],
            "cpu_s_per_gib": statistics.median(x[1] for x in v) * 1024 / MB}
    return res


def report(r):
    a, c = r.get("agentd", {}), r.get("containerd", {})
    print("\nstreaming: agentd vs containerd %s, load average %s" % (
        run("containerd", "--version").stdout.split()[2],
        " ".join(open("/proc/loadavg").read().split()[:3])))
    print("exec -- true, round trip in ms (ratio agentd / containerd; lower is better)")
    print("  %-36s %24s %24s %7s" % ("", "agentd p50 / p99 / mean", "containerd p50/p99/mean",
                                      "p50"))
    for key, label in (("exec_ws", "WebSocket, Exec call + stream (n=%d)"),
                       ("exec_ws_rpc", "  of which the Exec call"),
                       ("exec_crictl", "crictl exec, a process each (n=%d)")):
        x, y = a.get(key), c.get(key)
        if not x or not y or not x["n"] or not y["n"]:
            continue
        print("  %-36s %8.2f %7.2f %7.2f %8.2f %7.2f %7.2f %6.2fx" % (
            label % x["n"] if "%d" in label else label, x["p50"], x["p99"], x["mean"],
            y["p50"], y["p99"], y["mean"], x["p50"] / y["p50"]))
    print("  failed execs: agentd %s, containerd %s" % (a.get("exec_failed"),
                                                          c.get("exec_failed")))
    print("port forward: %d MiB from busybox httpd, median of %d (MiB/s; daemon CPU s per GiB)"
          % (MB, ROUNDS))
    for client in ("crictl", "agentctl", "direct"):
        x, y = a.get("pf_" + client), c.get("pf_" + client)
        line = "  %-10s" % (client + (" (pod IP)" if client == "direct" else ""))
        for v in (x, y):
            line += ("  %8.1f MiB/s %5.2f cpu s/GiB %-22s" % (v["mib_s"], v["cpu_s_per_gib"],
                                                           v["runs"]) if v else " " * 50)
        if x and y:
            line += " %.2fx" % (x["mib_s"] / y["mib_s"])
        print(line)
    print("  (columns: agentd, containerd; ratio = agentd / containerd throughput)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
