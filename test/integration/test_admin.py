"""The admin server: readiness, health, cluster view, Prometheus metrics, effective config."""

from harness import metric_names, metric_sum, wait_for


def test_ready_and_healthz_answer_200(proxy):
    assert proxy.pf.admin("GET", "/ready").status == 200
    assert proxy.pf.admin("GET", "/healthz").status == 200


def test_unknown_admin_path_is_404(proxy):
    assert proxy.pf.admin("GET", "/no-such-admin-page").status == 404


def test_clusters_lists_every_endpoint_with_weight_and_health(proxy):
    doc = proxy.pf.admin_json("/clusters")
    by_name = {c["name"]: c for c in doc["clusters"]}
    assert set(by_name) == {"web", "api"}
    assert by_name["web"]["lb_policy"] == "round_robin"
    web = {e["address"]: e for e in by_name["web"]["endpoints"]}
    assert set(web) == {proxy.web1.address, proxy.web2.address}
    assert web[proxy.web1.address]["weight"] == 1
    assert web[proxy.web2.address]["weight"] == 2
    api = by_name["api"]["endpoints"]
    assert [e["address"] for e in api] == [proxy.api.address]
    for e in list(web.values()) + api:
        assert e["healthy"] is True
        assert isinstance(e["active_requests"], int) and e["active_requests"] >= 0
        assert isinstance(e["requests_total"], int)


def test_clusters_requests_total_counts_requests(proxy):
    def api_total():
        doc = proxy.pf.admin_json("/clusters")
        (api,) = [c for c in doc["clusters"] if c["name"] == "api"]
        return api["endpoints"][0]["requests_total"]

    before = api_total()
    for i in range(5):
        assert proxy.pf.get(f"/v1/{i}", host="api.local").status == 200
    wait_for(lambda: api_total() == before + 5, 10, "requests_total to count 5 requests")


def test_prometheus_text_is_well_formed_with_pilotfish_metrics(proxy):
    resp = proxy.pf.admin("GET", "/stats/prometheus")
    assert resp.status == 200
    assert resp.header("Content-Type", "").startswith("text/plain")
    names = metric_names(proxy.pf.metrics())  # parse_prometheus fails on a malformed line
    for name in (
        "pilotfish_downstream_requests_total",
        "pilotfish_upstream_requests_total",
        "pilotfish_downstream_connections_active",
        "pilotfish_cluster_endpoints",
    ):
        assert name in names, f"{name} missing from {sorted(names)}"
    assert {"pilotfish_request_duration_seconds_bucket", "pilotfish_request_duration_seconds_count"} <= names
    assert all(n.startswith(("pilotfish_", "process_")) for n in names), sorted(names)


def test_prometheus_request_counters_increase_after_requests(proxy):
    before = proxy.pf.metrics()
    for _ in range(6):
        assert proxy.pf.get("/").status == 200
    for _ in range(4):
        assert proxy.pf.get("/v1/x", host="api.local").status == 200

    def counted():
        m = proxy.pf.metrics()

        def grew(name, want, **labels):
            return metric_sum(m, name, **labels) - metric_sum(before, name, **labels) >= want

        return (
            grew("pilotfish_downstream_requests_total", 10, listener="main", code_class="2xx")
            and grew("pilotfish_upstream_requests_total", 6, cluster="web", code_class="2xx")
            and grew("pilotfish_upstream_requests_total", 4, cluster="api", code_class="2xx")
            and grew("pilotfish_request_duration_seconds_count", 10)
        )

    wait_for(counted, 10, "request counters to grow by the requests made")


def test_prometheus_counts_404_as_4xx(proxy):
    def four_xx():
        return metric_sum(
            proxy.pf.metrics(), "pilotfish_downstream_requests_total", listener="strict", code_class="4xx"
        )

    before = four_xx()
    assert proxy.pf.get("/", host="nobody.local", listener="strict").status == 404
    wait_for(lambda: four_xx() >= before + 1, 10, "a 4xx to be counted")


HISTOGRAMS = (
    "pilotfish_request_duration_seconds",
    "pilotfish_upstream_request_duration_seconds",
    "pilotfish_upstream_connect_duration_seconds",
)


def test_prometheus_histogram_buckets_are_cumulative(proxy):
    for _ in range(3):
        proxy.pf.get("/")
    samples = proxy.pf.metrics()
    for name in HISTOGRAMS:
        buckets = [(l, v) for n, l, v in samples if n == name + "_bucket"]
        assert buckets, name
        series = {}
        for labels, v in buckets:
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            le = labels["le"]
            series.setdefault(key, []).append((float("inf") if le == "+Inf" else float(le), v))
        for key, points in series.items():
            points.sort()
            assert points[0][0] == 0.0005, f"{name} {key}: first bound {points[0][0]}"
            assert points[-2][0] == 30, f"{name} {key}: last bound {points[-2][0]}"
            assert points[-1][0] == float("inf"), f"{name} {key}: no +Inf bucket"
            values = [v for _, v in points]
            assert values == sorted(values), f"{name} {key}: buckets not cumulative {points}"
            count = metric_sum(samples, name + "_count", **dict(key))
            assert values[-1] == count, f"{name} {key}: +Inf bucket {values[-1]} != count {count}"


def test_upstream_histograms_count_each_cluster_s_responses_and_connects(proxy):
    def counts():
        m = proxy.pf.metrics()
        return (
            metric_sum(m, "pilotfish_upstream_request_duration_seconds_count", cluster="api"),
            metric_sum(m, "pilotfish_upstream_connect_duration_seconds_count", cluster="api"),
            metric_sum(m, "pilotfish_upstream_request_duration_seconds_count", cluster="web"),
        )

    requests_before, _, web_before = counts()
    for _ in range(5):
        assert proxy.pf.get("/v1/x", host="api.local").status == 200
    wait_for(lambda: counts()[0] == requests_before + 5, 10, "five api responses timed")
    requests, connects, web = counts()
    assert connects >= 1  # at least the first connection to the api endpoint
    assert connects <= requests  # keep-alive: never more connects than responses
    assert web == web_before  # only the cluster that answered


def test_prometheus_cluster_endpoints_gauge(proxy):
    m = proxy.pf.metrics()
    assert metric_sum(m, "pilotfish_cluster_endpoints", cluster="web", health="healthy") == 2
    assert metric_sum(m, "pilotfish_cluster_endpoints", cluster="api", health="healthy") == 1


def test_config_returns_effective_config_json(proxy):
    doc = proxy.pf.admin_json("/config")
    names = {c["name"] for c in doc["clusters"]}
    assert names == {"web", "api"}
    listeners = {l["name"]: l for l in doc["listeners"]}
    assert set(listeners) == {"main", "strict"}
    assert listeners["main"]["address"] == proxy.pf.config["listeners"][0]["address"]
