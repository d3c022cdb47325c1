"""CONNECT to a known service: pilotfish accepts `CONNECT host:port` only when a route names
that host (or a discovered Service answers to it), never dials it, and serves the tunnel as a
connection bound to that authority: HTTP/1.1 or h2c inside, each request or stream routed
and balanced on its own. A stock gRPC client with nothing but http_proxy set gets per-call
balancing this way; anything else is refused (pilotfish is never an open proxy)."""

import collections
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from harness import LOCALHOST, cluster, listener, make_config, route, wait_for

TIMEOUT = 30


@pytest.fixture
def tunnel_proxy(start_backend, start_pilotfish):
    a, b = start_backend("a"), start_backend("b")
    admin = start_backend("admin")
    cfg = make_config(
        [listener("main", [route("reviews", host="reviews.shop"),
                           route("admin", host="admin.internal")])],
        [cluster("reviews", [a.address, b.address], lb_policy="round_robin"),
         cluster("admin", [admin.address])])
    return start_pilotfish(cfg, workers=1)


def raw_connect(pf, authority, extra=b""):
    """A socket that sent CONNECT authority and read the answer's head."""
    s = socket.create_connection((LOCALHOST, pf.port()), timeout=10)
    s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode() + extra)
    head = b""
    while b"\r\n\r\n" not in head:
        data = s.recv(4096)
        if not data:
            break
        head += data
    return s, head


def read_response(s, head=b""):
    """One HTTP/1.1 response with content-length: (status, headers dict, body)."""
    buf = head
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, buf
        buf += data
    hdr, _, body = buf.partition(b"\r\n\r\n")
    lines = hdr.decode().split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(fields.get("content-length", "0"))
    while len(body) < n:
        data = s.recv(65536)
        assert data
        body += data
    return int(lines[0].split()[1]), fields, body[:n]


def test_curl_through_a_tunnel_to_a_known_service_is_balanced_per_request(tunnel_proxy):
    urls = [f"http://reviews.shop:9080/r{i}" for i in range(6)]
    r = subprocess.run(["curl", "-sS", "--max-time", "15", "-p", "-x",
                        f"http://{LOCALHOST}:{tunnel_proxy.port()}", *urls],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    # pf-backend answers with its name; one tunnel, six requests, both endpoints.
    names = collections.Counter(r.stdout.split())
    assert names == {"a": 3, "b": 3}, r.stdout


def test_h2c_inside_a_tunnel_is_served_stream_by_stream(tunnel_proxy):
    r = subprocess.run(["curl", "-sS", "--max-time", "15", "--http2-prior-knowledge", "-p",
                        "-x", f"http://{LOCALHOST}:{tunnel_proxy.port()}",
                        "-w", "\n%{http_version}", "http://reviews.shop:9080/h2"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    body, _, version = r.stdout.rpartition("\n")
    assert version == "2", r.stdout
    assert body.strip() in ("a", "b"), r.stdout


def test_a_tunnel_is_bound_to_its_authority(tunnel_proxy):
    s, head = raw_connect(tunnel_proxy, "reviews.shop:9080")
    assert head.startswith(b"HTTP/1.1 200"), head
    # Host names another routed service: the tunnel still goes where CONNECT said.
    s.sendall(b"GET /x HTTP/1.1\r\nHost: admin.internal\r\n\r\n")
    status, _, body = read_response(s, head.partition(b"\r\n\r\n")[2])
    s.close()
    assert status == 200 and body.strip() in (b"a", b"b"), body


def raw_response(s, buf):
    """One HTTP/1.1 response with content-length, as the bytes that came."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, buf
        buf += data
    hdr = buf.partition(b"\r\n\r\n")[0].decode().lower()
    n = int(hdr.split("content-length:")[1].split("\r\n")[0])
    while len(buf) < len(hdr) + 4 + n:
        data = s.recv(65536)
        assert data
        buf += data
    return buf


def test_a_tunnel_that_ends_gets_one_access_log_line(tunnel_proxy):
    s, head = raw_connect(tunnel_proxy, "reviews.shop:9080")
    assert head.startswith(b"HTTP/1.1 200"), head
    request = b"GET /inside HTTP/1.1\r\nHost: reviews.shop\r\n\r\n"
    s.sendall(request)
    response = raw_response(s, head.partition(b"\r\n\r\n")[2])
    # The request inside has its own line; the tunnel's comes when it ends.
    wait_for(lambda: any(e.get("path") == "/inside" for e in tunnel_proxy.access_log()), 10,
             "the line of the request inside")
    assert not any(e["method"] == "CONNECT" for e in tunnel_proxy.access_log())
    s.close()
    (line,) = wait_for(lambda: [e for e in tunnel_proxy.access_log() if e["method"] == "CONNECT"],
                       10, "the tunnel's line")
    assert (line["authority"], line["status"], line["protocol"], line["client"]) == (
        "reviews.shop:9080", 200, "HTTP/1.1", LOCALHOST), line
    # The bytes after the 200, each way.
    assert (line["bytes_in"], line["bytes_out"]) == (len(request), len(response)), line
    assert line["duration_ms"] >= 0 and line["grpc_status"] is None, line


def test_the_tunnels_line_follows_the_configured_format_and_fields(start_backend,
                                                                  start_pilotfish, tmp_path):
    a = start_backend("a")
    log = tmp_path / "access.log"
    cfg = make_config([listener("main", [route("reviews", host="reviews.shop")])],
                      [cluster("reviews", [a.address])])
    cfg["access_log"] = {"format": "text", "path": str(log),
                         "fields": ["method", "authority", "status", "bytes_in", "bytes_out"]}
    pf = start_pilotfish(cfg, workers=1)
    s, head = raw_connect(pf, "reviews.shop:9080", extra=b"ping")
    assert head.startswith(b"HTTP/1.1 200"), head
    s.close()

    def lines():
        return log.read_text().splitlines() if log.exists() else []
    (line,) = wait_for(lambda: [ln for ln in lines() if ln.startswith("CONNECT")], 10,
                       "the tunnel's text line")
    # "ping" is no HTTP request: a 400 answers it inside the tunnel, then it closes.
    method, authority, status, bytes_in, bytes_out = line.split(" ")
    assert (method, authority, status, bytes_in) == ("CONNECT", '"reviews.shop:9080"', "200",
                                                     "4"), line
    assert int(bytes_out) > 0, line


@pytest.mark.parametrize("authority", ["evil.example:443", "127.0.0.1:22", "reviews.shop"])
def test_connect_anywhere_else_is_refused(tunnel_proxy, authority):
    s, head = raw_connect(tunnel_proxy, authority)
    s.close()
    status = int(head.split()[1])
    if authority == "reviews.shop":
        assert status == 400, head  # no port
    else:
        assert status == 403, head


def test_a_route_without_a_host_does_not_make_every_name_known(start_backend, start_pilotfish):
    a = start_backend("a")
    cfg = make_config([listener("main", [route("c", prefix="/")])], [cluster("c", [a.address])])
    pf = start_pilotfish(cfg, workers=1)
    s, head = raw_connect(pf, "anything.example:80")
    s.close()
    assert head.startswith(b"HTTP/1.1 403"), head


GRPC_CLIENT = textwrap.dedent("""
    import collections, sys, grpc
    channel = grpc.insecure_channel("reviews.shop:9080")
    call = channel.unary_unary("/pilotfish.test.Echo/Call")
    seen = collections.Counter()
    for i in range(30):
        reply = call(f"m{i}".encode(), timeout=10)
        name, _, echo = reply.partition(b":")
        assert echo == f"m{i}".encode(), reply
        seen[name.decode()] += 1
    print(dict(seen))
""")


def test_a_stock_grpc_client_with_http_proxy_gets_per_call_balancing(start_pilotfish):
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    servers, addresses = [], []
    for name in ("s1", "s2", "s3"):
        def call(request, context, name=name):
            return name.encode() + b":" + request

        handler = grpc.method_handlers_generic_handler(
            "pilotfish.test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        addresses.append(f"{LOCALHOST}:{server.add_insecure_port(f'{LOCALHOST}:0')}")
        server.start()
        servers.append(server)
    try:
        cfg = make_config([listener("main", [route("reviews", host="reviews.shop")])],
                          [cluster("reviews", addresses, protocol="h2",
                                   lb_policy="round_robin")])
        pf = start_pilotfish(cfg, workers=1)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["http_proxy"] = f"http://{LOCALHOST}:{pf.port()}"
        r = subprocess.run([sys.executable, "-c", GRPC_CLIENT], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        seen = eval(r.stdout.strip().splitlines()[-1])  # a dict literal printed above
        assert seen == {"s1": 10, "s2": 10, "s3": 10}, seen
    finally:
        for server in servers:
            server.stop(grace=None).wait(10)
