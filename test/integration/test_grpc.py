"""gRPC through pilotfish: python3-grpcio servers (generic handlers, no generated code) behind
a cluster with protocol h2, a gRPC client with ONE channel to pilotfish's plain listener
(h2c). Every call is balanced on its own, so the calls of one channel spread over all the
servers, which a per-connection balancer cannot do."""

import collections
import struct
import subprocess
from concurrent import futures

import pytest

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route, wait_for

grpc = pytest.importorskip("grpc")

METHOD = "/pilotfish.test.Echo/Call"


@pytest.fixture
def grpc_servers():
    """Three gRPC servers answering Call with b"NAME:" + the request."""
    servers = []

    def make(name):
        def call(request, context):
            return name.encode() + b":" + request

        handler = grpc.method_handlers_generic_handler(
            "pilotfish.test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(f"{LOCALHOST}:0")
        server.start()
        servers.append(server)
        return f"{LOCALHOST}:{port}"

    addresses = {name: make(name) for name in ("s1", "s2", "s3")}
    yield addresses
    for server in servers:
        server.stop(grace=None).wait(10)  # the ports are closed when this returns


@pytest.fixture
def grpc_proxy(grpc_servers, start_pilotfish):
    cfg = make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", list(grpc_servers.values()), lb_policy="round_robin", protocol="h2")],
    )
    return start_pilotfish(cfg, workers=1)


def test_unary_calls_of_one_channel_spread_over_three_servers(grpc_proxy):
    channel = grpc.insecure_channel(f"{LOCALHOST}:{grpc_proxy.port()}")
    try:
        call = channel.unary_unary(METHOD)
        seen = collections.Counter()
        for i in range(30):
            reply = call(f"m{i}".encode(), timeout=10)
            name, echoed = reply.split(b":", 1)
            assert echoed == f"m{i}".encode()
            seen[name.decode()] += 1
    finally:
        channel.close()
    assert seen == {"s1": 10, "s2": 10, "s3": 10}, seen
    # The HTTP/2 codec opens its connections through the same accounting as HTTP/1's: each
    # server got one multiplexed connection, each timed in the connect histogram.
    wait_for(
        lambda: metric_sum(grpc_proxy.metrics(), "pilotfish_upstream_connect_duration_seconds_count",
                           cluster="grpc") == 3,
        10, "three timed connects")
    assert metric_sum(grpc_proxy.metrics(), "pilotfish_upstream_connections_total",
                      cluster="grpc") == 3


def test_a_grpc_error_status_comes_back_in_the_trailers(grpc_proxy):
    channel = grpc.insecure_channel(f"{LOCALHOST}:{grpc_proxy.port()}")
    try:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/pilotfish.test.Echo/Missing")(b"x", timeout=10)
    finally:
        channel.close()
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, err.value


def test_an_http1_client_reaches_an_h2_upstream(grpc_proxy):
    # A gRPC message framed by hand (RFC-less but simple: flag byte, 4-byte length).
    message = b"from-h1"
    frame = b"\x00" + struct.pack(">I", len(message)) + message
    r = subprocess.run(
        ["curl", "-sS", "--http1.1", "--max-time", "10", "-i", "-H", "content-type: application/grpc",
         "-H", "te: trailers", "--data-binary", "@-", f"http://{LOCALHOST}:{grpc_proxy.port()}{METHOD}"],
        input=frame, capture_output=True, timeout=20,
    )
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), r.stdout
    # The body is chunked toward HTTP/1; curl de-chunks it: one framed reply.
    assert body[5:].endswith(b":from-h1"), body
    assert body[5:].split(b":")[0] in (b"s1", b"s2", b"s3"), body
