"""TLS without restarts: certificates swapped the way a Kubernetes Secret is (a `..data`
symlink renamed over) are served to new handshakes while clients keep going, a broken pair
is refused and counted, an upstream client certificate rotates too, and session tickets
are sealed with keys pilotfish rotates (and keeps across certificate rotations)."""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route, wait_for
from test_tls import OPENSSL, TIMEOUT, Pki, get, s_client, tls_backends  # noqa: F401

CLIENTS = 4
REQUESTS_PER_CLIENT = 750  # at least; clients go on until the rotations were checked
REQUESTS_MAX = 20000       # per client: the bound if the checks never end
RECONNECT_EVERY = 20  # so that new handshakes keep happening during the rotation


@pytest.fixture(scope="module")
def rpki(tmp_path_factory):
    pki = Pki(str(tmp_path_factory.mktemp("rpki")))
    pki.v1 = pki._leaf("rot1", pki.ca, "ec", "DNS:rot.test")
    pki.v2 = pki._leaf("rot2", pki.ca, "ec", "DNS:rot.test")
    pki.v3 = pki._leaf("rot3", pki.ca, "ec", "DNS:rot.test")
    pki.c1 = pki._leaf("client1", pki.ca, "ec", "URI:spiffe://mesh.test/v1", client=True)
    pki.c2 = pki._leaf("client2", pki.ca, "ec", "URI:spiffe://mesh.test/v2", client=True)
    pki.backend = pki._leaf("backend", pki.ca, "ec", "DNS:backend.test")
    return pki


class Secret:
    """A directory laid out as the kubelet lays out a mounted Secret: the data in a
    timestamped directory, `..data` a symlink to it, and each key a symlink through
    `..data`. An update writes a new directory and renames a new `..data` over the old."""

    def __init__(self, root):
        self.root = root
        self.version = 0
        os.makedirs(root, exist_ok=True)

    def path(self, key):
        return os.path.join(self.root, key)

    def write(self, files):
        self.version += 1
        data = f"..v{self.version}"
        os.makedirs(os.path.join(self.root, data))
        for key, src in files.items():
            shutil.copyfile(src, os.path.join(self.root, data, key))
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(data, tmp)
        os.replace(tmp, os.path.join(self.root, "..data"))
        for key in files:
            link = self.path(key)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", key), link)


def serial_of(cert_file):
    r = subprocess.run([OPENSSL, "x509", "-noout", "-serial", "-in", cert_file],
                       capture_output=True, text=True, timeout=TIMEOUT)
    return r.stdout.strip()


def served_serial(port, ca):
    """The serial of the certificate a new s_client connection is given."""
    r = s_client(port, ca, "-servername", "rot.test")
    r2 = subprocess.run([OPENSSL, "x509", "-noout", "-serial"], input=r.stdout,
                        capture_output=True, text=True, timeout=TIMEOUT)
    return r2.stdout.strip()


def reloads(pf, result, **owner):
    return metric_sum(pf.metrics(), "pilotfish_tls_certificate_reloads_total", result=result,
                      **owner)


class TlsConn(http.client.HTTPConnection):
    """HTTP/1.1 over TLS to 127.0.0.1, verifying the name rot.test (sent as SNI)."""

    def __init__(self, port, ctx):
        super().__init__(LOCALHOST, port, timeout=TIMEOUT)
        self.ctx = ctx

    def connect(self):
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock = self.ctx.wrap_socket(raw, server_hostname="rot.test")


class Load:
    """CLIENTS threads, each sending requests over TLS keep-alive connections it renews
    every RECONNECT_EVERY requests, until stopped (and at least REQUESTS_PER_CLIENT); every
    failure is kept."""

    def __init__(self, port, ca):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.done = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def client(self):
        conn = None
        for i in range(REQUESTS_MAX):
            if self.stopped.is_set() and i >= REQUESTS_PER_CLIENT:
                break
            try:
                if conn is None or i % RECONNECT_EVERY == 0:
                    if conn:
                        conn.close()
                    conn = TlsConn(self.port, self.ctx)
                conn.request("GET", "/headers", headers={"Host": "rot.test"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise AssertionError(f"status {resp.status}")
            except Exception as e:  # every failure is the test's business
                with self.lock:
                    self.failures.append(repr(e))
                conn = None
            with self.lock:
                self.done += 1
        if conn:
            conn.close()

    def join(self):
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=300)
        return not any(t.is_alive() for t in self.threads)


def test_a_rotated_listener_certificate_is_served_under_load_and_a_broken_one_refused(
        start_backend, start_pilotfish, rpki, tmp_path):
    secret = Secret(str(tmp_path / "secret"))
    secret.write({"tls.crt": rpki.v1[0], "tls.key": rpki.v1[1]})
    api = start_backend("api")
    tls = {"certificates": [{"cert_file": secret.path("tls.crt"),
                             "key_file": secret.path("tls.key")}]}
    pf = start_pilotfish(make_config([listener("secure", [route("api")], tls=tls)],
                                     [cluster("api", [api.address])]))
    port = pf.port("secure")
    assert served_serial(port, rpki.ca[0]) == serial_of(rpki.v1[0])
    expiry = metric_sum(pf.metrics(), "pilotfish_tls_certificate_expiry_seconds",
                        file=secret.path("tls.crt"))
    assert 86400 < expiry <= 2 * 86400, expiry  # made with -days 2

    load = Load(port, rpki.ca[0])
    wait_for(lambda: load.done >= CLIENTS * REQUESTS_PER_CLIENT // 4, 120, "some of the load")
    # files that did not change are never reloaded, however often they are looked at
    assert reloads(pf, "applied", listener="secure") == 0
    # a connection opened before the rotation keeps its certificate and keeps working
    held = TlsConn(port, load.ctx)
    held.request("GET", "/headers", headers={"Host": "rot.test"})
    assert held.getresponse().read()
    old_der = held.sock.getpeercert(binary_form=True)

    secret.write({"tls.crt": rpki.v2[0], "tls.key": rpki.v2[1]})
    swapped = time.monotonic()
    wait_for(lambda: served_serial(port, rpki.ca[0]) == serial_of(rpki.v2[0]), 20,
             "new handshakes to get the new certificate")
    took = time.monotonic() - swapped
    print(f"new certificate served {took:.2f} s after the swap")
    assert reloads(pf, "applied", listener="secure") == 1

    held.request("GET", "/headers", headers={"Host": "rot.test"})
    resp = held.getresponse()
    assert resp.status == 200 and resp.read()
    assert held.sock.getpeercert(binary_form=True) == old_der
    held.close()

    # a certificate with a key that is not its own: refused, named, counted; v2 stays
    secret.write({"tls.crt": rpki.v3[0], "tls.key": rpki.v2[1]})
    wait_for(lambda: reloads(pf, "rejected", listener="secure") == 1, 20, "the refusal")
    assert "tls certificate reload rejected listener=secure" in pf.stderr_text()
    assert "does not match the certificate in" in pf.stderr_text()
    assert served_serial(port, rpki.ca[0]) == serial_of(rpki.v2[0])

    assert load.done < CLIENTS * REQUESTS_MAX  # the rotations happened under the load
    assert load.join(), "the load did not finish"
    assert load.failures == [], load.failures[:5]
    assert load.done >= CLIENTS * REQUESTS_PER_CLIENT
    print(f"{load.done} requests, no failure")
    # logged and counted once, not at every look at the files
    assert reloads(pf, "rejected", listener="secure") == 1
    assert pf.stderr_text().count("tls certificate reload rejected") == 1


def test_an_upstream_client_certificate_rotates_for_new_connections(start_pilotfish, tls_backends,
                                                                    rpki, tmp_path):
    secret = Secret(str(tmp_path / "client-secret"))
    secret.write({"tls.crt": rpki.c1[0], "tls.key": rpki.c1[1]})
    b = tls_backends(rpki.backend, ca=rpki.ca[0], require_client=True)
    cfg = make_config([listener("main", [route("secure")])],
                      [cluster("secure", [b.address], connect_timeout="2s", max_idle_per_endpoint=0,
                               tls={"ca_file": rpki.ca[0], "sni": "backend.test",
                                    "cert_file": secret.path("tls.crt"),
                                    "key_file": secret.path("tls.key")})])
    pf = start_pilotfish(cfg)
    status, body = get(pf, "/close")
    assert status == 200 and json.loads(body)["client_uri"] == "spiffe://mesh.test/v1", body
    secret.write({"tls.crt": rpki.c2[0], "tls.key": rpki.c2[1]})

    def identity():
        status, body = get(pf, "/close")
        return status == 200 and json.loads(body)["client_uri"] == "spiffe://mesh.test/v2"

    wait_for(identity, 20, "the backend to see the new client certificate")
    assert reloads(pf, "applied", cluster="secure") == 1
    assert metric_sum(pf.metrics(), "pilotfish_tls_certificate_expiry_seconds",
                      file=secret.path("tls.crt")) > 86400


REQ = "GET /headers HTTP/1.1\r\nHost: rot.test\r\nConnection: close\r\n\r\n"


def resume(port, ca, sess, save=False):
    """One s_client connection (TLS 1.3) that offers or saves a session: its stdout. A request
    makes it wait for the answer, so the tickets sent after the handshake arrive first."""
    flag = "-sess_out" if save else "-sess_in"
    return s_client(port, ca, "-servername", "rot.test", "-tls1_3", flag, sess, "-ign_eof",
                    stdin=REQ).stdout


def rotations(pf):
    return metric_sum(pf.metrics(), "pilotfish_tls_ticket_key_rotations_total", listener="secure")


def test_sessions_resume_across_a_certificate_rotation(start_backend, start_pilotfish, rpki,
                                                       tmp_path):
    secret = Secret(str(tmp_path / "secret"))
    secret.write({"tls.crt": rpki.v1[0], "tls.key": rpki.v1[1]})
    api = start_backend("api")
    tls = {"certificates": [{"cert_file": secret.path("tls.crt"),
                             "key_file": secret.path("tls.key")}]}
    pf = start_pilotfish(make_config([listener("secure", [route("api")], tls=tls)],
                                     [cluster("api", [api.address])]))
    port, sess = pf.port("secure"), str(tmp_path / "sess")
    assert "New," in resume(port, rpki.ca[0], sess, save=True)
    secret.write({"tls.crt": rpki.v2[0], "tls.key": rpki.v2[1]})
    wait_for(lambda: reloads(pf, "applied", listener="secure") == 1, 20, "the rotation")
    # the ticket keys are pilotfish's, not the replaced context's: the client still resumes
    out = resume(port, rpki.ca[0], sess)
    assert "Reused," in out, out


def test_ticket_keys_rotate_and_a_ticket_lives_one_to_two_periods(start_backend, start_pilotfish,
                                                                  rpki, tmp_path):
    api = start_backend("api")
    tls = {"certificates": [{"cert_file": rpki.v1[0], "key_file": rpki.v1[1]}],
           "session_ticket_rotation": "1s"}
    pf = start_pilotfish(make_config([listener("secure", [route("api")], tls=tls)],
                                     [cluster("api", [api.address])]))
    port, sess = pf.port("secure"), str(tmp_path / "sess")
    start = rotations(pf)
    assert "New," in resume(port, rpki.ca[0], sess, save=True)
    sealed_by = rotations(pf)
    # sealed with the key of rotation `start` (or a later one): it opens until two more
    out = resume(port, rpki.ca[0], sess)
    if rotations(pf) < start + 2:
        assert "Reused," in out, out
    wait_for(lambda: rotations(pf) >= sealed_by + 2, 20, "two ticket key rotations")
    out = resume(port, rpki.ca[0], sess)
    assert "New," in out and "Reused," not in out, out
