"""The teacher ensemble: saliency readouts over three pretrained backbones, averaged.

Each member is the vanilla recipe (frozen ImageNet features, readout, blur, centre prior, trained
with the fixation log-likelihood) over a different EfficientNet-Lite at a larger input (320 px):
different features make different mistakes, and the mixture of their densities is better
calibrated than any one of them. The ensemble is exported to ONNX like any model and evaluated by
the same code as the shipped models, then labels every image for the student (distill.py).

    python -m cropworker_models.teacher --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch
from torch import nn

from . import data, evaluate, export, net, train

log = logging.getLogger(__name__)

LONG_SIDE = 320
# Taps at the ends of the stride-8, stride-16 and the last two stride-32 stages.
MEMBERS = (
    net.SaliencyNetConfig(
        name="teacher-lite0",
        backbone="efficientnet-lite0",
        long_side=LONG_SIDE,
        taps=(4, 10, 14, 15),
    ),
    net.SaliencyNetConfig(
        name="teacher-lite1",
        backbone="efficientnet-lite1",
        long_side=LONG_SIDE,
        taps=(6, 14, 19, 20),
    ),
    net.SaliencyNetConfig(
        name="teacher-lite2",
        backbone="efficientnet-lite2",
        long_side=LONG_SIDE,
        taps=(6, 14, 19, 20),
    ),
)
ENSEMBLE = net.SaliencyNetConfig(
    name="teacher", version="1", backbone="ensemble", long_side=LONG_SIDE, taps=()
)


class Ensemble(nn.Module):
    """Mixture of the members' densities: log(mean_i p_i), over the same output grid."""

    def __init__(self, members: list[net.SaliencyNet]) -> None:
        super().__init__()
        self.config = ENSEMBLE
        self.members = nn.ModuleList(members)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logps = torch.stack([member(image) for member in self.members])
        return torch.logsumexp(logps, dim=0) - math.log(len(self.members))


def train_member(
    config: net.SaliencyNetConfig, data_root: Path, cache: Path, epochs: int
) -> net.SaliencyNet:
    path = cache / f"{config.name}.pt"
    if not path.exists():
        head, metrics = train.train(config, data_root, cache, epochs)
        torch.save({"config": config, "head": head.state_dict(), "metrics": metrics}, path)
    model = export.load(path)
    assert isinstance(model, net.SaliencyNet)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data.add_data_argument(parser)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--report", type=Path, default=Path("models/reports/teacher.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    members = [train_member(c, args.data, args.cache, args.epochs) for c in MEMBERS]
    report = {}
    for model in [*members, Ensemble(members).eval()]:
        name = net.config_of(model).name
        path = args.cache / f"{name}.onnx"
        export.to_onnx(model, path)
        export.check_against_torch(model, path)
        report[name] = evaluate.evaluate(str(path), args.data)
        log.info("%s: %s", name, report[name]["saliency"]["model"])
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
