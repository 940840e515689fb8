"""Pool the "two keys verified as one person" results of several ``eval-deid`` runs of the same probes.

Each run draws fresh record salts, so each run's two keys are a new pair of strangers for every face; the
same code on the same 95 faces gave 8.4, 13.7 and 18.9 % in three runs. One run's identity-bootstrap
interval covers the people, not the keys. Pooling runs puts every key pair of every run behind one rate,
whose interval still resamples people (all of a person's pairs, from every run, stay together).

It also asks whether linkage is a property of the face or of the key pair: the number of faces linked in
k of the runs, against what independent runs with the same per-run rates would give. If the same faces
linked in every run, their surroundings would be the cause; if they link independently, the strangers are.

``python -m faceprivacy.deid.evaluation.pool RUN_A/eval_deid.json RUN_B/eval_deid.json [--method donor]
[--protocol frames] [--out pooled.json]``

Runs are refused (one line, exit 2) unless they hold the method and protocol with per-probe two-key
cosines (``two_keys_cos``, recorded since run 11), the same probe photos (compared by the path below the
data root) and the same thresholds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ...core.errors import InputError

RECOGNIZERS = ("mobilefacenet-onnx", "dlib", "mobilefacenet")


def _rel(path: str) -> str:
    """A probe path below its data root (runs on other machines store other roots)."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("images") - 1:]) if "images" in parts else "/".join(parts[-3:])


def _person(path: str) -> str:
    return Path(path).parent.name


def _load(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable eval-deid JSON ({e.__class__.__name__})") from None
    if not isinstance(d, dict) or "protocols" not in d or "probe_paths" not in d or "thresholds" not in d:
        raise InputError(f"{path}: not an eval-deid result (no protocols / probe_paths / thresholds)")
    return d


def pool_two_keys(runs: list[dict], names: list[str], method: str = "donor", protocol: str = "frames") -> dict:
    """The pooled result (module doc) of eval-deid result dicts ``runs`` (``names`` label them)."""
    from ...core.metrics import rate_with_ci

    if len(runs) < 2:
        raise InputError("pooling needs at least two runs")
    probes = [_rel(p) for p in runs[0]["probe_paths"]]
    people = np.array([_person(p) for p in probes])
    out: dict = {"method": method, "protocol": protocol, "runs": names, "n_probes": len(probes),
                 "n_people": int(np.unique(people).size), "recognizers": {}}
    for name, d in zip(names, runs, strict=True):
        if [_rel(p) for p in d["probe_paths"]] != probes:
            raise InputError(f"{name}: other probe photos than {names[0]}")
        if method not in d["protocols"].get(protocol, {}):
            raise InputError(f"{name}: no {protocol}/{method} result")
    for rec in RECOGNIZERS:
        hits, per_run = [], {}
        for name, d in zip(names, runs, strict=True):
            idm = d["protocols"][protocol][method]["identity"].get(rec)
            if idm is None or "two_keys_cos" not in idm:
                break
            thr = d["thresholds"][rec]
            if abs(thr - runs[0]["thresholds"][rec]) > 1e-6:
                raise InputError(f"{name}: another {rec} threshold ({thr:.4f}) than {names[0]}")
            cos = np.asarray(idm["two_keys_cos"], np.float64)
            if len(cos) % len(probes):
                raise InputError(f"{name}: {len(cos)} two-key cosines for {len(probes)} probes")
            h = (cos >= thr).reshape(-1, len(probes))  # (key pairs, probes)
            hits.append(h)
            per_run[name] = float(h.mean())
        else:
            h = np.concatenate(hits)
            k = np.concatenate([x.sum(0, keepdims=True) for x in hits]).sum(0)  # per face: links over all pairs
            p = np.concatenate([x.mean(1) for x in hits])  # per key pair set: its rate
            # faces linked in exactly k of the m pair sets, if each set linked faces independently at its own rate
            m = len(p)
            dist = np.ones(1)
            for q in p:
                dist = np.convolve(dist, [1 - q, q])
            out["recognizers"][rec] = {
                "threshold": runs[0]["thresholds"][rec],
                "pooled": rate_with_ci(h.reshape(-1), np.tile(people, h.shape[0])),
                "per_run": per_run,
                "faces_linked_k_times": np.bincount(k, minlength=m + 1).tolist(),
                "expected_if_independent": [round(float(v) * len(probes), 2) for v in dist],
            }
    if not out["recognizers"]:
        raise InputError("no recognizer has per-probe two-key cosines in every run (recorded since run 11)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pool eval-deid runs' two-keys results (module doc)")
    ap.add_argument("runs", type=Path, nargs="+", help="eval_deid.json of each run")
    ap.add_argument("--method", default="donor")
    ap.add_argument("--protocol", default="frames", choices=("frames", "aligned"))
    ap.add_argument("--out", type=Path, default=None, help="write the pooled result as JSON")
    a = ap.parse_args(argv)
    try:
        if a.out is not None and any(a.out.resolve() == r.resolve() for r in a.runs):
            raise InputError(f"--out {a.out} is one of the inputs")
        res = pool_two_keys([_load(r) for r in a.runs], [str(r) for r in a.runs], a.method, a.protocol)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for rec, r in res["recognizers"].items():
        p = r["pooled"]
        print(f"{rec}: two keys {p['value']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] n={p['n']} "
              f"({p['n_ids']} people); per run {', '.join(f'{v:.3f}' for v in r['per_run'].values())}; faces "
              f"linked 0..{len(r['faces_linked_k_times']) - 1} times {r['faces_linked_k_times']} (independent: "
              f"{r['expected_if_independent']})")
    if a.out is not None:
        from ...core.fileio import atomic_write_bytes

        atomic_write_bytes(a.out, json.dumps(res, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
