"""The demo's quick parts run from the bundled defaults (a refactor must not break `make demo`)."""
from faceprivacy import demo


def test_demo_unlearn_and_deid_parts_run(datakit, tmp_path):
    rc = demo.main(["--data", str(datakit), "--out", str(tmp_path / "demo"), "--only", "unlearn", "deid"])
    assert rc == 0
    assert (tmp_path / "demo" / "index.html").is_file()
    assert (tmp_path / "demo" / "unlearn" / "report.html").is_file()
