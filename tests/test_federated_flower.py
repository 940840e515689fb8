"""Flower apps: the FedFace strategy on an in-process grid (fast) and on the real deployment engine."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402

from faceprivacy.federated import flower_app  # noqa: E402
from faceprivacy.federated.flower_app import DEFAULT_RUN_CONFIG, run_server  # noqa: E402


class InProcessGrid(Grid):
    """A Grid that calls the ClientApp's train function directly (no network): strategy + client logic."""

    def __init__(self, n_nodes: int, run_config: dict, faulty: set[int] = frozenset()) -> None:
        self.nodes = {1000 + i: i for i in range(n_nodes)}
        self.run_config = run_config
        self.faulty = faulty
        self.sent: list[Message] = []

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
        for m in messages:
            self.sent.append(m)
            nid = m.metadata.dst_node_id
            ctx = Context(run_id=1, node_id=nid, node_config={"partition-id": self.nodes[nid]},
                          state=RecordDict(), run_config=self.run_config)
            r = flower_app.client_train(m, ctx)
            if self.nodes[nid] in self.faulty:  # a broken client: NaN parameters
                arr = r.content["arrays"]
                k = next(iter(arr.keys()))
                bad = arr[k].numpy().copy()
                bad.flat[0] = np.nan
                arr[k] = Array(bad)
            replies.append(r)
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
    cfg = dict(DEFAULT_RUN_CONFIG)
    cfg.update({"num-server-rounds": 2, "min-train-nodes": 3, "min-available-nodes": 3, "lr": 0.5,
                "local-steps": 2})
    cfg.update(kw)
    return cfg


def test_strategy_in_process_sends_each_node_its_own_embedding():
    cfg = _cfg()
    grid = InProcessGrid(3, cfg)
    summary = run_server(grid, cfg)
    assert summary["model_change_l2"] > 1e-4
    assert len(summary["nodes"]) == 3
    for node in summary["nodes"].values():
        assert node["updates"] == 2 and node["embedding_change"] > 0
    # round 1 carries no embedding (clients initialise), round 2 carries each node's own one
    r1, r2 = grid.sent[:3], grid.sent[3:]
    assert all("embedding" not in m.content for m in r1)
    embs = {m.metadata.dst_node_id: m.content["embedding"]["w"].numpy() for m in r2}
    assert len(embs) == 3
    vals = list(embs.values())
    assert not np.allclose(vals[0], vals[1]) and not np.allclose(vals[1], vals[2])


def test_strategy_euclidean_geometry_with_server_adam():
    cfg = _cfg(**{"geometry": "euclidean", "embedding-lr": 0.0, "server-opt": "adam", "server-lr": 1e-3,
                  "margin": 0.5, "spread-margin": 100.0, "lr": 0.05})
    grid = InProcessGrid(3, cfg)
    summary = run_server(grid, cfg)
    assert summary["model_change_l2"] > 1e-4 and np.isfinite(summary["model_change_l2"])
    embs = [m.content["embedding"]["w"].numpy() for m in grid.sent[3:]]
    assert not np.allclose([np.linalg.norm(e) for e in embs], 1.0)  # raw embeddings, not unit-normalised
    assert all(n["embedding_change"] > 0 for n in summary["nodes"].values())  # moved by spreadout only


def test_strategy_rejects_nan_replies_and_keeps_training(caplog):
    cfg = _cfg()
    grid = InProcessGrid(4, dict(cfg, **{"min-train-nodes": 4, "min-available-nodes": 4}), faulty={2})
    with caplog.at_level(logging.WARNING, logger="faceprivacy.federated.flower"):
        summary = run_server(grid, dict(cfg, **{"min-train-nodes": 4, "min-available-nodes": 4}))
    assert len(summary["rejected"]) == 2  # node 2 in both rounds
    assert all("NaN" in r["reason"] for r in summary["rejected"])
    assert any("rejected update from node" in rec.message for rec in caplog.records)
    assert summary["model_change_l2"] > 0 and np.isfinite(summary["model_change_l2"])
    assert len(summary["nodes"]) == 3


def test_strategy_rejects_malformed_reply():
    strat = flower_app.build_strategy(_cfg())
    strat._current = ArrayRecord({"a": Array(np.zeros(3, np.float32))})
    good = RecordDict({"arrays": ArrayRecord({"a": Array(np.ones(3, np.float32))}),
                       "embedding": ArrayRecord({"w": Array(np.ones(4, np.float32))}),
                       "metrics": MetricRecord({"num-examples": 3})})
    wrong_shape = RecordDict({"arrays": ArrayRecord({"a": Array(np.ones(4, np.float32))}),
                              "embedding": ArrayRecord({"w": Array(np.ones(4, np.float32))}),
                              "metrics": MetricRecord({"num-examples": 3})})
    no_emb = RecordDict({"arrays": ArrayRecord({"a": Array(np.ones(3, np.float32))}),
                         "metrics": MetricRecord({"num-examples": 3})})
    msgs = []
    for i, c in enumerate([good, wrong_shape, no_emb]):
        req = Message(content=RecordDict(), dst_node_id=10 + i, message_type="train")
        msgs.append(Message(content=c, reply_to=req))
    arrays, _ = strat.aggregate_train(1, msgs)
    assert arrays is not None and np.allclose(arrays["a"].numpy(), 1.0)
    assert len(strat.rejected) == 2 and len(strat.W) == 1


@pytest.mark.network
def test_deployment_engine_superlink_and_three_supernodes(tmp_path):
    from faceprivacy.federated.deploy import LocalFederation

    fed = LocalFederation(tmp_path, host="127.0.0.1", insecure=True)
    try:
        fed.start_superlink()
        for i in range(3):
            fed.start_supernode({"partition-id": i})
        summary = fed.run_app(_cfg(), timeout=240)
    finally:
        fed.stop()
    assert all(p.poll() is not None for _, p in fed.procs)
    assert summary["num_rounds"] == 2
    assert summary["model_change_l2"] > 1e-4
    assert len(summary["nodes"]) == 3
    for node in summary["nodes"].values():
        assert node["updates"] == 2 and node["embedding_change"] > 0
    assert [r["accepted"] for r in summary["rounds"]] == [3, 3]
