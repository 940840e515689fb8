"""Reader for dlib's DNN serialization format (the ``.dat`` files written by ``dlib::serialize(net)``).

Written from the format as dlib defines it (serialize.h, tensor.h, core.h, layers.h, input.h), so dlib's
own model files can be loaded into PyTorch with no conversion step:

* integers: a control byte (low nibble = number of value bytes, bit 0x80 = negative) + little-endian bytes;
* floats/doubles: a ``float_details`` pair (int64 mantissa, int16 exponent), value = ldexp(m, e);
* bools: the ASCII byte ``'0'``/``'1'``; strings: length + bytes;
* ``resizable_tensor``: version 2, four int64 dims (n, k, nr, nc), then raw little-endian float32 data;
  ``alias_tensor``: version 1 + the four dims (a shape only);
* nesting: ``add_loss_layer`` writes (version, loss details, subnet); ``add_layer`` writes
  (version, *subnet first*, details, 3 bools, 3 tensors); tag and skip layers write (version 1, subnet).
  The file is therefore a run of version ints from output to input, the input layer, and then the layer
  details in input->output order. Tag ids used by ``add_prev``/``skip`` are not stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceprivacy.core.errors import ModelLoadError

# float_details marks non-finite values with reserved exponents (never present in the model files we load)
_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class _Corrupt(Exception):
    """Internal: raised at the first byte that does not fit the format (turned into ModelLoadError)."""


@dataclass
class DlibLayer:
    """One entry of the layer stack, input->output order. ``kind`` is dlib's details version string
    (``"con_4"``, ``"affine_"``, ``"relu_"``, ``"max_pool_2"``, ``"avg_pool_2"``, ``"add_prev_"``,
    ``"fc_2"``) or ``"tag_or_skip"`` for tag/skip layers (indistinguishable on disk)."""

    kind: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: loss details, input layer details and the layers from input to output."""

    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[DlibLayer]
    n_bytes: int

    def count(self, kind: str) -> int:
        """Number of layers of one kind (e.g. ``"con_4"``)."""
        return sum(1 for layer in self.layers if layer.kind == kind)

    def n_params(self) -> int:
        """Total learnable parameters stored in the file (conv, affine and fc tensors)."""
        total = 0
        for layer in self.layers:
            for key in ("weight", "bias", "gamma", "beta"):
                v = layer.attrs.get(key)
                if isinstance(v, np.ndarray):
                    total += v.size
        return total


class DlibReader:
    """Sequential reader over the bytes of a dlib-serialized object."""

    def __init__(self, data: bytes) -> None:
        self.buf = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Corrupt(f"unexpected end of data (needed {n} bytes at offset {self.pos}, "
                           f"file has {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def read_int(self) -> int:
        """A compact integer."""
        start = self.pos
        ctrl = self._take(1)[0]
        if ctrl & 0x70:
            raise _Corrupt(f"byte 0x{ctrl:02x} at offset {start} is not an integer control byte")
        size = ctrl & 0x0F
        if size > 8:
            raise _Corrupt(f"integer of {size} bytes at offset {start}")
        val = int.from_bytes(self._take(size), "little") if size else 0
        return -val if ctrl & 0x80 else val

    def read_float(self) -> float:
        """A float/double in float_details form (mantissa, exponent)."""
        if self.pos < len(self.buf) and self.buf[self.pos] & 0x70:
            raise _Corrupt(f"old ASCII float encoding at offset {self.pos} is not supported")
        mant = self.read_int()
        expo = self.read_int()
        if expo in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[expo]
        if not -32768 <= expo <= 32767:
            raise _Corrupt(f"float exponent {expo} out of int16 range at offset {self.pos}")
        return math.ldexp(mant, expo)

    def read_bool(self) -> bool:
        """A bool stored as ASCII '0'/'1'."""
        at = self.pos
        ch = self._take(1)[0]
        if ch not in (0x30, 0x31):
            raise _Corrupt(f"byte 0x{ch:02x} at offset {at} is not a serialized bool")
        return ch == 0x31

    def read_str(self, max_len: int = 4096) -> str:
        """A length-prefixed string."""
        at = self.pos
        n = self.read_int()
        if not 0 <= n <= max_len:
            raise _Corrupt(f"implausible string length {n} at offset {at}")
        try:
            return bytes(self._take(n)).decode("ascii")
        except UnicodeDecodeError as e:
            raise _Corrupt(f"non-ASCII string at offset {at}") from e

    def peek_str_startswith(self, prefix: str) -> bool:
        """True if a string starting with ``prefix`` can be read at the current position (no advance)."""
        save = self.pos
        try:
            return self.read_str().startswith(prefix)
        except _Corrupt:
            return False
        finally:
            self.pos = save

    def read_dims(self) -> tuple[int, int, int, int]:
        dims = tuple(self.read_int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise _Corrupt(f"negative tensor dimension {dims} before offset {self.pos}")
        return dims  # type: ignore[return-value]

    def read_tensor(self) -> np.ndarray:
        """A resizable_tensor (version 2): dims then raw little-endian float32, as an (n, k, nr, nc) array."""
        at = self.pos
        ver = self.read_int()
        if ver != 2:
            raise _Corrupt(f"unexpected tensor version {ver} at offset {at}")
        dims = self.read_dims()
        count = int(np.prod(dims, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        """An alias_tensor (version 1): a shape only."""
        at = self.pos
        ver = self.read_int()
        if ver != 1:
            raise _Corrupt(f"unexpected alias_tensor version {ver} at offset {at}")
        return self.read_dims()


# ----------------------------------------------------------------------------------------------------------
# layer details


def _read_con(r: DlibReader) -> dict[str, Any]:
    params = r.read_tensor()
    nf, nr, nc = r.read_int(), r.read_int(), r.read_int()
    sy, sx, py, px = r.read_int(), r.read_int(), r.read_int(), r.read_int()
    fshape = r.read_alias_tensor()
    bshape = r.read_alias_tensor()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        r.read_float()
    nw = int(np.prod(fshape))
    nb = int(np.prod(bshape))
    if fshape[0] != nf or fshape[2:] != (nr, nc) or params.size != nw + nb or nb not in (0, nf):
        raise _Corrupt(f"inconsistent con_ layer: filters {fshape}, biases {bshape}, params {params.size}")
    flat = params.reshape(-1)
    return {"weight": flat[:nw].reshape(fshape).copy(),
            "bias": flat[nw:].copy() if nb else None,
            "num_filters": nf, "kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _read_affine(r: DlibReader) -> dict[str, Any]:
    params = r.read_tensor()
    gshape = r.read_alias_tensor()
    bshape = r.read_alias_tensor()
    mode = r.read_int()
    ng, nb = int(np.prod(gshape)), int(np.prod(bshape))
    if params.size != ng + nb or ng != nb:
        raise _Corrupt(f"inconsistent affine_ layer: gamma {gshape}, beta {bshape}, params {params.size}")
    flat = params.reshape(-1)
    return {"gamma": flat[:ng].copy(), "beta": flat[ng:].copy(), "mode": "conv" if mode == 0 else "fc",
            "shape": gshape}


def _read_bn_as_affine(r: DlibReader, mode: str) -> dict[str, Any]:
    """A batch-norm layer stored where an affine_ is expected: folded to gamma/sqrt(var+eps), as dlib does."""
    params = r.read_tensor()
    gshape = r.read_alias_tensor()
    r.read_alias_tensor()
    r.read_tensor()  # means
    r.read_tensor()  # invstds
    rmeans = r.read_tensor().reshape(-1)
    rvars = r.read_tensor().reshape(-1)
    r.read_int()  # num_updates
    r.read_int()  # running_stats_window_size
    for _ in range(4):
        r.read_float()
    eps = r.read_float()
    ng = int(np.prod(gshape))
    flat = params.reshape(-1)
    g = flat[:ng] / np.sqrt(rvars + eps)
    b = flat[ng:2 * ng] - g * rmeans
    return {"gamma": g.astype(np.float32), "beta": b.astype(np.float32), "mode": mode, "shape": gshape}


def _read_pool(r: DlibReader) -> dict[str, Any]:
    nr, nc, sy, sx, py, px = (r.read_int() for _ in range(6))
    return {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _read_fc(r: DlibReader) -> dict[str, Any]:
    n_out, n_in = r.read_int(), r.read_int()
    params = r.read_tensor()
    wshape = r.read_alias_tensor()
    bshape = r.read_alias_tensor()
    bias_mode = r.read_int()
    for _ in range(4):
        r.read_float()
    nw = n_in * n_out
    flat = params.reshape(-1)
    has_bias = bias_mode == 0
    if int(np.prod(wshape)) != nw or params.size != nw + (n_out if has_bias else 0):
        raise _Corrupt(f"inconsistent fc_ layer: {n_in}->{n_out}, weights {wshape}, bias {bshape}, "
                       f"params {params.size}")
    # dlib stores the weight as [in, out]
    return {"weight": flat[:nw].reshape(n_in, n_out).copy(),
            "bias": flat[nw:].copy() if has_bias else None, "num_inputs": n_in, "num_outputs": n_out}


def _read_details(r: DlibReader) -> DlibLayer:
    at = r.pos
    kind = r.read_str()
    if kind == "con_4":
        return DlibLayer(kind, _read_con(r))
    if kind == "affine_":
        return DlibLayer(kind, _read_affine(r))
    if kind in ("bn_con2", "bn_fc2"):
        return DlibLayer("affine_", _read_bn_as_affine(r, "conv" if kind == "bn_con2" else "fc"))
    if kind in ("relu_", "add_prev_"):
        return DlibLayer(kind, {})
    if kind in ("max_pool_2", "avg_pool_2"):
        return DlibLayer(kind, _read_pool(r))
    if kind == "fc_2":
        return DlibLayer(kind, _read_fc(r))
    raise _Corrupt(f"unsupported layer type {kind!r} at offset {at}")


def _read_input(r: DlibReader) -> dict[str, Any]:
    at = r.pos
    kind = r.read_str()
    if kind == "input_rgb_image_sized":
        mean = (r.read_float(), r.read_float(), r.read_float())
        nr, nc = r.read_int(), r.read_int()
        return {"kind": kind, "mean_rgb": mean, "size": (nr, nc)}
    if kind == "input_rgb_image":
        mean = (r.read_float(), r.read_float(), r.read_float())
        return {"kind": kind, "mean_rgb": mean, "size": None}
    raise _Corrupt(f"unsupported input layer {kind!r} at offset {at}")


def _read_loss(r: DlibReader) -> dict[str, Any]:
    at = r.pos
    kind = r.read_str()
    if kind == "loss_metric_2":
        return {"kind": kind, "margin": r.read_float(), "dist_thresh": r.read_float()}
    if kind == "loss_metric_":
        return {"kind": kind}
    raise _Corrupt(f"unsupported loss layer {kind!r} at offset {at}")


def _parse(r: DlibReader) -> DlibNet:
    ver = r.read_int()
    if ver != 1:
        raise _Corrupt(f"unexpected loss-layer version {ver} at offset 0 (not a dlib DNN file?)")
    loss = _read_loss(r)
    # Descend: a run of version ints (2 = add_layer, 1 = tag/skip) until the input layer's name.
    stack: list[int] = []
    while True:
        at = r.pos
        v = r.read_int()
        if r.peek_str_startswith("input_"):
            if v not in (2, 3):
                raise _Corrupt(f"unexpected version {v} of the first layer at offset {at}")
            bottom_version = v
            break
        if v not in (1, 2):
            raise _Corrupt(f"unexpected layer version {v} at offset {at}")
        stack.append(v)
        if len(stack) > 100_000:
            raise _Corrupt("layer nesting too deep")
    inp = _read_input(r)
    layers: list[DlibLayer] = []
    # the bottom add_layer (whose subnet is the input layer) has its own trailer
    layers.append(_read_details(r))
    for _ in range(3):
        r.read_bool()
    for _ in range(3):  # x_grad, cached_output, grad_final
        r.read_tensor()
    if bottom_version >= 3:
        r.read_int()  # sample_expansion_factor
    for v in reversed(stack):
        if v == 1:
            layers.append(DlibLayer("tag_or_skip"))
            continue
        layers.append(_read_details(r))
        for _ in range(3):
            r.read_bool()
        for _ in range(3):  # x_grad, cached_output, params_grad
            r.read_tensor()
    return DlibNet(loss=loss, input=inp, layers=layers, n_bytes=r.pos)


def parse_dlib_dnn(data: bytes | str | Path) -> DlibNet:
    """Parse a dlib DNN ``.dat`` (bytes or a path) into a :class:`DlibNet`.

    Raises ModelLoadError (with the byte offset) for a truncated/garbage file or one with bytes left over
    after the network; the whole file must be consumed.
    """
    name = "<bytes>"
    if not isinstance(data, bytes | bytearray | memoryview):
        name = str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise ModelLoadError(f"cannot read dlib model file {name}: {e}") from e
    data = bytes(data)
    if not data:
        raise ModelLoadError(f"dlib model file {name} is empty")
    r = DlibReader(data)
    try:
        net = _parse(r)
    except _Corrupt as e:
        raise ModelLoadError(f"dlib model file {name} is truncated or corrupt: {e}") from None
    if net.n_bytes != len(data):
        raise ModelLoadError(f"dlib model file {name}: network ends at byte {net.n_bytes} but the file has "
                             f"{len(data)} bytes (trailing garbage or wrong file)")
    return net
