"""Check that the venv holds exactly what requirements.lock pins (catches a lock that pyproject.toml outgrew:
a dependency added to pyproject.toml but not locked). Exit 1 with the list of differences."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pins(lock: Path) -> dict[str, str]:
    """name -> pinned version of every ``name==version`` line of a pip-compile/uv lock file."""
    out = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", line)
        if m:
            out[canonicalize_name(m.group(1).split("[")[0])] = m.group(2)
    return out


def main(argv: list[str]) -> int:
    lock = Path(argv[1] if len(argv) > 1 else "requirements.lock")
    pinned = pins(lock)
    problems = []
    for req in metadata.requires("faceprivacy") or []:
        r = Requirement(req)
        if r.marker and not r.marker.evaluate({"extra": "dev"}):
            continue
        name = canonicalize_name(r.name)
        if name not in pinned:
            problems.append(f"{r.name}: in pyproject.toml but not in {lock} (run `make lock`)")
        elif not r.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{r.name}: {lock} pins {pinned[name]}, pyproject.toml wants {r.specifier} (run `make lock`)")
    for name, ver in pinned.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}=={ver} is locked but not installed")
            continue
        if have != ver:
            problems.append(f"{name}: installed {have}, locked {ver}")
    for p in problems:
        print(f"lock check: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
