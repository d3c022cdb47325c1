"""The exposition's labels stay bounded by the config: the downstream histogram per listener
and status class, upstream ones per cluster, and per-endpoint series only with
stats.per_endpoint, for the endpoints there now."""

import copy
import json
import os
import shutil
import signal
import subprocess

from harness import metric_sum, standard_config, wait_for

# Label names a default exposition may use: each has values from the config or a fixed list.
BOUNDED_LABELS = {"listener", "cluster", "code_class", "le", "reason", "breaker", "health",
                  "result", "version", "file", "direction", "protocol",
                  "grpc_status", "kind"}


def promtool_check(text):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install the Debian package prometheus (make deps)"
    r = subprocess.run([promtool, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert r.returncode == 0, r.stdout.decode()


def test_downstream_duration_is_per_listener_and_status_class(proxy):
    pf = proxy.pf
    for _ in range(3):
        assert pf.get("/").status == 200
    for _ in range(2):
        assert pf.get("/", host="nobody.local", listener="strict").status == 404

    def counts():
        m = pf.metrics()
        name = "pilotfish_request_duration_seconds_count"
        return (metric_sum(m, name, listener="main", code_class="2xx"),
                metric_sum(m, name, listener="strict", code_class="4xx"),
                metric_sum(m, name, listener="main", code_class="4xx"))

    wait_for(lambda: counts()[:2] == (3, 2), 10, "3 main 2xx and 2 strict 4xx timed")
    assert counts()[2] == 0
    # the status page still shows one p50/p99 per listener, over every class
    page = pf.admin("GET", "/").body.decode()
    assert "p99" in page


def test_default_series_have_bounded_labels_and_no_endpoint_address(proxy):
    pf = proxy.pf
    for _ in range(4):
        assert pf.get("/").status == 200
        assert pf.get("/v1/x", host="api.local").status == 200
    m = pf.metrics()
    label_names = {k for _, labels, _ in m for k in labels}
    assert label_names <= BOUNDED_LABELS, sorted(label_names - BOUNDED_LABELS)
    addresses = {proxy.web1.address, proxy.web2.address, proxy.api.address}
    assert not [(n, l) for n, l, _ in m if addresses & set(l.values())]
    assert not [n for n, _, _ in m if n.startswith("pilotfish_upstream_endpoint_")]
    upstream = {tuple(sorted(l)) for n, l, _ in m
                if n.startswith(("pilotfish_upstream_request_duration_seconds",
                                 "pilotfish_upstream_connect_duration_seconds"))}
    assert upstream <= {("cluster",), ("cluster", "le")}, upstream


def test_per_endpoint_series_follow_the_endpoints_there_now(backends, start_pilotfish, tmp_path):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["stats"] = {"per_endpoint": True}
    pf = start_pilotfish(cfg)
    for _ in range(9):
        assert pf.get("/").status == 200

    def per_endpoint(m, name, **labels):
        return {l["endpoint"]: v for n, l, v in m if n == name
                and all(l.get(k) == x for k, x in labels.items())}

    def answered():
        m = pf.metrics()
        got = per_endpoint(m, "pilotfish_upstream_endpoint_requests_total", cluster="web",
                           code_class="2xx")
        return m if sum(got.values()) == 9 else None

    m = wait_for(answered, 10, "9 web responses counted per endpoint")
    reqs = per_endpoint(m, "pilotfish_upstream_endpoint_requests_total", cluster="web",
                        code_class="2xx")
    # round robin with weights 1 and 2
    assert reqs == {backends.web1.address: 3, backends.web2.address: 6}, reqs
    timed = per_endpoint(m, "pilotfish_upstream_endpoint_request_duration_seconds_count",
                         cluster="web")
    assert timed == reqs
    assert per_endpoint(m, "pilotfish_upstream_endpoint_healthy", cluster="web") == {
        backends.web1.address: 1, backends.web2.address: 1}
    assert per_endpoint(m, "pilotfish_upstream_endpoint_active_requests", cluster="api") == {
        backends.api.address: 0}
    assert metric_sum(m, "pilotfish_upstream_requests_total", cluster="web", code_class="2xx") == 9
    promtool_check(pf.admin("GET", "/stats/prometheus").body)

    # web2 leaves the cluster: its series go with it
    new = copy.deepcopy(cfg)
    new["clusters"][0]["endpoints"] = [backends.web1.address]
    tmp = pf.config_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(new, f)
    os.replace(tmp, pf.config_path)
    os.kill(pf.pid, signal.SIGHUP)

    def gone():
        got = per_endpoint(pf.metrics(), "pilotfish_upstream_endpoint_healthy", cluster="web")
        return got if list(got) == [backends.web1.address] else None

    wait_for(gone, 10, "web2's series to go once it left the cluster")
