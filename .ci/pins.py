"""Helpers of .ci/latest and .ci/refresh-pins for constraints.txt (standard library only).

    python .ci/pins.py diff constraints.txt            # this environment vs the pins
    python .ci/pins.py write constraints.txt FREEZE    # new pins from `pip freeze`, same header
    python .ci/pins.py unpinned constraints.txt REPORT # what a `pip install --report` adds unpinned

A pin line is ``name==version``, optionally with an environment marker
(``name==version ; python_version >= "3.13"``). Lines with a marker are written by hand, for a
package whose pin cannot be the same on every supported Python: ``write`` keeps them as they
are (and drops that package from the freeze), and ``unpinned`` counts them as pins.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path

PIN = re.compile(r"([A-Za-z0-9._-]+)\s*==\s*([^\s;#]+)\s*(;[^#]*)?(#.*)?")
NOT_PINNED = {"pip", "nborch"}  # the venv's own installer, and the project itself


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(path: Path) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    """(header lines, {name: version} of plain pins, {name: [lines]} of marker pins)."""
    header: list[str] = []
    plain: dict[str, str] = {}
    marked: dict[str, list[str]] = {}
    in_header = True
    for line in path.read_text().splitlines():
        if in_header and (line.startswith("#") or not line.strip()):
            header.append(line)
            continue
        in_header = False
        match = PIN.fullmatch(line.strip())
        if not match:
            continue
        name = canonical(match[1])
        if match[3]:
            marked.setdefault(name, []).append(line.strip())
        else:
            plain[name] = match[2]
    while header and not header[-1].strip():
        header.pop()
    return header, plain, marked


def diff(constraints: str) -> None:
    _, plain, marked = parse(Path(constraints))
    installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    for name in NOT_PINNED:
        installed.pop(name, None)
    changed = [(n, plain[n], v) for n, v in sorted(installed.items()) if n in plain and plain[n] != v]
    new = [(n, v) for n, v in sorted(installed.items()) if n not in plain and n not in marked]
    gone = [(n, v) for n, v in sorted(plain.items()) if n not in installed]
    print(f"{len(changed)} differ from {constraints}, {len(new)} not pinned, "
          f"{len(gone)} pinned but not installed")
    for name, pinned, now in changed:
        print(f"  {name}: {pinned} -> {now}")
    for name, now in new:
        print(f"  {name}: not pinned, {now} installed")
    for name, pinned in gone:
        print(f"  {name}: pinned {pinned}, not installed")


def write(constraints: str, freeze: str) -> None:
    path = Path(constraints)
    header, old, marked = parse(path)
    lines = []
    for line in Path(freeze).read_text().splitlines():
        match = PIN.fullmatch(line.strip())
        if not match or canonical(match[1]) in NOT_PINNED or canonical(match[1]) in marked:
            continue  # `-e ...`, pip itself, and packages pinned by hand with markers
        lines.append(f"{match[1]}=={match[2]}")
    for hand in marked.values():
        lines.extend(hand)
    lines.sort(key=lambda line: line.split("==", 1)[0].lower())  # the order of `pip freeze`
    path.write_text("\n".join([*header, *lines]) + "\n")
    _, new, _ = parse(path)
    changed = sorted(n for n in (new.keys() | old.keys()) - marked.keys() if new.get(n) != old.get(n))
    print(f"{path}: {len(new) + sum(map(len, marked.values()))} pins, {len(changed)} changed")
    for name in changed:
        print(f"  {name}: {old.get(name, '(new)')} -> {new.get(name, '(removed)')}")
    for name in marked:
        print(f"  {name}: kept as written (environment markers)")


def unpinned(constraints: str, report: str) -> None:
    _, plain, marked = parse(Path(constraints))
    data = json.loads(Path(report).read_text())
    missing = []
    for item in data.get("install", []):
        name = canonical(item["metadata"]["name"])
        if name not in plain and name not in marked and name not in NOT_PINNED:
            missing.append(f"{name}=={item['metadata']['version']}")
    if missing:
        print("installed but not pinned on this Python (pin them, with a marker if they are needed "
              "on this version only): " + ", ".join(sorted(missing)))
        sys.exit(1)


if __name__ == "__main__":
    commands = {"diff": diff, "write": write, "unpinned": unpinned}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
