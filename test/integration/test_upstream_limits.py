"""A cluster's limits on what its endpoints send: response head size and line count
(clusters[].max_header_bytes, max_headers) and the read-ahead per upstream connection
(clusters[].buffer_bytes), against a small server on 127.0.0.1 that answers with a head as
large as the request's path asks."""


import pytest

from harness import (
    LOCALHOST,
    cluster,
    http_request,
    listener,
    make_config,
    metric_sum,
    route,
)
from servers import ThreadedServer


class HeadServer(ThreadedServer):
    """Answers GET /LINES/BYTES with LINES extra header lines of BYTES bytes each, and a
    one-line body; keeps connections alive."""

    backlog = 64

    def serve(self, conn):
        conn.settimeout(5)
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    _, lines, size = head.split(b" ")[1].split(b"/")
                    extra = b"".join(b"X-Fill-%d: %s\r\n" % (i, b"v" * int(size))
                                     for i in range(int(lines)))
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\n" + extra +
                                     b"Content-Length: 3\r\n\r\nok\n")
                    except OSError:
                        return


@pytest.fixture
def head_server():
    s = HeadServer()
    yield s
    s.close()


def test_response_head_limits_are_the_clusters_and_over_them_is_a_502(head_server,
                                                                       start_pilotfish):
    pf = start_pilotfish(make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [f"{LOCALHOST}:{head_server.port}"], max_header_bytes=2048,
                 max_headers=10)],
        access_log=False), workers=1)

    def protocol_errors():
        return metric_sum(pf.metrics(), "pilotfish_upstream_protocol_errors_total", cluster="c")

    assert http_request(pf.port(), "GET", "/5/200").status == 200  # ~1.1 KiB, 7 lines
    assert protocol_errors() == 0
    assert http_request(pf.port(), "GET", "/2/2100").status == 502  # over 2048 bytes
    assert protocol_errors() == 1
    assert http_request(pf.port(), "GET", "/12/10").status == 502  # over 10 lines
    assert protocol_errors() == 2
    assert http_request(pf.port(), "GET", "/8/10").status == 200  # within both again


def test_default_response_head_limits_take_a_large_head(head_server, start_pilotfish):
    # 90 lines of 500 bytes (~46 KiB): within the defaults (256 lines, 64 KiB).
    pf = start_pilotfish(make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [f"{LOCALHOST}:{head_server.port}"])], access_log=False), workers=1)
    resp = http_request(pf.port(), "GET", "/90/500")
    assert resp.status == 200 and resp.header("X-Fill-89") == "v" * 500


def test_small_upstream_buffer_still_streams_a_large_response_whole(start_backend,
                                                                    start_pilotfish):
    b = start_backend("b")
    pf = start_pilotfish(make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [b.address], buffer_bytes=4096)], access_log=False), workers=1)
    resp = http_request(pf.port(), "GET", "/bytes/1000000")
    assert resp.status == 200 and len(resp.body) == 1000000
