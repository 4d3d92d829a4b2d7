"""deploy/ against systemd's own tools, and agentd's side of the notify
protocol: systemd-analyze verify of the unit (with ExecStart pointing at
the built agentd), systemd-tmpfiles --create of tmpfiles.d under a private
root, and READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 received on a
NOTIFY_SOCKET this test listens on, as systemd's manager would; a stalled
event loop (SIGUSR2 with the debug service) misses the watchdog."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402

DEPLOY = Path(H.source_dir()) / "deploy"


def unit_with_built_agentd(tmp_path):
    text = (DEPLOY / "agentd.service").read_text()
    assert "ExecStart=/usr/local/bin/agentd " in text
    unit = tmp_path / "agentd.service"
    unit.write_text(text.replace("/usr/local/bin/agentd", H.agentd_binary()))
    return unit, text


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path):
    unit, text = unit_with_built_agentd(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True)
    # verify exits 0 on many problems it only warns about: any output fails.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r
    for line in ("Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID",
                 "Delegate=yes", "KillMode=process", "Restart=always", "LimitNOFILE="):
        assert ("\n" + line) in text, line
    # The socket unit beside it (socket activation) verifies too.
    sock = tmp_path / "agentd.socket"
    sock.write_text((DEPLOY / "agentd.socket").read_text())
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(sock)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r
    assert "\nListenStream=/run/agentd/agentd.sock\n" in sock.read_text()
    assert "\nlisten = /run/agentd/agentd.sock\n" in (DEPLOY / "agentd.conf").read_text()
    # The check can fail: a broken unit is reported.
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bad)],
                       capture_output=True, text=True)
    assert "Failed to parse service type" in r.stderr, r


@pytest.mark.skipif(not shutil.which("systemd-tmpfiles"), reason="systemd-tmpfiles not installed")
def test_tmpfiles_create_dirs(tmp_path):
    conf = tmp_path / "usr/lib/tmpfiles.d/agentd.conf"
    conf.parent.mkdir(parents=True)
    shutil.copy(DEPLOY / "agentd.tmpfiles.conf", conf)
    r = subprocess.run(["systemd-tmpfiles", "--create", "--root", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r
    for d, mode in (("var/lib/agentd", 0o711), ("run/agentd", 0o711),
                    ("run/agentd/containers", 0o711), ("etc/agentd/certs.d", 0o755)):
        st = os.stat(tmp_path / d)
        assert st.st_mode & 0o7777 == mode, (d, oct(st.st_mode))


class NotifyListener:
    """The manager's end of the notify protocol: a datagram socket."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.got = []  # (monotonic time, message)

    def read_for(self, seconds):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            self.got.append((time.monotonic(), data.decode()))

    def wait_for(self, text, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t, m in self.got:
                if text in m:
                    return t, m
            self.read_for(0.2)
        raise AssertionError("no %r in %r" % (text, self.got))

    def close(self):
        self.sock.close()


def test_notify_ready_watchdog_stall_stopping(tmp_path):
    listener = NotifyListener(tmp_path / "notify")
    watchdog_usec = 1000000
    a = H.Agentd(workdir=str(tmp_path / "a"),
                 env={"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": str(watchdog_usec)})
    try:
        a.start()
        t_ready, msg = listener.wait_for("READY=1", 10)
        assert "STATUS=serving on unix://" in msg, msg
        # READY only once the socket answers: wait_ready() already called
        # Version over it before we looked.
        listener.read_for(2.2)
        pings = [t for t, m in listener.got if m == "WATCHDOG=1"]
        assert len(pings) >= 4, listener.got  # every 0.5 s
        gaps = [b - a_ for a_, b in zip(pings, pings[1:])]
        assert max(gaps) < watchdog_usec / 1e6, gaps

        # A stuck loop: no WATCHDOG=1 for longer than WATCHDOG_USEC, which
        # is what makes systemd kill and restart the service.
        listener.got.clear()
        stall_at = time.monotonic()
        a.signal(signal.SIGUSR2)
        listener.read_for(4.5)
        pings = [stall_at] + [t for t, m in listener.got if m == "WATCHDOG=1"]
        gaps = [b - a_ for a_, b in zip(pings, pings[1:])]
        assert gaps and max(gaps) > watchdog_usec / 1e6 * 1.5, (gaps, listener.got)
        assert "stalling the event loop" in a.stderr_text()
        # ... and it pings again once the loop runs.
        assert pings[-1] > stall_at + 3, pings

        listener.got.clear()
        a.signal(signal.SIGTERM)
        _, msg = listener.wait_for("STOPPING=1", 10)
        assert "STATUS=draining" in msg
        a.stop()
    finally:
        a.cleanup()
        listener.close()


def test_no_watchdog_for_another_pid(tmp_path):
    """WATCHDOG_PID naming another process: agentd does not ping (the
    variables were meant for a parent), but still says READY=1."""
    listener = NotifyListener(tmp_path / "notify")
    a = H.Agentd(workdir=str(tmp_path / "a"),
                 env={"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000",
                      "WATCHDOG_PID": "1"})
    try:
        a.start()
        listener.wait_for("READY=1", 10)
        listener.read_for(1.0)
        assert not [m for _, m in listener.got if "WATCHDOG" in m], listener.got
        a.stop()
    finally:
        a.cleanup()
        listener.close()


def pass_as_systemd_does(a, lis):
    """a (not started) gets the listening socket lis as fd 3 with
    LISTEN_FDS=1 and LISTEN_PID set to its own pid: a python wrapper moves
    the fd and sets the variables, then execs agentd (same pid)."""
    n = lis.fileno()
    wrapper = ("import os, sys; os.dup2(%d, 3); os.close(%d); "
               "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
               "os.execv(sys.argv[1], sys.argv[1:])" % (n, n))
    a.args = [sys.executable, "-c", wrapper] + a.args
    a.pass_fds = (n,)


def test_socket_activation(tmp_path):
    """agentd started the way systemd starts a socket-activated service: a
    unix socket bound and listening before agentd runs, passed as fd 3 with
    LISTEN_FDS=1 and LISTEN_PID=agentd's pid. agentd serves gRPC on it
    (calls made before it even started are answered once it does) and
    leaves the socket file, which is systemd's, in place at exit. (That the
    variables leave the environment is notify_test's.)"""
    pb = H.load_stubs()
    a = H.Agentd(workdir=str(tmp_path / "a"))
    os.makedirs(os.path.dirname(a.sock), exist_ok=True)
    lis = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lis.bind(a.sock)
    lis.listen(16)
    # Connected before agentd exists: queued in the backlog, as with systemd.
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.connect(a.sock)
    pass_as_systemd_does(a, lis)
    a.start()
    try:
        lis.close()
        early.sendall(H.PREFACE)
        early.settimeout(10)
        assert early.recv(9)[3] == 0x4  # the server's SETTINGS frame
        early.close()
        with a.unix_channel() as ch:
            v = pb.api_grpc.RuntimeServiceStub(ch).Version(pb.api.VersionRequest(), timeout=10)
            assert v.runtime_name == "agentd"
        assert "socket activation: 1 listening socket from systemd" in a.stderr_text()
        # The socket is agentd's fd 3, nothing else bound the path.
        assert os.readlink("/proc/%d/fd/3" % a.pid).startswith("socket:")
        a.stop()
        assert os.path.exists(a.sock)
    finally:
        a.kill()
        if os.path.exists(a.sock):
            os.unlink(a.sock)


def test_socket_activation_unknown_socket(tmp_path):
    """A passed socket that is none of agentd's listeners stops the start
    with an error naming it, rather than being silently ignored."""
    a = H.Agentd(workdir=str(tmp_path / "a"))
    lis = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lis.bind(str(tmp_path / "other.sock"))
    lis.listen(1)
    pass_as_systemd_does(a, lis)
    try:
        with pytest.raises(H.AgentdError):
            a.start(timeout=120)
        assert a.proc.wait(30) == 1
        assert "inherited fd 3 is no listening socket of a configured listener" in \
            a.stderr_text()
    finally:
        lis.close()
        a.kill()
