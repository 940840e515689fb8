"""Pooling eval-deid runs' two-keys results (``deid.evaluation.pool``)."""

import json

import numpy as np
import pytest

from faceprivacy.core.errors import InputError
from faceprivacy.deid.evaluation.pool import main, pool_two_keys


def _run(cos: list[float], root: str = "/a/datakit", thr: float = 0.5, pairs: int = 1) -> dict:
    paths = [f"{root}/celeba_subset_aligned112/images/{i // 2}/{i}.jpg" for i in range(len(cos) // pairs)]
    idm = {"two_keys_cos": cos}
    return {"probe_paths": paths, "thresholds": {"mobilefacenet-onnx": thr},
            "protocols": {"frames": {"donor": {"identity": {"mobilefacenet-onnx": idm}}}}}


def test_pool_counts_every_pair_and_compares_with_independent_runs():
    a = _run([0.9, 0.1, 0.1, 0.1, 0.1, 0.1])
    b = _run([0.9, 0.9, 0.1, 0.1, 0.1, 0.1], root="/other/root")  # other data root, same probes
    r = pool_two_keys([a, b], ["a", "b"])["recognizers"]["mobilefacenet-onnx"]
    assert r["pooled"]["value"] == pytest.approx(3 / 12) and r["pooled"]["n"] == 12 and r["pooled"]["n_ids"] == 3
    assert r["per_run"] == {"a": pytest.approx(1 / 6), "b": pytest.approx(2 / 6)}
    assert r["faces_linked_k_times"] == [4, 1, 1]
    exp = np.array(r["expected_if_independent"])
    assert exp.sum() == pytest.approx(6, abs=0.02) and exp[2] == pytest.approx(6 * (1 / 6) * (2 / 6), abs=0.01)


def test_pool_refuses_other_probes_thresholds_and_single_runs(tmp_path, capsys):
    a = _run([0.9, 0.1, 0.1, 0.1])
    with pytest.raises(InputError, match="at least two"):
        pool_two_keys([a], ["a"])
    with pytest.raises(InputError, match="other probe photos"):
        pool_two_keys([a, _run([0.9, 0.1])], ["a", "b"])
    with pytest.raises(InputError, match="threshold"):
        pool_two_keys([a, _run([0.9, 0.1, 0.1, 0.1], thr=0.4)], ["a", "b"])
    p = tmp_path / "a.json"
    p.write_text(json.dumps(a))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main([str(p), str(bad)]) == 2
    assert main([str(p), str(p), "--out", str(p)]) == 2  # never overwrites an input
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)
    assert json.loads(p.read_text()) == a
