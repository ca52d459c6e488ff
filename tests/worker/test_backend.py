from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from cropworker.backend import (
    ALIASES,
    DEFAULT_MODEL,
    LADDER,
    OnnxBackend,
    resolve_model,
    shipped_models,
)
from cropworker.errors import ModelError


@pytest.mark.parametrize("model", shipped_models())
def test_matches_pytorch_on_a_real_photo(model: str) -> None:
    """The golden file holds a decoded photo and PyTorch's output for it, written at export (for
    a graph built from other graphs, its members' outputs, and the tolerance its float16 weights
    imply, if any)."""
    golden = np.load(str(resources.files("cropworker") / "zoo" / f"{model}.golden.npz"))
    got = OnnxBackend(model).infer(golden["image"])
    assert got.shape == golden["log_density"].shape
    atol = float(golden["atol"]) if "atol" in golden else 1e-3
    np.testing.assert_allclose(got, golden["log_density"], atol=atol)


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


def test_the_ladder_is_shipped_cheapest_first_and_described_alike() -> None:
    """Every rung carries the same metadata, under its own name; `default` is the default; the
    rungs are ordered by cost, as users choose them."""
    macs = []
    for name in LADDER:
        backend = OnnxBackend(name)
        meta = backend.session.get_modelmeta().custom_metadata_map
        assert backend.info.name == name
        assert {"version", "long_side", "output_stride", "macs", "macs_input"} <= meta.keys()
        macs.append(int(meta["macs"]))
    assert macs == sorted(macs)
    assert len(set(macs)) == len(macs)
    assert DEFAULT_MODEL == "default"
    assert OnnxBackend().info.name == "default"


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_old_names_keep_working(alias: str, name: str) -> None:
    assert resolve_model(alias) == resolve_model(name)
    assert OnnxBackend(alias).info.name == name


def test_unknown_model() -> None:
    with pytest.raises(ModelError, match="no model 'nope'"):
        resolve_model("nope")


def test_malformed_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxBackend(str(bad))
