"""Hostile requests to a real agentd: RunPodSandbox and CreateContainer with
names holding '/', 10,000 labels, 1 MiB of annotations, a 10 MB
environment, log paths and mount sources with ".." or symbolic links. Each
is refused with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED from the transport)
and a message naming the field, and nothing is created: no pod, no
container, no rootfs mount, no netns pin, nothing written outside the log
directory. Then the local socket's mode and owner, and TLS clients with no
certificate, one from another CA and an expired one: refused in the
handshake, before a single HTTP/2 byte (so before any handler) comes back."""
import datetime
import os
import socket
import ssl
import stat
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adh%d" % (os.getpid() % 1000)
SUBNET = "10.238.%d.0/24" % N
IMAGE_PATH = "test/hostilebox:v1"

registry, daemon, image = P.busybox_pod_fixtures("agentd-hostile", BRIDGE, SUBNET, IMAGE_PATH)


@pytest.fixture(scope="module")
def rt(pb, daemon):
    with daemon.unix_channel() as ch:
        yield pb.api_grpc.RuntimeServiceStub(ch)


def pod_config(pb, work, name="hostile"):
    return pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name=name, namespace="test", uid="uid-" + name),
        log_directory=str(work / "logs" / name))


def refused(fn, req, *words):
    with pytest.raises(grpc.RpcError) as ei:
        fn(req, timeout=60)
    e = ei.value
    assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.RESOURCE_EXHAUSTED), (e.code(), e.details())
    for w in words:
        assert w in e.details(), (w, e.details())
    return e


def nothing_created(pb, rt, daemon, work, pod_id=None):
    pods = [p.id for p in rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items]
    assert pods == ([pod_id] if pod_id else []), pods
    assert len(rt.ListContainers(pb.api.ListContainersRequest()).containers) == 0
    assert os.path.join(daemon.root, "containers") not in Path("/proc/self/mountinfo").read_text()
    netns = work / "netns"
    pins = [p.name for p in netns.iterdir()] if netns.exists() else []
    assert pins == ([pod_id] if pod_id else []), pins


def test_hostile_pod_configs(pb, rt, daemon, work):
    cases = []
    c = pod_config(pb, work, "a/b")
    cases.append((c, ["name", "'/'"]))
    c = pod_config(pb, work)
    for i in range(10000):
        c.labels["l%d" % i] = "v"
    cases.append((c, ["labels", "10000 entries"]))
    c = pod_config(pb, work)
    c.annotations["big"] = "x" * (1 << 20)
    cases.append((c, ["annotations", "bytes"]))
    c = pod_config(pb, work)
    c.log_directory = str(work / "logs" / ".." / ".." / "etc")
    cases.append((c, ["log_directory"]))
    for cfg, words in cases:
        refused(rt.RunPodSandbox, pb.api.RunPodSandboxRequest(config=cfg), *words)
        nothing_created(pb, rt, daemon, work)


def test_hostile_container_configs(pb, rt, daemon, work, image, tmp_path):
    pcfg = pod_config(pb, work, "holder")
    logdir = Path(pcfg.log_directory)
    pod = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    try:
        outside = tmp_path / "outside"
        outside.mkdir()
        victim = outside / "victim"
        victim.write_text("untouched\n")
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / "linkdir").symlink_to(outside)
        (logdir / "link.log").symlink_to(victim)

        def cfg(**kw):
            c = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name="c"),
                                       image=pb.api.ImageSpec(image=image),
                                       command=["sh", "-c", "echo pwned"])
            for k, v in kw.items():
                if callable(v):
                    v(c)
                elif isinstance(v, str):
                    setattr(c, k, v)
                else:
                    getattr(c, k).CopyFrom(v)
            return c

        def labels(n):
            def f(c):
                for i in range(n):
                    c.labels["l%d" % i] = "v"
            return f

        def big_env(c):
            c.envs.append(pb.api.KeyValue(key="BIG", value="x" * (10 << 20)))

        def many_envs(c):
            for i in range(100):
                c.envs.append(pb.api.KeyValue(key="E%d" % i, value="x" * (100 << 10)))

        def mount(host, ctr="/mnt"):
            def f(c):
                c.mounts.append(pb.api.Mount(host_path=host, container_path=ctr))
            return f

        cases = [
            (cfg(metadata=pb.api.ContainerMetadata(name="x/y")), ["name", "'/'"]),
            (cfg(labels=labels(10000)), ["labels", "10000 entries"]),
            (cfg(annotations=lambda c: c.annotations.update({"a": "x" * (1 << 20)})),
             ["annotations"]),
            (cfg(envs=big_env), []),  # over the message limit or the env's
            (cfg(envs=many_envs), ["env", "bytes"]),
            (cfg(log_path="../../escape.log"), ["log_path"]),
            (cfg(log_path="/abs.log"), ["log_path"]),
            (cfg(log_path="linkdir/x.log"), ["symbolic link"]),
            (cfg(log_path="linkdir/sub/x.log"), ["symbolic link"]),
            (cfg(log_path="link.log"), ["symbolic link"]),
            (cfg(mounts=mount(str(tmp_path) + "/../../etc")), ["host_path", ".."]),
            (cfg(mounts=mount(str(outside), "/mnt/../../etc")), ["container_path"]),
        ]
        for c, words in cases:
            refused(rt.CreateContainer, pb.api.CreateContainerRequest(
                pod_sandbox_id=pod, config=c, sandbox_config=pcfg), *words)
            nothing_created(pb, rt, daemon, work, pod)
        # Nothing written through the links.
        assert sorted(p.name for p in outside.iterdir()) == ["victim"]
        assert victim.read_text() == "untouched\n"
        # The same pod still takes a proper container.
        ok = rt.CreateContainer(pb.api.CreateContainerRequest(
            pod_sandbox_id=pod, config=cfg(log_path="c/0.log"), sandbox_config=pcfg)).container_id
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=ok))
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_socket_mode_and_owner(daemon):
    st = os.stat(daemon.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_uid == os.geteuid() and st.st_gid == os.getegid()


# ---- TLS -----------------------------------------------------------------------------------------

def expired_client(certs, d):
    """A client certificate from the right CA whose validity ended yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    ca_cert = x509.load_pem_x509_certificate(certs.read(certs.ca))
    ca_key = serialization.load_pem_private_key(certs.read(certs.ca.replace(".crt", ".key")),
                                                None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    crt, k = d / "expired.crt", d / "expired.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(crt), str(k)


def h2_bytes_back(port, ctx):
    """Connects, sends the HTTP/2 preface, a SETTINGS frame and a Version call,
    and returns what came back (b"" when the handshake or the first read
    failed: the server refused the peer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(H.PREFACE + H.settings_frame())
                return t.recv(4096)
        except (ssl.SSLError, ConnectionError, OSError):
            return b""


@pytest.mark.parametrize("client", ["good", "none", "other", "expired"])
def test_tls_clients(agentd_factory, certs, tmp_path, client):
    a = agentd_factory(tls=True)
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(["h2"])
    if client == "good":
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    elif client == "other":
        ctx.load_cert_chain(certs.other_cert, certs.other_key)
    elif client == "expired":
        ctx.load_cert_chain(*expired_client(certs, tmp_path))
    got = h2_bytes_back(a.tls_port, ctx)
    if client == "good":
        assert got[3:4] == b"\x04", got  # the server's SETTINGS
    else:
        assert got == b"", got
    a.assert_healthy()


def test_layer_over_the_unpack_limit(pb, agentd_factory, registry, tmp_path):
    """[images] max_unpacked_layer_size bounds what a layer may unpack to
    (a gzip bomb): busybox's layer is over 1 MiB uncompressed, so its pull
    fails with RESOURCE_EXHAUSTED naming the limit, and no image is kept."""
    conf = tmp_path / "small.conf"
    conf.write_text("[images]\nmax_unpacked_layer_size = 1048576\n")
    a = agentd_factory(extra_args=["--config", str(conf)])
    ref = "%s/%s" % (registry.host, IMAGE_PATH)
    with a.unix_channel() as ch:
        img = pb.api_grpc.ImageServiceStub(ch)
        e = refused(img.PullImage, pb.api.PullImageRequest(image=pb.api.ImageSpec(image=ref)),
                    "unpack limit")
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(img.ListImages(pb.api.ListImagesRequest()).images) == 0
    assert list(Path(a.root, "layers").iterdir()) == []


def test_connections_per_peer(pb, agentd_factory, tmp_path):
    """[grpc] max_connections_per_peer: the local peer (uid 0) holds 5; a
    sixth is closed as it is accepted, before a byte of HTTP/2; closing one
    makes room; the refusals are counted in agentd's log at exit."""
    conf = tmp_path / "peer.conf"
    conf.write_text("[grpc]\nmax_connections_per_peer = 5\n")
    a = agentd_factory(extra_args=["--config", str(conf)])
    conns = []
    try:
        for _ in range(5):
            c = H.RawH2(unix_path=a.sock)
            c.start()
            assert c.read_frame(timeout=5) is not None  # the server's SETTINGS
            conns.append(c)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(a.sock)
        assert s.recv(64) == b""  # closed without a word
        s.close()
        # Counted at once (read now: the health checks below may be
        # refused too while the five are still being closed).
        with urllib.request.urlopen(a.metrics_url() + "/metrics", timeout=10) as r:
            body = r.read().decode()
        refused = [line for line in body.splitlines()
                   if line.startswith("agentd_grpc_refused_connections_total ")]
        assert refused == ["agentd_grpc_refused_connections_total 1"], refused
    finally:
        for c in conns[1:]:
            c.close()
    if conns:
        conns[0].close()
    deadline = time.monotonic() + 10
    while True:
        try:
            a.assert_healthy()
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    a.stop()
    assert "1 connections refused (max_connections_per_peer)" in a.stderr_text()
