#!/usr/bin/env bash
# Load-balancing policies: req/s and p99 of every lb_policy against round robin, in the same
# run, behind pilotfish --workers 1 (issue 7).
#
#   bash bench/policies.sh [BUILD_DIR]      (run.sh calls it when BENCH_CASES has "policies")
#
# Cases, each run for every policy in turn, rounds interleaved:
#   equal   three equal pf-backends answering at once. Floor: every policy within 5% of
#           round robin's req/s (the cost of the policy itself).
#   skewed  two pf-backends answering after FAST ms and one after SLOW ms (10 and 100: 10x).
#           Target: least_response_time's p99 at least 3x better than round robin's.
#           The load here is h2load, whose log has every request's latency: the p99 is the
#           99th percentile of requests. wrk's p99 is corrected for coordinated omission
#           (each slow answer also counts as the answers its connection "missed"), which
#           multiplies the weight of the few slow answers about tenfold; it is computed
#           from the same log and printed beside ("p99 co").
#   skewed_low  the same with BENCH_POLICY_LOW_CONNECTIONS (4) instead of 50: the load
#           factor (requests in flight + 1) of least_response_time weighs less there.
#   latency the skewed backends at 50 connections, round robin without ejection against
#           policies with outlier_detection.latency (factor 3, latency interval 500ms, the
#           default 30s ejection, ticks every 100ms). Floor: p99 at least 3x better than
#           round robin without it. The slow endpoint is ejected during the warm-up (at
#           least BENCH_POLICY_LATENCY_WARMUP, 2s) and stays out for the measured run; what
#           a return costs (it serves its share again until judged slow afresh) is not in
#           this figure.
# wrk asks for /k/<random> so the hash policies (hash_on path) see many keys; every policy
# gets the same script. A bench never fails on numbers: floors and targets are reported,
# and the exit status is non-zero only when something could not be started.
#
# Knobs: BENCH_POLICY_CASES (equal,skewed,skewed_low), BENCH_POLICY_DURATION (4s),
# BENCH_POLICY_WARMUP (1s), BENCH_POLICY_ROUNDS (2),
# BENCH_CONNECTIONS (50), BENCH_POLICY_LOW_CONNECTIONS (4), BENCH_POLICY_FAST_MS (10),
# BENCH_POLICY_SLOW_MS (100), BENCH_POLICY_LATENCY_WARMUP (2s),
# BENCH_PIN (1), BENCH_PROXY_CPU (1), BENCH_LOAD_CPU (0). Results also go to
# BUILD/bench-policies.json. Every process started here is stopped by PID on exit.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import json
import os
import re
import subprocess
import time

from benchlib import (LOAD_CPU, PIN, PROXY_CPU, begin, copy_binaries, env_int,
                      env_secs, fail, fmt, free_ports, http_get, need, parse_h2load_log, parse_wrk,
                      pilotfish_config, pilotfish_ready, pinned, pinning_note, run, run_wrk,
                      start_backend, start_pilotfish, stop, tail, wait_until, workdir, write_json)

BUILD = begin("bench-policies")
need("wrk")
need("h2load")
DURATION = env_secs("BENCH_POLICY_DURATION", "4s")
WARMUP = env_secs("BENCH_POLICY_WARMUP", "1s")
ROUNDS = env_int("BENCH_POLICY_ROUNDS", 2, 1)
CONNS = env_int("BENCH_CONNECTIONS", 50, 1)
LOW_CONNS = env_int("BENCH_POLICY_LOW_CONNECTIONS", 4, 1)
FAST_MS = env_int("BENCH_POLICY_FAST_MS", 10, 0)
SLOW_MS = env_int("BENCH_POLICY_SLOW_MS", 100, 1)
LATENCY_WARMUP = max(WARMUP, env_secs("BENCH_POLICY_LATENCY_WARMUP", "2s"))
START_TIMEOUT = 10.0
LATENCY_OUTLIER = {"consecutive_5xx": 0, "consecutive_gateway_failure": 0, "interval": "100ms",
                   "max_ejection_percent": 34,
                   "latency": {"factor": 3, "interval": "500ms", "min_requests": 10}}

POLICIES = {
    "round_robin": {"lb_policy": "round_robin"},
    "least_request": {"lb_policy": "least_request"},
    "least_response_time": {"lb_policy": "least_response_time"},
    "random": {"lb_policy": "random"},
    "ring_hash": {"lb_policy": "ring_hash", "hash_on": {"path": True}},
    "maglev": {"lb_policy": "maglev", "hash_on": {"path": True}},
    "round_robin+latency": {"lb_policy": "round_robin", "outlier_detection": LATENCY_OUTLIER},
    "least_request+latency": {"lb_policy": "least_request", "outlier_detection": LATENCY_OUTLIER},
    "least_response_time+latency": {"lb_policy": "least_response_time",
                                    "outlier_detection": LATENCY_OUTLIER},
}
SKEWED = ["round_robin", "least_request", "least_response_time", "random"]
CASES = {
    "equal": {"delays": [0, 0, 0], "policies": list(POLICIES), "conns": CONNS},
    "skewed": {"delays": [FAST_MS, FAST_MS, SLOW_MS], "policies": SKEWED, "conns": CONNS},
    "skewed_low": {"delays": [FAST_MS, FAST_MS, SLOW_MS], "policies": SKEWED, "conns": LOW_CONNS},
    "latency": {"delays": [FAST_MS, FAST_MS, SLOW_MS], "conns": CONNS,
                "policies": ["round_robin", "round_robin+latency", "least_request+latency",
                             "least_response_time+latency"]},
}
WANT = os.environ.get("BENCH_POLICY_CASES", ",".join(CASES)).split(",")
for c in WANT:
    if c not in CASES:
        fail(f"unknown case {c!r} in BENCH_POLICY_CASES ({','.join(CASES)})")
CASES = {c: CASES[c] for c in WANT}
WRK_SCRIPT = """
math.randomseed(42)
request = function()
  return wrk.format("GET", "/k/" .. math.random(1, 1000000))
end
"""


def backend_requests(port):
    return json.loads(http_get(port, "/stats", 1.0)[1])["requests"]


def start_pilotfish_on(work, ports, settings, tag):
    """pilotfish in front of ports with the policy settings, ready and proxying; a start
    that fails is retried on new ports."""
    for attempt in range(3):
        listen, admin = free_ports(2)
        cfg = pilotfish_config(admin, listen, dict(
            {"name": "b", "endpoints": [f"127.0.0.1:{p}" for p in ports]}, **settings))
        proc, log = start_pilotfish(work, f"pilotfish-{tag}-{attempt}", cfg, "--workers", "1",
                                    cpu=PROXY_CPU)
        if wait_until(f"pilotfish ({tag})", pilotfish_ready(admin, listen), START_TIMEOUT,
                      proc, log, give_up=False):
            return proc, listen
        stop(proc)
    fail(f"pilotfish ({tag}) did not start: {tail(log)}")


def run_h2load(work, port, seconds, log, conns):
    """Skewed cases: h2load over HTTP/1.1 logs every request's latency, so the p99 is
    the 99th percentile of requests (wrk's figure is corrected for coordinated omission,
    see benchlib.parse_h2load_log). log=None: a warm-up whose figures are not kept."""
    args = ["h2load", "--h1", "-t1", f"-c{conns}", f"-D{seconds}"]
    if log:
        args.append(f"--log-file={log}")
    args.append(f"http://127.0.0.1:{port}/k/1")
    out = os.path.join(work, "h2load.out")
    with open(out, "wb") as f:
        rc = subprocess.run(pinned(LOAD_CPU, args), stdout=f, stderr=subprocess.STDOUT,
                            timeout=seconds + 60).returncode
    text = open(out, errors="replace").read()
    m = re.search(r"^requests: .* (\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    errors = sum(int(x) for x in m.groups()) if m else 0
    return rc, errors


def load(work, case, port, seconds, tag, conns):
    """Runs one load; returns (exit status, parsed figures) or None figures for warm-ups."""
    if case.startswith("skewed") or case == "latency":
        log = os.path.join(work, f"h2load-{tag}.log") if tag else None
        rc, errors = run_h2load(work, port, seconds, log, conns)
        if not log:
            return rc, None
        res = parse_h2load_log(log, conns, seconds)
        res["socket_errors"] = errors
        return rc, res
    out = os.path.join(work, f"wrk-{tag or 'warm'}.txt")
    rc, text = run_wrk(f"http://127.0.0.1:{port}/", seconds, conns, "-s",
                       os.path.join(work, "keys.lua"), cpu=LOAD_CPU, out=out)
    return rc, parse_wrk(text) if tag else None


def measure(work, case, policy, rnd, ports, conns):
    proc, port = start_pilotfish_on(work, ports, POLICIES[policy], f"{case}-{policy}-{rnd}")
    try:
        warmup = LATENCY_WARMUP if case == "latency" else WARMUP
        if warmup:
            load(work, case, port, warmup, None, conns)
        before = [backend_requests(p) for p in ports]
        rc, res = load(work, case, port, DURATION, f"{case}-{policy}-{rnd}", conns)
        after = [backend_requests(p) for p in ports]
        alive = proc.poll() is None
    finally:
        stop(proc)
    # each /stats query is itself one request to that backend
    served = [max(0, a - b - 1) for a, b in zip(after, before)]
    total = sum(served)
    res.update({"case": case, "policy": policy, "round": rnd, "wrk_exit": rc, "alive": alive,
                "errors": res["socket_errors"] + res["non2xx"],
                "slow_share": served[-1] / total if total else None})
    print(f"  {case:<7} {policy:<20} round {rnd}: {fmt(res['rps'], 0)} req/s  "
          f"p50 {fmt(res['p50_ms'], 2)} ms  p99 {fmt(res['p99_ms'], 2)} ms  "
          + (f"(wrk-style {fmt(res['p99_co_ms'], 2)} ms)  " if "p99_co_ms" in res else "") +
          f"backend 3 share {fmt(100 * res['slow_share'] if total else None, 1)}%  "
          f"errors {res['errors']}" + ("" if alive else "  !! pilotfish died"), flush=True)
    return res


def best(runs):
    """The round with the highest req/s (interference only slows a round down)."""
    clean = [r for r in runs if r["alive"] and r["rps"]] or runs
    return max(clean, key=lambda r: r["rps"] or -1)


def main():
    work = workdir()
    copy_binaries(BUILD, work, "pilotfish", "pf-backend")
    with open(os.path.join(work, "keys.lua"), "w") as f:
        f.write(WRK_SCRIPT)
    print(f"bench-policies: wrk -t1, {WARMUP}s warm-up + {DURATION}s per run, "
          f"{ROUNDS} rounds; {pinning_note('wrk+backends')}")
    results = {}
    for case, spec in CASES.items():
        backends = [start_backend(work, f"{case}{i + 1}", "--delay-ms", str(d), cpu=LOAD_CPU,
                                  timeout=START_TIMEOUT) for i, d in enumerate(spec["delays"])]
        ports = [p for _, p in backends]
        print(f"bench-policies: case {case}: backends answer after {spec['delays']} ms, "
              f"wrk -c{spec['conns']}", flush=True)
        runs = {p: [] for p in spec["policies"]}
        for rnd in range(1, ROUNDS + 1):
            # who goes first rotates, so a slow drift of the machine hits every policy
            order = spec["policies"][rnd - 1:] + spec["policies"][:rnd - 1]
            for policy in order:
                runs[policy].append(measure(work, case, policy, rnd, ports, spec["conns"]))
        for proc, _ in backends:
            stop(proc)
        results[case] = {p: {"best": best(r), "runs": r} for p, r in runs.items()}
    report(results)


def report(results):
    print()
    print(f"{'case':<11} {'policy':<20} {'req/s':>9} {'vs rr':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'rr/p99':>7} {'p99 co':>8} {'backend3':>9} {'errors':>6}")
    notes = []
    for case, rows in results.items():
        rr = rows["round_robin"]["best"]
        for policy, row in rows.items():
            r = row["best"]
            vs = r["rps"] / rr["rps"] if r["rps"] and rr["rps"] else None
            p99x = rr["p99_ms"] / r["p99_ms"] if r["p99_ms"] and rr["p99_ms"] else None
            share = None if r["slow_share"] is None else 100 * r["slow_share"]
            errors = sum(x["errors"] for x in row["runs"])
            print(f"{case:<11} {policy:<20} {fmt(r['rps'], 0):>9} {fmt(vs, 3):>7} "
                  f"{fmt(r['p50_ms'], 3):>8} {fmt(r['p99_ms'], 3):>8} {fmt(p99x, 2):>7} "
                  f"{fmt(r.get('p99_co_ms'), 3):>8} {fmt(share, 1):>8}% {errors:>6}")
            row["vs_round_robin_rps"] = vs
            row["round_robin_p99_over_this"] = p99x
            if case == "equal" and vs is not None and vs < 0.95:
                notes.append(f"equal: {policy} at {vs:.3f}x round robin's req/s, below the 0.95 floor")
            if case.startswith("skewed") and policy == "least_response_time":
                ok = p99x is not None and p99x >= 3
                cox = (rr["p99_co_ms"] / r["p99_co_ms"]
                       if r.get("p99_co_ms") and rr.get("p99_co_ms") else None)
                notes.append(f"{case}: least_response_time p99 {fmt(r['p99_ms'], 2)} ms vs round "
                             f"robin {fmt(rr['p99_ms'], 2)} ms = {fmt(p99x, 1)}x better "
                             f"({'meets' if ok else 'MISSES'} the 3x target); wrk-style "
                             f"(coordinated-omission corrected) p99 {fmt(cox, 1)}x better")
            if case == "latency" and policy.endswith("+latency"):
                ok = p99x is not None and p99x >= 3
                notes.append(f"latency: {policy} p99 {fmt(r['p99_ms'], 2)} ms vs round robin "
                             f"without ejection {fmt(rr['p99_ms'], 2)} ms = {fmt(p99x, 1)}x better "
                             f"({'meets' if ok else 'MISSES'} the 3x floor)")
    floor = [n for n in notes if n.startswith("equal")]
    if "equal" in results and not floor:
        notes.insert(0, "equal: every policy within 5% of round robin's req/s (floor met)")
    print()
    for n in notes:
        print(f"bench-policies: {n}")
    out = os.path.join(BUILD, "bench-policies.json")
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "duration_s": DURATION,
            "warmup_s": WARMUP, "rounds": ROUNDS, "connections": CONNS,
            "low_connections": LOW_CONNS, "fast_ms": FAST_MS,
            "slow_ms": SLOW_MS, "pinned": bool(PIN)}
    write_json(out, {"meta": meta, "cases": results, "notes": notes}, indent=1)
    print(f"bench-policies: results in {out}")


run(main)
PYEOF
