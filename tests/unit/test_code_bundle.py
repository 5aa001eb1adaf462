"""A run's code travels as a git bundle in the artifact store: a repository without a remote,
gone from where regenerate runs (as on the web box), is still checked out at the run's commit
with its diff, from the bundle alone; and a venv with the run's packages is made for it."""

import shutil
import subprocess
import sys

import pytest

import labstats
from labstats.capture import code_bundle
from labstats.read import regenerate
from labstats.store import ArtifactStore


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.org")
    git(root, "config", "user.name", "test")
    (root / "train.py").write_text("print('first')\n")
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "first")
    (root / "train.py").write_text("print('second')\n")
    git(root, "commit", "-q", "-am", "second")
    return root


def test_the_bundle_alone_checks_out_the_commit_with_its_diff_once_the_repository_is_gone(repo, tmp_path):
    commit = git(repo, "rev-parse", "HEAD").strip()
    store, cache = ArtifactStore(tmp_path / "store"), tmp_path / "cache"
    digest, note = code_bundle.keep(store, repo, commit, cache=cache)
    assert digest
    assert not note
    # The same commit again: the stored file is reused, nothing new is made.
    assert code_bundle.keep(store, repo, commit, cache=cache) == (digest, "")
    assert len(list((tmp_path / "store").rglob("*"))) == 2  # one folder, one file

    (repo / "train.py").write_text("print('changed')\n")
    diff = git(repo, "diff", "--binary", "HEAD")
    shutil.rmtree(repo)  # as on the web box: only the bundle is there
    meta = {"git_root": str(repo), "git_commit": commit, "git_dirty": True, "code_bundle": digest,
            "argv": ["train.py"], "cwd_in_repo": "", "script_in_repo": "train.py"}  # fmt: skip
    assert regenerate.bundle_digest(meta) == digest
    p = regenerate.plan("alice.1", meta, bundle=store.path(digest))
    assert str(store.path(digest)) in p.shell()
    where = regenerate.checkout(p, diff, "", tmp_path / "again")
    assert (where / "train.py").read_text() == "print('changed')\n"
    assert git(where, "rev-parse", "HEAD").strip() == commit


def test_no_bundle_is_made_over_the_cap_or_when_head_moved(repo, tmp_path):
    commit = git(repo, "rev-parse", "HEAD").strip()
    over = code_bundle.make(repo, commit, max_bytes=10)
    assert over.data is None
    assert "over the" in over.note
    first = git(repo, "rev-parse", "HEAD~1").strip()
    moved = code_bundle.make(repo, first)
    assert moved.data is None
    assert "HEAD moved" in moved.note
    assert code_bundle.make(repo, "--upload-pack=x").data is None  # never an option to git
    assert code_bundle.make(repo, commit, max_bytes=0).note.startswith("code bundle turned off")


def test_a_hostile_bundle_field_names_no_file(tmp_path):
    for value in ("../../etc/passwd", "-x", 5, None, "a" * 63):
        assert regenerate.bundle_digest({"code_bundle": value}) is None


def test_the_runs_packages_go_into_a_venv_of_their_own(repo, tmp_path):
    (repo / "requirements.txt").write_text("iniconfig==2.0.0\n")
    python = regenerate.make_env(repo, sys.executable)
    shown = subprocess.run(
        [python, "-c", "import iniconfig, sys; print(sys.prefix)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == str(repo / ".venv")
    with pytest.raises(regenerate.LabstatsError, match="exists already"):
        regenerate.make_env(repo, sys.executable)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "requirements.txt").write_text("no-such-package-labstats-test==0.0.1\n")
    with pytest.raises(regenerate.LabstatsError, match="did not install"):
        regenerate.make_env(tmp_path / "other", sys.executable)


TRAIN = """
import sys, labstats
with labstats.Stats("runs/" + sys.argv[1], capture_freeze=False, code_bundle_bytes=int(sys.argv[2])) as stats:
    stats.log(step=0, loss=1.0)
print(stats.run_id)
"""


def test_a_run_in_git_records_its_bundle_once_per_commit_and_regenerates_from_it(
    repo, tmp_path, url, monkeypatch
):
    import redis

    from labstats.reader import Lab

    store = tmp_path / "store"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(store))
    (repo / "train.py").write_text(TRAIN)
    git(repo, "commit", "-q", "-am", "a training script")

    def run(name: str, cap: int = code_bundle.DEFAULT_MAX_BYTES):
        said = subprocess.run([sys.executable, "train.py", name, str(cap)], cwd=repo, check=True,
                              capture_output=True, text=True, timeout=120).stdout  # fmt: skip
        return Lab(redis.Redis.from_url(url), artifact_dir=store).run(said.split()[-1])

    runs = [run("first"), run("again")]
    digests = {r.meta["code_bundle"] for r in runs}
    assert len(digests) == 1  # the second run of the same commit stored nothing new
    digest = digests.pop()
    assert [p for p in store.rglob("*") if p.is_file()] == [store / digest[:2] / digest]
    capped = run("capped", 0)
    assert "code_bundle" not in capped.meta
    assert capped.meta["code_bundle_note"].startswith("code bundle turned off")

    shutil.rmtree(repo)  # gone, and it never had a remote: only the bundle can give its code
    where = regenerate.checkout(runs[0].regenerate_plan(), runs[0].diff(), "", tmp_path / "again-here")
    assert (where / "train.py").read_text() == TRAIN


ENV_TRAIN = """
import sys, iniconfig, labstats
with labstats.Stats("runs/env", capture_freeze=False) as stats:
    stats.log(step=0, loss=1.0)
print("PREFIX", sys.prefix, stats.run_id)
"""


def test_regenerate_run_env_runs_it_with_its_recorded_packages_in_a_venv_of_its_own(repo, tmp_path, url):
    (repo / "train.py").write_text(ENV_TRAIN)
    git(repo, "commit", "-q", "-am", "needs iniconfig")
    said = subprocess.run([sys.executable, "train.py"], cwd=repo, check=True, capture_output=True, text=True,
                          timeout=120).stdout.split()  # fmt: skip
    original = said[-1]
    lab = labstats.connect(url)
    # What a training box records (pip freeze); this box's index serves it.
    lab.redis.set(lab.keys.freeze(original), "iniconfig==2.0.0\n")
    target = tmp_path / "again"
    again = subprocess.run(
        [sys.executable, "-m", "labstats.cli", "regenerate", original, str(target), "--run", "--env"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    prefix = again.stdout.split("PREFIX ", 1)[1].split()
    assert prefix[0] == str(target / ".venv")  # its own venv, not this interpreter
    assert labstats.connect(url).run(prefix[1]).series("loss").values.tolist() == [1.0]
