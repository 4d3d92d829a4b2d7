#!/usr/bin/python3
"""Runs kubelet's pod teardown calls (teardown_sequences.py) against agentd
and against Debian's containerd side by side and prints, per sequence, the
calls whose answers differ (all of them with --all).

    tests/conformance/teardown_compare.py [--build DIR] [--all] [--only agentd|containerd]

As root. Both daemons get the same private CNI network (own bridge, subnet,
host-local dir) and pull busybox images from a docker-registry on loopback;
containerd runs with its own root, state, socket and config under the work
dir (a temp dir, removed afterwards), with runc. Needs python3-grpcio,
docker-registry, umoci, skopeo, busybox-static, containernetworking-plugins,
containerd and runc. --json FILE writes the raw answers."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE.parent / "bench"))
import agentd_harness as H  # noqa: E402
from containerd_cri import ContainerdSide  # noqa: E402
import teardown_sequences as T  # noqa: E402
from registry_harness import ImageBuilder, Registry  # noqa: E402

def run(*a, check=True):
    return subprocess.run([str(x) for x in a], capture_output=True, text=True, check=check)


class AgentdSide:
    def __init__(self, work):
        cfg = work / "agentd.conf"
        cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (work / "cni", work / "netns"))
        self.a = H.Agentd(workdir=str(work / "agentd"), debug_service=False,
                          extra_args=["--config", str(cfg)], log_level="warn",
                          env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime",
                                                           "agentd-shim")})
        self.a.start()
        self.target = "unix://" + self.a.sock
        self.work = work

    def stop(self):
        self.a.stop()
        if str(self.work / "netns") in Path("/proc/self/mountinfo").read_text():
            run("umount", self.work / "netns", check=False)


def side_answers(pb, target, image, pull, work, name):
    with grpc.insecure_channel(target) as ch:
        im = pb.api_grpc.ImageServiceStub(ch)
        for ref in pull:
            im.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=120)
        return T.run_all(pb.api_grpc.RuntimeServiceStub(ch), pb, image, work / "logs", name)


def table(results, show_all):
    a, c = results.get("agentd", {}), results.get("containerd", {})
    ndiff = 0
    for title, _, _ in T.SEQUENCES:
        ra, rc = dict(a.get(title, [])), dict(c.get(title, []))
        steps = [s for s, _ in (a.get(title) or c.get(title) or [])]
        steps += [s for s in rc if s not in ra]
        rows = [(s, ra.get(s, "-"), rc.get(s, "-")) for s in steps]
        diff = [r for r in rows if r[1] != r[2]]
        ndiff += len(diff)
        print("\n== %s: %d of %d calls differ" % (title, len(diff), len(rows)))
        shown = rows if show_all else diff
        if shown:
            w = max(len(r[0]) for r in shown)
            print("  %-*s  %-28s  %s" % (w, "call", "agentd", "containerd"))
            for s, x, y in shown:
                print("  %-*s  %-28s  %s%s" % (w, s, x, y, "" if x == y else "   <-"))
    return ndiff


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", help="agentd build dir (default: AGENTD_BUILD_DIR or the "
                    "first build dir of the tree)")
    ap.add_argument("--all", action="store_true", help="print every call, not only differences")
    ap.add_argument("--only", choices=("agentd", "containerd"))
    ap.add_argument("--json", help="write the answers here")
    args = ap.parse_args()
    if args.build:
        os.environ["AGENTD_BUILD_DIR"] = os.path.abspath(args.build)
    work = Path(tempfile.mkdtemp(prefix="teardown-"))
    bridge = "adtd%d" % (os.getpid() % 1000)
    subnet = "10.236.%d.0/24" % (os.getpid() % 250)
    (work / "stubs").mkdir()
    pb = H.load_stubs(str(work / "stubs"))
    (work / "cni").mkdir()
    (work / "cni" / "10-teardown.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "teardown-%d" % os.getpid(),
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "dataDir": str(work / "ipam"),
                              "ranges": [[{"subnet": subnet}]]}}]}))
    b = ImageBuilder(work / "oci")
    b.busybox("box")
    b.busybox("pause")
    run("umoci", "config", "--image", "%s:pause" % b.path, "--clear", "config.cmd",
        "--config.entrypoint", "/bin/sleep", "--config.cmd", "1000000")
    for t in ("box", "pause"):  # containerd wants PATH in the image
        run("umoci", "config", "--image", "%s:%s" % (b.path, t), "--config.env", "PATH=/bin")
    results = {}
    try:
        with Registry(work) as reg:
            reg.push(b, "box", "teardown/box:v1", fmt="oci")
            reg.push(b, "pause", "teardown/pause:v1", fmt="oci")
            image = "%s/teardown/box:v1" % reg.host
            pause = "%s/teardown/pause:v1" % reg.host
            if args.only in (None, "agentd"):
                s = AgentdSide(work)
                try:
                    results["agentd"] = side_answers(pb, s.target, image, [image], work, "a")
                finally:
                    s.stop()
            if args.only in (None, "containerd"):
                s = ContainerdSide(work, reg.host, pause, work / "cni")
                try:
                    results["containerd"] = side_answers(pb, s.sock, image, [image, pause],
                                                         work, "c")
                finally:
                    s.stop()
    finally:
        run("ip", "link", "del", bridge, check=False)
        run("rm", "-rf", "--one-file-system", work, check=False)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    n = table(results, args.all or len(results) < 2)
    if len(results) == 2:
        print("\n%d calls answer differently" % n)


if __name__ == "__main__":
    main()
