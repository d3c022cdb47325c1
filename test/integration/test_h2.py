"""HTTP/2 with prior knowledge (h2c) on a plain listener: real clients (curl, nghttp, h2load,
python3-h2) talk HTTP/2 to pilotfish, which forwards each stream as an HTTP/1 request; HTTP/1
keeps working on the same port. Hostile clients get RST_STREAM or GOAWAY and nobody else
notices."""

import collections
import json
import re
import shutil
import signal
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route, wait_for
from servers import ThreadedServer, closed_at_teardown

pytestmark = pytest.mark.skipif(
    not (shutil.which("nghttp") and shutil.which("h2load")), reason="nghttp2-client not installed"
)


@pytest.fixture
def h2proxy(start_backend, start_pilotfish):
    """pilotfish with one listener routing everything to cluster c of three backends."""
    a, b, c = start_backend("a"), start_backend("b"), start_backend("c")
    cfg = make_config(
        [listener("main", [route("c", prefix="/")], buffer_bytes=65536)],
        [cluster("c", [a.address, b.address, c.address], lb_policy="round_robin")],
    )
    return start_pilotfish(cfg, workers=1)


def url(pf, path="/"):
    return f"http://{LOCALHOST}:{pf.port()}{path}"


def curl(*args, timeout=20):
    return subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "15", *args],
        capture_output=True,
        timeout=timeout,
    )


class H2Client:
    """A python3-h2 client on a raw socket, for what stock clients will not send."""

    def __init__(self, port, validate=True):
        self.sock = socket.create_connection((LOCALHOST, port), timeout=10)
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path="/", method="GET", extra=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", "t.local"),
                   (":path", path), *extra]
        self.conn.send_headers(sid, headers, end_stream=end)
        return sid

    def events(self, until, timeout=10):
        """Reads events until until(all_events_so_far) is true, the peer closes, or timeout."""
        seen = []
        deadline = time.monotonic() + timeout
        while not until(seen) and not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            try:
                new = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True  # frames after a GOAWAY: h2 stops listening there
                break
            for ev in new:
                seen.append(ev)
                if isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            self.flush()
        return seen

    def close(self):
        self.sock.close()


def ended(ids):
    def check(events):
        done = {e.stream_id for e in events if isinstance(e, (h2.events.StreamEnded,
                                                              h2.events.StreamReset))}
        return set(ids) <= done
    return check


def goaway(events):
    return any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def statuses(events):
    out = {}
    for e in events:
        if isinstance(e, h2.events.ResponseReceived):
            out[e.stream_id] = dict(e.headers)[":status"]
    return out


def test_curl_get_over_h2c_prior_knowledge(h2proxy):
    r = curl("-i", url(h2proxy, "/hello"))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("HTTP/2 200"), out
    assert re.search(r"^x-backend: [abc]\r?$", out, re.M), out
    wait_for(lambda: any(e.get("path") == "/hello" and e.get("status") == 200
                         for e in h2proxy.access_log()), 10, "the access log line")


def test_curl_post_body_reaches_the_upstream_and_comes_back(h2proxy):
    body = bytes(range(256)) * 1024  # 256 KiB: several windows' worth, read from stdin
    r = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "15", "--data-binary", "@-",
         url(h2proxy, "/echo")],
        input=body, capture_output=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == body


def test_http1_still_works_on_the_same_port(h2proxy):
    resp = h2proxy.get("/")
    assert resp.status == 200
    assert resp.header("X-Backend") in ("a", "b", "c")


def test_nghttp_runs_concurrent_streams_on_one_connection(h2proxy):
    paths = [url(h2proxy, f"/n{i}") for i in range(20)]
    r = subprocess.run(["nghttp", "-n", "-s", *paths], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # -s prints one line per completed stream with its response time
    assert r.stdout.decode().count("/n") >= 20, r.stdout


def test_h2load_two_thousand_requests_without_a_failure(h2proxy):
    r = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "10", url(h2proxy, "/")],
        capture_output=True, timeout=120,
    )
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    assert m, out
    total, done, ok, failed, errored = map(int, m.groups())
    assert (total, done, ok, failed, errored) == (2000, 2000, 2000, 0, 0), out
    assert "status codes: 2000 2xx" in out, out


def test_streams_of_one_connection_are_balanced_over_the_endpoints(h2proxy):
    client = H2Client(h2proxy.port())
    ids = [client.request(f"/s{i}") for i in range(30)]
    client.flush()
    events = client.events(ended(ids))
    client.close()
    seen = collections.Counter()
    for e in events:
        if isinstance(e, h2.events.ResponseReceived):
            seen[dict(e.headers).get("x-backend")] += 1
    assert seen == {"a": 10, "b": 10, "c": 10}, seen


def test_cookies_are_joined_and_authority_becomes_host(h2proxy):
    client = H2Client(h2proxy.port())
    sid = client.request("/headers", extra=[("cookie", "a=1"), ("cookie", "b=2"),
                                            ("x-custom", "yes")])
    client.flush()
    events = client.events(ended([sid]))
    client.close()
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert statuses(events) == {sid: "200"}, events
    seen = json.loads(body)["headers"]
    assert ["cookie", "a=1; b=2"] in seen, seen
    assert [h for h in seen if h[0].lower() == "host"] == [["Host", "t.local"]], seen
    assert ["x-custom", "yes"] in seen, seen


def test_a_route_miss_is_answered_on_its_stream_only(start_backend, start_pilotfish):
    a = start_backend("a")
    cfg = make_config([listener("main", [route("c", host="only.local")])],
                      [cluster("c", [a.address])])
    pf = start_pilotfish(cfg, workers=1)
    r = curl("-i", url(pf, "/x"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("HTTP/2 404"), r.stdout


def test_bad_pseudo_headers_and_uppercase_names_reset_the_stream_only(h2proxy):
    client = H2Client(h2proxy.port(), validate=False)
    bad = []
    # A request without :path, one with an unknown pseudo-header, one with an uppercase name.
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                   (":authority", "t.local")], end_stream=True)
    bad.append(sid)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                   (":authority", "t.local"), (":bogus", "1")], end_stream=True)
    bad.append(sid)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                   (":authority", "t.local"), ("X-Upper", "1")], end_stream=True)
    bad.append(sid)
    good = client.request("/fine")
    client.flush()
    events = client.events(ended(bad + [good]))
    client.close()
    resets = {e.stream_id: e.error_code for e in events if isinstance(e, h2.events.StreamReset)}
    assert set(resets) == set(bad), events
    assert all(code == h2.errors.ErrorCodes.PROTOCOL_ERROR for code in resets.values()), resets
    assert statuses(events) == {good: "200"}, events


def test_content_length_mismatch_resets_the_stream(h2proxy):
    client = H2Client(h2proxy.port(), validate=False)
    sid = client.request("/echo", method="POST", extra=[("content-length", "10")], end=False)
    client.conn.send_data(sid, b"abc", end_stream=True)
    client.flush()
    events = client.events(ended([sid]))
    client.close()
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR, events
    assert h2proxy.get("/").status == 200


def raw_h2(port, frames):
    """A socket that sent the preface, an empty SETTINGS and `frames` (hyperframe objects)."""
    import hyperframe.frame as hf

    sock = socket.create_connection((LOCALHOST, port), timeout=10)
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize()
    sock.sendall(data + b"".join(f.serialize() for f in frames))
    return sock


def test_more_streams_than_advertised_are_refused(h2proxy):
    import hpack
    import hyperframe.frame as hf

    enc = hpack.Encoder()
    frames = []
    ids = list(range(1, 2 * 130, 2))
    for sid in ids:
        f = hf.HeadersFrame(sid)
        f.data = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "t.local"),
                             (":path", "/delay/500")])
        f.flags.add("END_HEADERS")
        f.flags.add("END_STREAM")
        frames.append(f)
    sock = raw_h2(h2proxy.port(), frames)

    def finished(got):
        closed = {f.stream_id for f in got if isinstance(f, hf.RstStreamFrame)}
        closed |= {f.stream_id for f in got if isinstance(f, hf.DataFrame)
                   and "END_STREAM" in f.flags}
        return set(ids) <= closed or any(isinstance(f, hf.GoAwayFrame) for f in got)

    got = read_frames(sock, finished, timeout=20)
    sock.close()
    refused = {f.stream_id for f in got if isinstance(f, hf.RstStreamFrame) and f.error_code == 7}
    answered = {f.stream_id for f in got if isinstance(f, hf.HeadersFrame)}
    assert len(answered) <= 100, len(answered)
    assert len(refused) >= 30 or any(isinstance(f, hf.GoAwayFrame) for f in got), got[-5:]
    assert h2proxy.get("/").status == 200


def test_rapid_reset_ends_the_connection_with_enhance_your_calm(h2proxy):
    client = H2Client(h2proxy.port())
    for _ in range(400):
        sid = client.request("/delay/1000")
        client.conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
    try:
        client.flush()
    except OSError:
        pass  # pilotfish may already have closed: what it sent is read below
    events = client.events(goaway, timeout=10)
    client.close()
    codes = [e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert codes == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM], events[-5:]
    assert metric_sum(h2proxy.metrics(), "pilotfish_h2_protocol_errors_total",
                      reason="rapid_reset") == 1
    # Everyone else is still served, and the cancelled exchanges left nothing in flight.
    assert h2proxy.get("/").status == 200

    def settled():
        m = h2proxy.metrics()
        return all(s[2] == 0 for s in m if s[0] == "pilotfish_downstream_connections_active")
    wait_for(settled, 10, "the reset connection to be gone")


def read_frames(sock, until, timeout):
    """Raw frames from sock (hyperframe) until until(frames) or EOF or timeout."""
    import hyperframe.frame as hf

    buf, frames = b"", []
    deadline = time.monotonic() + timeout
    while not until(frames) and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            frame, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            frames.append(frame)
            buf = buf[9 + length :]
    return frames


def test_sigterm_sends_goaway_twice_and_finishes_the_stream_in_flight(h2proxy):
    import hyperframe.frame as hf

    client = H2Client(h2proxy.port())
    sid = client.request("/delay/1500")
    client.flush()

    # The stream is in flight (an upstream connection carries it) before the drain starts.
    wait_for(
        lambda: sum(s[2] for s in h2proxy.metrics()
                    if s[0] == "pilotfish_upstream_connections_active") >= 1,
        10, "the request to be in flight")
    h2proxy.signal(signal.SIGTERM)

    def done(frames):
        return any(isinstance(f, hf.DataFrame) and f.stream_id == sid and "END_STREAM" in f.flags
                   for f in frames) and sum(isinstance(f, hf.GoAwayFrame) for f in frames) >= 2

    frames = read_frames(client.sock, done, timeout=15)
    client.close()
    goaways = [f for f in frames if isinstance(f, hf.GoAwayFrame)]
    assert len(goaways) == 2, frames
    assert goaways[0].last_stream_id == 2**31 - 1, goaways[0]
    assert goaways[1].last_stream_id == sid, goaways[1]
    assert all(g.error_code == 0 for g in goaways)
    heads = [f for f in frames if isinstance(f, hf.HeadersFrame) and f.stream_id == sid]
    assert heads, frames
    assert done(frames), frames
    assert h2proxy.wait_exit(15) == 0


def test_a_stream_the_client_stops_reading_is_cut_after_the_body_timeout(start_backend,
                                                                        start_pilotfish):
    import h2.settings

    a = start_backend("a")
    cfg = make_config([listener("main", [route("c", prefix="/")], body_timeout="1s")],
                      [cluster("c", [a.address])])
    pf = start_pilotfish(cfg, workers=1)
    client = H2Client(pf.port())
    # A zero window on every stream: pilotfish can send no response body at all.
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    sid = client.request("/bytes/10000000")
    client.flush()
    events = client.events(ended([sid]), timeout=20)
    resets = [e for e in events if isinstance(e, h2.events.StreamReset) and e.stream_id == sid]
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.CANCEL, events
    assert statuses(events) == {sid: "200"}, events
    assert metric_sum(pf.metrics(), "pilotfish_h2_protocol_errors_total",
                      reason="stalled_stream") == 1
    # The upstream connection the stream held is let go, and the h2 connection still works.
    wait_for(lambda: sum(s[2] for s in pf.metrics()
                         if s[0] == "pilotfish_upstream_connections_active") == 0,
             10, "the stalled stream's upstream connection to close")
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
    other = client.request("/fine")
    client.flush()
    events = client.events(ended([other]), timeout=10)
    client.close()
    assert statuses(events) == {other: "200"}, events


def test_a_header_list_past_max_header_bytes_is_answered_431_on_its_stream(start_backend,
                                                                           start_pilotfish):
    a = start_backend("a")
    cfg = make_config([listener("main", [route("c", prefix="/")], max_header_bytes=8192,
                                max_target_bytes=1024)],
                      [cluster("c", [a.address])])
    pf = start_pilotfish(cfg, workers=1)
    client = H2Client(pf.port())
    # HPACK makes these 40 fields of 1000 bytes cheap on the wire (one indexed entry
    # repeated); decoded they are five times the limit.
    big = client.request("/big", extra=[("x-big", "v" * 1000)] * 40)
    fine = client.request("/fine")
    client.flush()
    events = client.events(ended([big, fine]))
    client.close()
    assert statuses(events) == {big: "431", fine: "200"}, events


def test_head_and_no_content_responses_over_h2(h2proxy):
    r = curl("-I", url(h2proxy, "/bytes/1000"))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("HTTP/2 200"), out
    assert re.search(r"^content-length: 1000\r?$", out, re.M), out
    r = curl("-i", url(h2proxy, "/status/204"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("HTTP/2 204"), r.stdout


def test_200mb_download_over_h2_streams_intact_with_bounded_memory(h2proxy):
    from harness import PatternChecker, RssSampler, is_sanitizer_build

    mib = 1 << 20
    total = 200 * mib
    baseline = h2proxy.rss_bytes()
    checker = PatternChecker()
    with RssSampler(h2proxy) as sampler:
        proc = subprocess.Popen(
            ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "170",
             url(h2proxy, f"/bytes/{total}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        while True:
            piece = proc.stdout.read(1 << 16)
            if not piece:
                break
            checker.feed(piece)
        assert proc.wait(timeout=180) == 0, proc.stderr.read()
    assert checker.offset == total
    assert sampler.samples > 0
    grown = sampler.peak - baseline
    assert grown < 48 * mib, f"RSS grew by {grown / mib:.1f} MiB"
    if not is_sanitizer_build():
        assert sampler.peak < 64 * mib, f"RSS peak {sampler.peak / mib:.1f} MiB"


class GoawayServer(ThreadedServer):
    """An HTTP/2 server (python3-h2) answering "NAME" to every request, except that its
    first connection answers `limit` requests and then says GOAWAY with the last of them,
    leaving every later stream on it unprocessed."""

    def __init__(self, name, limit):
        self.name, self.limit = name, limit
        self.answered = 0
        self.requests = []  # each request's header fields, as received
        self.served_connections = 0
        super().__init__()

    def serve(self, sock):
        with self.lock:
            self.served_connections += 1
            first = self.served_connections == 1
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        sock.sendall(h2c.data_to_send())
        served, gone = 0, False
        sock.settimeout(30)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                if gone:
                    continue  # after GOAWAY: read and drop until pilotfish closes
                for ev in h2c.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if isinstance(ev, h2.events.RequestReceived) and not gone:
                        with self.lock:
                            self.requests.append([(k.decode(), v.decode()) for k, v in ev.headers])
                        h2c.send_headers(ev.stream_id, [(":status", "200"),
                                                        ("x-backend", self.name)])
                        h2c.send_data(ev.stream_id, self.name.encode(), end_stream=True)
                        served += 1
                        with self.lock:
                            self.answered += 1
                        if first and served == self.limit:
                            h2c.close_connection(last_stream_id=ev.stream_id)
                            gone = True
                sock.sendall(h2c.data_to_send())
                # Streams after the GOAWAY stay unanswered (never processed); the
                # connection stays open until pilotfish closes it, as a graceful server's.
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()


@pytest.fixture
def goaway_servers():
    yield from closed_at_teardown(GoawayServer)


def test_streams_left_unprocessed_under_goaway_are_replayed_without_a_failure(start_pilotfish,
                                                                             tmp_path):
    body = tmp_path / "body"
    body.write_bytes(b"x" * 100)
    # g1's first connection says GOAWAY after 15 streams; g2 never does, so a replayed
    # stream is never refused a second time (the free replay is once per request).
    servers = [GoawayServer("g1", 15), GoawayServer("g2", None)]
    try:
        cfg = make_config(
            [listener("main", [route("c", prefix="/")])],
            [cluster("c", [f"{LOCALHOST}:{s.port}" for s in servers], protocol="h2",
                     lb_policy="round_robin")],
        )
        pf = start_pilotfish(cfg, workers=1)
        # POST, not idempotent: a stream the server never processed is replayed anyway.
        r = subprocess.run(
            ["h2load", "-n", "400", "-c", "2", "-m", "10", "-d", str(body), url(pf, "/")],
            capture_output=True, timeout=120,
        )
        out = r.stdout.decode() + r.stderr.decode()
        assert "requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed" in out, out
        assert "status codes: 400 2xx" in out, out
        # g1's first connection said GOAWAY, and g1 was used again after.
        assert servers[0].connections >= 2, servers[0].connections
        assert sum(s.answered for s in servers) == 400
        m = pf.metrics()
        retries = sum(s[2] for s in m if s[0] == "pilotfish_upstream_retries_total")
        assert retries == 0, retries  # replays are not retries
    finally:
        for s in servers:
            s.close()
    for s in servers:  # nothing listens there any more
        with pytest.raises(OSError):
            socket.create_connection((LOCALHOST, s.port), timeout=2).close()


def test_an_h2_upstream_gets_the_route_edits_our_traceparent_and_no_forged_client_cert(
        goaway_servers, start_pilotfish):
    server = goaway_servers("e1", limit=10**9)
    rt = route("h2", prefix="/")
    rt["request_headers"] = {"set": {"X-Who": "%CLIENT_IP%"}, "add": {"X-Extra": "one"},
                             "remove": ["X-Remove-Me"]}
    pf = start_pilotfish(make_config([listener("main", [rt])],
                                     [cluster("h2", [f"{LOCALHOST}:{server.port}"],
                                              protocol="h2")]), workers=1)
    r = curl("-o", "/dev/null", "-w", "%{http_code}",
             "-H", "X-Forwarded-Client-Cert: By=spiffe://forged", "-H", "traceparent: bad",
             "-H", "X-Remove-Me: 1", "-H", "X-Who: client", url(pf, "/edits"))
    assert r.stdout == b"200", r
    (fields,) = server.requests
    names = [k for k, _ in fields]
    got = dict(fields)
    assert "x-remove-me" not in names and "x-forwarded-client-cert" not in names, fields
    assert names.count("x-who") == 1 and got["x-who"] == LOCALHOST, fields
    assert got["x-extra"] == "one", fields
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", got["traceparent"]), fields
