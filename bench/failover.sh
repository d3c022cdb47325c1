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

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "${1:-$HERE/../build}" 2>/dev/null && pwd) || {
    echo "bench-failover: ERROR: build directory '${1:-$HERE/../build}' does not exist" >&2
    exit 1
}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)

exec "$PY" - "$BUILD" <<'PYEOF'
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BUILD = sys.argv[1]
SECONDS = int(os.environ.get("FAILOVER_SECONDS", "12"))
KILL_AT = float(os.environ.get("FAILOVER_KILL_AT", "3"))
RESTART_AT = float(os.environ.get("FAILOVER_RESTART_AT", "7"))
CONNS = int(os.environ.get("FAILOVER_CONNECTIONS", "20"))
procs = []


def fail(msg):
    print(f"bench-failover: ERROR: {msg}", file=sys.stderr)
    cleanup()
    sys.exit(1)


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(name, port):
    p = subprocess.Popen([f"{BUILD}/pf-backend", "--listen", f"127.0.0.1:{port}", "--name", name],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs.append(p)
    line = p.stdout.readline().decode()
    if not line.startswith("listening"):
        fail(f"pf-backend {name} did not start")
    return p


def http_json(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    def ms(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    return {"requests": total, "errors": errors, "p50_ms": ms("50"), "p99_ms": ms("99")}


try:
    ports = [free_port() for _ in range(3)]
    backends = [start_backend(f"b{i}", ports[i]) for i in range(3)]
    listen, admin = free_port(), free_port()
    cfg = {
        "admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False,
        "listeners": [{"name": "bench", "address": f"127.0.0.1:{listen}",
                       "routes": [{"match": {"prefix": "/"}, "cluster": "b"}]}],
        "clusters": [{"name": "b", "endpoints": [f"127.0.0.1:{p}" for p in ports],
                      "health_check": {"type": "http", "path": "/healthz", "interval": "500ms",
                                       "timeout": "250ms", "unhealthy_threshold": 2,
                                       "healthy_threshold": 2},
                      "outlier_detection": {"consecutive_gateway_failure": 3,
                                            "base_ejection_time": "5s",
                                            "max_ejection_percent": 50}}],
    }
    work = tempfile.mkdtemp(prefix="pf-failover.")
    with open(f"{work}/pf.json", "w") as f:
        json.dump(cfg, f)
    pf = subprocess.Popen([f"{BUILD}/pilotfish", "--config", f"{work}/pf.json", "--workers", "1"],
                          stdout=subprocess.DEVNULL, stderr=open(f"{work}/pf.err", "w"))
    procs.append(pf)
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1)
            break
        except Exception:
            if time.monotonic() > deadline or pf.poll() is not None:
                fail("pilotfish did not become ready")
            time.sleep(0.05)

    baseline = wrk(listen, SECONDS)
    victim = f"127.0.0.1:{ports[2]}"
    out_at = [None]

    def event():
        time.sleep(KILL_AT)
        killed = time.monotonic()
        backends[2].send_signal(signal.SIGKILL)
        backends[2].wait()
        while time.monotonic() - killed < RESTART_AT - KILL_AT:
            eps = http_json(f"http://127.0.0.1:{admin}/clusters")["clusters"][0]["endpoints"]
            gone = [e for e in eps if e["address"] == victim and not e["healthy"]]
            if gone and out_at[0] is None:
                out_at[0] = time.monotonic() - killed
            time.sleep(0.01)
        start_backend("b2", ports[2])

    t = threading.Thread(target=event)
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
finally:
    cleanup()
PYEOF
