"""The bundled ``lite`` generator: architecture contract, save/load, loader errors, a tiny training run,
data alignment helpers, the CLI, and the shipped weights on real held-out faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceprivacy.core.errors import InputError, ModelLoadError
from faceprivacy.models.generator import Generator
from faceprivacy.models.generator_loader import default_lite_weights, load_generator
from faceprivacy.models.lite import LiteConfig, LiteGenerator
from faceprivacy.models.lite_data import (
    ARCFACE_TEMPLATE,
    align_arcface112,
    align_fast,
    decode_jpegs,
    encode_jpegs,
)
from faceprivacy.models.train_lite import TrainConfig, pyramid_l1, sliced_wasserstein, train_lite

torch.set_num_threads(2)


def _faces(n: int = 8, seed: int = 0) -> np.ndarray:
    """Smooth synthetic 'faces' (blobs) so a tiny autoencoder can fit them in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112] / 112.0
    out = []
    for _ in range(n):
        c = rng.uniform(0.3, 0.7, 2)
        col = rng.uniform(60, 220, 3)
        blob = np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / 0.05)
        out.append((blob[..., None] * col + (1 - blob[..., None]) * 30).astype(np.uint8))
    return np.stack(out)


def test_tiny_generator_contract():
    g = LiteGenerator(LiteConfig.tiny()).eval()
    assert isinstance(g, Generator) and g.alignment == "arcface112" and g.resolution == 112
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    z = g.encode(x)
    assert z.shape == (3, *g.latent_shape)
    y = g.decode(z)
    assert y.shape == (3, 3, 112, 112) and y.min() >= -1 and y.max() <= 1
    s1 = g.sample_latents(4, generator=torch.Generator().manual_seed(1))
    s2 = g.sample_latents(4, generator=torch.Generator().manual_seed(1))
    assert s1.shape == (4, *g.latent_shape) and torch.equal(s1, s2)
    glob, spat = g.split_latent(z)
    assert glob.shape[1] + spat[0].numel() == g.latent_shape[0]
    with pytest.raises(ValueError):
        g.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError):
        g.decode(torch.zeros(1, 7))


def test_default_config_shapes():
    cfg = LiteConfig()
    g = LiteGenerator(cfg)
    assert g.latent_shape == (cfg.global_dim + cfg.spatial_ch * cfg.spatial_res ** 2,)
    assert LiteConfig.from_dict(cfg.to_dict()) == cfg


def test_save_load_roundtrip(tmp_path):
    g = LiteGenerator(LiteConfig.tiny()).eval()
    torch.save(g.state_for_saving(half=True), tmp_path / "g.pt")
    g2 = load_generator("lite", tmp_path / "g.pt")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(g.decode(g.encode(x)), g2.decode(g2.encode(x)), atol=2e-2)


def test_loader_errors(tmp_path):
    with pytest.raises(InputError, match="unknown generator backend"):
        load_generator("nope")
    with pytest.raises(ModelLoadError, match="not found"):
        load_generator("lite", tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="format tag"):
        load_generator("lite", tmp_path / "bad.pt")
    blob = LiteGenerator(LiteConfig.tiny()).state_for_saving()
    del blob["state_dict"]["decoder.rgb.weight"]
    torch.save(blob, tmp_path / "partial.pt")
    with pytest.raises(InputError, match="decoder.rgb.weight"):
        load_generator("lite", tmp_path / "partial.pt")


def test_losses_behave():
    torch.manual_seed(0)
    z_good = torch.randn(256, 64)
    z_bad = torch.randn(256, 64) * 3 + 2
    assert sliced_wasserstein(z_good) < 0.2 * sliced_wasserstein(z_bad)
    a = torch.zeros(1, 3, 16, 16)
    assert pyramid_l1(a, a) == 0 and pyramid_l1(a, a + 1) == pytest.approx(1.0)


def test_tiny_training_reduces_error(tmp_path):
    imgs = _faces(8)
    src = np.array([0] * 4 + [1] * 4)
    calls = []

    def fake_id(x: torch.Tensor) -> torch.Tensor:  # differentiable stand-in for the dlib descriptor
        calls.append(1)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    tcfg = TrainConfig(steps=60, batch=8, d_ch=(8, 8, 16, 16, 16), lr_g=2e-3, lr_d=2e-4, ema=0.9,
                       r1_every=4, save_every_s=1e9)
    summary = train_lite(imgs, src, tmp_path, LiteConfig.tiny(), tcfg, id_embed=fake_id, device="cpu")
    assert summary["steps"] == 60 and calls
    log = summary["last"]
    assert all(np.isfinite(v) for v in log.values())
    g = load_generator("lite", tmp_path / "lite_ema.pt")
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        err = (g.decode(g.encode(x)) - x).abs().mean().item()
        err0 = (LiteGenerator(LiteConfig.tiny()).decode(torch.zeros(8, g.latent_shape[0])) - x).abs().mean().item()
    assert err < 0.8 * err0
    assert (tmp_path / "lite_train.pt").is_file() and (tmp_path / "lite_D.pt").is_file()


def test_alignment_helpers():
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 255, (200, 200, 3))).astype(np.uint8)
    img = np.asarray(torch.nn.functional.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1).float(), 5, 1, 2)
                     .permute(1, 2, 0).byte())
    five = ARCFACE_TEMPLATE * 1.6 + 10  # a face 1.6x larger than the template, shifted
    a, b = align_arcface112(img, five), align_fast(img, five)
    assert a.shape == b.shape == (112, 112, 3)
    assert np.abs(a.astype(int) - b).mean() < 3
    # identity transform: template points map to themselves -> the crop is the top-left 112x112 corner
    c = align_fast(img, ARCFACE_TEMPLATE)
    assert np.abs(c.astype(int) - img[:112, :112]).mean() < 1.5
    blobs = encode_jpegs(_faces(3), quality=95)
    back = decode_jpegs(blobs)
    assert back.shape == (3, 112, 112, 3) and np.abs(back.astype(int) - _faces(3)).mean() < 3


def test_cli_train_tiny(tmp_path):
    from faceprivacy.cli import main
    imgs = _faces(6)
    blobs = encode_jpegs(imgs)
    pack = tmp_path / "pack.npz"
    np.savez(pack, jpeg=np.concatenate(list(blobs)), lengths=np.array([len(b) for b in blobs]),
             source=np.zeros(6, np.uint8))
    rc = main(["-q", "train-generator", "--pack", str(pack), "--out", str(tmp_path / "run"), "--tiny",
               "--steps", "2", "--no-id", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "run" / "lite_ema.pt").is_file()
    assert main(["-q", "train-generator", "--pack", str(tmp_path / "nope.npz"), "--out",
                 str(tmp_path / "r2"), "--data", str(tmp_path / "nodata"), "--tiny", "--steps", "1"]) == 2


@pytest.fixture(scope="module")
def shipped():
    if not default_lite_weights().is_file():
        pytest.skip("shipped lite weights not present")
    return load_generator("lite")


def test_shipped_weights_load_and_sample(shipped):
    assert shipped.latent_shape == (LiteConfig().latent_dim,)
    with torch.no_grad():
        y = shipped.decode(shipped.sample_latents(2, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (2, 3, 112, 112)
    assert y.std() > 0.1  # not a constant image


def test_shipped_weights_reconstruct_fixture_face(shipped, datakit):
    from faceprivacy.models.generator_eval import dlib_raw_arcface, load_test_faces, reconstruct
    imgs, labels = load_test_faces(datakit, max_test=6)
    rec = reconstruct(shipped, imgs)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((rec.astype(float) - imgs) ** 2, axis=(1, 2, 3)))
    assert psnr.mean() > 17.0
    d = np.linalg.norm(dlib_raw_arcface(imgs) - dlib_raw_arcface(rec), axis=1)
    # reconstructions are closer to their own source face than to the other test faces
    other = np.linalg.norm(dlib_raw_arcface(imgs)[::-1] - dlib_raw_arcface(rec), axis=1)
    assert d.mean() < 0.6 and d.mean() < other.mean()
    with torch.no_grad():
        z = shipped.encode(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert abs(z.mean().item()) < 0.3 and 0.5 < z.std().item() < 1.5  # latents follow the N(0, I) prior
