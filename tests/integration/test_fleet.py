"""deploy/fleet/agentd-fleet against two local "hosts": each a network
namespace (veth to this one) with its own sshd on an address made for the
test, in a mount namespace where /etc, /usr/local and /var/lib are overlays
whose upper layers live in the test's temp dir, so the rollout installs
into /usr/local/bin, /etc/agentd... of that host only. systemd is not PID 1
here: the service manager the script drives is fleet_svc.sh, which runs the
installed unit's ExecStart. Checked: --dry-run touches nothing; a rollout
installs, starts and waits for /readyz on each host in turn, and the agents
answer over mTLS with the shipped certificates; a second run changes
nothing; an unreachable host stops the rollout there and names it.
Everything (daemons, sshd, namespaces, links) is stopped or removed."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="openssh-server missing"),
]

SRC = Path(H.source_dir())
FLEET = str(SRC / "deploy" / "fleet" / "agentd-fleet")
CERTS = str(SRC / "deploy" / "certs" / "agentd-certs")
SVC = str(Path(__file__).parent / "fleet_svc.sh")
TAG = os.getpid() % 1000
NET = "10.240.%d" % (os.getpid() % 250)


def sh(*args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


def agentd_pid(host):
    f = host.dir / "var-up" / "agentd-svc" / "pid"
    return int(f.read_text()) if f.exists() else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet")
    pki = work / "pki"
    sh(CERTS, "-d", pki, "ca")
    sh(CERTS, "-d", pki, "client", "ops", "admin")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / "id")
    made_run_sshd = not os.path.isdir("/run/sshd")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    hosts, namespaces, sshds = [], [], []
    try:
        for i in range(2):
            name, ns = "host%d" % i, "adh%d-%d" % (TAG, i)
            here, there = "%s.%d" % (NET, 4 * i + 1), "%s.%d" % (NET, 4 * i + 2)
            d = work / name
            for sub in ("etc-up", "etc-work", "usr-up", "usr-work", "var-up", "var-work"):
                (d / sub).mkdir(parents=True)
            sh("ip", "netns", "add", ns)
            namespaces.append(ns)
            sh("ip", "link", "add", "adhh%d%d" % (TAG, i), "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "addr", "add", here + "/30", "dev", "adhh%d%d" % (TAG, i))
            sh("ip", "link", "set", "adhh%d%d" % (TAG, i), "up")
            sh("ip", "-n", ns, "addr", "add", there + "/30", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host_key")
            shutil.copy(work / "id.pub", d / "authorized_keys")
            (d / "sshd_config").write_text(
                "ListenAddress %s\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                % (there, d / "host_key", d / "sshd.pid", d / "authorized_keys"))
            mounts = " && ".join(
                "mount -t overlay overlay -o lowerdir=%s,upperdir=%s/%s-up,workdir=%s/%s-work %s"
                % (target, d, sub, d, sub, target)
                for target, sub in (("/etc", "etc"), ("/usr/local", "usr"), ("/var/lib", "var")))
            log = open(d / "sshd.log", "wb")
            p = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "-m", "--propagation",
                                  "private", "sh", "-c",
                                  mounts + " && exec /usr/sbin/sshd -D -e -f %s" %
                                  (d / "sshd_config")],
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            sshds.append((p, log))
            # Its agentd: private dirs, TLS on the host's address, metrics on
            # the namespace's own loopback.
            sh(CERTS, "-d", pki, "server", name, there)
            (d / "agentd.conf").write_text(
                "[agentd]\nroot = %s/root\nstate = %s/state\n"
                "[grpc]\nlisten = %s/state/agentd.sock\ntls_listen = %s:10250\n"
                "tls_cert = /etc/agentd/pki/server.crt\ntls_key = /etc/agentd/pki/server.key\n"
                "tls_client_ca = /etc/agentd/pki/ca.crt\n"
                "[cni]\nconf_dir = %s/cni\n[metrics]\nlisten = 127.0.0.1:9101\n"
                % (d, d, d, there, d))
            hosts.append(types.SimpleNamespace(name=name, ns=ns, addr=there, dir=d))
        for h in hosts:  # sshd up
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection((h.addr, 22), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, (h.dir / "sshd.log").read_text()
                    time.sleep(0.2)
        yield types.SimpleNamespace(work=work, pki=pki, hosts=hosts)
    finally:
        for h in hosts:
            pid = agentd_pid(h)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(100):
                        os.kill(pid, 0)
                        time.sleep(0.1)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p, log in sshds:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if made_run_sshd:
            try:
                os.rmdir("/run/sshd")
            except OSError:
                pass


def hosts_file(fleet, names=None, extra=()):
    lines = ["%s root@%s conf=%s" % (h.name, h.addr, h.dir / "agentd.conf")
             for h in fleet.hosts if names is None or h.name in names]
    f = fleet.work / "hosts"
    f.write_text("# test fleet\n" + "\n".join(list(lines[:1]) + list(extra) + lines[1:]) + "\n")
    return f


def fleet_run(fleet, hosts, *args):
    ssh = ("ssh -i %s -o BatchMode=yes -o StrictHostKeyChecking=no "
           "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=3"
           % (fleet.work / "id"))
    return subprocess.run([FLEET, "--build", H.build_dir(), "--pki", str(fleet.pki),
                           "--ssh", ssh, "--systemctl", SVC, "--ready-timeout", "60"]
                          + list(args) + [str(hosts)],
                          capture_output=True, text=True, timeout=600)


def test_rollout(fleet):
    hosts = hosts_file(fleet)
    r = fleet_run(fleet, hosts, "--dry-run")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "host0 (root@" in r.stdout and "host1 (root@" in r.stdout, r.stdout
    for h in fleet.hosts:
        assert not (h.dir / "usr-up" / "bin").exists()  # nothing installed

    r = fleet_run(fleet, hosts)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines() == ["host0: installed, agentd restarted", "host0: ready",
                                     "host1: installed, agentd restarted", "host1: ready"], r
    pids = [agentd_pid(h) for h in fleet.hosts]
    for h, pid in zip(fleet.hosts, pids):
        assert pid and os.path.exists("/proc/%d" % pid)
        assert (h.dir / "usr-up" / "bin" / "agentd").exists()
        assert (h.dir / "etc-up" / "agentd" / "pki" / "server.crt").read_bytes() == (
            fleet.pki / "hosts" / h.name / "server.crt").read_bytes()
        assert (h.dir / "var-up" / "agentd-svc" / "enabled").exists()
    # The agents answer over mTLS with the certificates the rollout shipped.
    ctl_hosts = fleet.work / "ctl-hosts"
    ctl_hosts.write_text("".join("%s %s:10250\n" % (h.name, h.addr) for h in fleet.hosts))
    c = fleet.pki / "clients"
    v = subprocess.run([H.agentctl_binary(), "--hosts", str(ctl_hosts), "--cacert",
                        str(fleet.pki / "ca.crt"), "--cert", str(c / "ops.crt"), "--key",
                        str(c / "ops.key"), "version"], capture_output=True, text=True)
    assert v.returncode == 0, v
    assert {x.split()[0] for x in v.stdout.splitlines()} == {"host0", "host1"}

    # Idempotent: nothing changed, nothing restarted.
    r = fleet_run(fleet, hosts)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines() == ["host0: up to date", "host0: ready",
                                     "host1: up to date", "host1: ready"], r
    assert [agentd_pid(h) for h in fleet.hosts] == pids

    # A host that cannot be reached stops the rollout there, named.
    bad = hosts_file(fleet, extra=["ghost root@%s.250" % NET])
    r = fleet_run(fleet, bad)
    assert r.returncode == 1, r
    assert "agentd-fleet: ghost (root@%s.250): ssh failed" % NET in r.stderr, r.stderr
    assert "not rolled out: host1" in r.stderr and "done before the failure: host0" in r.stderr
    assert r.stdout.splitlines() == ["host0: up to date", "host0: ready"], r
