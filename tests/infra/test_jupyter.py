"""Jupyter on the web box: its own non-root user, loopback only, behind nginx with its own
password; a kernel started through the API; the example notebook runs clean on a run
logged on the training box."""

import http.cookiejar
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import assert_service_running, credentials_dir, log_run_on_trainbox, wait_until, web_url

testinfra_hosts = ["webbox"]
NOTEBOOK = "/var/lib/labstats-jupyter/notebooks/labstats-example.ipynb"


def jupyter_password() -> str:
    with open(f"{credentials_dir()}/web/jupyter.password") as f:
        return f.read().strip()


class Browser:
    """Just enough of a browser for Jupyter's login: cookies, XSRF token, no cert check."""

    def __init__(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def xsrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "_xsrf"), "")

    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(web_url(path), data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as response:
                return response.status, response.geturl(), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.geturl(), error.read()

    def login(self, password: str) -> int:
        self.request("GET", "/jupyter/login")
        form = urllib.parse.urlencode({"password": password, "_xsrf": self.xsrf()}).encode()
        status, url, _ = self.request("POST", "/jupyter/login?next=%2Fjupyter%2Ftree", form)
        return status if "/login" not in url else 403


def test_jupyter_runs_as_its_own_user_without_sudo(host):
    assert_service_running(host, "labstats-jupyter")
    with host.sudo():
        owners = host.check_output("ps -eo user:20,args | grep '[j]upyter-notebook\\|[j]upyter notebook'")
        sudo_rights = host.run("sudo -l -U jupyter").stdout
    assert {line.split()[0] for line in owners.splitlines()} == {"jupyter"}
    assert "not allowed" in sudo_rights
    assert host.user("jupyter").uid != 0
    assert host.user("jupyter").shell == "/usr/sbin/nologin"


def test_jupyter_listens_on_loopback_only(host):
    with host.sudo():
        sockets = host.check_output("ss -H -tlnp sport = :8888").splitlines()
    assert [line.split()[3] for line in sockets] == ["127.0.0.1:8888"]


def test_notebook_credentials_are_for_the_jupyter_user_only(host):
    with host.sudo():
        config = host.file("/var/lib/labstats-jupyter/.config/labstats/config.toml")
        assert config.mode == 0o600
        assert config.user == "jupyter"
        assert "redis://viewer:" in config.content_string
        assert not host.file("/etc/labstats/jupyter/jupyter_server_config.py").contains('token = "[^"]')


def test_jupyter_through_nginx_demands_its_password():
    browser = Browser()
    status, url, _ = browser.request("GET", "/jupyter/tree")
    assert status == 200
    assert "/jupyter/login" in url  # sent to the login page
    assert browser.request("GET", "/jupyter/api/kernels")[0] == 403
    assert browser.login("wrong password") == 403


def test_with_the_password_a_kernel_starts_through_the_api():
    browser = Browser()
    assert browser.login(jupyter_password()) == 200
    headers = {"X-XSRFToken": browser.xsrf(), "Content-Type": "application/json"}
    status, _, body = browser.request(
        "POST", "/jupyter/api/kernels", json.dumps({"name": "python3"}).encode(), headers
    )
    assert status == 201
    kernel = json.loads(body)
    assert browser.request("DELETE", f"/jupyter/api/kernels/{kernel['id']}", headers=headers)[0] == 204


@pytest.fixture(scope="module")
def logged_run():
    name, run_id = log_run_on_trainbox("notebook-check", steps=3000)
    return name, run_id


def test_example_notebook_runs_clean_on_a_run_from_the_training_box(host, logged_run):
    name, run_id = logged_run
    check = "/opt/labstats-jupyter/venv/bin/python -c %s"
    probe = f"import labstats; print(labstats.connect().run('{run_id}').status)"
    with host.sudo("jupyter"):
        assert wait_until(lambda: host.run(f"cd /tmp && {check}", probe).stdout.strip() == "finished", 30)
        result = host.run(
            "cd /tmp && /opt/labstats-jupyter/venv/bin/jupyter nbconvert --to notebook --execute "
            "--ExecutePreprocessor.timeout=120 --output-dir /tmp --output executed.ipynb %s",
            NOTEBOOK,
        )
        assert result.rc == 0, result.stderr
        executed = json.loads(host.check_output("cat /tmp/executed.ipynb"))
    outputs = [o for cell in executed["cells"] if cell["cell_type"] == "code" for o in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = json.dumps(outputs)
    assert name in text  # the notebook listed and opened the run just logged
