"""Per-route header edits: request_headers and response_headers set, add and remove headers
with values that name the client, request id, cluster and endpoint; hop-by-hop and framing
headers are refused at load with their JSON paths."""

import json
import subprocess

from harness import LOCALHOST, cluster, http_request, listener, make_config, run_pilotfish


def values(view, name):
    return [v for k, v in view["headers"] if k.lower() == name.lower()]


def edits_config(backend):
    return make_config(
        [listener("main", [{
            "match": {"prefix": "/"},
            "cluster": "api",
            "request_headers": {
                "set": {"X-Env": "prod", "X-Who": "%CLIENT_IP% via %CLUSTER%"},
                "add": {"X-Trace": "%REQUEST_ID%@%UPSTREAM% 100%%"},
                "remove": ["X-Secret"],
            },
            "response_headers": {
                "set": {"X-Served-By": "%UPSTREAM%"},
                "add": {"X-Extra": "1"},
                "remove": ["X-Backend"],
            },
        }])],
        [cluster("api", [backend.address])],
    )


def test_request_and_response_headers_are_edited_per_route(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(edits_config(b))
    resp = http_request(pf.port(), "GET", "/headers", headers={
        "X-Env": "dev", "x-env": "staging", "X-Secret": "s", "X-Trace": "client",
        "X-Request-Id": "rid-1"})
    assert resp.status == 200
    view = resp.json()
    assert values(view, "x-env") == ["prod"]  # set replaces every line
    assert values(view, "x-who") == ["127.0.0.1 via api"]
    assert values(view, "x-trace") == ["client", f"rid-1@{b.address} 100%"]  # add keeps
    assert values(view, "x-secret") == []
    assert resp.header("X-Backend") is None  # removed from the response
    assert resp.header("X-Served-By") == b.address
    assert resp.header("X-Extra") == "1"


def test_hop_by_hop_and_framing_headers_cannot_be_edited(tmp_path):
    cfg = make_config(
        [listener("main", [{
            "match": {},
            "cluster": "api",
            "request_headers": {"set": {"Transfer-Encoding": "chunked"}, "remove": ["x-forwarded-for"]},
            "response_headers": {"add": {"Connection": "close", "X-Ok": "%NOPE%"}},
        }])],
        [cluster("api", ["127.0.0.1:1"])],
    )
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    r = run_pilotfish(["--check-config", str(path)])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    route = "$.listeners[0].routes[0]"
    assert (f'{route}.request_headers.set.Transfer-Encoding: "transfer-encoding" is a hop-by-hop, '
            "framing or Host header, which pilotfish writes itself") in err
    assert (f'{route}.request_headers.remove[0]: "x-forwarded-for" is written by pilotfish on '
            "every forwarded request") in err
    assert f'{route}.response_headers.add.Connection: "connection" is a hop-by-hop' in err
    assert f'{route}.response_headers.add.X-Ok: unknown variable at "%NOPE%"' in err


def test_an_http2_client_gets_the_same_edits(start_backend, start_pilotfish):
    b = start_backend("api")
    pf = start_pilotfish(edits_config(b))
    r = subprocess.run(["curl", "-sS", "-i", "--http2-prior-knowledge", "--max-time", "10",
                        "-H", "X-Env: dev", "-H", "X-Secret: s",
                        f"http://{LOCALHOST}:{pf.port()}/headers"],
                       capture_output=True, timeout=20, text=True)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = [line.strip() for line in head.lower().split("\n")]
    assert lines[0].startswith("http/2 200"), head
    assert f"x-served-by: {b.address}" in lines and "x-extra: 1" in lines, head
    assert not any(line.startswith("x-backend:") for line in lines), head
    view = json.loads(body)
    assert values(view, "x-env") == ["prod"] and values(view, "x-secret") == [], view
