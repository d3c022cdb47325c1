"""Route actions against a real backend: rewrites of the path and Host sent upstream,
redirects and direct responses answered by pilotfish, and the config errors of keys that
cannot go together, each with its JSON path."""

import json

from harness import cluster, http_request, listener, make_config, run_pilotfish


def header(view, name):
    vals = [v for k, v in view["headers"] if k.lower() == name.lower()]
    return vals[0] if vals else None


def test_rewrite_prefix_full_path_and_host(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(make_config(
        [listener("main", [
            {"match": {"prefix": "/api/"}, "cluster": "api", "rewrite": {"prefix": "/"},
             "host_rewrite": "internal.example"},
            {"match": {"path": "/old"}, "cluster": "api", "rewrite": {"full_path": "/headers"},
             "host_rewrite": "auto"},
            {"match": {"prefix": "/"}, "cluster": "api"},
        ])],
        [cluster("api", [b.address])]))
    view = http_request(pf.port(), "GET", "/api/headers?a=1&b").json()
    assert view["target"] == "/headers?a=1&b"
    assert header(view, "host") == "internal.example"
    view = http_request(pf.port(), "GET", "/old?keep=1").json()
    assert view["target"] == "/headers?keep=1"
    assert header(view, "host") == b.address  # "auto": the endpoint's address
    view = http_request(pf.port(), "GET", "/headers").json()
    assert view["target"] == "/headers" and header(view, "host").startswith("127.0.0.1")


def test_rewrite_prefix_reaches_the_backend_path(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(make_config(
        [listener("main", [
            {"match": {"prefix": "/svc"}, "cluster": "api", "rewrite": {"prefix": "/"}},
            {"match": {"prefix": "/deep/"}, "cluster": "api", "rewrite": {"prefix": "/status"}},
        ])],
        [cluster("api", [b.address])]))
    assert http_request(pf.port(), "GET", "/svc/headers").json()["target"] == "/headers"
    # "/deep/" -> "/status": the matched "/" was a boundary, so "/deep/418" is "/status/418"
    assert http_request(pf.port(), "GET", "/deep/418").status == 418


def test_redirects_build_the_location_from_the_request(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(make_config(
        [listener("main", [
            {"match": {"prefix": "/secure"}, "redirect": {"scheme": "https"}},
            {"match": {"prefix": "/moved/"},
             "redirect": {"host": "new.example", "port": 8443, "prefix": "/now/", "status": 301}},
            {"match": {"path": "/exact"}, "redirect": {"path": "/elsewhere", "status": 308}},
            {"match": {"prefix": "/"}, "cluster": "api"},
        ])],
        [cluster("api", [b.address])]))
    port = pf.port()
    r = http_request(port, "GET", "/secure/x?y=1", headers={"Host": "shop.example:8080"})
    assert r.status == 302  # the default, as HTTPRoute's RequestRedirect
    assert r.header("Location") == "https://shop.example/secure/x?y=1"  # new scheme: its port
    r = http_request(port, "POST", "/moved/a/b", headers={"Host": "shop.example"}, body=b"x")
    assert r.status == 301
    assert r.header("Location") == "http://new.example:8443/now/a/b"
    r = http_request(port, "GET", "/exact?q=2", headers={"Host": "shop.example:8080"})
    assert r.status == 308 and r.header("Location") == "http://shop.example:8080/elsewhere?q=2"
    assert b.stats()["requests"] == 1  # this query only: nothing went upstream


def test_direct_response_with_its_content_type(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(make_config(
        [listener("main", [
            {"match": {"path": "/robots.txt"},
             "direct_response": {"status": 200, "body": "User-agent: *\nDisallow: /\n"}},
            {"match": {"path": "/gone"},
             "direct_response": {"status": 410, "body": "{\"error\":\"gone\"}",
                                 "content_type": "application/json"}},
            {"match": {"path": "/empty"}, "direct_response": {"status": 204}},
            {"match": {"prefix": "/"}, "cluster": "api"},
        ])],
        [cluster("api", [b.address])]))
    r = http_request(pf.port(), "GET", "/robots.txt")
    assert r.status == 200 and r.body == b"User-agent: *\nDisallow: /\n"
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    r = http_request(pf.port(), "GET", "/gone")
    assert r.status == 410 and r.json() == {"error": "gone"}
    assert r.header_all("Content-Type") == ["application/json"]
    r = http_request(pf.port(), "GET", "/empty")
    assert r.status == 204 and r.body == b""
    assert b.stats()["requests"] == 1  # this query only


def check_errors(tmp_path, routes, clusters=None):
    cfg = make_config([listener("main", routes)], clusters or [cluster("api", ["127.0.0.1:1"])])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = run_pilotfish(["--check-config", str(path)])
    assert r.returncode == 1, r.stderr
    return r.stderr.decode()


def test_illegal_combinations_are_config_errors(tmp_path):
    err = check_errors(tmp_path, [
        {"match": {}, "cluster": "api", "redirect": {}},
        {"match": {}, "direct_response": {"status": 200}, "redirect": {"status": 301}},
        {"match": {}, "redirect": {}, "rewrite": {"prefix": "/"}, "request_headers": {}},
        {"match": {"path": "/a"}, "cluster": "api", "rewrite": {"prefix": "/b"}},
        {"match": {}, "cluster": "api", "rewrite": {"prefix": "/a", "full_path": "/b"}},
        {"match": {}, "cluster": "api", "rewrite": {"full_path": "b?c"}},
        {"match": {}, "redirect": {"status": 304, "scheme": "ftp", "path": "/a", "prefix": "/b"}},
        {"match": {"path": "/x"}, "redirect": {"prefix": "/y"}},
        {"match": {}, "direct_response": {"body": "x"}},
        {"match": {}, "cluster": "api", "host_rewrite": "bad host"},
        {"match": {}},
    ])
    r = "$.listeners[0].routes"
    for line in [
        f'{r}[0]: "cluster" and "redirect" exclude each other; use one',
        f'{r}[1]: "redirect" and "direct_response" exclude each other; use one',
        f'{r}[2].rewrite: a route with "redirect" sends nothing upstream; remove one of the two',
        f'{r}[2].request_headers: a route with "redirect" sends nothing upstream',
        f'{r}[3].rewrite.prefix: needs a prefix match (match.prefix); with match.path use "full_path"',
        f'{r}[4].rewrite: expected one of "prefix" and "full_path", found both',
        f'{r}[5].rewrite.full_path: expected a path starting with "/"',
        f'{r}[6].redirect.status: 304 is no redirect status; use 301, 302, 303, 307 or 308',
        f'{r}[6].redirect.scheme: expected "http" or "https"',
        f'{r}[6].redirect: "path" and "prefix" exclude each other; use one',
        f'{r}[7].redirect.prefix: needs a prefix match (match.prefix); with match.path use "path"',
        f'{r}[8].direct_response: missing required key "status"',
        f'{r}[9].host_rewrite: expected "auto" or a host name, with an optional :port',
        f'{r}[10]: missing required key "cluster"',
    ]:
        assert line in err, f"{line!r} not in:\n{err}"
