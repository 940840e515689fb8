"""Atomic output helpers: results are written to temp files in the target folder, flushed to disk (fsync)
and renamed, so a crash never leaves a half-written file and inputs are never touched.

* ``atomic_path`` / ``atomic_write_*``: one file.
* ``atomic_files``: several files that belong together (image + sidecar, model + record, NIfTI + JSON).
  Every temp file is written and fsynced before the first rename, the renames follow the caller's order
  (write the file that *points at* the others last), and the folder is fsynced after them. Rename is
  atomic per file, not across files: a kill between two renames can leave the new first file beside an
  old second one, so writers tie the files with a record id (``deid.pipeline`` does) and readers check it.
* Temp files are named ``.<dest name>.<pid>.<random>.tmp<suffix>``; one left behind by a killed process
  (its pid no longer running) is removed by the next write to the same destination.
* Unusable destinations (parent is a file, unwritable folder, destination is a folder) raise
  ``InputError`` with one clear line instead of an ``OSError`` traceback; ``check_output`` does the same
  checks up front, before a command spends minutes computing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file (or would, once created): symlinks, hard links, ``..``."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(dest: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *,
                 folder: bool = False) -> Path:
    """Refuse an output path that would overwrite an input or cannot be written; returns it as a Path.

    ``folder``: ``dest`` is an output folder (may exist as a folder), else a file (must not be a folder).
    """
    dest = Path(dest)
    for i in inputs:
        if same_file(i, dest):
            raise InputError(f"output {dest} is the input {i}: originals are never overwritten")
    if not folder and dest.is_dir():
        raise InputError(f"output {dest} is a folder; give a file name")
    if folder and dest.exists() and not dest.is_dir():
        raise InputError(f"output folder {dest} exists and is not a folder")
    # the nearest existing ancestor must be a writable folder
    anc = dest if folder else dest.parent
    anc = Path(os.path.abspath(anc))
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"cannot write {dest}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {dest}: folder {anc} is not writable")
    return dest


def _oserror(dest: Path, e: OSError) -> InputError:
    return InputError(f"cannot write {dest}: {e.strerror or e}")


def _mkparent(dest: Path) -> None:
    if dest.is_dir():
        raise InputError(f"output {dest} is a folder; give a file name")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"cannot write {dest}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise _oserror(dest, e) from None


def _sweep_stale(dest: Path) -> None:
    """Remove temp files of ``dest`` left by processes that no longer run (killed mid-write)."""
    with contextlib.suppress(OSError):
        for p in dest.parent.glob(f".{glob_escape(dest.name)}.*.tmp*"):
            parts = p.name[len(dest.name) + 2:].split(".")
            if not parts or not parts[0].isdigit():
                continue
            pid = int(parts[0])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    p.unlink()
            except PermissionError:
                pass


def glob_escape(name: str) -> str:
    """Escape glob metacharacters in a file name."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _mktemp(dest: Path, suffix: str | None) -> Path:
    sfx = suffix if suffix is not None else "".join(dest.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=f".tmp{sfx}", dir=dest.parent)
    except OSError as e:
        raise _oserror(dest, e) from None
    os.close(fd)
    return Path(tmp)


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened/fsynced
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_files(dests: Sequence[str | os.PathLike],
                 suffixes: Sequence[str | None] | None = None) -> Iterator[list[Path]]:
    """Yield temp paths beside each of ``dests``; on success all are fsynced, then renamed onto ``dests``
    in order, then the folders are fsynced. On any error every temp file is removed and no dest changes."""
    paths = [Path(d) for d in dests]
    if len({os.path.abspath(p) for p in paths}) != len(paths):
        raise InputError("two outputs of one write name the same file")
    sfx = list(suffixes) if suffixes is not None else [None] * len(paths)
    tmps: list[Path] = []
    try:
        for d, s in zip(paths, sfx, strict=True):
            _mkparent(d)
            _sweep_stale(d)
            tmps.append(_mktemp(d, s))
        yield list(tmps)
        mode = _umask_mode()
        try:
            for t in tmps:
                _fsync_file(t)
                os.chmod(t, mode)  # mkstemp makes 0600 files; give the permissions a plain open() would
            for t, d in zip(tmps, paths, strict=True):
                os.replace(t, d)
        except IsADirectoryError:
            raise InputError(f"output {d} is a folder; give a file name") from None
        except OSError as e:
            raise _oserror(d, e) from None
        for parent in {d.parent for d in paths}:
            _fsync_dir(parent)
    except BaseException:
        for t in tmps:
            with contextlib.suppress(OSError):
                t.unlink()
        raise


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is fsynced and renamed onto ``dest``,
    on error removed."""
    with atomic_files([dest], [suffix]) as (tmp,):
        yield tmp


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    with atomic_path(dest) as tmp:
        _write(dest, tmp, data)
    return Path(dest)


def atomic_write_many(items: Sequence[tuple[str | os.PathLike, bytes]]) -> list[Path]:
    """Write several files as one unit (see ``atomic_files``); renamed in the order given."""
    with atomic_files([d for d, _ in items]) as tmps:
        for (d, data), t in zip(items, tmps, strict=True):
            _write(d, t, data)
    return [Path(d) for d, _ in items]


def _write(dest: str | os.PathLike, tmp: Path, data: bytes) -> None:
    try:
        tmp.write_bytes(data)
    except OSError as e:
        raise _oserror(Path(dest), e) from None


def atomic_write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(dest: str | os.PathLike, obj: Any) -> Path:
    """Write an object as indented, valid JSON atomically (numpy/paths converted, NaN/Infinity -> null)."""
    from .jsonio import dumps  # strict JSON: NaN/Infinity become null

    return atomic_write_text(dest, dumps(obj, indent=2) + "\n")
