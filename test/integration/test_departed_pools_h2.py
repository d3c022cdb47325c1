"""HTTP/2 upstream connections to endpoints that left the set (issue 16 defect 5, for
clusters with protocol "h2"): an idle one closes at once, a busy one after its last stream,
and neither keeps a place under circuit_breakers.max_connections. The endpoints are small
HTTP/2 servers (python3-h2) behind the fake Kubernetes API, one EndpointSlice whose port
moves from server to server as pods roll."""

import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from harness import (
    cluster_status,
    k8s_service,
    k8s_slice,
    listener,
    make_config,
    metric_sum,
    route,
    wait_for,
)
from servers import ThreadedServer, closed_at_teardown

MAX_CONNECTIONS = 2


class H2Server(ThreadedServer):
    """Answers every stream with 200, `x-backend: NAME`; a path /delay/MS answers after MS
    milliseconds. open_connections() counts the connections open now."""

    def __init__(self, name):
        self.name = name
        super().__init__()

    def answer(self, h2c, sock, sid, send_lock):
        with send_lock:
            h2c.send_headers(sid, [(":status", "200"), ("x-backend", self.name)])
            h2c.send_data(sid, self.name.encode(), end_stream=True)
            sock.sendall(h2c.data_to_send())

    def serve(self, sock):
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        send_lock = threading.Lock()
        try:
            with send_lock:
                h2c.initiate_connection()
                sock.sendall(h2c.data_to_send())
            sock.settimeout(60)
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                with send_lock:
                    events = h2c.receive_data(data)
                    sock.sendall(h2c.data_to_send())
                for ev in events:
                    if not isinstance(ev, h2.events.RequestReceived):
                        continue
                    path = dict(ev.headers).get(b":path", b"/").decode()
                    if path.startswith("/delay/"):
                        threading.Timer(int(path.split("/")[2]) / 1000, self.answer,
                                        (h2c, sock, ev.stream_id, send_lock)).start()
                    else:
                        self.answer(h2c, sock, ev.stream_id, send_lock)
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()


@pytest.fixture
def h2_servers():
    yield from closed_at_teardown(H2Server)


def move_to(k8s, pf, server):
    k8s.apply(k8s_slice("web-a", "web", server.port, ["127.0.0.1"]))
    want = [server.address]
    wait_for(lambda: sorted(e["address"] for e in cluster_status(pf, "web")["endpoints"]) == want,
             10, f"web endpoints == {want}")


def active(pf):
    return metric_sum(pf.metrics(), "pilotfish_upstream_connections_active", cluster="web")


def start(k8s, start_pilotfish, first):
    k8s.apply(k8s_service("web", [("http", 80)]),
              k8s_slice("web-a", "web", first.port, ["127.0.0.1"]))
    cfg = make_config(
        [listener("main", [route("web", prefix="/")])],
        [{"name": "web", "kubernetes": {"service": "web", "port": "http"}, "protocol": "h2",
          "idle_timeout": "120s", "circuit_breakers": {"max_connections": MAX_CONNECTIONS}}],
        kubernetes=k8s.config(),
    )
    return start_pilotfish(cfg, workers=1)


def test_idle_h2_connections_to_departed_endpoints_close_and_leave_the_breaker(
    k8s, h2_servers, start_pilotfish
):
    servers = [h2_servers(f"s{i}") for i in range(4)]
    pf = start(k8s, start_pilotfish, servers[0])
    statuses = []
    for i, s in enumerate(servers):
        if i:
            move_to(k8s, pf, s)
        r = pf.get("/")
        statuses.append((r.status, r.header("X-Backend")))
        # the one connection left is to the endpoint in the set now; the others closed
        wait_for(lambda: active(pf) == 1, 5, "only the current endpoint's connection open")
        for gone in servers[:i]:
            wait_for(lambda: gone.open_connections() == 0, 5, f"{gone.name}'s connection closed")
    # before: the third endpoint found two idle connections to gone ones and got 503
    assert statuses == [(200, s.name) for s in servers], statuses
    assert metric_sum(pf.metrics(), "pilotfish_upstream_overflow_total", cluster="web") == 0


def test_busy_h2_connection_to_a_departed_endpoint_closes_after_its_last_stream(
    k8s, h2_servers, start_pilotfish
):
    a, b = h2_servers("a"), h2_servers("b")
    pf = start(k8s, start_pilotfish, a)
    result = {}

    def slow():
        result["resp"] = pf.get("/delay/1500")

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: active(pf) == 1 and a.open_connections() == 1, 5,
             "the slow request's connection to a")
    move_to(k8s, pf, b)
    r = pf.get("/")  # a new stream goes to b, not onto a's busy connection
    assert r.status == 200 and r.header("X-Backend") == "b", r
    t.join(timeout=30)
    assert result["resp"].status == 200 and result["resp"].header("X-Backend") == "a"
    # its last stream done, a's connection closes: a is not in the set any more
    wait_for(lambda: a.open_connections() == 0, 5, "a's connection closed after its stream")
    assert active(pf) == 1
