#!/usr/bin/env bash
# Service churn through one on_demand sidecar (issue 17): S distinct Services are created in
# the fake API server (test/fakes/k8s_api.py), used, deleted and let go (idle_timeout small),
# a batch at a time, the next batch created while the current one is used. Every few
# thousand Services the load pauses past idle_timeout, so the namespace goes from watches
# per Service to one namespace-wide watch (max_watches_per_namespace) and back, again and
# again. At the end the sidecar must still route a new Service, and hold no discovered
# cluster and no watch once everything went idle.
#
#   bash bench/ondemand_churn.sh [BUILD_DIR]  (run.sh calls it when BENCH_CASES has "churn")
#
# Reports, at each tenth of the run: Services processed, Services/s, pilotfish's RSS,
# discovered clusters (slots) in use, watches open at the fake, failed requests; then RSS
# at start/middle/end, namespace-watch switches, and lists the fake served.
# Knobs: BENCH_CHURN_SERVICES (20000), BENCH_CHURN_BATCH (50), BENCH_CHURN_REQUESTS (2 per
# Service), BENCH_CHURN_IDLE (3s: idle_timeout and negative_ttl), BENCH_CHURN_PAUSE_EVERY
# (4000 Services), BENCH_CHURN_MAX_WATCHES (32), BENCH_CHURN_TIME_LIMIT (900 s: the run
# stops there and reports what it did). Results also go to BUILD/bench-churn.json. A bench
# never fails on numbers; every process is stopped by PID on exit.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import http.client
import json
import os
import re
import sys
import time

from benchlib import (begin, copy_binaries, env_int, fail, free_ports, http_get,
                      need, run, start, start_backend, status_kb, wait_until, workdir,
                      write_json)

BUILD = begin("bench-churn")
need("openssl", "the fake API server makes its CA with it")
REPO = os.path.dirname(sys.argv[1])
SERVICES = env_int("BENCH_CHURN_SERVICES", 20000, 1)
BATCH = env_int("BENCH_CHURN_BATCH", 50, 1)
REQUESTS = env_int("BENCH_CHURN_REQUESTS", 2, 1)
IDLE = os.environ.get("BENCH_CHURN_IDLE", "3s")
PAUSE_EVERY = env_int("BENCH_CHURN_PAUSE_EVERY", 4000, 1)
MAX_WATCHES = env_int("BENCH_CHURN_MAX_WATCHES", 32, 1)
TIME_LIMIT = env_int("BENCH_CHURN_TIME_LIMIT", 900, 10)
if not re.fullmatch(r"\d+(ms|s)", IDLE):
    fail(f"BENCH_CHURN_IDLE must be like 1s or 500ms, got {IDLE!r}")
IDLE_S = int(IDLE[:-2]) / 1000 if IDLE.endswith("ms") else int(IDLE[:-1])


def say(msg):
    print(f"churn: {msg}", flush=True)


def control(port, path, doc=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        if doc is None:
            c.request("GET", path)
        else:
            c.request("POST", path, json.dumps(doc), {"Content-Type": "application/json"})
        return json.loads(c.getresponse().read())
    finally:
        c.close()


class Client:
    """Keep-alive requests to pilotfish's listener, reconnecting when it closes."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, host):
        for _ in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("GET", "/", headers={"Host": host})
                r = self.conn.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return 0


def service_ops(name, port):
    return [{"put": {"kind": "Service", "apiVersion": "v1",
                     "metadata": {"name": name, "namespace": "default"},
                     "spec": {"ports": [{"name": "http", "port": 80}]}}},
            {"put": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                     "metadata": {"name": f"{name}-1", "namespace": "default",
                                  "labels": {"kubernetes.io/service-name": name}},
                     "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
                     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}}]


def delete_ops(name):
    return [{"delete": ["services", "default", name]},
            {"delete": ["endpointslices", "default", f"{name}-1"]}]


def main():
    work = workdir()
    binary, _ = copy_binaries(BUILD, work, "pilotfish", "pf-backend")
    _, backend = start_backend(work, "b1")
    fake_dir = os.path.join(work, "api")
    fake_log = os.path.join(work, "fake.out")
    fake = start([sys.executable, os.path.join(REPO, "test/fakes/k8s_api.py"), "--dir",
                  fake_dir], fake_log)

    def listening():
        with open(fake_log, "rb") as f:
            m = re.search(rb"https://127\.0\.0\.1:(\d+) control http://127\.0\.0\.1:(\d+)",
                          f.read())
        return (int(m.group(1)), int(m.group(2))) if m else None

    api, ctl = wait_until("the fake API server", listening, 30, fake, fake_log, interval=0.01)
    # etcd compacts its history; the fake keeps the last 20,000 events (a watch that falls
    # behind gets its 410 as from the API)
    control(ctl, "/settings", {"max_log": 20000, "bookmark_interval": 5})
    admin, listen = free_ports(2)
    cfg = {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False, "workers": 1,
           "listeners": [{"name": "main", "address": f"127.0.0.1:{listen}",
                          "routes": [{"match": {"host": "none.local"}, "cluster": "none"}]}],
           "clusters": [{"name": "none", "endpoints": []}],
           "kubernetes": {"api_server": f"https://127.0.0.1:{api}",
                          "token_file": os.path.join(fake_dir, "token"),
                          "ca_file": os.path.join(fake_dir, "ca.crt"), "namespace": "default",
                          "auto_discover": {"namespaces": ["default"], "mode": "on_demand",
                                            "idle_timeout": IDLE, "negative_ttl": IDLE,
                                            "max_watches_per_namespace": MAX_WATCHES}}}
    path = os.path.join(work, "pf.json")
    write_json(path, cfg)
    pf_log = os.path.join(work, "pf.log")
    pf = start([binary, "--config", path], pf_log)
    wait_until("pilotfish ready", lambda: http_get(admin, "/ready", 1.0)[0] == 200, 30, pf,
               pf_log)
    client = Client(listen)

    def slots():
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        try:
            c.request("GET", "/clusters")
            doc = json.loads(c.getresponse().read())
        finally:
            c.close()
        return sum(1 for x in doc["clusters"] if x.get("source") == "kubernetes")

    def watches():
        return control(ctl, "/state")["watches_open"].get("default", 0)

    series_start = len(http_get(admin, "/stats/prometheus", 10.0)[1].splitlines())
    names = [f"s{i}" for i in range(SERVICES)]
    batches = [names[i:i + BATCH] for i in range(0, SERVICES, BATCH)]
    control(ctl, "/apply", {"ops": [op for n in batches[0] for op in service_ops(n, backend)]})
    failed = ok = done = 0
    lists = 0
    samples = []
    peak_watches = 0
    t0 = time.monotonic()
    next_sample = 0
    next_pause = PAUSE_EVERY
    rss_start = None
    stopped_early = False
    for bi, batch in enumerate(batches):
        if time.monotonic() - t0 > TIME_LIMIT:
            stopped_early = True
            break
        if bi + 1 < len(batches):  # the next batch exists before it is used
            control(ctl, "/apply", {"ops": [op for n in batches[bi + 1]
                                            for op in service_ops(n, backend)]})
        for _ in range(REQUESTS):
            for n in batch:
                if client.get(f"{n}.default") == 200:
                    ok += 1
                else:
                    failed += 1
        sampling = done + len(batch) >= next_sample or bi + 1 == len(batches)
        in_use = slots() if sampling else None  # before this batch's Services are deleted
        control(ctl, "/apply", {"ops": [op for n in batch for op in delete_ops(n)]})
        done += len(batch)
        peak_watches = max(peak_watches, watches())
        if sampling:
            reqs = control(ctl, "/requests")
            lists += sum(1 for r in reqs if r["verb"] == "list")
            control(ctl, "/requests/clear", {})
            el = time.monotonic() - t0
            s = {"services": done, "seconds": round(el, 1), "per_s": round(done / el, 1),
                 "rss_kib": status_kb(pf.pid, "VmRSS"), "slots": in_use, "watches": watches(),
                 "failed": failed, "fake_rss_kib": status_kb(fake.pid, "VmRSS")}
            if rss_start is None:
                rss_start = s["rss_kib"]
            samples.append(s)
            say(f"{done:6d} services {s['per_s']:7.1f}/s rss {s['rss_kib'] / 1024:6.1f} MiB "
                f"slots {s['slots']:4d} watches {s['watches']:3d} failed {failed} "
                f"(fake {s['fake_rss_kib'] / 1024:.0f} MiB)")
            next_sample += max(BATCH, SERVICES // 10)
        if done >= next_pause:
            next_pause += PAUSE_EVERY
            time.sleep(IDLE_S * 3)  # everything goes idle: back to watches per Service
    elapsed = time.monotonic() - t0
    # the end: everything let go, then one more Service still routes
    idle_ok = wait_until("every Service let go", lambda: slots() == 0 and watches() == 0,
                         60, pf, pf_log, give_up=False)
    series_end = len(http_get(admin, "/stats/prometheus", 10.0)[1].splitlines())
    control(ctl, "/apply", {"ops": service_ops("last", backend)})
    last = client.get("last.default")
    with open(pf_log, errors="replace") as f:
        log = f.read()
    switches = log.count("listing it whole")
    backs = log.count("back to watches per service")
    rss_mid = samples[len(samples) // 2]["rss_kib"] if samples else None
    rss_end = status_kb(pf.pid, "VmRSS")
    doc = {"services": done, "seconds": round(elapsed, 1), "services_per_s": round(done / elapsed, 1),
           "requests_ok": ok, "requests_failed": failed, "peak_watches": peak_watches,
           "rss_kib": {"start": rss_start, "middle": rss_mid, "end": rss_end},
           "namespace_watch_switches": switches, "back_to_scoped": backs, "lists": lists,
           "all_idle_at_end": bool(idle_ok), "new_service_after": last,
           "stopped_at_time_limit": stopped_early, "metric_lines": [series_start, series_end],
           "samples": samples}
    write_json(os.path.join(BUILD, "bench-churn.json"), doc, indent=1)
    say(f"{done} Services in {elapsed:.0f} s ({done / elapsed:.1f}/s); requests ok {ok} failed "
        f"{failed}; RSS start/middle/end {rss_start / 1024:.1f}/{rss_mid / 1024:.1f}/"
        f"{rss_end / 1024:.1f} MiB; watches peak {peak_watches}; namespace watch started "
        f"{switches}x, left {backs}x; lists {lists}; all idle at the end: {bool(idle_ok)}; "
        f"a new Service after: {last}; metric lines {series_start} -> {series_end}" + ("; STOPPED AT THE TIME LIMIT" if stopped_early else ""))


run(main)
PYEOF
