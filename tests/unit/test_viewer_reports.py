"""Reports in the viewer (Flask's test client over the real redis-server): the panel syntax,
live panels drawn from the runs as they are when the report is opened, a placeholder for a
run that is gone or in the trash, every version kept and viewable, the list and its search,
the bounds said in a sentence, editors only for changes, storage in the viewer's SQLite file,
and the one-file export from the page and from the CLI."""

import json
import re

import numpy as np
import pytest

import labstats
from labstats import cli, export
from labstats.viewer import create_app, reports
from labstats.viewer.auth import AuthConfig, hash_token
from labstats.viewer.report_store import MAX_BODY_BYTES, MAX_TITLE_CHARS, ReportStore
from labstats.viewer.reports import MAX_PANELS, PanelError, parse_panel
from labstats.viewer.sources import Source

HOSTILE = (
    "# Findings\n\n<script>window.pwned = 1</script>\n\n<img src=x onerror=alert(1)>\n\n"
    "[click me](javascript:alert(1)) and [the paper](https://example.org/p)\n"
)
TOKENS = {"editor": "e" * 40, "reader": "r" * 40}


def log_run(tmp_path, name: str, k: int, steps: int = 100) -> str:
    with labstats.Stats(
        tmp_path / name, name=name, config={"lr": 0.1 * (k + 1), "seed": k, "opt": "adam"}
    ) as s:
        idx = np.arange(steps)
        for i in idx:
            s.log(step=int(i), loss=float(1 / (i + 1) + k), acc=float(i) / steps)
        for step in (0, steps // 2, steps - 1):
            s.image("samples", np.full((8, 12, 3), step % 255, np.uint8), step=step)
    return s.run_id


@pytest.fixture
def runs(url, tmp_path):
    return [log_run(tmp_path, f"run-{k}", k) for k in range(3)]


@pytest.fixture
def client(url, runs, tmp_path):
    app = create_app(
        {"local": Source("local", url, annotate_url=url, artifact_dir=str(tmp_path / "artifacts"))}
    )
    app.testing = False
    return app.test_client()


def saved(client, title: str, body: str) -> str:
    answer = client.post("/reports", data={"title": title, "body": body})
    assert answer.status_code == 303, answer.data[:500]
    return answer.headers["Location"]


def panels(*lines: str) -> str:
    return "Text before.\n\n```labstats\n" + "\n".join(lines) + "\n```\n\nText after.\n"


# ---- the syntax --------------------------------------------------------------------------------


def test_a_panel_line_is_a_kind_and_key_values_with_lists_and_quotes():
    panel = parse_panel("compare metric=loss,acc run=local/a run=local/b filter=\"lr < 0.1, opt == 'adam'\"")
    assert panel.kind == "compare"
    assert panel.params["metric"] == ["loss", "acc"]
    assert panel.params["run"] == ["local/a", "local/b"]
    assert panel.params["filter"] == ["lr < 0.1, opt == 'adam'"]  # not a list key: commas kept
    for line, said in [
        ("chrt run=a/b series=x", "unknown panel 'chrt'"),
        ("chart run=a/b", "needs series="),
        ("chart run=a/b series=x colour=red", "not 'colour'"),
        ("chart run=a/b series=x loose", "is not key=value"),
        ('table filter="unclosed', "quote values"),
        ("chart run=a/b,c/d series=x", "at most 1 run"),
        ("media run=a/b name=x steps=" + ",".join(map(str, range(17))), "at most 16 steps"),
        ("chart run=a/b series=" + "x" * 3000, "at most 2,000 characters"),
    ]:
        with pytest.raises(PanelError, match=re.escape(said)):
            parse_panel(line)


# ---- drawing -----------------------------------------------------------------------------------


def test_every_kind_of_panel_is_drawn_from_the_runs_as_they_are_now(client, runs):
    a, b, c = (f"local/{r}" for r in runs)
    page = saved(client, "Adam, three runs", panels(
        f"chart run={a} series=loss,acc",
        f"compare metric=loss run={a},{b},{c} agg=none",
        "compare metric=loss color=lr agg=mean",
        f"media run={a} name=samples steps=0,60,99",
        "table columns=name,status,config:lr,loss,loss:min limit=2",
        "hparams metric=loss",
    ))  # fmt: skip
    html = client.get(page).get_data(as_text=True)
    assert "report-placeholder" not in html
    kinds = re.findall(r'class="report-panel" data-kind="(\w+)"', html)
    assert kinds == ["chart", "compare", "compare", "media", "table", "hparams"]
    specs = re.findall(r'class="chart-spec">(.*?)</script>', html)
    assert len(specs) == 4  # chart, two compare charts, hparams
    assert len(set(re.findall(r'<div id="(report-chart-\d+)"', html))) == 4  # a target each
    # the chart loads its points from the API, as run pages do
    assert f"/api/runs/local/{runs[0]}/series/loss?columns=1" in html
    # the media panel: each chosen step's latest logged one at or before it
    assert re.findall(r'thumb/samples\?step=(\d+)"', html) == ["0", "50", "99"]
    assert client.get(f"/api/runs/local/{runs[0]}/thumb/samples?step=50").status_code == 200
    # the table: the newest two runs, their lr and loss (last and min)
    table = html[html.index('data-kind="table"') :]
    table = table[: table.index("</table>")]
    assert "run-2" in table
    assert "run-1" in table
    assert "run-0" not in table
    assert "0.3" in table
    assert "2.01" in table


def test_a_ten_thousand_point_series_is_downsampled_as_on_run_pages(client, url, tmp_path):
    with labstats.Stats(tmp_path / "long", name="long") as s:
        for i in range(10_000):
            s.log(step=i, loss=float(np.sin(i / 100)))
    page = saved(client, "Long", panels(f"chart run=local/{s.run_id} series=loss"))
    html = client.get(page).get_data(as_text=True)
    (data_url,) = set(re.findall(r'"data_url":\s*"([^"]+)"', html))
    points = client.get(data_url).get_json()
    assert 10 < len(points["idx"]) < 2000  # the overview first, as a run page loads it
    # the export's points are in the file, downsampled (tests/unit/test_export_report.py draws them)
    with client.application.test_request_context():
        item = export.chart_item("t", labstats.connect(url).run(s.run_id), ["loss"], "t")
    assert "data_url" not in str(item)
    item = json.loads(json.dumps(item))
    (shape,) = {tuple(n["shape"]) for n in _ndarrays(item) if n.get("dtype") == "float64"}
    assert shape == (export.MAX_POINTS,)


def _ndarrays(node):
    if isinstance(node, dict):
        if node.get("type") == "ndarray":
            yield node
        for value in node.values():
            yield from _ndarrays(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ndarrays(value)


def test_a_run_gone_or_in_the_trash_shows_a_placeholder_and_the_rest_is_drawn(client, runs):
    a, b, _ = (f"local/{r}" for r in runs)
    page = saved(client, "Gone", panels(
        f"chart run={a} series=loss",
        f"chart run={b} series=loss",
        "chart run=local/0000nothere series=loss",
        "chart run=nosuchsource/abc series=loss",
        f"chart run={a} series=nothere",
        f"media run={b} name=samples",
        f"compare metric=loss run={a},{b}",
        f"table run={b}",
    ))  # fmt: skip
    assert client.post(f"/api/runs/{b}/trash").status_code == 200
    answer = client.get(page)
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    said = re.findall(r"This panel cannot be drawn: (.*?)</p>", html)
    assert said == [
        f"run {b} is in the trash",
        "run local/0000nothere is not there (deleted, or never was)",
        "run nosuchsource/abc is not there (deleted, or never was)",
        "run-0 has no numeric series &#39;nothere&#39;",
        f"run {b} is in the trash",
        f"run {b} is in the trash: left out",
    ]
    assert f"run {b} is in the trash: left out" in html  # the comparison drew the other run
    assert len(re.findall(r'class="chart-spec"', html)) == 2
    report_id = page.rsplit("/", 1)[1]
    assert client.get(f"/reports/{report_id}/export.html").status_code == 200


def test_hostile_markdown_is_text_and_a_javascript_link_no_link(client, runs):
    html = client.get(saved(client, "<b>bold</b> title", HOSTILE)).get_data(as_text=True)
    body = html[html.index('<article class="report-body">') : html.index("</article>")]
    assert "<script" not in body
    assert "<img" not in body
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in body
    assert re.findall(r'href="([^"]*)"', body) == ["https://example.org/p"]  # javascript: is text
    assert "&lt;b&gt;bold&lt;/b&gt; title" in html


# ---- versions, list, search --------------------------------------------------------------------


def test_an_edit_is_a_new_version_and_each_version_stays_viewable(client, runs):
    page = saved(client, "Draft", "First words.")
    answer = client.post(page, data={"title": "Final", "body": "Second words.", "base": "1"})
    assert answer.status_code == 303
    newest = client.get(page).get_data(as_text=True)
    assert "Second words." in newest
    assert "version 2 of 2" in newest
    first = client.get(page + "?version=1").get_data(as_text=True)
    assert "First words." in first
    assert "version 1 of 2" in first
    assert "an earlier version" in first
    # an editor who started from version 1 after version 2 was saved: refused, text kept
    stale = client.post(page, data={"title": "Mine", "body": "Third words.", "base": "1"})
    assert stale.status_code == 409
    assert "version 2 was saved since you opened version 1" in stale.get_data(as_text=True)
    assert "Third words." in stale.get_data(as_text=True)
    assert "version 3" not in client.get(page).get_data(as_text=True)
    assert client.get(page + "?version=3").status_code == 404
    assert client.get(page + "?version=x").status_code == 400
    assert client.get("/reports/nosuchreport").status_code == 404
    assert "saved by open viewer" in newest  # no logins: one user, who may edit
    old_file = client.get(page + "/export.html?version=1").get_data(as_text=True)
    assert "First words." in old_file
    assert "Second words." not in old_file
    form = client.get(page + "/edit").get_data(as_text=True)
    assert 'name="base" value="2"' in form
    assert "Second words." in form


def test_the_list_shows_the_newest_of_each_and_searches_titles_and_text(client, runs):
    one = saved(client, "Adam beats SGD", "lr 0.1 was best")
    saved(client, "Augmentation", "flips did nothing; 100% of runs agree")
    client.post(one, data={"title": "Adam beats SGD, mostly", "body": "lr 0.1 was best", "base": "1"})
    listed = client.get("/reports").get_data(as_text=True)
    assert "Adam beats SGD, mostly" in listed
    assert "Augmentation" in listed
    assert listed.count("Adam beats SGD") == 1  # the newest version only
    assert "Augmentation" not in client.get("/reports?q=adam").get_data(as_text=True)
    assert "Adam beats" in client.get("/reports?q=LR 0.1").get_data(as_text=True)  # the text too
    found = client.get("/reports?q=100%").get_data(as_text=True)  # % is a character, not a wildcard
    assert "Augmentation" in found
    assert "Adam" not in found
    assert "No report" in client.get("/reports?q=_").get_data(as_text=True)


def test_bounds_are_refused_with_a_sentence_and_the_text_kept(client, runs):
    for title, body, said in [
        ("x" * (MAX_TITLE_CHARS + 1), "b", f"1 to {MAX_TITLE_CHARS} printable characters"),
        ("  ", "b", "1 to 200 printable"),
        ("Big", "é" * MAX_BODY_BYTES, f"over the {MAX_BODY_BYTES:,} a report may be"),
        ("Many", panels(*["hparams"] * (MAX_PANELS + 1)), f"at most {MAX_PANELS} panels; this one has 21"),
        ("Odd", panels("hparams", "chart run=a/b"), "panel 2 (chart run=a/b): a chart panel needs series="),
    ]:
        answer = client.post("/reports", data={"title": title, "body": body})
        assert answer.status_code == 400, title
        text = answer.get_data(as_text=True)
        assert said in text.replace("&#39;", "'"), (title, text[:300])
    assert "No reports yet" in client.get("/reports").get_data(as_text=True)


# ---- roles, storage, export --------------------------------------------------------------------


@pytest.fixture
def guarded(url, runs, tmp_path):
    (tmp_path / "users").write_text("")
    (tmp_path / "tokens").write_text("".join(f"{r}:{hash_token(t)}:{r}\n" for r, t in TOKENS.items()))
    sqlite = tmp_path / "viewer" / "sessions.sqlite"
    login = AuthConfig.load({"users_file": str(tmp_path / "users"), "tokens_file": str(tmp_path / "tokens"),
                             "sessions_file": str(sqlite)})  # fmt: skip
    app = create_app({"local": Source("local", url)}, login=login)
    app.testing = False
    return app.test_client(), sqlite


def as_(role: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def test_readers_read_editors_write_and_the_reports_stay_in_the_sqlite_file(guarded, runs):
    client, sqlite = guarded
    assert client.post("/reports", data={"title": "R", "body": "b"}, headers=as_("reader")).status_code == 403
    form = client.get("/reports/new", headers=as_("reader")).get_data(as_text=True)
    assert "Only editors may save a report; you are a reader." in form
    assert "save-report" not in form
    answer = client.post("/reports", data={"title": "By an editor", "body": "b"}, headers=as_("editor"))
    assert answer.status_code == 303
    page = answer.headers["Location"]
    report_id = page.rsplit("/", 1)[1]
    html = client.get(page, headers=as_("reader")).get_data(as_text=True)
    assert "By an editor" in html
    assert "saved by editor" in html
    assert "report-edit" not in html  # no edit link for a reader
    assert "save-report" not in client.get(page + "/edit", headers=as_("reader")).get_data(as_text=True)
    assert client.post(page, data={"title": "x", "body": "y"}, headers=as_("reader")).status_code == 403
    assert "report-edit" in client.get(page, headers=as_("editor")).get_data(as_text=True)
    # another viewer process on the same file (a uWSGI worker, a restart) has it
    assert ReportStore(sqlite).get(report_id).title == "By an editor"


def test_the_page_and_the_cli_export_one_file_that_needs_no_network(client, runs, url, tmp_path, capsys):
    a = f"local/{runs[0]}"
    page = saved(client, "Exported <3", HOSTILE + panels(f"chart run={a} series=loss",
                                                          f"media run={a} name=samples",
                                                          "hparams metric=loss"))  # fmt: skip
    report_id = page.rsplit("/", 1)[1]
    answer = client.get(f"/reports/{report_id}/export.html")
    assert answer.status_code == 200
    assert answer.headers["Content-Disposition"] == 'attachment; filename="Exported_3-v1.html"'
    html = answer.get_data(as_text=True)
    assert not re.search(
        r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(?!data:)", html
    )  # nothing to fetch
    assert html.count("<img") == 3
    assert html.count('src="data:image/webp;base64,') == 3
    assert "window.pwned" not in re.sub(r"&lt;script&gt;window.pwned", "", html)
    assert export.CSP.replace("'", "&#39;") in html
    assert len(html.encode()) < 2 * 2**20
    assert client.get(f"/reports/{report_id}/export.html?version=2").status_code == 404
    # the CLI, from the viewer's SQLite file
    sqlite = tmp_path / "viewer.sqlite"
    store = ReportStore(sqlite)
    stored_id, _ = store.create("From the CLI", panels(f"chart run={a} series=loss"), "alice")
    out = tmp_path / "report.html"
    args = ["--url", url, "export-html", "--report", stored_id, "--db", str(sqlite), "-o", str(out)]
    assert cli.main(args) == 0
    written = out.read_text()
    assert "From the CLI" in written
    assert written.count('class="chart-spec"') == 1
    assert cli.main(["--url", url, "export-html", "--report", "nope", "--db", str(sqlite)]) == 1
    assert "has no report 'nope'" in capsys.readouterr().err
    assert cli.main(["--url", url, "export-html", "--report", stored_id, "--db", str(tmp_path / "none")]) == 1
    assert cli.main(["--url", url, "export-html"]) == 1


def test_report_export_html_is_none_for_no_such_report(client):
    with client.application.test_request_context():
        assert reports.report_export_html("nope") is None
