"""Second unlearning task (identity-consistent labels, MLP head on frozen face descriptors): label vote,
the MLP model kind, identity-linked memorisation on synthetic descriptors, methods and the CLI path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceprivacy.core.errors import InputError
from faceprivacy.unlearn.data import (
    TaskData,
    hold_out_supports,
    identity_labels,
    load_task_data,
    make_request,
)
from faceprivacy.unlearn.evaluate import memorisation_report
from faceprivacy.unlearn.metaloss import MetaConfig, MetaLoss, meta_train, out_of_fold_probs
from faceprivacy.unlearn.methods import LR_GRID, LR_GRID_MLP, METHODS, UnlearnContext, get_method, lr_grid
from faceprivacy.unlearn.model import (
    ModelConfig,
    TaskCNN,
    TrainConfig,
    load_model,
    save_model,
    to_float,
    train_model,
)
from faceprivacy.unlearn.teacher import combined_label

torch.set_num_threads(1)
MLP = ModelConfig(kind="mlp", in_dim=32, widths=(64, 64), embedder="dlib")


def test_identity_labels_are_a_per_person_majority() -> None:
    ident = np.array([0, 0, 0, 1, 1, 2])
    p_female = np.array([0.9, 0.8, 0.1, 0.2, 0.4, 0.7])  # person 0 mostly female, 1 male, 2 female
    age = np.array([20.0, 45.0, 50.0, 30.0, 31.0, 40.0])  # medians: 45 (38+), 30.5 (28-31), 40 (38+)
    y = identity_labels(p_female, age, ident)
    assert y.tolist() == [7, 7, 7, 1, 1, 7]
    per_image = combined_label(p_female, age)
    assert per_image.tolist() != y.tolist()  # the vote really differs from the per-image labels here
    for i in np.unique(ident):
        assert len(set(y[ident == i].tolist())) == 1


def test_unknown_task_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_task_data(tmp_path, task="nope")


def _descriptors(n_ids: int = 40, per_id: int = 8, dim: int = 32, seed: int = 0) -> TaskData:
    """Identities = random unit directions + small noise (like face descriptors); one random label per person."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    ident = np.repeat(np.arange(n_ids), per_id)
    x = centres[ident] + 0.3 * rng.normal(size=(len(ident), dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    y = rng.integers(0, 8, n_ids)[ident].astype(np.int64)
    idx = np.arange(len(ident))
    train, val, test = idx[ident < 28], idx[(ident >= 28) & (ident < 32)], idx[ident >= 32]
    td = TaskData(x=x, y=y, ident=ident, names=[f"id{i}" for i in range(n_ids)], train=train, val=val,
                  test=test, task="identity")
    td.support = hold_out_supports(ident, train)
    return td


@pytest.fixture(scope="module")
def td() -> TaskData:
    return _descriptors()


@pytest.fixture(scope="module")
def head(td: TaskData) -> TaskCNN:
    fit = td.train_fit
    m, _ = train_model(td.x[fit], td.y[fit], TrainConfig(epochs=60, batch=32, lr=1e-2), MLP)
    return m


def _meta_on(td: TaskData, head: TaskCNN, **cfg) -> tuple[torch.Tensor, torch.Tensor, MetaLoss, dict]:
    """The descriptors as tensors and a MetaLoss meta-trained on the head with a tiny ``MetaConfig(**cfg)``: the
    set-up the MetaLoss tests share."""
    xt, yt = to_float(td.x), torch.as_tensor(td.y)
    meta, log = meta_train(head, xt, td.y, td.ident, td.train_fit, td.support, td.val, MetaConfig(**cfg))
    return xt, yt, meta, log


def test_memorisation_is_tied_to_the_person(td: TaskData, head: TaskCNN) -> None:
    xt, yt = to_float(td.x), torch.as_tensor(td.y)
    assert xt.shape == (len(td.x), 32)  # descriptors are not permuted like images
    r = memorisation_report(head, xt, yt, td)
    # random per-person labels: held-out photos of training people are right, unseen people are at chance
    assert r["acc"]["train"] > 0.95
    assert r["acc"]["support_heldout"] > 0.8 > r["acc"]["test"] + 0.4
    assert r["true_class_prob"]["support_heldout"] > r["true_class_prob"]["test"] + 0.3
    assert r["mia_train_vs_test_loss_auc"] > 0.8 and r["mia_support_vs_test_loss_auc"] > 0.8


def test_out_of_fold_probs_come_from_models_that_never_saw_the_person(td: TaskData, head: TaskCNN) -> None:
    fit = td.train_fit
    xt = to_float(td.x)
    oof = out_of_fold_probs(xt, td.y, td.ident, fit, TrainConfig(epochs=60, batch=32, lr=1e-2), MLP, folds=4)
    in_train = np.isin(td.ident, td.ident[fit])
    assert torch.allclose(oof[in_train].sum(1), torch.ones(int(in_train.sum())), atol=1e-5)
    assert float(oof[~in_train].abs().sum()) == 0.0  # val/test people get no out-of-fold row
    # labels are random per person: the full head knows them, models without the person cannot
    acc_head = float((head(xt[fit]).argmax(1) == torch.as_tensor(td.y[fit])).float().mean())
    acc_oof = float((oof[fit].argmax(1) == torch.as_tensor(td.y[fit])).float().mean())
    assert acc_head > 0.95 and acc_oof < 0.45
    with pytest.raises(InputError):
        out_of_fold_probs(xt, td.y, td.ident, fit, TrainConfig(epochs=1), MLP, folds=1)
    cfg = MetaConfig(iters=20, eta=5.0, k_max=3, batch=16, outer="oof", dropout=0.0, update="weights")
    with pytest.raises(InputError):
        meta_train(head, td.x, td.y, td.ident, fit, td.support, td.val, cfg)
    _m, log = meta_train(head, td.x, td.y, td.ident, fit, td.support, td.val, cfg, oof=oof)
    assert np.isfinite(log["last10pct_outer_forget_val0_retain_retain0"]).all()


def test_mlp_save_load_keeps_kind(tmp_path: Path, head: TaskCNN) -> None:
    m2 = load_model(save_model(head, tmp_path / "h.pt"))
    assert m2.cfg.kind == "mlp" and m2.cfg.in_dim == 32 and m2.cfg.embedder == "dlib"
    x = torch.rand(4, 32)
    assert torch.allclose(head.eval()(x), m2(x))
    assert lr_grid(m2) is LR_GRID_MLP and lr_grid(TaskCNN()) is LR_GRID


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_on_the_head(name: str, td: TaskData, head: TaskCNN) -> None:
    req = make_request(td, 2, seed=0)
    xt, yt = to_float(td.x), torch.as_tensor(td.y)
    meta = _meta_on(td, head, iters=3, k_max=2, batch=8)[2] if name == "metaunlearn" else None
    ctx = UnlearnContext(meta=meta, eta=1.0, x=xt, y=yt, forget=req.forget, retain=req.retain, lr=1e-2,
                         train=TrainConfig(epochs=2, batch=32))
    fn, _ = get_method(name)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    out = fn(head, xt[req.support], yt[req.support], ctx)
    assert all(torch.equal(v, before[k]) for k, v in head.state_dict().items())
    assert out.cfg.kind == "mlp"
    changed = any(not torch.equal(v, out.state_dict()[k]) for k, v in head.state_dict().items())
    assert changed == (name != "none")


def test_neggrad_on_one_photo_reaches_the_persons_other_photos(td: TaskData, head: TaskCNN) -> None:
    """The point of the second task: a step on the held-out photo moves the person's trained photos more
    than other people's (one image is a handle on what was memorised about that person)."""
    req = make_request(td, 1, seed=0)
    xt, yt = to_float(td.x), torch.as_tensor(td.y)
    fn, _ = get_method("neggrad")
    out = fn(head, xt[req.support], yt[req.support], UnlearnContext(lr=0.05))
    with torch.no_grad():
        def ce(m: TaskCNN, idx: np.ndarray) -> float:
            return float(torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx]))
        d_forget = ce(out, req.forget) - ce(head, req.forget)
        d_retain = ce(out, req.retain) - ce(head, req.retain)
    assert d_forget > 0 and d_forget > 3 * abs(d_retain)


def test_cli_unlearn_embeds_support_for_a_head(tmp_path: Path, td: TaskData, monkeypatch) -> None:
    from PIL import Image

    from faceprivacy.cli import main
    from faceprivacy.unlearn import request

    monkeypatch.setattr(request, "faceless", lambda crops: [])  # a noise "face": the check has its own tests

    cfg = ModelConfig(kind="mlp", in_dim=128, widths=(16,), embedder="dlib")
    rng = np.random.default_rng(0)
    m, _ = train_model(rng.normal(size=(32, 128)).astype(np.float32), rng.integers(0, 8, 32),
                       TrainConfig(epochs=2, batch=16), cfg)
    mp = save_model(m, tmp_path / "head.pt")
    img = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "head2.pt"
    assert main(["unlearn", "--model", str(mp), "--support", str(img), "--out", str(out), "--method", "neggrad",
                 "--threads", "1"]) == 0
    m2 = load_model(out)
    assert m2.cfg.kind == "mlp"
    assert any(not torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values(),
                                                     strict=True))


def test_bundled_identity_head_remembers_people(celeba_root: Path) -> None:
    """The bundled second-task head predicts a training person's held-out photo like their training photos
    (the memorised per-person label), clearly more consistently than it does for two photos of an unseen person."""
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.core.paths import weights_dir
    from faceprivacy.unlearn.data import embed_images
    from faceprivacy.unlearn.metaloss import load_metaloss
    from faceprivacy.unlearn.model import predict

    p = weights_dir() / "unlearn_idhead.pt"
    if not p.is_file():
        pytest.skip("bundled identity-task head not present")
    assert p.stat().st_size < 3_000_000
    model = load_model(p)
    assert model.cfg.kind == "mlp" and model.cfg.embedder == "dlib" and model.cfg.norm
    ds = celeba_subset(celeba_root)
    split = identity_split(ds)
    index = {q: i for i, q in enumerate(ds.paths)}
    train = np.asarray(sorted(index[q] for q in split["train"].paths))
    test = np.asarray(sorted(index[q] for q in split["test"].paths))
    sup = hold_out_supports(ds.labels, train)

    def agreement(pairs: list[tuple[int, int]]) -> float:
        rows = [r for pr in pairs for r in pr]
        pred = predict(model, embed_images([ds.paths[r] for r in rows], "dlib")).argmax(1).numpy()
        return float(np.mean(pred[0::2] == pred[1::2]))

    seen = []
    for i in sorted(sup)[:30]:
        other = [r for r in train[ds.labels[train] == i] if r != sup[i]]
        seen.append((sup[i], other[0]))
    unseen = []
    for i in np.unique(ds.labels[test])[:30]:
        rows = test[ds.labels[test] == i]
        if len(rows) >= 2:
            unseen.append((int(rows[0]), int(rows[1])))
    a_seen, a_unseen = agreement(seen), agreement(unseen)
    assert a_seen >= 0.8 and a_seen > a_unseen + 0.1
    meta, extra = load_metaloss(weights_dir() / "unlearn_idhead_metaloss.pt")
    assert meta.feat_dim == model.feature_dim and float(extra["eta"]) > 0
    # restricted, K-aware step: weights only, one projected input direction per Linear layer, step ~ K
    assert meta.update == "weights" and meta.k_power == 1.0
    assert {k: tuple(v.shape) for k, v in meta.proj.items()} == {"body.0": (128, 1), "body.2": (256, 1),
                                                                 "head": (256, 1)}


def test_bundled_metaloss_forgets_people_more_than_it_moves_unseen_people(celeba_root: Path) -> None:
    """One bundled MetaUnlearn step on five people's support photos changes the head's predictions on those
    people's training photos far more than on unseen (test) people (labels = the head's own predictions)."""
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.core.paths import weights_dir
    from faceprivacy.unlearn.data import embed_images
    from faceprivacy.unlearn.metaloss import load_metaloss, meta_unlearn
    from faceprivacy.unlearn.model import clone

    p, q = weights_dir() / "unlearn_idhead.pt", weights_dir() / "unlearn_idhead_metaloss.pt"
    if not (p.is_file() and q.is_file()):
        pytest.skip("bundled identity-task head / MetaLoss not present")
    model, (meta, extra) = load_model(p), load_metaloss(q)
    ds = celeba_subset(celeba_root)
    split = identity_split(ds)
    index = {f: i for i, f in enumerate(ds.paths)}
    train = np.asarray(sorted(index[f] for f in split["train"].paths))
    test = np.asarray(sorted(index[f] for f in split["test"].paths))[::4]
    sup = hold_out_supports(ds.labels, train)
    keep_f, keep_t = [], []
    x_test = to_float(embed_images([ds.paths[r] for r in test], "dlib"))
    with torch.no_grad():
        y_test = model(x_test).argmax(1)
    for lo in (0, 10, 20):
        ids = sorted(sup)[lo:lo + 5]
        rows = [sup[i] for i in ids] + [r for r in train if ds.labels[r] in ids and r not in sup.values()]
        x = to_float(embed_images([ds.paths[r] for r in rows], "dlib"))
        with torch.no_grad():
            y0 = model(x).argmax(1)
        u = meta_unlearn(clone(model), meta, x[:5], y0[:5], eta=float(extra["eta"]))
        with torch.no_grad():
            keep_f.append(float((u(x[5:]).argmax(1) == y0[5:]).float().mean()))
            keep_t.append(float((u(x_test).argmax(1) == y_test).float().mean()))
    # measured when bundled: forget photos keep 0.85 / 0.29 / 0.66 of their predictions (mean 0.60), test
    # people 0.93 / 0.85 / 0.86 (mean 0.88)
    assert np.mean(keep_f) < np.mean(keep_t) - 0.15 and np.mean(keep_t) > 0.7


def test_metaloss_sum_reduction_survives_save_load(tmp_path: Path) -> None:
    from faceprivacy.unlearn.metaloss import MetaLoss, load_metaloss, save_metaloss

    torch.manual_seed(0)
    m_mean, m_sum = MetaLoss(8, 16), MetaLoss(8, 16, reduction="sum")
    m_sum.load_state_dict(m_mean.state_dict())
    m_mean.eval()
    m_sum.eval()
    logits, feats, y = torch.randn(5, 8), torch.randn(5, 16), torch.randint(0, 8, (5,))
    assert torch.allclose(m_sum(logits, feats, y), 5 * m_mean(logits, feats, y))
    m2, _ = load_metaloss(save_metaloss(m_sum, tmp_path / "m.pt", {"eta": 1.0}))
    assert m2.reduction == "sum" and torch.allclose(m2(logits, feats, y), m_sum(logits, feats, y))


def test_restricted_step_keeps_biases_projects_weights_and_scales_with_k(tmp_path: Path, td: TaskData,
                                                                        head: TaskCNN) -> None:
    """MetaLoss step options: weights-only (biases untouched), the top input directions of every Linear layer
    removed from the weight step, the step size scaled by (n_support / k_ref) ** k_power, all kept by save/load."""
    from faceprivacy.unlearn.metaloss import inner_step, load_metaloss, save_metaloss

    xt, yt, meta, _ = _meta_on(td, head, iters=3, k_max=2, batch=8, update="weights", proj_rank=2, k_power=1.0,
                               k_ref=2)
    assert set(meta.proj) == {n for n, m in head.named_modules() if isinstance(m, torch.nn.Linear)}
    u = meta.proj["head"]
    assert u.shape == (head.feature_dim, 2) and torch.allclose(u.T @ u, torch.eye(2), atol=1e-4)
    req = make_request(td, 2, seed=0)
    xs, ys = xt[req.support], yt[req.support]
    p0 = dict(head.named_parameters())
    new = inner_step(head, meta, xs, ys, 1.0, create_graph=False)
    for k, v in new.items():
        if k.endswith("bias"):
            assert torch.equal(v, p0[k])
    dw = (new["head.weight"] - p0["head.weight"]).detach()
    assert dw.abs().max() > 0 and (dw @ u).abs().max() < 1e-5 * max(1.0, float(dw.abs().max()))
    # k_power 1: two support photos get twice the step of the same photos at k_ref = 4
    meta.k_ref = 4
    half = inner_step(head, meta, xs, ys, 1.0, create_graph=False)
    assert torch.allclose(half["head.weight"] - p0["head.weight"], dw / 2, atol=1e-6)
    meta.k_ref = 2
    m2, _ = load_metaloss(save_metaloss(meta, tmp_path / "m.pt", {"eta": 1.0}))
    assert m2.update == "weights" and m2.k_power == 1.0 and m2.k_ref == 2
    assert all(torch.equal(m2.proj[k], meta.proj[k]) for k in meta.proj)
    again = inner_step(head, m2, xs, ys, 1.0, create_graph=False)
    assert torch.allclose(again["head.weight"], new["head.weight"], atol=1e-6)


def test_reference_cache_reuses_the_retrained_model(tmp_path: Path, td: TaskData) -> None:
    from faceprivacy.unlearn.evaluate import retrain_reference

    xt = to_float(td.x)
    req = make_request(td, 2, 0)
    tcfg = TrainConfig(epochs=3, batch=32, lr=1e-2, seed=1)
    m1, s1, c1 = retrain_reference(td, xt, req, tcfg, MLP, "r", cache=tmp_path)
    m2, s2, c2 = retrain_reference(td, xt, req, tcfg, MLP, "r", cache=tmp_path)
    assert (c1, c2) == (False, True) and s1 == s2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # another request, or another recipe, is another entry (never a stale reference)
    _, _, c3 = retrain_reference(td, xt, make_request(td, 2, 1), tcfg, MLP, "r", cache=tmp_path)
    _, _, c4 = retrain_reference(td, xt, req, TrainConfig(epochs=4, batch=32, lr=1e-2, seed=1), MLP, "r",
                                 cache=tmp_path)
    assert not c3 and not c4
    assert len(list(tmp_path.glob("retrained_*.pt"))) == 3


def test_unrolled_steps_preconditioner_and_k_range_survive_save_load(tmp_path: Path, td: TaskData,
                                                                     head: TaskCNN) -> None:
    """Meta-training options of the re-trained MetaLoss: simulated request sizes in [k_min, k_max], the number
    of unrolled steps (applied again at request time) and the whitening preconditioner of the weight step, all
    kept by save/load; the preconditioned step is the plain one times P."""
    from faceprivacy.unlearn.metaloss import (
        inner_step,
        input_preconditioners,
        load_metaloss,
        meta_unlearn,
        save_metaloss,
    )
    from faceprivacy.unlearn.model import clone

    xt, yt, meta, log = _meta_on(td, head, iters=3, k_min=2, k_max=3, batch=8, update="weights", unroll=2,
                                 precond=1.0)
    assert meta.steps == 2 and log["config"]["k_min"] == 2 and log["config"]["unroll"] == 2
    lin = {n for n, m in head.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(meta.precond) == lin
    p = meta.precond["head"]
    assert p.shape == (head.feature_dim, head.feature_dim) and torch.allclose(p, p.T, atol=1e-4)
    assert torch.allclose(p, input_preconditioners(head, xt[np.r_[td.train_fit, td.val]], 1.0)["head"])
    req = make_request(td, 2, seed=0)
    xs, ys = xt[req.support], yt[req.support]
    p0 = {k: v.detach().clone() for k, v in head.named_parameters()}
    pre = inner_step(head, meta, xs, ys, 1.0, create_graph=False)
    saved, meta.precond = meta.precond, {}
    plain = inner_step(head, meta, xs, ys, 1.0, create_graph=False)
    meta.precond = saved
    assert torch.allclose(pre["head.weight"] - p0["head.weight"], (plain["head.weight"] - p0["head.weight"]) @ p,
                          atol=1e-5)
    m2, _ = load_metaloss(save_metaloss(meta, tmp_path / "m.pt", {"eta": 1.0}))
    assert m2.steps == 2 and all(torch.equal(m2.precond[k], meta.precond[k]) for k in meta.precond)
    # request time applies the stored number of steps: two unrolled steps = one step, then one more from there
    two = meta_unlearn(clone(head), m2, xs, ys, 1.0)
    one = meta_unlearn(clone(head), m2, xs, ys, 1.0, steps=1)
    again = inner_step(one, m2, xs, ys, 1.0, create_graph=False)
    assert torch.allclose(dict(two.named_parameters())["head.weight"], again["head.weight"], atol=1e-6)
    assert not torch.allclose(dict(two.named_parameters())["head.weight"], dict(one.named_parameters())["head.weight"])
    with pytest.raises(InputError):
        input_preconditioners(head, xt, 0.0)


def test_out_of_fold_probabilities_are_cached_with_the_references(tmp_path: Path, td: TaskData, monkeypatch) -> None:
    from faceprivacy.unlearn import evaluate as ev

    cfg = ev.EvalConfig(train=TrainConfig(epochs=2, batch=32, lr=1e-2), model=MLP, reference_cache=str(tmp_path))
    cfg.meta.oof_folds = 3
    xt = to_float(td.x)
    a = ev._cached_oof(td, xt, cfg)
    monkeypatch.setattr(ev, "out_of_fold_probs", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    b = ev._cached_oof(td, xt, cfg)
    assert torch.equal(a, b) and len(list(tmp_path.glob("oof_f3_*.pt"))) == 1


def test_support_ce_step_rule_scales_the_step_and_survives_save_load(tmp_path: Path, td: TaskData,
                                                                     head: TaskCNN) -> None:
    """MetaUnlearn's request-time rule (MetaLoss.support_ce = (C, G)): the step is the fixed one times
    clip((C / ce1) ** G, 0.5, 1.7), ce1 the support photos' cross-entropy after the fixed step; kept by save/load,
    G = 0 on the CLI switches it off, and impossible values are refused."""
    import torch.nn.functional as F

    from faceprivacy.unlearn.cli import _check_support_ce
    from faceprivacy.unlearn.metaloss import (
        SUPPORT_CE_RANGE,
        load_metaloss,
        meta_unlearn,
        save_metaloss,
        support_ce_multiplier,
    )
    from faceprivacy.unlearn.model import clone

    xt, yt, meta, _ = _meta_on(td, head, iters=2, k_min=2, k_max=3, batch=8, update="weights")
    req = make_request(td, 3, seed=0)
    xs, ys = xt[req.support], yt[req.support]
    fixed = meta_unlearn(clone(head), meta, xs, ys, 2.0)
    with torch.no_grad():
        ce1 = float(F.cross_entropy(fixed(xs), ys))
    c, g = 1.3 * ce1, 0.5  # the step should grow by 1.3 ** 0.5
    mult = support_ce_multiplier(head, meta, xs, ys, 2.0, c, g)
    assert mult == pytest.approx(1.3 ** 0.5, rel=1e-4)
    assert support_ce_multiplier(head, meta, xs, ys, 2.0, 1e3 * ce1, 1.0) == SUPPORT_CE_RANGE[1]
    meta.support_ce = (c, g)
    m2, _ = load_metaloss(save_metaloss(meta, tmp_path / "m.pt", {"eta": 2.0}))
    assert m2.support_ce == pytest.approx((c, g))
    ruled = meta_unlearn(clone(head), m2, xs, ys, 2.0)
    m2.support_ce = None
    scaled = meta_unlearn(clone(head), m2, xs, ys, 2.0 * mult)
    for a, b in zip(ruled.parameters(), scaled.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(dict(ruled.named_parameters())["head.weight"],
                              dict(fixed.named_parameters())["head.weight"])
    from argparse import Namespace

    for bad in ([0.0, 0.5], [1.0, -1.0]):
        with pytest.raises(InputError):
            _check_support_ce(Namespace(support_ce=bad))
    _check_support_ce(Namespace(support_ce=[1.5, 0.0]))


def test_cli_unlearn_support_ce_is_recorded(tmp_path: Path, monkeypatch) -> None:
    """``faceprivacy unlearn --support-ce C G`` applies the rule and writes it into the request's record."""
    from PIL import Image

    from faceprivacy.cli import main
    from faceprivacy.unlearn import request
    from faceprivacy.unlearn.metaloss import MetaLoss, save_metaloss
    from faceprivacy.unlearn.model import load_model_with_record

    monkeypatch.setattr(request, "faceless", lambda crops: [])
    cfg = ModelConfig(kind="mlp", in_dim=128, widths=(16,), embedder="dlib")
    rng = np.random.default_rng(0)
    m, _ = train_model(rng.normal(size=(32, 128)).astype(np.float32), rng.integers(0, 8, 32),
                       TrainConfig(epochs=2, batch=16), cfg)
    mp = save_model(m, tmp_path / "head.pt")
    torch.manual_seed(0)
    lp = save_metaloss(MetaLoss(8, m.feature_dim, dropout=0.0), tmp_path / "meta.pt", {"eta": 1.0})
    img = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "head2.pt"
    assert main(["unlearn", "--model", str(mp), "--metaloss", str(lp), "--support", str(img), "--out", str(out),
                 "--support-ce", "1.5", "0.5", "--threads", "1"]) == 0
    _m2, rec = load_model_with_record(out)
    assert rec["unlearning_history"][-1]["support_ce"] == [1.5, 0.5]
    assert main(["unlearn", "--model", str(mp), "--metaloss", str(lp), "--support", str(img), "--out",
                 str(tmp_path / "h3.pt"), "--support-ce", "0", "0.5"]) == 2
