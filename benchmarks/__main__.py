"""Run every ``benchmarks/bench_*.py`` module's ``run(data_root, out_dir) -> dict`` and write JSON."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

from faceprivacy.core.fileio import atomic_write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--out", default="out/bench")
    ap.add_argument("--only", nargs="*", help="benchmark module names (e.g. bench_core)")
    args = ap.parse_args()
    out = Path(args.out)
    results = {}
    pkg_dir = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(pkg_dir)]) if m.name.startswith("bench_"))
    for name in names:
        if args.only and name not in args.only:
            continue
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = mod.run(Path(args.data), out)
        except Exception as e:  # one failing benchmark must not hide the others
            print(f"   FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name + "_wall_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "bench.json", results)
    print(f"wrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
