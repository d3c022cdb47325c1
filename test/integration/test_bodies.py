"""Message bodies through the proxy: Content-Length, chunked both ways, close-delimited."""

import random
import threading

import pytest

from harness import (
    HarnessError,
    PatternChecker,
    chunked,
    fnv1a64,
    fnv_hex,
    make_request,
    pattern_bytes,
)


def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def test_content_length_upload_to_sink_arrives_intact(proxy):
    body = rand_bytes(300_000, 1)
    resp = proxy.pf.request("POST", "/sink", body=body)
    assert resp.status == 200, resp
    assert resp.json() == {"bytes": len(body), "fnv1a64": fnv_hex(fnv1a64(body))}


def test_chunked_upload_to_sink_arrives_intact(proxy):
    pieces = [rand_bytes(n, n) for n in (1, 10, 4096, 65536, 100_000, 3)]
    body = b"".join(pieces)
    with proxy.pf.raw() as c:
        c.send(make_request("POST", "/sink", [("Transfer-Encoding", "chunked")]) + chunked(pieces))
        resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.json() == {"bytes": len(body), "fnv1a64": fnv_hex(fnv1a64(body))}


def test_chunked_upload_with_extensions_and_trailers_arrives_intact(proxy):
    body = b"hello, chunked world"
    wire = b"5;ext=1\r\nhello\r\n" + b"f\r\n, chunked world\r\n" + b"0\r\nX-Trailer: t\r\n\r\n"
    with proxy.pf.raw() as c:
        c.send(make_request("POST", "/sink", [("Transfer-Encoding", "chunked")]) + wire)
        resp = c.read_response()
        assert resp.status == 200, resp
        assert resp.json() == {"bytes": len(body), "fnv1a64": fnv_hex(fnv1a64(body))}
        # The connection is still in sync afterwards.
        assert c.request("GET", "/bytes/4").body == b"0123"


def test_chunked_upload_to_echo_comes_back_identical(proxy):
    pieces = [rand_bytes(n, 100 + n) for n in (7, 1000, 50_000, 1)]
    with proxy.pf.raw() as c:
        c.send(make_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + chunked(pieces))
        resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.body == b"".join(pieces)


def test_content_length_upload_to_echo_comes_back_identical(proxy):
    body = rand_bytes(200_000, 2)
    resp = proxy.pf.request("POST", "/echo", body=body)
    assert resp.status == 200
    assert resp.header("Content-Length") == str(len(body))
    assert resp.body == body


def test_empty_body_post_is_forwarded(proxy):
    resp = proxy.pf.request("POST", "/sink", body=b"")
    assert resp.status == 200
    assert resp.json()["bytes"] == 0


def test_echo_streams_full_duplex_for_large_body(proxy):
    # The client writes 8 MiB while reading the echo; a proxy that buffers the whole request
    # before answering, or stops reading while it cannot write, would deadlock here.
    total = 8 << 20
    block = rand_bytes(1 << 16, 3)
    errors = []
    with proxy.pf.raw(timeout=60) as c:
        c.send(make_request("POST", "/echo", [("Content-Length", str(total))]))

        def writer():
            try:
                for _ in range(total // len(block)):
                    c.send(block)
            except OSError as exc:
                errors.append(exc)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        resp = c.read_head(timeout=60, method="POST")
        assert resp.status == 200
        got = 0
        for piece in c.body_chunks(resp, timeout=120):
            assert _match(block, got, piece), f"echo differs near offset {got}"
            got += len(piece)
        t.join(timeout=60)
    assert not errors, errors
    assert got == total


def _match(block, offset, piece):
    pos = 0
    while pos < len(piece):
        off = (offset + pos) % len(block)
        n = min(len(block) - off, len(piece) - pos)
        if piece[pos : pos + n] != block[off : off + n]:
            return False
        pos += n
    return True


def test_chunked_download_arrives_intact(proxy):
    with proxy.pf.raw() as c:
        resp = c.request("GET", "/bytes/300000?chunked=1")
    assert resp.status == 200
    assert resp.body == pattern_bytes(300_000)


def test_content_length_download_keeps_content_length(proxy):
    with proxy.pf.raw() as c:
        resp = c.request("GET", "/bytes/123456")
    assert resp.header("Content-Length") == "123456"
    assert resp.body == pattern_bytes(123456)


def test_close_delimited_upstream_body_reaches_client_intact(proxy):
    with proxy.pf.raw() as c:
        resp = c.request("GET", "/bytes/250000?eof=1")
        assert resp.status == 200
        assert resp.body == pattern_bytes(250_000)


def test_close_delimited_upstream_body_is_reframed_so_client_connection_stays_open(proxy):
    with proxy.pf.raw() as c:
        resp = c.request("GET", "/bytes/5000?eof=1")
        assert resp.body == pattern_bytes(5000)
        assert not getattr(resp, "close_delimited", False), "proxy close-delimited a 1.1 response"
        assert resp.header("Transfer-Encoding", "").lower().endswith("chunked") or resp.header(
            "Content-Length"
        ) == "5000", resp
        assert c.request("GET", "/bytes/3").body == b"012"


def test_large_close_delimited_download_checked_incrementally(proxy):
    checker = PatternChecker()
    with proxy.pf.raw() as c:
        c.send(make_request("GET", f"/bytes/{20 << 20}?eof=1"))
        resp = c.read_head()
        assert resp.status == 200
        for piece in c.body_chunks(resp, timeout=120):
            checker.feed(piece)
    assert checker.offset == 20 << 20


def test_head_response_has_no_body_and_connection_stays_in_sync(proxy):
    with proxy.pf.raw() as c:
        c.send(make_request("HEAD", "/bytes/100"))
        head = c.read_response(method="HEAD")
        assert head.status == 200
        assert head.body == b""
        resp = c.request("GET", "/bytes/6")
        assert resp.status == 200 and resp.body == b"012345"


def test_204_and_304_have_no_body_and_connection_stays_in_sync(proxy):
    with proxy.pf.raw() as c:
        for code in (204, 304):
            resp = c.request("GET", f"/status/{code}")
            assert resp.status == code and resp.body == b""
        assert c.request("GET", "/bytes/2").body == b"01"


def test_truncated_upstream_body_is_not_passed_off_as_complete(proxy):
    # /partial promises 100 bytes, sends 10 and closes. The client must see either a 502 or
    # a response cut short by a closed connection, never a complete-looking response.
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "/partial"))
        try:
            resp = c.read_head()
        except HarnessError as exc:
            pytest.fail(f"no response at all ({exc}); expected a 502, or the truncated head then close")
        if resp.status == 200:
            data = c.read_all_until_close(timeout=20)
            assert len(data) < 100, "proxy padded or completed a truncated body"
        else:
            assert resp.status == 502, resp
    assert proxy.pf.alive()
    assert proxy.pf.get("/").status == 200


def test_expect_100_continue_gets_interim_response_before_body(proxy):
    # RFC 9110 10.1.1 and 15.2: the 100 (from the upstream or the proxy) reaches the client,
    # which sends the body only then.
    body = rand_bytes(1000, 4)
    with proxy.pf.raw() as c:
        c.send(make_request("POST", "/sink", [("Content-Length", "1000"), ("Expect", "100-continue")]))
        c.read_until(b"\r\n\r\n", timeout=10)
        assert bytes(c.buf).startswith(b"HTTP/1.1 100"), bytes(c.buf[:200])
        c.send(body)
        resp = c.read_response(method="POST")
    assert resp.status == 200, resp
    assert resp.json() == {"bytes": 1000, "fnv1a64": fnv_hex(fnv1a64(body))}
