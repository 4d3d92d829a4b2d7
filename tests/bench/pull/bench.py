#!/usr/bin/python3
"""Cold-pull benchmark (not a timed test): a ~200 MB, 5-layer gzip image from
a docker-registry on loopback, pulled into an empty store each run by
agentd's store (store_probe: download + verify + unpack, layers in parallel),
side by side with `skopeo copy` to an OCI dir (download only), containerd's
`ctr images pull` and `podman pull` when installed, and the floor for the same
bytes: sha256 + gunzip + untar of the local blobs, 3 layers at a time.

    tests/bench/pull/bench.py [--build DIR] [--mb 200] [--layers 5] [--runs 3]

--build must hold a build without sanitizers (default: build-bench, made
with -DCMAKE_BUILD_TYPE=Release if missing)."""
import argparse
import concurrent.futures
import gzip
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(SRC / "tests" / "integration"))
from registry_harness import ImageBuilder, Registry  # noqa: E402


def make_layer_entries(mb, seed):
    """Files of base64 random data: about 3:4 compressible, like binaries+text."""
    import base64
    entries, left, i = [], mb << 20, 0
    rnd = open("/dev/urandom", "rb")
    while left > 0:
        size = min(left, 4 << 20)
        data = base64.b64encode(rnd.read(size * 3 // 4))[:size]
        entries.append((f"data{seed}/file{i:03d}", "file", data))
        left -= size
        i += 1
    return entries


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(SRC / "build-bench"))
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    build = Path(a.build)
    probe = build / "tests" / "unit" / "store_probe"
    if not probe.exists():
        subprocess.run(["cmake", "-S", SRC, "-B", build, "-DCMAKE_BUILD_TYPE=Release"],
                       check=True, capture_output=True)
        subprocess.run(["cmake", "--build", build, "-j2", "--target", "store_probe"],
                       check=True, capture_output=True)
    if "AGENTD_SANITIZE:BOOL=ON" in (build / "CMakeCache.txt").read_text():
        print("warning: this build has sanitizers; figures will be slow", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    try:
        b = ImageBuilder(work / "oci")
        b.busybox("base")
        prev = "base"
        per = a.mb // a.layers
        for i in range(a.layers - 1):
            b.append_layer(prev, "big", make_layer_entries(per, i))
            prev = "big"
        with Registry(work) as reg:
            reg.push(b, "big", "bench/big:v1", fmt="oci")
            ref = f"{reg.host}/bench/big:v1"
            manifest = reg.manifest("bench/big", "v1")
            total = sum(l["size"] for l in manifest["layers"])
            blobs = []
            for l in manifest["layers"]:
                p = work / "blobs" / l["digest"][7:]
                p.parent.mkdir(exist_ok=True)
                p.write_bytes(reg.get(f"/v2/bench/big/blobs/{l['digest']}"))
                blobs.append(p)

            results = {}

            def agentd():
                d = work / "agentd"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir()
                subprocess.run([probe, "--root", d / "root", "--db", d / "db", "pull", ref],
                               check=True, capture_output=True)

            def skopeo():
                d = work / "skopeo"
                shutil.rmtree(d, ignore_errors=True)
                subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                f"docker://{ref}", f"oci:{d}:v1"], check=True,
                               capture_output=True)

            def floor():
                d = work / "floor"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir()

                def one(i_p):
                    i, p = i_p
                    out = d / str(i)
                    out.mkdir()
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                    subprocess.run(f"gzip -dc {p} | tar -x -C {out}", shell=True, check=True)
                with concurrent.futures.ThreadPoolExecutor(3) as ex:
                    list(ex.map(one, enumerate(blobs)))

            runners = {"agentd store pull+unpack": agentd,
                       "skopeo copy (download only)": skopeo,
                       "floor: sha256+gunzip+untar (local, 3 at a time)": floor}
            if shutil.which("ctr"):
                runners["containerd ctr pull (+unpack)"] = lambda: subprocess.run(
                    ["ctr", "images", "pull", "--plain-http", ref], check=True,
                    capture_output=True)
            else:
                results["containerd ctr pull (+unpack)"] = None
            if shutil.which("podman"):
                runners["podman pull"] = lambda: subprocess.run(
                    ["podman", "pull", "--tls-verify=false", ref], check=True,
                    capture_output=True)
            else:
                results["podman pull"] = None
            for name, fn in runners.items():
                results[name] = [timed(fn) for _ in range(a.runs)]
        print(f"image: {a.layers} layers, {total / 1e6:.0f} MB compressed, {a.runs} runs")
        for name, ts in results.items():
            if ts is None:
                print(f"  {name:50s} not installed")
            else:
                med = statistics.median(ts)
                print(f"  {name:50s} median {med:6.2f} s  ({total / 1e6 / med:6.1f} MB/s)")
        base = statistics.median(results["floor: sha256+gunzip+untar (local, 3 at a time)"])
        ours = statistics.median(results["agentd store pull+unpack"])
        print(f"  agentd / floor = {ours / base:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
