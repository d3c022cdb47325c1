"""Bad requests, limits, timeouts and failing upstreams: the right status, the connection
closed when the stream cannot be trusted any more, and the proxy still serving afterwards."""

import socket
import time

import pytest

from harness import (
    HarnessError,
    closed_port,
    cluster,
    listener,
    make_config,
    make_request,
    route,
)


@pytest.fixture
def errproxy(start_backend, start_pilotfish):
    web = start_backend("web")
    api = start_backend("api")
    main = listener(
        "main",
        [
            route("empty", host="empty.local"),
            route("dead", host="dead.local"),
            route("slow", host="slow.local"),
            route("api", host="api.local"),
            route("web", prefix="/"),
        ],
        header_timeout="10s",
        max_header_bytes=65536,
        max_target_bytes=8192,
    )
    small = listener(
        "small",
        [route("web", prefix="/")],
        header_timeout="1s",
        max_header_bytes=4096,
        max_target_bytes=2048,
    )
    cfg = make_config(
        [main, small],
        [
            cluster("web", [web.address]),
            cluster("api", [api.address], response_timeout="15s"),
            cluster("empty", []),
            cluster("dead", [f"127.0.0.1:{closed_port()}"], connect_timeout="250ms"),
            cluster("slow", [api.address], response_timeout="500ms"),
        ],
    )
    return start_pilotfish(cfg)


def assert_still_serving(pf):
    assert pf.alive(), f"pilotfish exited:\n{pf.stderr_text()[-3000:]}"
    for listener_name in ("main", "small"):
        resp = pf.get("/bytes/5", listener=listener_name)
        assert resp.status == 200 and resp.body == b"01234", resp


def send_bad(pf, data, listener="main"):
    """Send data on a fresh connection; return (response, closed_afterwards)."""
    with pf.raw(listener=listener) as c:
        try:
            c.send(data)
        except OSError:
            pass  # the proxy may close while we still write; the answer is what counts
        resp = c.read_response()
        closed = c.wait_closed(10)
    return resp, closed


H = b"Host: test.local\r\n"

FRAMING_ERRORS = {
    "request_line_without_target": b"GET\r\n\r\n",
    "request_line_bad_version": b"GET / HTTZ/1.1\r\n" + H + b"\r\n",
    "request_line_extra_field": b"GET / HTTP/1.1 extra\r\n" + H + b"\r\n",
    "content_length_with_transfer_encoding": b"POST /sink HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two_different_content_lengths": b"POST /sink HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "non_numeric_content_length": b"POST /sink HTTP/1.1\r\n" + H + b"Content-Length: 5x\r\n\r\nhello",
    "bad_chunk_size": b"POST /sink HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "transfer_encoding_not_ending_in_chunked": b"POST /sink HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "obs_fold_header_line": b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n  continued\r\n\r\n",
    "bare_lf_line_endings": b"GET / HTTP/1.1\nHost: test.local\n\n",
    "space_in_header_name": b"GET / HTTP/1.1\r\n" + H + b"X Bad: 1\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\n" + H + b"X-Bad : 1\r\n\r\n",
    # RFC 9112 3.2: a server MUST answer 400 to HTTP/1.1 without Host or with several.
    "http11_without_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_host_headers": b"GET / HTTP/1.1\r\n" + H + b"Host: other.local\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(FRAMING_ERRORS))
def test_malformed_request_gets_400_and_connection_closed(errproxy, case):
    resp, closed = send_bad(errproxy, FRAMING_ERRORS[case])
    assert resp.header("X-Backend") is None, f"bad request reached a backend: {resp!r}"
    assert resp.status == 400, resp
    assert closed, "connection left open after a request that cannot be framed"
    assert_still_serving(errproxy)


def test_header_section_over_max_header_bytes_gets_431(errproxy):
    big = b"".join(b"X-Filler-%03d: %s\r\n" % (i, b"v" * 100) for i in range(60))  # ~7 KiB
    resp, closed = send_bad(errproxy, b"GET / HTTP/1.1\r\n" + H + big + b"\r\n", listener="small")
    assert resp.status == 431, resp
    assert closed
    assert_still_serving(errproxy)


def test_header_section_under_max_header_bytes_is_served(errproxy):
    some = b"".join(b"X-Filler-%03d: %s\r\n" % (i, b"v" * 100) for i in range(20))  # ~2.4 KiB
    resp, _ = send_bad(
        errproxy, b"GET /bytes/1 HTTP/1.1\r\n" + H + some + b"Connection: close\r\n\r\n", "small"
    )
    assert resp.status == 200 and resp.body == b"0"


def test_target_longer_than_max_target_bytes_gets_414(errproxy):
    target = "/" + "a" * 10000
    resp, closed = send_bad(errproxy, make_request("GET", target))
    assert resp.status == 414, resp
    assert closed
    assert_still_serving(errproxy)


def test_target_just_under_max_target_bytes_is_served(errproxy):
    target = "/" + "a" * 8000
    resp, _ = send_bad(errproxy, make_request("GET", target, [("Connection", "close")]))
    assert resp.status == 200, resp


def test_cluster_with_zero_endpoints_gets_503(errproxy):
    resp = errproxy.get("/", host="empty.local")
    assert resp.status == 503, resp
    assert_still_serving(errproxy)


def test_endpoint_with_nothing_listening_gets_502_or_503(errproxy):
    resp = errproxy.get("/", host="dead.local")
    assert resp.status in (502, 503), resp
    assert_still_serving(errproxy)


def test_upstream_reset_without_response_gets_502(errproxy):
    resp = errproxy.get("/reset", host="api.local")
    assert resp.status == 502, resp
    assert_still_serving(errproxy)


def test_upstream_that_never_answers_gets_504_after_response_timeout(errproxy):
    resp = errproxy.get("/hang", host="slow.local")
    assert resp.status == 504, resp
    assert_still_serving(errproxy)


def test_error_answer_keeps_client_connection_usable(errproxy):
    # An upstream failure is not the client's framing problem: the same connection goes on.
    with errproxy.raw() as c:
        first = c.request("GET", "/reset", host="api.local")
        assert first.status == 502, first
        if not c.peer_closed_now():
            second = c.request("GET", "/bytes/3")
            assert second.status == 200 and second.body == b"012"
    assert_still_serving(errproxy)


def test_slowloris_header_trickle_gets_408_and_close(errproxy):
    # header_timeout is 1s on the "small" listener; trickling a header line every 200 ms
    # must not keep the connection alive past it.
    with errproxy.raw(listener="small") as c:
        c.send(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        got_data = False
        while time.monotonic() - start < 20:
            try:
                c.send(b"X-Trickle: %d\r\n" % int((time.monotonic() - start) * 1000))
            except OSError:
                break  # closed by the proxy
            c.sock.settimeout(0.2)
            try:
                data = c.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            if not data:
                c.eof = True
                break
            c.buf += data
            got_data = True
            break
        elapsed = time.monotonic() - start
        assert got_data, f"no response before the connection ended ({elapsed:.1f}s)"
        resp = c.read_response()
        assert resp.status == 408, resp
        assert c.wait_closed(10)
    assert elapsed < 15, f"header timeout of 1s took {elapsed:.1f}s to fire"
    assert_still_serving(errproxy)


def test_after_many_bad_requests_proxy_still_serves(errproxy):
    for data in list(FRAMING_ERRORS.values())[:6] * 3:
        try:
            send_bad(errproxy, data)
        except (HarnessError, OSError):
            pass  # this test is about survival, the statuses are checked elsewhere
    assert_still_serving(errproxy)
