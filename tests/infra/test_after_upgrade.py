"""After the upgrade. Molecule's default scenario deploys the previous release first
(.ci/previous-release, molecule/default/prepare.yml), logs runs with it, archives one, keeps
their digests and starts a canary logging 1,000 points a second; then converges this tree
over it, checks a second converge changes nothing, and stops the canary (side_effect.yml).
Here: the canary lost and repeated no point and never raised, every run from before reads
the same, and their pages, media, tensor files and archive answer on the web box.

Collected only in that scenario (tests/infra/conftest.py): the `make lab` boxes had no
previous release."""

import hashlib
import json
import os
from pathlib import Path

from conftest import https_get, wait_until, web_token

testinfra_hosts = ["trainbox"]
AS_ARCHIVER = "LABSTATS_CONFIG=/etc/labstats/archiver.toml /opt/labstats/venv/bin/python"

CANARY = """
import json, sys, numpy as np, labstats
run = labstats.connect().run(sys.argv[1])
series = run.series("canary")
idx = np.asarray(series.idx)
print(json.dumps({"count": len(idx), "distinct": len(np.unique(idx)), "first": int(idx[0]),
                  "last": int(idx[-1]), "values": bool(np.array_equal(series.values, idx)),
                  "status": run.status}))
"""


def kept(name: str) -> dict:
    return json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text())


def test_the_canary_logged_through_the_upgrade_without_a_loss_a_repeat_or_an_error(host):
    canary = kept("canary.json")
    assert canary["errors"] == []  # no call raised into the training loop
    assert canary["spool"] is None  # nothing left waiting on disk
    assert canary["sent"] >= 60 * 1000  # it logged through the whole converge, a minute at least
    with host.sudo():
        found = json.loads(host.check_output(f"{AS_ARCHIVER} -c %s %s", CANARY, canary["run_id"]))
    sent = canary["sent"]
    assert found == {"count": sent, "distinct": sent, "first": 0, "last": sent - 1, "values": True,
                     "status": "finished"}  # fmt: skip


def test_every_run_from_before_reads_the_same_points(host):
    before = kept("before-upgrade.json")
    assert len(before["digests"]) >= 2
    with host.sudo():
        now = json.loads(host.check_output(f"{AS_ARCHIVER} /home/researcher/digests.py upgrade-canary"))
    assert {run_id: now.get(run_id) for run_id in before["digests"]} == before["digests"]


def test_their_pages_media_tensor_files_and_archive_answer_on_the_web_box():
    before = kept("before-upgrade.json")
    token = web_token()
    for run_id in before["runs"]:
        page = f"/runs/trainbox/{run_id}"
        assert wait_until(lambda page=page: https_get(page, token=token)[0] == 200, timeout=60)
        status, _, body = https_get(f"/api/runs/trainbox/{run_id}/media/samples", token=token)
        assert status == 200
        (record,) = json.loads(body)["records"]
        status, _, original = https_get(f"/api/runs/trainbox/{run_id}/file/samples?download=1", token=token)
        assert status == 200
        assert hashlib.sha256(original).hexdigest() == record["digest"]
        # The large tensor is a store file (archived or not): its value reads back whole.
        status, _, body = https_get(f"/api/runs/trainbox/{run_id}/series/weights", token=token)
        assert status == 200, body[:300]
        assert b"unreadable" not in body
    status, _, body = https_get(f"/api/runs/trainbox/{before['archived']}", token=token)
    assert status == 200
    assert json.loads(body)["archived"]
