"""The chart's Grafana dashboard and PrometheusRule: every metric their expressions name is
in the /stats/prometheus of a running pilotfish (listeners plain and TLS, static, DNS and
Kubernetes clusters, health checks and outlier detection), the rule group passes
`promtool check rules` and each alert fires on sample series (`promtool test rules`), and
the chart renders them when it should."""

import glob
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness import (
    LOCALHOST,
    REPO,
    TOOLS_DIR,
    Dnsmasq,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    route,
    started_by_test,
    wait_for,
)

HELM = os.path.join(TOOLS_DIR, "helm")
CHART = os.path.join(REPO, "helm", "pilotfish")
DASHBOARD = os.path.join(CHART, "dashboards", "pilotfish.json")
MONITORING = ("--api-versions", "monitoring.coreos.com/v1")

# Metrics pilotfish exposes once a TLS certificate is loaded, registered by the TLS code:
# checked like the others as soon as the source registers them.
EXPECTED_FROM_TLS = {"pilotfish_tls_certificate_expiry_seconds"}


def helm_template(*args):
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} is missing: run `make tools` (make test does)")
    home = os.path.join(TOOLS_DIR, "home")
    env = dict(os.environ, HELM_CACHE_HOME=os.path.join(home, "cache"),
               HELM_CONFIG_HOME=os.path.join(home, "config"),
               HELM_DATA_HOME=os.path.join(home, "data"),
               KUBECONFIG=os.path.join(home, "no-cluster.kubeconfig"))
    proc = subprocess.run([HELM, "template", "rel", CHART, "-n", "pf-test", *args],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def rule_groups(*args):
    rules = [d for d in helm_template(*MONITORING, *args) if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    return rules[0]["spec"]["groups"]


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def rule_exprs():
    return [r["expr"] for g in rule_groups() for r in g["rules"]]


def metric_names_in(expr):
    """The metric names a PromQL expression reads: what is left once strings, label
    matchers, ranges, grouping clauses, Grafana variables and function calls are gone."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\w+", "", e)
    e = re.sub(r"\b[a-zA-Z_]\w*\s*\(", "(", e)  # function and aggregation names
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", e))
    return words - {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def test_metric_name_extraction():
    assert metric_names_in(
        'histogram_quantile(0.99, sum by (le, listener) (rate(a_bucket{job=~"$job",x="y(z)"}'
        "[$__rate_interval]))) / on (instance) group_left b + count(c) or vector(0)"
    ) == {"a_bucket", "b", "c"}


@pytest.fixture
def dnsmasq(tmp_path):
    yield from started_by_test(lambda: Dnsmasq(str(tmp_path), domain="test.internal", ttl=5))


def exposition_of_everything(start_backend, start_pilotfish, k8s, dnsmasq):
    """/stats/prometheus of a pilotfish with every kind of listener, cluster and discovery."""
    web = start_backend("web")
    dns = dnsmasq()
    dns.set_hosts([(LOCALHOST, "web.test.internal")])
    k8s.apply(k8s_service("orders", [("http", 80)]),
              k8s_slice("orders-1", "orders", web.port, [LOCALHOST]))
    data = os.path.join(REPO, "test", "unit", "data")
    tls = {"certificates": [{"cert_file": os.path.join(data, "tls.crt"),
                             "key_file": os.path.join(data, "tls.key")}]}
    cfg = make_config(
        [listener("main", [route("web", prefix="/")]),
         listener("secure", [route("named", prefix="/")], tls=tls)],
        [{"name": "web", "endpoints": [web.address],
          "health_check": {"type": "http", "path": "/", "interval": "200ms"},
          "outlier_detection": {}},
         {"name": "named", "dns": {"name": "web.test.internal", "port": web.port}}],
        dns={"resolvers": [f"{LOCALHOST}:{dns.port}"]},
        kubernetes=k8s.config(auto_discover={"namespaces": ["default"]}),
    )
    pf = start_pilotfish(cfg)
    for _ in range(3):
        assert pf.get("/").status == 200
    text = pf.admin("GET", "/stats/prometheus").body.decode()
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return families, samples


def registered_in_source(name):
    for path in glob.glob(os.path.join(REPO, "*", "*.c")):
        with open(path, errors="replace") as f:
            if f'"{name}"' in f.read():
                return True
    return False


def test_every_metric_of_the_dashboard_and_the_rules_is_exposed(start_backend, start_pilotfish,
                                                                 k8s, dnsmasq):
    families, samples = exposition_of_everything(start_backend, start_pilotfish, k8s, dnsmasq)
    named = {}
    for where, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        for expr in exprs:
            for name in metric_names_in(expr):
                named.setdefault(name, set()).add(where)
    assert len(named) >= 30, sorted(named)
    assert all(n.startswith(("pilotfish_", "process_")) for n in named), sorted(named)
    missing = []
    for name, where in sorted(named.items()):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        exposed = name in families or (name in samples and families.get(base) == "histogram")
        if exposed:
            continue
        if name in EXPECTED_FROM_TLS and not registered_in_source(name):
            continue  # the TLS listener above exposes it once the TLS code registers it
        missing.append(f"{name} (in the {', '.join(sorted(where))})")
    assert not missing, "named but not exposed: " + "; ".join(missing)


RULE_TESTS = {
    "evaluation_interval": "1m",
    "tests": [{
        "interval": "1m",
        "input_series": [
            # web has no healthy endpoint, api has one
            {"series": 'pilotfish_cluster_endpoints{namespace="shop",pod="p1",cluster="web",health="healthy"}',
             "values": "0x20"},
            {"series": 'pilotfish_cluster_endpoints{namespace="shop",pod="p1",cluster="web",health="unhealthy"}',
             "values": "2x20"},
            {"series": 'pilotfish_cluster_endpoints{namespace="shop",pod="p1",cluster="api",health="healthy"}',
             "values": "1x20"},
            # main: 1 rps 2xx and 0.5 rps 5xx; quiet: all 5xx, but 0.05 rps
            {"series": 'pilotfish_downstream_requests_total{namespace="shop",pod="p1",listener="main",code_class="2xx"}',
             "values": "0+60x20"},
            {"series": 'pilotfish_downstream_requests_total{namespace="shop",pod="p1",listener="main",code_class="5xx"}',
             "values": "0+30x20"},
            {"series": 'pilotfish_downstream_requests_total{namespace="shop",pod="p1",listener="quiet",code_class="5xx"}',
             "values": "0+3x20"},
            # a watch silent since the start, and one that hears every 30 s
            {"series": 'pilotfish_kubernetes_last_event_age_seconds{namespace="shop",pod="p1",resource="endpointslices",scope="shop"}',
             "values": "0+60x20"},
            {"series": 'pilotfish_kubernetes_last_event_age_seconds{namespace="shop",pod="p1",resource="services",scope="shop"}',
             "values": "30x20"},
            # 10 days left, 100 days left, expired
            {"series": 'pilotfish_tls_certificate_expiry_seconds{namespace="shop",pod="p1",file="/tls/soon.crt"}',
             "values": "864000x20"},
            {"series": 'pilotfish_tls_certificate_expiry_seconds{namespace="shop",pod="p1",file="/tls/fine.crt"}',
             "values": "8640000x20"},
            {"series": 'pilotfish_tls_certificate_expiry_seconds{namespace="shop",pod="p1",file="/tls/old.crt"}',
             "values": "-60x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "PilotfishClusterNoHealthyEndpoint", "exp_alerts": []},
            {"eval_time": "3m", "alertname": "PilotfishClusterNoHealthyEndpoint", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": "shop", "pod": "p1", "cluster": "web"},
                "exp_annotations": {
                    "summary": "pilotfish has no healthy endpoint in cluster web",
                    "description": "pilotfish shop/p1 has had no healthy endpoint in cluster web for "
                                   "2 minutes, so the cluster's requests get 503. Its status page and "
                                   "/clusters say why: checks failing, endpoints ejected or not ready, "
                                   "or none discovered."}}]},
            {"eval_time": "12m", "alertname": "PilotfishHigh5xxShare", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "shop", "pod": "p1", "listener": "main"},
                "exp_annotations": {
                    "summary": "33.33% of listener main's responses are 5xx",
                    "description": "33.33% of the responses of pilotfish shop/p1 on listener main were "
                                   "5xx over 5 minutes. pilotfish_upstream_requests_total"
                                   '{code_class="5xx"} says which cluster; 502, 503 and 504 from '
                                   "pilotfish itself mean endpoints failing, none healthy, or timeouts."}}]},
            {"eval_time": "15m", "alertname": "PilotfishKubernetesWatchStale", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "shop", "pod": "p1",
                               "resource": "endpointslices", "scope": "shop"},
                "exp_annotations": {
                    "summary": "pilotfish's Kubernetes watch of endpointslices in shop is stale",
                    "description": "pilotfish shop/p1 has had no event, bookmark or list of "
                                   "endpointslices in shop for 15m 0s: endpoint changes since then "
                                   "are not seen. Look at its log and "
                                   "pilotfish_kubernetes_api_errors_total (RBAC, API server "
                                   "reachability)."}}]},
            {"eval_time": "9m", "alertname": "PilotfishCertificateExpiresSoon", "exp_alerts": []},
            {"eval_time": "11m", "alertname": "PilotfishCertificateExpiresSoon", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "namespace": "shop", "pod": "p1", "file": f},
                 "exp_annotations": {
                     "summary": f"The TLS certificate {f} expires in {left}",
                     "description": f"pilotfish shop/p1 serves or presents {f}, which expires in "
                                    f"{left}. Renew the file; pilotfish picks up a rotated "
                                    "certificate."}}
                for f, left in (("/tls/old.crt", "-1m 0s"), ("/tls/soon.crt", "10d 0h 0m 0s"))]},
            {"eval_time": "0m", "alertname": "PilotfishCertificateExpired", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": "shop", "pod": "p1",
                               "file": "/tls/old.crt"},
                "exp_annotations": {
                    "summary": "The TLS certificate /tls/old.crt has expired",
                    "description": "pilotfish shop/p1 still uses /tls/old.crt, which has expired: "
                                   "peers that check it refuse the handshake."}}]},
        ],
    }],
}


def test_rules_pass_promtool_and_each_alert_fires_on_sample_series(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install the Debian package prometheus (make deps)"
    rules = tmp_path / "pilotfish-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    r = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert alerts == {t["alertname"] for t in RULE_TESTS["tests"][0]["alert_rule_test"]}
    tests = tmp_path / "pilotfish-rules.test.yaml"
    tests.write_text(yaml.safe_dump(dict(RULE_TESTS, rule_files=[str(rules)]), sort_keys=False))
    r = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_thresholds_come_from_the_values():
    exprs = {r["alert"]: r["expr"] for g in rule_groups(
        "--set-json", "prometheusRule.errorRatio=0.2", "--set", "prometheusRule.watchStaleSeconds=600",
        "--set", "prometheusRule.certificateExpiryDays=30",
        "--set", "prometheusRule.minRequestsPerSecond=2") for r in g["rules"]}
    assert ") > 0.2\n" in exprs["PilotfishHigh5xxShare"]
    assert exprs["PilotfishHigh5xxShare"].rstrip().endswith("> 2")
    assert exprs["PilotfishKubernetesWatchStale"].endswith("> 600")
    assert exprs["PilotfishCertificateExpiresSoon"].endswith(f"< {30 * 86400}")


@pytest.mark.parametrize("mode", ["default", "gateway"])
def test_prometheus_rule_only_where_the_operator_api_exists(mode):
    values = [] if mode == "default" else ["-f", os.path.join(CHART, "ci", "gateway-values.yaml")]
    assert "PrometheusRule" not in {d["kind"] for d in helm_template(*values)}
    docs = helm_template(*values, *MONITORING, "--set", "prometheusRule.labels.release=kps")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
    docs = helm_template(*values, *MONITORING, "--set", "prometheusRule.enabled=false")
    assert "PrometheusRule" not in {d["kind"] for d in docs}


def test_dashboard_config_map_only_when_enabled_with_the_sidecar_label():
    def dashboards(*args):
        return [d for d in helm_template(*args) if d["kind"] == "ConfigMap"
                and "pilotfish.json" in d["data"] and d["metadata"]["name"].endswith("-dashboard")]

    assert dashboards() == []
    (cm,) = dashboards("--set", "grafanaDashboard.enabled=true")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "pf-test"
    with open(DASHBOARD) as f:
        assert json.loads(cm["data"]["pilotfish.json"]) == json.load(f)
    (cm,) = dashboards("--set", "grafanaDashboard.enabled=true",
                       "--set", "grafanaDashboard.namespace=monitoring",
                       "--set", "grafanaDashboard.annotations.grafana_folder=Proxies")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Proxies"}


def test_dashboard_is_a_grafana_dashboard_over_a_chosen_prometheus():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    assert dash["uid"] == "pilotfish" and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            # every query follows the job and instance variables
            assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], t["expr"]
