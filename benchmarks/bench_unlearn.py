"""Seconds per unlearning request (support-only methods, K = 5) vs retraining from scratch, on CPU with
2 threads, measured in the same run, for both tasks: the first task's pixel CNN (retraining timed for
``retrain_epochs`` epochs and scaled to the full recipe when that is fewer, said so in the output) and the second
task's identity head on dlib descriptors (its full 100-epoch retraining is timed, not extrapolated; the
descriptors are computed once before, as in the evaluation)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def run(data_root: Path, out_dir: Path, retrain_epochs: int | None = None, k: int = 5,
        repeats: int = 5) -> dict:
    """Time each support-only method on one K-identity request and (partial) retraining; return ratios."""
    import torch

    from faceprivacy.core.fileio import atomic_write_json
    from faceprivacy.core.paths import weights_dir
    from faceprivacy.unlearn.data import load_task_data, make_request
    from faceprivacy.unlearn.metaloss import load_metaloss
    from faceprivacy.unlearn.model import TrainConfig, load_model, to_float, train_model

    torch.set_num_threads(int(os.environ.get("FACEPRIVACY_BENCH_THREADS", "2")))
    if retrain_epochs is None:
        retrain_epochs = int(os.environ.get("FACEPRIVACY_BENCH_RETRAIN_EPOCHS", "2"))
    td = load_task_data(data_root)
    model = load_model(weights_dir() / "unlearn_taskcnn.pt")
    meta, extra = load_metaloss(weights_dir() / "unlearn_metaloss.pt")
    req = make_request(td, k, seed=0)
    xs = to_float(td.x[req.support])
    ys = torch.as_tensor(td.y[req.support], dtype=torch.long)
    out: dict = {"k": k, "threads": torch.get_num_threads(), "methods": {}}
    out["methods"] = _time_methods(model, xs, ys, meta, extra, repeats)
    full_epochs = TrainConfig().epochs
    t0 = time.perf_counter()
    train_model(td.x[req.retain], td.y[req.retain], TrainConfig(epochs=retrain_epochs), desc="bench retrain")
    t_meas = time.perf_counter() - t0
    t_full = t_meas * full_epochs / retrain_epochs
    out["retrain"] = {"epochs_timed": retrain_epochs, "seconds_timed": t_meas, "full_epochs": full_epochs,
                      "seconds_full": t_full, "extrapolated": retrain_epochs < full_epochs}
    for name, r in out["methods"].items():
        r["speedup_vs_retrain"] = t_full / max(r["seconds_median"], 1e-9)
        print(f"   {name:<20} {r['seconds_median']:.4f} s/request  ({r['speedup_vs_retrain']:.0f}x faster than "
              f"retraining {t_full:.1f} s{' extrapolated' if t_full != t_meas else ''})")
    if os.environ.get("FACEPRIVACY_BENCH_UNLEARN_IDENTITY", "1") != "0":
        out["identity"] = _identity(data_root, k, repeats)
    atomic_write_json(Path(out_dir) / "bench_unlearn.json", out)
    return out


def _time_methods(model, xs, ys, meta, extra: dict, repeats: int) -> dict:
    """Median wall seconds of one request for every support-only method (after one warm-up call)."""
    from faceprivacy.unlearn.methods import SUPPORT_ONLY, UnlearnContext, get_method

    out = {}
    for name in SUPPORT_ONLY:
        fn, _ = get_method(name)
        ctx = UnlearnContext(meta=meta, eta=float(extra.get("eta", 1.0)), seed=0)
        fn(model, xs, ys, ctx)  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(model, xs, ys, ctx)
            ts.append(time.perf_counter() - t0)
        out[name] = {"seconds_median": float(np.median(ts))}
    return out


def _identity(data_root: Path, k: int, repeats: int) -> dict:
    """Second task: support-only methods on the bundled identity head vs one full retraining of that head."""
    import torch

    from faceprivacy.core.paths import weights_dir
    from faceprivacy.unlearn.data import load_task_data, make_request
    from faceprivacy.unlearn.metaloss import load_metaloss
    from faceprivacy.unlearn.model import TrainConfig, load_model, to_float, train_model

    t0 = time.perf_counter()
    td = load_task_data(data_root, task="identity", embedder="dlib")
    t_desc = time.perf_counter() - t0
    model = load_model(weights_dir() / "unlearn_idhead.pt")
    meta, extra = load_metaloss(weights_dir() / "unlearn_idhead_metaloss.pt")
    req = make_request(td, k, seed=0)
    xs = to_float(td.x[req.support])
    ys = torch.as_tensor(td.y[req.support], dtype=torch.long)
    res: dict = {"k": k, "descriptor_extraction_s": t_desc, "methods": {}}
    res["methods"] = _time_methods(model, xs, ys, meta, extra, repeats)
    tc = TrainConfig(epochs=100, label_smoothing=0.1, seed=1)
    t0 = time.perf_counter()
    train_model(td.x[req.retain], td.y[req.retain], tc, model.cfg, desc="bench retrain (identity head)")
    t_ret = time.perf_counter() - t0
    res["retrain"] = {"epochs": tc.epochs, "seconds": t_ret, "extrapolated": False}
    for name, r in res["methods"].items():
        r["speedup_vs_retrain"] = t_ret / max(r["seconds_median"], 1e-9)
        print(f"   identity {name:<20} {r['seconds_median']:.4f} s/request  ({r['speedup_vs_retrain']:.0f}x faster "
              f"than retraining the head, {t_ret:.1f} s measured)")
    return res


if __name__ == "__main__":
    import sys

    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datakit"), Path("out/bench")))
