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
