"""The cuda backend's ONNX interpreter, run on the CPU, against ONNX Runtime (the reference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cropworker.backend import OnnxBackend, resolve_model, shipped_models  # noqa: E402
from cropworker.decode import decode_image  # noqa: E402
from cropworker.errors import ModelError  # noqa: E402
from cropworker.gpu.onnx_torch import OnnxGraph, load_graph  # noqa: E402
from cropworker.stream.app import warm_up_shapes  # noqa: E402

# Max |difference| in log-density from ONNX Runtime. Measured on this CPU: fp32 1.2e-5 at most
# (vanilla), fp16 0.048 (fast and vanilla, on the sample photos).
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 0.1
GPU_TOLERANCE = 1e-3  # the target of the GPU path, which fp16 misses
SAMPLES = Path(__file__).parents[2] / "samples"


@pytest.fixture(scope="module", params=shipped_models())
def reference(request: pytest.FixtureRequest) -> OnnxBackend:
    return OnnxBackend(request.param, threads=1)


def run(graph: OnnxGraph, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = graph(torch.from_numpy(images)).numpy()
    return out


def noise(batch: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch", [1, 4])
def test_fp32_matches_onnx_runtime_on_every_model(reference: OnnxBackend, batch: int) -> None:
    graph, meta = load_graph(resolve_model(reference.info.name))
    assert meta["name"] == reference.info.name
    for width, height in warm_up_shapes(reference.info.long_side):  # landscape, portrait
        images = noise(batch, width, height)
        expected = reference.infer(images)
        got = run(graph, images)
        assert got.shape == expected.shape == (batch, height // 4, width // 4)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=FP32_TOLERANCE)


def test_fp16_is_close_but_not_within_the_gpu_target(reference: OnnxBackend) -> None:
    """Why fp32 is the default precision of the cuda backend."""
    graph, _ = load_graph(resolve_model(reference.info.name), dtype=torch.float16)
    photo = decode_image((SAMPLES / "chelsea.jpg").read_bytes(), reference.info.long_side).rgb
    worst = 0.0
    for images in (noise(2, *warm_up_shapes(reference.info.long_side)[0]), photo[None]):
        got = run(graph, images)
        assert got.dtype == np.float32 and np.isfinite(got).all()
        worst = max(worst, float(np.abs(got - reference.infer(images)).max()))
    assert GPU_TOLERANCE < worst < FP16_TOLERANCE


@pytest.mark.parametrize("model", shipped_models())
def test_the_forward_pass_never_reads_device_data(model: str) -> None:
    """On the meta device tensors have no data: any read (a sync on a GPU, which CUDA graph
    capture forbids) would raise. Only shape arithmetic runs, on the host."""
    graph, meta = load_graph(resolve_model(model), device="meta")
    width, height = warm_up_shapes(int(meta["long_side"]))[1]
    out = graph(torch.zeros((3, height, width, 3), dtype=torch.uint8, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (3, height // 4, width // 4)


def test_constants_are_folded_at_load() -> None:
    """large.onnx stores fp16 weights behind Cast nodes and slices its readout weights: all of
    it is computed once, so only the image's Cast runs per call."""
    graph, _ = load_graph(resolve_model("large"))
    model = onnx.load(str(resolve_model("large")))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Cast") > 190 and "Slice" in ops and "Gather" in ops
    assert graph.operators.count("Cast") == ops.count("Transpose") == 1
    assert not {"Slice", "Gather", "ReduceSum"} & set(graph.operators)


# ------------------------------------------------------------------- tiny graphs, one op each

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


def tiny(
    nodes: Sequence[onnx.NodeProto], consts: dict[str, np.ndarray] | None = None, opset: int = 20
) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()]
    graph = helper.make_graph(list(nodes), "tiny", [X], [Y], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


WEIGHT = np.random.default_rng(1).normal(size=(4, 2, 3, 3)).astype(np.float32)

AGREES = {
    "conv, asymmetric pads, stride, groups, dilation": (
        [
            helper.make_node(
                "Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1], strides=[2, 1], group=2,
                dilations=[1, 2],
            )
        ],
        {"w": WEIGHT},
    ),
    "pad edge and constant": (
        [
            helper.make_node("Pad", ["x", "p"], ["e"], mode="edge"),
            helper.make_node("Pad", ["e", "q", "v"], ["y"]),
        ],
        {"p": ints(0, 0, 1, 2, 0, 0, 3, 0), "q": ints(0, 1, 0, 1, 0, 0, 2, 0),
         "v": np.array(-2.5, np.float32)},
    ),
    "slice: negative start, end past the axis, step 2": (
        [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
        {"s": ints(-5, 1), "e": ints(2**62, 9), "a": ints(-1, 1), "st": ints(2, 1)},
    ),
    "gather with negative 2-D indices": (
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=2)],
        {"i": ints(-1, 0, 2, -3).reshape(2, 2)},
    ),
    "squeeze all, unsqueeze two axes, reduce": (
        [
            helper.make_node("ReduceSum", ["x", "a0"], ["s"], keepdims=1),
            helper.make_node("Squeeze", ["s"], ["q"]),
            helper.make_node("Unsqueeze", ["q", "u"], ["z"]),
            helper.make_node("ReduceLogSumExp", ["z", "a1"], ["l"], keepdims=0),
            helper.make_node("ReduceMean", ["l"], ["y"], keepdims=1),
        ],
        {"a0": ints(0), "u": ints(-1, 0), "a1": ints(1)},
    ),
    "integer division truncates towards zero": (
        [  # (6 - 11) / 2 = -2 (C-style), not -3: slices x[..., :2] once multiplied by -1
            helper.make_node("Shape", ["x"], ["shape"], start=3),
            helper.make_node("Sub", ["shape", "eleven"], ["d"]),
            helper.make_node("Div", ["d", "two"], ["q"]),
            helper.make_node("Mul", ["q", "minus"], ["end"]),
            helper.make_node("Slice", ["x", "zero", "end", "three"], ["y"]),
        ],
        {"eleven": ints(11), "two": ints(2), "minus": ints(-1), "zero": ints(0),
         "three": ints(3)},
    ),
    "resize, clip, log-softmax, reshape with a copied dimension": (
        [
            helper.make_node("Shape", ["x"], ["nc"], end=2),
            helper.make_node("Concat", ["nc", "hw"], ["size"], axis=0),
            helper.make_node("Resize", ["x", "", "", "size"], ["r"], mode="linear"),
            helper.make_node("Clip", ["r", "lo", "hi"], ["c"]),
            helper.make_node("Reshape", ["c", "flat"], ["f"]),
            helper.make_node("LogSoftmax", ["f"], ["y"], axis=1),
        ],
        {"hw": ints(9, 4), "lo": np.array(-0.5, np.float32), "hi": np.array(1.0, np.float32),
         "flat": ints(0, -1)},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(AGREES))
def test_single_operators_agree_with_onnx_runtime(case: str) -> None:
    import onnxruntime as ort

    model = tiny(*AGREES[case])
    x = np.random.default_rng(2).normal(size=(1, 4, 6, 6)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    with torch.inference_mode():
        got = OnnxGraph(model)(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


REJECTED = {
    "an operator": (
        [helper.make_node("Sigmoid", ["x"], ["y"], name="gate")],
        "operator ai.onnx.Sigmoid \\('gate'\\) is not supported",
    ),
    "another domain": (
        [helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")],
        "operator com.microsoft.FusedConv",
    ),
    "an attribute": (
        [helper.make_node("Relu", ["x"], ["y"], alpha=0.1)],
        "Relu node .*attribute 'alpha' is not supported",
    ),
    "a Resize mode": (
        [helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="cubic")],
        "mode='cubic' is not supported \\(supported: 'linear'\\)",
    ),
    "a Resize coordinate mode": (
        [
            helper.make_node(
                "Resize", ["x", "", "", "s"], ["y"], mode="linear",
                coordinate_transformation_mode="align_corners",
            )
        ],
        "coordinate_transformation_mode='align_corners' is not supported",
    ),
    "a Pad mode": (
        [helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")],
        "mode='reflect' is not supported",
    ),
    "Conv auto_pad": (
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")],
        "auto_pad='SAME_UPPER' is not supported",
    ),
    "BatchNormalization in training": (
        [helper.make_node("BatchNormalization", ["x", "c", "c", "c", "c"], ["y"], training_mode=1)],
        "training_mode=1 is not supported",
    ),
    "a Cast target": (
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)],
        "Cast to type 11 is not supported",
    ),
    "a shape computed on the device": (
        [
            helper.make_node("Cast", ["x"], ["shape"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["x", "shape"], ["y"]),
        ],
        "input 'shape' steers the operator but is computed on the device",
    ),
    "shape arithmetic mixed with device data": (
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Cast", ["shape"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "f"], ["y"]),
        ],
        "mixes shape arithmetic with device data",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REJECTED))
def test_what_is_not_implemented_is_rejected_at_load(case: str) -> None:
    nodes, match = REJECTED[case]
    consts = {
        "s": ints(1, 4, 12, 12),
        "p": ints(0, 0, 1, 1, 0, 0, 1, 1),
        "w": WEIGHT,
        "c": np.ones(4, np.float32),
    }
    with pytest.raises(ModelError, match=match):
        OnnxGraph(tiny(nodes, consts))


def test_an_unsupported_opset_is_rejected() -> None:
    with pytest.raises(ModelError, match="opset 13, supported 18-20"):
        OnnxGraph(tiny([helper.make_node("Relu", ["x"], ["y"])], opset=13))


def test_resize_by_scales_is_rejected_when_run() -> None:
    scales = np.array([1, 1, 2, 2], np.float32)
    graph = OnnxGraph(
        tiny([helper.make_node("Resize", ["x", "", "k"], ["y"], mode="linear")], {"k": scales})
    )
    with pytest.raises(ModelError, match="only `sizes` is supported"):
        graph(torch.zeros((1, 4, 6, 6)))


def test_a_file_that_is_not_onnx_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="cannot load"):
        load_graph(bad)
