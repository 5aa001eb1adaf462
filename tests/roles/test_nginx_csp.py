"""One Content-Security-Policy: labstats.viewer.csp writes it, the viewer sends it and nginx
passes it through; the nginx role only adds the same policy (nginx_viewer_csp) to the answers
nginx makes itself. The role's value must be the package's, and no nginx template may write
a policy of its own or drop the viewer's."""

import re
from pathlib import Path

import jinja2
import yaml

from labstats.viewer.csp import CSP

ROLE = Path(__file__).resolve().parents[2] / "roles" / "nginx"


def defaults():
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_the_role_adds_the_packages_policy():
    assert defaults()["nginx_viewer_csp"] == CSP


def render(name, **overrides):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True)
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    context = {**defaults(), "ansible_managed": "Ansible managed", "nginx_server_name": "web",
               "nginx_jupyter_upstream": "127.0.0.1:8888", **overrides}  # fmt: skip
    return env.get_template(name).render(context)


def test_nginx_writes_no_policy_of_its_own_and_keeps_the_viewers():
    fallback = re.search(r"\$labstats_csp \{\n(.*?)\n\}", render("labstats.conf.j2"), re.S)
    assert fallback is not None
    assert fallback.group(1).split("\n") == [f'    "" "{CSP}";', '    default "";']
    rendered = [render(p.name) for p in sorted((ROLE / "templates").glob("*.j2"))]
    lines = [
        line.strip()
        for text in rendered
        for line in text.splitlines()
        if "content-security-policy" in line.lower() and not line.lstrip().startswith("#")
    ]
    # The proxy snippet (/login includes it too): the role's policy only where the viewer
    # sent none (the map above); no location hides the viewer's own header.
    assert lines == ["add_header Content-Security-Policy $labstats_csp always;"]


def test_the_login_and_password_forms_go_through_the_viewer_proxy_with_their_own_budget():
    block = re.search(
        r"location ~ \^/\(login\|account/password\)\$ \{\n(.*?)\n    \}", render("labstats.conf.j2"), re.S
    )
    assert block is not None
    lines = [line.strip() for line in block.group(1).splitlines()]
    assert "include /etc/nginx/snippets/labstats-viewer-proxy.conf;" in lines
    assert any(line.startswith("limit_req zone=labstats_login ") for line in lines)
    assert not any(line.startswith(("uwsgi_", "add_header")) for line in lines)  # no copy of the snippet
