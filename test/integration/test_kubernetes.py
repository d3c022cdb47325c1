"""Kubernetes discovery against the fake API server (test/fakes/k8s_api.py), which the first
test proves faithful with the real kubectl. Each scenario asserts the endpoint set pilotfish
publishes (/clusters) and where real requests go. Backends all listen on 127.0.0.1, each on
its own port, so each gets its own EndpointSlice (named port "http", resolved per slice)."""

import collections
import json
import os
import subprocess
import threading
import time

import pytest

from harness import (
    KUBECTL_BIN,
    Dnsmasq,
    cluster_status,
    free_port,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    metric_sum,
    route,
    run_kubectl,
    wait_for,
)


def k8s_cluster(name, service, port="http", **kw):
    d = {"name": name, "kubernetes": dict({"service": service, "port": port}, **kw)}
    return d


def k8s_config(api, clusters, routes=None, **k8s_kw):
    routes = routes or [route(clusters[0]["name"], prefix="/")]
    return make_config([listener("main", routes)], clusters, kubernetes=api.config(**k8s_kw))


def addresses(pf, name):
    c = cluster_status(pf, name)
    return sorted(e["address"] for e in c["endpoints"]) if c else None


def wait_addresses(pf, name, want, timeout=10.0):
    want = sorted(want)
    wait_for(lambda: addresses(pf, name) == want, timeout, f"{name} endpoints == {want}")


def backends_hit(pf, n=20, host=None):
    seen = collections.Counter()
    for _ in range(n):
        r = pf.get("/", host=host)
        assert r.status == 200, r
        seen[r.header("X-Backend")] += 1
    return seen


def slice_for(name, backend, service="web", ready=True, **cond):
    conditions = dict({"ready": ready}, **cond)
    return k8s_slice(f"{service}-{name}", service, backend.port, [("127.0.0.1", conditions)])


# ---- the fake is faithful: the real kubectl against it -------------------------------------


@pytest.mark.skipif(not os.path.exists(KUBECTL_BIN), reason="kubectl not installed (make tools)")
def test_fake_api_server_answers_the_real_kubectl(k8s):
    k8s.apply(
        k8s_service("web", [("http", 80)]),
        k8s_slice("web-a", "web", 8080, ["10.0.0.1"]),
        k8s_slice("api-a", "api", 9090, ["10.0.1.1"], namespace="shop"),
    )
    kubeconfig = k8s.kubeconfig()
    rc, out, err = run_kubectl(kubeconfig, "get", "endpointslices", "-A", "--request-timeout=10s")
    assert rc == 0, err
    assert "web-a" in out and "api-a" in out and "shop" in out, out
    rc, out, err = run_kubectl(kubeconfig, "get", "services", "-n", "default", "-o", "json")
    assert rc == 0, err
    assert [i["metadata"]["name"] for i in json.loads(out)["items"]] == ["web"]
    # the selectors on-demand discovery uses, as kubectl sends them
    rc, out, err = run_kubectl(kubeconfig, "get", "endpointslices", "-A", "-o", "name",
                               "-l", "kubernetes.io/service-name=web")
    assert rc == 0 and out.split() == ["endpointslice.discovery.k8s.io/web-a"], (out, err)
    rc, out, err = run_kubectl(kubeconfig, "get", "endpointslices", "-A", "-o", "name",
                               "-l", "kubernetes.io/service-name!=web")
    assert rc == 0 and out.split() == ["endpointslice.discovery.k8s.io/api-a"], (out, err)
    rc, out, err = run_kubectl(kubeconfig, "get", "services", "-n", "default", "-o", "name",
                               "--field-selector", "metadata.name=web")
    assert rc == 0 and out.split() == ["service/web"], (out, err)
    rc, out, err = run_kubectl(kubeconfig, "get", "services", "-n", "default", "-o", "name",
                               "--field-selector", "metadata.name=nope")
    assert rc == 0 and out.strip() == "", (out, err)
    rc, out, err = run_kubectl(kubeconfig, "get", "services", "--field-selector", "spec.color=x")
    assert rc != 0 and "field selector" in err, err
    # a wrong token is refused the way kubectl expects
    rc, out, err = run_kubectl(k8s.kubeconfig(token="wrong"), "get", "services")
    assert rc != 0 and "Unauthorized" in err, err

    # a bounded watch sees a slice added after it started
    proc = subprocess.Popen(
        [KUBECTL_BIN, "--kubeconfig", kubeconfig, "get", "endpointslices", "-n", "default",
         "--watch", "--request-timeout=8s", "-o", "name"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(r["verb"] == "watch" for r in k8s.requests()), 10, "kubectl to watch")
        k8s.apply(k8s_slice("web-b", "web", 8080, ["10.0.0.2"]))
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "endpointslice.discovery.k8s.io/web-a" in out.decode(), (out, err)
    assert "endpointslice.discovery.k8s.io/web-b" in out.decode(), (out, err)
    verbs = {(r["verb"], r["resource"]) for r in k8s.requests()}
    assert ("watch", "endpointslices") in verbs and ("list", "services") in verbs
    # kubectl (Go's client) took h2 in ALPN: all of the above went over the HTTP/2 front
    st = k8s.control("/state")
    assert st["connections_total"].get("h2", 0) >= 1 and st["streams_total"] > 0, st
    assert "http/1.1" not in st["connections_total"], st


# ---- endpoints follow the slices -------------------------------------------------------------


def test_endpoints_added_and_removed_follow_the_slices(k8s, start_backend, start_pilotfish):
    b1, b2 = start_backend("b1"), start_backend("b2")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]))
    assert addresses(pf, "web") == [b1.address]
    c = cluster_status(pf, "web")
    assert c["source"] == "kubernetes"
    assert c["kubernetes"]["service"] == "web" and c["kubernetes"]["namespace"] == "default"
    assert c["kubernetes"]["synced"] and c["kubernetes"]["resource_version"]
    assert c["kubernetes"]["last_event"]
    assert backends_hit(pf) == {"b1": 20}

    k8s.apply(slice_for("2", b2))
    wait_addresses(pf, "web", [b1.address, b2.address])
    assert backends_hit(pf) == {"b1": 10, "b2": 10}

    k8s.apply(("delete", "endpointslices", "default", "web-1"))
    wait_addresses(pf, "web", [b2.address])
    assert backends_hit(pf) == {"b2": 20}

    k8s.apply(("delete", "endpointslices", "default", "web-2"))
    wait_addresses(pf, "web", [])
    assert pf.get("/").status == 503

    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_kubernetes_events_total", resource="endpointslices",
                      type="DELETED") == 2
    assert metric_sum(samples, "pilotfish_kubernetes_watch_connects_total") >= 2
    # the verbs used are the ones the RBAC of the chart grants: list and watch
    verbs = {(r["verb"], r["resource"], r["namespace"]) for r in k8s.requests()}
    assert verbs == {(v, r, "default") for v in ("list", "watch")
                     for r in ("services", "endpointslices")}, verbs


def test_rollout_under_load_has_no_failed_requests(k8s, start_backend, start_pilotfish):
    """Old pods terminate (still serving) before the new ones are ready: the terminating ones
    carry the traffic through the gap, so no request fails."""
    old = [start_backend("old1"), start_backend("old2")]
    new = [start_backend("new1"), start_backend("new2")]
    k8s.apply(k8s_service("web", [("http", 80)]), *(slice_for(b.name, b) for b in old))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]))
    failures, seen, stop = [], collections.Counter(), threading.Event()

    def load():
        deadline = time.monotonic() + 60
        for _ in range(20000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = pf.get("/")
                if r.status != 200:
                    failures.append(r.status)
                else:
                    seen[r.header("X-Backend")] += 1
            except OSError as exc:
                failures.append(repr(exc))

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_for(lambda: sum(seen.values()) > 20, 10, "load to run")
        # new pods exist but are not ready; old pods start terminating (ready=false, serving)
        k8s.apply(*(slice_for(b.name, b, ready=False) for b in new),
                  *(slice_for(b.name, b, ready=False, serving=True, terminating=True) for b in old))
        wait_for(lambda: cluster_status(pf, "web")["kubernetes"]["using_terminating"], 10,
                 "terminating endpoints to stand in")
        wait_addresses(pf, "web", [b.address for b in old])
        mark = sum(seen.values())
        wait_for(lambda: sum(seen.values()) > mark + 20, 10, "traffic during the gap")
        # the new pods become ready: they take over, terminating ones leave
        k8s.apply(*(slice_for(b.name, b) for b in new))
        wait_addresses(pf, "web", [b.address for b in new])
        mark = sum(seen.values())
        wait_for(lambda: sum(seen.values()) > mark + 20, 10, "traffic after the rollout")
        k8s.apply(*(("delete", "endpointslices", "default", f"web-{b.name}") for b in old))
        wait_addresses(pf, "web", [b.address for b in new])
    finally:
        stop.set()
        t.join(timeout=70)
    assert failures == [], failures[:10]
    assert all(seen[b.name] > 0 for b in old + new), seen


def test_endpoint_moving_between_slices_never_leaves_the_set(k8s, start_backend, start_pilotfish):
    b1, b2 = start_backend("b1"), start_backend("b2")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("a", b1), slice_for("other", b2))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]))
    wait_addresses(pf, "web", [b1.address, b2.address])
    version = cluster_status(pf, "web")["version"]
    # the endpoint shows up in a second slice, then leaves the first one
    k8s.apply(k8s_slice("web-b", "web", b1.port, ["127.0.0.1"]))
    k8s.apply(("delete", "endpointslices", "default", "web-a"))
    wait_for(lambda: cluster_status(pf, "web")["kubernetes"]["slices"] == 2, 10, "slice a gone")
    c = cluster_status(pf, "web")
    assert sorted(e["address"] for e in c["endpoints"]) == sorted([b1.address, b2.address])
    assert c["version"] == version, "the set was republished: the endpoint flapped"
    assert set(backends_hit(pf)) == {"b1", "b2"}


# ---- the watch stream misbehaves -----------------------------------------------------------------


def test_stream_cut_mid_event_resumes_from_the_last_version(k8s, start_backend, start_pilotfish):
    b1, b2 = start_backend("b1"), start_backend("b2")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]))
    # both streams open at the fake, so that the cut reaches both (a watch that arrives
    # after it is not cut)
    wait_for(lambda: k8s.control("/state")["watchers"] >= 2, 10, "both watches to be open")
    connects = metric_sum(pf.metrics(), "pilotfish_kubernetes_watch_connects_total")
    k8s.control("/cut", {"mid_event": True})
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_kubernetes_watch_connects_total")
             >= connects + 2, 10, "both watches to reconnect")
    assert addresses(pf, "web") == [b1.address]  # the half event changed nothing
    k8s.apply(slice_for("2", b2))
    wait_addresses(pf, "web", [b1.address, b2.address])
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_kubernetes_relists_total") == 0  # resumed, not relisted
    watches = [r for r in k8s.requests() if r["verb"] == "watch"]
    assert any("resourceVersion=" in r["query"] and "allowWatchBookmarks=true" in r["query"]
               for r in watches)


def test_gone_410_relists_as_a_diff_without_flap(k8s, start_backend, start_pilotfish):
    b1, b2, b3 = start_backend("b1"), start_backend("b2"), start_backend("b3")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1), slice_for("2", b2))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]))
    wait_addresses(pf, "web", [b1.address, b2.address])
    version = cluster_status(pf, "web")["version"]
    # while the watch is down, b2 goes, b3 comes, and history is compacted past our version
    k8s.control("/stall", {"on": True})
    k8s.apply(("delete", "endpointslices", "default", "web-2"), slice_for("3", b3))
    k8s.control("/compact", {"cut": True})
    k8s.control("/stall", {"on": False})
    wait_addresses(pf, "web", [b1.address, b3.address])
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_kubernetes_relists_total", resource="endpointslices") >= 1
    # one publish for the change; b1, present before and after, never left
    assert cluster_status(pf, "web")["version"] == version + 1
    assert set(backends_hit(pf)) == {"b1", "b3"}


def test_stalled_watch_reconnects_and_keeps_the_set(k8s, start_backend, start_pilotfish):
    b1, b2 = start_backend("b1"), start_backend("b2")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    k8s.control("/settings", {"bookmark_interval": 0.2})
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")], stall_timeout="1s"))
    k8s.control("/stall", {"on": True})
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_kubernetes_api_errors_total",
                                code="stalled") >= 1, 10, "the stall to be detected")
    assert addresses(pf, "web") == [b1.address]
    assert pf.get("/").status == 200
    k8s.control("/stall", {"on": False})
    k8s.apply(slice_for("2", b2))
    wait_addresses(pf, "web", [b1.address, b2.address])
    assert "stalled" in pf.stderr_text()


def write_token(k8s, token):
    """Replace the token file in one step: pilotfish reads it before every request, and a
    file written in place may be read empty, half way."""
    tmp = k8s.token_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, k8s.token_file)


def test_token_rotation_and_401_recovery(k8s, start_backend, start_pilotfish):
    b1, b2, b3 = start_backend("b1"), start_backend("b2"), start_backend("b3")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]))
    # Both watches open first: a request that read the old token just before the rotation
    # could reach the server only after the old token expired (a 401 of the test's making).
    # Waits are bounded generously: the fake API server is slow on a loaded machine.
    wait_for(lambda: k8s.control("/state")["watchers"] >= 2, 30, "both watches to be open")
    # the kubelet rotates the bound token: the server takes the new one as well, the file
    # changes (atomically, as the kubelet swaps it), the old one expires, streams reconnect:
    # the new token is read before the first 401 can happen
    k8s.control("/token", {"tokens": ["test-token", "token-2"]})
    write_token(k8s, "token-2")
    k8s.control("/token", {"tokens": ["token-2"]})
    k8s.control("/cut", {})
    k8s.apply(slice_for("2", b2))
    wait_addresses(pf, "web", [b1.address, b2.address], timeout=30)
    assert metric_sum(pf.metrics(), "pilotfish_kubernetes_api_errors_total", code="401") == 0
    # the server moves to a token we cannot have read yet: 401 until the file has it
    k8s.control("/token", {"tokens": ["token-3"]})
    k8s.control("/cut", {})
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_kubernetes_api_errors_total",
                                code="401") >= 1, 30, "a 401")
    assert addresses(pf, "web") == sorted([b1.address, b2.address])  # a 401 empties nothing
    write_token(k8s, "token-3")
    k8s.apply(slice_for("3", b3))
    wait_addresses(pf, "web", [b1.address, b2.address, b3.address], timeout=30)
    assert "401 Unauthorized; re-reading the token" in pf.stderr_text()


def test_forbidden_is_logged_once_with_the_permission_to_grant(k8s, start_backend,
                                                              start_pilotfish):
    b1 = start_backend("b1")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    k8s.control("/forbid", {"pairs": [["endpointslices", "default"]]})
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")]), wait_ready=False)
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_kubernetes_api_errors_total",
                                code="403") >= 4, 15, "several refused lists")
    log = pf.stderr_text()
    line = ('list endpointslices in "default": 403 Forbidden; the service account needs '
            'get/list/watch on endpointslices.discovery.k8s.io in namespace default')
    assert log.count(line) == 1, log
    assert pf.admin("GET", "/ready").status == 503
    assert "403" in cluster_status(pf, "web")["kubernetes"]["last_error"]
    k8s.control("/forbid", {"pairs": []})
    pf.wait_ready()
    assert addresses(pf, "web") == [b1.address]


def test_pagination_lists_every_page(k8s, start_backend, start_pilotfish):
    backends = [start_backend(f"b{i}") for i in range(3)]
    k8s.apply(k8s_service("web", [("http", 80)]),
              *(slice_for(str(i), backends[i % 3]) if i < 3 else
                k8s_slice(f"web-{i}", "web", 1000 + i, ["127.0.0.1"]) for i in range(25)))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")], page_size=10))
    wait_for(lambda: len(addresses(pf, "web")) == 25, 10, "25 endpoints")
    lists = [r for r in k8s.requests() if r["verb"] == "list" and r["resource"] == "endpointslices"]
    assert len(lists) == 3, lists
    assert sum("continue=" in r["query"] for r in lists) == 2
    assert all("labelSelector=kubernetes.io%2Fservice-name%3Dweb" in r["query"] for r in lists)


def test_kubeconfig_gives_server_ca_token_and_namespace(k8s, start_backend, start_pilotfish,
                                                       tmp_path):
    """A YAML kubeconfig as kubectl writes it (CA and token inline) is all pilotfish needs."""
    import base64

    b1 = start_backend("b1")
    k8s.apply(k8s_service("web", [("http", 80)], namespace="shop"),
              k8s_slice("web-1", "web", b1.port, ["127.0.0.1"], namespace="shop"))
    with open(k8s.ca_file, "rb") as f:
        ca = base64.b64encode(f.read()).decode()
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: {k8s.url}\n"
        f"    certificate-authority-data: {ca}\n"
        "contexts:\n- name: test\n  context:\n    cluster: fake\n    user: me\n"
        "    namespace: shop\n"
        "users:\n- name: me\n  user:\n    token: test-token\n")
    cfg = make_config([listener("main", [route("web", prefix="/")])], [k8s_cluster("web", "web")],
                      kubernetes={"backoff": {"base": "50ms", "max": "500ms"}})
    pf = start_pilotfish(cfg, extra_args=["--kubeconfig", str(path)])
    assert addresses(pf, "web") == [b1.address]
    assert cluster_status(pf, "web")["kubernetes"]["namespace"] == "shop"
    assert "kubeconfig=" in pf.stderr_text()


def test_in_cluster_api_server_from_the_environment(k8s, start_backend, start_pilotfish,
                                                   monkeypatch):
    b1 = start_backend("b1")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(k8s.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    kube = k8s.config()
    del kube["api_server"]
    pf = start_pilotfish(make_config([listener("main", [route("web", prefix="/")])],
                                     [k8s_cluster("web", "web")], kubernetes=kube))
    assert addresses(pf, "web") == [b1.address]
    assert f"api_server=https://127.0.0.1:{k8s.port}" in pf.stderr_text()


def test_service_port_number_and_named_target_ports(k8s, start_backend, start_pilotfish):
    """A number names the Service port; its name picks the slice port."""
    b1, b2 = start_backend("b1"), start_backend("b2")
    k8s.apply(k8s_service("web", [("metrics", 9100), ("web", 80)]),
              k8s_slice("web-1", "web", b1.port, ["127.0.0.1"], port_name="web"),
              k8s_slice("web-2", "web", b2.port, ["127.0.0.1"], port_name="metrics"))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web", port=80),
                                          k8s_cluster("metrics", "web", port="metrics")]))
    assert addresses(pf, "web") == [b1.address]
    assert addresses(pf, "metrics") == [b2.address]


def test_external_name_service_resolves_through_dns(k8s, start_backend, start_pilotfish,
                                                    tmp_path):
    b1, b2 = start_backend("b1"), start_backend("b2")
    dns = Dnsmasq(str(tmp_path), domain="ext.test", ttl=1)
    dns.hosts = [("127.0.0.1", "api.ext.test")]
    dns.start()
    try:
        k8s.apply(k8s_service("ext", [("http", b1.port)], type="ExternalName",
                              externalName="api.ext.test"))
        cfg = k8s_config(k8s, [k8s_cluster("ext", "ext")])
        cfg["dns"] = {"resolvers": [f"127.0.0.1:{dns.port}"]}
        pf = start_pilotfish(cfg)
        wait_addresses(pf, "ext", [b1.address])
        assert cluster_status(pf, "ext")["kubernetes"]["external_name"] == "api.ext.test"
        assert backends_hit(pf, n=5) == {"b1": 5}
        # the Service turns into a normal one: its slices count again
        k8s.apply(k8s_service("ext", [("http", 80)]), slice_for("1", b2, service="ext"))
        wait_addresses(pf, "ext", [b2.address])
        assert backends_hit(pf, n=5) == {"b2": 5}
    finally:
        dns.stop()


def test_fqdn_slices_resolve_through_dns(k8s, start_backend, start_pilotfish, tmp_path):
    b1 = start_backend("b1")
    dns = Dnsmasq(str(tmp_path), domain="ext.test", ttl=1, tag="fqdn")
    dns.hosts = [("127.0.0.1", "db.ext.test")]
    dns.start()
    try:
        k8s.apply(k8s_service("db", [("http", 80)]),
                  k8s_slice("db-f", "db", b1.port, ["db.ext.test", "late.ext.test"],
                            address_type="FQDN"))
        cfg = k8s_config(k8s, [k8s_cluster("db", "db")])
        cfg["dns"] = {"resolvers": [f"127.0.0.1:{dns.port}"]}
        pf = start_pilotfish(cfg)
        wait_addresses(pf, "db", [b1.address])
        assert backends_hit(pf, n=5) == {"b1": 5}
        # the slice drops the name: its resolver goes, and so do its addresses
        k8s.apply(k8s_slice("db-f", "db", b1.port, ["late.ext.test"], address_type="FQDN"))
        wait_addresses(pf, "db", [])
    finally:
        dns.stop()


def test_watch_line_over_the_bound_keeps_the_set(k8s, start_backend, start_pilotfish):
    b1 = start_backend("b1")
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1))
    pf = start_pilotfish(k8s_config(k8s, [k8s_cluster("web", "web")], max_line_bytes=4096))
    endpoint = {"addresses": ["127.0.0.1"], "conditions": {"ready": True},
                "nodeName": "n" * 60, "hostname": "h" * 60}
    big = k8s_slice("web-big", "web", 1, [endpoint] * 40)
    k8s.apply(big)
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_kubernetes_api_errors_total",
                                code="too_long") >= 1, 10, "the long line to be refused")
    assert addresses(pf, "web") == [b1.address]
    assert "raise $.kubernetes.max_line_bytes" in pf.stderr_text()
    assert pf.get("/").status == 200


# ---- auto-discovery ---------------------------------------------------------------------------


def auto_config(k8s, start_backend, routes=None, **kw):
    fallback = start_backend("fallback")
    clusters = [{"name": "fallback", "endpoints": [fallback.address]}]
    routes = routes or [route("fallback", host="fallback.local")]
    cfg = make_config([listener("main", routes)], clusters,
                      kubernetes=k8s.config(auto_discover={"namespaces": ["default", "shop"]},
                                            **kw))
    return cfg


def test_auto_discovered_services_are_created_and_deleted(k8s, start_backend, start_pilotfish):
    b1, b2, b3 = start_backend("b1"), start_backend("b2"), start_backend("b3")
    k8s.apply(k8s_service("reviews", [("http", 9080)]), slice_for("1", b1, service="reviews"))
    pf = start_pilotfish(auto_config(k8s, start_backend))
    wait_for(lambda: cluster_status(pf, "reviews.default:9080"), 10, "the reviews cluster")
    wait_addresses(pf, "reviews.default:9080", [b1.address])
    for host in ("reviews", "reviews.default", "reviews.default.svc",
                 "reviews.default.svc.cluster.local", "reviews:9080",
                 "reviews.default.svc.cluster.local:9080"):
        r = pf.get("/", host=host)
        assert r.status == 200 and r.header("X-Backend") == "b1", (host, r)
    # absolute-form, as an app with http_proxy sends it
    with pf.raw() as c:
        c.send(b"GET http://reviews.default:9080/x HTTP/1.1\r\nHost: reviews.default:9080\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.header("X-Backend") == "b1"
    assert pf.get("/", host="reviews:1234").status == 404  # no such Service port

    # a Service in another watched namespace, with two ports: "http" serves the bare name
    k8s.apply(k8s_service("cart", [("grpc", 9090), ("http", 8080)], namespace="shop"),
              k8s_slice("cart-1", "cart", b2.port, ["127.0.0.1"], namespace="shop"),
              k8s_slice("cart-2", "cart", b3.port, ["127.0.0.1"], namespace="shop",
                        port_name="grpc"))
    wait_for(lambda: pf.get("/", host="cart.shop").status == 200, 10, "cart.shop to route")
    assert pf.get("/", host="cart.shop").header("X-Backend") == "b2"
    assert pf.get("/", host="cart.shop:9090").header("X-Backend") == "b3"
    assert pf.get("/", host="cart").status == 404  # short names only in our own namespace
    assert pf.get("/", host="fallback.local").header("X-Backend") == "fallback"
    assert cluster_status(pf, "cart.shop:8080")["source"] == "kubernetes"

    # the Service goes away: its clusters and routes go too
    k8s.apply(("delete", "services", "default", "reviews"))
    wait_for(lambda: pf.get("/", host="reviews.default").status == 404, 10, "reviews to go")
    assert pf.get("/", host="cart.shop").status == 200


def test_explicit_routes_win_over_discovered_services(k8s, start_backend, start_pilotfish):
    b1 = start_backend("b1")
    k8s.apply(k8s_service("fallback", [("http", 80)]), slice_for("1", b1, service="fallback"))
    routes = [route("fallback", host="fallback.default")]
    pf = start_pilotfish(auto_config(k8s, start_backend, routes=routes))
    wait_for(lambda: cluster_status(pf, "fallback.default:80"), 10, "the discovered cluster")
    assert pf.get("/", host="fallback.default").header("X-Backend") == "fallback"
    assert pf.get("/", host="fallback.default.svc").header("X-Backend") == "b1"


def test_discovered_clusters_take_the_template_health_checks(k8s, start_backend,
                                                             start_pilotfish):
    b1 = start_backend("b1")
    closed = free_port()
    k8s.apply(k8s_service("web", [("http", 80)]), slice_for("1", b1),
              k8s_slice("web-2", "web", closed, ["127.0.0.1"]))
    cfg = auto_config(k8s, start_backend)
    cfg["kubernetes"]["auto_discover"]["cluster"] = {
        "health_check": {"type": "tcp", "interval": "100ms", "timeout": "100ms",
                         "unhealthy_threshold": 1}}
    pf = start_pilotfish(cfg)

    def healthy():
        c = cluster_status(pf, "web.default:80")
        return c and {e["address"]: e["healthy"] for e in c["endpoints"]}

    wait_for(lambda: healthy() == {b1.address: True, f"127.0.0.1:{closed}": False}, 10,
             "the closed port to fail its check")
    assert backends_hit(pf, n=10, host="web.default") == {"b1": 10}


def test_a_thousand_services_with_ten_endpoints_each(k8s, start_backend, start_pilotfish):
    # ten backends on 127.0.0.1, each endpoint of every Service in a slice of its own
    backends = [start_backend(f"b{k}") for k in range(10)]
    objs = []
    for i in range(1000):
        objs.append(k8s_service(f"svc{i}", [("http", 80)]))
        objs += [k8s_slice(f"svc{i}-{k}", f"svc{i}", b.port, ["127.0.0.1"])
                 for k, b in enumerate(backends)]
    k8s.apply(*objs)
    cfg = auto_config(k8s, start_backend)
    cfg["kubernetes"]["auto_discover"] = {"namespaces": ["default"]}
    start = time.monotonic()
    # Bounds for a loaded machine or a sanitizer build: how fast is measured, not asserted.
    pf = start_pilotfish(cfg, wait_ready=False)
    pf.wait_ready(timeout=90)
    wait_for(lambda: pf.get("/", host="svc999.default").status == 200, 90, "svc999 to route")
    synced = time.monotonic() - start
    print(f"1000 Services with 10 endpoints each routed {synced:.1f} s after start")
    clusters = pf.admin_json("/clusters")["clusters"]
    discovered = [c for c in clusters if c.get("source") == "kubernetes"]
    assert len(discovered) == 1000
    assert all(len(c["endpoints"]) == 10 for c in discovered)
    hit = backends_hit(pf, n=20, host="svc0.default.svc.cluster.local:80")
    assert set(hit) == {b.name for b in backends}, hit
    assert pf.rss_bytes() < 256 * 1024 * 1024
