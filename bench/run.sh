#!/usr/bin/env bash
# pilotfish benchmark: pilotfish vs haproxy in front of the same two local backends.
#
#   bash bench/run.sh BUILD_DIR        (what `make bench` runs)
#
# See bench/README.md for the knobs (BENCH_* environment variables) and for what
# each column means. Everything listens on 127.0.0.1 on free ports, every load is
# bounded in time, and every process started here is stopped on exit (EXIT trap).
# Exit status is non-zero only when something could not be started.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "${1:-$HERE/../build}" 2>/dev/null && pwd) || {
    echo "bench: ERROR: build directory '${1:-$HERE/../build}' does not exist" >&2
    exit 1
}
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
LIB="$HERE/benchlib.py"

# ---- knobs ------------------------------------------------------------------------
BACKEND=${BENCH_BACKEND:-nginx}          # nginx | pf-backend
DURATION=${BENCH_DURATION:-10s}          # measured run length (wrk -d)
WARMUP=${BENCH_WARMUP:-2s}               # unmeasured run right before each measured one
ROUNDS=${BENCH_ROUNDS:-2}                # pilotfish,haproxy pairs per case (interleaved)
CONNS=${BENCH_CONNECTIONS:-50}           # wrk -c
# best: the round with the highest req/s (all its metrics together). Interference on
# a shared box only ever slows a round down, so the best round is the closest to what
# the proxy can do; with the default 2 rounds a median is just a mean and gets dragged
# by one disturbed round. median: each metric's median over rounds.
AGG=${BENCH_AGG:-best}
CASES=${BENCH_CASES:-keepalive,close,policies,failover,health,dns,k8s,fleet,churn,status,reload,tls,h2,tcp,routes}
STANDIN=${BENCH_STANDIN:-}               # "haproxy": run haproxy in pilotfish's slot (A/A self-test)
PIN=${BENCH_PIN:-1}                      # 0 disables taskset pinning
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
START_TIMEOUT=${BENCH_START_TIMEOUT:-10} # seconds to wait for anything to become ready

die() {
    echo "bench: ERROR: $*" >&2
    exit 1
}
note() { echo "bench: $*"; }

# "10s" / "10" / "1m" -> whole seconds (wrk accepts the same spellings).
secs() {
    case "$1" in
        *[!0-9sm]* | '' | s | m) die "bad duration '$1' (use e.g. 10s or 1m)" ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
DUR_S=$(secs "$DURATION")
WARM_S=$(secs "$WARMUP")
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer, got '$ROUNDS'"
[[ "$CONNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer, got '$CONNS'"
[[ "$AGG" == median || "$AGG" == best ]] || die "BENCH_AGG must be median or best, got '$AGG'"
[ "$DUR_S" -ge 1 ] || die "BENCH_DURATION must be at least 1s"

# ---- tools ------------------------------------------------------------------------
[ -n "$PY" ] || die "python3 not found (needed to parse wrk output)"
for t in wrk curl haproxy setsid; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found in PATH (run 'make deps')"
done
HAPROXY=$(command -v haproxy)
PILOTFISH="$BUILD/pilotfish"
case "$STANDIN" in
    '') [ -x "$PILOTFISH" ] || die "pilotfish binary not found at $PILOTFISH (build it with 'make')" ;;
    haproxy) ;;
    *) die "BENCH_STANDIN must be empty or 'haproxy', got '$STANDIN'" ;;
esac
case "$BACKEND" in
    nginx) command -v nginx >/dev/null 2>&1 || die "nginx not found (install nginx-light or use BENCH_BACKEND=pf-backend)" ;;
    pf-backend) [ -x "$BUILD/pf-backend" ] || die "pf-backend not found at $BUILD/pf-backend" ;;
    *) die "BENCH_BACKEND must be nginx or pf-backend, got '$BACKEND'" ;;
esac
CLK_TCK=$(getconf CLK_TCK)

# CPU pinning. The machine has 2 cores: the proxy under test gets CPU 1 to itself so
# its CPU time and throughput are not disturbed by the load generator. wrk and the
# backends share CPU 0: they are the "rest of the world", and keeping them off the
# proxy's core matters more than isolating them from each other. Consequence: on a
# 2-core box the load side can saturate before the proxy does, so req/s may be capped
# by CPU 0 for both proxies; req/CPU-s (proxy CPU only) stays a fair comparison.
PINNING="no pinning"
if [ "$PIN" = 1 ]; then
    if [ "$(nproc)" -ge 2 ] && taskset -c "$PROXY_CPU" true 2>/dev/null &&
        taskset -c "$LOAD_CPU" true 2>/dev/null; then
        PINNING="proxy on CPU $PROXY_CPU, wrk+backends on CPU $LOAD_CPU"
    else
        PIN=0
        note "CPU pinning disabled (need CPUs $PROXY_CPU and $LOAD_CPU available; nproc=$(nproc))"
    fi
fi
# pin CPU CMD... : run CMD on CPU when pinning is on.
pin() {
    local cpu=$1
    shift
    if [ "$PIN" = 1 ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

# ---- process bookkeeping ------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pf-bench.XXXXXX")
PIDS=() # every process group we started (each via setsid, so PID == PGID)

# Is anything of what we started as $1 still running (not a zombie)? Checks the PID
# itself and its process group: right after `&` the child may not have reached
# setsid yet (then PGID != PID), and later the group may hold forked workers.
group_alive() {
    ps -e -o pid=,pgid=,stat= 2>/dev/null |
        awk -v g="$1" '($1 == g || $2 == g) && $3 !~ /^Z/ { f = 1 } END { exit !f }'
}

# Stop what we started as $1 (process and its group): TERM, up to 5 s grace, then
# KILL; reap it.
stop_group() {
    local pid=$1 i
    if group_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        kill -TERM -- "-$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            group_alive "$pid" || break
            sleep 0.1
        done
        if group_alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_group "${PIDS[i]}"; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then note "kept work dir $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Benchmark a private copy of the binaries: a rebuild in build/ while the benchmark
# runs must not change what later rounds measure.
if [ -z "$STANDIN" ]; then
    cp "$PILOTFISH" "$WORK/pilotfish"
    PILOTFISH_BIN="$WORK/pilotfish"
fi
if [ "$BACKEND" = pf-backend ]; then
    cp "$BUILD/pf-backend" "$WORK/pf-backend"
fi

# start_bg LOG CPU CMD... : start CMD in its own session/process group (so that any
# worker processes it forks can be measured and stopped together), pinned to CPU,
# stdout+stderr to LOG. Sets STARTED_PID.
start_bg() {
    local log=$1 cpu=$2 pre=()
    shift 2
    [ "$PIN" = 1 ] && pre=(taskset -c "$cpu")
    # A simple command (no function, no pipeline) so bash forks once and execs:
    # $! is then the process itself. This script has no job control, so the child
    # is not a group leader and setsid does not fork again; setsid and taskset
    # both exec, so the PID of the final program is $! and it leads its own group.
    setsid "${pre[@]}" "$@" </dev/null >"$log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

free_port() { "$PY" "$LIB" free-port; }

# fail_start WHAT LOG: clear message naming what did not start, with its log tail.
fail_start() {
    echo "bench: ERROR: $1 did not start" >&2
    if [ -s "$2" ]; then
        echo "---- last lines of its log ($(basename "$2")) ----" >&2
        tail -n 20 "$2" >&2
    fi
    exit 1
}

# wait_http WHAT URL PID LOG : poll URL until it answers 2xx, bounded by START_TIMEOUT.
# Returns 0 when ready, 1 when the process exited meanwhile (callers retry: the usual
# cause is a port from free_port taken by someone else before our bind). Not being
# ready in time is fatal.
wait_http() {
    local what=$1 url=$2 pid=$3 log=$4 deadline=$((SECONDS + START_TIMEOUT)) pgid
    while :; do
        # Alive is checked after a 2xx too: the answer could come from someone else
        # who owns the port while our process died on bind.
        if curl -sf -o /dev/null --max-time 1 "$url"; then
            sleep 0.05
            group_alive "$pid" || return 1
            pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
            [ "$pgid" = "$pid" ] || die "$what is not in its own process group (pgid '$pgid', pid $pid): cannot measure it"
            return 0
        fi
        group_alive "$pid" || return 1
        [ "$SECONDS" -lt "$deadline" ] || fail_start "$what (no 2xx from $url within ${START_TIMEOUT}s)" "$log"
        sleep 0.1
    done
}

# retry_or_fail ATTEMPT WHAT LOG PID : after a start attempt whose process exited,
# clean it up; on the last attempt give up with its log.
ATTEMPTS=3
retry_or_fail() {
    stop_group "$4"
    forget_pid "$4"
    [ "$1" -lt "$ATTEMPTS" ] || fail_start "$2 (process exited, $ATTEMPTS attempts)" "$3"
    note "$2 exited during startup, retrying with new ports"
}

# ---- backends ------------------------------------------------------------------------
BACKEND_PORTS=()

start_nginx_backend() {
    local name=$1 port dir attempt
    for ((attempt = 1; ; attempt++)); do
        port=$(free_port)
        dir="$WORK/nginx-$name-$attempt"
        mkdir -p "$dir/tmp"
        # Tiny fixed response; keepalive_requests is raised so that nginx never retires
        # the proxies' pooled upstream connections in the middle of a run.
        cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port;
        location / { default_type text/plain; return 200 "$name\n"; }
    }
}
EOF
        start_bg "$dir/out.log" "$LOAD_CPU" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
        wait_http "nginx backend $name (127.0.0.1:$port)" "http://127.0.0.1:$port/" "$STARTED_PID" "$dir/error.log" && break
        retry_or_fail "$attempt" "nginx backend $name" "$dir/error.log" "$STARTED_PID"
    done
    BACKEND_PORTS+=("$port")
}

start_pf_backend() {
    local name=$1 port="" deadline=$((SECONDS + START_TIMEOUT)) pid out
    out="$WORK/pf-backend-$name.log"
    start_bg "$out" "$LOAD_CPU" "$WORK/pf-backend" --listen 127.0.0.1:0 --name "$name"
    pid=$STARTED_PID
    # It binds port 0 and announces the port as "listening 127.0.0.1:PORT".
    while [ -z "$port" ]; do
        port=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n1)
        [ -n "$port" ] && break
        group_alive "$pid" || fail_start "pf-backend $name (process exited)" "$out"
        [ "$SECONDS" -lt "$deadline" ] || fail_start "pf-backend $name (no 'listening' line within ${START_TIMEOUT}s)" "$out"
        sleep 0.1
    done
    # pf-backend picks its own port (no race to retry), so exiting here is fatal.
    wait_http "pf-backend $name (127.0.0.1:$port)" "http://127.0.0.1:$port/" "$pid" "$out" ||
        fail_start "pf-backend $name (process exited)" "$out"
    BACKEND_PORTS+=("$port")
}

# ---- proxies ---------------------------------------------------------------------
# start_proxy KIND LABEL : sets PROXY_PID, PROXY_PORT, PROXY_LOG.
start_haproxy() {
    local label=$1 dir attempt
    for ((attempt = 1; ; attempt++)); do
        PROXY_PORT=$(free_port)
        dir=$(mktemp -d "$WORK/haproxy.XXXX")
        # Single thread to match pilotfish --workers 1; no log lines at all (= no
        # logging); upstream connections are pooled and shared across client sessions
        # (http-reuse always) so the Connection: close case does not reconnect upstream.
        # maxconn is explicit so haproxy does not size itself from the fd limit.
        cat >"$dir/haproxy.cfg" <<EOF
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
    timeout queue 10s

frontend bench
    bind 127.0.0.1:$PROXY_PORT
    default_backend b

backend b
    balance roundrobin
    server b1 127.0.0.1:${BACKEND_PORTS[0]}
    server b2 127.0.0.1:${BACKEND_PORTS[1]}
EOF
        PROXY_LOG="$dir/haproxy.log"
        start_bg "$PROXY_LOG" "$PROXY_CPU" "$HAPROXY" -db -f "$dir/haproxy.cfg"
        PROXY_PID=$STARTED_PID
        wait_http "$label (haproxy on 127.0.0.1:$PROXY_PORT)" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID" "$PROXY_LOG" && break
        retry_or_fail "$attempt" "$label (haproxy)" "$PROXY_LOG" "$PROXY_PID"
    done
}

start_pilotfish() {
    local dir admin attempt
    for ((attempt = 1; ; attempt++)); do
        PROXY_PORT=$(free_port)
        admin=$(free_port)
        dir=$(mktemp -d "$WORK/pilotfish.XXXX")
        cat >"$dir/pilotfish.json" <<EOF
{"admin": {"address": "127.0.0.1:$admin"}, "access_log": false,
 "listeners": [{"name": "bench", "address": "127.0.0.1:$PROXY_PORT",
                "routes": [{"match": {"prefix": "/"}, "cluster": "b"}]}],
 "clusters": [{"name": "b", "endpoints": ["127.0.0.1:${BACKEND_PORTS[0]}", "127.0.0.1:${BACKEND_PORTS[1]}"]}]}
EOF
        PROXY_LOG="$dir/pilotfish.log"
        start_bg "$PROXY_LOG" "$PROXY_CPU" "$PILOTFISH_BIN" --config "$dir/pilotfish.json" --workers 1
        PROXY_PID=$STARTED_PID
        # Ready on admin must also mean it proxies; measuring a proxy that answers 502
        # would be meaningless, so the listener has to answer 2xx too.
        wait_http "pilotfish admin (/ready on 127.0.0.1:$admin)" "http://127.0.0.1:$admin/ready" "$PROXY_PID" "$PROXY_LOG" &&
            wait_http "pilotfish listener (127.0.0.1:$PROXY_PORT)" "http://127.0.0.1:$PROXY_PORT/" "$PROXY_PID" "$PROXY_LOG" &&
            break
        retry_or_fail "$attempt" pilotfish "$PROXY_LOG" "$PROXY_PID"
    done
}

start_proxy() {
    case "$1" in
        pilotfish) if [ "$STANDIN" = haproxy ]; then start_haproxy "pilotfish stand-in"; else start_pilotfish; fi ;;
        haproxy) start_haproxy haproxy ;;
    esac
}

# Both backends should be reached (round robin); a warning, not a failure.
check_spread() {
    local proxy=$1 i body seen=""
    for i in 1 2 3 4; do
        body=$(curl -s --max-time 2 "http://127.0.0.1:$PROXY_PORT/" || true)
        case " $seen " in *" $body "*) ;; *) seen="$seen $body" ;; esac
    done
    case "$seen" in
        *b1*b2* | *b2*b1*) ;;
        *) note "warning: $proxy did not spread 4 requests over both backends (saw:${seen:- nothing})" ;;
    esac
}

# ---- one measured run --------------------------------------------------------------
RUNS="$WORK/runs.jsonl"
: >"$RUNS"

run_wrk() { # run_wrk SECONDS OUTFILE [wrk args...]; bounded twice: -d and timeout(1)
    local d=$1 out=$2
    shift 2
    local rc=0
    # --foreground keeps wrk in our process group so Ctrl-C stops it at once.
    pin "$LOAD_CPU" timeout --foreground -k 5 $((d + 30)) wrk -t1 -c"$CONNS" -d"${d}s" --latency "$@" \
        "http://127.0.0.1:$PROXY_PORT/" >"$out" 2>&1 || rc=$?
    return "$rc"
}

run_one() {
    local case=$1 proxy=$2 round=$3 hdr=() s0 s1 ticks hwm idle alive=1 rc=0 rundir
    [ "$case" = close ] && hdr=(-H 'Connection: close')
    rundir="$WORK/run-$case-$proxy-$round"
    mkdir -p "$rundir"
    start_proxy "$proxy"
    check_spread "$proxy"
    sleep 0.3 # let startup allocations settle before sampling idle RSS
    read -r _ _ idle _ < <("$PY" "$LIB" procstat "$PROXY_PID")
    if [ "$WARM_S" -gt 0 ]; then run_wrk "$WARM_S" "$rundir/warmup.txt" "${hdr[@]}" || true; fi
    # CPU is sampled only around the measured run; the proxy is idle at both points.
    read -r s0 _ _ _ < <("$PY" "$LIB" procstat "$PROXY_PID")
    run_wrk "$DUR_S" "$rundir/wrk.txt" "${hdr[@]}" || rc=$?
    read -r s1 hwm _ _ < <("$PY" "$LIB" procstat "$PROXY_PID")
    group_alive "$PROXY_PID" || alive=0
    ticks=$((s1 - s0))
    [ "$ticks" -ge 0 ] || ticks=0 # a worker vanished without being reaped: no data
    "$PY" "$LIB" record --runs "$RUNS" --wrk "$rundir/wrk.txt" --case "$case" --proxy "$proxy" \
        --round "$round" --cpu-ticks "$ticks" --clk-tck "$CLK_TCK" --peak-kb "$hwm" \
        --idle-kb "$idle" --wrk-exit "$rc" --alive "$alive"
    if [ "$alive" = 0 ]; then
        note "warning: $proxy exited during the run; last log lines:"
        tail -n 10 "$PROXY_LOG" | sed 's/^/    /'
    fi
    stop_group "$PROXY_PID"
    forget_pid "$PROXY_PID"
}

# ---- main ----------------------------------------------------------------------------
# Cases with a script of their own run first, one after the other, each on its own:
#   dns       bench/dns.sh: a 500-target SRV cluster against the same endpoints listed
#   k8s       bench/k8s.sh: 1,000 Services / 10,000 endpoints from the fake API server
#   fleet     bench/fleet.sh: 100 sidecars against one API server, on_demand vs watch_all
#   churn     bench/ondemand_churn.sh: 20,000 Services created, used and let go by one sidecar
#   policies  bench/policies.sh: every lb_policy against round robin, equal and skewed backends
#   failover  bench/failover.sh     health   bench/health.sh
#   status    bench/status_page.sh: the admin status page's render time at 1,000 clusters
#   reload    bench/reload.sh: reloads of 1,000 clusters and routes, and p99 while they apply
#   tls       bench/tls.sh: TLS termination against haproxy with the same certificate
#   h2        bench/h2.sh: h2load over h2c against haproxy, HTTP/1.1 and h2c upstreams
#   tcp       bench/tcp.sh: tcp listener bytes per CPU-second against haproxy in mode tcp
#   routes    bench/routes.sh: a route with matchers, a split, an edit and a rate limit vs a plain one
for own in dns:dns k8s:k8s fleet:fleet churn:ondemand_churn policies:policies failover:failover health:health status:status_page \
    reload:reload tls:tls h2:h2 tcp:tcp routes:routes; do
    name=${own%%:*}
    [[ ",$CASES," == *,$name,* ]] || continue
    bash "$HERE/${own#*:}.sh" "$BUILD"
    CASES=$(tr , '\n' <<<"$CASES" | grep -vx "$name" | paste -sd, -) || true
    [ -n "$CASES" ] || exit 0
done
IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
    [[ "$c" == keepalive || "$c" == close ]] || die "unknown case '$c' in BENCH_CASES (keepalive,close)"
done

SUBJECT_LABEL=pilotfish
[ "$STANDIN" = haproxy ] && SUBJECT_LABEL="pilotfish=haproxy*"
nruns=$((${#CASE_LIST[@]} * ROUNDS * 2))
note "pilotfish: ${STANDIN:+STAND-IN $STANDIN (harness self-test), not }$PILOTFISH"
note "peer: $("$HAPROXY" -v | head -n1)"
note "backend: $BACKEND x2; wrk -t1 -c$CONNS, ${WARM_S}s warm-up + ${DUR_S}s per run; $PINNING"
note "$nruns runs (cases: $CASES; $ROUNDS rounds, interleaved), about $((nruns * (DUR_S + WARM_S + 1) + 5))s"

for name in b1 b2; do
    if [ "$BACKEND" = nginx ]; then start_nginx_backend "$name"; else start_pf_backend "$name"; fi
done
note "backends up on 127.0.0.1:${BACKEND_PORTS[0]} and 127.0.0.1:${BACKEND_PORTS[1]}"

for c in "${CASE_LIST[@]}"; do
    for ((r = 1; r <= ROUNDS; r++)); do
        run_one "$c" pilotfish "$r"
        run_one "$c" haproxy "$r"
    done
done

# Run metadata for the JSON file (values passed through the environment).
META="$WORK/meta.json"
BM_BACKEND=$BACKEND BM_DURATION="${DUR_S}s" BM_WARMUP="${WARM_S}s" BM_ROUNDS=$ROUNDS \
    BM_CONNS=$CONNS BM_PINNING=$PINNING BM_STANDIN=$STANDIN BM_LABEL=$SUBJECT_LABEL \
    BM_HAPROXY="$("$HAPROXY" -v | head -n1)" BM_PILOTFISH=$PILOTFISH BM_CLK=$CLK_TCK \
    BM_REV="$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$PY" - "$META" <<'EOF'
import datetime, json, os, sys
e = os.environ
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_rev": e["BM_REV"], "backend": e["BM_BACKEND"], "duration": e["BM_DURATION"],
    "warmup": e["BM_WARMUP"], "rounds": int(e["BM_ROUNDS"]),
    "connections": int(e["BM_CONNS"]), "wrk_threads": 1, "pinning": e["BM_PINNING"],
    "clk_tck": int(e["BM_CLK"]), "haproxy": e["BM_HAPROXY"],
    "pilotfish": e["BM_PILOTFISH"], "standin": e["BM_STANDIN"] or None,
    "labels": {"pilotfish": e["BM_LABEL"], "haproxy": "haproxy"},
    "nproc": os.cpu_count(),
}
with open(sys.argv[1], "w") as f:
    json.dump(meta, f)
EOF

"$PY" "$LIB" report --runs "$RUNS" --meta "$META" --json "$BUILD/bench-results.json" \
    --cases "$CASES" --subject pilotfish --peer haproxy --agg "$AGG"
[ "$STANDIN" = haproxy ] && note "(* pilotfish row is haproxy standing in: an A/A run that shows measurement noise)"
exit 0
