"""Leave-one-head-out evaluation of the refacing attack:
``python -m faceprivacy.mri.loho --data DATAKIT --out OUT [--steps N]``.

For each real person in the datakit, the refacing U-Net is trained on the *other* people's heads only;
the held-out person's scans are then defaced with each defacer (mask, shear, reface), attacked with that
U-Net and with the average-face baseline, and the face-region surface MSD (mm) to the original is scored.
Reported per defacer: mean ± sd over the held-out people, with n. Colin27's two scans (ch2 at 1 mm and
SPM's 2 mm copy) are one person: they are held out together and their MSDs are averaged into one value.

The pydeface mean head is a population average, and it is also the attacker's (and the defacers')
template: when it is held out, the average-face baseline is the held-out head itself (MSD ~0 by
construction). The summary therefore gives both all people (n = 3) and the individuals only (n = 2)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from .attack import attack, baseline_average_face, candidate_bank, fov_box, head_to_box, to_box, train_reface
from .audit import msd_against
from .deface import deface
from .io import Volume, load_volume
from .register import Registration, register_affine
from .surface import face_region_for_msd, head_mask
from .template import Template, load_template

#: person -> scans (relative to ``DATA/mri_heads``); "TEMPLATE" = the pydeface mean head
PEOPLE: dict[str, tuple[str, ...]] = {
    "pydeface_mean": ("TEMPLATE",),
    "colin27": ("colin27_ch2_mricron/ch2.nii.gz", "colin27_spm12_2mm/single_subj_T1.nii"),
    "chris": ("chris_t1_mricron/chris_t1.nii.gz",),
}
DEFACERS = ("mask", "shear", "reface")


def training_boxes(boxes: dict[str, tuple[np.ndarray, np.ndarray]], people: dict[str, tuple[str, ...]],
                   held_out: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stack the face boxes of every scan that does *not* belong to ``held_out``: (scan names, heads,
    fovs). Raises if a held-out scan would end up in the training set (a scan listed under two people)."""
    held = set(people[held_out])
    names = [s for p, scans in people.items() if p != held_out for s in scans]
    if held & set(names):
        raise ValueError(f"scans {sorted(held & set(names))} belong to the held-out person {held_out}")
    if not names:
        raise ValueError("no training heads left")
    return names, np.stack([boxes[n][0] for n in names]), np.stack([boxes[n][1] for n in names])


def _load(root: Path, rel: str, tpl: Template) -> Volume:
    return tpl.head if rel == "TEMPLATE" else load_volume(root / rel)


def _box(vol: Volume, tpl: Template, rel: str) -> tuple[np.ndarray, np.ndarray]:
    if rel == "TEMPLATE":
        ident = Registration(np.eye(4), 0.0, 0.0, "identity")
        return to_box(vol, ident), fov_box(vol, ident)
    bh = head_to_box(vol, tpl)
    return bh.box, bh.fov


def evaluate_scan(vol: Volume, tpl: Template, net, seed: int = 0) -> dict:
    """Deface ``vol`` with each defacer, attack it, and score face-region MSD (mm) for defaced /
    U-Net attacked / average-face baseline."""
    reg = register_affine(vol, tpl.head, "fast", seed=seed)
    omask = head_mask(vol.data)
    region = None
    out: dict = {}
    for m in DEFACERS:
        r = deface(vol, tpl, method=m, registration=reg, check_brain=False)
        if region is None:
            region = face_region_for_msd(r.face_region, vol) & (vol.data >= 0)
        dv = vol.with_data(r.data)
        states = {"defaced": r.data}
        if m != "reface":
            att, filled, reg_d = attack(dv, tpl, net)
            base, _ = baseline_average_face(dv, tpl, reg_d)
            states["attacked"], states["baseline_avgface"] = att, base
        msd = msd_against(vol, omask, states, region)
        out[m] = {k: round(v["msd"], 4) for k, v in msd.items()}
    return out


def summarise(per_person: dict[str, dict], people: list[str]) -> dict:
    """mean ± sd (sample sd) over ``people`` of each defacer/state MSD."""
    res: dict = {}
    for m in DEFACERS:
        for st in ("defaced", "attacked", "baseline_avgface"):
            vals = [per_person[p][m][st] for p in people if st in per_person[p][m]]
            if not vals:
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            res.setdefault(m, {})[st] = {"n": len(vals), "mean": round(float(np.mean(vals)), 3),
                                         "sd": round(sd, 3), "values": vals}
    return res


def markdown(result: dict) -> str:
    """The summary tables as markdown."""
    lines = [f"Leave-one-head-out refacing attack ({result['steps']} U-Net steps per fold, "
             f"batch {result['batch']}, {result['threads']} threads, "
             f"{'template-face prior' if result.get('prior') else 'no prior'}, seed {result['seed']}; "
             f"wall {result['wall_s']:.0f} s). Face-region surface MSD (mm) to the original, "
             "mean ± sd over held-out people (lower = closer to the real face).", ""]
    for title, key in (("All people (the pydeface mean included)", "all"), ("Individuals only", "individuals")):
        s = result["summary"][key]
        lines += [f"**{title}**", "", "| defacer | n | defaced | U-Net attack | average-face baseline |",
                  "|---|---|---|---|---|"]
        for m in DEFACERS:
            row = s.get(m, {})

            def f(st: str, row=row) -> str:
                v = row.get(st)
                return "n/a" if v is None else (f"{v['mean']:.2f} ± {v['sd']:.2f}" if v["n"] > 1 else f"{v['mean']:.2f}")
            n = row.get("defaced", {}).get("n", 0)
            lines.append(f"| {m} | {n} | {f('defaced')} | {f('attacked')} | {f('baseline_avgface')} |")
        lines.append("")
    lines += ["Per held-out person (Colin27 = mean of its two scans):", "",
              "| held out | trained on | defacer | defaced | U-Net attack | average-face baseline |",
              "|---|---|---|---|---|---|"]
    for p, fold in result["folds"].items():
        for m in DEFACERS:
            v = result["per_person"][p][m]
            lines.append(f"| {p} | {', '.join(fold['train_scans'])} | {m} | {v['defaced']:.2f} | "
                         f"{v.get('attacked', float('nan')):.2f} | {v.get('baseline_avgface', float('nan')):.2f} |")
    return "\n".join(lines).replace("nan", "n/a") + "\n"


def run(data_root: str | Path, out_dir: str | Path, steps: int = 150, batch: int = 2, slices: int = 64,
        threads: int = 2, seed: int = 0, ch: int = 16, prior: bool = False) -> dict:
    """The whole leave-one-head-out run; writes ``loho.json`` and ``loho.md`` under ``out_dir``.
    ``prior``: the U-Net predicts a residual on the template face box (as the committed weights do); the
    template is the attacker's, so in the fold that holds out the pydeface mean the prior *is* that head."""
    from ..core.fileio import atomic_write_json, atomic_write_text

    t0 = time.perf_counter()
    root = Path(data_root) / "mri_heads"
    tpl = load_template(data_root)
    vols = {rel: _load(root, rel, tpl) for scans in PEOPLE.values() for rel in scans}
    boxes = {rel: _box(v, tpl, rel) for rel, v in vols.items()}
    cands = candidate_bank(tpl)
    print(f"prepared {len(boxes)} head boxes in {time.perf_counter() - t0:.0f}s", flush=True)
    folds: dict = {}
    per_scan: dict = {}
    for person, scans in PEOPLE.items():
        names, heads, fovs = training_boxes(boxes, PEOPLE, person)
        net, log = train_reface(heads, cands, fovs, steps=steps, batch=batch, seed=seed, ch=ch, slices=slices,
                                threads=threads, log_every=50, prior=boxes["TEMPLATE"][0] if prior else None)
        folds[person] = {"held_out_scans": list(scans), "train_scans": names, "steps": log["steps"],
                         "train_s": round(log["seconds"], 1),
                         "loss_last20": round(float(np.mean(log["loss"][-20:])), 4)}
        te = time.perf_counter()
        for rel in scans:
            per_scan[rel] = evaluate_scan(vols[rel], tpl, net, seed=seed)
            print(f"{person} {rel}: {json.dumps(per_scan[rel])}", flush=True)
        folds[person]["eval_s"] = round(time.perf_counter() - te, 1)
    per_person = {p: {m: {st: round(float(np.mean([per_scan[s][m][st] for s in scans])), 4)
                          for st in per_scan[scans[0]][m]} for m in DEFACERS} for p, scans in PEOPLE.items()}
    result = {"prior": prior, "steps": steps, "batch": batch, "slices": slices, "threads": threads, "seed": seed, "ch": ch,
              "people": {p: list(s) for p, s in PEOPLE.items()}, "folds": folds, "per_scan": per_scan,
              "per_person": per_person,
              "summary": {"all": summarise(per_person, list(PEOPLE)),
                          "individuals": summarise(per_person, [p for p in PEOPLE if p != "pydeface_mean"])},
              "wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "loho.json", result)
    atomic_write_text(out / "loho.md", markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run, print the markdown summary."""
    from ..core.errors import InputError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="datakit root (holds mri_heads/)")
    ap.add_argument("--out", required=True, help="output folder (loho.json, loho.md)")
    ap.add_argument("--steps", type=int, default=150, help="U-Net training steps per fold")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior", action="store_true", help="U-Net predicts a residual on the template face")
    a = ap.parse_args(argv)
    try:
        if a.steps < 1:
            raise InputError("--steps must be >= 1")
        if Path(a.out).exists() and not Path(a.out).is_dir():
            raise InputError(f"{a.out}: exists and is not a folder")
        res = run(a.data, a.out, steps=a.steps, batch=a.batch, slices=a.slices, threads=a.threads, seed=a.seed,
                  prior=a.prior)
    except (InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
