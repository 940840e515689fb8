"""What the FedFace server learns from uploads, and what the protection costs (docs/federated.md).

An evaluation command outside both systems: it drives ``faceprivacy.federated`` (the uploads, the simulator)
and ``faceprivacy.audit`` (the attribute labeller); neither package imports the other. Not part of
``make bench`` (minutes on 2 CPU cores)::

    PYTHONPATH=. python -m benchmarks.fed_privacy --data ../shared/datakit --out runs/fed_privacy

For every noise multiplier (0 = no protection: the first upload *is* the template) it measures, on the 167
CelebA training identities (one client each, dlib-level0):

* **the server's view**: each client's first uploaded class embedding (DP: the server's random start plus the
  clipped, noised step of the client; no DP: the client's mean feature);
* **linkage**: rank-1 re-identification of each upload against a gallery of the 167 people's raw templates
  (mean dlib descriptor of their photos) — can the server tell whose upload it is? chance = 1/167;
* **attribute probe**: gender predicted from the upload by a linear probe trained on the raw templates of the
  48 held-out identities (labels from ``audit.attributes.AgeGenderLabeller``), vs the majority class;
* **utility**: TAR@FAR=1e-3 on the held-out identities after ``--rounds`` FedFace rounds with that noise, and
  the accountant's epsilon per person (the most uploads any client made; delta 1e-5).

Intervals: 95 % bootstrap over identities (``core.metrics.rate_with_ci``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _gender_labels(paths_by_id: list[list[str]], per_id: int = 3) -> np.ndarray:
    """Majority gender of up to ``per_id`` photos per identity (1 female, 0 male, -1 unknown)."""
    from faceprivacy.audit.attributes import AgeGenderLabeller
    from faceprivacy.core.imageio import load_image

    lab = AgeGenderLabeller()
    out = []
    for paths in paths_by_id:
        g = [lab(load_image(p))[1] for p in paths[:per_id]]
        g = [x for x in g if x >= 0]
        out.append(int(round(float(np.mean(g)))) if g else -1)
    return np.asarray(out)


def _ridge_probe(x: np.ndarray, y: np.ndarray, alpha: float = 1.0):
    """A linear least-squares probe on standardised inputs; returns predict(x) -> {0, 1}."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xn = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.linalg.solve(xn.T @ xn + alpha * np.eye(xn.shape[1]), xn.T @ (2.0 * y - 1.0))
    return lambda z: (np.c_[(z - mu) / sd, np.ones(len(z))] @ w > 0).astype(int)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--out", required=True)
    ap.add_argument("--noise", default="0,0.5,1,2,4", help="comma list of noise multipliers")
    ap.add_argument("--clip", type=float, default=0.05, help="joint L2 clip of a client's update")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--clients-per-round", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.core.metrics import rate_with_ci
    from faceprivacy.federated.algorithm import (
        GEOMETRY_PRESETS,
        ClientConfig,
        ServerConfig,
        client_update,
        head_vector,
        init_class_embedding,
    )
    from faceprivacy.federated.evaluate import head_evaluator
    from faceprivacy.federated.experiment import HEADLINE, prepare
    from faceprivacy.federated.privacy import accountant_name, epsilon
    from faceprivacy.federated.simulation import FederatedSimulator, SimConfig, random_start

    t0 = time.time()
    split, data = prepare("dlib-level0", Path(args.data), False, None, args.seed)
    root = Path(args.data)
    root = root / "celeba_subset_aligned112" if (root / "celeba_subset_aligned112").is_dir() else root
    parts = identity_split(celeba_subset(root))
    head = split.head
    vec = head_vector(head)
    geo = "euclidean"
    pre = GEOMETRY_PRESETS[geo]
    templates = np.stack([init_class_embedding(head, f, geo) for f in data.client_feats])  # raw, per client
    n = len(templates)
    ids = np.arange(n)

    # attacker's auxiliary data: raw templates + gender of the held-out (test) identities
    test = parts["test"]
    test_ids = sorted(set(test.labels.tolist()))
    test_templates = np.stack([init_class_embedding(head, data.test_feats[data.test_labels == t], geo)
                               for t in test_ids])
    train = parts["train"]
    train_paths = [[p for p, lab in zip(train.paths, train.labels, strict=True) if train.names[lab] == name]
                   for name in data.client_names]
    test_paths = [[p for p, lab in zip(test.paths, test.labels, strict=True) if lab == t] for t in test_ids]
    g_train, g_test = _gender_labels(train_paths), _gender_labels(test_paths)
    probe = _ridge_probe(test_templates[g_test >= 0], g_test[g_test >= 0])
    known = g_train >= 0
    majority = float(max(np.mean(g_train[known]), 1 - np.mean(g_train[known])))

    ev = head_evaluator(data.test_feats, data.test_labels)
    start = ev(head)
    rows = []
    for sigma in [float(s) for s in args.noise.split(",")]:
        # the server's view: each client's first upload
        if sigma <= 0:
            uploads = templates.copy()
        else:
            rnd = random_start(templates, geo, args.seed + 1)
            ccfg = ClientConfig(local_steps=2, lr=float(pre["lr"]), margin=float(pre["margin"]), geometry=geo,
                                embedding_lr=float(pre["embedding_lr"]), dp_clip=args.clip, dp_noise=sigma)
            uploads = np.stack([client_update(head, vec, data.client_feats[i], templates[i], ccfg, seed=i,
                                              reference=rnd[i]).embedding for i in range(n)])
        un = uploads / np.linalg.norm(uploads, axis=1, keepdims=True)
        tn = templates / np.linalg.norm(templates, axis=1, keepdims=True)
        sims = un @ tn.T
        hit = (sims.argmax(1) == ids).astype(float)
        own_cos = sims[ids, ids]
        gender_hit = (probe(uploads[known]) == g_train[known]).astype(float)
        # utility: FedFace with this noise
        ccfg = ClientConfig(local_steps=2, lr=float(pre["lr"]), margin=float(pre["margin"]), geometry=geo,
                            embedding_lr=float(pre["embedding_lr"]), dp_clip=args.clip if sigma > 0 else 0.0,
                            dp_noise=sigma)
        scfg = ServerConfig(spread_lr=float(pre["spread_lr"]), spread_margin=float(pre["spread_margin"]),
                            server_opt=str(pre["server_opt"]), server_lr=float(pre["server_lr"]))
        sim = FederatedSimulator(head, data.client_feats, SimConfig(
            rounds=args.rounds, clients_per_round=args.clients_per_round, seed=args.seed, client=ccfg,
            server=scfg, eval_every=0))
        sim.run(progress_bar=False)
        final = ev(sim.global_head())
        counts = np.zeros(n, int)
        for r in range(1, args.rounds + 1):
            counts[sim.sample_clients(r)] += 1
        eps = epsilon(sigma, int(counts.max()), 1e-5) if sigma > 0 else float("inf")
        row = {"noise": sigma, "clip": args.clip if sigma > 0 else None,
               "epsilon": eps if np.isfinite(eps) else "inf", "max_uploads": int(counts.max()),
               "linkage_rank1": rate_with_ci(hit, ids), "chance_rank1": 1.0 / n,
               "upload_template_cosine": rate_with_ci(own_cos, ids),
               "gender_probe_accuracy": rate_with_ci(gender_hit, ids[known]), "gender_majority": majority,
               "tar@far=1e-3": final[HEADLINE], "tar@far=1e-3_start": start[HEADLINE],
               "gain_points": 100 * (final[HEADLINE] - start[HEADLINE])}
        rows.append(row)
        print(f"noise {sigma}: eps {row['epsilon']}, rank-1 linkage {row['linkage_rank1']['value']:.3f} "
              f"{row['linkage_rank1']['ci95']}, cos {row['upload_template_cosine']['value']:.3f}, gender probe "
              f"{row['gender_probe_accuracy']['value']:.3f} (majority {majority:.3f}), TAR@1e-3 "
              f"{final[HEADLINE]:.4f} ({row['gain_points']:+.2f} points)", flush=True)
    res = {"command": "python -m benchmarks.fed_privacy " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "accountant": accountant_name(), "clients": n, "test_identities": len(test_ids),
        "rounds": args.rounds, "clients_per_round": args.clients_per_round, "rows": rows,
        "wall_s": round(time.time() - t0, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from faceprivacy.core.fileio import atomic_write_json

    atomic_write_json(out / "fed_privacy.json", res)
    _report(res, out)
    print(f"wrote {out / 'fed_privacy.json'} and {out / 'fed_privacy.html'}")
    return 0


def _report(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faceprivacy.core.report import HtmlReport, figure_to_png_bytes

    rows = res["rows"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = [r["noise"] for r in rows]
    ax[0].plot(xs, [r["tar@far=1e-3"] for r in rows], marker="o", label="FedFace")
    ax[0].axhline(rows[0]["tar@far=1e-3_start"], ls=":", color="k", label="pretrained")
    ax[0].set(xlabel="noise multiplier", ylabel="TAR@FAR=1e-3", title="utility")
    ax[1].plot(xs, [r["linkage_rank1"]["value"] for r in rows], marker="o", label="linkage rank-1")
    ax[1].plot(xs, [r["gender_probe_accuracy"]["value"] for r in rows], marker="s", label="gender probe acc.")
    ax[1].axhline(rows[0]["chance_rank1"], ls=":", color="gray", label="linkage chance")
    ax[1].axhline(rows[0]["gender_majority"], ls="--", color="gray", label="gender majority")
    ax[1].set(xlabel="noise multiplier", ylabel="rate", title="what the server learns from first uploads")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    png = figure_to_png_bytes(fig)
    rep = HtmlReport("FedFace uploads: privacy vs utility")
    rep.paragraph(f"{res['clients']} clients (CelebA training identities), {res['rounds']} rounds x "
                  f"{res['clients_per_round']} clients; accountant: {res['accountant']}. Command: {res['command']}")
    rep.table([{"noise": r["noise"], "epsilon": r["epsilon"], "uploads/person": r["max_uploads"],
                "linkage rank-1 [95% CI]": f"{r['linkage_rank1']['value']:.3f} {r['linkage_rank1']['ci95']}",
                "gender probe": f"{r['gender_probe_accuracy']['value']:.3f} {r['gender_probe_accuracy']['ci95']}",
                "TAR@1e-3": round(r["tar@far=1e-3"], 4), "gain (points)": round(r["gain_points"], 2)}
               for r in rows])
    rep.png(png, "privacy-utility")
    rep.write(out / "fed_privacy.html")
    (out / "fed_privacy.png").write_bytes(png)


if __name__ == "__main__":
    raise SystemExit(main())
