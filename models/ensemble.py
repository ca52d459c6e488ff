"""Combine saliency models into one ONNX graph, and store a graph's weights in half precision.

An ensemble member makes different mistakes from another when it was trained differently (other
features, other inputs, other targets); averaging their log-densities keeps what they agree on.
The combination lives inside one graph, so every backend runs an ensemble like any model: same
input (uint8 RGB at one long side), same output (a log-density at one stride), same metadata.

    python -m cropworker_models.ensemble OUT.onnx MEMBER.onnx MEMBER.onnx --name default \
        --version 1 [--mixture] [--fp16]

`--mixture` averages densities (log of the mean, the teacher's rule: calibrated, broad) instead of
log-densities (the normalised geometric mean: sharper where members agree). `--fp16` stores
weights as float16 with a Cast to float32 in front of each: half the file, the same float32
arithmetic at run time (ONNX Runtime folds the casts when it loads the graph).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cropworker.decode import decode_image

log = logging.getLogger(__name__)

INPUT, OUTPUT = "image", "log_density"
# metadata every member must agree on: the runtime decodes once and reads one output grid
SHARED = ("long_side", "output_stride", "mean", "std")
FP16_MIN_ELEMENTS = 1024  # smaller tensors (biases, scalars, shapes) stay as they are
MAX_ABS_DIFF = 1e-3  # on log-densities, as export.MAX_ABS_DIFF
# Weights rounded to float16 (11 significant bits) move vanilla's log-densities by ~0.01 (1% of
# a density); the crops do not move (the large model's card compares both).
FP16_MAX_ABS_DIFF = 0.05


def metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def combine(members: list[Any], name: str, version: str, mixture: bool = False) -> Any:
    """One graph: every member reads `image`; out comes log_softmax(mean of their log-densities)
    or, with `mixture`, log(mean of their densities)."""
    import onnx
    from onnx import TensorProto, compose, helper

    metas = [metadata(m) for m in members]
    for key in SHARED:
        values = {meta.get(key) for meta in metas}
        if len(values) != 1:
            raise ValueError(f"members disagree on {key}: {sorted(map(str, values))}")
    opsets = {_opset(m) for m in members}
    if len(opsets) != 1:  # one exporter made them all; mixing would need a converter
        raise ValueError(f"members use different opsets: {sorted(opsets)}")
    opset = opsets.pop()
    nodes, inits, outs = [], [], []
    for i, member in enumerate(members):
        prefixed = compose.add_prefix(member, f"m{i}/")
        g = prefixed.graph
        for node in g.node:  # the members share the graph's one input
            node.input[:] = [INPUT if x == f"m{i}/{INPUT}" else x for x in node.input]
        nodes += list(g.node)
        inits += list(g.initializer)
        out = g.output[0].name
        unsqueezed = f"m{i}/stacked"
        nodes.append(helper.make_node("Unsqueeze", [out, "axis0"], [unsqueezed]))
        outs.append(unsqueezed)
    inits.append(onnx.numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    inits.append(onnx.numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    nodes.append(helper.make_node("Concat", outs, ["stacked"], axis=0))  # (M, B, h, w)
    nodes.append(helper.make_node("Shape", ["stacked"], ["stacked_shape"], start=1))  # (B, h, w)
    if mixture:
        nodes.append(
            helper.make_node("ReduceLogSumExp", ["stacked", "axis0"], ["summed"], keepdims=0)
        )
    else:
        nodes.append(helper.make_node("ReduceMean", ["stacked", "axis0"], ["summed"], keepdims=0))
    nodes.append(helper.make_node("Reshape", ["summed", "flat_shape"], ["flat"]))
    nodes.append(helper.make_node("LogSoftmax", ["flat"], ["flat_logp"], axis=1))
    nodes.append(helper.make_node("Reshape", ["flat_logp", "stacked_shape"], [OUTPUT]))
    first = members[0].graph
    image = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "height", "width", 3])
    image.type.CopyFrom(first.input[0].type)
    out = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, None)
    out.type.CopyFrom(first.output[0].type)
    graph = helper.make_graph(nodes, f"{name}-ensemble", [image], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = max(m.ir_version for m in members)
    meta = {k: metas[0][k] for k in SHARED}
    meta.update(
        name=name,
        version=version,
        backbone="ensemble",
        members=",".join(f"{m['name']}@{m['version']}" for m in metas),
        combine="mixture" if mixture else "mean-log",
        macs_input=metas[0]["macs_input"],
        macs=str(sum(int(m["macs"]) for m in metas)),
    )
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def _opset(model: Any) -> int:
    return int(max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def fp16_weights(model: Any) -> Any:
    """The same graph with its large float32 weights stored as float16, each followed by a Cast
    back to float32: half the bytes; arithmetic stays float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kept, casts = [], []
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT and np.prod(init.dims) >= FP16_MIN_ELEMENTS:
            half = numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), f"{init.name}/fp16"
            )
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            kept.append(init)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(casts + nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def reference(members: list[Any], x: np.ndarray, mixture: bool) -> np.ndarray:
    """What the combined graph must compute, from the members run one by one."""
    import onnxruntime as ort

    logs = np.stack(
        [
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
                None, {INPUT: x}
            )[0]
            for m in members
        ]
    ).astype(np.float64)
    if mixture:
        top = logs.max(axis=0)
        combined = top + np.log(np.exp(logs - top).mean(axis=0))
    else:
        combined = logs.mean(axis=0)
    flat = combined.reshape(len(x), -1)
    flat = flat - flat.max(axis=1, keepdims=True)
    flat = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
    out: np.ndarray = flat.reshape(combined.shape)
    return out


def main(argv: list[str] | None = None) -> None:
    import onnx
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("members", type=Path, nargs="+")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--mixture", action="store_true", help="average densities, not logs")
    parser.add_argument("--fp16", action="store_true", help="store weights as float16")
    parser.add_argument("--golden-image", type=Path, default=Path("samples/coffee.jpg"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    members = [onnx.load(str(p)) for p in args.members]
    if len(members) > 1:
        model = combine(members, args.name, args.version, args.mixture)
    else:
        model = members[0]
        meta = {**metadata(model), "name": args.name, "version": args.version}
        onnx.helper.set_model_props(model, meta)
    x = np.random.default_rng(1).integers(0, 256, (2, 160, 192, 3), dtype=np.uint8)
    expected = reference(members, x, args.mixture)
    if args.fp16:
        model = fp16_weights(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {INPUT: x}
    )[0]
    worst = float(np.abs(got - expected).max())
    limit = FP16_MAX_ABS_DIFF if args.fp16 else MAX_ABS_DIFF
    if worst > limit:
        raise SystemExit(f"the combined graph differs from its members by {worst} > {limit}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out))
    # the runtime's tests check the shipped graph against its members' own outputs
    rgb = decode_image(args.golden_image.read_bytes(), int(metadata(model)["long_side"])).rgb[None]
    np.savez_compressed(
        args.out.with_suffix(".golden.npz"),
        image=rgb,
        log_density=reference(members, rgb, args.mixture),
        atol=np.float64(limit),
    )
    log.info(
        "wrote %s (%.1f MB); max |combined - members| = %.2g",
        args.out,
        args.out.stat().st_size / 1e6,
        worst,
    )


if __name__ == "__main__":
    main()
