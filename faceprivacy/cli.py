"""``faceprivacy <command>``: one thin CLI. Each package contributes its commands through a
``register(subparsers)`` function in its own ``cli.py``, so systems stay independent of each other; the shared
options, help format, output names and end-of-run summary live in ``core/options.py``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .core.errors import FacePrivacyError
from .core.options import HelpFormatter, add_common, add_top_level, resolve

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

#: how ``faceprivacy --help`` groups the commands (a command not listed here lands in "other")
GROUPS = (
    ("protect", ("anonymize", "recover", "serve", "deface", "unlearn")),
    ("audit", ("audit-embeddings", "mri-audit", "verify", "detect", "embed")),
    ("train & evaluate", ("eval-deid", "eval-detection", "eval-video", "eval-verification", "eval-generator", "eval-unlearning", "eval-deface", "train-deid",
                          "train-deid-surrogate", "train-generator")),
    ("federated", ("fed-simulate", "fed-server", "fed-client")),
)

DESCRIPTION = """\
Privacy tools for face data: photos, face embeddings, head MRI, and the models trained on them.

  protect   replace faces with keyed strangers (recoverable with the passphrase), deface head MRI,
            make a trained model forget a person from one photo
  audit     measure what embeddings and defaced scans still reveal (attribute probes, inversion,
            re-identification), each as a JSON + HTML report with a verdict on top
  evaluate  the same measurements on held-out people, with n and 95 % intervals
  federate  train a face recognizer across clients that each hold one person (FedFace on Flower)

Every command takes -o/--out (default derived from the input), --data, --threads, -q and -v, before or
after the command name, and ends with a summary: what it wrote, key numbers, and what to run next."""

EPILOG_HEAD = """\
examples:
  faceprivacy anonymize photos/                 # -> photos_anonymized/
  faceprivacy deface head.nii.gz                # -> head_defaced.nii.gz
  faceprivacy mri-audit bids/                   # deface, attack, report (JSON + HTML)
  faceprivacy COMMAND --help                    # options, defaults and examples of one command
"""


class _TopFormatter(HelpFormatter):
    """Hides the flat list of sub-commands (the grouped list is in the epilog)."""

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return ""
        return super()._format_action(action)


def _grouped_commands(sub: argparse._SubParsersAction) -> str:
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    seen: set[str] = set()
    lines = []
    for title, names in (*GROUPS, ("other", tuple(sorted(helps)))):
        rows = [n for n in names if n in helps and n not in seen]
        if not rows:
            continue
        lines.append(f"{title}:")
        for n in rows:
            seen.add(n)
            lines.append(f"  {n:<22}{helps[n]}")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every package's sub-commands."""
    parser = argparse.ArgumentParser(prog="faceprivacy", description=DESCRIPTION, formatter_class=_TopFormatter)
    parser.add_argument("--version", action="version", version=f"faceprivacy {__version__}")
    add_top_level(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in COMMAND_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        mod.register(sub)
    for p in sub.choices.values():
        add_common(p)  # no-op for commands that already called it; the rest get the shared options
        p.formatter_class = HelpFormatter if p.formatter_class is argparse.HelpFormatter else p.formatter_class
    parser.epilog = "commands:\n" + _grouped_commands(sub) + "\n" + EPILOG_HEAD
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2; bugs keep their traceback."""
    parser = build_parser()
    args = resolve(parser.parse_args(argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        os.environ["FACEPRIVACY_QUIET"] = "1"
    if getattr(args, "threads", None):  # libraries imported later (torch, numpy BLAS) start with this many
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(args.threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(args.threads)
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
