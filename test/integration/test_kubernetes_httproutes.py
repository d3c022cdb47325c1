"""Gateway API HTTPRoutes (kubernetes.http_routes) against the fake API server, driven with the
real kubectl: routes attached to a discovered Service (parentRefs kind Service) split, match,
edit and rewrite its traffic; changes are followed within a second without failing a
request; what pilotfish cannot honour is skipped with its reason in the log and /clusters."""

import collections
import http.client
import json
import os
import ssl
import threading
import time

import pytest

from harness import (
    KUBECTL_BIN,
    cluster_status,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    route,
    run_kubectl,
    wait_for,
)

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL_BIN),
                                reason="kubectl not installed (make tools)")


def kubectl_apply(k8s, tmp_path, doc):
    path = tmp_path / f"{doc['metadata']['name']}.json"
    path.write_text(json.dumps(doc))
    # the fake serves no OpenAPI documents for kubectl's client-side validation
    rc, out, err = run_kubectl(k8s.kubeconfig(), "apply", "--validate=false", "-f", str(path))
    assert rc == 0, err
    return out


def httproute(name, rules, parent="web", port=80, namespace="default"):
    parent_ref = {"group": "", "kind": "Service", "name": parent}
    if port:
        parent_ref["port"] = port
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [parent_ref], "rules": rules}}


def backend_ref(name, weight=None, port=80, **kw):
    d = dict({"name": name, "port": port}, **kw)
    if weight is not None:
        d["weight"] = weight
    return d


def services(k8s, start_backend, names):
    """A Service per name (port 80, "http") with one backend of the same name."""
    backends = {}
    objs = []
    for n in names:
        b = backends[n] = start_backend(n)
        objs += [k8s_service(n, [("http", 80)]),
                 k8s_slice(f"{n}-1", n, b.port, ["127.0.0.1"])]
    k8s.apply(*objs)
    return backends


def start(k8s, start_backend, start_pilotfish, names, mode="watch_all"):
    backends = services(k8s, start_backend, names)
    fallback = start_backend("fallback")
    cfg = make_config([listener("main", [route("fallback", host="fallback.local")])],
                      [{"name": "fallback", "endpoints": [fallback.address]}],
                      kubernetes=k8s.config(auto_discover={"namespaces": ["default"],
                                                           "mode": mode},
                                            http_routes=True))
    pf = start_pilotfish(cfg)
    for n in names if mode == "watch_all" else []:
        wait_for(lambda n=n: cluster_status(pf, f"{n}.default:80"), 10, f"the {n} cluster")
    return pf, backends


def hits(pf, n, host="web", path="/", headers=None):
    seen = collections.Counter()
    for _ in range(n):
        r = pf.get(path, host=host, headers=headers)
        seen[(r.status, r.header("X-Backend"))] += 1
    return seen


class Load:
    """One keep-alive client sending requests to `host` until stopped; every answer is
    kept, so a test can say no request failed during a change."""

    def __init__(self, pf, host="web"):
        self.pf, self.host = pf, host
        self.answers = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_flag.is_set():
            try:
                r = self.pf.get("/", host=self.host)
                self.answers.append((time.time(), r.status, r.header("X-Backend")))
            except OSError as e:
                self.answers.append((time.time(), 0, repr(e)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(10)

    def first_after(self, t0, want, window=20):
        """Seconds from t0 (wall clock) to the first of `window` answers in a row that all
        came from backends in want; None until there are such answers."""
        run, first = 0, None
        for t, status, backend in list(self.answers):
            if t < t0:
                continue
            if status == 200 and backend in want:
                first = t if run == 0 else first
                run += 1
            else:
                run = 0
            if run == window:
                return first - t0
        return None

    def follows(self, k8s, want):
        """Seconds from the watch event of the API server's latest change leaving the fake
        to the traffic following it."""
        rv = str(k8s.control("/state")["resourceVersion"])
        sent = wait_for(lambda: k8s.control("/sent").get(rv), 10, "the event to go out")
        return wait_for(lambda: self.first_after(sent, want), 10, f"traffic to go to {want}")


def test_fake_api_server_serves_httproutes_like_the_api(k8s, tmp_path):
    """kubectl apply (create, then patch), get and delete; list and watch with
    resourceVersion, bookmarks, and 410 for a compacted one, as for the other kinds."""
    doc = httproute("r1", [{"backendRefs": [backend_ref("web")]}])
    assert "created" in kubectl_apply(k8s, tmp_path, doc)
    doc["spec"]["rules"][0]["backendRefs"][0]["weight"] = 7
    assert "configured" in kubectl_apply(k8s, tmp_path, doc)
    kc = k8s.kubeconfig()
    rc, out, err = run_kubectl(kc, "get", "httproute", "r1", "-o", "json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["kind"] == "HTTPRoute" and got["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7
    rc, out, err = run_kubectl(kc, "get", "httproutes", "-A", "-o", "name")
    assert rc == 0 and out.split() == ["httproute.gateway.networking.k8s.io/r1"], (out, err)

    ctx = ssl.create_default_context(cafile=k8s.ca_file)
    auth = {"Authorization": "Bearer test-token"}
    base = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes"

    def get(path):
        c = http.client.HTTPSConnection("127.0.0.1", k8s.port, context=ctx, timeout=10)
        c.request("GET", path, headers=auth)
        return c, c.getresponse()

    c, r = get("/apis")
    assert "gateway.networking.k8s.io" in [g["name"] for g in json.loads(r.read())["groups"]]
    c.close()
    c, r = get(base)
    listed = json.loads(r.read())
    c.close()
    assert listed["kind"] == "HTTPRouteList" and [i["metadata"]["name"]
                                                  for i in listed["items"]] == ["r1"]
    rv = listed["metadata"]["resourceVersion"]
    c, r = get(f"{base}?watch=1&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=60")
    assert run_kubectl(kc, "delete", "httproute", "r1")[0] == 0
    # bookmarks come every second, so one may precede the deletion on a slow machine
    events = []
    while len(events) < 100 and not ("DELETED" in [e["type"] for e in events] and
                                     events[-1]["type"] == "BOOKMARK"):
        line = r.readline()
        assert line, f"the watch ended early: {events}"
        events.append(json.loads(line))
    c.close()
    deleted = [e for e in events if e["type"] == "DELETED"]
    assert len(deleted) == 1 and deleted[0]["object"]["metadata"]["name"] == "r1", events
    assert {e["type"] for e in events} == {"DELETED", "BOOKMARK"}, events
    assert int(deleted[0]["object"]["metadata"]["resourceVersion"]) > int(rv)
    k8s.control("/compact", {})
    c, r = get(f"{base}?watch=1&resourceVersion={rv}")
    gone = json.loads(r.readline())
    c.close()
    assert gone["type"] == "ERROR" and gone["object"]["code"] == 410


def test_weights_follow_create_change_and_delete_within_a_second(k8s, tmp_path, start_backend,
                                                                 start_pilotfish):
    pf, _ = start(k8s, start_backend, start_pilotfish, ["web", "web-v1", "web-v2"])
    assert hits(pf, 5) == {(200, "web"): 5}  # the plain Service route
    split = httproute("web-split", [{"backendRefs": [backend_ref("web-v1", 90),
                                                     backend_ref("web-v2", 10)]}])
    with Load(pf) as load:
        kubectl_apply(k8s, tmp_path, split)
        created = load.follows(k8s, {"web-v1", "web-v2"})
    counts = hits(pf, 1000)
    v2 = counts[(200, "web-v2")]
    assert counts[(200, "web-v1")] + v2 == 1000, counts
    assert 60 <= v2 <= 140, counts  # 10% of 1000, four standard deviations either way
    # all of it to v2, then the route goes: back to the plain Service route
    split["spec"]["rules"][0]["backendRefs"][0]["weight"] = 0
    with Load(pf) as load:
        kubectl_apply(k8s, tmp_path, split)
        changed = load.follows(k8s, {"web-v2"})
        assert run_kubectl(k8s.kubeconfig(), "delete", "httproute", "web-split")[0] == 0
        deleted = load.follows(k8s, {"web"})
    failed = [a for a in load.answers if a[1] != 200]
    assert not failed, failed[:5]
    print(f"traffic followed the watch event: create {created * 1000:.1f} ms, weights "
          f"{changed * 1000:.1f} ms, delete {deleted * 1000:.1f} ms")
    assert created < 1.0 and changed < 1.0 and deleted < 1.0


def test_header_match_request_header_edits_and_rewrite_reach_the_backend(k8s, tmp_path,
                                                                         start_backend,
                                                                         start_pilotfish):
    pf, _ = start(k8s, start_backend, start_pilotfish, ["web", "web-v1", "web-v2"])
    canary = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                     "headers": [{"name": "X-Canary", "value": "yes"}]}],
        "filters": [
            {"type": "RequestHeaderModifier",
             "requestHeaderModifier": {"set": [{"name": "X-Route", "value": "canary 100%"}],
                                       "add": [{"name": "X-Added", "value": "1"}],
                                       "remove": ["X-Drop"]}},
            {"type": "ResponseHeaderModifier",
             "responseHeaderModifier": {"set": [{"name": "X-Served-By", "value": "canary"}]}},
            {"type": "URLRewrite",
             "urlRewrite": {"hostname": "rewritten.example",
                            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
        "backendRefs": [backend_ref("web-v2")]}
    stable = {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
              "backendRefs": [backend_ref("web-v1")]}
    items = {"matches": [{"path": {"type": "RegularExpression", "value": "/items/[0-9]+"}}],
             "backendRefs": [backend_ref("web-v2")]}
    moved = {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
             "filters": [{"type": "RequestRedirect",
                          "requestRedirect": {"hostname": "new.example", "statusCode": 301}}]}
    # the less specific rule first: precedence (more header matches) puts canary ahead
    kubectl_apply(k8s, tmp_path, httproute("web-canary", [stable, canary, items, moved]))
    wait_for(lambda: pf.get("/api/x", host="web").header("X-Backend") == "web-v1", 10,
             "the HTTPRoute to apply")
    r = pf.get("/api/headers", host="web.default.svc",
               headers={"X-Canary": "yes", "X-Drop": "secret"})
    assert r.status == 200 and r.header("X-Backend") == "web-v2", r
    assert r.header("X-Served-By") == "canary"
    seen = r.json()
    assert seen["target"] == "/headers"  # /api replaced by /
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["host"] == "rewritten.example"
    assert headers["x-route"] == "canary 100%" and headers["x-added"] == "1"
    assert "x-drop" not in headers
    # without the header: the other rule; a path outside /api's segments: no rule, 404
    r = pf.get("/api/headers", host="web", headers={"X-Canary": "no"})
    assert r.header("X-Backend") == "web-v1" and r.header("X-Served-By") is None
    assert pf.get("/apix", host="web").status == 404
    assert pf.get("/api", host="web").header("X-Backend") == "web-v1"
    assert pf.get("/items/42", host="web").header("X-Backend") == "web-v2"
    assert pf.get("/items/x", host="web").status == 404
    r = pf.get("/old/page?q=1", host="web")
    assert r.status == 301 and r.header("Location") == "http://new.example/old/page?q=1", r
    # other Services keep their plain routes
    assert pf.get("/apix", host="web-v1").header("X-Backend") == "web-v1"


def test_routes_pilotfish_cannot_honour_are_skipped_with_their_reason(k8s, tmp_path,
                                                                      start_backend,
                                                                      start_pilotfish):
    pf, _ = start(k8s, start_backend, start_pilotfish, ["web", "web-v1", "other"])
    good = {"matches": [{"path": {"type": "PathPrefix", "value": "/ok"}}],
            "backendRefs": [backend_ref("web-v1")]}
    ext = {"matches": [{"path": {"type": "PathPrefix", "value": "/ext"}}],
           "filters": [{"type": "ExtensionRef",
                        "extensionRef": {"group": "x.example", "kind": "Auth", "name": "a"}}],
           "backendRefs": [backend_ref("web-v1")]}
    imported = {"matches": [{"path": {"type": "PathPrefix", "value": "/imp"}}],
                "backendRefs": [backend_ref("web-v1", group="multicluster.x-k8s.io",
                                            kind="ServiceImport")]}
    evil = {"matches": [{"path": {"type": "PathPrefix", "value": "/re"},
                         "headers": [{"type": "RegularExpression", "name": "x-id",
                                      "value": "(unclosed"}]}],
            "backendRefs": [backend_ref("web-v1")]}
    kubectl_apply(k8s, tmp_path, httproute("mixed", [good, ext, imported, evil]))
    gateway_only = httproute("gw", [good])
    gateway_only["spec"]["parentRefs"] = [{"name": "edge"}]  # a Gateway, not a Service
    kubectl_apply(k8s, tmp_path, gateway_only)
    wait_for(lambda: pf.get("/ok", host="web").header("X-Backend") == "web-v1", 10,
             "the good rule to apply")
    # the skipped rules take no traffic: nothing else matches them
    assert pf.get("/ext", host="web").status == 404
    assert pf.get("/imp", host="web").status == 404

    def reported():
        routes = {(r["namespace"], r["name"]): r
                  for r in pf.admin_json("/clusters")["http_routes"]["routes"]}
        return routes if len(routes) == 2 else None

    routes = wait_for(reported, 10, "/clusters to list both HTTPRoutes")
    mixed = routes[("default", "mixed")]
    assert mixed["applied"] and mixed["parents"] == ["default/web:80"]
    rules = {r["rule"]: r for r in mixed["rules"]}
    assert rules[0]["applied"] and rules[0]["reason"] is None
    assert "filter type ExtensionRef is not supported" in rules[1]["reason"]
    assert "kind multicluster.x-k8s.io/ServiceImport is not supported" in rules[2]["reason"]
    assert "bad regex" in rules[3]["reason"], rules[3]
    gw = routes[("default", "gw")]
    assert not gw["applied"] and "no parentRef names a Service" in gw["reason"]
    log = pf.stderr_text()
    for why in ("filter type ExtensionRef is not supported", "ServiceImport is not supported",
                "bad regex", "no parentRef names a Service"):
        assert why in log, why
    assert "HTTPRoute default/mixed rule skipped" in log


def test_on_demand_sidecars_watch_the_backends_a_route_names(k8s, tmp_path, start_backend,
                                                            start_pilotfish):
    """The chart's default mode: only Services requests name are watched. A route on one
    brings its backend Services in, and they stay while the route sends them traffic."""
    kubectl_apply(k8s, tmp_path, httproute("web-v2-only", [
        {"backendRefs": [backend_ref("web-v2")]}]))
    pf, _ = start(k8s, start_backend, start_pilotfish, ["web", "web-v2"], mode="on_demand")
    assert pf.get("/", host="web").status == 200  # the first request waits for web
    wait_for(lambda: pf.get("/", host="web").header("X-Backend") == "web-v2", 10,
             "the route's backend to be watched and used")
    assert hits(pf, 20) == {(200, "web-v2"): 20}
    watched = {r["query"].split("metadata.name%3D")[-1].split("&")[0]
               for r in k8s.requests() if r["resource"] == "services" and r["verb"] == "list"}
    assert watched == {"web", "web-v2"}, watched
