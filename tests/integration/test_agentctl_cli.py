"""agentctl's crictl surface against a real agentd: pod and container configs
in YAML (crictl's format), -o yaml everywhere -o json is, inspect/inspectp
output, ps/pods/images filters, logs --since/--timestamps/--tail and -f
waiting for a log, and the error paths (usage errors exit 64, unparsable
files name FILE:LINE:COLUMN). Set up like test_agentctl_pods.py: private CNI
config (own bridge, subnet and host-local dataDir under the temp dir),
busybox pulled from a loopback registry, containers under the real runtime.
Everything created (pods, bridge, netns pin mount, agentctl processes) is
removed."""
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402
from pods_harness import EX_DATAERR, EX_USAGE, ctl, finish, ok, spawn  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

EX_NOINPUT = 66
N = os.getpid() % 250
BRIDGE = "ady%d" % (os.getpid() % 1000)
SUBNET = "10.236.%d.0/24" % N
IMAGE_PATH = "test/ctlcli:v1"


registry, daemon, image = P.busybox_pod_fixtures("agentctl-cli", BRIDGE, SUBNET, IMAGE_PATH)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def pod_yaml(work, name, namespace="cli", labels="{}"):
    return write(work / ("pod-%s.yaml" % name), """\
        metadata:
          name: %s
          namespace: %s
          uid: uid-%s
        log_directory: %s
        labels: %s
        """ % (name, namespace, name, work / ("logs-" + name), labels))


def ctr_yaml(work, name, image, cmd):
    return write(work / ("ctr-%s.yaml" % name), """\
        metadata: {name: %s}
        image: {image: "%s"}
        command: %s
        labels: {t: %s}
        log_path: %s.log
        """ % (name, image, json.dumps(cmd), name, name))


@pytest.fixture
def pod(daemon, image, work, request):
    with P.running_pod(daemon, pod_yaml(work, "p-" + request.node.name[:40])) as p:
        yield p


def container(daemon, image, work, pod, name, cmd, start=True):
    return P.created_container(daemon, pod, ctr_yaml(work, name, image, cmd), start)


def same_in_yaml(daemon, *args):
    """-o json and -o yaml of the same command give the same tree."""
    j = json.loads(ok(daemon, *args, "-o", "json"))
    y = yaml.safe_load(ok(daemon, *args, "-o", "yaml"))
    assert y == j, (args, y, j)
    return j


# ------------------------------------------------------------------ YAML configs
def test_yaml_pod_and_container_round_trip(daemon, image, work):
    pod_cfg = write(work / "pod.yaml", """\
        # crictl's pod config, in YAML
        metadata:
          name: yamlpod
          namespace: yamltest
          uid: uid-yamlpod
          attempt: 2
        hostname: yamlhost
        log_directory: %s
        dns_config:
          servers: [10.0.0.10]
          searches:
          - svc.test
        labels: &labels
          app: yaml
          tier: "1"
        annotations:
          <<: *labels
          port: 8080     # unquoted: a string field takes the text, as crictl does
        linux:
          security_context:
            namespace_options: {network: POD}
        not_a_cri_field: {ignored: true}
        """ % (work / "yamllogs"))
    ctr_cfg = write(work / "ctr.yaml", """\
        metadata:
          name: yctr
        image:
          image: %s
        command:
        - sh
        - -c
        - echo "greeting=$GREETING"; hostname; cat /etc/resolv.conf; sleep 300
        envs:
        - key: GREETING
          value: 42
        labels: {c: yctr}
        logPath: yctr.log          # lowerCamelCase works as well
        linux:
          resources:
            memoryLimitInBytes: 0x4000000
        """ % image)
    pod = ok(daemon, "runp", pod_cfg).strip()
    try:
        st = yaml.safe_load(ok(daemon, "inspectp", "-o", "yaml", pod))
        md = st["status"]["metadata"]
        assert (md["name"], md["namespace"], md["uid"], md["attempt"]) == \
            ("yamlpod", "yamltest", "uid-yamlpod", 2)
        assert st["status"]["labels"] == {"app": "yaml", "tier": "1"}
        assert st["status"]["annotations"] == {"app": "yaml", "tier": "1", "port": "8080"}
        assert st["status"]["state"] == "SANDBOX_READY"
        ctr = ok(daemon, "create", pod, ctr_cfg, pod_cfg).strip()
        ok(daemon, "start", ctr)
        ins = yaml.safe_load(ok(daemon, "inspect", "-o", "yaml", ctr))
        assert ins["status"]["metadata"]["name"] == "yctr"
        assert ins["status"]["labels"] == {"c": "yctr"}
        assert ins["status"]["logPath"] == str(work / "yamllogs" / "yctr.log")
        out = P.wait_for(lambda: "nameserver" in ok(daemon, "logs", ctr) and
                       ok(daemon, "logs", ctr), "the container's output")
        lines = out.splitlines()
        assert lines[0] == "greeting=42" and lines[1] == "yamlhost", out
        assert "nameserver 10.0.0.10" in lines and "search svc.test" in lines, out
        # The same pod config in JSON gives the same pod (one mapping for both).
        pod_json = work / "pod-json.json"
        pod_json.write_text(json.dumps(yaml.safe_load((work / "pod.yaml").read_text()) |
                                       {"metadata": {"name": "jsonpod",
                                                     "namespace": "yamltest",
                                                     "uid": "uid-jsonpod", "attempt": 2},
                                        "annotations": {"app": "yaml", "tier": "1",
                                                        "port": "8080"}}))
        pod2 = ok(daemon, "runp", pod_json).strip()
        st2 = json.loads(ok(daemon, "inspectp", pod2))
        for k in ("labels", "annotations"):
            assert st2["status"][k] == st["status"][k]
        ok(daemon, "stopp", pod2)
        ok(daemon, "rmp", pod2)
        # run: a pod and a container from YAML in one go.
        pod3 = pod_yaml(work, "yamlrun")
        ctr3 = ok(daemon, "run", ctr_cfg, pod3).strip()
        assert ok(daemon, "ps", "-q", "--id", ctr3).split() == [ctr3]
        pod3_id = ok(daemon, "pods", "-q", "--name", "^yamlrun$").split()
        assert len(pod3_id) == 1
        ok(daemon, "stopp", pod3_id[0])
        ok(daemon, "rmp", pod3_id[0])
    finally:
        ctl(daemon, "stopp", pod)
        ctl(daemon, "rmp", pod)


def test_bad_yaml_files(daemon, work):
    cases = [
        ("metadata:\n  name: x\n  labels: [1, 2\n", "4:1: invalid YAML"),
        ("metadata:\n  name: x\nmetadata: {}\n", "3:1: duplicate key 'metadata'"),
        ("metadata:\n\tname: x\n", "2:1: invalid YAML:"),
        ("metadata:\n\tname: x\n", "(a tab: YAML indents with spaces)"),
        ("labels: *nowhere\n", "1:9: unknown alias '*nowhere'"),
        ("metadata: {attempt: !!int many}\n", "1:21: 'many' is not a valid !!int"),
        ("a: 1\n---\nb: 2\n", "2:1: more than one YAML document"),
        ("", "1:1: the file holds no document"),
    ]
    for i, (text, needle) in enumerate(cases):
        f = work / ("bad%d.yaml" % i)
        f.write_text(text)
        r = ctl(daemon, "runp", f)
        assert r.returncode == EX_DATAERR, (text, r.stderr)
        assert "agentctl: %s:%s" % (f, needle) in r.stderr or \
            needle.startswith("(") and needle in r.stderr, (text, r.stderr)
    f = write(work / "list.yaml", "- metadata: {name: x}\n")
    r = ctl(daemon, "runp", f)
    assert r.returncode == EX_DATAERR and "%s: expected a YAML mapping" % f in r.stderr
    # Values of the wrong type: named by field, and by line:column in YAML.
    f = write(work / "types.yaml", "metadata:\n  name: x\n  attempt: first\n")
    r = ctl(daemon, "runp", f)
    assert r.returncode == EX_DATAERR
    assert "%s:3:12: field 'metadata.attempt': expected an integer" % f in r.stderr, r.stderr
    f = write(work / "map.yaml", "labels: {a: [1]}\n")
    r = ctl(daemon, "runp", f)
    assert r.returncode == EX_DATAERR
    assert "%s:1:13: field 'labels.a': expected a string" % f in r.stderr, r.stderr
    f = write(work / "ports.yaml", "port_mappings:\n- containerPort: 80\n  protocol: SCTP-ish\n")
    r = ctl(daemon, "runp", f)
    assert r.returncode == EX_DATAERR
    assert "field 'port_mappings[0].protocol': unknown value 'SCTP-ish'" in r.stderr, r.stderr
    # A bad container config is named too, before any pod is made.
    good_pod = pod_yaml(work, "never")
    bad_ctr = write(work / "badctr.yaml", "metadata: {name: c}\ncommand: sh -c true\n")
    r = ctl(daemon, "run", bad_ctr, good_pod)
    assert r.returncode == EX_DATAERR and "field 'command': expected an array" in r.stderr
    assert ok(daemon, "pods", "-q", "--name", "never").split() == []
    # JSON is still JSON, with its own line:column.
    f = write(work / "bad.json", '{\n  "metadata": {"name": "x",}\n}\n')
    r = ctl(daemon, "runp", f)
    assert r.returncode == EX_DATAERR and "%s:2:" % f in r.stderr and "invalid JSON" in r.stderr


# ------------------------------------------------------------------ -o yaml, inspect
def test_output_yaml_everywhere(daemon, image, work, pod):
    ctr = container(daemon, image, work, pod, "out", ["sleep", "300"])
    pods = same_in_yaml(daemon, "pods")["items"]
    assert pod[0] in [p["id"] for p in pods]
    cs = same_in_yaml(daemon, "ps")["containers"]
    assert [c["id"] for c in cs] == [ctr]
    ins = same_in_yaml(daemon, "inspect", ctr)
    insp = same_in_yaml(daemon, "inspectp", pod[0])
    imgs = same_in_yaml(daemon, "images")["images"]
    assert image in [t for i in imgs for t in i["repoTags"]]
    same_in_yaml(daemon, "inspecti", image)
    same_in_yaml(daemon, "version")
    st = yaml.safe_load(ok(daemon, "stats", "-o", "yaml", ctr))["stats"]
    assert [s["attributes"]["id"] for s in st] == [ctr]
    assert int(st[0]["memory"]["workingSetBytes"]["value"]) > 0

    # inspect/inspectp print crictl's shape: status plus the info map's keys,
    # each value's JSON parsed (not {"info": {"info": ...}}).
    assert set(ins) == {"status", "info"} and "info" not in ins["info"], ins.keys()
    assert ins["status"]["id"] == ctr
    assert set(insp) == {"status", "info"} and "info" not in insp["info"]
    assert insp["info"]["id"] == pod[0] and insp["info"]["netns"]
    insi = json.loads(ok(daemon, "inspecti", image))
    assert insi["info"]["imageSpec"]["config"]["Cmd"] == ["sh"], insi
    # Several at once: an array, and whatever is not there is named.
    two = yaml.safe_load(ok(daemon, "inspect", "-o", "yaml", ctr, ctr[:12]))
    assert [x["status"]["id"] for x in two] == [ctr, ctr]
    r = ctl(daemon, "inspectp", pod[0], "nosuchpod")
    assert r.returncode != 0 and "NOT_FOUND" in r.stderr and "nosuchpod" in r.stderr, r.stderr
    assert [x["status"]["id"] for x in json.loads(r.stdout)] == [pod[0]]
    for args in (("inspect", ctr), ("inspectp", pod[0]), ("inspecti", image)):
        r = ctl(daemon, args[0], "-o", "table", args[1])
        assert r.returncode == EX_USAGE and "prints json or yaml" in r.stderr, r.stderr
    for cmd in ("pods", "ps", "images", "stats", "info", "version", "inspect", "events"):
        r = ctl(daemon, cmd, "-o", "toml")
        assert r.returncode == EX_USAGE, (cmd, r.stderr)
        assert "unknown output format 'toml' (table, json or yaml)" in r.stderr, (cmd, r.stderr)

    # events -o yaml: a YAML document per event.
    ev = spawn(daemon, "events", "-o", "yaml")
    try:
        time.sleep(1)
        ok(daemon, "stop", "-t", "0", ctr)
        time.sleep(1)
    finally:
        ev.send_signal(signal.SIGINT)
        out, err = finish(ev)
    docs = [d for d in yaml.safe_load_all(out) if d and d.get("containerId") == ctr]
    assert "CONTAINER_STOPPED_EVENT" in [d["containerEventType"] for d in docs], out


# ------------------------------------------------------------------ filters
def test_ps_filters(daemon, image, work, pod):
    one = container(daemon, image, work, pod, "fa-one", ["sleep", "300"])
    two = container(daemon, image, work, pod, "fa-two", ["true"])
    P.wait_for(lambda: ok(daemon, "ps", "-q", "--state", "exited").split() == [two],
             "fa-two to exit")
    three = container(daemon, image, work, pod, "fb-three", ["sleep", "300"], start=False)
    q = lambda *a: ok(daemon, "ps", "-q", *a).split()  # noqa: E731
    assert q() == [one]
    assert q("-a") == [three, two, one]  # newest first
    assert q("--last", "2") == [three, two]  # every state
    assert q("-n", "2") == [three, two]
    assert q("--latest") == [three] and q("-l") == [three]
    assert q("-a", "--name", "^fa-") == [two, one]
    assert q("-a", "--name", "two$") == [two]
    assert q("-s", "exited") == [two] and q("--state", "Created") == [three]
    assert q("-a", "--label", "t=fa-one") == [one]
    assert q("-a", "--id", two[:8]) == [two]
    assert q("-a", "--image", image) == [three, two, one]
    assert q("-a", "--image", "no/such:img") == []
    assert q("-a", "-p", pod[0][:10]) == [three, two, one]
    assert q("--last", "0", "-a") == [three, two, one]  # 0: no limit
    row = ok(daemon, "ps", "--no-trunc").splitlines()[1]
    assert row.startswith(one + " ") and row.endswith(pod[0]), row
    assert ok(daemon, "ps").splitlines()[1].startswith(one[:13] + " ")
    # An image id in the IMAGE column is cut like the ids (crictl does).
    listed = json.loads(ok(daemon, "ps", "-o", "json"))["containers"][0]["image"]["image"]
    shown = ok(daemon, "ps").splitlines()[1].split()[1]
    assert shown == (listed[7:20] if listed.startswith("sha256:") else listed), (listed, shown)
    for args, needle in ((("--last", "-1"), "invalid --last '-1'"),
                         (("--name", "(x"), "invalid --name '(x'"),
                         (("--state", "dead"), "unknown state 'dead'"),
                         (("--label", "novalue"), "--label wants KEY=VALUE, not 'novalue'"),
                         (("--bogus",), "bad option '--bogus'"),
                         (("extra",), "unexpected argument 'extra'")):
        r = ctl(daemon, "ps", *args)
        assert r.returncode == EX_USAGE and needle in r.stderr, (args, r.stderr)
        assert "usage: agentctl [global options] ps" in r.stderr


def test_pods_filters(daemon, image, work):
    a = ok(daemon, "runp", pod_yaml(work, "pa-first", "nsa", "{tier: front}")).strip()
    b = ok(daemon, "runp", pod_yaml(work, "pb-second", "nsb", "{tier: back}")).strip()
    try:
        q = lambda *x: ok(daemon, "pods", "-q", *x).split()  # noqa: E731
        assert q() == [b, a]  # newest first
        assert q("--namespace", "^nsa$") == [a] and q("--namespace", "ns") == [b, a]
        assert q("--name", "second") == [b] and q("--name", "^p[ab]-") == [b, a]
        assert q("--last", "1") == [b] and q("-l") == [b] and q("--latest") == [b]
        assert q("-n", "5") == [b, a]
        assert q("--label", "tier=front") == [a]
        assert q("--id", a[:10]) == [a]
        assert q("-s", "ready") == [b, a] and q("--state", "notready") == []
        ok(daemon, "stopp", a)
        assert q("--state", "NotReady") == [a]
        row = ok(daemon, "pods", "--no-trunc", "--name", "first").splitlines()[1]
        assert row.startswith(a + " ") and "nsa" in row
        items = same_in_yaml(daemon, "pods", "--namespace", "nsb")["items"]
        assert [i["id"] for i in items] == [b]
        for args, needle in ((("--namespace", "[z"), "invalid --namespace '[z'"),
                             (("--state", "gone"), "unknown state 'gone' (ready or notready)"),
                             (("--last", "x"), "invalid --last 'x'"),
                             (("--label", "=v"), "--label wants KEY=VALUE")):
            r = ctl(daemon, "pods", *args)
            assert r.returncode == EX_USAGE and needle in r.stderr, (args, r.stderr)
    finally:
        for p in (a, b):
            ctl(daemon, "stopp", p)
            ctl(daemon, "rmp", p)


def test_images_filters(daemon, image):
    listed = json.loads(ok(daemon, "images", "-o", "json"))["images"]
    mine = [i for i in listed if image in i["repoTags"]]
    assert len(mine) == 1
    image_id = mine[0]["id"]
    assert image_id in ok(daemon, "images", "-q").split()
    name = image.rsplit(":", 1)[0]
    assert ok(daemon, "images", "-q", "-f", "reference=ctlcli").split() == [image_id]
    assert ok(daemon, "images", "-q", "--filter", "reference=^nomatch").split() == []
    assert ok(daemon, "images", "-q", "-f", "dangling=false").split() == [image_id]
    assert ok(daemon, "images", "-q", "-f", "dangling=true").split() == []
    assert ok(daemon, "images", "-q", "-f", "since=" + image).split() == []
    assert ok(daemon, "images", "-q", "-f", "before=" + image_id[7:19]).split() == []
    assert ok(daemon, "images", "-q", image).split() == [image_id]
    rows = ok(daemon, "images", "--digests", "--no-trunc").splitlines()
    assert rows[0].split() == ["IMAGE", "TAG", "DIGEST", "IMAGE", "ID", "SIZE"]
    row = [r.split() for r in rows[1:] if r.split()[0] == name][0]
    assert row[1] == "v1" and row[3] == image_id, row
    assert re.fullmatch(r"[0-9a-f]{64}", row[2]), row
    imgs = same_in_yaml(daemon, "images", "-f", "reference=ctlcli")["images"]
    assert [i["id"] for i in imgs] == [image_id]
    for args, needle, rc in ((("-f", "dangling=maybe"), "dangling= wants true or false", EX_USAGE),
                             (("-f", "label=x"), "unknown --filter 'label=x'", EX_USAGE),
                             (("-f", "reference=(("), "invalid --filter reference", EX_USAGE),
                             (("-f", "since="), "--filter since= wants an image", EX_USAGE),
                             (("-f", "since=no/such:img"), "since=no/such:img: no such image",
                              EX_DATAERR)):
        r = ctl(daemon, "images", *args)
        assert r.returncode == rc and needle in r.stderr, (args, r.stderr)


# ------------------------------------------------------------------ logs
def stamp(line):
    """The time of a `logs -t` line (to the microsecond)."""
    t = line.split(" ", 1)[0].replace("Z", "+00:00")
    t = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], t)
    return datetime.datetime.fromisoformat(t)


def test_logs_since_tail_timestamps(daemon, image, work, pod):
    ctr = container(daemon, image, work, pod, "since",
                    ["sh", "-c", "echo early; echo err >&2; sleep 2; echo late; sleep 300"])
    P.wait_for(lambda: "late" in ok(daemon, "logs", ctr), "the late line")
    stamped = ok(daemon, "logs", "-t", ctr).splitlines()
    assert ok(daemon, "logs", "--timestamps", ctr).splitlines() == stamped
    assert [s.split(" ", 1)[1] for s in stamped] == ["early", "late"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) ", s)
               for s in stamped), stamped
    early, late = stamp(stamped[0]), stamp(stamped[1])
    assert late - early >= datetime.timedelta(seconds=1.5)
    between = early + (late - early) / 2
    logs = lambda *a: ok(daemon, "logs", *a, ctr).splitlines()  # noqa: E731
    assert logs("--since", between.astimezone(datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == ["late"]
    # The same instant with an offset, and as Unix seconds.
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    assert logs("--since", between.astimezone(plus2).isoformat()) == ["late"]
    assert logs("--since", "%.6f" % between.timestamp()) == ["late"]
    assert logs("--since", "1h") == ["early", "late"]
    assert logs("--since", "10m30s") == ["early", "late"]
    assert logs("--since", "1ms") == []  # nothing in the last millisecond
    assert logs("--tail", "1") == ["late"]
    assert logs("--tail", "0") == []
    assert logs("--tail", "1", "--since", "1h") == ["late"]
    assert logs("--tail", "2", "--since", "%.6f" % between.timestamp()) == ["late"]
    # stderr lines go to stderr, filtered the same way.
    r = ctl(daemon, "logs", "--since", "1h", ctr)
    assert r.stderr == "err\n"
    r = ctl(daemon, "logs", "--since", "%.6f" % between.timestamp(), ctr)
    assert r.stderr == ""
    for args, needle in ((("--since", "yesterday"), "invalid --since 'yesterday'"),
                         (("--since", "-5m"), "invalid --since '-5m'"),
                         (("--since", "2024-13-01T00:00:00Z"), "invalid --since"),
                         (("--tail", "-2"), "invalid --tail '-2'"),
                         (("--tail",), "option '--tail' needs an argument")):
        r = ctl(daemon, "logs", ctr, *args)
        assert r.returncode == EX_USAGE and needle in r.stderr, (args, r.stderr)
    ok(daemon, "stop", "-t", "0", ctr)


def test_logs_follow_with_tail(daemon, image, work, pod):
    ctr = container(daemon, image, work, pod, "tail",
                    ["sh", "-c", "for i in 1 2 3 4 5; do echo n$i; done; sleep 3; echo more"])
    P.wait_for(lambda: "n5" in ok(daemon, "logs", ctr), "the first lines")
    f = spawn(daemon, "logs", "-f", "--tail", "2", ctr)
    out, err = finish(f)
    assert f.returncode == 0, err
    # --tail applies to what is there when the log is first read.
    assert out.splitlines() == ["n4", "n5", "more"], (out, err)


def test_logs_follow_a_created_container(daemon, image, work, pod):
    """-f on a container not started yet waits for it to run, then ends with it."""
    ctr = container(daemon, image, work, pod, "later",
                    ["sh", "-c", "echo hi; sleep 1; echo bye"], start=False)
    f = spawn(daemon, "logs", "-f", ctr)
    try:
        time.sleep(1.5)
        assert f.poll() is None, f.communicate()
        ok(daemon, "start", ctr)
    finally:
        out, err = finish(f)
    assert f.returncode == 0, err
    assert out == "hi\nbye\n", (out, err)


def test_logs_follow_waits_for_a_missing_log(daemon, image, work, pod, pb):
    ctr = container(daemon, image, work, pod, "gone",
                    ["sh", "-c", "echo before; sleep 6; echo after; sleep 1"])
    log = Path(json.loads(ok(daemon, "inspect", ctr))["status"]["logPath"])
    P.wait_for(lambda: log.exists() and "before" in log.read_text(), "the first line")
    log.rename(str(log) + ".old")
    f = spawn(daemon, "logs", "-f", ctr)
    try:
        time.sleep(1.5)
        assert f.poll() is None, f.communicate()  # waiting, not failing
        r = ctl(daemon, "logs", ctr)  # without -f: a clear error
        assert r.returncode == EX_NOINPUT and str(log) in r.stderr, r.stderr
        with daemon.unix_channel() as ch:
            pb.api_grpc.RuntimeServiceStub(ch).ReopenContainerLog(
                pb.api.ReopenContainerLogRequest(container_id=ctr), timeout=30)
    finally:
        out, err = finish(f, timeout=40)
    assert f.returncode == 0, err
    assert out == "after\n", (out, err)  # and it ended when the container did

    # The log gone for good and the container exited: -f says so.
    log.unlink()
    r = ctl(daemon, "logs", "-f", ctr)
    assert r.returncode == EX_NOINPUT, r.stderr
    assert "%s: no such file: container %s exited without a log" % (log, ctr) in r.stderr


def test_usage_errors_without_agentd(work):
    """Bad options and files are refused before agentd is asked."""
    def run(*args):
        r = subprocess.run([H.agentctl_binary(), "-e", "unix://%s/none.sock" % work] +
                           [str(a) for a in args], capture_output=True, text=True, timeout=30)
        for m in ("runtime error:", "LeakSanitizer", "AddressSanitizer"):
            assert m not in r.stderr, r.stderr
        return r
    for args in (("pods", "-o", "xml"), ("ps", "--latest", "--last"), ("images", "-f"),
                 ("logs", "--since", "soon", "c"), ("inspecti", "-o", "table", "i"),
                 ("runp",), ("run", "only-one.yaml"), ("create", "pod", "c.yaml")):
        r = run(*args)
        assert r.returncode == EX_USAGE, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("agentctl: ") and "usage: agentctl" in r.stderr, r.stderr
    bad = write(work / "unreachable.yaml", "metadata: [\n")
    r = run("runp", bad)
    assert r.returncode == EX_DATAERR and "%s:2:1: invalid YAML" % bad in r.stderr, r.stderr
    r = run("runp", work / "absent.yaml")
    assert r.returncode == EX_NOINPUT and "absent.yaml" in r.stderr
