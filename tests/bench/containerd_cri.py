"""A private containerd 1.6 with its CRI plugin, for the benchmarks that run
agentd against it (pod/, streaming/): root, state, runc root and the gRPC/ttrpc
sockets under the bench's work dir (a tmpfs), the overlayfs snapshotter, the
runc v2 shim with cgroupfs, the CRI plugin on the bench's private CNI conf dir,
images pulled from Debian's docker-registry on loopback (a mirror over plain
HTTP) and its sandbox image from there too, so that it works offline. The CRI
streaming server keeps containerd's defaults (127.0.0.1, an ephemeral port,
no TLS). See tests/bench/README.md (pod/) for the two host-specific settings."""
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path


def write_cni(work, bridge, subnet):
    """work/cni: a conflist of the bench's own (bridge, subnet, host-local
    dataDir under work, portmap), shared by agentd and containerd."""
    d = Path(work) / "cni"
    d.mkdir()
    (d / "10-bench.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "agentd-bench-%d" % os.getpid(),
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "dataDir": str(Path(work) / "ipam"),
                              "ranges": [[{"subnet": subnet}]]}},
                    {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    return d


@contextlib.contextmanager
def busybox_registry(work):
    """Debian's docker-registry on loopback serving busybox_images() as
    bench/box:v1 and bench/pause:v1; yields (registry, box ref, pause ref).
    Needs tests/integration on sys.path (registry_harness)."""
    from registry_harness import ImageBuilder, Registry
    b = ImageBuilder(Path(work) / "oci")
    busybox_images(b)
    with Registry(work) as reg:
        reg.push(b, "box", "bench/box:v1", fmt="oci")
        reg.push(b, "pause", "bench/pause:v1", fmt="oci")
        yield reg, reg.host + "/bench/box:v1", reg.host + "/bench/pause:v1"


def busybox_images(builder):
    """Tags "box" (busybox-static) and "pause" (`sleep 1000000` as 65534) in
    an ImageBuilder, both with a PATH: umoci gives none, and containerd then
    cannot find `sleep`."""
    builder.busybox("box")
    builder.busybox("pause")

    def umoci(*args):
        subprocess.run(["umoci", "config"] + list(args), check=True, capture_output=True)
    umoci("--image", "%s:pause" % builder.path, "--clear", "config.cmd", "--config.entrypoint",
          "/bin/sleep", "--config.cmd", "1000000", "--config.user", "65534:65534")
    for t in ("box", "pause"):
        umoci("--image", "%s:%s" % (builder.path, t), "--config.env", "PATH=/bin")


def procs(match):
    """PIDs whose (exe, cmdline, parent pid) satisfy match and that have a
    child (a shim with its container; not one still exiting after a removed
    pod)."""
    ppids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppids[int(p)] = int(open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                pass
    parents = set(ppids.values())
    out = []
    for pid, ppid in ppids.items():
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
            cmd = open("/proc/%d/cmdline" % pid, "rb").read().decode(errors="replace")
        except OSError:
            continue
        if match(exe, cmd, ppid) and pid in parents:
            out.append(pid)
    return out


class ContainerdSide:
    """containerd started under work/ctd; sock is its "unix://" endpoint."""
    name = "containerd"

    def __init__(self, work, registry_host, pause_ref, cni_dir):
        d = Path(work) / "ctd"
        d.mkdir()
        self.dir = d
        sock = str(d / "containerd.sock")
        (d / "config.toml").write_text("""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_selinux = false
  # This host refuses lowering oom_score_adj (CRI gives pause -998): clamp it
  # to containerd's own, as in an unprivileged/nested setup.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]
    endpoint = ["http://{host}"]
  [plugins."io.containerd.grpc.v1.cri".registry.configs."{host}".tls]
    insecure_skip_verify = true
""".format(d=d, sock=sock, host=registry_host, pause=pause_ref, cni=cni_dir,
           runc=os.environ.get("BENCH_RUNC", "/usr/sbin/runc")))
        self.log = open(d / "containerd.log", "wb")
        self.p = subprocess.Popen(["/usr/bin/containerd", "--config", str(d / "config.toml"),
                                   "--log-level", os.environ.get("BENCH_CTD_LOG", "warn")],
                                  stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                  start_new_session=True)
        self.pid = self.p.pid
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("containerd did not start:\n" + self.log_tail())
            time.sleep(0.1)
        self.sock = "unix://" + sock

    def log_tail(self, n=3000):
        return (self.dir / "containerd.log").read_text()[-n:]

    def shims(self):
        addr = self.sock[len("unix://"):]
        return procs(lambda exe, cmd, ppid: exe.endswith("containerd-shim-runc-v2")
                     and addr in cmd)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        # Whatever containerd left mounted under its root/state (snapshots, shm).
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            mp = line.split()[4]
            if mp.startswith(str(self.dir) + "/"):
                subprocess.run(["umount", "-l", mp], capture_output=True)
