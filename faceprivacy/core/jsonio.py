"""The one JSON writer: strict, valid JSON only. NaN and +-Infinity (which ``json.dumps`` writes as the
invalid tokens ``NaN``/``Infinity``) become ``null``; numpy scalars/arrays, paths, sets and tuples become
their plain JSON forms. Every results file goes through :func:`dumps` (``fileio.atomic_write_json``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` made of dict/list/str/int/float/bool/None only, with non-finite floats as None."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, str | int | float | bool) else k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [json_safe(v) for v in obj]
    if isinstance(obj, PurePath | os.PathLike):
        return os.fspath(obj)
    mod = type(obj).__module__
    if mod == "numpy" or mod.startswith("numpy."):
        if hasattr(obj, "tolist"):
            return json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # torch scalars and the like
        try:
            return json_safe(obj.item())
        except (TypeError, ValueError):
            pass
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = 2, **kw: Any) -> str:
    """Strict JSON text of ``obj`` (``allow_nan=False`` after :func:`json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, **kw)
