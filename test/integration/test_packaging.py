"""Kubernetes packaging: manifests/, the Helm chart in helm/pilotfish and the Dockerfile.

Real helm (3.17) and kubectl (1.31) from build/tools (`make tools`) render and read
everything; there is no cluster, so kubectl talks to test/fakes/k8s_discovery.py, which
knows the API's kinds and stores nothing. Each documented mode of the chart (its default
values and every helm/pilotfish/ci/*-values.yaml) is rendered and checked: kinds, RBAC
rules, probes, limits, securityContext, labels, the pilotfish config (by `pilotfish
--check-config`), kubectl's client-side dry run and its typed decoding (a field kubectl's
Go types drop is a field Kubernetes does not know). The plain manifests get the same checks,
the README's sidecar example is rendered as a user's chart would, the RBAC is compared with
the requests pilotfish sends the fake API server of test/fakes/k8s_api.py, and the
Dockerfile's package lists are compared with the Makefile and the built binary (the image
itself is built and run by test_image.py).
"""

import functools
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from harness import (
    PILOTFISH_BIN,
    REPO,
    TOOLS_DIR,
    K8sApi,
    k8s_service,
    k8s_slice,
    movable_address,
    wait_for,
)

sys.path.insert(0, os.path.join(REPO, "test", "fakes"))
from k8s_discovery import DiscoveryServer  # noqa: E402

HELM = os.path.join(TOOLS_DIR, "helm")
KUBECTL = os.path.join(TOOLS_DIR, "kubectl")
CHART = os.path.join(REPO, "helm", "pilotfish")
MANIFESTS = os.path.join(REPO, "manifests")
NAMESPACE = "pf-test"
RELEASE = "rel"
FULLNAME = "rel-pilotfish"
CMD_TIMEOUT = 120  # seconds for one helm or kubectl run on a slow, shared machine

# The RBAC every Role and ClusterRole grants, (apiGroup, resource) -> verbs: what discovery
# reads (list, watch; test_rbac_matches_what_discovery_asks_the_api_server_for) and get.
RBAC_RULES = {("", "services"): ["get", "list", "watch"],
              ("discovery.k8s.io", "endpointslices"): ["get", "list", "watch"]}

# The documented modes: values file (None: the chart's defaults) and what each renders.
# roles: the namespaces that get a Role and RoleBinding; "cluster": a ClusterRole instead.
# The default install is sidecar mode without the demo application: what your own
# Deployments use (ServiceAccount, RBAC, ConfigMap) and no pods.
MODES = {
    "default": dict(values=None, native=True, gateway=False, app=False, roles=[NAMESPACE]),
    "demo": dict(values="demo", native=True, gateway=False, app=True, roles=[NAMESPACE]),
    "sidecar-classic": dict(values="sidecar-classic", native=False, gateway=False, app=True,
                            roles=[NAMESPACE]),
    "gateway": dict(values="gateway", native=False, gateway=True, app=False,
                    roles=["payments", "shop"]),
    "gateway-production": dict(values="gateway-production", native=False, gateway=True,
                               app=False, roles=["payments", "shop"],
                               kinds=["HorizontalPodAutoscaler", "NetworkPolicy"]),
    "all-namespaces": dict(values="all-namespaces", native=True, gateway=False, app=True,
                           roles="cluster"),
    "explicit": dict(values="explicit", native=True, gateway=False, app=True,
                     roles=[NAMESPACE, "shop"]),
    "static": dict(values="static", native=True, gateway=False, app=True, roles=[]),
    "http-routes": dict(values="http-routes", native=True, gateway=False, app=False,
                        roles=[NAMESPACE]),
}
# With discovery.httpRoutes (kubernetes.http_routes in the config): HTTPRoutes are read too.
HTTPROUTE_RULE = {("gateway.networking.k8s.io", "httproutes"): ["get", "list", "watch"]}

POD_KINDS = {"Deployment"}
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/managed-by")


# ---- running the tools ----------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def tools_present():
    for tool in (HELM, KUBECTL):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: run `make tools` (make test does)")


@functools.lru_cache(maxsize=None)
def tool_env():
    """helm and kubectl with their caches and config in build/, not in $HOME, and no
    cluster unless a test names one."""
    home = os.path.join(TOOLS_DIR, "home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ)
    env.update(HELM_CACHE_HOME=os.path.join(home, "cache"),
               HELM_CONFIG_HOME=os.path.join(home, "config"),
               HELM_DATA_HOME=os.path.join(home, "data"),
               KUBECONFIG=os.path.join(home, "no-cluster.kubeconfig"),
               KUBECACHEDIR=os.path.join(home, "kube-cache"))
    return env


def run(args, stdin=None, env=None, check=True):
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True,
                          env=env or tool_env(), timeout=CMD_TIMEOUT)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc


def values_args(mode):
    name = MODES[mode]["values"]
    return ["-f", os.path.join(CHART, "ci", f"{name}-values.yaml")] if name else []


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


@functools.lru_cache(maxsize=None)
def render_text(mode, *extra):
    return run([HELM, "template", RELEASE, CHART, "-n", NAMESPACE, *values_args(mode),
                *extra]).stdout


def render(mode, *extra):
    return docs_of(render_text(mode, *extra))


def manifest_files():
    return sorted(glob.glob(os.path.join(MANIFESTS, "*.yaml")))


def manifests():
    """[(file name, object)] of every object in manifests/."""
    out = []
    for path in manifest_files():
        with open(path) as f:
            out += [(os.path.basename(path), d) for d in docs_of(f.read())]
    return out


@pytest.fixture(scope="module")
def discovery(tmp_path_factory):
    """A fake API server with the Prometheus Operator's group, and a kubeconfig for it."""
    server = DiscoveryServer().start()
    env = dict(tool_env(), KUBECONFIG=server.kubeconfig(
        str(tmp_path_factory.mktemp("kube") / "config.json")))
    yield env
    server.stop()


# ---- reading objects -----------------------------------------------------


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def pod_specs(docs):
    return [(d, d["spec"]["template"]["spec"]) for d in docs if d["kind"] in POD_KINDS]


def all_containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def pilotfish_container(spec):
    found = [c for c in all_containers(spec) if c["name"] == "pilotfish"]
    assert len(found) == 1, f"expected one pilotfish container, found {len(found)}"
    return found[0]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def config_of(docs):
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(maps) == 1, f"expected one ConfigMap, found {len(maps)}"
    return maps[0]["data"]["pilotfish.json"]


def check_config(text, tmp_path, name):
    path = tmp_path / name
    path.write_text(text)
    return subprocess.run([PILOTFISH_BIN, "--check-config", str(path)], capture_output=True,
                          text=True, timeout=30)


def check_rbac(docs, where, namespace=NAMESPACE):
    """Every Role and ClusterRole grants exactly RBAC_RULES (and HTTPROUTE_RULE when the
    config applies HTTPRoutes, only then); every binding binds one of them to the
    ServiceAccount that the pods run as."""
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    configs = [d for d in docs
               if d["kind"] == "ConfigMap" and "pilotfish.json" in d.get("data", {})]
    http_routes = any(json.loads(d["data"]["pilotfish.json"]).get("kubernetes", {})
                      .get("http_routes") for d in configs)
    expected = {**RBAC_RULES, **(HTTPROUTE_RULE if http_routes else {})}
    for role in roles:
        got = {}
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, f"{where}: {rule}"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    got.setdefault((group, resource), []).extend(rule["verbs"])
        got = {k: sorted(v) for k, v in got.items()}
        assert got == expected, f"{where}: {role['kind']} {role['metadata']['name']}: {got}"
    accounts = {(d["metadata"].get("namespace", namespace), d["metadata"]["name"])
                for d in docs if d["kind"] == "ServiceAccount"}
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = binding["roleRef"]
        role_kind = "Role" if binding["kind"] == "RoleBinding" else "ClusterRole"
        assert ref["kind"] == role_kind and ref["apiGroup"] == "rbac.authorization.k8s.io"
        ns = binding["metadata"].get("namespace")
        assert any(r["kind"] == role_kind and r["metadata"]["name"] == ref["name"] and
                   r["metadata"].get("namespace") == ns for r in roles), f"{where}: {ref}"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", f"{where}: {subject}"
            assert (subject["namespace"], subject["name"]) in accounts, f"{where}: {subject}"
    for d, spec in pod_specs(docs):
        account = (d["metadata"].get("namespace", namespace), spec["serviceAccountName"])
        if roles:
            assert account in accounts, f"{where}: pods run as {account}"
    return roles


def check_container(c, where):
    where = f"{where}: container {c['name']}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in c, f"{where}: no {probe}"
    limits = c.get("resources", {}).get("limits", {})
    requests = c.get("resources", {}).get("requests", {})
    assert "memory" in limits, f"{where}: limits {limits}"
    assert "cpu" in requests and "memory" in requests, f"{where}: requests {requests}"
    # A CPU limit throttles a proxy's tail latency: pilotfish has a request and no limit.
    assert c["name"] != "pilotfish" or "cpu" not in limits, f"{where}: CPU limit {limits}"
    sc = c.get("securityContext", {})
    for key, want in SECURITY_CONTEXT.items():
        assert sc.get(key) == want, f"{where}: securityContext.{key} is {sc.get(key)!r}"
    assert sc.get("runAsUser", 1) != 0 and sc.get("privileged", False) is False, where


def check_pilotfish_container(c, where, native, gateway, drain_timeout_s, grace):
    where = f"{where}: pilotfish"
    assert c["args"][:2] == ["--config", "/etc/pilotfish/pilotfish.json"], where
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready", where
    assert c["startupProbe"]["httpGet"]["path"] == "/ready", where
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ports, f"{where}: {probe} names no port"
    assert ("pf-http" in ports) == gateway, f"{where}: ports {ports}"
    env = env_of(c)
    fields = {name: env[name]["valueFrom"]["fieldRef"]["fieldPath"]
              for name in ("POD_NAMESPACE", "POD_NAME", "NODE_NAME", "NODE_ZONE")}
    assert fields == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name",
                      "NODE_NAME": "spec.nodeName",
                      "NODE_ZONE": "metadata.labels['topology.kubernetes.io/zone']"}, where
    assert (c.get("restartPolicy") == "Always") == native, f"{where}: restartPolicy"
    pre_stop = c.get("lifecycle", {}).get("preStop")
    # A native sidecar stops after the application: nothing to wait for. Elsewhere
    # pilotfish keeps serving while the endpoint removal spreads, then drains.
    if native:
        assert pre_stop is None, f"{where}: preStop on a native sidecar only delays"
        pre_stop_s = 0
    else:
        assert pre_stop["exec"]["command"][0] == "sleep", f"{where}: preStop {pre_stop}"
        pre_stop_s = int(pre_stop["exec"]["command"][1])
        assert pre_stop_s > 0, where
    assert grace >= pre_stop_s + drain_timeout_s + 5, (
        f"{where}: terminationGracePeriodSeconds {grace} leaves no time to drain "
        f"(preStop {pre_stop_s}s + drain_timeout {drain_timeout_s}s)")


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def check_pods(docs, where, native, gateway, app):
    """Probes, limits and securityContext on every container; the sidecar's shape; the
    application's http_proxy; the API token only in the pilotfish container."""
    config = json.loads(config_of(docs))
    drain = duration_s(config.get("drain_timeout", "15s"))
    listener = config["listeners"][0]["address"]
    specs = pod_specs(docs)
    assert len(specs) == (1 if gateway or app else 0), f"{where}: {len(specs)} pod templates"
    for d, spec in specs:
        name = f"{where}: {d['kind']} {d['metadata']['name']}"
        for c in all_containers(spec):
            check_container(c, name)
        pf = pilotfish_container(spec)
        check_pilotfish_container(pf, name, native, gateway,
                                  drain, spec["terminationGracePeriodSeconds"])
        in_init = pf in spec.get("initContainers", [])
        assert in_init == native, f"{name}: pilotfish in initContainers: {in_init}"
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        token_mounts = [c["name"] for c in all_containers(spec)
                        for m in c.get("volumeMounts", [])
                        if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"]
        reads_api = "kubernetes" in config
        assert token_mounts == (["pilotfish"] if reads_api else []), f"{name}: {token_mounts}"
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(spec):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{name}: {c['name']} mounts unknown {m['name']}"
        cm = [d2 for d2 in docs if d2["kind"] == "ConfigMap"][0]["metadata"]["name"]
        assert volumes["pilotfish-config"]["configMap"]["name"] == cm, name
        apps = [c for c in spec["containers"] if c["name"] != "pilotfish"]
        assert len(apps) == (0 if gateway else 1), f"{name}: application containers"
        for a in apps:
            env = env_of(a)
            proxy = f"http://{listener}"
            assert env["http_proxy"]["value"] == proxy, f"{name}: {a['name']} http_proxy"
            assert env["HTTP_PROXY"]["value"] == proxy, f"{name}: {a['name']} HTTP_PROXY"
        annotations = d["spec"]["template"]["metadata"].get("annotations", {})
        admin_port = config["admin"]["address"].rsplit(":", 1)[1]
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == admin_port, name
        assert annotations.get("prometheus.io/path") == "/stats/prometheus", name
    return specs


def check_services(docs, where):
    """Each Service selects the pods of a template and targets a port they open."""
    pods = [(d["spec"]["template"]["metadata"]["labels"], all_containers(spec))
            for d, spec in pod_specs(docs)]
    for svc in (d for d in docs if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        matched = [cs for labels, cs in pods if sel.items() <= labels.items()]
        assert matched, f"{where}: Service {svc['metadata']['name']} selects no pods"
        names = {p["name"] for cs in matched for c in cs for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, f"{where}: {svc['metadata']['name']} {port}"


# ---- kubectl ----------------------------------------------------------------


def missing_fields(given, decoded, path="$"):
    """The paths in `given` that kubectl's typed decoding dropped (unknown fields)."""
    if isinstance(given, dict):
        if not isinstance(decoded, dict):
            return [path]
        out = []
        for k, v in given.items():
            if k not in decoded:
                out.append(f"{path}.{k}")
            else:
                out += missing_fields(v, decoded[k], f"{path}.{k}")
        return out
    if isinstance(given, list):
        if not isinstance(decoded, list) or len(decoded) < len(given):
            return [path]
        return [p for i, v in enumerate(given)
                for p in missing_fields(v, decoded[i], f"{path}[{i}]")]
    return []


def items_of(output):
    out = json.loads(output)
    return out["items"] if out.get("kind") == "List" else [out]


def kubectl_decode(obj):
    """obj as kubectl's Go types read it, through a --local command that decodes it typed
    (None for kinds without one; their fields are checked by the tests themselves)."""
    kind = obj["kind"]
    if kind in POD_KINDS:
        args = ["set", "env", "--local", "PF_DECODE_CHECK=1"]
    elif kind == "Service":
        sel = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"].items())
        args = ["set", "selector", "--local", sel]
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        args = ["set", "subject", "--local", "--user=pf-decode-check"]
    else:
        return None
    out = run([KUBECTL, *args, "-f", "-", "-o", "json"], stdin=json.dumps(obj))
    return items_of(out.stdout)[0]


KNOWN_TOP = {
    "ServiceAccount": {"apiVersion", "kind", "metadata", "automountServiceAccountToken"},
    "ConfigMap": {"apiVersion", "kind", "metadata", "data"},
    "Role": {"apiVersion", "kind", "metadata", "rules"},
    "ClusterRole": {"apiVersion", "kind", "metadata", "rules"},
    "ServiceMonitor": {"apiVersion", "kind", "metadata", "spec"},
    "PodDisruptionBudget": {"apiVersion", "kind", "metadata", "spec"},
    "HorizontalPodAutoscaler": {"apiVersion", "kind", "metadata", "spec"},
    "NetworkPolicy": {"apiVersion", "kind", "metadata", "spec"},
}


def check_kubectl(docs, text, where, env):
    """kubectl's client-side dry run accepts every object (kinds and versions it knows),
    and its typed decoding keeps every field."""
    proc = run([KUBECTL, "apply", "--dry-run=client", "--validate=false", "-f", "-",
                "-o", "json"], stdin=text, env=env, check=False)
    assert proc.returncode == 0, f"{where}: kubectl apply --dry-run=client:\n{proc.stderr}"
    applied = items_of(proc.stdout)
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == \
        [(d["kind"], d["metadata"]["name"]) for d in docs], where
    for d in docs:
        name = f"{where}: {d['kind']} {d['metadata']['name']}"
        decoded = kubectl_decode(d)
        if decoded is None:
            assert set(d) <= KNOWN_TOP[d["kind"]], f"{name}: fields {sorted(d)}"
        else:
            assert missing_fields(d, decoded) == [], f"{name}: unknown to Kubernetes"


def test_discovery_fake_answers_kubectl_like_an_api_server(discovery):
    """The fake is faithful for what these tests ask: kubectl lists its kinds from it and
    reads a missing object as NotFound."""
    out = run([KUBECTL, "api-resources", "-o", "name"], env=discovery).stdout.split()
    assert {"services", "endpointslices.discovery.k8s.io", "deployments.apps",
            "roles.rbac.authorization.k8s.io", "servicemonitors.monitoring.coreos.com",
            "poddisruptionbudgets.policy", "horizontalpodautoscalers.autoscaling",
            "networkpolicies.networking.k8s.io"} <= set(out)
    proc = run([KUBECTL, "get", "service", "nothing", "-n", NAMESPACE], env=discovery, check=False)
    assert proc.returncode != 0 and 'services "nothing" not found' in proc.stderr, proc.stderr


# ---- the chart's modes -----------------------------------------------------


def test_documented_modes_are_the_ci_values_files():
    files = sorted(os.path.basename(p)[:-len("-values.yaml")]
                   for p in glob.glob(os.path.join(CHART, "ci", "*-values.yaml")))
    assert files == sorted(m["values"] for m in MODES.values() if m["values"])


@pytest.mark.parametrize("mode", MODES)
def test_helm_lint_passes(mode):
    run([HELM, "lint", "--strict", CHART, "-n", NAMESPACE, *values_args(mode)])


@pytest.mark.parametrize("mode", MODES)
def test_renders_exactly_the_expected_kinds(mode):
    m = MODES[mode]
    want = ["ConfigMap", "ServiceAccount"]
    if m["gateway"] or m["app"]:
        want += ["Deployment", "Service", "Service"]
    if m["gateway"]:
        want += ["PodDisruptionBudget"]  # more than one replica
    want += m.get("kinds", [])
    if m["roles"] == "cluster":
        want += ["ClusterRole", "ClusterRoleBinding"]
    else:
        want += ["Role", "RoleBinding"] * len(m["roles"])
    assert kinds(render(mode)) == sorted(want)


def test_chart_discovers_on_demand_unless_told_to_watch_all():
    auto = json.loads(config_of(render("default")))["kubernetes"]["auto_discover"]
    assert auto["mode"] == "on_demand"
    docs = render("default", "--set", "discovery.mode=watch_all")
    assert json.loads(config_of(docs))["kubernetes"]["auto_discover"]["mode"] == "watch_all"
    # the same RBAC either way
    assert check_rbac(docs, "default") == check_rbac(render("default"), "default")


def test_chart_passes_max_watches_per_namespace_to_on_demand():
    auto = json.loads(config_of(render("default")))["kubernetes"]["auto_discover"]
    assert auto["max_watches_per_namespace"] == 32  # the pilotfish default, written out
    docs = render("default", "--set", "discovery.maxWatchesPerNamespace=8")
    assert json.loads(config_of(docs))["kubernetes"]["auto_discover"][
        "max_watches_per_namespace"] == 8
    # watch_all has no per-Service watches to bound: the key is not written
    docs = render("default", "--set", "discovery.mode=watch_all",
                  "--set", "discovery.maxWatchesPerNamespace=8")
    assert "max_watches_per_namespace" not in \
        json.loads(config_of(docs))["kubernetes"]["auto_discover"]


def test_chart_reads_httproutes_only_when_enabled(tmp_path):
    def granted_resources(docs):
        return {(g, r) for d in docs if d["kind"] in ("Role", "ClusterRole")
                for rule in d["rules"] for g in rule["apiGroups"] for r in rule["resources"]}

    route = ("gateway.networking.k8s.io", "httproutes")
    for mode in ("default", "all-namespaces"):
        off = render(mode)
        on = render(mode, "--set", "discovery.httpRoutes=true")
        assert "http_routes" not in json.loads(config_of(off))["kubernetes"]
        assert "http_routes_recheck" not in json.loads(config_of(off))["kubernetes"]
        assert json.loads(config_of(on))["kubernetes"]["http_routes"] is True
        # pilotfish's default, written out; the value passes through
        assert json.loads(config_of(on))["kubernetes"]["http_routes_recheck"] == "60s"
        short = render(mode, "--set", "discovery.httpRoutes=true",
                       "--set", "discovery.httpRoutesRecheck=15s")
        assert json.loads(config_of(short))["kubernetes"]["http_routes_recheck"] == "15s"
        proc = check_config(config_of(short), tmp_path, f"{mode}-recheck.json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert route not in granted_resources(off), mode
        assert route in granted_resources(on), mode
        check_rbac(on, f"{mode} with httpRoutes")
    # without auto-discovery there is nothing to attach routes to: no config key, no rule
    docs = render("explicit", "--set", "discovery.httpRoutes=true",
                  "--set", "discovery.autoDiscover=false")
    assert "http_routes" not in json.loads(config_of(docs)).get("kubernetes", {})
    assert route not in granted_resources(docs)


@pytest.mark.parametrize("mode", MODES)
def test_rbac_is_exactly_get_list_watch_on_services_and_endpointslices(mode):
    docs = render(mode)
    roles = check_rbac(docs, mode)
    want = MODES[mode]["roles"]
    if want == "cluster":
        assert [r["kind"] for r in roles] == ["ClusterRole"]
        assert json.loads(config_of(docs))["kubernetes"]["auto_discover"]["namespaces"] == "all"
    else:
        assert sorted(r["metadata"]["namespace"] for r in roles) == want


@pytest.mark.parametrize("mode", MODES)
def test_every_container_has_probes_limits_and_security_context(mode):
    m = MODES[mode]
    docs = render(mode)
    check_pods(docs, mode, m["native"], m["gateway"], m["app"])
    check_services(docs, mode)


@pytest.mark.parametrize("mode", MODES)
def test_every_object_has_the_standard_labels(mode):
    for d in render(mode):
        labels = d["metadata"].get("labels", {})
        for key in STANDARD_LABELS:
            assert key in labels, f"{d['kind']} {d['metadata']['name']}: no {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    for d, spec in pod_specs(render(mode)):
        pod = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= pod.items()
        assert "app.kubernetes.io/version" not in d["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("mode", MODES)
def test_rendered_config_passes_check_config(mode, tmp_path):
    proc = check_config(config_of(render(mode)), tmp_path, f"{mode}.json")
    assert proc.returncode == 0, f"{mode}: pilotfish --check-config:\n{proc.stdout}{proc.stderr}"


def test_an_access_log_object_reaches_the_config_and_a_bad_one_fails_the_install(tmp_path):
    obj = {"format": "text", "fields": ["time", "status", "path", "grpc_status"], "sample": 0.5}
    cfg = json.loads(config_of(render("static", "--set-json", f"config.accessLog={json.dumps(obj)}")))
    assert cfg["access_log"] == obj
    proc = check_config(json.dumps(cfg), tmp_path, "alog.json")
    assert proc.returncode == 0, proc.stderr
    for bad in ({"format": "xml"}, {"fields": ["latency"]}, {"sample": 2}):
        refused = run([HELM, "template", RELEASE, CHART, "-n", NAMESPACE, *values_args("static"),
                       "--set-json", f"config.accessLog={json.dumps(bad)}"], check=False)
        assert refused.returncode != 0 and "config.accessLog" in refused.stderr, (bad, refused.stderr)


@pytest.mark.parametrize("mode", MODES)
def test_kubectl_accepts_the_rendered_output(mode, discovery):
    check_kubectl(render(mode), render_text(mode), mode, discovery)


def test_gateway_listens_for_the_service_and_sidecar_on_loopback():
    gateway = json.loads(config_of(render("gateway")))
    sidecar = json.loads(config_of(render("default")))
    assert gateway["listeners"][0]["address"] == "0.0.0.0:15001"
    assert sidecar["listeners"][0]["address"] == "127.0.0.1:15001"
    for cfg in (gateway, sidecar):
        assert cfg["admin"]["address"] == "0.0.0.0:9901"  # the kubelet probes the pod IP
    svc = [d for d in render("gateway") if d["kind"] == "Service" and
           d["metadata"]["name"] == FULLNAME][0]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "pf-http",
                                     "protocol": "TCP"}]
    deploy = [d for d in render("gateway") if d["kind"] == "Deployment"][0]
    assert deploy["spec"]["replicas"] == 3


def test_explicit_clusters_routes_and_health_check_defaults():
    cfg = json.loads(config_of(render("explicit")))
    assert "auto_discover" not in cfg["kubernetes"]
    clusters = {c["name"]: c for c in cfg["clusters"]}
    assert clusters["reviews"]["kubernetes"] == {"service": "reviews", "namespace": "shop",
                                                 "port": "http"}
    # No namespace: the release's, written out so that the Role matches it.
    assert clusters["ratings"]["kubernetes"]["namespace"] == NAMESPACE
    default_check = {"path": "/healthz", "interval": "5s", "unhealthy_threshold": 3}
    assert clusters["reviews"]["health_check"] == default_check
    assert clusters["legacy"]["health_check"] == default_check
    assert clusters["ratings"]["health_check"] == {"path": "/health", "interval": "10s"}
    assert [r["cluster"] for r in cfg["listeners"][0]["routes"]] == ["reviews", "ratings", "legacy"]
    auto = json.loads(config_of(render("default", "--set", "healthCheck.path=/hz")))
    assert auto["kubernetes"]["auto_discover"]["cluster"] == {"health_check": {"path": "/hz"}}


def test_static_endpoints_need_no_rbac_and_mount_no_token():
    docs = render("static")
    assert "kubernetes" not in json.loads(config_of(docs))
    for _, spec in pod_specs(docs):
        assert "pilotfish-api-token" not in {v["name"] for v in spec["volumes"]}


def test_config_reload_watch_runs_watch_config_and_rolls_nothing_on_a_config_change():
    for args in ((), ("--set", "config.reload=watch")):
        docs = render("demo", *args)
        pod = pod_specs(docs)[0][0]["spec"]["template"]
        assert "--watch-config" in pilotfish_container(pod["spec"])["args"]
        annotations = pod["metadata"].get("annotations") or {}
        assert "checksum/pilotfish-config" not in annotations
    docs = render("demo", "--set", "config.reload=restart")
    assert "--watch-config" not in pilotfish_container(pod_specs(docs)[0][1])["args"]
    docs = render("demo", "--set", "prometheus.scrape=false")
    assert "annotations" not in pod_specs(docs)[0][0]["spec"]["template"]["metadata"]


def test_config_change_changes_the_checksum_annotation():
    def checksum(*extra):
        docs = render("demo", "--set", "config.reload=restart", *extra)
        pod = pod_specs(docs)[0][0]["spec"]["template"]["metadata"]["annotations"]
        return pod["checksum/pilotfish-config"], config_of(docs)

    base, base_config = checksum()
    changed, changed_config = checksum("--set", "config.drainTimeout=20s")
    assert base != changed
    # The ConfigMap's data is the config plus the final newline of a YAML block.
    assert base == hashlib.sha256(base_config.rstrip("\n").encode()).hexdigest()
    assert changed == hashlib.sha256(changed_config.rstrip("\n").encode()).hexdigest()
    assert checksum("--set", "demo.replicas=3")[0] == base


def test_prometheus_annotations_can_be_turned_off():
    docs = render("demo", "--set", "prometheus.scrape=false", "--set", "config.reload=restart")
    annotations = pod_specs(docs)[0][0]["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("prometheus.io/") for k in annotations)
    assert "checksum/pilotfish-config" in annotations


def test_service_monitor_only_when_the_prometheus_operator_api_exists():
    assert "ServiceMonitor" not in kinds(render("demo"))
    for mode in ("demo", "gateway"):
        docs = render(mode, "--api-versions", "monitoring.coreos.com/v1")
        monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
        assert len(monitors) == 1, mode
        sel = monitors[0]["spec"]["selector"]["matchLabels"]
        admin = [d for d in docs if d["kind"] == "Service" and
                 sel.items() <= d["metadata"]["labels"].items()]
        assert [a["metadata"]["name"] for a in admin] == [f"{FULLNAME}-admin"], mode
        assert monitors[0]["spec"]["endpoints"][0]["port"] == admin[0]["spec"]["ports"][0]["name"]
        assert monitors[0]["spec"]["endpoints"][0]["path"] == "/stats/prometheus"
    docs = render("demo", "--api-versions", "monitoring.coreos.com/v1",
                  "--set", "serviceMonitor.enabled=false")
    assert "ServiceMonitor" not in kinds(docs)
    docs = render("default", "--api-versions", "monitoring.coreos.com/v1")
    assert "ServiceMonitor" not in kinds(docs)  # no pods of the chart's own to scrape


def helm_install_dry_run(env, *extra):
    return run([HELM, "install", RELEASE, CHART, "-n", NAMESPACE, "--dry-run=client",
                "--disable-openapi-validation", *extra], env=env)


def test_service_monitor_follows_the_clusters_api_and_notes_show_the_admin_server(
        discovery, tmp_path):
    """helm reads the API groups from discovery: with the Prometheus Operator's group the
    install has a ServiceMonitor, without it none; the notes say how to reach the admin."""
    out = helm_install_dry_run(discovery, *values_args("demo")).stdout
    assert "kind: ServiceMonitor" in out
    notes = out.split("NOTES:", 1)[1]
    assert f"port-forward svc/{FULLNAME}-admin 9901" in notes
    for path in ("/ready", "/clusters", "/stats/prometheus"):
        assert f"http://127.0.0.1:9901{path}" in notes
    bare = DiscoveryServer(groups={"apps", "rbac.authorization.k8s.io", "discovery.k8s.io",
                                   "policy"})
    bare.start()
    try:
        env = dict(tool_env(), KUBECONFIG=bare.kubeconfig(str(tmp_path / "bare.json")))
        out = helm_install_dry_run(env, *values_args("gateway")).stdout
    finally:
        bare.stop()
    assert "kind: ServiceMonitor" not in out
    notes = out.split("NOTES:", 1)[1]
    assert f"http://{FULLNAME}.{NAMESPACE}:8080/" in notes
    assert "Services and EndpointSlices in payments, shop" in notes


BROKEN_VALUES = [
    (["--set", "mode=proxy"], 'mode: mode must be one of the following: "sidecar", "gateway"'),
    (["--set", "ports.admin=70000"], "ports.admin: Must be less than or equal to 65535"),
    (["--set", "discovery.scope=cluster"],
     'discovery.scope: discovery.scope must be one of the following: "namespaces", "all"'),
    (["--set", "discovery.maxWatchesPerNamespace=0"],
     "discovery.maxWatchesPerNamespace: Must be greater than or equal to 1"),
    (["--set", "discovery.namespce=shop"],
     "discovery: Additional property namespce is not allowed"),
    (["--set", "resources.limits=null"], "resources: limits is required"),
    (["--set", "securityContext.runAsNonRoot=false"], "securityContext.runAsNonRoot: "),
    (["--set-string", "config.drainTimeout=15"], "config.drainTimeout: Does not match pattern"),
    (["--set-string", "discovery.httpRoutesRecheck=1 minute"],
     "discovery.httpRoutesRecheck: Does not match pattern"),
    (["--set", "config.reload=sometimes"], "config.reload: config.reload must be one of"),
    (["--set", "clusters[0].name=a", "--set", "clusters[0].kubernetes.port=Bad_Port"],
     "clusters.0.kubernetes: service is required"),
    (["--set", "discovery.namespaces[0]=Shop"], "discovery.namespaces.0: Does not match pattern"),
    (["--set", "commonLabels.app\\.kubernetes\\.io/name=x"],
     'commonLabels: Property name of "app.kubernetes.io/name" does not match'),
    (["--set", "gateway.service.type=External"], "gateway.service.type: gateway.service.type must be"),
    (["--set", "resources.limits.memory=null"], "resources.limits: memory is required"),
]


@pytest.mark.parametrize("args,message", BROKEN_VALUES, ids=[" ".join(a) for a, _ in BROKEN_VALUES])
def test_broken_values_are_refused_with_the_schema_message(args, message, tmp_path):
    proc = run([HELM, "template", RELEASE, CHART, "-n", NAMESPACE, *args], check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_a_broken_values_file_is_refused_with_the_schema_message(tmp_path):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("mode: Sidecar\nports:\n  listener: http\nimage:\n  tag: 1\n")
    proc = run([HELM, "template", RELEASE, CHART, "-n", NAMESPACE, "-f", str(bad)], check=False)
    assert proc.returncode != 0
    for message in ("ports.listener: Invalid type. Expected: integer, given: string",
                    'mode: mode must be one of the following: "sidecar", "gateway"',
                    "image.tag: Invalid type. Expected: string, given: integer"):
        assert message in proc.stderr, proc.stderr


def test_native_sidecar_is_refused_on_kubernetes_before_1_29():
    proc = run([HELM, "template", RELEASE, CHART, "--kube-version", "1.28.3",
                *values_args("demo")], check=False)
    assert proc.returncode != 0
    assert "sidecar.native needs Kubernetes 1.29 or later" in proc.stderr
    assert "set sidecar.native=false" in proc.stderr
    run([HELM, "template", RELEASE, CHART, "--kube-version", "1.28.3",
         *values_args("sidecar-classic")])


# ---- what platform teams set -------------------------------------------------


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def gateway_pod_labels(docs):
    deploy = of_kind(docs, "Deployment")[0]
    return deploy["spec"]["template"]["metadata"]["labels"]


def test_default_install_runs_no_demo_application(discovery):
    assert not of_kind(render("default"), "Deployment")
    demo = of_kind(render("demo"), "Deployment")
    assert [d["metadata"]["name"] for d in demo] == [f"{FULLNAME}-demo"]
    notes = helm_install_dry_run(discovery).stdout.split("NOTES:", 1)[1]
    assert '"pilotfish.sidecar" template' in notes
    assert "--set demo.enabled=true" in notes


@pytest.mark.parametrize("args,budget", [
    ([], True),  # gateway-values.yaml: 3 replicas
    (["--set", "gateway.replicas=1"], False),
    (["--set", "gateway.replicas=1", "--set", "gateway.autoscaling.enabled=true"], True),
    (["--set", "gateway.podDisruptionBudget.enabled=false"], False),
], ids=["3-replicas", "1-replica", "autoscaled-from-2", "disabled"])
def test_gateway_disruption_budget_only_when_more_than_one_replica(args, budget):
    docs = render("gateway", *args)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert len(pdbs) == (1 if budget else 0)
    if budget:
        spec = pdbs[0]["spec"]
        assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
        assert spec["selector"]["matchLabels"].items() <= gateway_pod_labels(docs).items()


def test_gateway_autoscaler_owns_the_replicas():
    docs = render("gateway-production")
    hpa = of_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]
    deploy = of_kind(docs, "Deployment")[0]
    assert "replicas" not in deploy["spec"]  # an upgrade must not reset the scale
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deploy["metadata"]["name"]}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    # Utilization is a share of the request: the container must have one.
    pf = pilotfish_container(pod_specs(docs)[0][1])
    assert "cpu" in pf["resources"]["requests"]
    assert not of_kind(render("gateway"), "HorizontalPodAutoscaler")
    proc = run([HELM, "template", RELEASE, CHART, *values_args("gateway-production"),
                "--set", "gateway.autoscaling.minReplicas=20"], check=False)
    assert proc.returncode != 0
    assert "gateway.autoscaling: minReplicas 20 is above maxReplicas 12" in proc.stderr


def test_gateway_spreads_over_nodes_and_zones_unless_told_otherwise():
    docs = render("gateway")
    spread = pod_specs(docs)[0][1]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname",
                                                  "topology.kubernetes.io/zone"]
    for c in spread:
        assert c["maxSkew"] == 1 and c["whenUnsatisfiable"] == "ScheduleAnyway", c
        assert c["labelSelector"]["matchLabels"].items() <= gateway_pod_labels(docs).items()
    own = [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}]
    with_own = render("gateway", "--set-json", f"topologySpreadConstraints={json.dumps(own)}")
    assert pod_specs(with_own)[0][1]["topologySpreadConstraints"] == own
    off = render("gateway", "--set", "gateway.spreadByDefault=false")
    assert "topologySpreadConstraints" not in pod_specs(off)[0][1]
    assert "topologySpreadConstraints" not in pod_specs(render("demo"))[0][1]


def test_gateway_load_balancer_service():
    docs = render("gateway-production")
    svc = [d for d in of_kind(docs, "Service") if d["metadata"]["name"] == FULLNAME][0]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    admin = [d for d in of_kind(docs, "Service") if d["metadata"]["name"] != FULLNAME][0]
    assert admin["spec"]["type"] == "ClusterIP" and "annotations" not in admin["metadata"]
    plain = [d for d in of_kind(render("gateway"), "Service") if d["metadata"]["name"] == FULLNAME]
    assert "externalTrafficPolicy" not in plain[0]["spec"]


def network_policy_sources(rule):
    """([ports], [namespaces], [CIDRs]) of an ingress rule."""
    peer, *blocks = rule["from"]
    (expr,) = peer["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "In"
    return ([p["port"] for p in rule["ports"]], expr["values"],
            [b["ipBlock"]["cidr"] for b in blocks])


def test_gateway_network_policy_admits_the_listener_and_admin_from_named_namespaces():
    docs = render("gateway-production")
    (policy,) = of_kind(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec
    assert spec["podSelector"]["matchLabels"].items() <= gateway_pod_labels(docs).items()
    rules = [network_policy_sources(r) for r in spec["ingress"]]
    assert rules == [(["pf-http"], ["shop", "payments"], ["10.0.0.0/8"]),
                     (["pf-admin"], ["monitoring"], [])]
    # The ports it names are the pilotfish container's.
    ports = {p["name"] for p in pilotfish_container(pod_specs(docs)[0][1])["ports"]}
    assert {"pf-http", "pf-admin"} <= ports
    (policy,) = of_kind(render("gateway", "--set", "gateway.networkPolicy.enabled=true"),
                        "NetworkPolicy")
    assert [network_policy_sources(r) for r in policy["spec"]["ingress"]] == [
        (["pf-http"], [NAMESPACE], []), (["pf-admin"], [NAMESPACE], [])]
    assert not of_kind(render("gateway"), "NetworkPolicy")
    assert not of_kind(render("demo", "--set", "gateway.networkPolicy.enabled=true"),
                       "NetworkPolicy")


@pytest.mark.parametrize("mode", ["demo", "gateway-production"])
def test_extra_args_volumes_and_mounts_reach_the_pilotfish_container(mode):
    extra = [] if mode == "gateway-production" else [
        "--set-json", 'extraArgs=["--workers","2"]',
        "--set-json", 'extraVolumes=[{"name":"client-cert","secret":{"secretName":"c"}}]',
        "--set-json", 'extraVolumeMounts=[{"name":"client-cert","mountPath":"/etc/pilotfish-tls",'
                      '"readOnly":true}]']
    docs = render(mode, *extra)
    spec = pod_specs(docs)[0][1]
    pf = pilotfish_container(spec)
    assert pf["args"][-2:] == ["--workers", "2"]
    assert pf["args"][:2] == ["--config", "/etc/pilotfish/pilotfish.json"]
    assert {"name": "client-cert", "mountPath": "/etc/pilotfish-tls", "readOnly": True} in \
        pf["volumeMounts"]
    assert "client-cert" in {v["name"] for v in spec["volumes"]}
    apps = [c for c in spec["containers"] if c["name"] != "pilotfish"]
    for a in apps:
        assert "client-cert" not in {m["name"] for m in a.get("volumeMounts", [])}
    proc = run([HELM, "template", RELEASE, CHART, "--set-json",
                'extraVolumeMounts=[{"name":"x","mountPath":"/etc/pilotfish"}]'], check=False)
    assert proc.returncode != 0 and "extraVolumeMounts.0.mountPath" in proc.stderr


def test_common_labels_annotations_and_priority_class():
    docs = render("gateway-production")
    for d in docs:
        assert d["metadata"]["labels"]["team"] == "platform", f"{d['kind']}"
    deploy = of_kind(docs, "Deployment")[0]
    assert deploy["metadata"]["annotations"] == {"owner": "platform@example.com"}
    assert "team" not in deploy["spec"]["selector"]["matchLabels"]
    pod = deploy["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == \
        "true"
    assert pod["spec"]["priorityClassName"] == "platform-critical"
    plain = of_kind(render("gateway"), "Deployment")[0]
    assert "annotations" not in plain["metadata"]
    assert "priorityClassName" not in plain["spec"]["template"]["spec"]


def test_image_by_digest():
    pf = pilotfish_container(pod_specs(render("gateway-production"))[0][1])
    assert pf["image"] == ("registry.example.com/pilotfish@sha256:"
                           "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    proc = run([HELM, "template", RELEASE, CHART, "--set", "image.digest=sha256:abc"],
               check=False)
    assert proc.returncode != 0 and "image.digest: Does not match pattern" in proc.stderr


def test_service_monitor_interval_timeout_and_relabelings():
    docs = render("gateway-production", "--api-versions", "monitoring.coreos.com/v1")
    (endpoint,) = of_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                        "targetLabel": "node", "action": "replace"}]
    assert endpoint["metricRelabelings"] == [{"sourceLabels": ["__name__"],
                                              "regex": "pilotfish_dns_.*", "action": "drop"}]
    (plain,) = of_kind(render("demo", "--api-versions", "monitoring.coreos.com/v1"),
                       "ServiceMonitor")[0]["spec"]["endpoints"]
    assert set(plain) == {"port", "path", "interval"}
    proc = run([HELM, "template", RELEASE, CHART, "--set-json",
                'serviceMonitor.relabelings=[{"action":"explode"}]'], check=False)
    assert proc.returncode != 0 and "serviceMonitor.relabelings.0.action" in proc.stderr


# Values that make a config pilotfish refuses, each with the same change made to a config
# the chart renders (static mode): helm must refuse the values, pilotfish the config.
def _unknown_route_cluster(cfg):
    cfg["listeners"][0]["routes"][0]["cluster"] = "nope"


def _duplicate_cluster(cfg):
    cfg["clusters"].append(dict(cfg["clusters"][0]))


def _unknown_cluster_key(cfg):
    cfg["clusters"][0]["weight"] = 2


def _bad_health_duration(cfg):
    cfg["clusters"][0]["health_check"] = {"path": "/healthz", "interval": "5 s"}


def _no_endpoints(cfg):
    del cfg["clusters"][0]["endpoints"]


def _bad_lb_policy(cfg):
    cfg["clusters"][0]["lb_policy"] = "fastest"


def _unknown_retry_key(cfg):
    cfg["listeners"][0]["routes"][0]["retry"] = {"attempts": 3}


def _endpoint_without_port(cfg):
    cfg["clusters"][0]["endpoints"] = ["10.0.0.5"]


def _breaker_of_zero(cfg):
    cfg["clusters"][0]["circuit_breakers"] = {"max_connections": 0}


def _unknown_mirror_cluster(cfg):
    cfg["listeners"][0]["routes"][0]["mirror"] = {"cluster": "nope"}


def _redirect_with_rewrite(cfg):
    route = cfg["listeners"][0]["routes"][0]
    del route["cluster"]
    route["redirect"] = {"status": 302}
    route["rewrite"] = {"prefix": "/"}


def _unknown_match_key(cfg):
    cfg["listeners"][0]["routes"][0]["match"]["verb"] = "GET"


REFUSED_CONFIGS = [
    (["--set", "routes[0].cluster=nope"], 'routes[0].cluster: unknown cluster "nope"; clusters: web',
     _unknown_route_cluster),
    (["--set", "clusters[1].name=web", "--set", "clusters[1].endpoints[0]=10.0.0.5:8080"],
     'clusters[1].name: duplicate cluster name "web" (also clusters[0])', _duplicate_cluster),
    (["--set", "clusters[0].weight=2"], "clusters.0: Additional property weight is not allowed",
     _unknown_cluster_key),
    (["--set", "healthCheck.interval=5 s"], "healthCheck.interval: Does not match pattern",
     _bad_health_duration),
    (["--set-json", 'clusters=[{"name":"web"}]'], "clusters.0: endpoints is required",
     _no_endpoints),
    (["--set", "clusters[0].lb_policy=fastest"], "clusters.0.lb_policy: clusters.0.lb_policy must be",
     _bad_lb_policy),
    (["--set", "routes[0].match.verb=GET"],
     "routes.0.match: Additional property verb is not allowed", _unknown_match_key),
    (["--set", "routes[0].retry.attempts=3"],
     "routes.0.retry: Additional property attempts is not allowed", _unknown_retry_key),
    (["--set", "clusters[0].endpoints[0]=10.0.0.5"], "clusters.0.endpoints.0: Must validate",
     _endpoint_without_port),
    (["--set", "routes[0].mirror.cluster=nope"], 'routes[0].mirror.cluster: unknown cluster "nope"',
     _unknown_mirror_cluster),
    (["--set", "routes[0].redirect.status=304"], "routes.0.redirect.status: routes.0.redirect.status must be",
     _redirect_with_rewrite),
    (["--set", "clusters[0].circuit_breakers.max_connections=0"],
     "clusters.0.circuit_breakers.max_connections: Must be greater than or equal to 1",
     _breaker_of_zero),
]


@pytest.mark.parametrize("args,message,change", REFUSED_CONFIGS,
                         ids=[c.__name__.strip("_") for _, _, c in REFUSED_CONFIGS])
def test_a_config_pilotfish_refuses_fails_the_install(args, message, change, tmp_path):
    proc = run([HELM, "template", RELEASE, CHART, "-n", NAMESPACE, *values_args("static"),
                *args], check=False)
    assert proc.returncode != 0, f"helm rendered it:\n{proc.stdout}"
    assert message in proc.stderr, proc.stderr
    cfg = json.loads(config_of(render("static")))
    change(cfg)
    refused = check_config(json.dumps(cfg), tmp_path, "changed.json")
    assert refused.returncode != 0, f"pilotfish --check-config accepts {cfg}"


def test_listener_and_admin_on_one_port_fail_the_install():
    proc = run([HELM, "template", RELEASE, CHART, "--set", "ports.admin=15001"], check=False)
    assert proc.returncode != 0
    assert "ports.listener and ports.admin are both 15001" in proc.stderr


def test_helm_install_refuses_a_refused_config(discovery):
    proc = run([HELM, "install", RELEASE, CHART, "-n", NAMESPACE, "--dry-run=client",
                "--disable-openapi-validation", "--set", "routes[0].cluster=nope",
                "--set", "routes[0].match.prefix=/"], env=discovery, check=False)
    assert proc.returncode != 0
    assert 'routes[0].cluster: unknown cluster "nope"' in proc.stderr, proc.stderr


# Values documented as a whole in the chart README's table (their keys are Kubernetes' own).
WHOLE_VALUES = {"resources", "podSecurityContext", "securityContext", "demo.resources",
                "probes.startup", "probes.readiness", "probes.liveness"}


def value_paths(values, prefix=""):
    for key, value in values.items():
        path = prefix + key
        if isinstance(value, dict) and value and path not in WHOLE_VALUES:
            yield from value_paths(value, path + ".")
        else:
            yield path


def test_every_value_is_in_the_schema_and_the_chart_readme():
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(CHART, "README.md")) as f:
        keys = [line.split("|")[1] for line in f if line.startswith("| `")]
    for path in value_paths(values):
        node = schema
        for part in path.split("."):
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
            assert part in node.get("properties", {}), f"values.schema.json lacks {path}"
            node = node["properties"][part]
        # A row names the path, or an ancestor's path and the rest (`gateway.replicas`,
        # `.service.type`).
        parts = path.split(".")

        def names_it(row):
            return f"`{path}`" in row or f"`{path}," in row or any(
                f"`{'.'.join(parts[:i])}." in row and f"`.{'.'.join(parts[i:])}`" in row
                for i in range(1, len(parts)))

        assert any(names_it(row) for row in keys), \
            f"the chart README's table lacks {path}"


# ---- the named template in a parent chart (the chart README's example) -----


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory):
    """helm/pilotfish/examples/shop with its pilotfish dependency built, as a user would."""
    root = tmp_path_factory.mktemp("parent") / "shop"
    shutil.copytree(os.path.join(CHART, "examples", "shop"), root)
    chart_yaml = root / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("file://../..", f"file://{CHART}"))
    run([HELM, "dependency", "build", str(root)])
    return root


def test_chart_readme_example_is_the_tested_one():
    with open(os.path.join(CHART, "README.md")) as f:
        readme = f.read()
    for name in ("Chart.yaml", "values.yaml", "templates/deployment.yaml"):
        with open(os.path.join(CHART, "examples", "shop", name)) as f:
            assert f.read().strip() in readme, f"README.md lacks examples/shop/{name}"


def test_sidecar_template_adds_pilotfish_to_a_users_deployment(parent_chart, discovery):
    text = run([HELM, "template", "web", str(parent_chart), "-n", "shop"]).stdout
    docs = docs_of(text)
    assert kinds(docs) == ["ConfigMap", "Deployment", "Role", "Role", "RoleBinding",
                           "RoleBinding", "ServiceAccount"]
    check_rbac(docs, "shop chart", namespace="shop")
    assert sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "Role") == \
        ["payments", "shop"]
    specs = check_pods(docs, "shop chart", native=True, gateway=False, app=True)
    assert specs[0][1]["serviceAccountName"] == "web-pilotfish"
    check_kubectl(docs, text, "shop chart", discovery)
    classic = run([HELM, "template", "web", str(parent_chart), "-n", "shop",
                   "--set", "pilotfish.sidecar.native=false"]).stdout
    pf = pilotfish_container(pod_specs(docs_of(classic))[0][1])
    assert "restartPolicy" not in pf and pf["lifecycle"]["preStop"]


# ---- manifests/ -------------------------------------------------------------


def test_manifests_hold_the_documented_objects():
    got = sorted((name, d["kind"]) for name, d in manifests())
    assert got == sorted([
        ("clusterrole.yaml", "ClusterRole"), ("clusterrole.yaml", "ClusterRoleBinding"),
        ("configmap.yaml", "ConfigMap"),
        ("deployment-classic-sidecar.yaml", "Deployment"),
        ("deployment-native-sidecar.yaml", "Deployment"),
        ("role.yaml", "Role"), ("role.yaml", "RoleBinding"),
        ("service.yaml", "Service"), ("serviceaccount.yaml", "ServiceAccount")])


def manifests_install(form):
    """The objects of one install: the README's `kubectl apply -f` list for `form`."""
    files = {"serviceaccount.yaml", "role.yaml", "configmap.yaml", "service.yaml",
             f"deployment-{form}-sidecar.yaml"}
    return [d for name, d in manifests() if name in files]


@pytest.mark.parametrize("form", ["native", "classic"])
def test_manifests_rbac_probes_limits_and_security_context(form):
    docs = manifests_install(form)
    check_rbac(docs, form, namespace="default")
    check_rbac([d for _, d in manifests() if d["kind"] in
                ("ClusterRole", "ClusterRoleBinding", "ServiceAccount")], "clusterrole.yaml",
               namespace="default")
    check_pods(docs, f"manifests ({form})", native=form == "native", gateway=False, app=True)
    check_services(docs, f"manifests ({form})")


def test_manifests_sidecar_is_the_charts_sidecar():
    """The plain YAML and the chart's default render run pilotfish the same way."""
    chart_pf = pilotfish_container(pod_specs(render("demo"))[0][1])
    plain = [d for name, d in manifests() if name == "deployment-native-sidecar.yaml"]
    plain_pf = pilotfish_container(plain[0]["spec"]["template"]["spec"])
    assert plain_pf == chart_pf
    chart_volumes = pod_specs(render("demo"))[0][1]["volumes"]
    plain_volumes = plain[0]["spec"]["template"]["spec"]["volumes"]
    for v in chart_volumes + plain_volumes:
        if "configMap" in v:
            v["configMap"]["name"] = "<config>"
    assert plain_volumes == chart_volumes


def test_manifests_config_passes_check_config(tmp_path):
    proc = check_config(config_of([d for _, d in manifests()]), tmp_path, "manifests.json")
    assert proc.returncode == 0, f"manifests/configmap.yaml:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", manifest_files(), ids=os.path.basename)
def test_kubectl_accepts_the_manifests(path, discovery):
    with open(path) as f:
        text = f.read()
    check_kubectl(docs_of(text), text, os.path.basename(path), discovery)


# ---- versions and the Dockerfile ---------------------------------------------


def pilotfish_version():
    with open(os.path.join(REPO, "cmd", "main.c")) as f:
        return re.search(r'#define PILOTFISH_VERSION "([^"]+)"', f.read()).group(1)


def test_chart_image_and_manifests_run_this_pilotfish_version():
    version = pilotfish_version()
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        assert yaml.safe_load(f)["appVersion"] == version
    with open(os.path.join(REPO, "Dockerfile")) as f:
        assert f'org.opencontainers.image.version="{version}"' in f.read()
    for name, d in manifests():
        for _, spec in pod_specs([d]):
            assert pilotfish_container(spec)["image"] == f"pilotfish:{version}", name


def dockerfile_stages():
    """{stage name: (base image, [packages apt-get installs], [RUN commands])}, the
    unnamed last stage as "final"."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            words = line.split()
            current = words[3] if len(words) == 4 and words[2].upper() == "AS" else "final"
            stages[current] = (words[1], [], [])
        elif line.startswith("RUN ") and current:
            stages[current][2].append(line[4:])
            m = re.search(r"apt-get install [^&]*?--no-install-recommends ([^&]+)", line)
            if m:
                stages[current][1].extend(m.group(1).split())
    return stages


def make_var(name):
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", REPO,
                          "--eval", f"print-var: ; @echo $({name})", "print-var"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def deb_package_of(path):
    """The Debian package that installed path: the path as given (a -dev package's .so
    link), else the file it resolves to, else that under /lib (merged /usr)."""
    real = os.path.realpath(path)
    for candidate in (path, real, real.replace("/usr/lib/", "/lib/", 1)):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0]
    pytest.fail(f"no Debian package has {path}")


LIBDIR = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                        text=True).stdout.strip()


def lib_packages():
    """For each -lX of the Makefile's LIBS and DLOPEN_LIBS outside libc: (dev package,
    runtime package)."""
    out = []
    for flag in make_var("LIBS") + make_var("DLOPEN_LIBS"):
        lib = flag[2:]
        if lib in ("pthread", "m", "dl", "rt"):
            continue  # libc6, in every Debian image
        so = f"/usr/lib/{LIBDIR}/lib{lib}.so"
        out.append((deb_package_of(so), deb_package_of(os.path.realpath(so))))
    assert out, "the Makefile's LIBS names no library"
    return out


def test_dockerfile_builds_with_the_makefiles_packages_and_target():
    stages = dockerfile_stages()
    assert sorted(stages) == ["build", "final", "runtime"]
    build_image, build_pkgs, build_runs = stages["build"]
    assert build_image == "debian:12" and stages["runtime"][0] == "debian:12"
    # The final stage holds only what the runtime stage copies out (test_image.py runs it).
    assert stages["final"] == ("scratch", [], [])
    deb_pkgs = make_var("DEB_PKGS")
    assert set(build_pkgs) <= set(deb_pkgs), set(build_pkgs) - set(deb_pkgs)
    llhttp = deb_package_of(os.path.join(make_var("LLHTTP_SRC")[0], "llhttp.c"))
    # The C library's headers: gcc without its recommends does not pull them in.
    libc_dev = deb_package_of("/usr/include/stdint.h")
    want = {"gcc", "make", "pkg-config", llhttp, libc_dev} | {dev for dev, _ in lib_packages()}
    assert set(build_pkgs) == want
    assert any(re.search(r"\bmake\b.* build/pilotfish$", r) for r in build_runs), build_runs


def test_dockerfile_runtime_has_exactly_the_libraries_pilotfish_links():
    _, run_pkgs, _ = dockerfile_stages()["runtime"]
    assert set(run_pkgs) == {rt for _, rt in lib_packages()}
    # Every library the built binary needs is in those packages (or in libc6).
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(
        ["readelf", "-d", PILOTFISH_BIN], capture_output=True, text=True).stdout)
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for lib in needed:
        if lib.startswith(("libasan", "libubsan", "liblsan", "libtsan")):
            continue  # `make asan` links the sanitizer runtimes; the image's build never does
        m = re.search(rf"^\s*{re.escape(lib)} \(.*\) => (\S+)$", cache, re.M)
        assert m, lib
        assert deb_package_of(m.group(1)) in set(run_pkgs) | {"libc6"}, lib


def test_dockerfile_runs_as_non_root_with_the_binary_as_entrypoint():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read()
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/pilotfish"\]$', text, re.M)
    with open(os.path.join(CHART, "values.yaml")) as f:
        assert yaml.safe_load(f)["securityContext"]["runAsUser"] == 65532


# ---- the RBAC against what discovery asks for ---------------------------------


def grants(docs):
    """{(namespace or "*" for every namespace, apiGroup, resource): {verbs}} of the RBAC."""
    out = {}
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        ns = role["metadata"]["namespace"] if role["kind"] == "Role" else "*"
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((ns, group, resource), set()).update(rule["verbs"])
    return out


def discovery_objects(config):
    """A Service and an EndpointSlice for every explicit Kubernetes cluster, so that each
    has endpoints and pilotfish gets ready."""
    objs = []
    for c in config["clusters"]:
        k = c.get("kubernetes")
        if k:
            port = k.get("port", "http")
            name = port if isinstance(port, str) else "http"
            number = port if isinstance(port, int) else 8080
            objs += [k8s_service(k["service"], [(name, number)], namespace=k["namespace"]),
                     k8s_slice(f"{k['service']}-a", k["service"], number, ["10.0.0.9"],
                               namespace=k["namespace"], port_name=name)]
    return objs


# Every RBAC shape: a Role in the release's namespace, Roles in two others, a ClusterRole,
# Roles for explicit clusters only, and the plain manifests.
RBAC_CASES = ["default", "gateway", "all-namespaces", "explicit", "manifests", "http-routes"]


@pytest.mark.parametrize("case", RBAC_CASES)
def test_rbac_matches_what_discovery_asks_the_api_server_for(case, tmp_path, start_pilotfish):
    """pilotfish runs the rendered config against the fake API server, which records every
    request; the RBAC must allow each of them, and grant no resource in no namespace that
    pilotfish does not read. get is granted too, as Kubernetes convention (and the issue)
    pairs it with list and watch."""
    if case == "manifests":
        docs, namespace = manifests_install("native"), "default"
    else:
        docs, namespace = render(case), NAMESPACE
    config = json.loads(config_of(docs))
    config["admin"]["address"] = movable_address()
    config["listeners"][0]["address"] = movable_address()
    api = K8sApi(str(tmp_path)).start()
    try:
        objs = discovery_objects(config)
        if objs:
            api.apply(*objs)
        # The connection a pod gets from its service account, made explicit for the fake.
        config["kubernetes"].update(api.config(namespace=namespace))
        pf = start_pilotfish(config)
        auto = config["kubernetes"].get("auto_discover")
        if auto and auto.get("mode") == "on_demand":
            # nothing is read until a request names a Service: name one in each namespace
            for ns in auto["namespaces"] if auto["namespaces"] != "all" else [namespace]:
                assert pf.get("/", host=f"probe.{ns}").status == 503

        def watching_all_it_listed():
            reqs = api.requests()
            listed = {(r["group"], r["resource"], r["namespace"]) for r in reqs
                      if r["verb"] == "list"}
            watched = {(r["group"], r["resource"], r["namespace"]) for r in reqs
                       if r["verb"] == "watch"}
            return reqs if listed and listed <= watched else None

        requests = wait_for(watching_all_it_listed, 15.0, "pilotfish to list and watch")
    finally:
        api.stop()
    granted = grants(docs)
    used = set()
    for r in requests:
        ns = r["namespace"] or "*"  # a cluster-wide list or watch needs a ClusterRole
        key = next((k for k in ((ns, r["group"], r["resource"]), ("*", r["group"], r["resource"]))
                    if r["verb"] in granted.get(k, ())), None)
        assert key, f"{case}: RBAC does not allow {r['verb']} {r['resource']} in {ns!r}"
        used.add(key)
    assert used == set(granted), f"{case}: granted but never used: {set(granted) - used}"
    verbs = {r["verb"] for r in requests}
    for key, allowed in granted.items():
        assert allowed - verbs <= {"get"}, f"{case}: {key} grants unused {allowed - verbs}"


# ---- TLS from Secrets --------------------------------------------------------------

TLS_VALUES = os.path.join(CHART, "examples", "tls-values.yaml")
TLS_MOUNTS = {"pilotfish-tls-listener": "/etc/pilotfish-tls/listener",
              "pilotfish-tls-upstream-ca": "/etc/pilotfish-tls/upstream-ca",
              "pilotfish-tls-upstream-client": "/etc/pilotfish-tls/upstream-client"}


def kubelet_secret_dir(root, files):
    """A directory as the kubelet mounts a Secret: files in a timestamped directory, `..data`
    a symlink to it, each key a symlink through `..data`."""
    data = root / "..2026_12_04_00_00_00.000000001"
    data.mkdir(parents=True)
    for key, text in files.items():
        (data / key).write_text(text)
        (root / key).symlink_to(os.path.join("..data", key))
    (root / "..data").symlink_to(data.name)


def openssl_pair(tmp_path, name, ca=None):
    """(cert PEM, key PEM) of an ECDSA certificate, signed by ca (a pair) or self-signed."""
    key, crt = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    if ca is None:
        args = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                "-days", "2", "-subj", f"/CN={name}"]
    else:
        csr = tmp_path / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                        str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True,
                       timeout=30)
        (tmp_path / "ca.key").write_text(ca[1])
        (tmp_path / "ca.crt").write_text(ca[0])
        args = ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(tmp_path / "ca.crt"),
                "-CAkey", str(tmp_path / "ca.key"), "-CAcreateserial", "-days", "2", "-out",
                str(crt)]
    subprocess.run(args, check=True, capture_output=True, timeout=30)
    return crt.read_text(), key.read_text()


@pytest.mark.parametrize("mode", ["gateway", "sidecar"])
def test_tls_values_mount_secrets_and_the_rendered_config_passes_check_config(mode, tmp_path):
    # sidecar: the demo application's pod shows what "pilotfish.sidecar" gives your own
    args = ["-f", TLS_VALUES, "--set", f"mode={mode}", "--set", "demo.enabled=true"]
    run([HELM, "lint", "--strict", CHART, "-n", NAMESPACE, *args])
    docs = render("default", *args)
    for _, spec in pod_specs(docs):
        pf = pilotfish_container(spec)
        mounts = {m["name"]: m for m in pf["volumeMounts"]}
        for name, path in TLS_MOUNTS.items():
            # a whole directory, read-only: a subPath mount would never see a renewal
            assert mounts[name] == {"name": name, "mountPath": path, "readOnly": True}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["pilotfish-tls-listener"]["secret"] == {"secretName": "edge-tls"}
        assert volumes["pilotfish-tls-upstream-ca"]["configMap"] == {"name": "mesh-ca"}
        assert volumes["pilotfish-tls-upstream-client"]["secret"] == \
            {"secretName": "edge-client-tls"}
        for c in all_containers(spec):  # the application never sees the keys
            if c["name"] != "pilotfish":
                assert not set(TLS_MOUNTS) & {m["name"] for m in c.get("volumeMounts", [])}
    assert pod_specs(docs)
    cfg = json.loads(config_of(docs))
    tls = cfg["listeners"][0]["tls"]
    assert tls["certificates"] == [{"cert_file": "/etc/pilotfish-tls/listener/tls.crt",
                                    "key_file": "/etc/pilotfish-tls/listener/tls.key"}]
    assert tls["client_ca_file"] == "/etc/pilotfish-tls/listener/ca.crt"
    assert tls["require_client_cert"] is True
    assert cfg["clusters"][0]["tls"] == {
        "sni": "orders.shop.svc", "ca_file": "/etc/pilotfish-tls/upstream-ca/ca.crt",
        "cert_file": "/etc/pilotfish-tls/upstream-client/tls.crt",
        "key_file": "/etc/pilotfish-tls/upstream-client/tls.key"}

    # The mounts as the kubelet makes them, with real certificates; the config then passes.
    ca = openssl_pair(tmp_path, "mesh-ca")
    server = openssl_pair(tmp_path, "edge", ca)
    client = openssl_pair(tmp_path, "edge-client", ca)
    roots = {}
    for name, files in (("pilotfish-tls-listener",
                         {"tls.crt": server[0], "tls.key": server[1], "ca.crt": ca[0]}),
                        ("pilotfish-tls-upstream-ca", {"ca.crt": ca[0]}),
                        ("pilotfish-tls-upstream-client",
                         {"tls.crt": client[0], "tls.key": client[1]})):
        roots[name] = tmp_path / name
        kubelet_secret_dir(roots[name], files)
    text = config_of(docs)
    for name, path in TLS_MOUNTS.items():
        text = text.replace(path + "/", str(roots[name]) + "/")
    proc = check_config(text, tmp_path, f"tls-{mode}.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--set", "tls.upstreamCA.secretName=a", "--set", "tls.upstreamCA.configMapName=b"],
     "tls.upstreamCA: give secretName or configMapName, not both"),
    (["--set", "tls.listener.secretName=a", "--set", "tls.listener.requireClientCert=true"],
     "tls.listener.requireClientCert needs tls.listener.clientCAKey"),
    (["--set", "tls.listener.minVersion=1.1"], "tls.listener.minVersion"),
])
def test_broken_tls_values_are_refused(args, message):
    proc = run([HELM, "template", RELEASE, CHART, "-n", NAMESPACE, *args], check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
