"""Pulls run in agentd-fetch, a process per pull: a deadline or a client that
leaves kills it, the store stays consistent (no temp files, a second pull
works), two pulls of one blob share one download across processes, and a
missing helper is a clear error. Against docker-registry on loopback behind
registry_harness.AuthProxy, whose "stall" fault sends half a blob and then
nothing for 8 s. Loads and saves run in agentd-fetch too and are stopped the
same way: their archive is a FIFO that the test leaves half written (or
unread), so the helper is surely mid-way when the call gives up."""
import os
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from registry_harness import AuthProxy, ImageBuilder, Registry  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root")


@pytest.fixture(scope="module")
def plain(work):
    b = ImageBuilder(work / "oci")
    b.busybox("base")
    # Big and incompressible: a pull of it is still running when stopped.
    b.append_layer("base", "big", [("big", "file", os.urandom(24 << 20))], compress=None)
    with Registry(work) as reg:
        reg.push(b, "big", "test/big:v1", fmt="oci")
        yield reg


def helpers_of(pid):
    """The agentd-fetch children of process `pid`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and comm == "agentd-fetch":
            found.append(int(d))
    return found


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def big_layer(reg):
    return reg.manifest("test/big", "v1")["layers"][-1]["digest"]


def cri_pull(pb, agentd, ref, timeout):
    with agentd.unix_channel() as ch:
        im = pb.api_grpc.ImageServiceStub(ch)
        return im.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)),
                            timeout=timeout).image_ref


def assert_stopped_cleanly(agentd):
    assert wait_until(lambda: not helpers_of(agentd.pid)), helpers_of(agentd.pid)
    tmp = Path(agentd.root) / "tmp"
    assert wait_until(lambda: os.listdir(tmp) == []), os.listdir(tmp)
    agentd.assert_healthy()


def test_deadline_kills_the_pull(pb, agentd_factory, plain):
    a = agentd_factory()
    with AuthProxy(plain, redirect=False) as px:
        px.faults[big_layer(plain)] = ["stall"]
        ref = f"{px.host}/test/big:v1"
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            cri_pull(pb, a, ref, timeout=4)
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
        assert px.blob_requests[big_layer(plain)] == 1  # it was downloading
        assert_stopped_cleanly(a)
        # Well before the stall ended (8 s): the helper did not run on.
        assert time.monotonic() - started < 8
        # Nothing half-done is visible, and the next pull completes.
        image_id = cri_pull(pb, a, ref, timeout=120)
        assert image_id == plain.manifest("test/big", "v1")["config"]["digest"]
        assert not helpers_of(a.pid)


def test_client_leaving_kills_the_pull(pb, agentd_factory, plain):
    a = agentd_factory()
    with AuthProxy(plain, redirect=False) as px:
        px.faults[big_layer(plain)] = ["stall"]
        ref = f"{px.host}/test/big:v1"
        with a.unix_channel() as ch:
            stream = pb.agent_grpc.ImageServiceStub(ch).PullImage(
                pb.agent.PullImageRequest(image=ref), timeout=60)
            assert next(stream).layer_count == 2
            assert helpers_of(a.pid)
            assert wait_until(lambda: px.blob_requests[big_layer(plain)] == 1)
            stream.cancel()
        assert_stopped_cleanly(a)
        assert cri_pull(pb, a, ref, timeout=120).startswith("sha256:")


def test_concurrent_pulls_share_one_download(pb, agentd_factory, plain):
    """Two pulls of one image, each in its own agentd-fetch: every blob is
    fetched once; the second process waits for the first one's download."""
    a = agentd_factory()
    with AuthProxy(plain, redirect=False) as px:
        ref = f"{px.host}/test/big:v1"
        results, errors = [], []

        def one():
            try:
                results.append(cri_pull(pb, a, ref, timeout=120))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(set(results)) == 1
        for layer in plain.manifest("test/big", "v1")["layers"]:
            assert px.blob_requests[layer["digest"]] == 1, px.blob_requests
    assert os.listdir(Path(a.root) / "tmp") == []


def test_missing_helper_is_a_clear_error(pb, agentd_factory, plain, work, tmp_path):
    conf = work / "missing-helper.conf"
    missing = "/nonexistent/libexec/agentd-fetch"
    conf.write_text(f"[images]\nfetch_helper = {missing}\n")
    a = agentd_factory(extra_args=["--config", str(conf)])
    with pytest.raises(grpc.RpcError) as ei:
        cri_pull(pb, a, f"{plain.host}/test/big:v1", timeout=30)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION, ei.value
    assert missing in ei.value.details() and "fetch helper" in ei.value.details()
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"\0" * 1024)
    with a.unix_channel() as ch:
        with pytest.raises(grpc.RpcError) as ei:
            pb.agent_grpc.ImageServiceStub(ch).LoadImage(
                pb.agent.LoadImageRequest(path=str(archive)), timeout=30)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION, ei.value
    assert missing in ei.value.details()
    a.assert_healthy()


def agent_images(pb, ch):
    return pb.agent_grpc.ImageServiceStub(ch)


def image_present(pb, agentd, image_id):
    with agentd.unix_channel() as ch:
        im = pb.api_grpc.ImageServiceStub(ch)
        st = im.ImageStatus(pb.api.ImageStatusRequest(image=pb.api.ImageSpec(image=image_id)),
                            timeout=10)
        return st.image.id == image_id


@pytest.fixture(scope="module")
def big_archive(pb, agentd, plain, work):
    """test/big:v1 saved by agentd (docker-archive + OCI layout, ~25 MB)."""
    a = agentd
    image_id = cri_pull(pb, a, f"{plain.host}/test/big:v1", timeout=120)
    path = work / "big.tar"
    with a.unix_channel() as ch:
        agent_images(pb, ch).SaveImage(pb.agent.SaveImageRequest(images=[image_id],
                                                                  path=str(path)), timeout=120)
    return path, image_id


def test_deadline_kills_a_load(pb, agentd_factory, big_archive, tmp_path):
    archive, image_id = big_archive
    a = agentd_factory()
    fifo = tmp_path / "slow.tar"
    os.mkfifo(fifo)
    # O_RDWR: agentd's open does not wait for a writer, and the helper reading
    # it never sees EOF: it waits for the rest until it is killed.
    w = os.open(fifo, os.O_RDWR)
    try:
        with open(archive, "rb") as f:
            os.write(w, f.read(32 << 10))  # less than a pipe holds
        with a.unix_channel() as ch:
            started = time.monotonic()
            call = agent_images(pb, ch).LoadImage.future(
                pb.agent.LoadImageRequest(path=str(fifo)), timeout=3)
            assert wait_until(lambda: helpers_of(a.pid)), "no agentd-fetch ran the load"
            tmp = Path(a.root) / "tmp"
            assert wait_until(lambda: any(n.startswith("load-") for n in os.listdir(tmp)))
            with pytest.raises(grpc.RpcError) as ei:
                call.result()
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
        assert_stopped_cleanly(a)
        assert time.monotonic() - started < 10
    finally:
        os.close(w)
    assert not image_present(pb, a, image_id)
    # The whole archive loads afterwards.
    with a.unix_channel() as ch:
        r = agent_images(pb, ch).LoadImage(pb.agent.LoadImageRequest(path=str(archive)),
                                           timeout=120)
    assert list(r.image_ids) == [image_id]
    assert image_present(pb, a, image_id)
    assert not helpers_of(a.pid)


def test_client_leaving_kills_a_save(pb, agentd_factory, big_archive, tmp_path):
    archive, image_id = big_archive
    a = agentd_factory()
    with a.unix_channel() as ch:
        agent_images(pb, ch).LoadImage(pb.agent.LoadImageRequest(path=str(archive)),
                                       timeout=120)
    fifo = tmp_path / "out.tar"
    os.mkfifo(fifo)
    # Nobody reads it: the helper's writes stop once the pipe is full.
    keep = os.open(fifo, os.O_RDWR)
    try:
        with a.unix_channel() as ch:
            call = agent_images(pb, ch).SaveImage.future(
                pb.agent.SaveImageRequest(images=[image_id], path=str(fifo)), timeout=60)
            assert wait_until(lambda: helpers_of(a.pid)), "no agentd-fetch ran the save"
            time.sleep(0.5)
            assert not call.done()
            call.cancel()
        assert_stopped_cleanly(a)
        # The half-written output is removed.
        assert wait_until(lambda: not fifo.exists())
    finally:
        os.close(keep)
    # The image is still there and a save to a file completes.
    out = tmp_path / "again.tar"
    with a.unix_channel() as ch:
        agent_images(pb, ch).SaveImage(pb.agent.SaveImageRequest(images=[image_id],
                                                                  path=str(out)), timeout=120)
    assert out.stat().st_size > 24 << 20
    assert not helpers_of(a.pid)
