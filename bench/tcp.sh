#!/bin/bash
# TCP (L4) relaying: pilotfish's tcp listener vs haproxy in mode tcp, both in front of the
# same iperf3 server, each proxy with its defaults (pilotfish buffer_bytes 64 KiB, haproxy
# tune.bufsize 16 KiB) and one thread, pinned to CPU 0; iperf3's client and server share
# CPU 1. Prints, per round and direction (upload: client to server; download: -R), the
# bytes/s iperf3 saw and the bytes relayed per proxy CPU-second (user + system), then the
# ratio of the best rounds. Usage: bash bench/tcp.sh BUILD_DIR   (~2 min with the defaults)
set -eu
B=$(cd "${1:-build}" && pwd)
ROUNDS=${BENCH_ROUNDS:-2}
DUR=${BENCH_DURATION:-8}  # seconds per iperf3 run
STREAMS=${BENCH_STREAMS:-4} # parallel connections per run (iperf3 -P)
for t in iperf3 haproxy taskset python3; do
    command -v $t >/dev/null || { echo "tcp.sh: $t not found (make deps)" >&2; exit 1; }
done
D=$(mktemp -d /tmp/pf-tcp-bench.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))" && return 0
        sleep 0.1
    done
    echo "tcp.sh: nothing listens on $1" >&2; exit 1
}
cd "$D"
BP=$(port); PP=$(port); HP=$(port); AP=$(port)
taskset -c 1 iperf3 -s -B 127.0.0.1 -p "$BP" >iperf.out 2>&1 & PIDS+=($!)
wait_port "$BP"
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
taskset -c 0 "$B/pilotfish" --config pf.json --workers 1 >pf.out 2>&1 & PF=$!; PIDS+=($PF)
taskset -c 0 haproxy -db -f hp.cfg >hp.out 2>&1 & HA=$!; PIDS+=($HA)
wait_port "$PP"; wait_port "$HP"
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
: >results.txt
run() { # label pid port direction [-R]
    local label=$1 pid=$2 p=$3 dir=$4; shift 4
    local c0 c1
    c0=$(cpu "$pid")
    taskset -c 1 iperf3 -c 127.0.0.1 -p "$p" -t "$DUR" -P "$STREAMS" -J "$@" >run.json
    c1=$(cpu "$pid")
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
