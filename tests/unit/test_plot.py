"""Notebook plot helpers: figures carry the data they should (real Redis, real Bokeh)."""

import numpy as np
import pytest
from bokeh.models import ColumnDataSource, GlyphRenderer

import labstats
import labstats.plot as lp


@pytest.fixture
def runs(tmp_path, url):
    names = []
    for k in range(3):
        with labstats.Stats(tmp_path / f"r{k}", config={"k": k}) as stats:
            for i in range(20_000):
                stats.log(step=i, loss=float(np.sin(i / 500) * (k + 1)))
            for i in range(30):
                stats.log(step=i * 100, weights=np.full((3, 4), i, dtype=np.float32), note="text")
        names.append(stats.name)
    lab = labstats.connect(url)
    return lab, [lab.run(n) for n in names]


def line_sources(fig):
    return [r.data_source for r in fig.renderers if isinstance(r, GlyphRenderer)]


def test_series_is_downsampled_and_keeps_extremes(runs):
    _, (run, *_) = runs
    (source,) = line_sources(lp.series(run, "loss", max_points=500))
    values = np.asarray(source.data["value"])
    assert len(values) <= 500
    assert values.max() == pytest.approx(1.0, abs=1e-6)
    assert values.min() == pytest.approx(-1.0, abs=1e-6)


def test_overlay_draws_one_line_per_run(runs):
    _, all_runs = runs
    fig = lp.overlay(all_runs, "loss")
    peaks = sorted(max(s.data["value"]) for s in line_sources(fig))
    assert peaks == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)


def test_heatmap_has_one_column_per_step(runs):
    _, (run, *_) = runs
    fig = lp.heatmap(run, "weights")
    (renderer,) = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
    image = renderer.data_source.data["image"][0]
    assert image.shape == (12, 30)  # 12 elements, 30 steps
    assert image[:, 7].tolist() == [7.0] * 12


def test_metadata_table_and_errors(runs):
    _, (run, *_) = runs
    table = lp.metadata_table(run)
    assert isinstance(table.source, ColumnDataSource)
    assert "config.k" in table.source.data["key"]
    with pytest.raises(labstats.LabstatsError, match="not numeric"):
        lp.series(run, "note")
    with pytest.raises(labstats.LabstatsError, match="no tensors"):
        lp.heatmap(run, "loss")
