"""Certificates and access for the remote control plane: a PKI made by
deploy/certs/agentd-certs (fleet CA, server certificate with DNS and IP
SANs, client certificates per role), agentd's mutual-TLS listener and the
[authz] policy: admin, read-only, none, a CN mapped in the config, no
certificate, a certificate from another CA, an expired one; denials carry
method and role and are logged. SIGHUP swaps the server certificate and
client CA while a connected client keeps working; a broken file or config
is refused and the running settings stay."""
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402

CERTS = str(Path(H.source_dir()) / "deploy" / "certs" / "agentd-certs")


def certs(pki, *args):
    r = subprocess.run([CERTS, "-d", str(pki)] + [str(a) for a in args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r
    return r.stdout.strip()


def make_pki(pki):
    certs(pki, "ca")
    certs(pki, "server", "localhost", "127.0.0.1", "::1")
    for name, role in (("ops", "admin"), ("viewer", "read-only"), ("nobody", "none"),
                       ("mapped", "admin")):
        certs(pki, "client", name, role)
    certs(pki, "--not-before", "20200101000000Z", "--not-after", "20200102000000Z",
          "client", "expired", "admin")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("authz")
    make_pki(d / "pki")
    make_pki(d / "other")  # an unrelated fleet CA
    # The files agentd is given: replaced in place by the reload test.
    live = d / "live"
    live.mkdir()
    for f in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(d / "pki" / "hosts" / "localhost" / f, live / f)
    return d


@pytest.fixture(scope="module")
def daemon(pki):
    conf = pki / "agentd.conf"
    conf.write_text("[authz]\nroles = mapped=read-only\nrole_from_ou = true\n"
                    "default_role = none\n")
    live = pki / "live"
    ns = types.SimpleNamespace(server_cert=str(live / "server.crt"),
                               server_key=str(live / "server.key"), ca=str(live / "ca.crt"))
    a = H.Agentd(workdir=str(pki / "agentd"), certs=ns, extra_args=["--config", str(conf)])
    a.start()
    yield a
    a.stop()
    a.cleanup()


def channel(daemon, pki_dir, client=None, trust=None):
    kw = {"root_certificates": open(trust or pki_dir / "ca.crt", "rb").read()}
    if client:
        kw["private_key"] = open(pki_dir / "clients" / (client + ".key"), "rb").read()
        kw["certificate_chain"] = open(pki_dir / "clients" / (client + ".crt"), "rb").read()
    return grpc.secure_channel("127.0.0.1:%d" % daemon.tls_port,
                               grpc.ssl_channel_credentials(**kw),
                               options=[("grpc.enable_http_proxy", 0)])


def call(ch, method):
    """Outcome of one call: "OK" or (code name, details)."""
    pb = H.load_stubs()
    rt = pb.api_grpc.RuntimeServiceStub(ch)
    img = pb.api_grpc.ImageServiceStub(ch)
    calls = {
        "Version": lambda: rt.Version(pb.api.VersionRequest(version="v1"), timeout=10),
        "ListPodSandbox": lambda: rt.ListPodSandbox(pb.api.ListPodSandboxRequest(), timeout=10),
        "ImageFsInfo": lambda: img.ImageFsInfo(pb.api.ImageFsInfoRequest(), timeout=10),
        "RemovePodSandbox": lambda: rt.RemovePodSandbox(
            pb.api.RemovePodSandboxRequest(pod_sandbox_id="no-such-pod"), timeout=10),
        "RemoveImage": lambda: img.RemoveImage(
            pb.api.RemoveImageRequest(image=pb.api.ImageSpec(image="no/such:image")),
            timeout=10),
    }
    try:
        calls[method]()
        return "OK"
    except grpc.RpcError as e:
        return (e.code().name, e.details())


READS = ("Version", "ListPodSandbox", "ImageFsInfo")
WRITES = ("RemovePodSandbox", "RemoveImage")


def test_role_matrix(daemon, pki):
    p = pki / "pki"
    with channel(daemon, p, "ops") as ch:
        for m in READS + WRITES:
            out = call(ch, m)
            assert out == "OK" or out[0] not in ("PERMISSION_DENIED", "UNAVAILABLE"), (m, out)
    for client, role in (("viewer", "read-only"), ("mapped", "read-only")):
        with channel(daemon, p, client) as ch:
            for m in READS:
                assert call(ch, m) == "OK", (client, m)
            for m in WRITES:
                code, details = call(ch, m)
                assert code == "PERMISSION_DENIED", (client, m, code, details)
                assert ("/%s is not allowed for role %s" % (m, role)) in details, details
    with channel(daemon, p, "nobody") as ch:
        for m in READS + WRITES:
            code, details = call(ch, m)
            assert code == "PERMISSION_DENIED" and "for role none" in details, (m, details)
    # Refused in the handshake: no certificate, another CA's, an expired one.
    for pki_dir, client, trust in ((p, None, None), (pki / "other", "ops", p / "ca.crt"),
                                   (p, "expired", None)):
        with channel(daemon, pki_dir, client, trust) as ch:
            assert call(ch, "Version")[0] == "UNAVAILABLE", (pki_dir, client)
    # The unix socket is guarded by its mode, not by roles.
    with daemon.unix_channel() as ch:
        assert call(ch, "RemovePodSandbox") == "OK"
    log = daemon.stderr_text()
    assert "authz: denied /runtime.v1.RuntimeService/RemovePodSandbox to " in log
    assert "CN=viewer" in log and "(role read-only)" in log


def test_sighup_swaps_certificates(daemon, pki):
    p, other, live = pki / "pki", pki / "other", pki / "live"
    kept = channel(daemon, p, "ops")
    assert call(kept, "Version") == "OK"
    # Rotate to the other fleet CA: new server certificate and client CA.
    for f in ("server.crt", "server.key", "ca.crt"):
        tmp = live / (f + ".new")
        shutil.copy(other / "hosts" / "localhost" / f, tmp)
        os.rename(tmp, live / f)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded" not in daemon.stderr_text():
        assert time.monotonic() < deadline, daemon.stderr_text()
        time.sleep(0.1)
    # The established connection keeps working ...
    assert call(kept, "Version") == "OK"
    # ... new ones get the new certificate: the old CA's clients fail, the
    # new CA's succeed.
    with channel(daemon, p, "ops") as ch:
        assert call(ch, "Version")[0] == "UNAVAILABLE"
    with channel(daemon, other, "ops") as ch:
        assert call(ch, "Version") == "OK"

    # A broken key is refused; the certificates loaded before stay.
    good_key = (live / "server.key").read_bytes()
    (live / "server.key").write_text("not a key\n")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS files refused" not in daemon.stderr_text():
        assert time.monotonic() < deadline, daemon.stderr_text()
        time.sleep(0.1)
    assert str(live / "server.key") in daemon.stderr_text()
    with channel(daemon, other, "ops") as ch:
        assert call(ch, "Version") == "OK"
    (live / "server.key").write_bytes(good_key)

    # A config that does not parse is refused with file:line; nothing changes.
    conf = pki / "agentd.conf"
    saved = conf.read_text()
    conf.write_text(saved + "[authz]\ndefault_role = everyone\n")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in daemon.stderr_text():
        assert time.monotonic() < deadline, daemon.stderr_text()
        time.sleep(0.1)
    assert "%s:6:" % conf in daemon.stderr_text(), daemon.stderr_text()[-2000:]
    with channel(daemon, other, "viewer") as ch:
        assert call(ch, "RemoveImage")[0] == "PERMISSION_DENIED"
    # A good change to the policy applies: read-only for every unmapped OU.
    conf.write_text(saved.replace("role_from_ou = true", "role_from_ou = false")
                    .replace("default_role = none", "default_role = read-only"))
    daemon.signal(signal.SIGHUP)
    time.sleep(1)
    with channel(daemon, other, "ops") as ch:  # OU=admin, no longer read
        code, details = call(ch, "RemoveImage")
        assert code == "PERMISSION_DENIED" and "role read-only" in details, details
    assert call(kept, "Version") == "OK"
    kept.close()
    conf.write_text(saved)
