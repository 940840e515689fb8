"""The CLI surface: every command's help teaches (defaults, examples), takes the shared options before or
after its name, derives its output name from the input, and ends with the same summary."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from faceprivacy.cli import GROUPS, build_parser, main
from faceprivacy.core.cli_inventory import COUNTS, inventory
from faceprivacy.core.options import EXIT_SKIPPED, Summary, derived_path, resolve, run_dir

#: the least each command needs to parse
REQUIRED = {
    "detect": ["a.jpg"], "embed": ["a.jpg"], "verify": ["a.jpg", "b.jpg"],
    "anonymize": ["photo.jpg", "--passphrase-file", "k.txt"], "recover": ["photo_anonymized.jpg", "--passphrase-file", "k.txt"],
    "deface": ["head.nii.gz"], "mri-audit": ["bids"], "unlearn": ["--support", "s.png"],
    "train-deid-surrogate": ["--cache", "c.npz"], "fed-client": ["--superlink", "127.0.0.1:9092", "--image-dir", "me"],
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = sorted(_commands())


def _parse(argv: list[str]) -> argparse.Namespace:
    return resolve(build_parser().parse_args(argv))


def test_top_level_help_groups_every_command_and_has_version(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for title, _ in GROUPS:
        assert f"\n{title}:\n" in text
    assert "other:" not in text, "every command belongs to a group in cli.GROUPS"
    for name in COMMANDS:
        assert re.search(rf"^  {re.escape(name)} ", text, re.M), name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("faceprivacy ")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_shows_defaults_and_examples(name, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([name, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "(default:" in text and "examples:" in text and f"faceprivacy {name}" in text.split("examples:")[1]
    for opt in ("--data", "--threads", "--quiet", "--verbose"):
        assert opt in text


@pytest.mark.parametrize("name", COMMANDS)
def test_shared_options_before_or_after_the_command(name):
    req = REQUIRED.get(name, [])
    before = _parse(["-q", "-v", "--threads", "3", "--data", "DK", name, *req])
    after = _parse([name, *req, "-q", "-v", "--threads", "3", "--data", "DK"])
    for a in (before, after):
        assert (a.quiet, a.verbose, a.threads, a.data) == (True, True, 3, "DK")
    plain = _parse([name, *req])
    assert plain.quiet is False and plain.verbose is False and isinstance(plain.threads, int)


def test_output_names_derive_from_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    assert _parse(["anonymize", "photo.jpg", "--passphrase-file", "k"]).output == Path("photo_anonymized.jpg")
    assert _parse(["anonymize", "photos/", "--passphrase-file", "k"]).output == Path("photos_anonymized")
    assert _parse(["anonymize", "a.png", "b.png", "--passphrase-file", "k"]).output == Path("b.png")  # old form
    assert _parse(["anonymize", "a.png", "-o", "c.png", "--passphrase-file", "k"]).output == Path("c.png")
    assert _parse(["recover", "x_anonymized.png", "--passphrase-file", "k"]).output == Path("x_anonymized_recovered.png")
    assert Path(_parse(["deface", "head.nii.gz"]).output) == Path("head_defaced.nii.gz")
    assert Path(_parse(["deface", "photos"]).output) == Path("photos/derivatives/faceprivacy")
    assert Path(_parse(["unlearn", "--support", "s.png"]).out) == Path("unlearn_taskcnn_unlearned.pt")
    assert Path(_parse(["unlearn", "--support", "s.png", "--model", "m/mine.pt"]).out) == Path("mine_unlearned.pt")
    assert Path(_parse(["embed", "d/a.jpg", "b.jpg"]).out) == Path("d/a_embeddings.npy")
    for cmd, tag in (("eval-deid", "deid"), ("eval-unlearning", "unlearning"), ("eval-verification", "verification"),
                     ("eval-generator", "generator"), ("audit-embeddings", "audit_embeddings"),
                     ("fed-simulate", "fed_simulate"), ("eval-deface", "deface")):
        out = Path(_parse([cmd]).out)
        assert re.fullmatch(rf"eval_{tag}_\d{{4}}-\d\d-\d\d_\d{{4}}", out.name), (cmd, out)
    assert Path(_parse(["eval-deid", "-o", "mine"]).out) == Path("mine")
    assert Path(_parse(["mri-audit", "bids"]).output_dir) == Path("bids/derivatives/faceprivacy")
    assert Path(_parse(["mri-audit", "bids", "res", "participant"]).output_dir) == Path("res")
    assert Path(_parse(["mri-audit", "-o", "res", "bids"]).output_dir) == Path("res")


def test_derived_path_rules(tmp_path):
    assert derived_path("a/b.nii.gz", "defaced") == Path("a/b_defaced.nii.gz")
    assert derived_path("a/b.nii", "defaced", ".nii.gz") == Path("a/b_defaced.nii.gz")
    d = tmp_path / "photos"
    d.mkdir()
    assert derived_path(f"{d}/", "anonymized") == tmp_path / "photos_anonymized"  # beside, never inside
    assert run_dir("eval-deid").name.startswith("eval_deid_")


def test_old_spellings_still_parse():
    a = _parse(["fed-simulate", "--algorithms", "fedface,fedavg"])
    assert a.algorithms == ["fedface", "fedavg"]
    assert _parse(["fed-simulate", "--methods", "fedface", "central"]).algorithms == ["fedface", "central"]
    assert _parse(["mri-audit", "b", "--recognizers", "dlib"]).recognizers == ["dlib"]
    assert _parse(["mri-audit", "b", "--weights", "w.pt"]).weights == "w.pt"
    assert _parse(["audit-embeddings", "--generator-path", "g.pt"]).generator_path == "g.pt"
    assert _parse(["eval-generator", "--weights", "g.pt"]).weights == "g.pt"
    assert _parse(["verify", "a", "b", "--embedder", "dlib", "mobilefacenet"]).embedders == ["dlib", "mobilefacenet"]
    assert _parse(["fed-client", *REQUIRED["fed-client"], "--port", "5"]).port == 5


def test_inventory_is_clean():
    res = inventory(build_parser())
    assert {k: res[k] for k in COUNTS} == {k: [] for k in COUNTS}


def test_summary_lists_outputs_numbers_next_and_exits_3_on_skips(capsys):
    s = Summary("anonymized 3 face(s) in 2 file(s)", written=[f"o/{i}.png" for i in range(7)])
    s.number("faces", 3).number("rate", 0.7142857142857143).then("faceprivacy recover o/")
    assert s.print() == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "o/0.png" in out and "and 2 more" in out and "0.714" in out and "0.7142" not in out
    assert "next" in out and "faceprivacy recover o/" in out
    s.skipped.append("c.png: no face found")
    assert s.print() == EXIT_SKIPPED


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out
