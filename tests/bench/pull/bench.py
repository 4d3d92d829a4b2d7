#!/usr/bin/python3
"""Cold-pull benchmark (not a timed test; run it through ./run): a ~200 MB,
5-layer gzip image from a docker-registry on loopback, pulled into an empty
store each run by

  - agentd's store (store_probe pull: download + verify + unpack, layers in
    parallel: what agentd's PullImage does),
  - skopeo copy to an OCI dir (download only),
  - containerd's `ctr images pull` (download + unpack into its overlayfs
    snapshotter), a private containerd (root, state, socket in the work dir),
  - podman pull (private --root/--runroot, overlay driver, a registries.conf
    marking the registry insecure),
  - the floor: sha256 + gunzip + untar of the same blobs from local files,
    max_parallel (3) layers at a time,

interleaved (one run of each in turn, `--runs` rounds, the order reversed
every other round), medians and ratios.

    bench.py --work DIR [--build DIR] [--mb 200] [--layers 5] [--runs 3]
             [--baseline DIR --baseline-rev REV]

--work should be a tmpfs; --build must hold a Release store_probe. With
--baseline (a Release build of another revision, BENCH_AGENTD_BASELINE in
./run) that revision's store_probe runs too, in the same rotation, and the
new / baseline ratios are printed."""
import argparse
import base64
import concurrent.futures
import hashlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(SRC / "tests" / "integration"))
from registry_harness import ImageBuilder, Registry  # noqa: E402

AGENTD = "agentd store pull+unpack"
AGENTD_OLD = "agentd baseline store pull+unpack"
SKOPEO = "skopeo copy (download only)"
CTR = "containerd ctr pull (+unpack)"
PODMAN = "podman pull (+unpack)"
FLOOR = "floor: sha256+gunzip+untar (local)"


def make_layer_entries(mb, seed):
    """Files of base64 random data: about 3:4 compressible, like binaries+text."""
    entries, left, i = [], mb << 20, 0
    with open("/dev/urandom", "rb") as rnd:
        while left > 0:
            size = min(left, 4 << 20)
            data = base64.b64encode(rnd.read(size * 3 // 4))[:size]
            entries.append((f"data{seed}/file{i:03d}", "file", data))
            left -= size
            i += 1
    return entries


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, **kw)


def children_cpu():
    """This process (the floor hashes in it) and its waited-for children."""
    return sum(ru.ru_utime + ru.ru_stime for ru in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def proc_cpu(pid):
    """utime + stime of a running process (a daemon doing work for its client)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def umount_below(d):
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        mp = line.split()[4]
        if mp.startswith(str(d) + "/") or mp == str(d):
            subprocess.run(["umount", "-l", mp], capture_output=True)


def fresh(d):
    umount_below(d)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


class Containerd:
    """A private containerd: its own root, state and socket under `d`."""

    def __init__(self, d):
        self.d = d
        self.p = None

    def start(self):
        d = fresh(self.d)
        self.sock = d / "containerd.sock"
        (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
""")
        self.log = open(d / "containerd.log", "wb")
        self.p = subprocess.Popen(["/usr/bin/containerd", "--config", d / "config.toml"],
                                  stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                  start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("containerd did not start:\n" +
                                   (d / "containerd.log").read_text()[-3000:])
            time.sleep(0.05)

    def stop(self):
        if self.p:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
            self.p = None
            self.log.close()
        umount_below(self.d)

    def cpu(self):
        return proc_cpu(self.p.pid)

    def pull(self, ref):
        sh("ctr", "--address", self.sock, "-n", "bench", "images", "pull", "--plain-http",
           "--snapshotter", "overlayfs", ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--build", default="/tmp/agentd-bench-pull-build")
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=3, help="agentd's max_parallel")
    ap.add_argument("--baseline", help="build dir of the revision to compare with")
    ap.add_argument("--baseline-rev", default="baseline")
    a = ap.parse_args()
    only = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
    probe = Path(a.build) / "tests" / "unit" / "store_probe"
    cache = (Path(a.build) / "CMakeCache.txt").read_text()
    if "AGENTD_SANITIZE:BOOL=ON" in cache:
        print("warning: this build has sanitizers; figures will be slow", file=sys.stderr)
    work = Path(a.work)

    b = ImageBuilder(work / "oci")
    b.busybox("base")
    prev = "base"
    per = a.mb // max(1, a.layers - 1)
    for i in range(a.layers - 1):
        b.append_layer(prev, "big", make_layer_entries(per, i))
        prev = "big"
    ctd = Containerd(work / "ctd")
    with Registry(work) as reg:
        reg.push(b, "big", "bench/big:v1", fmt="oci")
        ref = f"{reg.host}/bench/big:v1"
        manifest = reg.manifest("bench/big", "v1")
        total = sum(layer["size"] for layer in manifest["layers"])
        blobs = []
        for layer in manifest["layers"]:
            p = work / "blobs" / layer["digest"][7:]
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(reg.get(f"/v2/bench/big/blobs/{layer['digest']}"))
            blobs.append(p)
        (work / "podman").mkdir()
        regconf = work / "podman" / "registries.conf"
        regconf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
        podman_env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=str(regconf))

        def store_pull(probe):
            d = fresh(work / "agentd")
            sh(probe, "--root", d / "root", "--db", d / "db", "--parallel", a.parallel,
               "pull", ref)

        def agentd():
            store_pull(probe)

        def agentd_old():
            store_pull(Path(a.baseline) / "tests" / "unit" / "store_probe")

        def skopeo():
            d = work / "skopeo"
            shutil.rmtree(d, ignore_errors=True)
            sh("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
               f"oci:{d}:v1")

        def podman():
            d = work / "podman"
            sh("podman", "--root", d / "root", "--runroot", d / "run", "--storage-driver",
               "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
               "pull", "--quiet", ref, env=podman_env)

        def podman_reset():
            for sub in ("root", "run"):
                umount_below(work / "podman" / sub)
                shutil.rmtree(work / "podman" / sub, ignore_errors=True)

        def floor():
            d = fresh(work / "floor")

            def one(i_p):
                i, p = i_p
                out = d / str(i)
                out.mkdir()
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                subprocess.run(f"gzip -dc {p} | tar -x -C {out}", shell=True, check=True)
            with concurrent.futures.ThreadPoolExecutor(a.parallel) as ex:
                list(ex.map(one, enumerate(blobs)))

        # name: (setup, timed, teardown); setup and teardown are not timed.
        runners = {AGENTD: (None, agentd, None),
                   AGENTD_OLD: (None, agentd_old, None),
                   SKOPEO: (None, skopeo, None),
                   CTR: (ctd.start, lambda: ctd.pull(ref), ctd.stop),
                   PODMAN: (podman_reset, podman, podman_reset),
                   FLOOR: (None, floor, None)}
        keys = {AGENTD: "agentd", AGENTD_OLD: "agentd-old", SKOPEO: "skopeo", CTR: "containerd", PODMAN: "podman",
                FLOOR: "floor"}
        results = {name: [] for name in runners if (not only or keys[name] in only)
                   and (name != AGENTD_OLD or a.baseline)}
        cpus = {name: [] for name in results}
        reg_cpus = {name: [] for name in results}
        # CPU seconds of the client processes, plus the daemon's for containerd;
        # the registry's (serving the pull) apart.
        daemon_cpu = {CTR: ctd.cpu}
        loads = []
        try:
            for r in range(a.runs):
                # The order turns round every other round: no runner always
                # follows the same one.
                for name in (list(results) if r % 2 == 0 else list(results)[::-1]):
                    setup, fn, teardown = runners[name]
                    if setup:
                        setup()
                    dcpu = daemon_cpu.get(name)
                    c0 = children_cpu() + (dcpu() if dcpu else 0)
                    r0 = proc_cpu(reg.proc.pid)
                    t = time.monotonic()
                    try:
                        fn()
                    except subprocess.CalledProcessError as e:
                        print(f"{name}: failed: {e}\n{e.stderr.decode()[-2000:]}",
                              file=sys.stderr)
                        raise
                    results[name].append(time.monotonic() - t)
                    cpus[name].append(children_cpu() + (dcpu() if dcpu else 0) - c0)
                    reg_cpus[name].append(proc_cpu(reg.proc.pid) - r0)
                    if teardown:
                        teardown()
                    loads.append(os.getloadavg()[0])
                print(f"round {r + 1}/{a.runs}: " +
                      ", ".join(f"{keys[n]} {ts[-1]:.2f} s" for n, ts in results.items()),
                      file=sys.stderr)
        finally:
            ctd.stop()
            podman_reset()

    print(f"image: {a.layers} layers, {total / 1e6:.0f} MB compressed, {a.runs} interleaved "
          f"runs, load average {min(loads):.1f} to {max(loads):.1f}")
    if a.baseline:
        print(f"  (agentd baseline: {a.baseline_rev})")
    med = {n: statistics.median(ts) for n, ts in results.items()}
    print(f"  {'':38s} {'wall s':>7s} {'MB/s':>6s} {'cpu s':>6s} {'reg cpu':>7s}"
          "   (each run's wall s)")
    for name, m in med.items():
        ts = " ".join(f"{t:.2f}" for t in results[name])
        print(f"  {name:38s} {m:7.2f} {total / 1e6 / m:6.1f} {statistics.median(cpus[name]):6.2f}"
              f" {statistics.median(reg_cpus[name]):7.2f}   ({ts})")
    if AGENTD in med and AGENTD_OLD in med:
        pairs = " ".join(f"{n / o:.2f}" for n, o in zip(results[AGENTD], results[AGENTD_OLD]))
        print(f"  new / baseline ({a.baseline_rev}): wall {med[AGENTD] / med[AGENTD_OLD]:.2f}x"
              f" (each round: {pairs}), cpu "
              f"{statistics.median(cpus[AGENTD]) / statistics.median(cpus[AGENTD_OLD]):.2f}x"
              "  (below 1: the new one is faster)")
    if AGENTD in med:
        ours = med[AGENTD]
        for other, goal in ((CTR, 1.5), (PODMAN, 1.5), (SKOPEO, None)):
            if other in med:
                x = med[other] / ours
                print(f"  agentd is {x:.2f}x as fast as {keys[other]}" +
                      (f"  (goal >= {goal}x: {'met' if x >= goal else 'NOT met'})"
                       if goal else ""))
        if FLOOR in med:
            x = ours / med[FLOOR]
            print(f"  agentd takes {x:.2f}x the floor's time  "
                  f"(goal <= 1.3x: {'met' if x <= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
