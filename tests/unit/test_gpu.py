"""On a real GPU (skipped, saying why, where there is none: CI has none; run it on a GPU box,
see docs/benchmarks.md): a watched CUDA tensor changed in place by an optimizer is stored
with its value at each step (in Redis, and as files of the artifact store), the training
thread makes no device sync (PyTorch's sync debug mode turns any into an error), and the
device histogram counts what NumPy counts."""

import numpy as np
import pytest
import torch

import labstats
from labstats.capture import device

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none"
)


@pytest.mark.parametrize("threshold", [0, 4096])  # the 16 KiB weight in Redis; as files from pinned memory
def test_watched_cuda_values_are_stored_as_they_were_at_each_step_without_a_sync(tmp_path, lab, threshold):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(32, 64, device="cuda")
    weights, losses = [], []
    # The writer sleeps during the loop (long flush interval), so only the training thread
    # runs CUDA calls while sync debug mode is "error".
    with labstats.Stats(tmp_path / "gpu", flush_interval=60, tensor_file_bytes=threshold) as stats:
        stats.watch(model.weight, "w")
        stats.watch(model.weight, "h", kind="histogram", bins=8)
        for step in range(40):
            loss = model(x).square().mean()
            loss.backward()
            opt.step()  # changes model.weight in place, on the GPU
            opt.zero_grad()
            torch.cuda.set_sync_debug_mode("error")
            try:
                stats.update(0, 1, 1, step)
                stats.log(step=step, loss=loss)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            weights.append(model.weight.detach().cpu().numpy().copy())  # (a sync, in the test only)
            losses.append(loss.item())
    run = lab.run(stats.run_id)
    stored = run.series("w").values
    assert len(stored) == 40
    for want, have in zip(weights, stored, strict=True):
        np.testing.assert_array_equal(have, want)
    assert run.series("loss").values.tolist() == losses
    hist = run.series("h").values[-1]
    expected = device.histogram_numpy(weights[-1], 8)
    np.testing.assert_allclose(hist[:2], expected[:2], rtol=1e-6)
    assert np.abs(hist[2:] - expected[2:]).sum() <= 2
    assert device.pool().in_use == 0
