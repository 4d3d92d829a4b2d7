#!/usr/bin/python3
"""Runs h2load against agentd and the reference C++ gRPC server side by side
and prints throughput, latency percentiles, CPU time and memory, with the
ratios agentd / C++. Driven by ./run, which installs and builds everything.

Both servers answer runtime.v1.RuntimeService/Version; each gets the same
pre-encoded gRPC request body, the same h2load settings, in alternation.
With --baseline-agentd (another revision's agentd, BENCH_AGENTD_BASELINE in
./run) it is a third server in the same alternation ("old"), and the rows
"new/old" give agentd / that agentd."""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
import agentd_harness as H  # noqa: E402

PATH = "/runtime.v1.RuntimeService/Version"
NOTES = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Server:
    def __init__(self, name, args, workdir, env=None):
        self.name = name
        self.args = args
        self.errpath = os.path.join(workdir, name + ".stderr")
        self.err = open(self.errpath, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.err,
                                     stderr=self.err, start_new_session=True, env=env)

    def stderr(self):
        with open(self.errpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_port(self, port, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited (%s):\n%s" % (self.name, self.proc.returncode,
                                                           self.stderr()))
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s: port %d not open after %ds" % (self.name, port, timeout))

    def status(self):
        return H.proc_status(self.proc.pid)

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tck  # utime + stime

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return self.proc.returncode


def grpc_check(port, tls_certs=None):
    """One real gRPC Version call (grpcio), so that h2load's HTTP 200s are
    known to be gRPC successes with the expected answer."""
    import grpc
    pb = H.load_stubs()
    opts = [("grpc.enable_http_proxy", 0)]
    if tls_certs:
        creds = grpc.ssl_channel_credentials(
            root_certificates=open(tls_certs.ca, "rb").read(),
            private_key=open(tls_certs.client_key, "rb").read(),
            certificate_chain=open(tls_certs.client_cert, "rb").read())
        ch = grpc.secure_channel("127.0.0.1:%d" % port, creds, options=opts)
    else:
        ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=opts)
    with ch:
        r = pb.api_grpc.RuntimeServiceStub(ch).Version(pb.api.VersionRequest(version="v1"),
                                                      timeout=10)
    return r


def h2load(url, n, c, m, body, logfile, threads):
    cmd = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-t", str(threads),
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           "-d", body, "--log-file", logfile, url]
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = r.stdout
    if r.returncode != 0:
        raise RuntimeError("h2load failed (%d): %s %s" % (r.returncode, out, r.stderr))
    res = {"cmd": " ".join(cmd)}
    mt = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    res["rps"] = float(mt.group(3))
    mr = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    res["succeeded"], res["failed"], res["errored"] = (int(mr.group(4)), int(mr.group(5)),
                                                       int(mr.group(6)))
    lat = []
    with open(logfile) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] / 1000.0 if lat else float("nan")
    res["p50"], res["p99"] = pct(50), pct(99)
    res["mean"] = sum(lat) / len(lat) / 1000.0 if lat else float("nan")
    md = re.search(r"traffic: .*?\n", out)
    res["traffic"] = md.group(0).strip() if md else ""
    os.unlink(logfile)
    return res


def mib(kib):
    return kib / 1024.0


def load_client(binary, port, n, c, m, certs=None):
    cmd = [binary, "--target", "127.0.0.1:%d" % port, "-n", str(n), "-c", str(c), "-m", str(m)]
    if certs:
        cmd += ["--ca", certs.ca, "--cert", certs.client_cert, "--key", certs.client_key]
    r = subprocess.run(cmd, capture_output=True, text=True)
    kv = dict(x.split("=", 1) for x in r.stdout.split() if "=" in x)
    if "rps" not in kv:
        raise RuntimeError("load_client failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr))
    return {"cmd": " ".join(cmd), "rps": float(kv["rps"]), "p50": float(kv["p50_ms"]),
            "p99": float(kv["p99_ms"]), "mean": float(kv["mean_ms"]),
            "succeeded": int(kv["ok"]), "failed": int(kv["failed"]), "errored": 0}


def syscalls_per_request(server, n, load, work):
    """Runs load(n) with strace -c -f attached to the server; returns
    [(syscall, calls per request)] for the calls made more than n/100 times,
    plus the total."""
    out = os.path.join(work, "strace.out")
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.proc.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(1)  # strace attaches to every thread
    try:
        load(n)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait()
    counts, total = [], 0
    with open(out) as f:
        for line in f:
            p = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(p) >= 5 and p[3].isdigit() and p[-1] != "total":
                total += int(p[3])
                if int(p[3]) > n / 100:
                    counts.append((p[-1], int(p[3]) / n))
    os.unlink(out)
    return counts + [("total", total / n)]


def smaps_by_mapping(pid):
    """{mapping name: [Rss KiB, Anonymous KiB]} from /proc/PID/smaps; a
    library's or the binary's mappings are summed under its file name."""
    res, cur = {}, None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            p = line.split()
            if not p[0].endswith(":"):
                cur = os.path.basename(p[5]) if len(p) > 5 and p[5].startswith("/") else (
                    p[5] if len(p) > 5 else "[anon]")
                res.setdefault(cur, [0, 0])
            elif p[0] == "Rss:":
                res[cur][0] += int(p[1])
            elif p[0] == "Anonymous:":
                res[cur][1] += int(p[1])
    return res


class PeakSampler(threading.Thread):
    """Samples a process's smaps every 0.2 s and keeps the sample with the
    largest total RSS: which mappings make up the peak (VmHWM)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopping = pid, {}, threading.Event()

    def run(self):
        while not self.stopping.wait(0.2):
            try:
                m = smaps_by_mapping(self.pid)
            except OSError:
                return
            if sum(v[0] for v in m.values()) > sum(v[0] for v in self.peak.values()):
                self.peak = m

    def stop(self):
        self.stopping.set()
        self.join()
        return self.peak


CLIENT_OF = {"h2c": "h2load", "mtls": "load_client", "h2c-grpc": "load_client"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agentd", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--load-client", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("--configs", default="4x16,8x100", help="CONNSxSTREAMS,...")
    ap.add_argument("--threads", type=int, default=1, help="h2load threads")
    ap.add_argument("--transports", default="h2c,mtls",
                    help="h2c (h2load), mtls (load_client, mutual TLS), "
                         "h2c-grpc (load_client over h2c)")
    ap.add_argument("--ref-sync", action="store_true")
    ap.add_argument("--baseline-agentd",
                    help="another revision's agentd: loaded in the same rotation")
    ap.add_argument("--baseline-rev", default="baseline")
    ap.add_argument("--repeat", type=int, default=3, help="runs per server and setting "
                    "(alternating); the median by throughput is reported")
    ap.add_argument("--syscalls", action="store_true",
                    help="finally, one run per server and setting under strace -c -f: "
                         "system calls per request")
    a = ap.parse_args()

    certs = H.make_certs(os.path.join(a.work, "certs"))
    transports = a.transports.split(",")
    for t in transports:
        if t not in CLIENT_OF:
            ap.error("unknown transport %s" % t)
    ports = {k: H.free_port() for k in ("a_h2c", "a_tls", "r_h2c", "r_tls", "o_h2c", "o_tls")}

    def agentd_args(binary, name, pre, extra):
        root = os.path.join(a.work, name)
        os.makedirs(os.path.join(root, "root"))
        os.makedirs(os.path.join(root, "state"))
        return [binary, "--root", os.path.join(root, "root"), "--state",
                os.path.join(root, "state"), "--listen", os.path.join(root, "state", "agentd.sock"),
                "--log-level", "warn", "--tcp-insecure-listen", "127.0.0.1:%d" % ports[pre + "h2c"],
                "--tls-listen", "127.0.0.1:%d" % ports[pre + "tls"], "--tls-cert",
                certs.server_cert, "--tls-key", certs.server_key, "--tls-client-ca",
                certs.ca] + extra
    aargs = agentd_args(a.agentd, "agentd", "a_", ["--metrics-listen", "127.0.0.1:0"])
    # An older agentd may not know --metrics-listen (nothing here reads it).
    oargs = agentd_args(a.baseline_agentd, "old", "o_", []) if a.baseline_agentd else None
    rargs = [a.ref, "--h2c", "127.0.0.1:%d" % ports["r_h2c"], "--tls",
             "127.0.0.1:%d" % ports["r_tls"], "--cert", certs.server_cert, "--key",
             certs.server_key, "--client-ca", certs.ca]
    if a.ref_sync:
        rargs.append("--sync")
    NOTES.append("h2load cannot present a client certificate and agentd's TLS listener "
                 "requires one, so TLS is measured with load_client (C++ gRPC callback "
                 "client, closed loop) with mutual TLS on both servers")

    servers = []
    try:
        agentd = Server("agentd", aargs, a.work)
        servers.append(agentd)
        ref = Server("cxx", rargs, a.work)
        servers.append(ref)
        started = [(agentd, "a_"), (ref, "r_")]
        if oargs:
            old = Server("old", oargs, a.work)
            servers.append(old)
            started.append((old, "o_"))
        for s, pre in started:
            s.wait_port(ports[pre + "h2c"])
            s.wait_port(ports[pre + "tls"])
        for _, pre in started:
            assert grpc_check(ports[pre + "h2c"]).runtime_name == "agentd"
            assert grpc_check(ports[pre + "tls"], certs).runtime_name == "agentd"
        idle = {s.name: s.status() for s in servers}
        sampler = PeakSampler(agentd.proc.pid)
        sampler.start()
        log("agentd: %s" % " ".join(aargs))
        log("c++:    %s" % " ".join(rargs))
        pre = {"agentd": "a_", "cxx": "r_", "old": "o_"}
        h2log = os.path.join(a.work, "h2load.log")

        def run(t, name, n, c, m):
            if t == "h2c":
                url = "http://127.0.0.1:%d%s" % (ports[pre[name] + "h2c"], PATH)
                return h2load(url, n, c, m, a.body, h2log, a.threads)
            if t == "mtls":
                return load_client(a.load_client, ports[pre[name] + "tls"], n, c, m, certs)
            return load_client(a.load_client, ports[pre[name] + "h2c"], n, c, m)

        # Warm-up; also checks that every request succeeds everywhere.
        for t in transports:
            for s in servers:
                r = run(t, s.name, 20000, 4, 16)
                if r["succeeded"] != 20000:
                    raise RuntimeError("warm-up against %s over %s: %r" % (s.name, t, r))

        rows = []
        for t in transports:
            for cfg in a.configs.split(","):
                c, m = (int(x) for x in cfg.split("x"))
                runs = {s.name: [] for s in servers}
                # Alternate the servers run by run, so that a disturbance on
                # the (shared) machine hits both alike; keep the median run.
                for _ in range(a.repeat):
                    for s in servers:
                        cpu0 = s.cpu_seconds()
                        r = run(t, s.name, a.n, c, m)
                        r["cpu"] = s.cpu_seconds() - cpu0
                        runs[s.name].append(r)
                        log("%-8s %-7s %-6s %10.0f req/s  p50 %.3f ms  p99 %.3f ms  ok %d "
                            "fail %d err %d  cpu %.2fs" % (
                                t, cfg, s.name, r["rps"], r["p50"], r["p99"], r["succeeded"],
                                r["failed"], r["errored"], r["cpu"]))
                pair = {}
                for name, rs in runs.items():
                    rs.sort(key=lambda r: r["rps"])
                    pair[name] = rs[len(rs) // 2]
                rows.append((t, cfg, pair))

        final = {s.name: s.status() for s in servers}
        peak_maps = sampler.stop()
        sysrows = []
        if a.syscalls:
            for t in transports:
                for cfg in a.configs.split(","):
                    c, m = (int(x) for x in cfg.split("x"))
                    for s in servers:
                        sysrows.append((t, cfg, s.name, syscalls_per_request(
                            s, a.n // 4, lambda n: run(t, s.name, n, c, m), a.work)))
        if agentd.proc.poll() is not None:
            raise RuntimeError("agentd died:\n" + agentd.stderr())
    finally:
        rcs = {s.name: s.stop() for s in servers}

    # ---- report
    print()
    print("gRPC benchmark: runtime.v1.RuntimeService/Version, %d requests per run, median of "
          "%d runs, %d CPUs shared by client and server" % (a.n, a.repeat, os.cpu_count()))
    print("%-8s %-11s %-8s %-7s %10s %8s %8s %8s %7s %10s" % (
        "trans", "client", "c x m", "server", "req/s", "p50 ms", "p99 ms", "mean ms", "cpu s",
        "req/cpu-s"))
    names = [s for s in ("agentd", "cxx", "old") if s in final]
    for t, cfg, pair in rows:
        for name in names:
            r = pair[name]
            eff = a.n / r["cpu"] if r["cpu"] > 0 else float("nan")
            print("%-8s %-11s %-8s %-7s %10.0f %8.3f %8.3f %8.3f %7.2f %10.0f" % (
                t, CLIENT_OF[t], cfg, name, r["rps"], r["p50"], r["p99"], r["mean"], r["cpu"],
                eff))
            if r["succeeded"] != a.n:
                print("      ^ only %d of %d requests succeeded (failed %d, errored %d)" % (
                    r["succeeded"], a.n, r["failed"], r["errored"]))
        ra, rc = pair["agentd"], pair["cxx"]
        print("%-8s %-11s %-8s %-7s %9.2fx %7.2fx %7.2fx %7.2fx %6.2fx" % (
            t, "", cfg, "ratio", ra["rps"] / rc["rps"], ra["p50"] / rc["p50"],
            ra["p99"] / rc["p99"], ra["mean"] / rc["mean"],
            ra["cpu"] / rc["cpu"] if rc["cpu"] else float("nan")))
        if "old" in pair:
            ro = pair["old"]
            print("%-8s %-11s %-8s %-7s %9.2fx %7.2fx %7.2fx %7.2fx %6.2fx   (agentd / %s)" % (
                t, "", cfg, "new/old", ra["rps"] / ro["rps"], ra["p50"] / ro["p50"],
                ra["p99"] / ro["p99"], ra["mean"] / ro["mean"],
                ra["cpu"] / ro["cpu"] if ro["cpu"] else float("nan"), a.baseline_rev))
    print()
    print("memory (MiB)  idle: VmRSS RssAnon RssFile   after load: VmRSS VmHWM(peak) RssAnon "
          "RssFile")
    cols = [(idle, "VmRSS"), (idle, "RssAnon"), (idle, "RssFile"), (final, "VmRSS"),
            (final, "VmHWM"), (final, "RssAnon"), (final, "RssFile")]
    fmt = "%-13s %11.1f %7.1f %7.1f %18.1f %11.1f %7.1f %7.1f"
    for name in names:
        print(fmt % ((name,) + tuple(mib(d[name][k]) for d, k in cols)))
    print(fmt.replace(".1f", ".2f") % (("ratio",) + tuple(
        d["agentd"][k] / d["cxx"][k] for d, k in cols)))
    if "old" in names:
        print(fmt.replace(".1f", ".2f") % (("new/old",) + tuple(
            d["agentd"][k] / d["old"][k] for d, k in cols)))
    print("(RssFile: pages of the binary and shared libraries, shared with other processes)")
    hwm_ratio = final["agentd"]["VmHWM"] / final["cxx"]["VmHWM"]
    tot = sum(v[0] for v in peak_maps.values())
    print("agentd at its largest sampled RSS (%.1f MiB, every 0.2 s), KiB by mapping "
          "(anonymous part in parentheses):" % mib(tot))
    print("  " + "  ".join("%s %d (%d)" % (k, v[0], v[1]) for k, v in sorted(
        peak_maps.items(), key=lambda kv: -kv[1][0]) if v[0] >= 16))
    if sysrows:
        print()
        print("system calls per request (strace -c -f, %d requests, calls > 0.01/request)" % (
            a.n // 4))
        for t, cfg, name, counts in sysrows:
            print("%-8s %-8s %-7s %s" % (t, cfg, name, "  ".join(
                "%s %.2f" % kv for kv in counts)))
    tput = min(p["agentd"]["rps"] / p["cxx"]["rps"] for _, _, p in rows)
    print()
    print("goal: agentd >= 1.00x the C++ throughput: worst ratio %.2fx -> %s" % (
        tput, "met" if tput >= 1.0 else "NOT met"))
    print("goal: agentd <= 0.25x the C++ peak RSS:   %.2fx -> %s" % (
        hwm_ratio, "met" if hwm_ratio <= 0.25 else "NOT met"))
    print("exit status after SIGTERM: %s" % ", ".join("%s %s" % kv for kv in rcs.items()))
    for n in NOTES:
        print("note: " + n)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        if H._STUBS is not None:
            shutil.rmtree(H._STUBS.dir, ignore_errors=True)
