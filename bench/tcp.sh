#!/bin/bash
# TCP (L4) relaying: pilotfish's tcp listener vs haproxy in mode tcp, both in front of the
# same iperf3 server, each proxy with its defaults (pilotfish buffer_bytes 64 KiB, haproxy
# tune.bufsize 16 KiB) and one thread, pinned to CPU 1 (BENCH_PROXY_CPU); iperf3's client and
# server share CPU 0 (BENCH_LOAD_CPU). Preamble (ports, pinning, cleanup): bench/lib.sh. Prints, per round and direction (upload: client to server; download: -R), the
# bytes/s iperf3 saw and the bytes relayed per proxy CPU-second (user + system), then the
# ratio of the best rounds. Usage: bash bench/tcp.sh BUILD_DIR   (~2 min with the defaults)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
LOAD_WHAT=iperf3
bench_init tcp.sh "${1:-}"
B=$BUILD
ROUNDS=${BENCH_ROUNDS:-2}
DUR=$(secs "${BENCH_DURATION:-8}") # seconds per iperf3 run
STREAMS=${BENCH_STREAMS:-4} # parallel connections per run (iperf3 -P)
bench_need iperf3 haproxy taskset
cd "$WORK"
BP=$(free_port); PP=$(free_port); HP=$(free_port); AP=$(free_port)
start_bg iperf.out "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$BP"
wait_port iperf3 "$BP" "$STARTED_PID" iperf.out
cat >pf.json <<J
{"admin":{"address":"127.0.0.1:$AP"},"access_log":false,
 "listeners":[{"name":"tcp","address":"127.0.0.1:$PP","protocol":"tcp","cluster":"b"}],
 "clusters":[{"name":"b","endpoints":["127.0.0.1:$BP"]}]}
J
cat >hp.cfg <<J
global
  maxconn 4000
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$HP
  default_backend b
backend b
  server s1 127.0.0.1:$BP
J
start_bg pf.out "$PROXY_CPU" "$B/pilotfish" --config pf.json --workers 1; PF=$STARTED_PID
start_bg hp.out "$PROXY_CPU" haproxy -db -f hp.cfg; HA=$STARTED_PID
wait_port pilotfish "$PP" "$PF" pf.out; wait_port haproxy "$HP" "$HA" hp.out
TCK=$CLK_TCK
: >results.txt
run() { # label pid port direction [-R]
    local label=$1 pid=$2 p=$3 dir=$4; shift 4
    local c0 c1
    c0=$(cpu_ticks "$pid")
    pin "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$p" -t "$DUR" -P "$STREAMS" -J "$@" >run.json
    c1=$(cpu_ticks "$pid")
    python3 - "$label" "$dir" "$c0" "$c1" "$TCK" <<'P' | tee -a results.txt
import json, sys
label, direction, c0, c1, tck = sys.argv[1:]
end = json.load(open("run.json"))["end"]
got = end["sum_received"]
cpu = (float(c1) - float(c0)) / float(tck)
rate = got["bytes"] / got["seconds"]
print(f"{label:10s} {direction:8s} MB/s={rate / 1e6:8.1f} proxy_cpu_s={cpu:6.2f} "
      f"MB_per_cpu_s={got['bytes'] / 1e6 / cpu if cpu else 0:8.1f}")
P
}
for r in $(seq "$ROUNDS"); do
    run pilotfish "$PF" "$PP" upload
    run haproxy "$HA" "$HP" upload
    run pilotfish "$PF" "$PP" download -R
    run haproxy "$HA" "$HP" download -R
done
python3 - <<'P'
import re
best = {}
for line in open("results.txt"):
    m = re.match(r"(\S+)\s+(\S+)\s+MB/s=\s*([\d.]+).*MB_per_cpu_s=\s*([\d.]+)", line)
    if m:
        k = (m[1], m[2])
        best[k] = max(best.get(k, (0, 0)), (float(m[4]), float(m[3])))
for d in ("upload", "download"):
    pf, hp = best.get(("pilotfish", d)), best.get(("haproxy", d))
    if pf and hp and hp[0]:
        print(f"tcp {d:8s} best MB per proxy CPU-s: pilotfish {pf[0]:.1f}, haproxy {hp[0]:.1f} "
              f"({pf[0] / hp[0]:.2f}x); MB/s {pf[1]:.1f} vs {hp[1]:.1f}")
P
