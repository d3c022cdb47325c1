#!/usr/bin/env bash
# Kubernetes discovery at scale (issue 4): pilotfish auto-discovering 1,000 Services with 10
# endpoints each from the fake API server (test/fakes/k8s_api.py), then 1,000 watch events.
#
#   bash bench/k8s.sh [BUILD_DIR]      (run.sh calls it when BENCH_CASES has "k8s")
#
# Reports:
#   initial sync   from pilotfish's start to the last of the 1,000 clusters being published
#                  with its 10 endpoints (lists of 1,000 Services and 10,000 EndpointSlices,
#                  500 per page, over TLS), and RSS (current and peak) once synced.
#                  Floors: under 2 s and under 64 MiB.
#   event -> set   for 1,000 changes (one EndpointSlice each, one after another), the time
#                  from the fake server writing the watch event to pilotfish publishing the
#                  changed endpoint set (the balancer uses it from the next request on):
#                  median and p99. Both clocks are this machine's wall clock: the fake
#                  records when it wrote each resourceVersion, pilotfish logs (debug) when it
#                  published it. Floor: p99 under 10 ms.
# No request traffic is sent: endpoints are 127.0.0.1 ports nothing listens on. A bench never
# fails on numbers; the exit status is non-zero only when something could not be started.
# Every process is stopped by PID on exit. Knobs: BENCH_K8S_SERVICES (1000),
# BENCH_K8S_ENDPOINTS (10), BENCH_K8S_CHANGES (1000). Results also go to BUILD/bench-k8s.json.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import http.client
import json
import os
import re
import statistics
import sys
import time

from benchlib import (begin, copy_binaries, env_int, fail, free_ports, need, run,
                      start, status_kb, wait_until, workdir, write_json)

BUILD = begin("bench-k8s")
need("openssl", "the fake API server makes its CA with it")
REPO = os.path.dirname(sys.argv[1])
SERVICES = env_int("BENCH_K8S_SERVICES", 1000, 1)
ENDPOINTS = env_int("BENCH_K8S_ENDPOINTS", 10, 1)
CHANGES = env_int("BENCH_K8S_CHANGES", 1000, 1)


def control(port, path, doc=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    if doc is None:
        c.request("GET", path)
    else:
        c.request("POST", path, json.dumps(doc), {"Content-Type": "application/json"})
    out = json.loads(c.getresponse().read())
    c.close()
    return out


def slice_obj(svc, k, ready=True):
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": f"{svc}-{k}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 20000 + k}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}]}


def main():
    work = workdir()
    (binary,) = copy_binaries(BUILD, work, "pilotfish")
    fake_log = os.path.join(work, "fake.out")
    fake = start([sys.executable, os.path.join(REPO, "test/fakes/k8s_api.py"),
                  "--dir", os.path.join(work, "api")], fake_log)

    def listening():
        with open(fake_log, "rb") as f:
            m = re.search(rb"https://127\.0\.0\.1:(\d+) control http://127\.0\.0\.1:(\d+)",
                          f.read())
        return (int(m.group(1)), int(m.group(2))) if m else None

    api_port, ctl = wait_until("the fake API server", listening, 30, fake, fake_log,
                               interval=0.005)
    ops = []
    for i in range(SERVICES):
        ops.append({"put": {"kind": "Service", "apiVersion": "v1",
                            "metadata": {"name": f"svc{i}", "namespace": "default"},
                            "spec": {"ports": [{"name": "http", "port": 80}]}}})
        ops += [{"put": slice_obj(f"svc{i}", k)} for k in range(ENDPOINTS)]
    control(ctl, "/apply", {"ops": ops})
    # bookmarks every 60 s, as a real API server sends them
    control(ctl, "/settings", {"bookmark_interval": 60})

    admin, listen = free_ports(2)
    api_dir = os.path.join(work, "api")
    cfg = {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False,
           "listeners": [{"name": "main", "address": f"127.0.0.1:{listen}",
                          "routes": [{"match": {"host": "none.local"}, "cluster": "none"}]}],
           "clusters": [{"name": "none", "endpoints": []}],
           "kubernetes": {"api_server": f"https://127.0.0.1:{api_port}",
                          "token_file": os.path.join(api_dir, "token"),
                          "ca_file": os.path.join(api_dir, "ca.crt"), "namespace": "default",
                          "auto_discover": {"namespaces": ["default"]}}}
    cfg_path = os.path.join(work, "pf.json")
    write_json(cfg_path, cfg)
    err_path = os.path.join(work, "pf.err")
    t0 = time.time()
    pf = start([binary, "--config", cfg_path, "--log-level", "debug"], err_path)
    pub = re.compile(rb"published cluster=(\S+) endpoints=(\d+) .*resource_version=(\d+) "
                     rb"wall_us=(\d+)")

    def publishes():
        with open(err_path, "rb") as f:
            return pub.findall(f.read())

    def synced():
        if pf.poll() is not None:
            fail(f"pilotfish exited {pf.returncode}")
        full = {}
        for name, n, _, wall in publishes():
            if int(n) == ENDPOINTS:
                full.setdefault(name, int(wall))
        return full if len(full) >= SERVICES else None

    full = wait_until(f"{SERVICES} clusters with {ENDPOINTS} endpoints", synced, 60,
                      interval=0.005)
    sync_s = max(full.values()) / 1e6 - t0
    mem = {key: status_kb(pf.pid, key) * 1024 for key in ("VmRSS", "VmHWM")}

    # 1,000 changes, one slice each, paced so that each is measured on its own
    before = len(publishes())
    sent_rvs = []
    for i in range(CHANGES):
        svc = f"svc{i % SERVICES}"
        ready = (i // SERVICES) % 2 == 1  # a second round over the Services flips back
        rv = control(ctl, "/apply", {"ops": [{"put": slice_obj(svc, 0, ready=ready)}]})
        sent_rvs.append(str(rv["resourceVersion"]))
        time.sleep(0.002)
    wait_until("every change to be published", lambda: len(publishes()) >= before + CHANGES,
               30, interval=0.005)
    sent = control(ctl, "/sent")
    published = {rv.decode(): int(wall) for _, _, rv, wall in publishes()[before:]}
    lat = sorted((published[rv] / 1e6 - sent[rv]) * 1000 for rv in sent_rvs
                 if rv in published and rv in sent)
    if not lat:
        fail("no change could be matched to its publish")
    med = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    result = {"services": SERVICES, "endpoints": SERVICES * ENDPOINTS,
              "initial_sync_s": round(sync_s, 3), "rss_bytes": mem["VmRSS"],
              "rss_peak_bytes": mem["VmHWM"], "changes": len(lat),
              "event_to_publish_ms": {"median": round(med, 3), "p99": round(p99, 3),
                                      "max": round(lat[-1], 3)}}
    write_json(os.path.join(BUILD, "bench-k8s.json"), result, indent=2)
    mib = lambda b: b / 1048576  # noqa: E731
    print(f"bench-k8s: {SERVICES} Services / {SERVICES * ENDPOINTS} endpoints")
    print(f"  initial sync     {sync_s:7.3f} s     (floor 2 s)   {'ok' if sync_s < 2 else 'OVER'}")
    rss_now, rss_peak = mib(mem["VmRSS"]), mib(mem["VmHWM"])
    print(f"  RSS after sync   {rss_now:7.1f} MiB   (peak {rss_peak:.1f} MiB; "
          f"floor 64 MiB)   {'ok' if rss_peak < 64 else 'OVER'}")
    print(f"  event -> set     median {med:.3f} ms, p99 {p99:.3f} ms, max {lat[-1]:.3f} ms over "
          f"{len(lat)} changes (floor p99 10 ms)   {'ok' if p99 < 10 else 'OVER'}")


run(main)
PYEOF
