"""Hostile HTTP/2 clients (raw frames from hyperframe/hpack): CONTINUATION floods, HPACK
bombs, SETTINGS and PING floods, more streams than advertised, malformed streams. Each is
answered as RFC 9113 says (RST_STREAM on the stream, or GOAWAY ENHANCE_YOUR_CALM /
PROTOCOL_ERROR for the connection), counted in pilotfish_h2_protocol_errors_total{reason},
and a client on another connection, opened before the attack, is still served after it."""

import socket
import time

import hpack
import hyperframe.frame as hf
import pytest

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route, wait_for

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM, PROTOCOL_ERROR, REFUSED_STREAM = 0xB, 0x1, 0x7


@pytest.fixture
def pf(start_backend, start_pilotfish):
    a = start_backend("a")
    cfg = make_config([listener("main", [route("c", prefix="/")], max_header_bytes=8192)],
                      [cluster("c", [a.address])])
    return start_pilotfish(cfg, workers=1)


def errors(pf, reason):
    return metric_sum(pf.metrics(), "pilotfish_h2_protocol_errors_total", listener="main",
                      reason=reason)


class Raw:
    """A raw HTTP/2 client connection: sends hyperframe frames, reads frames back."""

    def __init__(self, port, ack_settings=True):
        self.sock = socket.create_connection((LOCALHOST, port), timeout=10)
        self.enc = hpack.Encoder()
        self.buf = b""
        self.frames = []
        self.closed = False
        self.ack_settings = ack_settings
        self.sock.sendall(PREFACE + hf.SettingsFrame(0).serialize())

    def send(self, *frames):
        try:
            self.sock.sendall(b"".join(f.serialize() for f in frames))
        except OSError:
            self.closed = True  # pilotfish hung up already: what it sent is read below

    def headers(self, sid, path="/", extra=(), end_stream=True, end_headers=True):
        f = hf.HeadersFrame(sid)
        f.data = self.enc.encode([(":method", "GET"), (":scheme", "http"),
                                  (":authority", "t.local"), (":path", path), *extra])
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def read(self, until, timeout=15):
        """Frames until until(frames) holds, the peer closes, or timeout."""
        deadline = time.monotonic() + timeout
        while not until(self.frames) and not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            self.buf += data
            while len(self.buf) >= 9:
                frame, length = hf.Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buf[9:9 + length]))
                self.buf = self.buf[9 + length:]
                self.frames.append(frame)
                if (self.ack_settings and isinstance(frame, hf.SettingsFrame)
                        and "ACK" not in frame.flags):
                    self.send(hf.SettingsFrame(0, flags=["ACK"]))
        return self.frames

    def goaway(self, timeout=15):
        """The GOAWAY frame pilotfish sent, waiting for it; None if none came."""
        self.read(lambda fs: any(isinstance(f, hf.GoAwayFrame) for f in fs), timeout)
        return next((f for f in self.frames if isinstance(f, hf.GoAwayFrame)), None)

    def wait_closed(self, timeout=15):
        self.read(lambda fs: False, timeout)
        return self.closed

    def close(self):
        self.sock.close()


def served(raw, sid):
    """Whether stream sid got a response that ended."""
    return any(isinstance(f, (hf.DataFrame, hf.HeadersFrame)) and f.stream_id == sid
               and "END_STREAM" in f.flags for f in raw.frames)


def bystander_is_served(bystander, sid):
    bystander.send(bystander.headers(sid, "/still-here"))
    bystander.read(lambda fs: served(bystander, sid))
    assert served(bystander, sid), bystander.frames[-5:]


def test_a_continuation_flood_ends_the_connection_with_enhance_your_calm(pf):
    bystander = Raw(pf.port())
    bystander_is_served(bystander, 1)
    raw = Raw(pf.port())
    frames = [raw.headers(1, end_headers=False)]
    # CVE-2024-27316: a header block that never ends, one CONTINUATION frame after another.
    for i in range(200):
        c = hf.ContinuationFrame(1)
        c.data = raw.enc.encode([(f"x-flood-{i}", "v" * 100)])
        frames.append(c)
    raw.send(*frames)
    g = raw.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM, raw.frames[-5:]
    assert raw.wait_closed()
    raw.close()
    assert errors(pf, "continuation_flood") == 1
    bystander_is_served(bystander, 3)
    bystander.close()


def test_an_hpack_bomb_is_bounded_by_max_header_bytes_and_answered_431(pf):
    bystander = Raw(pf.port())
    raw = Raw(pf.port())
    rss_before = pf.rss_bytes()
    # One 4000-byte field goes into the dynamic table; then each further copy of it costs one
    # byte on the wire (an index): 12000 copies decode to 48 MB from 12 KB.
    f = raw.headers(1, "/bomb", extra=[("x-bomb", "b" * 4000)], end_headers=True)
    index = bytes([0x80 | 62])  # the newest dynamic table entry
    f.data += index * 12000
    raw.send(f, raw.headers(3, "/after"))
    raw.read(lambda fs: served(raw, 1) and served(raw, 3))
    dec = hpack.Decoder()  # in frame order: the responses share one dynamic table
    status = {fr.stream_id: dict(dec.decode(fr.data)).get(":status")
              for fr in raw.frames if isinstance(fr, hf.HeadersFrame)}
    assert status.get(1) == "431", raw.frames[-5:]
    assert served(raw, 3), raw.frames[-5:]
    assert errors(pf, "header_list") == 1
    assert pf.rss_bytes() - rss_before < 16 * 1024 * 1024
    raw.close()
    bystander_is_served(bystander, 1)
    bystander.close()


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_settings_and_ping_floods_end_the_connection_with_enhance_your_calm(pf, kind):
    bystander = Raw(pf.port())
    raw = Raw(pf.port())
    if kind == "settings":
        flood = [hf.SettingsFrame(0, settings={hf.SettingsFrame.ENABLE_PUSH: 0})
                 for _ in range(500)]
    else:
        flood = [hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")) for i in range(500)]
    raw.send(*flood)
    g = raw.goaway()
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM, raw.frames[-5:]
    assert raw.wait_closed()
    raw.close()
    # Fewer ACKs than frames: pilotfish stopped answering at its limit.
    acks = [f for f in raw.frames if isinstance(f, (hf.SettingsFrame, hf.PingFrame))
            and "ACK" in f.flags]
    assert len(acks) <= 110, len(acks)
    assert errors(pf, f"{kind}_flood") == 1
    bystander_is_served(bystander, 1)
    bystander.close()


def test_a_few_pings_are_answered(pf):
    raw = Raw(pf.port())
    raw.send(*[hf.PingFrame(0, opaque_data=i.to_bytes(8, "big")) for i in range(20)])
    raw.read(lambda fs: sum(isinstance(f, hf.PingFrame) for f in fs) == 20)
    assert sum(isinstance(f, hf.PingFrame) and "ACK" in f.flags for f in raw.frames) == 20
    raw.send(raw.headers(1))
    raw.read(lambda fs: served(raw, 1))
    assert served(raw, 1)
    assert not any(isinstance(f, hf.GoAwayFrame) for f in raw.frames)
    raw.close()
    assert errors(pf, "ping_flood") == 0


def test_streams_past_the_advertised_limit_are_refused_and_counted(pf):
    bystander = Raw(pf.port())
    # Before it acknowledged pilotfish's SETTINGS, a client opening 130 slow streams gets
    # REFUSED_STREAM past 100; after, nghttp2 treats it as a connection error (RFC 9113
    # 5.1.2 allows either a stream error or more).
    for ack in (False, True):
        raw = Raw(pf.port(), ack_settings=ack)
        if ack:
            raw.read(lambda fs: any(isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags
                                    for f in fs))
        ids = list(range(1, 2 * 130, 2))
        raw.send(*[raw.headers(sid, "/delay/300") for sid in ids])

        def finished(frames):
            done = {f.stream_id for f in frames if isinstance(f, hf.RstStreamFrame)}
            done |= {f.stream_id for f in frames if "END_STREAM" in f.flags}
            return set(ids) <= done or any(isinstance(f, hf.GoAwayFrame) for f in frames)

        raw.read(finished, timeout=20)
        raw.close()
        refused = {f.stream_id for f in raw.frames
                   if isinstance(f, hf.RstStreamFrame) and f.error_code == REFUSED_STREAM}
        answered = {f.stream_id for f in raw.frames if isinstance(f, hf.HeadersFrame)}
        goaways = [f for f in raw.frames if isinstance(f, hf.GoAwayFrame)]
        assert len(answered) <= 100, len(answered)
        if ack:
            assert refused or (goaways and goaways[0].error_code == PROTOCOL_ERROR), \
                raw.frames[-5:]
        else:
            assert len(refused) >= 30, raw.frames[-5:]
    assert errors(pf, "refused_stream") + errors(pf, "protocol") >= 31
    bystander_is_served(bystander, 1)
    bystander.close()


def test_malformed_streams_are_reset_and_counted(pf):
    raw = Raw(pf.port())
    frames = [
        raw.headers(1, extra=[("X-Upper", "1")]),                       # upper-case name
        raw.headers(3, extra=[(":bogus", "1")]),                        # unknown pseudo-header
        raw.headers(5, extra=[("content-length", "10")], end_stream=False),
    ]
    d = hf.DataFrame(5, data=b"abc")
    d.flags.add("END_STREAM")  # 3 bytes where 10 were announced
    raw.send(*frames, d, raw.headers(7, "/fine"))
    raw.read(lambda fs: served(raw, 7) and {1, 3, 5} <= {
        f.stream_id for f in fs if isinstance(f, hf.RstStreamFrame)})
    resets = {f.stream_id: f.error_code for f in raw.frames if isinstance(f, hf.RstStreamFrame)}
    assert resets == {1: PROTOCOL_ERROR, 3: PROTOCOL_ERROR, 5: PROTOCOL_ERROR}, resets
    assert served(raw, 7)
    raw.close()
    assert errors(pf, "malformed_stream") == 3


def test_a_connection_error_gets_goaway_protocol_error_and_is_counted(pf):
    bystander = Raw(pf.port())
    raw = Raw(pf.port())
    # A DATA frame on stream 0 is a connection error of type PROTOCOL_ERROR (RFC 9113 6.1).
    raw.send(_data_on_stream_zero())
    g = raw.goaway()
    assert g is not None and g.error_code == PROTOCOL_ERROR, raw.frames[-5:]
    assert raw.wait_closed()
    raw.close()
    wait_for(lambda: errors(pf, "protocol") == 1, 5, "the protocol error to be counted")
    bystander_is_served(bystander, 1)
    bystander.close()


class _RawFrame:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return self.data


def _data_on_stream_zero():
    # hyperframe refuses to build a DATA frame for stream 0; the bytes are simple.
    return _RawFrame(b"\x00\x00\x01" + b"\x00" + b"\x00" + b"\x00\x00\x00\x00" + b"x")
