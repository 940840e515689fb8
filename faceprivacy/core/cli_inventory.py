"""Inventory of the CLI surface: options without help, hidden defaults, differing names, missing shared
options and commands without an example. The goal for every count is 0 (``tests/test_cli_surface.py``).

``python -m faceprivacy.core.cli_inventory [--json] [--list]``. The module imports only the CLI parser, so the
same file can be run against an older checkout (``PYTHONPATH=OLD python path/to/cli_inventory.py``) for a
before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import sys

#: option spellings that name something another command spells differently (canonical name on the right)
NON_CANONICAL = {
    "--generator-path": "--generator-weights",
    "--weights": "--generator-weights / --reface-weights",
    "--recognizers": "--embedders",
    "--algorithms": "--methods",
}
#: options every command accepts (before or after the command name)
SHARED = ("--data", "--threads", "--quiet", "--verbose")
#: commands that write no files need no --out
NO_OUT = {"verify", "fed-client", "fed-server", "serve"}


def _is_list(a: argparse.Action) -> bool:
    return a.nargs in ("+", "*") or isinstance(a.nargs, int) and a.nargs > 1


def _meaningful_default(a: argparse.Action) -> bool:
    if a.default is None or a.default is False or a.default == "" or a.default is argparse.SUPPRESS \
            or a.help is argparse.SUPPRESS:
        return False
    if isinstance(a, argparse._StoreConstAction | argparse._HelpAction | argparse._VersionAction):
        return False
    return not (isinstance(a.default, list | tuple) and not a.default)


def _rendered_help(parser: argparse.ArgumentParser, a: argparse.Action) -> str:
    fmt = parser._get_formatter()
    try:
        return fmt._expand_help(a) if a.help else ""
    except (ValueError, TypeError, KeyError):
        return a.help or ""


def inventory(parser: argparse.ArgumentParser) -> dict:
    """Walk every sub-command of ``parser`` and list what falls short of the CLI convention."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = dict(subs[0].choices) if subs else {}
    res: dict = {"commands": len(commands), "options": 0, "no_help": [], "hidden_default": [],
                 "differing_names": [], "missing_shared": [], "no_example": [], "no_out": []}
    kinds: dict[str, set] = {}
    for name, p in commands.items():
        opts = set()
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            opts.update(a.option_strings)
            if a.help is argparse.SUPPRESS:
                continue  # hidden deprecated alias
            res["options"] += 1
            label = f"{name} {'/'.join(a.option_strings) or a.dest}"
            if not (a.help or "").strip():
                res["no_help"].append(label)
            if _meaningful_default(a) and "default" not in _rendered_help(p, a).lower():
                res["hidden_default"].append(label)
            for s in a.option_strings:
                if s in NON_CANONICAL:
                    res["differing_names"].append(f"{name} {s} (use {NON_CANONICAL[s]})")
                if s.startswith("--") and a.nargs != 0:
                    kinds.setdefault(s, set()).add(_is_list(a))
            if "comma" in (a.help or "").lower():
                res["differing_names"].append(f"{label} (comma list: use space-separated values)")
        for s in SHARED:
            if s not in opts:
                res["missing_shared"].append(f"{name} {s}")
        if name not in NO_OUT and "--out" not in opts:
            res["no_out"].append(name)
        if "example" not in (p.epilog or "").lower():
            res["no_example"].append(name)
    for s, k in sorted(kinds.items()):
        if len(k) > 1:
            res["differing_names"].append(f"{s} (one value in some commands, a list in others)")
    return res


COUNTS = ("no_help", "hidden_default", "differing_names", "missing_shared", "no_example", "no_out")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faceprivacy.core.cli_inventory", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the whole inventory as JSON")
    ap.add_argument("--list", action="store_true", help="list every finding, not only the counts")
    args = ap.parse_args(argv)
    from faceprivacy.cli import build_parser

    res = inventory(build_parser())
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['commands']} commands, {res['options']} visible options/positionals")
    for k in COUNTS:
        print(f"  {k:<16} {len(res[k])}")
        if args.list:
            for item in res[k]:
                print(f"      {item}")
    return 0 if not any(res[k] for k in COUNTS) else 1


if __name__ == "__main__":
    sys.exit(main())
