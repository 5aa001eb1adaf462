import subprocess
import sys

import labstats
from labstats import cli


def test_ls_show_export_tail(tmp_path, url, capsys):
    with labstats.Stats(tmp_path / "exp<1>", config={"lr": 0.1}, tags=["t"]) as stats:
        for i in range(5):
            stats.log(step=i, loss=1.0 / (i + 1))
    assert cli.main(["ls"]) == 0
    assert "exp<1>" in capsys.readouterr().out
    assert cli.main(["ls", "--param", "lr=0.1", "--status", "finished"]) == 0
    assert "exp<1>" in capsys.readouterr().out
    assert cli.main(["show", "exp<1>"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out
    assert '"lr": 0.1' in out
    assert "loss" in out
    assert cli.main(["export", "exp<1>", "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text().splitlines()[0] == "idx,loss"
    assert cli.main(["tail", "exp<1>", "loss", "-n", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["3\t0.25", "4\t0.2"]


def test_errors_are_one_clear_line(url, capsys):
    assert cli.main(["show", "missing"]) == 1
    assert capsys.readouterr().err.strip() == "labstats: no run named 'missing' (try `labstats ls`)"
    assert cli.main(["--url", "redis://127.0.0.1:1/0", "ls"]) == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err


def test_every_command_has_help():
    for command in ("ls", "show", "export", "tail"):
        out = subprocess.run(
            [sys.executable, "-m", "labstats.cli", command, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0
        assert "usage: labstats " + command in out.stdout
