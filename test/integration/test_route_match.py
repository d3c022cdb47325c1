"""Routes that match on method, headers and query parameters, against real backends; an evil
regex against a long header does not hold a worker; bad conditions are config errors with
their JSON paths."""

import json
import time

from harness import cluster, http_request, listener, make_config, run_pilotfish


def backend_of(resp):
    return resp.header("X-Backend")


def match_config(a, b, c):
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]},
         "cluster": "canary"},
        {"match": {"prefix": "/", "method": "POST",
                   "query_params": [{"name": "debug", "present": True, "invert": True}]},
         "cluster": "writes"},
        {"match": {"prefix": "/", "headers": [{"name": "x-evil", "regex": "(a+)+$"}]},
         "cluster": "writes"},
        {"match": {"prefix": "/"}, "cluster": "main"},
    ]
    return make_config(
        [listener("main", routes)],
        [cluster("canary", [a.address]), cluster("writes", [b.address]),
         cluster("main", [c.address])],
    )


def test_method_header_and_query_conditions_pick_the_cluster(start_backend, start_pilotfish):
    a, b, c = start_backend("a"), start_backend("b"), start_backend("c")
    pf = start_pilotfish(match_config(a, b, c))
    port = pf.port()
    cases = [
        ("GET", "/x", {"X-Canary": "1"}, "a"),
        ("GET", "/x", {"X-Canary": "2"}, "c"),
        ("POST", "/x", {}, "b"),
        ("POST", "/x?debug=1", {}, "c"),
        ("POST", "/x?a=1&debug", {}, "c"),
        ("GET", "/x?debug", {}, "c"),
        ("POST", "/x", {"x-canary": "1"}, "a"),  # first match wins
    ]
    for method, path, headers, want in cases:
        resp = http_request(port, method, path, headers=headers, body=b"" if method == "POST" else None)
        assert resp.status == 200, (method, path, headers, resp)
        assert backend_of(resp) == want, (method, path, headers)


def test_an_evil_regex_against_a_long_header_answers_at_once(start_backend, start_pilotfish):
    a, b, c = start_backend("a"), start_backend("b"), start_backend("c")
    pf = start_pilotfish(match_config(a, b, c), workers=1)
    port = pf.port()
    evil = "a" * 60000 + "!"  # (a+)+$ would backtrack for longer than anyone waits
    start = time.monotonic()
    resp = http_request(port, "GET", "/x", headers={"x-evil": evil, "x-pad": "b" * 10})
    evil_seconds = time.monotonic() - start
    assert resp.status == 200 and backend_of(resp) == "c"  # the condition did not hold
    # a value the regex matches still routes by it, and the worker serves on
    assert backend_of(http_request(port, "GET", "/x", headers={"x-evil": "aaaa"})) == "b"
    # Loose bound (a loaded machine must not fail it); unbounded backtracking never ends.
    assert evil_seconds < 10


def test_bad_match_conditions_are_config_errors_with_their_paths(tmp_path):
    base = {
        "listeners": [{"name": "l", "address": "127.0.0.1:15001", "routes": [
            {"match": {"headers": [{"name": "x-a", "regex": "(unclosed"}],
                       "query_params": [{"name": "q", "exact": "1", "prefix": "1"}],
                       "method": "get"},
             "cluster": "c"}]}],
        "clusters": [{"name": "c", "endpoints": ["127.0.0.1:1"]}],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(base))
    r = run_pilotfish(["--check-config", str(path)])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "$.listeners[0].routes[0].match.headers[0].regex: bad regex at offset 9" in err
    assert ("$.listeners[0].routes[0].match.query_params[0]: exactly one of exact, prefix, "
            "suffix, present, regex is required (found 2)") in err
    assert "$.listeners[0].routes[0].match.method: expected an upper-case method name" in err
