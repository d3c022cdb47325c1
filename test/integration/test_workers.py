"""Several worker threads: requests are served correctly under concurrency."""

import collections
import threading

import pytest

from harness import make_request, pattern_bytes, standard_config


@pytest.fixture
def two_workers(backends, start_pilotfish):
    pf = start_pilotfish(standard_config(backends.web1, backends.web2, backends.api), workers=2)
    return pf


def test_two_workers_serve_concurrent_clients(two_workers):
    errors, seen = [], collections.Counter()
    lock = threading.Lock()

    def client(k):
        try:
            with two_workers.raw() as c:
                for i in range(25):
                    n = (k * 31 + i) % 5000
                    resp = c.request("GET", f"/bytes/{n}")
                    assert resp.status == 200 and resp.body == pattern_bytes(n)
                    with lock:
                        seen[resp.header("X-Backend")] += 1
        except Exception as exc:  # collected and asserted in the test's thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "clients did not finish within 60 s"
    assert not errors, errors
    assert sum(seen.values()) == 200
    assert set(seen) <= {"web1", "web2"}


def test_two_workers_each_new_connection_served(two_workers):
    for i in range(40):
        resp = two_workers.get("/v1/x", host="api.local")
        assert resp.status == 200 and resp.header("X-Backend") == "api", (i, resp)


def test_two_workers_admin_ready(two_workers):
    assert two_workers.admin("GET", "/ready").status == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_hundred_open_connections_all_answered(backends, start_pilotfish, workers):
    pf = start_pilotfish(standard_config(backends.web1, backends.web2, backends.api), workers=workers)
    conns = []
    try:
        for _ in range(100):
            conns.append(pf.raw())
        for i, c in enumerate(conns):
            c.send(make_request("GET", f"/bytes/{i}"))
        for i, c in enumerate(conns):
            resp = c.read_response()
            assert resp.status == 200 and resp.body == pattern_bytes(i), (i, resp)
    finally:
        for c in conns:
            c.close()
