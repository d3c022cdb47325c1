#!/usr/bin/env bash
# Reload cost: a config of RELOAD_CLUSTERS clusters (default 1,000) and as many routes,
# reloaded by SIGHUP between two versions that point every route at another cluster and
# change ten clusters' timeouts. Reports the time pilotfish logs from the signal to the
# config applied (took_ms: load, validate, diff, apply), and the p99 latency of requests
# through one of the routes while RELOAD_COUNT reloads happen, against a run without
# reloads. Targets (issue 14): applied in under 100 ms; p99 with reloads within 1.2x.
#
#   bash bench/reload.sh [BUILD_DIR]
#
# Knobs: RELOAD_CLUSTERS (1000), RELOAD_COUNT (10), RELOAD_SECONDS (10, each wrk run),
# RELOAD_CONNECTIONS (20). Every process started here is stopped by PID on exit. Exit
# status 1 only when something could not be started: a missed target is reported.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import os
import re
import signal
import statistics
import threading

from benchlib import (begin, copy_binaries, env_int, fail, free_ports, need, parse_wrk,  # noqa
                      pilotfish_ready, run, run_wrk, start_backend, start_pilotfish, stop,
                      wait_until, workdir, write_json)

BUILD = begin("bench-reload")
N = env_int("RELOAD_CLUSTERS", 1000, 2)
COUNT = env_int("RELOAD_COUNT", 10, 1)
SECONDS = env_int("RELOAD_SECONDS", 10, 2)
CONNS = env_int("RELOAD_CONNECTIONS", 20, 1)
TARGET_MS = 100.0
TOOK = re.compile(r"config reload applied .* load_ms=([0-9.]+) took_ms=([0-9.]+)")


def config(admin, listen, backend, shift):
    clusters = [{"name": f"c{i}", "endpoints": [f"127.0.0.1:{backend}"]} for i in range(N)]
    for i in range(10):
        clusters[i]["connect_timeout"] = f"{1 + shift}s"
    routes = [{"match": {"prefix": f"/r{i}/"}, "cluster": f"c{(i + shift) % N}"}
              for i in range(N - 1)]
    routes.append({"match": {"prefix": "/"}, "cluster": f"c{shift}"})  # readiness probes /
    return {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False,
            "listeners": [{"name": "bench", "address": f"127.0.0.1:{listen}",
                           "routes": routes}],
            "clusters": clusters}


def applied_times(log, group=2):
    """took_ms (group 2) or load_ms (group 1) of each reload applied so far."""
    with open(log, errors="replace") as f:
        return [float(m.group(group)) for m in TOOK.finditer(f.read())]


def main():
    need("wrk")
    work = workdir()
    copy_binaries(BUILD, work, "pilotfish", "pf-backend")
    _, backend = start_backend(work, "b")
    admin, listen = free_ports(2)
    versions = [config(admin, listen, backend, s) for s in (0, 1)]
    pf, log = start_pilotfish(work, "reload", versions[0], "--log-level", "info")
    path = os.path.join(work, "reload.json")
    wait_until("pilotfish", pilotfish_ready(admin, listen), 30, pf, log)
    url = f"http://127.0.0.1:{listen}/r{N - 2}/"

    code, text = run_wrk(url, SECONDS, CONNS)
    quiet = parse_wrk(text)
    if code != 0 or quiet.get("p99_ms") is None:
        fail(f"wrk without reloads: exit {code}\n{text}")

    stop_reloads = threading.Event()

    def reloader():
        gap = SECONDS / (COUNT + 1)
        for k in range(COUNT):
            if stop_reloads.wait(gap):
                return
            write_json(path + ".tmp", versions[(k + 1) % 2])
            os.replace(path + ".tmp", path)
            before = len(applied_times(log))
            pf.send_signal(signal.SIGHUP)
            wait_until("the reload", lambda: len(applied_times(log)) > before, 10, pf, log)

    t = threading.Thread(target=reloader)
    t.start()
    code, text = run_wrk(url, SECONDS, CONNS)
    stop_reloads.set()
    t.join()
    loud = parse_wrk(text)
    if code != 0 or loud.get("p99_ms") is None:
        fail(f"wrk with reloads: exit {code}\n{text}")
    took = applied_times(log)
    loads = applied_times(log, 1)
    stop(pf, grace=10)

    print(f"reload of {N} clusters and {N} routes, {len(took)} reloads (SIGHUP -> applied):")
    print(f"  took_ms min {min(took):.1f}  median {statistics.median(took):.1f}  "
          f"max {max(took):.1f}  (target < {TARGET_MS:.0f} ms: "
          f"{'met' if max(took) < TARGET_MS else 'MISSED'})")
    print(f"  of which loading and validating the file: median {statistics.median(loads):.1f} ms; "
          f"the rest (diff, checks, apply): median "
          f"{statistics.median(t - l for t, l in zip(took, loads)):.1f} ms")
    ratio = loud["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("inf")
    print(f"  p99 without reloads {quiet['p99_ms']:.2f} ms, {quiet.get('rps') or 0:.0f} req/s")
    print(f"  p99 with {COUNT} reloads {loud['p99_ms']:.2f} ms, {loud.get('rps') or 0:.0f} req/s"
          f"  ratio {ratio:.2f} (target <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'})")
    errors = (loud.get("non2xx") or 0) + (loud.get("socket_errors") or 0)
    print(f"  errors during reloads: {errors}")


run(main)
PYEOF
