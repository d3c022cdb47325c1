#!/usr/bin/env bash
# make demo: three small backends and pilotfish on loopback with examples/pilotfish.json,
# a few requests that show routing, weighted balancing and the admin endpoints, then
# everything started here is stopped.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
config=examples/pilotfish.json
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for port in 15001 9901 8081 8082 8083; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "demo: 127.0.0.1:$port is already in use; stop what runs there first" >&2
        exit 1
    fi
done

start_backend() { "$build/pf-backend" --listen "127.0.0.1:$1" --name "$2" >"$work/$2.out" & pids+=($!); }
start_backend 8081 web-a
start_backend 8082 web-b
start_backend 8083 api

"$build/pilotfish" --config "$config" >"$work/access.log" 2>"$work/pilotfish.log" &
pids+=($!)
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf http://127.0.0.1:9901/ready >/dev/null || { echo "demo: pilotfish did not become ready"; cat "$work/pilotfish.log"; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "config: $config"
cat "$config"

say "routing: Host api.local + /v1/ goes to cluster api, everything else to web"
printf '  curl -H "Host: api.local" /v1/users  -> %s' "$(curl -s -H 'Host: api.local' http://127.0.0.1:15001/v1/users)"
echo
printf '  curl /index.html                     -> %s' "$(curl -s http://127.0.0.1:15001/index.html)"
echo
printf '  absolute-form (http_proxy style)     -> %s' "$(curl -s -x http://127.0.0.1:15001 http://api.local/v1/users)"
echo

say "weighted round robin: web-a weight 1, web-b weight 2, 30 requests"
for _ in $(seq 30); do curl -s http://127.0.0.1:15001/; done | sort | uniq -c

say "headers the backend received (hop-by-hop removed, X-Forwarded-*, X-Request-Id)"
curl -s -H 'Connection: keep-alive, X-Secret' -H 'X-Secret: dropped' http://127.0.0.1:15001/headers
echo

say "a route with no match, and an unknown authority: pilotfish is not an open proxy"
curl -s -o /dev/null -w '  CONNECT example.com:443 -> %{http_code}\n' -X CONNECT http://127.0.0.1:15001/ --request-target example.com:443 || true

say "admin: /ready, /clusters, /stats/prometheus (excerpt)"
curl -s http://127.0.0.1:9901/ready
curl -s http://127.0.0.1:9901/clusters
curl -s http://127.0.0.1:9901/stats/prometheus | grep -E '^pilotfish_(downstream|upstream)_requests_total|^pilotfish_cluster_endpoints' | grep -v ' 0$'

say "access log (JSON lines on stdout), last 2"
sleep 0.3
tail -n 2 "$work/access.log"
say "demo done; stopping everything it started"
