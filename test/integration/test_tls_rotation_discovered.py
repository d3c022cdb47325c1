"""Certificate rotation for clusters Kubernetes auto-discovery makes from a TLS template: the
template's CA, client certificate and key (a Secret laid out as the kubelet does) rotate
under traffic and every discovered cluster's new handshakes use them; the files are stat()ed
once per check however many clusters share them; a half-written Secret keeps the last good
context and is tried again when it changes; a cluster whose Service goes stops being
watched, and one that takes its slot is watched. Real pilotfish against
test/fakes/k8s_api.py and Python TLS backends on 127.0.0.1."""

import http.client
import json
import socket
import threading
import time

import pytest

from harness import (
    LOCALHOST,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    metric_sum,
    route,
    wait_for,
)
from test_tls import TIMEOUT, Pki, tls_backends  # noqa: F401
from test_tls_rotation import Secret

SERVICES = 40  # clusters sharing the template's three files
FILES = 3
TICK_S = 0.5  # the watch's check interval (proxy/tls_rotation.c TICK_MS)
LOAD_THREADS = 3
LOAD_MAX_S = 120  # the bound of the load if the checks never end


@pytest.fixture(scope="module")
def dpki(tmp_path_factory):
    pki = Pki(str(tmp_path_factory.mktemp("dpki")))
    pki.c1 = pki._leaf("client1", pki.ca, "ec", "URI:spiffe://mesh.test/v1", client=True)
    pki.c2 = pki._leaf("client2", pki.ca, "ec", "URI:spiffe://mesh.test/v2", client=True)
    pki.backend = pki._leaf("backend", pki.ca, "ec", "DNS:backend.test")
    # an endpoint whose certificate only the rotated CA bundle trusts
    pki.backend_other = pki._leaf("backend-other", pki.other_ca, "ec", "DNS:backend.test")
    both = pki.path("both-cas.crt")
    with open(both, "w") as out:
        for ca in (pki.ca[0], pki.other_ca[0]):
            with open(ca) as f:
                out.write(f.read())
    pki.both_cas = both
    # a certificate file cut in the middle of its PEM, as a writer caught half-way leaves it
    cut = pki.path("client1-cut.crt")
    with open(pki.c1[0]) as f:
        text = f.read()
    with open(cut, "w") as out:
        out.write(text[: len(text) // 2])
    pki.c1_cut = cut
    return pki


def service(name, backend):
    return [k8s_service(name, [("https", 443)]),
            k8s_slice(f"{name}-1", name, backend.port, ["127.0.0.1"], port_name="https")]


def gone(name):
    return [("delete", "services", "default", name),
            ("delete", "endpointslices", "default", f"{name}-1")]


def discovered_tls_config(k8s, secret, **auto):
    template = {"tls": {"ca_file": secret.path("ca.crt"), "sni": "backend.test",
                        "cert_file": secret.path("tls.crt"), "key_file": secret.path("tls.key")},
                # every request a new connection, so every request a new handshake
                "max_idle_per_endpoint": 0, "connect_timeout": "2s"}
    discover = dict({"namespaces": ["default"], "cluster": template}, **auto)
    return make_config([listener("main", [])], [], kubernetes=k8s.config(auto_discover=discover))


def ask(pf, host):
    """(status, client URI the backend saw or None) for one request to a Service's name."""
    with socket.create_connection((LOCALHOST, pf.port("main")), timeout=TIMEOUT) as s:
        s.sendall(f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(s)
        resp.begin()
        body = resp.read()
    if resp.status != 200:
        return resp.status, None
    return 200, json.loads(body)["client_uri"]


def all_see(pf, names, uri):
    return all(ask(pf, n) == (200, uri) for n in names)


def watched(pf, what):
    return metric_sum(pf.metrics(), "pilotfish_tls_watched", what=what)


def reloads(pf, result, **labels):
    return metric_sum(pf.metrics(), "pilotfish_tls_certificate_reloads_total", result=result,
                      **labels)


def file_checks(pf):
    return metric_sum(pf.metrics(), "pilotfish_tls_file_checks_total")


class Load:
    """Threads sending requests round the Services' names until stopped; every answer that
    is not 200 with one of the client identities rotated in is kept."""

    def __init__(self, pf, names):
        self.pf, self.names = pf, names
        self.done, self.failures = 0, []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True)
                        for k in range(LOAD_THREADS)]
        for t in self.threads:
            t.start()

    def run(self, k):
        deadline = time.monotonic() + LOAD_MAX_S
        i = k
        while not self.stopped.is_set() and time.monotonic() < deadline:
            name = self.names[i % len(self.names)]
            i += LOAD_THREADS
            try:
                status, uri = ask(self.pf, name)
                ok = status == 200 and uri in ("spiffe://mesh.test/v1", "spiffe://mesh.test/v2")
                failure = None if ok else f"{name}: {status} {uri}"
            except Exception as e:  # every failure is the test's business
                failure = f"{name}: {e!r}"
            with self.lock:
                self.done += 1
                if failure:
                    self.failures.append(failure)

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(TIMEOUT + 5)


def test_discovered_tls_clusters_rotate_under_traffic_with_one_stat_per_shared_file(
        k8s, start_pilotfish, tls_backends, dpki, tmp_path):
    secret = Secret(str(tmp_path / "upstream-tls"))
    secret.write({"ca.crt": dpki.ca[0], "tls.crt": dpki.c1[0], "tls.key": dpki.c1[1]})
    b = tls_backends(dpki.backend, ca=dpki.ca[0], require_client=True)
    other = tls_backends(dpki.backend_other, ca=dpki.ca[0], require_client=True)
    names = [f"svc-{i}" for i in range(SERVICES)]
    k8s.apply(*[o for n in names for o in service(n, b)], *service("moved", other))
    pf = start_pilotfish(discovered_tls_config(k8s, secret))
    wait_for(lambda: watched(pf, "clusters") == SERVICES + 1, 20, "every cluster watched")
    assert watched(pf, "files") == FILES
    assert all_see(pf, names, "spiffe://mesh.test/v1")
    # signed by a CA the first bundle does not hold: refused at the handshake
    assert ask(pf, "moved")[0] == 503

    load = Load(pf, names)
    try:
        wait_for(lambda: load.done >= 20, 20, "traffic before the rotation")
        checks_before, t_before = file_checks(pf), time.monotonic()
        # a new client certificate and a CA bundle that also trusts the other CA
        secret.write({"ca.crt": dpki.both_cas, "tls.crt": dpki.c2[0], "tls.key": dpki.c2[1]})
        wait_for(lambda: all_see(pf, names, "spiffe://mesh.test/v2"), 20,
                 "every discovered cluster to present the new client certificate")
        wait_for(lambda: ask(pf, "moved")[0] == 200, 10, "the new CA to be trusted")
        checks, elapsed = file_checks(pf) - checks_before, time.monotonic() - t_before
        assert reloads(pf, "applied") == SERVICES + 1
        assert reloads(pf, "applied", cluster="svc-7.default:443") == 1

        # A half-written Secret: a certificate with another certificate's key, then a
        # certificate cut in the middle. The context in use stays; each is tried once.
        secret.write({"ca.crt": dpki.both_cas, "tls.crt": dpki.c1[0], "tls.key": dpki.c2[1]})
        wait_for(lambda: reloads(pf, "rejected") == SERVICES + 1, 20, "the mismatch refused")
        assert all_see(pf, names[:5], "spiffe://mesh.test/v2")
        secret.write({"ca.crt": dpki.both_cas, "tls.crt": dpki.c1_cut, "tls.key": dpki.c1[1]})
        wait_for(lambda: reloads(pf, "rejected") == 2 * (SERVICES + 1), 20, "the cut PEM refused")
        assert all_see(pf, names[:5], "spiffe://mesh.test/v2")
        # the writer finishes: the whole pair is there and it is taken
        secret.write({"ca.crt": dpki.both_cas, "tls.crt": dpki.c1[0], "tls.key": dpki.c1[1]})
        wait_for(lambda: all_see(pf, names, "spiffe://mesh.test/v1"), 20, "the finished pair")
    finally:
        load.stop()
    assert load.done >= 100, load.done
    assert not load.failures, load.failures[:10]
    print(f"{load.done} requests, no failure; {checks} stats in {elapsed:.1f} s")

    # One stat per file per check: 41 clusters sharing 3 files stat 3 files, not 123.
    assert checks <= FILES * (elapsed / TICK_S + 2), (checks, elapsed)
    assert reloads(pf, "rejected") == 2 * (SERVICES + 1)
    log = pf.stderr_text()
    assert "the key does not match the certificate" in log
    assert "tried again when they change" in log
    # the first few clusters a line each, the rest one line per check
    assert f"tls certificate reload rejected for {SERVICES + 1 - 8} more" in log
    assert log.count("tls certificate reload rejected cluster=") == 2 * 8
    assert f"tls certificates reloaded for {SERVICES + 1 - 8} more" in log


def test_a_retired_discovered_cluster_stops_being_watched_and_its_slot_successor_is(
        k8s, start_pilotfish, tls_backends, dpki, tmp_path):
    secret = Secret(str(tmp_path / "upstream-tls"))
    secret.write({"ca.crt": dpki.ca[0], "tls.crt": dpki.c1[0], "tls.key": dpki.c1[1]})
    b = tls_backends(dpki.backend, ca=dpki.ca[0], require_client=True)
    k8s.apply(*service("web", b))
    pf = start_pilotfish(discovered_tls_config(k8s, secret, mode="on_demand",
                                               idle_timeout="1s"))
    assert watched(pf, "clusters") == 0  # nothing discovered yet
    assert ask(pf, "web") == (200, "spiffe://mesh.test/v1")
    wait_for(lambda: watched(pf, "clusters") == 1, 10, "the on-demand cluster watched")
    secret.write({"ca.crt": dpki.ca[0], "tls.crt": dpki.c2[0], "tls.key": dpki.c2[1]})
    wait_for(lambda: ask(pf, "web") == (200, "spiffe://mesh.test/v2"), 20,
             "the on-demand cluster to present the new certificate")
    assert reloads(pf, "applied", cluster="web.default:443") == 1

    # Unused, it is let go: no longer watched, its series gone, its files too.
    wait_for(lambda: watched(pf, "clusters") == 0, 20, "the idle cluster let go")
    assert watched(pf, "files") == 0
    names = {labels.get("cluster") for n, labels, _ in pf.metrics()
             if n == "pilotfish_tls_certificate_reloads_total"}
    assert "web.default:443" not in names, names

    # Its slot comes back for the next Service, whose cluster is watched from the start.
    k8s.apply(*service("next", b))
    assert ask(pf, "next") == (200, "spiffe://mesh.test/v2")
    wait_for(lambda: watched(pf, "clusters") == 1, 10, "the new cluster watched")
    assert watched(pf, "files") == FILES
    secret.write({"ca.crt": dpki.ca[0], "tls.crt": dpki.c1[0], "tls.key": dpki.c1[1]})
    wait_for(lambda: ask(pf, "next") == (200, "spiffe://mesh.test/v1"), 20,
             "the slot's new cluster to present the rotated certificate")
    assert reloads(pf, "applied", cluster="next.default:443") == 1
