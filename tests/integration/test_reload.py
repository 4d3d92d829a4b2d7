"""SIGHUP reloads more than TLS and the log level: the registry settings
([images] mirrors, certs_dir, auth_file; the next pull uses them, checked by
a mirror that makes an unreachable registry pullable), and the streaming
server's and the metrics endpoint's certificates (checked on the TLS
handshake). A broken auth file or certs.d certificate, or a broken key, is
refused with the file (and line) named, and the old settings stay. Each agentd has private dirs
and free ports; the registry runs on loopback."""
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the registry fixture needs root")


def reload_and_wait(a, text, count):
    """SIGHUP, then wait for the count-th occurrence of text in the log."""
    a.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while a.stderr_text().count(text) < count:
        assert time.monotonic() < deadline, a.stderr_text()[-3000:]
        time.sleep(0.1)


def pull(pb, a, ref):
    with a.unix_channel() as ch:
        img = pb.api_grpc.ImageServiceStub(ch)
        try:
            img.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)),
                          timeout=60)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


def remove_image(pb, a, ref):
    with a.unix_channel() as ch:
        pb.api_grpc.ImageServiceStub(ch).RemoveImage(
            pb.api.RemoveImageRequest(image=pb.api.ImageSpec(image=ref)), timeout=30)


def test_registry_settings_reload(pb, tmp_path):
    dead = "127.0.0.1:%d" % H.free_port()  # nothing listens there
    ref = dead + "/test/reload:v1"
    conf = tmp_path / "agentd.conf"
    conf.write_text("[images]\nregistry_mirrors =\n")
    with P.busybox_registry(tmp_path, "test/reload:v1") as reg:
        a = H.Agentd(workdir=str(tmp_path / "a"), extra_args=["--config", str(conf)])
        a.start()
        try:
            assert pull(pb, a, ref) != "OK"
            # A mirror for the dead registry: the next pull goes there.
            conf.write_text("[images]\nregistry_mirrors = %s=http://%s\n" % (dead, reg.host))
            reload_and_wait(a, "reloaded", 1)
            assert pull(pb, a, ref) == "OK"
            remove_image(pb, a, ref)

            # A broken auth file: the registry part is refused with file:line;
            # the mirror stays although the new config drops it.
            auth = tmp_path / "auth.json"
            auth.write_text('{\n  "auths": {\n    "x": \n')
            conf.write_text("[images]\nauth_file = %s\n" % auth)
            reload_and_wait(a, "registry settings refused", 1)
            assert "%s:4:" % auth in a.stderr_text(), a.stderr_text()[-2000:]
            assert pull(pb, a, ref) == "OK"
            remove_image(pb, a, ref)

            # A certs.d certificate that is not PEM: refused, named.
            certs = tmp_path / "certs.d" / dead
            certs.mkdir(parents=True)
            (certs / "ca.crt").write_text("not a certificate\n")
            conf.write_text("[images]\ncerts_dir = %s\n" % certs.parent)
            reload_and_wait(a, "registry settings refused", 2)
            assert "%s: not a PEM certificate" % (certs / "ca.crt") in a.stderr_text()
            assert pull(pb, a, ref) == "OK"

            # Good files: accepted; without the mirror the dead host fails again.
            auth.write_text('{"auths": {}}\n')
            (certs / "ca.crt").unlink()
            conf.write_text("[images]\nauth_file = %s\ncerts_dir = %s\n" % (auth, certs.parent))
            remove_image(pb, a, ref)
            reload_and_wait(a, "reloaded", 4)
            assert a.stderr_text().count("registry settings refused") == 2
            assert pull(pb, a, ref) != "OK"
            a.stop()
        finally:
            a.kill()


def served_cert(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            return ssl.DER_cert_to_PEM_cert(t.getpeercert(binary_form=True))


def pem_of(path):
    text = Path(path).read_text()
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(text))


def live_pair(certs, tmp_path):
    """The server's certificate and key copied where a test can swap them."""
    live = tmp_path / "live"
    live.mkdir()
    for src, dst in ((certs.server_cert, "server.crt"), (certs.server_key, "server.key")):
        (live / dst).write_bytes(Path(src).read_bytes())
    return live


def check_certificate_reload(a, port, live, certs, refused, request, reply):
    """The endpoint on port serves the server certificate; after a swap of
    the files and SIGHUP the other one, while a session opened before keeps
    working (request gets reply); a key that does not match is refused with
    `refused` and the file named, and the loaded pair stays."""
    assert served_cert(port) == pem_of(certs.server_cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    kept = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    for src, dst in ((certs.other_cert, "server.crt"), (certs.other_key, "server.key")):
        (live / (dst + ".new")).write_bytes(Path(src).read_bytes())
        os.rename(live / (dst + ".new"), live / dst)
    reload_and_wait(a, "reloaded", 1)
    assert served_cert(port) == pem_of(certs.other_cert)
    kept.sendall(request)
    assert kept.recv(64).startswith(reply)
    kept.close()

    (live / "server.key").write_bytes(Path(certs.server_key).read_bytes())
    reload_and_wait(a, refused, 1)
    assert str(live / "server.key") in a.stderr_text()
    assert served_cert(port) == pem_of(certs.other_cert)


def test_streaming_certificate_reload(pb, certs, tmp_path):
    live = live_pair(certs, tmp_path)
    port = H.free_port()
    conf = tmp_path / "agentd.conf"
    conf.write_text("[streaming]\nlisten = 127.0.0.1:%d\ntls = true\n" % port)
    a = H.Agentd(workdir=str(tmp_path / "a"),
                 extra_args=["--config", str(conf), "--tls-cert", str(live / "server.crt"),
                             "--tls-key", str(live / "server.key")])
    a.start()
    try:
        check_certificate_reload(a, port, live, certs, "streaming server keeps its certificate",
                                 b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 4")
        a.stop()
    finally:
        a.kill()


def test_metrics_certificate_reload(certs, tmp_path):
    live = live_pair(certs, tmp_path)
    conf = tmp_path / "agentd.conf"
    conf.write_text("[metrics]\ntls_cert = %s\ntls_key = %s\n"
                    % (live / "server.crt", live / "server.key"))
    a = H.Agentd(workdir=str(tmp_path / "a"), extra_args=["--config", str(conf)])
    a.start()
    try:
        port = int(a.metrics_url().rsplit(":", 1)[1])
        check_certificate_reload(a, port, live, certs, "metrics endpoint keeps its certificate",
                                 b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"HTTP/1.1 200")
        a.stop()
    finally:
        a.kill()


def test_cni_bad_edit_keeps_the_network(pb, tmp_path):
    """The CNI conflist is edited into broken JSON: a SIGHUP logs it refused
    with file and line, and the network as it last loaded stays: NetworkReady
    stays true and a new pod still gets an address on it. With no config at
    all the network is gone (NetworkReady false, RunPodSandbox UNAVAILABLE);
    a good file brings it back."""
    n = os.getpid() % 250
    bridge, subnet = "adn%d" % (os.getpid() % 1000), "10.232.%d.0/24" % n
    prefix = "10.232.%d." % n
    conflist = tmp_path / "cni" / "10-test.conflist"

    def network_ready(rt):
        conds = {c.type: c for c in rt.Status(pb.api.StatusRequest()).status.conditions}
        return conds["NetworkReady"]

    def pod_ip(rt, name):
        cfg = pb.api.PodSandboxConfig(metadata=pb.api.PodSandboxMetadata(
            name=name, namespace="reload", uid="uid-" + name))
        pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg), timeout=60)
        st = rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
            pod_sandbox_id=pod.pod_sandbox_id)).status
        return st.network.ip

    with P.pod_agentd(tmp_path, pb, "cni-reload", bridge, subnet) as a:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            assert pod_ip(rt, "before").startswith(prefix)
            good = conflist.read_text()
            conflist.write_text(good[:-1] + ",\n")  # the list's end edited away
            reload_and_wait(a, "reloaded", 1)
            log = a.stderr_text()
            assert "CNI config refused: %s: invalid JSON at line 2" % conflist in log, log[-2000:]
            assert "as last loaded stays" in log
            assert network_ready(rt).status
            assert pod_ip(rt, "during").startswith(prefix)

            conflist.unlink()
            net = network_ready(rt)
            assert not net.status and "no CNI network config" in net.message, net
            with pytest.raises(grpc.RpcError) as ei:
                pod_ip(rt, "without")
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value.details()
            assert "no CNI network config" in ei.value.details()

            conflist.write_text(good)
            assert network_ready(rt).status
            assert pod_ip(rt, "after").startswith(prefix)
