"""Standalone mode: pilotfish --listen ADDR --upstream dns:|srv:|static: [--resolver] [--admin]
without a config file, its messages for bad flags, --print-config, and the systemd unit that
runs it on a host."""

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

from harness import (
    BUILD,
    LOCALHOST,
    PILOTFISH_BIN,
    REPO,
    AddressedBackend,
    Dnsmasq,
    StandalonePilotfish,
    free_port,
    run_pilotfish,
    shared_port,
    started_by_test,
)

DOMAIN = "test.internal"
UNIT = os.path.join(REPO, "manifests", "pilotfish.service")


@pytest.fixture
def standalone(tmp_path):
    """standalone(upstream, extra_args=()) -> a running StandalonePilotfish; stopped by PID."""
    tags = itertools.count()

    def make(upstream, extra_args=()):
        listen, admin = f"{LOCALHOST}:{free_port()}", f"{LOCALHOST}:{free_port()}"
        args = ["--listen", listen, "--upstream", upstream, "--admin", admin] + list(extra_args)
        return StandalonePilotfish(args, listen, admin, str(tmp_path), tag=f"sa{next(tags)}")

    yield from started_by_test(make)


@pytest.fixture
def dns_server(tmp_path):
    """dns_server(hosts, srv) -> a running Dnsmasq; stopped by PID at teardown."""
    tags = itertools.count()

    def make(hosts=(), srv=()):
        d = Dnsmasq(str(tmp_path), domain=DOMAIN, ttl=1, tag=f"dns{next(tags)}")
        d.hosts, d.srv = list(hosts), list(srv)
        return d

    yield from started_by_test(make)


@pytest.fixture
def start_at(tmp_path):
    """start_at(name, "127.0.0.2:PORT") -> a running AddressedBackend; stopped at teardown."""
    yield from started_by_test(lambda name, listen: AddressedBackend(name, str(tmp_path), listen))


def hits(pf, n):
    seen = {}
    for _ in range(n):
        r = pf.get("/some/path")
        assert r.status == 200, r
        name = r.body.decode().strip()
        seen[name] = seen.get(name, 0) + 1
    return seen


def test_static_upstream_balances_over_every_address(start_backend, standalone):
    b1, b2 = start_backend("one"), start_backend("two")
    pf = standalone(f"static:{b1.address},{b2.address}")
    assert hits(pf, 4) == {"one": 2, "two": 2}
    (cluster,) = pf.admin_json("/clusters")["clusters"]
    assert cluster["name"] == "upstream" and cluster["source"] == "static"


def test_dns_upstream_follows_the_a_records_of_the_name(start_at, dns_server, standalone):
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    start_at("b2", f"127.0.0.2:{port}")
    start_at("b3", f"127.0.0.3:{port}")
    d = dns_server(hosts=[("127.0.0.2", f"web.{DOMAIN}"), ("127.0.0.3", f"web.{DOMAIN}")])
    pf = standalone(f"dns:web.{DOMAIN}:{port}", ["--resolver", f"{LOCALHOST}:{d.port}"])
    assert hits(pf, 4) == {"b2": 2, "b3": 2}
    (cluster,) = pf.admin_json("/clusters")["clusters"]
    assert cluster["source"] == "dns"
    assert cluster["dns"]["name"] == f"web.{DOMAIN}" and cluster["dns"]["port"] == port


def test_srv_upstream_takes_ports_from_the_records(start_backend, dns_server, standalone):
    b1, b2 = start_backend("one"), start_backend("two")
    name = f"_http._tcp.web.{DOMAIN}"
    d = dns_server(
        hosts=[(LOCALHOST, f"t.{DOMAIN}")],
        srv=[(name, f"t.{DOMAIN}", b1.port, 0, 1), (name, f"t.{DOMAIN}", b2.port, 0, 1)],
    )
    # a comma list and a repeated flag both work; the dead first server is skipped
    dead = f"{LOCALHOST}:{free_port()}"
    pf = standalone(f"srv:{name}", ["--resolver", f"{dead},{LOCALHOST}:{d.port}"])
    assert hits(pf, 4) == {"one": 2, "two": 2}


def test_print_config_shows_what_the_flags_make():
    r = run_pilotfish(
        [
            "--listen", "127.0.0.1:15001",
            "--upstream", "dns:Backend.Internal:8080",
            "--resolver", "127.0.0.1:5353,[::1]:53",
            "--resolver", "10.0.0.2:53",
            "--print-config",
        ]
    )
    assert r.returncode == 0, r.stderr.decode()
    cfg = json.loads(r.stdout)
    assert cfg["admin"]["address"] == "127.0.0.1:9901"
    (lst,) = cfg["listeners"]
    assert lst["address"] == "127.0.0.1:15001"
    assert lst["routes"][0]["match"]["prefix"] == "/" and lst["routes"][0]["cluster"] == "upstream"
    (cluster,) = cfg["clusters"]
    assert cluster["dns"]["name"] == "backend.internal" and cluster["dns"]["port"] == 8080
    assert cluster["dns"]["record"] == "A" and "endpoints" not in cluster
    assert cfg["dns"]["resolvers"] == ["127.0.0.1:5353", "[::1]:53", "10.0.0.2:53"]


L = "127.0.0.1:15001"


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--listen", L], 2, "standalone mode needs --listen ADDR and --upstream UPSTREAM"),
        (["--upstream", "static:127.0.0.1:1"], 2, "standalone mode needs --listen"),
        (["--listen", L, "--upstream", "http://backend"], 2,
         "expected dns:NAME:PORT, srv:NAME or static:IP:PORT[,IP:PORT...]"),
        (["--listen", L, "--upstream", "dns:backend.internal"], 2,
         "dns: takes a name and a port 1-65535"),
        (["--listen", L, "--upstream", "dns:backend.internal:99999"], 2, "a port 1-65535"),
        (["--listen", L, "--upstream", "static:backend:80"], 1,
         "command line: $.clusters[0].endpoints[0]: \"backend:80\" is not an IP address"),
        (["--listen", L, "--upstream", "static:127.0.0.1:1,"], 1,
         "command line: $.clusters[0].endpoints[1]: address is empty"),
        (["--listen", L, "--upstream", "dns:10.0.0.1:80"], 1,
         "$.clusters[0].dns.name: \"10.0.0.1\" is an IP address, not a name"),
        (["--listen", "localhost:80", "--upstream", "static:127.0.0.1:1"], 1,
         "command line: $.listeners[0].address: \"localhost:80\" is not an IP address"),
        (["--listen", L, "--upstream", "dns:a.internal:80", "--resolver", "ns1:53"], 1,
         "command line: $.dns.resolvers[0]: \"ns1:53\" is not an IP address"),
        (["--listen", L, "--upstream", "static:127.0.0.1:1", "--admin", L], 1,
         "is also the admin address"),
        (["--config", "/nonexistent.json", "--listen", L, "--upstream", "static:127.0.0.1:1"], 2,
         "exclude each other"),
    ],
)
def test_bad_flags_say_what_is_wrong(args, code, message):
    r = run_pilotfish(args)
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert message in err, err


def test_help_shows_standalone_mode():
    r = run_pilotfish(["--help"])
    out = r.stdout.decode()
    assert r.returncode == 0
    for flag in ("--listen", "--upstream", "dns:NAME:PORT", "srv:NAME", "static:", "--resolver",
                 "--admin", "--print-config"):
        assert flag in out, out


# ---- the systemd unit ----------------------------------------------------------------


def unit_lines():
    with open(UNIT) as f:
        return [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]


def test_systemd_unit_is_hardened_and_its_command_line_is_valid():
    lines = unit_lines()
    for key in (
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "KillSignal=SIGTERM",
    ):
        assert key in lines, key
    # ExecStart with the unit's default environment, as systemd would expand it
    env = {}
    for l in lines:
        m = re.match(r"Environment=(\w+)=(.*)$", l)
        if m:
            env[m.group(1)] = m.group(2)
    (exec_start,) = [l[len("ExecStart="):] for l in lines if l.startswith("ExecStart=")]
    argv = []
    for word in shlex.split(exec_start):
        if word.startswith("${"):
            argv.append(env[word[2:-1]])  # ${VAR}: one argument
        elif word.startswith("$"):
            argv += env[word[1:]].split()  # $VAR: split on spaces, may vanish
        else:
            argv.append(word)
    assert argv[0] == "/usr/local/bin/pilotfish"
    r = subprocess.run([PILOTFISH_BIN] + argv[1:] + ["--print-config"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    cfg = json.loads(r.stdout)
    assert cfg["listeners"][0]["address"] == env["PILOTFISH_LISTEN"]
    assert cfg["admin"]["address"] == env["PILOTFISH_ADMIN"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    with open(UNIT) as f:
        text = f.read().replace("/usr/local/bin/pilotfish", os.path.join(BUILD, "pilotfish"))
    path = tmp_path / "pilotfish.service"
    path.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    assert "Unknown key" not in out and "ignoring" not in out.lower(), out
