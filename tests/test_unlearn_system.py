"""Unlearning system tests on tiny synthetic data (protocol, methods, MetaLoss, eval driver, CLI) plus
real-data checks of the teacher and the bundled task model (skipped without the datakit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceprivacy.core.errors import InputError, ModelLoadError
from faceprivacy.unlearn.data import TaskData, hold_out_supports, make_request
from faceprivacy.unlearn.evaluate import EvalConfig, run_eval, write_report
from faceprivacy.unlearn.metaloss import (
    MetaConfig,
    MetaLoss,
    inner_step,
    load_metaloss,
    meta_train,
    meta_unlearn,
    save_metaloss,
)
from faceprivacy.unlearn.methods import METHODS, UnlearnContext, get_method
from faceprivacy.unlearn.model import (
    ModelConfig,
    TaskCNN,
    TrainConfig,
    load_model,
    load_model_with_record,
    per_sample_loss_acc,
    save_model,
    to_float,
    train_model,
)

torch.set_num_threads(1)  # tiny models: one thread avoids OpenMP spin contention on shared CPUs
SMALL = ModelConfig(size=16, widths=(4, 8, 8, 16), n_classes=8)


def _synthetic(n_ids: int = 14, per_id: int = 8, seed: int = 0) -> TaskData:
    """Identities = colour blobs + noise; labels random per image (only memorisation can fit them)."""
    rng = np.random.default_rng(seed)
    xs, ys, ids = [], [], []
    for i in range(n_ids):
        base = rng.integers(0, 255, (1, 16, 16, 3))
        x = np.clip(base + rng.normal(0, 40, (per_id, 16, 16, 3)), 0, 255).astype(np.uint8)
        xs.append(x)
        ys.append(rng.integers(0, 8, per_id))
        ids += [i] * per_id
    ident = np.asarray(ids)
    idx = np.arange(len(ident))
    train, val, test = idx[ident < 8], idx[(ident >= 8) & (ident < 10)], idx[ident >= 10]
    td = TaskData(x=np.concatenate(xs), y=np.concatenate(ys).astype(np.int64), ident=ident,
                  names=[f"id{i}" for i in range(n_ids)], train=train, val=val, test=test)
    td.support = hold_out_supports(ident, train)
    return td


@pytest.fixture(scope="module")
def td() -> TaskData:
    return _synthetic()


@pytest.fixture(scope="module")
def trained(td: TaskData) -> TaskCNN:
    fit = td.train_fit
    m, log = train_model(td.x[fit], td.y[fit], TrainConfig(epochs=60, batch=16, lr=1e-2), SMALL)
    assert log["steps"] > 0
    return m


def test_request_protocol(td: TaskData) -> None:
    req = make_request(td, 3, seed=0)
    assert req.k == 3 and len(req.support) == 3
    fit = set(td.train_fit.tolist())
    assert not set(req.support.tolist()) & fit, "support images must be held out of training"
    assert set(req.forget.tolist()) | set(req.retain.tolist()) == fit
    assert not set(req.forget.tolist()) & set(req.retain.tolist())
    assert set(td.ident[req.forget].tolist()) == set(req.identities.tolist())
    assert set(td.ident[req.support].tolist()) == set(req.identities.tolist())
    assert set(req.identities.tolist()) <= set(td.ident[td.train].tolist())
    assert np.array_equal(make_request(td, 3, seed=0).identities, req.identities)  # deterministic
    with pytest.raises(InputError):
        make_request(td, 50, seed=0)


def test_original_model_memorises(td: TaskData, trained: TaskCNN) -> None:
    _, c_tr = per_sample_loss_acc(trained, td.x[td.train_fit], td.y[td.train_fit])
    _, c_te = per_sample_loss_acc(trained, td.x[td.test], td.y[td.test])
    assert c_tr.mean() > 0.8 > c_te.mean() + 0.3  # random labels: only memorisation fits them


def test_save_load_roundtrip(tmp_path: Path, trained: TaskCNN) -> None:
    p = save_model(trained, tmp_path / "m.pt")
    m2 = load_model(p)
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(trained.eval()(x), m2(x))
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_and_leaves_original_untouched(name: str, td: TaskData, trained: TaskCNN) -> None:
    req = make_request(td, 2, seed=1)
    xt = to_float(td.x)
    yt = torch.as_tensor(td.y)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    meta = MetaLoss(8, SMALL.widths[-1])
    ctx = UnlearnContext(meta=meta, eta=1.0, x=xt, y=yt, forget=req.forget, retain=req.retain,
                         train=TrainConfig(epochs=1, batch=32))
    fn, _ = get_method(name)
    out = fn(trained, xt[req.support], yt[req.support], ctx)
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} modified the original model"
    changed = any(not torch.equal(v, out.state_dict()[k]) for k, v in trained.state_dict().items())
    assert changed == (name != "none")


def test_retrain_other_seed_is_a_fresh_model_of_the_retain_set(td: TaskData, trained: TaskCNN) -> None:
    """The ceiling reference: trained from scratch (not from the original) and only with a recipe."""
    req = make_request(td, 2, seed=1)
    xt, yt = to_float(td.x), torch.as_tensor(td.y)
    fn, full = get_method("retrain_other_seed")
    assert full
    ctx = UnlearnContext(x=xt, y=yt, forget=req.forget, retain=req.retain, seed=3)
    with pytest.raises(InputError):
        fn(trained, xt[req.support], yt[req.support], ctx)
    ctx.train = TrainConfig(epochs=1, batch=32)
    a = fn(trained, xt[req.support], yt[req.support], ctx)
    b = fn(trained, xt[req.support], yt[req.support], ctx)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())  # seeded
    ctx.seed = 4
    c = fn(trained, xt[req.support], yt[req.support], ctx)
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_unknown_method_and_missing_metaloss(td: TaskData, trained: TaskCNN) -> None:
    with pytest.raises(InputError):
        get_method("nope")
    fn, _ = get_method("metaunlearn")
    with pytest.raises(InputError):
        fn(trained, torch.rand(1, 3, 16, 16), torch.zeros(1, dtype=torch.long), UnlearnContext())
    fn, _ = get_method("scrub_full")
    with pytest.raises(InputError):
        fn(trained, torch.rand(1, 3, 16, 16), torch.zeros(1, dtype=torch.long), UnlearnContext())


def test_inner_step_is_differentiable_and_meta_training_learns(td: TaskData, trained: TaskCNN,
                                                                 tmp_path: Path) -> None:
    meta = MetaLoss(8, SMALL.widths[-1])
    xs = to_float(td.x[:3])
    ys = torch.as_tensor(td.y[:3])
    new = inner_step(trained, meta, xs, ys, eta=1.0, create_graph=True)
    outer = trained.head.weight.new_zeros(())
    for v in new.values():
        outer = outer + v.pow(2).sum()
    g = torch.autograd.grad(outer, list(meta.parameters()), allow_unused=True)
    assert any(x is not None and x.abs().sum() > 0 for x in g), "no second-order signal reaches the MetaLoss"
    for p in trained.parameters():
        p.grad = None
    cfg = MetaConfig(iters=25, eta=5.0, lr=3e-3, k_max=3, batch=16)
    m, log = meta_train(trained, td.x, td.y, td.ident, td.train_fit, td.support, td.val, cfg)
    assert log["iters"] == 25 and np.isfinite(log["last10pct_outer_forget_val0_retain_retain0"]).all()
    p = save_metaloss(m, tmp_path / "meta.pt", {"eta": 5.0})
    m2, extra = load_metaloss(p)
    assert extra["eta"] == 5.0
    req = make_request(td, 2, seed=0)
    before = per_sample_loss_acc(trained, td.x[req.forget], td.y[req.forget])[0].mean()
    from faceprivacy.unlearn.model import clone

    u = meta_unlearn(clone(trained), m2, to_float(td.x[req.support]), torch.as_tensor(td.y[req.support]), 5.0)
    after = per_sample_loss_acc(u, td.x[req.forget], td.y[req.forget])[0].mean()
    assert after != before


def test_run_eval_end_to_end_and_report(td: TaskData, tmp_path: Path) -> None:
    cfg = EvalConfig(ks=(1, 2), seeds=(0, 1), methods=("none", "neggrad", "metaunlearn", "finetune_retain"),
                     train=TrainConfig(epochs=8, batch=16, lr=1e-2), meta=MetaConfig(iters=3, k_max=2, batch=8),
                     tune=True, tune_ks=(2,), tune_seeds=(5,))
    from faceprivacy.unlearn import evaluate

    orig_train = evaluate.train_model

    def small_train(x, y, c=None, mcfg=None, desc="", device="cpu"):  # type: ignore[no-untyped-def]
        return orig_train(x, y, c, SMALL, desc, device)

    evaluate.train_model = small_train  # keep the synthetic run tiny (16x16 inputs, narrow CNN)
    try:
        out = run_eval(td, cfg)
    finally:
        evaluate.train_model = orig_train
    res = out.report
    assert out.original is not None and out.meta is not None
    rows = {(r["K"], r["method"]): r for r in res["summary"]}
    assert set(rows) == {(k, m) for k in (1, 2) for m in ("retrained", *cfg.methods)}
    assert rows[(2, "retrained")]["ToW"] == 1.0
    assert rows[(2, "none")]["n_seeds"] == 2
    for r in res["summary"]:
        assert 0.0 <= r["ToW"] <= 1.0 and 0.0 <= r["NoMUS"] <= 1.0 and r["seconds"] >= 0.0
    assert set(res["tuning"]) == {"neggrad", "metaunlearn", "finetune_retain"}
    jp, hp = write_report(res, tmp_path / "rep")
    assert json.loads(jp.read_text())["summary"]
    assert "<table>" in hp.read_text() and "data:image/png;base64" in hp.read_text()
    row = rows[(2, "metaunlearn")]
    lo, hi = row["ToW_ci95"]
    assert lo <= row["ToW"] <= hi and row["ToW_worst"] <= row["ToW_p10"] <= row["ToW"] + 1e-9
    # an earlier JSON can be re-summarised with intervals, without running anything
    from faceprivacy.cli import main

    assert main(["eval-unlearning", "--from-json", str(jp), "--out", str(tmp_path / "re")]) == 0
    again = json.loads((tmp_path / "re" / "unlearning.json").read_text())["summary"]
    assert [r["ToW_ci95"] for r in again] == [r["ToW_ci95"] for r in res["summary"]]
    # several runs of one recipe pool into one summary over all their requests; a request counted twice, or a
    # run of another model, is refused with exit 2
    assert len(res["config"]["original_sha256"]) == 64
    other = json.loads(jp.read_text())
    for r in other["runs"]:
        r["seed"] += 100
    jp2 = tmp_path / "other.json"
    jp2.write_text(json.dumps(other))
    assert main(["eval-unlearning", "--from-json", str(jp), str(jp2), "--out", str(tmp_path / "pool")]) == 0
    pooled = json.loads((tmp_path / "pool" / "unlearning.json").read_text())
    assert {r["n_seeds"] for r in pooled["summary"]} == {2 * r["n_seeds"] for r in res["summary"]}
    assert len(pooled["resummarised_from"]) == 2
    assert main(["eval-unlearning", "--from-json", str(jp), str(jp), "--out", str(tmp_path / "twice")]) == 2
    before = jp.read_bytes()  # the input is never overwritten by its own re-summary
    assert main(["eval-unlearning", "--from-json", str(jp), "--out", str(jp.parent)]) == 2
    assert jp.read_bytes() == before
    other["config"]["original_sha256"] = "0" * 64
    jp2.write_text(json.dumps(other))
    assert main(["eval-unlearning", "--from-json", str(jp), str(jp2), "--out", str(tmp_path / "mixed")]) == 2
    del other["config"]["original_sha256"]  # a run from before fingerprints: pooled, and the JSON says so
    jp2.write_text(json.dumps(other))
    assert main(["eval-unlearning", "--from-json", str(jp), str(jp2), "--out", str(tmp_path / "old")]) == 0
    assert json.loads((tmp_path / "old" / "unlearning.json").read_text())["pooled_unverified"] == ["original_sha256"]


def test_cli_unlearn_with_model_labels(tmp_path: Path, trained: TaskCNN, td: TaskData, monkeypatch) -> None:
    from PIL import Image

    from faceprivacy.cli import main
    from faceprivacy.unlearn import request

    monkeypatch.setattr(request, "faceless", lambda crops: [])  # synthetic 16x16 "faces": the check is tested below
    mp = save_model(trained, tmp_path / "m.pt", {"trained": {"epochs": 8}, "task": "image"})
    imgs = []
    for i, j in enumerate(td.test[:2]):
        p = tmp_path / f"s{i}.png"
        Image.fromarray(td.x[j]).resize((112, 112)).save(p)
        imgs.append(str(p))
    out = tmp_path / "m2.pt"
    rc = main(["unlearn", "--model", str(mp), "--support", *imgs, "--out", str(out), "--method", "neggrad",
               "--labels", "model"])
    assert rc == 0 and out.is_file()
    m2 = load_model(out)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), m2.state_dict().values(),
                                                     strict=True))
    assert main(["unlearn", "--model", str(mp), "--support", str(tmp_path / "none.jpg"), "--out",
                 str(tmp_path / "x.pt"), "--labels", "model"]) == 2
    assert not (tmp_path / "x.pt").exists()
    # the record is extended, not replaced: the training entry stays and each request is appended
    _, rec = load_model_with_record(out)
    assert rec["trained"] == {"epochs": 8} and [h["method"] for h in rec["unlearning_history"]] == ["neggrad"]
    out2 = tmp_path / "m3.pt"
    assert main(["unlearn", "--model", str(out), "--support", *imgs, "--out", str(out2), "--method", "neggrad",
                 "--labels", "model"]) == 0
    _, rec2 = load_model_with_record(out2)
    assert rec2["trained"] == {"epochs": 8} and len(rec2["unlearning_history"]) == 2
    # never onto its own input
    before = out.read_bytes()
    assert main(["unlearn", "--model", str(out), "--support", *imgs, "--out", str(out), "--method", "neggrad",
                 "--labels", "model"]) == 2
    assert out.read_bytes() == before


def test_cli_unlearn_refuses_faceless_support(tmp_path: Path, trained: TaskCNN, capsys) -> None:
    from PIL import Image

    from faceprivacy.cli import main

    mp = save_model(trained, tmp_path / "m.pt")
    grey, noise = tmp_path / "grey.png", tmp_path / "noise.png"
    Image.new("RGB", (112, 112), (128, 128, 128)).save(grey)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(noise)
    for bad in (grey, noise):
        before = mp.read_bytes()
        rc = main(["unlearn", "--model", str(mp), "--support", str(bad), "--out", str(tmp_path / "x.pt"),
                   "--method", "neggrad", "--labels", "model"])
        err = capsys.readouterr().err
        assert rc == 2 and "no face found" in err and "Traceback" not in err
        assert not (tmp_path / "x.pt").exists() and mp.read_bytes() == before


def test_support_face_check_accepts_real_crops(celeba_root: Path) -> None:
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.core.imageio import load_image
    from faceprivacy.unlearn.request import faceless

    ds = celeba_subset(celeba_root)
    rows = np.random.default_rng(1).choice(len(ds), 12, replace=False)
    assert faceless([load_image(ds.paths[i]) for i in rows]) == []


def test_teacher_labels_on_real_faces(celeba_root: Path) -> None:
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.unlearn.teacher import AgeGenderTeacher, class_name

    ds = celeba_subset(celeba_root)
    ident = ds.labels
    # two identities, 6 images each: gender from the teacher must be consistent within a person
    picks = [np.flatnonzero(ident == i)[:6] for i in np.unique(ident)[:2]]
    t = AgeGenderTeacher()
    for rows in picks:
        faces = [np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(ds.paths[r]).convert("RGB"))
                 for r in rows]
        r = t.predict(faces)
        assert r["label"].shape == (len(rows),) and r["label"].max() < 8
        assert 10 < float(np.median(r["age"])) < 80
        g = r["p_female"] >= 0.5
        assert g.mean() in (0.0, 1.0) or abs(g.mean() - 0.5) > 0.3
        assert class_name(int(r["label"][0]))


def test_bundled_task_model_loads_and_remembers(celeba_root: Path) -> None:
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.core.paths import weights_dir
    from faceprivacy.unlearn.data import load_images
    from faceprivacy.unlearn.teacher import AgeGenderTeacher

    p = weights_dir() / "unlearn_taskcnn.pt"
    if not p.is_file():
        pytest.skip("bundled unlearning task model not present")
    assert p.stat().st_size < 3_000_000
    model = load_model(p)
    ds = celeba_subset(celeba_root)
    split = identity_split(ds)
    index = {q: i for i, q in enumerate(ds.paths)}
    train = np.asarray(sorted(index[q] for q in split["train"].paths))
    test = np.asarray(sorted(index[q] for q in split["test"].paths))
    held = set(hold_out_supports(ds.labels, train).values())
    fit = np.asarray([i for i in train if i not in held])[::100][:24]
    unseen = test[::40][:24]
    t = AgeGenderTeacher()
    from PIL import Image

    def teacher(rows: np.ndarray) -> np.ndarray:
        return t.predict([np.asarray(Image.open(ds.paths[r]).convert("RGB")) for r in rows])["label"]

    _, c_fit = per_sample_loss_acc(model, load_images([ds.paths[i] for i in fit], model.cfg.size), teacher(fit))
    _, c_un = per_sample_loss_acc(model, load_images([ds.paths[i] for i in unseen], model.cfg.size),
                                  teacher(unseen))
    assert c_fit.mean() >= 0.9, "the bundled model should have memorised its training images"
    assert c_fit.mean() > c_un.mean() + 0.2
    meta_p = weights_dir() / "unlearn_metaloss.pt"
    if meta_p.is_file():
        meta, extra = load_metaloss(meta_p)
        assert meta.feat_dim == model.feature_dim and float(extra["eta"]) > 0


def test_cli_method_names_match_registry_and_help_is_light() -> None:
    import subprocess
    import sys

    from faceprivacy.unlearn import cli
    from faceprivacy.unlearn.methods import METHODS, SUPPORT_ONLY

    assert set(cli.ALL_METHODS) == set(METHODS) and set(cli.SUPPORT_METHODS) == set(SUPPORT_ONLY)
    code = ("import sys, argparse; from faceprivacy.unlearn import cli; p = argparse.ArgumentParser(); "
            "cli.register(p.add_subparsers()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_cli_eval_bad_data_root_exits_2(tmp_path: Path) -> None:
    from faceprivacy.cli import main

    assert main(["eval-unlearning", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def test_hog_detector_is_cached_on_disk_with_the_same_boxes(tmp_path: Path, monkeypatch, celeba_root: Path) -> None:
    """The request's face check loads dlib's HOG detector from a saved copy (building it costs ~0.9 s CPU per
    process): the saved copy finds the same boxes and scores, and a damaged cache file is rebuilt."""
    from PIL import Image

    from faceprivacy.core import detect
    from faceprivacy.unlearn.request import DETECT_PAD

    monkeypatch.setenv("FACEPRIVACY_CACHE", str(tmp_path))
    f = next(iter(sorted((celeba_root / "images").glob("*/*.jpg"))))
    im = np.pad(np.asarray(Image.open(f).convert("RGB")), ((DETECT_PAD,) * 2, (DETECT_PAD,) * 2, (0, 0)), mode="edge")
    built = detect._hog_detector()
    saved = list(tmp_path.glob("dlib_frontal_hog_*.svm"))
    assert len(saved) == 1
    loaded = detect._hog_detector()
    ra, rb = built.run(im, 1, 0.0), loaded.run(im, 1, 0.0)
    assert len(ra[0]) >= 1
    assert [(r.left(), r.top(), r.right(), r.bottom()) for r in ra[0]] == \
        [(r.left(), r.top(), r.right(), r.bottom()) for r in rb[0]] and list(ra[1]) == list(rb[1])
    saved[0].write_bytes(b"not a detector")
    assert len(detect._hog_detector().run(im, 1, 0.0)[0]) == len(ra[0])


def test_dlib_resnet_conversion_is_cached_with_the_same_numbers(tmp_path: Path, monkeypatch) -> None:
    """The request's descriptor model is loaded from a saved conversion (parsing dlib's .dat costs ~0.6 s CPU
    per process): same descriptors as a fresh conversion; a damaged cache file is converted again."""
    from faceprivacy.core.paths import dlib_model_path
    from faceprivacy.models import dlib_resnet

    try:
        dlib_model_path("resnet")
    except Exception:
        pytest.skip("dlib ResNet model file not installed")
    monkeypatch.setenv("FACEPRIVACY_CACHE", str(tmp_path))
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        a = dlib_resnet.load_dlib_resnet()(x)
        saved = list(tmp_path.glob("dlib_resnet_torch_*.pt"))
        assert len(saved) == 1
        b = dlib_resnet.load_dlib_resnet()(x)
        saved[0].write_bytes(b"junk")
        c = dlib_resnet.load_dlib_resnet()(x)
    assert torch.equal(a, b) and torch.equal(a, c)
