"""The alerts role's config, through Ansible's own templating (no host): the settings it
builds are what the service reads (its TOML file parses and loads), a channel Apprise cannot
parse or a rule that does not parse fails the converge with a message naming it (the real
parser, fed what the role feeds it) before the account, the config, the unit or the service
change, and the channels come from the credentials folder by default. Ansible runs in a child
process (importing it patches sys.intern for the whole process)."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from labstats.ops import alert_rules

ROLE = Path(__file__).resolve().parents[2] / "roles" / "alerts"
TASKS = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
TOML = (ROLE / "templates" / "alerts.toml.j2").read_text()

# Templates jobs (JSON on stdin: {"vars", "template"}) with Ansible's Templar; answers JSON.
ANSIBLE = """
import json, sys
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

init_plugin_loader()  # lookups (the channels file) as in a play

def trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value

out = []
for job in json.load(sys.stdin):
    variables = {"ansible_managed": "Ansible managed", **trusted(job["vars"])}
    templar = Templar(loader=DataLoader(), variables=variables)
    out.append(templar.template(trusted(job["template"])))
print(json.dumps(out))
"""


def in_ansible(*jobs: dict) -> list:
    done = subprocess.run(
        [sys.executable, "-c", ANSIBLE], input=json.dumps(jobs), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def task(name_start: str) -> dict:
    return next(t for t in TASKS if t["name"].startswith(name_start))


def role_vars(tmp_path: Path, **given) -> dict:
    """The role's defaults with the playbook's inputs and ``given``, the credentials folder here."""
    return {
        **DEFAULTS,
        "alerts_credentials_dir": str(tmp_path / "credentials" / "alerts"),
        "alerts_sources": [{"source": "gpu1", "replica_port": 6380}],
        "alerts_redis_password": 'pw"with/odd&chars',
        **given,
    }


def settings(variables: dict) -> dict:
    template = task("The service's settings")["ansible.builtin.set_fact"]["alerts__settings"]
    return in_ansible({"vars": variables, "template": template})[0]


def checked(variables: dict) -> tuple[int, str]:
    """What the role's check task runs, with the stdin it templates: (exit status, stdout),
    and the message its fail task would show."""
    stdin = task("Channels and rules parse")["ansible.builtin.command"]["stdin"]
    (text,) = in_ansible({"vars": {**variables, "alerts__settings": settings(variables)}, "template": stdin})
    done = subprocess.run(
        [sys.executable, "-m", "labstats.ops.alerts", "--check"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    fail = task("The converge stops here")["ansible.builtin.fail"]["msg"]
    result = {"rc": done.returncode, "stdout_lines": done.stdout.splitlines(), "stderr": done.stderr}
    (message,) = in_ansible({"vars": {"_alerts_checked": result}, "template": fail})
    return done.returncode, message


def test_the_check_runs_before_the_account_config_unit_and_service_change():
    names = [t["name"] for t in TASKS]
    check = names.index(task("Channels and rules parse")["name"])
    stop = names.index(task("The converge stops here")["name"])
    assert names.index(task("Labstats with the alerts extra")["name"]) < check < stop
    for later in ("Alerts account", "State folder", "The service's config", "Alerts unit", "Alerts service"):
        assert stop < names.index(task(later)["name"]), later
    assert task("The converge stops here")["when"] == "_alerts_checked.rc != 0"


def test_a_bad_channel_or_rule_fails_the_converge_naming_it_without_secrets(tmp_path):
    variables = role_vars(
        tmp_path,
        alerts_channels=["json://127.0.0.1:9/", "nosuch://bob:hunter2-secret@example.org/x"],
        alerts_rules=[
            {"name": "loss high", "when": "val/loss > 2 after step 1000", "runs": "resnet-*"},
            {"name": "typo", "when": "val/loss >> 2"},
        ],
    )
    rc, message = checked(variables)
    assert rc == 1
    assert message.startswith("alerts: channel 2 (nosuch://example.org/…): Apprise cannot parse this URL")
    assert "rule 'typo': 'val/loss >> 2' is not METRIC OP NUMBER" in message
    assert "loss high" not in message
    assert "hunter2-secret" not in message


def test_good_settings_pass_the_check_and_make_a_config_the_service_loads(tmp_path):
    channels = ['mailtos://alerts:p%40ss"word@smtp.example.org?to=ops@example.org', "json://127.0.0.1:9/"]
    rules = [{"name": 'odd "rule" ✓', "when": '"my metric" < 0.5', "tag": "sweep", "level": "error"}]
    variables = role_vars(tmp_path, alerts_channels=channels, alerts_rules=rules, alerts_interval=10)
    assert checked(variables) == (0, "alerts: ")
    (text,) = in_ansible({"vars": {**variables, "alerts__settings": settings(variables)}, "template": TOML})
    config = alert_rules.load(tomllib.loads(text), "alerts.toml")
    assert config.channels == channels
    assert config.rules[0].name == 'odd "rule" ✓'
    assert config.rules[0].condition.metric == "my metric"
    assert config.interval == 10
    assert config.lab.backup_max_age == 26 * 3600
    assert config.state_file == "/var/lib/labstats-alerts/alerts.sqlite"
    (name, source), *_ = config.sources.items()
    assert name == "gpu1"
    assert source.url == "redis://viewer:pw%22with%2Fodd%26chars@127.0.0.1:6380/0"


def test_channels_come_from_the_credentials_folder_by_default(tmp_path):
    variables = role_vars(tmp_path)
    assert in_ansible({"vars": variables, "template": DEFAULTS["alerts_channels"]}) == [[]]  # no file: none
    folder = tmp_path / "credentials" / "alerts"
    folder.mkdir(parents=True)
    (folder / "channels").write_text(
        "# the lab's channels\n\nntfys://ntfy.example.org/labstats\n  json://h/x  \n"
    )
    found = in_ansible({"vars": variables, "template": DEFAULTS["alerts_channels"]})
    assert found == [["ntfys://ntfy.example.org/labstats", "json://h/x"]]
