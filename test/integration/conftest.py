"""Fixtures for the integration tests: real pf-backend and pilotfish processes on 127.0.0.1.

Every process a fixture starts is stopped by PID in the fixture's teardown, also when the
test failed. A pilotfish that died during a test, or printed a sanitizer report, turns into
a teardown error even if the test's own assertions passed.
"""

import types

import pytest

from harness import Backend, K8sApi, Pilotfish, standard_config


@pytest.fixture
def start_backend(tmp_path):
    """start_backend(name) -> a running Backend; all are stopped at teardown."""
    started = []

    def start(name):
        b = Backend(name, str(tmp_path))
        started.append(b)
        return b.start()

    yield start
    problems = []
    for b in started:
        b.stop()
        problems += b.problems()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def start_pilotfish(tmp_path):
    """start_pilotfish(config, workers=None, extra_args=(), wait_ready=True, **kw) -> a running
    Pilotfish; kw: fd_limit, stdout_pipe, stderr_pipe (see harness.Pilotfish)."""
    started = []

    def start(config, workers=None, extra_args=(), wait_ready=True, **kw):
        pf = Pilotfish(config, str(tmp_path), workers, extra_args, tag=f"pf{len(started)}", **kw)
        started.append(pf)
        return pf.start(wait_ready=wait_ready)

    yield start
    problems = []
    for pf in started:
        pf.stop()
        problems += pf.problems()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def backends(start_backend):
    """Three backends: web1, web2 (cluster web) and api (cluster api)."""
    return types.SimpleNamespace(
        web1=start_backend("web1"), web2=start_backend("web2"), api=start_backend("api")
    )


@pytest.fixture
def proxy(backends, start_pilotfish):
    """pilotfish running standard_config; .pf, .web1, .web2, .api."""
    pf = start_pilotfish(standard_config(backends.web1, backends.web2, backends.api))
    return types.SimpleNamespace(pf=pf, web1=backends.web1, web2=backends.web2, api=backends.api)


@pytest.fixture
def k8s(tmp_path):
    """The fake Kubernetes API server (harness.K8sApi), stopped at teardown."""
    api = K8sApi(str(tmp_path)).start()
    yield api
    api.stop()
