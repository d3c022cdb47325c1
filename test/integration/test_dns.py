"""DNS discovery against a real dnsmasq on 127.0.0.1: A, AAAA and SRV records become endpoints
and traffic follows them; TTL-driven refresh; a stopped DNS server keeps the set; NXDOMAIN
empties it only after the hold time; clusters on one name share one query; no request fails
while records change under load.

Backends of A/AAAA clusters listen on 127.0.0.2, 127.0.0.3, ... (all loopback on Linux) or
::1, with one shared port, because address records carry no port."""

import itertools
import threading
import time

import pytest

from harness import (
    LOCALHOST,
    AddressedBackend,
    Dnsmasq,
    HarnessError,
    dig,
    listener,
    make_config,
    metric_sum,
    route,
    shared_port,
    started_by_test,
    wait_for,
)

DOMAIN = "test.internal"
TTL = 1  # seconds, every record (dnsmasq --local-ttl)
MARGIN = 2.5  # seconds beyond the TTL for a change to show: refresh, re-evaluation, a slow CI


@pytest.fixture
def dnsmasq(tmp_path):
    """dnsmasq(hosts, srv) -> a running Dnsmasq serving them; stopped by PID at teardown."""
    tags = itertools.count()

    def make(hosts=(), srv=()):
        d = Dnsmasq(str(tmp_path), domain=DOMAIN, ttl=TTL, tag=f"dns{next(tags)}")
        d.hosts, d.srv = list(hosts), list(srv)
        return d

    yield from started_by_test(make)


@pytest.fixture
def start_at(tmp_path):
    """start_at(name, "127.0.0.2:PORT") -> a running AddressedBackend; stopped at teardown."""
    yield from started_by_test(lambda name, listen: AddressedBackend(name, str(tmp_path), listen))


def dns_cluster(name, dns_name, record="A", port=None, **kw):
    d = {"name": dns_name, "record": record, "min_refresh": "200ms", "max_refresh": "2s"}
    if port is not None:
        d["port"] = port
    d.update(kw)
    return {"name": name, "dns": d}


def dns_config(server, clusters, **kw):
    """One listener routing everything to the first cluster; the resolver is `server`."""
    resolver = {"resolvers": [f"{LOCALHOST}:{server.port}"], "timeout": "300ms", "tries": 2}
    return make_config(
        [listener("main", [route(clusters[0]["name"], prefix="/")])],
        clusters,
        dns=resolver,
        access_log=False,
        **kw,
    )


def cluster_state(pf, name="web"):
    for c in pf.admin_json("/clusters")["clusters"]:
        if c["name"] == name:
            return c
    raise HarnessError(f"no cluster {name} in /clusters")


def endpoint_addresses(pf, name="web"):
    return sorted(e["address"] for e in cluster_state(pf, name)["endpoints"])


def wait_endpoints(pf, want, timeout, name="web"):
    """Polls /clusters until the cluster's endpoints are exactly `want`; returns the time taken."""
    t0 = time.monotonic()
    wait_for(lambda: endpoint_addresses(pf, name) == sorted(want), timeout, f"endpoints {want}")
    return time.monotonic() - t0


def backends_hit(pf, n):
    """Which backend answered each of n requests (pf-backend's body is its name)."""
    seen = {}
    for _ in range(n):
        r = pf.get("/")
        assert r.status == 200, r
        name = r.body.decode().strip()
        seen[name] = seen.get(name, 0) + 1
    return seen


def addressed(start_at, names, hosts):
    """Backends names[i] on hosts[i], all on one port; returns (port, backends)."""
    port = shared_port(hosts)
    bs = [start_at(n, f"[{h}]:{port}" if ":" in h else f"{h}:{port}") for n, h in zip(names, hosts)]
    return port, bs


# ---- the fixture is a real DNS server -------------------------------------------


def test_dnsmasq_fixture_answers_dig_with_records_ttls_and_nxdomain(dnsmasq):
    d = dnsmasq(
        hosts=[("127.0.0.2", f"a.{DOMAIN}"), ("127.0.0.3", f"a.{DOMAIN}"), ("::1", f"v6.{DOMAIN}")],
        srv=[(f"_http._tcp.svc.{DOMAIN}", f"a.{DOMAIN}", 8081, 10, 3)],
    )
    rc, out = dig(d.port, f"a.{DOMAIN}", "A", "+noall", "+answer")
    assert rc == 0, out
    assert f"a.{DOMAIN}.\t{TTL}\tIN\tA\t127.0.0.2" in out and "127.0.0.3" in out, out
    rc, out = dig(d.port, f"v6.{DOMAIN}", "AAAA", "+short")
    assert out.split() == ["::1"], out
    rc, out = dig(d.port, f"_http._tcp.svc.{DOMAIN}", "SRV", "+noall", "+answer", "+additional")
    assert f"IN\tSRV\t10 3 8081 a.{DOMAIN}." in out, out
    assert f"a.{DOMAIN}.\t{TTL}\tIN\tA\t127.0.0.2" in out, out  # glue in the additional section
    rc, out = dig(d.port, f"gone.{DOMAIN}", "A")
    assert "status: NXDOMAIN" in out, out
    rc, out = dig(d.port, f"v6.{DOMAIN}", "A")
    assert "status: NOERROR" in out and "ANSWER: 0" in out, out  # NODATA
    d.set_hosts([("127.0.0.4", f"a.{DOMAIN}")])
    rc, out = dig(d.port, f"a.{DOMAIN}", "A", "+short")
    assert out.split() == ["127.0.0.4"], out


# ---- A, AAAA, SRV -------------------------------------------------------------------


def test_a_records_become_endpoints_and_traffic_reaches_them(dnsmasq, start_at, start_pilotfish):
    port, _ = addressed(start_at, ["b2", "b3"], ["127.0.0.2", "127.0.0.3"])
    d = dnsmasq(hosts=[("127.0.0.2", f"a.{DOMAIN}"), ("127.0.0.3", f"a.{DOMAIN}")])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", f"a.{DOMAIN}", port=port)]))
    assert endpoint_addresses(pf) == [f"127.0.0.2:{port}", f"127.0.0.3:{port}"]
    c = cluster_state(pf)
    assert c["source"] == "dns"
    assert c["dns"]["name"] == f"a.{DOMAIN}" and c["dns"]["record"] == "A"
    assert c["dns"]["port"] == port and c["dns"]["ttl"] == TTL
    assert c["dns"]["last_refresh"] and c["dns"]["last_error"] is None
    assert c["dns"]["queries"][0]["status"] == "ok"
    assert backends_hit(pf, 10) == {"b2": 5, "b3": 5}


def test_aaaa_and_a_plus_aaaa_reach_ipv6_backends(dnsmasq, start_at, start_pilotfish):
    port, _ = addressed(start_at, ["v6", "v4"], ["::1", "127.0.0.2"])
    d = dnsmasq(
        hosts=[("::1", f"v6.{DOMAIN}"), ("::1", f"both.{DOMAIN}"), ("127.0.0.2", f"both.{DOMAIN}")]
    )
    pf = start_pilotfish(
        dns_config(
            d,
            [
                dns_cluster("web", f"v6.{DOMAIN}", record="AAAA", port=port),
                dns_cluster("both", f"both.{DOMAIN}", record="A+AAAA", port=port),
            ],
        )
    )
    assert endpoint_addresses(pf) == [f"[::1]:{port}"]
    assert backends_hit(pf, 3) == {"v6": 3}
    assert endpoint_addresses(pf, "both") == [f"127.0.0.2:{port}", f"[::1]:{port}"]
    both = cluster_state(pf, "both")["dns"]
    assert [q["type"] for q in both["queries"]] == ["A", "AAAA"]


def test_srv_weights_and_priorities_are_published(dnsmasq, start_backend, start_pilotfish):
    b1, b2, b3 = start_backend("s1"), start_backend("s2"), start_backend("s3")
    name = f"_http._tcp.svc.{DOMAIN}"
    d = dnsmasq(
        hosts=[(LOCALHOST, f"t1.{DOMAIN}")],
        srv=[
            (name, f"t1.{DOMAIN}", b1.port, 10, 1),
            (name, f"t1.{DOMAIN}", b2.port, 10, 3),
            (name, f"t1.{DOMAIN}", b3.port, 20, 1),
        ],
    )
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", name, record="SRV")]), workers=1)
    eps = {e["address"]: e for e in cluster_state(pf)["endpoints"]}
    assert set(eps) == {b1.address, b2.address, b3.address}
    # SRV weight is the weight; SRV priority 10 is tier 0, 20 tier 1
    assert (eps[b1.address]["weight"], eps[b1.address]["priority"]) == (1, 0)
    assert (eps[b2.address]["weight"], eps[b2.address]["priority"]) == (3, 0)
    assert (eps[b3.address]["weight"], eps[b3.address]["priority"]) == (1, 1)
    assert cluster_state(pf)["dns"]["target_queries"] == 0  # dnsmasq sent the glue
    # weights shape the traffic inside tier 0; tier 1 is not used while tier 0 serves
    seen = backends_hit(pf, 40)
    assert seen.get("s3", 0) == 0, seen
    assert 25 <= seen.get("s2", 0) <= 35 and 5 <= seen.get("s1", 0) <= 15, seen


def test_lower_tier_serves_only_when_the_first_has_no_endpoint(
    dnsmasq, start_backend, start_pilotfish
):
    b1, b2 = start_backend("first"), start_backend("second")
    name = f"_http._tcp.tiers.{DOMAIN}"
    d = dnsmasq(
        hosts=[(LOCALHOST, f"t1.{DOMAIN}"), (LOCALHOST, f"t2.{DOMAIN}")],
        srv=[(name, f"t1.{DOMAIN}", b1.port, 10, 1), (name, f"t2.{DOMAIN}", b2.port, 20, 1)],
    )
    cluster = dns_cluster("web", name, record="SRV")
    cluster["health_check"] = {
        "type": "tcp",
        "interval": "100ms",
        "timeout": "200ms",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    pf = start_pilotfish(dns_config(d, [cluster]))
    assert backends_hit(pf, 6) == {"first": 6}
    # tier 0 still in DNS but down: health checks take it out, tier 1 serves
    b1.stop()
    wait_for(lambda: pf.get("/").body == b"second\n", 10, "traffic on tier 1")
    assert backends_hit(pf, 4) == {"second": 4}
    # the first tier's target leaves DNS: the second tier is tier 0 now
    d.set_srv([(name, f"t2.{DOMAIN}", b2.port, 20, 1)])
    wait_endpoints(pf, [b2.address], TTL + MARGIN + 2)
    assert [e["priority"] for e in cluster_state(pf)["endpoints"]] == [0]
    assert backends_hit(pf, 4) == {"second": 4}


# ---- refresh ----------------------------------------------------------------------


def test_record_change_moves_traffic_within_ttl(dnsmasq, start_at, start_pilotfish):
    port, _ = addressed(start_at, ["b2", "b3"], ["127.0.0.2", "127.0.0.3"])
    d = dnsmasq(hosts=[("127.0.0.2", f"a.{DOMAIN}")])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", f"a.{DOMAIN}", port=port)]))
    assert backends_hit(pf, 3) == {"b2": 3}
    d.set_hosts([("127.0.0.3", f"a.{DOMAIN}")])
    took = wait_endpoints(pf, [f"127.0.0.3:{port}"], TTL + MARGIN)
    assert took <= TTL + MARGIN
    assert backends_hit(pf, 3) == {"b3": 3}


def test_same_answer_publishes_nothing_new(dnsmasq, start_at, start_pilotfish):
    port, _ = addressed(start_at, ["b2"], ["127.0.0.2"])
    d = dnsmasq(hosts=[("127.0.0.2", f"a.{DOMAIN}")])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", f"a.{DOMAIN}", port=port)]))
    first = cluster_state(pf)
    answers = {first["dns"]["queries"][0]["last_answer"]}

    def refreshed_three_more_times():
        answers.add(cluster_state(pf)["dns"]["queries"][0]["last_answer"])
        return len(answers) >= 4

    wait_for(refreshed_three_more_times, 4 * (TTL + MARGIN), "three more refreshes", interval=0.1)
    now = cluster_state(pf)
    assert now["version"] == first["version"]
    assert now["dns"]["publishes"] == first["dns"]["publishes"] == 1


def test_clusters_on_one_name_share_one_query(dnsmasq, start_at, start_pilotfish):
    port, _ = addressed(start_at, ["b2"], ["127.0.0.2"])
    d = dnsmasq(hosts=[("127.0.0.2", f"shared.{DOMAIN}")])
    clusters = [dns_cluster(n, f"shared.{DOMAIN}", port=port) for n in ("web", "api")]
    pf = start_pilotfish(dns_config(d, clusters))

    def answered_rounds():
        return metric_sum(pf.metrics(), "pilotfish_dns_queries_total", result="ok") >= 4

    wait_for(answered_rounds, 4 * (TTL + MARGIN), "four answered queries", interval=0.1)
    web, api = cluster_state(pf, "web")["dns"], cluster_state(pf, "api")["dns"]
    assert web["queries"][0]["last_answer"] == api["queries"][0]["last_answer"]
    finished = metric_sum(pf.metrics(), "pilotfish_dns_queries_total")
    # one query per refresh for both clusters (two would double it)
    assert d.queries_logged(f"shared.{DOMAIN}") <= finished + 1


# ---- failures -------------------------------------------------------------------


def test_dns_server_stopped_keeps_endpoints_then_refresh_resumes(
    dnsmasq, start_at, start_pilotfish
):
    port, _ = addressed(start_at, ["b2", "b3", "b4"], ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    d = dnsmasq(hosts=[("127.0.0.2", f"a.{DOMAIN}"), ("127.0.0.3", f"a.{DOMAIN}")])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", f"a.{DOMAIN}", port=port)]))
    d.stop()

    def failing():
        q = cluster_state(pf)["dns"]["queries"][0]
        return q["failures"] >= 2

    wait_for(failing, 10, "two failed refreshes", interval=0.1)
    c = cluster_state(pf)
    assert c["dns"]["last_error"] and f"a.{DOMAIN} A:" in c["dns"]["last_error"], c
    assert endpoint_addresses(pf) == [f"127.0.0.2:{port}", f"127.0.0.3:{port}"]
    assert backends_hit(pf, 6) == {"b2": 3, "b3": 3}
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_dns_queries_total", result="connrefused") >= 2
    assert metric_sum(samples, "pilotfish_dns_refresh_age_seconds", cluster="web") >= 1.0

    d.hosts = [("127.0.0.4", f"a.{DOMAIN}")]
    d.start()
    # backoff is capped by max_refresh (2s), so the next try comes within it
    wait_endpoints(pf, [f"127.0.0.4:{port}"], 2 + TTL + MARGIN)
    assert backends_hit(pf, 2) == {"b4": 2}
    assert cluster_state(pf)["dns"]["queries"][0]["failures"] == 0


def test_nxdomain_empties_the_set_only_after_the_hold_time(dnsmasq, start_at, start_pilotfish):
    hold = 3.0
    port, _ = addressed(start_at, ["b2"], ["127.0.0.2"])
    d = dnsmasq(hosts=[("127.0.0.2", f"a.{DOMAIN}")])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", f"a.{DOMAIN}", port=port, hold="3s")]))
    d.set_hosts([])  # the name is gone: NXDOMAIN
    removed = time.monotonic()
    wait_for(
        lambda: cluster_state(pf)["dns"]["queries"][0]["status"] == "nxdomain",
        TTL + MARGIN,
        "an NXDOMAIN answer",
        interval=0.05,
    )
    q = cluster_state(pf)["dns"]["queries"][0]
    assert q["holding"] and 0 < q["hold_left_seconds"] <= hold
    # while holding, the endpoint stays and serves
    assert backends_hit(pf, 2) == {"b2": 2}
    wait_endpoints(pf, [], TTL + hold + MARGIN)
    emptied = time.monotonic()
    assert emptied - removed >= hold - 0.1, f"emptied {emptied - removed:.2f}s after removal"
    assert pf.get("/").status == 503
    # the name comes back: endpoints at once (no hold for positive answers)
    d.set_hosts([("127.0.0.2", f"a.{DOMAIN}")])
    wait_endpoints(pf, [f"127.0.0.2:{port}"], TTL + MARGIN)


def test_ready_waits_for_the_first_answer_and_nxdomain_at_start_is_empty(
    tmp_path, start_at, start_pilotfish
):
    port, _ = addressed(start_at, ["b2"], ["127.0.0.2"])
    d = Dnsmasq(str(tmp_path), domain=DOMAIN, ttl=TTL, tag="late")
    cfg = dns_config(
        d,
        [
            dns_cluster("web", f"a.{DOMAIN}", port=port),
            dns_cluster("later", f"later.{DOMAIN}", port=port),
        ],
    )
    pf = start_pilotfish(cfg, wait_ready=False)
    try:
        # no DNS server yet: failures only, so no set and not ready
        wait_for(
            lambda: cluster_state(pf)["dns"]["last_error"] is not None, 10, "a failed query"
        )
        r = pf.admin("GET", "/ready")
        assert r.status == 503
        # it names what it waits for as the log line does, with web's latest failure
        for name, host in (("web", "a"), ("later", "later")):
            what = f"dns: resolving cluster={name} name={host}.{DOMAIN}"
            assert f"\n- {what}" in r.body.decode(), r.body
            assert what in pf.stderr_text()
        assert f"\n- dns: resolving cluster=web name=a.{DOMAIN} (" in r.body.decode(), r.body
        assert cluster_state(pf)["version"] == 0
        d.hosts = [("127.0.0.2", f"a.{DOMAIN}")]
        d.start()
        pf.wait_ready(timeout=2 + TTL + MARGIN)
        assert backends_hit(pf, 2) == {"b2": 2}
        # "later" answered NXDOMAIN: published empty (ready, 503 for its requests)
        later = cluster_state(pf, "later")
        assert later["version"] >= 1 and later["endpoints"] == []
        assert later["dns"]["queries"][0]["status"] == "nxdomain"
    finally:
        d.stop()


def test_metrics_count_queries_latency_and_refresh_age(dnsmasq, start_at, start_pilotfish):
    port, _ = addressed(start_at, ["b2", "b3"], ["127.0.0.2", "127.0.0.3"])
    d = dnsmasq(hosts=[("127.0.0.2", f"a.{DOMAIN}"), ("127.0.0.3", f"a.{DOMAIN}")])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", f"a.{DOMAIN}", port=port)]))
    samples = pf.metrics()
    assert metric_sum(samples, "pilotfish_dns_queries_total", result="ok") >= 1
    assert metric_sum(samples, "pilotfish_dns_refresh_duration_seconds_count") >= 1
    age = metric_sum(samples, "pilotfish_dns_refresh_age_seconds", cluster="web")
    assert 0 <= age <= TTL + MARGIN
    assert metric_sum(samples, "pilotfish_cluster_endpoints", cluster="web", health="healthy") == 2


# ---- under load -------------------------------------------------------------------


def test_no_request_fails_while_records_change_under_load(dnsmasq, start_at, start_pilotfish):
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    port, backends = addressed(start_at, ["b2", "b3", "b4", "b5"], hosts)
    name = f"a.{DOMAIN}"
    d = dnsmasq(hosts=[(hosts[0], name), (hosts[1], name)])
    pf = start_pilotfish(dns_config(d, [dns_cluster("web", name, port=port)]), workers=2)
    failures, counts, stop = [], {}, threading.Event()
    lock = threading.Lock()

    def client():
        deadline = time.monotonic() + 60  # bounded even if the test body stalls
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with pf.raw(timeout=10) as conn:
                    for _ in range(20):
                        r = conn.request("GET", "/")
                        who = r.body.decode().strip()
                        with lock:
                            if r.status != 200:
                                failures.append(repr(r))
                            counts[who] = counts.get(who, 0) + 1
            except (OSError, HarnessError) as exc:
                with lock:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        steps = [[hosts[1], hosts[2]], [hosts[2], hosts[3]], [hosts[3]], [hosts[0], hosts[3]]]
        for step in steps:
            d.set_hosts([(h, name) for h in step])
            wait_endpoints(pf, [f"{h}:{port}" for h in step], TTL + MARGIN)
        # a backend gone from DNS may go away: nothing is sent to it any more
        backends[1].stop()
        backends[2].stop()
        with lock:
            before = dict(counts)
        wait_for(lambda: sum(counts.values()) > sum(before.values()) + 200, 30, "200 more requests")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures, failures[:5]
    assert sum(counts.values()) > 400
    assert all(counts.get(b, 0) > 0 for b in ("b2", "b3", "b4", "b5")), counts
