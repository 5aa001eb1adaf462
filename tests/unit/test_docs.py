"""The README's and docs' examples, run as a reader would run them (tests/doc_blocks.py says
how each fenced block is marked). Python examples run against the real redis-server after a
setup that makes the names they assume (a model, a batch of images...), then the run they
logged is read back; shell examples run as written with the venv's `labstats`. Also checked:
every `make` target the docs name exists and CI runs it (or it is listed as manual, with why),
every `labstats` command line quoted in prose parses, and every inventory variable shown is a
role's, with the default shown."""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import doc_blocks
from conftest import password

import labstats
from labstats import cli

ROOT = doc_blocks.ROOT
BLOCKS = doc_blocks.blocks()

# Make targets CI does not run, and why. Every other target is reached from `make test`.
MANUAL_TARGETS = {
    "lock": "re-pins the lock file from the live package index: its output changes with PyPI",
    "clean": "removes caches only",
    "bench": "the full benchmarks (minutes each, figures for docs/benchmarks.md); CI runs bench-quick",
    "bench-share": "the full notebook, export and /metrics figures; CI runs the same script in bench-quick",
    "bench-alerts": "the full alert delays; CI runs the same script in bench-quick",
    "bench-logger": "full run; CI runs the same script in bench-quick",
    "bench-viewer": "full run; CI runs the same scripts in bench-quick",
    "bench-archive": "full run; CI runs the same script in bench-quick",
    "bench-media": "full run; CI runs the same script in bench-quick",
    "bench-system": "full run; CI runs the same script in bench-quick",
    "bench-gpu": "full run, on a GPU box; CI runs the same script on the CPU in bench-quick",
    "bench-outage": "a 5-minute tunnel cut; CI's Molecule verify runs the same test with a 30 s cut",
}


# --- every block is run, or says why not --------------------------------------------------


def test_every_block_says_how_it_is_run():
    unmarked = [b.where for b in BLOCKS if b.kind is None]
    assert not unmarked, f"fenced blocks without a '<!-- run: ... -->' marker: {unmarked}"
    for block in BLOCKS:
        assert block.kind in doc_blocks.KINDS, f"{block.where}: unknown kind {block.kind!r}"
        if block.kind == "no":
            assert len(" ".join(block.args)) > 8, f"{block.where}: say why it is not run"
        if block.kind == "python":
            assert block.name in SETUPS, f"{block.where}: no setup named {block.name!r} here"
        if block.kind == "shell":
            assert block.name in SHELL_SETUPS, f"{block.where}: no setup named {block.name!r} here"
        if block.kind == "box":
            assert block.args[0] in ("training", "web"), block.where
            assert len(block.args) == 2, block.where


def test_the_catalogue_covers_what_the_docs_show():
    # A guard against the extractor silently finding nothing (a renamed folder, a new fence style).
    kinds = {b.kind for b in BLOCKS}
    assert {"python", "shell", "box", "make", "vars", "no"} <= kinds
    assert sum(b.kind == "python" for b in BLOCKS) >= 7


# --- python examples ------------------------------------------------------------------------


def _logger_api(tmp_path):
    class Model:
        sigma = np.linspace(0, 1, 16, dtype=np.float32)

    return {"args": argparse.Namespace(lr=0.01, batch_size=32), "model": Model(), "epoch": 2,
            "set_size": 1000, "batch_size": 32, "step": 5, "idx": 2160}  # fmt: skip


def _logger_api_check(ns, lab):
    run = lab.run("exp42")
    assert run.status == "finished"
    assert run.config["lr"] == 0.01
    assert run.series("sigma").idx.tolist() == [2 * 1000 + 5 * 32]
    assert run.series("acc").values.tolist() == [0.91]


def _media_api(tmp_path):
    import labstats

    (tmp_path / "model.pt").write_bytes(b"weights")
    rng = np.random.default_rng(0)
    return {"stats": labstats.Stats("runs/media"), "x": rng.random((16, 3, 32, 32), dtype=np.float32),
            "data": rng.random((24, 24)).astype(np.float32), "xyz": rng.random((500, 3)),
            "rgb": rng.integers(0, 255, (500, 3), dtype=np.uint8), "canvas": np.zeros((8, 8, 3), np.uint8),
            "savedir": tmp_path / "out", "epoch": 3, "step": 20, "idx": 1}  # fmt: skip


def _media_api_check(ns, lab):
    run = lab.run("media")
    assert set(run.media_names()) >= {"samples", "batch", "sky", "cloud", "checkpoint"}  # canvas: at update()
    written = sorted(p.name for p in ns["savedir"].iterdir())
    assert written == ["shape_e003_s00020.obj", "shape_e003_s00020.ply", "sky_003_s00020_i00001.fits",
                       "val_003_s00020_i00001.jpg"]  # fmt: skip


def _reader_api(tmp_path):
    import labstats

    for lr in (1e-3, 3e-3):  # the second takes the name exp42.2
        with labstats.Stats("runs/exp42", config={"lr": lr}, tags=["sweep"]) as stats:
            for i in range(0, 30_001, 100):
                stats.log(step=i, loss=1 / (i + 1), acc=i / 30_000)
            stats.image("samples", np.full((8, 8), 0.5), step=30)
    return {}


def _reader_api_check(ns, lab):
    assert (Path.cwd() / "exp42.parquet").stat().st_size > 0
    assert {r.name for r in lab.runs(status="finished", tag="sweep", params={"lr": (1e-4, 1e-2)})} >= {
        "exp42", "exp42.2"}  # fmt: skip
    assert lab.run("exp42").artifact("samples", step=30, as_="array").shape == (8, 8)


def _tb_shim(tmp_path):
    return {"loss": 0.5, "step": 7}


def _tb_shim_check(ns, lab):
    assert lab.run("exp42").series("loss/train").idx.tolist() == [7]


def _lightning(tmp_path):
    import lightning.pytorch as pl
    import torch

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(400, 4)  # 100 batches an epoch: Lightning logs every 50 steps
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return {"model": Model(), "train_loader": torch.utils.data.DataLoader(data, batch_size=4)}


def _keras(tmp_path):
    import keras

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return {"model": model, "x": x, "y": x.sum(axis=1, keepdims=True)}


def _huggingface(tmp_path):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)  # fmt: skip
    rng = np.random.default_rng(0)
    data = [{"input_ids": torch.tensor(rng.integers(1, 64, 8)), "labels": torch.tensor(i % 2)}
            for i in range(32)]  # fmt: skip
    args = TrainingArguments(output_dir=str(tmp_path / "runs/exp42"), max_steps=4, logging_steps=2,
                             per_device_train_batch_size=8, report_to=[], use_cpu=True, save_strategy="no",
                             disable_tqdm=True)  # fmt: skip
    return {"model": BertForSequenceClassification(config), "args": args, "data": data}


def _a_finished_run_with_series(ns, lab):
    run = lab.run("exp42")
    assert run.status == "finished"
    assert run.series_names()


SETUPS = {
    "logger-api": (_logger_api, _logger_api_check),
    "media-api": (_media_api, _media_api_check),
    "reader-api": (_reader_api, _reader_api_check),
    "tb-shim": (_tb_shim, _tb_shim_check),
    "lightning": (_lightning, _a_finished_run_with_series),
    "keras": (_keras, _a_finished_run_with_series),
    "huggingface": (_huggingface, _a_finished_run_with_series),
}


@pytest.fixture
def lab(acl_server, monkeypatch):
    """The examples run as a training account of a lab box: a Redis user of its own under the
    redis role's ACL (tests/unit/conftest.py renders it), and nothing they do is refused."""
    ops = acl_server.client()
    ops.flushall()
    ops.execute_command("ACL", "LOG", "RESET")
    url = acl_server.url_for("alice", password("alice"))
    monkeypatch.setenv("LABSTATS_URL", url)
    yield labstats.connect(url)
    assert ops.acl_log() == [], "an example did something its account may not"


@pytest.mark.parametrize("block", doc_blocks.of_kind("python"), ids=lambda b: f"{b.where}-{b.name}")
def test_python_example(block, tmp_path, lab, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup, check = SETUPS[block.name]
    namespace = {"__name__": "__main__", **setup(tmp_path)}
    exec(compile(block.text, block.where, "exec"), namespace)
    for value in list(namespace.values()):
        if isinstance(value, labstats.Stats):
            value.close()  # what the example leaves open ends as at exit
    check(namespace, lab)


# --- shell examples -------------------------------------------------------------------------

TRAIN_SCRIPT = """\
import labstats
with labstats.Stats("runs/exp42", config={"lr": 0.1}) as stats:
    for step in range(5):
        stats.log(step=step, loss=1 / (step + 1))
"""


def _regenerate(tmp_path, env):
    repo = tmp_path / "project"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    (repo / "train.py").write_text(TRAIN_SCRIPT)
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    (repo / "train.py").write_text(TRAIN_SCRIPT.replace("0.1", "0.2"))  # an uncommitted change
    subprocess.run([sys.executable, "train.py"], cwd=repo, env=env, check=True)


def _regenerate_check(tmp_path, lab):
    again = tmp_path / "exp42-again" / "train.py"
    assert '"lr": 0.2' in again.read_text()  # the uncommitted change is applied
    assert sorted(r.name for r in lab.runs()) == ["exp42", "exp42.2"]  # --run logged it again


def _import_tb(tmp_path, env):
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "home/experiments/tb_logs/baseline")) as writer:
        for step in range(3):
            writer.add_scalar("loss", 1 / (step + 1), step)


def _import_tb_check(tmp_path, lab):
    assert lab.run("baseline").series("loss").idx.tolist() == [0, 1, 2]


SHELL_SETUPS = {"regenerate": (_regenerate, _regenerate_check), "import-tb": (_import_tb, _import_tb_check)}


@pytest.mark.parametrize("block", doc_blocks.of_kind("shell"), ids=lambda b: f"{b.where}-{b.name}")
def test_shell_example(block, tmp_path, lab):
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's labstats first
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PATH": path}
    (tmp_path / "home").mkdir()
    setup, check = SHELL_SETUPS[block.name]
    setup(tmp_path, env)
    for command in doc_blocks.commands(block):
        # Paths under /tmp land in the test's own folder; each command starts from a clean one.
        command = command.replace("/tmp/", f"{tmp_path}/")
        for target in re.findall(rf"{re.escape(str(tmp_path))}/[\w.-]+", command):
            subprocess.run(["rm", "-rf", target], check=True)
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{block.where}: {command}\n{done.stdout}\n{done.stderr}"
    check(tmp_path, lab)


# --- make targets ---------------------------------------------------------------------------


def _targets() -> dict[str, list[str]]:
    """Makefile target → the targets it depends on or calls with $(MAKE)."""
    targets, current = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([a-z][a-z-]*):(?!=)\s*([^#]*)", line)
        if rule:
            current = rule[1]
            targets[current] = rule[2].split()
        elif current and line.startswith("\t"):
            targets[current] += re.findall(r"\$\(MAKE\)(?: [A-Z_]+=\S+)* ([a-z][a-z-]*)", line)
    return targets


def _run_by(target: str, targets: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name in targets and name not in seen:
            seen.add(name)
            todo += targets[name]
    return seen


def test_every_make_target_is_run_by_ci_or_says_why():
    targets = _targets()
    assert "make test" in (ROOT / ".ci/run").read_text()
    ci = _run_by("test", targets)
    not_run = set(targets) - ci - set(MANUAL_TARGETS) - {"help"}  # help: run below
    assert not not_run, f"targets neither run by `make test` nor listed as manual: {sorted(not_run)}"
    assert not set(MANUAL_TARGETS) - set(targets), "a manual target that no longer exists"


def test_make_help_lists_every_target():
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True)
    shown = set(re.findall(r"^  make (\S+)", listed.stdout, flags=re.M))
    assert shown == set(_targets()), sorted(set(_targets()) ^ shown)


def test_every_make_command_in_the_docs_exists():
    targets = _targets()
    named = set()
    for document in doc_blocks.DOCUMENTS:
        text = (ROOT / document).read_text()
        named |= set(re.findall(r"(?:`|^)make ([a-z][a-z-]*[a-z])\b", text, flags=re.M))
    for block in doc_blocks.of_kind("make"):
        assert all(c.startswith("make ") for c in doc_blocks.commands(block)), block.where
    assert len(named) >= 15, named
    assert named <= set(targets), sorted(named - set(targets))


# --- command lines quoted in prose ----------------------------------------------------------


def _quoted_commands() -> list[tuple[str, str]]:
    found = []
    for document in doc_blocks.DOCUMENTS:
        text = (ROOT / document).read_text()
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        found += [(document, span) for span in re.findall(r"`(labstats [a-z][^`]*)`", text)]
    return found


def test_every_quoted_labstats_command_parses():
    parser = cli.build_parser()
    # argparse lists its subcommands and options only through its private actions.
    actions = parser._actions  # noqa: SLF001
    subcommands = next(a for a in actions if isinstance(a, argparse._SubParsersAction)).choices  # noqa: SLF001
    quoted = _quoted_commands()
    assert len(quoted) >= 10
    for document, span in quoted:
        words = shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", span).replace("...", "").replace("|", " "))
        for name in words[1].split("/"):  # `labstats show/export/tail`: each of them
            sub = subcommands.get(name)
            assert sub is not None, f"{document}: `{span}`: no subcommand {name!r}"
            options = {o for a in sub._actions for o in a.option_strings}  # noqa: SLF001
            for word in words[2:]:
                if word.startswith("-"):
                    assert word.split("=")[0] in options, f"{document}: `{span}`: no option {word}"


# --- inventory variables --------------------------------------------------------------------


# An inventory-wide variable a role reads through its own default: `x: "{{ name | default(V) }}"`.
_INVENTORY_HOOK = re.compile(r"\{\{ ([a-z_]+) \| default\(('?)([^)']*)\2\) \}\}")


def _role_defaults() -> dict[str, object]:
    defaults = {}
    for path in (ROOT / "roles").glob("*/defaults/main.yml"):
        text = path.read_text()
        defaults.update(yaml.safe_load(text) or {})
        for name, _, value in _INVENTORY_HOOK.findall(text):
            defaults.setdefault(name, yaml.safe_load(value) if value else "")
    return defaults


def _role_options() -> set[str]:
    options = set()
    for path in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        for spec in (yaml.safe_load(path.read_text())["argument_specs"]).values():
            options |= set(spec.get("options", {}))
    # Host variables the example inventory sets (a box's id) are the inventory's, not a role's.
    for path in (ROOT / "inventory/example").rglob("*.yml"):
        options |= set(re.findall(r"^\s*([a-z_]+):", path.read_text(), flags=re.M))
    return options


def _resolved(value, defaults):
    """A default that is another variable (`["{{ labstats_client_user }}"]`) as that one's."""
    if isinstance(value, list):
        return [_resolved(v, defaults) for v in value]
    plain = re.fullmatch(r"\{\{ ([a-z_]+) \}\}", value) if isinstance(value, str) else None
    return _resolved(defaults[plain[1]], defaults) if plain else value


def test_every_variable_shown_is_a_role_default():
    defaults = _role_defaults()
    options = _role_options() | set(defaults)
    for block in doc_blocks.of_kind("vars"):
        shown = yaml.safe_load(block.text)
        for name, value in shown.items():
            assert name in options, f"{block.where}: {name} is no role's variable"
            if block.document == "README.md" and name in defaults:  # the README lists defaults
                default = _resolved(defaults[name], defaults)
                assert value == default, f"{block.where}: {name} defaults to {default!r}"
