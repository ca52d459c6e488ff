"""Export a trained saliency network to ONNX with dynamic batch, height and width.

The file is checked with the ONNX checker and against PyTorch on several input shapes before it
is written, and carries its own description (name, version, input size, MACs) as metadata, which
the runtime reads instead of a side file.

    python -m cropworker_models.export cache/vanilla.pt worker/zoo/vanilla.onnx
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cropworker.decode import decode_image, model_input_size

from . import flops, net

log = logging.getLogger(__name__)

# Shapes (H, W) checked against PyTorch: landscape 4:3, square, portrait, panorama.
CHECK_SHAPES = ((192, 256), (256, 256), (256, 192), (96, 256))
MAX_ABS_DIFF = 1e-3  # on log-densities of ~-8: float32 reassociation differences, not bugs


def load(checkpoint: Path) -> nn.Module:
    """A trained model from its checkpoint: a frozen-backbone network or a student."""
    state = torch.load(checkpoint, weights_only=False)
    if "specs" in state:
        from . import student

        return student.load(checkpoint)
    model = net.build(state["config"])
    model.head.load_state_dict(state["head"])
    return model.eval()


def to_onnx(model: nn.Module, out: Path, extra_metadata: dict[str, str] | None = None) -> None:
    import onnx

    stride = 32
    batch = torch.export.Dim("batch", min=1, max=256)
    rows = torch.export.Dim("rows", min=2, max=128)
    cols = torch.export.Dim("cols", min=2, max=128)
    example = torch.zeros(2, 192, 256, 3, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            str(raw),
            dynamo=True,
            input_names=["image"],
            output_names=["log_density"],
            external_data=False,
            dynamic_shapes={"image": {0: batch, 1: stride * rows, 2: stride * cols}},
        )
        proto = onnx.load(str(raw))
    metadata = {**net.config_of(model).metadata(), **(extra_metadata or {})}
    # Cost at the model's own input for a 4:3 landscape photo, the common case.
    width, height = model_input_size(4, 3, net.config_of(model).long_side)
    metadata["macs_input"] = f"{width}x{height}"
    metadata["macs"] = str(
        flops.count_macs(model, torch.zeros(1, height, width, 3, dtype=torch.uint8))
    )
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))


def check_against_torch(model: nn.Module, path: Path, seed: int = 0) -> float:
    """Largest |ONNX Runtime - PyTorch| over `CHECK_SHAPES`; raises if above `MAX_ABS_DIFF`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for h, w in CHECK_SHAPES:
        x = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {"image": x})[0]
        if got.shape != expected.shape:
            raise AssertionError(f"ONNX output {got.shape} != torch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > MAX_ABS_DIFF:
        raise AssertionError(f"ONNX and torch differ by {worst} > {MAX_ABS_DIFF}")
    return worst


def write_golden(model: nn.Module, image: Path, out: Path) -> None:
    """A real photo at the runtime's input size and PyTorch's output for it: the runtime's test
    suite checks every backend against this without needing torch."""
    rgb = decode_image(image.read_bytes(), net.config_of(model).long_side).rgb[None]
    with torch.no_grad():
        expected = model(torch.from_numpy(rgb)).numpy()
    np.savez_compressed(out, image=rgb, log_density=expected)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--golden-image", type=Path, default=Path("samples/coffee.jpg"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = load(args.checkpoint)
    to_onnx(model, args.out)
    log.info("wrote %s; max |onnx - torch| = %.2g", args.out, check_against_torch(model, args.out))
    write_golden(model, args.golden_image, args.out.with_suffix(".golden.npz"))


if __name__ == "__main__":
    main()
