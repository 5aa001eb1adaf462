"""The web front: nginx (TLS, rate-limited logins) → uWSGI → the viewer (its own login),
reading the replica."""

import json
import shlex
import time
import urllib.parse

from conftest import (
    assert_service_running,
    box,
    https_get,
    https_request,
    log_run_on_trainbox,
    wait_until,
    web_password,
    web_token,
)

testinfra_hosts = ["webbox"]


def form_login(password: str, origin: str | None = None):
    """POST the viewer's login form as a browser does (it sends an Origin header)."""
    address = box("webbox").ansible.get_variables()["ansible_host"]
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin or f"https://{address}"}
    data = urllib.parse.urlencode({"user": "labstats", "password": password, "next": "/"}).encode()
    return https_request("/login", "POST", headers=headers, data=data)


def login_when_allowed(password: str):
    """A login POST, waiting out the login rate limit (10 a minute) that earlier tests spent."""
    for _ in range(15):
        answer = form_login(password)
        if answer[0] != 429:
            return answer
        time.sleep(6)
    raise AssertionError("the login rate limit never let a login through")


def test_viewer_runs_as_its_own_user_under_a_hardened_unit(host):
    assert_service_running(host, "labstats-viewer")
    assert_service_running(host, "nginx")
    users = {p.user for p in host.process.filter(comm="uwsgi")}
    assert users == {"labstats-viewer"}
    assert host.user("labstats-viewer").shell == "/usr/sbin/nologin"
    props = host.check_output(
        "systemctl show labstats-viewer -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp"
    )
    assert "NoNewPrivileges=yes" in props
    assert "ProtectSystem=strict" in props
    assert "ProtectHome=yes" in props
    assert "PrivateTmp=yes" in props


def test_viewer_socket_and_secrets_are_for_the_viewer_only(host):
    with host.sudo():
        sock = host.file("/run/labstats-viewer/uwsgi.sock")
        assert sock.is_socket
        assert sock.mode == 0o660
        assert sock.group == "www-data"
        for path in ("viewer.toml", "viewer-users", "viewer-tokens", "viewer-session.key"):
            secret = host.file(f"/etc/labstats/{path}")
            assert (secret.mode, secret.user, secret.group) == (0o640, "root", "labstats-viewer"), path
        assert web_token() not in host.file("/etc/labstats/viewer-tokens").content_string  # its hash only
    assert host.run("cat /etc/labstats/viewer-session.key").rc != 0  # not even the admin, unprivileged


def test_pages_ask_for_a_login_and_the_api_for_a_token(host):
    status, headers, _ = https_get("/?q=x")
    assert status == 302
    assert headers["Location"].startswith("/login?next=")
    assert https_get("/api/runs")[0] == 401
    assert https_get("/api/runs", token="wrong")[0] == 401
    status, _, body = https_get("/api/runs", token=web_token())
    assert status == 200
    assert "runs" in json.loads(body)


def test_a_login_gives_a_session_cookie_that_the_pages_accept(host):
    assert form_login("wrong")[0] == 401
    assert form_login(web_password(), origin="https://evil.example")[0] == 403
    address = box("webbox").ansible.get_variables()["ansible_host"]
    for other_origin in (f"http://{address}", f"https://{address}:8443"):  # scheme and port count
        assert form_login(web_password(), origin=other_origin)[0] == 403, other_origin
    status, headers, _ = form_login(web_password())
    assert status == 302
    cookie = headers["Set-Cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Expires="):
        assert attribute in cookie
    assert cookie.startswith("__Host-labstats-viewer=")
    session = cookie.split(";", 1)[0]
    status, _, body = https_get("/", headers={"Cookie": session})
    assert status == 200
    assert b"log out labstats" in body
    assert "Set-Cookie" not in https_get("/", headers={"Cookie": session})[1]  # never renewed


def test_a_session_ends_at_logout_and_by_an_admin_in_every_worker(host):
    """The cookie used to stay valid after logout (a signed cookie, renewed by every answer)."""

    def login() -> str:
        status, headers, _ = login_when_allowed(web_password())
        assert status == 302
        return headers["Set-Cookie"].split(";", 1)[0]

    def works(session: str) -> bool:
        return all(https_get("/api/runs", headers={"Cookie": session})[0] == 200 for _ in range(6))

    session = login()
    assert works(session)  # several requests: both uWSGI workers answer some
    address = box("webbox").ansible.get_variables()["ansible_host"]
    status, _, _ = https_request(
        "/logout", "POST", headers={"Cookie": session, "Origin": f"https://{address}"}, data=b""
    )
    assert status in (302, 303)
    assert all(https_get("/api/runs", headers={"Cookie": session})[0] == 401 for _ in range(6))

    session = login()
    assert works(session)
    with host.sudo():
        host.check_output(
            "/opt/labstats-viewer/venv/bin/python -m labstats.viewer.sessions end labstats "
            "--config /etc/labstats/viewer.toml"
        )
        sessions = host.file("/var/lib/labstats-viewer/sessions.sqlite")
        assert (sessions.user, sessions.mode) == ("labstats-viewer", 0o600)
    assert all(https_get("/api/runs", headers={"Cookie": session})[0] == 401 for _ in range(6))


def test_expensive_requests_have_a_budget_per_session(host):
    """Montages, animations, point clouds, FITS previews and downloads decode or send whole
    files: one session asking for them in a loop is slowed (429), not the others, and not
    its own cheap requests."""
    first = login_when_allowed(web_password())[1]["Set-Cookie"].split(";", 1)[0]
    second = login_when_allowed(web_password())[1]["Set-Cookie"].split(";", 1)[0]
    expensive = "/api/runs/trainbox/no-such-run/montage/x?steps=1"
    answers = [https_get(expensive, headers={"Cookie": first})[0] for _ in range(60)]
    assert answers[0] == 404  # it reached the viewer: the run does not exist
    assert 429 in answers
    assert https_get("/api/runs", headers={"Cookie": first})[0] == 200
    assert https_get(expensive, headers={"Cookie": second})[0] == 404


ECHO_COOKIES = """
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (self.headers.get("Cookie") or "").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).handle_request()
"""
FETCH_WITH_COOKIE = (
    "import sys, urllib.request as u; "
    "r = u.Request('http://127.0.0.1:18098/x', headers={'Cookie': sys.argv[1]}); "
    "print(u.urlopen(r, timeout=10).read().decode())"
)
PROXY_TO_ECHO = """
server {
    listen 127.0.0.1:18098;
    location / {
        proxy_pass http://127.0.0.1:18099;
        include /etc/nginx/snippets/labstats-jupyter-proxy.conf;
    }
}
"""


def test_jupyter_never_gets_the_viewers_session_cookie(host):
    """Through the exact proxy settings nginx uses for /jupyter/, to a server that echoes the
    Cookie header it receives: every other cookie passes, the viewer's never."""
    sent = {
        "__Host-labstats-viewer=SECRET": "",
        "__Host-labstats-viewer=SECRET; _xsrf=2|a": "_xsrf=2|a",
        "a=1; __Host-labstats-viewer=SECRET": "a=1",
        "a=1; __Host-labstats-viewer=SECRET; b=2": "a=1; b=2",
        "username-127-0-0-1-8443=x; _xsrf=y": "username-127-0-0-1-8443=x; _xsrf=y",
    }
    with host.sudo():
        host.check_output(f"printf %s {shlex.quote(PROXY_TO_ECHO)} > /etc/nginx/conf.d/zz-echo-test.conf")
        try:
            host.check_output("nginx -t -q && systemctl reload nginx")
            for cookie, wanted in sent.items():
                host.run_test(
                    "sh -c %s", f"python3 -c {shlex.quote(ECHO_COOKIES)} 18099 >/tmp/echo.log 2>&1 &"
                )
                wait_until(lambda: host.socket("tcp://127.0.0.1:18099").is_listening, timeout=10)
                got = host.check_output("python3 -c %s %s", FETCH_WITH_COOKIE, cookie)
                assert "SECRET" not in got
                assert got.strip("; ") == wanted
        finally:
            host.run("rm -f /etc/nginx/conf.d/zz-echo-test.conf && systemctl reload nginx")


def test_the_viewers_memory_is_bounded(host):
    props = host.check_output("systemctl show labstats-viewer -p MemoryMax -p MemorySwapMax")
    assert "MemoryMax=infinity" not in props
    max_bytes = int(props.split("MemoryMax=")[1].split()[0])
    assert max_bytes <= 4 << 30
    with host.sudo():
        ini = host.file("/etc/labstats/viewer-uwsgi.ini").content_string
    assert "reload-on-rss = " in ini
    assert "evil-reload-on-rss = " in ini


def test_security_headers_and_no_version(host):
    _, headers, _ = https_get("/", token=web_token())
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert "script-src 'self' 'unsafe-eval'" in headers["Content-Security-Policy"]
    assert headers.get_all("Content-Security-Policy") == [headers["Content-Security-Policy"]]  # one policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "nginx"  # no version


def test_http_redirects_to_https_at_the_configured_name_not_the_request_host(host):
    variables = host.ansible.get_variables()
    port = variables.get("nginx_public_https_port", 443)
    name = variables.get("nginx_server_name", variables["ansible_host"]) + ("" if port == 443 else f":{port}")
    probe = (
        "import http.client as h; c = h.HTTPConnection('127.0.0.1', 80); "
        "c.request('GET', '/x?y=1', headers={'Host': 'evil.example'}); "
        "r = c.getresponse(); print(r.status, r.getheader('Location'))"
    )
    status, location = host.check_output("python3 -c %s", probe).split()
    assert status == "301"
    assert location == f"https://{name}/x?y=1"  # the configured name, not evil.example


def test_long_cookies_and_queries_reach_the_viewer_not_a_502(host):
    cookie = {"Cookie": "pad=" + "c" * 3800}
    query = "/api/runs?q=" + "q" * 3000
    assert https_get(query, token=web_token(), headers=cookie)[0] == 200
    assert https_get("/?q=" + "q" * 7000, token=web_token(), headers={"Cookie": "p=" + "c" * 7000})[0] == 200
    assert https_get("/?q=" + "q" * 9000, token=web_token())[0] == 414  # past nginx's limit: refused there


def test_a_run_logged_on_the_training_box_appears_in_the_viewer_api(host):
    _, run_id = log_run_on_trainbox("web-check", steps=300)

    def visible():
        status, _, body = https_get("/api/runs?q=web-check", token=web_token())
        return status == 200 and any(r["id"] == run_id for r in json.loads(body)["runs"])

    assert wait_until(visible, timeout=30)
    status, _, body = https_get(f"/api/runs/trainbox/{run_id}/series/loss", token=web_token())
    series = json.loads(body)
    assert status == 200
    assert series["total"] == 300
    assert series["values"][0] == 1.0
    status, _, body = https_get(f"/runs/trainbox/{run_id}", token=web_token())
    assert status == 200
    assert b"&lt;b&gt;not bold&lt;/b&gt;" in body


def test_login_attempts_are_rate_limited_per_client(host):
    # The last test of the web front: it spends this client's login budget.
    assert login_when_allowed("guess")[0] == 401  # the budget is not spent before the guesses
    statuses = [form_login("guess")[0] for _ in range(12)]
    assert 429 in statuses
    # A logged-in browser and scripts with a token are not slowed by someone guessing.
    assert https_get("/api/runs", token=web_token())[0] == 200
