#!/bin/bash
# TLS termination: pilotfish vs haproxy with the same ECDSA P-256 certificate in front of
# the same pf-backend. Prints, per round, requests/s and requests per proxy CPU-second for
# keep-alive requests and for full handshakes (Connection: close, no session resumption:
# wrk opens every connection afresh), then handshakes per proxy CPU-second for resumed
# sessions (openssl s_time -reuse: one HTTP/1.0 request per connection, each resuming the
# first connection's session; TLS 1.3 PSK), then the memory one idle TLS connection costs
# each (SSL_MODE_RELEASE_BUFFERS: no record buffers while idle). Both proxies on CPU 1
# (BENCH_PROXY_CPU), the backend and clients on CPU 0 (BENCH_LOAD_CPU); preamble in lib.sh.
# Usage: bash bench/tls.sh BUILD_DIR   (a quick look, not a timed test; ~2 min)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
LOAD_WHAT=wrk
bench_init tls.sh "${1:-}"
B=$BUILD
D=$WORK
ROUNDS=${BENCH_ROUNDS:-2}
DUR=${BENCH_DURATION:-8s}
bench_need wrk haproxy openssl taskset
cd "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -days 2 2>/dev/null
cat c.pem k.pem >hp.pem
PP=$(free_port); HP=$(free_port); AP=$(free_port)
start_pf_backend b "$LOAD_CPU"; BP=${BACKEND_PORTS[0]}
cat >pf.json <<J
{"admin":{"address":"127.0.0.1:$AP"},"access_log":false,
 "listeners":[{"name":"tls","address":"127.0.0.1:$PP","routes":[{"match":{},"cluster":"b"}],
   "tls":{"certificates":[{"cert_file":"$D/c.pem","key_file":"$D/k.pem"}]}}],
 "clusters":[{"name":"b","endpoints":["127.0.0.1:$BP"]}]}
J
cat >hp.cfg <<J
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$HP ssl crt $D/hp.pem alpn http/1.1
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$BP
J
start_bg pf.out "$PROXY_CPU" "$B/pilotfish" --config pf.json --workers 1; PF=$STARTED_PID
start_bg hp.out "$PROXY_CPU" haproxy -db -f hp.cfg; HA=$STARTED_PID
wait_port pilotfish "$PP" "$PF" pf.out; wait_port haproxy "$HP" "$HA" hp.out
TCK=$CLK_TCK
run() { # label pid port wrk-args...
    local label=$1 pid=$2 p=$3; shift 3
    local c0 c1 out
    c0=$(cpu_ticks "$pid")
    out=$(pin "$LOAD_CPU" wrk -t1 -c20 -d"$DUR" "$@" "https://127.0.0.1:$p/" 2>&1)
    c1=$(cpu_ticks "$pid")
    python3 - "$label" "$(echo "$out" | awk '/Requests\/sec/{print $2}')" \
        "$(echo "$out" | awk '/requests in/{print $1}')" "$c0" "$c1" "$TCK" <<'P'
import sys
label, rps, total, c0, c1, tck = sys.argv[1:]
cpu = (float(c1) - float(c0)) / float(tck)
print(f"{label:32s} req/s={float(rps):9.0f} proxy_cpu_s={cpu:6.2f} "
      f"req_per_cpu_s={int(total) / cpu if cpu else 0:9.0f}")
P
}
resumed() { # label pid port: s_time -reuse, two clients at once (one is latency-bound)
    local label=$1 pid=$2 p=$3 c0 c1 a b
    c0=$(cpu_ticks "$pid")
    pin "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$p" -reuse -time "${DUR%s}" -www / >st1.out 2>&1 &
    a=$!
    pin "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$p" -reuse -time "${DUR%s}" -www / >st2.out 2>&1 &
    b=$!
    wait "$a" "$b"
    c1=$(cpu_ticks "$pid")
    python3 - "$label" "$c0" "$c1" "$TCK" "${DUR%s}" <<'P'
import re, sys
label, c0, c1, tck, dur = sys.argv[1:]
n = 0
for f in ("st1.out", "st2.out"):
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", open(f).read())
    n += int(m.group(1)) if m else 0
cpu = (float(c1) - float(c0)) / float(tck)
print(f"{label:32s} conn/s={n / float(dur):9.0f} proxy_cpu_s={cpu:6.2f} "
      f"handshakes_per_cpu_s={n / cpu if cpu else 0:9.0f}")
P
}
for r in $(seq "$ROUNDS"); do
    run "pilotfish keep-alive" "$PF" "$PP"
    run "haproxy keep-alive" "$HA" "$HP"
    run "pilotfish full handshakes" "$PF" "$PP" -H "Connection: close"
    run "haproxy full handshakes" "$HA" "$HP" -H "Connection: close"
    resumed "pilotfish resumed handshakes" "$PF" "$PP"
    resumed "haproxy resumed handshakes" "$HA" "$HP"
done
# how pilotfish's handshakes went: wrk's are full ones, s_time's resumed
curl -s "127.0.0.1:$AP/stats/prometheus" | grep '^pilotfish_tls_handshakes_total' || true
python3 - "$PP" "$PF" "$HP" "$HA" <<'P'
import socket, ssl, sys, time
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for name, port, pid in (("pilotfish", sys.argv[1], sys.argv[2]), ("haproxy", sys.argv[3], sys.argv[4])):
    keep, n = [], 1000
    def open_one():
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))),
                            server_hostname="bench.test")
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
        s.recv(65536)
        keep.append(s)
    for _ in range(50):  # allocator warm-up
        open_one()
    time.sleep(0.5)
    r0 = rss(pid)
    for _ in range(n):
        open_one()
    time.sleep(0.5)
    print(f"{name:10s} idle TLS connection (after one request): {(rss(pid) - r0) / n:.1f} KiB RSS each")
    for s in keep:
        s.close()
P
