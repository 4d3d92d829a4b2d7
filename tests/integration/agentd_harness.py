"""Shared helpers for agentd's integration tests (an independent client).

Everything here talks to a real agentd process: it is started with private
--root/--state directories under a temp dir, its stderr goes to a file that is
printed when something fails, and it is stopped by PID. The Python gRPC stubs
are generated from the project's own .proto files at test time, so the tests
speak exactly the wire format the daemon was built from.

Nothing here depends on pytest; conftest.py wraps it in fixtures.
"""

import atexit
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "ThreadSanitizer",
)


# ---------------------------------------------------------------- locations
def source_dir():
    d = os.environ.get("AGENTD_SOURCE_DIR")
    if d:
        return os.path.abspath(d)
    return os.path.abspath(os.path.join(HERE, "..", ".."))


def build_dir():
    """AGENTD_BUILD_DIR (set by ctest), else the first build dir with an agentd."""
    d = os.environ.get("AGENTD_BUILD_DIR")
    if d:
        return os.path.abspath(d)
    src = source_dir()
    for name in ("build-tests", "build-test", "build"):
        cand = os.path.join(src, name)
        if os.access(os.path.join(cand, "agent", "agentd"), os.X_OK):
            return cand
    return os.path.join(src, "build")


def agentd_binary():
    return os.path.join(build_dir(), "agent", "agentd")


def agentctl_binary():
    return os.path.join(build_dir(), "ctl", "agentctl")


# ---------------------------------------------------------------- stubs
_STUBS = None


def generate_stubs(dest):
    """Generates the Python gRPC modules for the project's protos into dest.

    grpc/health/v1/health.proto cannot be generated with its directory as a
    package path: `from grpc.health.v1 import health_pb2` would look inside
    the real `grpc` package (grpcio). It is generated with its own directory
    as the include root instead, so it becomes the top-level module
    `health_pb2`; the wire names (package grpc.health.v1) are unchanged."""
    proto = os.path.join(source_dir(), "proto")
    base = [sys.executable, "-m", "grpc_tools.protoc", "--python_out=" + dest,
            "--grpc_python_out=" + dest]
    subprocess.run(base + ["-I", proto, "cri/api.proto", "agent/v1/agent.proto"],
                   check=True, cwd=proto)
    subprocess.run(base + ["-I", os.path.join(proto, "grpc", "health", "v1"), "health.proto"],
                   check=True, cwd=proto)
    # Regular packages (with __init__.py) win over any namespace package of
    # the same name elsewhere on sys.path.
    for pkg in ("cri", "agent", os.path.join("agent", "v1")):
        open(os.path.join(dest, pkg, "__init__.py"), "a").close()


def load_stubs(dest=None):
    """Generates the stubs once per process and imports them.

    Returns a namespace: api (runtime.v1 messages), api_grpc, agent, agent_grpc,
    health, health_grpc, and dir (where they were generated)."""
    global _STUBS
    if _STUBS is not None:
        return _STUBS
    if dest is None:
        dest = tempfile.mkdtemp(prefix="agentd-stubs-")
        # Imported modules stay loaded; their files go with the process.
        atexit.register(shutil.rmtree, dest, ignore_errors=True)
    generate_stubs(dest)
    sys.path.insert(0, dest)
    import importlib
    ns = types.SimpleNamespace(
        dir=dest,
        api=importlib.import_module("cri.api_pb2"),
        api_grpc=importlib.import_module("cri.api_pb2_grpc"),
        agent=importlib.import_module("agent.v1.agent_pb2"),
        agent_grpc=importlib.import_module("agent.v1.agent_pb2_grpc"),
        health=importlib.import_module("health_pb2"),
        health_grpc=importlib.import_module("health_pb2_grpc"),
    )
    _STUBS = ns
    return ns


# ---------------------------------------------------------------- certificates
def _openssl(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))


def _make_ca(d, name):
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", name + ".key", "-out", name + ".crt", "-days", "2",
              "-subj", "/CN=agentd test " + name,
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)


def _make_leaf(d, name, ca, cn, ext, ou=None):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n" + ext + "\n")
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", name + ".key", "-out", name + ".csr",
              "-subj", ("/OU=%s" % ou if ou else "") + "/CN=" + cn], d)
    _openssl(["x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
              "-CAcreateserial", "-out", name + ".crt", "-days", "2",
              "-extfile", name + ".ext"], d)


def make_certs(d):
    """A CA, a server cert (SAN IP:127.0.0.1, DNS:localhost), a client cert
    from the same CA and a client cert from another CA. Returns a namespace of
    paths (ca, server_cert, server_key, client_cert, client_key, other_ca,
    other_cert, other_key) and a read(path) -> bytes helper."""
    os.makedirs(d, exist_ok=True)
    _make_ca(d, "ca")
    _make_leaf(d, "server", "ca", "localhost",
               "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost")
    # OU=admin: agentd's [authz] takes the role from the OU.
    _make_leaf(d, "client", "ca", "agentd-test-client", "extendedKeyUsage=clientAuth",
               ou="admin")
    _make_ca(d, "otherca")
    _make_leaf(d, "other", "otherca", "agentd-test-intruder", "extendedKeyUsage=clientAuth")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return types.SimpleNamespace(
        dir=d, ca=p("ca.crt"), server_cert=p("server.crt"), server_key=p("server.key"),
        client_cert=p("client.crt"), client_key=p("client.key"), other_ca=p("otherca.crt"),
        other_cert=p("other.crt"), other_key=p("other.key"),
        read=lambda path: open(path, "rb").read())


# ---------------------------------------------------------------- processes
def free_port():
    """A free TCP port on 127.0.0.1 (bind port 0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def proc_status(pid):
    """/proc/PID/status as a dict; memory fields (VmRSS, VmHWM ...) in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            v = v.strip()
            if v.endswith(" kB"):
                v = int(v[:-3])
            out[k] = v
    return out


def rss_kib(pid):
    return proc_status(pid)["VmRSS"]


class AgentdError(AssertionError):
    pass


class Agentd:
    """One agentd process with private dirs under `workdir`.

    tls: None, or a certs namespace from make_certs() to also listen with
    mutual TLS on a free 127.0.0.1 port. extra_args are appended."""

    def __init__(self, workdir=None, certs=None, debug_service=True, max_msg_size=None,
                 extra_args=(), log_level="info", env=None, tcp_insecure=False, nofile=None):
        self.own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="agentd-t-")
        self.root = os.path.join(self.workdir, "root")
        self.state = os.path.join(self.workdir, "state")
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.state, exist_ok=True)
        self.sock = os.path.join(self.state, "agentd.sock")
        self.stderr_path = os.path.join(self.workdir, "agentd.stderr")
        self.certs = certs
        self.tls_port = free_port() if certs else None
        self.tcp_port = free_port() if tcp_insecure else None
        # The metrics endpoint on a free port (its default 9101 would be
        # shared by every agentd of the suite); metrics_url() finds it.
        args = [agentd_binary(), "--root", self.root, "--state", self.state,
                "--listen", self.sock, "--log-level", log_level,
                "--metrics-listen", "127.0.0.1:0"]
        if debug_service:
            args.append("--debug-service")
        if max_msg_size is not None:
            args += ["--max-msg-size", str(max_msg_size)]
        if certs:
            args += ["--tls-listen", "127.0.0.1:%d" % self.tls_port,
                     "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
                     "--tls-client-ca", certs.ca]
        if tcp_insecure:
            args += ["--tcp-insecure-listen", "127.0.0.1:%d" % self.tcp_port]
        args += list(extra_args)
        self.args = args
        e = dict(os.environ)
        # Sanitizer reports must reach the stderr file, and a leak must fail
        # the exit status check.
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        if env:
            e.update(env)
        self.env = e
        self.nofile = nofile  # RLIMIT_NOFILE for the daemon, or None
        self.pass_fds = ()  # fds the daemon inherits (socket activation)
        self.proc = None
        self.returncode = None

    # -- lifecycle
    def start(self, timeout=30.0):
        if not os.access(self.args[0], os.X_OK):
            raise AgentdError("agentd binary not found: %s (set AGENTD_BUILD_DIR)" % self.args[0])
        self._stderr = open(self.stderr_path, "wb")
        preexec = None
        if self.nofile is not None:
            import resource
            n = self.nofile

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr,
                                     env=self.env, start_new_session=True,
                                     preexec_fn=preexec, pass_fds=self.pass_fds)
        self.wait_ready(timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def fail(self, msg):
        raise AgentdError("%s\n--- agentd %s stderr ---\n%s--- end ---"
                          % (msg, " ".join(self.args), self.stderr_text()))

    def wait_ready(self, timeout):
        """Waits until a Version call over the unix socket succeeds."""
        import grpc
        pb = load_stubs()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                self.fail("agentd exited with %s before becoming ready" % self.proc.returncode)
            if os.path.exists(self.sock):
                try:
                    with self.unix_channel() as ch:
                        r = pb.api_grpc.RuntimeServiceStub(ch).Version(
                            pb.api.VersionRequest(version="v1"), timeout=2)
                        if r.runtime_name:
                            return
                except grpc.RpcError as e:
                    last = e
            time.sleep(0.05)
        self.fail("agentd not ready after %.0fs (last error: %r)" % (timeout, last))

    def metrics_url(self):
        """http(s)://host:port of the /metrics, /healthz, /readyz endpoint,
        as agentd logged it, or None."""
        import re
        m = re.search(r"metrics on (https?://\S+):(\d+)/metrics", self.stderr_text())
        return "%s:%s" % (m.group(1), m.group(2)) if m else None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=20.0, expect_rc=0):
        """SIGTERM, SIGKILL after `timeout`; asserts exit status and that no
        sanitizer reported anything. Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                self._close()
                self.fail("agentd did not exit within %.0fs of SIGTERM (killed)" % timeout)
        self.returncode = self.proc.returncode
        self._close()
        self.check_sanitizers()
        if expect_rc is not None and self.returncode != expect_rc:
            self.fail("agentd exited with %s, expected %s" % (self.returncode, expect_rc))

    def kill(self):
        """Unconditional cleanup (no checks)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self):
        f = getattr(self, "_stderr", None)
        if f is not None:
            f.close()
            self._stderr = None

    def check_sanitizers(self):
        text = self.stderr_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                self.fail("sanitizer report (%r) in agentd's stderr" % m)

    def cleanup(self):
        self.kill()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- clients
    def unix_target(self):
        return "unix:" + os.path.abspath(self.sock)

    def unix_channel(self, options=()):
        import grpc
        return grpc.insecure_channel(self.unix_target(), options=list(options))

    def tls_channel(self, client="good", options=()):
        """client: "good" (cert from the server's client CA), "none", or
        "other" (cert from an unrelated CA)."""
        import grpc
        c = self.certs
        kw = {"root_certificates": c.read(c.ca)}
        if client == "good":
            kw.update(private_key=c.read(c.client_key), certificate_chain=c.read(c.client_cert))
        elif client == "other":
            kw.update(private_key=c.read(c.other_key), certificate_chain=c.read(c.other_cert))
        elif client != "none":
            raise ValueError(client)
        creds = grpc.ssl_channel_credentials(**kw)
        opts = [("grpc.enable_http_proxy", 0)] + list(options)
        return grpc.secure_channel("127.0.0.1:%d" % self.tls_port, creds, options=opts)

    def channel(self, transport, options=()):
        if transport == "unix":
            return self.unix_channel(options)
        if transport == "tls":
            return self.tls_channel("good", options)
        raise ValueError(transport)

    def version(self, channel=None, timeout=5):
        """One Version call (on a new unix-socket connection unless given)."""
        pb = load_stubs()
        if channel is not None:
            return pb.api_grpc.RuntimeServiceStub(channel).Version(
                pb.api.VersionRequest(version="v1"), timeout=timeout)
        with self.unix_channel() as ch:
            return pb.api_grpc.RuntimeServiceStub(ch).Version(
                pb.api.VersionRequest(version="v1"), timeout=timeout)

    def assert_healthy(self):
        """Still running, and a fresh grpcio connection gets a Version answer."""
        if not self.alive():
            self.fail("agentd is no longer running (exit status %s)" % self.proc.returncode)
        r = self.version()
        assert r.runtime_name == "agentd", r
        if not self.alive():
            self.fail("agentd died")

    def rss_kib(self):
        return rss_kib(self.pid)

    def cpu_seconds(self):
        """utime + stime of the whole process so far."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- raw HTTP/2
# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 0x8


def frame(ftype, flags, stream_id, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", (n >> 16) & 0xff, n & 0xffff, ftype, flags,
                       stream_id & 0x7fffffff) + payload


def settings_frame(settings=None, ack=False):
    body = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, body)


def grpc_message(body, length=None, compressed=0):
    """The 5-byte gRPC length prefix + body; `length` overrides the prefix."""
    return struct.pack(">BI", compressed, len(body) if length is None else length) + body


def hpack_literal(name, value):
    """One header field as 'literal without indexing, new name', no Huffman
    (RFC 7541 6.2.2): simple and independent of any dynamic table state."""
    def s(b):
        return _hpack_int(len(b), 7, 0) + b
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"\x00" + s(name) + s(value)


def _hpack_int(v, prefix_bits, first):
    mx = (1 << prefix_bits) - 1
    if v < mx:
        return bytes([first | v])
    out = [first | mx]
    v -= mx
    while v >= 128:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def grpc_request_headers(path, authority="localhost", extra=()):
    h = [(":method", "POST"), (":scheme", "http"), (":path", path),
         (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")]
    return h + list(extra)


def header_block(headers):
    return b"".join(hpack_literal(k, v) for k, v in headers)


class Response:
    def __init__(self):
        self.headers = None
        self.trailers = None
        self.data = b""
        self.rst = None      # error code of a RST_STREAM
        self.ended = False

    def grpc_status(self):
        for h in (self.trailers, self.headers):
            if h and "grpc-status" in h:
                return int(h["grpc-status"])
        return None

    def grpc_message(self):
        for h in (self.trailers, self.headers):
            if h and "grpc-message" in h:
                return h["grpc-message"]
        return None

    def __repr__(self):
        return "Response(headers=%r, trailers=%r, data=%d bytes, rst=%r, ended=%r)" % (
            self.headers, self.trailers, len(self.data), self.rst, self.ended)


class RawH2:
    """A hand-driven HTTP/2 client connection (prior knowledge h2c on a unix
    socket or TCP, or h2 over TLS) for sending what a well-behaved client
    never would. Response header blocks are decoded with python3-hpack."""

    def __init__(self, unix_path=None, tcp=None, tls_context=None, timeout=5.0):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix_path)
        else:
            self.sock = socket.create_connection(tcp, timeout=timeout)
            if tls_context is not None:
                self.sock = tls_context.wrap_socket(self.sock, server_hostname="localhost")
        import hpack
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.buf = b""
        self.closed = False
        self.goaway = None   # (last_stream_id, error_code)
        self.responses = {}
        self.next_stream = 1
        self._hdr_sid = None
        self._hdr_block = b""
        self._hdr_flags = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """sendall that reports (instead of raising) a connection the peer closed."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, ssl.SSLError, OSError):
            return False

    def start(self, settings=None):
        self.send(PREFACE + settings_frame(settings or {}))

    def new_stream(self):
        sid = self.next_stream
        self.next_stream += 2
        return sid

    def request(self, path, body=None, end_stream=True, extra_headers=(), sid=None):
        """HEADERS (+ DATA with `body`, already gRPC-framed). Returns the stream id."""
        sid = sid or self.new_stream()
        block = header_block(grpc_request_headers(path, extra=extra_headers))
        flags = END_HEADERS | (END_STREAM if body is None and end_stream else 0)
        out = frame(HEADERS, flags, sid, block)
        if body is not None:
            out += frame(DATA, END_STREAM if end_stream else 0, sid, body)
        self.send(out)
        return sid

    # -- reading
    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, ssl.SSLError, OSError):
            chunk = b""
        if not chunk:
            self.closed = True
        self.buf += chunk
        return chunk

    def read_frame(self, timeout=5.0):
        """The next frame as (type, flags, stream_id, payload); None on
        timeout or once the peer closed. Answers SETTINGS and PING."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7fffffff
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    self._handle(ftype, flags, sid, payload)
                    return ftype, flags, sid, payload
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or self._recv(left) is None:
                return None

    def _handle(self, ftype, flags, sid, payload):
        if ftype == SETTINGS and not flags & ACK:
            self.try_send(settings_frame(ack=True))
        elif ftype == PING and not flags & ACK:
            self.try_send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7fffffff, code)
        elif ftype == RST_STREAM:
            self._resp(sid).rst = struct.unpack(">I", payload[:4])[0]
        elif ftype == DATA:
            r = self._resp(sid)
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            r.data += payload
            if payload:
                # Keep the server's send windows open.
                inc = struct.pack(">I", len(payload))
                self.try_send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))
            if flags & END_STREAM:
                r.ended = True
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                self._hdr_sid, self._hdr_block, self._hdr_flags = sid, b"", flags
            self._hdr_block += payload
            if flags & END_HEADERS:
                hdrs = {}
                for k, v in self.decoder.decode(self._hdr_block):
                    k = k.decode() if isinstance(k, bytes) else k
                    v = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                    hdrs[k] = v
                r = self._resp(self._hdr_sid)
                if r.headers is None and ":status" in hdrs:
                    r.headers = hdrs
                else:
                    r.trailers = hdrs
                if self._hdr_flags & END_STREAM:
                    r.ended = True

    def _resp(self, sid):
        return self.responses.setdefault(sid, Response())

    def wait_stream(self, sid, timeout=5.0):
        """Reads until stream `sid` ended, was reset, or the connection went
        away; returns its Response (check .ended/.rst/self.closed)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.responses.get(sid)
            if r is not None and (r.ended or r.rst is not None):
                return r
            if self.closed or (self.goaway is not None and sid > self.goaway[0]):
                return self._resp(sid)
            left = deadline - time.monotonic()
            if left <= 0:
                return self._resp(sid)
            if self.read_frame(left) is None and not self.closed:
                return self._resp(sid)

    def wait_closed(self, timeout):
        """Drains frames until the peer closes; True if it did in time."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.read_frame(left)
        return True


def tls_client_context(certs, client="good"):
    """An ssl context for RawH2 over TLS (ALPN h2) with the test CA."""
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.set_alpn_protocols(["h2"])
    if client == "good":
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    elif client == "other":
        ctx.load_cert_chain(certs.other_cert, certs.other_key)
    return ctx
