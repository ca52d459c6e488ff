"""A student rebuilt from its exported graph computes the graph, and calibrating its folded
normalisations keeps that function while making train mode behave."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from cropworker.backend import OnnxBackend  # noqa: E402
from cropworker_models import export, from_onnx, student  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]


@pytest.fixture(scope="module")
def pruned() -> student.Student:
    """A compacted student with trained-looking normalisations and head (nothing is identity)."""
    torch.manual_seed(0)
    model = student.from_lite0()
    for block in model.prunable():
        block.mask[block.spec.mid // 2 :] = 0  # keeps widths that are multiples of 8
    model = student.compact(model).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def exported(pruned: student.Student, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "pruned.onnx"
    export.to_onnx(pruned, path)
    return path


def test_the_rebuilt_student_computes_the_graph(pruned: student.Student, exported: Path) -> None:
    rebuilt = from_onnx.from_onnx(exported)
    assert rebuilt.specs == [replace(s, residual=s.skip) for s in pruned.specs]
    assert not rebuilt.specs[0].skip  # 16 maps in and out, but no skip in Lite0
    assert rebuilt.config == pruned.config
    backend = OnnxBackend(str(exported))
    for shape in ((2, 128, 192, 3), (1, 192, 160, 3)):
        x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        with torch.no_grad():
            got = rebuilt(torch.from_numpy(x)).numpy()
            expected = pruned(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, backend.infer(x), atol=1e-4)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_calibration_keeps_the_function_and_fits_the_batch_statistics(exported: Path) -> None:
    rebuilt = from_onnx.from_onnx(exported)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (128, 192, 3), dtype=np.uint8) for _ in range(8)]
    batch = torch.from_numpy(np.stack(images))
    with torch.no_grad():
        before = rebuilt(batch)
        identity_train = copy.deepcopy(rebuilt).train()(batch)  # train mode moves the stats
        from_onnx.calibrate_batch_norm(rebuilt, images)
        after = rebuilt.eval()(batch)
        # the batch is the calibration set: its batch statistics are the running ones
        calibrated_train = rebuilt.train()(batch)
    assert float((after - before).abs().max()) < 1e-4
    assert float((calibrated_train - before).abs().max()) < 1e-3
    assert float((identity_train - before).abs().max()) > 0.1  # what calibration avoids
