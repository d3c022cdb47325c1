"""Connection limits and descriptor exhaustion: pilotfish stops accepting (the kernel's
backlog holds new connections) instead of spinning on accept, keeps descriptors for its admin
server, and serves new connections as soon as places or descriptors free up."""

import socket
import time

from harness import (
    LOCALHOST,
    cluster,
    listener,
    make_config,
    metric_sum,
    route,
    wait_for,
)

FD_LIMIT = 256
IDLE_CLIENTS = 300
CPU_WINDOW = 2.0  # seconds over which pilotfish's CPU time is measured
PAUSES = "pilotfish_downstream_accept_pauses_total"


def one_listener_config(backend, top=None, **listener_kw):
    cfg = make_config(
        [listener("main", [route("web", prefix="/")], **listener_kw)],
        [cluster("web", [backend.address])],
    )
    cfg.update(top or {})
    return cfg


def open_idle(port, n):
    """n client connections that send nothing; the kernel completes them even before
    pilotfish accepts them (its backlog is larger than n)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect((LOCALHOST, port))
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def cpu_over_window(pf):
    """CPU seconds pilotfish uses during CPU_WINDOW of wall time with nothing new to do."""
    before = pf.cpu_seconds()
    time.sleep(CPU_WINDOW)  # a measuring window, not a wait for an event
    return pf.cpu_seconds() - before


def accept_log_lines(pf):
    """Lines about accepting: "not accepting for now" (and "accept failed" before the fix)."""
    return [l for l in pf.stderr_text().splitlines() if "accept failed" in l or "not accepting" in l]


def test_out_of_descriptors_pauses_accepting_instead_of_spinning(start_backend, start_pilotfish):
    web = start_backend("web1")
    # A global limit far above what 256 descriptors allow: accept itself runs out.
    cfg = one_listener_config(web, {"max_connections": 100000})
    pf = start_pilotfish(cfg, workers=2, fd_limit=FD_LIMIT)
    assert "max_connections=100000 is more than the open file limit (256)" in pf.stderr_text()
    idle = open_idle(pf.port(), IDLE_CLIENTS)
    try:
        wait_for(lambda: pf.open_fds() >= FD_LIMIT, 10, "pilotfish to use every descriptor")
        cpu = cpu_over_window(pf)
        assert cpu < 0.25 * CPU_WINDOW, f"{cpu:.2f}s of CPU in {CPU_WINDOW}s while out of descriptors"
        lines = accept_log_lines(pf)
        assert 1 <= len(lines) <= 2, lines[:5]
        assert "Too many open files" in lines[0] and "not accepting for now" in lines[0], lines[0]
    finally:
        close_all(idle)
    # Descriptors free up as pilotfish sees the idle clients leave: new clients are served.
    wait_for(lambda: pf.get("/").status == 200, 10, "a request after the idle clients left")
    m = pf.metrics()
    assert metric_sum(m, PAUSES, listener="main", reason="descriptors") >= 1
    assert metric_sum(m, PAUSES, listener="main", reason="max_connections") == 0


def test_default_max_connections_keeps_descriptors_for_admin(start_backend, start_pilotfish):
    web = start_backend("web1")
    pf = start_pilotfish(one_listener_config(web), workers=2, fd_limit=FD_LIMIT)
    idle = open_idle(pf.port(), IDLE_CLIENTS)
    try:

        def at_limit():
            m = pf.metrics()  # the admin server answers while the clients are at the limit
            return (
                metric_sum(m, "pilotfish_downstream_connections_active", listener="main") == 96
                and metric_sum(m, PAUSES, listener="main", reason="max_connections") >= 1
            )

        wait_for(at_limit, 10, "96 connections open and accepting paused")
        cpu = cpu_over_window(pf)
        assert cpu < 0.25 * CPU_WINDOW, f"{cpu:.2f}s of CPU in {CPU_WINDOW}s at max_connections"
        assert pf.admin("GET", "/ready").status == 200
        assert pf.admin("GET", "/healthz").status == 200
        m = pf.metrics()
        assert metric_sum(m, "pilotfish_downstream_connections_active", listener="main") == 96
        assert metric_sum(m, PAUSES, listener="main", reason="descriptors") == 0
        assert len(accept_log_lines(pf)) <= 2
        assert pf.open_fds() < FD_LIMIT - 32
        # 256 descriptors: a reserve of 64, then half of the rest for clients.
        assert "max_connections=96" in pf.stderr_text()
    finally:
        close_all(idle)
    wait_for(lambda: pf.get("/").status == 200, 10, "a request after the idle clients left")


def test_listener_max_connections_holds_the_next_client_until_one_closes(
    start_backend, start_pilotfish
):
    web = start_backend("web1")
    pf = start_pilotfish(one_listener_config(web, max_connections=4), workers=2)
    idle = open_idle(pf.port(), 4)

    def active():
        return metric_sum(pf.metrics(), "pilotfish_downstream_connections_active", listener="main")

    # Accepted first, so that the client over the limit is the one that sends a request.
    wait_for(lambda: active() == 4, 10, "4 idle connections accepted")
    waiting = pf.raw()
    try:
        waiting.send(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")

        def paused():
            m = pf.metrics()
            return metric_sum(m, PAUSES, listener="main", reason="listener_max_connections") >= 1

        wait_for(paused, 10, "the listener to pause at 4 connections")
        assert active() == 4
        waiting.sock.settimeout(0)  # a look at what arrived so far, no wait
        try:
            got = waiting.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            got = None
        assert got is None, "the fifth client was answered while four were open"
        idle.pop().close()
        resp = waiting.read_response(timeout=10)
        assert resp.status == 200
        assert active() == 4
    finally:
        waiting.close()
        close_all(idle)
