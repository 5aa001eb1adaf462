"""The run page's System group (labstats.viewer.system_group): the run's sys/ series, logged by
the real logger's sampler (NVML a stand-in, psutil and Redis real), drawn after the run's own
metrics on a wall-clock axis, in sections (box, processes, each GPU), in readable units, with
the samplers' status texts as lines of text; the run's own metrics keep their step axis."""

import json
import re
import sys

import pytest
from conftest import wait_for
from test_system_metrics import FakeNvml

import labstats
from labstats.viewer import create_app, system_group
from labstats.viewer.sources import Source


@pytest.fixture
def client(url):
    app = create_app({"local": Source("local", url)})
    app.testing = True
    return app.test_client()


@pytest.fixture
def sampled_run(tmp_path, url, lab, monkeypatch):
    """A finished run of a few steps with system metrics of two (stand-in) GPUs."""
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus=2))
    with labstats.Stats(tmp_path / "run", system_metrics=0.05, flush_interval=0.05) as stats:
        for step in range(5):
            stats.log(step=step, loss=1.0 / (step + 1))

        def sampled():
            stats.flush()
            names = lab.run(stats.run_id).series_names()
            return "sys/gpu1/util_percent" in names and "sys/proc_rss_bytes" in names

        assert wait_for(sampled)
    return stats.run_id


def _specs(html: str, within: str) -> dict[str, dict]:
    """The chart specs (by series name) of the page's part ``within`` (an element's id)."""
    start = html.index(f'id="{within}"')
    part = html[start:]
    names = re.findall(r'<div class="chart" data-name="([^"]+)"', part)
    blocks = re.findall(
        r'<script type="application/json" class="(?:chart|system)-spec">(.*?)</script>', part, re.S
    )
    return dict(zip(names, (json.loads(b) for b in blocks), strict=False))


def _axis_types(spec: dict) -> set[str]:
    text = json.dumps(spec)
    return {t for t in ("DatetimeAxis", "LinearAxis") if t in text}


def test_the_system_group_comes_after_the_run_metrics_on_a_wall_clock_axis(client, sampled_run):
    html = client.get(f"/runs/local/{sampled_run}").get_data(as_text=True)
    assert html.index('id="run-charts"') < html.index('id="run-system"')
    own = html[html.index('id="run-charts"') : html.index('id="run-tensors"')]
    assert 'data-name="loss"' in own
    assert "sys/" not in own
    system = html[html.index('id="run-system"') :]
    sections = re.findall(r'<section class="system-section" data-section="([^"]+)"', system)
    assert sections == ["Box", "This run&#39;s processes", "GPU 0", "GPU 1"]
    # GPU 0's charts together in its section, utilisation first.
    gpu0 = system[system.index('data-section="GPU 0"') : system.index('data-section="GPU 1"')]
    assert re.findall(r'data-name="(sys/gpu\d/[a-z_]+)"', gpu0)[:2] == [
        "sys/gpu0/util_percent",
        "sys/gpu0/memory_used_bytes",
    ]
    assert "sys/gpu1/" not in gpu0
    # Wall-clock dates for the System charts, the step axis for the run's own.
    specs = _specs(html, "run-system")
    assert specs
    assert all(_axis_types(s) == {"DatetimeAxis", "LinearAxis"} for s in specs.values())
    assert all("wall-clock time" in json.dumps(s) for s in specs.values())
    assert _axis_types(_specs(html, "run-charts")["loss"]) == {"LinearAxis"}
    # Readable units: bytes in binary units on the y axis and in the head, percent, watts.
    memory = json.dumps(specs["sys/gpu0/memory_total_bytes"])
    assert "CustomJSTickFormatter" in memory
    assert "GiB" in memory
    head = re.search(r'data-name="sys/gpu0/memory_total_bytes".*?<span class="latest">([^<]*)<', system, re.S)
    assert head.group(1) == "80.0 GiB"
    power = re.search(r'data-name="sys/gpu1/power_watts".*?<span class="latest">([^<]*)<', system, re.S)
    assert power.group(1) == "250.0 W"
    # The status texts as lines of text, never a chart.
    assert "sys/gpu_status" not in specs
    status = re.search(r'data-name="sys/gpu_status"><span class="muted">sys/gpu_status</span> '
                       r'<span class="status-text">([^<]*)<', system)  # fmt: skip
    assert status.group(1).startswith("2 GPU(s) through NVML, driver 550.54.15")


def test_the_system_group_json_and_the_run_charts_json(client, sampled_run):
    answer = client.get(f"/runs/local/{sampled_run}/system").get_json()
    assert answer["live"] is False
    titles = [s["title"] for s in answer["sections"]]
    assert titles == ["Box", "This run's processes", "GPU 0", "GPU 1"]
    plots = {p["name"]: p for s in answer["sections"] for p in s["plots"]}
    assert plots["sys/gpu1/util_percent"]["latest"] == "41.0 %"
    assert plots["sys/gpu0/used_by_run"]["latest"] in ("yes", "no")
    assert plots["sys/proc_rss_bytes"]["unit"] == "bytes"
    assert plots["sys/proc_rss_bytes"]["csv"].endswith("/csv/sys/proc_rss_bytes")
    # The same targets as the page's (the page adds only the charts it lacks).
    html = client.get(f"/runs/local/{sampled_run}").get_data(as_text=True)
    assert f'id="{plots["sys/gpu1/util_percent"]["target"]}"' in html
    assert [s["name"] for s in answer["statuses"]] == ["sys/gpu_status"]
    # The run's own charts (what viewer.js redraws) hold none of them.
    charts = client.get(f"/runs/local/{sampled_run}/charts").get_json()
    assert [p["name"] for p in charts["plots"]] == ["loss"]


def test_the_system_group_without_specs_is_its_counts_and_values(client, sampled_run):
    whole = client.get(f"/runs/local/{sampled_run}/system")
    light = client.get(f"/runs/local/{sampled_run}/system?specs=0")
    plots = [p for s in light.get_json()["sections"] for p in s["plots"]]
    assert plots
    assert all(p["spec"] is None and p["latest"] and p["count"] for p in plots)
    assert len(light.data) * 10 < len(whole.data)  # what a page asks for while the run runs


def test_a_run_without_system_series_has_no_system_group(client, tmp_path):
    with labstats.Stats(tmp_path / "plain", system_metrics=False) as stats:
        stats.log(step=0, loss=1.0)
    html = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert 'id="run-system"' not in html
    assert client.get(f"/runs/local/{stats.run_id}/system").get_json()["sections"] == []


def test_status_texts_are_bounded_and_escaped(client, tmp_path):
    hostile = "<script>alert(1)</script>" + "x" * 1_000_000
    # console=False: what else the test process printed (a warning quoting the text) stays off the page
    with labstats.Stats(tmp_path / "hostile", system_metrics=False, console=False) as stats:
        stats.log(step=0, loss=1.0, **{"sys/host_status": hostile, "sys/cpu_percent": 12.5})
    response = client.get(f"/runs/local/{stats.run_id}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html
    assert "x" * (system_group.MAX_STATUS_CHARS + 1) not in html
    answer = client.get(f"/runs/local/{stats.run_id}/system").get_json()
    (status,) = answer["statuses"]
    assert len(status["text"]) == system_group.MAX_STATUS_CHARS


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("sys/gpu0/memory_used_bytes", 1.5 * 2**30, "1.5 GiB"),
        ("sys/proc_rss_bytes", 300 * 2**20, "300.0 MiB"),
        ("sys/spool_free_bytes", 512, "512 B"),
        ("sys/net_recv_bytes_per_s", 2048, "2.0 KiB/s"),
        ("sys/cpu_percent", 37.25, "37.2 %"),
        ("sys/gpu3/temperature_celsius", 61, "61.0 °C"),
        ("sys/gpu0/used_by_run", 1.0, "yes"),
        ("sys/proc_threads", 12.0, "12"),
        ("sys/cpu_percent", float("nan"), "nan"),
    ],
)
def test_units_are_readable(name, value, shown):
    assert system_group.readable(value, system_group.unit_of(name)) == shown


def test_sections_order_box_processes_then_gpus_by_number():
    names = ["sys/gpu10/util_percent", "sys/proc_rss_bytes", "sys/gpu2/util_percent", "sys/cpu_percent"]
    keyed = sorted(names, key=lambda n: system_group.section_of(n)[0])
    assert [system_group.section_of(n)[1] for n in keyed] == [
        "Box",
        "This run's processes",
        "GPU 2",
        "GPU 10",
    ]
