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
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
LOAD_WHAT=wrk
bench_init bench "${1:-}"

# ---- knobs ------------------------------------------------------------------------
BACKEND=${BENCH_BACKEND:-nginx}          # nginx | pf-backend
DURATION=${BENCH_DURATION:-10s}          # measured run length (wrk -d)
WARMUP=${BENCH_WARMUP:-2s}               # unmeasured run right before each measured one
ROUNDS=${BENCH_ROUNDS:-3}                # pilotfish,haproxy pairs per case (interleaved)
CONNS=${BENCH_CONNECTIONS:-50}           # wrk -c
# best: the round with the highest req/s (all its metrics together). Interference on
# a shared box only ever slows a round down, so the best round is the closest to what
# the proxy can do; with few rounds a median gets dragged by one disturbed round.
# median: each metric's median over rounds. The report also prints the paired rounds'
# req/CPU-s ratios and their median (benchlib.py paired_rounds) whichever is chosen.
AGG=${BENCH_AGG:-best}
CASES=${BENCH_CASES:-keepalive,close,policies,failover,health,dns,k8s,fleet,churn,status,reload,tls,h2,tcp,routes}
STANDIN=${BENCH_STANDIN:-}               # "haproxy": run haproxy in pilotfish's slot (A/A self-test)
# BENCH_PIN, BENCH_PROXY_CPU, BENCH_LOAD_CPU, BENCH_START_TIMEOUT: see lib.sh

DUR_S=$(secs "$DURATION")
WARM_S=$(secs "$WARMUP")
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer, got '$ROUNDS'"
[[ "$CONNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer, got '$CONNS'"
[[ "$AGG" == median || "$AGG" == best ]] || die "BENCH_AGG must be median or best, got '$AGG'"
[ "$DUR_S" -ge 1 ] || die "BENCH_DURATION must be at least 1s"

# ---- tools ------------------------------------------------------------------------
bench_need wrk haproxy
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
# Benchmark a private copy of the binaries: a rebuild in build/ while the benchmark
# runs must not change what later rounds measure.
if [ -z "$STANDIN" ]; then
    cp "$PILOTFISH" "$WORK/pilotfish"
    PILOTFISH_BIN="$WORK/pilotfish"
fi
if [ "$BACKEND" = pf-backend ]; then
    cp "$BUILD/pf-backend" "$WORK/pf-backend"
    PF_BACKEND_BIN="$WORK/pf-backend"
fi

# ---- proxies ---------------------------------------------------------------------
# start_proxy KIND LABEL : sets PROXY_PID, PROXY_PORT, PROXY_LOG.
start_haproxy() {
    local label=$1 dir attempt
    for ((attempt = 1; ; attempt++)); do
        PROXY_PORT=$(free_port)
        dir=$(mktemp -d "$WORK/haproxy.XXXX")
        haproxy_http_cfg "$PROXY_PORT" >"$dir/haproxy.cfg"
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
        pilotfish_http_cfg "$admin" "$PROXY_PORT" >"$dir/pilotfish.json"
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
