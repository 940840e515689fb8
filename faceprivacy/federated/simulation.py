"""In-process federated simulation for hundreds to thousands of one-identity clients on a few CPU cores.

No Ray, no sockets: clients are trained one after another in the same process on their precomputed trunk
features, re-using one scratch copy of the head. A round samples ``clients_per_round`` clients, simulates
drop-outs and (optionally) faulty clients, validates every update (rejecting malformed/NaN ones with a log
line), averages the accepted ones (FedAvg, streaming) and runs spreadout over all class embeddings (FedFace).
Rounds are deterministic functions of ``(seed, round)`` so a run resumed from a checkpoint continues exactly.

>>> import torch
>>> from faceprivacy.federated.synthetic import synthetic_clients
>>> feats, _ = synthetic_clients(6, 4, dim=8, seed=0)
>>> sim = FederatedSimulator(torch.nn.Linear(8, 4), feats, SimConfig(rounds=2, clients_per_round=3))
>>> hist = sim.run(progress_bar=False)
>>> [h["round"] for h in hist]
[1, 2]
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError
from ..core.fileio import atomic_path
from .algorithm import (
    GEOMETRY_PRESETS,
    ClientConfig,
    FedAvgAccumulator,
    ServerConfig,
    ServerState,
    client_update,
    head_vector,
    init_class_embedding,
    load_head_vector,
    validate_update,
)
from .losses import nearest_negatives

log = logging.getLogger(__name__)

ALGORITHMS = ("fedface", "fedavg")


GEOMETRIES = tuple(GEOMETRY_PRESETS)


@dataclass
class SimConfig:
    """Everything that defines a simulated federated run (saved in checkpoints and results)."""

    rounds: int = 50
    clients_per_round: int = 100  # <= 0 or >= number of clients: all clients every round
    algorithm: str = "fedface"  # "fedface" (FedAvg + spreadout) or "fedavg" (no spreadout)
    client: ClientConfig = field(default_factory=ClientConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    dropout: float = 0.0  # probability that a sampled client never answers
    faulty_fraction: float = 0.0  # probability that a sampled client answers with a NaN update (testing)
    seed: int = 0
    eval_every: int = 5  # evaluate the global model every k rounds (and after the last); 0 = never
    checkpoint_every: int = 0  # 0 = only at the end (when a checkpoint path is given)
    #: DP only: each client keeps its own class embedding (its mean feature at first participation) as the target
    #: it trains against, moved by the server's spreadout displacement of its noised copy; it uploads its
    #: embedding only at first participation, so the server's copy does not take fresh noise every round.
    #: Off: the client trains against the server's (noised) copy, and every upload re-noises it.
    private_target: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.client, dict):
            self.client = ClientConfig(**self.client)
        if isinstance(self.server, dict):
            self.server = ServerConfig(**self.server)
        if self.algorithm not in ALGORITHMS:
            raise InputError(f"unknown algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.faulty_fraction < 1.0:
            raise InputError("dropout and faulty_fraction must be in [0, 1)")
        self.server.spreadout = self.algorithm == "fedface"
        if self.client.geometry not in GEOMETRIES:
            raise InputError(f"unknown geometry {self.client.geometry!r}; choose one of {GEOMETRIES}")
        self.server.geometry = self.client.geometry
        from .client import POSITIVES

        if self.client.positive not in POSITIVES:
            raise InputError(f"unknown positive term {self.client.positive!r}; choose one of {POSITIVES}")

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        return asdict(self)


def _seed(*parts: int | str) -> int:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFFFFFFFFFF


def random_start(W: np.ndarray, geometry: str, seed: int) -> np.ndarray:
    """Random class embeddings shaped like ``W`` (unit rows; Euclidean: scaled to W's mean row norm)."""
    g = np.random.default_rng(seed)
    R = g.standard_normal(W.shape).astype(np.float32)
    R /= np.linalg.norm(R, axis=1, keepdims=True)
    if geometry == "euclidean":
        R *= float(np.linalg.norm(W, axis=1).mean())
    return R.astype(np.float32)


def _fingerprint(client_feats: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(str(len(client_feats)).encode())
    for f in client_feats[: min(len(client_feats), 64)]:
        h.update(str(tuple(f.shape)).encode())
        h.update(f.flatten()[:16].numpy().tobytes())
    return h.hexdigest()[:16]


class FederatedSimulator:
    """Runs FedFace (or plain FedAvg) over ``client_feats[i]`` = the trunk features of client i's images.

    ``head`` is the pretrained trainable part (copied, the caller's module is not modified).
    ``eval_fn(head) -> dict`` is called on the global model every ``eval_every`` rounds.
    """

    def __init__(self, head: nn.Module, client_feats: Sequence[torch.Tensor], cfg: SimConfig,
                 eval_fn: Callable[[nn.Module], dict] | None = None,
                 checkpoint_path: str | os.PathLike | None = None,
                 public_feats: torch.Tensor | None = None) -> None:
        if len(client_feats) < 1:
            raise InputError("the simulation needs at least one client")
        empty = [i for i, f in enumerate(client_feats) if len(f) == 0]
        if empty:
            raise InputError(f"{len(empty)} clients have no images (e.g. client {empty[0]})")
        self.cfg = cfg
        self.head = copy.deepcopy(head).float()
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.scratch = copy.deepcopy(self.head)
        self.client_feats = [f.float() for f in client_feats]
        #: trunk features of a public face set every client holds (FedFR-style negatives; FedFace only)
        self.public_feats = None if public_feats is None else public_feats.float()
        if cfg.algorithm == "fedface" and cfg.client.public_batch > 0 and self.public_feats is None:
            raise InputError("public negatives (public_batch > 0) need the public set's features")
        self.eval_fn = eval_fn
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.fingerprint = _fingerprint(self.client_feats)
        vec0 = head_vector(self.head)
        # every client initialises its class embedding with its mean feature under the pretrained head
        W = np.stack([init_class_embedding(self.head, f, cfg.client.geometry) for f in self.client_feats])
        #: with DP the server never holds a template: it starts each class embedding at random (as the Flower
        #: strategy does) and a client's first upload is a clipped, noised step from there
        self.private_start = cfg.client.dp_noise > 0
        self.seen = np.zeros(len(W), dtype=bool)
        #: client-side state of ``private_target``: own target and the server's copy as last uploaded
        self.own = np.zeros_like(W)
        self.anchor = np.zeros_like(W)
        if self.private_start:
            W = random_start(W, cfg.client.geometry, _seed(cfg.seed, "random-start"))
        self.state = ServerState(vec0, W, cfg.server)
        self.round = 0
        self.history: list[dict] = []
        self._target = cfg.rounds

    # ------------------------------------------------------------------------------------------ state

    @property
    def num_clients(self) -> int:
        return len(self.client_feats)

    def global_head(self) -> nn.Module:
        """A copy of the current global head (eval mode)."""
        h = copy.deepcopy(self.head)
        load_head_vector(h, self.state.vec)
        h.eval()
        return h

    def state_dict(self) -> dict:
        """Everything needed to resume (head vector, class embeddings, momentum, round, history, config).

        Only tensors and JSON strings, so it loads with ``torch.load(weights_only=True)`` (no pickle code).
        """
        import json

        return {"format": "faceprivacy-fedsim-1", "vec": self.state.vec, "W": torch.from_numpy(self.state.W),
                "momentum": self.state.momentum if self.state.momentum is not None else torch.zeros(0),
                **self._adam_state(), "seen": torch.from_numpy(self.seen.copy()),
                "own": torch.from_numpy(self.own.copy()), "anchor": torch.from_numpy(self.anchor.copy()), "round": self.round, "history": json.dumps(self.history),
                "config": json.dumps(self.cfg.to_dict(), sort_keys=True), "fingerprint": self.fingerprint}

    def _adam_state(self) -> dict:
        ad = self.state.adam
        return {} if ad is None else {f"adam_{k}": v for k, v in ad.state().items()}

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write the resumable state atomically (it holds the server's class embeddings: keep it private)."""
        p = Path(path or self.checkpoint_path or "")
        if not str(p):
            raise InputError("no checkpoint path given")
        with atomic_path(p) as tmp:
            torch.save(self.state_dict(), tmp)
        return p

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save_checkpoint`; refuses a checkpoint of a different client set or config."""
        import json

        try:
            st = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read checkpoint {path}: {e}") from e
        if not isinstance(st, dict) or st.get("format") != "faceprivacy-fedsim-1":
            raise InputError(f"{path} is not a federated simulation checkpoint")
        if st["fingerprint"] != self.fingerprint:
            raise InputError("checkpoint was made with a different set of clients")
        cfg_now = {k: v for k, v in json.loads(json.dumps(self.cfg.to_dict())).items() if k != "rounds"}
        cfg_then = {k: v for k, v in json.loads(st["config"]).items() if k != "rounds"}
        if cfg_now != cfg_then:
            diff = sorted(k for k in cfg_now if cfg_now[k] != cfg_then.get(k))
            raise InputError(f"checkpoint config differs in {diff}")
        if st["vec"].numel() != self.state.vec.numel():
            raise InputError("checkpoint head size differs from the model")
        self.state.vec = st["vec"].float()
        self.state.W = st["W"].numpy().astype(np.float32)
        self.state.momentum = st["momentum"] if st["momentum"].numel() else None
        if self.state.adam is not None:
            if "adam_t" not in st:
                raise InputError("checkpoint has no server Adam state")
            self.state.adam.load({k: st[f"adam_{k}"] for k in ("m", "v", "t")})
        if "seen" in st:
            self.seen = st["seen"].numpy().astype(bool)
        if "own" in st:
            self.own = st["own"].numpy().astype(np.float32)
            self.anchor = st["anchor"].numpy().astype(np.float32)
        self.round = int(st["round"])
        self.history = json.loads(st["history"])

    # ------------------------------------------------------------------------------------------ rounds

    def sample_clients(self, rnd: int) -> np.ndarray:
        """Deterministic client sample for round ``rnd``."""
        rng = np.random.default_rng(_seed(self.cfg.seed, "sample", rnd))
        k = self.cfg.clients_per_round
        if k <= 0 or k >= self.num_clients:
            return np.arange(self.num_clients)
        return np.sort(rng.choice(self.num_clients, size=k, replace=False))

    def run_round(self, progress_bar: bool = False) -> dict:
        """Simulate one round; returns its log entry (also appended to ``history``)."""
        from ..core.progress import progress

        rnd = self.round + 1
        t0 = time.perf_counter()
        sampled = self.sample_clients(rnd)
        rng = np.random.default_rng(_seed(self.cfg.seed, "faults", rnd))
        dropped = rng.random(len(sampled)) < self.cfg.dropout
        faulty = rng.random(len(sampled)) < self.cfg.faulty_fraction
        acc = FedAvgAccumulator(self.state.vec.numel())
        new_emb: dict[int, np.ndarray] = {}
        losses: list[float] = []
        rejected = 0
        dim = self.state.W.shape[1]
        neg_idx = None
        #: the server's centre of its class-embedding bank (for the centred positive term): an aggregate of all
        #: clients' embeddings, sent to every client alike
        centre = self.state.W.mean(0) if self.cfg.client.positive != "geometry" else None
        if self.cfg.algorithm == "fedface" and self.cfg.client.negatives > 0:  # hard negatives from the bank
            neg_idx = nearest_negatives(self.state.W, sampled, self.cfg.client.negatives, self.cfg.client.geometry)
        it = progress(range(len(sampled)), desc=f"round {rnd}", disable=not progress_bar, unit="client")
        for j in it:
            cid = int(sampled[j])
            if dropped[j]:
                continue
            start = self.state.W[cid]
            reference = self.state.W[cid]
            first = not self.seen[cid]
            private = self.private_start and self.cfg.private_target
            if self.private_start and first:  # the client's own start; only a noised step leaves
                load_head_vector(self.scratch, self.state.vec)
                start = init_class_embedding(self.scratch, self.client_feats[cid], self.cfg.client.geometry)
                self.own[cid] = start
            elif private:  # own target + the server's spreadout displacement of the uploaded copy
                start = self.own[cid] + (self.state.W[cid] - self.anchor[cid])
                reference = start  # nothing of the embedding is uploaded again
            self.seen[cid] = True
            upd = client_update(self.scratch, self.state.vec, self.client_feats[cid], start,
                                self.cfg.client, seed=_seed(self.cfg.seed, "client", rnd, cid),
                                reference=reference,
                                negatives=None if neg_idx is None else self.state.W[neg_idx[j]],
                                public_feats=self.public_feats if self.cfg.algorithm == "fedface" else None,
                                centre=centre)
            if faulty[j]:  # a broken/malicious client: corrupt the update
                upd.delta = upd.delta.clone()
                upd.delta[:: max(1, upd.delta.numel() // 7)] = float("nan")
            reason = validate_update(upd.delta, upd.embedding, upd.num_examples, acc.sum.numel(), dim,
                                     self.cfg.server.max_update_norm)
            if reason is not None:
                log.warning("round %d: rejected update from client %d: %s", rnd, cid, reason)
                rejected += 1
                continue
            acc.add(upd.delta, upd.num_examples)
            if not private or first:
                new_emb[cid] = upd.embedding
            losses.append(upd.loss)
        mean_delta = acc.mean()
        if mean_delta is None:
            log.warning("round %d: no valid update (all %d sampled clients dropped or rejected)", rnd, len(sampled))
        self.state.schedule(rnd, self._target)
        from .server import class_embedding

        for cid, e in new_emb.items():  # the copy each client last uploaded, as the server stores it
            self.anchor[cid] = class_embedding(e, self.cfg.client.geometry)
        stats = self.state.apply(mean_delta, new_emb)
        self.round = rnd
        entry = {"round": rnd, "sampled": int(len(sampled)), "dropped": int(dropped.sum()),
                 "rejected": rejected, "accepted": acc.count,
                 "client_loss": float(np.mean(losses)) if losses else math.nan,
                 "update_norm": float(mean_delta.norm()) if mean_delta is not None else 0.0,
                 "round_s": round(time.perf_counter() - t0, 3), **stats}
        last = rnd == self._target
        if self.eval_fn is not None and self.cfg.eval_every > 0 and (rnd % self.cfg.eval_every == 0 or last):
            entry["eval"] = self.eval_fn(self.global_head())
        self.history.append(entry)
        if self.checkpoint_path and ((self.cfg.checkpoint_every > 0 and rnd % self.cfg.checkpoint_every == 0)
                                     or last):
            self.save_checkpoint()
        return entry

    def run(self, rounds: int | None = None, progress_bar: bool = True) -> list[dict]:
        """Run until ``rounds`` (default ``cfg.rounds``) rounds are done (continues after a resume)."""
        from ..core.progress import progress

        target = int(rounds if rounds is not None else self.cfg.rounds)
        self._target = target
        if self.round == 0 and self.eval_fn is not None and self.cfg.eval_every > 0 and not self.history:
            self.history.append({"round": 0, "eval": self.eval_fn(self.global_head())})
        todo = range(self.round, target)
        for _ in progress(todo, desc=f"{self.cfg.algorithm} rounds", disable=not progress_bar, unit="round"):
            e = self.run_round()
            log.debug("round %d: %s", e["round"], {k: v for k, v in e.items() if k != "eval"})
        return [h for h in self.history if h["round"] > 0]
