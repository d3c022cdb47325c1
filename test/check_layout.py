#!/usr/bin/env python3
"""Checks that includes follow the architecture's arrows (shared/STYLE.md):
core <- config <- discovery <- health <- proxy <- admin <- cmd.
A module may include its own headers and the public headers of modules to its left;
private headers (*_int.h) only from its own folder."""
import pathlib
import re
import sys

ORDER = ["core", "config", "discovery", "health", "proxy", "admin", "cmd"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    problems = []
    for module in ORDER:
        for path in sorted((root / module).glob("*.[ch]")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                target = match.group(1)
                target_module = target.split("/", 1)[0]
                where = f"{path.relative_to(root)}:{number}"
                if target_module not in ORDER:
                    problems.append(f"{where}: includes \"{target}\", which is in no module")
                elif ORDER.index(target_module) > ORDER.index(module):
                    problems.append(
                        f"{where}: {module}/ may not include {target} "
                        f"({target_module}/ is downstream of {module}/); "
                        "pass a callback or publish a snapshot instead")
                elif target.endswith("_int.h") and target_module != module:
                    problems.append(f"{where}: {target} is private to {target_module}/")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("layout: includes follow core <- config <- discovery <- health <- proxy <- admin <- cmd")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
