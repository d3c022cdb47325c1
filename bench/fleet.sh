#!/usr/bin/env bash
# A fleet of sidecars against one API server (issue 17): N pilotfish processes auto-discover
# from the fake API server (test/fakes/k8s_api.py) holding S Services with E endpoints each
# (one EndpointSlice per endpoint), each sidecar's application using U of them; once with
# auto_discover.mode on_demand and once with watch_all.
#
#   bash bench/fleet.sh [BUILD_DIR]    (run.sh calls it when BENCH_CASES has "fleet")
#
# Reports, per mode:
#   first request  time to the first byte of each sidecar's first request to each of its U
#                  Services (on_demand: the list+watch of that Service included), p50/p99;
#                  and of the 2nd..Uth Services alone (the API connection already open)
#   watches, lists open watch streams and list requests at the API server, per sidecar
#   connections    TLS connections open at the API server per sidecar, and HTTP/2 streams
#                  (kubernetes.http2: every list and watch a stream of one connection)
#   bytes/min      bytes the API server streamed per sidecar and minute while 10 endpoint
#                  changes per second (knob) went on across the cluster
#   RSS            per sidecar, average and largest, once synced and used; with PSS and
#                  anonymous memory (smaps_rollup): RSS counts shared library pages in full
#   restart        the API server stopped and started again, first keeping its history (as
#                  etcd does: watches resume from their resourceVersion), then having lost it
#                  (every watch gets 410 and relists): the most list requests it received in
#                  one second, the time until every sidecar watched again, and application
#                  requests that failed meanwhile (each sidecar keeps asking its U Services)
# Knobs: BENCH_FLEET_N (100), BENCH_FLEET_SERVICES (2000), BENCH_FLEET_ENDPOINTS (5),
# BENCH_FLEET_USED (5), BENCH_FLEET_CHURN (10 changes/s), BENCH_FLEET_CHURN_SECONDS (20),
# BENCH_FLEET_MODES (on_demand,watch_all), BENCH_FLEET_WATCH_ALL_N (10: one Python fake
# cannot serve full lists to 100 sidecars at once), BENCH_FLEET_HTTP2 (1; 0: the sidecars
# set kubernetes.http2 false and use HTTP/1.1, one connection per watch). Results also go to BUILD/bench-fleet.json. A
# bench never fails on numbers; every process is stopped by PID on exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)

exec "$PY" - "$HERE" "$@" <<'PYEOF'
import http.client
import json
import os
import random
import re
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
from benchlib import (begin, copy_binaries, env_int, fail, free_ports, need, proc_kb,  # noqa: E402
                      run, start, start_backend, status_kb, stop, wait_until, workdir,
                      write_json)


BUILD = begin("bench-fleet")
need("openssl", "the fake API server makes its CA with it")
REPO = os.path.dirname(sys.argv[1])
N = env_int("BENCH_FLEET_N", 100, 1)
SERVICES = env_int("BENCH_FLEET_SERVICES", 2000, 1)
ENDPOINTS = env_int("BENCH_FLEET_ENDPOINTS", 5, 1)
USED = env_int("BENCH_FLEET_USED", 5, 1)
CHURN = env_int("BENCH_FLEET_CHURN", 10, 0)
CHURN_S = env_int("BENCH_FLEET_CHURN_SECONDS", 20, 1)
MODES = os.environ.get("BENCH_FLEET_MODES", "on_demand,watch_all").split(",")
# watch_all has every sidecar list all S Services and S*E slices: one Python fake serves that
# to 10 sidecars at once, not to 100 (its lists time out); the figures are per sidecar.
N_WATCH_ALL = env_int("BENCH_FLEET_WATCH_ALL_N", min(N, 10), 1)
HTTP2 = env_int("BENCH_FLEET_HTTP2", 1, 0) != 0


def control(port, path, doc=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    if doc is None:
        c.request("GET", path)
    else:
        c.request("POST", path, json.dumps(doc), {"Content-Type": "application/json"})
    out = json.loads(c.getresponse().read())
    c.close()
    return out


def get(port, host, timeout=5.0):
    """(status, seconds to the first byte of the response) of GET / with Host: host."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        t0 = time.monotonic()
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        first = s.recv(1)
        ttfb = time.monotonic() - t0
        data = first
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        m = re.match(rb"HTTP/1\.1 (\d{3})", data)
        return (int(m.group(1)) if m else 0), ttfb
    except OSError:
        return 0, None
    finally:
        s.close()


def say(msg):
    print(f"fleet: {msg}", flush=True)


def pct(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(round(p / 100 * (len(vals) - 1))))] if vals else None


class Fake:
    def __init__(self, work):
        self.dir = os.path.join(work, "api")
        self.state = os.path.join(work, "api-state.json")
        self.log = os.path.join(work, "fake.out")
        self.api = self.ctl = None
        self.proc = None

    def start(self, forget=False):
        args = [sys.executable, os.path.join(REPO, "test/fakes/k8s_api.py"), "--dir", self.dir,
                "--state", self.state]
        if self.api:
            args += ["--port", str(self.api), "--control-port", str(self.ctl)]
        if forget:
            args.append("--forget-history")
        open(self.log, "w").close()
        self.proc = start(args, self.log)

        def listening():
            with open(self.log, "rb") as f:
                m = re.search(rb"https://127\.0\.0\.1:(\d+) control http://127\.0\.0\.1:(\d+)",
                              f.read())
            return (int(m.group(1)), int(m.group(2))) if m else None

        self.api, self.ctl = wait_until("the fake API server", listening, 30, self.proc,
                                        self.log, interval=0.01)

    def stop(self):
        stop(self.proc, grace=60)  # SIGTERM: it saves its objects first


def slice_obj(svc, k, port, ready=True):
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": f"{svc}-{k}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}]}


def fleet_round(work, binary, mode, backends):
    global N
    N = N_WATCH_ALL if mode == "watch_all" else env_int("BENCH_FLEET_N", 100, 1)
    fake = Fake(os.path.join(work, mode))
    os.makedirs(os.path.join(work, mode))
    fake.start()
    ops = []
    for i in range(SERVICES):
        ops.append({"put": {"kind": "Service", "apiVersion": "v1",
                            "metadata": {"name": f"svc{i}", "namespace": "default"},
                            "spec": {"ports": [{"name": "http", "port": 80}]}}})
        ops += [{"put": slice_obj(f"svc{i}", k, backends[k % len(backends)])}
                for k in range(ENDPOINTS)]
    for at in range(0, len(ops), 5000):
        control(fake.ctl, "/apply", {"ops": ops[at:at + 5000]})
    control(fake.ctl, "/settings", {"bookmark_interval": 60})
    control(fake.ctl, "/requests/clear", {})
    used = {i: [f"svc{(i * USED + j) % SERVICES}.default" for j in range(USED)] for i in range(N)}
    sidecars = []
    ports = free_ports(2 * N)
    for i in range(N):
        admin, listen = ports[2 * i], ports[2 * i + 1]
        cfg = {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False, "workers": 1,
               "listeners": [{"name": "main", "address": f"127.0.0.1:{listen}",
                              "routes": [{"match": {"host": "none.local"}, "cluster": "none"}]}],
               "clusters": [{"name": "none", "endpoints": []}],
               "kubernetes": {"api_server": f"https://127.0.0.1:{fake.api}",
                              "token_file": os.path.join(fake.dir, "token"),
                              "ca_file": os.path.join(fake.dir, "ca.crt"), "namespace": "default",
                              "http2": HTTP2,
                              "auto_discover": {"namespaces": ["default"], "mode": mode}}}
        path = os.path.join(work, mode, f"pf{i}.json")
        write_json(path, cfg)
        proc = start([binary, "--config", path], os.path.join(work, mode, f"pf{i}.log"))
        sidecars.append((proc, admin, listen))

    def ready(admin):
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        try:
            c.request("GET", "/ready")
            return c.getresponse().status == 200
        except OSError:
            return False
        finally:
            c.close()

    t0 = time.monotonic()
    for proc, admin, _ in sidecars:
        wait_until(f"sidecar on admin {admin} to be ready", lambda: ready(admin), 600, proc,
                   interval=0.05)
    ready_s = time.monotonic() - t0
    say(f"{mode}: {N} sidecars ready in {ready_s:.1f} s")
    first = []
    later = []  # a sidecar's 2nd..Uth Service: its API connection is open (on HTTP/2, reused)
    failed_first = 0
    for i, (_, _, listen) in enumerate(sidecars):
        for j, host in enumerate(used[i]):
            status, ttfb = get(listen, host)
            if status == 200:
                first.append(ttfb)
                if j:
                    later.append(ttfb)
            else:
                failed_first += 1
    expected_watches = N * USED * 2 if mode == "on_demand" else N * 2
    wait_until("every watch to be open", lambda: control(fake.ctl, "/state")["watchers"] >=
               expected_watches, 120, interval=0.1)
    reqs = control(fake.ctl, "/requests")
    lists = sum(1 for r in reqs if r["verb"] == "list")
    st = control(fake.ctl, "/state")
    watchers = st["watchers"]
    conns_open = sum(st["connections_open"].values())
    streams_open = st["streams_open"]
    rss = [status_kb(p.pid, "VmRSS") * 1024 for p, _, _ in sidecars]
    pss = [proc_kb(p.pid, "smaps_rollup", "Pss") * 1024 for p, _, _ in sidecars]
    anon = [proc_kb(p.pid, "smaps_rollup", "Anonymous") * 1024 for p, _, _ in sidecars]

    # churn: endpoint readiness flips across the cluster, CHURN a second
    say(f"{mode}: first requests done, {watchers} watches open; churn for {CHURN_S} s")
    b0 = control(fake.ctl, "/state")["bytes_sent"]
    t_churn = time.monotonic()
    rng = random.Random(17)
    n = 0
    while time.monotonic() - t_churn < CHURN_S:
        i = rng.randrange(SERVICES)
        k = rng.randrange(ENDPOINTS)
        control(fake.ctl, "/apply", {"ops": [{"put": slice_obj(
            f"svc{i}", k, backends[k % len(backends)], ready=(n // SERVICES) % 2 == 1 or
            rng.random() < 0.5)}]})
        n += 1
        next_at = t_churn + n / CHURN if CHURN else time.monotonic() + CHURN_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    churn_s = time.monotonic() - t_churn
    # the changes are in the streams once every watcher wrote them: a moment's grace
    time.sleep(1.0)
    bytes_min = (control(fake.ctl, "/state")["bytes_sent"] - b0) / (churn_s + 1.0) * 60 / N

    # restarts, history kept then lost; meanwhile each sidecar keeps asking its Services
    stop_load = threading.Event()
    outcomes = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def load(idx):
        _, _, listen = sidecars[idx]
        j = 0
        while not stop_load.is_set():
            status, _ = get(listen, used[idx][j % USED], timeout=10)
            with lock:
                outcomes["ok" if status == 200 else "failed"] += 1
            j += 1
            time.sleep(0.2)

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(N)]
    for t in threads:
        t.start()
    time.sleep(1.0)

    def restart(forget):
        say(f"{mode}: restarting the API server {'without' if forget else 'with'} its history")
        fake.stop()
        down_at = time.time()
        time.sleep(2.0)  # the outage
        fake.start(forget=forget)
        up_at = time.time()
        resynced = wait_until("every sidecar to watch again", lambda: control(
            fake.ctl, "/state")["watchers"] >= expected_watches, 300, interval=0.1, give_up=False)
        resync_s = time.time() - up_at if resynced else None
        time.sleep(1.0)
        lists = [r for r in control(fake.ctl, "/requests") if r["verb"] == "list"]
        per_second = {}
        for r in lists:
            per_second[int(r["time"] - up_at)] = per_second.get(int(r["time"] - up_at), 0) + 1
        return up_at - down_at, resync_s, lists, per_second

    _, kept_resync_s, kept_lists, kept_per_second = restart(False)
    outage_s, resync_s, after, per_second = restart(True)
    stop_load.set()
    for t in threads:
        t.join(timeout=15)
    for proc, _, _ in sidecars:
        stop(proc)
    fake.stop()
    return {
        "mode": mode, "sidecars": N, "ready_s": round(ready_s, 2),
        "first_request_p50_ms": round(pct(first, 50) * 1000, 1) if first else None,
        "first_request_p99_ms": round(pct(first, 99) * 1000, 1) if first else None,
        "first_requests_failed": failed_first,
        "later_service_p50_ms": round(pct(later, 50) * 1000, 1) if later else None,
        "later_service_p99_ms": round(pct(later, 99) * 1000, 1) if later else None,
        "http2": HTTP2,
        "watches_per_sidecar": round(watchers / N, 2),
        "connections_per_sidecar": round(conns_open / N, 2),
        "streams_per_sidecar": round(streams_open / N, 2),
        "lists_per_sidecar": round(lists / N, 2),
        "bytes_per_sidecar_per_min": int(bytes_min),
        "rss_avg_mib": round(statistics.mean(rss) / 2**20, 2),
        "rss_max_mib": round(max(rss) / 2**20, 2),
        "pss_avg_mib": round(statistics.mean(pss) / 2**20, 2),
        "anon_avg_mib": round(statistics.mean(anon) / 2**20, 2),
        "restart_kept_peak_lists_per_s": max(kept_per_second.values()) if kept_per_second else 0,
        "restart_kept_lists": len(kept_lists),
        "restart_kept_resync_s": round(kept_resync_s, 2) if kept_resync_s is not None else None,
        "restart_peak_lists_per_s": max(per_second.values()) if per_second else 0,
        "restart_lists": len(after),
        "restart_resync_s": round(resync_s, 2) if resync_s is not None else None,
        "restart_outage_s": round(outage_s, 2),
        "restart_lists_by_second": [per_second.get(t, 0) for t in range(max(per_second) + 1)]
        if per_second else [],
        "restart_requests_ok": outcomes["ok"], "restart_requests_failed": outcomes["failed"],
    }


def main():
    work = workdir()
    binary, _ = copy_binaries(BUILD, work, "pilotfish", "pf-backend")
    backends = [start_backend(work, f"b{k}")[1] for k in range(ENDPOINTS)]
    results = []
    for m in MODES:
        results.append(fleet_round(work, binary, m, backends))
        say(json.dumps(results[-1]))
        write_json(os.path.join(BUILD, "bench-fleet.json"), results, indent=2)
    rows = [("first request p50 / p99 (ms)", lambda r: f"{r['first_request_p50_ms']} / "
             f"{r['first_request_p99_ms']}"),
            ("  of a sidecar's 2nd..Uth Service (ms)", lambda r: f"{r['later_service_p50_ms']} / "
             f"{r['later_service_p99_ms']}"),
            ("sidecars", lambda r: r["sidecars"]),
            ("watches per sidecar", lambda r: r["watches_per_sidecar"]),
            ("API connections / h2 streams per sidecar", lambda r:
             f"{r['connections_per_sidecar']} / {r['streams_per_sidecar']}"),
            ("list requests per sidecar (start)", lambda r: r["lists_per_sidecar"]),
            ("bytes per sidecar per minute (churn)", lambda r: r["bytes_per_sidecar_per_min"]),
            ("RSS per sidecar avg / max (MiB)", lambda r: f"{r['rss_avg_mib']} / "
             f"{r['rss_max_mib']}"),
            ("PSS / anonymous per sidecar avg (MiB)", lambda r: f"{r['pss_avg_mib']} / "
             f"{r['anon_avg_mib']}"),
            ("restart, history kept: peak lists/s / all", lambda r:
             f"{r['restart_kept_peak_lists_per_s']} / {r['restart_kept_lists']}"),
            ("restart, history kept: all watching (s)", lambda r: r["restart_kept_resync_s"]),
            ("restart, history lost: peak lists/s / all", lambda r:
             f"{r['restart_peak_lists_per_s']} / {r['restart_lists']}"),
            ("restart, history lost: all watching (s)", lambda r: r["restart_resync_s"]),
            ("both restarts: app requests failed / ok", lambda r:
             f"{r['restart_requests_failed']} / {r['restart_requests_ok']}")]
    print(f"fleet: {', '.join(str(r['sidecars']) + ' ' + r['mode'] for r in results)} "
          f"sidecars, kubernetes.http2 {'on' if HTTP2 else 'off'}; {SERVICES} Services x {ENDPOINTS} endpoints, each using {USED}; "
          f"churn {CHURN}/s for {CHURN_S} s")
    print(f"| {'':42} | " + " | ".join(f"{r['mode']:>14}" for r in results) + " |")
    for name, fn in rows:
        print(f"| {name:42} | " + " | ".join(f"{str(fn(r)):>14}" for r in results) + " |")


run(main)
PYEOF
