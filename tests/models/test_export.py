"""Export a small variant of the network to ONNX and run it through the runtime backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from cropworker.backend import OnnxBackend  # noqa: E402
from cropworker_models import export, flops, net  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_model() -> net.SaliencyNet:
    torch.manual_seed(0)
    config = net.SaliencyNetConfig(name="tiny", version="test", taps=(2, 4), readout=(8,))
    model = net.build(config)
    with torch.no_grad():  # a head that is not the zero-initialised prior: outputs must vary
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_export_checks_and_runs_in_the_backend(
    small_model: net.SaliencyNet, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.onnx"
    export.to_onnx(small_model, path)
    onnx.checker.check_model(str(path))
    assert export.check_against_torch(small_model, path) < export.MAX_ABS_DIFF
    backend = OnnxBackend(str(path))
    assert backend.info.tag == "tiny@test"
    # dynamic batch, height and width, including shapes the export never saw
    for shape in ((1, 64, 64, 3), (5, 320, 224, 3)):
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        with torch.no_grad():
            expected = small_model(torch.from_numpy(image)).numpy()
        np.testing.assert_allclose(backend.infer(image), expected, atol=export.MAX_ABS_DIFF)


def test_mac_count_of_a_known_convolution() -> None:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    # 8 output channels x 10 x 12 positions x 3 input channels x 9 taps
    assert flops.count_macs(conv, torch.zeros(2, 3, 10, 12)) == 8 * 10 * 12 * 3 * 9
    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert flops.count_macs(depthwise, torch.zeros(1, 8, 10, 12)) == 8 * 10 * 12 * 9


def test_mac_count_sees_functional_convolutions_and_counts_as_served() -> None:
    """A convolution called as a function counts like a module, and a model is counted in
    inference mode whatever mode it is in (and left in that mode)."""

    class Functional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(8, 3, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.nn.functional.conv2d(x, self.weight, padding=1)
            if self.training:  # twice the work in training: not what is served
                out = out + torch.nn.functional.conv2d(x, self.weight, padding=1)
            return out

    model = Functional().train()
    assert flops.count_macs(model, torch.zeros(2, 3, 10, 12)) == 8 * 10 * 12 * 3 * 9
    assert model.training
