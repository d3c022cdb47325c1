"""auto_discover on_demand with many Services of one namespace in use: past
max_watches_per_namespace, one namespace-wide Service watch and one EndpointSlice watch
serve them all (filtered in process), and below half of it each Service goes back to
watches of its own; traffic never fails through either switch. And Service churn: hundreds
of Services created, used, deleted and let go, with everything still working at the end.
Real pilotfish against test/fakes/k8s_api.py on 127.0.0.1."""

import time

import pytest

from harness import k8s_service, k8s_slice, listener, make_config, route, wait_for

MAX = 4  # max_watches_per_namespace in these tests


def config(k8s, start_backend, **auto):
    fallback = start_backend("fallback")
    # a first request waits for its Service's lists: generous, for a loaded machine
    discover = dict({"namespaces": ["default"], "mode": "on_demand",
                     "max_watches_per_namespace": MAX, "on_demand_timeout": "15s"}, **auto)
    return make_config([listener("main", [route("fallback", host="fallback.local")])],
                       [{"name": "fallback", "endpoints": [fallback.address]}],
                       kubernetes=k8s.config(auto_discover=discover))


def service(name, backend):
    return [k8s_service(name, [("http", 80)]),
            k8s_slice(f"{name}-1", name, backend.port, ["127.0.0.1"])]


def open_watches(k8s):
    return k8s.control("/state")["watches_open"].get("default", 0)


def namespace_wide(q):
    """An API request of the whole namespace (no selector)."""
    return "Selector=" not in q["query"]


def use_all(pf, names, backend="b1", failures=None):
    """One request to each Service; every one must succeed (and reach `backend`)."""
    for n in names:
        r = pf.get("/", host=f"{n}.default")
        if failures is not None and (r.status != 200 or r.header("X-Backend") != backend):
            failures.append((n, r.status, r.header("X-Backend"), r.body[:120]))


def test_past_the_bound_one_namespace_watch_serves_all_and_below_half_each_its_own(
        k8s, start_backend, start_pilotfish):
    b1, b2 = start_backend("b1"), start_backend("b2")
    names = [f"svc{i}" for i in range(2 * MAX + 2)]
    k8s.apply(*[o for n in names for o in service(n, b1)])
    pf = start_pilotfish(config(k8s, start_backend, idle_timeout="2s"))
    failures = []
    # up to the bound: two scoped watches per Service
    use_all(pf, names[:MAX], failures=failures)
    wait_for(lambda: open_watches(k8s) == 2 * MAX, 10, "a scoped pair per Service")
    assert not [q for q in k8s.requests() if namespace_wide(q)]
    # one more: the namespace is listed whole, then the scoped watches stop
    use_all(pf, names[:MAX + 1], failures=failures)
    wait_for(lambda: use_all(pf, names[:MAX + 1], failures=failures) or open_watches(k8s) == 2,
             15, "one namespace-wide pair instead of the scoped ones")
    # at most the scoped pairs, the new Service's pair and the namespace pair at once
    assert k8s.control("/state")["watches_peak"]["default"] <= 2 * (MAX + 1) + 2
    wide = [q for q in k8s.requests() if namespace_wide(q)]
    assert {(q["verb"], q["resource"]) for q in wide} == {
        ("list", "services"), ("watch", "services"), ("list", "endpointslices"),
        ("watch", "endpointslices")}, wide
    # more Services in use: no new watch and no new API request at all
    k8s.control("/watches/peak/reset", {})
    before = len(k8s.requests())
    use_all(pf, names, failures=failures)
    assert open_watches(k8s) == 2 and k8s.control("/state")["watches_peak"]["default"] == 2
    assert len(k8s.requests()) == before
    # endpoint changes still arrive, through the namespace watch
    k8s.apply(k8s_slice("svc1-1", "svc1", b2.port, ["127.0.0.1"]))
    wait_for(lambda: pf.get("/", host="svc1.default").header("X-Backend") == "b2", 10,
             "svc1's new endpoint through the namespace watch")
    # a Service created a moment ago may not be on the namespace watch yet: it is listed on
    # its own (the namespace watch's silence is no proof it is missing), then taken over
    k8s.apply(*service("late", b1))
    # the namespace watch may bring the Service a moment before its slice: 503 meanwhile
    wait_for(lambda: pf.get("/", host="late.default").header("X-Backend") == "b1", 10,
             "late served")
    wait_for(lambda: open_watches(k8s) == 2, 10, "the namespace watch to take late over")
    before = len(k8s.requests())
    # only svc0 stays in use: the others go idle, and svc0 gets its own watches back
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        use_all(pf, ["svc0"], failures=failures)
        since = k8s.requests()[before:]
        rejoined = [q for q in since if "svc0" in q["query"]]
        if len([q for q in rejoined if q["verb"] == "watch"]) == 2 and open_watches(k8s) == 2:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"svc0 never went back to its own watches: {k8s.control('/state')}")
    # its own lists came first, the namespace watches ended after them
    assert [q["verb"] for q in rejoined].count("list") == 2, rejoined
    last_wide = max(q["time"] for q in k8s.requests() if namespace_wide(q))
    assert last_wide < min(q["time"] for q in rejoined)
    # endpoint changes arrive on the scoped watches again
    k8s.apply(k8s_slice("svc0-1", "svc0", b2.port, ["127.0.0.1"]))
    wait_for(lambda: use_all(pf, ["svc0"]) or
             pf.get("/", host="svc0.default").header("X-Backend") == "b2", 10,
             "svc0's new endpoint through its own watch")
    assert failures == [], failures
    # the same RBAC as before: get/list/watch of services and endpointslices
    assert {(q["verb"], q["resource"], q["namespace"]) for q in k8s.requests()} <= {
        (v, r, "default") for v in ("list", "watch") for r in ("services", "endpointslices")}


def test_hundreds_of_services_churned_through_a_small_idle_timeout(k8s, start_backend,
                                                                   start_pilotfish):
    """The suite's short version of bench/ondemand_churn.sh: 240 Services created, used,
    deleted and let go in batches; everything answers, slots and watches stay bounded."""
    b1 = start_backend("b1")
    k8s.control("/settings", {"max_log": 2000})
    pf = start_pilotfish(config(k8s, start_backend, idle_timeout="1s", negative_ttl="1s",
                                max_clusters=192))
    failures, batch, rss = [], 24, []
    for round_ in range(10):
        names = [f"c{round_}x{i}" for i in range(batch)]
        k8s.apply(*[o for n in names for o in service(n, b1)])
        use_all(pf, names, failures=failures)
        use_all(pf, names, failures=failures)
        k8s.apply(*[("delete", kind, "default", n if kind == "services" else f"{n}-1")
                    for n in names for kind in ("services", "endpointslices")])
        rss.append(pf.rss_bytes())
        # scoped pairs only for Services the namespace watch did not hold yet (this batch's
        # and the last's at most), and the namespace pair
        assert open_watches(k8s) <= 4 * batch + 2
    assert failures == [], failures[:10]
    # all let go: no discovered cluster, only what the namespace needs watched
    wait_for(lambda: not [c for c in pf.admin_json("/clusters")["clusters"]
                          if c.get("source") == "kubernetes"], 15, "idle clusters to go")
    wait_for(lambda: open_watches(k8s) == 0, 15, "the watches to stop")
    k8s.apply(*service("last", b1))
    assert pf.get("/", host="last.default").header("X-Backend") == "b1"
    print(f"RSS by round (MiB): {[round(r / 2**20, 1) for r in rss]}")
    assert rss[-1] < rss[2] + 16 * 2**20, rss
