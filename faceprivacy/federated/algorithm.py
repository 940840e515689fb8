"""FedFace algorithm core, free of any FL framework (used by the in-process simulator and the Flower apps).

One identity per client. Each client holds the trunk features of its own images, receives the global
*head* (the trainable upper layers of the recognizer) and its own class embedding ``w_i``, trains both with a
positive-only loss ``mean_j max(0, m - cos(f(x_j), w_i))^2`` (m = 0.9) and returns the head update and ``w_i``.
The server averages the head updates (FedAvg) and runs a few SGD steps of the *spreadout* regularizer
``R(W) = mean_{i!=j} max(0, w_i.w_j - 0.3)^2`` over all class embeddings, so that classes do not collapse.

All model exchange uses a flat float32 vector of the head parameters (``head_vector``/``load_head_vector``),
which keeps FedAvg over thousands of clients a single tensor accumulation.

>>> import torch
>>> head = torch.nn.Linear(8, 4)
>>> feats = torch.randn(5, 8)
>>> w0 = init_class_embedding(head, feats)
>>> upd = client_update(head, head_vector(head), feats, w0, ClientConfig(local_steps=2), seed=0)
>>> upd.delta.shape == head_vector(head).shape and upd.embedding.shape == (4,)
True
"""

from __future__ import annotations

from .central import CentralConfig, centralised_finetune, dlib_metric_loss
from .client import ClientConfig, ClientUpdate, client_update, init_class_embedding, privatize
from .losses import (
    GEOMETRIES,
    Cosine,
    Euclidean,
    Geometry,
    embed_features,
    get_geometry,
    positive_loss,
    spreadout_loss,
    spreadout_loss_euclidean,
    spreadout_step,
    spreadout_step_euclidean,
    spreadout_value,
    squared_hinge_cosine_loss,
    squared_hinge_radius_loss,
)
from .params import head_state_arrays, head_vector, load_head_state_arrays, load_head_vector
from .server import (
    FedAvgAccumulator,
    ServerAdam,
    ServerConfig,
    ServerState,
    class_embedding,
    fedavg,
    server_spreadout,
    store_embeddings,
    validate_update,
)

__all__ = [
    "GEOMETRIES", "GEOMETRY_PRESETS", "CentralConfig", "ClientConfig", "ClientUpdate", "Cosine", "Euclidean",
    "FedAvgAccumulator", "Geometry", "ServerAdam", "ServerConfig", "ServerState", "centralised_finetune",
    "class_embedding", "client_update", "dlib_metric_loss", "embed_features", "fedavg", "get_geometry",
    "head_state_arrays", "head_vector", "init_class_embedding", "load_head_state_arrays", "load_head_vector",
    "positive_loss", "privatize", "resolve_geometry", "server_spreadout", "spreadout_loss",
    "spreadout_loss_euclidean", "spreadout_step", "spreadout_step_euclidean", "spreadout_value",
    "squared_hinge_cosine_loss", "squared_hinge_radius_loss", "store_embeddings", "validate_update",
]

#: hyper-parameters per geometry. "cosine" is FedFace's published setting (margins 0.9 / 0.3, CosFace-like
#: features). "euclidean" suits dlib's metric-trained descriptors (same person < 0.6 apart): radius 0.3 around
#: the class embedding, class embeddings pushed >= 0.7 apart; class embeddings move only by the server's
#: spreadout (client embedding lr 0); server FedAdam 1e-5. Chosen on the validation identities (docs/federated.md).
GEOMETRY_PRESETS: dict[str, dict[str, float | str]] = {
    "cosine": {"margin": 0.9, "spread_margin": 0.3, "lr": 0.005, "embedding_lr": -1.0, "spread_lr": 0.1,
               "server_opt": "sgd", "server_lr": 1.0, "negatives": 0, "neg_margin": 0.3, "neg_weight": 1.0,
               "public_negatives": 0, "public_batch": 32},
    "euclidean": {"margin": 0.3, "spread_margin": 0.7, "lr": 0.001, "embedding_lr": 0.0, "spread_lr": 2.0,
                  "server_opt": "adam", "server_lr": 1e-5, "negatives": 0, "neg_margin": 0.7, "neg_weight": 1.0,
                  "public_negatives": 0, "public_batch": 32},
}


def resolve_geometry(geometry: str, backbone: str) -> str:
    """``auto`` -> ``euclidean`` for dlib backbones (metric-trained), ``cosine`` otherwise."""
    if geometry == "auto":
        return "euclidean" if backbone.startswith("dlib") else "cosine"
    if geometry not in GEOMETRY_PRESETS:
        raise ValueError(f"unknown geometry {geometry!r}; choose auto, cosine or euclidean")
    return geometry
