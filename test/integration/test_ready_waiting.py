"""/ready says what it waits for: a 503 names each first list still missing (Kubernetes
Services and EndpointSlices per namespace, HTTPRoute lists) and each cluster without its
first endpoint set, in the words of pilotfish's own log lines, so an operator can go from a
failing readiness probe to the log line that says why. Against the fake API server."""

import re

from harness import http_request, k8s_service, k8s_slice, listener, make_config, route, wait_for


def ready(pf):
    r = http_request(pf.admin_port, "GET", "/ready", timeout=2.0)
    return r.status, r.body.decode()


def waiting_for(body):
    """The "- " lines of a 503 body."""
    lines = body.splitlines()
    assert lines[0] == "not ready, waiting for:", body
    assert all(line.startswith("- ") for line in lines[1:]), body
    return [line[2:] for line in lines[1:]]


def test_ready_names_the_lists_it_waits_for_and_turns_200_when_they_arrive(
        k8s, start_backend, start_pilotfish):
    web, api = start_backend("web"), start_backend("api")
    k8s.apply(k8s_service("web", [("http", 80)]), k8s_slice("web-1", "web", web.port, ["127.0.0.1"]),
              k8s_service("api", [("http", 80)], namespace="shop"),
              k8s_slice("api-1", "api", api.port, ["127.0.0.1"], namespace="shop"))
    # RBAC without Services in "shop" and without HTTPRoutes in "default"
    k8s.control("/forbid", {"pairs": [["services", "shop"], ["httproutes", "default"]]})
    cfg = make_config(
        [listener("main", [route("api", host="api.local")])],
        [{"name": "api", "kubernetes": {"service": "api", "namespace": "shop", "port": "http"}}],
        kubernetes=k8s.config(auto_discover={"namespaces": ["default", "shop"]},
                              http_routes=True),
    )
    pf = start_pilotfish(cfg, wait_ready=False)

    def all_failed():
        status, body = ready(pf)
        pending = waiting_for(body) if status == 503 else []
        return len(pending) == 4 and all("; retrying)" in p for p in pending[:3])
    wait_for(all_failed, 15, "every refused list retried")
    status, body = ready(pf)
    assert status == 503, body
    pending = waiting_for(body)
    expected = ['kubernetes: list services in "shop" for Service api',
                'kubernetes: list services in "shop"',
                'kubernetes: list httproutes in "default"',
                "cluster=api: no endpoint set yet (Service api)"]
    assert [re.sub(r" \(failed \d+ times; retrying\)$", "", p) for p in pending] == expected, body
    # the log says the same words, with the reason (403 and the RBAC rule)
    log = pf.stderr_text()
    for what in ('kubernetes: list services in "shop": 403 Forbidden',
                 'kubernetes: list httproutes in "default": 403 Forbidden'):
        assert what in log, log

    # Services allowed again: only the HTTPRoute list is left
    k8s.control("/forbid", {"pairs": [["httproutes", "default"]]})
    wait_for(lambda: len(waiting_for(ready(pf)[1])) == 1, 15, "the Service lists and set in")
    assert waiting_for(ready(pf)[1])[0].startswith('kubernetes: list httproutes in "default"')

    k8s.control("/forbid", {"pairs": []})
    wait_for(lambda: ready(pf) == (200, "ready\n"), 15, "/ready 200 once every list is in")
    assert pf.get("/", host="api.local").header("X-Backend") == "api"
