"""``faceprivacy serve`` in a real browser: headless Chromium (Debian's ``chromium``) loads the result page of a
photo anonymized through the page's endpoint and its screenshot shows a before/after pair (skipped without
chromium; blur keeps it to a few seconds). ``python -m faceprivacy.deid.web_screenshot`` makes the committed
docs/serve_screenshot.png the same way, with the default method."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faceprivacy.deid.web_screenshot import find_chromium, make_screenshot

pytestmark = [pytest.mark.network, pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")]


def test_result_page_screenshot_shows_a_before_after_pair(tmp_path) -> None:
    out = tmp_path / "shot.png"
    res = make_screenshot(out, method="blur", size=(1000, 1000))
    assert res["faces"] == 1
    shot = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    assert shot.shape == (1000, 1000, 3)
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 2000, "blank screenshot"
    # the two photos sit side by side in the lower half: both halves are busy (not page background),
    # and they differ where the face was blurred
    low = shot[560:]
    left, right = low[:, :500], low[:, 500:]
    assert left.std() > 30 and right.std() > 30, "a photo of the pair did not render"
    assert np.abs(left.astype(int) - right[:, :500]).mean() > 2
