"""agentctl build and commit against a real agentd (agent.v1.BuildService):
images built offline from the busybox base of the loopback registry, RUN under
agentd's own runtime, the results run as containers; the layer cache, a
multi-stage and a from-scratch build, reproducible layers, commit of a
changed container (a deleted file becomes a whiteout), and the bad inputs,
each with its message and nothing left behind."""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pods_harness as P  # noqa: E402
from pods_harness import ctl, ok  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers as root")

N = (os.getpid() + 77) % 250
BRIDGE = "adb%d" % (os.getpid() % 1000)
SUBNET = "10.234.%d.0/24" % N
IMAGE_PATH = "test/buildbase:v1"
BUSYBOX_STATIC = "/bin/busybox"

registry, daemon, image = P.busybox_pod_fixtures("build-test", BRIDGE, SUBNET, IMAGE_PATH)


def context(root, files):
    """A build context dir from {relative path: text or bytes}."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        p.write_bytes(data)
    return root


def build(daemon, ctx, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([P.H.agentctl_binary(), "-e", "unix://" + daemon.sock, "build"] +
                       [str(a) for a in args] + [str(ctx)], capture_output=True, text=True,
                       timeout=300, env=e)
    for m in ("runtime error:", "LeakSanitizer", "AddressSanitizer"):
        assert m not in r.stderr, r.stderr
    return r


def built(daemon, ctx, *args, env=None):
    r = build(daemon, ctx, *args, env=env)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:"), r.stdout
    return image_id, r.stderr


def image_config(daemon, ref):
    info = json.loads(ok(daemon, "inspecti", "-o", "json", ref))
    spec = info["info"]["imageSpec"]
    return json.loads(spec) if isinstance(spec, str) else spec


def run_image(daemon, work, ref, name, command=None):
    """Runs `ref` as a container in a pod of its own; returns its log once it exited."""
    pod_cfg = work / ("pod-%s.json" % name)
    pod_cfg.write_text(json.dumps({
        "metadata": {"name": name, "namespace": "buildtest", "uid": "uid-" + name},
        "log_directory": str(work / "logs" / name)}))
    ctr = {"metadata": {"name": name}, "image": {"image": ref}, "log_path": name + ".log"}
    if command:
        ctr["command"] = command
    ctr_cfg = work / ("ctr-%s.json" % name)
    ctr_cfg.write_text(json.dumps(ctr))
    with P.running_pod(daemon, pod_cfg) as pod:
        cid = P.created_container(daemon, pod, ctr_cfg)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = json.loads(ok(daemon, "inspect", cid))["status"]
            if st["state"] == "CONTAINER_EXITED":
                break
            time.sleep(0.1)
        assert st["state"] == "CONTAINER_EXITED", st
        return ok(daemon, "logs", cid), st.get("exitCode", 0)


def leftovers(daemon):
    """What a build may leave behind: work dirs, build containers' rootfs and state."""
    root = Path(daemon.workdir) / "root"
    state = Path(daemon.workdir) / "state"
    out = [p.name for p in (root / "builds").iterdir()] if (root / "builds").exists() else []
    out += [p.name for p in (root / "containers").iterdir() if p.name.startswith("build-")] \
        if (root / "containers").exists() else []
    out += [p.name for p in (state / "build").iterdir()] if (state / "build").exists() else []
    mounts = Path("/proc/self/mountinfo").read_text()
    out += [line for line in mounts.splitlines() if "/containers/build-" in line and
            str(root) in line]
    return out


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_build_and_run(daemon, image, work):
    ctx = context(work / "ctx1", {
        "Dockerfile": """# syntax=docker/dockerfile:1
FROM %s
# a comment
ENV GREETING=hello \\
    TARGET="the world"
ARG NUM=3
RUN echo "$GREETING $NUM" > /built.txt && \\
    rm /bin/ls
COPY data.txt /opt/data/
COPY dir/ /opt/dir/
ADD files.tar.gz /opt/unpacked/
WORKDIR /opt
LABEL org.example.who="agentd build" version=1
EXPOSE 8080 53/udp
USER 0:0
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c", "cat /built.txt /opt/data/data.txt /opt/unpacked/inner.txt /opt/dir/sub/deep.txt; echo $GREETING $TARGET; pwd; ls /opt/secret.txt 2>&1 || echo nosecret; test -e /bin/ls || echo nols"]
""" % image,
        "data.txt": "data file\n",
        "secret.txt": "do not send\n",
        "dir/sub/deep.txt": "deep\n",
        ".dockerignore": "secret.txt\n",
        "files.tar.gz": tar_gz({"inner.txt": b"from the tar\n"}),
    })
    t0 = time.monotonic()
    image_id, progress = built(daemon, ctx, "-t", "localhost/built:v1", "--build-arg", "NUM=7")
    cold = time.monotonic() - t0
    assert "STEP 1/" in progress and "RUN echo" in progress
    cfg = json.loads(ok(daemon, "inspecti", "-o", "json", "localhost/built:v1"))
    assert cfg["status"]["id"] == image_id
    spec = json.loads(cfg["info"]["info"]) if "info" in cfg.get("info", {}) else cfg
    text = json.dumps(spec)
    assert "org.example.who" in text and "8080/tcp" in text and "53/udp" in text
    log, code = run_image(daemon, work, "localhost/built:v1", "built")
    assert code == 0, log
    assert log.splitlines() == ["hello 7", "data file", "from the tar", "deep",
                                "hello the world", "/opt", "ls: /opt/secret.txt: No such file or directory",
                                "nosecret", "nols"], log
    # Unchanged: every step from the cache, well under a second.
    t0 = time.monotonic()
    again, progress = built(daemon, ctx, "-t", "localhost/built:v1", "--build-arg", "NUM=7")
    cached = time.monotonic() - t0
    assert again == image_id
    assert progress.count("Using cache") >= 4, progress
    print("cold build %.3f s, cached rebuild %.3f s" % (cold, cached))
    assert cached < 1.0, cached
    # Another build arg is another RUN.
    other, progress = built(daemon, ctx, "--build-arg", "NUM=8")
    assert other != image_id and "Using cache" not in progress.split("STEP 5/")[1]
    assert leftovers(daemon) == []


def test_multi_stage(daemon, image, work):
    ctx = context(work / "ctx2", {
        "Dockerfile": """ARG BASE=%s
FROM $BASE AS builder
RUN mkdir -p /out && echo compiled > /out/artifact && echo junk > /junk
FROM ${BASE}
COPY --from=builder /out/artifact /app/artifact
CMD ["cat", "/app/artifact"]
""" % image})
    image_id, _ = built(daemon, ctx, "-t", "localhost/multi:v1")
    log, code = run_image(daemon, work, "localhost/multi:v1", "multi")
    assert (log, code) == ("compiled\n", 0)
    log, _ = run_image(daemon, work, "localhost/multi:v1", "multi2",
                       ["sh", "-c", "test -e /junk && echo junk || echo clean"])
    assert log == "clean\n"
    # --target: only the first stage.
    first, _ = built(daemon, ctx, "--target", "builder", "-t", "localhost/multi:builder")
    assert first != image_id
    log, _ = run_image(daemon, work, "localhost/multi:builder", "multi3", ["cat", "/junk"])
    assert log == "junk\n"


def test_from_scratch_static_binary(daemon, work):
    ctx = context(work / "ctx3", {"Dockerfile": """FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "echo", "static and alone"]
"""})
    (ctx / "busybox").write_bytes(Path(BUSYBOX_STATIC).read_bytes())
    os.chmod(ctx / "busybox", 0o755)
    built(daemon, ctx, "-t", "localhost/scratch:v1")
    log, code = run_image(daemon, work, "localhost/scratch:v1", "scratch")
    assert (log, code) == ("static and alone\n", 0)
    log, _ = run_image(daemon, work, "localhost/scratch:v1", "scratch2",
                       ["/bin/busybox", "ls", "/"])
    assert "busybox" not in log and "bin" in log.split()


def layer_digests(daemon, ref):
    root = Path(daemon.workdir) / "root" / "blobs" / "sha256"
    image_id = json.loads(ok(daemon, "inspecti", "-o", "json", ref))["status"]["id"]
    config = json.loads((root / image_id[7:]).read_text())
    return config["rootfs"]["diff_ids"]


def test_reproducible_layers(daemon, image, work):
    ctx = context(work / "ctx4", {
        "Dockerfile": """FROM %s
RUN mkdir /made && echo same > /made/file && rm /bin/cat
COPY a.txt /a.txt
""" % image, "a.txt": "A\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first, _ = built(daemon, ctx, "--no-cache", "-t", "localhost/repro:1", env=env)
    time.sleep(1.1)  # a later second: only the clamp keeps the times equal
    second, _ = built(daemon, ctx, "--no-cache", "-t", "localhost/repro:2", env=env)
    assert layer_digests(daemon, "localhost/repro:1") == layer_digests(daemon, "localhost/repro:2")
    assert first == second  # config created at SOURCE_DATE_EPOCH too


def test_commit_changed_container(daemon, image, work):
    pod_cfg = work / "pod-commit.json"
    pod_cfg.write_text(json.dumps({
        "metadata": {"name": "commit", "namespace": "buildtest", "uid": "uid-commit"},
        "log_directory": str(work / "logs" / "commit")}))
    ctr_cfg = work / "ctr-commit.json"
    ctr_cfg.write_text(json.dumps({
        "metadata": {"name": "changer"}, "image": {"image": image},
        "command": ["sh", "-c", "echo added > /added.txt && rm /gone && rm -r /data && "
                    "mkdir /data && echo new > /data/new && mkdir -p /etc/x && sleep 300"],
        "log_path": "changer.log"}))
    with P.running_pod(daemon, pod_cfg) as pod:
        cid = P.created_container(daemon, pod, ctr_cfg)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "/etc/x" not in ok(
                daemon, "exec", cid, "sh", "-c", "test -d /etc/x && echo /etc/x || true"):
            time.sleep(0.1)
        image_id = ok(daemon, "commit", "-m", "changed", cid[:12], "localhost/committed:v1").strip()
        assert image_id.startswith("sha256:")
    # The new layer: the added file, /gone as a whiteout, /data opaque.
    root = Path(daemon.workdir) / "root" / "blobs" / "sha256"
    manifest_names = []
    for blob in root.iterdir():
        try:
            m = json.loads(blob.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(m, dict) and m.get("config", {}).get("digest") == image_id:
            manifest_names.append(m)
    assert manifest_names, "no manifest for the committed image"
    top = manifest_names[0]["layers"][-1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress((root / top["digest"][7:]).read_bytes()))) as t:
        names = t.getnames()
    for want in ("added.txt", ".wh.gone", "data/.wh..wh..opq", "data/new", "etc/x"):
        assert want in names, (want, names)
    log, code = run_image(daemon, work, "localhost/committed:v1", "fromcommit",
                          ["sh", "-c", "cat /added.txt; test -e /gone || echo nogone; ls /data"])
    assert (log, code) == ("added\nnogone\nnew\n", 0)
    r = ctl(daemon, "commit", "nosuchcontainer", "localhost/x:y")
    assert r.returncode != 0 and "nosuchcontainer" in r.stderr


@pytest.mark.parametrize("dockerfile,files,message", [
    ("FROM {image}\nRUN echo hi\nFROOM x\n", {}, "Dockerfile:3: unknown instruction: FROOM"),
    ("FROM {image}\nCOPY --link a /a\n", {"a": "x"}, "Dockerfile:2: COPY: unsupported flag --link"),
    ("FROM {image}\nONBUILD RUN true\n", {}, "Dockerfile:2: ONBUILD is not supported"),
    ("FROM {image}\nCOPY missing.txt /m\n", {}, "Dockerfile:2: COPY: missing.txt: no such file"),
    ("FROM {image}\nCOPY ../outside /o\n", {}, "outside the build context"),
    ("FROM {image}\nCOPY link/passwd /p\n", {}, "points outside the build context"),
    ("FROM {image}\nENV A=1\nRUN echo failing-output; exit 3\n", {},
     "Dockerfile:3: RUN echo failing-output; exit 3: exited with code 3; its output ended with:\nfailing-output"),
    ("FROM {image}\nCOPY a ${{A:?must be set}}\n", {"a": "x"}, "Dockerfile:2: COPY: A: must be set"),
])
def test_bad_input(daemon, image, work, dockerfile, files, message):
    ctx = context(work / ("bad%d" % abs(hash(dockerfile))), dict(files, Dockerfile=dockerfile.format(image=image)))
    if "link/" in dockerfile:
        (ctx / "link").symlink_to("/etc")
    before = json.loads(ok(daemon, "images", "-o", "json")).get("images", [])
    r = build(daemon, ctx, "-t", "localhost/bad:v1")
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    after = json.loads(ok(daemon, "images", "-o", "json")).get("images", [])
    assert not any("localhost/bad:v1" in json.dumps(i) for i in after)
    assert len(after) <= len(before) + 1, (before, after)  # at most a cached step image
    assert leftovers(daemon) == []


def test_usage_errors(daemon, work):
    r = ctl(daemon, "build")
    assert r.returncode == 64 and "CONTEXT" in r.stderr
    r = ctl(daemon, "build", work / "nonexistent")
    assert r.returncode != 0 and "nonexistent" in r.stderr
    r = ctl(daemon, "commit")
    assert r.returncode == 64


def test_working_container_verbs(daemon, image, work):
    """buildah's workflow by hand: from, run, copy, config, mount, umount, commit, rm."""
    assert ok(daemon, "wc", "from", "--name", "hand", image).strip() == "hand"
    r = ctl(daemon, "wc", "from", "--name", "hand", image)
    assert r.returncode != 0 and "a working container named hand exists" in r.stderr
    out = ok(daemon, "wc", "run", "hand", "--", "sh", "-c", "echo built-by-hand > /hand.txt && rm /gone && echo ran")
    assert out == "ran\n"
    r = ctl(daemon, "wc", "run", "hand", "--", "sh", "-c", "echo oops; exit 4")
    assert r.returncode != 0 and "exited with code 4" in r.stderr and r.stdout == "oops\n"
    src = work / "wcsrc"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("A\n")
    (src / "d" / "b.txt").write_text("B\n")
    ok(daemon, "wc", "copy", "hand", src / "a.txt", "/opt/a-renamed.txt")
    ok(daemon, "wc", "copy", "--chown", "7:8", "hand", src / "d", "/opt/d/")
    ok(daemon, "wc", "config", "--entrypoint",
       '["/bin/sh", "-c", "cat /hand.txt /opt/a-renamed.txt d/b.txt; ls -n d/b.txt | '
       'while read m l u g rest; do echo $u:$g; done; echo $X"]',
       "-e", "X=from-config", "-p", "8080", "-l", "made=by-hand", "--workingdir", "/opt", "hand")
    path = ok(daemon, "wc", "mount", "hand").strip()
    assert Path(path, "hand.txt").read_text() == "built-by-hand\n"
    assert not Path(path, "gone").exists()
    ok(daemon, "wc", "umount", "hand")
    assert path not in Path("/proc/self/mountinfo").read_text()
    image_id = ok(daemon, "wc", "commit", "hand", "localhost/hand:v1").strip()
    assert image_id.startswith("sha256:")
    ok(daemon, "wc", "rm", "hand")
    r = ctl(daemon, "wc", "mount", "hand")
    assert r.returncode != 0 and "no working container named hand" in r.stderr
    log, code = run_image(daemon, work, "localhost/hand:v1", "hand")
    assert (log, code) == ("built-by-hand\nA\nB\n7:8\nfrom-config\n", 0), log
    # From scratch: a static binary and an entrypoint.
    name = ok(daemon, "wc", "from", "scratch").strip()
    assert name == "working-container"
    bb = work / "bb"
    bb.mkdir()
    (bb / "busybox").write_bytes(Path(BUSYBOX_STATIC).read_bytes())
    os.chmod(bb / "busybox", 0o755)
    ok(daemon, "wc", "copy", name, bb / "busybox", "/bin/busybox")
    ok(daemon, "wc", "config", "--entrypoint", '["/bin/busybox", "echo", "scratch by hand"]', name)
    ok(daemon, "commit", name, "localhost/hand-scratch:v1")
    ok(daemon, "wc", "rm", name)
    log, code = run_image(daemon, work, "localhost/hand-scratch:v1", "handscratch")
    assert (log, code) == ("scratch by hand\n", 0)
    root = Path(daemon.workdir) / "root"
    assert [p.name for p in (root / "containers").iterdir() if p.name.startswith("wc-")] == []
    assert list((root / "working").iterdir()) == []
    r = ctl(daemon, "wc", "frob")
    assert r.returncode == 64


def test_verbs_assemble_the_built_image(daemon, image, work):
    """The same image two ways: agentctl build of FROM + COPY + ENV + ENTRYPOINT,
    and wc from/copy/config/commit by hand, both with SOURCE_DATE_EPOCH: the
    same layers and the same config."""
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    ctx = context(work / "ctx-same", {
        "Dockerfile": "FROM %s\nCOPY hello.txt /hello.txt\nENV GREETING=hi\n"
                      'ENTRYPOINT ["/bin/sh", "-c", "cat /hello.txt; echo $GREETING"]\n' % image,
        "hello.txt": "same either way\n"})
    built_id, _ = built(daemon, ctx, "--no-cache", "-t", "localhost/same:built", env=epoch)
    ok(daemon, "wc", "from", "--name", "same", image)
    try:
        ok(daemon, "wc", "copy", "same", ctx / "hello.txt", "/hello.txt")
        ok(daemon, "wc", "config", "-e", "GREETING=hi", "--entrypoint",
           '["/bin/sh", "-c", "cat /hello.txt; echo $GREETING"]', "--cmd", "", "same")
        r = subprocess.run([P.H.agentctl_binary(), "-e", "unix://" + daemon.sock, "wc", "commit",
                            "same", "localhost/same:hand"], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, **epoch))
        assert r.returncode == 0, r.stderr
        hand_id = r.stdout.strip()
    finally:
        ok(daemon, "wc", "rm", "same")
    b = image_config(daemon, "localhost/same:built")
    h = image_config(daemon, "localhost/same:hand")
    assert b["rootfs"] == h["rootfs"]
    assert len(b["rootfs"]["diff_ids"]) == len(image_config(daemon, image)["rootfs"]["diff_ids"]) + 1
    for k in ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts", "Labels"):
        assert b["config"].get(k) == h["config"].get(k), k
    assert b["created"] == h["created"] == "2023-11-14T22:13:20.000000000Z"
    # The ids differ by the history alone: "COPY ..." and a config entry for
    # the build, "agentctl commit same" by hand.
    assert built_id != hand_id
    assert [x["created_by"] for x in b["history"][-2:]] == ["COPY hello.txt /hello.txt",
                                                            "agentd build: config"]
    assert h["history"][-1]["created_by"] == "agentctl commit same"
    assert dict(b, history=None) == dict(h, history=None)
    log, code = run_image(daemon, work, "localhost/same:hand", "samehand")
    assert (log, code) == ("same either way\nhi\n", 0)


def test_working_container_calls_serialised(daemon, image, work):
    """wc commit while a wc run on the same working container runs waits for
    it: the image holds what the run wrote last; a call on another working
    container does not wait."""
    ok(daemon, "wc", "from", "--name", "busy", image)
    ok(daemon, "wc", "from", "--name", "idle", image)
    try:
        p = P.spawn(daemon, "wc", "run", "busy", "--", "sh", "-c",
                    "echo start; sleep 2; echo written-last > /late; echo end")
        assert p.stdout.readline() == "start\n"
        t0 = time.monotonic()
        ok(daemon, "wc", "config", "-e", "OTHER=1", "idle")
        assert time.monotonic() - t0 < 1.5
        image_id = ok(daemon, "wc", "commit", "busy", "localhost/serial:v1").strip()
        waited = time.monotonic() - t0
        out, _ = P.finish(p)
        assert p.returncode == 0 and out == "end\n"
        assert image_id.startswith("sha256:") and waited > 1.0, waited
    finally:
        ok(daemon, "wc", "rm", "busy")
        ok(daemon, "wc", "rm", "idle")
    log, code = run_image(daemon, work, "localhost/serial:v1", "serial", ["cat", "/late"])
    assert (log, code) == ("written-last\n", 0)


def test_cache_entries_of_removed_images_go(daemon, image, work):
    """The layer cache's entries naming an image that was removed are removed
    by the next build, and the step is built again."""
    cache = Path(daemon.workdir) / "root" / "build-cache"
    ctx = context(work / "ctx-prune", {"Dockerfile": "FROM %s\nRUN echo pruned > /pruned\n" % image})
    image_id, _ = built(daemon, ctx, "-t", "localhost/pruned:v1")

    def entries(image_id=image_id):
        return [p.name for p in cache.iterdir() if p.read_text().strip() == image_id]
    assert len(entries()) == 1
    ok(daemon, "rmi", "localhost/pruned:v1")
    assert ctl(daemon, "inspecti", image_id).returncode != 0
    other = context(work / "ctx-prune2", {"Dockerfile": "FROM %s\nENV X=1\n" % image})
    built(daemon, other)
    assert entries() == []
    again, progress = built(daemon, ctx, "-t", "localhost/pruned:v1")
    assert "Using cache" not in progress
    assert len(entries(again)) == 1
    ok(daemon, "rmi", "localhost/pruned:v1")


def test_run_on_pod_network(daemon, image, work):
    """--network pod:POD: RUN (and wc run) join the pod's network namespace and
    reach a server another container of the pod serves; by default RUN has
    only a loopback of its own and does not; a pod that is not there, or a
    mode there is not, is refused by name."""
    pod_cfg = work / "pod-buildnet.json"
    pod_cfg.write_text(json.dumps({
        "metadata": {"name": "buildnet", "namespace": "buildtest", "uid": "uid-buildnet"},
        "log_directory": str(work / "logs" / "buildnet")}))
    web_cfg = work / "ctr-buildnet-web.json"
    web_cfg.write_text(json.dumps({
        "metadata": {"name": "web"}, "image": {"image": image}, "log_path": "web.log",
        "command": ["sh", "-c", "mkdir -p /www && echo served-in-pod > /www/index.html && "
                    "exec httpd -f -p 8099 -h /www"]}))
    fetch = "wget -q -O /fetched http://127.0.0.1:8099/ && cat /fetched"
    ctx = context(work / "ctx-podnet", {"Dockerfile": "FROM %s\nRUN %s\n" % (image, fetch)})
    with P.running_pod(daemon, pod_cfg) as pod:
        P.created_container(daemon, pod, web_cfg)
        pod_id = pod[0]
        ip = json.loads(ok(daemon, "inspectp", "-o", "json", pod_id))["status"]["network"]["ip"]
        # The server is up once it answers from the pod's own address.
        deadline = time.monotonic() + 15
        while True:
            r = build(daemon, ctx, "--no-cache", "--network", "pod:" + pod_id[:12], "-t",
                      "localhost/podnet:v1")
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.returncode == 0, r.stderr
        assert "served-in-pod" in r.stderr
        log, code = run_image(daemon, work, "localhost/podnet:v1", "podnet", ["cat", "/fetched"])
        assert (log, code) == ("served-in-pod\n", 0)
        # The pod's address from inside its namespace, through wc run.
        ok(daemon, "wc", "from", "--name", "netwc", image)
        try:
            out = ok(daemon, "wc", "run", "--network", "pod:" + pod_id, "netwc", "--",
                     "sh", "-c", "wget -q -O - http://%s:8099/" % ip)
            assert out == "served-in-pod\n"
            r = ctl(daemon, "wc", "run", "netwc", "--", "sh", "-c",
                    "wget -q -O - http://127.0.0.1:8099/")
            assert r.returncode != 0 and "exited with code 1" in r.stderr
            assert "Connection refused" in r.stdout + r.stderr, (r.stdout, r.stderr)
            # A namespace of its own has its loopback up, as docker's none.
            assert "LOOPBACK,UP" in ok(daemon, "wc", "run", "netwc", "--", "sh", "-c",
                                          "ip link show lo")
        finally:
            ok(daemon, "wc", "rm", "netwc")
        # Default: a loopback of its own, nothing listening there.
        r = build(daemon, ctx, "--no-cache")
        assert r.returncode != 0 and "exited with code 1" in r.stderr, r.stderr
        assert "Connection refused" in r.stderr, r.stderr
    # The pod is gone: refused by name, nothing started.
    r = build(daemon, ctx, "--network", "pod:" + pod_id)
    assert r.returncode != 0 and "pod sandbox %s not found" % pod_id in r.stderr, r.stderr
    r = build(daemon, ctx, "--network", "bridge")
    assert r.returncode != 0 and "network 'bridge': none, host or pod:<POD>" in r.stderr
    r = build(daemon, ctx, "--network", "pod:")
    assert r.returncode != 0 and "the pod's id is missing" in r.stderr
    assert leftovers(daemon) == []


def test_client_leaving_mid_run(daemon, image, work):
    """agentctl killed while a RUN runs: the build stops, its container, rootfs
    and work dir go, and no image is tagged."""
    ctx = context(work / "ctx-cancel", {"Dockerfile": "FROM %s\nRUN echo started; sleep 60\n" % image})
    p = subprocess.Popen([P.H.agentctl_binary(), "-e", "unix://" + daemon.sock, "build", "-t",
                          "localhost/cancelled:v1", str(ctx)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if line.strip() == "started":
                break
        assert any(Path(daemon.workdir, "state", "build").iterdir())
    finally:
        p.kill()
        p.communicate()
    deadline = time.monotonic() + 15
    while leftovers(daemon) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(daemon) == []
    r = ctl(daemon, "inspecti", "localhost/cancelled:v1")
    assert r.returncode != 0


def sleepers(arg):
    out = []
    for pid in os.listdir("/proc"):
        try:
            if Path("/proc", pid, "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", arg]:
                out.append(int(pid))
        except OSError:
            pass
    return out


def test_agentd_killed_mid_run(daemon, image, work):
    """agentd SIGKILLed while a RUN runs: on its restart the build container
    (whose shim outlived agentd) is killed and its rootfs, mount and work dir
    are removed."""
    ctx = context(work / "ctx-crash", {"Dockerfile": "FROM %s\nRUN echo started; sleep 67\n" % image})
    p = subprocess.Popen([P.H.agentctl_binary(), "-e", "unix://" + daemon.sock, "build", str(ctx)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if line.strip() == "started":
                break
        daemon.kill()
    finally:
        p.kill()
        p.communicate()
    assert leftovers(daemon) != [] and sleepers(b"67")
    daemon.start()
    deadline = time.monotonic() + 15
    while (leftovers(daemon) or sleepers(b"67")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(daemon) == [] and sleepers(b"67") == []
    # And it builds again.
    built(daemon, context(work / "ctx-after", {"Dockerfile": "FROM %s\nRUN true\n" % image}))
