"""Graceful drain on SIGTERM: not ready, no new connections, in-flight requests finish, exit 0."""

import os
import signal
import socket
import threading
import time

from harness import (
    LOCALHOST,
    cluster,
    http_request,
    listener,
    make_config,
    route,
    wait_for,
)


def drain_config(backend, drain_timeout):
    return make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [backend.address])],
        drain_timeout=drain_timeout,
    )


def start_in_flight(pf, backend, path, n):
    """n requests to path on their own connections; returns (threads, results list)."""
    results = []
    base = backend.stats()["requests"]  # the backend counts a request when its head arrives,
    polls = [0]  # and each stats query counts itself

    def one():
        try:
            resp = http_request(pf.port(), "GET", path, timeout=60)
            results.append((resp.status, resp.header("X-Backend")))
        except Exception as exc:  # reported by the test
            results.append(("error", repr(exc)))

    def arrived():
        polls[0] += 1
        return backend.stats()["requests"] - base - polls[0] >= n

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    wait_for(arrived, 10, f"{n} requests to reach the backend", interval=0.01)
    return threads, results


def ready_status(pf):
    """Admin /ready status, or None when the admin port no longer accepts connections."""
    try:
        return http_request(pf.admin_port, "GET", "/ready", timeout=2).status
    except ConnectionRefusedError:
        return None


def connect_refused(port):
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_in_flight_requests_and_exits_zero(start_backend, start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(drain_config(b, "10s"))
    port = pf.port()
    idle = pf.raw()
    assert idle.request("GET", "/").status == 200  # an idle keep-alive connection

    threads, results = start_in_flight(pf, b, "/delay/1500", 3)
    pf.signal(signal.SIGTERM)

    def draining():
        return {503: "503", None: "admin closed"}.get(ready_status(pf))

    wait_for(draining, 5, "/ready to turn 503 (or admin to close) after SIGTERM")
    wait_for(lambda: connect_refused(port), 10, "the listener to refuse new connections")

    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert results == [(200, "b")] * 3, results

    assert idle.wait_closed(12), "idle keep-alive connection not closed during drain"
    idle.close()
    code = pf.wait_exit(15)
    assert code == 0, f"exit status {code}\n{pf.stderr_text()[-3000:]}"


def test_ready_reports_503_while_draining(start_backend, start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(drain_config(b, "10s"))
    threads, results = start_in_flight(pf, b, "/delay/5000", 1)
    pf.signal(signal.SIGTERM)
    # While a request is still in flight the process is alive; its admin says "not ready".
    wait_for(lambda: ready_status(pf) == 503, 4, "/ready to answer 503 during drain")
    assert http_request(pf.admin_port, "GET", "/healthz", timeout=2).status == 200
    for t in threads:
        t.join(timeout=30)
    assert results == [(200, "b")]
    assert pf.wait_exit(15) == 0


def test_idle_connections_do_not_delay_exit(start_backend, start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(drain_config(b, "60s"))
    conns = [pf.raw() for _ in range(3)]
    for c in conns:
        assert c.request("GET", "/").status == 200
    start = time.monotonic()
    pf.signal(signal.SIGTERM)
    code = pf.wait_exit(20)
    elapsed = time.monotonic() - start
    for c in conns:
        c.close()
    assert code == 0, f"status {code} after {elapsed:.1f}s with drain_timeout 60s"


def test_drain_timeout_bounds_shutdown_with_a_hung_request(start_backend, start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(drain_config(b, "1s"))
    threads, results = start_in_flight(pf, b, "/hang", 1)
    pf.signal(signal.SIGTERM)
    code = pf.wait_exit(20)
    assert code is not None, "pilotfish still running 20 s after SIGTERM with drain_timeout 1s"
    for t in threads:
        t.join(timeout=30)
    assert results and results[0][0] != 200, results


def test_sigterm_with_no_traffic_exits_zero(start_backend, start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(drain_config(b, "10s"))
    pf.signal(signal.SIGTERM)
    assert pf.wait_exit(15) == 0


def test_sighup_reloads_without_draining_and_serving_goes_on(start_backend, start_pilotfish):
    backend = start_backend("b")
    pf = start_pilotfish(drain_config(backend, "10s"))
    os.kill(pf.pid, signal.SIGHUP)
    wait_for(lambda: "config reload: no change source=signal" in pf.stderr_text(), 10,
             "the reload's log line")
    assert pf.alive()
    assert http_request(pf.port(), "GET", "/").status == 200
    assert http_request(pf.admin_port, "GET", "/ready").status == 200
