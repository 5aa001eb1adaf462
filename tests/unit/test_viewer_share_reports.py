"""Read-only links to reports (labstats.viewer.reports' report_export_html): anyone holding
one sees the report, its charts and pictures, as the one-file export made when the link is
opened; a link to the newest version follows later versions, one to an earlier version
stays on it; the token opens no report page, no other report and no export route."""

import re

import pytest
from test_viewer_share import TOKEN_LINK, log_run, make_app, section, session_client  # noqa: F401


@pytest.fixture
def app(make_app):  # noqa: F811
    return make_app()


def save_report(client, title: str, body: str, report_id: str | None = None, base: int | None = None) -> str:
    """A report saved through the reports' form; its id."""
    path = "/reports" if report_id is None else f"/reports/{report_id}"
    form = {"title": title, "body": body, **({"base": str(base)} if base else {})}
    saved = client.post(path, data=form)
    assert saved.status_code == 303, saved.text
    return saved.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def test_a_report_s_link_shows_it_and_follows_its_versions_unless_one_is_chosen(app, tmp_path):
    run_id = log_run(tmp_path, "reported-run", 3)
    other_id = log_run(tmp_path, "unshared-run", 4)
    bob = session_client(app, "bob")
    panels = (
        f"```labstats\nchart run=local/{run_id} series=loss\nmedia run=local/{run_id} name=samples\n```\n"
    )
    report_id = save_report(bob, "Findings one", "# Findings\n\nWhat we saw.\n\n" + panels)
    other_report = save_report(
        bob, "Other findings", f"```labstats\nchart run=local/{other_id} series=loss\n```\n"
    )

    made = bob.post("/share", data={"kind": "report", "report": report_id})
    assert made.status_code == 200, made.text
    (newest,) = set(TOKEN_LINK.findall(made.text))
    pinned = set(
        TOKEN_LINK.findall(bob.post("/share", data={"report": report_id, "version": "1"}).text)
    ).pop()
    links = {link.target.get("version"): link for link in app.extensions["labstats_share"].links("bob")}
    assert links[None].title == f"report {report_id}: Findings one"
    assert links[1].title == f"report {report_id} version 1: Findings one"

    anonymous = app.test_client()
    page = anonymous.get(f"/s/{newest}")
    assert page.status_code == 200
    assert "Findings one" in page.text
    assert "Bokeh" in page.text
    assert re.search(r"data:image/(webp|png|jpeg);base64,", page.text)
    assert "unshared-run" not in page.text
    assert "Other findings" not in page.text

    save_report(bob, "Findings two", "# Findings, revised\n\n" + panels, report_id=report_id, base=1)
    assert "Findings two" in anonymous.get(f"/s/{newest}").text  # the newest, as it reads now
    assert "Findings one" in anonymous.get(f"/s/{pinned}").text  # the version chosen
    assert "Findings two" not in anonymous.get(f"/s/{pinned}").text

    bearer = {"Authorization": f"Bearer {newest}"}
    for path in (
        "/reports",
        f"/reports/{report_id}",
        f"/reports/{other_report}",
        f"/reports/{report_id}/export.html",
        f"/reports/{other_report}/export.html",
    ):
        for headers in (bearer, {}):
            answer = anonymous.get(path, headers=headers)
            assert answer.status_code == 302, path
            assert answer.headers["Location"].startswith("/login?next="), path
    assert bob.post("/share", data={"report": "no-such-report"}).status_code == 404
    assert bob.post("/share", data={"report": report_id, "version": "9"}).status_code == 404
    assert bob.post("/share", data={"report": report_id, "version": "0"}).status_code == 400
