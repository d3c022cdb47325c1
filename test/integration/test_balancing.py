"""Load balancing across a cluster's endpoints: smooth weighted round robin."""

import collections

import pytest

from harness import cluster, listener, make_config, route, standard_config


@pytest.fixture
def one_worker_proxy(backends, start_pilotfish):
    # Round robin state is per worker; one worker makes the sequence exact.
    return start_pilotfish(standard_config(backends.web1, backends.web2, backends.api), workers=1)


def sequence(pf, n, keepalive):
    seen = []
    if keepalive:
        with pf.raw() as c:
            for _ in range(n):
                resp = c.request("GET", "/")
                assert resp.status == 200, resp
                seen.append(resp.header("X-Backend"))
    else:
        for _ in range(n):
            resp = pf.get("/")
            assert resp.status == 200, resp
            seen.append(resp.header("X-Backend"))
    return seen


@pytest.mark.parametrize("keepalive", [False, True], ids=["new_connections", "one_connection"])
def test_weights_one_and_two_split_thirty_requests_ten_and_twenty(one_worker_proxy, keepalive):
    seen = sequence(one_worker_proxy, 30, keepalive)
    assert collections.Counter(seen) == {"web1": 10, "web2": 20}, seen


def test_weighted_round_robin_is_smooth(one_worker_proxy):
    # Smooth WRR never sends the weight-1 endpoint two in a row, and each run of three
    # consecutive picks holds it exactly once.
    seen = sequence(one_worker_proxy, 30, keepalive=True)
    for i in range(0, 30, 3):
        assert seen[i : i + 3].count("web1") == 1, seen
    assert all(not (a == b == "web1") for a, b in zip(seen, seen[1:])), seen


def test_equal_weights_alternate(start_backend, start_pilotfish):
    a, b = start_backend("a"), start_backend("b")
    cfg = make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [a.address, b.address], lb_policy="round_robin")],
    )
    pf = start_pilotfish(cfg, workers=1)
    seen = sequence(pf, 20, keepalive=False)
    assert collections.Counter(seen) == {"a": 10, "b": 10}, seen
    assert all(x != y for x, y in zip(seen, seen[1:])), seen


def test_every_endpoint_receives_traffic_with_two_workers(backends, start_pilotfish):
    pf = start_pilotfish(standard_config(backends.web1, backends.web2, backends.api), workers=2)
    seen = collections.Counter(sequence(pf, 60, keepalive=False))
    assert set(seen) == {"web1", "web2"}, seen
    assert sum(seen.values()) == 60
