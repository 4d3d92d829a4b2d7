"""Shared set-up for tests that run pods through a real agentd: a private CNI
network (own bridge, subnet, host-local dataDir and netns pin dir under the
test's temp dir, never the default agentd0/10.88), busybox images served by a
loopback docker-registry, and clean-up of everything pods leave on the host
(pods, bridge, the pin dir's mount)."""
import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
from registry_harness import ImageBuilder, Registry  # noqa: E402

# Exit codes agentctl uses (sysexits).
EX_USAGE = 64
EX_DATAERR = 65


def wait_for(fn, what, timeout=15):
    """fn()'s first true value within timeout seconds (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def shim_of(pid):
    """The agentd-shim that is pid's parent (a container's or infra's init)."""
    shim = int(Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[1])
    assert os.readlink("/proc/%d/exe" % shim).startswith("/memfd:agentd-shim"), shim
    return shim


def run(*args, check=True):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check)


def write_network(work, name, bridge, subnet, portmap=False):
    """A CNI conflist of the test's own and an agentd.conf that points at it;
    returns the agentd.conf path."""
    conf = work / "cni"
    conf.mkdir(exist_ok=True)
    plugins = [{"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "dataDir": str(work / "ipam"),
                         "ranges": [[{"subnet": subnet}]]}}]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    (conf / "10-test.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "%s-%d" % (name, os.getpid()), "plugins": plugins}))
    cfgfile = work / "agentd.conf"
    cfgfile.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (conf, work / "netns"))
    return cfgfile


def new_agentd(work, name, env=None, root=None, state=None):
    """An agentd (not started) on the network of write_network(); `root`,
    `state`: its root or state dir elsewhere than under work/name (e.g. on
    a small disk)."""
    e = {"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")}
    e.update(env or {})
    a = H.Agentd(workdir=str(work / name), extra_args=["--config", str(work / "agentd.conf")],
                 env=e)
    if root is not None:
        os.makedirs(root, exist_ok=True)
        a.args[a.args.index("--root") + 1] = a.root = str(root)
    if state is not None:
        os.makedirs(state, exist_ok=True)
        a.args[a.args.index("--state") + 1] = a.state = str(state)
        a.sock = os.path.join(a.state, "agentd.sock")
        a.args[a.args.index("--listen") + 1] = a.sock
    return a


def agentd_on(work, name, conf_dir):
    """An agentd (not started) with its own dirs under work/name whose CNI
    networks come from conf_dir."""
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "agentd.conf"
    cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n" % (conf_dir, d / "netns"))
    return H.Agentd(workdir=str(d / "agentd"), extra_args=["--config", str(cfg)],
                    env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")})


def remove_all_pods(pb, a):
    """Pods outlive agentd by design: remove whatever a failed test left."""
    if not a.alive():
        return
    with a.unix_channel() as ch:
        stub = pb.api_grpc.RuntimeServiceStub(ch)
        for p in stub.ListPodSandbox(pb.api.ListPodSandboxRequest(), timeout=60).items:
            stub.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=p.id),
                                  timeout=120)


def cgroup_dirs(controller, name):
    """Every cgroup called `name` in a v1 controller's hierarchy. os.walk,
    not Path.glob: other agentds on the host remove cgroups meanwhile, and a
    directory that vanishes mid-walk is skipped rather than an error."""
    for top, dirs, _ in os.walk(os.path.join("/sys/fs/cgroup", controller)):
        if name in dirs:
            yield os.path.join(top, name)


def remove_empty_cgroup_parents(name="agentd"):
    """agentd's default cgroup parent, in every v1 hierarchy (and v2), once
    nothing is left in it: rmdir fails harmlessly while another agentd on the
    host still has containers there."""
    for d in Path("/sys/fs/cgroup").glob("*/" + name):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        Path("/sys/fs/cgroup", name).rmdir()
    except OSError:
        pass


def remove_network(work, bridge):
    run("ip", "link", "del", bridge, check=False)
    # libadcni makes the pin dir a shared mount point (as `ip netns` does).
    if str(work / "netns") in Path("/proc/self/mountinfo").read_text():
        run("umount", work / "netns", check=False)


@contextlib.contextmanager
def pod_agentd(work, pb, name, bridge, subnet, portmap=False, env=None, root=None, state=None):
    """Starts agentd on a private network; on exit removes its pods, stops it
    and removes the network."""
    write_network(work, name, bridge, subnet, portmap)
    a = new_agentd(work, "agentd", env, root, state)
    a.start()
    try:
        yield a
    finally:
        try:
            remove_all_pods(pb, a)
        finally:
            try:
                a.stop()
            finally:
                a.kill()
                remove_network(work, bridge)
                remove_empty_cgroup_parents()


@contextlib.contextmanager
def busybox_registry(work, path):
    """A loopback registry serving busybox-static as `path` (name:tag)."""
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    with Registry(work) as reg:
        reg.push(b, "base", path, fmt="oci")
        yield reg


def busybox_pod_fixtures(name, bridge, subnet, image_path):
    """The module fixtures of a test of pods on busybox: registry (busybox as
    image_path), daemon (agentd on its own network) and image (the pulled
    reference). Assign them to the module's names registry, daemon and image."""
    @pytest.fixture(scope="module")
    def registry(work):
        with busybox_registry(work, image_path) as reg:
            yield reg

    @pytest.fixture(scope="module")
    def daemon(work, pb, registry):
        with pod_agentd(work, pb, name, bridge, subnet) as a:
            yield a

    @pytest.fixture(scope="module")
    def image(pb, daemon, registry):
        return pull(pb, daemon, "%s/%s" % (registry.host, image_path))

    return registry, daemon, image


def pull(pb, daemon, ref):
    with daemon.unix_channel() as ch:
        pb.api_grpc.ImageServiceStub(ch).PullImage(
            pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=120)
    return ref


def ctl(daemon, *args):
    r = subprocess.run([H.agentctl_binary(), "-e", "unix://" + daemon.sock] +
                       [str(a) for a in args], capture_output=True, text=True, timeout=150)
    # agentctl is built with the sanitizers too: error paths must be clean as well.
    for m in ("runtime error:", "LeakSanitizer", "AddressSanitizer"):
        assert m not in r.stderr, (args, r.stderr)
    return r


def spawn(daemon, *args):
    """agentctl running in the background (logs -f, events)."""
    return subprocess.Popen([H.agentctl_binary(), "-e", "unix://" + daemon.sock] +
                            [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p, timeout=30):
    """The output of a spawn()ed agentctl once it ends (killed if it does not)."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("agentctl did not end: %r %r" % (out, err))
    for m in ("runtime error:", "LeakSanitizer", "AddressSanitizer"):
        assert m not in err, err
    return out, err


def ok(daemon, *args):
    r = ctl(daemon, *args)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


@contextlib.contextmanager
def running_pod(daemon, cfg):
    """`agentctl runp CFG`; yields (pod id, cfg); stops and removes it after."""
    pod_id = ok(daemon, "runp", cfg).strip()
    try:
        yield pod_id, cfg
    finally:
        ctl(daemon, "stopp", pod_id)
        ctl(daemon, "rmp", pod_id)


def created_container(daemon, pod, cfg, start=True):
    """`agentctl create POD CFG POD_CFG` (and `start`) in a running_pod()."""
    pod_id, pod_cfg = pod
    ctr = ok(daemon, "create", pod_id, cfg, pod_cfg).strip()
    if start:
        ok(daemon, "start", ctr)
    return ctr


def store_problems(a):
    """Blobs whose content is not their name, anything left in tmp/, a DB
    that fails integrity_check."""
    bad = []
    blobs = Path(a.root, "blobs", "sha256")
    if blobs.exists():
        for b in blobs.iterdir():
            h = hashlib.sha256()
            with open(b, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != b.name:
                bad.append("blob %s holds %s" % (b.name, h.hexdigest()))
    tmp = Path(a.root, "tmp")
    if tmp.exists():
        bad += ["tmp/" + p.name for p in tmp.iterdir() if not p.name.startswith("ingest-")]
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(a.root, "agentd.db"), uri=True)
    try:
        res = db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()
    if res != [("ok",)]:
        bad.append("integrity_check: %r" % res)
    return bad
