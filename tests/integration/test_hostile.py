"""Hostile peers against agentd's HTTP/2 + gRPC transport, with raw sockets
and hand-built HTTP/2 frames. After every case agentd must still be running
and answer a normal grpcio Version call on a new connection."""

import os
import socket
import struct
import threading
import time

import pytest

import agentd_harness as H
from agentd_harness import (CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM,
                            frame)


@pytest.fixture
def agentd(agentd_factory):
    """A fresh daemon per case: a crash is pinned on the case that caused it,
    and memory growth is measured from a clean start. It must exit 0 and
    sanitizer-clean at the end (checked by the factory)."""
    return agentd_factory(tls=True)

VERSION = "/runtime.v1.RuntimeService/Version"
ECHO = "/agent.v1.DebugService/Echo"
RESOURCE_EXHAUSTED = 8
OK = 0


@pytest.fixture(autouse=True)
def still_healthy(agentd):
    """Each hostile case is followed by a well-behaved client."""
    agentd.assert_healthy()
    yield
    agentd.assert_healthy()


def version_body(pb):
    return H.grpc_message(pb.api.VersionRequest(version="v1").SerializeToString())


def raw(agentd, transport="unix", **kw):
    """A RawH2 connection: h2c on the unix socket, or h2 over mutual TLS."""
    if transport == "tls":
        return H.RawH2(tcp=("127.0.0.1", agentd.tls_port),
                       tls_context=H.tls_client_context(agentd.certs), **kw)
    return H.RawH2(unix_path=agentd.sock, **kw)


# Cases that also run over TLS, where the bytes take another path (OpenSSL
# bufferevents) through agentd.
TRANSPORTS = pytest.mark.parametrize("transport", ["unix", "tls"])


@TRANSPORTS
def test_raw_h2_client_works(pb, agentd, transport):
    """The hand-written client is right: a proper request gets an answer
    (so that the failures below are the server's doing)."""
    with raw(agentd, transport) as c:
        c.start()
        sid = c.request(VERSION, version_body(pb))
        r = c.wait_stream(sid)
    assert r.headers and r.headers[":status"] == "200", r
    assert r.grpc_status() == OK, r
    resp = pb.api.VersionResponse.FromString(r.data[5:])
    assert resp.runtime_name == "agentd"


def test_random_bytes(agentd):
    rnd = os.urandom(64 * 1024)
    with raw(agentd) as c:
        c.try_send(rnd)
        assert c.wait_closed(5), "agentd kept a connection that sent garbage open"


def test_random_bytes_after_preface(agentd):
    with raw(agentd) as c:
        c.start()
        c.try_send(os.urandom(64 * 1024))
        assert c.wait_closed(5), "agentd kept a connection that sent garbage frames open"


def test_random_bytes_on_tls_port(agentd):
    s = socket.create_connection(("127.0.0.1", agentd.tls_port), timeout=5)
    try:
        try:
            s.sendall(os.urandom(16 * 1024))
        except OSError:
            pass
        deadline = time.monotonic() + 5
        closed = False
        while time.monotonic() < deadline:
            try:
                if not s.recv(65536):
                    closed = True
                    break
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
        assert closed, "TLS listener kept a garbage connection open"
    finally:
        s.close()


def test_http1_request(agentd):
    with raw(agentd) as c:
        c.try_send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        assert c.wait_closed(5), "agentd kept an HTTP/1.1 connection open"


def test_silent_connections_do_not_block_others(pb, agentd):
    socks = []
    try:
        for _ in range(50):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(agentd.sock)
            socks.append(s)
        # Half a preface too: the server must not wait for the rest.
        socks[0].sendall(H.PREFACE[:10])
        t0 = time.monotonic()
        agentd.assert_healthy()
        assert time.monotonic() - t0 < 2.0
    finally:
        for s in socks:
            s.close()


def test_silent_connections_are_closed_eventually(agentd):
    """Peers that connect and never send anything (no HTTP/2 preface on the
    unix socket, no TLS ClientHello on the TLS port) are dropped."""
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(agentd.sock)
    t = socket.create_connection(("127.0.0.1", agentd.tls_port), timeout=5)
    socks = {"unix": u, "tls": t}
    open_ = set(socks)
    deadline = time.monotonic() + 14
    try:
        while open_ and time.monotonic() < deadline:
            for name in list(open_):
                s = socks[name]
                s.settimeout(0.2)
                try:
                    # agentd may send its SETTINGS first; then it must close.
                    if not s.recv(65536):
                        open_.discard(name)
                except socket.timeout:
                    pass
                except OSError:
                    open_.discard(name)
        assert not open_, "silent connections still open after 14 s: %s" % sorted(open_)
    finally:
        for s in socks.values():
            s.close()


@TRANSPORTS
def test_truncated_grpc_message(pb, agentd, transport):
    """Length prefix says 100, 10 bytes come, then END_STREAM."""
    with raw(agentd, transport) as c:
        c.start()
        sid = c.request(VERSION, H.grpc_message(b"\x0a\x02v1" + b"\x00" * 6, length=100))
        r = c.wait_stream(sid, timeout=5)
    assert r.ended or r.rst is not None, "no answer to a truncated message: %r" % r
    st = r.grpc_status()
    assert st is not None and st != OK, r


def test_truncated_length_prefix(pb, agentd):
    """Only 3 of the 5 prefix bytes, then END_STREAM."""
    with raw(agentd) as c:
        c.start()
        sid = c.request(VERSION, b"\x00\x00\x00")
        r = c.wait_stream(sid, timeout=5)
    st = r.grpc_status()
    assert st is not None and st != OK, r


def test_compressed_flag_without_encoding(pb, agentd):
    """Compressed-flag 1 without a grpc-encoding the server accepted."""
    with raw(agentd) as c:
        c.start()
        sid = c.request(VERSION, H.grpc_message(b"\x0a\x02v1", compressed=1))
        r = c.wait_stream(sid, timeout=5)
    st = r.grpc_status()
    assert st is not None and st != OK, r


@TRANSPORTS
def test_huge_length_prefix(pb, agentd, transport):
    """A prefix claiming 4 GiB: RESOURCE_EXHAUSTED at once, nothing allocated."""
    rss0 = agentd.rss_kib()
    with raw(agentd, transport) as c:
        c.start()
        sid = c.request(VERSION, H.grpc_message(b"\x00" * 16000, length=0xFFFFFFFF),
                        end_stream=False)
        r = c.wait_stream(sid, timeout=5)
        assert r.grpc_status() == RESOURCE_EXHAUSTED, r
    grown = agentd.rss_kib() - rss0
    assert grown < 64 * 1024, "agentd's RSS grew by %d KiB" % grown


def test_many_huge_prefixes_rss(pb, agentd):
    """Many streams each claiming 16 MiB (just at the default limit) but
    sending nothing more must not make agentd reserve 16 MiB per stream."""
    rss0 = agentd.rss_kib()
    with raw(agentd) as c:
        c.start()
        sids = [c.request(VERSION, H.grpc_message(b"\x00" * 1024, length=16 * 1024 * 1024),
                          end_stream=False) for _ in range(100)]
        # Make sure agentd has processed all of them.
        probe = c.request(VERSION, version_body(pb))
        r = c.wait_stream(probe, timeout=10)
        assert r.grpc_status() == OK, r
        grown = agentd.rss_kib() - rss0
        assert grown < 200 * 1024, "agentd's RSS grew by %d KiB for 100 idle streams" % grown
        for sid in sids:
            c.try_send(frame(RST_STREAM, 0, sid, struct.pack(">I", H.CANCEL)))


def _drain(sock, stop, state):
    """Reads (and discards) everything agentd sends on a dup of the socket,
    so that its writes never block while the main thread floods it."""
    s = sock.dup()
    s.settimeout(0.2)
    try:
        while not stop.is_set():
            try:
                if not s.recv(1 << 16):
                    state["closed"] = True
                    return
            except socket.timeout:
                continue
            except OSError:
                state["closed"] = True
                return
    finally:
        s.close()


def test_rapid_reset(pb, agentd):
    """10,000 streams opened and reset in a burst (CVE-2023-44487)."""
    rss0 = agentd.rss_kib()
    with raw(agentd, timeout=10) as c:
        c.start()
        stop, state = threading.Event(), {}
        t = threading.Thread(target=_drain, args=(c.sock, stop, state), daemon=True)
        t.start()
        # HPACK literals without indexing: every block is self-contained.
        block = H.header_block(H.grpc_request_headers(ECHO))
        body = H.grpc_message(pb.agent.EchoRequest(message="r", delay_ms=1000).SerializeToString())
        rst = struct.pack(">I", H.CANCEL)
        sent = 0
        t0 = time.monotonic()
        for b in range(50):
            batch = b"".join(frame(HEADERS, END_HEADERS, sid, block)
                             + frame(DATA, END_STREAM, sid, body) + frame(RST_STREAM, 0, sid, rst)
                             for sid in range(1 + 400 * b, 1 + 400 * (b + 1), 2))
            if not c.try_send(batch):
                break
            sent += 200
        # Give agentd a moment to work through (or reject) the burst.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not state.get("closed"):
            time.sleep(0.1)
        stop.set()
        t.join(5)
        took = time.monotonic() - t0
    assert took < 60
    grown = agentd.rss_kib() - rss0
    assert grown < 256 * 1024, "RSS grew by %d KiB after %d reset streams" % (grown, sent)


@TRANSPORTS
def test_header_value_over_limit(pb, agentd, transport):
    """A 100 KiB header value (in HEADERS + CONTINUATION frames)."""
    block = H.header_block(H.grpc_request_headers(VERSION, extra=[("x-big", "a" * 100 * 1024)]))
    with raw(agentd, transport) as c:
        c.start()
        sid = c.new_stream()
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = frame(HEADERS, 0, sid, chunks[0])
        for i, ch in enumerate(chunks[1:], 1):
            out += frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, sid, ch)
        c.try_send(out + frame(DATA, END_STREAM, sid, version_body(pb)))
        r = c.wait_stream(sid, timeout=5)
        refused = (r.rst is not None or c.closed or c.goaway is not None
                   or (r.grpc_status() not in (None, OK))
                   or (r.headers is not None and r.headers.get(":status") not in ("200", None)))
        assert refused, "a 100 KiB header was accepted: %r" % r


def test_many_headers_over_limit(pb, agentd):
    """Thousands of small headers adding up to far more than the header list limit."""
    extra = [("x-h%d" % i, "v" * 40) for i in range(5000)]
    block = H.header_block(H.grpc_request_headers(VERSION, extra=extra))
    with raw(agentd) as c:
        c.start()
        sid = c.new_stream()
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = frame(HEADERS, 0, sid, chunks[0])
        for i, ch in enumerate(chunks[1:], 1):
            out += frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, sid, ch)
        c.try_send(out + frame(DATA, END_STREAM, sid, version_body(pb)))
        r = c.wait_stream(sid, timeout=5)
        refused = (r.rst is not None or c.closed or c.goaway is not None
                   or (r.grpc_status() not in (None, OK)))
        assert refused, "%d KiB of headers were accepted: %r" % (len(block) // 1024, r)


def _continuation_flood(agentd, payload_for, limit_bytes, transport="unix"):
    """HEADERS without END_HEADERS, then CONTINUATION frames without end.
    Returns (bytes sent before agentd cut us off, seconds, connection closed)."""
    with raw(agentd, transport, timeout=5) as c:
        c.start()
        sid = c.new_stream()
        first = H.header_block(H.grpc_request_headers(VERSION))
        if not c.try_send(frame(HEADERS, 0, sid, first)):
            return 0, 0, True
        sent = 0
        t0 = time.monotonic()
        i = 0
        while sent < limit_bytes:
            batch = b"".join(frame(CONTINUATION, 0, sid, payload_for(i + k)) for k in range(64))
            i += 64
            if not c.try_send(batch):
                break
            sent += len(batch)
        closed = c.wait_closed(5)
        return sent, time.monotonic() - t0, closed


@TRANSPORTS
def test_continuation_flood_headers(agentd, transport):
    rss0 = agentd.rss_kib()
    sent, took, closed = _continuation_flood(
        agentd, lambda i: H.hpack_literal("x-f%d" % i, "f" * 8000), 64 * 1024 * 1024,
        transport)
    assert closed, "agentd accepted %d bytes of CONTINUATION frames" % sent
    grown = agentd.rss_kib() - rss0
    assert grown < 64 * 1024, "RSS grew by %d KiB" % grown


def test_continuation_flood_empty_frames(agentd):
    sent, took, closed = _continuation_flood(agentd, lambda i: b"", 16 * 1024 * 1024)
    assert closed, "agentd accepted %d bytes of empty CONTINUATION frames" % sent


def test_frames_for_closed_streams(pb, agentd):
    """RST_STREAM and WINDOW_UPDATE for streams that never existed or are closed."""
    with raw(agentd) as c:
        c.start()
        sid = c.request(VERSION, version_body(pb))
        r = c.wait_stream(sid)
        assert r.grpc_status() == OK, r
        c.try_send(frame(RST_STREAM, 0, sid, struct.pack(">I", H.CANCEL))
                   + frame(H.WINDOW_UPDATE, 0, sid, struct.pack(">I", 1000)))
        sid2 = c.request(VERSION, version_body(pb))
        r2 = c.wait_stream(sid2)
        # A GOAWAY (STREAM_CLOSED) is allowed; silence or a crash is not.
        assert r2.grpc_status() == OK or c.goaway is not None or c.closed, r2


def test_settings_and_ping_flood(pb, agentd):
    """Thousands of PINGs and SETTINGS without reading the ACKs."""
    with raw(agentd, timeout=5) as c:
        c.start()
        blob = b"".join(frame(H.PING, 0, 0, struct.pack(">Q", i)) + H.settings_frame({4: 65535})
                        for i in range(2000))
        for _ in range(10):
            if not c.try_send(blob):
                break
    # Either agentd coped or it dropped us; the autouse check verifies it lives.


def test_unary_without_message(pb, agentd):
    """HEADERS with END_STREAM and no message at all for a unary method."""
    with raw(agentd) as c:
        c.start()
        sid = c.request(VERSION, None)
        r = c.wait_stream(sid)
    st = r.grpc_status()
    assert st is not None and st != OK, r


def test_unary_with_two_messages(pb, agentd):
    with raw(agentd) as c:
        c.start()
        sid = c.request(VERSION, version_body(pb) + version_body(pb))
        r = c.wait_stream(sid)
    assert r.rst is not None or (r.grpc_status() not in (None, OK)), r


def test_wrong_content_type(pb, agentd):
    """Not gRPC: HTTP 415 (or a gRPC error), never a normal answer."""
    with raw(agentd) as c:
        c.start()
        sid = c.new_stream()
        hdrs = [(k, "application/json" if k == "content-type" else v)
                for k, v in H.grpc_request_headers(VERSION)]
        c.send(frame(HEADERS, END_HEADERS, sid, H.header_block(hdrs))
               + frame(DATA, END_STREAM, sid, version_body(pb)))
        r = c.wait_stream(sid)
    assert r.rst is not None or r.headers is not None, r
    if r.headers is not None:
        assert r.headers[":status"] != "200" or r.grpc_status() not in (None, OK), r


def test_missing_path(pb, agentd):
    with raw(agentd) as c:
        c.start()
        sid = c.new_stream()
        hdrs = [(k, v) for k, v in H.grpc_request_headers(VERSION) if k != ":path"]
        c.send(frame(HEADERS, END_HEADERS, sid, H.header_block(hdrs))
               + frame(DATA, END_STREAM, sid, version_body(pb)))
        r = c.wait_stream(sid)
    assert r.rst is not None or c.goaway is not None or c.closed or \
        (r.headers is not None and r.grpc_status() != OK), r


def test_error_message_is_percent_encoded(agentd):
    """grpc-message must be printable ASCII with '%' and non-ASCII bytes
    percent-encoded (gRPC PROTOCOL-HTTP2); the path is echoed in it."""
    path = "/nope.v1.N\u00fcx/a%b"
    with raw(agentd) as c:
        c.start()
        sid = c.request(path, H.grpc_message(b""))
        r = c.wait_stream(sid)
    assert r.grpc_status() == 12, r  # UNIMPLEMENTED
    msg = r.grpc_message()
    assert msg is not None, r
    assert all(0x20 <= ord(ch) <= 0x7e for ch in msg), repr(msg)
    from urllib.parse import unquote
    decoded = unquote(msg, errors="strict")
    assert "nope.v1.N\u00fcx/a%b" in decoded, (msg, decoded)


def _await_server_settings(c):
    """Reads until the server's SETTINGS came (and were ACKed by RawH2)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        f = c.read_frame(deadline - time.monotonic())
        if f is None:
            break
        if f[0] == H.SETTINGS and not f[1] & H.ACK:
            return dict(struct.unpack(">HI", f[3][k:k + 6]) for k in range(0, len(f[3]), 6))
    pytest.fail("no SETTINGS from agentd")


def test_concurrent_streams_limit(pb, agentd):
    """More open streams than SETTINGS_MAX_CONCURRENT_STREAMS on one
    connection: the extra ones are refused, nothing else breaks."""
    with raw(agentd, timeout=10) as c:
        c.start()
        settings = _await_server_settings(c)
        limit = settings.get(3)  # SETTINGS_MAX_CONCURRENT_STREAMS
        assert limit is not None and 0 < limit <= 10000, settings
        block = H.header_block(H.grpc_request_headers(ECHO))
        n = limit + 50
        # Request bodies never come: every stream stays open.
        sids = [1 + 2 * i for i in range(n)]
        for k in range(0, n, 200):
            c.send(b"".join(frame(HEADERS, END_HEADERS, sid, block) for sid in sids[k:k + 200]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not c.closed:
            if c.read_frame(0.5) is None and time.monotonic() > deadline - 4:
                break
        refused = [sid for sid, r in c.responses.items() if r.rst is not None]
        if not c.closed and c.goaway is None:
            assert len(refused) >= n - limit, \
                "%d streams opened with a limit of %d, only %d refused" % (n, limit, len(refused))
        for k in range(0, n, 500):
            c.try_send(b"".join(frame(RST_STREAM, 0, sid, struct.pack(">I", H.CANCEL))
                                for sid in sids[k:k + 500]))


def test_window_update_overflow(agentd):
    """A connection window pushed past 2^31-1 is a FLOW_CONTROL_ERROR."""
    with raw(agentd) as c:
        c.start()
        c.try_send(frame(H.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7fffffff)) * 2)
        assert c.wait_closed(5) or c.goaway is not None


def test_connection_flood_past_fd_limit(pb, agentd_factory):
    """More connections than agentd has file descriptors: it must neither
    crash nor spin on accept(), and must serve again once they are gone."""
    a = agentd_factory(nofile=128)
    a.assert_healthy()
    socks = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(a.sock)
            except (BlockingIOError, InterruptedError):
                pass  # in the listen backlog
            except OSError:
                s.close()
                break
            socks.append(s)
        time.sleep(0.5)
        cpu0 = a.cpu_seconds()
        time.sleep(2.0)
        spent = a.cpu_seconds() - cpu0
        assert a.alive(), a.stderr_text()
        assert spent < 1.0, "agentd used %.2f s of CPU in 2 s while out of descriptors" % spent
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            a.assert_healthy()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_many_idle_h2_connections(pb, agentd):
    """500 connections that complete the HTTP/2 handshake and stay idle; a
    new client is still served promptly."""
    conns = []
    try:
        for _ in range(500):
            for attempt in range(100):
                try:
                    c = raw(agentd)
                    break
                except BlockingIOError:  # listen backlog full: wait for accept()
                    time.sleep(0.01)
            else:
                pytest.fail("agentd stopped accepting connections")
            c.start()
            conns.append(c)
        t0 = time.monotonic()
        agentd.assert_healthy()
        assert time.monotonic() - t0 < 3.0
    finally:
        for c in conns:
            c.close()


def test_connection_burst_is_queued(pb, agentd):
    """512 connections arriving while agentd cannot accept (stopped) must wait
    in the listen backlog, not be refused."""
    import signal as sig
    socks, refused = [], 0
    os.kill(agentd.pid, sig.SIGSTOP)
    try:
        for _ in range(512):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(agentd.sock)
                socks.append(s)
            except (BlockingIOError, InterruptedError):
                refused += 1
                s.close()
    finally:
        os.kill(agentd.pid, sig.SIGCONT)
    for s in socks:
        s.close()
    assert refused == 0, ("%d of 512 queued connections refused (EAGAIN): the listen backlog "
                          "is %d" % (refused, len(socks) - 1))


def test_slow_reader_is_bounded(pb, agentd):
    """A client that asks for big server-streams and never reads (no
    WINDOW_UPDATE, full socket buffers): agentd buffers a bounded amount, keeps
    serving others, and lets go when the client disconnects."""
    rss0 = agentd.rss_kib()
    body = H.grpc_message(pb.agent.EchoRequest(message="s", repeat=1000,
                                               response_bytes=1 << 20).SerializeToString())
    with raw(agentd) as c:
        c.start()
        for _ in range(4):
            c.request("/agent.v1.DebugService/StreamEcho", body)
        time.sleep(2)
        grown = agentd.rss_kib() - rss0
        assert grown < 96 * 1024, "RSS grew by %d KiB for 4 unread streams" % grown
        t0 = time.monotonic()
        with agentd.unix_channel() as ch:
            info = pb.agent_grpc.AgentServiceStub(ch).Info(pb.agent.InfoRequest(), timeout=5)
        assert info.pid == agentd.pid
        assert time.monotonic() - t0 < 2.0
