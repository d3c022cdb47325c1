"""`make integration`'s entry: pytest on the whole of test/integration, or only on the files
and tests that PYTEST_ARGS names. pytest runs every path it is given, so the suite's folder is
added only when no file is named; a bare `test_x.py` (or `test_x.py::test_y`) is the one in
this folder, since that is how the suite's files are spoken of."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def names_a_file(arg):
    """True for a pytest argument that names a test file (`x.py`, `x.py::test`), not an option
    or an option's value (`-k expr`, `--durations=10`)."""
    return not arg.startswith("-") and arg.split("::", 1)[0].endswith(".py")


def pytest_args(args, cwd):
    """args with each file named as this folder's file where cwd has no such file, and this
    folder in front when none is named at all."""
    out, named = [], False
    for arg in args:
        if names_a_file(arg):
            named = True
            path, sep, rest = arg.partition("::")
            if not os.path.exists(os.path.join(cwd, path)) and os.path.exists(
                os.path.join(HERE, path)
            ):
                arg = os.path.relpath(os.path.join(HERE, path), cwd) + sep + rest
        out.append(arg)
    return out if named else [os.path.relpath(HERE, cwd)] + out


if __name__ == "__main__":
    argv = [sys.executable, "-m", "pytest"] + pytest_args(sys.argv[1:], os.getcwd())
    os.execv(sys.executable, argv)
