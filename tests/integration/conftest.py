"""pytest fixtures for agentd's integration tests (see agentd_harness.py).

Fixtures:
  pb             generated gRPC stubs (namespace: api, api_grpc, agent, ...)
  certs          CA, server and client certificates (openssl CLI)
  agentd         one daemon per test module; a module may set
                 AGENTD_OPTIONS = dict(...) (Agentd keyword arguments, e.g.
                 max_msg_size, tls=True) to configure it
  agentd_factory start(**kwargs) -> a new daemon stopped (and checked) at the
                 end of the test
  work           a private directory for the module's files (registries,
                 daemons' state, configs), named after the module
Every daemon is stopped with SIGTERM at teardown and must exit 0 without any
sanitizer report; a failing test gets the stderr of the daemons it used.
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import agentd_harness as H  # noqa: E402

_running = []


def _in_tempdir(prefix, make):
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield make(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pb():
    yield from _in_tempdir("agentd-stubs-", H.load_stubs)


@pytest.fixture(scope="session")
def certs():
    yield from _in_tempdir("agentd-certs-", H.make_certs)


@pytest.fixture(scope="module")
def work(request, tmp_path_factory):
    return tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))


def _start(pb, certs, tls=False, **kwargs):
    a = H.Agentd(certs=certs if tls else None, **kwargs)
    _running.append(a)
    try:
        a.start()
    except BaseException:
        a.cleanup()
        _running.remove(a)
        raise
    return a


def _finish(a):
    try:
        a.stop()
    finally:
        a.cleanup()
        if a in _running:
            _running.remove(a)


@pytest.fixture(scope="module")
def agentd(request, pb, certs):
    opts = dict(getattr(request.module, "AGENTD_OPTIONS", {}))
    a = _start(pb, certs, **opts)
    yield a
    _finish(a)


@pytest.fixture
def agentd_factory(pb, certs):
    started = []

    def start(**kwargs):
        a = _start(pb, certs, **kwargs)
        started.append(a)
        return a

    yield start
    errors = []
    for a in started:
        try:
            _finish(a)
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for a in list(_running):
            rep.sections.append(("agentd pid %s stderr (%s)" % (
                a.proc.pid if a.proc else "-", a.stderr_path), a.stderr_text()[-20000:]))
