"""A student back from its exported ONNX graph, for a model whose checkpoint is lost.

The exporter folds each batch normalisation into the convolution before it (the weight keeps the
parameter's name, the bias is named `<weight>_bias`) and the readout's normalisation into the
readout's first layer, tap by tap (`net.Head._first_layer`). `from_onnx` inverts this: the widths
come from the weight shapes, kernels and strides from the convolutions, residual blocks from the
graph's additions, and every folded normalisation becomes one that computes `y + bias` in eval
mode (weight 1, running mean 0, running variance 1 - eps). The student computes the graph's
function, but its normalisations know nothing of the data: in train mode (batch statistics) it
would compute something else. `calibrate_batch_norm` gives them the statistics of real images
while keeping the eval-mode function, so the student can be fine-tuned like any other.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cropworker.backend import OnnxBackend
from cropworker.decode import decode_image

from . import data, distill, net, student

log = logging.getLogger(__name__)

# (conv, normalisation) module pairs of a block, by state-dict prefix
BLOCK_PAIRS = (("expand.0", "expand.1"), ("depthwise", "bn"), ("project.0", "project.1"))


def config_from_metadata(meta: dict[str, str]) -> net.SaliencyNetConfig:
    """The config an exported model carries as metadata (`SaliencyNetConfig.metadata`)."""
    default = net.SaliencyNetConfig()
    values: dict[str, Any] = {}
    for key, value in vars(default).items():
        if key not in meta:
            continue
        if isinstance(value, tuple):
            values[key] = tuple(int(v) for v in meta[key].split(",") if v)
        else:
            values[key] = type(value)(meta[key])
    return net.SaliencyNetConfig(**values)


def from_onnx(path: Path) -> student.Student:
    """The student (eval mode) that computes the exported student graph at `path`."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    config = config_from_metadata({p.key: p.value for p in proto.metadata_props})
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    convs = {n.input[1]: n for n in graph.node if n.op_type == "Conv"}
    producers = {x: n for n in graph.node for x in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    specs = []
    count = sum(1 for k in inits if k.startswith("blocks.") and k.endswith(".depthwise.weight"))
    for i in range(count):
        depthwise = inits[f"blocks.{i}.depthwise.weight"]
        expand = f"blocks.{i}.expand.0.weight" in inits
        mid, kernel = depthwise.shape[0], depthwise.shape[2]
        cin = inits[f"blocks.{i}.expand.0.weight"].shape[1] if expand else mid
        cout = inits[f"blocks.{i}.project.0.weight"].shape[0]
        stride = _attribute(convs[f"blocks.{i}.depthwise.weight"], "strides")[0]
        # residual: an Add of the block's input and its output (after an unfolded normalisation)
        out = convs[f"blocks.{i}.project.0.weight"].output[0]
        norms = [n for n in consumers.get(out, []) if n.op_type == "BatchNormalization"]
        if norms:
            out = norms[0].output[0]
        if expand:
            block_in = convs[f"blocks.{i}.expand.0.weight"].input[0]
        else:  # the depthwise convolution reads the padded input
            block_in = convs[f"blocks.{i}.depthwise.weight"].input[0]
            pad = producers.get(block_in)
            if pad is not None and pad.op_type == "Pad":
                block_in = pad.input[0]
        residual = any(
            n.op_type == "Add" and set(n.input) == {out, block_in} for n in consumers.get(out, [])
        )
        specs.append(student.BlockSpec(cin, mid, cout, kernel, stride, expand, residual))

    model = student.Student(config, specs)
    state = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    pairs = [("stem.0", "stem.1")]
    for i, spec in enumerate(specs):
        pairs += [
            (f"blocks.{i}.{c}", f"blocks.{i}.{b}")
            for c, b in BLOCK_PAIRS
            if spec.expand or not c.startswith("expand")
        ]
    for conv, bn in pairs:
        weight = f"{conv}.weight"
        new[weight] = inits[weight]
        if f"{bn}.running_mean" in inits:  # left unfolded by the exporter: as trained
            for key in ("weight", "bias", "running_mean", "running_var"):
                new[f"{bn}.{key}"] = inits[f"{bn}.{key}"]
        else:
            norm = _identity_norm(inits[f"{weight}_bias"], _eps(model, bn))
            new.update({bn + k: v for k, v in norm.items()})
    for i in range(len(specs)):
        new[f"blocks.{i}.mask"] = torch.ones(specs[i].mid)

    # the readout's first layer, one convolution per tap in graph order, plus its own bias
    head_convs = [
        n
        for n in graph.node
        if n.op_type == "Conv" and n.input[1] not in state and not n.input[1].startswith("head.")
    ]
    first = [n for n in head_convs if inits[n.input[1]].shape[0] == config.readout[0]]
    if len(first) != len(config.taps):
        raise ValueError(f"{path}: expected {len(config.taps)} readout convolutions")
    weights, bias = [], torch.zeros(config.readout[0])
    for node, tap in zip(first, config.taps, strict=True):
        w = inits[node.input[1]]
        if w.shape[1] != specs[tap].cout:
            raise ValueError(f"{path}: readout of tap {tap} reads {w.shape[1]} maps")
        weights.append(w)
        if len(node.input) > 2 and node.input[2]:
            bias = bias + inits[node.input[2]]
    adds = [n for n in consumers[first[0].output[0]] if n.op_type == "Add"]
    own = [x for n in adds for x in n.input if x in inits]
    if len(own) != 1:
        raise ValueError(f"{path}: cannot find the readout's bias")
    new["head.readout.0.weight"] = torch.cat(weights, dim=1)
    new["head.readout.0.bias"] = bias + inits[own[0]].flatten()
    head = _identity_norm(torch.zeros(model.head.norm.num_features), model.head.norm.eps)
    new.update({"head.norm" + k: v for k, v in head.items()})
    for key in state:
        if key.startswith("head.") and key in inits:
            new[key] = inits[key]
        if key.endswith("num_batches_tracked"):
            new[key] = torch.zeros((), dtype=torch.long)
    missing = set(state) - set(new)
    if missing:
        raise ValueError(f"{path}: no weights for {sorted(missing)}")
    model.load_state_dict({k: new[k] for k in state})
    return student._unmasked(model).eval()


def _identity_norm(bias: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """A normalisation (keys relative to it) computing y + bias in eval mode."""
    return {
        ".weight": torch.ones_like(bias),
        ".bias": bias,
        ".running_mean": torch.zeros_like(bias),
        ".running_var": torch.full_like(bias, 1 - eps),
    }


def _eps(model: nn.Module, name: str) -> float:
    module = model.get_submodule(name)
    assert isinstance(module, nn.BatchNorm2d)
    return float(module.eps)


def _attribute(node: Any, name: str) -> list[int]:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return list(helper.get_attribute_value(a))
    raise KeyError(name)


@torch.no_grad()
def calibrate_batch_norm(model: student.Student, images: Iterable[np.ndarray]) -> student.Student:
    """Give every normalisation the per-channel mean and variance of its input over `images`
    ((H, W, 3) uint8 at the model's input size), with weight and bias changed to keep its
    eval-mode function: the same model in eval mode (in place), and in train mode batch
    statistics now normalise what they were fitted on instead of rescaling everything."""
    was_training = model.training
    model.eval()
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    sums: dict[str, torch.Tensor] = {}  # per channel: count, sum, sum of squares
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def add(name: str, x: torch.Tensor) -> None:
        x = x.double().transpose(0, 1).flatten(1)  # (C, N*H*W)
        sums[name] = sums.get(name, 0) + x.sum(1)
        squares[name] = squares.get(name, 0) + (x * x).sum(1)
        counts[name] = counts.get(name, 0) + x.shape[1]

    hooks = [
        m.register_forward_pre_hook(lambda m, inputs, name=name: add(name, inputs[0]))
        for name, m in norms.items()
        if name != "head.norm"  # eval mode reads it out tap by tap, never calling it
    ]
    taps: list[torch.Tensor] = []
    hooks += [
        model.blocks[i].register_forward_hook(lambda m, inputs, out: taps.append(out))
        for i in model.config.taps
    ]
    try:
        for image in images:
            taps.clear()
            model(torch.from_numpy(np.ascontiguousarray(image))[None])
            size = taps[0].shape[-2:]
            add("head.norm", torch.cat([taps[0]] + [net._resize(t, size) for t in taps[1:]], 1))
    finally:
        for h in hooks:
            h.remove()
    for name, norm in norms.items():
        mean = sums[name] / counts[name]
        var = (squares[name] / counts[name] - mean * mean).clamp(min=0)
        assert norm.running_mean is not None and norm.running_var is not None
        old_scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        old_shift = norm.bias.double() - norm.running_mean.double() * old_scale
        # eval: (y - mean) / sqrt(var + eps) * weight + bias == y * old_scale + old_shift
        norm.weight.copy_(old_scale * torch.sqrt(var + norm.eps))
        norm.bias.copy_(old_shift + mean * old_scale)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
    return model.train(was_training)


def main(argv: list[str] | None = None) -> None:
    """Rebuild, calibrate on random training examples (as `distill` sees them), check against
    the graph on the sample photos, save a checkpoint that `distill --init` takes."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "graph", type=Path, help="an exported student graph, e.g. worker/zoo/fast.onnx"
    )
    parser.add_argument("--out", type=Path, required=True, help="the student checkpoint to write")
    data.add_data_argument(parser)
    parser.add_argument("--teacher", type=Path, default=Path("cache/teacher.onnx"))
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--crops", type=int, default=2, help="windows per image, as distill's")
    parser.add_argument("--calibrate", type=int, default=600, help="examples to calibrate on")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = from_onnx(args.graph)
    c = model.config
    examples = distill.training_set(
        args.teacher, args.data, c.long_side, c.output_stride, args.cache, args.crops
    )
    chosen = random.Random(args.seed).sample(examples, args.calibrate)
    model = calibrate_batch_norm(model, [ex.image for ex in chosen]).eval()
    session = OnnxBackend(str(args.graph))
    worst = 0.0
    for path in sorted(Path("samples").glob("*.jpg")):
        rgb = decode_image(path.read_bytes(), c.long_side).rgb[None]
        with torch.no_grad():
            got = model(torch.from_numpy(rgb)).numpy()
        worst = max(worst, float(np.abs(got - session.infer(rgb)).max()))
    log.info("max |student - graph| over samples/*.jpg: %.2g", worst)
    student.save(model, args.out)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
