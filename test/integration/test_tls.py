"""TLS on listeners: certificates by SNI, versions, resumption, mTLS with SAN checks,
x-forwarded-client-cert, hostile handshakes. Certificates are made with the openssl CLI in
the test's tmp dir; every client is a real one (openssl s_client, curl, Python's ssl)."""

import hashlib
import http.client
import json
import os
import socket
import signal
import ssl
import subprocess
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import (LOCALHOST, PILOTFISH_BIN, cluster, free_port, listener, make_config,
                     metric_sum, route, wait_for)

OPENSSL = "openssl"
CURL = "curl"
TIMEOUT = 30


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, **kw)


class Pki:
    """A CA, a second CA nobody trusts, server and client certificates signed by them."""

    def __init__(self, d):
        self.d = d
        self.ca = self._ca("ca", "pilotfish test CA")
        self.other_ca = self._ca("other-ca", "other CA")
        # server certificates: RSA with exact names, ECDSA with a wildcard
        self.rsa = self._leaf("rsa", self.ca, "rsa:2048",
                              "DNS:rsa.test,DNS:www.rsa.test,URI:spiffe://mesh.test/pilotfish")
        self.ec = self._leaf("ec", self.ca, "ec", "DNS:ec.test,DNS:*.ec.test")
        self.exact = self._leaf("exact", self.ca, "ec", "DNS:a.ec.test")
        # client certificates
        self.client = self._leaf("client", self.ca, "ec", "URI:spiffe://mesh.test/ns/shop/sa/web",
                                 client=True)
        self.client_other_san = self._leaf("client-other-san", self.ca, "ec",
                                           "URI:spiffe://evil.test/ns/shop/sa/web", client=True)
        self.client_other_ca = self._leaf("client-other-ca", self.other_ca, "ec",
                                          "URI:spiffe://mesh.test/ns/shop/sa/web", client=True)

    def path(self, name):
        return os.path.join(self.d, name)

    def _key(self, name, kind):
        key = self.path(f"{name}.key")
        if kind == "ec":
            r = run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", key])
        else:
            r = run([OPENSSL, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                     "-out", key])
        assert r.returncode == 0, r.stderr
        return key

    def _ca(self, name, cn):
        key = self._key(name, "ec")
        crt = self.path(f"{name}.crt")
        r = run([OPENSSL, "req", "-x509", "-new", "-key", key, "-subj", f"/CN={cn}", "-days", "2",
                 "-out", crt, "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        assert r.returncode == 0, r.stderr
        return (crt, key)

    def _leaf(self, name, ca, kind, sans, client=False):
        key = self._key(name, kind)
        csr, crt, ext = (self.path(f"{name}.{x}") for x in ("csr", "crt", "ext"))
        r = run([OPENSSL, "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr])
        assert r.returncode == 0, r.stderr
        with open(ext, "w") as f:
            f.write(f"subjectAltName={sans}\n")
            f.write(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
        r = run([OPENSSL, "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
                 "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt])
        assert r.returncode == 0, r.stderr
        return (crt, key)

    def expired(self, name, sans):
        """A certificate signed by the CA whose validity ended in 2020 (openssl ca sets both
        dates explicitly; x509 -days cannot go back in time)."""
        key = self._key(name, "ec")
        csr, crt, ext, cnf = (self.path(f"{name}.{x}") for x in ("csr", "crt", "ext", "cnf"))
        r = run([OPENSSL, "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr])
        assert r.returncode == 0, r.stderr
        db = self.path(f"{name}-db")
        os.makedirs(db, exist_ok=True)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("1000\n")
        with open(cnf, "w") as f:
            f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={db}/index.txt\nnew_certs_dir={db}\n"
                    f"serial={db}/serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n"
                    "[p]\ncommonName=supplied\n")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
        r = run([OPENSSL, "ca", "-batch", "-config", cnf, "-cert", self.ca[0], "-keyfile",
                 self.ca[1], "-in", csr, "-out", crt, "-startdate", "20200101000000Z",
                 "-enddate", "20200201000000Z", "-extfile", ext, "-notext"])
        assert r.returncode == 0, r.stderr
        return (crt, key)

    def der(self, cert):
        r = subprocess.run([OPENSSL, "x509", "-in", cert[0], "-outform", "DER"],
                           capture_output=True, timeout=TIMEOUT)
        return r.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("pki")))


def tls_listener(name, pki, **tls):
    conf = {"certificates": [
        {"cert_file": pki.rsa[0], "key_file": pki.rsa[1]},
        {"cert_file": pki.ec[0], "key_file": pki.ec[1]},
        {"cert_file": pki.exact[0], "key_file": pki.exact[1]},
    ]}
    conf.update(tls)
    return listener(name, [route("api")], tls=conf, header_timeout="2s")


def start(start_backend, start_pilotfish, pki, **tls):
    api = start_backend("api")
    cfg = make_config([tls_listener("secure", pki, **tls), listener("plain", [route("api")])],
                      [cluster("api", [api.address])])
    return start_pilotfish(cfg)


@pytest.fixture
def secure(start_backend, start_pilotfish, pki):
    return start(start_backend, start_pilotfish, pki)


@pytest.fixture
def mtls(start_backend, start_pilotfish, pki):
    return start(start_backend, start_pilotfish, pki, client_ca_file=pki.ca[0],
                 require_client_cert=True,
                 allowed_client_sans=["spiffe://mesh.test/ns/shop/*", "spiffe://mesh.test/admin"])


def client_ctx(pki, cert=None):
    ctx = ssl.create_default_context(cafile=pki.ca[0])
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def tls_request(port, ctx, sni, path="/headers", headers=()):
    """One request over a new TLS connection: (status, body bytes, peer DER certificate)."""
    raw = socket.create_connection((LOCALHOST, port), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True)
        lines = [f"GET {path} HTTP/1.1", f"Host: {sni}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read(), der


def upstream_headers(body, name):
    return [v for k, v in json.loads(body)["headers"] if k.lower() == name]


def failures(pf, reason):
    return metric_sum(pf.metrics(), "pilotfish_tls_handshake_failures_total", listener="secure",
                      reason=reason)


def test_sni_picks_exact_names_then_wildcards_and_defaults_to_the_first_certificate(secure, pki):
    port = secure.port("secure")
    ctx = client_ctx(pki)
    cases = [("rsa.test", pki.rsa), ("www.rsa.test", pki.rsa), ("ec.test", pki.ec),
             ("b.ec.test", pki.ec), ("a.ec.test", pki.exact)]
    for sni, want in cases:
        status, _, der = tls_request(port, ctx, sni)
        assert status == 200, sni
        assert der == pki.der(want), f"{sni}: wrong certificate"
    # no SNI, or a name no certificate has: the first certificate
    noverify = ssl.create_default_context()
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((LOCALHOST, port), timeout=TIMEOUT)
    with noverify.wrap_socket(raw) as s:
        assert s.getpeercert(binary_form=True) == pki.der(pki.rsa)
    raw = socket.create_connection((LOCALHOST, port), timeout=TIMEOUT)
    with noverify.wrap_socket(raw, server_hostname="x.y.ec.test") as s:
        assert s.getpeercert(binary_form=True) == pki.der(pki.rsa)


def test_curl_gets_through_with_https_forwarded_and_the_plain_listener_is_unchanged(secure, pki):
    port = secure.port("secure")
    r = run([CURL, "-sS", "--cacert", pki.ca[0], "--resolve", f"rsa.test:{port}:{LOCALHOST}",
             f"https://rsa.test:{port}/headers"])
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert [v for k, v in view["headers"] if k.lower() == "x-forwarded-proto"] == ["https"]
    r = run([CURL, "-sS", f"http://{LOCALHOST}:{secure.port('plain')}/headers"])
    assert r.returncode == 0, r.stderr
    assert [v for k, v in json.loads(r.stdout)["headers"]
            if k.lower() == "x-forwarded-proto"] == ["http"]


def test_keep_alive_requests_share_one_tls_connection(secure, pki):
    port = secure.port("secure")
    conn = http.client.HTTPSConnection(LOCALHOST, port, context=client_ctx(pki), timeout=TIMEOUT)
    conn._context.check_hostname = False  # the certificate names rsa.test, we dial an IP
    for i in range(20):
        conn.request("GET", f"/bytes/{1000 * i + 1}", headers={"Host": "rsa.test"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert len(resp.read()) == 1000 * i + 1
    conn.close()
    samples = secure.metrics()
    assert metric_sum(samples, "pilotfish_tls_handshakes_total", listener="secure") == 1
    assert metric_sum(samples, "pilotfish_downstream_connections_total", listener="secure") == 1


def test_a_large_body_streams_both_ways_over_tls(secure, pki):
    port = secure.port("secure")
    raw = socket.create_connection((LOCALHOST, port), timeout=TIMEOUT)
    ctx = client_ctx(pki)
    with ctx.wrap_socket(raw, server_hostname="rsa.test") as s:
        size = 8 * 1024 * 1024
        s.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: rsa.test\r\n\r\n".encode())
        resp = http.client.HTTPResponse(s)
        resp.begin()
        got = resp.read()
        assert resp.status == 200 and len(got) == size
        body = os.urandom(4 * 1024 * 1024)
        s.sendall(f"POST /echo HTTP/1.1\r\nHost: rsa.test\r\nContent-Length: {len(body)}\r\n"
                  "Connection: close\r\n\r\n".encode() + body)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200 and resp.read() == body


def s_client(port, *args, stdin=""):
    return subprocess.run([OPENSSL, "s_client", "-connect", f"{LOCALHOST}:{port}", "-CAfile",
                           *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT)


def handshook(r):
    """Whether s_client completed a handshake (a peer certificate and a cipher)."""
    return "BEGIN CERTIFICATE" in r.stdout and "Cipher is (NONE)" not in r.stdout


def test_protocol_versions_below_1_2_are_refused_and_1_3_only_refuses_1_2(start_backend,
                                                                       start_pilotfish, pki):
    pf = start(start_backend, start_pilotfish, pki)
    port = pf.port("secure")
    for version, ok in (("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)):
        r = s_client(port, pki.ca[0], "-servername", "rsa.test", version, "-cipher",
                     "DEFAULT@SECLEVEL=0")
        assert handshook(r) == ok, (version, r.stdout, r.stderr)
    assert failures(pf, "version") >= 1
    pf13 = start(start_backend, start_pilotfish, pki, min_version="1.3")
    r = s_client(pf13.port("secure"), pki.ca[0], "-servername", "rsa.test", "-tls1_2")
    assert not handshook(r), r.stdout
    r = s_client(pf13.port("secure"), pki.ca[0], "-servername", "rsa.test", "-tls1_3")
    assert handshook(r) and "New, TLSv1.3" in r.stdout, r.stdout


def test_alpn_selects_http_1_1_and_refuses_a_client_that_offers_only_h2(secure, pki):
    port = secure.port("secure")
    r = s_client(port, pki.ca[0], "-servername", "rsa.test", "-alpn", "h2,http/1.1")
    assert "ALPN protocol: http/1.1" in r.stdout, r.stdout
    r = s_client(port, pki.ca[0], "-servername", "rsa.test", "-alpn", "h2")
    assert "ALPN protocol" not in r.stdout
    assert "no application protocol" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_a_returning_client_resumes_its_session(secure, pki, tmp_path, version):
    port = secure.port("secure")
    sess = str(tmp_path / f"sess{version}")
    # A request makes s_client wait for the answer, so TLS 1.3's tickets arrive before it ends.
    req = "GET /headers HTTP/1.1\r\nHost: rsa.test\r\nConnection: close\r\n\r\n"
    r = s_client(port, pki.ca[0], "-servername", "rsa.test", version, "-sess_out", sess,
                 "-ign_eof", stdin=req)
    assert "New," in r.stdout and os.path.getsize(sess) > 0, r.stdout
    r = s_client(port, pki.ca[0], "-servername", "rsa.test", version, "-sess_in", sess,
                 "-ign_eof", stdin=req)
    assert "Reused," in r.stdout, r.stdout
    assert metric_sum(secure.metrics(), "pilotfish_tls_handshakes_total", listener="secure",
                      resumed="true") == 1


def closed_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_plaintext_garbage_and_truncated_handshakes_are_closed_quickly_and_counted(secure, pki):
    port = secure.port("secure")
    # Fixed garbage, not random: random bytes whose first byte has the high bit set and whose
    # third is 1 read as the header of an SSLv2-format ClientHello (about 1 in 512 draws),
    # and the server rightly waits for the rest of it: a handshake timeout, not a protocol
    # error. The first byte here is no TLS record type and has the high bit clear.
    garbage = bytes((11 + 37 * i) % 256 for i in range(200))
    cases = [
        ("http_request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("protocol", b"\x16\x03\x01\x00\x05hello" + garbage),
        ("protocol", garbage[:64] + b"\r\n\r\n"),
    ]
    for reason, data in cases:
        before = failures(secure, reason)
        with socket.create_connection((LOCALHOST, port), timeout=TIMEOUT) as s:
            s.sendall(data)
            assert closed_within(s, 5), reason
        wait_for(lambda: failures(secure, reason) == before + 1, 10, f"{reason} counted")
    # a ClientHello cut in the middle, then the client closes
    with socket.create_connection((LOCALHOST, port), timeout=TIMEOUT) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
    wait_for(lambda: failures(secure, "truncated") == 1, 10, "truncated handshake counted")
    # a client that sends nothing is closed at header_timeout (2s)
    with socket.create_connection((LOCALHOST, port), timeout=TIMEOUT) as s:
        t0 = time.monotonic()
        assert closed_within(s, 15)
        assert time.monotonic() - t0 >= 1.5
    wait_for(lambda: failures(secure, "timeout") == 1, 10, "handshake timeout counted")
    # and everyone else is served all along
    status, _, _ = tls_request(port, client_ctx(pki), "rsa.test")
    assert status == 200


def test_mtls_passes_the_verified_identity_upstream_and_strips_a_forged_one(mtls, pki):
    port = mtls.port("secure")
    forged = ("X-Forwarded-Client-Cert", "By=x;Hash=00;URI=spiffe://mesh.test/admin")
    status, body, _ = tls_request(port, client_ctx(pki, pki.client), "rsa.test",
                                  headers=[forged])
    assert status == 200
    xfcc = upstream_headers(body, "x-forwarded-client-cert")
    digest = hashlib.sha256(pki.der(pki.client)).hexdigest()
    assert xfcc == [f"By=spiffe://mesh.test/pilotfish;Hash={digest};"
                    "URI=spiffe://mesh.test/ns/shop/sa/web"], xfcc
    # the plaintext listener never forwards a client's own
    r = run([CURL, "-sS", "-H", f"{forged[0]}: {forged[1]}",
             f"http://{LOCALHOST}:{mtls.port('plain')}/headers"])
    assert upstream_headers(r.stdout, "x-forwarded-client-cert") == []


def test_mtls_refuses_no_certificate_another_ca_and_a_san_outside_the_allowed(mtls, pki):
    port = mtls.port("secure")
    url = f"https://rsa.test:{port}/headers"
    base = [CURL, "-sS", "--cacert", pki.ca[0], "--resolve", f"rsa.test:{port}:{LOCALHOST}"]
    for cert in (None, pki.client_other_ca, pki.client_other_san):
        extra = ["--cert", cert[0], "--key", cert[1]] if cert else []
        r = run(base + extra + [url])
        assert r.returncode != 0 and "x-forwarded" not in r.stdout.lower(), (cert, r.stdout)
    wait_for(lambda: failures(mtls, "client_cert") == 3, 10, "three client_cert failures")
    r = run(base + ["--cert", pki.client[0], "--key", pki.client[1], url])
    assert r.returncode == 0, r.stderr
    assert upstream_headers(r.stdout, "x-forwarded-client-cert")


def check_config(tmp_path, tls):
    cfg = make_config([listener("secure", [route("api")], tls=tls)],
                      [cluster("api", ["127.0.0.1:1"])])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return run([PILOTFISH_BIN, "--check-config", str(path)])


def test_config_errors_name_the_file_the_json_path_and_the_problem(pki, tmp_path):
    missing = str(tmp_path / "nope.crt")
    cases = [
        ({"certificates": [{"cert_file": missing, "key_file": pki.rsa[1]}]},
         f"$.listeners[0].tls.certificates[0].cert_file: {missing}: cannot read"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.ec[1]}]},
         f"$.listeners[0].tls.certificates[0].key_file: {pki.ec[1]}: the key does not match "
         f"the certificate in {pki.rsa[0]}"),
        ({"certificates": [{"cert_file": pki.rsa[1], "key_file": pki.rsa[1]}]},
         f"$.listeners[0].tls.certificates[0].cert_file: {pki.rsa[1]}: no PEM certificate"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}],
          "min_version": "1.1"}, "$.listeners[0].tls.min_version"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}],
          "require_client_cert": True}, "$.listeners[0].tls.client_ca_file: missing"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}],
          "client_ca_file": pki.rsa[1]}, f"$.listeners[0].tls.client_ca_file: {pki.rsa[1]}"),
        ({"certificates": []}, "$.listeners[0].tls.certificates: give at least one"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}],
          "alpn": ["spdy/3"]}, "$.listeners[0].tls.alpn[0]: unknown protocol"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}],
          "client_ca_file": pki.ca[0], "require_client_cert": True,
          "allowed_client_sans": ["spiffe://*/x"]}, "$.listeners[0].tls.allowed_client_sans[0]"),
        ({"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}],
          "session_ticket_rotation": "500ms"},
         "$.listeners[0].tls.session_ticket_rotation: at least 1s"),
    ]
    for tls, want in cases:
        r = check_config(tmp_path, tls)
        assert r.returncode != 0 and want in r.stderr, (want, r.stderr)
    ok = {"certificates": [{"cert_file": pki.ec[0], "key_file": pki.ec[1]}],
          "min_version": "1.3", "alpn": ["http/1.1"]}
    r = check_config(tmp_path, ok)
    assert r.returncode == 0, r.stderr


def test_cluster_tls_config_errors_name_the_file_and_the_json_path(pki, tmp_path):
    missing = str(tmp_path / "nope.crt")
    cases = [
        ({"ca_file": missing}, f"$.clusters[0].tls.ca_file: {missing}: no PEM CA certificate"),
        ({"cert_file": pki.client[0]}, "$.clusters[0].tls.key_file: missing"),
        ({"cert_file": pki.client[0], "key_file": pki.rsa[1]},
         f"$.clusters[0].tls.key_file: {pki.rsa[1]}: the key does not match"),
        ({"sni": "not a name"}, "$.clusters[0].tls.sni"),
        ({"alpn": ["h2"]}, "$.clusters[0].tls.alpn[0]: \"h2\" is offered by HTTP/2 connections"),
    ]
    for tls, want in cases:
        check = tls.pop("check", None)
        extra = {"health_check": check} if check else {}
        if "protocol" in tls:
            extra["protocol"] = tls.pop("protocol")
        cfg = make_config([listener("main", [route("api")])],
                          [cluster("api", ["127.0.0.1:1"], tls=tls, **extra)])
        path = tmp_path / "c.json"
        path.write_text(json.dumps(cfg))
        r = run([PILOTFISH_BIN, "--check-config", str(path)])
        assert r.returncode != 0 and want in r.stderr, (want, r.stderr)


# ---- upstream TLS ----------------------------------------------------------------------


class TlsBackend:
    """An HTTPS/1.1 backend (Python's ssl) on 127.0.0.1 that may require client certificates.
    It records, per connection, whether the session was resumed and the client's SAN URI."""

    def __init__(self, cert, ca=None, require_client=False):
        backend = self
        self.connections = []  # (session_reused, client URI or None)
        self.lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert[0], cert[1])
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                peer = self.connection.getpeercert()
                uri = None
                for kind, value in (peer or {}).get("subjectAltName", ()):
                    if kind == "URI":
                        uri = value
                with backend.lock:
                    backend.connections.append((self.connection.session_reused, uri))
                self.client_uri = uri

            def do_GET(self):
                body = json.dumps({"client_uri": self.client_uri, "path": self.path,
                                   "sni_host": self.headers.get("Host")}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if self.path.startswith("/close"):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self.server.daemon_threads = True
        raw_socket = self.server.socket
        self.server.socket = ctx.wrap_socket(raw_socket, server_side=True,
                                             do_handshake_on_connect=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"{LOCALHOST}:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_backends():
    started = []

    def start(*args, **kw):
        b = TlsBackend(*args, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def upstream_pf(start_pilotfish, backend, **tls):
    cfg = make_config([listener("main", [route("secure")])],
                      [cluster("secure", [backend.address], tls=tls, connect_timeout="2s")])
    return start_pilotfish(cfg)


def get(pf, path="/x"):
    with socket.create_connection((LOCALHOST, pf.port("main")), timeout=TIMEOUT) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: backend.test\r\nConnection: close\r\n\r\n".encode())
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


@pytest.fixture(scope="module")
def upki(pki):
    """Backend certificates: the right name, a wrong name, another CA, expired, a SPIFFE ID."""
    return types.SimpleNamespace(
        good=pki._leaf("backend", pki.ca, "ec", "DNS:backend.test"),
        wrong=pki._leaf("backend-wrong", pki.ca, "ec", "DNS:other.test"),
        untrusted=pki._leaf("backend-untrusted", pki.other_ca, "ec", "DNS:backend.test"),
        expired=pki.expired("backend-expired", "DNS:backend.test"),
        spiffe=pki._leaf("backend-spiffe", pki.ca, "ec", "URI:spiffe://mesh.test/ns/db/sa/api"),
    )


def test_upstream_tls_with_a_client_certificate_reuses_pooled_connections(
        start_pilotfish, tls_backends, pki, upki):
    b = tls_backends(upki.good, ca=pki.ca[0], require_client=True)
    pf = upstream_pf(start_pilotfish, b, ca_file=pki.ca[0], sni="backend.test",
                     cert_file=pki.client[0], key_file=pki.client[1])
    for _ in range(10):
        status, body = get(pf)
        assert status == 200, body
        assert json.loads(body)["client_uri"] == "spiffe://mesh.test/ns/shop/sa/web"
    assert len(b.connections) == 1, b.connections
    assert metric_sum(pf.metrics(), "pilotfish_upstream_pool_reuses_total", cluster="secure") == 9


def test_upstream_tls_sessions_are_resumed_on_reconnect(start_pilotfish, pki, upki):
    # openssl s_server -www answers each request with its session's state and closes, so
    # every request is a new connection that should resume the endpoint's last session.
    port = free_port()
    server = subprocess.Popen([OPENSSL, "s_server", "-accept", f"{LOCALHOST}:{port}", "-cert",
                               upki.good[0], "-key", upki.good[1], "-www", "-quiet"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        backend = types.SimpleNamespace(address=f"{LOCALHOST}:{port}")

        def listening():
            with socket.socket() as probe:
                return probe.connect_ex((LOCALHOST, port)) == 0

        wait_for(listening, 10, "openssl s_server to listen")
        pf = upstream_pf(start_pilotfish, backend, ca_file=pki.ca[0], sni="backend.test")
        states = []
        for _ in range(4):
            status, body = get(pf)
            assert status == 200, body
            states.append("Reused," if b"Reused," in body else "New," if b"New," in body else "?")
        assert states == ["New,", "Reused,", "Reused,", "Reused,"], states
    finally:
        server.terminate()
        server.wait(timeout=TIMEOUT)


@pytest.mark.parametrize("which,reason,text", [
    ("wrong", "name_mismatch", "hostname mismatch"),
    ("untrusted", "untrusted", "unable to get local issuer certificate"),
    ("expired", "expired", "certificate has expired"),
])
def test_an_endpoint_with_a_bad_certificate_fails_the_connect(start_pilotfish, tls_backends, pki,
                                                              upki, which, reason, text):
    b = tls_backends(getattr(upki, which))
    pf = upstream_pf(start_pilotfish, b, ca_file=pki.ca[0], sni="backend.test")
    status, body = get(pf)
    assert status == 503, body
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_upstream_connect_failures_total", cluster="secure") >= 1
    assert metric_sum(samples, "pilotfish_upstream_tls_failures_total", cluster="secure",
                      reason=reason) >= 1
    # the reason in the log and in /clusters, with the endpoint and the name verified
    assert (f"upstream TLS handshake failed cluster=secure upstream={b.address} "
            f"name=backend.test reason=\"{text}\"") in pf.stderr_text()
    tls = [c for c in pf.admin_json("/clusters")["clusters"] if c["name"] == "secure"][0]["tls"]
    assert tls["handshake_failures"][reason] >= 1, tls
    last = tls["last_failure"]
    assert (last["endpoint"], last["name"], last["reason"]) == (b.address, "backend.test", text)
    assert last["time"].endswith("Z")


def test_bad_certificates_feed_outlier_detection(start_pilotfish, tls_backends, pki, upki):
    bad, good = tls_backends(upki.expired), tls_backends(upki.good)
    cfg = make_config([listener("main", [route("secure")])],
                      [cluster("secure", [bad.address, good.address], connect_timeout="2s",
                               lb_policy="round_robin",
                               tls={"ca_file": pki.ca[0], "sni": "backend.test"},
                               outlier_detection={"consecutive_gateway_failure": 2,
                                                  "interval": "100ms"})])
    pf = start_pilotfish(cfg)

    def ejected():
        get(pf)
        return metric_sum(pf.metrics(), "pilotfish_outlier_ejections_total", cluster="secure",
                          reason="consecutive_gateway_failure") >= 1

    wait_for(ejected, 20, "the endpoint with the expired certificate to be ejected")
    eps = [c for c in pf.admin_json("/clusters")["clusters"] if c["name"] == "secure"][0]
    state = {e["address"]: e["outlier"]["ejected"] for e in eps["endpoints"]}
    assert state == {bad.address: True, good.address: False}, eps
    for _ in range(4):  # only the good one serves now
        assert get(pf)[0] == 200


def test_a_client_certificate_required_upstream_but_not_configured_fails(start_pilotfish,
                                                                         tls_backends, pki, upki):
    b = tls_backends(upki.good, ca=pki.ca[0], require_client=True)
    pf = upstream_pf(start_pilotfish, b, ca_file=pki.ca[0], sni="backend.test")
    status, _ = get(pf)
    assert status in (502, 503)


def test_verify_subject_alt_name_accepts_a_spiffe_id_instead_of_a_host_name(
        start_pilotfish, tls_backends, pki, upki):
    b = tls_backends(upki.spiffe)
    pf = upstream_pf(start_pilotfish, b, ca_file=pki.ca[0],
                     verify_subject_alt_name=["spiffe://mesh.test/ns/db/*"])
    status, body = get(pf)
    assert status == 200, body
    pf2 = upstream_pf(start_pilotfish, b, ca_file=pki.ca[0],
                      verify_subject_alt_name=["spiffe://mesh.test/ns/other/*"])
    status, _ = get(pf2)
    assert status == 503
    # without either, the endpoint's address is the name: the certificate has no IP SAN
    pf3 = upstream_pf(start_pilotfish, b, ca_file=pki.ca[0])
    status, _ = get(pf3)
    assert status == 503


def test_a_departed_tls_endpoint_leaves_no_session_behind(start_pilotfish, tls_backends, pki,
                                                         upki):
    # The endpoint's pool bucket holds its resumable session; when the endpoint leaves the
    # set (here: a reload moves the static cluster to another backend) the bucket goes, and
    # its session with it: under `make asan` the leak check at exit fails this test if not.
    a, b = tls_backends(upki.good), tls_backends(upki.good)
    pf = upstream_pf(start_pilotfish, a, ca_file=pki.ca[0], sni="backend.test")
    assert get(pf)[0] == 200
    moved = json.loads(json.dumps(pf.config))
    moved["clusters"][0]["endpoints"] = [b.address]
    applied = metric_sum(pf.metrics(), "pilotfish_config_reloads_total", result="applied")
    with open(pf.config_path + ".tmp", "w") as f:
        json.dump(moved, f)
    os.replace(pf.config_path + ".tmp", pf.config_path)
    os.kill(pf.pid, signal.SIGHUP)
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_config_reloads_total",
                                result="applied") > applied, 10, "the reload")
    # the next request prunes a's pool (its connection and bucket) and goes to b
    status, body = get(pf)
    assert status == 200, body
    assert len(a.connections) == 1 and len(b.connections) == 1
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_upstream_connections_active",
                                cluster="secure") == 1, 5, "a's pooled connection closed")
