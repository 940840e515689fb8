"""eval-deid on a tiny slice of the held-out identities (tiny random generator): the report is written and
the numbers are internally consistent (originals re-identify, the mask baseline does not, exact recovery)."""

from __future__ import annotations

import json

from deid_tiny import TinyGenerator, tiny_encryptor

from faceprivacy.deid.evaluate import evaluate_deid
from faceprivacy.deid.methods import Riddle


def test_eval_deid_small(datakit, tmp_path):
    res = evaluate_deid(datakit, tmp_path, n_ids=2, per_id=2, embedders=["mobilefacenet"], attributes=False,
                        riddle=Riddle(TinyGenerator(), tiny_encryptor()), record_check=2, grid_rows=2, max_distractors=12)
    assert (tmp_path / "eval_deid.html").stat().st_size > 1000
    saved = json.loads((tmp_path / "eval_deid.json").read_text())
    m = saved["identity"]["mobilefacenet"]
    assert m["originals"]["rank1"] >= 0.5  # real photos of the same people are found
    assert m["mask"]["verif_vs_source"] <= 0.5  # a grey ellipse is not the person
    assert saved["record_roundtrip"]["bit_exact"] == 1.0
    assert saved["record_roundtrip"]["wrong_passphrase_rejected"] == 1.0
    assert res["riddle_latent_roundtrip_max_abs_err"] < 1e-9
    assert res["n_gallery_identities"] == 2 + 12
    # unblended rows and the surroundings controls are reported next to the blended ones
    assert {"riddle_unblended", "wrong_key_unblended", "control_swap_real", "control_swap_recon"} <= set(m)
    assert "diversity_keyA_vs_keyB_verified" in m["riddle_unblended"]
    assert m["control_grey_same"]["two_outputs_verified_same"] == 1.0  # identical images


def test_surroundings_control_donors_are_other_people():
    import numpy as np

    from faceprivacy.deid.evaluate import _donors

    y = np.repeat(np.arange(5), 2)
    d1, d2 = _donors(y, seed=0)
    assert (y[d1] != y).all() and (y[d2] != y).all() and (y[d1] != y[d2]).all()
