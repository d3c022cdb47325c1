"""TCP (L4) listeners: each connection relayed as bytes to one endpoint of a cluster, with
half-close, backpressure, connect retries on other endpoints, idle_timeout, max_connections,
drain, metrics, one access-log line per connection, and TLS passthrough routed by the SNI of
the ClientHello. Backends: test/fakes/tcp_backend.py (plain echo/count/name service, or a
Python ssl server); clients: Python sockets and openssl s_client."""

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from harness import (
    LOCALHOST,
    START_TIMEOUT,
    HarnessError,
    RssSampler,
    closed_port,
    cluster,
    cluster_status,
    free_port,
    make_config,
    metric_sum,
    run_pilotfish,
    started_by_test,
    wait_for,
)
from test_reload import reload_by_signal
from test_tls import Pki

FAKE = os.path.join(os.path.dirname(__file__), "..", "fakes", "tcp_backend.py")
MiB = 1 << 20
IO = 20.0


class TcpBackend:
    def __init__(self, workdir, name, tls=None):
        self.name = name
        self.workdir = workdir
        self.tls = tls
        self.proc = None

    def start(self):
        out = os.path.join(self.workdir, f"tcp-{self.name}.out")
        args = [sys.executable, FAKE, self.name]
        if self.tls:
            args += ["--tls", *self.tls]
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

        def listening():
            if self.proc.poll() is not None:
                raise HarnessError(f"tcp_backend {self.name} exited {self.proc.returncode}")
            with open(out, "rb") as f:
                m = re.search(rb"^listening \S+:(\d+)$", f.read(), re.M)
            return int(m.group(1)) if m else None

        self.port = wait_for(listening, START_TIMEOUT, f"tcp backend {self.name} to listen")
        self.address = f"{LOCALHOST}:{self.port}"
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def problems(self):
        return []


@pytest.fixture
def start_tcp_backend(tmp_path):
    yield from started_by_test(lambda name, tls=None: TcpBackend(str(tmp_path), name, tls))


def tcp_listener(name="db", **kw):
    d = {"name": name, "address": f"{LOCALHOST}:{free_port()}", "protocol": "tcp"}
    d.update(kw)
    return d


def connect(pf, listener=0):
    return socket.create_connection((LOCALHOST, pf.port(listener)), timeout=IO)


def read_to_eof(s):
    data = bytearray()
    while True:
        piece = s.recv(1 << 16)
        if not piece:
            return bytes(data)
        data += piece


def closed_without_data(s):
    """Whether the peer closed without sending a byte. A close with the client's bytes still
    unread in the kernel is a reset (RFC 9293 3.6.1), which counts as closed too."""
    try:
        return read_to_eof(s) == b""
    except ConnectionResetError:
        return True


def read_line(s):
    data = b""
    while not data.endswith(b"\n"):
        piece = s.recv(1)
        if not piece:
            break
        data += piece
    return data


def ask_name(pf, listener=0):
    with connect(pf, listener) as s:
        s.sendall(b"name\n")
        return read_line(s).decode().strip()


def tcp_lines(pf, n):
    """The access log's tcp lines, once there are at least n."""
    return wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(
        [e for e in pf.access_log() if e.get("protocol") == "tcp"]), 10, f"{n} tcp log lines")


def test_bytes_and_half_closes_pass_through_and_are_logged_and_counted(start_tcp_backend,
                                                                       start_pilotfish):
    b = start_tcp_backend("a")
    pf = start_pilotfish(make_config([tcp_listener(cluster="svc")],
                                     [cluster("svc", [b.address])]))
    payload = os.urandom(300_000)
    # The client half-closes; the endpoint still answers after it (count waits for the FIN).
    with connect(pf) as s:
        s.sendall(b"count\n" + payload)
        s.shutdown(socket.SHUT_WR)
        reply = read_to_eof(s)
    assert reply == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    # The endpoint half-closes after the client did: every echoed byte arrives, then EOF.
    with connect(pf) as s:
        s.sendall(b"echo\n" + payload[:50_000])
        s.shutdown(socket.SHUT_WR)
        assert read_to_eof(s) == payload[:50_000]

    first, second = tcp_lines(pf, 2)
    assert first["listener"] == "db" and first["cluster"] == "svc"
    assert first["upstream"] == b.address and first["reason"] == "closed"
    assert first["bytes_in"] == len(payload) + 6 and first["bytes_out"] == len(reply)
    assert first["connect_attempts"] == 1 and first["sni"] is None
    assert second["bytes_in"] == 50_005 and second["bytes_out"] == 50_000
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_tcp_connections_total", cluster="svc") == 2
    assert metric_sum(m, "pilotfish_tcp_bytes_total", cluster="svc",
                      direction="from_client") == len(payload) + 6 + 50_005
    assert metric_sum(m, "pilotfish_tcp_listener_bytes_total", listener="db",
                      direction="from_upstream") == len(reply) + 50_000
    assert metric_sum(m, "pilotfish_tcp_listener_connections_closed_total", listener="db",
                      reason="closed") == 2
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_tcp_connections_active") == 0, 10,
             "the relays to end")


def test_100_mib_each_way_with_bounded_memory(start_tcp_backend, start_pilotfish):
    b = start_tcp_backend("a")
    pf = start_pilotfish(make_config([tcp_listener(cluster="svc")],
                                     [cluster("svc", [b.address])]))
    total = 100 * MiB
    block = os.urandom(MiB)
    sent = hashlib.sha256()
    got = hashlib.sha256()
    received = [0]
    with connect(pf) as s:
        s.sendall(b"echo\n")
        rss_before = pf.rss_bytes()

        def reader():
            while True:
                piece = s.recv(1 << 18)
                if not piece:
                    return
                got.update(piece)
                received[0] += len(piece)

        t = threading.Thread(target=reader, daemon=True)
        with RssSampler(pf) as rss:
            t.start()
            for _ in range(total // MiB):
                s.sendall(block)
                sent.update(block)
            s.shutdown(socket.SHUT_WR)
            t.join(120)
        assert not t.is_alive(), "the echo did not end"
    assert received[0] == total and got.hexdigest() == sent.hexdigest()
    growth = rss.peak - rss_before
    print(f"tcp 100 MiB each way: rss before {rss_before >> 10} KiB, peak growth "
          f"{growth >> 10} KiB over {rss.samples} samples")
    assert growth < 16 * MiB, f"RSS grew {growth} bytes relaying 200 MiB"
    line = tcp_lines(pf, 1)[0]
    assert line["bytes_in"] == total + 5 and line["bytes_out"] == total


def test_a_killed_backend_gets_no_new_connections_and_connect_failures_are_retried(
        start_tcp_backend, start_pilotfish):
    bs = [start_tcp_backend(n) for n in ("a", "b", "c")]
    pf = start_pilotfish(make_config(
        [tcp_listener(cluster="svc")],
        [cluster("svc", [b.address for b in bs], lb_policy="round_robin")]))
    assert sorted(ask_name(pf) for _ in range(9)) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    tcp_lines(pf, 9)  # those relays ended before the kill, so none of them is cut by it
    bs[1].stop()
    names = [ask_name(pf) for _ in range(12)]
    assert "b" not in names and set(names) == {"a", "c"}
    lines = tcp_lines(pf, 21)[9:]
    assert all(e["reason"] == "closed" and e["upstream"] != bs[1].address for e in lines)
    retried = [e for e in lines if e["connect_attempts"] == 2]
    assert retried, "no connection was retried on another endpoint"
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_upstream_connect_failures_total", cluster="svc") == len(retried)
    assert metric_sum(m, "pilotfish_tcp_listener_connect_failures_total", listener="db") == len(
        retried)


def test_with_every_endpoint_down_the_client_is_closed_and_it_is_counted(start_pilotfish):
    pf = start_pilotfish(make_config(
        [tcp_listener(cluster="svc")],
        [cluster("svc", [f"{LOCALHOST}:{closed_port()}", f"{LOCALHOST}:{closed_port()}"],
                 retry={"max_retries": 1})]))
    with connect(pf) as s:
        s.sendall(b"name\n")
        assert closed_without_data(s)
    line = tcp_lines(pf, 1)[0]
    assert line["reason"] == "connect_failed" and line["connect_attempts"] == 2
    assert line["upstream"] is None and line["bytes_in"] == 0
    assert metric_sum(pf.metrics(), "pilotfish_tcp_listener_connections_closed_total",
                      reason="connect_failed") == 1


def test_idle_timeout_closes_a_silent_relay(start_tcp_backend, start_pilotfish):
    b = start_tcp_backend("a")
    pf = start_pilotfish(make_config([tcp_listener(cluster="svc", idle_timeout="300ms")],
                                     [cluster("svc", [b.address])]))
    with connect(pf) as s:
        s.sendall(b"echo\nping")
        assert s.recv(4) == b"ping"
        started = time.monotonic()
        assert closed_without_data(s)
        waited = time.monotonic() - started
    assert waited < 10
    line = tcp_lines(pf, 1)[0]
    # pilotfish's own clock: the relay lasted about the idle timeout (the event loop's timers
    # start from the time it cached when it woke, a few milliseconds early at most)
    assert line["reason"] == "idle_timeout" and line["duration_ms"] >= 250


def test_max_connections_holds_further_clients_until_one_closes(start_tcp_backend,
                                                                start_pilotfish):
    b = start_tcp_backend("a")
    pf = start_pilotfish(make_config([tcp_listener(cluster="svc", max_connections=2)],
                                     [cluster("svc", [b.address])]))
    first, second = connect(pf), connect(pf)
    for s in (first, second):
        s.sendall(b"name\n")
        assert read_line(s) == b"a\n"
    third = connect(pf)  # the kernel's backlog takes it; pilotfish does not accept it yet
    third.sendall(b"name\n")
    third.settimeout(0.5)
    with pytest.raises(socket.timeout):
        third.recv(10)
    first.close()
    third.settimeout(IO)
    assert read_line(third) == b"a\n"
    second.close()
    third.close()
    assert metric_sum(pf.metrics(), "pilotfish_downstream_accept_pauses_total",
                      reason="listener_max_connections") >= 1


def test_least_request_counts_open_connections_and_sigterm_waits_for_relays(start_tcp_backend,
                                                                           start_pilotfish):
    bs = [start_tcp_backend(n) for n in ("a", "b")]
    pf = start_pilotfish(make_config(
        [tcp_listener(cluster="svc")],
        [cluster("svc", [b.address for b in bs], lb_policy="least_request")],
        drain_timeout="20s"))
    held = []
    for _ in range(4):
        s = connect(pf)
        s.sendall(b"name\n")
        read_line(s)
        held.append(s)

    def active():
        eps = cluster_status(pf, "svc")["endpoints"]
        return sorted(e["active_requests"] for e in eps)

    assert active() == [2, 2]  # least_request spread the open connections evenly
    pf.signal(signal.SIGTERM)
    # Draining: no new connections, but open relays still carry bytes both ways.
    for s in held:
        s.sendall(b"still here")
        got = b""
        while len(got) < 10:
            got += s.recv(10 - len(got))
        assert got == b"still here"
    assert pf.alive()
    for s in held:
        s.close()
    code = pf.wait_exit(15)
    assert code == 0


def test_the_clusters_max_requests_breaker_limits_relays(start_tcp_backend, start_pilotfish):
    b = start_tcp_backend("a")
    pf = start_pilotfish(make_config(
        [tcp_listener(cluster="svc")],
        [cluster("svc", [b.address], circuit_breakers={"max_requests": 1})]))
    with connect(pf) as first:
        first.sendall(b"name\n")
        assert read_line(first) == b"a\n"
        with connect(pf) as second:  # over the limit: closed without reaching the endpoint
            second.sendall(b"name\n")
            assert closed_without_data(second)
        assert echo_once(first) == b"still here"
    wait_for(lambda: metric_sum(pf.metrics(), "pilotfish_tcp_connections_active") == 0, 10,
             "the first relay to end")
    assert ask_name(pf) == "a"  # the place is free again
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_upstream_overflow_total", cluster="svc",
                      breaker="max_requests") == 1
    assert metric_sum(m, "pilotfish_tcp_listener_connections_closed_total",
                      reason="overflow") == 1


def test_ring_hash_keeps_a_client_address_on_one_endpoint(start_tcp_backend, start_pilotfish):
    bs = [start_tcp_backend(n) for n in ("a", "b", "c")]
    pf = start_pilotfish(make_config(
        [tcp_listener(cluster="svc")],
        [cluster("svc", [b.address for b in bs], lb_policy="ring_hash",
                 hash_on={"source_ip": True})]))
    assert len({ask_name(pf) for _ in range(10)}) == 1


def echo_once(s, data=b"still here"):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        piece = s.recv(len(data) - len(got))
        assert piece, "the relay closed"
        got += piece
    return got


def test_reloads_apply_to_new_connections_and_open_relays_hold_no_config(start_tcp_backend,
                                                                         start_pilotfish):
    a, b = start_tcp_backend("a"), start_tcp_backend("b")
    clusters = [cluster("a", [a.address]), cluster("b", [b.address])]
    db = tcp_listener(cluster="a")
    cfg = make_config([db], clusters)
    pf = start_pilotfish(cfg)
    relay = connect(pf)
    relay.sendall(b"name\n")
    assert read_line(relay) == b"a\n"
    # The cluster changes live: new connections go to b, the open relay stays with a.
    def listening(*listeners):
        return dict(cfg, listeners=list(listeners))

    reload_by_signal(pf, listening(dict(db, cluster="b")))
    assert ask_name(pf) == "b"
    assert echo_once(relay) == b"still here"
    # A listener's protocol waits for a restart (the running config stays).
    http = {k: v for k, v in db.items() if k != "cluster"}
    http.update(protocol="http", routes=[{"match": {}, "cluster": "a"}])
    reload_by_signal(pf, listening(http), result="rejected")
    assert "$.listeners[0].protocol: a listener's protocol cannot change" in pf.stderr_text()
    assert ask_name(pf) == "b"
    # More reloads than replaced configs may be held (32), and the listener itself removed:
    # the relay, on a listener that no longer exists, holds none of them and still works.
    other = tcp_listener("other", cluster="b")
    for i in range(34):
        reload_by_signal(pf, listening(other if i % 2 else dict(db, cluster="b")))
    reload_by_signal(pf, listening(other))
    assert echo_once(relay) == b"still here"
    relay.close()
    line = wait_for(lambda: next((e for e in pf.access_log()
                                  if e.get("protocol") == "tcp" and e["upstream"] == a.address),
                                 None), 10, "the relay's log line")
    assert line["listener"] == "db" and line["cluster"] == "a" and line["reason"] == "closed"


# ---- TLS passthrough by SNI -----------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki.__new__(Pki)
    p.d = str(tmp_path_factory.mktemp("tcp-pki"))
    p.ca = p._ca("ca", "pilotfish tcp test CA")
    p.db = p._leaf("db", p.ca, "ec", "DNS:db.test")
    p.cache = p._leaf("cache", p.ca, "ec", "DNS:*.cache.test")
    p.fallback = p._leaf("fallback", p.ca, "ec", "DNS:fallback.test")
    return p


@pytest.fixture
def sni_proxy(start_tcp_backend, start_pilotfish, pki):
    db = start_tcp_backend("db", tls=pki.db)
    cache = start_tcp_backend("cache", tls=pki.cache)
    fallback = start_tcp_backend("fallback", tls=pki.fallback)
    plain = start_tcp_backend("plain")
    pf = start_pilotfish(make_config(
        [tcp_listener("edge", cluster="fallback", header_timeout="1500ms",
                      routes=[{"match": {"sni": "db.test"}, "cluster": "db"},
                              {"match": {"sni": "*.cache.test"}, "cluster": "cache"}]),
         tcp_listener("strict", routes=[{"match": {"sni": "db.test"}, "cluster": "db"}]),
         tcp_listener("mixed", cluster="plain",
                      routes=[{"match": {"sni": "db.test"}, "cluster": "db"}])],
        [cluster("db", [db.address]), cluster("cache", [cache.address]),
         cluster("fallback", [fallback.address]), cluster("plain", [plain.address])]))
    return pf


def s_client(pf, listener, *args):
    """openssl s_client through pilotfish; returns (exit code, stdout). The endpoints close
    without close_notify, which s_client reports with a non-zero code after the session."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{LOCALHOST}:{pf.port(listener)}",
                        "-ign_eof", *args], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout


def test_sni_picks_the_cluster_and_the_endpoint_terminates_tls(sni_proxy, pki):
    pf = sni_proxy
    for sni, backend in (("db.test", "db"), ("x.cache.test", "cache"), ("other.test", "fallback")):
        code, out = s_client(pf, 0, "-servername", sni, "-CAfile", pki.ca[0])
        # the certificate is the endpoint's own, verified: pilotfish did not terminate TLS
        assert "Verify return code: 0 (ok)" in out, out
        assert f"subject=CN = {backend}" in out, out
        assert re.search(rf"^{backend}$", out, re.M), out
    code, out = s_client(pf, 0, "-noservername", "-CAfile", pki.ca[0])
    assert re.search(r"^fallback$", out, re.M), out
    lines = tcp_lines(pf, 4)
    assert sorted((e["sni"] or "-", e["cluster"]) for e in lines) == [
        ("-", "fallback"), ("db.test", "db"), ("other.test", "fallback"),
        ("x.cache.test", "cache")]


def test_no_route_and_no_cluster_closes_and_plaintext_goes_to_the_default(sni_proxy, pki):
    pf = sni_proxy
    code, out = s_client(pf, 1, "-servername", "other.test")
    assert not re.search(r"^(db|fallback)$", out, re.M)
    code, out = s_client(pf, 1, "-servername", "db.test", "-CAfile", pki.ca[0])
    assert re.search(r"^db$", out, re.M), out
    # Not TLS at all: the listener's cluster takes it as plain bytes.
    with connect(pf, 2) as s:
        s.sendall(b"name\n")
        assert read_line(s) == b"plain\n"
    lines = tcp_lines(pf, 3)
    assert [e["reason"] for e in lines if e["listener"] == "strict"] == ["no_route", "closed"]
    assert metric_sum(pf.metrics(), "pilotfish_tcp_listener_connections_closed_total",
                      listener="strict", reason="no_route") == 1


def test_a_slow_or_broken_client_hello_is_bounded(sni_proxy):
    pf = sni_proxy
    ctx = ssl.create_default_context()
    hello = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(*hello, server_hostname="db.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    client_hello = hello[1].read()
    # Half a ClientHello, then silence: closed at header_timeout (1500ms).
    with connect(pf) as s:
        s.sendall(client_hello[:40])
        started = time.monotonic()
        assert closed_without_data(s)
        assert time.monotonic() - started < 10
    # A malformed one (a handshake record of another message type): closed at once.
    with connect(pf) as s:
        s.sendall(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00")
        assert closed_without_data(s)
    # The same ClientHello in small pieces still finds its way.
    with connect(pf) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(client_hello), 64):
            s.sendall(client_hello[i:i + 64])
        # the server's answer is TLS from the db endpoint: its first record is a handshake
        assert s.recv(1) == b"\x16"
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_tcp_listener_connections_closed_total", listener="edge",
                      reason="peek_timeout") == 1
    assert metric_sum(m, "pilotfish_tcp_listener_connections_closed_total", listener="edge",
                      reason="bad_client_hello") == 1
    # (the client leaves mid-handshake, so how that relay ended varies: closed or reset)
    routed = [e for e in tcp_lines(pf, 3) if e["sni"] == "db.test"]
    assert len(routed) == 1 and routed[0]["cluster"] == "db"


def test_config_errors_name_the_json_path(tmp_path):
    import json
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(make_config(
        [tcp_listener(cluster="svc", max_headers=8,
                      routes=[{"match": {"prefix": "/"}, "cluster": "svc"}])],
        [cluster("svc", ["127.0.0.1:1"])])))
    r = run_pilotfish(["--check-config", str(path)])
    err = r.stderr.decode()
    assert r.returncode == 1
    assert (f"{path}: $.listeners[0].max_headers: an HTTP setting; a tcp listener reads no "
            "HTTP") in err
    assert f"{path}: $.listeners[0].routes[0].match.prefix: not for tcp listeners" in err
