"""No storms against the API server: after every watch of several sidecars got its 410 at
once, their relists are spread at random (timestamps at the fake API server); a 429 with
Retry-After is honoured. Real pilotfish processes against test/fakes/k8s_api.py on
127.0.0.1."""

from harness import k8s_service, k8s_slice, listener, make_config, route, wait_for


def web_cluster(name, service):
    return {"name": name, "kubernetes": {"service": service, "port": "http"}}


def lists_since(k8s, t0):
    return [r for r in k8s.requests() if r["verb"] == "list" and r["time"] >= t0]


def test_relists_after_a_fleet_wide_410_are_spread(k8s, start_backend, start_pilotfish):
    b1 = start_backend("b1")
    services = [f"s{i}" for i in range(4)]
    objs = []
    for s in services:
        objs += [k8s_service(s, [("http", 80)]), k8s_slice(f"{s}-1", s, b1.port, ["127.0.0.1"])]
    k8s.apply(*objs)
    clusters = [web_cluster(s, s) for s in services]

    def config():  # ports of its own for each sidecar
        return make_config([listener("main", [route("s0", prefix="/")])], clusters,
                           kubernetes=k8s.config(backoff={"base": "50ms", "max": "2s"}))

    # two sidecars, four Services each with two scoped watches: 16 watches
    sidecars = [start_pilotfish(config()) for _ in range(2)]
    t0 = max(r["time"] for r in k8s.requests())
    # while the watches are held, a change, then history compacted past every sidecar's
    # version: when the streams are cut, every watch gets 410 at once
    k8s.control("/stall", {"on": True})
    k8s.apply(k8s_slice("s0-2", "s0", b1.port, ["127.0.0.1"]))
    k8s.control("/compact", {"cut": True})
    k8s.control("/stall", {"on": False})
    wait_for(lambda: len(lists_since(k8s, t0)) >= 16, 20, "every watch to relist")
    times = sorted(r["time"] for r in lists_since(k8s, t0))[:16]
    spread = times[-1] - times[0]
    print(f"16 relists spread over {spread:.2f} s")
    # uniform over up to 2 s each: 16 draws within 0.3 s of each other are not by chance
    assert spread > 0.3, times
    for pf in sidecars:
        assert pf.get("/").status == 200


def test_too_many_requests_waits_for_retry_after(k8s, start_backend, start_pilotfish):
    b1 = start_backend("b1")
    k8s.apply(k8s_service("web", [("http", 80)]), k8s_slice("web-1", "web", b1.port,
                                                            ["127.0.0.1"]))
    cfg = make_config([listener("main", [route("web", prefix="/")])], [web_cluster("web", "web")],
                      kubernetes=k8s.config())
    pf = start_pilotfish(cfg)
    k8s.control("/throttle", {"count": 2, "retry_after": 2})
    k8s.control("/cut", {})  # both watches come back and get 429
    wait_for(lambda: len([r for r in k8s.requests() if r["code"] == 429]) >= 2, 10,
             "both watches to be throttled")
    throttled = [r for r in k8s.requests() if r["code"] == 429]

    def next_after(req):
        later = [r for r in k8s.requests() if r["time"] > req["time"] and
                 r["resource"] == req["resource"] and r["code"] == 200]
        return later[0] if later else None

    for req in throttled:
        nxt = wait_for(lambda: next_after(req), 15, f"{req['resource']} to come back")
        assert nxt["time"] - req["time"] >= 2.0, (req, nxt)  # backoff max is 500ms here
    assert "Retry-After 2s" in pf.stderr_text()
    assert pf.get("/").status == 200
