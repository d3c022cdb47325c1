"""gRPC health checks keep one HTTP/2 connection per endpoint, a stream per check, and speak
TLS with ALPN h2 on TLS clusters. The server here is python3-h2 on raw sockets (optionally
wrapped by Python's ssl), so that its connections, streams and ALPN can be counted and
controlled."""

import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from harness import (cluster, cluster_status, listener, make_config, metric_sum, route, wait_for)
from servers import ThreadedServer, closed_at_teardown
from test_tls import pki  # noqa: F401

SERVING = b"\x00\x00\x00\x00\x02\x08\x01"  # HealthCheckResponse{status: SERVING}, framed


class HealthServer(ThreadedServer):
    """Answers every grpc.health.v1.Health/Check with SERVING. With `tls`, an ssl context for
    the server side; with `goaway_after`, each connection says GOAWAY after that many checks
    and closes."""

    def __init__(self, tls=None, goaway_after=None):
        self.tls, self.goaway_after = tls, goaway_after
        self.checks = 0
        self.paths = set()
        super().__init__()

    def serve(self, conn):
        conn.settimeout(30)
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            h2c.initiate_connection()
            conn.sendall(h2c.data_to_send())
            answered = 0
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for ev in h2c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.paths.add(dict(ev.headers)[b":path"].decode())
                    elif isinstance(ev, h2.events.DataReceived):
                        h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        sid = ev.stream_id
                        h2c.send_headers(sid, [(":status", "200"),
                                               ("content-type", "application/grpc")])
                        h2c.send_data(sid, SERVING)
                        h2c.send_headers(sid, [("grpc-status", "0")], end_stream=True)
                        answered += 1
                        with self.lock:
                            self.checks += 1
                conn.sendall(h2c.data_to_send())
                if self.goaway_after and answered >= self.goaway_after:
                    h2c.close_connection()
                    conn.sendall(h2c.data_to_send())
                    return
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            return
        finally:
            conn.close()


@pytest.fixture
def servers():
    yield from closed_at_teardown(HealthServer)


def checked(server, **extra):
    check = {"type": "grpc", "interval": "100ms", "timeout": "2s", "unhealthy_threshold": 1,
             "healthy_threshold": 1}
    return make_config([listener("main", [route("grpc", prefix="/")])],
                       [cluster("grpc", [server.address], protocol="h2", health_check=check,
                                **extra)])


def endpoint(pf):
    (ep,) = cluster_status(pf, "grpc")["endpoints"]
    return ep


def checks(pf, result):
    return metric_sum(pf.metrics(), "pilotfish_health_checks_total", cluster="grpc",
                      result=result)


def test_grpc_checks_share_one_connection_per_endpoint(servers, start_pilotfish):
    server = servers()
    pf = start_pilotfish(checked(server), workers=1)
    wait_for(lambda: server.checks >= 6, 15, "six checks")
    assert server.connections == 1, server.connections
    assert server.paths == {"/grpc.health.v1.Health/Check"}
    assert endpoint(pf)["health_check"]["last_result"] == "SERVING"
    assert checks(pf, "failure") == 0 and checks(pf, "success") >= 6


def test_a_grpc_check_connection_the_server_ends_is_opened_again(servers, start_pilotfish):
    server = servers(goaway_after=2)
    pf = start_pilotfish(checked(server), workers=1)
    wait_for(lambda: server.checks >= 6, 15, "six checks")
    # Two checks per connection, then GOAWAY and a close: a new connection, no failed check.
    assert 3 <= server.connections <= server.checks // 2 + 1, (server.connections, server.checks)
    assert checks(pf, "failure") == 0 and checks(pf, "timeout") == 0
    assert endpoint(pf)["health"] == "healthy"


def tls_context(pki, alpn):  # noqa: F811
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.ec[0], pki.ec[1])
    ctx.set_alpn_protocols(alpn)
    return ctx


def test_grpc_checks_speak_tls_with_alpn_h2_on_a_tls_cluster(servers, start_pilotfish,
                                                            pki):  # noqa: F811
    server = servers(tls=tls_context(pki, ["h2"]))
    pf = start_pilotfish(checked(server, tls={"ca_file": pki.ca[0], "sni": "ec.test"}),
                         workers=1)
    wait_for(lambda: server.checks >= 4, 15, "four checks over TLS")
    assert server.connections == 1, server.connections
    assert endpoint(pf)["health_check"]["last_result"] == "SERVING"
    assert checks(pf, "failure") == 0


def test_a_tls_endpoint_that_does_not_choose_h2_fails_the_grpc_check(servers, start_pilotfish,
                                                                     pki):  # noqa: F811
    server = servers(tls=tls_context(pki, ["http/1.1"]))
    pf = start_pilotfish(checked(server, tls={"ca_file": pki.ca[0], "sni": "ec.test"}),
                         workers=1)
    wait_for(lambda: endpoint(pf)["health"].startswith("unhealthy"), 15, "the endpoint out")
    assert endpoint(pf)["health_check"]["last_result"] == \
        "TLS: the endpoint did not choose h2 (ALPN)"
    assert server.checks == 0
