"""Latency ejection (outlier_detection.latency): of three backends one answers 10x slower
than the others; pilotfish ejects it even under round robin, brings it back after the
ejection time, ejects it for longer while it stays slow, and keeps it once it is fast.

Steady load comes from a few client threads; every wait polls /clusters with a bound, and
time is asserted only from below (an ejection lasts at least its time).
"""

import collections
import re
import threading
import time

from harness import cluster, http_request, listener, make_config, metric_sum, route, wait_for

FAST_MS = 4
SLOW_MS = 40  # 10x
BASE = 2.0  # base_ejection_time, seconds
LATENCY_INTERVAL = 0.6  # seconds slow before an ejection
SLACK = 10.0  # an upper bound for waits only: a loaded machine is slow, never wrong


def set_delay(backend, ms):
    resp = http_request(backend.port, "GET", f"/control/delay/{ms}", timeout=5.0)
    assert resp.status == 200, resp


def endpoint(pf, address):
    for c in pf.admin_json("/clusters")["clusters"]:
        for ep in c["endpoints"]:
            if ep["address"] == address:
                return ep
    raise AssertionError(f"{address} not in /clusters")


class Load:
    """Client threads sending GET / in a loop; counts which backend answered and statuses."""

    def __init__(self, pf, threads=4):
        self.pf = pf
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.seen = collections.Counter()
        self.statuses = collections.Counter()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

        self.mark = 0.0
        self.all_statuses = collections.Counter()

    def run(self):
        while not self.stop_flag.is_set():
            started = time.monotonic()
            resp = self.pf.get("/")
            with self.lock:
                self.all_statuses[resp.status] += 1
                if started >= self.mark:
                    self.statuses[resp.status] += 1
                    self.seen[resp.header("X-Backend")] += 1

    def take(self):
        """What requests started since the last take() saw; starts a new count."""
        with self.lock:
            seen, statuses = self.seen, self.statuses
            self.seen, self.statuses = collections.Counter(), collections.Counter()
            self.mark = time.monotonic()
        return seen, statuses

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)


def test_slow_endpoint_is_ejected_with_backoff_and_returns_once_fast(
    start_backend, start_pilotfish
):
    a, b, c = start_backend("a"), start_backend("b"), start_backend("c")
    for x in (a, b):
        set_delay(x, FAST_MS)
    set_delay(c, SLOW_MS)
    config = make_config(
        [listener("main", [route("c", prefix="/")])],
        [
            cluster(
                "c",
                [a.address, b.address, c.address],
                lb_policy="round_robin",
                panic_threshold=0,
                outlier_detection={
                    "consecutive_5xx": 0,
                    "consecutive_gateway_failure": 0,
                    "base_ejection_time": f"{int(BASE * 1000)}ms",
                    "max_ejection_percent": 34,
                    "interval": "100ms",
                    "latency": {
                        "factor": 3,
                        "interval": f"{int(LATENCY_INTERVAL * 1000)}ms",
                        "min_requests": 5,
                    },
                },
            )
        ],
    )
    pf = start_pilotfish(config, workers=2)

    def health(address):
        return endpoint(pf, address)["health"]

    with Load(pf) as load:
        wait_for(lambda: health(c.address).startswith("ejected until "), SLACK, "c ejected")
        state = endpoint(pf, c.address)
        assert "latency" in state["health"] and "above 3 x the median" in state["health"], state
        assert state["outlier"]["ejections_total"] == 1, state
        # the fast ones were measured and stay in
        for x in (a, b):
            ep = endpoint(pf, x.address)
            assert ep["health"] == "healthy", ep
            assert ep["outlier"]["latency_samples"] >= 5, ep
            assert ep["outlier"]["latency_ms"] is not None, ep

        # while ejected, no request that starts is sent to c (checked only when the same
        # ejection still holds afterwards: on a slow machine it may end meanwhile)
        until = state["outlier"]["ejected_until"]
        load.take()
        wait_for(lambda: sum(load.seen.values()) >= 30, SLACK, "30 requests while c is out")
        seen, statuses = load.take()
        after = endpoint(pf, c.address)["outlier"]
        if after["ejected"] and after["ejected_until"] == until and after["ejections_total"] == 1:
            assert set(seen) <= {"a", "b"} and set(statuses) == {200}, (seen, statuses)

        # back after the base ejection time; still slow, so ejected again, for twice as long
        wait_for(lambda: not health(c.address).startswith("ejected"), SLACK, "c back")
        wait_for(
            lambda: endpoint(pf, c.address)["outlier"]["ejections_total"] == 2,
            SLACK,
            "c ejected a second time",
        )
        set_delay(c, FAST_MS)
        wait_for(lambda: not health(c.address).startswith("ejected"), 2 * BASE + SLACK, "c back")
        # the ejection times as pilotfish decided them: base, then 2 x base
        log = pf.stderr_text()
        ejections = re.findall(r"endpoint ejected cluster=c endpoint=(\S+) reason=\"latency [^\"]*\" "
                               r"ejection_ms=(\d+) times=(\d+)", log)
        # Time healthy forgives one ejection per base_ejection_time: only when the second
        # ejection came within BASE of the return does it count double. A loaded machine may
        # take longer to gather the slow samples; the log's own times say which case this is.
        stamps = [line.split()[0] for line in log.splitlines()
                  if "endpoint back from ejection cluster=c" in line
                  or "endpoint ejected cluster=c" in line]
        t = [time.mktime(time.strptime(x[:19], "%Y-%m-%dT%H:%M:%S")) + float(x[19:23]) for x in stamps]
        second = (c.address, str(int(2 * BASE * 1000)), "2")
        if len(t) >= 3 and t[2] - t[1] >= BASE - 0.05:
            second = (c.address, str(int(BASE * 1000)), "1")
        assert ejections == [(c.address, str(int(BASE * 1000)), "1"), second], (ejections, stamps)
        backs = re.findall(r"endpoint back from ejection cluster=c endpoint=(\S+) times=(\d+)",
                           pf.stderr_text())
        assert backs == [(c.address, "1"), (c.address, "2")], backs

        # fast now: it takes traffic and is not ejected again
        load.take()
        wait_for(lambda: load.seen["c"] >= 20, SLACK, "c answering again")
        wait_for(
            lambda: endpoint(pf, c.address)["outlier"]["latency_samples"] >= 5, SLACK,
            "c measured afresh",
        )
        deadline = time.monotonic() + 3 * LATENCY_INTERVAL
        while time.monotonic() < deadline:
            assert endpoint(pf, c.address)["outlier"]["ejections_total"] == 2
            time.sleep(0.05)
        assert not health(c.address).startswith("ejected")

    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_outlier_ejections_total", cluster="c",
                      reason="latency") == 2
    assert metric_sum(samples, "pilotfish_outlier_ejections_total", cluster="c",
                      reason="consecutive_5xx") == 0
    assert sum(load.all_statuses.values()) > 0 and set(load.all_statuses) == {200}, load.all_statuses
