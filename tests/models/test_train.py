"""The training pieces on generated data: fast, and independent of the shipped model."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cropworker_models import data, flops, net, train  # noqa: E402

pytestmark = pytest.mark.train


def synthetic_image(i: int, rng: np.random.Generator) -> data.FixationImage:
    """A 640x480 'image' whose fixations cluster around a random point."""
    centre = rng.uniform([100, 80], [540, 400])
    fix = np.clip(centre + rng.normal(0, 25, (30, 2)), 0, [639.9, 479.9]).astype(np.float32)
    return data.FixationImage("synthetic", f"{i}.jpg", Path("/nonexistent"), 640, 480, fix)


def test_log_likelihood_of_a_uniform_map_is_zero_bits() -> None:
    logp = torch.full((2, 6, 8), -math.log(48))
    cells = [torch.tensor([0, 5, 47]), torch.tensor([10])]
    assert float(train.log_likelihood_bits(logp, cells)) == pytest.approx(0.0, abs=1e-6)


def test_fixation_cells_flip() -> None:
    image = data.FixationImage("s", "a", Path("."), 100, 50, np.array([[15.0, 10.0]], np.float32))
    assert train.fixation_cells(image, (5, 10), flip=False).tolist() == [1 * 10 + 1]
    assert train.fixation_cells(image, (5, 10), flip=True).tolist() == [1 * 10 + 8]


def test_head_learns_where_the_fixations_are() -> None:
    """Features that encode the fixated location must be picked up by the readout: the
    held-out likelihood has to rise well above the uniform map's."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = net.SaliencyNetConfig(readout=(8,), prior_grid=(3, 4), blur_sigma=1.0)
    images = [synthetic_image(i, rng) for i in range(48)]
    taps: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for im in images:
        for flip in (False, True):
            # One channel is a blurred map of the fixations (the "feature" to find), one is noise.
            cells = train.fixation_cells(im, (24, 32), flip)
            signal = torch.zeros(24 * 32).index_add_(0, cells, torch.ones(len(cells)))
            signal = signal.reshape(1, 1, 24, 32)
            signal = torch.nn.functional.avg_pool2d(signal, 5, 1, 2)[0]
            taps[(im.key, flip)] = [
                torch.cat([signal, torch.randn(1, 24, 32)]).half(),
                torch.randn(3, 12, 16).half(),
            ]
    head = net.Head(config, [2, 3])
    before = train.evaluate(head, images[40:], taps)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    items = [(im, flip) for im in images[:40] for flip in (False, True)]
    for _ in range(15):
        for batch in train.batches(items, taps, 8, random.Random(0)):
            loss = -train.run_head(head, batch, taps)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = train.evaluate(head, images[40:], taps)
    assert after > before + 1.0
    assert after > 1.5  # bits per fixation over uniform on images it never saw


def test_head_output_is_a_log_density_at_the_output_stride() -> None:
    head = net.Head(net.SaliencyNetConfig(), [40, 112, 192, 320]).eval()
    taps = [torch.randn(2, c, 24 // s, 32 // s) for c, s in ((40, 1), (112, 2), (192, 4), (320, 4))]
    with torch.no_grad():
        logp = head(taps)
    assert logp.shape == (2, 48, 64)  # stride 8 readout grid, upsampled to stride 4
    assert torch.allclose(logp.exp().sum(dim=(1, 2)), torch.ones(2), atol=1e-5)


def test_head_reads_out_each_tap_at_its_own_resolution_with_the_same_function() -> None:
    """In inference the head normalises and reads out each tap before resizing it (cheaper);
    the result is what resizing and concatenating the taps first gives."""
    torch.manual_seed(0)
    head = net.Head(net.SaliencyNetConfig(), [40, 112, 192, 320])
    with torch.no_grad():  # normalisation statistics and weights far from their initial values
        head.norm.running_mean.normal_(0, 2)
        head.norm.running_var.uniform_(0.5, 4)
        head.norm.weight.normal_(1, 0.5)
        head.norm.bias.normal_(0, 0.5)
    head.eval()
    taps = [torch.randn(2, c, 24 // s, 32 // s) for c, s in ((40, 1), (112, 2), (192, 4), (320, 4))]
    size = taps[0].shape[-2:]
    with torch.no_grad():
        resize = torch.nn.functional.interpolate
        resized = [resize(t, size=size, mode="bilinear", align_corners=False) for t in taps]
        expected = head.readout(head.norm(torch.cat(resized, dim=1)))
        got = head.readout[1:](head._first_layer(taps, size))
    assert torch.allclose(got, expected, atol=1e-5)
    # and cheaper: the first layer reads the stride-32 taps' 512 channels on 8x6 cells, not 32x24
    concatenated_first_layer = sum(t.shape[1] for t in taps) * 32 * 24 * 32
    assert flops.count_macs(_Fixed(head, taps), torch.zeros(2)) < concatenated_first_layer / 4


class _Fixed(torch.nn.Module):
    """The head on fixed taps, whatever the input (for counting its MACs)."""

    def __init__(self, head: net.Head, taps: list[torch.Tensor]) -> None:
        super().__init__()
        self.head, self.taps = head, taps

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.taps)
        return out


def test_split_is_stable_and_by_image() -> None:
    keys = [f"set/{i}.jpg" for i in range(2000)]
    held_out = [k for k in keys if data.is_validation(k)]
    assert 0.12 < len(held_out) / len(keys) < 0.18
    assert held_out == [k for k in keys if data.is_validation(k)]
