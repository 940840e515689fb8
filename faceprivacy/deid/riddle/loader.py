"""Build the ``riddle`` method: a generator backend plus its encryptor weights (bundled for ``lite``)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def default_encryptor_path(generator_name: str = "lite") -> Path:
    """Bundled encryptor weights for a generator backend."""
    from ...core.paths import weights_dir

    return weights_dir() / "deid" / f"encryptor_{generator_name}.pt"


def load_riddle(generator: str = "lite", generator_weights: Path | None = None, encryptor: Path | None = None):
    """The ``riddle`` method: generator backend + its encryptor weights."""
    import torch

    from ...models.generator_loader import load_generator
    from ..methods import Riddle
    from .encryptor import LatentEncryptor

    torch.set_num_threads(min(2, torch.get_num_threads()))
    kw = {"backend": generator}
    if generator_weights is not None:
        kw["weights"] = generator_weights
    gen = load_generator(**kw)
    enc = LatentEncryptor.load(encryptor or default_encryptor_path(getattr(gen, "name", generator)))
    want = enc.meta.get("generator_weights_sha256")
    if want and generator == "lite" and generator_weights is None:
        import hashlib

        from ...models.generator_loader import default_lite_weights

        have = hashlib.sha256(default_lite_weights().read_bytes()).hexdigest()
        if have != want:
            log.warning("the encryptor was fitted for other lite generator weights (%s..., installed %s...): "
                        "refit it with `faceprivacy train-deid` for meaningful anonymization", want[:12], have[:12])
    return Riddle(gen, enc)
