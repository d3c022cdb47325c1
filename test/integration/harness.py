"""Process and wire helpers for the pilotfish integration tests.

Everything here talks to real processes on 127.0.0.1: pf-backend (the fake upstream) and
pilotfish itself. Waiting is always a bounded poll (wait_for), never a fixed sleep, and every
process started is stopped by PID by the fixtures in conftest.py.
"""

import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

import ports

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("PILOTFISH_BUILD", os.path.join(REPO, "build"))
PILOTFISH_BIN = os.path.join(BUILD, "pilotfish")
BACKEND_BIN = os.path.join(BUILD, "pf-backend")

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds for a process to become ready
IO_TIMEOUT = 30.0  # seconds for one socket operation; generous for a slow 2-core machine
PATTERN = b"0123456789abcdef"  # what pf-backend's /bytes/N repeats


class HarnessError(AssertionError):
    """A process or the wire did something the harness cannot continue from."""


# ---- waiting --------------------------------------------------------------


def wait_for(predicate, timeout, what, interval=0.02):
    """Poll predicate() until it returns a truthy value; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the kernel's
    ephemeral range and not handed to another test process recently (see ports.py): two
    calls in a row give two ports, and no outgoing connection can be given it meanwhile."""
    return ports.free_port()


def closed_port():
    """A port where a connect() is refused (nothing listening)."""
    return free_port()


# ---- data -----------------------------------------------------------------

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data, h=FNV_OFFSET):
    """FNV-1a 64 of data, continuing from h (so it can be computed incrementally)."""
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def fnv_hex(h):
    return f"{h:016x}"


def pattern_bytes(n, offset=0):
    """n bytes of the /bytes/N pattern starting at stream offset `offset`."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start : start + n]


class PatternChecker:
    """Checks a streamed body against the /bytes/N pattern without keeping it in memory."""

    def __init__(self):
        self.offset = 0
        self._block = PATTERN * (1 << 16)  # 1 MiB of pattern to slice from

    def feed(self, piece):
        view = memoryview(piece)
        pos = 0
        while pos < len(view):
            start = (self.offset + pos) % len(PATTERN)
            n = min(len(view) - pos, len(self._block) - start)
            if view[pos : pos + n] != self._block[start : start + n]:
                raise HarnessError(f"body differs from pattern near offset {self.offset + pos}")
            pos += n
        self.offset += len(view)


# ---- HTTP over raw sockets ------------------------------------------------


class Response:
    def __init__(self, version, status, reason, headers):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) in wire order
        self.body = b""

    def header(self, name, default=None):
        """The value of the first header called name (case-insensitive)."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_token(self, name, token):
        """Whether a comma-separated header (e.g. Connection) contains token."""
        for v in self.header_all(name):
            if token.lower() in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.reason!r} headers={self.headers} body={self.body[:200]!r}>"


def build_request(method, target, headers=(), body=None, version="HTTP/1.1"):
    """Bytes of one request. Headers are sent exactly as given (no Host added)."""
    lines = [f"{method} {target} {version}"]
    for k, v in headers:
        lines.append(f"{k}: {v}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def chunked(pieces, trailers=()):
    """Encode pieces (bytes) as a chunked body."""
    out = bytearray()
    for p in pieces:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers:
        out += f"{k}: {v}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


class RawConn:
    """One client TCP connection that writes exact bytes and parses responses strictly."""

    def __init__(self, port, timeout=IO_TIMEOUT, rcvbuf=None):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((LOCALHOST, port))
        self.buf = bytearray()
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=None, host="test.local", version="HTTP/1.1"):
        """Send one request (adding Host and Content-Length when not given) and read the response."""
        self.send(make_request(method, target, headers, body, host, version))
        return self.read_response(method=method)

    def _recv(self, deadline):
        """Read more bytes into buf; return False at EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("read deadline passed")
        self.sock.settimeout(min(remaining, self.timeout))
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_line(self, deadline, limit=1 << 16):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > limit:
                raise HarnessError(f"line longer than {limit} bytes: {bytes(self.buf[:100])!r}")
            if not self._recv(deadline):
                raise HarnessError(f"connection closed mid-line; have {bytes(self.buf[:200])!r}")

    def read_head(self, timeout=None, method="GET"):
        """Read a status line and headers (skipping 1xx interim responses)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if not self.buf and not self._recv(deadline):
                raise HarnessError("connection closed before a response")
            status_line = self._read_line(deadline).decode("latin-1")
            m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", status_line)
            if not m:
                raise HarnessError(f"bad status line {status_line!r}")
            headers = []
            while True:
                line = self._read_line(deadline).decode("latin-1")
                if line == "":
                    break
                if ":" not in line or line[0] in " \t":
                    raise HarnessError(f"bad header line {line!r}")
                k, v = line.split(":", 1)
                headers.append((k, v.strip(" \t")))
            resp = Response(m.group(1), int(m.group(2)), m.group(3) or "", headers)
            resp.request_method = method
            if 100 <= resp.status < 200 and resp.status != 101:
                continue
            return resp

    def body_chunks(self, resp, timeout=None):
        """Yield the body of resp as it arrives (RFC 9112 6.3 framing), strictly checked."""
        deadline = time.monotonic() + (timeout or self.timeout)
        te = resp.header_all("Transfer-Encoding")
        cls = resp.header_all("Content-Length")
        if resp.request_method == "HEAD" or resp.status in (204, 304) or resp.status < 200:
            return
        if te and cls:
            raise HarnessError(f"response has both Transfer-Encoding and Content-Length: {resp!r}")
        if te:
            if te[-1].split(",")[-1].strip().lower() != "chunked":
                raise HarnessError(f"unexpected Transfer-Encoding {te!r}")
            yield from self._chunked_body(deadline)
            return
        if cls:
            if len(set(cls)) != 1 or not cls[0].isdigit():
                raise HarnessError(f"bad Content-Length {cls!r}")
            left = int(cls[0])
            while left > 0:
                if not self.buf and not self._recv(deadline):
                    raise HarnessError(f"connection closed with {left} body bytes missing")
                n = min(left, len(self.buf))
                piece = bytes(self.buf[:n])
                del self.buf[:n]
                left -= n
                yield piece
            return
        # Close-delimited.
        while True:
            if self.buf:
                piece = bytes(self.buf)
                self.buf.clear()
                yield piece
            if not self._recv(deadline):
                resp.close_delimited = True
                return

    def _chunked_body(self, deadline):
        while True:
            line = self._read_line(deadline).decode("latin-1")
            size_txt = line.split(";", 1)[0].strip()
            if not re.fullmatch(r"[0-9a-fA-F]+", size_txt):
                raise HarnessError(f"bad chunk size line {line!r}")
            size = int(size_txt, 16)
            if size == 0:
                while self._read_line(deadline) != b"":
                    pass  # trailers
                return
            left = size
            while left > 0:
                if not self.buf and not self._recv(deadline):
                    raise HarnessError("connection closed inside a chunk")
                n = min(left, len(self.buf))
                piece = bytes(self.buf[:n])
                del self.buf[:n]
                left -= n
                yield piece
            if self._read_line(deadline) != b"":
                raise HarnessError("chunk data not followed by CRLF")

    def read_response(self, timeout=None, method="GET"):
        """Read one full response."""
        resp = self.read_head(timeout, method=method)
        resp.body = b"".join(self.body_chunks(resp, timeout))
        return resp

    def read_until(self, marker, timeout=10.0):
        """Read until marker is in the buffer (left unconsumed); fails on close or timeout."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if not self._recv(deadline):
                raise HarnessError(f"connection closed before {marker!r}; have {bytes(self.buf[:200])!r}")

    def read_all_until_close(self, timeout=None):
        """Everything the peer sends until it closes; fails if it does not close in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._recv(deadline):
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def wait_closed(self, timeout=10.0):
        """True if the peer closes within timeout (ignoring data still arriving), else False."""
        deadline = time.monotonic() + timeout
        try:
            while self._recv(deadline):
                pass
            return True
        except (socket.timeout, TimeoutError):
            return False

    def peer_closed_now(self, timeout=0.2):
        """True if the connection is already closed by the peer (bounded check)."""
        return self.wait_closed(timeout)


def make_request(method, target, headers=None, body=None, host="test.local", version="HTTP/1.1"):
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        headers.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body))))
    return build_request(method, target, headers, body, version)


def http_request(port, method, path, headers=None, body=None, timeout=IO_TIMEOUT):
    """One request with http.client on a fresh connection; returns a Response with the body."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        resp = Response(f"HTTP/{r.version // 10}.{r.version % 10}", r.status, r.reason, r.getheaders())
        resp.body = r.read()
        return resp
    finally:
        conn.close()


def get_json(port, path, timeout=5.0):
    resp = http_request(port, "GET", path, timeout=timeout)
    if resp.status != 200:
        raise HarnessError(f"GET {path} on port {port}: {resp!r}")
    return resp.json()


# ---- processes ------------------------------------------------------------


def _tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def _stop_process(proc, grace):
    """SIGTERM, wait up to grace seconds, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Backend:
    """A running pf-backend: start() it, talk to it on .port, stop() it by PID."""

    def __init__(self, name, workdir, listen=None):
        self.name = name
        self.listen = listen or f"{LOCALHOST}:0"
        self.out_path = os.path.join(workdir, f"backend-{name}.out")
        self.err_path = os.path.join(workdir, f"backend-{name}.err")
        self.proc = None
        self.port = None

    def start(self):
        if not os.path.exists(BACKEND_BIN):
            raise HarnessError(f"{BACKEND_BIN} not built (make -C {REPO} build/pf-backend)")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [BACKEND_BIN, "--listen", self.listen, "--name", self.name],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

        def listening():
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"pf-backend {self.name} exited {self.proc.returncode}: {_tail(self.err_path)}"
                )
            with open(self.out_path, "rb") as f:
                m = re.search(rb"^listening \S+:(\d+)\r?\n", f.read(), re.M)
            return int(m.group(1)) if m else None

        self.port = wait_for(listening, START_TIMEOUT, f"pf-backend {self.name} to listen")
        return self

    @property
    def address(self):
        return f"{LOCALHOST}:{self.port}"

    def stats(self):
        """Backend's own counters (this query itself opens one connection and is one request)."""
        return get_json(self.port, "/stats")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            _stop_process(self.proc, grace=5)

    def problems(self):
        out = []
        if self.proc is not None and self.proc.returncode not in (0, -signal.SIGTERM, None):
            out.append(f"pf-backend {self.name} exit status {self.proc.returncode}")
        return out


class Pilotfish:
    """A running pilotfish with a config written to the test's tmp dir."""

    def __init__(self, config, workdir, workers=None, extra_args=(), tag="pf", fd_limit=None,
                 stdout_pipe=False, stderr_pipe=False):
        """fd_limit: the open file limit (soft and hard) pilotfish starts with; stdout_pipe,
        stderr_pipe: that stream is a pipe this object holds and never reads (.access_log()
        or .stderr_text() is then empty)."""
        self.fd_limit = fd_limit
        self.stdout_pipe = stdout_pipe
        self.stderr_pipe = stderr_pipe
        self.config = config
        self.workdir = workdir
        self.workers = workers
        self.extra_args = list(extra_args)
        self.config_path = os.path.join(workdir, f"{tag}.json")
        self.out_path = os.path.join(workdir, f"{tag}.out")
        self.err_path = os.path.join(workdir, f"{tag}.err")
        self.proc = None
        self.expect_exit = False  # set when a test stops the process on purpose
        self.admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])

    def start(self, wait_ready=True):
        """Start pilotfish; with wait_ready, wait for /ready. If it could not bind a port the
        harness chose (listener() or make_config()) because something took it meanwhile, the
        port is replaced by a fresh one in self.config and pilotfish started again, at most
        BIND_RETRIES times: a taken port is the machine's doing, not pilotfish's."""
        for attempt in range(BIND_RETRIES + 1):
            self._spawn()
            if not wait_ready:
                return self
            try:
                self.wait_ready()
                return self
            except HarnessError:
                taken = self._taken_port()
                if taken is None or attempt == BIND_RETRIES:
                    raise
                moved_to = self._move_port(taken)
                print(f"harness: {taken} was taken before pilotfish bound it; "
                      f"starting again on port {moved_to}")
                self.expect_exit = False
        raise AssertionError("unreachable")

    def _taken_port(self):
        """The harness-chosen address pilotfish exited on because it was in use, or None."""
        if self.proc.poll() is None:
            return None
        m = re.search(r"cannot listen on (\S+): (Address already in use|"
                      r"another pilotfish is starting or listening there)", _tail(self.err_path))
        return m.group(1) if m and m.group(1) in _harness_addresses else None

    def _move_port(self, address):
        """Every listener or admin address on address's port moves to one fresh port."""
        old = ":" + address.rsplit(":", 1)[1]
        port = free_port()
        places = [self.config["admin"]] + list(self.config["listeners"])
        for place in places:
            if place.get("address", "").endswith(old):
                place["address"] = place["address"][: -len(old)] + f":{port}"
                _harness_addresses.add(place["address"])
        self.admin_port = int(self.config["admin"]["address"].rsplit(":", 1)[1])
        return port

    def _spawn(self):
        if not os.path.exists(PILOTFISH_BIN):
            raise HarnessError(f"{PILOTFISH_BIN} not built (make -C {REPO})")
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        args = [PILOTFISH_BIN, "--config", self.config_path]
        if self.workers is not None:
            args += ["--workers", str(self.workers)]
        args += self.extra_args
        limit = self.fd_limit

        def set_fd_limit():
            # Hard limit too: pilotfish raises its soft limit to the hard one at start.
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE if self.stdout_pipe else out,
                stderr=subprocess.PIPE if self.stderr_pipe else err,
                stdin=subprocess.DEVNULL,
                env=pilotfish_env(),
                preexec_fn=set_fd_limit if limit else None,
            )

    def cpu_seconds(self):
        """User plus system CPU time pilotfish has used so far, from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    @property
    def pid(self):
        return self.proc.pid

    def port(self, listener=0):
        """The port of listener (index or name)."""
        for i, lst in enumerate(self.config["listeners"]):
            if listener == i or listener == lst["name"]:
                return int(lst["address"].rsplit(":", 1)[1])
        raise KeyError(listener)

    def wait_ready(self, timeout=START_TIMEOUT):
        def ready():
            if self.proc.poll() is not None:
                self.expect_exit = True  # reported here, not again at teardown
                raise HarnessError(
                    f"pilotfish exited {self.proc.returncode} before ready:\n{_tail(self.err_path)}"
                )
            try:
                return http_request(self.admin_port, "GET", "/ready", timeout=1.0).status == 200
            except OSError:
                return False

        wait_for(ready, timeout, "pilotfish admin /ready to answer 200")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- talking to it
    def request(self, method, path, headers=None, body=None, listener=0, timeout=IO_TIMEOUT):
        """One request through the proxy with http.client on a fresh connection."""
        return http_request(self.port(listener), method, path, headers, body, timeout)

    def get(self, path, host=None, listener=0, headers=None):
        h = dict(headers or {})
        if host is not None:
            h["Host"] = host
        return self.request("GET", path, h, listener=listener)

    def raw(self, listener=0, timeout=IO_TIMEOUT, rcvbuf=None):
        """A RawConn to a listener."""
        return RawConn(self.port(listener), timeout=timeout, rcvbuf=rcvbuf)

    def admin(self, method, path, timeout=5.0):
        return http_request(self.admin_port, method, path, timeout=timeout)

    def admin_json(self, path):
        return get_json(self.admin_port, path)

    def metrics(self):
        resp = self.admin("GET", "/stats/prometheus")
        if resp.status != 200:
            raise HarnessError(f"/stats/prometheus: {resp!r}")
        return parse_prometheus(resp.body.decode())

    def rss_bytes(self):
        """Resident set size of the pilotfish process, from /proc/PID/status."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise HarnessError("no VmRSS in /proc status")

    def access_log(self):
        """Parsed JSON lines written to stdout so far."""
        with open(self.out_path, "rb") as f:
            lines = [l for l in f.read().decode("utf-8", "replace").splitlines() if l.strip()]
        return [json.loads(l) for l in lines]

    def stdout_text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_text(self):
        return _tail(self.err_path, 1 << 20)

    # -- stopping
    def signal(self, sig):
        self.expect_exit = True
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        """Wait for the process to exit; returns its status or None if still running."""
        self.expect_exit = True
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace=5):
        """SIGTERM, then SIGKILL after grace seconds (exit statuses are the drain tests' job)."""
        if self.proc is None:
            return None
        crashed = self.proc.poll() is not None and not self.expect_exit
        self.expect_exit = True
        status = _stop_process(self.proc, grace)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()
        self._crashed = crashed
        return status

    def problems(self):
        """Things that went wrong with the process irrespective of the test's assertions."""
        out = []
        if getattr(self, "_crashed", False):
            out.append(
                f"pilotfish died during the test (status {self.proc.returncode}):\n"
                f"{_tail(self.err_path)}"
            )
        err = _tail(self.err_path, 1 << 20)
        for mark in SANITIZER_MARKS:
            if mark in err:
                i = err.index(mark)
                out.append(f"sanitizer report in pilotfish stderr:\n{err[max(0, i - 200): i + 3000]}")
                break
        return out


def run_pilotfish(args, timeout=30):
    """Run pilotfish to completion with args (for --check-config, --version, --help)."""
    if not os.path.exists(PILOTFISH_BIN):
        raise HarnessError(f"{PILOTFISH_BIN} not built (make -C {REPO})")
    return subprocess.run(
        [PILOTFISH_BIN] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


_sanitizer_build = None


def is_sanitizer_build():
    """Whether build/pilotfish was built with ASan (RSS bounds are then looser)."""
    global _sanitizer_build
    if _sanitizer_build is None:
        try:
            with open(PILOTFISH_BIN, "rb") as f:
                _sanitizer_build = b"__asan_init" in f.read()
        except OSError:
            return False
    return _sanitizer_build


def pilotfish_env():
    """The environment for pilotfish. Under ASan the freed-memory quarantine (256 MiB by
    default) is cut to 16 MiB, so that RSS follows live buffers and the memory bounds of
    test_streaming still mean something; use-after-free within that window is still caught."""
    env = dict(os.environ)
    if is_sanitizer_build() and "quarantine_size_mb" not in env.get("ASAN_OPTIONS", ""):
        opts = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=16"
    return env


class RssSampler:
    """Samples pilotfish's VmRSS every `interval` seconds in a thread; .peak is the maximum."""

    def __init__(self, pf, interval=0.02):
        self.pf = pf
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.pf.rss_bytes())
                self.samples += 1
            except (OSError, HarnessError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


# ---- config ---------------------------------------------------------------


# Addresses listener() and make_config() chose themselves: Pilotfish.start may move them to
# another port if something takes them first (the test only knows them through the config).
_harness_addresses = set()
BIND_RETRIES = 3


def movable_address():
    """127.0.0.1:PORT on a fresh port, which Pilotfish.start may move to another port if
    something takes it first: for addresses the test reads back only through the config."""
    address = f"{LOCALHOST}:{free_port()}"
    _harness_addresses.add(address)
    return address


def listener(name, routes, **kw):
    d = {"name": name, "address": kw.get("address") or movable_address(), "routes": routes}
    d.update(kw)
    return d


def route(cluster, **match):
    return {"match": match, "cluster": cluster}


def cluster(name, endpoints, **kw):
    d = {"name": name, "endpoints": endpoints}
    d.update(kw)
    return d


def make_config(listeners, clusters, **kw):
    d = {
        "admin": kw.get("admin") or {"address": movable_address()},
        "access_log": True,
        "drain_timeout": "10s",
        "listeners": listeners,
        "clusters": clusters,
    }
    d.update(kw)
    return d


def standard_config(web1, web2, api, **listener_kw):
    """The topology most tests use: clusters web (web1 weight 1, web2 weight 2) and api."""
    main = listener(
        "main",
        [
            route("api", host="api.local", prefix="/v1/"),
            route("api", host="*.wild.test"),
            route("api", host="port.local:8080"),
            route("api", host="abs.local"),
            route("api", path="/exact"),
            route("api", prefix="/order/"),
            route("web", prefix="/order/specific"),  # never wins: the route above matches first
            route("web", prefix="/"),
        ],
        header_timeout="10s",
        idle_timeout="60s",
        max_header_bytes=65536,
        max_target_bytes=8192,
        **listener_kw,
    )
    # A listener without a catch-all route, for "no route" behaviour.
    strict = listener("strict", [route("api", host="only.local")])
    return make_config(
        [main, strict],
        [
            cluster(
                "web",
                [web1.address, {"address": web2.address, "weight": 2}],
                lb_policy="round_robin",
            ),
            cluster(
                "api",
                [api.address],
                connect_timeout="250ms",
                response_timeout="15s",
                idle_timeout="30s",
                max_idle_per_endpoint=64,
            ),
        ],
    )


# ---- prometheus -----------------------------------------------------------

_SAMPLE_RE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+([-+]?(?:[0-9.eE+-]+|Inf|NaN))(\s+-?\d+)?$"
)
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def parse_prometheus(text):
    """List of (name, labels dict, float value); fails on a line that is not exposition format."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line.strip())
        if not m:
            raise HarnessError(f"not a Prometheus sample line: {line!r}")
        labels = {}
        if m.group(3):
            rest = m.group(3).strip()
            pos = 0
            while pos < len(rest):
                lm = _LABEL_RE.match(rest, pos)
                if not lm:
                    raise HarnessError(f"bad labels in {line!r}")
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def log_times(pf, needle):
    """Seconds since the epoch, on pilotfish's own clock (its log line's UTC timestamp, ms),
    of each log line containing needle, oldest first: for timing asserts that must not
    depend on how fast the test process or a fake was scheduled."""
    out = []
    for line in pf.stderr_text().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z ", line)
        if m and needle in line:
            whole = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            out.append(whole + int(m.group(2)) / 1000)
    return out


def metric_sum(samples, name, **labels):
    """Sum of samples called name whose labels include all of labels."""
    return sum(
        v for n, l, v in samples if n == name and all(l.get(k) == want for k, want in labels.items())
    )


def metric_names(samples):
    return {n for n, _, _ in samples}


# ---- DNS: dnsmasq, raw queries, backends on chosen addresses ---------------

DNSMASQ_BIN = "/usr/sbin/dnsmasq"
DIG_BIN = "/usr/bin/dig"
DNS_TYPES = {"A": 1, "AAAA": 28, "SRV": 33, "SOA": 6}
DNS_RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def free_dual_port(host=LOCALHOST):
    """A port free for both TCP and UDP on host (DNS servers listen on both)."""
    return ports.free_port(hosts=(host,), udp=True)


def dns_query(port, name, qtype="A", timeout=1.0):
    """One UDP query to 127.0.0.1:port; returns (rcode name, answer count). Used to wait for
    the fixture; what the records are is checked with dig and through pilotfish."""
    qid = int.from_bytes(os.urandom(2), "big")
    wire = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    query = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + wire
    query += DNS_TYPES[qtype].to_bytes(2, "big") + b"\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (LOCALHOST, port))
        data = s.recv(65535)
    if len(data) < 12 or data[:2] != qid.to_bytes(2, "big"):
        raise HarnessError(f"bad DNS answer {data[:32]!r}")
    rcode = data[3] & 0x0F
    return DNS_RCODES.get(rcode, str(rcode)), int.from_bytes(data[6:8], "big")


def dig(port, name, qtype="A", *extra):
    """dig's short answer lines for name (a real client, to check the fixture against)."""
    r = subprocess.run(
        [DIG_BIN, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", name, qtype] + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=15,
    )
    return r.returncode, r.stdout.decode()


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port, authoritative-ish for `domain` (--local: names it does not
    know get NXDOMAIN). A and AAAA records live in a hosts file, re-read on SIGHUP (set_hosts);
    SRV records are command-line options dnsmasq never re-reads, so set_srv restarts it on the
    same port. Every record has TTL `ttl`. Stopped by PID."""

    def __init__(self, workdir, domain="test.internal", ttl=1, tag="dns"):
        self.workdir = workdir
        self.domain = domain
        self.ttl = ttl
        self.tag = tag
        self.port = free_dual_port()
        self.hosts_path = os.path.join(workdir, f"{tag}.hosts")
        self.err_path = os.path.join(workdir, f"{tag}.err")
        self.hosts = []  # (ip, name)
        self.srv = []  # (name, target, port, priority, weight)
        self.proc = None
        self.starts = 0

    def _write_hosts(self):
        tmp = self.hosts_path + ".tmp"
        with open(tmp, "w") as f:
            for ip, name in self.hosts:
                f.write(f"{ip} {name}\n")
        os.replace(tmp, self.hosts_path)

    def _reloads(self):
        """How many times dnsmasq has read the hosts file (once at start, once per SIGHUP)."""
        try:
            with open(self.err_path, "rb") as f:
                return f.read().count(f"read {self.hosts_path} - ".encode())
        except OSError:
            return 0

    def start(self):
        """Start dnsmasq and wait until it answers. On the first start, a port something took
        meanwhile is replaced by a fresh one (at most BIND_RETRIES times); a restart keeps its
        port, which pilotfish's config names."""
        first = self.starts == 0
        for attempt in range(BIND_RETRIES + 1):
            try:
                return self._start()
            except HarnessError:
                if not (first and attempt < BIND_RETRIES and self.proc.poll() is not None
                        and "Address already in use" in _tail(self.err_path, 400)):
                    raise
                self.port = free_dual_port()
                self.starts = 0

    def _start(self):
        self._write_hosts()
        args = [
            DNSMASQ_BIN,
            "--no-daemon",  # foreground, no user change, no forked TCP children
            "--conf-file=/dev/null",
            f"--port={self.port}",
            f"--listen-address={LOCALHOST}",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--no-negcache",
            f"--addn-hosts={self.hosts_path}",
            f"--local=/{self.domain}/",
            f"--local-ttl={self.ttl}",
            "--pid-file=",
            "--log-facility=-",
            "--log-queries",
        ]
        for name, target, port, priority, weight in self.srv:
            args.append(f"--srv-host={name},{target},{port},{priority},{weight}")
        before = self._reloads()
        with open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL
            )
        self.starts += 1

        def answering():
            if self.proc.poll() is not None:
                raise HarnessError(f"dnsmasq exited {self.proc.returncode}: {_tail(self.err_path)}")
            try:
                rcode, _ = dns_query(self.port, f"probe.{self.domain}", timeout=0.2)
            except (OSError, HarnessError):
                return False
            return rcode == "NXDOMAIN" and self._reloads() > before

        wait_for(answering, START_TIMEOUT, f"dnsmasq on 127.0.0.1:{self.port} to answer")
        return self

    def set_hosts(self, entries):
        """Replaces the A/AAAA records: entries is a list of (ip, name). Returns once dnsmasq
        has re-read the file (when it runs)."""
        self.hosts = list(entries)
        self._write_hosts()
        if self.alive():
            before = self._reloads()
            os.kill(self.proc.pid, signal.SIGHUP)
            wait_for(lambda: self._reloads() > before, START_TIMEOUT, "dnsmasq to re-read hosts")

    def set_srv(self, records):
        """Replaces the SRV records, (name, target, port, priority, weight) each; restarts
        dnsmasq on the same port when it runs."""
        self.srv = list(records)
        if self.alive():
            self.stop()
            self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            _stop_process(self.proc, grace=5)

    def queries_logged(self, name, qtype="A"):
        """Queries for name seen by dnsmasq (--log-queries lines)."""
        with open(self.err_path, "rb") as f:
            return f.read().count(f"query[{qtype}] {name} from".encode())

    def problems(self):
        if self.proc is not None and self.proc.returncode not in (0, -signal.SIGTERM, None):
            return [f"dnsmasq exit status {self.proc.returncode}: {_tail(self.err_path)}"]
        return []


class AddressedBackend(Backend):
    """A pf-backend on a chosen address, e.g. 127.0.0.2:PORT or [::1]:PORT: A/AAAA records
    carry addresses only, so the endpoints of a DNS cluster share one port."""

    def __init__(self, name, workdir, listen):
        super().__init__(name, workdir, listen)

    @property
    def address(self):
        return self.listen

    def stats(self):
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        conn = http.client.HTTPConnection(host, self.port, timeout=5)
        try:
            conn.request("GET", "/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()


def shared_port(hosts):
    """A TCP port free on every one of hosts (IPv4 or IPv6 literals)."""
    return ports.free_port(hosts=tuple(hosts))


class StandalonePilotfish(Pilotfish):
    """pilotfish in standalone mode: flags instead of a config file. `config` only records
    the admin and listener addresses the helpers look up."""

    def __init__(self, args, listen, admin, workdir, tag="standalone"):
        config = {"admin": {"address": admin}, "listeners": [{"name": "main", "address": listen}]}
        super().__init__(config, workdir, extra_args=args, tag=tag)

    def _taken_port(self):
        return None  # its ports are in its flags, which the test chose: nothing to move

    def _spawn(self):
        if not os.path.exists(PILOTFISH_BIN):
            raise HarnessError(f"{PILOTFISH_BIN} not built (make -C {REPO})")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [PILOTFISH_BIN] + self.extra_args,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=pilotfish_env(),
            )


# ---- Kubernetes: the fake API server and kubectl ----------------------------

import sys as _sys  # noqa: E402  (kept beside the helpers that need it)

K8S_FAKE = os.path.join(REPO, "test", "fakes", "k8s_api.py")
TOOLS_DIR = os.environ.get("PILOTFISH_TOOLS", os.path.join(REPO, "build", "tools"))
KUBECTL_BIN = os.path.join(TOOLS_DIR, "kubectl")


class K8sApi:
    """test/fakes/k8s_api.py on 127.0.0.1 (HTTPS, its own CA) with its control port; started
    and stopped by PID. put/delete change objects, other methods drive the control API."""

    def __init__(self, workdir, tag="k8s", args=()):
        self.args = list(args)  # more command-line arguments (--state, --port ...)
        self.dir = os.path.join(workdir, tag)
        self.out_path = os.path.join(workdir, f"{tag}.out")
        self.err_path = os.path.join(workdir, f"{tag}.err")
        self.proc = None
        self.port = self.control_port = None

    def start(self):
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [_sys.executable, K8S_FAKE, "--dir", self.dir, *self.args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            )

        def listening():
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"k8s_api.py exited {self.proc.returncode}: {_tail(self.err_path)}")
            with open(self.out_path, "rb") as f:
                m = re.search(rb"listening https://127\.0\.0\.1:(\d+) "
                              rb"control http://127\.0\.0\.1:(\d+)", f.read())
            return (int(m.group(1)), int(m.group(2))) if m else None

        self.port, self.control_port = wait_for(listening, 30.0, "the fake API server to listen")
        return self

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self):
        return os.path.join(self.dir, "ca.crt")

    @property
    def token_file(self):
        return os.path.join(self.dir, "token")

    def control(self, path, doc=None, timeout=30.0):
        conn = http.client.HTTPConnection(LOCALHOST, self.control_port, timeout=timeout)
        try:
            if doc is None:
                conn.request("GET", path)
            else:
                body = json.dumps(doc)
                conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return json.loads(resp.read())
        finally:
            conn.close()

    def apply(self, *ops):
        """ops: objects to create or replace, or ("delete", resource, namespace, name)."""
        wire = [{"delete": list(op[1:])} if isinstance(op, tuple) else {"put": op} for op in ops]
        return self.control("/apply", {"ops": wire})["resourceVersion"]

    def requests(self):
        return self.control("/requests")

    def config(self, **kw):
        """The $.kubernetes object for pilotfish talking to this server."""
        d = {"api_server": self.url, "token_file": self.token_file, "ca_file": self.ca_file,
             "namespace": "default", "backoff": {"base": "50ms", "max": "500ms"}}
        d.update(kw)
        return d

    def kubeconfig(self, token="test-token"):
        """A kubeconfig for kubectl with the CA inline (certificate-authority-data)."""
        import base64

        path = os.path.join(self.dir, f"kubeconfig-{token}")
        with open(self.ca_file, "rb") as f:
            ca = base64.b64encode(f.read()).decode()
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
               "clusters": [{"name": "fake", "cluster": {"server": self.url,
                                                         "certificate-authority-data": ca}}],
               "users": [{"name": "test", "user": {"token": token}}],
               "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test",
                                                          "namespace": "default"}}]}
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def stop(self):
        if self.proc is not None:
            _stop_process(self.proc, grace=5)


def restartable_k8s_api(tmp_path):
    """The body of a fake-API-server fixture (use with `yield from`): yields start(*extra),
    which starts test/fakes/k8s_api.py with extra arguments, every start on the ports and
    state file of the first, so that a restart finds both again; stops each at teardown."""
    fixed = ["--port", str(free_port()), "--control-port", str(free_port()),
             "--state", str(tmp_path / "api-state.json")]
    made = []

    def start(*extra):
        api = K8sApi(str(tmp_path), args=fixed + list(extra)).start()
        made.append(api)
        return api

    yield start
    for api in made:
        api.stop()


def k8s_service(name, ports, namespace="default", **spec):
    """A Service object; ports: [(name, port)] (name may be None)."""
    sp = [dict({"port": p, "protocol": "TCP"}, **({"name": n} if n else {})) for n, p in ports]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict({"ports": sp, "type": "ClusterIP"}, **spec)}


def k8s_slice(name, service, port, endpoints, namespace="default", port_name="http",
              address_type="IPv4"):
    """An EndpointSlice; endpoints: [address or (address, {conditions}) or dict]."""
    eps = []
    for e in endpoints:
        if isinstance(e, dict):
            eps.append(e)
        elif isinstance(e, tuple):
            eps.append({"addresses": [e[0]], "conditions": e[1]})
        else:
            eps.append({"addresses": [e], "conditions": {"ready": True}})
    ports = [dict({"port": port, "protocol": "TCP"}, **({"name": port_name} if port_name else {}))]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type, "ports": ports, "endpoints": eps}


def run_kubectl(kubeconfig, *args, timeout=30):
    """kubectl with a process timeout; returns (exit status, stdout, stderr)."""
    r = subprocess.run([KUBECTL_BIN, "--kubeconfig", kubeconfig] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def cluster_status(pf, name):
    """The /clusters entry called name, or None."""
    for c in pf.admin_json("/clusters")["clusters"]:
        if c["name"] == name:
            return c
    return None


def started_by_test(make):
    """The body of a "start something" fixture (use with `yield from`): yields start(...),
    which builds make(...) and starts it; at teardown stops everything started, newest first,
    by PID, and fails with whatever went wrong with the processes."""
    started = []

    def start(*args, **kw):
        obj = make(*args, **kw)
        started.append(obj)
        return obj.start()

    yield start
    problems = []
    for obj in reversed(started):
        obj.stop()
        problems += obj.problems()
    if problems:
        raise HarnessError("\n".join(problems))
