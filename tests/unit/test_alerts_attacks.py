"""The alerts service attacked: training users who write hostile run names, series and alerts
of their own (huge, many, control characters, fake levels), floods (thousands of runs crashing
at once, a NaN in thousands of series), a channel that accepts and never answers and a mail
server that is down. The service runs in this process over the real redis-server, its channels
are real receivers on this machine (test_alerts' own). It must stay bounded in memory and time
per check, never crash, send a bounded number of messages per check, and never leak a secret."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import tracemalloc

import pytest
import redis
from conftest import free_port, wait_for
from test_alerts import SECRET, HttpReceiver

from labstats.format import chunk, series_info
from labstats.format.keys import Keys
from labstats.ops import alert_channels, alert_rules
from labstats.ops.alert_channels import secrets_of
from labstats.ops.alert_history import read_history
from labstats.ops.alert_notifier import MAX_MESSAGES_PER_CHECK
from labstats.ops.alerts import Alerts

KEYS = Keys("ls")


def make_runs(client: redis.Redis, n: int, *, alive: bool = True, name=lambda i: f"run{i}", series=()):
    """``n`` runs as a writer leaves them: a record saying running, in the indexes, with the
    float ``series`` given as {name: [values]}. ``alive``: a fresh heartbeat, else one that
    stopped 30 s ago (the run reads as crashed)."""
    now = time.time()
    beat = now if alive else now - 30
    ids = []
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        run_id = f"20261205-000000-{i:06x}"
        ids.append(run_id)
        pipe.hset(
            KEYS.run(run_id),
            mapping={"id": run_id, "name": name(i), "status": "running", "started": now - 60,
                     "heartbeat": beat, "last_call": beat, "schema": 2},
        )  # fmt: skip
        pipe.sadd(KEYS.status("running"), run_id)
        pipe.zadd(KEYS.runs, {run_id: now - 60})
        for sid, (series_name, values) in enumerate(dict(series).items()):
            data = chunk.KIND_FLOAT + b"".join(
                chunk.numeric_record(chunk.KIND_FLOAT, step, v) for step, v in enumerate(values)
            )
            pipe.set(KEYS.chunk(run_id, sid, 0), data)
            info = series_info.encode(sid, "f", len(values), 0, len(values) - 1, True)
            pipe.hset(KEYS.series(run_id), series_name, info)
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()
    return ids


def service(tmp_path, url, channels, **extra) -> Alerts:
    config = alert_rules.load(
        {
            "interval": 1,
            "stall_after": 60,
            "stale_after": 14,
            "state_file": str(tmp_path / "alerts.sqlite"),
            "channels": channels,
            "sources": [{"name": "box1", "url": url}],
            "lab": {"status_dir": str(tmp_path / "status"), "disk_percent": 100, "every": 3600},
            **extra,
        }
    )
    alerts = Alerts(config)
    alerts.start()
    return alerts


@pytest.fixture
def store(url):
    return redis.Redis.from_url(url)


@pytest.fixture
def web():
    receiver = HttpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def alerts_of(tmp_path, url):
    made: list[Alerts] = []

    def start(channels, **extra) -> Alerts:
        made.append(service(tmp_path, url, channels, **extra))
        return made[-1]

    yield start
    for alerts in made:
        alerts.stop()


def sent(alerts: Alerts) -> list[dict]:
    return read_history(alerts.history.path, 100_000)


def test_two_thousand_runs_crashing_at_once_are_one_summary_beyond_the_bound(url, web, alerts_of, store):
    make_runs(store, 2000, alive=False)
    alerts = alerts_of([f"json://127.0.0.1:{web.port}/"])
    began = time.perf_counter()
    alerts.check()
    assert time.perf_counter() - began < 5  # one write to the disk, not thousands
    told = [row for row in sent(alerts) if row["channels"]]
    assert len(told) == MAX_MESSAGES_PER_CHECK + 1
    summary = told[0]  # the newest: made at the check's end
    assert summary["title"] == f"and {2000 - MAX_MESSAGES_PER_CHECK} more alerts"
    assert "crashed: run" in summary["body"]
    assert len([row for row in sent(alerts) if row["rule"] == "crashed"]) == 2000  # each is in the history
    assert wait_for(lambda: len(web.posts) == MAX_MESSAGES_PER_CHECK + 1, 30)
    alerts.check()  # nothing is said twice
    time.sleep(1)
    assert len(web.posts) == MAX_MESSAGES_PER_CHECK + 1


def test_one_check_over_a_thousand_running_runs_is_quick(url, alerts_of, store, capsys):
    make_runs(store, 1000, series={"loss": [1.0] * 100, "acc": [0.5] * 100})
    alerts = alerts_of([], rules=[{"name": "high", "when": "loss > 2"}])
    alerts.check()  # the first sight: every series read from its start
    began = time.perf_counter()
    alerts.check()
    took = time.perf_counter() - began
    with capsys.disabled():
        print(f"\none check over 1,000 running runs (2 series each, a user rule): {took:.2f} s")
    assert took < 5


def test_a_nan_in_ten_thousand_series_of_one_run_is_one_message(url, web, alerts_of, store):
    make_runs(store, 1, series={f"layer{i}/grad": [1.0, float("nan")] for i in range(10_000)})
    alerts = alerts_of([f"json://127.0.0.1:{web.port}/"])
    alerts.check()
    (row,) = sent(alerts)
    assert row["rule"] == "nan"
    assert "(and 9990 more series)" in row["body"]


def test_a_nan_in_a_series_of_each_of_500_runs_is_bounded_per_check(url, web, alerts_of, store):
    make_runs(store, 500, series={"loss": [1.0, float("nan")]})
    alerts = alerts_of([f"json://127.0.0.1:{web.port}/"])
    alerts.check()
    assert len([row for row in sent(alerts) if row["channels"]]) == MAX_MESSAGES_PER_CHECK + 1


def test_a_huge_open_chunk_is_read_only_as_far_as_a_chunk_goes(url, alerts_of, store):
    (run_id,) = make_runs(store, 1, series={"loss": [1.0]})
    store.append(KEYS.chunk(run_id, 0, 0), b"\x00" * (64 * 2**20))  # 64 MiB the writer never wrote
    alerts = alerts_of([])
    tracemalloc.start()
    try:
        alerts.check()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_a_runs_own_alerts_hostile_huge_and_many_are_bounded_and_plain(url, web, alerts_of, store):
    (run_id,) = make_runs(store, 1, name=lambda i: "evil\r\nBcc: x@evil.example\x85\u2028\u2029name")
    key = KEYS.run_alerts(run_id)
    now_ms = int(time.time() * 1000)
    store.hset(key, f"{now_ms}-0", json.dumps({"title": "big", "text": "x" * (16 * 2**20), "level": "error"}))
    store.hset(key, f"{now_ms}-1", json.dumps({"title": "t\x1b[31m\u202e\x85\u2028", "level": "critical!"}))
    store.hset(key, "x" * 1000, "not an alert")
    store.hset(key, f"{now_ms}-2", b"\xff\xfe not json")
    for n in range(3, 2003):
        store.hset(key, f"{now_ms}-{n}", json.dumps({"title": f"alert {n}", "text": "t", "level": "info"}))
    alerts = alerts_of([f"json://127.0.0.1:{web.port}/"])
    tracemalloc.start()
    try:
        alerts.check()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    rows = sent(alerts)
    assert len([row for row in rows if row["channels"]]) <= MAX_MESSAGES_PER_CHECK + 1
    big = next(row for row in rows if "too long to read" in row["body"])  # its title is unread too
    assert len(big["body"]) < 3000
    odd = next(row for row in rows if row["rule"].startswith("run alert: t"))
    assert odd["level"] == "warning"
    for row in rows:
        for text in (row["title"], row["body"], row["run_name"], row["rule"]):
            assert not set(text) & set("\x1b\x85\u2028\u2029\u202e\r"), text
        for line in (row["title"], row["run_name"], row["rule"]):
            assert "\n" not in line
    assert wait_for(lambda: len(web.posts) >= MAX_MESSAGES_PER_CHECK, 30)
    for _, body, _ in web.posts:
        assert not set(body["title"] + body["message"]) & set("\x1b\x85\u2028\u2029\u202e\r")
    for _ in range(25):  # a bounded number of them a check: all read within 21 checks
        before = len(sent(alerts))
        alerts.check()
        now = sent(alerts)[: len(sent(alerts)) - before]
        assert len([row for row in now if row["channels"]]) <= MAX_MESSAGES_PER_CHECK + 1
    # 2,003 alerts, of which the huge one and the one not JSON are both titled "alert": once an hour.
    assert len([row for row in sent(alerts) if row["rule"].startswith("run alert")]) == 2002


class Silent:
    """A receiver that accepts connections and reads them, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_channel_that_never_answers_and_a_mail_server_down_leave_the_others_and_leak_nothing(
    url, web, alerts_of, store, caplog
):
    silent = Silent()
    down = free_port()  # nothing listens
    try:
        alerts = alerts_of(
            [
                f"json://alerts:{SECRET}@127.0.0.1:{silent.port}/",
                f"mailto://ops:{SECRET}@127.0.0.1:{down}?to=ops@example.com&from=ls@example.com&mode=insecure",
                f"json://127.0.0.1:{web.port}/",
            ]
        )
        make_runs(store, 3, alive=False)
        caplog.set_level(logging.DEBUG)
        for handler in logging.getLogger().handlers:
            handler.addFilter(alerts.redacting)
        began = time.perf_counter()
        alerts.check()
        assert time.perf_counter() - began < 2  # the channels never hold the check up
        assert wait_for(lambda: len(web.posts) == 3, 10)  # the working channel at once
        # The oldest waits for both (they send in order): each channel's failure is on it.
        assert wait_for(lambda: "failed" in caplog.text and sent(alerts)[-1]["last_error"], 30)
        assert wait_for(lambda: all(f":{port}" in caplog.text for port in (silent.port, down)), 30)
        stopping = time.perf_counter()
        alerts.stop()
        assert time.perf_counter() - stopping < 1
        for row in sent(alerts):
            assert SECRET not in json.dumps(row)
        assert SECRET not in caplog.text
    finally:
        silent.stop()


def test_a_channel_apprise_cannot_parse_is_named_without_a_token_in_its_host():
    for url, token in [
        ("slack://T0ABCDEFG1/B0ABCDEFG2/", "T0ABCDEFG1"),  # a Slack URL missing its last token
        ("nosuchscheme://supersecrettoken123/", "supersecrettoken123"),
    ]:
        problem = alert_rules.problems({"channels": [url]})
        assert problem
        assert token.lower() not in problem[0].lower()
    (problem,) = alert_rules.problems({"channels": ["nosuchscheme://smtp.example.com/"]})
    assert problem.startswith("channel 1 (nosuchscheme://smtp.example.com/…)")  # a host name says which


def test_a_token_given_as_the_host_is_hidden_in_the_log():
    url = "discord://123456789012345678/abcdefghijklmnopqrstuvwxyz"
    assert "123456789012345678" in secrets_of(url)
    assert "localhost" not in secrets_of("json://localhost:8080/")
    assert "smtp.example.com" not in secrets_of("mailto://smtp.example.com")


def test_a_runs_index_flooded_with_ids_of_no_run_keeps_a_check_quick(url, alerts_of, store):
    make_runs(store, 1, alive=False)
    pipe = store.pipeline(transaction=False)
    for start in range(0, 200_000, 10_000):
        pipe.zadd(KEYS.runs, {f"20261205-000000-f{n:07x}": time.time() for n in range(start, start + 10_000)})
    pipe.execute()
    alerts = alerts_of([])
    alerts.check()
    began = time.perf_counter()
    alerts.check()
    assert time.perf_counter() - began < 1
    assert [row["rule"] for row in sent(alerts)] == ["crashed"]


class Trickle(Silent):
    """A receiver that answers a byte a second, forever: no read ever times out."""

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    @staticmethod
    def _drip(conn: socket.socket) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while True:
                conn.sendall(b"X")
                time.sleep(0.5)
        except OSError:
            return


def test_a_channel_that_answers_a_byte_at_a_time_is_told_as_failing(
    url, alerts_of, store, monkeypatch, caplog
):
    monkeypatch.setattr(alert_channels, "DELIVER_TIMEOUT", 2.0)
    trickle = Trickle()
    try:
        alerts = alerts_of([f"json://127.0.0.1:{trickle.port}/"])
        make_runs(store, 1, alive=False)
        alerts.check()
        assert wait_for(lambda: "no answer within 2 s" in (sent(alerts)[0]["last_error"] or ""), 15)
        assert "failed" in caplog.text
    finally:
        trickle.stop()
