"""Runs logged with the previous release before the upgrade: series of every kind, media,
a large tensor (a store file), a text series; one of them archived afterwards. Prints the
run ids, one per line."""

import numpy as np

import labstats

for name in ("before-upgrade", "before-upgrade-archived"):
    rng = np.random.default_rng(len(name))
    with labstats.Stats(f"runs/{name}", config={"lr": 0.01}, tensor_file_bytes=64 * 1024) as stats:
        for step in range(300):
            stats.log(step=step, loss=float(np.exp(-step / 100)), acc=step / 300, note=f"step {step}")
        stats.log(step=300, weights=rng.normal(size=(64, 512)).astype(np.float32))
        stats.image("samples", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), step=300)
        stats.points("cloud", rng.normal(size=(100, 3)), step=300)
    print(stats.run_id)
