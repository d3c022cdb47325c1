"""The command line: --check-config, --version, --help, and refusing to start on bad input."""

import json
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


def test_start_fails_when_listener_port_is_taken(tmp_path, start_pilotfish):
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen(1)
        cfg = valid_config()
        cfg["listeners"][0]["address"] = f"{LOCALHOST}:{taken.getsockname()[1]}"
        pf = start_pilotfish(cfg, wait_ready=False)
        code = pf.wait_exit(15)
        assert code is not None and code != 0, "pilotfish kept running without its listener"
        assert pf.stderr_text().strip()


@pytest.mark.parametrize("workers", ["-1", "abc"])
def test_invalid_workers_value_is_an_error(tmp_path, workers):
    path = write(tmp_path, "ok.json", valid_config())
    r = run_pilotfish(["--config", path, "--workers", workers], timeout=15)
    assert r.returncode != 0
