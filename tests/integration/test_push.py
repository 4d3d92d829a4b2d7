"""agentctl push and tag (agent.v1.ImageService PushImage, TagImage) against
Debian's docker-registry on loopback: blobs checked with HEAD, mounted across
repositories, uploaded whole or in PATCH chunks; the manifest as stored, as
OCI or as Docker v2s2; pulled back by digest through agentd and read by
skopeo; podman (Debian's package) pulls and runs what agentd pushed; auth
and the registry's refusals."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
from registry_harness import ImageBuilder, Registry, free_port, run  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")

USER, PASSWORD = "pusher", "pa55-word"
OCI = "application/vnd.oci.image.manifest.v1+json"
V2S2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def layout(work):
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    b.append_layer("base", "two", [("etc/two", "file", b"two\n")])
    b.append_layer("base", "zst", [("etc/zst", "file", b"zst\n")], compress="zstd")
    return b


@pytest.fixture(scope="module")
def registry(work, layout):
    with Registry(work, access_log=True) as reg:
        reg.push(layout, "two", "src/two:v1", fmt="oci")
        reg.push(layout, "zst", "src/zst:v1", fmt="oci")
        yield reg


@pytest.fixture(scope="module")
def private(work):
    with Registry(work, auth=(USER, PASSWORD)) as reg:
        yield reg


def ctl(agentd, *args, check=True, timeout=180):
    p = subprocess.run([H.agentctl_binary(), "-e", os.path.abspath(agentd.sock), *args],
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"agentctl {args}: rc {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def pushed_digest(p):
    ref, _, digest = p.stdout.strip().rpartition("@")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), p.stdout
    return ref, digest


def skopeo_raw(ref):
    out = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout
    return json.loads(out), "sha256:" + __import__("hashlib").sha256(out).hexdigest()


@pytest.fixture
def source(agentd, registry):
    """The image agentd pushes: pulled from the registry's src/two:v1 (again
    for each test: one removes it)."""
    ref = f"{registry.host}/src/two:v1"
    image_id = ctl(agentd, "pull", ref).stdout.strip()
    return ref, image_id


def test_push_mount_then_pull_back_by_digest(agentd, registry, source):
    src, image_id = source
    dest = f"{registry.host}/dst/mounted:v1"
    p = ctl(agentd, "push", src, dest)
    ref, digest = pushed_digest(p)
    assert ref == dest
    # Same registry, other repository: the blobs are mounted, not uploaded.
    assert p.stderr.count(": mounted") == 3, p.stderr
    assert "uploading" not in p.stderr
    log = (registry.dir / "registry.log").read_text()
    assert "mount=" in log
    # Pushed as stored: the digest is the source's.
    manifest, raw_digest = skopeo_raw(f"{dest}")
    assert raw_digest == digest == skopeo_raw(src)[1]
    assert manifest.get("mediaType", OCI) == OCI  # OCI lets it out
    assert manifest["config"]["digest"] == image_id
    # skopeo inspect by digest reads the config agentd pushed.
    info = json.loads(run("skopeo", "inspect", "--tls-verify=false",
                          f"docker://{registry.host}/dst/mounted@{digest}").stdout)
    assert info["Digest"] == digest and len(info["Layers"]) == 2

    # Again, as docker does it (tag, push NAME): every blob is there (HEAD).
    ctl(agentd, "tag", src, dest)
    p = ctl(agentd, "push", dest)
    assert p.stderr.count("already exists") == 3, p.stderr
    assert pushed_digest(p)[1] == digest

    # The image has the repo digest; removed and pulled back by digest.
    listed = json.loads(ctl(agentd, "inspecti", "-o", "json", dest).stdout)
    assert f"{registry.host}/dst/mounted@{digest}" in json.dumps(listed)
    ctl(agentd, "rmi", image_id)
    assert ctl(agentd, "inspecti", dest, check=False).returncode != 0
    back = ctl(agentd, "pull", f"{registry.host}/dst/mounted@{digest}").stdout.strip()
    assert back == image_id


@pytest.mark.parametrize("fmt,media_type", [("v2s2", V2S2), ("oci", OCI)])
def test_push_formats_uploaded(agentd, work, registry, source, fmt, media_type):
    """A registry that has none of the blobs: each is uploaded, whole or in
    PATCH chunks; the manifest in the format asked for."""
    _, image_id = source
    with Registry(work, access_log=True) as fresh:
        dest = f"{fresh.host}/fmt/{fmt}:v1"
        args = ["push", "--format", fmt, source[0], dest]
        if fmt == "oci":
            args[1:1] = ["--chunk-size", "65536"]
        p = ctl(agentd, *args)
        _, digest = pushed_digest(p)
        assert p.stderr.count(": pushed") == 3, p.stderr
        manifest, raw_digest = skopeo_raw(dest)
        assert raw_digest == digest
        assert manifest.get("mediaType", OCI) == media_type
        layer_types = {l["mediaType"] for l in manifest["layers"]}
        if fmt == "v2s2":
            assert manifest["config"]["mediaType"] == \
                "application/vnd.docker.container.image.v1+json"
            assert layer_types == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
        else:
            assert layer_types == {"application/vnd.oci.image.layer.v1.tar+gzip"}
        assert manifest["config"]["digest"] == image_id
        log = (fresh.dir / "registry.log").read_text()
        patches = len(re.findall(r'http\.request\.method="?PATCH', log))
        if fmt == "oci":
            # busybox-static is ~1 MB: many 64 KiB chunks.
            assert patches > 5, log[-2000:]
        else:
            assert patches == 0
        # A second agentd pulls it by digest: the same image id.
        other = H.Agentd(workdir=str(work / f"other-{fmt}"))
        try:
            other.start()
            back = ctl(other, "pull", f"{fresh.host}/fmt/{fmt}@{digest}").stdout.strip()
            assert back == image_id
            out = ctl(other, "inspecti", "-o", "json", back).stdout
            assert f"fmt/{fmt}@{digest}" in out
        finally:
            other.stop()
            other.cleanup()


def test_push_with_auth(agentd, private, source):
    src, _ = source
    dest = f"{private.host}/team/app:v1"
    p = ctl(agentd, "push", "--creds", f"{USER}:{PASSWORD}", src, dest)
    _, digest = pushed_digest(p)
    assert private.manifest("team/app", "v1")["config"]["digest"] == source[1]
    # A wrong password: the registry's refusal, a non-zero exit, nothing else said.
    p = ctl(agentd, "push", "--creds", f"{USER}:wrong", src, f"{private.host}/team/app:v2",
            check=False)
    assert p.returncode != 0
    assert "denied the push" in p.stderr and "credentials refused" in p.stderr, p.stderr
    assert "401" in p.stderr
    assert p.stdout == ""
    # No credentials at all.
    p = ctl(agentd, "push", src, f"{private.host}/team/app:v3", check=False)
    assert p.returncode != 0
    assert "requires credentials" in p.stderr, p.stderr
    with pytest.raises(Exception):
        private.manifest("team/app", "v2")


def test_push_refused_by_read_only_registry(agentd, work, registry, source):
    # Serves the same storage, read-only.
    with Registry(work, storage=registry.storage, readonly=True) as ro:
        p = ctl(agentd, "push", source[0], f"{ro.host}/ro/app:v1", check=False)
        assert p.returncode != 0
        assert f"registry {ro.host} refused" in p.stderr, p.stderr
        assert "HTTP 405: Method not allowed\n" in p.stderr, p.stderr


def test_push_bad_input(agentd, source):
    port = free_port()
    cases = [
        # unreachable registry
        (["push", source[0], f"127.0.0.1:{port}/x/y:v1"], "unreachable"),
        # unknown image
        (["push", "127.0.0.1:1/never/was:v1"], "not found"),
        # a name that is not a tag of the image, without DEST
        (["push", source[1]], "give the destination"),
        # a digest as the destination
        (["push", source[0], "127.0.0.1:1/x/y@sha256:" + "a" * 64], "not a digest"),
        (["push", "--format", "v1", source[0], "127.0.0.1:1/x:y"], "unknown --format"),
        (["push", "--chunk-size", "-5", source[0], "127.0.0.1:1/x:y"], "--chunk-size"),
        (["push"], "NAME is required"),
        (["push", "a", "b", "c"], "unexpected argument"),
    ]
    for args, want in cases:
        p = ctl(agentd, *args, check=False)
        assert p.returncode != 0, args
        assert want in p.stderr, (args, p.stderr)


def test_tag(agentd, registry, source):
    src, image_id = source
    p = ctl(agentd, "tag", src, "localhost:5999/tagged/one:x")
    assert p.stdout.strip() == "localhost:5999/tagged/one:x"
    p = ctl(agentd, "tag", image_id[7:19], "tagged-two")
    assert p.stdout.strip() == "docker.io/library/tagged-two:latest"
    out = ctl(agentd, "images", "-o", "json").stdout
    assert "localhost:5999/tagged/one:x" in out and "docker.io/library/tagged-two:latest" in out
    for args, want in [
        (["tag", "never-seen:v1", "x:y"], "not found"),
        (["tag", src, "x/Bad:x"], "x/Bad:x"),
        (["tag", src, "x@sha256:" + "b" * 64], "cannot have a digest"),
        (["tag", src], "SOURCE and NEW"),
    ]:
        p = ctl(agentd, *args, check=False)
        assert p.returncode != 0, args
        assert want in p.stderr, (args, p.stderr)
    ctl(agentd, "rmi", "localhost:5999/tagged/one:x", "tagged-two")


@pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed")
def test_podman_pulls_and_runs_what_agentd_pushed(agentd, work, registry, source):
    dest = f"{registry.host}/podman/two:v1"
    _, digest = pushed_digest(ctl(agentd, "push", "--format", "v2s2", source[0], dest))
    top = work / "podman"
    top.mkdir()
    # podman wants a runroot path of at most 50 characters.
    runroot = Path(tempfile.mkdtemp(prefix="adpm-")) / "run"
    (top / "registries.conf").write_text(
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    (top / "containers.conf").write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
    env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=str(top / "registries.conf"),
               CONTAINERS_CONF=str(top / "containers.conf"), HOME=str(top))
    # runc: crun refuses the hybrid cgroup layout of this kind of host.
    base = ["podman", "--runtime", shutil.which("runc") or "runc",
            "--root", str(top / "root"), "--runroot", str(runroot),
            "--storage-driver", "vfs", "--tmpdir", str(top / "tmp")]
    try:
        p = subprocess.run(base + ["pull", "--tls-verify=false", f"{registry.host}/podman/two@{digest}"],
                           env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        # root here lacks CAP_SYS_RESOURCE: no nofile above the hard limit (20000).
        p = subprocess.run(base + ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                                   f"{registry.host}/podman/two@{digest}", "cat", "/etc/two"],
                           env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        assert p.stdout == "two\n"
    finally:
        subprocess.run(base + ["rm", "-af"], env=env, capture_output=True, timeout=60)
        subprocess.run(base + ["rmi", "-af"], env=env, capture_output=True, timeout=60)
        subprocess.run(["umount", "-R", str(runroot)], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(runroot.parent, ignore_errors=True)


def test_push_with_bearer_tokens(agentd, work, registry, source):
    """distribution's token flow: HEAD with a pull token, then a new
    challenge for pull,push on the first write; the token server sees the
    credentials, the registry only tokens."""
    from registry_harness import AuthProxy
    creds = ("tok-user", "tok-pw")
    with Registry(work) as upstream, AuthProxy(upstream, creds=creds) as proxy:
        dest = f"{proxy.host}/tok/app:v1"
        p = ctl(agentd, "push", "--creds", ":".join(creds), "--chunk-size", "300000",
                source[0], dest)
        _, digest = pushed_digest(p)
        scopes = [r.get("scope") for r in proxy.token_requests]
        assert "repository:tok/app:pull" in scopes and "repository:tok/app:pull,push" in scopes
        methods = [m for m, _ in proxy.push_requests]
        assert "HEAD" in methods and "POST" in methods and "PATCH" in methods
        assert proxy.push_requests[-1] == ("PUT", "/v2/tok/app/manifests/v1")
        assert upstream.manifest("tok/app", "v1")["config"]["digest"] == source[1]
        # Wrong credentials: the token server's refusal, shown.
        p = ctl(agentd, "push", "--creds", "tok-user:nope", source[0], f"{proxy.host}/tok/app:v2",
                check=False)
        assert p.returncode != 0 and "token request refused" in p.stderr, p.stderr
        assert "bad user or password" in p.stderr


def test_push_zstd_layer_as_v2s2_is_refused(agentd, registry):
    """Docker v2s2 has no media type for a zstd layer: refused before any
    request, and the OCI push of the same image works."""
    src = f"{registry.host}/src/zst:v1"
    ctl(agentd, "pull", src)
    p = ctl(agentd, "push", "--format", "v2s2", src, f"{registry.host}/zst/v2s2:v1",
            check=False)
    assert p.returncode != 0
    assert "layer 2 has media type application/vnd.oci.image.layer.v1.tar+zstd" in p.stderr
    assert "Docker v2s2 (push it as oci)" in p.stderr, p.stderr
    assert "blob 1/" not in p.stderr  # nothing was sent
    p = ctl(agentd, "push", "--format", "oci", src, f"{registry.host}/zst/oci:v1")
    manifest, _ = skopeo_raw(f"{registry.host}/zst/oci:v1")
    assert manifest["layers"][1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
