"""What a FedFace upload reveals about its person, and the guarantee the DP noise gives.

* **Noise source.** Client DP noise comes from a ``torch.Generator`` seeded from the OS CSPRNG
  (:func:`noise_generator`, 64 fresh bits per upload); the run seed only drives batch sampling. The server,
  which knows the run seed, round and node id, cannot regenerate the noise (it could, before, from
  ``hash((seed, round, node))``).
* **Threat model and unit.** The adversary is the server (and whoever reads its checkpoints). One node holds
  one person, so the unit of privacy is the *person*: every upload of a node is a Gaussian mechanism on that
  person's data (joint L2 clipping to ``C`` of head update + class-embedding update, noise ``N(0, (sigma C)^2)``
  per coordinate). The server sees which nodes it sampled, so sampling gives no amplification: a node that
  took part in ``k`` rounds has composed ``k`` Gaussian mechanisms of multiplier ``sigma``.
* **First upload.** The server sends a new node a random class embedding; the node's first upload is the
  *difference* between its own starting embedding and that random one, clipped and noised like every other
  update. No upload carries the node's mean face feature in clear (unless ``dp_noise`` is 0, which
  ``fed-server`` warns about).
* **Accountant.** :func:`epsilon` composes the Gaussian mechanisms with Flower's RDP accountant
  (``flwr.supercore.privacy_accounting``, backed by Google's ``dp-accounting``); where that is not installed it
  uses the closed form of the Gaussian mechanism's RDP, ``k * alpha / (2 sigma^2)``, with the conversion of
  Canonne, Kamath and Steinke (2020). Both are tested to agree.
"""

from __future__ import annotations

import math
import os

import torch


def noise_generator() -> torch.Generator:
    """A generator for DP noise seeded from the OS CSPRNG (never from the run seed)."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") & 0x7FFFFFFFFFFFFFFF)


def _rdp_closed_form(noise: float, releases: int, delta: float) -> float:
    """(epsilon, delta) of ``releases`` Gaussian mechanisms of multiplier ``noise`` (RDP, no amplification)."""
    best = math.inf
    for i in range(1, 2000):
        a = 1.0 + i * 0.05 if i < 200 else 11.0 + (i - 200) * 0.5
        rdp = releases * a / (2.0 * noise * noise)
        eps = rdp + math.log1p(-1.0 / a) - (math.log(delta) + math.log(a)) / (a - 1.0)
        best = min(best, eps)
    return max(0.0, best)


def epsilon(noise: float, releases: int, delta: float = 1e-5, population: int = 1) -> float:
    """Per-person epsilon after ``releases`` uploads with noise multiplier ``noise`` (inf without noise)."""
    if releases <= 0:
        return 0.0
    if noise <= 0:
        return math.inf
    try:
        from flwr.supercore.privacy_accounting import (
            GaussianPrivacyEvent,
            NeighboringRelation,
            PrivacyConfig,
            SamplingMethod,
        )
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        acc = RdpAccountant(PrivacyConfig(target_delta=delta, population_size=max(1, population),
                                          neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                          sampling_method=SamplingMethod.NO_AMPLIFICATION))
        acc.compose(GaussianPrivacyEvent(noise_multiplier=float(noise), sample_size=1,
                                         population_size=max(1, population)), count=int(releases))
        return float(acc.get_epsilon(delta))
    except ImportError:
        return _rdp_closed_form(noise, releases, delta)


def accountant_name() -> str:
    """Which accountant :func:`epsilon` uses here (for reports)."""
    try:
        import dp_accounting  # noqa: F401

        return "flwr RdpAccountant (dp-accounting)"
    except ImportError:
        return "closed-form Gaussian RDP"
