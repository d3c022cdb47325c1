"""Upstream TLS beyond the basics: pooled connections and sessions are per endpoint *and*
name, so a DNS or Kubernetes cluster without tls.sni (which verifies each request's host)
never hands a connection verified for one host to another host's request."""

import http.client
import socket

from harness import LOCALHOST, metric_sum, wait_for
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
