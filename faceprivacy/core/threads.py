"""CPU thread limits shared by the commands."""

from __future__ import annotations

import functools


def one_blas_thread(fn):
    """Run ``fn`` with BLAS (numpy's OpenBLAS) limited to one thread, restored afterwards. The donor morph does
    many small matrix products (colour spaces, landmark maps) on ~200-px crops, where a second BLAS thread costs
    more than it gives: on a busy 2-core machine its waiting made the same photos take 3.5x the time
    (docs/benchmarks.md, "BLAS threads") and a video's donor CPU time 2-3x (docs/video.md, third run). Torch's
    own threads (detection, embeddings) are not touched. Without ``threadpoolctl`` (scikit-learn's dependency,
    normally installed) ``fn`` runs unchanged."""

    @functools.wraps(fn)
    def wrapped(*a, **k):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return fn(*a, **k)
        with threadpool_limits(1, user_api="blas"):
            return fn(*a, **k)

    return wrapped
