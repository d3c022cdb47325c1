"""testssl.sh against a TLS listener: no finding of severity HIGH or CRITICAL. The suite
runs a short scan (protocols, cipher categories, and the heartbleed, renegotiation and
CRIME checks, about 25 s); `make testssl` runs testssl's whole default scan (about 90 s)
through this same test with PILOTFISH_TESTSSL=full.

The certificate is what a real deployment would have (the scan judges it too): ECDSA
P-256 from a CA testssl is told to trust, 90 days valid, a CRL distribution point, and the
name the scan asks for."""

import json
import os
import shutil
import subprocess

import pytest

from harness import LOCALHOST, cluster, listener, make_config, route
from test_tls import OPENSSL, Pki, run

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
SHORT = ["-p", "-s", "-H", "-R", "-C"]


def server_cert(pki):
    key, csr, crt, ext = (pki.path(f"scan.{x}") for x in ("key", "csr", "crt", "ext"))
    r = run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-subj", "/CN=scan.test", "-out", csr])
    assert r.returncode == 0, r.stderr
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:scan.test\nextendedKeyUsage=serverAuth\n"
                "crlDistributionPoints=URI:http://crl.scan.test/ca.crl\n")
    r = run([OPENSSL, "x509", "-req", "-in", csr, "-CA", pki.ca[0], "-CAkey", pki.ca[1],
             "-CAcreateserial", "-days", "90", "-extfile", ext, "-out", crt])
    assert r.returncode == 0, r.stderr
    return crt, key


@pytest.mark.skipif(not TESTSSL, reason="testssl.sh is not installed (make deps installs it)")
def test_testssl_finds_nothing_high_or_critical(start_backend, start_pilotfish, tmp_path):
    pki = Pki(str(tmp_path))
    crt, key = server_cert(pki)
    api = start_backend("api")
    tls = {"certificates": [{"cert_file": crt, "key_file": key}]}
    pf = start_pilotfish(make_config([listener("secure", [route("api")], tls=tls)],
                                     [cluster("api", [api.address])]))
    out = str(tmp_path / "testssl.json")
    checks = [] if os.environ.get("PILOTFISH_TESTSSL") == "full" else SHORT
    # --ip: the name resolves nowhere; --nodns none: no DNS lookups to wait for
    r = subprocess.run([TESTSSL, "--quiet", "--color", "0", "--nodns", "none", "--warnings",
                        "batch", "--add-ca", pki.ca[0], "--ip", LOCALHOST, *checks,
                        "--jsonfile-pretty", out, f"https://scan.test:{pf.port('secure')}"],
                       capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    with open(out) as f:
        scan = json.load(f)["scanResult"][0]
    findings = [f for v in scan.values() if isinstance(v, list) for f in v
                if isinstance(f, dict) and "severity" in f]
    assert len(findings) >= 10, r.stdout[-2000:] + r.stderr[-2000:]  # it did scan
    bad = [(f["severity"], f["id"], f.get("finding")) for f in findings
           if f["severity"] in ("HIGH", "CRITICAL")]
    assert bad == [], bad
    ids = {f["id"] for f in findings}
    assert {"TLS1_2", "TLS1_3", "SSLv3", "TLS1"} <= ids, sorted(ids)
    print(f"testssl: {len(findings)} findings, none HIGH or CRITICAL")
