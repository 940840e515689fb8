"""One CLI convention for every ``faceprivacy`` command: the shared options, the help formatter, output
names derived from the input, and the end-of-run summary.

Every package's ``cli.register`` builds its parsers with :func:`command` and calls :func:`add_common`
(``--data``, ``--threads``, ``-q/-v``, accepted before or after the command name) and, when it writes
files, :func:`add_out` (``-o/--out``, optional, default derived from the input and shown in ``--help``).
Handlers end with :class:`Summary` (what was written, 1-3 key numbers, the next command; exit 3 when some
inputs were skipped). Imports nothing heavy, so ``faceprivacy --help`` stays torch-free.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: exit status of a run that finished but skipped some inputs (bad input is 2, like argparse)
EXIT_SKIPPED = 3
#: the shared options' defaults when a command does not choose its own
DEFAULT_THREADS = 2


def _fmt_default(v: Any) -> str:
    if isinstance(v, list | tuple):
        return " ".join(str(x) for x in v)
    return str(v)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps description/epilog line breaks (examples) and appends ``(default: X)`` to every option whose
    default is not already stated in its help text."""

    def __init__(self, prog: str, **kw: Any) -> None:
        kw.setdefault("max_help_position", 32)
        super().__init__(prog, **kw)

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        if action.help is argparse.SUPPRESS or "default" in h.lower():
            return h
        d = action.default
        if d is None or d is False or d == "" or d is argparse.SUPPRESS or isinstance(action, argparse._StoreConstAction):
            return h
        if isinstance(d, list | tuple) and not d:
            return h
        return f"{h} (default: {_fmt_default(d).replace('%', '%%')})".strip()


def command(sub: argparse._SubParsersAction, name: str, help: str, *, examples: Sequence[str] = (),
            description: str | None = None, **kw: Any) -> argparse.ArgumentParser:
    """Add one sub-command with the shared formatter, its description and an epilog of examples."""
    lines = [f"  {e}" if e.startswith("faceprivacy ") else f"    {e}" for e in examples]
    epilog = ("examples:\n" + "\n".join(lines)) if examples else None
    return sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                          epilog=epilog, formatter_class=HelpFormatter, **kw)


def _existing(p: argparse.ArgumentParser, opt: str) -> argparse.Action | None:
    return p._option_string_actions.get(opt)


def add_common(p: argparse.ArgumentParser, *, threads: int = DEFAULT_THREADS, data_help: str | None = None) -> None:
    """``--data``, ``--threads``, ``-q/--quiet`` and ``-v/--verbose`` on a sub-command.

    The same options given before the command name (``faceprivacy -q --threads 1 deface ...``) land in
    ``_top_*`` and :func:`resolve` applies them where the command line left the command's own default. An
    option the command already declares is adopted (its default kept). Calling it twice is a no-op."""
    if "_common_defaults" in p._defaults:
        return
    defaults: dict[str, Any] = {}
    a = _existing(p, "--data")
    if a is None:
        p.add_argument("--data", default=None, metavar="DIR",
                       help=data_help or "datakit folder (default: $FACEPRIVACY_DATA, else ../shared/datakit)")
        defaults["data"] = None
    else:
        defaults["data"] = a.default
        a.help = a.help or "datakit folder"
        if "default" not in a.help:
            a.help += " (default: $FACEPRIVACY_DATA, else ../shared/datakit)"
    a = _existing(p, "--threads")
    if a is None:
        p.add_argument("--threads", type=int, default=threads, metavar="N", help="CPU threads")
        defaults["threads"] = threads
    else:
        defaults["threads"] = a.default
        a.help = "CPU threads"
    if _existing(p, "--quiet") is None:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or stage lines")
    if _existing(p, "--verbose") is None:
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    p.set_defaults(_common_defaults=defaults)


def add_top_level(parser: argparse.ArgumentParser) -> None:
    """The shared options on the top-level parser (before the command name)."""
    parser.add_argument("-v", "--verbose", dest="_top_verbose", action="store_true",
                        help="debug logging and full tracebacks")
    parser.add_argument("-q", "--quiet", dest="_top_quiet", action="store_true", help="no progress bars or stage lines")
    parser.add_argument("--threads", dest="_top_threads", type=int, default=None, metavar="N",
                        help="CPU threads (default: the command's own, shown in its --help)")
    parser.add_argument("--data", dest="_top_data", default=None, metavar="DIR",
                        help="datakit folder (default: $FACEPRIVACY_DATA, else ../shared/datakit)")


def add_out(p: argparse.ArgumentParser, default: Callable[[argparse.Namespace], Any], shown: str, *,
            help: str = "output", type: Callable[[str], Any] = str, dest: str = "out") -> None:
    """``-o/--out``: optional; when absent :func:`resolve` sets it to ``default(args)`` (shown as ``shown``).
    An ``--out`` the command already declares is adopted (its old default is replaced by the derived one)."""
    a = _existing(p, "--out")
    text = f"{help} (default: {shown})"
    if a is not None:
        if "-o" not in a.option_strings and "-o" not in p._option_string_actions:
            a.option_strings.insert(0, "-o")
            p._option_string_actions["-o"] = a
        a.default, a.required, a.help, dest = None, False, text, a.dest
        if a.type is not None:
            type = a.type
    else:
        p.add_argument("-o", "--out", dest=dest, type=type, default=None, metavar="PATH", help=text)
    p.set_defaults(_out_default=(dest, default, type))


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Apply the shared options given before the command name and fill the derived outputs the command line
    left unset (called by ``cli.main``)."""
    defaults = getattr(args, "_common_defaults", {})
    for k in ("data", "threads"):
        top = getattr(args, f"_top_{k}", None)
        if top is not None and getattr(args, k, defaults.get(k)) == defaults.get(k):
            setattr(args, k, top)
    for k in ("verbose", "quiet"):
        setattr(args, k, bool(getattr(args, k, False) or getattr(args, f"_top_{k}", False)))
    spec = getattr(args, "_out_default", None)
    if spec is not None:
        dest, fn, typ = spec
        val = getattr(args, dest, None)
        if val is None:
            setattr(args, dest, typ(str(fn(args))))
            args._out_was_default = True
        elif isinstance(val, str):  # a positional OUTPUT (no type: argparse would convert its SUPPRESS default)
            setattr(args, dest, typ(val))
    return args


def add_deprecated(p: argparse.ArgumentParser, old: str, new_dest: str, **kw: Any) -> None:
    """A hidden old spelling of an option (kept so scripts keep working; not shown in ``--help``)."""
    p.add_argument(old, dest=new_dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


class CommaOrSpaceList(argparse.Action):
    """``--methods a b`` (the convention) that also takes the old ``--algorithms a,b`` spelling."""

    def __call__(self, parser, namespace, values, option_string=None):
        vals = values if isinstance(values, list) else [values]
        setattr(namespace, self.dest, [v.strip() for x in vals for v in str(x).split(",") if v.strip()])


# ---- output names derived from the input -------------------------------------------------------------------

def _strip_suffixes(p: Path) -> tuple[str, str]:
    name = p.name
    for ext in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return p.stem, p.suffix


def derived_path(inp: str | os.PathLike, tag: str, suffix: str | None = None) -> Path:
    """``photo.jpg`` -> ``photo_<tag>.jpg`` (``suffix`` replaces the extension); a folder ``photos/`` ->
    the sibling ``photos_<tag>/`` (never inside the input, so a second run does not read its own output)."""
    p = Path(inp)
    if p.is_dir() or str(inp).endswith(os.sep):
        p = Path(os.path.normpath(p))
        return p.with_name(f"{p.name}_{tag}")
    stem, ext = _strip_suffixes(p)
    return p.with_name(f"{stem}_{tag}{ext if suffix is None else suffix}")


def run_dir(cmd: str, now: _dt.datetime | None = None) -> Path:
    """Folder for a run's report: ``eval_deid_2026-12-07_0245`` (``cmd`` without its ``eval-`` prefix) in the
    current folder."""
    now = now or _dt.datetime.now()
    tag = cmd.removeprefix("eval-").replace("-", "_")
    return Path(f"eval_{tag}_{now:%Y-%m-%d_%H%M}")


def default_run_dir(cmd: str) -> Callable[[argparse.Namespace], Path]:
    return lambda args: run_dir(cmd)


RUN_DIR_SHOWN = "eval_{cmd}_DATE_TIME/ in the current folder"


# ---- end-of-run summary and stage progress ----------------------------------------------------------------

def quiet() -> bool:
    return os.environ.get("FACEPRIVACY_QUIET", "0") == "1"


def stage(i: int, n: int, text: str) -> None:
    """One stage line of a multi-stage job on stderr (``[2/4] re-identification attack``)."""
    if not quiet():
        print(f"[{i}/{n}] {text}", file=sys.stderr, flush=True)


def fmt_number(x: Any) -> str:
    """A number for people: 3 significant digits, ints as ints, None/NaN as 'n/a'."""
    if x is None:
        return "n/a"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if f != f:
        return "n/a"
    if f in (float("inf"), float("-inf")):
        return "inf" if f > 0 else "-inf"
    if f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.3g}" if abs(f) < 1000 else f"{f:,.0f}"


@dataclass
class Summary:
    """The end of every run: what was written, a few key numbers, the next command, what was skipped."""

    title: str
    written: list[str] = field(default_factory=list)
    numbers: list[tuple[str, Any]] = field(default_factory=list)
    next: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    max_listed: int = 5

    def wrote(self, *paths: Any) -> Summary:
        self.written += [str(p) for p in paths if p is not None]
        return self

    def number(self, label: str, value: Any, unit: str = "") -> Summary:
        self.numbers.append((label, f"{fmt_number(value)}{(' ' + unit) if unit else ''}"))
        return self

    def facts(self, d: dict) -> Summary:
        """Nested numbers (a validation report, a config) as short detail lines: ``key: a 0.12, b 3``."""
        for k, v in d.items():
            if isinstance(v, dict):
                flat = ", ".join(f"{kk} {fmt_number(vv)}" for kk, vv in v.items() if not isinstance(vv, dict | list))
                self.details.append(f"{k}: {flat}")
            else:
                self.details.append(f"{k}: {fmt_number(v)}")
        return self

    def then(self, cmd: str) -> Summary:
        self.next.append(cmd)
        return self

    def text(self) -> str:
        out = [self.title]

        def block(label: str, items: Sequence[str]) -> None:
            shown = list(items[: self.max_listed])
            if len(items) > self.max_listed:
                shown.append(f"... and {len(items) - self.max_listed} more")
            for j, it in enumerate(shown):
                out.append(f"  {label if j == 0 else '':<9} {it}")

        block("wrote", self.written)
        for label, v in self.numbers:
            out.append(f"  {label}: {v}")
        out += [f"  {d.strip()}" for d in self.details]
        if self.skipped:
            block(f"skipped {len(self.skipped)}", self.skipped)
        for n in self.notes:
            out.append(f"  note: {n}")
        block("next", self.next)
        return "\n".join(out)

    def print(self, file: Any = None) -> int:
        """Print the summary (stdout) and return the exit status: 3 when inputs were skipped, else 0."""
        print(self.text(), file=file or sys.stdout, flush=True)
        return EXIT_SKIPPED if self.skipped else 0
