"""Request trailers (fields after the body) pass through pilotfish whatever the two sides
speak: an HTTP/2 client's trailing HEADERS and an HTTP/1.1 client's chunked trailers reach an
HTTP/2 upstream as trailing HEADERS and an HTTP/1.1 upstream in the last chunk. The upstreams
here (python3-h2 and a raw HTTP/1.1 server) answer with the trailers they received."""

import json
import socket

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route, wait_for
from servers import ThreadedServer, closed_at_teardown


class Recorder(ThreadedServer):
    """Serves each connection with answer(conn) (a subclass's) and records what came."""

    def __init__(self):
        self.seen = []  # (body, trailers) per request, as received
        super().__init__()

    def serve(self, conn):
        with conn:
            conn.settimeout(10)
            try:
                self.answer(conn)
            except (OSError, h2.exceptions.ProtocolError):
                pass

    def record(self, body, trailers):
        with self.lock:
            self.seen.append((body, trailers))
        return json.dumps({"body": body.decode(), "trailers": trailers}).encode()


class H2Upstream(Recorder):
    """HTTP/2 (prior knowledge): answers each stream once it ended, with what it received."""

    def answer(self, conn):
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        bodies, trailers = {}, {}
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers[ev.stream_id] = [[k.decode(), v.decode()] for k, v in ev.headers]
                elif isinstance(ev, h2.events.StreamEnded):
                    sid = ev.stream_id
                    out = self.record(bodies.pop(sid, b""), trailers.pop(sid, []))
                    h2c.send_headers(sid, [(":status", "200"), ("content-length", str(len(out)))])
                    h2c.send_data(sid, out, end_stream=True)
            conn.sendall(h2c.data_to_send())


def read_until(conn, data, marker):
    while marker not in data:
        more = conn.recv(65536)
        if not more:
            raise OSError("closed")
        data += more
    return data


def read_chunked(conn, data):
    """A chunked body from data + the connection: (body, trailer lines, rest)."""
    body = b""
    while True:
        data = read_until(conn, data, b"\r\n")
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        while len(data) < size + 2:
            more = conn.recv(65536)
            if not more:
                raise OSError("closed")
            data += more
        body += data[:size]
        data = data[size + 2:]
    trailers = []
    while True:
        data = read_until(conn, data, b"\r\n")
        line, _, data = data.partition(b"\r\n")
        if not line:
            return body, trailers, data
        name, _, value = line.decode().partition(":")
        trailers.append([name.strip().lower(), value.strip()])


class H1Upstream(Recorder):
    """HTTP/1.1 (raw): reads chunked requests with their trailers, answers what it received
    (with `fail`: 503 after reading each request whole)."""

    fail = False

    def answer(self, conn):
        data = b""
        while True:
            data = read_until(conn, data, b"\r\n\r\n")
            head, _, data = data.partition(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower(), head
            body, trailers, data = read_chunked(conn, data)
            out = self.record(body, trailers)
            if self.fail:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(out) + out)


@pytest.fixture
def upstreams():
    yield from closed_at_teardown(lambda kind: H2Upstream() if kind == "h2" else H1Upstream())


def proxy_to(start_pilotfish, server, protocol):
    return start_pilotfish(make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [server.address], protocol=protocol)]), workers=1)


def h2_post(port, body, trailers):
    """python3-h2 client: HEADERS, DATA, trailing HEADERS with END_STREAM. The answer's
    (:status, body); a reset stream fails."""
    sock = socket.create_connection((LOCALHOST, port), timeout=10)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "t.local"),
                              (":path", "/upload"), ("te", "trailers")])
        conn.send_data(1, body)
        conn.send_headers(1, trailers, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, out = None, b""
        while True:
            data = sock.recv(65536)
            assert data, "pilotfish closed the connection"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers)[b":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    out += ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    return status, out
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {ev.error_code}")
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()


def h2_post_with_trailers(port, body, trailers):
    """h2_post answered 200: the answer's body, parsed."""
    status, out = h2_post(port, body, trailers)
    assert status == b"200", (status, out)
    return json.loads(out)


def h1_post_with_trailers(port, body, trailer_lines):
    """A raw HTTP/1.1 chunked POST whose last chunk carries trailer_lines. The answer's body."""
    sock = socket.create_connection((LOCALHOST, port), timeout=10)
    try:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t.local\r\nTE: trailers\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % len(body) + body + b"\r\n0\r\n" + trailer_lines + b"\r\n")
        status, body = read_response(sock)
        assert status.startswith(b"HTTP/1.1 200"), status
        return json.loads(body)
    finally:
        sock.close()


TRAILERS = [("x-checksum", "sha256:abc"), ("x-count", "2")]


@pytest.mark.parametrize("protocol", ["h2", "http1"])
def test_an_h2_clients_request_trailers_reach_the_upstream(protocol, upstreams, start_pilotfish):
    server = upstreams(protocol)
    pf = proxy_to(start_pilotfish, server, protocol)
    got = h2_post_with_trailers(pf.port(), b"hello trailers", TRAILERS)
    assert got["body"] == "hello trailers", got
    assert got["trailers"] == [list(t) for t in TRAILERS], got


@pytest.mark.parametrize("protocol", ["h2", "http1"])
def test_an_http1_chunked_clients_request_trailers_reach_the_upstream(protocol, upstreams,
                                                                    start_pilotfish):
    server = upstreams(protocol)
    pf = proxy_to(start_pilotfish, server, protocol)
    got = h1_post_with_trailers(pf.port(), b"hello chunks",
                                b"X-Checksum: sha256:abc\r\nX-Count: 2\r\n")
    assert got["body"] == "hello chunks", got
    assert got["trailers"] == [list(t) for t in TRAILERS], got
    # The trailers went in the last chunk only: the next request on a new connection has
    # none, and the head of this one did not carry them.
    got = h1_post_with_trailers(pf.port(), b"again", b"")
    assert got == {"body": "again", "trailers": []}, got


def test_connection_fields_in_request_trailers_are_dropped(upstreams, start_pilotfish):
    server = upstreams("http1")
    pf = proxy_to(start_pilotfish, server, "http1")
    got = h1_post_with_trailers(pf.port(), b"x",
                                b"Keep-Alive: timeout=5\r\nX-Checksum: sha256:abc\r\n")
    assert got["trailers"] == [["x-checksum", "sha256:abc"]], got
    wait_for(lambda: len(server.seen) == 1, 5, "one request")


def test_a_retried_request_carries_its_trailers_again(upstreams, start_pilotfish):
    bad, good = upstreams("http1"), upstreams("http1")
    bad.fail = True
    pf = start_pilotfish(make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [bad.address, good.address], lb_policy="round_robin",
                 retry={"on": ["5xx"], "max_retries": 1, "retry_non_idempotent": True})]),
        workers=1)
    want = (b"again", [list(t) for t in TRAILERS])
    for _ in range(2):  # round robin: at least one of the two starts on the failing endpoint
        got = h2_post_with_trailers(pf.port(), b"again", TRAILERS)
        assert got == {"body": "again", "trailers": want[1]}, got
    # Every attempt, first or retried, had the trailers.
    assert len(bad.seen) >= 1 and all(seen == want for seen in bad.seen), bad.seen
    assert good.seen == [want, want], good.seen


# ---- limits: the trailer section has a budget of its own ----------------------------------

LIMIT = 2048  # the listener's max_header_bytes in these tests


class HeadCountingUpstream(H1Upstream):
    """H1Upstream that also counts the request heads it received, whole request or not."""

    heads = 0

    def answer(self, conn):
        data = read_until(conn, b"", b"\r\n\r\n")
        head, _, data = data.partition(b"\r\n\r\n")
        with self.lock:
            self.heads += 1
        body, trailers, data = read_chunked(conn, data)
        out = self.record(body, trailers)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(out) + out)


def limited_proxy(start_pilotfish, server):
    return start_pilotfish(make_config(
        [listener("main", [route("c", prefix="/")], max_header_bytes=LIMIT,
                  max_target_bytes=1024)],
        [cluster("c", [server.address])]), workers=1)


def read_response(sock):
    """(status line, body) of one content-length response."""
    data = read_until(sock, b"", b"\r\n\r\n")
    head, _, data = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(data) < length:
        more = sock.recv(65536)
        assert more, "closed before the body ended"
        data += more
    return head.split(b"\r\n")[0], data[:length]


def rejected(pf):
    return metric_sum(pf.metrics(), "pilotfish_downstream_rejected_requests_total",
                      listener="main")


def test_a_head_near_the_limit_leaves_its_chunked_trailers_their_own_room(upstreams,
                                                                         start_pilotfish):
    server = upstreams("http1")
    pf = limited_proxy(start_pilotfish, server)
    filler = b"X-Filler: " + b"f" * (LIMIT - 200) + b"\r\n"  # the head is near the limit
    trailer = b"X-Checksum: " + b"c" * (LIMIT - 200) + b"\r\n"  # and so are the trailers
    got = h1_post_with_trailers_head(pf.port(), filler, b"body", trailer)
    assert got["body"] == "body"
    assert got["trailers"] == [["x-checksum", "c" * (LIMIT - 200)]]
    assert rejected(pf) == 0


def h1_post_with_trailers_head(port, extra_head, body, trailer_lines):
    sock = socket.create_connection((LOCALHOST, port), timeout=10)
    try:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t.local\r\n" + extra_head +
                     b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body +
                     b"\r\n0\r\n" + trailer_lines + b"\r\n")
        status, out = read_response(sock)
        assert status.startswith(b"HTTP/1.1 200"), (status, out)
        return json.loads(out)
    finally:
        sock.close()


def test_chunked_trailers_over_their_own_limit_cut_the_request_with_400_not_431(
        upstreams, start_pilotfish):
    server = HeadCountingUpstream()
    try:
        pf = limited_proxy(start_pilotfish, server)
        sock = socket.create_connection((LOCALHOST, pf.port()), timeout=10)
        with sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t.local\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n")
            # the head and the first chunk went upstream before the trailers come
            wait_for(lambda: server.heads == 1, 10, "the upstream to get the head")
            sock.sendall(b"0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 500)
                                            for i in range(8)) + b"\r\n")
            status, body = read_response(sock)
            assert status.startswith(b"HTTP/1.1 400"), (status, body)
            assert b"trailers" in body, body
            assert sock.recv(65536) == b""  # and the connection is closed
        assert rejected(pf) == 1
        wait_for(lambda: "request trailers over the limits: the request is cut" in
                 pf.stderr_text(), 5, "the log line")
        # the endpoint never saw the request end: its connection was closed mid-body
        assert server.seen == []
    finally:
        server.close()


def test_h2_request_trailers_over_their_limit_get_400_instead_of_going_on_without_them(
        upstreams, start_pilotfish):
    server = upstreams("http1")
    pf = limited_proxy(start_pilotfish, server)
    status, out = h2_post(pf.port(), b"body", [(f"x-t{i}", "t" * 500) for i in range(8)])
    assert status == b"400", (status, out)
    assert b"trailers" in out
    assert rejected(pf) == 1
    assert server.seen == []  # never sent on without some of its trailers
