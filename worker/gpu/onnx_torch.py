"""A small ONNX interpreter on PyTorch, for exactly the operators of the shipped models.

    load   every node checked: a known operator, only attributes and values implemented here
           (anything else is a `ModelError` naming it, never a silent approximation)
           nodes whose inputs are all constants are evaluated once, on the CPU in float32
           (large.onnx's Cast of its fp16 weights, the readout's Slice and Gather)
           each remaining value is placed: "host" (shape arithmetic: Shape and the int64 ops on
           its result, small CPU tensors) or "device" (the image and everything computed from it)
    run    the nodes in order; a value is dropped after its last use

Shape arithmetic never leaves the CPU and device values are never read back, so the forward
pass does no device-to-host synchronisation and can be captured in a CUDA graph. Parameters that
steer an operator (shapes, sizes, pads, axes, clip bounds) must be host values or constants; a
graph that computes one on the device is rejected at load. With `dtype=torch.float16` the device
computes in fp16, except LogSoftmax and ReduceLogSumExp, which return float32: log-densities
near -8 are spaced 0.008 apart in fp16, eight times the tolerance of the GPU path.

No converter (onnx2torch) and no training code: the shipped graphs (opset 20) need 23 operators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from ..errors import ModelError

# The ai.onnx opsets whose operator definitions this file follows. Opset 18 moved the axes of
# every Reduce* into an input and gave Resize and Pad their current attributes; 19 and 20 only
# added modes and types that are rejected here. Newer opsets: read their changelog first.
OPSETS = range(18, 21)
ANY = None  # an attribute whose value does not matter for what is implemented

Value = torch.Tensor | None  # None: an optional input left out ("")
OpFn = Callable[[list[Value], dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class Op:
    fn: OpFn
    # how many inputs it takes (0: any number, for Concat); optional ones left out, trailing
    # or "", reach `fn` as None
    arity: int
    # attribute -> (ONNX default, accepted values or ANY)
    attrs: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # inputs read as Python numbers on the host (shape, axes, pads, sizes, bounds)
    params: tuple[int, ...] = ()


def _ints(value: Value) -> list[int]:
    assert value is not None and value.device.type == "cpu"  # guaranteed by the placement pass
    return [int(v) for v in value.reshape(-1).tolist()]


# --------------------------------------------------------------------------------- operators


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpFn:
    return lambda x, a: fn(_t(x[0]), _t(x[1]))


def _t(value: Value) -> torch.Tensor:
    assert value is not None
    return value


def _div(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    n, d = _t(x[0]), _t(x[1])
    if n.is_floating_point() or d.is_floating_point():
        return n / d
    return torch.div(n, d, rounding_mode="trunc")  # ONNX integer Div truncates, like C


def _cast(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    return _t(x[0]).to(a["dtype"])  # `dtype`: resolved from `to` at load (OnnxGraph._cast_to)


def _clip(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    low = None if x[1] is None else float(x[1])
    high = None if x[2] is None else float(x[2])
    return torch.clamp(_t(x[0]), low, high)


def _conv(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, weight, bias = _t(x[0]), _t(x[1]), x[2]
    if data.ndim != 4 or weight.ndim != 4:
        raise ModelError(f"Conv: only 2-D convolutions are supported, got input {data.shape}")
    if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(weight.shape[2:]):
        raise ModelError(f"Conv: kernel_shape {a['kernel_shape']} != weight {weight.shape}")
    top, left, bottom, right = a["pads"] or (0, 0, 0, 0)
    if (top, left) != (bottom, right):  # asymmetric (TF-style "same" with stride 2)
        data = F.pad(data, (left, right, top, bottom))
        top = left = 0
    return F.conv2d(
        data,
        weight,
        bias,
        stride=tuple(a["strides"] or (1, 1)),
        padding=(top, left),
        dilation=tuple(a["dilations"] or (1, 1)),
        groups=a["group"],
    )


def _batch_norm(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, scale, bias, mean, var = (_t(v) for v in x)
    return F.batch_norm(data, mean, var, scale, bias, training=False, eps=a["epsilon"])


def _reshape(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, shape = _t(x[0]), _ints(x[1])
    if not a["allowzero"]:  # 0 copies the input's dimension
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


def _concat(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    return torch.cat([_t(v) for v in x], a["axis"])


def _shape(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    # Only the metadata is read: no synchronisation, and the result lives on the host.
    return torch.tensor(_t(x[0]).shape[a["start"] : a["end"]], dtype=torch.int64)


def _squeeze(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data = _t(x[0])
    if x[1] is None:
        return data.squeeze()
    axes = [axis % data.ndim for axis in _ints(x[1])]
    if any(data.shape[axis] != 1 for axis in axes):  # torch would silently keep the axis
        raise ModelError(f"Squeeze: axes {axes} of a {tuple(data.shape)} tensor are not all 1")
    return data.squeeze(tuple(axes))


def _unsqueeze(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, axes = _t(x[0]), _ints(x[1])
    rank = data.ndim + len(axes)
    for axis in sorted(axis % rank for axis in axes):
        data = data.unsqueeze(axis)
    return data


def _transpose(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data = _t(x[0])
    return data.permute(a["perm"] or tuple(reversed(range(data.ndim))))


def _resize(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, roi, scales, sizes = x[0], x[1], x[2], x[3]
    data = _t(data)
    if (
        sizes is None
        or (scales is not None and scales.numel())
        or (roi is not None and roi.numel())
    ):
        raise ModelError("Resize: only `sizes` is supported (no scales, no roi)")
    size = _ints(sizes)
    if data.ndim != 4 or size[:2] != list(data.shape[:2]):
        raise ModelError(f"Resize: only the last two axes of a 4-D tensor, got {size}")
    # linear + half_pixel is PyTorch's bilinear without align_corners: both clamp source
    # coordinates below 0 to the edge.
    return F.interpolate(data, size=(size[2], size[3]), mode="bilinear", align_corners=False)


def _pad(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, pads = _t(x[0]), _ints(x[1])
    value = 0.0 if x[2] is None else float(x[2])
    axes = list(range(data.ndim)) if x[3] is None else _ints(x[3])
    per_axis = dict.fromkeys(range(data.ndim), (0, 0))
    for i, axis in enumerate(axes):
        per_axis[axis % data.ndim] = (pads[i], pads[i + len(axes)])
    if any(p < 0 for pair in per_axis.values() for p in pair):
        raise ModelError(f"Pad: negative pads {pads} are not supported")
    # torch takes (begin, end) pairs from the last axis backwards; edge padding only exists for
    # the trailing axes, so leading axes must not be padded.
    torch_pads = [p for axis in reversed(range(data.ndim)) for p in per_axis[axis]]
    if a["mode"] == "constant":
        return F.pad(data, torch_pads, value=value)
    if any(per_axis[axis] != (0, 0) for axis in range(data.ndim - 2)) or data.ndim != 4:
        raise ModelError(f"Pad: edge padding only on the last two axes of 4-D data, got {pads}")
    return F.pad(data, torch_pads[:4], mode="replicate")


def _slice(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, starts, ends = _t(x[0]), _ints(x[1]), _ints(x[2])
    axes = list(range(len(starts))) if x[3] is None else _ints(x[3])
    steps = [1] * len(starts) if x[4] is None else _ints(x[4])
    if any(step <= 0 for step in steps):
        raise ModelError(f"Slice: only positive steps are supported, got {steps}")
    index: list[slice] = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        # Python's slice clamps out-of-range and negative bounds as ONNX specifies.
        index[axis % data.ndim] = slice(start, end, step)
    return data[tuple(index)]


def _gather(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    data, indices = _t(x[0]), _t(x[1])
    axis = a["axis"] % data.ndim
    flat = indices.reshape(-1)
    flat = torch.where(flat < 0, flat + data.shape[axis], flat)  # negative indices count back
    out = data.index_select(axis, flat)
    return out.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]))


def _reduce(fn: Callable[..., torch.Tensor]) -> OpFn:
    def run(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
        data = _t(x[0])
        axes = [] if x[1] is None else _ints(x[1])
        if not axes:
            if a["noop_with_empty_axes"]:
                return data
            axes = list(range(data.ndim))
        return fn(data, tuple(axes), bool(a["keepdims"]))

    return run


def _log_softmax(x: list[Value], a: dict[str, Any]) -> torch.Tensor:
    return torch.log_softmax(_t(x[0]), a["axis"], dtype=torch.float32)


def _log_sum_exp(data: torch.Tensor, axes: tuple[int, ...], keep: bool) -> torch.Tensor:
    return torch.logsumexp(data.float(), axes, keep)


_REDUCE = {"keepdims": (1, ANY), "noop_with_empty_axes": (0, ANY)}

OPS: dict[str, Op] = {
    "Add": Op(_binary(torch.add), 2),
    "Sub": Op(_binary(torch.sub), 2),
    "Mul": Op(_binary(torch.mul), 2),
    "Div": Op(_div, 2),
    "Relu": Op(lambda x, a: torch.relu(_t(x[0])), 1),
    "Clip": Op(_clip, 3, params=(1, 2)),
    # `saturate` only concerns float8 targets, which are not in _CAST_TARGETS.
    "Cast": Op(_cast, 1, {"to": (None, ANY), "saturate": (1, ANY)}),
    "Conv": Op(
        _conv,
        3,
        {
            "auto_pad": ("NOTSET", {"NOTSET"}),
            "dilations": (None, ANY),
            "group": (1, ANY),
            "kernel_shape": (None, ANY),
            "pads": (None, ANY),
            "strides": (None, ANY),
        },
    ),
    # momentum only matters in training; training_mode=1 would need two more outputs.
    "BatchNormalization": Op(
        _batch_norm, 5, {"epsilon": (1e-5, ANY), "momentum": (0.9, ANY), "training_mode": (0, {0})}
    ),
    "Reshape": Op(_reshape, 2, {"allowzero": (0, ANY)}, params=(1,)),
    "Concat": Op(_concat, 0, {"axis": (None, ANY)}),
    "Shape": Op(_shape, 1, {"start": (0, ANY), "end": (None, ANY)}),
    "Squeeze": Op(_squeeze, 2, params=(1,)),
    "Unsqueeze": Op(_unsqueeze, 2, params=(1,)),
    "Transpose": Op(_transpose, 1, {"perm": (None, ANY)}),
    # The values marked ANY only matter in modes other than linear / half_pixel / sizes.
    "Resize": Op(
        _resize,
        4,
        {
            "mode": ("nearest", {"linear"}),
            "coordinate_transformation_mode": ("half_pixel", {"half_pixel"}),
            "antialias": (0, {0}),
            "exclude_outside": (0, {0}),
            "keep_aspect_ratio_policy": ("stretch", {"stretch"}),
            "cubic_coeff_a": (-0.75, ANY),
            "extrapolation_value": (0.0, ANY),
            "nearest_mode": ("round_prefer_floor", ANY),
        },
        params=(1, 2, 3),
    ),
    "Pad": Op(_pad, 4, {"mode": ("constant", {"constant", "edge"})}, params=(1, 2, 3)),
    "Slice": Op(_slice, 5, params=(1, 2, 3, 4)),
    "Gather": Op(_gather, 2, {"axis": (0, ANY)}),
    "ReduceSum": Op(_reduce(torch.sum), 2, _REDUCE, params=(1,)),
    "ReduceMean": Op(_reduce(torch.mean), 2, _REDUCE, params=(1,)),
    "ReduceLogSumExp": Op(_reduce(_log_sum_exp), 2, _REDUCE, params=(1,)),
    "LogSoftmax": Op(_log_softmax, 1, {"axis": (-1, ANY)}),
}

_CAST_TARGETS = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
}

# ------------------------------------------------------------------------------------ graph


@dataclass
class _Node:
    name: str  # for messages: the node's name, or its operator and output
    op_type: str
    op: Op
    attrs: dict[str, Any]
    inputs: list[str]  # "" for an optional input left out, padded to the operator's arity
    output: str
    args: list[str | torch.Tensor | None] = field(default_factory=list)  # bound by _place
    release: tuple[str, ...] = ()  # runtime values last used by this node


class OnnxGraph:
    """An ONNX model with one input and one output, run with PyTorch on `device` in `dtype`
    (float32, or float16 for the device's floating-point values). `graph(x)` takes the input
    tensor, already on `device`; call it under `torch.inference_mode()`."""

    def __init__(
        self,
        model: onnx.ModelProto,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        source: str = "model",
    ) -> None:
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f"dtype must be float32 or float16, got {dtype}")
        self.device, self.dtype, self.source = torch.device(device), dtype, source
        graph = model.graph
        opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
        if opset not in OPSETS:
            raise ModelError(f"{source}: opset {opset}, supported {OPSETS.start}-{OPSETS.stop - 1}")
        constants = {
            t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer
        }
        inputs = [i.name for i in graph.input if i.name not in constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelError(f"{source}: expected one input and one output, got {inputs}")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        placement = {self.input_name: "device"}
        self._nodes: list[_Node] = []
        self._device_constants: dict[str, torch.Tensor] = {}
        for proto in graph.node:
            node = self._check(proto)
            if all(name == "" or name in constants for name in node.inputs):
                # Evaluated now, on the CPU in float32 as ONNX Runtime would.
                args = [constants[name] if name else None for name in node.inputs]
                attrs = {**node.attrs, "dtype": self._cast_to(node, "host")}
                constants[node.output] = node.op.fn(args, attrs)
            else:
                self._place(node, constants, placement)
                self._nodes.append(node)
        if placement.get(self.output_name) != "device":
            raise ModelError(
                f"{source}: the output {self.output_name!r} does not depend on the input"
            )
        self._set_releases()

    # loading
    def _check(self, proto: onnx.NodeProto) -> _Node:
        """The node, if its operator and every attribute value are implemented here."""
        name = proto.name or f"{proto.op_type} -> {proto.output[0] if proto.output else '?'}"
        where = f"{self.source}: {proto.op_type} node {name!r}"
        op = OPS.get(proto.op_type) if proto.domain in ("", "ai.onnx") else None
        if op is None:
            operator = f"{proto.domain or 'ai.onnx'}.{proto.op_type}"
            raise ModelError(f"{self.source}: operator {operator} ({name!r}) is not supported")
        if len(proto.output) != 1:
            raise ModelError(f"{where}: only one output is supported, got {len(proto.output)}")
        if op.arity and len(proto.input) > op.arity:
            raise ModelError(
                f"{where}: {len(proto.input)} inputs, {proto.op_type} takes {op.arity}"
            )
        attrs = {key: default for key, (default, _) in op.attrs.items()}
        for attribute in proto.attribute:
            if attribute.name not in op.attrs:
                raise ModelError(f"{where}: attribute {attribute.name!r} is not supported")
            value = onnx.helper.get_attribute_value(attribute)
            value = value.decode() if isinstance(value, bytes) else value
            value = tuple(value) if isinstance(value, list) else value
            accepted = op.attrs[attribute.name][1]
            if accepted is not ANY and value not in accepted:
                raise ModelError(
                    f"{where}: {attribute.name}={value!r} is not supported"
                    f" (supported: {', '.join(map(repr, sorted(accepted)))})"
                )
            attrs[attribute.name] = value
        if proto.op_type == "Cast" and attrs["to"] not in _CAST_TARGETS:
            raise ModelError(f"{where}: Cast to type {attrs['to']} is not supported")
        inputs = list(proto.input) + [""] * (op.arity - len(proto.input))
        return _Node(name, proto.op_type, op, attrs, inputs, proto.output[0])

    def _cast_to(self, node: _Node, where: str) -> torch.dtype | None:
        if "to" not in node.attrs:
            return None
        target = _CAST_TARGETS[node.attrs["to"]]
        # float on the device means the compute dtype; host values stay exact.
        return self.dtype if (target == torch.float32 and where == "device") else target

    def _place(
        self, node: _Node, constants: dict[str, torch.Tensor], placement: dict[str, str]
    ) -> None:
        """Decide where the node runs, and bind its constant inputs in the matching form."""
        data, constant_data = set(), []
        for i, name in enumerate(node.inputs):
            if not name:
                continue
            steers = i in node.op.params
            if name in constants:
                constant_data += [] if steers else [constants[name]]
            elif name not in placement:
                raise ModelError(f"{self.source}: {node.name}: input {name!r} is never computed")
            elif steers and placement[name] != "host":
                raise ModelError(
                    f"{self.source}: {node.name}: input {name!r} steers the operator but is"
                    " computed on the device (reading it would synchronise)"
                )
            elif not steers:
                data.add(placement[name])
        if node.op_type == "Shape":
            where = "host"  # reads only the metadata of its input
        elif len(data) > 1:
            raise ModelError(f"{self.source}: {node.name} mixes shape arithmetic with device data")
        elif data:
            where = data.pop()
        else:  # constant data steered by host values (the prior resized to the output's size)
            where = "device" if any(c.is_floating_point() for c in constant_data) else "host"

        def bind(i: int, name: str) -> str | torch.Tensor | None:
            if not name or name not in constants:
                return name or None  # left out, or computed at run time
            if where == "device" and i not in node.op.params:
                return self._on_device(name, constants[name])
            return constants[name]

        node.args = [bind(i, name) for i, name in enumerate(node.inputs)]
        node.attrs["dtype"] = self._cast_to(node, where)
        placement[node.output] = where

    def _on_device(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name not in self._device_constants:
            dtype = self.dtype if value.is_floating_point() else value.dtype
            self._device_constants[name] = value.to(self.device, dtype)
        return self._device_constants[name]

    def _set_releases(self) -> None:
        """Drop each runtime value after its last use, so peak memory (and a CUDA graph's pool)
        holds only what is live, as ONNX Runtime's planner does."""
        last_use = {
            arg: i
            for i, node in enumerate(self._nodes)
            for arg in node.args
            if isinstance(arg, str)
        }
        releases: dict[int, list[str]] = {}
        for i, node in enumerate(self._nodes):
            last_use.setdefault(node.output, i)  # an output nothing reads
        for name, i in last_use.items():
            if name != self.output_name:
                releases.setdefault(i, []).append(name)
        for i, node in enumerate(self._nodes):
            node.release = tuple(releases.get(i, ()))

    # running
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 on the device -> the graph's output, float32, on the device."""
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for node in self._nodes:
            args = [env[a] if isinstance(a, str) else a for a in node.args]
            env[node.output] = node.op.fn(args, node.attrs)
            for name in node.release:
                del env[name]
        return env[self.output_name].float()

    @property
    def operators(self) -> list[str]:
        """The operator of each node left to run after constant folding, in order."""
        return [node.op_type for node in self._nodes]


def load_graph(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[OnnxGraph, dict[str, str]]:
    """The graph of the ONNX file at `path` and its metadata (name, version, long_side, ...)."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own DecodeError, and OSError
        raise ModelError(f"cannot load {path}: {exc}") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    return OnnxGraph(model, device, dtype, source=str(path)), meta
