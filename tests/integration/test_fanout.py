"""agentctl --hosts: one read command against three agentd instances, each
in a network namespace of its own (reached over a veth pair from this
namespace, mutual TLS with certificates from deploy/certs/agentd-certs for
each host's address), merged into one table with a HOST column; one agent
stopped mid-test gives a line naming it and a non-zero exit. The
namespaces, links and daemons are removed afterwards."""
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

CERTS = str(Path(H.source_dir()) / "deploy" / "certs" / "agentd-certs")
TAG = os.getpid() % 1000
NET = "10.239.%d" % (os.getpid() % 250)
EX_UNAVAILABLE = 69


def sh(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, r
    return r.stdout


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    work = tmp_path_factory.mktemp("fanout")
    pki = work / "pki"
    sh(CERTS, "-d", pki, "ca")
    sh(CERTS, "-d", pki, "client", "ops", "admin")
    ip_cmd = shutil.which("ip")
    made, daemons, hosts = [], [], []
    try:
        for i in range(3):
            ns, host_if = "adf%d-%d" % (TAG, i), "adfh%d%d" % (TAG, i)
            here, there = "%s.%d" % (NET, 4 * i + 1), "%s.%d" % (NET, 4 * i + 2)
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "addr", "add", here + "/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "-n", ns, "addr", "add", there + "/30", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            name = "node%d" % i
            sh(CERTS, "-d", pki, "server", name, there)
            h = pki / "hosts" / name
            port = 10250  # the namespace has a network stack of its own
            a = H.Agentd(workdir=str(work / name), extra_args=[
                "--tls-listen", "%s:%d" % (there, port), "--tls-cert", h / "server.crt",
                "--tls-key", h / "server.key", "--tls-client-ca", pki / "ca.crt"])
            a.args = [ip_cmd, "netns", "exec", ns] + [str(x) for x in a.args]
            a.start()
            daemons.append(a)
            # SNI/verification by the name in the certificate, address in the endpoint.
            hosts.append("%s tls://%s:%d" % (name, there, port))
        hosts_file = work / "hosts"
        hosts_file.write_text("# the test fleet\n" + "\n".join(hosts) + "\n")
        yield types.SimpleNamespace(daemons=daemons, hosts=hosts_file, pki=pki)
    finally:
        for a in daemons:
            try:
                if a.alive():
                    a.stop()
            finally:
                a.cleanup()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def ctl(agents, *args):
    p = agents.pki
    return subprocess.run(
        [H.agentctl_binary(), "--hosts", str(agents.hosts), "--cacert", str(p / "ca.crt"),
         "--cert", str(p / "clients" / "ops.crt"), "--key", str(p / "clients" / "ops.key"),
         "-t", "5"] + list(args), capture_output=True, text=True, timeout=60)


def test_fanout_merges_and_reports_unreachable(agents):
    r = ctl(agents, "version")
    assert r.returncode == 0, r
    rows = r.stdout.splitlines()
    for i in range(3):
        mine = [x for x in rows if x.split()[0] == "node%d" % i]
        assert len(mine) == 5 and mine[2].split()[1:] == ["RuntimeName:", "agentd"], r.stdout
    assert r.stderr == ""

    r = ctl(agents, "ps", "-a")
    assert r.returncode == 0, r
    assert r.stdout.splitlines()[0].split()[:2] == ["HOST", "CONTAINER"], r.stdout

    agents.daemons[1].stop()
    r = ctl(agents, "version")
    assert r.returncode == EX_UNAVAILABLE, r
    hosts_seen = {x.split()[0] for x in r.stdout.splitlines()}
    assert hosts_seen == {"node0", "node2"}, r.stdout
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("agentctl: node1 (tls://"), r.stderr
    assert "cannot connect" in err[0], r.stderr

    # Only read commands fan out.
    r = ctl(agents, "rm", "abc")
    assert r.returncode == 64 and "read commands only" in r.stderr, r
