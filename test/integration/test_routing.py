"""Routing: which cluster a request reaches, by Host, path and absolute-form authority, and
the request target it goes upstream with (origin-form, "/?q" for an empty path, "*")."""

import types

import pytest

from harness import cluster, listener, make_config, make_request, route, wait_for
from servers import ThreadedServer


def backend_of(resp):
    assert resp.status == 200, resp
    return resp.header("X-Backend")


WEB = ("web1", "web2")


def test_exact_host_and_prefix_route_to_api(proxy):
    assert backend_of(proxy.pf.get("/v1/items", host="api.local")) == "api"


def test_exact_host_with_other_path_falls_through_to_catch_all(proxy):
    assert backend_of(proxy.pf.get("/v2/items", host="api.local")) in WEB


def test_prefix_does_not_match_shorter_path(proxy):
    # "/v1" is not under the prefix "/v1/".
    assert backend_of(proxy.pf.get("/v1", host="api.local")) in WEB


def test_host_match_ignores_port_in_host_header(proxy):
    # What curl sends for http://api.local:PORT/v1/x: the route host has no port.
    host = f"api.local:{proxy.pf.port()}"
    assert backend_of(proxy.pf.get("/v1/x", host=host)) == "api"


def test_host_match_is_case_insensitive(proxy):
    assert backend_of(proxy.pf.get("/v1/x", host="API.Local")) == "api"


@pytest.mark.parametrize("host", ["a.wild.test", "deep.er.wild.test", "x.wild.test:8080"])
def test_wildcard_host_matches_subdomains(proxy, host):
    assert backend_of(proxy.pf.get("/anything", host=host)) == "api"


@pytest.mark.parametrize("host", ["wild.test", "notwild.test", "a.wild.test.evil"])
def test_wildcard_host_does_not_match_bare_or_foreign_domain(proxy, host):
    assert backend_of(proxy.pf.get("/anything", host=host)) in WEB


def test_host_with_port_matches_only_that_port(proxy):
    assert backend_of(proxy.pf.get("/p", host="port.local:8080")) == "api"
    assert backend_of(proxy.pf.get("/p", host="port.local:9090")) in WEB


def test_exact_path_matches_only_that_path(proxy):
    assert backend_of(proxy.pf.get("/exact")) == "api"
    assert backend_of(proxy.pf.get("/exact?q=1")) == "api"  # the query is not part of the path
    assert backend_of(proxy.pf.get("/exact/")) in WEB
    assert backend_of(proxy.pf.get("/exactly")) in WEB


def test_first_matching_route_wins_over_longer_prefix(proxy):
    # /order/ (api) is listed before /order/specific (web).
    assert backend_of(proxy.pf.get("/order/specific/1")) == "api"


def test_host_header_is_preserved_to_upstream(proxy):
    resp = proxy.pf.get("/headers", host="abs.local")
    assert backend_of(resp) == "api"
    seen = resp.json()
    hosts = [v for k, v in seen["headers"] if k.lower() == "host"]
    assert hosts == ["abs.local"]
    assert seen["target"] == "/headers"
    assert seen["method"] == "GET"


def test_query_string_is_passed_to_upstream_unchanged(proxy):
    resp = proxy.pf.get("/headers?a=1&b=%2F&c", host="abs.local")
    assert resp.json()["target"] == "/headers?a=1&b=%2F&c"


def test_absolute_form_routes_by_authority_and_upstream_gets_origin_form(proxy):
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "http://abs.local/headers?x=1", host="abs.local"))
        resp = c.read_response()
    assert backend_of(resp) == "api"
    seen = resp.json()
    assert seen["target"] == "/headers?x=1"
    assert [v for k, v in seen["headers"] if k.lower() == "host"] == ["abs.local"]


def test_absolute_form_authority_overrides_host_header(proxy):
    # RFC 9112 3.2.2: with absolute-form the Host header is ignored in favour of the authority.
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "http://abs.local/headers", host="somewhere.else"))
        resp = c.read_response()
    assert backend_of(resp) == "api"
    assert [v for k, v in resp.json()["headers"] if k.lower() == "host"] == ["abs.local"]


def test_absolute_form_with_prefix_route(proxy):
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "http://api.local/v1/x", host="api.local"))
        resp = c.read_response()
    assert backend_of(resp) == "api"


def test_no_matching_route_returns_404_with_short_text_body(proxy):
    resp = proxy.pf.get("/", host="nobody.local", listener="strict")
    assert resp.status == 404
    assert 0 < len(resp.body) < 1024
    ctype = resp.header("Content-Type", "text/plain")
    assert ctype.startswith("text/plain")
    assert resp.header("X-Backend") is None


def test_strict_listener_routes_its_host(proxy):
    assert backend_of(proxy.pf.get("/", host="only.local", listener="strict")) == "api"


def test_absolute_form_to_unrouted_authority_is_404_not_proxied(proxy, start_backend):
    outsider = start_backend("outsider")
    with proxy.pf.raw(listener="strict") as c:
        c.send(make_request("GET", f"http://{outsider.address}/", host=outsider.address))
        resp = c.read_response()
    assert resp.status == 404
    assert resp.header("X-Backend") is None
    # The stats query itself is the only connection the outsider ever saw.
    assert outsider.stats()["connections"] == 1


def test_absolute_form_never_reaches_the_named_authority(proxy, start_backend):
    # On the listener with a catch-all, the authority selects a route, never a destination.
    outsider = start_backend("outsider")
    with proxy.pf.raw() as c:
        c.send(make_request("GET", f"http://{outsider.address}/", host=outsider.address))
        resp = c.read_response()
    assert resp.header("X-Backend") != "outsider"
    assert outsider.stats()["connections"] == 1


def test_connect_method_is_refused_and_not_tunnelled(proxy, start_backend):
    outsider = start_backend("outsider")
    with proxy.pf.raw() as c:
        c.send(make_request("CONNECT", outsider.address, host=outsider.address))
        resp = c.read_response()
        assert resp.status in (400, 403, 405), resp
        # Whatever follows is not relayed to the outsider.
        try:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
    assert outsider.stats()["connections"] == 1
    assert proxy.pf.get("/").status == 200


class CapturingUpstream(ThreadedServer):
    """An upstream on 127.0.0.1 that records each request head and answers 200 "ok"."""

    def __init__(self):
        self.heads = []
        super().__init__()

    def serve(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        piece = conn.recv(65536)
                        if not piece:
                            raise EOFError
                        data += piece
                    head, data = data.split(b"\r\n\r\n", 1)
                    with self.lock:
                        self.heads.append(head.decode("latin-1"))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (OSError, EOFError):
                pass


@pytest.fixture
def capture(start_pilotfish):
    upstream = CapturingUpstream()
    cfg = make_config(
        [listener("main", [route("c", host="abs.local", prefix="/")])],
        [cluster("c", [upstream.address])],
    )
    yield types.SimpleNamespace(pf=start_pilotfish(cfg), upstream=upstream)
    upstream.close()


def test_absolute_form_with_an_empty_path_goes_upstream_as_slash_and_query(capture):
    # RFC 9112 3.2.2 / 3.2.1: "http://h?q" has an empty path; origin-form needs the "/".
    with capture.pf.raw() as c:
        c.send(b"GET http://abs.local?x=1 HTTP/1.1\r\nHost: abs.local\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"ok", resp
    request_line, *headers = capture.upstream.heads[-1].split("\r\n")
    assert request_line == "GET /?x=1 HTTP/1.1"
    assert "Host: abs.local" in headers


def test_options_with_an_empty_absolute_path_goes_upstream_as_asterisk(capture):
    # RFC 9112 3.2.4: "OPTIONS http://h" asks about the server h as a whole.
    with capture.pf.raw() as c:
        c.send(b"OPTIONS http://abs.local HTTP/1.1\r\nHost: abs.local\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"ok", resp
    assert capture.upstream.heads[-1].split("\r\n")[0] == "OPTIONS * HTTP/1.1"


def test_options_asterisk_is_routed_like_the_root_and_forwarded_as_is(capture):
    with capture.pf.raw() as c:
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: abs.local\r\n\r\n")
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"ok", resp
    assert capture.upstream.heads[-1].split("\r\n")[0] == "OPTIONS * HTTP/1.1"
    entry = wait_for(lambda: [e for e in capture.pf.access_log() if e["method"] == "OPTIONS"],
                     10, "the OPTIONS log line")[-1]
    assert (entry["path"], entry["status"]) == ("*", 200), entry


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET * HTTP/1.1\r\nHost: abs.local\r\n\r\n",  # asterisk-form is for OPTIONS only
        b"GET http://abs.local#top HTTP/1.1\r\nHost: abs.local\r\n\r\n",  # never a fragment
        b"GET http://abs.local/p?q#top HTTP/1.1\r\nHost: abs.local\r\n\r\n",
        b"GET /p#top HTTP/1.1\r\nHost: abs.local\r\n\r\n",
    ],
    ids=["asterisk_with_get", "absolute_form_fragment", "absolute_form_path_fragment",
         "origin_form_fragment"],
)
def test_targets_that_cannot_be_forwarded_get_400(capture, request_bytes):
    with capture.pf.raw() as c:
        c.send(request_bytes)
        resp = c.read_response()
    assert resp.status == 400, resp
    assert capture.upstream.heads == []
