"""/healthz and the workers' heartbeats: a worker whose event loop stops running makes
/healthz answer 503 naming it, so Kubernetes restarts a sidecar that answers probes but no
requests; it answers 200 again once the worker runs."""

import ctypes
import os

import pytest

from harness import standard_config, wait_for

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000  # waitpid's __WALL: wait for a thread, not only a child process

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def worker_thread(pid, index):
    """The thread id of pilotfish's worker `index` (its threads are named pf-worker-N)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == f"pf-worker-{index}":
                return int(tid)
    raise AssertionError(f"no thread pf-worker-{index} in process {pid}")


class StoppedThread:
    """Stops one thread of a child process (ptrace: a stop of that thread only; SIGSTOP
    would stop the whole process), and lets it run again on exit."""

    def __init__(self, tid):
        self.tid = tid

    def __enter__(self):
        if _libc.ptrace(PTRACE_SEIZE, self.tid, None, None) != 0:
            pytest.skip(f"ptrace not permitted here: {os.strerror(ctypes.get_errno())}")
        assert _libc.ptrace(PTRACE_INTERRUPT, self.tid, None, None) == 0
        os.waitpid(self.tid, WALL)  # returns once the thread is stopped
        return self

    def __exit__(self, *exc):
        _libc.ptrace(PTRACE_DETACH, self.tid, None, None)


def test_healthz_lists_every_worker_heartbeat(proxy):
    resp = proxy.pf.admin("GET", "/healthz")
    assert resp.status == 200
    assert resp.body.startswith(b"ok\n") and b"worker 0: heartbeat " in resp.body, resp.body


def test_healthz_fails_naming_a_worker_whose_loop_stopped(backends, start_pilotfish):
    pf = start_pilotfish(standard_config(backends.web1, backends.web2, backends.api), workers=2)
    assert pf.admin("GET", "/healthz").status == 200
    with StoppedThread(worker_thread(pf.pid, 1)):
        # Stalled after 5 s without a heartbeat; the admin server (main thread) still answers.
        resp = wait_for(
            lambda: (r := pf.admin("GET", "/healthz")).status == 503 and r, 15, "/healthz 503"
        )
        assert b"stalled: worker 1 has not run its event loop for " in resp.body, resp.body
        assert b"worker 0: heartbeat " in resp.body
        assert pf.admin("GET", "/ready").status == 200  # readiness is another question
    wait_for(lambda: pf.admin("GET", "/healthz").status == 200, 10, "/healthz 200 again")
