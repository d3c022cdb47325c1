#!/usr/bin/env python3
"""A fake Kubernetes API server for pilotfish's tests (Python 3 standard library, and python3-h2
for its HTTP/2 front).

It speaks the parts of the real protocol pilotfish and kubectl use, over HTTPS with a CA it
makes at start with the openssl CLI, as HTTP/2 to clients that offer h2 in ALPN (every
request a stream of one connection, as the real API server serves its Go clients) and as
HTTP/1.1 to the others (--no-h2: HTTP/1.1 to everyone):
  - discovery documents (/api, /apis, /api/v1, /apis/discovery.k8s.io/v1) for kubectl;
  - list of Services and EndpointSlices, cluster-wide or per namespace, with labelSelector
    (=, ==, !=, key, !key) and fieldSelector (metadata.name and metadata.namespace with =,
    ==, !=; any other field is a 400 as the API answers), limit/continue pagination over a
    consistent snapshot, and the list's resourceVersion;
  - watch (?watch=1) from a resourceVersion: chunked JSON lines, ADDED/MODIFIED/DELETED,
    BOOKMARK events when allowWatchBookmarks=true, an ERROR event with a 410 Status when the
    resourceVersion is older than the compaction point, timeoutSeconds;
  - bearer-token auth (401 Status), and 403 Status for forbidden resource/namespace pairs;
  - Gateway API HTTPRoutes (gateway.networking.k8s.io/v1, served like an installed CRD):
    list and watch like the others, and the writes kubectl apply/replace/delete make
    (get, create, update, JSON merge patch, delete of one object), so tests drive them with
    the real kubectl (apply with --validate=false: no OpenAPI documents are served). A CRD
    kind can start absent (--without-kind httproutes) and be installed or deleted later
    (control /kinds): absent, it is missing from discovery and every request for it gets
    the API's 404, as when its CustomResourceDefinition is not installed.
A control API on a separate plain-HTTP port (127.0.0.1 only) changes objects, cuts streams
(optionally in the middle of an event; on HTTP/2 the whole connection drops), stalls them,
ends chosen watches with a 410 (/expire), sends a graceful GOAWAY on every HTTP/2
connection (/goaway: open streams go on, new ones need a new connection), compacts, rotates the token, answers
the next requests 429 with Retry-After, and reports the requests it served (verb, resource,
namespace, query, time) so tests can compare them with the RBAC a deployment grants and
see when clients came back.

The control API's /state counts connections (open, peak and accepted, by protocol) and
HTTP/2 streams (open and peak), so tests can assert what a client keeps open. The request
log keeps the last --max-requests entries (older ones are dropped and counted).

Usage: k8s_api.py --dir DIR [--port 0] [--control-port 0] [--token T] [--state FILE
       [--forget-history]] [--without-kind httproutes] [--no-h2] [--h2-max-streams 100] [--max-requests 100000]
Prints one line "listening https://127.0.0.1:PORT control http://127.0.0.1:CPORT" once
ready; DIR receives ca.crt, server.crt, server.key and token.
"""

import argparse
import base64
import bisect
import collections
import email.message
import io
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    import hyperframe.frame
except ImportError:  # HTTP/1.1 only (the tests run /usr/bin/python3, which has python3-h2)
    h2 = None

KINDS = {
    # resource: (group path, apiVersion, kind, namespaced)
    "services": ("api/v1", "v1", "Service"),
    "endpointslices": ("apis/discovery.k8s.io/v1", "discovery.k8s.io/v1", "EndpointSlice"),
    "httproutes": ("apis/gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1",
                   "HTTPRoute"),
}
KIND_TO_RESOURCE = {"Service": "services", "EndpointSlice": "endpointslices",
                    "HTTPRoute": "httproutes"}
WRITABLE = {"httproutes"}  # kinds kubectl may create, patch and delete here
GATEWAY_GROUP = {"name": "gateway.networking.k8s.io",
                 "versions": [{"groupVersion": "gateway.networking.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "gateway.networking.k8s.io/v1",
                                      "version": "v1"}}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as the API applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(d, "server.ext")
    if os.path.exists(crt):
        return
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
        "-subj", "/CN=pilotfish-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)


def status(code, reason, message, details=None):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


class State:
    """Objects, the event log and the knobs, behind one condition variable."""

    def __init__(self, token):
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects = {r: {} for r in KINDS}  # resource -> (ns, name) -> object
        self.log = []  # (rv, resource, type, object) in order
        self.compacted = 0  # watches from below this get 410
        self.tokens = {token}
        self.forbidden = set()  # (resource, namespace or "*")
        self.cut_generation = 0
        self.cut_mid_event = False
        self.stalled = False
        self.bookmark_interval = 1.0
        self.requests = collections.deque(maxlen=100000)  # --max-requests
        self.requests_dropped = 0  # entries the bound pushed out of the log
        # connections by protocol ("h2", "http/1.1"): open now, at most, accepted in all;
        # HTTP/2 streams open now and at most
        self.conns_open = {}
        self.conns_peak = {}
        self.conns_total = {}
        self.streams_open = 0
        self.streams_peak = 0
        self.streams_total = 0
        self.bytes_sent = 0  # API response bytes (bodies and watch streams), for benches
        self.throttle = 0  # the next this many API requests get 429
        # /expire: open watches of this resource whose query holds the text end with 410
        self.expire = ("", "")
        self.expire_gen = 0
        self.h2_fronts = set()  # live HTTP/2 connections, for /goaway
        self.h2_protocol_errors = 0  # connections ended for a client's protocol error
        self.retry_after = 1
        self.sent = {}  # rv -> wall time the event was first written to a stream
        self.snapshots = {}  # continue token -> (rv, items)
        self.watchers = 0
        # open watches now and at most, by namespace ("*": cluster-wide), for tests that
        # bound what a client keeps open
        self.watches_open = {}
        self.watches_peak = {}
        # (resource, namespace, kubernetes.io/service-name) -> {name: object}: one
        # Service's slices are found without a scan of every slice (a fleet's sidecars ask
        # this for each Service they use)
        self.by_service = {}
        self.log_rvs = []  # the rvs of log, for a bisect from a watch's resourceVersion
        self.max_log = 0  # events kept (0: all); past it the oldest half is compacted away
        self.log_floor = 0  # the last rv max_log dropped
        self.absent = set()  # CRD kinds not installed (WRITABLE ones): 404 as the API answers

    def note_request(self, entry):
        """Logs one API request (under cond); the oldest go past the bound."""
        if len(self.requests) == self.requests.maxlen:
            self.requests_dropped += 1
        self.requests.append(entry)

    def conn_opened(self, proto, delta):
        """Counts a connection of `proto` opening (1) or closing (-1)."""
        with self.cond:
            self.conns_open[proto] = self.conns_open.get(proto, 0) + delta
            if delta > 0:
                self.conns_total[proto] = self.conns_total.get(proto, 0) + 1
                self.conns_peak[proto] = max(self.conns_peak.get(proto, 0),
                                             self.conns_open[proto])

    def bump(self):
        self.rv += 1
        return self.rv

    def index(self, res, obj, add):
        meta = obj.get("metadata", {})
        svc = meta.get("labels", {}).get(SERVICE_LABEL)
        if svc is None:
            return
        key = (res, meta["namespace"], svc)
        if add:
            self.by_service.setdefault(key, {})[meta["name"]] = obj
        else:
            group = self.by_service.get(key, {})
            group.pop(meta["name"], None)
            if not group:
                self.by_service.pop(key, None)

    def record(self, res, kind, obj):
        self.log.append((self.rv, res, kind, obj))
        self.log_rvs.append(self.rv)
        if self.max_log and len(self.log) > self.max_log:
            # what etcd's compaction does: history before a revision is gone; a watch from
            # an older resourceVersion gets 410, one from the last dropped revision on is
            # served (the changes after it are all kept)
            drop = len(self.log) // 2
            self.log_floor = self.log_rvs[drop - 1]
            self.compacted = max(self.compacted, self.log_floor)
            for rv in self.log_rvs[:drop]:
                self.sent.pop(rv, None)
            del self.log[:drop]
            del self.log_rvs[:drop]

    def log_after(self, rv):
        """The index in log of the first event after resourceVersion rv."""
        return bisect.bisect_right(self.log_rvs, rv)

    def put(self, obj):
        res = KIND_TO_RESOURCE[obj["kind"]]
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (meta["namespace"], meta["name"])
        kind = "MODIFIED" if key in self.objects[res] else "ADDED"
        if kind == "ADDED":
            meta.setdefault("uid", f"uid-{res}-{key[0]}-{key[1]}")
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta["resourceVersion"] = str(self.bump())
        old = self.objects[res].get(key)
        if old is not None:
            self.index(res, old, False)
        self.objects[res][key] = obj
        self.index(res, obj, True)
        self.record(res, kind, obj)
        return self.rv

    def delete(self, res, ns, name):
        obj = self.objects[res].pop((ns, name), None)
        if obj is None:
            return None
        self.index(res, obj, False)
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.bump())
        self.record(res, "DELETED", obj)
        return self.rv


def send_json(handler, code, doc, state=None):
    """A JSON body with its length, on a keep-alive HTTP/1.1 connection."""
    body = json.dumps(doc).encode()
    if state is not None:
        with state.cond:
            state.bytes_sent += len(body)
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


FIELDS = {"metadata.name", "metadata.namespace"}  # what the API accepts for both resources
SERVICE_LABEL = "kubernetes.io/service-name"


def parse_terms(sel):
    """A selector's comma-separated terms as (key, op, value): op "=", "!=", "exists" or
    "!exists" (labels only); "==" is "="."""
    terms = []
    for term in filter(None, (t.strip() for t in (sel or "").split(","))):
        if "!=" in term:
            k, _, v = term.partition("!=")
            terms.append((k.strip(), "!=", v.strip()))
        elif "=" in term:
            k, _, v = term.partition("=")
            terms.append((k.strip(), "=", v.lstrip("=").strip()))
        elif term.startswith("!"):
            terms.append((term[1:].strip(), "!exists", ""))
        else:
            terms.append((term, "exists", ""))
    return terms


def selector_error(label_sel, field_sel):
    """The 400 message the API gives for a selector it refuses, or None."""
    for k, op, _ in parse_terms(field_sel):
        if op not in ("=", "!="):
            return f'invalid field selector: "{k}" has no operator'
        if k not in FIELDS:
            return f'"{k}" is not a known field selector: only "metadata.name", "metadata.namespace"'
    return None


def selector_match(obj, label_sel, field_sel):
    meta = obj.get("metadata", {})
    labels = meta.get("labels", {})
    for k, op, v in parse_terms(label_sel):
        if (op == "=" and labels.get(k) != v) or (op == "!=" and labels.get(k) == v) or \
                (op == "exists" and k not in labels) or (op == "!exists" and k in labels):
            return False
    for k, op, v in parse_terms(field_sel):
        have = meta.get(k.split(".", 1)[1], "")
        if (op == "=") != (have == v):
            return False
    return True


def api_resource_list(group_version, resources):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [{"name": r, "singularName": KINDS[r][2].lower(), "namespaced": True,
                           "kind": KINDS[r][2], "verbs": ["get", "list", "watch"],
                           "shortNames": ["svc"] if r == "services" else []}
                          for r in resources]}


def make_handler(state):
    class Api(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def setup(self):
            # The API server is a Go program, and Go sets TCP_NODELAY on every connection:
            # a response's header and body records leave at once. Without it, Nagle holds the
            # body until the client's delayed ACK (40 ms) of the header: a latency no real
            # API server adds to each list.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def handle(self):
            # the TLS handshake (here, in the connection's thread) picks the protocol: h2
            # when ALPN offered and agreed it, HTTP/1.1 otherwise
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                return
            proto = self.request.selected_alpn_protocol() or "http/1.1"
            state.conn_opened(proto, 1)
            try:
                if proto == "h2":
                    H2Front(self.request, state, self).serve()
                else:
                    super().handle()
            finally:
                state.conn_opened(proto, -1)

        def send_json(self, code, doc):
            send_json(self, code, doc, state)

        def client_gone(self):
            # a watch client sends nothing: readable is its close, seen at once as the API
            # server does (the count of open watches must not wait for the next write to fail)
            return bool(select.select([self.connection], [], [], 0)[0])

        def cut(self, partial):
            """Drops the connection (an API server gone), after `partial` (half an event)."""
            if partial:
                self.wfile.write(b"%x\r\n%s" % (len(partial) * 2, partial))
                self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def do_GET(self):
            try:
                self.handle_get()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                self.close_connection = True

        def handle_get(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            parts = [p for p in url.path.split("/") if p]
            auth = self.headers.get("Authorization", "")
            with state.cond:
                ok = auth.startswith("Bearer ") and auth[7:] in state.tokens
            if not ok:
                self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
                return
            if parts in (["api"],):
                self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                     "serverAddressByClientCIDRs": []})
                return
            with state.cond:
                absent = set(state.absent)
            if any("/".join(parts).startswith(KINDS[r][0]) and
                   (len(parts) <= 3 or r in parts) for r in absent):
                # the API group of a CRD that is not installed does not exist
                miss = [r for r in absent if r in parts]
                with state.cond:
                    for r in miss:  # a list or watch of it: recorded like the others
                        state.requests.append({
                            "verb": "watch" if q.get("watch") in ("1", "true") else "list",
                            "resource": r, "group": parts[1], "query": url.query,
                            "namespace": parts[4] if parts[3:4] == ["namespaces"] else "",
                            "time": time.time(), "code": 404,
                            "agent": self.headers.get("User-Agent", "")})
                self.send_json(404, status(404, "NotFound",
                                           "the server could not find the requested resource"))
                return
            if parts == ["apis"]:
                self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    {"name": "discovery.k8s.io",
                     "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
                     "preferredVersion": {"groupVersion": "discovery.k8s.io/v1",
                                          "version": "v1"}}] +
                    ([] if "httproutes" in absent else [GATEWAY_GROUP])})
                return
            if parts == ["apis", "gateway.networking.k8s.io", "v1"]:
                doc = api_resource_list("gateway.networking.k8s.io/v1", ["httproutes"])
                doc["resources"][0]["verbs"] = ["create", "delete", "get", "list", "patch",
                                                "update", "watch"]
                self.send_json(200, doc)
                return
            if len(parts) >= 6 and parts[:3] == ["apis", "gateway.networking.k8s.io", "v1"] \
                    and parts[3] == "namespaces" and parts[5] in WRITABLE:
                if len(parts) == 7:
                    self.get_one(parts[5], parts[4], parts[6])
                    return
            if parts == ["api", "v1"]:
                self.send_json(200, api_resource_list("v1", ["services"]))
                return
            if parts == ["apis", "discovery.k8s.io", "v1"]:
                self.send_json(200, api_resource_list("discovery.k8s.io/v1", ["endpointslices"]))
                return
            if parts == ["version"]:
                self.send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake"})
                return
            # /api/v1[/namespaces/NS]/RES  or  /apis/discovery.k8s.io/v1[/namespaces/NS]/RES
            prefix = 2 if parts[:1] == ["api"] else 3
            rest = parts[prefix:]
            ns = None
            if len(rest) >= 2 and rest[0] == "namespaces":
                ns, rest = rest[1], rest[2:]
            known = len(rest) == 1 and rest[0] in KINDS
            if not known or "/".join(parts[:prefix]) != KINDS[rest[0]][0]:
                self.send_json(404, status(404, "NotFound",
                                           f"the server could not find {url.path}"))
                return
            res = rest[0]
            watch = q.get("watch") in ("1", "true")
            verb = "watch" if watch else "list"
            with state.cond:
                throttled = state.throttle > 0
                state.throttle -= 1 if throttled else 0
                state.note_request({"verb": verb, "resource": res, "namespace": ns or "",
                                       "group": KINDS[res][0].split("/")[1] if prefix == 3 else "",
                                       "query": url.query, "time": time.time(),
                                       "code": 429 if throttled else 200,
                                       "agent": self.headers.get("User-Agent", "")})
                forbidden = (res, ns or "*") in state.forbidden or (res, "*") in state.forbidden
                retry_after = state.retry_after
            if throttled:
                # API priority and fairness: the status, and when to come back
                body = json.dumps(status(429, "TooManyRequests",
                                         "Too many requests, please try again later.",
                                         {"retryAfterSeconds": retry_after})).encode()
                self.send_response(429)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if forbidden:
                group = "discovery.k8s.io" if res == "endpointslices" else ""
                where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
                self.send_json(403, status(
                    403, "Forbidden",
                    f'{res}{"." + group if group else ""} is forbidden: User '
                    f'"system:serviceaccount:default:pilotfish" cannot {verb} resource "{res}" '
                    f'in API group "{group}" {where}', {"group": group, "kind": res}))
                return
            bad = selector_error(q.get("labelSelector"), q.get("fieldSelector"))
            if bad:
                self.send_json(400, status(400, "BadRequest", bad))
                return
            if watch:
                self.watch(res, ns, q)
            else:
                self.list(res, ns, q)

        def list(self, res, ns, q):
            limit = int(q.get("limit") or 0)
            cont = q.get("continue")
            with state.cond:
                if cont:
                    # one use each (what pilotfish and kubectl do): a fleet's paged lists
                    # must not pile up snapshots
                    snap = state.snapshots.pop(cont, None)
                    if snap is None or snap[0] < state.compacted:
                        self.send_json(410, status(410, "Expired",
                                                   "The provided continue parameter is too old"))
                        return
                    rv, items, at = snap
                else:
                    rv, at = state.rv, 0
                    field = q.get("fieldSelector") or ""
                    objs = state.objects[res]
                    label = q.get("labelSelector") or ""
                    by_svc = re.fullmatch(re.escape(SERVICE_LABEL) + r"==?([^,!=]*)", label)
                    if ns is not None and re.fullmatch(r"metadata\.name==?[^,]*", field):
                        # one object by name: looked up, not scanned (a fleet asks this a lot)
                        one = objs.get((ns, field.split("=")[-1]))
                        candidates = [((ns, ""), one)] if one else []
                    elif ns is not None and by_svc:
                        # one Service's slices: from the index (still matched below)
                        group = state.by_service.get((res, ns, by_svc.group(1)), {})
                        candidates = sorted(((ns, n), o) for n, o in group.items())
                    elif len(parse_terms(q.get("labelSelector"))) == 1 and \
                            parse_terms(q.get("labelSelector"))[0][1] == "=":
                        # one label equal to a value (e.g. one Service's slices in every
                        # namespace): a tight scan
                        # first, the full match on the few left; the lock is held meanwhile,
                        # so a fleet's lists must not cost what matching every object does
                        k, _, v = parse_terms(q.get("labelSelector"))[0]
                        candidates = sorted(
                            (key, o) for key, o in objs.items()
                            if o["metadata"].get("labels", {}).get(k) == v)
                    else:
                        candidates = sorted(objs.items())
                    items = [o for (ons, _), o in candidates
                             if (ns is None or ons == ns)
                             and selector_match(o, q.get("labelSelector"), field)]
                    items = json.loads(json.dumps(items))
                end = at + limit if limit else len(items)
                page = items[at:end]
                meta = {"resourceVersion": str(rv)}
                if end < len(items):
                    token = base64.urlsafe_b64encode(os.urandom(12)).decode()
                    state.snapshots[token] = (rv, items, end)
                    meta["continue"] = token
                    meta["remainingItemCount"] = len(items) - end
            api_version, kind = KINDS[res][1], KINDS[res][2]
            for o in page:
                o.setdefault("apiVersion", api_version)
                o.setdefault("kind", kind)
            self.send_json(200, {"kind": kind + "List", "apiVersion": api_version,
                                 "metadata": meta, "items": page})

        def chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            with state.cond:
                state.bytes_sent += len(data)

        def watch(self, res, ns, q):
            start = q.get("resourceVersion") or "0"
            bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
            timeout = float(q.get("timeoutSeconds") or 1800)
            deadline = time.monotonic() + timeout
            label_sel, field_sel = q.get("labelSelector"), q.get("fieldSelector")
            api_version, kind = KINDS[res][1], KINDS[res][2]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            where = ns or "*"
            with state.cond:
                gen = state.cut_generation
                state.watchers += 1
                state.watches_open[where] = state.watches_open.get(where, 0) + 1
                state.watches_peak[where] = max(state.watches_peak.get(where, 0),
                                                state.watches_open[where])
                if start == "0":
                    # "any": the current state as ADDED events, then changes
                    pending = [(state.rv, "ADDED", o) for (ons, _), o in
                               sorted(state.objects[res].items()) if ns is None or ons == ns]
                    cursor = state.rv  # the resourceVersion sent up to (the log is by rv)
                elif int(start) < state.compacted:
                    pending, cursor = None, state.rv
                else:
                    pending = []
                    cursor = int(start)
            gone = expired = False
            query = urllib.parse.unquote(urllib.parse.urlsplit(self.path).query)
            with state.cond:
                egen = state.expire_gen
            try:
                if pending is None:
                    err = status(410, "Expired", f"too old resource version: {start} "
                                                 f"({state.compacted})")
                    self.chunk(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
                    self.chunk(b"")
                    return
                last_sent = time.monotonic()
                while pending is not None:
                    lines = []
                    for rv, typ, o in pending:
                        if selector_match(o, label_sel, field_sel):
                            o = dict(o, apiVersion=api_version, kind=kind)
                            lines.append((rv, json.dumps({"type": typ, "object": o}).encode()))
                    pending = []
                    for rv, data in lines:
                        with state.cond:
                            state.sent.setdefault(rv, time.time())
                        self.chunk(data + b"\n")
                        last_sent = time.monotonic()
                    with state.cond:
                        while True:
                            if state.cut_generation != gen:
                                mid = state.cut_mid_event
                                break
                            if state.expire_gen != egen:
                                egen = state.expire_gen
                                if state.expire[0] == res and state.expire[1] in query:
                                    expired = True
                                    break
                            now = time.monotonic()
                            if now >= deadline:
                                break
                            if not state.stalled and state.log_rvs and \
                                    state.log_rvs[-1] > cursor:
                                break
                            if bookmarks and not state.stalled and \
                                    now - last_sent >= state.bookmark_interval:
                                break
                            if self.client_gone():
                                gone = True
                                break
                            state.cond.wait(min(0.2, max(0.01, deadline - now)))
                        if gone:
                            self.close_connection = True
                            return
                        if state.cut_generation != gen:
                            half = b""
                            if mid:
                                # half an event, then the connection drops
                                half = json.dumps({"type": "ADDED", "object": {
                                    "kind": kind, "metadata": {"name": "half"}}}).encode()
                                half = half[: len(half) // 2]
                            self.cut(half)
                            return
                        if time.monotonic() >= deadline:
                            self.chunk(b"")
                            return
                        if cursor < state.log_floor or expired:
                            # the events it has not seen yet were compacted away (max_log):
                            # the API ends such a watch with a 410
                            pending = None
                            break
                        for rv, r, typ, o in state.log[state.log_after(cursor):]:
                            cursor = rv
                            if r == res and (ns is None or o["metadata"]["namespace"] == ns):
                                pending.append((rv, typ, o))
                        rv_now = state.rv
                    if not pending and bookmarks and time.monotonic() - last_sent >= \
                            state.bookmark_interval:
                        meta = {"resourceVersion": str(rv_now)}
                        bm = {"type": "BOOKMARK", "object": {
                            "kind": kind, "apiVersion": api_version, "metadata": meta}}
                        self.chunk(json.dumps(bm).encode() + b"\n")
                        last_sent = time.monotonic()
                err = status(410, "Expired", f"too old resource version: {cursor} "
                                             f"({state.compacted})")
                self.chunk(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
                self.chunk(b"")
            finally:
                with state.cond:
                    state.watchers -= 1
                    state.watches_open[where] -= 1

        # ---- writes (kubectl apply, replace, delete) of WRITABLE kinds -------------------

        def object_path(self):
            """(resource, namespace, name or None) of /apis/G/V/namespaces/NS/RES[/NAME]."""
            parts = [p for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
            if len(parts) in (6, 7) and parts[0] == "apis" and parts[3] == "namespaces" and \
                    parts[5] in WRITABLE and "/".join(parts[:3]) == KINDS[parts[5]][0]:
                return parts[5], parts[4], parts[6] if len(parts) == 7 else None
            return None, None, None

        def authorized(self, verb, res, ns):
            auth = self.headers.get("Authorization", "")
            with state.cond:
                ok = auth.startswith("Bearer ") and auth[7:] in state.tokens
                state.note_request({"verb": verb, "resource": res or "", "namespace": ns or "",
                                       "group": KINDS[res][0].split("/")[1] if res else "",
                                       "query": urllib.parse.urlsplit(self.path).query,
                                       "time": time.time(), "code": 200 if ok else 401,
                                       "agent": self.headers.get("User-Agent", "")})
            if not ok:
                self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
            return ok

        def read_body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def not_found(self, res, name):
            self.send_json(404, status(404, "NotFound", f'{res}.{KINDS[res][0].split("/")[1]} '
                                       f'"{name}" not found',
                                       {"name": name, "group": KINDS[res][0].split("/")[1],
                                        "kind": res}))

        def get_one(self, res, ns, name):
            with state.cond:
                state.note_request({"verb": "get", "resource": res, "namespace": ns,
                                       "group": KINDS[res][0].split("/")[1], "query": "",
                                       "time": time.time(), "code": 200,
                                       "agent": self.headers.get("User-Agent", "")})
                obj = state.objects[res].get((ns, name))
                obj = json.loads(json.dumps(obj)) if obj else None
            if obj is None:
                self.not_found(res, name)
                return
            obj.setdefault("apiVersion", KINDS[res][1])
            obj.setdefault("kind", KINDS[res][2])
            self.send_json(200, obj)

        def write(self, verb):
            res, ns, name = self.object_path()
            with state.cond:
                absent = res in state.absent
            if res is None or absent:
                self.send_json(404, status(404, "NotFound", f"the server could not find "
                                           f"{self.path}"))
                return
            if not self.authorized(verb, res, ns):
                return
            body = self.read_body()  # a delete's DeleteOptions are read and ignored
            with state.cond:
                objs = state.objects[res]
                if verb == "create":
                    meta = body.setdefault("metadata", {})
                    meta["namespace"] = ns
                    if (ns, meta.get("name")) in objs:
                        self.send_json(409, status(409, "AlreadyExists",
                                                   f'{res} "{meta.get("name")}" already exists'))
                        return
                    meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime())
                    obj = body
                elif (ns, name) not in objs:
                    self.not_found(res, name)
                    return
                elif verb == "delete":
                    gone = json.loads(json.dumps(objs[(ns, name)]))
                    state.delete(res, ns, name)
                    state.cond.notify_all()
                    self.send_json(200, gone)
                    return
                else:
                    old = objs[(ns, name)]
                    obj = merge_patch(old, body) if verb == "patch" else body
                    obj = json.loads(json.dumps(obj))
                    meta = obj.setdefault("metadata", {})
                    for k in ("uid", "creationTimestamp"):
                        meta[k] = old["metadata"].get(k)
                    meta["namespace"], meta["name"] = ns, name
                obj["apiVersion"], obj["kind"] = KINDS[res][1], KINDS[res][2]
                state.put(obj)
                state.cond.notify_all()
                out = json.loads(json.dumps(obj))
            self.send_json(201 if verb == "create" else 200, out)

        def do_POST(self):
            self.write("create")

        def do_PUT(self):
            self.write("update")

        def do_PATCH(self):
            ctype = self.headers.get("Content-Type", "")
            if "merge-patch" not in ctype:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_json(415, status(415, "UnsupportedMediaType",
                                           f"the body of the request was in an unknown format: "
                                           f"{ctype}; only application/merge-patch+json"))
                return
            self.write("patch")

        def do_DELETE(self):
            self.write("delete")

    return Api


class H2Stream:
    """One request of an HTTP/2 connection: its headers, its body, whether it was reset."""

    def __init__(self, sid, headers):
        self.sid = sid
        self.headers = headers  # [(name, value)] as received, pseudo-headers included
        self.body = bytearray()
        self.reset = False
        self.ended = False  # our side sent END_STREAM
        self.head_sent = False


class H2Front:
    """Serves one TLS connection that agreed on h2 in ALPN: every request a stream, each run by
    the same handler code as HTTP/1.1 (Api) in a thread of its own, as a Go API server runs
    a goroutine per stream. This thread alone reads and writes the socket; stream threads
    queue frames on the h2 state machine under `cond` and wake it. Flow control is honoured:
    a stream writes only within its send window and waits for WINDOW_UPDATE otherwise."""

    # SETTINGS_MAX_CONCURRENT_STREAMS: 100, as API servers announce since their fix of the
    # HTTP/2 rapid-reset attack (CVE-2023-44487); Go's default of 250 before
    max_streams = 100

    def __init__(self, sock, state, handler):
        self.sock = sock
        self.state = state
        self.handler = handler  # the connection's Api handler (its class serves the streams)
        self.cond = threading.Condition()
        self.closed = False
        self.streams = {}
        self.goaway = False  # /goaway asked for one: no new streams here, these go on
        self.protocol_error = False
        self.last_sid = 0
        self.wake_r, self.wake_w = socket.socketpair()
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})

    def wake(self):
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def serve(self):
        sock = self.sock
        sock.setblocking(False)
        with self.cond:
            self.conn.initiate_connection()
        with self.state.cond:
            self.state.h2_fronts.add(self)
        out = b""
        try:
            while not self.closed:
                with self.cond:
                    out += self.conn.data_to_send()
                    if self.goaway is True:
                        # graceful GOAWAY (NO_ERROR), as an API server sends to move clients
                        # elsewhere: streams up to last_sid go on, new ones go to another
                        # connection. Written between whole frames, outside the h2 state
                        # machine, which would refuse the open streams' frames after it.
                        out += hyperframe.frame.GoAwayFrame(
                            0, last_stream_id=self.last_sid, error_code=0).serialize()
                        self.goaway = "sent"
                if out:
                    try:
                        out = out[sock.send(out):]
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        pass
                r, _, _ = select.select([sock, self.wake_r], [sock] if out else [], [], 1.0)
                if self.wake_r in r:
                    self.wake_r.recv(4096)
                while not self.closed:  # TLS may hold decrypted bytes select cannot see
                    try:
                        data = sock.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        break
                    if not data:
                        self.close()
                        break
                    self.received(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self.state.cond:
                self.state.h2_fronts.discard(self)
                self.state.h2_protocol_errors += self.protocol_error
            self.close()
            self.wake_r.close()
            self.wake_w.close()

    def received(self, data):
        started = []
        with self.cond:
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                # h2 queued a GOAWAY; the connection ends once it is written (counted: a
                # client past MAX_CONCURRENT_STREAMS lands here)
                self.protocol_error = True
                try:
                    self.sock.sendall(self.conn.data_to_send())
                except (OSError, ssl.SSLError):
                    pass
                self.closed = True
                self.cond.notify_all()
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    self.streams[ev.stream_id] = H2Stream(ev.stream_id, ev.headers)
                    self.last_sid = max(self.last_sid, ev.stream_id)
                elif isinstance(ev, h2.events.DataReceived):
                    st = self.streams.get(ev.stream_id)
                    if st:
                        st.body += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    st = self.streams.get(ev.stream_id)
                    if st:
                        started.append(st)
                elif isinstance(ev, h2.events.StreamReset):
                    st = self.streams.get(ev.stream_id)
                    if st:
                        st.reset = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.closed = True
            self.cond.notify_all()  # windows may have opened, streams been reset
        # outside cond: a watch holds state.cond while it writes (cond inside state.cond)
        for st in started:
            with self.state.cond:
                self.state.streams_open += 1
                self.state.streams_total += 1
                self.state.streams_peak = max(self.state.streams_peak, self.state.streams_open)
            threading.Thread(target=self.run, args=(st,), daemon=True).start()

    def run(self, st):
        h = h2_handler_class(type(self.handler))(self, st)
        try:
            method = h.command
            fn = getattr(h, "do_" + method, None)
            if fn is None:
                send_json(h, 405, status(405, "MethodNotAllowed", f"{method} is not allowed"))
            else:
                fn()
            if not st.head_sent:
                send_json(h, 500, status(500, "InternalError", "no response"))
            self.send(st, b"", end=True)
        except (BrokenPipeError, ConnectionResetError, OSError, ssl.SSLError):
            pass
        except Exception:  # a bug in a handler: this stream fails, the connection stays
            with self.cond:
                try:
                    self.conn.reset_stream(st.sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                except h2.exceptions.StreamClosedError:
                    pass
            self.wake()
            raise
        finally:
            with self.cond:
                self.streams.pop(st.sid, None)
            with self.state.cond:
                self.state.streams_open -= 1

    def headers(self, st, code, fields):
        with self.cond:
            if st.reset or self.closed:
                raise BrokenPipeError("stream reset")
            try:
                self.conn.send_headers(st.sid, [(":status", str(code))] + fields)
                st.head_sent = True
            except h2.exceptions.StreamClosedError:
                raise BrokenPipeError("stream closed")
        self.wake()

    def send(self, st, data, end=False):
        """Writes `data` on the stream within its flow-control windows (waits for them)."""
        with self.cond:
            if st.ended:
                return
            view = memoryview(bytes(data))
            try:
                while True:
                    if st.reset or self.closed:
                        raise BrokenPipeError("stream reset")
                    if not view:
                        break
                    n = min(self.conn.local_flow_control_window(st.sid),
                            self.conn.max_outbound_frame_size, len(view))
                    if n <= 0:
                        self.wake()
                        self.cond.wait(1.0)
                        continue
                    self.conn.send_data(st.sid, view[:n].tobytes())
                    view = view[n:]
                if end:
                    self.conn.end_stream(st.sid)
                    st.ended = True
            except h2.exceptions.StreamClosedError:
                raise BrokenPipeError("stream closed")
        self.wake()

    def cut(self, st, partial):
        """The connection drops (an API server gone) after `partial` on this stream: every
        stream of the connection breaks with it, as when a real API server goes away."""
        if partial:
            self.send(st, partial)
            time.sleep(0.05)  # let the I/O thread write it before the socket goes
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.wake()


class H2Wfile:
    """wfile of a stream handler: bytes written are DATA frames of the stream."""

    def __init__(self, front, st):
        self.front, self.st = front, st

    def write(self, data):
        self.front.send(self.st, data)
        return len(data)

    def flush(self):
        pass


_h2_classes = {}


def h2_handler_class(api):
    """The Api handler class as one HTTP/2 stream's handler: the same request methods, with
    the response head as a HEADERS frame, the body as DATA frames and END_STREAM for the end
    of a chunked stream (HTTP/2 has no chunked coding)."""
    if api in _h2_classes:
        return _h2_classes[api]

    class H2Api(api):
        request_version = "HTTP/2"

        def __init__(self, front, st):  # not a socket handler: no BaseRequestHandler init
            self.front, self.st = front, st
            hdrs = dict(st.headers)
            self.command = hdrs.get(":method", "GET")
            self.path = hdrs.get(":path", "/")
            self.headers = email.message.Message()
            for k, v in st.headers:
                if not k.startswith(":"):
                    self.headers[k] = v
            if "Content-Length" not in self.headers:
                self.headers["Content-Length"] = str(len(st.body))
            self.rfile = io.BytesIO(bytes(st.body))
            self.wfile = H2Wfile(front, st)
            self.client_address = front.handler.client_address
            self.close_connection = False
            self._status, self._fields = 200, []

        def send_response(self, code, message=None):
            self._status, self._fields = code, [("date", self.date_time_string())]

        def send_header(self, keyword, value):
            k = keyword.lower()
            if k not in ("connection", "transfer-encoding", "keep-alive"):
                self._fields.append((k, str(value)))

        def end_headers(self):
            self.front.headers(self.st, self._status, self._fields)

        def chunk(self, data):
            if data:
                self.wfile.write(data)
                with self.front.state.cond:
                    self.front.state.bytes_sent += len(data)
            else:
                self.front.send(self.st, b"", end=True)

        def client_gone(self):
            return self.st.reset or self.front.closed

        def cut(self, partial):
            self.front.cut(self.st, partial)

    _h2_classes[api] = H2Api
    return H2Api


def make_control(state):
    class Control(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, doc, code=200):
            send_json(self, code, doc)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self):
            with state.cond:
                if self.path == "/requests":
                    self.reply(list(state.requests))
                elif self.path == "/sent":
                    self.reply({str(k): v for k, v in state.sent.items()})
                elif self.path == "/state":
                    self.reply({"resourceVersion": state.rv, "compacted": state.compacted,
                                "watchers": state.watchers, "bytes_sent": state.bytes_sent,
                                "watches_open": state.watches_open,
                                "watches_peak": state.watches_peak,
                                "log": len(state.log),
                                "requests_logged": len(state.requests),
                                "requests_dropped": state.requests_dropped,
                                "connections_open": state.conns_open,
                                "connections_peak": state.conns_peak,
                                "connections_total": state.conns_total,
                                "streams_open": state.streams_open,
                                "streams_peak": state.streams_peak,
                                "streams_total": state.streams_total,
                                "h2_protocol_errors": state.h2_protocol_errors,
                                "counts": {r: len(o) for r, o in state.objects.items()}})
                else:
                    self.reply({"error": "unknown"}, 404)

        def do_POST(self):
            doc = self.body()
            with state.cond:
                out = self.apply(self.path, doc)
                state.cond.notify_all()
            self.reply(out)

        def apply(self, path, doc):
            if path == "/apply":  # {"ops": [{"put": obj} | {"delete": [res, ns, name]}]}
                rv = state.rv
                for op in doc["ops"]:
                    if "put" in op:
                        rv = state.put(op["put"])
                    else:
                        rv = state.delete(*op["delete"]) or rv
                return {"resourceVersion": rv}
            if path == "/cut":
                state.cut_generation += 1
                state.cut_mid_event = bool(doc.get("mid_event"))
                return {"ok": True}
            if path == "/compact":
                # rvs below the current one are gone; a watch from the current one still works
                state.compacted = state.rv if doc.get("all", True) else int(doc["before"])
                state.snapshots.clear()
                if doc.get("cut", True):
                    state.cut_generation += 1
                    state.cut_mid_event = False
                return {"compacted": state.compacted}
            if path == "/token":
                state.tokens = set(doc["tokens"])
                return {"ok": True}
            if path == "/forbid":
                state.forbidden = {(f[0], f[1]) for f in doc["pairs"]}
                return {"ok": True}
            if path == "/expire":  # {"resource": r, "query": text}: those watches get 410
                state.expire = (doc["resource"], doc.get("query", ""))
                state.expire_gen += 1
                return {"ok": True}
            if path == "/goaway":  # every HTTP/2 connection gets a graceful GOAWAY
                for front in state.h2_fronts:
                    with front.cond:
                        front.goaway = front.goaway or True
                    front.wake()
                return {"connections": len(state.h2_fronts)}
            if path == "/stall":
                state.stalled = bool(doc["on"])
                return {"ok": True}
            if path == "/settings":
                state.bookmark_interval = float(doc.get("bookmark_interval",
                                                        state.bookmark_interval))
                state.max_log = int(doc.get("max_log", state.max_log))
                return {"ok": True}
            if path == "/throttle":  # {"count": n, "retry_after": seconds}
                state.throttle = int(doc["count"])
                state.retry_after = int(doc.get("retry_after", 1))
                return {"ok": True}
            if path == "/kinds":  # {"install": [res...]} | {"delete": [res...]} (CRDs)
                for res in doc.get("install", []):
                    state.absent.discard(res)
                for res in doc.get("delete", []):
                    # deleting a CRD deletes its objects; its watches end (here: all are cut)
                    state.absent.add(res)
                    state.objects[res].clear()
                    state.cut_generation += 1
                    state.cut_mid_event = False
                return {"absent": sorted(state.absent)}
            if path == "/requests/clear":
                state.requests.clear()
                return {"ok": True}
            if path == "/watches/peak/reset":  # the peak starts again from what is open now
                state.watches_peak = dict(state.watches_open)
                state.conns_peak = dict(state.conns_open)
                state.streams_peak = state.streams_open
                return {"ok": True}
            return {"error": "unknown path"}

    return Control


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--token", default="test-token")
    ap.add_argument("--state", help="objects and resourceVersion: loaded at start when the "
                    "file exists, saved on SIGTERM (an API server restart keeps its data)")
    ap.add_argument("--without-kind", action="append", default=[], choices=sorted(WRITABLE),
                    help="start with this CRD kind not installed (control /kinds installs it)")
    ap.add_argument("--forget-history", action="store_true",
                    help="with --state: every resourceVersion before the restart is gone (410); "
                    "without it the event history is kept, as etcd keeps it across an API "
                    "server restart, and watches resume from their resourceVersion")
    ap.add_argument("--no-h2", action="store_true",
                    help="serve HTTP/1.1 only (ALPN offers no h2), like an API server behind a "
                    "proxy that does not speak HTTP/2")
    ap.add_argument("--h2-max-streams", type=int, default=100,
                    help="SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection")
    ap.add_argument("--max-requests", type=int, default=100000,
                    help="entries the request log keeps (the oldest are dropped and counted)")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    make_certs(args.dir)
    with open(os.path.join(args.dir, "token"), "w") as f:
        f.write(args.token + "\n")
    state = State(args.token)
    state.absent = set(args.without_kind)
    state.requests = collections.deque(maxlen=max(1, args.max_requests))
    H2Front.max_streams = args.h2_max_streams
    if args.state and os.path.exists(args.state):
        with open(args.state) as f:
            saved = json.load(f)
        state.rv = saved["resourceVersion"]
        for res, items in saved["objects"].items():
            state.objects[res] = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                                  for o in items}
            for o in items:  # the indexes are derived, not saved
                state.index(res, o, True)
        if args.forget_history:
            # a new revision the old watches never saw: everything before it is gone
            state.rv += 1
            state.compacted = state.rv
        else:
            # etcd keeps its revisions across an API server restart (until it compacts): a
            # watch from an older resourceVersion still gets the events it missed
            state.log = [tuple(e) for e in saved.get("log", [])]
            state.log_rvs = [e[0] for e in state.log]
            state.compacted = saved.get("compacted", 0)
    if args.state:
        def save(*_):
            with state.cond:
                doc = {"resourceVersion": state.rv,
                       "objects": {r: list(o.values()) for r, o in state.objects.items()},
                       "log": state.log, "compacted": state.compacted}
            with open(args.state + ".tmp", "w") as f:
                json.dump(doc, f)
            os.replace(args.state + ".tmp", args.state)
            os._exit(0)

        signal.signal(signal.SIGTERM, save)

    api = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    api.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(args.dir, "server.crt"), os.path.join(args.dir, "server.key"))
    if h2 is None and not args.no_h2:
        print("k8s_api.py: python3-h2 missing: serving HTTP/1.1 only", file=sys.stderr)
    ctx.set_alpn_protocols(["http/1.1"] if args.no_h2 or h2 is None else ["h2", "http/1.1"])
    # the handshake happens in each connection's thread, not in the accept loop
    api.socket = ctx.wrap_socket(api.socket, server_side=True, do_handshake_on_connect=False)
    control = ThreadingHTTPServer(("127.0.0.1", args.control_port), make_control(state))
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(f"listening https://127.0.0.1:{api.server_address[1]} "
          f"control http://127.0.0.1:{control.server_address[1]}", flush=True)
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
