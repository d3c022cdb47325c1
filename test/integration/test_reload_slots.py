"""Clusters a reload removes free their slots (issue 16): a configured cluster that a reload
drops (or replaces) lets go of its slot, pools, balancer, health, metric series and routes
once no worker and no request refers to it, and the slot is reused; a request in flight to
it finishes first. A TLS cluster a reload adds has its files watched for rotation, and its
series go with it. Every part real, on 127.0.0.1."""

import os
import re
import signal
import subprocess
import threading

from harness import cluster, listener, make_config, route, wait_for
from test_reload import reload_by_signal, write_config

# PF_MAX_CLUSTERS (proxy/proxy.h): the run below adds more clusters than there are slots.
MAX_CLUSTERS = 8192


def exposition(pf):
    return pf.admin("GET", "/stats/prometheus").body.decode()


def series_of(text, prefix):
    """Exposition lines (not comments) naming a cluster whose name starts with prefix."""
    return [ln for ln in text.splitlines()
            if not ln.startswith("#") and f'cluster="{prefix}' in ln]


def freed(pf):
    """Clusters freed so far, from pilotfish's own log lines."""
    return sum(int(n) for n in re.findall(r"removed clusters freed count=(\d+)",
                                          pf.stderr_text()))


def applied_versions(pf):
    return len(re.findall(r"config reload applied version=", pf.stderr_text()))


def reload_quietly(pf, config):
    """SIGHUP with `config`, waiting on the log (a scrape of thousands of clusters' series
    per poll would cost more than the reload)."""
    before = applied_versions(pf)
    write_config(pf, config)
    os.kill(pf.pid, signal.SIGHUP)
    wait_for(lambda: applied_versions(pf) > before or "reload rejected" in pf.stderr_text(),
             30, "the reload")
    assert "reload rejected" not in pf.stderr_text(), pf.stderr_text()[-3000:]


def lines(text):
    return len(text.splitlines())


def generation(base, gen, per_gen, backend):
    """The config of generation `gen`: per_gen clusters named g<gen>-<i>, route to the first."""
    cfg = dict(base)
    names = [f"g{gen:02d}-{i:04d}" for i in range(per_gen)]
    cfg["clusters"] = [cluster(n, [backend.address]) for n in names]
    cfg["listeners"] = [dict(base["listeners"][0], routes=[route(names[0])])]
    return cfg


def test_reloads_that_swap_every_cluster_go_past_the_slot_count_and_leave_nothing_behind(
        start_backend, start_pilotfish):
    b = start_backend("b")
    per_gen, gens = 1400, 6  # 9,800 clusters over the run, 8,192 slots
    assert per_gen * (gens + 1) > MAX_CLUSTERS
    base = make_config([listener("main", [route("x")])], [cluster("x", [b.address])])
    pf = start_pilotfish(generation(base, 0, per_gen, b), workers=2)
    assert pf.get("/").status == 200
    size_after_first = fds_after_first = rss_after_first = None
    total_freed = 0
    for gen in range(1, gens + 1):
        reload_quietly(pf, generation(base, gen, per_gen, b))
        # the new routes serve (every request on a new connection: the old cluster's pooled
        # connection must close when its slot is freed)
        wait_for(lambda: pf.get("/").status == 200, 10, f"generation {gen} to serve")
        total_freed += per_gen
        wait_for(lambda: freed(pf) >= total_freed, 30,
                 f"generation {gen - 1}'s {per_gen} clusters to be freed")
        if gen == 2:
            text = exposition(pf)
            assert not series_of(text, "g01-"), "a freed cluster kept its series"
            size_after_first = lines(text)
            fds_after_first = pf.open_fds()
            rss_after_first = pf.rss_bytes()
    text = exposition(pf)
    assert not series_of(text, f"g{gens - 1:02d}-")
    assert len(series_of(text, f"g{gens:02d}-")) > 0
    # as many series as after the second generation
    assert lines(text) == size_after_first, (lines(text), size_after_first)
    # (one pooled upstream connection per worker at most, then and now)
    assert pf.open_fds() <= fds_after_first + 1, (pf.open_fds(), fds_after_first)
    # A leak of the freed clusters' state would be 4 x 1,400 clusters (several MiB); the bound
    # leaves room for the allocator's and the sanitizer's own noise.
    assert pf.rss_bytes() < rss_after_first * 1.25, (pf.rss_bytes(), rss_after_first)
    names = {c["name"] for c in pf.admin_json("/clusters")["clusters"]}
    assert names == {f"g{gens:02d}-{i:04d}" for i in range(per_gen)}
    assert "no cluster slot left" not in pf.stderr_text()


def test_a_request_in_flight_to_a_removed_cluster_finishes_before_its_slot_is_freed(
        start_backend, start_pilotfish):
    old, new = start_backend("old"), start_backend("new")
    cfg = make_config([listener("main", [route("slowpoke")])],
                      [cluster("slowpoke", [old.address])])
    pf = start_pilotfish(cfg, workers=2)
    result = {}

    def slow():
        result["resp"] = pf.get("/delay/2000")

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: any(name == "pilotfish_upstream_connections_active" and
                         labels.get("cluster") == "slowpoke" and value >= 1
                         for name, labels, value in pf.metrics()), 5, "the slow request upstream")
    reload_by_signal(pf, dict(cfg, clusters=[cluster("fresh", [new.address])],
                              listeners=[dict(cfg["listeners"][0], routes=[route("fresh")])]),
                     "applied")
    assert pf.get("/").header("X-Backend") == "new"
    # the cluster is gone from /clusters at once, but not freed while its request runs
    assert [c["name"] for c in pf.admin_json("/clusters")["clusters"]] == ["fresh"]
    assert series_of(exposition(pf), "slowpoke")
    assert freed(pf) == 0
    t.join(10)
    assert result["resp"].status == 200 and result["resp"].header("X-Backend") == "old"
    wait_for(lambda: freed(pf) == 1, 10, "the removed cluster to be freed")
    assert not series_of(exposition(pf), "slowpoke")


def make_ca(tmp, name):
    """A self-signed CA certificate file (the cluster's ca_file)."""
    key, crt = os.path.join(tmp, f"{name}.key"), os.path.join(tmp, f"{name}.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)
    return crt


def test_a_tls_cluster_a_reload_adds_is_watched_and_its_series_go_when_removed(
        start_backend, start_pilotfish, tmp_path):
    b = start_backend("b")
    ca_one, ca_two = make_ca(str(tmp_path), "ca-one"), make_ca(str(tmp_path), "ca-two")
    ca = os.path.join(str(tmp_path), "ca.crt")
    with open(ca_one, "rb") as f, open(ca, "wb") as out:
        out.write(f.read())
    cfg = make_config([listener("main", [route("plain")])], [cluster("plain", [b.address])])
    pf = start_pilotfish(cfg, workers=1)
    with_tls = dict(cfg, clusters=cfg["clusters"] + [
        cluster("secure", [b.address], tls={"ca_file": ca})])
    reload_by_signal(pf, with_tls, "applied")

    def reloads_of(result):
        return sum(v for n, labels, v in pf.metrics()
                   if n == "pilotfish_tls_certificate_reloads_total"
                   and labels.get("cluster") == "secure" and labels.get("result") == result)

    # the new cluster's CA file is watched: a rotated file is loaded, and counted
    text = exposition(pf)
    assert f'file="{ca}"' in text
    assert series_of(text, "secure")
    tmp = ca + ".new"
    with open(ca_two, "rb") as f, open(tmp, "wb") as out:
        out.write(f.read())
    os.replace(tmp, ca)
    wait_for(lambda: reloads_of("applied") == 1, 10, "the rotated CA file to be loaded")
    assert "tls certificates reloaded cluster=secure" in pf.stderr_text()
    # removed: its files leave the watch and the expiry gauge, its series the exposition
    reload_by_signal(pf, cfg, "applied")
    wait_for(lambda: freed(pf) == 1, 10, "the removed TLS cluster to be freed")
    text = exposition(pf)
    assert f'file="{ca}"' not in text
    assert not series_of(text, "secure"), series_of(text, "secure")
    assert pf.get("/").status == 200
