"""Fewer points for a chart, keeping the extremes: MinMaxLTTB from tsdownsample (the
algorithm plotly-resampler uses): min/max preselection, then largest-triangle selection.

    idx, values = downsample(idx, values)          # at most MAX_POINTS points

tsdownsample is Rust: on data it does not expect (20,000 points at one idx, a zoom into a
resumed run's repeated steps) it panics, and a Rust panic reaches Python as a BaseException
(pyo3's PanicException), which nothing above catches: the worker died and the page answered
502. A panic, or any error of the library, falls back to min_max_buckets (numpy).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler, NaNMinMaxLTTBDownsampler

log = logging.getLogger(__name__)

MAX_POINTS = 2000


def downsample(
    idx: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of (idx, values), the first, last and extreme ones kept."""
    if len(idx) <= max_points:
        return idx, values
    x = np.ascontiguousarray(idx, dtype=np.float64)
    y = np.ascontiguousarray(values, dtype=np.float64)
    if not x[-1] > x[0]:  # one idx only (or NaN): the case known to panic, answered directly
        keep = min_max_buckets(y, max_points)
        return idx[keep], values[keep]
    downsampler = NaNMinMaxLTTBDownsampler() if np.isnan(y).any() else MinMaxLTTBDownsampler()
    # x must be sorted for the algorithm; equal idx values (a resumed run) are fine.
    try:
        keep = downsampler.downsample(x, y, n_out=max(max_points, 3))
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pyo3's PanicException is a BaseException
        log.warning("tsdownsample failed (%s: %s); min/max buckets instead", type(exc).__name__, exc)
        keep = min_max_buckets(y, max_points)
    return idx[keep], values[keep]


def min_max_buckets(values: np.ndarray, max_points: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``values``: the first and last, and the
    lowest and highest of each of equal buckets between them (NaNs ignored)."""
    n = len(values)
    buckets = max(1, (max_points - 2) // 2)
    starts = np.linspace(1, n - 1, buckets, endpoint=False).astype(np.int64)
    clean = np.where(np.isnan(values), 0.0, values)
    low = np.where(np.isnan(values), np.inf, clean)
    high = np.where(np.isnan(values), -np.inf, clean)
    edges = np.append(starts, n - 1)
    picks = [0, n - 1]
    for a, b in itertools.pairwise(edges.tolist()):
        if b > a:
            picks += [a + int(np.argmin(low[a:b])), a + int(np.argmax(high[a:b]))]
    return np.unique(np.asarray(picks, dtype=np.int64))[:max_points]
