"""Cluster slots of auto-discovered Services are freed and reused (issue 16, defect 4): a
Service that comes and goes leaves nothing behind, neither its slot (bounded here by a small
max_clusters) nor its pools, health checks, metric series or routes. Against the fake API
server (test/fakes/k8s_api.py), every part real, on 127.0.0.1."""

from harness import cluster_status, k8s_service, k8s_slice, listener, make_config, route
from harness import wait_for


def series_of(pf, prefix):
    """Exposition lines (not comments) whose labels name a cluster starting with prefix."""
    text = pf.admin("GET", "/stats/prometheus").body.decode()
    return [ln for ln in text.splitlines()
            if not ln.startswith("#") and f'cluster="{prefix}' in ln]


def exposition_lines(pf):
    return len(pf.admin("GET", "/stats/prometheus").body.decode().splitlines())


def test_removed_services_free_their_slots_for_new_ones(k8s, start_backend, start_pilotfish):
    b1, fallback = start_backend("b1"), start_backend("fallback")
    max_clusters, rounds, batch = 24, 6, 20  # 120 Services over the run, 24 slots
    cfg = make_config(
        [listener("main", [route("fallback", host="fallback.local")])],
        [{"name": "fallback", "endpoints": [fallback.address]}],
        kubernetes=k8s.config(auto_discover={
            "namespaces": ["default"], "max_clusters": max_clusters,
            # health checks and outlier detection: each cluster gets a pf_health to free too
            "cluster": {"health_check": {"type": "tcp", "interval": "1s"},
                        "outlier_detection": {"consecutive_5xx": 5}}}))
    pf = start_pilotfish(cfg, workers=2)
    lines_after_first = None
    for r in range(rounds):
        names = [f"churn{r}-{i}" for i in range(batch)]
        objs = []
        for n in names:
            objs += [k8s_service(n, [("http", 80)]),
                     k8s_slice(f"{n}-1", n, b1.port, ["127.0.0.1"])]
        k8s.apply(*objs)
        for n in names:
            # every Service routes (none was left out for want of a slot), and each request
            # leaves a pooled upstream connection in some worker's state for the cluster
            wait_for(lambda: pf.get("/", host=f"{n}.default").status == 200, 10, f"{n} routes")
            r2 = pf.get("/", host=f"{n}.default.svc.cluster.local:80")
            assert r2.status == 200 and r2.header("X-Backend") == "b1", r2
        assert series_of(pf, f"churn{r}-")
        k8s.apply(*[("delete", "services", "default", n) for n in names],
                  *[("delete", "endpointslices", "default", f"{n}-1") for n in names])
        for n in names:
            wait_for(lambda: pf.get("/", host=f"{n}.default").status == 404, 10, f"{n} gone")
        clusters = [c["name"] for c in pf.admin_json("/clusters")["clusters"]]
        assert not [c for c in clusters if c.startswith(f"churn{r}-")], clusters
        # freed once no worker uses them: their series leave the exposition
        wait_for(lambda: not series_of(pf, f"churn{r}-"), 10, f"round {r}'s series to go")
        if lines_after_first is None:
            lines_after_first = exposition_lines(pf)
    # the exposition did not grow with the Services that came and went
    assert exposition_lines(pf) == lines_after_first
    k8s.apply(k8s_service("late", [("http", 80)]), k8s_slice("late-1", "late", b1.port,
                                                              ["127.0.0.1"]))
    wait_for(lambda: pf.get("/", host="late.default").status == 200, 10, "a new Service to route")
    assert cluster_status(pf, "late.default:80")["source"] == "kubernetes"
    assert "max_clusters" not in pf.stderr_text()
