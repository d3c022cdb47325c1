"""The harness's port choice: outside the kernel's ephemeral range, never the same port to
two test processes at once, and a port taken between the choice and pilotfish's bind is
replaced rather than failing the test (a CI run once lost a test to "admin port taken")."""

import socket
import subprocess
import sys

import ports
from harness import HERE, LOCALHOST, cluster, listener, make_config, route


def test_ports_lie_outside_the_ephemeral_range_so_no_connect_is_given_one():
    low, high = ports.ephemeral_range()
    chosen = ports.free_ports(50)
    assert len(set(chosen)) == 50
    assert not [p for p in chosen if low <= p <= high], (low, high, chosen)
    # what an outgoing connection gets is in the range: the two sets cannot meet
    with socket.create_server((LOCALHOST, 0)) as srv, socket.create_connection(
        srv.getsockname(), timeout=5
    ) as c:
        assert low <= c.getsockname()[1] <= high


def test_concurrent_processes_never_get_the_same_port():
    prog = "import ports; print(' '.join(map(str, ports.free_ports(200))))"
    procs = [subprocess.Popen([sys.executable, "-c", prog], cwd=HERE, stdout=subprocess.PIPE)
             for _ in range(4)]
    got = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        got += [int(x) for x in out.split()]
    assert len(got) == 800 and len(set(got)) == 800


def test_a_port_taken_before_pilotfish_binds_it_is_replaced(start_backend, start_pilotfish):
    backend = start_backend("b")
    cfg = make_config([listener("main", [route("c", prefix="/")])],
                      [cluster("c", [backend.address])])
    admin, main = cfg["admin"]["address"], cfg["listeners"][0]["address"]
    taken = []
    try:
        for address in (admin, main):  # someone else binds both in the meantime
            s = socket.socket()
            s.bind((LOCALHOST, int(address.rsplit(":", 1)[1])))
            s.listen(1)
            taken.append(s)
        pf = start_pilotfish(cfg)
        assert cfg["admin"]["address"] != admin and cfg["listeners"][0]["address"] != main
        assert pf.get("/").status == 200
        assert pf.admin("GET", "/ready").status == 200
    finally:
        for s in taken:
            s.close()
