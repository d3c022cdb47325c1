"""A fake Kubernetes API server that knows the API's shape and holds no objects.

kubectl and helm ask an API server which kinds exist (discovery: /version, /api, /apis and
one document per group version) before they validate, map or "dry-run" anything, even for
client-side dry runs. This fake answers those questions for the kinds pilotfish's packaging
uses, as Kubernetes 1.31 does. Every namespace exists; every other object read is a 404
NotFound Status worded as the API server words it, so that `kubectl apply --dry-run=client`
treats each object as new and `helm install --dry-run` renders its notes. Everything else
(writes, OpenAPI) is refused with a Status.

Used by test/integration/test_packaging.py; `python3 k8s_discovery.py PORT` runs it alone.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}

# group version -> [(resource, kind, namespaced, short names)]
RESOURCES = {
    "v1": [
        ("configmaps", "ConfigMap", True, ["cm"]),
        ("namespaces", "Namespace", False, ["ns"]),
        ("pods", "Pod", True, ["po"]),
        ("serviceaccounts", "ServiceAccount", True, ["sa"]),
        ("services", "Service", True, ["svc"]),
    ],
    "apps/v1": [("deployments", "Deployment", True, ["deploy"])],
    "discovery.k8s.io/v1": [("endpointslices", "EndpointSlice", True, [])],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"])],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True, ["netpol"])],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"])],
    "rbac.authorization.k8s.io/v1": [
        ("clusterrolebindings", "ClusterRoleBinding", False, []),
        ("clusterroles", "ClusterRole", False, []),
        ("rolebindings", "RoleBinding", True, []),
        ("roles", "Role", True, []),
    ],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True, ["smon"]),
                                 ("prometheusrules", "PrometheusRule", True, ["promrule"])],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resource_list(group_version):
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": VERBS, "shortNames": short}
            for name, kind, namespaced, short in RESOURCES[group_version]
        ],
    }


def group_list(groups=None):
    """The APIGroupList of /apis, limited to `groups` when given (for a cluster without
    some CRDs)."""
    out = []
    for gv in RESOURCES:
        if "/" not in gv:
            continue
        group, version = gv.split("/")
        if groups is not None and group not in groups:
            continue
        ref = {"groupVersion": gv, "version": version}
        out.append({"name": group, "versions": [ref], "preferredVersion": ref})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


def status(code, reason, message, details=None):
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def object_path(parts):
    """(group, resource, namespace, name) of /api/v1/... or /apis/G/V/... parts, or None."""
    if parts[:3] == ["", "api", "v1"]:
        group, rest = "", parts[3:]
    elif len(parts) >= 4 and parts[1] == "apis":
        group, rest = parts[2], parts[4:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) == 2 and rest[0] == "namespaces":
        return "", "namespaces", None, rest[1]
    if len(rest) != 2:
        return None
    return group, rest[0], namespace, rest[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the tests read kubectl's output, not ours
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def known(self):
        groups = self.server.groups
        return {gv for gv in RESOURCES
                if "/" not in gv or groups is None or gv.split("/")[0] in groups}

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        self.server.requests.append(("GET", path))
        if path == "/version":
            return self.send_json(200, VERSION)
        if path == "/api":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                        "serverAddressByClientCIDRs": []})
        if path == "/apis":
            return self.send_json(200, group_list(self.server.groups))
        if path == "/api/v1":
            return self.send_json(200, resource_list("v1"))
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "apis" and f"{parts[2]}/{parts[3]}" in self.known():
            return self.send_json(200, resource_list(f"{parts[2]}/{parts[3]}"))
        if path.startswith("/openapi"):
            return self.send_json(404, status(404, "NotFound", "this fake serves no OpenAPI"))
        obj = object_path(parts)
        if obj and obj[1] == "namespaces":
            return self.send_json(200, {
                "kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": obj[3], "labels": {"kubernetes.io/metadata.name": obj[3]}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        if obj:
            group, resource, _, name = obj
            qualified = f"{resource}.{group}" if group else resource
            return self.send_json(404, status(
                404, "NotFound", f'{qualified} "{name}" not found',
                {"name": name, "group": group, "kind": resource}))
        return self.send_json(404, status(404, "NotFound", "the server could not find the "
                                          "requested resource"))

    def refuse(self):
        self.server.requests.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_json(405, status(405, "MethodNotAllowed", "this fake stores nothing"))

    do_POST = do_PUT = do_PATCH = do_DELETE = refuse


class DiscoveryServer:
    """start() -> self with .url and .kubeconfig(path); stop() when done. `groups` limits
    the API groups served (None: all, with monitoring.coreos.com)."""

    def __init__(self, groups=None, host="127.0.0.1", port=0):
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.groups = groups
        self.httpd.requests = []
        self.thread = None

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self):
        return list(self.httpd.requests)

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join(timeout=5)

    def kubeconfig(self, path):
        """Writes a kubeconfig (JSON is YAML) whose current context is this server."""
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake",
                          "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        }
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path


if __name__ == "__main__":
    server = DiscoveryServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.url, flush=True)
    server.httpd.serve_forever()
