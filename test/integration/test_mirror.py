"""Request mirroring against real servers: a copy of each request (of a share) reaches the
mirror cluster with "-shadow" in its Host and the body, the client's answer comes from the
route's cluster alone, a mirror cluster that never answers neither delays nor fails the
originals, and bodies past buffer_bytes are not copied (counted)."""

import json
import time

import pytest

from harness import (cluster, http_request, listener, make_config, metric_sum,
                     run_pilotfish, wait_for)
from servers import ThreadedServer, closed_at_teardown


class RecordingServer(ThreadedServer):
    """HTTP/1.1 on 127.0.0.1 that records each request (request line, headers, body) and
    answers 200, or never answers when `hang`."""

    backlog = 512

    def __init__(self, hang=False):
        self.hang = hang
        self.requests = []
        super().__init__()

    def count(self):
        with self.lock:
            return len(self.requests)

    def serve(self, conn):
        buf = b""
        while True:
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if len(rest) < length:
                    break
                body, buf = rest[:length], rest[length:]
                with self.lock:
                    self.requests.append((lines[0], headers, body))
                if not self.hang:
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nmirror\n")
                    except OSError:
                        return
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data


@pytest.fixture
def recording():
    yield from closed_at_teardown(RecordingServer)


def mirror_config(backend, shadow, percent=100, **shadow_cluster):
    return make_config(
        [listener("main", [{"match": {"prefix": "/"}, "cluster": "api",
                            "mirror": {"cluster": "shadow", "percent": percent}}],
                  buffer_bytes=65536)],
        [cluster("api", [backend.address]), cluster("shadow", [shadow.address], **shadow_cluster)],
        access_log=False)


def mirrors(pf, result):
    return metric_sum(pf.metrics(), "pilotfish_mirror_requests_total", listener="main",
                      result=result)


def test_a_copy_reaches_the_mirror_with_a_shadow_host_and_the_body(start_backend, start_pilotfish,
                                                                   recording):
    b = start_backend("api")
    shadow = recording()
    pf = start_pilotfish(mirror_config(b, shadow))
    r = http_request(pf.port(), "GET", "/headers?x=1", headers={"Host": "shop.example:8080",
                                                                 "X-Request-Id": "rid-7"})
    assert r.status == 200 and r.header("X-Backend") == "api"  # the answer is the route's
    body = b"a" * 1000 + b"z"
    r = http_request(pf.port(), "POST", "/echo", body=body, headers={"Host": "shop.example"})
    assert r.status == 200 and r.body == body
    wait_for(lambda: shadow.count() == 2, 5, "two copies at the mirror")
    (line1, h1, b1), (line2, h2, b2) = sorted(shadow.requests)
    assert line1 == "GET /headers?x=1 HTTP/1.1" and h1["host"] == "shop.example-shadow:8080"
    assert h1["x-request-id"] == "rid-7" and b1 == b""
    assert line2 == "POST /echo HTTP/1.1" and h2["host"] == "shop.example-shadow" and b2 == body
    assert mirrors(pf, "sent") == 2 and mirrors(pf, "dropped") == 0


def test_a_hanging_mirror_neither_delays_nor_fails_the_originals(start_backend, start_pilotfish,
                                                                 recording):
    b = start_backend("api")
    shadow = recording(hang=True)
    pf = start_pilotfish(mirror_config(b, shadow, response_timeout="30s",
                                       circuit_breakers={"max_requests": 20}))
    conn = pf.raw()
    slowest = 0.0
    for i in range(100):
        start = time.monotonic()
        resp = conn.request("POST", "/echo", body=b"x" * 100)
        slowest = max(slowest, time.monotonic() - start)
        assert resp.status == 200 and resp.body == b"x" * 100, i
    conn.close()
    # were an original held by its copy it would wait for the 30 s response timeout
    assert slowest < 5, slowest
    wait_for(lambda: shadow.count() >= 20, 5, "the mirror got copies")
    # past its breaker (20 in flight) the copies are answered 503 at once and end
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_mirror_requests_total", listener="main", result="sent") == 100
    overflow = metric_sum(m, "pilotfish_upstream_overflow_total", cluster="shadow")
    print(f"hanging mirror: slowest original {slowest * 1000:.1f} ms, {shadow.count()} copies "
          f"held by the mirror, {overflow} refused by its breaker")
    assert overflow == 100 - shadow.count() and shadow.count() <= 20


def test_a_share_is_copied_and_large_bodies_are_not(start_backend, start_pilotfish, recording):
    b = start_backend("api")
    shadow = recording()
    pf = start_pilotfish(mirror_config(b, shadow, percent=50))
    conn = pf.raw()
    for _ in range(300):
        assert conn.request("GET", "/headers").status == 200
    conn.close()
    wait_for(lambda: mirrors(pf, "sent") == shadow.count(), 5, "every copy sent arrived")
    # binomial(300, 0.5): the standard deviation is 8.7; 60 is nearly seven of them
    assert 90 <= shadow.count() <= 210, shadow.count()
    # a body past the listener's buffer_bytes (64 KiB here) is not copied
    before = shadow.count()
    pf2 = start_pilotfish(mirror_config(b, shadow))
    big = b"b" * 70000
    r = http_request(pf2.port(), "POST", "/echo", body=big)
    assert r.status == 200 and r.body == big
    wait_for(lambda: mirrors(pf2, "dropped") == 1, 5, "the copy counted as dropped")
    assert mirrors(pf2, "sent") == 0 and shadow.count() == before


def test_mirror_config_errors(tmp_path):
    cfg = make_config([listener("main", [
        {"match": {}, "cluster": "api", "mirror": {"cluster": "nope"}},
        {"match": {}, "cluster": "api", "mirror": {"percent": 5}},
        {"match": {}, "direct_response": {"status": 200}, "mirror": {"cluster": "api"}},
        {"match": {}, "cluster": "api", "mirror": {"cluster": "api", "percent": 101}},
    ])], [cluster("api", ["127.0.0.1:1"])])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = run_pilotfish(["--check-config", str(path)])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    p = "$.listeners[0].routes"
    for line in [
        f'{p}[0].mirror.cluster: unknown cluster "nope"',
        f'{p}[1].mirror: missing required key "cluster"',
        f'{p}[2].mirror: a route with "direct_response" sends nothing upstream; remove one of the two',
        f"{p}[3].mirror.percent: 101 out of range (0-100)",
    ]:
        assert line in err, f"{line!r} not in:\n{err}"
