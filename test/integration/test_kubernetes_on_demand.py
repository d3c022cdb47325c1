"""auto_discover.mode "on_demand": nothing is listed at start; the first request naming a
Service starts a scoped list+watch of it and waits for its first endpoint set; a missing
Service gets 503 and is asked about at most once per negative_ttl; unused ones are let go
after idle_timeout and their slots reused. Real pilotfish against test/fakes/k8s_api.py on
127.0.0.1."""

import time

from harness import (
    cluster_status,
    k8s_service,
    k8s_slice,
    listener,
    log_times,
    make_config,
    route,
    wait_for,
)
from test_connect import raw_connect


def on_demand_config(k8s, start_backend, **auto):
    fallback = start_backend("fallback")
    discover = dict({"namespaces": ["default", "shop"], "mode": "on_demand"}, **auto)
    return make_config([listener("main", [route("fallback", host="fallback.local")])],
                       [{"name": "fallback", "endpoints": [fallback.address]}],
                       kubernetes=k8s.config(auto_discover=discover))


def service(name, backend, namespace="default"):
    return [k8s_service(name, [("http", 80)], namespace=namespace),
            k8s_slice(f"{name}-1", name, backend.port, ["127.0.0.1"], namespace=namespace)]


def api_requests(k8s, verb=None):
    return [r for r in k8s.requests() if verb is None or r["verb"] == verb]


def lists_of(k8s, name):
    """Service lists scoped to one name."""
    return [r for r in api_requests(k8s, "list") if r["resource"] == "services" and
            f"metadata.name%3D{name}" in r["query"]]


def test_first_request_waits_for_the_service_and_later_ones_find_it(k8s, start_backend,
                                                                    start_pilotfish):
    b1, b2 = start_backend("b1"), start_backend("b2")
    k8s.apply(*service("web", b1), *service("cart", b2, namespace="shop"),
              *service("unused", b1))
    pf = start_pilotfish(on_demand_config(k8s, start_backend))
    # ready at once, and nothing was listed or watched: there is nothing to wait for
    assert pf.admin("GET", "/ready").status == 200
    assert api_requests(k8s) == []
    started = time.monotonic()
    r = pf.get("/", host="web.default")
    first = time.monotonic() - started
    assert r.status == 200 and r.header("X-Backend") == "b1", r
    print(f"first request to a never-used Service answered in {first * 1000:.0f} ms")
    # one list+watch of the Service by name and of its slices by label, in its namespace
    want = {("list", "services", "default"), ("watch", "services", "default"),
            ("list", "endpointslices", "default"), ("watch", "endpointslices", "default")}
    # the watches follow their lists at once; the request may be answered before both began
    wait_for(lambda: {(q["verb"], q["resource"], q["namespace"])
                      for q in api_requests(k8s)} == want, 10, "both lists and watches")
    assert len(api_requests(k8s)) == 4, api_requests(k8s)
    queries = [q["query"] for q in api_requests(k8s)]
    assert all("metadata.name%3Dweb" in q or "kubernetes.io%2Fservice-name%3Dweb" in q
               for q in queries), queries
    for host in ("web", "web.default.svc", "web.default.svc.cluster.local:80", "web:80"):
        assert pf.get("/", host=host).header("X-Backend") == "b1", host
    started = time.monotonic()
    assert pf.get("/", host="web:1234").status == 404  # a known Service, no such port
    assert time.monotonic() - started < 1.0  # at once, not after on_demand_timeout
    with pf.raw() as c:  # absolute-form, as an app with http_proxy sends it
        c.send(b"GET http://cart.shop/x HTTP/1.1\r\nHost: cart.shop\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.header("X-Backend") == "b2", r
    assert cluster_status(pf, "cart.shop:80")["source"] == "kubernetes"
    assert cluster_status(pf, "unused.default:80") is None  # never asked for, never watched
    # names that are no Service of a watched namespace are 404 at once, no API request
    # (counted once cart's watches, which follow its lists, have begun too)
    wait_for(lambda: len(api_requests(k8s)) == 8, 10, "cart's lists and watches")
    before = len(api_requests(k8s))
    for host in ("example.com", "web.elsewhere", "web.default.svc.other.domain", "UPPER_"):
        assert pf.get("/", host=host).status == 404, host
    assert len(api_requests(k8s)) == before


def test_a_connect_to_a_service_not_yet_discovered_waits_for_it(k8s, start_backend,
                                                                start_pilotfish):
    b1 = start_backend("b1")
    k8s.apply(*service("web", b1))
    pf = start_pilotfish(on_demand_config(k8s, start_backend))
    assert api_requests(k8s) == []
    # The request inside the tunnel is sent without waiting for the 200: it waits with it.
    s, got = raw_connect(pf, "web.default:80", b"GET /in HTTP/1.1\r\nHost: web.default\r\n\r\n")
    with s:
        while b"X-Backend: b1\r\n" not in got:
            data = s.recv(65536)
            assert data, got
            got += data
    assert got.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200"), got
    assert len(lists_of(k8s, "web")) == 1
    # Found now: the next CONNECT is accepted at once, without asking the API again.
    s, got = raw_connect(pf, "web:80")
    s.close()
    assert got.startswith(b"HTTP/1.1 200"), got
    assert len(lists_of(k8s, "web")) == 1
    # A Service that does not exist: 503 naming it, and the connection closes.
    s, got = raw_connect(pf, "nosuch.default:80")
    with s:
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
    assert got.startswith(b"HTTP/1.1 503"), got
    assert b'service "nosuch" not found in namespace "default"' in got, got
    # No Service name at all: refused at once, and the API is never asked about it (the
    # count may still grow by nosuch's watch, which follows its list).
    s, got = raw_connect(pf, "example.com:443")
    s.close()
    assert got.startswith(b"HTTP/1.1 403"), got
    assert not [q for q in api_requests(k8s) if "example" in q["query"] or
                q["namespace"] == "com"], api_requests(k8s)


def test_a_missing_service_gets_503_and_one_list_per_negative_ttl(k8s, start_backend,
                                                                  start_pilotfish):
    b1 = start_backend("b1")
    pf = start_pilotfish(on_demand_config(k8s, start_backend, negative_ttl="2s",
                                          idle_timeout="1m"))
    r = pf.get("/", host="revews.default")
    assert r.status == 503, r
    assert b'service "revews" not found in namespace "default"' in r.body, r.body
    # more requests while the verdict holds: answered from it, no more API requests
    deadline = time.monotonic() + 1.0
    n = 0
    while time.monotonic() < deadline:
        assert pf.get("/", host="revews").status == 503
        n += 1
    # Timed on pilotfish's own clock (its log), not the test's or the fake's: under load the
    # first list, which opens the connection to the API server, may reach the fake late.
    asked = "kubernetes: watching service=revews namespace=default on demand"
    expired = "kubernetes: stopped watching service=revews namespace=default " \
              "(missing, negative_ttl over)"
    wait_for(lambda: log_times(pf, expired), 10, "the verdict to expire")
    (first,) = [t for t in log_times(pf, asked) if t <= log_times(pf, expired)[0]]
    # 2 s from the ask (less the ms the log line took to be written, and the stamps' rounding)
    assert log_times(pf, expired)[0] - first >= 2.0 - 0.05, (first, log_times(pf, expired))
    # one list per ask: however many requests came while the verdict held, one list (a
    # request of the loop that came after the expiry asked again: its list may be on its way)
    wait_for(lambda: len(lists_of(k8s, "revews")) == len(log_times(pf, asked)), 10,
             f"one list per ask ({n} requests)")
    # past negative_ttl it is asked again, once
    assert pf.get("/", host="revews").status == 503
    wait_for(lambda: len(lists_of(k8s, "revews")) == len(log_times(pf, asked)) >= 2, 10,
             "a second ask after negative_ttl")
    # the watch notices when it is created
    k8s.apply(*service("revews", b1))
    wait_for(lambda: pf.get("/", host="revews.default").status == 200, 10, "revews to route")


def test_idle_services_are_let_go_and_their_slots_reused(k8s, start_backend, start_pilotfish):
    b1 = start_backend("b1")
    names = [f"svc{i}" for i in range(12)]
    k8s.apply(*[o for n in names for o in service(n, b1)])
    pf = start_pilotfish(on_demand_config(k8s, start_backend, idle_timeout="1s",
                                          max_clusters=4))
    for batch in range(3):  # 12 Services through 4 slots
        group = names[batch * 4:(batch + 1) * 4]
        for n in group:
            r = pf.get("/", host=f"{n}.default")
            assert r.status == 200 and r.header("X-Backend") == "b1", (n, r)
        # unused for idle_timeout: watches stop, clusters and their series go
        wait_for(lambda: not [c for c in pf.admin_json("/clusters")["clusters"]
                              if c.get("source") == "kubernetes"], 10, "idle clusters to go")
        wait_for(lambda: k8s.control("/state")["watchers"] == 0, 10, "the watches to stop")
        wait_for(lambda: 'cluster="svc' not in pf.admin("GET", "/stats/prometheus").body.decode(),
                 10, "their series to go")
    assert "max_clusters" not in pf.stderr_text()
