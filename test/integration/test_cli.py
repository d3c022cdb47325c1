"""The command line: --check-config, --version, --help, and refusing to start on bad input
or on a listener address that another socket (another pilotfish included) holds."""

import json
import signal
import socket

import pytest

from harness import (
    LOCALHOST,
    cluster,
    listener,
    make_config,
    route,
    run_pilotfish,
)


def valid_config():
    return make_config(
        [listener("main", [route("c", prefix="/")])],
        [cluster("c", ["127.0.0.1:8081", {"address": "127.0.0.1:8082", "weight": 2}])],
    )


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_check_config_accepts_valid_file(tmp_path):
    path = write(tmp_path, "ok.json", valid_config())
    r = run_pilotfish(["--check-config", path])
    assert r.returncode == 0, r.stderr.decode()


def test_check_config_rejects_port_out_of_range_naming_json_path(tmp_path):
    cfg = valid_config()
    cfg["clusters"][0]["endpoints"][0] = "127.0.0.1:70000"
    path = write(tmp_path, "bad-port.json", cfg)
    r = run_pilotfish(["--check-config", path])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "$.clusters[0].endpoints[0]" in err
    assert "70000" in err
    assert "bad-port.json" in err


def test_check_config_rejects_route_to_unknown_cluster(tmp_path):
    cfg = valid_config()
    cfg["listeners"][0]["routes"][0]["cluster"] = "nope"
    path = write(tmp_path, "bad-route.json", cfg)
    r = run_pilotfish(["--check-config", path])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "$.listeners[0].routes[0]" in err
    assert "nope" in err


def test_check_config_rejects_bad_duration(tmp_path):
    cfg = valid_config()
    cfg["drain_timeout"] = "ten seconds"
    path = write(tmp_path, "bad-duration.json", cfg)
    r = run_pilotfish(["--check-config", path])
    assert r.returncode == 1
    assert "$.drain_timeout" in r.stderr.decode()


def test_check_config_rejects_malformed_json(tmp_path):
    path = write(tmp_path, "broken.json", '{"listeners": [')
    r = run_pilotfish(["--check-config", path])
    assert r.returncode == 1
    assert "broken.json" in r.stderr.decode()


def test_check_config_missing_file_exits_1(tmp_path):
    path = str(tmp_path / "does-not-exist.json")
    r = run_pilotfish(["--check-config", path])
    assert r.returncode == 1
    assert "does-not-exist.json" in r.stderr.decode()


def test_version_prints_version_and_exits_0():
    r = run_pilotfish(["--version"])
    assert r.returncode == 0
    assert "pilotfish" in r.stdout.decode().lower()


def test_help_describes_flags_and_exits_0():
    r = run_pilotfish(["--help"])
    assert r.returncode == 0
    out = r.stdout.decode()
    for flag in ("--config", "--check-config", "--workers"):
        assert flag in out, out


def test_unknown_flag_is_an_error():
    r = run_pilotfish(["--no-such-flag"])
    assert r.returncode != 0
    assert r.stderr.strip()


def test_start_with_invalid_config_exits_nonzero(tmp_path):
    cfg = valid_config()
    cfg["clusters"][0]["endpoints"][0] = "127.0.0.1:70000"
    path = write(tmp_path, "bad.json", cfg)
    r = run_pilotfish(["--config", path])
    assert r.returncode != 0
    assert "$.clusters[0].endpoints[0]" in r.stderr.decode()


ANOTHER_PILOTFISH = "another pilotfish is starting or listening there"


def assert_refused_address_in_use(pf, address, cause="Address already in use"):
    """pf exits non-zero with a message naming listener main, its address and the cause."""
    code = pf.wait_exit(15)
    assert code is not None, f"pilotfish started on {address}, which another socket holds"
    assert code != 0
    err = pf.stderr_text()
    assert f"listener main: cannot listen on {address}: {cause}" in err, err


def time_wait_sockets(port):
    """TCP sockets in TIME_WAIT whose local port is port (IPv4, from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return [r for r in rows if int(r[1].rsplit(":", 1)[1], 16) == port and r[3] == "06"]


def test_start_fails_when_listener_port_is_taken(tmp_path, start_pilotfish):
    with socket.socket() as taken:  # a plain socket: no SO_REUSEADDR, no SO_REUSEPORT
        taken.bind((LOCALHOST, 0))
        taken.listen(1)
        address = f"{LOCALHOST}:{taken.getsockname()[1]}"
        cfg = valid_config()
        cfg["listeners"][0]["address"] = address
        assert_refused_address_in_use(start_pilotfish(cfg, wait_ready=False), address)


@pytest.mark.parametrize("workers", [1, 2])
def test_second_pilotfish_on_same_listener_address_refuses_to_start(
    start_backend, start_pilotfish, workers
):
    # Listeners use SO_REUSEPORT, which would let a second process of the same user join the
    # port and take part of the traffic; it must fail like any other "address in use".
    first_backend, second_backend = start_backend("first"), start_backend("second")
    first_cfg = make_config(
        [listener("main", [route("c", prefix="/")])], [cluster("c", [first_backend.address])]
    )
    first = start_pilotfish(first_cfg, workers=workers)
    address = first_cfg["listeners"][0]["address"]
    second_cfg = make_config(  # its own admin address: only the listener collides
        [listener("main", [route("c", prefix="/")], address=address)],
        [cluster("c", [second_backend.address])],
    )
    second = start_pilotfish(second_cfg, workers=workers, wait_ready=False)
    assert_refused_address_in_use(second, address, ANOTHER_PILOTFISH)
    for i in range(40):  # fresh connections: a shared port would spread them over both
        resp = first.get(f"/n{i}")
        assert resp.status == 200 and resp.header("X-Backend") == "first", (i, resp)
    assert second_backend.stats()["requests"] == 1  # only the stats query itself


def test_listeners_of_one_config_may_overlap(start_backend, start_pilotfish):
    # The probe must not take pilotfish's own listeners for another process: 127.0.0.1:P
    # and its IPv4-mapped twin [::ffff:127.0.0.1]:P share the port through SO_REUSEPORT.
    backend = start_backend("b")
    plain = listener("plain", [route("c", prefix="/")])
    port = plain["address"].rsplit(":", 1)[1]
    mapped = listener("mapped", [route("c", prefix="/")], address=f"[::ffff:127.0.0.1]:{port}")
    pf = start_pilotfish(make_config([plain, mapped], [cluster("c", [backend.address])]))
    resp = pf.get("/")
    assert resp.status == 200 and resp.header("X-Backend") == "b", resp


def test_a_pilotfish_still_starting_on_the_address_is_refused_too(start_pilotfish):
    # Two processes started together could both find the port free before either listens;
    # the one that claimed the address first (its abstract socket, held here) wins.
    cfg = valid_config()
    address = cfg["listeners"][0]["address"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as claim:
        claim.bind(f"\0pilotfish/listen/{address}")
        assert_refused_address_in_use(
            start_pilotfish(cfg, wait_ready=False), address, ANOTHER_PILOTFISH
        )
    # the claim gone, the same config starts
    pf = start_pilotfish(cfg)
    assert pf.alive()


def test_restart_on_same_addresses_right_after_stop_with_keepalive_traffic(
    start_backend, start_pilotfish
):
    backend = start_backend("b")
    cfg = make_config(
        [listener("main", [route("c", prefix="/")])], [cluster("c", [backend.address])]
    )
    old = start_pilotfish(cfg)
    with old.raw() as conn:
        for i in range(5):
            assert conn.request("GET", f"/k{i}").status == 200
        old.signal(signal.SIGTERM)  # the drain closes the idle keep-alive connection first
        assert conn.wait_closed(), "the drain did not close the idle connection"
    assert old.wait_exit(15) == 0
    # pilotfish closed first, so its side of that connection waits in TIME_WAIT on the
    # listener's port: the new process must bind past it.
    assert time_wait_sockets(old.port()), "no TIME_WAIT connection on the listener port"
    new = start_pilotfish(cfg)
    for i in range(5):
        resp = new.get(f"/r{i}")
        assert resp.status == 200 and resp.header("X-Backend") == "b", (i, resp)


@pytest.mark.parametrize("workers", ["-1", "abc"])
def test_invalid_workers_value_is_an_error(tmp_path, workers):
    path = write(tmp_path, "ok.json", valid_config())
    r = run_pilotfish(["--config", path, "--workers", workers], timeout=15)
    assert r.returncode != 0
