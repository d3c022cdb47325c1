"""Access log: one JSON line per request on stdout, or nothing when it is turned off."""

import http.client
import signal

from harness import LOCALHOST, metric_sum, standard_config, wait_for

KEYS = {
    "time",
    "method",
    "authority",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "cluster",
    "upstream",
    "request_id",
}


def wait_lines(pf, n):
    return wait_for(lambda: len(pf.access_log()) >= n and pf.access_log(), 10, f"{n} access log lines")


def test_one_json_line_per_request_with_all_keys(proxy):
    pf = proxy.pf
    pf.get("/bytes/1000", host="web.local")
    pf.request("POST", "/sink", {"Host": "api.local"}, body=b"x" * 500)
    pf.get("/v1/thing", host="api.local")
    lines = wait_lines(pf, 3)
    assert len(lines) == 3, lines
    for line in lines:
        assert KEYS <= set(line), f"missing {KEYS - set(line)} in {line}"
        assert isinstance(line["status"], int)
        assert line["request_id"]
    get_bytes, post_sink, get_api = lines
    assert (get_bytes["method"], get_bytes["path"], get_bytes["status"]) == ("GET", "/bytes/1000", 200)
    assert get_bytes["cluster"] == "web"
    assert get_bytes["upstream"] in (proxy.web1.address, proxy.web2.address)
    assert get_bytes["authority"] == "web.local"
    assert get_bytes["bytes_out"] >= 1000
    assert (post_sink["method"], post_sink["path"]) == ("POST", "/sink")
    assert post_sink["bytes_in"] >= 500
    assert post_sink["cluster"] == "web"
    assert (get_api["cluster"], get_api["upstream"]) == ("api", proxy.api.address)
    assert get_api["authority"] == "api.local"
    assert get_api["duration_ms"] >= 0


def test_access_log_request_id_matches_client_supplied_id(proxy):
    proxy.pf.get("/", headers={"X-Request-Id": "log-me-123"})
    (line,) = wait_lines(proxy.pf, 1)
    assert line["request_id"] == "log-me-123"


def test_access_log_records_proxy_generated_errors(proxy):
    proxy.pf.get("/", host="nobody.local", listener="strict")
    (line,) = wait_lines(proxy.pf, 1)
    assert line["status"] == 404


def test_access_log_off_writes_nothing_to_stdout(backends, start_pilotfish):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["access_log"] = False
    pf = start_pilotfish(cfg)
    for _ in range(5):
        assert pf.get("/").status == 200
    # Stop first: at exit every buffered line would have been written.
    pf.signal(signal.SIGTERM)
    assert pf.wait_exit(15) is not None
    assert pf.stdout_text() == ""


def keep_alive_requests(pf, n, connections=4):
    """n GETs over a few keep-alive connections; each must be answered 200 within 10 s."""
    conns = [http.client.HTTPConnection(LOCALHOST, pf.port(), timeout=10) for _ in range(connections)]
    try:
        for i in range(n):
            c = conns[i % connections]
            c.request("GET", f"/?n={i}", headers={"Host": "web.local"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, f"request {i}: {r.status}"
    finally:
        for c in conns:
            c.close()


def test_stdout_that_nobody_reads_never_holds_up_requests(backends, start_pilotfish):
    # A full pipe used to stop every worker in write() after a few hundred requests.
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    pf = start_pilotfish(cfg, workers=2, stdout_pipe=True)
    keep_alive_requests(pf, 2000)
    m = pf.metrics()
    # The pipe (64 KiB) and both workers' buffers (64 KiB each) hold ~600 lines of 2000.
    assert metric_sum(m, "pilotfish_access_log_dropped_total") >= 500
    assert metric_sum(m, "pilotfish_downstream_requests_total", code_class="2xx") == 2000
    assert pf.admin("GET", "/healthz").status == 200


def test_stderr_that_nobody_reads_never_holds_up_requests(backends, start_pilotfish):
    # At debug level every bad request logs a line from its worker.
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    pf = start_pilotfish(cfg, workers=2, extra_args=["--log-level", "debug"], stderr_pipe=True)
    for i in range(1500):
        with pf.raw(timeout=10) as c:
            c.send(b"NOT A REQUEST\r\n\r\n")
            assert c.read_response().status == 400, f"request {i}"
    assert metric_sum(pf.metrics(), "pilotfish_log_dropped_total") >= 500
    assert pf.admin("GET", "/healthz").status == 200


def test_unparseable_request_logs_no_method_and_local_replies_log_their_body_bytes(proxy):
    pf = proxy.pf
    with pf.raw() as c:
        c.send(b"NOT A REQUEST\r\n\r\n")
        bad = c.read_response()
    assert bad.status == 400
    with pf.raw() as c:
        c.send(b"GET /x HTTP/1.1\r\nHost: t\r\nBad Header: y\r\n\r\n")
        bad_header = c.read_response()
    assert bad_header.status == 400
    missing = pf.get("/", host="nobody.local", listener="strict")
    assert missing.status == 404
    unparseable, get_bad_header, no_route = wait_lines(pf, 3)
    assert unparseable["method"] == "-" and unparseable["status"] == 400, unparseable
    assert get_bad_header["method"] == "GET" and get_bad_header["status"] == 400, get_bad_header
    assert no_route["method"] == "GET"
    for line, resp in ((unparseable, bad), (get_bad_header, bad_header), (no_route, missing)):
        assert resp.body and line["bytes_out"] == len(resp.body), (line, resp)
