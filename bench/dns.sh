#!/usr/bin/env bash
# DNS discovery at scale: a cluster resolving an SRV name with 500 targets (dnsmasq), against
# a cluster listing the same 500 endpoints statically, in one pilotfish (issue 3).
#
#   bash bench/dns.sh [BUILD_DIR]      (run.sh calls it when BENCH_CASES has "dns")
#
# Reports:
#   answer -> set  time from the SRV answer reaching pilotfish to the 500-endpoint set being
#                  published (parse, build, publish), at start and for record changes
#                  (dnsmasq re-reads the targets' addresses on SIGHUP), from /clusters
#   memory         pilotfish RSS with both clusters, and with the static one alone
#   req/s          wrk on the DNS cluster's listener, on the static one, and on a second
#                  listener of the static cluster (an A/A control: how far two identical
#                  runs land on this machine), rounds interleaved (who goes first rotates),
#                  best round each. Floor: DNS within 5% of static. All in one pilotfish.
# One nginx answers on 500 ports of 127.0.0.1 (the SRV targets' ports); dnsmasq serves the
# SRV records and their A records with TTL BENCH_DNS_TTL, so pilotfish keeps refreshing
# during the runs. A bench never fails on numbers: the exit status is non-zero only when
# something could not be started. Every process is stopped by PID on exit.
#
# Knobs: BENCH_DNS_TARGETS (500), BENCH_DNS_TTL (2), BENCH_DNS_DURATION (5s),
# BENCH_DNS_WARMUP (2s), BENCH_DNS_ROUNDS (3), BENCH_DNS_CHANGES (5), BENCH_CONNECTIONS
# (50), BENCH_PIN (1), BENCH_PROXY_CPU (1), BENCH_LOAD_CPU (0). Results also go to
# BUILD/bench-dns.json.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_python "$@" <<'PYEOF'
import json
import os
import signal
import statistics
import time

from benchlib import (LOAD_CPU, PROXY_CPU, begin, copy_binaries, env_int, env_secs,
                      fail, free_ports, http_get, need, parse_wrk, pilotfish_ready, pinning_note,
                      run, run_wrk, start, start_pilotfish, status_kb, stop, tail, wait_until,
                      workdir, write_json)

BUILD = begin("bench-dns")
need("wrk")
need("nginx")
need("/usr/sbin/dnsmasq", "run 'make deps': dnsmasq-base")
TARGETS = env_int("BENCH_DNS_TARGETS", 500, 1)
TTL = env_int("BENCH_DNS_TTL", 2, 1)
DURATION = env_secs("BENCH_DNS_DURATION", "5s")
WARMUP = env_secs("BENCH_DNS_WARMUP", "2s")
ROUNDS = env_int("BENCH_DNS_ROUNDS", 3, 1)
CHANGES = env_int("BENCH_DNS_CHANGES", 5, 1)
CONNS = env_int("BENCH_CONNECTIONS", 50, 1)
START_TIMEOUT = 15.0
# Short names keep the SRV answer (500 records plus 500 glue A records, ~21 KB over TCP)
# under 16 KB of offsets for the names: dnsmasq 2.90 writes broken compression pointers
# past that, which pilotfish rightly rejects as malformed.
DOMAIN = "b"
SRV_NAME = f"_http._tcp.big.{DOMAIN}"


def main():
    work = workdir()
    copy_binaries(BUILD, work, "pilotfish")
    backend_ports = free_ports(TARGETS)
    admin, admin2, lst_dns, lst_static, lst_again = free_ports(5)
    (dns_port,) = free_ports(1, udp=True)

    # ---- one nginx on every target port ----
    ndir = os.path.join(work, "nginx")
    os.makedirs(os.path.join(ndir, "tmp"))
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in backend_ports)
    with open(os.path.join(ndir, "nginx.conf"), "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {ndir}/nginx.pid;
error_log {ndir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {ndir}/tmp/body;
    proxy_temp_path {ndir}/tmp/proxy;
    fastcgi_temp_path {ndir}/tmp/fastcgi;
    uwsgi_temp_path {ndir}/tmp/uwsgi;
    scgi_temp_path {ndir}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
{listens}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
""")
    nginx = start(["nginx", "-p", ndir, "-e", f"{ndir}/error.log", "-c", f"{ndir}/nginx.conf"],
                  f"{ndir}/out.log", LOAD_CPU)
    wait_until("nginx", lambda: http_get(backend_ports[-1], "/")[0] == 200, START_TIMEOUT,
               nginx, f"{ndir}/error.log")

    # ---- dnsmasq: the SRV name, its 500 targets and their A records ----
    hosts = os.path.join(work, "hosts")

    def write_hosts(moved=None):
        with open(hosts + ".tmp", "w") as f:
            for i in range(TARGETS):
                ip = "127.0.0.2" if i == moved else "127.0.0.1"
                f.write(f"{ip} n{i}.{DOMAIN}\n")
        os.replace(hosts + ".tmp", hosts)

    write_hosts()
    conf = os.path.join(work, "dnsmasq.conf")
    with open(conf, "w") as f:
        for i, p in enumerate(backend_ports):
            f.write(f"srv-host={SRV_NAME},n{i}.{DOMAIN},{p},10,1\n")
    dlog = os.path.join(work, "dnsmasq.log")
    dnsmasq = start(["/usr/sbin/dnsmasq", "--no-daemon", f"--conf-file={conf}",
                     f"--port={dns_port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                     "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                     f"--local=/{DOMAIN}/", f"--local-ttl={TTL}", "--pid-file=",
                     "--log-facility=-"], dlog, LOAD_CPU)

    def reloads():
        return open(dlog, errors="replace").read().count(f"read {hosts} - ")

    wait_until("dnsmasq", lambda: reloads() >= 1, START_TIMEOUT, dnsmasq, dlog)

    # ---- pilotfish: the same endpoints, from SRV and listed ----
    static_eps = [f"127.0.0.1:{p}" for p in backend_ports]

    def config(clusters, admin_port):
        """Listener "static" goes to the static cluster, "dns" to the SRV one (or both to the
        one cluster there is)."""
        cl = []
        if "static" in clusters:
            cl.append({"name": "static", "endpoints": static_eps})
        if "srv" in clusters:
            cl.append({"name": "srv", "dns": {"name": SRV_NAME, "record": "SRV",
                                              "min_refresh": "1s", "max_refresh": "1m"}})
        listeners = [
            {"name": "static", "address": f"127.0.0.1:{lst_static}",
             "routes": [{"match": {"prefix": "/"}, "cluster": cl[0]["name"]}]},
            {"name": "dns", "address": f"127.0.0.1:{lst_dns}",
             "routes": [{"match": {"prefix": "/"}, "cluster": cl[-1]["name"]}]},
            {"name": "again", "address": f"127.0.0.1:{lst_again}",
             "routes": [{"match": {"prefix": "/"}, "cluster": cl[0]["name"]}]},
        ]
        return {"admin": {"address": f"127.0.0.1:{admin_port}"}, "access_log": False,
                "dns": {"resolvers": [f"127.0.0.1:{dns_port}"]},
                "listeners": listeners, "clusters": cl}

    def run_pilotfish(tag, cfg, admin_port):
        t0 = time.monotonic()
        p, log = start_pilotfish(work, tag, cfg, "--workers", "1", cpu=PROXY_CPU)
        wait_until(f"pilotfish ({tag})", pilotfish_ready(admin_port), START_TIMEOUT, p, log)
        return p, log, time.monotonic() - t0

    def dns_status():
        doc = json.loads(http_get(admin, "/clusters")[1])
        (c,) = [c for c in doc["clusters"] if c["name"] == "srv"]
        return c

    # memory: the same 500 endpoints as the only cluster, listed, then from SRV (a few
    # refreshes in), each in its own pilotfish measured the same way
    rss_alone = {}
    for tag in ("static", "srv"):
        p, _, _ = run_pilotfish(f"{tag}-only", config([tag], admin2), admin2)
        time.sleep(2 * TTL + 0.5)
        rss_alone[tag] = status_kb(p.pid, "VmRSS")
        stop(p)

    pf, pflog, ready_s = run_pilotfish("both", config(["static", "srv"], admin), admin)
    c = dns_status()
    if len(c["endpoints"]) != TARGETS:
        fail(f"the SRV cluster has {len(c['endpoints'])} endpoints, expected {TARGETS}:\n"
             f"{tail(pflog)}")
    first_us = c["dns"]["answer_to_publish_us"]
    time.sleep(0.5)
    rss_both = status_kb(pf.pid, "VmRSS")

    # ---- req/s, rounds interleaved ----
    # "again" is the static cluster once more through its own listener: the A/A pair
    # static/again shows how far apart two identical runs land on this machine.
    cases = [("dns", lst_dns), ("static", lst_static), ("again", lst_again)]
    runs = {case: [] for case, _ in cases}
    for r in range(ROUNDS):
        for case, port in cases[r % 3:] + cases[:r % 3]:  # who goes first rotates
            url = f"http://127.0.0.1:{port}/"
            if WARMUP:
                run_wrk(url, WARMUP, CONNS, cpu=LOAD_CPU)
            w = parse_wrk(run_wrk(url, DURATION, CONNS, cpu=LOAD_CPU)[1])
            runs[case].append({"round": r + 1, "rps": w["rps"] or 0.0, "p99_ms": w["p99_ms"],
                               "errors": w["socket_errors"] + w["non2xx"]})
    if pf.poll() is not None:
        fail(f"pilotfish exited during the runs:\n{tail(pflog)}")
    publishes_during_runs = dns_status()["dns"]["publishes"]
    rss_after_runs = status_kb(pf.pid, "VmRSS")

    # ---- answer -> published set for changes ----
    change_us = []
    for k in range(CHANGES):
        before = dns_status()["dns"]["publishes"]
        n0 = reloads()
        write_hosts(moved=k % TARGETS)
        os.kill(dnsmasq.pid, signal.SIGHUP)
        deadline = time.monotonic() + 2 * TTL + 10
        while reloads() == n0 and time.monotonic() < deadline:
            time.sleep(0.02)
        while dns_status()["dns"]["publishes"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        st = dns_status()["dns"]
        if st["publishes"] == before:
            fail(f"record change {k + 1} was not published within {2 * TTL + 10}s")
        change_us.append(st["answer_to_publish_us"])
    rss_after = status_kb(pf.pid, "VmRSS")
    stop(pf)

    best = {case: max(rs, key=lambda x: x["rps"]) for case, rs in runs.items()}
    ratio = best["dns"]["rps"] / best["static"]["rps"] if best["static"]["rps"] else 0.0
    noise = best["again"]["rps"] / best["static"]["rps"] if best["static"]["rps"] else 0.0
    median = {case: statistics.median(x["rps"] for x in rs) for case, rs in runs.items()}
    median_ratio = median["dns"] / median["static"] if median["static"] else 0.0
    result = {
        "targets": TARGETS,
        "ttl_s": TTL,
        "ready_s": round(ready_s, 3),
        "answer_to_publish_us": {"first": first_us, "changes": change_us,
                                 "changes_median": statistics.median(change_us)},
        "rss_kib": {"static_alone": rss_alone["static"], "srv_alone": rss_alone["srv"],
                    "dns_cost": rss_alone["srv"] - rss_alone["static"], "both": rss_both,
                    "after_runs": rss_after_runs, "after_changes": rss_after},
        "publishes_during_runs": publishes_during_runs,
        "runs": runs,
        "best": best,
        "dns_vs_static": round(ratio, 4),
        "again_vs_static": round(noise, 4),
        "median_rps": median,
        "dns_vs_static_median": round(median_ratio, 4),
        "floor_met": ratio >= 0.95,
        "pinning": pinning_note("wrk+nginx+dnsmasq"),
        "wrk": f"-t1 -c{CONNS} {WARMUP}s warm-up + {DURATION}s, {ROUNDS} rounds, best round",
    }
    write_json(os.path.join(BUILD, "bench-dns.json"), result, indent=2)

    print(f"bench-dns: SRV name with {TARGETS} targets (dnsmasq, TTL {TTL}s); "
          f"{result['pinning']}; wrk {result['wrk']}")
    print(f"  answer -> published set: first {first_us / 1000:.2f} ms, record changes median "
          f"{result['answer_to_publish_us']['changes_median'] / 1000:.2f} ms "
          f"(of {len(change_us)}: {', '.join(f'{u / 1000:.2f}' for u in change_us)} ms)")
    cost = rss_alone["srv"] - rss_alone["static"]
    print(f"  memory (RSS, alone): {TARGETS} static endpoints {rss_alone['static'] / 1024:.1f} "
          f"MiB, the same from SRV {rss_alone['srv'] / 1024:.1f} MiB ({cost:+d} KiB); both "
          f"clusters {rss_both / 1024:.1f} MiB, after the runs {rss_after_runs / 1024:.1f} MiB "
          f"(upstream pools), after {CHANGES} record changes {rss_after / 1024:.1f} MiB")
    print(f"  {'cluster':<10} {'req/s':>10} {'median':>8} {'p99 ms':>8} {'errors':>7}   rounds")
    for case in ("dns", "static", "again"):
        b = best[case]
        p99 = f"{b['p99_ms']:.2f}" if b["p99_ms"] is not None else "-"
        rounds = ", ".join(f"{x['rps']:.0f}" for x in runs[case])
        errs = sum(x["errors"] for x in runs[case])
        print(f"  {case:<10} {b['rps']:>10.0f} {median[case]:>8.0f} {p99:>8} {errs:>7}   {rounds}")
    verdict = "met" if result["floor_met"] else "NOT met"
    print(f"  dns/static req/s: {ratio:.3f} best, {median_ratio:.3f} median (floor 0.95 on best: "
          f"{verdict}); A/A again/static: {noise:.3f} (the noise of this machine)")
    print(f"  SRV set publishes during the runs: {publishes_during_runs} (refreshes with the same "
          f"records publish nothing)")
    print(f"  results: {os.path.join(BUILD, 'bench-dns.json')}")


run(main)
PYEOF
