from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from cropworker.backend import OnnxBackend, resolve_model, shipped_models
from cropworker.errors import ModelError


@pytest.mark.parametrize("model", shipped_models())
def test_matches_pytorch_on_a_real_photo(model: str) -> None:
    """The golden file holds a decoded photo and PyTorch's output for it, written at export."""
    golden = np.load(str(resources.files("cropworker_models") / "zoo" / f"{model}.golden.npz"))
    got = OnnxBackend(model).infer(golden["image"])
    assert got.shape == golden["log_density"].shape
    np.testing.assert_allclose(got, golden["log_density"], atol=1e-3)


@pytest.mark.parametrize(("height", "width"), [(192, 256), (256, 192), (256, 256), (64, 256)])
def test_output_is_a_log_density_at_a_quarter_resolution(
    backend: OnnxBackend, height: int, width: int
) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    logp = backend.infer(images)
    assert logp.shape == (3, height // 4, width // 4)
    assert logp.dtype == np.float32
    np.testing.assert_allclose(np.exp(logp).sum(axis=(1, 2)), 1.0, rtol=1e-4)


def test_batch_equals_one_at_a_time(backend: OnnxBackend) -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 192, 256, 3), dtype=np.uint8)
    batched = backend.infer(images)
    single = np.concatenate([backend.infer(images[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_thread_count_is_applied() -> None:
    two = OnnxBackend("vanilla", threads=2)
    assert two.session.get_session_options().intra_op_num_threads == 2
    assert two.info.tag.startswith("vanilla@")
    assert two.info.long_side == 256


def test_rejects_wrong_input(backend: OnnxBackend) -> None:
    with pytest.raises(ValueError, match="uint8"):
        backend.infer(np.zeros((1, 64, 64, 3), np.float32))


def test_vanilla_is_shipped() -> None:
    assert "vanilla" in shipped_models()


def test_unknown_model() -> None:
    with pytest.raises(ModelError, match="no model 'nope'"):
        resolve_model("nope")


def test_malformed_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxBackend(str(bad))
