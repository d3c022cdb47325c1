"""Load-balancing policies against real backends: least_response_time keeps traffic off a
slow backend (round robin does not), least_request follows requests in flight, ring_hash and
maglev keep a key on one backend across requests and workers and send a retried key to the
next backend in hash order, every policy loses no request
while DNS replaces the endpoint set under load, and bad balancing settings are refused with
the JSON path."""

import collections
import json
import threading
import time

import pytest

from harness import (
    HarnessError,
    LOCALHOST,
    cluster,
    http_request,
    listener,
    make_config,
    route,
    run_pilotfish,
    wait_for,
)
from test_dns import (  # the dnsmasq and start_at fixtures, and helpers
    DOMAIN,
    MARGIN,
    TTL,
    addressed,
    dns_cluster,
    dnsmasq,  # noqa: F401
    start_at,  # noqa: F401
    wait_endpoints,
)

SLOW_MS = 50


def slow_down(backend, ms):
    """Make every default answer of backend wait ms (pf-backend's /control/delay/MS)."""
    resp = http_request(backend.port, "GET", f"/control/delay/{ms}")
    assert resp.status == 200, resp


def by_host(clusters):
    """One listener routing host <cluster>.local to each cluster."""
    routes = [route(c["name"], host=f"{c['name']}.local") for c in clusters]
    return make_config([listener("main", routes)], clusters)


def get(pf, host, path="/", headers=None):
    h = {"Host": host}
    h.update(headers or {})
    resp = pf.request("GET", path, h)
    assert resp.status == 200, resp
    return resp.header("X-Backend")


def spread(pf, host, n, clients):
    """n requests from `clients` threads at once (each a new connection); backends seen."""
    seen = collections.Counter()
    lock = threading.Lock()
    errors = []
    left = [n]

    def client():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                name = get(pf, host)
            except (AssertionError, OSError, HarnessError) as exc:
                errors.append(exc)
                return
            with lock:
                seen[name] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert sum(seen.values()) == n, seen
    return seen


@pytest.fixture
def three(start_backend):
    return [start_backend(name) for name in ("b1", "b2", "b3")]


def test_least_response_time_keeps_traffic_off_a_slow_backend_round_robin_does_not(
    three, start_pilotfish
):
    addrs = [b.address for b in three]
    pf = start_pilotfish(
        by_host(
            [
                cluster("ewma", addrs, lb_policy="least_response_time"),
                cluster("rr", addrs, lb_policy="round_robin"),
            ]
        )
    )
    slow_down(three[0], SLOW_MS)
    n = 150
    rr = spread(pf, "rr.local", n, clients=4)
    # The first requests to each endpoint measure it; what is asserted is what follows,
    # so a warm-up that happens to hit the slow one twice cannot decide the outcome.
    warmup = spread(pf, "ewma.local", 30, clients=4)
    ewma = spread(pf, "ewma.local", n, clients=4)
    # round robin gives the slow backend its third whatever its speed ...
    assert n * 0.25 <= rr["b1"] <= n * 0.42, rr
    # ... least response time, once latencies are known, almost nothing
    assert ewma["b1"] <= n * 0.10, (warmup, ewma)
    # Between two equally fast backends latency noise tilts the split (28/72 was seen);
    # what matters is that both keep serving.
    assert ewma["b2"] > n * 0.2 and ewma["b3"] > n * 0.2, ewma


def test_least_request_sends_new_requests_away_from_one_busy_backend(
    start_backend, start_pilotfish
):
    a, b = start_backend("a"), start_backend("b")
    pf = start_pilotfish(
        by_host([cluster("lr", [a.address, b.address], lb_policy="least_request")])
    )
    # a long request occupies one backend ...
    long_result = {}

    def long_request():
        long_result["backend"] = get(pf, "lr.local", "/delay/3000")

    t = threading.Thread(target=long_request)
    t.start()
    wait_for(
        lambda: any(e["active_requests"] for e in endpoints(pf, "lr")),
        10,
        "the long request to be in flight",
    )
    # ... so every short request meanwhile goes to the other one
    shorts = [get(pf, "lr.local") for _ in range(12)]
    t.join(timeout=30)
    assert "backend" in long_result
    busy = long_result["backend"]
    assert busy not in shorts, (busy, shorts)
    # once it is idle again both take requests: ties are broken at random, no herding
    after = collections.Counter(get(pf, "lr.local") for _ in range(40))
    assert set(after) == {"a", "b"} and min(after.values()) >= 8, after


def endpoints(pf, cluster_name):
    clusters = pf.admin_json("/clusters")
    if isinstance(clusters, dict):
        clusters = clusters.get("clusters", [])
    for c in clusters:
        if c["name"] == cluster_name:
            return c["endpoints"]
    raise HarnessError(f"no cluster {cluster_name} in /clusters")


@pytest.mark.parametrize(
    "policy,hash_on,make_headers",
    [
        ("ring_hash", {"header": "x-user"}, lambda key: {"X-User": key}),
        ("maglev", {"cookie": "sid"}, lambda key: {"Cookie": f"theme=dark; sid={key}"}),
    ],
    ids=["ring_hash_header", "maglev_cookie"],
)
def test_hash_policy_keeps_a_key_on_one_backend_across_requests_and_workers(
    three, start_pilotfish, policy, hash_on, make_headers
):
    addrs = [b.address for b in three]
    pf = start_pilotfish(
        by_host([cluster("h", addrs, lb_policy=policy, hash_on=hash_on)]), workers=2
    )
    placement = {}
    for rnd in range(4):
        for i in range(24):
            key = f"user-{i}"
            got = get(pf, "h.local", headers=make_headers(key))
            assert placement.setdefault(key, got) == got, (key, placement[key], got, rnd)
    # the keys are spread, not all on one backend
    assert len(set(placement.values())) == 3, placement
    # requests without the key are still served (at random)
    assert {get(pf, "h.local") for _ in range(30)} <= {"b1", "b2", "b3"}


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_a_retried_key_goes_to_the_next_backend_in_hash_order_every_time(
    three, start_pilotfish, policy
):
    """A backend answering 503 makes its keys retry: each goes to one other backend, the
    same one on every request (its next in hash order), and no other key moves."""
    addrs = [b.address for b in three]
    retry = {"on": ["5xx"], "max_retries": 1}
    pf = start_pilotfish(
        by_host(
            [cluster("h", addrs, lb_policy=policy, hash_on={"header": "x-user"}, retry=retry)]
        ),
        workers=2,
    )
    keys = [f"user-{i}" for i in range(30)]
    placement = {k: get(pf, "h.local", headers={"X-User": k}) for k in keys}
    failing = collections.Counter(placement.values()).most_common(1)[0][0]
    resp = http_request(three[int(failing[1:]) - 1].port, "GET", "/control/default/503")
    assert resp.status == 200, resp
    moved = {}
    for _ in range(3):
        for k in keys:
            resp = pf.request("GET", "/", {"Host": "h.local", "X-User": k})
            assert resp.status == 200, (k, resp)
            got, attempts = resp.header("X-Backend"), int(resp.header("x-pilotfish-attempts"))
            if placement[k] == failing:
                assert got != failing and attempts == 2, (k, got, attempts)
                assert moved.setdefault(k, got) == got, (k, moved[k], got)
            else:
                assert (got, attempts) == (placement[k], 1), (k, placement[k], got, attempts)
    assert moved, placement


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_a_key_whose_retries_meet_two_failing_backends_never_goes_back_to_the_first(
    three, start_pilotfish, policy
):
    """Two of three backends answer 503: two retries are enough for every key, because a
    request avoids every backend that failed it, not only the last one."""
    addrs = [b.address for b in three]
    retry = {"on": ["5xx"], "max_retries": 2}
    pf = start_pilotfish(
        by_host(
            [cluster("h", addrs, lb_policy=policy, hash_on={"header": "x-user"}, retry=retry)]
        ),
        workers=1,
    )
    for failing in three[:2]:
        assert http_request(failing.port, "GET", "/control/default/503").status == 200
    for i in range(60):
        resp = pf.request("GET", "/", {"Host": "h.local", "X-User": f"user-{i}"})
        assert resp.status == 200 and resp.header("X-Backend") == "b3", (i, resp)
        assert int(resp.header("x-pilotfish-attempts")) <= 3


def test_hash_on_path_and_source_ip(three, start_pilotfish):
    addrs = [b.address for b in three]
    pf = start_pilotfish(
        by_host(
            [
                cluster("p", addrs, lb_policy="ring_hash", hash_on={"path": True}),
                cluster("ip", addrs, lb_policy="maglev", hash_on={"source_ip": True}),
            ]
        ),
        workers=2,
    )
    for i in range(12):
        first = get(pf, "p.local", f"/item/{i}?v=1")
        # the query string is not part of the path key
        assert all(get(pf, "p.local", f"/item/{i}?v={v}") == first for v in range(2, 5))
    # every request comes from 127.0.0.1: one backend for all of them
    assert len({get(pf, "ip.local") for _ in range(20)}) == 1


@pytest.mark.parametrize(
    "settings,message",
    [
        (
            {"lb_policy": "maglev", "hash_on": {"path": True}, "hash_table_size": 65536},
            "$.clusters[0].hash_table_size: 65536 is not a prime; maglev needs a prime table "
            "size (nearest primes: 65521, 65537)",
        ),
        (
            {"lb_policy": "ring_hash"},
            '$.clusters[0]: lb_policy "ring_hash" needs "hash_on"',
        ),
        (
            {"lb_policy": "least_request", "hash_on": {"header": "x-user"}},
            "$.clusters[0].hash_on: hash_on is used only by ring_hash and maglev",
        ),
        (
            {"lb_policy": "ewma", "ewma_decay": "0s"},
            '$.clusters[0].ewma_decay: "0s" must be greater than zero',
        ),
    ],
    ids=["maglev_not_prime", "ring_without_key", "hash_on_elsewhere", "zero_decay"],
)
def test_check_config_rejects_bad_balancing_settings(tmp_path, settings, message):
    cfg = make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", [f"{LOCALHOST}:8081"], **settings)],
    )
    path = tmp_path / "lb.json"
    path.write_text(json.dumps(cfg))
    r = run_pilotfish(["--check-config", str(path)])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert message in err, err


def test_admin_config_shows_effective_balancing_settings(three, start_pilotfish):
    addrs = [b.address for b in three]
    pf = start_pilotfish(
        by_host(
            [
                cluster("e", addrs, lb_policy="ewma", slow_start="30s"),
                cluster("m", addrs, lb_policy="maglev", hash_on={"header": "X-User"}),
            ]
        )
    )
    clusters = {c["name"]: c for c in pf.admin_json("/config")["clusters"]}
    assert clusters["e"]["lb_policy"] == "least_response_time"
    assert clusters["e"]["ewma_decay"] == "10s"
    assert clusters["e"]["slow_start"] == "30s"
    assert clusters["m"]["hash_on"] == {"header": "x-user"}
    assert clusters["m"]["hash_table_size"] == 65537
    # and a request through each works
    assert get(pf, "e.local") in {"b1", "b2", "b3"}
    assert get(pf, "m.local", headers={"X-User": "u"}) in {"b1", "b2", "b3"}


# ---- endpoint churn ---------------------------------------------------------------
# Sets are replaced by DNS discovery (dnsmasq on 127.0.0.1; fixtures from test_dns.py).

CHURN_POLICIES = {
    "lr": {"lb_policy": "least_request"},
    "ewma": {"lb_policy": "least_response_time", "slow_start": "1s"},
    "ring": {"lb_policy": "ring_hash", "hash_on": {"header": "x-user"}},
    "mag": {"lb_policy": "maglev", "hash_on": {"header": "x-user"}, "hash_table_size": 1009},
}


def test_every_policy_under_endpoint_churn_loses_no_request_and_drops_removed_endpoints(
    dnsmasq, start_at, start_pilotfish  # noqa: F811 (fixtures)
):
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    port, backends = addressed(start_at, ["b2", "b3", "b4", "b5"], hosts)
    name = f"a.{DOMAIN}"
    d = dnsmasq(hosts=[(hosts[0], name), (hosts[1], name)])
    clusters = [dict(dns_cluster(c, name, port=port), **s) for c, s in CHURN_POLICIES.items()]
    resolver = {"resolvers": [f"{LOCALHOST}:{d.port}"], "timeout": "300ms", "tries": 2}
    cfg = by_host(clusters)
    cfg.update(dns=resolver, access_log=False)
    pf = start_pilotfish(cfg, workers=2)
    failures, seen, stop = [], collections.defaultdict(collections.Counter), threading.Event()
    lock = threading.Lock()

    def client(k):
        deadline = time.monotonic() + 60  # bounded even if the test body stalls
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with pf.raw(timeout=10) as conn:
                    for _ in range(20):
                        c = list(CHURN_POLICIES)[i % len(CHURN_POLICIES)]
                        r = conn.request(
                            "GET", "/", headers=[("X-User", f"u{k}-{i % 50}")], host=f"{c}.local"
                        )
                        i += 1
                        with lock:
                            if r.status != 200:
                                failures.append(f"{c}: {r!r}")
                            seen[c][r.header("X-Backend")] += 1
            except (OSError, HarnessError) as exc:
                with lock:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    try:
        steps = [[hosts[1], hosts[2]], [hosts[2], hosts[3]], [hosts[0], hosts[3]]]
        for step in steps:
            d.set_hosts([(h, name) for h in step])
            for c in CHURN_POLICIES:
                wait_endpoints(pf, [f"{h}:{port}" for h in step], TTL + MARGIN, name=c)
        # b3 and b4 are out of every set now: after they stop, nothing may reach them
        backends[1].stop()
        backends[2].stop()
        with lock:
            before = {c: collections.Counter(v) for c, v in seen.items()}
        wait_for(
            lambda: all(sum(seen[c].values()) > sum(before[c].values()) + 50 for c in seen),
            30,
            "50 more requests per cluster",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures, failures[:5]
    for c in CHURN_POLICIES:
        after = seen[c] - before[c]
        assert set(after) <= {"b2", "b5"}, (c, after)
        assert sum(after.values()) > 50, (c, after)
