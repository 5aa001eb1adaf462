"""The alerts service on the web box, with real receivers started here: an HTTP receiver and a
plain SMTP server on the web box's loopback (the inventory's alerts_channels point at them:
json://127.0.0.1:8765/ and mailto://127.0.0.1:8025?to=ops@example.com&from=labstats@example.com),
and real runs on the training box. A SIGKILLed run is told within 2 minutes, a NaN within
30 s, a stalled loop within its threshold + 30 s and "resolved" when it logs again; nothing
twice; the history page lists them."""

import json
import shlex
import time

import pytest
from conftest import assert_service_running, box, https_get, wait_until, web_token

testinfra_hosts = ["webbox"]

SERVICE, ACCOUNT = "labstats-alerts", "labstats-alerts"
RECEIVED = "/var/tmp/labstats-alerts-received.jsonl"
HTTP_PORT, SMTP_PORT = 8765, 8025

# Both receivers in one process (the web box's system Python), each message a JSON line.
RECEIVERS = r"""
import email, email.policy, http.server, json, socketserver, sys, threading, time
out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
def keep(channel, title, body):
    with lock:
        out.write(json.dumps({"at": time.time(), "channel": channel, "title": title, "body": body}) + "\n")
class Web(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        keep("json", data.get("title", ""), data.get("message", ""))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
class Mail(socketserver.StreamRequestHandler):
    def handle(self):
        say = lambda line: self.wfile.write(line.encode() + b"\r\n")
        say("220 test")
        while line := self.rfile.readline():
            verb = line.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
            if verb == "QUIT": say("221 bye"); return
            if verb == "EHLO": say("250-test"); say("250 8BITMIME")
            elif verb == "DATA":
                say("354 go on"); lines = []
                while (part := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(part[1:] if part.startswith(b"..") else part)
                message = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                body = message.get_body(preferencelist=("plain", "html"))
                keep("mail", str(message["subject"]), body.get_content() if body else "")
                say("250 kept")
            else: say("250 OK")
socketserver.ThreadingTCPServer.allow_reuse_address = True
mail = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[3])), Mail)
threading.Thread(target=mail.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Web).serve_forever()
"""

# A run on the training box: logs, then does what its mode says; writes its id to <name>.id.
RUN = r"""
import sys, time, threading, labstats
name, mode = sys.argv[1], sys.argv[2]
stats = labstats.Stats("runs/" + name, name=name, system_metrics=False)
open(name + ".id", "w").write(stats.run_id)
for step in range(50):
    stats.log(step=step, loss=1.0 / (step + 1)); time.sleep(0.05)
if mode == "nan":
    stats.log(step=50, loss=float("nan"))
if mode == "alert":
    stats.alert("checkpoint saved", "step 50", level="info")
stats.flush()
if mode == "stall":
    while not __import__("os").path.exists(name + ".go"):
        time.sleep(0.5)
    for step in range(50, 100):
        stats.log(step=step, loss=1.0); time.sleep(0.05)
    stats.close(); sys.exit()
while True:  # keeps calling: never stalled
    stats.log(tick=1.0); time.sleep(1)
"""


@pytest.fixture(scope="module")
def received(host):
    """The receivers, started on the web box for this module; reads what they got."""
    channels = " ".join(host.ansible.get_variables().get("alerts_channels", []))
    if f"127.0.0.1:{HTTP_PORT}" not in channels or f"127.0.0.1:{SMTP_PORT}" not in channels:
        pytest.fail(
            f"the inventory's alerts_channels must name json://127.0.0.1:{HTTP_PORT}/ and "
            f"mailto://127.0.0.1:{SMTP_PORT}?to=...&from=... (the receivers of these tests)"
        )
    with host.sudo():
        host.run("systemctl stop labstats-test-receivers; systemctl reset-failed labstats-test-receivers")
        host.check_output(
            f"rm -f {RECEIVED}; systemd-run --unit labstats-test-receivers /usr/bin/python3 -c "
            f"{shlex.quote(RECEIVERS)} {RECEIVED} {HTTP_PORT} {SMTP_PORT}"
        )
    assert wait_until(lambda: host.socket(f"tcp://127.0.0.1:{HTTP_PORT}").is_listening, 15)

    def messages() -> list[dict]:
        with host.sudo():
            text = host.run(f"cat {RECEIVED}").stdout
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    yield messages
    with host.sudo():
        host.run("systemctl stop labstats-test-receivers")


def start_run(name: str, mode: str) -> str:
    """A run on the training box as the training user, in the background; its id."""
    train = box("trainbox")
    with train.sudo("researcher"):
        train.check_output(
            f"cd ~ && (nohup /opt/labstats/venv/bin/python -c {shlex.quote(RUN)} {name} {mode} "
            f">{name}.log 2>&1 & echo $! > {name}.pid)"
        )
    assert wait_until(lambda: train.run(f"sudo -u researcher test -s ~researcher/{name}.id").rc == 0, 60)
    with train.sudo("researcher"):
        return train.check_output(f"cat ~/{name}.id")


def stop_run(name: str, signal: str = "TERM") -> float:
    train = box("trainbox")
    with train.sudo("researcher"):
        train.run(f"kill -{signal} $(cat ~/{name}.pid)")
    return time.time()


def arrival(messages, title: str) -> float | None:
    """When a message with this title reached both channels (the later), or None."""
    found = {m["channel"]: m["at"] for m in messages() if m["title"] == title}
    return max(found.values()) if len(found) == 2 else None


def web_clock(host) -> float:
    return float(host.check_output("date +%s.%N"))


def test_the_service_runs_as_its_own_user_hardened_its_secrets_its_own(host):
    assert_service_running(host, SERVICE)
    assert host.user(ACCOUNT).shell == "/usr/sbin/nologin"
    main_pid = host.check_output(f"systemctl show -p MainPID --value {SERVICE}")
    assert host.check_output(f"ps -o user:32= -p {main_pid}") == ACCOUNT
    shown = host.check_output(
        f"systemctl show {SERVICE} -p ProtectSystem -p NoNewPrivileges -p UMask "
        "-p CapabilityBoundingSet -p ReadWritePaths"
    )
    settings = dict(line.split("=", 1) for line in shown.splitlines())
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["UMask"] == "0027"
    assert settings["CapabilityBoundingSet"] == ""
    with host.sudo():
        config = host.file("/etc/labstats/alerts.toml")
        assert (config.user, config.group, config.mode) == ("root", ACCOUNT, 0o640)
        state = host.file("/var/lib/labstats-alerts")
        assert (state.user, state.group, state.mode) == (ACCOUNT, "labstats-viewer", 0o2750)
        history = host.file("/var/lib/labstats-alerts/alerts.sqlite")
        assert (history.group, history.mode) == ("labstats-viewer", 0o640)
        journal = host.check_output(f"journalctl -u {SERVICE} --no-pager -n 500")
    with host.sudo("labstats-viewer"):  # the viewer reads the history...
        assert host.run("test -r /var/lib/labstats-alerts/alerts.sqlite").rc == 0
    with host.sudo("labstats-viewer"):  # ...never the channels' secrets
        assert host.run("cat /etc/labstats/alerts.toml").rc != 0
    for url in host.ansible.get_variables().get("alerts_channels", []):
        password = url.split("://", 1)[1].split("@", 1)[0].partition(":")[2] if "@" in url else ""
        assert not password or password not in journal


def test_a_killed_run_a_nan_a_stall_and_its_own_alert_are_told_in_time_and_once(host, received):
    stamp = int(time.time())
    killed, diverged, hung, talker = (f"{what}-{stamp}" for what in ("killed", "diverged", "hung", "talker"))
    start_run(killed, "keep")
    start_run(diverged, "nan")
    nan_logged = web_clock(host)
    start_run(talker, "alert")
    start_run(hung, "stall")
    quiet_since = web_clock(host)
    killed_at = stop_run(killed, "KILL")
    stall_after = float(host.ansible.get_variables().get("alerts_stall_after", 120))
    try:
        assert wait_until(lambda: arrival(received, f"NaN or infinity: {diverged}"), 45, 1), received()
        assert arrival(received, f"NaN or infinity: {diverged}") - nan_logged < 30
        assert wait_until(lambda: arrival(received, f"checkpoint saved ({talker})"), 45, 1), received()
        assert wait_until(lambda: arrival(received, f"crashed: {killed}"), 150, 1), received()
        assert arrival(received, f"crashed: {killed}") - killed_at < 120
        assert wait_until(lambda: arrival(received, f"stalled: {hung}"), stall_after + 45, 1), received()
        assert arrival(received, f"stalled: {hung}") - quiet_since < stall_after + 30
        train = box("trainbox")
        with train.sudo("researcher"):
            train.check_output(f"touch ~/{hung}.go")
        assert wait_until(lambda: arrival(received, f"resolved: stalled · {hung}"), 45, 1), received()
    finally:
        for name in (diverged, talker, hung):
            stop_run(name)
    time.sleep(20)  # a few more checks: nothing is said twice
    titles = [(m["channel"], m["title"]) for m in received() if str(stamp) in m["title"]]
    assert len(titles) == len(set(titles)), titles
    status, _, body = https_get("/alerts", token=web_token())
    assert status == 200
    page = body.decode()
    assert f"crashed: {killed}" in page
    assert f"resolved: stalled · {hung}" in page
