#!/usr/bin/env bash
# Syscalls per request, pilotfish vs haproxy: `strace -c -f` on the proxy during a short wrk
# run, keep-alive and Connection: close, with the same two nginx backends and pinning as
# run.sh (proxy on CPU 1, wrk and backends on CPU 0). A profile, not a benchmark: strace
# slows the proxy down; the counts per request are what to compare.
#
#   bash bench/syscalls.sh BUILD_DIR       (BENCH_SYSCALL_SECONDS=3, BENCH_CONNECTIONS=16)
#
# Needs strace and ptrace permission over child processes. Everything binds 127.0.0.1 on
# free ports; every process started here is stopped by PID on exit (preamble: lib.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
LOAD_WHAT=wrk
bench_init syscalls "${1:-}"
SECONDS_RUN=${BENCH_SYSCALL_SECONDS:-3}
CONNS=${BENCH_CONNECTIONS:-16}
bench_need wrk strace haproxy nginx taskset
[ -x "$BUILD/pilotfish" ] || die "no $BUILD/pilotfish"

for name in b1 b2; do start_nginx_backend "$name"; done

# start_proxy KIND PORT: sets PROXY_PID
start_proxy() { start_http_proxy "$1" "$2" "$BUILD/pilotfish"; }

printf '%-10s %-10s %9s  %s\n' case proxy "sys/req" "per request (calls/request, >= 0.05)"
for case in keepalive close; do
    hdr=()
    [ "$case" = close ] && hdr=(-H 'Connection: close')
    for kind in pilotfish haproxy; do
        port=$(free_port)
        start_proxy "$kind" "$port"
        url="http://127.0.0.1:$port/"
        pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$url" >/dev/null # warm: pools
        strace -c -f -o "$WORK/strace.txt" -p "$PROXY_PID" 2>/dev/null &
        st=$!
        sleep 0.5 # attached
        pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" "${hdr[@]}" "$url" >"$WORK/wrk.txt"
        kill -INT "$st"
        wait "$st" 2>/dev/null || true
        stop_group "$PROXY_PID"
        forget_pid "$PROXY_PID"
        python3 - "$case" "$kind" "$WORK/wrk.txt" "$WORK/strace.txt" <<'EOF'
import re, sys
case, kind, wrk, st = sys.argv[1:]
reqs = int(re.search(r"(\d+) requests in", open(wrk).read()).group(1))
calls = {}
for line in open(st):
    f = line.split()
    if len(f) >= 5 and re.match(r"^\d+\.\d+$", f[0]) and f[-1] != "total":
        calls[f[-1]] = int(f[3])
total = sum(calls.values()) / reqs
parts = ", ".join(f"{n} {c / reqs:.2f}" for n, c in sorted(calls.items(), key=lambda x: -x[1])
                  if c / reqs >= 0.05)
print(f"{case:<10} {kind:<10} {total:9.2f}  {parts}")
EOF
    done
done
