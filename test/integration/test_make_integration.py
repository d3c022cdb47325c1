"""`make integration PYTEST_ARGS=...` (test/integration/run.py): a named file or test runs only
that, `-k` still selects across the whole suite. Before, the Makefile always passed the
suite's folder, so `PYTEST_ARGS='test_x.py'` ran every test and then that file again."""

import os
import subprocess
import sys

import pytest

import run
from harness import HERE, REPO

SUITE = os.path.relpath(HERE, REPO)  # test/integration


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], [SUITE]),
        (["-k", "interim or h2", "-x"], [SUITE, "-k", "interim or h2", "-x"]),
        (["--durations=10"], [SUITE, "--durations=10"]),
        (["test_interim.py"], [f"{SUITE}/test_interim.py"]),
        (["test_interim.py::test_x[102]", "-x"], [f"{SUITE}/test_interim.py::test_x[102]", "-x"]),
        ([f"{SUITE}/test_h2.py", "-k", "ping"], [f"{SUITE}/test_h2.py", "-k", "ping"]),
        (["test_h2.py", "test_interim.py"], [f"{SUITE}/test_h2.py", f"{SUITE}/test_interim.py"]),
        # a file that is nowhere stays as given, for pytest to say it is not found
        (["test_nope.py"], ["test_nope.py"]),
    ],
)
def test_pytest_args_adds_the_suite_only_when_no_file_is_named(args, expected):
    assert run.pytest_args(args, REPO) == expected


def collected(*args):
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "run.py"), "-q", "-p", "no:cacheprovider",
         "--collect-only", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_a_named_file_or_test_is_all_that_runs_and_k_still_selects_across_the_suite():
    in_file = collected("test_interim.py")
    assert in_file and all(t.startswith(f"{SUITE}/test_interim.py::") for t in in_file), in_file
    assert len(set(in_file)) == len(in_file)  # not the suite and then the file again

    one = in_file[0]
    assert collected(one.split("/")[-1]) == [one]

    by_name = collected("-k", "interim or trailers")
    files = {t.split("::")[0] for t in by_name}
    assert f"{SUITE}/test_interim.py" in files and f"{SUITE}/test_request_trailers.py" in files
    assert set(in_file) <= set(by_name)
