"""PyTorch port of dlib's 128-D face descriptor ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The weights are read straight from dlib's own file by :mod:`faceprivacy.models.dlib_parser` (no
conversion step). The wiring (which dlib does not store: tag ids are compile-time) follows the network
definition of dlib's ``dnn_face_recognition_ex.cpp``:

* stem: con 7x7/2 (32) -> affine -> relu -> max_pool 3x3/2
* level4: 3 x residual(32); level3: residual_down(64) + 3 x residual(64);
  level2: residual_down(128) + 2 x residual(128); level1: residual_down(256) + 2 x residual(256);
  level0: residual_down(256)
* residual block: con3x3 -> affine -> relu -> con3x3 -> affine, plus the block input, then relu.
  residual_down: the first con has stride 2 and the shortcut is avg_pool 2x2/2 of the block input.
* avg_pool_everything -> fc_no_bias 256 -> 128 (the raw descriptor, not normalised, as dlib returns it).

dlib details reproduced: stride-2 conv/pool use padding 0 (k/2 only at stride 1); ``add_prev`` of tensors
with different shapes yields max(C, H, W) with the smaller one zero-padded at the end; the input is
``(pixel - mean_rgb) / 256``. Affine layers are folded into the preceding conv at load time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceprivacy.core.errors import ModelLoadError

from .dlib_parser import DlibLayer, DlibNet, parse_dlib_dnn

#: (kind, channels) of the residual blocks from input to output, as in dnn_face_recognition_ex.cpp
ARCH: tuple[tuple[str, int], ...] = (
    ("res", 32), ("res", 32), ("res", 32),
    ("down", 64), ("res", 64), ("res", 64), ("res", 64),
    ("down", 128), ("res", 128), ("res", 128),
    ("down", 256), ("res", 256), ("res", 256),
    ("down", 256),
)


def expected_layer_kinds() -> list[str]:
    """The sequence of layer kinds (input -> output) the face ResNet file must contain."""
    kinds = ["con_4", "affine_", "relu_", "max_pool_2"]
    for kind, _ in ARCH:
        body = ["tag_or_skip", "con_4", "affine_", "relu_", "con_4", "affine_"]
        if kind == "down":
            body += ["tag_or_skip", "tag_or_skip", "avg_pool_2"]
        kinds += body + ["add_prev_", "relu_"]
    return kinds + ["avg_pool_2", "fc_2"]


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of two (N,C,H,W) tensors, the smaller zero-padded at the end of C, H, W."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _ResBlock(nn.Module):
    """residual / residual_down block of dlib's face ResNet (affine folded into the convs)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet in PyTorch: (N,3,H,W) float RGB in 0..255 (H=W=150 for dlib's chips)
    -> (N,128) raw descriptors, numerically matching ``dlib.face_recognition_model_v1``; differentiable."""

    def __init__(self, mean_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks = []
        cin = 32
        for kind, c in ARCH:
            blocks.append(_ResBlock(cin, c, kind == "down"))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.input_size = (150, 150)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptors of a float RGB batch (N,3,H,W) with values 0..255."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DlibResNet expects (N,3,H,W) RGB, got {tuple(x.shape)}")
        x = (x - self.mean) * (1.0 / 256.0)
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # ~2x faster convs on CPU (oneDNN)
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)

    @torch.inference_mode()
    def embed_uint8(self, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Raw descriptors (N,128) float32 of uint8 RGB chips (N,150,150,3), batched, no autograd."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.ndim != 4 or chips.shape[-1] != 3:
            raise ValueError(f"expected (N,H,W,3) uint8 chips, got {chips.shape}")
        dev = self.mean.device
        out = []
        for i in range(0, len(chips), batch_size):
            t = torch.from_numpy(np.ascontiguousarray(chips[i:i + batch_size])).to(dev)
            t = t.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
            out.append(self(t).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)

    @classmethod
    def from_dlib_net(cls, net: DlibNet) -> DlibResNet:
        """Build the module from a parsed dlib file, checking that its layer sequence is the face ResNet."""
        kinds = [layer.kind for layer in net.layers]
        expected = expected_layer_kinds()
        if kinds != expected:
            first = next((i for i, (a, b) in enumerate(zip(kinds, expected, strict=False)) if a != b),
                         min(len(kinds), len(expected)))
            raise ModelLoadError(f"not dlib's face ResNet: layer {first} is "
                                 f"{kinds[first] if first < len(kinds) else 'missing'}, expected "
                                 f"{expected[first] if first < len(expected) else 'nothing'} "
                                 f"({len(kinds)} layers, expected {len(expected)})")
        if net.input.get("kind") != "input_rgb_image_sized":
            raise ModelLoadError(f"unexpected input layer {net.input.get('kind')}")
        model = cls(tuple(float(v) for v in net.input["mean_rgb"]))  # type: ignore[arg-type]
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        pairs = _conv_affine_pairs(net.layers)
        if len(pairs) != len(convs):
            raise ModelLoadError(f"expected {len(convs)} conv layers, found {len(pairs)}")
        with torch.no_grad():
            for conv, (c, a) in zip(convs, pairs, strict=True):
                w = c.attrs["weight"]
                if tuple(w.shape) != tuple(conv.weight.shape):
                    raise ModelLoadError(f"conv weight shape {w.shape} != expected {tuple(conv.weight.shape)}")
                if tuple(c.attrs["stride"]) != conv.stride or tuple(c.attrs["padding"]) != conv.padding:
                    raise ModelLoadError(f"conv stride/padding {c.attrs['stride']}/{c.attrs['padding']} != "
                                         f"{conv.stride}/{conv.padding}")
                g = torch.from_numpy(a.attrs["gamma"]).double()
                b = torch.from_numpy(a.attrs["beta"]).double()
                bias = c.attrs["bias"]
                bias_t = torch.from_numpy(bias).double() if bias is not None else torch.zeros_like(g)
                conv.weight.copy_((torch.from_numpy(w).double() * g.view(-1, 1, 1, 1)).float())
                conv.bias.copy_((bias_t * g + b).float())
            fc = net.layers[-1].attrs
            if fc["bias"] is not None or fc["weight"].shape != (256, 128):
                raise ModelLoadError(f"unexpected final fc layer {fc['weight'].shape}, bias={fc['bias'] is not None}")
            model.fc.weight.copy_(torch.from_numpy(fc["weight"].T.copy()))
        return model.eval()


def _conv_affine_pairs(layers: list[DlibLayer]) -> list[tuple[DlibLayer, DlibLayer]]:
    pairs = []
    for i, layer in enumerate(layers):
        if layer.kind == "con_4":
            nxt = layers[i + 1]
            if nxt.kind != "affine_":
                raise ModelLoadError(f"conv layer {i} is not followed by an affine layer")
            pairs.append((layer, nxt))
    return pairs


@functools.lru_cache(maxsize=4)
def _parse_cached(path: str, mtime_ns: int, size: int) -> DlibNet:
    return parse_dlib_dnn(path)


def _converted(p: Path, mtime_ns: int, size: int) -> DlibResNet:
    """The converted module. Parsing dlib's .dat and converting it costs ~0.6 s of CPU in every process, so the
    converted state_dict is saved once under the cache folder ($FACEPRIVACY_CACHE or ~/.cache/faceprivacy), keyed
    by the file's path, size and mtime, and later processes load it; any problem with the copy -> convert again."""
    import hashlib
    import os

    base = os.environ.get("FACEPRIVACY_CACHE") or str(Path.home() / ".cache" / "faceprivacy")
    key = hashlib.sha256(f"{p}:{mtime_ns}:{size}".encode()).hexdigest()[:16]
    f = Path(base) / f"dlib_resnet_torch_{key}.pt"
    if f.is_file():
        try:
            blob = torch.load(f, map_location="cpu", weights_only=True)
            model = DlibResNet(tuple(float(v) for v in blob["mean_rgb"]))  # type: ignore[arg-type]
            model.load_state_dict(blob["state_dict"])
            return model.eval()
        except Exception:  # a damaged cache file: convert again below
            pass
    net = _parse_cached(str(p), mtime_ns, size)
    model = DlibResNet.from_dlib_net(net)
    try:
        from faceprivacy.core.fileio import atomic_path

        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            torch.save({"mean_rgb": [float(v) for v in net.input["mean_rgb"]],
                        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}, tmp)
    except Exception:  # a read-only cache folder only costs the next process the conversion again
        pass
    return model


def load_dlib_resnet(path: str | Path | None = None, device: str | torch.device = "cpu",
                     channels_last: bool = True) -> DlibResNet:
    """dlib's face ResNet as a torch module in eval mode, parsed from dlib's .dat (default: the file shipped by
    pip ``face-recognition-models``). The parse is cached per file; each call returns a fresh module.
    ``channels_last`` stores the conv weights NHWC (about 2x faster on CPU; same numbers)."""
    if path is None:
        from faceprivacy.core.paths import dlib_model_path

        path = dlib_model_path("resnet")
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ModelLoadError(f"dlib ResNet model file {p} not readable: {e}") from e
    model = _converted(p.resolve(), st.st_mtime_ns, st.st_size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
