"""The calls a kubelet makes while it tears a pod down, as sequences that run
against any CRI runtime and record what each call answers.

kubelet (v1.26) deletes a pod in this order: for each running container
ContainerStatus (to restore the spec from the labels when the pod object is
gone) and StopContainer with the grace period, then StopPodSandbox; its PLEG
keeps calling PodSandboxStatus, ListContainers and ContainerStatus on what it
listed; later the garbage collector calls RemoveContainer for each dead
container and RemovePodSandbox. A pod whose sandbox died is stopped with
StopPodSandbox first. The sequences below make those calls, plus the same
calls again after StopPodSandbox and after RemovePodSandbox (the late PLEG and
pod-worker calls), and record each answer as a short outcome string: "OK",
the state, exit code and reason for ContainerStatus, or the gRPC status code
name. Messages differ between runtimes and are left out.

Used by teardown_compare.py (agentd and containerd side by side) and by
tests/integration/test_teardown.py (agentd's answers in the suite)."""
import threading
import time

import grpc

# A container that ends on SIGTERM (a shell waiting in a loop with a trap),
# one that exits at once, and one that is never started.
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
STUBBORN = ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]


class Recorder:
    """Runs CRI calls and records (step, outcome) pairs."""

    def __init__(self, rt, pb, timeout=120):
        self.rt, self.pb, self.timeout = rt, pb, timeout
        self.rows = []

    def outcome(self, method, req):
        try:
            r = getattr(self.rt, method)(req, timeout=self.timeout)
        except grpc.RpcError as e:
            return e.code().name
        if method == "ContainerStatus":
            st = r.status
            name = self.pb.api.ContainerState.Name(st.state).replace("CONTAINER_", "")
            if st.state == self.pb.api.CONTAINER_EXITED:
                return "%s exit=%d %s" % (name, st.exit_code, st.reason or '""')
            return name
        if method == "PodSandboxStatus":
            return self.pb.api.PodSandboxState.Name(r.status.state).replace("SANDBOX_", "")
        if method == "ListContainers":
            states = sorted(self.pb.api.ContainerState.Name(c.state).replace("CONTAINER_", "")
                            for c in r.containers)
            return "OK [%s]" % " ".join(states)
        return "OK"

    def call(self, step, method, req):
        out = self.outcome(method, req)
        self.rows.append((step, out))
        return out


class Pod:
    """A pod with three containers: `loop` (running, ends on SIGTERM), `done`
    (exited 0) and `new` (created, never started)."""

    def __init__(self, rt, pb, image, log_dir, name, cmd=None):
        self.rt, self.pb = rt, pb
        self.cfg = pb.api.PodSandboxConfig(
            metadata=pb.api.PodSandboxMetadata(name=name, namespace="teardown",
                                               uid="uid-" + name),
            hostname=name, log_directory=str(log_dir / name))
        self.id = rt.RunPodSandbox(pb.api.RunPodSandboxRequest(config=self.cfg),
                                   timeout=120).pod_sandbox_id
        self.ctr = {}
        for c, command, start in (("loop", cmd or LOOP, True), ("done", ["true"], True),
                                  ("new", ["true"], False)):
            cfg = pb.api.ContainerConfig(metadata=pb.api.ContainerMetadata(name=c),
                                         image=pb.api.ImageSpec(image=image), command=command,
                                         log_path=c + ".log")
            cid = rt.CreateContainer(pb.api.CreateContainerRequest(
                pod_sandbox_id=self.id, config=cfg, sandbox_config=self.cfg),
                timeout=120).container_id
            if start:
                rt.StartContainer(pb.api.StartContainerRequest(container_id=cid), timeout=120)
            self.ctr[c] = cid
        self.wait("loop", pb.api.CONTAINER_RUNNING)
        self.wait("done", pb.api.CONTAINER_EXITED)

    def wait(self, c, state, timeout=30):
        deadline = time.monotonic() + timeout
        req = self.pb.api.ContainerStatusRequest(container_id=self.ctr[c])
        while self.rt.ContainerStatus(req, timeout=30).status.state != state:
            if time.monotonic() > deadline:
                raise AssertionError("container %s never reached state %d" % (c, state))
            time.sleep(0.05)

    # The requests, by container name.
    def status(self, c):
        return self.pb.api.ContainerStatusRequest(container_id=self.ctr[c])

    def stop(self, c, timeout=10):
        return self.pb.api.StopContainerRequest(container_id=self.ctr[c], timeout=timeout)

    def start(self, c):
        return self.pb.api.StartContainerRequest(container_id=self.ctr[c])

    def remove(self, c):
        return self.pb.api.RemoveContainerRequest(container_id=self.ctr[c])

    def pod(self, what):
        api = self.pb.api
        req = {"status": api.PodSandboxStatusRequest, "stop": api.StopPodSandboxRequest,
               "remove": api.RemovePodSandboxRequest}[what]
        return req(pod_sandbox_id=self.id)

    def list(self):
        return self.pb.api.ListContainersRequest(
            filter=self.pb.api.ContainerFilter(pod_sandbox_id=self.id))


NAMES = ("loop", "done", "new")


def each(rec, pod, label, method, make):
    for c in NAMES:
        rec.call("%s %s(%s)" % (label, method, c), method, make(c))


def kill_then_stop_pod(rec, pod):
    """kubelet deleting a pod: kill the running containers, StopPodSandbox,
    later RemoveContainer for each, then RemovePodSandbox."""
    rec.call("1 ContainerStatus(loop)", "ContainerStatus", pod.status("loop"))
    rec.call("1 StopContainer(loop)", "StopContainer", pod.stop("loop"))
    each(rec, pod, "2 killed:", "ContainerStatus", pod.status)
    each(rec, pod, "2 killed:", "StopContainer", pod.stop)
    rec.call("3 StopPodSandbox", "StopPodSandbox", pod.pod("stop"))
    rec.call("3 pod stopped: PodSandboxStatus", "PodSandboxStatus", pod.pod("status"))
    rec.call("3 pod stopped: ListContainers", "ListContainers", pod.list())
    each(rec, pod, "3 pod stopped:", "ContainerStatus", pod.status)
    each(rec, pod, "3 pod stopped:", "StopContainer", pod.stop)
    rec.call("3 pod stopped: StopPodSandbox again", "StopPodSandbox", pod.pod("stop"))
    rec.call("3 pod stopped: StartContainer(new)", "StartContainer", pod.start("new"))
    rec.call("3 pod stopped: ContainerStatus(new) again", "ContainerStatus", pod.status("new"))
    each(rec, pod, "4", "RemoveContainer", pod.remove)
    each(rec, pod, "4 removed:", "ContainerStatus", pod.status)
    each(rec, pod, "4 removed:", "StopContainer", pod.stop)
    each(rec, pod, "4 removed:", "RemoveContainer", pod.remove)
    rec.call("5 RemovePodSandbox", "RemovePodSandbox", pod.pod("remove"))
    after_pod_removed(rec, pod)


def stop_pod_first(rec, pod):
    """A pod whose sandbox is to go (it died, or kubelet kills it whole):
    StopPodSandbox with containers still running and created, then the
    PLEG's and the pod worker's calls, then RemovePodSandbox without
    RemoveContainer before it."""
    rec.call("1 StopPodSandbox", "StopPodSandbox", pod.pod("stop"))
    rec.call("1 pod stopped: PodSandboxStatus", "PodSandboxStatus", pod.pod("status"))
    rec.call("1 pod stopped: ListContainers", "ListContainers", pod.list())
    each(rec, pod, "1 pod stopped:", "ContainerStatus", pod.status)
    each(rec, pod, "1 pod stopped:", "StopContainer", pod.stop)
    rec.call("2 RemovePodSandbox", "RemovePodSandbox", pod.pod("remove"))
    after_pod_removed(rec, pod)


def remove_ready_pod(rec, pod):
    """RemovePodSandbox of a pod that is still ready, containers running."""
    rec.call("1 RemovePodSandbox (ready)", "RemovePodSandbox", pod.pod("remove"))
    rec.call("1 after: PodSandboxStatus", "PodSandboxStatus", pod.pod("status"))
    each(rec, pod, "1 after:", "ContainerStatus", pod.status)
    if rec.rows[0][1] != "OK":  # refused: clean up the kubelet way
        rec.call("2 StopPodSandbox", "StopPodSandbox", pod.pod("stop"))
        rec.call("2 RemovePodSandbox", "RemovePodSandbox", pod.pod("remove"))
        after_pod_removed(rec, pod)


def remove_running_container(rec, pod):
    """RemoveContainer of a running container (kubelet's container deletor
    acting on a stale view), then the calls that may follow it."""
    rec.call("1 RemoveContainer(loop) (running)", "RemoveContainer", pod.remove("loop"))
    rec.call("1 after: ContainerStatus(loop)", "ContainerStatus", pod.status("loop"))
    rec.call("1 after: StopContainer(loop)", "StopContainer", pod.stop("loop"))
    rec.call("2 RemoveContainer(new) (created)", "RemoveContainer", pod.remove("new"))
    rec.call("2 after: ContainerStatus(new)", "ContainerStatus", pod.status("new"))
    rec.call("3 ListContainers", "ListContainers", pod.list())


def after_pod_removed(rec, pod):
    rec.call("9 pod removed: PodSandboxStatus", "PodSandboxStatus", pod.pod("status"))
    rec.call("9 pod removed: StopPodSandbox", "StopPodSandbox", pod.pod("stop"))
    rec.call("9 pod removed: RemovePodSandbox", "RemovePodSandbox", pod.pod("remove"))
    rec.call("9 pod removed: ListContainers", "ListContainers", pod.list())
    each(rec, pod, "9 pod removed:", "ContainerStatus", pod.status)
    each(rec, pod, "9 pod removed:", "StopContainer", pod.stop)
    each(rec, pod, "9 pod removed:", "RemoveContainer", pod.remove)


def status_during_teardown(rec, pod):
    """The PLEG's ContainerStatus calls racing the teardown: pollers ask for
    every container while StopContainer (whose container ignores SIGTERM, so
    it takes its 2 s grace period), StopPodSandbox and RemovePodSandbox run.
    Records the distinct answers seen during each call."""
    def during(label, method, req):
        seen, stop = {c: set() for c in NAMES}, threading.Event()

        def poll(c):
            while not stop.is_set():
                out = rec.outcome("ContainerStatus", pod.status(c))
                # A container gone with its pod is the removal's result, which
                # the poller can see before the caller sees the reply (a loaded
                # machine widens that gap): not an answer given meanwhile.
                # Gone while its pod is still there is recorded.
                gone_with_pod = (out == "NOT_FOUND" and
                                 rec.outcome("PodSandboxStatus", pod.pod("status")) == "NOT_FOUND")
                if not stop.is_set() and not gone_with_pod:  # given while the call ran
                    seen[c].add(out)
                time.sleep(0.01)
        threads = [threading.Thread(target=poll, args=(c,)) for c in NAMES]
        for t in threads:
            t.start()
        time.sleep(0.1)
        try:
            rec.call(label, method, req)
        finally:
            stop.set()
            for t in threads:
                t.join()
        for c in NAMES:
            rec.rows.append(("%s: ContainerStatus(%s) meanwhile" % (label, c),
                             " | ".join(sorted(seen[c]))))
    during("1 StopContainer(loop, 2)", "StopContainer", pod.stop("loop", 2))
    during("2 StopPodSandbox", "StopPodSandbox", pod.pod("stop"))
    during("3 RemovePodSandbox", "RemovePodSandbox", pod.pod("remove"))


SEQUENCES = [
    ("kill containers, StopPodSandbox, RemoveContainer each, RemovePodSandbox", kill_then_stop_pod,
     None),
    ("StopPodSandbox first, RemovePodSandbox without RemoveContainer", stop_pod_first, None),
    ("RemovePodSandbox of a ready pod", remove_ready_pod, None),
    ("RemoveContainer of a running and of a created container", remove_running_container, None),
    ("ContainerStatus while the teardown runs", status_during_teardown, STUBBORN),
]


def run_all(rt, pb, image, log_dir, prefix):
    """{sequence title: [(step, outcome)]} for every sequence."""
    out = {}
    for i, (title, fn, cmd) in enumerate(SEQUENCES):
        pod = Pod(rt, pb, image, log_dir, "%s-td%d" % (prefix, i), cmd)
        rec = Recorder(rt, pb)
        try:
            fn(rec, pod)
        finally:
            try:
                rt.StopPodSandbox(pod.pod("stop"), timeout=120)
                rt.RemovePodSandbox(pod.pod("remove"), timeout=120)
            except grpc.RpcError:
                pass
        out[title] = rec.rows
    return out
