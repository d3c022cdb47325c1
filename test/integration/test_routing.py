"""Routing: which cluster a request reaches, by Host, path and absolute-form authority."""

import pytest

from harness import make_request


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
        assert resp.status in (400, 405), resp
        # Whatever follows is not relayed to the outsider.
        try:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
    assert outsider.stats()["connections"] == 1
    assert proxy.pf.get("/").status == 200
