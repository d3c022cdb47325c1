"""Config reload on SIGHUP and with --watch-config: validated first, refused whole when
invalid or when it changes what needs a restart, else applied live without refusing a
connection or failing a request."""

import http.client
import json
import os
import signal
import threading

from harness import (
    LOCALHOST,
    Pilotfish,
    cluster,
    free_port,
    listener,
    make_config,
    route,
    wait_for,
)


def reloads(pf, result):
    for name, labels, value in pf.metrics():
        if name == "pilotfish_config_reloads_total" and labels.get("result") == result:
            return value
    return 0


def write_config(pf, config):
    # Atomically, as an operator or a ConfigMap would: a reader never sees half a file.
    tmp = pf.config_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, pf.config_path)
    pf.config = config


def reload_by_signal(pf, config, result="applied"):
    before = reloads(pf, result)
    write_config(pf, config)
    os.kill(pf.pid, signal.SIGHUP)
    wait_for(lambda: reloads(pf, result) > before, 10, f"reload {result}")


def backend_of(port, path="/"):
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "test.local"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-Backend")
    finally:
        conn.close()


def two_configs(one, two):
    """A: / -> one, plus listener "extra"; B: / -> two, no "extra". Same main and admin."""
    main = listener("main", [route("one", prefix="/")])
    extra = listener("extra", [route("two", prefix="/")])
    a = make_config(
        [main, extra],
        [cluster("one", [one.address]), cluster("two", [two.address])],
        access_log=False,
    )
    b = json.loads(json.dumps(a))
    b["listeners"] = [json.loads(json.dumps(main))]
    b["listeners"][0]["routes"] = [route("two", prefix="/")]
    return a, b


def test_reload_under_load_moves_a_route_and_a_listener_without_a_failed_request(
    start_backend, start_pilotfish
):
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    pf = start_pilotfish(a, workers=2)
    main_port, extra_port = pf.port("main"), pf.port("extra")
    per_thread = 5000  # 20,000 keep-alive requests in all
    failures, refused, done = [], [], []
    seen = {"one": 0, "two": 0}
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection(LOCALHOST, main_port, timeout=20)
        count = 0
        while count < per_thread:
            try:
                conn.request("GET", "/", headers={"Host": "test.local"})
                resp = conn.getresponse()
                resp.read()
                name = resp.getheader("X-Backend")
                if resp.status != 200 or name not in seen:
                    failures.append((resp.status, name))
                with lock:
                    if name in seen:
                        seen[name] += 1
                count += 1
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(LOCALHOST, main_port, timeout=20)
            except ConnectionRefusedError as exc:
                refused.append(exc)
                return
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                return
        conn.close()
        done.append(count)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        config = b if i % 2 == 0 else a
        reload_by_signal(pf, config)
        want = "two" if config is b else "one"
        # Traffic follows the version just applied: a new request goes to its cluster.
        assert backend_of(main_port) == (200, want)
        if config is a:
            assert backend_of(extra_port) == (200, "two")
        else:
            wait_for(lambda: _refused(extra_port), 10, "removed listener to stop accepting")
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:5]
    assert not refused
    assert sum(done) == 4 * per_thread
    assert seen["one"] > 0 and seen["two"] > 0
    assert reloads(pf, "rejected") == 0


def _refused(port):
    try:
        backend_of(port)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_invalid_reload_under_load_changes_nothing_and_logs_every_error_with_its_path(
    start_backend, start_pilotfish
):
    one, two = start_backend("one"), start_backend("two")
    a, _ = two_configs(one, two)
    pf = start_pilotfish(a)
    bad = json.loads(json.dumps(a))
    bad["listeners"][0]["routes"][0]["cluster"] = "missing"
    bad["clusters"][0]["connect_timeout"] = "soon"
    stop = threading.Event()
    failures = []

    def client():
        while not stop.is_set():
            status, name = backend_of(pf.port("main"))
            if (status, name) != (200, "one"):
                failures.append((status, name))

    t = threading.Thread(target=client)
    t.start()
    try:
        reload_by_signal(pf, bad, result="rejected")
    finally:
        stop.set()
        t.join(timeout=30)
    assert not failures
    assert backend_of(pf.port("main")) == (200, "one")
    assert backend_of(pf.port("extra")) == (200, "two")
    log = pf.stderr_text()
    assert '$.listeners[0].routes[0].cluster: unknown cluster "missing"' in log
    assert "$.clusters[0].connect_timeout" in log
    assert reloads(pf, "applied") == 0


def test_reload_that_changes_workers_or_admin_is_refused_saying_a_restart_is_needed(
    start_backend, start_pilotfish
):
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    pf = start_pilotfish(a)
    b["workers"] = 3
    b["admin"] = {"address": f"{LOCALHOST}:{free_port()}"}
    reload_by_signal(pf, b, result="rejected")
    log = pf.stderr_text()
    assert "$.workers: workers cannot change while pilotfish runs; restart pilotfish" in log
    assert "$.admin.address: admin cannot change while pilotfish runs" in log
    # The route change in the same file was not applied either.
    assert backend_of(pf.port("main")) == (200, "one")


def test_unhealthy_endpoint_stays_out_across_a_reload_that_changes_another_cluster(
    start_backend, start_pilotfish
):
    good, sick, other = start_backend("good"), start_backend("sick"), start_backend("other")
    checked = cluster(
        "checked",
        [good.address, sick.address],
        panic_threshold=0,
        health_check={
            "type": "http",
            "path": "/healthz",
            "interval": "100ms",
            "timeout": "500ms",
            "unhealthy_threshold": 2,
            "healthy_threshold": 2,
        },
    )
    config = make_config(
        [listener("main", [route("checked", prefix="/")])],
        [checked, cluster("other", [other.address])],
        access_log=False,
    )
    pf = start_pilotfish(config)

    def verdicts():
        for c in pf.admin_json("/clusters")["clusters"]:
            if c["name"] == "checked":
                return {e["address"]: e["healthy"] for e in c["endpoints"]}
        return None

    sick.stop()
    want = {good.address: True, sick.address: False}
    wait_for(lambda: verdicts() == want, 10, "the check to mark sick unhealthy")
    changed = json.loads(json.dumps(config))
    changed["clusters"][1]["connect_timeout"] = "3s"
    changed["clusters"].append(cluster("third", [other.address]))
    reload_by_signal(pf, changed)
    # At once, not after checks ran again: the verdict was kept, not rebuilt.
    assert verdicts() == want
    for _ in range(20):
        assert backend_of(pf.port("main")) == (200, "good")
    # A change of the checked cluster itself (one more endpoint, a new timeout) keeps the
    # verdicts of the endpoints that stay.
    grown = json.loads(json.dumps(changed))
    grown["clusters"][0]["endpoints"].append(other.address)
    grown["clusters"][0]["response_timeout"] = "7s"
    reload_by_signal(pf, grown)
    assert {k: v for k, v in verdicts().items() if k != other.address} == want
    # The removed cluster is gone from /clusters.
    reload_by_signal(pf, changed)
    reload_by_signal(pf, config)
    names = [c["name"] for c in pf.admin_json("/clusters")["clusters"]]
    assert names == ["checked", "other"]


def test_watch_config_follows_a_configmap_style_symlink_swap(start_backend, tmp_path):
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    # A ConfigMap volume: config.json -> ..data/config.json, ..data -> ..v1 (a directory);
    # an update writes ..v2 and renames a new ..data symlink over the old one.
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "..v1").mkdir()
    os.symlink("..v1", mount / "..data")
    os.symlink("..data/config.json", mount / "config.json")
    pf = Pilotfish(a, str(tmp_path), extra_args=["--watch-config"])
    pf.config_path = str(mount / "config.json")  # start() writes ..v1/config.json through it
    try:
        pf.start()
        assert backend_of(pf.port("main")) == (200, "one")
        (mount / "..v2").mkdir()
        (mount / "..v2" / "config.json").write_text(json.dumps(b))
        os.symlink("..v2", mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")
        wait_for(lambda: reloads(pf, "applied") == 1, 10, "the watch to reload")
        assert backend_of(pf.port("main")) == (200, "two")
    finally:
        pf.stop()
    assert not pf.problems()
