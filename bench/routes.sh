#!/bin/bash
# Route actions' cost: one pilotfish with two listeners in front of the same pf-backends, a
# plain route (prefix "/" to one cluster) and a rich one (three header matchers, a 90/10
# weighted split, a request header edit and a rate limit set high enough never to refuse).
# The plain route's cluster holds both backends weighted 9:1, so that both routes send the
# same share to each backend and what differs is the route's own work, not the traffic
# pattern upstream (answers from two backends wake the proxy differently than from one),
# driven in turns by the same h2load at the same fixed rate (CONNS x RPS requests/s: a
# proxy's CPU per request depends on how busy it is, so both get the same load) with the
# same headers. Prints, per round, requests/s and requests per proxy CPU-second of each,
# then the rich/plain ratio over all rounds and the median of the rounds' ratios.
# Floor: the rich route at 0.95x the plain one's requests per CPU-second or better.
# Usage: bash bench/routes.sh BUILD_DIR   (a quick look, not a timed test; ~60 s)
# Knobs: BENCH_ROUNDS (3), BENCH_DURATION (8s), BENCH_CONNECTIONS (20), BENCH_ROUTES_RPS (75).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
LOAD_WHAT=h2load
bench_init routes.sh "${1:-}"
B=$BUILD
D=$WORK
ROUNDS=${BENCH_ROUNDS:-3}
DUR=${BENCH_DURATION:-8s}
CONNS=${BENCH_CONNECTIONS:-20}
RPS=${BENCH_ROUTES_RPS:-75} # per connection: the same offered load for both routes
bench_need h2load taskset
cd "$D"
start_pf_backend v1; start_pf_backend v2
B1=${BACKEND_PORTS[0]}; B2=${BACKEND_PORTS[1]}
PLAIN=$(free_port); RICH=$(free_port); AP=$(free_port)
cat >pf.json <<J
{"admin":{"address":"127.0.0.1:$AP"},"access_log":false,
 "listeners":[
  {"name":"plain","address":"127.0.0.1:$PLAIN","routes":[{"match":{"prefix":"/"},"cluster":"both"}]},
  {"name":"rich","address":"127.0.0.1:$RICH","routes":[{
    "match":{"prefix":"/","headers":[{"name":"x-env","exact":"prod"},
                                     {"name":"x-tenant","prefix":"acme"},
                                     {"name":"x-trace","present":true}]},
    "clusters":[{"name":"v1","weight":90},{"name":"v2","weight":10}],
    "request_headers":{"set":{"x-route":"rich"}},
    "rate_limit":{"requests_per_second":1000000,"burst":1000000}}]}],
 "clusters":[{"name":"v1","endpoints":["127.0.0.1:$B1"]},{"name":"v2","endpoints":["127.0.0.1:$B2"]},
  {"name":"both","lb_policy":"weighted_round_robin",
   "endpoints":[{"address":"127.0.0.1:$B1","weight":9},{"address":"127.0.0.1:$B2","weight":1}]}]}
J
start_bg pf.out "$PROXY_CPU" "$B/pilotfish" --config pf.json --workers 1; PF=$STARTED_PID
wait_port pilotfish "$PLAIN" "$PF" pf.out; wait_port pilotfish "$RICH" "$PF" pf.out
# CPU time in nanoseconds summed over the process's threads (lib.sh cpu_ns).
TCK=1000000000
RESULTS=$D/results
run() { # label port
    local label=$1 p=$2 c0 c1 out
    c0=$(cpu_ns "$PF")
    out=$(pin "$LOAD_CPU" h2load --h1 -c "$CONNS" --rps "$RPS" -D "$DUR" -H "x-env: prod" \
        -H "x-tenant: acme-eu" -H "x-trace: 1" "http://127.0.0.1:$p/" 2>&1)
    c1=$(cpu_ns "$PF")
    python3 - "$label" "$(echo "$out" | awk '/^requests:/{print $8}')" \
        "$(echo "$out" | awk '/^status codes:/{print $3}')" "${DUR%s}" "$c0" "$c1" "$TCK" \
        >>"$RESULTS" <<'P'
import sys
label, done, ok, secs, c0, c1, tck = sys.argv[1:]
cpu = (float(c1) - float(c0)) / float(tck)
done = int(done or 0)
print(f"{label} {done / float(secs):.0f} {cpu:.3f} {done / cpu if cpu else 0:.0f} "
      f"{done - int(ok or 0)} {done}")
P
    tail -1 "$RESULTS" |
        awk '{printf "%-6s req/s=%6s proxy_cpu_s=%6s req_per_cpu_s=%7s not_2xx=%s\n", $1, $2, $3, $4, $5}'
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
runs = {"plain": [], "rich": []}
total = {"plain": [0, 0.0], "rich": [0, 0.0]}
for line in open(sys.argv[1]):
    label, rps, cpu, per_cpu, not2xx, done = line.split()
    runs[label].append(float(per_cpu))
    total[label][0] += int(done)
    total[label][1] += float(cpu)
per_cpu = {k: (n / c if c else 0.0) for k, (n, c) in total.items()}
ratio = per_cpu["rich"] / per_cpu["plain"] if per_cpu["plain"] else 0.0
# each round's two runs are neighbours in time: their ratio shares the machine's state
pairs = statistics.median(r / p for r, p in zip(runs["rich"], runs["plain"]) if p)
verdict = "meets" if ratio >= 0.95 else "BELOW"
print(f"routes: rich/plain requests per proxy CPU-second = {ratio:.3f} (all rounds: rich "
      f"{per_cpu['rich']:.0f}, plain {per_cpu['plain']:.0f}; median of the rounds' ratios "
      f"{pairs:.3f}); floor 0.95: {verdict}")
P
