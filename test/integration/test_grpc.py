"""gRPC through pilotfish: python3-grpcio servers (generic handlers, no generated code) behind
a cluster with protocol h2, a gRPC client with ONE channel to pilotfish's plain listener
(h2c). Every call is balanced on its own, so the calls of one channel spread over all the
servers, which a per-connection balancer cannot do."""

import collections
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent import futures

import pytest

from harness import (LOCALHOST, HarnessError, closed_port, cluster, listener, make_config,
                     metric_sum, route, wait_for)

grpc = pytest.importorskip("grpc")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))
import grpc_backend  # noqa: E402  (after the path; needs grpc)
from servers import ThreadedServer, closed_at_teardown  # noqa: E402

FAKE = os.path.join(os.path.dirname(__file__), "..", "fakes", "grpc_backend.py")
ECHO = "/pilotfish.test.Echo/"

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
    # The body is chunked toward HTTP/1; curl de-chunks it: one framed reply, and (with -i)
    # prints the trailers after it.
    (length,) = struct.unpack(">I", body[1:5])
    reply = body[5:5 + length]
    assert reply.endswith(b":from-h1") and reply.split(b":")[0] in (b"s1", b"s2", b"s3"), body
    assert body[5 + length:] == b"grpc-status: 0\r\n", body


def test_an_http1_client_gets_the_grpc_status_trailers_in_the_last_chunk(grpc_proxy):
    message = b"raw"
    frame = b"\x00" + struct.pack(">I", len(message)) + message
    r = subprocess.run(
        ["curl", "-sS", "--http1.1", "--raw", "--max-time", "10", "-H",
         "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@-",
         f"http://{LOCALHOST}:{grpc_proxy.port()}{METHOD}"],
        input=frame, capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    # --raw: the chunked framing as sent; the last chunk carries the server's trailers.
    last = r.stdout[r.stdout.rindex(b"\r\n0\r\n") + 2:]
    assert last.startswith(b"0\r\n") and last.endswith(b"\r\n\r\n"), r.stdout
    assert b"grpc-status: 0\r\n" in last, last


class ChunkedGrpcServer(ThreadedServer):
    """A gRPC server over HTTP/1.1 (raw sockets): answers every POST with a chunked body (one
    message when `status` is 0, else none) and grpc-status, grpc-message as chunked
    trailers."""

    def __init__(self, status):
        self.status = status
        self.requests = 0
        super().__init__()

    def serve(self, conn):
        with conn:
            conn.settimeout(10)
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                # The request body comes chunked (an HTTP/2 stream has no length): read to
                # its last chunk.
                while b"0\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                data = data.partition(b"0\r\n\r\n")[2]
                self.requests += 1
                # A failing call has no message: headers, then the status in the trailers.
                reply = b"\x00" + struct.pack(">I", 6) + b"h1:raw"
                chunk = b"%x\r\n" % len(reply) + reply + b"\r\n" if self.status == 0 else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
                             b"transfer-encoding: chunked\r\n\r\n" + chunk
                             + b"0\r\ngrpc-status: %d\r\ngrpc-message: from%%20h1\r\n\r\n"
                             % self.status)


@pytest.fixture
def chunked_grpc_servers():
    yield from closed_at_teardown(ChunkedGrpcServer)


@pytest.mark.parametrize("status", [0, 7])
def test_grpc_to_an_http1_upstream_gets_its_chunked_trailers(status, chunked_grpc_servers,
                                                            start_pilotfish):
    server = chunked_grpc_servers(status)
    pf = start_pilotfish(make_config(
        [listener("main", [route("h1", prefix="/")])],
        [cluster("h1", [server.address], protocol="http1")]), workers=1)
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        rpc = channel.unary_unary(METHOD)
        if status == 0:
            assert rpc(b"x", timeout=10) == b"h1:raw"
        else:
            with pytest.raises(grpc.RpcError) as err:
                rpc(b"x", timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
            assert err.value.details() == "from h1"
    assert server.requests == 1
    entries = access_entries(pf, 1)
    assert entries[-1]["grpc_status"] == status, entries


def test_a_failing_status_in_http1_chunked_trailers_is_retried(chunked_grpc_servers,
                                                              start_pilotfish):
    # "bad" answers every call with headers, no message and grpc-status 14 in the last
    # chunk's trailers: nothing reached the client, so the call is retried on "good".
    bad, good = chunked_grpc_servers(14), chunked_grpc_servers(0)
    pf = start_pilotfish(make_config(
        [listener("main", [route("h1", prefix="/")])],
        [cluster("h1", [bad.address, good.address], protocol="http1",
                 lb_policy="round_robin",
                 retry={"on": ["unavailable"], "max_retries": 2})]), workers=1)
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        for _ in range(4):
            assert channel.unary_unary(METHOD)(b"x", timeout=10) == b"h1:raw"
    assert bad.requests >= 2 and good.requests == 4, (bad.requests, good.requests)
    assert metric_sum(pf.metrics(), "pilotfish_upstream_retries_total", cluster="h1") == \
        bad.requests
    # Without a retry left, the status comes back as the server said it.
    pf2 = start_pilotfish(make_config(
        [listener("main", [route("h1", prefix="/")])],
        [cluster("h1", [bad.address], protocol="http1",
                 retry={"on": ["unavailable"], "max_retries": 1})]), workers=1)
    with grpc.insecure_channel(f"{LOCALHOST}:{pf2.port()}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(METHOD)(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    assert metric_sum(pf2.metrics(), "pilotfish_upstream_retries_total", cluster="h1") == 1


# ---- pilotfish's own answers are trailers-only responses with a grpc-status -----------------


@pytest.fixture
def echo_servers():
    """start(name) -> a running grpc_backend.Backend; all stopped at the end."""
    started = []

    def start(name):
        b = grpc_backend.start_server(name)
        started.append(b)
        return b

    yield start
    for b in started:
        b.server.stop(grace=None).wait(10)


def call(port, method, request, timeout=10, metadata=None):
    with grpc.insecure_channel(f"{LOCALHOST}:{port}") as channel:
        return channel.unary_unary(ECHO + method)(request, timeout=timeout, metadata=metadata)


def call_error(port, method, request, timeout=10):
    with pytest.raises(grpc.RpcError) as err:
        call(port, method, request, timeout)
    return err.value


def curl_grpc(port, path, extra=()):
    """An HTTP/1.1 client posting one framed gRPC message: (head, body)."""
    frame = b"\x00" + struct.pack(">I", 2) + b"hi"
    r = subprocess.run(
        ["curl", "-sS", "--http1.1", "--max-time", "10", "-i", "-H", "content-type: application/grpc",
         *extra, "--data-binary", "@-", f"http://{LOCALHOST}:{port}{path}"],
        input=frame, capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1").lower(), body


def access_entries(pf, n):
    wait_for(lambda: len(pf.access_log()) >= n, 10, f"{n} access log lines")
    return pf.access_log()


def test_no_route_is_unimplemented_for_http2_and_http1_clients(echo_servers, start_pilotfish):
    b = echo_servers("s1")
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/other/")])],
        [cluster("grpc", [b.address], protocol="h2")]), workers=1)
    err = call_error(pf.port(), "Call", b"x")
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err
    assert "no route" in err.details()
    head, body = curl_grpc(pf.port(), ECHO + "Call")
    assert head.startswith("http/1.1 200"), head
    assert "grpc-status: 12\r\n" in head and "content-type: application/grpc" in head, head
    assert body == b""
    # The access log and the metrics say what the client saw: HTTP 200, grpc-status 12.
    lines = access_entries(pf, 2)
    assert [(e["protocol"], e["status"], e["grpc_status"]) for e in lines] == [
        ("HTTP/2", 200, 12), ("HTTP/1.1", 200, 12)], lines
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_grpc_calls_total", grpc_status="12") == 2
    assert metric_sum(m, "pilotfish_downstream_protocol_requests_total", protocol="h2") == 1
    assert metric_sum(m, "pilotfish_downstream_protocol_requests_total", protocol="http1") == 1


def test_no_endpoint_and_connect_failure_are_unavailable(start_pilotfish):
    pf = start_pilotfish(make_config(
        [listener("main", [route("down", prefix="/")])],
        [cluster("down", [f"{LOCALHOST}:{closed_port()}"], protocol="h2",
                 retry={"on": [], "max_retries": 0})]), workers=1)
    err = call_error(pf.port(), "Call", b"x")
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    head, _ = curl_grpc(pf.port(), ECHO + "Call")
    assert "grpc-status: 14\r\n" in head, head


def test_response_timeout_is_deadline_exceeded(echo_servers, start_pilotfish):
    b = echo_servers("s1")
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [b.address], protocol="h2", response_timeout="300ms")]), workers=1)
    err = call_error(pf.port(), "Call", b"sleep:3000")
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert "timeout" in err.details()


def test_calls_pilotfish_fails_count_as_the_status_they_stand_for(echo_servers, start_pilotfish):
    b = echo_servers("s1")
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix=ECHO)])],
        [cluster("grpc", [b.address], protocol="h2", response_timeout="300ms")]), workers=1)
    assert call(pf.port(), "Call", b"x") == b"s1:x"
    # The server's own failure is an answer of the cluster's: 2xx, its status in grpc_status.
    assert call_error(pf.port(), "Call", b"fail:7").code() == grpc.StatusCode.PERMISSION_DENIED
    # pilotfish's own failures went out as HTTP 200 but count as the status they stand for.
    assert call_error(pf.port(), "Call", b"sleep:3000").code() == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/other.Service/Call")(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    lines = access_entries(pf, 4)
    assert [(e["status"], e["grpc_status"]) for e in lines] == [
        (200, 0), (200, 7), (200, 4), (200, 12)], lines
    m = pf.metrics()

    def count(name, **labels):
        return metric_sum(m, name, **labels)

    up = "pilotfish_upstream_requests_total"
    assert (count(up, cluster="grpc", code_class="2xx"), count(up, cluster="grpc", code_class="5xx"),
            count(up, cluster="grpc")) == (2, 1, 3), m
    down = "pilotfish_downstream_requests_total"
    assert [count(down, listener="main", code_class=c) for c in ("2xx", "4xx", "5xx")] == \
        [2, 1, 1], m
    assert count("pilotfish_request_duration_seconds_count", listener="main", code_class="5xx") == 1
    assert [count("pilotfish_grpc_calls_total", grpc_status=c) for c in ("0", "7", "4", "12")] == \
        [1, 1, 1, 1], m


def test_circuit_breaker_is_resource_exhausted(echo_servers, start_pilotfish):
    b = echo_servers("s1")
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [b.address], protocol="h2",
                 circuit_breakers={"max_requests": 1})]), workers=1)
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        slow = channel.unary_unary(ECHO + "Call").future(b"sleep:2000", timeout=10)
        wait_for(lambda: b.sleeping == 1, 10, "the first call at the server")
        err = call_error(pf.port(), "Call", b"x")
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert slow.result().startswith(b"s1:")


def test_a_rate_limited_call_is_resource_exhausted(echo_servers, start_pilotfish):
    b = echo_servers("s1")
    rt = route("grpc", prefix="/")
    rt["rate_limit"] = {"requests_per_second": 1, "burst": 1}
    pf = start_pilotfish(make_config([listener("main", [rt])],
                                     [cluster("grpc", [b.address], protocol="h2")]), workers=1)
    start = time.monotonic()
    assert call(pf.port(), "Call", b"x").startswith(b"s1:")  # the bucket's one token
    err = call_error(pf.port(), "Call", b"x")
    head, _ = curl_grpc(pf.port(), ECHO + "Call")
    if time.monotonic() - start < 0.9:  # else a token was refilled on a very slow machine
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert "rate limit" in err.details()
        assert "grpc-status: 8\r\n" in head, head


# ---- grpc-timeout ------------------------------------------------------------------------


def test_grpc_timeout_is_the_deadline_and_the_time_left_goes_upstream(echo_servers,
                                                                     start_pilotfish):
    b = echo_servers("s1")
    pf = start_pilotfish(make_config(
        [listener("main", [dict(route("grpc", prefix="/"), timeout="2s")])],
        [cluster("grpc", [b.address], protocol="h2")]), workers=1)

    def sent_timeout_ms(reply):
        return int(reply.split(b"timeout=")[1])

    # The client's 5 s deadline is capped by the route's 2 s timeout.
    assert 1000 < sent_timeout_ms(call(pf.port(), "Call", b"sleep:1", timeout=5)) <= 2000
    # A shorter client deadline goes upstream as what is left of it.
    assert 300 < sent_timeout_ms(call(pf.port(), "Call", b"sleep:1", timeout=0.8)) <= 800
    # A call that outlives its deadline ends DEADLINE_EXCEEDED at the deadline, even for a
    # client (curl) that would wait longer than its own grpc-timeout says.
    started = time.monotonic()
    frame = b"\x00" + struct.pack(">I", 10) + b"sleep:3000"
    r = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10", "-i", "-H",
         "content-type: application/grpc", "-H", "grpc-timeout: 400m", "-H", "te: trailers",
         "--data-binary", "@-", f"http://{LOCALHOST}:{pf.port()}{ECHO}Call"],
        input=frame, capture_output=True, timeout=20)
    took = time.monotonic() - started
    assert b"grpc-status: 4\r\n" in r.stdout, r.stdout
    assert took < 2.5, took


# ---- retries and outlier detection on gRPC statuses ----------------------------------------


def test_retry_on_unavailable_status_goes_to_another_server(echo_servers, start_pilotfish):
    good, bad = echo_servers("good"), echo_servers("bad")
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [bad.address, good.address], protocol="h2", lb_policy="round_robin",
                 retry={"on": ["unavailable"], "max_retries": 2})]), workers=1)
    # "fail:14" fails on whichever server takes it: a retry cannot help, and the status comes
    # back as the server said it after the retries.
    err = call_error(pf.port(), "Call", b"fail:14")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert metric_sum(pf.metrics(), "pilotfish_upstream_retries_total", cluster="grpc") == 2
    # A status the policy does not name is not retried.
    err = call_error(pf.port(), "Call", b"fail:13")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert metric_sum(pf.metrics(), "pilotfish_upstream_retries_total", cluster="grpc") == 2


@pytest.mark.parametrize("after_headers", [False, True])
def test_a_call_failing_before_any_message_is_retried_on_another_server(after_headers,
                                                                        echo_servers,
                                                                        start_pilotfish):
    # "bad" fails every call with UNAVAILABLE: trailers-only, or headers first and the status
    # in the trailers; either way no message reached the client, so the call is retried.
    good, bad = echo_servers("good"), echo_servers("bad")
    bad.fail_code, bad.fail_after_headers = 14, after_headers
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [bad.address, good.address], protocol="h2", lb_policy="round_robin",
                 retry={"on": ["unavailable"], "max_retries": 2})]), workers=1)
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        for i in range(6):
            assert channel.unary_unary(ECHO + "Call")(b"x", timeout=10) == b"good:x"
    assert bad.calls >= 3, bad.calls
    assert metric_sum(pf.metrics(), "pilotfish_upstream_retries_total", cluster="grpc") == \
        bad.calls
    # A call with messages goes through as before: its head waited for the first one only.
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        replies = channel.unary_stream(ECHO + "Stream")(b"2:0", timeout=10)
        assert len(list(replies)) == 2


def test_outlier_detection_ejects_a_server_whose_calls_end_unavailable(echo_servers,
                                                                       start_pilotfish):
    good, bad = echo_servers("good"), echo_servers("bad")
    bad.fail_code = 14
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [bad.address, good.address], protocol="h2", lb_policy="round_robin",
                 retry={"on": [], "max_retries": 0},
                 outlier_detection={"consecutive_gateway_failure": 3, "consecutive_5xx": 0,
                                    "max_ejection_percent": 50})]), workers=1)
    failed = 0
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        for i in range(20):
            try:
                channel.unary_unary(ECHO + "Call")(b"x", timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1
    # Three UNAVAILABLE calls in a row take "bad" out; the rest all go to "good".
    assert failed == 3, failed
    assert metric_sum(pf.metrics(), "pilotfish_outlier_ejections_total", cluster="grpc",
                      reason="consecutive_gateway_failure") == 1


@pytest.fixture
def killable_servers():
    """start(name) -> (Popen, address): grpc_backend.py in a process of its own."""
    procs = []

    def start(name):
        p = subprocess.Popen([sys.executable, FAKE, "--name", name], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        line = p.stdout.readline()  # "listening ADDR" once it serves; EOF if it died
        assert line.startswith("listening "), line
        return p, line.split()[1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        p.stdout.close()


def test_a_server_killed_mid_load_costs_no_call_with_retries_on_unavailable(killable_servers,
                                                                            start_pilotfish):
    servers = [killable_servers(name) for name in ("s1", "s2", "s3")]
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [addr for _, addr in servers], protocol="h2", lb_policy="round_robin",
                 retry={"on": ["unavailable"], "max_retries": 3})]), workers=1)
    total, done, failures, answered_by = 240, [0], [], collections.Counter()
    lock = threading.Lock()
    killed = threading.Event()

    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        rpc = channel.unary_unary(ECHO + "Call")

        def worker(n):
            for _ in range(n):
                try:
                    reply = rpc(b"sleep:10", timeout=20)
                    with lock:
                        answered_by[reply.split(b":")[0].decode()] += 1
                except grpc.RpcError as e:
                    with lock:
                        failures.append((e.code(), e.details()))
                with lock:
                    done[0] += 1
                    if done[0] == total // 3 and not killed.is_set():
                        servers[1][0].kill()  # SIGKILL: calls in flight on it are cut
                        killed.set()

        threads = [threading.Thread(target=worker, args=(total // 6,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert killed.is_set()
    assert failures == [], failures
    assert sum(answered_by.values()) == total
    # The killed server answered only before it died; the others took the rest.
    assert answered_by["s2"] <= total // 3 + 6, answered_by
    assert metric_sum(pf.metrics(), "pilotfish_upstream_retries_total", cluster="grpc") >= 1


# ---- streaming calls ---------------------------------------------------------------------


@pytest.fixture
def streaming_proxy(echo_servers, start_pilotfish):
    """Three servers behind one cluster; response_timeout 500ms, stream_idle_timeout 1s."""
    servers = [echo_servers(n) for n in ("s1", "s2", "s3")]
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")], stream_idle_timeout="1s")],
        [cluster("grpc", [b.address for b in servers], protocol="h2", lb_policy="round_robin",
                 response_timeout="500ms")]), workers=1)
    return pf


def test_server_streaming_outlives_the_response_timeout(streaming_proxy):
    # 6 messages 300 ms apart: 1.5 s, three times the response timeout; each gap is shorter
    # than the stream idle timeout.
    with grpc.insecure_channel(f"{LOCALHOST}:{streaming_proxy.port()}") as channel:
        replies = list(channel.unary_stream(ECHO + "Stream")(b"6:300", timeout=20))
    name = replies[0].split(b":")[0]
    assert replies == [name + b":" + str(i).encode() for i in range(6)]


def test_client_streaming_and_bidi_calls_pass_through(streaming_proxy):
    with grpc.insecure_channel(f"{LOCALHOST}:{streaming_proxy.port()}") as channel:
        def slow_messages():
            for i in range(4):
                if i:
                    time.sleep(0.3)
                yield f"m{i}".encode()

        reply = channel.stream_unary(ECHO + "Collect")(slow_messages(), timeout=20)
        assert reply.split(b":", 1)[1] == b"4:m0,m1,m2,m3", reply
        # Bidirectional: each message is answered before the next one is sent.
        outbox = []
        ready = threading.Event()

        def ping_pong():
            for i in range(4):
                outbox.append(f"p{i}".encode())
                yield outbox[-1]
                assert ready.wait(10)
                ready.clear()
                time.sleep(0.2)

        got = []
        for reply in channel.stream_stream(ECHO + "Chat")(ping_pong(), timeout=20):
            got.append(reply.split(b":", 1)[1])
            ready.set()
        assert got == [b"p0", b"p1", b"p2", b"p3"]


def test_calls_of_every_kind_on_one_channel_spread_over_three_servers(streaming_proxy):
    seen = collections.Counter()
    with grpc.insecure_channel(f"{LOCALHOST}:{streaming_proxy.port()}") as channel:
        for i in range(3):
            seen[channel.unary_unary(ECHO + "Call")(b"x", timeout=10).split(b":")[0]] += 1
            seen[next(iter(channel.unary_stream(ECHO + "Stream")(b"1:0", timeout=10))).split(
                b":")[0]] += 1
            seen[channel.stream_unary(ECHO + "Collect")(iter([b"a"]), timeout=10).split(
                b":")[0]] += 1
            seen[next(iter(channel.stream_stream(ECHO + "Chat")(iter([b"a"]), timeout=10))).split(
                b":")[0]] += 1
    assert seen == {b"s1": 4, b"s2": 4, b"s3": 4}, seen


def test_a_stream_silent_both_ways_ends_after_stream_idle_timeout(streaming_proxy):
    with grpc.insecure_channel(f"{LOCALHOST}:{streaming_proxy.port()}") as channel:
        # The server answers the first message, then both sides say nothing.
        hold = threading.Event()

        def one_then_silence():
            yield b"hello"
            hold.wait(10)

        started = time.monotonic()
        replies = channel.stream_stream(ECHO + "Chat")(one_then_silence(), timeout=20)
        assert next(replies).endswith(b":hello")
        with pytest.raises(grpc.RpcError) as err:
            next(replies)
        took = time.monotonic() - started
        hold.set()
    # The response had started: the stream is reset (INTERNAL_ERROR), upstream and down.
    assert err.value.code() == grpc.StatusCode.INTERNAL, err.value
    assert 0.9 < took < 5, took
    wait_for(lambda: any(e["path"].endswith("/Chat") for e in streaming_proxy.access_log()), 10,
             "the call's access log line")
    line = [e for e in streaming_proxy.access_log() if e["path"].endswith("/Chat")][-1]
    assert line["protocol"] == "HTTP/2" and line["status"] == 200, line


def test_a_call_silent_before_its_answer_ends_deadline_exceeded(streaming_proxy):
    # A client-streaming call whose client stops sending: no response timeout runs yet (it
    # starts when the request ends), the stream idle timeout ends it.
    hold = threading.Event()

    def one_then_silence():
        yield b"a"
        hold.wait(10)

    started = time.monotonic()
    with grpc.insecure_channel(f"{LOCALHOST}:{streaming_proxy.port()}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.stream_unary(ECHO + "Collect")(one_then_silence(), timeout=20)
        hold.set()
    took = time.monotonic() - started
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
    assert "stream idle timeout" in err.value.details()
    assert 0.9 < took < 5, took


# ---- health_check type grpc ----------------------------------------------------------------


def endpoint_state(pf, address):
    for c in pf.admin_json("/clusters")["clusters"]:
        for ep in c["endpoints"]:
            if ep["address"] == address:
                return ep
    raise HarnessError(f"{address} not in /clusters")


def test_grpc_health_check_takes_a_not_serving_server_out_and_brings_it_back(echo_servers,
                                                                            start_pilotfish):
    a, b = echo_servers("a"), echo_servers("b")
    b.set_serving(False)
    pf = start_pilotfish(make_config(
        [listener("main", [route("grpc", prefix="/")])],
        [cluster("grpc", [a.address, b.address], protocol="h2", lb_policy="round_robin",
                 panic_threshold=0,
                 health_check={"type": "grpc", "service": "pilotfish.test.Echo",
                               "interval": "200ms", "timeout": "1s", "unhealthy_threshold": 1,
                               "healthy_threshold": 1})]), workers=1)
    def checked(address, result):
        state = endpoint_state(pf, address)
        # "health" is a sentence: "healthy", "healthy: pending first check", "unhealthy: ..."
        return state["health_check"]["last_result"] == result and (
            state["health"] == "healthy" if result == "SERVING"
            else state["health"].startswith("unhealthy: check failed"))

    wait_for(lambda: checked(b.address, "NOT_SERVING") and checked(a.address, "SERVING"), 10,
             "b taken out by its check, a serving")
    # The call the check makes names the configured service.
    assert set(b.health_services) == {"pilotfish.test.Echo"}, b.health_services
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        names = {channel.unary_unary(ECHO + "Call")(b"x", timeout=10).split(b":")[0]
                 for _ in range(6)}
    assert names == {b"a"}, names
    b.set_serving(True)
    wait_for(lambda: checked(b.address, "SERVING"), 10, "b back")
    with grpc.insecure_channel(f"{LOCALHOST}:{pf.port()}") as channel:
        names = {channel.unary_unary(ECHO + "Call")(b"x", timeout=10).split(b":")[0]
                 for _ in range(6)}
    assert names == {b"a", b"b"}, names


def test_grpc_health_check_fails_on_a_server_without_the_health_service(start_pilotfish):
    # A gRPC server that does not know grpc.health.v1 answers UNIMPLEMENTED.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port(f"{LOCALHOST}:0")
    server.start()
    try:
        address = f"{LOCALHOST}:{port}"
        pf = start_pilotfish(make_config(
            [listener("main", [route("grpc", prefix="/")])],
            [cluster("grpc", [address], protocol="h2",
                     health_check={"type": "grpc", "interval": "200ms", "timeout": "1s",
                                   "unhealthy_threshold": 1})]), workers=1)
        wait_for(lambda: endpoint_state(pf, address)["health"].startswith("unhealthy"), 10,
                 "the server taken out")
        assert endpoint_state(pf, address)["health_check"]["last_result"] == "grpc-status 12"
        assert metric_sum(pf.metrics(), "pilotfish_health_checks_total", cluster="grpc",
                          result="failure") >= 1
    finally:
        server.stop(grace=None).wait(10)
