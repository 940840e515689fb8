"""Verification metrics of a head on held-out identities (all image pairs; core.metrics does the maths)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .algorithm import embed_features

#: the FARs reported for federated runs (the issue's headline number is TAR@FAR=1e-3)
EVAL_FARS = (1e-2, 1e-3)


def all_pair_scores(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-identity flags of every unordered pair of unit-norm embeddings."""
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels)
    iu = np.triu_indices(len(emb), 1)
    return (emb @ emb.T)[iu], (labels[:, None] == labels[None, :])[iu]


def verification_metrics(emb: np.ndarray, labels: np.ndarray, fars: tuple[float, ...] = EVAL_FARS) -> dict:
    """TAR@FAR for ``fars``, EER and AUC over all pairs, plus the mean impostor score (collapse indicator)."""
    from ..core.metrics import verification_report

    scores, same = all_pair_scores(emb, labels)
    rep = verification_report(scores, same, fars)
    out = {k: v for k, v in rep.items() if k.startswith(("tar@", "eer", "auc", "n_"))}
    out["mean_impostor"] = float(scores[~same].mean())
    out["mean_genuine"] = float(scores[same].mean())
    return out


def head_evaluator(test_feats: torch.Tensor, test_labels: np.ndarray, fars: tuple[float, ...] = EVAL_FARS):
    """``eval_fn(head) -> metrics`` closure over fixed held-out trunk features (for the simulator)."""

    def eval_fn(head: nn.Module) -> dict:
        return verification_metrics(embed_features(head, test_feats).numpy(), test_labels, fars)

    return eval_fn
