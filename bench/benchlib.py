#!/usr/bin/env python3
"""Helpers for the benchmarks in bench/ (stdlib only).

run.sh calls it as a program, with these subcommands:
  procstat PGID            print "cpu_ticks vmhwm_kb vmrss_kb nprocs" summed over the
                           process group PGID plus every descendant of PID PGID.
                           Summing over the tree keeps the numbers right even when a
                           proxy forks worker processes.
  record   [options]       parse one wrk output file, append one JSON line to the runs
                           file and print a one-line progress summary.
  report   [options]       aggregate the runs file: print the table and summary line,
                           write the JSON results file.
  free-port                print a TCP port that is free on 127.0.0.1.

dns.sh, k8s.sh, policies.sh, failover.sh and health.sh import it: their Python programs
keep what is specific to their case and take the rest from the last section below
(knobs, processes, readiness, wrk, pinning).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "test", "integration"))
import ports as _ports  # noqa: E402

# ---------------------------------------------------------------- /proc sampling


def _read_stat(pid):
    """(ppid, pgrp, utime+stime+cutime+cstime) of one pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N-3].
    ppid, pgrp = int(rest[1]), int(rest[2])
    # utime, stime, cutime, cstime = fields 14..17. cutime/cstime are included so that
    # a worker process that exits and is reaped during a run is not lost from the delta.
    ticks = sum(int(x) for x in rest[11:15])
    return ppid, pgrp, ticks


def proc_kb(pid, name, key):
    """The kB figure of line `key` in /proc/PID/NAME (status: VmRSS, VmHWM; smaps_rollup: Pss,
    Anonymous); 0 when it is missing."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kb(pid, key):
    """The kB figure of line `key` (VmRSS, VmHWM) in /proc/PID/status; 0 when it is missing."""
    return proc_kb(pid, "status", key)


def proc_tree(root):
    """Pids of the process group `root` and all descendants of pid `root`."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st:
                stats[int(name)] = st
    members = {p for p, (_, pgrp, _) in stats.items() if pgrp == root}
    if root in stats:
        members.add(root)
    changed = True
    while changed:  # close over the parent->child relation
        changed = False
        for p, (ppid, _, _) in stats.items():
            if ppid in members and p not in members:
                members.add(p)
                changed = True
    return {p: stats[p] for p in members}


def cmd_procstat(args):
    tree = proc_tree(args.pgid)
    ticks = sum(st[2] for st in tree.values())
    hwm = sum(status_kb(p, "VmHWM") for p in tree)
    rss = sum(status_kb(p, "VmRSS") for p in tree)
    print(ticks, hwm, rss, len(tree))


# ---------------------------------------------------------------- wrk parsing

_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _TIME_UNITS[m.group(2)] if m else None


def parse_wrk(text):
    """Extract the numbers we need from `wrk --latency` output; missing -> None."""
    out = {"requests": None, "seconds": None, "rps": None, "p50_ms": None,
           "p75_ms": None, "p90_ms": None, "p99_ms": None,
           "socket_errors": 0, "non2xx": 0}
    for pct, key in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+" + pct + r"(?:\.0+)?%\s+(\S+)\s*$", text, re.M)
        if m:
            out[key] = _to_ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = _to_ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
        out["socket_detail"] = dict(zip(("connect", "read", "write", "timeout"),
                                        (int(x) for x in m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def parse_h2load_log(path, connections, seconds):
    """Per-request figures from `h2load --log-file` (one line per request: start time in
    microseconds, status, latency in microseconds).

    p50_ms/p99_ms are plain per-request percentiles. p99_co_ms is what wrk would print for
    the same requests: wrk corrects for coordinated omission by adding, for every sample
    longer than twice the mean interval between requests on one connection, synthetic
    samples at that sample minus 1, 2, ... intervals. With a few slow answers among many
    fast ones that correction alone decides the p99 (each 10x-slow answer counts about
    ten times), so both are reported and the per-request figure is the one compared."""
    latencies, non2xx = [], 0
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3:
                    continue
                latencies.append(int(parts[2]))
                if not parts[1].startswith("2"):
                    non2xx += 1
    except OSError:
        pass
    out = {"requests": len(latencies), "seconds": seconds,
           "rps": len(latencies) / seconds if seconds else None, "non2xx": non2xx,
           "socket_errors": 0, "p50_ms": None, "p99_ms": None, "p99_co_ms": None}
    if not latencies:
        return out
    latencies.sort()
    out["p50_ms"] = _rank(latencies, 50) / 1000.0
    out["p99_ms"] = _rank(latencies, 99) / 1000.0
    out["p99_co_ms"] = _rank(_co_corrected(latencies, connections, seconds), 99) / 1000.0
    return out


def _rank(ordered, pct):
    """The nearest-rank percentile of an ascending list."""
    k = max(1, -(-len(ordered) * pct // 100))
    return ordered[min(len(ordered), k) - 1]


def _co_corrected(ordered, connections, seconds):
    per_connection = len(ordered) // max(1, connections)
    if not per_connection:
        return ordered
    interval = seconds * 1e6 / per_connection
    extra = []
    for us in ordered:
        m = us - interval
        while us >= 2 * interval and m > interval:
            extra.append(m)
            m -= interval
    return sorted(ordered + extra)


def cmd_record(args):
    try:
        with open(args.wrk, errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    run = {"case": args.case, "proxy": args.proxy, "round": args.round}
    run.update(parse_wrk(text))
    cpu_s = args.cpu_ticks / args.clk_tck
    run["proxy_cpu_s"] = round(cpu_s, 3)
    # Share of one core the proxy used; near 100% means the proxy was the bottleneck,
    # well below means the load side (wrk + backends) limited req/s.
    run["proxy_cpu_pct"] = (100.0 * cpu_s / run["seconds"]) if (run["seconds"] and args.alive) else None
    run["req_per_cpu_s"] = (run["requests"] / cpu_s) if (run["requests"] and cpu_s > 0) else None
    # A proxy that died has no /proc entry left to read: no peak RSS, no CPU figure.
    run["peak_rss_kb"] = args.peak_kb if args.alive else None
    if not args.alive:
        run["req_per_cpu_s"] = None
    run["idle_rss_kb"] = args.idle_kb
    run["wrk_exit"] = args.wrk_exit
    run["proxy_alive_after"] = bool(args.alive)
    run["errors"] = run["socket_errors"] + run["non2xx"]
    notes = []
    if run["requests"] is None:
        notes.append("wrk output unparseable")
    if args.wrk_exit != 0:
        notes.append(f"wrk exit {args.wrk_exit}")
    if not args.alive:
        notes.append("proxy exited during run")
    run["notes"] = notes
    with open(args.runs, "a") as f:
        f.write(json.dumps(run) + "\n")
    print(f"  {args.case:<10} {args.proxy:<10} round {args.round}: "
          f"{fmt(run['rps'], 0)} req/s  p50 {fmt(run['p50_ms'], 2)} ms  "
          f"p99 {fmt(run['p99_ms'], 2)} ms  {fmt(run['req_per_cpu_s'], 0)} req/CPU-s  "
          f"(proxy cpu {cpu_s:.2f}s = {fmt(run['proxy_cpu_pct'], 0)}%, errors {run['errors']})"
          + ("  !! " + "; ".join(notes) if notes else ""), flush=True)


# ---------------------------------------------------------------- report


def fmt(v, digits):
    """v with digits decimals, or "-" for None."""
    return "-" if v is None else f"{v:.{digits}f}"


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(runs, how):
    """One row per (case, proxy).

    median: each metric is the median over rounds independently (with 2 rounds that is
            the mean of the two).
    best:   all metrics come from the single round with the highest req/s.
    In both modes errors are the SUM over all rounds (an error anywhere must show),
    peak RSS is the max over rounds and idle RSS the median.
    """
    keys = ("rps", "p50_ms", "p99_ms", "req_per_cpu_s", "proxy_cpu_s", "proxy_cpu_pct",
            "requests")
    if how == "best":
        # Never pick a round that crashed or could not be parsed if a clean one exists.
        clean = [r for r in runs if not r["notes"]] or runs
        pick = max(clean, key=lambda r: r["rps"] or -1)
        row = {k: pick[k] for k in keys}
        row["best_round"] = pick["round"]
    else:
        row = {k: _median([r[k] for r in runs]) for k in keys}
    peaks = [r["peak_rss_kb"] for r in runs if r["peak_rss_kb"] is not None]
    row["peak_rss_kb"] = max(peaks) if peaks else None
    row["idle_rss_kb"] = _median([r["idle_rss_kb"] for r in runs])
    row["errors"] = sum(r["errors"] for r in runs)
    row["rounds"] = len(runs)
    row["notes"] = sorted({n for r in runs for n in r["notes"]})
    # Rounds that disagree a lot mean something else disturbed the machine; say so.
    rps = [r["rps"] for r in runs if r["rps"]]
    row["rps_spread"] = (max(rps) - min(rps)) / max(rps) if len(rps) > 1 else 0.0
    if row["rps_spread"] > 0.20:
        row["notes"].append(f"noisy: req/s differs {row['rps_spread']:.0%} between rounds "
                            f"({', '.join(fmt(v, 0) for v in rps)})")
    return row


def _ratio(a, b):
    return (a / b) if (a is not None and b) else None


def paired_rounds(runs, subject, peer):
    """Per-round req/CPU-s ratios of subject to peer, and their median.

    Rounds are interleaved (subject, then peer, then the next round), so the two runs of one
    round share whatever the machine was doing for those ~25 s; their ratio cancels it. Best
    of each proxy compares two different rounds: when the load generator's core sets the
    pace (keep-alive here), each proxy's best round is the one where that core was fastest,
    and the ratio moves by the rounds' spread. With 3 or more rounds the median of the paired
    ratios is the steadier figure; both are printed.
    """
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["proxy"]] = r
    ratios = []
    for rnd in sorted(by_round):
        pair = by_round[rnd]
        if subject in pair and peer in pair and not pair[subject]["notes"] and not pair[peer]["notes"]:
            v = _ratio(pair[subject]["req_per_cpu_s"], pair[peer]["req_per_cpu_s"])
            if v is not None:
                ratios.append(v)
    return {"req_per_cpu_s": ratios, "median": _median(ratios)}


def cmd_report(args):
    with open(args.runs) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    with open(args.meta) as f:
        meta = json.load(f)
    subject, peer = args.subject, args.peer
    cases = []
    for c in args.cases.split(","):
        if c not in [r["case"] for r in runs]:
            continue
        entry = {"case": c, "results": {}}
        for p in (subject, peer):
            pr = [r for r in runs if r["case"] == c and r["proxy"] == p]
            if pr:
                entry["results"][p] = aggregate(pr, args.agg)
        s, h = entry["results"].get(subject), entry["results"].get(peer)
        if s and h:
            entry["ratio"] = {
                "rps": _ratio(s["rps"], h["rps"]),
                "p99_ms": _ratio(s["p99_ms"], h["p99_ms"]),
                "req_per_cpu_s": _ratio(s["req_per_cpu_s"], h["req_per_cpu_s"]),
            }
            entry["paired"] = paired_rounds([r for r in runs if r["case"] == c], subject, peer)
        cases.append(entry)

    # ---- table
    hdr = ("case", "proxy", "req/s", "p50 ms", "p99 ms", "req/CPU-s",
           "peak RSS MiB", "idle RSS MiB", "errors", "CPU %")
    widths = (10, 17, 9, 8, 8, 10, 12, 12, 7, 6)

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    mib = lambda kb: None if kb is None else kb / 1024.0  # noqa: E731
    print()
    print(f"results ({args.agg} of {meta.get('rounds')} rounds; {meta.get('duration')} runs, "
          f"{meta.get('connections')} connections, backend {meta.get('backend')}, "
          f"{meta.get('pinning')})")
    print(line(hdr))
    print(line(["-" * w for w in widths]))
    for e in cases:
        for p, r in e["results"].items():
            label = meta.get("labels", {}).get(p, p)
            print(line((e["case"], label, fmt(r["rps"], 0), fmt(r["p50_ms"], 3),
                        fmt(r["p99_ms"], 3), fmt(r["req_per_cpu_s"], 0),
                        fmt(mib(r["peak_rss_kb"]), 1), fmt(mib(r["idle_rss_kb"]), 1),
                        r["errors"], fmt(r["proxy_cpu_pct"], 0))))
        if "ratio" in e:
            rt = e["ratio"]
            x = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
            print(line((e["case"], f"{subject}/{peer}"[:17], x(rt["rps"]), "",
                        x(rt["p99_ms"]), x(rt["req_per_cpu_s"]), "", "", "", "")))
            pr = e.get("paired") or {}
            if pr.get("req_per_cpu_s"):
                print(f"{'':10s}  req/CPU-s per round (paired): "
                      + ", ".join(f"{v:.2f}x" for v in pr["req_per_cpu_s"])
                      + f"; median {x(pr['median'])}")
        for p, r in e["results"].items():
            for n in r["notes"]:
                print(f"  !! {e['case']} {p}: {n}")
    print()

    # ---- summary line
    parts = []
    for e in cases:
        rt = e.get("ratio")
        if not rt:
            continue
        f2 = lambda v: "n/a" if v is None else f"{v:.2f}x"  # noqa: E731
        errs = sum(r["errors"] for r in e["results"].values())
        pm = (e.get("paired") or {}).get("median")
        parts.append(f"{e['case']}: req/s {f2(rt['rps'])}, p99 {f2(rt['p99_ms'])}, "
                     f"req/CPU-s {f2(rt['req_per_cpu_s'])}"
                     + (f" (paired rounds' median {f2(pm)})" if pm is not None else "")
                     + (f", {errs} errors" if errs else ""))
    summary = (f"summary ({subject} vs {peer}; >1 is better for req/s and req/CPU-s, "
               f"<1 is better for p99): " + ("; ".join(parts) if parts else "no comparable data"))
    print(summary)

    result = {"meta": meta, "aggregation": args.agg, "cases": cases,
              "summary": summary, "runs": runs}
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.json)
    print(f"results written to {args.json}")


# ---------------------------------------------------------------- for the bench scripts
# A bench script calls begin() first (it names the bench: messages start "bench-NAME:"),
# then run(main). Everything it starts goes through start(), so that run() stops it by
# PID on the way out, whichever way that is (an error, a signal, the end).

NAME = "bench"
_started = []  # Popen objects of what is running, oldest first
_workdirs = []
_owner = os.getpid()  # a forked helper process must not run the owner's cleanup

# Pinning: the proxy under test on PROXY_CPU, the load side (wrk, backends) on LOAD_CPU.
PIN = (os.environ.get("BENCH_PIN", "1") == "1" and (os.cpu_count() or 1) >= 2
       and shutil.which("taskset"))
PROXY_CPU = os.environ.get("BENCH_PROXY_CPU", "1")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "0")


def fail(msg):
    """Prints msg as this bench's error, stops everything it started, exits 1."""
    print(f"{NAME}: ERROR: {msg}", file=sys.stderr)
    stop_all()
    sys.exit(1)


def begin(name):
    """Names the bench and returns its build directory. The wrapper runs the program as
    `python3 - HERE "$@"`: argv[1] is bench/, argv[2] the build directory (default
    bench/../build)."""
    global NAME
    NAME = name
    arg = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else f"{sys.argv[1]}/../build"
    if not os.path.isdir(arg):
        fail(f"build directory '{arg}' does not exist")
    return os.path.abspath(arg)


def need(tool, hint="run 'make deps'"):
    """Fails unless tool (a name in PATH, or a path) can be run."""
    if "/" in tool:
        if not os.access(tool, os.X_OK):
            fail(f"{tool} not found ({hint})")
    elif not shutil.which(tool):
        fail(f"'{tool}' not found in PATH ({hint})")


def env_int(name, default, lo=0):
    """The integer knob `name` (default when unset); fails unless it is >= lo."""
    text = os.environ.get(name, str(default))
    if not text.isdigit() or int(text) < lo:
        fail(f"{name} must be an integer >= {lo}, got {text!r}")
    return int(text)


def env_secs(name, default):
    """The duration knob `name` in whole seconds: "5", "5s" or "1m" (wrk's spellings)."""
    text = os.environ.get(name, default)
    m = re.fullmatch(r"(\d+)(s|m)?", text)
    if not m:
        fail(f"{name}: bad duration {text!r} (use e.g. {default})")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def run(main):
    """Calls main(). SIGTERM and SIGINT end it as exit 128+signal; on every way out, what
    start() started is stopped and the workdir()s are removed (kept with BENCH_KEEP=1)."""
    def on_signal(sig, _frame):
        if os.getpid() != _owner:
            os._exit(128 + sig)
        sys.exit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        main()
    finally:
        stop_all()
        for d in _workdirs:
            if os.environ.get("BENCH_KEEP") == "1":
                print(f"{NAME}: kept {d}")
            else:
                shutil.rmtree(d, ignore_errors=True)


def workdir():
    """A new temporary directory for configs and logs (see run())."""
    d = tempfile.mkdtemp(prefix=f"pf-{NAME}.")
    _workdirs.append(d)
    return d


def copy_binaries(build, work, *names):
    """Copies each build/NAME into work and returns the copies' paths: a rebuild while the
    bench runs must not change what its later runs measure."""
    paths = []
    for name in names:
        src = os.path.join(build, name)
        if not os.access(src, os.X_OK):
            fail(f"{src} not found (build it with 'make')")
        paths.append(shutil.copy(src, os.path.join(work, name)))
    return paths


def write_json(path, doc, indent=None):
    with open(path, "w") as f:
        json.dump(doc, f, indent=indent)


def free_ports(n, udp=False):
    """n different TCP ports free on 127.0.0.1 (with udp, each free for UDP too), outside
    the kernel's ephemeral range and handed out in turn among concurrent tests and benches
    (test/integration/ports.py), so no outgoing connection takes one before its server binds."""
    return _ports.free_ports(n, udp=udp)


def free_port():
    return free_ports(1)[0]


def http_get(port, path, timeout=2.0):
    """(status, body) of GET http://127.0.0.1:PORT/PATH; raises OSError on errors and on
    statuses >= 400."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def tail(path):
    """The last 2,000 characters of a log file ("" when there is none)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


def pinned(cpu, args):
    """args run on cpu when pinning is on (and cpu is given)."""
    return ["taskset", "-c", cpu] + args if PIN and cpu is not None else args


def pinning_note(load):
    """What the pinning is, for the output: `load` names what shares the load CPU."""
    return f"proxy on CPU {PROXY_CPU}, {load} on CPU {LOAD_CPU}" if PIN else "no pinning"


def start(args, log, cpu=None):
    """Starts args in its own session, pinned to cpu, stdout and stderr to the file log;
    returns its Popen. It is stopped by stop() or at the end of run()."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(pinned(cpu, args), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _started.append(proc)
    return proc


def stop(proc, grace=5.0):
    """SIGTERM, then SIGKILL after grace seconds; reaps proc."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc in _started:
        _started.remove(proc)


def stop_all():
    """Stops what start() started and is not stopped yet, newest first."""
    while _started:
        stop(_started[-1])


def wait_until(what, predicate, timeout, proc=None, log=None, interval=0.05, give_up=True):
    """Calls predicate() every interval seconds until it returns something true, and
    returns that (an OSError from it means "not yet"). When proc exits first or timeout
    seconds pass: fail() naming `what`, with the tail of log; with give_up=False, return
    None instead (the caller retries)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"{what} exited {proc.returncode}"
            break
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(interval)
    else:
        msg = f"timed out after {timeout:.0f}s waiting for {what}"
    if give_up:
        fail(msg + (f":\n{tail(log)}" if log else ""))
    return None


def pilotfish_ready(admin, *listeners):
    """A predicate for wait_until: admin /ready answers 200, and so does / on each of the
    listeners (a proxy that answers 502 is not worth measuring)."""
    return lambda: (http_get(admin, "/ready", 1.0)[0] == 200
                    and all(http_get(p, "/", 1.0)[0] == 200 for p in listeners))


def pilotfish_config(admin, listen, cluster):
    """A pilotfish config: admin on port ADMIN, no access log, and one listener on port
    LISTEN that sends every path to `cluster` (a cluster object, the config's only one)."""
    return {"admin": {"address": f"127.0.0.1:{admin}"}, "access_log": False,
            "listeners": [{"name": "bench", "address": f"127.0.0.1:{listen}",
                           "routes": [{"match": {"prefix": "/"}, "cluster": cluster["name"]}]}],
            "clusters": [cluster]}


def start_pilotfish(work, tag, cfg, *args, cpu=None):
    """Writes cfg to work/TAG.json and starts work/pilotfish --config it, then args; the
    log is work/TAG.log. Returns (proc, log)."""
    path = os.path.join(work, f"{tag}.json")
    write_json(path, cfg)
    log = os.path.join(work, f"{tag}.log")
    return start([os.path.join(work, "pilotfish"), "--config", path, *args], log, cpu), log


def start_backend(work, name, *args, listen="127.0.0.1:0", cpu=None, timeout=10.0):
    """Starts work/pf-backend --listen LISTEN --name NAME, then args (log
    work/backend-NAME.log), and waits for the "listening 127.0.0.1:PORT" line it prints.
    Returns (proc, PORT)."""
    log = os.path.join(work, f"backend-{name}.log")
    proc = start([os.path.join(work, "pf-backend"), "--listen", listen, "--name", name, *args],
                 log, cpu)

    def port():
        with open(log, "rb") as f:
            m = re.search(rb"^listening 127\.0\.0\.1:(\d+)", f.read(), re.M)
        return int(m.group(1)) if m else None

    return proc, wait_until(f"pf-backend {name}", port, timeout, proc, log)


def run_wrk(url, seconds, conns, *args, cpu=None, out=None):
    """Runs `wrk -t1 -cCONNS -dSECONDSs --latency ARGS URL`, pinned to cpu, bounded at
    seconds + 30; returns (exit status, output). out: a file that gets the output too."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", *args, url]
    res = subprocess.run(pinned(cpu, cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=seconds + 30)
    text = res.stdout.decode(errors="replace")
    if out:
        with open(out, "w") as f:
            f.write(text)
    return res.returncode, text


# ---------------------------------------------------------------- command line


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("procstat")
    p.add_argument("pgid", type=int)
    p.set_defaults(fn=cmd_procstat)

    p = sub.add_parser("record")
    for a in ("--runs", "--wrk", "--case", "--proxy"):
        p.add_argument(a, required=True)
    for a in ("--round", "--cpu-ticks", "--clk-tck", "--peak-kb", "--idle-kb",
              "--wrk-exit", "--alive"):
        p.add_argument(a, type=int, required=True)
    p.set_defaults(fn=cmd_record)

    p = sub.add_parser("report")
    for a in ("--runs", "--meta", "--json", "--cases", "--subject", "--peer"):
        p.add_argument(a, required=True)
    p.add_argument("--agg", choices=("median", "best"), default="best")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("free-port")
    p.set_defaults(fn=lambda _args: print(free_port()))

    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
