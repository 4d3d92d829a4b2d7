"""libadrpc's C client against an independent gRPC server (Python grpcio).

A grpcio server implementing agent.v1.DebugService listens on a unix socket
and on TLS with mutual authentication; tests/unit/rpc_client_probe (built with
the unit tests) calls it: unary, streaming, an error status with non-ASCII
text, deadlines, and mTLS refusal.
"""
import os
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc")

SRC = os.environ.get("AGENTD_SOURCE_DIR",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("AGENTD_BUILD_DIR", os.path.join(SRC, "build"))
PROBE = os.path.join(BUILD, "tests", "unit", "rpc_client_probe")

ERROR_TEXT = "kein Eintrag: 100% \u00fcber \u65e5\u672c %41"


@pytest.fixture(scope="module")
def tmp():
    with tempfile.TemporaryDirectory(prefix="rpc_c_client.") as d:
        yield d


@pytest.fixture(scope="module")
def stubs(tmp):
    out = os.path.join(tmp, "gen")
    os.makedirs(out)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(SRC, "proto"),
                    "--python_out=" + out, "--grpc_python_out=" + out, "agent/v1/agent.proto"],
                   check=True)
    sys.path.insert(0, out)
    from agent.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
    return agent_pb2, agent_pb2_grpc


@pytest.fixture(scope="module")
def certs(tmp):
    d = os.path.join(tmp, "certs")
    os.makedirs(d)
    script = r"""
set -e
for ca in ca other-ca; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout $ca.key -out $ca.pem -days 2 -subj /CN=$ca
done
mk() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout $1.key -out $1.csr -subj /CN=$2
  printf '%s\n' "$3" > $1.ext
  openssl x509 -req -in $1.csr -CA $4.pem -CAkey $4.key -CAcreateserial \
    -out $1.pem -days 2 -extfile $1.ext
}
mk server localhost 'subjectAltName=DNS:localhost,IP:127.0.0.1' ca
mk client probe-client 'extendedKeyUsage=clientAuth' ca
mk rogue rogue-client 'extendedKeyUsage=clientAuth' other-ca
"""
    subprocess.run(["sh", "-c", script], cwd=d, check=True, capture_output=True)
    return d


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def server(tmp, stubs, certs):
    agent_pb2, agent_pb2_grpc = stubs

    class Debug(agent_pb2_grpc.DebugServiceServicer):
        def Echo(self, request, context):
            if request.delay_ms:
                end = time.monotonic() + request.delay_ms / 1000
                while time.monotonic() < end and context.is_active():
                    time.sleep(0.01)
            if request.message.startswith("error:"):
                context.abort(grpc.StatusCode.NOT_FOUND, request.message[6:])
            if request.message == "whoami":
                auth = context.auth_context()
                cn = auth.get("x509_common_name", [b"(none)"])[0].decode()
                return agent_pb2.EchoResponse(message=cn)
            return agent_pb2.EchoResponse(message=request.message,
                                          payload=b"p" * request.response_bytes)

        def StreamEcho(self, request, context):
            for i in range(request.repeat):
                if request.delay_ms:
                    time.sleep(request.delay_ms / 1000)
                yield agent_pb2.EchoResponse(message=request.message, index=i)

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    agent_pb2_grpc.add_DebugServiceServicer_to_server(Debug(), srv)
    sock = os.path.join(tmp, "debug.sock")
    srv.add_insecure_port("unix:" + sock)
    creds = grpc.ssl_server_credentials(
        [(read(os.path.join(certs, "server.key")), read(os.path.join(certs, "server.pem")))],
        root_certificates=read(os.path.join(certs, "ca.pem")),
        require_client_auth=True)
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    yield {"unix": "unix://" + sock, "tls": "tls://127.0.0.1:%d" % port}
    srv.stop(0)


def probe(*args, timeout=30):
    assert os.path.exists(PROBE), "build the unit tests first: " + PROBE
    p = subprocess.run([PROBE] + list(args), capture_output=True, timeout=timeout)
    out = {}
    msgs = []
    for line in p.stdout.decode("utf-8").splitlines():
        k, _, v = line.partition("=")
        if k == "msg":
            msgs.append(v)
        else:
            out[k] = v
    out["msgs"] = msgs
    out["rc"] = p.returncode
    return out


def tls_args(certs, cert="client", ca="ca"):
    a = ["--ca", os.path.join(certs, ca + ".pem")]
    if cert:
        a += ["--cert", os.path.join(certs, cert + ".pem"),
              "--key", os.path.join(certs, cert + ".key")]
    return a


@pytest.mark.parametrize("kind", ["unix", "tls"])
def test_unary(server, certs, kind):
    extra = tls_args(certs) if kind == "tls" else []
    r = probe(*extra, server[kind], "unary", "hello from C")
    assert r["rc"] == 0, r
    assert r["status"] == "OK"
    assert r["reply"] == "hello from C"


@pytest.mark.parametrize("kind", ["unix", "tls"])
def test_stream(server, certs, kind):
    extra = tls_args(certs) if kind == "tls" else []
    r = probe(*extra, server[kind], "stream", "s", "25")
    assert r["rc"] == 0, r
    assert r["status"] == "OK"
    assert r["msgs"] == ["%d s" % i for i in range(25)]


def test_error_status_roundtrip(server):
    r = probe(server["unix"], "unary", "error:" + ERROR_TEXT)
    assert r["rc"] == 0, r
    assert r["status"] == "NOT_FOUND"
    assert r["message"] == ERROR_TEXT


def test_deadline(server):
    t0 = time.monotonic()
    r = probe("--timeout", "300", "--delay", "3000", server["unix"], "unary", "slow")
    assert r["rc"] == 0, r
    assert r["status"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - t0 < 2.5


def test_stream_deadline(server):
    # 50 messages 100 ms apart take 5 s; the 1.5 s deadline ends the stream
    # part way. The margin on both sides keeps this true on a loaded machine
    # (at 400 ms a load average of 24 delayed the first message past it).
    r = probe("--timeout", "1500", "--delay", "100", server["unix"], "stream", "s", "50")
    assert r["rc"] == 0, r
    assert r["status"] == "DEADLINE_EXCEEDED"
    assert 1 <= len(r["msgs"]) < 30


def test_client_size_limit(server):
    # EchoResponse{message: "x", payload: 994 bytes} is 3 + 997 = 1000 bytes.
    ok = probe("--max-recv", "1000", "--response-bytes", "994", server["unix"], "unary", "x")
    assert ok["status"] == "OK", ok
    assert ok["payload"] == "994"
    r = probe("--max-recv", "1000", "--response-bytes", "995", server["unix"], "unary", "x")
    assert r["rc"] == 0, r
    assert r["status"] == "RESOURCE_EXHAUSTED"


def test_tls_identity(server, certs):
    r = probe(*tls_args(certs), server["tls"], "unary", "whoami")
    assert r["status"] == "OK"
    assert r["reply"] == "probe-client"


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_mtls_refused(server, certs, cert):
    r = probe(*tls_args(certs, cert=cert), server["tls"], "unary", "x")
    assert r["rc"] == 2, r
    assert r["error"].startswith("unavailable"), r


def test_server_not_trusted(server, certs):
    r = probe(*tls_args(certs, ca="other-ca"), server["tls"], "unary", "x")
    assert r["rc"] == 2, r
    assert "certificate verify failed" in r["error"]


def test_wrong_server_name(server, certs):
    r = probe(*tls_args(certs), "--server-name", "not-the-server", server["tls"], "unary", "x")
    assert r["rc"] == 2, r


def test_connect_refused(tmp):
    ep = "unix://" + os.path.join(tmp, "nobody.sock")
    r = probe(ep, "unary", "x")
    assert r["rc"] == 2
    assert r["error"] == ("unavailable cannot connect to %s: No such file or directory "
                          "(is agentd running?)" % ep)


# ---------------------------------------------------------------------------
# The other direction: grpcio's client against libadrpc's server
# (tests/unit/rpc_server_probe), on a unix socket and on mutual TLS.

SERVER_PROBE = os.path.join(BUILD, "tests", "unit", "rpc_server_probe")
MAX_MSG = 65536


@pytest.fixture(scope="module")
def c_server(tmp, certs):
    assert os.path.exists(SERVER_PROBE), "build the unit tests first: " + SERVER_PROBE
    sock = os.path.join(tmp, "c-server", "probe.sock")
    p = subprocess.Popen([SERVER_PROBE, "--unix", sock, "--tcp", "127.0.0.1:0",
                          "--cert", os.path.join(certs, "server.pem"),
                          "--key", os.path.join(certs, "server.key"),
                          "--client-ca", os.path.join(certs, "ca.pem"),
                          "--max-msg", str(MAX_MSG), "--workers", "4"],
                         stdout=subprocess.PIPE, text=True)
    port = None
    for line in p.stdout:
        if line.startswith("port="):
            port = int(line.split("=")[1])
        if line.strip() == "ready":
            break
    assert port, "server probe did not start"
    yield {"unix": "unix:" + sock, "tls": "127.0.0.1:%d" % port, "proc": p}
    if p.poll() is None:
        p.terminate()
        assert p.wait(timeout=15) == 0


@pytest.fixture(params=["unix", "tls"])
def stub(request, c_server, certs, stubs):
    agent_pb2, agent_pb2_grpc = stubs
    if request.param == "unix":
        ch = grpc.insecure_channel(c_server["unix"])
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(os.path.join(certs, "ca.pem")),
            private_key=read(os.path.join(certs, "client.key")),
            certificate_chain=read(os.path.join(certs, "client.pem")))
        ch = grpc.secure_channel(c_server["tls"], creds,
                                 options=[("grpc.ssl_target_name_override", "localhost")])
    yield agent_pb2, agent_pb2_grpc.DebugServiceStub(ch), request.param
    ch.close()


def test_grpcio_unary(stub):
    pb, s, kind = stub
    r = s.Echo(pb.EchoRequest(message="hi", payload=b"\x00\x01" * 100), timeout=10)
    assert r.message == "hi" and r.payload == b"\x00\x01" * 100
    md = s.Echo(pb.EchoRequest(message="md:x-test"), metadata=[("x-test", "v1")], timeout=10)
    assert md.message == "v1"
    who = s.Echo(pb.EchoRequest(message="whoami"), timeout=10)
    assert ("CN=probe-client" in who.message) if kind == "tls" else who.message == "(none)"


def test_grpcio_stream(stub):
    pb, s, _ = stub
    got = [(m.index, m.message) for m in s.StreamEcho(pb.EchoRequest(message="m", repeat=300),
                                                      timeout=20)]
    assert got == [(i, "m") for i in range(300)]


def test_grpcio_error(stub):
    pb, s, _ = stub
    with pytest.raises(grpc.RpcError) as e:
        s.Echo(pb.EchoRequest(message="error:" + ERROR_TEXT), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == ERROR_TEXT


def test_grpcio_unknown_method(c_server, stubs):
    pb, _ = stubs
    with grpc.insecure_channel(c_server["unix"]) as ch:
        call = ch.unary_unary("/agent.v1.DebugService/Nope",
                              request_serializer=pb.EchoRequest.SerializeToString,
                              response_deserializer=pb.EchoResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            call(pb.EchoRequest(message="x"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "unknown method /agent.v1.DebugService/Nope" in e.value.details()


def test_grpcio_deadline_and_cancel(stub):
    pb, s, _ = stub
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        s.Echo(pb.EchoRequest(message="slow", delay_ms=5000), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 3
    it = s.StreamEcho(pb.EchoRequest(message="c", repeat=100000), timeout=20)
    for i, _m in enumerate(it):
        if i == 5:
            it.cancel()
            break
    # still serving
    assert s.Echo(pb.EchoRequest(message="after"), timeout=10).message == "after"


def test_grpcio_size_limits(stub):
    pb, s, _ = stub

    def req_of(size):
        n = size - 4
        while True:
            r = pb.EchoRequest(payload=b"x" * n)
            if r.ByteSize() == size:
                return r
            n += 1 if r.ByteSize() < size else -1

    assert len(s.Echo(req_of(MAX_MSG), timeout=10).payload) > 0
    with pytest.raises(grpc.RpcError) as e:
        s.Echo(req_of(MAX_MSG + 1), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as e:
        s.Echo(pb.EchoRequest(response_bytes=MAX_MSG), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpcio_mtls_refused(c_server, certs, stubs):
    pb, pbg = stubs
    for cert in (None, "rogue"):
        kw = {"root_certificates": read(os.path.join(certs, "ca.pem"))}
        if cert:
            kw["private_key"] = read(os.path.join(certs, cert + ".key"))
            kw["certificate_chain"] = read(os.path.join(certs, cert + ".pem"))
        ch = grpc.secure_channel(c_server["tls"], grpc.ssl_channel_credentials(**kw),
                                 options=[("grpc.ssl_target_name_override", "localhost")])
        with pytest.raises(grpc.RpcError) as e:
            pbg.DebugServiceStub(ch).Echo(pb.EchoRequest(message="x"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        ch.close()


def test_grpcio_concurrent(c_server, stubs):
    pb, pbg = stubs
    with grpc.insecure_channel(c_server["unix"]) as ch:
        s = pbg.DebugServiceStub(ch)
        futs = [s.Echo.future(pb.EchoRequest(message=str(i), delay_ms=20), timeout=30)
                for i in range(200)]
        assert [f.result().message for f in futs] == [str(i) for i in range(200)]


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_session_resumption(c_server, certs, version):
    """A client that resumes its TLS session (with its client certificate)
    gets a working connection again, not a handshake failure."""
    import socket
    import ssl
    host, port = c_server["tls"].rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca.pem"))
    ctx.load_cert_chain(os.path.join(certs, "client.pem"), os.path.join(certs, "client.key"))
    ctx.set_alpn_protocols(["h2"])
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    def session(resume=None):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=resume) as s:
                assert s.selected_alpn_protocol() == "h2"
                s.sendall(preface)
                head = s.recv(9)  # the server's SETTINGS frame header
                assert len(head) == 9 and head[3] == 4, head
                return s.session, s.session_reused

    first, reused = session()
    assert not reused
    _, reused = session(first)
    assert reused


def test_zz_server_drains_on_sigterm(c_server, stubs):
    pb, pbg = stubs
    p = c_server["proc"]
    with grpc.insecure_channel(c_server["unix"]) as ch:
        s = pbg.DebugServiceStub(ch)
        fut = s.Echo.future(pb.EchoRequest(message="last", delay_ms=500), timeout=10)
        time.sleep(0.2)
        p.terminate()
        assert fut.result().message == "last"
    assert p.wait(timeout=10) == 0

