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
* **inversion** (``audit.inversion``, ID2image's mapper attack): the attacker trains a template -> latent mapper
  for the bundled ``lite`` generator on the photos of the 48 held-out identities (its auxiliary data), turns
  every upload into a face image and checks it with dlib (the attacked recognizer): does the image match the
  person's own real photos at the FAR=1e-3 threshold of dlib (threshold from all impostor image pairs of the
  auxiliary identities)? Rate per person = share of the person's photos matched; reference = the same images
  against a different person's photos (what a random face gets); rank-1 = the image's dlib descriptor is
  nearest to the person's own template among the 167;
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


class _Inverter:
    """ID2image's mapper attack on uploads (``audit.inversion``): upload -> latent -> face image."""

    def __init__(self, split, aux_feats, aux_labels, aux_crops: np.ndarray, epochs: int, seed: int) -> None:
        from faceprivacy.audit.inversion import encode_latents, train_mapper
        from faceprivacy.core.metrics import threshold_at_far
        from faceprivacy.federated.algorithm import embed_features
        from faceprivacy.models.generator_loader import load_generator

        self.split = split
        self.gen = load_generator("lite").eval()
        for prm in self.gen.parameters():
            prm.requires_grad_(False)
        aux_emb = embed_features(split.head, aux_feats).numpy()
        self.mapper = train_mapper(aux_emb, encode_latents(self.gen, aux_crops), epochs=epochs, seed=seed)
        lab = np.asarray(aux_labels)
        iu = np.triu_indices(len(lab), 1)
        imp = (aux_emb @ aux_emb.T)[iu][(lab[:, None] != lab[None, :])[iu]]
        self.threshold = threshold_at_far(imp, 1e-3)

    def images(self, uploads: np.ndarray) -> np.ndarray:
        """uint8 (N, 112, 112, 3) face images the attacker makes from (N, D) uploads."""
        import torch

        from faceprivacy.audit.inversion import decode_latents, map_templates, to_crops112

        u = uploads / np.linalg.norm(uploads, axis=1, keepdims=True)
        with torch.no_grad():
            return to_crops112(decode_latents(self.gen, map_templates(self.mapper, u.astype(np.float32))))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        from faceprivacy.federated.algorithm import embed_features
        from faceprivacy.federated.backbone import trunk_features

        return embed_features(self.split.head, trunk_features(self.split, crops)).numpy()

    def score(self, crops: np.ndarray, photos: list[np.ndarray], templates: np.ndarray) -> dict:
        """Match rate against the person's own photos (and a derangement's photos), rank-1 among templates."""
        from faceprivacy.core.metrics import rate_with_ci

        e = self.embed(crops)
        n = len(e)
        ids = np.arange(n)
        own = np.array([float(np.mean(photos[i] @ e[i] > self.threshold)) for i in ids])
        other = np.array([float(np.mean(photos[(i + 1) % n] @ e[i] > self.threshold)) for i in ids])
        tn = templates / np.linalg.norm(templates, axis=1, keepdims=True)
        rank1 = ((e @ tn.T).argmax(1) == ids).astype(float)
        cos_own = np.array([float(np.mean(photos[i] @ e[i])) for i in ids])
        return {"match_own_photos": rate_with_ci(own, ids), "match_other_person": rate_with_ci(other, ids),
                "rank1": rate_with_ci(rank1, ids), "mean_cos_own_photos": rate_with_ci(cos_own, ids),
                "threshold": self.threshold}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--out", required=True)
    ap.add_argument("--noise", default="0,0.5,1,2,4", help="comma list of noise multipliers")
    ap.add_argument("--clip", type=float, default=0.05, help="joint L2 clip of a client's update")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--clients-per-round", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="dlib-level0", help="dlib-fc | dlib-level0 | dlib-level1 (trained head)")
    ap.add_argument("--feature-cache", default=None, help="folder for the trunk features (as fed-simulate)")
    ap.add_argument("--mapper-epochs", type=int, default=150, help="inversion: epochs of the latent mapper")
    ap.add_argument("--no-inversion", dest="inversion", action="store_false", help="skip the inversion attack")
    ap.add_argument("--grid", type=int, default=8, help="people shown in the inversion grid")
    ap.add_argument("--server-lr", type=float, default=None, help="FedAdam server lr (default: the preset's)")
    ap.add_argument("--private-target", action="store_true",
                    help="utility runs with fed-simulate's --dp-private-target (clients train against their own "
                         "class embedding and upload it once)")
    ap.add_argument("--compare", default=None, metavar="JSON",
                    help="an earlier fed_privacy.json whose epsilon-vs-TAR curve is drawn next to this run's "
                         "(e.g. another DP setting) and kept in the result as 'compare'")
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
    split, data = prepare(args.backbone, Path(args.data), False, None, args.seed, cache_dir=args.feature_cache)
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

    inv = None
    if args.inversion:
        from faceprivacy.federated.algorithm import embed_features
        from faceprivacy.federated.backbone import load_crops

        inv = _Inverter(split, data.test_feats, data.test_labels, load_crops(test.paths), args.mapper_epochs,
                        args.seed)
        photos = [embed_features(head, f).numpy() for f in data.client_feats]
        grid = {"original": load_crops([ps[0] for ps in train_paths[:args.grid]])}
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
        inversion = None
        if inv is not None:
            crops = inv.images(uploads)
            inversion = inv.score(crops, photos, templates)
            grid[f"noise {sigma:g}"] = crops[:args.grid]
        # utility: FedFace with this noise
        ccfg = ClientConfig(local_steps=2, lr=float(pre["lr"]), margin=float(pre["margin"]), geometry=geo,
                            embedding_lr=float(pre["embedding_lr"]), dp_clip=args.clip if sigma > 0 else 0.0,
                            dp_noise=sigma)
        scfg = ServerConfig(spread_lr=float(pre["spread_lr"]), spread_margin=float(pre["spread_margin"]),
                            server_opt=str(pre["server_opt"]),
                            server_lr=float(pre["server_lr"] if args.server_lr is None else args.server_lr))
        sim = FederatedSimulator(head, data.client_feats, SimConfig(
            rounds=args.rounds, clients_per_round=args.clients_per_round, seed=args.seed, client=ccfg,
            server=scfg, eval_every=0, private_target=args.private_target))
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
               "inversion": inversion,
               "tar@far=1e-3": final[HEADLINE], "tar@far=1e-3_start": start[HEADLINE],
               "gain_points": 100 * (final[HEADLINE] - start[HEADLINE])}
        rows.append(row)
        print(f"noise {sigma}: eps {row['epsilon']}, rank-1 linkage {row['linkage_rank1']['value']:.3f} "
              f"{row['linkage_rank1']['ci95']}, cos {row['upload_template_cosine']['value']:.3f}, gender probe "
              f"{row['gender_probe_accuracy']['value']:.3f} (majority {majority:.3f}), TAR@1e-3 "
              f"{final[HEADLINE]:.4f} ({row['gain_points']:+.2f} points)" + (
                  "" if inversion is None else f", inversion matches own photos "
                  f"{inversion['match_own_photos']['value']:.3f} {inversion['match_own_photos']['ci95']} (other "
                  f"person {inversion['match_other_person']['value']:.3f}), rank-1 {inversion['rank1']['value']:.3f}"),
              flush=True)
    opts = {k: v for k, v in vars(args).items() if k not in ("inversion", "private_target") and v is not None}
    res = {"command": "python -m benchmarks.fed_privacy " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in opts.items()) + ("" if args.inversion else " --no-inversion")
        + (" --private-target" if args.private_target else ""), "private_target": args.private_target,
        "accountant": accountant_name(), "clients": n, "test_identities": len(test_ids),
        "backbone": args.backbone, "rounds": args.rounds, "clients_per_round": args.clients_per_round,
        "rows": rows,
        "inversion_attack": None if inv is None else (
            "audit.inversion mapper (ID2image) for the bundled lite generator, trained on the photos of the "
            f"{len(test_ids)} held-out identities; check with dlib at FAR=1e-3 (threshold "
            f"{inv.threshold:.4f} from their impostor image pairs); the lite generator was trained on the "
            "training identities' photos (an advantage for the attacker)"),
        "wall_s": round(time.time() - t0, 1)}
    if args.compare:
        import json

        prev = json.loads(Path(args.compare).read_text())
        res["compare"] = {"command": prev.get("command"), "backbone": prev.get("backbone"),
                          "private_target": prev.get("private_target", False),
                          "rounds": prev.get("rounds"), "clients_per_round": prev.get("clients_per_round"),
                          "rows": [{k: r[k] for k in ("noise", "clip", "epsilon", "max_uploads", "tar@far=1e-3",
                                                      "tar@far=1e-3_start", "gain_points") if k in r}
                                   for r in prev["rows"]]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from faceprivacy.core.fileio import atomic_write_json

    atomic_write_json(out / "fed_privacy.json", res)
    _report(res, out, grid if inv is not None else None)
    print(f"wrote {out / 'fed_privacy.json'} and {out / 'fed_privacy.html'}")
    return 0


def _report(res: dict, out: Path, grid: dict[str, np.ndarray] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faceprivacy.core.fileio import atomic_write_bytes
    from faceprivacy.core.report import HtmlReport, figure_to_png_bytes

    rows = res["rows"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    # privacy-utility: epsilon (log) vs TAR; no protection (epsilon infinite) drawn at the right edge
    fin = [r for r in rows if r["epsilon"] != "inf"]
    inf = [r for r in rows if r["epsilon"] == "inf"]
    def setting(d: dict) -> str:
        cpr = d.get("clients_per_round")
        return (f"{d.get('backbone', 'dlib-level0')}, {d.get('rounds')} rounds x "
                f"{'all' if cpr is not None and cpr <= 0 else cpr} clients"
                + (", private target" if d.get("private_target") else ""))

    ax[0].plot([r["epsilon"] for r in fin], [r["tar@far=1e-3"] for r in fin], marker="o",
               label=f"FedFace + DP ({setting(res)})")
    for r in fin:
        ax[0].annotate(f"σ={r['noise']:g}", (r["epsilon"], r["tar@far=1e-3"]), fontsize=7)
    cmp_rows = [r for r in (res.get("compare") or {}).get("rows", []) if r["epsilon"] != "inf"]
    if cmp_rows:
        ax[0].plot([r["epsilon"] for r in cmp_rows], [r["tar@far=1e-3"] for r in cmp_rows], marker="s", ls="--",
                   color="C2", label=f"FedFace + DP ({setting(res['compare'])})")
        for r in cmp_rows:
            ax[0].annotate(f"σ={r['noise']:g}", (r["epsilon"], r["tar@far=1e-3"]), fontsize=7, color="C2")
    if inf:
        xr = 3 * max([r["epsilon"] for r in fin + cmp_rows], default=10)
        ax[0].plot([xr], [inf[0]["tar@far=1e-3"]], marker="*", ms=12, ls="", color="C3", label="no DP (ε = ∞)")
    ax[0].axhline(rows[0]["tar@far=1e-3_start"], ls=":", color="k", label="pretrained")
    ax[0].set(xscale="log", xlabel="ε per person (δ=1e-5)", ylabel="TAR@FAR=1e-3", title="privacy-utility")
    xs = [r["noise"] for r in rows]
    ax[1].plot(xs, [r["linkage_rank1"]["value"] for r in rows], marker="o", label="linkage rank-1")
    ax[1].plot(xs, [r["gender_probe_accuracy"]["value"] for r in rows], marker="s", label="gender probe acc.")
    if all(r.get("inversion") for r in rows):
        ax[1].plot(xs, [r["inversion"]["match_own_photos"]["value"] for r in rows], marker="^",
                   label="inversion matches own photos")
        ax[1].plot(xs, [r["inversion"]["match_other_person"]["value"] for r in rows], ls="--", marker="v",
                   label="inversion vs other person (ref.)")
    ax[1].axhline(rows[0]["chance_rank1"], ls=":", color="gray", label="linkage chance")
    ax[1].axhline(rows[0]["gender_majority"], ls="--", color="gray", label="gender majority")
    ax[1].set(xlabel="noise multiplier σ", ylabel="rate", title="what the server learns from first uploads")
    ax[2].plot(xs, [r["tar@far=1e-3"] for r in rows], marker="o", label="FedFace")
    ax[2].axhline(rows[0]["tar@far=1e-3_start"], ls=":", color="k", label="pretrained")
    ax[2].set(xlabel="noise multiplier σ", ylabel="TAR@FAR=1e-3", title="utility")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    png = figure_to_png_bytes(fig)
    rep = HtmlReport("FedFace uploads: privacy vs utility")
    rep.paragraph(f"{res['clients']} clients (CelebA training identities), {res.get('backbone', 'dlib-level0')} "
                  f"head, {res['rounds']} rounds x "
                  f"{res['clients_per_round']} clients; accountant: {res['accountant']}. Command: {res['command']}")
    if res.get("inversion_attack"):
        rep.paragraph("Inversion: " + res["inversion_attack"])

    def ci(d: dict) -> str:
        return f"{d['value']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"

    table = []
    for r in rows:
        t = {"noise": r["noise"], "epsilon": r["epsilon"], "uploads/person": r["max_uploads"],
             "linkage rank-1 [95% CI]": ci(r["linkage_rank1"]), "gender probe": ci(r["gender_probe_accuracy"])}
        if r.get("inversion"):
            t["inversion: own photos matched"] = ci(r["inversion"]["match_own_photos"])
            t["inversion: other person (ref.)"] = ci(r["inversion"]["match_other_person"])
            t["inversion rank-1"] = ci(r["inversion"]["rank1"])
        t.update({"TAR@1e-3": round(r["tar@far=1e-3"], 4), "gain (points)": round(r["gain_points"], 2)})
        table.append(t)
    rep.table(table)
    if res.get("compare"):
        c = res["compare"]
        rep.paragraph(f"Compared with ({c.get('command')}):")
        rep.table([{"noise": r["noise"], "epsilon": r["epsilon"], "uploads/person": r.get("max_uploads"),
                    "TAR@1e-3": round(r["tar@far=1e-3"], 4), "gain (points)": round(r["gain_points"], 2)}
                   for r in c["rows"]])
    rep.png(png, "privacy-utility (ε vs TAR@FAR=1e-3) and leakage vs noise")
    atomic_write_bytes(out / "fed_privacy.png", png)
    if grid:
        names = list(grid)
        k = len(grid[names[0]])
        fig, axs = plt.subplots(len(names), k, figsize=(1.3 * k, 1.4 * len(names)), squeeze=False)
        for r, name in enumerate(names):
            for c in range(k):
                a = axs[r][c]
                if c < len(grid[name]):
                    a.imshow(grid[name][c])
                a.set_xticks([])
                a.set_yticks([])
                if c == 0:
                    a.set_ylabel(name, fontsize=8)
        gpng = figure_to_png_bytes(fig)
        atomic_write_bytes(out / "fed_privacy_inversion.png", gpng)
        rep.png(gpng, "a real photo of each person (top) and the attacker's inversion of their first upload "
                      "at each noise level")
    rep.write(out / "fed_privacy.html")


if __name__ == "__main__":
    raise SystemExit(main())
