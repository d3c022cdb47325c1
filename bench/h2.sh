#!/usr/bin/env bash
# HTTP/2: pilotfish vs haproxy in the same run, h2load with prior knowledge (h2c) in front
# (issue 12).
#
#   bash bench/h2.sh [BUILD_DIR]      (run.sh calls it when BENCH_CASES has "h2")
#
# Cases, rounds interleaved (pilotfish, haproxy, pilotfish, ...):
#   h2c-h1  h2load -c16 -m32 over h2c to the proxy, two nginx HTTP/1.1 backends behind it.
#   h2c-h2  the same with two nginx h2c backends (prior knowledge; pilotfish protocol "h2",
#           haproxy "proto h2").
# For each: req/s, requests per proxy CPU-second (the proxy's utime+stime around the
# measured run), p50 and p99 per request from h2load's log (p99 co: the same log corrected
# for coordinated omission as wrk would, see benchlib.parse_h2load_log). Floors: req/CPU-s
# >= 1.0x haproxy's, p99 <= 1.2x haproxy's, judged on the median of the rounds' ratios
# (each round runs the two back to back).
# Then memory: BENCH_H2_IDLE (1000) h2c connections that each made one request and stay
# open, RSS growth per connection for each proxy (floor: 32 KiB for pilotfish).
# Both proxies run one thread (--workers 1, nbthread 1) pinned to BENCH_PROXY_CPU; h2load
# (-t1) and nginx (one worker) share BENCH_LOAD_CPU. A bench never fails on numbers: the
# exit status is non-zero only when something could not be started.
#
# Knobs: BENCH_H2_DURATION (10s), BENCH_H2_WARMUP (2s), BENCH_H2_ROUNDS (2),
# BENCH_H2_CASES (h2c-h1,h2c-h2), BENCH_H2_IDLE (1000), BENCH_PIN (1), BENCH_PROXY_CPU (1),
# BENCH_LOAD_CPU (0). Results also go to BUILD/bench-h2.json.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import os
import re
import socket
import statistics
import subprocess
import time

from benchlib import (LOAD_CPU, PROXY_CPU, begin, copy_binaries, env_int, env_secs, fail,
                      fmt, free_ports, need, parse_h2load_log, pinned, pinning_note, run,
                      start, status_kb, stop, wait_until, workdir, write_json)

build = begin("bench-h2")
for tool in ("h2load", "haproxy", "nginx", "curl"):
    need(tool)
DUR = env_secs("BENCH_H2_DURATION", "10s")
WARM = env_secs("BENCH_H2_WARMUP", "2s")
ROUNDS = env_int("BENCH_H2_ROUNDS", 2, lo=1)
IDLE = env_int("BENCH_H2_IDLE", 1000, lo=10)
CASES = os.environ.get("BENCH_H2_CASES", "h2c-h1,h2c-h2").split(",")
for c in CASES:
    if c not in ("h2c-h1", "h2c-h2"):
        fail(f"unknown case {c!r} in BENCH_H2_CASES (h2c-h1,h2c-h2)")
CONNS, STREAMS = 16, 32
CLK = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def h2c_ok(port):
    """A request with prior knowledge answers 200."""
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "--http2-prior-knowledge", "--max-time", "2", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=10)
    return r.stdout == "200"


def start_nginx(work):
    """One nginx (one worker): two HTTP/1.1 servers and two h2c servers answering a few
    bytes. Returns (h1 ports, h2 ports)."""
    h1, h2 = free_ports(2), None
    h2 = [p for p in free_ports(4) if p not in h1][:2]
    d = os.path.join(work, "nginx")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    servers = "".join(
        f"server {{ listen 127.0.0.1:{p}{' http2' if proto == 'h2' else ''}; "
        f"location / {{ default_type text/plain; return 200 \"b{i}\\n\"; }} }}\n"
        for proto, ports in (("h1", h1), ("h2", h2)) for i, p in enumerate(ports))
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 256;
    {servers}}}
""")
    proc = start(["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                 os.path.join(d, "out.log"), LOAD_CPU)
    wait_until("nginx", lambda: all(h2c_ok(p) for p in h2), 10, proc, f"{d}/error.log")
    return h1, h2


def start_proxy(work, kind, case, ports, tag):
    port, admin = free_ports(2)
    h2up = case == "h2c-h2"
    if kind == "pilotfish":
        cfg = {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False,
               "listeners": [{"name": "bench", "address": f"127.0.0.1:{port}",
                              "routes": [{"match": {"prefix": "/"}, "cluster": "b"}]}],
               # haproxy keeps every upstream connection it opened; pilotfish keeps 64
               # idle per endpoint by default, and 512 streams in flight to HTTP/1
               # endpoints need 256 connections each: without this, pilotfish would open
               # and close connections all run long (measured: 38,000 in 4 s).
               "clusters": [{"name": "b", "protocol": "h2" if h2up else "http1",
                             "max_idle_per_endpoint": 4096,
                             "endpoints": [f"127.0.0.1:{p}" for p in ports]}]}
        path = os.path.join(work, f"{tag}.json")
        write_json(path, cfg)
        args = [os.path.join(work, "pilotfish"), "--config", path, "--workers", "1"]
    else:
        # One thread like --workers 1, no logs, pooled upstream connections shared by all
        # client streams (http-reuse always), h2c with prior knowledge on the bind line.
        proto = " proto h2" if h2up else ""
        servers = "".join(f"    server b{i} 127.0.0.1:{p}{proto}\n" for i, p in enumerate(ports))
        path = os.path.join(work, f"{tag}.cfg")
        with open(path, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn 8192
defaults
    mode http
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{port} proto h2
    default_backend b
backend b
    balance roundrobin
{servers}""")
        args = ["haproxy", "-db", "-f", path]
    log = os.path.join(work, f"{tag}.log")
    proc = start(args, log, PROXY_CPU)
    wait_until(f"{kind} ({case})", lambda: h2c_ok(port), 10, proc, log)
    return proc, port


def h2load(port, seconds, log=None, warm=0):
    cmd = ["h2load", "-t1", f"-c{CONNS}", f"-m{STREAMS}", f"-D{seconds}"]
    if warm:
        cmd.append(f"--warm-up-time={warm}")
    if log:
        cmd.append(f"--log-file={log}")
    cmd.append(f"http://127.0.0.1:{port}/")
    r = subprocess.run(pinned(LOAD_CPU, cmd), capture_output=True, text=True,
                       timeout=seconds + warm + 60)
    return r.returncode, r.stdout + r.stderr


def measure(work, kind, case, ports, rnd):
    tag = f"{kind}-{case}-{rnd}"
    proc, port = start_proxy(work, kind, case, ports, tag)
    try:
        h2load(port, WARM)  # connections, pools and allocator warmed up; not measured
        log = os.path.join(work, f"{tag}.h2load.log")
        t0 = ticks(proc.pid)
        rc, out = h2load(port, DUR, log)
        cpu = (ticks(proc.pid) - t0) / CLK
        res = parse_h2load_log(log, CONNS, DUR)
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed",
                      out)
        res.update(proxy=kind, case=case, round=rnd, proxy_cpu_s=round(cpu, 3),
                   failed=int(m.group(2)) if m else None, h2load_exit=rc,
                   req_per_cpu_s=res["requests"] / cpu if cpu > 0 and res["requests"] else None,
                   peak_rss_kb=status_kb(proc.pid, "VmHWM"))
        print(f"  {case:7s} {kind:9s} round {rnd}: {fmt(res['rps'], 0)} req/s  "
              f"p50 {fmt(res['p50_ms'], 2)} ms  p99 {fmt(res['p99_ms'], 2)} ms  "
              f"(p99 co {fmt(res['p99_co_ms'], 2)})  {fmt(res['req_per_cpu_s'], 0)} req/CPU-s  "
              f"proxy cpu {cpu:.2f}s  failed {res['failed']}  non-2xx {res['non2xx']}",
              flush=True)
        return res
    finally:
        stop(proc)


# One GET / with prior knowledge: the preface, an empty SETTINGS, the ACK of the proxy's
# SETTINGS, and HEADERS (HPACK: static :method GET, :scheme http, :path /, literal
# :authority) with END_STREAM | END_HEADERS on stream 1.
AUTH = b"b.test"
BLOCK = b"\x82\x86\x84\x41" + bytes([len(AUTH)]) + AUTH
OPEN = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
        + len(BLOCK).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + BLOCK)


def answered(buf):
    """Whether buf holds a frame ending stream 1 (the response is complete)."""
    pos = 0
    while pos + 9 <= len(buf):
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if buf[pos + 4] & 0x1 and buf[pos + 3] in (0, 1) and \
                int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7fffffff == 1:
            return True
        pos += 9 + length
    return False


def open_idle(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(OPEN)
    buf, deadline = b"", time.monotonic() + 5
    while not answered(buf) and time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            fail("a proxy closed an idle-test connection before answering")
        buf += data
    if not answered(buf):
        fail("no answer on an idle-test connection within 5 s")
    return s


def idle_memory(work, kind, ports):
    proc, port = start_proxy(work, kind, "h2c-h1", ports, f"{kind}-idle")
    try:
        warm = [open_idle(port) for _ in range(50)]  # allocator warm-up
        time.sleep(0.5)
        r0 = status_kb(proc.pid, "VmRSS")
        keep = [open_idle(port) for _ in range(IDLE)]
        time.sleep(0.5)
        per = (status_kb(proc.pid, "VmRSS") - r0) / IDLE
        for s in warm + keep:
            s.close()
        print(f"  idle    {kind:9s}: {per:.1f} KiB RSS per idle h2c connection "
              f"(after one request, {IDLE} connections)", flush=True)
        return per
    finally:
        stop(proc)


def main():
    work = workdir()
    copy_binaries(build, work, "pilotfish")
    print(f"bench-h2: h2load -t1 -c{CONNS} -m{STREAMS}, {WARM}s warm-up + {DUR}s per run, "
          f"{ROUNDS} rounds; {pinning_note('h2load and nginx')}")
    print(f"bench-h2: peer {subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.splitlines()[0]}")
    h1, h2 = start_nginx(work)
    runs = []
    for case in CASES:
        ports = h1 if case == "h2c-h1" else h2
        for rnd in range(1, ROUNDS + 1):
            for kind in ("pilotfish", "haproxy"):
                runs.append(measure(work, kind, case, ports, rnd))
    idle = {kind: idle_memory(work, kind, h1) for kind in ("pilotfish", "haproxy")}

    # Each round runs pilotfish then haproxy back to back, so a round's ratio compares the
    # two under the same load on the machine; the summary is the median of the rounds'
    # ratios (a disturbed round moves one ratio, not the verdict). The table shows each
    # proxy's median round.
    med = statistics.median
    print()
    print(f"{'case':8s} {'proxy':18s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'p99 co':>8s} {'req/CPU-s':>10s} {'failed':>7s}")
    summary = {}
    for case in CASES:
        per = {k: [r for r in runs if r["case"] == case and r["proxy"] == k]
               for k in ("pilotfish", "haproxy")}
        for kind, rs in per.items():
            m = lambda key: med([r[key] for r in rs if r[key] is not None] or [0])  # noqa: E731
            print(f"{case:8s} {kind:18s} {fmt(m('rps'), 0):>9s} {fmt(m('p50_ms'), 2):>8s} "
                  f"{fmt(m('p99_ms'), 2):>8s} {fmt(m('p99_co_ms'), 2):>8s} "
                  f"{fmt(m('req_per_cpu_s'), 0):>10s} {sum(r['failed'] or 0 for r in rs):>7d}")
        pairs = list(zip(per["pilotfish"], per["haproxy"]))
        ratio = lambda key: med([p[key] / h[key] for p, h in pairs  # noqa: E731
                                 if p[key] and h[key]] or [float("nan")])
        cpu, p99, rps = ratio("req_per_cpu_s"), ratio("p99_ms"), ratio("rps")
        summary[case] = {"req_per_cpu_s_ratio": cpu, "p99_ratio": p99, "rps_ratio": rps,
                         "rounds": [{"req_per_cpu_s": p["req_per_cpu_s"] / h["req_per_cpu_s"],
                                     "p99": p["p99_ms"] / h["p99_ms"]} for p, h in pairs
                                    if p["req_per_cpu_s"] and h["req_per_cpu_s"]
                                    and p["p99_ms"] and h["p99_ms"]]}
        print(f"{case:8s} {'pilotfish/haproxy':18s} {fmt(rps, 2) + 'x':>9s} {'':>8s} "
              f"{fmt(p99, 2) + 'x':>8s} {'':>8s} {fmt(cpu, 2) + 'x':>10s}   (median of rounds) "
              f"floors: req/CPU-s >= 1.00x {'ok' if cpu >= 1.0 else 'BELOW'}, "
              f"p99 <= 1.20x {'ok' if p99 <= 1.2 else 'ABOVE'}")
        print(f"{'':8s} {'rounds':18s} " + ", ".join(
            f"{x['req_per_cpu_s']:.2f}x cpu / {x['p99']:.2f}x p99" for x in summary[case]["rounds"]))
    print(f"idle h2c connection: pilotfish {idle['pilotfish']:.1f} KiB, haproxy "
          f"{idle['haproxy']:.1f} KiB (floor 32 KiB: "
          f"{'ok' if idle['pilotfish'] <= 32 else 'ABOVE'})")
    write_json(os.path.join(build, "bench-h2.json"),
               {"runs": runs, "idle_kib": idle, "summary": summary}, indent=2)
    print(f"results written to {os.path.join(build, 'bench-h2.json')}")


run(main)
PYEOF
