"""benchmarks.fed_privacy's report: the privacy-utility plot with an earlier DP setting drawn next to it."""

from __future__ import annotations


def _row(noise: float, eps, tar: float) -> dict:
    ci = {"value": 0.5, "ci95": [0.4, 0.6]}
    return {"noise": noise, "clip": 0.05, "epsilon": eps, "max_uploads": 10, "linkage_rank1": ci,
            "chance_rank1": 0.006, "gender_probe_accuracy": ci, "gender_majority": 0.6, "inversion": None,
            "tar@far=1e-3": tar, "tar@far=1e-3_start": 0.78, "gain_points": 100 * (tar - 0.78)}


def test_report_draws_the_compared_setting(tmp_path):
    from benchmarks.fed_privacy import _report

    res = {"clients": 167, "backbone": "dlib-fc", "rounds": 10, "clients_per_round": 0, "accountant": "rdp",
           "command": "python -m benchmarks.fed_privacy --backbone dlib-fc",
           "rows": [_row(0, "inf", 0.79), _row(1.0, 20.0, 0.785), _row(2.0, 6.0, 0.782)],
           "compare": {"command": "python -m benchmarks.fed_privacy", "backbone": "dlib-level0", "rounds": 30,
                       "clients_per_round": 50, "rows": [_row(0.5, 68.6, 0.779), _row(2.0, 10.7, 0.778)]}}
    _report(res, tmp_path)
    assert (tmp_path / "fed_privacy.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "fed_privacy.html").read_text()
    assert "Compared with" in html and "68.6" in html
