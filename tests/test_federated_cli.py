"""fed-simulate end to end on synthetic clients; the dlib backbone split on real CelebA crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceprivacy.cli import main
from faceprivacy.core.errors import InputError


def test_fed_simulate_synthetic_writes_json_html_png(tmp_path):
    out = tmp_path / "fed"
    rc = main(["-q", "fed-simulate", "--synthetic", "--clients", "30", "--rounds", "4", "--clients-per-round",
               "10", "--eval-every", "2", "--algorithms", "fedface,fedavg,central", "--central-epochs", "1",
               "--dropout", "0.3", "--lr", "0.2", "--out", str(out), "--checkpoint-every", "2"])
    assert rc == 0
    res = json.loads((out / "fed_results.json").read_text())
    assert set(res["runs"]) == {"fedface", "fedavg", "central"}
    curve = res["runs"]["fedface"]["curve"]
    assert [c["round"] for c in curve] == [0, 2, 4]
    assert all(0.0 <= c["tar@far=0.001"] <= 1.0 for c in curve)
    assert sum(r["dropped"] for r in res["runs"]["fedface"]["rounds"]) > 0
    assert (out / "fed_report.html").read_text().count("<img") == 1
    assert (out / "fed_tar_vs_round.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoints" / "fedface.pt").exists()
    # resume: nothing left to do at round 4 -> same final numbers
    rc = main(["-q", "fed-simulate", "--synthetic", "--clients", "30", "--rounds", "4", "--clients-per-round",
               "10", "--eval-every", "2", "--algorithms", "fedface", "--dropout", "0.3", "--lr", "0.2",
               "--out", str(out), "--checkpoint-every", "2", "--resume"])
    assert rc == 0
    res2 = json.loads((out / "fed_results.json").read_text())
    assert res2["runs"]["fedface"]["final"] == res["runs"]["fedface"]["final"]


def test_fed_simulate_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["fed-simulate", "--synthetic", "--algorithms", "fedprox", "--out", str(tmp_path)]) == 2
    assert "unknown algorithms" in capsys.readouterr().err
    assert main(["fed-simulate", "--synthetic", "--rounds", "0", "--out", str(tmp_path)]) == 2


def test_dlib_split_matches_full_model_on_celeba(celeba_root):
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.federated.backbone import build_split, load_crops, trunk_features
    from faceprivacy.federated.dlib_split import split_dlib_resnet

    torch.set_num_threads(1)
    ds = celeba_subset(celeba_root)
    crops = load_crops(ds.paths[:3])
    split = build_split("dlib-level0")
    f = trunk_features(split, crops)
    assert tuple(f.shape) == (3, 256, 4, 4)
    from faceprivacy.core.chip import arcface112_to_dlib150
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    model = load_dlib_resnet()
    with torch.no_grad():
        x = arcface112_to_dlib150(torch.from_numpy(crops).permute(0, 3, 1, 2).float())
        ref = model(x)
        assert torch.allclose(split.head(f), ref, atol=1e-4)
        trunk, head = split_dlib_resnet(model, "fc")
        assert torch.allclose(head(trunk(x)), ref, atol=1e-4)
    # trunk is frozen, head trainable
    assert not any(p.requires_grad for p in split.trunk.parameters())
    assert all(p.requires_grad for p in split.head.parameters())
    assert np.isfinite(f.numpy()).all()


def test_fed_client_rejects_missing_image_dir(tmp_path, capsys):
    rc = main(["fed-client", "--superlink", "127.0.0.1:1", "--image-dir", str(tmp_path / "nope"), "--insecure"])
    assert rc == 2 and "image folder not found" in capsys.readouterr().err


def test_flower_project_file_is_valid(tmp_path):
    import tomllib

    from faceprivacy.core.errors import InputError
    from faceprivacy.federated.deploy import write_flower_project, write_run_config
    from faceprivacy.federated.recipe import FedFaceRecipe

    p = write_flower_project(tmp_path / "app")
    cfg = tomllib.loads((p / "pyproject.toml").read_text())
    assert cfg["tool"]["flwr"]["app"]["components"]["serverapp"].endswith("flower_app:server_app")
    assert cfg["tool"]["flwr"]["app"]["config"] == FedFaceRecipe().to_run_config()  # fixed: one pinned hash
    rc = tomllib.loads(write_run_config(tmp_path / "rc.toml", {"num-server-rounds": 5, "backbone": "tiny"}).read_text())
    assert rc["num-server-rounds"] == 5 and rc["backbone"] == "tiny"
    import pytest

    with pytest.raises(InputError):
        write_run_config(tmp_path / "bad.toml", {"not-a-key": 1})


def test_dlib_head_fast_path_matches_convolutions():
    from faceprivacy.federated.dlib_split import split_dlib_resnet
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    torch.manual_seed(0)
    _, head = split_dlib_resnet(load_dlib_resnet(), "level0")
    x = torch.rand(5, 256, 4, 4) * 3
    out = head(x)  # fast path (1x1 residual_down as matrix products)
    ref = head.fc(head.blocks(x).mean(dim=(2, 3)))  # the plain convolutions
    assert torch.allclose(out, ref, atol=1e-5)
    g1 = torch.autograd.grad(out.square().sum(), list(head.parameters()))
    g2 = torch.autograd.grad(ref.square().sum(), list(head.parameters()))
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_fed_server_run_config_uses_absolute_paths_and_geometry_preset(tmp_path, monkeypatch):
    """The Flower processes run in other folders: relative --out/--data must reach them as absolute paths."""
    import argparse
    from pathlib import Path

    from faceprivacy.federated.cli import recipe_from_args, register

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["fed-server", "--out", "rel/out", "--data", "rel/data", "--insecure"])
    cfg = recipe_from_args(args).to_run_config()
    assert Path(cfg["out-dir"]).is_absolute() and cfg["out-dir"] == str(tmp_path / "rel" / "out")
    assert cfg["data-root"] == str(tmp_path / "rel" / "data")
    # dlib backbone + geometry auto -> the euclidean preset with FedAdam
    assert cfg["geometry"] == "euclidean" and cfg["server-opt"] == "adam" and cfg["margin"] == 0.3
    args = parser.parse_args(["fed-server", "--backbone", "tiny", "--margin", "0.8", "--insecure"])
    cfg = recipe_from_args(args).to_run_config()
    assert cfg["geometry"] == "cosine" and cfg["margin"] == 0.8 and cfg["spread-margin"] == 0.3


def test_fed_client_secure_by_default_needs_ca_and_key(tmp_path, capsys):
    rc = main(["fed-client", "--superlink", "127.0.0.1:1", "--partition-id", "0"])
    assert rc == 2 and "--root-certificates" in capsys.readouterr().err
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "key").write_text("not a key")
    rc = main(["fed-client", "--superlink", "127.0.0.1:1", "--partition-id", "0", "--root-certificates",
               str(tmp_path / "ca.crt"), "--auth-key", str(tmp_path / "key")])
    assert rc == 2 and "cannot read node key" in capsys.readouterr().err


def test_fed_server_flags_reach_the_recipe_and_bad_tls_exits_2(tmp_path, capsys):
    import argparse

    from faceprivacy.federated.cli import recipe_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["fed-server", "--aggregation", "median", "--max-update-norm", "2", "--timeout", "9",
                              "--round-timeout", "5", "--dp-clip", "1", "--dp-noise", "2", "--out", str(tmp_path)])
    r = recipe_from_args(args)
    assert (r.aggregation, r.max_update_norm, r.round_timeout, r.dp_noise, r.save_model) == ("median", 2.0, 5.0,
                                                                                           2.0, True)
    assert args.run_timeout == 9
    rc = main(["fed-server", "--ssl-certfile", str(tmp_path / "nope.pem"), "--out", str(tmp_path)])
    assert rc == 2 and "give all of" in capsys.readouterr().err


def test_round_line_names_dropped_and_rejected_nodes():
    from faceprivacy.federated.cli import format_round

    line = format_round({"round": 3, "num_rounds": 10, "sampled": 3, "accepted": 1, "clipped": 1,
                         "dropped": [{"node": 7, "reason": "no reply within the round timeout"}],
                         "rejected": [{"node": 9, "reason": "update contains NaN/inf"}],
                         "client_loss": 0.01, "elapsed_s": 12.0})
    assert line.startswith("round 3/10: 1/3 accepted, 1 clipped, 1 dropped (node 7: no reply")
    assert "1 rejected (node 9: update contains NaN/inf)" in line


def test_fed_simulate_seeds_writes_mean_sd_and_share(tmp_path):
    out = tmp_path / "fed"
    rc = main(["-q", "fed-simulate", "--synthetic", "--clients", "12", "--rounds", "2", "--clients-per-round", "6",
               "--eval-every", "1", "--algorithms", "fedface,fedavg,central", "--central-epochs", "1", "--lr", "0.2",
               "--out", str(out), "--seeds", "0,1"])
    assert rc == 0
    s = json.loads((out / "fed_seeds.json").read_text())
    assert s["seeds"] == [0, 1] and set(s["gain_points"]) == {"fedface", "fedavg", "central"}
    assert len(s["gain_points"]["fedface"]["per_seed"]) == 2 and "fedface_above_fedavg_every_round" in s
    assert (out / "seed1" / "fed_results.json").exists()
    res = json.loads((out / "seed0" / "fed_results.json").read_text())
    assert len(res["runs"]["fedface"]["final"]["tar@far=0.001_ci95"]) == 2


def test_trunk_feature_cache_is_reused(celeba_root, tmp_path, monkeypatch):
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.federated import experiment
    from faceprivacy.federated.backbone import build_split

    torch.set_num_threads(1)
    paths = celeba_subset(celeba_root).paths[:3]
    split = build_split("dlib-fc")
    a = experiment._features(split, paths, tmp_path, None)
    assert len(list(tmp_path.glob("trunk_dlib-fc_*.pt"))) == 1

    def boom(*a, **k):
        raise AssertionError("trunk recomputed although cached")

    monkeypatch.setattr(experiment, "dataset_features", boom)
    b = experiment._features(split, paths, tmp_path, None)
    assert torch.equal(a, b)


def test_fed_simulate_val_split_excludes_test_data(tmp_path, capsys):
    rc = main(["fed-simulate", "--eval-split", "val", "--test-data", str(tmp_path), "--rounds", "1",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "exclude each other" in capsys.readouterr().err


def test_seed_summary_reports_gain_and_fedface_minus_fedavg_by_round(tmp_path):
    out = tmp_path / "fed"
    rc = main(["-q", "fed-simulate", "--synthetic", "--clients", "12", "--rounds", "2", "--clients-per-round", "6",
               "--eval-every", "1", "--algorithms", "fedface,fedavg", "--lr", "0.2", "--out", str(out),
               "--seeds", "0,1", "--server-lr-schedule", "cosine", "--spread-warmup", "2"])
    assert rc == 0
    s = json.loads((out / "fed_seeds.json").read_text())
    assert [c["round"] for c in s["gain_by_round"]["fedface"]] == [0, 1, 2]
    assert s["gain_by_round"]["fedface"][0]["gain_mean"] == 0.0
    by = s["fedface_minus_fedavg_by_round"]
    assert [d["round"] for d in by] == [1, 2] and all(d["n_seeds"] == 2 for d in by)
    assert s["evaluation_rounds"] == 2 and 0 <= s["fedface_above_fedavg_rounds"] <= 2
    cfg = json.loads((out / "seed0" / "fed_results.json").read_text())["config"]["server"]
    assert cfg["server_lr_schedule"] == "cosine" and cfg["spread_warmup"] == 2


def test_val_folds_hold_out_different_training_identities_never_test(celeba_root, monkeypatch):
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.federated import experiment

    monkeypatch.setattr(experiment, "_features", lambda split, paths, cache, desc: torch.zeros(len(paths), 1))

    class _Split:
        name = "fake"

    parts = identity_split(celeba_subset(celeba_root))
    test_ids = set(parts["test"].identities)
    folds = []
    for k in (0, 1):
        d = experiment.celeba_client_data(_Split(), celeba_root, progress_bar=False, eval_split="val", val_fold=k)
        assert not test_ids & set(d.client_names)
        assert f"fold {k}" in d.source and len(d.client_feats) == len(parts["train"].identities) - 40
        folds.append(set(d.client_names))
    assert folds[0] != folds[1]
    # fold 0 is the original protocol (seed 123)
    rng = np.random.default_rng(experiment.VAL_HOLDOUT_SEED)
    hold = set(rng.choice(parts["train"].identities, size=40, replace=False).tolist())
    assert not hold & folds[0]


def test_disjoint_val_folds_never_evaluate_a_person_twice(celeba_root, monkeypatch, tmp_path, capsys):
    """--val-folds F: fold k's evaluation people (validation part + held-out training block) are its own; the
    clients never include them or a test person."""
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.federated import experiment

    # a fake trunk whose "feature" is the photo's identity folder, so the test rows name their people
    monkeypatch.setattr(experiment, "_features", lambda split, paths, cache, desc: torch.tensor(
        [[float(Path(p).parent.name)] for p in paths]))

    class _Split:
        name = "fake"

    parts = identity_split(celeba_subset(celeba_root))
    test_ids = {float(n) for n in parts["test"].identities}
    evaluated = []
    for k in range(3):
        d = experiment.celeba_client_data(_Split(), celeba_root, progress_bar=False, eval_split="val", val_fold=k,
                                          val_folds=3)
        people = {float(v) for v in d.test_feats[:, 0].tolist()}
        clients = {float(n) for n in d.client_names}
        assert not people & clients and not test_ids & (people | clients)
        assert "of 3 disjoint folds" in d.source and len(people) == 40 + len(parts["val"].identities[k::3])
        evaluated.append(people)
    assert not evaluated[0] & evaluated[1] and not evaluated[0] & evaluated[2] and not evaluated[1] & evaluated[2]
    with pytest.raises(InputError):
        experiment.celeba_client_data(_Split(), celeba_root, progress_bar=False, eval_split="val", val_fold=3,
                                      val_folds=3)
    # the CLI: only with --eval-split val, at least 2 folds, and seeds that name folds
    for bad in (["--val-folds", "3"], ["--eval-split", "val", "--val-folds", "1"],
                ["--eval-split", "val", "--val-folds", "3", "--seeds", "0,3"]):
        assert main(["fed-simulate", "--rounds", "1", "--out", str(tmp_path / "o"), *bad]) == 2
        assert "--val-folds" in capsys.readouterr().err


def test_fed_simulate_new_quality_options_reach_the_config(tmp_path):
    out = tmp_path / "fed"
    rc = main(["-q", "fed-simulate", "--synthetic", "--clients", "8", "--rounds", "2", "--clients-per-round", "4",
               "--eval-every", "1", "--methods", "fedface", "--lr", "0.2", "--out", str(out),
               "--positive", "centred", "--centred-margin", "0.8", "--spread-boost", "3", "--spread-boost-rounds", "1",
               "--server-adam-eps", "1e-6"])
    assert rc == 0
    cfg = json.loads((out / "fed_results.json").read_text())["config"]
    assert cfg["client"]["positive"] == "centred" and cfg["client"]["centred_margin"] == 0.8
    assert cfg["server"]["spread_boost"] == 3 and cfg["server"]["spread_boost_rounds"] == 1
    assert cfg["server"]["adam_eps"] == 1e-6


def test_cosine_claim_setting_is_the_same_algorithm_in_fed_server(tmp_path):
    """The issue-15 claim setting (cosine geometry, FedAdam, spreadout lr 30) is fed-server flags too: the deployed
    client trains with the simulator's ClientConfig and the strategy with the same spreadout and server step."""
    import argparse

    from faceprivacy.federated.cli import recipe_from_args, register
    from faceprivacy.federated.flower_app import build_strategy, client_config

    flags = ["--geometry", "cosine", "--margin", "0.972", "--spread-margin", "0.9", "--spread-lr", "30",
             "--server-opt", "adam", "--server-lr", "1e-5", "--embedding-lr", "0", "--lr", "0.001"]
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    r = recipe_from_args(parser.parse_args(["fed-server", "--insecure", "--out", str(tmp_path), *flags]))
    c = client_config(r)
    assert (c.geometry, c.margin, c.lr, c.embedding_lr, c.local_steps) == ("cosine", 0.972, 0.001, 0.0, 2)
    s = build_strategy(r, emb_dim=128)
    assert (s.geometry, s.spread_margin, s.spread_lr, s.spread_steps) == ("cosine", 0.9, 30.0, 10)
    assert s.adam is not None and s.adam.lr == 1e-5
    out = tmp_path / "sim"
    assert main(["-q", "fed-simulate", "--synthetic", "--clients", "6", "--rounds", "1", "--clients-per-round", "3",
                 "--methods", "fedface", "--out", str(out), *flags]) == 0
    cfg = json.loads((out / "fed_results.json").read_text())["config"]
    assert (cfg["client"]["geometry"], cfg["client"]["margin"], cfg["client"]["embedding_lr"]) == ("cosine", 0.972, 0.0)
    assert (cfg["server"]["spread_lr"], cfg["server"]["spread_margin"], cfg["server"]["server_lr"]) == (30.0, 0.9, 1e-5)
