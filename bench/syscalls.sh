#!/usr/bin/env bash
# Syscalls per request, pilotfish vs haproxy: `strace -c -f` on the proxy during a short wrk
# run, keep-alive and Connection: close, with the same two nginx backends and pinning as
# run.sh (proxy on CPU 1, wrk and backends on CPU 0). A profile, not a benchmark: strace
# slows the proxy down; the counts per request are what to compare.
#
#   bash bench/syscalls.sh BUILD_DIR       (BENCH_SYSCALL_SECONDS=3, BENCH_CONNECTIONS=16)
#
# Needs strace and ptrace permission over child processes. Everything binds 127.0.0.1 on
# free ports; every process started here is stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "${1:-$HERE/../build}" && pwd)
SECONDS_RUN=${BENCH_SYSCALL_SECONDS:-3}
CONNS=${BENCH_CONNECTIONS:-16}
for t in wrk strace haproxy nginx curl taskset python3; do
    command -v "$t" >/dev/null || { echo "syscalls: ERROR: '$t' not found" >&2; exit 1; }
done
[ -x "$BUILD/pilotfish" ] || { echo "syscalls: ERROR: no $BUILD/pilotfish" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pf-syscalls.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 "$HERE/benchlib.py" free-port; }
wait_ok() { # URL: bounded wait for a 2xx
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    echo "syscalls: ERROR: $1 did not answer" >&2
    exit 1
}

BACKENDS=()
for name in b1 b2; do
    port=$(free_port)
    dir="$WORK/$name"
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $dir/tmp/b; proxy_temp_path $dir/tmp/p;
  fastcgi_temp_path $dir/tmp/f; uwsgi_temp_path $dir/tmp/u; scgi_temp_path $dir/tmp/s;
  keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$port; location / { default_type text/plain; return 200 "$name\n"; } } }
EOF
    taskset -c 0 nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
    PIDS+=($!)
    wait_ok "http://127.0.0.1:$port/"
    BACKENDS+=("$port")
done

# start_proxy KIND PORT: sets PROXY_PID
start_proxy() {
    local kind=$1 port=$2
    if [ "$kind" = pilotfish ]; then
        cat >"$WORK/pf.json" <<EOF
{"admin": {"address": "127.0.0.1:$(free_port)"}, "access_log": false,
 "listeners": [{"name": "bench", "address": "127.0.0.1:$port",
                "routes": [{"match": {"prefix": "/"}, "cluster": "b"}]}],
 "clusters": [{"name": "b", "endpoints": ["127.0.0.1:${BACKENDS[0]}", "127.0.0.1:${BACKENDS[1]}"]}]}
EOF
        taskset -c 1 "$BUILD/pilotfish" --config "$WORK/pf.json" --workers 1 >"$WORK/pf.log" 2>&1 &
    else
        cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
frontend bench
    bind 127.0.0.1:$port
    default_backend b
backend b
    balance roundrobin
    server b1 127.0.0.1:${BACKENDS[0]}
    server b2 127.0.0.1:${BACKENDS[1]}
EOF
        taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    fi
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_ok "http://127.0.0.1:$port/"
}

printf '%-10s %-10s %9s  %s\n' case proxy "sys/req" "per request (calls/request, >= 0.05)"
for case in keepalive close; do
    hdr=()
    [ "$case" = close ] && hdr=(-H 'Connection: close')
    for kind in pilotfish haproxy; do
        port=$(free_port)
        start_proxy "$kind" "$port"
        url="http://127.0.0.1:$port/"
        taskset -c 0 wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$url" >/dev/null # warm: pools
        strace -c -f -o "$WORK/strace.txt" -p "$PROXY_PID" 2>/dev/null &
        st=$!
        sleep 0.5 # attached
        taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" "${hdr[@]}" "$url" >"$WORK/wrk.txt"
        kill -INT "$st"
        wait "$st" 2>/dev/null || true
        kill "$PROXY_PID"
        wait "$PROXY_PID" 2>/dev/null || true
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
