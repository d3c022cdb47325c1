"""Config reload on SIGHUP and with --watch-config: validated first, refused whole when
invalid or when it changes what needs a restart, else applied live without refusing a
connection or failing a request."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

from harness import (
    LOCALHOST,
    PILOTFISH_BIN,
    Pilotfish,
    make_request,
    cluster,
    free_port,
    listener,
    make_config,
    metric_sum,
    route,
    wait_for,
)
from statuspage import parse_page


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
    # The status page lists clusters "checked" and "other" only (its reload history still
    # names "third").
    page = parse_page(pf.admin("GET", "/").body.decode())
    assert {d.attrs["data-name"] for d in page.root.iter("details", "cluster")} == {"checked", "other"}


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


def test_requests_in_flight_finish_when_a_reload_removes_their_listener_and_route(
    start_backend, start_pilotfish
):
    # Each request holds back the end of its body until the reload is applied, so it is in
    # flight then however slow the machine is (a fixed upstream delay could end first).
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    pf = start_pilotfish(a)
    body = b"0123456789"
    conns = {name: pf.raw(listener=name) for name in ("main", "extra")}
    try:
        for c in conns.values():
            c.send(make_request("POST", "/echo", [("Content-Length", str(len(body)))])
                   + body[:4])

        def routed(cluster_name):  # no other request has opened one
            return metric_sum(pf.metrics(), "pilotfish_upstream_connections_active",
                              cluster=cluster_name) >= 1

        wait_for(lambda: routed("one") and routed("two"), 10,
                 "both requests to be on their way to their backends")
        reload_by_signal(pf, b)  # main's route moves to "two", listener "extra" goes
        results = {}
        for name, c in conns.items():
            c.send(body[4:])
            resp = c.read_response()
            results[name] = (resp.status, resp.header("X-Backend"), resp.body)
    finally:
        for c in conns.values():
            c.close()
    # Each finished where it started: on its old route, on the listener being removed.
    assert results == {"main": (200, "one", body), "extra": (200, "two", body)}
    assert backend_of(pf.port("main")) == (200, "two")


# ---- the admin API ------------------------------------------------------------------


def api_setup(start_backend, start_pilotfish, tmp_path, token="s3cret-token"):
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    for c in (a, b):
        c["admin"]["api_token_file"] = str(token_file)
    b["admin"] = a["admin"]
    pf = start_pilotfish(a)
    return pf, a, b, token_file


def admin_call(pf, method, path, body=None, token=None, headers=None):
    conn = http.client.HTTPConnection(LOCALHOST, pf.admin_port, timeout=30)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        doc = json.loads(raw) if resp.getheader("Content-Type") == "application/json" else raw
        return resp.status, resp.getheader("ETag"), doc
    finally:
        conn.close()


def test_get_config_has_a_version_in_its_etag_and_put_applies_a_whole_config(
    start_backend, start_pilotfish, tmp_path
):
    pf, a, b, _ = api_setup(start_backend, start_pilotfish, tmp_path)
    status, etag, doc = admin_call(pf, "GET", "/config")
    assert status == 200 and etag == '"1"'
    assert doc["listeners"][0]["routes"][0]["cluster"] == "one"
    status, etag, doc = admin_call(pf, "PUT", "/config", b, token="s3cret-token",
                                   headers={"If-Match": '"1"'})
    assert (status, etag, doc) == (200, '"2"', {"version": 2})
    assert backend_of(pf.port("main")) == (200, "two")
    assert _refused(pf.port("extra"))
    status, etag, doc = admin_call(pf, "GET", "/config")
    assert etag == '"2"' and doc["listeners"][0]["routes"][0]["cluster"] == "two"
    history = admin_call(pf, "GET", "/config/history")[2]
    assert [v["version"] for v in history["versions"]] == [2, 1]
    assert [v["source"] for v in history["versions"]] == ["api", "start"]
    assert 'removed $.listeners[?@.name=="extra"]' in history["versions"][0]["summary"]
    # A reload of the file brings its config back, as a new version.
    reload_by_signal(pf, a)
    status, etag, _ = admin_call(pf, "GET", "/config")
    assert etag == '"3"'
    assert admin_call(pf, "GET", "/config/history")[2]["versions"][0]["source"] == "signal"


def test_put_with_an_if_match_that_lost_the_race_gets_412_and_changes_nothing(
    start_backend, start_pilotfish, tmp_path
):
    pf, a, b, _ = api_setup(start_backend, start_pilotfish, tmp_path)
    # Two writers read version 1; both PUT a change with If-Match "1", at the same time.
    c = json.loads(json.dumps(b))
    c["clusters"][0]["connect_timeout"] = "3s"
    results = []

    def writer(config):
        results.append(admin_call(pf, "PUT", "/config", config, token="s3cret-token",
                                  headers={"If-Match": '"1"'}))

    threads = [threading.Thread(target=writer, args=(config,)) for config in (b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r[0] for r in results) == [200, 412]
    loser = next(r for r in results if r[0] == 412)
    assert loser[2]["version"] == 2 and loser[1] == '"2"'  # the version now
    assert "changed since" in loser[2]["errors"][0]
    current = admin_call(pf, "GET", "/config")[1]
    assert current == '"2"'
    status, _, _ = admin_call(pf, "PUT", "/config", a, token="s3cret-token",
                              headers={"If-Match": '"1"'})
    assert status == 412
    assert admin_call(pf, "GET", "/config")[1] == current
    assert backend_of(pf.port("main")) == (200, "two")


def test_config_writes_need_the_token_and_are_off_without_a_token_file(
    start_backend, start_pilotfish, tmp_path
):
    pf, a, b, token_file = api_setup(start_backend, start_pilotfish, tmp_path)
    status, _, _ = admin_call(pf, "PUT", "/config", b)
    assert status == 401
    status, _, doc = admin_call(pf, "PUT", "/config", b, token="guess")
    assert status == 403 and doc["errors"] == ["wrong token"]
    status, _, _ = admin_call(pf, "POST", "/config/check", b, token="guess")
    assert status == 403
    assert backend_of(pf.port("main")) == (200, "one")
    # The file is read again when it changes: the old token stops working.
    token_file.write_text("rotated\n")
    assert admin_call(pf, "PUT", "/config", b, token="s3cret-token")[0] == 403
    assert admin_call(pf, "PUT", "/config", b, token="rotated")[0] == 200
    # Without admin.api_token_file the writes are off; reads stay.
    one, two = start_backend("one2"), start_backend("two2")
    plain, _ = two_configs(one, two)
    pf2 = start_pilotfish(plain)
    status, _, doc = admin_call(pf2, "PUT", "/config", plain, token="rotated")
    assert status == 403 and "admin.api_token_file" in doc["errors"][0]
    assert admin_call(pf2, "GET", "/config")[0] == 200


def test_bad_bodies_get_400_with_every_error_or_413_and_check_applies_nothing(
    start_backend, start_pilotfish, tmp_path
):
    pf, a, b, _ = api_setup(start_backend, start_pilotfish, tmp_path)
    status, _, doc = admin_call(pf, "PUT", "/config", b'{"listeners": [\n  {"name": }',
                                token="s3cret-token")
    assert status == 400
    assert doc["errors"][0].startswith("body:2:")  # line and column
    assert "JSON syntax error" in doc["errors"][0]
    broken = json.loads(json.dumps(b))
    broken["listeners"][0]["routes"][0]["cluster"] = "missing"
    broken["clusters"][0]["connect_timeout"] = "soon"
    status, _, doc = admin_call(pf, "PUT", "/config", broken, token="s3cret-token")
    assert status == 400 and len(doc["errors"]) == 2
    assert any('$.listeners[0].routes[0].cluster: unknown cluster "missing"' in e
               for e in doc["errors"])
    # The same text --check-config prints for that file.
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    out = subprocess.run([PILOTFISH_BIN, "--check-config", str(path)], capture_output=True,
                         text=True, timeout=30)
    printed = {line.split(": ", 1)[1] for line in out.stderr.splitlines() if ": " in line}
    assert {e.split(": ", 1)[1] for e in doc["errors"]} == printed
    restart = json.loads(json.dumps(b))
    restart["workers"] = 7
    status, _, doc = admin_call(pf, "PUT", "/config", restart, token="s3cret-token")
    assert status == 400 and "restart pilotfish" in doc["errors"][0]
    # Over 4 MiB: refused from the Content-Length, before the body is read.
    with socket.create_connection((LOCALHOST, pf.admin_port), timeout=30) as s:
        s.sendall(b"PUT /config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n"
                  b"Content-Length: %d\r\n\r\n{" % (4 * 1024 * 1024 + 1))
        assert s.recv(64).startswith(b"HTTP/1.1 413 ")
    status, _, doc = admin_call(pf, "POST", "/config/check", b, token="s3cret-token")
    assert status == 200 and doc["valid"] is True
    assert admin_call(pf, "GET", "/config")[1] == '"1"'
    assert backend_of(pf.port("main")) == (200, "one")
    assert reloads(pf, "applied") == 0


def test_idle_keepalive_connections_do_not_hold_old_configs_and_a_long_request_does(
    start_backend, start_pilotfish
):
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    pf = start_pilotfish(a)
    idle = http.client.HTTPConnection(LOCALHOST, pf.port("main"), timeout=30)
    idle.request("GET", "/", headers={"Host": "test.local"})
    assert idle.getresponse().read() is not None
    # 40 reloads while a keep-alive connection sits idle: every one applies.
    for i in range(40):
        reload_by_signal(pf, b if i % 2 == 0 else a)
    idle.request("GET", "/", headers={"Host": "test.local"})
    resp = idle.getresponse()
    resp.read()
    assert resp.getheader("X-Backend") == "one"  # the 40th config: a
    idle.close()
    # A request in progress keeps what it may use; past 32 kept configs a reload is
    # refused (with the reason), and accepted again once that request ends.
    hang = pf.raw(listener="main")
    hang.send(make_request("GET", "/hang"))

    def in_flight():
        for c in pf.admin_json("/clusters")["clusters"]:
            if c["name"] == "one":
                return sum(e["active_requests"] for e in c["endpoints"]) == 1
        return False

    wait_for(in_flight, 10, "the hanging request to be in flight")
    outcomes = []
    for i in range(40):
        outcomes.append(try_reload(pf, b if i % 2 == 0 else a))
        if outcomes[-1] == "rejected":
            break
    assert outcomes[-1] == "rejected" and outcomes.count("applied") >= 32, pf.stderr_text()[-2000:]
    assert "earlier configs may still be used by requests in progress" in pf.stderr_text()
    hang.close()
    deadline_tries = 100
    while try_reload(pf, b if len(outcomes) % 2 == 0 else a) == "rejected":
        deadline_tries -= 1
        assert deadline_tries > 0, "reloads stay refused after the request ended"
        time.sleep(0.05)


def try_reload(pf, config):
    """One SIGHUP reload of config; returns "applied" or "rejected"."""
    applied, rejected = reloads(pf, "applied"), reloads(pf, "rejected")
    write_config(pf, config)
    os.kill(pf.pid, signal.SIGHUP)
    wait_for(lambda: reloads(pf, "applied") + reloads(pf, "rejected") > applied + rejected, 10,
             "the reload")
    return "applied" if reloads(pf, "applied") > applied else "rejected"


def test_cluster_and_routes_endpoints_change_one_part_and_delete_refuses_a_routed_cluster(
    start_backend, start_pilotfish, tmp_path
):
    pf, a, b, _ = api_setup(start_backend, start_pilotfish, tmp_path)
    three = start_backend("three")
    tok = "s3cret-token"
    # A new cluster, then the main listener's routes moved to it.
    status, etag, doc = admin_call(pf, "PUT", "/clusters/three",
                                   {"endpoints": [three.address]}, token=tok)
    assert (status, doc) == (200, {"version": 2})
    status, _, doc = admin_call(pf, "PUT", "/listeners/main/routes",
                                [route("three", prefix="/")], token=tok,
                                headers={"If-Match": '"2"'})
    assert (status, doc) == (200, {"version": 3})
    assert backend_of(pf.port("main")) == (200, "three")
    # "three" is routed: deleting it is refused, with the route that names it.
    status, _, doc = admin_call(pf, "DELETE", "/clusters/three", token=tok)
    assert status == 409
    assert doc["errors"] == [
        '$.listeners[?@.name=="main"].routes[0] names cluster "three"; route it elsewhere '
        "first (PUT /listeners/main/routes)"
    ]
    # "one" is no longer routed anywhere: it can go.
    status, _, doc = admin_call(pf, "DELETE", "/clusters/one", token=tok)
    assert (status, doc) == (200, {"version": 4})
    config = admin_call(pf, "GET", "/config")[2]
    assert [c["name"] for c in config["clusters"]] == ["two", "three"]
    # Not found, a stale If-Match, a body that is not JSON, a name that disagrees.
    assert admin_call(pf, "DELETE", "/clusters/nope", token=tok)[0] == 404
    assert admin_call(pf, "PUT", "/listeners/nope/routes", [], token=tok)[0] == 404
    assert admin_call(pf, "PUT", "/clusters/x", {"endpoints": []}, token=tok,
                      headers={"If-Match": '"2"'})[0] == 412
    status, _, doc = admin_call(pf, "PUT", "/clusters/x", b"{", token=tok)
    assert status == 400 and doc["errors"][0].startswith("body:1:")
    status, _, doc = admin_call(pf, "PUT", "/clusters/x", {"name": "y", "endpoints": []},
                                token=tok)
    assert status == 400 and "path names" in doc["errors"][0]
    assert admin_call(pf, "DELETE", "/clusters/three")[0] == 401
    assert admin_call(pf, "GET", "/config")[1] == '"4"'


def test_write_back_keeps_an_api_change_across_a_restart(start_backend, start_pilotfish,
                                                         tmp_path):
    one, two = start_backend("one"), start_backend("two")
    a, b = two_configs(one, two)
    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    a["admin"]["api_token_file"] = str(token_file)
    a["admin"]["write_back"] = True
    b["admin"] = a["admin"]
    pf = start_pilotfish(a, extra_args=["--watch-config"])
    status, _, _ = admin_call(pf, "PUT", "/config", b, token="tok")
    assert status == 200
    assert backend_of(pf.port("main")) == (200, "two")
    with open(pf.config_path) as f:
        written = json.load(f)
    assert written["listeners"][0]["routes"][0]["cluster"] == "two"
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]
    # Our own write, seen by the watch, changes nothing.
    wait_for(lambda: "config reload: no change source=file" in pf.stderr_text(), 10,
             "the watch to see the write")
    assert admin_call(pf, "GET", "/config")[1] == '"2"'
    # Restarted on the same file, it runs the changed config.
    pf.stop()
    pf.expect_exit = True
    again = Pilotfish(written, str(tmp_path), tag="again")
    again.config_path = pf.config_path
    again.config = written
    try:
        again.start()
        assert backend_of(again.port("main")) == (200, "two")
    finally:
        again.stop()
