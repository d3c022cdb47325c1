"""clusters[].max_requests_per_connection: an upstream connection carries that many requests
(HTTP/1.1) or streams (HTTP/2) and is then closed instead of reused, once what it carries is
done; nothing fails on the way."""

import subprocess

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route
from test_h2 import GoawayServer


def test_http1_connections_are_closed_after_max_requests(start_backend, start_pilotfish):
    a = start_backend("a")
    cfg = make_config([listener("main", [route("c")])],
                      [cluster("c", [a.address], max_requests_per_connection=3)])
    pf = start_pilotfish(cfg, workers=1)
    before = a.stats()["connections"]
    for i in range(9):
        assert pf.get(f"/r{i}").status == 200
    # 9 requests, 3 per connection; the stats query is a connection of its own.
    assert a.stats()["connections"] - before - 1 == 3
    m = pf.metrics()
    assert metric_sum(m, "pilotfish_upstream_connections_total", cluster="c") == 3
    assert metric_sum(m, "pilotfish_upstream_pool_reuses_total", cluster="c") == 6


def test_h2_connections_take_no_more_streams_after_max_requests(start_pilotfish, tmp_path):
    server = GoawayServer("g", None)  # never says GOAWAY; counts its connections
    try:
        cfg = make_config([listener("main", [route("c")])],
                          [cluster("c", [f"{LOCALHOST}:{server.port}"], protocol="h2",
                                   max_requests_per_connection=4)])
        pf = start_pilotfish(cfg, workers=1)
        # 20 requests, 5 at a time over one client connection: every upstream connection
        # carries 4 streams, some at once, and closes when they are done.
        r = subprocess.run(["h2load", "-n", "20", "-c", "1", "-m", "5",
                            f"http://{LOCALHOST}:{pf.port()}/"], capture_output=True, timeout=60)
        out = r.stdout.decode()
        assert "20 succeeded, 0 failed" in out, out
        assert server.answered == 20
        assert server.connections == 5, server.connections
        m = pf.metrics()
        assert metric_sum(m, "pilotfish_upstream_connections_total", cluster="c") == 5
        assert metric_sum(m, "pilotfish_upstream_retries_total", cluster="c") == 0
    finally:
        server.close()
