"""agentd's /metrics, /healthz and /readyz against a running pod: the
families cAdvisor exposes (names, types, labels container/pod/namespace/
image/id) with values checked against the container's cgroup files, the
pod's network counters moving with traffic, agentd's own RPC metrics, and
a real Prometheus (Debian's package, on loopback with a free port and a
private data dir) scraping agentd and answering PromQL queries for the
container's working set and the pod's received bytes. Everything created
(pods, bridge, Prometheus and its data) is removed; processes are stopped
by PID."""
import contextlib
import json
import os
import ssl
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import agentd_harness as H  # noqa: E402
import pods_harness as P  # noqa: E402
from pods_harness import ok  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

N = os.getpid() % 250
BRIDGE = "adx%d" % (os.getpid() % 1000)
SUBNET = "10.238.%d.0/24" % N
IMAGE_PATH = "test/metrics:v1"

registry, daemon, image = P.busybox_pod_fixtures("metrics", BRIDGE, SUBNET, IMAGE_PATH)

LABELS = {"container", "pod", "namespace", "image", "id"}
# cAdvisor's families as the issue lists them: name -> type.
CADVISOR = {
    "container_cpu_usage_seconds_total": "counter",
    "container_cpu_user_seconds_total": "counter",
    "container_cpu_system_seconds_total": "counter",
    "container_cpu_cfs_periods_total": "counter",
    "container_cpu_cfs_throttled_periods_total": "counter",
    "container_cpu_cfs_throttled_seconds_total": "counter",
    "container_memory_usage_bytes": "gauge",
    "container_memory_working_set_bytes": "gauge",
    "container_memory_rss": "gauge",
    "container_memory_cache": "gauge",
    "container_memory_failcnt": "counter",
    "container_oom_events_total": "counter",
    "container_spec_memory_limit_bytes": "gauge",
    "container_spec_cpu_shares": "gauge",
    "container_spec_cpu_quota": "gauge",
    "container_processes": "gauge",
    "container_threads": "gauge",
    "container_start_time_seconds": "gauge",
    "container_last_seen": "gauge",
}
NETWORK = {
    "container_network_receive_bytes_total": "counter",
    "container_network_receive_packets_total": "counter",
    "container_network_receive_errors_total": "counter",
    "container_network_transmit_bytes_total": "counter",
    "container_network_transmit_packets_total": "counter",
    "container_network_transmit_errors_total": "counter",
}
MACHINE = {"machine_cpu_cores": "gauge", "machine_memory_bytes": "gauge"}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text format -> ({family: type}, [(name, labels, value)]);
    asserts the structure (TYPE before samples, one TYPE per family)."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in types, "TYPE twice: " + name
            types[name] = typ
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            assert m, "bad sample line %r" % line
            labels = dict(LABEL.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def scrape(daemon):
    status, ctype, body = get(daemon.metrics_url() + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), ctype
    return parse(body)


def series(samples, name, **want):
    return [(lb, v) for n, lb, v in samples
            if n == name and all(lb.get(k) == v for k, v in want.items())]


def cgroup_file(ctr, controller, name):
    dirs = list(P.cgroup_dirs(controller, ctr))
    assert len(dirs) == 1, (controller, dirs)
    return Path(dirs[0], name).read_text()


@pytest.fixture(scope="module")
def running(daemon, image, work):
    """A pod with a container that holds ~16 MB and has CPU limits set."""
    pod_cfg = work / "pod.json"
    pod_cfg.write_text(json.dumps({
        "metadata": {"name": "metrics-pod", "namespace": "metrics-ns", "uid": "uid-metrics"},
        "log_directory": str(work / "logs"),
    }))
    ctr_cfg = work / "ctr.json"
    ctr_cfg.write_text(json.dumps({
        "metadata": {"name": "hog"},
        "image": {"image": image},
        # tmpfs pages are swap-backed: charged, and in the working set.
        "command": ["sh", "-c", "head -c 16000000 /dev/zero >/dev/shm/hold; sleep 3600"],
        "log_path": "hog.log",
        "linux": {"resources": {"memory_limit_in_bytes": 256 << 20, "cpu_shares": 512,
                                "cpu_quota": 50000, "cpu_period": 100000}},
    }))
    with P.running_pod(daemon, pod_cfg) as pod:
        ctr = P.created_container(daemon, pod, ctr_cfg)
        with daemon.unix_channel() as ch:
            pb = H.load_stubs()
            st = pb.api_grpc.RuntimeServiceStub(ch).PodSandboxStatus(
                pb.api.PodSandboxStatusRequest(pod_sandbox_id=pod[0]), timeout=30)
        ip = st.status.network.ip
        # Traffic to the pod: its eth0 receives these SYNs (and answers
        # each with a RST: nothing listens on the port).
        for _ in range(5):
            try:
                socket.create_connection((ip, 9), timeout=2).close()
            except OSError:
                pass
        # /dev/shm/hold is written once usage is past its size.
        deadline = time.monotonic() + 30
        while int(cgroup_file(ctr, "memory", "memory.usage_in_bytes")) < 16000000:
            assert time.monotonic() < deadline, "the container never grew"
            time.sleep(0.2)
        yield pod[0], ctr, ip


def test_health_and_ready(daemon):
    url = daemon.metrics_url()
    assert url and url.startswith("http://127.0.0.1:"), daemon.stderr_text()
    assert get(url + "/healthz")[2] == "ok\n"
    assert get(url + "/readyz")[2] == "ok\n"
    with pytest.raises(urllib.error.HTTPError) as e:
        get(url + "/nothing")
    assert e.value.code == 404


def test_cadvisor_names_types_labels_values(daemon, running):
    pod_id, ctr, _ = running
    types, samples = scrape(daemon)
    for name, typ in {**CADVISOR, **NETWORK, **MACHINE}.items():
        assert types.get(name) == typ, (name, types.get(name))
    for name in CADVISOR:
        got = series(samples, name, id=ctr)
        assert len(got) == 1, (name, got)
        labels, _ = got[0]
        assert set(labels) == LABELS, (name, labels)
        assert labels == {"container": "hog", "pod": "metrics-pod",
                          "namespace": "metrics-ns", "image": labels["image"], "id": ctr}
        assert labels["image"].endswith(IMAGE_PATH)

    def value(name):
        return series(samples, name, id=ctr)[0][1]

    # Against the cgroup (v1 here; the v2 files are covered by the unit tests).
    usage = int(cgroup_file(ctr, "memory", "memory.usage_in_bytes"))
    assert abs(value("container_memory_usage_bytes") - usage) < 4 << 20
    stat = dict(line.split() for line in cgroup_file(ctr, "memory", "memory.stat").splitlines())
    ws = usage - int(stat["total_inactive_file"])
    assert abs(value("container_memory_working_set_bytes") - ws) < 4 << 20
    assert value("container_memory_working_set_bytes") >= 16000000
    assert abs(value("container_memory_rss") - int(stat["total_rss"])) < 4 << 20
    assert value("container_spec_memory_limit_bytes") == 256 << 20 == int(
        cgroup_file(ctr, "memory", "memory.limit_in_bytes"))
    assert value("container_spec_cpu_shares") == 512 == int(
        cgroup_file(ctr, "cpu", "cpu.shares"))
    assert value("container_spec_cpu_quota") == 50000 == int(
        cgroup_file(ctr, "cpu", "cpu.cfs_quota_us"))
    cpustat = dict(line.split() for line in cgroup_file(ctr, "cpu", "cpu.stat").splitlines())
    assert value("container_cpu_cfs_periods_total") <= int(cpustat["nr_periods"])
    assert value("container_cpu_cfs_periods_total") > 0  # a quota is set and it ran
    procs = [p for p in cgroup_file(ctr, "pids", "cgroup.procs").split()]
    assert value("container_processes") == len(procs) >= 1
    assert value("container_threads") == int(cgroup_file(ctr, "pids", "pids.current"))
    cpu_s = int(cgroup_file(ctr, "cpuacct", "cpuacct.usage")) / 1e9
    assert 0 < value("container_cpu_usage_seconds_total") <= cpu_s
    assert value("container_oom_events_total") == 0
    assert value("container_memory_failcnt") == int(
        cgroup_file(ctr, "memory", "memory.failcnt"))
    now = time.time()
    assert now - 600 < value("container_start_time_seconds") <= now
    assert now - 60 < value("container_last_seen") <= now + 1

    net = series(samples, "container_network_receive_bytes_total", id=pod_id)
    assert [lb["interface"] for lb, _ in net] == ["eth0"], net
    assert net[0][0]["pod"] == "metrics-pod" and net[0][0]["namespace"] == "metrics-ns"
    assert net[0][1] >= 5 * 54  # the five SYNs at least
    assert series(samples, "container_network_receive_packets_total", id=pod_id)[0][1] >= 5
    assert series(samples, "machine_cpu_cores")[0][1] == os.cpu_count()

    # agentd's own: the CRI calls the fixture made, by method and code.
    assert series(samples, "agentd_containers", state="running")[0][1] >= 1
    assert series(samples, "agentd_pods", state="ready")[0][1] >= 1
    calls = series(samples, "agentd_grpc_requests_total",
                   method="/runtime.v1.RuntimeService/RunPodSandbox", code="OK")
    assert calls and calls[0][1] >= 1, calls
    assert series(samples, "agentd_grpc_request_duration_seconds_count",
                  method="/runtime.v1.RuntimeService/RunPodSandbox", code="OK")
    assert series(samples, "agentd_image_store_blobs")[0][1] >= 2  # config + layer
    assert series(samples, "process_resident_memory_bytes")[0][1] > 1 << 20


def test_openmetrics_on_request(daemon, running):
    status, ctype, body = get(daemon.metrics_url() + "/metrics",
                              accept="application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text; version=1.0.0"), ctype
    assert body.endswith("# EOF\n")
    assert "\n# TYPE container_cpu_usage_seconds counter\n" in body
    assert "\ncontainer_cpu_usage_seconds_total{" in body


@contextlib.contextmanager
def run_prometheus(d, target, scheme="http", ca_file=None):
    """Debian's Prometheus scraping target every second, on a free port with
    its data in d; yields its base URL."""
    exe = shutil.which("prometheus")
    if not exe:
        pytest.skip("prometheus (Debian package) not installed")
    d.mkdir(exist_ok=True)
    tls = ("    scheme: https\n    tls_config:\n      ca_file: %s\n" % ca_file
           if scheme == "https" else "")
    (d / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: agentd\n%s    static_configs:\n"
        "      - targets: ['%s']\n" % (tls, target))
    port = H.free_port()
    log = open(d / "prometheus.log", "wb")
    p = subprocess.Popen([exe, "--config.file", str(d / "prometheus.yml"),
                          "--storage.tsdb.path", str(d / "data"),
                          "--web.listen-address", "127.0.0.1:%d" % port,
                          "--web.enable-lifecycle"],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        yield "http://127.0.0.1:%d" % port
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def prometheus(daemon, work):
    d = work / "prometheus"
    with run_prometheus(d, daemon.metrics_url().split("://", 1)[1]) as base:
        yield base, d


def promql(base, query):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_agentd(daemon, running, prometheus):
    pod_id, ctr, _ = running
    base, d = prometheus
    deadline = time.monotonic() + 90
    ws = net = up = None
    while time.monotonic() < deadline:
        try:
            up = promql(base, 'up{job="agentd"}')
            ws = promql(base, 'container_memory_working_set_bytes{id="%s"}' % ctr)
            net = promql(base, 'container_network_receive_bytes_total{pod="metrics-pod",'
                               'interface="eth0"}')
        except OSError:
            pass  # not listening yet
        # The three queries are not one snapshot: a scrape can land between
        # them, so wait until all three see it.
        if up and ws and net:
            break
        time.sleep(1)
    assert up and up[0]["value"][1] == "1", (up, (d / "prometheus.log").read_text()[-3000:])
    assert ws, (d / "prometheus.log").read_text()[-3000:]
    assert ws[0]["metric"]["container"] == "hog"
    assert ws[0]["metric"]["namespace"] == "metrics-ns"
    assert float(ws[0]["value"][1]) >= 16000000
    assert net and float(net[0]["value"][1]) > 0, net
    # Prometheus asks for OpenMetrics first: the scrape used that format.
    targets = json.loads(urllib.request.urlopen(base + "/api/v1/targets", timeout=10).read())
    active = targets["data"]["activeTargets"]
    assert active and active[0]["health"] == "up", active


def test_cri_metrics_carry_the_same_families(daemon, running):
    """ListMetricDescriptors / ListPodSandboxMetrics: the families and
    values of /metrics, as the CRI carries them (whole units)."""
    pod_id, ctr, _ = running
    pb = H.load_stubs()
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        descs = rt.ListMetricDescriptors(pb.api.ListMetricDescriptorsRequest(),
                                         timeout=30).descriptors
        pods = rt.ListPodSandboxMetrics(pb.api.ListPodSandboxMetricsRequest(),
                                        timeout=30).pod_metrics
    types, samples = scrape(daemon)
    by_name = {d.name: d for d in descs}
    for name in list(CADVISOR) + list(NETWORK):
        assert name in by_name, name
        assert list(by_name[name].label_keys)[:5] == ["container", "pod", "namespace",
                                                       "image", "id"]
        assert by_name[name].help
    assert list(by_name["container_network_receive_bytes_total"].label_keys)[5] == "interface"

    pm = [p for p in pods if p.pod_sandbox_id == pod_id]
    assert len(pm) == 1, pods
    cms = [c for c in pm[0].container_metrics if c.container_id == ctr]
    assert len(cms) == 1
    got = {m.name: m for m in cms[0].metrics}
    ws = got["container_memory_working_set_bytes"]
    assert ws.metric_type == pb.api.GAUGE
    assert list(ws.label_values) == ["hog", "metrics-pod", "metrics-ns",
                                     ws.label_values[3], ctr]
    scraped = series(samples, "container_memory_working_set_bytes", id=ctr)[0][1]
    assert abs(ws.value.value - scraped) < 4 << 20, (ws.value.value, scraped)
    assert got["container_spec_cpu_shares"].value.value == 512
    assert got["container_cpu_usage_seconds_total"].metric_type == pb.api.COUNTER
    net = [m for m in pm[0].metrics if m.name == "container_network_receive_bytes_total"]
    assert len(net) == 1 and net[0].label_values[5] == "eth0" and net[0].value.value > 0


def test_container_has_its_own_nofile_limit(daemon, running):
    """agentd's unit raises its own RLIMIT_NOFILE; a container gets soft
    1024 and hard 524288 (or agentd's hard limit if lower), not agentd's."""
    _, ctr, _ = running
    pid = int(cgroup_file(ctr, "pids", "cgroup.procs").split()[0])
    line = [x for x in Path("/proc/%d/limits" % pid).read_text().splitlines()
            if x.startswith("Max open files")][0]
    soft, hard = line.split()[3:5]
    agentd_hard = [x for x in Path("/proc/%d/limits" % daemon.pid).read_text().splitlines()
                   if x.startswith("Max open files")][0].split()[4]
    assert soft == "1024", line
    assert int(hard) == min(524288, int(agentd_hard)), (line, agentd_hard)


def counter(samples, name, **want):
    found = series(samples, name, **want)
    assert len(found) == 1, (name, want, found)
    return found[0][1]


def test_pull_exit_and_shim_death_counters(daemon, running, image, work):
    """agentd's event counters move with the events: the module's one pull
    downloaded exactly its layers' bytes; a container that exits 0 counts
    as Completed, a kill -9 of a container's agentd-shim as a shim death and
    a ShimDied exit, and one of a pod infra process's shim as a shim death."""
    _, samples = scrape(daemon)
    assert counter(samples, "agentd_image_pulls_total", result="ok") >= 1
    layers = 0
    for blob in Path(daemon.root, "blobs", "sha256").iterdir():
        try:
            doc = json.loads(blob.read_bytes())
        except ValueError:
            continue
        if isinstance(doc, dict) and "layers" in doc:
            layers += sum(layer["size"] for layer in doc["layers"])
    assert layers > 0
    assert counter(samples, "agentd_image_pull_bytes_total") == layers
    # The pull's duration, as a histogram: its count is the pulls, its
    # buckets cumulative up to +Inf.
    pulls = counter(samples, "agentd_image_pulls_total", result="ok")
    assert counter(samples, "agentd_image_pull_duration_seconds_sum") > 0
    assert counter(samples, "agentd_image_pull_duration_seconds_count") == pulls
    buckets = sorted(((float(lb["le"]), v) for lb, v in
                      series(samples, "agentd_image_pull_duration_seconds_bucket")))
    assert len(buckets) == 12 and buckets[-1] == (float("inf"), pulls), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets

    before = {r: counter(samples, "agentd_container_exits_total", reason=r)
              for r in ("Completed", "ShimDied", "Error")}
    deaths = counter(samples, "agentd_shim_deaths_total")
    pod = (running[0], work / "pod.json")
    done_cfg, victim_cfg = work / "done.json", work / "victim.json"
    for path, name, cmd in ((done_cfg, "done", ["true"]),
                            (victim_cfg, "victim", ["sleep", "3600"])):
        path.write_text(json.dumps({"metadata": {"name": name}, "image": {"image": image},
                                    "command": cmd, "log_path": name + ".log"}))
    done = P.created_container(daemon, pod, done_cfg)
    victim = P.created_container(daemon, pod, victim_cfg)
    with daemon.unix_channel() as ch:
        rt = H.load_stubs().api_grpc.RuntimeServiceStub(ch)
        pb = H.load_stubs()
        info = json.loads(rt.ContainerStatus(pb.api.ContainerStatusRequest(
            container_id=victim, verbose=True), timeout=30).info["info"])
    init = info["pid"]
    shim = P.shim_of(init)
    os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        _, samples = scrape(daemon)
        now = {r: counter(samples, "agentd_container_exits_total", reason=r) for r in before}
        if (now["Completed"], now["ShimDied"]) == (before["Completed"] + 1,
                                                   before["ShimDied"] + 1):
            break
        assert time.monotonic() < deadline, (before, now)
        time.sleep(0.2)
    assert now["Error"] == before["Error"]
    assert counter(samples, "agentd_shim_deaths_total") == deaths + 1
    assert counter(samples, "agentd_containers_exited", reason="ShimDied") >= 1
    for c in (done, victim):
        ok(daemon, "rm", c)

    # A pod infra process's shim counts too: the pod goes not ready.
    infra_cfg = work / "infra-pod.json"
    infra_cfg.write_text(json.dumps({"metadata": {"name": "shimless", "namespace": "metrics-ns",
                                                  "uid": "uid-shimless"}}))
    with P.running_pod(daemon, infra_cfg) as (pod_id, _):
        with daemon.unix_channel() as ch:
            rt = pb.api_grpc.RuntimeServiceStub(ch)
            status = json.loads(rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                pod_sandbox_id=pod_id, verbose=True), timeout=30).info["info"])
            infra = status["pid"]
            shim = P.shim_of(infra)
            os.kill(shim, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while rt.PodSandboxStatus(pb.api.PodSandboxStatusRequest(
                    pod_sandbox_id=pod_id), timeout=30).status.state != pb.api.SANDBOX_NOTREADY:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        # The infra process went with its shim: it runs on nowhere, not even
        # as a zombie.
        while os.path.exists("/proc/%d" % infra):
            assert time.monotonic() < deadline, Path("/proc/%d/status" % infra).read_text()
            time.sleep(0.1)
        _, samples = scrape(daemon)
        assert counter(samples, "agentd_shim_deaths_total") == deaths + 2


def test_metrics_over_https(certs, tmp_path):
    """[metrics] tls_cert/tls_key: the endpoint speaks HTTPS with agentd's
    certificate (verified against its CA), plain HTTP gets no answer, and
    Prometheus scrapes it with scheme https and the CA."""
    conf = tmp_path / "agentd.conf"
    conf.write_text("[metrics]\ntls_cert = %s\ntls_key = %s\n"
                    % (certs.server_cert, certs.server_key))
    a = H.Agentd(workdir=str(tmp_path / "a"), extra_args=["--config", str(conf)])
    a.start()
    try:
        url = a.metrics_url()
        assert url.startswith("https://127.0.0.1:"), url
        ctx = ssl.create_default_context(cafile=certs.ca)
        for path, want in (("/metrics", "# TYPE process_cpu_seconds_total counter"),
                           ("/healthz", "ok"), ("/readyz", "ok")):
            with urllib.request.urlopen(url + path, timeout=10, context=ctx) as r:
                assert r.status == 200 and want in r.read().decode(), path
        with pytest.raises((OSError, urllib.error.URLError)):
            urllib.request.urlopen("http" + url[5:] + "/metrics", timeout=5).read()
        # A client that does not trust agentd's CA is turned away by itself.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url + "/metrics", timeout=5,
                                   context=ssl.create_default_context()).read()
        with run_prometheus(tmp_path / "prometheus", url.split("://", 1)[1], "https",
                            certs.ca) as base:
            deadline = time.monotonic() + 60
            while True:
                try:
                    up = promql(base, 'up{job="agentd"}')
                    cpu = promql(base, "process_cpu_seconds_total")
                except OSError:
                    up = cpu = None
                if up and up[0]["value"][1] == "1" and cpu:
                    break
                assert time.monotonic() < deadline, (up, cpu)
                time.sleep(1)
        a.stop()
    finally:
        a.kill()
