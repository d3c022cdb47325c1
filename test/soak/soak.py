"""Fault soak: pilotfish (built with ASan) under steady load while faults are injected at random,
for SOAK_SECONDS (default 600). Run by `make soak`; never part of `make test`.

Clusters, all on 127.0.0.1:
  st  three static pf-backends, active HTTP checks, outlier ejection, retries
  dn  two pf-backends found through dnsmasq (SRV records: each its own port)
  ks  Kubernetes Service "web" (test/fakes/k8s_api.py), one EndpointSlice per backend
  kf  Kubernetes Service "flap", created and deleted by the schedule (one backend, shared
      with ks)
Load: LOAD_CLIENTS keep-alive clients, each sending GET to the four clusters in turn.
Faults, one at a time, every 1-4 s: a backend killed (and restarted on its port), hung
(SIGSTOP, then SIGCONT), or answering 503, for 2-6 s; dnsmasq restarted; the watch cut;
410 Gone (compaction); ks's endpoints churned to another backend and back; "flap" deleted
and created again; clients aborting mid-body; slowloris bursts; config reloads (SIGHUP
with a changed file: settings only, st replaced by a new lb_policy, a second listener
added or removed). At most one backend is
faulted at a time, so every cluster always keeps a working endpoint except kf, whose only
backend may be the faulted one, and which has none while "flap" is deleted.

What counts as a failed request: any load request (GET, retried by pilotfish on
connect-failure, reset and gateway-error) that did not end in a 200, unless its cluster
had no working endpoint at some moment between its start and its end, as the schedule's
ledger records: a backend counts as not working from the moment its fault starts until
it ends and, for kf (one endpoint), until /clusters shows pilotfish's health check has
seen it back (before that pilotfish rightly holds it out; with one endpoint there is no
other place to go); kf also while "flap" is deleted, until a request through it answers
again. The next fault starts only once pilotfish serves from the last faulted backend
again (check passed, ejection over): an ejection can outlast its fault, and with two
endpoints a fault on the other one would otherwise leave the cluster nothing to use.
The abort and slowloris clients are faults, not load.
Why this is fair: with one working endpoint left and retries allowed, a request has a
correct place to go; pilotfish must find it (outlier ejection, health checks, retries
with per_try_timeout for a hung backend) before the client sees an error.

Asserts: zero failed requests; every reload applied (none refused); memory flat after
warm-up (below); no sanitizer report; open descriptors back to the baseline (taken after
start-up) once the load stops and idle connections time out. Prints a summary table. Exit
status 0 only when all hold.

Memory, and why it is judged on windows. A thread samples pilotfish's RSS and its heap
(pilotfish_process_heap_bytes: bytes allocated and not freed, by the allocator's own count)
every 2 s. Single samples move by several percent with what is in flight at that instant:
a hung backend's queued requests, a slowloris burst's 30 connections, a reload's old and
new config side by side; under ASan also the freed-memory quarantine (up to
quarantine_size_mb) and the allocator's per-thread caches, which RSS includes. So the check
compares steady windows: the median of the first window after warm-up (warm-up: the first
20% of the run, at least 60 s; a window: 10% of the run, at least 60 s) against the median
of the last window. Growth (a leak) moves the median of the last window up whatever the
fault mix; a transient peak does not. Both RSS and heap must stay within 10%; the maximum
is printed too.
"""

import collections
import copy
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from harness import (  # noqa: E402
    SANITIZER_MARKS,
    Backend,
    Dnsmasq,
    HarnessError,
    K8sApi,
    Pilotfish,
    RawConn,
    cluster,
    cluster_status,
    free_port,
    http_request,
    is_sanitizer_build,
    k8s_service,
    k8s_slice,
    listener,
    metric_sum,
    make_config,
    route,
    wait_for,
)

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
LOAD_CLIENTS = int(os.environ.get("SOAK_CLIENTS", "6"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
WARMUP = max(60.0, SECONDS * 0.2)
# the steady windows whose medians are compared (two of them fit after warm-up in a short run)
WINDOW = min(max(60.0, SECONDS * 0.1), max(SECONDS - WARMUP, 0) / 2)
SAMPLE_EVERY = 2.0
RSS_SLACK = 1.10
CLUSTERS = ("st", "dn", "ks", "kf")


def fd_kinds(pid):
    """What each of pid's descriptors is: "tcp LISTEN 127.0.0.1:80", "udp ...", "unix",
    "pipe", a path; sockets looked up by inode in /proc/net. For the descriptor report."""
    socks = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{proto}") as f:
                next(f)
                for line in f:
                    x = line.split()
                    port = int(x[1].split(":")[1], 16)
                    peer = int(x[2].split(":")[1], 16)
                    socks[x[9]] = (f"{proto} LISTEN :{port}" if x[3] == "0A" else
                                   f"{proto} state {x[3]} to :{peer}")
        except OSError:
            pass
    kinds = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            target = socks.get(target[8:-1], "socket (unix or other)")
        elif target.startswith(("pipe:", "anon_inode:")):
            target = target.split("[")[0]
        kinds[target] += 1
    return kinds


class Ledger:
    """When each cluster had no working endpoint: (start, end) intervals, end None while open."""

    def __init__(self):
        self.lock = threading.Lock()
        self.down = collections.defaultdict(list)
        self.open = {}

    def set_down(self, cl, down):
        with self.lock:
            now = time.monotonic()
            if down and cl not in self.open:
                self.open[cl] = [now, None]
                self.down[cl].append(self.open[cl])
            elif not down and cl in self.open:
                self.open.pop(cl)[1] = now

    def excused(self, cl, t0, t1):
        with self.lock:
            return any(s <= t1 and (e is None or e >= t0) for s, e in self.down[cl])


class Soak:
    def __init__(self, work):
        self.work = work
        self.rng = random.Random(SEED)
        self.ledger = Ledger()
        self.stop_load = threading.Event()
        self.lock = threading.Lock()
        self.counts = collections.Counter()  # (cluster, outcome)
        self.failures = []  # (cluster, what) of counted failures
        self.excused = collections.Counter()
        self.faults = collections.Counter()
        self.rss = []  # (t, bytes)
        self.heap = []  # (t, bytes): pilotfish_process_heap_bytes
        self.faulted = None  # the backend under a fault now
        self.flap_present = True
        # extra: the number of a cluster "xN" (routed at /x/) a reload added; every add
        # takes a new name, so the slots of removed ones must be freed and reused
        self.reload_state = {"lb": "round_robin", "idle": "3s", "side": False, "extra": None}
        self.extra_names = 0
        self.reload_problems = []
        self.reloads_applied = 0

    # ---- processes ----

    def backend(self, name):
        port = free_port()
        return Backend(name, self.work, listen=f"127.0.0.1:{port}").start()

    def start(self):
        self.st = [self.backend(f"st{i}") for i in range(3)]
        self.dn = [self.backend(f"dn{i}") for i in range(2)]
        self.ks = [self.backend(f"ks{i}") for i in range(3)]  # ks2 is the churn spare
        self.dns = Dnsmasq(self.work, domain="soak.internal", ttl=1)
        self.dns.hosts = [("127.0.0.1", "h.soak.internal")]
        self.dns.srv = [("_http._tcp.dn.soak.internal", "h.soak.internal", b.port, 0, 10)
                        for b in self.dn]
        self.dns.start()
        self.k8s = K8sApi(self.work).start()
        self.k8s.apply(k8s_service("web", [("http", 80)]), k8s_service("flap", [("http", 80)]),
                       *self.web_slices(self.ks[1]),
                       k8s_slice("flap-0", "flap", self.ks[0].port, ["127.0.0.1"]))
        self.churned = False
        od = {"consecutive_5xx": 3, "consecutive_gateway_failure": 2, "interval": "200ms",
              "base_ejection_time": "2s", "max_ejection_percent": 50}
        hc = {"type": "http", "path": "/healthz", "interval": "300ms", "timeout": "300ms",
              "unhealthy_threshold": 1, "healthy_threshold": 1}
        retry = {"on": ["connect-failure", "reset", "gateway-error"], "max_retries": 3,
                 "per_try_timeout": "1s", "backoff": {"base": "10ms", "max": "50ms"}}
        common = dict(retry=retry, retry_budget={"percent": 100}, outlier_detection=od,
                      health_check=hc, idle_timeout="3s", response_timeout="8s",
                      connect_timeout="500ms", panic_threshold=0)
        self.base_cfg = make_config(
            [listener("main", [route(c, prefix=f"/{c}/") for c in CLUSTERS],
                      header_timeout="5s", body_timeout="5s", idle_timeout="10s")],
            [cluster("st", [b.address for b in self.st], **common),
             {"name": "dn", "dns": {"name": "_http._tcp.dn.soak.internal", "record": "SRV",
                                    "min_refresh": "1s", "max_refresh": "2s", "hold": "60s"},
              **common},
             {"name": "ks", "kubernetes": {"service": "web", "port": "http"}, **common},
             {"name": "kf", "kubernetes": {"service": "flap", "port": "http"}, **common}],
            dns={"resolvers": [f"127.0.0.1:{self.dns.port}"], "timeout": "500ms"},
            kubernetes=self.k8s.config(),
            access_log=False,
        )
        self.side = listener("side", [route("st", prefix="/")])
        self.pf = Pilotfish(self.base_cfg, self.work, workers=2, tag="soak-pf")
        self.pf.start()
        for c in CLUSTERS:
            wait_for(lambda c=c: self.pf.get(f"/{c}/").status == 200, 30, f"cluster {c} serving")
        self.fd_baseline = self.pf.open_fds()
        self.fd_baseline_kinds = fd_kinds(self.pf.pid)

    def web_slices(self, second):
        return [k8s_slice("web-a", "web", self.ks[0].port, ["127.0.0.1"]),
                k8s_slice("web-b", "web", second.port, ["127.0.0.1"])]

    def stop(self):
        for b in self.st + self.dn + self.ks:
            if b.proc and b.proc.poll() is None:
                try:
                    os.kill(b.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            b.stop()
        self.dns.stop()
        self.k8s.stop()

    # ---- load ----

    def load_client(self, idx):
        conn = None
        i = idx
        while not self.stop_load.is_set():
            cl = CLUSTERS[i % len(CLUSTERS)]
            i += 1
            t0 = time.monotonic()
            what = None
            try:
                if conn is None:
                    conn = RawConn(self.pf.port(), timeout=15)
                resp = conn.request("GET", f"/{cl}/x", host="soak.local")
                if resp.status != 200:
                    what = f"status {resp.status} {bytes(resp.body[:60])!r}"
                if resp.has_token("Connection", "close"):
                    conn.close()
                    conn = None
            except (OSError, HarnessError) as e:
                what = f"{type(e).__name__}: {e}"
                if conn:
                    conn.close()
                conn = None
            t1 = time.monotonic()
            with self.lock:
                if what is None:
                    self.counts[(cl, "ok")] += 1
                elif self.ledger.excused(cl, t0, t1):
                    self.counts[(cl, "excused")] += 1
                else:
                    self.counts[(cl, "failed")] += 1
                    self.failures.append((time.strftime("%H:%M:%S", time.gmtime()), cl, what))
        if conn:
            conn.close()

    # ---- faults ----

    def mark(self, b, down):
        """Only kf can lose its last working endpoint: the other clusters keep at least one
        unfaulted backend (one backend is faulted at a time). kf works again once pilotfish
        has seen its endpoint recover (its next health check), as /clusters says."""
        if b is not self.ks[0]:
            return
        if not down and self.flap_present:
            wait_for(lambda: all(e["healthy"] for e in cluster_status(self.pf, "kf")["endpoints"]),
                     30, "kf's endpoint healthy again")
        self.ledger.set_down("kf", down or not self.flap_present)

    def backend_fault(self, kind):
        b = self.rng.choice(self.st + self.dn + self.ks[:2])
        hold = self.rng.uniform(2, 6)
        print(f"{time.strftime('%H:%M:%S', time.gmtime())}   on {b.name} for {hold:.1f}s",
              flush=True)
        self.faulted = b
        self.mark(b, True)
        if kind == "kill":
            b.proc.kill()
            b.proc.wait()
            time.sleep(hold)
            b.start()
        elif kind == "hang":
            os.kill(b.proc.pid, signal.SIGSTOP)
            time.sleep(hold)
            os.kill(b.proc.pid, signal.SIGCONT)
        else:
            http_request(b.port, "GET", "/control/default/503", timeout=5)
            time.sleep(hold)
            http_request(b.port, "GET", "/control/default/200", timeout=5)
        self.wait_in_service(b)
        self.mark(b, False)
        self.faulted = None

    def wait_in_service(self, b, bound=60.0):
        """Until pilotfish serves from b again (its check passed, its ejection ended): the
        next fault may hit the other endpoint of a two-endpoint cluster, and "one backend
        faulted at a time" must hold as pilotfish sees it, not only as the injector does.
        Bounded: after `bound` seconds the schedule goes on (said on stdout)."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            try:
                eps = [e for c in self.pf.admin_json("/clusters")["clusters"]
                       for e in c["endpoints"] if e["address"] == b.address]
                if all(e.get("healthy") and e.get("health", "").startswith("healthy")
                       for e in eps):
                    return
            except (OSError, HarnessError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        print(f"{time.strftime('%H:%M:%S', time.gmtime())}   {b.name} still out after "
              f"{bound:.0f}s", flush=True)

    def abort_mid_body(self):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", self.pf.port()), timeout=5) as s:
                s.sendall(b"POST /st/echo HTTP/1.1\r\nHost: soak.local\r\n"
                          b"Content-Length: 100000\r\n\r\n" + b"x" * 3000)

    def slowloris(self):
        socks = []
        try:
            for _ in range(30):
                s = socket.create_connection(("127.0.0.1", self.pf.port()), timeout=5)
                s.sendall(b"GET /st/ HTTP/1.1\r\n")
                socks.append(s)
            for _ in range(3):
                time.sleep(1)
                for s in socks:
                    try:
                        s.sendall(b"X-a: b\r\n")
                    except OSError:
                        pass
        finally:
            for s in socks:
                s.close()

    def reload_config(self):
        """The base config with the schedule's changes: what a reload may change live."""
        cfg = copy.deepcopy(self.base_cfg)
        st = cfg["clusters"][0]
        st["lb_policy"] = self.reload_state["lb"]  # a changed policy replaces the cluster
        for c in cfg["clusters"]:
            c["idle_timeout"] = self.reload_state["idle"]  # kept: pools and verdicts stay
        if self.reload_state["side"]:
            cfg["listeners"].append(copy.deepcopy(self.side))
        if self.reload_state["extra"] is not None:
            name = f"x{self.reload_state['extra']}"
            cfg["clusters"].append(cluster(name, [b.address for b in self.st],
                                           retry=copy.deepcopy(st["retry"])))
            cfg["listeners"][0]["routes"].insert(0, route(name, prefix="/x/"))
        return cfg

    def reloads(self):
        samples = self.pf.metrics()
        return (metric_sum(samples, "pilotfish_config_reloads_total", result="applied"),
                metric_sum(samples, "pilotfish_config_reloads_total", result="rejected"))

    def reload(self, what=None):
        what = what or self.rng.choice(["settings", "replace", "listener", "cluster"])
        st = self.reload_state
        if what == "base":
            st.update(lb="round_robin", idle="3s", side=False, extra=None)
        elif what == "cluster":
            if st["extra"] is None:
                self.extra_names += 1
                st["extra"] = self.extra_names
            else:
                st["extra"] = None
        elif what == "settings":
            st["idle"] = "4s" if st["idle"] == "3s" else "3s"
        elif what == "replace":
            st["lb"] = "least_request" if st["lb"] == "round_robin" else "round_robin"
        else:
            st["side"] = not st["side"]
        before = self.reloads()
        tmp = self.pf.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.reload_config(), f, indent=2)
        os.replace(tmp, self.pf.config_path)  # whole, as a ConfigMap update is
        os.kill(self.pf.pid, signal.SIGHUP)
        wait_for(lambda: sum(self.reloads()) > sum(before), 30, f"reload ({what})")
        applied, _ = self.reloads()
        if applied > before[0]:
            self.reloads_applied += 1
        else:
            self.reload_problems.append(f"reload ({what}) refused; see pilotfish's log")
        if what == "cluster" and st["extra"] is not None:
            resp = http_request(self.pf.port(), "GET", "/x/", timeout=10)
            if resp.status != 200:
                self.reload_problems.append(f"added cluster x{st['extra']} answered "
                                            f"{resp.status}")
        if what == "listener" and st["side"]:
            port = int(self.side["address"].rsplit(":", 1)[1])
            resp = http_request(port, "GET", "/x", timeout=10)
            if resp.status != 200:
                self.reload_problems.append(f"new listener answered {resp.status}")

    def inject(self):
        kinds = ["kill", "hang", "5xx", "dns_restart", "watch_cut", "gone_410", "churn", "flap",
                 "abort", "slowloris", "reload"]
        kind = self.rng.choice(kinds)
        self.faults[kind] += 1
        print(f"{time.strftime('%H:%M:%S', time.gmtime())} fault {kind}", flush=True)
        if kind in ("kill", "hang", "5xx"):
            self.backend_fault(kind)
        elif kind == "dns_restart":
            self.dns.stop()
            time.sleep(self.rng.uniform(1, 4))
            self.dns.start()
        elif kind == "watch_cut":
            self.k8s.control("/cut", {"mid_event": self.rng.random() < 0.5})
        elif kind == "gone_410":
            # everything before the newest version is gone: watches from older ones get 410
            rv = int(self.k8s.apply(k8s_service("marker", [("http", 80)])))
            self.k8s.control("/compact", {"all": False, "before": rv})
        elif kind == "churn":
            # the second endpoint moves to the spare backend (or back); the first stays
            self.churned = not self.churned
            self.k8s.apply(*self.web_slices(self.ks[2] if self.churned else self.ks[1]))
        elif kind == "flap":
            if self.flap_present:
                self.flap_present = False
                self.ledger.set_down("kf", True)
                self.k8s.apply(("delete", "services", "default", "flap"),
                               ("delete", "endpointslices", "default", "flap-0"))
            else:
                self.k8s.apply(k8s_service("flap", [("http", 80)]),
                               k8s_slice("flap-0", "flap", self.ks[0].port, ["127.0.0.1"]))
                # working again once pilotfish has the set; until then kf stays excused
                wait_for(lambda: self.pf.get("/kf/").status == 200, 30, "flap back")
                self.flap_present = True
                self.ledger.set_down("kf", False)
        elif kind == "abort":
            self.abort_mid_body()
        elif kind == "reload":
            self.reload()
        else:
            self.slowloris()

    # ---- run ----

    def sample_memory(self, start):
        """RSS and heap every SAMPLE_EVERY seconds, at a steady pace whatever the faults do."""
        while not self.stop_load.wait(SAMPLE_EVERY):
            t = time.monotonic() - start
            try:
                rss = self.pf.rss_bytes()
                heap = int(metric_sum(self.pf.metrics(), "pilotfish_process_heap_bytes"))
            except (OSError, HarnessError, ValueError):
                continue  # a scrape that timed out under load: the next one counts
            self.rss.append((t, rss))
            self.heap.append((t, heap))

    def run(self):
        start = time.monotonic()
        threads = [threading.Thread(target=self.load_client, args=(i,), daemon=True)
                   for i in range(LOAD_CLIENTS)]
        sampler = threading.Thread(target=self.sample_memory, args=(start,), daemon=True)
        for t in threads + [sampler]:
            t.start()
        while time.monotonic() - start < SECONDS:
            if not self.pf.alive():
                break
            self.inject()
            time.sleep(self.rng.uniform(1, 4))
        self.stop_load.set()
        for t in threads + [sampler]:
            t.join(timeout=60)
        self.elapsed = time.monotonic() - start


def windows(samples, end):
    """Medians of (t, value) samples in the first window after warm-up and in the last
    window of the run: (first, last), None where a window holds no sample."""
    def median(values):
        values = sorted(values)
        return int(values[len(values) // 2]) if values else None
    first = [v for t, v in samples if WARMUP <= t < WARMUP + WINDOW]
    last = [v for t, v in samples if t >= max(end - WINDOW, WARMUP + WINDOW)]
    return median(first), median(last)


def main():
    if not is_sanitizer_build():
        print("soak: pilotfish is not an ASan build (SOAK_ASAN=0): no sanitizer checks, and its RSS "
              "has no quarantine in it")
    work = tempfile.mkdtemp(prefix="pf-soak-")
    s = Soak(work)
    problems = []
    fds_end = None
    status = None
    try:
        s.start()
        print(f"soak: {SECONDS}s, {LOAD_CLIENTS} clients, seed {SEED}, work dir {work}, "
              f"descriptors at start {s.fd_baseline}", flush=True)
        s.run()
        alive = s.pf.alive()
        if not alive:
            problems.append("pilotfish died")
        if alive:
            for b in s.st + s.dn + s.ks:  # every backend answering again
                if b.proc.poll() is not None:
                    b.start()
            # the baseline was taken under the first config: back to it (a second listener
            # and replaced clusters hold descriptors of their own)
            s.reload("base")
            try:
                wait_for(lambda: s.pf.open_fds() <= s.fd_baseline, 60,
                         "descriptors back to the baseline")
            except HarnessError:
                pass
            fds_end = s.pf.open_fds()
            if fds_end > s.fd_baseline:
                extra = fd_kinds(s.pf.pid) - s.fd_baseline_kinds
                problems.append(f"descriptors {fds_end} > baseline {s.fd_baseline}; "
                                f"more than at the start: {dict(extra)}")
        end = getattr(s, "elapsed", 0)
        for what, samples in (("RSS", s.rss), ("heap", s.heap)):
            first, last = windows(samples, end)
            if first is None or last is None:
                problems.append(f"{what}: too few samples after warm-up to judge")
            elif last > first * RSS_SLACK:
                problems.append(f"{what} grew after warm-up: median {first >> 10} KiB in the "
                                f"first window, {last >> 10} KiB in the last (limit "
                                f"+{int((RSS_SLACK - 1) * 100)}%)")
        problems.extend(s.reload_problems)
        failed = sum(v for (c, o), v in s.counts.items() if o == "failed")
        if failed:
            problems.append(f"{failed} failed requests, first: {s.failures[:10]}")
    finally:
        status = s.pf.stop() if hasattr(s, "pf") else None
        for p in (s.pf.problems() if hasattr(s, "pf") else []):
            problems.append(p)
        err = open(s.pf.err_path, errors="replace").read() if hasattr(s, "pf") else ""
        if any(m in err for m in SANITIZER_MARKS) and not any("sanitizer" in p for p in problems):
            problems.append("sanitizer report in pilotfish stderr")
        s.stop()

    print()
    print(f"{'cluster':<8} {'ok':>9} {'excused':>8} {'failed':>7}")
    for c in CLUSTERS:
        print(f"{c:<8} {s.counts[(c, 'ok')]:>9} {s.counts[(c, 'excused')]:>8} "
              f"{s.counts[(c, 'failed')]:>7}")
    print()
    print("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(s.faults.items())))
    print(f"reloads applied: {s.reloads_applied} of {s.faults['reload']} in the schedule, "
          "and one back to the first config at the end")
    end = getattr(s, "elapsed", 0)
    print(f"memory, KiB (samples every {SAMPLE_EVERY:.0f}s; warm-up {WARMUP:.0f}s; medians of "
          f"the {WINDOW:.0f}s windows after warm-up and at the end; limit "
          f"+{int((RSS_SLACK - 1) * 100)}%):")
    print(f"{'':<6} {'start':>9} {'first':>9} {'last':>9} {'change':>7} {'max':>9}")
    for what, samples in (("RSS", s.rss), ("heap", s.heap)):
        first, last = windows(samples, end)
        values = [v for _, v in samples]
        change = f"{(last / first - 1) * 100:+.1f}%" if first and last else "-"
        print(f"{what:<6} {values[0] >> 10 if values else '-':>9} "
              f"{first >> 10 if first else '-':>9} {last >> 10 if last else '-':>9} "
              f"{change:>7} {max(values) >> 10 if values else '-':>9}")
    print(f"descriptors: baseline {s.fd_baseline}, end {fds_end if fds_end is not None else '-'}; "
          f"exit status {status}; sanitizer report: "
          f"{'yes' if any('sanitizer' in p for p in problems) else 'none'}")
    print(f"soak: {'PASSED' if not problems else 'FAILED'} after {getattr(s, 'elapsed', 0):.0f}s")
    for p in problems:
        print(f"soak: {p}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
