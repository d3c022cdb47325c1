"""Interim (1xx) responses from an upstream: up to 16 per request pass to the client, more is
an upstream protocol error (502, the upstream connection closed, counted), so an upstream
answering with endless 100 Continue or 102 Processing cannot hold a request or make
pilotfish buffer without bound.

The upstream is a raw socket server in this file: pf-backend never sends interim responses
on its own.
"""

import threading

import pytest

from harness import cluster, listener, make_config, metric_sum, route, wait_for
from servers import ThreadedServer, closed_at_teardown


class InterimUpstream(ThreadedServer):
    """To each request answers `count` interim responses with `status` (None: without end)
    and then, when count is finite, 200 "ok". Records whether the peer closed the connection
    while the stream of interims went on."""

    def __init__(self, count, status=100):
        self.count = count
        self.status = status
        self.sent_interims = 0
        self.peer_closed = threading.Event()
        super().__init__()

    def serve(self, conn):
        with conn:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(4096)
                if not piece:
                    return
                data += piece
            reason = b"Continue" if self.status == 100 else b"Processing"
            interim = b"HTTP/1.1 %d %s\r\n\r\n" % (self.status, reason)
            try:
                # bounded even "without end": far more than the limit, far less than forever
                limit = self.count if self.count is not None else 200000
                for _ in range(limit):
                    conn.sendall(interim)
                    self.sent_interims += 1
                if self.count is not None:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                conn.recv(1)  # until pilotfish closes (or, after the 200, reuses) it
            except OSError:
                pass
            self.peer_closed.set()


@pytest.fixture
def upstreams():
    yield from closed_at_teardown(InterimUpstream)


def start(start_pilotfish, upstream):
    cfg = make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [upstream.address], response_timeout="10s")],
    )
    return start_pilotfish(cfg, workers=1)


def test_sixteen_interim_responses_then_the_answer_reach_the_client(upstreams, start_pilotfish):
    up = upstreams(16)
    pf = start(start_pilotfish, up)
    with pf.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
        marker = b"HTTP/1.1 200 OK"
        c.read_until(marker, timeout=20)
        head = bytes(c.buf[: bytes(c.buf).index(marker)])
        assert head.count(b"HTTP/1.1 100 Continue\r\n") == 16, head[:300]
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_upstream_protocol_errors_total", cluster="c") == 0


@pytest.mark.parametrize("status", [100, 102])
def test_endless_interim_responses_are_a_502_counted_and_the_upstream_closed(
    upstreams, start_pilotfish, status
):
    up = upstreams(None, status)
    pf = start(start_pilotfish, up)
    with pf.raw() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
        marker = b"HTTP/1.1 502 "
        c.read_until(marker, timeout=20)
        head = bytes(c.buf[: bytes(c.buf).index(marker)])
        assert head.count(b"HTTP/1.1 %d " % status) == 16, head[:300]
    # pilotfish closed the upstream connection: the flood ends long before its 200,000
    wait_for(up.peer_closed.is_set, 20, "the upstream connection closed by pilotfish")
    assert up.sent_interims < 200000
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_upstream_protocol_errors_total", cluster="c") == 1
    assert metric_sum(samples, "pilotfish_upstream_requests_total", cluster="c",
                      code_class="5xx") == 1
    assert pf.alive()
