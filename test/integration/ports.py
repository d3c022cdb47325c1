"""Ports on 127.0.0.1 for the servers that tests and benchmarks start (stdlib only).

Choosing a port by binding port 0 and closing the socket is racy: the kernel takes such a
port from its ephemeral range, the range every outgoing connect() on the machine also takes
its local port from, so between the probe's close and the server's bind any connection (or
another test that probed the same way) may be given it. The ports here lie outside that range
(/proc/sys/net/ipv4/ip_local_port_range), where only an explicit bind can take them, and one
cursor in a file shared by every process that uses this module (the test suites and
benchmarks of this user, running at once) hands them out in turn under flock, so two of those
processes never get the same port until the whole range has gone round.
"""

import fcntl
import os
import random
import socket
import tempfile

LOCALHOST = "127.0.0.1"
LOWEST = 10000  # ports below are often configured for real services on a developer machine
MIN_PORTS = 1000  # fewer candidates than this outside the ephemeral range: use them all
CURSOR_FILE = os.path.join(tempfile.gettempdir(), f"pilotfish-ports-{os.getuid()}")
TRIES = 2000  # probes per call before giving up (each skips a port someone holds)


def ephemeral_range(path="/proc/sys/net/ipv4/ip_local_port_range"):
    """(low, high) of the kernel's ephemeral ports; Linux's default if unreadable."""
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def candidate_ranges(ephemeral=None):
    """Inclusive (first, last) port ranges outside the ephemeral range, at least MIN_PORTS
    ports in all when the machine leaves that many; empty when it leaves none."""
    low, high = ephemeral or ephemeral_range()
    for floor in (LOWEST, 1024):
        ranges = []
        if low > floor:
            ranges.append((floor, low - 1))
        if high < 65535:
            ranges.append((max(high + 1, floor), 65535))
        if sum(b - a + 1 for a, b in ranges) >= MIN_PORTS:
            return ranges
    return ranges


_RANGES = candidate_ranges()
_TOTAL = sum(b - a + 1 for a, b in _RANGES)
_local_cursor = random.randrange(_TOTAL) if _TOTAL else 0


def _port_at(index):
    for first, last in _RANGES:
        if index <= last - first:
            return first + index
        index -= last - first + 1
    raise IndexError(index)


def _take_index():
    """The shared cursor's value, advanced by one (in-process cursor if the file fails)."""
    global _local_cursor
    try:
        fd = os.open(CURSOR_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        _local_cursor = (_local_cursor + 1) % _TOTAL
        return _local_cursor
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            index = int(os.read(fd, 32)) % _TOTAL
        except ValueError:  # new or damaged file: start anywhere
            index = random.randrange(_TOTAL)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str((index + 1) % _TOTAL).encode())
        return index
    finally:
        os.close(fd)  # releases the lock


def bindable(port, hosts=(LOCALHOST,), udp=False):
    """True when a TCP socket (and with udp a UDP one) binds port on every host right now.
    No SO_REUSEADDR: a port with connections in TIME_WAIT counts as taken too."""
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    try:
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            for kind in kinds:
                with socket.socket(family, kind) as s:
                    s.bind((host, port))
    except OSError:
        return False
    return True


def free_port(hosts=(LOCALHOST,), udp=False):
    """A port nothing holds on any of hosts right now (with udp, for UDP too), outside the
    ephemeral range and not handed to any other user of this module recently."""
    if not _TOTAL:  # the ephemeral range covers every port: the old, racy way is all there is
        for _ in range(TRIES):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOCALHOST, 0))
                port = s.getsockname()[1]
            if bindable(port, hosts, udp):
                return port
    else:
        for _ in range(min(TRIES, _TOTAL)):
            port = _port_at(_take_index())
            if bindable(port, hosts, udp):
                return port
    raise RuntimeError(f"no free port on {', '.join(hosts)} in {TRIES} tries")


def free_ports(n, hosts=(LOCALHOST,), udp=False):
    """n different free ports (see free_port)."""
    ports = []
    while len(ports) < n:
        port = free_port(hosts, udp)
        if port not in ports:
            ports.append(port)
    return ports
