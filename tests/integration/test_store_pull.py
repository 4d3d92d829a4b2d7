"""libadstore against a real docker-registry on loopback (plain, htpasswd basic
auth, TLS with a test CA), through the store_probe CLI built with the tests.
Images are built offline from busybox-static (registry_harness.py)."""
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from registry_harness import ImageBuilder, Registry, free_port  # noqa: E402

BUILD = Path(os.environ.get("AGENTD_BUILD_DIR", Path(__file__).parents[2] / "build"))
PROBE = BUILD / "tests" / "unit" / "store_probe"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")


def probe(store, *args, check=True, timeout=120):
    cmd = [str(PROBE), "--root", str(store / "root"), "--db", str(store / "state.db"),
           "--retries", "1", "--stall", "10"] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd}: rc {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}")
    return p


def fields(out, key):
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(key + " ")]


@pytest.fixture(scope="module", autouse=True)
def probe_built():
    if not PROBE.exists():
        pytest.skip(f"{PROBE} not built")


@pytest.fixture(scope="module")
def layout(work):
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    # whiteout of /gone, opaque /data with only /data/new
    b.append_layer("base", "wh", [("data", "dir", None), ("data/.wh..wh..opq", "file", b""),
                                  ("data/new", "file", b"new\n"), (".wh.gone", "file", b"")])
    b.append_layer("wh", "zst", [("z", "file", b"zstd layer\n")], compress="zstd")
    b.busybox("arm", marker="arm64", arch="arm64")
    b.break_diff_id("wh", "baddiff")
    # 40 layers: the lowerdir list outgrows a page of mount options.
    prev = "base"
    for i in range(40):
        b.append_layer(prev, "tall", [(f"layer{i:02d}", "file", f"{i}\n".encode())])
        prev = "tall"
    b.append_layer("base", "evil", [("../../escaped", "file", b"out\n")])
    b.multiarch("multi", {"amd64": "base", "arm64": "arm"})
    # A big incompressible layer, so that a pull can be killed midway.
    b.append_layer("base", "big", [("big", "file", os.urandom(32 << 20))], compress=None)
    return b


@pytest.fixture(scope="module")
def plain(work, layout):
    with Registry(work) as reg:
        reg.push(layout, "base", "test/base:v2s2", fmt="v2s2")
        reg.push(layout, "base", "test/base:oci", fmt="oci")
        reg.push(layout, "wh", "test/wh:v1", fmt="oci")
        reg.push(layout, "zst", "test/zst:v1", fmt="oci")
        reg.push(layout, "multi", "test/multi:v1", all_images=True)
        reg.push(layout, "big", "test/big:v1", fmt="oci")
        reg.push(layout, "baddiff", "test/baddiff:v1", fmt="oci")
        reg.push(layout, "evil", "test/evil:v1", fmt="oci")
        reg.push(layout, "tall", "test/tall:v1", fmt="oci")
        yield reg


@pytest.fixture
def store(tmp_path):
    yield tmp_path
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts, "a test left a mount behind"


def manifest_media_type(store, repo_digest):
    digest = repo_digest.split("@", 1)[1]
    blob = store / "root" / "blobs" / "sha256" / digest[7:]
    # The config descriptor's type tells the formats apart (OCI manifests
    # may omit their own mediaType).
    return json.loads(blob.read_text())["config"]["mediaType"]


def test_pull_v2s2_and_oci(plain, store):
    for tag, mt, state in [("v2s2", "application/vnd.docker.container.image.v1+json", "done"),
                           ("oci", "application/vnd.oci.image.config.v1+json", "exists")]:
        ref = f"{plain.host}/test/base:{tag}"
        p = probe(store, "pull", ref)
        # progress: the layer's end; the second pull finds the same layer in place
        assert f" {state} " in p.stderr, p.stderr
        out = probe(store, "get", ref).stdout
        assert ref in fields(out, "tag")
        assert mt in [manifest_media_type(store, d) for d in fields(out, "digest")]
        layer = fields(out, "layer")[0]
        d = store / "root" / "layers" / layer[7:]
        assert (d / "bin" / "busybox").is_file()
        assert (d / "etc" / "marker").read_text() == "base\n"
    # Both pushes have the same config: one image with two tags.
    out = probe(store, "list").stdout
    assert len(fields(out, "id")) == 1
    assert len(fields(out, "tag")) == 2


def test_multiarch_index(plain, store):
    ref = f"{plain.host}/test/multi:v1"
    out = probe(store, "pull", ref).stdout
    layer = fields(probe(store, "get", ref).stdout, "layer")[0]
    assert (store / "root" / "layers" / layer[7:] / "etc" / "marker").read_text() == "base\n"
    other = store / "arm"
    other.mkdir()
    probe(other, "--platform", "linux/arm64", "pull", ref)
    img = probe(other, "get", ref).stdout
    layer = fields(img, "layer")[0]
    assert (other / "root" / "layers" / layer[7:] / "etc" / "marker").read_text() == "arm64\n"
    assert fields(img, "id") != fields(out, "pulled")
    # The repo digest is the index's, so pulling by it finds the image again.
    rd = fields(img, "digest")[0]
    assert json.loads((other / "root" / "blobs" / "sha256" / rd.split("@sha256:")[1])
                      .read_text())["manifests"]
    p = probe(other, "--platform", "linux/s390x", "pull", ref, check=False)
    assert p.returncode == 1 and "ERROR not found" in p.stdout and "s390x" in p.stdout


def test_whiteouts_zstd_and_rootfs(plain, store):
    ref = f"{plain.host}/test/zst:v1"
    probe(store, "pull", ref)
    img = probe(store, "get", ref).stdout
    layers = fields(img, "layer")
    assert len(layers) == 3
    wh = store / "root" / "layers" / layers[1][7:]
    st = os.lstat(wh / "gone")
    assert (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0  # overlay whiteout
    assert os.getxattr(wh / "data", "trusted.overlay.opaque") == b"y"
    merged = Path(fields(probe(store, "mount", ref, "c1").stdout, "rootfs")[0])
    assert sorted(os.listdir(merged)) == ["bin", "data", "etc", "z"]
    assert os.listdir(merged / "data") == ["new"]
    assert (merged / "z").read_text() == "zstd layer\n"
    assert subprocess.run([merged / "bin" / "busybox", "echo", "ok"], capture_output=True,
                          text=True).stdout == "ok\n"
    (merged / "written").write_text("upper\n")
    assert (store / "root" / "containers" / "c1" / "upper" / "written").exists()
    # Mounting again is idempotent; the image is in use and cannot be removed.
    probe(store, "mount", ref, "c1")
    p = probe(store, "rm", ref, check=False)
    assert p.returncode == 1 and "ERROR failed precondition" in p.stdout and "c1" in p.stdout
    probe(store, "umount", "c1")
    assert str(merged) not in Path("/proc/self/mountinfo").read_text()
    assert not (store / "root" / "containers" / "c1").exists()
    probe(store, "umount", "c1")  # absent: not an error
    probe(store, "rm", ref)


def test_unknown_tag_and_repo(plain, store):
    for ref in [f"{plain.host}/test/base:nope", f"{plain.host}/test/nothere:v1"]:
        p = probe(store, "pull", ref, check=False)
        assert p.returncode == 1
        assert p.stdout.startswith("ERROR not found"), p.stdout
        assert ref in p.stdout
    p = probe(store, "pull", "Bad/Ref", check=False)
    assert p.stdout.startswith("ERROR invalid argument") and '"Bad/Ref"' in p.stdout
    p = probe(store, "get", f"{plain.host}/test/base:nope", check=False)
    assert p.stdout.startswith("ERROR not found")


def test_registry_down(store):
    host = f"127.0.0.1:{free_port()}"
    t = time.time()
    p = probe(store, "pull", f"{host}/x/y:z", check=False)
    assert p.returncode == 1
    assert p.stdout.startswith("ERROR unavailable") and host in p.stdout, p.stdout
    assert time.time() - t < 20


def test_mirror_before_upstream(plain, store):
    # The upstream name does not resolve; the mirror serves the same paths.
    ref = "registry.invalid/test/base:oci"
    probe(store, "--mirror", f"registry.invalid=http://{plain.host}", "pull", ref)
    assert fields(probe(store, "get", ref).stdout, "tag") == [ref]


def test_remove_and_gc_free_only_unshared(plain, store):
    base, wh = f"{plain.host}/test/base:oci", f"{plain.host}/test/wh:v1"
    probe(store, "pull", base)
    probe(store, "pull", wh)
    layers = store / "root" / "layers"
    base_layer = fields(probe(store, "get", base).stdout, "layer")[0][7:]
    wh_layers = [x[7:] for x in fields(probe(store, "get", wh).stdout, "layer")]
    assert wh_layers[0] == base_layer and len(os.listdir(layers)) == 2
    probe(store, "rm", wh)
    assert os.listdir(layers) == [base_layer]
    probe(store, "rm", wh)  # idempotent
    img = probe(store, "get", base).stdout
    blobs = set(os.listdir(store / "root" / "blobs" / "sha256"))
    assert fields(img, "id")[0][7:] in blobs
    probe(store, "rm", fields(img, "id")[0][7:19])  # by a short id
    assert os.listdir(layers) == []
    assert os.listdir(store / "root" / "blobs" / "sha256") == []
    assert probe(store, "list").stdout == ""
    assert "freed 0" in probe(store, "gc").stdout


def test_usage(plain, store):
    probe(store, "pull", f"{plain.host}/test/base:oci")
    out = probe(store, "usage").stdout
    assert int(fields(out, "used")[0]) > 1 << 20  # busybox, unpacked and compressed
    assert int(fields(out, "total")[0]) >= int(fields(out, "free")[0]) > 0


def test_kill_mid_pull_then_repeat(plain, store):
    ref = f"{plain.host}/test/big:v1"
    cmd = [str(PROBE), "--root", str(store / "root"), "--db", str(store / "state.db"),
           "--parallel", "1", "pull", ref]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    for line in proc.stderr:
        parts = line.split()
        # progress i/n digest state done/total: kill once the big layer is underway
        if len(parts) == 5 and parts[1] == "2/2" and parts[3] == "downloading" \
                and int(parts[4].split("/")[0]) > 0:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait()
    assert killed, "the pull ended before it could be killed"
    # The store holds only complete, verified blobs; the image is not recorded.
    for b in os.listdir(store / "root" / "blobs" / "sha256"):
        data = (store / "root" / "blobs" / "sha256" / b).read_bytes()
        assert hashlib.sha256(data).hexdigest() == b
    assert probe(store, "get", ref, check=False).stdout.startswith("ERROR not found")
    probe(store, "pull", ref)
    assert os.listdir(store / "root" / "tmp") == []
    layer = fields(probe(store, "get", ref).stdout, "layer")[1]
    assert (store / "root" / "layers" / layer[7:] / "big").stat().st_size == 32 << 20


@pytest.fixture(scope="module")
def authreg(work, layout):
    with Registry(work, auth=("alice", "s3cret")) as reg:
        reg.push(layout, "base", "private/base:v1", fmt="v2s2")
        yield reg


def test_basic_auth(authreg, store):
    ref = f"{authreg.host}/private/base:v1"
    p = probe(store, "pull", ref, check=False)
    assert p.stdout.startswith("ERROR unauthenticated") and authreg.host in p.stdout, p.stdout
    p = probe(store, "--user", "alice", "--password", "wrong", "pull", ref, check=False)
    assert p.stdout.startswith("ERROR unauthenticated"), p.stdout
    probe(store, "--user", "alice", "--password", "s3cret", "pull", ref)
    # The CRI "auth" field and an auth.json file work as well.
    other = store / "b"
    other.mkdir()
    b64 = base64.b64encode(b"alice:s3cret").decode()
    probe(other, "--auth", b64, "pull", ref)
    authfile = store / "auth.json"
    authfile.write_text(json.dumps({"auths": {authreg.host: {"auth": b64}}}))
    third = store / "c"
    third.mkdir()
    # Empty request fields (CRI sends them all) count as absent: the file is used.
    probe(third, "--auth-file", authfile, "--user", "", "--password", "", "pull", ref)


@pytest.fixture(scope="module")
def tlsreg(work, layout):
    with Registry(work, tls=True) as reg:
        reg.push(layout, "base", "secure/base:v1", fmt="oci")
        yield reg


def test_tls_with_certs_d(tlsreg, store):
    ref = f"{tlsreg.host}/secure/base:v1"
    # Without the CA the loopback default is plain HTTP, which this server refuses.
    p = probe(store, "pull", ref, check=False)
    assert p.returncode == 1
    # A certs.d dir holding only another host's CA: TLS, but unverifiable.
    wrong = store / "certs-wrong"
    (wrong / tlsreg.host).mkdir(parents=True)
    p = probe(store, "--certs-dir", wrong, "pull", ref, check=False)
    assert p.stdout.startswith("ERROR unavailable") and tlsreg.host in p.stdout, p.stdout
    probe(store, "--certs-dir", tlsreg.certs_dir, "pull", ref)
    assert fields(probe(store, "get", ref).stdout, "tag") == [ref]
    # insecure: TLS without verification, no CA needed.
    other = store / "insecure"
    other.mkdir()
    probe(other, "--insecure", tlsreg.host, "pull", ref)


def test_bearer_token_flow_and_redirect(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, creds=("bob", "pw")) as px:
        ref = f"{px.host}/test/wh:v1"
        p = probe(store, "--user", "bob", "--password", "nope", "pull", ref, check=False)
        assert p.stdout.startswith("ERROR unauthenticated"), p.stdout
        assert "bad user or password" in p.stdout and px.host in p.stdout
        probe(store, "--user", "bob", "--password", "pw", "pull", ref)
        assert {"service": "agentd-test", "scope": "repository:test/wh:pull"} in px.token_requests
        # Blobs came from the other origin, which never saw the credentials.
        assert px.storage_requests
        assert all(auth is None for _, auth, _ in px.storage_requests)
        assert px.storage_host not in str(px.token_requests)


def test_token_refused_midway_is_refreshed(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain) as px:
        ref = f"{px.host}/test/wh:v1"
        layers = plain.manifest("test/wh", "v1")["layers"]
        px.faults[layers[1]["digest"]] = ["expire"]
        probe(store, "pull", ref)
        assert len(px.token_requests) >= 2  # anonymous tokens, the second after the 401


def test_retry_5xx_and_resume_after_reset(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain) as px:
        ref = f"{px.host}/test/big:v1"
        big = plain.manifest("test/big", "v1")["layers"][1]["digest"]
        px.faults[big] = ["503", "reset"]
        probe(store, "--retries", "3", "pull", ref)
        ranges = [r for d, _, r in px.storage_requests if d == big]
        # First try: 503; second: half then a reset; third resumes with a Range.
        assert px.blob_requests[big] == 3
        assert ranges[0] is None and ranges[-1] and ranges[-1].startswith("bytes=")
        assert int(ranges[-1][6:-1]) > 0
        assert os.listdir(store / "root" / "tmp") == []


def test_stall_timeout(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain) as px:
        ref = f"{px.host}/test/base:oci"
        layer = plain.manifest("test/base", "oci")["layers"][0]["digest"]
        px.faults[layer] = ["stall", "stall"]
        t = time.time()
        p = probe(store, "--stall", "1", "pull", ref, check=False)
        assert p.stdout.startswith("ERROR unavailable") and "stalled" in p.stdout, p.stdout
        assert px.host in p.stdout
        assert time.time() - t < 30
        assert os.listdir(store / "root" / "tmp") == []
        assert os.listdir(store / "root" / "layers") == []


def test_concurrent_pulls_share_downloads(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, redirect=False) as px:
        refs = [f"{px.host}/test/base:oci", f"{px.host}/test/wh:v1", f"{px.host}/test/zst:v1"]
        out = probe(store, "pull", *refs).stdout
        assert len(fields(out, "pulled")) == 3
        base = plain.manifest("test/base", "oci")["layers"][0]["digest"]
        assert px.blob_requests[base] == 1, px.blob_requests


def test_connections_are_reused(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, redirect=False) as px:
        probe(store, "--parallel", "2", "pull", f"{px.host}/test/tall:v1")
        layers = plain.manifest("test/tall", "v1")["layers"]
        assert sum(px.blob_requests.values()) == len(layers) + 1  # + the config
        # The manifest, token and config requests, then two layer transfers
        # at a time: one connection each, kept alive, whatever the request count.
        assert px.connections["front"] <= 3, px.connections


def test_http2_registry_gets_one_multiplexed_connection(work, layout, store):
    import re
    with Registry(work, tls=True, access_log=True) as reg:
        reg.push(layout, "tall", "secure/tall:v1", fmt="oci")
        probe(store, "--certs-dir", reg.certs_dir, "pull", f"{reg.host}/secure/tall:v1")
        log = (reg.dir / "registry.log").read_text().splitlines()
    ours = [line for line in log if "response completed" in line and "useragent=agentd/" in line]
    # manifest + config + 41 layers, 3 of them at a time
    assert len(ours) >= 43, len(ours)
    assert {re.search(r'remoteaddr="([^"]+)"', line).group(1) for line in ours} == \
        {re.search(r'remoteaddr="([^"]+)"', ours[0]).group(1)}
    access = [line for line in log if '"agentd/' in line and "GET /v2/" in line]
    assert access and all(" HTTP/2.0\" 200 " in line for line in access), access[:3]


def test_sigterm_cancels_pull_and_stores_nothing(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, redirect=False) as px:
        ref = f"{px.host}/test/big:v1"
        big = plain.manifest("test/big", "v1")["layers"][1]["digest"]
        px.faults[big] = ["stall"]  # half the blob, then silence
        cmd = [str(PROBE), "--root", str(store / "root"), "--db", str(store / "state.db"),
               "--stall", "60", "pull", ref]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while px.blob_requests[big] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert px.blob_requests[big] == 1, px.blob_requests
            time.sleep(0.5)  # in the middle of the blob, which has gone silent
            t = time.monotonic()
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
            elapsed = time.monotonic() - t
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 1 and out.startswith("ERROR cancelled"), (out, err[-2000:])
        assert elapsed < 3, elapsed  # not the 8 s of the stall, nor the 60 s timeout
        root = store / "root"
        assert os.listdir(root / "tmp") == []
        assert big[7:] not in os.listdir(root / "blobs" / "sha256")
        assert probe(store, "list").stdout == ""
        probe(store, "pull", ref)  # nothing half done stands in the way
        assert fields(probe(store, "get", ref).stdout, "tag") == [ref]


@pytest.fixture(scope="module")
def demo(work):
    out = work / "demo"
    subprocess.run(["sh", str(Path(__file__).parents[2] / "deploy" / "demo-image" / "build.sh"),
                    str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_demo_image_builds_and_runs(plain, store, demo):
    out = demo
    assert (out / "demo-image.tar").stat().st_size > 1 << 20
    layout = ImageBuilder(out / "oci")
    plain.push(layout, "latest", "agentd/demo:latest")
    ref = f"{plain.host}/agentd/demo:latest"
    probe(store, "pull", ref)
    cfg_digest = fields(probe(store, "get", ref).stdout, "id")[0]
    cfg = json.loads((store / "root" / "blobs" / "sha256" / cfg_digest[7:]).read_text())
    assert cfg["config"]["Cmd"] == ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
    merged = Path(fields(probe(store, "mount", ref, "demo").stdout, "rootfs")[0])
    try:
        assert os.readlink(merged / "bin" / "httpd") == "busybox"
        assert "Hello from agentd" in (merged / "www" / "index.html").read_text()
        r = subprocess.run(["chroot", str(merged), "/bin/sh", "-c", "echo from-demo"],
                           capture_output=True, text=True)
        assert r.stdout == "from-demo\n"
    finally:
        probe(store, "umount", "demo")


def test_pull_by_digest(plain, store):
    m = plain.manifest("test/base", "oci")
    manifest_digest = "sha256:" + hashlib.sha256(
        plain.get("/v2/test/base/manifests/oci",
                  accept="application/vnd.oci.image.manifest.v1+json")).hexdigest()
    ref = f"{plain.host}/test/base@{manifest_digest}"
    out = probe(store, "pull", ref).stdout
    img = probe(store, "get", ref).stdout
    assert fields(img, "id") == fields(out, "pulled")
    assert fields(img, "tag") == []  # a digest pull names no tag
    assert fields(probe(store, "get", manifest_digest).stdout, "id") == fields(out, "pulled")
    assert fields(img, "layer")[0] == json.loads(
        (store / "root" / "blobs" / "sha256" / m["config"]["digest"][7:]).read_text()
    )["rootfs"]["diff_ids"][0]
    # By the index digest of a multi-arch image; a digest the registry lacks.
    idx = "sha256:" + hashlib.sha256(plain.get(
        "/v2/test/multi/manifests/v1",
        accept="application/vnd.oci.image.index.v1+json")).hexdigest()
    probe(store, "pull", f"{plain.host}/test/multi@{idx}")
    p = probe(store, "pull", f"{plain.host}/test/base@sha256:{'1' * 64}", check=False)
    assert p.stdout.startswith("ERROR not found"), p.stdout


def test_corrupt_blob_is_rejected_and_nothing_kept(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, redirect=False) as px:
        layer = plain.manifest("test/wh", "v1")["layers"][1]["digest"]
        px.faults[layer] = ["corrupt"]
        p = probe(store, "pull", f"{px.host}/test/wh:v1", check=False)
        assert p.stdout.startswith("ERROR data loss"), p.stdout
        assert layer in p.stdout and p.stdout.count("sha256:") >= 3  # expected and got
        assert layer[7:] not in os.listdir(store / "root" / "blobs" / "sha256")
        assert os.listdir(store / "root" / "tmp") == []
        assert probe(store, "list").stdout == ""
        probe(store, "pull", f"{px.host}/test/wh:v1")  # the next try is clean


def test_diff_id_mismatch(plain, store):
    p = probe(store, "pull", f"{plain.host}/test/baddiff:v1", check=False)
    assert p.stdout.startswith("ERROR data loss") and "sha256:" + "0" * 64 in p.stdout, p.stdout
    assert os.listdir(store / "root" / "tmp") == []
    assert probe(store, "list").stdout == ""


def test_path_traversal_layer_is_contained(plain, store):
    p = probe(store, "pull", f"{plain.host}/test/evil:v1", check=False)
    assert not (store / "escaped").exists() and not (store / "root" / "escaped").exists()
    if p.returncode == 0:
        # Contained: the entry landed inside the layer dir.
        layer = fields(probe(store, "get", f"{plain.host}/test/evil:v1").stdout, "layer")[1]
        assert (store / "root" / "layers" / layer[7:] / "escaped").read_text() == "out\n"
    else:
        assert p.stdout.startswith("ERROR invalid argument"), p.stdout
        assert probe(store, "list").stdout == ""
    assert os.listdir(store / "root" / "tmp") == []


def test_registry_token_from_caller(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, creds=("x", "y")) as px:
        px.tokens.add("given-by-kubelet")
        probe(store, "--registry-token", "given-by-kubelet", "pull", f"{px.host}/test/base:oci")
        assert px.token_requests == []  # used as is, no token server round trip


def test_tls_client_certificate(work, layout, store):
    with Registry(work, client_certs=True) as reg:
        reg.push(layout, "base", "mtls/base:v1", fmt="oci")
        ref = f"{reg.host}/mtls/base:v1"
        only_ca = store / "certs-ca-only"
        (only_ca / reg.host).mkdir(parents=True)
        shutil.copy(reg.certs_dir / reg.host / "ca.crt", only_ca / reg.host / "ca.crt")
        p = probe(store, "--certs-dir", only_ca, "pull", ref, check=False)
        assert p.stdout.startswith("ERROR unavailable") and reg.host in p.stdout, p.stdout
        probe(store, "--certs-dir", reg.certs_dir, "pull", ref)


def test_rootfs_with_many_layers(plain, store):
    ref = f"{plain.host}/test/tall:v1"
    probe(store, "--parallel", "8", "pull", ref)
    assert len(fields(probe(store, "get", ref).stdout, "layer")) == 41
    merged = Path(fields(probe(store, "mount", ref, "tall").stdout, "rootfs")[0])
    try:
        names = os.listdir(merged)
        assert all(f"layer{i:02d}" in names for i in range(40)) and "bin" in names
        line = [x for x in Path("/proc/self/mountinfo").read_text().splitlines()
                if f" {merged} " in x][0]
        assert "lowerdir=/proc/self/fd/" in line  # the long list went through fds
        assert (merged / "layer39").read_text() == "39\n"
    finally:
        probe(store, "umount", "tall")


def test_identity_token_refresh_grant(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain, creds=("x", "y")) as px:
        px.identity_token = "refresh-me"
        ref = f"{px.host}/test/base:oci"
        p = probe(store, "--identity-token", "wrong", "pull", ref, check=False)
        assert p.stdout.startswith("ERROR unauthenticated"), p.stdout
        probe(store, "--identity-token", "refresh-me", "pull", ref)
        grant = px.token_requests[-1]
        assert grant["grant_type"] == "refresh_token" and grant["scope"] == "repository:test/base:pull"
        assert grant["service"] == "agentd-test"


def test_load_save_roundtrip(demo, store):
    ids = set()
    for archive in ["demo-image.tar", "demo-image.oci.tar"]:
        out = probe(store, "load", demo / archive).stdout
        ids.update(fields(out, "loaded"))
    assert len(ids) == 1  # the same image either way
    img = probe(store, "get", "agentd/demo:latest").stdout
    assert fields(img, "tag") == ["docker.io/agentd/demo:latest"]
    assert fields(img, "id") == list(ids)
    saved = store / "saved.tar"
    probe(store, "save", saved, "agentd/demo")
    # Both readers take the saved file; a fresh store loads it to the same id.
    for transport in ["docker-archive", "oci-archive"]:
        subprocess.run(["skopeo", "inspect", f"{transport}:{saved}"], check=True,
                       capture_output=True)
    other = store / "other"
    other.mkdir()
    assert fields(probe(other, "load", saved).stdout, "loaded") == list(ids)
    merged = Path(fields(probe(other, "mount", "agentd/demo", "d1").stdout, "rootfs")[0])
    try:
        assert "Hello from agentd" in (merged / "www" / "index.html").read_text()
    finally:
        probe(other, "umount", "d1")
    p = probe(store, "save", store / "x.tar", "no/such:image", check=False)
    assert p.stdout.startswith("ERROR not found"), p.stdout


def test_import_rootfs_tar(store):
    src = store / "rootfs"
    (src / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", src / "bin" / "busybox")
    (src / "hello").write_text("imported\n")
    tgz = store / "rootfs.tgz"
    subprocess.run(["tar", "-C", src, "-czf", tgz, "."], check=True)
    out = probe(store, "import", tgz, "my/imported:v1").stdout
    img = probe(store, "get", "my/imported:v1").stdout
    assert fields(img, "id") == fields(out, "imported") and len(fields(img, "layer")) == 1
    merged = Path(fields(probe(store, "mount", "my/imported:v1", "i1").stdout, "rootfs")[0])
    try:
        assert (merged / "hello").read_text() == "imported\n"
    finally:
        probe(store, "umount", "i1")
    empty = store / "empty.tar"
    empty.write_bytes(b"")
    probe(store, "import", empty, "my/empty:v1")
    assert fields(probe(store, "get", "my/empty:v1").stdout, "layer") == []
    merged = Path(fields(probe(store, "mount", "my/empty:v1", "e1").stdout, "rootfs")[0])
    try:
        assert os.listdir(merged) == []
    finally:
        probe(store, "umount", "e1")


def test_load_bad_archives(store):
    import io
    import tarfile
    evil = store / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        ti = tarfile.TarInfo("../outside")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"x\n"))
    p = probe(store, "load", evil, check=False)
    assert p.stdout.startswith("ERROR invalid argument") and "outside" in p.stdout, p.stdout
    assert not (store / "root" / "outside").exists() and not (store / "outside").exists()
    # An oci-archive whose layer blob does not match its digest.
    layout = ImageBuilder(store / "oci")
    layout.busybox("t")
    m = json.loads(layout.blob(layout.descriptor("t")["digest"]))
    layer = layout.path / "blobs" / "sha256" / m["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0xFF
    layer.write_bytes(bytes(data))
    bad = store / "bad.tar"
    subprocess.run(["tar", "-C", layout.path, "-cf", bad, "."], check=True)
    p = probe(store, "load", bad, check=False)
    assert p.stdout.startswith("ERROR data loss"), p.stdout
    assert probe(store, "list").stdout == ""
    assert os.listdir(store / "root" / "tmp") == []
    p = probe(store, "load", store / "oci" / "index.json", check=False)
    assert p.stdout.startswith("ERROR invalid argument"), p.stdout


@pytest.mark.parametrize("parallel", [None, 2])
def test_parallel_layers_bounded(plain, store, parallel):
    from registry_harness import AuthProxy
    with AuthProxy(plain, redirect=False) as px:
        for layer in plain.manifest("test/tall", "v1")["layers"][:7]:
            px.faults[layer["digest"]] = ["slow"]
        args = ["--parallel", str(parallel)] if parallel else []
        probe(store, *args, "pull", f"{px.host}/test/tall:v1")
        assert px.max_active == (parallel or 3)  # the default is 3


def test_ipv6_loopback_is_plain_http(work, plain, store):
    with Registry(work, ipv6=True, storage=plain.storage) as reg:
        ref = f"{reg.host}/test/base:oci"
        probe(store, "pull", ref)
        assert fields(probe(store, "get", ref).stdout, "tag") == [ref]


def test_failed_mount_leaves_no_pin(plain, store):
    ref = f"{plain.host}/test/wh:v1"
    probe(store, "pull", ref)
    layer = fields(probe(store, "get", ref).stdout, "layer")[1]
    shutil.rmtree(store / "root" / "layers" / layer[7:])  # damage the store
    p = probe(store, "mount", ref, "c9", check=False)
    assert p.returncode == 1 and "c9" in p.stdout, p.stdout
    assert not (store / "root" / "containers" / "c9").exists()
    probe(store, "rm", ref)  # not pinned by the failed mount
    p = probe(store, "mount", "no/such:image", "c9", check=False)
    assert p.stdout.startswith("ERROR not found"), p.stdout
    p = probe(store, "mount", ref, "../escape", check=False)
    assert p.stdout.startswith("ERROR invalid argument"), p.stdout


def test_forbidden_is_permission_denied(plain, store):
    from registry_harness import AuthProxy
    with AuthProxy(plain) as px:
        px.deny = "requested access to the resource is denied"
        p = probe(store, "pull", f"{px.host}/test/base:oci", check=False)
        assert p.stdout.startswith("ERROR permission denied"), p.stdout
        assert px.deny in p.stdout and px.host in p.stdout


def test_disk_full_during_pull(plain, store):
    small = store / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", small], check=True)
    try:
        (small / "s").mkdir()
        p = probe(small / "s", "--db", store / "state.db", "pull", f"{plain.host}/test/big:v1",
                  check=False)
        assert p.stdout.startswith("ERROR resource exhausted"), p.stdout
        root = small / "s" / "root"
        assert os.listdir(root / "tmp") == []
        big = plain.manifest("test/big", "v1")["layers"][1]["digest"]
        assert big[7:] not in os.listdir(root / "blobs" / "sha256")
        assert probe(small / "s", "--db", store / "state.db", "list").stdout == ""
    finally:
        subprocess.run(["umount", small], check=True)
