"""Access log: one JSON line per request on stdout, or nothing when it is turned off; the
text format, chosen fields, a file reopened on SIGUSR1, sampling, and sinks that stall."""

import http.client
import os
import re
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
    # a quote or a backslash is escaped once, by the JSON writer: the id reads back as sent
    proxy.pf.get("/", headers={"X-Request-Id": 'id "quoted" \\ slash'})
    line = wait_lines(proxy.pf, 2)[-1]
    assert line["request_id"] == 'id "quoted" \\ slash', line


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


# ---- access_log as an object: format, fields, a file reopened on SIGUSR1, sampling ----

TEXT_TOKEN = re.compile(r'"[^"]*"|\S+')


def file_lines(path):
    try:
        with open(path, "rb") as f:
            return [l for l in f.read().decode("utf-8", "replace").splitlines() if l]
    except FileNotFoundError:
        return []


def wait_file_lines(path, pred, what):
    return wait_for(lambda: (lambda ls: ls if pred(ls) else None)(file_lines(path)), 10, what)


def test_text_lines_go_to_a_file_that_sigusr1_reopens_after_rotation(backends, start_pilotfish, tmp_path):
    log = tmp_path / "access.log"
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["access_log"] = {
        "format": "text",
        "fields": ["time", "client", "method", "authority", "path", "status", "bytes_out",
                   "duration_ms", "cluster", "upstream", "request_id", "trace_id"],
        "path": str(log),
    }
    pf = start_pilotfish(cfg, workers=2)
    assert pf.get("/bytes/100", host="web.local", headers={"X-Request-Id": "id with spaces\\"}).status == 200
    (first,) = wait_file_lines(log, lambda ls: len(ls) >= 1, "the first line in the file")
    tokens = TEXT_TOKEN.findall(first)
    assert len(tokens) == 12, first
    when, client, method, authority, path, status, out, dur, cl, up, rid, trace = tokens
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when), first
    assert (client, method, authority, path, status, cl) == (
        LOCALHOST, "GET", '"web.local"', '"/bytes/100"', "200", "web"), first
    assert int(out) >= 100 and re.fullmatch(r"\d+\.\d{3}ms", dur), first
    assert up in (backends.web1.address, backends.web2.address)
    # spaces stay inside the quotes; a backslash or a quote is written \xNN, so no value can
    # end its field early
    assert rid == r'"id with spaces\x5c"', first
    assert re.fullmatch(r"[0-9a-f]{32}", trace), first

    rotated = tmp_path / "access.log.1"
    os.rename(log, rotated)
    assert pf.get("/before-reopen").status == 200  # still the renamed file: it is open
    wait_file_lines(rotated, lambda ls: any('"/before-reopen"' in l for l in ls), "a line in the renamed file")
    pf.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: f"access log reopened path={log}" in pf.stderr_text(), 10, "the reopen log line")
    for i in range(20):
        assert pf.get(f"/after-reopen/{i}").status == 200
    new = wait_file_lines(log, lambda ls: len(ls) >= 20, "20 lines in the new file")
    assert all("/after-reopen/" in l for l in new), new
    assert not any("/after-reopen/" in l for l in file_lines(rotated))
    assert pf.alive() and pf.stdout_text() == ""


def test_json_lines_hold_the_chosen_fields_in_order(backends, start_pilotfish):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["access_log"] = {"fields": ["status", "path", "cluster", "trace_id"]}
    pf = start_pilotfish(cfg)
    pf.get("/v1/x", host="api.local")
    (line,) = wait_lines(pf, 1)
    assert list(line) == ["status", "path", "cluster", "trace_id"], line
    assert (line["status"], line["path"], line["cluster"]) == (200, "/v1/x", "api")


def test_sample_keeps_that_share_of_requests(backends, start_pilotfish):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["access_log"] = {"sample": 0.5, "fields": ["path"]}
    pf = start_pilotfish(cfg, workers=2)
    keep_alive_requests(pf, 400)
    none = standard_config(backends.web1, backends.web2, backends.api)
    none["access_log"] = {"sample": 0}
    pf0 = start_pilotfish(none)
    keep_alive_requests(pf0, 100)
    for p in (pf, pf0):
        p.signal(signal.SIGTERM)
        assert p.wait_exit(15) is not None
    # binomial(400, 0.5): mean 200, standard deviation 10; 120-280 is eight of them
    assert 120 <= len(pf.access_log()) <= 280, len(pf.access_log())
    assert pf0.stdout_text() == ""


def test_a_fifo_sink_nobody_reads_drops_and_counts_lines(backends, start_pilotfish, tmp_path):
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read: a stalled collector
    try:
        cfg = standard_config(backends.web1, backends.web2, backends.api)
        cfg["access_log"] = {"path": str(fifo)}
        pf = start_pilotfish(cfg, workers=2)
        keep_alive_requests(pf, 2000)
        m = pf.metrics()
        assert metric_sum(m, "pilotfish_access_log_dropped_total") >= 500
        assert metric_sum(m, "pilotfish_downstream_requests_total", code_class="2xx") == 2000
    finally:
        os.close(reader)


def test_an_access_log_file_that_cannot_be_opened_stops_the_start(backends, start_pilotfish, tmp_path):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    missing = tmp_path / "no-such-dir" / "access.log"
    cfg["access_log"] = {"path": str(missing)}
    pf = start_pilotfish(cfg, wait_ready=False)
    assert pf.wait_exit(15) == 1
    assert f'access_log.path: cannot open "{missing}": No such file or directory' in pf.stderr_text()
