"""The student: a small inverted-residual network whose every block can lose feature maps.

It starts as an EfficientNet-Lite trunk (ImageNet weights; Lite0 for every shipped student) at a
smaller input, with the same readout head as the vanilla model, and is trained end to end on the
teacher's predictions (distill.py). Fisher pruning (prune.py) then removes the expanded feature
maps inside the blocks, the bulk of the cost, through a per-block mask; `compact()` finally
slices the pruned maps out of the weights, so the exported network is genuinely smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import net

# The student starts as all the blocks of an EfficientNet-Lite trunk (lite0: 16, lite1: 21); the
# readout reads the ends of the stride-8, stride-16 and stride-32 stages. Pruning decides what of
# it is worth its cost.
TAPS = (4, 10, 15)  # lite0's stage ends
TAP_STRIDES = (8, 16, 32)
# ONNX Runtime's blocked (NCHWc) convolutions on x86 take only widths that are multiples of 8;
# other widths fall back to slower kernels (a network with odd widths ran 2x slower at 8% fewer
# MACs, models/reports/README.md).
WIDTH_MULTIPLE = 8
# The head's blur, in cells of the stride-8 grid (8 input pixels): 0.6 cells is 2.5% of a 192 px
# long side. The vanilla model's 1.5 cells would be 6.3% here, wider than the teacher's peaks
# (3.75% at 320 px), and the readout learned to sharpen against it. Chosen on the dev split
# among 1.5, 0.9, 0.6 and 0.4 (models/reports/README.md).
BLUR_SIGMA = 0.6
CONFIG = net.SaliencyNetConfig(
    name="student",
    version="1",
    backbone="lite0-student",
    long_side=192,
    taps=TAPS,
    readout=(16,),
    blur_sigma=BLUR_SIGMA,
)


@dataclass(frozen=True)
class BlockSpec:
    cin: int
    mid: int  # expanded width: the prunable feature maps
    cout: int
    kernel: int
    stride: int
    expand: bool  # False: the block works on its input directly (mid == cin)
    # Whether the input is added to the output. Fixed when the block is made, so that pruning a
    # first block's input maps down to its output width does not turn it into a residual block.
    residual: bool | None = None  # None: Lite0's rule, stride 1 and as many maps in as out

    @property
    def skip(self) -> bool:
        if self.residual is not None:
            return self.residual
        return self.stride == 1 and self.cin == self.cout


def same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow 'SAME' padding (left, right, top, bottom) for even input sizes: what the
    ImageNet weights were trained with."""
    total = kernel - stride
    return total // 2, total - total // 2, total // 2, total - total // 2


class Block(nn.Module):
    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.expand:
            self.expand = nn.Sequential(
                nn.Conv2d(spec.cin, spec.mid, 1, bias=False),
                nn.BatchNorm2d(spec.mid, eps=1e-3),
                nn.ReLU6(),
            )
        self.pad = same_pad(spec.kernel, spec.stride)
        self.depthwise = nn.Conv2d(
            spec.mid, spec.mid, spec.kernel, spec.stride, groups=spec.mid, bias=False
        )
        self.bn = nn.BatchNorm2d(spec.mid, eps=1e-3)
        self.project = nn.Sequential(
            nn.Conv2d(spec.mid, spec.cout, 1, bias=False), nn.BatchNorm2d(spec.cout, eps=1e-3)
        )
        self.mask: torch.Tensor
        self.register_buffer("mask", torch.ones(spec.mid))
        self.activation: torch.Tensor | None = None  # kept for Fisher pruning when recording
        self.record = False
        self.masked = True  # False once no map is masked out: no multiply in the exported graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.spec.expand else x
        h = F.relu6(self.bn(self.depthwise(F.pad(h, self.pad))))
        if self.masked:
            h = h * self.mask.view(1, -1, 1, 1)
        if self.record and h.requires_grad:
            h.retain_grad()
            self.activation = h
        out: torch.Tensor = self.project(h)
        return out + x if self.spec.skip else out


class Student(nn.Module):
    def __init__(self, config: net.SaliencyNetConfig, specs: list[BlockSpec]) -> None:
        super().__init__()
        self.config = config
        self.specs = specs
        self.stem = nn.Sequential(
            nn.Conv2d(3, specs[0].cin, 3, 2, bias=False),
            nn.BatchNorm2d(specs[0].cin, eps=1e-3),
            nn.ReLU6(),
        )
        self.blocks = nn.ModuleList(Block(s) for s in specs)
        self.head = net.Head(config, [specs[i].cout for i in config.taps])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        x = (x / 255.0 - self.config.mean) / self.config.std
        x = self.stem(F.pad(x, same_pad(3, 2)))
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.config.taps:
                taps.append(x)
        out: torch.Tensor = self.head(taps)
        return out

    def prunable(self) -> list[Block]:
        return list(self.prunable_blocks().values())

    def prunable_blocks(self) -> dict[int, Block]:
        """The blocks with maps pruning may remove, by index."""
        blocks = enumerate(self.blocks)
        return {i: b for i, b in blocks if isinstance(b, Block) and prunable(i, b.spec)}


def prunable(index: int, spec: BlockSpec) -> bool:
    """Whether block `index` has maps pruning may remove: its expanded maps, or, for a first
    block that works on the stem's output directly (no skip), the stem's own output maps, which
    only that block reads. At full resolution the stem is the most expensive layer per map."""
    return spec.expand or (index == 0 and not spec.skip)


def from_lite0(config: net.SaliencyNetConfig = CONFIG) -> Student:
    """A student initialised with EfficientNet-Lite0's ImageNet weights."""
    return from_lite(config, "efficientnet-lite0")


def from_lite(config: net.SaliencyNetConfig, backbone: str) -> Student:
    """A student initialised with an EfficientNet-Lite trunk's ImageNet weights (`backbone`:
    efficientnet-lite0, -lite1 or -lite2, whose weights install offline), tapped at its stage
    ends. Every shipped student starts from lite0; lite1 was tried as an ensemble partner
    (models/reports/README.md)."""
    lite = net.build_backbone(net.SaliencyNetConfig(backbone=backbone))
    specs, strides = [], []
    stride = 2  # the stem's
    for b in lite._blocks:
        expand = b._block_args.expand_ratio != 1
        mid = b._depthwise_conv.out_channels
        cin = b._expand_conv.in_channels if expand else mid
        specs.append(
            BlockSpec(
                cin,
                mid,
                b._project_conv.out_channels,
                b._depthwise_conv.kernel_size[0],
                b._depthwise_conv.stride[0],
                expand,
            )
        )
        stride *= specs[-1].stride
        strides.append(stride)
    taps = tuple(max(i for i, s in enumerate(strides) if s == t) for t in TAP_STRIDES)
    name = backbone.removeprefix("efficientnet-")
    student = Student(replace(config, taps=taps, backbone=f"{name}-student"), specs)
    student.stem.load_state_dict(
        {
            "0.weight": lite._conv_stem.weight,
            **{f"1.{k}": v for k, v in lite._bn0.state_dict().items()},
        }
    )
    for block, source in zip(student.blocks, lite._blocks, strict=True):
        _copy_block(source, block)
    return student


def _copy_block(source: Any, block: nn.Module) -> None:
    assert isinstance(block, Block)
    if block.spec.expand:
        block.expand[0].load_state_dict(source._expand_conv.state_dict())
        block.expand[1].load_state_dict(source._bn0.state_dict())
    block.depthwise.load_state_dict(source._depthwise_conv.state_dict())
    block.bn.load_state_dict(source._bn1.state_dict())
    block.project[0].load_state_dict(source._project_conv.state_dict())
    block.project[1].load_state_dict(source._bn2.state_dict())


def compact(student: Student) -> Student:
    """A copy without the masked-out feature maps (same function, fewer weights)."""
    specs, blocks = [], []
    for i, block in enumerate(student.blocks):
        assert isinstance(block, Block)
        keep = torch.nonzero(block.mask).flatten() if prunable(i, block.spec) else None
        spec = block.spec
        if keep is not None:
            cin = spec.cin if spec.expand else len(keep)
            spec = replace(spec, mid=len(keep), cin=cin, residual=spec.skip)
        specs.append(spec)
        blocks.append((block, keep))
    small = Student(student.config, specs)
    stem = student.stem.state_dict()
    first, first_keep = blocks[0]
    if first_keep is not None and not first.spec.expand:  # the stem lost maps with block 0
        stem = {k: v[first_keep] if v.ndim >= 1 else v for k, v in stem.items()}
    small.stem.load_state_dict(stem)
    small.head.load_state_dict(student.head.state_dict())
    for (old, keep), new in zip(blocks, small.blocks, strict=True):
        assert isinstance(new, Block)
        state = old.state_dict()
        if keep is not None:
            for name, value in list(state.items()):
                if name.startswith(("expand.", "depthwise.", "bn.")) and value.ndim >= 1:
                    state[name] = value[keep]
                elif name == "project.0.weight":
                    state[name] = value[:, keep]
                elif name == "mask":
                    state[name] = value[keep]
        new.load_state_dict(state)
    return _unmasked(small).train(student.training)


def widen(model: Student, multiple: int) -> Student:
    """A copy whose prunable widths are rounded up to a multiple of `multiple`, with new maps
    that can learn but start without effect: fresh input weights, zero output weights. A network
    pruned one map at a time gets widths ONNX Runtime's blocked convolutions take, and
    fine-tuning can put the extra maps to use instead of computing zeros."""
    specs = []
    for i, spec in enumerate(model.specs):
        if prunable(i, spec):
            mid = -(-spec.mid // multiple) * multiple
            cin = spec.cin if spec.expand else mid
            spec = replace(spec, mid=mid, cin=cin, residual=spec.skip)
        specs.append(spec)
    wide = Student(model.config, specs)  # freshly initialised, the old weights copied in below
    state = wide.state_dict()
    with torch.no_grad():
        for name, old in model.state_dict().items():
            new = state[name]
            if name.endswith("project.0.weight"):
                new[:, old.shape[1] :] = 0
            new[tuple(slice(0, n) for n in old.shape)] = old
    wide.load_state_dict(state)
    return _unmasked(wide).train(model.training)


def reblur(model: Student, sigma: float) -> Student:
    """Set the head's blur to `sigma` cells of the stride-8 grid (in place; kept on save)."""
    model.config = replace(model.config, blur_sigma=sigma)
    model.head.set_blur(sigma)
    return model


def _unmasked(model: Student) -> Student:
    """Stop multiplying by masks that keep every map (set again by whoever prunes)."""
    for block in model.blocks:
        assert isinstance(block, Block)
        block.masked = bool((block.mask == 0).any())
    return model


def macs_per_map(student: Student, height: int, width: int) -> dict[int, float]:
    """For each prunable block (by index), the MACs one of its feature maps costs at this input."""
    sizes: dict[int, tuple[int, int, int, int]] = {}
    hooks = []
    for i, block in enumerate(student.blocks):

        def hook(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, i: int = i
        ) -> None:
            sizes[i] = (*inputs[0].shape[-2:], *out.shape[-2:])

        hooks.append(block.register_forward_hook(hook))
    with torch.no_grad():
        student(torch.zeros(1, height, width, 3, dtype=torch.uint8))
    for h in hooks:
        h.remove()
    cost: dict[int, float] = {}
    stem = student.stem[0]
    assert isinstance(stem, nn.Conv2d)
    stem_per_pixel = stem.in_channels * stem.kernel_size[0] * stem.kernel_size[1]
    for i, block in enumerate(student.blocks):
        assert isinstance(block, Block)
        if prunable(i, block.spec):
            hi, wi, ho, wo = sizes[i]
            s = block.spec
            made = s.cin if s.expand else stem_per_pixel  # what producing one map costs
            cost[i] = hi * wi * made + ho * wo * s.kernel**2 + ho * wo * s.cout
    return cost


def save(model: Student, path: Path) -> Path:
    torch.save({"config": model.config, "specs": model.specs, "state": model.state_dict()}, path)
    return path


def load(path: Path) -> Student:
    state = torch.load(path, weights_only=False)
    model = Student(state["config"], state["specs"])
    model.load_state_dict(state["state"])
    return _unmasked(model).eval()
