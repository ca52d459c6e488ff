"""Graphs built from other graphs: an ensemble in one ONNX graph, and float16 weight storage."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from cropworker.backend import resolve_model  # noqa: E402
from cropworker_models import ensemble  # noqa: E402

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def fast() -> object:
    return onnx.load(str(resolve_model("fast")))


def images(h: int = 160, w: int = 192) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (2, h, w, 3), dtype=np.uint8)


def run(model: object, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"image": x})[0]
    return out


@pytest.mark.parametrize("mixture", [False, True])
def test_the_combined_graph_computes_the_mean_of_its_members(fast: object, mixture: bool) -> None:
    other = ensemble.fp16_weights(fast)  # a second member whose outputs differ a little
    combined = ensemble.combine([fast, other], "pair", "7", mixture=mixture)
    for h, w in ((160, 192), (192, 160), (64, 192)):
        x = images(h, w)
        got = run(combined, x)
        expected = ensemble.reference([fast, other], x, mixture)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose(np.exp(got).sum(axis=(1, 2)), 1.0, rtol=1e-4)
        assert np.abs(got - run(fast, x)).max() > 1e-4  # the second member counts


def test_the_combined_graph_describes_itself_like_any_model(fast: object) -> None:
    combined = ensemble.combine([fast, fast], "default", "2")
    meta = ensemble.metadata(combined)
    assert (meta["name"], meta["version"], meta["long_side"]) == ("default", "2", "192")
    assert int(meta["macs"]) == 2 * int(ensemble.metadata(fast)["macs"])
    assert meta["members"] == "fast@5,fast@5"
    np.testing.assert_allclose(run(combined, images()), run(fast, images()), atol=1e-5)


def test_members_must_share_input_and_output_grids(fast: object) -> None:
    vanilla = onnx.load(str(resolve_model("vanilla")))  # long side 256, not 192
    with pytest.raises(ValueError, match="long_side"):
        ensemble.combine([fast, vanilla], "x", "1")


def test_float16_weights_halve_the_file_and_keep_float32_arithmetic(fast: object) -> None:
    half = ensemble.fp16_weights(fast)
    # tensors under FP16_MIN_ELEMENTS stay float32: a third of this small network's bytes
    assert len(half.SerializeToString()) < 0.7 * len(fast.SerializeToString())
    x = images()
    got = run(half, x)
    assert got.dtype == np.float32
    difference = np.abs(got - run(fast, x)).max()
    assert 0 < difference < ensemble.FP16_MAX_ABS_DIFF
