"""The runs table for sweeps, with Flask's test client against the real redis-server fixture:
sorts, filters and groups over every run (not the shown page), the config columns, the
default metric, and bad input answered with a sentence (a 400), never a 500."""

import json
import re
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis

import labstats
from labstats.format.keys import Keys
from labstats.viewer import runcache
from labstats.viewer.saved_views import ViewError, ViewStore, clean

SWEEP = [  # (lr, opt, final loss); logged oldest first, so the best run is the oldest
    (0.001, "adam", 0.05),
    (0.1, "sgd", 0.9),
    (0.01, "adam", 0.3),
    (0.001, "sgd", 0.2),
    (0.1, "adam", 0.7),
    (0.01, "sgd", 0.5),
    (0.001, "adam", 0.08),
]


@pytest.fixture
def sweep(tmp_path):
    """Seven runs: lr, opt and seed differ, the model does not; loss falls to its final value."""
    ids = []
    for k, (lr, opt, final) in enumerate(SWEEP):
        config = {"lr": lr, "opt": opt, "seed": k, "model": "mlp", "name": f"s{k}"}
        with labstats.Stats(tmp_path / f"s{k}", name=f"s{k}", config=config) as stats:
            for i in range(5):
                stats.log(step=i, loss=final + (4 - i) * 0.5, lr=lr)
        ids.append(stats.run_id)
    return ids


def names(html: str) -> list[str]:
    return re.findall(r'data-col="name" data-value="([^"]+)"', html)


def test_a_metric_sort_finds_the_best_run_wherever_it_would_be_listed(client, sweep):
    assert names(client.get("/?limit=3&page=3").get_data(as_text=True)) == ["s0"]  # newest first: last page
    best = client.get("/?limit=3&sort=metric:loss:last").get_data(as_text=True)
    assert names(best) == ["s0", "s6", "s3"]
    assert 'aria-sort="ascending"' in best
    head = re.search(r'<th data-col="metric-last"[^>]*><a href="([^"]+)"', best).group(1)
    assert unescape(head) == "/?sort=metric:loss:last&limit=3&order=desc"  # the header turns it
    worst = client.get("/?limit=3&sort=metric:loss:min&order=desc").get_data(as_text=True)
    assert names(worst) == ["s1", "s4", "s5"]
    assert names(client.get("/?limit=3&page=3&sort=metric:loss:min&order=desc").get_data(as_text=True)) == [
        "s0"
    ]
    api = client.get("/api/runs?limit=2&sort=config:lr&order=desc").json
    assert [r["name"] for r in api["runs"]] == ["s4", "s1"]  # lr 0.1 twice, newest first within a tie


def test_runs_without_the_sorted_value_come_last_either_way(client, sweep, tmp_path):
    with labstats.Stats(tmp_path / "nothing", name="nothing", config={"lr": "auto"}) as stats:
        stats.log(step=0, acc=1.0)
    for order in ("asc", "desc"):
        listed = names(client.get(f"/?sort=metric:loss:last&order={order}").get_data(as_text=True))
        assert listed[-1] == "nothing"
    by_lr = names(client.get("/?sort=config:lr").get_data(as_text=True))
    assert by_lr[-1] == "nothing"  # a string after the numbers, never a TypeError
    assert by_lr[0] in ("s0", "s3", "s6")
    assert client.get("/?sort=duration").status_code == 200
    assert client.get("/?sort=config:nope").status_code == 200  # a key no run has sorts nothing


def test_the_issue_example_filters_every_run_and_pages_after(client, sweep):
    text = 'lr < 0.01 and loss.min < 0.1 and opt == "adam"'
    html = client.get("/", query_string={"filter": text}).get_data(as_text=True)
    assert sorted(names(html)) == ["s0", "s6"]
    assert "2 runs match" in html
    assert f'value="{text}"'.replace('"adam"', "&#34;adam&#34;").replace("<", "&lt;") in html  # kept as typed
    body = client.get(
        "/api/runs", query_string={"filter": "not (opt == 'adam') or seed in (0, 1)", "limit": 2}
    ).json
    assert [r["name"] for r in body["runs"]] == ["s5", "s3"]
    second = client.get(
        "/api/runs", query_string={"filter": "opt == 'sgd' or seed in (0, 1)", "limit": 2, "page": 2}
    )
    assert [r["name"] for r in second.json["runs"]] == ["s1", "s0"]  # s5 s3 s1 s0: the last page
    assert names(client.get("/?filter=status == 'finished' and duration >= 0").get_data(as_text=True))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("lr <", "expected a name, a number"),
        ("lrr < 1", "no listed run has a config key or metric named &#39;lrr&#39; (did you mean lr"),
        ('lr < "0.1"', "a number cannot be compared with a string"),
        ("opt = 'adam'", "compare with =="),
        ("(" * 200 + "lr", "nested more than"),
        ("x" * 5000, "over the 2,000 allowed"),
        ("lr < 1 and \x00", "unexpected character"),
    ],
)
def test_a_bad_filter_is_a_sentence_on_the_page_and_a_400_from_the_api(client, sweep, text, said):
    page = client.get("/", query_string={"filter": text})
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert said in re.search(r'<p class="error filter-error" role="alert">(.*?)</p>', html, re.S).group(1)
    assert 'name="filter"' in html  # the form is there to mend it
    api = client.get("/api/runs", query_string={"filter": text})
    assert api.status_code == 400
    assert api.json["error"].startswith("filter: ")


@pytest.mark.parametrize("sort", ["bogus", "metric:loss", "metric::min", "config:", "x" * 2000])
def test_a_bad_sort_or_order_is_a_400(client, sweep, sort):
    assert client.get("/", query_string={"sort": sort}).status_code == 400
    assert client.get("/api/runs", query_string={"sort": sort}).status_code == 400
    assert client.get("/api/runs?order=sideways").status_code == 400


def test_groups_count_every_filtered_run_not_the_page(client, sweep):
    html = client.get("/?group=config:opt&limit=2&sort=metric:loss:last").get_data(as_text=True)
    groups = re.findall(
        r'<tr class="group-row" data-group="([^"]+)"><td colspan="99" data-count="(\d+)">', html
    )
    assert groups == [("adam", "4")]  # the best run's group first; the page has two of its runs
    assert names(html) == ["s0", "s6"]
    later = client.get("/?group=config:opt&limit=2&page=3&sort=metric:loss:last").get_data(as_text=True)
    assert re.findall(r'data-group="([^"]+)"><td colspan="99" data-count="(\d+)"', later) == [("sgd", "3")]
    filtered = client.get("/?group=config:lr&filter=opt == 'adam'").get_data(as_text=True)
    counts = dict(re.findall(r'data-group="([^"]+)"><td colspan="99" data-count="(\d+)"', filtered))
    assert counts == {"0.001": "2", "0.01": "1", "0.1": "1"}
    only = unescape(re.search(r'href="([^"]+)">only these</a>', filtered).group(1))
    assert sorted(names(client.get(only).get_data(as_text=True))) in (["s0", "s6"], ["s2"], ["s4"])
    assert client.get("/?group=status").status_code == 200


def test_config_columns_show_differing_keys_unquoted_and_the_whole_config_on_expand(client, sweep):
    html = client.get("/").get_data(as_text=True)
    headers = re.findall(r'<th data-col="([^"]+)"', html)
    assert {"config:lr", "config:opt", "config:seed"} <= set(headers)
    assert "config:model" not in headers  # the same everywhere
    assert "config:name" not in headers  # repeats the name column
    assert headers.count("name") == 1
    assert re.search(r'<td data-col="config:opt" data-value="[^"]*" title="adam">adam</td>', html)
    assert "&#34;adam&#34;</td>" not in html
    expanded = re.search(r"<details><summary>.*?</summary><pre>(.*?)</pre></details>", html, re.S).group(1)
    assert json.loads(expanded.replace("&#34;", '"'))["model"] == "mlp"


def test_a_config_name_that_is_not_the_runs_name_keeps_a_column_of_its_own(client, tmp_path):
    for k in range(2):
        with labstats.Stats(tmp_path / f"n{k}", name=f"run{k}", config={"name": f"dataset-{k}"}):
            pass
    html = client.get("/").get_data(as_text=True)
    assert '<th data-col="config:name"' in html
    assert ">config name</a></th>" in html  # said apart from the run's own name column


def test_the_default_metric_is_one_that_changes(client, tmp_path):
    for k in range(3):
        with labstats.Stats(tmp_path / f"d{k}") as stats:
            for i in range(4):
                values = {"lr": 0.1, "momentum": 0.9, "grad_norm": float(i * k)}
                if k:
                    values["val/acc"] = i / 4
                stats.log(step=i, **values)
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<option value="val/acc" selected>', html)  # accuracy-like, though fewer runs have it
    assert client.get("/?metric=lr").status_code == 200
    for k in range(2):
        with labstats.Stats(tmp_path / f"e{k}") as stats:
            for i in range(4):
                stats.log(step=i, momentum=0.9, grad_norm=float(i))
    html = client.get("/?q=e").get_data(as_text=True)
    assert re.search(r'<option value="grad_norm" selected>', html)  # momentum is the same everywhere


def test_an_ended_runs_record_is_kept_until_it_changes(client, sweep, url, monkeypatch):
    monkeypatch.setattr(runcache, "RECHECK_AFTER", 0.0)
    assert client.get("/api/runs?sort=duration").status_code == 200
    kept = client.application.extensions["labstats_run_caches"]["local"]
    assert set(sweep) <= set(kept.records)
    assert kept.summaries == {}  # no metric read for a duration sort
    client.get("/?sort=metric:loss:min")
    assert (sweep[0], "loss") in kept.summaries
    redis.Redis.from_url(url).hset(Keys().run(sweep[0]), "status", "crashed")
    body = client.get("/api/runs?sort=status&limit=1").json
    assert (body["runs"][0]["name"], body["runs"][0]["status"]) == ("s0", "crashed")


def test_a_running_run_is_read_fresh_every_time(client, tmp_path):
    with labstats.Stats(tmp_path / "live", name="live", flush_interval=0.01) as stats:
        stats.log(step=0, loss=5.0)
        stats.flush()
        first = client.get("/api/runs?sort=metric:loss:max").json["runs"][0]
        assert first["status"] == "running"
        stats.log(step=1, loss=9.0)
        stats.flush()
        html = client.get("/?sort=metric:loss:max").get_data(as_text=True)
        assert 'data-col="metric-max" class="number" data-value="9.0"' in html


def test_a_saved_view_opens_with_its_query_less_the_columns_runs_no_longer_have(client, sweep):
    query = "sort=config:gone&order=desc&filter=lr < 0.05&group=config:opt&hide=host&hide=config:gone"
    query += "&also=lr&also=nope"
    saved = client.post("/views", data={"name": "small lr", "query": query + "&page=3&_external=1"})
    assert saved.status_code == 303
    opened = client.get(saved.headers["Location"])
    assert opened.status_code == 302
    target = opened.headers["Location"]
    assert parse_qsl(urlsplit(target).query) == [
        ("filter", "lr < 0.05"), ("group", "config:opt"), ("hide", "host"), ("also", "lr"),
        ("view", "small lr"),
    ]  # fmt: skip
    page = client.get(target).get_data(as_text=True)
    assert 'data-hidden="[&#34;host&#34;]"' in page
    assert "views: small lr" in page
    assert '<a href="/views/small%20lr">small lr</a>' in page
    assert sorted(names(page)) == ["s0", "s2", "s3", "s5", "s6"]
    assert client.post("/views", data={"name": " ", "query": query}).status_code == 400
    odd = client.post("/views", data={"name": "a/b ?#%", "query": "sort=name"}).headers["Location"]
    assert client.get(odd).headers["Location"] == "/?sort=name&view=a%2Fb+%3F%23%25"
    assert client.post("/views", data={"delete": "small lr"}).status_code == 303
    assert client.get("/views/small%20lr").status_code == 404


def test_saved_views_are_each_users_own_and_kept_in_the_viewers_file(tmp_path):
    path = tmp_path / "viewer" / "sessions.sqlite"
    store = ViewStore(path)
    store.save("alice", "best", [("sort", "metric:loss:min"), ("page", "2"), ("evil", "1")])
    assert store.views("bob") == []
    again = ViewStore(path)  # another worker, or the viewer restarted
    assert again.get("alice", "best") == [("sort", "metric:loss:min")]  # only the table's own query
    with pytest.raises(ViewError):
        again.save("alice", "x" * 81, [])
    with pytest.raises(ViewError, match="characters a view may keep"):
        again.save("alice", "huge", [("filter", "x" * 9000)])
    kept = clean(
        [("hide", "config:lr"), ("hide", "config:gone"), ("hide", "also:val/acc:min"), ("metric", "gone"),
         ("sort", "metric:gone:last"), ("order", "asc"), ("group", "config:lr")],
        {"lr"}, {"val/acc"},
    )  # fmt: skip
    assert kept == [("hide", "config:lr"), ("hide", "also:val/acc:min"), ("group", "config:lr")]


def test_the_api_says_the_total_and_the_groups_over_every_run(client, sweep):
    body = client.get("/api/runs?group=config:opt&sort=metric:loss:last&limit=3&filter=seed >= 1").json
    assert body["total"] == 6
    assert body["groups"] == [{"value": "adam", "count": 3}, {"value": "sgd", "count": 3}]  # s6 (0.08) leads
    assert [(r["name"], r["group"]) for r in body["runs"]] == [("s6", "adam"), ("s2", "adam"), ("s4", "adam")]
    assert body["runs"][0]["metrics"] == {"loss": {"last": 0.08, "min": 0.08, "max": 2.08}}
    plain = client.get("/api/runs?limit=2").json
    assert "total" not in plain  # the newest first is read a page at a time, as before
    assert [r["name"] for r in plain["runs"]] == ["s6", "s5"]
    doc = client.get("/api/openapi.json").json
    declared = {p["name"] for p in doc["paths"]["/api/runs"]["get"]["parameters"]}
    assert {"sort", "order", "filter", "group"} <= declared  # so the fuzzer sends them


def test_the_filter_form_keeps_the_hidden_columns_and_the_page_size(client, sweep):
    page = client.get("/?limit=2&hide=host&hide=config:seed").get_data(as_text=True)
    form = page[page.index('id="table-form"') : page.index("</form>")]
    assert '<input type="hidden" name="hide" value="host">' in form
    assert '<input type="hidden" name="hide" value="config:seed">' in form
    assert '<input type="hidden" name="limit" value="2">' in form
