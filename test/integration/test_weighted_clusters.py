"""Weighted clusters: a route's "clusters" splits its requests by weight (a canary), each
request going to one cluster with that cluster's own endpoints."""

from harness import cluster, listener, make_config


def test_a_90_10_split_holds_within_two_percent_over_10000_requests(start_backend, start_pilotfish):
    v1, v2 = start_backend("v1"), start_backend("v2")
    pf = start_pilotfish(make_config(
        [listener("main", [{"match": {"prefix": "/"},
                            "clusters": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]}])],
        [cluster("v1", [v1.address]), cluster("v2", [v2.address])],
        access_log=False,
    ))
    counts = {"v1": 0, "v2": 0}
    total = 10000
    conn = pf.raw()
    for _ in range(total):
        resp = conn.request("GET", "/x")
        assert resp.status == 200
        counts[resp.header("X-Backend")] += 1
    conn.close()
    # Binomial: the standard deviation of v2's share is 0.3 points; 2 points is 6.7 of them.
    share = counts["v2"] / total
    assert 0.08 <= share <= 0.12, counts
    assert counts["v1"] + counts["v2"] == total


def test_a_cluster_with_weight_zero_gets_nothing(start_backend, start_pilotfish):
    v1, v2 = start_backend("v1"), start_backend("v2")
    pf = start_pilotfish(make_config(
        [listener("main", [{"match": {},
                            "clusters": [{"name": "v1", "weight": 1}, {"name": "v2", "weight": 0}]}])],
        [cluster("v1", [v1.address]), cluster("v2", [v2.address])],
    ))
    conn = pf.raw()
    seen = {conn.request("GET", "/").header("X-Backend") for _ in range(200)}
    conn.close()
    assert seen == {"v1"}


def split_config(v1, v2, **route):
    r = {"match": {"prefix": "/"},
         "clusters": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}]}
    r.update(route)
    return make_config([listener("main", [r])],
                       [cluster("v1", [v1.address]), cluster("v2", [v2.address])],
                       access_log=False)


def test_sticky_on_a_header_or_cookie_keeps_each_key_on_one_cluster(start_backend, start_pilotfish):
    v1, v2 = start_backend("v1"), start_backend("v2")
    for sticky, send in [({"header": "X-User"}, lambda k: [("X-User", k)]),
                         ({"cookie": "uid"}, lambda k: [("Cookie", f"theme=dark; uid={k}")])]:
        pf = start_pilotfish(split_config(v1, v2, sticky_on=sticky))
        conn = pf.raw()
        landed = {}
        for key in [f"user-{i}" for i in range(40)]:
            seen = {conn.request("GET", "/", headers=send(key)).header("X-Backend")
                    for _ in range(5)}
            assert len(seen) == 1, (sticky, key, seen)  # every request of a key: one cluster
            landed[key] = seen.pop()
        # the keys themselves still spread over both clusters
        assert set(landed.values()) == {"v1", "v2"}, landed
        # without the key, requests are drawn at random again
        seen = {conn.request("GET", "/").header("X-Backend") for _ in range(60)}
        assert seen == {"v1", "v2"}
        conn.close()
        pf.stop()


def test_each_cluster_of_a_split_has_its_own_header_edits(start_backend, start_pilotfish):
    v1, v2 = start_backend("v1"), start_backend("v2")
    pf = start_pilotfish(split_config(
        v1, v2,
        request_headers={"set": {"X-Route": "r", "X-Version": "route"}},
        response_headers={"add": {"X-Via-Route": "1"}},
        clusters=[
            {"name": "v1", "weight": 50,
             "request_headers": {"set": {"X-Version": "v1"}},
             "response_headers": {"set": {"X-Canary": "no"}}},
            {"name": "v2", "weight": 50,
             "request_headers": {"set": {"X-Version": "%CLUSTER%"}, "remove": ["X-Drop"]},
             "response_headers": {"set": {"X-Canary": "yes"}, "remove": ["X-Via-Route"]}},
        ]))
    conn = pf.raw()
    seen = set()
    for _ in range(60):
        resp = conn.request("GET", "/headers", headers=[("X-Drop", "d")])
        backend = resp.header("X-Backend")
        seen.add(backend)
        view = resp.json()
        sent = {k.lower(): [v for n, v in view["headers"] if n.lower() == k.lower()]
                for k, _ in view["headers"]}
        assert sent["x-route"] == ["r"]  # the route's edits apply to both
        assert sent["x-version"] == [backend]  # the cluster's set wins over the route's
        if backend == "v1":
            assert sent["x-drop"] == ["d"]
            assert resp.header("X-Canary") == "no" and resp.header("X-Via-Route") == "1"
        else:
            assert "x-drop" not in sent
            assert resp.header("X-Canary") == "yes" and resp.header("X-Via-Route") is None
    conn.close()
    assert seen == {"v1", "v2"}
