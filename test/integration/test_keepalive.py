"""Connection reuse: downstream keep-alive, pipelining, HTTP/1.0, upstream connection pools."""

import json
import os

from harness import (
    cluster,
    listener,
    make_config,
    make_request,
    pattern_bytes,
    route,
    wait_for,
)


def test_many_requests_on_one_downstream_connection(proxy):
    with proxy.pf.raw() as c:
        for i in range(100):
            resp = c.request("GET", f"/bytes/{i}")
            assert resp.status == 200, resp
            assert resp.body == pattern_bytes(i)
            assert not c.eof, f"connection closed after request {i}"


def test_upstream_connections_are_reused_across_sequential_requests(proxy):
    before = proxy.api.stats()["connections"]
    for i in range(50):
        # A new downstream connection each time: reuse must come from the upstream pool.
        resp = proxy.pf.get(f"/v1/{i}", host="api.local")
        assert resp.status == 200 and resp.header("X-Backend") == "api", resp
    after = proxy.api.stats()
    # +1 for the stats query itself; a handful for per-worker pools, never one per request.
    new_connections = after["connections"] - before - 1
    assert new_connections <= 4, after
    assert after["requests"] >= 50


def test_upstream_connections_are_reused_on_one_downstream_connection(proxy):
    before = proxy.api.stats()["connections"]
    with proxy.pf.raw() as c:
        for i in range(50):
            resp = c.request("GET", f"/v1/{i}", host="api.local")
            assert resp.status == 200, resp
    assert proxy.api.stats()["connections"] - before - 1 <= 4


def test_pipelined_requests_answered_in_order(proxy):
    reqs = [
        make_request("GET", "/delay/100?seq=0", host="abs.local"),
        make_request("GET", "/headers?seq=1", host="abs.local"),
        make_request("GET", "/bytes/5", host="abs.local"),
        make_request("POST", "/echo", body=b"pipelined-body", host="abs.local"),
        make_request("GET", "/headers?seq=4", host="abs.local"),
    ]
    with proxy.pf.raw() as c:
        c.send(b"".join(reqs))  # one write
        got = [c.read_response(method=m) for m in ("GET", "GET", "GET", "POST", "GET")]
    assert [r.status for r in got] == [200] * 5, got
    assert json.loads(got[1].body)["target"] == "/headers?seq=1"
    assert got[2].body == b"01234"
    assert got[3].body == b"pipelined-body"
    assert json.loads(got[4].body)["target"] == "/headers?seq=4"


def test_pipelined_requests_across_clusters_answered_in_order(proxy):
    # Alternating clusters: the slow first one must not be overtaken by faster ones.
    reqs = [
        make_request("GET", "/delay/200", host="abs.local"),
        make_request("GET", "/first", host="web.local"),
        make_request("GET", "/delay/50", host="abs.local"),
        make_request("GET", "/second", host="web.local"),
    ]
    with proxy.pf.raw() as c:
        c.send(b"".join(reqs))
        got = [c.read_response() for _ in reqs]
    assert [r.header("X-Backend") for r in got][0::2] == ["api", "api"], got
    assert all(r.header("X-Backend") in ("web1", "web2") for r in got[1::2]), got
    assert all(r.status == 200 for r in got), got


def test_pipelined_last_request_with_connection_close_closes_after_answering(proxy):
    reqs = [
        make_request("GET", "/bytes/3"),
        make_request("GET", "/bytes/4", headers=[("Connection", "close")]),
    ]
    with proxy.pf.raw() as c:
        c.send(b"".join(reqs))
        a, b = c.read_response(), c.read_response()
        assert (a.body, b.body) == (b"012", b"0123")
        assert c.wait_closed(10)


def test_http10_request_without_keepalive_gets_response_then_close(proxy):
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "/bytes/10", version="HTTP/1.0"))
        resp = c.read_response()
        assert resp.status == 200
        assert resp.body == b"0123456789"
        assert c.wait_closed(10), "connection stayed open after an HTTP/1.0 response"


def test_http10_request_with_keepalive_stays_open(proxy):
    with proxy.pf.raw() as c:
        for n in (10, 20, 30):
            c.send(make_request("GET", f"/bytes/{n}", [("Connection", "keep-alive")], version="HTTP/1.0"))
            resp = c.read_response()
            assert resp.status == 200 and resp.body == pattern_bytes(n)
            assert resp.header("Content-Length") == str(n), resp
            assert not c.eof


def test_http10_client_never_gets_chunked_response(proxy):
    # RFC 9112 6.1: no Transfer-Encoding to an HTTP/1.0 client, even if the upstream chunked.
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "/bytes/1000?chunked=1", version="HTTP/1.0"))
        resp = c.read_response()
        assert resp.status == 200
        assert not resp.header_all("Transfer-Encoding"), resp
        assert resp.body == pattern_bytes(1000)


def test_connection_close_request_gets_response_then_close(proxy):
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "/bytes/7", [("Connection", "close")]))
        resp = c.read_response()
        assert resp.body == b"0123456"
        assert c.wait_closed(10)


def server_socket_inode(server_port, client_port):
    """The inode of the accepted socket of this connection (0 while still in the backlog)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote = fields[1].split(":"), fields[2].split(":")
            if int(local[1], 16) == server_port and int(remote[1], 16) == client_port:
                return int(fields[9])
    return 0


def holds_socket(pid, inode):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            pass
    return False


def test_client_that_said_close_is_closed_with_the_response_not_lingered(
    start_backend, start_pilotfish
):
    # RFC 9112 9.6: a client that sends "close" sends nothing more, so pilotfish closes the
    # descriptor with the response instead of waiting for the client's FIN: once the client
    # sees the end, pilotfish holds that socket no more. (A server-decided close lingers.)
    b = start_backend("b")
    pf = start_pilotfish(
        make_config([listener("main", [route("c", prefix="/")])], [cluster("c", [b.address])]),
        workers=1,
    )
    for _ in range(3):
        with pf.raw() as c:
            inode = 0

            def accepted():
                nonlocal inode
                inode = server_socket_inode(pf.port(), c.sock.getsockname()[1])
                return inode != 0 and holds_socket(pf.pid, inode)

            wait_for(accepted, 10, "pilotfish to accept the connection")
            c.send(make_request("GET", "/", [("Connection", "close")]))
            assert c.read_response().status == 200
            assert c.wait_closed(10)
            # the client still holds its socket open: pilotfish's end is gone already
            assert not holds_socket(pf.pid, inode)


def test_idle_downstream_connection_closed_after_idle_timeout(start_backend, start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(
        make_config(
            [listener("main", [route("c", prefix="/")], idle_timeout="1s")],
            [cluster("c", [b.address])],
        )
    )
    with pf.raw() as c:
        assert c.request("GET", "/").status == 200
        assert c.wait_closed(15), "idle keep-alive connection was never closed"
    assert pf.get("/").status == 200


def test_requests_on_keepalive_connection_after_an_upstream_close(proxy):
    # /close makes the backend drop its side of the pooled connection; the next request
    # must not be sent on that dead connection (or must be retried safely).
    for _ in range(5):
        assert proxy.pf.get("/close", host="abs.local").status == 200
        assert proxy.pf.get("/v1/x", host="api.local").status == 200


def test_downstream_connections_active_gauge_follows_open_connections(proxy):
    def active():
        return sum(
            v for n, _, v in proxy.pf.metrics() if n == "pilotfish_downstream_connections_active"
        )

    base = active()
    conns = [proxy.pf.raw() for _ in range(3)]
    try:
        for c in conns:
            assert c.request("GET", "/").status == 200
        wait_for(lambda: active() >= base + 3, 10, "active connections gauge to rise by 3")
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: active() <= base, 10, "active connections gauge to fall back")
