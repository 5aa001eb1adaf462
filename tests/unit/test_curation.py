"""Annotations, the trash and the audit trail (labstats.curation) on a real redis-server: as
the role's Redis users where who may matters (the annotator, the training users alice and
bob), as the default user of a plain store elsewhere."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import redis
from conftest import password

import labstats
from labstats.curation import Curation, CurationError, read_annotations, read_audit
from labstats.format import curation as fmt

ALICE_RUN = "alice.20261205-101500-aaaaaa"
BOB_RUN = "bob.20261205-101500-bbbbbb"


def as_user(server, user):
    return server.client(user, password(user))


def plant_run(client, run_id, **fields):
    client.hset(f"ls:run:{run_id}", mapping={"name": run_id.split(".")[0] + "-run", **fields})


@pytest.fixture
def plain(redis_server):
    """A store without users (a laptop) holding two runs."""
    client = redis_server.client()
    client.flushall()
    plant_run(client, ALICE_RUN, tags='["logged"]')
    plant_run(client, BOB_RUN)
    return client


@pytest.fixture
def acl(acl_server):
    """The role's users on a master holding alice's and bob's runs."""
    ops = acl_server.client()
    ops.flushall()
    plant_run(ops, ALICE_RUN)
    plant_run(ops, BOB_RUN)
    ops.sadd("ls:owners", "alice", "bob")
    return acl_server


def cur(client, writer="default", actor="tester", via="cli"):
    return Curation(client, actor=actor, writer=writer, via=via)


# ---- changes and their audit -------------------------------------------------------------


def test_a_change_is_stored_and_audited_once_with_before_and_after(plain):
    c = cur(plain, actor="carol", via="api")
    got = c.change(ALICE_RUN, name="  lr sweep 3 ", project="vision", note="# Why\n\tit *collapsed*",
                   tags_add=["baseline", "a b"], starred=True)  # fmt: skip
    assert got.name == "lr sweep 3"  # blanks around a name are not kept
    assert (got.project, got.note, got.starred, got.protected) == (
        "vision",
        "# Why\n\tit *collapsed*",
        True,
        False,
    )
    assert got.tags == ("logged", "baseline", "a b")  # starts from the tags it was logged with
    assert got.updated_by == "carol"
    assert got.updated == pytest.approx(time.time(), abs=5)
    assert c.get(ALICE_RUN) == got
    (entry,) = read_audit(plain)
    assert entry["who"] == "carol"
    assert entry["writer"] == "default"
    assert entry["via"] == "api"
    assert entry["run"] == ALICE_RUN
    assert entry["action"] == "change"
    assert entry["changes"]["name"] == ["", "lr sweep 3"]
    assert entry["changes"]["tags"] == [["logged"], ["logged", "baseline", "a b"]]
    assert entry["changes"]["starred"] == [False, True]

    got = c.change(ALICE_RUN, name="", tags_remove=["logged"], starred=False)
    assert (got.name, got.tags, got.starred) == ("", ("baseline", "a b"), False)
    assert set(plain.hkeys(f"ls:ann:{ALICE_RUN}")) >= {b"tags"}
    assert b"name" not in plain.hkeys(f"ls:ann:{ALICE_RUN}")  # cleared: the field is gone
    newest = read_audit(plain)
    assert len(newest) == 2
    assert newest[0]["changes"]["name"] == ["lr sweep 3", ""]
    # a call that changes nothing still leaves its one entry (every request is accounted)
    c.change(ALICE_RUN, starred=False)
    assert len(read_audit(plain)) == 3
    assert read_audit(plain)[0]["changes"] == {}


BAD = [
    ({"name": "a\nb"}, "control characters"),
    ({"name": "x" * 201}, "at most 200"),
    ({"project": "p\x00"}, "control characters"),
    ({"project": "p\x1b[31m"}, "control characters"),
    ({"note": "x" * (1 << 20)}, "64 KiB"),
    ({"note": "bell\x07"}, "control characters"),
    ({"name": 3}, "must be text"),
    ({"tags_add": ["t" * 65]}, "at most 64"),
    ({"tags_add": ["a\tb"]}, "control characters"),
    ({"tags_add": ["  "]}, "must not be empty"),
    ({"tags_add": [f"t{n}" for n in range(100)]}, "at most 100 tags"),
    ({"starred": "yes"}, "true or false"),
]


@pytest.mark.parametrize(("change", "said"), BAD, ids=[str(b[0])[:30] for b in BAD])
def test_bad_input_is_refused_clearly_and_nothing_is_stored(plain, change, said):
    with pytest.raises(CurationError, match=said):
        cur(plain).change(ALICE_RUN, **change)
    assert not plain.exists(f"ls:ann:{ALICE_RUN}")
    assert read_audit(plain) == []


def test_hostile_markup_is_stored_as_given_for_the_viewer_to_escape(plain):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    got = cur(plain).change(ALICE_RUN, name=hostile, note=hostile, tags_add=[hostile[:60]])
    assert got.name == hostile
    assert got.note == hostile
    assert hostile[:60] in got.tags


def test_no_such_run(plain):
    with pytest.raises(CurationError, match="no run"):
        cur(plain).change("alice.nothing", starred=True)
    with pytest.raises(CurationError, match="no run"):
        cur(plain).trash("alice.nothing")
    assert read_audit(plain) == []
    assert not plain.exists("ls:ann:alice.nothing")


def test_trash_and_restore(plain):
    c = cur(plain, actor="dave")
    got = c.trash(BOB_RUN)
    assert got.trashed == pytest.approx(time.time(), abs=5)
    assert got.trashed_by == "dave"
    with pytest.raises(CurationError, match="already in the trash"):
        c.trash(BOB_RUN)
    got = c.restore(BOB_RUN)
    assert got.trashed is None
    assert got.trashed_by == ""
    with pytest.raises(CurationError, match="not in the trash"):
        c.restore(BOB_RUN)
    assert [e["action"] for e in read_audit(plain)] == ["restore", "trash"]


def test_a_protected_run_cannot_be_trashed(plain):
    c = cur(plain)
    c.change(ALICE_RUN, protected=True)
    with pytest.raises(CurationError, match="protected"):
        c.trash(ALICE_RUN)
    assert c.get(ALICE_RUN).trashed is None
    c.change(ALICE_RUN, protected=False)
    assert c.trash(ALICE_RUN).trashed is not None


def test_two_editors_at_once_both_end_in_the_audit_and_nothing_is_lost(plain, redis_server):
    """Each adds 25 tags, one call each, at the same time on two connections: without WATCH
    one's read-modify-write would overwrite the other's tags."""
    editors = [cur(redis_server.client(), actor=who, via="viewer") for who in ("erin", "frank")]

    def work(c):
        for n in range(25):
            c.change(ALICE_RUN, tags_add=[f"{c.actor}-{n}"], note=f"{c.actor} {n}")

    threads = [threading.Thread(target=work, args=(c,)) for c in editors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = editors[0].get(ALICE_RUN)
    assert len(got.tags) == 51  # "logged" and all 50
    entries = read_audit(plain, run_id=ALICE_RUN)
    assert len(entries) == 50
    assert {e["who"] for e in entries} == {"erin", "frank"}
    assert got.note == entries[0]["changes"]["note"][1]  # the last one wins, and shows
    for newer, older in itertools.pairwise(entries):  # each saw what the other left
        assert newer["changes"]["note"][0] == older["changes"]["note"][1]


def test_junk_written_by_a_hostile_owner_reads_safely(plain):
    plain.hset(f"ls:ann:{ALICE_RUN}", mapping={
        "name": "bad\x1bname", "project": "p" * 5000, "note": b"\xff\xfe", "tags": '{"a": 1}',
        "starred": "yes", "protected": "1", "trashed": "nan", "updated": "1e999", "extra": "x",
    })  # fmt: skip
    plain.hset(f"ls:ann:{BOB_RUN}", "tags", '["ok", 3, null, "x\\u0000y", "fine"]')
    plain.set(f"ls:ann:{ALICE_RUN}.wrongtype", "a string where a hash should be")
    plant_run(plain, f"{ALICE_RUN}.wrongtype")
    got = read_annotations(plain, "ls", [ALICE_RUN, BOB_RUN, f"{ALICE_RUN}.wrongtype"])
    a = got[ALICE_RUN]
    assert (a.name, a.project, a.note, a.tags, a.starred, a.protected) == ("", "", "", (), False, True)
    assert a.trashed is None
    assert a.updated is None
    assert got[BOB_RUN].tags == ("ok", "fine")
    assert got[f"{ALICE_RUN}.wrongtype"] == fmt.Annotations()
    plain.xadd("ls:audit:default", {"changes": "[1]", "action": "rm -rf", "via": "x", "when": "soon"})
    (entry,) = read_audit(plain)
    assert entry["changes"] == {}
    assert entry["action"] == ""
    assert entry["via"] == ""
    assert entry["when"] == pytest.approx(time.time(), abs=5)  # the store's own time


def test_audit_newest_first_over_every_writer_with_run_and_limit(acl):
    annotator = cur(as_user(acl, "annotator"), writer="annotator", actor="gina", via="viewer")
    alice = cur(as_user(acl, "alice"), writer="alice", actor="pretends-to-be-root")
    annotator.change(ALICE_RUN, starred=True)
    alice.change(ALICE_RUN, note="mine")
    annotator.change(BOB_RUN, project="p")
    viewer = as_user(acl, "viewer")  # the replica's read-only user reads it all
    entries = read_audit(viewer)
    assert [(e["writer"], e["run"]) for e in entries] == [
        ("annotator", BOB_RUN), ("alice", ALICE_RUN), ("annotator", ALICE_RUN)]  # fmt: skip
    assert entries[1]["who"] == "alice"  # a training user's own stream proves who it was
    assert entries[0]["who"] == "gina"
    assert [e["writer"] for e in read_audit(viewer, run_id=ALICE_RUN)] == ["alice", "annotator"]
    assert len(read_audit(viewer, limit=1)) == 1
    assert read_annotations(viewer, "ls", [ALICE_RUN])[ALICE_RUN].note == "mine"


def test_audit_of_one_run_is_found_beyond_the_first_page(plain):
    c = cur(plain)
    c.change(ALICE_RUN, starred=True)
    for n in range(1200):
        c.refused(BOB_RUN, f"attempt {n}")
    assert [e["run"] for e in read_audit(plain, run_id=ALICE_RUN)] == [ALICE_RUN]
    refusals = read_audit(plain, run_id=BOB_RUN, limit=1000)
    assert len(refusals) == 1000
    assert refusals[0]["what"] == "attempt 1199"
    assert refusals[0]["action"] == "refused"


# ---- who may: the role's ACL -------------------------------------------------------------


def test_the_annotator_changes_any_run_but_nothing_else(acl):
    annotator = as_user(acl, "annotator")
    c = cur(annotator, writer="annotator", actor="gina", via="viewer")
    c.change(ALICE_RUN, name="renamed", tags_add=["x"])
    c.trash(BOB_RUN)
    c.restore(BOB_RUN)
    c.refused(ALICE_RUN, "a reader tried to rename it")
    assert len(read_audit(annotator)) == 4
    denied = [
        ("DEL", f"ls:run:{ALICE_RUN}"),
        ("UNLINK", f"ls:run:{ALICE_RUN}"),
        ("DEL", f"ls:ann:{ALICE_RUN}"),
        ("HSET", f"ls:run:{ALICE_RUN}", "name", "x"),
        ("HDEL", f"ls:run:{ALICE_RUN}", "name"),
        ("SET", f"ls:ann:{ALICE_RUN}", "x"),  # only hashes: no type confusion
        ("ZADD", "ls:owner:alice:runs", "1", ALICE_RUN),
        ("XTRIM", "ls:audit:annotator", "MAXLEN", "0"),
        ("XDEL", "ls:audit:annotator", "0-1"),
        ("DEL", "ls:audit:annotator"),
        ("XADD", "ls:audit:alice", "*", "who", "alice"),
        ("HSET", "ls:names", "x", "y"),
        ("EXPIRE", f"ls:ann:{ALICE_RUN}", "1"),
        ("RENAME", f"ls:ann:{ALICE_RUN}", "ls:ann:other"),
        ("FLUSHALL",),
        ("EVAL", "return 1", "0"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("SRANDMEMBER", "ls:owners", "-600"),
    ]
    for command in denied:
        with pytest.raises(redis.exceptions.NoPermissionError):
            annotator.execute_command(*command)
    assert acl.client().hget(f"ls:run:{ALICE_RUN}", "name") == b"alice-run"


def test_a_training_user_annotates_its_own_runs_only(acl):
    alice = as_user(acl, "alice")
    c = cur(alice, writer="alice", actor="alice")
    assert c.change(ALICE_RUN, tags_add=["mine"]).tags == ("mine",)
    assert c.trash(ALICE_RUN).trashed is not None
    with pytest.raises(CurationError, match="only its owner or an editor in the viewer can"):
        c.change(BOB_RUN, name="hijacked")
    with pytest.raises(CurationError, match="only its owner or an editor in the viewer can"):
        c.trash(BOB_RUN)
    assert not acl.client().exists(f"ls:ann:{BOB_RUN}")
    c.refused(BOB_RUN, "trash")  # its own stream takes note of its attempts
    assert read_audit(alice, run_id=BOB_RUN)[0]["action"] == "refused"
    for command in [
        ("XADD", "ls:audit:bob", "*", "who", "bob"),
        ("XADD", "ls:audit:annotator", "*", "who", "admin"),
        ("XTRIM", "ls:audit:alice", "MAXLEN", "0"),
        ("DEL", f"ls:ann:{ALICE_RUN}"),
        ("SET", f"ls:ann:{ALICE_RUN}.x", "x"),
        ("HSET", f"ls:ann:{BOB_RUN}", "trashed", "1"),
    ]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.execute_command(*command)


def test_the_viewer_user_still_only_reads(acl):
    viewer = as_user(acl, "viewer")
    with pytest.raises(CurationError, match="may not change"):
        cur(viewer, writer="annotator").change(ALICE_RUN, starred=True)
    with pytest.raises(redis.exceptions.NoPermissionError):
        viewer.xadd("ls:audit:annotator", {"who": "x"})


# ---- where people see them ----------------------------------------------------------------


def test_the_html_export_shows_display_name_tags_project_and_note_as_text(tmp_path, url, lab):
    import labstats
    from labstats import export

    with labstats.Stats(tmp_path / "r", name="logged-name", tags=["logged"]) as stats:
        stats.log(step=0, loss=1.0)
    hostile = "<script>alert(1)</script>"
    cur(lab.redis).change(stats.run_id, name=f"shown {hostile}", project="vision", tags_add=["kept"],
                          note=f"# Why\n{hostile}\n*it* worked")  # fmt: skip
    html = export.run_html(lab.run(stats.run_id))
    assert "<title>shown &lt;script&gt;alert(1)&lt;/script&gt;</title>" in html
    assert "<th>logged as</th><td>logged-name</td>" in html
    assert "<th>tags</th><td>logged, kept</td>" in html
    assert "<th>project</th><td>vision</td>" in html
    assert "<th>note</th><td># Why\n&lt;script&gt;alert(1)&lt;/script&gt;\n*it* worked</td>" in html
    assert hostile not in html


def test_what_the_acl_cannot_refuse_is_what_docs_security_says(acl):
    """XADD's MAXLEN option cannot be refused by an ACL: the annotator can cut its own stream
    (docs/security.md says so), never a training user's."""
    annotator = as_user(acl, "annotator")
    c = cur(annotator, writer="annotator", actor="gina", via="viewer")
    c.change(ALICE_RUN, starred=True)
    cur(as_user(acl, "alice"), writer="alice").change(ALICE_RUN, note="mine")
    annotator.execute_command("XADD", "ls:audit:annotator", "MAXLEN", "0", "*", "who", "x")
    assert annotator.xlen("ls:audit:annotator") == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        annotator.execute_command("XADD", "ls:audit:alice", "MAXLEN", "0", "*", "who", "x")
    assert [e["writer"] for e in read_audit(annotator)] == ["alice"]


def test_a_note_with_windows_line_ends_is_stored_with_plain_newlines(url):
    client = redis.Redis.from_url(url)
    with labstats.Stats("runs/crlf", name="crlf", capture_git=False) as stats:
        stats.log(step=0, loss=1.0)
    notes = Curation(client, actor="ann", writer="default").change(
        stats.run_id, note="line one\r\nline two\r\n"
    )
    assert notes.note == "line one\nline two\n"  # a form's textarea sends CRLF; it is no control character
