#!/usr/bin/env bash
# Counted cost per keep-alive request, pilotfish vs haproxy in the same run: CPU split into
# user and kernel time, context switches, wake-ups, syscalls (epoll_wait among them) and
# loopback TCP segments (data, pure ACKs, delayed ACKs). Same setup as run.sh's keepalive
# case: two nginx backends and wrk -c50 on CPU 0, the proxy alone on CPU 1, --workers 1.
# A measure to compare builds and proxies with, not a benchmark of throughput.
#
#   bash bench/cycles.sh BUILD_DIR [BASE_BUILD_DIR]
#       with a second build, its pilotfish runs too ("base"), in the same rounds: an A/B.
#                                    (BENCH_CYCLES_SECONDS=10, BENCH_ROUNDS=1,
#                                     BENCH_CONNECTIONS=50, BENCH_NETNS=1,
#                                     BENCH_CYCLES_RECORD=DIR: also perf record -g)
#
# The counters come from `perf stat -p` on the proxy (software events and tracepoints, so it
# also works where the virtual machine has no hardware PMU), from /proc/PID/stat (user and
# kernel time) and from /proc/net/snmp + /proc/net/netstat deltas. The TCP counters are per
# network namespace, so by default the script runs itself in a new one (unshare -n, needs
# root) where only the benchmark's own traffic is counted; BENCH_NETNS=0 uses the current
# namespace (then other loopback traffic on the machine counts too). Everything binds
# 127.0.0.1 on free ports; every process started here is stopped by PID on exit (lib.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "${BENCH_NETNS:-1}" = 1 ] && [ -z "${PF_CYCLES_IN_NETNS:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; then
        # A build directory given relative to the caller stays valid: the cwd is kept.
        PF_CYCLES_IN_NETNS=1 exec unshare -n -- bash -c 'ip link set lo up && exec bash "$0" "$@"' \
            "${BASH_SOURCE[0]}" "$@"
    fi
    echo "cycles: note: not root or no unshare/ip: counting TCP segments in the current network namespace" >&2
fi

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
LOAD_WHAT=wrk
bench_init cycles "${1:-}"
SECS=${BENCH_CYCLES_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-1}
CONNS=${BENCH_CONNECTIONS:-50}
# A directory: also `perf record -e cpu-clock -g` each proxy into DIR/KIND-rROUND.data.
RECORD=${BENCH_CYCLES_RECORD:-}
[ -z "$RECORD" ] || RECORD=$(mkdir -p "$RECORD" && cd "$RECORD" && pwd) || die "cannot create '$RECORD'"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CYCLES_SECONDS must be a positive integer, got '$SECS'"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer, got '$ROUNDS'"
[[ "$CONNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer, got '$CONNS'"
bench_need wrk haproxy nginx perf taskset
[ -x "$BUILD/pilotfish" ] || die "no $BUILD/pilotfish (build it with 'make')"
# A private copy: a rebuild in BUILD while this runs must not change what it measures.
cp "$BUILD/pilotfish" "$WORK/pilotfish"
KINDS="pilotfish haproxy"
if [ -n "${2:-}" ]; then
    [ -x "$2/pilotfish" ] || die "no $2/pilotfish (the second argument is a base build directory)"
    cp "$2/pilotfish" "$WORK/base"
    KINDS="pilotfish base haproxy"
fi

for name in b1 b2; do start_nginx_backend "$name"; done

# start_proxy KIND PORT: sets PROXY_PID
start_proxy() { start_http_proxy "$1" "$2" "$WORK/$1"; }

# tcp_counters: "OutSegs OrigDataSent RetransSegs DelayedACKs" of this network namespace.
tcp_counters() {
    awk '$1 == "Tcp:" && !h1 { for (i = 2; i <= NF; i++) t[$i] = i; h1 = 1; next }
         $1 == "Tcp:" { o = $t["OutSegs"]; r = $t["RetransSegs"] }
         $1 == "TcpExt:" && !h2 { for (i = 2; i <= NF; i++) x[$i] = i; h2 = 1; next }
         $1 == "TcpExt:" { d = $x["TCPOrigDataSent"]; a = $x["DelayedACKs"] }
         END { print o, d, r, a }' /proc/net/snmp /proc/net/netstat
}

# proc_times PID: "utime stime" of the whole process in clock ticks.
proc_times() { awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"; }

EVENTS=task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter
EVENTS=$EVENTS,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_ctl
EVENTS=$EVENTS,syscalls:sys_enter_recvfrom,syscalls:sys_enter_readv,syscalls:sys_enter_read
EVENTS=$EVENTS,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_write
EVENTS=$EVENTS,syscalls:sys_enter_setsockopt,syscalls:sys_enter_clock_gettime,sched:sched_waking
EVENTS=$EVENTS,sched:sched_switch,net:net_dev_xmit
# Tracepoints cost the proxy time in every syscall and would show in a profile: a recorded
# run counts only the software clock and switches (the rows of the tracepoints read 0).
[ -z "$RECORD" ] || EVENTS=task-clock,context-switches,cpu-migrations,page-faults

note "wrk -t1 -c$CONNS -d${SECS}s keep-alive, $PINNING, $ROUNDS round(s)"
for ((round = 1; round <= ROUNDS; round++)); do
    for kind in $KINDS; do
        port=$(free_port)
        start_proxy "$kind" "$port"
        url="http://127.0.0.1:$port/"
        pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null # warm: pools, caches
        read -r u0 k0 < <(proc_times "$PROXY_PID")
        read -r -a n0 < <(tcp_counters)
        # perf stat outlives wrk by a little; the proxy is idle before and after, so the
        # few extra counts (its timers) are noise against ~10^5 requests.
        perf stat -x, -o "$WORK/stat.txt" -e "$EVENTS" -p "$PROXY_PID" -- sleep $((SECS + 1)) &
        ps_pid=$!
        pr_pid=""
        if [ -n "$RECORD" ]; then
            perf record -q -e cpu-clock -g -o "$RECORD/$kind-r$round.data" -p "$PROXY_PID" \
                -- sleep $((SECS + 1)) >/dev/null 2>&1 &
            pr_pid=$!
        fi
        sleep 0.3 # attached
        pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" "$url" >"$WORK/wrk.txt"
        read -r -a n1 < <(tcp_counters)
        wait "$ps_pid" || die "perf stat failed: $(tail -n 3 "$WORK/stat.txt" 2>/dev/null)"
        [ -z "$pr_pid" ] || wait "$pr_pid" || note "perf record failed (ignored)"
        read -r u1 k1 < <(proc_times "$PROXY_PID")
        stop_group "$PROXY_PID"
        forget_pid "$PROXY_PID"
        "$PY" - "$kind" "$round" "$WORK/wrk.txt" "$WORK/stat.txt" "$u0 $k0 $u1 $k1" \
            "${n0[*]}" "${n1[*]}" "$SECS" "$WORK/rows.jsonl" <<'EOF'
import json, re, sys
kind, rnd, wrk, stat, times, n0, n1, secs, rows_file = sys.argv[1:]
text = open(wrk).read()
m = re.search(r"(\d+) requests in", text)
if not m:
    sys.exit(f"cycles: ERROR: no request count in wrk's output:\n{text}")
req = int(m.group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
ev = {}
for line in open(stat):
    f = line.strip().split(",")
    if len(f) >= 3 and f[2] and not line.startswith("#"):
        try:
            ev[f[2]] = float(f[0])
        except ValueError:
            ev[f[2]] = 0.0  # <not counted>
u0, k0, u1, k1 = (int(x) for x in times.split())
ticks = (u1 - u0) + (k1 - k0)
cpu_us = ev.get("task-clock", 0.0) * 1e3 / req  # task-clock is in ms
# /proc's user/kernel split is sampled per tick but scaled to the exact runtime, so the
# split is a share of the precise task-clock.
ushare = (u1 - u0) / ticks if ticks else 0.0
n0 = [int(x) for x in n0.split()]
n1 = [int(x) for x in n1.split()]
out, data, retr, dack = (b - a for a, b in zip(n0, n1))
def per(name):
    return ev.get(name, 0.0) / req
ew = per("syscalls:sys_enter_epoll_wait") + per("syscalls:sys_enter_epoll_pwait")
rows = [
    ("req/s", req / int(secs), "{:.0f}"),
    ("CPU us/req", cpu_us, "{:.3f}"),
    ("  user us/req", cpu_us * ushare, "{:.3f}"),
    ("  kernel us/req", cpu_us * (1 - ushare), "{:.3f}"),
    ("req/CPU-s", req / (ev.get("task-clock", 1.0) / 1e3), "{:.0f}"),
    ("syscalls/req", per("raw_syscalls:sys_enter"), "{:.3f}"),
    ("  epoll_wait/req", ew, "{:.3f}"),
    ("  epoll_ctl/req", per("syscalls:sys_enter_epoll_ctl"), "{:.3f}"),
    ("  recv/req (recvfrom+readv+read)", per("syscalls:sys_enter_recvfrom")
     + per("syscalls:sys_enter_readv") + per("syscalls:sys_enter_read"), "{:.3f}"),
    ("  send/req (sendto+writev+write)", per("syscalls:sys_enter_sendto")
     + per("syscalls:sys_enter_writev") + per("syscalls:sys_enter_write"), "{:.3f}"),
    ("  setsockopt/req", per("syscalls:sys_enter_setsockopt"), "{:.3f}"),
    ("  clock_gettime syscalls/req", per("syscalls:sys_enter_clock_gettime"), "{:.3f}"),
    ("context switches/req", per("context-switches"), "{:.3f}"),
    ("sched_switch/req", per("sched:sched_switch"), "{:.3f}"),
    ("wake-ups caused/req (sched_waking)", per("sched:sched_waking"), "{:.3f}"),
    ("packets sent/req (net_dev_xmit)", per("net:net_dev_xmit"), "{:.3f}"),
    ("TCP segments out/req (all sockets)", out / req, "{:.3f}"),
    ("  with data/req", data / req, "{:.3f}"),
    ("  pure ACKs/req", (out - data - retr) / req, "{:.3f}"),
    ("  delayed ACKs/req", dack / req, "{:.3f}"),
    ("  retransmitted/req", retr / req, "{:.4f}"),
]
print(f"== {kind} round {rnd}: {req} requests in {secs}s"
      + (f", {errs.group(1)} non-2xx" if errs else ""))
for name, val, fmt in rows:
    print(f"  {name:<38} {fmt.format(val)}")
with open(rows_file, "a") as f:
    f.write(json.dumps({"kind": kind, **{name.strip(): val for name, val, _ in rows}}) + "\n")
EOF
    done
done

# Medians over rounds, and each other proxy's CPU per request against pilotfish's.
"$PY" - "$WORK/rows.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
kinds = list(dict.fromkeys(r["kind"] for r in rows))
cols = [("req/s", "req/s"), ("CPU us/req", "CPU us"), ("user us/req", "user us"),
        ("kernel us/req", "kernel us"), ("syscalls/req", "syscalls"),
        ("epoll_wait/req", "epoll_wait"), ("context switches/req", "ctx switch"),
        ("TCP segments out/req (all sockets)", "segments")]
med = {k: {c: statistics.median(r[c] for r in rows if r["kind"] == k) for c, _ in cols}
       for k in kinds}
print(f"== medians of {len(rows) // len(kinds)} round(s), per request")
print(f"  {'':<10}" + "".join(f"{h:>11}" for _, h in cols))
for k in kinds:
    print(f"  {k:<10}" + "".join(f"{med[k][c]:>11.3f}" for c, _ in cols))
p = med["pilotfish"]
for k in kinds[1:]:
    print(f"  {k} / pilotfish, CPU per request: {med[k]['CPU us/req'] / p['CPU us/req']:.3f}x"
          f" (user {med[k]['user us/req'] / p['user us/req']:.2f}x,"
          f" kernel {med[k]['kernel us/req'] / p['kernel us/req']:.2f}x)")
EOF
