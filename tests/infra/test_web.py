"""The web front: nginx (TLS, login) → uWSGI → the viewer, reading the replica."""

import json

from conftest import assert_service_running, https_get, log_run_on_trainbox, wait_until, web_password

testinfra_hosts = ["webbox"]


def auth():
    return ("labstats", web_password())


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


def test_viewer_socket_is_for_nginx_only(host):
    with host.sudo():
        sock = host.file("/run/labstats-viewer/uwsgi.sock")
        assert sock.is_socket
        assert sock.mode == 0o660
        assert sock.group == "www-data"
        config = host.file("/etc/labstats/viewer.toml")
        assert config.mode == 0o640
        assert config.group == "labstats-viewer"
    assert host.run("cat /etc/labstats/viewer.toml").rc != 0  # not even the admin reads it unprivileged


def test_https_demands_a_login(host):
    status, headers, _ = https_get("/")
    assert status == 401
    assert "Basic" in headers["WWW-Authenticate"]
    assert https_get("/api/runs", auth=("labstats", "wrong"))[0] == 401
    status, headers, body = https_get("/", auth=auth())
    assert status == 200
    assert b"labstats" in body


def test_security_headers_and_no_version(host):
    _, headers, _ = https_get("/", auth=auth())
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert "script-src 'self' 'unsafe-eval'" in headers["Content-Security-Policy"]
    assert headers.get_all("Content-Security-Policy") == [headers["Content-Security-Policy"]]  # one policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "nginx"  # no version


def test_http_redirects_to_https(host):
    probe = (
        "import http.client as h; c = h.HTTPConnection('127.0.0.1', 80); c.request('GET', '/x?y=1'); "
        "r = c.getresponse(); print(r.status, r.getheader('Location'))"
    )
    status, location = host.check_output("python3 -c %s", probe).split()
    assert status == "301"
    assert location.startswith("https://")
    assert location.endswith("/x?y=1")


def test_a_run_logged_on_the_training_box_appears_in_the_viewer_api(host):
    _, run_id = log_run_on_trainbox("web-check", steps=300)

    def visible():
        status, _, body = https_get("/api/runs?q=web-check", auth=auth())
        return status == 200 and any(r["id"] == run_id for r in json.loads(body)["runs"])

    assert wait_until(visible, timeout=30)
    status, _, body = https_get(f"/api/runs/trainbox/{run_id}/series/loss", auth=auth())
    series = json.loads(body)
    assert status == 200
    assert series["total"] == 300
    assert series["values"][0] == 1.0
    status, _, body = https_get(f"/runs/trainbox/{run_id}", auth=auth())
    assert status == 200
    assert b"&lt;b&gt;not bold&lt;/b&gt;" in body
