"""A route's response_headers also edit the answers pilotfish makes itself for that route
(redirects, direct responses, fault aborts, 429s of its rate limit, errors of its cluster),
for HTTP/1.1 and HTTP/2 clients alike; framing stays pilotfish's."""

import socket
import subprocess

import pytest

from harness import LOCALHOST, cluster, listener, make_config


def edits(set=None, remove=None):
    e = {"set": {"x-env": "prod", **(set or {})}, "add": {"x-req": "%REQUEST_ID%"}}
    if remove:
        e["remove"] = remove
    return e


def answer(port, path, h2):
    """curl's view of one answer: (status, {lower-case name: [values]}, body)."""
    args = ["curl", "-sS", "--max-time", "20", "-D", "-", "-o", "-"]
    if h2:
        args.append("--http2-prior-knowledge")
    out = subprocess.run(args + [f"http://{LOCALHOST}:{port}{path}"], capture_output=True,
                         check=True, timeout=30).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return status, fields, body


@pytest.fixture
def refusing():
    """An address that refuses connections: bound, never listening."""
    s = socket.socket()
    s.bind((LOCALHOST, 0))
    yield f"{LOCALHOST}:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def pf(start_backend, start_pilotfish, refusing):
    b = start_backend("api")
    return start_pilotfish(make_config(
        [listener("main", [
            {"match": {"path": "/redir"}, "redirect": {"path": "/new", "status": 301},
             "response_headers": edits(remove=["x-request-id"])},
            {"match": {"path": "/moved"}, "redirect": {"path": "/new"},
             "response_headers": {"set": {"location": "/overridden"}}},
            {"match": {"path": "/direct"},
             "direct_response": {"status": 200, "body": "{}", "content_type": "text/html"},
             "response_headers": edits(set={"content-type": "application/json"})},
            {"match": {"path": "/fault"}, "cluster": "api",
             "fault": {"abort": {"status": 503}},
             "response_headers": edits(remove=["x-pilotfish-fault"])},
            {"match": {"path": "/limited"}, "cluster": "api",
             "rate_limit": {"requests_per_second": 1, "burst": 1},
             "response_headers": edits(set={"retry-after": "120"})},
            {"match": {"path": "/weighted"}, "clusters": [
                {"name": "down", "weight": 1,
                 "response_headers": {"set": {"x-env": "canary"}}}],
             "response_headers": edits()},
        ])],
        [cluster("api", [b.address]), cluster("down", [refusing])]))


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2"])
def test_redirects_and_direct_responses_carry_the_route_edits(pf, h2):
    status, f, body = answer(pf.port(), "/redir", h2)
    assert status == 301 and f["location"][0].endswith(f":{pf.port()}/new")
    assert f["x-env"] == ["prod"] and len(f["x-req"][0]) > 8
    assert "x-request-id" not in f  # removed by the route
    status, f, _ = answer(pf.port(), "/moved", h2)
    assert status == 302 and f["location"] == ["/overridden"]  # set replaces pilotfish's line
    assert len(f["x-request-id"]) == 1
    status, f, body = answer(pf.port(), "/direct", h2)
    assert status == 200 and body == "{}"
    assert f["content-type"] == ["application/json"] and f["x-env"] == ["prod"]
    assert f["content-length"] == ["2"]  # framing stays pilotfish's
    # the request id the route names is the one pilotfish gave the request
    assert f["x-req"] == f["x-request-id"]


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2"])
def test_fault_aborts_and_rate_limit_answers_carry_the_route_edits(pf, h2):
    status, f, body = answer(pf.port(), "/fault", h2)
    assert status == 503 and body == "fault injected\n"
    assert f["x-env"] == ["prod"] and "x-pilotfish-fault" not in f
    statuses = []
    for _ in range(5):  # 1 per second, burst 1: at most two get through in this time
        status, f, _ = answer(pf.port(), "/limited", h2)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429, statuses
    assert f["retry-after"] == ["120"] and f["x-env"] == ["prod"]
    # an error of the route's cluster too; a weighted cluster's edits come after the
    # route's and win for the names they set
    status, f, _ = answer(pf.port(), "/weighted", h2)
    assert status == 503 and f["x-env"] == ["canary"] and "x-req" in f
