"""Flower apps: the FedFace strategy on an in-process grid (fast) and on the real deployment engine."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from faceprivacy.federated import flower_app  # noqa: E402
from faceprivacy.federated.flower_app import run_server  # noqa: E402
from faceprivacy.federated.recipe import FedFaceRecipe  # noqa: E402


class InProcessGrid(Grid):
    """A Grid that calls the ClientApp's train function directly (no network): strategy + client logic.

    ``tamper[partition] = fn(reply_message, round) -> None`` turns a node into an attacker that edits its reply.
    """

    def __init__(self, n_nodes: int, run_config: dict, faulty: set[int] = frozenset(),
                 tamper: dict | None = None) -> None:
        self.nodes = {1000 + i: i for i in range(n_nodes)}
        self.run_config = run_config
        self.faulty = faulty
        self.tamper = tamper or {}
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self.states = {nid: RecordDict() for nid in self.nodes}

    def set_run(self, run):  # pragma: no cover - unused
        pass

    @property
    def run(self):  # pragma: no cover - unused
        return None

    def create_message(self, *a, **k):  # pragma: no cover - unused
        raise NotImplementedError

    def get_node_ids(self):
        return list(self.nodes)

    def get_nodes(self):  # pragma: no cover - unused
        return []

    def push_messages(self, messages):  # pragma: no cover - unused
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover - unused
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        messages = list(messages)
        # attackers answer first (the order the old server trusted)
        messages.sort(key=lambda m: self.nodes[m.metadata.dst_node_id] not in self.tamper)
        for m in messages:
            self.sent.append(m)
            nid = m.metadata.dst_node_id
            ctx = Context(run_id=1, node_id=nid, node_config={"partition-id": self.nodes[nid]},
                          state=self.states[nid], run_config=self.run_config)
            r = flower_app.client_train(m, ctx)
            if self.nodes[nid] in self.faulty:  # a broken client: NaN parameters
                arr = r.content["arrays"]
                k = next(iter(arr.keys()))
                bad = arr[k].numpy().copy()
                bad.flat[0] = np.nan
                arr[k] = Array(bad)
            if self.nodes[nid] in self.tamper:
                self.tamper[self.nodes[nid]](r, int(m.content["config"]["server-round"]), m)
            replies.append(r)
        self.replies += replies
        return replies


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the process's task identity; set one for the in-process grid."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def _cfg(**kw):
    cfg = FedFaceRecipe().to_run_config()
    cfg.update({"num-server-rounds": 2, "min-train-nodes": 3, "min-available-nodes": 3, "lr": 0.5,
                "local-steps": 2})
    cfg.update(kw)
    return cfg


def _run(grid, cfg):
    return run_server(grid, FedFaceRecipe.from_run_config(cfg))


def test_strategy_in_process_sends_each_node_its_own_embedding():
    cfg = _cfg()
    grid = InProcessGrid(3, cfg)
    summary = _run(grid, cfg)
    assert summary["model_change_l2"] > 1e-4 and summary["complete"]
    assert len(summary["nodes"]) == 3
    for node in summary["nodes"].values():
        assert node["updates"] == 2 and node["embedding_change"] > 0
    # round 1 carries the server's random start (first participation), round 2 each node's own embedding
    r1, r2 = grid.sent[:3], grid.sent[3:]
    assert all(m.content["config"]["first-participation"] for m in r1)
    assert all("first-participation" not in m.content["config"] for m in r2)
    embs = {m.metadata.dst_node_id: m.content["embedding"]["w"].numpy() for m in r2}
    assert len(embs) == 3
    vals = list(embs.values())
    assert not np.allclose(vals[0], vals[1]) and not np.allclose(vals[1], vals[2])


def test_node_caches_its_features_in_the_run_state():
    cfg = _cfg()
    grid = InProcessGrid(3, cfg)
    _run(grid, cfg)
    assert all(flower_app.FEAT_STATE_KEY in st.array_records for st in grid.states.values())


def test_strategy_euclidean_geometry_with_server_adam():
    cfg = _cfg(**{"geometry": "euclidean", "embedding-lr": 0.0, "server-opt": "adam", "server-lr": 1e-3,
                  "margin": 0.5, "spread-margin": 100.0, "lr": 0.05})
    grid = InProcessGrid(3, cfg)
    summary = _run(grid, cfg)
    assert summary["model_change_l2"] > 1e-4 and np.isfinite(summary["model_change_l2"])
    embs = [m.content["embedding"]["w"].numpy() for m in grid.sent[3:]]
    assert not np.allclose([np.linalg.norm(e) for e in embs], 1.0)  # raw embeddings, not unit-normalised
    assert all(n["embedding_change"] > 0 for n in summary["nodes"].values())  # moved by spreadout only


def test_strategy_rejects_nan_replies_and_keeps_training(caplog):
    cfg = dict(_cfg(), **{"min-train-nodes": 4, "min-available-nodes": 4})
    grid = InProcessGrid(4, cfg, faulty={2})
    with caplog.at_level(logging.WARNING, logger="faceprivacy.federated.flower"):
        summary = _run(grid, cfg)
    assert len(summary["rejected"]) == 2  # node 2 in both rounds
    assert all("NaN" in r["reason"] for r in summary["rejected"])
    assert any("rejected update from node" in rec.message for rec in caplog.records)
    assert summary["model_change_l2"] > 0 and np.isfinite(summary["model_change_l2"])
    assert [r["accepted"] for r in summary["rounds"]] == [3, 3]


def _reply(arr, emb, n=3):
    c = RecordDict({"arrays": ArrayRecord({"a": Array(np.asarray(arr, np.float32))}),
                    "metrics": MetricRecord({"num-examples": n})})
    if emb is not None:
        c["embedding"] = ArrayRecord({"w": Array(np.asarray(emb, np.float32))})
    return c


def test_strategy_checks_replies_against_the_model_not_the_first_reply():
    """A malformed reply that arrives first (3-d embedding, wrong shape) cannot lock honest nodes out."""
    recipe = FedFaceRecipe.from_run_config(_cfg(**{"max-update-norm": 0.0}))
    strat = flower_app.build_strategy(recipe, emb_dim=4)
    strat._current = ArrayRecord({"a": Array(np.zeros(3, np.float32))})
    contents = [_reply(np.ones(3), np.ones(3)),  # wrong embedding size, first
                _reply(np.ones(4), np.ones(4)),  # wrong parameter shape
                _reply(np.ones(3), None),  # no embedding
                _reply(np.ones(3), np.ones(4)), _reply(np.ones(3) * 3, np.ones(4))]  # honest
    msgs = []
    for i, c in enumerate(contents):
        req = Message(content=RecordDict(), dst_node_id=10 + i, message_type="train")
        msgs.append(Message(content=c, reply_to=req))
    arrays, _ = strat.aggregate_train(1, msgs)
    assert arrays is not None and np.allclose(arrays["a"].numpy(), 2.0)  # equal-weight mean of 1 and 3
    reasons = [r["reason"] for r in strat.rejected]
    assert len(reasons) == 3 and "embedding has shape (3,), expected (4,)" in reasons[0]
    assert sorted(int(k) for k in strat.summary_dict()["nodes"]) == [13, 14]


def _honest_final(cfg, n=4):
    grid = InProcessGrid(n - 1, cfg)
    summary = _run(grid, dict(cfg, **{"min-train-nodes": n - 1, "min-available-nodes": n - 1}))
    return summary


def _final_head(out):
    return dict(np.load(out / "flower_head.npz"))


def _attack_run(tmp_path, tamper, **kw):
    cfg = dict(_cfg(**kw), **{"min-train-nodes": 4, "min-available-nodes": 4, "num-server-rounds": 3,
                              "out-dir": str(tmp_path)})
    grid = InProcessGrid(4, cfg, tamper={3: tamper})
    summary = _run(grid, cfg)
    return summary, _final_head(tmp_path), grid


def _shift_arrays(reply, value, multiply=False):
    arr = reply.content["arrays"]
    for k in list(arr.keys()):
        a = arr[k].numpy().astype(np.float32)
        arr[k] = Array((a * value if multiply else a + value).astype(np.float32))


def test_a_node_claiming_1e9_examples_does_not_take_over(tmp_path):
    def attack(reply, rnd, req):
        _shift_arrays(reply, 5.0)
        reply.content["metrics"]["num-examples"] = 10**9

    summary, head, grid = _attack_run(tmp_path, attack)
    init = {k: v.numpy() for k, v in grid.sent[0].content["arrays"].items()}
    moved = np.sqrt(sum(np.sum((head[k] - init[k]) ** 2) for k in init))
    # old server: the global model became the attacker's (moved by 5 per coordinate, norm > 50)
    assert np.isfinite(moved) and moved < 3 * (1.0 / 4) + 0.5
    assert summary["model_change_l2"] > 1e-4  # the honest nodes' model still trains
    assert all(r["accepted"] == 4 and r["clipped"] >= 1 for r in summary["rounds"])


def test_a_1e15_update_is_clipped_and_honest_training_goes_on(tmp_path):
    summary, head, _ = _attack_run(tmp_path, lambda reply, rnd, req: _shift_arrays(reply, 1e15))
    assert all(np.isfinite(v).all() and np.abs(v).max() < 10 for v in head.values()), \
        {k: float(np.abs(v).max()) for k, v in head.items()}
    assert summary["model_change_l2"] > 1e-4 and np.isfinite(summary["model_change_l2"])


@pytest.mark.parametrize("method", ["median", "trimmed-mean"])
def test_median_and_trimmed_mean_ignore_one_outlier(tmp_path, method):
    summary, head, _ = _attack_run(tmp_path, lambda reply, rnd, req: _shift_arrays(reply, 1e15),
                                   **{"aggregation": method, "trim-fraction": 0.25, "max-update-norm": 0.0})
    assert all(np.isfinite(v).all() and np.abs(v).max() < 10 for v in head.values())
    assert summary["model_change_l2"] > 1e-4


def test_malformed_first_reply_does_not_lock_out_honest_nodes(tmp_path):
    def attack(reply, rnd, req):
        reply.content["embedding"] = ArrayRecord({"w": Array(np.ones(3, np.float32))})

    summary, _, _ = _attack_run(tmp_path, attack)
    assert [r["accepted"] for r in summary["rounds"]] == [3, 3, 3]
    assert all(len(r["rejected"]) == 1 and "embedding has shape" in r["rejected"][0]["reason"]
               for r in summary["rounds"])
    assert summary["model_change_l2"] > 1e-4


def test_first_upload_carries_no_template_under_dp():
    """With DP on, a node's first uploaded embedding is a noised step from the server's random start."""
    from faceprivacy.federated.algorithm import init_class_embedding

    def first_round_cosines(**kw):
        cfg = _cfg(**{"num-server-rounds": 1, "min-train-nodes": 8, "min-available-nodes": 8, **kw})
        grid = InProcessGrid(8, cfg)
        _run(grid, cfg)
        recipe = FedFaceRecipe.from_run_config(cfg)
        split = flower_app.get_split(recipe)
        cos = []
        for m, r in zip(grid.sent, grid.replies, strict=True):
            nid = m.metadata.dst_node_id
            feats = flower_app.client_features(recipe, {"partition-id": grid.nodes[nid]}, split)
            from faceprivacy.federated.algorithm import load_head_state_arrays

            load_head_state_arrays(split.head, {k: v.numpy() for k, v in m.content["arrays"].items()})
            t = init_class_embedding(split.head, feats)  # the node's template under the sent model
            e = r.content["embedding"]["w"].numpy()
            cos.append(float(t @ e / np.linalg.norm(e)))
        return np.array(cos)

    clear = first_round_cosines()
    noised = first_round_cosines(**{"dp-clip": 1.0, "dp-noise": 2.0})
    assert clear.mean() > 0.95  # without DP the server receives the template (and fed-server warns)
    assert np.abs(noised).mean() < 0.35


def test_summary_reports_epsilon_of_the_run(tmp_path):
    from faceprivacy.federated.privacy import epsilon

    cfg = _cfg(**{"dp-clip": 1.0, "dp-noise": 2.0, "out-dir": str(tmp_path)})
    summary = _run(InProcessGrid(3, cfg), cfg)
    assert summary["privacy"]["max_uploads_per_node"] == 2
    assert summary["privacy"]["epsilon"] == pytest.approx(epsilon(2.0, 2, 1e-5))
    assert (tmp_path / "flower_head.npz").exists()
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_server_writes_tar_per_round_report(tmp_path, monkeypatch):
    calls = []

    def fake_evaluator(recipe, split):
        def ev(arrays):
            calls.append(1)
            return {"tar@far=0.001": 0.5 + 0.1 * len(calls), "tar@far=0.001_ci95": [0.4, 0.9], "eer": 0.1}
        return ev

    monkeypatch.setattr(flower_app, "server_evaluator", fake_evaluator)
    cfg = _cfg(**{"out-dir": str(tmp_path), "eval-data": "/held/out"})
    summary = _run(InProcessGrid(3, cfg), cfg)
    assert [c["round"] for c in summary["eval_curve"]] == [0, 1, 2]
    html = (tmp_path / "flower_report.html").read_text()
    assert "TAR@FAR=1e-3 per round" in html and "<img" in html
    import json

    lines = [json.loads(ln) for ln in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert lines[-1]["tar@far=1e-3"] == pytest.approx(0.8)


def test_dropped_nodes_are_named_with_flowers_reason():
    """Flower answers for an unavailable node from its own id; the strategy names the sampled node instead."""
    from flwr.app import Error

    strat = flower_app.build_strategy(FedFaceRecipe.from_run_config(_cfg()), emb_dim=4)
    strat._current = ArrayRecord({"a": Array(np.zeros(3, np.float32))})
    strat._sampled = [10, 11, 12]
    ok = Message(content=_reply(np.ones(3) * 0.1, np.ones(4)),
                 reply_to=Message(content=RecordDict(), dst_node_id=10, message_type="train"))
    err = Message(error=Error(code=0, reason="Node Unavailable"),
                  reply_to=Message(content=RecordDict(), dst_node_id=1, message_type="train"))
    strat.aggregate_train(1, [ok, err])
    dropped = {d["node"]: d["reason"] for d in strat.round_log[-1]["dropped"]}
    assert set(dropped) == {11, 12} and "Node Unavailable" in dropped[11]
    assert dropped[12] == "no reply within the round timeout"
    assert strat.round_log[-1]["accepted"] == 1
