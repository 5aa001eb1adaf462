"""The README's screenshots of the explorer and the compare page, made as a person sees them:
a small sweep (2 learning rates x 3 seeds, images every 100 steps) logged through the real
logger into a redis-server of its own, the viewer served on loopback, Debian's Chromium.

    .venv/bin/python scripts/readme-screenshots.py      # writes docs/images/explorer.png, compare.png
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import redis
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

import labstats
from labstats.viewer import create_app
from labstats.viewer.sources import Source

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
# Every chart of the page drawn.
DRAWN = """() => {
    const targets = [...document.querySelectorAll('.bk-target')];
    return targets.length > 0 && targets.every(t => t.dataset.rendered === 'true');
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_sweep(url: str, workdir: Path) -> list[str]:
    ids = []
    for lr in (0.01, 0.003):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            config = {"lr": lr, "seed": seed, "opt": "adam"}
            options = {"url": url, "config": config, "capture_git": False, "system_metrics": False}
            with labstats.Stats(
                workdir / f"lr{lr}-s{seed}", name=f"sweep-lr{lr}-s{seed}", **options
            ) as stats:
                loss = 2.0
                for step in range(1000):
                    loss = loss * (1 - lr * 0.5) + rng.normal(0, 0.01)
                    stats.log(step=step, loss=loss, acc=1 - loss / 2.5)
                    if step % 250 == 0:
                        picture = np.zeros((64, 64, 3), np.uint8)
                        picture[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)
                        picture[..., 1] = int(255 * step / 1000)
                        picture[..., 2] = int(255 * seed / 3)
                        stats.image("samples", picture, step=step)
            ids.append(stats.run_id)
    return ids


def main() -> int:
    chromium = shutil.which("chromium")
    if not chromium:
        print("Debian's chromium is missing (scripts/host-setup.sh installs it)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="labstats-shots-"))
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--dir", str(work)],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["LABSTATS_ARTIFACT_DIR"] = str(work / "artifacts")  # the sweep's pictures, thrown away after
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        ids = log_sweep(url, work)
        app = create_app({"local": Source("local", url, artifact_dir=str(work / "artifacts"))})
        http = make_server("localhost", 0, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        base = f"http://localhost:{http.server_port}"
        IMAGES.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            query = urlencode(
                {"metric": "loss", "split": "opt", "color": "lr", "agg": "mean", "smooth": "0.6"}
            )
            page.goto(f"{base}/explorer?{query}")
            page.wait_for_function(DRAWN, timeout=30_000)
            page.screenshot(path=str(IMAGES / "explorer.png"), full_page=True)
            refs = urlencode([("run", f"local/{run_id}") for run_id in ids[:3]])
            page.goto(f"{base}/compare?{refs}")
            page.wait_for_timeout(3000)  # charts and the media row drawn
            page.screenshot(path=str(IMAGES / "compare.png"), full_page=True)
            browser.close()
        http.shutdown()
        print(f"wrote {IMAGES / 'explorer.png'} and {IMAGES / 'compare.png'}")
        return 0
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
