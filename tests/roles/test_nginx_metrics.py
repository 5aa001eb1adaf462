"""Prometheus inside the tunnel and the share links, rendered from the roles (no host): the
nginx site's metrics server listens on the tunnel address only when one is given, serves
only /metrics with the token from a root-only file; the firewall opens its port on the
tunnel interface only (through Ansible's own templating of the role's fact); the viewer's
tokens file holds the metrics token's digest as a reader and its config names the stamps'
folder; /s/ has its own budget per address."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jinja2
import yaml
from test_firewall_template import render as render_firewall
from test_firewall_template import rule_lines
from test_viewer_accounts import in_ansible

from labstats.viewer.auth import hash_token, read_entries

ROLES = Path(__file__).resolve().parents[2] / "roles"
NGINX = yaml.safe_load((ROLES / "nginx/defaults/main.yml").read_text())
NGINX_TASKS = yaml.safe_load((ROLES / "nginx/tasks/main.yml").read_text())


def render_site(**overrides) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLES / "nginx/templates"), trim_blocks=True)
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    context = {**NGINX, "ansible_managed": "Ansible managed", "nginx_server_name": "web",
               "nginx_jupyter_upstream": "", "nginx_metrics_interface": "wg0", **overrides}  # fmt: skip
    return env.get_template("labstats.conf.j2").render(context)


def block(text: str, start: str) -> str:
    """The braces' block that opens on the line starting with ``start``."""
    at = text.index(start)
    depth, i = 0, text.index("{", at)
    for i in range(text.index("{", at), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
    return text[at : i + 1]


def test_the_metrics_server_listens_on_the_tunnel_address_only_and_serves_only_metrics():
    text = render_site(nginx_metrics_address="10.77.0.1", nginx_metrics_token="the-metrics-token")
    server = block(text, "server {\n    listen 10.77.0.1:9187;")
    listens = re.findall(r"^\s*listen (.*);", server, re.M)
    assert listens == ["10.77.0.1:9187"]
    locations = re.findall(r"^\s*location (.*) \{", server, re.M)
    assert locations == ["= /metrics", "/"]
    metrics = block(server, "location = /metrics")
    assert "include /etc/nginx/labstats-metrics-token.conf;" in metrics
    assert "include /etc/nginx/snippets/labstats-viewer-proxy.conf;" in metrics
    assert "limit_except GET" in metrics
    assert "return 404;" in block(server, "location / {")
    assert "the-metrics-token" not in text  # the token is never in the world-readable site file
    assert ":9187" not in render_site(nginx_metrics_address="")  # no address: no such server
    assert "listen [fd00::1]:9187;" in render_site(nginx_metrics_address="fd00::1")


def test_the_token_file_replaces_the_authorization_the_scraper_sent():
    task = next(
        t for t in NGINX_TASKS if t.get("ansible.builtin.copy", {}).get("dest", "").endswith("token.conf")
    )
    copy = task["ansible.builtin.copy"]
    assert copy["mode"] == "0600"
    assert copy["owner"] == "root"
    assert task["no_log"] is True
    # nginx passes no request header that a uwsgi_param of its HTTP_ name already sets.
    assert 'uwsgi_param HTTP_AUTHORIZATION "Bearer {{ nginx_metrics_token }}";' in copy["content"]


def test_the_firewall_opens_the_metrics_port_on_the_tunnel_interface_only():
    fact = next(t for t in NGINX_TASKS if "nginx__firewall_inbound" in t.get("ansible.builtin.set_fact", {}))
    template = fact["ansible.builtin.set_fact"]["nginx__firewall_inbound"]
    # The role's default rule, templated as Ansible does (the port and interface filled in).
    fields = {"nginx_metrics_port": NGINX["nginx_metrics_port"], "nginx_metrics_interface": "wg0"}
    (rule,) = in_ansible(
        {"template": yaml.safe_dump(NGINX["nginx_metrics_firewall_inbound"]), "vars": fields}
    )
    variables = {"nginx_firewall_inbound": NGINX["nginx_firewall_inbound"],
                 "nginx_metrics_firewall_inbound": yaml.safe_load(rule)}  # fmt: skip
    on, off = in_ansible(
        {"template": template, "vars": {**variables, "nginx_metrics_address": "10.77.0.1"}},
        {"template": template, "vars": {**variables, "nginx_metrics_address": ""}},
    )
    assert [r["name"] for r in off] == ["http", "https"]
    assert on[-1] == {"name": "metrics", "proto": "tcp", "port": "9187", "iifname": "wg0"}
    assert rule_lines(render_firewall(on))[-1] == 'iifname "wg0" tcp dport 9187 accept comment "metrics"'


def test_share_links_have_a_budget_per_address():
    text = render_site()
    assert "limit_req_zone $binary_remote_addr zone=labstats_share:10m rate=5r/s;" in text
    share = block(text, "location /s/ {")
    assert "limit_req zone=labstats_share burst=20 nodelay;" in share
    assert "include /etc/nginx/snippets/labstats-viewer-proxy.conf;" in share


def test_the_viewer_knows_the_metrics_token_as_a_reader_and_where_the_stamps_are(tmp_path):
    template = (ROLES / "viewer/templates/viewer-tokens.j2").read_text()
    variables = {
        "viewer_api_tokens": [{"name": "labstats", "role": "admin"}],
        "viewer__tokens": {"labstats": "l" * 40},
    }
    with_metrics, without = in_ansible(
        {"template": template, "vars": {**variables, "viewer__metrics_token": "m" * 40}},
        {"template": template, "vars": variables},
    )
    assert "m" * 40 not in with_metrics
    (tmp_path / "tokens").write_text(with_metrics)
    assert read_entries(str(tmp_path / "tokens"), bytes.fromhex)["metrics"] == (
        bytes.fromhex(hash_token("m" * 40)),
        "reader",
    )
    (tmp_path / "tokens").write_text(without)
    assert "metrics" not in read_entries(str(tmp_path / "tokens"), bytes.fromhex)

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLES / "viewer/templates"), trim_blocks=True)
    toml = env.get_template("viewer.toml.j2").render(
        ansible_managed="x", viewer_sources=[], viewer_session_hours=12, viewer_session_idle_minutes=120,
        viewer_status_dir="/var/lib/labstats/status", viewer_share_max_days=30,
        viewer_alerts_history_file="/var/lib/labstats-alerts/alerts.sqlite",
    )  # fmt: skip
    assert tomllib.loads(toml)["metrics"] == {"status_dir": "/var/lib/labstats/status"}


def test_the_viewer_role_refuses_a_token_of_its_own_named_metrics():
    tasks = yaml.safe_load((ROLES / "viewer/tasks/main.yml").read_text())
    check = next(t for t in tasks if "viewer_metrics_token" in str(t.get("ansible.builtin.assert", "")))
    conditions = check["ansible.builtin.assert"]["that"]
    mine = [{"name": "metrics", "role": "admin"}]
    found = in_ansible(
        *(
            {"conditions": conditions, "vars": {"viewer_metrics_token": on, "viewer_api_tokens": tokens}}
            for on, tokens in ((True, mine), (False, mine), (True, [{"name": "ci", "role": "reader"}]))
        )
    )
    assert found == [False, True, True]


def test_share_tokens_stay_out_of_the_access_log_and_drawn_pages_have_a_budget():
    site = (ROLES / "nginx/templates/labstats.conf.j2").read_text()
    share = site.split("location /s/ {", 1)[1].split("\n    }", 1)[0]
    assert "access_log /var/log/nginx/access.log labstats_masked;" in share
    assert '~^/s/ "/s/…";' in site  # the masked form of the request line
    drawn = site.split("/figure", 1)[1].split("\n    }", 1)[0]
    assert "zone=labstats_expensive" in drawn
    metrics = site.split("location = /metrics {", 1)[1].split("include", 1)[0]
    assert "zone=labstats_metrics" in metrics
