"""WebSockets over HTTP/2 (RFC 8441): an h2 client opens a stream with an extended CONNECT
(:method CONNECT, :protocol websocket) once it saw SETTINGS_ENABLE_CONNECT_PROTOCOL; pilotfish
routes it like an HTTP/1.1 GET with Upgrade: websocket, does the RFC 6455 handshake with the
HTTP/1.1 backend itself, answers :status 200 on the upstream's 101 and carries the stream's
DATA as the tunnel's bytes both ways. Client: python3-h2 with a minimal RFC 6455 framer;
backends: test/fakes/ws_backend.py (python3-websockets) and raw sockets."""

import base64
import hashlib
import os
import re
import signal
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hyperframe.frame
import pytest

from harness import LOCALHOST, cluster, listener, make_config, wait_for
from servers import ThreadedServer, tunnel_log_lines, tunnels
from test_websocket import RssPeak, WsBackend

MiB = 1 << 20
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture
def ws_backend(tmp_path):
    b = WsBackend(str(tmp_path))
    yield b
    b.stop()


def config(backend_address, route_kw=None, **kw):
    listener_kw = kw.pop("listener_kw", {})
    route = {"match": {"prefix": "/"}, "cluster": "ws"}
    route.update(route_kw or {})
    return make_config(
        [listener("main", [route], **listener_kw)], [cluster("ws", [backend_address])], **kw
    )


def ws_frame(opcode, payload):
    """A masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + masked(payload, mask)


def masked(payload, mask):
    m = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(len(payload), "big")


class H2WebSocket:
    """One h2c connection to pilotfish and one extended-CONNECT stream on it."""

    def __init__(self, port, path="/chat", extra=(), wait_setting=True):
        self.sock = socket.create_connection((LOCALHOST, port), timeout=20)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.conn.increment_flow_control_window(16 * MiB)
        self.flush()
        self.buf = b""  # tunnel bytes received, not yet parsed into messages
        self.status = None
        self.headers = {}
        self.ended = False  # END_STREAM from pilotfish
        self.reset = None  # RST_STREAM error code from pilotfish
        self.body = b""
        self.settings_seen = False
        self.goaway = False  # python3-h2 takes no frame after a GOAWAY: raw frames from then on
        self.inbuf = b""
        if wait_setting:
            self.pump(lambda: self.settings_seen, 10)
        self.stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            self.stream,
            [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
             (":path", path), (":authority", "test.local"), ("sec-websocket-version", "13"),
             *extra],
        )
        self.flush()
        self.pump(lambda: self.status is not None or self.reset is not None, 20)

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, until, timeout):
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting on the h2 stream")
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("pilotfish closed the connection")
            self.inbuf += data
            while len(self.inbuf) >= 9:
                size = int.from_bytes(self.inbuf[:3], "big") + 9
                if len(self.inbuf) < size:
                    break
                frame, self.inbuf = self.inbuf[:size], self.inbuf[size:]
                if self.goaway:
                    self.raw_frame(frame)
                    continue
                for ev in self.conn.receive_data(frame):
                    self.on_event(ev)
                self.flush()

    def raw_frame(self, data):
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        if frame.stream_id != self.stream:
            return
        if isinstance(frame, hyperframe.frame.DataFrame):
            self.buf += frame.data
            self.ended = self.ended or "END_STREAM" in frame.flags
        elif isinstance(frame, hyperframe.frame.RstStreamFrame):
            self.reset = frame.error_code

    def on_event(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
            self.connect_protocol = self.conn.remote_settings.enable_connect_protocol
        elif isinstance(ev, h2.events.ResponseReceived):
            self.headers = {k.decode(): v.decode() for k, v in ev.headers}
            self.status = int(self.headers[":status"])
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if self.status == 200:
                self.buf += ev.data
            else:
                self.body += ev.data
        elif isinstance(ev, h2.events.StreamEnded):
            self.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = True

    def send_bytes(self, data, end=False):
        if self.goaway:  # small writes only: within the window the stream has left
            frame = hyperframe.frame.DataFrame(self.stream, data)
            if end:
                frame.flags.add("END_STREAM")
            self.sock.sendall(frame.serialize())
            return
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(self.stream),
                         self.conn.max_outbound_frame_size)
            if window == 0:
                self.pump(lambda: self.conn.local_flow_control_window(self.stream) > 0, 20)
                continue
            self.conn.send_data(self.stream, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(self.stream)
            self.flush()

    def send(self, message):
        binary = isinstance(message, bytes)
        self.send_bytes(ws_frame(2 if binary else 1, message if binary else message.encode()))

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        opcode, n, at = b[0] & 0x0F, b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < at + n:
            return None
        self.buf = b[at + n:]
        payload = b[at:at + n]
        return payload.decode() if opcode == 1 else payload

    def recv(self, timeout=20):
        got = []

        def have():
            m = self._parse()
            if m is not None:
                got.append(m)
            return bool(got)

        self.pump(have, timeout)
        return got[0]

    def close(self):
        self.sock.close()


def test_the_listener_advertises_extended_connect_and_frames_pass_both_ways(ws_backend,
                                                                            start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address))
    ws = H2WebSocket(pf.port(), "/chat?room=1")
    try:
        assert ws.connect_protocol == 1
        assert ws.status == 200 and ws.reset is None
        assert "sec-websocket-accept" not in ws.headers and "upgrade" not in ws.headers
        assert ws.recv() == "hello /chat?room=1"  # the backend speaks first
        ws.send("ping text")
        assert ws.recv() == "ping text"
        blob = bytes(range(256)) * 300
        ws.send(blob)
        assert ws.recv() == blob
        assert tunnels(pf) == (1, 1)
        ws.send_bytes(b"", end=True)  # END_STREAM: the backend sees the half-close
        ws.pump(lambda: ws.ended or ws.reset is not None, 20)
    finally:
        ws.close()
    wait_for(lambda: tunnels(pf) == (0, 1), 10, "the tunnel to close")
    wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
    (line,) = tunnel_log_lines(pf)
    assert "cluster=ws" in line and f"upstream={ws_backend.address}" in line
    from_client = int(re.search(r"bytes_from_client=(\d+)", line).group(1))
    from_upstream = int(re.search(r"bytes_from_upstream=(\d+)", line).group(1))
    assert from_client > len(blob) and from_upstream > len(blob)

    def opened():
        return [e for e in pf.access_log() if e.get("path", "").startswith("/chat")]

    wait_for(opened, 10, "the access log entry")
    (entry,) = opened()
    assert entry["bytes_in"] == from_client and entry["method"] == "GET"


class RawWsBackend(ThreadedServer):
    """Answers a handshake with 101 (Sec-WebSocket-Accept right, or wrong when `bad_accept`),
    then echoes raw bytes until the client's EOF, writes ";bye" and closes."""

    def __init__(self, bad_accept=False):
        self.bad_accept = bad_accept
        self.head = None
        super().__init__()

    def serve(self, conn):
        conn.settimeout(20)
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                piece = conn.recv(4096)
                if not piece:
                    return
                head += piece
            head, data = head.split(b"\r\n\r\n", 1)
            self.head = head.decode()
            key = re.search(r"(?im)^sec-websocket-key:\s*(\S+)", self.head).group(1).encode()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            if self.bad_accept:
                accept = base64.b64encode(hashlib.sha1(b"x" + key + GUID).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: websocket\r\nSec-WebSocket-Accept: " + accept +
                         b"\r\nSec-WebSocket-Protocol: chat\r\n\r\nwelcome;")
            while True:
                try:
                    piece = conn.recv(4096)
                except OSError:
                    return
                if not piece:
                    break
                data += piece
            try:
                conn.sendall(b"echo:" + data + b";bye")
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # pilotfish refused our 101 and closed


def test_the_upstream_gets_an_http1_handshake_and_half_closes_pass_both_ways(start_pilotfish):
    b = RawWsBackend()
    try:
        pf = start_pilotfish(config(f"{LOCALHOST}:{b.port}"))
        ws = H2WebSocket(pf.port(), "/raw?x=1",
                         extra=[("sec-websocket-protocol", "chat"),
                                ("sec-websocket-key", "Y2xpZW50cyBvd24ga2V5IQ==")])
        try:
            assert ws.status == 200 and ws.headers.get("sec-websocket-protocol") == "chat"
            ws.send_bytes(b"early;")
            ws.send_bytes(b"late", end=True)  # the backend's read ends: it answers and closes
            ws.pump(lambda: ws.ended or ws.reset is not None, 20)
            assert ws.reset is None
            assert ws.buf == b"welcome;echo:early;late;bye"
        finally:
            ws.close()
        lines = b.head.split("\r\n")
        assert lines[0] == "GET /raw?x=1 HTTP/1.1"
        fields = [l.split(":", 1) for l in lines[1:]]
        names = [n.lower() for n, _ in fields]
        values = {n.lower(): v.strip() for n, v in fields}
        assert values["host"] == "test.local"
        assert values["connection"].lower() == "upgrade" and values["upgrade"] == "websocket"
        assert values["sec-websocket-version"] == "13"
        assert values["sec-websocket-protocol"] == "chat"
        # pilotfish's own key (16 random bytes), never the one the client slipped in
        assert names.count("sec-websocket-key") == 1
        key = values["sec-websocket-key"]
        assert len(base64.b64decode(key)) == 16 and key != "Y2xpZW50cyBvd24ga2V5IQ=="
        wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
        assert 'reason="closed"' in tunnel_log_lines(pf)[0]
    finally:
        b.close()


def test_a_101_that_does_not_answer_our_key_is_a_bad_gateway(start_pilotfish):
    b = RawWsBackend(bad_accept=True)
    try:
        pf = start_pilotfish(config(f"{LOCALHOST}:{b.port}"), extra_args=("--log-level", "debug"))
        ws = H2WebSocket(pf.port(), "/bad")
        try:
            assert ws.status == 502
        finally:
            ws.close()
        wait_for(lambda: "does not answer the key" in pf.stderr_text(), 10, "the debug line")
        assert tunnels(pf) == (0, 0)
    finally:
        b.close()


def test_a_non_101_answer_reaches_the_client_as_a_response(ws_backend, start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address))
    # the backend only speaks version 13: it refuses this one with a 400 saying so
    ws = H2WebSocket(pf.port(), "/old", extra=[("sec-websocket-version", "8")])
    try:
        assert ws.status == 400
        ws.pump(lambda: ws.ended or ws.reset is not None, 20)
        assert b"Sec-WebSocket-Version" in ws.body
        assert ws.reset in (None, 0)  # NO_ERROR: the client need not finish its side
    finally:
        ws.close()
    assert tunnels(pf) == (0, 0)


def test_an_upgrade_the_route_does_not_allow_is_refused_with_501_and_a_reason(ws_backend,
                                                                              start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address, route_kw={"upgrades": ["h2c"]}))
    ws = H2WebSocket(pf.port(), "/no")
    try:
        assert ws.status == 501
        ws.pump(lambda: ws.ended, 20)
        assert b"not in the route's upgrades" in ws.body
    finally:
        ws.close()
    wait_for(lambda: "upgrade refused" in pf.stderr_text(), 10, "the log line")
    line = [l for l in pf.stderr_text().splitlines() if "upgrade refused" in l][0]
    assert 'protocol="websocket"' in line and "not in the route's upgrades" in line
    assert tunnels(pf) == (0, 0)


def test_an_idle_tunnel_stream_is_cancelled_after_its_timeout(ws_backend, start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address, route_kw={"tunnel_idle_timeout": "400ms"}))
    ws = H2WebSocket(pf.port(), "/idle")
    try:
        assert ws.recv() == "hello /idle"
        start = time.monotonic()
        ws.pump(lambda: ws.reset is not None, 20)
        waited = time.monotonic() - start
    finally:
        ws.close()
    assert ws.reset == 8  # CANCEL
    assert waited >= 0.3
    wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
    assert 'reason="idle timeout"' in tunnel_log_lines(pf)[0]
    assert tunnels(pf) == (0, 1)


def test_a_client_reset_ends_the_tunnel_and_frees_the_upstream(ws_backend, start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address))
    ws = H2WebSocket(pf.port(), "/reset")
    try:
        assert ws.recv() == "hello /reset"
        ws.conn.reset_stream(ws.stream, 8)
        ws.flush()
        wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
        assert 'reason="client reset the stream"' in tunnel_log_lines(pf)[0]
        assert tunnels(pf) == (0, 1)
        # the connection goes on: a second WebSocket on it works
        ws2_stream = ws.conn.get_next_available_stream_id()
        assert ws2_stream > ws.stream
    finally:
        ws.close()


def test_megabytes_through_the_stream_with_bounded_memory(ws_backend, start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address))
    ws = H2WebSocket(pf.port(), "/bulk")
    total, chunk = 4 * MiB, 256 * 1024
    rss = RssPeak(pf)
    sent, got = hashlib.sha256(), hashlib.sha256()
    try:
        assert ws.recv() == "hello /bulk"
        n = 0
        for i in range(total // chunk):
            data = bytes([i % 251]) * chunk
            sent.update(data)
            ws.send(data)
            m = ws.recv(60)
            got.update(m)
            n += len(m)
    finally:
        growth = rss.stop()
        ws.close()
    assert n == total and sent.hexdigest() == got.hexdigest()
    assert growth < 16 * MiB, f"pilotfish RSS grew by {growth} bytes"
    wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
    assert int(re.search(r"bytes_from_client=(\d+)", tunnel_log_lines(pf)[0]).group(1)) > total


def test_a_tunnel_stream_keeps_working_while_draining(ws_backend, start_pilotfish):
    pf = start_pilotfish(config(ws_backend.address, drain_timeout="2s"))
    ws = H2WebSocket(pf.port(), "/drain")
    try:
        assert ws.recv() == "hello /drain"
        pf.signal(signal.SIGTERM)
        ws.send("during drain")
        assert ws.recv() == "during drain"
        start = time.monotonic()
        try:
            ws.pump(lambda: ws.reset is not None or ws.ended, 20)
        except ConnectionError:
            pass  # pilotfish exited at drain_timeout with the tunnel still open
        waited = time.monotonic() - start
    finally:
        ws.close()
    assert pf.wait_exit(20) is not None
    assert waited < 15


def test_an_endpoint_that_answers_the_handshake_with_a_page_is_a_bad_gateway(start_backend,
                                                                              start_pilotfish):
    b = start_backend("page")  # answers every GET with 200 and a body, Upgrade or not
    pf = start_pilotfish(make_config(
        [listener("main", [{"match": {"prefix": "/"}, "cluster": "page"}])],
        [cluster("page", [b.address])]))
    ws = H2WebSocket(pf.port(), "/headers")
    try:
        # a 200 would tell the client its WebSocket is open
        assert ws.status == 502
    finally:
        ws.close()
    assert tunnels(pf) == (0, 0)
