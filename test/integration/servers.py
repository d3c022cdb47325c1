"""Test servers and helpers that several integration test files share: a threaded
listening socket for hand-written upstreams (HTTP/1, h2, gRPC, WebSocket), the fixture body
that closes them at teardown, and the tunnel counters of the WebSocket tests."""

import socket
import threading

from harness import LOCALHOST, metric_sum


class ThreadedServer:
    """A listening socket on 127.0.0.1 whose connections serve(conn) handles, each in a thread
    of its own; close() stops accepting and shuts down the connections still open. A
    subclass sets what serve() needs before calling __init__ (the accept thread starts there).
    `connections` counts those accepted so far, `open_connections()` those whose serve() has
    not returned yet."""

    backlog = 16

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(self.backlog)
        self.port = self.sock.getsockname()[1]
        self.address = f"{LOCALHOST}:{self.port}"
        self.lock = threading.Lock()
        self.connections = 0  # accepted so far
        self.open = 0  # serve() running
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.serve(conn)
        finally:
            with self.lock:
                self.open -= 1

    def serve(self, conn):
        raise NotImplementedError

    def open_connections(self):
        with self.lock:
            return self.open

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(10)
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def closed_at_teardown(make):
    """The body of a fixture (use with `yield from`) that yields start(...) -> make(...) and
    closes everything it made at teardown."""
    started = []

    def start(*args, **kw):
        server = make(*args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def tunnels(pf, listener="main"):
    """(tunnels open now, tunnels in all) on listener, from /metrics."""
    m = pf.metrics()
    return (
        metric_sum(m, "pilotfish_tunnels_active", listener=listener),
        metric_sum(m, "pilotfish_tunnels_total", listener=listener),
    )


def tunnel_log_lines(pf):
    return [line for line in pf.stderr_text().splitlines() if "tunnel closed" in line]
