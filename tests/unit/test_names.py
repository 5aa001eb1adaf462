"""Series names: whatever log(), watch() and add_scalar() accept can be opened in the
viewer (it travels in URL paths); what cannot is refused at the call with a clear error."""

import pytest

import labstats
from labstats.viewer import charts, create_app
from labstats.viewer.sources import Source

ACCEPTED = ["loss", "train/loss", "acc@5", "λ réseau", "a b", "100%", "q?x=1", "#tag", "<b>", "a.b", "...x",
            "x/.hidden", "=1+2", "a\\b", "+", "_private"]  # fmt: skip
REFUSED = [
    "",
    ".",
    "..",
    "a//b",
    "/a",
    "a/",
    "a/./b",
    "a/../b",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "x" * 513,
    "loss-\udcff",  # a file name that is not UTF-8, as os.fsdecode gives it
]


@pytest.mark.parametrize("name", REFUSED, ids=repr)
def test_names_that_cannot_round_trip_are_refused_everywhere(url, tmp_path, name):
    with labstats.Stats(tmp_path / "r") as stats:
        for call in (
            lambda: stats.log(step=1, **{name: 1.0}),
            lambda: stats.watch(1.0, name),
            lambda: stats.add_scalar(name, 1.0),
            lambda: stats.write_immediate(1.0, name, 0, 0, 0),
        ):
            with pytest.raises(ValueError, match="invalid series name"):
                call()
        stats.log(step=2, ok=1.0)  # the run goes on
    assert labstats.connect(url).run(stats.run_id).series_names() == ["ok"]


def test_every_accepted_name_opens_in_the_viewer(url, tmp_path):
    with labstats.Stats(tmp_path / "r") as stats:
        for n, name in enumerate(ACCEPTED):
            stats.log(step=n, **{name: float(n)})
    client = create_app({"local": Source("local", url)}).test_client()
    for n, name in enumerate(ACCEPTED):
        path = charts.series_url("local", stats.run_id, name)
        answer = client.get(path)
        assert answer.status_code == 200, (name, path)
        assert answer.json["values"] == [float(n)], name
    page = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert page.count('class="chart-spec"') == len(ACCEPTED)
