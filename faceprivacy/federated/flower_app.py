"""FedFace on Flower's Message API: a ``ServerApp`` with a FedFace strategy and a ``ClientApp``.

The strategy subclasses Flower's ``FedAvg``: ``configure_train`` builds **one message per node**, each carrying
the global head plus *that node's own* class embedding (``RecordDict["embedding"]``); ``aggregate_train`` stores
each reply's embedding under its sender's node id, rejects malformed/NaN replies with a log line, lets FedAvg
average the heads and finally runs the spreadout regularizer over all stored class embeddings.

Run on Flower's deployment engine (``flower-superlink`` + ``flower-supernode`` + ``flwr run``, see
``faceprivacy.federated.deploy``); Ray / ``flwr[simulation]`` are never used. Run-config keys (defaults in
:data:`DEFAULT_RUN_CONFIG`) choose the backbone, rounds and hyper-parameters; node-config keys say which
identity a SuperNode holds: ``image-dir`` (a folder of the owner's aligned crops) or ``partition-id`` with
``data-root`` (the CelebA subset's n-th training identity; simulation of many owners).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from .algorithm import (
    ClientConfig,
    ServerAdam,
    class_embedding,
    client_update,
    head_state_arrays,
    head_vector,
    init_class_embedding,
    load_head_state_arrays,
    load_head_vector,
    server_spreadout,
    spreadout_value,
    validate_update,
)
from .backbone import SplitModel, build_split, dataset_features, trunk_features

log = logging.getLogger("faceprivacy.federated.flower")

#: run-config keys understood by the apps (pyproject ``[tool.flwr.app.config]``, ``flwr run --run-config``)
DEFAULT_RUN_CONFIG: dict[str, Any] = {
    "num-server-rounds": 3,
    "fraction-train": 1.0,
    "min-train-nodes": 2,
    "min-available-nodes": 2,
    "backbone": "tiny",
    "data-root": "",
    "local-steps": 1,
    "batch-size": 32,
    "lr": 0.01,
    "margin": 0.9,
    "geometry": "cosine",
    "embedding-lr": -1.0,
    "server-opt": "sgd",
    "server-lr": 1.0,
    "spreadout": True,
    "spread-steps": 10,
    "spread-lr": 1.0,
    "spread-margin": 0.3,
    "max-update-norm": 0.0,
    "dp-clip": 0.0,
    "dp-noise": 0.0,
    "seed": 0,
    "out-dir": "",
    "round-timeout": 600.0,
}

EMB_KEY = "embedding"
ARR_KEY = "arrays"


def _cfg(context: Context) -> dict[str, Any]:
    cfg = dict(DEFAULT_RUN_CONFIG)
    cfg.update(dict(context.run_config))
    return cfg


# ------------------------------------------------------------------------------------------------ strategy


class FedFaceStrategy(FedAvg):
    """FedAvg of the head + per-node class embeddings + server-side spreadout (FedFace).

    ``spreadout=False`` gives plain FedAvg with per-node embeddings (the collapsing baseline).
    """

    def __init__(self, *, spreadout: bool = True, spread_steps: int = 10, spread_lr: float = 1.0,
                 spread_margin: float = 0.3, max_update_norm: float = 0.0, geometry: str = "cosine",
                 server_opt: str = "sgd", server_lr: float = 1.0, **kwargs: Any) -> None:
        kwargs.setdefault("fraction_evaluate", 0.0)
        super().__init__(**kwargs)
        self.spreadout = spreadout
        self.spread_steps = spread_steps
        self.spread_lr = spread_lr
        self.spread_margin = spread_margin
        self.max_update_norm = max_update_norm
        self.geometry = geometry
        if server_opt not in ("sgd", "adam") or (server_opt == "sgd" and server_lr != 1.0):
            raise ValueError("the Flower strategy supports server-opt 'sgd' (lr 1, FedAvg) or 'adam' (FedAdam)")
        self.adam = ServerAdam(server_lr) if server_opt == "adam" else None
        self.W: dict[int, np.ndarray] = {}  # node id -> class embedding (server state)
        self.first_W: dict[int, np.ndarray] = {}
        self.updates_per_node: dict[int, int] = {}
        self.rejected: list[dict] = []
        self.round_log: list[dict] = []
        self._current: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample nodes like FedAvg, then give every node its own message with its own embedding."""
        self._current = arrays
        base = list(super().configure_train(server_round, arrays, config, grid))
        out = []
        for m in base:
            nid = m.metadata.dst_node_id
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            if nid in self.W:
                content[EMB_KEY] = ArrayRecord({"w": Array(self.W[nid].astype(np.float32))})
            out.append(Message(content=content, dst_node_id=nid, message_type=m.metadata.message_type))
        return out

    def _reject(self, server_round: int, nid: int, reason: str) -> None:
        log.warning("round %d: rejected update from node %d: %s", server_round, nid, reason)
        self.rejected.append({"round": server_round, "node": int(nid), "reason": reason})

    def _check_reply(self, server_round: int, msg: Message) -> np.ndarray | None:
        """Validate one reply; returns its embedding, or None (after logging) if it must be rejected."""
        nid = msg.metadata.src_node_id
        c = msg.content
        try:
            arr = c[self.arrayrecord_key]
            emb = c[EMB_KEY]["w"].numpy().astype(np.float32)
            metrics = next(iter(c.metric_records.values()))
            n_ex = metrics[self.weighted_by_key]
        except Exception as e:  # noqa: BLE001 - missing or malformed records
            self._reject(server_round, nid, f"malformed reply ({type(e).__name__}: {e})")
            return None
        cur = self._current
        if cur is None or set(arr.keys()) != set(cur.keys()):
            self._reject(server_round, nid, "parameter names differ from the global model")
            return None
        parts = []
        for k in cur.keys():
            a, b = np.asarray(arr[k].numpy(), np.float32), np.asarray(cur[k].numpy(), np.float32)
            if a.shape != b.shape:
                self._reject(server_round, nid, f"shape of parameter {k} differs from the global model")
                return None
            parts.append(torch.from_numpy((a - b).ravel()))
        delta = torch.cat(parts)
        reason = validate_update(delta, emb, n_ex, delta.numel(), None,
                                 self.max_update_norm if self.max_update_norm > 0 else None)
        if reason is None and self.W and emb.shape[0] != next(iter(self.W.values())).shape[0]:
            reason = f"embedding has {emb.shape[0]} dims"
        if reason is not None:
            self._reject(server_round, nid, reason)
            return None
        return class_embedding(emb, self.geometry)

    def _server_adam(self, arrays: ArrayRecord) -> ArrayRecord:
        """FedAdam: treat (FedAvg result - current global) as the mean update and take an Adam step instead."""
        cur = self._current
        assert cur is not None and self.adam is not None
        keys = list(cur.keys())
        olds = [np.asarray(cur[k].numpy(), np.float32) for k in keys]
        news = [np.asarray(arrays[k].numpy(), np.float32) for k in keys]
        delta = torch.from_numpy(np.concatenate([(n - o).ravel() for n, o in zip(news, olds, strict=True)]))
        step = self.adam.step(delta).numpy()
        out, i = {}, 0
        for k, o in zip(keys, olds, strict=True):
            out[k] = Array((o.ravel() + step[i:i + o.size]).reshape(o.shape).astype(np.float32))
            i += o.size
        return ArrayRecord(out)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, store embeddings, FedAvg the heads, spreadout the embeddings."""
        replies = list(replies)
        good: list[Message] = []
        for msg in replies:
            if msg.has_error():
                log.warning("round %d: node %d failed: %s", server_round, msg.metadata.src_node_id,
                            msg.error.reason)
                continue
            emb = self._check_reply(server_round, msg)
            if emb is None:
                continue
            nid = msg.metadata.src_node_id
            self.W[nid] = emb
            self.first_W.setdefault(nid, emb.copy())
            self.updates_per_node[nid] = self.updates_per_node.get(nid, 0) + 1
            del msg.content[EMB_KEY]  # FedAvg expects exactly one ArrayRecord per reply
            good.append(msg)
        arrays, metrics = (None, None)
        if good:
            arrays, metrics = super().aggregate_train(server_round, good)
            if arrays is not None and self.adam is not None:
                arrays = self._server_adam(arrays)
        entry: dict[str, Any] = {"round": server_round, "replies": len(replies), "accepted": len(good),
                                 "rejected": len(replies) - len(good)}
        if self.spreadout and len(self.W) > 1:
            ids = sorted(self.W)
            Wm = np.stack([self.W[i] for i in ids])
            entry["spread_before"] = spreadout_value(Wm, self.spread_margin, self.geometry)
            Wm = server_spreadout(Wm, self.spread_steps, self.spread_lr, self.spread_margin, self.geometry)
            entry["spread_after"] = spreadout_value(Wm, self.spread_margin, self.geometry)
            self.W = {i: Wm[k] for k, i in enumerate(ids)}
        if metrics is not None:
            entry["client_loss"] = float(metrics.get("loss", math.nan))
        self.round_log.append(entry)
        return arrays, metrics

    def summary_dict(self) -> dict[str, Any]:
        """Per-node bookkeeping (no embeddings themselves): update counts and how far each embedding moved."""
        return {"nodes": {str(n): {"updates": self.updates_per_node.get(n, 0),
                                   "embedding_change": float(np.linalg.norm(self.W[n] - self.first_W[n]))}
                          for n in sorted(self.W)},
                "rounds": self.round_log, "rejected": self.rejected}


# ------------------------------------------------------------------------------------------------ model


_SPLIT_CACHE: dict[tuple[str, int], SplitModel] = {}
_FEAT_CACHE: dict[tuple, torch.Tensor] = {}


def get_split(cfg: dict[str, Any]) -> SplitModel:
    """The run's backbone split (cached per process)."""
    key = (str(cfg["backbone"]), int(cfg["seed"]))
    if key not in _SPLIT_CACHE:
        _SPLIT_CACHE[key] = build_split(key[0], seed=key[1])
    return _SPLIT_CACHE[key]


def client_features(cfg: dict[str, Any], node_config: dict[str, Any], split: SplitModel) -> torch.Tensor:
    """Trunk features of the identity this SuperNode holds (computed locally, never sent)."""
    image_dir = str(node_config.get("image-dir", "") or "")
    pid = int(node_config.get("partition-id", 0))
    key = (split.name, image_dir, pid, str(node_config.get("data-root", cfg["data-root"])))
    if key in _FEAT_CACHE:
        return _FEAT_CACHE[key]
    if split.input_kind == "vector":  # synthetic clients for the tiny backbone
        from .synthetic import synthetic_clients

        feats, _ = synthetic_clients(1, 8, dim=int(split.info.get("in_dim", 64)),
                                     seed=1000003 * int(cfg["seed"]) + pid)
        f = trunk_features(split, feats[0])
    elif image_dir:
        from ..core.data import IMAGE_EXTS

        paths = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        f = dataset_features(split, paths)
    else:
        from ..core.data import celeba_subset, identity_split

        root = str(node_config.get("data-root", "") or cfg["data-root"])
        train = identity_split(celeba_subset(root))["train"]
        ids = train.identities
        if not 0 <= pid < len(ids):
            raise ValueError(f"partition-id {pid} outside 0..{len(ids) - 1}")
        f = dataset_features(split, train.select_identities([ids[pid]]).paths)
    _FEAT_CACHE[key] = f
    return f


# ------------------------------------------------------------------------------------------------ apps


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One FedFace client round on this node's own images; replies head params + own embedding only."""
    cfg = _cfg(context)
    split = get_split(cfg)
    head = split.head
    load_head_state_arrays(head, {k: v.numpy() for k, v in msg.content[ARR_KEY].items()})
    gvec = head_vector(head)
    feats = client_features(cfg, dict(context.node_config), split)
    c = msg.content["config"]
    if EMB_KEY in msg.content:
        emb = msg.content[EMB_KEY]["w"].numpy().astype(np.float32)
    else:  # first participation: initialise with the mean feature under the received model
        emb = init_class_embedding(head, feats, str(c.get("geometry", "cosine")))
    elr = float(c.get("embedding-lr", -1.0))
    ccfg = ClientConfig(local_steps=int(c.get("local-steps", 1)), batch_size=int(c.get("batch-size", 32)),
                        lr=float(c.get("lr", 0.01)), margin=float(c.get("margin", 0.9)),
                        geometry=str(c.get("geometry", "cosine")), embedding_lr=None if elr < 0 else elr,
                        dp_clip=float(c.get("dp-clip", 0.0)), dp_noise=float(c.get("dp-noise", 0.0)))
    rnd = int(c.get("server-round", 0))
    upd = client_update(head, gvec, feats, emb, ccfg, seed=hash((int(cfg["seed"]), rnd, context.node_id)))
    load_head_vector(head, gvec + upd.delta)
    content = RecordDict({
        ARR_KEY: ArrayRecord({k: Array(v) for k, v in head_state_arrays(head).items()}),
        EMB_KEY: ArrayRecord({"w": Array(upd.embedding.astype(np.float32))}),
        "metrics": MetricRecord({"num-examples": int(upd.num_examples), "loss": float(upd.loss)}),
    })
    return Message(content=content, reply_to=msg)


server_app = ServerApp()


def build_strategy(cfg: dict[str, Any]) -> FedFaceStrategy:
    """The FedFace strategy configured from run-config values."""
    return FedFaceStrategy(
        fraction_train=float(cfg["fraction-train"]), min_train_nodes=int(cfg["min-train-nodes"]),
        min_available_nodes=int(cfg["min-available-nodes"]), spreadout=bool(cfg["spreadout"]),
        spread_steps=int(cfg["spread-steps"]), spread_lr=float(cfg["spread-lr"]),
        spread_margin=float(cfg["spread-margin"]), max_update_norm=float(cfg["max-update-norm"]),
        geometry=str(cfg["geometry"]), server_opt=str(cfg["server-opt"]), server_lr=float(cfg["server-lr"]))


def run_server(grid: Grid, cfg: dict[str, Any]) -> dict[str, Any]:
    """Drive the FedFace rounds on ``grid``; returns (and, with ``out-dir``, writes) a JSON summary."""
    split = get_split(cfg)
    init = head_state_arrays(split.head)
    strategy = build_strategy(cfg)
    train_cfg = ConfigRecord({"local-steps": int(cfg["local-steps"]), "batch-size": int(cfg["batch-size"]),
                              "lr": float(cfg["lr"]), "margin": float(cfg["margin"]),
                              "geometry": str(cfg["geometry"]), "embedding-lr": float(cfg["embedding-lr"]),
                              "dp-clip": float(cfg["dp-clip"]), "dp-noise": float(cfg["dp-noise"])})
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in init.items()}),
                            num_rounds=int(cfg["num-server-rounds"]), timeout=float(cfg["round-timeout"]),
                            train_config=train_cfg)
    final = {k: v.numpy() for k, v in result.arrays.items()} if result.arrays is not None else init
    change = float(np.sqrt(sum(float(np.sum((final[k] - init[k]) ** 2)) for k in init)))
    summary = {"backbone": cfg["backbone"], "num_rounds": int(cfg["num-server-rounds"]),
               "model_change_l2": change, **strategy.summary_dict()}
    out = str(cfg.get("out-dir", "") or "")
    if out:
        from ..core.fileio import atomic_write_json

        atomic_write_json(Path(out) / "flower_result.json", summary)
        if cfg.get("save-model", False):
            np.savez(Path(out) / "flower_head.npz", **final)
    log.info("FedFace finished: %s", json.dumps({k: summary[k] for k in ("num_rounds", "model_change_l2")}))
    return summary


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """ServerApp entry point (Flower calls it with the grid of connected SuperNodes)."""
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    run_server(grid, _cfg(context))
