"""Fault injection against a real backend: aborts answered by pilotfish at their share,
delays that hold a request (and its body) before it goes upstream, both asked per request
with headers when header_control is on, counted in the metrics; config errors with their
JSON paths."""

import hashlib
import json
import time

from harness import cluster, http_request, listener, make_config, metric_sum, run_pilotfish


def fault_config(backend, fault, **route):
    r = {"match": {"prefix": "/"}, "cluster": "api", "fault": fault}
    r.update(route)
    return make_config([listener("main", [r])], [cluster("api", [backend.address])],
                       access_log=False)


def faults(pf, kind):
    return metric_sum(pf.metrics(), "pilotfish_faults_injected_total", listener="main", kind=kind)


def test_abort_answers_its_share_without_going_upstream(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(make_config([listener("main", [
        {"match": {"prefix": "/always"}, "cluster": "api",
         "fault": {"abort": {"status": 500}}},  # percent 100 by default
        {"match": {"prefix": "/"}, "cluster": "api",
         "fault": {"abort": {"status": 503, "percent": 50}}},
    ])], [cluster("api", [b.address])], access_log=False))
    conn = pf.raw()
    statuses = [conn.request("GET", "/headers").status for _ in range(400)]
    conn.close()
    aborted = statuses.count(503)
    assert aborted + statuses.count(200) == 400
    # binomial(400, 0.5): the standard deviation is 10; 60 is six of them
    assert 140 <= aborted <= 260, aborted
    assert faults(pf, "abort") == aborted
    assert b.stats()["requests"] == 400 - aborted + 1  # + this query

    r = http_request(pf.port(), "GET", "/always")
    assert r.status == 500 and r.body == b"fault injected\n"
    assert r.header("x-pilotfish-fault") == "abort"
    assert b.stats()["requests"] == 400 - aborted + 2  # nothing more went upstream


def test_delay_holds_the_request_and_its_body(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(fault_config(b, {"delay": {"duration": "300ms"}}))
    start = time.monotonic()
    assert http_request(pf.port(), "GET", "/headers").status == 200
    assert time.monotonic() - start >= 0.25  # timers run on the loop's cached clock
    # a POST body larger than the retry buffer (64 KiB) arrives whole after the delay
    body = bytes(range(256)) * 1024  # 256 KiB
    start = time.monotonic()
    r = http_request(pf.port(), "POST", "/echo", body=body)
    assert time.monotonic() - start >= 0.25  # timers run on the loop's cached clock
    assert r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest()
    assert faults(pf, "delay") == 2


def test_header_control_asks_for_faults_per_request(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(fault_config(
        b, {"delay": {"duration": "5s", "percent": 0}, "header_control": True}))
    assert http_request(pf.port(), "GET", "/").status == 200  # percent 0: no delay
    assert faults(pf, "delay") == 0
    r = http_request(pf.port(), "GET", "/", headers={"x-pilotfish-fault-abort": "418"})
    assert r.status == 418
    for value in ["200", "200ms"]:
        start = time.monotonic()
        r = http_request(pf.port(), "GET", "/", headers={"x-pilotfish-fault-delay": value})
        assert r.status == 200 and time.monotonic() - start >= 0.15
    assert faults(pf, "delay") == 2 and faults(pf, "abort") == 1
    # without header_control the headers are ordinary headers
    b2 = start_backend("api2")
    pf2 = start_pilotfish(fault_config(b2, {"delay": {"duration": "1ms", "percent": 0}}))
    r = http_request(pf2.port(), "GET", "/headers", headers={"x-pilotfish-fault-abort": "418"})
    assert r.status == 200
    assert faults(pf2, "abort") == 0


def test_fault_config_errors(tmp_path):
    cfg = make_config([listener("main", [
        {"match": {}, "cluster": "api", "fault": {}},
        {"match": {}, "redirect": {}, "fault": {"abort": {"status": 500}}},
        {"match": {}, "cluster": "api", "fault": {"delay": {"percent": 5}}},
        {"match": {}, "cluster": "api", "fault": {"abort": {"status": 600, "percent": 101}}},
        {"match": {}, "cluster": "api", "fault": {"delay": {"duration": "0s"}}},
    ])], [cluster("api", ["127.0.0.1:1"])])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = run_pilotfish(["--check-config", str(path)])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    p = "$.listeners[0].routes"
    for line in [
        f'{p}[0].fault: injects nothing; give "delay", "abort" or "header_control": true',
        f'{p}[1].fault: a route with "redirect" sends nothing upstream; remove one of the two',
        f'{p}[2].fault.delay: missing required key "duration"',
        f"{p}[3].fault.abort.status: 600 out of range (200-599)",
        f"{p}[3].fault.abort.percent: 101 out of range (0-100)",
        f"{p}[4].fault.delay.duration:",
    ]:
        assert line in err, f"{line!r} not in:\n{err}"
