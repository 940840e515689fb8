"""The task model that is asked to forget people: a small CNN predicting the 8 teacher classes
(gender x age group) from a 64x64 face, plus training/evaluation helpers shared by all methods."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelLoadError
from ..core.fileio import atomic_path
from ..core.progress import progress

#: RGB mean/std used to normalise uint8 inputs (fixed, so a saved model needs nothing else)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


#: default hidden widths of the "mlp" model on embedder descriptors
MLP_WIDTHS = (256, 256)


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (saved with the weights)."""

    size: int = 64
    widths: tuple[int, ...] = (24, 48, 96, 192)
    n_classes: int = 8
    #: "cnn": conv blocks on ``size``x``size`` images; "mlp": hidden layers of ``widths`` on the ``in_dim``-d
    #: descriptor of a frozen face embedder (``embedder``, a core.embedders name) -- the second task's model
    kind: str = "cnn"
    in_dim: int = 0
    embedder: str = ""
    #: mlp only: end the body with a LayerNorm (no affine), so features of different people are centred and a
    #: gradient step on one person's photo moves other people's logits less
    norm: bool = False


class TaskCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks, global average pooling, one linear head; ``features`` exposes the
    pooled vector the MetaLoss reads."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        layers: list[nn.Module] = []
        if self.cfg.kind == "mlp":
            c_in = self.cfg.in_dim
            for w in self.cfg.widths:
                layers += [nn.Linear(c_in, w), nn.ReLU()]
                c_in = w
            if self.cfg.norm:
                layers.append(nn.LayerNorm(c_in, elementwise_affine=False))
        elif self.cfg.kind == "cnn":
            c_in = 3
            for w in self.cfg.widths:
                layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                           nn.MaxPool2d(2)]
                c_in = w
        else:
            raise ValueError(f"unknown model kind {self.cfg.kind!r}")
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, self.cfg.n_classes)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    @property
    def feature_dim(self) -> int:
        return self.cfg.widths[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of a float batch in [0, 1], shape (N, 3, S, S) (mlp: the last hidden layer of a
        batch of descriptors (N, in_dim))."""
        if self.cfg.kind == "mlp":
            return self.body(x)
        x = (x - self.mean) / self.std
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, features) in one pass."""
        f = self.features(x)
        return self.head(f), f


def to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW in [0, 1]."""
    t = torch.as_tensor(x)
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    if t.ndim == 4 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


@dataclass
class TrainConfig:
    """Training recipe of the original / retrained models (no augmentation on purpose: memorisation
    of individual images must be visible, as in the 1-SHUI setting)."""

    epochs: int = 40
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    #: label smoothing of the training loss (0 for the first task); > 0 keeps the softmax of memorised
    #: samples off saturation, so gradients through them do not vanish (used for the second task)
    label_smoothing: float = 0.0


def train_model(x: np.ndarray, y: np.ndarray, cfg: TrainConfig | None = None,
                mcfg: ModelConfig | None = None, desc: str = "train", device: str = "cpu") -> tuple[TaskCNN, dict]:
    """Train a TaskCNN from scratch on uint8 images ``x`` (N,S,S,3) and labels ``y``; returns (model, log)."""
    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    xt = (to_float(x) if not isinstance(x, torch.Tensor) or x.dtype == torch.uint8 else x).to(device)
    if mcfg is None:
        mcfg = (ModelConfig(size=int(xt.shape[-1])) if xt.ndim == 4 else
                ModelConfig(kind="mlp", in_dim=int(xt.shape[-1]), widths=MLP_WIDTHS))
    model = TaskCNN(mcfg).to(device)
    yt = torch.as_tensor(y, dtype=torch.long).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(xt)
    steps = cfg.epochs * ((n + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.2)
    t0 = time.perf_counter()
    model.train()
    losses = []
    for _ep in progress(range(cfg.epochs), desc=desc):
        perm = torch.as_tensor(rng.permutation(n), device=device)
        tot = 0.0
        for s in range(0, n, cfg.batch):
            idx = perm[s:s + cfg.batch]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / n)
    model.eval()
    return model, {"epochs": cfg.epochs, "steps": steps, "wall_s": time.perf_counter() - t0,
                   "final_train_loss": losses[-1] if losses else float("nan"), "config": asdict(cfg)}


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Logits of a batch of uint8/float images (eval mode)."""
    model.eval()
    dev = next(model.parameters()).device
    xt = to_float(x).to(dev)
    return torch.cat([model(xt[s:s + batch]) for s in range(0, len(xt), batch)]) if len(xt) else \
        torch.zeros(0, 8)


def per_sample_loss_acc(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cross-entropy and correctness (what MIA and accuracy are computed from)."""
    logits = predict(model, x).cpu()
    yt = torch.as_tensor(y, dtype=torch.long)
    loss = F.cross_entropy(logits, yt, reduction="none").numpy()
    correct = (logits.argmax(1) == yt).numpy()
    return loss, correct


def clone(model: TaskCNN) -> TaskCNN:
    """Deep copy (methods never modify the model they are given)."""
    return copy.deepcopy(model)


def save_model(model: TaskCNN, path: str | Path, extra: dict | None = None) -> Path:
    """Save state_dict + architecture config atomically (small file)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": "faceprivacy-unlearn-taskcnn-1", "config": asdict(model.cfg),
            "state_dict": sd, "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_model(path: str | Path) -> TaskCNN:
    """Load a model saved by :func:`save_model`; raises ModelLoadError on a wrong or corrupt file."""
    return load_model_with_record(path)[0]


def load_model_with_record(path: str | Path) -> tuple[TaskCNN, dict]:
    """(model, record): the model and the ``extra`` record saved with it (how it was trained, requests)."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        cfg = blob["config"]
        model = TaskCNN(ModelConfig(size=int(cfg["size"]), widths=tuple(cfg["widths"]),
                                    n_classes=int(cfg["n_classes"]), kind=str(cfg.get("kind", "cnn")),
                                    in_dim=int(cfg.get("in_dim", 0)), embedder=str(cfg.get("embedder", "")),
                                    norm=bool(cfg.get("norm", False))))
        model.load_state_dict(blob["state_dict"])
        record = dict(blob.get("extra") or {})
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{p} is not a faceprivacy unlearning task model: {e}") from e
    model.eval()
    return model, record
