#!/usr/bin/env bash
# Health-check cost: pilotfish checking N endpoints (default 1,000) once a second each, and
# what that costs it in CPU, read from /proc/PID/stat over a measured window. The endpoints
# are N listening sockets on 127.0.0.1 held by one Python process (asyncio) that answers
# every request with 200 and keeps connections alive, as HTTP servers do. A second run with the same endpoints and no health_check gives
# the idle baseline. Target (issue 5): under 5% of one core.
#
#   bash bench/health.sh [BUILD_DIR]
#
# Knobs: HEALTH_ENDPOINTS (1000), HEALTH_SECONDS (20, the measured window), HEALTH_TYPE
# (http | tcp), HEALTH_INTERVAL (1s), HEALTH_BASELINE (1; 0 skips the run without checks).
# Every process started here is stopped by PID on exit. Exit status 1 only when something
# could not be started: a missed target is reported, not failed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import asyncio
import json
import os
import resource
import signal
import sys
import time

from benchlib import (begin, copy_binaries, env_int, fail, free_ports, http_get,
                      pilotfish_config, pilotfish_ready, run, start_pilotfish, stop, wait_until,
                      workdir)

BUILD = begin("bench-health")
N = env_int("HEALTH_ENDPOINTS", 1000, 1)
SECONDS = float(os.environ.get("HEALTH_SECONDS", "20"))
TYPE = os.environ.get("HEALTH_TYPE", "http")
INTERVAL = os.environ.get("HEALTH_INTERVAL", "1s")
BASELINE = os.environ.get("HEALTH_BASELINE", "1") != "0"
TARGET_PERCENT = 5.0
START_TIMEOUT = 30.0
HZ = os.sysconf("SC_CLK_TCK")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def serve_endpoints(n, ready_w):
    """Child process: n listening sockets answering every request with 200, keep-alive."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 256)), hard))

    async def handle(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(RESPONSE)
                await writer.drain()
        except (Exception, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def main():
        ports = []
        for _ in range(n):
            server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=128)
            ports.append(server.sockets[0].getsockname()[1])
        os.write(ready_w, (json.dumps(ports) + "\n").encode())
        os.close(ready_w)
        await asyncio.Event().wait()

    asyncio.run(main())


def cpu_ticks(pid):
    """(user, system) clock ticks of the process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def admin_get(port, path):
    return http_get(port, path, 5)[1].decode()


def checks_done(admin_port):
    total = 0.0
    for line in admin_get(admin_port, "/stats/prometheus").splitlines():
        if line.startswith("pilotfish_health_checks_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(ports, work, with_checks):
    admin_port, listen_port = free_ports(2)
    cluster = {"name": "many", "endpoints": [f"127.0.0.1:{p}" for p in ports]}
    if with_checks:
        cluster["health_check"] = {"type": TYPE, "interval": INTERVAL, "timeout": "1s",
                                   "jitter": "100ms"}
        if TYPE == "http":
            cluster["health_check"]["path"] = "/healthz"
    tag = "checks" if with_checks else "baseline"
    pf, log = start_pilotfish(work, tag, pilotfish_config(admin_port, listen_port, cluster),
                              "--log-level", "warn")
    try:
        wait_until(f"pilotfish ({tag})", pilotfish_ready(admin_port), START_TIMEOUT, pf, log)
        time.sleep(3)  # past the first round of checks, which all start at once
        c0, t0, k0 = cpu_ticks(pf.pid), time.monotonic(), checks_done(admin_port)
        time.sleep(SECONDS)
        c1, t1, k1 = cpu_ticks(pf.pid), time.monotonic(), checks_done(admin_port)
        healthy = json.loads(admin_get(admin_port, "/clusters"))["clusters"][0]["endpoints"]
        healthy = sum(1 for e in healthy if e["healthy"])
        user, system = (100.0 * (b - a) / HZ / (t1 - t0) for a, b in zip(c0, c1))
        return (user, system), (k1 - k0) / (t1 - t0), healthy
    finally:
        stop(pf, grace=10)


def main():
    work = workdir()
    copy_binaries(BUILD, work, "pilotfish")
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        try:
            serve_endpoints(N, ready_w)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        with os.fdopen(ready_r) as r:
            line = r.readline()
        if not line:
            fail("the endpoint process did not start")
        ports = json.loads(line)
        base_cpu = None
        if BASELINE:
            base_cpu, _, _ = measure(ports, work, with_checks=False)
        cpu, rate, healthy = measure(ports, work, with_checks=True)
    finally:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
    print(f"health checks: {N} endpoints, {TYPE}, interval {INTERVAL}: {rate:.0f} checks/s, "
          f"{healthy}/{N} healthy")
    line = (f"pilotfish CPU over {SECONDS:.0f} s: {sum(cpu):.2f}% of one core "
            f"(user {cpu[0]:.2f}%, system {cpu[1]:.2f}%)")
    if base_cpu is not None:
        line += f"; without checks: {sum(base_cpu):.2f}%"
    print(line)
    ok = sum(cpu) < TARGET_PERCENT and healthy == N
    print(f"target: under {TARGET_PERCENT:.0f}% of one core, every endpoint healthy: "
          f"{'met' if ok else 'MISSED'}")
    sys.exit(0)  # a benchmark reports; it never fails on numbers


run(main)
PYEOF
