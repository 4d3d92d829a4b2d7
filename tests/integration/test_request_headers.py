"""HTTP/2 request header rules on agentd's gRPC listeners.

kubelet (grpc-go dialling unix:// through the passthrough resolver) sends
the socket path as :authority. agentd takes any :authority on the unix
socket, as containerd and CRI-O do, while every other request rule that
nghttp2's HTTP messaging checks used to enforce still resets the stream with
PROTOCOL_ERROR (agentd checks them itself now). On TCP/TLS an :authority
that is not a host[:port] is still refused."""

import grpc
import pytest

import agentd_harness as H
from agentd_harness import DATA, END_HEADERS, END_STREAM, HEADERS, frame

AGENTD_OPTIONS = dict(tls=True)

VERSION = "/runtime.v1.RuntimeService/Version"
OK = 0
PROTOCOL_ERROR = 1


def version_body(pb):
    return H.grpc_message(pb.api.VersionRequest(version="v1").SerializeToString())


def raw(agentd, transport):
    if transport == "tls":
        return H.RawH2(tcp=("127.0.0.1", agentd.tls_port),
                       tls_context=H.tls_client_context(agentd.certs))
    return H.RawH2(unix_path=agentd.sock)


def send_request(pb, agentd, transport, headers, body=True, data_frames=None):
    """One request with exactly these headers; returns the Response."""
    with raw(agentd, transport) as c:
        c.start()
        sid = c.new_stream()
        if data_frames is None:
            data_frames = [(END_STREAM, version_body(pb))] if body else []
        flags = END_HEADERS | (0 if data_frames else END_STREAM)
        out = frame(HEADERS, flags, sid, H.header_block(headers))
        for fl, payload in data_frames:
            out += frame(DATA, fl, sid, payload)
        c.send(out)
        return c.wait_stream(sid)


def assert_answered(r):
    assert r.rst is None, r
    assert r.grpc_status() == OK, r


def assert_reset(r):
    assert r.rst == PROTOCOL_ERROR, r


AUTHORITIES = {
    "socket-path": "/run/agentd/agentd.sock",
    "empty": "",
    "garbage": "%%not a host{}|\\^`<>\"\x7f\x01 \xc3\xa9",
}


@pytest.mark.parametrize("kind", sorted(AUTHORITIES))
def test_unix_takes_any_authority(pb, agentd, kind):
    hdrs = H.grpc_request_headers(VERSION, authority=AUTHORITIES[kind])
    assert_answered(send_request(pb, agentd, "unix", hdrs))


def test_unix_takes_absent_authority(pb, agentd):
    hdrs = [(k, v) for k, v in H.grpc_request_headers(VERSION) if k != ":authority"]
    assert_answered(send_request(pb, agentd, "unix", hdrs))


def test_grpcio_with_socket_path_authority(pb, agentd):
    """What kubelet's client does, with an independent gRPC implementation."""
    opts = [("grpc.default_authority", agentd.sock)]
    with agentd.unix_channel(options=opts) as ch:
        r = pb.api_grpc.RuntimeServiceStub(ch).Version(pb.api.VersionRequest(version="v1"),
                                                       timeout=5)
    assert r.runtime_name == "agentd"


@pytest.mark.parametrize("authority", ["localhost", "127.0.0.1:1234", "[::1]:5", ""])
def test_tls_takes_host_port(pb, agentd, authority):
    hdrs = H.grpc_request_headers(VERSION, authority=authority)
    assert_answered(send_request(pb, agentd, "tls", hdrs))


@pytest.mark.parametrize("authority", ["/run/agentd/agentd.sock", "a b", "host\x01"])
def test_tls_refuses_what_is_no_authority(pb, agentd, authority):
    hdrs = H.grpc_request_headers(VERSION, authority=authority)
    assert_reset(send_request(pb, agentd, "tls", hdrs))


def test_tls_grpcio_with_path_authority_fails(pb, agentd):
    opts = [("grpc.default_authority", "/run/agentd/agentd.sock"),
            ("grpc.ssl_target_name_override", "localhost")]
    with agentd.tls_channel(options=opts) as ch:
        with pytest.raises(grpc.RpcError):
            pb.api_grpc.RuntimeServiceStub(ch).Version(pb.api.VersionRequest(version="v1"),
                                                       timeout=5)


def without(name):
    return [(k, v) for k, v in H.grpc_request_headers(VERSION) if k != name]


def replaced(name, value):
    return [(k, value if k == name else v) for k, v in H.grpc_request_headers(VERSION)]


# Each breaks one rule of RFC 9113 section 8 that nghttp2 enforced before.
MALFORMED = {
    "no-method": without(":method"),
    "no-scheme": without(":scheme"),
    "no-path": without(":path"),
    "empty-path": replaced(":path", ""),
    "relative-path": replaced(":path", "runtime.v1.RuntimeService/Version"),
    "path-with-space": replaced(":path", "/runtime.v1 RuntimeService/Version"),
    "asterisk-path-with-post": replaced(":path", "*"),
    "bad-method": replaced(":method", "PO ST"),
    "bad-scheme": replaced(":scheme", "1http"),
    "repeated-pseudo": [(":method", "POST")] + H.grpc_request_headers(VERSION),
    "pseudo-after-regular": [(k, v) for k, v in H.grpc_request_headers(VERSION)
                             if k != ":scheme"] + [(":scheme", "http")],
    "unknown-pseudo": [(":foo", "bar")] + H.grpc_request_headers(VERSION),
    "protocol-pseudo": [(":protocol", "websocket")] + H.grpc_request_headers(VERSION),
    "upper-case-name": H.grpc_request_headers(VERSION, extra=[("X-Upper", "1")]),
    "connection-header": H.grpc_request_headers(VERSION, extra=[("connection", "close")]),
    "transfer-encoding": H.grpc_request_headers(VERSION,
                                                extra=[("transfer-encoding", "chunked")]),
    "te-gzip": replaced("te", "gzip"),
    "bad-content-length": H.grpc_request_headers(VERSION, extra=[("content-length", "1x")]),
    "bad-authority-nul": replaced(":authority", "local\x00host"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("transport", ["unix", "tls"])
def test_malformed_request_is_reset(pb, agentd, transport, case):
    assert_reset(send_request(pb, agentd, transport, MALFORMED[case]))
    agentd.assert_healthy()


@pytest.mark.parametrize("transport", ["unix", "tls"])
def test_content_length_must_match_the_body(pb, agentd, transport):
    body = version_body(pb)
    hdrs = H.grpc_request_headers(VERSION, extra=[("content-length", str(len(body) + 1))])
    assert_reset(send_request(pb, agentd, transport, hdrs))
    hdrs = H.grpc_request_headers(VERSION, extra=[("content-length", str(len(body) - 1))])
    assert_reset(send_request(pb, agentd, transport, hdrs))
    hdrs = H.grpc_request_headers(VERSION, extra=[("content-length", str(len(body)))])
    assert_answered(send_request(pb, agentd, transport, hdrs))


def send_with_trailers(pb, agentd, trailers, flags):
    """A request whose body is followed by a client trailer block."""
    with raw(agentd, "unix") as c:
        c.start()
        sid = c.new_stream()
        c.send(frame(HEADERS, END_HEADERS, sid,
                     H.header_block(H.grpc_request_headers(VERSION)))
               + frame(DATA, 0, sid, version_body(pb))
               + frame(HEADERS, flags, sid, H.header_block(trailers)))
        return c.wait_stream(sid)


def test_trailers_with_pseudo_header_are_reset(pb, agentd):
    assert_reset(send_with_trailers(pb, agentd, [(":path", VERSION)],
                                    END_HEADERS | END_STREAM))


def test_trailers_without_end_stream_are_reset(pb, agentd):
    assert_reset(send_with_trailers(pb, agentd, [("x-trailer", "1")], END_HEADERS))


def test_plain_trailers_are_accepted(pb, agentd):
    assert_answered(send_with_trailers(pb, agentd, [("x-trailer", "1")],
                                       END_HEADERS | END_STREAM))


def test_bad_regular_header_is_dropped_not_fatal(pb, agentd):
    """As nghttp2 did: a regular header with a bad name or value is ignored."""
    hdrs = H.grpc_request_headers(VERSION, extra=[("x-bad name", "1"), ("x-val", " lead")])
    assert_answered(send_request(pb, agentd, "unix", hdrs))
