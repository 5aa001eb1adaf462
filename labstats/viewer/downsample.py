"""Fewer points for a chart, keeping the extremes: MinMaxLTTB from tsdownsample (the
algorithm plotly-resampler uses): min/max preselection, then largest-triangle selection."""

from __future__ import annotations

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler, NaNMinMaxLTTBDownsampler

MAX_POINTS = 2000


def downsample(
    idx: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of (idx, values), the first, last and extreme ones kept."""
    if len(idx) <= max_points:
        return idx, values
    x = np.ascontiguousarray(idx, dtype=np.float64)
    y = np.ascontiguousarray(values, dtype=np.float64)
    downsampler = NaNMinMaxLTTBDownsampler() if np.isnan(y).any() else MinMaxLTTBDownsampler()
    # x must be sorted for the algorithm; equal idx values (a resumed run) are fine.
    keep = downsampler.downsample(x, y, n_out=max(max_points, 3))
    return idx[keep], values[keep]
