"""agentd's image services end to end: the CRI runtime.v1.ImageService, the
agent.v1.ImageService pull stream and agentctl pull/images/inspecti/rmi,
against real docker-registry instances on loopback (registry_harness.py)
serving images built offline from busybox-static."""
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
from registry_harness import ImageBuilder, Registry, free_port, run  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture(scope="module")
def layout(work):
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    b.append_layer("base", "two", [("etc/two", "file", b"two\n")])
    b.append_layer("base", "three", [("etc/three", "file", b"three\n")])
    for tag, user in (("uid", "1000:100"), ("named", "nobody")):
        run("umoci", "config", "--image", f"{b.path}:base", "--tag", tag, "--config.user", user)
    # Big and incompressible, so that a pull is still running when cancelled.
    b.append_layer("base", "big", [("big", "file", os.urandom(24 << 20))], compress=None)
    return b


@pytest.fixture(scope="module")
def plain(work, layout):
    with Registry(work) as reg:
        reg.push(layout, "base", "test/base:v1", fmt="oci")
        reg.push(layout, "two", "test/two:v1", fmt="v2s2")
        reg.push(layout, "two", "test/ctl:v1", fmt="oci")
        reg.push(layout, "three", "test/three:v1", fmt="oci")
        reg.push(layout, "uid", "test/uid:v1", fmt="oci")
        reg.push(layout, "named", "test/named:v1", fmt="v2s2")
        reg.push(layout, "big", "test/big:v1", fmt="oci")
        yield reg


@pytest.fixture(scope="module")
def private(work, layout):
    with Registry(work, auth=(USER, PASSWORD)) as reg:
        reg.push(layout, "base", "test/private:v1", fmt="oci")
        yield reg


def images_stub(pb, agentd):
    ch = agentd.unix_channel()
    return ch, pb.api_grpc.ImageServiceStub(ch)


def spec(pb, image):
    return pb.api.ImageSpec(image=image)


def pull(pb, im, image, **auth):
    req = pb.api.PullImageRequest(image=spec(pb, image))
    if auth:
        req.auth.CopyFrom(pb.api.AuthConfig(**auth))
    return im.PullImage(req, timeout=60).image_ref


def status(pb, im, image, verbose=False):
    return im.ImageStatus(pb.api.ImageStatusRequest(image=spec(pb, image), verbose=verbose),
                          timeout=10)


def rpc_error(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


# ------------------------------------------------------------------ CRI
def test_pull_then_list_and_status(pb, agentd, plain):
    ref = f"{plain.host}/test/base:v1"
    ch, im = images_stub(pb, agentd)
    with ch:
        image_id = pull(pb, im, ref)
        assert image_id.startswith("sha256:") and len(image_id) == 71
        manifest = plain.manifest("test/base", "v1")
        assert image_id == manifest["config"]["digest"]

        listed = [i for i in im.ListImages(pb.api.ListImagesRequest(), timeout=10).images
                  if i.id == image_id]
        assert len(listed) == 1
        img = listed[0]
        assert ref in img.repo_tags
        assert img.repo_digests and all(d.startswith(f"{plain.host}/test/base@sha256:")
                                        for d in img.repo_digests)
        assert img.size > 100_000  # busybox-static, compressed
        assert img.spec.image == image_id
        assert not img.pinned

        # By tag, id, short id and repo digest; the filter of ListImages alike.
        for q in (ref, image_id, image_id[7:19], img.repo_digests[0]):
            st = status(pb, im, q)
            assert st.image.id == image_id, q
            assert not st.info
        flt = pb.api.ListImagesRequest(filter=pb.api.ImageFilter(image=spec(pb, ref)))
        assert [i.id for i in im.ListImages(flt, timeout=10).images] == [image_id]
        flt = pb.api.ListImagesRequest(
            filter=pb.api.ImageFilter(image=spec(pb, f"{plain.host}/test/absent:v1")))
        assert list(im.ListImages(flt, timeout=10).images) == []

        st = status(pb, im, ref, verbose=True)
        info = json.loads(st.info["info"])
        assert info["id"] == image_id
        assert info["imageSpec"]["rootfs"]["type"] == "layers"
        assert info["imageSpec"]["config"]["Cmd"] == ["sh"]
        assert len(info["layers"]) == 1


def test_image_status_of_absent_image_is_empty(pb, agentd, plain):
    ch, im = images_stub(pb, agentd)
    with ch:
        for q in (f"{plain.host}/test/never:v1", "sha256:" + "ab" * 32):
            st = status(pb, im, q, verbose=True)
            assert not st.HasField("image"), q
            assert not st.info


def test_remove_image_twice(pb, agentd, plain):
    ref = f"{plain.host}/test/two:v1"
    ch, im = images_stub(pb, agentd)
    with ch:
        image_id = pull(pb, im, ref)
        assert status(pb, im, ref).image.id == image_id
        for _ in range(2):
            im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, ref)), timeout=10)
            assert not status(pb, im, ref).HasField("image")
            assert not status(pb, im, image_id).HasField("image")
        # By id, too.
        image_id = pull(pb, im, ref)
        im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, image_id)), timeout=10)
        assert not status(pb, im, ref).HasField("image")


def test_remove_frees_content_every_time(pb, agentd_factory, plain):
    """Each RemoveImage in one agentd frees the image's blobs and layers, not
    only the first (the sweep must not reuse a spent directory stream)."""
    a = agentd_factory()
    root = Path(a.root)
    ref = f"{plain.host}/test/three:v1"
    ch, im = images_stub(pb, a)
    with ch:
        for _ in range(3):
            pull(pb, im, ref)
            assert os.listdir(root / "layers") and os.listdir(root / "blobs" / "sha256")
            im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, ref)), timeout=10)
            assert os.listdir(root / "layers") == []
            assert os.listdir(root / "blobs" / "sha256") == []


def test_remove_image_by_repo_digest(pb, agentd, plain):
    ref = f"{plain.host}/test/two:v1"
    ch, im = images_stub(pb, agentd)
    with ch:
        pull(pb, im, ref)
        digest = status(pb, im, ref).image.repo_digests[0]
        im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, digest)), timeout=10)
        assert not status(pb, im, ref).HasField("image")


def test_image_user(pb, agentd, plain):
    """The config's User: numeric -> uid (the group part dropped), a name ->
    username, none -> neither."""
    ch, im = images_stub(pb, agentd)
    with ch:
        for name, uid, username in (("uid", 1000, ""), ("named", None, "nobody"),
                                    ("base", None, "")):
            ref = f"{plain.host}/test/{name}:v1"
            pull(pb, im, ref)
            img = status(pb, im, ref).image
            if uid is None:
                assert not img.HasField("uid"), (name, img)
            else:
                assert img.uid.value == uid, (name, img)
            assert img.username == username, (name, img)


def test_image_fs_info(pb, agentd, plain):
    ch, im = images_stub(pb, agentd)
    with ch:
        pull(pb, im, f"{plain.host}/test/base:v1")
        r = im.ImageFsInfo(pb.api.ImageFsInfoRequest(), timeout=10)
        assert len(r.image_filesystems) == 1
        fs = r.image_filesystems[0]
        assert fs.timestamp > 1_600_000_000 * 10**9
        assert fs.fs_id.mountpoint == os.path.realpath(agentd.root)
        assert fs.used_bytes.value > 100_000
        assert fs.inodes_used.value > 10


def test_pull_unknown_tag_is_not_found(pb, agentd, plain):
    ch, im = images_stub(pb, agentd)
    with ch:
        e = rpc_error(lambda: pull(pb, im, f"{plain.host}/test/base:nope"))
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        assert "test/base" in e.details() and "nope" in e.details(), e.details()


def test_pull_from_registry_down_is_unavailable(pb, agentd):
    host = f"127.0.0.1:{free_port()}"
    ch, im = images_stub(pb, agentd)
    with ch:
        e = rpc_error(lambda: pull(pb, im, f"{host}/test/base:v1"))
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        assert host in e.details(), e.details()


def test_bad_reference_is_invalid_argument(pb, agentd):
    ch, im = images_stub(pb, agentd)
    with ch:
        for ref in ("Upper/Case:x", "a b", "x@sha256:short"):
            e = rpc_error(lambda: pull(pb, im, ref))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (ref, e)
        e = rpc_error(lambda: im.PullImage(pb.api.PullImageRequest(), timeout=10))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_basic_auth_registry(pb, agentd, private):
    ref = f"{private.host}/test/private:v1"
    ch, im = images_stub(pb, agentd)
    with ch:
        for auth in ({}, {"username": USER, "password": "wrong"}):
            e = rpc_error(lambda: pull(pb, im, ref, **auth))
            assert e.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.PERMISSION_DENIED), (auth, e)
            assert private.host in e.details(), e.details()
            if auth:  # docker-registry's own words (errors[].message of the 401)
                assert "authentication required" in e.details(), e.details()
        image_id = pull(pb, im, ref, username=USER, password=PASSWORD)
        assert status(pb, im, ref).image.id == image_id
        im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, ref)), timeout=10)
        # The docker "auth" form: base64 of user:password.
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert pull(pb, im, ref, auth=token) == image_id


def test_remove_image_in_use_is_failed_precondition(pb, agentd, plain):
    """A container's rootfs pins its image. agentd has no container RPCs yet,
    so the store's own test CLI mounts one on agentd's root and DB (SQLite
    lets both processes in)."""
    probe = Path(H.build_dir()) / "tests" / "unit" / "store_probe"
    if not probe.exists():
        pytest.skip(f"{probe} not built")
    ref = f"{plain.host}/test/two:v1"
    root = os.path.realpath(agentd.root)
    base = [str(probe), "--root", root, "--db", os.path.join(root, "agentd.db")]
    cid = "imgsvc-test-ctr"
    ch, im = images_stub(pb, agentd)
    with ch:
        image_id = pull(pb, im, ref)
        subprocess.run(base + ["mount", image_id, cid], check=True, capture_output=True,
                       timeout=60)
        try:
            for q in (ref, image_id):
                e = rpc_error(lambda: im.RemoveImage(
                    pb.api.RemoveImageRequest(image=spec(pb, q)), timeout=10))
                assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
                assert cid in e.details(), e.details()
            assert status(pb, im, ref).image.id == image_id
        finally:
            subprocess.run(base + ["umount", cid], check=True, capture_output=True, timeout=60)
        im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, ref)), timeout=10)
        assert not status(pb, im, ref).HasField("image")


def test_images_config_mirror_and_certs_dir(pb, agentd, agentd_factory, work, layout, plain):
    """[images] settings reach the store: a mirror serves a registry that does
    not exist, and certs_dir holds the CA of a TLS registry on loopback."""
    with Registry(work, tls=True) as tls:
        tls.push(layout, "base", "test/tls:v1", fmt="oci")
        conf = work / f"agentd-{tls.port}.conf"
        conf.write_text("[images]\n"
                        f"certs_dir = {tls.certs_dir}\n"
                        "max_parallel_layers = 1\n"
                        f"registry_mirrors = mirror.invalid=http://{plain.host}\n")
        a = agentd_factory(extra_args=["--config", str(conf)])
        ch, im = images_stub(pb, a)
        with ch:
            ref = "mirror.invalid/test/base:v1"
            image_id = pull(pb, im, ref)
            assert image_id == plain.manifest("test/base", "v1")["config"]["digest"]
            assert ref in status(pb, im, image_id).image.repo_tags
            assert pull(pb, im, f"{tls.host}/test/tls:v1") == image_id
        # Without certs_dir the TLS registry is spoken to in plain HTTP (loopback).
        ch, im = images_stub(pb, agentd)
        with ch:
            e = rpc_error(lambda: pull(pb, im, f"{tls.host}/test/tls:v1"))
            assert e.code() == grpc.StatusCode.UNAVAILABLE and tls.host in e.details(), e


def test_images_config_auth_file(pb, agentd_factory, work, private):
    """Pulls without credentials of their own use [images] auth_file."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth = work / f"auth-{private.port}.json"
    auth.write_text(json.dumps({"auths": {private.host: {"auth": token}}}))
    conf = work / f"agentd-auth-{private.port}.conf"
    conf.write_text(f"[images]\nauth_file = {auth}\n")
    a = agentd_factory(extra_args=["--config", str(conf)])
    ch, im = images_stub(pb, a)
    with ch:
        ref = f"{private.host}/test/private:v1"
        assert pull(pb, im, ref).startswith("sha256:")
        # Credentials in the request win over the file.
        e = rpc_error(lambda: pull(pb, im, ref, username=USER, password="wrong"))
        assert e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


# ------------------------------------------------------------------ agent.v1
def test_agent_pull_streams_progress(pb, agentd, plain):
    base, ref = f"{plain.host}/test/base:v1", f"{plain.host}/test/three:v1"
    ch, im = images_stub(pb, agentd)
    with ch:
        pull(pb, im, base)  # the bottom layer is then already there
        stub = pb.agent_grpc.ImageServiceStub(ch)
        msgs = list(stub.PullImage(pb.agent.PullImageRequest(image=ref), timeout=60))
        assert msgs
        last = msgs[-1]
        assert last.image_id == status(pb, im, ref).image.id
        assert last.image_ref == ref
        assert last.layer_count == 2
        layers = msgs[:-1]
        assert layers and all(not m.image_id for m in layers)
        assert {m.layer_index for m in layers} == {0, 1}
        final = {}
        for m in layers:
            assert m.layer_count == 2 and m.digest.startswith("sha256:")
            assert m.bytes_done <= m.bytes_total or m.bytes_total == 0
            final[m.layer_index] = m
        S = pb.agent.LayerState
        assert final[0].state == S.Value("LAYER_STATE_EXISTS"), final[0]
        assert final[1].state == S.Value("LAYER_STATE_DONE"), final[1]
        assert final[1].bytes_done == final[1].bytes_total > 0
        manifest = plain.manifest("test/three", "v1")
        assert [final[i].digest for i in (0, 1)] == [l["digest"] for l in manifest["layers"]]


def test_agent_pull_errors(pb, agentd, plain):
    with agentd.unix_channel() as ch:
        stub = pb.agent_grpc.ImageServiceStub(ch)
        e = rpc_error(lambda: list(stub.PullImage(
            pb.agent.PullImageRequest(image=f"{plain.host}/test/base:nope"), timeout=30)))
        assert e.code() == grpc.StatusCode.NOT_FOUND and "nope" in e.details()
        e = rpc_error(lambda: list(stub.PullImage(pb.agent.PullImageRequest(image="A:B:C"),
                                                  timeout=30)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_agent_pull_cancelled_by_client(pb, agentd, plain):
    """The client goes away after the first progress message: agentd stays
    healthy (and kills the pull's agentd-fetch: see test_pull_cancel.py)."""
    ref = f"{plain.host}/test/big:v1"
    with agentd.unix_channel() as ch:
        stream = pb.agent_grpc.ImageServiceStub(ch).PullImage(
            pb.agent.PullImageRequest(image=ref), timeout=60)
        first = next(stream)
        assert first.layer_count == 2
        stream.cancel()
    agentd.assert_healthy()
    ch, im = images_stub(pb, agentd)
    with ch:
        # Whatever the cancelled pull left, a new pull completes.
        image_id = pull(pb, im, ref)
        assert status(pb, im, ref).image.id == image_id
        im.RemoveImage(pb.api.RemoveImageRequest(image=spec(pb, ref)), timeout=10)


# ------------------------------------------------------------------ agentctl
def ctl(agentd, *args, check=True):
    p = subprocess.run([H.agentctl_binary(), "-e", os.path.abspath(agentd.sock), *args],
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"agentctl {args}: rc {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def test_agentctl_pull_images_inspecti_rmi(agentd, plain, private):
    ref = f"{plain.host}/test/ctl:v1"
    p = ctl(agentd, "pull", ref)
    image_id = p.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71, p.stdout
    # Not a TTY: plain lines, one per layer state change.
    lines = p.stderr.splitlines()
    assert re.fullmatch(r"layer 1/2 [0-9a-f]{12}: waiting \([0-9.]+[kM]?B\)", lines[0]), lines
    for n in ("1/2", "2/2"):
        last = [ln for ln in lines if ln.startswith(f"layer {n} ")][-1]
        assert re.search(r": (done|already exists) \([0-9.]+[kM]?B\)$", last), lines
    assert "\r" not in p.stderr and "\033[" not in p.stderr

    rows = ctl(agentd, "images").stdout.splitlines()
    assert rows[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    mine = [r.split() for r in rows[1:] if r.split()[0] == f"{plain.host}/test/ctl"]
    assert len(mine) == 1 and mine[0][1] == "v1" and mine[0][2] == image_id[7:20], rows
    assert image_id in ctl(agentd, "images", "-q").stdout.split()
    listed = json.loads(ctl(agentd, "images", "-o", "json", ref).stdout)["images"]
    assert [i["id"] for i in listed] == [image_id] and ref in listed[0]["repoTags"]

    info = json.loads(ctl(agentd, "inspecti", ref).stdout)
    assert info["status"]["id"] == image_id
    assert info["info"]["imageSpec"]["config"]["Cmd"] == ["sh"]

    p = ctl(agentd, "rmi", ref)
    assert p.stdout.strip() == f"Deleted: {ref}"
    p = ctl(agentd, "rmi", ref, check=False)
    assert p.returncode == 1 and "no such image" in p.stderr, p.stderr
    p = ctl(agentd, "inspecti", ref, check=False)
    assert p.returncode == 1 and "no such image" in p.stderr, p.stderr

    # Errors: unknown tag, bad credentials (EX_NOPERM), right credentials.
    p = ctl(agentd, "pull", f"{plain.host}/test/ctl:nope", check=False)
    assert p.returncode == 1 and "NOT_FOUND" in p.stderr and "nope" in p.stderr, p.stderr
    pref = f"{private.host}/test/private:v1"
    p = ctl(agentd, "pull", "--creds", f"{USER}:bad", pref, check=False)
    assert p.returncode == 77 and private.host in p.stderr, p.stderr  # EX_NOPERM
    p = ctl(agentd, "pull", "--creds", f"{USER}:{PASSWORD}", pref)
    assert p.stdout.strip().startswith("sha256:")
    p = ctl(agentd, "pull", check=False)
    assert p.returncode == 64 and "IMAGE is required" in p.stderr  # EX_USAGE


def test_agentctl_pull_progress_bar_on_a_tty(agentd, plain):
    """On a terminal, one line redrawn in place (\\r) instead of a line per change."""
    import pty
    ref = f"{plain.host}/test/three:v1"
    master, slave = pty.openpty()
    try:
        p = subprocess.run([H.agentctl_binary(), "-e", os.path.abspath(agentd.sock), "pull", ref],
                           stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the pty's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0, out
    assert p.stdout.strip().startswith("sha256:")
    text = out.decode()
    assert "\r" in text and "layers 2/2 [" in text, text
    assert "waiting" not in text, text


# ------------------------------------------------- load, save, import (files on agentd's host)
def rootfs_tar(path, files):
    """A rootfs tar made with tarfile: files is [(name, bytes)]; [] gives an empty tar."""
    import io
    import tarfile
    with tarfile.open(path, "w") as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    return path


def test_agentctl_save_rmi_load(agentd, plain, tmp_path, monkeypatch):
    ref = f"{plain.host}/test/two:v1"
    image_id = ctl(agentd, "pull", ref).stdout.strip()
    # A relative -o: agentctl makes it absolute for agentd.
    monkeypatch.chdir(tmp_path)
    p = ctl(agentd, "save", "-o", "two.tar", ref)
    assert p.stdout == "", p.stdout
    archive = tmp_path / "two.tar"
    assert archive.stat().st_size > 0
    import tarfile
    with tarfile.open(archive) as t:
        names = set(t.getnames())
    assert {"manifest.json", "index.json", "oci-layout"} <= names, names

    ctl(agentd, "rmi", ref)
    assert image_id not in ctl(agentd, "images", "-q").stdout.split()
    p = ctl(agentd, "load", "-i", "two.tar")
    assert p.stdout.splitlines() == [f"Loaded image: {ref}"], p.stdout
    listed = json.loads(ctl(agentd, "images", "-o", "json", ref).stdout)["images"]
    assert [i["id"] for i in listed] == [image_id] and ref in listed[0]["repoTags"]
    # Saving an image not there: NOT_FOUND naming it, and no file left.
    p = ctl(agentd, "save", "-o", str(tmp_path / "x.tar"), "test/absent:v9", check=False)
    assert p.returncode == 1 and "NOT_FOUND" in p.stderr and "test/absent:v9" in p.stderr, \
        p.stderr
    assert not (tmp_path / "x.tar").exists()
    ctl(agentd, "rmi", ref)


def test_agentctl_import_rootfs_tar(agentd, tmp_path):
    tar = rootfs_tar(tmp_path / "rootfs.tar", [("hello.txt", b"hello\n")])
    p = ctl(agentd, "import", str(tar), "test/imported:v1")
    image_id = p.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71, p.stdout
    rows = [r.split() for r in ctl(agentd, "images").stdout.splitlines()[1:]]
    assert ["test/imported", "v1", image_id[7:20]] in [r[:3] for r in rows] or \
        any(r[0].endswith("test/imported") and r[1] == "v1" and r[2] == image_id[7:20]
            for r in rows), rows
    info = json.loads(ctl(agentd, "inspecti", "test/imported:v1").stdout)
    assert info["status"]["id"] == image_id
    assert len(info["info"]["imageSpec"]["rootfs"]["diff_ids"]) == 1, info

    # An empty tar: an image without layers.
    empty = rootfs_tar(tmp_path / "empty.tar", [])
    empty_id = ctl(agentd, "import", str(empty), "test/empty:v1").stdout.strip()
    assert empty_id.startswith("sha256:") and empty_id != image_id
    info = json.loads(ctl(agentd, "inspecti", "test/empty:v1").stdout)
    assert info["status"]["id"] == empty_id
    assert info["info"]["imageSpec"]["rootfs"].get("diff_ids") in ([], None), info
    ctl(agentd, "rmi", "test/imported:v1", "test/empty:v1")


def test_agentctl_load_import_errors(agentd, tmp_path):
    missing = tmp_path / "nope.tar"
    for args in (("load", "-i", str(missing)), ("import", str(missing), "test/x:v1")):
        p = ctl(agentd, *args, check=False)
        assert p.returncode == 1 and "NOT_FOUND" in p.stderr and str(missing) in p.stderr, \
            (args, p.stderr)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(4096))
    for args in (("load", "-i", str(garbage)), ("import", str(garbage), "test/x:v1")):
        p = ctl(agentd, *args, check=False)
        assert p.returncode != 0 and str(garbage) in p.stderr, (args, p.stderr)
        assert "INVALID_ARGUMENT" in p.stderr or "DATA_LOSS" in p.stderr, (args, p.stderr)
    p = ctl(agentd, "load", check=False)
    assert p.returncode == 64 and "-i FILE is required" in p.stderr
    p = ctl(agentd, "save", "-o", str(tmp_path / "s.tar"), check=False)
    assert p.returncode == 64 and "IMAGE is required" in p.stderr


def test_agent_load_save_import_rpc_errors(pb, agentd, tmp_path):
    with agentd.unix_channel() as ch:
        stub = pb.agent_grpc.ImageServiceStub(ch)
        INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
        e = rpc_error(lambda: stub.LoadImage(pb.agent.LoadImageRequest(path="rel.tar"),
                                             timeout=30))
        assert e.code() == INVALID and "absolute" in e.details()
        e = rpc_error(lambda: stub.LoadImage(
            pb.agent.LoadImageRequest(path=str(tmp_path / "a.tar"), format="zip"), timeout=30))
        assert e.code() == INVALID and "zip" in e.details()
        e = rpc_error(lambda: stub.LoadImage(
            pb.agent.LoadImageRequest(path=str(tmp_path / "a.tar")), timeout=30))
        assert e.code() == NOT_FOUND and "a.tar" in e.details()
        e = rpc_error(lambda: stub.SaveImage(
            pb.agent.SaveImageRequest(images=["test/absent:v1"], path=str(tmp_path / "s.tar")),
            timeout=30))
        assert e.code() == NOT_FOUND and "test/absent:v1" in e.details()
        e = rpc_error(lambda: stub.SaveImage(
            pb.agent.SaveImageRequest(path=str(tmp_path / "s.tar")), timeout=30))
        assert e.code() == INVALID
        e = rpc_error(lambda: stub.ImportImage(
            pb.agent.ImportImageRequest(path="", reference="test/x:v1"), timeout=30))
        assert e.code() == INVALID
        tar = rootfs_tar(tmp_path / "r.tar", [("f", b"x")])
        r = stub.ImportImage(pb.agent.ImportImageRequest(path=str(tar)), timeout=30)
        assert r.image_id.startswith("sha256:")
        ctl(agentd, "rmi", r.image_id)
