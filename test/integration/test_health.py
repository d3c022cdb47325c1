"""Active health checks and passive outlier ejection, seen from outside: /clusters says why an
endpoint is out, and traffic follows the verdicts.

One backend of two is made to fail through pf-backend's /control paths (its /healthz status, or
the status of everything it answers) while the other stays well.
"""

import collections
import time

import pytest

from harness import (
    HarnessError,
    closed_port,
    cluster,
    http_request,
    listener,
    make_config,
    metric_sum,
    route,
    wait_for,
)
from servers import ThreadedServer, closed_at_teardown

INTERVAL = 0.2  # seconds between checks of one endpoint
JITTER = 0.05
UNHEALTHY_THRESHOLD = 3
HEALTHY_THRESHOLD = 2
SLACK = 1.0  # scheduling, polling and a slow CI machine


def health_config(endpoints, health_check=None, outlier=None, **cluster_kw):
    # panic_threshold 0: no panic mode, which would spread traffic over unhealthy endpoints
    # too when few are healthy; these tests look at health verdicts alone
    extra = {"panic_threshold": 0}
    extra.update(cluster_kw)
    if health_check is not None:
        extra["health_check"] = health_check
    if outlier is not None:
        extra["outlier_detection"] = outlier
    return make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", endpoints, **extra)],
    )


def http_check(**kw):
    d = {
        "type": "http",
        "path": "/healthz",
        "interval": f"{int(INTERVAL * 1000)}ms",
        "timeout": "500ms",
        "jitter": f"{int(JITTER * 1000)}ms",
        "unhealthy_threshold": UNHEALTHY_THRESHOLD,
        "healthy_threshold": HEALTHY_THRESHOLD,
    }
    d.update(kw)
    return d


def endpoint_state(pf, address):
    """The endpoint's object in admin /clusters."""
    for c in pf.admin_json("/clusters")["clusters"]:
        for ep in c["endpoints"]:
            if ep["address"] == address:
                return ep
    raise HarnessError(f"{address} not in /clusters")


def control(backend, what, status):
    """Switch what a pf-backend answers (/control/healthz/NNN or /control/default/NNN)."""
    resp = http_request(backend.port, "GET", f"/control/{what}/{status}", timeout=5.0)
    assert resp.status == 200 and resp.body == b"ok\n", resp


def backends_seen(pf, n):
    """Which backend answered each of n requests (fresh connections), and their statuses."""
    seen = collections.Counter()
    statuses = collections.Counter()
    for _ in range(n):
        resp = pf.get("/")
        statuses[resp.status] += 1
        seen[resp.header("X-Backend")] += 1
    return seen, statuses


def wait_health(pf, address, prefix, timeout):
    """Poll /clusters until the endpoint's "health" starts with prefix; returns the seconds it took."""
    start = time.monotonic()
    wait_for(
        lambda: endpoint_state(pf, address)["health"].startswith(prefix),
        timeout,
        f"{address} health to start with {prefix!r}",
        interval=0.02,
    )
    return time.monotonic() - start


def test_failing_http_check_takes_endpoint_out_and_passing_brings_it_back(
    start_backend, start_pilotfish
):
    a, b = start_backend("a"), start_backend("b")
    pf = start_pilotfish(health_config([a.address, b.address], http_check()))
    # both are checked at once and pass
    wait_for(
        lambda: all(endpoint_state(pf, x.address)["health"] == "healthy" for x in (a, b)),
        5,
        "both endpoints healthy after their first check",
    )
    state = endpoint_state(pf, b.address)
    assert state["health_check"]["last_result"] == "HTTP 200", state
    assert state["health_check"]["last_check"].endswith("Z"), state

    control(b, "healthz", 503)
    took = wait_health(
        pf, b.address, "unhealthy: check failed: HTTP 503",
        UNHEALTHY_THRESHOLD * (INTERVAL + JITTER) + SLACK,
    )
    # three failures in a row: the first may come at once, the third two intervals later
    assert took >= (UNHEALTHY_THRESHOLD - 1) * INTERVAL - 0.05, took
    assert endpoint_state(pf, b.address)["healthy"] is False
    seen, statuses = backends_seen(pf, 20)
    assert seen == {"a": 20} and statuses == {200: 20}, (seen, statuses)

    control(b, "healthz", 200)
    took = wait_health(pf, b.address, "healthy", HEALTHY_THRESHOLD * (INTERVAL + JITTER) + SLACK)
    assert took >= (HEALTHY_THRESHOLD - 1) * INTERVAL - 0.05, took
    seen, statuses = backends_seen(pf, 20)
    assert set(seen) == {"a", "b"} and statuses == {200: 20}, (seen, statuses)

    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_health_checks_total", cluster="c", result="failure") >= 3
    assert metric_sum(samples, "pilotfish_health_checks_total", cluster="c", result="success") >= 4
    assert metric_sum(samples, "pilotfish_cluster_endpoints", cluster="c", health="healthy") == 2


def test_tcp_check_against_a_closed_port_takes_it_out(start_backend, start_pilotfish):
    a = start_backend("a")
    dead = f"127.0.0.1:{closed_port()}"
    pf = start_pilotfish(
        health_config(
            [a.address, dead],
            {"type": "tcp", "interval": "200ms", "timeout": "500ms", "unhealthy_threshold": 2},
        )
    )
    # healthy until its first check says otherwise, which is at once
    wait_health(pf, dead, "unhealthy: check failed: connect refused", 2 * INTERVAL + SLACK)
    assert endpoint_state(pf, a.address)["health"] == "healthy"
    assert endpoint_state(pf, a.address)["health_check"]["last_result"] == "connected"
    seen, statuses = backends_seen(pf, 10)
    assert seen == {"a": 10} and statuses == {200: 10}, (seen, statuses)
    samples = pf.metrics()
    assert metric_sum(
        samples, "pilotfish_health_checks_total", cluster="c", result="connect_failure"
    ) >= 1


def test_new_endpoint_waits_for_a_passing_check_when_initial_is_unhealthy(
    start_backend, start_pilotfish
):
    a = start_backend("a")
    control(a, "healthz", 503)
    pf = start_pilotfish(health_config([a.address], http_check(initial="unhealthy")))
    # never proven: never served
    wait_for(
        lambda: endpoint_state(pf, a.address)["health_check"]["last_result"] == "HTTP 503",
        5,
        "a first failed check",
    )
    state = endpoint_state(pf, a.address)
    assert state["healthy"] is False and state["health"].startswith("unhealthy"), state
    assert pf.get("/").status == 503
    # the first passing check is the proof
    control(a, "healthz", 200)
    wait_health(pf, a.address, "healthy", HEALTHY_THRESHOLD * (INTERVAL + JITTER) + SLACK)
    assert pf.get("/").status == 200


class ClosingServer(ThreadedServer):
    """A health endpoint on 127.0.0.1 that answers one request per connection keep-alive, and
    closes the connection without an answer when a second request comes on it: what a check
    meets when a server's idle timeout closes a kept connection just as the check is sent.
    Counts answered and dropped requests."""

    def __init__(self):
        self.answered = 0
        self.dropped = 0
        super().__init__()

    def read_request(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            data += chunk
        return True

    def serve(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                if not self.read_request(conn):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                with self.lock:
                    self.answered += 1
                if self.read_request(conn):
                    with self.lock:
                        self.dropped += 1
            except OSError:
                pass


@pytest.fixture
def closing_server():
    yield from closed_at_teardown(ClosingServer)


def test_kept_connection_closed_by_the_server_is_no_failure(closing_server, start_pilotfish):
    server = closing_server()
    pf = start_pilotfish(
        health_config([server.address], http_check(interval="100ms", unhealthy_threshold=1))
    )
    # every other check finds its kept connection closed and starts over on a new one
    wait_for(lambda: server.dropped >= 3 and server.answered >= 4, 10, "checks")
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_health_checks_total", cluster="c",
                      result="success") >= 3
    for result in ("failure", "timeout", "connect_failure"):
        assert metric_sum(samples, "pilotfish_health_checks_total", cluster="c",
                          result=result) == 0, result
    assert endpoint_state(pf, server.address)["health"] == "healthy"


def test_backend_returning_503_is_ejected_and_comes_back_after_the_ejection_time(
    start_backend, start_pilotfish
):
    a, b = start_backend("a"), start_backend("b")
    base = 2.0
    pf = start_pilotfish(
        health_config(
            [a.address, b.address],
            outlier={
                "consecutive_5xx": 3,
                "consecutive_gateway_failure": 3,
                "base_ejection_time": f"{int(base * 1000)}ms",
                "max_ejection_percent": 50,
                "interval": "100ms",
            },
        ),
        workers=1,
    )
    control(b, "default", 503)
    # round robin over two: b's third 503 in a row comes within six requests
    statuses = collections.Counter()
    for _ in range(6):
        statuses[pf.get("/").status] += 1
        if statuses[503] == 3:
            break
    assert statuses == {200: 2, 503: 3} or statuses == {200: 3, 503: 3}, statuses
    # the ejection is decided on the main loop, woken by the worker that saw the third
    wait_health(pf, b.address, "ejected until ", 2.0)
    state = endpoint_state(pf, b.address)
    assert "(3 consecutive gateway failures)" in state["health"], state
    ejected_at = time.monotonic()

    seen, got = backends_seen(pf, 20)
    assert seen == {"a": 20} and got == {200: 20}, (seen, got)

    control(b, "default", 200)
    wait_for(
        lambda: endpoint_state(pf, b.address)["health"] == "healthy",
        base + SLACK,
        "b back after its ejection time",
    )
    assert time.monotonic() - ejected_at >= base - 0.2
    seen, got = backends_seen(pf, 20)
    assert set(seen) == {"a", "b"} and got == {200: 20}, (seen, got)

    samples = pf.metrics()
    assert metric_sum(
        samples, "pilotfish_outlier_ejections_total", cluster="c",
        reason="consecutive_gateway_failure",
    ) == 1
    assert metric_sum(samples, "pilotfish_outlier_ejected_endpoints", cluster="c") == 0
    assert endpoint_state(pf, b.address)["outlier"]["ejections_total"] == 1
