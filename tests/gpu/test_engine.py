from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cropworker.backend import ModelInfo, resolve_model
from cropworker.decode import model_input_size
from cropworker.errors import EngineBuildError, GpuUnavailableError, SettingsError
from cropworker.gpu.engine import DEFAULT_TIMING_CACHE, BuildOptions, build_engine, profile_shapes
from cropworker.gpu.sidecar import Sidecar, sha256_file, sidecar_path

from .fakes import BuilderFlag, DataType, FakeCudart, FakeTensorRT, MemoryPoolType, cudaError_t

VANILLA = ModelInfo("vanilla", "1", 256, 4)


def build(tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart, **options: object) -> Sidecar:
    opts = BuildOptions(**{"max_batch": 8, **options})  # type: ignore[arg-type]
    return build_engine("vanilla", tmp_path / "v.engine", opts, tensorrt=trt, cudart=cudart)


def test_profile_covers_every_shape_the_decoder_makes() -> None:
    lo, opt, hi = profile_shapes(VANILLA, max_batch=16, opt_batch=8)
    assert (lo, opt, hi) == ((1, 64, 64, 3), (8, 192, 256, 3), (16, 256, 256, 3))
    for w in range(1, 400, 7):
        for h in range(1, 400, 11):
            iw, ih = model_input_size(w, h, VANILLA.long_side)
            assert lo[1] <= ih <= hi[1] and lo[2] <= iw <= hi[2], (w, h)


def test_opt_batch_defaults_to_the_max() -> None:
    assert profile_shapes(VANILLA, max_batch=32)[1][0] == 32


@pytest.mark.parametrize(
    "options", [{"max_batch": 0}, {"max_batch": 4, "opt_batch": 5}, {"workspace_mib": 0}]
)
def test_bad_options(options: dict[str, int]) -> None:
    with pytest.raises(SettingsError):
        BuildOptions(**{"max_batch": 8, **options})


def test_build_writes_engine_sidecar_and_timing_cache(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    sidecar = build(tmp_path, trt, cudart, opt_batch=4)
    engine = tmp_path / "v.engine"
    assert engine.read_bytes().startswith(b"FAKEPLAN")
    assert Sidecar.read(sidecar_path(engine)) == sidecar
    doc = json.loads(sidecar_path(engine).read_text())
    assert doc["tensorrt"] == {"version": "11.4.0.106", "version_compatible": True}
    assert doc["gpu"] == {"name": "NVIDIA H200", "compute_capability": "9.0"}
    assert doc["onnx"]["sha256"] == sha256_file(resolve_model("vanilla"))
    assert doc["onnx"]["precision"] == "fp32"
    assert doc["batch"] == {"min": 1, "opt": 4, "max": 8}
    assert doc["input"]["shape"] == [-1, -1, -1, 3]
    assert (doc["input"]["min"], doc["input"]["max"]) == ([1, 64, 64, 3], [8, 256, 256, 3])
    assert doc["onnx"]["model"]["long_side"] == "256"
    assert (tmp_path / DEFAULT_TIMING_CACHE).read_bytes().startswith(b"TIMING")


def test_network_is_strongly_typed_with_one_profile(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    network_flags = []
    original = trt.Builder.create_network

    def spy(self: object, flags: int = 0) -> object:
        network_flags.append(flags)
        return original(self, flags)  # type: ignore[arg-type]

    trt.Builder.create_network = spy  # type: ignore[method-assign]
    build(tmp_path, trt, cudart, workspace_mib=512)
    assert network_flags == [1 << 1]  # 1 << STRONGLY_TYPED
    (config,) = trt.fake_configs
    assert len(config.fake_profiles) == 1
    assert config.fake_profiles[0].fake_shapes["image"][1] == (8, 192, 256, 3)
    assert config.fake_flags == {BuilderFlag.VERSION_COMPATIBLE}
    assert config.fake_pool_limits == {MemoryPoolType.WORKSPACE: 512 << 20}


def test_version_compatibility_can_be_turned_off(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    sidecar = build(tmp_path, trt, cudart, version_compatible=False)
    assert trt.fake_configs[0].fake_flags == set()
    assert sidecar.version_compatible is False


def test_timing_cache_is_reused_and_a_foreign_one_replaced(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    build(tmp_path, trt, cudart)
    first = (tmp_path / DEFAULT_TIMING_CACHE).read_bytes()
    build(tmp_path, trt, cudart)
    assert trt.fake_configs[1].fake_cache_inputs == [first]
    (tmp_path / DEFAULT_TIMING_CACHE).write_bytes(b"TIMING-OTHER-GPU")
    build(tmp_path, trt, cudart)
    assert trt.fake_configs[2].fake_cache_inputs == [b"TIMING-OTHER-GPU", b""]


def test_every_parser_error_is_reported(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    trt.fake_parse_errors = ["node Conv_3: bad weights", "node Resize_9: unsupported mode"]
    with pytest.raises(EngineBuildError, match="2 error") as caught:
        build(tmp_path, trt, cudart)
    assert caught.value.errors == trt.fake_parse_errors
    assert "Resize_9" in str(caught.value)
    assert not (tmp_path / "v.engine").exists()


def test_a_network_that_is_not_the_saliency_contract_is_refused(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    trt.fake_network_input = ("image", DataType.FLOAT, (-1, 3, -1, -1))
    with pytest.raises(EngineBuildError, match="expected uint8"):
        build(tmp_path, trt, cudart)


def test_a_failed_build_says_what_tensorrt_logged(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    trt.fake_build_error = "no implementation for node Conv_1 within the workspace"
    with pytest.raises(EngineBuildError, match="no implementation for node Conv_1"):
        build(tmp_path, trt, cudart)
    assert not sidecar_path(tmp_path / "v.engine").exists()


def test_no_gpu_means_no_builder(tmp_path: Path) -> None:
    cudart = FakeCudart(count_error=cudaError_t.cudaErrorNoDevice)
    trt = FakeTensorRT(cudart)
    with pytest.raises(GpuUnavailableError, match="cudaErrorNoDevice"):
        build(tmp_path, trt, cudart)
    assert trt.fake_builders == 0


def test_fp16_builds_from_a_converted_onnx(
    tmp_path: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    pytest.importorskip("onnx")
    sidecar = build(tmp_path, trt, cudart, fp16=True)
    source = resolve_model("vanilla").read_bytes()
    (parsed,) = trt.fake_parsed
    assert parsed != source and len(parsed) < 0.6 * len(source)  # half-size weights
    assert sidecar.precision == "fp16"
    assert sidecar.onnx_sha256 == sha256_file(resolve_model("vanilla"))  # the worker's model


def test_fp16_onnx_keeps_io_types_and_the_saliency() -> None:
    onnx = pytest.importorskip("onnx")
    from importlib import resources

    import onnxruntime as ort

    from cropworker.gpu.engine import fp16_onnx

    data = fp16_onnx(resolve_model("vanilla"))
    model = onnx.load_from_string(data)
    tensor = onnx.TensorProto
    assert model.graph.input[0].type.tensor_type.elem_type == tensor.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == tensor.FLOAT
    assert any(i.data_type == tensor.FLOAT16 for i in model.graph.initializer)
    golden = np.load(str(resources.files("cropworker") / "zoo" / "vanilla.golden.npz"))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": golden["image"]})[0]
    want = golden["log_density"]
    assert np.abs(got - want).max() < 0.1  # measured 0.033
    assert np.abs(np.exp(got) - np.exp(want)).sum() < 0.02  # total variation; measured 0.005
