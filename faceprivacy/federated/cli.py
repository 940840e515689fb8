"""``faceprivacy fed-simulate`` / ``fed-server`` / ``fed-client``: federated face recognition (FedFace)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _add_hparams(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="dlib-level0",
                   help="dlib-fc | dlib-level0 | dlib-level1 (trainable top of dlib's ResNet) | tiny (synthetic)")
    p.add_argument("--local-steps", type=int, default=2, help="client SGD steps per round")
    p.add_argument("--batch-size", type=int, default=32, help="client images per SGD step")
    p.add_argument("--geometry", default="auto", choices=("auto", "cosine", "euclidean"),
                   help="cosine: FedFace's normalised embeddings and cosine margins; euclidean: raw embeddings, "
                        "radius/distance margins (FedAwS form; suits dlib's metric-trained descriptors); "
                        "auto: euclidean for dlib backbones. The defaults of the options below follow it.")
    p.add_argument("--lr", type=float, default=None, help="client learning rate, plain SGD (default: the geometry's)")
    p.add_argument("--embedding-lr", type=float, default=None,
                   help="client lr of its class embedding (negative: same as --lr; default: the geometry's)")
    p.add_argument("--margin", type=float, default=None,
                   help="positive hinge: cosine margin (cosine) or radius around the class embedding (euclidean); "
                        "default: the geometry's")
    p.add_argument("--server-opt", choices=("sgd", "adam"), default=None,
                   help="FedAvg (sgd) or FedAdam (adam) (default: the geometry's)")
    p.add_argument("--server-lr", type=float, default=None, help="server learning rate (default: the geometry's)")
    p.add_argument("--spread-lr", type=float, default=None, help="server spreadout step size (default: the geometry's)")
    p.add_argument("--spread-steps", type=int, default=10, help="server spreadout steps per round")
    p.add_argument("--spread-margin", type=float, default=None,
                   help="spreadout: max cosine (cosine) or min distance (euclidean) between class embeddings "
                        "(default: the geometry's)")
    p.add_argument("--dp-clip", type=float, default=0.0, help="DP: clip each client update to this L2 norm")
    p.add_argument("--dp-noise", type=float, default=0.0, help="DP: Gaussian noise multiplier (std = noise*clip)")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the federated commands to the main CLI."""
    from ..core.options import CommaOrSpaceList, add_common, add_deprecated, add_out, command, run_dir

    p = command(sub, "fed-simulate", "simulate FedFace with N one-identity clients in-process",
                examples=["faceprivacy fed-simulate                      # 167 CelebA clients, fedface vs fedavg vs central",
                          "faceprivacy fed-simulate --rounds 40 --methods fedface fedavg",
                          "faceprivacy fed-simulate --synthetic --clients 40 --rounds 3   # smoke test, no data"],
                description="Clients = CelebA training identities (one each); evaluation = verification "
                                   "on held-out identities. Writes fed_results.json, fed_report.html and "
                                   "fed_tar_vs_round.png.")
    p.add_argument("--clients", type=int, default=None, help="number of clients (default: all training ids)")
    p.add_argument("--rounds", type=int, default=60, help="federated rounds")
    p.add_argument("--clients-per-round", type=int, default=50, help="<=0: all clients every round")
    p.add_argument("--methods", dest="algorithms", nargs="+", action=CommaOrSpaceList,
                   default=["fedface", "fedavg", "central"], metavar="METHOD",
                   help="fedface, fedavg (no spreadout), central (centralised fine-tuning), compared side by side")
    add_deprecated(p, "--algorithms", "algorithms", action=CommaOrSpaceList)
    p.add_argument("--central-epochs", type=int, default=4, help="epochs of the centralised baseline")
    p.add_argument("--central-loss", choices=("metric", "proxy"), default="metric",
                   help="metric: dlib's pairwise metric loss (Adam); proxy: FedFace's loss family with all "
                        "negatives (SGD)")
    p.add_argument("--central-lr", type=float, default=None,
                   help="centralised lr (default 1e-5 Adam for metric, 3e-6 SGD momentum 0.9 for proxy)")
    p.add_argument("--dropout", type=float, default=0.0, help="probability that a sampled client drops out")
    p.add_argument("--faulty", type=float, default=0.0,
                   help="probability that a sampled client sends a NaN update (robustness testing)")
    p.add_argument("--eval-every", type=int, default=10, help="evaluate on held-out identities every N rounds")
    p.add_argument("--data", default=None, help="datakit or CelebA subset folder (default ../shared/datakit)")
    p.add_argument("--test-data", default=None,
                   help="evaluate on every identity of this CelebA-layout root instead of the held-out split "
                        "of --data (training and choices stay on --data)")
    p.add_argument("--eval-split", choices=("test", "val"), default="test",
                   help="test: the held-out test identities (claims); val: the validation protocol for choices "
                        "(24 validation identities + 40 training identities held out of training; no test "
                        "identity is used; with --seeds, seed k holds out fold k, so choices average over "
                        "several held-out sets)")
    p.add_argument("--val-folds", type=int, default=0, metavar="F",
                   help="with --eval-split val: F disjoint validation folds (fold k = seed k evaluates on its own "
                        "third, for F = 3, of the validation people plus its own 40 held-out training people; no "
                        "person in two folds). Default 0: the earlier folds, which share the 24 validation people")
    p.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="keep the frozen trunk's features in DIR and reuse them (sweeps)")
    p.add_argument("--synthetic", action="store_true", help="synthetic clients (tiny backbone; timing/smoke only)")
    add_out(p, lambda a: run_dir("fed-simulate"), "eval_fed_simulate_DATE_TIME/ in the current folder",
            help="output folder (fed_results.json, fed_report.html)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable checkpoint every k rounds into OUT/checkpoints (holds the server's "
                        "class embeddings: keep it private)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--seeds", nargs="+", action=CommaOrSpaceList, default=None, metavar="SEED",
                   help="one run per seed into OUT/seed<k> (features computed once) and OUT/fed_seeds.json with "
                        "mean ± sd and FedFace's share of the centralised gain (default: one run, --seed)")
    p.add_argument("--negatives", type=int, default=None,
                   help="hard negatives: the K class embeddings of other clients nearest to a client's are sent to it "
                        "and its features are pushed --neg-margin away from them (0 = off; default: the geometry's)")
    p.add_argument("--public-negatives", type=int, default=None, metavar="N",
                   help="FedFR-style public negatives: N UTKFace crops (datakit, no identities) held by every client; "
                        "each local step keeps the client's features --neg-margin away from --public-batch of them "
                        "(0 = off; default: the geometry's)")
    p.add_argument("--public-batch", type=int, default=None,
                   help="public negatives drawn per local step (default: the geometry's)")
    p.add_argument("--neg-margin", type=float, default=None,
                   help="hard negatives: min distance (euclidean) / max cosine (cosine) (default: the geometry's)")
    p.add_argument("--neg-loss", choices=("hinge", "cosine", "softmax"), default="hinge",
                   help="hard negatives: a hinge keeping features --neg-margin away (in the geometry), a cosine "
                        "hinge (cosine to the negatives below --neg-margin), or a softmax over the own and the "
                        "negatives' class embeddings (logits -neg-scale x squared distance)")
    p.add_argument("--neg-scale", type=float, default=10.0, help="softmax negatives: logit scale")
    p.add_argument("--neg-weight", type=float, default=None,
                   help="hard negatives: weight of their hinge in the client loss (default: the geometry's)")
    p.add_argument("--server-lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="server lr over the rounds: constant, or cosine from --server-lr down to "
                        "--server-lr-min x --server-lr at the last round")
    p.add_argument("--server-lr-min", type=float, default=0.1, help="cosine schedule: final fraction of the lr")
    p.add_argument("--dp-private-target", action="store_true",
                   help="DP: each client trains against its own class embedding (moved by the server's spreadout "
                        "of its noised copy) and uploads the embedding only once, instead of training against the "
                        "server's noised copy that every upload re-noises")
    p.add_argument("--server-adam-eps", type=float, default=1e-8,
                   help="FedAdam's epsilon (tau): per-coordinate updates much below it move the model less "
                        "(1e-8: sign-like steps)")
    p.add_argument("--spread-boost", type=int, default=1,
                   help="spreadout head start: x this many spreadout steps in the first --spread-boost-rounds rounds")
    p.add_argument("--spread-boost-rounds", type=int, default=0, help="rounds of the spreadout head start (0: off)")
    p.add_argument("--positive", choices=("geometry", "centred", "both"), default="geometry",
                   help="client positive term: the geometry's hinge; 'centred': a cosine hinge around the server's "
                        "centre (mean of the class-embedding bank), blind to the common drift towards it; 'both'")
    p.add_argument("--centred-margin", type=float, default=0.85,
                   help="centred positive term: cosine margin around the centre")
    p.add_argument("--centred-weight", type=float, default=1.0, help="centred positive term: its weight")
    p.add_argument("--spread-warmup", type=int, default=0,
                   help="rounds over which the spreadout step grows linearly to --spread-lr (0: off)")
    _add_hparams(p)
    add_common(p, threads=1)
    p.set_defaults(func=cmd_simulate)

    s = command(sub, "fed-server", "run FedFace on Flower's deployment engine (SuperLink + ServerApp)",
                examples=["faceprivacy fed-server --min-nodes 2 --rounds 5 --data ../shared/datakit/celeba_subset_aligned112",
                          "faceprivacy fed-server --insecure --min-nodes 2 --rounds 2   # tests on one machine only",
                          "faceprivacy fed-server --authorized-keys nodes.pub --ssl-certfile s.pem --ssl-keyfile s.key "
                          "--ssl-ca-certfile ca.pem"],
                description="Starts a secure Flower SuperLink (TLS, SuperNode authentication, Control API "
                            "on this host only, the FedFace app pinned by hash), submits the FedFace run, "
                            "prints every round, writes the result and the model, and shuts down.")
    s.add_argument("--host", default="127.0.0.1", help="address the SuperLink binds to")
    s.add_argument("--port", type=int, default=9092, help="port the SuperLink's Fleet API binds to")
    s.add_argument("--rounds", type=int, default=10, help="federated rounds")
    s.add_argument("--min-nodes", type=int, default=2, help="nodes required per round")
    s.add_argument("--fraction-train", type=float, default=1.0, help="fraction of connected nodes trained per round")
    s.add_argument("--no-spreadout", action="store_true", help="plain FedAvg (baseline)")
    s.add_argument("--data", default="", help="CelebA subset root for partition-id clients")
    s.add_argument("--out", default="out/fed_server", help="output folder (flower_result.json, model, Flower logs)")
    s.add_argument("--insecure", action="store_true",
                   help="no TLS and no node authentication (tests on one machine only)")
    s.add_argument("--ssl-certfile", help="server certificate (default: OUT/tls, made with its own CA)")
    s.add_argument("--ssl-keyfile", help="server private key (PEM; default: OUT/tls)")
    s.add_argument("--ssl-ca-certfile", help="CA certificate (PEM) that signed the server certificate (default: OUT/tls)")
    s.add_argument("--authorized-keys",
                   help="file of the nodes' public keys (OpenSSH ECDSA, one a line); default: create "
                        "--create-node-keys key pairs in OUT/node_keys and hand one to each node")
    s.add_argument("--create-node-keys", type=int, default=None,
                   help="how many node key pairs to create without --authorized-keys (default: --min-nodes)")
    s.add_argument("--max-update-norm", type=float, default=1.0,
                   help="server-side clipping of every node's update to this L2 norm (0: off)")
    s.add_argument("--aggregation", choices=("mean", "median", "trimmed-mean"), default="mean",
                   help="equal-weight combination of node updates")
    s.add_argument("--trim-fraction", type=float, default=0.2, help="cut from each end by trimmed-mean")
    s.add_argument("--dp-delta", type=float, default=1e-5, help="delta of the reported (epsilon, delta)")
    s.add_argument("--no-save-model", action="store_true", help="do not write OUT/flower_head.npz")
    s.add_argument("--eval-data", default="",
                   help="evaluate after every round on the held-out identities of this CelebA-layout root "
                        "(OUT/flower_report.html: TAR@FAR per round)")
    s.add_argument("--run-timeout", "--timeout", dest="run_timeout", type=float, default=3600.0,
                   help="seconds for the whole run; after it the partial result is kept")
    s.add_argument("--round-timeout", type=float, default=600.0, help="seconds a round waits for replies")
    _add_hparams(s)
    add_common(s, threads=1)
    s.set_defaults(func=cmd_server)

    c = command(sub, "fed-client", "join a FedFace federation as one identity (Flower SuperNode)",
                examples=["faceprivacy fed-client --superlink host:9092 --image-dir me/ --root-certificates ca.crt "
                          "--auth-key node0",
                          "faceprivacy fed-client --superlink 127.0.0.1:9092 --partition-id 3 --data "
                          "celeba_subset_aligned112 --insecure   # tests"],
                description="Runs a Flower SuperNode that verifies the SuperLink (TLS), signs in with "
                            "its own key and runs only the FedFace app (pinned by hash).")
    c.add_argument("--superlink", required=True, help="SuperLink address host:port")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--image-dir", help="folder with this person's aligned 112x112 face crops")
    g.add_argument("--partition-id", type=int, help="simulate the n-th CelebA training identity (needs --data)")
    c.add_argument("--data", default="", help="CelebA subset root (with --partition-id)")
    c.add_argument("--api-host", dest="host", default="127.0.0.1",
                   help="address of this node's local ClientApp API (not the SuperLink: see --superlink)")
    add_deprecated(c, "--host", "host")
    c.add_argument("--api-port", dest="port", type=int, default=0,
                   help="port of this node's local ClientApp API (0: a free port)")
    add_deprecated(c, "--port", "port", type=int)
    c.add_argument("--insecure", action="store_true", help="no TLS, no node key (tests on one machine only)")
    c.add_argument("--root-certificates", help="CA certificate of the SuperLink (fed-server's OUT/tls/ca.crt)")
    c.add_argument("--auth-key", help="this node's private key (from fed-server's OUT/node_keys, or "
                                      "ssh-keygen -t ecdsa -b 384 -N '')")
    c.add_argument("--app-hash", default=None,
                   help="SHA-256 of the only app this node runs (default: this faceprivacy's FedFace app)")
    c.add_argument("--max-wait", type=float, default=120.0,
                   help="exit after the SuperLink has been unreachable this many seconds (the run ended)")
    add_common(c, threads=1)
    c.set_defaults(func=cmd_client)


def resolve_hparams(args: argparse.Namespace) -> dict:
    """Fill the options left unset from the geometry preset (``algorithm.GEOMETRY_PRESETS``)."""
    from .algorithm import GEOMETRY_PRESETS, resolve_geometry

    backbone = "tiny" if getattr(args, "synthetic", False) else args.backbone
    geo = resolve_geometry(args.geometry, backbone)
    hp: dict = {"geometry": geo}
    for k, v in GEOMETRY_PRESETS[geo].items():
        given = getattr(args, k, None)
        hp[k] = v if given is None else given
    return hp


def _default_data(arg: str | None) -> Path | None:
    from ..core.paths import default_data_root

    return Path(arg) if arg else default_data_root()


def cmd_simulate(args: argparse.Namespace) -> int:
    """Handler of ``fed-simulate``."""
    import torch

    from ..core.errors import InputError
    from .algorithm import CentralConfig, ClientConfig, ServerConfig
    from .experiment import prepare, run_experiment, write_outputs
    from .simulation import ALGORITHMS, SimConfig

    torch.set_num_threads(max(1, args.threads))
    algos = tuple(args.algorithms)
    bad = [a for a in algos if a not in (*ALGORITHMS, "central")]
    if bad or not algos:
        raise InputError(f"unknown algorithms {bad}; use fedface, fedavg, central")
    if args.rounds < 1 or (args.clients is not None and args.clients < 1):
        raise InputError("--rounds and --clients must be positive")
    if not 0.0 <= args.server_lr_min <= 1.0 or args.spread_warmup < 0:
        raise InputError("--server-lr-min must be in [0, 1] and --spread-warmup >= 0")
    if args.spread_boost < 1 or args.spread_boost_rounds < 0:
        raise InputError("--spread-boost must be >= 1 and --spread-boost-rounds >= 0")
    if not -1.0 <= args.centred_margin <= 1.0 or args.centred_weight < 0 or not args.server_adam_eps > 0:
        raise InputError("--centred-margin must be a cosine in [-1, 1], --centred-weight >= 0 and "
                         "--server-adam-eps > 0")
    if args.eval_split == "val" and args.test_data:
        raise InputError("--eval-split val and --test-data exclude each other")
    if args.val_folds and (args.eval_split != "val" or args.val_folds < 2):
        raise InputError("--val-folds needs --eval-split val and at least 2 folds")
    if args.val_folds and any(not 0 <= int(s) < args.val_folds for s in (args.seeds or [args.seed])):
        raise InputError(f"with --val-folds {args.val_folds} the seeds pick the folds: use seeds 0.."
                         f"{args.val_folds - 1}")
    backbone = "tiny" if args.synthetic else args.backbone
    hp = resolve_hparams(args)

    def load(fold: int):
        split, data = prepare(backbone, _default_data(args.data), args.synthetic, args.clients, args.seed,
                              test_root=args.test_data, eval_split=args.eval_split, cache_dir=args.feature_cache,
                              val_fold=fold, val_folds=args.val_folds)
        if int(hp["public_negatives"]) > 0 and not args.synthetic:
            from .experiment import public_negative_features

            data.public_feats = public_negative_features(split, _default_data(args.data),
                                                         int(hp["public_negatives"]), args.feature_cache)
        return split, data

    fold = args.seed if args.val_folds and not args.seeds else 0  # with --val-folds the seed is the fold
    split, data = load(fold)
    elr = None if float(hp["embedding_lr"]) < 0 else float(hp["embedding_lr"])
    cfg = SimConfig(rounds=args.rounds, clients_per_round=args.clients_per_round, seed=args.seed,
                    client=ClientConfig(local_steps=args.local_steps, batch_size=args.batch_size, lr=float(hp["lr"]),
                                        embedding_lr=elr, margin=float(hp["margin"]), geometry=hp["geometry"],
                                        dp_clip=args.dp_clip, dp_noise=args.dp_noise,
                                        negatives=int(hp["negatives"]), neg_margin=float(hp["neg_margin"]),
                                        neg_weight=float(hp["neg_weight"]), neg_loss=args.neg_loss,
                                        neg_scale=args.neg_scale, positive=args.positive,
                                        centred_margin=args.centred_margin, centred_weight=args.centred_weight,
                                        public_batch=int(hp["public_batch"]) if int(hp["public_negatives"]) > 0
                                        else 0),
                    server=ServerConfig(spread_lr=float(hp["spread_lr"]), spread_steps=args.spread_steps,
                                        spread_margin=float(hp["spread_margin"]), server_opt=str(hp["server_opt"]),
                                        server_lr=float(hp["server_lr"]),
                                        server_lr_schedule=args.server_lr_schedule,
                                        server_lr_min=args.server_lr_min, spread_warmup=args.spread_warmup,
                                        spread_boost=args.spread_boost, spread_boost_rounds=args.spread_boost_rounds,
                                        adam_eps=args.server_adam_eps),
                    dropout=args.dropout, faulty_fraction=args.faulty, eval_every=args.eval_every,
                    checkpoint_every=args.checkpoint_every, private_target=args.dp_private_target)
    metric = args.central_loss == "metric"
    seeds = [int(x) for x in args.seeds] if args.seeds else [args.seed]
    out = Path(args.out)
    per_seed = {}
    from ..core.options import Summary

    summary = Summary(f"simulated {', '.join(algos)} for {args.rounds} round(s), {len(seeds)} seed(s)")
    for seed in seeds:
        sdir = out / f"seed{seed}" if args.seeds else out
        if args.eval_split == "val" and args.seeds and seed != fold:  # seed k: validation fold k
            fold = seed
            split, data = load(fold)
        scfg = SimConfig(**{**cfg.to_dict(), "seed": seed})
        central = CentralConfig(epochs=args.central_epochs, loss=args.central_loss, seed=seed,
                                optimizer="adam" if metric else "sgd",
                                lr=args.central_lr if args.central_lr is not None else (1e-5 if metric else 3e-6))
        ckdir = sdir / "checkpoints" if (args.checkpoint_every > 0 or args.resume) else None
        results = run_experiment(data, split, scfg, algos, central, checkpoint_dir=ckdir, resume=args.resume)
        paths = write_outputs(results, sdir)
        per_seed[seed] = results
        summary.wrote(paths["json"], paths["html"])
        for row in results["summary"]:
            ci = row.get("tar@far=1e-3_ci95")
            ci_s = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
            summary.details.append(
                f"{'seed ' + str(seed) + ' ' if args.seeds else ''}{row['method']:>10}: TAR@FAR=1e-3 "
                f"{row['tar@far=1e-3']:.4f}{ci_s}  EER {row['eer']:.4f}  ({row['gain_tar@1e-3_points']:+.2f} "
                f"points; n={row.get('n_identities', '?')} identities)")
    if args.seeds:
        from ..core.fileio import atomic_write_json
        from .experiment import seed_summary

        summ = seed_summary(per_seed)
        summary.wrote(atomic_write_json(out / "fed_seeds.json", summ))
        for name, g in summ["gain_points"].items():
            summary.details.append(f"{name:>10}: gain {g['mean']:+.2f} ± {g['sd']:.2f} points over {len(seeds)} seeds")
        if summ.get("share_of_central_gain") is not None:
            summary.notes.append(
                f"FedFace share of the centralised gain: {summ['share_of_central_gain']:.0%}; FedFace above "
                f"FedAvg at every evaluation round in {summ['fedface_above_fedavg_every_round']} of {len(seeds)} seeds")
        if summ.get("fedface_minus_fedavg_by_round"):
            summary.notes.append("FedFace - FedAvg by round (mean points, seeds above): " + ", ".join(
                f"r{d['round']} {d['mean_points']:+.2f} ({d['seeds_above']}/{d['n_seeds']})"
                for d in summ["fedface_minus_fedavg_by_round"]))
    return summary.then(f"open {paths['html']}").print()


def recipe_from_args(args: argparse.Namespace):
    """The run's :class:`~faceprivacy.federated.recipe.FedFaceRecipe` from ``fed-server``'s flags."""
    from .recipe import FedFaceRecipe

    hp = resolve_hparams(args)
    return FedFaceRecipe(
        num_server_rounds=args.rounds, min_train_nodes=args.min_nodes, min_available_nodes=args.min_nodes,
        fraction_train=args.fraction_train, backbone=args.backbone,
        data_root=str(Path(args.data).resolve()) if args.data else "", local_steps=args.local_steps,
        batch_size=args.batch_size, lr=float(hp["lr"]), margin=float(hp["margin"]), geometry=hp["geometry"],
        embedding_lr=float(hp["embedding_lr"]), server_opt=str(hp["server_opt"]), server_lr=float(hp["server_lr"]),
        spreadout=not args.no_spreadout, spread_steps=args.spread_steps, spread_lr=float(hp["spread_lr"]),
        spread_margin=float(hp["spread_margin"]), max_update_norm=args.max_update_norm,
        aggregation=args.aggregation, trim_fraction=args.trim_fraction, dp_clip=args.dp_clip,
        dp_noise=args.dp_noise, dp_delta=args.dp_delta, seed=args.seed, out_dir=str(Path(args.out).resolve()),
        round_timeout=args.round_timeout, save_model=not args.no_save_model,
        eval_data=str(Path(args.eval_data).resolve()) if args.eval_data else "")


def _warn(msg: str) -> None:
    import sys

    print(f"warning: {msg}", file=sys.stderr, flush=True)


def format_round(line: dict) -> str:
    """One terminal line per finished round: accepted, dropped and rejected nodes with their reasons."""
    parts = [f"round {line['round']}/{line.get('num_rounds', '?')}: {line['accepted']}/{line['sampled']} accepted"]
    if line.get("clipped"):
        parts.append(f"{line['clipped']} clipped")
    for kind in ("dropped", "rejected"):
        items = line.get(kind) or []
        if items:
            parts.append(f"{len(items)} {kind} (" + "; ".join(f"node {d['node']}: {d['reason']}" for d in items) + ")")
    if "tar@far=1e-3" in line:
        parts.append(f"TAR@FAR=1e-3 {line['tar@far=1e-3']:.4f}")
    loss = line.get("client_loss")
    if isinstance(loss, float) and loss == loss:
        parts.append(f"client loss {loss:.4g}")
    parts.append(f"{line.get('elapsed_s', 0):.0f} s")
    return ", ".join(parts)


def _node_keys(args: argparse.Namespace, out: Path) -> list[str]:
    """Public keys of the nodes allowed in: the operator's file, or key pairs created in OUT/node_keys."""
    from .security import generate_node_key, read_authorized_keys

    if args.authorized_keys:
        return read_authorized_keys(Path(args.authorized_keys).expanduser().resolve())
    n = args.create_node_keys if args.create_node_keys is not None else args.min_nodes
    kdir = out / "node_keys"
    auth = kdir / "authorized_keys"
    if auth.exists():  # reuse the keys handed out before
        return read_authorized_keys(auth)
    lines = []
    for i in range(max(1, n)):
        _, pub = generate_node_key(kdir / f"node{i}")
        lines.append(pub.read_text().strip())
    auth.write_text("\n".join(lines) + "\n")
    print(f"created {len(lines)} node key pairs in {kdir} (node0, node1, ...: one private key per fed-client, "
          "--auth-key; keep them secret)")
    return read_authorized_keys(auth)


def cmd_server(args: argparse.Namespace) -> int:
    """Handler of ``fed-server``: secure SuperLink + FedFace run, one line per round, result + model."""
    import signal

    from ..core.errors import InputError
    from .deploy import LocalFederation, RunTimeout
    from .security import check_tls_files

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a TCP port (0-65535)")
    recipe = recipe_from_args(args)
    out = Path(args.out).resolve()  # the Flower processes run in other folders
    ssl = {} if args.insecure else check_tls_files({"ssl-certfile": args.ssl_certfile,
                                                    "ssl-keyfile": args.ssl_keyfile,
                                                    "ssl-ca-certfile": args.ssl_ca_certfile})
    if args.insecure:
        _warn("--insecure: no TLS and no node authentication; anyone who reaches the port can join. "
              "Use it for tests on one machine only.")
    if recipe.dp_noise <= 0:
        _warn("--dp-noise 0: uploads are not noised; the server receives each node's class embedding (a face "
              "template) and head updates in clear.")

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        with LocalFederation(out / "flower", host=args.host, insecure=args.insecure, ssl=ssl or None) as fed:
            keys = [] if args.insecure else _node_keys(args, out)
            addr = fed.start_superlink(args.port)
            fed.register_keys(keys)
            tls_hint = "--insecure" if args.insecure else f"--root-certificates {fed.ca_certfile} --auth-key KEY"
            print(f"SuperLink on {addr} ({'insecure' if args.insecure else 'TLS, node authentication'}); "
                  f"{len(keys)} node keys registered; waiting for {args.min_nodes} nodes: "
                  f"faceprivacy fed-client --superlink {addr} {tls_hint} ...", flush=True)
            try:
                summary = fed.run_app(recipe.to_run_config(), timeout=args.run_timeout,
                                      on_progress=lambda ln: print(format_round(ln), flush=True))
            except RunTimeout as e:
                done = (e.partial or {}).get("rounds_done", 0)
                print(f"error: {e}; partial result after {done} of {recipe.num_server_rounds} rounds in "
                      f"{out / 'flower_result.json'}", flush=True)
                return 1
    except KeyboardInterrupt:
        print(f"stopped; Flower processes ended; partial result (if any round finished) in {out}", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    from ..core.options import Summary

    priv = summary.get("privacy", {})
    res = Summary(f"FedFace on Flower finished {summary['num_rounds']} round(s)",
                  written=[str(out / "flower_result.json")] + ([] if args.no_save_model else [str(out / "flower_head.npz")]))
    res.number("model change (L2 norm of the update, > 0 means it trained)", summary["model_change_l2"])
    if priv.get("epsilon") is not None:
        res.number(f"differential privacy epsilon (delta {args.dp_delta:g}; lower is more private)", priv["epsilon"])
    return res.then(f"faceprivacy fed-simulate --rounds {args.rounds}   # in-process, with held-out evaluation").print()


def cmd_client(args: argparse.Namespace) -> int:
    """Handler of ``fed-client``: run a guarded Flower SuperNode holding one identity until the run ends."""
    import os

    from ..core.errors import InputError
    from .deploy import flower_env, free_port, supernode_command
    from .security import APP_HASH_ENV, check_node_key, fedface_app_hash, write_guard_shims

    host, sep, port = args.superlink.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise InputError(f"--superlink must be HOST:PORT, got {args.superlink!r}")
    if args.image_dir and not Path(args.image_dir).is_dir():
        raise InputError(f"image folder not found: {args.image_dir}")
    node_cfg = {"image-dir": str(Path(args.image_dir).resolve())} if args.image_dir else {
        "partition-id": args.partition_id, "data-root": str(Path(args.data).resolve()) if args.data else ""}
    if args.insecure:
        _warn("--insecure: the SuperLink is not verified and this node does not authenticate (tests only).")
        ca, key = None, None
    else:
        if not args.root_certificates or not args.auth_key:
            raise InputError("a secure node needs --root-certificates (the SuperLink's CA) and --auth-key "
                             "(this node's private key); --insecure only for tests")
        ca_path = Path(args.root_certificates).expanduser().resolve()
        if not ca_path.is_file():
            raise InputError(f"CA certificate not found: {args.root_certificates}")
        ca, key = str(ca_path), check_node_key(args.auth_key)
    app_hash = (args.app_hash or fedface_app_hash()).strip().lower()
    if len(app_hash) != 64 or any(ch not in "0123456789abcdef" for ch in app_hash):
        raise InputError("--app-hash must be a SHA-256 hex digest")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "faceprivacy"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    shims = write_guard_shims(cache / "guard_bin")
    cmd = supernode_command(args.superlink, node_cfg, insecure=args.insecure, root_certificates=ca, key=key,
                            host=args.host, port=args.port or free_port(args.host), max_wait=args.max_wait)
    print(f"FedFace node: runs only app {app_hash[:16]}…; exits {args.max_wait:.0f} s after the SuperLink is gone",
          flush=True)
    return supervise_node(cmd, flower_env(extra={APP_HASH_ENV: app_hash}, guard_bin=shims), args.superlink,
                          args.max_wait)


def supervise_node(cmd: list[str], env: dict, superlink: str, max_wait: float, poll: float = 2.0) -> int:
    """Run the SuperNode in its own process group until it exits, a signal arrives, or the SuperLink has been
    unreachable for ``max_wait`` seconds (the run is over: Flower's node would otherwise retry for ever)."""
    import contextlib
    import os
    import signal
    import socket
    import subprocess
    import time

    host, _, port = superlink.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def forward(signum: int, frame: object) -> None:
        stop(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    gone_since: float | None = None
    try:
        while proc.poll() is None:
            time.sleep(poll)
            try:
                with socket.create_connection((host, int(port)), timeout=2):
                    gone_since = None
            except (OSError, ValueError):
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since >= max_wait:
                    print(f"the SuperLink {superlink} has been unreachable for {max_wait:.0f} s: the run is over; "
                          "stopping this node", flush=True)
                    stop()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        stop(signal.SIGKILL)
                        proc.wait()
                    return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            stop(signal.SIGKILL)
    return int(proc.returncode or 0)
