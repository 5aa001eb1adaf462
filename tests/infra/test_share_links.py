"""Read-only links through nginx and uWSGI on the lab's web box: a link made by an editor
(here the admin's API token) shows its run to a client with no account; the same token opens
nothing else, neither the viewer's pages and API (as a Bearer token, a cookie or a query) nor
Jupyter; a revoked link is a 410 within a second in every worker; forged links are 404 and
rate-limited per address."""

import json
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from conftest import https_get, https_request, log_run_on_trainbox, wait_until, web_token

testinfra_hosts = ["webbox"]
TOKEN_LINK = re.compile(rb"/s/([A-Za-z0-9_-]{43})")


def make_link(run_id: str, **form) -> tuple[str, str]:
    """(token, link id) of a new link to the run, made with the admin's API token."""
    body = urllib.parse.urlencode({"run": f"trainbox/{run_id}", **form}).encode()
    status, _, page = https_request(
        "/share", "POST", token=web_token(), data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 200, page[:500]
    (token,) = set(TOKEN_LINK.findall(page))
    link_id = re.search(rb'data-link="([0-9a-f]+)"', page).group(1).decode()
    return token.decode(), link_id


def logged_run(name: str) -> str:
    _, run_id = log_run_on_trainbox(name, steps=200)

    def visible():
        status, _, body = https_get(f"/api/runs?q={name}", token=web_token())
        return status == 200 and any(r["id"] == run_id for r in json.loads(body)["runs"])

    assert wait_until(visible, timeout=30)
    return run_id


def test_a_link_shows_its_run_to_anyone_and_the_token_opens_nothing_else(host):
    run_id = logged_run("share-check")
    other_id = logged_run("share-other")
    token, _ = make_link(run_id)
    status, headers, body = https_get(f"/s/{token}")
    assert status == 200
    assert b"share-check" in body
    assert b"share-other" not in body
    assert "'unsafe-inline'" in headers["Content-Security-Policy"]  # the export's, on /s/ only
    assert headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in headers
    for path in ("/", "/links", f"/runs/trainbox/{run_id}", f"/runs/trainbox/{other_id}",
                 f"/runs/trainbox/{run_id}/export.html"):  # fmt: skip
        for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"__Host-labstats-viewer={token}"}):
            status, answer, _ = https_get(path, headers=headers)
            assert status == 302, (path, headers)
            assert answer["Location"].startswith("/login?next="), path
    for path in ("/api/runs", f"/api/runs/trainbox/{other_id}/series/loss",
                 f"/api/runs/trainbox/{run_id}", f"/api/runs/trainbox/{other_id}/media"):  # fmt: skip
        assert https_get(path, token=token)[0] == 401, path
        assert https_get(f"{path}?token={token}")[0] == 401, path
        assert https_get(path, headers={"Cookie": f"__Host-labstats-viewer={token}"})[0] == 401, path
    # Jupyter is a server of its own with its own password: the link's token is nothing to it.
    for path, headers in (
        (f"/jupyter/api/contents?token={token}", {}),
        ("/jupyter/api/contents", {"Authorization": f"token {token}"}),
        ("/jupyter/api/kernels", {"Authorization": f"Bearer {token}"}),
        ("/jupyter/api/contents", {"Cookie": f"__Host-labstats-viewer={token}"}),
    ):
        assert https_get(path, headers=headers)[0] in (401, 403), (path, headers)
    status, answer, _ = https_get(f"/jupyter/tree?token={token}")
    assert status in (302, 401, 403)
    if status == 302:
        assert "/jupyter/login" in answer["Location"]


def test_a_revoked_link_is_410_within_a_second_in_every_worker(host):
    run_id = logged_run("share-revoke")
    token, link_id = make_link(run_id, days="1")
    assert https_get(f"/s/{token}")[0] == 200
    status, _, _ = https_request(f"/links/{link_id}/revoke", "POST", token=web_token(), data=b"")
    assert status == 303
    revoked_at = time.monotonic()
    first = https_get(f"/s/{token}")
    assert first[0] == 410
    assert time.monotonic() - revoked_at < 1.0
    assert b"share-revoke" not in first[2]
    assert all(https_get(f"/s/{token}")[0] == 410 for _ in range(6))  # both uWSGI workers


def test_a_report_s_link_shows_the_report_and_no_report_page(host):
    run_id = logged_run("share-report")
    body = urllib.parse.urlencode({
        "title": "Shared lab findings",
        "body": f"# Findings\n\n```labstats\nchart run=trainbox/{run_id} series=loss\n```\n",
    }).encode()  # fmt: skip
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = https_request("/reports", "POST", token=web_token(), data=body, headers=form)
    assert status == 303
    report_id = headers["Location"].rstrip("/").rsplit("/", 1)[1]
    data = urllib.parse.urlencode({"report": report_id}).encode()
    status, _, page = https_request("/share", "POST", token=web_token(), data=data, headers=form)
    assert status == 200
    (token,) = {t.decode() for t in TOKEN_LINK.findall(page)}
    status, _, shown = https_get(f"/s/{token}")
    assert status == 200
    assert b"Shared lab findings" in shown
    for path in (f"/reports/{report_id}", f"/reports/{report_id}/export.html", "/reports"):
        assert https_get(path, token=token)[0] == 302, path


def test_forged_links_are_404_naming_no_run_and_rate_limited_per_address(host):
    # The last test here: it spends this client's budget of /s/ requests.
    forged = "A" * 43
    status, _, body = https_get(f"/s/{forged}")
    assert status == 404
    assert b"trainbox" not in body
    with ThreadPoolExecutor(8) as pool:  # faster than nginx_share_rate, whatever one request costs
        statuses = list(pool.map(lambda _: https_get(f"/s/{forged}")[0], range(60)))
    assert 429 in statuses  # nginx's labstats_share zone
    assert set(statuses) <= {404, 429}
    assert https_get("/api/runs", token=web_token())[0] == 200  # scripts are not slowed by it
