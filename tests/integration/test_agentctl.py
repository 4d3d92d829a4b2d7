"""agentctl against a real agentd (and against stand-in gRPC servers for the
error paths), plus agentd's start-up failures: bad config, corrupt state DB.

agentd and agentctl come from $AGENTD_BUILD_DIR; every agentd gets private
--root/--state dirs and socket under pytest's tmp_path and is stopped by PID.
"""

import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("AGENTD_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILD = os.environ.get("AGENTD_BUILD_DIR", os.path.join(SRC, "build"))
AGENTD = os.path.join(BUILD, "agent", "agentd")
AGENTCTL = os.path.join(BUILD, "ctl", "agentctl")

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

pytestmark = pytest.mark.skipif(
    not (os.access(AGENTD, os.X_OK) and os.access(AGENTCTL, os.X_OK)),
    reason="agentd/agentctl not built in %s" % BUILD)


class Daemon:
    def __init__(self, tmp, extra=(), config=None):
        self.root = str(tmp / "root")
        self.state = str(tmp / "state")
        self.sock = str(tmp / "state" / "agentd.sock")
        self.log = str(tmp / "agentd.log")
        # The metrics endpoint on a free port, not the shared default 9101.
        args = [AGENTD, "--root", self.root, "--state", self.state, "--listen", self.sock,
                "--metrics-listen", "127.0.0.1:0"]
        if config:
            args += ["--config", config]
        self.args = args + list(extra)
        self.proc = None

    def start(self):
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf)
        return self

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("agentd exited with %s:\n%s" % (self.proc.returncode,
                                                                     self.output()))
            if " ready on " in self.output():
                return self
            time.sleep(0.05)
        raise AssertionError("agentd not ready after %ss:\n%s" % (timeout, self.output()))

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        finally:
            self._logf.close()

    def stop(self):
        """SIGTERM by PID; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait_exit()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agentd(tmp_path):
    d = Daemon(tmp_path).start().wait_ready()
    yield d
    d.kill()


def ctl(*args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("AGENTD_ENDPOINT", None)
    if env:
        e.update(env)
    return subprocess.run([AGENTCTL] + list(args), capture_output=True, text=True, env=e,
                          timeout=timeout)


def fields(text):
    """'Key:  value' lines as a dict."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


def cgroup_version_of_host():
    r = subprocess.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"], capture_output=True,
                       text=True)
    return "v2" if r.stdout.strip() == "cgroup2fs" else "v1"


# ---------------------------------------------------------------- against agentd
def test_version(agentd):
    r = ctl("--endpoint", "unix://" + agentd.sock, "version")
    assert r.returncode == 0, r.stderr
    f = fields(r.stdout)
    assert f["RuntimeName"] == "agentd"
    assert f["Version"] == "0.1.0"
    assert f["RuntimeApiVersion"] == "v1"
    assert f["RuntimeVersion"] == f["ClientVersion"]  # same build
    assert f["RuntimeVersion"].startswith("0.1.0")
    assert r.stderr == ""

    r = ctl("-e", agentd.sock, "version", "-o", "json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["runtime_name"] == "agentd" and j["runtime_api_version"] == "v1"
    # -o yaml: the same tree, in YAML (strings like "0.1.0" and "v1" stay strings).
    r = ctl("-e", agentd.sock, "version", "-o", "yaml")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == j, r.stdout
    r = ctl("-e", agentd.sock, "version", "-o", "xml")
    assert r.returncode == EX_USAGE and "unknown output format 'xml'" in r.stderr

    # The endpoint from the environment.
    r = ctl("version", env={"AGENTD_ENDPOINT": "unix://" + agentd.sock})
    assert r.returncode == 0, r.stderr
    assert fields(r.stdout)["RuntimeName"] == "agentd"


def test_info(agentd):
    r = ctl("-e", "unix://" + agentd.sock, "info", "-o", "json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["root_dir"] == agentd.root
    assert j["state_dir"] == agentd.state
    assert j["pid"] == agentd.proc.pid
    assert j["listeners"] == ["unix://" + agentd.sock]
    assert j["api_version"] == "v1"
    assert j["cgroup_version"] == cgroup_version_of_host()
    assert j["kernel_version"] == os.uname().release
    assert j["hostname"] == socket.gethostname()
    assert j["schema_version"] >= 1
    assert abs(j["started_at"] / 1e9 - time.time()) < 120
    assert 0 <= j["uptime_seconds"] < 120
    r = ctl("-e", agentd.sock, "info", "-o", "yaml")
    assert r.returncode == 0, r.stderr
    y = yaml.safe_load(r.stdout)
    assert y.pop("uptime_seconds") >= j.pop("uptime_seconds")
    assert y == j, r.stdout
    r = ctl("-e", agentd.sock, "info", "-o")
    assert r.returncode == EX_USAGE and "'-o' needs an argument" in r.stderr, r.stderr

    r = ctl("-e", agentd.sock, "info")
    assert r.returncode == 0, r.stderr
    f = fields(r.stdout)
    assert f["RootDir"] == agentd.root
    assert f["Pid"] == str(agentd.proc.pid)
    assert f["Listeners"] == "unix://" + agentd.sock


def test_start_and_sigterm(tmp_path):
    d = Daemon(tmp_path, extra=["--log-level", "debug"]).start()
    try:
        d.wait_ready()
        assert os.path.exists(os.path.join(d.root, "agentd.db"))
        assert ("ready on unix://" + d.sock) in d.output()
        assert d.stop() == 0, d.output()
        assert "shutting down" in d.output()
    finally:
        d.kill()


def test_tls_listener(tmp_path):
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    d = Daemon(tmp_path, extra=["--tls-listen", "127.0.0.1:%d" % port,
                                "--tls-cert", certs["server.crt"],
                                "--tls-key", certs["server.key"],
                                "--tls-client-ca", certs["ca.crt"]]).start()
    try:
        d.wait_ready()
        ep = "tls://127.0.0.1:%d" % port
        r = ctl("-e", ep, "--cacert", certs["ca.crt"], "--cert", certs["client.crt"],
                "--key", certs["client.key"], "info", "-o", "json")
        assert r.returncode == 0, r.stderr + d.output()
        assert json.loads(r.stdout)["listeners"] == ["unix://" + d.sock, ep]
        # Without a client certificate the server refuses the connection.
        r = ctl("-e", ep, "--cacert", certs["ca.crt"], "version")
        assert r.returncode != 0
        assert r.stderr.startswith("agentctl: ")
        # TLS options without a tls:// endpoint are a usage error.
        r = ctl("-e", d.sock, "--cacert", certs["ca.crt"], "version")
        assert r.returncode == EX_USAGE
        assert d.stop() == 0, d.output()
    finally:
        d.kill()


# ---------------------------------------------------------------- agentctl errors
def test_missing_socket(tmp_path):
    sock = str(tmp_path / "nothing.sock")
    for cmd in ("version", "info"):
        r = ctl("-e", "unix://" + sock, cmd)
        assert r.returncode == EX_UNAVAILABLE
        assert r.stdout == ""
        assert r.stderr == ("agentctl: cannot connect to unix://%s: No such file or directory "
                            "(is agentd running?)\n" % sock)


def test_default_endpoint_message():
    if os.path.exists("/run/agentd/agentd.sock"):
        pytest.skip("a system agentd is running")
    r = ctl("version")
    assert r.returncode == EX_UNAVAILABLE
    assert r.stderr == ("agentctl: cannot connect to unix:///run/agentd/agentd.sock: "
                        "No such file or directory (is agentd running?)\n")


def test_usage_errors():
    for args in ([], ["bogus"], ["--bogus", "version"], ["info", "-o", "xml"],
                 ["info", "extra"], ["-t", "soon", "version"], ["--cert", "x", "version"]):
        r = ctl(*args)
        assert r.returncode == EX_USAGE, (args, r.stderr)
        assert r.stderr.startswith("agentctl: "), (args, r.stderr)
        assert "usage: agentctl" in r.stderr
    r = ctl("--help")
    assert r.returncode == 0 and "version" in r.stdout and "info" in r.stdout
    r = ctl("--version")
    assert r.returncode == 0 and r.stdout.startswith("agentctl ")


def _grpc_server(sock, handlers):
    """A grpcio server on `sock` with generic handlers {path: fn(bytes) -> bytes}."""
    import grpc

    class Generic(grpc.GenericRpcHandler):
        def service(self, details):
            fn = handlers.get(details.method)
            if fn is None:
                return None
            return grpc.unary_unary_rpc_method_handler(fn)

    srv = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                      handlers=[Generic()])
    srv.add_insecure_port("unix:" + sock)
    srv.start()
    return srv


def test_grpc_error_is_reported(tmp_path):
    """A server without the method: the gRPC code name and message are printed."""
    pytest.importorskip("grpc")
    sock = str(tmp_path / "empty.sock")
    srv = _grpc_server(sock, {})
    try:
        r = ctl("-e", "unix://" + sock, "version")
        assert r.returncode == EX_UNAVAILABLE, r.stderr
        assert r.stderr.startswith(
            "agentctl: runtime.v1.RuntimeService/Version: UNIMPLEMENTED: "), r.stderr
        assert r.stdout == ""
    finally:
        srv.stop(None)


def test_timeout(tmp_path):
    pytest.importorskip("grpc")
    sock = str(tmp_path / "slow.sock")

    def slow(request, context):
        time.sleep(3)
        return b""

    srv = _grpc_server(sock, {"/runtime.v1.RuntimeService/Version": slow})
    try:
        t0 = time.monotonic()
        r = ctl("-e", "unix://" + sock, "--timeout", "0.5", "version")
        assert time.monotonic() - t0 < 2.5
        assert r.returncode == EX_TEMPFAIL, r.stderr
        assert "DEADLINE_EXCEEDED" in r.stderr
    finally:
        srv.stop(None)


# ---------------------------------------------------------------- agentd start-up errors
@pytest.mark.parametrize("text,line,needle", [
    ("[agentd]\nlog_level = info\n[grpc]\nworkers = lots\n", 4, "workers: invalid value 'lots'"),
    ("[agentd]\n# a comment\nlog_levle = info\n", 3, "unknown key 'log_levle'"),
    ("[agentd]\n[grcp]\nworkers = 2\n", 2, "unknown section [grcp]"),
    ("[grpc]\nmax_recv_msg_size = 0\n", 2, "max_recv_msg_size"),
    ("[grpc]\ndebug_service = perhaps\n", 2, "debug_service"),
])
def test_bad_config(tmp_path, text, line, needle):
    conf = tmp_path / "agentd.conf"
    conf.write_text(text)
    d = Daemon(tmp_path, config=str(conf)).start()
    try:
        assert d.wait_exit() == 2
        out = d.output()
        assert out.startswith("agentd: %s:%d: " % (conf, line)), out
        assert needle in out, out
        assert not os.path.exists(d.sock)
    finally:
        d.kill()


def test_tls_listen_needs_files(tmp_path):
    d = Daemon(tmp_path, extra=["--tls-listen", "127.0.0.1:0"]).start()
    try:
        assert d.wait_exit() == 2
        assert "tls_cert, tls_key and tls_client_ca" in d.output()
    finally:
        d.kill()


def test_corrupt_db(tmp_path):
    os.makedirs(tmp_path / "root")
    db = tmp_path / "root" / "agentd.db"
    junk = b"SQLite format 3\x00" + os.urandom(8192)
    db.write_bytes(junk)
    before = hashlib.sha256(junk).hexdigest()
    d = Daemon(tmp_path).start()
    try:
        assert d.wait_exit() == 1
        out = d.output()
        lines = [l for l in out.splitlines() if l.strip()]
        assert len(lines) == 1, out
        assert str(db) in lines[0] and "error" in lines[0], out
        assert "corrupt" in lines[0] or "cannot be read" in lines[0], out
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
        assert sorted(os.listdir(tmp_path / "root")) == ["agentd.db"]
        assert not os.path.exists(d.sock)
    finally:
        d.kill()


# ---------------------------------------------------------------- agentd services (grpcio)
@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """Python stubs generated from the project's protos."""
    pytest.importorskip("grpc_tools")
    import importlib
    d = str(tmp_path_factory.mktemp("stubs"))
    proto = os.path.join(SRC, "proto")
    base = [sys.executable, "-m", "grpc_tools.protoc", "--python_out=" + d,
            "--grpc_python_out=" + d]
    subprocess.run(base + ["-I", proto, "cri/api.proto"], check=True)
    # health.proto as a top-level module: grpc.health.* would shadow grpcio.
    subprocess.run(base + ["-I", os.path.join(proto, "grpc", "health", "v1"), "health.proto"],
                   check=True)
    open(os.path.join(d, "cri", "__init__.py"), "a").close()
    sys.path.insert(0, d)
    try:
        mods = {n: importlib.import_module(m) for n, m in (
            ("api", "cri.api_pb2"), ("api_grpc", "cri.api_pb2_grpc"),
            ("health", "health_pb2"), ("health_grpc", "health_pb2_grpc"))}
    finally:
        sys.path.remove(d)
    return type("Stubs", (), mods)


def test_cri_rpcs_unimplemented(agentd, stubs):
    import grpc
    with grpc.insecure_channel("unix:" + agentd.sock) as ch:
        rt = stubs.api_grpc.RuntimeServiceStub(ch)
        im = stubs.api_grpc.ImageServiceStub(ch)
        calls = [
            ("runtime.v1.RuntimeService/CheckpointContainer",
             lambda: rt.CheckpointContainer(stubs.api.CheckpointContainerRequest(), timeout=10)),
            ("runtime.v1.RuntimeService/StreamContainers",
             lambda: list(rt.StreamContainers(stubs.api.StreamContainersRequest(), timeout=10))),
            ("runtime.v1.ImageService/StreamImages",
             lambda: list(im.StreamImages(stubs.api.StreamImagesRequest(), timeout=10))),
        ]
        for name, call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, name
            assert e.value.details() == name + " is not implemented yet"
        assert rt.Version(stubs.api.VersionRequest(version="v1"), timeout=10).runtime_name \
            == "agentd"


def test_health_check_and_watch_across_shutdown(tmp_path, stubs):
    import grpc
    d = Daemon(tmp_path).start()
    try:
        d.wait_ready()
        h = stubs.health
        SERVING, NOT_SERVING = h.HealthCheckResponse.SERVING, h.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel("unix:" + d.sock) as ch:
            stub = stubs.health_grpc.HealthStub(ch)
            for svc in ("", "runtime.v1.RuntimeService", "runtime.v1.ImageService",
                        "agent.v1.AgentService", "grpc.health.v1.Health"):
                assert stub.Check(h.HealthCheckRequest(service=svc), timeout=10).status \
                    == SERVING, svc
            for svc in ("agent.v1.DebugService", "nope.Service"):  # debug service is off
                with pytest.raises(grpc.RpcError) as e:
                    stub.Check(h.HealthCheckRequest(service=svc), timeout=10)
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
            watch = stub.Watch(h.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == SERVING
            t0 = time.monotonic()
            os.kill(d.proc.pid, signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            with pytest.raises(grpc.RpcError):
                next(watch)
        assert d.wait_exit() == 0, d.output()
        # The Watch ended at once: no drain timeout (5 s) was waited out for it.
        assert time.monotonic() - t0 < 4, d.output()
    finally:
        d.kill()


def test_health_watch_cap(tmp_path, stubs):
    """Each Watch holds a worker: with 2 workers only 1 may be open at a time."""
    import grpc
    conf = tmp_path / "agentd.conf"
    conf.write_text("[grpc]\nworkers = 2\n")
    d = Daemon(tmp_path, config=str(conf)).start()
    try:
        d.wait_ready()
        h = stubs.health
        with grpc.insecure_channel("unix:" + d.sock) as ch:
            stub = stubs.health_grpc.HealthStub(ch)
            first = stub.Watch(h.HealthCheckRequest(service=""), timeout=30)
            assert next(first).status == h.HealthCheckResponse.SERVING
            second = stub.Watch(h.HealthCheckRequest(service=""), timeout=30)
            with pytest.raises(grpc.RpcError) as e:
                next(second)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The remaining worker still serves.
            r = ctl("-e", d.sock, "info")
            assert r.returncode == 0, r.stderr
            first.cancel()
            # Once cancelled, the slot is free again.
            deadline = time.monotonic() + 10
            while True:
                again = stub.Watch(h.HealthCheckRequest(service=""), timeout=30)
                try:
                    assert next(again).status == h.HealthCheckResponse.SERVING
                    again.cancel()
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "Watch slot never freed"
                    time.sleep(0.1)
        assert d.stop() == 0, d.output()
    finally:
        d.kill()


# ---------------------------------------------------------------- helpers
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_certs(d):
    """A CA with a server (127.0.0.1) and a client certificate, EC P-256."""
    os.makedirs(d, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=agentctl test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "extendedKeyUsage=serverAuth\n"
                                 "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", name + ".key", "-out", name + ".csr",
                # OU=admin: the client's role under agentd's [authz].
                "-subj", ("/OU=admin" if name == "client" else "") + "/CN=" + name)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "2",
                "-extfile", name + ".ext")
    return {n: os.path.join(d, n) for n in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
