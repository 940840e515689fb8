"""Progress bars for long jobs (tqdm to stderr; silenced with FACEPRIVACY_QUIET=1 or disable=True)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(it: Iterable[T], desc: str = "", total: int | None = None, disable: bool | None = None,
             unit: str = "it") -> Iterable[T]:
    """Wrap an iterable in a progress bar unless quiet mode is on."""
    if disable is None:
        disable = os.environ.get("FACEPRIVACY_QUIET", "0") == "1"
    return tqdm(it, desc=desc, total=total, disable=disable, unit=unit, leave=False, dynamic_ncols=True)
