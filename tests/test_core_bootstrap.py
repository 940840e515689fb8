"""The identity bootstrap: intervals cover the estimate, widen with fewer identities, keep groups together."""
import numpy as np

from faceprivacy.core.metrics import bootstrap_ci, rate_with_ci


def test_interval_contains_estimate_and_narrows_with_more_identities():
    rng = np.random.default_rng(0)
    small = rng.random(20) < 0.3
    big = rng.random(2000) < 0.3
    e1, lo1, hi1 = bootstrap_ci(small, np.arange(20))
    e2, lo2, hi2 = bootstrap_ci(big, np.arange(2000))
    assert lo1 <= e1 <= hi1 and lo2 <= e2 <= hi2
    assert (hi2 - lo2) < (hi1 - lo1)


def test_groups_resampled_whole():
    # one identity with 100 hits, nine with 100 misses: the interval must be wide (people, not photos)
    vals = np.r_[np.ones(100), np.zeros(900)]
    groups = np.repeat(np.arange(10), 100)
    r = rate_with_ci(vals, groups)
    assert r["n"] == 1000 and r["n_ids"] == 10
    assert r["ci95"][1] - r["ci95"][0] > 0.1
