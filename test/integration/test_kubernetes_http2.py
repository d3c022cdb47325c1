"""Lists and watches multiplexed on HTTP/2 (kubernetes.http2, on by default): every Service in
use is two streams of one TLS connection to the API server, not two connections; HTTP/1.1
when the server does not offer h2 (or the key is off); a connection cut, or an API server
restart, breaks every stream at once and every watch resumes from its resourceVersion with
nothing lost; a 410 on one stream relists that one only. Real pilotfish against
test/fakes/k8s_api.py on 127.0.0.1, which counts connections and streams."""

import threading

import pytest

from harness import (cluster_status, k8s_service, k8s_slice, listener, make_config, metric_sum,
                     restartable_k8s_api, route, wait_for)

SERVICES = 6


@pytest.fixture
def fake(tmp_path):
    """The fake on fixed ports with a state file, so that a restart finds both again."""
    yield from restartable_k8s_api(tmp_path)


def names(n=SERVICES):
    return [f"svc{i}" for i in range(n)]


def services(backend, n=SERVICES):
    objs = []
    for name in names(n):
        objs += [k8s_service(name, [("http", 80)]),
                 k8s_slice(f"{name}-1", name, backend.port, ["127.0.0.1"])]
    return objs


def move_all(api, backend, n=SERVICES):
    api.apply(*[k8s_slice(f"{name}-1", name, backend.port, ["127.0.0.1"]) for name in names(n)])


def start_on_demand(api, start_backend, start_pilotfish, **k8s):
    fallback = start_backend("fallback")
    discover = {"namespaces": ["default"], "mode": "on_demand", "on_demand_timeout": "15s"}
    return start_pilotfish(make_config(
        [listener("main", [route("fallback", host="fallback.local")])],
        [{"name": "fallback", "endpoints": [fallback.address]}],
        kubernetes=api.config(auto_discover=discover, **k8s)))


def serving_on_b1(fake, start_backend, start_pilotfish, n=SERVICES, fake_args=(), asked=None,
                  **k8s):
    """n Services on backend b1 behind an on_demand pilotfish, each of the first `asked`
    (all by default) asked once and answered by b1. Returns (api, pf, b2)."""
    b1, b2 = start_backend("b1"), start_backend("b2")
    api = fake(*fake_args)
    api.apply(*services(b1, n))
    pf = start_on_demand(api, start_backend, start_pilotfish, **k8s)
    for name in names(n if asked is None else asked):
        assert backend_of(pf, name) == "b1", name
    return api, pf, b2


def backend_of(pf, name):
    r = pf.get("/", host=f"{name}.default")
    return r.header("X-Backend") if r.status == 200 else r.status


def all_on(pf, backend_name, n=SERVICES):
    return all(backend_of(pf, name) == backend_name for name in names(n))


def state(api):
    return api.control("/state")


def lists(api):
    return [r for r in api.requests() if r["verb"] == "list"]


def test_services_in_use_share_one_http2_connection(fake, start_backend, start_pilotfish):
    api, pf, b2 = serving_on_b1(fake, start_backend, start_pilotfish)
    # 2 watches per Service, all streams of the one connection the first list opened
    wait_for(lambda: state(api)["streams_open"] == 2 * SERVICES, 10, "every watch open")
    st = state(api)
    assert st["connections_total"] == {"h2": 1}, st
    assert st["connections_open"] == {"h2": 1}, st
    assert st["watchers"] == 2 * SERVICES
    assert st["streams_total"] == 4 * SERVICES  # a list and a watch of each kind
    # a change arrives on every stream
    move_all(api, b2)
    wait_for(lambda: all_on(pf, "b2"), 10, "every Service on b2")
    assert state(api)["connections_total"] == {"h2": 1}


@pytest.mark.parametrize("where", ["server", "client"])
def test_http1_when_the_server_offers_no_h2_or_the_key_is_off(fake, start_backend,
                                                               start_pilotfish, where):
    n = 3
    api, pf, b2 = serving_on_b1(fake, start_backend, start_pilotfish, n,
                                fake_args=("--no-h2",) if where == "server" else (),
                                **({"http2": False} if where == "client" else {}))
    # one HTTP/1.1 connection per watch, as before HTTP/2 (lists' connections are reused)
    wait_for(lambda: state(api)["connections_open"].get("http/1.1") == 2 * n, 10,
             "a connection per watch")
    st = state(api)
    assert "h2" not in st["connections_total"] and st["streams_total"] == 0, st
    move_all(api, b2, n)
    wait_for(lambda: all_on(pf, "b2", n), 10, "every Service on b2")


@pytest.mark.parametrize("how", ["cut", "restart"])
def test_every_watch_resumes_after_the_connection_dies(fake, start_backend, start_pilotfish,
                                                       how):
    api, pf, b2 = serving_on_b1(fake, start_backend, start_pilotfish)
    wait_for(lambda: state(api)["streams_open"] == 2 * SERVICES, 10, "every watch open")
    listed = len(lists(api))

    # the application keeps asking every known Service while the connection dies
    failed, ok, done = [], [0], threading.Event()

    def ask():
        while not done.is_set():
            for name in names():
                got = backend_of(pf, name)
                if got in ("b1", "b2"):
                    ok[0] += 1
                else:
                    failed.append((name, got))

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    try:
        if how == "cut":
            api.control("/cut", {})  # the connection drops under every stream
        else:
            api.stop()
            api = fake()
            listed = 0  # a new fake: its request log starts empty
        wait_for(lambda: state(api)["streams_open"] == 2 * SERVICES, 15,
                 "every watch open again")
        st = state(api)
        # all of them on one new connection
        assert st["connections_open"] == {"h2": 1}, st
        # resumed from their resourceVersions: nothing listed again
        assert len(lists(api)) == listed, lists(api)
        assert metric_sum(pf.metrics(), "pilotfish_kubernetes_relists_total") == 0
        move_all(api, b2)
        wait_for(lambda: all_on(pf, "b2"), 10, "every Service on b2 after the reconnect")
    finally:
        done.set()
        t.join(10)
    assert failed == [] and ok[0] > 0, failed[:5]


def test_a_410_on_one_stream_relists_that_one_only(fake, start_backend, start_pilotfish):
    api, pf, b2 = serving_on_b1(fake, start_backend, start_pilotfish, 3,
                                backoff={"base": "50ms", "max": "500ms"})
    wait_for(lambda: state(api)["streams_open"] == 6, 10, "every watch open")
    before = lists(api)
    # svc1's slice watch ends with a 410 Expired; the other five streams go on
    api.control("/expire", {"resource": "endpointslices",
                            "query": "kubernetes.io/service-name=svc1"})
    wait_for(lambda: len(lists(api)) > len(before), 10, "the relist")
    wait_for(lambda: state(api)["streams_open"] == 6, 10, "its watch open again")
    new = lists(api)[len(before):]
    assert len(new) == 1, new
    assert new[0]["resource"] == "endpointslices" and "svc1" in new[0]["query"], new
    assert metric_sum(pf.metrics(), "pilotfish_kubernetes_relists_total") == 1
    assert state(api)["connections_total"] == {"h2": 1}
    # the relisted one still follows changes, and svc1 was served throughout
    assert cluster_status(pf, "svc1.default:80")["endpoints"]
    move_all(api, b2, 3)
    wait_for(lambda: all_on(pf, "b2", 3), 10, "every Service on b2")


def test_past_the_servers_stream_limit_a_second_connection_opens(fake, start_backend,
                                                                 start_pilotfish):
    api, pf, b2 = serving_on_b1(fake, start_backend, start_pilotfish, 4,
                                fake_args=("--h2-max-streams", "4"))
    # 8 watches at 4 streams a connection: 2 connections (lists' streams come and go)
    wait_for(lambda: state(api)["streams_open"] == 8, 10, "every watch open")
    st = state(api)
    assert 2 <= st["connections_open"]["h2"] <= 3, st
    assert st["h2_protocol_errors"] == 0 and "http/1.1" not in st["connections_total"], st
    move_all(api, b2, 4)
    wait_for(lambda: all_on(pf, "b2", 4), 10, "every Service on b2")


def test_after_a_goaway_open_watches_go_on_and_new_ones_take_a_new_connection(
        fake, start_backend, start_pilotfish):
    api, pf, b2 = serving_on_b1(fake, start_backend, start_pilotfish, 4, asked=3)
    wait_for(lambda: state(api)["streams_open"] == 6, 10, "every watch open")
    assert api.control("/goaway", {})["connections"] == 1
    # a Service used after the GOAWAY is listed and watched on a new connection
    assert backend_of(pf, "svc3") == "b1"
    wait_for(lambda: state(api)["streams_open"] == 8, 10, "the new Service's watches")
    st = state(api)
    # libcurl 7.88 makes a request wait for a connection being set up only while it does
    # not know yet whether the server multiplexes; after the GOAWAY it knows (the old
    # connection still serves), so the new Service's two lists, started together, may
    # each open one
    assert st["connections_total"]["h2"] in (2, 3), st
    assert st["connections_open"] == st["connections_total"], st
    # the watches opened before it still deliver, on the old connection
    move_all(api, b2, 4)
    wait_for(lambda: all_on(pf, "b2", 4), 10, "every Service on b2")
    assert metric_sum(pf.metrics(), "pilotfish_kubernetes_relists_total") == 0
