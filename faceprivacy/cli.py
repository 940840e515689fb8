"""``faceprivacy <command>``: one thin CLI. Each package contributes its commands through a
``register(subparsers)`` function in its own ``cli.py``, so systems stay independent of each other."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .core.errors import FacePrivacyError

#: packages whose ``cli.register`` adds sub-commands (a package without cli.py is skipped)
COMMAND_MODULES = (
    "faceprivacy.core.cli",
    "faceprivacy.models.cli",
    "faceprivacy.deid.cli",
    "faceprivacy.audit.cli",
    "faceprivacy.mri.cli",
    "faceprivacy.federated.cli",
    "faceprivacy.unlearn.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every package's sub-commands."""
    parser = argparse.ArgumentParser(prog="faceprivacy", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in COMMAND_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2; bugs keep their traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        os.environ["FACEPRIVACY_QUIET"] = "1"
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except FacePrivacyError as e:
        if args.verbose:
            raise
        lines = str(e).strip().splitlines() or [type(e).__name__]  # one line, even for multi-line causes
        print(f"error: {lines[0]}" + (" (details with -v)" if len(lines) > 1 else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
