#!/usr/bin/env bash
# Status page render time: pilotfish with STATUS_CLUSTERS (1,000) static clusters of
# STATUS_ENDPOINTS (2) endpoints each, STATUS_FAILING (50) of them with an HTTP check that
# fails (their endpoints are closed ports), so the page has open clusters with reasons as
# well as collapsed healthy ones. It asks for the admin page STATUS_REQUESTS (50) times, one
# at a time, and reads the server's own render time from the Server-Timing header
# pilotfish adds (the time to build the page, not to send it), plus the whole request as
# the client saw it and the page size. Target (issue 15): render under 50 ms.
#
#   bash bench/status_page.sh [BUILD_DIR]
#
# Every process started here is stopped by PID on exit. Exit status 1 only when something
# could not be started: a missed target is reported, not failed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import http.client
import os
import re
import statistics
import sys
import time

from benchlib import (begin, copy_binaries, env_int, fail, free_ports, pilotfish_ready,
                      run, start_pilotfish, wait_until, workdir, write_json)

BUILD = begin("bench-status-page")
CLUSTERS = env_int("STATUS_CLUSTERS", 1000, 1)
ENDPOINTS = env_int("STATUS_ENDPOINTS", 2, 1)
FAILING = min(env_int("STATUS_FAILING", 50, 0), CLUSTERS)
REQUESTS = env_int("STATUS_REQUESTS", 50, 1)
TARGET_MS = 50.0
START_TIMEOUT = 30.0


def get_page(port):
    """(render ms from Server-Timing, client ms, bytes) of one GET /."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        t0 = time.monotonic()
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
        client_ms = (time.monotonic() - t0) * 1000
        if r.status != 200:
            fail(f"GET / answered {r.status}")
        m = re.search(r"render;dur=([0-9.]+)", r.getheader("Server-Timing", ""))
        if not m:
            fail("no Server-Timing header with the render time")
        return float(m.group(1)), client_ms, len(body)
    finally:
        conn.close()


def failing_seen(port):
    """How many endpoints /clusters shows as failing their check."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/clusters")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return text.count('"unhealthy: check failed')


def main():
    work = workdir()
    copy_binaries(BUILD, work, "pilotfish")
    admin, listen = free_ports(2)
    # Endpoints are ports nothing listens on: no request goes through the proxy here, and
    # the checked ones fail (connect refused) at once.
    closed = free_ports(ENDPOINTS * CLUSTERS if ENDPOINTS * CLUSTERS < 20000 else 20000)
    clusters = []
    for i in range(CLUSTERS):
        eps = [f"127.0.0.1:{closed[(i * ENDPOINTS + k) % len(closed)]}" for k in range(ENDPOINTS)]
        c = {"name": f"svc-{i:04d}.shop", "endpoints": eps}
        if i < FAILING:
            c["health_check"] = {"type": "http", "path": "/healthz", "interval": "2s",
                                 "timeout": "1s"}
        clusters.append(c)
    cfg = {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False,
           "listeners": [{"name": "bench", "address": f"127.0.0.1:{listen}",
                          "routes": [{"match": {"prefix": "/"}, "cluster": clusters[-1]["name"]}]}],
           "clusters": clusters}
    pf, log = start_pilotfish(work, "status", cfg, "--workers", "1", "--log-level", "error")
    wait_until("pilotfish", pilotfish_ready(admin), START_TIMEOUT, pf, log)
    if FAILING:
        wait_until("the failing checks", lambda: failing_seen(admin) >= FAILING * ENDPOINTS,
                   START_TIMEOUT, pf, log)
    get_page(admin)  # one unmeasured: first-touch page faults of the buffers
    render, client, size = [], [], 0
    for _ in range(REQUESTS):
        r, c, size = get_page(admin)
        render.append(r)
        client.append(c)
    render.sort()
    client.sort()
    p95 = render[min(len(render) - 1, int(0.95 * len(render)))]
    print(f"status page: {CLUSTERS} clusters x {ENDPOINTS} endpoints, {FAILING} failing their "
          f"check, {size / 1024:.0f} KiB of HTML")
    print(f"server render over {REQUESTS} requests: median {statistics.median(render):.2f} ms, "
          f"p95 {p95:.2f} ms, max {render[-1]:.2f} ms; whole request as the client saw it: "
          f"median {statistics.median(client):.2f} ms")
    ok = p95 < TARGET_MS
    print(f"target: p95 render under {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    write_json(os.path.join(BUILD, "bench-status-page.json"),
               {"clusters": CLUSTERS, "endpoints_per_cluster": ENDPOINTS, "failing": FAILING,
                "bytes": size, "render_ms": render, "client_ms": client,
                "render_median_ms": statistics.median(render), "render_p95_ms": p95,
                "target_ms": TARGET_MS, "met": ok}, indent=1)
    sys.exit(0)  # a benchmark reports; it never fails on numbers


run(main)
PYEOF
