"""Jupyter on the web box: its own non-root user, loopback only, behind nginx with its own
password; used from a real browser (Chromium) as a person does: log in, open the example
notebook, run all cells, see the Bokeh charts, save; the kernel's websocket stays up."""

import http.cookiejar
import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    assert_service_running,
    credentials_dir,
    https_get,
    https_request,
    log_run_on_trainbox,
    wait_until,
    web_url,
)
from playwright.sync_api import sync_playwright

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
        # Every browser sends an Origin with a form POST: Jupyter must accept the public one.
        origin = web_url("").rstrip("/")
        status, url, _ = self.request(
            "POST", "/jupyter/login?next=%2Fjupyter%2Ftree", form, {"Origin": origin}
        )
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


READ_SERVER_MEMORY = """
import sys
pid = int(sys.argv[1])
for name in ("mem", "environ"):
    try:
        open(f"/proc/{pid}/{name}", "rb").read(1)
        print("read", name)
    except OSError as error:
        print("refused", name, error.errno)
"""


def test_a_kernel_cannot_read_the_jupyter_servers_memory(host):
    """Kernels run as the server's own user: the server is made not dumpable, so they cannot
    read its memory or environment through /proc (its secrets, any cookie it was sent)."""
    server = next(
        p for p in host.process.filter(user="jupyter") if "jupyter" in p.args and "kernel" not in p.args
    )
    with host.sudo("jupyter"):
        out = host.check_output("python3 -c %s %s", READ_SERVER_MEMORY, str(server.pid))
    assert out.splitlines() == ["refused mem 13", "refused environ 13"]


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


ARTIFACTS = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[2])) / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip


def menu(page, name: str, item: str) -> None:
    page.click(f".lm-MenuBar-itemLabel:text-is('{name}')")
    page.click(f".lm-Menu-itemLabel:text-is('{item}')")


def test_a_person_uses_the_example_notebook_in_a_browser(host, logged_run):
    name, _ = logged_run
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing (scripts/host-setup.sh installs it)"
    before = int(host.check_output("sudo stat -c %%Y %s", NOTEBOOK))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        sockets, refused = [], []
        page.on("websocket", lambda ws: sockets.append(ws))
        page.on(
            "response", lambda r: r.status in (403, 404) and "/jupyter/" in r.url and refused.append(r.url)
        )
        page.goto(web_url("/jupyter"))  # without the slash, as people type it
        page.fill("input[name=password]", jupyter_password())
        page.click("#login_submit")
        page.wait_for_url("**/jupyter/tree**")
        page.goto(web_url("/jupyter/notebooks/labstats-example.ipynb"))
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.wait_for_function("() => document.querySelector('.jp-Notebook-ExecutionIndicator')"
                               " ?.getAttribute('data-status') === 'idle'", timeout=60_000)  # fmt: skip
        menu(page, "Edit", "Clear Outputs of All Cells")  # so what is checked below is new
        assert page.locator(".jp-OutputArea-output").count() == 0
        menu(page, "Run", "Run All Cells")
        # The kernel works through the cells (busy), then is idle again: all of them ran.
        # (Cells out of view may not be in the page at all: the saved file is checked below.)
        indicator = (
            "() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute('data-status')"
        )
        page.wait_for_function(f"{indicator} === 'busy'", timeout=30_000)
        page.wait_for_function(f"{indicator} === 'idle'", timeout=180_000)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert errors.count() == 0, errors.all_inner_texts()
        # The page draws a cell's output when the cell is near the view (long notebooks are
        # windowed), and Run All leaves the view at the end: read it from the top, as a person
        # does, until the charts are drawn (on a loaded CI machine this can take a while).
        page.mouse.move(700, 500)
        page.evaluate("() => document.querySelector('.jp-WindowedPanel-outer')?.scrollTo(0, 0)")
        deadline = time.monotonic() + 120
        while page.evaluate("() => window.Bokeh ? Bokeh.documents.length : 0") < 2:
            if time.monotonic() > deadline:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "jupyter-notebook-no-charts.png"), full_page=True)
                pytest.fail("the notebook's Bokeh charts were not drawn within 120 s of the run")
            page.mouse.wheel(0, 300)
            time.sleep(1)
        assert page.evaluate("() => Bokeh.documents.flatMap(d => [...d.roots()]).length") >= 2  # drawn
        assert name in page.locator(".jp-Notebook").inner_text()  # the run just logged is listed
        menu(page, "File", "Save Notebook")
        time.sleep(2)  # the kernel's websocket must outlive the run and the save
        kernel = [ws for ws in sockets if "/api/kernels/" in ws.url and "/channels" in ws.url]
        assert kernel, [ws.url for ws in sockets]
        assert not kernel[-1].is_closed()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyter-notebook.png"), full_page=True)
        browser.close()
    assert int(host.check_output("sudo stat -c %%Y %s", NOTEBOOK)) > before  # saved
    saved = json.loads(host.check_output("sudo cat %s", NOTEBOOK))
    code = [cell for cell in saved["cells"] if cell["cell_type"] == "code"]
    counts = [cell["execution_count"] for cell in code]
    assert None not in counts
    assert counts == sorted(counts)  # every cell, once, in order, in this session
    outputs = [o for cell in code for o in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("application/vnd.bokehjs_exec.v0+json" in o.get("data", {}) for o in outputs) >= 3
    with host.sudo():
        assert host.file(
            "/var/lib/labstats-jupyter/notebooks/.ipynb_checkpoints/labstats-example-checkpoint.ipynb"
        ).exists
    assert refused == []


def test_jupyter_cookies_are_secure_and_its_version_needs_a_login():
    status, headers, _ = https_get("/jupyter/login")
    assert status == 200
    # Jupyter's own CSP (its pages need inline scripts), not the viewer's; nginx's headers once.
    assert headers.get_all("Content-Security-Policy") == [
        "frame-ancestors 'self'; report-uri /jupyter/api/security/csp-report"
    ]
    assert headers.get_all("X-Content-Type-Options") == ["nosniff"]
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    xsrf = [c for c in headers.get_all("Set-Cookie") if c.startswith("_xsrf=")]
    assert xsrf
    assert "Secure" in xsrf[0]
    assert https_get("/jupyter/api")[0] == 404
    assert https_get("/jupyter/api/")[0] == 404
    assert https_get("/jupyter/api/status")[0] == 403
    status, headers, _ = https_get("/jupyter")
    assert (status, headers["Location"]) == (301, "/jupyter/")  # relative: keeps the public port


def test_jupyter_logins_are_rate_limited():
    # The last Jupyter test: it spends this client's login budget.
    statuses = [https_request("/jupyter/login", "POST", data=b"password=guess")[0] for _ in range(12)]
    assert 429 in statuses
