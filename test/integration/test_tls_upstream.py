"""Upstream TLS beyond the basics: pooled connections and sessions are per endpoint *and*
name, so a DNS or Kubernetes cluster without tls.sni (which verifies each request's host)
never hands a connection verified for one host to another host's request."""

import copy
import http.client
import socket

from harness import LOCALHOST, cluster, listener, make_config, metric_sum, route, wait_for
from test_dns import DOMAIN, dns_config, dnsmasq  # noqa: F401
from test_tls import TIMEOUT, pki, tls_backends  # noqa: F401


def get(pf, host, path="/x"):
    with socket.create_connection((LOCALHOST, pf.port("main")), timeout=TIMEOUT) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


def test_a_connection_verified_for_one_host_is_not_reused_for_another(
        start_pilotfish, dnsmasq, tls_backends, pki):  # noqa: F811
    cert = pki._leaf("only-a", pki.ca, "ec", "DNS:a.test")
    b = tls_backends(cert)
    dns = dnsmasq(hosts=[("127.0.0.1", f"svc.{DOMAIN}")])
    secure = {"name": "secure", "connect_timeout": "2s",
              "dns": {"name": f"svc.{DOMAIN}", "port": b.port, "min_refresh": "200ms",
                      "max_refresh": "2s"},
              "tls": {"ca_file": pki.ca[0]}}
    pf = start_pilotfish(dns_config(dns, [secure]))
    wait_for(lambda: get(pf, "a.test")[0] == 200, 10, "a.test through the DNS cluster")
    # an idle connection to the endpoint, verified for a.test, is in the pool now; b.test
    # must get its own connection, whose certificate does not name it
    status, body = get(pf, "b.test")
    assert status == 503, body
    assert get(pf, "a.test")[0] == 200
    assert len(b.connections) == 1, b.connections  # a.test's connection, reused
    assert metric_sum(pf.metrics(), "pilotfish_upstream_pool_reuses_total", cluster="secure") >= 1


def endpoint_state(pf, cluster="secure"):
    for c in pf.admin_json("/clusters")["clusters"]:
        if c["name"] == cluster:
            return c["endpoints"][0]
    raise AssertionError(f"no cluster {cluster}")


def checked_pf(start_pilotfish, backend, pki, **hc):
    check = {"type": "http", "path": "/healthz", "interval": "200ms", "timeout": "2s",
             "unhealthy_threshold": 1, "healthy_threshold": 1, "initial": "unhealthy"}
    check.update(hc)
    cfg = make_config([listener("main", [route("secure")])],
                      [cluster("secure", [backend.address], connect_timeout="2s",
                               tls={"ca_file": pki.ca[0], "sni": "backend.test"},
                               health_check=check)])
    return start_pilotfish(cfg)


def checks(pf, result):
    return metric_sum(pf.metrics(), "pilotfish_health_checks_total", cluster="secure",
                      result=result)


def test_health_checks_of_a_tls_cluster_speak_tls_and_verify_the_endpoint(
        start_pilotfish, tls_backends, pki):  # noqa: F811
    good = tls_backends(pki._leaf("hc-good", pki.ca, "ec", "DNS:backend.test"))
    pf = checked_pf(start_pilotfish, good, pki)
    wait_for(lambda: endpoint_state(pf)["health"] == "healthy", 10, "the TLS check to pass")
    assert endpoint_state(pf)["health_check"]["last_result"] == "HTTP 200"
    assert len(good.connections) >= 1  # the backend only accepts TLS
    assert get(pf, "backend.test")[0] == 200

    # a certificate for another name: the check fails with the reason, as a request would
    wrong = tls_backends(pki._leaf("hc-wrong", pki.ca, "ec", "DNS:other.test"))
    pf2 = checked_pf(start_pilotfish, wrong, pki)
    wait_for(lambda: checks(pf2, "failure") >= 1, 10, "a failed check")
    state = endpoint_state(pf2)
    assert state["health"] != "healthy", state
    assert state["health_check"]["last_result"].startswith("TLS handshake failed:"), state


def test_health_check_tls_false_checks_in_plaintext(start_pilotfish, start_backend, pki):  # noqa: F811
    # the endpoints speak TLS to requests but answer checks on plaintext: here a plaintext
    # backend shows the check went out without TLS
    plain = start_backend("plain")
    check = {"type": "http", "path": "/healthz", "interval": "200ms", "tls": False,
             "unhealthy_threshold": 1, "healthy_threshold": 1, "initial": "unhealthy"}
    cfg = make_config([listener("main", [route("secure")])],
                      [cluster("secure", [plain.address], tls={"ca_file": pki.ca[0]},
                               health_check=check)])
    pf = start_pilotfish(cfg)
    wait_for(lambda: endpoint_state(pf)["health"] == "healthy", 10, "the plaintext check to pass")
    assert checks(pf, "success") >= 1


def test_a_tls_cluster_replaced_by_a_reload_still_speaks_tls(start_pilotfish, tls_backends, pki):  # noqa: F811
    from test_reload import reload_by_signal
    b = tls_backends(pki._leaf("reload-backend", pki.ca, "ec", "DNS:backend.test"))

    pf = start_pilotfish(make_config(
        [listener("main", [route("secure")])],
        [cluster("secure", [b.address], lb_policy="round_robin",
                 tls={"ca_file": pki.ca[0], "sni": "backend.test"})]))
    assert get(pf, "backend.test")[0] == 200
    # a new lb_policy replaces the cluster (fresh state); TLS must come with it
    changed = copy.deepcopy(pf.config)
    changed["clusters"][0]["lb_policy"] = "least_request"
    reload_by_signal(pf, changed)
    status, body = get(pf, "backend.test", "/close")
    assert status == 200, body
    assert len(b.connections) >= 2  # a new connection, over TLS (the backend speaks nothing else)
