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
    p.add_argument("--synthetic", action="store_true", help="synthetic clients (tiny backbone; timing/smoke only)")
    add_out(p, lambda a: run_dir("fed-simulate"), "eval_fed_simulate_DATE_TIME/ in the current folder",
            help="output folder (fed_results.json, fed_report.html)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable checkpoint every k rounds into OUT/checkpoints (holds the server's "
                        "class embeddings: keep it private)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    _add_hparams(p)
    add_common(p, threads=1)
    p.set_defaults(func=cmd_simulate)

    s = command(sub, "fed-server", "run FedFace on Flower's deployment engine (SuperLink + ServerApp)",
                examples=["faceprivacy fed-server --insecure --min-nodes 2 --rounds 5 --data ../shared/datakit/celeba_subset_aligned112",
                          "faceprivacy fed-server --ssl-certfile s.pem --ssl-keyfile s.key --ssl-ca-certfile ca.pem"],
                description="Starts a Flower SuperLink, submits the FedFace app, waits until it finishes "
                                   "(min-nodes SuperNodes must connect, see fed-client), writes the summary.")
    s.add_argument("--host", default="127.0.0.1", help="address the SuperLink binds to")
    s.add_argument("--port", type=int, default=9092, help="port the SuperLink's Fleet API binds to")
    s.add_argument("--rounds", type=int, default=10, help="federated rounds")
    s.add_argument("--min-nodes", type=int, default=2, help="nodes required per round")
    s.add_argument("--fraction-train", type=float, default=1.0, help="fraction of connected nodes trained per round")
    s.add_argument("--no-spreadout", action="store_true", help="plain FedAvg (baseline)")
    s.add_argument("--data", default="", help="CelebA subset root for partition-id clients")
    s.add_argument("--out", default="out/fed_server", help="output folder (flower_result.json, Flower logs)")
    s.add_argument("--insecure", action="store_true", help="no TLS (local tests only)")
    s.add_argument("--ssl-certfile", help="server certificate (PEM) for TLS")
    s.add_argument("--ssl-keyfile", help="server private key (PEM) for TLS")
    s.add_argument("--ssl-ca-certfile", help="CA certificate (PEM) that signed the server certificate")
    s.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run to finish")
    _add_hparams(s)
    add_common(s, threads=1)
    s.set_defaults(func=cmd_server)

    c = command(sub, "fed-client", "join a FedFace federation as one identity (Flower SuperNode)",
                examples=["faceprivacy fed-client --superlink 127.0.0.1:9092 --image-dir me/ --insecure",
                          "faceprivacy fed-client --superlink host:9092 --partition-id 3 --data celeba_subset_aligned112 "
                          "--root-certificates ca.pem"])
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
    c.add_argument("--insecure", action="store_true", help="no TLS (local tests only)")
    c.add_argument("--root-certificates", help="CA certificate of the SuperLink (TLS)")
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
    backbone = "tiny" if args.synthetic else args.backbone
    split, data = prepare(backbone, _default_data(args.data), args.synthetic, args.clients, args.seed)
    hp = resolve_hparams(args)
    elr = None if float(hp["embedding_lr"]) < 0 else float(hp["embedding_lr"])
    cfg = SimConfig(rounds=args.rounds, clients_per_round=args.clients_per_round, seed=args.seed,
                    client=ClientConfig(local_steps=args.local_steps, batch_size=args.batch_size, lr=float(hp["lr"]),
                                        embedding_lr=elr, margin=float(hp["margin"]), geometry=hp["geometry"],
                                        dp_clip=args.dp_clip, dp_noise=args.dp_noise),
                    server=ServerConfig(spread_lr=float(hp["spread_lr"]), spread_steps=args.spread_steps,
                                        spread_margin=float(hp["spread_margin"]), server_opt=str(hp["server_opt"]),
                                        server_lr=float(hp["server_lr"])),
                    dropout=args.dropout, faulty_fraction=args.faulty, eval_every=args.eval_every,
                    checkpoint_every=args.checkpoint_every)
    metric = args.central_loss == "metric"
    central = CentralConfig(epochs=args.central_epochs, loss=args.central_loss, seed=args.seed,
                            optimizer="adam" if metric else "sgd",
                            lr=args.central_lr if args.central_lr is not None else (1e-5 if metric else 3e-6))
    out = Path(args.out)
    ckdir = out / "checkpoints" if (args.checkpoint_every > 0 or args.resume) else None
    results = run_experiment(data, split, cfg, algos, central,
                             checkpoint_dir=ckdir, resume=args.resume)
    paths = write_outputs(results, out)
    from ..core.options import Summary

    s = Summary(f"simulated {', '.join(algos)} for {args.rounds} round(s)").wrote(paths["json"], paths["html"])
    for row in results["summary"]:
        s.number(f"{row['method']} TAR at FAR=1e-3 (higher is better)", row["tar@far=1e-3"],
                 f"({row['gain_tar@1e-3_points']:+.2f} points vs the start)")
    return s.then(f"open {paths['html']}").print()


def _run_config(args: argparse.Namespace) -> dict:
    hp = resolve_hparams(args)
    return {"num-server-rounds": args.rounds, "min-train-nodes": args.min_nodes,
            "min-available-nodes": args.min_nodes, "fraction-train": args.fraction_train,
            "backbone": args.backbone, "data-root": str(Path(args.data).resolve()) if args.data else "",
            "local-steps": args.local_steps, "batch-size": args.batch_size, "lr": float(hp["lr"]), "margin": float(hp["margin"]),
            "geometry": hp["geometry"], "embedding-lr": float(hp["embedding_lr"]),
            "server-opt": str(hp["server_opt"]), "server-lr": float(hp["server_lr"]),
            "spreadout": not args.no_spreadout, "spread-steps": args.spread_steps,
            "spread-lr": float(hp["spread_lr"]), "spread-margin": float(hp["spread_margin"]),
            "dp-clip": args.dp_clip, "dp-noise": args.dp_noise,
            "seed": args.seed, "out-dir": str(Path(args.out).resolve()), "round-timeout": args.timeout}


def cmd_server(args: argparse.Namespace) -> int:
    """Handler of ``fed-server``: SuperLink + FedFace run until it finishes, then shut down."""

    from .deploy import LocalFederation

    ssl = {"ssl-certfile": args.ssl_certfile, "ssl-keyfile": args.ssl_keyfile,
           "ssl-ca-certfile": args.ssl_ca_certfile}
    out = Path(args.out).resolve()  # the Flower processes run in other folders
    with LocalFederation(out / "flower", host=args.host, insecure=args.insecure, ssl=ssl) as fed:
        addr = fed.start_superlink(args.port)
        print(f"SuperLink on {addr}; waiting for {args.min_nodes} SuperNodes "
              f"(faceprivacy fed-client --superlink {addr} ...)", flush=True)
        summary = fed.run_app(_run_config(args), timeout=args.timeout)
    from ..core.options import Summary

    return (Summary(f"FedFace on Flower finished {summary['num_rounds']} round(s)",
                    written=[str(out / "flower_result.json")])
            .number("model change (L2 norm of the update, > 0 means it trained)", summary["model_change_l2"])
            .then(f"faceprivacy fed-simulate --rounds {args.rounds}   # in-process, with held-out evaluation")
            .print())


def cmd_client(args: argparse.Namespace) -> int:
    """Handler of ``fed-client``: become a Flower SuperNode holding one identity (runs until stopped)."""
    import os
    import sys

    from ..core.errors import InputError
    from .deploy import _toml_value, flower_env, flower_exe, free_port

    if args.image_dir and not Path(args.image_dir).is_dir():
        raise InputError(f"image folder not found: {args.image_dir}")
    node_cfg = {"image-dir": str(Path(args.image_dir).resolve())} if args.image_dir else {
        "partition-id": args.partition_id, "data-root": str(Path(args.data).resolve()) if args.data else ""}
    tls = ["--insecure"] if args.insecure else (
        ["--root-certificates", args.root_certificates] if args.root_certificates else [])
    cmd = [flower_exe("flower-supernode"), *tls, "--superlink", args.superlink, "--host", args.host,
           "--port", str(args.port or free_port(args.host)),
           "--node-config", " ".join(f"{k}={_toml_value(v)}" for k, v in node_cfg.items())]
    # replace this process by the SuperNode: signals (Ctrl-C, SIGTERM from a supervisor) reach it directly
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, flower_env())
    return 0  # not reached
