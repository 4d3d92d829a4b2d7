"""agentctl's crictl-like pod and container commands against a real agentd:
private CNI config (own bridge, subnet and host-local dataDir under the temp
dir), busybox pulled from a loopback registry, containers under the real
runtime. Everything created (pods, bridge, netns pin mount) is removed."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402
from pods_harness import EX_DATAERR, EX_USAGE, ctl, ok  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adc%d" % (os.getpid() % 1000)
SUBNET = "10.233.%d.0/24" % N
IMAGE_PATH = "test/ctlbox:v1"


registry, daemon, image = P.busybox_pod_fixtures("agentctl-test", BRIDGE, SUBNET, IMAGE_PATH)


def test_bad_config_files(daemon, work):
    bad = work / "bad.json"
    bad.write_text('{"metadata": {"name": "x",')
    r = ctl(daemon, "runp", bad)
    assert r.returncode == EX_DATAERR and str(bad) in r.stderr and "invalid JSON" in r.stderr
    bad.write_text(json.dumps({"metadata": {"name": 5}}))
    r = ctl(daemon, "runp", bad)
    assert r.returncode == EX_DATAERR
    assert "%s: field 'metadata.name': expected a string" % bad in r.stderr
    bad.write_text(json.dumps({"port_mappings": [{"container_port": "80"}]}))
    r = ctl(daemon, "runp", bad)
    assert "field 'port_mappings[0].container_port': expected an integer" in r.stderr
    r = ctl(daemon, "runp", work / "missing.json")
    assert r.returncode != 0 and "missing.json" in r.stderr
    r = ctl(daemon, "runp")
    assert r.returncode == EX_USAGE


def test_unknown_ids(daemon):
    for args, method in ((("stopp", "nosuchpod"), "StopPodSandbox"),
                         (("inspectp", "nosuchpod"), "PodSandboxStatus"),
                         (("inspect", "nosuchctr"), "ContainerStatus"),
                         (("start", "nosuchctr"), "StartContainer"),
                         (("exec", "nosuchctr", "true"), "ExecSync")):
        r = ctl(daemon, *args)
        assert r.returncode != 0, args
        assert "agentctl: runtime.v1.RuntimeService/%s: NOT_FOUND" % method in r.stderr, r.stderr


def test_agentd_unreachable(work):
    for args in (("stopp", "abc"), ("inspect", "abc"), ("exec", "abc", "true"), ("pods",)):
        r = subprocess.run([H.agentctl_binary(), "-e", "unix://%s/nope.sock" % work] +
                           list(args), capture_output=True, text=True, timeout=30)
        assert r.returncode == 69, (args, r.stderr)
        assert r.stderr.count("agentctl: cannot connect") == 1, (args, r.stderr)


def test_pod_and_container_lifecycle(daemon, image, work):
    pod_cfg = work / "pod.json"
    pod_cfg.write_text(json.dumps({
        "metadata": {"name": "ctlpod", "namespace": "ctltest", "uid": "uid-ctlpod",
                     "attempt": 1},
        "hostname": "ctlpod",
        "log_directory": str(work / "logs"),
        "dns_config": {"servers": ["10.0.0.10"], "searches": ["svc.test"]},
        "labels": {"app": "ctl"},
        "annotations": {"note": "n"},
        "linux": {"security_context": {"namespace_options": {"network": "POD"}}},
        "not_a_cri_field": {"ignored": True},
    }))
    ctr_cfg = work / "ctr.json"
    ctr_cfg.write_text(json.dumps({
        "metadata": {"name": "hello"},
        "image": {"image": image},
        "command": ["sh", "-c", "echo hello; echo -n par; echo tial; sleep 300"],
        "envs": [{"key": "GREETING", "value": "hi"}],
        "labels": {"c": "hello"},
        "log_path": "hello.log",
        "linux": {"resources": {"memory_limit_in_bytes": 64 << 20}},
    }))
    pod = ok(daemon, "runp", pod_cfg).strip()
    assert len(pod) >= 32
    try:
        out = ok(daemon, "pods")
        head, row = out.splitlines()[0], out.splitlines()[1]
        assert head.split()[:3] == ["POD", "ID", "CREATED"]
        assert row.startswith(pod[:13]) and "Ready" in row and "ctlpod" in row
        assert "ctltest" in row
        assert ok(daemon, "pods", "-q").split() == [pod]
        assert ok(daemon, "pods", "-q", "--label", "app=ctl").split() == [pod]
        assert ok(daemon, "pods", "-q", "--label", "app=other").split() == []
        assert ok(daemon, "pods", "-q", "--state", "notready").split() == []
        assert ok(daemon, "pods", "-q", "--name", "ctlp").split() == [pod]
        items = json.loads(ok(daemon, "pods", "-o", "json"))["items"]
        assert items[0]["id"] == pod and items[0]["metadata"]["namespace"] == "ctltest"
        assert items[0]["state"] == "SANDBOX_READY"
        insp = json.loads(ok(daemon, "inspectp", pod[:12]))
        assert insp["status"]["id"] == pod and insp["status"]["labels"] == {"app": "ctl"}

        ctr = ok(daemon, "create", pod[:12], ctr_cfg, pod_cfg).strip()
        assert ok(daemon, "ps", "-q").split() == []
        assert ok(daemon, "ps", "-a", "-q").split() == [ctr]
        assert ok(daemon, "start", ctr[:10]).strip() == ctr
        out = ok(daemon, "ps", "--pod", pod)
        row = out.splitlines()[1]
        assert row.startswith(ctr[:13]) and "Running" in row and "hello" in row
        assert row.split()[-1] == pod[:13]
        assert ok(daemon, "ps", "-q", "--label", "c=hello").split() == [ctr]
        cs = json.loads(ok(daemon, "ps", "-o", "json"))["containers"]
        assert cs[0]["id"] == ctr and cs[0]["state"] == "CONTAINER_RUNNING"
        insp = json.loads(ok(daemon, "inspect", ctr))
        assert insp["status"]["state"] == "CONTAINER_RUNNING"
        assert insp["status"]["logPath"].endswith("hello.log")

        deadline = time.monotonic() + 10
        while "partial" not in ok(daemon, "logs", ctr) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ok(daemon, "logs", ctr).splitlines() == ["hello", "partial"]
        assert ok(daemon, "logs", "--tail", "1", ctr).splitlines() == ["partial"]
        stamped = ok(daemon, "logs", "--timestamps", ctr).splitlines()
        assert stamped[0].endswith(" hello") and stamped[0][:4].isdigit()

        r = ctl(daemon, "exec", ctr, "echo", "hi")
        assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
        r = ctl(daemon, "exec", ctr, "sh", "-c", "echo oops >&2; exit 3")
        assert (r.returncode, r.stdout, r.stderr) == (3, "", "oops\n")
        r = ctl(daemon, "exec", "--timeout", "5", ctr, "sh", "-c", "echo $GREETING")
        assert (r.returncode, r.stdout) == (0, "hi\n")

        assert ok(daemon, "stop", "-t", "1", ctr).strip() == ctr
        assert ok(daemon, "ps", "-q").split() == []
        row = ok(daemon, "ps", "-a").splitlines()[1]
        assert "Exited" in row
        assert ok(daemon, "rm", ctr).strip() == ctr
        assert ok(daemon, "ps", "-a", "-q").split() == []
        r = ctl(daemon, "inspect", ctr)
        assert r.returncode != 0 and "NOT_FOUND" in r.stderr

        # run: pod + container in one go, removed with its pod.
        pod2_cfg = work / "pod2.json"
        pod2_cfg.write_text(json.dumps({"metadata": {"name": "ctlpod2", "namespace": "ctltest",
                                                     "uid": "uid-ctlpod2"},
                                        "log_directory": str(work / "logs2")}))
        ctr2 = ok(daemon, "run", ctr_cfg, pod2_cfg).strip()
        assert ok(daemon, "ps", "-q").split() == [ctr2]
        pod2 = ok(daemon, "pods", "-q", "--name", "ctlpod2").split()
        assert len(pod2) == 1 and pod2[0] != pod
        assert ok(daemon, "ps", "-q", "--pod", pod2[0]).split() == [ctr2]
        common = os.path.commonprefix([pod, pod2[0]])
        if common:
            r = ctl(daemon, "inspectp", common)
            assert r.returncode == EX_DATAERR
            assert "'%s' is the prefix of more than one pod id" % common in r.stderr
        else:
            assert json.loads(ok(daemon, "inspectp", pod[0]))["status"]["id"] == pod
        assert ok(daemon, "stopp", pod2[0]).strip() == "Stopped sandbox " + pod2[0]
        assert ok(daemon, "rmp", pod2[0]).strip() == "Removed sandbox " + pod2[0]
        assert ok(daemon, "ps", "-a", "-q").split() == []
    finally:
        ctl(daemon, "stopp", pod)
        ctl(daemon, "rmp", pod)
    assert ok(daemon, "pods", "-q").split() == []
    assert ok(daemon, "ps", "-a", "-q").split() == []
