"""FedFace algorithm core and the in-process simulator on synthetic clients (fast, no data needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from faceprivacy.core.errors import InputError
from faceprivacy.federated.algorithm import (
    ClientConfig,
    ServerAdam,
    ServerConfig,
    ServerState,
    client_update,
    dlib_metric_loss,
    fedavg,
    head_vector,
    init_class_embedding,
    spreadout_loss,
    spreadout_loss_euclidean,
    spreadout_step,
    spreadout_step_euclidean,
    squared_hinge_cosine_loss,
    squared_hinge_radius_loss,
    validate_update,
)
from faceprivacy.federated.evaluate import head_evaluator
from faceprivacy.federated.simulation import FederatedSimulator, SimConfig
from faceprivacy.federated.synthetic import synthetic_clients, tiny_head

torch.set_num_threads(1)


def test_squared_hinge_loss_values():
    w = torch.tensor([1.0, 0.0])
    f = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cos 1 and cos 0
    # mean(max(0, .9-1)^2, max(0, .9-0)^2) = 0.81 / 2
    assert squared_hinge_cosine_loss(f, w, 0.9).item() == pytest.approx(0.405)


def test_spreadout_loss_and_step_separate_classes():
    W = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32)
    before = spreadout_loss(torch.from_numpy(W)).item()
    # only the pair (0,1) is above the 0.3 margin: cos ~0.994 -> (0.694)^2, counted twice of 6 ordered pairs
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    c = float(Wn[0] @ Wn[1])
    assert before == pytest.approx(2 * (c - 0.3) ** 2 / 6, rel=1e-5)
    W2 = spreadout_step(W, steps=10, lr=1.0)
    assert np.allclose(np.linalg.norm(W2, axis=1), 1.0, atol=1e-5)
    assert spreadout_loss(torch.from_numpy(W2)).item() < before


def test_client_update_moves_towards_own_embedding_and_sends_no_features():
    feats, _ = synthetic_clients(1, 10, dim=64, noise=2.0, seed=3)
    head = tiny_head()
    vec = head_vector(head)
    w = init_class_embedding(head, feats[0])
    cfg = ClientConfig(local_steps=5, lr=0.5)
    upd = client_update(head, vec, feats[0], w, cfg, seed=1)
    assert upd.delta.shape == vec.shape and torch.isfinite(upd.delta).all() and upd.delta.norm() > 0
    assert upd.num_examples == 10 and np.isclose(np.linalg.norm(upd.embedding), 1.0)
    # the update message has exactly these fields: no images, no per-image features
    assert set(vars(upd)) == {"delta", "embedding", "num_examples", "loss", "clipped", "meta"}
    # loss under the new model is lower than under the received one
    from faceprivacy.federated.algorithm import load_head_vector

    load_head_vector(head, vec)
    l0 = squared_hinge_cosine_loss(head(feats[0]), torch.from_numpy(w)).item()
    load_head_vector(head, vec + upd.delta)
    l1 = squared_hinge_cosine_loss(head(feats[0]), torch.from_numpy(upd.embedding)).item()
    assert l1 < l0


def test_dp_clipping_and_noise():
    feats, _ = synthetic_clients(1, 10, dim=64, noise=2.0, seed=3)
    head = tiny_head()
    vec = head_vector(head)
    w = init_class_embedding(head, feats[0])
    clip = ClientConfig(local_steps=5, lr=0.5, dp_clip=1e-3)
    u = client_update(head, vec, feats[0], w, clip, seed=1)
    assert u.clipped and u.delta.norm().item() <= 1e-3 + 1e-6
    noisy = ClientConfig(local_steps=5, lr=0.5, dp_clip=1e-3, dp_noise=1.0)
    a = client_update(head, vec, feats[0], w, noisy, seed=1)
    b = client_update(head, vec, feats[0], w, noisy, seed=2)
    assert not torch.allclose(a.delta, b.delta)
    # noise std = sigma * clip per coordinate
    assert a.delta.std().item() == pytest.approx(1e-3, rel=0.2)
    with pytest.raises(ValueError):
        client_update(head, vec, feats[0], w, ClientConfig(dp_noise=1.0), seed=1)


def test_validate_update_rejects_bad_updates():
    good = torch.zeros(5)
    e = np.ones(3, np.float32)
    assert validate_update(good, e, 3, 5, 3) is None
    assert "NaN" in validate_update(torch.tensor([0, float("nan"), 0, 0, 0.0]), e, 3, 5, 3)
    assert "shape" in validate_update(torch.zeros(4), e, 3, 5, 3)
    assert "positive" in validate_update(good, e, 0, 5, 3)
    assert "embedding" in validate_update(good, np.ones(2), 3, 5, 3)
    assert "zero" in validate_update(good, np.zeros(3), 3, 5, 3)
    assert "exceeds" in validate_update(torch.ones(5), e, 3, 5, 3, max_norm=1.0)


def test_fedavg_weighted_and_server_state():
    m = fedavg([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], [3, 1])
    assert torch.allclose(m, torch.tensor([0.75, 0.25]))
    st = ServerState(torch.zeros(2), np.eye(3, 2, dtype=np.float32), ServerConfig(spreadout=False))
    st.apply(m, {2: np.array([0.0, 2.0])})
    assert torch.allclose(st.vec, m) and np.allclose(st.W[2], [0.0, 1.0])


def _sim_setup(n=60, seed=0):
    feats, _ = synthetic_clients(n, (4, 10), dim=64, noise=1.0, seed=seed)
    test, _ = synthetic_clients(20, 8, dim=64, noise=1.0, seed=seed + 1)
    return feats, head_evaluator(torch.cat(test), np.repeat(np.arange(20), 8), fars=(1e-2,))


def test_fedface_beats_fedavg_which_collapses():
    feats, ev = _sim_setup()
    res = {}
    for algo in ("fedface", "fedavg"):
        cfg = SimConfig(rounds=15, clients_per_round=20, algorithm=algo, eval_every=15,
                        client=ClientConfig(local_steps=2, lr=0.2))
        sim = FederatedSimulator(tiny_head(), feats, cfg, eval_fn=ev)
        sim.run(progress_bar=False)
        res[algo] = (sim.history[0]["eval"], sim.history[-1]["eval"])
    start = res["fedface"][0]
    assert res["fedface"][1]["tar@far=0.01"] > start["tar@far=0.01"]
    assert res["fedface"][1]["tar@far=0.01"] > res["fedavg"][1]["tar@far=0.01"]
    # without spreadout every identity drifts towards one point: impostor similarity rises
    assert res["fedavg"][1]["mean_impostor"] > start["mean_impostor"] + 0.05


def test_dropout_and_faulty_clients_are_tolerated(caplog):
    feats, _ = _sim_setup(40)
    cfg = SimConfig(rounds=4, clients_per_round=20, dropout=0.3, faulty_fraction=0.2, eval_every=0)
    sim = FederatedSimulator(tiny_head(), feats, cfg)
    with caplog.at_level(logging.WARNING, logger="faceprivacy.federated.simulation"):
        hist = sim.run(progress_bar=False)
    assert sum(h["dropped"] for h in hist) > 0 and sum(h["rejected"] for h in hist) > 0
    assert all(h["accepted"] + h["dropped"] + h["rejected"] == h["sampled"] for h in hist)
    assert any("rejected update from client" in r.message for r in caplog.records)
    assert torch.isfinite(sim.state.vec).all() and np.isfinite(sim.state.W).all()


def test_checkpoint_resume_is_exact(tmp_path):
    feats, _ = _sim_setup(30)
    cfg = SimConfig(rounds=4, clients_per_round=10, eval_every=0)
    full = FederatedSimulator(tiny_head(), feats, cfg)
    full.run(progress_bar=False)
    ck = tmp_path / "sim.pt"
    a = FederatedSimulator(tiny_head(), feats, cfg, checkpoint_path=ck)
    a.run(rounds=2, progress_bar=False)
    assert ck.exists()
    b = FederatedSimulator(tiny_head(), feats, cfg, checkpoint_path=ck)
    b.load_checkpoint(ck)
    assert b.round == 2
    b.run(progress_bar=False)
    assert b.round == 4 and torch.allclose(b.state.vec, full.state.vec, atol=1e-6)
    assert np.allclose(b.state.W, full.state.W, atol=1e-6)
    other = FederatedSimulator(tiny_head(), feats[:-1], cfg)
    with pytest.raises(InputError):
        other.load_checkpoint(ck)
    with pytest.raises(InputError):
        FederatedSimulator(tiny_head(), feats, SimConfig(rounds=4, clients_per_round=5)).load_checkpoint(ck)


def test_bad_inputs():
    with pytest.raises(InputError):
        SimConfig(algorithm="fedprox")
    with pytest.raises(InputError):
        FederatedSimulator(tiny_head(), [torch.zeros(0, 64)], SimConfig())


def test_euclidean_losses_and_spreadout_gradient():
    f = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    w = torch.zeros(2)
    # distances 0 and 0.5 to w; radius 0.3: only the second is penalised, by (0.5 - 0.3)^2 / 2
    assert squared_hinge_radius_loss(f, w, 0.3).item() == pytest.approx(0.02)
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(12, 5, generator=gen, dtype=torch.float64) * 0.2
    # the closed-form step equals a gradient step on (C - 1) * R(W)
    Wa = W.clone().requires_grad_(True)
    (11 * spreadout_loss_euclidean(Wa, 0.8)).backward()
    expected = (W - 0.01 * Wa.grad).numpy()
    got = spreadout_step_euclidean(W.numpy(), steps=1, lr=0.01, margin=0.8)
    assert np.allclose(got, expected, atol=1e-6)
    before = spreadout_loss_euclidean(W.float(), 0.8).item()
    after = spreadout_loss_euclidean(torch.from_numpy(spreadout_step_euclidean(W.numpy(), 20, 0.5, 0.8)), 0.8)
    assert after.item() < 0.5 * before


def test_dlib_metric_loss_penalises_only_violations():
    lab = torch.tensor([0, 0, 1])
    good = torch.tensor([[0.0, 0.0], [0.1, 0.0], [2.0, 0.0]])  # same id 0.1 apart, other id far
    assert dlib_metric_loss(good, lab).item() == 0.0
    bad = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.2, 0.0]])  # same id 1.0 apart, other id 0.2 away
    # positive pairs (2, ordered): 1.0 - 0.56 each; hardest 2 negatives: 0.64 - 0.2 each; / 2 positives
    assert dlib_metric_loss(bad, lab).item() == pytest.approx((2 * 0.44 + 2 * 0.44) / 2, abs=1e-5)


def test_server_adam_normalises_step_size():
    ad = ServerAdam(lr=1e-3)
    small = ad.step(torch.full((4,), 1e-6))
    assert torch.allclose(small, torch.full((4,), 1e-3), rtol=1e-2)  # first Adam step = lr * sign
    st = ServerState(torch.zeros(3), np.eye(3, dtype=np.float32), ServerConfig(server_opt="adam", server_lr=0.1,
                                                                           spreadout=False))
    st.apply(torch.tensor([1e-5, -1e-5, 0.0]), {})
    assert np.allclose(st.vec.numpy(), [0.1, -0.1, 0.0], atol=1e-3)
    with pytest.raises(ValueError):
        ServerState(torch.zeros(3), np.eye(3, dtype=np.float32), ServerConfig(server_opt="rmsprop"))


def test_euclidean_fedface_keeps_raw_embeddings_and_resumes(tmp_path):
    feats, ev = _sim_setup(30)
    cfg = SimConfig(rounds=4, clients_per_round=10, eval_every=0, algorithm="fedface",
                    client=ClientConfig(local_steps=2, lr=0.05, margin=0.5, geometry="euclidean", embedding_lr=0.0),
                    server=ServerConfig(spread_margin=3.0, spread_lr=1.0, server_opt="adam", server_lr=1e-2))
    assert cfg.server.geometry == "euclidean"
    full = FederatedSimulator(tiny_head(), feats, cfg)
    W0 = full.state.W.copy()
    full.run(progress_bar=False)
    norms = np.linalg.norm(full.state.W, axis=1)
    assert not np.allclose(norms, 1.0)  # raw, not unit-normalised
    assert not np.allclose(full.state.W, W0)  # spreadout moved the class embeddings
    ck = tmp_path / "e.pt"
    a = FederatedSimulator(tiny_head(), feats, cfg, checkpoint_path=ck)
    a.run(rounds=2, progress_bar=False)
    b = FederatedSimulator(tiny_head(), feats, cfg, checkpoint_path=ck)
    b.load_checkpoint(ck)
    b.run(progress_bar=False)
    assert torch.allclose(b.state.vec, full.state.vec, atol=1e-6) and np.allclose(b.state.W, full.state.W, atol=1e-5)
    with pytest.raises(InputError):
        SimConfig(client=ClientConfig(geometry="hyperbolic"))


def test_module_examples_run():
    import doctest

    from faceprivacy.federated import algorithm, simulation

    for mod in (algorithm, simulation):
        res = doctest.testmod(mod)
        assert res.attempted > 0 and res.failed == 0


def test_geometry_lookup_refuses_unknown_names():
    from faceprivacy.federated.algorithm import Cosine, Euclidean, get_geometry

    assert isinstance(get_geometry("cosine"), Cosine) and isinstance(get_geometry("euclidean"), Euclidean)
    with pytest.raises(ValueError, match="unknown geometry"):
        get_geometry("euclidian")


def test_hard_negatives_from_the_bank():
    from faceprivacy.federated.losses import (
        get_geometry,
        nearest_negatives,
        negative_hinge_cosine_loss,
        negative_hinge_radius_loss,
    )

    W = np.array([[0, 0], [0.1, 0], [1, 0], [5, 5]], np.float32)
    idx = nearest_negatives(W, np.array([0, 3]), 2, "euclidean")
    assert idx.tolist() == [[1, 2], [2, 1]]  # never itself, nearest first
    assert nearest_negatives(W, np.array([0]), 10, "euclidean").shape == (1, 3)
    assert nearest_negatives(W[:1], np.array([0]), 3, "euclidean").shape == (1, 0)
    f = torch.tensor([[0.0, 0.0]], requires_grad=True)
    negs = torch.tensor([[0.5, 0.0], [2.0, 0.0]])
    # only the negative within the margin counts: (0.7 - 0.5)^2 / 2 pairs
    assert negative_hinge_radius_loss(f, negs, 0.7).item() == pytest.approx(0.02)
    assert negative_hinge_cosine_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), 0.3).item() == \
        pytest.approx(0.49)
    assert get_geometry("euclidean").negative_loss(f, negs, 0.7).item() == pytest.approx(0.02)
    # a client with negatives pushes its features away from them (the update differs from positive-only)
    head = tiny_head()
    feats, _ = synthetic_clients(2, 8, dim=64, seed=0)
    w0 = init_class_embedding(head, feats[0], "euclidean")
    other = init_class_embedding(head, feats[1], "euclidean")[None]
    cfg = ClientConfig(local_steps=3, lr=0.05, margin=0.0, geometry="euclidean", negatives=1, neg_margin=100.0)
    a = client_update(head, head_vector(head), feats[0], w0, cfg, seed=1)
    b = client_update(head, head_vector(head), feats[0], w0, cfg, seed=1, negatives=other)
    assert not torch.allclose(a.delta, b.delta)
    with torch.no_grad():
        from faceprivacy.federated.params import load_head_vector

        load_head_vector(head, head_vector(head) + b.delta)
        d_after = torch.cdist(head(feats[0]), torch.as_tensor(other)).mean()
    assert d_after.item() > 0


def test_fedface_with_hard_negatives_runs_and_fedavg_ignores_them():
    feats, ev = _sim_setup()
    for algo in ("fedface", "fedavg"):
        cfg = SimConfig(rounds=3, clients_per_round=10, algorithm=algo, eval_every=3,
                        client=ClientConfig(local_steps=2, lr=0.2, negatives=5, neg_margin=0.3))
        sim = FederatedSimulator(tiny_head(), feats, cfg, eval_fn=ev)
        sim.run(progress_bar=False)
        assert np.isfinite(sim.state.vec.numpy()).all()
        assert sim.history[-1]["accepted"] == 10


def test_public_negatives_reach_the_head_and_are_fedface_only():
    head = tiny_head()
    feats, _ = synthetic_clients(3, 8, dim=64, seed=0)
    w0 = init_class_embedding(head, feats[0], "euclidean")
    pub = torch.cat(feats[1:])
    cfg = ClientConfig(local_steps=3, lr=0.05, margin=0.0, geometry="euclidean", public_batch=4, neg_margin=100.0)
    a = client_update(head, head_vector(head), feats[0], w0, cfg, seed=1)
    b = client_update(head, head_vector(head), feats[0], w0, cfg, seed=1, public_feats=pub)
    assert not torch.allclose(a.delta, b.delta)
    sfeats, ev = _sim_setup()
    with pytest.raises(InputError):
        FederatedSimulator(tiny_head(), sfeats, SimConfig(rounds=1, client=ClientConfig(public_batch=4)))
    # the FedAvg baseline neither needs nor uses them
    sim = FederatedSimulator(tiny_head(), sfeats, SimConfig(rounds=2, clients_per_round=5, algorithm="fedavg",
                                                            client=ClientConfig(public_batch=4)))
    sim.run(progress_bar=False)
    sim = FederatedSimulator(tiny_head(), sfeats, SimConfig(rounds=2, clients_per_round=5,
                                                            client=ClientConfig(public_batch=4)),
                             public_feats=torch.cat(sfeats[:3]))
    sim.run(progress_bar=False)
    assert np.isfinite(sim.state.vec.numpy()).all()


def test_server_lr_schedule_and_spread_warmup():
    import numpy as np

    from faceprivacy.federated.server import ServerConfig, ServerState

    st = ServerState(torch.zeros(3), np.eye(2, dtype=np.float32),
                     ServerConfig(server_opt="adam", server_lr=1e-4, server_lr_schedule="cosine", server_lr_min=0.1,
                                  spread_lr=2.0, spread_warmup=4))
    st.schedule(1, 10)
    assert st.adam.lr == pytest.approx(1e-4) and st.spread_lr == pytest.approx(0.5)
    st.schedule(10, 10)
    assert st.adam.lr == pytest.approx(1e-5) and st.spread_lr == pytest.approx(2.0)
    const = ServerState(torch.zeros(3), np.eye(2, dtype=np.float32), ServerConfig(server_lr=0.5))
    const.schedule(7, 10)
    assert const.lr == 0.5 and const.spread_lr == 1.0


def test_dp_private_target_uploads_the_embedding_once():
    from faceprivacy.federated.simulation import FederatedSimulator, SimConfig
    from faceprivacy.federated.synthetic import synthetic_clients

    feats, _ = synthetic_clients(5, 6, dim=8, seed=0)
    W = {}
    for private in (False, True):
        cfg = SimConfig(rounds=1, clients_per_round=0, algorithm="fedavg", private_target=private,
                        client=ClientConfig(local_steps=1, lr=0.05, dp_clip=0.1, dp_noise=1.0))
        sim = FederatedSimulator(torch.nn.Linear(8, 4), feats, cfg)
        sim.run(progress_bar=False)
        after1 = sim.state.W.copy()
        sim.run(rounds=3, progress_bar=False)
        W[private] = (after1, sim.state.W.copy(), sim.own.copy())
    assert not np.allclose(W[False][0], W[False][1])  # every upload re-noises the server's copy
    assert np.array_equal(W[True][0], W[True][1])  # uploaded once; no spreadout in fedavg
    assert np.abs(W[True][2]).sum() > 0  # the clients' own targets


def test_proxy_softmax_negatives_prefer_the_own_class_and_penalise_contraction():
    from faceprivacy.federated.losses import proxy_softmax_loss

    w = torch.tensor([1.0, 0.0])
    negs = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    near_own = torch.tensor([[0.9, 0.1]])
    near_neg = torch.tensor([[0.1, 0.9]])
    assert proxy_softmax_loss(near_own, w, negs, 5.0) < proxy_softmax_loss(near_neg, w, negs, 5.0)
    # the same configuration shrunk by half (a contraction) costs more: the hinges cannot see this
    assert proxy_softmax_loss(0.5 * near_own, 0.5 * w, 0.5 * negs, 5.0) > proxy_softmax_loss(near_own, w, negs, 5.0)
    assert proxy_softmax_loss(near_own, w, negs, 5.0, "cosine") < proxy_softmax_loss(near_neg, w, negs, 5.0, "cosine")


def test_cosine_negatives_sees_a_common_shift_the_euclidean_hinge_does_not():
    from faceprivacy.federated.losses import negative_hinge_cosine_loss, negative_hinge_radius_loss

    f = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    negs = torch.tensor([[0.0, 1.0]])
    shift = torch.tensor([3.0, 3.0])  # the same translation of features and negatives
    assert negative_hinge_radius_loss(f + shift, negs + shift, 2.0) == pytest.approx(
        float(negative_hinge_radius_loss(f, negs, 2.0)))
    assert negative_hinge_cosine_loss(f + shift, negs + shift, 0.5) > negative_hinge_cosine_loss(f, negs, 0.5)
    feats = torch.randn(6, 8)
    head = torch.nn.Linear(8, 4)
    w = init_class_embedding(head, feats, "euclidean")
    cfg = ClientConfig(local_steps=1, lr=0.01, geometry="euclidean", negatives=2, neg_loss="cosine", neg_margin=0.0)
    upd = client_update(head, head_vector(head), feats, w, cfg, seed=0, negatives=np.ones((2, 4), np.float32))
    assert np.isfinite(upd.loss) and upd.loss > 0


def test_centred_positive_is_blind_to_a_shrink_towards_the_centre_but_not_to_a_common_shift():
    from faceprivacy.federated.losses import centred_cosine_loss, squared_hinge_radius_loss

    c = torch.tensor([2.0, 2.0, 0.0])
    w = torch.tensor([3.0, 2.0, 0.0])
    f = torch.tensor([[3.0, 2.5, 0.0], [2.8, 1.7, 0.2]])
    base = float(centred_cosine_loss(f, w, c, 0.99))
    assert base > 0
    # features (and the class embedding) shrunk halfway towards the centre: same angles, same loss; the
    # radius hinge rewards the shrink
    assert float(centred_cosine_loss(c + 0.5 * (f - c), c + 0.5 * (w - c), c, 0.99)) == pytest.approx(base, abs=1e-6)
    assert squared_hinge_radius_loss(c + 0.5 * (f - c), c + 0.5 * (w - c), 0.1) < squared_hinge_radius_loss(f, w, 0.1)
    # a translation common to all features costs
    assert float(centred_cosine_loss(f + torch.tensor([0.0, 1.0, 0.0]), w, c, 0.99)) > base


def test_client_positive_centred_needs_the_centre_and_trains():
    feats = torch.randn(6, 8)
    head = torch.nn.Linear(8, 4)
    w = init_class_embedding(head, feats, "euclidean")
    cfg = ClientConfig(local_steps=2, lr=0.05, geometry="euclidean", positive="centred", centred_margin=0.99)
    with pytest.raises(ValueError, match="centre"):
        client_update(head, head_vector(head), feats, w, cfg, seed=0)
    centre = np.zeros(4, np.float32) + 0.1
    upd = client_update(head, head_vector(head), feats, w, cfg, seed=0, centre=centre)
    assert np.isfinite(upd.loss) and float(upd.delta.norm()) > 0
    both = client_update(head, head_vector(head), feats, w,
                         ClientConfig(local_steps=1, lr=0.05, geometry="euclidean", positive="both", margin=0.0,
                                      centred_margin=0.99), seed=0, centre=centre)
    one = client_update(head, head_vector(head), feats, w,
                        ClientConfig(local_steps=1, lr=0.05, geometry="euclidean", positive="centred",
                                     centred_margin=0.99), seed=0, centre=centre)
    assert both.loss > one.loss  # the radius hinge at radius 0 adds to the centred term
    with pytest.raises(InputError, match="positive"):
        SimConfig(client=ClientConfig(positive="nope"))
    sim = FederatedSimulator(torch.nn.Linear(8, 4), [feats, feats + 1.0, feats - 1.0],
                             SimConfig(rounds=2, clients_per_round=0,
                                       client=ClientConfig(geometry="euclidean", positive="centred", lr=0.05)))
    sim.run(progress_bar=False)
    assert np.isfinite(sim.state.vec.numpy()).all() and sim.history[-1]["client_loss"] >= 0


def test_spread_boost_multiplies_the_spreadout_steps_of_the_first_rounds():
    st = ServerState(torch.zeros(3), np.eye(2, dtype=np.float32),
                     ServerConfig(spread_steps=10, spread_boost=3, spread_boost_rounds=2))
    st.schedule(1, 10)
    assert st.spread_steps == 30
    st.schedule(2, 10)
    assert st.spread_steps == 30
    st.schedule(3, 10)
    assert st.spread_steps == 10
    # more steps spread the class embeddings further in the same round
    W = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]], np.float32)
    spread = {}
    for boost in (1, 5):
        s = ServerState(torch.zeros(3), W, ServerConfig(geometry="euclidean", spread_margin=0.7, spread_lr=0.02,
                                                        spread_steps=2, spread_boost=boost, spread_boost_rounds=1))
        s.schedule(1, 5)
        s.apply(None, {})
        spread[boost] = float(np.linalg.norm(s.W - s.W.mean(0), axis=1).mean())
    assert spread[5] > spread[1]
