"""Pooled upstream connections to endpoints that left the set (issue 16 defect 5): idle ones
close at once, busy ones after their request, and none of them holds a place under
circuit_breakers.max_connections. Endpoints change through the fake Kubernetes API (one
EndpointSlice whose port moves from backend to backend), as they do when pods roll.
"""

import threading

from harness import (
    cluster_status,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    metric_sum,
    route,
    wait_for,
)

MOVES = 8
MAX_CONNECTIONS = 3


def move_to(k8s, pf, backend):
    k8s.apply(k8s_slice("web-a", "web", backend.port, ["127.0.0.1"]))
    want = [backend.address]
    wait_for(lambda: sorted(e["address"] for e in cluster_status(pf, "web")["endpoints"]) == want,
             10, f"web endpoints == {want}")


def active(pf):
    return metric_sum(pf.metrics(), "pilotfish_upstream_connections_active", cluster="web")


def start(k8s, start_pilotfish, first):
    k8s.apply(k8s_service("web", [("http", 80)]),
              k8s_slice("web-a", "web", first.port, ["127.0.0.1"]))
    cfg = make_config(
        [listener("main", [route("web", prefix="/")])],
        [{"name": "web", "kubernetes": {"service": "web", "port": "http"},
          "idle_timeout": "120s", "circuit_breakers": {"max_connections": MAX_CONNECTIONS}}],
        kubernetes=k8s.config(),
    )
    return start_pilotfish(cfg, workers=1)


def test_idle_connections_to_departed_endpoints_close_and_leave_the_breaker(
    k8s, start_backend, start_pilotfish
):
    backends = [start_backend(f"b{i}") for i in range(MOVES)]
    pf = start(k8s, start_pilotfish, backends[0])
    statuses = []
    for i, b in enumerate(backends):
        if i:
            move_to(k8s, pf, b)
        r = pf.get("/")
        statuses.append((r.status, r.header("X-Backend")))
        # the one pooled connection left is to the endpoint in the set now
        wait_for(lambda: active(pf) == 1, 5, "only the current endpoint's connection open")
    # before: the fourth endpoint found three idle connections to gone ones and got 503
    assert statuses == [(200, b.name) for b in backends], statuses
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_upstream_overflow_total", cluster="web") == 0


def test_busy_connection_to_a_departed_endpoint_closes_after_its_request(
    k8s, start_backend, start_pilotfish
):
    a, b = start_backend("a"), start_backend("b")
    pf = start(k8s, start_pilotfish, a)
    result = {}

    def slow():
        result["resp"] = pf.get("/delay/1500")

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: active(pf) == 1, 5, "the slow request's connection to a")
    move_to(k8s, pf, b)
    t.join(timeout=30)
    assert result["resp"].status == 200 and result["resp"].header("X-Backend") == "a"
    # finished, its connection is not pooled: a is not in the set any more
    wait_for(lambda: active(pf) == 0, 5, "a's connection closed after its request")
    r = pf.get("/")
    assert r.status == 200 and r.header("X-Backend") == "b", r
    assert active(pf) == 1
