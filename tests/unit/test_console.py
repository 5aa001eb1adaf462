"""A run keeps the last lines its process printed: a crash's whole traceback and what came
before it, written while the run goes on and when it ends; the prints still go where they went."""

import subprocess
import sys
import time

import labstats
from labstats.capture import console

CRASHING = """
import sys, labstats
with_console = sys.argv[1] == "on"
stats = labstats.Stats("runs/console", console=with_console)
for i in range(300):
    print(f"line {i}")
    stats.log(step=i, loss=1.0 / (i + 1))
print("a warning of some library", file=sys.stderr)
sys.stdout.write("epoch 3: 10%\\repoch 3: 50%\\repoch 3: 90%\\n")
def deep():
    raise RuntimeError("the loss went NaN")
deep()
"""


def run_script(tmp_path, url, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(CRASHING)
    env = {
        "LABSTATS_URL": url,
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LABSTATS_CAPTURE_FREEZE": "0",
    }
    return subprocess.run(
        [sys.executable, str(script), mode], cwd=tmp_path, capture_output=True, text=True, env=env
    )


def test_a_crashed_run_keeps_its_last_lines_and_whole_traceback(tmp_path, url, lab):
    done = run_script(tmp_path, url, "on")
    assert done.returncode == 1
    assert done.stdout.count("line ") == 300  # every print still reached the terminal
    assert "RuntimeError: the loss went NaN" in done.stderr  # and the traceback too
    run = lab.run("console")
    assert run.status == "crashed"
    lines = run.meta["console"].split("\n")
    assert len(lines) <= console.MAX_LINES
    assert "line 299" in lines
    assert "line 0" not in lines  # only the last ones
    assert "a warning of some library" in lines
    assert "epoch 3: 90%" in lines  # a progress bar's last state, not its redraws
    text = run.meta["console"]
    assert "Traceback (most recent call last):" in text
    assert "in deep" in text
    assert text.rstrip().endswith("RuntimeError: the loss went NaN")


def test_console_false_keeps_nothing(tmp_path, url, lab):
    done = run_script(tmp_path, url, "off")
    assert done.returncode == 1
    assert "console" not in lab.run("console").meta


def test_a_running_run_writes_its_lines_and_the_tee_goes_at_the_end(tmp_path, url, lab, monkeypatch, capsys):
    monkeypatch.setattr(console, "INTERVAL", 0.05)
    before = sys.stdout
    with labstats.Stats(tmp_path / "live") as stats:
        assert sys.stdout is not before  # the tee is in
        print("x" * 5000)  # one long line, cut
        print("hello <b>")
        stats.flush()  # the run's record is there
        deadline = time.monotonic() + 10
        while "hello <b>" not in lab.run(stats.run_id).meta.get("console", ""):
            assert time.monotonic() < deadline, "the running run's console was never written"
            time.sleep(0.05)
            stats.flush()
    assert sys.stdout is before  # the stream is the caller's again
    kept = lab.run(stats.run_id).meta["console"].split("\n")
    assert max(len(line) for line in kept) <= console.MAX_LINE
    assert "hello <b>" in capsys.readouterr().out
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    page = create_app({"local": Source("local", url)}).test_client().get(f"/runs/local/{stats.run_id}")
    assert '<pre class="console">' in page.get_data(as_text=True)
    assert "hello &lt;b&gt;" in page.get_data(as_text=True)  # shown as text


def test_a_console_its_owner_made_huge_is_shown_cut_as_text(tmp_path, url, lab, client):
    with labstats.Stats(tmp_path / "big", console=False) as stats:
        stats.log(step=0, loss=1.0)
    lab.redis.hset(lab.keys.run(stats.run_id), "console", "<b>" + "y" * 500_000 + "\nlast line")
    page = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    shown = page[
        page.index('<pre class="console">') : page.index("</pre>", page.index('<pre class="console">'))
    ]
    assert shown.endswith("last line")
    assert len(shown) < 70_000  # the last 64 KiB
    assert (
        "<b>" not in page.replace("<b>", "", page.count("<b>") - shown.count("<b>"))
        or "&lt;b&gt;" not in shown
    )
