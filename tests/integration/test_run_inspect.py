"""agentctl's podman-style verbs against a real agentd on a private CNI
network with portmap: run IMAGE (pulled when needed, a pod with its port
mapped, volumes, env; attached: the log and the exit code), inspect's decoded
capability sets (against capsh --decode), capsh --decode, top (the
container's cgroup), and save's legacy `repositories` file read with tar."""
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402
from pods_harness import EX_USAGE, ctl, ok  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = (os.getpid() + 7) % 250
BRIDGE = "adr%d" % (os.getpid() % 1000)
SUBNET_PREFIX = "10.234.%d." % N
IMAGE_PATH = "test/runbox:v1"


@pytest.fixture(scope="module")
def registry(work):
    with P.busybox_registry(work, IMAGE_PATH) as reg:
        yield reg


@pytest.fixture(scope="module")
def daemon(work, pb, registry):
    with P.pod_agentd(work, pb, "agentctl-run", BRIDGE, SUBNET_PREFIX + "0/24",
                      portmap=True) as a:
        yield a


@pytest.fixture(scope="module")
def image(registry):
    return "%s/%s" % (registry.host, IMAGE_PATH)


def capsh_decode(mask):
    return subprocess.run(["capsh", "--decode=" + mask], capture_output=True, text=True,
                          check=True).stdout.strip()


def http_get(host, port, path, timeout):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def pods_named(daemon, name):
    return [p for p in json.loads(ok(daemon, "pods", "-o", "json"))["items"]
            if p["metadata"]["name"] == name]


def test_capsh_decode_matches_capsh():
    for mask in ("00000000a80425fb", "000001ffffffffff", "0", "0x0000000000000400",
                 "0010000000000000", "ffffffffffffffff"):
        want = capsh_decode(mask)
        got = subprocess.run([H.agentctl_binary(), "capsh", "--decode", mask],
                             capture_output=True, text=True)
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == want, mask
    for bad in ("zz", "", "0x", "-1", "1" * 17, "12 34"):
        got = subprocess.run([H.agentctl_binary(), "capsh", "--decode", bad],
                             capture_output=True, text=True)
        assert got.returncode == EX_USAGE and "not a capability mask" in got.stderr, bad
    got = subprocess.run([H.agentctl_binary(), "capsh"], capture_output=True, text=True)
    assert got.returncode == EX_USAGE and "--decode HEX is required" in got.stderr


def test_run_attached_pulls_and_exits_with_the_code(daemon, image, work):
    vol = work / "vol"
    vol.mkdir(exist_ok=True)
    (vol / "in.txt").write_text("from-the-host\n")
    r = ctl(daemon, "run", "--name", "once", "-e", "GREETING=hello there", "-v",
            f"{vol}:/data:ro", image, "sh", "-c",
            'echo "$GREETING"; cat /data/in.txt; echo to-stderr >&2; '
            'touch /data/x 2>/dev/null || echo read-only; exit 7')
    assert r.returncode == 7, (r.stdout, r.stderr)
    assert r.stdout == "hello there\nfrom-the-host\nread-only\n", r.stdout
    assert "to-stderr" in r.stderr
    # Pulled on the way (the image was not there).
    assert "layer 1/1" in r.stderr
    assert not (vol / "x").exists()
    pods = pods_named(daemon, "once")
    assert len(pods) == 1
    # A name in use: the pod's error, non-zero.
    r = ctl(daemon, "run", "--name", "once", image, "true")
    assert r.returncode != 0 and "once" in r.stderr
    ok(daemon, "stopp", pods[0]["id"])
    ok(daemon, "rmp", pods[0]["id"])


def test_run_detached_port_inspect_top(daemon, image, work):
    www = work / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("served-through-portmap\n")
    port = H.free_port()
    r = ctl(daemon, "run", "-d", "--name", "web", "-p", f"{port}:8080", "-v", f"{www}:/www:ro",
            image, "sh", "-c", "echo admin:x:0:0::/:/bin/sh > /etc/passwd && "
            "exec httpd -f -p 8080 -h /www")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), r.stdout
    pod = pods_named(daemon, "web")[0]
    try:
        deadline = time.monotonic() + 15
        data = b""
        while b"served-through-portmap" not in data and time.monotonic() < deadline:
            try:
                data = http_get(SUBNET_PREFIX + "1", port, "/index.html", timeout=3)
            except OSError:
                time.sleep(0.2)
        assert b"served-through-portmap" in data
        assert f"dport {port}" in P.run("iptables", "-t", "nat", "-S").stdout

        # inspect: the capability sets, decoded as capsh decodes them.
        info = json.loads(ok(daemon, "inspect", cid[:12]))["info"]
        caps = info["capabilities"]
        assert set(caps) == {"effective", "permitted", "inheritable", "bounding", "ambient"}
        status = Path(f"/proc/{info['pid']}/status").read_text()
        for key, field in (("effective", "CapEff"), ("permitted", "CapPrm"),
                           ("inheritable", "CapInh"), ("bounding", "CapBnd"),
                           ("ambient", "CapAmb")):
            mask = re.search(field + r":\s*([0-9a-f]+)", status).group(1)
            assert caps[key]["mask"] == mask
            want = capsh_decode(mask).split("=", 1)[1]
            assert ",".join(caps[key]["names"]) == want, key
        assert "cap_net_bind_service" in caps["effective"]["names"]
        assert "cap_sys_admin" not in caps["effective"]["names"]

        # top: the httpd and an exec'd sleep, from the container's cgroup.
        sleeper = P.spawn(daemon, "exec", cid, "sleep", "30")
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                out = ok(daemon, "top", cid[:12])
                if "sleep 30" in out:
                    break
                time.sleep(0.2)
            lines = out.splitlines()
            assert lines[0].split() == ["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME",
                                        "COMMAND"]
            rows = [l.split(None, 7) for l in lines[1:]]
            cmds = {r[7]: r for r in rows}
            assert "httpd -f -p 8080 -h /www" in cmds and "sleep 30" in cmds, out
            httpd = cmds["httpd -f -p 8080 -h /www"]
            # The user as the container's /etc/passwd names it.
            assert httpd[0] == "admin" and httpd[5] == "?"
            assert int(httpd[1]) == info["pid"]
            assert re.fullmatch(r"[0-9.]+(ms|s)|[0-9]+m[0-9.]+s", httpd[4]), httpd
            # Nothing outside the container (agentd itself, the pod's infra).
            assert len(rows) == 2, out
            js = json.loads(ok(daemon, "top", "-o", "json", cid))
            assert {p["pid"] for p in js["processes"]} == {int(r[1]) for r in rows}
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        ok(daemon, "stopp", pod["id"])
        ok(daemon, "rmp", pod["id"])
    assert f"dport {port}" not in P.run("iptables", "-t", "nat", "-S").stdout
    r = ctl(daemon, "top", cid)
    assert r.returncode != 0 and "NOT_FOUND" in r.stderr


def test_run_bad_input(daemon, image, work):
    cases = [
        (["run", "-p", "80", image], "want [IP:]HOST_PORT:CONTAINER_PORT"),
        (["run", "-p", "x:80", image], "'x' is not a port"),
        (["run", "-p", "8080:70000", image], "'70000' is not a port"),
        (["run", "-p", "8080:80/icmp", image], "unknown protocol"),
        (["run", "-v", "relative:/x", image], "absolute"),
        (["run", "-v", f"{work}/absent:/x", image], "No such file"),
        (["run", "-v", f"{work}:/x:rx", image], "unknown mode"),
        (["run", "-e", "NOEQUALS", image], "KEY=VALUE"),
        (["run"], "IMAGE is required"),
    ]
    for args, want in cases:
        r = ctl(daemon, *args)
        assert r.returncode == EX_USAGE, (args, r.stderr)
        assert want in r.stderr, (args, r.stderr)
    r = ctl(daemon, "run", "--name", "ghost", f"{image.split('/')[0]}/test/never:v1", "true")
    assert r.returncode != 0 and "not found" in r.stderr, r.stderr
    assert pods_named(daemon, "ghost") == []
    r = ctl(daemon, "top", "nosuchctr")
    assert r.returncode != 0 and "NOT_FOUND" in r.stderr
    r = ctl(daemon, "top")
    assert r.returncode == EX_USAGE


def test_save_writes_repositories(daemon, image, work):
    ok(daemon, "pull", image)
    archive = work / "image.tar"
    ok(daemon, "save", "-o", archive, image)
    out = work / "unpacked"
    out.mkdir()
    # The tutorial's walk-through: tar -xvf image.tar; cat repositories; cat manifest.json
    subprocess.run(["tar", "-xvf", str(archive)], cwd=out, check=True, capture_output=True)
    repos = json.loads((out / "repositories").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    name, tag = image.rsplit(":", 1)
    assert list(repos) == [name] and list(repos[name]) == [tag]
    top = repos[name][tag]
    assert manifest[0]["Layers"][-1] == "blobs/sha256/" + top
    assert (out / "blobs" / "sha256" / top).is_file()
    assert manifest[0]["RepoTags"] == [image]
    # docker load's reader still takes it.
    with tarfile.open(archive) as t:
        assert "repositories" in t.getnames()


def exec_start_argv(unit_text):
    """ExecStart= of a unit as the argv systemd would run (quotes, %% and $$)."""
    import shlex
    line = next(l for l in unit_text.splitlines() if l.startswith("ExecStart="))
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line[len("ExecStart="):])]


@pytest.mark.skipif(not __import__("shutil").which("systemd-analyze"),
                    reason="systemd-analyze not installed")
def test_generate_systemd_unit_verifies_and_runs(daemon, image, work):
    port = H.free_port()
    r = ctl(daemon, "run", "-d", "--name", "svc", "-p", f"{port}:8080", "-e", "PCT=100% $HOME",
            image, "sh", "-c", 'trap "exit 143" TERM; echo "up $PCT"; '
            'while true; do sleep 0.2; done')
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    pod = pods_named(daemon, "svc")[0]
    unit = ok(daemon, "generate", "systemd", "--restart-policy", "always", "svc")
    for line in ("[Unit]", "Requires=agentd.service", "[Service]", "Type=exec",
                 "Restart=always", "SuccessExitStatus=143", "[Install]"):
        assert "\n" + line + "\n" in unit, line
    argv = exec_start_argv(unit)
    assert argv[0] == H.agentctl_binary()
    assert argv[1:] == ["-e", "unix://" + daemon.sock, "run", "--rm", "--replace", "--name",
                        "svc", "-p", f"{port}:8080/tcp", "-e", "PCT=100% $HOME", image, "sh",
                        "-c", 'trap "exit 143" TERM; echo "up $PCT"; '
                        'while true; do sleep 0.2; done'], argv
    # By pod id and with --files: the same unit, written to agentd-svc.service.
    units = work / "units"
    units.mkdir(exist_ok=True)
    r = subprocess.run([H.agentctl_binary(), "-e", "unix://" + daemon.sock, "generate",
                        "systemd", "--restart-policy", "always", "--files", pod["id"][:12]],
                       cwd=units, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(units / "agentd-svc.service")
    assert (units / "agentd-svc.service").read_text() == unit
    # systemd-analyze verify, beside the agentd unit it requires.
    agentd_unit = (Path(H.source_dir()) / "deploy" / "agentd.service").read_text()
    (units / "agentd.service").write_text(agentd_unit.replace(
        "ExecStart=/usr/local/bin/agentd ", "ExecStart=%s " % H.agentd_binary()))
    v = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        str(units / "agentd-svc.service")], capture_output=True, text=True)
    assert v.returncode == 0 and not v.stdout.strip() and not v.stderr.strip(), v
    bad = units / "agentd-bad.service"
    bad.write_text(unit.replace("Restart=always", "Restart=sometimes"))
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bad)],
                       capture_output=True, text=True)
    assert "Failed to parse service restart specifier" in v.stderr, v

    # What systemd would run: replaces the pod, runs attached, stops on SIGTERM.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        new = []
        while time.monotonic() < deadline:
            new = [p for p in pods_named(daemon, "svc") if p["id"] != pod["id"]]
            if new and new[0]["state"] == "SANDBOX_READY":
                break
            time.sleep(0.2)
        assert new, "the unit's run made no pod"
        assert [p["id"] for p in pods_named(daemon, "svc")] == [new[0]["id"]]  # replaced
        time.sleep(1)
        proc.send_signal(15)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "up 100% $HOME" in out, (out, err)
    assert proc.returncode == 143, (proc.returncode, err)
    assert pods_named(daemon, "svc") == []  # --rm

    for args, want, code in [
        (["generate", "systemd", "nosuch"], "no container or pod 'nosuch'", None),
        (["generate", "kubernetes", "x"], "unknown kind 'kubernetes'", EX_USAGE),
        (["generate", "systemd"], "POD or CONTAINER is required", EX_USAGE),
        (["generate", "systemd", "--restart-policy", "sometimes", "x"],
         "unknown --restart-policy", EX_USAGE),
    ]:
        r = ctl(daemon, *args)
        assert r.returncode != 0 and (code is None or r.returncode == code), (args, r.stderr)
        assert want in r.stderr, (args, r.stderr)
