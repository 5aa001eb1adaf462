"""Annotations in the viewer (labstats.viewer.annotate) over a real redis-server: the API and
the run page's forms change a run's display name, project, note, tags, star and protect, put
it in the trash and take it out; every change is in the audit trail; hostile input is refused
with a sentence or shown escaped; a note's markdown never lets HTML or a script through; a
source without annotate_url is read-only."""

import threading
from urllib.parse import quote

import bcrypt
import pytest

import labstats
from labstats.curation import read_audit
from labstats.viewer import create_app
from labstats.viewer.annotate import render_note, safe_link
from labstats.viewer.auth import COOKIE, AuthConfig
from labstats.viewer.sources import Source, load_sources

PASSWORD = "correct horse battery staple"
USERS = {"alice": "admin", "bob": "editor", "dave": "editor", "carol": "reader"}


@pytest.fixture
def login(tmp_path):
    hashed = {user: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode() for user in USERS}
    (tmp_path / "users").write_text("".join(f"{u}:{hashed[u]}:{role}\n" for u, role in USERS.items()))
    (tmp_path / "tokens").write_text("")
    return {
        "users_file": str(tmp_path / "users"),
        "tokens_file": str(tmp_path / "tokens"),
        "sessions_file": str(tmp_path / "state" / "sessions.sqlite"),
    }


def make_run(tmp_path, name, **kwargs):
    with labstats.Stats(tmp_path / name, name=name, **kwargs) as stats:
        stats.log(step=0, loss=1.0)
    return stats.run_id


@pytest.fixture
def runs(url, tmp_path):
    return [make_run(tmp_path, "first", tags=["logged"]), make_run(tmp_path, "second")]


@pytest.fixture
def app(url, login, runs):
    app = create_app({"local": Source("local", url, annotate_url=url)}, login=AuthConfig.load(login))
    app.testing = False
    return app


def as_user(app, user):
    """A client of ``user``'s session that sends the viewer's own Origin (as its pages do)."""
    guard, store = app.extensions["labstats_guard"], app.extensions["labstats_sessions"]
    session_id, _ = store.create(user, guard.fingerprint(user))
    client = app.test_client()
    client.set_cookie(COOKIE, session_id)
    client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    return client


def api(run_id, what="annotations"):
    return f"/api/runs/local/{run_id}/{what}"


def audit(url, run_id=None):
    return read_audit(labstats.connect(url).redis, run_id=run_id)


def listed(client, query=""):
    return [run["id"] for run in client.get(f"/api/runs{query}").json["runs"]]


def test_an_editor_changes_each_field_and_every_reader_sees_it(app, runs, url):
    bob, carol = as_user(app, "bob"), as_user(app, "carol")
    fresh = carol.get(api(runs[0])).json
    assert fresh["writable"] is True
    assert fresh["annotations"]["tags"] == ["logged"]  # the logged tags until someone changes them
    body = {"name": "lr sweep 3", "project": "vision", "note": "*good*", "tags_add": ["best", "mine"],
            "tags_remove": ["logged"], "starred": True}  # fmt: skip
    changed = bob.patch(api(runs[0]), json=body)
    assert changed.status_code == 200
    expected = {"name": "lr sweep 3", "project": "vision", "note": "*good*", "tags": ["best", "mine"],
                "starred": True, "protected": False, "trashed": None}  # fmt: skip
    assert {k: changed.json["annotations"][k] for k in expected} == expected
    assert {k: carol.get(api(runs[0])).json["annotations"][k] for k in expected} == expected
    # The reader's own library sees it too, and the runs list carries it for the table.
    assert labstats.connect(url).run(runs[0]).display_name == "lr sweep 3"
    row = next(run for run in carol.get("/api/runs").json["runs"] if run["id"] == runs[0])
    assert (row["display_name"], row["project"], row["starred"], row["tags"]) == (
        "lr sweep 3", "vision", True, ["best", "mine"])  # fmt: skip
    # One audit entry for the request, naming the user and every change.
    [entry] = audit(url, runs[0])
    assert (entry["who"], entry["action"], entry["via"], entry["writer"]) == (
        "bob",
        "change",
        "api",
        "annotator",
    )
    assert entry["changes"]["name"] == ["", "lr sweep 3"]
    assert entry["changes"]["tags"] == [["logged"], ["best", "mine"]]


def test_the_audit_is_for_admins_and_filters_by_run(app, runs):
    bob, alice = as_user(app, "bob"), as_user(app, "alice")
    bob.patch(api(runs[0]), json={"starred": True})
    bob.patch(api(runs[1]), json={"project": "other"})
    assert bob.get("/api/audit").status_code == 403
    assert bob.get("/audit").status_code == 403
    entries = alice.get("/api/audit").json["entries"]
    assert [e["run"] for e in entries] == [runs[1], runs[0]]  # newest first
    assert [e["run"] for e in alice.get(f"/api/audit?run={runs[0]}").json["entries"]] == [runs[0]]
    assert alice.get("/api/audit?limit=0").status_code == 400
    page = alice.get(f"/audit?run={runs[0]}")
    assert page.status_code == 200
    assert "starred" in page.text
    assert runs[0] in page.text


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"tags_add": ["a\x00b"]}, "must not contain control characters"),
        ({"tags_add": ["tab\there"]}, "must not contain control characters"),
        ({"tags_add": ["\x1b[31mred"]}, "must not contain control characters"),
        ({"name": "two\nlines"}, "must not contain control characters"),
        ({"project": "x" * 201}, "at most 200"),
        ({"tags_add": ["t" * 65]}, "at most 64"),
        ({"tags_add": [f"t{n}" for n in range(101)]}, "at most 100 tags"),
        ({"note": "x" * 1_000_000}, "at most 65536 (64 KiB)"),
        ({"note": "bad \x00 byte"}, "control characters"),
        ({"name": 5}, "name must be a string"),
        ({"starred": "yes"}, "starred must be true or false"),
        ({"tags_add": "best"}, "tags_add must be a list of strings"),
        ({"owner": "mallory"}, "unknown field 'owner'"),
    ],
)
def test_bad_values_are_refused_whole_with_a_sentence(app, runs, url, body, said):
    bob = as_user(app, "bob")
    answer = bob.patch(api(runs[0]), json={"project": "kept out", **body})
    assert answer.status_code == 400
    assert said in answer.json["error"]
    assert bob.get(api(runs[0])).json["annotations"]["project"] == ""  # nothing stored
    assert audit(url, runs[0]) == []


def test_a_note_over_the_request_limit_and_a_page_form_are_refused_clearly(app, runs):
    bob = as_user(app, "bob")
    huge = bob.patch(api(runs[0]), json={"note": "x" * 2_000_000})
    assert huge.status_code == 413
    assert "error" in huge.json
    form = bob.post(f"/runs/local/{runs[0]}/annotations", data={"note": "y" * 1_000_000, "was_note": ""})
    assert form.status_code == 400
    assert "at most 65536 (64 KiB)" in form.text
    assert bob.get(api(runs[0])).json["annotations"]["note"] == ""


def test_hostile_names_tags_and_projects_are_stored_and_shown_escaped(app, runs):
    bob = as_user(app, "bob")
    hostile = '<script>alert("x")</script>'
    body = {
        "name": hostile,
        "project": "<img src=x onerror=alert(1)>",
        "tags_add": ['"><svg onload=alert(1)>'],
    }
    assert bob.patch(api(runs[0]), json=body).status_code == 200
    page = bob.get(f"/runs/local/{runs[0]}").text
    assert hostile not in page
    assert "&lt;script&gt;alert(" in page
    assert "<img src=x" not in page
    assert "<svg onload" not in page
    assert bob.get(api(runs[0])).json["annotations"]["name"] == hostile  # stored as given
    assert "<script>alert" not in bob.get("/").text


NOTE = """# Results
<script>window.pwned = 1</script>
<img src=x onerror="window.pwned = 2">
[click](javascript:alert(1)) [upper](JaVaScRiPt:alert(2)) [spaced]( javascript:alert(3))
[entity](&#106;avascript:alert(4)) [data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:x)
<javascript:alert(5)> [ok](https://example.org/a?b=1) [mail](mailto:a@example.org) [run](/runs/local/x)
![pic](https://tracker.example/p.png)
"""


def test_a_notes_markdown_lets_no_html_or_script_through():
    html = str(render_note(NOTE))
    assert "<h1>Results</h1>" in html
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html
    assert "&lt;img src=x" in html
    hrefs = [part.split('"', 1)[0] for part in html.split('href="')[1:]]
    # No picture is loaded from elsewhere: ![pic](...) is a link to it.
    assert hrefs == ["https://example.org/a?b=1", "mailto:a@example.org", "/runs/local/x",
                     "https://tracker.example/p.png"]  # fmt: skip
    assert 'rel="nofollow noopener noreferrer"' in html


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://a.example", True), ("http://a.example", True), ("mailto:x@y", True), ("/runs", True),
        ("runs/x", True), ("#top", True), ("javascript:alert(1)", False), ("JAVASCRIPT:x", False),
        ("java\tscript:x", False), ("\x01javascript:x", False), ("data:text/html,x", False),
        ("vbscript:x", False), ("file:///etc/passwd", False),
    ],
)  # fmt: skip
def test_only_http_mailto_and_relative_links_are_kept(url, safe):
    assert safe_link(url) is safe


def test_the_run_page_renders_the_note_inert(app, runs):
    bob = as_user(app, "bob")
    assert bob.patch(api(runs[0]), json={"note": NOTE}).status_code == 200
    page = bob.get(f"/runs/local/{runs[0]}").text
    note = page.split('<div class="note">', 1)[1].split("</div>", 1)[0]
    assert "<script" not in note
    assert "<img" not in note
    assert "javascript:" not in note.split("href=")[-1]
    assert 'href="https://example.org/a?b=1"' in note
    assert "onerror" not in note.replace("onerror=&quot;", "")


def test_two_editors_at_once_are_both_audited_and_the_last_wins(app, runs, url):
    clients = {"bob": as_user(app, "bob"), "dave": as_user(app, "dave")}
    start = threading.Barrier(2)
    answers = {}

    def rename(user):
        start.wait()
        answers[user] = clients[user].patch(api(runs[0]), json={"name": f"{user}'s name", "tags_add": [user]})

    threads = [threading.Thread(target=rename, args=(user,)) for user in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert {user: answer.status_code for user, answer in answers.items()} == {"bob": 200, "dave": 200}
    entries = audit(url, runs[0])
    assert sorted(entry["who"] for entry in entries) == ["bob", "dave"]
    last, first = entries  # newest first
    final = as_user(app, "carol").get(api(runs[0])).json["annotations"]
    assert final["name"] == f"{last['who']}'s name"  # the last one wins...
    assert last["changes"]["name"] == [f"{first['who']}'s name", final["name"]]  # ...over the first
    assert sorted(final["tags"]) == ["bob", "dave", "logged"]  # tags added by both are kept


def test_a_protected_run_cannot_be_trashed(app, runs, url):
    bob = as_user(app, "bob")
    assert bob.patch(api(runs[0]), json={"protected": True}).status_code == 200
    refused = bob.post(api(runs[0], "trash"))
    assert refused.status_code == 409
    assert "protected" in refused.json["error"]
    assert bob.post(f"/runs/local/{runs[0]}/trash").status_code == 409
    assert runs[0] in listed(bob)
    assert [e["action"] for e in audit(url, runs[0])] == ["change"]
    page = bob.get(f"/runs/local/{runs[0]}").text
    assert 'class="trash" disabled' in page


def test_a_trashed_run_is_hidden_from_every_list_and_restored(app, runs, url):
    bob = as_user(app, "bob")
    assert bob.patch(api(runs[0]), json={"tags_add": ["best"], "project": "vision"}).status_code == 200
    assert bob.post(api(runs[0], "trash")).status_code == 200
    assert bob.post(api(runs[0], "trash")).status_code == 409  # already there
    for query in ("", "?sort=name", "?filter=loss+<+5", "?q=first", "?group=status", "?status=finished"):
        assert runs[0] not in listed(bob, query), query
        assert runs[1] in listed(bob, query) or query == "?q=first", query
    assert runs[0] not in bob.get("/").text
    # Its page still opens, and says so; the Trash page lists it with a restore button.
    page = bob.get(f"/runs/local/{runs[0]}").text
    assert "This run is in the trash" in page
    assert 'class="restore"' in page
    trash = bob.get("/trash").text
    assert runs[0] in trash
    assert runs[1] not in trash
    assert 'class="restore"' in trash
    assert 'class="restore"' not in as_user(app, "carol").get("/trash").text  # readers see, not restore
    # Restored from the Trash page: back there, and in every list again.
    back = bob.post(f"/runs/local/{runs[0]}/restore", data={"back": "trash"})
    assert (back.status_code, back.headers["Location"]) == (303, "/trash")
    assert runs[0] in listed(bob)
    assert runs[0] in listed(bob, "?sort=name")
    assert runs[0] not in bob.get("/trash").text
    assert bob.post(api(runs[0], "restore")).status_code == 409  # not in the trash
    assert [e["action"] for e in audit(url, runs[0])] == ["restore", "trash", "change"]


def test_the_run_pages_forms_change_only_what_was_changed(app, runs):
    bob, dave = as_user(app, "bob"), as_user(app, "dave")
    page = f"/runs/local/{runs[0]}"
    form = bob.post(
        f"{page}/annotations", data={"name": "renamed", "was_name": "", "project": "", "was_project": ""}
    )
    assert (form.status_code, form.headers["Location"]) == (303, page)
    # dave's form was shown before bob's rename: his project change leaves bob's name alone.
    assert dave.post(
        f"{page}/annotations", data={"name": "", "was_name": "", "project": "p", "was_project": ""}
    )
    ann = bob.get(api(runs[0])).json["annotations"]
    assert (ann["name"], ann["project"]) == ("renamed", "p")
    # A textarea's lines come as CRLF from every browser: the note keeps plain newlines.
    assert bob.post(f"{page}/annotations", data={"note": "a\r\nb", "was_note": ""}).status_code == 303
    assert bob.get(api(runs[0])).json["annotations"]["note"] == "a\nb"
    bob.post(f"{page}/annotations", data={"tags_add": "  new tag  "})
    bob.post(f"{page}/annotations", data={"tags_remove": "logged"})
    bob.post(f"{page}/annotations", data={"starred": "1"})
    ann = bob.get(api(runs[0])).json["annotations"]
    assert (ann["tags"], ann["starred"]) == (["new tag"], True)
    shown = bob.get(page).text
    assert "renamed" in shown
    assert "new tag" in shown
    assert "★" in shown


def test_a_reader_sees_no_controls_and_is_refused(app, runs, url):
    carol = as_user(app, "carol")
    page = carol.get(f"/runs/local/{runs[0]}").text
    assert 'id="annotations"' in page
    for control in ('class="annotate-form"', 'class="trash"', 'class="star-toggle"', 'name="tags_add"'):
        assert control not in page
    assert carol.patch(api(runs[0]), json={"name": "mine"}).status_code == 403
    assert carol.post(api(runs[0], "trash")).status_code == 403
    assert [(e["action"], e["who"]) for e in audit(url, runs[0])] == [("refused", "carol")] * 2
    assert carol.get(api(runs[0])).json["annotations"]["name"] == ""
    assert 'class="annotate-form"' in as_user(app, "bob").get(f"/runs/local/{runs[0]}").text


def test_a_change_from_another_site_is_refused_and_changes_nothing(app, runs, url):
    bob = as_user(app, "bob")
    del bob.environ_base["HTTP_ORIGIN"]  # what a page of another site sends instead
    for headers in (
        {"Origin": "http://localhost:9999"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/x"},
    ):
        assert bob.post(f"/runs/local/{runs[0]}/trash", headers=headers).status_code == 403
        assert bob.patch(api(runs[0]), json={"name": "forged"}, headers=headers).status_code == 403
    assert bob.post(api(runs[0], "trash")).status_code == 403  # neither Origin nor Referer
    assert runs[0] in listed(bob)
    assert audit(url, runs[0]) == []  # a forgery is no user's attempt: only the log has it


def test_a_source_without_annotate_url_is_read_only(url, login, runs):
    app = create_app({"local": Source("local", url)}, login=AuthConfig.load(login))
    app.testing = False
    bob = as_user(app, "bob")
    shown = bob.get(api(runs[0])).json
    assert shown["writable"] is False
    assert shown["annotations"]["tags"] == ["logged"]
    for answer in (bob.patch(api(runs[0]), json={"name": "x"}), bob.post(api(runs[0], "trash"))):
        assert answer.status_code == 409
        assert "read-only here" in answer.json["error"]
        assert "annotate_url" in answer.json["error"]
    page = bob.get(f"/runs/local/{runs[0]}").text
    assert "read-only here" in page
    assert 'class="annotate-form"' not in page
    assert audit(url) == []


def test_an_unknown_run_or_source_is_a_404(app, runs):
    bob = as_user(app, "bob")
    assert bob.patch(api("no-such-run"), json={"name": "x"}).status_code == 404
    assert bob.post(api("no-such-run", "trash")).status_code == 404
    assert bob.get("/api/runs/elsewhere/x/annotations").status_code == 404
    assert bob.patch(api(runs[0]), data="not json", content_type="application/json").status_code == 400


def test_the_config_gives_a_source_its_annotate_url(tmp_path, url):
    (tmp_path / "viewer.toml").write_text(
        f'[[sources]]\nname = "gpu1"\nurl = "{url}"\nannotate_url = "{url}"\n\n'
        f'[[sources]]\nname = "gpu2"\nurl = "{url}"\n'
    )
    found = load_sources(str(tmp_path / "viewer.toml"))
    assert (found["gpu1"].annotate_url, found["gpu1"].writable) == (url, True)
    assert (found["gpu2"].annotate_url, found["gpu2"].writable) == ("", False)
    assert load_sources()["local"].annotate_url == url  # one store without a config: its own url


def test_the_runs_table_filters_and_sorts_by_what_people_said_after_the_fact(app, runs, url):
    editor = as_user(app, "bob")
    first, second = runs
    assert (
        editor.patch(
            api(first), json={"project": "vision", "tags_add": ["best"], "starred": True}
        ).status_code
        == 200
    )
    assert editor.patch(api(second), json={"name": "a renamed run"}).status_code == 200
    reader = as_user(app, "carol")
    assert listed(reader, "?filter=" + quote('project == "vision"')) == [first]
    assert listed(reader, "?filter=" + quote('tag == "best"')) == [first]  # a tag given later
    assert listed(reader, "?filter=" + quote('tag == "logged" and starred')) == [first]
    assert listed(reader, "?filter=" + quote('name == "a renamed run"')) == [second]
    assert listed(reader, "?sort=name&order=asc") == [second, first]  # "a renamed run" < "first"


def test_the_search_box_and_tag_links_find_names_and_tags_given_later(app, runs):
    first, second = runs
    editor = as_user(app, "bob")
    assert editor.patch(api(second), json={"name": "Zebra", "tags_add": ["later"]}).status_code == 200
    reader = as_user(app, "carol")
    assert listed(reader, "?q=zebr") == [second]
    assert listed(reader, "?q=second") == [second]  # the logged name still finds it
    assert listed(reader, "?tag=later") == [second]
    assert listed(reader, "?tag=logged") == [first]


def test_the_runs_table_shows_display_names_stars_and_projects(app, runs):
    first, _ = runs
    editor = as_user(app, "bob")
    assert (
        editor.patch(
            api(first), json={"name": "<i>renamed</i>", "starred": True, "project": "vision"}
        ).status_code
        == 200
    )
    html = as_user(app, "carol").get("/").get_data(as_text=True)
    assert "&lt;i&gt;renamed&lt;/i&gt;</a>" in html
    assert 'title="starred"' in html
    assert "· first · vision" in html  # the logged name and the project beside it
