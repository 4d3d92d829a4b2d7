"""agentd's gRPC transport seen by an independent client (grpcio), over the
unix socket (h2c) and over TCP with mutual TLS.

One daemon serves the module, with --max-msg-size 1 MiB so that the size
limits can be probed on both sides; a few tests start their own."""

import os
import signal
import threading
import time

import grpc
import pytest

import agentd_harness as H

MIB = 1 << 20
LIMIT = 1 * MIB
AGENTD_OPTIONS = dict(tls=True, max_msg_size=LIMIT)
BIG_CLIENT = [("grpc.max_receive_message_length", 64 * MIB),
              ("grpc.max_send_message_length", 64 * MIB)]
ECHO = "/agent.v1.DebugService/Echo"


@pytest.fixture(params=["unix", "tls"])
def channel(request, agentd):
    ch = agentd.channel(request.param, options=BIG_CLIENT)
    yield ch
    ch.close()


def rt(pb, ch):
    return pb.api_grpc.RuntimeServiceStub(ch)


def dbg(pb, ch):
    return pb.agent_grpc.DebugServiceStub(ch)


def payload_for_message_size(total):
    """Length n of a bytes field (number <= 15) so that a message holding only
    that field is exactly `total` bytes: 1 tag byte + varint(n) + n."""
    for vlen in range(1, 6):
        n = total - 1 - vlen
        if n >= 0 and len(_varint(n)) == vlen:
            return n
    raise ValueError(total)


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def assert_code(excinfo, code):
    e = excinfo.value
    assert e.code() == code, "got %s: %s" % (e.code(), e.details())


# ------------------------------------------------------------------ basics
def test_version(pb, channel):
    r = rt(pb, channel).Version(pb.api.VersionRequest(version="v1"), timeout=5)
    assert r.runtime_name == "agentd"
    assert r.runtime_api_version == "v1"
    assert r.version
    assert r.runtime_version


def test_agent_info(pb, agentd, channel):
    r = pb.agent_grpc.AgentServiceStub(channel).Info(pb.agent.InfoRequest(), timeout=5)
    assert r.api_version == "v1"
    assert r.pid == agentd.pid
    assert os.path.realpath(r.root_dir) == os.path.realpath(agentd.root)
    assert os.path.realpath(r.state_dir) == os.path.realpath(agentd.state)
    assert r.version


def test_health_check_serving(pb, channel):
    stub = pb.health_grpc.HealthStub(channel)
    r = stub.Check(pb.health.HealthCheckRequest(service=""), timeout=5)
    assert r.status == pb.health.HealthCheckResponse.SERVING


def test_health_watch_first_message(pb, channel):
    stub = pb.health_grpc.HealthStub(channel)
    it = stub.Watch(pb.health.HealthCheckRequest(service=""), timeout=10)
    first = next(it)
    assert first.status == pb.health.HealthCheckResponse.SERVING
    it.cancel()
    # The connection is still good after cancelling the watch.
    assert rt(pb, channel).Version(pb.api.VersionRequest(), timeout=5).runtime_name == "agentd"


@pytest.mark.parametrize("service", ["runtime.v1.RuntimeService", "runtime.v1.ImageService",
                                     "agent.v1.AgentService"])
def test_health_check_per_service(pb, channel, service):
    r = pb.health_grpc.HealthStub(channel).Check(pb.health.HealthCheckRequest(service=service),
                                                 timeout=5)
    assert r.status == pb.health.HealthCheckResponse.SERVING


def test_health_unknown_service(pb, channel):
    """grpc.health.v1: Check answers NOT_FOUND, Watch sends SERVICE_UNKNOWN."""
    stub = pb.health_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as ei:
        stub.Check(pb.health.HealthCheckRequest(service="nope.v1.Nope"), timeout=5)
    assert_code(ei, grpc.StatusCode.NOT_FOUND)
    it = stub.Watch(pb.health.HealthCheckRequest(service="nope.v1.Nope"), timeout=10)
    assert next(it).status == pb.health.HealthCheckResponse.SERVICE_UNKNOWN
    it.cancel()


@pytest.mark.parametrize("method,req", [
    ("/runtime.v1.RuntimeService/CheckpointContainer", "CheckpointContainerRequest"),
])
def test_unimplemented_cri(pb, channel, method, req):
    msg = getattr(pb.api, req)()
    call = channel.unary_unary(method, request_serializer=type(msg).SerializeToString,
                               response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as ei:
        call(msg, timeout=5)
    assert_code(ei, grpc.StatusCode.UNIMPLEMENTED)
    assert method.lstrip("/") in ei.value.details()


@pytest.mark.parametrize("method", ["/nope.v1.Nothing/Call",
                                    "/runtime.v1.RuntimeService/NoSuchMethod",
                                    "/runtime.v1.RuntimeService"])
def test_unknown_method(channel, method):
    call = channel.unary_unary(method)
    with pytest.raises(grpc.RpcError) as ei:
        call(b"", timeout=5)
    assert_code(ei, grpc.StatusCode.UNIMPLEMENTED)


# ------------------------------------------------------------------ sizes
def test_request_over_limit(pb, channel):
    with pytest.raises(grpc.RpcError) as ei:
        dbg(pb, channel).Echo(pb.agent.EchoRequest(payload=b"x" * (2 * MIB)), timeout=10)
    assert_code(ei, grpc.StatusCode.RESOURCE_EXHAUSTED)
    # Only the call failed, not the connection.
    assert rt(pb, channel).Version(pb.api.VersionRequest(), timeout=5).runtime_name == "agentd"


def test_request_exactly_at_limit(pb, channel):
    n = payload_for_message_size(LIMIT)
    req = pb.agent.EchoRequest(payload=os.urandom(n))
    assert req.ByteSize() == LIMIT
    r = dbg(pb, channel).Echo(req, timeout=10)
    assert r.payload == req.payload


def test_request_one_byte_over_limit(pb, channel):
    n = payload_for_message_size(LIMIT + 1)
    req = pb.agent.EchoRequest(payload=b"y" * n)
    assert req.ByteSize() == LIMIT + 1
    with pytest.raises(grpc.RpcError) as ei:
        dbg(pb, channel).Echo(req, timeout=10)
    assert_code(ei, grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_response_over_limit(pb, channel):
    with pytest.raises(grpc.RpcError) as ei:
        dbg(pb, channel).Echo(pb.agent.EchoRequest(response_bytes=2 * MIB), timeout=10)
    assert_code(ei, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert rt(pb, channel).Version(pb.api.VersionRequest(), timeout=5).runtime_name == "agentd"


def test_response_just_under_limit(pb, channel):
    n = payload_for_message_size(LIMIT) - 16
    r = dbg(pb, channel).Echo(pb.agent.EchoRequest(response_bytes=n), timeout=10)
    assert len(r.payload) == n


def test_response_exactly_at_limit(pb, channel):
    n = payload_for_message_size(LIMIT)
    r = dbg(pb, channel).Echo(pb.agent.EchoRequest(response_bytes=n), timeout=10)
    assert r.ByteSize() == LIMIT
    assert len(r.payload) == n


@pytest.mark.parametrize("extra", [1, 2])
def test_response_encoding_over_limit(pb, channel, extra):
    """The payload alone fits the limit but the encoded message does not: the
    transport's send-side check (not the handler's) must refuse it."""
    n = payload_for_message_size(LIMIT + extra)
    assert n <= LIMIT
    with pytest.raises(grpc.RpcError) as ei:
        dbg(pb, channel).Echo(pb.agent.EchoRequest(response_bytes=n), timeout=10)
    assert_code(ei, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert rt(pb, channel).Version(pb.api.VersionRequest(), timeout=5).runtime_name == "agentd"


def test_stream_message_over_limit(pb, channel):
    """A server-streaming message over the limit ends the stream with
    RESOURCE_EXHAUSTED (after the messages that fit)."""
    n = payload_for_message_size(LIMIT + 1)
    with pytest.raises(grpc.RpcError) as ei:
        list(dbg(pb, channel).StreamEcho(
            pb.agent.EchoRequest(repeat=2, response_bytes=n), timeout=10))
    assert_code(ei, grpc.StatusCode.RESOURCE_EXHAUSTED)


# ------------------------------------------------------------------ deadlines, concurrency
def test_deadline_exceeded_promptly(pb, channel):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        dbg(pb, channel).Echo(pb.agent.EchoRequest(message="slow", delay_ms=5000), timeout=0.3)
    elapsed = time.monotonic() - t0
    assert_code(ei, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < 2.0, elapsed
    assert dbg(pb, channel).Echo(pb.agent.EchoRequest(message="after"), timeout=5).message \
        == "after"


def test_server_enforces_grpc_timeout(pb, agentd):
    """Without any client-side timer (raw HTTP/2), the server itself ends a
    call whose grpc-timeout has passed, with DEADLINE_EXCEEDED."""
    body = H.grpc_message(pb.agent.EchoRequest(message="slow", delay_ms=5000).SerializeToString())
    with H.RawH2(unix_path=agentd.sock) as c:
        c.start()
        t0 = time.monotonic()
        sid = c.request(ECHO, body, extra_headers=[("grpc-timeout", "300m")])
        r = c.wait_stream(sid, timeout=4)
        elapsed = time.monotonic() - t0
    assert r.grpc_status() == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], r
    assert elapsed < 2.0, elapsed


def test_200_concurrent_calls_one_channel(pb, channel):
    stub = dbg(pb, channel)
    futs = [stub.Echo.future(pb.agent.EchoRequest(message="c%d" % i, delay_ms=20), timeout=30)
            for i in range(200)]
    got = [f.result() for f in futs]
    assert [g.message for g in got] == ["c%d" % i for i in range(200)]


def test_concurrent_mixed_methods_from_threads(pb, channel):
    errors = []

    def worker(k):
        try:
            for i in range(20):
                if i % 2:
                    m = "t%d-%d" % (k, i)
                    assert dbg(pb, channel).Echo(pb.agent.EchoRequest(message=m),
                                                 timeout=10).message == m
                else:
                    assert rt(pb, channel).Version(pb.api.VersionRequest(),
                                                   timeout=10).runtime_name == "agentd"
        except Exception as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


# ------------------------------------------------------------------ streaming
def test_server_streaming_in_order(pb, channel):
    n = 50
    msgs = list(dbg(pb, channel).StreamEcho(pb.agent.EchoRequest(message="s", repeat=n),
                                            timeout=20))
    assert len(msgs) == n
    assert all(m.message == "s" for m in msgs)
    first = msgs[0].index
    assert first in (0, 1)
    assert [m.index for m in msgs] == list(range(first, first + n))


def test_server_streaming_large_messages(pb, channel):
    """Messages bigger than the HTTP/2 windows: flow control must keep them whole."""
    n, size = 8, 256 * 1024
    msgs = list(dbg(pb, channel).StreamEcho(
        pb.agent.EchoRequest(message="big", repeat=n, response_bytes=size), timeout=30))
    assert len(msgs) == n
    assert all(len(m.payload) == size for m in msgs)


def test_stream_cancel_midway(pb, channel):
    stub = dbg(pb, channel)
    it = stub.StreamEcho(pb.agent.EchoRequest(message="z", repeat=1000, delay_ms=20), timeout=60)
    for _ in range(3):
        assert next(it).message == "z"
    it.cancel()
    with pytest.raises(grpc.RpcError) as ei:
        for _ in it:
            pass
    assert_code(ei, grpc.StatusCode.CANCELLED)
    assert stub.Echo(pb.agent.EchoRequest(message="next"), timeout=5).message == "next"
    msgs = list(stub.StreamEcho(pb.agent.EchoRequest(message="again", repeat=5), timeout=10))
    assert len(msgs) == 5


def test_many_cancelled_slow_calls_free_the_workers(pb, channel):
    """Calls cancelled by their deadline must stop occupying server workers:
    more of them than any plausible worker pool, then a normal call."""
    stub = dbg(pb, channel)
    futs = [stub.Echo.future(pb.agent.EchoRequest(delay_ms=60000), timeout=0.5)
            for _ in range(64)]
    for f in futs:
        with pytest.raises(grpc.RpcError):
            f.result()
    t0 = time.monotonic()
    assert stub.Echo(pb.agent.EchoRequest(message="free"), timeout=5).message == "free"
    assert time.monotonic() - t0 < 3.0


# ------------------------------------------------------------------ mutual TLS
def test_mtls_good_client_cert(pb, agentd):
    with agentd.tls_channel("good") as ch:
        assert rt(pb, ch).Version(pb.api.VersionRequest(), timeout=5).runtime_name == "agentd"


@pytest.mark.parametrize("client", ["none", "other"])
def test_mtls_refuses_client(pb, agentd, client):
    with agentd.tls_channel(client) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            rt(pb, ch).Version(pb.api.VersionRequest(), timeout=5)
    assert_code(ei, grpc.StatusCode.UNAVAILABLE)
    agentd.assert_healthy()


def test_mtls_refuses_certificate_not_meant_for_clients(pb, agentd, certs):
    """The server's own certificate (same CA, extendedKeyUsage serverAuth only)
    is not a client certificate."""
    creds = grpc.ssl_channel_credentials(root_certificates=certs.read(certs.ca),
                                         private_key=certs.read(certs.server_key),
                                         certificate_chain=certs.read(certs.server_cert))
    with grpc.secure_channel("127.0.0.1:%d" % agentd.tls_port, creds,
                             options=[("grpc.enable_http_proxy", 0)]) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            rt(pb, ch).Version(pb.api.VersionRequest(), timeout=5)
    assert_code(ei, grpc.StatusCode.UNAVAILABLE)


def test_tls_refuses_alpn_other_than_h2(agentd, certs):
    import socket
    import ssl
    ctx = H.tls_client_context(certs)
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", agentd.tls_port), timeout=5) as s:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                # Handshake done anyway: the server must not speak HTTP/1.1.
                t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if not t.recv(100):
                    raise ConnectionError("closed")
    agentd.assert_healthy()


def test_tls_port_refuses_plaintext_h2c(pb, agentd):
    with grpc.insecure_channel("127.0.0.1:%d" % agentd.tls_port,
                               options=[("grpc.enable_http_proxy", 0)]) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            rt(pb, ch).Version(pb.api.VersionRequest(), timeout=5)
    assert_code(ei, grpc.StatusCode.UNAVAILABLE)
    agentd.assert_healthy()


# ------------------------------------------------------------------ shutdown
def test_sigterm_drains_in_flight_call(pb, agentd_factory):
    a = agentd_factory()
    with a.unix_channel() as ch:
        stub = dbg(pb, ch)
        assert stub.Echo(pb.agent.EchoRequest(message="warm"), timeout=5).message == "warm"
        fut = stub.Echo.future(pb.agent.EchoRequest(message="drained", delay_ms=1500), timeout=20)
        time.sleep(0.4)  # let the call reach the server
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        r = fut.result()
        assert r.message == "drained"
    a.proc.wait(15)
    assert time.monotonic() - t0 < 10
    assert a.proc.returncode == 0
    a.stop()  # checks exit status and sanitizer output


def test_health_watch_sees_shutdown(pb, agentd_factory):
    """A Watch open at SIGTERM gets NOT_SERVING and its stream ends; it does
    not hold up the exit until the drain timeout."""
    a = agentd_factory()
    with a.unix_channel() as ch:
        it = pb.health_grpc.HealthStub(ch).Watch(pb.health.HealthCheckRequest(service=""),
                                                 timeout=30)
        assert next(it).status == pb.health.HealthCheckResponse.SERVING
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        seen = []
        with pytest.raises(grpc.RpcError) as ei:
            for m in it:
                seen.append(m.status)
        a.proc.wait(10)
        took = time.monotonic() - t0
    assert seen == [pb.health.HealthCheckResponse.NOT_SERVING], seen
    assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), ei.value
    assert took < 3.0, took
    a.stop()


def test_sigterm_drain_is_bounded(pb, agentd_factory):
    a = agentd_factory()
    with a.unix_channel() as ch:
        fut = dbg(pb, ch).Echo.future(pb.agent.EchoRequest(delay_ms=120000), timeout=60)
        time.sleep(0.4)
        t0 = time.monotonic()
        a.signal(signal.SIGTERM)
        a.proc.wait(20)
        took = time.monotonic() - t0
        with pytest.raises(grpc.RpcError) as ei:
            fut.result(timeout=10)
    assert ei.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE,
                               grpc.StatusCode.INTERNAL), ei.value
    assert took < 15, took
    a.stop()


# ------------------------------------------------------------------ fairness
def test_slow_calls_do_not_starve_other_clients(pb, agentd_factory):
    """One client with 16 slow calls in flight (handlers that wait, like a
    long ExecSync or image pull would) must not stop another client's calls
    for their duration."""
    a = agentd_factory()
    with a.unix_channel() as busy:
        futs = [dbg(pb, busy).Echo.future(pb.agent.EchoRequest(delay_ms=6000), timeout=30)
                for _ in range(16)]
        time.sleep(0.5)
        with a.unix_channel() as ch:
            t0 = time.monotonic()
            try:
                info = pb.agent_grpc.AgentServiceStub(ch).Info(pb.agent.InfoRequest(),
                                                               timeout=10)
            except grpc.RpcError as e:
                pytest.fail("Info from another client failed after %.1f s (%s) while 16 slow "
                            "calls were in flight" % (time.monotonic() - t0, e.code()))
            took = time.monotonic() - t0
            assert info.pid == a.pid
            assert rt(pb, ch).Version(pb.api.VersionRequest(), timeout=5).runtime_name == "agentd"
        for f in futs:
            f.cancel()
    assert took < 2.0, "Info waited %.1f s behind another client's slow calls" % took
