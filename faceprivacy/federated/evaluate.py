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
    from ..core.metrics import rate_with_ci, threshold_at_far, verification_report

    scores, same = all_pair_scores(emb, labels)
    rep = verification_report(scores, same, fars)
    out = {k: v for k, v in rep.items() if k.startswith(("tar@", "eer", "auc", "n_"))}
    out["mean_impostor"] = float(scores[~same].mean())
    out["mean_genuine"] = float(scores[same].mean())
    # 95 % interval of TAR@FAR=1e-3 by identity: genuine pairs resampled by identity at the threshold set by
    # all impostor pairs (the threshold itself is not resampled)
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), 1)
    pair_id = lab[iu[0]][same]
    thr = threshold_at_far(scores[~same], 1e-3)
    ci = rate_with_ci((scores[same] > thr).astype(float), pair_id, n_boot=300)
    out["tar@far=0.001_ci95"] = ci["ci95"]
    out["n_identities"] = int(len(set(lab.tolist())))
    return out


def head_evaluator(test_feats: torch.Tensor, test_labels: np.ndarray, fars: tuple[float, ...] = EVAL_FARS):
    """``eval_fn(head) -> metrics`` closure over fixed held-out trunk features (for the simulator)."""

    def eval_fn(head: nn.Module) -> dict:
        return verification_metrics(embed_features(head, test_feats).numpy(), test_labels, fars)

    return eval_fn
