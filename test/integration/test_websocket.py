"""Upgrades and WebSocket: a request with Connection: upgrade and an Upgrade the route allows
goes upstream with those headers, and a 101 turns the connection into a byte tunnel (both
ways, backpressure, half-close, its own idle timeout, drain, metrics and one log line).
Backends: Debian's python3-websockets (test/fakes/ws_backend.py) and a raw-socket one."""

import asyncio
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import websockets

from harness import (
    LOCALHOST,
    START_TIMEOUT,
    HarnessError,
    cluster,
    listener,
    make_config,
    wait_for,
)
from servers import ThreadedServer, tunnel_log_lines, tunnels

FAKE = os.path.join(os.path.dirname(__file__), "..", "fakes", "ws_backend.py")
MiB = 1 << 20


class WsBackend:
    def __init__(self, workdir):
        self.out_path = os.path.join(workdir, "ws-backend.out")
        self.err_path = os.path.join(workdir, "ws-backend.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, FAKE], stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

        def listening():
            if self.proc.poll() is not None:
                raise HarnessError(f"ws_backend exited {self.proc.returncode}")
            with open(self.out_path, "rb") as f:
                m = re.search(rb"^listening \S+:(\d+)$", f.read(), re.M)
            return int(m.group(1)) if m else None

        self.port = wait_for(listening, START_TIMEOUT, "the WebSocket backend to listen")
        self.address = f"{LOCALHOST}:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def ws_backend(tmp_path):
    b = WsBackend(str(tmp_path))
    yield b
    b.stop()


def ws_route(**kw):
    d = {"match": {"prefix": "/"}, "cluster": "ws"}
    d.update(kw)
    return d


def ws_config(backend_address, routes=None, lb_policy="round_robin", **kw):
    listener_kw = kw.pop("listener_kw", {})
    return make_config(
        [listener("main", routes or [ws_route()], **listener_kw)],
        [cluster("ws", [backend_address], lb_policy=lb_policy)],
        **kw,
    )


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_websocket_text_and_binary_frames_pass_both_ways(ws_backend, start_pilotfish):
    pf = start_pilotfish(ws_config(ws_backend.address))
    url = f"ws://{LOCALHOST}:{pf.port()}/chat?room=1"
    blob = bytes(range(256)) * 40

    async def talk():
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            greeting = await ws.recv()  # the backend speaks first
            await ws.send("ping text")
            text = await ws.recv()
            await ws.send(blob)
            binary = await ws.recv()
            active = tunnels(pf)
            return greeting, text, binary, active

    greeting, text, binary, active = run(talk())
    assert greeting == "hello /chat?room=1"
    assert text == "ping text"
    assert binary == blob and isinstance(binary, bytes)
    assert active == (1, 1)
    wait_for(lambda: tunnels(pf) == (0, 1), 10, "the tunnel to close")
    wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
    (line,) = tunnel_log_lines(pf)
    assert "cluster=ws" in line and f"upstream={ws_backend.address}" in line
    from_client = int(re.search(r"bytes_from_client=(\d+)", line).group(1))
    from_upstream = int(re.search(r"bytes_from_upstream=(\d+)", line).group(1))
    assert from_client > len(blob) and from_upstream > len(blob)
    assert re.search(r"duration_ms=\d+", line)
    # the request that opened it is in the access log, once, as a 101
    def opened():
        return [e for e in pf.access_log() if e.get("status") == 101]

    wait_for(opened, 10, "the access log entry")
    (entry,) = opened()
    assert entry["path"].startswith("/chat") and entry["bytes_in"] == from_client


class RssPeak:
    """Samples pilotfish's RSS every 20 ms from start to stop(); growth is the peak over the
    first sample."""

    def __init__(self, pf):
        self.pf = pf
        self.before = self.peak = pf.rss_bytes()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.pf.rss_bytes())
            self.done.wait(0.02)

    def stop(self):
        self.done.set()
        self.thread.join(5)
        return self.peak - self.before


def test_a_large_transfer_keeps_pilotfish_memory_bounded(ws_backend, start_pilotfish):
    pf = start_pilotfish(ws_config(ws_backend.address))
    url = f"ws://{LOCALHOST}:{pf.port()}/bulk"
    total = 50 * MiB
    rss = RssPeak(pf)

    async def transfer():
        sent, got = hashlib.sha256(), hashlib.sha256()
        async with websockets.connect(url, max_size=None, compression=None, max_queue=4) as ws:
            assert await ws.recv() == "hello /bulk"

            async def send_all():
                for i in range(total // MiB):
                    chunk = bytes([i % 251]) * MiB
                    sent.update(chunk)
                    await ws.send(chunk)

            async def receive_all():
                n = 0
                while n < total:
                    m = await ws.recv()
                    got.update(m)
                    n += len(m)
                return n

            _, n = await asyncio.gather(send_all(), receive_all())
        return n, sent.hexdigest(), got.hexdigest()

    try:
        n, sent, got = run(transfer(), timeout=120)
    finally:
        growth = rss.stop()
    assert n == total and sent == got
    # Each direction holds at most its stream inputs and the other side's output limit
    # (64 KiB each by default); 100 MB went through.
    assert growth < 16 * MiB, f"pilotfish RSS grew by {growth} bytes"
    wait_for(lambda: tunnels(pf) == (0, 1), 10, "the tunnel to close")
    (line,) = tunnel_log_lines(pf)
    assert int(re.search(r"bytes_from_client=(\d+)", line).group(1)) > total


def test_an_idle_tunnel_is_closed_after_its_own_timeout(ws_backend, start_pilotfish):
    pf = start_pilotfish(
        ws_config(ws_backend.address, routes=[ws_route(tunnel_idle_timeout="400ms")])
    )
    url = f"ws://{LOCALHOST}:{pf.port()}/idle"

    async def idle():
        async with websockets.connect(url, ping_interval=None) as ws:
            assert await ws.recv() == "hello /idle"
            start = time.monotonic()
            await asyncio.wait_for(ws.wait_closed(), 20)
            return time.monotonic() - start

    waited = run(idle())
    assert waited >= 0.3
    wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
    assert 'reason="idle timeout"' in tunnel_log_lines(pf)[0]
    assert tunnels(pf) == (0, 1)


def test_the_listener_tunnel_idle_timeout_applies_without_a_route_one(ws_backend, start_pilotfish):
    pf = start_pilotfish(
        ws_config(ws_backend.address, listener_kw={"tunnel_idle_timeout": "300ms"})
    )

    async def idle():
        async with websockets.connect(f"ws://{LOCALHOST}:{pf.port()}/l", ping_interval=None) as ws:
            await ws.recv()
            await asyncio.wait_for(ws.wait_closed(), 20)

    run(idle())
    wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
    assert 'reason="idle timeout"' in tunnel_log_lines(pf)[0]


def test_tunnels_keep_working_while_draining_until_drain_timeout(ws_backend, start_pilotfish):
    pf = start_pilotfish(ws_config(ws_backend.address, drain_timeout="2s"))
    url = f"ws://{LOCALHOST}:{pf.port()}/drain"

    async def drain():
        async with websockets.connect(url, ping_interval=None) as ws:
            await ws.recv()
            pf.signal(signal.SIGTERM)
            # still a tunnel while pilotfish drains
            await ws.send("during drain")
            assert await ws.recv() == "during drain"
            start = time.monotonic()
            await asyncio.wait_for(ws.wait_closed(), 20)
            return time.monotonic() - start

    waited = run(drain())
    assert pf.wait_exit(20) is not None
    assert waited < 15


def test_a_tunnel_counts_as_a_request_in_flight_on_its_endpoint(ws_backend, start_pilotfish):
    pf = start_pilotfish(ws_config(ws_backend.address, lb_policy="least_request"))

    def active_requests():
        (c,) = [c for c in pf.admin_json("/clusters")["clusters"] if c["name"] == "ws"]
        return sum(e["active_requests"] for e in c["endpoints"])

    async def hold():
        async with websockets.connect(f"ws://{LOCALHOST}:{pf.port()}/x") as ws:
            await ws.recv()
            return active_requests()

    assert run(hold()) == 1
    wait_for(lambda: active_requests() == 0, 10, "the endpoint's requests in flight to drop")


def test_an_upgrade_the_route_does_not_allow_loses_its_headers(ws_backend, start_pilotfish):
    pf = start_pilotfish(
        ws_config(ws_backend.address, routes=[ws_route(upgrades=["h2c"])]),
        extra_args=("--log-level", "debug"),
    )

    async def refused():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as err:
            async with websockets.connect(f"ws://{LOCALHOST}:{pf.port()}/no"):
                pass
        return err.value.status_code

    # the backend saw a plain GET without Upgrade: it asks for one
    assert run(refused()) == 426
    wait_for(lambda: "upgrade refused" in pf.stderr_text(), 10, "the debug line")
    line = [l for l in pf.stderr_text().splitlines() if "upgrade refused" in l][0]
    assert 'protocol="websocket"' in line and "not in the route's upgrades" in line
    assert tunnels(pf) == (0, 0)


class RawUpgradeBackend(ThreadedServer):
    """Answers an upgrade request with 101, echoes what comes until the client's EOF, then
    writes "bye" and closes: a half-close must pass both ways."""

    def serve(self, conn):
        conn.settimeout(20)
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            head, rest = head.split(b"\r\n\r\n", 1)
            self.head = head.decode()
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: raw-test\r\n\r\nwelcome;")
            data = rest
            while True:
                piece = conn.recv(4096)
                if not piece:
                    break
                data += piece
            conn.sendall(b"echo:" + data + b";bye")
            conn.shutdown(socket.SHUT_WR)


def test_a_half_closed_client_still_receives_the_rest(start_pilotfish):
    b = RawUpgradeBackend()
    try:
        pf = start_pilotfish(
            ws_config(f"{LOCALHOST}:{b.port}", routes=[ws_route(upgrades=["raw-test"])])
        )
        with socket.create_connection((LOCALHOST, pf.port()), timeout=20) as c:
            c.sendall(b"GET /raw HTTP/1.1\r\nHost: test.local\r\nConnection: upgrade\r\n"
                      b"Upgrade: raw-test\r\n\r\nearly;")
            c.sendall(b"late")
            got = b""
            while b"welcome;" not in got:
                piece = c.recv(4096)
                assert piece, got
                got += piece
            c.shutdown(socket.SHUT_WR)  # the backend's read ends: it answers and closes
            while True:
                piece = c.recv(4096)
                if not piece:
                    break
                got += piece
        head, tail = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"Upgrade: raw-test" in head and b"Connection: upgrade" in head
        assert tail == b"welcome;echo:early;late;bye"
        assert "Upgrade: raw-test" in b.head and "Connection: upgrade" in b.head
        wait_for(lambda: tunnel_log_lines(pf), 10, "the tunnel's log line")
        assert 'reason="closed"' in tunnel_log_lines(pf)[0]
    finally:
        b.close()
