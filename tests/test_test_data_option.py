"""``--test-data ROOT`` on every evaluation command of this area: a root that shares people with the training
identities is refused with exit 2 and one line, before any heavy work."""
from __future__ import annotations

from pathlib import Path

import pytest

from faceprivacy.cli import main


def _root_with(tmp_path: Path, names: list[str]) -> Path:
    from PIL import Image

    root = tmp_path / "other_people"
    for n in names:
        (root / n).mkdir(parents=True)
        Image.new("RGB", (112, 112), (120, 100, 90)).save(root / n / "a.png")
    return root


@pytest.mark.parametrize("cmd", [
    ["eval-verification", "--dataset", "celeba"],
    ["audit-embeddings", "--no-inversion", "--no-probes"],
    ["eval-unlearning", "--task", "identity"],
    ["eval-generator"],
])
def test_test_data_sharing_training_people_exits_2(cmd, datakit, celeba_root, tmp_path, capsys):
    from faceprivacy.core.data import celeba_subset, identity_split

    train_id = identity_split(celeba_subset(celeba_root))["train"].identities[0]
    root = _root_with(tmp_path, [train_id, "somebody_else"])
    rc = main([*cmd, "--data", str(datakit), "--test-data", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "shares 1 identities" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_test_root_exits_2(datakit, tmp_path, capsys):
    rc = main(["eval-verification", "--data", str(datakit), "--test-data", str(tmp_path / "nope"),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "test data folder not found" in capsys.readouterr().err
