"""The FedFace recipe of a Flower run: one frozen, validated dataclass from flag to node.

:class:`FedFaceRecipe` is written once by ``fed-server`` (``to_run_config()``: Flower's run config, dashed keys),
travels with the run, and is rebuilt on the server app and on every node by ``from_run_config()``; a default
changes here and nowhere else, and a typo (``geometry=euclidian``) fails instead of quietly training another
variant. No torch import: ``--help`` stays light.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..core.errors import InputError

GEOMETRY_NAMES = ("cosine", "euclidean")
SERVER_OPTS = ("sgd", "adam")
AGGREGATIONS = ("mean", "median", "trimmed-mean")


@dataclass(frozen=True)
class FedFaceRecipe:
    """Everything a FedFace Flower run needs (server strategy, client training, privacy, outputs)."""

    #: rounds of the run
    num_server_rounds: int = 3
    #: fraction of connected nodes sampled per round
    fraction_train: float = 1.0
    #: nodes required per round / connected before a round starts
    min_train_nodes: int = 2
    min_available_nodes: int = 2
    #: trainable split of the recognizer (``backbone.build_split``)
    backbone: str = "tiny"
    #: CelebA subset root for ``partition-id`` nodes (simulated owners)
    data_root: str = ""
    #: client SGD steps per round and batch size
    local_steps: int = 1
    batch_size: int = 32
    lr: float = 0.01
    #: cosine margin (cosine) or radius (euclidean) of the positive hinge
    margin: float = 0.9
    geometry: str = "cosine"
    #: client lr of its class embedding; negative: same as ``lr``
    embedding_lr: float = -1.0
    server_opt: str = "sgd"
    server_lr: float = 1.0
    spreadout: bool = True
    spread_steps: int = 10
    spread_lr: float = 1.0
    spread_margin: float = 0.3
    #: server-side clipping of every node's update to this L2 norm (0: off; on by default)
    max_update_norm: float = 1.0
    #: how the server combines the (clipped) updates: equal-weight mean, coordinate-wise median, trimmed mean
    aggregation: str = "mean"
    #: fraction cut from each end per coordinate by ``trimmed-mean``
    trim_fraction: float = 0.2
    #: client DP: clip the joint update (head + embedding) to this L2 norm, add N(0, (noise*clip)^2)
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    #: delta of the reported (epsilon, delta) guarantee
    dp_delta: float = 1e-5
    #: seed of batch sampling and the backbone (never of DP noise: that comes from the OS CSPRNG)
    seed: int = 0
    out_dir: str = ""
    #: CelebA-layout root whose held-out (test) identities the server evaluates after every round ("" = none)
    eval_data: str = ""
    round_timeout: float = 600.0
    save_model: bool = True

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRY_NAMES:
            raise InputError(f"unknown geometry {self.geometry!r}; choose one of {GEOMETRY_NAMES}")
        if self.server_opt not in SERVER_OPTS:
            raise InputError(f"unknown server-opt {self.server_opt!r}; choose one of {SERVER_OPTS}")
        if self.server_opt == "sgd" and self.server_lr != 1.0:
            raise InputError("server-opt sgd (FedAvg) takes server-lr 1; use adam for another step size")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"unknown aggregation {self.aggregation!r}; choose one of {AGGREGATIONS}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise InputError("trim-fraction must be in [0, 0.5)")
        if self.num_server_rounds < 1 or self.min_train_nodes < 1 or self.min_available_nodes < 1:
            raise InputError("rounds and node counts must be positive")
        if self.local_steps < 1 or self.batch_size < 1:
            raise InputError("local-steps and batch-size must be positive")
        for name in ("lr", "margin", "spread_lr", "spread_margin", "max_update_norm", "dp_clip", "dp_noise",
                     "round_timeout", "fraction_train"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InputError(f"{name.replace('_', '-')} must be a finite non-negative number, got {v}")
        if self.dp_noise > 0 and self.dp_clip <= 0:
            raise InputError("dp-noise needs dp-clip > 0 (the noise std is dp-noise x dp-clip)")
        if not 0.0 < self.dp_delta < 1.0:
            raise InputError("dp-delta must be in (0, 1)")

    def to_run_config(self) -> dict[str, Any]:
        """Flower run config (``[tool.flwr.app.config]`` / ``--run-config``): dashed keys, TOML scalars."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> FedFaceRecipe:
        """Rebuild from a run config; unknown keys and wrong types raise :class:`InputError`."""
        names = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            raise InputError(f"unknown run-config keys: {unknown}")
        kw: dict[str, Any] = {}
        for key, value in cfg.items():
            f = names[key]
            default = f.default
            try:
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError
                    kw[f.name] = value
                elif isinstance(default, int):
                    if isinstance(value, bool) or float(value) != int(value):
                        raise TypeError
                    kw[f.name] = int(value)
                elif isinstance(default, float):
                    kw[f.name] = float(value)
                else:
                    kw[f.name] = str(value)
            except (TypeError, ValueError):
                raise InputError(f"run-config {key}={value!r}: expected {type(default).__name__}") from None
        return cls(**kw)

    def replace(self, **changes: Any) -> FedFaceRecipe:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)
