"""HTTPRoutes (kubernetes.http_routes) and readiness, a missing CRD and spec.hostnames, against
the fake API server and the real kubectl: /ready waits for the first HTTPRoute list, so no
request takes the plain Service route before the rules apply; an API without the HTTPRoute
kind says so once, does not hold /ready, shows it in /clusters and picks the kind up when it
is installed (and drops its routes when it is deleted); hostnames are ignored for Service
parents, as the Gateway API's mesh binding (GEP-1294) says."""

import os

import pytest

from harness import (
    KUBECTL_BIN,
    K8sApi,
    cluster_status,
    http_request,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    route,
    run_kubectl,
    wait_for,
)
from test_kubernetes_httproutes import backend_ref, httproute, kubectl_apply

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL_BIN),
                                reason="kubectl not installed (make tools)")


def services(k8s, start_backend, names):
    backends = {n: start_backend(n) for n in names}
    k8s.apply(*[o for n, b in backends.items()
                for o in (k8s_service(n, [("http", 80)]),
                          k8s_slice(f"{n}-1", n, b.port, ["127.0.0.1"]))])
    return backends


def sidecar(k8s, start_pilotfish, **kw):
    cfg = make_config([listener("main", [route("none", host="none.local")])],
                      [{"name": "none", "endpoints": []}],
                      kubernetes=k8s.config(auto_discover={"namespaces": ["default"]},
                                            http_routes=True, **kw))
    return start_pilotfish(cfg, wait_ready=False)


def ready(pf):
    return http_request(pf.admin_port, "GET", "/ready", timeout=2.0).status


def route_lists(pf):
    return pf.admin_json("/clusters")["http_routes"]["lists"]


def backends_hit(pf, n=20, host="web"):
    return {(r.status, r.header("X-Backend")) for r in (pf.get("/", host=host) for _ in range(n))}


def test_ready_waits_for_the_first_httproute_list(tmp_path, start_backend, start_pilotfish):
    """While the HTTPRoute list fails (403 here, as when RBAC lacks it) the Services are
    listed and routable, but /ready stays 503 with the list retried; once it succeeds
    /ready turns 200 and the very first request follows the HTTPRoute, never the plain
    Service route."""
    k8s = K8sApi(str(tmp_path)).start()
    try:
        services(k8s, start_backend, ["web", "web-v2"])
        k8s.apply(httproute("to-v2", [{"backendRefs": [backend_ref("web-v2")]}]))
        k8s.control("/forbid", {"pairs": [["httproutes", "default"]]})
        pf = sidecar(k8s, start_pilotfish)
        wait_for(lambda: cluster_status(pf, "web.default:80"), 10, "the web cluster")

        def refused_lists():
            return len([r for r in k8s.requests()
                        if r["resource"] == "httproutes" and r["verb"] == "list"]) >= 3
        wait_for(refused_lists, 10, "pilotfish to retry the refused HTTPRoute list")
        assert ready(pf) == 503
        assert [li["synced"] for li in route_lists(pf)] == [False]
        k8s.control("/forbid", {"pairs": []})
        wait_for(lambda: ready(pf) == 200, 10, "/ready once the HTTPRoute list succeeds")
        assert backends_hit(pf) == {(200, "web-v2")}
        assert route_lists(pf)[0]["synced"] is True
    finally:
        k8s.stop()


def test_a_missing_httproute_kind_is_said_once_and_picked_up_when_installed(
        tmp_path, start_backend, start_pilotfish):
    """The API server has no HTTPRoute kind (404): one log line, /ready not held, the state
    under http_routes in /clusters, slow rechecks; kubectl sees the same API. Installing the
    kind makes routes apply without a restart; deleting it again removes them."""
    k8s = K8sApi(str(tmp_path), args=["--without-kind", "httproutes"]).start()
    try:
        kc = k8s.kubeconfig()
        cache = ["--cache-dir", str(tmp_path / "kubectl-cache")]
        rc, out, err = run_kubectl(kc, *cache, "get", "httproutes")
        assert rc != 0 and 'the server doesn\'t have a resource type "httproutes"' in err, err
        services(k8s, start_backend, ["web", "web-v2"])
        pf = sidecar(k8s, start_pilotfish, http_routes_recheck="1s")
        pf.wait_ready(10)

        def misses():
            return len([r for r in k8s.requests()
                        if r["resource"] == "httproutes" and r["code"] == 404])
        wait_for(lambda: misses() >= 3, 10, "three HTTPRoute lists answered 404")
        assert pf.stderr_text().count("is not installed") == 1, pf.stderr_text()
        assert [(li["namespace"], li["state"], li["synced"]) for li in route_lists(pf)] == \
            [("default", "not installed", True)]
        assert ready(pf) == 200
        assert backends_hit(pf) == {(200, "web")}

        k8s.control("/kinds", {"install": ["httproutes"]})
        assert run_kubectl(kc, *cache, "get", "httproutes")[0] == 0
        kubectl_apply(k8s, tmp_path, httproute("to-v2", [{"backendRefs": [backend_ref("web-v2")]}]))
        # the next recheck lists it: within http_routes_recheck (1s), bounded here generously
        wait_for(lambda: backends_hit(pf, 5) == {(200, "web-v2")}, 10, "the route to apply")
        assert route_lists(pf)[0]["state"] in ("watching", "listing")
        assert "is installed now" in pf.stderr_text()

        k8s.control("/kinds", {"delete": ["httproutes"]})
        wait_for(lambda: backends_hit(pf, 5) == {(200, "web")}, 10,
                 "the route to go with its kind")
        wait_for(lambda: route_lists(pf)[0]["state"] == "not installed", 10, "the state")
        assert pf.stderr_text().count("is not installed") == 2
        assert ready(pf) == 200
    finally:
        k8s.stop()


def test_hostnames_are_ignored_for_service_parents(tmp_path, start_backend, start_pilotfish):
    """GEP-1294: a Service parent is selected by the Service a request names; hostnames
    (exact or wildcard) neither restrict nor widen the route, and /clusters and the log say
    they are ignored."""
    k8s = K8sApi(str(tmp_path)).start()
    try:
        services(k8s, start_backend, ["web", "web-v2"])
        doc = httproute("named", [{"backendRefs": [backend_ref("web-v2")]}])
        doc["spec"]["hostnames"] = ["shop.example.com", "*.example.com"]
        kubectl_apply(k8s, tmp_path, doc)
        pf = sidecar(k8s, start_pilotfish)
        pf.wait_ready(10)
        assert backends_hit(pf, 10, host="web") == {(200, "web-v2")}
        assert backends_hit(pf, 10, host="web.default.svc.cluster.local") == {(200, "web-v2")}
        # a name only the hostnames mention is no Service: not routed by this HTTPRoute
        assert pf.get("/", host="shop.example.com").header("X-Backend") != "web-v2"
        (entry,) = pf.admin_json("/clusters")["http_routes"]["routes"]
        assert entry["applied"] is True
        assert entry["hostnames"] == ["shop.example.com", "*.example.com"]
        assert "GEP-1294" in entry["hostnames_ignored"]
        assert "HTTPRoute default/named: spec.hostnames is ignored" in pf.stderr_text()
    finally:
        k8s.stop()


def test_backend_refs_use_the_configured_kubernetes_cluster_of_their_service_port(
        tmp_path, start_backend, start_pilotfish):
    """A backendRef naming the Service port a configured cluster (clusters[].kubernetes) is
    for goes through that cluster, with the settings written for it, by port number or by
    port name; a Service port no configured cluster is for goes through the discovered
    one."""
    k8s = K8sApi(str(tmp_path)).start()
    try:
        services(k8s, start_backend, ["web", "web-v2", "web-v3", "web-v4"])
        k8s.apply(httproute("split", [
            {"matches": [{"path": {"type": "PathPrefix", "value": f"/{n}"}}],
             "backendRefs": [backend_ref(f"web-{n}")]} for n in ("v2", "v3", "v4")]))
        cfg = make_config(
            [listener("main", [route("none", host="none.local")])],
            [{"name": "none", "endpoints": []},
             {"name": "v2-conf", "kubernetes": {"service": "web-v2", "port": 80}},
             {"name": "v3-conf", "kubernetes": {"service": "web-v3", "port": "http"}}],
            kubernetes=k8s.config(auto_discover={"namespaces": ["default"]}, http_routes=True))
        pf = start_pilotfish(cfg, wait_ready=False)
        pf.wait_ready(10)
        for n in ("v2", "v3", "v4"):
            wait_for(lambda n=n: pf.get(f"/{n}", host="web").header("X-Backend") == f"web-{n}",
                     10, f"/{n} to reach web-{n}")

        def served(name):
            c = cluster_status(pf, name)
            return sum(e.get("requests_total", 0) for e in c["endpoints"]) if c else None
        before = {c: served(c) for c in ("v2-conf", "v3-conf", "web-v2.default:80",
                                         "web-v3.default:80", "web-v4.default:80")}
        for n in ("v2", "v3", "v4"):
            for _ in range(10):
                assert pf.get(f"/{n}", host="web").header("X-Backend") == f"web-{n}"
        after = {c: served(c) for c in before}
        grew = {c: after[c] - before[c] for c in before}
        assert grew == {"v2-conf": 10, "v3-conf": 10, "web-v2.default:80": 0,
                        "web-v3.default:80": 0, "web-v4.default:80": 10}, grew
    finally:
        k8s.stop()
