#!/usr/bin/env python3
"""Media benchmark, side by side in one run (each against its own fresh redis-server):

- calling-thread cost of logging one 256×256 RGB image: labstats `Stats.image`, the
  original design (`save_jpg`: Pillow encodes a JPEG and writes it on the training thread)
  and tensorboardX `add_image`, beside a copy of the image alone (the floor of any design
  that lets the caller reuse its array at once);
  each called once per 10 ms step of a loop, as in training;
- images per second stored (PNG original in the store, WebP thumbnail and record in Redis),
  all logged at once, from the first call until the last image is in Redis;
- bytes stored per image (artifact file, Redis record + thumbnail);
- the viewer's media panel for a name with 1,000 images: server time of the run page and
  of the records at one step (what the slider asks), plus a 300-frame GIF;
- a point cloud of 1,000,000 points: bytes sent and server time of the first draw.

    make bench-media            # or: python benchmarks/bench_media.py [--images 1000]
    python benchmarks/bench_media.py --baseline 47045b9   # beside another commit (baseline.py)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline
import report

sys.path.insert(0, baseline.package_root())
from bench_logger import RedisServer


def per_call_us(fn, images: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for i, image in enumerate(images):
        fn(i, image)
    return (time.perf_counter() - start) / len(images) * 1e6


def paced_us(fn, images: list[np.ndarray], step_s: float) -> float:
    """Mean time inside ``fn``, called once per step of ``step_s`` as a training loop would:
    each step makes its picture (into the same array, as a model's output buffer), logs it,
    and spends the rest of the step elsewhere (here asleep, as when it waits for a GPU)."""
    picture = np.empty_like(images[0])
    inside, due = 0.0, time.perf_counter()
    for i, image in enumerate(images):
        due += step_s
        np.copyto(picture, image)
        start = time.perf_counter()
        fn(i, picture)
        inside += time.perf_counter() - start
        time.sleep(max(0.0, due - time.perf_counter()))
    return inside / len(images) * 1e6


def timed(client, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.data[:200])
    return time.perf_counter() - start, len(response.data)


def measure(args: argparse.Namespace) -> dict:
    """The table's rows, the summary's figures and the figures compared with a baseline."""
    # Imported here: with --baseline, this process only starts the measuring ones.
    import labstats
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    sample_steps = range(0, args.images, max(1, args.images // 20))
    rng = np.random.default_rng(0)
    # Natural-looking pictures (smooth gradients plus noise), not pure noise: JPEG/PNG sizes
    # then resemble a real sample grid.
    yy, xx = np.mgrid[0:256, 0:256]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.float64)
    images = [
        np.clip(base + rng.normal(0, 8, base.shape) + k, 0, 255).astype(np.uint8) for k in range(args.calls)
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="labstats-bench-") as tmp:
        tmp = Path(tmp)
        server = RedisServer(str(tmp))
        try:
            store = tmp / "artifacts"
            with labstats.Stats(tmp / "run", url=server.url, capture_git=False, capture_freeze=False,
                                artifact_dir=store) as stats:  # fmt: skip
                stats.image("warm-up", images[0], step=0)
                stats.flush(60)
                # Images/s: all logged at once, until the last is stored and in Redis.
                started = time.perf_counter()
                burst_us = per_call_us(lambda i, im: stats.image("sample", im, step=i), images)
                flush_start = time.perf_counter()
                stats.flush(120)
                writer_ms = (time.perf_counter() - flush_start) * 1e3
                images_per_s = len(images) / (time.perf_counter() - started)
                # The calling thread: one image per step of a training loop.
                labstats_us = paced_us(
                    lambda i, im: stats.image("paced", im, step=i), images, args.step_ms / 1e3
                )
                stats.flush(120)
                # The floor of any design that lets the caller reuse its array at once: the
                # copy alone, into a buffer reused every step, paced the same way.
                reused = np.empty_like(images[0])
                copy_us = paced_us(lambda i, im: np.copyto(reused, im), images, args.step_ms / 1e3)
                seed_dir = tmp / "seed"
                seed_dir.mkdir()

                def original(i, image):
                    # The original design: encode and write on the training thread.
                    Image.fromarray(image).save(seed_dir / f"img{0:03}_s{i:05}_i{0:05}.jpg", quality=92)

                original_us = paced_us(original, images, args.step_ms / 1e3)
            from tensorboardX import SummaryWriter

            tbx = SummaryWriter(str(tmp / "tbx"))
            tbx_us = paced_us(
                lambda i, im: tbx.add_image("sample", im, i, dataformats="HWC"), images, args.step_ms / 1e3
            )
            tbx.close()
            tbx_bytes = sum(p.stat().st_size for p in (tmp / "tbx").rglob("*") if p.is_file()) / len(images)

            run = labstats.connect(server.url).run(stats.run_id)
            record = run.media("sample")[0]
            thumb = len(run.thumbnail("sample", 0))
            files = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / len(images)
            jpg = sum(p.stat().st_size for p in seed_dir.glob("*.jpg")) / len(images)
            rows += [
                (f"calling thread, one 256×256 RGB image a step of {args.step_ms:g} ms: labstats image()",
                 f"{labstats_us:.0f} µs",
                 f"{labstats_us / tbx_us:.3f}× tensorboardX"),
                ("  original design (save_jpg: Pillow JPEG + write, on the thread)", f"{original_us:.0f} µs",
                 f"{original_us / tbx_us:.2f}× tensorboardX"),
                ("  tensorboardX add_image", f"{tbx_us:.0f} µs", "1×"),
                ("  labstats against the original design", f"{labstats_us / original_us:.3f}×",
                 "target ≤ 0.05×"),
                ("  a copy of the same image alone (np.copyto into a reused buffer, paced the same way)",
                 f"{copy_us:.0f} µs", f"{copy_us / original_us:.3f}× save_jpg: the floor"),
                (f"images stored per second ({len(images)} logged at once: PNG + thumbnail + store + record)",
                 f"{images_per_s:,.0f}", "target ≥ 500"),
                ("  calling thread meanwhile (memory not yet reused)", f"{burst_us:.0f} µs", ""),
                ("  left to store after the last call", f"{writer_ms:.0f} ms", "off the training thread"),
                ("bytes per image: labstats PNG in the store", f"{files / 1e3:.1f} kB", ""),
                ("  labstats record + thumbnail in Redis", f"{(len(str(record)) + thumb) / 1e3:.1f} kB",
                 f"thumbnail {thumb / 1e3:.1f} kB"),
                ("  original JPEG (quality 92)", f"{jpg / 1e3:.1f} kB", ""),
                ("  tensorboardX event file (PNG inside)", f"{tbx_bytes / 1e3:.1f} kB", ""),
            ]  # fmt: skip

            # A gallery of 1,000 images (small ones: the gallery reads records and thumbnails).
            with labstats.Stats(tmp / "gallery", url=server.url, capture_git=False, capture_freeze=False,
                                artifact_dir=store) as stats:  # fmt: skip
                for k in range(args.images):
                    stats.image("samples", np.full((32, 32, 3), k % 256, np.uint8), step=k * 10)
                cloud = rng.normal(size=(args.points, 3)).astype(np.float32)
                stats.points("cloud", cloud, step=0, colors=np.abs(cloud) / np.abs(cloud).max())
            client = create_app({"local": Source("local", server.url, artifact_dir=str(store))}).test_client()
            gallery = stats.run_id
            page = [timed(client, f"/runs/local/{gallery}") for _ in range(5)]
            slider = [
                timed(client, f"/api/runs/local/{gallery}/media/samples?step={k * 10}") for k in sample_steps
            ]
            thumbs = [
                timed(client, f"/api/runs/local/{gallery}/thumb/samples?step={k * 10}") for k in sample_steps
            ]
            gif_cold = timed(client, f"/api/runs/local/{gallery}/animation/samples")
            gif_warm = timed(client, f"/api/runs/local/{gallery}/animation/samples")
            first = timed(client, f"/api/runs/local/{gallery}/points/cloud")
            again = timed(client, f"/api/runs/local/{gallery}/points/cloud")
        finally:
            server.stop()
    median = statistics.median
    rows += [
        (f"run page with a {args.images:,}-image name (server time, median of 5)",
         f"{median(t for t, _ in page) * 1e3:.0f} ms", "target ≤ 300 ms"),
        ("  slider: records at one step", f"{median(t for t, _ in slider) * 1e3:.1f} ms", ""),
        ("  one thumbnail (from Redis)", f"{median(t for t, _ in thumbs) * 1e3:.1f} ms",
         f"{median(b for _, b in thumbs) / 1e3:.1f} kB"),
        ("  animated GIF of 300 frames, made / cached",
         f"{gif_cold[0] * 1e3:.0f} / {gif_warm[0] * 1e3:.0f} ms", f"{gif_cold[1] / 1e6:.1f} MB"),
        (f"point cloud of {args.points:,} points, first draw (server time)", f"{first[0] * 1e3:.0f} ms",
         f"{first[1] / 1e6:.1f} MB binary (200,000 points)"),
        ("  the same again (cached)", f"{again[0] * 1e3:.0f} ms", ""),
    ]  # fmt: skip
    fig = {
        "labstats_us": labstats_us, "tbx_us": tbx_us, "original_us": original_us, "copy_us": copy_us,
        "images_per_s": images_per_s, "page_ms": median(t for t, _ in page) * 1e3,
        "points_mb": first[1] / 1e6, "points_ms": first[0] * 1e3,
    }  # fmt: skip
    compare = [
        ["images stored per second (256×256 RGB)", images_per_s, "/s"],
        ["calling thread, one image", labstats_us, "µs"],
        ["  against the original save_jpg", labstats_us / original_us, "×"],
        ["  a copy of the image alone (the floor)", copy_us, "µs"],
        ["bytes per image in the store", files, "B"],
        ["thumbnail bytes", thumb, "B"],
        [f"run page of a {args.images:,}-image name", fig["page_ms"], "ms"],
        [f"point cloud of {args.points:,}, first draw", fig["points_ms"], "ms"],
    ]
    return {"rows": [list(r) for r in rows], "fig": fig, "compare": compare, "images": args.images,
            "points": args.points}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images logged for the gallery")
    parser.add_argument("--calls", type=int, default=500, help="images per calling-thread measurement")
    parser.add_argument("--step-ms", type=float, default=10.0, help="a training step, one image each")
    parser.add_argument("--points", type=int, default=1_000_000)
    report.add_options(parser)
    baseline.add_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.images, args.calls, args.points = 100, 30, 50_000
    current, base = baseline.side_by_side(args, measure)
    f = current["fig"]
    summary = (
        f"`make bench-media`: logging a 256×256 RGB image costs the training thread "
        f"{f['labstats_us']:.0f} µs, "
        f"{f['labstats_us'] / f['original_us']:.3f}× the original design's `save_jpg` "
        f"({f['original_us']:.0f} µs; a copy of the image alone, the floor of any design that lets the "
        f"caller reuse its array, costs {f['copy_us']:.0f} µs, {f['copy_us'] / f['original_us']:.3f}×) and "
        f"{f['labstats_us'] / f['tbx_us']:.3f}× tensorboardX's `add_image` "
        f"({f['tbx_us'] / 1e3:.1f} ms); {f['images_per_s']:,.0f} images/s are stored (lossless PNG, WebP "
        f"thumbnail); the run page of a name with {current['images']:,} images takes {f['page_ms']:.0f} ms "
        f"of server time; a {current['points']:,}-point cloud reaches the browser as {f['points_mb']:.1f} MB "
        f"of binary in {f['points_ms']:.0f} ms."
    )
    lines = report.table(["measure", "figure", "note"], current["rows"])
    this = current.get("commit") or "this checkout"
    if base is not None:
        summary += f" ({this} against {base['commit']}: {baseline.summary_ratios(current, base)}.)"
        lines += ["", f"Against commit {base['commit']}, measured in the same run:", "",
                  *baseline.ratio_table(current, base, this)]  # fmt: skip
    report.emit(args, "media", lines, summary, current.get("commit"), base and base["commit"])


if __name__ == "__main__":
    main()
