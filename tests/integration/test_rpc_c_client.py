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
    r = probe("--timeout", "400", "--delay", "100", server["unix"], "stream", "s", "50")
    assert r["rc"] == 0, r
    assert r["status"] == "DEADLINE_EXCEEDED"
    assert 1 <= len(r["msgs"]) < 10


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
