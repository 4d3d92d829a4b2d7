"""CRI Exec, Attach and PortForward through agentd's streaming server, driven
by clients agentd did not write: Debian's python3-kubernetes stream client
(WebSocket, v4.channel.k8s.io) and crictl (client-go, SPDY/3.1), against real
containers in a pod on a private CNI network. Plus the bad-input answers
(unknown and reused tokens, unsupported protocol versions)."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = (os.getpid() + 77) % 250
BRIDGE = "ads%d" % (os.getpid() % 1000)
SUBNET = "10.238.%d.0/24" % N
IMAGE_PATH = "test/streambox:v1"
# ../shared/cri-tools beside the repository (a worktree sits one level deeper).
CRI_TOOLS = Path(os.environ.get("AGENTD_CRI_TOOLS") or next(
    (p / "shared" / "cri-tools" for p in Path(__file__).resolve().parents[3:5]
     if (p / "shared" / "cri-tools" / "install").exists()), "/nonexistent"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("streaming")


@pytest.fixture(scope="module")
def registry(work):
    with P.busybox_registry(work, IMAGE_PATH) as reg:
        yield reg


@pytest.fixture(scope="module")
def daemon(work, pb, registry):
    with P.pod_agentd(work, pb, "agentd-stream-test", BRIDGE, SUBNET) as a:
        yield a


@pytest.fixture(scope="module")
def rt(pb, daemon):
    with daemon.unix_channel() as ch:
        yield pb.api_grpc.RuntimeServiceStub(ch)


@pytest.fixture(scope="module")
def image(pb, daemon, registry):
    return P.pull(pb, daemon, "%s/%s" % (registry.host, IMAGE_PATH))


@pytest.fixture(scope="module")
def crictl(work):
    if not (CRI_TOOLS / "install").exists():
        pytest.skip("no cri-tools at %s" % CRI_TOOLS)
    d = work / "cri-tools"
    subprocess.run([str(CRI_TOOLS / "install"), str(d)], check=True, capture_output=True)
    return d / "crictl"


@pytest.fixture(scope="module")
def pod(rt, pb, work, image):
    cfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name="st", namespace="test", uid="uid-st"),
        hostname="st", log_directory=str(work / "logs"))
    pod_id = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    try:
        def run(name, cmd, **kw):
            c = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                       image=pb.api.ImageSpec(image=image), command=cmd,
                                       log_path=name + ".log", **kw)
            cid = rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=c, sandbox_config=cfg)).container_id
            rt.StartContainer(pb.api.StartContainerRequest(container_id=cid))
            return cid
        ids = {
            "sleeper": run("sleeper", ["sleep", "3600"]),
            "httpd": run("httpd", ["httpd", "-f", "-p", "8080", "-h", "/etc"]),
            "echo": run("echo", ["sh", "-c", "while read l; do echo got:$l; done"],
                        stdin=True),
        }
        time.sleep(0.5)
        yield pod_id, ids
    finally:
        rt.RemovePodSandbox(pb.api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def exec_url(rt, pb, cid, cmd, tty=False, stdin=False, stdout=True, stderr=True):
    return rt.Exec(pb.api.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin,
                                      stdout=stdout, stderr=stderr and not tty)).url


def ws_client(url):
    from kubernetes.client import Configuration
    from kubernetes.stream.ws_client import WSClient
    return WSClient(Configuration(), "ws://" + url[len("http://"):], None, True)


# ---- WebSocket (python3-kubernetes) ------------------------------------------------

def test_ws_exec_output_and_exit_code(rt, pb, pod):
    _, ids = pod
    c = ws_client(exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "echo out; echo err >&2; exit 3"]))
    c.run_forever(timeout=20)
    assert c.read_stdout() == "out\n"
    assert c.read_stderr() == "err\n"
    assert c.returncode == 3


def test_ws_exec_success(rt, pb, pod):
    _, ids = pod
    c = ws_client(exec_url(rt, pb, ids["sleeper"], ["true"]))
    c.run_forever(timeout=20)
    assert c.returncode == 0


def test_ws_exec_stdin_echo(rt, pb, pod):
    _, ids = pod
    c = ws_client(exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "read a; read b; echo $a; echo $b"], stdin=True))
    c.write_stdin("hello\nworld\n")
    c.run_forever(timeout=20)
    assert c.read_stdout() == "hello\nworld\n", c._channels
    assert c.returncode == 0


def test_ws_exec_tty_and_resize(rt, pb, pod):
    _, ids = pod
    c = ws_client(exec_url(rt, pb, ids["sleeper"],
                           ["sh", "-c", "read x; stty size; test -t 0 && echo isatty; exit 5"], tty=True, stdin=True))
    c.write_channel(4, json.dumps({"Width": 123, "Height": 45}))
    time.sleep(0.3)
    c.write_stdin("go\r")
    c.run_forever(timeout=20)
    out = c.read_stdout()
    assert "45 123" in out, out
    assert "isatty" in out, out
    assert c.returncode == 5


# ---- bad input ---------------------------------------------------------------------

def raw_get(url, headers):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", u.path, headers=headers)
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, r.msg, body


SPDY_HEADERS = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}


def test_unknown_and_reused_tokens(rt, pb, pod):
    _, ids = pod
    url = exec_url(rt, pb, ids["sleeper"], ["true"])
    base = url.rsplit("/", 1)[0]
    st, _, body = raw_get(base + "/AAAAAAAAAAAAAAAAAAAAAA", SPDY_HEADERS)
    assert st == 404 and "token" in body
    c = ws_client(url)
    c.run_forever(timeout=20)
    st, _, body = raw_get(url, dict(SPDY_HEADERS, **{"X-Stream-Protocol-Version":
                                                     "v4.channel.k8s.io"}))
    assert st == 404 and "already used" in body, body


def test_unsupported_protocol_version(rt, pb, pod):
    _, ids = pod
    url = exec_url(rt, pb, ids["sleeper"], ["true"])
    st, h, body = raw_get(url, dict(SPDY_HEADERS, **{"X-Stream-Protocol-Version": "v9.bogus"}))
    assert st == 403, (st, body)
    assert "unable to negotiate protocol" in body
    assert "v4.channel.k8s.io" in h.get_all("X-Accepted-Stream-Protocol-Versions")
    url = exec_url(rt, pb, ids["sleeper"], ["true"])
    st, _, body = raw_get(url, {})
    assert st == 400 and "upgrade" in body


def test_exec_request_validation(rt, pb, pod):
    import grpc
    _, ids = pod
    with pytest.raises(grpc.RpcError) as e:
        rt.Exec(pb.api.ExecRequest(container_id=ids["sleeper"], cmd=["true"], tty=True,
                                   stdout=True, stderr=True))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        rt.Exec(pb.api.ExecRequest(container_id="nope", cmd=["true"], stdout=True))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


# ---- SPDY (crictl, client-go) ------------------------------------------------------

def crictl_run(crictl, daemon, *args, input=None, timeout=60):
    return subprocess.run([str(crictl), "--runtime-endpoint", "unix://" + daemon.sock,
                           "--timeout", "30s"] + list(args), input=input,
                          capture_output=True, text=True, timeout=timeout)


def test_crictl_exec(crictl, daemon, pod):
    _, ids = pod
    r = crictl_run(crictl, daemon, "exec", ids["sleeper"], "sh", "-c",
                   "echo out; echo err >&2; exit 4")
    assert r.stdout == "out\n", r
    assert "err" in r.stderr
    # crictl exits 1 and names the code (v4 Status, NonZeroExitCode cause).
    assert "command terminated with exit code 4" in r.stderr, r
    assert r.returncode == 1, r


def test_crictl_exec_stdin(crictl, daemon, pod):
    _, ids = pod
    data = "".join("line %d\n" % i for i in range(5000))  # beyond one 64 KiB window
    r = crictl_run(crictl, daemon, "exec", "-i", ids["sleeper"], "cat", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_crictl_exec_tty(crictl, daemon, pod):
    _, ids = pod
    if not shutil.which("script"):
        pytest.skip("no script(1)")
    cmd = " ".join([str(crictl), "--runtime-endpoint", "unix://" + daemon.sock, "exec", "-it",
                    ids["sleeper"], "sh", "-c", "'test -t 0 && echo isatty; exit 6'"])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert "isatty" in r.stdout, r
    assert "exit code 6" in r.stdout, r


def test_crictl_attach(crictl, daemon, pod):
    """Attach to a running container's stdio: stdin reaches it, its output
    comes back; two attachers both read."""
    _, ids = pod
    args = [str(crictl), "--runtime-endpoint", "unix://" + daemon.sock, "attach", "-i",
            ids["echo"]]
    a = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    b = subprocess.Popen(args[:-2] + [ids["echo"]], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        a.stdin.write("ping\n")
        a.stdin.flush()
        assert a.stdout.readline().strip() == "got:ping"
        assert b.stdout.readline().strip() == "got:ping"
    finally:
        for p in (a, b):
            p.kill()
            p.communicate()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(port):
    return subprocess.run(["curl", "-sS", "--max-time", "5",
                           "http://127.0.0.1:%d/hostname" % port],
                          capture_output=True, text=True)


def curl_until_up(port, timeout=20):
    """curl through a port forward that may still be starting."""
    deadline = time.monotonic() + timeout
    while True:
        r = curl(port)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_crictl_port_forward(crictl, daemon, pod):
    pod_id, _ = pod
    port = free_port()
    p = subprocess.Popen([str(crictl), "--runtime-endpoint", "unix://" + daemon.sock,
                          "port-forward", pod_id, "%d:8080" % port, "%d:8099" % (port + 1)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = curl_until_up(port)
        assert r.returncode == 0, (r.stderr, p.poll())
        assert r.stdout.strip() == "st"
        # Several connections, one after another, through the same session.
        for _ in range(3):
            r = curl(port)
            assert r.stdout.strip() == "st", r.stderr
    finally:
        p.terminate()
        try:
            p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


# ---- agentctl (its own SPDY client) -------------------------------------------------

def test_agentctl_exec_stdin_and_exit_code(daemon, pod):
    _, ids = pod
    data = "".join("line %d\n" % i for i in range(5000))  # beyond one 64 KiB window
    r = subprocess.run([H.agentctl_binary(), "-e", "unix://" + daemon.sock, "exec", "-i",
                        ids["sleeper"], "sh", "-c", "cat; echo err >&2; exit 9"],
                       input=data, capture_output=True, text=True, timeout=60)
    assert r.stdout == data
    assert r.stderr == "err\n", r.stderr
    assert r.returncode == 9
    r = P.ctl(daemon, "exec", "-i", ids["sleeper"], "/no/such/binary")
    assert r.returncode != 0 and "no/such/binary" in r.stderr, r


def tmux(sock, *args):
    return subprocess.run(["tmux", "-S", str(sock)] + list(args), capture_output=True,
                          text=True, timeout=20)


def wait_pane(sock, text, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        pane = tmux(sock, "capture-pane", "-p", "-t", "t").stdout
        if text in pane or time.monotonic() > deadline:
            return pane
        time.sleep(0.2)


def test_agentctl_exec_tty_in_tmux(daemon, pod, work):
    """exec -it in a real terminal: raw mode, a remote shell with a tty, the
    window's size and its changes (SIGWINCH -> resize stream), Ctrl-C to the
    remote foreground process, the exit status."""
    if not shutil.which("tmux"):
        pytest.skip("no tmux")
    _, ids = pod
    sock = work / "tmux.sock"
    cmd = "%s -e unix://%s exec -it %s sh; echo agentctl-rc=$?; sleep 60" % (
        H.agentctl_binary(), daemon.sock, ids["sleeper"])
    r = tmux(sock, "new-session", "-d", "-s", "t", "-x", "120", "-y", "40", cmd)
    assert r.returncode == 0, r.stderr
    try:
        tmux(sock, "send-keys", "-t", "t", "tty; stty size; echo ok-$((6*7))", "Enter")
        pane = wait_pane(sock, "ok-42")
        assert "ok-42" in pane, pane
        assert "40 120" in pane, pane
        assert "/dev/pts/" in pane, pane  # the container's own devpts
        tmux(sock, "resize-window", "-t", "t", "-x", "100", "-y", "30")
        time.sleep(0.5)
        tmux(sock, "send-keys", "-t", "t", "stty size", "Enter")
        pane = wait_pane(sock, "30 100")
        assert "30 100" in pane, pane
        # Ctrl-C reaches the remote foreground process, not agentctl.
        tmux(sock, "send-keys", "-t", "t", "sleep 100", "Enter")
        time.sleep(1)
        tmux(sock, "send-keys", "-t", "t", "C-c")
        time.sleep(0.5)
        tmux(sock, "send-keys", "-t", "t", "echo after-sleep-$?", "Enter")
        pane = wait_pane(sock, "after-sleep-130")
        assert "after-sleep-130" in pane, pane
        tmux(sock, "send-keys", "-t", "t", "exit 7", "Enter")
        pane = wait_pane(sock, "agentctl-rc=")
        assert "agentctl-rc=7" in pane, pane
    finally:
        tmux(sock, "kill-server")


def test_agentctl_attach(daemon, pod):
    _, ids = pod
    p = subprocess.Popen([H.agentctl_binary(), "-e", "unix://" + daemon.sock, "attach", "-i",
                          ids["echo"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        p.stdin.write("hello\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "got:hello"
    finally:
        p.terminate()
        p.communicate(timeout=10)
    r = P.ctl(daemon, "attach", "nosuchcontainer")
    assert r.returncode != 0 and "nosuchcontainer" in r.stderr, r


def test_agentctl_port_forward(daemon, pod):
    """Two forwarded ports: httpd answers through one; nothing listens behind
    the other, which gets its error while the first keeps working."""
    pod_id, _ = pod
    good, bad = free_port(), free_port()
    p = subprocess.Popen([H.agentctl_binary(), "-e", "unix://" + daemon.sock, "port-forward",
                          pod_id[:12], "%d:8080" % good, "%d:8099" % bad],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = curl_until_up(good)
        if r.stdout.strip() != "st":
            p.terminate()
            raise AssertionError((r.stderr, p.communicate(timeout=10)))
        assert curl(bad).returncode != 0
        for _ in range(3):
            assert curl(good).stdout.strip() == "st"
        assert p.poll() is None
    finally:
        p.terminate()
        out, err = p.communicate(timeout=10)
    assert "Forwarding from 127.0.0.1:%d -> 8080" % good in out
    assert "port 8099" in err, err
    r = P.ctl(daemon, "port-forward", pod_id, "0:80")
    assert r.returncode == 64, r


# ---- WebSocket subprotocols straight from websocket-client ---------------------------
# python3-websocket (websocket-client, which python3-kubernetes uses underneath)
# speaking the channel protocols itself: v5's close channel (255) for stdin
# half-close, and the base64 text framing.

def ws_open(url, protocol, sslopt=None):
    import websocket
    scheme = "wss://" if url.startswith("https://") else "ws://"
    ws = websocket.create_connection(scheme + url.split("://", 1)[1], timeout=20,
                                     subprotocols=[protocol], sslopt=sslopt)
    assert ws.getsubprotocol() == protocol
    return ws


def ws_collect(ws, b64=False):
    """Every channel's bytes until the server closes."""
    import base64
    import websocket
    chans = {}
    while True:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        if isinstance(data, str):
            data = data.encode()
        if not data:
            continue
        if b64:
            ch, payload = data[0] - ord("0"), base64.b64decode(data[1:])
        else:
            ch, payload = data[0], data[1:]
        chans[ch] = chans.get(ch, b"") + payload
    ws.close()
    return chans


def ws_send(ws, channel, data, b64=False):
    import base64
    import websocket
    if b64:
        ws.send(chr(ord("0") + channel) + base64.b64encode(data).decode())
    else:
        ws.send(bytes([channel]) + data, opcode=websocket.ABNF.OPCODE_BINARY)


def test_ws_v5_stdin_close(rt, pb, pod):
    """v5.channel.k8s.io: channel 255 with 0 closes stdin; cat ends, its
    output and a Success status arrive."""
    _, ids = pod
    ws = ws_open(exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "cat; echo end"], stdin=True),
                 "v5.channel.k8s.io")
    data = b"".join(b"line %d\n" % i for i in range(2000))
    ws_send(ws, 0, data)
    ws_send(ws, 255, b"\x00")
    ch = ws_collect(ws)
    assert ch.get(1) == data + b"end\n"
    assert json.loads(ch[3])["status"] == "Success", ch.get(3)


def test_ws_v5_close_of_other_channel_keeps_stdin(rt, pb, pod):
    """A close of a channel that is not stdin leaves stdin open."""
    _, ids = pod
    ws = ws_open(exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "read a; echo got:$a; exit 4"],
                          stdin=True), "v5.channel.k8s.io")
    ws_send(ws, 255, b"\x01")
    ws_send(ws, 0, b"x\n")
    ch = ws_collect(ws)
    assert ch.get(1) == b"got:x\n"
    st = json.loads(ch[3])
    assert st["reason"] == "NonZeroExitCode" and st["details"]["causes"][0]["message"] == "4"


def test_ws_base64(rt, pb, pod):
    """base64.channel.k8s.io (version 1): text frames, a digit for the
    channel, base64 data; the error channel has the failure's text."""
    _, ids = pod
    ws = ws_open(exec_url(rt, pb, ids["sleeper"],
                          ["sh", "-c", "read l; echo out:$l; echo err >&2; exit 2"], stdin=True),
                 "base64.channel.k8s.io")
    ws_send(ws, 0, b"\x01\xffbin\n", b64=True)  # sh drops NUL
    ch = ws_collect(ws, b64=True)
    assert ch.get(1) == b"out:\x01\xffbin\n"
    assert ch.get(2) == b"err\n"
    assert b"exit code 2" in ch.get(3, b""), ch


def test_ws_v4_base64_status(rt, pb, pod):
    _, ids = pod
    ws = ws_open(exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "echo hi; exit 3"]),
                 "v4.base64.channel.k8s.io")
    ch = ws_collect(ws, b64=True)
    assert ch.get(1) == b"hi\n"
    assert json.loads(ch[3])["details"]["causes"][0]["message"] == "3"


# ---- stdin EOF on a tty exec ------------------------------------------------------

def test_ws_v5_tty_stdin_close_hangs_up(rt, pb, pod):
    """The end of stdin on a tty exec hangs the terminal up, as containerd's
    shim does (it closes the console once the exec's stdin ends): what was
    typed before is read and echoed, then the process gets SIGHUP."""
    _, ids = pod
    ws = ws_open(exec_url(rt, pb, ids["sleeper"], ["cat"], tty=True, stdin=True),
                 "v5.channel.k8s.io")
    ws_send(ws, 0, b"typed\r")
    deadline = time.monotonic() + 10
    seen = b""
    while b"typed" not in seen and time.monotonic() < deadline:
        op, data = ws.recv_data()
        if data and data[0] == 1:
            seen += data[1:]
    ws_send(ws, 255, b"\x00")
    t0 = time.monotonic()
    ch = ws_collect(ws)
    assert time.monotonic() - t0 < 10
    st = json.loads(ch[3])
    assert st["details"]["causes"][0]["message"] == "129", st  # 128 + SIGHUP


def test_agentctl_exec_tty_stdin_eof(daemon, pod):
    """agentctl exec -it with stdin from a pipe (a tty requested, stdin not a
    terminal): its EOF ends `cat` in the container instead of hanging."""
    _, ids = pod
    r = subprocess.run([H.agentctl_binary(), "-e", "unix://" + daemon.sock, "exec", "-it",
                        ids["sleeper"], "cat"], input="abc\n", capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 129, r


# ---- stdin_once on attach ---------------------------------------------------------

def test_attach_stdin_once(rt, pb, pod, work):
    """A container created with stdin and stdin_once: an attach without stdin
    leaves it open; the first attach with stdin feeds it and its end is the
    container's EOF; a later attach's stdin goes nowhere."""
    pod_id, _ = pod
    cfg = pb.api.PodSandboxConfig(
        metadata=pb.api.PodSandboxMetadata(name="st", namespace="test", uid="uid-st"),
        hostname="st", log_directory=str(work / "logs"))
    image = rt.ContainerStatus(pb.api.ContainerStatusRequest(
        container_id=pod[1]["sleeper"])).status.image.image
    c = pb.api.ContainerConfig(
        metadata=pb.api.ContainerMetadata(name="once"), image=pb.api.ImageSpec(image=image),
        command=["sh", "-c", "while read l; do echo got:$l; done; echo stdin-ended; sleep 3600"],
        log_path="once.log", stdin=True, stdin_once=True)
    cid = rt.CreateContainer(pb.api.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=c, sandbox_config=cfg)).container_id
    rt.StartContainer(pb.api.StartContainerRequest(container_id=cid))
    try:
        def attach(stdin):
            url = rt.Attach(pb.api.AttachRequest(container_id=cid, stdin=stdin, stdout=True,
                                                 stderr=True)).url
            return ws_open(url, "v5.channel.k8s.io")

        def read_until(ws, text, timeout=10):
            seen = b""
            ws.settimeout(timeout)
            deadline = time.monotonic() + timeout
            while text not in seen and time.monotonic() < deadline:
                try:
                    op, data = ws.recv_data()
                except Exception:  # noqa: BLE001 (timeout or close)
                    break
                if data and data[0] == 1:
                    seen += data[1:]
            return seen

        watcher = attach(False)  # output only: its end must not close stdin
        watcher.close()
        time.sleep(0.5)
        first = attach(True)
        ws_send(first, 0, b"one\n")
        assert b"got:one" in read_until(first, b"got:one")
        ws_send(first, 255, b"\x00")
        assert b"stdin-ended" in read_until(first, b"stdin-ended")
        first.close()
        second = attach(True)
        ws_send(second, 0, b"two\n")
        assert b"got:two" not in read_until(second, b"got:two", timeout=2)
        second.close()
        log = (work / "logs" / "once.log").read_text()
        assert "got:one" in log and "stdin-ended" in log and "got:two" not in log, log
    finally:
        rt.RemoveContainer(pb.api.RemoveContainerRequest(container_id=cid))


# ---- TLS: https and wss with the agent's certificates ---------------------------

@pytest.fixture(scope="module")
def tls_daemon(work, pb, daemon, image):
    """A second agentd on the same network whose streaming server speaks TLS
    with its gRPC certificate (SAN 127.0.0.1), with a pod like the first's."""
    certs = H.make_certs(str(work / "certs"))
    d = work / "tls"
    d.mkdir()
    cfg = d / "agentd.conf"
    cfg.write_text("[cni]\nconf_dir = %s\nnetns_dir = %s\n[streaming]\ntls = true\n"
                   % (work / "cni", d / "netns"))
    a = H.Agentd(workdir=str(d / "agentd"), certs=certs, extra_args=["--config", str(cfg)],
                 env={"AGENTD_SHIM": os.path.join(H.build_dir(), "runtime", "agentd-shim")})
    a.start()
    try:
        with a.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            im = pb.api_grpc.ImageServiceStub(ch)
            im.PullImage(pb.api.PullImageRequest(image=pb.api.ImageSpec(image=image)),
                         timeout=120)
            pcfg = pb.api.PodSandboxConfig(
                metadata=pb.api.PodSandboxMetadata(name="tls", namespace="test", uid="uid-tls"),
                hostname="tls", log_directory=str(d / "logs"))
            pod_id = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
            ids = {}
            for name, cmd in (("sleeper", ["sleep", "3600"]),
                              ("httpd", ["httpd", "-f", "-p", "8080", "-h", "/etc"])):
                c = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=name),
                                           image=pb.api.ImageSpec(image=image), command=cmd,
                                           log_path=name + ".log")
                ids[name] = rt.CreateContainer(pb.api.CreateContainerRequest(
                    pod_sandbox_id=pod_id, config=c, sandbox_config=pcfg)).container_id
                rt.StartContainer(pb.api.StartContainerRequest(container_id=ids[name]))
            yield a, certs, rt, pod_id, ids
    finally:
        try:
            P.remove_all_pods(pb, a)
        finally:
            a.stop()
            a.kill()
            if str(d / "netns") in Path("/proc/self/mountinfo").read_text():
                subprocess.run(["umount", str(d / "netns")], capture_output=True)


def tls_ctl(a, certs, *args, **kw):
    return subprocess.run([H.agentctl_binary(), "-e", "tls://127.0.0.1:%d" % a.tls_port,
                           "--cacert", certs.ca, "--cert", certs.client_cert,
                           "--key", certs.client_key] + list(args),
                          capture_output=True, text=True, timeout=60, **kw)


def test_tls_urls_and_wss_exec(pb, tls_daemon):
    a, certs, rt, _, ids = tls_daemon
    url = exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "cat; echo err >&2; exit 3"], stdin=True)
    assert url.startswith("https://127.0.0.1:"), url
    ws = ws_open(url, "v5.channel.k8s.io", sslopt={"ca_certs": certs.ca})
    ws_send(ws, 0, b"over tls\n")
    ws_send(ws, 255, b"\x00")
    ch = ws_collect(ws)
    assert ch.get(1) == b"over tls\n" and ch.get(2) == b"err\n"
    assert json.loads(ch[3])["details"]["causes"][0]["message"] == "3"
    # A client that does not trust the CA gets no session.
    import ssl
    url = exec_url(rt, pb, ids["sleeper"], ["true"])
    with pytest.raises(ssl.SSLError):
        ws_open(url, "v4.channel.k8s.io", sslopt={"ca_certs": certs.other_ca})


def test_tls_agentctl_exec_and_port_forward(tls_daemon):
    a, certs, _, pod_id, ids = tls_daemon
    data = "".join("line %d\n" % i for i in range(5000))
    r = tls_ctl(a, certs, "exec", "-i", ids["sleeper"], "sh", "-c", "cat; exit 5", input=data)
    assert r.stdout == data and r.returncode == 5, r.stderr
    port = free_port()
    p = subprocess.Popen([H.agentctl_binary(), "-e", "tls://127.0.0.1:%d" % a.tls_port,
                          "--cacert", certs.ca, "--cert", certs.client_cert,
                          "--key", certs.client_key, "port-forward", pod_id, "%d:8080" % port],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = curl_until_up(port)
        assert r.stdout.strip() == "tls", (r.stderr, p.poll())
    finally:
        p.terminate()
        out, err = p.communicate(timeout=10)
    # Over the unix socket agentctl has no CA for agentd: the system's
    # store does not know the test CA, and it says so.
    r = subprocess.run([H.agentctl_binary(), "-e", "unix://" + a.sock, "exec", "-i",
                        ids["sleeper"], "true"], input="", capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "certificate verify failed" in r.stderr, r


# ---- SPDY from Debian's Go spdystream, without client-go -------------------------

@pytest.fixture(scope="module")
def spdy_client(work):
    """tests/integration/spdy_client (Go, Debian's spdystream package) built
    for this run."""
    go = shutil.which("go")
    if not go or not Path("/usr/share/gocode/src/github.com/moby/spdystream").exists():
        pytest.skip("no golang-go / golang-github-docker-spdystream-dev")
    out = work / "spdy_client"
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=str(work / "gocache"), GOFLAGS="")
    r = subprocess.run([go, "build", "-o", str(out),
                        str(Path(__file__).parent / "spdy_client" / "main.go")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def test_go_spdy_exec(rt, pb, pod, spdy_client):
    """v4 over spdystream: stdin beyond one flow-control window, half-closed at
    its end, stdout and stderr apart, the exit code from the Status."""
    _, ids = pod
    url = exec_url(rt, pb, ids["sleeper"], ["sh", "-c", "cat; echo err >&2; exit 7"], stdin=True)
    data = "".join("spdy line %d\n" % i for i in range(20000))
    r = subprocess.run([str(spdy_client), "exec", url], input=data, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout == data
    assert r.stderr.startswith("err\n"), r.stderr
    assert "NonZeroExitCode" in r.stderr and r.returncode == 7, r


def test_go_spdy_port_forward(rt, pb, pod, spdy_client):
    pod_id, _ = pod

    def forward(port):
        url = rt.PortForward(pb.api.PortForwardRequest(pod_sandbox_id=pod_id, port=[port])).url
        return subprocess.run([str(spdy_client), "forward", url, str(port)],
                              input="GET /hostname HTTP/1.0\r\n\r\n", capture_output=True,
                              text=True, timeout=60)
    r = forward(8080)
    assert r.returncode == 0 and r.stdout.endswith("\n\nst\n"), r  # text mode: \r\n read as \n
    r = forward(8099)
    assert r.returncode == 3 and "8099" in r.stderr, r
