"""kubelet's pod teardown calls (tests/conformance/teardown_sequences.py)
against agentd, each answer compared with what containerd 1.6 answers to the
same call (tests/conformance/teardown_containerd.json, recorded with
tests/conformance/teardown_compare.py). The differences kept on purpose are
listed in KEPT (and in tests/conformance/README.md)."""
import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "conformance"))
import pods_harness as P  # noqa: E402
import teardown_sequences as T  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pods need root")

BRIDGE = "adtd%d" % (os.getpid() % 1000)
SUBNET = "10.238.%d.0/24" % (os.getpid() % 250)

registry, daemon, image = P.busybox_pod_fixtures("agentd-teardown", BRIDGE, SUBNET,
                                                 "test/tdbox:v1")

CONTAINERD = json.loads((HERE.parent / "conformance" / "teardown_containerd.json").read_text())

# (sequence, step) -> agentd's answer where it differs from containerd's on purpose.
KEPT = {
    # A created container of a stopped pod cannot start: containerd answers
    # UNKNOWN (a plain error), agentd the code that says why. Both leave the
    # container exited with StartError, 128.
    ("kill containers, StopPodSandbox, RemoveContainer each, RemovePodSandbox",
     "3 pod stopped: StartContainer(new)"): "FAILED_PRECONDITION",
}

# Answers to the racing ContainerStatus calls ("meanwhile") that containerd
# did not happen to give in its run but may: the exit of a stopped container
# recorded before the StopContainer reply.
MAY_ALSO = {
    "1 StopContainer(loop, 2): ContainerStatus(loop) meanwhile": {"EXITED exit=137 Error"},
}


@pytest.fixture(scope="module")
def answers(pb, daemon, image, work):
    with daemon.unix_channel() as ch:
        return T.run_all(pb.api_grpc.RuntimeServiceStub(ch), pb, image, work / "logs", "t")


@pytest.mark.parametrize("title", [t for t, _, _ in T.SEQUENCES])
def test_teardown_answers_as_containerd(answers, title):
    got = answers[title]
    want = CONTAINERD[title]
    assert [s for s, _ in got] == [s for s, _ in want]
    wrong = []
    for (step, out), (_, ref) in zip(got, want):
        if step.endswith(" meanwhile"):
            # Several answers, one per state seen while the call ran: never
            # NOT_FOUND, only states containerd gives at that point.
            seen = set(out.split(" | "))
            if not seen <= set(ref.split(" | ")) | MAY_ALSO.get(step, set()):
                wrong.append((step, out, ref))
        elif out != KEPT.get((title, step), ref):
            wrong.append((step, out, ref))
    assert wrong == [], "\n".join("%s: agentd %s, containerd %s" % w for w in wrong)


def test_teardown_leaves_nothing(answers, pb, daemon, work):
    with daemon.unix_channel() as ch:
        rt = pb.api_grpc.RuntimeServiceStub(ch)
        assert len(rt.ListPodSandbox(pb.api.ListPodSandboxRequest()).items) == 0
        assert len(rt.ListContainers(pb.api.ListContainersRequest()).containers) == 0
    assert str(Path(daemon.root, "containers")) not in Path("/proc/self/mountinfo").read_text()
    state = Path(daemon.state, "containers")
    assert not state.exists() or list(state.iterdir()) == []
