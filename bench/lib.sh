# shellcheck shell=bash disable=SC2034  # sourced: the variables it sets are the callers'
# Shared preamble of the shell benchmarks (run.sh, tcp.sh, tls.sh, routes.sh, syscalls.sh)
# and the start of the Python ones (bench_python: dns.sh, k8s.sh, h2.sh, ondemand_churn.sh,
# failover.sh, health.sh, policies.sh, reload.sh, status_page.sh).
# Sourced, not run:
#
#   HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$HERE/lib.sh"
#   bench_init NAME "${1:-}"        # BUILD, WORK, pinning, EXIT trap
#   bench_need wrk haproxy ...      # every tool named, or a clear error
#
# What it gives: die/note (prefixed with NAME), free_port, pinning (BENCH_PIN,
# BENCH_PROXY_CPU, BENCH_LOAD_CPU; proxy alone on one core, load and backends on the other)
# and pin, start_bg (own process group, pinned, logged; every start is stopped by the EXIT
# trap, group and all), stop_group, wait_http / wait_port (bounded by BENCH_START_TIMEOUT),
# the nginx backend, proxy CPU time from /proc (cpu_ticks, cpu_ns) and a work directory
# removed at exit (BENCH_KEEP=1 keeps it). Everything binds 127.0.0.1.
# The Python benchmarks share the same things through bench/benchlib.py.

BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
LIB="$BENCH_LIB_DIR/benchlib.py"
PIN=${BENCH_PIN:-1} # 0 disables taskset pinning
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
START_TIMEOUT=${BENCH_START_TIMEOUT:-10} # seconds to wait for anything to become ready
BENCH_NAME=bench
PIDS=() # every process group we started (each via setsid, so PID == PGID)

die() {
    echo "$BENCH_NAME: ERROR: $*" >&2
    exit 1
}
note() { echo "$BENCH_NAME: $*"; }

# bench_need TOOL...: each must be in PATH.
bench_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "'$t' not found in PATH (run 'make deps')"
    done
}

# "10s" / "10" / "1m" -> whole seconds (wrk accepts the same spellings).
secs() {
    case "$1" in
        *[!0-9sm]* | '' | s | m) die "bad duration '$1' (use e.g. 10s or 1m)" ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

# bench_init NAME [BUILD_DIR]: sets BUILD (absolute), WORK, PINNING, CLK_TCK and the traps.
# LOAD_WHAT names the load generator in PINNING (default "load").
bench_init() {
    BENCH_NAME=$1
    BUILD=$(cd "${2:-$BENCH_LIB_DIR/../build}" 2>/dev/null && pwd) ||
        die "build directory '${2:-$BENCH_LIB_DIR/../build}' does not exist"
    [ -n "$PY" ] || die "python3 not found"
    bench_need setsid curl
    CLK_TCK=$(getconf CLK_TCK)
    # The machine has 2 cores: the proxy under test gets PROXY_CPU to itself so its CPU
    # time and throughput are not disturbed by the load generator; the load and the
    # backends share LOAD_CPU. On a 2-core box the load side can saturate before the
    # proxy does; per-CPU-second figures (proxy CPU only) stay a fair comparison.
    PINNING="no pinning"
    if [ "$PIN" = 1 ]; then
        if [ "$(nproc)" -ge 2 ] && taskset -c "$PROXY_CPU" true 2>/dev/null &&
            taskset -c "$LOAD_CPU" true 2>/dev/null; then
            PINNING="proxy on CPU $PROXY_CPU, ${LOAD_WHAT:-load}+backends on CPU $LOAD_CPU"
        else
            PIN=0
            note "CPU pinning disabled (need CPUs $PROXY_CPU and $LOAD_CPU available; nproc=$(nproc))"
        fi
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pf-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# pin CPU CMD... : run CMD on CPU when pinning is on.
pin() {
    local cpu=$1
    shift
    if [ "$PIN" = 1 ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

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
bench_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_group "${PIDS[i]}"; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then note "kept work dir $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}

# start_bg LOG CPU CMD... : start CMD in its own session/process group (so that any
# worker processes it forks can be measured and stopped together), pinned to CPU (empty:
# not pinned), stdout+stderr to LOG. Sets STARTED_PID.
start_bg() {
    local log=$1 cpu=$2 pre=()
    shift 2
    [ "$PIN" = 1 ] && [ -n "$cpu" ] && pre=(taskset -c "$cpu")
    # A simple command (no function, no pipeline) so bash forks once and execs:
    # $! is then the process itself. The scripts have no job control, so the child
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

# bench_python "$@" <<'PYEOF' ... PYEOF: the Python benchmarks' start. Runs the
# here-document as the benchmark (it replaces this shell) with bench/ as sys.argv[1] and
# on the module path, so it can `from benchlib import ...`; the script's own arguments follow.
bench_python() {
    [ -n "$PY" ] || die "python3 not found (set PYTHON)"
    PYTHONPATH="$BENCH_LIB_DIR${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" - "$BENCH_LIB_DIR" "$@"
}

# fail_start WHAT LOG: clear message naming what did not start, with its log tail.
fail_start() {
    echo "$BENCH_NAME: ERROR: $1 did not start" >&2
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

# wait_port WHAT PORT PID LOG : like wait_http for anything that accepts TCP connections
# (iperf3, TLS listeners); a process that exits is fatal here.
wait_port() {
    local what=$1 port=$2 pid=$3 log=$4 deadline=$((SECONDS + START_TIMEOUT))
    while ! "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))"; do
        group_alive "$pid" || fail_start "$what (process exited)" "$log"
        [ "$SECONDS" -lt "$deadline" ] || fail_start "$what (nothing listens on 127.0.0.1:$port within ${START_TIMEOUT}s)" "$log"
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

# start_nginx_backend NAME : one nginx (one worker, no access log) on LOAD_CPU answering
# 200 "NAME\n" on a free port; appends the port to BACKEND_PORTS. keepalive_requests is
# raised so that nginx never retires the proxies' pooled upstream connections mid-run.
BACKEND_PORTS=()
start_nginx_backend() {
    local name=$1 port dir attempt
    for ((attempt = 1; ; attempt++)); do
        port=$(free_port)
        dir="$WORK/nginx-$name-$attempt"
        mkdir -p "$dir/tmp"
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

# start_pf_backend NAME [CPU] : PF_BACKEND_BIN (default BUILD/pf-backend) on a port it picks itself (announced as
# "listening 127.0.0.1:PORT"); appends the port to BACKEND_PORTS.
start_pf_backend() {
    local name=$1 cpu=${2-$LOAD_CPU} port="" deadline=$((SECONDS + START_TIMEOUT)) pid out
    out="$WORK/pf-backend-$name.log"
    : >"$out" # exists before the child opens it: the loop below reads it at once
    start_bg "$out" "$cpu" "${PF_BACKEND_BIN:-$BUILD/pf-backend}" --listen 127.0.0.1:0 --name "$name"
    pid=$STARTED_PID
    while [ -z "$port" ]; do
        port=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" | head -n1) || true
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

# cpu_ticks PID : user+system CPU of PID's process group and descendants, in CLK_TCK ticks.
cpu_ticks() {
    local t
    read -r t _ < <("$PY" "$LIB" procstat "$1")
    echo "$t"
}

# cpu_ns PID : user+system CPU of PID's threads in nanoseconds (schedstat: finer than ticks
# of 10 ms, which would be a few percent of a short run).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }

# haproxy_http_cfg PORT : haproxy's HTTP config on stdout: PORT in front of BACKEND_PORTS,
# round robin. Single thread to match pilotfish --workers 1; no log lines at all (= no
# logging); upstream connections are pooled and shared across client sessions (http-reuse
# always) so the Connection: close case does not reconnect upstream. maxconn is explicit
# so haproxy does not size itself from the fd limit.
haproxy_http_cfg() {
    local i
    cat <<EOF
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
    bind 127.0.0.1:$1
    default_backend b

backend b
    balance roundrobin
EOF
    for i in "${!BACKEND_PORTS[@]}"; do
        echo "    server b$((i + 1)) 127.0.0.1:${BACKEND_PORTS[i]}"
    done
}

# pilotfish_http_cfg ADMIN_PORT PORT : pilotfish's config on stdout, the same as
# haproxy_http_cfg: PORT in front of BACKEND_PORTS (round robin), no access log.
pilotfish_http_cfg() {
    local eps="" p
    for p in "${BACKEND_PORTS[@]}"; do eps="$eps${eps:+, }\"127.0.0.1:$p\""; done
    cat <<EOF
{"admin": {"address": "127.0.0.1:$1"}, "access_log": false,
 "listeners": [{"name": "bench", "address": "127.0.0.1:$2",
                "routes": [{"match": {"prefix": "/"}, "cluster": "b"}]}],
 "clusters": [{"name": "b", "endpoints": [$eps]}]}
EOF
}

# start_http_proxy KIND PORT PILOTFISH_BINARY: haproxy (KIND haproxy) or that pilotfish (any
# other KIND, named so in its log) on PORT with the configs above, pinned on PROXY_CPU, ready
# when PORT answers; sets PROXY_PID. The measuring scripts' shared start (syscalls, cycles).
start_http_proxy() {
    local kind=$1 port=$2 binary=$3
    if [ "$kind" != haproxy ]; then
        pilotfish_http_cfg "$(free_port)" "$port" >"$WORK/pf.json"
        start_bg "$WORK/$kind.log" "$PROXY_CPU" "$binary" --config "$WORK/pf.json" --workers 1
    else
        haproxy_http_cfg "$port" >"$WORK/haproxy.cfg"
        start_bg "$WORK/haproxy.log" "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
    fi
    PROXY_PID=$STARTED_PID
    wait_http "$kind (127.0.0.1:$port)" "http://127.0.0.1:$port/" "$PROXY_PID" "$WORK/$kind.log" ||
        fail_start "$kind (process exited)" "$WORK/$kind.log"
}
