"""Atomic multi-file writes: an image and its sidecar record are one unit, even when the writer is killed.

A child process writes pair A (image + sidecar) and then pair B to the same name, and is SIGKILLed at
every fsync and rename of the second write in turn. Whatever it leaves behind, the reader either gets a
pair that belongs together (both A or both B) or refuses with InputError; never B's image with A's
record (which ``recover --allow-modified`` would have pasted into the wrong photo). The next write to
the same name removes the dead writer's temp files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from faceprivacy.core.errors import InputError
from faceprivacy.core.fileio import atomic_write_many, check_output
from faceprivacy.deid.pipeline import read_anonymized, record_id, write_anonymized
from faceprivacy.deid.record import sidecar_path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from faceprivacy.deid.pipeline import write_anonymized
    dest, kill_at = sys.argv[1], int(sys.argv[2])
    a = np.zeros((64, 64, 3), np.uint8)
    a[..., 0] = np.arange(64)[None, :] * 2
    a[..., 1] = 40
    b = 255 - a
    write_anonymized(dest, a, b"record A" * 50)
    calls = [0]
    def hook(real):
        def f(*args, **kw):
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            return real(*args, **kw)
        return f
    os.fsync, os.replace = hook(os.fsync), hook(os.replace)
    write_anonymized(dest, b, b"record B" * 50)
    print("calls", calls[0])
""")


def _run(dest: Path, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), str(dest), str(kill_at)],
                          capture_output=True, text=True, timeout=120)


def test_kill_during_image_and_sidecar_write(tmp_path: Path) -> None:
    ref = _run(tmp_path / "ref.jpg", -1)
    assert ref.returncode == 0, ref.stderr
    n_calls = int(ref.stdout.split()[-1])
    assert n_calls >= 4  # 2 fsyncs of files, 2 renames (+ folder fsyncs)
    states = {"A": 0, "B": 0, "refused": 0}
    for k in range(n_calls):
        dest = tmp_path / f"k{k}" / "photo.jpg"
        dest.parent.mkdir()
        res = _run(dest, k)
        assert res.returncode == -signal.SIGKILL, (k, res.stderr)
        try:
            img, rec = read_anonymized(dest)
        except InputError as e:
            assert "does not belong" in str(e), str(e)
            states["refused"] += 1
            continue
        # a pair was returned: image and record must be the same write's
        which = "A" if rec.startswith(b"record A") else "B"
        expected = np.zeros((64, 64, 3), np.uint8)
        expected[..., 0] = np.arange(64)[None, :] * 2
        expected[..., 1] = 40
        if which == "B":
            expected = 255 - expected
        assert np.abs(img.astype(int) - expected).mean() < 4, (k, which)  # JPEG noise only
        states[which] += 1
        # the dead writer's temp files are swept by the next write to the same name
        write_anonymized(dest, expected, b"record C" * 50)
        assert not [p for p in dest.parent.iterdir() if ".tmp" in p.name], k
    assert states["A"] >= 1 and states["B"] >= 0 and sum(states.values()) == n_calls
    assert states["refused"] >= 1  # the kill between the two renames is caught by the record id


def test_refused_pair_is_swept_and_rewritten(tmp_path: Path) -> None:
    dest = tmp_path / "x.jpg"
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    write_anonymized(dest, img, b"one" * 40)
    sidecar_path(dest).write_bytes(b"two" * 40)  # a sidecar from another write
    with pytest.raises(InputError, match="does not belong"):
        read_anonymized(dest)
    write_anonymized(dest, img, b"three" * 40)
    _, rec = read_anonymized(dest)
    assert record_id(rec) == record_id(b"three" * 40)


def test_failed_unit_write_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "old.bin").write_bytes(b"old")

    (tmp_path / "afile").write_text("a file")
    with pytest.raises(InputError, match="is a file"):
        atomic_write_many([(tmp_path / "old.bin", b"new"), (tmp_path / "afile" / "x", b"y")])
    with pytest.raises(InputError, match="is a file"):
        atomic_write_many([(tmp_path / "new.bin", b"new"), (tmp_path / "afile" / "x", b"y")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "old.bin"]
    assert (tmp_path / "old.bin").read_bytes() == b"old"


def test_stale_temp_of_dead_process_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.json.{dead}.abc123.tmp.json"
    stale.write_text("{")
    live = tmp_path / f".out.json.{os.getppid()}.abc123.tmp.json"  # a running process: kept
    live.write_text("{")
    from faceprivacy.core.fileio import atomic_write_json

    atomic_write_json(tmp_path / "out.json", {"a": float("inf")})
    assert not stale.exists() and live.exists()
    assert (tmp_path / "out.json").read_text().strip().endswith("}")
    assert '"a": null' in (tmp_path / "out.json").read_text()


def test_check_output_refusals(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is the input"):
        check_output(tmp_path / "d" / ".." / "f", [tmp_path / "f"])
    with pytest.raises(InputError, match="folder"):
        check_output(tmp_path / "d")
    with pytest.raises(InputError, match="is a file"):
        check_output(tmp_path / "f" / "x.png")
    if os.geteuid() != 0:
        os.chmod(tmp_path / "d", 0o555)
        try:
            with pytest.raises(InputError, match="not writable"):
                check_output(tmp_path / "d" / "x.png")
        finally:
            os.chmod(tmp_path / "d", 0o755)
