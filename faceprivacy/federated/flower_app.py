"""FedFace on Flower's Message API: a ``ServerApp`` with a FedFace strategy and a ``ClientApp``.

The strategy subclasses Flower's ``FedAvg`` for node sampling: ``configure_train`` builds **one message per
node**, each carrying the global head plus *that node's own* class embedding (``RecordDict["embedding"]``; a new
node gets a random one from the server, so its first upload is a clipped, noised *difference*, never its mean
face feature). ``aggregate_train`` validates every reply against the model's own parameter shapes and output
size, clips each update (``max-update-norm``), combines them with equal weights (mean, coordinate-wise median or
trimmed mean; a node's ``num-examples`` claim weighs nothing), stores each embedding under its sender's node id
and runs the spreadout regularizer over all stored class embeddings. After every round it writes the progress
line, the partial result and the model, so an interrupted run still leaves both.

Run on Flower's deployment engine (``faceprivacy.federated.deploy``); Ray / ``flwr[simulation]`` are never
used. The run's settings are one :class:`~faceprivacy.federated.recipe.FedFaceRecipe` (run config); node-config
keys say which identity a SuperNode holds: ``image-dir`` (a folder of the owner's aligned crops) or
``partition-id`` with ``data-root`` (the CelebA subset's n-th training identity; simulation of many owners).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from .aggregation import aggregate, clip_update
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
from .privacy import epsilon
from .recipe import FedFaceRecipe

log = logging.getLogger("faceprivacy.federated.flower")

EMB_KEY = "embedding"
ARR_KEY = "arrays"
#: config key telling a node the embedding it gets is the server's random start (its first participation)
FIRST_KEY = "first-participation"
FEAT_STATE_KEY = "fedface-trunk-features"


def recipe_of(context: Context) -> FedFaceRecipe:
    """The run's recipe, rebuilt (and validated) from Flower's run config."""
    return FedFaceRecipe.from_run_config(dict(context.run_config))


def random_embedding(dim: int, geometry: str, scale: float = 1.0) -> np.ndarray:
    """A server-side random start for a new node's class embedding (OS CSPRNG; unit norm, or ``scale``)."""
    g = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    v = g.standard_normal(dim).astype(np.float32)
    v /= max(float(np.linalg.norm(v)), 1e-12)
    return v if geometry == "cosine" else (v * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------ strategy


class FedFaceStrategy(FedAvg):
    """Node sampling from FedAvg + robust equal-weight aggregation + per-node class embeddings + spreadout.

    ``spreadout=False`` gives plain FedAvg with per-node embeddings (the collapsing baseline). ``emb_dim`` is the
    model's output size (every returned embedding must have it); ``emb_scale`` the norm of a new node's random
    start in the Euclidean geometry. The server step re-implements FedAdam (``ServerAdam``, eps 1e-8) instead
    of Flower's ``FedAdam`` (tau 1e-3 default) because the simulator shares it and its numbers were tuned on it.
    """

    def __init__(self, *, emb_dim: int, spreadout: bool = True, spread_steps: int = 10, spread_lr: float = 1.0,
                 spread_margin: float = 0.3, max_update_norm: float = 1.0, geometry: str = "cosine",
                 server_opt: str = "sgd", server_lr: float = 1.0, aggregation: str = "mean",
                 trim_fraction: float = 0.2, emb_scale: float = 1.0, on_round: Any = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("fraction_evaluate", 0.0)
        super().__init__(**kwargs)
        self.emb_dim = int(emb_dim)
        self.emb_scale = float(emb_scale)
        self.spreadout = spreadout
        self.spread_steps = spread_steps
        self.spread_lr = spread_lr
        self.spread_margin = spread_margin
        self.max_update_norm = max_update_norm
        self.geometry = geometry
        self.aggregation = aggregation
        self.trim_fraction = trim_fraction
        if server_opt not in ("sgd", "adam") or (server_opt == "sgd" and server_lr != 1.0):
            raise ValueError("the Flower strategy supports server-opt 'sgd' (lr 1, FedAvg) or 'adam' (FedAdam)")
        self.adam = ServerAdam(server_lr) if server_opt == "adam" else None
        self.W: dict[int, np.ndarray] = {}  # node id -> class embedding (server state)
        self.first_W: dict[int, np.ndarray] = {}
        self.updates_per_node: dict[int, int] = {}
        self.rejected: list[dict] = []
        self.dropped: list[dict] = []
        self.round_log: list[dict] = []
        self.on_round = on_round
        self._current: ArrayRecord | None = None
        self._sampled: list[int] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample nodes like FedAvg, then give every node its own message with its own embedding."""
        self._current = arrays
        base = list(super().configure_train(server_round, arrays, config, grid))
        out = []
        self._sampled = []
        for m in base:
            nid = m.metadata.dst_node_id
            self._sampled.append(int(nid))
            cfg = ConfigRecord(dict(config))
            if nid not in self.W:  # a new node starts from a random embedding, never from its own template
                self.W[nid] = random_embedding(self.emb_dim, self.geometry, self.emb_scale)
                cfg[FIRST_KEY] = True
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg,
                                  EMB_KEY: ArrayRecord({"w": Array(self.W[nid].astype(np.float32))})})
            out.append(Message(content=content, dst_node_id=nid, message_type=m.metadata.message_type))
        return out

    def _reject(self, server_round: int, nid: int, reason: str) -> None:
        log.warning("round %d: rejected update from node %d: %s", server_round, nid, reason)
        self.rejected.append({"round": server_round, "node": int(nid), "reason": reason})

    def _check_reply(self, server_round: int, msg: Message) -> tuple[torch.Tensor, np.ndarray, float] | None:
        """Validate one reply against the global model; returns (update, embedding, loss) or None (logged)."""
        nid = msg.metadata.src_node_id
        c = msg.content
        try:
            arr = c[self.arrayrecord_key]
            emb = np.asarray(c[EMB_KEY]["w"].numpy(), dtype=np.float32)
            metrics = next(iter(c.metric_records.values()))
            n_ex = metrics[self.weighted_by_key]
            loss = float(metrics.get("loss", math.nan))
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
                self._reject(server_round, nid, f"shape of parameter {k} is {a.shape}, the model's is {b.shape}")
                return None
            parts.append(torch.from_numpy((a - b).ravel()))
        delta = torch.cat(parts)
        reason = validate_update(delta, emb, n_ex, delta.numel(), self.emb_dim, None)
        if reason is not None:
            self._reject(server_round, nid, reason)
            return None
        return delta, class_embedding(emb, self.geometry), loss

    def _apply(self, mean_delta: torch.Tensor) -> ArrayRecord:
        """Global model + the aggregated update (FedAvg) or + an Adam step on it (FedAdam)."""
        cur = self._current
        assert cur is not None
        step = self.adam.step(mean_delta) if self.adam is not None else mean_delta
        step_np = step.numpy()
        out, i = {}, 0
        for k in cur.keys():
            o = np.asarray(cur[k].numpy(), np.float32)
            out[k] = Array((o.ravel() + step_np[i:i + o.size]).reshape(o.shape).astype(np.float32))
            i += o.size
        return ArrayRecord(out)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, clip, combine with equal weights, store embeddings, spreadout the embeddings."""
        replies = list(replies)
        deltas: list[torch.Tensor] = []
        losses: list[float] = []
        accepted: list[int] = []
        answered = set()
        n_clipped = 0
        n_rej = len(self.rejected)
        n_drop = len(self.dropped)
        orphan_errors: list[str] = []  # error replies Flower sends on a node's behalf (from the SuperLink's id)
        for msg in replies:
            nid = int(msg.metadata.src_node_id)
            if msg.has_error():
                reason = f"node error: {msg.error.reason}"
                if nid in self._sampled:
                    answered.add(nid)
                    log.warning("round %d: dropped node %d (%s)", server_round, nid, reason)
                    self.dropped.append({"round": server_round, "node": nid, "reason": reason})
                else:
                    orphan_errors.append(reason)
                continue
            answered.add(nid)
            checked = self._check_reply(server_round, msg)
            if checked is None:
                continue
            delta, emb, loss = checked
            delta, was_clipped = clip_update(delta, self.max_update_norm)
            n_clipped += int(was_clipped)
            deltas.append(delta)
            losses.append(loss)
            accepted.append(nid)
            self.W[nid] = emb
            self.first_W.setdefault(nid, emb.copy())
            self.updates_per_node[nid] = self.updates_per_node.get(nid, 0) + 1
        for nid in self._sampled:
            if nid not in answered:
                reason = orphan_errors.pop(0) if orphan_errors else "no reply within the round timeout"
                log.warning("round %d: dropped node %d (%s)", server_round, nid, reason)
                self.dropped.append({"round": server_round, "node": nid, "reason": reason})
        arrays = None
        if deltas:
            mean_delta = aggregate(deltas, self.aggregation, self.trim_fraction)
            arrays = self._apply(mean_delta)
        else:
            log.warning("round %d: no valid update; the global model is unchanged", server_round)
        entry: dict[str, Any] = {
            "round": server_round, "sampled": len(self._sampled), "replies": len(replies),
            "accepted": len(accepted), "accepted_nodes": accepted, "clipped": n_clipped,
            "rejected": [dict(r) for r in self.rejected[n_rej:]], "dropped": [dict(d) for d in self.dropped[n_drop:]],
        }
        if self.spreadout and len(self.W) > 1:
            ids = sorted(self.W)
            Wm = np.stack([self.W[i] for i in ids])
            entry["spread_before"] = spreadout_value(Wm, self.spread_margin, self.geometry)
            Wm = server_spreadout(Wm, self.spread_steps, self.spread_lr, self.spread_margin, self.geometry)
            entry["spread_after"] = spreadout_value(Wm, self.spread_margin, self.geometry)
            self.W = {i: Wm[k] for k, i in enumerate(ids)}
        entry["client_loss"] = float(np.mean(losses)) if losses else math.nan
        self.round_log.append(entry)
        if self.on_round is not None:
            self.on_round(entry, arrays)
        metrics = MetricRecord({"loss": entry["client_loss"]}) if losses else None
        return arrays, metrics

    def summary_dict(self) -> dict[str, Any]:
        """Per-node bookkeeping (no embeddings themselves): update counts and how far each embedding moved."""
        return {"nodes": {str(n): {"updates": self.updates_per_node.get(n, 0),
                                   "embedding_change": float(np.linalg.norm(self.W[n] - self.first_W[n]))}
                          for n in sorted(self.first_W)},
                "rounds": self.round_log, "rejected": self.rejected, "dropped": self.dropped}


# ------------------------------------------------------------------------------------------------ model


_SPLIT_CACHE: dict[tuple[str, int], SplitModel] = {}
_FEAT_CACHE: dict[tuple, torch.Tensor] = {}


def get_split(recipe: FedFaceRecipe) -> SplitModel:
    """The run's backbone split (cached per process)."""
    key = (recipe.backbone, recipe.seed)
    if key not in _SPLIT_CACHE:
        _SPLIT_CACHE[key] = build_split(key[0], seed=key[1])
    return _SPLIT_CACHE[key]


def _compute_features(recipe: FedFaceRecipe, node_config: dict[str, Any], split: SplitModel) -> torch.Tensor:
    image_dir = str(node_config.get("image-dir", "") or "")
    pid = int(node_config.get("partition-id", 0))
    if split.input_kind == "vector":  # synthetic clients for the tiny backbone
        from .synthetic import synthetic_clients

        feats, _ = synthetic_clients(1, 8, dim=int(split.info.get("in_dim", 64)),
                                     seed=1000003 * recipe.seed + pid)
        return trunk_features(split, feats[0])
    if image_dir:
        from ..core.data import IMAGE_EXTS

        paths = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        return dataset_features(split, paths)
    from ..core.data import celeba_subset, identity_split

    root = str(node_config.get("data-root", "") or recipe.data_root)
    train = identity_split(celeba_subset(root))["train"]
    ids = train.identities
    if not 0 <= pid < len(ids):
        raise ValueError(f"partition-id {pid} outside 0..{len(ids) - 1}")
    return dataset_features(split, train.select_identities([ids[pid]]).paths)


def client_features(recipe: FedFaceRecipe, node_config: dict[str, Any], split: SplitModel,
                    state: RecordDict | None = None) -> torch.Tensor:
    """Trunk features of the identity this SuperNode holds (computed locally once, never sent).

    Kept across rounds in the node's run state (``context.state``: each round runs in a new app process on a
    SuperNode) and in a per-process cache (in-process grids).
    """
    key = (split.name, recipe.seed, str(node_config.get("image-dir", "")), int(node_config.get("partition-id", 0)),
           str(node_config.get("data-root", recipe.data_root)))
    tag = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    rec = state.array_records.get(FEAT_STATE_KEY) if state is not None else None
    if key in _FEAT_CACHE:
        f = _FEAT_CACHE[key]
    elif rec is not None and tag in rec:
        f = torch.from_numpy(np.asarray(rec[tag].numpy(), dtype=np.float32))
    else:
        f = _compute_features(recipe, node_config, split)
    _FEAT_CACHE[key] = f
    if state is not None and (rec is None or tag not in rec):
        state[FEAT_STATE_KEY] = ArrayRecord({tag: Array(f.numpy().astype(np.float32))})
    return f


def _round_seed(seed: int, rnd: int, node: int) -> int:
    """Batch-sampling seed of one node round (known to the server, which is fine: it drives no noise)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{rnd}:{node}".encode()).digest()[:8], "little") >> 1


def client_config(recipe: FedFaceRecipe) -> ClientConfig:
    """The client's training settings from the run's recipe."""
    return ClientConfig(local_steps=recipe.local_steps, batch_size=recipe.batch_size, lr=recipe.lr,
                        margin=recipe.margin, geometry=recipe.geometry,
                        embedding_lr=None if recipe.embedding_lr < 0 else recipe.embedding_lr,
                        dp_clip=recipe.dp_clip, dp_noise=recipe.dp_noise)


# ------------------------------------------------------------------------------------------------ apps


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One FedFace client round on this node's own images; replies head params + own embedding only."""
    recipe = recipe_of(context)
    split = get_split(recipe)
    head = split.head
    load_head_state_arrays(head, {k: v.numpy() for k, v in msg.content[ARR_KEY].items()})
    gvec = head_vector(head)
    feats = client_features(recipe, dict(context.node_config), split, context.state)
    c = msg.content["config"]
    ref = np.asarray(msg.content[EMB_KEY]["w"].numpy(), dtype=np.float32)
    # first participation: start from this node's own mean feature, but upload only the clipped, noised
    # difference to the server's random start (``reference``)
    start = init_class_embedding(head, feats, recipe.geometry) if bool(c.get(FIRST_KEY, False)) else ref
    rnd = int(c.get("server-round", 0))
    upd = client_update(head, gvec, feats, start, client_config(recipe),
                        seed=_round_seed(recipe.seed, rnd, int(context.node_id)), reference=ref)
    load_head_vector(head, gvec + upd.delta)
    content = RecordDict({
        ARR_KEY: ArrayRecord({k: Array(v) for k, v in head_state_arrays(head).items()}),
        EMB_KEY: ArrayRecord({"w": Array(upd.embedding.astype(np.float32))}),
        "metrics": MetricRecord({"num-examples": int(upd.num_examples), "loss": float(upd.loss)}),
    })
    return Message(content=content, reply_to=msg)


server_app = ServerApp()


def build_strategy(recipe: FedFaceRecipe, emb_dim: int, on_round: Any = None) -> FedFaceStrategy:
    """The FedFace strategy configured from the run's recipe."""
    r = recipe
    return FedFaceStrategy(
        emb_dim=emb_dim, fraction_train=r.fraction_train, min_train_nodes=r.min_train_nodes,
        min_available_nodes=r.min_available_nodes, spreadout=r.spreadout, spread_steps=r.spread_steps,
        spread_lr=r.spread_lr, spread_margin=r.spread_margin, max_update_norm=r.max_update_norm,
        geometry=r.geometry, server_opt=r.server_opt, server_lr=r.server_lr, aggregation=r.aggregation,
        trim_fraction=r.trim_fraction, on_round=on_round)


def _output_dim(split: SplitModel) -> int:
    """The head's output size (every class embedding must have it)."""
    linears = [m for m in split.head.modules() if isinstance(m, torch.nn.Linear)]
    return int(linears[-1].out_features) if linears else int(list(split.head.parameters())[-1].shape[0])


class RunWriter:
    """Writes, after every round, one progress line and the partial result + model (atomically)."""

    def __init__(self, recipe: FedFaceRecipe, init: dict[str, np.ndarray], strategy_ref: list,
                 evaluate: Any = None) -> None:
        self.recipe = recipe
        self.evaluate = evaluate  # arrays -> verification metrics on held-out identities (or None)
        self.curve: list[dict] = []
        self.init = init
        self.final = dict(init)
        self.strategy_ref = strategy_ref
        self.out = Path(recipe.out_dir) if recipe.out_dir else None
        self.t0 = time.time()
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "progress.jsonl").unlink(missing_ok=True)

    def summary(self, complete: bool) -> dict[str, Any]:
        r = self.recipe
        strat = self.strategy_ref[0]
        change = float(np.sqrt(sum(float(np.sum((self.final[k] - self.init[k]) ** 2)) for k in self.init)))
        most = max(strat.updates_per_node.values(), default=0)
        eps = epsilon(r.dp_noise, most, r.dp_delta) if r.dp_noise > 0 else None
        return {"backbone": r.backbone, "num_rounds": r.num_server_rounds, "rounds_done": len(strat.round_log),
                "eval_curve": self.curve,
                "complete": complete, "model_change_l2": change, "recipe": r.to_run_config(),
                "privacy": {"dp_clip": r.dp_clip, "dp_noise": r.dp_noise, "delta": r.dp_delta,
                            "max_uploads_per_node": most,
                            "epsilon": eps if eps is None or math.isfinite(eps) else "inf"},
                "elapsed_s": round(time.time() - self.t0, 1), **strat.summary_dict()}

    def write(self, complete: bool) -> dict[str, Any]:
        summary = self.summary(complete)
        if self.out is not None:
            from ..core.fileio import atomic_path, atomic_write_json

            if self.recipe.save_model:
                with atomic_path(self.out / "flower_head.npz") as tmp, open(tmp, "wb") as f:
                    np.savez(f, **self.final)
            atomic_write_json(self.out / "flower_result.json", summary)
            if self.curve:
                write_round_report(self.curve, summary, self.out / "flower_report.html")
        return summary

    def on_round(self, entry: dict[str, Any], arrays: ArrayRecord | None) -> None:
        if arrays is not None:
            self.final = {k: np.asarray(v.numpy()) for k, v in arrays.items()}
        line = {k: entry[k] for k in ("round", "sampled", "accepted", "clipped", "rejected", "dropped",
                                       "client_loss")}
        if self.evaluate is not None:
            if not self.curve:
                self.curve.append({"round": 0, **self.evaluate(self.init)})
            m = self.evaluate(self.final)
            self.curve.append({"round": entry["round"], **m})
            line["tar@far=1e-3"] = m["tar@far=0.001"]
        line["num_rounds"] = self.recipe.num_server_rounds
        line["elapsed_s"] = round(time.time() - self.t0, 1)
        log.info("round %d/%d: %d accepted, %d rejected, %d dropped", entry["round"],
                 self.recipe.num_server_rounds, entry["accepted"], len(entry["rejected"]), len(entry["dropped"]))
        if self.out is not None:
            with open(self.out / "progress.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
        self.write(complete=False)


def server_evaluator(recipe: FedFaceRecipe, split: SplitModel):
    """``arrays -> metrics``: TAR@FAR on the held-out identities of ``recipe.eval_data`` (features once)."""
    import copy

    from ..core.data import celeba_subset, identity_split
    from .evaluate import head_evaluator

    root = Path(recipe.eval_data)
    if (root / "celeba_subset_aligned112").is_dir():
        root = root / "celeba_subset_aligned112"
    test = identity_split(celeba_subset(root))["test"]
    ev = head_evaluator(dataset_features(split, test.paths), np.asarray(test.labels))
    head = copy.deepcopy(split.head)

    def evaluate(arrays: dict[str, np.ndarray]) -> dict:
        load_head_state_arrays(head, arrays)
        return ev(head)

    return evaluate


def write_round_report(curve: list[dict], summary: dict, dest: Path) -> Path:
    """``flower_report.html``: TAR@FAR=1e-3 per round (figure + table) and the per-round node counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.report import HtmlReport, figure_to_png_bytes

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["round"] for c in curve], [c["tar@far=0.001"] for c in curve], marker="o")
    ax.set(xlabel="round", ylabel="TAR @ FAR=1e-3", title="held-out identities")
    ax.grid(alpha=0.3)
    rep = HtmlReport("FedFace on Flower — per-round report")
    rep.paragraph(f"Backbone {summary['backbone']}; {summary['rounds_done']} of {summary['num_rounds']} rounds; "
                  f"epsilon {summary['privacy']['epsilon']}.")
    rep.png(figure_to_png_bytes(fig), "TAR@FAR=1e-3 per round")
    rep.table([{"round": c["round"], "TAR@1e-3": round(c["tar@far=0.001"], 4),
                "95% CI": c.get("tar@far=0.001_ci95"), "EER": round(c["eer"], 4)} for c in curve])
    rep.table([{"round": r["round"], "accepted": r["accepted"], "clipped": r["clipped"],
                "rejected": len(r["rejected"]), "dropped": len(r["dropped"])} for r in summary["rounds"]])
    return rep.write(dest)


def run_server(grid: Grid, recipe: FedFaceRecipe) -> dict[str, Any]:
    """Drive the FedFace rounds on ``grid``; returns (and, with ``out_dir``, writes) a JSON summary."""
    split = build_split(recipe.backbone, seed=recipe.seed)  # pristine: in-process clients train the cached one
    init = head_state_arrays(split.head)
    holder: list = []
    writer = RunWriter(recipe, init, holder, server_evaluator(recipe, split) if recipe.eval_data else None)
    strategy = build_strategy(recipe, _output_dim(split), on_round=writer.on_round)
    holder.append(strategy)
    strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in init.items()}),
                   num_rounds=recipe.num_server_rounds, timeout=recipe.round_timeout)
    summary = writer.write(complete=True)
    log.info("FedFace finished: %s", json.dumps({k: summary[k] for k in ("num_rounds", "model_change_l2")}))
    return summary


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """ServerApp entry point (Flower calls it with the grid of connected SuperNodes)."""
    torch.set_num_threads(1)
    run_server(grid, recipe_of(context))
