"""HTTP/2 over TLS: a listener whose tls.alpn lists "h2" serves HTTP/2 to clients that choose
it in the handshake (curl --http2, nghttp) and HTTP/1.1 to the others; a cluster with
protocol h2 and tls offers ALPN "h2" to its endpoints (a python3-h2 server over Python's
ssl here) and refuses an endpoint that did not choose h2. Certificates are made by the
openssl CLI at test time (test_tls's Pki)."""

import json
import shutil
import ssl
import subprocess

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route
from servers import ThreadedServer, closed_at_teardown
from test_tls import Pki

pytestmark = pytest.mark.skipif(
    not (shutil.which("nghttp") and shutil.which("curl")), reason="nghttp2-client not installed"
)

TIMEOUT = 30


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(str(tmp_path_factory.mktemp("pki")))
    p.backend = p._leaf("backend", p.ca, "ec", "DNS:backend.test")
    return p


def tls_conf(pki, alpn):
    return {"certificates": [{"cert_file": pki.rsa[0], "key_file": pki.rsa[1]}], "alpn": alpn}


def curl(pf, pki, *args, listener_name="secure", path="/headers"):
    port = pf.port(listener_name)
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "15", "--cacert", pki.ca[0], "--resolve",
         f"rsa.test:{port}:{LOCALHOST}", "-w", "\n%{http_version}", *args,
         f"https://rsa.test:{port}{path}"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    body, _, version = r.stdout.rpartition("\n")
    return body, version


@pytest.fixture
def h2tls(pki, start_backend, start_pilotfish):
    api = start_backend("api")
    cfg = make_config(
        [listener("secure", [route("api")], tls=tls_conf(pki, ["h2", "http/1.1"])),
         listener("h1only", [route("api")], tls=tls_conf(pki, ["http/1.1"]))],
        [cluster("api", [api.address])])
    return start_pilotfish(cfg, workers=1)


def upstream_header(body, name):
    return [v for k, v in json.loads(body)["headers"] if k.lower() == name]


def test_curl_chooses_h2_by_alpn_and_the_upstream_sees_https(h2tls, pki):
    body, version = curl(h2tls, pki, "--http2")
    assert version == "2", version
    assert upstream_header(body, "x-forwarded-proto") == ["https"]
    assert upstream_header(body, "host") == [f"rsa.test:{h2tls.port('secure')}"]
    # A client that offers only HTTP/1.1 is still served on the same port.
    body, version = curl(h2tls, pki, "--http1.1")
    assert version == "1.1", version
    assert upstream_header(body, "x-forwarded-proto") == ["https"]
    # A listener without "h2" in its alpn answers curl --http2 with HTTP/1.1.
    _, version = curl(h2tls, pki, "--http2", listener_name="h1only")
    assert version == "1.1", version


def test_nghttp_runs_concurrent_streams_over_tls(h2tls):
    port = h2tls.port("secure")
    urls = [f"https://{LOCALHOST}:{port}/x{i}" for i in range(20)]
    r = subprocess.run(["nghttp", "-nv", "-m", "1", *urls], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "The negotiated protocol: h2" in r.stdout, r.stdout[:2000]
    assert r.stdout.count(":status: 200") == 20, r.stdout[-2000:]
    assert metric_sum(h2tls.metrics(), "pilotfish_upstream_requests_total", cluster="api") >= 20


class TlsH2Server(ThreadedServer):
    """An HTTP/2 server over TLS (python3-h2 on Python's ssl) answering "NAME" and the request's
    :scheme and :authority as JSON. `alpn` is what it accepts; it records what each connection
    chose. Threads; stopped by close()."""

    def __init__(self, name, cert, alpn=("h2",)):
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert[0], cert[1])
        self.ctx.set_alpn_protocols(list(alpn))
        self.chosen = []
        self.requests = 0
        super().__init__()

    def serve(self, raw):
        raw.settimeout(30)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self.lock:
            self.chosen.append(s.selected_alpn_protocol())
        if s.selected_alpn_protocol() != "h2":
            s.close()
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        try:
            s.sendall(conn.data_to_send())
            while True:
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        fields = dict(ev.headers)
                        body = json.dumps({"backend": self.name, "scheme": fields[":scheme"],
                                           "authority": fields[":authority"]}).encode()
                        conn.send_headers(ev.stream_id, [(":status", "200"),
                                                         ("content-length", str(len(body)))])
                        conn.send_data(ev.stream_id, body, end_stream=True)
                        with self.lock:
                            self.requests += 1
                s.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            return
        finally:
            s.close()


@pytest.fixture
def tls_h2_servers():
    yield from closed_at_teardown(TlsH2Server)


def upstream_cfg(pki, server, **extra):
    return make_config(
        [listener("main", [route("up")]),
         listener("secure", [route("up")], tls=tls_conf(pki, ["h2", "http/1.1"]))],
        [cluster("up", [server.address], protocol="h2", connect_timeout="2s",
                 tls={"ca_file": pki.ca[0], "sni": "backend.test"}, **extra)])


def test_an_h2_cluster_with_tls_negotiates_h2_and_multiplexes_one_connection(
        pki, tls_h2_servers, start_pilotfish):
    server = tls_h2_servers("t1", pki.backend)
    pf = start_pilotfish(upstream_cfg(pki, server), workers=1)
    # HTTP/1.1 client on the plain listener -> HTTP/2 over TLS upstream.
    for i in range(5):
        r = pf.get(f"/a{i}")
        assert r.status == 200, r
        got = json.loads(r.body)
        assert got["backend"] == "t1" and got["scheme"] == "http", got
    # HTTP/2 over TLS client -> HTTP/2 over TLS upstream, end to end.
    for _ in range(5):
        body, version = curl(pf, pki, "--http2", path="/b")
        assert version == "2"
        assert json.loads(body)["backend"] == "t1"
    assert server.requests == 10
    assert server.chosen == ["h2"], server.chosen  # one connection, ALPN h2
    assert metric_sum(pf.metrics(), "pilotfish_upstream_pool_reuses_total", cluster="up") == 9


def test_an_endpoint_that_does_not_choose_h2_is_a_connect_failure(pki, tls_h2_servers,
                                                                  start_pilotfish):
    server = tls_h2_servers("t1", pki.backend, alpn=("http/1.1",))
    pf = start_pilotfish(upstream_cfg(pki, server), workers=1)
    r = pf.get("/x")
    assert r.status == 503, r
    # Python's ssl chooses nothing when the client offers only "h2": no prior knowledge
    # over TLS (RFC 9113 3.3), so pilotfish sends no frame and counts a connect failure.
    assert server.chosen and "h2" not in server.chosen, server.chosen
    assert metric_sum(pf.metrics(), "pilotfish_upstream_connect_failures_total",
                      cluster="up") >= 1
    assert server.requests == 0
