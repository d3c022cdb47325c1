"""An API server restart, as etcd-backed ones do it: the revisions survive, so watches
resume from their resourceVersion and nothing is listed again; one that lost its history
(every watch gets 410) makes each watch relist once. Real pilotfish against
test/fakes/k8s_api.py on 127.0.0.1, stopped (SIGTERM: it saves its objects and history) and
started again on the same ports."""

import pytest

from harness import (cluster_status, k8s_service, k8s_slice, listener, make_config, metric_sum,
                     restartable_k8s_api, route, wait_for)


@pytest.fixture
def fake(tmp_path):
    """The fake on fixed ports with a state file, so that a restart finds both again."""
    yield from restartable_k8s_api(tmp_path)


def cluster_addresses(pf, name):
    c = cluster_status(pf, name)
    return sorted(e["address"] for e in c["endpoints"]) if c else None


def watches_open(api):
    return api.control("/state")["watchers"]


@pytest.mark.parametrize("forget", [False, True], ids=["history_kept", "history_lost"])
def test_api_server_restart_resumes_watches_or_relists_once(fake, start_backend,
                                                             start_pilotfish, forget):
    b1, b2 = start_backend("b1"), start_backend("b2")
    api = fake()
    api.apply(k8s_service("web", [("http", 80)]), k8s_slice("web-1", "web", b1.port,
                                                             ["127.0.0.1"]))
    cluster = {"name": "web", "kubernetes": {"service": "web", "port": "http"}}
    pf = start_pilotfish(make_config([listener("main", [route("web", prefix="/")])], [cluster],
                                     kubernetes=api.config()))
    wait_for(lambda: cluster_addresses(pf, "web") == [b1.address], 10, "web synced")
    wait_for(lambda: watches_open(api) == 2, 10, "both watches open")
    # a change the watches have not seen when the server goes down
    api.control("/stall", {"on": True})
    api.apply(k8s_slice("web-2", "web", b2.port, ["127.0.0.1"]))
    api.stop()
    api = fake("--forget-history") if forget else fake()
    wait_for(lambda: watches_open(api) == 2, 15, "both watches open again")
    wait_for(lambda: cluster_addresses(pf, "web") == sorted([b1.address, b2.address]), 15,
             "the change missed before the restart")
    lists = [r for r in api.requests() if r["verb"] == "list"]
    relists = metric_sum(pf.metrics(), "pilotfish_kubernetes_relists_total")
    if forget:  # every watch got 410: each relisted once, the set stayed meanwhile
        assert len(lists) == 2 and relists == 2, lists
    else:  # resumed from the resourceVersion: nothing listed again
        assert lists == [] and relists == 0, lists
    assert pf.get("/").status == 200
