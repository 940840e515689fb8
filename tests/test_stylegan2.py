"""stylegan2 backend: key layouts of the real 256/512/1024 checkpoints, loading of small random-init
checkpoints written in the real file layouts (g_ema, e4e/pSp), decode/encode shapes, determinism, and clear
errors for wrong files. No real weights needed; everything runs on CPU in a few seconds."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceprivacy.core.errors import InputError, ModelLoadError
from faceprivacy.models.e4e import build_encoder
from faceprivacy.models.ffhq_align import ffhq_crop, ffhq_quad
from faceprivacy.models.generator import Generator
from faceprivacy.models.stylegan2 import ModulatedConv2d, Upsample, build_stylegan2
from faceprivacy.models.stylegan2_backend import StyleGAN2Backend, load_stylegan2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs: one thread is fastest (and avoids OpenMP spinning on a busy 2-core CI box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# small instance: same key naming code as 256/512/1024, narrow channels
SIZE, WIDTH, CM, SDIM, NMLP = 64, 16, 1, 32, 8
N_LATENT = 2 * int(math.log2(SIZE)) - 2  # 10
ENC_WIDTH = 8


def _expected_g_keys(size: int, n_mlp: int = 8) -> int:
    """Key count derived from the architecture description (independent of the implementation)."""
    n_res = int(math.log2(size)) - 2  # resolutions 8 .. size
    mapping = 2 * n_mlp  # weight + bias per linear layer
    const = 1  # input.input
    conv1 = 5  # conv.weight, conv.modulation.{weight,bias}, noise.weight, activate.bias
    to_rgb1 = 4  # conv.weight, conv.modulation.{weight,bias}, bias
    convs = n_res * (6 + 5)  # up conv has the extra conv.blur.kernel buffer
    to_rgbs = n_res * 5  # + upsample.kernel
    noises = 2 * n_res + 1
    return mapping + const + conv1 + to_rgb1 + convs + to_rgbs + noises


def _expected_enc_keys(n_styles: int) -> int:
    """Key count of an IR-SE-50 e4e/pSp encoder from the architecture description."""
    bn = 5  # weight, bias, running_mean, running_var, num_batches_tracked
    input_layer = 1 + bn + 1
    unit = bn + 1 + 1 + 1 + bn + 2  # BN, conv, PReLU, conv, BN, SE fc1/fc2
    shortcut_conv = 1 + bn  # in stages 2, 3, 4 the first unit changes width
    body = 24 * unit + 3 * shortcut_conv
    styles = 0
    for i in range(n_styles):
        n_down = 4 if i < 3 else (5 if i < 7 else 6)
        styles += 2 * n_down + 2
    return input_layer + body + styles + 4


@pytest.mark.parametrize("size,n_latent,n_keys", [(256, 14, 135), (512, 16, 153), (1024, 18, 171)])
def test_real_generator_key_layout(size: int, n_latent: int, n_keys: int) -> None:
    with torch.device("meta"):
        g = build_stylegan2(size)
    sd = g.state_dict()
    assert g.n_latent == n_latent
    assert len(sd) == n_keys == _expected_g_keys(size)
    n_res = int(math.log2(size)) - 2
    assert len([k for k in sd if k.endswith("conv.weight") and k.startswith("convs.")]) == 2 * n_res
    assert len([k for k in sd if k.startswith("noises.noise_")]) == 2 * int(math.log2(size)) - 3
    ch_last = {256: 128, 512: 64, 1024: 32}[size]
    shapes = {
        "style.1.weight": (512, 512), "style.8.bias": (512,), "input.input": (1, 512, 4, 4),
        "conv1.conv.weight": (1, 512, 512, 3, 3), "conv1.conv.modulation.weight": (512, 512),
        "conv1.noise.weight": (1,), "conv1.activate.bias": (512,), "to_rgb1.bias": (1, 3, 1, 1),
        "to_rgb1.conv.weight": (1, 3, 512, 1, 1), "convs.0.conv.blur.kernel": (4, 4),
        "convs.6.conv.weight": (1, 512, 512, 3, 3),  # 64x64: 256 * channel_multiplier 2
        f"convs.{2 * n_res - 1}.conv.weight": (1, ch_last, ch_last, 3, 3),
        f"to_rgbs.{n_res - 1}.conv.weight": (1, 3, ch_last, 1, 1),
        f"to_rgbs.{n_res - 1}.upsample.kernel": (4, 4),
        "noises.noise_0": (1, 1, 4, 4), "noises.noise_1": (1, 1, 8, 8),
        f"noises.noise_{2 * n_res}": (1, 1, size, size),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert "style.0.weight" not in sd and "style.9.weight" not in sd  # index 0 is PixelNorm
    if size == 256:
        assert tuple(sd["convs.8.conv.weight"].shape) == (1, 256, 512, 3, 3)  # 128x128 up conv
        assert tuple(sd["convs.10.conv.modulation.weight"].shape) == (256, 512)


def test_real_encoder_key_layout() -> None:
    with torch.device("meta"):
        e = build_encoder(14)
    sd = e.state_dict()
    assert len(sd) == _expected_enc_keys(14) == 565
    shapes = {
        "input_layer.0.weight": (64, 3, 3, 3), "input_layer.2.weight": (64,),
        "body.0.res_layer.1.weight": (64, 64, 3, 3), "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
        "body.7.shortcut_layer.1.running_var": (256,), "body.21.res_layer.3.weight": (512, 512, 3, 3),
        "body.23.res_layer.5.fc1.weight": (32, 512, 1, 1), "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
        "styles.0.convs.6.weight": (512, 512, 3, 3), "styles.13.convs.10.weight": (512, 512, 3, 3),
        "styles.13.linear.weight": (512, 512), "latlayer1.weight": (512, 256, 1, 1),
        "latlayer2.weight": (512, 128, 1, 1),
    }
    for k, s in shapes.items():
        assert tuple(sd[k].shape) == s, k
    assert "body.0.shortcut_layer.0.weight" not in sd  # same width: max-pool shortcut
    assert "styles.0.convs.8.weight" not in sd  # coarse rows: 4 convs on the 16x16 map


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small() -> dict:
    torch.manual_seed(0)
    g = build_stylegan2(SIZE, SDIM, NMLP, CM, WIDTH).eval()
    for name, p in g.named_parameters():  # zero-initialised params get values so loading is observable
        if name.endswith(("noise.weight", "activate.bias")) or name.startswith("to_rgb") and name.endswith(".bias"):
            p.data.normal_(0, 0.1)
    enc = build_encoder(N_LATENT, "e4e", ENC_WIDTH, SDIM, SIZE).eval()
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    latent_avg = torch.randn(SDIM)
    return {"g": g, "enc": enc, "latent_avg": latent_avg}


def _e4e_ckpt(small: dict, arch: str = "Encoder4Editing", avg: torch.Tensor | None = None) -> dict:
    sd = {f"encoder.{k}": v for k, v in small["enc"].state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in small["g"].state_dict().items()})
    avg = small["latent_avg"].repeat(N_LATENT, 1) if avg is None else avg
    return {"state_dict": sd, "latent_avg": avg,
            "opts": {"encoder_type": arch, "stylegan_size": SIZE, "start_from_latent_avg": True}}


def _wplus(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, N_LATENT, SDIM, generator=torch.Generator().manual_seed(seed))


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1


# ---------------------------------------------------------------------------------------------- loading


def test_load_g_ema_checkpoint_decode(tmp_path: Path, small: dict) -> None:
    p = tmp_path / "stylegan2-small.pt"
    torch.save({"g_ema": small["g"].state_dict(), "latent_avg": small["latent_avg"]}, p)
    gen = load_stylegan2(p)
    assert isinstance(gen, Generator) and isinstance(gen, StyleGAN2Backend)
    assert gen.resolution == SIZE and gen.latent_shape == (N_LATENT, SDIM) and gen.alignment == "ffhq"
    assert (gen.g_ema.channel_multiplier, gen.g_ema.width, gen.g_ema.n_mlp) == (CM, WIDTH, NMLP)
    w = _wplus()
    with torch.no_grad():
        out = gen.decode(w)
        out2 = gen.decode(w)
        ref = small["g"](w).clamp(-1, 1)
    assert out.shape == (2, 3, SIZE, SIZE)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, out2)  # fixed noise buffers: deterministic
    assert torch.allclose(out, ref, atol=1e-5)  # freshly built + loaded == the saved network
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ModelLoadError, match="no encoder"):
        gen.encode(_images())
    wg = w[:1].clone().requires_grad_(True)  # frozen weights, but latents stay optimisable
    gen.decode(wg).square().mean().backward()
    assert wg.grad is not None and wg.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in gen.parameters())


def test_bare_and_dataparallel_state_dicts(tmp_path: Path, small: dict) -> None:
    sd = small["g"].state_dict()
    torch.save(sd, tmp_path / "bare.pt")
    torch.save({"g_ema": {f"module.{k}": v for k, v in sd.items()}, "args": argparse.Namespace(size=SIZE)},
               tmp_path / "train.pt")
    w = _wplus(1)
    with torch.no_grad():
        a = load_stylegan2(tmp_path / "bare.pt").decode(w)
        b = load_stylegan2(tmp_path / "train.pt").decode(w)
    assert torch.equal(a, b)


def test_sample_latents_and_truncation(tmp_path: Path, small: dict) -> None:
    p = tmp_path / "g.pt"
    torch.save({"g_ema": small["g"].state_dict(), "latent_avg": small["latent_avg"]}, p)
    gen = load_stylegan2(p)
    with torch.no_grad():
        a = gen.sample_latents(3, torch.Generator().manual_seed(5))
        b = gen.sample_latents(3, torch.Generator().manual_seed(5))
        c = gen.sample_latents(3, torch.Generator().manual_seed(6))
        m = gen.sample_latents(2, torch.Generator().manual_seed(5), truncation=0.0)
        h = gen.sample_latents(3, torch.Generator().manual_seed(5), truncation=0.5)
        z = torch.randn(3, SDIM, generator=torch.Generator().manual_seed(5))
        w = small["g"].mapping(z)
    assert a.shape == (3, N_LATENT, SDIM)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a[:, 0], w, atol=1e-5) and torch.equal(a[:, 0], a[:, -1])
    assert torch.allclose(m, small["latent_avg"].expand_as(m))  # psi = 0: the mean face
    assert torch.allclose(h, small["latent_avg"] + 0.5 * (a - small["latent_avg"]), atol=1e-5)
    assert gen.decode(a).shape == (3, 3, SIZE, SIZE)


def test_e4e_checkpoint_encode_decode(tmp_path: Path, small: dict) -> None:
    p = tmp_path / "e4e_small.pt"
    torch.save(_e4e_ckpt(small), p)
    gen = load_stylegan2(p)  # decoder.* and encoder.* from one file
    assert gen.encoder is not None and gen.encoder.arch == "e4e" and gen.encoder.input_size == SIZE
    x = _images()
    with torch.no_grad():
        codes = gen.encode(x)
        codes2 = gen.encode(x)
        ref = small["enc"](x) + small["latent_avg"]
        rec = gen.decode(codes)
        big = gen.encode(F.interpolate(x, scale_factor=2, mode="nearest"))  # other sizes are resized
    assert codes.shape == (2, N_LATENT, SDIM)
    assert torch.equal(codes, codes2)
    assert torch.allclose(codes, ref, atol=1e-4)
    assert rec.shape == x.shape and rec.abs().max() <= 1
    assert big.shape == codes.shape


def test_separate_psp_encoder_file(tmp_path: Path, small: dict) -> None:
    gp, ep = tmp_path / "g.pt", tmp_path / "psp.pt"
    torch.save({"g_ema": small["g"].state_dict()}, gp)
    ck = _e4e_ckpt(small, arch="GradualStyleEncoder", avg=small["latent_avg"])  # (512,)-shaped latent_avg
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if k.startswith("encoder.")}
    torch.save(ck, ep)
    gen = load_stylegan2(gp, encoder_ckpt=ep)
    assert gen.encoder.arch == "psp"
    x = _images(1)
    with torch.no_grad():
        psp = gen.encode(x) - small["latent_avg"]
        e4e = small["enc"](x)  # same weights, e4e semantics: row 0 + per-row offsets
    assert torch.allclose(psp[:, 0], e4e[:, 0], atol=1e-4)
    assert torch.allclose(psp[:, 0] + psp[:, 1:], e4e[:, 1:], atol=1e-4)


# ---------------------------------------------------------------------------------------------- wrong files


def test_wrong_keys_are_named(tmp_path: Path, small: dict) -> None:
    sd = dict(small["g"].state_dict())
    del sd["conv1.noise.weight"]
    sd["conv1.extra.weight"] = torch.zeros(3)
    p = tmp_path / "broken.pt"
    torch.save({"g_ema": sd}, p)
    with pytest.raises(ModelLoadError) as ei:
        load_stylegan2(p)
    msg = str(ei.value)
    assert "1 missing keys" in msg and "conv1.noise.weight" in msg
    assert "1 unexpected keys" in msg and "conv1.extra.weight" in msg


def test_foreign_state_dict_and_shapes(tmp_path: Path, small: dict) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save(net.state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(ModelLoadError) as ei:
        load_stylegan2(tmp_path / "resnet.pt")
    msg = str(ei.value)
    assert f"{_expected_g_keys(256)} missing keys" in msg and "style.1.weight" in msg
    assert "7 unexpected keys" in msg and "0.weight" in msg

    sd = dict(small["g"].state_dict())
    sd["conv1.activate.bias"] = torch.zeros(WIDTH + 1)
    torch.save({"g_ema": sd}, tmp_path / "shape.pt")
    with pytest.raises(ModelLoadError, match=r"1 shape mismatches.*conv1\.activate\.bias"):
        load_stylegan2(tmp_path / "shape.pt")


def test_not_a_checkpoint(tmp_path: Path, small: dict) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("definitely not a checkpoint\n")
    with pytest.raises(ModelLoadError, match="not a PyTorch checkpoint"):
        load_stylegan2(txt)
    with pytest.raises(ModelLoadError, match="not found"):
        load_stylegan2(tmp_path / "missing.pt")
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="no StyleGAN2 generator weights.*optimizer"):
        load_stylegan2(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="expected a checkpoint dict"):
        load_stylegan2(tmp_path / "list.pt")
    torch.save({"g_ema": small["g"].state_dict(), "extra": _Custom()}, tmp_path / "pickled.pt")
    with pytest.raises(ModelLoadError, match="trusted=True"):
        load_stylegan2(tmp_path / "pickled.pt")
    assert load_stylegan2(tmp_path / "pickled.pt", trusted=True).resolution == SIZE


class _Custom:
    """A non-tensor object that safe (weights_only) loading refuses."""


def test_encoder_mismatch_errors(tmp_path: Path, small: dict) -> None:
    gp = tmp_path / "g.pt"
    torch.save({"g_ema": small["g"].state_dict()}, gp)
    wrong = build_encoder(N_LATENT - 2, "e4e", ENC_WIDTH, SDIM, SIZE)
    ck = {"state_dict": {f"encoder.{k}": v for k, v in wrong.state_dict().items()}, "latent_avg": torch.zeros(SDIM)}
    torch.save(ck, tmp_path / "e8.pt")
    with pytest.raises(ModelLoadError, match="8 W\\+ rows but the generator has 10"):
        load_stylegan2(gp, encoder_ckpt=tmp_path / "e8.pt")
    ck = _e4e_ckpt(small)
    del ck["state_dict"]["encoder.body.5.res_layer.1.weight"]
    torch.save(ck, tmp_path / "e_broken.pt")
    with pytest.raises(ModelLoadError, match=r"e4e/pSp encoder.*1 missing keys.*body\.5\.res_layer\.1\.weight"):
        load_stylegan2(gp, encoder_ckpt=tmp_path / "e_broken.pt")
    torch.save({"state_dict": {"decoder.x": torch.zeros(1)}}, tmp_path / "noenc.pt")
    with pytest.raises(ModelLoadError, match="no e4e/pSp encoder weights"):
        load_stylegan2(gp, encoder_ckpt=tmp_path / "noenc.pt")


# ---------------------------------------------------------------------------------------------- layer maths


def test_modulated_conv_matches_per_sample_reference() -> None:
    torch.manual_seed(0)
    for up in (False, True):
        m = ModulatedConv2d(5, 4, 3, 6, upsample=up)
        x, w = torch.randn(3, 5, 8, 8), torch.randn(3, 6)
        out = m(x, w)
        assert out.shape == (3, 4, 16 if up else 8, 16 if up else 8)
        for b in range(3):
            s = m.modulation(w[b : b + 1])[0]
            wt = m.weight[0] * m.scale * s.view(1, 5, 1, 1)
            wt = wt * torch.rsqrt(wt.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            if up:
                ref = m.blur(F.conv_transpose2d(x[b : b + 1], wt.transpose(0, 1), stride=2))
            else:
                ref = F.conv2d(x[b : b + 1], wt, padding=1)
            assert torch.allclose(out[b : b + 1], ref, atol=1e-5)
            # demodulation: unit-norm filters per output channel
            assert torch.allclose(wt.pow(2).sum(dim=(1, 2, 3)), torch.ones(4), atol=1e-4)


def test_upsample_and_mapping_properties(small: dict) -> None:
    up = Upsample()
    y = up(torch.full((1, 2, 6, 6), 0.7))
    assert y.shape == (1, 2, 12, 12)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.7), atol=1e-6)
    z = torch.randn(4, SDIM)
    g = small["g"]
    with torch.no_grad():  # PixelNorm first: the mapping only sees the direction of z
        assert torch.allclose(g.mapping(z), g.mapping(3.0 * z), atol=1e-5)
        ws = g(_wplus(1))
        assert ws.shape == (1, 3, SIZE, SIZE)
        a, b = g(_wplus(1), noise_mode="random"), g(_wplus(1), noise_mode="random")
        assert not torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- FFHQ alignment


def _face_landmarks(eyes=((40.0, 50.0), (80.0, 50.0)), mouth=((45.0, 90.0), (75.0, 90.0))) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48] = eyes[0], eyes[1]
    lm[48], lm[54] = mouth
    return lm


def test_ffhq_quad_geometry() -> None:
    lm = _face_landmarks()
    q = ffhq_quad(lm)
    # upright face: axis-aligned square, half side max(2 * 40, 1.8 * 40) = 80, centre (60, 50 + 4)
    assert np.allclose(q, [[-20, -26], [-20, 134], [140, 134], [140, -26]])
    th = np.deg2rad(30)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    q_rot = ffhq_quad(lm @ r.T + 7.0)  # rotation/translation equivariant
    assert np.allclose(q_rot, q @ r.T + 7.0)
    with pytest.raises(InputError):
        ffhq_quad(np.zeros((5, 2)))


def test_ffhq_crop_matrix_and_sampling() -> None:
    img = np.zeros((200, 220, 3), np.uint8)
    img[70:73, 100:103] = 255  # a bright 3x3 dot centred on pixel (101, 71)
    lm = _face_landmarks(eyes=((70.0, 60.0), (110.0, 60.0)), mouth=((75.0, 100.0), (105.0, 100.0)))
    crop, m = ffhq_crop(img, lm, size=80)
    assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8
    q = ffhq_quad(lm)
    corners = (m @ np.c_[q, np.ones(4)].T).T  # quad corners sit on the crop's outer pixel edges
    assert np.allclose(corners, [[-0.5, -0.5], [-0.5, 79.5], [79.5, 79.5], [79.5, -0.5]], atol=1e-6)
    u, v = m @ np.array([101.0, 71.0, 1.0])
    yy, xx = np.unravel_index(np.argmax(crop[..., 0].astype(float)), crop.shape[:2])
    assert abs(xx - u) <= 1 and abs(yy - v) <= 1
    big = np.zeros((1200, 1200, 3), np.uint8)  # large face: pre-shrunk, still the same geometry
    big[600:, :] = 200
    crop2, _ = ffhq_crop(big, _face_landmarks(eyes=((450.0, 500.0), (750.0, 500.0)),
                                               mouth=((480.0, 800.0), (720.0, 800.0))), size=64)
    assert crop2[:20].max() == 0 and crop2[-10:].min() == 200


def test_ffhq_crop_matches_core_warp_convention() -> None:
    """``M`` maps image pixel indices to crop pixel indices (core.align's convention): sampling the image at
    M^-1(crop pixel) reproduces the crop, and core.align.paste_back accepts it."""
    from scipy.ndimage import map_coordinates

    from faceprivacy.core.align import paste_back, soft_face_mask

    rng = np.random.default_rng(0)
    img = (rng.random((60, 70, 3)) * 255).astype(np.uint8)
    img = np.repeat(np.repeat(img, 4, 0), 4, 1)  # smooth-ish 240x280 image
    lm = _face_landmarks(eyes=((115.0, 105.0), (160.0, 112.0)), mouth=((122.0, 150.0), (152.0, 155.0)))
    crop, m = ffhq_crop(img, lm, size=96)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    vv, uu = np.mgrid[0:96, 0:96].astype(np.float64)
    xy = np.tensordot(inv, np.stack([uu, vv, np.ones_like(uu)]), axes=1)  # (2, 96, 96) image x, y
    ref = np.stack([map_coordinates(img[..., c].astype(np.float64), [xy[1], xy[0]], order=1) for c in range(3)], -1)
    assert np.abs(crop.astype(int) - ref.astype(int)).mean() < 2.0
    yy, xx = np.mgrid[0:240, 0:280]
    smooth = np.stack([xx * 0.8, yy * 0.9, 255 - xx * 0.5], -1).astype(np.uint8)
    crop_s, m_s = ffhq_crop(smooth, lm, size=96)
    back = paste_back(smooth, crop_s, m_s, mask=soft_face_mask(96, layout="ffhq"))
    assert back.shape == smooth.shape
    assert np.abs(back.astype(int) - smooth.astype(int)).max() <= 3  # unedited crop pasted back ~ no change
