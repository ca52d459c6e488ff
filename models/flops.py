"""Multiply-accumulate counts of a network, measured by running it once with hooks."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of convolutions and linear layers for one forward pass on `example`, per image.

    Elementwise work (activations, normalisation, resizing, softmax) is left out, as is usual:
    it is a small share for a CNN and costs memory bandwidth rather than arithmetic."""
    total = 0

    def conv_hook(module: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Module, _: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        total += out.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return total // example.shape[0]
