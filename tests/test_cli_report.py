"""The shared report page and JSON writer: a verdict on top, readable labels, rounded numbers, n and chance
next to rates, scrolling tables, and valid JSON only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from faceprivacy.core.fileio import atomic_write_json
from faceprivacy.core.jsonio import dumps, json_safe
from faceprivacy.core.report import Card, HtmlReport, fmt_value, label_for, rate_text


def _strict_loads(text: str):
    def bad(tok):
        raise ValueError(f"invalid JSON token {tok}")

    return json.loads(text, parse_constant=bad)


def test_json_writer_turns_nan_and_infinity_into_null(tmp_path):
    obj = {"psnr": float("inf"), "x": [np.float32("nan"), np.int64(3), -math.inf], "p": tmp_path,
           "arr": np.arange(3), "t": (1, 2)}
    p = atomic_write_json(tmp_path / "r.json", obj)
    back = _strict_loads(p.read_text())
    assert back == {"psnr": None, "x": [None, 3, None], "p": str(tmp_path), "arr": [0, 1, 2], "t": [1, 2]}
    assert "Infinity" not in dumps(obj) and "NaN" not in dumps(obj)
    with pytest.raises(TypeError):
        json_safe(object())


def test_numbers_are_rounded_to_their_precision():
    assert fmt_value(0.7142857142857143) == "0.714"
    assert fmt_value(12.3456, label_for("psnr_mean")) == "12.3"
    assert fmt_value(float("nan")) == "n/a" and fmt_value(None) == "n/a"
    assert fmt_value(200000) == "200,000" and fmt_value(7) == "7"
    assert rate_text(5, 7, 0.2) == "0.714 (5/7; chance 0.200)" and fmt_value(0.78) == "0.780"


def test_report_page_puts_the_verdict_first_and_labels_columns():
    rep = HtmlReport("t")
    rep.table([{"method": "riddle", "rank1": 0.7142857142857143, "tar@far=1e-3": 0.5}], n=7, chance=0.2)
    rep.findings(["2 of 2 subjects still matched"], verdict="re-identification after defacing: 2 of 2", level="bad")
    assert rep.small_n(5, "subjects")
    page = rep.render()
    assert page.index("class='findings bad'") < page.index("<table>")
    assert "small sample: n = 5 subjects" in page
    assert "re-identified, rank-1 (rate)" in page and "lower is better" in page and "TAR at FAR 1e-3" in page
    assert "0.714" in page and "0.7142" not in page
    assert "class='scroll'" in page and "n = 7; chance level 0.200" in page


def test_cards_link_their_reports():
    rep = HtmlReport("demo")
    rep.cards([Card("de-identification", "recovered exactly", href="deid/report.html", images=[("before", b"x")])])
    page = rep.render()
    assert "href='deid/report.html'" in page and "recovered exactly" in page and "data:image/png;base64" in page
