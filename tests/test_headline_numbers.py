"""docs/NUMBERS.md cannot drift from the committed result JSONs (tools/headline_numbers.py); standard library only."""

import json

from tools import headline_numbers as hn


def test_every_referenced_json_parses():
    for s in hn.SOURCES:
        p = hn.ROOT / s.file
        if p.exists():
            json.loads(p.read_text())  # raises on a broken file


def test_every_key_path_resolves():
    """A row of a committed, non-pending JSON that names a missing key is a stale table in the tool."""
    assert hn.problems() == []


def test_numbers_md_is_up_to_date():
    text = hn.render()
    current = (hn.ROOT / hn.OUT).read_text()
    assert current == text, "docs/NUMBERS.md is out of date: run python -m tools.headline_numbers and commit it"


def test_missing_json_is_listed_as_not_yet_measured(tmp_path):
    text = hn.render(tmp_path)  # an empty repo root: no JSON at all
    assert "## Not yet measured" in text
    for s in hn.SOURCES:
        assert f"`{s.file}` — not yet measured" in text


def test_resolve_selects_list_elements_and_reports_missing_keys():
    data = {"summary": [{"K": 5, "m": "a", "ToW": 0.9, "ToW_ci95": [0.8, 1.0]}, {"K": 10, "m": "a", "ToW": 0.7}]}
    row = hn.Row("t", ("summary", {"K": 5, "m": "a"}, "ToW"), n=3, n_label="seeds")
    assert hn.measure(data, row) == {"value": "0.900", "ci": "[0.800, 1.000]", "n": "3 seeds"}
    try:
        hn.measure(data, hn.Row("t", ("summary", {"K": 7}, "ToW")))
    except hn.MissingKey:
        pass
    else:
        raise AssertionError("a selector that matches nothing must raise MissingKey")
