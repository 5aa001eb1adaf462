"""Media on the real boxes: images, a FITS image and a point cloud logged on the training box
as the training user reach the web box's copy of the store with the right digests within
30 s, also after a tunnel outage; the receiving key can only write into its own folder; and
a real browser (Chromium) shows them: the slider's image labelled by epoch and step, the GIF
and the montage in the panel (made from the originals), the FITS preview, the 3-D view with
its axes and full screen, and the compare page's media side by side. Screenshots go to
artifacts/."""

import hashlib
import io
import json
import secrets
import shlex
import shutil

import numpy as np
import pytest
from conftest import box, https_get, tunnel_address, viewer_login, wait_until, web_token, web_url
from playwright.sync_api import sync_playwright
from test_browser import ARTIFACTS

from labstats.format import codec

testinfra_hosts = ["trainbox"]

COPIES = "/var/lib/labstats/artifacts/trainbox"
LOG_MEDIA = """
import sys, numpy as np, labstats
name = sys.argv[1]
with labstats.Stats("runs/" + name) as stats:
    for k in range(5):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :, 0] = 50 * k          # red grows with the step: each frame differs
        image[: 8 * (k + 1), :, 1] = 200  # and a green band grows from the top
        idx = stats.update(k, 10, 10, 0)  # epoch k begins at idx 10 k
        stats.log(step=idx, loss=1.0 / (k + 1))
        stats.image("samples", image, caption=f"epoch {k}")
    stats.fits("sky", np.random.default_rng(0).normal(100, 10, (64, 64)), header={"OBJECT": "M31"})
    xyz = np.random.default_rng(1).normal(size=(20000, 3))
    stats.points("cloud", xyz, colors=(xyz - xyz.min()) / (xyz.max() - xyz.min()))
print(stats.run_id)
"""
RECEIVE_SSH = (
    "ssh -i /var/lib/labstats-push/.ssh/id_ed25519 -o BatchMode=yes -o ConnectTimeout=10 "
    "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/var/lib/labstats-push/.ssh/known_hosts"
)


def log_media(host, name: str) -> str:
    with host.sudo("researcher"):
        result = host.run("cd ~ && /opt/labstats/venv/bin/python -c %s %s", LOG_MEDIA, name)
    assert result.rc == 0, result.stderr
    return result.stdout.split()[-1]


def records(run_id: str, name: str) -> list[dict]:
    status, _, body = https_get(f"/api/runs/trainbox/{run_id}/media/{name}", token=web_token())
    assert status == 200, body
    return json.loads(body)["records"]


def digests(run_id: str) -> dict[str, str]:
    """Every record's digest, by name and step, as the viewer on the web box lists them."""
    status, _, body = https_get(f"/api/runs/trainbox/{run_id}/media", token=web_token())
    assert status == 200, body
    found = {}
    for entry in json.loads(body)["media"]:
        for step in entry["steps"]:
            status, _, body = https_get(
                f"/api/runs/trainbox/{run_id}/media/{entry['name']}?step={step}", token=web_token()
            )
            for record in json.loads(body)["records"]:
                found[f"{entry['name']}@{step}"] = record["digest"]
    return found


def push_now(host) -> bool:
    """One push of the training box's files (the service waits for one under way first)."""
    with host.sudo():
        return host.run("systemctl start labstats-file-push.service").rc == 0


def copies_match(web, wanted: dict[str, str]) -> bool:
    with web.sudo():
        for digest in wanted.values():
            path = f"{COPIES}/{digest[:2]}/{digest}"
            if not web.file(path).exists or web.file(path).sha256sum != digest:
                return False
    return True


@pytest.fixture(scope="module")
def media_run(host):
    run_id = log_media(host, "media-check")
    assert wait_until(lambda: https_get(f"/api/runs/trainbox/{run_id}", token=web_token())[0] == 200)
    return run_id


def test_the_store_is_shared_by_the_training_users_and_pushed_on_a_timer(host):
    store = host.file("/var/lib/labstats/artifacts")
    assert store.is_directory
    assert store.group == "labstats"
    assert store.mode == 0o3775  # group-writable and sticky
    with host.sudo():
        prefixes = host.check_output(
            f"stat -c '%U:%G %a' {store.path}/[0-9a-f][0-9a-f] | sort | uniq -c"
        ).strip()
    assert prefixes == "256 root:labstats 3775"  # made by the role, not by a first writer
    assert "labstats" in host.user("researcher").groups
    timer = host.service("labstats-file-push.timer")
    assert timer.is_enabled
    assert timer.is_running


def test_media_reach_the_web_box_with_their_digests_within_30_s(host, media_run):
    wanted = digests(media_run)
    assert len(wanted) == 7  # 5 images, the FITS image, the point cloud
    with host.sudo():
        for digest in wanted.values():  # the originals on the training box are what was recorded
            assert host.file(f"/var/lib/labstats/artifacts/{digest[:2]}/{digest}").sha256sum == digest
    assert wait_until(lambda: copies_match(box("webbox"), wanted), timeout=30)
    # The viewer serves the synced original, byte for byte.
    record = records(media_run, "sky")[0]
    status, _, body = https_get(f"/api/runs/trainbox/{media_run}/file/sky?download=1", token=web_token())
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == record["digest"]


def test_jupyter_reads_the_media_of_a_run(host, media_run):
    web = box("webbox")
    script = (
        "import labstats; run = labstats.connect().run('trainbox/media-check'); "
        "print(run.artifact('samples', as_='array').shape, sorted(run.media_names()))"
    )
    assert wait_until(lambda: copies_match(web, digests(media_run)), timeout=30)
    with web.sudo("jupyter"):
        out = web.check_output("cd /tmp && /opt/labstats-jupyter/venv/bin/python -c %s", script)
    assert out.splitlines()[-1] == "(48, 64, 3) ['cloud', 'samples', 'sky']"


LOG_TENSOR = """
import numpy as np, labstats
with labstats.Stats("runs/tensor-check") as stats:
    w = np.arange(500_000, dtype=np.float32).reshape(500, 1000)  # 2 MB: a file of the store
    spikes = np.zeros(1_000_000, np.float32)  # 4 MB, one element not 0
    for step in range(3):
        spikes[654_321] = step + 1
        stats.log(step=step, w=w, spikes=spikes)
        w *= 2
print(stats.run_id)
"""
READ_TENSOR = (
    "import labstats; run = labstats.connect().run('trainbox/tensor-check'); "
    "print([v if isinstance(v, Exception) else float(v[-1, -1]) for v in run.series('w').values])"
)
TENSOR_LAST = [499999.0 * 2**step for step in range(3)]  # the last element at steps 0, 1, 2


@pytest.fixture(scope="module")
def tensor_run(host):
    with host.sudo("researcher"):
        result = host.run("cd ~ && /opt/labstats/venv/bin/python -c %s", LOG_TENSOR)
    assert result.rc == 0, result.stderr
    return result.stdout.split()[-1]


def test_a_large_tensor_logged_on_the_training_box_reads_in_jupyter_within_30_s(host, tensor_run):
    web = box("webbox")

    def read_in_jupyter() -> str:
        with web.sudo("jupyter"):
            found = web.run("cd /tmp && /opt/labstats-jupyter/venv/bin/python -c %s", READ_TENSOR)
        return found.stdout.strip().splitlines()[-1] if found.rc == 0 and found.stdout.strip() else ""

    assert wait_until(lambda: read_in_jupyter() == str(TENSOR_LAST), timeout=30)
    # The tensors are files of the store on both boxes, named by their content (Redis and its
    # replica hold references of 41 bytes, not 6 MB).
    w = np.arange(500_000, dtype=np.float32).reshape(500, 1000)
    for _ in range(3):
        digest = hashlib.sha256(b"".join(codec.array_parts(w))).hexdigest()
        with host.sudo():
            assert host.file(f"/var/lib/labstats/artifacts/{digest[:2]}/{digest}").sha256sum == digest
        with web.sudo():
            assert web.file(f"{COPIES}/{digest[:2]}/{digest}").sha256sum == digest
        w *= 2


def test_media_logged_during_a_tunnel_outage_arrive_after_it(host):
    web = box("webbox")
    with web.sudo():
        web.check_output("systemctl stop wg-quick@wg0")
    try:
        run_id = log_media(host, "media-outage")  # the logger spools, the store keeps the files
        with host.sudo():
            push = host.run(
                "systemctl start labstats-file-push.service; systemctl is-failed labstats-file-push"
            )
        assert "failed" not in push.stdout  # "cannot reach" is a retry, not a failure
    finally:
        with web.sudo():
            web.check_output("systemctl start wg-quick@wg0")
    assert wait_until(lambda: https_get(f"/api/runs/trainbox/{run_id}", token=web_token())[0] == 200, 60)
    assert wait_until(lambda: copies_match(web, digests(run_id)), timeout=60)


DAMAGED = "/var/lib/labstats/artifacts/.damaged/trainbox"


def test_a_damaged_copy_is_set_aside_once_and_sent_again_a_bounded_number_of_times(host, media_run):
    """A copy whose SHA-256 is not its name is never served, moved aside (one copy kept per
    name, never multiplied) and sent again by the next push, at most 3 times; after that it
    stays, reported. Before, every try left one more copy aside, for ever."""
    web = box("webbox")
    wanted = digests(media_run)
    assert wait_until(lambda: copies_match(web, wanted), timeout=30)
    digest = next(v for k, v in wanted.items() if k.startswith("sky"))
    copy = f"{COPIES}/{digest[:2]}/{digest}"

    def damage_and_check() -> str:
        with web.sudo():
            web.check_output(
                f"chmod u+w {copy} && printf 'flipped' | dd of={copy} bs=1 seek=100 conv=notrunc status=none"
            )
            assert web.file(copy).sha256sum != digest
        status, _, _ = https_get(f"/api/runs/trainbox/{media_run}/file/sky", token=web_token())
        assert status == 502  # never served while damaged
        with web.sudo():
            return web.check_output(
                "systemctl start labstats-file-verify; journalctl -u labstats-file-verify -n 3 -o cat"
            )

    with web.sudo():
        web.run(f"rm -f {DAMAGED}/{digest} {DAMAGED}/{digest}.tries")  # (earlier runs against this lab)
    with host.sudo():  # the pushes of this test are its own (its timer could resend in between)
        host.check_output("systemctl stop labstats-file-push.timer")
    try:
        for attempt in (1, 2, 3):
            said = damage_and_check()
            assert f"try {attempt} of 3" in said, said
            with web.sudo():
                assert not web.file(copy).exists
                assert web.check_output(f"ls {DAMAGED} | grep -c {digest}") == "2"  # the copy and its count
            # Pushed again until it is back: a push that was already under way when the copy
            # was set aside listed its files before (CI once waited 30 s on such a push alone).
            assert wait_until(lambda: push_now(host) and copies_match(web, wanted), timeout=60)
        said = damage_and_check()
        assert "still damaged after 3 tries" in said, said
        with web.sudo():
            assert web.file(copy).exists  # left in place: the push does not send it again
            assert web.check_output(f"ls {DAMAGED} | grep -c {digest}") == "2"
            web.check_output(f"rm {copy} {DAMAGED}/{digest}.tries")  # mend the lab for later tests
    finally:
        with host.sudo():
            host.check_output("systemctl start labstats-file-push.timer")
    with host.sudo():
        host.check_output("systemctl start labstats-file-push.service")
    assert wait_until(lambda: copies_match(web, wanted), timeout=30)
    status, _, body = https_get(f"/api/runs/trainbox/{media_run}/file/sky", token=web_token())
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == digest


def test_a_planted_file_that_is_not_its_name_is_never_sent(host):
    """A training user filled the web box's disk from a 0-byte file: a sparse 200 MB file
    named like a digest was sent as real blocks, set aside there, sent again, for ever. Now
    the seal job moves it out of the store before any push may send it."""
    name = "ab" + secrets.token_hex(31)
    planted = f"/var/lib/labstats/artifacts/ab/{name}"
    web = box("webbox")
    with host.sudo("researcher"):
        host.check_output(f"truncate -s 200M {planted}")
    try:
        with host.sudo():
            host.check_output("systemctl start labstats-file-push.service")  # before the seal: not sent
            host.check_output("systemctl start labstats-artifact-seal.service")
            said = host.check_output("journalctl -u labstats-artifact-seal -n 20 -o cat")
            assert not host.file(planted).exists
            assert host.file(f"/var/lib/labstats-artifact-seal/quarantine/{name}.researcher").exists
            host.check_output("systemctl start labstats-file-push.service")
        assert f"moved out of the store: ab/{name} (written by researcher)" in said
        with web.sudo():
            assert not web.file(f"{COPIES}/ab/{name}").exists
            assert web.run(f"ls {DAMAGED} 2>/dev/null | grep -c {name}").stdout.strip() in ("", "0")
    finally:
        with host.sudo():
            host.run(f"rm -f {planted} /var/lib/labstats-artifact-seal/quarantine/{name}.researcher")


FULL_STORE = """
import sys, logging, numpy as np, labstats
logging.basicConfig(level=logging.WARNING)
with labstats.Stats("runs/" + sys.argv[1], artifact_dir=sys.argv[2]) as stats:
    rng = np.random.default_rng(0)
    for step in range(20):
        stats.log(step=step, loss=1.0 / (step + 1))
        stats.image("noise", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), step=step)
print(stats.run_id)
"""


def test_a_full_artifact_store_warns_once_and_the_run_goes_on(host):
    store = "/mnt/full-store"
    with host.sudo():
        host.check_output(f"mkdir -p {store} && mount -t tmpfs -o size=64k,mode=1777 tmpfs {store}")
    try:
        with host.sudo("researcher"):
            result = host.run(
                "cd ~ && /opt/labstats/venv/bin/python -c %s %s %s", FULL_STORE, "full-store", store
            )
        assert result.rc == 0, result.stderr
        assert result.stderr.count("cannot write media") == 1, result.stderr
        with host.sudo():
            leftovers = host.check_output(f"find {store} -name '.part-*' | wc -l")
    finally:
        with host.sudo():
            host.run(f"umount {store}")
    assert leftovers == "0"  # nothing half-written stays
    check = (
        "import labstats; run = labstats.connect().run('full-store'); "
        "print(len(run.series('loss')), run.meta.get('media_failed'), len(run.media('noise')))"
    )
    with host.sudo("researcher"):
        out = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s", check)
    logged, failed, recorded = out.split()
    assert logged == "20"  # every scalar arrived
    assert int(failed) + int(recorded) == 20  # each image either stored whole or said lost
    assert int(failed) > 0


PUT_RANDOM = (
    "import os; from labstats.store import ArtifactStore; "
    "print(ArtifactStore('/var/lib/labstats/artifacts').put(os.urandom(64)))"
)
RECEIVE = "labstats-in-1"  # the training box's own receiving account (box id 1)


def test_the_receiving_key_only_writes_regular_named_files_into_its_own_folder(host):
    """The push key against the tricks an attacker with it tried: a symlink then a relative
    push through it, --force, special and setuid files, a shell, reading back, another box's
    account, the public address. Only regular files named by their SHA-256 get in, read-only."""
    web = box("webbox")
    hub = tunnel_address(web)
    public = web.ansible.get_variables()["ansible_host"]
    ssh = shlex.quote(RECEIVE_SSH)
    module = f"{RECEIVE}@{hub}::artifacts/"
    good = hashlib.sha256(b"probe\n").hexdigest()
    work = "/var/lib/labstats-push/attack"
    with host.sudo("labstats-push"):
        host.check_output(
            f"rm -rf {work} && mkdir -p {work}/{good[:2]} {work}/ab && echo probe > {work}/{good[:2]}/{good}"
            f" && echo x > {work}/ab/not-a-digest && ln -s /var/lib/labstats-in {work}/ln"
            f" && mkfifo {work}/fifo && mkdir -p {work}/home/.ssh"
            f" && echo key > {work}/home/.ssh/authorized_keys2"
        )

        def push(options: str, source: str = f"{work}/", target: str = module):
            # The receiving box refuses a push that does not cap each file at its own limit.
            capped = "--max-size=10240m"
            return host.run(f"rsync -rt {capped} {options} -e {ssh} {source} {target}; echo status=$?")

        assert "status=0" in push(f"--include=/{good[:2]}/ --include=/{good[:2]}/{good} --exclude='*'").stdout
        for options in ("-l", "--force", "-D", "--specials", "-p --chmod=u+s", "--delete", "--inplace"):
            refused = push(options)
            assert "status=0" not in refused.stdout, options
        # A relative push of a path through a folder that is not the store's layout (a link
        # in the attack, which the module cannot hold: links are refused): refused there.
        through = push("-R --no-implied-dirs", f"{work}/./home/.ssh/authorized_keys2")
        assert "status=0" not in through.stdout
        assert "daemon refused to receive" in through.stderr
        shell = host.run(f"{RECEIVE_SSH} {RECEIVE}@{hub} cat /etc/passwd; echo status=$?")
        assert "root:" not in shell.stdout  # its shell is an rsync module: no command runs
        read = host.run(f"rsync -rt -e {ssh} {module}{good[:2]}/{good} /tmp/back; echo status=$?")
        assert "status=0" not in read.stdout  # write-only
        other = push("", target=f"labstats-in-2@{hub}::artifacts/")
        assert "status=0" not in other.stdout
        outside = push("", target=f"{RECEIVE}@{public}::artifacts/")
        assert "status=0" not in outside.stdout
        assert "Permission denied (publickey)" in outside.stderr  # the key is for the tunnel only
    with web.sudo():
        arrived = web.file(f"{COPIES}/{good[:2]}/{good}")
        assert arrived.exists
        assert arrived.mode == 0o444
        strays = web.check_output(
            f"find {COPIES} -mindepth 1 \\( ! -type f ! -type d -o -perm /7022 -o -name not-a-digest "
            f"-o -name ln -o -name fifo \\) -print"
        )
        assert strays == ""
        assert not web.file("/var/lib/labstats-in/.ssh").exists
        assert not web.file(f"{COPIES}/home").exists
        assert web.user(RECEIVE).shell == "/usr/local/sbin/labstats-file-receive"
        sshd = web.check_output("sshd -T | grep -i '^authorizedkeysfile'")
        assert sshd.split()[1:] == ["/etc/ssh/authorized_keys/%u", ".ssh/authorized_keys"]
        web.check_output(f"rm -f {COPIES}/{good[:2]}/{good}")
    with host.sudo():
        host.run(f"rm -rf {work}")


def test_a_box_over_its_quota_pushes_nothing_until_room_is_made(host):
    web = box("webbox")
    with web.sudo():
        # The check with a quota of 0: over it, the flag is set and the job fails.
        over = web.run("sed 's/-gt [0-9]*/-gt 0/' /usr/local/bin/labstats-file-verify >/tmp/v && sh /tmp/v")
        assert over.rc == 1
        assert "over its quota" in over.stderr
        assert web.file("/var/lib/labstats-file-verify/over-quota/trainbox").exists
    try:
        with host.sudo("researcher"):
            fresh = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s", PUT_RANDOM)
        with host.sudo():
            host.check_output("systemctl start labstats-artifact-seal.service")  # only sealed files leave
            host.run("systemctl start labstats-file-push.service")
            said = host.check_output("journalctl -u labstats-file-push -n 20 -o cat")
        assert "over its quota" in said
        with web.sudo():
            assert not web.file(f"{COPIES}/{fresh[:2]}/{fresh}").exists
    finally:
        with web.sudo():
            web.check_output("systemctl start labstats-file-verify.service")  # the real quota: under it
            assert not web.file("/var/lib/labstats-file-verify/over-quota/trainbox").exists
    with host.sudo():
        host.check_output("systemctl start labstats-file-push.service")
    with web.sudo():
        assert web.file(f"{COPIES}/{fresh[:2]}/{fresh}").exists


def test_one_training_user_cannot_remove_replace_or_lock_out_anothers_files(host):
    store = "/var/lib/labstats/artifacts"
    with host.sudo("researcher"):
        digest = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s", PUT_RANDOM)
    mine = f"{store}/{digest[:2]}/{digest}"
    assert host.file(mine).mode == 0o444
    with host.sudo():
        host.check_output("systemctl start labstats-artifact-seal.service")
    assert host.file(mine).user == "root"  # sealed: no longer its writer's to chmod and rewrite
    with host.sudo("researcher"):
        assert host.run(f"chmod u+w {mine}").rc != 0
    with host.sudo("student"):  # the other training account
        for attack in (f"rm -f {mine}", f"mv {mine} /tmp/taken", f"sh -c 'echo forged > {mine}'",
                       f"chmod 000 {store}/{digest[:2]}", f"mv {store}/{digest[:2]} {store}/moved",
                       f"rm -rf {store}/{digest[:2]}"):  # fmt: skip
            assert host.run(attack).rc != 0, attack
    with host.sudo():
        assert host.file(mine).sha256sum == digest
        assert host.check_output(f"stat -c '%U %a' {store}/{digest[:2]}") == "root 3775"


# ---- the browser ----------------------------------------------------------------------------

BROWSER_ARGS = ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # fmt: skip


@pytest.fixture(scope="module")
def page(media_run):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing (scripts/host-setup.sh installs it)"
    assert wait_until(lambda: copies_match(box("webbox"), digests(media_run)), timeout=30)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 1400})
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        viewer_login(page)
        page.goto(web_url(f"/runs/trainbox/{media_run}"))
        yield page
        browser.close()


def shown_red(page, selector: str) -> float:
    """Mean red of the image the page shows, as decoded by the browser itself."""
    return page.evaluate(
        """(selector) => {
            const img = document.querySelector(selector);
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const ctx = canvas.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            let sum = 0;
            for (let i = 0; i < data.length; i += 4) sum += data[i];
            return sum / (data.length / 4);
        }""",
        selector,
    )


def test_the_slider_shows_the_image_of_the_chosen_step(page):
    panel = 'section.media-panel[data-kind="image"]'
    page.wait_for_selector(f'{panel} .media-items[data-step="40"] img.thumb', timeout=20_000)
    page.wait_for_function(f"document.querySelector('{panel} img.thumb').complete")
    assert abs(shown_red(page, f"{panel} img.thumb") - 200) < 6
    page.fill(f"{panel} input.media-slider", "1")  # the slider stops at logged steps only
    page.dispatch_event(f"{panel} input.media-slider", "input")
    page.wait_for_selector(f'{panel} .media-items[data-step="10"] img.thumb', timeout=10_000)
    page.wait_for_function(f"document.querySelector('{panel} img.thumb').complete")
    assert abs(shown_red(page, f"{panel} img.thumb") - 50) < 6
    assert page.text_content(f"{panel} figcaption").startswith("epoch 1")
    assert page.text_content(f"{panel} .media-step-value") == "epoch 1 · step 10"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-media.png"), full_page=True)


def test_the_animation_has_one_frame_per_step(page, media_run):
    from PIL import Image

    href = page.get_attribute('section.media-panel[data-kind="image"] a.animation', "href")
    answer = page.request.get(web_url(href))
    assert answer.ok
    gif = Image.open(io.BytesIO(answer.body()))
    assert gif.format == "GIF"
    assert gif.n_frames == 5
    assert gif.size == (512, 384)  # from the 64×48 originals (the thumbnails gave 256 px)


def test_the_gif_and_the_montage_open_in_the_panel(page):
    panel = 'section.media-panel[data-kind="image"]'
    before = page.url
    montage = [3 * 256 + 4, 2 * (192 + 16) + 2]  # 5 tiles of 256×192 in rows of 3, each labelled
    for link, shown, size in (("a.animation", "img.animation-view", [512, 384]),
                              ("a.montage", "img.montage-view", montage)):  # fmt: skip
        page.click(f"{panel} {link}")
        page.wait_for_function(
            f"(() => {{ const i = document.querySelector('{panel} .media-extra {shown}');"
            " return i && i.complete && i.naturalWidth > 0; })()",
            timeout=20_000,
        )
        assert (
            page.evaluate(
                f"(i => [i.naturalWidth, i.naturalHeight])(document.querySelector('{panel} {shown}'))"
            )
            == size
        )
    assert page.url == before  # in place: the page stays
    page.locator(panel).screenshot(path=str(ARTIFACTS / "viewer-media-panel.png"))
    assert page.errors == []


def test_the_fits_preview_loads_with_its_header(page):
    panel = 'section.media-panel[data-kind="fits"]'
    page.wait_for_function(
        f"(() => {{ const i = document.querySelector('{panel} img.fits-preview');"
        " return i && i.complete && i.naturalWidth === 64; })()",
        timeout=20_000,
    )
    page.click(f"{panel} details.fits-header summary")
    assert "M31" in page.text_content(f"{panel} details.fits-header table")


def test_the_point_cloud_is_drawn_in_3d(page):
    view = 'section.media-panel[data-kind="points"] .points-view'
    page.wait_for_selector(f'{view}[data-rendered="three"] canvas', timeout=30_000)
    assert page.get_attribute(view, "data-points") == "20000"
    colours = page.evaluate(
        """(selector) => {
            const canvas = document.querySelector(selector + " canvas");
            const copy = document.createElement("canvas");
            copy.width = canvas.width; copy.height = canvas.height;
            copy.getContext("2d").drawImage(canvas, 0, 0);
            const data = copy.getContext("2d").getImageData(0, 0, copy.width, copy.height).data;
            let drawn = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250) drawn++;
            }
            return drawn;
        }""",
        view,
    )
    assert colours > 500  # points drawn, not just the white background
    assert page.get_attribute(view, "data-axes") == "xyz"
    assert page.evaluate(f"document.querySelector('{view} canvas').clientWidth") > 900  # the grid's width
    page.locator(view).screenshot(path=str(ARTIFACTS / "viewer-points.png"))
    page.click(f"{view} button.points-full")
    page.wait_for_function(f"document.querySelector('{view} canvas').clientWidth === window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "viewer-points-full.png"))
    page.click(f"{view} button.points-full")
    page.wait_for_function(f"document.querySelector('{view} canvas').clientWidth < window.innerWidth")
    assert page.errors == []


def test_the_compare_page_shows_media_side_by_side_at_a_chosen_step(page, media_run):
    page.goto(web_url(f"/compare?run=trainbox/{media_run}&run=trainbox/{media_run}"))
    table = "#compare-media table.media-compare"
    page.wait_for_selector(f'{table}[data-step="40"] tbody tr', timeout=20_000)
    assert page.locator(f"{table} tbody th").all_text_contents() == ["cloud", "samples", "sky"]
    page.fill("#compare-media input.compare-step", "1")  # steps 0, 10, 20, 30, 40: the second
    page.dispatch_event("#compare-media input.compare-step", "input")
    page.wait_for_selector(f'{table}[data-step="10"]')
    cells = page.locator(f'{table} tr[data-name="samples"] td figcaption').all_text_contents()
    assert [c.replace(" original", "") for c in cells] == ["epoch 1 · step 10"] * 2
    page.wait_for_function(f"[...document.querySelectorAll('{table} tr[data-name=samples] img')]"
                           ".every((i) => i.complete && i.naturalWidth > 0)")  # fmt: skip
    page.screenshot(path=str(ARTIFACTS / "viewer-compare-media.png"), full_page=True)
    assert page.errors == []


def test_a_large_tensor_is_drawn_on_its_run_page_at_the_chosen_step(page, tensor_run):
    """A person opens the run, sees the tensor (read from its synced file) as a heat-map, and
    picks another step."""
    head = page.locator(".chart-head", has_text="float32 [500, 1000]")

    def shown() -> bool:
        page.goto(web_url(f"/runs/trainbox/{tensor_run}"))
        return head.count() == 1

    assert wait_until(shown, timeout=30)
    highest = """() => Math.max(...Bokeh.documents.flatMap(d => [...d.all_models])
                                  .filter(m => m.type === "LinearColorMapper").map(m => m.high))"""
    page.wait_for_selector(".chart .bk-target[data-rendered=true]", timeout=20_000)
    assert page.evaluate(highest) == TENSOR_LAST[2]  # the latest step's values
    head.locator("select[name=step]").select_option("1")
    head.locator("button").click()
    page.wait_for_url("**step=1**")
    page.wait_for_selector(".chart .bk-target[data-rendered=true]", timeout=20_000)
    assert page.evaluate(highest) == TENSOR_LAST[1]
    assert page.errors == []


def test_a_million_element_tensor_reaches_the_browser_as_min_and_max_per_bucket(page, tensor_run):
    """Sent whole, a 1-D tensor of 1M floats made the run page ~7 MB heavier; drawn as the
    lowest and highest value of 2,000 buckets it looks the same and keeps its one spike."""
    head = page.locator(".chart-head", has_text="float32 [1000000]")
    sizes = []

    def shown() -> bool:  # and read from its file, which the artifact sync brings
        sizes.append(len(page.goto(web_url(f"/runs/trainbox/{tensor_run}")).body()))
        return head.count() == 1 and page.locator("p.error").count() == 0

    assert wait_until(shown, timeout=30)
    assert sizes[-1] < 4_000_000  # with the 500×1000 heat-map (2.4 MB) beside it
    page.wait_for_selector(".chart .bk-target[data-rendered=true]", timeout=20_000)
    bands = page.evaluate(
        """() => Bokeh.documents.flatMap(d => [...d.all_models])
            .filter(m => m.data && "y1" in m.data && "y2" in m.data)
            .map(m => [m.data.x.length, Math.max(...m.data.y2), Math.min(...m.data.y1)])"""
    )
    assert bands == [[2000, 3, 0]]  # the spike of the latest step, 3, is in its bucket's max
    assert page.errors == []
