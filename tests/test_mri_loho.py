"""Leave-one-head-out attack evaluation: the held-out person's scans never reach the training set."""

from __future__ import annotations

import numpy as np
import pytest

from faceprivacy.mri.loho import DEFACERS, PEOPLE, markdown, summarise, training_boxes


def _boxes(people: dict[str, tuple[str, ...]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny synthetic face boxes, one distinct constant per scan."""
    scans = [s for v in people.values() for s in v]
    return {s: (np.full((4, 3, 2), float(i + 1), np.float32), np.ones((4, 3, 2), bool)) for i, s in enumerate(scans)}


def test_held_out_person_never_in_training_set() -> None:
    boxes = _boxes(PEOPLE)
    for person, scans in PEOPLE.items():
        names, heads, fovs = training_boxes(boxes, PEOPLE, person)
        assert not set(names) & set(scans)
        assert len(heads) == len(fovs) == sum(len(v) for p, v in PEOPLE.items() if p != person)
        for s in scans:  # not even an identical array slips in
            assert not any(np.array_equal(h, boxes[s][0]) for h in heads)
    # Colin27's two scans are one person: both leave together
    names, _, _ = training_boxes(boxes, PEOPLE, "colin27")
    assert not any("colin27" in n for n in names)


def test_scan_listed_under_two_people_is_refused() -> None:
    people = {"a": ("x",), "b": ("x", "y")}
    with pytest.raises(ValueError):
        training_boxes(_boxes({"a": ("x",), "b": ("y",)}), people, "a")


def test_summary_reports_n_mean_sd() -> None:
    per = {p: {m: {"defaced": 1.0 + i, "attacked": 2.0 * i} if m == "reface" else
               {"defaced": 1.0 + i, "attacked": 2.0 * i, "baseline_avgface": 0.5} for m in DEFACERS}
           for i, p in enumerate(["p1", "p2", "p3"])}
    s = summarise(per, ["p1", "p2", "p3"])
    assert s["mask"]["defaced"]["n"] == 3
    assert s["mask"]["defaced"]["mean"] == pytest.approx(2.0)
    assert s["mask"]["defaced"]["sd"] == pytest.approx(1.0)
    res = {"steps": 1, "batch": 1, "threads": 1, "seed": 0, "wall_s": 1.0, "per_person": per,
           "summary": {"all": s, "individuals": summarise(per, ["p2", "p3"])},
           "folds": {p: {"train_scans": ["x"]} for p in per}}
    md = markdown(res)
    assert "| mask | 3 | 2.00 ± 1.00 |" in md


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys) -> None:
    from faceprivacy.mri.loho import main

    assert main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "0"]) == 2
    assert not (tmp_path / "o").exists()
    assert "error:" in capsys.readouterr().err
