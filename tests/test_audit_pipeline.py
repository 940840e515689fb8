"""End-to-end audit wiring on a toy embedder + toy generator, and the CLI on a few real CelebA crops."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from faceprivacy.audit.evaluate import AuditConfig, AuditData, differentiable_embed, run_audit, write_report
from faceprivacy.audit.inversion import decode_latents, to_crops112
from faceprivacy.core.embedder import Embedder, l2_normalize
from tests.test_audit_inversion import TinyGenerator


class _ToyNet(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Parameter(torch.randn(3 * 16 * 16, 16, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N,3,112,112) 0..255
        return torch.tanh(F.adaptive_avg_pool2d(x / 127.5 - 1, 16).reshape(len(x), -1)) @ self.proj


class ToyEmbedder(Embedder):
    """A differentiable toy recognizer in the ArcFace-112 layout (``.net`` enables the white-box path)."""

    alignment = "arcface112"
    input_size = (112, 112)
    dim = 16

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.net = _ToyNet(seed)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        with torch.no_grad():
            return l2_normalize(self.net(torch.as_tensor(batch).permute(0, 3, 1, 2).float()).numpy())


def _toy_data(gen: TinyGenerator) -> AuditData:
    g = torch.Generator().manual_seed(3)
    data = AuditData({}, {}, {}, {})
    offset = 0
    for split, n_ids in (("train", 30), ("val", 5), ("test", 12)):
        centres = torch.randn(n_ids, 16, generator=g)
        lab = np.repeat(np.arange(n_ids), 4)
        z = centres[lab] + 0.3 * torch.randn(len(lab), 16, generator=g)
        data.crops[split] = to_crops112(decode_latents(gen, z))
        data.labels[split] = lab + offset
        data.ids[split] = np.array([f"id{i + offset}" for i in lab])
        data.paths[split] = [f"{split}/{i}.png" for i in range(len(lab))]
        offset += n_ids
    return data


def test_run_audit_end_to_end_with_toy_models(tmp_path):
    gen = TinyGenerator()
    emb, other = ToyEmbedder("toy-a", 1), ToyEmbedder("toy-b", 2)
    cfg = AuditConfig(far=1e-2, probes=False, n_invert=6, mapper_epochs=30, wb_steps=15, wb_lr=0.1,
                      bb_iters=4, bb_pop=8, bb_dims=8, n_bits=16)
    res = run_audit(emb, _toy_data(gen), None, cfg, generator=gen, other=other, master_key=b"x" * 32,
                    diff_embed=differentiable_embed(emb))
    t = res["templates"]
    assert res["verification_raw"]["tar"] > 0.5
    assert 0.0 <= t["verification_per_user_keys"]["tar"] <= 1.0
    assert t["unlinkability"]["linkage_auc"] < 0.8
    att = res["inversion"]["attacks"]
    for k in ("encoder_reconstruction_ceiling", "mapper", "whitebox", "blackbox", "protected_mapper"):
        assert 0.0 <= att[k]["type1_rate"] <= 1.0 and "type2_rate" in att[k]
    assert att["whitebox"]["type1_mean_cos"] > att["mapper"]["type1_mean_cos"]
    curve = att["whitebox"]["success_vs_steps"]  # the budget curve ends at the full run's own numbers
    assert [c["steps"] for c in curve] == [10, 15] and curve[-1]["type2"] == att["whitebox"]["type2"]
    paths = write_report(res, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert "_images" not in saved and "_embeddings" not in saved
    html = paths["html"].read_text()
    assert "Inversion attacks" in html and "data:image/png;base64" in html


def test_cli_real_data_quick(celeba_root, datakit, tmp_path):
    from faceprivacy.cli import main

    out = tmp_path / "audit"
    rc = main(["-q", "audit-embeddings", "--embedder", "dlib", "--data", str(datakit), "--out", str(out),
               "--quick", "--max-per-split", "45", "--no-inversion"])
    assert rc == 0
    res = json.loads((out / "audit.json").read_text())
    names = {r["attribute"] for r in res["probes"]}
    assert {"landmarks", "yaw", "colour_hist", "illumination", "background", "age", "gender"} <= names
    assert res["verification_raw"]["tar"] > 0.3
    assert not (out / "embeddings.npz").exists()  # raw embeddings are never written without the flag
    assert (out / "audit.html").stat().st_size > 1000


def test_fixed_box_landmarks_match_arcface_layout(celeba_root):
    from faceprivacy.audit.attributes import LandmarkPredictor
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.core.imageio import load_image

    ds = celeba_subset(celeba_root)
    pred = LandmarkPredictor()
    lms = np.stack([pred(load_image(p)) for p in ds.paths[::250][:20]])
    eyes = np.stack([lms[:, 36:42].mean(1), lms[:, 42:48].mean(1)], 1)  # (n, 2, 2)
    # ArcFace template eye centres (38.3, 51.7) and (73.5, 51.5); the crops were aligned to them
    tmpl = np.array([[38.3, 51.7], [73.5, 51.5]])
    assert np.abs(np.median(eyes, 0) - tmpl).max() < 3, np.median(eyes, 0)
    assert (np.abs(eyes - tmpl).max(axis=(1, 2)) < 6).mean() >= 0.8


def test_cache_dir_reuses_latents_and_mapper_and_rebuilds_a_damaged_entry(tmp_path):
    gen = TinyGenerator()
    emb = ToyEmbedder("toy-a", 1)
    cfg = AuditConfig(far=1e-2, probes=False, templates=False, n_invert=4, mapper_epochs=10, wb_steps=0,
                      bb_iters=1, bb_pop=4, bb_dims=4)
    data = _toy_data(gen)
    cache = tmp_path / "cache"
    first = run_audit(emb, data, None, cfg, generator=gen, cache_dir=cache)["inversion"]
    assert first["mapper_cached"] is False
    entries = sorted(p.name for p in cache.iterdir())
    assert [p[:7] for p in entries] == ["latents", "mapper_"]
    second = run_audit(emb, data, None, cfg, generator=gen, cache_dir=cache)["inversion"]
    assert second["mapper_cached"] is True
    assert second["attacks"]["mapper"]["type1_mean_cos"] == first["attacks"]["mapper"]["type1_mean_cos"]
    cfg.mapper_epochs = 11  # another mapper option: a new entry, the latents are shared
    assert run_audit(emb, data, None, cfg, generator=gen, cache_dir=cache)["inversion"]["mapper_cached"] is False
    assert len(list(cache.glob("latents_*"))) == 1 and len(list(cache.glob("mapper_*"))) == 2
    for p in cache.iterdir():
        p.write_bytes(b"garbage")
    third = run_audit(emb, data, None, cfg, generator=gen, cache_dir=cache)["inversion"]
    assert third["mapper_cached"] is False and "type1_rate" in third["attacks"]["mapper"]


def test_whitebox_ensemble_attack_and_it_refuses_the_judge():
    import pytest

    from faceprivacy.core.errors import InputError

    gen = TinyGenerator()
    emb, other, third = ToyEmbedder("toy-a", 1), ToyEmbedder("toy-b", 2), ToyEmbedder("toy-c", 3)
    cfg = AuditConfig(far=1e-2, probes=False, templates=False, n_invert=4, mapper_epochs=10, wb_steps=6,
                      wb_manifold=False, bb_iters=1, bb_pop=4, bb_dims=4)
    data = _toy_data(gen)
    inv = run_audit(emb, data, None, cfg, generator=gen, other=other, diff_embed=differentiable_embed(emb),
                    ensemble=third)["inversion"]
    assert inv["ensemble"]["recognizer"] == "toy-c" and -1 <= inv["ensemble"]["holdout_cos"] <= 1
    ens = inv["attacks"]["whitebox_ensemble"]
    assert 0 <= ens["type1_rate"] <= 1 and "type2" in ens and ens["success_vs_steps"][-1]["steps"] == 6
    with pytest.raises(InputError):
        run_audit(emb, data, None, cfg, generator=gen, other=other, diff_embed=differentiable_embed(emb),
                  ensemble=ToyEmbedder("toy-b", 2))
