#!/usr/bin/env bash
# Failover under load (issue 5): three pf-backends behind pilotfish with health checks and
# outlier detection; a bounded wrk load runs while one backend is killed (SIGKILL) and
# restarted. Reports failed requests (floor: 0), p99 during the event against a baseline
# run without it, and how long until /clusters shows the dead endpoint out of service.
#
#   bash bench/failover.sh [BUILD_DIR]
#
# Knobs: FAILOVER_SECONDS (12, each wrk run), FAILOVER_KILL_AT (3), FAILOVER_RESTART_AT (7),
# FAILOVER_CONNECTIONS (20). Everything binds 127.0.0.1; every process started here is
# stopped by PID on exit. Never fails on numbers: exit 1 only when something cannot start.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import json
import os
import signal
import threading
import time

from benchlib import (begin, copy_binaries, env_int, fail, free_ports, http_get,
                      parse_wrk, pilotfish_config, pilotfish_ready, run, run_wrk, start_backend,
                      start_pilotfish, wait_until, workdir)

BUILD = begin("bench-failover")
SECONDS = env_int("FAILOVER_SECONDS", 12, 1)
KILL_AT = float(os.environ.get("FAILOVER_KILL_AT", "3"))
RESTART_AT = float(os.environ.get("FAILOVER_RESTART_AT", "7"))
CONNS = env_int("FAILOVER_CONNECTIONS", 20, 1)


def wrk(port, seconds):
    text = run_wrk(f"http://127.0.0.1:{port}/", seconds, CONNS)[1]
    w = parse_wrk(text)
    if w["requests"] is None:
        fail(f"wrk printed no result:\n{text[-2000:]}")
    nan = float("nan")
    return {"requests": w["requests"], "errors": w["socket_errors"] + w["non2xx"],
            "p50_ms": nan if w["p50_ms"] is None else w["p50_ms"],
            "p99_ms": nan if w["p99_ms"] is None else w["p99_ms"]}


def main():
    work = workdir()
    copy_binaries(BUILD, work, "pilotfish", "pf-backend")
    ports = free_ports(3)
    backends = [start_backend(work, f"b{i}", listen=f"127.0.0.1:{ports[i]}")[0]
                for i in range(3)]
    listen, admin = free_ports(2)
    cfg = pilotfish_config(admin, listen, {
        "name": "b", "endpoints": [f"127.0.0.1:{p}" for p in ports],
        "health_check": {"type": "http", "path": "/healthz", "interval": "500ms",
                         "timeout": "250ms", "unhealthy_threshold": 2, "healthy_threshold": 2},
        "outlier_detection": {"consecutive_gateway_failure": 3, "base_ejection_time": "5s",
                              "max_ejection_percent": 50}})
    pf, log = start_pilotfish(work, "pf", cfg, "--workers", "1")
    wait_until("pilotfish", pilotfish_ready(admin), 10, pf, log)

    baseline = wrk(listen, SECONDS)
    victim = f"127.0.0.1:{ports[2]}"
    out_at = [None]

    def event():
        time.sleep(KILL_AT)
        killed = time.monotonic()
        backends[2].send_signal(signal.SIGKILL)
        backends[2].wait()
        while time.monotonic() - killed < RESTART_AT - KILL_AT:
            eps = json.loads(http_get(admin, "/clusters")[1])["clusters"][0]["endpoints"]
            gone = [e for e in eps if e["address"] == victim and not e["healthy"]]
            if gone and out_at[0] is None:
                out_at[0] = time.monotonic() - killed
            time.sleep(0.01)
        start_backend(work, "b2", listen=victim)

    t = threading.Thread(target=event, daemon=True)  # an interrupt must not wait for it
    t.start()
    during = wrk(listen, SECONDS)
    t.join()
    eject_ms = f"{out_at[0] * 1000:.0f} ms" if out_at[0] is not None else "not seen"
    print("failover (3 backends, one killed at %.0fs and restarted at %.0fs of a %ds wrk -c%d run)"
          % (KILL_AT, RESTART_AT, SECONDS, CONNS))
    print(f"  baseline : {baseline['requests']} requests, {baseline['errors']} failed, "
          f"p50 {baseline['p50_ms']:.2f} ms, p99 {baseline['p99_ms']:.2f} ms")
    print(f"  failover : {during['requests']} requests, {during['errors']} failed, "
          f"p50 {during['p50_ms']:.2f} ms, p99 {during['p99_ms']:.2f} ms")
    print(f"  failed requests during the event: {during['errors']} (floor 0)")
    print(f"  added p99: {during['p99_ms'] - baseline['p99_ms']:+.2f} ms")
    print(f"  time from kill to the endpoint out of service in /clusters: {eject_ms}")


run(main)
PYEOF
