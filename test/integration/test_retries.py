"""Retries, the retry budget, per-try timeouts and circuit breakers, against real processes
on 127.0.0.1: pf-backend for healthy upstreams, and small in-test servers for upstreams
that hang or fail (each counts what it received). Every load is bounded in count and time."""

import http.client
import re
import signal
import socket
import threading
import time

import pytest

from harness import (
    LOCALHOST,
    RawConn,
    closed_port,
    cluster,
    listener,
    make_config,
    make_request,
    metric_sum,
    route,
    wait_for,
)
from servers import ThreadedServer, closed_at_teardown


class ScriptedServer(ThreadedServer):
    """A TCP server on 127.0.0.1 that answers every request the same way: `status` with a
    short body, or never (status None). Counts requests."""

    backlog = 128

    def __init__(self, status):
        self.status = status
        self.requests = 0
        super().__init__()

    def serve(self, conn):
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                # The answer waits for the whole body (Content-Length): a 5xx that came
                # before the body had passed through would make its replay depend on timing.
                head, rest = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(rest) < length:
                    break
                buf = rest[length:]
                with self.lock:
                    self.requests += 1
                if self.status is None:
                    continue
                body = f"status {self.status}\n".encode()
                try:
                    conn.sendall(
                        f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                except OSError:
                    return


@pytest.fixture
def scripted():
    yield from closed_at_teardown(ScriptedServer)


def one_cluster_config(endpoints, **cluster_kw):
    main = listener("main", [route("c", prefix="/")])
    return make_config([main], [cluster("c", endpoints, **cluster_kw)], access_log=False)


def get(port, path, method="GET", timeout=10.0):
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def test_backend_killed_in_the_middle_of_a_load_costs_no_failed_request(
    start_backend, start_pilotfish
):
    a, b = start_backend("a"), start_backend("b")
    pf = start_pilotfish(one_cluster_config([a.address, b.address]), workers=1)
    port = pf.port()
    total, clients = 8000, 4
    done, failures, lock = [0], [], threading.Lock()
    deadline = time.monotonic() + 120

    def client():
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
        while time.monotonic() < deadline:
            with lock:
                if done[0] >= total:
                    break
                done[0] += 1
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    failures.append(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while done[0] < total // 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    b.proc.send_signal(signal.SIGKILL)  # mid-load, with requests in flight
    b.proc.wait(timeout=5)
    b.proc = None  # killed on purpose: not a problem for the fixture to report
    for t in threads:
        t.join(timeout=130)
    assert done[0] >= total, f"load did not finish: {done[0]} of {total}"
    assert failures == [], f"{len(failures)} failed requests, first: {failures[:5]}"
    retries = metric_sum(pf.metrics(), "pilotfish_upstream_retries_total")
    assert retries > 0, "the dead backend was never retried away from"


def test_hanging_backend_is_retried_elsewhere_after_the_per_try_timeout(
    start_backend, start_pilotfish, scripted
):
    good, hang = start_backend("good"), scripted(None)
    retry = {"on": ["gateway-error"], "max_retries": 2, "per_try_timeout": "300ms"}
    pf = start_pilotfish(one_cluster_config([good.address, hang.address], retry=retry), workers=1)
    for _ in range(6):
        resp = get(pf.port(), "/")
        assert resp.status == 200
        assert int(resp.getheader("x-pilotfish-attempts")) in (1, 2)
    assert hang.requests >= 2, "the hanging backend was never tried"


def test_post_is_not_retried_unless_configured(start_backend, start_pilotfish, scripted):
    good, hang = start_backend("good"), scripted(None)
    retry = {"on": ["gateway-error"], "max_retries": 2, "per_try_timeout": "300ms"}
    pf = start_pilotfish(one_cluster_config([good.address, hang.address], retry=retry), workers=1)
    statuses = [get(pf.port(), "/", method="POST").status for _ in range(4)]
    assert 504 in statuses, statuses  # round robin sends some POSTs to the hanging one
    assert set(statuses) <= {200, 504}


def test_post_is_retried_when_the_policy_allows_it(start_backend, start_pilotfish, scripted):
    good, hang = start_backend("good"), scripted(None)
    retry = {
        "on": ["gateway-error"],
        "max_retries": 2,
        "per_try_timeout": "300ms",
        "retry_non_idempotent": True,
    }
    pf = start_pilotfish(one_cluster_config([good.address, hang.address], retry=retry), workers=1)
    assert [get(pf.port(), "/", method="POST").status for _ in range(4)] == [200] * 4


def test_every_backend_failing_returns_the_5xx_after_bounded_attempts(
    start_pilotfish, scripted
):
    s1, s2 = scripted(500), scripted(500)
    retry = {"on": ["5xx"], "max_retries": 2, "backoff": {"base": "1ms", "max": "2ms"}}
    pf = start_pilotfish(one_cluster_config([s1.address, s2.address], retry=retry), workers=1)
    n = 20
    for _ in range(n):
        resp = get(pf.port(), "/")
        assert resp.status == 500
        assert resp.getheader("x-pilotfish-attempts") == "3"
    assert s1.requests + s2.requests == n * 3


def test_request_body_up_to_buffer_bytes_is_replayed_and_a_larger_one_is_not(
    start_pilotfish, scripted
):
    s1, s2 = scripted(500), scripted(500)
    retry = {
        "on": ["5xx"],
        "max_retries": 1,
        "backoff": {"base": "1ms", "max": "2ms"},
        "buffer_bytes": 1000,
    }
    pf = start_pilotfish(one_cluster_config([s1.address, s2.address], retry=retry), workers=1)
    for size, attempts in ((1000, "2"), (1001, "1"), (0, "2")):
        # Head and body in one write: the scripted server answers on the head alone, and a
        # body still on its way when that answer comes would be replayed as far as it got.
        with RawConn(pf.port()) as conn:
            conn.send(make_request("PUT", "/", [("Connection", "close")], b"x" * size))
            resp = conn.read_response(method="PUT")
        assert resp.status == 500
        assert resp.header("x-pilotfish-attempts") == attempts, f"a {size}-byte body"


def test_replayed_request_body_arrives_whole_on_the_retry(start_backend, start_pilotfish, scripted):
    # The body kept for a retry is handed to the next attempt by reference: what the good
    # endpoint echoes must be the body, byte for byte, framed by length or chunked.
    good, hang = start_backend("good"), scripted(None)
    retry = {"on": ["gateway-error"], "max_retries": 1, "per_try_timeout": "300ms",
             "buffer_bytes": 1 << 20}
    pf = start_pilotfish(one_cluster_config([hang.address, good.address], retry=retry), workers=1)
    body = bytes(range(256)) * 1200  # 300 KiB: several chains, more than buffer_bytes
    attempts = []
    for chunked in (False, True, False, True):
        conn = http.client.HTTPConnection(LOCALHOST, pf.port(), timeout=10.0)
        try:
            if chunked:
                conn.request("PUT", "/echo", body=iter([body[:100000], body[100000:]]),
                             encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
            else:
                conn.request("PUT", "/echo", body=body)
            resp = conn.getresponse()
            got = resp.read()
        finally:
            conn.close()
        assert resp.status == 200, (chunked, resp.status)
        assert got == body, f"chunked={chunked}: {len(got)} bytes back"
        attempts.append(resp.getheader("x-pilotfish-attempts"))
    assert "2" in attempts, attempts  # round robin sent some to the hanging one first


def test_gateway_errors_pilotfish_answers_count_in_the_cluster_requests(
    start_pilotfish, scripted
):
    h1, h2 = scripted(None), scripted(None)
    retry = {"on": ["gateway-error"], "max_retries": 1, "per_try_timeout": "200ms"}
    pf = start_pilotfish(one_cluster_config([h1.address, h2.address], retry=retry), workers=1)
    n = 3
    assert [get(pf.port(), "/").status for _ in range(n)] == [504] * n
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_upstream_requests_total", cluster="c", code_class="5xx") == n


def test_spent_retry_budget_sends_the_original_error_back(start_pilotfish, scripted):
    s1, s2 = scripted(503), scripted(503)
    retry = {"on": ["gateway-error"], "max_retries": 2}
    budget = {"percent": 0, "min_concurrency": 0}
    pf = start_pilotfish(
        one_cluster_config([s1.address, s2.address], retry=retry, retry_budget=budget), workers=1
    )
    n = 20
    assert [get(pf.port(), "/").status for _ in range(n)] == [503] * n
    assert s1.requests + s2.requests == n, "retries were made although the budget was zero"
    exhausted = metric_sum(pf.metrics(), "pilotfish_upstream_retry_budget_exhausted_total")
    assert exhausted == n


def test_retriable_status_codes_are_retried_and_others_passed_through(
    start_backend, start_pilotfish, scripted
):
    good, teapot = start_backend("good"), scripted(501)
    retry = {"on": ["retriable-status-codes"], "status_codes": [501], "max_retries": 1}
    pf = start_pilotfish(one_cluster_config([good.address, teapot.address], retry=retry), workers=1)
    assert [get(pf.port(), "/").status for _ in range(6)] == [200] * 6
    assert teapot.requests >= 1


def test_circuit_breaker_max_requests_answers_503_overloaded_at_once(
    start_backend, start_pilotfish
):
    slow = start_backend("slow")
    breakers = {"max_requests": 2}
    pf = start_pilotfish(one_cluster_config([slow.address], circuit_breakers=breakers), workers=1)
    results, lock = [], threading.Lock()

    def one():
        resp = get(pf.port(), "/delay/800")
        with lock:
            results.append((resp.status, resp.getheader("x-pilotfish-overloaded")))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    ok = [r for r in results if r[0] == 200]
    overloaded = [r for r in results if r == (503, "true")]
    assert len(results) == 8
    assert 1 <= len(ok) <= 2, results
    assert len(ok) + len(overloaded) == 8, results
    trips = metric_sum(pf.metrics(), "pilotfish_upstream_overflow_total")
    assert trips == len(overloaded)


def test_connect_failure_fails_over_to_the_next_tier(start_backend, start_pilotfish):
    backup = start_backend("backup")
    endpoints = [
        {"address": f"{LOCALHOST}:{closed_port()}", "priority": 0},
        {"address": backup.address, "priority": 1},
    ]
    pf = start_pilotfish(one_cluster_config(endpoints), workers=1)
    for _ in range(5):
        resp = get(pf.port(), "/")
        assert resp.status == 200
        assert resp.getheader("X-Backend") == "backup"


def test_failed_attempts_leave_no_request_counted_in_flight(start_backend, start_pilotfish, scripted):
    # A failed attempt ends in more than one place (the error, then the local answer); each
    # endpoint's in-flight count must still come back to exactly zero.
    good, failing = start_backend("good"), scripted(503)
    endpoints = [f"{LOCALHOST}:{closed_port()}", failing.address, good.address]
    retry = {"on": ["connect-failure", "gateway-error"], "max_retries": 1}
    pf = start_pilotfish(one_cluster_config(endpoints, retry=retry), workers=1)
    for _ in range(9):
        assert get(pf.port(), "/").status in (200, 503)
    eps = pf.admin_json("/clusters")["clusters"][0]["endpoints"]
    assert [e["active_requests"] for e in eps] == [0, 0, 0], eps


def test_max_pending_requests_overflow_is_counted_under_its_own_breaker(start_pilotfish):
    # An endpoint whose accept queue is full: the kernel drops further SYNs, so pilotfish's
    # connection to it stays pending (connecting) until connect_timeout.
    hung = socket.socket()
    hung.bind((LOCALHOST, 0))
    hung.listen(0)
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(hung.getsockname())
            fillers.append(s)
        addr = f"{LOCALHOST}:{hung.getsockname()[1]}"
        breakers = {"max_pending_requests": 1}
        pf = start_pilotfish(
            one_cluster_config([addr], circuit_breakers=breakers, connect_timeout="5s"), workers=1
        )
        waiting = socket.create_connection((LOCALHOST, pf.port()), timeout=10)
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(
            lambda: metric_sum(pf.metrics(), "pilotfish_upstream_connections_active") == 1,
            10,
            "the first request to wait for its connection",
        )
        resp = get(pf.port(), "/")
        assert (resp.status, resp.getheader("x-pilotfish-overloaded")) == (503, "true")
        m = pf.metrics()
        overflow = "pilotfish_upstream_overflow_total"
        assert metric_sum(m, overflow, cluster="c", breaker="max_pending_requests") == 1
        assert metric_sum(m, overflow, cluster="c", breaker="max_connections") == 0
        waiting.close()
    finally:
        for s in fillers:
            s.close()
        hung.close()
