#!/bin/bash
# Route actions' cost: one pilotfish with two listeners in front of the same pf-backends, a
# plain route (prefix "/" to one cluster) and a rich one (three header matchers, a 90/10
# weighted split, a request header edit and a rate limit set high enough never to refuse),
# driven in turns by the same wrk with the same headers. Prints, per round, requests/s and
# requests per proxy CPU-second of each, then the rich/plain ratio of the best rounds.
# Floor: the rich route at 0.95x the plain one's requests per CPU-second or better.
# Usage: bash bench/routes.sh BUILD_DIR   (a quick look, not a timed test; ~60 s)
# Knobs: BENCH_ROUNDS (3), BENCH_DURATION (8s), BENCH_CONNECTIONS (50).
set -eu
B=$(cd "${1:-build}" && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
DUR=${BENCH_DURATION:-8s}
CONNS=${BENCH_CONNECTIONS:-50}
for t in wrk taskset python3; do
    command -v $t >/dev/null || { echo "routes.sh: $t not found" >&2; exit 1; }
done
D=$(mktemp -d /tmp/pf-routes-bench.XXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))" && return 0
        sleep 0.1
    done
    echo "routes.sh: nothing listens on $1" >&2; exit 1
}
cd "$D"
B1=$(port); B2=$(port); PLAIN=$(port); RICH=$(port); AP=$(port)
taskset -c 0 "$B/pf-backend" --listen "127.0.0.1:$B1" --name v1 >b1.out 2>&1 & PIDS+=($!)
taskset -c 0 "$B/pf-backend" --listen "127.0.0.1:$B2" --name v2 >b2.out 2>&1 & PIDS+=($!)
wait_port "$B1"; wait_port "$B2"
cat >pf.json <<J
{"admin":{"address":"127.0.0.1:$AP"},"access_log":false,
 "listeners":[
  {"name":"plain","address":"127.0.0.1:$PLAIN","routes":[{"match":{"prefix":"/"},"cluster":"v1"}]},
  {"name":"rich","address":"127.0.0.1:$RICH","routes":[{
    "match":{"prefix":"/","headers":[{"name":"x-env","exact":"prod"},
                                     {"name":"x-tenant","prefix":"acme"},
                                     {"name":"x-trace","present":true}]},
    "clusters":[{"name":"v1","weight":90},{"name":"v2","weight":10}],
    "request_headers":{"set":{"x-route":"rich"}},
    "rate_limit":{"requests_per_second":1000000,"burst":1000000}}]}],
 "clusters":[{"name":"v1","endpoints":["127.0.0.1:$B1"]},{"name":"v2","endpoints":["127.0.0.1:$B2"]}]}
J
taskset -c 1 "$B/pilotfish" --config pf.json --workers 1 >pf.out 2>&1 & PF=$!; PIDS+=($PF)
wait_port "$PLAIN"; wait_port "$RICH"
# CPU time in nanoseconds summed over the process's threads (schedstat: clock ticks of
# 10 ms would be a few percent of a short run).
cpu() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
TCK=1000000000
RESULTS=$D/results
run() { # label port
    local label=$1 p=$2 c0 c1 out
    c0=$(cpu "$PF")
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" -H "x-env: prod" -H "x-tenant: acme-eu" \
        -H "x-trace: 1" "http://127.0.0.1:$p/" 2>&1)
    c1=$(cpu "$PF")
    python3 - "$label" "$(echo "$out" | awk '/Requests\/sec/{print $2}')" \
        "$(echo "$out" | awk '/requests in/{print $1}')" \
        "$(echo "$out" | awk '/Non-2xx/{print $4}')" "$c0" "$c1" "$TCK" >>"$RESULTS" <<'P'
import sys
label, rps, total, non2xx, c0, c1, tck = sys.argv[1:]
cpu = (float(c1) - float(c0)) / float(tck)
print(f"{label} {float(rps):.0f} {cpu:.2f} {int(total) / cpu if cpu else 0:.0f} {non2xx or 0}")
P
    tail -1 "$RESULTS" | awk '{printf "%-6s req/s=%8s proxy_cpu_s=%6s req_per_cpu_s=%8s non2xx=%s\n", $1, $2, $3, $4, $5}'
}
# A warm-up of each, unmeasured.
DUR=2s run plain "$PLAIN" >/dev/null; DUR=2s run rich "$RICH" >/dev/null; : >"$RESULTS"
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run plain "$PLAIN"; run rich "$RICH"
    else run rich "$RICH"; run plain "$PLAIN"; fi
done
python3 - "$RESULTS" <<'P'
import sys
import statistics
best, runs = {}, {"plain": [], "rich": []}
for line in open(sys.argv[1]):
    label, rps, cpu, per_cpu, non2xx = line.split()
    best[label] = max(best.get(label, 0.0), float(per_cpu))
    runs[label].append(float(per_cpu))
ratio = best["rich"] / best["plain"] if best.get("plain") else 0.0
# each round's two runs are neighbours in time: their ratio shares the machine's state
pairs = statistics.median(r / p for r, p in zip(runs["rich"], runs["plain"]) if p)
verdict = "meets" if ratio >= 0.95 else "BELOW"
print(f"routes: rich/plain requests per proxy CPU-second = {ratio:.3f} "
      f"(best rounds: rich {best['rich']:.0f}, plain {best['plain']:.0f}; median of the "
      f"rounds' ratios {pairs:.3f}); floor 0.95: {verdict}")
P
