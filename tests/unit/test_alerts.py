"""The alerts service with real receivers and real runs: a tiny SMTP server and an HTTP receiver
started here are its channels (mailto:// without TLS, json://), the service runs as its own
process (python -m labstats.ops.alerts), and runs are real processes logging through the real
logger to the real redis-server. Short thresholds (stalled after 2 s, crashed 14 s after the
last heartbeat, checks every 0.5 s) keep it quick."""

from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, wait_for

import labstats
from labstats.ops import alert_rules
from labstats.ops.alert_history import History, read_history
from labstats.ops.alert_messages import Message
from labstats.ops.alert_rules import parse_condition

STALE_AFTER = 14.0  # the writer beats every 10 s: a live run is never read as crashed
SECRET = "TopSecret-9f3a71"


# ---- the receivers ---------------------------------------------------------------------------


class SmtpReceiver:
    """A plain SMTP server (no TLS, no login) in a thread: keeps (arrival, message) of each
    mail. Python 3.11's smtpd is deprecated (gone in 3.12): a few lines of asyncio instead."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, email.message.EmailMessage]] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(*lines: str) -> None:
            writer.write(b"".join(line.encode() + b"\r\n" for line in lines))

        say("220 localhost test SMTP")
        while True:
            await writer.drain()
            line = await reader.readline()
            verb = line.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
            if not line or verb == "QUIT":
                say("221 bye")
                break
            if verb == "EHLO":
                say("250-localhost", "250 8BITMIME")
            elif verb == "DATA":
                say("354 go on")
                await writer.drain()
                lines = []
                while (part := await reader.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(part[1:] if part.startswith(b"..") else part)
                self.messages.append(
                    (time.time(), email.message_from_bytes(b"".join(lines), policy=email.policy.default))
                )
                say("250 kept")
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                say("250 OK")
        await writer.drain()
        writer.close()

    def mails(self) -> list[tuple[float, str, str]]:
        """(arrival, subject, plain text) of every mail so far."""
        out = []
        for at, message in list(self.messages):
            body = message.get_body(preferencelist=("plain",))
            out.append((at, str(message["subject"]), body.get_content() if body else ""))
        return out

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class HttpReceiver:
    """Takes JSON posts (Apprise's json://) on one port across stop() and start(): stopped,
    the port refuses connections, as a channel that is down does."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict, dict]] = []  # (arrival, JSON body, headers)
        self.port = 0
        self.server: http.server.ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        received = self.posts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((time.time(), json.loads(body), dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def titles(self) -> list[str]:
        return [body["title"] for _, body, _ in list(self.posts)]


@pytest.fixture
def receivers():
    smtp, web = SmtpReceiver(), HttpReceiver()
    yield smtp, web
    smtp.stop()
    web.stop()


# ---- the service -----------------------------------------------------------------------------


class Service:
    """python -m labstats.ops.alerts over a config of its own, as the role runs it."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        smtp: SmtpReceiver,
        web: HttpReceiver,
        rules=(),
        stall_after: float = 2,
        lab: dict | None = None,
        away: str | None = None,
    ) -> None:
        self.state = tmp_path / "alerts" / "alerts.sqlite"
        self.config = tmp_path / "alerts.toml"
        self.log = tmp_path / "alerts.log"
        channels = [
            f"mailto://127.0.0.1:{smtp.port}?to=ops@example.com&from=labstats@example.com&mode=insecure",
            f"json://alerts:{SECRET}@127.0.0.1:{web.port}/",
        ]
        lines = [
            "interval = 0.5",
            f"stall_after = {stall_after}",
            f"stale_after = {STALE_AFTER}",
            f"state_file = {json.dumps(str(self.state))}",
            'viewer_url = "https://web.example"',
            f"channels = {json.dumps(channels)}",
            "[[sources]]",
            'name = "box1"',
            f"url = {json.dumps(url)}",
        ]
        if away:  # a second training box, whose Redis does not answer
            lines += ["[[sources]]", 'name = "box2"', f"url = {json.dumps(away)}"]
        for rule in rules:
            lines += ["[[rules]]", *(f"{k} = {json.dumps(v)}" for k, v in rule.items())]
        # The lab's rules: this machine's disks are what they are (never over 100 %).
        lab = {"status_dir": str(tmp_path / "status"), "disk_percent": 100, "every": 0.5, **(lab or {})}
        lines += ["[lab]", *(f"{k} = {json.dumps(v)}" for k, v in lab.items())]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labstats.ops.alerts", "--config", str(self.config)],
            stderr=self.log.open("a"),
        )
        assert wait_for(lambda: self.state.exists(), 15), self.log.read_text()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None


@pytest.fixture
def service(tmp_path, url, receivers):
    made: list[Service] = []

    def start(rules=(), stall_after: float = 2, lab: dict | None = None, away: str | None = None) -> Service:
        made.append(Service(tmp_path, url, *receivers, rules, stall_after, lab, away).start())
        return made[-1]

    yield start
    for s in made:
        s.stop()


RUN = """
import sys, time, threading, labstats
name, script = sys.argv[1], sys.argv[2]
stats = labstats.Stats(sys.argv[3], name=name, flush_interval=0.05, system_metrics=False, console=False)
def wait_for_line(expected):
    assert sys.stdin.readline().strip() == expected
exec(script)
stats.flush()
print("done", flush=True)
while sys.argv[4] == "keep":  # a loop that goes on calling: never stalled
    stats.log(tick=1.0)
    time.sleep(0.2)
threading.Event().wait()
"""


def start_run(tmp_path: Path, name: str, script: str, keep: bool = False) -> subprocess.Popen:
    folder = tmp_path / "runs" / str(abs(hash(name)))
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, name, script, str(folder), "keep" if keep else "rest"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc


def wait_line(proc: subprocess.Popen, line: str = "done") -> None:
    assert proc.stdout.readline().strip() == line


def arrived(web: HttpReceiver, smtp: SmtpReceiver, title_part: str) -> float | None:
    """When a message whose title holds ``title_part`` reached both channels (the later)."""
    posts = [at for at, body, _ in list(web.posts) if title_part in body["title"]]
    mails = [at for at, subject, _ in smtp.mails() if title_part in subject]
    return max(posts[0], mails[0]) if posts and mails else None


# ---- the rules, end to end -------------------------------------------------------------------


def test_crash_stall_resolve_nan_and_own_alerts_reach_mail_and_webhook_once(
    tmp_path, url, receivers, service
):
    smtp, web = receivers
    alerts = service()
    hostile = "<b>x</b>\u202e\x1b[31m & {{7*7}}"
    killed = start_run(tmp_path, "killed", "stats.log(step=0, loss=1.0)")
    hung = start_run(
        tmp_path,
        "hung",
        "for i in range(20):\n    stats.log(step=i, loss=1.0); time.sleep(0.02)\n"
        "stats.flush(); print('quiet', flush=True)\nwait_for_line('go')\n"
        "for i in range(20, 40):\n    stats.log(step=i, loss=1.0); time.sleep(0.02)",
    )
    diverged = start_run(
        tmp_path,
        "diverged",
        "for i in range(10):\n    stats.log(step=i, loss=1.0 / (i + 1), acc=0.5)\n"
        "stats.flush(); time.sleep(1.5)\nstats.log(step=10, loss=float('nan'), acc=0.5)\n"
        "stats.log(step=11, loss=float('nan'), acc=float('inf'))",
        keep=True,
    )
    talker = start_run(
        tmp_path,
        hostile,
        "stats.log(step=0, loss=1.0)\n"
        f"assert stats.alert({hostile!r}, 'text: ' + {hostile!r}, level='info')\n"
        f"assert stats.alert({hostile!r}, 'the same title again')\n"  # within the hour: not sent
        "assert stats.alert('checkpoint saved', 'step 0', level='bogus')",  # a bad level: a warning
        keep=True,
    )
    procs = [killed, hung, diverged, talker]
    try:
        wait_line(killed)
        wait_line(diverged)  # its NaN is in Redis: it printed after flush()
        nan_written = time.time()
        wait_line(talker)
        wait_line(hung, "quiet")
        killed.kill()
        killed_at = time.time()
        quiet_at = time.time()

        assert wait_for(lambda: arrived(web, smtp, "stalled: hung"), 15), web.titles()
        stall_delay = arrived(web, smtp, "stalled: hung") - quiet_at
        hung.stdin.write("go\n")
        hung.stdin.flush()
        logs_again = time.time()
        wait_line(hung)
        assert wait_for(lambda: arrived(web, smtp, "resolved: stalled · hung"), 10), web.titles()
        resolve_delay = arrived(web, smtp, "resolved: stalled · hung") - logs_again

        assert wait_for(lambda: arrived(web, smtp, "NaN or infinity: diverged"), 10), web.titles()
        (nan_body,) = [b["message"] for _, b, _ in web.posts if "NaN or infinity" in b["title"]]
        assert "loss: NaN at step 10" in nan_body
        assert "acc: inf at step 11" in nan_body
        nan_delay = arrived(web, smtp, "NaN or infinity: diverged") - nan_written

        assert wait_for(lambda: arrived(web, smtp, "checkpoint saved"), 10), web.titles()
        assert wait_for(lambda: arrived(web, smtp, "crashed: killed"), STALE_AFTER + 10), web.titles()
        crash_delay = arrived(web, smtp, "crashed: killed") - killed_at
        crash = next(b for _, b, _ in web.posts if b["title"] == "crashed: killed")
        assert "no heartbeat since" in crash["message"]
        assert "https://web.example/runs/box1/" in crash["message"]
        assert crash["type"] == "failure"

        # A hostile run name and alert are plain text: no control or direction characters, the
        # rest as written (JSON-encoded by the channel, never interpreted).
        own = [b for _, b, _ in web.posts if b["title"].startswith("<b>x</b>")]
        assert len(own) == 1, web.titles()  # the same title again within the hour was not sent
        assert "\u202e" not in own[0]["title"] + own[0]["message"]
        assert "\x1b" not in own[0]["message"]
        assert own[0]["title"] == "<b>x</b>??[31m & {{7*7}} (<b>x</b>??[31m & {{7*7}})"
        assert own[0]["type"] == "info"
        mail = next(text for _, subject, text in smtp.mails() if subject.startswith("<b>x</b>"))
        assert "text: <b>x</b>??[31m & {{7*7}}" in mail

        # Nothing twice: each (run, rule) once, also after the service is restarted. The killed
        # run read as stalled before its heartbeat was old enough to read as crashed; the crash
        # ends that quietly (the crash says it).
        time.sleep(1.5)
        before = sorted(web.titles())
        assert len(before) == len(set(before)) == 7, before
        assert "stalled: killed" in before
        assert not any(t.startswith("resolved: stalled · killed") for t in before)
        alerts.stop()
        alerts.start()
        time.sleep(3)
        assert sorted(web.titles()) == before
        assert len(smtp.mails()) == len(before)

        history = read_history(str(alerts.state))
        assert {(h["kind"], h["rule"]) for h in history} >= {("alert", "crashed"), ("resolved", "stalled")}
        assert all(h["delivered"] == 2 for h in history)
        assert SECRET not in alerts.log.read_text()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    print(
        f"alert delays (checks every 0.5 s): crashed {crash_delay:.1f} s after SIGKILL (stale_after "
        f"{STALE_AFTER:.0f} s), stalled {stall_delay:.1f} s after the loop's last call (stall_after 2 s), "
        f"resolved {resolve_delay:.1f} s after it logs again, NaN {nan_delay:.1f} s after it was written"
    )


def test_a_user_rule_fires_for_matching_runs_after_its_step_and_resolves(tmp_path, url, receivers, service):
    smtp, web = receivers
    service(
        [{"name": "loss high", "when": "val/loss > 2 after step 10", "runs": "sweep-*", "level": "error"}],
        stall_after=60,
    )
    matching = start_run(
        tmp_path,
        "sweep-a",
        "stats.log(step=5, **{'val/loss': 3.0}); stats.flush(); time.sleep(1.5)\n"  # not after step 10
        "print('early', flush=True); wait_for_line('go')\n"
        "stats.log(step=12, **{'val/loss': 3.0}); stats.flush(); print('high', flush=True)\n"
        "wait_for_line('go')\nstats.log(step=13, **{'val/loss': 1.5})",
    )
    other = start_run(tmp_path, "other", "stats.log(step=20, **{'val/loss': 5.0})")
    try:
        wait_line(other)
        wait_line(matching, "early")
        time.sleep(1.5)
        assert web.titles() == []  # other does not match; sweep-a is not after step 10 yet
        matching.stdin.write("go\n")
        matching.stdin.flush()
        wait_line(matching, "high")
        assert wait_for(lambda: arrived(web, smtp, "loss high: sweep-a"), 10), web.titles()
        fired = next(b for _, b, _ in web.posts if b["title"] == "loss high: sweep-a")
        assert "val/loss is 3 at step 12" in fired["message"]
        assert fired["type"] == "failure"
        matching.stdin.write("go\n")
        matching.stdin.flush()
        wait_line(matching)
        assert wait_for(lambda: arrived(web, smtp, "resolved: rule: loss high · sweep-a"), 10), web.titles()
        assert not any("other" in t for t in web.titles())
    finally:
        for proc in (matching, other):
            proc.kill()
            proc.wait()


def test_a_run_that_raises_is_told_crashed_with_its_exception_seen_running_or_not(
    tmp_path, url, receivers, service
):
    smtp, web = receivers
    alerts = service(stall_after=60)
    alerts.stop()  # the second run starts and crashes between two checks (here: while it is down)
    script = (
        "stats.log(step=0, loss=1.0); stats.flush(); time.sleep(float(name[-1]))\nraise ValueError('bad <7>')"
    )
    quick = start_run(tmp_path, "boom0", script)
    assert quick.wait(30) == 1
    alerts.start()
    slow = start_run(tmp_path, "boom3", script)  # the service sees it running first
    try:
        for name in ("boom0", "boom3"):
            assert wait_for(lambda name=name: arrived(web, smtp, f"crashed: {name}"), 15), web.titles()
            (crash,) = [b for _, b, _ in web.posts if b["title"] == f"crashed: {name}"]
            assert "ValueError: bad <7>" in crash["message"]
        time.sleep(1.5)
        assert sorted(web.titles()) == ["crashed: boom0", "crashed: boom3"]  # each once
    finally:
        slow.kill()
        slow.wait()


def test_a_channel_that_is_down_gets_it_later_and_the_others_at_once(tmp_path, url, receivers, service):
    smtp, web = receivers
    web.stop()
    alerts = service(stall_after=60)
    run = start_run(tmp_path, "talker", "stats.log(step=0, x=1.0)\nstats.alert('disk full', 'on /data')")
    try:
        wait_line(run)
        assert wait_for(lambda: any("disk full" in s for _, s, _ in smtp.mails()), 10)
        assert wait_for(lambda: "failed" in alerts.log.read_text(), 10)  # logged, and retried
        web.start()
        assert wait_for(lambda: "disk full (talker)" in web.titles(), 20), alerts.log.read_text()
        (post,) = [h for _, b, h in web.posts if b["title"] == "disk full (talker)"]
        assert post.get("Authorization", "").startswith("Basic ")  # the secret went to the channel...
        assert SECRET not in alerts.log.read_text()  # ...and never to the log
        assert wait_for(lambda: read_history(str(alerts.state))[0]["delivered"] == 2, 5)
    finally:
        run.kill()
        run.wait()


def test_the_lab_rules_tell_of_a_box_away_an_old_backup_and_a_full_disk_and_resolve(
    tmp_path, url, receivers, service
):
    smtp, web = receivers
    status = tmp_path / "status"
    status.mkdir()
    (status / "backup.json").write_text(json.dumps({"ok_at": time.time() - 27 * 3600, "detail": "restic ok"}))
    (status / "artifacts-box1.json").write_text(json.dumps({"ok_at": time.time(), "detail": "pushed"}))
    away = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    service(
        stall_after=60, lab={"disk_percent": 0.001, "link_down_after": 1}, away=away
    )  # any disk is over it
    assert wait_for(lambda: arrived(web, smtp, "training box box2 unreachable"), 10), web.titles()
    assert wait_for(lambda: arrived(web, smtp, "the backup last succeeded 27 h 0 min ago"), 10), web.titles()
    assert wait_for(lambda: arrived(web, smtp, "disk / on web"), 10), web.titles()
    assert not any("artifacts-box1" in t for t in web.titles())  # a fresh push: nothing to say
    (status / "backup.json").write_text(json.dumps({"ok_at": time.time(), "detail": "restic ok"}))
    assert wait_for(lambda: arrived(web, smtp, "resolved: job backup · web"), 10), web.titles()
    assert not any("box1" in t for t in web.titles())  # the box that answers is fine
    backup = next(b for _, b, _ in web.posts if b["title"].startswith("the backup"))
    assert "restic ok" in backup["message"]
    assert "box: web" in backup["message"]


# ---- Stats.alert -----------------------------------------------------------------------------


def test_stats_alert_is_a_record_of_the_run_and_never_raises(tmp_path, url):
    stats = labstats.Stats(tmp_path / "r", system_metrics=False, console=False)
    assert stats.alert("loss spiked", "at step 3", level="error")
    assert stats.alert("loss spiked", "again")
    stats.close()
    assert stats.alert("after close") is False  # dropped, with a warning; never raises
    assert labstats.Stats().alert("before on") is False
    lab = labstats.connect(url)
    raw = lab.redis.hgetall(lab.keys.run_alerts(stats.run_id))
    values = [json.loads(v) for _, v in sorted(raw.items())]
    assert [(v["title"], v["text"], v["level"]) for v in values] == [
        ("loss spiked", "at step 3", "error"),
        ("loss spiked", "again", "warning"),
    ]
    assert all(f.decode().split("-")[0].isdigit() for f in raw)
    assert len(raw) == 2  # two in one millisecond stay apart


def test_stats_alert_waits_in_the_spool_while_redis_is_away(tmp_path, own_redis):
    stats = labstats.Stats(tmp_path / "r", url=own_redis.url, system_metrics=False, console=False)
    stats.log(step=0, x=1.0)
    assert stats.flush()
    own_redis.stop()
    assert stats.alert("written while away", "from the spool")
    stats.flush(timeout=5)
    own_redis.start()
    stats.close(timeout=20)
    lab = labstats.connect(own_redis.url)
    (value,) = lab.redis.hvals(lab.keys.run_alerts(stats.run_id))
    assert json.loads(value)["title"] == "written while away"


# ---- config and parser -----------------------------------------------------------------------


def test_conditions_parse_by_hand_and_nothing_else_does():
    rule = parse_condition("val/loss > 2 after step 1000")
    assert (rule.metric, rule.op, rule.threshold, rule.after) == ("val/loss", ">", 2.0, 1000)
    assert rule.holds(1001, 2.5)
    assert not rule.holds(1000, 2.5)
    assert not rule.holds(1001, 1.0)
    assert not rule.holds(2000, float("nan"))
    assert parse_condition('"my metric" <= -1e-3').metric == "my metric"
    assert parse_condition("acc != inf").holds(0, 1.0)
    assert str(parse_condition('"a b" >= 2 after step 5')) == '"a b" >= 2 after step 5'
    code = parse_condition("__import__('os').system('x') > 1")  # a series name like any other
    assert code.metric == "__import__('os').system('x')"
    assert code.holds(0, 2.0)
    for bad in ("", "loss >", "loss > two", "loss > 1 after 5", "loss ~ 1", "loss > 1; x", "loss > 2 + 1"):
        with pytest.raises(ValueError, match=r"condition|METRIC OP NUMBER"):
            parse_condition(bad)


def test_the_check_names_a_bad_channel_and_a_bad_rule_without_their_secrets():
    config = {
        "channels": [
            "json://127.0.0.1:9/",
            "mailto://bob:hunter2secret@127.0.0.1:25?to=not-an-address",
            "nosuchscheme://user:hunter3secret@x/y",
        ],
        "rules": [{"name": "ok", "when": "loss > 1"}, {"name": "broken", "when": "loss >> 1"}],
        "interval": 60,
    }
    done = subprocess.run(
        [sys.executable, "-m", "labstats.ops.alerts", "--check"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.startswith("channel 2 (mailto://") and "cannot parse" in line for line in lines), lines
    assert any(line.startswith("channel 3") for line in lines)
    assert not any(line.startswith("channel 1") for line in lines)
    assert any(line.startswith("rule 'broken':") and "'loss >> 1'" in line for line in lines)
    assert any("every 15 s" in line for line in lines)
    assert "hunter2secret" not in done.stdout + done.stderr
    assert "hunter3secret" not in done.stdout + done.stderr
    good = {
        "channels": ["json://127.0.0.1:9/"],
        "rules": [{"name": "ok", "when": "loss > 1", "tag": "sweep"}],
    }
    assert alert_rules.problems(good) == []


def test_history_is_read_from_its_file_read_only(tmp_path):
    path = str(tmp_path / "alerts.sqlite")
    assert read_history(path) == []
    history = History(path)
    history.record(
        Message("box1", "alice.1", "exp", "crashed", "alert", "error", "crashed: exp", "body"), [], 1.0
    )
    os.chmod(path, 0o440)
    try:
        (row,) = read_history(path)
    finally:
        os.chmod(path, 0o640)
    assert (row["rule"], row["kind"], row["run_name"], row["channels"]) == ("crashed", "alert", "exp", 0)


# ---- the history page ------------------------------------------------------------------------


def test_the_viewer_lists_what_was_sent_from_the_file_read_only(tmp_path, url):
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    path = tmp_path / "alerts.sqlite"
    history = History(str(path))
    hostile = "<script>alert(1)</script>"
    crashed = Message(
        "box1", "alice.1", hostile, "crashed", "alert", "error", f"crashed: {hostile}", "no heartbeat"
    )
    history.record(crashed, ["json://127.0.0.1:9/"], time.time())
    resolved = Message(
        "box1", "alice.2", "exp2", "stalled", "resolved", "info", "resolved: stalled · exp2", "again"
    )
    history.record(resolved, [], time.time())
    disk = Message("web", "", "web", "disk /", "alert", "error", "disk / on web 95 % full", "1 GiB free")
    history.record(disk, [], time.time())  # a lab rule: no run
    os.chmod(path, 0o440)
    app = create_app({"box1": Source("box1", url)}, config={"ALERTS_HISTORY_FILE": str(path)})
    app.testing = False
    page = app.test_client().get("/alerts")
    os.chmod(path, 0o640)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "resolved: stalled · exp2" in html
    assert "0/1" in html
    assert "0/0" in html
    assert hostile not in html
    assert "&lt;script&gt;" in html
    assert "/runs/box1/alice.1" in html
    assert "box web" in html

    missing = create_app({"box1": Source("box1", url)}, config={"ALERTS_HISTORY_FILE": None})
    assert "not set up" in missing.test_client().get("/alerts").get_data(as_text=True)


def test_the_history_forgets_runs_gone_old_messages_and_channels_no_longer_set(tmp_path):
    history = History(str(tmp_path / "alerts.sqlite"))
    now = time.time()
    old = Message("box1", "alice.1", "exp", "crashed", "alert", "error", "crashed: exp", "")
    history.record(old, ["json://a/"], now - 100 * 86400)  # waits for a channel since removed
    history.record(old, [], now - 100 * 86400)
    history.record(old, [], now)
    history.set_state("box1", "alice.1", "crashed", True, now - 8 * 86400, now - 8 * 86400, True)
    history.set_state("box1", "alice.2", "stalled", True, now - 8 * 86400, now - 8 * 86400, True)
    history.watch("box1", "alice.2")  # still running: its state is kept
    history.set_state("web", "", "disk /", True, now - 8 * 86400, now - 8 * 86400, True)
    history.prune(now, 7 * 86400, 90 * 86400, ["json://b/"])
    assert history.sql("SELECT run, rule FROM rule_state ORDER BY run") == [
        ("", "disk /"),
        ("alice.2", "stalled"),
    ]
    assert history.sql("SELECT count(*) FROM outbox") == [(0,)]
    assert [row["at"] for row in read_history(history.path)] == [now]


def test_a_purge_takes_a_runs_alerts_with_it_and_an_archive_leaves_them_with_its_record(tmp_path, url):
    from labstats.curation import Curation
    from labstats.ops import archive, purge

    lab = labstats.connect(url)
    runs = []
    for name in ("purged", "archived"):
        with labstats.Stats(tmp_path / name, system_metrics=False, console=False) as stats:
            stats.log(step=0, loss=1.0)
            stats.alert("look", "here")
        runs.append(stats.run_id)
    archive.archive(lab, lab.run("archived"), tmp_path / "archive")
    assert lab.redis.hlen(lab.keys.run_alerts(runs[1])) == 1  # kept beside the record, as the record is
    Curation(lab.redis, actor="test", writer="default").trash(runs[0])
    purge.purge(lab.redis, lab.keys, [runs[0]], archive_dir=tmp_path / "archive", store=None)
    assert not lab.redis.exists(lab.keys.run_alerts(runs[0]))
    assert purge.fsck(lab.redis, lab.keys, tmp_path / "archive", None).clean


def test_the_history_page_takes_any_before(tmp_path, url):
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    path = tmp_path / "alerts.sqlite"
    history = History(str(path))
    for n in range(3):
        history.record(
            Message("box1", f"alice.{n}", f"exp{n}", "crashed", "alert", "error", f"t{n}", ""), [], n
        )
    client = create_app(
        {"box1": Source("box1", url)}, config={"ALERTS_HISTORY_FILE": str(path)}
    ).test_client()
    for before in ("-5", "0", "abc", "9" * 40, str(2**62 + 1), ""):
        assert client.get(f"/alerts?before={before}").status_code == 200, before
    older = client.get("/alerts?before=3").get_data(as_text=True)
    assert "t1" in older
    assert "t2" not in older
