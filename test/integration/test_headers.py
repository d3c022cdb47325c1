"""Header handling between client and upstream: hop-by-hop removal, X-Forwarded-*, X-Request-Id."""

import re

import pytest
from harness import make_request, standard_config, wait_for


def upstream_view(pf, headers, host="abs.local", method="GET", body=None):
    """Send headers exactly as given (raw) to the api backend's /headers and return its view."""
    with pf.raw() as c:
        c.send(make_request(method, "/headers", headers, body, host=host))
        resp = c.read_response(method=method)
    assert resp.status == 200, resp
    assert resp.header("X-Backend") == "api"
    return resp.json()


def values(view, name):
    return [v for k, v in view["headers"] if k.lower() == name.lower()]


def test_standard_hop_by_hop_headers_are_not_forwarded(proxy):
    sent = [
        ("Keep-Alive", "timeout=5, max=77"),
        ("Proxy-Connection", "keep-alive-proxyconn"),
        ("TE", "trailers, deflate"),
        ("Trailer", "X-Trailer-Field"),
        ("Upgrade", "h2c-test"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("X-End-To-End", "kept"),
    ]
    view = upstream_view(proxy.pf, sent)
    assert values(view, "X-End-To-End") == ["kept"]
    for name, value in sent[:-1]:
        assert value not in values(view, name), f"{name}: {value} reached upstream: {view}"
    assert values(view, "Proxy-Authorization") == []
    assert values(view, "Proxy-Connection") == []
    assert values(view, "Trailer") == []
    assert values(view, "Upgrade") == []


def test_headers_named_in_connection_are_not_forwarded(proxy):
    sent = [
        ("Connection", "keep-alive, X-Secret-Hop, X-Other-Hop"),
        ("X-Secret-Hop", "secret"),
        ("X-Other-Hop", "other"),
        ("X-Normal", "normal"),
    ]
    view = upstream_view(proxy.pf, sent)
    assert values(view, "X-Secret-Hop") == []
    assert values(view, "X-Other-Hop") == []
    assert values(view, "X-Normal") == ["normal"]
    for v in values(view, "Connection"):
        assert "x-secret-hop" not in v.lower() and "x-other-hop" not in v.lower(), view


def test_end_to_end_headers_keep_value_and_order(proxy):
    sent = [("X-A", "1"), ("X-Multi", "first"), ("X-B", "2"), ("X-Multi", "second")]
    view = upstream_view(proxy.pf, sent)
    assert values(view, "X-Multi") == ["first", "second"]
    assert values(view, "X-A") == ["1"] and values(view, "X-B") == ["2"]


def test_x_forwarded_for_is_set_to_client_ip(proxy):
    view = upstream_view(proxy.pf, [])
    assert values(view, "X-Forwarded-For") == ["127.0.0.1"]


def test_x_forwarded_for_is_appended_to_existing_value(proxy):
    view = upstream_view(proxy.pf, [("X-Forwarded-For", "203.0.113.7")])
    xff = ", ".join(values(view, "X-Forwarded-For"))
    assert [p.strip() for p in xff.split(",")] == ["203.0.113.7", "127.0.0.1"]


def test_x_forwarded_proto_is_http(proxy):
    view = upstream_view(proxy.pf, [])
    assert values(view, "X-Forwarded-Proto") == ["http"]


def test_x_request_id_generated_when_absent_and_unique(proxy):
    ids = []
    for _ in range(5):
        got = values(upstream_view(proxy.pf, []), "X-Request-Id")
        assert len(got) == 1 and got[0].strip(), got
        # RFC 9562 version 4 layout: 8-4-4-4-12 lower-case hex, version 4, variant 10
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            got[0]), got
        ids.append(got[0])
    assert len(set(ids)) == len(ids), ids


def test_x_request_id_kept_when_present(proxy):
    view = upstream_view(proxy.pf, [("X-Request-Id", "client-chose-this-42")])
    assert values(view, "X-Request-Id") == ["client-chose-this-42"]


def test_request_body_headers_reach_upstream(proxy):
    view = upstream_view(proxy.pf, [("Content-Type", "text/plain")], method="POST", body=b"hello")
    assert view["method"] == "POST"
    assert values(view, "Content-Length") == ["5"]
    assert values(view, "Content-Type") == ["text/plain"]


def test_upstream_response_headers_reach_client(proxy):
    resp = proxy.pf.get("/status/201")
    assert resp.status == 201
    assert resp.header("X-Backend") in ("web1", "web2")


def test_upstream_connection_close_does_not_close_client_connection(proxy):
    # Connection is hop-by-hop in responses too: the backend closing its side is not the
    # client's business, and the client's connection stays usable.
    with proxy.pf.raw() as c:
        c.send(make_request("GET", "/close"))
        first = c.read_response()
        assert first.status == 200
        assert not first.has_token("Connection", "close"), first
        c.send(make_request("GET", "/bytes/10"))
        second = c.read_response()
        assert second.status == 200 and second.body == b"0123456789"


def test_large_header_value_reaches_upstream_intact(proxy):
    value = "".join(chr(ord("a") + i % 26) for i in range(30000))
    view = upstream_view(proxy.pf, [("X-Large", value), ("X-After", "after")])
    assert values(view, "X-Large") == [value]
    assert values(view, "X-After") == ["after"]


def test_many_headers_reach_upstream_in_order(proxy):
    sent = [(f"X-H{i:03d}", f"v{i}") for i in range(100)]
    view = upstream_view(proxy.pf, sent)
    got = [(k, v) for k, v in view["headers"] if k.startswith("X-H")]
    assert got == sent


VALID_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACEPARENT_RE = r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]"


def logged_trace_id(pf, path="/headers"):
    entries = []
    wait_for(lambda: entries.extend(e for e in pf.access_log() if e["path"] == path) or entries,
             10, "the request's access log line")
    return entries[-1]["trace_id"]


def test_valid_traceparent_and_tracestate_go_upstream_untouched(proxy):
    view = upstream_view(
        proxy.pf, [("traceparent", VALID_TRACEPARENT), ("tracestate", "vendor=abc,other=1")]
    )
    assert values(view, "traceparent") == [VALID_TRACEPARENT]
    assert values(view, "tracestate") == ["vendor=abc,other=1"]
    assert logged_trace_id(proxy.pf) == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_traceparent_generated_when_absent_unsampled_and_unique(proxy):
    made = set()
    for _ in range(3):
        got = values(upstream_view(proxy.pf, []), "traceparent")
        assert len(got) == 1 and re.fullmatch(TRACEPARENT_RE, got[0]), got
        assert got[0].endswith("-00")  # tracing.sampled is off by default
        made.add(got[0][3:35])
    assert len(made) == 3
    assert logged_trace_id(proxy.pf) in made


@pytest.mark.parametrize(
    "bad",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        "garbage",
    ],
)
def test_malformed_traceparent_is_replaced_and_its_tracestate_dropped(proxy, bad):
    view = upstream_view(proxy.pf, [("traceparent", bad), ("tracestate", "vendor=abc")])
    got = values(view, "traceparent")
    assert len(got) == 1 and got[0] != bad and re.fullmatch(TRACEPARENT_RE, got[0]), got
    assert values(view, "tracestate") == []


def test_tracing_generate_off_leaves_requests_without_traceparent(backends, start_pilotfish):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["tracing"] = {"generate": False}
    pf = start_pilotfish(cfg)
    assert values(upstream_view(pf, []), "traceparent") == []
    # a valid one still passes, and is logged
    assert values(upstream_view(pf, [("traceparent", VALID_TRACEPARENT)]), "traceparent") == [
        VALID_TRACEPARENT
    ]


def test_tracing_sampled_marks_generated_traceparents(backends, start_pilotfish):
    cfg = standard_config(backends.web1, backends.web2, backends.api)
    cfg["tracing"] = {"sampled": True}
    pf = start_pilotfish(cfg)
    got = values(upstream_view(pf, []), "traceparent")
    assert len(got) == 1 and got[0].endswith("-01"), got
